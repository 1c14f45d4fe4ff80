package migrate

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"iter"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ehrport/ehrport/cmd/internal/export"
	"github.com/ehrport/ehrport/storage"
	"github.com/ehrport/ehrport/storage/storetest"
)

func local(t *testing.T, name string) *storage.LocalStore {
	st, err := storage.NewLocalStore(filepath.Join(t.TempDir(), name))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func put(t *testing.T, st storage.Store, key string, b []byte) {
	t.Helper()
	if err := st.Put(context.Background(), key, bytes.NewReader(b), int64(len(b)), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

// fakeExport writes n objects of the given sizes and a manifest listing
// them. Migration never looks inside objects, so random bytes will do.
func fakeExport(t *testing.T, st storage.Store, sizes []int64) *export.Manifest {
	t.Helper()
	var m export.Manifest
	m.Extension.Ehrport.FormatVersion = 1
	m.Extension.Ehrport.ExportID = "e-test"
	r := rand.NewChaCha8([32]byte{7})
	for i, n := range sizes {
		b := make([]byte, n)
		r.Read(b)
		key := fmt.Sprintf("Observation.%03d.ndjson.ehr", i)
		put(t, st, key, b)
		sum := sha256.Sum256(b)
		m.Extension.Ehrport.Objects = append(m.Extension.Ehrport.Objects, export.ObjectEntry{
			Key: key, Path: key[:len(key)-4], Kind: "data", Type: "Observation", Size: n, SHA256: hex.EncodeToString(sum[:])})
	}
	mb, _ := json.MarshalIndent(m, "", "  ")
	put(t, st, export.ManifestKey, mb)
	return &m
}

// snapshot maps every key at st to the SHA-256 of its bytes.
func snapshot(t *testing.T, st storage.Store) map[string]string {
	t.Helper()
	out := map[string]string{}
	for oi, err := range st.List(context.Background(), "") {
		if err != nil {
			t.Fatal(err)
		}
		rc, err := st.Get(context.Background(), oi.Key)
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		io.Copy(h, rc)
		rc.Close()
		out[oi.Key] = hex.EncodeToString(h.Sum(nil))
	}
	return out
}

func sizes(n int, size int64) []int64 {
	s := make([]int64, n)
	for i := range s {
		s[i] = size + int64(i)
	}
	return s
}

func TestMigrateAndRerun(t *testing.T) {
	src, dst := local(t, "a"), local(t, "b")
	fakeExport(t, src, append(sizes(30, 1000), 0, 6<<20))
	rep, err := Run(context.Background(), Options{From: src, To: dst, PartSize: 5 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Complete() || len(rep.Copied) != 33 || len(rep.Skipped) != 0 || !rep.TargetVerifiesChecksums {
		t.Fatalf("first run: complete %v, copied %d, skipped %d", rep.Complete(), len(rep.Copied), len(rep.Skipped))
	}
	if got, want := snapshot(t, dst), snapshot(t, src); !mapsEqual(got, want) {
		t.Fatal("target differs from source")
	}
	// The rerun reads nothing and copies nothing.
	rep, err = Run(context.Background(), Options{From: src, To: dst})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Copied) != 0 || len(rep.Skipped) != 33 || !rep.Complete() {
		t.Fatalf("rerun: copied %d, skipped %d", len(rep.Copied), len(rep.Skipped))
	}
}

// countingStore counts the requests that look at one object (Stat, Get),
// and the listings, and notes which objects were looked at before any Put
// of theirs.
type countingStore struct {
	storage.Store
	mu           sync.Mutex
	looks, lists int
	lookedAt     []string // before their first Put
	put          map[string]bool
}

func (c *countingStore) look(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.looks++
	if !c.put[key] {
		c.lookedAt = append(c.lookedAt, key)
	}
}

func (c *countingStore) Put(ctx context.Context, key string, r io.Reader, size int64, opts storage.PutOptions) error {
	c.mu.Lock()
	if c.put == nil {
		c.put = map[string]bool{}
	}
	c.put[key] = true
	c.mu.Unlock()
	return c.Store.Put(ctx, key, r, size, opts)
}

func (c *countingStore) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	c.look(key)
	return c.Store.Stat(ctx, key)
}

func (c *countingStore) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	c.look(key)
	return c.Store.Get(ctx, key)
}

func (c *countingStore) List(ctx context.Context, prefix string) iter.Seq2[storage.ObjectInfo, error] {
	c.mu.Lock()
	c.lists++
	c.mu.Unlock()
	return c.Store.List(ctx, prefix)
}

// The target is listed once up front, not asked about each object: on a
// fresh target no object of the export is looked at before its copy (only
// the manifest files, copied last with their own skip check); an object
// there with the wrong size is copied over without a look; a rerun proves
// what the listing shows and copies nothing.
func TestMigrateListsTargetOnce(t *testing.T) {
	src := local(t, "a")
	m := fakeExport(t, src, sizes(20, 1000))
	dst := &countingStore{Store: local(t, "b")}
	put(t, dst.Store, m.Extension.Ehrport.Objects[3].Key, []byte("a shorter, stale object"))
	rep, err := Run(context.Background(), Options{From: src, To: dst})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Complete() || len(rep.Copied) != 21 || len(rep.Skipped) != 0 {
		t.Fatalf("first run: complete %v, copied %d, skipped %d", rep.Complete(), len(rep.Copied), len(rep.Skipped))
	}
	for _, k := range dst.lookedAt {
		if k != export.ManifestKey && k != export.SignatureKey && !strings.HasPrefix(k, ".ehrport-check") {
			t.Errorf("looked at %s before copying it: the listing said what is there", k)
		}
	}
	if dst.lists != 1 {
		t.Errorf("the target was listed %d times, want 1", dst.lists)
	}
	if got, want := snapshot(t, dst.Store), snapshot(t, src); !mapsEqual(got, want) {
		t.Fatal("target differs from source")
	}
	dst.looks, dst.lookedAt = 0, nil
	rep, err = Run(context.Background(), Options{From: src, To: dst})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Copied) != 0 || len(rep.Skipped) != 21 || !rep.Complete() {
		t.Fatalf("rerun: copied %d, skipped %d", len(rep.Copied), len(rep.Skipped))
	}
	if dst.looks < 21 {
		t.Errorf("rerun looked at %d objects: every skip must be proven", dst.looks)
	}
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// An interrupted migration leaves no manifest at the target; the rerun
// sends only what was not finished.
func TestMigrateInterruptedThenResumed(t *testing.T) {
	src, dst := local(t, "a"), local(t, "b")
	fakeExport(t, src, sizes(200, 2000))
	ctx, cancel := context.WithCancel(context.Background())
	stopAt := 60
	_, err := Run(ctx, Options{From: src, To: dst, Concurrency: 2, Progress: func(p Progress) {
		if p.Objects >= stopAt {
			cancel()
		}
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted run: %v", err)
	}
	if _, err := dst.Stat(context.Background(), export.ManifestKey); !errors.Is(err, storage.ErrNotExist) {
		t.Fatalf("manifest at the target after an interrupted run: %v", err)
	}
	done := len(snapshot(t, dst))
	if done < stopAt-2 || done >= 200 {
		t.Fatalf("%d objects at the target after the interruption", done)
	}
	rep, err := Run(context.Background(), Options{From: src, To: dst})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Complete() || len(rep.Skipped) != done || len(rep.Copied) != 200-done+1 {
		t.Fatalf("resume: copied %d, skipped %d, had %d", len(rep.Copied), len(rep.Skipped), done)
	}
	if !mapsEqual(snapshot(t, dst), snapshot(t, src)) {
		t.Fatal("target differs from source after resume")
	}
}

// A source object whose bytes differ from the manifest is never copied, the
// manifest is not written, and the report names it.
func TestMigrateCorruptSourceObject(t *testing.T) {
	src, dst := local(t, "a"), local(t, "b")
	m := fakeExport(t, src, sizes(5, 3000))
	bad := m.Extension.Ehrport.Objects[2].Key
	put(t, src, bad, bytes.Repeat([]byte{1}, 3002))
	missing := m.Extension.Ehrport.Objects[4].Key
	src.Delete(context.Background(), missing)
	put(t, dst, "stray.bin", []byte("left by someone"))
	rep, err := Run(context.Background(), Options{From: src, To: dst})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Complete() || len(rep.Failed) != 1 || rep.Failed[0].Key != bad || len(rep.MissingAtSource) != 1 || rep.MissingAtSource[0].Key != missing {
		t.Fatalf("failed %+v, missing %+v", rep.Failed, rep.MissingAtSource)
	}
	if rep.Unavailable() != nil {
		t.Errorf("an integrity failure was counted as unavailability: %v", rep.Unavailable())
	}
	if _, err := dst.Stat(context.Background(), bad); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("corrupt object visible at the target: %v", err)
	}
	if _, err := dst.Stat(context.Background(), export.ManifestKey); !errors.Is(err, storage.ErrNotExist) {
		t.Errorf("manifest written despite failures: %v", err)
	}
	if len(rep.ExtraAtTarget) != 1 || rep.ExtraAtTarget[0].Key != "stray.bin" {
		t.Errorf("extra at target = %+v", rep.ExtraAtTarget)
	}
	if _, err := dst.Stat(context.Background(), "stray.bin"); err != nil {
		t.Errorf("migrate deleted an object at the target: %v", err)
	}
}

// Two shards give the same target as one run; the manifest appears only
// once both are done.
func TestMigrateShards(t *testing.T) {
	src := local(t, "a")
	fakeExport(t, src, sizes(50, 500))
	one := local(t, "one")
	if _, err := Run(context.Background(), Options{From: src, To: one}); err != nil {
		t.Fatal(err)
	}
	two := local(t, "two")
	r0, err := Run(context.Background(), Options{From: src, To: two, Shard: 0, Shards: 2})
	if err != nil {
		t.Fatal(err)
	}
	if r0.ManifestWritten || r0.Planned == 0 || r0.Planned == 50 {
		t.Fatalf("shard 0: planned %d, manifest %v (%s)", r0.Planned, r0.ManifestWritten, r0.ManifestNote)
	}
	r1, err := Run(context.Background(), Options{From: src, To: two, Shard: 1, Shards: 2})
	if err != nil {
		t.Fatal(err)
	}
	if !r1.ManifestWritten || r0.Planned+r1.Planned != 50 {
		t.Fatalf("shard 1: planned %d, manifest %v", r1.Planned, r1.ManifestWritten)
	}
	if !mapsEqual(snapshot(t, one), snapshot(t, two)) {
		t.Fatal("two shards differ from one run")
	}
	for i := range 50 {
		k := fmt.Sprintf("k%d", i)
		n := 0
		for s := range 3 {
			if InShard(k, s, 3) {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("key %s is in %d of 3 shards", k, n)
		}
	}
}

func TestMigrateDryRunWritesNothing(t *testing.T) {
	src, dst := local(t, "a"), local(t, "b")
	fakeExport(t, src, sizes(5, 100))
	rep, err := Run(context.Background(), Options{From: src, To: dst, DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Copied) != 5 || rep.ManifestWritten || len(snapshot(t, dst)) != 0 {
		t.Fatalf("dry run: %+v", rep)
	}
}

func TestMigrateSourceWithoutManifest(t *testing.T) {
	src := local(t, "a")
	put(t, src, "Patient.000.ndjson.ehr", []byte("x"))
	if _, err := Run(context.Background(), Options{From: src, To: local(t, "b")}); !errors.Is(err, ErrIncompleteSource) {
		t.Fatalf("err = %v", err)
	}
}

// The lying cloud stores uploads sent in parts with their framing and
// accepts any checksum: the probe must see that, every copy must be read
// back, and the corruption must be reported, never success. (Objects go in
// one PUT up to SinglePutMax by default, which this liar stores intact;
// -1 sends the 6 MiB object in parts, where it lies.)
func TestMigrateToLyingCloud(t *testing.T) {
	src := local(t, "a")
	fakeExport(t, src, append(sizes(3, 100), 6<<20))
	liar := storetest.LyingCloud(t, "lying-bucket", "exit", 5<<20)
	rep, err := Run(context.Background(), Options{From: src, To: liar, PartSize: 5 << 20, SinglePutMax: -1})
	if err != nil {
		t.Fatal(err)
	}
	if rep.TargetVerifiesChecksums {
		t.Fatal("the lying cloud was trusted to verify checksums")
	}
	if rep.Complete() || len(rep.Failed) == 0 || rep.ManifestWritten {
		t.Fatalf("migration to a lying cloud reported success: copied %d, failed %d", len(rep.Copied), len(rep.Failed))
	}
	for _, o := range rep.Copied {
		if o.Proof != storage.ProofReadBack {
			t.Errorf("%s proven by %q, want a read-back", o.Key, o.Proof)
		}
	}
	keys := []string{}
	for _, f := range rep.Failed {
		keys = append(keys, f.Key)
	}
	if !slices.Contains(keys, "Observation.003.ndjson.ehr") {
		t.Errorf("the 6 MiB object stored with framing was not caught: failed %v", keys)
	}

	// By default the 6 MiB object goes in one PUT, stored intact; it is
	// still read back, as the probe demands, and the export completes.
	liar = storetest.LyingCloud(t, "lying-bucket-2", "exit", 5<<20)
	rep, err = Run(context.Background(), Options{From: src, To: liar, PartSize: 5 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Complete() || rep.TargetVerifiesChecksums {
		t.Fatalf("one-PUT migration to the lying cloud: failed %+v, trusted %v", rep.Failed, rep.TargetVerifiesChecksums)
	}
	for _, o := range rep.Copied {
		if o.Proof != storage.ProofReadBack {
			t.Errorf("%s proven by %q, want a read-back", o.Key, o.Proof)
		}
	}
}

// downAfter is a target that goes down after n successful Puts.
type downAfter struct {
	storage.Store
	mu sync.Mutex
	n  int
}

func (d *downAfter) Put(ctx context.Context, key string, r io.Reader, size int64, opts storage.PutOptions) error {
	d.mu.Lock()
	d.n--
	down := d.n < 0
	d.mu.Unlock()
	if down {
		return &storage.Error{Op: "put", Location: d.Location(), Key: key, Err: fmt.Errorf("%w: connection refused", storage.ErrUnavailable)}
	}
	return d.Store.Put(ctx, key, r, size, opts)
}

// A target that stays down stops the run: the rest is not attempted but
// reported, the manifest is not written, and a rerun finishes the job.
func TestMigrateTargetDownStopsAndResumes(t *testing.T) {
	src, dst := local(t, "a"), local(t, "b")
	fakeExport(t, src, sizes(300, 100))
	quick := storage.RetryPolicy{Attempts: 2, Base: time.Millisecond, Max: time.Millisecond}
	start := time.Now()
	rep, err := Run(context.Background(), Options{From: src, To: &downAfter{Store: dst, n: 10}, Concurrency: 4, Retry: quick})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Unavailable() == nil || rep.ManifestWritten || len(rep.Copied)+len(rep.Failed) != 300 {
		t.Fatalf("copied %d + failed %d of 300; unavailable %v", len(rep.Copied), len(rep.Failed), rep.Unavailable())
	}
	notAttempted := 0
	for _, f := range rep.Failed {
		if strings.HasPrefix(f.Error, "not attempted") {
			notAttempted++
		}
	}
	if notAttempted < 250 {
		t.Errorf("only %d objects were spared after the target went down", notAttempted)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("failing took %v", d)
	}
	rep, err = Run(context.Background(), Options{From: src, To: dst})
	if err != nil || !rep.Complete() || len(rep.Skipped) != 10 {
		t.Fatalf("rerun: %v, skipped %d", err, len(rep.Skipped))
	}
}
