// Package verify proves that an export at a store location is complete and
// unchanged: every object the signed manifest lists is there with its size
// and ciphertext SHA-256 (read back in full, never an ETag), its envelope is
// bound to its own path and export, and nothing unlisted sits beside it.
// With the customer's keys (Deep) it also decrypts every object as a stream
// and checks the plaintext against the encrypted summary, and the FHIR.
//
// Problems with the data are findings; only a store that cannot be read is
// an error.
package verify

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/ehrport/ehrport/cmd/internal/export"
	"github.com/ehrport/ehrport/cmd/internal/workers"
	ehrcrypto "github.com/ehrport/ehrport/crypto"
	"github.com/ehrport/ehrport/fhir"
	"github.com/ehrport/ehrport/storage"
)

// Finding is one problem: which object, what was expected, what was found.
type Finding struct {
	Code     string `json:"code"`
	Object   string `json:"object,omitempty"`
	Expected string `json:"expected,omitempty"`
	Found    string `json:"found,omitempty"`
	Message  string `json:"message"`
}

// DefaultConcurrency is how many objects verify reads at once. Reading
// waits on the servers: with 4, verifying 2,000 objects of 20 KB against a
// reference took 3.4-4.2 s here, with 16 2.9 s and less CPU. Each object
// streams, so memory grows little with it.
const DefaultConcurrency = 16

// Options configure Run.
type Options struct {
	Store storage.Store
	// Verifier checks manifest.json.sig; nil leaves the signature unchecked
	// (and says so in the report).
	Verifier *ehrcrypto.Verifier
	// Deep decrypts every object with Identities and checks the plaintext.
	Deep       bool
	Identities []ehrcrypto.Identity
	// Concurrency is how many objects are read at once (DefaultConcurrency).
	Concurrency int
	// Reference, when set (verify --against), is read at the same time as
	// Store, object by object, and compared byte for byte with it. A
	// reference object equal to a copy here that matched the manifest is
	// then taken by CompareByManifest as proven without reading it again:
	// each side is read once, and both at once.
	Reference storage.Store
	Log       *slog.Logger
	// Progress, if set, is called after each object with the objects and
	// bytes done so far.
	Progress func(objects int, bytes int64)
}

// Report is the result of a verification.
type Report struct {
	Location         string           `json:"location"`
	ExportID         string           `json:"export_id,omitempty"`
	Deep             bool             `json:"deep"`
	SignatureChecked bool             `json:"signature_checked"`
	Objects          int              `json:"objects"`
	ObjectsVerified  int              `json:"objects_verified"`
	Bytes            int64            `json:"bytes"`
	PlaintextBytes   int64            `json:"plaintext_bytes,omitempty"`
	Counts           map[string]int64 `json:"counts,omitempty"`
	Proof            string           `json:"proof"`
	Findings         []Finding        `json:"findings"`
	// manifest is the manifest verified, for a comparison that follows.
	manifest      *export.Manifest
	manifestBytes []byte
	// refSame[i]: the reference's object i of the manifest has the same
	// bytes as the copy here, which matched the manifest (Options.Reference).
	refSame []bool
	// FHIRNotes are FHIR findings the source data already had at export.
	FHIRNotes  []string      `json:"fhir_notes,omitempty"`
	NotChecked []string      `json:"not_checked"`
	Duration   time.Duration `json:"duration_ns"`
}

// OK reports whether everything matched.
func (r *Report) OK() bool { return len(r.Findings) == 0 }

type verifier struct {
	o        Options
	rep      *Report
	mu       sync.Mutex
	exportID string
	summary  map[string]export.SummaryObject
	// exportFindings are the FHIR finding counts the export recorded.
	exportFindings map[string]int64
	// FHIR checking in Deep mode runs in one goroutine fed by lines.
	lines chan fhirLine
}

type fhirLine struct {
	raw    []byte
	pos    fhir.Position
	bundle bool // a Bundle kept whole (the Bundle objects of the export)
}

func (v *verifier) add(f Finding) {
	v.mu.Lock()
	v.rep.Findings = append(v.rep.Findings, f)
	v.mu.Unlock()
}

// Run verifies the export at o.Store.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	start := time.Now()
	rep := &Report{Location: o.Store.Location(), Deep: o.Deep, Proof: "read-back: SHA-256 of every byte, compared with the signed manifest"}
	v := &verifier{o: o, rep: rep}
	defer func() { rep.Duration = time.Since(start) }()

	_, err := o.Store.Stat(ctx, export.ManifestKey)
	if err != nil && (!errors.Is(err, storage.ErrNotExist) || errors.Is(err, storage.ErrNoBucket)) {
		return nil, err // a missing bucket is a wrong reference, not an incomplete export
	}
	if errors.Is(err, storage.ErrNotExist) {
		v.add(Finding{Code: "no-manifest", Object: export.ManifestKey, Message: "no manifest.json: the export is incomplete (interrupted before its last step) or this is not an export location"})
		v.sort()
		return rep, nil
	}
	m, mb, err := export.ReadManifest(ctx, o.Store)
	if err != nil {
		var se *storage.Error
		if errors.As(err, &se) && !errors.Is(err, storage.ErrNotExist) {
			return nil, err
		}
		v.add(Finding{Code: "bad-manifest", Object: export.ManifestKey, Message: err.Error()})
		v.sort()
		return rep, nil
	}
	ext := m.Extension.Ehrport
	rep.manifest, rep.manifestBytes = m, mb
	v.exportID = ext.ExportID
	rep.ExportID = ext.ExportID
	rep.Objects = len(ext.Objects)

	switch {
	case o.Verifier != nil:
		if err := export.VerifySignature(ctx, o.Store, o.Verifier, mb); err != nil {
			var se *storage.Error
			if errors.As(err, &se) && !errors.Is(err, storage.ErrNotExist) {
				return nil, err
			}
			v.add(Finding{Code: "bad-signature", Object: export.SignatureKey, Message: "the manifest's signature does not verify with the key given: " + err.Error()})
		} else {
			rep.SignatureChecked = true
		}
	case ext.Signed:
		rep.NotChecked = append(rep.NotChecked, "the manifest's signature: no verification key was given (--keys DIR or --verify-key signing.pub.json)")
	default:
		v.add(Finding{Code: "unsigned", Object: export.ManifestKey, Message: "the manifest says it is unsigned: nothing proves who wrote it"})
	}

	if o.Deep {
		if err := v.readSummary(ctx, ext); err != nil {
			return nil, err
		}
		v.lines = make(chan fhirLine, 256)
	}
	var checkerDone chan fhirResult
	if o.Deep {
		checkerDone = make(chan fhirResult, 1)
		go func() { checkerDone <- v.checkFHIR(v.lines) }()
	}

	listed := map[string]bool{export.ManifestKey: true, export.SignatureKey: true}
	for _, e := range ext.Objects {
		listed[e.Key] = true
	}
	if err := v.objects(ctx, ext.Objects); err != nil {
		if o.Deep {
			close(v.lines)
			<-checkerDone
		}
		return nil, err
	}
	if o.Deep {
		close(v.lines)
		res := <-checkerDone
		v.fhirFindings(res)
		v.compareCounts()
	}
	// Nothing unlisted may sit beside the export.
	for oi, err := range o.Store.List(ctx, "") {
		if err != nil {
			return nil, err
		}
		if !listed[oi.Key] {
			v.add(Finding{Code: "unlisted-object", Object: oi.Key, Found: fmt.Sprintf("%d bytes", oi.Size), Message: "not in the manifest: added after the export, or left from another one"})
		}
	}
	if !o.Deep {
		rep.NotChecked = append(rep.NotChecked,
			"that the objects decrypt and their plaintext matches the encrypted summary: run with --keys DIR --deep",
			"the FHIR content (validation, references): run with --keys DIR --deep")
	}
	v.sort()
	return rep, nil
}

func (v *verifier) sort() {
	slices.SortStableFunc(v.rep.Findings, func(a, b Finding) int {
		if c := cmp.Compare(a.Object, b.Object); c != 0 {
			return c
		}
		return cmp.Compare(a.Code, b.Code)
	})
}

func (v *verifier) readSummary(ctx context.Context, ext export.ManifestExt) error {
	var entry *export.ObjectEntry
	for i := range ext.Objects {
		if ext.Objects[i].Kind == "summary" {
			entry = &ext.Objects[i]
		}
	}
	if entry == nil {
		v.add(Finding{Code: "no-summary", Message: "the manifest lists no encrypted summary: plaintext hashes cannot be checked"})
		return nil
	}
	var data []byte
	_, err := storage.DefaultRetryPolicy.Do(ctx, func(int) error {
		var ferr error
		data, ferr = v.fetchSummary(ctx, entry)
		return ferr
	})
	var doc export.SummaryDoc
	switch {
	case errors.Is(err, storage.ErrNotExist):
		return nil // reported as missing by the object pass
	case isStoreErr(err) || (err != nil && !errors.Is(err, ehrcrypto.ErrCorrupt)):
		return err // the store (retried above) or the keys: not the summary's fault
	case err != nil:
		v.add(Finding{Code: "summary-undecryptable", Object: entry.Key, Message: err.Error()})
		return nil
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		v.add(Finding{Code: "summary-undecryptable", Object: entry.Key, Message: err.Error()})
		return nil
	}
	v.exportFindings = doc.Findings
	if v.exportFindings == nil {
		v.exportFindings = map[string]int64{}
	}
	v.summary = map[string]export.SummaryObject{}
	for _, so := range doc.Objects {
		v.summary[so.Path] = so
	}
	v.rep.Counts = map[string]int64{}
	return nil
}

// fetchSummary reads and decrypts the summary. The store's Get body
// reports a reset or a cut response as a storage error (retryable), apart
// from the decryption's own verdict (ErrCorrupt).
func (v *verifier) fetchSummary(ctx context.Context, entry *export.ObjectEntry) ([]byte, error) {
	rc, err := v.o.Store.Get(ctx, entry.Key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	r, err := ehrcrypto.NewDecryptReader(io.LimitReader(rc, entry.Size+1), v.o.Identities, ehrcrypto.Binding{ExportID: v.exportID, Path: entry.Path})
	if err != nil {
		return nil, err
	}
	return io.ReadAll(io.LimitReader(r, 64<<20))
}

// objects reads every listed object, o.Concurrency at a time.
func (v *verifier) objects(ctx context.Context, entries []export.ObjectEntry) error {
	if v.o.Reference != nil {
		v.rep.refSame = make([]bool, len(entries))
	}
	return workers.ForEach(ctx, v.o.Concurrency, indices(len(entries)), func(ctx context.Context, i int) error {
		return v.object(ctx, i, entries[i])
	})
}

// object verifies object i of the manifest. It returns an error only when
// the store fails in a way that is not about this object's content.
func (v *verifier) object(ctx context.Context, i int, e export.ObjectEntry) error {
	var ref *refComparer
	if v.o.Reference != nil {
		// Both requests go out now; the reference reads ahead on its own.
		ref = compareReference(ctx, v.o.Reference, e.Key, e.Size)
		defer ref.close()
	}
	rc, err := v.o.Store.Get(ctx, e.Key)
	if errors.Is(err, storage.ErrNotExist) {
		v.add(Finding{Code: "missing", Object: e.Key, Expected: fmt.Sprintf("%d bytes, sha256 %s", e.Size, e.SHA256), Found: "nothing", Message: "listed in the manifest but not in the store"})
		return nil
	}
	if err != nil {
		return err
	}
	defer rc.Close()
	h := sha256.New()
	var n countWriter
	// Read at most one byte more than listed, to see a longer object
	// without reading an unbounded one.
	var w io.Writer = io.MultiWriter(h, &n)
	if ref != nil {
		w = io.MultiWriter(h, &n, ref)
	}
	tee := io.TeeReader(io.LimitReader(rc, e.Size+1), w)
	want := ehrcrypto.Binding{ExportID: v.exportID, Path: e.Path}
	var contentErr error
	if v.o.Deep {
		contentErr = v.decrypt(e, tee, want)
	} else {
		contentErr = v.header(e, tee, want)
	}
	// Drain what the envelope reader did not consume, so the hash covers
	// every byte.
	if err := drain(tee); err != nil {
		if isStoreErr(err) {
			return err
		}
		contentErr = cmp.Or(contentErr, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	v.mu.Lock()
	v.rep.Bytes += int64(n)
	v.mu.Unlock()
	if ref != nil && int64(n) == e.Size && sum == e.SHA256 && ref.same() {
		v.rep.refSame[i] = true // each worker writes its own index
	}
	switch {
	case int64(n) != e.Size:
		found := fmt.Sprintf("%d bytes", n)
		if int64(n) > e.Size {
			found = "more than " + fmt.Sprintf("%d bytes", e.Size)
		}
		v.add(Finding{Code: "size-mismatch", Object: e.Key, Expected: fmt.Sprintf("%d bytes", e.Size), Found: found, Message: "the object's size differs from the manifest: truncated, extended or replaced"})
	case sum != e.SHA256:
		v.add(Finding{Code: "sha256-mismatch", Object: e.Key, Expected: e.SHA256, Found: sum, Message: "the object's bytes differ from the manifest: corrupted or tampered with"})
	case contentErr != nil:
		// The bytes are the exported ones, so a failure other than
		// corruption is about the keys (wrong, disabled, locked): stop with
		// that error rather than blame every object.
		if isStoreErr(contentErr) || (v.o.Deep && !errors.Is(contentErr, ehrcrypto.ErrCorrupt)) {
			return contentErr
		}
		v.add(Finding{Code: "bad-envelope", Object: e.Key, Message: contentErr.Error()})
	default:
		v.mu.Lock()
		v.rep.ObjectsVerified++
		v.mu.Unlock()
	}
	if v.o.Progress != nil {
		v.mu.Lock()
		objs, b := v.rep.ObjectsVerified, v.rep.Bytes
		v.mu.Unlock()
		v.o.Progress(objs, b)
	}
	return nil
}

func isStoreErr(err error) bool {
	var se *storage.Error
	return errors.As(err, &se) || errors.Is(err, context.Canceled)
}

// header checks the envelope header without keys: it parses under policy
// and is bound to this export and path.
func (v *verifier) header(e export.ObjectEntry, r io.Reader, want ehrcrypto.Binding) error {
	hdr, err := ehrcrypto.ParseHeader(r)
	if err != nil {
		return err
	}
	if hdr.Binding != want {
		return fmt.Errorf("envelope is bound to %s, expected %s: swapped or copied from another export", hdr.Binding, want)
	}
	return nil
}

// decrypt streams the plaintext, hashing it, counting lines and feeding
// them to the FHIR checker, then compares with the summary.
func (v *verifier) decrypt(e export.ObjectEntry, r io.Reader, want ehrcrypto.Binding) error {
	dr, err := ehrcrypto.NewDecryptReader(r, v.o.Identities, want)
	if err != nil {
		return err
	}
	h := sha256.New()
	var size int64
	var lines int64
	br := bufio.NewReaderSize(io.TeeReader(dr, h), 1<<20)
	fhirData := e.Kind == "data"
	for {
		line, err := br.ReadBytes('\n')
		size += int64(len(line))
		if len(bytes.TrimSpace(line)) > 0 {
			lines++
			if fhirData {
				v.lines <- fhirLine{raw: bytes.TrimRight(line, "\r\n"), pos: fhir.Position{File: e.Key, Line: lines}, bundle: e.Type == "Bundle"}
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	sum := hex.EncodeToString(h.Sum(nil))
	v.mu.Lock()
	v.rep.PlaintextBytes += size
	if e.Kind == "data" && v.rep.Counts != nil {
		v.rep.Counts[e.Type] += lines
	}
	v.mu.Unlock()
	if v.summary == nil {
		return nil
	}
	so, ok := v.summary[e.Path]
	if !ok {
		if e.Kind != "summary" {
			v.add(Finding{Code: "not-in-summary", Object: e.Key, Message: "the encrypted summary has no entry for this object"})
		}
		return nil
	}
	if so.PlaintextSHA256 != sum || so.PlaintextSize != size {
		v.add(Finding{Code: "plaintext-mismatch", Object: e.Key, Expected: fmt.Sprintf("%d bytes, sha256 %s", so.PlaintextSize, so.PlaintextSHA256),
			Found: fmt.Sprintf("%d bytes, sha256 %s", size, sum), Message: "the decrypted content differs from what the export recorded"})
	}
	if so.Resources != lines {
		v.add(Finding{Code: "count-mismatch", Object: e.Key, Expected: fmt.Sprintf("%d resources", so.Resources), Found: fmt.Sprintf("%d lines", lines), Message: "the number of resources differs from the summary"})
	}
	return nil
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

type fhirResult struct {
	samples map[string][]Finding
	stats   fhir.Stats
}

// samplesPerCode bounds how many findings of one kind are listed.
const samplesPerCode = 20

// checkFHIR validates every resource line and resolves references across
// the whole export, keeping a few sample findings per code.
func (v *verifier) checkFHIR(lines <-chan fhirLine) fhirResult {
	res := fhirResult{samples: map[string][]Finding{}}
	report := func(f fhir.Finding) {
		c := string(f.Code)
		if f.Severity >= fhir.Warning && len(res.samples[c]) < samplesPerCode {
			res.samples[c] = append(res.samples[c], Finding{Code: "fhir-" + c, Object: f.Pos.File, Message: f.String()})
		}
	}
	// An item the checker refuses is a finding of its own, listed up to
	// samplesPerCode and then counted, so that a target full of damaged
	// lines cannot make the report as large as the export.
	errorsUnlisted := 0
	failed := func(pos fhir.Position, err error) {
		if len(res.samples["error"]) < samplesPerCode {
			res.samples["error"] = append(res.samples["error"], Finding{Code: "fhir-error", Object: pos.File, Message: err.Error()})
			return
		}
		errorsUnlisted++
	}
	ck := fhir.NewChecker(fhir.CheckerOptions{Policy: fhir.PolicySkip, Report: report})
	defer ck.Close() // its spilled index, when verification stops early
	for l := range lines {
		// Bundles kept whole are checked entry by entry, exactly as the
		// export did, so that the counts compare like with like.
		it := &fhir.Item{Kind: fhir.KindResource, Pos: l.pos, Raw: l.raw}
		if l.bundle {
			b, err := fhir.NewBundleBytes(l.raw, l.pos, nil)
			if err != nil {
				failed(l.pos, err)
				continue
			}
			it = &fhir.Item{Kind: fhir.KindBundle, Pos: b.Pos, Bundle: b}
		}
		if _, err := ck.Item(it); err != nil {
			failed(l.pos, err)
		}
	}
	if errorsUnlisted > 0 {
		res.samples["error"] = append(res.samples["error"], Finding{Code: "fhir-error",
			Message: fmt.Sprintf("%d more resources or Bundles failed the FHIR check (only the first %d are listed)", errorsUnlisted, samplesPerCode)})
	}
	// Unresolved references come back from Finish as a FindingsError; they
	// were also reported and counted, which is what is compared.
	_ = ck.Finish()
	res.stats = ck.Stats()
	return res
}

// fhirFindings compares the FHIR findings at the target with those the
// export recorded in its summary. Findings the source data already had (an
// example referring to resources outside it) are facts about the source,
// noted, not problems; any excess means content changed or was lost.
func (v *verifier) fhirFindings(res fhirResult) {
	codes := map[string]bool{}
	for c := range res.stats.Findings {
		codes[string(c)] = true
	}
	for c := range res.samples {
		codes[c] = true
	}
	for _, c := range slices.Sorted(maps.Keys(codes)) {
		got := res.stats.Findings[fhir.Code(c)]
		want, recorded := v.exportFindings[c]
		switch {
		case c == "error":
			for _, f := range res.samples[c] {
				v.add(f)
			}
		case recorded && got <= want:
			if got > 0 {
				v.rep.FHIRNotes = append(v.rep.FHIRNotes, fmt.Sprintf("%d %s, as recorded at export (%d): a property of the source data", got, c, want))
			}
		case v.exportFindings == nil:
			// No summary to compare with: report what was seen.
			fallthrough
		default:
			for _, f := range res.samples[c] {
				v.add(f)
			}
			v.add(Finding{Code: "fhir-" + c, Expected: fmt.Sprintf("%d (recorded at export)", want), Found: fmt.Sprint(got),
				Message: "more FHIR findings of this kind than the export recorded: content changed or was lost"})
		}
	}
}

func (v *verifier) compareCounts() {
	if v.summary == nil {
		return
	}
	want := map[string]int64{}
	for _, so := range v.summary {
		if so.Kind == "data" {
			want[so.Type] += so.Resources
		}
	}
	for _, t := range slices.Sorted(mapKeys(want, v.rep.Counts)) {
		if want[t] != v.rep.Counts[t] {
			v.add(Finding{Code: "type-count-mismatch", Object: t, Expected: fmt.Sprint(want[t]), Found: fmt.Sprint(v.rep.Counts[t]), Message: "resources of this type differ from the summary"})
		}
	}
}

func mapKeys(ms ...map[string]int64) func(func(string) bool) {
	return func(yield func(string) bool) {
		seen := map[string]bool{}
		for _, m := range ms {
			for k := range m {
				if !seen[k] {
					seen[k] = true
					if !yield(k) {
						return
					}
				}
			}
		}
	}
}
