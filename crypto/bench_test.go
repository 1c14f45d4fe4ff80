package crypto_test

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"io"
	"testing"
	"time"

	ehrcrypto "github.com/ehrport/ehrport/crypto"
)

const benchSize = 64 << 20

// BenchmarkRawGCM is the reference: AES-256-GCM over the same buffer in
// 1 MiB chunks, no framing, no copies beyond Seal's output.
func BenchmarkRawGCM(b *testing.B) {
	block, _ := aes.NewCipher(make([]byte, 32))
	g, _ := cipher.NewGCM(block)
	src := pattern(benchSize)
	dst := make([]byte, 0, 1<<20+16)
	nonce := make([]byte, 12)
	b.SetBytes(benchSize)
	for b.Loop() {
		for off := 0; off < len(src); off += 1 << 20 {
			nonce[0]++
			dst = g.Seal(dst[:0], nonce, src[off:off+1<<20], nil)
		}
	}
}

func BenchmarkRawGCMOpen(b *testing.B) {
	block, _ := aes.NewCipher(make([]byte, 32))
	g, _ := cipher.NewGCM(block)
	nonce := make([]byte, 12)
	src := pattern(benchSize)
	var ct [][]byte
	for off := 0; off < len(src); off += 1 << 20 {
		ct = append(ct, g.Seal(nil, nonce, src[off:off+1<<20], nil))
	}
	dst := make([]byte, 0, 1<<20)
	b.SetBytes(benchSize)
	for b.Loop() {
		for _, c := range ct {
			var err error
			if dst, err = g.Open(dst[:0], nonce, c, nil); err != nil {
				b.Fatal(err)
			}
		}
	}
}

func BenchmarkEncrypt(b *testing.B) {
	k := newTestKeys(b)
	rs := []ehrcrypto.Recipient{k.recipient(b)}
	src := pattern(benchSize)
	b.SetBytes(benchSize)
	for b.Loop() {
		w, err := ehrcrypto.NewEncryptWriter(io.Discard, rs, bind)
		if err != nil {
			b.Fatal(err)
		}
		for off := 0; off < len(src); off += 1 << 20 {
			w.Write(src[off : off+1<<20])
		}
		w.Close()
	}
}

func BenchmarkDecrypt(b *testing.B) {
	k := newTestKeys(b)
	obj := encrypt(b, pattern(benchSize), []ehrcrypto.Recipient{k.recipient(b)}, bind)
	ids := k.identities(b)
	buf := make([]byte, 1<<20)
	b.SetBytes(benchSize)
	for b.Loop() {
		r, err := ehrcrypto.NewDecryptReader(bytes.NewReader(obj), ids, bind)
		if err != nil {
			b.Fatal(err)
		}
		for {
			_, err := r.Read(buf)
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkRatio alternates raw GCM and ehrport on the same buffers within
// each iteration, so that load from other processes hits both alike, and
// reports ehrport's throughput as a fraction of raw GCM's.
func BenchmarkRatio(b *testing.B) {
	k := newTestKeys(b)
	rs := []ehrcrypto.Recipient{k.recipient(b)}
	ids := k.identities(b)
	src := pattern(benchSize)
	obj := encrypt(b, src, rs, bind)
	block, _ := aes.NewCipher(make([]byte, 32))
	g, _ := cipher.NewGCM(block)
	nonce := make([]byte, 12)
	var ct [][]byte
	for off := 0; off < len(src); off += 1 << 20 {
		ct = append(ct, g.Seal(nil, nonce, src[off:off+1<<20], nil))
	}
	dst := make([]byte, 0, 1<<20+16)
	buf := make([]byte, 1<<20)
	var rawEnc, ourEnc, rawDec, ourDec time.Duration
	for b.Loop() {
		t0 := time.Now()
		for off := 0; off < len(src); off += 1 << 20 {
			dst = g.Seal(dst[:0], nonce, src[off:off+1<<20], nil)
		}
		t1 := time.Now()
		w, _ := ehrcrypto.NewEncryptWriter(io.Discard, rs, bind)
		for off := 0; off < len(src); off += 1 << 20 {
			w.Write(src[off : off+1<<20])
		}
		w.Close()
		t2 := time.Now()
		for _, c := range ct {
			dst, _ = g.Open(dst[:0], nonce, c, nil)
		}
		t3 := time.Now()
		r, _ := ehrcrypto.NewDecryptReader(bytes.NewReader(obj), ids, bind)
		for {
			if _, err := r.Read(buf); err != nil {
				if err != io.EOF {
					b.Fatal(err)
				}
				break
			}
		}
		t4 := time.Now()
		rawEnc += t1.Sub(t0)
		ourEnc += t2.Sub(t1)
		rawDec += t3.Sub(t2)
		ourDec += t4.Sub(t3)
	}
	mbps := func(d time.Duration) float64 { return float64(b.N) * benchSize / d.Seconds() / (1 << 20) }
	b.ReportMetric(mbps(rawEnc), "rawGCMseal-MiB/s")
	b.ReportMetric(mbps(ourEnc), "encrypt-MiB/s")
	b.ReportMetric(mbps(rawDec), "rawGCMopen-MiB/s")
	b.ReportMetric(mbps(ourDec), "decrypt-MiB/s")
	b.ReportMetric(rawEnc.Seconds()/ourEnc.Seconds(), "encrypt/raw")
	b.ReportMetric(rawDec.Seconds()/ourDec.Seconds(), "decrypt/raw")
}
