package export

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	ehrcrypto "github.com/ehrport/ehrport/crypto"
	"github.com/ehrport/ehrport/fhir/synth"
)

// A restore to a Sink gives the sink exactly the bytes a folder restore
// writes, writes no plaintext file, and never hands a tampered object to
// the sink.
func TestRestoreSink(t *testing.T) {
	src := t.TempDir()
	if _, err := synth.WriteNDJSON(src, synth.Options{Patients: 3, Seed: 2}); err != nil {
		t.Fatal(err)
	}
	k := newTestKeys(t)
	st := localStore(t)
	eo := k.exportOpts(st, src)
	eo.SplitResources = 7 // several parts per type
	if _, err := eo.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, dir, err := k.restore(t, st)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	files, _ := filepath.Glob(filepath.Join(dir, "*.ndjson"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		want[filepath.Base(f)] = string(b)
	}

	spool := t.TempDir()
	var mu sync.Mutex
	got := map[string]string{}
	sink := func(ctx context.Context, obj RestoredObject, r io.Reader) error {
		b, err := io.ReadAll(r)
		if err != nil {
			return err
		}
		if n := int64(strings.Count(string(b), "\n")); n != obj.Resources || !strings.HasPrefix(obj.Path, obj.Type+".") {
			t.Errorf("%s: %d lines, object says %d resources of %s", obj.Path, n, obj.Resources, obj.Type)
		}
		mu.Lock()
		got[obj.Path] = string(b)
		mu.Unlock()
		return nil
	}
	ro := &RestoreOptions{Store: st, Sink: sink, SpoolDir: spool, Identities: []ehrcrypto.Identity{k.id}, Verifier: k.verif, Concurrency: 3}
	sum, err := ro.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(want) || len(got) < 10 {
		t.Fatalf("sink got %d objects, the folder restore wrote %d", len(got), len(want))
	}
	for p, w := range want {
		if got[p] != w {
			t.Errorf("%s: sink bytes differ from the restored file", p)
		}
	}
	if len(sum.Files) != 0 || sum.Resources == 0 {
		t.Errorf("summary: %d files, %d resources", len(sum.Files), sum.Resources)
	}
	if left, _ := os.ReadDir(spool); len(left) != 0 {
		t.Errorf("spool folder not empty: %v", left)
	}

	// One flipped byte in a part: the sink never sees that part.
	flipByte(t, filepath.Join(st.Root(), "Observation.001.ndjson.ehr"), 300)
	got = map[string]string{}
	ro.Concurrency = 1
	_, err = ro.Run(context.Background())
	if !errors.Is(err, ehrcrypto.ErrCorrupt) || !strings.Contains(err.Error(), "Observation.001.ndjson.ehr") {
		t.Fatalf("tampered part: err = %v", err)
	}
	if _, ok := got["Observation.001.ndjson"]; ok {
		t.Error("the sink received a tampered object")
	}

	if _, err := (&RestoreOptions{Store: st, Sink: sink, To: dir}).Run(context.Background()); err == nil {
		t.Error("To and Sink together were accepted")
	}
}

func flipByte(t *testing.T, p string, off int64) {
	t.Helper()
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 1
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}
