package storage

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"
)

// RetryPolicy is a bounded retry with exponential back-off and jitter, for
// failures that another attempt can cure: a store that answered 503
// SlowDown, timed out, reset the connection or went down for a moment.
//
// Only errors that wrap ErrUnavailable are retried. ErrPermission,
// ErrNotExist, ErrBadRef, ErrBadConfig and ErrIntegrity are answers, not
// accidents: trying again would give the same answer, or (for integrity)
// hide a store that changes bytes. A cancelled context ends the retries at
// once.
type RetryPolicy struct {
	// Attempts is the total number of tries, the first included. Zero means
	// DefaultRetryPolicy's; 1 disables retries.
	Attempts int
	// Base is the delay before the second try; each later delay doubles,
	// up to Max. Zero means the default's.
	Base time.Duration
	Max  time.Duration

	// Sleep waits for d or until ctx is done, returning ctx.Err() in that
	// case. Nil means a real timer. Tests inject a recorder.
	Sleep func(ctx context.Context, d time.Duration) error
	// Jitter returns a number in [0, 1). Nil means math/rand/v2.
	Jitter func() float64
}

// DefaultRetryPolicy: 5 tries over about 15 s at most, enough to ride out a
// server restart or a burst of SlowDown without hiding a store that is down.
var DefaultRetryPolicy = RetryPolicy{Attempts: 5, Base: 500 * time.Millisecond, Max: 8 * time.Second}

func (p RetryPolicy) withDefaults() RetryPolicy {
	if p.Attempts <= 0 {
		p.Attempts = DefaultRetryPolicy.Attempts
	}
	if p.Base <= 0 {
		p.Base = DefaultRetryPolicy.Base
	}
	if p.Max <= 0 {
		p.Max = max(DefaultRetryPolicy.Max, p.Base)
	}
	if p.Sleep == nil {
		p.Sleep = sleepCtx
	}
	if p.Jitter == nil {
		p.Jitter = rand.Float64
	}
	return p
}

// Delay is the wait before try number attempt+1 (attempt counts from 1):
// Base·2^(attempt-1), capped at Max, then jittered into [d/2, d) so that
// many clients throttled together do not come back together.
func (p RetryPolicy) Delay(attempt int) time.Duration {
	p = p.withDefaults()
	d := p.Base
	for i := 1; i < attempt && d < p.Max; i++ {
		d *= 2
	}
	d = min(d, p.Max)
	return d/2 + time.Duration(p.Jitter()*float64(d/2))
}

// Retryable reports whether err is worth another try under any policy: it
// wraps ErrUnavailable and none of the errors that are answers.
func Retryable(err error) bool {
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	for _, final := range []error{ErrIntegrity, ErrPermission, ErrNotExist, ErrBadRef, ErrBadConfig} {
		if errors.Is(err, final) {
			return false
		}
	}
	return errors.Is(err, ErrUnavailable)
}

// Do calls fn until it succeeds, returns an error that is not Retryable,
// the context is done, or Attempts tries were made. fn receives the try
// number, counting from 1. Do returns how many retries it made (tries
// after the first) and fn's last error; when the context ends a wait, the
// context's error is joined to it.
func (p RetryPolicy) Do(ctx context.Context, fn func(attempt int) error) (retries int, err error) {
	p = p.withDefaults()
	for attempt := 1; ; attempt++ {
		err = fn(attempt)
		if err == nil || !Retryable(err) || attempt >= p.Attempts {
			return attempt - 1, err
		}
		if cerr := ctx.Err(); cerr != nil {
			return attempt - 1, errors.Join(err, cerr)
		}
		if serr := p.Sleep(ctx, p.Delay(attempt)); serr != nil {
			return attempt - 1, errors.Join(err, serr)
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
