package export

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/ehrport/ehrport/fhir"
	"github.com/ehrport/ehrport/fhir/bulk"
)

// BulkSource reads the input from a FHIR server's $export instead of files.
type BulkSource struct {
	Client  *bulk.Client
	Request bulk.Request
	// State, when set, resumes that server job (no new kick-off). Every
	// file is downloaded again: an export is written as a whole.
	State *bulk.State
	// Save persists the State after the kick-off and after each file, so
	// an interrupted export can be resumed (mode 0600: it holds the status
	// URL, which grants access to the data).
	Save func(*bulk.State) error
	// KeepJob leaves the job on the server after a successful export;
	// by default it is deleted so the server frees the files.
	KeepJob bool
}

// walkBulk runs the server's export through the Checker: each file's lines
// are compacted, validated (on this goroutine) and handled in order.
func (e *exporter) walkBulk(c *fhir.Checker) error {
	b := e.o.Bulk
	ctx := e.ctx
	save := b.Save
	if save == nil {
		save = func(*bulk.State) error { return nil }
	}
	st := b.State
	var m *bulk.Manifest
	var err error
	if st != nil {
		st.Files = nil // re-download everything: this export is new
		m, err = b.Client.Resume(ctx, st)
	} else {
		if st, err = b.Client.Kickoff(ctx, b.Request); err != nil {
			return err
		}
		if err = save(st); err != nil {
			return err
		}
		m, err = b.Client.Wait(ctx, st)
	}
	if err != nil {
		return err
	}
	e.bulkState = st
	e.txTime = m.TransactionTime // the server's snapshot time: the next --since
	if err := save(st); err != nil {
		return err
	}
	for _, w := range m.Warnings {
		e.o.Log.Warn("bulk manifest: " + w)
	}
	if n := len(m.Errors); n > 0 {
		e.o.Log.Warn("the server reported errors in its export (OperationOutcome files, not exported)", "files", n)
	}
	if n := len(m.Deleted); n > 0 {
		e.o.Log.Warn("the server listed deleted resources (not exported)", "files", n)
	}
	only := &bulk.Manifest{Version: m.Version, TransactionTime: m.TransactionTime, RequiresAccessToken: m.RequiresAccessToken, Output: m.Output}
	idx := 0
	sink := bulk.SinkFunc(func(ctx context.Context, f bulk.File, r io.Reader) error {
		idx++
		// Never a URL in a position: capability URLs grant access.
		name := fmt.Sprintf("bulk output %d (%s)", idx, f.Type)
		return e.feedNDJSON(c, name, r)
	})
	rep, err := b.Client.Download(ctx, only, st, sink, save)
	if err != nil {
		return err
	}
	for _, fr := range rep.Files {
		if fr.Count.Mismatch() {
			e.o.Log.Warn("bulk file line count differs from the manifest's count (a hint only)", "type", fr.File.Type, "lines", fr.Count.Lines, "count", fr.Count.Expected)
		}
	}
	return nil
}

// feedNDJSON validates and handles every non-blank line of r.
func (e *exporter) feedNDJSON(c *fhir.Checker, name string, r io.Reader) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 1<<20), fhir.DefaultMaxResourceBytes+1)
	var buf bytes.Buffer
	var line int64
	for sc.Scan() {
		line++
		raw := bytes.TrimSpace(sc.Bytes())
		if len(raw) == 0 {
			continue
		}
		if line == 1 {
			raw = bytes.TrimPrefix(raw, []byte("\xef\xbb\xbf"))
		}
		it := fhir.Item{Kind: fhir.KindResource, Pos: fhir.Position{File: name, Line: line, Entry: -1}}
		buf.Reset()
		if err := json.Compact(&buf, raw); err != nil {
			it.Kind = fhir.KindInvalid
			it.Raw = raw
			it.Err = fmt.Errorf("%w: %s: not JSON: %v", fhir.ErrBadInput, it.Pos, err)
		} else {
			it.Raw = buf.Bytes()
		}
		act, err := c.Item(&it)
		if err != nil {
			return err
		}
		if err := e.handle(&it, act); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("%w: %s:%d: a line is longer than %d bytes", fhir.ErrBadInput, name, line+1, fhir.DefaultMaxResourceBytes)
		}
		return err
	}
	return nil
}
