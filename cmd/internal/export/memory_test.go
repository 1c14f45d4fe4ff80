package export

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ehrport/ehrport/fhir"
	"github.com/ehrport/ehrport/fhir/synth"
)

// heapPeak samples the runtime's live heap (as of the last collection)
// while an export runs and keeps the largest value. The live heap, not
// the heap with its garbage, is what an input-sized structure would show
// in: it does not depend on when the collector happens to run.
type heapPeak struct {
	stop chan struct{}
	wg   sync.WaitGroup
	mu   sync.Mutex
	peak uint64
}

func startHeapPeak() *heapPeak {
	runtime.GC()
	h := &heapPeak{stop: make(chan struct{})}
	s := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	read := func() {
		metrics.Read(s)
		if v := s[0].Value.Uint64(); v > 0 {
			h.mu.Lock()
			h.peak = max(h.peak, v)
			h.mu.Unlock()
		}
	}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				read()
			case <-h.stop:
				read()
				return
			}
		}
	}()
	return h
}

func (h *heapPeak) done() uint64 {
	close(h.stop)
	h.wg.Wait()
	return h.peak
}

// memExport exports patients' worth of generated NDJSON to a local folder
// store and returns the resources exported and the peak live heap. With
// EHRPORT_MEM_PROFILE=DIR it also writes a heap profile of the live heap
// when 90% of the resources have been handled (the Checker's index then
// nearly full).
func memExport(t *testing.T, patients int) (int64, uint64) {
	t.Helper()
	src := t.TempDir()
	counts, err := synth.WriteNDJSON(src, synth.Options{Patients: patients, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	var total int
	for _, n := range counts {
		total += n
	}
	k := newTestKeys(t)
	o := k.exportOpts(localStore(t), src)
	o.SpoolDir = t.TempDir()
	if dir := os.Getenv("EHRPORT_MEM_PROFILE"); dir != "" {
		var seen int
		o.Observe = func(*fhir.Item, fhir.Action) error {
			if seen++; seen == total*9/10 {
				runtime.GC()
				f, err := os.Create(filepath.Join(dir, fmt.Sprintf("heap-%d.pprof", total)))
				if err != nil {
					return err
				}
				defer f.Close()
				return pprof.Lookup("heap").WriteTo(f, 0)
			}
			return nil
		}
	}
	h := startHeapPeak()
	sum, err := o.Run(context.Background())
	peak := h.done()
	if err != nil {
		t.Fatal(err)
	}
	if sum.Resources != int64(total) {
		t.Fatalf("exported %d of %d resources", sum.Resources, total)
	}
	return sum.Resources, peak
}

// TestExportPeakHeapFlat exports generated data at growing sizes and checks
// that the peak live heap does not grow with the input: the largest size
// may use at most a fixed margin more than the smallest. The default sizes
// take a few seconds; EHRPORT_MEM_PATIENTS="528 5280 52800" runs the 10k,
// 100k and 1M-resource curve (about 0.8 GB of temporary files at 1M).
func TestExportPeakHeapFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("exports tens of thousands of resources")
	}
	sizes := []int{100, 1000, 4000}
	if s := os.Getenv("EHRPORT_MEM_PATIENTS"); s != "" {
		sizes = sizes[:0]
		for _, f := range strings.Fields(s) {
			n, err := strconv.Atoi(f)
			if err != nil || n <= 0 {
				t.Fatalf("EHRPORT_MEM_PATIENTS: %q is no number of patients", f)
			}
			sizes = append(sizes, n)
		}
	}
	var first uint64
	for i, p := range sizes {
		n, peak := memExport(t, p)
		t.Logf("%7d resources: peak live heap %5.1f MiB", n, float64(peak)/(1<<20))
		if i == 0 {
			first = peak
			continue
		}
		// Bounded, not proportional: 40× the resources may cost a few MiB of
		// buffers reaching their steady size, never the input's share.
		if peak > first+memGrowthMargin {
			t.Errorf("%d resources: peak live heap %.1f MiB, more than %.1f MiB over the smallest export's %.1f MiB",
				n, float64(peak)/(1<<20), float64(memGrowthMargin)/(1<<20), float64(first)/(1<<20))
		}
	}
}

// memGrowthMargin is how much more live heap a larger export may use than
// the smallest in TestExportPeakHeapFlat.
const memGrowthMargin = 24 << 20
