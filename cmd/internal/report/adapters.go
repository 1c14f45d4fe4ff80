package report

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/ehrport/ehrport/cmd/internal/audit"
	"github.com/ehrport/ehrport/cmd/internal/verify"
	"github.com/ehrport/ehrport/crypto/keys"
	"github.com/ehrport/ehrport/storage"
)

// Control references shared by the drill and the single-command reports
// (docs/report-schema.md §4).
var (
	EUCSComplete  = []string{"PI-02", "PM-05"}
	EUCSFormat    = []string{"PI-01.3", "PI-02.1"}
	EUCSAtRest    = []string{"CKM-03.1", "CKM-03.2", "CKM-03.4"}
	EUCSKeys      = []string{"CKM-03.4", "CKM-04"}
	EUCSIntegrity = []string{"IM-07", "OPS-09"}
	EUCSTransit   = []string{"CKM-02", "PI-01.4"}
	EUCSLocation  = []string{"DOC-03"}

	ENISACrypto   = []string{"ENISA-HC: data encryption"}
	ENISAPortable = []string{"ENISA-HC: data portability and interoperability"}
	ENISAIncident = []string{"ENISA-HC: incident management"}
)

// New returns an empty report of kind with every list initialised.
func New(kind, version string, now time.Time) *Report {
	var rid [6]byte
	rand.Read(rid[:])
	return &Report{
		SchemaVersion: SchemaVersion, Kind: kind, Tool: Tool{Name: "ehrport", Version: version},
		GeneratedAt: now.UTC().Format(time.RFC3339),
		RunID:       now.UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(rid[:]),
		Counts:      Counts{Source: map[string]int64{}, Target: map[string]int64{}},
		Findings:    []Finding{}, Evidence: []Evidence{}, NotChecked: []string{}, VerdictReasons: []string{},
		Stores: []Store{}, Phases: []Phase{}, Keys: Keys{Recipients: []Recipient{}},
	}
}

type tlsInfoer interface {
	TLSInfo(context.Context) (storage.TLSInfo, error)
}
type endpointer interface{ Endpoint() string }
type bucketFacter interface {
	BucketFacts(context.Context) (storage.BucketFacts, error)
}

// DescribeStore records what a store is: kind, endpoint, TLS facts and
// bucket settings (S3), never credentials. Facts that cannot be read are
// noted, not fatal.
func DescribeStore(ctx context.Context, role string, st storage.Store, ephemeral bool) Store {
	s := Store{Role: role, Location: st.Location(), Kind: "s3", Ephemeral: ephemeral}
	if ls, ok := st.(*storage.LocalStore); ok {
		s.Kind = "local"
		s.Location = ls.Root()
		if ephemeral {
			s.Location = "(temporary folder) " + filepath.Base(ls.Root())
		}
		return s
	}
	if e, ok := st.(endpointer); ok {
		s.Endpoint = e.Endpoint()
	}
	if t, ok := st.(tlsInfoer); ok {
		if ti, err := t.TLSInfo(ctx); err == nil {
			s.TLS, s.TLSVersion, s.CertSHA256, s.CertSubject, s.CertNotAfter = ti.TLS, ti.Version, ti.CertSHA256, ti.CertSubject, ti.CertNotAfter
		} else {
			s.Note = "TLS facts unavailable: " + err.Error()
		}
	}
	if b, ok := st.(bucketFacter); ok {
		if bf, err := b.BucketFacts(ctx); err == nil {
			s.BucketLocation, s.Versioning, s.ObjectLock = bf.Location, bf.Versioning, bf.ObjectLock
		}
	}
	return s
}

// KeyList records the keys of a directory: ids, purposes, dates.
func KeyList(d *keys.Dir) []Key {
	list, err := d.List()
	if err != nil {
		return nil
	}
	var out []Key
	for _, i := range list {
		out = append(out, Key{ID: i.ID, Purpose: i.Purpose, Type: i.Type, Status: i.Status, Primary: i.Primary, Created: i.Created.UTC()})
	}
	return out
}

func phaseOf(name string, started time.Time, d time.Duration) Phase {
	return Phase{Name: name, Title: name, StartedAt: started.UTC().Format(time.RFC3339Nano), DurationSeconds: d.Seconds()}
}

// FromAudit turns an audit into a report; the verdict follows failOn, as
// the command's exit code does.
func FromAudit(rep *audit.Report, failOn audit.Severity, store Store, version string, now time.Time) *Report {
	r := New("audit", version, now)
	r.Stores = []Store{store}
	p := phaseOf("audit", rep.Started, rep.Duration)
	p.Objects = rep.Objects
	var cls []string
	for _, c := range sortedKeys(rep.Classes) {
		cls = append(cls, fmt.Sprintf("%s %d", c, rep.Classes[c]))
	}
	p.Summary = fmt.Sprintf("%d objects (%d versions) classified without any key: %s", rep.Objects, rep.Versions, strings.Join(cls, ", "))
	for _, f := range rep.Findings {
		obj := f.Object
		if f.VersionID != "" {
			obj += " (version " + f.VersionID + ")"
		}
		sev := f.Severity.String()
		if f.Severity > audit.Info && f.Severity < failOn {
			sev = SevLow // shown, below the threshold
		}
		r.Findings = append(r.Findings, Finding{Phase: "audit", Severity: sev, Code: f.Code, Object: obj, Message: f.Message, EUCS: nonNil(f.EUCS), ENISA: nonNil(f.ENISA)})
	}
	// Counted over every finding, including those the audit report did not
	// keep (it keeps a bounded number per code).
	failing := rep.CountAtLeast(max(failOn, audit.Low))
	if rep.FindingsOmitted > 0 {
		p.Summary += fmt.Sprintf("; %d further finding(s) counted but not listed (at most %d per code are kept; `ehrport audit --findings FILE` writes them all)", rep.FindingsOmitted, audit.DefaultMaxExamples)
	}
	p.Findings = failing
	p.Status = StatusPass
	if failing > 0 {
		p.Status = StatusFail
		r.VerdictReasons = append(r.VerdictReasons, fmt.Sprintf("%d finding(s) at or above %s", failing, failOn))
	}
	p.SetThroughput()
	r.Phases = []Phase{p}
	r.TotalSeconds = p.DurationSeconds
	r.Verdict = Pass
	if failing > 0 {
		r.Verdict = Fail
	}
	st := EvidenceProven
	if failing > 0 {
		st = EvidenceFailed
	}
	r.Evidence = append(r.Evidence, Evidence{Claim: "Every object is encrypted at rest under a customer key; no plaintext object exists", Status: st,
		How:  "every object (and every version) listed and its head classified without any key: each must be an ehrport envelope bound to its own name; SSE headers count for nothing",
		EUCS: EUCSAtRest, ENISA: ENISACrypto, Phases: []string{"audit"}, Details: []string{p.Summary}})
	r.Evidence = append(r.Evidence, TransitAndLocation(r.Stores)...)
	r.NotChecked = append(r.NotChecked, rep.NotChecked...)
	return r
}

// FromVerify turns a verification (and an optional comparison against a
// reference location) into a report.
func FromVerify(rep, cmp *verify.Report, stores []Store, version string, started, now time.Time) *Report {
	r := New("verify", version, now)
	r.Stores = stores
	r.ExportID = rep.ExportID
	add := func(name string, v *verify.Report, offset float64) {
		p := phaseOf(name, started, v.Duration)
		p.OffsetSeconds = offset
		p.Objects, p.Bytes = int64(v.ObjectsVerified), v.Bytes
		for _, c := range v.Counts {
			p.Resources += c
		}
		sig := "signature not checked"
		if v.SignatureChecked {
			sig = "manifest signature valid"
		}
		p.Summary = fmt.Sprintf("%s; %d of %d objects read back (%d bytes); proof: %s", sig, v.ObjectsVerified, v.Objects, v.Bytes, v.Proof)
		for _, f := range v.Findings {
			msg := f.Message
			if f.Expected != "" || f.Found != "" {
				msg += fmt.Sprintf(" (expected %s, found %s)", dash(f.Expected), dash(f.Found))
			}
			eucs, enisa := VerifyRefs(f.Code)
			r.Findings = append(r.Findings, Finding{Phase: name, Severity: SevHigh, Code: f.Code, Object: f.Object, Message: msg, EUCS: eucs, ENISA: enisa})
		}
		for _, n := range v.FHIRNotes {
			r.Findings = append(r.Findings, Finding{Phase: name, Severity: SevInfo, Code: "fhir-note", Message: n, EUCS: EUCSFormat, ENISA: ENISAPortable})
		}
		p.Findings = len(v.Findings)
		p.Status = StatusPass
		if !v.OK() {
			p.Status = StatusFail
			r.VerdictReasons = append(r.VerdictReasons, fmt.Sprintf("%s: %d problem(s)", name, len(v.Findings)))
		}
		p.SetThroughput()
		r.Phases = append(r.Phases, p)
		r.TotalSeconds += p.DurationSeconds
		for _, n := range v.NotChecked {
			r.NotChecked = append(r.NotChecked, name+": "+n)
		}
	}
	add("verify", rep, 0)
	if cmp != nil {
		add("compare", cmp, rep.Duration.Seconds())
	}
	if rep.Deep {
		r.Counts.Target, r.Counts.TargetFrom = rep.Counts, "decrypted"
	}
	r.Verdict = Pass
	if len(r.VerdictReasons) > 0 {
		r.Verdict = Fail
	}
	status := func(ok bool) string {
		if ok {
			return EvidenceProven
		}
		return EvidenceFailed
	}
	phases := []string{"verify"}
	if cmp != nil {
		phases = append(phases, "compare")
	}
	r.Evidence = append(r.Evidence, Evidence{Claim: "The export is complete and unchanged", Status: status(r.Verdict == Pass),
		How:  "every object the manifest lists read back in full and compared (size, SHA-256, never an ETag), bindings checked, nothing unlisted beside it",
		EUCS: EUCSComplete, ENISA: ENISAPortable, Phases: phases})
	sig := Evidence{Claim: "Integrity and tamper evidence", EUCS: EUCSIntegrity, ENISA: ENISAIncident, Phases: []string{"verify"},
		How: "the manifest's signature checked with the customer's verification key; this report signed over its exact bytes"}
	switch {
	case !rep.SignatureChecked:
		sig.Status = EvidenceNotRun
	default:
		sig.Status = status(rep.OK())
	}
	r.Evidence = append(r.Evidence, sig)
	if rep.Deep {
		r.Evidence = append(r.Evidence, Evidence{Claim: "The customer holds the keys; the format is open", Status: status(rep.OK()),
			How:  "every object decrypted with the customer's key directory only, plaintext SHA-256 and counts compared with the encrypted summary, FHIR R4 validated",
			EUCS: append(append([]string{}, EUCSKeys...), EUCSFormat...), ENISA: ENISACrypto, Phases: []string{"verify"}})
	} else {
		r.NotChecked = append(r.NotChecked, "decryption and plaintext (run with --deep and --keys)")
	}
	r.Evidence = append(r.Evidence, TransitAndLocation(stores)...)
	return r
}

// VerifyRefs maps a verify finding code to its controls.
func VerifyRefs(code string) ([]string, []string) {
	switch {
	case strings.HasPrefix(code, "fhir-"):
		return EUCSFormat, ENISAPortable
	case code == "bad-signature", code == "unsigned", code == "bad-manifest", code == "bad-envelope":
		return EUCSIntegrity, ENISAIncident
	case code == "summary-undecryptable":
		return EUCSKeys, ENISACrypto
	case code == "sha256-mismatch", code == "size-mismatch", code == "plaintext-mismatch":
		return append(append([]string{}, EUCSIntegrity...), EUCSComplete...), ENISAIncident
	}
	return EUCSComplete, ENISAPortable
}

// TransitAndLocation are the evidence entries about the stores themselves:
// encryption in transit and declared location.
func TransitAndLocation(stores []Store) []Evidence {
	tr := Evidence{Claim: "Data is encrypted in transit", EUCS: EUCSTransit, ENISA: ENISACrypto, Phases: []string{"setup"}, Status: EvidenceProven,
		How: "http:// endpoints are refused unless explicitly allowed; the TLS version and certificate fingerprint of each endpoint are recorded"}
	loc := Evidence{Claim: "Data location is declared", EUCS: EUCSLocation, ENISA: []string{}, Phases: []string{"setup"}, Status: EvidenceProven,
		How: "the endpoint, bucket and the bucket location the server reports are recorded for each store"}
	s3 := 0
	for _, s := range stores {
		if s.Kind != "s3" {
			tr.Details = append(tr.Details, fmt.Sprintf("%s: local folder, no network", s.Role))
			loc.Details = append(loc.Details, fmt.Sprintf("%s: local folder %s", s.Role, s.Location))
			continue
		}
		s3++
		if s.TLS {
			tr.Details = append(tr.Details, fmt.Sprintf("%s: %s, %s, certificate sha256 %s", s.Role, s.Endpoint, s.TLSVersion, s.CertSHA256))
		} else {
			tr.Status = EvidenceFailed
			tr.Details = append(tr.Details, fmt.Sprintf("%s: %s is plain HTTP", s.Role, s.Endpoint))
		}
		bl := s.BucketLocation
		if bl == "" {
			bl = "not reported"
		}
		loc.Details = append(loc.Details, fmt.Sprintf("%s: %s, endpoint %s, bucket location %s", s.Role, s.Location, s.Endpoint, bl))
	}
	if s3 == 0 {
		tr.Status, loc.Status = EvidenceNotRun, EvidenceNotRun
	}
	return []Evidence{tr, loc}
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
