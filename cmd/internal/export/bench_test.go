package export

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkExportLocal exports generated data to a local folder store with
// full validation, and reports resources/s and plaintext MB/s.
func BenchmarkExportLocal(b *testing.B) {
	src, n := genNDJSON(b, benchPatients)
	var size int64
	files, _ := filepath.Glob(filepath.Join(src, "*.ndjson"))
	for _, f := range files {
		st, _ := os.Stat(f)
		size += st.Size()
	}
	k := newTestKeys(b)
	b.SetBytes(size)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		st := localStore(b)
		if _, err := k.exportOpts(st, src).Run(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "resources/s")
}

// benchPatients is sized so that one run exports about 37,000 resources.
const benchPatients = 2000
