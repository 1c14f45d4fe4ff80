//go:build integration

package reliability

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ehrport/ehrport/cmd/internal/cli"
	"github.com/ehrport/ehrport/cmd/internal/testserver"
	"github.com/ehrport/ehrport/storage"
)

// The test binary doubles as the ehrport binary: started with childEnv set,
// it runs the command line exactly as cmd/ehrport's main does (signals,
// memory limit, exit code), so exit codes and signal handling are the
// real ones.
const childEnv = "EHRPORT_RELIABILITY_CHILD"

const passphrase = "reliability test passphrase"

// cmdTimeout bounds every command: a command that runs longer hangs, and
// that is a failure of its own.
const cmdTimeout = 3 * time.Minute

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(childMain())
	}
	code := m.Run()
	removeCopies()
	removeFixture()
	os.Exit(code)
}

func childMain() int {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(200 << 20)
	}
	if err := childSetup(); err != nil {
		fmt.Fprintf(os.Stderr, "reliability child set-up: %v\n", err)
		return 99
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		<-ctx.Done()
		stop()
	}()
	code := cli.Main(ctx, append([]string{"ehrport"}, os.Args[1:]...), os.Stdout, os.Stderr)
	if err := childTeardown(); err != nil {
		fmt.Fprintf(os.Stderr, "reliability child tear-down: %v\n", err)
		return 99
	}
	return code
}

// world is one test's working folder and environment: every command runs
// in Dir with the store variables set so far.
type world struct {
	t   testing.TB
	Dir string
	env []string
}

func newWorld(t testing.TB) *world {
	return &world{t: t, Dir: t.TempDir(), env: []string{"EHRPORT_PASSPHRASE=" + passphrase}}
}

// setenv adds variables; a later value of the same name wins.
func (w *world) setenv(kv ...string) { w.env = append(w.env, kv...) }

func (w *world) path(rel string) string { return filepath.Join(w.Dir, rel) }

// childEnviron is the process environment without anything that could name
// a store or credentials (the shared test bed's variables, AWS_*), plus
// the world's.
func (w *world) childEnviron(extra []string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "EHRPORT_") || strings.HasPrefix(k, "AWS_") {
			continue
		}
		env = append(env, kv)
	}
	env = append(env, childEnv+"=1")
	env = append(env, w.env...)
	return append(env, extra...)
}

type result struct {
	Code           int
	Stdout, Stderr string
	Took           time.Duration
}

func (r result) String() string {
	return fmt.Sprintf("exit %d after %s\nstdout:\n%s\nstderr:\n%s", r.Code, r.Took.Round(time.Millisecond), tail(r.Stdout, 40), tail(r.Stderr, 40))
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{"..."}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// proc is a running command.
type proc struct {
	t              testing.TB
	args           []string
	cmd            *exec.Cmd
	stdout, stderr bytes.Buffer
	start          time.Time
	done           chan struct{}
	res            result
}

func (w *world) command(extraEnv []string, args ...string) *proc {
	w.t.Helper()
	exe, err := os.Executable()
	if err != nil {
		w.t.Fatal(err)
	}
	p := &proc{t: w.t, args: args, done: make(chan struct{})}
	p.cmd = exec.Command(exe, args...)
	p.cmd.Dir = w.Dir
	p.cmd.Env = w.childEnviron(extraEnv)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	return p
}

// start runs ehrport ARGS in the background.
func (w *world) start(args ...string) *proc {
	w.t.Helper()
	return w.command(nil, args...).begin()
}

func (p *proc) begin() *proc {
	p.t.Helper()
	p.start = time.Now()
	if err := p.cmd.Start(); err != nil {
		p.t.Fatalf("start ehrport %s: %v", strings.Join(p.args, " "), err)
	}
	go func() {
		err := p.cmd.Wait()
		p.res = result{Code: p.cmd.ProcessState.ExitCode(), Took: time.Since(p.start)}
		if ee, ok := err.(*exec.ExitError); ok && !ee.Exited() {
			p.res.Code = -1 // killed by a signal: ehrport never exits that way
		}
		close(p.done)
	}()
	return p
}

// running reports whether the command has not exited yet.
func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// signal sends sig to the command.
func (p *proc) signal(sig syscall.Signal) {
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Logf("signal %v: %v", sig, err)
	}
}

// wait waits for the command to end; one that runs past cmdTimeout is
// killed and fails the test: it hung.
func (p *proc) wait() result {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(cmdTimeout):
		p.cmd.Process.Kill()
		<-p.done
		p.res.Stdout, p.res.Stderr = p.stdout.String(), p.stderr.String()
		p.t.Fatalf("ehrport %s hung: killed after %s\n%s", strings.Join(p.args, " "), cmdTimeout, p.res)
	}
	p.res.Stdout, p.res.Stderr = p.stdout.String(), p.stderr.String()
	p.t.Logf("ehrport %s: exit %d in %s", strings.Join(p.args, " "), p.res.Code, p.res.Took.Round(time.Millisecond))
	return p.res
}

// run runs ehrport ARGS to the end.
func (w *world) run(args ...string) result {
	w.t.Helper()
	return w.start(args...).wait()
}

// ok runs ehrport ARGS and fails the test unless it exits 0.
func (w *world) ok(args ...string) result {
	w.t.Helper()
	r := w.run(args...)
	if r.Code != 0 {
		w.t.Fatalf("ehrport %s: %s", strings.Join(args, " "), r)
	}
	return r
}

// store opens a reference with the world's store variables.
func (w *world) store(ref string) storage.Store {
	w.t.Helper()
	cfg, err := storage.LoadConfig(os.DevNull, w.env)
	if err != nil {
		w.t.Fatal(err)
	}
	st, err := storage.OpenRef(cfg, ref)
	if err != nil {
		w.t.Fatal(err)
	}
	return st
}

// bucket creates the bucket of an S3 reference.
func (w *world) bucket(ref string) {
	w.t.Helper()
	s3 := w.store(ref).(*storage.S3Store)
	if err := s3.CreateBucket(context.Background()); err != nil {
		w.t.Fatal(err)
	}
}

// hasManifest reports whether ref holds a manifest.json.
func (w *world) hasManifest(ref string) bool {
	w.t.Helper()
	_, err := w.store(ref).Stat(context.Background(), "manifest.json")
	switch {
	case err == nil:
		return true
	case errors.Is(err, storage.ErrNotExist):
		return false
	}
	w.t.Fatalf("stat manifest at %s: %v", ref, err)
	return false
}

var (
	fixOnce sync.Once
	fixDir  string
)

// fixture gives the world the shared input: gen/ (20 generated patients,
// and with big one Binary resource of 6 MiB random bytes, an object over
// the part size) and the key directory k (passphrase from the
// environment). Both are made once per test binary (argon2 and generation
// cost seconds) and copied, or linked, into the world.
func (w *world) fixture(big bool) {
	w.t.Helper()
	fixOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ehrport-reliability-fixture-")
		if err != nil {
			w.t.Fatal(err)
		}
		base := &world{t: w.t, Dir: dir, env: w.env}
		base.ok("keys", "init", "--keys", "k")
		base.ok("testdata", "generate", "--patients", "20", "--seed", "7", "--out", "gen")
		data := make([]byte, 6<<20)
		rand.Read(data)
		doc := `{"resourceType":"Binary","id":"big","contentType":"application/octet-stream","data":"` + base64.StdEncoding.EncodeToString(data) + `"}`
		if err := os.Mkdir(filepath.Join(dir, "big"), 0o700); err != nil {
			w.t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "big", "Binary-big.json"), []byte(doc), 0o600); err != nil {
			w.t.Fatal(err)
		}
		fixDir = dir
	})
	if fixDir == "" {
		w.t.Fatal("the shared fixture could not be made (see the first test that tried)")
	}
	link := func(from, to string, mode os.FileMode) {
		if err := os.MkdirAll(filepath.Dir(to), 0o700); err != nil {
			w.t.Fatal(err)
		}
		if mode == 0 && os.Link(from, to) == nil {
			return
		}
		b, err := os.ReadFile(from)
		if err == nil {
			err = os.WriteFile(to, b, max(mode, 0o600))
		}
		if err != nil {
			w.t.Fatal(err)
		}
	}
	for _, sub := range []string{"k", "gen", "big"} {
		if sub == "big" && !big {
			continue
		}
		ents, err := os.ReadDir(filepath.Join(fixDir, sub))
		if err != nil {
			w.t.Fatal(err)
		}
		for _, e := range ents {
			to := filepath.Join(w.Dir, sub, e.Name())
			if sub == "big" {
				to = filepath.Join(w.Dir, "gen", e.Name())
			}
			mode := os.FileMode(0) // a link: read, never written
			if sub == "k" {
				fi, _ := e.Info()
				mode = fi.Mode().Perm() // a copy: the tests change its modes
			}
			link(filepath.Join(fixDir, sub, e.Name()), to, mode)
		}
	}
}

// removeFixture deletes the shared fixture.
func removeFixture() {
	if fixDir != "" {
		os.RemoveAll(fixDir)
	}
}

// ---------------------------------------------------------------- checks

type finding struct {
	Code    string `json:"code"`
	Object  string `json:"object"`
	Message string `json:"message"`
}

// tally sorts verify's findings into what the table counts.
type tally struct {
	Objects                     int
	Lost, Corrupted, Duplicated int
	Other                       []string
}

func (t tally) clean() bool {
	return t.Lost == 0 && t.Corrupted == 0 && t.Duplicated == 0 && len(t.Other) == 0
}

func (t *tally) add(fs []finding) {
	for _, f := range fs {
		switch f.Code {
		case "missing", "no-manifest", "count-mismatch", "type-count-mismatch", "not-in-summary":
			t.Lost++
		case "size-mismatch", "sha256-mismatch", "plaintext-mismatch", "bad-envelope", "summary-undecryptable", "bad-manifest", "bad-signature":
			t.Corrupted++
		case "unlisted-object", "extra", "only-in-reference":
			t.Duplicated++
		default:
			t.Other = append(t.Other, f.Code+" "+f.Object+": "+f.Message)
		}
	}
}

// verifyDeep runs `verify --deep` at ref (and --against another location
// when given) and tallies the findings. Exit 0 must mean no finding.
func (w *world) verifyDeep(ref, against string) tally {
	w.t.Helper()
	args := []string{"--json", "verify", "--at", ref, "--keys", "k", "--deep"}
	if against != "" {
		args = append(args, "--against", against)
	}
	r := w.run(args...)
	var out struct {
		Verify struct {
			Objects         int       `json:"objects"`
			ObjectsVerified int       `json:"objects_verified"`
			Findings        []finding `json:"findings"`
		} `json:"verify"`
		Against *struct {
			Report struct {
				Findings []finding `json:"findings"`
			} `json:"report"`
		} `json:"against"`
	}
	if err := json.Unmarshal([]byte(r.Stdout), &out); err != nil || (r.Code != 0 && r.Code != 1) {
		w.t.Fatalf("verify %s: %v\n%s", ref, err, r)
	}
	var t tally
	t.Objects = out.Verify.ObjectsVerified
	t.add(out.Verify.Findings)
	if out.Against != nil {
		t.add(out.Against.Report.Findings)
	}
	if (r.Code == 0) != t.clean() {
		w.t.Fatalf("verify %s exited %d with findings %+v", ref, r.Code, t)
	}
	return t
}

// resources reads FHIR resources from NDJSON and JSON files under dir,
// keyed by type/id, each as its compact bytes.
func resources(t testing.TB, dir string) map[string][][]byte {
	t.Helper()
	out := map[string][][]byte{}
	add := func(raw []byte, where string) {
		var id struct {
			ResourceType string `json:"resourceType"`
			ID           string `json:"id"`
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, raw); err != nil {
			out["unparsable "+where] = append(out["unparsable "+where], raw)
			return
		}
		json.Unmarshal(buf.Bytes(), &id)
		k := id.ResourceType + "/" + id.ID
		out[k] = append(out[k], buf.Bytes())
	}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		switch {
		case strings.HasSuffix(p, ".ndjson"):
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			sc := bufio.NewScanner(f)
			sc.Buffer(make([]byte, 1<<20), 64<<20)
			for n := 1; sc.Scan(); n++ {
				if len(bytes.TrimSpace(sc.Bytes())) > 0 {
					add(bytes.Clone(sc.Bytes()), fmt.Sprintf("%s:%d", p, n))
				}
			}
			return sc.Err()
		case strings.HasSuffix(p, ".json"):
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			add(b, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// restoreAndCompare restores ref into a fresh folder and compares every
// resource with the input, independently of ehrport's own summary: a
// resource of the input missing is lost, one restored twice duplicated,
// one with other bytes corrupted.
func (w *world) restoreAndCompare(ref, input string) (n int, tl tally) {
	w.t.Helper()
	out := fmt.Sprintf("restored-%d", time.Now().UnixNano())
	if r := w.run("restore", "--from", ref, "--keys", "k", "--to", out); r.Code != 0 {
		w.t.Fatalf("restore %s: %s", ref, r)
	}
	want, got := resources(w.t, w.path(input)), resources(w.t, w.path(out))
	for k, ws := range want {
		gs := got[k]
		switch {
		case len(gs) == 0:
			tl.Lost++
		case len(gs) > 1:
			tl.Duplicated += len(gs) - 1
		}
		if len(gs) > 0 && !bytes.Equal(gs[0], ws[0]) {
			tl.Corrupted++
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			tl.Other = append(tl.Other, "restored but not in the input: "+k)
		}
	}
	os.RemoveAll(w.path(out))
	return len(want), tl
}

// ---------------------------------------------------------------- figures

// record is a scenario's Record, written when its test ends.
type record = Record

// newRecord starts a scenario's record; it is appended to the file named
// by EHRPORT_RELIABILITY_OUT when the test ends, passed or failed.
func newRecord(t *testing.T, group, scenario string, seed uint64) *record {
	r := &record{Group: group, Scenario: scenario, Test: t.Name(), Seed: seed}
	start := time.Now()
	t.Cleanup(func() {
		r.Passed = !t.Failed()
		r.Seconds = int(time.Since(start).Round(time.Second).Seconds())
		t.Logf("record: %+v", *r)
		if err := r.Append(); err != nil {
			t.Errorf("%s: %v", OutEnv, err)
		}
	})
	return r
}

// addTally adds a verification's losses to the record.
func (r *record) addTally(tl tally) {
	r.Lost += tl.Lost
	r.Corrupted += tl.Corrupted
	r.Duplicated += tl.Duplicated
}

// rounds is how many times a random fault loop injects its fault:
// EHRPORT_FAULT_ROUNDS, default 5 (the CI size).
func rounds(t testing.TB) int {
	if v := os.Getenv("EHRPORT_FAULT_ROUNDS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			t.Fatalf("EHRPORT_FAULT_ROUNDS=%q: want a positive number", v)
		}
		return n
	}
	return 5
}

// seed is EHRPORT_FAULT_SEED or a fresh one; it is logged so a failing
// loop can be replayed.
func seed(t testing.TB) uint64 {
	s := uint64(time.Now().UnixNano())
	if v := os.Getenv("EHRPORT_FAULT_SEED"); v != "" {
		var err error
		if s, err = strconv.ParseUint(v, 10, 64); err != nil {
			t.Fatalf("EHRPORT_FAULT_SEED=%q: %v", v, err)
		}
	}
	t.Logf("seed %d (replay with EHRPORT_FAULT_SEED=%d)", s, s)
	return s
}

func newRand(s uint64) *mrand.Rand { return mrand.New(mrand.NewPCG(s, s>>1|1)) }

// until polls cond every few milliseconds while p runs; it reports whether
// cond held before p exited.
func until(p *proc, cond func() bool) bool {
	for p.running() {
		if cond() {
			return true
		}
		time.Sleep(3 * time.Millisecond)
	}
	return false
}

// committedAt counts the .ehr objects a server holds under bucket/prefix.
func committedAt(srv *testserver.Server, bucket, prefix string) func() int {
	return func() int { return srv.Committed(bucket, prefix, ".ehr") }
}

// files lists the regular files under dir, relative and sorted.
func files(t testing.TB, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	sort.Strings(out)
	return out
}
