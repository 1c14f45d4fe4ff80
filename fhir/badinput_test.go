package fhir

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
)

// Compacting a buffer into itself gives exactly json.Compact: the long-line
// path of the NDJSON reader relies on it to hold a line only once.
func TestCompactInPlace(t *testing.T) {
	for _, in := range []string{
		pat,
		"{ \"resourceType\" : \"Patient\" ,\n \"id\":\"p1\", \"a\" : [ 1 , 2.50 , -0.0e+1 , true , null , { } , [ ] ] }\r\n",
		`{"s":"\u00e9\/\"x \\ \t","n":1E+2}   `,
		"  \t[ \"x\" ,\"y\",  {\"k\" :\"v\"}]  ",
		`{"resourceType":"Binary","data":"` + strings.Repeat("QUJD", 40_000) + `"}`,
	} {
		var want bytes.Buffer
		if err := json.Compact(&want, []byte(in)); err != nil {
			t.Fatal(err)
		}
		b := []byte(in)
		got, err := compactValue(b[:0], b, 64)
		if err != nil {
			t.Fatalf("%.40q: %v", in, err)
		}
		if !bytes.Equal(got, want.Bytes()) {
			t.Errorf("in place: %.60q\nwant       %.60q", got, want.Bytes())
		}
	}
}

// A line longer than the read buffer is handed over without a copy, and
// Checker.Run keeps it as is (owned), so memory holds it once.
func TestLongLineOwned(t *testing.T) {
	long := `{"resourceType":"Binary","id":"b","contentType":"text/plain","data":"` + strings.Repeat("QUJD", 100_000) + `"}`
	p := writeFile(t, t.TempDir(), "a.ndjson", []byte(pat+"\n"+long+"\n"+long+"\n"))
	w, err := NewWalker([]string{p}, WalkOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var owned []bool
	var raws [][]byte
	for {
		it, err := w.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		owned = append(owned, it.owned)
		raws = append(raws, it.Raw)
	}
	if len(owned) != 3 || owned[0] || !owned[1] || !owned[2] {
		t.Fatalf("owned %v, want [false true true]", owned)
	}
	if string(raws[1]) != long || string(raws[2]) != long {
		t.Fatal("long lines changed")
	}
	if &raws[1][0] == &raws[2][0] {
		t.Fatal("an owned buffer was reused for the next line")
	}
}

// allocated returns the bytes allocated while f runs.
func allocated(f func()) uint64 {
	var a, b runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&a)
	f()
	runtime.ReadMemStats(&b)
	return b.TotalAlloc - a.TotalAlloc
}

// Reading a long line costs about twice the line in allocations (the chunks
// and the one exact copy), not the ~6x of growing one slice and compacting
// into a second; a line over the cap costs at most the cap.
func TestLongLineMemory(t *testing.T) {
	const size = 16 << 20
	line := []byte(`{"resourceType":"Binary","id":"b","data":"` + strings.Repeat("A", size) + `"}` + "\n")
	read := func(opts WalkOptions) (kinds []Kind) {
		src := newNDJSONSource("m.ndjson", io.NopCloser(bytes.NewReader(line)), &opts)
		for {
			it, err := src.next()
			if err == io.EOF {
				return kinds
			}
			if err != nil {
				t.Fatal(err)
			}
			kinds = append(kinds, it.Kind)
		}
	}
	var kinds []Kind
	n := allocated(func() { kinds = read(WalkOptions{}) })
	if len(kinds) != 1 || kinds[0] != KindResource {
		t.Fatalf("kinds %v", kinds)
	}
	if n > 3*size {
		t.Errorf("reading a %d-byte line allocated %d bytes (%.1fx)", size, n, float64(n)/size)
	}
	n = allocated(func() { kinds = read(WalkOptions{MaxResourceBytes: size / 4}) })
	if len(kinds) != 1 || kinds[0] != KindInvalid {
		t.Fatalf("kinds %v", kinds)
	}
	if n > size/4+size/8 {
		t.Errorf("a line over a %d-byte cap allocated %d bytes", size/4, n)
	}
}

// An invalid long line keeps its original bytes (for quarantine), and the
// finding names the position once.
func TestLongInvalidLine(t *testing.T) {
	bad := `{"resourceType":"Binary","id":"b","data":"` + strings.Repeat("QUJD", 100_000) + `",}`
	p := writeFile(t, t.TempDir(), "bad.ndjson", []byte(pat+"\n"+bad+"\n"))
	got := walkAll(t, WalkOptions{}, p)
	if got.final != nil || len(got.kinds) != 2 || got.kinds[1] != KindInvalid {
		t.Fatalf("%+v", got)
	}
	if got.raws[1] != bad+"\n" {
		t.Fatal("invalid line not kept as read")
	}
	var fs []Finding
	c := NewChecker(CheckerOptions{Report: func(f Finding) { fs = append(fs, f) }})
	it := &Item{Kind: KindInvalid, Pos: got.pos[1], Err: got.errs[1]}
	if _, err := c.Item(it); err == nil {
		t.Fatal("invalid line accepted")
	}
	if len(fs) != 1 {
		t.Fatalf("findings %v", fs)
	}
	s := fs[0].String()
	if strings.Count(s, "bad.ndjson:2") != 1 || strings.Contains(s, ErrBadInput.Error()) {
		t.Errorf("finding %q: want the position once and no error-class prefix", s)
	}
}

// An empty NDJSON file (zero bytes, or a gzip of nothing) is a warning that
// names it: often a download that failed.
func TestEmptyNDJSONWarns(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"empty.ndjson", "empty.ndjson.gz"} {
		p := writeFile(t, dir, name, nil)
		var fs []Finding
		got := walkAll(t, WalkOptions{Report: func(f Finding) { fs = append(fs, f) }}, p)
		if got.final != nil || len(got.kinds) != 0 {
			t.Fatalf("%s: %+v", name, got)
		}
		if len(fs) != 1 || fs[0].Code != CodeEmptyFile || fs[0].Severity != Warning || !strings.Contains(fs[0].String(), name) {
			t.Errorf("%s: findings %v", name, fs)
		}
	}
	p := writeFile(t, dir, "blank.ndjson", []byte("\n\n"))
	var fs []Finding
	walkAll(t, WalkOptions{Report: func(f Finding) { fs = append(fs, f) }}, p)
	for _, f := range fs {
		if f.Code == CodeEmptyFile {
			t.Errorf("blank lines reported as an empty file: %v", f)
		}
	}
}

// UTF-16 input and a byte order mark inside an NDJSON file get errors that
// say what is wrong, not "unexpected 'ÿ'".
func TestEncodingFaultsNamed(t *testing.T) {
	dir := t.TempDir()
	utf16 := []byte{0xff, 0xfe}
	for _, c := range pat + "\n" {
		utf16 = append(utf16, byte(c), 0)
	}
	for _, name := range []string{"u16.ndjson", "u16.json", "u16.ndjson.gz"} {
		p := writeFile(t, dir, name, utf16)
		got := walkAll(t, WalkOptions{}, p)
		if got.final == nil || !errors.Is(got.final, ErrBadInput) || !strings.Contains(got.final.Error(), "UTF-16") || !strings.Contains(got.final.Error(), name) {
			t.Errorf("%s: %+v", name, got)
		}
	}
	p := writeFile(t, dir, "joined.ndjson", []byte("\xEF\xBB\xBF"+pat+"\n\xEF\xBB\xBF"+pat+"\n"))
	got := walkAll(t, WalkOptions{}, p)
	if len(got.kinds) != 2 || got.kinds[0] != KindResource || got.kinds[1] != KindInvalid ||
		!strings.Contains(got.errs[1].Error(), "joined.ndjson:2") || !strings.Contains(got.errs[1].Error(), "byte order mark") {
		t.Fatalf("%+v", got)
	}
}
