//go:build integration

package reliability

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// No plaintext touches the disk during export or migrate (issue #8). The
// real command runs against the shared test bed (clouda → cloudb) with its
// own TMPDIR, HOME and XDG folders, and a local output folder, all watched
// together with its working folder, in three independent ways:
//
//   - inotify: every file created, written or moved into a watched folder
//     is named and read the moment the kernel reports it;
//   - strace -f: every write, writev, pwrite and in-kernel copy to any
//     regular file anywhere, with its bytes, so a file created and deleted
//     between two looks, or written after it was unlinked (a spool file),
//     is seen too;
//   - a final scan of every watched file that is new or changed, and of the
//     servers' data folders for the test's buckets.
//
// Everything captured is searched for plaintext: FHIR JSON ("resourceType"),
// the planted patient's name and id, and every input patient's id and
// names, in the bytes as written and, for gzip, decompressed. The negative
// controls plant leaks under the same watch (with a shell, and with ehrport
// restore, which writes plaintext by design) and require each to be caught
// by the layer that must catch it. Without strace (apt-get install strace)
// the other two layers still run, and the controls only strace can see are
// skipped.
func TestIntegrationNoPlaintextOnDisk(t *testing.T) {
	storeEnv := sharedTestbed(t)
	w := newWorld(t)
	w.setenv(storeEnv...)
	w.fixture(false)
	planted := plantPatient(t, w)
	needles := plaintextNeedles(t, w.path("gen"), planted)
	t.Logf("searching for %d needles, among them the planted patient %s %q", len(needles), planted.id, planted.name)

	bucketA, bucketB := randomBucket("np-a-"), randomBucket("np-b-")
	w.bucket("clouda:" + bucketA)
	w.bucket("cloudb:" + bucketB)
	servers := serverDataDirs(bucketA, bucketB)

	t.Run("export", func(t *testing.T) {
		w.t = t
		run := newWatchedRun(t, w)
		run.ehrport("export", "--from", "gen", "--to", "clouda:"+bucketA+"/x", "--keys", "k", "--split-resources", "25")
		run.ehrport("export", "--from", "gen", "--to", filepath.Join(run.out, "export"), "--keys", "k", "--split-resources", "25")
		run.requireClean(needles, servers)
	})
	t.Run("migrate", func(t *testing.T) {
		w.t = t
		// The export to migrate is made outside the watch: this sub-test
		// runs on its own (make reliability runs each row alone).
		from := "clouda:" + bucketA + "/m"
		w.ok("export", "--from", "gen", "--to", from, "--keys", "k", "--split-resources", "25")
		run := newWatchedRun(t, w)
		for _, to := range []string{"cloudb:" + bucketB + "/y", filepath.Join(run.out, "migrated")} {
			r := run.ehrport("--json", "migrate", "--from", from, "--to", to)
			if rep := parseMigrate(t, r); !rep.ManifestWritten || len(rep.Copied) < 10 {
				t.Fatalf("migrate to %s: manifest written %v, %d objects copied: not a real migration", to, rep.ManifestWritten, len(rep.Copied))
			}
		}
		run.requireClean(needles, servers)
	})
	t.Run("negative_controls", func(t *testing.T) {
		w.t = t
		negativeControls(t, w, needles, planted)
	})
}

// negativeControls plant leaks under the same watch as ehrport's runs (a
// shell, and ehrport restore, which writes plaintext by design) and require
// the checker to catch each one with the layer that must see it.
func negativeControls(t *testing.T, w *world, needles [][]byte, planted plantedPatient) {
	leak := fmt.Sprintf(`{"resourceType":"Patient","id":%q,"name":[{"family":%q}]}`, planted.id, planted.name)
	cases := []struct {
		name, script string
		// must: layers that have to report it; mustNot: layers that cannot
		// (the file was gone before the end).
		must, mustNot []string
		strace        bool // only strace can see it
	}{
		{"plaintext file left in TMPDIR (cp of the input)", `cp gen/Patient.ndjson "$TMPDIR/leak.ndjson"`,
			[]string{layerInotify, layerStrace, layerFinal}, nil, false},
		{"plaintext written and deleted at once in TMPDIR", `printf '%s\n' "$LEAK" >"$TMPDIR/x.ndjson"; rm "$TMPDIR/x.ndjson"`,
			[]string{layerStrace}, []string{layerFinal}, true},
		{"plaintext written to an unlinked spool file in TMPDIR", `exec 3>"$TMPDIR/spool"; rm "$TMPDIR/spool"; printf '%s\n' "$LEAK" >&3; exec 3>&-`,
			[]string{layerStrace}, []string{layerFinal}, true},
		{"gzip of the input in the XDG cache", `mkdir -p "$XDG_CACHE_HOME/ehrport"; gzip -c gen/Patient.ndjson >"$XDG_CACHE_HOME/ehrport/p.gz"`,
			[]string{layerFinal, layerStrace}, nil, false},
		{"plaintext in the output folder", `mkdir -p "$OUT/export"; printf '%s\n' "$LEAK" >"$OUT/export/part.ndjson"`,
			[]string{layerInotify, layerStrace, layerFinal}, nil, false},
		// ehrport itself, under strace like the runs above: restore writes
		// plaintext by design, so the watch must see it.
		{"ehrport restore into the output folder", "", []string{layerInotify, layerStrace, layerFinal}, nil, false},
	}
	// The export the restore case reads, made before its watch starts.
	w.ok("export", "--from", "gen", "--to", "control-export", "--keys", "k")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w.t = t
			run := newWatchedRun(t, w)
			if tc.strace && run.strace == "" {
				t.Skip("strace is not installed: only strace can see this leak")
			}
			if tc.script == "" {
				run.ehrport("restore", "--from", "control-export", "--keys", "k", "--to", filepath.Join(run.out, "restored"))
			} else {
				run.shell(tc.script, "LEAK="+leak, "OUT="+run.out)
			}
			found := run.findings(needles, nil)
			byLayer := map[string]int{}
			for _, f := range found {
				byLayer[f.layer]++
			}
			t.Logf("caught: %v", byLayer)
			if len(found) == 0 {
				t.Fatalf("the checker missed a planted leak: %s", tc.script)
			}
			for _, l := range tc.must {
				if l == layerStrace && run.strace == "" {
					continue
				}
				if byLayer[l] == 0 {
					t.Errorf("layer %s did not catch it; findings: %v", l, found)
				}
			}
			for _, l := range tc.mustNot {
				if byLayer[l] != 0 {
					t.Errorf("layer %s reported a file that should be gone: %v", l, found)
				}
			}
		})
	}
}

// ---------------------------------------------------------------- set-up

// sharedTestbed returns the shared test bed's store variables (clouda and
// cloudb), which childEnviron otherwise keeps from the command.
func sharedTestbed(t *testing.T) []string {
	t.Helper()
	if os.Getenv("EHRPORT_TESTBED") == "" {
		t.Fatal("the S3 test bed is not up: run `make testbed-up` and source .cache/testbed/env (make test does both)")
	}
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "EHRPORT_STORE_CLOUDA_") || strings.HasPrefix(kv, "EHRPORT_STORE_CLOUDB_") {
			env = append(env, kv)
		}
	}
	return env
}

func randomBucket(prefix string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return prefix + hex.EncodeToString(b)
}

// serverDataDirs are the test bed's folders for the test's buckets (the
// layout of scripts/testbed.sh), scanned at rest after each run; a folder
// that is not there is left out.
func serverDataDirs(bucketA, bucketB string) []string {
	var dirs []string
	for _, d := range []string{
		filepath.Join(os.Getenv("EHRPORT_TESTBED"), "clouda", "data", bucketA),
		filepath.Join(os.Getenv("EHRPORT_TESTBED"), "cloudb", "data", bucketB),
	} {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

type plantedPatient struct{ id, name string }

// plantPatient adds a patient with a unique name and id to the world's
// input, so finding either anywhere can only mean plaintext.
func plantPatient(t *testing.T, w *world) plantedPatient {
	t.Helper()
	b := make([]byte, 5)
	rand.Read(b)
	p := plantedPatient{id: "planted-" + hex.EncodeToString(b), name: "Zebulonious" + strings.ToUpper(hex.EncodeToString(b[:3]))}
	line := fmt.Sprintf(`{"resourceType":"Patient","id":%q,"name":[{"family":%q,"given":["Quirinus"]}],"gender":"other","birthDate":"1970-01-01"}`+"\n", p.id, p.name)
	if err := os.WriteFile(w.path("gen/Patient-planted.ndjson"), []byte(line), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// plaintextNeedles are byte strings that only plaintext holds: the JSON key
// every FHIR resource has, the planted patient, and every input patient's
// id and names (of at least 4 letters).
func plaintextNeedles(t *testing.T, dir string, p plantedPatient) [][]byte {
	t.Helper()
	set := map[string]bool{`resourceType`: true, p.id: true, p.name: true}
	for key, docs := range resources(t, dir) {
		if !strings.HasPrefix(key, "Patient/") {
			continue
		}
		set[strings.TrimPrefix(key, "Patient/")] = true
		var pat struct {
			Name []struct {
				Family string   `json:"family"`
				Given  []string `json:"given"`
			} `json:"name"`
		}
		json.Unmarshal(docs[0], &pat)
		for _, n := range pat.Name {
			for _, s := range append([]string{n.Family}, n.Given...) {
				if len(s) >= 4 {
					set[s] = true
				}
			}
		}
	}
	if len(set) < 10 {
		t.Fatalf("only %d needles from the input: the fixture holds no patients?", len(set))
	}
	var out [][]byte
	for s := range set {
		out = append(out, []byte(s))
	}
	sort.Slice(out, func(i, j int) bool { return bytes.Compare(out[i], out[j]) < 0 })
	return out
}

// ---------------------------------------------------------------- watched runs

const (
	layerInotify = "inotify"
	layerStrace  = "strace"
	layerFinal   = "final scan"
	layerServer  = "server data"
)

// watchedRun runs commands of one world with a private TMPDIR, HOME, XDG
// folders and output folder, all watched with the world's folder.
type watchedRun struct {
	t        *testing.T
	w        *world
	env      []string
	roots    []string // watched folders
	out      string   // a local output folder, watched
	strace   string   // the strace binary, "" when missing
	traces   []string // one strace output per command
	baseline map[string]fileID
	ino      *inotifyWatch
}

type fileID struct {
	size  int64
	mtime time.Time
	ino   uint64
}

func newWatchedRun(t *testing.T, w *world) *watchedRun {
	t.Helper()
	base := t.TempDir()
	r := &watchedRun{t: t, w: w, out: filepath.Join(base, "out")}
	dirs := map[string]string{
		"TMPDIR": "tmp", "HOME": "home", "XDG_CACHE_HOME": "home/.cache", "XDG_CONFIG_HOME": "home/.config",
		"XDG_DATA_HOME": "home/.local/share", "XDG_STATE_HOME": "home/.local/state", "XDG_RUNTIME_DIR": "run",
	}
	for k, rel := range dirs {
		d := filepath.Join(base, rel)
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatal(err)
		}
		r.env = append(r.env, k+"="+d)
	}
	if err := os.MkdirAll(r.out, 0o700); err != nil {
		t.Fatal(err)
	}
	r.roots = []string{base, w.Dir}
	if p, err := exec.LookPath("strace"); err == nil {
		r.strace = p
	} else if os.Getenv("CI") == "true" {
		t.Fatal("strace is not installed: make test installs it (scripts/install-debs.sh); in CI every layer must run")
	} else {
		t.Logf("strace is not installed (apt-get install -y strace): files written and deleted between two looks are not seen")
	}
	r.baseline = snapshot(r.roots)
	ino, err := startInotify(r.roots)
	if err != nil {
		t.Fatalf("inotify: %v", err)
	}
	r.ino = ino
	t.Cleanup(ino.close)
	return r
}

// traced makes cmd run under strace, its trace in a new file.
func (r *watchedRun) traced(cmd *exec.Cmd) {
	if r.strace == "" {
		return
	}
	out := filepath.Join(r.t.TempDir(), "trace")
	r.traces = append(r.traces, out)
	args := []string{r.strace, "-f", "-qq", "-y", "-xx", "-s", "1048576", "-o", out,
		"-e", "trace=open,openat,creat,write,pwrite64,writev,pwritev,pwritev2,copy_file_range,sendfile,splice,rename,renameat,renameat2,unlink,unlinkat",
		"--", cmd.Path}
	cmd.Args = append(args, cmd.Args[1:]...)
	cmd.Path = r.strace
}

// ehrport runs ehrport ARGS under the watch and fails the test unless it
// exits 0.
func (r *watchedRun) ehrport(args ...string) result {
	r.t.Helper()
	p := r.w.command(r.env, args...)
	r.traced(p.cmd)
	res := p.begin().wait()
	if res.Code != 0 {
		r.t.Fatalf("ehrport %s: %s", strings.Join(args, " "), res)
	}
	return res
}

// shell runs a bash script in the world's folder under the watch.
func (r *watchedRun) shell(script string, env ...string) {
	r.t.Helper()
	p := &proc{t: r.t, args: []string{"bash", "-c", script}, done: make(chan struct{})}
	bash, err := exec.LookPath("bash")
	if err != nil {
		r.t.Fatal(err)
	}
	p.cmd = exec.Command(bash, "-c", script)
	p.cmd.Dir = r.w.Dir
	p.cmd.Env = append(append(os.Environ(), r.env...), env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	r.traced(p.cmd)
	if res := p.begin().wait(); res.Code != 0 {
		r.t.Fatalf("script %q: %s", script, res)
	}
}

type leakFinding struct{ layer, path, what string }

func (f leakFinding) String() string { return f.layer + ": " + f.path + ": " + f.what }

// findings stops the watch and searches everything it captured.
func (r *watchedRun) findings(needles [][]byte, servers []string) []leakFinding {
	r.t.Helper()
	var found []leakFinding
	check := func(layer, path string, data []byte) {
		if what := plaintextIn(data, needles); what != "" {
			found = append(found, leakFinding{layer, path, what})
		}
	}
	ev, overflowed := r.ino.stop()
	if overflowed {
		r.t.Errorf("inotify: the kernel's event queue overflowed: files created in the watched folders may be missing from the list")
	}
	var names []string
	for _, e := range ev {
		names = append(names, r.rel(e.path))
		for _, data := range e.reads {
			check(layerInotify, e.path, data)
		}
	}
	r.t.Logf("inotify: %d file(s) created or written in the watched folders: %s", len(ev), summarize(names, 12))
	for _, tr := range r.traces {
		files, err := parseTrace(tr)
		if err != nil {
			r.t.Fatalf("strace output %s: %v", tr, err)
		}
		var names []string
		for _, f := range files {
			names = append(names, fmt.Sprintf("%s (%d B)", r.rel(f.path), f.data.Len()))
			check(layerStrace, f.path, f.data.Bytes())
			for _, src := range f.copiedFrom {
				if b, err := os.ReadFile(src); err == nil {
					check(layerStrace, f.path+" (copied in the kernel from "+src+")", b)
				}
			}
		}
		r.t.Logf("strace: %d regular file(s) opened for writing or written by the command: %s", len(files), summarize(names, 12))
	}
	changed := 0
	for p, id := range snapshot(r.roots) {
		if old, ok := r.baseline[p]; ok && old == id {
			continue
		}
		changed++
		if b, err := os.ReadFile(p); err == nil {
			check(layerFinal, p, b)
		}
	}
	r.t.Logf("final scan: %d new or changed file(s) in the watched folders", changed)
	n := 0
	for _, d := range servers {
		filepath.WalkDir(d, func(p string, de fs.DirEntry, err error) error {
			if err == nil && de.Type().IsRegular() {
				n++
				if b, err := os.ReadFile(p); err == nil {
					check(layerServer, p, b)
				}
			}
			return nil
		})
	}
	if len(servers) > 0 {
		r.t.Logf("server data: %d file(s) at rest in %d bucket folder(s)", n, len(servers))
	}
	return found
}

// rel names p relative to the watched folders: tmp/..., home/..., out/...
// for the run's own, wd/... for the world's.
func (r *watchedRun) rel(p string) string {
	if q, err := filepath.Rel(r.roots[0], p); err == nil && !strings.HasPrefix(q, "..") {
		return q
	}
	if q, err := filepath.Rel(r.w.Dir, p); err == nil && !strings.HasPrefix(q, "..") {
		return "wd/" + q
	}
	return p
}

// requireClean fails the test for any plaintext found.
func (r *watchedRun) requireClean(needles [][]byte, servers []string) {
	r.t.Helper()
	for _, f := range r.findings(needles, servers) {
		r.t.Errorf("plaintext on disk: %s", f)
	}
}

// summarize lists up to n names, sorted.
func summarize(names []string, n int) string {
	sort.Strings(names)
	if len(names) > n {
		return strings.Join(names[:n], ", ") + fmt.Sprintf(", ... (%d more)", len(names)-n)
	}
	return strings.Join(names, ", ")
}

// snapshot identifies every regular file under roots.
func snapshot(roots []string) map[string]fileID {
	out := map[string]fileID{}
	for _, root := range roots {
		filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
			if err != nil || !d.Type().IsRegular() {
				return nil
			}
			if fi, err := d.Info(); err == nil {
				st, _ := fi.Sys().(*syscall.Stat_t)
				id := fileID{size: fi.Size(), mtime: fi.ModTime()}
				if st != nil {
					id.ino = st.Ino
				}
				out[p] = id
			}
			return nil
		})
	}
	return out
}

// plaintextIn names the first needle found in data, or in its gzip
// expansion (bounded), or "".
func plaintextIn(data []byte, needles [][]byte) string {
	for _, n := range needles {
		if bytes.Contains(data, n) {
			return fmt.Sprintf("holds %q in the clear", n)
		}
	}
	if len(data) > 2 && data[0] == 0x1f && data[1] == 0x8b {
		if zr, err := gzip.NewReader(bytes.NewReader(data)); err == nil {
			plain, _ := io.ReadAll(io.LimitReader(zr, 256<<20))
			for _, n := range needles {
				if bytes.Contains(plain, n) {
					return fmt.Sprintf("holds %q gzip-compressed", n)
				}
			}
		}
	}
	return ""
}

// ---------------------------------------------------------------- inotify

// inotifyWatch records every file created, written or moved in under its
// folders (new sub-folders included), reading each at every event.
type inotifyWatch struct {
	f    *os.File
	mu   sync.Mutex
	dirs map[int32]string
	seen map[string]*watchedFile
	done chan struct{}
	once sync.Once
	// overflowed: the kernel dropped events (its queue was full), so
	// the list of files is not complete.
	overflowed bool
}

type watchedFile struct {
	path  string
	mask  uint32
	reads [][]byte // distinct contents read
}

const inotifyMask = syscall.IN_CREATE | syscall.IN_MODIFY | syscall.IN_CLOSE_WRITE | syscall.IN_MOVED_TO

func startInotify(roots []string) (*inotifyWatch, error) {
	fd, err := syscall.InotifyInit1(syscall.IN_CLOEXEC | syscall.IN_NONBLOCK)
	if err != nil {
		return nil, err
	}
	w := &inotifyWatch{f: os.NewFile(uintptr(fd), "inotify"), dirs: map[int32]string{}, seen: map[string]*watchedFile{}, done: make(chan struct{})}
	for _, r := range roots {
		if err := w.addTree(r, false); err != nil {
			w.f.Close()
			return nil, err
		}
	}
	go w.loop()
	return w, nil
}

// addTree watches dir and its sub-folders; fresh means it appeared during
// the run, so the files already in it are recorded too.
func (w *inotifyWatch) addTree(dir string, fresh bool) error {
	return filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil // gone already
		}
		if d.IsDir() {
			wd, err := syscall.InotifyAddWatch(int(w.f.Fd()), p, inotifyMask)
			if err != nil {
				if errors.Is(err, syscall.ENOENT) {
					return nil
				}
				return fmt.Errorf("watch %s: %w", p, err)
			}
			w.mu.Lock()
			w.dirs[int32(wd)] = p
			w.mu.Unlock()
		} else if fresh {
			w.record(p, syscall.IN_CREATE)
		}
		return nil
	})
}

func (w *inotifyWatch) loop() {
	defer close(w.done)
	buf := make([]byte, 64<<10)
	for {
		n, err := w.f.Read(buf)
		if err != nil {
			return // closed, or the drain deadline passed
		}
		for off := 0; off+syscall.SizeofInotifyEvent <= n; {
			ev := (*syscall.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := string(bytes.TrimRight(buf[off+syscall.SizeofInotifyEvent:off+syscall.SizeofInotifyEvent+int(ev.Len)], "\x00"))
			off += syscall.SizeofInotifyEvent + int(ev.Len)
			if ev.Mask&syscall.IN_Q_OVERFLOW != 0 {
				w.mu.Lock()
				w.overflowed = true
				w.mu.Unlock()
				continue
			}
			w.mu.Lock()
			dir := w.dirs[ev.Wd]
			w.mu.Unlock()
			if dir == "" || name == "" {
				continue
			}
			p := filepath.Join(dir, name)
			if ev.Mask&syscall.IN_ISDIR != 0 {
				if ev.Mask&(syscall.IN_CREATE|syscall.IN_MOVED_TO) != 0 {
					w.addTree(p, true)
				}
				continue
			}
			w.record(p, ev.Mask)
		}
	}
}

func (w *inotifyWatch) record(p string, mask uint32) {
	data, err := os.ReadFile(p) // may be gone already: the name is kept
	w.mu.Lock()
	defer w.mu.Unlock()
	f := w.seen[p]
	if f == nil {
		f = &watchedFile{path: p}
		w.seen[p] = f
	}
	f.mask |= mask
	if err == nil && len(data) > 0 && (len(f.reads) == 0 || !bytes.Equal(f.reads[len(f.reads)-1], data)) && len(f.reads) < 64 {
		f.reads = append(f.reads, data)
	}
}

// stop drains the events still queued, ends the watch and returns what it
// saw, and whether events were lost.
func (w *inotifyWatch) stop() ([]*watchedFile, bool) {
	w.f.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	<-w.done
	w.close()
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []*watchedFile
	for _, f := range w.seen {
		out = append(out, f)
	}
	return out, w.overflowed
}

func (w *inotifyWatch) close() { w.once.Do(func() { w.f.Close() }) }

// ---------------------------------------------------------------- strace

// tracedFile is a regular file the command opened for writing or wrote.
type tracedFile struct {
	path       string
	data       bytes.Buffer // every write, in order (bounded)
	copiedFrom []string     // files copied into it in the kernel
}

var (
	traceCall = regexp.MustCompile(`^(?:\d+\s+)?([a-z0-9_]+)\((.*)$`)
	fdPath    = regexp.MustCompile(`^\d+<([^>]*)>`)
	hexString = regexp.MustCompile(`"((?:\\x[0-9a-f]{2})*)"`)
	retPath   = regexp.MustCompile(`= \d+<([^>]*)>$`)
	twoFds    = regexp.MustCompile(`^\d+<([^>]*)>, (?:[^,]+, )?\d+<([^>]*)>`)
)

const maxTracedBytes = 64 << 20

// parseTrace reads strace -f -y -xx output: the bytes of every write to a
// regular file (by its path, " (deleted)" once unlinked), files opened for
// writing, and in-kernel copies between files.
func parseTrace(path string) ([]*tracedFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	files := map[string]*tracedFile{}
	get := func(p string) *tracedFile {
		f := files[p]
		if f == nil {
			f = &tracedFile{path: p}
			files[p] = f
		}
		return f
	}
	for _, line := range strings.Split(string(b), "\n") {
		m := traceCall.FindStringSubmatch(line)
		if m == nil {
			continue // "<... resumed>", signals, exits: the data was at entry
		}
		call, args := m[1], m[2]
		switch call {
		case "write", "pwrite64", "writev", "pwritev", "pwritev2":
			fm := fdPath.FindStringSubmatch(args)
			if fm == nil {
				continue
			}
			p := unhex(fm[1])
			if !regularPath(p) {
				continue
			}
			f := get(strings.TrimSuffix(p, " (deleted)"))
			for _, s := range hexString.FindAllStringSubmatch(args, -1) {
				if f.data.Len() < maxTracedBytes {
					f.data.WriteString(unhex(s[1]))
				}
			}
		case "open", "openat", "creat":
			if call != "creat" && !strings.Contains(args, "O_WRONLY") && !strings.Contains(args, "O_RDWR") && !strings.Contains(args, "O_CREAT") {
				continue
			}
			if rm := retPath.FindStringSubmatch(args); rm != nil {
				if p := unhex(rm[1]); regularPath(p) {
					get(p)
				}
			}
		case "copy_file_range", "splice", "sendfile":
			fm := twoFds.FindStringSubmatch(args)
			if fm == nil {
				continue
			}
			in, out := unhex(fm[1]), unhex(fm[2])
			if call == "sendfile" {
				in, out = out, in // sendfile(out_fd, in_fd, ...)
			}
			if regularPath(out) {
				f := get(strings.TrimSuffix(out, " (deleted)"))
				if regularPath(in) {
					f.copiedFrom = append(f.copiedFrom, strings.TrimSuffix(in, " (deleted)"))
				}
			}
		}
	}
	out := make([]*tracedFile, 0, len(files))
	for _, f := range files {
		out = append(out, f)
	}
	return out, nil
}

// regularPath: a path strace decorated a file descriptor with that names a
// file on a disk (not a socket, pipe or device).
func regularPath(p string) bool {
	if !strings.HasPrefix(p, "/") {
		return false
	}
	for _, skip := range []string{"/dev/", "/proc/", "/sys/"} {
		if strings.HasPrefix(p, skip) {
			return false
		}
	}
	return true
}

// unhex decodes strace -xx's \xNN escapes; other characters stay.
func unhex(s string) string {
	if !strings.Contains(s, `\x`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && s[i+1] == 'x' {
			if v, err := hex.DecodeString(s[i+2 : i+4]); err == nil {
				b.WriteByte(v[0])
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
