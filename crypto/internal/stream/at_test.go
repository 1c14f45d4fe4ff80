package stream

import (
	"bytes"
	"errors"
	"io"
	"sync"
	"testing"
	"testing/cryptotest"
)

// memFile is an in-memory file for SealAt and OpenAt: WriteAt grows it,
// ReadAt reads it with io.EOF at its end, as *os.File does.
type memFile struct {
	mu sync.Mutex
	b  []byte
}

func (m *memFile) WriteAt(p []byte, off int64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if end := int(off) + len(p); end > len(m.b) {
		m.b = append(m.b, make([]byte, end-len(m.b))...)
	}
	return copy(m.b[off:], p), nil
}

func (m *memFile) bytes() []byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([]byte{}, m.b...)
}

func sealAtBytes(t testing.TB, pt []byte, p Params) []byte {
	t.Helper()
	var out memFile
	if err := SealAt(&out, 0, bytes.NewReader(pt), 0, int64(len(pt)), testKey, testAD, p); err != nil {
		t.Fatal(err)
	}
	return out.bytes()
}

// openAtBytes returns no plaintext on error: OpenAt's output is then
// fragments for the caller to discard.
func openAtBytes(ct []byte, p Params) ([]byte, error) {
	var out memFile
	n, err := OpenAt(&out, bytes.NewReader(ct), 0, int64(len(ct)), testKey, testAD, p)
	if err != nil {
		return nil, err
	}
	got := out.bytes()
	if int64(len(got)) != n {
		return nil, errors.New("OpenAt returned a length other than what it wrote")
	}
	return got, nil
}

// atModes are worker counts: in the caller only, fewer and more workers
// than segments.
var atModes = []Params{{Workers: 1}, {Workers: 2}, {Workers: 3}, {Workers: 16}, {}}

// TestSealAtIsWriter: under the same randomness SealAt writes Writer's
// bytes, at every size around the boundaries, at offsets in both files,
// with any number of workers; OpenAt reads them back.
func TestSealAtIsWriter(t *testing.T) {
	for _, seg := range []int{MinSegmentSize, 100} {
		for i, n := range sizes(seg, 40) {
			p := withSeg(atModes[i%len(atModes)], seg)
			pt := pattern(n)
			cryptotest.SetGlobalRandom(t, uint64(n))
			want := ours(t, pt, withSeg(Params{Workers: 2}, seg), 0)
			cryptotest.SetGlobalRandom(t, uint64(n))
			src := append([]byte("junk!"), pt...)
			var out memFile
			if err := SealAt(&out, 7, bytes.NewReader(src), 5, int64(n), testKey, testAD, p); err != nil {
				t.Fatalf("seg %d size %d %+v: %v", seg, n, p, err)
			}
			got := out.bytes()
			if !bytes.Equal(got[7:], want) {
				t.Fatalf("seg %d size %d %+v: SealAt wrote other bytes than Writer", seg, n, p)
			}
			var dec memFile
			m, err := OpenAt(&dec, bytes.NewReader(got), 7, int64(len(want)), testKey, testAD, p)
			if err != nil || m != int64(n) || !bytes.Equal(dec.bytes(), pt) {
				t.Fatalf("seg %d size %d %+v: OpenAt: %v (%d bytes)", seg, n, p, err, m)
			}
		}
	}
}

// TestOpenAtVerdictsAreReaders: on every tampered stream OpenAt fails
// exactly when the sequential Reader does, naming the same segment, with
// any number of workers.
func TestOpenAtVerdictsAreReaders(t *testing.T) {
	const seg = 64
	_, cases := tamperCases(t, seg)
	for i, c := range cases {
		_, want := oursDecrypt(c, Params{SegmentSize: seg, Workers: 1}, 0)
		for _, p := range atModes {
			_, err := openAtBytes(c, withSeg(p, seg))
			var we, ge *SegmentError
			switch {
			case (err == nil) != (want == nil):
				t.Fatalf("case %d %+v: OpenAt %v, Reader %v", i, p, err, want)
			case errors.As(want, &we) != errors.As(err, &ge):
				t.Fatalf("case %d %+v: OpenAt %v, Reader %v", i, p, err, want)
			case we != nil && (we.Segment != ge.Segment || !errors.Is(err, ErrAuth)):
				t.Fatalf("case %d %+v: OpenAt %v, Reader %v", i, p, err, want)
			case want != nil && we == nil && !errors.Is(err, ErrHeader):
				t.Fatalf("case %d %+v: OpenAt %v, Reader %v", i, p, err, want)
			}
		}
	}
}

// TestOpenAtNamesFirstBadSegment: with bad segments opened at once by
// several workers, the lowest is named every time.
func TestOpenAtNamesFirstBadSegment(t *testing.T) {
	const seg = 100
	ct := ours(t, pattern(boundary(seg, 12)), Params{SegmentSize: seg}, 0)
	for _, i := range []int{3, 4, 5, 10} {
		ct[HeaderLen+firstPlain(seg)+TagSize+(i-1)*seg+i] ^= 1
	}
	for range 300 {
		_, err := openAtBytes(ct, Params{SegmentSize: seg, Workers: 8})
		var se *SegmentError
		if !errors.As(err, &se) || se.Segment != 3 {
			t.Fatalf("got %v, want segment 3", err)
		}
	}
}

// TestAtSourceChanged: a source shorter or longer than said is refused,
// never sealed short or opened with bytes ignored.
func TestAtSourceChanged(t *testing.T) {
	const seg = 100
	pt := pattern(boundary(seg, 3) + 9)
	for _, p := range atModes {
		p.SegmentSize = seg
		for _, size := range []int{len(pt) - 1, len(pt) + 1, boundary(seg, 2)} {
			err := SealAt(&memFile{}, 0, bytes.NewReader(pt), 0, int64(size), testKey, testAD, p)
			if !errors.Is(err, ErrSourceChanged) {
				t.Fatalf("%+v: sealing %d of %d bytes: %v", p, size, len(pt), err)
			}
		}
		ct := ours(t, pt, p, 0)
		grown := append(bytes.Clone(ct), 0)
		if _, err := OpenAt(&memFile{}, bytes.NewReader(grown), 0, int64(len(ct)), testKey, testAD, p); !errors.Is(err, ErrSourceChanged) {
			t.Fatalf("%+v: a byte after the stream: %v", p, err)
		}
		if _, err := OpenAt(&memFile{}, bytes.NewReader(ct[:len(ct)-1]), 0, int64(len(ct)), testKey, testAD, p); !errors.Is(err, ErrSourceChanged) {
			t.Fatalf("%+v: a stream shorter than said: %v", p, err)
		}
	}
}

type failingAt struct {
	after int // calls that succeed first
	mu    sync.Mutex
	inner interface {
		io.ReaderAt
		io.WriterAt
	}
}

var errBoom = errors.New("boom")

func (f *failingAt) ok() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.after--
	return f.after >= 0
}

func (f *failingAt) ReadAt(p []byte, off int64) (int, error) {
	if !f.ok() {
		return 0, errBoom
	}
	return f.inner.ReadAt(p, off)
}

func (f *failingAt) WriteAt(p []byte, off int64) (int, error) {
	if !f.ok() {
		return 0, errBoom
	}
	return f.inner.WriteAt(p, off)
}

func (m *memFile) ReadAt(p []byte, off int64) (int, error) {
	return bytes.NewReader(m.bytes()).ReadAt(p, off)
}

// TestAtCallerErrors: errors of the source and the destination come back
// as they are, never as ErrAuth.
func TestAtCallerErrors(t *testing.T) {
	const seg = 100
	pt := pattern(boundary(seg, 6))
	ct := ours(t, pt, Params{SegmentSize: seg}, 0)
	for _, p := range atModes {
		p.SegmentSize = seg
		for after := range 4 {
			src := &failingAt{after: after, inner: &memFile{b: pt}}
			if err := SealAt(&memFile{}, 0, src, 0, int64(len(pt)), testKey, testAD, p); err != errBoom {
				t.Fatalf("%+v: SealAt source failing after %d: %v", p, after, err)
			}
			if err := SealAt(&failingAt{after: after, inner: &memFile{}}, 0, bytes.NewReader(pt), 0, int64(len(pt)), testKey, testAD, p); err != errBoom {
				t.Fatalf("%+v: SealAt destination failing after %d: %v", p, after, err)
			}
			src = &failingAt{after: after, inner: &memFile{b: ct}}
			if _, err := OpenAt(&memFile{}, src, 0, int64(len(ct)), testKey, testAD, p); err != errBoom {
				t.Fatalf("%+v: OpenAt source failing after %d: %v", p, after, err)
			}
			if _, err := OpenAt(&failingAt{after: after, inner: &memFile{}}, bytes.NewReader(ct), 0, int64(len(ct)), testKey, testAD, p); err != errBoom {
				t.Fatalf("%+v: OpenAt destination failing after %d: %v", p, after, err)
			}
		}
	}
}
