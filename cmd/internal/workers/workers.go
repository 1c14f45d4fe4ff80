// Package workers runs a function over a stream of items on a bounded number
// of goroutines, the shape every command that reads many objects shares.
package workers

import (
	"context"
	"iter"
	"sync"
)

// ForEach calls fn for every item of items on at most n goroutines (n < 1
// means 1). The first error fn returns cancels the context the others see
// and stops the feeding; ForEach then returns that error, or ctx's error
// when the caller's context ended first. items is read on one goroutine, in
// order, and never further than needed to keep the workers busy.
func ForEach[T any](ctx context.Context, n int, items iter.Seq[T], fn func(context.Context, T) error) error {
	if n < 1 {
		n = 1
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan T)
	var wg sync.WaitGroup
	var once sync.Once
	var first error
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range work {
				if err := fn(wctx, it); err != nil {
					once.Do(func() { first = err; cancel() })
				}
			}
		}()
	}
	for it := range items {
		select {
		case work <- it:
			continue
		case <-wctx.Done():
		}
		break
	}
	close(work)
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	return first
}

// ForEachListed is ForEach over a listing that can fail, such as a store's
// List: the first error the listing yields stops the feeding and, unless
// fn failed first, is what ForEachListed returns.
func ForEachListed[T any](ctx context.Context, n int, items iter.Seq2[T, error], fn func(context.Context, T) error) error {
	var listErr error
	err := ForEach(ctx, n, func(yield func(T) bool) {
		for it, err := range items {
			if err != nil {
				listErr = err
				return
			}
			if !yield(it) {
				return
			}
		}
	}, fn)
	if err == nil {
		err = listErr
	}
	return err
}
