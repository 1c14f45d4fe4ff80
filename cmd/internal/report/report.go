// Package report is ehrport's evidence report: what a drill (or an audit, or
// a verification) did, how long each phase took, what it found, what it
// proved with which EUCS and ENISA references, and what it did not check.
//
// A report is three files in one folder (docs/report-schema.md):
//
//   - report.json, the record, in the versioned schema of this file;
//   - report.html, the same for a human: self-contained (inline CSS and
//     SVG, no script, nothing fetched from anywhere), verdict first;
//   - report.json.sig, an Ed25519 signature over the exact bytes of
//     report.json for the purpose "ehrport/report/v1", made with the
//     signing key of the customer's key directory.
//
// signing.pub.json, the public verification keyset, is written beside them so
// that `ehrport report verify` works out of the box. It proves the report was
// not edited after signing only to someone who trusts that key: an auditor
// compares its key id with the hospital's (`ehrport keys list`) or verifies
// with the hospital's own copy (--keys, --verify-key).
//
// The types below mirror docs/report-schema.md; change both together and
// bump SchemaVersion for anything a reader could trip over.
package report

import (
	"time"
)

// Schema and file names (docs/report-schema.md §1).
const (
	SchemaVersion    = 1
	SignaturePurpose = "ehrport/report/v1"

	FileJSON      = "report.json"
	FileHTML      = "report.html"
	FileSignature = "report.json.sig"
	FileVerifyKey = "signing.pub.json"
)

// Verdicts.
const (
	Pass = "PASS"
	Fail = "FAIL"
)

// Phase statuses.
const (
	StatusPass    = "pass"
	StatusFail    = "fail"
	StatusSkipped = "skipped"
)

// Evidence statuses.
const (
	EvidenceProven   = "proven"
	EvidenceFailed   = "failed"
	EvidenceMeasured = "measured" // recorded, with no threshold to meet
	EvidenceNotRun   = "not-run"
)

// Severities of findings, as in audit.
const (
	SevInfo     = "info"
	SevLow      = "low"
	SevMedium   = "medium"
	SevHigh     = "high"
	SevCritical = "critical"
)

// Report is report.json.
type Report struct {
	SchemaVersion int    `json:"schemaVersion"`
	Kind          string `json:"kind"` // "drill", "audit" or "verify"
	Tool          Tool   `json:"tool"`
	GeneratedAt   string `json:"generatedAt"` // RFC 3339, UTC
	RunID         string `json:"runId"`

	// Verdict is PASS only when every phase passed and the RTO, if one
	// was given, was met. VerdictReasons say why not.
	Verdict        string   `json:"verdict"`
	VerdictReasons []string `json:"verdictReasons"`
	RTO            *RTO     `json:"rto"`
	// TotalSeconds is the wall-clock time from the start of the first
	// phase to the end of the last one.
	TotalSeconds float64 `json:"totalSeconds"`

	Inputs   Inputs     `json:"inputs"`
	Stores   []Store    `json:"stores"`
	Keys     Keys       `json:"keys"`
	ExportID string     `json:"exportId,omitempty"`
	Phases   []Phase    `json:"phases"`
	Counts   Counts     `json:"counts"`
	Findings []Finding  `json:"findings"`
	Evidence []Evidence `json:"evidence"`
	// NotChecked lists, in plain words, what this run did not check.
	NotChecked []string `json:"notChecked"`
}

// Tool names the program that wrote the report.
type Tool struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// RTO is the agreed recovery time objective and whether it was met.
type RTO struct {
	Limit        string  `json:"limit"` // as given, e.g. "4h0m0s"
	LimitSeconds float64 `json:"limitSeconds"`
	Met          bool    `json:"met"`
}

// Inputs describe the source data.
type Inputs struct {
	// Source is "synthetic" (generated sample patients) or "files".
	Source   string   `json:"source"`
	Paths    []string `json:"paths,omitempty"`
	Patients int      `json:"patients,omitempty"`
	Seed     uint64   `json:"seed,omitempty"`
	// Resources and Bytes are what the source holds, read the way the
	// export reads it (compacted records, duplicates once).
	Resources int64 `json:"resources"`
	Bytes     int64 `json:"bytes"`
	// Embedded is true when the drill ran on its embedded defaults
	// (temporary folders, ephemeral keys).
	Embedded bool `json:"embedded"`
}

// Store is one store the drill used. Credentials never appear.
type Store struct {
	Role     string `json:"role"` // "A" (source cloud) or "B" (target cloud)
	Location string `json:"location"`
	Kind     string `json:"kind"` // "s3" or "local"
	Endpoint string `json:"endpoint,omitempty"`
	// BucketLocation is the region the server reports for the bucket.
	BucketLocation string    `json:"bucketLocation,omitempty"`
	Versioning     string    `json:"versioning,omitempty"`
	ObjectLock     string    `json:"objectLock,omitempty"`
	TLS            bool      `json:"tls"`
	TLSVersion     string    `json:"tlsVersion,omitempty"`
	CertSHA256     string    `json:"certSha256,omitempty"`
	CertSubject    string    `json:"certSubject,omitempty"`
	CertNotAfter   time.Time `json:"certNotAfter,omitzero"`
	// Ephemeral stores were temporary folders, removed after the drill.
	Ephemeral bool   `json:"ephemeral,omitempty"`
	Note      string `json:"note,omitempty"`
}

// Keys records which keys were used: ids, types and dates, never secrets.
type Keys struct {
	// Dir is the key directory, or "" for ephemeral keys.
	Dir       string `json:"dir,omitempty"`
	Ephemeral bool   `json:"ephemeral"`
	// Protection is how the secret key files are protected at rest.
	Protection string `json:"protection,omitempty"`
	// Recipients are the stanzas every exported object carries (from the
	// export's manifest).
	Recipients   []Recipient `json:"recipients"`
	SigningKeyID uint32      `json:"signingKeyId"`
	// ReportSigningKeyID signed report.json.sig.
	ReportSigningKeyID uint32 `json:"reportSigningKeyId"`
	List               []Key  `json:"list"`
}

// Recipient is one key every object is encrypted for.
type Recipient struct {
	Type  string `json:"type"`
	Role  string `json:"role"`
	KeyID uint32 `json:"keyId"`
	URI   string `json:"uri,omitempty"`
}

// Key is one key of the key directory.
type Key struct {
	ID      uint32    `json:"id"`
	Purpose string    `json:"purpose"`
	Type    string    `json:"type"`
	Status  string    `json:"status"`
	Primary bool      `json:"primary"`
	Created time.Time `json:"created"`
}

// Phase is one timed step.
type Phase struct {
	Name   string `json:"name"`
	Title  string `json:"title"`
	Status string `json:"status"`
	// SkipReason says why a skipped phase did not run.
	SkipReason string `json:"skipReason,omitempty"`
	// Error is the error that stopped the phase, if any.
	Error string `json:"error,omitempty"`
	// StartedAt is RFC 3339; OffsetSeconds is from the drill's start.
	StartedAt       string  `json:"startedAt,omitempty"`
	OffsetSeconds   float64 `json:"offsetSeconds"`
	DurationSeconds float64 `json:"durationSeconds"`

	Objects   int64 `json:"objects"`
	Bytes     int64 `json:"bytes"`
	Resources int64 `json:"resources"`
	// Throughput is over DurationSeconds; zero when nothing was moved.
	Throughput Throughput `json:"throughput"`
	// Summary is one line on what the phase did and proved.
	Summary  string `json:"summary,omitempty"`
	Findings int    `json:"findings"`
}

// Throughput figures of a phase.
type Throughput struct {
	MBPerSecond        float64 `json:"mbPerSecond"`
	ObjectsPerSecond   float64 `json:"objectsPerSecond"`
	ResourcesPerSecond float64 `json:"resourcesPerSecond"`
}

// Counts are resources per type at the source and at the target.
type Counts struct {
	Source map[string]int64 `json:"source"`
	Target map[string]int64 `json:"target"`
	// TargetFrom says how the target counts were obtained.
	TargetFrom string `json:"targetFrom,omitempty"`
}

// Finding is one problem (or, at severity info, one recorded fact).
type Finding struct {
	Phase    string   `json:"phase"`
	Severity string   `json:"severity"`
	Code     string   `json:"code"`
	Object   string   `json:"object,omitempty"`
	Message  string   `json:"message"`
	EUCS     []string `json:"eucs"`
	ENISA    []string `json:"enisa"`
}

// Evidence is one claim the run set out to prove, and how.
type Evidence struct {
	Claim   string   `json:"claim"`
	Status  string   `json:"status"`
	How     string   `json:"how"`
	EUCS    []string `json:"eucs"`
	ENISA   []string `json:"enisa"`
	Phases  []string `json:"phases"`
	Details []string `json:"details,omitempty"`
}

// Severe reports whether a finding of severity s fails a drill: high and
// critical do; low and medium are warnings; info is a recorded fact.
func Severe(s string) bool { return s == SevHigh || s == SevCritical }

// Failing counts the findings that fail a drill.
func (r *Report) Failing() int {
	n := 0
	for _, f := range r.Findings {
		if Severe(f.Severity) {
			n++
		}
	}
	return n
}

// Phase returns the phase called name, or nil.
func (r *Report) Phase(name string) *Phase {
	for i := range r.Phases {
		if r.Phases[i].Name == name {
			return &r.Phases[i]
		}
	}
	return nil
}

// SetThroughput fills p.Throughput from its counters and duration.
func (p *Phase) SetThroughput() {
	if p.DurationSeconds <= 0 {
		return
	}
	s := p.DurationSeconds
	p.Throughput = Throughput{
		MBPerSecond:        round(float64(p.Bytes) / s / 1e6),
		ObjectsPerSecond:   round(float64(p.Objects) / s),
		ResourcesPerSecond: round(float64(p.Resources) / s),
	}
}

func round(f float64) float64 {
	return float64(int64(f*100+0.5)) / 100
}
