package export

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	ehrcrypto "github.com/ehrport/ehrport/crypto"
	"github.com/ehrport/ehrport/fhir/synth"
	"github.com/ehrport/ehrport/storage"
)

func payloadOf(t *testing.T, st storage.Store, key string) []byte {
	t.Helper()
	rc, err := st.Get(context.Background(), key)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, _ := io.ReadAll(rc)
	h, err := ehrcrypto.ParseHeader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	return b[h.Len():]
}

// Rotating an export at rest: headers change, payloads do not, the new keys
// restore it byte-identically, the old keys open nothing, and the manifest
// verifies with the new signing key.
func TestRewrapAtRest(t *testing.T) {
	src := t.TempDir()
	if _, err := synth.WriteNDJSON(src, synth.Options{Patients: 5, Seed: 9}); err != nil {
		t.Fatal(err)
	}
	oldK, newK := newTestKeys(t), newTestKeys(t)
	st := localStore(t)
	if _, err := oldK.exportOpts(st, src).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, before, err := oldK.restore(t, st)
	if err != nil {
		t.Fatal(err)
	}
	m, _, _ := ReadManifest(context.Background(), st)
	payloads := map[string][]byte{}
	for _, e := range m.Extension.Ehrport.Objects {
		payloads[e.Key] = payloadOf(t, st, e.Key)
	}
	keepEscrowOnly := func(s *ehrcrypto.Stanza) bool { return s.Role != ehrcrypto.RoleRecipient }
	ro := &RewrapOptions{Store: st, Identities: []ehrcrypto.Identity{oldK.id}, Verifier: oldK.verif,
		Change: ehrcrypto.RewrapChange{Keep: keepEscrowOnly, Add: []ehrcrypto.Recipient{newK.rec}}, Signer: newK.signer}
	sum, err := ro.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if sum.Objects != len(payloads) || sum.Rewritten != sum.Objects {
		t.Fatalf("summary %+v", sum)
	}
	for k, p := range payloads {
		if !bytes.Equal(payloadOf(t, st, k), p) {
			t.Errorf("%s: payload bytes changed", k)
		}
	}
	_, after, err := newK.restore(t, st)
	if err != nil {
		t.Fatalf("restore with the new keys: %v", err)
	}
	if !sameLines(restoredLines(t, before), restoredLines(t, after)) {
		t.Error("restored content differs after the rewrap")
	}
	if _, _, err := oldK.restore(t, st); err == nil {
		t.Error("the old keys still restore the export")
	}
	// A second rotation from the new keys back is a plain rerun, and a
	// rewrap whose keys open nothing fails before touching the manifest.
	mb1, _ := readAllKey(t, st, ManifestKey)
	bad := &RewrapOptions{Store: st, Identities: []ehrcrypto.Identity{oldK.id}, Verifier: newK.verif,
		Change: ehrcrypto.RewrapChange{Add: []ehrcrypto.Recipient{oldK.rec}}, Signer: newK.signer}
	if _, err := bad.Run(context.Background()); !errors.Is(err, ehrcrypto.ErrNoMatchingKey) {
		t.Fatalf("rewrap with keys that open nothing: %v", err)
	}
	if mb2, _ := readAllKey(t, st, ManifestKey); !bytes.Equal(mb1, mb2) {
		t.Error("a failed rewrap changed the manifest")
	}
}

// An interrupted rotation (some objects already rewrapped, the manifest
// still old) is finished by rerunning it with the new keys known.
func TestRewrapAtRestResumes(t *testing.T) {
	src := t.TempDir()
	if _, err := synth.WriteNDJSON(src, synth.Options{Patients: 4, Seed: 2}); err != nil {
		t.Fatal(err)
	}
	oldK, newK := newTestKeys(t), newTestKeys(t)
	st := localStore(t)
	if _, err := oldK.exportOpts(st, src).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	change := ehrcrypto.RewrapChange{Keep: func(s *ehrcrypto.Stanza) bool { return s.Role != ehrcrypto.RoleRecipient }, Add: []ehrcrypto.Recipient{newK.rec}}
	// Simulate the interruption: rewrap two objects by hand.
	m, _, _ := ReadManifest(context.Background(), st)
	for _, e := range m.Extension.Ehrport.Objects[:2] {
		b, _ := readAllKey(t, st, e.Key)
		nh, off, err := ehrcrypto.Rewrap(bytes.NewReader(b), []ehrcrypto.Identity{oldK.id}, change)
		if err != nil {
			t.Fatal(err)
		}
		nb := append(nh, b[off:]...)
		if err := st.Put(context.Background(), e.Key, bytes.NewReader(nb), int64(len(nb)), storage.PutOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	ro := &RewrapOptions{Store: st, Identities: []ehrcrypto.Identity{oldK.id}, Verifier: oldK.verif, Change: change,
		NewIdentities: []ehrcrypto.Identity{newK.id}, Signer: newK.signer}
	sum, err := ro.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if sum.Resumed != 2 || sum.Rewritten != sum.Objects-2 {
		t.Fatalf("summary %+v", sum)
	}
	if _, _, err := newK.restore(t, st); err != nil {
		t.Fatalf("restore after the resumed rewrap: %v", err)
	}
}

func readAllKey(t *testing.T, st storage.Store, key string) ([]byte, error) {
	t.Helper()
	rc, err := st.Get(context.Background(), key)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func sameLines(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		w := b[k]
		if len(v) != len(w) {
			return false
		}
		for i := range v {
			if v[i] != w[i] {
				return false
			}
		}
	}
	return true
}
