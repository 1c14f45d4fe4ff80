package export

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	ehrcrypto "github.com/ehrport/ehrport/crypto"
	"github.com/ehrport/ehrport/storage"
)

// FuzzParseManifest feeds arbitrary bytes to the export manifest parser
// (what restore, verify, migrate and rewrap trust): it never panics; a
// refusal wraps one of the documented errors and names manifest.json; an
// accepted manifest only names objects inside the export's folder, once
// each, and survives a marshal round trip unchanged. Seeds in
// testdata/fuzz/FuzzParseManifest.
func FuzzParseManifest(f *testing.F) {
	_, st := fuzzExport(f)
	mb, err := os.ReadFile(filepath.Join(st.Root(), ManifestKey))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(mb)
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest(data)
		if err != nil {
			if !errors.Is(err, ehrcrypto.ErrCorrupt) && !errors.Is(err, ehrcrypto.ErrPolicy) && !errors.Is(err, ErrIncomplete) {
				t.Fatalf("undocumented error: %v", err)
			}
			if !strings.Contains(err.Error(), ManifestKey) {
				t.Fatalf("error does not name %s: %v", ManifestKey, err)
			}
			return
		}
		root := filepath.FromSlash("/export")
		seen := map[string]bool{}
		for _, ob := range m.Extension.Ehrport.Objects {
			dest := filepath.Join(root, filepath.FromSlash(ob.Path))
			if rel, err := filepath.Rel(root, dest); err != nil || rel == "." || strings.HasPrefix(rel, "..") {
				t.Fatalf("object path %q leaves the folder (%s)", ob.Path, dest)
			}
			if seen[ob.Key] {
				t.Fatalf("duplicate %q accepted", ob.Key)
			}
			seen[ob.Key] = true
		}
		out, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		m2, err := ParseManifest(out)
		if err != nil {
			t.Fatalf("re-parse of an accepted manifest: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(normalised(m), normalised(m2)) {
			t.Fatalf("round trip differs:\n%+v\n%+v", m, m2)
		}
	})
}

// fuzzExport writes a genuine signed export of one resource, whose
// manifest and signature seed the fuzzers.
func fuzzExport(f *testing.F) (*testKeys, *storage.LocalStore) {
	k := newTestKeys(f)
	st := localStore(f)
	in := filepath.Join(f.TempDir(), "in.ndjson")
	if err := os.WriteFile(in, []byte(`{"resourceType":"Patient","id":"p1"}`+"\n"), 0o600); err != nil {
		f.Fatal(err)
	}
	if _, err := k.exportOpts(st, in).Run(context.Background()); err != nil {
		f.Fatal(err)
	}
	return k, st
}

// normalised makes nil and empty slices compare equal (JSON cannot tell
// them apart after a round trip through omitempty-free fields).
func normalised(m *Manifest) Manifest {
	c := *m
	if len(c.Output) == 0 {
		c.Output = nil
	}
	if len(c.Error) == 0 {
		c.Error = nil
	}
	x := &c.Extension.Ehrport
	if len(x.Objects) == 0 {
		x.Objects = nil
	}
	if len(x.Recipients) == 0 {
		x.Recipients = nil
	}
	return c
}

// FuzzManifestSignature feeds arbitrary bytes as manifest.json.sig beside a
// genuine manifest: never a panic, every refusal is ErrCorrupt or
// ErrNoMatchingKey naming the signature file, and only the genuine
// signature verifies. Seeds in testdata/fuzz/FuzzManifestSignature.
func FuzzManifestSignature(f *testing.F) {
	k, st := fuzzExport(f)
	mb, _ := os.ReadFile(filepath.Join(st.Root(), ManifestKey))
	good, _ := os.ReadFile(filepath.Join(st.Root(), SignatureKey))
	f.Add(good)
	sigPath := filepath.Join(st.Root(), SignatureKey)
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(sigPath, data, 0o600); err != nil {
			t.Fatal(err)
		}
		err := VerifySignature(context.Background(), st, k.verif, mb)
		if err == nil {
			var a, b Signature
			if json.Unmarshal(data, &a) != nil || json.Unmarshal(good, &b) != nil || !reflect.DeepEqual(a.Signature, b.Signature) {
				t.Fatalf("a signature other than the genuine one verified: %q", data)
			}
			return
		}
		if !errors.Is(err, ehrcrypto.ErrCorrupt) && !errors.Is(err, ehrcrypto.ErrNoMatchingKey) {
			t.Fatalf("undocumented error: %v", err)
		}
		if !strings.Contains(err.Error(), SignatureKey) {
			t.Fatalf("error does not name %s: %v", SignatureKey, err)
		}
	})
}
