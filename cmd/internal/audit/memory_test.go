package audit

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"iter"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/ehrport/ehrport/storage"
)

// manyStore is a source of n generated objects, for memory tests: it models
// no S3 behaviour, it only hands out many objects without holding them.
// Object i is, by i%3, plaintext NDJSON, random bytes (unknown content), or
// a valid envelope alone in its own folder (so every one of them opens an
// export root without a manifest). Each kind gives a finding per object:
// the worst case for the size of a report.
type manyStore struct {
	n                       int
	plain, random, envelope []byte
	// gate holds samples back while the heap is measured, so that what
	// workers allocate meanwhile does not count as live.
	gate sync.RWMutex
}

var (
	_ storage.Store   = (*manyStore)(nil)
	_ storage.Sampler = (*manyStore)(nil)
)

func newManyStore(t testing.TB, n int) *manyStore {
	r, _ := kekRecipient(t)
	random := make([]byte, 4096)
	rand.Read(random)
	return &manyStore{n: n, plain: ndjson(40), random: random,
		envelope: envelope(t, r, "E1", "Observation.000.ndjson", ndjson(2000))}
}

func (m *manyStore) key(i int) string {
	switch i % 3 {
	case 0:
		return fmt.Sprintf("leak/Patient.%08d.ndjson", i)
	case 1:
		return fmt.Sprintf("blob/%08d.bin", i)
	}
	return fmt.Sprintf("exp/%08d/Observation.000.ndjson.ehr", i)
}

func (m *manyStore) body(key string) []byte {
	switch {
	case strings.HasPrefix(key, "leak/"):
		return m.plain
	case strings.HasPrefix(key, "blob/"):
		return m.random
	}
	return m.envelope
}

func (m *manyStore) List(ctx context.Context, prefix string) iter.Seq2[storage.ObjectInfo, error] {
	return func(yield func(storage.ObjectInfo, error) bool) {
		for i := range m.n {
			k := m.key(i)
			if !yield(storage.ObjectInfo{Key: k, Size: int64(len(m.body(k)))}, nil) {
				return
			}
		}
	}
}

func (m *manyStore) SampleObject(ctx context.Context, key, versionID string, n, _ int64) (storage.Sample, error) {
	m.gate.RLock()
	defer m.gate.RUnlock()
	b := m.body(key)
	return storage.Sample{Info: storage.ObjectInfo{Key: key, Size: int64(len(b))}, Head: b[:min(int64(len(b)), n)]}, nil
}

func (m *manyStore) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	return storage.ObjectInfo{}, &storage.Error{Op: "stat", Key: key, Err: storage.ErrNotExist}
}

func (m *manyStore) Put(context.Context, string, io.Reader, int64, storage.PutOptions) error {
	return fmt.Errorf("read-only")
}

func (m *manyStore) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	return nil, fmt.Errorf("not used by audit")
}

func (m *manyStore) Delete(context.Context, string) error { return fmt.Errorf("read-only") }
func (m *manyStore) Location() string                     { return "many:" }

// auditPeakHeap audits n generated objects and returns the largest live
// heap seen (after a forced collection every 2,000 objects) and the report.
func auditPeakHeap(t testing.TB, n int) (uint64, *Report) {
	t.Helper()
	st := newManyStore(t, n)
	var mu sync.Mutex
	var peak uint64
	measure := func() {
		st.gate.Lock()
		defer st.gate.Unlock()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		peak = max(peak, ms.HeapAlloc)
	}
	rep, err := Run(context.Background(), Options{Store: st, Policy: DefaultPolicy(), Concurrency: 8,
		Progress: func(done int64) {
			if done%2000 == 0 {
				mu.Lock()
				measure()
				mu.Unlock()
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	measure() // the report itself, as returned
	return peak, rep
}

// The live heap of an audit does not grow with the number of objects, even
// when every object is a finding: ten times the objects, the same peak
// (within a slack far below what keeping one finding per object costs).
func TestAuditMemoryBounded(t *testing.T) {
	defer func(old int) { maxExportRoots = old }(maxExportRoots)
	maxExportRoots = 1000
	small, large := 15000, 150000
	if testing.Short() {
		small, large = 6000, 60000
	}
	peakSmall, repSmall := auditPeakHeap(t, small)
	peakLarge, repLarge := auditPeakHeap(t, large)
	t.Logf("peak live heap: %d objects %.1f MiB, %d objects %.1f MiB", small, float64(peakSmall)/(1<<20), large, float64(peakLarge)/(1<<20))

	for _, c := range []struct {
		rep *Report
		n   int
	}{{repSmall, small}, {repLarge, large}} {
		rep, third := c.rep, int64(c.n/3)
		if rep.Objects != int64(c.n) || rep.FindingCounts["plaintext-object"] != third || rep.FindingCounts["unknown-content"] != third {
			t.Errorf("%d objects: objects %d, counts %v", c.n, rep.Objects, rep.FindingCounts)
		}
		if rep.CountAtLeast(High) != int(2*third) || rep.FindingsOmitted == 0 {
			t.Errorf("%d objects: %d at or above high, %d omitted", c.n, rep.CountAtLeast(High), rep.FindingsOmitted)
		}
		if len(rep.Findings) > len(rep.FindingCounts)*DefaultMaxExamples {
			t.Errorf("%d objects: %d findings kept for %d codes", c.n, len(rep.Findings), len(rep.FindingCounts))
		}
	}
	// Keeping every finding would cost over 300 bytes each: 12 MB more for
	// the large run with -short, 30 MB without. Allow 4 MiB of noise.
	if peakLarge > peakSmall+4<<20 {
		t.Errorf("peak live heap grew from %.1f MiB (%d objects) to %.1f MiB (%d objects)", float64(peakSmall)/(1<<20), small, float64(peakLarge)/(1<<20), large)
	}
}

// BenchmarkAuditMemory reports the peak live heap of an audit of a million
// generated objects, every one a finding (go test -bench AuditMemory
// -benchtime 1x ./cmd/internal/audit).
func BenchmarkAuditMemory(b *testing.B) {
	for _, n := range []int{100000, 1000000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			var peak uint64
			for b.Loop() {
				p, rep := auditPeakHeap(b, n)
				peak = max(peak, p)
				if rep.Objects != int64(n) {
					b.Fatalf("objects %d", rep.Objects)
				}
			}
			b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
			b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "objects/s")
		})
	}
}
