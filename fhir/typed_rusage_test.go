//go:build unix

package fhir_test

import (
	"syscall"
	"time"
)

// processCPU is the CPU time (user+system, all threads, GC included) the
// process has used: benchmarks report it per op because on the shared,
// loaded machine wall time swings 2-4x while CPU time barely moves.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
