// Package fhirload loads restored FHIR R4 NDJSON into a FHIR server over its
// REST API, and then checks by search that the server holds what was sent.
//
// Resources go in as transaction Bundles of PUT entries (PUT [base]/Type/id
// keeps every id, so references between resources stay valid and a rerun
// replaces instead of duplicating). A resource without an id is sent as a
// POST entry: the server assigns the id. A Bundle that the export kept
// whole is one resource like any other (PUT Bundle/id): it is stored as it
// was exported, and its entries are not loaded one by one.
//
// Every request is retried with exponential back-off (or the server's
// Retry-After) on 408, 429, any 5xx and transport errors; PUT makes that
// safe. A transaction the server refuses (another 4xx, or an entry whose
// status is not 2xx) fails the load with the server's diagnostics.
//
// After the load, Counts asks GET [base]/Type?_summary=count per type and
// CheckCounts compares the totals with the export's counts: the server
// must hold exactly the export's resources of each type, so load into a
// server (or a tenant) that holds no other resources of those types.
//
// Errors carry one of the sentinels below, so the CLI maps them to exit
// codes. Messages name the base URL without its query or credentials; the
// bearer token never appears.
package fhirload

import "errors"

var (
	// ErrBadURL: the base URL cannot be used (not http(s), credentials or
	// a query in it, plain http to a host that is not loopback).
	ErrBadURL = errors.New("bad FHIR server URL")
	// ErrNotFHIR: the URL answers, but not as a FHIR R4 server (no
	// CapabilityStatement at [base]/metadata, or another FHIR version).
	ErrNotFHIR = errors.New("not a FHIR R4 server")
	// ErrUnavailable: the server could not be reached, or kept failing
	// (transport errors, 408, 429, 5xx) after every retry.
	ErrUnavailable = errors.New("FHIR server unavailable")
	// ErrUnauthorized: the server refused the credentials (401, 403).
	ErrUnauthorized = errors.New("FHIR server refused the credentials")
	// ErrRefused: the server refused a transaction (another 4xx, or an
	// entry that did not succeed). Retrying the same data will not help.
	ErrRefused = errors.New("FHIR server refused the data")
	// ErrCountMismatch: after the load, the server's counts per type
	// differ from the export's.
	ErrCountMismatch = errors.New("counts at the FHIR server differ from the export")
)
