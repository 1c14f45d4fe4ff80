package fhir_test

import (
	"os"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/ehrport/ehrport/fhir"
	"github.com/ehrport/ehrport/fhir/synth"
)

// TestMillionResourcesBoundedMemory exports about a million synth
// resources through Walker + Checker.Run and checks peak RSS and the live
// heap the Checker keeps. It writes
// ~1 GB to a temp dir, so it runs only with FHIR_MILLION=1:
//
//	FHIR_MILLION=1 go test -run Million -v ./fhir/
func TestMillionResourcesBoundedMemory(t *testing.T) {
	if os.Getenv("FHIR_MILLION") != "1" {
		t.Skip("set FHIR_MILLION=1")
	}
	dir := t.TempDir()
	start := time.Now()
	counts, err := synth.WriteNDJSON(dir, synth.Options{Patients: 40000, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, n := range counts {
		total += n
	}
	t.Logf("generated %d resources in %v", total, time.Since(start))
	runtime.GC()
	start = time.Now()
	w, err := fhir.NewWalker([]string{dir}, fhir.WalkOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := fhir.NewChecker(fhir.CheckerOptions{SpillDir: t.TempDir()})
	defer c.Close()
	if err := c.Run(w, 0, func(*fhir.Item, fhir.Action) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := c.Finish(); err != nil {
		t.Fatal(err)
	}
	el := time.Since(start)
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	t.Logf("live heap after the export (Checker index held): %d MB", ms.HeapAlloc>>20)
	st := c.Stats()
	t.Logf("checked %d resources in %v: %.0f resources/s; peak RSS %d MB", st.Written, el, float64(st.Written)/el.Seconds(), ru.Maxrss/1024)
	if st.Written != int64(total) {
		t.Errorf("written %d of %d", st.Written, total)
	}
	if ru.Maxrss/1024 > 256 {
		t.Errorf("peak RSS %d MB over 256 MB", ru.Maxrss/1024)
	}
	// The index is bounded (DefaultIndexEntries in memory, the rest
	// spilled): an unbounded one holds about 95 MB here.
	if ms.HeapAlloc>>20 > 48 {
		t.Errorf("live heap %d MB after the export: the id index is not bounded", ms.HeapAlloc>>20)
	}
}
