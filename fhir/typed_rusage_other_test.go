//go:build !unix

package fhir_test

import "time"

func processCPU() time.Duration { return 0 }
