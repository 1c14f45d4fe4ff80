package storage

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"testing"
	"time"
)

// countConn counts the reads of the connection under an idleConn.
type countConn struct {
	net.Conn
	reads int
}

func (c *countConn) Read(p []byte) (int, error) { c.reads++; return c.Conn.Read(p) }

// tcpPair is a connected loopback TCP pair: the client end is wrapped
// like the store's connections.
func tcpPair(t *testing.T, idle time.Duration) (*idleConn, *countConn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() { c, _ := ln.Accept(); accepted <- c }()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	srv := <-accepted
	cc := &countConn{Conn: c}
	t.Cleanup(func() { c.Close(); srv.Close() })
	return &idleConn{Conn: cc, idle: idle}, cc, srv
}

// A stream read as crypto/tls reads it (a record at a time) arrives
// whole and in order, in far fewer reads of the connection, and a short
// message at the end leaves the connection holding no buffer: an idle
// connection waits in a read of its own size.
func TestIdleConnBuffersStreams(t *testing.T) {
	c, cc, srv := tcpPair(t, 5*time.Second)
	data := make([]byte, 8<<20)
	rand.NewChaCha8([32]byte{9}).Read(data)
	tail := []byte("end of response")
	gotData := make(chan struct{})
	go func() {
		srv.Write(data)
		<-gotData // the tail comes alone, as the next response would
		srv.Write(tail)
	}()
	var got bytes.Buffer
	p := make([]byte, 16<<10+21)
	calls := 0
	for got.Len() < len(data)+len(tail) {
		n, err := c.Read(p)
		if err != nil {
			t.Fatal(err)
		}
		got.Write(p[:n])
		calls++
		if got.Len() == len(data) {
			close(gotData)
		}
	}
	if !bytes.Equal(got.Bytes(), append(data, tail...)) {
		t.Fatal("bytes read differ from bytes sent")
	}
	if cc.reads*4 > calls {
		t.Errorf("%d reads of the connection for %d reads of 16 KiB: not buffered", cc.reads, calls)
	}
	if c.buf != nil || c.streaming {
		t.Errorf("after a short message the connection still holds a buffer (%v) or streams (%v)", c.buf != nil, c.streaming)
	}
}

// The idle timeout still fails a read that gets nothing, buffered or not.
func TestIdleConnTimeoutWhileStreaming(t *testing.T) {
	c, _, srv := tcpPair(t, 100*time.Millisecond)
	c.streaming = true // as in the middle of a body
	go srv.Write(make([]byte, 1000))
	p := make([]byte, 16<<10)
	if n, err := c.Read(p); err != nil || n != 1000 {
		t.Fatalf("read %d, %v; want 1000 bytes", n, err)
	}
	start := time.Now()
	_, err := c.Read(p)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("a silent connection: %v, want a timeout", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("timeout after %v, want about 100ms", d)
	}
}

// errAfter returns its data and an error in the same read.
type errAfter struct {
	net.Conn
	data []byte
	err  error
}

func (e *errAfter) Read(p []byte) (int, error) {
	n := copy(p, e.data)
	e.data = e.data[n:]
	if len(e.data) == 0 {
		return n, e.err
	}
	return n, nil
}

func (e *errAfter) SetReadDeadline(time.Time) error { return nil }

// Bytes that came with an error are all returned before the error.
func TestIdleConnErrorAfterBytes(t *testing.T) {
	boom := errors.New("reset")
	c := &idleConn{Conn: &errAfter{data: bytes.Repeat([]byte("x"), 100<<10), err: boom}, idle: time.Second, streaming: true}
	got, err := io.ReadAll(io.LimitReader(readerFunc(func(p []byte) (int, error) { return c.Read(p[:min(len(p), 4096)]) }), 1<<30))
	if len(got) != 100<<10 || !errors.Is(err, boom) {
		t.Fatalf("got %d bytes and %v, want %d and the error", len(got), err, 100<<10)
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }
