package export

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ehrport/ehrport/fhir/synth"
	"github.com/ehrport/ehrport/storage"
)

// lostAnswerStore commits the manifest, then reports the Put as failed:
// the server's answer was lost on the way back (a reset after the commit).
type lostAnswerStore struct{ storage.Store }

func (s *lostAnswerStore) Put(ctx context.Context, key string, r io.Reader, size int64, o storage.PutOptions) error {
	if err := s.Store.Put(ctx, key, r, size, o); err != nil {
		return err
	}
	if key == ManifestKey {
		return &storage.Error{Op: "put", Location: s.Location(), Key: key, Err: fmt.Errorf("%w: connection reset by peer", storage.ErrUnavailable)}
	}
	return nil
}

// A manifest whose Put failed may stand anyway. The failed export must not
// then delete the objects it lists: a manifest over missing objects is an
// export that looks complete and is not. It removes the manifest first.
func TestFailedManifestPutNeverStandsAlone(t *testing.T) {
	src := t.TempDir()
	if _, err := synth.WriteNDJSON(src, synth.Options{Patients: 3, Seed: 4}); err != nil {
		t.Fatal(err)
	}
	k := newTestKeys(t)
	st := localStore(t)
	o := k.exportOpts(&lostAnswerStore{st}, src)
	o.Retry = storage.RetryPolicy{Base: time.Millisecond, Max: 2 * time.Millisecond}
	if _, err := o.Run(context.Background()); !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("err = %v, want the manifest's failed Put", err)
	}
	if _, err := st.Stat(context.Background(), ManifestKey); err == nil {
		m, _, err := ReadManifest(context.Background(), st)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range m.Extension.Ehrport.Objects {
			if _, err := st.Stat(context.Background(), e.Key); err != nil {
				t.Fatalf("the manifest stands but %s, which it lists, was deleted: %v", e.Key, err)
			}
		}
		t.Fatal("the manifest of a failed export stands")
	}
	// The location is not blocked: the same export runs again.
	if _, err := k.exportOpts(st, src).Run(context.Background()); err != nil {
		t.Fatalf("rerun: %v", err)
	}
}

// downStore takes n Puts, then is down: Puts and Deletes fail as
// unavailable.
type downStore struct {
	storage.Store
	n       int64
	puts    atomic.Int64
	deletes atomic.Int64
}

func (s *downStore) down(op, key string) error {
	return &storage.Error{Op: op, Location: s.Location(), Key: key, Err: fmt.Errorf("%w: connection refused", storage.ErrUnavailable)}
}

func (s *downStore) Put(ctx context.Context, key string, r io.Reader, size int64, o storage.PutOptions) error {
	if s.puts.Add(1) > s.n {
		return s.down("put", key)
	}
	return s.Store.Put(ctx, key, r, size, o)
}

func (s *downStore) Delete(ctx context.Context, key string) error {
	s.deletes.Add(1)
	return s.down("delete", key)
}

// When the store goes down, cleaning up after the failed export stops at
// the first delete that finds it down, instead of waiting out the retries
// of one delete per object: the error comes at once, and a rerun replaces
// what was left.
func TestCleanupStopsWhenStoreIsDown(t *testing.T) {
	src := t.TempDir()
	if _, err := synth.WriteNDJSON(src, synth.Options{Patients: 4, Seed: 9}); err != nil {
		t.Fatal(err)
	}
	k := newTestKeys(t)
	ds := &downStore{Store: localStore(t), n: 8}
	o := k.exportOpts(ds, src)
	o.SplitResources, o.Concurrency = 3, 1
	if _, err := o.Run(context.Background()); !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("err = %v", err)
	}
	if n := ds.deletes.Load(); n != 1 {
		t.Fatalf("%d deletes tried against a store that is down; want 1", n)
	}
}

// resetStore breaks the first Put of every data object half-way through
// its body, as a connection reset would, and lets the next one through.
type resetStore struct {
	storage.Store
	mu     sync.Mutex
	broken map[string]bool
	resets atomic.Int64
}

func (s *resetStore) Put(ctx context.Context, key string, r io.Reader, size int64, o storage.PutOptions) error {
	s.mu.Lock()
	first := strings.HasSuffix(key, ObjectSuffix) && !s.broken[key]
	s.broken[key] = true
	s.mu.Unlock()
	if first {
		if _, err := io.CopyN(io.Discard, r, size/2); err != nil {
			return err
		}
		s.resets.Add(1)
		return &storage.Error{Op: "put", Location: s.Location(), Key: key, Err: fmt.Errorf("%w: connection reset by peer", storage.ErrUnavailable)}
	}
	return s.Store.Put(ctx, key, r, size, o)
}

// A part whose upload is reset half-way is sent again, whole, from its
// spool file: the export completes and restores to the same bytes as an
// export that met no reset.
func TestPartUploadRetriedAfterReset(t *testing.T) {
	src := t.TempDir()
	if _, err := synth.WriteNDJSON(src, synth.Options{Patients: 6, Seed: 5}); err != nil {
		t.Fatal(err)
	}
	k := newTestKeys(t)
	rs := &resetStore{Store: localStore(t), broken: map[string]bool{}}
	o := k.exportOpts(rs, src)
	o.Retry = storage.RetryPolicy{Base: time.Millisecond, Max: 2 * time.Millisecond}
	if _, err := o.Run(context.Background()); err != nil {
		t.Fatalf("export with resets: %v", err)
	}
	if rs.resets.Load() == 0 {
		t.Fatal("no upload was reset: the test tests nothing")
	}
	_, got, err := k.restore(t, rs.Store)
	if err != nil {
		t.Fatal(err)
	}
	clean := localStore(t)
	if _, err := k.exportOpts(clean, src).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, want, err := k.restore(t, clean)
	if err != nil {
		t.Fatal(err)
	}
	if g, w := treeBytes(t, got), treeBytes(t, want); len(w) == 0 || !maps.Equal(g, w) {
		t.Fatalf("the export that met resets restores to other bytes: %d files against %d", len(g), len(w))
	}
	t.Logf("%d uploads reset and sent again", rs.resets.Load())
}

// treeBytes maps each file under dir, by relative path, to its content.
func treeBytes(t *testing.T, dir string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		rel, _ := filepath.Rel(dir, path)
		m[rel] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// lostOnceStore commits the manifest and loses the answer once.
type lostOnceStore struct {
	storage.Store
	lost atomic.Bool
}

func (s *lostOnceStore) Put(ctx context.Context, key string, r io.Reader, size int64, o storage.PutOptions) error {
	if err := s.Store.Put(ctx, key, r, size, o); err != nil {
		return err
	}
	if key == ManifestKey && !s.lost.Swap(true) {
		return &storage.Error{Op: "put", Location: s.Location(), Key: key, Err: fmt.Errorf("%w: connection reset by peer", storage.ErrUnavailable)}
	}
	return nil
}

// A manifest stored whose answer was lost is written again, the same
// bytes: the export completes instead of failing with the manifest in
// place.
func TestManifestAnswerLostOnce(t *testing.T) {
	src := t.TempDir()
	if _, err := synth.WriteNDJSON(src, synth.Options{Patients: 3, Seed: 4}); err != nil {
		t.Fatal(err)
	}
	k := newTestKeys(t)
	st := &lostOnceStore{Store: localStore(t)}
	o := k.exportOpts(st, src)
	o.Retry = storage.RetryPolicy{Base: time.Millisecond, Max: 2 * time.Millisecond}
	if _, err := o.Run(context.Background()); err != nil || !st.lost.Load() {
		t.Fatalf("export: %v (answer lost: %v)", err, st.lost.Load())
	}
	if _, _, err := k.restore(t, st.Store); err != nil {
		t.Fatalf("restore: %v", err)
	}
}

// Input that mixes resource types line by line opens no more than
// MaxOpenParts parts at once: the part written to longest ago is finished
// early. The export then has more, smaller parts, and restores to the
// same resources of each type, in the same order.
func TestMaxOpenParts(t *testing.T) {
	src := t.TempDir()
	var mixed bytes.Buffer
	err := synth.Generate(synth.Options{Patients: 6, Seed: 8}, false, func(r synth.Resource) error {
		mixed.Write(r.JSON)
		return mixed.WriteByte('\n')
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "mixed.ndjson"), mixed.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	k := newTestKeys(t)
	lastMaxOpen := 0
	observeMaxOpen = func(n int) { lastMaxOpen = n }
	defer func() { observeMaxOpen = nil }()
	run := func(maxOpen int) (map[string]string, int, int) {
		st := localStore(t)
		o := k.exportOpts(st, src)
		o.MaxOpenParts = maxOpen
		sum, err := o.Run(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		_, dir, err := k.restore(t, st)
		if err != nil {
			t.Fatal(err)
		}
		// Each type's parts, concatenated in part order.
		byType := map[string]string{}
		files := treeBytes(t, dir)
		for _, name := range slices.Sorted(maps.Keys(files)) {
			byType[strings.SplitN(filepath.Base(name), ".", 2)[0]] += files[name]
		}
		return byType, sum.Objects, lastMaxOpen
	}
	want, wholeParts, _ := run(0)
	got, parts, open := run(2)
	if open > 2 || parts <= wholeParts {
		t.Fatalf("MaxOpenParts 2: at most %d parts open, %d objects (against %d)", open, parts, wholeParts)
	}
	if len(want) < 5 || !maps.Equal(got, want) {
		t.Fatalf("restored resources differ: %d types against %d", len(got), len(want))
	}
}
