//go:build integration

package migrate

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime/debug"
	"strconv"
	"testing"

	"github.com/ehrport/ehrport/cmd/internal/export"
	"github.com/ehrport/ehrport/cmd/internal/verify"
	"github.com/ehrport/ehrport/storage"
)

// BenchmarkMigrateLarge migrates large objects MinIO -> versitygw on the
// test bed in-process, so that the CPU and allocation profiles of the copy
// path can be taken with the test tool's own flags:
//
//	set -a; . .cache/testbed/env; set +a
//	go test -tags integration -run '^$' -bench MigrateLarge -benchtime 3x \
//	    -cpuprofile cpu.out -memprofile mem.out ./cmd/internal/migrate/
//
// EHRPORT_BENCH_LARGE_MIB (256) and EHRPORT_BENCH_LARGE_N (4) size the set,
// which is made once per source bucket: EHRPORT_BENCH_SRC_BUCKET names a
// bucket on cloud A to reuse across runs (made when missing). The Go
// runtime gets the CLI's soft memory limit, as `ehrport migrate` has it.
// With EHRPORT_BENCH_VERIFY=1 each copy is then checked as `verify
// --against` does (untimed, but in the profiles). Copies are deleted after
// each round.
func BenchmarkMigrateLarge(b *testing.B) {
	mib := envInt(b, "EHRPORT_BENCH_LARGE_MIB", 256)
	n := envInt(b, "EHRPORT_BENCH_LARGE_N", 4)
	benchMigrate(b, fmt.Sprintf("large-%dx%d", n, mib), n, int64(mib)<<20)
}

// BenchmarkMigrateSmall is BenchmarkMigrateLarge for many small objects:
// EHRPORT_BENCH_SMALL_N (2000) objects of EHRPORT_BENCH_SMALL_BYTES (20000),
// the shape of issue 7's small set, where per-request costs dominate.
func BenchmarkMigrateSmall(b *testing.B) {
	n := envInt(b, "EHRPORT_BENCH_SMALL_N", 2000)
	size := envInt(b, "EHRPORT_BENCH_SMALL_BYTES", 20000)
	benchMigrate(b, fmt.Sprintf("small-%dx%d", n, size), n, int64(size))
	b.ReportMetric(float64(n*b.N)/b.Elapsed().Seconds(), "objects/s")
}

// benchMigrate migrates n objects of size bytes from cloud A (made once
// under prefix in EHRPORT_BENCH_SRC_BUCKET) to a fresh prefix of cloud B per
// round, as the two benchmarks above describe.
func benchMigrate(b *testing.B, prefix string, n int, size int64) {
	cfg := testbed(b)
	bucket := os.Getenv("EHRPORT_BENCH_SRC_BUCKET")
	if bucket == "" {
		bucket = randomName("bench-src-")
	}
	src := s3Location(b, cfg, "clouda", bucket, prefix)
	total := randomExport(b, src, n, size)
	dstBucket := randomName("bench-dst-")
	if os.Getenv("GOMEMLIMIT") == "" {
		defer debug.SetMemoryLimit(debug.SetMemoryLimit(200 << 20))
	}
	ctx := context.Background()
	b.SetBytes(total)
	b.ResetTimer()
	for i := range b.N {
		dst := s3Location(b, cfg, "cloudb", dstBucket, "r"+strconv.Itoa(i))
		rep, err := Run(ctx, opts(b, src, dst))
		if err != nil {
			b.Fatal(err)
		}
		if !rep.Complete() || len(rep.Skipped) != 0 {
			b.Fatalf("incomplete: failed %+v, skipped %d", rep.Failed, len(rep.Skipped))
		}
		if os.Getenv("EHRPORT_BENCH_VERIFY") != "" {
			b.StopTimer()
			vrep, err := verify.Run(ctx, verify.Options{Store: dst})
			if err != nil {
				b.Fatal(err)
			}
			cmp, err := verify.CompareByManifest(ctx, vrep, verify.CompareOptions{Store: dst, Reference: src})
			if err != nil || !cmp.OK() {
				b.Fatalf("verify --against: %v %+v", err, cmp)
			}
		}
		// A large copy is a GiB or so: the shared test bed's disk is not.
		b.StopTimer()
		removeAll(b, dst)
		b.StartTimer()
	}
}

// removeAll deletes every object at st: a GiB-scale copy left behind fills
// the shared test bed's disk.
func removeAll(b testing.TB, st storage.Store) {
	b.Helper()
	for oi, err := range st.List(context.Background(), "") {
		if err != nil {
			b.Fatal(err)
		}
		if err := st.Delete(context.Background(), oi.Key); err != nil {
			b.Fatal(err)
		}
	}
}

// opts are the defaults, or what EHRPORT_BENCH_CONCURRENCY, _PARALLEL,
// _LARGE_IN_FLIGHT, _PART_MIB and _SINGLE_PUT_MAX_MIB (-1: parts) say, to
// compare settings.
func opts(b *testing.B, src, dst storage.Store) Options {
	o := Options{From: src, To: dst}
	o.Concurrency = envInt(b, "EHRPORT_BENCH_CONCURRENCY", 0)
	o.Parallel = envInt(b, "EHRPORT_BENCH_PARALLEL", 0)
	o.LargeInFlight = envInt(b, "EHRPORT_BENCH_LARGE_IN_FLIGHT", 0)
	o.PartSize = int64(envInt(b, "EHRPORT_BENCH_PART_MIB", 0)) << 20
	o.SinglePutMax = int64(envInt(b, "EHRPORT_BENCH_SINGLE_PUT_MAX_MIB", 0)) << 20
	return o
}

func envInt(b *testing.B, name string, def int) int {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.Atoi(s)
	if err != nil || (v <= 0 && v != -1) {
		b.Fatalf("%s=%q: want a positive number (or -1)", name, s)
	}
	return v
}

// randomExport makes n objects of size pseudo-random bytes and their
// manifest at st, unless its manifest is already there. The bytes stream
// from a seeded generator twice (hash, then upload), so no object is held
// in memory.
func randomExport(b *testing.B, st storage.Store, n int, size int64) int64 {
	b.Helper()
	ctx := context.Background()
	total := int64(n) * size
	if _, err := st.Stat(ctx, export.ManifestKey); err == nil {
		return total
	}
	var m export.Manifest
	m.Extension.Ehrport.FormatVersion = 1
	m.Extension.Ehrport.ExportID = "e-bench"
	for i := range n {
		key := fmt.Sprintf("Binary.%03d.ndjson.ehr", i)
		gen := func() io.Reader { return io.LimitReader(rand.NewChaCha8([32]byte{byte(i)}), size) }
		h := sha256.New()
		if _, err := io.Copy(h, gen()); err != nil {
			b.Fatal(err)
		}
		sum := h.Sum(nil)
		if err := st.Put(ctx, key, gen(), size, storage.PutOptions{SHA256: sum}); err != nil {
			b.Fatal(err)
		}
		m.Extension.Ehrport.Objects = append(m.Extension.Ehrport.Objects, export.ObjectEntry{Key: key, Path: key[:len(key)-4], Kind: "data", Type: "Binary", Size: size, SHA256: hex.EncodeToString(sum)})
	}
	mb, _ := json.MarshalIndent(m, "", "  ")
	msum := sha256.Sum256(mb)
	if err := st.Put(ctx, export.ManifestKey, bytes.NewReader(mb), int64(len(mb)), storage.PutOptions{SHA256: msum[:]}); err != nil {
		b.Fatal(err)
	}
	return total
}
