package crypto

import "io"

// Positional reports whether EncryptFile and DecryptFile read src at
// offsets (stream.SealAt, stream.OpenAt) rather than as a stream.
func Positional(src io.Reader) bool {
	_, _, _, ok := regularFile(src)
	return ok
}
