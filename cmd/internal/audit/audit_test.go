package audit

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/keyset"

	ehrcrypto "github.com/ehrport/ehrport/crypto"
	"github.com/ehrport/ehrport/storage"
)

func kekRecipient(t testing.TB) (ehrcrypto.Recipient, uint32) {
	t.Helper()
	h, err := keyset.NewHandle(aead.AES256GCMKeyTemplate())
	if err != nil {
		t.Fatal(err)
	}
	r, err := ehrcrypto.NewKeysetRecipient(h)
	if err != nil {
		t.Fatal(err)
	}
	return r, h.KeysetInfo().GetPrimaryKeyId()
}

func envelope(t testing.TB, r ehrcrypto.Recipient, exportID, path string, plain []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := ehrcrypto.NewEncryptWriter(&buf, []ehrcrypto.Recipient{r}, ehrcrypto.Binding{ExportID: exportID, Path: path})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(plain)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func put(t testing.TB, st storage.Store, key string, b []byte) {
	t.Helper()
	if err := st.Put(context.Background(), key, bytes.NewReader(b), int64(len(b)), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

func ndjson(n int) []byte {
	var b bytes.Buffer
	for i := range n {
		fmt.Fprintf(&b, `{"resourceType":"Patient","id":"p%d","name":[{"family":"Doe","given":["Jane"]}],"birthDate":"1970-01-01"}`+"\n", i)
	}
	return b.Bytes()
}

func gz(b []byte) []byte {
	var out bytes.Buffer
	w := gzip.NewWriter(&out)
	w.Write(b)
	w.Close()
	return out.Bytes()
}

type key struct{ code, object string }

// The audit of a folder with one valid export and planted problems finds
// exactly the planted problems: no misses, no false alarms on the valid ones.
func TestAuditMixedContent(t *testing.T) {
	st, _ := storage.NewLocalStore(t.TempDir())
	r, _ := kekRecipient(t)

	// A valid export: data objects, summary, signed manifest.
	patients := envelope(t, r, "E1", "Patient.000.ndjson", ndjson(20000)) // > 1 KiB of payload sample
	put(t, st, "exp/Patient.000.ndjson.ehr", patients)
	put(t, st, "exp/Observation.000.ndjson.ehr", envelope(t, r, "E1", "Observation.000.ndjson", ndjson(3)))
	put(t, st, "exp/Bundle.000.ndjson.ehr", envelope(t, r, "E1", "Bundle.000.ndjson", nil))
	put(t, st, "exp/quarantine/quarantine.000.ndjson.ehr", envelope(t, r, "E1", "quarantine/quarantine.000.ndjson", ndjson(1)))
	put(t, st, "exp/summary.json.ehr", envelope(t, r, "E1", "summary.json", []byte(`{"counts":{}}`)))
	put(t, st, "exp/manifest.json", []byte(`{"transactionTime":"2026-11-23T00:00:00Z","output":[]}`))
	put(t, st, "exp/manifest.json.sig", []byte("signature bytes"))

	// Planted problems.
	put(t, st, "exp/leak.ndjson", ndjson(5))
	put(t, st, "exp/leak.ndjson.gz", gz(ndjson(5)))
	put(t, st, "exp/scan.pdf", []byte("%PDF-1.7\n%âãÏÓ\n1 0 obj\n"))
	dicom := make([]byte, 200)
	copy(dicom[128:], "DICM")
	put(t, st, "exp/image.dcm", dicom)
	put(t, st, "exp/notes.txt", []byte("Discharge letter for the patient, follow-up in two weeks.\n"))
	random := make([]byte, 8192)
	rand.Read(random)
	put(t, st, "exp/mystery.bin", random)
	encounters := envelope(t, r, "E1", "Encounter.000.ndjson", ndjson(20000))
	// Without keys, only a size no writer produces can be seen: find a cut
	// that gives one (a last segment shorter than its tag).
	cut := 0
	for c := 1; c < 1<<20 && cut == 0; c++ {
		if r, err := ehrcrypto.Inspect(bytes.NewReader(encounters[:len(encounters)-c]), int64(len(encounters)-c)); err == nil && !r.Consistent {
			cut = c
		}
	}
	if cut == 0 {
		t.Fatal("no truncation gives an inconsistent size")
	}
	put(t, st, "exp/Encounter.000.ndjson.ehr", encounters[:len(encounters)-cut])
	put(t, st, "exp/HeaderCut.000.ndjson.ehr", patients[:40])
	put(t, st, "exp/Renamed.000.ndjson.ehr", patients)
	put(t, st, "exp/Garbage.000.ndjson.ehr", append([]byte(ehrcrypto.Magic), bytes.Repeat([]byte{0xff}, 64)...))
	put(t, st, "exp/Condition.000.ndjson.ehr", envelope(t, r, "E2", "Condition.000.ndjson", ndjson(1)))
	// An export folder with envelopes but no manifest.
	put(t, st, "partial/Patient.000.ndjson.ehr", envelope(t, r, "E3", "Patient.000.ndjson", ndjson(1)))
	// A sensitive name on an otherwise valid envelope.
	put(t, st, "jane.doe@example.org/Patient.000.ndjson.ehr", envelope(t, r, "E4", "Patient.000.ndjson", ndjson(1)))
	put(t, st, "jane.doe@example.org/manifest.json", []byte(`{}`))

	rep, err := Run(context.Background(), Options{Store: st, Policy: DefaultPolicy(), Concurrency: 4})
	if err != nil {
		t.Fatal(err)
	}
	var got []key
	for _, f := range rep.Findings {
		got = append(got, key{f.Code, f.Object})
		if f.Severity >= High && len(f.EUCS) == 0 {
			t.Errorf("finding %s has no EUCS reference", f.Code)
		}
	}
	want := []key{
		{"plaintext-object", "exp/leak.ndjson"},
		{"plaintext-object", "exp/leak.ndjson.gz"},
		{"plaintext-object", "exp/scan.pdf"},
		{"plaintext-object", "exp/image.dcm"},
		{"plaintext-object", "exp/notes.txt"},
		{"unknown-content", "exp/mystery.bin"},
		{"inconsistent-size", "exp/Encounter.000.ndjson.ehr"},
		{"malformed-envelope", "exp/HeaderCut.000.ndjson.ehr"},
		{"binding-mismatch", "exp/Renamed.000.ndjson.ehr"},
		{"envelope-policy", "exp/Garbage.000.ndjson.ehr"}, // version 255: refused by policy
		{"mixed-exports", "exp/Condition.000.ndjson.ehr"},
		{"no-manifest", "partial/manifest.json"},
		{"sensitive-name", "jane.doe@example.org/Patient.000.ndjson.ehr"},
		{"sensitive-name", "jane.doe@example.org/manifest.json"},
	}
	sortKeys := func(k []key) {
		slices.SortFunc(k, func(a, b key) int { return strings.Compare(a.code+a.object, b.code+b.object) })
	}
	sortKeys(got)
	sortKeys(want)
	if !slices.Equal(got, want) {
		t.Errorf("findings:\n got %v\nwant %v", got, want)
		for _, f := range rep.Findings {
			t.Logf("%s %s %s: %s", f.Severity, f.Code, f.Object, f.Message)
		}
	}
	if rep.Classes[ClassEnvelope] != 8 || rep.Classes[ClassPlaintext] != 5 || rep.Classes[ClassMetadata] != 3 {
		t.Errorf("classes = %v", rep.Classes)
	}
	if rep.Objects != 21 {
		t.Errorf("objects = %d, want 21", rep.Objects)
	}
	if len(rep.NotChecked) == 0 {
		t.Error("the report must say what it did not check")
	}
	// The critical findings are the readable patient data.
	for _, f := range rep.Findings {
		if f.Severity == Critical && !strings.HasPrefix(f.Object, "exp/leak") && f.Object != "exp/scan.pdf" && f.Object != "exp/image.dcm" {
			t.Errorf("unexpected critical: %+v", f)
		}
	}
}

func TestAuditCleanExportHasNoFindings(t *testing.T) {
	st, _ := storage.NewLocalStore(t.TempDir())
	r, _ := kekRecipient(t)
	for i := range 50 {
		p := fmt.Sprintf("Observation.%03d.ndjson", i)
		put(t, st, p+".ehr", envelope(t, r, "E1", p, ndjson(i)))
	}
	put(t, st, "manifest.json", []byte(`{}`))
	rep, err := Run(context.Background(), Options{Store: st, Policy: DefaultPolicy()})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Findings) != 0 {
		t.Errorf("clean export has findings: %+v", rep.Findings)
	}
}

func TestAuditRequiredKeyPolicy(t *testing.T) {
	st, _ := storage.NewLocalStore(t.TempDir())
	r, id := kekRecipient(t)
	other, _ := kekRecipient(t)
	put(t, st, "Patient.000.ndjson.ehr", envelope(t, r, "E1", "Patient.000.ndjson", ndjson(1)))
	put(t, st, "Encounter.000.ndjson.ehr", envelope(t, other, "E1", "Encounter.000.ndjson", ndjson(1)))
	put(t, st, "manifest.json", []byte(`{}`))
	pol := DefaultPolicy()
	pol.Crypto.RequiredKeyIDs = []uint32{id}
	rep, err := Run(context.Background(), Options{Store: st, Policy: pol})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Findings) != 1 || rep.Findings[0].Code != "envelope-policy" || rep.Findings[0].Object != "Encounter.000.ndjson.ehr" {
		t.Errorf("findings = %+v", rep.Findings)
	}
}

func TestClassify(t *testing.T) {
	random := make([]byte, 4096)
	rand.Read(random)
	for _, tc := range []struct {
		name string
		in   []byte
		want Content
	}{
		{"fhir", []byte(`{"resourceType":"Patient","id":"1"}`), ContentFHIR},
		{"fhir with BOM", []byte("\xef\xbb\xbf  {\"resourceType\": \"Observation\"}"), ContentFHIR},
		{"json", []byte(`[1,2,3]`), ContentJSON},
		{"gzip", gz([]byte("x")), ContentGzip},
		{"pdf", []byte("%PDF-1.4"), ContentPDF},
		{"zip", []byte("PK\x03\x04rest"), ContentZip},
		{"text", []byte("hello world\n"), ContentText},
		{"utf8 text", []byte("Ärztin Müller, Überweisung\n"), ContentText},
		{"random", random, ContentUnknown},
		{"zeros", make([]byte, 4096), ContentBinary},
		{"empty", nil, ContentEmpty},
	} {
		if got := classify(tc.in); got != tc.want {
			t.Errorf("%s: classify = %s, want %s", tc.name, got, tc.want)
		}
	}
}

// Random bytes must never be taken for plaintext, whatever they start with.
func TestClassifyRandomIsNeverPlaintext(t *testing.T) {
	b := make([]byte, 4096)
	for i := range 5000 {
		rand.Read(b)
		b[0] = byte(i) // every first byte, '{' and 0x1f included
		if c := classify(b); c.Plaintext() {
			t.Fatalf("random bytes starting %#x classified as %s", b[0], c)
		}
	}
}

func TestSensitive(t *testing.T) {
	for s, want := range map[string]bool{
		"exports/2026-11-23/Patient.000.ndjson.ehr": false,
		"e-20261123T012000Z-4f1c2a9b0d3e":           false,
		"Patient/123":                               true,
		"123-45-6789":                               true,
		"jane@example.org":                          true,
		"patient-name":                              true,
		"birthDate":                                 false, // camelCase FHIR field names alone are not values
		"dob 1970-01-01":                            true,
	} {
		if got := sensitive(s, false) != ""; got != want {
			t.Errorf("sensitive(%q) = %v, want %v", s, got, want)
		}
	}
	if sensitive("sha256 "+strings.Repeat("ab", 32), true) == "" {
		t.Error("a 64-hex digest in metadata is not flagged")
	}
}
