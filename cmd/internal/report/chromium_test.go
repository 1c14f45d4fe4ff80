package report

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// TestHTMLInChromium renders a report in a real headless browser when one is
// installed (scripts/check-report-html.sh installs Debian's chromium): no
// console message (the page's CSP turns any load or script into one), the
// verdict and both charts in the rendered DOM.
func TestHTMLInChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a browser")
	}
	bin, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium not installed (apt-get install chromium; or run scripts/check-report-html.sh)")
	}
	dir := t.TempDir()
	b, err := HTML(sample())
	if err != nil {
		t.Fatal(err)
	}
	page := filepath.Join(dir, "report.html")
	if err := os.WriteFile(page, b, 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--no-first-run", "--disable-extensions", "--host-resolver-rules=MAP * ~NOTFOUND",
		"--enable-logging=stderr", "--v=0", "--user-data-dir="+filepath.Join(dir, "profile"), "--dump-dom", "file://"+page)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, stderr.Bytes())
	}
	if m := regexp.MustCompile(`.*(CONSOLE|Refused to|net::ERR|Uncaught).*`).FindAll(stderr.Bytes(), -1); len(m) > 0 {
		t.Errorf("console output while rendering:\n%s", bytes.Join(m, []byte("\n")))
	}
	dom := stdout.Bytes()
	if n := bytes.Count(dom, []byte("<svg")); n != 2 {
		t.Errorf("%d SVG charts in the rendered page, want 2", n)
	}
	if !bytes.Contains(dom, []byte(`<div class="big">FAIL</div>`)) {
		t.Error("no verdict in the rendered page")
	}
}
