package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"sync"
	"testing"
	"time"
)

// fakeClock is a clock whose sleeps advance it: rate tests take no wall time.
type fakeClock struct {
	mu    sync.Mutex
	t     time.Time
	slept time.Duration
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	c.slept += d
	return ctx.Err()
}

func fakeLimiter(bps int64) (*RateLimiter, *fakeClock) {
	c := &fakeClock{t: time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)}
	l := NewRateLimiter(bps)
	l.now, l.sleep = c.now, c.sleep
	return l, c
}

func TestRateLimiterHonoured(t *testing.T) {
	const bps = 1 << 20
	l, c := fakeLimiter(bps)
	n, err := io.Copy(io.Discard, l.Reader(context.Background(), bytes.NewReader(make([]byte, 10<<20))))
	if err != nil || n != 10<<20 {
		t.Fatal(n, err)
	}
	// 10 MiB at 1 MiB/s: 10 s, less the initial burst.
	want := 10*time.Second - time.Duration(float64(l.burst)/bps*float64(time.Second))
	if d := c.slept - want; d < -50*time.Millisecond || d > 50*time.Millisecond {
		t.Errorf("slept %v for 10 MiB at 1 MiB/s, want about %v", c.slept, want)
	}
}

// Readers sharing one limiter share its rate. They take turns from one
// goroutine so the fake clock is exact; TestCopyConcurrent covers the
// limiter under -race.
func TestRateLimiterShared(t *testing.T) {
	const bps = 4 << 20
	l, c := fakeLimiter(bps)
	var readers []io.Reader
	for range 4 {
		readers = append(readers, l.Reader(context.Background(), bytes.NewReader(make([]byte, 4<<20))))
	}
	buf := make([]byte, 100<<10)
	for done := 0; done < len(readers); {
		done = 0
		for _, r := range readers {
			if _, err := r.Read(buf); err == io.EOF {
				done++
			}
		}
	}
	// 16 MiB at 4 MiB/s is 4 s, less the initial burst.
	want := 4*time.Second - time.Duration(float64(l.burst)/bps*float64(time.Second))
	if d := c.slept - want; d < -50*time.Millisecond || d > 50*time.Millisecond {
		t.Errorf("4 readers × 4 MiB at 4 MiB/s took %v of clock time, want about %v", c.slept, want)
	}
}

func TestRateLimiterCancel(t *testing.T) {
	l, _ := fakeLimiter(1 << 10)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := io.Copy(io.Discard, l.Reader(ctx, bytes.NewReader(make([]byte, 1<<20))))
	if err != context.Canceled {
		t.Fatalf("cancelled limited read: %v", err)
	}
	var nilLimiter *RateLimiter
	r := bytes.NewReader(nil)
	if nilLimiter.Reader(ctx, r) != r || nilLimiter.WaitN(ctx, 1<<30) != nil || nilLimiter.BytesPerSecond() != 0 {
		t.Error("a nil limiter limits")
	}
}

// Copy spends the limiter on the source and on the read-back proof.
func TestCopyRateLimited(t *testing.T) {
	src, _ := NewLocalStore(t.TempDir())
	dst, _ := NewLocalStore(t.TempDir())
	body := make([]byte, 3<<20)
	for i := range body {
		body[i] = byte(i * 7)
	}
	sum := sha256.Sum256(body)
	if err := src.Put(context.Background(), "k", bytes.NewReader(body), int64(len(body)), PutOptions{}); err != nil {
		t.Fatal(err)
	}
	const bps = 1 << 20
	for _, part := range []int64{1 << 20, 1 << 30} { // ranged, single stream
		l, c := fakeLimiter(bps)
		_, err := Copy(context.Background(), src, dst, "k", CopyOptions{Size: int64(len(body)), SHA256: sum[:], PartSize: part, Parallel: 3, Limiter: l})
		if err != nil {
			t.Fatal(err)
		}
		// 3 MiB from the source and 3 MiB read back at 1 MiB/s: about 6 s.
		if c.slept < 5800*time.Millisecond || c.slept > 6100*time.Millisecond {
			t.Errorf("part %d: copy of 3 MiB at 1 MiB/s took %v of clock time, want about 6s", part, c.slept)
		}
	}
}
