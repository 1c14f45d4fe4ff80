package export

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	ehrcrypto "github.com/ehrport/ehrport/crypto"
	"github.com/ehrport/ehrport/fhir"
	"github.com/ehrport/ehrport/fhir/bulk"
	"github.com/ehrport/ehrport/storage"
)

// Options configure one export. The zero values of the optional fields give
// the documented defaults.
type Options struct {
	// Paths are the input files and folders (fhir.Walker).
	Paths []string
	// Bulk, when set instead of Paths, reads from a FHIR server's $export.
	Bulk *BulkSource
	// Store is the target location.
	Store storage.Store
	// Recipients wrap every object's DEK (at least one).
	Recipients []ehrcrypto.Recipient
	// Signer signs the manifest. Nil requires Unsigned.
	Signer   *ehrcrypto.Signer
	Unsigned bool

	Policy       fhir.Policy
	SplitBundles bool
	// MaxResourceBytes caps one NDJSON line, resource file or Bundle entry
	// (fhir.DefaultMaxResourceBytes when 0); memory grows with it.
	MaxResourceBytes int
	// StrictReferences fails the export (fhir.ErrBadInput) when references
	// do not resolve inside it; otherwise they are counted findings.
	StrictReferences bool

	SplitResources int64 // resources per part (DefaultSplitResources)
	SplitBytes     int64 // plaintext bytes per part (DefaultSplitBytes)
	Concurrency    int   // uploads in flight (DefaultConcurrency)
	// MaxOpenParts bounds the parts being written at once
	// (DefaultMaxOpenParts). Each holds a 1 MiB segment buffer; when input
	// that mixes many resource types would open more, the part written to
	// longest ago is finished early, so memory does not grow with the
	// number of types.
	MaxOpenParts int
	// Retry governs each part's upload, resent from its spool file after a
	// reset or a server error (storage.DefaultRetryPolicy when zero).
	Retry   storage.RetryPolicy
	Workers int // validation goroutines (0: GOMAXPROCS)

	// SpoolDir holds ciphertext while a part waits for its upload, and
	// the validator's id index past its memory bound, sealed under a key
	// only the process holds (os.TempDir() when empty). Files are 0600 and
	// unlinked at once.
	SpoolDir string
	// ExportID is bound into every object; random when empty.
	ExportID string
	// Request describes the source in the manifest (no secrets).
	Request string

	Log *slog.Logger
	// Findings receives every finding of the input, in input order.
	Findings func(fhir.Finding)
	// Observe, when set, sees every item the checker decided on, in input
	// order, before it is written, on the goroutine that writes it; it.Raw
	// is valid only during the call. An error fails the export. The drill
	// indexes a FHIR server's records with it as they stream by.
	Observe func(it *fhir.Item, act fhir.Action) error
	// Progress is called about every ProgressEvery (default 1s) and once at
	// the end, from its own goroutine.
	Progress      func(Progress)
	ProgressEvery time.Duration
	Now           func() time.Time
}

// Progress is a snapshot of a running export.
type Progress struct {
	Files, FilesTotal int64 // input files started (restore: objects done), of all; 0 total: unknown
	Resources         int64
	PlaintextBytes    int64
	Uploaded          int64 // objects
	UploadedBytes     int64
	Elapsed           time.Duration
	Done              bool
}

// Summary is what an export reports (ehrport export --json).
type Summary struct {
	ExportID       string           `json:"export_id"`
	Location       string           `json:"location"`
	Counts         map[string]int64 `json:"counts"`
	Resources      int64            `json:"resources"`
	PlaintextBytes int64            `json:"plaintext_bytes"`
	StoredBytes    int64            `json:"stored_bytes"`
	Objects        int              `json:"objects"`
	Stats          Stats            `json:"stats"`
	Findings       map[string]int64 `json:"findings"`
	// Server counts a FHIR server's error and deleted files, exported
	// under _server/ (nil for file input).
	Server  *ServerFiles `json:"server,omitempty"`
	Signed  bool         `json:"signed"`
	Timings Timings      `json:"timings"`
}

// Timings are the phases of an export or restore, in seconds.
type Timings struct {
	Total             float64 `json:"total_s"`
	WalkEncrypt       float64 `json:"walk_validate_encrypt_s,omitempty"`
	UploadWait        float64 `json:"upload_wait_s,omitempty"`
	Manifest          float64 `json:"manifest_s,omitempty"`
	ResourcesPerSec   float64 `json:"resources_per_s"`
	PlaintextMBPerSec float64 `json:"plaintext_mb_per_s"`
}

type exporter struct {
	o       *Options
	ctx     context.Context
	cancel  context.CancelCauseFunc
	exportI string
	streams map[streamKey]*stream
	clock   uint64 // counts partFor calls, to find the part idle longest
	open    int    // parts being written
	maxOpen int    // the most parts open at once, for tests

	uploads chan *part
	wg      sync.WaitGroup

	mu       sync.Mutex
	objects  []ObjectEntry
	sumObjs  []SummaryObject
	stanzas  []ehrcrypto.Stanza
	files    atomic.Int64
	filesAll atomic.Int64
	lastFile string
	uploaded atomic.Int64
	upBytes  atomic.Int64
	res      atomic.Int64
	ptBytes  atomic.Int64

	peek      lineScanner
	types     map[string]string // interned type names
	reportMu  sync.Mutex
	pending   []fhir.Finding // error findings of the item being handled
	finishing bool           // Checker.Finish runs: findings concern no item
	fatal     error
	bulkState *bulk.State
	txTime    string
	srv       *serverRun // the server's error and deleted files (bulk.go); nil for file input
}

type streamKey struct{ kind, typ string }

type stream struct {
	kind, typ string
	next      int
	cur       *part
	lastUse   uint64 // e.clock at the last write
}

// part is one object being written: plaintext → scanner, hash, encryptor →
// ciphertext hash → spool file.
type part struct {
	kind, typ, path string
	f               *os.File
	bw              *bufio.Writer
	ct              *hashCounter
	enc             io.WriteCloser
	pt              *hashCounter // plaintext: hashed, counted, then encrypted
	scan            *lineScanner
	plain           io.Writer // pt, with every byte also scanned for lines and ids
}

// Run exports. On success the manifest is in place and the Summary says
// what was written. On failure no manifest is written; objects already
// uploaded are removed unless the run was interrupted (a rerun replaces
// them).
func (o *Options) Run(ctx context.Context) (*Summary, error) {
	start := time.Now()
	if err := o.defaults(); err != nil {
		return nil, err
	}
	if _, err := o.Store.Stat(ctx, ManifestKey); err == nil {
		return nil, fmt.Errorf("%w at %s: export to an empty location; if an earlier run of this export failed just as it wrote the manifest, check that export with `ehrport verify --at %s --deep --keys DIR`", ErrTargetHasExport, o.Store.Location(), o.Store.Location())
	} else if !errors.Is(err, storage.ErrNotExist) {
		return nil, err
	}
	created := o.Now()

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	e := &exporter{o: o, ctx: ctx, cancel: cancel, exportI: o.ExportID, streams: map[streamKey]*stream{},
		uploads: make(chan *part, o.Concurrency)}
	for i := 0; i < o.Concurrency; i++ {
		e.wg.Add(1)
		go e.uploader()
	}
	stopProgress := e.progress(start)

	stats, err := e.walk()
	walkDone := time.Now()
	if err == nil {
		err = e.closeAll()
	}
	if observeMaxOpen != nil {
		observeMaxOpen(e.maxOpen)
	}
	if err != nil {
		e.cancel(err) // stop the uploads still queued
	}
	close(e.uploads)
	e.wg.Wait()
	if err == nil {
		err = context.Cause(ctx) // an upload failed
	}
	uploadDone := time.Now()
	var sum *Summary
	if err == nil {
		sum, err = e.finish(stats, created)
	}
	stopProgress()
	if err != nil {
		e.discard(ctx)
		return nil, err
	}
	if o.Bulk != nil && !o.Bulk.KeepJob && e.bulkState != nil {
		if err := o.Bulk.Client.Delete(ctx, e.bulkState); err != nil {
			o.Log.Warn("could not ask the server to delete its export files", "err", err)
		}
	}
	end := time.Now()
	total := end.Sub(start).Seconds()
	sum.Timings = Timings{Total: total, WalkEncrypt: walkDone.Sub(start).Seconds(),
		UploadWait: uploadDone.Sub(walkDone).Seconds(), Manifest: end.Sub(uploadDone).Seconds()}
	if total > 0 {
		sum.Timings.ResourcesPerSec = float64(sum.Resources) / total
		sum.Timings.PlaintextMBPerSec = float64(sum.PlaintextBytes) / 1e6 / total
	}
	return sum, nil
}

func (o *Options) defaults() error {
	if o.Store == nil {
		return errors.New("export: no target store")
	}
	if len(o.Paths) == 0 && o.Bulk == nil {
		return fmt.Errorf("%w: no input paths", fhir.ErrBadInput)
	}
	if len(o.Paths) > 0 && o.Bulk != nil {
		return fmt.Errorf("%w: give input files or a FHIR server, not both", fhir.ErrBadInput)
	}
	if len(o.Recipients) == 0 {
		return fmt.Errorf("%w: no recipients: give --keys DIR or --recipient PUB.json", ehrcrypto.ErrPolicy)
	}
	if o.Signer == nil && !o.Unsigned {
		return fmt.Errorf("%w: no signing key: give --keys DIR or --sign-keys DIR, or --unsigned to write an unsigned manifest", ehrcrypto.ErrPolicy)
	}
	if o.SplitResources <= 0 {
		o.SplitResources = DefaultSplitResources
	}
	if o.MaxResourceBytes <= 0 {
		o.MaxResourceBytes = fhir.DefaultMaxResourceBytes
	}
	if o.SplitBytes <= 0 {
		o.SplitBytes = DefaultSplitBytes
	}
	if o.MaxOpenParts <= 0 {
		o.MaxOpenParts = DefaultMaxOpenParts
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Log == nil {
		o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.ProgressEvery <= 0 {
		o.ProgressEvery = time.Second
	}
	if o.Request == "" {
		o.Request = "ehrport export (files)"
	}
	if o.ExportID == "" {
		var b [6]byte
		if _, err := rand.Read(b[:]); err != nil {
			return err
		}
		o.ExportID = "e-" + o.Now().UTC().Format("20060102T150405Z") + "-" + hex.EncodeToString(b[:])
	}
	if !exportIDRE().MatchString(o.ExportID) {
		return fmt.Errorf("%w: export id %q: use 1..128 of A-Z a-z 0-9 . _ -", fhir.ErrBadInput, o.ExportID)
	}
	return nil
}

func (e *exporter) walk() (fhir.Stats, error) {
	o := e.o
	// The Checker's id index spills, sealed, beside the ciphertext spool.
	c := fhir.NewChecker(fhir.CheckerOptions{Policy: o.Policy, Report: e.report, SpillDir: o.SpoolDir})
	defer c.Close()
	var err error
	if o.Bulk != nil {
		err = e.walkBulk(c)
	} else {
		var w *fhir.Walker
		w, err = fhir.NewWalker(o.Paths, fhir.WalkOptions{SplitBundles: o.SplitBundles, MaxResourceBytes: o.MaxResourceBytes, Report: e.reportWalk})
		if err != nil {
			return fhir.Stats{}, err
		}
		defer w.Close()
		e.filesAll.Store(int64(len(w.Files())))
		if len(w.Files()) == 0 {
			o.Log.Warn("no FHIR files (.json, .ndjson, .json.gz, .ndjson.gz) in the inputs: the export will be empty", "ignored_files", len(w.Ignored()))
		}
		err = c.Run(w, o.Workers, e.handle)
	}
	e.reportMu.Lock()
	if err == nil && e.fatal != nil {
		err = e.fatal
	}
	e.reportMu.Unlock()
	if err == nil {
		// Finish's findings concern no item to handle: nothing collects them.
		e.reportMu.Lock()
		e.finishing = true
		e.reportMu.Unlock()
		if ferr := c.Finish(); ferr != nil {
			var fe *fhir.FindingsError
			if !errors.As(ferr, &fe) || o.StrictReferences {
				err = ferr
			} else {
				o.Log.Warn("references that resolve to no resource in the export (counted; --strict-references makes this fatal)", "targets", fe.Count())
			}
		}
	}
	if err != nil && e.ctx.Err() != nil {
		if c := context.Cause(e.ctx); c != nil {
			err = c
		}
	}
	return c.Stats(), err
}

// reportWalk receives the walker's findings, from the walker's goroutine
// under Checker.Run: they may run ahead of the item being handled, so they
// never count as that item's reasons for quarantine.
func (e *exporter) reportWalk(f fhir.Finding) {
	e.reportMu.Lock()
	defer e.reportMu.Unlock()
	if e.o.Findings != nil {
		e.o.Findings(f)
	}
}

// report receives the checker's findings, on the goroutine that calls
// handle, in input order, before the item they concern is handled.
func (e *exporter) report(f fhir.Finding) {
	e.reportMu.Lock()
	defer e.reportMu.Unlock()
	if f.Severity == fhir.Error && !e.finishing {
		e.pending = append(e.pending, f)
		if f.Code == fhir.CodeWrongVersion && e.fatal == nil {
			// Whatever --on-invalid says: this is not an R4 export.
			e.fatal = fmt.Errorf("%w: %s; ehrport exports FHIR R4 only", fhir.ErrBadInput, f.String())
		}
	}
	if e.o.Findings != nil {
		e.o.Findings(f)
	}
}

func (e *exporter) handle(it *fhir.Item, act fhir.Action) error {
	e.reportMu.Lock()
	fatal := e.fatal
	pending := slices.Clone(e.pending)
	e.pending = e.pending[:0]
	e.reportMu.Unlock()
	if fatal != nil {
		return fatal
	}
	if err := e.ctx.Err(); err != nil {
		return context.Cause(e.ctx)
	}
	if e.o.Observe != nil {
		if err := e.o.Observe(it, act); err != nil {
			return err
		}
	}
	if it.Pos.File != e.lastFile {
		e.lastFile = it.Pos.File
		e.files.Add(1)
	}
	switch act {
	case fhir.Write:
		if it.Kind == fhir.KindBundle {
			p, err := e.partFor(KindData, "Bundle", 0)
			if err != nil {
				return err
			}
			n, err := it.Bundle.WriteTo(p.plain)
			if err != nil {
				return err
			}
			if _, err := p.plain.Write([]byte{'\n'}); err != nil {
				return err
			}
			e.res.Add(1)
			e.ptBytes.Add(n + 1)
			return e.maybeRotate(KindData, "Bundle")
		}
		tb, id := e.peek.peek(it.Raw)
		typ := e.typeName(tb)
		if !typeRE().MatchString(typ) {
			return fmt.Errorf("%w: %s: resourceType %q cannot name an object", fhir.ErrBadInput, it.Pos, typ)
		}
		p, err := e.partFor(KindData, typ, int64(len(it.Raw))+1)
		if err != nil {
			return err
		}
		// The bytes go straight to the hash and the encryptor; the line's
		// type and id are already known, so the scanner is told, not fed.
		if _, err := p.pt.Write(it.Raw); err != nil {
			return err
		}
		if _, err := p.pt.Write([]byte{'\n'}); err != nil {
			return err
		}
		p.scan.addLine(tb, id)
		e.res.Add(1)
		e.ptBytes.Add(int64(len(it.Raw)) + 1)
		return e.maybeRotate(KindData, typ)
	case fhir.Quarantine:
		return e.quarantine(it, pending)
	}
	return nil // Duplicate, Skip: counted by the Checker
}

// typeName interns resource type names, so routing a resource allocates
// nothing.
func (e *exporter) typeName(b []byte) string {
	if t, ok := e.types[string(b)]; ok {
		return t
	}
	if e.types == nil {
		e.types = map[string]string{}
	}
	t := string(b)
	e.types[t] = t
	return t
}

// quarantine writes one refused item as a JSON line (docs §4).
func (e *exporter) quarantine(it *fhir.Item, pending []fhir.Finding) error {
	var msgs []string
	for _, f := range pending {
		msgs = append(msgs, f.String())
	}
	if it.Err != nil && len(msgs) == 0 {
		msgs = append(msgs, it.Err.Error())
	}
	head := map[string]any{"position": it.Pos.String(), "findings": msgs}
	var typ string
	switch {
	case it.Kind == fhir.KindBundle:
		typ = "Bundle"
	case it.Raw != nil && it.Kind == fhir.KindResource:
		typ = peekType(it.Raw)
	}
	if typ != "" {
		head["type"] = typ
	}
	hb, err := json.Marshal(head)
	if err != nil {
		return err
	}
	hb = hb[:len(hb)-1] // reopen the object
	p, err := e.partFor(KindQuarantine, QuarantineStream, int64(len(hb)+len(it.Raw)+32))
	if err != nil {
		return err
	}
	w := p.plain
	if _, err := w.Write(hb); err != nil {
		return err
	}
	switch {
	case it.Kind == fhir.KindBundle:
		if _, err := io.WriteString(w, `,"resource":`); err != nil {
			return err
		}
		if _, err := it.Bundle.WriteTo(w); err != nil {
			return err
		}
	case it.Raw != nil && json.Valid(it.Raw):
		var buf bytes.Buffer
		if err := json.Compact(&buf, it.Raw); err != nil {
			return err
		}
		if _, err := io.WriteString(w, `,"resource":`); err != nil {
			return err
		}
		if _, err := w.Write(buf.Bytes()); err != nil {
			return err
		}
	case it.Raw != nil:
		if _, err := io.WriteString(w, `,"base64":"`+base64.StdEncoding.EncodeToString(it.Raw)+`"`); err != nil {
			return err
		}
	}
	if _, err := io.WriteString(w, "}\n"); err != nil {
		return err
	}
	return e.maybeRotate(KindQuarantine, QuarantineStream)
}

// partFor returns the open part of a stream, closing the current one first
// when adding next bytes would pass the byte limit.
func (e *exporter) partFor(kind, typ string, next int64) (*part, error) {
	k := streamKey{kind, typ}
	s := e.streams[k]
	if s == nil {
		s = &stream{kind: kind, typ: typ}
		e.streams[k] = s
	}
	if s.cur != nil && s.cur.scan.lines > 0 && s.cur.pt.n+next > e.o.SplitBytes {
		if err := e.closePart(s); err != nil {
			return nil, err
		}
	}
	e.clock++
	s.lastUse = e.clock
	if s.cur == nil {
		if e.open >= e.o.MaxOpenParts {
			if err := e.closePart(e.idlest()); err != nil {
				return nil, err
			}
		}
		p, err := e.openPart(kind, typ, PartPath(kind, typ, s.next))
		if err != nil {
			return nil, err
		}
		s.next++
		s.cur = p
		e.open++
		e.maxOpen = max(e.maxOpen, e.open)
	}
	return s.cur, nil
}

// observeMaxOpen, set by tests, learns the most parts a Run had open at once.
var observeMaxOpen func(int)

// idlest returns the stream with an open part written to longest ago.
func (e *exporter) idlest() *stream {
	var old *stream
	for _, s := range e.streams {
		if s.cur != nil && (old == nil || s.lastUse < old.lastUse) {
			old = s
		}
	}
	return old
}

func (e *exporter) maybeRotate(kind, typ string) error {
	s := e.streams[streamKey{kind, typ}]
	if s.cur != nil && (s.cur.scan.lines >= e.o.SplitResources || s.cur.pt.n >= e.o.SplitBytes) {
		return e.closePart(s)
	}
	return nil
}

func (e *exporter) openPart(kind, typ, path string) (*part, error) {
	f, err := os.CreateTemp(e.o.SpoolDir, "ehrport-spool-*")
	if err != nil {
		return nil, err
	}
	// Unlink at once: a crash leaves nothing behind. (Ciphertext only.)
	_ = os.Remove(f.Name())
	p := &part{kind: kind, typ: typ, path: path, f: f}
	p.bw = bufio.NewWriterSize(f, 64<<10)
	p.ct = &hashCounter{h: sha256.New(), w: p.bw}
	// One worker: the segment is sealed where it is written, so a part
	// holds one segment buffer, not one per core; encryption is about 1%
	// of an export's CPU.
	sealer, err := ehrcrypto.NewSealer(e.o.Recipients, ehrcrypto.Binding{ExportID: e.o.ExportID, Path: path}, ehrcrypto.WithWorkers(1))
	if err != nil {
		f.Close()
		return nil, err
	}
	e.mu.Lock()
	if e.stanzas == nil {
		e.stanzas = slices.Clone(sealer.Header().Stanzas)
	}
	e.mu.Unlock()
	p.enc, err = sealer.Writer(p.ct)
	if err != nil {
		f.Close()
		return nil, err
	}
	p.scan = newLineScanner()
	p.pt = &hashCounter{h: sha256.New(), w: p.enc}
	p.plain = io.MultiWriter(p.scan, p.pt)
	return p, nil
}

func (e *exporter) closePart(s *stream) error {
	p := s.cur
	s.cur = nil
	e.open--
	if err := p.enc.Close(); err != nil {
		p.f.Close()
		return err
	}
	if err := p.bw.Flush(); err != nil {
		p.f.Close()
		return err
	}
	if _, err := p.f.Seek(0, io.SeekStart); err != nil {
		p.f.Close()
		return err
	}
	e.mu.Lock()
	e.sumObjs = append(e.sumObjs, SummaryObject{Path: p.path, Kind: p.kind, Type: objectType(p.kind, p.typ),
		Resources: p.scan.lines, PlaintextSize: p.pt.n, PlaintextSHA256: hex.EncodeToString(p.pt.h.Sum(nil)),
		IDsSHA256: hex.EncodeToString(p.scan.ids.Sum(nil))})
	e.mu.Unlock()
	select {
	case e.uploads <- p:
		return nil
	case <-e.ctx.Done():
		p.f.Close()
		return context.Cause(e.ctx)
	}
}

// objectType is the type an object entry names: the resource type of data
// and server-file parts, none for quarantine (any text may sit there).
func objectType(kind, typ string) string {
	if kind == KindData {
		return typ
	}
	return serverKinds[kind].typ
}

func (e *exporter) closeAll() error {
	keys := make([]streamKey, 0, len(e.streams))
	for k := range e.streams {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].kind != keys[j].kind {
			return keys[i].kind < keys[j].kind
		}
		return keys[i].typ < keys[j].typ
	})
	for _, k := range keys {
		if s := e.streams[k]; s.cur != nil {
			if err := e.closePart(s); err != nil {
				return err
			}
		}
	}
	return nil
}

func (e *exporter) uploader() {
	defer e.wg.Done()
	for p := range e.uploads {
		if e.ctx.Err() != nil {
			p.f.Close()
			continue
		}
		key := p.path + ObjectSuffix
		sum := p.ct.h.Sum(nil)
		// One request per part: the store verifies the whole part against
		// its SHA-256 and buffers none of it (in parts, every uploader would
		// hold several part-sized buffers, up to hundreds of MB in all).
		retries, err := e.o.Retry.Do(e.ctx, func(attempt int) error {
			if attempt > 1 {
				// The spool file holds the whole part: send it again.
				if _, err := p.f.Seek(0, io.SeekStart); err != nil {
					return err
				}
			}
			return e.o.Store.Put(e.ctx, key, p.f, p.ct.n, storage.PutOptions{SHA256: sum, OneRequest: true, ContentType: "application/octet-stream"})
		})
		if retries > 0 {
			e.o.Log.Warn("part upload retried", "key", key, "retries", retries, "ok", err == nil)
		}
		p.f.Close()
		if err != nil {
			e.cancel(err)
			continue
		}
		e.mu.Lock()
		e.objects = append(e.objects, ObjectEntry{Key: key, Path: p.path, Kind: p.kind, Type: objectType(p.kind, p.typ),
			Size: p.ct.n, SHA256: hex.EncodeToString(sum)})
		e.mu.Unlock()
		e.uploaded.Add(1)
		e.upBytes.Add(p.ct.n)
		e.o.Log.Debug("uploaded", "key", key, "bytes", p.ct.n)
	}
}

// finish writes the summary, removes leftovers, then the signature and the
// manifest, last.
func (e *exporter) finish(st fhir.Stats, created time.Time) (*Summary, error) {
	o := e.o
	ctx := e.ctx
	sort.Slice(e.sumObjs, func(i, j int) bool { return e.sumObjs[i].Path < e.sumObjs[j].Path })
	doc := SummaryDoc{FormatVersion: FormatVersion, ExportID: o.ExportID, Counts: map[string]int64{},
		Stats: Stats{Items: st.Items, Written: st.Written, Duplicates: st.Duplicates, Skipped: st.Skipped,
			Quarantined: st.Quarantined, Bundles: st.Bundles, BundleEntries: st.BundleEntries},
		Findings: map[string]int64{}, Objects: e.sumObjs}
	if doc.Objects == nil {
		doc.Objects = []SummaryObject{}
	}
	idl := sha256.New()
	for _, so := range doc.Objects {
		if so.Kind != KindData {
			continue
		}
		doc.Counts[so.Type] += so.Resources
		doc.Resources += so.Resources
		doc.PlaintextBytes += so.PlaintextSize
		b, _ := hex.DecodeString(so.IDsSHA256)
		idl.Write(b)
	}
	doc.IDListSHA256 = hex.EncodeToString(idl.Sum(nil))
	for c, n := range st.Findings {
		doc.Findings[string(c)] = n
	}
	if e.srv != nil {
		for c, n := range e.srv.findings {
			doc.Findings[c] += n
		}
		doc.Server = &e.srv.files
	}
	sb, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, err
	}
	var ct bytes.Buffer
	w, err := ehrcrypto.NewEncryptWriter(&ct, o.Recipients, ehrcrypto.Binding{ExportID: o.ExportID, Path: SummaryPath})
	if err != nil {
		return nil, err
	}
	if _, err := w.Write(append(sb, '\n')); err != nil {
		return nil, err
	}
	if err := w.Close(); err != nil {
		return nil, err
	}
	sumSHA := sha256.Sum256(ct.Bytes())
	if _, err := o.Retry.Do(ctx, func(int) error {
		return o.Store.Put(ctx, SummaryKey, bytes.NewReader(ct.Bytes()), int64(ct.Len()), storage.PutOptions{SHA256: sumSHA[:], ContentType: "application/octet-stream"})
	}); err != nil {
		return nil, err
	}
	e.objects = append(e.objects, ObjectEntry{Key: SummaryKey, Path: SummaryPath, Kind: KindSummary, Size: int64(ct.Len()), SHA256: hex.EncodeToString(sumSHA[:])})
	sort.Slice(e.objects, func(i, j int) bool { return e.objects[i].Key < e.objects[j].Key })

	// Leftovers of an interrupted run must not sit beside a manifest that
	// does not list them.
	listed := map[string]bool{}
	for _, ob := range e.objects {
		listed[ob.Key] = true
	}
	for info, err := range o.Store.List(ctx, "") {
		if err != nil {
			return nil, err
		}
		if !listed[info.Key] && isLayoutKey(info.Key) {
			o.Log.Info("removing a leftover of an earlier, unfinished export", "key", info.Key)
			if err := o.Store.Delete(ctx, info.Key); err != nil {
				return nil, err
			}
		}
	}

	var m Manifest
	m.TransactionTime = rfc3339(created)
	if e.txTime != "" {
		m.TransactionTime = e.txTime
	}
	m.Request = o.Request
	m.Output = []OutputEntry{}
	m.Error = []OutputEntry{}
	x := &m.Extension.Ehrport
	x.FormatVersion = FormatVersion
	x.ExportID = o.ExportID
	x.CreatedAt = rfc3339(created)
	x.CompletedAt = rfc3339(o.Now())
	x.ObjectFormat = ObjectFormat
	x.Objects = e.objects
	x.Recipients = []RecipientEntry{}
	for _, s := range e.stanzas {
		x.Recipients = append(x.Recipients, RecipientEntry{Type: ehrcrypto.StanzaTypeName(s.Type), Role: ehrcrypto.RoleName(s.Role), KeyID: s.KeyID, URI: string(s.Locator)})
	}
	for _, ob := range e.objects {
		switch ob.Kind {
		case KindData:
			m.Output = append(m.Output, OutputEntry{Type: ob.Type, URL: ob.Key})
		case KindServerError:
			m.Error = append(m.Error, OutputEntry{Type: ob.Type, URL: ob.Key})
		case KindServerDeleted:
			m.Deleted = append(m.Deleted, OutputEntry{Type: ob.Type, URL: ob.Key})
		}
	}
	mb, err := WriteManifest(ctx, o.Store, &m, o.Signer, o.Retry)
	if err != nil {
		return nil, err
	}

	sum := &Summary{ExportID: o.ExportID, Location: o.Store.Location(), Counts: doc.Counts, Resources: doc.Resources,
		PlaintextBytes: doc.PlaintextBytes, Objects: len(e.objects), Stats: doc.Stats, Findings: doc.Findings, Server: doc.Server, Signed: x.Signed}
	for _, ob := range e.objects {
		sum.StoredBytes += ob.Size
	}
	sum.StoredBytes += int64(len(mb))
	return sum, nil
}

// WriteManifest signs m with signer (nil: unsigned) and writes the
// signature, then manifest.json, last (docs §2). It returns the manifest's
// exact bytes, which the signature covers. Each Put is retried under retry
// (storage.DefaultRetryPolicy when zero).
func WriteManifest(ctx context.Context, st storage.Store, m *Manifest, signer *ehrcrypto.Signer, retry storage.RetryPolicy) ([]byte, error) {
	x := &m.Extension.Ehrport
	x.Signed, x.SigningKeyID = signer != nil, 0
	if signer != nil {
		x.SigningKeyID = signer.KeyID()
	}
	mb, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	mb = append(mb, '\n')
	if signer != nil {
		sig, err := signer.Sign(SignaturePurpose, mb)
		if err != nil {
			return nil, err
		}
		sj, err := json.Marshal(Signature{Purpose: SignaturePurpose, KeyID: signer.KeyID(), Signature: sig})
		if err != nil {
			return nil, err
		}
		sj = append(sj, '\n')
		if err := putBytes(ctx, st, SignatureKey, sj, retry); err != nil {
			return nil, err
		}
	} else if err := st.Delete(ctx, SignatureKey); err != nil {
		return nil, err
	}
	if err := putBytes(ctx, st, ManifestKey, mb, retry); err != nil {
		return nil, err
	}
	return mb, nil
}

// putBytes writes b at key, again under retry after a reset or a server
// error: the same bytes, so a Put whose answer was lost is simply redone.
func putBytes(ctx context.Context, st storage.Store, key string, b []byte, retry storage.RetryPolicy) error {
	h := sha256.Sum256(b)
	_, err := retry.Do(ctx, func(int) error {
		return st.Put(ctx, key, bytes.NewReader(b), int64(len(b)), storage.PutOptions{SHA256: h[:], ContentType: "application/json"})
	})
	return err
}

// discard closes open parts and, unless interrupted, removes what this run
// uploaded: a failed export leaves no objects of its own behind.
func (e *exporter) discard(ctx context.Context) {
	for _, s := range e.streams {
		if s.cur != nil {
			s.cur.f.Close()
			s.cur = nil
		}
	}
	if ctx.Err() != nil && errors.Is(context.Cause(ctx), context.Canceled) {
		return
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	// The manifest first: its Put may have failed after the store
	// committed it (an answer lost on the way back), and it must never
	// stand over deleted objects. Run found none there at the start, so
	// any is this run's. If it cannot be removed, the objects stay.
	for _, key := range []string{ManifestKey, SignatureKey} {
		if e.o.Store.Delete(cctx, key) != nil {
			return
		}
	}
	e.mu.Lock()
	objs := slices.Clone(e.objects)
	e.mu.Unlock()
	for _, ob := range objs {
		// A store that is down takes no deletes: stop, rather than wait
		// out the retries of every one; a rerun replaces what is left.
		if errors.Is(e.o.Store.Delete(cctx, ob.Key), storage.ErrUnavailable) {
			return
		}
	}
}

func (e *exporter) progress(start time.Time) func() {
	if e.o.Progress == nil {
		return func() {}
	}
	snap := func(done bool) Progress {
		return Progress{Files: e.files.Load(), FilesTotal: e.filesAll.Load(), Resources: e.res.Load(), PlaintextBytes: e.ptBytes.Load(), Uploaded: e.uploaded.Load(),
			UploadedBytes: e.upBytes.Load(), Elapsed: time.Since(start), Done: done}
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(e.o.ProgressEvery)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				e.o.Progress(snap(false))
			case <-stop:
				return
			}
		}
	}()
	return func() {
		close(stop)
		wg.Wait()
		e.o.Progress(snap(true))
	}
}
