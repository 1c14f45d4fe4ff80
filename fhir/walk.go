package fhir

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// Limits applied when the options leave them zero.
const (
	// DefaultMaxResourceBytes caps one NDJSON line, resource file or Bundle
	// entry. Peak memory is about twice the cap (the line while it grows),
	// so the default keeps an export under 256 MB whatever the input;
	// genuine larger resources need a raised cap (export
	// --max-resource-size).
	DefaultMaxResourceBytes = 64 << 20
	DefaultMaxDepth         = 128  // JSON nesting
	DefaultMaxGzipRatio     = 1000 // decompressed bytes per compressed byte
)

// WalkOptions configures a Walker. The zero value is usable.
type WalkOptions struct {
	// MaxResourceBytes caps one NDJSON line, one single-resource file and
	// one Bundle entry, compacted. A Bundle kept whole has no size cap: it is
	// streamed.
	MaxResourceBytes int
	// MaxDepth caps JSON nesting; deeper input is invalid, never a panic.
	MaxDepth int
	// MaxGzipRatio caps how far a .gz file may expand, in decompressed bytes
	// per compressed byte (at least 64 MiB is always allowed).
	MaxGzipRatio int64
	// SplitBundles yields the entries of collection, transaction, batch and
	// searchset Bundles as top-level resources, when every entry has a
	// resource with an id. Other Bundles are kept whole, with an Info
	// finding saying why.
	SplitBundles bool
	// Report receives walker findings: Bundles kept whole although
	// SplitBundles is set, urn:uuid links lost by a split, blank lines
	// skipped. It may be nil.
	Report func(Finding)
}

func (o *WalkOptions) maxResource() int {
	if o.MaxResourceBytes > 0 {
		return o.MaxResourceBytes
	}
	return DefaultMaxResourceBytes
}

func (o *WalkOptions) maxDepth() int {
	if o.MaxDepth > 0 {
		return o.MaxDepth
	}
	return DefaultMaxDepth
}

func (o *WalkOptions) report(f Finding) {
	if o.Report != nil {
		o.Report(f)
	}
}

// Kind says what an Item holds.
type Kind uint8

const (
	// KindResource is one top-level resource: an NDJSON line, a resource
	// file, or an entry of a split Bundle. Raw holds its compacted bytes.
	KindResource Kind = iota
	// KindBundle is a Bundle kept whole; see Item.Bundle.
	KindBundle
	// KindInvalid is input that is not a usable resource (invalid JSON, a
	// line over the cap, not an object). Err says why and wraps
	// ErrBadInput; Raw holds the original bytes when they are available
	// (for quarantine), else nil. The walk continues after it.
	KindInvalid
)

// Item is one unit of a walk.
type Item struct {
	Kind Kind
	Pos  Position
	// Raw is the compacted resource for KindResource (json.Compact
	// semantics: keys, numbers and string escapes exactly as in the input),
	// or the original bytes for KindInvalid. It is valid until the next
	// call to Next.
	Raw    []byte
	Bundle *Bundle // KindBundle only
	Err    error   // KindInvalid only

	// owned is set when Raw is a buffer the walker will not reuse (a long
	// line, a single-resource file), so Checker.Run can keep it without a
	// copy: a 60 MB line then lives in memory once, not three times.
	owned bool
}

// Walker yields the resources of a set of files and folders, in a
// deterministic order: the paths in the order given, each folder walked
// recursively in lexical order. Files are recognised by name: .ndjson,
// .ndjson.gz, .json and .json.gz (case-insensitive); other files and names
// starting with "." are ignored and listed by Ignored. Memory is bounded by
// MaxResourceBytes plus fixed buffers; no file is ever held whole unless it
// is a single resource.
//
// A Walker is not safe for concurrent use.
type Walker struct {
	opts    WalkOptions
	files   []string
	ignored []string
	fi      int // next file index

	cur source
}

type source interface {
	next() (*Item, error)
	close() error
}

// NewWalker lists the files under paths. It fails, wrapping ErrBadInput,
// if a path does not exist or names an unsupported file type.
func NewWalker(paths []string, opts WalkOptions) (*Walker, error) {
	w := &Walker{opts: opts}
	for _, p := range paths {
		st, err := os.Stat(p)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadInput, err)
		}
		if !st.IsDir() {
			if fileFormat(p) == formatNone {
				return nil, fmt.Errorf("%s: %w: not a .json, .json.gz, .ndjson or .ndjson.gz file", p, ErrBadInput)
			}
			w.files = append(w.files, p)
			continue
		}
		var found []string
		err = filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if path != p && strings.HasPrefix(d.Name(), ".") {
				if d.IsDir() {
					return filepath.SkipDir
				}
				w.ignored = append(w.ignored, path)
				return nil
			}
			if d.IsDir() {
				return nil
			}
			if !d.Type().IsRegular() && d.Type()&fs.ModeSymlink == 0 {
				w.ignored = append(w.ignored, path)
				return nil
			}
			if fileFormat(path) == formatNone {
				w.ignored = append(w.ignored, path)
				return nil
			}
			found = append(found, path)
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("%w: walking %s: %v", ErrBadInput, p, err)
		}
		sort.Strings(found) // WalkDir is lexical per folder; make the whole order explicit
		w.files = append(w.files, found...)
	}
	return w, nil
}

// Files returns the files the walk will read, in order.
func (w *Walker) Files() []string { return w.files }

// Ignored returns the files under the given folders that were skipped.
func (w *Walker) Ignored() []string { return w.ignored }

// Next returns the next item, or io.EOF after the last one. An error other
// than io.EOF concerns the current file as a whole (unreadable, truncated
// gzip, broken JSON in a Bundle) and wraps ErrBadInput unless it is an I/O
// error of the machine; the next call moves on to the following file, so a
// caller applying a skip policy may continue.
func (w *Walker) Next() (*Item, error) {
	for {
		if w.cur == nil {
			if w.fi >= len(w.files) {
				return nil, io.EOF
			}
			path := w.files[w.fi]
			w.fi++
			src, err := w.openSource(path)
			if err != nil {
				return nil, err
			}
			if src == nil {
				continue
			}
			w.cur = src
		}
		it, err := w.cur.next()
		if err == io.EOF {
			cerr := w.cur.close()
			w.cur = nil
			if cerr != nil {
				return nil, cerr
			}
			continue
		}
		if err != nil {
			w.cur.close()
			w.cur = nil
			return nil, err
		}
		return it, nil
	}
}

// Close releases the current file.
func (w *Walker) Close() error {
	if w.cur != nil {
		err := w.cur.close()
		w.cur = nil
		return err
	}
	return nil
}

type format uint8

const (
	formatNone format = iota
	formatJSON
	formatNDJSON
)

func fileFormat(path string) format {
	n := strings.ToLower(filepath.Base(path))
	n = strings.TrimSuffix(n, ".gz")
	switch {
	case strings.HasSuffix(n, ".ndjson"):
		return formatNDJSON
	case strings.HasSuffix(n, ".json"):
		return formatJSON
	}
	return formatNone
}

// openFile opens path, transparently gunzipping .gz files with the
// expansion cap, and strips a leading UTF-8 byte order mark.
func (w *Walker) openFile(path string) (io.ReadCloser, error) {
	return openInput(path, &w.opts)
}

func openInput(path string, o *WalkOptions) (io.ReadCloser, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadInput, err)
	}
	var r io.Reader = f
	var closers []io.Closer
	closers = append(closers, f)
	if strings.HasSuffix(strings.ToLower(path), ".gz") {
		st, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, err
		}
		zr, err := gzip.NewReader(bufio.NewReaderSize(f, 64<<10))
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("%s: %w: not a valid gzip file (%v); re-download or re-compress it", path, ErrBadInput, err)
		}
		ratio := o.MaxGzipRatio
		if ratio <= 0 {
			ratio = DefaultMaxGzipRatio
		}
		limit := st.Size() * ratio
		if limit < 64<<20 {
			limit = 64 << 20
		}
		r = &gzipGuard{r: zr, path: path, left: limit, ratio: ratio}
		closers = append(closers, zr)
	}
	br := bufio.NewReaderSize(r, 64<<10)
	if b, err := br.Peek(3); err == nil && string(b) == string(utf8BOM) {
		br.Discard(3)
	}
	if b, err := br.Peek(2); err == nil && (string(b) == "\xff\xfe" || string(b) == "\xfe\xff") {
		for _, c := range closers {
			c.Close()
		}
		return nil, fmt.Errorf("%s: %w: the file is UTF-16 (byte order mark %X); FHIR JSON must be UTF-8: convert it, e.g. iconv -f UTF-16 -t UTF-8", path, ErrBadInput, b)
	}
	return &multiCloser{Reader: br, closers: closers}, nil
}

type multiCloser struct {
	io.Reader
	closers []io.Closer
}

func (m *multiCloser) Close() error {
	var first error
	for i := len(m.closers) - 1; i >= 0; i-- {
		if err := m.closers[i].Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// gzipGuard turns gzip errors into clear bad-input errors and enforces the
// expansion cap.
type gzipGuard struct {
	r     io.Reader
	path  string
	left  int64
	ratio int64
}

func (g *gzipGuard) Read(p []byte) (int, error) {
	n, err := g.r.Read(p)
	g.left -= int64(n)
	if g.left < 0 {
		return n, fmt.Errorf("%s: %w: gzip data expands more than %d times its size (a decompression bomb?); raise the gzip expansion cap if the file is genuine", g.path, ErrBadInput, g.ratio)
	}
	if err != nil && err != io.EOF {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return n, fmt.Errorf("%s: %w: gzip stream is truncated; the file is incomplete, download it again", g.path, ErrBadInput)
		}
		if errors.Is(err, gzip.ErrChecksum) || errors.Is(err, gzip.ErrHeader) {
			return n, fmt.Errorf("%s: %w: gzip data is corrupt (%v); download it again", g.path, ErrBadInput, err)
		}
	}
	return n, err
}

func (w *Walker) openSource(path string) (source, error) {
	switch fileFormat(path) {
	case formatNDJSON:
		rc, err := w.openFile(path)
		if err != nil {
			return nil, err
		}
		return newNDJSONSource(path, rc, &w.opts), nil
	default:
		return w.openJSON(path)
	}
}

// ---- NDJSON ----

type ndjsonSource struct {
	path   string
	rc     io.ReadCloser
	br     *bufio.Reader
	opts   *WalkOptions
	line   int64
	long   []byte
	out    []byte
	blanks int64
	item   Item
}

func newNDJSONSource(path string, rc io.ReadCloser, o *WalkOptions) *ndjsonSource {
	return &ndjsonSource{path: path, rc: rc, br: bufio.NewReaderSize(rc, 64<<10), opts: o}
}

func (n *ndjsonSource) close() error {
	if n.line == 0 {
		n.opts.report(Finding{Severity: Warning, Code: CodeEmptyFile, Pos: Position{File: n.path, Entry: -1},
			Msg: "the file is empty: no resources; check that it was downloaded or copied completely"})
	}
	if n.blanks > 0 {
		n.opts.report(Finding{Severity: Info, Code: CodeInvalidJSON, Pos: Position{File: n.path, Entry: -1},
			Msg: fmt.Sprintf("%d blank lines skipped", n.blanks)})
	}
	return n.rc.Close()
}

// readLine returns the next line, with its newline if it has one. tooLong
// is set when the line exceeded the cap; its bytes are then discarded. A
// line longer than the read buffer is gathered in chunks and copied once
// into n.long, sized exactly: growing one slice instead would leave about
// four times the line behind as garbage.
func (n *ndjsonSource) readLine() (line []byte, tooLong bool, err error) {
	limit := n.opts.maxResource()
	n.long = nil
	var chunks [][]byte
	total := 0
	for {
		frag, err := n.br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			if !tooLong {
				total += len(frag)
				if total > limit {
					tooLong, chunks = true, nil // the rest of the line is discarded
				} else {
					chunks = append(chunks, bytes.Clone(frag))
				}
			}
			continue
		}
		if err != nil && err != io.EOF {
			return nil, false, err
		}
		if len(chunks) > 0 || tooLong {
			if tooLong || total+len(frag) > limit {
				return nil, true, nil
			}
			n.long = make([]byte, 0, total+len(frag))
			for _, c := range chunks {
				n.long = append(n.long, c...)
			}
			n.long = append(n.long, frag...)
			frag = n.long
		} else if len(frag) > limit+1 {
			return nil, true, nil
		}
		if err == io.EOF && len(frag) == 0 {
			return nil, false, io.EOF
		}
		return frag, false, nil
	}
}

func (n *ndjsonSource) next() (*Item, error) {
	for {
		line, tooLong, err := n.readLine()
		if err == io.EOF {
			return nil, io.EOF
		}
		n.line++
		pos := Position{File: n.path, Line: n.line, Entry: -1}
		if err != nil {
			if errors.Is(err, ErrBadInput) {
				return nil, err
			}
			return nil, fmt.Errorf("%s: %w", pos, err)
		}
		n.item = Item{Pos: pos}
		if tooLong {
			n.item.Kind = KindInvalid
			n.item.Err = fmt.Errorf("%s: %w: line longer than %d bytes, the cap for one resource; if it is genuine, raise the cap (ehrport export --max-resource-size)", pos, ErrBadInput, n.opts.maxResource())
			return &n.item, nil
		}
		if isBlank(line) {
			n.blanks++
			continue
		}
		if bytes.HasPrefix(line, utf8BOM) {
			n.item.Kind, n.item.Raw = KindInvalid, line
			n.item.Err = fmt.Errorf("%s: %w: a UTF-8 byte order mark starts this line (files joined with cat?); remove it", pos, ErrBadInput)
			return &n.item, nil
		}
		if len(n.long) > 0 {
			// A line longer than the read buffer: check it first, keeping
			// the original bytes for quarantine if it is invalid, then
			// compact it in place (output never outruns input) and hand
			// the buffer to the item instead of copying it.
			if err := checkValue(line, n.opts.maxDepth()); err != nil {
				n.item.Kind = KindInvalid
				n.item.Raw = line
				n.item.Err = fmt.Errorf("%s: %w: %v", pos, ErrBadInput, err)
				return &n.item, nil
			}
			out, err := compactValue(line[:0], line, n.opts.maxDepth())
			if err != nil {
				return nil, fmt.Errorf("%s: compacting a checked line: %w", pos, err) // cannot happen
			}
			n.long = nil
			n.item.Kind, n.item.Raw, n.item.owned = KindResource, out, true
			return &n.item, nil
		}
		n.out, err = compactValue(n.out[:0], line, n.opts.maxDepth())
		if err != nil {
			n.item.Kind = KindInvalid
			n.item.Raw = line
			n.item.Err = fmt.Errorf("%s: %w: %v", pos, ErrBadInput, err)
			return &n.item, nil
		}
		n.item.Kind = KindResource
		n.item.Raw = n.out
		return &n.item, nil
	}
}

func isBlank(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			return false
		}
	}
	return true
}

// ---- single JSON files ----

type oneItem struct {
	item *Item
	done bool
	rc   io.Closer
}

func (o *oneItem) next() (*Item, error) {
	if o.done {
		return nil, io.EOF
	}
	o.done = true
	return o.item, nil
}

func (o *oneItem) close() error {
	if o.rc != nil {
		return o.rc.Close()
	}
	return nil
}

// peekTop reads the top-level members of a JSON object until resourceType
// and type are known (usually the first two keys), skipping other values
// without holding them.
func peekTop(rc io.Reader, o *WalkOptions) (resourceType, bundleType, id string, err error) {
	s := newReaderScanner(rc, 64<<10, o.maxDepth())
	c, ok := s.skipWS()
	if !ok {
		return "", "", "", s.eofErr("file")
	}
	if c != '{' {
		return "", "", "", s.errf("expected a JSON object (a FHIR resource), found %q", c)
	}
	var haveRT, haveType, haveID bool
	var val []byte
	err = s.object(1, func(key []byte) (bool, error) {
		k := string(key)
		if k != "resourceType" && k != "type" && k != "id" {
			return false, nil
		}
		c, ok := s.skipWS()
		if !ok || c != '"' {
			return false, nil
		}
		val = val[:0]
		if err := s.str(&val); err != nil {
			return true, err
		}
		v := unquote(append(append([]byte{'"'}, val...), '"'))
		switch k {
		case "resourceType":
			resourceType, haveRT = v, true
		case "type":
			bundleType, haveType = v, true
		case "id":
			id, haveID = v, true
		}
		if haveRT && (resourceType != "Bundle" || (haveType && haveID)) {
			return true, errStop
		}
		return true, nil
	})
	if err == errStop {
		err = nil
	}
	return resourceType, bundleType, id, err
}

func (w *Walker) openJSON(path string) (source, error) {
	pos := Position{File: path, Entry: -1}
	rc, err := w.openFile(path)
	if err != nil {
		return nil, err
	}
	rt, btype, id, err := peekTop(rc, &w.opts)
	rc.Close()
	if err != nil {
		var se *SyntaxError
		if errors.As(err, &se) {
			return &oneItem{item: &Item{Kind: KindInvalid, Pos: pos, Err: fmt.Errorf("%s: %w: %v", path, ErrBadInput, err)}}, nil
		}
		return nil, err
	}
	if rt == "Bundle" {
		b := &Bundle{Pos: pos, Type: btype, ID: id, opts: &w.opts,
			open: func() (io.ReadCloser, error) { return openInput(path, &w.opts) }}
		if w.opts.SplitBundles {
			return w.newSplitter(b)
		}
		return &oneItem{item: &Item{Kind: KindBundle, Pos: pos, Bundle: b}}, nil
	}
	// A single resource: read it whole, compacted, under the cap.
	rc, err = w.openFile(path)
	if err != nil {
		return nil, err
	}
	s := newReaderScanner(rc, 64<<10, w.opts.maxDepth())
	s.capOn = true
	s.capLimit = w.opts.maxResource()
	err = s.value(1)
	if err == nil {
		err = s.end()
	}
	if err != nil {
		rc.Close()
		var se *SyntaxError
		if errors.As(err, &se) {
			msg := err.Error()
			if strings.Contains(msg, "after the top-level value") {
				msg += "; if this file holds one resource per line, name it .ndjson"
			}
			return &oneItem{item: &Item{Kind: KindInvalid, Pos: pos, Err: fmt.Errorf("%s: %w: %s", path, ErrBadInput, msg)}}, nil
		}
		return nil, err
	}
	return &oneItem{item: &Item{Kind: KindResource, Pos: pos, Raw: s.capture, owned: true}, rc: rc}, nil
}
