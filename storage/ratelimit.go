package storage

import (
	"context"
	"io"
	"time"

	"golang.org/x/time/rate"
)

// RateLimiter caps the bytes per second that pass through the readers it
// wraps, all of them together: one limiter shared by every copy (and every
// range read within a copy) bounds the whole transfer. It is a token bucket
// (golang.org/x/time/rate) with a small burst, so the average holds over
// any second or two while single reads stay cheap.
//
// A nil *RateLimiter does not limit.
type RateLimiter struct {
	lim   *rate.Limiter
	burst int
	// now and sleep are the clock; tests replace them.
	now   func() time.Time
	sleep func(ctx context.Context, d time.Duration) error
}

// Burst bounds: small enough that a limit is felt within a fraction of a
// second, large enough that fast links are not throttled by bookkeeping.
const (
	minBurst = 16 << 10
	maxBurst = 256 << 10
)

// NewRateLimiter returns a limiter of bytesPerSecond (> 0).
func NewRateLimiter(bytesPerSecond int64) *RateLimiter {
	burst := int(min(max(bytesPerSecond/16, minBurst), maxBurst))
	return &RateLimiter{
		lim:   rate.NewLimiter(rate.Limit(bytesPerSecond), burst),
		burst: burst,
		now:   time.Now,
		sleep: sleepCtx,
	}
}

// BytesPerSecond returns the limit.
func (l *RateLimiter) BytesPerSecond() int64 {
	if l == nil {
		return 0
	}
	return int64(l.lim.Limit())
}

// WaitN blocks until n more bytes may pass, or ctx is done.
func (l *RateLimiter) WaitN(ctx context.Context, n int) error {
	if l == nil {
		return nil
	}
	for n > 0 {
		k := min(n, l.burst)
		n -= k
		now := l.now()
		r := l.lim.ReserveN(now, k)
		if d := r.DelayFrom(now); d > 0 {
			if err := l.sleep(ctx, d); err != nil {
				r.CancelAt(l.now())
				return err
			}
		}
	}
	return nil
}

// Reader returns r limited by l. Each Read asks for at most one burst and
// pays for the bytes it got before returning them.
func (l *RateLimiter) Reader(ctx context.Context, r io.Reader) io.Reader {
	if l == nil {
		return r
	}
	return &limitedReader{ctx: ctx, l: l, r: r}
}

type limitedReader struct {
	ctx context.Context
	l   *RateLimiter
	r   io.Reader
}

func (lr *limitedReader) Read(p []byte) (int, error) {
	if len(p) > lr.l.burst {
		p = p[:lr.l.burst]
	}
	n, err := lr.r.Read(p)
	if n > 0 {
		if werr := lr.l.WaitN(lr.ctx, n); werr != nil {
			return 0, werr
		}
	}
	return n, err
}
