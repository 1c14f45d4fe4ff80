//go:build integration

package reliability

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// Local failures need a disk that fills up and a folder that is read-only
// even for root. The child gets them in a mount namespace of its own (as
// root, or as a user through a user namespace): a small tmpfs, or a
// read-only bind mount, seen by the child only and gone when it exits.
// Before exiting, the child lists what it left on that mount into a file
// outside it, for the test to inspect.
const (
	tmpfsEnv   = "EHRPORT_RELIABILITY_TMPFS"   // DIR:SIZE
	roEnv      = "EHRPORT_RELIABILITY_RO"      // DIR
	listingEnv = "EHRPORT_RELIABILITY_LISTING" // FILE
	fsizeEnv   = "EHRPORT_RELIABILITY_FSIZE"   // bytes: RLIMIT_FSIZE fallback
)

func childSetup() error {
	if spec := os.Getenv(tmpfsEnv); spec != "" {
		dir, size, _ := strings.Cut(spec, ":")
		if err := syscall.Mount("tmpfs", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV, "size="+size+",mode=0700"); err != nil {
			return fmt.Errorf("mount tmpfs on %s: %w", dir, err)
		}
	}
	if dir := os.Getenv(roEnv); dir != "" {
		if err := syscall.Mount(dir, dir, "", syscall.MS_BIND, ""); err != nil {
			return fmt.Errorf("bind %s: %w", dir, err)
		}
		if err := syscall.Mount("", dir, "", syscall.MS_BIND|syscall.MS_REMOUNT|syscall.MS_RDONLY, ""); err != nil {
			return fmt.Errorf("remount %s read-only: %w", dir, err)
		}
	}
	if v := os.Getenv(fsizeEnv); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return err
		}
		// Go ignores SIGXFSZ, so a write past the limit fails with EFBIG.
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &syscall.Rlimit{Cur: n, Max: n}); err != nil {
			return err
		}
	}
	return nil
}

// childTeardown writes "path size" lines for every file under the mounted
// folder, so the test sees what the command left behind.
func childTeardown() error {
	out := os.Getenv(listingEnv)
	if out == "" {
		return nil
	}
	dir, _, _ := strings.Cut(os.Getenv(tmpfsEnv), ":")
	if dir == "" {
		dir = os.Getenv(roEnv)
	}
	var b strings.Builder
	filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			rel, _ := filepath.Rel(dir, p)
			fmt.Fprintf(&b, "%s %d\n", rel, fi.Size())
		}
		return nil
	})
	return os.WriteFile(out, []byte(b.String()), 0o600)
}

// namespaced makes p's child start in a mount namespace of its own.
func namespaced(p *proc) {
	attr := p.cmd.SysProcAttr
	if os.Geteuid() == 0 {
		attr.Unshareflags = syscall.CLONE_NEWNS
		return
	}
	uid, gid := os.Getuid(), os.Getgid()
	attr.Cloneflags = syscall.CLONE_NEWUSER | syscall.CLONE_NEWNS
	attr.UidMappings = []syscall.SysProcIDMap{{ContainerID: uid, HostID: uid, Size: 1}}
	attr.GidMappings = []syscall.SysProcIDMap{{ContainerID: gid, HostID: gid, Size: 1}}
}

var (
	nsOnce sync.Once
	nsErr  error
)

// mountNamespaces reports whether this machine lets the tests mount in a
// namespace of their own (root, or unprivileged user namespaces).
func mountNamespaces(w *world) error {
	nsOnce.Do(func() {
		dir := w.t.TempDir()
		p := w.command([]string{tmpfsEnv + "=" + dir + ":1m"}, "--version")
		namespaced(p)
		r := p.begin().wait()
		if r.Code != 0 {
			nsErr = fmt.Errorf("a child in a mount namespace exited %d: %s", r.Code, r.Stderr)
		}
	})
	return nsErr
}

// runMounted runs ehrport ARGS with a tmpfs of size (or, with ro, a
// read-only bind mount) on dir, and returns what the command left there.
func (w *world) runMounted(dir, size string, ro bool, args ...string) (result, []string) {
	w.t.Helper()
	listing := filepath.Join(w.t.TempDir(), "listing")
	env := []string{listingEnv + "=" + listing}
	if ro {
		env = append(env, roEnv+"="+dir)
	} else {
		env = append(env, tmpfsEnv+"="+dir+":"+size)
	}
	p := w.command(env, args...)
	namespaced(p)
	r := p.begin().wait()
	b, err := os.ReadFile(listing)
	if err != nil && r.Code != 99 {
		w.t.Fatalf("no listing from the child: %v\n%s", err, r)
	}
	if r.Code == 99 {
		w.t.Fatalf("the child could not set up its mount: %s", r)
	}
	var left []string
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l != "" {
			left = append(left, l)
		}
	}
	return r, left
}

var (
	copyOnce sync.Once
	copyPath string
	copyErr  error
)

// unprivileged makes p's child run as nobody when the tests run as root,
// for whom permission bits mean nothing. The child is a copy of the test
// binary in a folder nobody can read.
func unprivileged(t testing.TB, p *proc) {
	if os.Geteuid() != 0 {
		return
	}
	copyOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ehrport-reliability-bin-")
		if err != nil {
			copyErr = err
			return
		}
		os.Chmod(dir, 0o755)
		exe, _ := os.Executable()
		copyPath = filepath.Join(dir, "ehrport-test")
		copyErr = copyFile(exe, copyPath, 0o755)
	})
	if copyErr != nil {
		t.Fatalf("copy the test binary for an unprivileged child: %v", copyErr)
	}
	p.cmd.Path = copyPath
	p.cmd.Args[0] = copyPath
	p.cmd.SysProcAttr.Credential = &syscall.Credential{Uid: 65534, Gid: 65534}
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return errors.Join(out.Close(), os.Chmod(dst, mode))
}

// removeCopies deletes the binary copied for unprivileged children.
func removeCopies() {
	if copyPath != "" {
		os.RemoveAll(filepath.Dir(copyPath))
	}
}
