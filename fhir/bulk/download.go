package bulk

import (
	"bufio"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// ErrCountMismatch is wrapped by a *CountMismatchError.
var ErrCountMismatch = errors.New("line count differs from manifest count")

// CountResult is what the line counter saw in one file once it was read
// to its end. Lines counts non-blank lines (blank lines are legal NDJSON
// padding); Bytes counts decompressed bytes.
type CountResult struct {
	Expected    int64 `json:"expected,omitempty"`
	HasExpected bool  `json:"hasExpected,omitempty"`
	Lines       int64 `json:"lines"`
	Bytes       int64 `json:"bytes"`
}

// Mismatch reports whether the manifest gave a count and the file's
// non-blank lines differ from it.
func (r CountResult) Mismatch() bool { return r.HasExpected && r.Expected != r.Lines }

// CountMismatchError is a file whose line count differs from the
// manifest's count. The spec calls count a hint, so this is returned only
// under Options.StrictCounts; otherwise it is reported in the Report.
type CountMismatchError struct {
	URL      string // redacted
	Expected int64
	Lines    int64
}

func (e *CountMismatchError) Error() string {
	return fmt.Sprintf("bulk: %s: manifest count is %d but the file has %d non-blank lines", e.URL, e.Expected, e.Lines)
}

func (e *CountMismatchError) Unwrap() error { return ErrCountMismatch }

// FileReader streams one file's NDJSON, decompressed, counting lines. Read
// errors from the network wrap the file's redacted URL.
type FileReader struct {
	file  File
	body  io.ReadCloser
	r     io.Reader
	limit int64

	res     CountResult
	inLine  bool // the current line has a non-blank byte
	atEOF   bool
	readErr error
}

// File returns the manifest entry being read.
func (fr *FileReader) File() File { return fr.file }

// Read reads decompressed bytes.
func (fr *FileReader) Read(p []byte) (int, error) {
	if fr.readErr != nil {
		return 0, fr.readErr
	}
	n, err := fr.r.Read(p)
	fr.count(p[:n])
	if fr.limit > 0 && fr.res.Bytes > fr.limit {
		fr.readErr = fmt.Errorf("bulk: download %s: more than %d bytes (MaxFileBytes): %w", redact(fr.file.URL), fr.limit, ErrLimit)
		return n, fr.readErr
	}
	switch {
	case err == io.EOF:
		if fr.inLine {
			fr.res.Lines++ // last line without a newline
			fr.inLine = false
		}
		fr.atEOF = true
		fr.readErr = io.EOF
	case err != nil:
		fr.readErr = &bodyError{url: redact(fr.file.URL), err: scrubURLError(err)}
		return n, fr.readErr
	}
	return n, err
}

func (fr *FileReader) count(b []byte) {
	fr.res.Bytes += int64(len(b))
	for _, c := range b {
		switch c {
		case '\n':
			if fr.inLine {
				fr.res.Lines++
			}
			fr.inLine = false
		case ' ', '\t', '\r':
		default:
			fr.inLine = true
		}
	}
}

// Close releases the connection.
func (fr *FileReader) Close() error { return fr.body.Close() }

// Result returns the count once the file was read to EOF; ok is false
// before that.
func (fr *FileReader) Result() (res CountResult, ok bool) { return fr.res, fr.atEOF }

// bodyError is a failure while reading a response body: the connection
// broke mid-file. Download restarts the file from the beginning.
type bodyError struct {
	url string
	err error
}

func (e *bodyError) Error() string { return fmt.Sprintf("bulk: download %s: %v", e.url, e.err) }
func (e *bodyError) Unwrap() error { return e.err }

// Open starts downloading one file. The bearer token is sent only when
// the file's manifest said requiresAccessToken: true; capability URLs
// never see it. The body is decompressed when the server sends
// Content-Encoding: gzip or plain gzip bytes (.ndjson.gz files). 429, 5xx
// and network errors before the body are retried; 404 and 410 fail with
// ErrExpired. The caller must Close the reader.
func (c *Client) Open(ctx context.Context, f File) (*FileReader, error) {
	if err := checkFileURL(f.URL); err != nil {
		return nil, fmt.Errorf("bulk: download: %v", err)
	}
	k := call{
		op: "download", method: http.MethodGet, url: f.URL, auth: f.RequiresAccessToken,
		accept: "application/fhir+ndjson, application/ndjson;q=0.9, */*;q=0.1",
		header: http.Header{"Accept-Encoding": {"gzip"}},
	}
	resp, err := c.exchange(ctx, k, c.o.Clock.Now().Add(c.o.MaxWait), func(s int) bool { return s == http.StatusOK })
	if err != nil {
		return nil, err
	}
	fr := &FileReader{file: f, body: resp.Body, limit: c.o.MaxFileBytes}
	fr.res.Expected, fr.res.HasExpected = f.Count, f.HasCount
	br := bufio.NewReader(resp.Body)
	gz := strings.EqualFold(strings.TrimSpace(resp.Header.Get("Content-Encoding")), "gzip")
	if !gz {
		if magic, _ := br.Peek(2); len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b {
			gz = true
		}
	}
	fr.r = br
	if gz {
		zr, err := gzip.NewReader(br)
		if err != nil {
			resp.Body.Close()
			return nil, &bodyError{url: redact(f.URL), err: fmt.Errorf("bad gzip stream: %w", err)}
		}
		fr.r = zr
	}
	return fr, nil
}

// Sink receives downloaded files.
type Sink interface {
	// Store consumes r, the decompressed NDJSON of f, to its end, and
	// returns nil once everything is safely stored. It must return errors
	// from r (wrapped or not) so the client can tell a broken download
	// from a storage failure. Store may be called again for the same file
	// when a broken download is restarted from its start; each call must
	// replace whatever an earlier call for f stored.
	Store(ctx context.Context, f File, r io.Reader) error
}

// SinkFunc adapts a function to Sink.
type SinkFunc func(ctx context.Context, f File, r io.Reader) error

// Store calls fn.
func (fn SinkFunc) Store(ctx context.Context, f File, r io.Reader) error { return fn(ctx, f, r) }

var _ Sink = SinkFunc(nil)

// Report is the outcome of Download, one entry per manifest file in
// manifest order (output, deleted, error).
type Report struct {
	Files []FileResult
}

// FileResult is one file of a Report.
type FileResult struct {
	File    File
	Skipped bool // already done according to the State
	Count   CountResult
}

// Mismatches returns the files whose line count differs from the
// manifest's count.
func (r *Report) Mismatches() []FileResult {
	var out []FileResult
	for _, f := range r.Files {
		if !f.Skipped && f.Count.Mismatch() {
			out = append(out, f)
		}
	}
	return out
}

// Download stores every file of m that st does not mark as done through
// sink, one at a time, and records each in st; after each file it calls
// checkpoint (if not nil) so the caller can persist st. A download that
// breaks mid-file is restarted from the start (servers need not support
// Range), within MaxRetries. It stops at the first error, which names the
// file; files already stored stay recorded in st.
func (c *Client) Download(ctx context.Context, m *Manifest, st *State, sink Sink, checkpoint func(*State) error) (*Report, error) {
	if err := st.check(); err != nil {
		return nil, err
	}
	rep := &Report{}
	for _, f := range m.Files() {
		if st.Done(f.URL) {
			rep.Files = append(rep.Files, FileResult{File: f, Skipped: true})
			continue
		}
		res, err := c.downloadOne(ctx, f, sink)
		if err != nil {
			return rep, err
		}
		rep.Files = append(rep.Files, FileResult{File: f, Count: res})
		if c.o.StrictCounts && res.Mismatch() {
			return rep, &CountMismatchError{URL: redact(f.URL), Expected: res.Expected, Lines: res.Lines}
		}
		st.MarkDone(f, res)
		if checkpoint != nil {
			if err := checkpoint(st); err != nil {
				return rep, fmt.Errorf("bulk: checkpoint after %s: %w", redact(f.URL), err)
			}
		}
	}
	return rep, nil
}

func (c *Client) downloadOne(ctx context.Context, f File, sink Sink) (CountResult, error) {
	for attempt := 1; ; attempt++ {
		fr, err := c.Open(ctx, f)
		if err != nil {
			var be *bodyError
			if !errors.As(err, &be) || attempt >= c.o.MaxRetries {
				return CountResult{}, err
			}
			if err := c.restartWait(ctx, f, attempt, err); err != nil {
				return CountResult{}, err
			}
			continue
		}
		err = sink.Store(ctx, f, fr)
		fr.Close()
		if err == nil {
			res, ok := fr.Result()
			if !ok {
				return CountResult{}, fmt.Errorf("bulk: %s: the sink returned before the end of the file", redact(f.URL))
			}
			return res, nil
		}
		var be *bodyError
		if !errors.As(err, &be) || ctx.Err() != nil || attempt >= c.o.MaxRetries {
			return CountResult{}, fmt.Errorf("bulk: storing %s %s: %w", f.Kind, redact(f.URL), err)
		}
		if err := c.restartWait(ctx, f, attempt, err); err != nil {
			return CountResult{}, err
		}
	}
}

func (c *Client) restartWait(ctx context.Context, f File, attempt int, cause error) error {
	wait := max(min(time.Second<<min(attempt-1, 20), c.o.MaxBackoff), c.o.MinPollInterval)
	c.event(Event{Op: "download", URL: redact(f.URL), Wait: wait, Attempt: attempt, Err: cause})
	return c.sleep(ctx, wait, c.o.Clock.Now().Add(c.o.MaxWait), "download", f.URL)
}
