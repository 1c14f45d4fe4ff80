//go:build integration

package reliability

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// leftovers checks what a failed command left on its mount: no manifest,
// no temporary file, and (for a restore) no file under its final name that
// is not the complete file of the reference restore.
func leftovers(t *testing.T, left []string, reference string) {
	t.Helper()
	for _, l := range left {
		name, size, _ := strings.Cut(l, " ")
		base := filepath.Base(name)
		switch {
		case base == "manifest.json" || base == "manifest.json.sig":
			t.Errorf("left behind after a failure: %s (%s bytes): the export would look complete", name, size)
		case strings.HasPrefix(base, "."):
			t.Errorf("temporary file left behind: %s (%s bytes)", name, size)
		case reference != "":
			fi, err := os.Stat(filepath.Join(reference, filepath.Base(filepath.Dir(name)), base))
			if err != nil {
				fi, err = os.Stat(filepath.Join(reference, strings.TrimPrefix(name, filepath.Base(filepath.Dir(name))+"/")))
			}
			if err != nil || fmt.Sprint(fi.Size()) != size {
				t.Errorf("%s stands under its final name with %s bytes; the complete file has %v (%v)", name, size, sizeOf(fi), err)
			}
		}
	}
}

func sizeOf(fi os.FileInfo) any {
	if fi == nil {
		return "none"
	}
	return fi.Size()
}

// wantError checks a failure's exit code and that its message names the
// path and says what happened.
func wantError(t *testing.T, r result, code int, path, what string) {
	t.Helper()
	if r.Code != code {
		t.Errorf("exit %d, want %d\n%s", r.Code, code, r)
	}
	if !strings.Contains(r.Stderr, path) || !strings.Contains(strings.ToLower(r.Stderr), what) {
		t.Errorf("the error does not name %s and say %q:\n%s", path, what, r.Stderr)
	}
	if strings.Contains(r.Stderr, "panic") {
		t.Errorf("panic:\n%s", r.Stderr)
	}
	t.Logf("stderr: %s", strings.TrimSpace(r.Stderr))
}

// A disk that fills up under the export's target, under its spool folder
// (TMPDIR), and under a restore's folder: exit 4 naming the path, nothing
// half-written left looking complete, and the same command completes once
// there is room. The disk is a 1 MiB tmpfs in a mount namespace of the
// child's own; where namespaces are not allowed, RLIMIT_FSIZE makes writes
// fail instead (EFBIG), and the record says so.
func TestIntegrationLocalDiskFull(t *testing.T) {
	w := newWorld(t)
	w.fixture(true)
	w.ok("export", "--from", "gen", "--to", "good", "--keys", "k")
	w.ok("restore", "--from", "good", "--keys", "k", "--to", "reference")
	full := w.path("full")
	if err := os.Mkdir(full, 0o700); err != nil {
		t.Fatal(err)
	}
	rec := newRecord(t, "fault", "local: disk full (export target, export spool, restore folder)", 0)
	if err := mountNamespaces(w); err != nil {
		t.Logf("no mount namespace (%v): RLIMIT_FSIZE instead", err)
		rec.How = "RLIMIT_FSIZE of 1 MiB (EFBIG): no mount namespace on this machine"
		for _, args := range [][]string{
			{"export", "--from", "gen", "--to", "full/out", "--keys", "k"},
			{"restore", "--from", "good", "--keys", "k", "--to", "full/r"},
		} {
			r := w.command([]string{fsizeEnv + "=1048576"}, args...).begin().wait()
			rec.Injected++
			wantError(t, r, 4, "full/", "file too large")
			leftovers(t, lines(files(t, full)), "")
			os.RemoveAll(full)
			w.ok(args...)
			rec.Recovered++
			os.RemoveAll(full)
		}
		return
	}
	rec.How = "1 MiB tmpfs in a mount namespace of the command's own (ENOSPC)"

	t.Run("export target", func(t *testing.T) {
		w.t = t
		r, left := w.runMounted(full, "1m", false, "export", "--from", "gen", "--to", "full/out", "--keys", "k")
		rec.Injected++
		wantError(t, r, 4, "full/out", "no space left on device")
		leftovers(t, left, "")
		t.Logf("left on the full disk: %v", left)
		w.ok("export", "--from", "gen", "--to", "full/out", "--keys", "k")
		if tl := w.verifyDeep("full/out", ""); !tl.clean() {
			t.Fatalf("after the rerun: %+v", tl)
		}
		rec.Recovered++
	})
	t.Run("export spool", func(t *testing.T) {
		w.t = t
		// The spool folder comes from TMPDIR: point it at the full disk.
		p := w.command([]string{tmpfsEnv + "=" + full + ":1m", "TMPDIR=" + full}, "export", "--from", "gen", "--to", "spooled", "--keys", "k")
		namespaced(p)
		r := p.begin().wait()
		rec.Injected++
		wantError(t, r, 4, full, "no space left on device")
		if _, err := os.Stat(w.path("spooled/manifest.json")); err == nil {
			t.Error("a manifest stands after an export whose spool filled up")
		}
		w.ok("export", "--from", "gen", "--to", "spooled", "--keys", "k")
		rec.Recovered++
	})
	t.Run("restore folder", func(t *testing.T) {
		w.t = t
		r, left := w.runMounted(full, "1m", false, "restore", "--from", "good", "--keys", "k", "--to", "full/r")
		rec.Injected++
		wantError(t, r, 4, "full/r", "no space left on device")
		leftovers(t, left, w.path("reference"))
		t.Logf("left on the full disk: %v", left)
		os.RemoveAll(w.path("full/r"))
		w.ok("restore", "--from", "good", "--keys", "k", "--to", "full/r")
		rec.Recovered++
	})
}

// clearDir empties dir, keeping it.
func clearDir(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
}

// lines turns a file list into the "path size" form of a listing.
func lines(paths []string) []string {
	var out []string
	for _, p := range paths {
		out = append(out, p+" 0")
	}
	return out
}

// A read-only target folder (a read-only mount, so that it holds for root
// too): export and restore fail with exit 4 naming the folder, write
// nothing, and complete once the folder is writable.
func TestIntegrationLocalReadOnly(t *testing.T) {
	w := newWorld(t)
	w.fixture(false)
	w.ok("export", "--from", "gen", "--to", "good", "--keys", "k")
	ro := w.path("ro")
	if err := os.Mkdir(ro, 0o700); err != nil {
		t.Fatal(err)
	}
	rec := newRecord(t, "fault", "local: read-only target folder (export, restore)", 0)
	if err := mountNamespaces(w); err != nil {
		if os.Geteuid() == 0 {
			t.Fatalf("as root, a read-only folder needs a mount namespace: %v", err)
		}
		rec.How = "folder mode 0500 (no mount namespace on this machine)"
		os.Chmod(ro, 0o500)
		defer os.Chmod(ro, 0o700)
	} else {
		rec.How = "read-only bind mount in a mount namespace of the command's own (EROFS)"
	}
	for _, args := range [][]string{
		{"export", "--from", "gen", "--to", "ro/out", "--keys", "k"},
		{"restore", "--from", "good", "--keys", "k", "--to", "ro/r"},
	} {
		var r result
		var left []string
		if strings.HasPrefix(rec.How, "read-only bind") {
			r, left = w.runMounted(ro, "", true, args...)
		} else {
			r = w.run(args...)
			left = lines(files(t, ro))
		}
		rec.Injected++
		wantError(t, r, 4, "ro/", "read-only file system")
		if len(left) > 0 {
			t.Errorf("%s wrote into a read-only folder: %v", args[0], left)
		}
		os.Chmod(ro, 0o700)
		w.ok(args...)
		rec.Recovered++
		clearDir(t, ro)
	}
}

// A key folder the user cannot read: export, restore and verify --deep
// stop before writing anything, with exit 4 naming the folder; with the
// folder readable again, the same command completes. As root the command
// runs as nobody, since root reads any folder.
func TestIntegrationLocalUnreadableKeys(t *testing.T) {
	w := newWorld(t)
	// An unprivileged child must be able to enter the world's folder (and
	// the test's temporary folder that holds it).
	os.Chmod(filepath.Dir(w.Dir), 0o755)
	os.Chmod(w.Dir, 0o755)
	w.fixture(false)
	w.ok("export", "--from", "gen", "--to", "good", "--keys", "k")
	for _, p := range []string{"gen", "good"} {
		filepath.Walk(w.path(p), func(p string, fi os.FileInfo, err error) error {
			if err == nil {
				if fi.IsDir() {
					os.Chmod(p, 0o755)
				} else {
					os.Chmod(p, 0o644)
				}
			}
			return nil
		})
	}
	out := w.path("out")
	os.Mkdir(out, 0o777)
	os.Chmod(out, 0o777)
	rec := newRecord(t, "fault", "local: unreadable key folder (export, restore, verify --deep)", 0)
	rec.How = "key folder mode 0000"
	if os.Geteuid() == 0 {
		rec.How += ", command run as nobody"
	}
	if err := os.Chmod(w.path("k"), 0o000); err != nil {
		t.Fatal(err)
	}
	defer os.Chmod(w.path("k"), 0o700)
	for _, args := range [][]string{
		{"export", "--from", "gen", "--to", "out/e", "--keys", "k"},
		{"restore", "--from", "good", "--keys", "k", "--to", "out/r"},
		{"verify", "--at", "good", "--keys", "k", "--deep"},
	} {
		p := w.command(nil, args...)
		unprivileged(t, p)
		r := p.begin().wait()
		rec.Injected++
		wantError(t, r, 4, "k", "permission denied")
		if left := files(t, out); len(left) > 0 {
			t.Errorf("%s wrote %v without readable keys", args[0], left)
		}
	}
	os.Chmod(w.path("k"), 0o700)
	for _, args := range [][]string{
		{"export", "--from", "gen", "--to", "out/e", "--keys", "k"},
		{"restore", "--from", "good", "--keys", "k", "--to", "out/r"},
		{"verify", "--at", "good", "--keys", "k", "--deep"},
	} {
		w.ok(args...)
		rec.Recovered++
	}
}
