package fhir

import (
	"fmt"
	"strings"
	"sync"
	"unicode/utf8"
)

// Validator checks one resource at a time against R4. It holds no state
// between calls, so Check is safe for concurrent use; export-wide checks
// (duplicates, references) are the Checker's.
//
// What Check enforces, from cheap to expensive:
//   - UTF-8, a string resourceType known to R4 (with DSTU2/STU3 detection),
//     an id matching [A-Za-z0-9\-\.]{1,64} where one is needed, no duplicated
//     top-level keys;
//   - top-level elements: known for the type (primitive extensions "_x"
//     included), array-valued exactly where R4 says ..*, and the required
//     ones present (generated from the models, choice elements as one-of);
//   - the typed R4 model, which rejects invalid codes and wrong JSON types
//     anywhere in the resource: a byte walker over tables generated from
//     the samply models (typed.go), with the verdict and error that
//     unmarshalling into the models gives, at a fraction of the cost;
//   - the same for each contained resource;
//   - the syntax of every Reference.reference.
type Validator struct {
	opts ValidatorOptions
	// oracle makes the typed-model check unmarshal into the samply models
	// (typedOracle) instead of walking the bytes: the differential tests.
	oracle bool
}

// ValidatorOptions configures a Validator. The zero value checks everything.
type ValidatorOptions struct {
	// SkipTypedModel turns off the typed-model check (codes and deep
	// shapes), keeping the generated top-level checks. For measurements.
	SkipTypedModel bool
}

// NewValidator returns a Validator.
func NewValidator(o ValidatorOptions) *Validator { return &Validator{opts: o} }

// Result is what Check learned about one resource.
type Result struct {
	Type     string
	ID       string
	Version  string // "STU3", "DSTU2", ... when the resource is not R4; "" otherwise
	Findings []Finding
	refs     []refSite
	invalid  bool
}

// Valid reports whether no finding has Error severity.
func (r *Result) Valid() bool { return !r.invalid }

func (r *Result) add(sev Severity, code Code, pos Position, path, msg string) {
	r.Findings = append(r.Findings, Finding{Severity: sev, Code: code, Pos: pos, Path: path, Msg: msg})
	if sev >= Error {
		r.invalid = true
	}
}

// CheckContext says where a resource sits.
type CheckContext struct {
	// PathPrefix starts JSON paths; "" means the resource type.
	PathPrefix string
	// IDOptional is set for Bundle entries that may lack an id (creates in
	// transactions and batches).
	IDOptional bool
}

// Check validates the compacted resource raw found at pos. raw must be the
// output of a Walker (valid, compacted JSON); anything else is reported as
// a finding, never a panic.
func (v *Validator) Check(raw []byte, pos Position, ctx CheckContext) *Result {
	r := &Result{}
	v.check(r, raw, pos, ctx, 0)
	return r
}

func (v *Validator) check(r *Result, raw []byte, pos Position, ctx CheckContext, depth int) {
	cs := checkScratchPool.Get().(*checkScratch)
	defer checkScratchPool.Put(cs)
	f := &cs.f
	// The references go to the Result: never share their slice with a
	// later call.
	f.refs = nil
	defer func() { f.refs = nil }()
	prefix := ctx.PathPrefix
	if err := scanFacts(f, &cs.s, raw, prefix, prefix == ""); err != nil {
		r.add(Error, CodeInvalidJSON, pos, prefix, "not a JSON object")
		return
	}
	if prefix == "" {
		prefix = f.resourceType
	}
	if depth == 0 {
		r.Type, r.ID = f.resourceType, f.id
		r.refs = f.refs
	}
	if !utf8.Valid(raw) {
		r.add(Error, CodeEncoding, pos, prefix, "contains bytes that are not UTF-8; FHIR JSON must be UTF-8")
	}
	if f.resourceType == "" {
		r.add(Error, CodeNotResource, pos, prefix, "no string resourceType: not a FHIR resource")
		return
	}
	if ver, why := versionTell(f); ver != "" {
		if depth == 0 {
			r.Version = ver
		}
		r.add(Error, CodeWrongVersion, pos, prefix, wrongVersionMsg(ver, why))
		return
	}
	elems, ok := r4Elements()[f.resourceType]
	if !ok {
		r.add(Error, CodeUnknownType, pos, prefix, fmt.Sprintf("resourceType %q is not an R4 resource type", f.resourceType))
		return
	}
	if !f.hasID {
		if !ctx.IDOptional {
			r.add(Error, CodeMissingID, pos, prefix+".id", "resource has no id; every exported resource needs one")
		}
	} else if f.idNotString || !validID(f.id) {
		r.add(Error, CodeBadID, pos, prefix+".id", fmt.Sprintf("id %q is not 1-64 characters of A-Z a-z 0-9 - .", f.id))
	}
	if f.dupKey != "" {
		r.add(Error, CodeDuplicateKey, pos, prefix+"."+f.dupKey, "key appears twice in the object; readers disagree on which value wins")
	}
	shapeErr := false
	var oldWhy []string
	oldVer := ""
	for _, k := range f.keys {
		name := k.name
		if name == "resourceType" {
			continue
		}
		if strings.HasPrefix(name, "_") {
			if _, ok := elems[name[1:]]; ok {
				continue
			}
		}
		fl, ok := elems[name]
		if !ok {
			if old, isOld := oldElementTell(f.resourceType, name); isOld {
				oldVer = old.version
				w := fmt.Sprintf("%s.%s is a %s element", f.resourceType, name, old.version)
				if old.r4 != "" {
					w += fmt.Sprintf(" (R4 uses %s)", old.r4)
				}
				oldWhy = append(oldWhy, w)
				continue
			}
			r.add(Error, CodeUnknownElement, pos, prefix+"."+name, fmt.Sprintf("%s has no element %q in R4", f.resourceType, name))
			continue
		}
		if isArr := k.kind == '['; isArr != (fl&elemArray != 0) && k.kind != 'n' {
			shapeErr = true
			want := "a single value"
			if fl&elemArray != 0 {
				want = "an array"
			}
			r.add(Error, CodeShape, pos, prefix+"."+name, fmt.Sprintf("R4 %s.%s is %s (DSTU2/STU3 data has this shape?)", f.resourceType, name, want))
		}
	}
	if len(oldWhy) > 0 {
		if depth == 0 {
			r.Version = oldVer
		}
		r.add(Error, CodeWrongVersion, pos, prefix, wrongVersionMsg(oldVer, strings.Join(oldWhy, "; ")))
	}
	for _, group := range r4Required()[f.resourceType] {
		found := false
		for _, n := range group {
			if hasElement(f, n) {
				found = true
				break
			}
		}
		if !found {
			r.add(Error, CodeRequired, pos, prefix+"."+group[0], fmt.Sprintf("required element %s is missing", strings.Join(group, " or ")))
		}
	}
	if f.oldSystems > 0 && depth == 0 {
		r.add(Warning, CodeOldTerminology, pos, prefix, fmt.Sprintf("%d codings use pre-R4 HL7 code system URIs such as %q (R4 uses http://terminology.hl7.org/CodeSystem/...); the data may be STU3 or DSTU2", f.oldSystems, f.oldSystem))
	}
	if !v.opts.SkipTypedModel && !shapeErr && f.resourceType != "Bundle" {
		if err := v.typedCheck(f.resourceType, raw); err != nil {
			path := prefix
			if err.field != "" {
				path = prefix + "." + err.field
			}
			if err.typeErr && f.oldSystems > 0 {
				// A JSON shape R4 does not have, together with pre-R4 code
				// systems: the resource is from an older version.
				if depth == 0 {
					r.Version = "DSTU2/STU3"
				}
				r.add(Error, CodeWrongVersion, pos, path, wrongVersionMsg("DSTU2/STU3",
					fmt.Sprintf("%s has a JSON shape R4 does not allow (%v) and codings use pre-R4 system URIs such as %q", path, err, f.oldSystem)))
			} else {
				r.add(Error, CodeModel, pos, path, "rejected by the R4 model: "+err.Error())
			}
		}
	}
	// Contained resources are checked like top-level ones; their ids are
	// local and required (they are the targets of "#id" references).
	for i, c := range f.contained {
		if depth > 4 {
			break
		}
		v.check(r, raw[c.start:c.end], pos, CheckContext{PathPrefix: fmt.Sprintf("%s.contained[%d]", prefix, i)}, depth+1)
	}
	if depth == 0 {
		checkRefSyntax(r, f, raw, pos)
	}
}

// checkScratch is the memory one check reuses; a pool hands each concurrent
// Check its own.
type checkScratch struct {
	f facts
	s factScratch
}

var checkScratchPool = sync.Pool{New: func() any { return new(checkScratch) }}

// hasElement reports whether the resource has element name, or only its
// primitive extension _name. A scan: resources have few keys, and a map
// per resource cost more than the typed-model check.
func hasElement(f *facts, name string) bool {
	for _, k := range f.keys {
		if k.name == name || len(k.name) == len(name)+1 && k.name[0] == '_' && k.name[1:] == name {
			return true
		}
	}
	return false
}

// typedCheck is the typed-model check of raw, a resourceType R4 knows.
func (v *Validator) typedCheck(resourceType string, raw []byte) *typedError {
	if v.oracle {
		return typedOracle(resourceType, raw)
	}
	_, err := checkTyped(resourceType, raw)
	return err
}

// validID implements the R4 id datatype: [A-Za-z0-9\-\.]{1,64}.
func validID(id string) bool {
	if len(id) == 0 || len(id) > 64 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if !idByte[id[i]] {
			return false
		}
	}
	return true
}

// idByte marks the bytes of [A-Za-z0-9\-\.]: one load a byte (ids are
// checked for every resource and every reference).
var idByte = func() (t [256]bool) {
	for c := 0; c < 256; c++ {
		t[c] = c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.'
	}
	return t
}()

// refKind classifies a Reference.reference.
type refKind uint8

const (
	refTypeID      refKind = iota // Type/id or Type/id/_history/v: resolved in the export
	refLocal                      // #id: resolved in contained
	refURN                        // urn:uuid: or urn:oid: : resolved against Bundle fullUrls
	refAbsolute                   // http(s)://...: a Bundle fullUrl or external
	refConditional                // Type?search: resolved by the receiving server
	refBad
)

// parseRef splits a reference; key is "Type/id" for refTypeID.
func parseRef(ref string) (refKind, string) {
	switch {
	case strings.HasPrefix(ref, "#"):
		return refLocal, ref[1:]
	case strings.HasPrefix(ref, "urn:uuid:") || strings.HasPrefix(ref, "urn:oid:"):
		return refURN, ref
	case strings.HasPrefix(ref, "http://") || strings.HasPrefix(ref, "https://"):
		return refAbsolute, ref
	}
	t, rest, ok := strings.Cut(ref, "/")
	if !ok {
		if strings.Contains(ref, "?") {
			return refConditional, ref
		}
		return refBad, ref
	}
	if strings.Contains(ref, "?") {
		return refConditional, ref
	}
	id, hist, _ := strings.Cut(rest, "/")
	if _, known := r4Elements()[t]; !known || !validID(id) {
		return refBad, ref
	}
	if hist != "" && !strings.HasPrefix(hist, "_history/") {
		return refBad, ref
	}
	// "Type/id" is where ref starts: a substring, not a new string.
	return refTypeID, ref[:len(t)+1+len(id)]
}

func checkRefSyntax(r *Result, f *facts, raw []byte, pos Position) {
	var containedIDs map[string]bool
	for _, ref := range f.refs {
		kind, key := parseRef(ref.ref)
		switch kind {
		case refBad:
			r.add(Warning, CodeBadReference, pos, ref.path, fmt.Sprintf("reference %q is not Type/id, #id, a urn or an absolute URL", ref.ref))
		case refLocal:
			if key == "" {
				continue // "#" refers to the containing resource
			}
			if containedIDs == nil {
				containedIDs = map[string]bool{}
				var cf facts
				for _, c := range f.contained {
					if readFacts(&cf, raw[c.start:c.end], "") == nil {
						containedIDs[cf.id] = true
					}
				}
			}
			if !containedIDs[key] {
				r.add(Error, CodeDanglingRef, pos, ref.path, fmt.Sprintf("reference %q names no contained resource", ref.ref))
			}
		}
	}
}
