package stream

import (
	"io"
	"sync"
)

// sink holds segments that are being sealed or opened, in stream order,
// and writes each to w once it is done. It holds at most held segments.
//
// In the caller's goroutine (the default), put writes the segments that
// are done and, when the sink is full, waits for the oldest; drain writes
// the rest. Between startAsync and
// stopAsync a flusher goroutine writes them instead, so that reading the
// source, the crypto and writing the destination all overlap; it runs only
// while segments wait, and stopAsync returns after the last write, so no
// write happens outside the call that started it.
type sink struct {
	w       io.Writer
	segSize int
	held    int

	slots   chan struct{}  // async: one per segment held
	flusher sync.WaitGroup // the flusher goroutine, while one runs
	mu      sync.Mutex     // guards what follows while async
	queue   []*job
	async   bool
	running bool
	written int64
	err     error // first error: the destination's, or a segment's
}

func newSink(w io.Writer, segSize, held int) *sink {
	return &sink{w: w, segSize: segSize, held: held}
}

func (s *sink) error() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// write waits for j, writes its output unless an error came first, and
// recycles its buffer. A job's own error (a segment that did not
// authenticate, or the source's) becomes the sink's.
func (s *sink) write(j *job) {
	j.wait()
	s.mu.Lock()
	err := s.err
	if err == nil && j.err != nil {
		s.err, err = j.err, j.err
	}
	s.mu.Unlock()
	if err == nil && j.n > 0 {
		n, werr := s.w.Write(j.buf[:j.n])
		if werr == nil && n < j.n {
			werr = io.ErrShortWrite
		}
		s.mu.Lock()
		s.written += int64(n)
		if werr != nil && s.err == nil {
			s.err = werr
		}
		s.mu.Unlock()
	}
	if j.buf != nil {
		putBuf(s.segSize, j.buf)
	}
}

// put queues j, which has been started.
func (s *sink) put(j *job) {
	if !s.async {
		// Write what is done at once, so that a writer fed little by little
		// holds sealed segments no longer than it must.
		s.queue = append(s.queue, j)
		for len(s.queue) > 0 && (len(s.queue) >= s.held || s.queue[0].finished()) {
			s.drainOne()
		}
		return
	}
	s.slots <- struct{}{}
	s.mu.Lock()
	s.queue = append(s.queue, j)
	if !s.running {
		s.running = true
		s.flusher.Add(1)
		go s.flush()
	}
	s.mu.Unlock()
}

func (s *sink) drainOne() {
	j := s.queue[0]
	s.queue[0] = nil
	s.queue = s.queue[1:]
	s.write(j)
}

// drain writes every segment held, in the caller's goroutine.
func (s *sink) drain() {
	for len(s.queue) > 0 {
		s.drainOne()
	}
}

func (s *sink) flush() {
	defer s.flusher.Done()
	for {
		s.mu.Lock()
		if len(s.queue) == 0 {
			s.running = false
			s.mu.Unlock()
			return
		}
		j := s.queue[0]
		s.queue[0] = nil
		s.queue = s.queue[1:]
		s.mu.Unlock()
		s.write(j)
		<-s.slots
	}
}

// startAsync hands the writing to a flusher goroutine. Segments already
// held keep their places.
func (s *sink) startAsync() {
	if s.slots == nil {
		s.slots = make(chan struct{}, s.held)
	}
	s.async = true
	for range s.queue {
		s.slots <- struct{}{}
	}
	if len(s.queue) > 0 {
		s.running = true
		s.flusher.Add(1)
		go s.flush()
	}
}

// stopAsync waits until every segment put has been written and the
// flusher has ended.
func (s *sink) stopAsync() {
	if s.async {
		s.flusher.Wait()
		s.async = false
	}
}
