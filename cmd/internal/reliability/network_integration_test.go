//go:build integration

package reliability

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/ehrport/ehrport/cmd/internal/export"
	"github.com/ehrport/ehrport/cmd/internal/faultproxy"
	"github.com/ehrport/ehrport/cmd/internal/testserver"
)

// netWorld is a source export on versitygw A and a target versitygw B,
// each reached through its own fault proxy (stores "clouda" and
// "cloudb"); "directa" and "directb" reach them without the proxies, for
// checking.
type netWorld struct {
	*world
	a, b   *testserver.Server
	pa, pb *faultproxy.Proxy
	objs   int // .ehr objects of the source export
}

func newNetWorld(t *testing.T, s uint64) *netWorld {
	w := &netWorld{world: newWorld(t)}
	w.a = testserver.Start(t, testserver.Versitygw)
	w.b = testserver.Start(t, testserver.Versitygw)
	var err error
	if w.pa, err = faultproxy.New(fmt.Sprintf("127.0.0.1:%d", w.a.Port), s); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.pa.Close() })
	if w.pb, err = faultproxy.New(fmt.Sprintf("127.0.0.1:%d", w.b.Port), s+1); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.pb.Close() })
	w.setenv(w.a.EnvAt("clouda", w.pa.Addr())...)
	w.setenv(w.b.EnvAt("cloudb", w.pb.Addr())...)
	w.setenv(w.a.Env("directa")...)
	w.setenv(w.b.Env("directb")...)
	for _, n := range []string{"CLOUDA", "CLOUDB", "DIRECTA", "DIRECTB"} {
		// A stalled connection is given up after 2 s (default 5 min).
		w.setenv("EHRPORT_STORE_"+n+"_PART_SIZE=5MiB", "EHRPORT_STORE_"+n+"_IDLE_TIMEOUT=2s")
	}
	w.bucket("directa:src")
	w.bucket("directb:dst")
	w.fixture(true)
	w.ok("export", "--from", "gen", "--to", "directa:src/x", "--keys", "k", "--split-resources", "10")
	w.objs = w.a.Committed("src", "x/", ".ehr")
	return w
}

func (w *netWorld) migrate(to string) result {
	return w.run("--json", "migrate", "--from", "clouda:src/x", "--to", to, "--part-size", "5MiB")
}

// checkReport holds a migration report to what the target really holds:
// every object the source's manifest lists is in exactly one of copied,
// skipped or failed, and every copied or skipped one is at the target with
// its size. It returns the keys reported failed.
func (w *world) checkReport(rep migrateReport, srcRef, directTo string) []string {
	w.t.Helper()
	ctx := context.Background()
	m, _, err := export.ReadManifest(ctx, w.store(srcRef))
	if err != nil {
		w.t.Fatal(err)
	}
	want := map[string]int64{}
	for _, e := range m.Extension.Ehrport.Objects {
		want[e.Key] = e.Size
	}
	seen := map[string]string{}
	var failed []string
	mark := func(key, list string) {
		if prev, ok := seen[key]; ok {
			w.t.Errorf("report: %s is both %s and %s", key, prev, list)
		}
		seen[key] = list
	}
	dst := w.store(directTo)
	for _, o := range rep.Copied {
		mark(o.Key, "copied")
	}
	for _, o := range rep.Skipped {
		mark(o.Key, "skipped")
	}
	for _, o := range rep.Failed {
		mark(o.Key, "failed")
		failed = append(failed, o.Key)
	}
	for key, size := range want {
		list, ok := seen[key]
		if !ok {
			w.t.Errorf("report: %s is in no list", key)
			continue
		}
		if list == "failed" {
			continue
		}
		oi, err := dst.Stat(ctx, key)
		if err != nil || oi.Size != size {
			w.t.Errorf("report: %s is %s, but the target holds %v bytes (%v), want %d", key, list, oi.Size, err, size)
		}
	}
	slices.Sort(failed)
	return failed
}

// outcome sorts a migration's end under a fault: recovered within the run
// (exit 0, manifest written), or stopped cleanly: exit 4, no manifest at
// the target, and either a report whose lists match the target exactly or,
// when it stopped before its plan was made, an error naming what failed.
// Anything else fails the test.
func (w *world) outcome(r result, srcRef, direct string) (string, migrateReport) {
	w.t.Helper()
	var rep migrateReport
	if r.Code == 4 && !strings.HasPrefix(strings.TrimSpace(r.Stdout), "{") {
		if !strings.Contains(r.Stderr, "ehrport: error: ") || !strings.Contains(r.Stderr, ":src/") && !strings.Contains(r.Stderr, ":dst/") {
			w.t.Fatalf("exit 4 before the plan, without an error naming the store and object:\n%s", r)
		}
		if w.hasManifest(direct) {
			w.t.Fatal("a manifest stands at the target after a failed migration")
		}
		return "stopped cleanly before copying (exit 4, the error names the object), then the rerun completed", rep
	}
	rep = parseMigrate(w.t, r)
	failed := w.checkReport(rep, srcRef, direct)
	switch {
	case r.Code == 0 && rep.ManifestWritten && len(failed) == 0:
		return "recovered by retries within the run", rep
	case r.Code == 4 && !rep.ManifestWritten && len(failed) > 0:
		if w.hasManifest(direct) {
			w.t.Fatal("a manifest stands at the target after a failed migration")
		}
		return fmt.Sprintf("stopped cleanly (exit 4, %d failed, listed exactly), then the rerun completed", len(failed)), rep
	}
	w.t.Fatalf("exit %d, manifest %v, failed %v: want 0, or 4 with the failures listed\n%s", r.Code, rep.ManifestWritten, failed, r)
	return "", rep
}

// Faults between ehrport and the servers, through the proxy: each run
// must recover with its retries, or stop cleanly with exit 4, no manifest
// and a report that lists exactly what failed; a rerun without the fault
// then completes. Verification through a faulty network must never report
// corruption that is not there.
func TestIntegrationNetwork(t *testing.T) {
	s := seed(t)
	w := newNetWorld(t, s)
	networkFaults(t, w, s)
	t.Run("outage", func(t *testing.T) { w.t = t; networkOutage(t, w, s) })
	t.Run("export", func(t *testing.T) { w.t = t; networkExport(t, w, s) })
}

func networkFaults(t *testing.T, w *netWorld, s uint64) {
	cases := []struct {
		name  string
		proxy *faultproxy.Proxy
		fault faultproxy.Fault
	}{
		{"latency 10ms per chunk, both ways", nil, faultproxy.Fault{Latency: 10e6}},
		{"connection reset mid-download (source)", w.pa, faultproxy.Fault{Break: faultproxy.Reset, Dir: faultproxy.Down, AfterMin: 8 << 10, AfterMax: 64 << 10, Limit: 3}},
		{"connection reset mid-upload (target)", w.pb, faultproxy.Fault{Break: faultproxy.Reset, Dir: faultproxy.Up, AfterMin: 8 << 10, AfterMax: 64 << 10, Limit: 3}},
		{"response body truncated (source)", w.pa, faultproxy.Fault{Break: faultproxy.Truncate, Dir: faultproxy.Down, AfterMin: 8 << 10, AfterMax: 64 << 10, Limit: 3}},
		{"stall part-way through a response (source)", w.pa, faultproxy.Fault{Break: faultproxy.Stall, Dir: faultproxy.Down, AfterMin: 8 << 10, AfterMax: 64 << 10, Limit: 1}},
		{"stall part-way through an upload (target)", w.pb, faultproxy.Fault{Break: faultproxy.Stall, Dir: faultproxy.Up, AfterMin: 8 << 10, AfterMax: 64 << 10, Limit: 1}},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w.t = t
			rec := newRecord(t, "fault", "network: "+tc.name, s)
			ref := fmt.Sprintf("cloudb:dst/n%d", i)
			direct := fmt.Sprintf("directb:dst/n%d", i)
			for _, p := range []*faultproxy.Proxy{w.pa, w.pb} {
				if tc.proxy == nil || tc.proxy == p {
					p.Set(tc.fault)
				}
			}
			before := w.pa.Stats().Injected + w.pb.Stats().Injected
			conns := w.pa.Stats().Conns + w.pb.Stats().Conns
			r := w.migrate(ref)
			injected := w.pa.Stats().Injected + w.pb.Stats().Injected - before
			how, rep := w.outcome(r, "directa:src/x", direct)
			if tc.fault.Break == faultproxy.None {
				// One slow run: every connection of it was delayed.
				how = fmt.Sprintf("%d connections delayed; %s", w.pa.Stats().Conns+w.pb.Stats().Conns-conns, how)
				injected = 1
			}
			rec.Injected = injected
			for _, f := range rep.Failed {
				t.Logf("failed: %s: %s", f.Key, f.Error)
			}
			t.Logf("%d faults injected; %s", injected, how)
			heal := func() {
				for _, p := range []*faultproxy.Proxy{w.pa, w.pb} {
					p.Set(faultproxy.Fault{})
				}
			}
			heal()
			if r.Code != 0 {
				if r2 := w.migrate(ref); r2.Code != 0 {
					t.Fatalf("the rerun without the fault failed: %s", r2)
				}
			}
			tl := w.verifyDeep(direct, "directa:src/x")
			rec.addTally(tl)
			if !tl.clean() {
				t.Fatalf("verify --deep --against the source: %+v", tl)
			}
			// Verification through the same fault, of the complete copy:
			// a network fault is never reported as corruption.
			if tc.proxy != w.pa {
				tc.fault.Dir = faultproxy.Down // verify downloads
				w.pb.Set(tc.fault)
				v := w.run("verify", "--at", ref, "--keys", "k", "--deep")
				heal()
				if v.Code != 0 && v.Code != 4 {
					t.Errorf("verify --deep through the fault exited %d, want 0 or 4 (a network fault is not corruption)\n%s", v.Code, v)
				}
			}
			rec.Recovered = injected
			rec.How = how
		})
	}
}

// The target becomes unreachable part-way (every connection reset) and
// stays so: the migration must stop within its retry budget with exit 4,
// write no manifest, and list exactly the objects it did not prove; once
// the network heals, the same command finishes the job.
func networkOutage(t *testing.T, w *netWorld, s uint64) {
	rec := newRecord(t, "fault", "network: target unreachable part-way, for good", s)
	rng := newRand(s)
	at := 1 + rng.IntN(w.objs-1)
	p := w.start("--json", "migrate", "--from", "clouda:src/x", "--to", "cloudb:dst/out", "--part-size", "5MiB")
	if until(p, func() bool { return w.b.Committed("dst", "out/", ".ehr") >= at }) {
		w.pb.Set(faultproxy.Fault{Break: faultproxy.Reset, Dir: faultproxy.Up})
		w.pb.CloseConns()
	}
	r := p.wait()
	rec.Injected = 1
	rep := parseMigrate(t, r)
	if r.Code != 4 || rep.ManifestWritten || w.hasManifest("directb:dst/out") {
		t.Fatalf("outage after %d objects: exit %d, manifest %v; want 4 and no manifest\n%s", at, r.Code, rep.ManifestWritten, r)
	}
	failed := w.checkReport(rep, "directa:src/x", "directb:dst/out")
	if len(failed) == 0 {
		t.Fatal("the report lists no failure")
	}
	t.Logf("outage after %d of %d objects: exit 4 in %s, %d listed as failed", at, w.objs, r.Took.Round(1e6), len(failed))
	w.pb.Set(faultproxy.Fault{})
	r2 := w.migrate("cloudb:dst/out")
	rep2 := parseMigrate(t, r2)
	if r2.Code != 0 || !rep2.ManifestWritten {
		t.Fatalf("rerun after the outage: %s", r2)
	}
	// The rerun sent what the first run had not proven, and no more than
	// that plus what the target had committed as the network went.
	if len(rep2.Copied) > len(failed)+2 {
		t.Errorf("the rerun copied %d objects; the first run reported %d failed", len(rep2.Copied), len(failed))
	}
	tl := w.verifyDeep("directb:dst/out", "directa:src/x")
	rec.addTally(tl)
	if !tl.clean() {
		t.Fatalf("verify: %+v", tl)
	}
	rec.Recovered = 1
	rec.How = fmt.Sprintf("exit 4 after %s with %d objects listed as failed, no manifest; the rerun copied %d and completed", r.Took.Round(1e8), len(failed), len(rep2.Copied))
}

// Exports through a target whose connections reset mid-upload: an export
// either completes or stops with exit 4 and no manifest; rerunning it then
// completes.
func networkExport(t *testing.T, w *netWorld, s uint64) {
	rec := newRecord(t, "fault", "network: connection reset mid-upload during an export", s)
	before := w.pb.Stats().Injected
	w.pb.Set(faultproxy.Fault{Break: faultproxy.Reset, Dir: faultproxy.Up, AfterMin: 4 << 10, AfterMax: 64 << 10, Limit: 2})
	r := w.run(exportArgs("cloudb:dst/e")...)
	rec.Injected = w.pb.Stats().Injected - before
	w.pb.Set(faultproxy.Fault{})
	switch {
	case r.Code == 0:
		rec.How = "recovered by retries within the run"
	case r.Code == 4:
		if !strings.Contains(r.Stderr, "cloudb:dst/e") {
			t.Errorf("the error does not name the object that failed:\n%s", r.Stderr)
		}
		if w.hasManifest("directb:dst/e") {
			t.Fatal("a manifest stands after an export that failed")
		}
		if r2 := w.run(exportArgs("cloudb:dst/e")...); r2.Code != 0 {
			t.Fatalf("rerun: %s", r2)
		}
		rec.How = "stopped cleanly (exit 4, no manifest), then the rerun completed"
	default:
		t.Fatalf("export through resets exited %d, want 0 or 4\n%s", r.Code, r)
	}
	tl := w.verifyDeep("directb:dst/e", "")
	_, rtl := w.restoreAndCompare("directb:dst/e", "gen")
	rec.addTally(tl)
	rec.addTally(rtl)
	if !tl.clean() || !rtl.clean() {
		t.Fatalf("verify %+v, restore %+v", tl, rtl)
	}
	rec.Recovered = rec.Injected
}
