package export

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	ehrcrypto "github.com/ehrport/ehrport/crypto"
	"github.com/ehrport/ehrport/storage"
)

// RestoreOptions configure a restore: a signed export in Store decrypted
// into the folder To, or streamed to Sink.
type RestoreOptions struct {
	Store storage.Store
	To    string
	// Sink, instead of To, receives each data object's plaintext
	// (RestoreSink): no plaintext is written to disk; the ciphertext waits
	// in an unlinked 0600 file in SpoolDir (os.TempDir() when empty) until
	// it matched the manifest.
	Sink       RestoreSink
	SpoolDir   string
	Identities []ehrcrypto.Identity
	// Verifier checks manifest.json.sig. Nil requires AllowUnsigned, which
	// also accepts a manifest that says it is unsigned.
	Verifier      *ehrcrypto.Verifier
	AllowUnsigned bool
	Concurrency   int
	Log           *slog.Logger
	Progress      func(Progress)
	ProgressEvery time.Duration
}

// RestoreSummary is what a restore reports.
type RestoreSummary struct {
	ExportID       string           `json:"export_id"`
	Location       string           `json:"location"`
	To             string           `json:"to"`
	Counts         map[string]int64 `json:"counts"`
	Resources      int64            `json:"resources"`
	PlaintextBytes int64            `json:"plaintext_bytes"`
	Objects        int              `json:"objects"`
	Signed         bool             `json:"signed"`
	Files          []string         `json:"files"`
	Timings        Timings          `json:"timings"`
}

// ReadManifest fetches and parses manifest.json, returning its exact bytes
// too (the signature covers them).
func ReadManifest(ctx context.Context, st storage.Store) (*Manifest, []byte, error) {
	mb, err := getAll(ctx, st, ManifestKey, maxManifestBytes)
	if err != nil {
		if errors.Is(err, storage.ErrNotExist) {
			return nil, nil, fmt.Errorf("%w: %s has no %s: not an export, or an export that did not finish (%v)", ErrIncomplete, st.Location(), ManifestKey, err)
		}
		return nil, nil, err
	}
	m, err := ParseManifest(mb)
	if err != nil {
		return nil, nil, err
	}
	return m, mb, nil
}

// ParseManifest parses and checks the bytes of a manifest.json: format
// version, export id, and every object entry (clean relative paths of the
// layout, no duplicates), so that no manifest can make restore write
// outside its folder. Errors wrap crypto.ErrCorrupt, crypto.ErrPolicy or
// ErrIncomplete and name manifest.json.
func ParseManifest(mb []byte) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(mb, &m); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ehrcrypto.ErrCorrupt, ManifestKey, err)
	}
	x := &m.Extension.Ehrport
	if x.FormatVersion != FormatVersion {
		return nil, fmt.Errorf("%w: %s has export format version %d; this ehrport reads version %d", ehrcrypto.ErrPolicy, ManifestKey, x.FormatVersion, FormatVersion)
	}
	if !exportIDRE().MatchString(x.ExportID) {
		return nil, fmt.Errorf("%w: %s: bad export id", ehrcrypto.ErrCorrupt, ManifestKey)
	}
	seen := map[string]bool{}
	for _, ob := range x.Objects {
		if err := checkEntry(ob); err != nil {
			return nil, fmt.Errorf("%s: %w", ManifestKey, err)
		}
		if seen[ob.Key] {
			return nil, fmt.Errorf("%w: %s lists %q twice", ErrIncomplete, ManifestKey, ob.Key)
		}
		seen[ob.Key] = true
	}
	return &m, nil
}

// VerifySignature checks manifest.json.sig over mb. Errors name the
// signature file with its location. A missing signature beside a manifest
// is tampering (ErrCorrupt), not a storage failure: someone removed it.
func VerifySignature(ctx context.Context, st storage.Store, v *ehrcrypto.Verifier, mb []byte) error {
	where := st.Location() + "/" + SignatureKey
	sb, err := getAll(ctx, st, SignatureKey, 1<<20)
	if errors.Is(err, storage.ErrNotExist) {
		return fmt.Errorf("%w: %s is missing, so nothing proves who wrote the manifest", ehrcrypto.ErrCorrupt, where)
	}
	if err != nil {
		return err
	}
	var sig Signature
	if err := json.Unmarshal(sb, &sig); err != nil || sig.Purpose != SignaturePurpose {
		return fmt.Errorf("%w: %s is not an ehrport manifest signature", ehrcrypto.ErrCorrupt, where)
	}
	if err := v.Verify(SignaturePurpose, mb, sig.Signature); err != nil {
		return fmt.Errorf("%s: the manifest signature does not verify: %w", where, err)
	}
	return nil
}

// Run restores. Every file appears under To only after it authenticated and
// matched the manifest and the summary.
func (o *RestoreOptions) Run(ctx context.Context) (*RestoreSummary, error) {
	start := time.Now()
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if (o.To == "") == (o.Sink == nil) {
		return nil, errors.New("restore: give a target folder or a sink (one of them)")
	}
	m, mb, err := ReadManifest(ctx, o.Store)
	if err != nil {
		return nil, err
	}
	x := &m.Extension.Ehrport
	switch {
	case x.Signed && o.Verifier != nil:
		if err := VerifySignature(ctx, o.Store, o.Verifier, mb); err != nil {
			return nil, err
		}
	case !o.AllowUnsigned:
		if !x.Signed {
			return nil, fmt.Errorf("%w: the manifest is unsigned; restore it only if you trust its origin (--allow-unsigned)", ehrcrypto.ErrPolicy)
		}
		return nil, fmt.Errorf("%w: no verification key for the manifest signature", ehrcrypto.ErrPolicy)
	default:
		o.Log.Warn("manifest signature NOT checked (--allow-unsigned)")
	}

	// The summary first: it holds the plaintext hashes.
	var sumEntry *ObjectEntry
	for i := range x.Objects {
		if x.Objects[i].Kind == KindSummary {
			sumEntry = &x.Objects[i]
		}
	}
	if sumEntry == nil {
		return nil, fmt.Errorf("%w: the manifest lists no %s", ErrIncomplete, SummaryKey)
	}
	doc, err := o.readSummary(ctx, x.ExportID, *sumEntry)
	if err != nil {
		return nil, err
	}
	if doc.ExportID != x.ExportID {
		return nil, fmt.Errorf("%w: summary belongs to export %q, manifest to %q", ehrcrypto.ErrCorrupt, doc.ExportID, x.ExportID)
	}
	want := map[string]SummaryObject{}
	for _, so := range doc.Objects {
		want[so.Path] = so
	}
	var jobs []ObjectEntry
	for _, ob := range x.Objects {
		if ob.Kind == KindSummary {
			continue
		}
		if _, ok := want[ob.Path]; !ok {
			return nil, fmt.Errorf("%w: %s is in the manifest but not in the summary", ErrIncomplete, ob.Key)
		}
		jobs = append(jobs, ob)
	}
	if len(jobs) != len(doc.Objects) {
		return nil, fmt.Errorf("%w: the summary lists %d objects, the manifest %d", ErrIncomplete, len(doc.Objects), len(jobs))
	}
	restoreOne := o.restoreObject
	if o.Sink != nil {
		restoreOne = o.streamObject
	} else if err := checkTarget(o.To, jobs); err != nil {
		return nil, err
	} else if err := os.MkdirAll(o.To, 0o700); err != nil {
		return nil, err
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	results := make(map[string]*lineResult, len(jobs))
	var mu sync.Mutex
	var done, doneBytes, doneLines atomic.Int64
	stopProg := restoreProgress(o, start, int64(len(jobs)), &done, &doneBytes, &doneLines)
	ch := make(chan ObjectEntry)
	var wg sync.WaitGroup
	for i := 0; i < o.Concurrency; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ob := range ch {
				if ctx.Err() != nil {
					continue
				}
				r, err := restoreOne(ctx, x.ExportID, ob, want[ob.Path])
				if err != nil {
					cancel(err)
					continue
				}
				mu.Lock()
				results[ob.Path] = r
				mu.Unlock()
				done.Add(1)
				doneBytes.Add(r.size)
				doneLines.Add(r.lines)
			}
		}()
	}
feed:
	for _, ob := range jobs {
		select {
		case ch <- ob:
		case <-ctx.Done():
			break feed
		}
	}
	close(ch)
	wg.Wait()
	stopProg()
	if err := context.Cause(ctx); err != nil {
		return nil, err
	}

	sum := &RestoreSummary{ExportID: x.ExportID, Location: o.Store.Location(), To: o.To, Counts: map[string]int64{},
		Objects: len(jobs), Signed: x.Signed && o.Verifier != nil}
	idl := sha256.New()
	for _, so := range doc.Objects { // summary order, as the exporter hashed
		r := results[so.Path]
		if o.To != "" {
			sum.Files = append(sum.Files, filepath.Join(o.To, filepath.FromSlash(so.Path)))
		}
		if so.Kind != KindData {
			continue
		}
		sum.Counts[so.Type] += r.lines
		sum.Resources += r.lines
		sum.PlaintextBytes += r.size
		idl.Write(r.ids)
	}
	sort.Strings(sum.Files)
	for t, n := range doc.Counts {
		if sum.Counts[t] != n {
			return nil, fmt.Errorf("%w: %d %s resources restored, the summary says %d", ErrIncomplete, sum.Counts[t], t, n)
		}
	}
	if len(sum.Counts) != len(doc.Counts) {
		return nil, fmt.Errorf("%w: restored resource types differ from the summary", ErrIncomplete)
	}
	if hex.EncodeToString(idl.Sum(nil)) != doc.IDListSHA256 {
		return nil, fmt.Errorf("%w: the list of restored resource ids differs from the summary's digest", ErrIncomplete)
	}
	total := time.Since(start).Seconds()
	sum.Timings = Timings{Total: total}
	if total > 0 {
		sum.Timings.ResourcesPerSec = float64(sum.Resources) / total
		sum.Timings.PlaintextMBPerSec = float64(sum.PlaintextBytes) / 1e6 / total
	}
	return sum, nil
}

func (o *RestoreOptions) readSummary(ctx context.Context, exportID string, ob ObjectEntry) (*SummaryDoc, error) {
	ct, err := getAll(ctx, o.Store, ob.Key, maxManifestBytes)
	if errors.Is(err, storage.ErrNotExist) {
		return nil, missingListed(o.Store, ob.Key)
	}
	if err != nil {
		return nil, err
	}
	if err := checkCiphertext(ob, int64(len(ct)), sha256Sum(ct)); err != nil {
		return nil, err
	}
	r, err := ehrcrypto.NewDecryptReader(bytes.NewReader(ct), o.Identities, ehrcrypto.Binding{ExportID: exportID, Path: ob.Path})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ob.Key, err)
	}
	pt, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ob.Key, err)
	}
	var doc SummaryDoc
	if err := json.Unmarshal(pt, &doc); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrIncomplete, SummaryPath, err)
	}
	if doc.FormatVersion != FormatVersion {
		return nil, fmt.Errorf("%w: %s has version %d", ehrcrypto.ErrPolicy, SummaryPath, doc.FormatVersion)
	}
	return &doc, nil
}

type lineResult struct {
	lines int64
	size  int64
	ids   []byte
}

// restoreObject streams one object: ciphertext hashed and counted, decrypted,
// plaintext hashed, counted and scanned into a temporary file that is renamed
// into place only when everything matched.
func (o *RestoreOptions) restoreObject(ctx context.Context, exportID string, ob ObjectEntry, so SummaryObject) (*lineResult, error) {
	rc, err := getListed(ctx, o.Store, ob.Key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	ct := &hashCounter{h: sha256.New(), r: rc}
	dest := filepath.Join(o.To, filepath.FromSlash(ob.Path))
	if err := os.MkdirAll(filepath.Dir(dest), 0o700); err != nil {
		return nil, err
	}
	res := &lineResult{}
	err = ehrcrypto.WriteFileAtomic(dest, func(w io.Writer) error {
		r, err := ehrcrypto.NewDecryptReader(ct, o.Identities, ehrcrypto.Binding{ExportID: exportID, Path: ob.Path})
		if err != nil {
			return err
		}
		scan := newLineScanner()
		pt := &hashCounter{h: sha256.New(), w: io.MultiWriter(w, scan)}
		buf := make([]byte, 1<<20)
		if _, err := io.CopyBuffer(pt, r, buf); err != nil {
			return err
		}
		// Anything after the last segment is tampering; the crypto layer
		// should have said so, but the size check below is ours.
		if _, err := io.CopyBuffer(io.Discard, ct, buf); err != nil {
			return err
		}
		if err := checkCiphertext(ob, ct.n, ct.h.Sum(nil)); err != nil {
			return err
		}
		lr, err := checkPlaintext(ob, so, pt, scan)
		if err == nil {
			*res = *lr
		}
		return err
	})
	if err != nil {
		if errors.Is(err, ehrcrypto.ErrCorrupt) || errors.Is(err, ehrcrypto.ErrNoMatchingKey) || errors.Is(err, ehrcrypto.ErrPolicy) || errors.Is(err, ErrIncomplete) {
			return nil, fmt.Errorf("%s: %w", ob.Key, err)
		}
		return nil, err
	}
	return res, nil
}

// checkPlaintext compares the decrypted plaintext (hashed and counted by pt,
// scanned by scan) with the object's entry in the signed summary.
func checkPlaintext(ob ObjectEntry, so SummaryObject, pt *hashCounter, scan *lineScanner) (*lineResult, error) {
	if got := hex.EncodeToString(pt.h.Sum(nil)); got != so.PlaintextSHA256 || pt.n != so.PlaintextSize {
		return nil, fmt.Errorf("%w: %s decrypted to plaintext whose SHA-256 or size differs from the summary", ehrcrypto.ErrCorrupt, ob.Key)
	}
	if scan.lines != so.Resources {
		return nil, fmt.Errorf("%w: %s holds %d lines, the summary says %d", ErrIncomplete, ob.Key, scan.lines, so.Resources)
	}
	ids := scan.ids.Sum(nil)
	if hex.EncodeToString(ids) != so.IDsSHA256 {
		return nil, fmt.Errorf("%w: %s: resource ids differ from the summary", ErrIncomplete, ob.Key)
	}
	return &lineResult{lines: scan.lines, size: pt.n, ids: ids}, nil
}

func checkCiphertext(ob ObjectEntry, n int64, sum []byte) error {
	if n != ob.Size {
		return fmt.Errorf("%w: %s has %d bytes, the manifest says %d", ehrcrypto.ErrCorrupt, ob.Key, n, ob.Size)
	}
	if hex.EncodeToString(sum) != ob.SHA256 {
		return fmt.Errorf("%w: %s: ciphertext SHA-256 differs from the manifest", ehrcrypto.ErrCorrupt, ob.Key)
	}
	return nil
}

func sha256Sum(b []byte) []byte { h := sha256.Sum256(b); return h[:] }

// getListed opens an object the manifest lists. Its absence means the export
// is incomplete (ErrIncomplete, exit 1), not that the store failed.
func getListed(ctx context.Context, st storage.Store, key string) (io.ReadCloser, error) {
	rc, err := st.Get(ctx, key)
	if errors.Is(err, storage.ErrNotExist) {
		return nil, missingListed(st, key)
	}
	return rc, err
}

func missingListed(st storage.Store, key string) error {
	return fmt.Errorf("%w: %s lists %s but %s has no such object; run ehrport verify --at %s to see everything missing",
		ErrIncomplete, ManifestKey, key, st.Location(), st.Location())
}

func getAll(ctx context.Context, st storage.Store, key string, limit int64) ([]byte, error) {
	rc, err := st.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ehrcrypto.ErrCorrupt, key, limit)
	}
	return b, nil
}

func restoreProgress(o *RestoreOptions, start time.Time, total int64, done, bytes, lines *atomic.Int64) func() {
	if o.Progress == nil {
		return func() {}
	}
	every := o.ProgressEvery
	if every <= 0 {
		every = time.Second
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	snap := func(d bool) Progress {
		n := done.Load()
		return Progress{Files: n, FilesTotal: total, Uploaded: n, Resources: lines.Load(), PlaintextBytes: bytes.Load(), Elapsed: time.Since(start), Done: d}
	}
	go func() {
		defer wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				o.Progress(snap(false))
			case <-stop:
				return
			}
		}
	}()
	return func() { close(stop); wg.Wait(); o.Progress(snap(true)) }
}

// ErrTargetNotEmpty is returned when the restore folder holds files that
// this export would not write: restoring into it would mix two data sets.
var ErrTargetNotEmpty = errors.New("the restore folder holds files that are not part of this export")

// checkTarget allows a missing or empty folder, or one holding only files
// of this export (a rerun after an interrupted restore).
func checkTarget(dir string, jobs []ObjectEntry) error {
	mine := map[string]bool{}
	for _, ob := range jobs {
		// The file and every folder above it (_server/error/...).
		for p := filepath.FromSlash(ob.Path); p != "." && !mine[p]; p = filepath.Dir(p) {
			mine[p] = true
		}
	}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == "." || mine[rel] {
			return nil
		}
		return fmt.Errorf("%w: %s (restore into an empty folder)", ErrTargetNotEmpty, p)
	})
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
