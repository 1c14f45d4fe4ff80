package crypto

import (
	"bytes"
	"errors"
	"io"
	"testing"
	"testing/iotest"
)

func TestReadAhead(t *testing.T) {
	for _, n := range []int{0, 1, pipeChunk - 1, pipeChunk, 3*pipeChunk + 5} {
		data := bytes.Repeat([]byte{'a', 'b', 'c'}, n/3+1)[:n]
		ra := newReadAhead(iotest.HalfReader(bytes.NewReader(data)))
		if err := iotest.TestReader(ra, data); err != nil {
			t.Fatalf("%d: %v", n, err)
		}
		ra.Close()
	}
	boom := errors.New("boom")
	ra := newReadAhead(io.MultiReader(bytes.NewReader([]byte("abc")), iotest.ErrReader(boom)))
	b, err := io.ReadAll(ra)
	if string(b) != "abc" || err != boom {
		t.Fatalf("%q %v", b, err)
	}
	ra.Close()
	// Closing early does not leak or block.
	ra = newReadAhead(bytes.NewReader(make([]byte, 10*pipeChunk)))
	ra.Read(make([]byte, 10))
	ra.Close()
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("disk full")
	}
	f.n--
	return len(p), nil
}

func TestWriteBehind(t *testing.T) {
	var out bytes.Buffer
	wb := newWriteBehind(&out)
	data := bytes.Repeat([]byte("xyz"), pipeChunk)
	for i := 0; i < len(data); i += 1000 {
		wb.Write(data[i:min(i+1000, len(data))])
	}
	if err := wb.Close(); err != nil || !bytes.Equal(out.Bytes(), data) {
		t.Fatal("write-behind mismatch", err)
	}
	wb = newWriteBehind(&failWriter{n: 1})
	var err error
	for i := 0; i < 10 && err == nil; i++ {
		_, err = wb.Write(make([]byte, pipeChunk))
	}
	if cerr := wb.Close(); cerr == nil || cerr.Error() != "disk full" {
		t.Fatalf("close: %v (write: %v)", cerr, err)
	}
}
