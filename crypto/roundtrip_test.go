package crypto_test

import (
	"bytes"
	"crypto/sha256"
	"io"
	"testing"
	"testing/iotest"

	ehrcrypto "github.com/ehrport/ehrport/crypto"
	"github.com/ehrport/ehrport/crypto/internal/format"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/streamingaead"
	"github.com/tink-crypto/tink-go/v2/streamingaead/aesgcmhkdf"
)

var bind = ehrcrypto.Binding{ExportID: "exp-1", Path: "exports/x/Patient.000.ndjson"}

// boundary returns the plaintext size that exactly fills k segments.
func boundary(k int64) int64 {
	return format.FirstSegmentPlain + (k-1)*format.SegmentPlain
}

func roundTripSizes(short bool) []int64 {
	sizes := []int64{0, 1, 2, 15, 16, 17, 4096}
	ks := []int64{1, 2, 3, 4}
	if !short && !raceEnabled {
		ks = append(ks, 255, 256, 257)
	}
	for _, k := range ks {
		b := boundary(k)
		sizes = append(sizes, b-1, b, b+1)
	}
	return sizes
}

func TestRoundTripSizes(t *testing.T) {
	k := newTestKeys(t)
	rs := []ehrcrypto.Recipient{k.recipient(t), k.escrow(t)}
	for _, n := range roundTripSizes(testing.Short()) {
		pr, pw := io.Pipe()
		var hdrLen int
		go func() {
			s, err := ehrcrypto.NewSealer(rs, bind)
			if err != nil {
				pw.CloseWithError(err)
				return
			}
			hdrLen = s.HeaderLen()
			w, err := s.Writer(pw)
			if err == nil {
				_, err = io.Copy(w, &patternReader{n: n})
			}
			if err == nil {
				err = w.Close()
			}
			pw.CloseWithError(err)
		}()
		cr := &countReader{r: pr}
		r, err := ehrcrypto.NewDecryptReader(cr, k.identities(t), bind)
		if err != nil {
			t.Fatalf("size %d: %v", n, err)
		}
		h := sha256.New()
		got, err := io.Copy(h, r)
		if err != nil {
			t.Fatalf("size %d: %v", n, err)
		}
		want := sha256.New()
		io.Copy(want, &patternReader{n: n})
		if got != n || !bytes.Equal(h.Sum(nil), want.Sum(nil)) {
			t.Fatalf("size %d: round trip mismatch (got %d bytes)", n, got)
		}
		if size := ehrcrypto.CiphertextSize(n, hdrLen); size != cr.n {
			t.Fatalf("size %d: CiphertextSize %d, actual %d", n, size, cr.n)
		}
		pl, segs, ok := ehrcrypto.PlaintextSize(cr.n - int64(hdrLen))
		if !ok || pl != n || segs != format.Segments(n) {
			t.Fatalf("size %d: PlaintextSize = %d, %d, %v", n, pl, segs, ok)
		}
	}
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

func TestIOTestReader(t *testing.T) {
	k := newTestKeys(t)
	for _, n := range []int{0, 1, 5000, int(boundary(1)), int(boundary(2)) + 3} {
		pt := pattern(n)
		obj := encrypt(t, pt, []ehrcrypto.Recipient{k.recipient(t)}, bind)
		r, err := ehrcrypto.NewDecryptReader(iotest.HalfReader(bytes.NewReader(obj)), k.identities(t), bind)
		must(t, err)
		if err := iotest.TestReader(r, pt); err != nil {
			t.Fatalf("size %d: %v", n, err)
		}
	}
}

// TestPayloadIsTinkKeyset shows that the payload is plain Tink: a keyset
// holding one AES256_GCM_HKDF_1MB key made from payload_key decrypts it.
func TestPayloadIsTinkKeyset(t *testing.T) {
	k := newTestKeys(t)
	dek := bytes.Repeat([]byte{7}, 32)
	pt := pattern(int(boundary(2)) + 100)
	obj := encrypt(t, pt, []ehrcrypto.Recipient{k.recipient(t)}, bind, ehrcrypto.WithRand(bytes.NewReader(dek)))
	_, hl, payload := split(t, obj)
	_ = hl
	params, err := aesgcmhkdf.NewParameters(aesgcmhkdf.ParametersOpts{
		KeySizeInBytes: 32, DerivedKeySizeInBytes: 32, HKDFHashType: aesgcmhkdf.SHA256, SegmentSizeInBytes: 1 << 20,
	})
	must(t, err)
	key, err := aesgcmhkdf.NewKey(params, secretFrom(hkdfLabel(dek, format.LabelPayloadKey)))
	must(t, err)
	m := keyset.NewManager()
	id, err := m.AddKey(key)
	must(t, err)
	must(t, m.SetPrimary(id))
	h, err := m.Handle()
	must(t, err)
	sa, err := streamingaead.New(h)
	must(t, err)
	ad := append([]byte(format.LabelPayloadAD), 0, 1, 1)
	ad = append(ad, format.EncodeBinding(bind.ExportID, bind.Path)...)
	r, err := sa.NewDecryptingReader(bytes.NewReader(payload), ad)
	must(t, err)
	got, err := io.ReadAll(r)
	must(t, err)
	if !bytes.Equal(got, pt) {
		t.Fatal("Tink keyset did not decrypt the payload")
	}
}

func TestEncryptTwiceDiffers(t *testing.T) {
	k := newTestKeys(t)
	pt := pattern(3000)
	a := encrypt(t, pt, []ehrcrypto.Recipient{k.recipient(t)}, bind)
	b := encrypt(t, pt, []ehrcrypto.Recipient{k.recipient(t)}, bind)
	if bytes.Equal(a, b) {
		t.Fatal("two encryptions gave the same bytes")
	}
	_, ha, pa := split(t, a)
	_, hb, pb := split(t, b)
	if bytes.Equal(a[:ha][ha-64:], b[:hb][hb-64:]) || bytes.Equal(pa[:40], pb[:40]) {
		t.Fatal("commitment, MAC or stream header repeated")
	}
}

// TestNoPlaintextInClear checks that nothing derived from the plaintext
// appears in the object: not the plaintext, not its digests, not its length
// written as an integer, not any 16-byte window of it.
func TestNoPlaintextInClear(t *testing.T) {
	k := newTestKeys(t)
	pt := bytes.Repeat([]byte(`{"resourceType":"Patient","name":"Ada Lovelace"}`+"\n"), 5000)
	obj := encrypt(t, pt, []ehrcrypto.Recipient{k.recipient(t), k.escrow(t)}, bind)
	s256 := sha256.Sum256(pt)
	needles := [][]byte{s256[:8], []byte("Lovelace"), []byte("Patient\""), pt[:16]}
	for i := 0; i+16 <= 4096; i += 16 {
		needles = append(needles, pt[i:i+16])
	}
	for _, n := range needles {
		if bytes.Contains(obj, n) {
			t.Fatalf("object contains plaintext-derived bytes %q", n)
		}
	}
	hdr, _, _ := split(t, obj)
	_ = hdr
	lenBytes := []byte{byte(len(pt) >> 24), byte(len(pt) >> 16), byte(len(pt) >> 8), byte(len(pt))}
	h, hl, _ := split(t, obj)
	if bytes.Contains(obj[:hl], lenBytes) {
		t.Fatal("header contains the plaintext length")
	}
	_ = h
}

// TestWorkers: every parallelism gives the same plaintext back, through
// Read and through WriteTo, and a payload Tink reads (TestPayloadIsTinkKeyset
// checks the default).
func TestWorkers(t *testing.T) {
	k := newTestKeys(t)
	pt := pattern(int(boundary(3)) + 77)
	for _, n := range []int{1, 2, 5} {
		opt := ehrcrypto.WithWorkers(n)
		obj := encrypt(t, pt, []ehrcrypto.Recipient{k.recipient(t)}, bind, opt)
		r, err := ehrcrypto.NewDecryptReader(bytes.NewReader(obj), k.identities(t), bind, opt)
		must(t, err)
		got, err := io.ReadAll(struct{ io.Reader }{r})
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("workers %d, Read: %v", n, err)
		}
		r, err = ehrcrypto.NewDecryptReader(bytes.NewReader(obj), k.identities(t), bind, opt)
		must(t, err)
		var out bytes.Buffer
		if _, err := r.WriteTo(&out); err != nil || !bytes.Equal(out.Bytes(), pt) {
			t.Fatalf("workers %d, WriteTo: %v", n, err)
		}
	}
}
