//go:build integration

package reliability

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ehrport/ehrport/cmd/internal/testserver"
)

// exportArgs export the world's data in small parts, so an export makes
// dozens of objects and a kill can land between any two of them.
func exportArgs(to string) []string {
	return []string{"export", "--from", "gen", "--to", to, "--keys", "k", "--split-resources", "25"}
}

// The export target (versitygw) is killed with SIGKILL at a random point
// of an export, then restarted. The interrupted export must fail with exit
// 4 and leave no manifest; rerunning the same command must complete, and
// the export must verify deep and restore to exactly the input: nothing
// lost, corrupted or duplicated.
func TestIntegrationKillExportTarget(t *testing.T) {
	n, s := rounds(t), seed(t)
	rng := newRand(s)
	rec := newRecord(t, "fault", "server killed (SIGKILL) mid-export, restarted: target versitygw", s)
	rec.How = "kill after a random number of committed objects; rerun the same command"

	w := newWorld(t)
	srv := testserver.Start(t, testserver.Versitygw)
	w.setenv(srv.Env("cloudb")...)
	w.bucket("cloudb:exp")
	w.fixture(false)
	// A complete export first: how many objects one writes.
	w.ok(exportArgs("cloudb:exp/ref")...)
	total := srv.Committed("exp", "ref/", ".ehr")
	if total < 10 {
		t.Fatalf("the reference export wrote %d objects; the loop needs more kill points", total)
	}

	atManifest := 0
	for round, attempts := 0, 0; round < n; attempts++ {
		if attempts >= 2*n {
			t.Fatalf("only %d of %d kills landed part-way in %d attempts", round, n, attempts)
		}
		ref := fmt.Sprintf("cloudb:exp/r%d", attempts)
		prefix := fmt.Sprintf("r%d/", attempts)
		at := 1 + rng.IntN(total-1)
		jitter := time.Duration(rng.IntN(20)) * time.Millisecond
		p := w.start(exportArgs(ref)...)
		committed := committedAt(srv, "exp", prefix)
		hit := until(p, func() bool { return committed() >= at })
		if hit {
			time.Sleep(jitter)
			srv.Kill()
		}
		r := p.wait()
		if !hit || r.Code == 0 {
			t.Logf("attempt %d: the export finished before the kill point (%d objects): not counted", attempts, at)
			if !srv.Running() {
				srv.Restart()
			}
			continue
		}
		round++
		rec.Injected++
		t.Logf("round %d: killed at %d of %d objects (+%s, %d committed); export exited %d", round, at, total, jitter, committed(), r.Code)
		if r.Code != 4 {
			t.Errorf("round %d: the interrupted export exited %d, want 4 (storage)\n%s", round, r.Code, r)
		}
		srv.Restart()
		r2 := w.run(exportArgs(ref)...)
		switch {
		case w.hasManifest(ref) && r.Code == 4 && r2.Code == 2 && strings.Contains(r2.Stderr, "already holds a complete export"):
			// The server committed the manifest, written last, and died
			// before answering: the export is complete (verified below),
			// and the rerun refuses to write over it.
			atManifest++
		case r2.Code != 0:
			t.Errorf("round %d: the rerun failed: %s", round, r2)
			continue
		}
		tl := w.verifyDeep(ref, "")
		nres, rtl := w.restoreAndCompare(ref, "gen")
		rec.addTally(tl)
		rec.addTally(rtl)
		if !tl.clean() || !rtl.clean() {
			t.Errorf("round %d: verify %+v; restore against the input (%d resources) %+v", round, tl, nres, rtl)
			continue
		}
		rec.Recovered++
	}
	if atManifest > 0 {
		rec.How += fmt.Sprintf("; %d kill(s) came just after the server committed the manifest (the export was complete, and the rerun refused to overwrite it)", atManifest)
	}
}

// migrateArgs copies the source export in 5 MiB ranges, so the large
// object is a multipart upload that a kill can interrupt.
func migrateArgs(to string) []string {
	return []string{"--json", "migrate", "--from", "clouda:src/x", "--to", to, "--part-size", "5MiB"}
}

type migrateReport struct {
	Planned int `json:"planned"`
	Copied  []struct {
		Key string `json:"key"`
	} `json:"copied"`
	Skipped []struct {
		Key string `json:"key"`
	} `json:"skipped"`
	Failed []struct {
		Key   string `json:"key"`
		Error string `json:"error"`
	} `json:"failed"`
	ManifestWritten bool `json:"manifest_written"`
}

func parseMigrate(t testing.TB, r result) migrateReport {
	t.Helper()
	var rep migrateReport
	if err := json.Unmarshal([]byte(r.Stdout), &rep); err != nil {
		t.Fatalf("migrate printed no JSON report: %v\n%s", err, r)
	}
	return rep
}

// A migration from versitygw (cloud A) to MinIO (cloud B) loses one of
// them to SIGKILL at a random point, and gets it back at once (restarted
// with its data). The run either rides the outage out with its retries
// (exit 0) or stops cleanly (exit 4, no manifest at the target); rerunning
// the same command then completes, and the target verifies deep and
// against the source, object by object.
func TestIntegrationKillMigrate(t *testing.T) {
	w := newWorld(t)
	a := testserver.Start(t, testserver.Versitygw)
	b := testserver.Start(t, testserver.MinIO)
	w.setenv(a.Env("clouda")...)
	w.setenv(b.Env("cloudb")...)
	w.setenv("EHRPORT_STORE_CLOUDA_PART_SIZE=5MiB", "EHRPORT_STORE_CLOUDB_PART_SIZE=5MiB")
	w.bucket("clouda:src")
	w.bucket("cloudb:dst")
	w.fixture(true)
	w.ok("export", "--from", "gen", "--to", "clouda:src/x", "--keys", "k", "--split-resources", "10")
	total := a.Committed("src", "x/", ".ehr")

	for _, tc := range []struct {
		role   string
		victim *testserver.Server
	}{{"target", b}, {"source", a}} {
		t.Run(tc.role, func(t *testing.T) {
			n, s := rounds(t), seed(t)
			rng := newRand(s)
			rec := newRecord(t, "fault", fmt.Sprintf("server killed (SIGKILL) mid-migration, restarted: %s %s", tc.role, tc.victim.Kind), s)
			w.t = t
			inRun, reran := 0, 0
			for round, attempts := 0, 0; round < n; attempts++ {
				if attempts >= 2*n {
					t.Fatalf("only %d of %d kills landed part-way in %d attempts", round, n, attempts)
				}
				prefix := fmt.Sprintf("%s%d/", tc.role, attempts)
				ref := "cloudb:dst/" + strings.TrimSuffix(prefix, "/")
				at := 1 + rng.IntN(total-1)
				jitter := time.Duration(rng.IntN(20)) * time.Millisecond
				p := w.start(migrateArgs(ref)...)
				committed := committedAt(b, "dst", prefix)
				hit := until(p, func() bool { return committed() >= at })
				if hit {
					time.Sleep(jitter)
					tc.victim.Kill()
					// Back at once, as after a crash: the run may ride it out.
					tc.victim.Restart()
				}
				r := p.wait()
				if !hit {
					t.Logf("attempt %d: the migration finished before the kill point (%d objects): not counted", attempts, at)
					continue
				}
				round++
				rec.Injected++
				t.Logf("round %d: killed the %s after %d of %d objects at the target; migrate exited %d", round, tc.role, at, total, r.Code)
				how, _ := w.outcome(r, "clouda:src/x", ref)
				if r.Code == 0 {
					inRun++
				}
				t.Logf("round %d: %s", round, how)
				r2 := w.run(migrateArgs(ref)...)
				rep2 := parseMigrate(t, r2)
				if r2.Code != 0 || !rep2.ManifestWritten {
					t.Errorf("round %d: the rerun did not complete: %s", round, r2)
					continue
				}
				if r.Code != 0 {
					reran++
				}
				tl := w.verifyDeep(ref, "clouda:src/x")
				rec.addTally(tl)
				if !tl.clean() {
					t.Errorf("round %d: verify --deep --against the source: %+v", round, tl)
					continue
				}
				rec.Recovered++
			}
			rec.How = fmt.Sprintf("kill after a random number of objects committed at the target, restart at once; %d rode it out with retries, %d finished by rerunning", inRun, reran)
		})
	}
}
