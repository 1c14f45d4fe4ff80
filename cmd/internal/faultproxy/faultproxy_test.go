package faultproxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"
)

// upstream serves payload to every connection after reading one byte
// (the "request"), then closes.
func upstream(t *testing.T, payload []byte) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				var b [1]byte
				if _, err := c.Read(b[:]); err != nil {
					return
				}
				c.Write(payload)
			}()
		}
	}()
	return ln.Addr().String()
}

func start(t *testing.T, target string) *Proxy {
	t.Helper()
	p, err := New(target, 1)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// fetch sends one byte and reads the answer until EOF, an error, or the
// deadline.
func fetch(t *testing.T, addr string, deadline time.Duration) ([]byte, error) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(deadline))
	if _, err := c.Write([]byte{'?'}); err != nil {
		return nil, err
	}
	return io.ReadAll(c)
}

func payload(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}

func TestForwardAndLatency(t *testing.T) {
	want := payload(200_000)
	p := start(t, upstream(t, want))
	got, err := fetch(t, p.Addr(), 5*time.Second)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("plain: %d bytes, %v", len(got), err)
	}
	p.Set(Fault{Latency: 50 * time.Millisecond})
	t0 := time.Now()
	if got, err = fetch(t, p.Addr(), 5*time.Second); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("latency: %d bytes, %v", len(got), err)
	}
	if d := time.Since(t0); d < 100*time.Millisecond {
		t.Fatalf("latency not applied: %s", d)
	}
	if s := p.Stats(); s.Conns != 2 || s.Injected != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestTruncate(t *testing.T) {
	want := payload(100_000)
	p := start(t, upstream(t, want))
	p.Set(Fault{Break: Truncate, AfterMin: 1234, AfterMax: 1234})
	got, err := fetch(t, p.Addr(), 5*time.Second)
	if err != nil || !bytes.Equal(got, want[:1234]) {
		t.Fatalf("truncated: %d bytes, %v; want the first 1234 then EOF", len(got), err)
	}
	if p.Stats().Injected != 1 {
		t.Fatalf("stats %+v", p.Stats())
	}
}

func TestReset(t *testing.T) {
	p := start(t, upstream(t, payload(100_000)))
	p.Set(Fault{Break: Reset, AfterMin: 10, AfterMax: 5000})
	got, err := fetch(t, p.Addr(), 5*time.Second)
	if !errors.Is(err, syscall.ECONNRESET) || len(got) > 5000 {
		t.Fatalf("reset: %d bytes, %v; want ECONNRESET", len(got), err)
	}
}

func TestStallThenHeal(t *testing.T) {
	p := start(t, upstream(t, payload(100_000)))
	p.Set(Fault{Break: Stall, AfterMin: 100, AfterMax: 100})
	got, err := fetch(t, p.Addr(), 300*time.Millisecond)
	if !errors.Is(err, os.ErrDeadlineExceeded) || len(got) != 100 {
		t.Fatalf("stall: %d bytes, %v; want 100 then a timeout", len(got), err)
	}
	// A stalled connection the client keeps open ends when healed.
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write([]byte{'?'})
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(c, make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	p.Set(Fault{})
	if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("healed stall: %v; want the connection closed", err)
	}
}

func TestLimitAndUp(t *testing.T) {
	want := payload(1000)
	p := start(t, upstream(t, want))
	// Up after 0 bytes: the request never arrives; only the first
	// connection is chosen.
	p.Set(Fault{Break: Truncate, Dir: Up, Limit: 1})
	if got, err := fetch(t, p.Addr(), 5*time.Second); err != nil || len(got) != 0 {
		t.Fatalf("cut request: %d bytes, %v", len(got), err)
	}
	if got, err := fetch(t, p.Addr(), 5*time.Second); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("after the limit: %d bytes, %v", len(got), err)
	}
	if s := p.Stats(); s.Injected != 1 || s.Conns != 2 {
		t.Fatalf("stats %+v", s)
	}
}

func TestTargetDown(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	p := start(t, addr)
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		return // reset before the dial returned
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	// The kernel reports a received RST once, to whichever call comes
	// first: the write if the reset beat it, the read otherwise.
	_, werr := c.Write([]byte{'?'})
	_, rerr := io.ReadAll(c)
	if !errors.Is(werr, syscall.ECONNRESET) && !errors.Is(rerr, syscall.ECONNRESET) {
		t.Fatalf("dead target: write %v, read %v; want a reset", werr, rerr)
	}
}
