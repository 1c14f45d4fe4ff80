// Package drill runs the whole exit plan in one go and proves each step:
//
//  1. export the source (FHIR files, or generated sample patients) into
//     cloud A, encrypted under the customer's keys, with a signed manifest;
//  2. migrate the export from A to B without decrypting it;
//  3. verify B deeply: every object read back and decrypted with the
//     customer's keys, plaintext hashes, counts and FHIR checked;
//  4. restore B into a private temporary folder and compare it with the
//     source, resource by resource and byte for byte;
//     optionally (RestoreFHIR) restore B into a FHIR server too, streamed
//     (no plaintext on disk), and check its counts per type by search;
//  5. audit B without keys: nothing readable at rest;
//  6. optionally (DecommissionSource) delete the export at A, and prove the
//     listing (and the version listing) is empty afterwards.
//
// The source is FHIR files, generated sample patients, or a FHIR server's
// Bulk Data $export (Bulk): then the comparison uses digests of the records
// the export downloaded, taken in memory as they streamed by.
//
// Every phase is timed and counted. A failing phase does not hide the
// others: what can still run runs, the rest is marked skipped with a reason.
// The result is a report.Report; with ReportDir it is also written, signed,
// as report.json, report.html and report.json.sig.
//
// With nothing set but Log, Run uses embedded defaults: 200 generated
// patients, ephemeral keys and two folder stores in a temporary directory
// that is removed afterwards.
package drill

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/ehrport/ehrport/cmd/internal/export"
	"github.com/ehrport/ehrport/cmd/internal/fhirload"
	"github.com/ehrport/ehrport/cmd/internal/report"
	"github.com/ehrport/ehrport/crypto/keys"
	"github.com/ehrport/ehrport/fhir"
	"github.com/ehrport/ehrport/fhir/synth"
	"github.com/ehrport/ehrport/storage"
)

// Embedded defaults.
const (
	DefaultPatients = 200
	DefaultSeed     = 1
)

// Phase names, in order.
const (
	PhaseExport       = "export"
	PhaseMigrate      = "migrate"
	PhaseVerify       = "verify"
	PhaseRestore      = "restore"
	PhaseCompare      = "compare"
	PhaseRestoreFHIR  = "restore-fhir"
	PhaseAudit        = "audit"
	PhaseDecommission = "decommission"
)

var phaseTitles = map[string]string{
	PhaseExport:       "1 export to A",
	PhaseMigrate:      "2 migrate A→B",
	PhaseVerify:       "3 verify B (deep)",
	PhaseRestore:      "4a restore B",
	PhaseCompare:      "4b compare",
	PhaseRestoreFHIR:  "4c load into FHIR server",
	PhaseAudit:        "5 audit B",
	PhaseDecommission: "6 delete at A",
}

// Options configure a drill. Zero values give the embedded defaults.
type Options struct {
	// Paths are FHIR input files and folders. Empty: Patients sample
	// patients generated with Seed (DefaultPatients, DefaultSeed).
	Paths    []string
	Patients int
	Seed     uint64
	// Bulk, instead of Paths, exports a FHIR server's Bulk Data $export;
	// BulkURL is its base URL as the report shows it (no query, no
	// credentials). The comparison then checks the restored data against
	// SHA-256 digests of the records the export downloaded, taken in memory
	// as they streamed by: nothing of the server's data is written to disk
	// unencrypted, and the server is not asked for a second export.
	Bulk    *export.BulkSource
	BulkURL string

	// StoreA and StoreB are the two clouds. Nil: a folder in the work
	// directory.
	StoreA, StoreB storage.Store

	// Keys is the customer's unlocked key directory. Nil: ephemeral keys
	// are created in the work directory under a random passphrase that
	// exists only in memory.
	Keys *keys.Dir

	// RTO, when positive, turns the total time into pass or fail.
	RTO time.Duration
	// DecommissionSource deletes the export at A after everything else
	// passed, and proves the deletion.
	DecommissionSource bool
	// PurgeVersions, with DecommissionSource, also removes every version
	// and delete marker at A for good, where A keeps versions: otherwise a
	// versioned bucket still holds every deleted byte.
	PurgeVersions bool
	// RestoreFHIR, when set, adds the phase restore-fhir: the export at B
	// restored into this FHIR server (transaction Bundles of PUT entries,
	// ids kept; decrypted in memory only) and the server's counts per type
	// checked by search against the export's.
	RestoreFHIR *fhirload.Client

	// ReportDir, when set, receives the signed report files.
	ReportDir string
	// WorkDir is where temporary folders are made (os.TempDir() when
	// empty). The drill's own folder inside it is removed at the end.
	WorkDir string

	Concurrency int // objects in flight per phase (default 4)
	Version     string
	Log         *slog.Logger
	// Now is the clock (time.Now when nil); tests inject a slow one.
	Now func() time.Time

	// Test hooks, run between phases; an error from a hook fails the
	// drill before the next phase.
	AfterExport  func(ctx context.Context, a storage.Store) error
	AfterMigrate func(ctx context.Context, b storage.Store) error
}

// Result is what Run returns besides the report.
type Result struct {
	Report *report.Report
	Paths  report.Paths // empty when no ReportDir
}

type drill struct {
	o        *Options
	rep      *report.Report
	start    time.Time
	work     string
	src      []string
	embedded bool
	ephKeys  bool
	verifyPK []byte
	st       *state
}

// Run runs the drill. It returns an error only when the drill could not run
// at all (a store, the key directory or the RestoreFHIR server unusable
// before the first phase, the report not writable) or was interrupted; everything else is in the
// report, whose Verdict says PASS or FAIL.
func (opts *Options) Run(ctx context.Context) (*Result, error) {
	o := *opts // defaults and ephemeral parts never leak into the caller's Options
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 4
	}
	if o.Version == "" {
		o.Version = "dev"
	}
	if o.ReportDir != "" {
		if err := report.CheckDir(o.ReportDir); err != nil {
			return nil, err
		}
	}
	work, err := os.MkdirTemp(o.WorkDir, "ehrport-drill-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	d := &drill{o: &o, work: work}
	if err := d.setup(ctx); err != nil {
		return nil, err
	}
	d.run(ctx)
	if err := ctx.Err(); err != nil {
		return nil, context.Cause(ctx)
	}
	d.finish()
	res := &Result{Report: d.rep}
	if o.ReportDir != "" {
		signer, err := o.Keys.Signer()
		if err != nil {
			return res, fmt.Errorf("signing the report: %w", err)
		}
		if res.Paths, err = report.Write(o.ReportDir, d.rep, signer, d.verifyPK); err != nil {
			return res, fmt.Errorf("writing the report: %w", err)
		}
	}
	return res, nil
}

// setup prepares inputs, keys and stores, and checks both stores answer.
func (d *drill) setup(ctx context.Context) error {
	o := d.o
	var rid [6]byte
	rand.Read(rid[:])
	d.rep = &report.Report{
		SchemaVersion: report.SchemaVersion,
		Kind:          "drill",
		Tool:          report.Tool{Name: "ehrport", Version: o.Version},
		RunID:         o.Now().UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(rid[:]),
		Counts:        report.Counts{Source: map[string]int64{}, Target: map[string]int64{}},
	}
	d.embedded = len(o.Paths) == 0 && o.Bulk == nil && o.StoreA == nil && o.StoreB == nil && o.Keys == nil
	d.rep.Inputs.Embedded = d.embedded
	switch {
	case len(o.Paths) > 0 && o.Bulk != nil:
		return fmt.Errorf("%w: give input files or a FHIR server, not both", fhir.ErrBadInput)
	case o.Bulk != nil:
		d.rep.Inputs.Source = "fhir-server"
		d.rep.Inputs.Paths = []string{o.BulkURL}
	case len(o.Paths) > 0:
		d.src = o.Paths
		d.rep.Inputs.Source = "files"
		for _, p := range o.Paths {
			if abs, err := filepath.Abs(p); err == nil {
				p = abs
			}
			d.rep.Inputs.Paths = append(d.rep.Inputs.Paths, p)
		}
	default:
		if o.Patients <= 0 {
			o.Patients = DefaultPatients
		}
		if o.Seed == 0 {
			o.Seed = DefaultSeed
		}
		dir := filepath.Join(d.work, "source")
		if err := os.Mkdir(dir, 0o700); err != nil {
			return err
		}
		if _, err := synth.WriteNDJSON(dir, synth.Options{Patients: o.Patients, Seed: o.Seed}); err != nil {
			return fmt.Errorf("generating sample data: %w", err)
		}
		d.src = []string{dir}
		d.rep.Inputs.Source = "synthetic"
		d.rep.Inputs.Patients, d.rep.Inputs.Seed = o.Patients, o.Seed
	}
	if o.Keys == nil {
		if err := d.ephemeralKeys(); err != nil {
			return err
		}
	}
	pk, err := os.ReadFile(filepath.Join(o.Keys.Path, keys.FileVerify))
	if err != nil {
		return fmt.Errorf("key directory: %w", err)
	}
	d.verifyPK = pk
	var ephA, ephB bool
	if o.StoreA == nil {
		if o.StoreA, err = d.localStore("cloud-a"); err != nil {
			return err
		}
		ephA = true
	}
	if o.StoreB == nil {
		if o.StoreB, err = d.localStore("cloud-b"); err != nil {
			return err
		}
		ephB = true
	}
	if o.StoreA.Location() == o.StoreB.Location() {
		return fmt.Errorf("%w: A and B are the same location %s", storage.ErrBadRef, o.StoreA.Location())
	}
	for _, s := range []struct {
		role string
		st   storage.Store
		eph  bool
	}{{"A", o.StoreA, ephA}, {"B", o.StoreB, ephB}} {
		if err := reachable(ctx, s.st); err != nil {
			if errors.Is(err, storage.ErrNotExist) {
				return fmt.Errorf("store %s (%s): %w; create the bucket first: ehrport stores check --create %s", s.role, s.st.Location(), err, s.st.Location())
			}
			return fmt.Errorf("store %s (%s): %w", s.role, s.st.Location(), err)
		}
		d.rep.Stores = append(d.rep.Stores, report.DescribeStore(ctx, s.role, s.st, s.eph))
	}
	if o.RestoreFHIR != nil {
		// Like the stores: a wrong URL stops the drill before it starts.
		if _, _, err := o.RestoreFHIR.Capabilities(ctx); err != nil {
			return fmt.Errorf("--restore-fhir: %w", err)
		}
	}
	d.recordKeys()
	return nil
}

func (d *drill) ephemeralKeys() error {
	pass := make([]byte, 32)
	if _, err := rand.Read(pass); err != nil {
		return err
	}
	secret := []byte(hex.EncodeToString(pass))
	dir := filepath.Join(d.work, "keys")
	kd, err := keys.Init(dir, keys.Unlock{Passphrase: func() ([]byte, error) { return secret, nil }}, keys.InitOptions{})
	if err != nil {
		return fmt.Errorf("creating ephemeral keys: %w", err)
	}
	d.o.Keys = kd
	d.ephKeys = true
	return nil
}

func (d *drill) localStore(name string) (storage.Store, error) {
	dir := filepath.Join(d.work, name)
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, err
	}
	return storage.NewLocalStore(dir)
}

// reachable lists at most one object: a store that cannot even list stops
// the drill before it starts (exit 4, with the store's hint).
func reachable(ctx context.Context, st storage.Store) error {
	for _, err := range st.List(ctx, "") {
		return err
	}
	return nil
}

func (d *drill) recordKeys() {
	k := &d.rep.Keys
	k.Ephemeral = d.ephKeys
	if !d.ephKeys {
		k.Dir = d.o.Keys.Path
		if abs, err := filepath.Abs(k.Dir); err == nil {
			k.Dir = abs
		}
	}
	list, err := d.o.Keys.List()
	if err != nil {
		d.o.Log.Warn("listing keys", "err", err)
		return
	}
	for _, i := range list {
		k.List = append(k.List, report.Key{ID: i.ID, Purpose: i.Purpose, Type: i.Type, Status: i.Status, Primary: i.Primary, Created: i.Created.UTC()})
	}
}

// timed runs one phase, recording its start and duration.
func (d *drill) timed(name string, fn func(p *report.Phase) error) *report.Phase {
	p := report.Phase{Name: name, Title: phaseTitles[name]}
	t0 := d.o.Now()
	if d.start.IsZero() {
		d.start = t0
	}
	p.StartedAt = t0.UTC().Format(time.RFC3339Nano)
	p.OffsetSeconds = t0.Sub(d.start).Seconds()
	d.o.Log.Info("drill phase", "phase", name)
	err := fn(&p)
	p.DurationSeconds = d.o.Now().Sub(t0).Seconds()
	if err != nil {
		p.Status = report.StatusFail
		p.Error = oneLine(err.Error())
	} else if p.Status == "" {
		p.Status = report.StatusPass
	}
	p.SetThroughput()
	for _, f := range d.rep.Findings {
		if f.Phase == name && report.Severe(f.Severity) {
			p.Findings++
		}
	}
	if p.Findings > 0 && p.Status == report.StatusPass {
		p.Status = report.StatusFail
	}
	d.rep.Phases = append(d.rep.Phases, p)
	d.o.Log.Info("drill phase done", "phase", name, "status", p.Status, "seconds", fmt.Sprintf("%.3f", p.DurationSeconds))
	return &d.rep.Phases[len(d.rep.Phases)-1]
}

func (d *drill) skip(name, why string) {
	d.rep.Phases = append(d.rep.Phases, report.Phase{Name: name, Title: phaseTitles[name], Status: report.StatusSkipped, SkipReason: why})
}

func (d *drill) finding(f report.Finding) {
	if f.EUCS == nil {
		f.EUCS = []string{}
	}
	if f.ENISA == nil {
		f.ENISA = []string{}
	}
	d.rep.Findings = append(d.rep.Findings, f)
}

func oneLine(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c == '\n' || c == '\r' || c == '\t' {
			b[i] = ' '
		}
	}
	return string(b)
}

var errHook = errors.New("test hook failed")
