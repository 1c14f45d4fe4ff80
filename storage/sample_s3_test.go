package storage

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestReadHead(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int64
		want string
	}{{"", 4, ""}, {"ab", 4, "ab"}, {"abcd", 4, "abcd"}, {"abcdef", 4, "abcd"}, {"abc", 0, ""}} {
		got, err := readHead(iotest.OneByteReader(strings.NewReader(tc.in)), tc.n)
		if err != nil || string(got) != tc.want {
			t.Errorf("readHead(%q, %d) = %q, %v; want %q", tc.in, tc.n, got, err, tc.want)
		}
	}
	// A body cut short is an error, not a short object.
	cut := io.MultiReader(bytes.NewReader([]byte("ab")), iotest.ErrReader(io.ErrUnexpectedEOF))
	if _, err := readHead(cut, 4); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("cut body: err = %v, want io.ErrUnexpectedEOF", err)
	}
}
