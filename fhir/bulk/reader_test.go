package bulk

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func TestLineCounter(t *testing.T) {
	for _, tc := range []struct {
		in    string
		lines int64
	}{
		{"", 0},
		{"\n\n  \n\t\r\n", 0},
		{`{"a":1}`, 1},
		{"{\"a\":1}\n", 1},
		{"{}\r\n{}\r\n{}", 3},
		{"{}\n\n{}\n   \n{}\n\n", 3},
		{" x ", 1},
	} {
		for _, wrap := range []func(io.Reader) io.Reader{
			func(r io.Reader) io.Reader { return r },
			iotest.OneByteReader,
			iotest.HalfReader,
		} {
			fr := &FileReader{r: wrap(strings.NewReader(tc.in)), body: io.NopCloser(nil)}
			fr.res.Expected, fr.res.HasExpected = tc.lines, true
			if _, ok := fr.Result(); ok {
				t.Fatal("result before EOF")
			}
			got, err := io.ReadAll(fr)
			if err != nil || string(got) != tc.in {
				t.Fatalf("%q: read %q, %v", tc.in, got, err)
			}
			res, ok := fr.Result()
			if !ok || res.Lines != tc.lines || res.Bytes != int64(len(tc.in)) || res.Mismatch() {
				t.Errorf("%q: result %+v ok=%v, want %d lines", tc.in, res, ok, tc.lines)
			}
		}
	}
	// iotest.TestReader checks the Read contract itself.
	data := bytes.Repeat([]byte("{\"resourceType\":\"Patient\"}\n"), 500)
	if err := iotest.TestReader(&FileReader{r: bytes.NewReader(data), body: io.NopCloser(nil)}, data); err != nil {
		t.Fatal(err)
	}
}

func TestFileReaderLimit(t *testing.T) {
	fr := &FileReader{r: strings.NewReader(strings.Repeat("{}\n", 100)), body: io.NopCloser(nil), limit: 10,
		file: File{URL: "https://x.test/f.ndjson?sig=abc"}}
	_, err := io.ReadAll(fr)
	if err == nil || !strings.Contains(err.Error(), "MaxFileBytes") || strings.Contains(err.Error(), "sig=abc") {
		t.Fatalf("err = %v", err)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"0":   0,
		"120": 2 * time.Minute,
		now.Add(90 * time.Second).Format(http.TimeFormat): 90 * time.Second,
		now.Add(-time.Hour).Format(http.TimeFormat):       0,
		"Friday, 02-Jan-26 03:05:05 GMT":                  time.Minute, // RFC 850
	} {
		got, ok := parseRetryAfter(http.Header{"Retry-After": {v}}, now)
		if !ok || got != want {
			t.Errorf("%q: %v %v, want %v", v, got, ok, want)
		}
	}
	for _, v := range []string{"", "-5", "soon", "1.5"} {
		if _, ok := parseRetryAfter(http.Header{"Retry-After": {v}}, now); ok {
			t.Errorf("%q accepted", v)
		}
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"https://user:pw@x.test/a/b?token=1#f": "https://x.test/a/b",
		"https://x.test/fhir/$export":          "https://x.test/fhir/$export",
		"::bad?q":                              "::bad",
	} {
		if got := redact(in); got != want {
			t.Errorf("redact(%q) = %q, want %q", in, got, want)
		}
	}
}
