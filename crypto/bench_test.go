package crypto_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"io"
	"slices"
	"testing"
	"time"

	ehrcrypto "github.com/ehrport/ehrport/crypto"
)

// The benchmarks run on 64 MiB held in memory, so that they measure the
// crypto and its framing, not I/O. Run them with -cpu 1,2: GOMAXPROCS is
// also the number of segments ehrport seals or opens at once.
//
//	go test ./crypto -run '^$' -bench 'Ratio' -cpu 1,2 -benchtime 20x
const benchSize = 64 << 20

// rawGCM is the reference: one AES-256-GCM Seal or Open per 1 MiB of the
// same plaintext, in one goroutine, with no framing and no copies beyond
// what Seal and Open write.
type rawGCM struct {
	g     cipher.AEAD
	nonce []byte
	pt    []byte
	ct    [][]byte
	dst   []byte
}

func newRawGCM(pt []byte) *rawGCM {
	block, _ := aes.NewCipher(make([]byte, 32))
	g, _ := cipher.NewGCM(block)
	r := &rawGCM{g: g, nonce: make([]byte, 12), pt: pt, dst: make([]byte, 0, 1<<20+16)}
	for off := 0; off < len(pt); off += 1 << 20 {
		r.ct = append(r.ct, g.Seal(nil, r.nonce, pt[off:off+1<<20], nil))
	}
	return r
}

func (r *rawGCM) seal() {
	for off := 0; off < len(r.pt); off += 1 << 20 {
		r.dst = r.g.Seal(r.dst[:0], r.nonce, r.pt[off:off+1<<20], nil)
	}
}

func (r *rawGCM) open(b *testing.B) {
	for _, c := range r.ct {
		var err error
		if r.dst, err = r.g.Open(r.dst[:0], r.nonce, c, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRawGCMSeal(b *testing.B) {
	r := newRawGCM(pattern(benchSize))
	b.SetBytes(benchSize)
	for b.Loop() {
		r.seal()
	}
}

func BenchmarkRawGCMOpen(b *testing.B) {
	r := newRawGCM(pattern(benchSize))
	b.SetBytes(benchSize)
	for b.Loop() {
		r.open(b)
	}
}

// benchObjects holds a key, the plaintext and its ciphertext.
type benchObjects struct {
	rs  []ehrcrypto.Recipient
	ids []ehrcrypto.Identity
	pt  []byte
	obj []byte
	buf []byte
}

func newBenchObjects(b *testing.B) *benchObjects {
	k := newTestKeys(b)
	o := &benchObjects{rs: []ehrcrypto.Recipient{k.recipient(b)}, ids: k.identities(b), pt: pattern(benchSize), buf: make([]byte, 1<<20)}
	o.obj = encrypt(b, o.pt, o.rs, bind)
	return o
}

// encryptWrite writes the plaintext in 1 MiB Writes (one copy into the
// segment buffers, sealed in place).
func (o *benchObjects) encryptWrite(b *testing.B) {
	w, err := ehrcrypto.NewEncryptWriter(io.Discard, o.rs, bind)
	if err != nil {
		b.Fatal(err)
	}
	for off := 0; off < len(o.pt); off += 1 << 20 {
		if _, err := w.Write(o.pt[off : off+1<<20]); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
}

// encryptReadFrom is io.Copy's path from a pipe (files are sealed at
// offsets by EncryptFile instead): the source is read
// straight into the segment buffers.
func (o *benchObjects) encryptReadFrom(b *testing.B) {
	w, err := ehrcrypto.NewEncryptWriter(io.Discard, o.rs, bind)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := w.(io.ReaderFrom).ReadFrom(bytes.NewReader(o.pt)); err != nil {
		b.Fatal(err)
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
}

// decryptRead reads the plaintext in 1 MiB Reads (one copy out of the
// segment buffers).
func (o *benchObjects) decryptRead(b *testing.B) {
	r, err := ehrcrypto.NewDecryptReader(bytes.NewReader(o.obj), o.ids, bind)
	if err != nil {
		b.Fatal(err)
	}
	for {
		if _, err := r.Read(o.buf); err != nil {
			if err != io.EOF {
				b.Fatal(err)
			}
			return
		}
	}
}

// decryptWriteTo is io.Copy's path to a file: each segment is written
// from its buffer.
func (o *benchObjects) decryptWriteTo(b *testing.B) {
	r, err := ehrcrypto.NewDecryptReader(bytes.NewReader(o.obj), o.ids, bind)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := r.WriteTo(io.Discard); err != nil {
		b.Fatal(err)
	}
}

func BenchmarkEncrypt(b *testing.B) {
	o := newBenchObjects(b)
	b.SetBytes(benchSize)
	for b.Loop() {
		o.encryptWrite(b)
	}
}

func BenchmarkDecrypt(b *testing.B) {
	o := newBenchObjects(b)
	b.SetBytes(benchSize)
	for b.Loop() {
		o.decryptRead(b)
	}
}

// BenchmarkRatio runs raw GCM and every ehrport path on the same buffers
// in turn within each iteration, so that load from other processes hits
// them alike. It reports the median over iterations of each one's MB/s and
// of its throughput as a fraction of raw GCM's in the same iteration (raw
// GCM runs in one goroutine, so on more than one core ehrport's parallel
// segments can exceed 1). Give it 20 or more iterations.
func BenchmarkRatio(b *testing.B) {
	o := newBenchObjects(b)
	raw := newRawGCM(o.pt)
	steps := []struct {
		name string
		raw  int // index of the raw step it is compared with
		run  func(*testing.B)
	}{
		{"rawGCMseal", -1, func(*testing.B) { raw.seal() }},
		{"encrypt", 0, o.encryptWrite},
		{"encryptReadFrom", 0, o.encryptReadFrom},
		{"rawGCMopen", -1, raw.open},
		{"decrypt", 3, o.decryptRead},
		{"decryptWriteTo", 3, o.decryptWriteTo},
	}
	secs := make([][]float64, len(steps))
	for b.Loop() {
		for i, s := range steps {
			t0 := time.Now()
			s.run(b)
			secs[i] = append(secs[i], time.Since(t0).Seconds())
		}
	}
	for i, s := range steps {
		mbps := make([]float64, len(secs[i]))
		for j, d := range secs[i] {
			mbps[j] = benchSize / d / 1e6
		}
		b.ReportMetric(median(mbps), s.name+"-MB/s")
		if s.raw >= 0 {
			ratio := make([]float64, len(secs[i]))
			for j, d := range secs[i] {
				ratio[j] = secs[s.raw][j] / d
			}
			b.ReportMetric(median(ratio), s.name+"/raw")
		}
	}
}

func median(x []float64) float64 {
	x = slices.Clone(x)
	slices.Sort(x)
	if len(x)%2 == 1 {
		return x[len(x)/2]
	}
	return (x[len(x)/2-1] + x[len(x)/2]) / 2
}
