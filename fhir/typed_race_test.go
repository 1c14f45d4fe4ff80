//go:build race

package fhir

// raceEnabled shortens the slowest differential loops under -race.
const raceEnabled = true
