package fhir

import "errors"

// ErrBadInput is wrapped by every error that means the input itself is
// unusable: not JSON, not FHIR R4, or a resource that fails validation under
// the fail policy. The CLI maps it to exit code 2.
var ErrBadInput = errors.New("bad FHIR input")
