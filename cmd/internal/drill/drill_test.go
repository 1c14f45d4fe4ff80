package drill

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ehrport/ehrport/cmd/internal/report"
	ehrcrypto "github.com/ehrport/ehrport/crypto"
	"github.com/ehrport/ehrport/crypto/keys"
	"github.com/ehrport/ehrport/storage"
)

func run(t *testing.T, o *Options) *Result {
	t.Helper()
	if o.Patients == 0 && len(o.Paths) == 0 {
		o.Patients = 8
	}
	o.WorkDir = t.TempDir()
	res, err := o.Run(context.Background())
	if err != nil {
		t.Fatalf("drill: %v", err)
	}
	// The temporary folders (keys, stores, restored plaintext) are gone.
	if ents, _ := os.ReadDir(o.WorkDir); len(ents) > 0 {
		t.Errorf("left behind in the work folder: %v", ents)
	}
	return res
}

func phaseStatus(r *report.Report) map[string]string {
	m := map[string]string{}
	for _, p := range r.Phases {
		m[p.Name] = p.Status
	}
	return m
}

func hasFinding(r *report.Report, phase, code, objectPart string) bool {
	for _, f := range r.Findings {
		if f.Phase == phase && f.Code == code && strings.Contains(f.Object, objectPart) {
			return true
		}
	}
	return false
}

func TestDrillPasses(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "rep")
	res := run(t, &Options{ReportDir: dir, RTO: time.Hour})
	r := res.Report
	if r.Verdict != report.Pass {
		t.Fatalf("verdict %s: %v; findings %+v", r.Verdict, r.VerdictReasons, r.Findings)
	}
	want := map[string]string{PhaseExport: "pass", PhaseMigrate: "pass", PhaseVerify: "pass", PhaseRestore: "pass",
		PhaseCompare: "pass", PhaseAudit: "pass", PhaseDecommission: "skipped"}
	for n, s := range want {
		if got := phaseStatus(r)[n]; got != s {
			t.Errorf("phase %s: %s, want %s", n, got, s)
		}
	}
	if r.RTO == nil || !r.RTO.Met {
		t.Errorf("RTO: %+v", r.RTO)
	}
	if r.Inputs.Resources == 0 || r.Counts.Source["Patient"] != 8 || r.Counts.Target["Patient"] != 8 {
		t.Errorf("counts: %+v, inputs %+v", r.Counts, r.Inputs)
	}
	if !r.Inputs.Embedded || !r.Keys.Ephemeral || len(r.Keys.Recipients) == 0 || r.Keys.SigningKeyID == 0 {
		t.Errorf("inputs/keys: %+v %+v", r.Inputs, r.Keys)
	}
	if len(r.Evidence) == 0 || len(r.NotChecked) == 0 {
		t.Error("no evidence or notChecked")
	}
	for _, f := range []string{report.FileJSON, report.FileHTML, report.FileSignature, report.FileVerifyKey} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
	v, err := keys.LoadVerifier(filepath.Join(dir, report.FileVerifyKey))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := report.Verify(res.Paths.JSON, res.Paths.Signature, v); err != nil {
		t.Fatalf("fresh report does not verify: %v", err)
	}
	// One character changed: the signature no longer verifies.
	b, _ := os.ReadFile(res.Paths.JSON)
	i := bytes.Index(b, []byte(`"PASS"`))
	b[i+1] = 'F'
	os.WriteFile(res.Paths.JSON, b, 0o644)
	if _, _, err := report.Verify(res.Paths.JSON, res.Paths.Signature, v); !errors.Is(err, ehrcrypto.ErrCorrupt) {
		t.Fatalf("edited report: %v, want ErrCorrupt", err)
	}
}

// mutate returns a hook that changes the target after the migration.
func flipByte(key string) func(ctx context.Context, b storage.Store) error {
	return func(ctx context.Context, b storage.Store) error {
		rc, err := b.Get(ctx, key)
		if err != nil {
			return err
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return err
		}
		data[len(data)/2] ^= 1
		return b.Put(ctx, key, bytes.NewReader(data), int64(len(data)), storage.PutOptions{})
	}
}

func TestDrillTamperedObjectFails(t *testing.T) {
	res := run(t, &Options{AfterMigrate: flipByte("Patient.000.ndjson.ehr")})
	r := res.Report
	if r.Verdict != report.Fail {
		t.Fatal("a tampered object passed")
	}
	if !hasFinding(r, PhaseVerify, "sha256-mismatch", "Patient.000.ndjson.ehr") {
		t.Errorf("verify does not name the tampered object: %+v", r.Findings)
	}
	st := phaseStatus(r)
	if st[PhaseVerify] != "fail" || st[PhaseRestore] != "fail" || st[PhaseCompare] != "skipped" || st[PhaseAudit] != "pass" {
		t.Errorf("phases: %v", st)
	}
	found := false
	for _, f := range r.Findings {
		if f.Phase == PhaseRestore && f.Code == "restore-failed" && strings.Contains(f.Message, "Patient.000") {
			found = true
		}
	}
	if !found {
		t.Errorf("restore finding does not name the object: %+v", r.Findings)
	}
}

func TestDrillMissingObjectFails(t *testing.T) {
	res := run(t, &Options{AfterMigrate: func(ctx context.Context, b storage.Store) error {
		return b.Delete(ctx, "Observation.000.ndjson.ehr")
	}})
	r := res.Report
	if r.Verdict != report.Fail || !hasFinding(r, PhaseVerify, "missing", "Observation.000.ndjson.ehr") {
		t.Fatalf("missing object: verdict %s, findings %+v", r.Verdict, r.Findings)
	}
}

func TestDrillPlaintextObjectFails(t *testing.T) {
	leak := []byte(`{"resourceType":"Patient","id":"p1","name":[{"family":"Leaked"}]}` + "\n")
	res := run(t, &Options{AfterMigrate: func(ctx context.Context, b storage.Store) error {
		return b.Put(ctx, "leaked-plain.ndjson", bytes.NewReader(leak), int64(len(leak)), storage.PutOptions{})
	}})
	r := res.Report
	if r.Verdict != report.Fail {
		t.Fatal("a plaintext object passed")
	}
	if !hasFinding(r, PhaseAudit, "plaintext-object", "leaked-plain.ndjson") {
		t.Errorf("audit does not name the plaintext object: %+v", r.Findings)
	}
	if phaseStatus(r)[PhaseAudit] != "fail" {
		t.Errorf("audit phase: %v", phaseStatus(r))
	}
	// The restore itself is fine: the problem is named where it is.
	if phaseStatus(r)[PhaseCompare] != "pass" {
		t.Errorf("compare: %v", phaseStatus(r))
	}
}

// slowClock advances a second on every reading.
type slowClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *slowClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(time.Second)
	return c.t
}

func TestDrillRTOExceeded(t *testing.T) {
	clk := &slowClock{t: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	res := run(t, &Options{RTO: time.Second, Now: clk.Now})
	r := res.Report
	if r.Verdict != report.Fail || r.RTO == nil || r.RTO.Met {
		t.Fatalf("verdict %s, rto %+v", r.Verdict, r.RTO)
	}
	for _, p := range r.Phases {
		if p.Status == report.StatusFail {
			t.Errorf("phase %s failed; only the time should", p.Name)
		}
	}
	if !hasFinding(r, "rto", "rto-exceeded", "") || !strings.Contains(strings.Join(r.VerdictReasons, " "), "RTO not met") {
		t.Errorf("reasons %v, findings %+v", r.VerdictReasons, r.Findings)
	}
}

func TestDrillDecommissionSource(t *testing.T) {
	aDir := t.TempDir()
	a, err := storage.NewLocalStore(aDir)
	if err != nil {
		t.Fatal(err)
	}
	res := run(t, &Options{StoreA: a, DecommissionSource: true})
	r := res.Report
	if r.Verdict != report.Pass || phaseStatus(r)[PhaseDecommission] != "pass" {
		t.Fatalf("verdict %s, phases %v, %v", r.Verdict, phaseStatus(r), r.VerdictReasons)
	}
	for _, err := range a.List(context.Background(), "") {
		if err != nil {
			t.Fatal(err)
		}
		t.Fatal("A still lists objects")
	}
	ok := false
	for _, e := range r.Evidence {
		if strings.Contains(e.Claim, "deleted") && e.Status == report.EvidenceProven {
			ok = true
		}
	}
	if !ok {
		t.Errorf("no deletion evidence: %+v", r.Evidence)
	}
}

func TestDrillKeepsSourceWhenAPhaseFailed(t *testing.T) {
	aDir := t.TempDir()
	a, _ := storage.NewLocalStore(aDir)
	res := run(t, &Options{StoreA: a, DecommissionSource: true, AfterMigrate: flipByte("Patient.000.ndjson.ehr")})
	if p := res.Report.Phase(PhaseDecommission); p == nil || p.Status != report.StatusSkipped || !strings.Contains(p.SkipReason, "kept") {
		t.Fatalf("decommission: %+v", p)
	}
	if _, err := a.Stat(context.Background(), "manifest.json"); err != nil {
		t.Fatalf("the source was deleted after a failure: %v", err)
	}
}

func TestDrillRefusesForeignReportDir(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("mine"), 0o644)
	_, err := (&Options{Patients: 2, ReportDir: dir, WorkDir: t.TempDir()}).Run(context.Background())
	if !errors.Is(err, report.ErrNotReportDir) {
		t.Fatalf("got %v", err)
	}
}

func TestDrillFromFiles(t *testing.T) {
	src := t.TempDir()
	data := `{"resourceType":"Patient","id":"a","birthDate":"1970-01-01"}
{"resourceType":"Patient","id":"b", "birthDate": "1980-02-02"}
`
	os.WriteFile(filepath.Join(src, "Patient.ndjson"), []byte(data), 0o644)
	res := run(t, &Options{Paths: []string{src}})
	r := res.Report
	if r.Verdict != report.Pass || r.Counts.Source["Patient"] != 2 || r.Inputs.Source != "files" {
		t.Fatalf("verdict %s %v counts %+v", r.Verdict, r.VerdictReasons, r.Counts)
	}
}
