package fhir

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"reflect"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/ehrport/ehrport/fhir/synth"
)

func TestCheckerFindings(t *testing.T) {
	obs := `{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p1"}}`
	cases := []struct {
		name   string
		lines  []string
		policy Policy
		code   Code   // expected finding code ("" for none of Warning+)
		msg    string // substring of that finding
		stats  func(Stats) bool
	}{
		{name: "valid and resolved", lines: []string{pat, obs}},
		{name: "missing resourceType", lines: []string{`{"id":"x"}`}, code: CodeNotResource},
		{name: "missing id", lines: []string{`{"resourceType":"Patient"}`}, code: CodeMissingID, msg: "no id"},
		{name: "bad id", lines: []string{`{"resourceType":"Patient","id":"a b"}`}, code: CodeBadID},
		{name: "unknown type", lines: []string{`{"resourceType":"Pateint","id":"x"}`}, code: CodeUnknownType},
		{name: "bad code", lines: []string{`{"resourceType":"Patient","id":"x","gender":"Male"}`}, code: CodeModel, msg: "AdministrativeGender"},
		{name: "unknown element", lines: []string{`{"resourceType":"Patient","id":"x","colour":"blue"}`}, code: CodeUnknownElement, msg: "colour"},
		{name: "primitive extension ok", lines: []string{`{"resourceType":"Patient","id":"x","_birthDate":{"extension":[]}}`}},
		{name: "array shape", lines: []string{`{"resourceType":"Patient","id":"x","name":{"family":"a"}}`}, code: CodeShape},
		{name: "required missing", lines: []string{`{"resourceType":"Observation","id":"o","code":{"text":"x"}}`}, code: CodeRequired, msg: "status"},
		{name: "required choice", lines: []string{`{"resourceType":"MedicationRequest","id":"m","status":"active","intent":"order","subject":{"reference":"Patient/p1"}}`, pat},
			code: CodeRequired, msg: "medicationCodeableConcept or medicationReference"},
		{name: "duplicate key", lines: []string{`{"resourceType":"Patient","id":"x","id":"y"}`}, code: CodeDuplicateKey},
		{name: "stu3 element", lines: []string{`{"resourceType":"Observation","id":"o","status":"final","code":{"text":"x"},"context":{"reference":"Encounter/e"}}`}, code: CodeWrongVersion, msg: "STU3"},
		{name: "dstu2 type", lines: []string{`{"resourceType":"MedicationOrder","id":"m"}`}, code: CodeWrongVersion, msg: "DSTU2"},
		{name: "stu3 profile", lines: []string{`{"resourceType":"Patient","id":"x","meta":{"profile":["http://hl7.org/fhir/STU3/StructureDefinition/Patient"]}}`}, code: CodeWrongVersion},
		{name: "fhirVersion", lines: []string{`{"resourceType":"CapabilityStatement","id":"c","status":"active","date":"2020","kind":"instance","fhirVersion":"3.0.1","format":["json"]}`}, code: CodeWrongVersion, msg: "3.0.1"},
		{name: "dangling reference", lines: []string{obs}, code: CodeDanglingRef, msg: "Patient/p1"},
		{name: "contained reference", lines: []string{`{"resourceType":"Patient","id":"x","contained":[{"resourceType":"Organization","id":"o"}],"managingOrganization":{"reference":"#o"}}`}},
		{name: "dangling contained", lines: []string{`{"resourceType":"Patient","id":"x","managingOrganization":{"reference":"#o"}}`}, code: CodeDanglingRef},
		{name: "invalid contained", lines: []string{`{"resourceType":"Patient","id":"x","contained":[{"resourceType":"Patient","id":"c","gender":"M"}]}`}, code: CodeModel, msg: "contained"},
		{name: "duplicate identical", lines: []string{pat, pat}, stats: func(s Stats) bool { return s.Duplicates == 1 && s.Written == 1 }},
		{name: "duplicate different", lines: []string{pat, `{"resourceType":"Patient","id":"p1"}`}, code: CodeDuplicate, msg: ":1"},
		{name: "skip counts", lines: []string{`{"resourceType":"Patient"}`, pat, "{bad"}, policy: PolicySkip, code: CodeMissingID,
			stats: func(s Stats) bool { return s.Skipped == 2 && s.Written == 1 }},
		{name: "quarantine counts", lines: []string{`{"resourceType":"Patient"}`, pat}, policy: PolicyQuarantine, code: CodeMissingID,
			stats: func(s Stats) bool { return s.Quarantined == 1 && s.Written == 1 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, t.TempDir(), "in.ndjson", []byte(strings.Join(tc.lines, "\n")+"\n"))
			var stats Stats
			var findings []Finding
			w, _ := NewWalker([]string{p}, WalkOptions{})
			c := NewChecker(CheckerOptions{Policy: tc.policy, Report: func(f Finding) { findings = append(findings, f) }})
			var err error
			for {
				it, nerr := w.Next()
				if nerr != nil {
					break
				}
				if _, err = c.Item(it); err != nil {
					break
				}
			}
			if err == nil {
				err = c.Finish()
			}
			stats = c.Stats()
			var hit *Finding
			for i, f := range findings {
				if f.Severity >= Warning && hit == nil {
					hit = &findings[i]
				}
			}
			if tc.code == "" {
				if hit != nil || err != nil {
					t.Fatalf("unexpected finding %v / err %v", hit, err)
				}
			} else {
				if hit == nil || hit.Code != tc.code || !strings.Contains(hit.String(), tc.msg) {
					t.Fatalf("finding %v, want %s containing %q (all: %v)", hit, tc.code, tc.msg, findings)
				}
				if hit.Pos.File != p || hit.Pos.Line == 0 {
					t.Errorf("finding position %v", hit.Pos)
				}
				if tc.policy == PolicyFail && !errors.Is(err, ErrBadInput) {
					t.Errorf("policy fail: err %v, want ErrBadInput", err)
				}
			}
			if tc.stats != nil && !tc.stats(stats) {
				t.Errorf("stats %+v", stats)
			}
		})
	}
}

func TestBundleURNResolution(t *testing.T) {
	tx := `{"resourceType":"Bundle","type":"transaction","entry":[
	 {"fullUrl":"urn:uuid:1","resource":{"resourceType":"Patient"},"request":{"method":"POST","url":"Patient"}},
	 {"fullUrl":"urn:uuid:2","resource":{"resourceType":"Observation","status":"final","code":{"text":"x"},"subject":{"reference":"urn:uuid:1"}},"request":{"method":"POST","url":"Observation"}}]}`
	p := writeFile(t, t.TempDir(), "tx.json", []byte(tx))
	lines, findings, err := exportOne(t, WalkOptions{}, PolicyFail, p)
	if err != nil || len(lines) != 1 {
		t.Fatalf("err %v lines %d findings %v", err, len(lines), findings)
	}
	bad := strings.Replace(tx, `"reference":"urn:uuid:1"`, `"reference":"urn:uuid:9"`, 1)
	p = writeFile(t, t.TempDir(), "tx.json", []byte(bad))
	_, _, err = exportOne(t, WalkOptions{}, PolicyFail, p)
	if !errors.Is(err, ErrBadInput) || !strings.Contains(err.Error(), "urn:uuid:9") || !strings.Contains(err.Error(), "entry 1") {
		t.Fatalf("err %v", err)
	}
	// Split: entries lack ids, so the Bundle is kept whole with a reason.
	var kept []Finding
	_, kept, err = exportOne(t, WalkOptions{SplitBundles: true}, PolicyFail, writeFile(t, t.TempDir(), "tx.json", []byte(tx)))
	if err != nil || len(kept) == 0 || kept[0].Code != CodeKeptWhole || !strings.Contains(kept[0].Msg, "no id") {
		t.Fatalf("split: %v %v", err, kept)
	}
}

func TestRunMatchesLoop(t *testing.T) {
	lines := []string{pat, `{"resourceType":"Patient"}`, pat, "{bad", `{"resourceType":"Observation","id":"o1","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p1"}}`}
	var many []string
	for i := 0; i < 200; i++ {
		many = append(many, lines...)
	}
	p := writeFile(t, t.TempDir(), "in.ndjson", []byte(strings.Join(many, "\n")))
	run := func(parallel bool) ([]Action, Stats) {
		w, _ := NewWalker([]string{p}, WalkOptions{})
		c := NewChecker(CheckerOptions{Policy: PolicyQuarantine})
		var acts []Action
		if parallel {
			if err := c.Run(w, 2, func(it *Item, a Action) error { acts = append(acts, a); return nil }); err != nil {
				t.Fatal(err)
			}
		} else {
			for {
				it, err := w.Next()
				if err != nil {
					break
				}
				a, err := c.Item(it)
				if err != nil {
					t.Fatal(err)
				}
				acts = append(acts, a)
			}
		}
		c.Finish()
		return acts, c.Stats()
	}
	a1, s1 := run(false)
	a2, s2 := run(true)
	if len(a1) != len(a2) || s1.Written != s2.Written || s1.Quarantined != s2.Quarantined || s1.Duplicates != s2.Duplicates {
		t.Fatalf("loop %d %+v, run %d %+v", len(a1), s1, len(a2), s2)
	}
	for i := range a1 {
		if a1[i] != a2[i] {
			t.Fatalf("item %d: %v vs %v", i, a1[i], a2[i])
		}
	}
	// Under fail, Run stops with ErrBadInput.
	w, _ := NewWalker([]string{p}, WalkOptions{})
	if err := NewChecker(CheckerOptions{}).Run(w, 2, func(*Item, Action) error { return nil }); !errors.Is(err, ErrBadInput) {
		t.Fatalf("fail policy: %v", err)
	}
}

// spillInput writes NDJSON and Bundle files mixing everything the index
// tracks: ids defined once, twice with the same content and twice with
// different content, references resolved before and after their target
// (across files), references never resolved (some many times), Bundles
// kept whole whose entries define ids, and Bundles with duplicate ids.
func spillInput(t *testing.T, seed uint64) string {
	t.Helper()
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(seed, 7))
	for f := 0; f < 3; f++ {
		var b strings.Builder
		for i := 0; i < 400; i++ {
			id := r.IntN(300)
			switch r.IntN(5) {
			case 0, 1:
				fmt.Fprintf(&b, `{"resourceType":"Patient","id":"p%d","gender":"%s"}`+"\n", id, []string{"male", "female"}[r.IntN(2)])
			case 2, 3:
				fmt.Fprintf(&b, `{"resourceType":"Observation","id":"o%d","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p%d"}}`+"\n", id, r.IntN(400))
			default:
				fmt.Fprintf(&b, `{"resourceType":"Bundle","id":"b%d","type":"collection","entry":[{"fullUrl":"http://x/fhir/Patient/q%d","resource":{"resourceType":"Patient","id":"q%d"}},{"resource":{"resourceType":"Observation","id":"e%d","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/q%d"}}}]}`+"\n",
					r.IntN(40), id, id, id, r.IntN(350))
			}
		}
		writeFile(t, dir, fmt.Sprintf("f%d.ndjson", f), []byte(b.String()))
	}
	return dir
}

// The index gives the same actions, findings (text, order, positions) and
// counts whether it fits in memory or spills after every few entries.
func TestIndexSpillMatchesMemory(t *testing.T) {
	for _, policy := range []Policy{PolicySkip, PolicyQuarantine} {
		for seed := uint64(1); seed <= 3; seed++ {
			dir := spillInput(t, seed)
			run := func(entries int, parallel bool) ([]Action, []string, Stats) {
				w, err := NewWalker([]string{dir}, WalkOptions{})
				if err != nil {
					t.Fatal(err)
				}
				defer w.Close()
				spill := t.TempDir()
				var found []string
				c := NewChecker(CheckerOptions{Policy: policy, IndexEntries: entries, SpillDir: spill,
					Report: func(f Finding) { found = append(found, f.String()) }})
				var acts []Action
				if parallel {
					err = c.Run(w, 2, func(_ *Item, a Action) error { acts = append(acts, a); return nil })
				} else {
					for {
						it, nerr := w.Next()
						if nerr != nil {
							break
						}
						a, ierr := c.Item(it)
						if ierr != nil {
							err = ierr
							break
						}
						acts = append(acts, a)
					}
				}
				if err != nil {
					t.Fatal(err)
				}
				if err := c.Finish(); err != nil {
					t.Fatal(err)
				}
				if left, _ := os.ReadDir(spill); len(left) != 0 {
					t.Errorf("spill folder not empty: %v", left)
				}
				return acts, found, c.Stats()
			}
			a0, f0, s0 := run(0, false)
			if s0.Duplicates == 0 || s0.Findings[CodeDuplicate] == 0 || s0.Findings[CodeDanglingRef] == 0 {
				t.Fatalf("input exercises too little: %+v", s0)
			}
			for _, entries := range []int{1, 3, 50, 333} {
				a, f, s := run(entries, entries%2 == 1)
				if !slices.Equal(a, a0) {
					t.Errorf("policy %v seed %d, %d entries: actions differ", policy, seed, entries)
				}
				if !slices.Equal(f, f0) {
					t.Errorf("policy %v seed %d, %d entries: findings differ\nspilled:   %q\nin memory: %q", policy, seed, entries, f, f0)
				}
				if !reflect.DeepEqual(s, s0) {
					t.Errorf("policy %v seed %d, %d entries: stats %+v, in memory %+v", policy, seed, entries, s, s0)
				}
			}
		}
	}
}

// Under --on-invalid fail an unresolved reference found by the merge fails
// Finish with the same error as in memory.
func TestIndexSpillDanglingFails(t *testing.T) {
	var b strings.Builder
	b.WriteString(pat + "\n")
	for i := 0; i < 50; i++ {
		fmt.Fprintf(&b, `{"resourceType":"Observation","id":"o%d","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p%d"}}`+"\n", i, i%3)
	}
	p := writeFile(t, t.TempDir(), "in.ndjson", []byte(b.String()))
	var errs []string
	for _, entries := range []int{0, 2} {
		w, _ := NewWalker([]string{p}, WalkOptions{})
		c := NewChecker(CheckerOptions{IndexEntries: entries, SpillDir: t.TempDir()})
		if err := c.Run(w, 1, func(*Item, Action) error { return nil }); err != nil {
			t.Fatal(err)
		}
		err := c.Finish()
		if !errors.Is(err, ErrBadInput) {
			t.Fatalf("%d entries: %v", entries, err)
		}
		errs = append(errs, err.Error())
	}
	if errs[0] != errs[1] || !strings.Contains(errs[0], `"Patient/p0" resolves to no resource in the export (17 references`) || !strings.Contains(errs[0], "(and 1 more)") {
		t.Fatalf("in memory: %s\nspilled:   %s", errs[0], errs[1])
	}
}

// The index's memory stays at its bound however many ids pass: the live
// heap after 47,000 generated resources is within 1 MiB of the heap after
// 10,000 (an unbounded index grows by about 100 bytes a resource, 3.7 MB
// here).
func TestCheckerIndexMemoryBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("generates 47,000 resources")
	}
	dir := t.TempDir()
	if _, err := synth.WriteNDJSON(dir, synth.Options{Patients: 2500, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	w, err := NewWalker([]string{dir}, WalkOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	c := NewChecker(CheckerOptions{IndexEntries: 2048, SpillDir: t.TempDir()})
	defer c.Close()
	live := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	var n int
	var early uint64
	if err := c.Run(w, 1, func(*Item, Action) error {
		if n++; n == 10000 {
			early = live()
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	late := live()
	if err := c.Finish(); err != nil {
		t.Fatal(err)
	}
	t.Logf("live heap after 10,000 resources %.2f MiB, after %d %.2f MiB", float64(early)/(1<<20), n, float64(late)/(1<<20))
	if n < 45000 || late > early+(1<<20) {
		t.Errorf("live heap grew from %d to %d bytes over %d resources", early, late, n)
	}
}

// What the index spills is opaque: no id, reference text, type name or
// path in the clear, and the file is unlinked from the spill folder at once.
func TestIndexSpillOpaque(t *testing.T) {
	dir := spillInput(t, 9)
	spillDir := t.TempDir()
	w, err := NewWalker([]string{dir}, WalkOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	c := NewChecker(CheckerOptions{Policy: PolicySkip, IndexEntries: 16, SpillDir: spillDir})
	defer c.Close()
	if err := c.Run(w, 2, func(*Item, Action) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if err := c.spillAll(); err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(spillDir); len(left) != 0 {
		t.Errorf("spill folder holds %v", left)
	}
	data := make([]byte, c.sp.off)
	if _, err := c.sp.f.ReadAt(data, 0); err != nil {
		t.Fatal(err)
	}
	if len(data) < 10000 {
		t.Fatalf("only %d bytes spilled", len(data))
	}
	for _, needle := range []string{"Patient", "Observation", "Patient/p1", "subject", "f0.ndjson", "Bundle"} {
		if bytes.Contains(data, []byte(needle)) {
			t.Errorf("the spill file holds %q in the clear", needle)
		}
	}
	if err := c.Finish(); err != nil {
		t.Fatal(err)
	}
}

// TestUnresolvedListingBounded: past maxListedUnresolved targets, Finish
// lists the first ones in input order, counts every one, and says how many
// it did not list, in memory and after spilling alike.
func TestUnresolvedListingBounded(t *testing.T) {
	defer func(n int) { maxListedUnresolved = n }(maxListedUnresolved)
	maxListedUnresolved = 10
	var b strings.Builder
	for i := range 50 {
		fmt.Fprintf(&b, `{"resourceType":"Observation","id":"o%d","status":"final","code":{"text":"x"},"subject":{"reference":"Patient/p%d"}}`+"\n", i, 49-i)
	}
	p := writeFile(t, t.TempDir(), "in.ndjson", []byte(b.String()))
	for _, entries := range []int{0, 3} {
		var found []Finding
		w, _ := NewWalker([]string{p}, WalkOptions{})
		c := NewChecker(CheckerOptions{IndexEntries: entries, SpillDir: t.TempDir(), Report: func(f Finding) { found = append(found, f) }})
		if err := c.Run(w, 1, func(*Item, Action) error { return nil }); err != nil {
			t.Fatal(err)
		}
		err := c.Finish()
		var fe *FindingsError
		if !errors.As(err, &fe) || len(fe.Findings) != 10 || fe.Count() != 50 || !strings.Contains(err.Error(), "(and 49 more)") ||
			!strings.Contains(err.Error(), "without --strict-references") || strings.Contains(err.Error(), "--on-invalid") {
			t.Fatalf("%d entries: %v", entries, err)
		}
		if n := c.Stats().Findings[CodeDanglingRef]; n != 50 || len(found) != 11 {
			t.Fatalf("%d entries: counted %d, reported %d", entries, n, len(found))
		}
		for i, f := range found[:10] {
			if f.Pos.Line != int64(i+1) || !strings.Contains(f.Msg, fmt.Sprintf(`"Patient/p%d"`, 49-i)) {
				t.Fatalf("%d entries: finding %d is %s, want line %d", entries, i, f, i+1)
			}
		}
		if !strings.Contains(found[10].Msg, "40 more referenced targets") {
			t.Fatalf("%d entries: last finding %s", entries, found[10])
		}
	}
}
