package fhir

import (
	"bytes"
	"encoding/json"
	"strconv"
)

// The fact scan as it was before it was made allocation-lean (facts.go):
// the oracle of TestFactsDifferential. Kept verbatim but for its names.

// oracleFactWalker walks compacted, already validated JSON. It never panics on
// malformed input; it returns errMalformed instead.
type oracleFactWalker struct {
	b    []byte
	f    *facts
	path []byte
}

// oracleReadFacts fills f from the compacted JSON object b. pathPrefix starts every
// JSON path (for example the resource type, "Patient").
func oracleReadFacts(f *facts, b []byte, pathPrefix string) error {
	*f = facts{refs: f.refs[:0], keys: f.keys[:0], profiles: f.profiles[:0], contained: f.contained[:0]}
	w := oracleFactWalker{b: b, f: f, path: append(make([]byte, 0, 128), pathPrefix...)}
	if len(b) == 0 || b[0] != '{' {
		return errMalformed
	}
	_, err := w.object(0, 0, true)
	if err != nil {
		return err
	}
	return nil
}

func (w *oracleFactWalker) object(i, depth int, top bool) (int, error) {
	b := w.b
	i++ // '{'
	if i < len(b) && b[i] == '}' {
		return i + 1, nil
	}
	var seen map[string]struct{}
	if top {
		seen = make(map[string]struct{}, 32)
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
		var key string
		if esc {
			key = unquote(b[ks-1 : ke+1])
		} else {
			key = string(keyRaw)
		}
		mark := len(w.path)
		if len(w.path) > 0 {
			w.path = append(w.path, '.')
		}
		w.path = append(w.path, key...)
		vc := b[i]
		if top {
			if _, dup := seen[key]; dup && w.f.dupKey == "" {
				w.f.dupKey = key
			}
			seen[key] = struct{}{}
			w.f.keys = append(w.f.keys, keyKind{name: key, kind: vc})
			switch key {
			case "resourceType":
				if vc == '"' {
					w.f.resourceType = w.stringAt(i)
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
					w.path = w.path[:mark]
					goto sep
				}
			}
		} else if vc == '"' {
			switch key {
			case "reference":
				w.f.refs = append(w.f.refs, refSite{ref: w.stringAt(i), path: string(w.path)})
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
		w.path = w.path[:mark]
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

func (w *oracleFactWalker) value(i, depth int) (int, error) {
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

func (w *oracleFactWalker) array(i, depth int, each func(start, end int)) (int, error) {
	b := w.b
	i++
	if i < len(b) && b[i] == ']' {
		return i + 1, nil
	}
	mark := len(w.path)
	for n := 0; ; n++ {
		w.path = append(w.path[:mark], '[')
		w.path = strconv.AppendInt(w.path, int64(n), 10)
		w.path = append(w.path, ']')
		start := i
		next, err := w.value(i, depth+1)
		if err != nil {
			return 0, err
		}
		if each != nil {
			each(start, next)
		}
		i = next
		w.path = w.path[:mark]
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
func (w *oracleFactWalker) containedArray(i, depth int) (int, error) {
	return w.array(i, depth, func(s, e int) {
		if w.b[s] == '{' {
			w.f.contained = append(w.f.contained, span{s, e})
		}
	})
}

func (w *oracleFactWalker) profiles(i int) {
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
func (w *oracleFactWalker) strSpan(i int) (start, end int, esc bool, err error) {
	b := w.b
	j := i + 1
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

func (w *oracleFactWalker) stringAt(i int) string {
	s, e, esc, err := w.strSpan(i)
	if err != nil {
		return ""
	}
	if esc {
		return unquote(w.b[s-1 : e+1])
	}
	return string(w.b[s:e])
}
