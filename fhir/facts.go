package fhir

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
)

// facts is what one pass over a compacted resource learns without the typed
// models: identity, top-level element names and shapes, version tells and
// every Reference.reference with its JSON path.
type facts struct {
	resourceType string
	id           string
	hasID        bool
	idNotString  bool
	keys         []keyKind // top-level members in document order
	dupKey       string    // first duplicated top-level key, if any
	profiles     []string  // meta.profile
	fhirVersion  string    // top-level fhirVersion (conformance resources)
	oldSystems   int       // codings whose system is a pre-R4 HL7 URI
	oldSystem    string    // the first such system
	refs         []refSite
	contained    []span // byte ranges of contained resources
}

type keyKind struct {
	name string
	kind byte // first byte of the value: '{', '[', '"', 't', 'f', 'n' or a digit/'-'
}

type span struct{ start, end int }

type refSite struct {
	ref  string
	path string
}

var errMalformed = errors.New("malformed compacted JSON")

// factScratch is the memory a fact scan reuses from one resource to the
// next. Callers take one from factScratchPool, so that concurrent Checks
// never share one.
type factScratch struct {
	path  []byte    // JSON path of the value being walked
	sites []refMark // references found, turned into strings at the end
	paths []byte    // their paths, back to back
	buf   []byte
	seen  map[string]struct{} // top-level keys, once there are many
}

// refMark is a Reference.reference found by the scan: the opening quote of
// its value in the resource and its path in factScratch.paths.
type refMark struct{ quote, ps, pe int }

var factScratchPool = sync.Pool{New: func() any { return new(factScratch) }}

// manyKeys is where the duplicate-key check switches from scanning the keys
// seen so far to a map.
const manyKeys = 32

// knownTypes interns the R4 resource type names.
var knownTypes = sync.OnceValue(func() map[string]string {
	m := make(map[string]string, len(r4Elements()))
	for t := range r4Elements() {
		m[t] = t
	}
	return m
})

// knownKeys interns the top-level element names of R4 (and their "_"
// primitive extensions), so that keys need no string of their own.
var knownKeys = sync.OnceValue(func() map[string]string {
	m := map[string]string{"resourceType": "resourceType"}
	for _, elems := range r4Elements() {
		for name := range elems {
			if _, ok := m[name]; !ok {
				m[name] = name
				m["_"+name] = "_" + name
			}
		}
	}
	return m
})

// factWalker walks compacted, already validated JSON. It never panics on
// malformed input; it returns errMalformed instead. Without scratch (the
// Bundle reader's use: skipping values) it builds no paths and records no
// references.
type factWalker struct {
	b []byte
	f *facts
	s *factScratch
}

// readFacts fills f from the compacted JSON object b. pathPrefix starts every
// JSON path (for example the resource type, "Patient").
func readFacts(f *facts, b []byte, pathPrefix string) error {
	s := factScratchPool.Get().(*factScratch)
	err := scanFacts(f, s, b, pathPrefix, false)
	factScratchPool.Put(s)
	return err
}

// scanFacts is readFacts with the caller's scratch. With typePrefix (and
// pathPrefix ""), reference paths start with the resourceType found and a
// dot, as a resource checked on its own names them.
func scanFacts(f *facts, s *factScratch, b []byte, pathPrefix string, typePrefix bool) error {
	*f = facts{refs: f.refs[:0], keys: f.keys[:0], profiles: f.profiles[:0], contained: f.contained[:0]}
	s.path = append(s.path[:0], pathPrefix...)
	s.sites, s.paths = s.sites[:0], s.paths[:0]
	w := factWalker{b: b, f: f, s: s}
	if len(b) == 0 || b[0] != '{' {
		return errMalformed
	}
	if _, err := w.object(0, 0, true); err != nil {
		return err
	}
	if cap(f.refs) < len(s.sites) {
		f.refs = make([]refSite, 0, len(s.sites))
	}
	for _, m := range s.sites {
		// One string holds the reference and its path.
		ref := w.stringBytes(m.quote)
		s.buf = append(s.buf[:0], ref...)
		if typePrefix {
			s.buf = append(append(s.buf, f.resourceType...), '.')
		}
		s.buf = append(s.buf, s.paths[m.ps:m.pe]...)
		both := string(s.buf)
		f.refs = append(f.refs, refSite{ref: both[:len(ref)], path: both[len(ref):]})
	}
	return nil
}

func (w *factWalker) object(i, depth int, top bool) (int, error) {
	b := w.b
	s := w.s
	i++ // '{'
	if i < len(b) && b[i] == '}' {
		return i + 1, nil
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return 0, errMalformed
		}
		ks, ke, esc, err := w.strSpan(i)
		if err != nil {
			return 0, err
		}
		i = ke + 1
		if i >= len(b) || b[i] != ':' {
			return 0, errMalformed
		}
		i++
		if i >= len(b) {
			return 0, errMalformed
		}
		keyRaw := b[ks:ke]
		if esc {
			// Rare: the walker keeps escapes in keys as they were.
			keyRaw = []byte(unquote(b[ks-1 : ke+1]))
		}
		mark := 0
		if s != nil {
			mark = len(s.path)
			if len(s.path) > 0 {
				s.path = append(s.path, '.')
			}
			s.path = append(s.path, keyRaw...)
		}
		vc := b[i]
		if top {
			key := w.keyName(keyRaw)
			if w.seenKey(key) && w.f.dupKey == "" {
				w.f.dupKey = key
			}
			w.f.keys = append(w.f.keys, keyKind{name: key, kind: vc})
			switch key {
			case "resourceType":
				if vc == '"' {
					w.f.resourceType = w.internedAt(i)
				}
			case "id":
				w.f.hasID = true
				if vc == '"' {
					w.f.id = w.stringAt(i)
				} else {
					w.f.idNotString = true
				}
			case "fhirVersion":
				if vc == '"' {
					w.f.fhirVersion = w.stringAt(i)
				}
			case "meta":
				if vc == '{' {
					w.profiles(i)
				}
			case "contained":
				if vc == '[' {
					next, err := w.containedArray(i, depth+1)
					if err != nil {
						return 0, err
					}
					i = next
					s.path = s.path[:mark]
					goto sep
				}
			}
		} else if vc == '"' {
			switch string(keyRaw) {
			case "reference":
				if s == nil {
					break
				}
				ps := len(s.paths)
				s.paths = append(s.paths, s.path...)
				s.sites = append(s.sites, refMark{quote: i, ps: ps, pe: len(s.paths)})
			case "system":
				if bytes.HasPrefix(b[i:], []byte(`"http://hl7.org/fhir/v2/`)) || bytes.HasPrefix(b[i:], []byte(`"http://hl7.org/fhir/v3/`)) {
					if w.f.oldSystems == 0 {
						w.f.oldSystem = w.stringAt(i)
					}
					w.f.oldSystems++
				}
			}
		}
		{
			next, err := w.value(i, depth+1)
			if err != nil {
				return 0, err
			}
			i = next
		}
		if s != nil {
			s.path = s.path[:mark]
		}
	sep:
		if i >= len(b) {
			return 0, errMalformed
		}
		switch b[i] {
		case ',':
			i++
		case '}':
			return i + 1, nil
		default:
			return 0, errMalformed
		}
	}
}

// keyName is the top-level key k as a string without allocating one for
// the keys R4 knows. Resources of a file mostly share their type and the
// order of their keys: the name the previous scan with this scratch found
// at the same place is tried first (f.keys keeps it past its length).
func (w *factWalker) keyName(k []byte) string {
	keys := w.f.keys
	if n := len(keys); n < cap(keys) {
		if prev := keys[:n+1][n].name; prev == string(k) {
			return prev
		}
	}
	if name, ok := knownKeys()[string(k)]; ok {
		return name
	}
	return string(k)
}

// seenKey reports whether the top-level key was seen before; key becomes
// one of the keys seen. Resources have a few dozen keys at most, which a
// scan of f.keys checks faster than a map.
func (w *factWalker) seenKey(key string) bool {
	keys := w.f.keys
	if len(keys) < manyKeys {
		for i := range keys {
			if keys[i].name == key {
				return true
			}
		}
		return false
	}
	m := w.s.seen
	if len(keys) == manyKeys {
		if m == nil {
			m = make(map[string]struct{}, 2*manyKeys)
			w.s.seen = m
		}
		clear(m)
		for _, k := range keys {
			m[k.name] = struct{}{}
		}
	}
	_, dup := m[key]
	m[key] = struct{}{}
	return dup
}

func (w *factWalker) value(i, depth int) (int, error) {
	if depth > 10000 || i >= len(w.b) {
		return 0, errMalformed
	}
	switch w.b[i] {
	case '{':
		return w.object(i, depth, false)
	case '[':
		return w.array(i, depth, nil)
	case '"':
		_, e, _, err := w.strSpan(i)
		return e + 1, err
	default:
		for i < len(w.b) {
			switch w.b[i] {
			case ',', '}', ']':
				return i, nil
			}
			i++
		}
		return i, nil
	}
}

func (w *factWalker) array(i, depth int, each func(start, end int)) (int, error) {
	b := w.b
	i++
	if i < len(b) && b[i] == ']' {
		return i + 1, nil
	}
	s := w.s
	mark := 0
	if s != nil {
		mark = len(s.path)
	}
	for n := 0; ; n++ {
		if s != nil {
			s.path = append(s.path[:mark], '[')
			s.path = strconv.AppendInt(s.path, int64(n), 10)
			s.path = append(s.path, ']')
		}
		start := i
		next, err := w.value(i, depth+1)
		if err != nil {
			return 0, err
		}
		if each != nil {
			each(start, next)
		}
		i = next
		if s != nil {
			s.path = s.path[:mark]
		}
		if i >= len(b) {
			return 0, errMalformed
		}
		switch b[i] {
		case ',':
			i++
		case ']':
			return i + 1, nil
		default:
			return 0, errMalformed
		}
	}
}

// containedArray records contained resources; their own references are
// collected with paths under contained[n].
func (w *factWalker) containedArray(i, depth int) (int, error) {
	return w.array(i, depth, func(s, e int) {
		if w.b[s] == '{' {
			w.f.contained = append(w.f.contained, span{s, e})
		}
	})
}

func (w *factWalker) profiles(i int) {
	// meta is small: decode it with encoding/json.
	end, err := w.value(i, 1)
	if err != nil {
		return
	}
	var m struct {
		Profile []string `json:"profile"`
	}
	if json.Unmarshal(w.b[i:end], &m) == nil {
		w.f.profiles = append(w.f.profiles, m.Profile...)
	}
}

// strSpan returns the content bounds of the string whose opening quote is at
// i (the closing quote is at end) and whether it contains escapes.
func (w *factWalker) strSpan(i int) (start, end int, esc bool, err error) {
	b := w.b
	j := i + 1
	// Most strings have no escapes: two vectorised scans find their end.
	q := bytes.IndexByte(b[j:], '"')
	if q < 0 {
		return 0, 0, false, errMalformed
	}
	if bytes.IndexByte(b[j:j+q], '\\') < 0 {
		return i + 1, j + q, false, nil
	}
	for j < len(b) {
		switch b[j] {
		case '"':
			return i + 1, j, esc, nil
		case '\\':
			esc = true
			j += 2
			continue
		}
		j++
	}
	return 0, 0, false, errMalformed
}

func (w *factWalker) stringAt(i int) string {
	s, e, esc, err := w.strSpan(i)
	if err != nil {
		return ""
	}
	if esc {
		return unquote(w.b[s-1 : e+1])
	}
	return string(w.b[s:e])
}

// internedAt is stringAt for a resourceType: R4's type names need no
// string of their own.
func (w *factWalker) internedAt(i int) string {
	if s, e, esc, err := w.strSpan(i); err == nil && !esc {
		if t, ok := knownTypes()[string(w.b[s:e])]; ok {
			return t
		}
	}
	return w.stringAt(i)
}

// stringBytes is stringAt without a string: the content in b when it has
// no escapes.
func (w *factWalker) stringBytes(i int) []byte {
	s, e, esc, err := w.strSpan(i)
	if err != nil {
		return nil
	}
	if esc {
		return []byte(unquote(w.b[s-1 : e+1]))
	}
	return w.b[s:e]
}

func unquote(q []byte) string {
	var s string
	if json.Unmarshal(q, &s) != nil {
		return string(q)
	}
	return s
}
