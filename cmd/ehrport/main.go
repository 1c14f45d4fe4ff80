// Command ehrport moves hospital FHIR exports between clouds, encrypted under
// keys only the hospital holds, and writes the evidence that the move was
// safe. See README.md and docs/.
package main

import (
	"context"
	"os"
	"os/signal"
	"runtime/debug"
	"syscall"

	"github.com/ehrport/ehrport/cmd/internal/cli"
)

// defaultMemoryLimit is the Go runtime's soft memory limit unless GOMEMLIMIT
// says otherwise: ehrport's buffers are bounded (parts, segments, index),
// and the limit keeps the collector's headroom from doubling them in RSS.
const defaultMemoryLimit = 200 << 20

func main() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal, restore the default handlers so a second
		// Ctrl-C ends the process at once.
		<-ctx.Done()
		stop()
	}()
	os.Exit(cli.Main(ctx, os.Args, os.Stdout, os.Stderr))
}
