package drill

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/ehrport/ehrport/cmd/internal/audit"
	"github.com/ehrport/ehrport/cmd/internal/export"
	"github.com/ehrport/ehrport/cmd/internal/fhirload"
	"github.com/ehrport/ehrport/cmd/internal/migrate"
	"github.com/ehrport/ehrport/cmd/internal/report"
	"github.com/ehrport/ehrport/cmd/internal/verify"
	"github.com/ehrport/ehrport/cmd/internal/workers"
	ehrcrypto "github.com/ehrport/ehrport/crypto"
	"github.com/ehrport/ehrport/crypto/keys"
	"github.com/ehrport/ehrport/fhir"
	"github.com/ehrport/ehrport/storage"
)

// References only the drill uses; the shared ones are report.EUCS* and
// report.ENISA* (docs/report-schema.md §4).
var (
	eucsRTO      = []string{"PM-05.2", "OPS-08.2", "BC-04"}
	eucsDeletion = []string{"PI-03.4"}
)

// state carries results between phases.
type state struct {
	exportSum  *export.Summary
	migrateRep *migrate.Report
	manifestB  bool
	verifyRep  *verify.Report
	restoreSum *export.RestoreSummary
	restoreDir string
	srcIdx     *sourceIndex // a FHIR server source, indexed as the export read it
	cmp        *comparison
	fhirRes    *fhirload.Result
	auditRep   *audit.Report
	decom      *decommission
}

func (d *drill) run(ctx context.Context) {
	o := d.o
	st := &state{}
	d.st = st
	verifier, verr := keys.LoadVerifier(filepath.Join(o.Keys.Path, keys.FileVerify))

	// 1. Export.
	exp := d.timed(PhaseExport, func(p *report.Phase) error {
		recips, err := o.Keys.Recipients()
		if err != nil {
			return err
		}
		signer, err := o.Keys.Signer()
		if err != nil {
			return err
		}
		findings := map[string]int64{}
		eo := &export.Options{Paths: d.src, Store: o.StoreA, Recipients: recips, Signer: signer,
			Policy: fhir.PolicyFail, Concurrency: o.Concurrency, Log: o.Log, Request: "ehrport drill",
			SpoolDir: d.work}
		if o.Bulk != nil {
			st.srcIdx = newSourceIndex()
			eo.Paths, eo.Bulk, eo.Observe = nil, o.Bulk, st.srcIdx.add
			eo.Request = "ehrport drill (FHIR Bulk Data $export)"
		}
		sum, err := eo.Run(ctx)
		if err != nil {
			return err
		}
		st.exportSum = sum
		for c, n := range sum.Findings {
			findings[c] += n
		}
		for _, c := range sortedKeys(findings) {
			d.finding(report.Finding{Phase: PhaseExport, Severity: report.SevInfo, Code: "fhir-" + c,
				Message: fmt.Sprintf("%d finding(s) %q in the source data (the export kept the data as it was)", findings[c], c), EUCS: report.EUCSFormat})
		}
		p.Objects, p.Bytes, p.Resources = int64(sum.Objects), sum.PlaintextBytes, sum.Resources
		p.Summary = fmt.Sprintf("%d resources validated, encrypted into %d objects (%s stored) with a signed manifest written last; export id %s",
			sum.Resources, sum.Objects, storage.FormatSize(sum.StoredBytes), sum.ExportID)
		d.rep.ExportID = sum.ExportID
		if o.AfterExport != nil {
			if err := o.AfterExport(ctx, o.StoreA); err != nil {
				return fmt.Errorf("%w: %v", errHook, err)
			}
		}
		return nil
	})
	if exp.Status != report.StatusPass {
		why := "the export to A failed: there is nothing to move"
		for _, n := range []string{PhaseMigrate, PhaseVerify, PhaseRestore, PhaseCompare, PhaseRestoreFHIR, PhaseAudit, PhaseDecommission} {
			d.skip(n, why)
		}
		return
	}

	// 2. Migrate.
	d.timed(PhaseMigrate, func(p *report.Phase) error {
		rep, err := migrate.Run(ctx, migrate.Options{From: o.StoreA, To: o.StoreB, Concurrency: o.Concurrency, Log: o.Log})
		if err != nil {
			return err
		}
		st.migrateRep = rep
		for _, f := range rep.Failed {
			d.finding(report.Finding{Phase: PhaseMigrate, Severity: report.SevHigh, Code: "copy-failed", Object: f.Key, Message: f.Error, EUCS: report.EUCSComplete, ENISA: report.ENISAPortable})
		}
		for _, f := range rep.MissingAtSource {
			d.finding(report.Finding{Phase: PhaseMigrate, Severity: report.SevHigh, Code: "missing-at-source", Object: f.Key, Message: "listed in the manifest at A but not there: " + f.Error, EUCS: report.EUCSComplete, ENISA: report.ENISAPortable})
		}
		for _, f := range rep.ExtraAtTarget {
			d.finding(report.Finding{Phase: PhaseMigrate, Severity: report.SevMedium, Code: "extra-at-target", Object: f.Key, Message: "B already held an object the export does not list (left alone)", EUCS: report.EUCSComplete, ENISA: report.ENISAPortable})
		}
		p.Objects, p.Bytes = int64(len(rep.Copied)), rep.BytesCopied
		proof := "each object read back and hashed at B"
		if rep.TargetVerifiesChecksums {
			proof = "each object proven by B's own SHA-256 check (probed first)"
		}
		p.Summary = fmt.Sprintf("%d objects copied (%s) without decryption, %d already there; %s", len(rep.Copied), storage.FormatSize(rep.BytesCopied), len(rep.Skipped), proof)
		if u := rep.Unavailable(); u != nil {
			return u
		}
		if !rep.ManifestWritten && rep.ManifestNote != "" {
			p.Summary += "; manifest " + rep.ManifestNote
		}
		return nil
	})
	if o.AfterMigrate != nil {
		if err := o.AfterMigrate(ctx, o.StoreB); err != nil {
			d.finding(report.Finding{Phase: PhaseMigrate, Severity: report.SevHigh, Code: "hook-failed", Message: err.Error()})
		}
	}
	if ctx.Err() != nil {
		return
	}
	m, _, merr := export.ReadManifest(ctx, o.StoreB)
	if merr == nil {
		st.manifestB = true
		x := m.Extension.Ehrport
		d.rep.Keys.SigningKeyID = x.SigningKeyID
		d.rep.Keys.Recipients = nil
		for _, r := range x.Recipients {
			d.rep.Keys.Recipients = append(d.rep.Keys.Recipients, report.Recipient{Type: r.Type, Role: r.Role, KeyID: r.KeyID, URI: r.URI})
		}
	}

	// 3. Verify deep.
	d.timed(PhaseVerify, func(p *report.Phase) error {
		if verr != nil {
			return verr
		}
		rep, err := verify.Run(ctx, verify.Options{Store: o.StoreB, Verifier: verifier, Deep: true, Identities: o.Keys.Identities(), Concurrency: o.Concurrency, Log: o.Log})
		if err != nil {
			return err
		}
		st.verifyRep = rep
		for _, f := range rep.Findings {
			msg := f.Message
			if f.Expected != "" || f.Found != "" {
				msg += fmt.Sprintf(" (expected %s, found %s)", dash(f.Expected), dash(f.Found))
			}
			eucs, enisa := report.VerifyRefs(f.Code)
			d.finding(report.Finding{Phase: PhaseVerify, Severity: report.SevHigh, Code: f.Code, Object: f.Object, Message: msg, EUCS: eucs, ENISA: enisa})
		}
		for _, n := range rep.FHIRNotes {
			d.finding(report.Finding{Phase: PhaseVerify, Severity: report.SevInfo, Code: "fhir-note", Message: n, EUCS: report.EUCSFormat, ENISA: report.ENISAPortable})
		}
		p.Objects, p.Bytes, p.Resources = int64(rep.ObjectsVerified), rep.Bytes, sumCounts(rep.Counts)
		sig := "signature NOT checked"
		if rep.SignatureChecked {
			sig = "manifest signature valid"
		}
		p.Summary = fmt.Sprintf("%s; %d of %d objects read back (%s) and decrypted (%s plaintext) with the customer's keys; proof: %s",
			sig, rep.ObjectsVerified, rep.Objects, storage.FormatSize(rep.Bytes), storage.FormatSize(rep.PlaintextBytes), rep.Proof)
		return nil
	})

	// 4. Restore and compare.
	if !st.manifestB {
		why := "B holds no complete export (no manifest.json): " + errString(merr)
		d.skip(PhaseRestore, why)
		d.skip(PhaseCompare, why)
	} else {
		rs := d.timed(PhaseRestore, func(p *report.Phase) error {
			if verr != nil {
				return verr
			}
			dir, err := os.MkdirTemp(d.work, "restore-")
			if err != nil {
				return err
			}
			st.restoreDir = dir
			ro := &export.RestoreOptions{Store: o.StoreB, To: dir, Identities: o.Keys.Identities(), Verifier: verifier, Concurrency: o.Concurrency, Log: o.Log}
			sum, err := ro.Run(ctx)
			if err != nil {
				eucs, enisa := report.EUCSComplete, report.ENISAPortable
				if errors.Is(err, ehrcrypto.ErrCorrupt) {
					eucs, enisa = append(append([]string{}, report.EUCSIntegrity...), report.EUCSComplete...), report.ENISAIncident
				}
				d.finding(report.Finding{Phase: PhaseRestore, Severity: report.SevHigh, Code: "restore-failed", Message: oneLine(err.Error()), EUCS: eucs, ENISA: enisa})
				return nil
			}
			st.restoreSum = sum
			p.Objects, p.Bytes, p.Resources = int64(sum.Objects), sum.PlaintextBytes, sum.Resources
			p.Summary = fmt.Sprintf("%d resources (%s) restored from B into a private temporary folder after checking the signature and every hash", sum.Resources, storage.FormatSize(sum.PlaintextBytes))
			return nil
		})
		if rs.Status != report.StatusPass {
			d.skip(PhaseCompare, "the restore failed: there is nothing to compare")
		} else {
			d.timed(PhaseCompare, func(p *report.Phase) error {
				defer os.RemoveAll(st.restoreDir)
				var c *comparison
				var err error
				if st.srcIdx != nil {
					c, err = compareRestored(ctx, st.srcIdx, st.restoreDir)
				} else {
					c, err = compare(ctx, d.src, st.restoreDir)
				}
				if err != nil {
					return err
				}
				st.cmp = c
				for _, f := range c.findings {
					f.Phase = PhaseCompare
					d.finding(f)
				}
				p.Resources, p.Bytes, p.Objects = c.sourceResources, c.sourceBytes+c.restoredBytes, int64(c.files)
				p.Summary = fmt.Sprintf("%d source resources and %d restored resources compared byte for byte: %d equal, %d missing, %d different, %d extra",
					c.sourceResources, c.restoredResources, c.equal, c.missing, c.differ, c.extra)
				return nil
			})
		}
	}
	if st.restoreDir != "" {
		os.RemoveAll(st.restoreDir) // plaintext never outlives the comparison
	}

	// 4c. Restore into a FHIR server.
	switch {
	case o.RestoreFHIR == nil:
		d.skip(PhaseRestoreFHIR, "not requested (--restore-fhir URL)")
	case !st.manifestB:
		d.skip(PhaseRestoreFHIR, "B holds no complete export (no manifest.json)")
	default:
		d.timed(PhaseRestoreFHIR, func(p *report.Phase) error {
			if verr != nil {
				return verr
			}
			return d.restoreFHIR(ctx, p, verifier)
		})
	}

	// 5. Audit B.
	d.timed(PhaseAudit, func(p *report.Phase) error {
		rep, err := audit.Run(ctx, audit.Options{Store: o.StoreB, Policy: audit.DefaultPolicy()})
		if err != nil {
			return err
		}
		st.auditRep = rep
		for _, f := range rep.Findings {
			obj := f.Object
			if f.VersionID != "" {
				obj += " (version " + f.VersionID + ")"
			}
			// Below high (the audit's default --fail-on), a finding is a
			// warning: shown, not failing (report.Severe).
			d.finding(report.Finding{Phase: PhaseAudit, Severity: f.Severity.String(), Code: f.Code, Object: obj, Message: f.Message, EUCS: f.EUCS, ENISA: f.ENISA})
		}
		// The audit reads only the head of each object: a byte rate
		// would mislead, so only objects are counted.
		p.Objects = rep.Objects
		var cls []string
		for _, c := range sortedKeys(rep.Classes) {
			cls = append(cls, fmt.Sprintf("%s %d", c, rep.Classes[c]))
		}
		p.Summary = fmt.Sprintf("%d objects (%d versions, %s) at B classified without any key: %s", rep.Objects, rep.Versions, storage.FormatSize(rep.Bytes), strings.Join(cls, ", "))
		if n := rep.CountAtLeast(audit.High); n > 0 {
			p.Status = report.StatusFail
		}
		return nil
	})

	// 6. Decommission A.
	switch {
	case !o.DecommissionSource:
		d.skip(PhaseDecommission, "not requested (--decommission-source)")
	case !d.allPassed():
		d.skip(PhaseDecommission, "an earlier phase failed: the export at A is kept")
	default:
		d.timed(PhaseDecommission, func(p *report.Phase) error {
			dc, err := decommissionStore(ctx, o.StoreA, o.PurgeVersions, o.Concurrency)
			if err != nil {
				return err
			}
			st.decom = dc
			p.Objects, p.Bytes = int64(dc.deleted), dc.deletedBytes
			for _, k := range dc.remainingAt {
				d.finding(report.Finding{Phase: PhaseDecommission, Severity: report.SevHigh, Code: "not-deleted", Object: k, Message: "still listed at A after deletion", EUCS: eucsDeletion})
			}
			if more := dc.remaining - len(dc.remainingAt); more > 0 {
				d.finding(report.Finding{Phase: PhaseDecommission, Severity: report.SevHigh, Code: "not-deleted",
					Message: fmt.Sprintf("%d more objects still listed at A after deletion (only the first %d are named)", more, maxNamedRemaining), EUCS: eucsDeletion})
			}
			if dc.kept > 0 {
				d.finding(report.Finding{Phase: PhaseDecommission, Severity: report.SevHigh, Code: "versions-locked",
					Message: fmt.Sprintf("%d object version(s) at A could not be removed (object lock or legal hold?), for example: %v; the provider must remove them when their retention ends", dc.kept, dc.keptErr), EUCS: eucsDeletion})
			}
			if dc.versions > 0 {
				hint := "the bucket keeps versions: run again with --purge-versions, or the provider must purge them"
				if o.PurgeVersions {
					hint = "they survived --purge-versions"
				}
				d.finding(report.Finding{Phase: PhaseDecommission, Severity: report.SevHigh, Code: "versions-remain",
					Message: fmt.Sprintf("%d object version(s) or delete marker(s) remain at A: %s", dc.versions, hint), EUCS: eucsDeletion})
			}
			p.Summary = fmt.Sprintf("%d objects (%s) deleted at A; listing afterwards: %d objects; %s", dc.deleted, storage.FormatSize(dc.deletedBytes), dc.remaining, dc.versionNote)
			return nil
		})
	}
}

func (d *drill) allPassed() bool {
	for _, p := range d.rep.Phases {
		if p.Name == PhaseRestoreFHIR && p.Status == report.StatusSkipped {
			continue // not requested; a cause that skips it fails another phase
		}
		if p.Status != report.StatusPass {
			return false
		}
	}
	return true
}

type decommission struct {
	deleted      int
	deletedBytes int64
	remaining    int      // objects still listed after the deletion
	remainingAt  []string // the first maxNamedRemaining of them
	versions     int      // versions and delete markers listed afterwards
	purged       int      // versions and delete markers removed for good
	kept         int      // versions the store refused to remove
	keptErr      error
	versionNote  string
}

// maxNamedRemaining bounds the objects named as not deleted: a store that
// ignores deletes must not make the report as large as the export.
const maxNamedRemaining = 100

// decommissionStore deletes every object at st, the manifest first (so the
// location stops claiming a complete export at once) and then the rest on
// n goroutines as the listing yields them, so memory does not grow with
// the export, and lists again. With purge, and where st keeps versions, it
// then removes every version and delete marker for good and lists the
// versions again: without that a versioned bucket still holds every byte.
func decommissionStore(ctx context.Context, st storage.Store, purge bool, n int) (*decommission, error) {
	dc := &decommission{}
	if oi, err := st.Stat(ctx, export.ManifestKey); err == nil {
		if err := st.Delete(ctx, export.ManifestKey); err != nil {
			return nil, err
		}
		dc.deleted++
		dc.deletedBytes += oi.Size
	} else if !errors.Is(err, storage.ErrNotExist) {
		return nil, err
	}
	var mu sync.Mutex
	err := workers.ForEachListed(ctx, n, st.List(ctx, ""), func(ctx context.Context, oi storage.ObjectInfo) error {
		if oi.Key == export.ManifestKey {
			return nil // deleted above; listed again only by a lagging listing
		}
		if err := st.Delete(ctx, oi.Key); err != nil {
			return err
		}
		mu.Lock()
		dc.deleted++
		dc.deletedBytes += oi.Size
		mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, err
	}
	for oi, err := range st.List(ctx, "") {
		if err != nil {
			return nil, err
		}
		dc.remaining++
		if len(dc.remainingAt) < maxNamedRemaining {
			dc.remainingAt = append(dc.remainingAt, oi.Key)
		}
	}
	vl, ok := st.(storage.VersionLister)
	if !ok {
		dc.versionNote = "the store keeps no versions (" + kindOf(st) + ")"
		return dc, nil
	}
	if vd, ok := st.(storage.VersionDeleter); ok && purge {
		if err := purgeVersions(ctx, vd, n, dc); err != nil {
			return nil, err
		}
	}
	for _, err := range vl.ListVersions(ctx, "") {
		if err != nil {
			return nil, err
		}
		dc.versions++
	}
	dc.versionNote = fmt.Sprintf("version listing afterwards: %d versions and delete markers", dc.versions)
	if purge {
		dc.versionNote = fmt.Sprintf("%d versions and delete markers removed for good; ", dc.purged) + dc.versionNote
	}
	return dc, nil
}

// purgeVersions removes every version and delete marker at vd as the
// version listing yields them. A version the store refuses to remove
// (object lock, legal hold) is counted, not fatal: the version listing
// afterwards shows it, and the drill names it.
func purgeVersions(ctx context.Context, vd storage.VersionDeleter, n int, dc *decommission) error {
	var mu sync.Mutex
	return workers.ForEachListed(ctx, n, vd.ListVersions(ctx, ""), func(ctx context.Context, v storage.ObjectVersion) error {
		err := vd.DeleteVersion(ctx, v.Key, v.VersionID)
		if err != nil && (errors.Is(err, storage.ErrUnavailable) || ctx.Err() != nil) {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			dc.kept++
			if dc.keptErr == nil {
				dc.keptErr = err
			}
			return nil
		}
		dc.purged++
		return nil
	})
}

func kindOf(st storage.Store) string {
	if _, ok := st.(*storage.LocalStore); ok {
		return "a local folder"
	}
	return "no version listing"
}

func sortedKeys[V any](m map[string]V) []string {
	ks := make([]string, 0, len(m))
	for k := range m {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}

func sumCounts(m map[string]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return oneLine(err.Error())
}

// restoreFHIR runs phase 4c: B restored into the FHIR server as it streams
// (no plaintext on disk), then the server's counts per type checked by
// search. Every failure is a finding, so the report says what happened.
func (d *drill) restoreFHIR(ctx context.Context, p *report.Phase, verifier *ehrcrypto.Verifier) error {
	o, st := d.o, d.st
	c := o.RestoreFHIR
	ro := export.RestoreOptions{Store: o.StoreB, Identities: o.Keys.Identities(), Verifier: verifier,
		Concurrency: o.Concurrency, Log: o.Log, SpoolDir: d.work}
	res, err := fhirload.Restore(ctx, ro, c)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	st.fhirRes = res
	if res != nil && res.Load != nil {
		p.Resources, p.Bytes = res.Load.Resources, res.Load.Bytes
		if res.Restore != nil {
			p.Objects = int64(res.Restore.Objects)
		}
	}
	f := report.Finding{Phase: PhaseRestoreFHIR, Severity: report.SevHigh, Object: c.BaseURL(), Message: oneLine(errString(err)), EUCS: report.EUCSFormat, ENISA: report.ENISAPortable}
	switch {
	case errors.Is(err, fhirload.ErrCountMismatch) && res != nil && res.Check != nil:
		for _, m := range res.Check.Mismatches {
			d.finding(report.Finding{Phase: PhaseRestoreFHIR, Severity: report.SevHigh, Code: "fhir-count-mismatch", Object: m.Type,
				Message: "after loading into " + c.BaseURL() + ": " + m.String(), EUCS: report.EUCSComplete, ENISA: report.ENISAPortable})
		}
	case errors.Is(err, fhirload.ErrUnavailable), errors.Is(err, fhirload.ErrUnauthorized):
		f.Code = "fhir-server-unavailable"
		d.finding(f)
	case errors.Is(err, fhirload.ErrNotFHIR):
		f.Code = "fhir-not-r4-server"
		d.finding(f)
	case errors.Is(err, fhirload.ErrRefused), errors.Is(err, fhir.ErrBadInput):
		f.Code = "fhir-refused"
		d.finding(f)
	case err != nil:
		f.Code = "fhir-load-failed"
		if errors.Is(err, ehrcrypto.ErrCorrupt) {
			f.EUCS, f.ENISA = append(append([]string{}, report.EUCSIntegrity...), report.EUCSComplete...), report.ENISAIncident
		}
		d.finding(f)
	}
	if res == nil || res.Load == nil {
		p.Summary = "nothing loaded into " + c.BaseURL()
		return nil
	}
	l := res.Load
	check := "counts per type not checked (the load failed)"
	if res.Check != nil {
		check = fmt.Sprintf("counts of %d types by _summary=count: all equal to the export", len(res.Check.Server))
		if n := len(res.Check.Mismatches); n > 0 {
			check = fmt.Sprintf("counts by _summary=count: %d of %d types differ from the export", n, len(res.Check.Server))
		}
	}
	p.Summary = fmt.Sprintf("%d resources restored from B into %s (FHIR %s) as %d transaction Bundles of PUT entries (ids kept), decrypted in memory only, %d retries; %s",
		l.Resources, c.BaseURL(), dash(res.FHIRVersion), l.Bundles, l.Retries, check)
	return nil
}
