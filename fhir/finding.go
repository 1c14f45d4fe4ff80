package fhir

import (
	"fmt"
	"strconv"
	"strings"
)

// Position names where an item came from. Every finding and every bad-input
// error carries one, so a user can open the file at the right place.
type Position struct {
	File  string // path as given or found by the walk
	Line  int64  // 1-based NDJSON line; 0 when the file is not NDJSON
	Entry int    // 0-based Bundle.entry index; -1 when not inside a Bundle
}

// String formats the position as "file:line", "file entry 3" or
// "file:line entry 3".
func (p Position) String() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		b.WriteByte(':')
		b.WriteString(strconv.FormatInt(p.Line, 10))
	}
	if p.Entry >= 0 {
		b.WriteString(" entry ")
		b.WriteString(strconv.Itoa(p.Entry))
	}
	return b.String()
}

// Severity orders findings.
type Severity uint8

const (
	// Info findings change nothing (an identical duplicate stored once, a
	// Bundle kept whole instead of split).
	Info Severity = iota
	// Warning findings are reported but never make a resource invalid.
	Warning
	// Error findings make a resource invalid; the Policy decides what then
	// happens to it.
	Error
)

func (s Severity) String() string {
	switch s {
	case Info:
		return "info"
	case Warning:
		return "warning"
	default:
		return "error"
	}
}

// Code classifies a finding. The strings are stable: they appear in reports.
type Code string

const (
	CodeInvalidJSON    Code = "invalid-json"        // not one JSON value, or over a limit
	CodeNotResource    Code = "not-resource"        // not an object, or no string resourceType
	CodeUnknownType    Code = "unknown-type"        // resourceType not in R4
	CodeWrongVersion   Code = "wrong-fhir-version"  // DSTU2/STU3 data, or a declared non-R4 version
	CodeOldTerminology Code = "old-terminology"     // pre-R4 HL7 code system URIs (a version hint)
	CodeMissingID      Code = "missing-id"          // no id where one is needed
	CodeBadID          Code = "bad-id"              // id not matching [A-Za-z0-9\-\.]{1,64}
	CodeUnknownElement Code = "unknown-element"     // top-level element not defined for the R4 type
	CodeShape          Code = "wrong-shape"         // array where R4 wants one value, or the reverse
	CodeRequired       Code = "missing-required"    // a required top-level element is absent
	CodeModel          Code = "invalid-content"     // rejected by the typed R4 model (bad codes, types)
	CodeDuplicateKey   Code = "duplicate-key"       // the same JSON key twice in one object
	CodeEncoding       Code = "invalid-utf8"        // bytes that are not UTF-8
	CodeDuplicate      Code = "duplicate-id"        // same Type/id twice with different content
	CodeDuplicateSame  Code = "duplicate-identical" // same Type/id twice, identical content (stored once)
	CodeDanglingRef    Code = "unresolved-reference"
	CodeBadReference   Code = "bad-reference"   // a reference that is not a URL, Type/id, #id or urn
	CodeSplitLostLink  Code = "split-lost-link" // --split-bundles drops a urn:uuid link
	CodeKeptWhole      Code = "bundle-kept-whole"
	CodeBundleType     Code = "bad-bundle"
	CodeEmptyFile      Code = "empty-file" // an NDJSON file with no lines at all (a failed download?)
)

// Finding is one problem found in the input. Path is a JSON path inside the
// resource, starting with its type ("Observation.subject.reference"), or
// "Bundle.entry[3]..." for Bundles kept whole; it may be empty for problems
// of a whole line or file.
type Finding struct {
	Severity Severity
	Code     Code
	Pos      Position
	Path     string
	Msg      string
}

func (f Finding) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s [%s]", f.Pos, f.Severity, f.Code)
	if f.Path != "" {
		fmt.Fprintf(&b, " at %s", f.Path)
	}
	b.WriteString(": ")
	b.WriteString(f.Msg)
	return b.String()
}

// FindingsError is returned under PolicyFail. It wraps ErrBadInput and
// carries the error findings of the rejected item.
type FindingsError struct {
	Findings []Finding
	More     int // findings of the same kind counted but not listed
}

// Count is the number of findings, listed or not.
func (e *FindingsError) Count() int { return len(e.Findings) + e.More }

func (e *FindingsError) Error() string {
	if len(e.Findings) == 0 {
		return ErrBadInput.Error()
	}
	msg := e.Findings[0].String()
	if n := e.Count() - 1; n > 0 {
		msg += fmt.Sprintf(" (and %d more)", n)
	}
	dangling := true
	for _, f := range e.Findings {
		if f.Code == CodeWrongVersion {
			return msg
		}
		dangling = dangling && f.Code == CodeDanglingRef
	}
	if dangling {
		// --on-invalid does not apply: the resources were valid and written.
		return msg + "; add the referenced resources to the input, or rerun without --strict-references to export and count them"
	}
	return msg + "; fix the input, or rerun with --on-invalid=skip or --on-invalid=quarantine"
}

func (e *FindingsError) Unwrap() error { return ErrBadInput }
