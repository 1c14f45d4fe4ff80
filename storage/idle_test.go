package storage

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"testing"
	"time"
)

// idleServer answers every GET with size bytes, sent in chunks of chunk
// bytes every gap, and stops (holding the connection open) after stallAt
// bytes when stallAt > 0.
func idleServer(t *testing.T, size, chunk, stallAt int, gap time.Duration) *S3Store {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Length", strconv.Itoa(size))
		h.Set("Last-Modified", time.Now().UTC().Format(http.TimeFormat))
		h.Set("ETag", `"0123456789abcdef0123456789abcdef"`)
		h.Set("Content-Type", "application/octet-stream")
		w.WriteHeader(http.StatusOK)
		buf := make([]byte, chunk)
		for sent := 0; sent < size; sent += chunk {
			if stallAt > 0 && sent >= stallAt {
				<-r.Context().Done() // the stall: nothing more, connection open
				return
			}
			w.Write(buf[:min(chunk, size-sent)])
			w.(http.Flusher).Flush()
			time.Sleep(gap)
		}
	}))
	t.Cleanup(srv.Close)
	return storeAt(t, srv.URL, "400ms")
}

// storeAt is an S3 store at a plain-http test server with an idle timeout.
func storeAt(t *testing.T, url, idle string) *S3Store {
	t.Helper()
	cfg, err := LoadConfig(os.DevNull, []string{
		"EHRPORT_STORE_IDLE_ENDPOINT=" + url, "EHRPORT_STORE_IDLE_ACCESS_KEY=a", "EHRPORT_STORE_IDLE_SECRET_KEY=b",
		"EHRPORT_STORE_IDLE_ALLOW_HTTP=true", "EHRPORT_STORE_IDLE_PATH_STYLE=path", "EHRPORT_STORE_IDLE_REGION=us-east-1",
		"EHRPORT_STORE_IDLE_IDLE_TIMEOUT=" + idle,
	})
	if err != nil {
		t.Fatal(err)
	}
	st, err := OpenRef(cfg, "idle:bucket")
	if err != nil {
		t.Fatal(err)
	}
	return st.(*S3Store)
}

// A response that stalls part-way fails after the idle timeout, as an
// unavailable store (retried by callers), instead of hanging.
func TestIdleTimeoutStalledBody(t *testing.T) {
	st := idleServer(t, 100_000, 1000, 5000, 0)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rc, err := st.Get(ctx, "obj")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	start := time.Now()
	n, err := io.Copy(io.Discard, rc)
	if !errors.Is(err, ErrUnavailable) || n != 5000 {
		t.Fatalf("stalled body: read %d bytes, err %v; want 5000 then ErrUnavailable", n, err)
	}
	if d := time.Since(start); d > 5*time.Second || ctx.Err() != nil {
		t.Fatalf("the stall was noticed after %s", d)
	}
}

// A slow body that keeps moving is never cut, however long it takes in
// total.
func TestIdleTimeoutSlowBodyCompletes(t *testing.T) {
	st := idleServer(t, 2000, 200, 0, 150*time.Millisecond)
	rc, err := st.Get(context.Background(), "obj")
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	start := time.Now()
	n, err := io.Copy(io.Discard, rc)
	if err != nil || n != 2000 {
		t.Fatalf("slow body: %d bytes, %v", n, err)
	}
	if d := time.Since(start); d < 800*time.Millisecond {
		t.Fatalf("the body came in %s: the test did not exceed the idle timeout in total", d)
	}
}

// A server that takes a request in full and never answers: the wait for
// its headers ends after the idle timeout as a retryable unavailability,
// not as a deadline the caller would take for its own.
func TestIdleTimeoutNoHeaders(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	st := storeAt(t, srv.URL, "300ms")
	body := []byte("a small object that fits in the socket buffers")
	err := st.Put(context.Background(), "k", bytes.NewReader(body), int64(len(body)), PutOptions{})
	if !errors.Is(err, ErrUnavailable) || !Retryable(err) || errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("put to a mute server: %v; want a retryable ErrUnavailable that is not a context deadline", err)
	}
	// The caller's own deadline stays the caller's.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err = st.Stat(ctx, "k")
	if !errors.Is(err, context.DeadlineExceeded) || Retryable(err) {
		t.Fatalf("stat past the caller's deadline: %v; want context.DeadlineExceeded, not retried", err)
	}
}

func TestIdleTimeoutConfig(t *testing.T) {
	cfg, err := LoadConfig(os.DevNull, []string{"EHRPORT_STORE_X_ENDPOINT=https://h"})
	if err != nil {
		t.Fatal(err)
	}
	if got := time.Duration(cfg.Stores["X"].IdleTimeout); got != DefaultIdleTimeout {
		t.Fatalf("default idle timeout %s", got)
	}
	for _, bad := range []string{"0s", "-1m", "soon"} {
		if _, err := LoadConfig(os.DevNull, []string{"EHRPORT_STORE_X_ENDPOINT=https://h", "EHRPORT_STORE_X_IDLE_TIMEOUT=" + bad}); !errors.Is(err, ErrBadConfig) {
			t.Errorf("IDLE_TIMEOUT=%s: %v, want ErrBadConfig", bad, err)
		}
	}
}
