package storage

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"unicode/utf8"
)

// ErrBadRef marks a store reference or object key that cannot be used as
// written. The CLI maps it to exit code 2 (usage or bad input).
var ErrBadRef = errors.New("malformed store reference")

// Ref is a parsed store reference: either NAME:bucket[/prefix] for a store
// named in the config, or a plain folder path.
type Ref struct {
	Store  string // the store's name; empty for a folder
	Bucket string
	Prefix string // "" or ends with '/'
	Path   string // the folder, when Store is empty
}

// IsLocal reports whether the reference is a plain folder.
func (r Ref) IsLocal() bool { return r.Store == "" }

func (r Ref) String() string {
	if r.IsLocal() {
		return r.Path
	}
	return r.Store + ":" + r.Bucket + "/" + r.Prefix
}

var (
	// Compiled on first use: package init runs before every command.
	storeNameRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,63}$`) })
	// Bucket names are checked loosely here (characters only); the server
	// has the last word on length and form, and answers with a clear error.
	bucketRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z0-9][a-z0-9.\-_]*$`) })
)

// ParseRef parses a store reference.
//
// A reference whose first ':' comes before any '/' is NAME:bucket[/prefix];
// anything else is a folder. A folder whose name contains ':' is written
// with a leading "./". A reference that looks like NAME:... but is not
// well-formed is an error rather than a folder, so that a typo never
// silently writes patient data into a local folder named after it.
func ParseRef(s string) (Ref, error) {
	if s == "" {
		return Ref{}, fmt.Errorf("%w: empty reference; write NAME:bucket/prefix for a store or a folder path", ErrBadRef)
	}
	if !utf8.ValidString(s) || strings.ContainsRune(s, 0) {
		return Ref{}, fmt.Errorf("%w: %q is not valid UTF-8 text", ErrBadRef, s)
	}
	colon := strings.IndexByte(s, ':')
	slash := strings.IndexByte(s, '/')
	if colon < 0 || (slash >= 0 && slash < colon) {
		return Ref{Path: s}, nil
	}
	name, rest := s[:colon], s[colon+1:]
	if !storeNameRE().MatchString(name) {
		return Ref{}, fmt.Errorf("%w: %q: a store name starts with a letter and has only letters, digits, '-' and '_' (write ./%s for a folder)", ErrBadRef, s, s)
	}
	bucket, prefix, _ := strings.Cut(rest, "/")
	if bucket == "" {
		return Ref{}, fmt.Errorf("%w: %q names no bucket; write %s:BUCKET or %s:BUCKET/PREFIX", ErrBadRef, s, name, name)
	}
	if !bucketRE().MatchString(bucket) {
		return Ref{}, fmt.Errorf("%w: %q: bucket %q may hold only lower-case letters, digits, '.', '-' and '_'", ErrBadRef, s, bucket)
	}
	prefix = strings.TrimLeft(prefix, "/")
	if prefix != "" {
		if err := checkKey(prefix); err != nil {
			return Ref{}, fmt.Errorf("%w: %q: prefix: %v", ErrBadRef, s, err)
		}
		if !strings.HasSuffix(prefix, "/") {
			prefix += "/"
		}
	}
	return Ref{Store: name, Bucket: bucket, Prefix: prefix}, nil
}

// maxKeyBytes is S3's limit on object key length.
const maxKeyBytes = 1024

// checkKey enforces the keys every store accepts alike: non-empty UTF-8,
// no NUL, no leading '/', no empty segments, at most 1,024 bytes. Keeping
// to the common subset is what lets an export move between vendors.
func checkKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("%w: empty object key", ErrBadRef)
	case len(key) > maxKeyBytes:
		return fmt.Errorf("%w: object key is %d bytes; the limit is %d", ErrBadRef, len(key), maxKeyBytes)
	case !utf8.ValidString(key):
		return fmt.Errorf("%w: object key %q is not valid UTF-8", ErrBadRef, key)
	case strings.ContainsRune(key, 0):
		return fmt.Errorf("%w: object key %q contains NUL", ErrBadRef, key)
	case strings.HasPrefix(key, "/"):
		return fmt.Errorf("%w: object key %q starts with '/'", ErrBadRef, key)
	case strings.Contains(key, "//"):
		return fmt.Errorf("%w: object key %q has an empty path segment", ErrBadRef, key)
	}
	return nil
}
