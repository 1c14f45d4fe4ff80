package synth_test

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/ehrport/ehrport/fhir"
	"github.com/ehrport/ehrport/fhir/synth"
)

func digest(t *testing.T, o synth.Options, urn bool) ([]byte, map[string]int) {
	t.Helper()
	h := sha256.New()
	counts := map[string]int{}
	err := synth.Generate(o, urn, func(r synth.Resource) error {
		counts[r.Type]++
		h.Write(r.JSON)
		h.Write([]byte{'\n'})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return h.Sum(nil), counts
}

func TestDeterministic(t *testing.T) {
	a, counts := digest(t, synth.Options{Patients: 50, Seed: 7}, false)
	b, _ := digest(t, synth.Options{Patients: 50, Seed: 7}, false)
	c, _ := digest(t, synth.Options{Patients: 50, Seed: 8}, false)
	if !bytes.Equal(a, b) {
		t.Fatal("same seed gave different bytes")
	}
	if bytes.Equal(a, c) {
		t.Fatal("different seeds gave the same bytes")
	}
	for _, typ := range synth.Types {
		if counts[typ] == 0 {
			t.Errorf("no %s generated", typ)
		}
	}
	t.Logf("counts for 50 patients: %v", counts)
}

// export runs the fhir walker and checker over paths and fails on any
// finding of warning severity or worse.
func export(t *testing.T, opts fhir.WalkOptions, paths ...string) fhir.Stats {
	t.Helper()
	var bad []fhir.Finding
	report := func(f fhir.Finding) {
		if f.Severity >= fhir.Warning {
			bad = append(bad, f)
		}
	}
	opts.Report = report
	w, err := fhir.NewWalker(paths, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	c := fhir.NewChecker(fhir.CheckerOptions{Policy: fhir.PolicyFail, Report: report})
	for {
		it, err := w.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		act, err := c.Item(it)
		if err != nil {
			t.Fatal(err)
		}
		if act == fhir.Write && it.Kind == fhir.KindBundle {
			if _, err := it.Bundle.WriteTo(io.Discard); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := c.Finish(); err != nil {
		t.Fatal(err)
	}
	for i, f := range bad {
		if i == 10 {
			break
		}
		t.Errorf("finding: %s", f)
	}
	return c.Stats()
}

func TestNDJSONValidates(t *testing.T) {
	dir := t.TempDir()
	counts, err := synth.WriteNDJSON(dir, synth.Options{Patients: 200, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	st := export(t, fhir.WalkOptions{}, dir)
	total := 0
	for _, n := range counts {
		total += n
	}
	if st.Written != int64(total) {
		t.Errorf("written %d, generated %d", st.Written, total)
	}
	// The files are byte-identical across runs.
	dir2 := t.TempDir()
	if _, err := synth.WriteNDJSON(dir2, synth.Options{Patients: 200, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	for _, typ := range synth.Types {
		a, _ := os.ReadFile(filepath.Join(dir, typ+".ndjson"))
		b, _ := os.ReadFile(filepath.Join(dir2, typ+".ndjson"))
		if !bytes.Equal(a, b) {
			t.Errorf("%s.ndjson differs between runs", typ)
		}
	}
}

func TestTransactionBundlesValidate(t *testing.T) {
	dir := t.TempDir()
	n, err := synth.WriteTransactionBundles(dir, synth.Options{Patients: 30, Seed: 2}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Errorf("wrote %d bundles, want 4", n)
	}
	st := export(t, fhir.WalkOptions{}, dir)
	if st.Bundles != 4 {
		t.Errorf("checked %d bundles", st.Bundles)
	}
	// Split: entries become top-level resources; the urn:uuid links are
	// reported as lost (warnings), never rewritten.
	var lost int
	w, err := fhir.NewWalker([]string{dir}, fhir.WalkOptions{SplitBundles: true, Report: func(f fhir.Finding) {
		if f.Code == fhir.CodeSplitLostLink {
			lost++
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	items := 0
	for {
		it, err := w.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if it.Kind != fhir.KindResource {
			t.Fatalf("item kind %v at %s", it.Kind, it.Pos)
		}
		items++
	}
	if lost == 0 || items < 100 {
		t.Errorf("split gave %d items and %d lost links", items, lost)
	}
}
