// Package storage is ehrport's view of where exports live: a flat namespace
// of immutable objects in an S3-compatible bucket or a local folder.
//
// Everything above this package speaks only the Store interface, so an export
// written to a folder can be migrated to MinIO and verified at versitygw with
// the same code. The contracts below are what the conformance suite in
// storage/storetest checks against every implementation, real servers
// included.
//
// Integrity is never taken on trust from a server: a Store reports what it
// did, and callers (migrate, verify) prove content with their own SHA-256.
// ETags are informational only; multipart ETags are not content hashes.
package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"strings"
	"time"
)

// Store is one bucket (plus an optional key prefix) or one local folder.
// Keys are relative to that location, use '/' as separator, and are UTF-8.
// Implementations are safe for concurrent use.
type Store interface {
	// Put stores exactly size bytes read from r under key, replacing any
	// object already there. size must be >= 0: callers always know it, and
	// a known size lets implementations choose part sizes and bound memory.
	//
	// If r returns an error, or ends, before size bytes, Put fails and
	// commits nothing: callers rely on this to hold back a body they have
	// not finished checking.
	//
	// The new object becomes visible to Get, Stat and List only once all
	// size bytes are stored (and, for S3, verified by the server against
	// the SHA-256 that Put sends). A Put that fails, is cancelled, or reads
	// a different number of bytes than size returns an error and leaves
	// either the previous object or nothing: never a partial object.
	Put(ctx context.Context, key string, r io.Reader, size int64, opts PutOptions) error

	// Get opens the object for reading. The caller must Close it. It returns
	// an error wrapping ErrNotExist when there is no such object; errors
	// during reading surface from Read.
	Get(ctx context.Context, key string) (io.ReadCloser, error)

	// Stat returns the object's metadata, or an error wrapping ErrNotExist.
	Stat(ctx context.Context, key string) (ObjectInfo, error)

	// List yields every object whose key starts with prefix, in ascending
	// key order, following pagination to the end. Keys are relative to the
	// store's location. It stops at the first error, which it yields.
	List(ctx context.Context, prefix string) iter.Seq2[ObjectInfo, error]

	// Delete removes the object. Deleting a key that does not exist is not
	// an error, so retries and reruns are safe.
	Delete(ctx context.Context, key string) error

	// Location names the store in messages and reports, as a reference the
	// user can type back (NAME:bucket/prefix or a folder path). It never
	// contains credentials.
	Location() string
}

// RangeReader is implemented by stores that can read part of an object, so
// large objects can be fetched in parallel parts.
type RangeReader interface {
	// GetRange reads length bytes starting at offset. It returns an error
	// wrapping ErrNotExist when there is no such object, and fails rather
	// than returning fewer bytes when the object is shorter than the range.
	GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error)
}

// PutOptions refine a Put.
type PutOptions struct {
	// SHA256, when set, is the expected SHA-256 of the content. An S3 store
	// sends it as x-amz-checksum-sha256 and streams without buffering; the
	// server must reject the upload if the bytes differ. When unset, the
	// store computes one itself (buffering at most one part in memory).
	SHA256 []byte
	// Verified says the caller hashes the body itself and makes it fail
	// before its last byte unless it matches SHA256 (storage.Copy does), so
	// the store need not hash the whole object again: an S3 store still
	// sends SHA256 (and per-part checksums) for the server to verify; a
	// folder store does not hash it.
	Verified bool
	// OneRequest asks for the body in one request even when it is larger
	// than the store's part size, up to what one request may carry (S3:
	// MaxSinglePut; larger bodies still go in parts). It takes effect only
	// with SHA256, which the server then verifies over the whole object:
	// the client hashes no part and buffers none, and the stored object
	// reports the whole-object SHA-256 afterwards (Prove compares it).
	OneRequest bool
	// ContentType is recorded where the store supports it.
	ContentType string
}

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	Key     string
	Size    int64
	ModTime time.Time
	// ETag is the server's entity tag, kept for reports only: it is never
	// proof of content.
	ETag string
}

// Sentinel errors for decisions. Every error a Store returns is a *Error
// that wraps the underlying cause, and where it applies one of these.
var (
	// ErrNotExist: the object (or, for bucket operations, the bucket) is not there.
	ErrNotExist = errors.New("does not exist")
	// ErrNoBucket: the bucket itself is not there (also wraps ErrNotExist).
	ErrNoBucket = errors.New("no such bucket")
	// ErrPermission: the store refused our credentials or the operation.
	ErrPermission = errors.New("access denied")
	// ErrUnavailable: the store could not be reached or did not answer.
	ErrUnavailable = errors.New("store unavailable")
	// ErrIntegrity: the store reported, or we detected, bytes that differ
	// from what was sent (a checksum mismatch or a short object).
	ErrIntegrity = errors.New("integrity check failed")
)

// Error records the operation and object that failed. The CLI maps any
// *Error to exit code 4 (storage or network failure).
type Error struct {
	Op       string // "put", "get", "stat", "list", "delete", "connect", ...
	Location string // the store's Location()
	Key      string // may be empty for store-level operations
	Err      error
}

func (e *Error) Error() string {
	where := e.Location
	if e.Key != "" {
		where = joinLocation(e.Location, e.Key)
	}
	return fmt.Sprintf("%s %s: %v", e.Op, where, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// kindError joins a sentinel with the server's or OS's own message, so that
// errors.Is finds the sentinel and the user still reads the original cause.
type kindError struct {
	kind  error
	cause error
}

func (k *kindError) Error() string {
	if k.cause == nil {
		return k.kind.Error()
	}
	return k.cause.Error()
}

func (k *kindError) Unwrap() []error {
	if k.cause == nil {
		return []error{k.kind}
	}
	return []error{k.kind, k.cause}
}

// withKind returns cause marked as kind.
func withKind(kind, cause error) error {
	return &kindError{kind: kind, cause: cause}
}

func joinLocation(loc, key string) string {
	if loc == "" {
		return key
	}
	if loc[len(loc)-1] == '/' || loc[len(loc)-1] == ':' {
		return loc + key
	}
	return loc + "/" + key
}

// Hint returns one line telling the user what to do about err, or "" when
// there is nothing better to say than the error itself.
func Hint(err error) string {
	var se *Error
	switch {
	case errors.Is(err, ErrNoBucket) && errors.As(err, &se) && !strings.Contains(err.Error(), "--create"):
		ref, _, _ := strings.Cut(se.Location, "/")
		return "the bucket does not exist: fix the reference, or create it with: ehrport stores check --create " + ref
	case errors.Is(err, ErrPermission):
		return "check the store's access key and secret key (EHRPORT_STORE_<NAME>_ACCESS_KEY / _SECRET_KEY, or the config file) and the bucket's policy"
	case errors.Is(err, ErrUnavailable):
		return "check that the endpoint is right and the server is up; for TLS errors, set the store's CA bundle (ca_cert / EHRPORT_STORE_<NAME>_CA_CERT)"
	case errors.Is(err, ErrIntegrity):
		return "the bytes stored differ from the bytes sent: do not trust this store's copy; rerun, and report the store if it persists"
	}
	return ""
}

// exactReader yields exactly the size the caller promised. A body that
// ends early fails with io.ErrUnexpectedEOF; a body longer than promised is
// caught by checkExhausted before the object is committed, so neither can
// become a silently truncated object.
type exactReader struct {
	r    io.Reader
	left int64
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.left <= 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	if err == io.EOF && e.left > 0 {
		return n, io.ErrUnexpectedEOF
	}
	if err == io.EOF {
		err = nil
	}
	return n, err
}

// checkExhausted reports an error if the underlying reader still has bytes.
func (e *exactReader) checkExhausted() error {
	if e.left > 0 {
		return io.ErrUnexpectedEOF
	}
	var one [1]byte
	for range 3 { // tolerate a few (0, nil) reads
		n, err := e.r.Read(one[:])
		if n > 0 {
			return errSizeMismatch
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			// The body failed at its very end: the object is not known to
			// be whole, so it must not be committed.
			return err
		}
	}
	return nil
}

var errSizeMismatch = errors.New("reader yielded more bytes than the declared size")
