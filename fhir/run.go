package fhir

import (
	"errors"
	"io"
	"runtime"
	"sync"
)

// Run drives a whole walk through the Checker: it reads items from w,
// validates resources on workers goroutines (0 means GOMAXPROCS), and
// calls handle for every item in walk order with the Checker's decision,
// exactly as a loop over w.Next and c.Item would, but using every core for
// the typed-model check. handle runs on the calling goroutine; the Item and
// its Raw are valid only during the call. For a KindBundle item with action
// Write, handle streams it with Bundle.WriteTo.
//
// Run stops at the first error: from the walk (per-file errors included, so
// a caller wanting to skip broken files should use the loop form), from the
// policy (*FindingsError) or from handle, and returns it. It does not call
// Finish.
func (c *Checker) Run(w *Walker, workers int, handle func(it *Item, act Action) error) error {
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	type job struct {
		it   Item
		res  *Result
		err  error // walk error: ends the run
		done chan struct{}
	}
	stop := make(chan struct{})
	ordered := make(chan *job, 64*workers)
	work := make(chan *job, 64*workers)
	var wg sync.WaitGroup
	for i := 0; i < workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range work {
				j.res = c.v.Check(j.it.Raw, j.it.Pos, CheckContext{})
				close(j.done)
			}
		}()
	}
	go func() {
		defer close(ordered)
		defer close(work)
		for {
			it, err := w.Next()
			if errors.Is(err, io.EOF) {
				return
			}
			j := &job{done: make(chan struct{})}
			if err != nil {
				j.err = err
				close(j.done)
			} else {
				j.it = *it
				if it.Kind == KindResource {
					if !it.owned {
						j.it.Raw = append([]byte(nil), it.Raw...)
					}
				} else {
					close(j.done)
				}
			}
			select {
			case ordered <- j:
			case <-stop:
				return
			}
			if err != nil {
				return
			}
			if it.Kind == KindResource {
				select {
				case work <- j:
				case <-stop:
					return
				}
			}
		}
	}()
	finish := func(err error) error {
		close(stop)
		for range ordered {
		}
		wg.Wait()
		return err
	}
	for j := range ordered {
		<-j.done
		if j.err != nil {
			return finish(j.err)
		}
		var act Action
		var err error
		if j.it.Kind == KindResource {
			c.stats.Items++
			act, err = c.commit(&j.it, j.res)
		} else {
			act, err = c.Item(&j.it)
		}
		if err != nil {
			return finish(err)
		}
		if err := handle(&j.it, act); err != nil {
			return finish(err)
		}
	}
	return finish(nil)
}
