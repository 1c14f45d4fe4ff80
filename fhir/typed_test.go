package fhir

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/ehrport/ehrport/fhir/synth"
)

func init() { typedOracle = oracleTyped }

// oracleTyped is the typed-model check done the slow, certain way:
// json.Unmarshal into the samply model, its error in typedError terms.
func oracleTyped(resourceType string, raw []byte) *typedError {
	known, err := unmarshalTyped(resourceType, raw)
	if !known || err == nil {
		return nil
	}
	e := &typedError{msg: err.Error()}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		e.typeErr, e.field = true, te.Field
	}
	return e
}

// diffTyped fails t when the walker and the oracle disagree on raw as
// resourceType: verdict, kind of error, field and message.
func diffTyped(t testing.TB, resourceType string, raw []byte) bool {
	t.Helper()
	want := oracleTyped(resourceType, raw)
	known, got := checkTyped(resourceType, raw)
	if !known {
		t.Fatalf("walker does not know %s", resourceType)
	}
	if (want == nil) != (got == nil) || want != nil && *want != *got {
		t.Errorf("%s %.300s\n oracle: %+v\n walker: %+v", resourceType, raw, want, got)
		return false
	}
	return true
}

var (
	walkerV = NewValidator(ValidatorOptions{})
	oracleV = &Validator{oracle: true}
)

// diffCheck compares whole Check results (findings, codes, paths, messages).
func diffCheck(t testing.TB, raw []byte) {
	t.Helper()
	pos := Position{File: "f", Line: 1, Entry: -1}
	got, want := walkerV.Check(raw, pos, CheckContext{}), oracleV.Check(raw, pos, CheckContext{})
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Check differs on %.300s\n oracle: %v\n walker: %v", raw, want.Findings, got.Findings)
	}
}

// collectResources appends every JSON object with a string resourceType
// inside raw (Bundle entries, contained, parameters), compacted.
func collectResources(raw []byte, out [][]byte) [][]byte {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return out
	}
	switch raw[0] {
	case '{':
		var m map[string]json.RawMessage
		if json.Unmarshal(raw, &m) != nil {
			return out
		}
		var rt string
		if json.Unmarshal(m["resourceType"], &rt) == nil && rt != "" {
			var c bytes.Buffer
			if json.Compact(&c, raw) == nil {
				out = append(out, c.Bytes())
			}
		}
		for _, v := range m {
			out = collectResources(v, out)
		}
	case '[':
		var a []json.RawMessage
		if json.Unmarshal(raw, &a) != nil {
			return out
		}
		for _, v := range a {
			out = collectResources(v, out)
		}
	}
	return out
}

// readAll returns the resources of a JSON, NDJSON (or .gz of either) file.
func readResources(t testing.TB, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasSuffix(path, ".gz") {
		zr, err := gzip.NewReader(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if b, err = io.ReadAll(zr); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	b = trimBOM(b)
	if json.Valid(b) {
		return collectResources(b, nil)
	}
	var out [][]byte
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(nil, 64<<20)
	for sc.Scan() {
		out = collectResources(sc.Bytes(), out)
	}
	return out
}

// typedInputs gathers the differential test's resources: the shared corpus,
// synthetic data and the fuzz corpora of fhir/testdata.
func typedInputs(t *testing.T) (corpus, synthetic, fuzzSeeds [][]byte) {
	// Without the shared corpus (outside CI) the synthetic data and the
	// mutations still run; corpusDir's skip would drop them too.
	dir := filepath.Join("..", "..", "shared", "corpus")
	if _, err := os.Stat(filepath.Join(dir, "hl7-r4-examples")); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("corpus missing at %s (CI=true): %v", dir, err)
		}
		t.Logf("corpus not found at %s: synthetic data only", dir)
		dir = ""
	}
	_ = filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if dir == "" {
			return filepath.SkipAll
		}
		if err != nil || d.IsDir() {
			return err
		}
		if n := d.Name(); strings.HasSuffix(n, ".json") || strings.HasSuffix(n, ".gz") || strings.HasSuffix(n, ".ndjson") || strings.HasSuffix(n, ".txt") {
			corpus = append(corpus, readResources(t, p)...)
		}
		return nil
	})
	sd := t.TempDir()
	if _, err := synth.WriteNDJSON(sd, synth.Options{Patients: 40, Seed: 7}); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(sd, "*.ndjson"))
	for _, f := range files {
		synthetic = append(synthetic, readResources(t, f)...)
	}
	seeds, _ := filepath.Glob(filepath.Join("testdata", "fuzz", "*", "*"))
	for _, f := range seeds {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(b), "\n") {
			if q, ok := strings.CutPrefix(line, "[]byte("); ok {
				if s, err := strconv.Unquote(strings.TrimSuffix(q, ")")); err == nil {
					fuzzSeeds = append(fuzzSeeds, readResourcesBytes(trimBOM([]byte(s)))...)
				}
			}
		}
	}
	return corpus, synthetic, fuzzSeeds
}

func readResourcesBytes(b []byte) [][]byte {
	var out [][]byte
	for _, line := range bytes.Split(b, []byte("\n")) {
		out = collectResources(line, out)
	}
	return out
}

func resourceTypeOf(raw []byte) string {
	typedOnce.Do(typedInit)
	var f facts
	if readFacts(&f, raw, "") != nil {
		return ""
	}
	return f.resourceType
}

// TestTypedWalkerDifferential: the walker and the samply models agree on
// every resource we have, and on mutations of them.
func TestTypedWalkerDifferential(t *testing.T) {
	corpus, synthetic, fuzzSeeds := typedInputs(t)
	t.Logf("%d corpus, %d synthetic, %d fuzz-seed resources", len(corpus), len(synthetic), len(fuzzSeeds))
	if len(corpus) < 100 && os.Getenv("CI") == "true" || len(synthetic) < 100 {
		t.Fatalf("too few inputs")
	}
	all := append(append(append([][]byte(nil), corpus...), synthetic...), fuzzSeeds...)
	rejected := 0
	for _, raw := range all {
		rt := resourceTypeOf(raw)
		if _, ok := typedResource[rt]; !ok {
			continue
		}
		diffTyped(t, rt, raw)
		diffCheck(t, raw)
		if oracleTyped(rt, raw) != nil {
			rejected++
		}
	}
	t.Logf("unmutated: %d rejected by the model", rejected)
	// Mutations: every value of a sample of resources replaced by values
	// of every JSON kind, and keys re-cased; each checked as its own type
	// and as another.
	r := rand.New(rand.NewPCG(1, 2))
	n, nrej := 0, 0
	every := 9
	if testing.Short() || raceEnabled {
		every = 40
	}
	for k, raw := range all {
		if k%every != 0 && k >= 100 {
			continue
		}
		rt := resourceTypeOf(raw)
		if _, ok := typedResource[rt]; !ok {
			continue
		}
		for _, m := range mutations(raw, r, 12) {
			if !json.Valid(m) {
				t.Fatalf("mutation is not valid JSON: %.200s", m)
			}
			n++
			if !diffTyped(t, rt, m) {
				return
			}
			if oracleTyped(rt, m) != nil {
				nrej++
			}
			if n%5 == 0 {
				diffCheck(t, m)
				diffTyped(t, typedStructs[r.IntN(r4ResourceCount)].name, m)
			}
		}
	}
	t.Logf("%d mutations, %d rejected by the model", n, nrej)
	if nrej == 0 || nrej == n {
		t.Errorf("mutations do not exercise both verdicts")
	}
}

var typedReplacements = []string{
	`null`, `"x"`, `""`, `1`, `-0`, `1.5`, `1e2`, `99999999999999999999`, `true`, `false`,
	`{}`, `[]`, `[null]`, `["x"]`, `[1]`, `{"a":1}`, `"1"`, `"1.5e3"`, `"\u0041"`, `"\"male\""`,
	`"male"`, `"final"`, `"0"`, `0`, `[{"url":"u","valueCode":"x"}]`, `{"coding":[{"code":1}]}`,
	`[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]`, `{"extension":[{"extension":[{"extension":[{"url":3}]}]}]}`,
}

// mutations derives variants of raw: up to perResource value positions
// replaced by each of typedReplacements, keys re-cased or renamed.
func mutations(raw []byte, r *rand.Rand, perResource int) [][]byte {
	vals, keys := spans(raw)
	var out [][]byte
	replace := func(s jspan, with string) {
		m := make([]byte, 0, len(raw)+len(with))
		m = append(append(append(m, raw[:s.start]...), with...), raw[s.end:]...)
		out = append(out, m)
	}
	for i := 0; i < perResource && len(vals) > 1; i++ {
		s := vals[1+r.IntN(len(vals)-1)] // not the resource itself
		for _, w := range typedReplacements {
			replace(s, w)
		}
		if raw[s.start] != '"' || s.end-s.start < 3 {
			continue
		}
		if inner := raw[s.start+1 : s.end-1]; inner[0] != '\\' && inner[0] < utf8.RuneSelf {
			// The same string with its first character escaped.
			replace(s, fmt.Sprintf(`"\u%04x%s"`, inner[0], inner[1:]))
		}
	}
	for i := 0; i < perResource/2 && len(keys) > 0; i++ {
		s := keys[r.IntN(len(keys))]
		k := string(raw[s.start+1 : s.end-1])
		replace(s, `"`+strings.ToUpper(k)+`"`)
		replace(s, `"`+strings.ReplaceAll(strings.ReplaceAll(k, "k", "\u212a"), "s", "\u017f")+`"`)
		replace(s, `"`+k+`x"`)
		if k != "" && k[0] != '\\' && k[0] < utf8.RuneSelf {
			replace(s, fmt.Sprintf(`"\u%04x%s"`, k[0], k[1:]))
		}
	}
	return out
}

type jspan struct{ start, end int }

// spans lists every value and every key (quotes included) of valid JSON.
func spans(b []byte) (vals, keys []jspan) {
	var val func(i int) int
	str := func(i int) int {
		for j := i + 1; ; j++ {
			if b[j] == '\\' {
				j++
			} else if b[j] == '"' {
				return j + 1
			}
		}
	}
	ws := func(i int) int {
		for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\t' || b[i] == '\r') {
			i++
		}
		return i
	}
	val = func(i int) int {
		i = ws(i)
		start := i
		switch b[i] {
		case '"':
			i = str(i)
		case '{', '[':
			closing := byte('}')
			if b[i] == '[' {
				closing = ']'
			}
			i = ws(i + 1)
			for b[i] != closing {
				if closing == '}' {
					e := str(i)
					keys = append(keys, jspan{i, e})
					i = ws(ws(e) + 1)
				}
				i = ws(val(i))
				if b[i] == ',' {
					i = ws(i + 1)
				}
			}
			i++
		default:
			for i < len(b) && !strings.ContainsRune(",]} \n\t\r", rune(b[i])) {
				i++
			}
		}
		vals = append(vals, jspan{start, i})
		return i
	}
	val(0)
	return vals, keys
}

// TestTypedWalkerCases pins behaviours of encoding/json and the samply
// code types the walker must mirror.
func TestTypedWalkerCases(t *testing.T) {
	for _, c := range []struct {
		raw    string
		reject bool
	}{
		{`{"resourceType":"Patient","gender":"male"}`, false},
		{`{"resourceType":"Patient","gender":"Male"}`, true},
		{`{"resourceType":"Patient","gender":null}`, false},         // pointer to a code: null never decoded
		{`{"resourceType":"Patient","link":[{"type":null}]}`, true}, // a required code: null is decoded, "null" unknown
		{`{"resourceType":"Patient","gender":"\"male\""}`, true},    // the raw value trimmed of quotes: \"male\
		{`{"resourceType":"Patient","gender":"m\u0061le"}`, true},   // ... but escapes are not decoded
		{`{"resourceType":"Patient","GENDER":"x"}`, true},           // keys fold
		{`{"resourceType":"Patient","gender":"male","active":"yes"}`, true},
		{`{"resourceType":"Patient","active":1}`, true},
		{`{"resourceType":"Patient","multipleBirthInteger":1.0}`, true}, // not an int
		{`{"resourceType":"Patient","multipleBirthInteger":-0}`, false},
		{`{"resourceType":"Patient","multipleBirthInteger":9223372036854775808}`, true},
		{`{"resourceType":"Patient","name":{"family":"x"}}`, true}, // object for an array
		{`{"resourceType":"Patient","name":[null,{"given":[null,"a"]}]}`, false},
		{`{"resourceType":"Patient","unknown":{"gender":1}}`, false}, // unknown keys ignored
		{`{"resourceType":"Observation","status":"final","code":{},"valueQuantity":{"value":"1.5"}}`, false},
		{`{"resourceType":"Observation","status":"final","code":{},"valueQuantity":{"value":"x"}}`, true},
		{`{"resourceType":"Observation","status":"final","code":{},"valueQuantity":{"value":true}}`, true},
		{`{"resourceType":"Patient","contained":[1,"x",{"a":[]}]}`, false},
		{`{"resourceType":"Patient","active":"x","gender":"bad"}`, true}, // the code error wins over the earlier type error
	} {
		rt := resourceTypeOf([]byte(c.raw))
		if !diffTyped(t, rt, []byte(c.raw)) {
			continue
		}
		if _, err := checkTyped(rt, []byte(c.raw)); (err != nil) != c.reject {
			t.Errorf("%s: err = %v, want reject %v", c.raw, err, c.reject)
		}
		diffCheck(t, []byte(c.raw))
	}
	// Deeper than the walker's inline path: 60 nested extensions, a wrong
	// kind or a bad code at the bottom, and deeper than encoding/json goes.
	for _, leaf := range []string{`"valueInteger":"x"`, `"valueCode":1`, `"valueQuantity":{"comparator":"~"}`} {
		deep := `{"resourceType":"Basic","code":{},` + strings.Repeat(`"extension":[{"url":"u",`, 60) + leaf + strings.Repeat(`}]`, 60) + `}`
		diffTyped(t, "Basic", []byte(deep))
		diffCheck(t, []byte(deep))
	}
	tooDeep := []byte(`{"resourceType":"Basic","x":` + strings.Repeat(`[`, 10001) + strings.Repeat(`]`, 10001) + `}`)
	if _, err := checkTyped("Basic", tooDeep); err == nil {
		t.Errorf("nesting over 10000 accepted")
	}
	// Malformed input never panics.
	for _, bad := range []string{``, `{`, `{"gender":`, `{"gender":"male"`, `{"name":[`, `{"a" 1}`, `[`, `{"name":[{"given":["x",]}]}`} {
		if _, err := checkTyped("Patient", []byte(bad)); err == nil && bad != `` {
			t.Logf("%q accepted", bad)
		}
	}
}

// TestTypedGeneratedUpToDate: `go generate ./fhir` reproduces the
// committed generated files byte for byte.
func TestTypedGeneratedUpToDate(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the generators")
	}
	tmp := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command("go", append([]string{"run"}, args...)...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go run %v: %v\n%s", args, err, out)
		}
	}
	run("./internal/gen/registry", "-o", filepath.Join(tmp, "resources_gen.go"))
	run("./internal/gen", "-o", filepath.Join(tmp, "r4_gen.go"), "-typed", filepath.Join(tmp, "typed_gen.go"))
	for committed, fresh := range map[string]string{
		"internal/gen/resources_gen.go": "resources_gen.go",
		"r4_gen.go":                     "r4_gen.go",
		"typed_gen.go":                  "typed_gen.go",
	} {
		a, err := os.ReadFile(committed)
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(tmp, fresh))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s is out of date: run go generate ./fhir", committed)
		}
	}
}

// FuzzTypedWalker: on any valid JSON, checked as any R4 type, the walker
// and json.Unmarshal into the samply model agree (verdict, error kind,
// field, message).
func FuzzTypedWalker(f *testing.F) {
	f.Add(uint8(0), []byte(pat))
	f.Add(uint8(0), []byte(`{"resourceType":"Patient","gender":"\"male\"","link":[{"type":null}]}`))
	f.Add(uint8(3), []byte(`{"status":"final","valueQuantity":{"value":"1e3"},"component":[{"code":{"coding":[{"code":1}]}}]}`))
	f.Add(uint8(9), []byte(` { "NAME" : [ { "given" : [ "a" , 1 ] } ] } `))
	f.Fuzz(func(t *testing.T, typ uint8, data []byte) {
		if !json.Valid(data) {
			return
		}
		diffTyped(t, typedStructs[int(typ)%r4ResourceCount].name, data)
	})
}
