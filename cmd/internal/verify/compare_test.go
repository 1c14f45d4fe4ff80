package verify

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"github.com/ehrport/ehrport/cmd/internal/export"
	"github.com/ehrport/ehrport/storage"
)

// Sizes around the reference's read-ahead chunks.
var refSizes = []int64{0, 1, 1000, refChunk - 1, refChunk, refChunk + 1, 3*refChunk + 5}

func localStore(t *testing.T, name string) *storage.LocalStore {
	t.Helper()
	st, err := storage.NewLocalStore(filepath.Join(t.TempDir(), name))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func putBytes(t *testing.T, st storage.Store, key string, b []byte) {
	t.Helper()
	if err := st.Put(context.Background(), key, bytes.NewReader(b), int64(len(b)), storage.PutOptions{}); err != nil {
		t.Fatal(err)
	}
}

// twoCopies writes the same unsigned export (random bytes: the comparison
// never looks inside objects) to two folders and returns their bodies.
func twoCopies(t *testing.T) (a, b *storage.LocalStore, bodies map[string][]byte) {
	t.Helper()
	a, b = localStore(t, "a"), localStore(t, "b")
	bodies = map[string][]byte{}
	var m export.Manifest
	m.Extension.Ehrport.FormatVersion = 1
	m.Extension.Ehrport.ExportID = "e-cmp"
	r := rand.NewChaCha8([32]byte{3})
	for i, n := range refSizes {
		body := make([]byte, n)
		r.Read(body)
		key := fmt.Sprintf("Binary.%03d.ndjson.ehr", i)
		bodies[key] = body
		sum := sha256.Sum256(body)
		m.Extension.Ehrport.Objects = append(m.Extension.Ehrport.Objects, export.ObjectEntry{
			Key: key, Path: key[:len(key)-4], Kind: "data", Type: "Binary", Size: n, SHA256: hex.EncodeToString(sum[:])})
	}
	mb, _ := json.MarshalIndent(m, "", "  ")
	for _, st := range []storage.Store{a, b} {
		for k, body := range bodies {
			putBytes(t, st, k, body)
		}
		putBytes(t, st, export.ManifestKey, mb)
	}
	return a, b, bodies
}

// getCounter counts Gets per key.
type getCounter struct {
	storage.Store
	mu   sync.Mutex
	gets map[string]int
}

func (g *getCounter) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	g.mu.Lock()
	if g.gets == nil {
		g.gets = map[string]int{}
	}
	g.gets[key]++
	g.mu.Unlock()
	return g.Store.Get(ctx, key)
}

// verifyAgainst is what `verify --at target --against reference` runs.
func verifyAgainst(t *testing.T, target, reference storage.Store) (*Report, *Report) {
	t.Helper()
	ctx := context.Background()
	rep, err := Run(ctx, Options{Store: target, Reference: reference})
	if err != nil {
		t.Fatal(err)
	}
	cmp, err := CompareByManifest(ctx, rep, CompareOptions{Store: target, Reference: reference})
	if err != nil {
		t.Fatal(err)
	}
	return rep, cmp
}

// Identical sides: every object is proven, and each side's object is read
// exactly once (the reference while the target is read, not after).
func TestCompareReadsEachSideOnce(t *testing.T) {
	a, b, bodies := twoCopies(t)
	target, reference := &getCounter{Store: b}, &getCounter{Store: a}
	_, cmp := verifyAgainst(t, target, reference)
	if !cmp.OK() || cmp.ObjectsVerified != len(bodies)+1 {
		t.Fatalf("identical copies: verified %d of %d, findings %+v", cmp.ObjectsVerified, len(bodies)+1, cmp.Findings)
	}
	for k := range bodies {
		if target.gets[k] != 1 || reference.gets[k] != 1 {
			t.Errorf("%s read %d times at the target and %d at the reference, want once each", k, target.gets[k], reference.gets[k])
		}
	}
}

// A reference that differs from a target copy that matched the manifest,
// in any way and at any place, is reported for that object: never taken
// as proven by the byte comparison.
func TestCompareReferenceDiffers(t *testing.T) {
	changes := map[string]func([]byte) []byte{
		"first byte": func(b []byte) []byte { b = bytes.Clone(b); b[0] ^= 1; return b },
		"last byte":  func(b []byte) []byte { b = bytes.Clone(b); b[len(b)-1] ^= 1; return b },
		"chunk edge": func(b []byte) []byte {
			b = bytes.Clone(b)
			b[min(len(b)-1, refChunk)] ^= 1
			return b
		},
		"one more":  func(b []byte) []byte { return append(bytes.Clone(b), 0) },
		"one fewer": func(b []byte) []byte { return bytes.Clone(b[:len(b)-1]) },
		"missing":   nil,
	}
	for i, n := range refSizes {
		if n == 0 {
			continue
		}
		key := fmt.Sprintf("Binary.%03d.ndjson.ehr", i)
		for name, change := range changes {
			t.Run(fmt.Sprintf("%d/%s", n, name), func(t *testing.T) {
				a, b, bodies := twoCopies(t)
				if change == nil {
					if err := a.Delete(context.Background(), key); err != nil {
						t.Fatal(err)
					}
				} else {
					putBytes(t, a, key, change(bodies[key]))
				}
				_, cmp := verifyAgainst(t, b, a)
				var objs []string
				for _, f := range cmp.Findings {
					objs = append(objs, f.Object)
				}
				if !slices.Equal(objs, []string{key}) || cmp.ObjectsVerified != len(bodies) {
					t.Fatalf("findings on %v (want only %s), verified %d of %d: %+v", objs, key, cmp.ObjectsVerified, len(bodies)+1, cmp.Findings)
				}
			})
		}
	}
}

// A target copy that does not match the manifest proves nothing about the
// reference: its object is then read and hashed against the manifest on
// its own, and a good reference passes while the target is reported.
func TestCompareTargetBadReferenceGood(t *testing.T) {
	a, b, bodies := twoCopies(t)
	key := fmt.Sprintf("Binary.%03d.ndjson.ehr", len(refSizes)-1)
	bad := bytes.Clone(bodies[key])
	bad[refChunk+3] ^= 0x80
	putBytes(t, b, key, bad)
	reference := &getCounter{Store: a}
	rep, cmp := verifyAgainst(t, b, reference)
	found := false
	for _, f := range rep.Findings {
		found = found || (f.Object == key && f.Code == "sha256-mismatch")
	}
	if !found {
		t.Fatalf("the target's bad copy was not reported: %+v", rep.Findings)
	}
	if !cmp.OK() || cmp.ObjectsVerified != len(bodies)+1 {
		t.Fatalf("good reference: verified %d, findings %+v", cmp.ObjectsVerified, cmp.Findings)
	}
	if reference.gets[key] != 2 {
		t.Errorf("the reference's %s was read %d times, want twice (compared, then hashed on its own)", key, reference.gets[key])
	}
}
