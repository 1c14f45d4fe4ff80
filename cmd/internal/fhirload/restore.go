package fhirload

import (
	"context"
	"fmt"
	"io"

	"github.com/ehrport/ehrport/cmd/internal/export"
)

// Result is what a restore into a FHIR server did.
type Result struct {
	Server      string                 `json:"server"` // base URL, no query or credentials
	FHIRVersion string                 `json:"fhir_version"`
	Software    string                 `json:"software,omitempty"`
	Restore     *export.RestoreSummary `json:"restore"`
	Load        *Stats                 `json:"load"`
	Check       *CountCheck            `json:"count_check"`
}

// Restore decrypts the export described by ro (its Store, keys and
// Verifier: the signature and every hash are checked as by a folder
// restore) and loads it into the server as it streams: no plaintext is
// written to disk. Then it checks the server's counts per type against the
// export's summary.
//
// The Result is returned with the error whenever there is one to show: on
// ErrCountMismatch it holds the check. A load that fails part way leaves
// what was already accepted at the server; each of those resources came from
// an object proven against the signed manifest, and a rerun replaces them
// (PUT), except resources without an id, which are created again.
func Restore(ctx context.Context, ro export.RestoreOptions, c *Client) (*Result, error) {
	res := &Result{Server: c.BaseURL()}
	var err error
	if res.FHIRVersion, res.Software, err = c.Capabilities(ctx); err != nil {
		return nil, err
	}
	load := c.Start(ctx)
	ro.To = ""
	ro.Sink = func(ctx context.Context, obj export.RestoredObject, r io.Reader) error {
		return load.Add(obj.Path, r)
	}
	sum, rerr := ro.Run(ctx)
	st, lerr := load.Wait()
	res.Restore, res.Load = sum, st
	switch {
	case lerr != nil: // also the cause of rerr, when the load failed first
		return res, fmt.Errorf("loading into %s: %w", c.BaseURL(), lerr)
	case rerr != nil:
		return res, rerr
	}
	res.Check, err = c.CheckCounts(ctx, sum.Counts)
	return res, err
}
