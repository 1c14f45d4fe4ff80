package export

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	ehrcrypto "github.com/ehrport/ehrport/crypto"
	"github.com/ehrport/ehrport/fhir"
	"github.com/ehrport/ehrport/fhir/synth"
)

func TestLineScanner(t *testing.T) {
	in := `{"resourceType":"Patient","text":{"div":"<p>{\"id\":\"x\"}]</p>"},"name":[{"given":["a\\"]}],"id":"p1"}` + "\n" +
		`{"id":"b","resourceType":"Bundle","entry":[{"resource":{"resourceType":"Patient","id":"inner"}}]}` + "\n" +
		`{"resourceType":"Basic"}` + "\n"
	s := newLineScanner()
	for i := 0; i < len(in); i++ { // byte by byte: state must survive any split
		s.Write([]byte{in[i]})
	}
	want := newLineScanner()
	want.ids.Write([]byte("Patient/p1\nBundle/b\nBasic/\n"))
	if s.lines != 3 || !bytes.Equal(s.ids.Sum(nil), want.ids.Sum(nil)) {
		t.Fatalf("lines %d, ids digest differs", s.lines)
	}
	if got := peekType([]byte(`{"id":"1","resourceType":"Observation"}`)); got != "Observation" {
		t.Fatalf("peekType = %q", got)
	}
}

func TestIsLayoutKey(t *testing.T) {
	for k, want := range map[string]bool{
		"Patient.000.ndjson.ehr": true, "Patient.1234.ndjson.ehr": true, "quarantine/quarantine.000.ndjson.ehr": true,
		"manifest.json": false, "summary.json.ehr": false, "notes/Patient.000.ndjson.ehr": false, "Patient.00.ndjson.ehr": false,
		"patient.000.ndjson.ehr": false, "Patient.000.ndjson": false,
		"_server/error/OperationOutcome.000.ndjson.ehr": true, "_server/deleted/Bundle.012.ndjson.ehr": true,
		"_server/error/Patient.000.ndjson.ehr": false, "_server/deleted/OperationOutcome.000.ndjson.ehr": false,
		"_server/Bundle.000.ndjson.ehr": false, "_server/error/OperationOutcome.0.ndjson.ehr": false,
	} {
		if got := isLayoutKey(k); got != want {
			t.Errorf("isLayoutKey(%q) = %v", k, got)
		}
	}
	// A manifest entry's kind must match its name.
	sum := strings.Repeat("0", 64)
	for _, tc := range []struct {
		kind, path string
		ok         bool
	}{
		{KindServerError, "_server/error/OperationOutcome.000.ndjson", true},
		{KindServerDeleted, "_server/deleted/Bundle.000.ndjson", true},
		{KindData, "_server/error/OperationOutcome.000.ndjson", false},
		{KindServerError, "_server/deleted/Bundle.000.ndjson", false},
		{KindServerDeleted, "Patient.000.ndjson", false},
		{KindData, "quarantine/quarantine.000.ndjson", false},
		{KindQuarantine, "quarantine/quarantine.000.ndjson", true},
	} {
		err := checkEntry(ObjectEntry{Key: tc.path + ObjectSuffix, Path: tc.path, Kind: tc.kind, SHA256: sum})
		if (err == nil) != tc.ok {
			t.Errorf("checkEntry(%s, %s) = %v", tc.kind, tc.path, err)
		}
	}
}

// A generated data set round-trips byte for byte across many parts.
func TestExportRestoreSynthetic(t *testing.T) {
	src := t.TempDir()
	counts, err := synth.WriteNDJSON(src, synth.Options{Patients: 6, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	k := newTestKeys(t)
	for _, tc := range []struct {
		name          string
		splitN, split int64
		conc          int
	}{
		{"defaults", 0, 0, 0},
		{"split-resources", 7, 0, 1},
		{"split-bytes", 0, 4096, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			st := localStore(t)
			o := k.exportOpts(st, src)
			o.SplitResources, o.SplitBytes, o.Concurrency = tc.splitN, tc.split, tc.conc
			sum, err := o.Run(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			total := 0
			for typ, n := range counts {
				total += n
				if sum.Counts[typ] != int64(n) {
					t.Errorf("%s: exported %d, generated %d", typ, sum.Counts[typ], n)
				}
			}
			if sum.Resources != int64(total) {
				t.Errorf("resources %d, want %d", sum.Resources, total)
			}
			rs, dir, err := k.restore(t, st)
			if err != nil {
				t.Fatal(err)
			}
			if rs.Resources != int64(total) {
				t.Errorf("restored %d", rs.Resources)
			}
			got := restoredLines(t, dir)
			for typ := range counts {
				b, err := os.ReadFile(filepath.Join(src, typ+".ndjson"))
				if err != nil {
					t.Fatal(err)
				}
				want := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
				if !slices.Equal(got[typ], want) {
					t.Errorf("%s: restored lines differ from the input (%d vs %d)", typ, len(got[typ]), len(want))
				}
			}
			if tc.splitN == 7 {
				parts, _ := filepath.Glob(filepath.Join(dir, "Observation.*.ndjson"))
				if want := (counts["Observation"] + 6) / 7; len(parts) != want {
					t.Errorf("Observation parts %d, want %d", len(parts), want)
				}
			}
			// Everything in the store is listed in the manifest.
			m, _, err := ReadManifest(context.Background(), st)
			if err != nil {
				t.Fatal(err)
			}
			listed := []string{ManifestKey, SignatureKey}
			for _, ob := range m.Extension.Ehrport.Objects {
				listed = append(listed, ob.Key)
			}
			sort.Strings(listed)
			if ks := storeKeys(t, st); !slices.Equal(ks, listed) {
				t.Errorf("store holds %v, manifest lists %v", ks, listed)
			}
		})
	}
}

// expectedLines reads inputs the way the export should write them: each
// resource or Bundle compacted, per type, in walk (lexical) order.
func expectedLines(t *testing.T, dir string) map[string][]string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	sort.Strings(files)
	out := map[string][]string{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		b = bytes.TrimPrefix(b, []byte("\xef\xbb\xbf"))
		var c bytes.Buffer
		if err := json.Compact(&c, b); err != nil {
			t.Fatal(err)
		}
		typ := peekType(c.Bytes())
		out[typ] = append(out[typ], c.String())
	}
	return out
}

// Every official example Bundle and tricky resource round-trips exactly.
func TestCorpusRoundTrip(t *testing.T) {
	k := newTestKeys(t)
	for _, sub := range []string{"bundles", "tricky"} {
		t.Run(sub, func(t *testing.T) {
			src := filepath.Join(corpus(t, "hl7-r4-examples"), sub)
			st := localStore(t)
			if _, err := k.exportOpts(st, src).Run(context.Background()); err != nil {
				t.Fatal(err)
			}
			_, dir, err := k.restore(t, st)
			if err != nil {
				t.Fatal(err)
			}
			got, want := restoredLines(t, dir), expectedLines(t, src)
			if len(got) != len(want) {
				t.Errorf("types: got %d, want %d", len(got), len(want))
			}
			for typ, w := range want {
				if !slices.Equal(got[typ], w) {
					t.Errorf("%s: %d restored lines differ from %d compacted inputs", typ, len(got[typ]), len(w))
				}
			}
		})
	}
}

// DSTU2 and STU3 input is refused with ErrBadInput, and nothing is left.
func TestWrongVersionRejected(t *testing.T) {
	dir := corpus(t, "wrong-fhir-version")
	files, _ := filepath.Glob(filepath.Join(dir, "*.json.gz"))
	if len(files) == 0 {
		t.Skip("no wrong-version files")
	}
	k := newTestKeys(t)
	for _, f := range files {
		for _, pol := range []fhir.Policy{fhir.PolicyFail, fhir.PolicySkip, fhir.PolicyQuarantine} {
			st := localStore(t)
			o := k.exportOpts(st, f)
			o.Policy = pol
			_, err := o.Run(context.Background())
			if !errors.Is(err, fhir.ErrBadInput) {
				t.Errorf("%s (%s): err = %v, want ErrBadInput", filepath.Base(f), pol, err)
			}
			if ks := storeKeys(t, st); len(ks) != 0 {
				t.Errorf("%s (%s): store holds %v after a rejected export", filepath.Base(f), pol, ks)
			}
		}
	}
}

const plantedName = "Zebulonious"

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Neither the spool folder nor the store ever holds plaintext.
func TestNoPlaintextOnDisk(t *testing.T) {
	src := t.TempDir()
	var b strings.Builder
	for i := 0; i < 300; i++ {
		b.WriteString(`{"resourceType":"Patient","id":"pat` + string(rune('a'+i%26)) + strings.Repeat("x", i/26) + `","name":[{"family":"` + plantedName + `"}]}` + "\n")
	}
	writeFile(t, filepath.Join(src, "Patient.ndjson"), b.String())
	k := newTestKeys(t)
	st := localStore(t)
	spool := t.TempDir()
	o := k.exportOpts(st, src)
	o.SpoolDir, o.SplitResources, o.Concurrency = spool, 50, 2
	if _, err := o.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if left, _ := os.ReadDir(spool); len(left) != 0 {
		t.Errorf("spool folder not empty: %v", left)
	}
	filepath.WalkDir(st.Root(), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, _ := os.ReadFile(p)
		for _, needle := range []string{plantedName, "resourceType", "pata"} {
			if bytes.Contains(data, []byte(needle)) {
				t.Errorf("%s contains %q in the clear", p, needle)
			}
		}
		return nil
	})
	if _, _, err := k.restore(t, st); err != nil {
		t.Fatal(err)
	}
}

// --on-invalid skip and quarantine count what they leave out; quarantined
// items come back only through decryption.
func TestOnInvalid(t *testing.T) {
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "in.ndjson"), `{"resourceType":"Patient","id":"a","gender":"female"}
{"resourceType":"Patient","id":"b","gender":"Male"}
{not json
{"resourceType":"Patient","id":"c"}
{"resourceType":"Patient","id":"a","gender":"female"}
`)
	k := newTestKeys(t)
	t.Run("fail", func(t *testing.T) {
		st := localStore(t)
		_, err := k.exportOpts(st, src).Run(context.Background())
		if !errors.Is(err, fhir.ErrBadInput) {
			t.Fatalf("err = %v", err)
		}
		if _, err := st.Stat(context.Background(), ManifestKey); err == nil {
			t.Fatal("manifest written")
		}
	})
	for _, pol := range []fhir.Policy{fhir.PolicySkip, fhir.PolicyQuarantine} {
		t.Run(pol.String(), func(t *testing.T) {
			st := localStore(t)
			o := k.exportOpts(st, src)
			o.Policy = pol
			sum, err := o.Run(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if sum.Counts["Patient"] != 2 || sum.Stats.Duplicates != 1 {
				t.Errorf("counts %v, duplicates %d", sum.Counts, sum.Stats.Duplicates)
			}
			_, dir, err := k.restore(t, st)
			if err != nil {
				t.Fatal(err)
			}
			q, _ := os.ReadFile(filepath.Join(dir, "quarantine", "quarantine.000.ndjson"))
			if pol == fhir.PolicySkip {
				if sum.Stats.Skipped != 2 || q != nil {
					t.Errorf("skipped %d, quarantine file %q", sum.Stats.Skipped, q)
				}
				return
			}
			if sum.Stats.Quarantined != 2 {
				t.Errorf("quarantined %d", sum.Stats.Quarantined)
			}
			lines := strings.Split(strings.TrimSpace(string(q)), "\n")
			if len(lines) != 2 || !strings.Contains(lines[0], `"resource":{"resourceType":"Patient","id":"b","gender":"Male"}`) ||
				!strings.Contains(lines[1], `"base64":`) {
				t.Errorf("quarantine holds %q", q)
			}
			for _, l := range lines {
				if !json.Valid([]byte(l)) {
					t.Errorf("quarantine line is not JSON: %s", l)
				}
			}
		})
	}
}

// Same Type/id with different content is a finding that stops the export.
func TestDuplicateDifferent(t *testing.T) {
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "in.ndjson"), `{"resourceType":"Patient","id":"a","gender":"female"}
{"resourceType":"Patient","id":"a","gender":"male"}
`)
	k := newTestKeys(t)
	_, err := k.exportOpts(localStore(t), src).Run(context.Background())
	if !errors.Is(err, fhir.ErrBadInput) || !strings.Contains(err.Error(), "duplicate") {
		t.Fatalf("err = %v", err)
	}
}

// An interrupted export leaves no manifest; a rerun completes and removes
// the leftovers.
func TestInterruptedThenRerun(t *testing.T) {
	src := t.TempDir()
	if _, err := synth.WriteNDJSON(src, synth.Options{Patients: 4, Seed: 9}); err != nil {
		t.Fatal(err)
	}
	k := newTestKeys(t)
	st := localStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	cs := &cancelStore{Store: st, n: 6, cancel: cancel}
	o := k.exportOpts(cs, src)
	o.SplitResources, o.Concurrency = 3, 1
	_, err := o.Run(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if _, err := st.Stat(context.Background(), ManifestKey); err == nil {
		t.Fatal("manifest written by an interrupted export")
	}
	if len(storeKeys(t, st)) == 0 {
		t.Fatal("test did not interrupt after some uploads")
	}
	if _, _, err := k.restore(t, st); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("restore of an unfinished export: %v", err)
	}
	o = k.exportOpts(st, src) // default split: fewer parts, the rest are leftovers
	if _, err := o.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	m, _, err := ReadManifest(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := len(storeKeys(t, st)), len(m.Extension.Ehrport.Objects)+2; got != want {
		t.Errorf("store holds %d keys, manifest accounts for %d", got, want)
	}
	if _, _, err := k.restore(t, st); err != nil {
		t.Fatal(err)
	}
	// A second export to the same place is refused.
	if _, err := k.exportOpts(st, src).Run(context.Background()); !errors.Is(err, ErrTargetHasExport) {
		t.Fatalf("export over an export: %v", err)
	}
}

// Tampering with any part is caught before a file appears.
func TestRestoreTampering(t *testing.T) {
	src := t.TempDir()
	if _, err := synth.WriteNDJSON(src, synth.Options{Patients: 2, Seed: 1}); err != nil {
		t.Fatal(err)
	}
	k := newTestKeys(t)
	fresh := func(t *testing.T) (root string, run func() (string, error)) {
		st := localStore(t)
		if _, err := k.exportOpts(st, src).Run(context.Background()); err != nil {
			t.Fatal(err)
		}
		return st.Root(), func() (string, error) { _, dir, err := k.restore(t, st); return dir, err }
	}
	flip := func(t *testing.T, p string, off int) {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		b[off%len(b)] ^= 1
		writeFile(t, p, string(b))
	}
	t.Run("ciphertext", func(t *testing.T) {
		root, run := fresh(t)
		flip(t, filepath.Join(root, "Patient.000.ndjson.ehr"), 500)
		dir, err := run()
		if !errors.Is(err, ehrcrypto.ErrCorrupt) || !strings.Contains(err.Error(), "Patient.000.ndjson.ehr") {
			t.Fatalf("err = %v", err)
		}
		if _, err := os.Stat(filepath.Join(dir, "Patient.000.ndjson")); err == nil {
			t.Error("a tampered object was restored")
		}
	})
	t.Run("manifest", func(t *testing.T) {
		root, run := fresh(t)
		p := filepath.Join(root, ManifestKey)
		b, _ := os.ReadFile(p)
		writeFile(t, p, strings.Replace(string(b), `"requiresAccessToken": false`, `"requiresAccessToken": true`, 1))
		if _, err := run(); !errors.Is(err, ehrcrypto.ErrCorrupt) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("swapped", func(t *testing.T) {
		root, run := fresh(t)
		a, b := filepath.Join(root, "Patient.000.ndjson.ehr"), filepath.Join(root, "Condition.000.ndjson.ehr")
		ab, _ := os.ReadFile(a)
		bb, _ := os.ReadFile(b)
		writeFile(t, a, string(bb))
		writeFile(t, b, string(ab))
		if _, err := run(); !errors.Is(err, ehrcrypto.ErrCorrupt) {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("missing", func(t *testing.T) {
		root, run := fresh(t)
		os.Remove(filepath.Join(root, "Observation.000.ndjson.ehr"))
		if _, err := run(); err == nil || !strings.Contains(err.Error(), "Observation.000.ndjson.ehr") {
			t.Fatalf("err = %v", err)
		}
	})
}

// Signing is a deliberate choice: no signer needs Unsigned, and restore
// then needs AllowUnsigned.
func TestUnsigned(t *testing.T) {
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "p.json"), `{"resourceType":"Patient","id":"a"}`)
	k := newTestKeys(t)
	st := localStore(t)
	o := k.exportOpts(st, src)
	o.Signer = nil
	if _, err := o.Run(context.Background()); !errors.Is(err, ehrcrypto.ErrPolicy) {
		t.Fatalf("unsigned without Unsigned: %v", err)
	}
	o.Unsigned = true
	if _, err := o.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := k.restore(t, st); !errors.Is(err, ehrcrypto.ErrPolicy) {
		t.Fatalf("restore of unsigned: %v", err)
	}
	ro := &RestoreOptions{Store: st, To: t.TempDir(), Identities: []ehrcrypto.Identity{k.id}, Verifier: k.verif, AllowUnsigned: true}
	if _, err := ro.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// --split-bundles exports entries as resources; walker findings (blank
// lines, links lost by splitting) arrive from another goroutine.
func TestSplitBundles(t *testing.T) {
	src := t.TempDir()
	if _, err := synth.WriteTransactionBundles(src, synth.Options{Patients: 4, Seed: 2}, 2); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(src, "z.ndjson"), "\n{\"resourceType\":\"Basic\",\"id\":\"b1\",\"code\":{\"text\":\"x\"}}\n\n")
	k := newTestKeys(t)
	st := localStore(t)
	o := k.exportOpts(st, src)
	o.SplitBundles = true
	var n int
	o.Findings = func(fhir.Finding) { n++ }
	sum, err := o.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if sum.Counts["Bundle"] != 0 || sum.Counts["Patient"] != 4 || sum.Counts["Basic"] != 1 || n == 0 {
		t.Fatalf("counts %v, findings %d", sum.Counts, n)
	}
	if _, _, err := k.restore(t, st); err != nil {
		t.Fatal(err)
	}
}

// A Bundle kept whole with an invalid entry is quarantined whole, encrypted.
func TestQuarantineBundle(t *testing.T) {
	src := t.TempDir()
	writeFile(t, filepath.Join(src, "b.json"), `{
  "resourceType": "Bundle", "id": "bq", "type": "collection",
  "entry": [{"fullUrl": "http://x/Patient/q1", "resource": {"resourceType": "Patient", "id": "q1", "gender": "Male"}}]
}`)
	writeFile(t, filepath.Join(src, "p.json"), `{"resourceType":"Patient","id":"ok1"}`)
	k := newTestKeys(t)
	st := localStore(t)
	o := k.exportOpts(st, src)
	o.Policy = fhir.PolicyQuarantine
	sum, err := o.Run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if sum.Stats.Quarantined != 1 || sum.Counts["Patient"] != 1 || sum.Counts["Bundle"] != 0 {
		t.Fatalf("stats %+v counts %v", sum.Stats, sum.Counts)
	}
	_, dir, err := k.restore(t, st)
	if err != nil {
		t.Fatal(err)
	}
	q, _ := os.ReadFile(filepath.Join(dir, "quarantine", "quarantine.000.ndjson"))
	if !json.Valid(bytes.TrimSpace(q)) || !strings.Contains(string(q), `"resource":{"resourceType":"Bundle","id":"bq"`) || !strings.Contains(string(q), `"type":"Bundle"`) {
		t.Fatalf("quarantine: %s", q)
	}
}
