package report

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/signature"

	"github.com/ehrport/ehrport/cmd/internal/audit"
	ehrcrypto "github.com/ehrport/ehrport/crypto"
)

func sample() *Report {
	return &Report{
		SchemaVersion: SchemaVersion, Kind: "drill", Tool: Tool{Name: "ehrport", Version: "test"},
		GeneratedAt: "2026-01-01T00:00:00Z", RunID: "r1", Verdict: Fail,
		VerdictReasons: []string{"verify failed with 1 finding(s)", `a <script>alert("x")</script> reason`},
		RTO:            &RTO{Limit: "2s", LimitSeconds: 2, Met: false}, TotalSeconds: 3,
		Phases: []Phase{
			{Name: "export", Title: "1 export", Status: StatusPass, OffsetSeconds: 0, DurationSeconds: 1, Bytes: 1e6, Resources: 100, Objects: 3},
			{Name: "verify", Title: "3 verify", Status: StatusFail, OffsetSeconds: 1, DurationSeconds: 2},
			{Name: "decommission", Title: "6 delete", Status: StatusSkipped, SkipReason: "not requested"},
		},
		Counts:     Counts{Source: map[string]int64{"Patient": 10, "Observation": 40}, Target: map[string]int64{"Patient": 9, "Observation": 40}},
		Findings:   []Finding{{Phase: "verify", Severity: SevHigh, Code: "missing", Object: "Patient.000.ndjson.ehr", Message: "gone", EUCS: []string{"PI-02"}, ENISA: []string{"ENISA-HC: x"}}},
		Evidence:   []Evidence{{Claim: "complete", Status: EvidenceFailed, How: "hashes", EUCS: []string{"PI-02"}, Phases: []string{"verify"}}},
		Stores:     []Store{{Role: "A", Location: "clouda:b/p", Kind: "s3", Endpoint: "https://127.0.0.1:9000", TLS: true, TLSVersion: "TLS 1.3", CertSHA256: "ab"}},
		NotChecked: []string{"contracts"},
	}
}

// element is a parsed HTML element: the page is generated well-formed
// enough for encoding/xml in HTML mode.
type element struct {
	name  string
	attrs map[string]string
	text  string
}

func parseHTML(t *testing.T, b []byte) []element {
	t.Helper()
	d := xml.NewDecoder(bytes.NewReader(b))
	d.Strict = false
	d.AutoClose = xml.HTMLAutoClose
	d.Entity = xml.HTMLEntity
	var out []element
	var stack []int
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("HTML does not parse: %v", err)
		}
		switch x := tok.(type) {
		case xml.StartElement:
			e := element{name: strings.ToLower(x.Name.Local), attrs: map[string]string{}}
			for _, a := range x.Attr {
				e.attrs[strings.ToLower(a.Name.Local)] = a.Value
			}
			out = append(out, e)
			stack = append(stack, len(out)-1)
		case xml.EndElement:
			if len(stack) > 0 {
				stack = stack[:len(stack)-1]
			}
		case xml.CharData:
			for _, i := range stack {
				out[i].text += string(x)
			}
		}
	}
	return out
}

func TestHTMLSelfContained(t *testing.T) {
	b, err := HTML(sample())
	if err != nil {
		t.Fatal(err)
	}
	els := parseHTML(t, b)
	var svgs, rects int
	var verdict string
	for i, e := range els {
		switch e.name {
		case "script", "iframe", "object", "embed", "link", "img":
			t.Errorf("element <%s> in a self-contained report", e.name)
		case "svg":
			svgs++
		case "rect":
			rects++
		}
		for k, v := range e.attrs {
			if k == "src" || (k == "href" && !strings.HasPrefix(v, "#")) || strings.HasPrefix(k, "on") {
				t.Errorf("<%s %s=%q>: external reference or handler", e.name, k, v)
			}
			if strings.Contains(v, "url(") {
				t.Errorf("<%s %s=%q>: url()", e.name, k, v)
			}
		}
		if e.attrs["id"] == "verdict" {
			verdict = els[i].text
		}
	}
	if svgs != 2 || rects < 4 {
		t.Errorf("%d svg charts, %d bars; want 2 charts", svgs, rects)
	}
	if !strings.Contains(verdict, "FAIL") || !strings.Contains(verdict, "RTO 2s NOT met") {
		t.Errorf("verdict section: %q", verdict)
	}
	// Verdict first: before any other section.
	if i, j := bytes.Index(b, []byte(`id="verdict"`)), bytes.Index(b, []byte("<h2")); i < 0 || i > j {
		t.Error("the verdict is not first")
	}
	if bytes.Contains(b, []byte("<script>alert")) {
		t.Error("text is not escaped")
	}
	if bytes.Contains(b, []byte("url(")) || bytes.Contains(b, []byte("@import")) {
		t.Error("CSS fetches something")
	}
	for _, want := range []string{"Patient.000.ndjson.ehr", "PI-02", "Observation", "contracts", "TLS 1.3"} {
		if !bytes.Contains(b, []byte(want)) {
			t.Errorf("page lacks %q", want)
		}
	}
}

func newSigner(t testing.TB) (*ehrcrypto.Signer, *ehrcrypto.Verifier, []byte) {
	t.Helper()
	h, err := keyset.NewHandle(signature.ED25519KeyTemplate())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ehrcrypto.NewSigner(h)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := h.Public()
	if err != nil {
		t.Fatal(err)
	}
	v, err := ehrcrypto.NewVerifier(pub)
	if err != nil {
		t.Fatal(err)
	}
	return s, v, []byte("{}")
}

func TestWriteVerify(t *testing.T) {
	s, v, pk := newSigner(t)
	dir := filepath.Join(t.TempDir(), "r")
	p, err := Write(dir, sample(), s, pk)
	if err != nil {
		t.Fatal(err)
	}
	r, sig, err := Verify(p.JSON, p.Signature, v)
	if err != nil || r.RunID != "r1" || sig.KeyID != s.KeyID() {
		t.Fatalf("verify: %v %+v", err, sig)
	}
	orig, _ := os.ReadFile(p.JSON)
	// Every single-byte edit anywhere fails (a few positions suffice).
	for _, i := range []int{0, 1, len(orig) / 2, len(orig) - 2, len(orig) - 1} {
		b := bytes.Clone(orig)
		b[i] ^= 0x20
		os.WriteFile(p.JSON, b, 0o644)
		if _, _, err := Verify(p.JSON, p.Signature, v); !errors.Is(err, ehrcrypto.ErrCorrupt) {
			t.Errorf("edit at %d: %v", i, err)
		}
	}
	// An added trailing space fails too.
	os.WriteFile(p.JSON, append(bytes.Clone(orig), ' '), 0o644)
	if _, _, err := Verify(p.JSON, p.Signature, v); err == nil {
		t.Error("appended byte verified")
	}
	// Another key: no matching key.
	_, v2, _ := newSigner(t)
	os.WriteFile(p.JSON, orig, 0o644)
	if _, _, err := Verify(p.JSON, p.Signature, v2); !errors.Is(err, ehrcrypto.ErrNoMatchingKey) && !errors.Is(err, ehrcrypto.ErrCorrupt) {
		t.Errorf("other key: %v", err)
	}
	// Rewriting a report folder is fine; a foreign folder is refused.
	if _, err := Write(dir, sample(), s, nil); err != nil {
		t.Fatal(err)
	}
	foreign := t.TempDir()
	os.WriteFile(filepath.Join(foreign, "x"), nil, 0o644)
	if _, err := Write(foreign, sample(), s, nil); !errors.Is(err, ErrNotReportDir) {
		t.Fatalf("foreign folder: %v", err)
	}
}

// An audit that kept only some of its findings (a bounded number per code)
// still fails on, and counts, all of them.
func TestFromAuditCountsOmittedFindings(t *testing.T) {
	kept := audit.Finding{Severity: audit.Critical, Code: "plaintext-object", Object: "a.ndjson", Message: "plaintext"}
	rep := &audit.Report{Location: "x", Objects: 500, Classes: map[string]int64{audit.ClassPlaintext: 500},
		Findings: []audit.Finding{kept}, FindingCounts: map[string]int64{"plaintext-object": 500}, FindingsOmitted: 499,
		BySeverity: map[string]int{audit.Critical.String(): 500}}
	r := FromAudit(rep, audit.High, Store{}, "test", time.Now())
	p := r.Phase("audit")
	if r.Verdict != Fail || p == nil || p.Findings != 500 || len(r.Findings) != 1 {
		t.Fatalf("verdict %s, phase %+v, %d findings listed", r.Verdict, p, len(r.Findings))
	}
	if !strings.Contains(r.VerdictReasons[0], "500 finding(s)") || !strings.Contains(p.Summary, "499 further finding(s)") {
		t.Fatalf("reasons %q, summary %q", r.VerdictReasons, p.Summary)
	}
}
