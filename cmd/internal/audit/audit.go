// Package audit checks encryption at rest without any key: every object
// (and every version) of a store location must be an ehrport envelope that
// meets local policy and is bound to its own name, and nothing that looks
// like patient data may sit in the clear, in names, metadata or tags.
//
// It reads only the head of each object, never the whole, and never
// changes the store.
package audit

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ehrport/ehrport/cmd/internal/workers"
	ehrcrypto "github.com/ehrport/ehrport/crypto"
	"github.com/ehrport/ehrport/storage"
)

// Severity orders findings; --fail-on picks the threshold.
type Severity int

const (
	Info Severity = iota
	Low
	Medium
	High
	Critical
)

var severityNames = []string{"info", "low", "medium", "high", "critical"}

func (s Severity) String() string { return severityNames[s] }

// MarshalText implements encoding.TextMarshaler.
func (s Severity) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// ParseSeverity reads a severity name.
func ParseSeverity(s string) (Severity, error) {
	for i, n := range severityNames {
		if strings.EqualFold(s, n) {
			return Severity(i), nil
		}
	}
	return 0, fmt.Errorf("severity %q: use info, low, medium, high or critical", s)
}

// Object classes.
const (
	ClassEnvelope  = "envelope"  // a valid ehrport envelope that meets policy
	ClassPolicy    = "policy"    // an envelope that breaks policy or its binding
	ClassPlaintext = "plaintext" // readable content: JSON, FHIR, gzip, PDF, DICOM, text
	ClassUnknown   = "unknown"   // not our envelope and not recognisably plaintext
	ClassMalformed = "malformed" // our magic, but a header that does not parse or sizes that do not add up
	ClassMetadata  = "export-metadata"
	ClassDeleted   = "delete-marker"
)

// Finding is one problem or fact, with the controls it speaks to.
type Finding struct {
	Severity  Severity `json:"severity"`
	Code      string   `json:"code"`
	Object    string   `json:"object,omitempty"`
	VersionID string   `json:"version_id,omitempty"`
	Message   string   `json:"message"`
	EUCS      []string `json:"eucs,omitempty"`
	ENISA     []string `json:"enisa,omitempty"`
}

// References used by findings (see ../shared/notes/evidence.md).
var (
	refEncryption = []string{"CKM-03.1", "CKM-03.2", "CKM-03.4"}
	refTransit    = []string{"CKM-02", "PI-01.4"}
	refIntegrity  = []string{"IM-07", "OPS-09"}
	refRestore    = []string{"OPS-08.2", "BC-04"}
	refLocation   = []string{"DOC-03"}
	enisaCrypto   = []string{"ENISA-HC: data encryption"}
	enisaIncident = []string{"ENISA-HC: incident management"}
	enisaPort     = []string{"ENISA-HC: data portability and interoperability"}
)

// Policy is what a valid object must meet, beyond parsing.
type Policy struct {
	// Crypto is the envelope policy (version, suite, stanza cap, required
	// key ids, escrow).
	Crypto ehrcrypto.Policy
	// MetadataNames are the plaintext files an export keeps by design
	// (they carry no patient data): base names, matched in any folder.
	MetadataNames []string
	// MinPayloadEntropy is the lowest entropy, in bits per byte, accepted
	// for an envelope's payload sample of at least 1 KiB.
	MinPayloadEntropy float64
}

// DefaultPolicy accepts format v1 under the default crypto policy.
func DefaultPolicy() Policy {
	return Policy{
		Crypto:            ehrcrypto.DefaultPolicy(),
		MetadataNames:     []string{"manifest.json", "manifest.json.sig"},
		MinPayloadEntropy: 7.0,
	}
}

// Options configure Run.
type Options struct {
	Store       storage.Store
	Policy      Policy
	Concurrency int // objects sampled at once (default DefaultConcurrency, at most MaxConcurrency)
	// SampleBytes is how much of each object is read (default 4 KiB):
	// a header of a few hundred bytes and at least 1 KiB of payload for
	// the entropy check. Per-request cost, not bytes, dominates.
	SampleBytes int64
	// Progress, if set, is called after each object.
	Progress func(done int64)
	// MaxExamples bounds the findings the report keeps for each code
	// (default DefaultMaxExamples): the most severe, then those with the
	// smallest object names, so the report does not depend on the order
	// in which workers finish. Every finding is still counted (Report.FindingCounts,
	// BySeverity) and passed to OnFinding, so a million plaintext objects
	// give a report of bounded size with exact counts.
	MaxExamples int
	// OnFinding, if set, is called with every finding as it is made, one
	// call at a time (never concurrently): the place to stream the full
	// list to a file.
	OnFinding func(Finding)
}

// DefaultConcurrency is how many objects are sampled at once when Options
// do not say. An audit waits on the network, not the CPU, but on the test
// bed's 2 cores the servers share the CPU with the client: more requests
// in flight beyond this only queue (see docs/audit.md, Speed).
const DefaultConcurrency = 16

// MaxConcurrency caps Options.Concurrency: each request in flight holds a
// connection and a sample buffer, and an S3 store keeps at most 128 idle
// connections per host (storage.NewS3Store): beyond that, connections would
// be closed after each request and every request would pay a TLS handshake.
const MaxConcurrency = 128

// DefaultMaxExamples is how many findings of each code a report keeps.
const DefaultMaxExamples = 100

// Report is the result of an audit.
type Report struct {
	Location string           `json:"location"`
	Started  time.Time        `json:"started"`
	Duration time.Duration    `json:"duration_ns"`
	Objects  int64            `json:"objects"`
	Versions int64            `json:"versions"`
	Bytes    int64            `json:"bytes"`
	Classes  map[string]int64 `json:"classes"`
	Store    *StoreFacts      `json:"store,omitempty"`
	// Findings holds at most Options.MaxExamples findings per code;
	// FindingCounts counts them all, and FindingsOmitted says how many
	// were counted but not kept.
	Findings        []Finding        `json:"findings"`
	FindingCounts   map[string]int64 `json:"finding_counts"`
	FindingsOmitted int64            `json:"findings_omitted,omitempty"`
	// BySeverity counts every finding, kept or not.
	BySeverity map[string]int `json:"by_severity"`
	NotChecked []string       `json:"not_checked"`
}

// StoreFacts are the store-level settings recorded as evidence.
type StoreFacts struct {
	Kind string `json:"kind"`
	storage.BucketFacts
	storage.TLSInfo
}

// Worst returns the highest severity found, and whether there was any
// finding, counting the findings the report did not keep.
func (r *Report) Worst() (Severity, bool) {
	worst, any := Info, false
	for s := Info; s <= Critical; s++ {
		if r.count(s) > 0 {
			worst, any = s, true
		}
	}
	return worst, any
}

// CountAtLeast counts findings at or above s, including those the report
// did not keep.
func (r *Report) CountAtLeast(s Severity) int {
	n := 0
	for ; s <= Critical; s++ {
		n += r.count(s)
	}
	return n
}

// count is the number of findings of severity s: from BySeverity, which
// Run fills with every finding, or from the list for a report built
// without it.
func (r *Report) count(s Severity) int {
	if len(r.BySeverity) > 0 {
		return r.BySeverity[s.String()]
	}
	n := 0
	for _, f := range r.Findings {
		if f.Severity == s {
			n++
		}
	}
	return n
}

type target struct {
	key       string
	versionID string
	latest    bool
	size      int64
}

// Run audits the store location. A store that cannot be listed is an error;
// everything found in it is a finding.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	o.Concurrency = min(o.Concurrency, MaxConcurrency)
	if o.SampleBytes <= 0 {
		o.SampleBytes = 4 << 10
	}
	if o.MaxExamples <= 0 {
		o.MaxExamples = DefaultMaxExamples
	}
	rep := &Report{Location: o.Store.Location(), Started: time.Now().UTC(), Classes: map[string]int64{},
		FindingCounts: map[string]int64{}, BySeverity: map[string]int{}}
	a := &auditor{o: o, rep: rep, exportIDs: map[string]map[string]*exportGroup{}, kept: map[string][]Finding{}}

	if err := a.storeFacts(ctx); err != nil {
		return nil, err
	}

	var listErr error
	targets := func(yield func(target) bool) { listErr = a.list(ctx, yield) }
	if err := workers.ForEach(ctx, o.Concurrency, targets, a.object); err != nil {
		return nil, err
	}
	if listErr != nil {
		return nil, listErr
	}
	a.exportConsistency()
	for _, code := range slices.Sorted(maps.Keys(a.kept)) {
		rep.Findings = append(rep.Findings, a.kept[code]...)
	}
	a.kept = nil
	slices.SortStableFunc(rep.Findings, func(x, y Finding) int {
		if c := cmp.Compare(y.Severity, x.Severity); c != 0 {
			return c
		}
		if c := cmp.Compare(x.Object, y.Object); c != 0 {
			return c
		}
		return cmp.Compare(x.Code, y.Code)
	})
	rep.FindingsOmitted = a.omitted
	rep.NotChecked = []string{
		"the cryptographic validity of envelopes (commitment, MAC, payload tags): only a key holder can check it; run `ehrport verify --deep` with the keys",
		"truncation or corruption that leaves a size a writer could produce: `ehrport verify` compares sizes and SHA-256 with the signed manifest",
		"that the key ids in envelopes belong to keys only the customer holds: compare them with `ehrport keys list` (CKM-03.4)",
		"server-side encryption claims, which are recorded but never counted as evidence",
		"contract clauses, incident processes and physical security, which no tool can check",
	}
	if a.rootsDropped > 0 {
		rep.NotChecked = append(rep.NotChecked, fmt.Sprintf("export consistency (one export per folder, a manifest beside it) for %d envelopes in folders beyond the first %d", a.rootsDropped, maxExportRoots))
	}
	rep.Duration = time.Since(rep.Started)
	return rep, nil
}

type auditor struct {
	o   Options
	mu  sync.Mutex
	rep *Report
	// exportIDs: per export root (the key prefix before the binding path),
	// the envelopes seen for each export id; at most maxExportRoots roots,
	// rootsDropped counts the envelopes of the others.
	exportIDs    map[string]map[string]*exportGroup
	rootsDropped int64
	// kept: per finding code, the findings kept for the report, in
	// compareFinding order; omitted counts the ones dropped.
	kept    map[string][]Finding
	omitted int64
}

// maxExportRoots bounds the export folders whose consistency is checked,
// so that a store of a million one-object folders stays in bounded memory.
var maxExportRoots = 10000 // a variable so that tests can lower it

type exportGroup struct {
	count  int64
	sample []string
}

// add counts a finding, passes it on, and keeps it if it is among the
// first MaxExamples of its code: the most severe, then by object and
// version.
func (a *auditor) add(f Finding) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.rep.FindingCounts[f.Code]++
	a.rep.BySeverity[f.Severity.String()]++
	if a.o.OnFinding != nil {
		a.o.OnFinding(f)
	}
	kept := a.kept[f.Code]
	i, _ := slices.BinarySearchFunc(kept, f, compareFinding)
	if i >= a.o.MaxExamples {
		a.omitted++
		return
	}
	if len(kept) == a.o.MaxExamples {
		kept = kept[:len(kept)-1]
		a.omitted++
	}
	a.kept[f.Code] = slices.Insert(kept, i, f)
}

func compareFinding(x, y Finding) int {
	if c := cmp.Compare(y.Severity, x.Severity); c != 0 {
		return c
	}
	if c := cmp.Compare(x.Object, y.Object); c != 0 {
		return c
	}
	return cmp.Compare(x.VersionID, y.VersionID)
}

func (a *auditor) storeFacts(ctx context.Context) error {
	switch st := a.o.Store.(type) {
	case *storage.S3Store:
		tlsInfo, err := st.TLSInfo(ctx)
		if err != nil {
			return &storage.Error{Op: "connect", Location: st.Location(), Err: fmt.Errorf("%w: %v", storage.ErrUnavailable, err)}
		}
		bf, err := st.BucketFacts(ctx)
		if err != nil {
			return err
		}
		a.rep.Store = &StoreFacts{Kind: "s3", BucketFacts: bf, TLSInfo: tlsInfo}
		if !tlsInfo.TLS {
			a.add(Finding{Severity: High, Code: "plain-http", Message: "the endpoint " + st.Endpoint() + " is plain HTTP: data and credentials cross the network unencrypted", EUCS: refTransit, ENISA: enisaCrypto})
		}
		if bf.PublicAccess {
			a.add(Finding{Severity: Critical, Code: "public-access", Message: "the bucket policy allows anonymous access", EUCS: refEncryption, ENISA: enisaCrypto})
		}
		switch bf.Versioning {
		case "enabled", "suspended":
			a.add(Finding{Severity: Info, Code: "versioning", Message: "versioning is " + bf.Versioning + ": every version was audited, not only the latest", EUCS: refRestore})
		default:
			a.add(Finding{Severity: Info, Code: "versioning", Message: "versioning is " + bf.Versioning + ": an overwritten or deleted object cannot be recovered from this store", EUCS: refRestore})
		}
		if bf.ObjectLock != "enabled" {
			a.add(Finding{Severity: Info, Code: "object-lock", Message: "object lock is " + bf.ObjectLock + ": manifests and reports can be altered or deleted by anyone with write access", EUCS: refIntegrity})
		}
		if bf.Location != "" {
			a.add(Finding{Severity: Info, Code: "location", Message: "bucket location: " + bf.Location, EUCS: refLocation})
		}
	case *storage.LocalStore:
		a.rep.Store = &StoreFacts{Kind: "local"}
	}
	return nil
}

// list yields every object (every version, where the store keeps them),
// until yield says stop.
func (a *auditor) list(ctx context.Context, yield func(target) bool) error {
	if vl, ok := a.o.Store.(storage.VersionLister); ok && a.rep.Store != nil && (a.rep.Store.Versioning == "enabled" || a.rep.Store.Versioning == "suspended") {
		// Versions come grouped by key (S3 lists them in key order), so a
		// new object is a key unlike the one before: no set of all keys.
		prev, first := "", true
		for v, err := range vl.ListVersions(ctx, "") {
			if err != nil {
				return err
			}
			a.mu.Lock()
			a.rep.Versions++
			if first || v.Key != prev {
				prev, first = v.Key, false
				a.rep.Objects++
			}
			a.mu.Unlock()
			if v.DeleteMarker {
				a.count(ClassDeleted)
				continue
			}
			if !yield(target{key: v.Key, versionID: v.VersionID, latest: v.IsLatest, size: v.Size}) {
				return nil
			}
		}
		return nil
	}
	for oi, err := range a.o.Store.List(ctx, "") {
		if err != nil {
			return err
		}
		a.mu.Lock()
		a.rep.Objects++
		a.rep.Versions++
		a.mu.Unlock()
		if !yield(target{key: oi.Key, latest: true, size: oi.Size}) {
			return nil
		}
	}
	return nil
}

func (a *auditor) count(class string) {
	a.mu.Lock()
	a.rep.Classes[class]++
	a.mu.Unlock()
}

func (a *auditor) sample(ctx context.Context, t target) (storage.Sample, error) {
	// The listed size lets a store pick the cheaper request for the same
	// bytes (a whole small object rather than a range of it).
	if s, ok := a.o.Store.(storage.Sampler); ok {
		return s.SampleObject(ctx, t.key, t.versionID, a.o.SampleBytes, t.size)
	}
	return storage.Sample{}, fmt.Errorf("store %s cannot be sampled", a.o.Store.Location())
}

// object classifies one object version. It returns an error only when the
// store fails; problems with the object are findings.
func (a *auditor) object(ctx context.Context, t target) error {
	defer func() {
		if a.o.Progress != nil {
			a.mu.Lock()
			n := a.rep.Versions
			a.mu.Unlock()
			a.o.Progress(n)
		}
	}()
	smp, err := a.sample(ctx, t)
	if errors.Is(err, storage.ErrNotExist) {
		return nil // deleted while auditing
	}
	if err != nil {
		return err
	}
	a.mu.Lock()
	a.rep.Bytes += smp.Info.Size
	a.mu.Unlock()
	obj := t.key
	ver := ""
	if t.versionID != "" && !t.latest {
		ver = t.versionID
	}
	a.names(t, smp)

	if slices.Contains(a.o.Policy.MetadataNames, path.Base(t.key)) {
		a.count(ClassMetadata)
		if smp.SSE != "" {
			a.sse(t, smp)
		}
		return nil
	}
	if !bytes.HasPrefix(smp.Head, []byte(ehrcrypto.Magic)) {
		content := classify(smp.Head)
		if content.Plaintext() {
			a.count(ClassPlaintext)
			sev := Critical
			if content == ContentBinary || content == ContentText || content == ContentJSON || content == ContentZip {
				sev = High
			}
			a.add(Finding{Severity: sev, Code: "plaintext-object", Object: obj, VersionID: ver,
				Message: fmt.Sprintf("stored unencrypted (%s, %d bytes, entropy %.2f bits/byte): not an ehrport envelope", content, smp.Info.Size, Entropy(smp.Head)),
				EUCS:    refEncryption, ENISA: enisaCrypto})
		} else {
			a.count(ClassUnknown)
			a.add(Finding{Severity: High, Code: "unknown-content", Object: obj, VersionID: ver,
				Message: fmt.Sprintf("not an ehrport envelope (%s, %d bytes): it may be encrypted, but not under keys this audit can attribute to the customer", content, smp.Info.Size),
				EUCS:    refEncryption, ENISA: enisaCrypto})
		}
		a.sse(t, smp)
		return nil
	}

	rep, err := ehrcrypto.Inspect(bytes.NewReader(smp.Head), smp.Info.Size, ehrcrypto.WithPolicy(a.o.Policy.Crypto))
	if err == nil {
		err = a.o.Policy.Crypto.Check(rep.Header)
	}
	switch {
	case errors.Is(err, ehrcrypto.ErrPolicy):
		a.count(ClassPolicy)
		a.add(Finding{Severity: High, Code: "envelope-policy", Object: obj, VersionID: ver, Message: "envelope refused by policy: " + err.Error(), EUCS: refEncryption, ENISA: enisaCrypto})
		return nil
	case err != nil:
		a.count(ClassMalformed)
		a.add(Finding{Severity: High, Code: "malformed-envelope", Object: obj, VersionID: ver, Message: "envelope header does not parse: " + err.Error(), EUCS: refIntegrity, ENISA: enisaIncident})
		return nil
	case !rep.Consistent:
		a.count(ClassMalformed)
		a.add(Finding{Severity: High, Code: "inconsistent-size", Object: obj, VersionID: ver,
			Message: fmt.Sprintf("object is %d bytes, which no writer produces for this header (truncated or padded?): %s", smp.Info.Size, strings.Join(rep.Problems, "; ")),
			EUCS:    refIntegrity, ENISA: enisaIncident})
		return nil
	}
	// The binding path is the key without .ehr, relative to the export root:
	// so the key must end with it, on a folder boundary.
	bpath := rep.Header.Binding.Path
	want := bpath + ".ehr"
	root, ok := strings.CutSuffix(t.key, want)
	if !ok || (root != "" && !strings.HasSuffix(root, "/")) {
		a.count(ClassPolicy)
		a.add(Finding{Severity: High, Code: "binding-mismatch", Object: obj, VersionID: ver,
			Message: fmt.Sprintf("envelope is bound to %q but stored as %q: renamed, swapped or copied from elsewhere", want, t.key),
			EUCS:    refIntegrity, ENISA: enisaIncident})
		return nil
	}
	if payload := smp.Head[min(int64(rep.HeaderLen), int64(len(smp.Head))):]; len(payload) >= 1024 {
		if h := Entropy(payload); h < a.o.Policy.MinPayloadEntropy {
			a.count(ClassPolicy)
			a.add(Finding{Severity: High, Code: "low-entropy-payload", Object: obj, VersionID: ver,
				Message: fmt.Sprintf("payload entropy %.2f bits/byte is too low for ciphertext: the header may front plaintext", h),
				EUCS:    refEncryption, ENISA: enisaCrypto})
			return nil
		}
	}
	if t.latest {
		a.noteExport(root, rep.Header.Binding.ExportID, t.key)
	}
	a.count(ClassEnvelope)
	a.sse(t, smp)
	return nil
}

func (a *auditor) sse(t target, smp storage.Sample) {
	if smp.SSE == "" {
		return
	}
	a.add(Finding{Severity: Info, Code: "sse-claimed", Object: t.key,
		Message: "the server claims server-side encryption (" + smp.SSE + "); recorded, never counted as evidence", EUCS: refEncryption})
}

// names checks the key, metadata and tags for values that look like patient
// data or plaintext digests. Keys are checked without the digest rule:
// content-addressed names are common and carry no plaintext by themselves.
func (a *auditor) names(t target, smp storage.Sample) {
	if why := sensitive(t.key, false); why != "" {
		a.add(Finding{Severity: High, Code: "sensitive-name", Object: t.key, Message: "object name " + why, EUCS: refEncryption, ENISA: enisaCrypto})
	}
	check := func(kind string, m map[string]string) {
		for _, k := range slices.Sorted(maps.Keys(m)) {
			if why := sensitive(k+" "+m[k], true); why != "" {
				a.add(Finding{Severity: High, Code: "sensitive-" + kind, Object: t.key,
					Message: fmt.Sprintf("%s %q %s; values are not shown here", kind, k, why), EUCS: refEncryption, ENISA: enisaCrypto})
			}
		}
	}
	check("metadata", smp.Metadata)
	check("tag", smp.Tags)
}

// noteExport records which export an envelope belongs to, per export root.
// Only a bounded sample of keys is kept per export id, so memory does not
// grow with the number of objects.
func (a *auditor) noteExport(root, id, key string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ids := a.exportIDs[root]
	if ids == nil {
		if len(a.exportIDs) >= maxExportRoots {
			a.rootsDropped++
			return
		}
		ids = map[string]*exportGroup{}
		a.exportIDs[root] = ids
	}
	g := ids[id]
	if g == nil {
		g = &exportGroup{}
		ids[id] = g
	}
	g.count++
	// Keep the smallest keys, so the sample does not depend on the order
	// in which workers finish.
	i, _ := slices.BinarySearch(g.sample, key)
	g.sample = slices.Insert(g.sample, i, key)
	if len(g.sample) > exportSample {
		g.sample = g.sample[:exportSample]
	}
}

// exportSample is how many objects of a stray export are named.
const exportSample = 10

func (a *auditor) exportConsistency() {
	roots := slices.Sorted(maps.Keys(a.exportIDs))
	for _, r := range roots {
		// One folder, one export: the export with most objects is the
		// folder's; every object of another was mixed in.
		ids := a.exportIDs[r]
		if len(ids) > 1 {
			main := ""
			for _, id := range slices.Sorted(maps.Keys(ids)) {
				if main == "" || ids[id].count > ids[main].count {
					main = id
				}
			}
			for _, id := range slices.Sorted(maps.Keys(ids)) {
				if id == main {
					continue
				}
				for _, k := range ids[id].sample {
					a.add(Finding{Severity: High, Code: "mixed-exports", Object: k,
						Message: fmt.Sprintf("bound to export %q in a folder of export %q (%d objects of %q here): objects were mixed between exports", id, main, ids[id].count, id),
						EUCS:    refIntegrity, ENISA: enisaPort})
				}
			}
		}
		// An export root with envelopes but no manifest is incomplete.
		if _, err := a.o.Store.Stat(context.Background(), r+"manifest.json"); errors.Is(err, storage.ErrNotExist) {
			a.add(Finding{Severity: Medium, Code: "no-manifest", Object: r + "manifest.json",
				Message: "encrypted objects without a manifest beside them: an incomplete or interrupted export", EUCS: []string{"PI-02", "PM-05"}, ENISA: enisaPort})
		}
	}
}
