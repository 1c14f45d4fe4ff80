package fhir

import (
	"errors"
	"strings"
	"testing"
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
