package storage

import "sync"

// partBuffers recycles part-sized buffers across objects (one pool per
// size). Without it every large object leaves its part buffers as garbage,
// and the heap, with the collector's headroom, grows well past what is live.
var partBuffers sync.Map // int64 -> *sync.Pool

func partPool(size int64) *sync.Pool {
	if p, ok := partBuffers.Load(size); ok {
		return p.(*sync.Pool)
	}
	p, _ := partBuffers.LoadOrStore(size, &sync.Pool{New: func() any { b := make([]byte, size); return &b }})
	return p.(*sync.Pool)
}

// getPartBuf returns a buffer of len and cap size.
func getPartBuf(size int64) []byte {
	return (*partPool(size).Get().(*[]byte))[:size]
}

// putPartBuf hands a buffer from getPartBuf back for reuse.
func putPartBuf(b []byte) {
	b = b[:cap(b)]
	partPool(int64(len(b))).Put(&b)
}
