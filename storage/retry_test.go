package storage_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/ehrport/ehrport/storage"
)

func TestRetryable(t *testing.T) {
	unavailable := &storage.Error{Op: "get", Key: "k", Err: fmt.Errorf("SlowDown: %w", storage.ErrUnavailable)}
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{unavailable, true},
		{fmt.Errorf("wrapped: %w", unavailable), true},
		{storage.ErrPermission, false},
		{storage.ErrNotExist, false},
		{storage.ErrBadRef, false},
		{storage.ErrBadConfig, false},
		{storage.ErrIntegrity, false},
		{errors.Join(storage.ErrUnavailable, storage.ErrIntegrity), false},
		{errors.Join(unavailable, context.Canceled), false},
		{context.DeadlineExceeded, false},
		{errors.New("something else"), false},
	} {
		if got := storage.Retryable(tc.err); got != tc.want {
			t.Errorf("Retryable(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
}

func TestRetryBackoff(t *testing.T) {
	sl := &recordingSleep{}
	p := storage.RetryPolicy{Attempts: 6, Base: 100 * time.Millisecond, Max: 500 * time.Millisecond, Sleep: sl.Sleep, Jitter: func() float64 { return 0 }}
	calls := 0
	retries, err := p.Do(context.Background(), func(attempt int) error {
		calls++
		if attempt != calls {
			t.Errorf("attempt %d on call %d", attempt, calls)
		}
		return storage.ErrUnavailable
	})
	if !errors.Is(err, storage.ErrUnavailable) || retries != 5 || calls != 6 {
		t.Fatalf("retries=%d calls=%d err=%v", retries, calls, err)
	}
	// Doubling from Base, capped at Max, jitter 0 gives the lower half.
	want := []time.Duration{50, 100, 200, 250, 250}
	for i, d := range sl.delays {
		if d != want[i]*time.Millisecond {
			t.Errorf("delay %d = %v, want %v", i, d, want[i]*time.Millisecond)
		}
	}
	// Jitter stays within [d/2, d).
	for _, j := range []float64{0, 0.3, 0.999} {
		p.Jitter = func() float64 { return j }
		for a := 1; a < 8; a++ {
			d := p.Delay(a)
			full := min(100*time.Millisecond<<(a-1), 500*time.Millisecond)
			if d < full/2 || d >= full {
				t.Errorf("Delay(%d) with jitter %v = %v, outside [%v, %v)", a, j, d, full/2, full)
			}
		}
	}
}

func TestRetryStopsOnSuccessAndCancel(t *testing.T) {
	sl := &recordingSleep{}
	p := storage.RetryPolicy{Attempts: 5, Sleep: sl.Sleep}
	retries, err := p.Do(context.Background(), func(attempt int) error {
		if attempt < 3 {
			return storage.ErrUnavailable
		}
		return nil
	})
	if err != nil || retries != 2 {
		t.Fatalf("retries=%d err=%v", retries, err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	_, err = p.Do(ctx, func(int) error {
		calls++
		cancel()
		return storage.ErrUnavailable
	})
	if calls != 1 || !errors.Is(err, context.Canceled) || !errors.Is(err, storage.ErrUnavailable) {
		t.Fatalf("after cancel: calls=%d err=%v", calls, err)
	}

	// The real sleeper returns as soon as the context ends.
	ctx, cancel = context.WithCancel(context.Background())
	calls = 0
	start := time.Now()
	go func() { time.Sleep(20 * time.Millisecond); cancel() }()
	_, err = storage.RetryPolicy{Attempts: 3, Base: time.Hour}.Do(ctx, func(int) error { calls++; return storage.ErrUnavailable })
	if calls != 1 || !errors.Is(err, context.Canceled) || time.Since(start) > 10*time.Second {
		t.Fatalf("real sleep: calls=%d err=%v after %v", calls, err, time.Since(start))
	}
}

func TestRetryDefaults(t *testing.T) {
	calls := 0
	sl := &recordingSleep{}
	storage.RetryPolicy{Sleep: sl.Sleep}.Do(context.Background(), func(int) error { calls++; return storage.ErrUnavailable })
	if calls != storage.DefaultRetryPolicy.Attempts {
		t.Errorf("zero policy made %d tries, want %d", calls, storage.DefaultRetryPolicy.Attempts)
	}
	var total time.Duration
	for _, d := range sl.delays {
		total += d
	}
	if total > 30*time.Second {
		t.Errorf("default policy waits up to %v", total)
	}
}
