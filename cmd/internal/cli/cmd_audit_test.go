package cli

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// More plaintext objects than the report lists: the text output says how
// many more there are, the verdict counts them all, and --findings writes
// every one as a JSON line.
func TestAuditFindingsBeyondTheListed(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	const n = 105
	for i := range n {
		b := fmt.Appendf(nil, `{"resourceType":"Patient","id":"p%d"}`+"\n", i)
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("leak-%03d.ndjson", i)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	list := filepath.Join(t.TempDir(), "findings.jsonl")
	var out bytes.Buffer
	code := Main(context.Background(), []string{"ehrport", "audit", "--at", dir, "--findings", list}, &out, &out)
	text := out.String()
	if code != ExitFindings || strings.Count(text, "plaintext-object") < 100 || !strings.Contains(text, "more finding(s) not listed") ||
		!strings.Contains(text, fmt.Sprintf("plaintext-object %d", n)) || !strings.Contains(text, fmt.Sprintf("FAIL (%d finding(s)", n)) {
		t.Fatalf("exit %d\n%s", code, text)
	}
	f, err := os.Open(list)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	plain := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var fd struct{ Code, Object string }
		if err := json.Unmarshal(sc.Bytes(), &fd); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		if fd.Code == "plaintext-object" {
			plain[fd.Object] = true
		}
	}
	if len(plain) != n {
		t.Fatalf("--findings lists %d plaintext objects, want %d", len(plain), n)
	}
	// An audit that cannot run leaves no findings file behind.
	bad := filepath.Join(t.TempDir(), "none.jsonl")
	if code := Main(context.Background(), []string{"ehrport", "audit", "--at", filepath.Join(dir, "missing"), "--findings", bad}, &out, &out); code != ExitUsage {
		t.Fatalf("missing folder: exit %d", code)
	}
	if _, err := os.Stat(bad); err == nil {
		t.Fatal("a findings file was left by an audit that did not run")
	}
}
