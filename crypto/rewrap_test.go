package crypto_test

import (
	"bytes"
	"errors"
	"io"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"testing/cryptotest"

	ehrcrypto "github.com/ehrport/ehrport/crypto"
	"github.com/ehrport/ehrport/crypto/internal/format"
)

func TestRewrapKeepsPayload(t *testing.T) {
	a, b := newTestKeys(t), newTestKeys(t)
	pt := pattern(int(boundary(1)) + 10)
	obj := encrypt(t, pt, []ehrcrypto.Recipient{a.recipient(t), a.escrow(t)}, bind)
	aID := a.recipient(t).(*ehrcrypto.KeysetRecipient).KeyID()
	nh, off, err := ehrcrypto.Rewrap(bytes.NewReader(obj), a.identities(t)[:1], ehrcrypto.RewrapChange{
		Keep: func(s *ehrcrypto.Stanza) bool { return !(s.Type == ehrcrypto.StanzaTinkAEAD && s.KeyID == aID) },
		Add:  []ehrcrypto.Recipient{b.recipient(t)},
	})
	must(t, err)
	re := append(bytes.Clone(nh), obj[off:]...)
	oh, _, opay := split(t, obj)
	rh, _, rpay := split(t, re)
	if !bytes.Equal(opay, rpay) || oh.Commitment != rh.Commitment {
		t.Fatal("rewrap changed the payload or the commitment")
	}
	if got, err := decryptFile(t, re, b.identities(t), bind); err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("new key: %v", err)
	}
	if got, err := decryptFile(t, re, a.identities(t)[1:], bind); err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("kept escrow: %v", err)
	}
	if _, err := decryptFile(t, re, a.identities(t)[:1], bind); !errors.Is(err, ehrcrypto.ErrNoMatchingKey) {
		t.Fatalf("removed key: %v", err)
	}
	// Rewrap to nobody, or with the wrong key, is refused.
	if _, _, err := ehrcrypto.Rewrap(bytes.NewReader(obj), a.identities(t), ehrcrypto.RewrapChange{Keep: func(*ehrcrypto.Stanza) bool { return false }}); !errors.Is(err, ehrcrypto.ErrPolicy) {
		t.Fatalf("empty rewrap: %v", err)
	}
	if _, _, err := ehrcrypto.Rewrap(bytes.NewReader(obj), b.identities(t), ehrcrypto.RewrapChange{}); !errors.Is(err, ehrcrypto.ErrNoMatchingKey) {
		t.Fatalf("rewrap with foreign key: %v", err)
	}
	// Adding a recipient already present is a duplicate.
	if _, _, err := ehrcrypto.Rewrap(bytes.NewReader(obj), a.identities(t), ehrcrypto.RewrapChange{Add: []ehrcrypto.Recipient{a.recipient(t)}}); !errors.Is(err, ehrcrypto.ErrPolicy) {
		t.Fatalf("duplicate: %v", err)
	}
}

func TestRekeyAndFiles(t *testing.T) {
	a, b := newTestKeys(t), newTestKeys(t)
	dir := t.TempDir()
	pt := pattern(70000)
	in := filepath.Join(dir, "in")
	os.WriteFile(in, pt, 0o600)
	f, _ := os.Open(in)
	_, err := ehrcrypto.EncryptFile(filepath.Join(dir, "ct"), f, []ehrcrypto.Recipient{a.recipient(t)}, bind)
	f.Close()
	must(t, err)
	ct, _ := os.ReadFile(filepath.Join(dir, "ct"))
	f, _ = os.Open(filepath.Join(dir, "ct"))
	must(t, ehrcrypto.RekeyFile(filepath.Join(dir, "rk"), f, a.identities(t), bind, []ehrcrypto.Recipient{b.recipient(t)}))
	f.Close()
	rk, _ := os.ReadFile(filepath.Join(dir, "rk"))
	_, _, p1 := split(t, ct)
	_, _, p2 := split(t, rk)
	if bytes.Equal(p1[:64], p2[:64]) {
		t.Fatal("rekey kept the payload")
	}
	if got, err := decryptFile(t, rk, b.identities(t), bind); err != nil || !bytes.Equal(got, pt) {
		t.Fatal(err)
	}
	must(t, ehrcrypto.RewrapFile(filepath.Join(dir, "rw"), filepath.Join(dir, "ct"), a.identities(t), ehrcrypto.RewrapChange{Add: []ehrcrypto.Recipient{b.recipient(t)}}))
	rw, _ := os.ReadFile(filepath.Join(dir, "rw"))
	if got, err := decryptFile(t, rw, b.identities(t), bind); err != nil || !bytes.Equal(got, pt) {
		t.Fatal(err)
	}
	// A failing rekey leaves nothing.
	f, _ = os.Open(filepath.Join(dir, "ct"))
	err = ehrcrypto.RekeyFile(filepath.Join(dir, "bad"), f, b.identities(t), bind, []ehrcrypto.Recipient{b.recipient(t)})
	f.Close()
	if _, serr := os.Stat(filepath.Join(dir, "bad")); err == nil || serr == nil {
		t.Fatal("failed rekey left output")
	}
}

func TestInspect(t *testing.T) {
	k := newTestKeys(t)
	obj := encrypt(t, pattern(int(boundary(2))+1), []ehrcrypto.Recipient{k.recipient(t), k.escrow(t)}, bind)
	rep, err := ehrcrypto.Inspect(bytes.NewReader(obj), int64(len(obj)))
	must(t, err)
	if !rep.Consistent || rep.Segments != 3 || rep.PlaintextLen != boundary(2)+1 || len(rep.Header.Stanzas) != 2 || rep.Header.Binding != bind {
		t.Fatalf("%+v", rep)
	}
	rep, err = ehrcrypto.Inspect(bytes.NewReader(obj), rep.HeaderLen+format.SegmentSize+10)
	must(t, err)
	if rep.Consistent {
		t.Fatal("truncated length reported consistent")
	}
}

// TestRekeyEscrow: rekey keeps escrow recipients only when they are given
// again; otherwise it refuses before writing, unless dropping is allowed.
func TestRekeyEscrow(t *testing.T) {
	a, esc := newTestKeys(t), newTestKeys(t)
	pt := pattern(5000)
	obj := encrypt(t, pt, []ehrcrypto.Recipient{a.recipient(t), esc.escrow(t)}, bind)
	var out bytes.Buffer
	err := ehrcrypto.Rekey(&out, bytes.NewReader(obj), a.identities(t), bind, []ehrcrypto.Recipient{a.recipient(t)})
	var ed *ehrcrypto.EscrowDroppedError
	if !errors.As(err, &ed) || !errors.Is(err, ehrcrypto.ErrPolicy) || len(ed.Stanzas) != 1 || ed.Stanzas[0].Role != ehrcrypto.RoleEscrow {
		t.Fatalf("rekey without the escrow: %v", err)
	}
	classOf(t, err)
	if out.Len() != 0 {
		t.Fatal("refused rekey wrote output")
	}
	// Given again, the escrow opens the new object.
	out.Reset()
	must(t, ehrcrypto.Rekey(&out, bytes.NewReader(obj), a.identities(t), bind, []ehrcrypto.Recipient{a.recipient(t), esc.escrow(t)}))
	if got, err := decryptFile(t, out.Bytes(), esc.identities(t)[1:], bind); err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("escrow after rekey: %v", err)
	}
	old, _ := ehrcrypto.ParseHeader(bytes.NewReader(obj))
	next, _ := ehrcrypto.ParseHeader(bytes.NewReader(out.Bytes()))
	if d := ehrcrypto.DroppedEscrow(old, next); len(d) != 0 || old.Commitment == next.Commitment {
		t.Fatalf("dropped %v", d)
	}
	// The same key as a plain recipient is not an escrow stanza.
	out.Reset()
	plainHPKE, err := ehrcrypto.NewHPKERecipient(esc.hpkePub)
	must(t, err)
	err = ehrcrypto.Rekey(&out, bytes.NewReader(obj), a.identities(t), bind, []ehrcrypto.Recipient{a.recipient(t), plainHPKE})
	if !errors.As(err, &ed) {
		t.Fatalf("escrow demoted to recipient: %v", err)
	}
	// Dropping it knowingly works, and the escrow key no longer opens it.
	out.Reset()
	must(t, ehrcrypto.Rekey(&out, bytes.NewReader(obj), a.identities(t), bind, []ehrcrypto.Recipient{a.recipient(t)}, ehrcrypto.AllowEscrowDrop()))
	next, _ = ehrcrypto.ParseHeader(bytes.NewReader(out.Bytes()))
	if d := ehrcrypto.DroppedEscrow(old, next); len(d) != 1 {
		t.Fatalf("dropped %v", d)
	}
	if _, err := decryptFile(t, out.Bytes(), esc.identities(t), bind); !errors.Is(err, ehrcrypto.ErrNoMatchingKey) {
		t.Fatalf("dropped escrow still opens: %v", err)
	}
}

// TestFilePathsAgree: EncryptFile from a file (sealed at offsets by
// parallel workers) writes, under the same randomness, the bytes it writes
// from a plain reader (the streaming path), at sizes around the segment
// boundaries and from a file read part way already. (decryptFile checks
// the two decryption paths against each other in every other test.)
func TestFilePathsAgree(t *testing.T) {
	dir := t.TempDir()
	r := newTestKeys(t).recipient(t)
	for _, n := range []int64{0, 1, boundary(1) - 1, boundary(1), boundary(1) + 1, boundary(3), boundary(3) + 7} {
		pt := pattern(int(n))
		encryptWith := func(src io.Reader, out string) []byte {
			cryptotest.SetGlobalRandom(t, uint64(n))
			_, err := ehrcrypto.EncryptFile(out, src, []ehrcrypto.Recipient{r}, bind, ehrcrypto.WithRand(mrand.NewChaCha8([32]byte{byte(n)})))
			must(t, err)
			b, err := os.ReadFile(out)
			must(t, err)
			return b
		}
		streamed := struct{ io.Reader }{bytes.NewReader(pt)}
		if ehrcrypto.Positional(streamed) {
			t.Fatal("a reader that is not a file taken as positional")
		}
		want := encryptWith(streamed, filepath.Join(dir, "streamed"))
		in := filepath.Join(dir, "in")
		must(t, os.WriteFile(in, append([]byte("skipped"), pt...), 0o600))
		f, err := os.Open(in)
		must(t, err)
		_, err = f.Seek(int64(len("skipped")), io.SeekStart)
		must(t, err)
		if !ehrcrypto.Positional(f) {
			t.Fatal("a regular file not taken as positional")
		}
		got := encryptWith(f, filepath.Join(dir, "positional"))
		f.Close()
		if !bytes.Equal(got, want) {
			t.Fatalf("size %d: EncryptFile from a file wrote other bytes than from a reader", n)
		}
	}
}
