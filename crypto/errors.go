package crypto

import "errors"

// Error classes. Every failure of this package wraps exactly one of them, so
// callers (and the CLI's exit-code switch) decide with errors.Is and users
// see which of the three things went wrong.
var (
	// ErrCorrupt means the bytes are not what was written: truncated,
	// tampered with, reordered, or bound to another object.
	ErrCorrupt = errors.New("corrupt or tampered")

	// ErrNoMatchingKey means the object may be fine but none of the keys
	// offered can open it: a wrong key, a disabled key or an unknown recipient.
	ErrNoMatchingKey = errors.New("no matching key")

	// ErrPolicy means the object or key material is well-formed but local
	// policy refuses it: unknown version or suite, too many stanzas, a missing
	// required recipient, or a key file others can read.
	ErrPolicy = errors.New("refused by policy")
)
