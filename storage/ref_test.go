package storage

import (
	"errors"
	"strings"
	"testing"
)

func TestParseRef(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Ref
		err  string
	}{
		{in: "clouda:bucket", want: Ref{Store: "clouda", Bucket: "bucket"}},
		{in: "clouda:bucket/", want: Ref{Store: "clouda", Bucket: "bucket"}},
		{in: "clouda:bucket/exports/2026", want: Ref{Store: "clouda", Bucket: "bucket", Prefix: "exports/2026/"}},
		{in: "Cloud_B-2:my.bucket/p/", want: Ref{Store: "Cloud_B-2", Bucket: "my.bucket", Prefix: "p/"}},
		{in: "./exports", want: Ref{Path: "./exports"}},
		{in: "/srv/a:b", want: Ref{Path: "/srv/a:b"}},
		{in: "./a:b", want: Ref{Path: "./a:b"}},
		{in: "exports", want: Ref{Path: "exports"}},
		{in: "dir/with:colon", want: Ref{Path: "dir/with:colon"}},
		{in: "", err: "empty reference"},
		{in: "::bad::", err: "store name"},
		{in: "1abc:bucket", err: "store name"},
		{in: "clouda:", err: "names no bucket"},
		{in: "clouda:/x", err: "names no bucket"},
		{in: "clouda:Bucket", err: "lower-case"},
		{in: "clouda:b/a//c", err: "empty path segment"},
		{in: "clouda:b\x00", err: "UTF-8"},
	} {
		got, err := ParseRef(tc.in)
		if tc.err != "" {
			if !errors.Is(err, ErrBadRef) || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("ParseRef(%q) = %v, want ErrBadRef containing %q", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("ParseRef(%q) = %+v, %v; want %+v", tc.in, got, err, tc.want)
		}
	}
}

// FuzzParseRef: never panics; an accepted store reference prints back to a
// reference that parses to the same thing.
func FuzzParseRef(f *testing.F) {
	for _, s := range []string{"clouda:bucket/prefix", "./x", "::bad::", "a:b//c", "a:b/ü/🩺", "/abs:x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRef(s)
		if err != nil {
			if !errors.Is(err, ErrBadRef) {
				t.Fatalf("error not ErrBadRef: %v", err)
			}
			return
		}
		if r.IsLocal() {
			if r.Path != s {
				t.Fatalf("path %q from %q", r.Path, s)
			}
			return
		}
		again, err := ParseRef(r.String())
		if err != nil || again != r {
			t.Fatalf("%q -> %+v -> %q -> %+v, %v", s, r, r.String(), again, err)
		}
	})
}
