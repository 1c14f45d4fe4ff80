package stream

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"

	"github.com/tink-crypto/tink-go/v2/streamingaead/subtle"
)

var (
	testKey = bytes.Repeat([]byte{0x42}, KeySize)
	testAD  = []byte("ehrport/v1/payload\x00\x01\x01test")
)

func tink(t testing.TB, segSize int) *subtle.AESGCMHKDF {
	t.Helper()
	a, err := subtle.NewAESGCMHKDF(testKey, "SHA256", KeySize, segSize, 0)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i>>11)
	}
	return b
}

// boundary is the plaintext size that exactly fills k segments.
func boundary(segSize, k int) int { return firstPlain(segSize) + (k-1)*plain(segSize) }

// sizes are 0, 1 and every size around each boundary up to maxSegs
// segments; under the race detector, around a sample of the boundaries.
func sizes(segSize, maxSegs int) []int {
	s := []int{0, 1, 2}
	for k := 1; k <= maxSegs; k++ {
		if raceEnabled && k > 12 && k < maxSegs-4 && k%64 != 0 && k%64 != 1 {
			continue
		}
		b := boundary(segSize, k)
		s = append(s, b-1, b, b+1)
	}
	return s
}

// modes are the parallelism settings every compatibility case runs under.
var modes = []Params{{Workers: 1}, {Workers: 2}, {Workers: 4, InFlight: 2}, {Workers: 3, InFlight: 9}}

func withSeg(p Params, seg int) Params { p.SegmentSize = seg; return p }

// ours encrypts pt; how picks ReadFrom, Write in uneven chunks, one Write,
// or SealAt.
func ours(t testing.TB, pt []byte, p Params, how int) []byte {
	t.Helper()
	if how%4 == 3 {
		return sealAtBytes(t, pt, p)
	}
	var buf bytes.Buffer
	w, err := NewWriter(&buf, testKey, testAD, p)
	if err != nil {
		t.Fatal(err)
	}
	switch how % 3 {
	case 0:
		_, err = w.ReadFrom(iotest.HalfReader(bytes.NewReader(pt)))
	case 1:
		for off, c := 0, 1; off < len(pt) && err == nil; off, c = off+c, c*3+1 {
			c = min(c, len(pt)-off)
			_, err = w.Write(pt[off : off+c])
		}
	default:
		_, err = w.Write(pt)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
	return buf.Bytes()
}

func tinkEncrypt(t testing.TB, a *subtle.AESGCMHKDF, pt []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w, err := a.NewEncryptingWriter(&buf, testAD)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(pt); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func tinkDecrypt(a *subtle.AESGCMHKDF, ct []byte) ([]byte, error) {
	r, err := a.NewDecryptingReader(bytes.NewReader(ct), testAD)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

// oursDecrypt decrypts ct through Read, WriteTo or OpenAt (how%3 = 0, 1,
// 2).
func oursDecrypt(ct []byte, p Params, how int) ([]byte, error) {
	if how%3 == 2 {
		return openAtBytes(ct, p)
	}
	r, err := NewReader(iotest.HalfReader(bytes.NewReader(ct)), testKey, testAD, p)
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	if how%3 == 0 {
		_, err = io.Copy(&out, struct{ io.Reader }{r})
	} else {
		_, err = r.WriteTo(&out)
	}
	return out.Bytes(), err
}

// TestCompatibility: ours encrypts and Tink decrypts, Tink encrypts and
// ours decrypts, at 0, 1 and every size around segment boundaries up to 260
// segments, for small segment sizes and under every parallelism setting;
// the ciphertext length is the format's.
func TestCompatibility(t *testing.T) {
	segs := []int{MinSegmentSize, 64, 100, 1000}
	if testing.Short() || raceEnabled {
		segs = []int{MinSegmentSize, 100}
	}
	for _, seg := range segs {
		a := tink(t, seg)
		for i, n := range sizes(seg, 260) {
			pt := pattern(n)
			p := withSeg(modes[i%len(modes)], seg)
			ct := ours(t, pt, p, i)
			segs := 1
			if n > firstPlain(seg) {
				segs = 1 + (n-firstPlain(seg)+plain(seg)-1)/plain(seg)
			}
			if want := HeaderLen + n + TagSize*segs; len(ct) != want {
				t.Fatalf("seg %d size %d: ciphertext %d bytes, want %d", seg, n, len(ct), want)
			}
			got, err := tinkDecrypt(a, ct)
			if err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("seg %d size %d %+v: Tink cannot decrypt ours: %v", seg, n, p, err)
			}
			tct := tinkEncrypt(t, a, pt)
			got, err = oursDecrypt(tct, p, i)
			if err != nil || !bytes.Equal(got, pt) {
				t.Fatalf("seg %d size %d %+v: ours cannot decrypt Tink's: %v", seg, n, p, err)
			}
		}
	}
}

// TestCompatibility1MiB does the same with the real segment size around
// the first boundaries.
func TestCompatibility1MiB(t *testing.T) {
	const seg = 1 << 20
	a := tink(t, seg)
	ns := sizes(seg, 3)
	if !testing.Short() {
		ns = append(ns, boundary(seg, 9)+12345)
	}
	for i, n := range ns {
		pt := pattern(n)
		p := withSeg(modes[i%len(modes)], seg)
		got, err := tinkDecrypt(a, ours(t, pt, p, i))
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("size %d: Tink cannot decrypt ours: %v", n, err)
		}
		got, err = oursDecrypt(tinkEncrypt(t, a, pt), p, i)
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("size %d: ours cannot decrypt Tink's: %v", n, err)
		}
	}
}

func TestIOTestReader(t *testing.T) {
	const seg = 100
	for _, p := range modes {
		for _, n := range []int{0, 1, 43, boundary(seg, 1), boundary(seg, 5) + 7} {
			pt := pattern(n)
			ct := ours(t, pt, withSeg(p, seg), n)
			r, err := NewReader(bytes.NewReader(ct), testKey, testAD, withSeg(p, seg))
			if err != nil {
				t.Fatal(err)
			}
			if err := iotest.TestReader(r, pt); err != nil {
				t.Fatalf("%+v size %d: %v", p, n, err)
			}
		}
	}
}

// tamperCases returns a 5-segment plaintext and its stream cut at every
// length, with every bit flipped, with a byte or a segment appended, with
// segments duplicated, reordered or dropped, and cut at a boundary.
func tamperCases(t testing.TB, seg int) (pt []byte, cases [][]byte) {
	pt = pattern(boundary(seg, 4) + 10)
	ct := ours(t, pt, Params{SegmentSize: seg, Workers: 2}, 0)
	segAt := func(i int) (int, int) {
		s := HeaderLen + firstPlain(seg) + TagSize
		if i == 0 {
			return HeaderLen, s
		}
		s += (i - 1) * seg
		return s, min(s+seg, len(ct))
	}
	for n := 0; n < len(ct); n++ {
		cases = append(cases, ct[:n])
	}
	for i := range ct {
		c := bytes.Clone(ct)
		c[i] ^= 1 << (i % 8)
		cases = append(cases, c)
	}
	s1, e1 := segAt(1)
	s2, e2 := segAt(2)
	s4, e4 := segAt(4)
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	cases = append(cases,
		cat(ct, []byte{0}),
		cat(ct, ct[s4:e4]),
		cat(ct[:e2], ct[s1:e1], ct[e2:]),
		cat(ct[:s1], ct[s2:e2], ct[s1:e1], ct[e2:]),
		cat(ct[:s2], ct[e2:]),
		ct[:s4],
	)
	return pt, cases
}

// TestTamper: every truncation, every bit flip, appended, duplicated and
// reordered segments and trailing bytes fail exactly when they fail for
// Tink, with ErrHeader or ErrAuth, and no plaintext of a segment that did
// not authenticate is returned.
func TestTamper(t *testing.T) {
	const seg = 64
	a := tink(t, seg)
	pt, cases := tamperCases(t, seg)
	for i, c := range cases {
		for _, p := range modes {
			got, err := oursDecrypt(c, withSeg(p, seg), i)
			want, terr := tinkDecrypt(a, c)
			if (err == nil) != (terr == nil) {
				t.Fatalf("case %d (%d bytes) %+v: ours %v, Tink %v", i, len(c), p, err, terr)
			}
			if err == nil {
				if !bytes.Equal(got, want) {
					t.Fatalf("case %d: plaintexts differ", i)
				}
				continue
			}
			if !errors.Is(err, ErrAuth) && !errors.Is(err, ErrHeader) {
				t.Fatalf("case %d: unclassified error %v", i, err)
			}
			// What came out is a prefix of whole authenticated segments.
			if !bytes.Equal(got, pt[:len(got)]) || (len(got) != 0 && (len(got)-firstPlain(seg))%plain(seg) != 0) {
				t.Fatalf("case %d: released %d bytes that are not whole authenticated segments", i, len(got))
			}
		}
	}
}

func TestWrongKeyOrAD(t *testing.T) {
	ct := ours(t, pattern(300), Params{SegmentSize: 100}, 0)
	r, err := NewReader(bytes.NewReader(ct), bytes.Repeat([]byte{1}, KeySize), testAD, Params{SegmentSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(r); !errors.Is(err, ErrAuth) {
		t.Fatalf("wrong key: %v", err)
	}
	r, err = NewReader(bytes.NewReader(ct), testKey, []byte("other"), Params{SegmentSize: 100})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(r); !errors.Is(err, ErrAuth) {
		t.Fatalf("other ad: %v", err)
	}
	if _, err := NewReader(bytes.NewReader(ct), testKey, testAD, Params{SegmentSize: MinSegmentSize - 1}); err == nil {
		t.Fatal("segment size below the minimum accepted")
	}
	if _, err := NewWriter(io.Discard, testKey[:16], testAD, Params{SegmentSize: 100}); err == nil {
		t.Fatal("short key accepted")
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("disk full")
	}
	f.n--
	return len(p), nil
}

// TestCallerErrors: errors of the source and the destination come back
// as they are, never as ErrAuth, and after the plaintext before them.
func TestCallerErrors(t *testing.T) {
	boom := errors.New("boom")
	pt := pattern(1000)
	for _, p := range modes {
		p.SegmentSize = 100
		ct := ours(t, pt, p, 0)
		r, err := NewReader(io.MultiReader(bytes.NewReader(ct[:500]), iotest.ErrReader(boom)), testKey, testAD, p)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		if err != boom || !bytes.Equal(got, pt[:len(got)]) || len(got) < 296 {
			t.Fatalf("%+v: source error: %v after %d bytes", p, err, len(got))
		}
		if _, err := NewReader(iotest.ErrReader(boom), testKey, testAD, p); err != boom {
			t.Fatalf("header source error: %v", err)
		}
		r, _ = NewReader(bytes.NewReader(ct), testKey, testAD, p)
		if _, err := r.WriteTo(&failWriter{n: 2}); err == nil || err.Error() != "disk full" {
			t.Fatalf("WriteTo destination error: %v", err)
		}
		w, err := NewWriter(&failWriter{n: 3}, testKey, testAD, p)
		if err != nil {
			t.Fatal(err)
		}
		_, werr := w.Write(pt)
		cerr := w.Close()
		if werr == nil && cerr == nil {
			t.Fatalf("%+v: destination error lost", p)
		}
		if _, err := w.Write([]byte{1}); err == nil {
			t.Fatal("write after close accepted")
		}
		w, _ = NewWriter(io.Discard, testKey, testAD, p)
		if _, err := w.ReadFrom(io.MultiReader(bytes.NewReader(pt), iotest.ErrReader(boom))); err != boom {
			t.Fatalf("ReadFrom source error: %v", err)
		}
	}
}

// TestManyWritersAtOnce runs parallel streams side by side (for -race).
func TestManyWritersAtOnce(t *testing.T) {
	a := tink(t, 200)
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		go func() {
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			for i := 0; i < 20; i++ {
				pt := pattern(rng.IntN(5000))
				p := Params{SegmentSize: 200, Workers: 1 + rng.IntN(4), InFlight: rng.IntN(6)}
				var buf bytes.Buffer
				w, err := NewWriter(&buf, testKey, testAD, p)
				if err == nil {
					_, err = w.Write(pt)
				}
				if err == nil {
					err = w.Close()
				}
				if err == nil {
					var got []byte
					got, err = tinkDecrypt(a, buf.Bytes())
					if err == nil && !bytes.Equal(got, pt) {
						err = fmt.Errorf("mismatch")
					}
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for g := 0; g < 8; g++ {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// TestReadIntoCallerBuffer: a synchronous Reader opens a segment straight
// into a large enough p; when it fails, p holds none of its plaintext.
func TestReadIntoCallerBuffer(t *testing.T) {
	const seg = 100
	pt := pattern(boundary(seg, 3) + 10)
	ct := ours(t, pt, Params{SegmentSize: seg, Workers: 1}, 0)
	s2 := HeaderLen + firstPlain(seg) + TagSize + seg
	ct[s2+5] ^= 1 // segment 2
	r, err := NewReader(bytes.NewReader(ct), testKey, testAD, Params{SegmentSize: seg, Workers: 1})
	if err != nil {
		t.Fatal(err)
	}
	p := make([]byte, 4*seg)
	var got []byte
	for {
		for i := range p {
			p[i] = 0xff
		}
		n, err := r.Read(p)
		got = append(got, p[:n]...)
		if err != nil {
			if !errors.Is(err, ErrAuth) {
				t.Fatal(err)
			}
			break
		}
	}
	if !bytes.Equal(got, pt[:boundary(seg, 2)]) {
		t.Fatalf("released %d bytes, want the %d of segments 0 and 1", len(got), boundary(seg, 2))
	}
	seg2 := pt[boundary(seg, 2):boundary(seg, 3)]
	if bytes.Contains(p, seg2[:16]) {
		t.Fatal("p holds plaintext of the segment that failed")
	}
}
