// Package migrate copies an export from one store to another without ever
// decrypting it, and proves every object arrived: the plan is the source's
// manifest, every object is checked against it while it streams (by a
// target that verifies checksums, or by ehrport's own hash) and proven at
// the target (by that server's verification, or by reading it back), and
// the manifest is written at the target last, only once every object it
// lists is there. Rerunning the same migration skips what is already proven
// and finishes the rest; nothing at the target is ever deleted.
package migrate

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ehrport/ehrport/cmd/internal/export"
	"github.com/ehrport/ehrport/storage"
)

// ErrIncompleteSource means the source holds no complete export.
var ErrIncompleteSource = errors.New("the source holds no complete export")

// DefaultConcurrency is how many objects a migration copies at once. On
// small objects each copy is a GET and a PUT that wait on the servers more
// than they work: 16 was 7-9% faster than 8 for the same CPU on the 2-core
// test bed (docs/copy.md), and a WAN between clouds needs more in flight,
// not fewer. Each small copy in flight holds at most one 256 KiB buffer.
const DefaultConcurrency = 16

// Options configure a migration.
type Options struct {
	From, To storage.Store
	// Concurrency is how many objects are copied at once (default
	// DefaultConcurrency).
	Concurrency int
	// Parallel is how many ranges of one large object are read at once
	// (default 1: one streamed GET, no range buffers), PartSize their size
	// (default storage.DefaultPartSize).
	Parallel int
	PartSize int64
	// LargeInFlight is how many objects larger than PartSize are copied at
	// once (default 2), on workers of their own beside the Concurrency ones
	// for small objects. A large copy buffers Parallel ranges when Parallel
	// > 1, and above SinglePutMax the target's parts as well (about
	// (Parallel+5) × PartSize in all), so this bounds memory whatever the
	// object sizes.
	LargeInFlight int
	// SinglePutMax: objects up to this size are sent to the target in one
	// request (see storage.CopyOptions.SinglePutMax; 0 means its default,
	// negative means parts above the target's part size).
	SinglePutMax int64
	// BandwidthLimit caps the bytes per second read from the source (and
	// for read-back proofs); 0 means no cap.
	BandwidthLimit int64
	// Shard and Shards split the objects deterministically (by a hash of
	// the key) so that Shards machines can run one migration together:
	// Shard is 0-based. Shards 0 or 1 means all objects.
	Shard, Shards int
	// DryRun plans and reports without writing anything.
	DryRun bool
	// Retry overrides the retry policy for unavailable stores.
	Retry storage.RetryPolicy
	Log   *slog.Logger
	// Progress, if set, is called after each object.
	Progress func(Progress)
}

// Progress is the running count.
type Progress struct {
	Objects, Total int
	Bytes          int64
}

// Object is what happened to one object.
type Object struct {
	Key      string        `json:"key"`
	Size     int64         `json:"size"`
	Proof    string        `json:"proof,omitempty"`
	Retries  int           `json:"retries,omitempty"`
	Duration time.Duration `json:"duration_ns,omitempty"`
	Error    string        `json:"error,omitempty"`
}

// Report is what a migration did.
type Report struct {
	From     string `json:"from"`
	To       string `json:"to"`
	ExportID string `json:"export_id"`
	Shard    string `json:"shard,omitempty"`
	DryRun   bool   `json:"dry_run"`
	// TargetVerifiesChecksums decides how copies are proven.
	TargetVerifiesChecksums bool `json:"target_verifies_checksums"`

	Planned         int      `json:"planned"`
	Copied          []Object `json:"copied"`
	Skipped         []Object `json:"skipped"`
	Failed          []Object `json:"failed"`
	MissingAtSource []Object `json:"missing_at_source"`
	ExtraAtTarget   []Object `json:"extra_at_target"`
	// ManifestWritten: the target now holds the complete export. When
	// false, ManifestNote says why (failures, or other shards not done).
	ManifestWritten bool   `json:"manifest_written"`
	ManifestNote    string `json:"manifest_note,omitempty"`

	BytesCopied  int64         `json:"bytes_copied"`
	BytesSkipped int64         `json:"bytes_skipped"`
	Duration     time.Duration `json:"duration_ns"`
	Started      time.Time     `json:"started"`
	// mu guards the report while workers file outcomes.
	mu sync.Mutex
	// unavailable: a failure was the store's, not the data's (exit 4).
	unavailable error
	// sourceBad and targetBad count integrity failures by where they were
	// found: source bytes that differ from the manifest, or a target that
	// did not keep what it was sent.
	sourceBad, targetBad int
}

// Complete reports whether the target holds the whole export now.
func (r *Report) Complete() bool {
	return r.ManifestWritten && len(r.Failed) == 0 && len(r.MissingAtSource) == 0
}

// Unavailable returns the first failure that was the stores' fault (a store
// down after every retry), or nil.
func (r *Report) Unavailable() error { return r.unavailable }

type item struct {
	key    string
	size   int64
	sha256 []byte
	// atTarget: the target's listing has an object of this size under the
	// key, so Copy checks whether it is already proven. Without it the
	// object is copied with no request to look first.
	atTarget bool
}

// InShard reports whether key belongs to shard i of n.
func InShard(key string, i, n int) bool {
	if n <= 1 {
		return true
	}
	h := fnv.New64a()
	io.WriteString(h, key)
	return int(h.Sum64()%uint64(n)) == i
}

// Run migrates the export.
func Run(ctx context.Context, o Options) (*Report, error) {
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.Parallel <= 0 {
		o.Parallel = 1
	}
	if o.PartSize <= 0 {
		o.PartSize = storage.DefaultPartSize
	}
	if o.LargeInFlight <= 0 {
		o.LargeInFlight = 2
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Shards > 1 && (o.Shard < 0 || o.Shard >= o.Shards) {
		return nil, fmt.Errorf("shard %d is not in 0..%d", o.Shard, o.Shards-1)
	}
	rep := &Report{From: o.From.Location(), To: o.To.Location(), DryRun: o.DryRun, Started: time.Now().UTC(),
		Copied: []Object{}, Skipped: []Object{}, Failed: []Object{}, MissingAtSource: []Object{}, ExtraAtTarget: []Object{}}
	if o.Shards > 1 {
		rep.Shard = fmt.Sprintf("%d/%d", o.Shard, o.Shards)
	}
	defer func() { rep.Duration = time.Since(rep.Started) }()

	// The plan: the source's manifest, read with its exact bytes.
	if _, err := o.From.Stat(ctx, export.ManifestKey); err != nil {
		if errors.Is(err, storage.ErrNotExist) && !errors.Is(err, storage.ErrNoBucket) {
			return nil, fmt.Errorf("%w: %s has no %s (an export that did not finish, or not an export)", ErrIncompleteSource, o.From.Location(), export.ManifestKey)
		}
		return nil, err
	}
	// A reset while reading the plan is retried like any copy's.
	var m *export.Manifest
	var mb []byte
	_, err := o.Retry.Do(ctx, func(int) error {
		var rerr error
		m, mb, rerr = export.ReadManifest(ctx, o.From)
		return rerr
	})
	if err != nil {
		return nil, err
	}
	ext := m.Extension.Ehrport
	rep.ExportID = ext.ExportID
	var plan []item
	for _, e := range ext.Objects {
		sum, err := hex.DecodeString(e.SHA256)
		if err != nil || len(sum) != sha256.Size {
			return nil, fmt.Errorf("%w: manifest lists %s with a malformed sha256 %q", ErrIncompleteSource, e.Key, e.SHA256)
		}
		if InShard(e.Key, o.Shard, o.Shards) {
			plan = append(plan, item{key: e.Key, size: e.Size, sha256: sum})
		}
	}
	// Biggest first within each queue (large and small objects have their
	// own workers): the longest copies start earliest.
	slices.SortStableFunc(plan, func(a, b item) int { return cmp.Compare(b.size, a.size) })
	rep.Planned = len(plan)
	// Every key the export has: its index in this run's plan, or -1 (the
	// manifest files, other shards' objects).
	listed := make(map[string]int, len(ext.Objects)+2)
	listed[export.ManifestKey], listed[export.SignatureKey] = -1, -1
	for _, e := range ext.Objects {
		listed[e.Key] = -1
	}
	for i, it := range plan {
		listed[it.key] = i
	}

	if !o.DryRun {
		if rep.TargetVerifiesChecksums, err = storage.VerifiesChecksums(ctx, o.To); err != nil {
			return nil, err
		}
		o.Log.Info("target checksum verification probed", "target", o.To.Location(), "verifies", rep.TargetVerifiesChecksums)
	}
	var limiter *storage.RateLimiter
	if o.BandwidthLimit > 0 {
		limiter = storage.NewRateLimiter(o.BandwidthLimit)
	}

	if err := surveyTarget(ctx, o, rep, plan, listed); err != nil {
		return nil, err
	}
	if err := runPlan(ctx, o, rep, plan, limiter); err != nil {
		return nil, err
	}
	if err := finish(ctx, o, rep, ext, mb, limiter); err != nil {
		return nil, err
	}
	for _, l := range [][]Object{rep.Copied, rep.Skipped, rep.Failed, rep.MissingAtSource} {
		slices.SortFunc(l, func(a, b Object) int { return cmp.Compare(a.Key, b.Key) })
	}
	return rep, nil
}

func runPlan(ctx context.Context, o Options, rep *Report, plan []item, limiter *storage.RateLimiter) error {
	var mu sync.Mutex
	done := 0
	var bytesDone int64
	// A store that stays unavailable after the retry policy is not tried
	// again for every remaining object: scheduling stops, and what was not
	// attempted is reported as still missing.
	feedCtx, stopFeeding := context.WithCancel(ctx)
	defer stopFeeding()
	var wg sync.WaitGroup
	worker := func(work <-chan item) {
		defer wg.Done()
		for it := range work {
			obj := copyOne(ctx, o, rep, it, limiter)
			rep.mu.Lock()
			if rep.unavailable != nil {
				stopFeeding()
			}
			rep.mu.Unlock()
			mu.Lock()
			done++
			bytesDone += obj.Size
			if o.Progress != nil {
				o.Progress(Progress{Objects: done, Total: len(plan), Bytes: bytesDone})
			}
			mu.Unlock()
		}
	}
	// Large and small objects have queues and workers of their own, so
	// memory is bounded by LargeInFlight large copies while small objects
	// keep flowing beside them.
	var large, small []item
	for _, it := range plan {
		if it.size > o.PartSize {
			large = append(large, it)
		} else {
			small = append(small, it)
		}
	}
	var notSent []item
	var nsMu sync.Mutex
	feed := func(items []item, workers int) {
		work := make(chan item)
		for range workers {
			wg.Add(1)
			go worker(work)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(work)
			for i, it := range items {
				select {
				case work <- it:
				case <-feedCtx.Done():
					nsMu.Lock()
					notSent = append(notSent, items[i:]...)
					nsMu.Unlock()
					return
				}
			}
		}()
	}
	feed(large, o.LargeInFlight)
	feed(small, o.Concurrency)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	for _, it := range notSent {
		rep.Failed = append(rep.Failed, Object{Key: it.key, Size: it.size, Error: "not attempted: a store was unavailable"})
	}
	return nil
}

// copyOne copies (or, in a dry run, looks at) one object and files the
// outcome in the report.
func copyOne(ctx context.Context, o Options, rep *Report, it item, limiter *storage.RateLimiter) Object {
	obj := Object{Key: it.key, Size: it.size}
	if o.DryRun {
		rep.mu.Lock()
		defer rep.mu.Unlock()
		if it.atTarget {
			obj.Proof = "present (size only: a dry run reads nothing)"
			rep.Skipped = append(rep.Skipped, obj)
			rep.BytesSkipped += it.size
		} else {
			rep.Copied = append(rep.Copied, obj)
			rep.BytesCopied += it.size
		}
		return obj
	}
	res, err := storage.Copy(ctx, o.From, o.To, it.key, storage.CopyOptions{
		Size: it.size, SHA256: it.sha256, Parallel: o.Parallel, PartSize: o.PartSize, Limiter: limiter,
		TrustServerChecksum: rep.TargetVerifiesChecksums, SkipExisting: it.atTarget, Retry: o.Retry, SinglePutMax: o.SinglePutMax,
	})
	obj.Proof, obj.Retries, obj.Duration = res.Proof, res.Retries, res.Duration
	rep.mu.Lock()
	defer rep.mu.Unlock()
	switch {
	case err == nil && res.Skipped:
		rep.Skipped = append(rep.Skipped, obj)
		rep.BytesSkipped += it.size
	case err == nil:
		rep.Copied = append(rep.Copied, obj)
		rep.BytesCopied += it.size
	case ctx.Err() != nil:
		obj.Error = "interrupted"
		rep.Failed = append(rep.Failed, obj)
	case isSourceMissing(err, o.From):
		obj.Error = err.Error()
		rep.MissingAtSource = append(rep.MissingAtSource, obj)
	default:
		obj.Error = err.Error()
		rep.Failed = append(rep.Failed, obj)
		switch {
		case errors.Is(err, storage.ErrUnavailable):
			if rep.unavailable == nil {
				rep.unavailable = err
			}
		case errorAt(err, o.From.Location()):
			rep.sourceBad++
		default:
			rep.targetBad++
		}
		o.Log.Warn("object not migrated", "key", it.key, "error", err)
	}
	return obj
}

// errorAt reports whether any *storage.Error in err's tree names location:
// a source's error may travel inside the target's Put error.
func errorAt(err error, location string) bool {
	if se, ok := err.(*storage.Error); ok && se.Location == location {
		return true
	}
	switch u := err.(type) {
	case interface{ Unwrap() error }:
		return u.Unwrap() != nil && errorAt(u.Unwrap(), location)
	case interface{ Unwrap() []error }:
		for _, e := range u.Unwrap() {
			if errorAt(e, location) {
				return true
			}
		}
	}
	return false
}

func isSourceMissing(err error, src storage.Store) bool {
	var se *storage.Error
	return errors.Is(err, storage.ErrNotExist) && errors.As(err, &se) && se.Location == src.Location()
}

// surveyTarget lists the target once, before anything is copied: objects
// of the plan found there with the manifest's size are checked for a proof
// before being copied (a rerun skips them), the others are copied without a
// request to look first; and what the manifest does not list is reported as
// extra, never deleted. One LIST replaces a HEAD per object.
func surveyTarget(ctx context.Context, o Options, rep *Report, plan []item, listed map[string]int) error {
	extras := o.Shards <= 1 || o.Shard == 0 // one shard reports them, so the reports add up
	for oi, err := range o.To.List(ctx, "") {
		if errors.Is(err, storage.ErrNotExist) {
			return nil // a bucket that is not there yet
		}
		if err != nil {
			return err
		}
		i, ok := listed[oi.Key]
		switch {
		case !ok && extras:
			rep.ExtraAtTarget = append(rep.ExtraAtTarget, Object{Key: oi.Key, Size: oi.Size})
		case ok && i >= 0:
			plan[i].atTarget = oi.Size == plan[i].size
		}
	}
	return nil
}

// finish writes the signature and then the manifest at the target, once
// every object the manifest lists is there: this run's own objects were
// proven by Copy; other shards' are checked for presence and size (their
// own runs proved them). Otherwise the target stays visibly incomplete.
func finish(ctx context.Context, o Options, rep *Report, ext export.ManifestExt, mb []byte, limiter *storage.RateLimiter) error {
	switch {
	case o.DryRun:
		rep.ManifestNote = "dry run: nothing written"
		return nil
	case len(rep.Failed) > 0 || len(rep.MissingAtSource) > 0:
		var what []string
		if rep.unavailable != nil {
			what = append(what, "rerun the same command once the store is back: it copies only what is missing")
		}
		if rep.sourceBad > 0 {
			what = append(what, "restore the objects that differ from the signed manifest at the source from a good copy (a rerun alone cannot repair them)")
		}
		if rep.targetBad > 0 {
			what = append(what, "the target did not keep the bytes it was sent (its bad copies were deleted): do not trust that store until this is explained")
		}
		if len(what) == 0 {
			what = append(what, "see the errors above, then rerun")
		}
		rep.ManifestNote = fmt.Sprintf("not written: %d object(s) failed and %d are missing at the source; %s", len(rep.Failed), len(rep.MissingAtSource), strings.Join(what, "; "))
		return nil
	}
	if o.Shards > 1 {
		for _, e := range ext.Objects {
			if InShard(e.Key, o.Shard, o.Shards) {
				continue
			}
			oi, err := o.To.Stat(ctx, e.Key)
			if errors.Is(err, storage.ErrNotExist) || (err == nil && oi.Size != e.Size) {
				rep.ManifestNote = "not written yet: objects of other shards are not all at the target; the last shard to finish writes it"
				return nil
			}
			if err != nil {
				return err
			}
		}
	}
	// failed files a last step that did not succeed: the run still ends
	// with a whole report, and a rerun finishes it.
	failed := func(obj Object, err error) error {
		obj.Error = err.Error()
		rep.Failed = append(rep.Failed, obj)
		if errors.Is(err, storage.ErrUnavailable) && rep.unavailable == nil {
			rep.unavailable = err
		}
		rep.ManifestNote = "not written: " + err.Error()
		return nil
	}
	// The signature, then the manifest: a manifest never stands at the
	// target without everything it lists.
	for _, key := range []string{export.SignatureKey, export.ManifestKey} {
		var body []byte
		if key == export.ManifestKey {
			body = mb
		} else {
			// Read like any object: a source that blinks is retried.
			_, err := o.Retry.Do(ctx, func(int) error {
				rc, err := o.From.Get(ctx, key)
				if err != nil {
					return err
				}
				defer rc.Close()
				body, err = io.ReadAll(io.LimitReader(rc, 1<<20))
				return err
			})
			if errors.Is(err, storage.ErrNotExist) && !ext.Signed {
				continue
			}
			if err != nil {
				return failed(Object{Key: key}, err)
			}
		}
		sum := sha256.Sum256(body)
		res, err := storage.Copy(ctx, &bytesStore{key: key, body: body, loc: o.From.Location()}, o.To, key, storage.CopyOptions{
			Size: int64(len(body)), SHA256: sum[:], Limiter: limiter, TrustServerChecksum: rep.TargetVerifiesChecksums, SkipExisting: true, Retry: o.Retry,
		})
		obj := Object{Key: key, Size: int64(len(body)), Proof: res.Proof, Retries: res.Retries, Duration: res.Duration}
		if err != nil {
			return failed(obj, err)
		}
		if res.Skipped {
			rep.Skipped = append(rep.Skipped, obj)
		} else {
			rep.Copied = append(rep.Copied, obj)
			rep.BytesCopied += obj.Size
		}
	}
	rep.ManifestWritten = true
	return nil
}

// bytesStore serves one object held in memory (the manifest bytes already
// read, so the copy carries exactly the bytes the plan was made from).
type bytesStore struct {
	storage.Store
	key  string
	body []byte
	loc  string
}

func (b *bytesStore) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	if key != b.key {
		return nil, &storage.Error{Op: "get", Location: b.loc, Key: key, Err: storage.ErrNotExist}
	}
	return io.NopCloser(bytes.NewReader(b.body)), nil
}

func (b *bytesStore) Location() string { return b.loc }

func (b *bytesStore) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	if key != b.key {
		return storage.ObjectInfo{}, &storage.Error{Op: "stat", Location: b.loc, Key: key, Err: storage.ErrNotExist}
	}
	return storage.ObjectInfo{Key: key, Size: int64(len(b.body))}, nil
}
