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

// defaultGCPercent is the collector's headroom unless GOGC says otherwise.
// ehrport's live heap is small and bounded (about 34 MiB exporting a
// million resources), so the default 100% headroom is most of its RSS:
// at 50% a 1M-resource export peaks at about 80 MB instead of 100 MB for
// some 3% more CPU (docs/export.md, Memory).
const defaultGCPercent = 50

func main() {
	if os.Getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(defaultMemoryLimit)
	}
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGCPercent)
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
