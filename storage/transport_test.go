package storage

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingServer is an httptest TLS server that counts the connections
// clients opened, with a transport for it as NewS3Store builds one.
type countingServer struct {
	*httptest.Server
	conns atomic.Int64
	rt    *syncTransport
}

func newCountingServer(t *testing.T, h http.HandlerFunc, configure ...func(*http.Server)) *countingServer {
	t.Helper()
	cs := &countingServer{}
	cs.Server = httptest.NewUnstartedServer(h)
	for _, f := range configure {
		f(cs.Config)
	}
	cs.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			cs.conns.Add(1)
		}
	}
	cs.StartTLS()
	t.Cleanup(cs.Close)
	cfg := cs.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	cs.rt = newTransport(cfg, 5*time.Second)
	cs.rt.proxy = nil // the environment's proxy settings are not under test
	t.Cleanup(cs.rt.CloseIdleConnections)
	return cs
}

func (cs *countingServer) do(t *testing.T, method, path string, body io.Reader) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequest(method, cs.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	return cs.rt.RoundTrip(req)
}

// pooled is how many connections wait in rt's pool.
func (t *syncTransport) pooled() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, conns := range t.idle {
		n += len(conns)
	}
	return n
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return string(b)
}

func TestSyncTransportReusesConnection(t *testing.T) {
	payload := strings.Repeat("x", 20000)
	cs := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodPut:
			b, _ := io.ReadAll(r.Body)
			w.Header().Set("ETag", fmt.Sprint(len(b)))
		case http.MethodHead:
			w.Header().Set("Content-Length", "20000")
		default:
			io.WriteString(w, payload)
		}
	})
	for i := range 50 {
		resp, err := cs.do(t, http.MethodGet, "/obj", nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, resp); got != payload {
			t.Fatalf("GET %d: %d bytes, want %d", i, len(got), len(payload))
		}
		resp, err = cs.do(t, http.MethodPut, "/obj", bytes.NewReader([]byte(payload)))
		if err != nil {
			t.Fatal(err)
		}
		readAll(t, resp)
		if resp.Header.Get("ETag") != "20000" {
			t.Fatalf("PUT %d: the server read %s bytes", i, resp.Header.Get("ETag"))
		}
		resp, err = cs.do(t, http.MethodHead, "/obj", nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.Body != http.NoBody || resp.ContentLength != 20000 {
			t.Fatalf("HEAD: body %T, length %d", resp.Body, resp.ContentLength)
		}
		resp.Body.Close()
	}
	if n := cs.conns.Load(); n != 1 {
		t.Fatalf("150 sequential requests opened %d connections, want 1", n)
	}
}

func TestSyncTransportChunkedResponse(t *testing.T) {
	cs := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		for i := range 5 {
			fmt.Fprintf(w, "part %d;", i)
			w.(http.Flusher).Flush() // no Content-Length: chunked
		}
	})
	for range 3 {
		resp, err := cs.do(t, http.MethodGet, "/", nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := readAll(t, resp); got != "part 0;part 1;part 2;part 3;part 4;" {
			t.Fatalf("body %q", got)
		}
	}
	if n := cs.conns.Load(); n != 1 {
		t.Fatalf("%d connections, want 1", n)
	}
}

// A body closed before its end, or a response that asks to close, leaves
// its connection unusable: the next request must open another, and must
// not wait for the rest of the body.
func TestSyncTransportClosesUnfinishedConnections(t *testing.T) {
	big := bytes.Repeat([]byte("y"), 1<<20)
	cs := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/close":
			w.Header().Set("Connection", "close")
		case "/unending":
			// Promises more than it sends, until the client hangs up.
			w.Header().Set("Content-Length", fmt.Sprint(2*len(big)))
			w.Write(big)
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			return
		}
		w.Write(big)
	})
	resp, err := cs.do(t, http.MethodGet, "/unending", nil)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1000)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	resp.Body.Close()
	if _, err := resp.Body.Read(buf); err == nil {
		t.Fatal("a read after Close succeeded")
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Close took %v: it read the rest of the body", d)
	}
	resp, err = cs.do(t, http.MethodGet, "/close", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := readAll(t, resp); len(got) != len(big) {
		t.Fatalf("%d bytes", len(got))
	}
	if _, err := resp.Body.Read(buf); err == nil {
		t.Fatal("a read after the end and Close succeeded")
	}
	if n := cs.rt.pooled(); n != 0 {
		t.Fatalf("%d connections pooled after a response that said Connection: close", n)
	}
	resp, err = cs.do(t, http.MethodGet, "/big", nil)
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if n := cs.conns.Load(); n != 3 {
		t.Fatalf("%d connections, want 3 (one per request: none could be reused)", n)
	}
}

func TestSyncTransportBodyReadsEOFAgain(t *testing.T) {
	cs := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "abc") })
	resp, err := cs.do(t, http.MethodGet, "/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if b, _ := io.ReadAll(resp.Body); string(b) != "abc" {
		t.Fatalf("%q", b)
	}
	for range 2 {
		if n, err := resp.Body.Read(make([]byte, 4)); n != 0 || err != io.EOF {
			t.Fatalf("read after the end: %d, %v; want 0, EOF", n, err)
		}
	}
}

func TestSyncTransportConcurrent(t *testing.T) {
	cs := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	})
	const workers, each = 8, 100
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for g := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				want := fmt.Sprintf("worker %d request %d %s", g, i, strings.Repeat("z", i*50))
				req, _ := http.NewRequest(http.MethodPut, cs.URL+"/echo", strings.NewReader(want))
				resp, err := cs.rt.RoundTrip(req)
				if err != nil {
					errs <- err
					return
				}
				got, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || string(got) != want {
					errs <- fmt.Errorf("echo: %q, %v", got, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if n := cs.conns.Load(); n > workers {
		t.Fatalf("%d connections for %d workers", n, workers)
	}
}

// A request whose context ends stops at once, in the wait for the
// response and in its body, with the context's error.
func TestSyncTransportContextCancel(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	cs := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/body" {
			w.Header().Set("Content-Length", "1000000")
			io.WriteString(w, "first bytes")
			w.(http.Flusher).Flush()
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})
	for _, path := range []string{"/headers", "/body"} {
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, cs.URL+path, nil)
		time.AfterFunc(100*time.Millisecond, cancel)
		start := time.Now()
		resp, err := cs.rt.RoundTrip(req)
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("%s: %v, want context.Canceled", path, err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("%s: the cancel took %v", path, d)
		}
	}
}

// When the request's body fails (a copy's source), that error is what the
// caller sees, and the server never gets a complete request.
func TestSyncTransportBodyError(t *testing.T) {
	var got atomic.Int64
	cs := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err == nil {
			got.Add(1)
		}
	})
	bodyErr := errors.New("the source ended early")
	req, _ := http.NewRequest(http.MethodPut, cs.URL+"/obj", io.MultiReader(strings.NewReader("half"), &failingReader{bodyErr}))
	req.ContentLength = 100
	_, err := cs.rt.RoundTrip(req)
	if !errors.Is(err, bodyErr) {
		t.Fatalf("%v, want the body's error", err)
	}
	resp, err := cs.do(t, http.MethodPut, "/obj", strings.NewReader("whole"))
	if err != nil {
		t.Fatal(err)
	}
	readAll(t, resp)
	if got.Load() != 1 {
		t.Fatalf("the server completed %d requests, want 1 (the second)", got.Load())
	}
}

type failingReader struct{ err error }

func (f *failingReader) Read([]byte) (int, error) { return 0, f.err }

// rawServer accepts plain TCP connections and runs serve on each.
// It returns a transport and the server's URL.
func rawServer(t *testing.T, serve func(c net.Conn, br *bufio.Reader)) (*syncTransport, string) {
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
				serve(c, bufio.NewReader(c))
			}()
		}
	}()
	rt := newTransport(&tls.Config{}, 5*time.Second)
	rt.proxy = nil
	t.Cleanup(rt.CloseIdleConnections)
	return rt, "http://" + ln.Addr().String()
}

// A server that refuses a request before reading its body, and closes:
// the caller gets the refusal, not the broken pipe of the unsent body.
func TestSyncTransportEarlyResponse(t *testing.T) {
	rt, base := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 403 Forbidden\r\nContent-Length: 6\r\nConnection: close\r\n\r\ndenied")
		c.(*net.TCPConn).CloseWrite()
		time.Sleep(50 * time.Millisecond)
		c.(*net.TCPConn).SetLinger(0) // reset: the client's writes fail
	})
	req, _ := http.NewRequest(http.MethodPut, base+"/obj", bytes.NewReader(make([]byte, 64<<20)))
	resp, err := rt.RoundTrip(req)
	if err != nil {
		t.Fatalf("%v, want the server's 403", err)
	}
	if resp.StatusCode != http.StatusForbidden || readAll(t, resp) != "denied" {
		t.Fatalf("status %d", resp.StatusCode)
	}
}

func TestSyncTransportSkipsInformational(t *testing.T) {
	rt, base := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		for {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	for range 2 {
		req, _ := http.NewRequest(http.MethodGet, base+"/", nil)
		resp, err := rt.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || readAll(t, resp) != "ok" {
			t.Fatalf("status %d", resp.StatusCode)
		}
	}
}

// A server that closes a pooled connection: the next request goes out on
// a new one, found either by the check of a connection pooled for a while
// or by sending a replayable request again.
func TestSyncTransportServerClosedIdle(t *testing.T) {
	var conns atomic.Int64
	rt, base := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		conns.Add(1)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		io.Copy(io.Discard, req.Body)
		// Answers one request, then closes as an idle timeout would.
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		time.Sleep(20 * time.Millisecond)
	})
	get := func(body io.Reader) error {
		req, _ := http.NewRequest(http.MethodPut, base+"/", body)
		resp, err := rt.RoundTrip(req)
		if err != nil {
			return err
		}
		if b := readAll(t, resp); b != "ok" {
			return fmt.Errorf("body %q", b)
		}
		return nil
	}
	if err := get(strings.NewReader("a")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	// Pooled for less than probeAfter: sent, found closed, sent again.
	if err := get(strings.NewReader("b")); err != nil {
		t.Fatalf("replayable request on a closed pooled connection: %v", err)
	}
	// A body that cannot be had again relies on the check.
	time.Sleep(probeAfter + 100*time.Millisecond)
	if err := get(io.MultiReader(strings.NewReader("c"))); err != nil {
		t.Fatalf("after the check: %v", err)
	}
	if n := conns.Load(); n != 3 {
		t.Fatalf("%d connections, want 3", n)
	}
}

// The same over TLS, where the server's close arrives as a close_notify
// that the request's write does not notice: the read of the response does.
func TestSyncTransportServerClosedIdleTLS(t *testing.T) {
	cs := newCountingServer(t, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") },
		func(s *http.Server) { s.IdleTimeout = 20 * time.Millisecond })
	for i := range 3 {
		resp, err := cs.do(t, http.MethodGet, "/", nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		readAll(t, resp)
		time.Sleep(150 * time.Millisecond)
	}
	if n := cs.conns.Load(); n != 3 {
		t.Fatalf("%d connections, want 3", n)
	}
}

// A POST is not sent twice, even when its connection was found closed.
func TestSyncTransportDoesNotReplayPost(t *testing.T) {
	var reqs atomic.Int64
	rt, base := rawServer(t, func(c net.Conn, br *bufio.Reader) {
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			if reqs.Add(1) == 2 {
				return // closes without an answer
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		}
	})
	for i := range 2 {
		req, _ := http.NewRequest(http.MethodPost, base+"/", strings.NewReader("complete"))
		resp, err := rt.RoundTrip(req)
		if i == 0 {
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			continue
		}
		if err == nil {
			t.Fatal("an unanswered POST succeeded")
		}
	}
	if n := reqs.Load(); n != 2 {
		t.Fatalf("the server got %d POSTs, want 2", n)
	}
}

// What syncTransport does not handle goes to net/http's transport as is.
func TestSyncTransportFallback(t *testing.T) {
	rec := &recordingRT{}
	rt := &syncTransport{fallback: rec, proxy: func(r *http.Request) (*url.URL, error) {
		if r.URL.Host == "via-proxy.example" {
			return url.Parse("http://proxy.example:3128")
		}
		return nil, nil
	}}
	for _, c := range []struct {
		method, url string
		header      string
	}{
		{http.MethodGet, "http://via-proxy.example/x", ""},
		{http.MethodPut, "https://store.example/x", "Expect"},
		{http.MethodGet, "ftp://store.example/x", ""},
	} {
		req, _ := http.NewRequest(c.method, c.url, nil)
		if c.header != "" {
			req.Header.Set(c.header, "100-continue")
		}
		if _, err := rt.RoundTrip(req); err != errRecorded {
			t.Fatalf("%s %s: %v, want the fallback", c.method, c.url, err)
		}
	}
	if rec.n != 3 {
		t.Fatalf("fallback got %d requests, want 3", rec.n)
	}
}

var errRecorded = errors.New("recorded")

type recordingRT struct{ n int }

func (r *recordingRT) RoundTrip(*http.Request) (*http.Response, error) {
	r.n++
	return nil, errRecorded
}

func TestCanonicalAddr(t *testing.T) {
	for in, want := range map[string]string{
		"https://s3.example":       "s3.example:443",
		"http://s3.example":        "s3.example:80",
		"https://s3.example:9000":  "s3.example:9000",
		"https://[::1]/bucket":     "[::1]:443",
		"http://127.0.0.1:29154/b": "127.0.0.1:29154",
	} {
		u, err := url.Parse(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := canonicalAddr(u); got != want {
			t.Errorf("canonicalAddr(%s) = %s, want %s", in, got, want)
		}
	}
}
