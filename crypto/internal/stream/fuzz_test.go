package stream

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzReader decodes arbitrary streams with ours and with Tink: no panics,
// the same verdict, the same plaintext when both accept, only ErrHeader or
// ErrAuth when ours refuses, and only whole authenticated segments released
// before a failure.
func FuzzReader(f *testing.F) {
	const seg = 64
	for i, n := range []int{0, 1, firstPlain(seg), firstPlain(seg) + 1, boundary(seg, 3) + 5} {
		ct := ours(f, pattern(n), Params{SegmentSize: seg}, i)
		f.Add(ct, uint8(i))
		f.Add(ct[:len(ct)-1], uint8(i))
		f.Add(append(bytes.Clone(ct), 0), uint8(i))
	}
	a := tink(f, seg)
	f.Fuzz(func(t *testing.T, ct []byte, mode uint8) {
		p := withSeg(modes[int(mode)%len(modes)], seg)
		got, err := oursDecrypt(ct, p, int(mode))
		want, terr := tinkDecrypt(a, ct)
		if (err == nil) != (terr == nil) {
			t.Fatalf("ours %v, Tink %v", err, terr)
		}
		if err == nil {
			if !bytes.Equal(got, want) {
				t.Fatal("plaintexts differ")
			}
			return
		}
		if !errors.Is(err, ErrAuth) && !errors.Is(err, ErrHeader) {
			t.Fatalf("unclassified error %v", err)
		}
		if len(got) != 0 && (len(got)-firstPlain(seg))%plain(seg) != 0 {
			t.Fatalf("released %d bytes, not whole segments", len(got))
		}
	})
}
