//go:build integration

package reliability

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/ehrport/ehrport/cmd/internal/faultproxy"
	"github.com/ehrport/ehrport/cmd/internal/testserver"
)

// SIGINT and SIGTERM part-way through an export, a migration and a
// restore, against real servers: exit 130 and the "interrupted" line;
// nothing half-written made visible (no manifest for an unfinished export
// or migration, no restored file that is not complete, no temporary file
// left); and the same command, run again, completes.
func TestIntegrationSignals(t *testing.T) {
	s := seed(t)
	rng := newRand(s)
	w := newWorld(t)
	a := testserver.Start(t, testserver.Versitygw)
	b := testserver.Start(t, testserver.Versitygw)
	// Through a slow network, so that "part-way" lasts long enough to hit.
	pa, err := faultproxy.New(fmt.Sprintf("127.0.0.1:%d", a.Port), s)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pa.Close() })
	pa.Set(faultproxy.Fault{Latency: 2e6})
	w.setenv(a.EnvAt("clouda", pa.Addr())...)
	w.setenv(a.Env("directa")...)
	w.setenv(b.Env("cloudb")...)
	w.bucket("directa:sig")
	w.bucket("cloudb:sig")
	w.fixture(false)
	w.ok("export", "--from", "gen", "--to", "directa:sig/src", "--keys", "k", "--split-resources", "5")
	total := a.Committed("sig", "src/", ".ehr")
	w.ok("restore", "--from", "directa:sig/src", "--keys", "k", "--to", "reference")
	reference := files(t, w.path("reference"))

	type step struct {
		name  string
		args  func(i int) []string
		count func(i int) int // progress seen from outside
		check func(t *testing.T, i int)
		after func(t *testing.T, i int) tally
	}
	steps := []step{
		{
			name: "export",
			args: func(i int) []string {
				return []string{"export", "--from", "gen", "--to", fmt.Sprintf("clouda:sig/e%d", i), "--keys", "k", "--split-resources", "5"}
			},
			count: func(i int) int { return a.Committed("sig", fmt.Sprintf("e%d/", i), ".ehr") },
			check: func(t *testing.T, i int) {
				if w.hasManifest(fmt.Sprintf("directa:sig/e%d", i)) {
					t.Error("a manifest stands after an interrupted export")
				}
			},
			after: func(t *testing.T, i int) tally {
				tl := w.verifyDeep(fmt.Sprintf("directa:sig/e%d", i), "")
				_, rtl := w.restoreAndCompare(fmt.Sprintf("directa:sig/e%d", i), "gen")
				tl.Lost, tl.Corrupted, tl.Duplicated = tl.Lost+rtl.Lost, tl.Corrupted+rtl.Corrupted, tl.Duplicated+rtl.Duplicated
				tl.Other = append(tl.Other, rtl.Other...)
				return tl
			},
		},
		{
			name: "migrate",
			args: func(i int) []string {
				return []string{"migrate", "--from", "clouda:sig/src", "--to", fmt.Sprintf("cloudb:sig/m%d", i)}
			},
			count: func(i int) int { return b.Committed("sig", fmt.Sprintf("m%d/", i), ".ehr") },
			check: func(t *testing.T, i int) {
				if w.hasManifest(fmt.Sprintf("cloudb:sig/m%d", i)) {
					t.Error("a manifest stands after an interrupted migration")
				}
			},
			after: func(t *testing.T, i int) tally {
				return w.verifyDeep(fmt.Sprintf("cloudb:sig/m%d", i), "directa:sig/src")
			},
		},
		{
			name: "restore",
			args: func(i int) []string {
				return []string{"restore", "--from", "clouda:sig/src", "--keys", "k", "--to", fmt.Sprintf("r%d", i), "--concurrency", "2"}
			},
			count: func(i int) int { return len(files(t, w.path(fmt.Sprintf("r%d", i)))) },
			check: func(t *testing.T, i int) {
				// Every file there is complete (the reference's bytes), and no
				// temporary file is left.
				dir := w.path(fmt.Sprintf("r%d", i))
				for _, f := range files(t, dir) {
					if strings.HasPrefix(filepath.Base(f), ".") {
						t.Errorf("temporary file left: %s", f)
						continue
					}
					got, _ := os.ReadFile(filepath.Join(dir, f))
					want, err := os.ReadFile(w.path(filepath.Join("reference", f)))
					if err != nil || !bytes.Equal(got, want) {
						t.Errorf("%s stands under its final name but is not the complete file (%d bytes, want %d)", f, len(got), len(want))
					}
				}
			},
			after: func(t *testing.T, i int) tally {
				var tl tally
				got := files(t, w.path(fmt.Sprintf("r%d", i)))
				if strings.Join(got, ",") != strings.Join(reference, ",") {
					tl.Other = append(tl.Other, fmt.Sprintf("restored files %v, want %v", got, reference))
				}
				for _, f := range got {
					g, _ := os.ReadFile(w.path(filepath.Join(fmt.Sprintf("r%d", i), f)))
					r, _ := os.ReadFile(w.path(filepath.Join("reference", f)))
					if !bytes.Equal(g, r) {
						tl.Corrupted++
					}
				}
				return tl
			},
		},
	}
	for _, st := range steps {
		for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM} {
			sigName := map[syscall.Signal]string{syscall.SIGINT: "SIGINT", syscall.SIGTERM: "SIGTERM"}[sig]
			t.Run(st.name+" "+sigName, func(t *testing.T) {
				w.t = t
				rec := newRecord(t, "fault", fmt.Sprintf("signal: %s part-way through %s", sigName, st.name), s)
				rec.How = "signal after a random number of objects; rerun the same command"
				for attempt := 0; ; attempt++ {
					if attempt == 3 {
						t.Fatal("the signal never landed part-way in 3 attempts")
					}
					i := int(rng.Int64N(1 << 40))
					at := 1 + rng.IntN(max(1, total*2/3))
					p := w.start(st.args(i)...)
					hit := until(p, func() bool { return st.count(i) >= at })
					if hit {
						p.signal(sig)
					}
					r := p.wait()
					if !hit || r.Code == 0 {
						t.Logf("finished before the signal landed (%d objects): not counted", at)
						continue
					}
					rec.Injected++
					if r.Code != 130 || !strings.Contains(r.Stderr, "ehrport: interrupted") {
						t.Errorf("%s after %d objects: exit %d, want 130 and the interrupted line\n%s", sig, at, r.Code, r)
					}
					st.check(t, i)
					if r2 := w.run(st.args(i)...); r2.Code != 0 {
						t.Fatalf("rerun: %s", r2)
					}
					tl := st.after(t, i)
					rec.addTally(tl)
					if !tl.clean() {
						t.Fatalf("after the rerun: %+v", tl)
					}
					rec.Recovered++
					return
				}
			})
		}
	}
}
