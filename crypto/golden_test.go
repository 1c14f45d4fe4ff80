package crypto_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"testing/cryptotest"

	ehrcrypto "github.com/ehrport/ehrport/crypto"
	"github.com/ehrport/ehrport/crypto/internal/format"
	"github.com/tink-crypto/tink-go/v2/aead"
	"github.com/tink-crypto/tink-go/v2/hybrid"
	"github.com/tink-crypto/tink-go/v2/insecurecleartextkeyset"
	"github.com/tink-crypto/tink-go/v2/keyset"
)

var update = flag.Bool("update", false, "rewrite testdata/crypto golden files and vectors.json")

const goldenDir = "../testdata/crypto"

// Vector is one entry of testdata/crypto/vectors.json.
type Vector struct {
	Name            string   `json:"name"`
	File            string   `json:"file"`
	Keys            []string `json:"keys"`
	ExportID        string   `json:"export_id"`
	Path            string   `json:"path"`
	Expect          string   `json:"expect"`
	PlaintextSHA256 string   `json:"plaintext_sha256,omitempty"`
	Note            string   `json:"note"`
}

type goldenKeys struct {
	kek, kekDisabled, hpke, hpkePub, other *keyset.Handle
}

func readCleartext(t *testing.T, name string) *keyset.Handle {
	b, err := os.ReadFile(filepath.Join(goldenDir, "keys", name))
	must(t, err)
	h, err := insecurecleartextkeyset.Read(keyset.NewJSONReader(bytes.NewReader(b)))
	must(t, err)
	return h
}

func writeCleartext(t *testing.T, name string, h *keyset.Handle) {
	var buf bytes.Buffer
	must(t, insecurecleartextkeyset.Write(h, keyset.NewJSONWriter(&buf)))
	must(t, os.MkdirAll(filepath.Join(goldenDir, "keys"), 0o755))
	must(t, os.WriteFile(filepath.Join(goldenDir, "keys", name), buf.Bytes(), 0o644))
}

func loadGoldenKeys(t *testing.T) *goldenKeys {
	if *update {
		cryptotest.SetGlobalRandom(t, 20261123)
		g := &goldenKeys{}
		var err error
		g.kek, err = keyset.NewHandle(aead.AES256GCMKeyTemplate())
		must(t, err)
		m := keyset.NewManagerFromHandle(g.kek)
		id, err := m.Add(aead.AES256GCMKeyTemplate())
		must(t, err)
		must(t, m.SetPrimary(id))
		must(t, m.Disable(g.kek.KeysetInfo().GetPrimaryKeyId()))
		g.kekDisabled, err = m.Handle()
		must(t, err)
		g.hpke, err = keyset.NewHandle(hybrid.DHKEM_X25519_HKDF_SHA256_HKDF_SHA256_AES_256_GCM_Key_Template())
		must(t, err)
		g.hpkePub, err = g.hpke.Public()
		must(t, err)
		g.other, err = keyset.NewHandle(aead.AES256GCMKeyTemplate())
		must(t, err)
		writeCleartext(t, "kek.json", g.kek)
		writeCleartext(t, "kek-disabled.json", g.kekDisabled)
		writeCleartext(t, "hpke.json", g.hpke)
		writeCleartext(t, "other-kek.json", g.other)
		var buf bytes.Buffer
		must(t, g.hpkePub.WriteWithNoSecrets(keyset.NewJSONWriter(&buf)))
		must(t, os.WriteFile(filepath.Join(goldenDir, "keys", "hpke.pub.json"), buf.Bytes(), 0o644))
		return g
	}
	g := &goldenKeys{
		kek: readCleartext(t, "kek.json"), kekDisabled: readCleartext(t, "kek-disabled.json"),
		hpke: readCleartext(t, "hpke.json"), other: readCleartext(t, "other-kek.json"),
	}
	var err error
	g.hpkePub, err = g.hpke.Public()
	must(t, err)
	return g
}

func (g *goldenKeys) identity(t *testing.T, name string) ehrcrypto.Identity {
	var id ehrcrypto.Identity
	var err error
	switch name {
	case "kek":
		id, err = ehrcrypto.NewKeysetIdentity(g.kek)
	case "kek-disabled":
		id, err = ehrcrypto.NewKeysetIdentity(g.kekDisabled)
	case "hpke":
		id, err = ehrcrypto.NewHPKEIdentity(g.hpke)
	case "other-kek":
		id, err = ehrcrypto.NewKeysetIdentity(g.other)
	default:
		t.Fatalf("unknown key %q", name)
	}
	must(t, err)
	return id
}

// goldenVectors builds every vector deterministically: DEKs come from a
// seeded ChaCha8 passed with WithRand, and Tink's own randomness (stream
// salt, nonce prefix, wrap nonces, HPKE ephemeral keys) from
// cryptotest.SetGlobalRandom.
func goldenVectors(t *testing.T, g *goldenKeys) ([]Vector, map[string][]byte) {
	cryptotest.SetGlobalRandom(t, 1)
	dekRand := rand.NewChaCha8([32]byte{'e', 'h', 'r', 'p', 'o', 'r', 't'})
	kekR, err := ehrcrypto.NewKeysetRecipient(g.kek)
	must(t, err)
	hpR, err := ehrcrypto.NewHPKERecipient(g.hpkePub)
	must(t, err)
	otherR, err := ehrcrypto.NewKeysetRecipient(g.other)
	must(t, err)
	b := ehrcrypto.Binding{ExportID: "golden-export-1", Path: "exports/golden/Patient.000.ndjson"}
	enc := func(pt []byte, rs ...ehrcrypto.Recipient) []byte {
		return encrypt(t, pt, rs, b, ehrcrypto.WithRand(dekRand))
	}
	small := []byte(`{"resourceType":"Patient","id":"golden-1"}` + "\n")
	std := enc(small, kekR, ehrcrypto.Escrow(hpR))
	hl := func(obj []byte) int { _, n, _ := split(t, obj); return n }
	edit := func(obj []byte, f func(fh *format.Header) int) []byte {
		fh, raw, err := format.Parse(bytes.NewReader(obj), format.DefaultLimits)
		must(t, err)
		n := f(fh)
		return append(rawHeader(fh, n), obj[len(raw):]...)
	}
	big := pattern(int(boundary(1)) + 1)

	type spec struct {
		name, expect, note string
		obj                []byte
		pt                 []byte
		keys               []string
		path               string
	}
	specs := []spec{
		{"ok_empty", "ok", "empty plaintext, KEK recipient", enc(nil, kekR), []byte{}, nil, ""},
		{"ok_one_byte", "ok", "one byte", enc([]byte{'x'}, kekR), []byte{'x'}, nil, ""},
		{"ok_kek_and_escrow", "ok", "KEK recipient and HPKE escrow; opened by the KEK", std, small, []string{"kek"}, ""},
		{"ok_escrow_opens", "ok", "same object opened by the HPKE escrow key", std, small, []string{"hpke"}, ""},
		{"ok_hpke_only", "ok", "public-key recipient only", enc(small, hpR), small, []string{"hpke"}, ""},
		{"ok_two_segments", "ok", "first segment full plus one byte: two segments", enc(big, kekR), big, nil, ""},
		{"bad_magic", "corrupt", "first magic byte changed", setByte(std, 0, 'X'), nil, nil, ""},
		{"version_2", "policy", "version byte 2 (downgrade/upgrade)", setByte(std, 8, 2), nil, nil, ""},
		{"suite_0", "policy", "suite byte 0", setByte(std, 9, 0), nil, nil, ""},
		{"flip_mac", "corrupt", "last MAC byte flipped", flip(std, hl(std)-1), nil, nil, ""},
		{"flip_commitment", "corrupt", "first commitment byte flipped", flip(std, hl(std)-64), nil, nil, ""},
		{"flip_payload", "corrupt", "a byte in the only segment flipped", flip(std, len(std)-20), nil, nil, ""},
		{"truncated_header", "corrupt", "cut inside the header", std[:40], nil, nil, ""},
		{"truncated_after_header", "corrupt", "payload missing", std[:hl(std)], nil, nil, ""},
		{"truncated_tag", "corrupt", "last 16 bytes removed", std[:len(std)-16], nil, nil, ""},
		{"trailing_byte", "corrupt", "one byte appended", append(bytes.Clone(std), 0), nil, nil, ""},
		{"wrong_binding", "corrupt", "decrypted under another logical path", std, nil, nil, "exports/golden/Observation.000.ndjson"},
		{"stanza_stripped", "corrupt", "escrow stanza removed, lengths fixed", edit(std, func(fh *format.Header) int { fh.Stanzas = fh.Stanzas[:1]; return 1 }), nil, nil, ""},
		{"stanza_duplicated", "corrupt", "KEK stanza repeated", edit(std, func(fh *format.Header) int { fh.Stanzas = append(fh.Stanzas, fh.Stanzas[0]); return 3 }), nil, nil, ""},
		{"too_many_stanzas", "policy", "17 stanzas, one more than MaxStanzas", edit(std, func(fh *format.Header) int {
			for i := 0; len(fh.Stanzas) < 17; i++ {
				s := fh.Stanzas[0]
				s.Body = bytes.Clone(s.Body)
				s.KeyID = uint32(i + 7)
				binary.BigEndian.PutUint32(s.Body[1:5], s.KeyID)
				fh.Stanzas = append(fh.Stanzas, s)
			}
			return 17
		}), nil, nil, ""},
		{"wrapped_key_short", "corrupt", "KEK stanza body 64 bytes", edit(std, func(fh *format.Header) int { fh.Stanzas[0].Body = fh.Stanzas[0].Body[:64]; return 2 }), nil, nil, ""},
		{"two_deks", "corrupt", "second stanza wraps another DEK; opened by its key (commitment fails)",
			enc(small, kekR, lying{otherR, bytes.Repeat([]byte{5}, 32)}), nil, []string{"other-kek"}, ""},
		{"wrong_key", "no_matching_key", "opened with an unrelated KEK", std, nil, []string{"other-kek"}, ""},
		{"disabled_key", "no_matching_key", "KEK key that wrapped it is disabled", enc(small, kekR), nil, []string{"kek-disabled"}, ""},
	}
	var vs []Vector
	files := map[string][]byte{}
	for _, s := range specs {
		v := Vector{Name: s.name, File: "vectors/" + s.name + ".ehr", Keys: s.keys, ExportID: b.ExportID, Path: b.Path, Expect: s.expect, Note: s.note}
		if v.Keys == nil {
			v.Keys = []string{"kek", "hpke"}
		}
		if s.path != "" {
			v.Path = s.path
		}
		if s.expect == "ok" {
			h := sha256.Sum256(s.pt)
			v.PlaintextSHA256 = hex.EncodeToString(h[:])
		}
		vs = append(vs, v)
		files[v.File] = s.obj
	}
	return vs, files
}

var expectClass = map[string]error{"corrupt": ehrcrypto.ErrCorrupt, "no_matching_key": ehrcrypto.ErrNoMatchingKey, "policy": ehrcrypto.ErrPolicy}

// TestGolden decrypts every golden file and checks its recorded outcome
// (what every future version must keep doing), then regenerates the files
// with injected randomness and compares them byte for byte.
func TestGolden(t *testing.T) {
	g := loadGoldenKeys(t)
	if *update {
		vs, files := goldenVectors(t, g)
		must(t, os.MkdirAll(filepath.Join(goldenDir, "vectors"), 0o755))
		for name, b := range files {
			must(t, os.WriteFile(filepath.Join(goldenDir, name), b, 0o644))
		}
		j, _ := json.MarshalIndent(vs, "", "  ")
		must(t, os.WriteFile(filepath.Join(goldenDir, "vectors.json"), append(j, '\n'), 0o644))
	}
	j, err := os.ReadFile(filepath.Join(goldenDir, "vectors.json"))
	must(t, err)
	var vs []Vector
	must(t, json.Unmarshal(j, &vs))
	if len(vs) < 20 {
		t.Fatalf("only %d vectors", len(vs))
	}
	for _, v := range vs {
		t.Run("decrypt/"+v.Name, func(t *testing.T) {
			obj, err := os.ReadFile(filepath.Join(goldenDir, v.File))
			must(t, err)
			var ids []ehrcrypto.Identity
			for _, k := range v.Keys {
				ids = append(ids, g.identity(t, k))
			}
			pt, err := decryptFile(t, obj, ids, ehrcrypto.Binding{ExportID: v.ExportID, Path: v.Path})
			if v.Expect == "ok" {
				if err != nil {
					t.Fatal(err)
				}
				h := sha256.Sum256(pt)
				if hex.EncodeToString(h[:]) != v.PlaintextSHA256 {
					t.Fatal("plaintext hash differs")
				}
				return
			}
			if err == nil || !errors.Is(err, expectClass[v.Expect]) {
				t.Fatalf("want %s, got %v", v.Expect, err)
			}
			classOf(t, err)
		})
	}
	t.Run("regenerate", func(t *testing.T) {
		regen, files := goldenVectors(t, g)
		if len(regen) != len(vs) {
			t.Fatalf("regenerated %d vectors, stored %d; run go test ./crypto -run TestGolden -update", len(regen), len(vs))
		}
		for _, v := range regen {
			stored, err := os.ReadFile(filepath.Join(goldenDir, v.File))
			must(t, err)
			if !bytes.Equal(stored, files[v.File]) {
				t.Errorf("%s: regenerated bytes differ from the golden file (format or randomness use changed; if intended, run with -update)", v.File)
			}
		}
	})
}
