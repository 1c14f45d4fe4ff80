package fhir_test

import (
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/ehrport/ehrport/fhir"
	"github.com/ehrport/ehrport/fhir/synth"
)

// The readers beside plain NDJSON (BenchmarkNDJSONRead): gzipped NDJSON and
// transaction Bundles, kept whole or split. Each reports resources/s and
// MB/s of the uncompressed input.

var (
	rdOnce              sync.Once
	rdGzip, rdBundles   string
	rdBundleN           int64
	rdBundleBytes       int64
	rdGzipN, rdGzipSize int64
)

// TestMain removes the benchmark data of this package (benchData's and
// readerData's), which outlives each benchmark by design.
func TestMain(m *testing.M) {
	code := m.Run()
	for _, d := range []string{benchDir, rdGzip, rdBundles} {
		if d != "" {
			os.RemoveAll(d)
		}
	}
	os.Exit(code)
}

func readerData(b *testing.B) {
	dir, lines, size := benchData(b)
	rdOnce.Do(func() {
		// Not b.TempDir: the data outlives the benchmark that makes it.
		var err error
		if rdGzip, err = os.MkdirTemp("", "fhir-bench-gz"); err != nil {
			b.Fatal(err)
		}
		files, _ := filepath.Glob(filepath.Join(dir, "*.ndjson"))
		for _, f := range files {
			if err := gzipFile(f, filepath.Join(rdGzip, filepath.Base(f)+".gz")); err != nil {
				b.Fatal(err)
			}
		}
		rdGzipN, rdGzipSize = int64(len(lines)), size
		if rdBundles, err = os.MkdirTemp("", "fhir-bench-bundles"); err != nil {
			b.Fatal(err)
		}
		if _, err := synth.WriteTransactionBundles(rdBundles, synth.Options{Patients: 500, Seed: 42}, 10); err != nil {
			b.Fatal(err)
		}
		w, err := fhir.NewWalker([]string{rdBundles}, fhir.WalkOptions{SplitBundles: true})
		if err != nil {
			b.Fatal(err)
		}
		rdBundleN = drain(b, w)
		bs, _ := filepath.Glob(filepath.Join(rdBundles, "*"))
		for _, f := range bs {
			st, _ := os.Stat(f)
			rdBundleBytes += st.Size()
		}
	})
}

func gzipFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	zw := gzip.NewWriter(out)
	if _, err := io.Copy(zw, in); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	return out.Close()
}

// drain reads every item; a Bundle kept whole is streamed entry by entry.
// It returns the resources read.
func drain(b *testing.B, w *fhir.Walker) int64 {
	defer w.Close()
	var n int64
	for {
		it, err := w.Next()
		if errors.Is(err, io.EOF) {
			return n
		}
		if err != nil {
			b.Fatal(err)
		}
		switch it.Kind {
		case fhir.KindBundle:
			if err := it.Bundle.Entries(func(*fhir.Entry) error { n++; return nil }); err != nil {
				b.Fatal(err)
			}
		case fhir.KindResource:
			n++
		default:
			b.Fatalf("%s: %v", it.Pos, it.Err)
		}
	}
}

// BenchmarkNDJSONGzipRead: the NDJSON of BenchmarkNDJSONRead, gzipped.
func BenchmarkNDJSONGzipRead(b *testing.B) {
	readerData(b)
	for b.Loop() {
		w, err := fhir.NewWalker([]string{rdGzip}, fhir.WalkOptions{})
		if err != nil {
			b.Fatal(err)
		}
		if n := drain(b, w); n != rdGzipN {
			b.Fatalf("%d resources, want %d", n, rdGzipN)
		}
	}
	report(b, rdGzipN, rdGzipSize)
}

// BenchmarkBundleRead: 50 transaction Bundles of 10 patients each, kept
// whole (streamed entry by entry) and split into resources.
func BenchmarkBundleRead(b *testing.B) {
	readerData(b)
	for _, split := range []bool{false, true} {
		name := "whole"
		if split {
			name = "split"
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				w, err := fhir.NewWalker([]string{rdBundles}, fhir.WalkOptions{SplitBundles: split})
				if err != nil {
					b.Fatal(err)
				}
				if n := drain(b, w); n != rdBundleN {
					b.Fatalf("%d resources, want %d", n, rdBundleN)
				}
			}
			report(b, rdBundleN, rdBundleBytes)
		})
	}
}
