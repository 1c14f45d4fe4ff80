package fhir

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
)

// corpusDir returns the shared corpus, or skips (fails under CI=true).
func corpusDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join("..", "..", "shared", "corpus")
	if _, err := os.Stat(filepath.Join(dir, "hl7-r4-examples")); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("corpus missing at %s (CI=true): %v", dir, err)
		}
		t.Skipf("corpus not found at %s", dir)
	}
	return dir
}

func decodeNumbers(t testing.TB, b []byte) any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("decode: %v", err)
	}
	return v
}

// exportOne walks path with default options and returns the exported
// lines, the findings and the actions.
func exportOne(t testing.TB, opts WalkOptions, policy Policy, paths ...string) (lines [][]byte, findings []Finding, err error) {
	t.Helper()
	report := func(f Finding) { findings = append(findings, f) }
	opts.Report = report
	w, err := NewWalker(paths, opts)
	if err != nil {
		return nil, nil, err
	}
	defer w.Close()
	c := NewChecker(CheckerOptions{Policy: policy, Report: report})
	for {
		it, err := w.Next()
		if err != nil {
			if err.Error() == "EOF" {
				break
			}
			return lines, findings, err
		}
		act, err := c.Item(it)
		if err != nil {
			return lines, findings, err
		}
		if act != Write {
			continue
		}
		if it.Kind == KindBundle {
			var buf bytes.Buffer
			if _, err := it.Bundle.WriteTo(&buf); err != nil {
				return lines, findings, err
			}
			lines = append(lines, buf.Bytes())
		} else {
			lines = append(lines, append([]byte(nil), it.Raw...))
		}
	}
	return lines, findings, c.Finish()
}

func TestCorpusR4ExamplesLossless(t *testing.T) {
	dir := corpusDir(t)
	for _, sub := range []string{"bundles", "tricky"} {
		files, _ := filepath.Glob(filepath.Join(dir, "hl7-r4-examples", sub, "*.json"))
		sort.Strings(files)
		if len(files) == 0 {
			t.Fatalf("no files in %s", sub)
		}
		for _, f := range files {
			t.Run(sub+"/"+filepath.Base(f), func(t *testing.T) {
				orig, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				lines, findings, err := exportOne(t, WalkOptions{}, PolicySkip, f)
				for _, fd := range findings {
					// The examples point at resources outside themselves:
					// those findings are correct and expected.
					if fd.Severity >= Error && fd.Code != CodeDanglingRef {
						t.Errorf("finding: %s", fd)
					} else {
						t.Logf("finding: %s", fd)
					}
				}
				if err != nil {
					t.Fatal(err)
				}
				if len(lines) != 1 {
					t.Fatalf("got %d lines, want 1", len(lines))
				}
				var want bytes.Buffer
				if err := json.Compact(&want, trimBOM(orig)); err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(lines[0], want.Bytes()) {
					t.Errorf("output differs from json.Compact of the input")
				}
				if !reflect.DeepEqual(decodeNumbers(t, lines[0]), decodeNumbers(t, orig)) {
					t.Errorf("output does not parse to the input (numbers kept as literals)")
				}
			})
		}
	}
}

func TestCorpusWrongVersionRejected(t *testing.T) {
	dir := corpusDir(t)
	for _, tc := range []struct{ file, version string }{
		{"stu3-Fannie_Waelchi_8666cd40-7af9-48c6-a1a6-86a161195542.json.gz", "STU3"},
		{"dstu2-Fannie_Waelchi_8666cd40-7af9-48c6-a1a6-86a161195542.json.gz", "DSTU2"},
	} {
		t.Run(tc.version, func(t *testing.T) {
			path := filepath.Join(dir, "wrong-fhir-version", tc.file)
			_, _, err := exportOne(t, WalkOptions{}, PolicyFail, path)
			if !errors.Is(err, ErrBadInput) {
				t.Fatalf("err = %v, want ErrBadInput", err)
			}
			if !strings.Contains(err.Error(), "not R4") || !strings.Contains(err.Error(), tc.version) {
				t.Errorf("message does not name the version: %v", err)
			}
			t.Logf("error: %v", err)
			// Under skip, count how many entries carry a version tell.
			_, findings, _ := exportOne(t, WalkOptions{}, PolicySkip, path)
			n := 0
			for _, f := range findings {
				if f.Code == CodeWrongVersion {
					n++
				}
			}
			if n == 0 {
				t.Errorf("no %s finding", CodeWrongVersion)
			}
			t.Logf("%d entries flagged %s", n, CodeWrongVersion)
		})
	}
}
