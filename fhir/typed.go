package fhir

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"unicode/utf8"
)

// The typed walker checks a resource's JSON bytes against tables derived
// from the samply R4 models (typed_gen.go) and gives the verdict, and the
// error, that json.Unmarshal into the model gives, without building the
// model. What it mirrors of encoding/json (v1) and the models:
//   - keys match fields exactly or case-insensitively (bytes.EqualFold);
//     unknown keys are skipped, whatever their value;
//   - a value of the wrong JSON kind is an UnmarshalTypeError: the first one
//     is kept, its value skipped, and the walk goes on;
//   - null is accepted everywhere except by a code type that is not behind a
//     pointer (an element of a code array, a required code): the code
//     type's UnmarshalJSON sees the raw value with every leading and
//     trailing quote trimmed, and anything not in its code list fails;
//   - such a code failure, or a string that is not a number put in a
//     json.Number, stops the walk and is the error (as in encoding/json,
//     where an Unmarshaler's error replaces a saved type error);
//   - numbers into int must parse as an int; json.RawMessage takes anything.
// The samply-based unmarshalTyped stays the oracle of the differential
// tests (typed_test.go, FuzzTypedWalker).

type tKind uint8

const (
	tkString tKind = iota // string
	tkNumber              // json.Number
	tkBool                // bool
	tkInt                 // int
	tkCode                // a code type (int with UnmarshalJSON); ref: typedCodes
	tkRaw                 // json.RawMessage
	tkStruct              // ref: typedStructs
)

type tFlags uint8

const (
	tfSlice tFlags = 1 << iota // a Go slice: the JSON value is an array of the kind
	tfPtr                      // behind a pointer: null never reaches a code type's decoder
)

type tStruct struct {
	name     string
	first, n uint16
}

type tField struct {
	name  string
	kind  tKind
	flags tFlags
	ref   uint16
	owner uint16
}

type tCodes struct {
	name  string
	codes []string
}

// typedError is the walker's version of the json.Unmarshal error.
type typedError struct {
	// typeErr is set for a json.UnmarshalTypeError (a wrong JSON kind);
	// field is then its Field (JSON names joined by ".", no indexes).
	typeErr bool
	field   string
	msg     string
}

func (e *typedError) Error() string { return e.msg }

// typedOracle, when set (by the tests), is the samply-based check the
// walker mirrors; a Validator with oracle set uses it instead.
var typedOracle func(resourceType string, raw []byte) *typedError

// maxTypedDepth is encoding/json's nesting limit.
const maxTypedDepth = 10000

// typedIndex is an open-addressing hash of (owner, name) for fields
// (keyed on the ASCII-lowercased name) and for codes (keyed exactly).
type typedIndex struct {
	mask  uint32
	slots []uint32 // 0: empty; else entry index + 1
}

var (
	typedOnce     sync.Once
	typedFieldIdx typedIndex
	typedCodeIdx  typedIndex
	typedCodeList []typedCodeEntry
	typedResource map[string]uint16
)

type typedCodeEntry struct {
	set  uint16
	code string
}

func typedHash(owner uint16, s []byte, lower bool) uint32 {
	h := uint32(2166136261) ^ uint32(owner)*0x9E3779B1
	for _, c := range s {
		if lower && 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		h = (h ^ uint32(c)) * 16777619
	}
	return h ^ h>>15
}

func newTypedIndex(n int) typedIndex {
	size := 1
	for size < 2*n {
		size <<= 1
	}
	return typedIndex{mask: uint32(size - 1), slots: make([]uint32, size)}
}

func (x *typedIndex) insert(h uint32, entry int) {
	for i := h & x.mask; ; i = (i + 1) & x.mask {
		if x.slots[i] == 0 {
			x.slots[i] = uint32(entry) + 1
			return
		}
	}
}

func typedInit() {
	typedFieldIdx = newTypedIndex(len(typedFields))
	for i := range typedFields {
		f := &typedFields[i]
		typedFieldIdx.insert(typedHash(f.owner, []byte(f.name), true), i)
	}
	n := 0
	for i := range typedCodes {
		n += len(typedCodes[i].codes)
	}
	typedCodeList = make([]typedCodeEntry, 0, n)
	typedCodeIdx = newTypedIndex(n)
	for i := range typedCodes {
		for _, c := range typedCodes[i].codes {
			typedCodeIdx.insert(typedHash(uint16(i), []byte(c), false), len(typedCodeList))
			typedCodeList = append(typedCodeList, typedCodeEntry{uint16(i), c})
		}
	}
	typedResource = make(map[string]uint16, r4ResourceCount)
	for i := 0; i < r4ResourceCount; i++ {
		typedResource[typedStructs[i].name] = uint16(i)
	}
}

// lookupField finds the field of struct sid that key (unquoted) names, as
// encoding/json does: exact, else case-insensitive.
func lookupField(sid uint16, key []byte) (uint16, bool) {
	for _, c := range key {
		if c >= utf8.RuneSelf {
			// Non-ASCII keys may still fold to an ASCII name (K, ſ).
			s := &typedStructs[sid]
			for i := s.first; i < s.first+s.n; i++ {
				if bytes.EqualFold(key, []byte(typedFields[i].name)) {
					return i, true
				}
			}
			return 0, false
		}
	}
	x := &typedFieldIdx
	for i := typedHash(sid, key, true) & x.mask; ; i = (i + 1) & x.mask {
		e := x.slots[i]
		if e == 0 {
			return 0, false
		}
		f := &typedFields[e-1]
		if f.owner == sid && asciiEqualFold(key, f.name) {
			return uint16(e - 1), true
		}
	}
}

func asciiEqualFold(a []byte, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if x == y {
			continue
		}
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func hasCode(set uint16, s []byte) bool {
	x := &typedCodeIdx
	for i := typedHash(set, s, false) & x.mask; ; i = (i + 1) & x.mask {
		e := x.slots[i]
		if e == 0 {
			return false
		}
		c := &typedCodeList[e-1]
		if c.set == set && string(s) == c.code {
			return true
		}
	}
}

// checkTyped walks raw as the typed model of resourceType. known is false
// for a type the models do not have; err is nil when the model accepts raw.
func checkTyped(resourceType string, raw []byte) (known bool, err *typedError) {
	typedOnce.Do(typedInit)
	sid, ok := typedResource[resourceType]
	if !ok {
		return false, nil
	}
	w := typedWalker{b: raw}
	w.run(sid)
	if w.hard != nil {
		return true, w.hard
	}
	if w.haveType {
		e := w.typeErr // a copy: w stays on the stack
		return true, &e
	}
	return true, nil
}

type typedWalker struct {
	b []byte
	// The field ids from the resource down to the current value: the
	// first len(path) in path, the rest in deeper (pathological nesting).
	path     [48]uint16
	npath    int
	deeper   []uint16
	depth    int
	hard     *typedError
	haveType bool
	typeErr  typedError
}

// errSyntax stops a walk over bytes that are not the valid JSON the
// walker's callers guarantee; it is reported, never a panic.
type errSyntax struct{}

func (w *typedWalker) run(sid uint16) {
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(errSyntax); !ok {
				if _, ok := r.(interface{ RuntimeError() }); !ok {
					panic(r)
				}
			}
			if w.hard == nil {
				w.hard = &typedError{msg: "not valid JSON"}
			}
		}
	}()
	i := w.ws(0)
	i = w.value(i, tField{kind: tkStruct, ref: sid, flags: tfPtr})
	if w.hard == nil && w.ws(i) != len(w.b) {
		w.hard = &typedError{msg: "not valid JSON"}
	}
}

func (w *typedWalker) ws(i int) int {
	for i < len(w.b) {
		switch w.b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// value checks the JSON value at b[i] against the target t (a field, or an
// element of a slice field when t has no tfSlice) and returns the index
// after it. After a hard error the return value is meaningless.
func (w *typedWalker) value(i int, t tField) int {
	c := w.b[i]
	if t.flags&tfSlice != 0 {
		switch c {
		case '[':
			return w.array(i, t)
		case 'n':
			return w.literal(i)
		}
		return w.typeMismatch(i, t)
	}
	switch t.kind {
	case tkStruct:
		switch c {
		case '{':
			return w.object(i, t.ref)
		case 'n':
			return w.literal(i)
		}
	case tkString:
		switch c {
		case '"':
			return w.str(i)
		case 'n':
			return w.literal(i)
		}
	case tkBool:
		switch c {
		case 't', 'f', 'n':
			return w.literal(i)
		}
	case tkInt:
		switch {
		case c == 'n':
			return w.literal(i)
		case c == '-' || '0' <= c && c <= '9':
			end := w.number(i)
			if !isInt(w.b[i:end]) {
				w.saveType("number "+string(w.b[i:end]), t)
			}
			return end
		}
	case tkNumber:
		switch {
		case c == 'n':
			return w.literal(i)
		case c == '-' || '0' <= c && c <= '9':
			return w.number(i)
		case c == '"':
			end := w.str(i)
			item := w.b[i:end]
			if !validNumber(unquoteJSON(item)) {
				w.hard = &typedError{msg: fmt.Sprintf("json: invalid number literal, trying to unmarshal %q into Number", item)}
			}
			return end
		}
	case tkCode:
		end := w.skip(i)
		if c == 'n' && t.flags&tfPtr != 0 {
			return end
		}
		s := bytes.TrimRight(bytes.TrimLeft(w.b[i:end], `"`), `"`)
		if !hasCode(t.ref, s) {
			w.hard = &typedError{msg: fmt.Sprintf("unknown %s code `%s`", typedCodes[t.ref].name, s)}
		}
		return end
	case tkRaw:
		return w.skip(i)
	}
	return w.typeMismatch(i, t)
}

// typeMismatch saves the UnmarshalTypeError of value b[i] into t and skips it.
func (w *typedWalker) typeMismatch(i int, t tField) int {
	v := "number"
	switch w.b[i] {
	case '"':
		v = "string"
	case 't', 'f':
		v = "bool"
	case '{':
		v = "object"
	case '[':
		v = "array"
	}
	w.saveType(v, t)
	return w.skip(i)
}

func (w *typedWalker) saveType(value string, t tField) {
	if w.haveType {
		return
	}
	w.haveType = true
	typ := typedTypeName(t)
	if w.npath == 0 {
		w.typeErr = typedError{typeErr: true, msg: "json: cannot unmarshal " + value + " into Go value of type " + typ}
		return
	}
	names := make([]string, w.npath)
	last := uint16(0)
	for k := range names {
		var id uint16
		if k < len(w.path) {
			id = w.path[k]
		} else {
			id = w.deeper[k-len(w.path)]
		}
		names[k], last = typedFields[id].name, id
	}
	field := strings.Join(names, ".")
	owner := typedStructs[typedFields[last].owner].name
	w.typeErr = typedError{typeErr: true, field: field,
		msg: "json: cannot unmarshal " + value + " into Go struct field " + owner + "." + field + " of type " + typ}
}

// typedTypeName is reflect's String() of the (dereferenced) Go type of t;
// the generator checks the two agree for every field.
func typedTypeName(t tField) string {
	var s string
	switch t.kind {
	case tkString:
		s = "string"
	case tkNumber:
		s = "json.Number"
	case tkBool:
		s = "bool"
	case tkInt:
		s = "int"
	case tkRaw:
		s = "json.RawMessage"
	case tkCode:
		s = "fhir." + typedCodes[t.ref].name
	case tkStruct:
		s = "fhir." + typedStructs[t.ref].name
	}
	if t.flags&tfSlice != 0 {
		s = "[]" + s
	}
	return s
}

func (w *typedWalker) array(i int, t tField) int {
	w.enter()
	elem := tField{kind: t.kind, ref: t.ref}
	i = w.ws(i + 1)
	if w.b[i] == ']' {
		w.depth--
		return i + 1
	}
	for {
		i = w.value(i, elem)
		if w.hard != nil {
			return i
		}
		var done bool
		if i, done = w.after(i, ']'); done {
			return i
		}
	}
}

// after reads what follows a member of an array or object: a comma
// (returns the next member's index) or closing (returns the index after
// it, done, one level up).
func (w *typedWalker) after(i int, closing byte) (int, bool) {
	i = w.ws(i)
	switch w.b[i] {
	case ',':
		return w.ws(i + 1), false
	case closing:
		w.depth--
		return i + 1, true
	}
	panic(errSyntax{})
}

func (w *typedWalker) enter() {
	w.depth++
	if w.depth > maxTypedDepth {
		w.hard = &typedError{msg: "json: exceeded max depth"}
		panic(errSyntax{})
	}
}

func (w *typedWalker) object(i int, sid uint16) int {
	w.enter()
	i = w.ws(i + 1)
	if w.b[i] == '}' {
		w.depth--
		return i + 1
	}
	for {
		if w.b[i] != '"' {
			panic(errSyntax{})
		}
		end := w.str(i)
		key := w.b[i+1 : end-1]
		if bytes.IndexByte(key, '\\') >= 0 {
			key = unquoteJSON(w.b[i:end])
		}
		i = w.ws(end)
		if w.b[i] != ':' {
			panic(errSyntax{})
		}
		i = w.ws(i + 1)
		if id, ok := lookupField(sid, key); ok {
			if w.npath < len(w.path) {
				w.path[w.npath] = id
			} else {
				w.deeper = append(w.deeper[:w.npath-len(w.path)], id)
			}
			w.npath++
			i = w.value(i, typedFields[id])
			w.npath--
			if w.hard != nil {
				return i
			}
		} else {
			i = w.skip(i)
		}
		var done bool
		if i, done = w.after(i, '}'); done {
			return i
		}
	}
}

// str returns the index after the string starting at b[i] == '"'.
func (w *typedWalker) str(i int) int {
	b := w.b
	j := i + 1
	for {
		k := bytes.IndexByte(b[j:], '"')
		if k < 0 {
			panic(errSyntax{})
		}
		j += k
		// The quote is escaped if an odd number of backslashes precede it.
		n := 0
		for p := j - 1; p > i && b[p] == '\\'; p-- {
			n++
		}
		if n%2 == 0 {
			return j + 1
		}
		j++
	}
}

func (w *typedWalker) number(i int) int {
	j := i
	for j < len(w.b) {
		switch c := w.b[j]; {
		case '0' <= c && c <= '9', c == '-', c == '+', c == '.', c == 'e', c == 'E':
			j++
			continue
		}
		break
	}
	return j
}

func (w *typedWalker) literal(i int) int {
	switch w.b[i] {
	case 't', 'n':
		if len(w.b) < i+4 {
			panic(errSyntax{})
		}
		return i + 4
	case 'f':
		if len(w.b) < i+5 {
			panic(errSyntax{})
		}
		return i + 5
	}
	panic(errSyntax{})
}

// skip returns the index after the value at b[i], whatever it is.
func (w *typedWalker) skip(i int) int {
	switch c := w.b[i]; {
	case c == '"':
		return w.str(i)
	case c == '{' || c == '[':
		depth := 0
		for {
			switch w.b[i] {
			case '"':
				i = w.str(i)
				continue
			case '{', '[':
				depth++
				if w.depth+depth > maxTypedDepth {
					w.hard = &typedError{msg: "json: exceeded max depth"}
					panic(errSyntax{})
				}
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
	case c == '-' || '0' <= c && c <= '9':
		return w.number(i)
	}
	return w.literal(i)
}

// isInt reports whether a JSON number parses as a Go int (strconv.ParseInt
// and no overflow, as encoding/json requires).
func isInt(n []byte) bool {
	digits := n
	if len(digits) > 0 && digits[0] == '-' {
		digits = digits[1:]
	}
	if len(digits) == 0 {
		return false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return false
		}
	}
	if len(digits) < 18 {
		return true
	}
	_, err := strconv.ParseInt(string(n), 10, strconv.IntSize)
	return err == nil
}

// validNumber is the JSON number grammar (what json.Number must hold).
func validNumber(s []byte) bool {
	if len(s) == 0 {
		return false
	}
	if s[0] == '-' {
		s = s[1:]
		if len(s) == 0 {
			return false
		}
	}
	switch {
	case s[0] == '0':
		s = s[1:]
	case '1' <= s[0] && s[0] <= '9':
		for len(s) > 0 && '0' <= s[0] && s[0] <= '9' {
			s = s[1:]
		}
	default:
		return false
	}
	if len(s) >= 2 && s[0] == '.' && '0' <= s[1] && s[1] <= '9' {
		s = s[2:]
		for len(s) > 0 && '0' <= s[0] && s[0] <= '9' {
			s = s[1:]
		}
	}
	if len(s) >= 2 && (s[0] == 'e' || s[0] == 'E') {
		s = s[1:]
		if s[0] == '+' || s[0] == '-' {
			s = s[1:]
			if len(s) == 0 {
				return false
			}
		}
		for len(s) > 0 && '0' <= s[0] && s[0] <= '9' {
			s = s[1:]
		}
	}
	return len(s) == 0
}

// unquoteJSON decodes the JSON string literal q (slow path: escapes).
func unquoteJSON(q []byte) []byte {
	if bytes.IndexByte(q, '\\') < 0 && utf8.Valid(q) {
		return q[1 : len(q)-1]
	}
	var s string
	if err := json.Unmarshal(q, &s); err != nil {
		panic(errSyntax{})
	}
	return []byte(s)
}
