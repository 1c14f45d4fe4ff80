//go:build integration

package reliability

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ehrport/ehrport/cmd/internal/export"
	"github.com/ehrport/ehrport/cmd/internal/testserver"
	"github.com/ehrport/ehrport/storage/storetest"
)

// verifyFindings runs verify with the signing key at ref and returns its
// exit code and findings.
func (w *world) verifyFindings(ref string) (int, []finding) {
	w.t.Helper()
	r := w.run("--json", "verify", "--at", ref, "--keys", "k")
	var out struct {
		Verify struct {
			Findings []finding `json:"findings"`
		} `json:"verify"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &out); err != nil {
		w.t.Fatalf("verify %s printed no report: %v\n%s", ref, err, r)
	}
	return r.Code, out.Verify.Findings
}

// names reports whether a finding of one of codes names object.
func names(fs []finding, object string, codes ...string) bool {
	for _, f := range fs {
		if slices.Contains(codes, f.Code) && (object == "" || f.Object == object) {
			return true
		}
	}
	return false
}

// Tampering at rest, on a real server's disk (versitygw keeps objects as
// plain files): every kind must be reported by verify with a finding of
// the right kind naming the object (exit 1), and refused by restore
// (non-zero exit, naming the object) without the tampered object ever
// standing restored.
func TestIntegrationDetectTampering(t *testing.T) {
	w := newWorld(t)
	srv := testserver.Start(t, testserver.Versitygw)
	w.setenv(srv.Env("cloudb")...)
	w.bucket("cloudb:tam")
	w.fixture(false)
	w.ok("export", "--from", "gen", "--to", "cloudb:tam/pristine", "--keys", "k")
	w.ok("export", "--from", "gen", "--to", "cloudb:tam/other", "--keys", "k")
	rec := newRecord(t, "detect", "tampering at rest (server's disk): 8 kinds, each checked by verify and (but an added object) by restore", 0)
	disk := func(prefix, key string) string {
		return filepath.Join(srv.DataDir(), "tam", prefix, filepath.FromSlash(key))
	}
	const victim = "Observation.000.ndjson.ehr"
	cases := []struct {
		name   string
		object string   // the object a finding must name
		codes  []string // the finding codes that describe it
		tamper func(prefix string)
	}{
		{"one payload byte flipped", victim, []string{"sha256-mismatch"}, func(p string) { flip(t, disk(p, victim), -100) }},
		{"one header byte flipped", victim, []string{"sha256-mismatch", "bad-envelope"}, func(p string) { flip(t, disk(p, victim), 40) }},
		{"object truncated", victim, []string{"size-mismatch"}, func(p string) { truncate(t, disk(p, victim), 64) }},
		{"object deleted", victim, []string{"missing"}, func(p string) { must(t, os.Remove(disk(p, victim))) }},
		{"object added", "Extra.000.ndjson.ehr", []string{"unlisted-object"}, func(p string) {
			must(t, os.WriteFile(disk(p, "Extra.000.ndjson.ehr"), []byte("not from this export"), 0o600))
		}},
		{"object replaced by another export's", victim, []string{"sha256-mismatch", "bad-envelope"}, func(p string) {
			copyBytes(t, disk("other", victim), disk(p, victim))
		}},
		{"manifest swapped from another export", "", []string{"sha256-mismatch", "bad-envelope", "missing", "unlisted-object"}, func(p string) {
			copyBytes(t, disk("other", "manifest.json"), disk(p, "manifest.json"))
			copyBytes(t, disk("other", "manifest.json.sig"), disk(p, "manifest.json.sig"))
		}},
		{"manifest edited (signature kept)", "manifest.json.sig", []string{"bad-signature"}, func(p string) {
			b, err := os.ReadFile(disk(p, "manifest.json"))
			must(t, err)
			must(t, os.WriteFile(disk(p, "manifest.json"), []byte(strings.Replace(string(b), `"size": `, `"size": 1`, 1)), 0o600))
		}},
	}
	var kinds []string
	for _, tc := range cases {
		kinds = append(kinds, tc.name)
	}
	rec.How = strings.Join(kinds, ", ") + ": verify exits 1 with a finding naming the object; restore refuses and names it (an added object it leaves out)"
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w.t = t
			prefix := fmt.Sprintf("c%d", i)
			ref := "cloudb:tam/" + prefix
			w.ok("migrate", "--from", "cloudb:tam/pristine", "--to", ref)
			tc.tamper(prefix)
			rec.Injected += 2
			code, fs := w.verifyFindings(ref)
			if code == 1 && names(fs, tc.object, tc.codes...) {
				rec.Detected++
			} else {
				t.Errorf("verify: exit %d, findings %+v; want exit 1 and %v naming %q", code, fs, tc.codes, tc.object)
			}
			out := "restored-" + prefix
			r := w.run("restore", "--from", ref, "--keys", "k", "--to", out)
			restored := files(t, w.path(out))
			if tc.object == "Extra.000.ndjson.ehr" {
				// Restore reads what the manifest lists: an unlisted object
				// is verify's finding; restore must simply leave it out.
				rec.Injected--
				if r.Code != 0 || slices.Contains(restored, "Extra.000.ndjson") {
					t.Errorf("restore beside an unlisted object: exit %d, restored %v", r.Code, restored)
				}
				return
			}
			bad := slices.Contains(restored, strings.TrimSuffix(victim, ".ehr"))
			named := tc.object == "" || strings.Contains(r.Stderr, tc.object) || strings.Contains(r.Stderr, "manifest")
			if r.Code != 0 && named && !(bad && tc.object == victim) {
				rec.Detected++
			} else {
				t.Errorf("restore: exit %d, restored %v; want a refusal naming %q and no tampered file\n%s", r.Code, restored, tc.object, r)
			}
			t.Logf("verify exit %d (%d findings); restore exit %d: %s", code, len(fs), r.Code, strings.TrimSpace(r.Stderr))
		})
	}
}

// The lying cloud (gofakes3 over plain HTTP: it accepts any checksum and
// stores the framing of multipart uploads as data) must never pass. What it
// really corrupted is found independently (every object read back and
// hashed by the test); each corrupted object must then be reported by the
// command that wrote it or, for an export (which trusts the server's
// checksum answer), by verify and by restore. stores check must always see
// that it accepts a wrong checksum.
func TestIntegrationDetectLyingCloud(t *testing.T) {
	w := newWorld(t)
	srv := storetest.NewLyingCloudServer()
	t.Cleanup(srv.Close)
	w.setenv(storetest.LyingCloudEnv("LIAR", srv.URL, 5<<20)...)
	w.fixture(true)
	w.ok("export", "--from", "gen", "--to", "good", "--keys", "k")
	w.bucket("liar:lie")
	rec := newRecord(t, "detect", "lying cloud (gofakes3): stores check; migrate to it; export to it, then verify and restore", 0)
	var how []string
	check := func(what string, ok bool, r result) {
		t.Helper()
		rec.Injected++
		if ok {
			rec.Detected++
		} else {
			t.Errorf("%s was not caught: %s", what, r)
		}
	}
	r := w.run("stores", "check", "liar:lie")
	check("stores check", r.Code == 1 && strings.Contains(r.Stdout, "NOT usable"), r)

	r = w.run("--json", "migrate", "--from", "good", "--to", "liar:lie/m")
	rep := parseMigrate(t, r)
	bad := w.corrupted("liar:lie/m", "good")
	if len(bad) == 0 {
		// Stored faithfully (single PUTs): the read-back proved it.
		if r.Code != 0 {
			t.Errorf("migrate failed although the lying cloud kept every byte: %s", r)
		}
		how = append(how, "migrate: every object stored faithfully (one PUT each), proven by read-back")
	} else {
		var failed []string
		for _, f := range rep.Failed {
			failed = append(failed, f.Key)
		}
		caught := r.Code == 1 && !rep.ManifestWritten
		for _, k := range bad {
			caught = caught && slices.Contains(failed, k)
		}
		check(fmt.Sprintf("migrate to the lying cloud (corrupted %v)", bad), caught, r)
		how = append(how, fmt.Sprintf("migrate: %d object(s) corrupted, reported", len(bad)))
	}

	e := w.run("export", "--from", "gen", "--to", "liar:lie/e", "--keys", "k")
	bad = w.corrupted("liar:lie/e", "")
	how = append(how, fmt.Sprintf("export: exit %d, %d object(s) corrupted by the server", e.Code, len(bad)))
	if len(bad) > 0 {
		code, fs := w.verifyFindings("liar:lie/e")
		all := code == 1
		for _, k := range bad {
			all = all && names(fs, k, "sha256-mismatch", "size-mismatch", "bad-envelope")
		}
		check("verify of the export on the lying cloud", all, r)
		r = w.run("restore", "--from", "liar:lie/e", "--keys", "k", "--to", "restored")
		restored := files(t, w.path("restored"))
		named := false
		for _, k := range bad {
			named = named || strings.Contains(r.Stderr, k)
			if slices.Contains(restored, strings.TrimSuffix(k, ".ehr")) {
				t.Errorf("restore wrote %s from a corrupted object", k)
			}
		}
		check("restore from the lying cloud", r.Code != 0 && named, r)
	}
	rec.How = strings.Join(how, "; ")
}

// corrupted reads every object of the export at ref (the manifest's list)
// and returns those whose SHA-256 differs from the manifest's, or, when
// reference names a folder holding the same export, from that folder's
// bytes. It is the test's own check, independent of ehrport's.
func (w *world) corrupted(ref, reference string) []string {
	w.t.Helper()
	ctx := context.Background()
	st := w.store(ref)
	m, _, err := export.ReadManifest(ctx, st)
	if err != nil {
		w.t.Fatalf("read the manifest at %s: %v", ref, err)
	}
	var bad []string
	for _, e := range m.Extension.Ehrport.Objects {
		want := e.SHA256
		if reference != "" {
			b, err := os.ReadFile(w.path(filepath.Join(reference, e.Key)))
			must(w.t.(*testing.T), err)
			want = fmt.Sprintf("%x", sha256.Sum256(b))
		}
		rc, err := st.Get(ctx, e.Key)
		if err != nil {
			bad = append(bad, e.Key)
			continue
		}
		h := sha256.New()
		_, err = io.Copy(h, rc)
		rc.Close()
		if err != nil || fmt.Sprintf("%x", h.Sum(nil)) != want {
			bad = append(bad, e.Key)
		}
	}
	return bad
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// flip flips one bit of the byte at off (negative: from the end).
func flip(t *testing.T, path string, off int) {
	t.Helper()
	b, err := os.ReadFile(path)
	must(t, err)
	if off < 0 {
		off += len(b)
	}
	b[off] ^= 1
	must(t, os.WriteFile(path, b, 0o600))
}

func truncate(t *testing.T, path string, n int) {
	t.Helper()
	fi, err := os.Stat(path)
	must(t, err)
	must(t, os.Truncate(path, fi.Size()-int64(n)))
}

func copyBytes(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	must(t, err)
	must(t, os.WriteFile(to, b, 0o600))
}
