package workers

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
)

func TestForEachAll(t *testing.T) {
	var mu sync.Mutex
	var got []int
	var running, peak atomic.Int32
	err := ForEach(context.Background(), 3, slices.Values([]int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}), func(_ context.Context, i int) error {
		if r := running.Add(1); r > peak.Load() {
			peak.Store(r)
		}
		defer running.Add(-1)
		mu.Lock()
		got = append(got, i)
		mu.Unlock()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(got)
	if !slices.Equal(got, []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}) {
		t.Fatalf("got %v", got)
	}
	if peak.Load() > 3 {
		t.Fatalf("%d ran at once, want at most 3", peak.Load())
	}
}

// The first error stops the feeding and comes back; later items are not fed.
func TestForEachFirstError(t *testing.T) {
	boom := errors.New("boom")
	var fed atomic.Int32
	items := func(yield func(int) bool) {
		for i := range 1000 {
			fed.Add(1)
			if !yield(i) {
				return
			}
		}
	}
	err := ForEach(context.Background(), 2, items, func(ctx context.Context, i int) error {
		switch {
		case i == 5:
			return boom
		case i > 5:
			<-ctx.Done() // later items wait until the failure cancels them
		}
		return nil
	})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	if fed.Load() > 10 {
		t.Fatalf("%d items fed after the failure", fed.Load())
	}
}

func TestForEachCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	err := ForEach(ctx, 2, slices.Values([]int{1, 2, 3}), func(context.Context, int) error { return nil })
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}

// TestForEachListedStopsAtListingError: the items before the listing's
// error are handled, none after it, and the error is returned; an error of
// fn that came first wins.
func TestForEachListedStopsAtListingError(t *testing.T) {
	broken := errors.New("listing broke")
	listing := func(yield func(int, error) bool) {
		for i := range 10 {
			if !yield(i, nil) {
				return
			}
		}
		if !yield(0, broken) {
			return
		}
		yield(99, nil)
	}
	var seen atomic.Int64
	err := ForEachListed(context.Background(), 3, listing, func(_ context.Context, i int) error {
		if i == 99 {
			t.Error("an item after the listing's error was handled")
		}
		seen.Add(1)
		return nil
	})
	if err != broken || seen.Load() != 10 {
		t.Fatalf("err %v after %d items, want the listing's error after 10", err, seen.Load())
	}
	boom := errors.New("fn failed")
	err = ForEachListed(context.Background(), 1, listing, func(context.Context, int) error { return boom })
	if err != boom {
		t.Fatalf("err %v, want fn's", err)
	}
}
