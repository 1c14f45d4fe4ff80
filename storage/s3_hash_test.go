package storage

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"
)

// readHashed feeds each part's hash and the whole object's from one pass
// over the bytes, chunk by chunk. At every size around the chunk and part
// boundaries, and whatever sizes the reader returns, each part's SHA-256
// must be that of the part and the whole one that of the object.
func TestReadHashedPartAndWhole(t *testing.T) {
	const c = hashChunk
	sizes := []int{1, c - 1, c, c + 1, 2*c - 1, 2 * c, 3*c + 7}
	readers := map[string]func(io.Reader) io.Reader{
		"plain":    func(r io.Reader) io.Reader { return r },
		"one-byte": iotest.OneByteReader,
		"half":     iotest.HalfReader,
		"data-err": iotest.DataErrReader,
	}
	for _, part := range sizes {
		for _, tail := range []int{0, 1, c - 1, c, c + 1} {
			for name, wrap := range readers {
				if name == "one-byte" && part > c+1 {
					continue // slow, and covered by the smaller sizes
				}
				t.Run(fmt.Sprintf("part%d/tail%d/%s", part, tail, name), func(t *testing.T) {
					obj := make([]byte, 2*part+tail)
					rand.NewChaCha8([32]byte{byte(part), byte(tail)}).Read(obj)
					r := wrap(bytes.NewReader(obj))
					whole, partHash := sha256.New(), sha256.New()
					buf := make([]byte, part)
					for off := 0; off < len(obj); off += part {
						n := min(part, len(obj)-off)
						partHash.Reset()
						if err := readHashed(r, buf[:n], partHash, whole); err != nil {
							t.Fatalf("part at %d: %v", off, err)
						}
						if !bytes.Equal(buf[:n], obj[off:off+n]) {
							t.Fatalf("part at %d: bytes differ", off)
						}
						if got, want := partHash.Sum(nil), sha256.Sum256(obj[off:off+n]); !bytes.Equal(got, want[:]) {
							t.Fatalf("part at %d (%d bytes): SHA-256 %x, want %x", off, n, got, want)
						}
					}
					if got, want := whole.Sum(nil), sha256.Sum256(obj); !bytes.Equal(got, want[:]) {
						t.Fatalf("whole object: SHA-256 %x, want %x", got, want)
					}
				})
			}
		}
	}
}

// A reader that ends early or fails is reported as io.ReadFull would, and
// nothing past what arrived is hashed.
func TestReadHashedShortAndFailing(t *testing.T) {
	obj := bytes.Repeat([]byte{7}, hashChunk+10)
	h := sha256.New()
	err := readHashed(bytes.NewReader(obj[:hashChunk+5]), make([]byte, len(obj)), h)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short body: %v, want io.ErrUnexpectedEOF", err)
	}
	if got, want := h.Sum(nil), sha256.Sum256(obj[:hashChunk]); !bytes.Equal(got, want[:]) {
		t.Fatal("the hash covers a chunk that did not arrive whole")
	}
	boom := errors.New("boom")
	err = readHashed(io.MultiReader(bytes.NewReader(obj[:100]), iotest.ErrReader(boom)), make([]byte, len(obj)), []hash.Hash{sha256.New()}...)
	if !errors.Is(err, boom) {
		t.Fatalf("failing body: %v, want its error", err)
	}
}
