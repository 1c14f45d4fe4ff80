package bulk

import (
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Error classes. Every failure of a Client wraps at most one of them (or
// fhir.ErrBadInput for malformed manifests and files), so callers decide
// with errors.Is.
var (
	// ErrExportFailed means the server reported that the export itself
	// failed: a non-transient error status on kick-off or while polling.
	// Retrying the same request is unlikely to help.
	ErrExportFailed = errors.New("bulk export failed")

	// ErrExpired means the server no longer knows the status URL or a file
	// URL (404 or 410): the export expired, was deleted, or never existed.
	// Start a new export.
	ErrExpired = errors.New("bulk export expired or unknown")

	// ErrUnauthorized means the server refused the credentials (401 or 403)
	// even after a fresh token was fetched, or a token endpoint refused the
	// client assertion.
	ErrUnauthorized = errors.New("not authorized")

	// ErrLimit means a cap configured in Options was reached: the overall
	// deadline, the number of polls or retries, or the size of a manifest.
	ErrLimit = errors.New("limit reached")
)

// ServerError is an HTTP answer the client could not use. It names the
// operation and the URL (without query or user info) and carries the
// diagnostics of the OperationOutcome in the body, when there was one. It
// unwraps to the error class it belongs to.
type ServerError struct {
	Op          string // "kick-off", "poll", "download", "delete", "token"
	URL         string // redacted: no user info, no query
	StatusCode  int
	Diagnostics string // from the OperationOutcome, or a short body excerpt
	Transient   bool   // the OperationOutcome had an issue with code "transient"
	class       error
	hasOutcome  bool
}

func (e *ServerError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "bulk: %s %s: HTTP %d", e.Op, e.URL, e.StatusCode)
	if e.Diagnostics != "" {
		fmt.Fprintf(&b, ": %s", e.Diagnostics)
	}
	switch e.class {
	case ErrExpired:
		b.WriteString(" (the server no longer has this export or file: it expired or was deleted; start a new export)")
	case ErrUnauthorized:
		b.WriteString(" (the server refused the credentials)")
	}
	return b.String()
}

// Unwrap returns the error class (ErrExportFailed, ErrExpired, ...).
func (e *ServerError) Unwrap() error { return e.class }

// redact drops the user info and the query string of a URL so that errors
// and logs cannot leak credentials that servers sometimes put there.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		if i := strings.IndexAny(raw, "?#"); i >= 0 {
			return raw[:i]
		}
		return raw
	}
	u.User = nil
	u.RawQuery = ""
	u.ForceQuery = false
	u.Fragment = ""
	return u.String()
}
