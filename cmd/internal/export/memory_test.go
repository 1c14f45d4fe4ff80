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

// memUse is what an export's heap came to: the largest live heap measured
// after a forced collection at every tenth of the resources (steady: it
// counts no garbage and little of what is allocated during the
// collection), and the largest live heap the runtime reported at any
// collection (it includes what was allocated while a collection ran, so it
// is noisy on a busy machine).
type memUse struct {
	resources  int64
	checkpoint uint64
	sampled    uint64
}

// memExport exports patients' worth of generated NDJSON to a local folder
// store. With EHRPORT_MEM_PROFILE=DIR it also writes a heap profile of the
// live heap at the checkpoint after 90% of the resources.
func memExport(t *testing.T, patients int) memUse {
	t.Helper()
	src, total := genNDJSON(t, patients)
	k := newTestKeys(t)
	o := k.exportOpts(localStore(t), src)
	o.SpoolDir = t.TempDir()
	var u memUse
	var seen int
	o.Observe = func(*fhir.Item, fhir.Action) error {
		seen++
		if seen%max(total/10, 1) != 0 {
			return nil
		}
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		u.checkpoint = max(u.checkpoint, ms.HeapAlloc)
		if dir := os.Getenv("EHRPORT_MEM_PROFILE"); dir != "" && seen == total/10*9 {
			f, err := os.Create(filepath.Join(dir, fmt.Sprintf("heap-%d.pprof", total)))
			if err != nil {
				return err
			}
			defer f.Close()
			return pprof.Lookup("heap").WriteTo(f, 0)
		}
		return nil
	}
	h := startHeapPeak()
	sum, err := o.Run(context.Background())
	u.sampled = h.done()
	if err != nil {
		t.Fatal(err)
	}
	if sum.Resources != int64(total) {
		t.Fatalf("exported %d of %d resources", sum.Resources, total)
	}
	if left, _ := os.ReadDir(o.SpoolDir); len(left) != 0 {
		t.Errorf("spool folder not empty: %v", left)
	}
	u.resources = sum.Resources
	return u
}

// genNDJSON writes patients' worth of generated NDJSON (seed 1) to a temp
// folder and returns it with the number of resources.
func genNDJSON(t testing.TB, patients int) (string, int) {
	t.Helper()
	dir := t.TempDir()
	counts, err := synth.WriteNDJSON(dir, synth.Options{Patients: patients, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	var total int
	for _, n := range counts {
		total += n
	}
	return dir, total
}

// TestExportPeakHeapFlat exports generated data at growing sizes and checks
// that the live heap does not grow with the input: the largest size may use
// at most a fixed margin more than the smallest. The default sizes
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
	const mib = 1 << 20
	var first uint64
	for i, p := range sizes {
		u := memExport(t, p)
		t.Logf("%7d resources: live heap %5.1f MiB at most at the checkpoints, %5.1f MiB at most at any collection",
			u.resources, float64(u.checkpoint)/mib, float64(u.sampled)/mib)
		if i == 0 {
			first = u.checkpoint
			continue
		}
		// Bounded, not proportional: 100× the resources may cost some MiB
		// of buffers reaching their steady size, never the input's share
		// (before the index spilled: 95 MiB more at 1M resources).
		if u.checkpoint > first+memGrowthMargin {
			t.Errorf("%d resources: live heap %.1f MiB, more than %.1f MiB over the smallest export's %.1f MiB",
				u.resources, float64(u.checkpoint)/mib, float64(memGrowthMargin)/mib, float64(first)/mib)
		}
	}
}

// memGrowthMargin is how much more live heap a larger export may use than
// the smallest in TestExportPeakHeapFlat.
const memGrowthMargin = 24 << 20
