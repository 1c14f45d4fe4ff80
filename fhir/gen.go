package fhir

//go:generate go run ./internal/gen/registry -o internal/gen/resources_gen.go
//go:generate go run ./internal/gen -o r4_gen.go -typed typed_gen.go

// elem describes one top-level element of an R4 resource type.
type elem uint8

const (
	// elemArray marks an element with cardinality ..*: its JSON value is an array.
	elemArray elem = 1 << iota
)
