package fhir

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/ehrport/ehrport/fhir/synth"
)

// diffFacts fails t when the scan and its oracle (the scan as it was,
// facts_oracle_test.go) disagree on raw: error and every fact, with the
// prefix given, with none, and as Check asks (paths under the type found).
func diffFacts(t testing.TB, raw []byte) bool {
	t.Helper()
	for _, prefix := range []string{"", "Bundle.entry[7].resource"} {
		var want, got facts
		werr := oracleReadFacts(&want, raw, prefix)
		gerr := readFacts(&got, raw, prefix)
		if werr != gerr || werr == nil && !sameFacts(&want, &got) {
			t.Errorf("prefix %q, %.300s\n oracle: %v %+v\n scan:   %v %+v", prefix, raw, werr, want, gerr, got)
			return false
		}
	}
	var want, got facts
	var s factScratch
	if oracleReadFacts(&want, raw, "") != nil {
		return true
	}
	// Facts and scratch reused from scan to scan, as Check's pool does.
	if err := scanFacts(&reusedFacts, &reusedScratch, raw, "", false); err != nil || !sameFacts(&want, &reusedFacts) {
		t.Errorf("reused, %.300s\n oracle: %+v\n scan:   %v %+v", raw, want, err, reusedFacts)
		return false
	}
	for i := range want.refs {
		want.refs[i].path = want.resourceType + "." + want.refs[i].path
	}
	if err := scanFacts(&got, &s, raw, "", true); err != nil || !sameFacts(&want, &got) {
		t.Errorf("type prefix, %.300s\n oracle: %+v\n scan:   %v %+v", raw, want, err, got)
		return false
	}
	return true
}

var (
	reusedFacts   facts
	reusedScratch factScratch
)

// sameFacts compares every fact; nil and empty slices are the same.
func sameFacts(a, b *facts) bool {
	return a.resourceType == b.resourceType && a.id == b.id && a.hasID == b.hasID &&
		a.idNotString == b.idNotString && a.dupKey == b.dupKey && a.fhirVersion == b.fhirVersion &&
		a.oldSystems == b.oldSystems && a.oldSystem == b.oldSystem &&
		slices.Equal(a.keys, b.keys) && slices.Equal(a.profiles, b.profiles) &&
		slices.Equal(a.refs, b.refs) && slices.Equal(a.contained, b.contained)
}

// TestFactsDifferential: the scan and its oracle agree on the inputs of
// the typed differential test (corpus, synthetic data, fuzz seeds), on
// mutations of them, and on cases made for the scan's shortcuts.
func TestFactsDifferential(t *testing.T) {
	corpus, synthetic, fuzzSeeds := typedInputs(t)
	all := append(append(append([][]byte(nil), corpus...), synthetic...), fuzzSeeds...)
	all = append(all, factCases()...)
	refs := 0
	for _, raw := range all {
		if !diffFacts(t, raw) {
			return
		}
		var f facts
		if readFacts(&f, raw, "") == nil {
			refs += len(f.refs)
		}
	}
	r := rand.New(rand.NewPCG(3, 4))
	n := 0
	every := 5
	if testing.Short() || raceEnabled {
		every = 40
	}
	for k, raw := range all {
		if k%every != 0 && k >= 100 || !json.Valid(raw) {
			continue
		}
		for _, m := range mutations(raw, r, 12) {
			n++
			if !diffFacts(t, m) {
				return
			}
		}
	}
	t.Logf("%d resources (%d references), %d mutations", len(all), refs, n)
	if refs == 0 {
		t.Errorf("no references among the inputs")
	}
}

// factCases exercise duplicate keys on both sides of manyKeys, escaped
// keys and values, unknown keys and references under prefixes.
func factCases() [][]byte {
	var out [][]byte
	for _, n := range []int{1, manyKeys - 1, manyKeys, manyKeys + 1, 3 * manyKeys} {
		for _, dupAt := range []int{-1, 0, n / 2, n - 1} {
			var b strings.Builder
			b.WriteString(`{"resourceType":"Patient","id":"p"`)
			for i := 0; i < n; i++ {
				fmt.Fprintf(&b, `,"k%d":%d`, i, i)
			}
			if dupAt >= 0 {
				fmt.Fprintf(&b, `,"k%d":"again","id":"q"`, dupAt)
			}
			b.WriteString(`}`)
			out = append(out, []byte(b.String()))
		}
	}
	for _, s := range []string{
		`{"resourceType":"Observation","\u0069d":"o","subject":{"refer\u0065nce":"Patient/p"},"_status":{"x":1}}`,
		`{"resourceType":"Observation","id":"o","subject":{"reference":"Patient/\u0070"},"performer":[{"reference":"#c"},{"reference":1}]}`,
		`{"resourceType":"Observation","id":"o","contained":[{"resourceType":"Patient","id":"c","link":[{"other":{"reference":"Patient/x"}}]}],"subject":{"reference":"#c"}}`,
		`{"resourceType":"Observation","id":"o","code":{"coding":[{"system":"http://hl7.org/fhir/v3/x"},{"system":"http://hl7.org/fhir/v2/\u0079"}]}}`,
		`{"resourceType":"Observation","id":"o","meta":{"profile":["http://hl7.org/fhir/STU3/x"]},"fhirVersion":"3.0.1","notAnElement":1,"notAnElement":2}`,
		`{"resourceType":1,"id":2,"subject":{"reference":"Patient/p"}}`,
		`{"id":"x","subject":{"reference":"Patient/p"}}`,
		`{}`, `[]`, ``, `{"a"`, `{"a":`, `{"a":"b`, `{"a":1,`, `{"a":{"reference":"x"}`,
	} {
		out = append(out, []byte(s))
	}
	return out
}

// TestCheckConcurrent: Checks running at once, each with scratch from the
// pool, give what they give one at a time, references included.
func TestCheckConcurrent(t *testing.T) {
	_, synthetic, _ := typedInputs(t)
	inputs := append(synthetic, factCases()...)
	v := NewValidator(ValidatorOptions{})
	pos := Position{File: "f", Entry: -1}
	want := make([]*Result, len(inputs))
	for i, raw := range inputs {
		want[i] = v.Check(raw, pos, CheckContext{})
	}
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range inputs {
				i := (k*7 + g*13) % len(inputs)
				if got := v.Check(inputs[i], pos, CheckContext{}); !reflect.DeepEqual(got, want[i]) {
					select {
					case errs <- fmt.Sprintf("%.200s\n alone: %+v\n at once: %+v", inputs[i], want[i], got):
					default:
					}
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

// BenchmarkFactScan: the fact scan alone over synthetic resources, as
// Check runs it (pooled scratch, paths under the type) and as its oracle
// (the scan before it was made allocation-lean) ran it.
func BenchmarkFactScan(b *testing.B) {
	dir := b.TempDir()
	if _, err := synth.WriteNDJSON(dir, synth.Options{Patients: 100, Seed: 5}); err != nil {
		b.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.ndjson"))
	var lines [][]byte
	for _, f := range files {
		lines = append(lines, readResources(b, f)...)
	}
	b.Run("scan", func(b *testing.B) {
		b.ReportAllocs()
		var f facts
		var s factScratch
		for b.Loop() {
			for _, l := range lines {
				f.refs = nil // as Check hands them to the Result
				if err := scanFacts(&f, &s, l, "", true); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("oracle", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			for _, l := range lines {
				var f facts
				if err := oracleReadFacts(&f, l, ""); err != nil {
					b.Fatal(err)
				}
				for i := range f.refs {
					f.refs[i].path = f.resourceType + "." + f.refs[i].path
				}
			}
		}
	})
}
