package drill

import (
	"fmt"
	"github.com/ehrport/ehrport/storage"
	"strings"
	"time"

	"github.com/ehrport/ehrport/cmd/internal/report"
)

// finish computes the total, the RTO, the counts, the verdict, the evidence
// and what was not checked.
func (d *drill) finish() {
	r, st, o := d.rep, d.st, d.o
	r.GeneratedAt = o.Now().UTC().Format(time.RFC3339)
	var end float64
	for _, p := range r.Phases {
		if p.Status != report.StatusSkipped {
			if e := p.OffsetSeconds + p.DurationSeconds; e > end {
				end = e
			}
		}
	}
	r.TotalSeconds = end

	// Counts: the source as read again by the comparison (or, failing
	// that, as the export counted it); the target as restored (or as the
	// deep verification decrypted it).
	switch {
	case st.cmp != nil:
		r.Counts.Source = st.cmp.sourceCounts
		r.Inputs.Resources, r.Inputs.Bytes = st.cmp.sourceResources, st.cmp.sourceBytes
	case st.exportSum != nil:
		r.Counts.Source = st.exportSum.Counts
		r.Inputs.Resources, r.Inputs.Bytes = st.exportSum.Resources, st.exportSum.PlaintextBytes
	}
	switch {
	case st.cmp != nil:
		r.Counts.Target, r.Counts.TargetFrom = st.cmp.restoredCounts, "restored from B"
	case st.verifyRep != nil && len(st.verifyRep.Counts) > 0:
		r.Counts.Target, r.Counts.TargetFrom = st.verifyRep.Counts, "decrypted at B"
	}
	if r.Counts.Source == nil {
		r.Counts.Source = map[string]int64{}
	}
	if r.Counts.Target == nil {
		r.Counts.Target = map[string]int64{}
	}

	var reasons []string
	for _, p := range r.Phases {
		switch {
		case p.Status == report.StatusFail && p.Error != "":
			reasons = append(reasons, fmt.Sprintf("%s failed: %s", p.Name, p.Error))
		case p.Status == report.StatusFail:
			reasons = append(reasons, fmt.Sprintf("%s failed with %d finding(s)", p.Name, p.Findings))
		case p.Status == report.StatusSkipped && p.Name != PhaseDecommission && p.Name != PhaseRestoreFHIR:
			// (Those two are optional; when asked for, what skips them
			// fails an earlier phase, which is the reason.)
			reasons = append(reasons, fmt.Sprintf("%s did not run: %s", p.Name, p.SkipReason))
		}
	}
	for _, f := range r.Findings {
		if f.Code == "hook-failed" {
			reasons = append(reasons, "a test hook failed: "+f.Message)
		}
	}
	if o.RTO > 0 {
		r.RTO = &report.RTO{Limit: o.RTO.String(), LimitSeconds: o.RTO.Seconds(), Met: r.TotalSeconds <= o.RTO.Seconds()}
		if !r.RTO.Met {
			reasons = append(reasons, fmt.Sprintf("RTO not met: the drill took %s, the RTO is %s", time.Duration(r.TotalSeconds*float64(time.Second)).Round(time.Millisecond), o.RTO))
			r.Findings = append(r.Findings, report.Finding{Phase: "rto", Severity: report.SevHigh, Code: "rto-exceeded",
				Message: fmt.Sprintf("total %.3fs exceeds the RTO of %s", r.TotalSeconds, o.RTO), EUCS: eucsRTO, ENISA: report.ENISAPortable})
		}
	}
	r.VerdictReasons = reasons
	if r.VerdictReasons == nil {
		r.VerdictReasons = []string{}
	}
	r.Verdict = report.Pass
	if len(reasons) > 0 || r.Failing() > 0 {
		r.Verdict = report.Fail
	}
	if r.Findings == nil {
		r.Findings = []report.Finding{}
	}
	if r.Keys.Recipients == nil {
		r.Keys.Recipients = []report.Recipient{}
	}
	switch {
	case r.Keys.Ephemeral:
		r.Keys.Protection = "a random passphrase held only in memory (ephemeral keys)"
	default:
		r.Keys.Protection = "the key directory's own protection (passphrase or KMS)"
	}
	d.evidence()
	d.notChecked()
}

func (d *drill) status(phases ...string) string {
	ran := false
	for _, n := range phases {
		p := d.rep.Phase(n)
		if p == nil || p.Status == report.StatusSkipped {
			continue
		}
		ran = true
		if p.Status != report.StatusPass {
			return report.EvidenceFailed
		}
	}
	if !ran {
		return report.EvidenceNotRun
	}
	return report.EvidenceProven
}

func (d *drill) evidence() {
	r, st := d.rep, d.st
	var ev []report.Evidence
	add := func(e report.Evidence) {
		if e.ENISA == nil {
			e.ENISA = []string{}
		}
		ev = append(ev, e)
	}

	how := "every object (and every version) at B listed and its head classified without any key: each must be an ehrport envelope bound to its own name; SSE headers count for nothing"
	var det []string
	if a := st.auditRep; a != nil {
		var cls []string
		for _, c := range sortedKeys(a.Classes) {
			cls = append(cls, fmt.Sprintf("%s %d", c, a.Classes[c]))
		}
		det = append(det, fmt.Sprintf("%d objects, %d versions; classes: %s", a.Objects, a.Versions, strings.Join(cls, ", ")))
	}
	add(report.Evidence{Claim: "Every object at the target is encrypted at rest under a customer key; no plaintext object exists",
		Status: d.status(PhaseAudit), How: how, EUCS: report.EUCSAtRest, ENISA: report.ENISACrypto, Phases: []string{PhaseAudit}, Details: det})

	det = nil
	for _, k := range r.Keys.Recipients {
		det = append(det, fmt.Sprintf("objects encrypted for %s key %d (%s)%s", k.Type, k.KeyID, k.Role, uriNote(k.URI)))
	}
	add(report.Evidence{Claim: "The customer holds the keys",
		Status: d.status(PhaseVerify, PhaseRestore),
		How:    "B was decrypted with the customer's key directory only; no provider credential or provider key was involved in decryption. Key ids and creation dates are listed below.",
		EUCS:   report.EUCSKeys, ENISA: report.ENISACrypto, Phases: []string{PhaseVerify, PhaseRestore}, Details: det})

	det = nil
	if c := st.cmp; c != nil {
		det = append(det, fmt.Sprintf("%d source resources, %d restored: %d byte-identical, %d missing, %d different, %d extra", c.sourceResources, c.restoredResources, c.equal, c.missing, c.differ, c.extra))
	}
	if v := st.verifyRep; v != nil {
		det = append(det, fmt.Sprintf("%d objects read back at B and hashed (%s); proof %s", v.ObjectsVerified, storage.FormatSize(v.Bytes), v.Proof))
	}
	add(report.Evidence{Claim: "The export is complete and loss-free",
		Status: d.status(PhaseMigrate, PhaseVerify, PhaseRestore, PhaseCompare),
		How:    "a signed manifest lists every object with its ciphertext SHA-256 and an encrypted summary the plaintext SHA-256 and counts; B must match exactly (read back, never an ETag), and the data restored from B must equal the source resource by resource, byte for byte",
		EUCS:   report.EUCSComplete, ENISA: report.ENISAPortable, Phases: []string{PhaseMigrate, PhaseVerify, PhaseRestore, PhaseCompare}, Details: det})

	add(report.Evidence{Claim: "The format is open and interoperable",
		Status: d.status(PhaseVerify, PhaseCompare),
		How:    "after decryption at B the data is FHIR R4 NDJSON in the Bulk Data layout; every resource validated again (types, ids, references that resolve)",
		EUCS:   report.EUCSFormat, ENISA: report.ENISAPortable, Phases: []string{PhaseVerify, PhaseCompare}})

	det = []string{"report.json is signed (report.json.sig, purpose " + report.SignaturePurpose + "); check with: ehrport report verify report.json"}
	if v := st.verifyRep; v != nil && v.SignatureChecked {
		det = append(det, fmt.Sprintf("manifest signature checked at B (signing key %d)", r.Keys.SigningKeyID))
	}
	add(report.Evidence{Claim: "Integrity and tamper evidence",
		Status: d.status(PhaseVerify, PhaseRestore),
		How:    "the manifest at B is signed by the customer's signing key and checked; every envelope is bound to its path and export; this report is signed over its exact bytes",
		EUCS:   report.EUCSIntegrity, ENISA: report.ENISAIncident, Phases: []string{PhaseVerify, PhaseRestore}, Details: det})

	rto := report.Evidence{Claim: "The exit meets the RTO", How: "each phase is timed with its throughput; the total is compared with the agreed RTO",
		EUCS: eucsRTO, ENISA: report.ENISAPortable, Phases: []string{PhaseExport, PhaseMigrate, PhaseVerify, PhaseRestore, PhaseCompare, PhaseAudit},
		Details: []string{fmt.Sprintf("total %.3fs", r.TotalSeconds)}}
	switch {
	case r.RTO == nil:
		rto.Status = report.EvidenceMeasured
		rto.Details = append(rto.Details, "no RTO given (--rto): timings recorded, not judged")
	case r.RTO.Met:
		rto.Status = report.EvidenceProven
		rto.Details = append(rto.Details, "RTO "+r.RTO.Limit+" met")
	default:
		rto.Status = report.EvidenceFailed
		rto.Details = append(rto.Details, "RTO "+r.RTO.Limit+" NOT met")
	}
	add(rto)

	del := report.Evidence{Claim: "The old provider deleted the data", EUCS: eucsDeletion, Phases: []string{PhaseDecommission},
		How: "every object of the export at A deleted (manifest first), then the listing and, where the store keeps versions, the version listing must be empty (--purge-versions removes versions and delete markers for good)"}
	del.Status = d.status(PhaseDecommission)
	if dc := st.decom; dc != nil {
		del.Details = []string{fmt.Sprintf("%d objects deleted; listing afterwards: %d objects", dc.deleted, dc.remaining), dc.versionNote}
	} else if p := r.Phase(PhaseDecommission); p != nil {
		del.Details = []string{"not run: " + p.SkipReason}
	}
	add(del)

	if d.o.RestoreFHIR != nil {
		fe := report.Evidence{Claim: "The data is usable at the new provider: it loads into a FHIR server complete",
			Status: d.status(PhaseRestoreFHIR), EUCS: report.EUCSFormat, ENISA: report.ENISAPortable, Phases: []string{PhaseRestoreFHIR},
			How: "the export at B restored (signature and every hash checked, decrypted in memory only) into a FHIR R4 server as transaction Bundles of PUT entries that keep every id; then GET [base]/Type?_summary=count must equal the export's count for every type"}
		if fr := st.fhirRes; fr != nil && fr.Load != nil {
			fe.Details = append(fe.Details, fmt.Sprintf("%s (FHIR %s%s): %d resources in %d transaction Bundles, %.0f resources/s, %d retries",
				fr.Server, dash(fr.FHIRVersion), uriNote(fr.Software), fr.Load.Resources, fr.Load.Bundles, fr.Load.PerSecond, fr.Load.Retries))
			if fr.Check != nil {
				for _, t := range sortedKeys(fr.Check.Server) {
					fe.Details = append(fe.Details, fmt.Sprintf("%s: export %d, server %d", t, fr.Restore.Counts[t], fr.Check.Server[t]))
				}
			}
		}
		add(fe)
	}

	for _, e := range report.TransitAndLocation(r.Stores) {
		add(e)
	}
	r.Evidence = ev
}

func uriNote(u string) string {
	if u == "" {
		return ""
	}
	return ", " + u
}

func (d *drill) notChecked() {
	r, st := d.rep, d.st
	seen := map[string]bool{}
	var out []string
	add := func(s string) {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	add("contract clauses (exit assistance, deletion commitments, data location in the contract): not machine-checkable")
	add("incident management processes and physical security at either provider")
	add("who else holds copies of the key directory or its passphrase (key custody outside this machine)")
	add("server-side encryption claims: recorded at most, never counted as evidence")
	if r.Keys.Ephemeral {
		add("the customer's real keys: this drill used ephemeral keys created for it; run with --keys DIR for the hospital's key directory")
	}
	if r.Inputs.Source == "synthetic" {
		add("real patient data: this drill used generated sample patients; run with --from PATH for a real export")
	}
	if !d.o.DecommissionSource {
		add("deletion at the source (EUCS PI-03.4): --decommission-source was not given")
	}
	if d.o.RestoreFHIR == nil {
		add("loading into a FHIR server at the new provider (is the data usable there, not just present): --restore-fhir URL was not given")
	} else {
		add("restore-fhir: the FHIR server's own validation and storage of each resource beyond its count per type (compare a sample by reading it back)")
	}
	if r.Inputs.Source == "fhir-server" {
		add("the FHIR server's data beyond its Bulk Data $export: the comparison checks the restored data against what the export downloaded, not against the server's database")
	}
	add("object lock on the manifest and the report: not applied by the drill")
	for _, s := range r.Stores {
		if s.Kind == "local" {
			add("encryption in transit and data location for store " + s.Role + ": it is a local folder")
		}
	}
	if st.verifyRep != nil {
		for _, n := range st.verifyRep.NotChecked {
			add("verify: " + n)
		}
	}
	if st.auditRep != nil {
		for _, n := range st.auditRep.NotChecked {
			// The drill itself covers what the audit sends to verify, and
			// states the generic limits above.
			if (strings.Contains(n, "ehrport verify") && d.status(PhaseVerify) == report.EvidenceProven) ||
				strings.Contains(n, "contract clauses") || strings.Contains(n, "server-side encryption") {
				continue
			}
			add("audit: " + n)
		}
	}
	for _, p := range r.Phases {
		if p.Status == report.StatusSkipped && p.Name != PhaseDecommission && !(p.Name == PhaseRestoreFHIR && d.o.RestoreFHIR == nil) {
			add(fmt.Sprintf("phase %s: skipped (%s)", p.Name, p.SkipReason))
		}
	}
	r.NotChecked = out
}
