package fhir_test

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ehrport/ehrport/fhir"
	"github.com/ehrport/ehrport/fhir/synth"
)

var (
	benchOnce  sync.Once
	benchDir   string
	benchLines [][]byte
	benchBytes int64
)

// benchData writes synth NDJSON for 2,000 patients (about 37,000 resources)
// once per test binary and keeps the lines in memory.
func benchData(b *testing.B) (string, [][]byte, int64) {
	benchOnce.Do(func() {
		dir, err := os.MkdirTemp("", "fhir-bench")
		if err != nil {
			b.Fatal(err)
		}
		if _, err := synth.WriteNDJSON(dir, synth.Options{Patients: 2000, Seed: 42}); err != nil {
			b.Fatal(err)
		}
		files, _ := filepath.Glob(filepath.Join(dir, "*.ndjson"))
		for _, f := range files {
			fh, _ := os.Open(f)
			sc := bufio.NewScanner(fh)
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				line := append([]byte(nil), sc.Bytes()...)
				benchLines = append(benchLines, line)
				benchBytes += int64(len(line) + 1)
			}
			fh.Close()
		}
		benchDir = dir
	})
	return benchDir, benchLines, benchBytes
}

func report(b *testing.B, resources, size int64) {
	s := b.Elapsed().Seconds()
	b.ReportMetric(float64(resources)*float64(b.N)/s, "resources/s")
	b.ReportMetric(float64(size)*float64(b.N)/s/1e6, "MB/s")
}

// reportCPU adds the process CPU time per op since cpu0 (processCPU).
func reportCPU(b *testing.B, cpu0 time.Duration) {
	if cpu0 > 0 {
		b.ReportMetric((processCPU()-cpu0).Seconds()/float64(b.N), "cpu-s/op")
	}
}

// BenchmarkNDJSONRead: walker only (read, validate JSON syntax, compact).
func BenchmarkNDJSONRead(b *testing.B) {
	dir, lines, size := benchData(b)
	b.ResetTimer()
	cpu0 := processCPU()
	for i := 0; i < b.N; i++ {
		w, _ := fhir.NewWalker([]string{dir}, fhir.WalkOptions{})
		n := 0
		for {
			_, err := w.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			n++
		}
		if n != len(lines) {
			b.Fatalf("%d items, want %d", n, len(lines))
		}
	}
	reportCPU(b, cpu0)
	report(b, int64(len(lines)), size)
}

func benchValidate(b *testing.B, o fhir.ValidatorOptions) {
	_, lines, size := benchData(b)
	v := fhir.NewValidator(o)
	b.ResetTimer()
	cpu0 := processCPU()
	for i := 0; i < b.N; i++ {
		for _, l := range lines {
			if r := v.Check(l, fhir.Position{File: "x", Entry: -1}, fhir.CheckContext{}); !r.Valid() {
				b.Fatal(r.Findings)
			}
		}
	}
	reportCPU(b, cpu0)
	report(b, int64(len(lines)), size)
}

// BenchmarkValidate: full per-resource validation, typed model included.
func BenchmarkValidate(b *testing.B) { benchValidate(b, fhir.ValidatorOptions{}) }

// BenchmarkValidateNoTyped: the generated top-level checks and the
// streaming fact scan only, without the samply typed model.
func BenchmarkValidateNoTyped(b *testing.B) {
	benchValidate(b, fhir.ValidatorOptions{SkipTypedModel: true})
}

// BenchmarkExport: walker + checker (validation, duplicates, references),
// one goroutine, as the exporter will run it.
func BenchmarkExport(b *testing.B) {
	dir, lines, size := benchData(b)
	b.ResetTimer()
	cpu0 := processCPU()
	for i := 0; i < b.N; i++ {
		w, _ := fhir.NewWalker([]string{dir}, fhir.WalkOptions{})
		c := fhir.NewChecker(fhir.CheckerOptions{})
		for {
			it, err := w.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
			if _, err := c.Item(it); err != nil {
				b.Fatal(err)
			}
		}
		if err := c.Finish(); err != nil {
			b.Fatal(err)
		}
	}
	reportCPU(b, cpu0)
	report(b, int64(len(lines)), size)
}

var _ = bytes.MinRead

// BenchmarkExportParallel: the same through Checker.Run on all cores.
func BenchmarkExportParallel(b *testing.B) {
	dir, lines, size := benchData(b)
	b.ResetTimer()
	cpu0 := processCPU()
	for i := 0; i < b.N; i++ {
		w, _ := fhir.NewWalker([]string{dir}, fhir.WalkOptions{})
		c := fhir.NewChecker(fhir.CheckerOptions{})
		n := 0
		if err := c.Run(w, 0, func(it *fhir.Item, act fhir.Action) error { n++; return nil }); err != nil {
			b.Fatal(err)
		}
		if err := c.Finish(); err != nil {
			b.Fatal(err)
		}
		if n != len(lines) {
			b.Fatalf("%d items", n)
		}
	}
	reportCPU(b, cpu0)
	report(b, int64(len(lines)), size)
}
