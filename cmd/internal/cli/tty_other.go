//go:build !linux

package cli

import (
	"fmt"
	"os"

	"golang.org/x/term"
)

// readSecret shows prompt on tty and reads one line without echo. Outside
// Linux echo goes off just after the prompt is shown.
func readSecret(tty *os.File, prompt string) ([]byte, error) {
	fmt.Fprint(tty, prompt)
	defer fmt.Fprintln(tty)
	return term.ReadPassword(int(tty.Fd()))
}
