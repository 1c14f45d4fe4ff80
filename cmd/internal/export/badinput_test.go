package export

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	ehrcrypto "github.com/ehrport/ehrport/crypto"
	"github.com/ehrport/ehrport/storage"
)

// smallExport writes a signed export of two resources and returns its
// store and folder.
func smallExport(t *testing.T, k *testKeys) (*storage.LocalStore, string) {
	t.Helper()
	in := filepath.Join(t.TempDir(), "in.ndjson")
	writeFile(t, in, `{"resourceType":"Patient","id":"p1"}`+"\n"+`{"resourceType":"Patient","id":"p2"}`+"\n")
	st := localStore(t)
	if _, err := k.exportOpts(st, in).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	return st, st.Root()
}

// A damaged or missing signature is tampering (ErrCorrupt, exit 3) and the
// message names the signature file where it lies.
func TestRestoreBadSignatureNamed(t *testing.T) {
	k := newTestKeys(t)
	for name, damage := range map[string]func(dir string){
		"other key": func(dir string) {
			other := newTestKeys(t)
			st2, dir2 := smallExport(t, other)
			_ = st2
			b, _ := os.ReadFile(filepath.Join(dir2, SignatureKey))
			os.WriteFile(filepath.Join(dir, SignatureKey), b, 0o600)
		},
		"not a signature": func(dir string) { os.WriteFile(filepath.Join(dir, SignatureKey), []byte("{}"), 0o600) },
		"missing":         func(dir string) { os.Remove(filepath.Join(dir, SignatureKey)) },
	} {
		t.Run(name, func(t *testing.T) {
			st, dir := smallExport(t, k)
			damage(dir)
			_, _, err := k.restore(t, st)
			if !errors.Is(err, ehrcrypto.ErrCorrupt) && !errors.Is(err, ehrcrypto.ErrNoMatchingKey) {
				t.Fatalf("err = %v, want corrupt or no matching key", err)
			}
			if want := st.Location() + "/" + SignatureKey; !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not name %s", err, want)
			}
		})
	}
}

// A manifest that lists an object the store does not hold is an incomplete
// export (exit 1) naming the object, not a storage failure (exit 4).
func TestRestoreMissingObjectIncomplete(t *testing.T) {
	k := newTestKeys(t)
	for _, key := range []string{"Patient.000.ndjson.ehr", SummaryKey} {
		st, dir := smallExport(t, k)
		if err := os.Remove(filepath.Join(dir, key)); err != nil {
			t.Fatal(err)
		}
		_, _, err := k.restore(t, st)
		var se *storage.Error
		if !errors.Is(err, ErrIncomplete) || errors.As(err, &se) || !strings.Contains(err.Error(), key) {
			t.Errorf("%s missing: err = %v, want ErrIncomplete naming it", key, err)
		}
	}
}

// ParseManifest is what ReadManifest checks: a path that leaves the folder
// or a duplicate is refused.
func TestParseManifestRefuses(t *testing.T) {
	ok := `{"extension":{"ehrport":{"formatVersion":1,"exportId":"e1","objects":[{"key":"Patient.000.ndjson.ehr","path":"Patient.000.ndjson","kind":"data","type":"Patient","size":1,"sha256":"` + strings.Repeat("a", 64) + `"}]}}}`
	if _, err := ParseManifest([]byte(ok)); err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string]string{
		"escape":    strings.Replace(ok, `"Patient.000.ndjson.ehr","path":"Patient.000.ndjson"`, `"../x.ndjson.ehr","path":"../x.ndjson"`, 1),
		"duplicate": strings.Replace(ok, `}]}}}`, `},{"key":"Patient.000.ndjson.ehr","path":"Patient.000.ndjson","kind":"data","size":1,"sha256":"`+strings.Repeat("a", 64)+`"}]}}}`, 1),
		"version":   strings.Replace(ok, `"formatVersion":1`, `"formatVersion":2`, 1),
		"empty":     "",
	} {
		if _, err := ParseManifest([]byte(bad)); err == nil || !strings.Contains(err.Error(), ManifestKey) {
			t.Errorf("%s: err = %v, want a refusal naming %s", name, err, ManifestKey)
		}
	}
}

// Options.MaxResourceBytes is the line cap of the export: a resource over
// it is bad input naming file:line; raised, the same input exports.
func TestExportMaxResourceBytes(t *testing.T) {
	k := newTestKeys(t)
	in := filepath.Join(t.TempDir(), "big.ndjson")
	big := `{"resourceType":"Binary","id":"b","contentType":"text/plain","data":"` + strings.Repeat("QUJD", 50_000) + `"}`
	writeFile(t, in, `{"resourceType":"Patient","id":"p1"}`+"\n"+big+"\n")
	o := k.exportOpts(localStore(t), in)
	o.MaxResourceBytes = 100_000
	if _, err := o.Run(context.Background()); err == nil || !strings.Contains(err.Error(), "big.ndjson:2") || !strings.Contains(err.Error(), "--max-resource-size") {
		t.Fatalf("over the cap: %v", err)
	}
	o = k.exportOpts(localStore(t), in)
	o.MaxResourceBytes = 300_000
	if sum, err := o.Run(context.Background()); err != nil || sum.Resources != 2 {
		t.Fatalf("cap raised: %v", err)
	}
}
