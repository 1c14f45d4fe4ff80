package fhirload

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ehrport/ehrport/cmd/internal/export"
	ehrcrypto "github.com/ehrport/ehrport/crypto"
	"github.com/ehrport/ehrport/crypto/keys"
	"github.com/ehrport/ehrport/fhir"
	"github.com/ehrport/ehrport/fhir/synth"
	"github.com/ehrport/ehrport/storage"
)

// keptBundle is a collection Bundle the export keeps whole (no
// --split-bundles): it must arrive as one Bundle resource.
const keptBundle = `{"resourceType":"Bundle","id":"kept-1","type":"collection","entry":[{"fullUrl":"urn:uuid:6b1c2b7e-1d7a-4a8e-9a61-2f5d8e0c1a01","resource":{"resourceType":"Patient","id":"in-bundle-1","gender":"female"}}]}`

type fixture struct {
	store  *storage.LocalStore
	keys   *keys.Dir
	verify *ehrcrypto.Verifier
	sum    *export.Summary
}

// exportFixture exports patients generated patients plus keptBundle into a
// local store under a fresh key directory.
func exportFixture(t testing.TB, patients int) *fixture {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "source")
	if _, err := synth.WriteNDJSON(src, synth.Options{Patients: patients, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(src, "kept-bundle.json"), []byte(keptBundle), 0o600); err != nil {
		t.Fatal(err)
	}
	kd, err := keys.Init(filepath.Join(dir, "keys"), keys.Unlock{Passphrase: func() ([]byte, error) { return []byte("test passphrase"), nil }},
		keys.InitOptions{Argon2: keys.Argon2Params{Time: 2, MemoryKiB: 19 * 1024, Threads: 1}})
	if err != nil {
		t.Fatal(err)
	}
	recips, err := kd.Recipients()
	if err != nil {
		t.Fatal(err)
	}
	signer, err := kd.Signer()
	if err != nil {
		t.Fatal(err)
	}
	v, err := keys.LoadVerifier(filepath.Join(kd.Path, keys.FileVerify))
	if err != nil {
		t.Fatal(err)
	}
	st, err := storage.NewLocalStore(filepath.Join(dir, "export"))
	if err != nil {
		t.Fatal(err)
	}
	sum, err := (&export.Options{Paths: []string{src}, Store: st, Recipients: recips, Signer: signer, Policy: fhir.PolicyFail,
		SplitResources: 40}).Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if sum.Counts["Bundle"] != 1 {
		t.Fatalf("the fixture's Bundle was not kept whole: %v", sum.Counts)
	}
	return &fixture{store: st, keys: kd, verify: v, sum: sum}
}

func (f *fixture) restoreOptions(t testing.TB) export.RestoreOptions {
	return export.RestoreOptions{Store: f.store, Identities: f.keys.Identities(), Verifier: f.verify, SpoolDir: t.TempDir()}
}

func TestRestoreIntoServer(t *testing.T) {
	ctx := context.Background()
	fx := exportFixture(t, 4)
	srv := newFake(t)
	c, _ := client(t, srv.base(), Options{BatchSize: 25})
	ro := fx.restoreOptions(t)
	res, err := Restore(ctx, ro, c)
	if err != nil {
		t.Fatal(err)
	}
	if res.Load.Resources != fx.sum.Resources || len(res.Check.Mismatches) != 0 || res.Restore.Resources != fx.sum.Resources {
		t.Fatalf("loaded %d of %d: %+v", res.Load.Resources, fx.sum.Resources, res.Check)
	}
	if len(srv.stored) != int(fx.sum.Resources) || !strings.Contains(srv.stored["Bundle/kept-1"], `"id":"in-bundle-1"`) {
		t.Fatalf("server holds %d resources, export %d", len(srv.stored), fx.sum.Resources)
	}
	if left, _ := os.ReadDir(ro.SpoolDir); len(left) != 0 {
		t.Fatalf("the spool folder keeps %d files", len(left))
	}

	// The server already holds one Patient more than the export: the
	// load itself works, the count check says what differs.
	srv.stored["Patient/someone-else"] = `{}`
	res, err = Restore(ctx, fx.restoreOptions(t), c)
	if !errors.Is(err, ErrCountMismatch) || res == nil || len(res.Check.Mismatches) != 1 || res.Check.Mismatches[0].Type != "Patient" {
		t.Fatalf("extra Patient: %v", err)
	}
	delete(srv.stored, "Patient/someone-else")

	// A tampered object: the restore fails, nothing of that object is sent.
	for k := range srv.stored {
		delete(srv.stored, k)
	}
	p := filepath.Join(fx.store.Root(), "Patient.000.ndjson.ehr")
	b, _ := os.ReadFile(p)
	b[len(b)/2] ^= 1
	os.WriteFile(p, b, 0o600)
	ro = fx.restoreOptions(t)
	ro.Concurrency = 1
	_, err = Restore(ctx, ro, c)
	if !errors.Is(err, ehrcrypto.ErrCorrupt) || !strings.Contains(err.Error(), "Patient.000.ndjson.ehr") {
		t.Fatalf("tampered: %v", err)
	}
	for k := range srv.stored {
		if strings.HasPrefix(k, "Patient/") {
			t.Fatalf("%s was loaded from a tampered object", k)
		}
	}
}
