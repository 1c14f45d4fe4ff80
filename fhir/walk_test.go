package fhir

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t testing.TB, dir, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if strings.HasSuffix(name, ".gz") {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		zw.Write(data)
		zw.Close()
		data = b.Bytes()
	}
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

type walked struct {
	kinds []Kind
	raws  []string
	pos   []Position
	errs  []error
	final error
}

func walkAll(t testing.TB, opts WalkOptions, paths ...string) walked {
	t.Helper()
	w, err := NewWalker(paths, opts)
	if err != nil {
		return walked{final: err}
	}
	defer w.Close()
	var out walked
	for {
		it, err := w.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			out.final = err
			return out
		}
		out.kinds = append(out.kinds, it.Kind)
		out.raws = append(out.raws, string(it.Raw))
		out.pos = append(out.pos, it.Pos)
		out.errs = append(out.errs, it.Err)
	}
}

const pat = `{"resourceType":"Patient","id":"p1","gender":"female"}`

func TestNDJSONReader(t *testing.T) {
	long := `{"resourceType":"Binary","id":"b","contentType":"text/plain","data":"` + strings.Repeat("QUJD", 50_000) + `"}`
	deep := strings.Repeat(`{"a":`, 200) + "1" + strings.Repeat("}", 200)
	cases := []struct {
		name    string
		file    string
		data    string
		opts    WalkOptions
		kinds   []Kind
		raws    []string
		lines   []int64
		errLike string // substring of the whole-file error, if any
	}{
		{name: "simple", file: "a.ndjson", data: pat + "\n" + pat + "\n",
			kinds: []Kind{KindResource, KindResource}, raws: []string{pat, pat}, lines: []int64{1, 2}},
		{name: "blank lines and no final newline", file: "a.ndjson", data: "\n  \n" + pat + "\n\r\n\t\n" + pat,
			kinds: []Kind{KindResource, KindResource}, lines: []int64{3, 6}},
		{name: "CRLF and spaces compacted", file: "a.ndjson", data: "{ \"resourceType\" : \"Patient\" , \"id\" : \"p1\" }\r\n",
			kinds: []Kind{KindResource}, raws: []string{`{"resourceType":"Patient","id":"p1"}`}},
		{name: "BOM", file: "a.ndjson", data: "\xEF\xBB\xBF" + pat + "\n", kinds: []Kind{KindResource}, raws: []string{pat}},
		{name: "line over 64KB", file: "a.ndjson", data: pat + "\n" + long + "\n" + pat + "\n",
			kinds: []Kind{KindResource, KindResource, KindResource}, raws: []string{pat, long, pat}},
		{name: "gzip", file: "a.ndjson.gz", data: pat + "\n" + long + "\n", kinds: []Kind{KindResource, KindResource}},
		{name: "invalid JSON line then valid", file: "a.ndjson", data: "{\"resourceType\":\n" + pat + "\n",
			kinds: []Kind{KindInvalid, KindResource}, lines: []int64{1, 2}},
		{name: "two values on a line", file: "a.ndjson", data: pat + " " + pat + "\n", kinds: []Kind{KindInvalid}},
		{name: "line over the cap", file: "a.ndjson", data: pat + "\n" + long + "\n" + pat + "\n", opts: WalkOptions{MaxResourceBytes: 1000},
			kinds: []Kind{KindResource, KindInvalid, KindResource}, lines: []int64{1, 2, 3}},
		{name: "too deep", file: "a.ndjson", data: deep + "\n", kinds: []Kind{KindInvalid}},
		{name: "numbers and escapes kept", file: "a.ndjson", data: `{"resourceType":"Observation","v":1.50,"e":1E+2,"s":"\u00e9\/\"x"}` + "\n",
			kinds: []Kind{KindResource}, raws: []string{`{"resourceType":"Observation","v":1.50,"e":1E+2,"s":"\u00e9\/\"x"}`}},
		{name: "single resource file", file: "p.json", data: "{\n  \"resourceType\": \"Patient\",\n  \"id\": \"p1\"\n}\n",
			kinds: []Kind{KindResource}, raws: []string{`{"resourceType":"Patient","id":"p1"}`}, lines: []int64{0}},
		{name: "ndjson named .json", file: "p.json", data: pat + "\n" + pat + "\n", kinds: []Kind{KindInvalid}},
		{name: "array file", file: "p.json", data: "[1]", kinds: []Kind{KindInvalid}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := writeFile(t, t.TempDir(), tc.file, []byte(tc.data))
			got := walkAll(t, tc.opts, p)
			if tc.errLike != "" {
				if got.final == nil || !strings.Contains(got.final.Error(), tc.errLike) {
					t.Fatalf("error %v, want %q", got.final, tc.errLike)
				}
				return
			}
			if got.final != nil {
				t.Fatal(got.final)
			}
			if len(got.kinds) != len(tc.kinds) {
				t.Fatalf("kinds %v, want %v (errs %v)", got.kinds, tc.kinds, got.errs)
			}
			for i := range tc.kinds {
				if got.kinds[i] != tc.kinds[i] {
					t.Errorf("item %d kind %v, want %v (%v)", i, got.kinds[i], tc.kinds[i], got.errs[i])
				}
				if got.kinds[i] == KindInvalid {
					if !errors.Is(got.errs[i], ErrBadInput) || !strings.Contains(got.errs[i].Error(), p) {
						t.Errorf("item %d error %v: want ErrBadInput naming the file", i, got.errs[i])
					}
				}
				if tc.raws != nil && got.raws[i] != tc.raws[i] {
					t.Errorf("item %d raw %.80q, want %.80q", i, got.raws[i], tc.raws[i])
				}
				if tc.lines != nil && got.pos[i].Line != tc.lines[i] {
					t.Errorf("item %d line %d, want %d", i, got.pos[i].Line, tc.lines[i])
				}
			}
		})
	}
}

func TestTruncatedGzip(t *testing.T) {
	dir := t.TempDir()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	for i := 0; i < 2000; i++ {
		zw.Write([]byte(pat + "\n"))
	}
	zw.Close()
	p := filepath.Join(dir, "cut.ndjson.gz")
	os.WriteFile(p, b.Bytes()[:b.Len()-20], 0o644)
	got := walkAll(t, WalkOptions{}, p)
	if !errors.Is(got.final, ErrBadInput) || !strings.Contains(got.final.Error(), "truncated") || !strings.Contains(got.final.Error(), p) {
		t.Fatalf("error %v: want ErrBadInput saying truncated and naming the file", got.final)
	}
}

func TestGzipBomb(t *testing.T) {
	dir := t.TempDir()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	zw.Write(bytes.Repeat([]byte(" "), 70<<20))
	zw.Close()
	p := filepath.Join(dir, "bomb.ndjson.gz")
	os.WriteFile(p, b.Bytes(), 0o644)
	got := walkAll(t, WalkOptions{MaxGzipRatio: 10}, p)
	if !errors.Is(got.final, ErrBadInput) || !strings.Contains(got.final.Error(), "expands") {
		t.Fatalf("error %v: want the expansion cap", got.final)
	}
}

func TestFolderOrder(t *testing.T) {
	dir := t.TempDir()
	os.MkdirAll(filepath.Join(dir, "b", "c"), 0o755)
	writeFile(t, dir, "b/c/z.ndjson", []byte(pat+"\n"))
	writeFile(t, dir, "a.json", []byte(pat))
	writeFile(t, dir, "b/y.ndjson.gz", []byte(pat+"\n"))
	writeFile(t, dir, "notes.txt", []byte("x"))
	writeFile(t, dir, ".hidden.ndjson", []byte("x"))
	w, err := NewWalker([]string{dir}, WalkOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var rel []string
	for _, f := range w.Files() {
		r, _ := filepath.Rel(dir, f)
		rel = append(rel, filepath.ToSlash(r))
	}
	if got, want := strings.Join(rel, " "), "a.json b/c/z.ndjson b/y.ndjson.gz"; got != want {
		t.Errorf("files %q, want %q", got, want)
	}
	if len(w.Ignored()) != 2 {
		t.Errorf("ignored %v", w.Ignored())
	}
	if _, err := NewWalker([]string{filepath.Join(dir, "missing")}, WalkOptions{}); !errors.Is(err, ErrBadInput) {
		t.Errorf("missing path: %v", err)
	}
}

func TestBundleStreamingAndChange(t *testing.T) {
	dir := t.TempDir()
	var b strings.Builder
	b.WriteString("{\n \"resourceType\": \"Bundle\", \"type\": \"collection\",\n \"entry\": [\n")
	for i := 0; i < 3000; i++ {
		if i > 0 {
			b.WriteString(",\n")
		}
		b.WriteString(`  { "fullUrl": "urn:uuid:x", "resource": { "resourceType": "Patient", "id": "p` + strings.Repeat("1", 1+i%40) + `", "birthDate": "2000-01-01" } }`)
	}
	b.WriteString("\n ]\n}\n")
	p := writeFile(t, dir, "big.json", []byte(b.String()))
	w, _ := NewWalker([]string{p}, WalkOptions{})
	it, err := w.Next()
	if err != nil || it.Kind != KindBundle {
		t.Fatalf("item %v err %v", it, err)
	}
	n := 0
	if err := it.Bundle.Entries(func(e *Entry) error {
		if e.Index != n || e.FullURL != "urn:uuid:x" || !json.Valid(e.Resource) {
			t.Fatalf("entry %d: %+v", n, e)
		}
		n++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n != 3000 {
		t.Fatalf("%d entries", n)
	}
	var out bytes.Buffer
	if _, err := it.Bundle.WriteTo(&out); err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	json.Compact(&want, []byte(b.String()))
	if !bytes.Equal(out.Bytes(), want.Bytes()) {
		t.Fatal("WriteTo differs from json.Compact")
	}
	// The file changes between validation and writing: WriteTo refuses.
	os.WriteFile(p, []byte(strings.Replace(b.String(), "2000-01-01", "2000-01-02", 1)), 0o644)
	if _, err := it.Bundle.WriteTo(io.Discard); !errors.Is(err, ErrBadInput) || !strings.Contains(err.Error(), "changed") {
		t.Fatalf("changed file: %v", err)
	}
}

func TestCompactMatchesStdlib(t *testing.T) {
	for _, s := range []string{
		`{}`, `[]`, ` [ 1 , 2.50 , -0 , 1e5 , 1E-7 , true , false , null ] `, `"\ud83d\ude00 \u2028"`,
		`{"a":{"b":[{"c":"d\n"}]}}`, "{\"k\":\t\"v\"\r\n}", `"<&>"`, `0`, `-12.0e+3`,
	} {
		got, err := compactValue(nil, []byte(s), 100)
		var want bytes.Buffer
		if werr := json.Compact(&want, []byte(s)); werr != nil || err != nil {
			t.Fatalf("%q: err %v, stdlib %v", s, err, werr)
		}
		if string(got) != want.String() {
			t.Errorf("%q: got %q want %q", s, got, want.String())
		}
	}
	for _, s := range []string{`{`, `[1,]`, `{"a"}`, `01`, `1.`, `-`, `"\x"`, "\"\x01\"", `tru`, `{"a":1,}`, `1 2`, `.5`, `1e`, `[1}`, ``} {
		if _, err := compactValue(nil, []byte(s), 100); err == nil {
			t.Errorf("%q: accepted invalid JSON", s)
		}
	}
}
