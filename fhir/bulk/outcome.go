package bulk

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/ehrport/ehrport/fhir"
)

// Outcome is the part of an OperationOutcome that decides what the client
// does with an error status: whether any issue is `transient`, and the
// human-readable text.
type Outcome struct {
	Transient bool
	// Diagnostics is the issues' diagnostics or details.text, joined with
	// "; ", made safe to print (control characters removed, at most 300
	// bytes).
	Diagnostics string
	// Severity is the most severe issue's severity: "fatal", "error",
	// "warning" or "information" ("" without issues; an unknown value
	// counts as "error").
	Severity string
	Issues   int
}

// severityRank orders OperationOutcome.issue.severity values.
var severityRank = map[string]int{"": 0, "information": 1, "warning": 2, "error": 3, "fatal": 4}

// ParseOutcome reads an OperationOutcome body. ok is false when the body
// is not an OperationOutcome at all; the caller then has only the status.
func ParseOutcome(body []byte) (o Outcome, ok bool) {
	var oo struct {
		ResourceType string `json:"resourceType"`
		Issue        []struct {
			Severity    string `json:"severity"`
			Code        string `json:"code"`
			Diagnostics string `json:"diagnostics"`
			Details     struct {
				Text string `json:"text"`
			} `json:"details"`
		} `json:"issue"`
	}
	if json.Unmarshal(body, &oo) != nil || oo.ResourceType != "OperationOutcome" {
		return Outcome{}, false
	}
	var texts []string
	o.Issues = len(oo.Issue)
	for _, is := range oo.Issue {
		sev := is.Severity
		if _, known := severityRank[sev]; !known || sev == "" {
			sev = "error"
		}
		if severityRank[sev] > severityRank[o.Severity] {
			o.Severity = sev
		}
		if is.Code == "transient" {
			o.Transient = true
		}
		t := is.Diagnostics
		if t == "" {
			t = is.Details.Text
		}
		if t == "" {
			t = is.Code
		}
		if t != "" {
			texts = append(texts, t)
		}
	}
	o.Diagnostics = sanitize(strings.Join(texts, "; "))
	return o, true
}

// DeletedRef is one resource a `deleted[]` file says was deleted.
type DeletedRef struct {
	Type string
	ID   string
}

// ParseDeletedBundle reads one line of a `deleted[]` file: a transaction
// Bundle whose entries have request.method DELETE and request.url
// "Type/id". src names the file (and line) in errors, which wrap
// fhir.ErrBadInput.
func ParseDeletedBundle(src string, line []byte) ([]DeletedRef, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("bulk: deleted bundle %s: %s: %w", src, fmt.Sprintf(format, a...), fhir.ErrBadInput)
	}
	var b struct {
		ResourceType string `json:"resourceType"`
		Type         string `json:"type"`
		Entry        []struct {
			Request struct {
				Method string `json:"method"`
				URL    string `json:"url"`
			} `json:"request"`
		} `json:"entry"`
	}
	if err := decodeStrictJSON(line, &b); err != nil {
		return nil, bad("%v", err)
	}
	if b.ResourceType != "Bundle" {
		return nil, bad("resourceType is %q, want Bundle", b.ResourceType)
	}
	if b.Type != "transaction" {
		return nil, bad("Bundle.type is %q, want transaction", b.Type)
	}
	refs := make([]DeletedRef, 0, len(b.Entry))
	for i, e := range b.Entry {
		if e.Request.Method != "DELETE" {
			return nil, bad("entry[%d].request.method is %q, want DELETE", i, e.Request.Method)
		}
		typ, id, ok := strings.Cut(strings.TrimPrefix(e.Request.URL, "/"), "/")
		if !ok || typ == "" || id == "" || strings.ContainsAny(id, "/?") {
			return nil, bad("entry[%d].request.url %q is not Type/id", i, e.Request.URL)
		}
		refs = append(refs, DeletedRef{Type: typ, ID: id})
	}
	return refs, nil
}
