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
	e.srv = &serverRun{files: ServerFiles{ErrorFiles: len(m.Errors), DeletedFiles: len(m.Deleted), OutcomesBySev: map[string]int64{}},
		findings: map[string]int64{}, seen: map[string]int64{}}
	e.filesAll.Store(int64(len(m.Files())))
	// Never a URL in a position: capability URLs grant access. A file
	// keeps its name when a broken download is restarted.
	names := map[string]string{}
	nth := map[bulk.Kind]int{}
	sink := bulk.SinkFunc(func(ctx context.Context, f bulk.File, r io.Reader) error {
		name, ok := names[f.URL]
		if !ok {
			nth[f.Kind]++
			name = fmt.Sprintf("bulk %s %d", f.Kind, nth[f.Kind])
			if typeRE().MatchString(f.Type) { // server text: only a type name is printed
				name += " (" + f.Type + ")"
			}
			names[f.URL] = name
		}
		switch f.Kind {
		case bulk.KindError:
			return e.feedServer(c, KindServerError, f, name, r)
		case bulk.KindDeleted:
			return e.feedServer(c, KindServerDeleted, f, name, r)
		}
		return e.feedNDJSON(c, name, r)
	})
	rep, err := b.Client.Download(ctx, m, st, sink, save)
	if err != nil {
		return err
	}
	if sf := e.srv.files; sf.ErrorFiles+sf.DeletedFiles > 0 {
		e.o.Log.Info("the server's error and deleted files are in the export under _server/", "error_files", sf.ErrorFiles,
			"outcomes", sf.Outcomes, "deleted_files", sf.DeletedFiles, "deleted_resources", sf.Deleted)
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
	var buf bytes.Buffer
	return eachLine(r, name, e.o.MaxResourceBytes, func(line int64, raw []byte) error {
		it := fhir.Item{Kind: fhir.KindResource, Pos: fhir.Position{File: name, Line: line, Entry: -1}}
		buf.Reset()
		if err := json.Compact(&buf, raw); err != nil {
			it.Kind = fhir.KindInvalid
			it.Raw = raw
			it.Err = fmt.Errorf("%s: %w: not JSON: %v", it.Pos, fhir.ErrBadInput, err)
		} else {
			it.Raw = buf.Bytes()
		}
		act, err := c.Item(&it)
		if err != nil {
			return err
		}
		return e.handle(&it, act)
	})
}

// eachLine calls fn with every non-blank line of r, trimmed, a byte order
// mark at the start dropped, and its 1-based line number. A read error
// other than EOF is returned before the line it cut; a line over max bytes
// is bad input naming name:line.
func eachLine(r io.Reader, name string, max int, fn func(line int64, raw []byte) error) error {
	ew := &errWatch{r: r}
	sc := bufio.NewScanner(ew)
	sc.Buffer(make([]byte, 0, 64<<10), max+1)
	var line int64
	for sc.Scan() {
		if ew.err != nil {
			return ew.err
		}
		line++
		raw := bytes.TrimSpace(sc.Bytes())
		if line == 1 {
			raw = bytes.TrimPrefix(raw, []byte("\xef\xbb\xbf"))
		}
		if len(raw) == 0 {
			continue
		}
		if err := fn(line, raw); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("%w: %s:%d: a line is longer than %d bytes, the cap for one resource; if it is genuine, raise the cap (ehrport export --max-resource-size)", fhir.ErrBadInput, name, line+1, max)
		}
		return err
	}
	return nil
}

// errWatch remembers the first read error other than EOF. bufio.Scanner
// hands out the cut last line of a broken stream before it reports the
// error; the loops check errWatch first, so a broken download (which the
// client restarts) never yields a truncated resource.
type errWatch struct {
	r   io.Reader
	err error
}

func (w *errWatch) Read(p []byte) (int, error) {
	n, err := w.r.Read(p)
	if err != nil && err != io.EOF && w.err == nil {
		w.err = err
	}
	return n, err
}

// Finding codes for the source server's own files (docs/export-format.md
// §5). They are counted in the summary's findings beside the FHIR codes.
const (
	// CodeServerError: an OperationOutcome in the server's error[]/outcome[]
	// whose most severe issue is error or fatal: the server says it could
	// not export something.
	CodeServerError = "server-error"
	// CodeServerWarning and CodeServerInformation: the same for warning
	// and information issues (or none).
	CodeServerWarning     = "server-warning"
	CodeServerInformation = "server-information"
	// CodeBadServerFile: a line of an error or deleted file that is JSON
	// but not what the spec says (an OperationOutcome; a transaction
	// Bundle of DELETEs). It is stored all the same.
	CodeBadServerFile = "bad-server-file"
)

// serverRun collects the server's error and deleted files of one export.
// It is used from the download goroutine only.
type serverRun struct {
	files    ServerFiles
	findings map[string]int64
	// seen counts the non-blank lines of each file already handled: a
	// download restarted from the start skips them, so the server stream
	// holds every line once (data lines come back as identical duplicates,
	// which the Checker stores once; these lines bypass it).
	seen map[string]int64
}

// feedServer stores the lines of one error or deleted file, whitespace
// compacted like data, in its server stream, and reports each
// OperationOutcome as a finding. A line that is not JSON goes through the
// Checker as an invalid item, so --on-invalid decides about it as about
// any NDJSON line.
func (e *exporter) feedServer(c *fhir.Checker, kind string, f bulk.File, name string, r io.Reader) error {
	srv := e.srv
	typ := serverKinds[kind].typ
	skip, restarted := srv.seen[f.URL]
	if !restarted {
		srv.seen[f.URL] = 0
		e.files.Add(1)
	}
	e.lastFile = name
	var buf bytes.Buffer
	var n int64
	return eachLine(r, name, e.o.MaxResourceBytes, func(line int64, raw []byte) error {
		if n++; n <= skip {
			return nil
		}
		if err := e.ctx.Err(); err != nil {
			return context.Cause(e.ctx)
		}
		pos := fhir.Position{File: name, Line: line, Entry: -1}
		buf.Reset()
		if err := json.Compact(&buf, raw); err != nil || raw[0] != '{' {
			if err == nil {
				err = errors.New("a JSON value that is not an object")
			}
			it := fhir.Item{Kind: fhir.KindInvalid, Pos: pos, Raw: raw,
				Err: fmt.Errorf("%s: %w: not a JSON resource: %v", pos, fhir.ErrBadInput, err)}
			act, err := c.Item(&it)
			if err != nil {
				return err
			}
			if err := e.handle(&it, act); err != nil {
				return err
			}
			srv.seen[f.URL] = n
			return nil
		}
		e.checkServerLine(kind, pos, buf.Bytes())
		p, err := e.partFor(kind, typ, int64(buf.Len())+1)
		if err != nil {
			return err
		}
		buf.WriteByte('\n')
		if _, err := p.plain.Write(buf.Bytes()); err != nil {
			return err
		}
		srv.seen[f.URL] = n
		return e.maybeRotate(kind, typ)
	})
}

// checkServerLine counts one stored line of a server file and reports
// what it says: each OperationOutcome is a finding (the server's errors
// must not vanish into an encrypted file), a line that is not what the
// file should hold is a bad-server-file finding.
func (e *exporter) checkServerLine(kind string, pos fhir.Position, line []byte) {
	sf := &e.srv.files
	f := fhir.Finding{Severity: fhir.Warning, Pos: pos}
	switch kind {
	case KindServerError:
		o, ok := bulk.ParseOutcome(line)
		if !ok {
			sf.Malformed++
			f.Code, f.Msg = CodeBadServerFile, "the server's error file holds a line that is not an OperationOutcome; stored as is"
			break
		}
		sf.Outcomes++
		sev := o.Severity
		if sev == "" {
			sev = "information"
		}
		sf.OutcomesBySev[sev]++
		switch sev {
		case "fatal", "error":
			f.Code = CodeServerError
		case "warning":
			f.Code = CodeServerWarning
		default:
			f.Code, f.Severity = CodeServerInformation, fhir.Info
		}
		f.Path = "OperationOutcome.issue"
		f.Msg = "the server reports (" + sev + "): " + o.Diagnostics
	case KindServerDeleted:
		refs, err := bulk.ParseDeletedBundle(pos.String(), line)
		if err != nil {
			sf.Malformed++
			f.Code, f.Msg = CodeBadServerFile, fmt.Sprintf("the server's deleted file holds a line that is not a transaction Bundle of DELETEs; stored as is (%v)", err)
			break
		}
		sf.DeletedBundles++
		sf.Deleted += int64(len(refs))
		return
	}
	e.srv.findings[string(f.Code)]++
	e.reportMu.Lock()
	defer e.reportMu.Unlock()
	if e.o.Findings != nil {
		e.o.Findings(f)
	}
}
