package bulk

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ehrport/ehrport/fhir"
)

// Version is the manifest flavour, detected from its fields.
type Version int

const (
	// STU3 is the Bulk Data IG 3.0.0 manifest (and STU1/STU2, which share
	// its shape): `request`, `error[]`, `extension` as an object.
	STU3 Version = 3
	// STU4 is the STU4 manifest: `manifestType`, `outcome[]`, `extension`
	// as an array of Extensions, no `request`.
	STU4 Version = 4
)

// Kind says which list of the manifest a File came from.
type Kind string

const (
	KindOutput  Kind = "output"  // resources
	KindDeleted Kind = "deleted" // transaction Bundles of DELETE entries
	KindError   Kind = "error"   // OperationOutcomes (`error[]`, STU4 `outcome[]`)
)

// Manifest is a complete-status response of a bulk export, STU3 or STU4,
// normalised: `error[]` and `outcome[]` both land in Errors, `extension`
// is kept raw whether it is an object (STU3) or an array (STU4).
//
// A Manifest from [ParseManifest] has been validated: transactionTime is a
// FHIR instant, requiresAccessToken is present, and every file has an
// absolute http(s) URL and a non-negative count. Oddities that are legal or
// harmless (a `continuesInFile` naming a file not listed, an empty
// `outputOrganizedBy`) are reported in Warnings instead.
type Manifest struct {
	Version             Version
	ManifestType        string // STU4 only
	TransactionTime     string // as sent; use it as the next export's _since
	Request             string // STU3 only; STU4 dropped it
	RequiresAccessToken bool
	OutputOrganizedBy   string // "" when absent or empty
	Output              []File
	Deleted             []File
	Errors              []File
	Links               []Link
	Extension           json.RawMessage // compacted; object (STU3) or array (STU4), nil if absent

	// Warnings lists legal but suspicious content found while parsing.
	Warnings []string `json:"-"`
}

// File is one entry of `output[]`, `deleted[]` or `error[]`/`outcome[]`.
type File struct {
	Kind            Kind
	Type            string // resource type; may be empty (organizeOutputBy, STU4 deleted/outcome)
	URL             string
	Count           int64 // meaningful only when HasCount
	HasCount        bool
	ContinuesInFile string
	Extension       json.RawMessage
	// RequiresAccessToken is copied from the manifest the file was listed
	// in: Open sends the bearer token only when it is true.
	RequiresAccessToken bool
}

// Link is one entry of the manifest's `link[]`.
type Link struct {
	Relation string
	URL      string
}

// Next returns the URL of the next page of a partial manifest, or "" when
// this manifest is complete. Fragment-only links such as the Bulk Publish
// "#pending" marker are not pages and give "".
func (m *Manifest) Next() string {
	for _, l := range m.Links {
		if l.Relation == "next" && !strings.HasPrefix(l.URL, "#") {
			return l.URL
		}
	}
	return ""
}

// Files returns Output, Deleted and Errors in that order.
func (m *Manifest) Files() []File {
	out := make([]File, 0, len(m.Output)+len(m.Deleted)+len(m.Errors))
	out = append(out, m.Output...)
	out = append(out, m.Deleted...)
	return append(out, m.Errors...)
}

// TransactionInstant parses TransactionTime.
func (m *Manifest) TransactionInstant() (time.Time, error) {
	return time.Parse(time.RFC3339Nano, m.TransactionTime)
}

type wireFile struct {
	Type            string          `json:"type,omitempty"`
	URL             string          `json:"url"`
	Count           *int64          `json:"count,omitempty"`
	ContinuesInFile string          `json:"continuesInFile,omitempty"`
	Extension       json.RawMessage `json:"extension,omitempty"`
}

type wireLink struct {
	Relation string `json:"relation"`
	URL      string `json:"url"`
}

type wireManifest struct {
	ManifestType        string     `json:"manifestType,omitempty"`
	TransactionTime     string     `json:"transactionTime"`
	Request             string     `json:"request,omitempty"`
	RequiresAccessToken *bool      `json:"requiresAccessToken"`
	OutputOrganizedBy   string     `json:"outputOrganizedBy,omitempty"`
	Output              []wireFile `json:"output"`
	Deleted             []wireFile `json:"deleted,omitempty"`
	Error               []wireFile `json:"error,omitempty"`
	// Outcome is a pointer so that `"outcome": []`, which alone makes a
	// manifest STU4, survives omitempty when it is written back.
	Outcome   *[]wireFile     `json:"outcome,omitempty"`
	Link      []wireLink      `json:"link,omitempty"`
	Extension json.RawMessage `json:"extension,omitempty"`
}

// fhirInstant is the FHIR R4 instant regex: time.Parse alone accepts
// one-digit hours and year 0000, which FHIR does not.
// Compiled on first use: package init runs before every command.
var fhirInstant = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^([0-9]([0-9]([0-9][1-9]|[1-9]0)|[1-9]00)|[1-9]000)-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)(\.[0-9]{1,9})?(Z|(\+|-)((0[0-9]|1[0-3]):[0-5][0-9]|14:00))$`)
})

// ParseManifest parses and validates a manifest. src names where the bytes
// came from (a URL or a file path) and appears in every error, which wraps
// fhir.ErrBadInput.
func ParseManifest(src string, data []byte) (*Manifest, error) {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("bulk: manifest %s: %s: %w", src, fmt.Sprintf(format, a...), fhir.ErrBadInput)
	}
	var w wireManifest
	if err := decodeStrictJSON(data, &w); err != nil {
		return nil, bad("%v", err)
	}
	m := &Manifest{
		Version:           STU3,
		ManifestType:      w.ManifestType,
		TransactionTime:   w.TransactionTime,
		Request:           w.Request,
		OutputOrganizedBy: w.OutputOrganizedBy,
	}
	if w.TransactionTime == "" {
		return nil, bad("transactionTime is missing")
	}
	if _, err := time.Parse(time.RFC3339Nano, w.TransactionTime); err != nil || !fhirInstant().MatchString(w.TransactionTime) {
		return nil, bad("transactionTime %q is not a FHIR instant", w.TransactionTime)
	}
	if w.RequiresAccessToken == nil {
		return nil, bad("requiresAccessToken is missing; refusing to guess whether file URLs need the bearer token")
	}
	m.RequiresAccessToken = *w.RequiresAccessToken
	if bytes.Contains(data, []byte(`"outputOrganizedBy"`)) && w.OutputOrganizedBy == "" {
		m.Warnings = append(m.Warnings, `outputOrganizedBy is "" (treated as absent)`)
	}
	ext, isArray, err := compactExtension(w.Extension)
	if err != nil {
		return nil, bad("extension: %v", err)
	}
	m.Extension = ext
	if w.ManifestType != "" || w.Outcome != nil || isArray {
		m.Version = STU4
	}

	conv := func(kind Kind, in []wireFile) ([]File, error) {
		if len(in) == 0 {
			return nil, nil
		}
		out := make([]File, 0, len(in))
		for i, f := range in {
			if err := checkFileURL(f.URL); err != nil {
				return nil, bad("%s[%d].url: %v", kind, i, err)
			}
			e, _, err := compactExtension(f.Extension)
			if err != nil {
				return nil, bad("%s[%d].extension: %v", kind, i, err)
			}
			file := File{Kind: kind, Type: f.Type, URL: f.URL, ContinuesInFile: f.ContinuesInFile, Extension: e,
				RequiresAccessToken: m.RequiresAccessToken}
			if f.Count != nil {
				if *f.Count < 0 {
					return nil, bad("%s[%d].count is negative (%d)", kind, i, *f.Count)
				}
				file.Count, file.HasCount = *f.Count, true
			}
			out = append(out, file)
		}
		return out, nil
	}
	if m.Output, err = conv(KindOutput, w.Output); err != nil {
		return nil, err
	}
	if m.Deleted, err = conv(KindDeleted, w.Deleted); err != nil {
		return nil, err
	}
	errs, err := conv(KindError, w.Error)
	if err != nil {
		return nil, err
	}
	var wireOutcomes []wireFile
	if w.Outcome != nil {
		wireOutcomes = *w.Outcome
	}
	outcomes, err := conv(KindError, wireOutcomes)
	if err != nil {
		return nil, err
	}
	m.Errors = append(errs, outcomes...)
	for i, l := range w.Link {
		if l.Relation == "" || l.URL == "" {
			return nil, bad("link[%d] needs relation and url", i)
		}
		if l.Relation == "next" && !strings.HasPrefix(l.URL, "#") {
			if err := checkFileURL(l.URL); err != nil {
				return nil, bad("link[%d].url: %v", i, err)
			}
		}
		m.Links = append(m.Links, Link(l))
	}
	m.Warnings = append(m.Warnings, continuationWarnings(m)...)
	return m, nil
}

// MarshalJSON writes the manifest in the wire form of its Version: STU4
// manifests carry `outcome`, STU3 ones `error`. Extensions are written as
// parsed (compacted, without HTML escaping); note that json.Marshal of a
// Manifest escapes <, > and & again, which is the same JSON.
func (m *Manifest) MarshalJSON() ([]byte, error) {
	conv := func(in []File) []wireFile {
		var out []wireFile
		for _, f := range in {
			wf := wireFile{Type: f.Type, URL: f.URL, ContinuesInFile: f.ContinuesInFile, Extension: f.Extension}
			if f.HasCount {
				c := f.Count
				wf.Count = &c
			}
			out = append(out, wf)
		}
		return out
	}
	rat := m.RequiresAccessToken
	w := wireManifest{
		ManifestType:        m.ManifestType,
		TransactionTime:     m.TransactionTime,
		Request:             m.Request,
		RequiresAccessToken: &rat,
		OutputOrganizedBy:   m.OutputOrganizedBy,
		Output:              conv(m.Output),
		Deleted:             conv(m.Deleted),
		Extension:           m.Extension,
	}
	if w.Output == nil {
		w.Output = []wireFile{}
	}
	if m.Version == STU4 {
		// An STU4 manifest may be STU4 only because of `"outcome": []`;
		// keep the empty array so the manifest re-parses as STU4.
		oc := conv(m.Errors)
		if oc == nil {
			oc = []wireFile{}
		}
		w.Outcome = &oc
	} else {
		w.Error = conv(m.Errors)
	}
	for _, l := range m.Links {
		w.Link = append(w.Link, wireLink(l))
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(w); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func continuationWarnings(m *Manifest) []string {
	var warns []string
	for _, list := range [][]File{m.Output, m.Deleted, m.Errors} {
		for _, f := range list {
			if f.ContinuesInFile == "" {
				continue
			}
			listed := slices.ContainsFunc(m.Files(), func(g File) bool {
				return g.URL == f.ContinuesInFile || strings.HasSuffix(g.URL, "/"+f.ContinuesInFile)
			})
			if !listed {
				warns = append(warns, fmt.Sprintf("%s file %s: continuesInFile %q is not listed in this manifest", f.Kind, redact(f.URL), f.ContinuesInFile))
			}
		}
	}
	return warns
}

func checkFileURL(raw string) error {
	if raw == "" {
		return errors.New("missing")
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("not a URL: %v", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return fmt.Errorf("%q is not an absolute http(s) URL", redact(raw))
	}
	return nil
}

// compactExtension checks that an extension is absent, an object or an
// array, and returns it compacted (nil when absent or null).
func compactExtension(raw json.RawMessage) (json.RawMessage, bool, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, false, nil
	}
	if raw[0] != '{' && raw[0] != '[' {
		return nil, false, errors.New("must be an object (STU3) or an array (STU4)")
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, false, err
	}
	return json.RawMessage(buf.Bytes()), raw[0] == '[', nil
}

// decodeStrictJSON decodes exactly one JSON value into v, rejecting
// trailing data, and reports syntax errors with a line and column.
func decodeStrictJSON(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(v); err != nil {
		return jsonPos(data, err)
	}
	if rest := bytes.TrimSpace(data[dec.InputOffset():]); len(rest) > 0 {
		return fmt.Errorf("trailing data after the JSON value at offset %d", dec.InputOffset())
	}
	return nil
}

func jsonPos(data []byte, err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	var off int64
	switch {
	case errors.As(err, &se):
		off = se.Offset
	case errors.As(err, &te):
		off = te.Offset
	default:
		if errors.Is(err, io.EOF) {
			return errors.New("empty document, not JSON")
		}
		return fmt.Errorf("invalid JSON: %v", err)
	}
	if off > int64(len(data)) {
		off = int64(len(data))
	}
	line := 1 + bytes.Count(data[:off], []byte("\n"))
	col := int(off) - bytes.LastIndexByte(data[:off], '\n')
	return fmt.Errorf("invalid JSON at line %d, column %d: %v", line, col, err)
}
