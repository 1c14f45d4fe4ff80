//go:build race

package stream

// The race detector slows the goroutine per segment some twentyfold, so the
// compatibility tests take a sample of the sizes under it.
const raceEnabled = true
