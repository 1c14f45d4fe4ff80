package export

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	ehrcrypto "github.com/ehrport/ehrport/crypto"
	"github.com/ehrport/ehrport/fhir/synth"
)

// Restore goes into an empty folder, or one holding only this export's
// files (a rerun), never into a folder with other data.
func TestRestoreTarget(t *testing.T) {
	src := t.TempDir()
	if _, err := synth.WriteNDJSON(src, synth.Options{Patients: 1, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	k := newTestKeys(t)
	st := localStore(t)
	if _, err := k.exportOpts(st, src).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	run := func() error {
		_, err := (&RestoreOptions{Store: st, To: dir, Identities: []ehrcrypto.Identity{k.id}, Verifier: k.verif}).Run(context.Background())
		return err
	}
	if err := run(); err != nil {
		t.Fatal(err)
	}
	if err := run(); err != nil {
		t.Fatalf("rerun into the same folder: %v", err)
	}
	writeFile(t, filepath.Join(dir, "Patient.007.ndjson"), "{}\n")
	if err := run(); !errors.Is(err, ErrTargetNotEmpty) {
		t.Fatalf("err = %v", err)
	}
	os.Remove(filepath.Join(dir, "Patient.007.ndjson"))
}
