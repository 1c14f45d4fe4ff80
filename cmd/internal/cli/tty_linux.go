package cli

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// readSecret shows prompt on tty and reads one line without echo. Echo is
// turned off before the prompt appears, so nothing typed in answer to it is
// ever shown (term.ReadPassword prints nothing itself, so a caller must print
// the prompt first, leaving a moment in which typing still echoes).
func readSecret(tty *os.File, prompt string) ([]byte, error) {
	fd := int(tty.Fd())
	old, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if err != nil {
		return nil, err
	}
	quiet := *old
	quiet.Lflag &^= unix.ECHO
	quiet.Lflag |= unix.ICANON | unix.ISIG
	quiet.Iflag |= unix.ICRNL
	if err := unix.IoctlSetTermios(fd, unix.TCSETS, &quiet); err != nil {
		return nil, err
	}
	defer unix.IoctlSetTermios(fd, unix.TCSETS, old)
	fmt.Fprint(tty, prompt)
	defer fmt.Fprintln(tty)
	var line []byte
	var b [1]byte
	for {
		n, err := tty.Read(b[:])
		if n == 1 {
			if b[0] == '\n' {
				return line, nil
			}
			line = append(line, b[0])
			continue
		}
		if err != nil {
			if len(line) > 0 {
				return line, nil
			}
			return nil, err
		}
	}
}
