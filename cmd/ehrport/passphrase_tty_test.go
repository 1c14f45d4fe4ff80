//go:build linux

package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

// The passphrase typed at the terminal prompt is never echoed: keys init
// runs on a real pseudo-terminal (its controlling terminal, as for a
// person), the test types the passphrase after each prompt and reads
// everything the terminal shows. The keys it made then open with that
// passphrase, so the typing did reach the program.
func TestPassphraseNotEchoed(t *testing.T) {
	const secret = "PlantedTTYPassphrase4711"
	master, slave := openPTY(t)
	defer master.Close()
	dir := t.TempDir()
	kdir := filepath.Join(dir, "k")
	cmd := exec.Command("ehrport", "keys", "init", "--keys", kdir)
	cmd.Dir = dir
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "EHRPORT_PASSPHRASE=") {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Setctty: true, Ctty: 0}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close()

	chunks := make(chan []byte, 64)
	go func() {
		defer close(chunks)
		buf := make([]byte, 4096)
		for {
			n, err := master.Read(buf)
			if n > 0 {
				chunks <- append([]byte(nil), buf[:n]...)
			}
			if err != nil { // EIO once the program has exited
				return
			}
		}
	}()
	// Type each answer only once its prompt is shown, as a person would:
	// before that the terminal still echoes.
	var seen strings.Builder
	typed := 0
	timeout := time.After(2 * time.Minute)
read:
	for {
		select {
		case c, ok := <-chunks:
			if !ok {
				break read
			}
			seen.Write(c)
			if (typed == 0 && strings.Contains(seen.String(), "Passphrase for")) ||
				(typed == 1 && strings.Contains(seen.String(), "Repeat passphrase")) {
				assertEchoOff(t, master)
				fmt.Fprintf(master, "%s\n", secret)
				typed++
			}
		case <-timeout:
			cmd.Process.Kill()
			t.Fatalf("keys init on a terminal did not finish; it showed:\n%s", seen.String())
		}
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("keys init on a terminal: %v\n%s", err, seen.String())
	}
	out := seen.String()
	if typed != 2 || !strings.Contains(out, "Created key directory") {
		t.Fatalf("prompts answered %d of 2; terminal showed:\n%s", typed, out)
	}
	if strings.Contains(out, secret) {
		t.Fatalf("the passphrase was echoed:\n%s", out)
	}
	res := runEhrport(t, append(env, "EHRPORT_PASSPHRASE="+secret), []string{"keys", "rotate", "--keys", kdir})
	if res.code != 0 {
		t.Fatalf("the typed passphrase does not open the keys: exit %d\n%s", res.code, res.stderr)
	}
}

// assertEchoOff fails unless the terminal's echo is already off when the
// prompt has been shown: ehrport turns echo off before printing it, so
// nothing typed in answer to the prompt is ever echoed.
func assertEchoOff(t *testing.T, master *os.File) {
	t.Helper()
	var tio syscall.Termios
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, master.Fd(), syscall.TCGETS, uintptr(unsafe.Pointer(&tio))); e != 0 {
		t.Fatalf("tcgetattr: %v", e)
	}
	if tio.Lflag&syscall.ECHO != 0 {
		t.Fatal("the prompt is shown while the terminal still echoes: typing now would show the passphrase")
	}
}

// openPTY opens a pseudo-terminal pair with the Linux ptmx interface.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	var unlock int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCSPTLCK, uintptr(unsafe.Pointer(&unlock))); e != 0 {
		m.Close()
		t.Fatalf("unlockpt: %v", e)
	}
	var n uint32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, m.Fd(), syscall.TIOCGPTN, uintptr(unsafe.Pointer(&n))); e != 0 {
		m.Close()
		t.Fatalf("ptsname: %v", e)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		m.Close()
		t.Skipf("opening the terminal's other end: %v", err)
	}
	return m, s
}
