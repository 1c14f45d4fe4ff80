package cli

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	ehrcrypto "github.com/ehrport/ehrport/crypto"
	"github.com/ehrport/ehrport/fhir"
)

// export --json, restore --json and testdata generate through the options
// structs the commands build; exit codes through the one switch.
func TestExportRestoreCommands(t *testing.T) {
	t.Setenv("EHRPORT_PASSPHRASE", "unit passphrase")
	ctx := context.Background()
	tmp := t.TempDir()
	k := filepath.Join(tmp, "k")
	initTestKeys(t, k)
	g, out := testGlobals()
	gen := filepath.Join(tmp, "gen")
	if err := (&testdataOptions{globals: g, Patients: 2, Seed: 4, Out: gen}).Run(ctx); err != nil {
		t.Fatal(err)
	}
	if err := (&testdataOptions{globals: g, Patients: 2, Seed: 4, Out: filepath.Join(tmp, "bundles"), Bundles: true, PerBundle: 1}).Run(ctx); err != nil {
		t.Fatal(err)
	}

	out.Reset()
	g.JSON = true
	store := filepath.Join(tmp, "s")
	eo := &exportCmdOptions{globals: g, From: []string{gen, filepath.Join(tmp, "bundles")}, To: store, Keys: k,
		SplitResources: 10, SplitBytes: 1 << 20, Concurrency: 2}
	if err := eo.Run(ctx); err != nil {
		t.Fatal(err)
	}
	var sum struct {
		Counts    map[string]int64 `json:"counts"`
		Resources int64            `json:"resources"`
		Signed    bool             `json:"signed"`
		Findings  map[string]int64 `json:"findings"`
		Timings   map[string]float64
	}
	if err := json.Unmarshal(out.Bytes(), &sum); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if sum.Resources == 0 || sum.Counts["Patient"] != 2 || sum.Counts["Bundle"] == 0 || !sum.Signed || sum.Timings["total_s"] <= 0 {
		t.Fatalf("summary %+v", sum)
	}

	out.Reset()
	to := filepath.Join(tmp, "r")
	if err := (&restoreCmdOptions{globals: g, From: store, Keys: k, To: to, Concurrency: 2}).Run(ctx); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(filepath.Join(gen, "Patient.ndjson"))
	b, _ := os.ReadFile(filepath.Join(to, "Patient.000.ndjson"))
	if string(a) != string(b) {
		t.Fatal("restored Patient file differs")
	}

	// Exit codes: export over an export (2), bad input (2), wrong key (3).
	if err := eo.Run(ctx); ExitCode(ctx, err) != ExitUsage {
		t.Fatalf("export over an export: %v", err)
	}
	bad := filepath.Join(tmp, "bad.ndjson")
	os.WriteFile(bad, []byte(`{"resourceType":"Patient","id":"x","gender":"Male"}`+"\n"), 0o600)
	err := (&exportCmdOptions{globals: g, From: []string{bad}, To: filepath.Join(tmp, "s2"), Keys: k, SplitResources: 10, SplitBytes: 1 << 20, Concurrency: 1}).Run(ctx)
	if !errors.Is(err, fhir.ErrBadInput) || ExitCode(ctx, err) != ExitUsage {
		t.Fatalf("bad input: %v", err)
	}
	k2 := filepath.Join(tmp, "k2")
	initTestKeys(t, k2)
	err = (&restoreCmdOptions{globals: g, From: store, Keys: k2, To: filepath.Join(tmp, "r2"), Concurrency: 1}).Run(ctx)
	if !errors.Is(err, ehrcrypto.ErrCorrupt) && !errors.Is(err, ehrcrypto.ErrNoMatchingKey) || ExitCode(ctx, err) != ExitCrypto {
		t.Fatalf("wrong keys: %v", err)
	}
}
