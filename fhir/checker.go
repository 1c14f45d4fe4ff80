package fhir

import (
	"container/heap"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"sort"
	"strings"
)

// Policy says what happens to an invalid resource (--on-invalid).
type Policy uint8

const (
	// PolicyFail stops the export at the first invalid resource: Checker
	// methods return a *FindingsError (wrapping ErrBadInput).
	PolicyFail Policy = iota
	// PolicySkip leaves invalid resources out and counts them.
	PolicySkip
	// PolicyQuarantine leaves them out of the export and hands them to the
	// caller for a quarantine area; they are counted.
	PolicyQuarantine
)

// ParsePolicy parses "fail", "skip" or "quarantine".
func ParsePolicy(s string) (Policy, error) {
	switch s {
	case "fail", "":
		return PolicyFail, nil
	case "skip":
		return PolicySkip, nil
	case "quarantine":
		return PolicyQuarantine, nil
	}
	return 0, fmt.Errorf("%w: --on-invalid must be fail, skip or quarantine, not %q", ErrBadInput, s)
}

func (p Policy) String() string { return [...]string{"fail", "skip", "quarantine"}[p] }

// Action tells the exporter what to do with an item.
type Action uint8

const (
	// Write the item: Item.Raw, or Bundle.WriteTo for a Bundle kept whole,
	// followed by a newline.
	Write Action = iota
	// Duplicate: identical content was already written under the same
	// Type/id; write nothing (it is counted).
	Duplicate
	// Skip: invalid under PolicySkip; write nothing.
	Skip
	// Quarantine: invalid under PolicyQuarantine; write the item to the
	// quarantine area instead (Item.Raw, or the Bundle's file).
	Quarantine
)

// Stats counts what the Checker saw. Every item ends in exactly one of
// Written, Duplicates, Skipped or Quarantined.
type Stats struct {
	Items, Written, Duplicates, Skipped, Quarantined int64
	Bundles, BundleEntries                           int64 // Bundles kept whole and their entries
	ByType                                           map[string]int64
	Findings                                         map[Code]int64
	ExternalRefs                                     int64 // absolute URLs that are no Bundle fullUrl: not checked
	ConditionalRefs                                  int64 // Type?query references: resolved by a server, not here
}

// CheckerOptions configures a Checker.
type CheckerOptions struct {
	Policy    Policy
	Validator *Validator // nil: NewValidator(ValidatorOptions{})
	// Report receives every finding in input order (unresolved references
	// at Finish). Nil drops them; they are still counted in Stats.
	Report func(Finding)
	// IndexEntries is how many ids and pending references the index keeps
	// in memory before it spills sorted runs to a temporary file
	// (DefaultIndexEntries when 0).
	IndexEntries int
	// SpillDir holds that file (os.TempDir() when empty). It is unlinked
	// at creation and holds only keyed hashes and sealed chunks.
	SpillDir string
}

// Checker applies validation, duplicate detection, reference resolution
// and the policy across one export. Feed it every item of a Walker in order
// with Item, then call Finish once. It is not safe for concurrent use.
//
// Memory is bounded whatever the input's size: the index of ids (per
// distinct Type/id a 16-byte keyed hash, a 16-byte content hash and the
// position) and of references not yet resolved (the text and path of the
// first use) holds at most IndexEntries entries in memory, about 100 bytes
// each, and spills the rest to a temporary file (idindex.go): past the
// first spill, a fixed 2 MiB Bloom filter and, per spilled run, the first
// key of each 16 KiB chunk (about 0.1 byte per id). What still grows is
// what Finish reports: the unresolved targets, one entry each.
//
// A Checker that spilled holds an open temporary file until Finish or
// Close.
type Checker struct {
	opts  CheckerOptions
	v     *Validator
	stats Stats
	files []string
	fileN map[string]uint32

	ids     map[[16]byte]idRec
	pending map[[16]byte]pendingRef

	hkey  [16]byte // keys the id hashes: nothing spilled can be matched to an id without it
	hbuf  []byte
	limit int
	sp    *spill // nil until the index first spills
	seq   uint64 // order of pending references, to find the first use across runs
}

type idRec struct {
	sum  [16]byte // content hash; zero for Bundle entries (no duplicate check)
	file uint32
	at   uint32 // line or entry
	kind uint8  // idTop or idEntry
}

const (
	idTop uint8 = iota + 1
	idEntry
)

// pendingRef is the first use of a referenced target not yet seen. The
// path is kept as is, not interned: inside Bundles it names the entry, so
// an intern table would grow with the input; the pending map itself is
// bounded by IndexEntries.
type pendingRef struct {
	ref   string
	path  string
	seq   uint64
	file  uint32
	at    uint32
	count uint32
}

// NewChecker returns a Checker.
func NewChecker(o CheckerOptions) *Checker {
	v := o.Validator
	if v == nil {
		v = NewValidator(ValidatorOptions{})
	}
	c := &Checker{opts: o, v: v, fileN: map[string]uint32{},
		ids: map[[16]byte]idRec{}, pending: map[[16]byte]pendingRef{},
		stats: Stats{ByType: map[string]int64{}, Findings: map[Code]int64{}}, limit: o.IndexEntries}
	if c.limit <= 0 {
		c.limit = DefaultIndexEntries
	}
	rand.Read(c.hkey[:]) // never fails (crypto/rand)
	return c
}

// Close releases the index's temporary file, if it spilled. Finish does
// too; Close is for a run that ends before Finish.
func (c *Checker) Close() error {
	c.sp.close()
	c.sp = nil
	return nil
}

// topID returns the top-level resource recorded under k, in memory or
// spilled.
func (c *Checker) topID(k [16]byte) (idRec, bool, error) {
	if r, ok := c.ids[k]; ok && r.kind == idTop {
		return r, true, nil
	}
	if c.sp == nil {
		return idRec{}, false, nil
	}
	return c.sp.topID(k)
}

// maybeSpill writes the in-memory index out as sorted runs once it holds
// IndexEntries entries, and empties it (keeping the maps' tables).
func (c *Checker) maybeSpill() error {
	if len(c.ids)+len(c.pending) < c.limit {
		return nil
	}
	return c.spillAll()
}

func (c *Checker) spillAll() error {
	if c.sp == nil {
		sp, err := newSpill(c.opts.SpillDir)
		if err != nil {
			return err
		}
		c.sp = sp
	}
	if err := c.sp.spillIDs(c.ids); err != nil {
		return err
	}
	if err := c.sp.spillRefs(c.pending); err != nil {
		return err
	}
	clear(c.ids)
	clear(c.pending)
	return nil
}

// Stats returns the counters so far.
func (c *Checker) Stats() Stats { return c.stats }

func (c *Checker) report(f Finding) {
	c.stats.Findings[f.Code]++
	if c.opts.Report != nil {
		c.opts.Report(f)
	}
}

func (c *Checker) fileIndex(name string) uint32 {
	if i, ok := c.fileN[name]; ok {
		return i
	}
	i := uint32(len(c.files))
	c.files = append(c.files, name)
	c.fileN[name] = i
	return i
}

func (c *Checker) posOf(r idRec) Position {
	p := Position{File: c.files[r.file], Entry: -1}
	if r.kind == idEntry || r.at&(1<<31) != 0 {
		p.Entry = int(r.at &^ (1 << 31))
	} else {
		p.Line = int64(r.at)
	}
	return p
}

func packAt(p Position) uint32 {
	if p.Entry >= 0 {
		return uint32(p.Entry) | 1<<31
	}
	return uint32(p.Line)
}

// decide applies the policy to an invalid item.
func (c *Checker) decide(findings []Finding) (Action, error) {
	switch c.opts.Policy {
	case PolicySkip:
		c.stats.Skipped++
		return Skip, nil
	case PolicyQuarantine:
		c.stats.Quarantined++
		return Quarantine, nil
	}
	var errs []Finding
	for _, f := range findings {
		if f.Severity >= Error {
			errs = append(errs, f)
		}
	}
	return Skip, &FindingsError{Findings: errs}
}

// Item checks one item from a Walker and says what to do with it. Under
// PolicyFail an invalid item returns a *FindingsError (wrapping
// ErrBadInput) and the export should stop. For a Bundle kept whole, Item
// streams its entries (Bundle.Entries) and validates each; the caller
// then writes it with Bundle.WriteTo if the action is Write.
func (c *Checker) Item(it *Item) (Action, error) {
	c.stats.Items++
	switch it.Kind {
	case KindInvalid:
		// The finding prints the position itself; keep it once.
		msg := strings.TrimPrefix(it.Err.Error(), it.Pos.String()+": ")
		msg = strings.TrimPrefix(msg, ErrBadInput.Error()+": ")
		f := Finding{Severity: Error, Code: CodeInvalidJSON, Pos: it.Pos, Msg: msg}
		c.report(f)
		return c.decide([]Finding{f})
	case KindBundle:
		return c.bundle(it)
	}
	return c.commit(it, c.v.Check(it.Raw, it.Pos, CheckContext{}))
}

// commit applies the export-wide checks and the policy to a resource whose
// Validator result is known.
func (c *Checker) commit(it *Item, res *Result) (Action, error) {
	for _, f := range res.Findings {
		c.report(f)
	}
	if !res.Valid() {
		return c.decide(res.Findings)
	}
	typeID := res.Type + "/" + res.ID
	k := c.idKey(typeID)
	sum := sha256.Sum256(it.Raw)
	var s16 [16]byte
	copy(s16[:], sum[:16])
	prev, ok, err := c.topID(k)
	if err != nil {
		return Skip, err
	}
	if ok {
		if prev.sum == s16 {
			c.stats.Duplicates++
			c.report(Finding{Severity: Info, Code: CodeDuplicateSame, Pos: it.Pos, Path: res.Type + ".id",
				Msg: fmt.Sprintf("%s also at %s with identical content; stored once", typeID, c.posOf(prev))})
			return Duplicate, nil
		}
		f := Finding{Severity: Error, Code: CodeDuplicate, Pos: it.Pos, Path: res.Type + ".id",
			Msg: fmt.Sprintf("%s also at %s with different content; keep one version (the first was exported)", typeID, c.posOf(prev))}
		c.report(f)
		return c.decide([]Finding{f})
	}
	c.ids[k] = idRec{sum: s16, file: c.fileIndex(it.Pos.File), at: packAt(it.Pos), kind: idTop}
	delete(c.pending, k)
	splitEntry := it.Pos.Entry >= 0
	for _, r := range res.refs {
		c.addRef(r, it.Pos, nil, splitEntry)
	}
	c.stats.Written++
	c.stats.ByType[res.Type]++
	return Write, c.maybeSpill()
}

// addRef records a reference for resolution at Finish. fullURLs is the
// set of fullUrls of the enclosing Bundle kept whole, if any.
func (c *Checker) addRef(r refSite, pos Position, fullURLs map[[16]byte]bool, splitEntry bool) {
	kind, key := parseRef(r.ref)
	switch kind {
	case refTypeID:
		k := c.idKey(key)
		if _, ok := c.ids[k]; ok {
			return
		}
		if p, ok := c.pending[k]; ok {
			p.count++
			c.pending[k] = p
			return
		}
		c.seq++
		c.pending[k] = pendingRef{ref: r.ref, seq: c.seq, path: r.path, file: c.fileIndex(pos.File), at: packAt(pos), count: 1}
	case refURN, refAbsolute:
		if fullURLs != nil && fullURLs[c.idKey(r.ref)] {
			return
		}
		if kind == refAbsolute {
			c.stats.ExternalRefs++
			return
		}
		if splitEntry {
			return // reported by the walker as split-lost-link
		}
		c.report(Finding{Severity: Error, Code: CodeDanglingRef, Pos: pos, Path: r.path,
			Msg: fmt.Sprintf("reference %q matches no fullUrl in its Bundle", r.ref)})
	case refConditional:
		c.stats.ConditionalRefs++
	}
}

// absoluteTypeID extracts Type/id from an absolute RESTful URL.
func absoluteTypeID(u string) (string, bool) {
	parts := strings.Split(u, "/")
	if len(parts) >= 2 {
		t, id := parts[len(parts)-2], parts[len(parts)-1]
		if _, ok := r4Elements()[t]; ok && validID(id) {
			return t + "/" + id, true
		}
	}
	return "", false
}

func (c *Checker) bundle(it *Item) (Action, error) {
	b := it.Bundle
	c.stats.Bundles++
	var (
		findings []Finding
		invalid  bool
		fullURLs = map[[16]byte]bool{}
		entryIDs [][16]byte
		refs     []struct {
			r   refSite
			pos Position
		}
		entries int64
	)
	idOptional := b.Type == "transaction" || b.Type == "batch" || b.Type == "transaction-response" ||
		b.Type == "batch-response" || b.Type == "history"
	err := b.Entries(func(e *Entry) error {
		entries++
		pos := b.Pos
		pos.Entry = e.Index
		if e.FullURL != "" {
			fullURLs[c.idKey(e.FullURL)] = true
		}
		if e.Resource == nil {
			return nil // a request-only or response-only entry
		}
		res := c.v.Check(e.Resource, pos, CheckContext{PathPrefix: fmt.Sprintf("Bundle.entry[%d].resource", e.Index),
			IDOptional: idOptional || e.Method == "POST" || strings.HasPrefix(e.FullURL, "urn:")})
		for _, f := range res.Findings {
			c.report(f)
			if f.Severity >= Error {
				if c.opts.Policy == PolicyFail {
					return &FindingsError{Findings: []Finding{f}}
				}
				invalid = true
				findings = append(findings, f)
			}
		}
		if res.ID != "" {
			entryIDs = append(entryIDs, c.idKey(res.Type+"/"+res.ID))
		}
		if strings.HasPrefix(e.FullURL, "http") {
			if tid, ok := absoluteTypeID(e.FullURL); ok {
				entryIDs = append(entryIDs, c.idKey(tid))
			}
		}
		for _, r := range res.refs {
			refs = append(refs, struct {
				r   refSite
				pos Position
			}{r, pos})
		}
		return nil
	})
	if err != nil {
		if fe, ok := err.(*FindingsError); ok {
			return Skip, fe
		}
		f := Finding{Severity: Error, Code: CodeInvalidJSON, Pos: b.Pos, Path: "Bundle", Msg: err.Error()}
		c.report(f)
		return c.decide([]Finding{f})
	}
	if b.Type == "" {
		f := Finding{Severity: Error, Code: CodeBundleType, Pos: b.Pos, Path: "Bundle.type", Msg: "Bundle has no type"}
		c.report(f)
		findings = append(findings, f)
		invalid = true
	}
	for _, r := range refs {
		if kind, _ := parseRef(r.r.ref); kind == refURN && !fullURLs[c.idKey(r.r.ref)] {
			f := Finding{Severity: Error, Code: CodeDanglingRef, Pos: r.pos, Path: r.r.path,
				Msg: fmt.Sprintf("reference %q matches no fullUrl in this Bundle", r.r.ref)}
			c.report(f)
			if c.opts.Policy == PolicyFail {
				return Skip, &FindingsError{Findings: []Finding{f}}
			}
			findings = append(findings, f)
			invalid = true
		}
	}
	if invalid {
		return c.decide(findings)
	}
	if b.ID != "" {
		k := c.idKey("Bundle/" + b.ID)
		var sum [16]byte
		copy(sum[:], b.digest)
		prev, ok, err := c.topID(k)
		if err != nil {
			return Skip, err
		}
		if ok {
			if prev.sum == sum {
				c.stats.Duplicates++
				c.report(Finding{Severity: Info, Code: CodeDuplicateSame, Pos: b.Pos, Path: "Bundle.id",
					Msg: fmt.Sprintf("Bundle/%s also at %s with identical content; stored once", b.ID, c.posOf(prev))})
				return Duplicate, nil
			}
			f := Finding{Severity: Error, Code: CodeDuplicate, Pos: b.Pos, Path: "Bundle.id",
				Msg: fmt.Sprintf("Bundle/%s also at %s with different content", b.ID, c.posOf(prev))}
			c.report(f)
			return c.decide([]Finding{f})
		}
		c.ids[k] = idRec{sum: sum, file: c.fileIndex(b.Pos.File), at: packAt(b.Pos), kind: idTop}
		delete(c.pending, k)
	}
	fi := c.fileIndex(b.Pos.File)
	for i, k := range entryIDs {
		if _, ok := c.ids[k]; !ok {
			c.ids[k] = idRec{file: fi, at: uint32(i) | 1<<31, kind: idEntry}
		}
		delete(c.pending, k)
	}
	for _, r := range refs {
		c.addRef(r.r, r.pos, fullURLs, false)
	}
	c.stats.BundleEntries += entries
	c.stats.Written++
	c.stats.ByType["Bundle"]++
	return Write, c.maybeSpill()
}

// MaxListedUnresolved bounds the unresolved targets Finish reports one by
// one: the first ones in input order. The others are counted in Stats and
// reported as one finding, so that memory stays bounded when an export
// refers to many resources it does not hold (say every Encounter of a
// Patient-only export).
const MaxListedUnresolved = 10_000

// maxListedUnresolved is MaxListedUnresolved, lowered by tests.
var maxListedUnresolved = MaxListedUnresolved

// earliestRefs keeps the first max references in input order.
type earliestRefs struct {
	c     *Checker
	max   int
	refs  []pendingRef // a max-heap on input order while collecting
	total int
}

func (e *earliestRefs) before(a, b pendingRef) bool {
	if a.file != b.file {
		return e.c.files[a.file] < e.c.files[b.file]
	}
	if a.at != b.at {
		return a.at < b.at
	}
	return a.path < b.path
}

func (e *earliestRefs) Len() int           { return len(e.refs) }
func (e *earliestRefs) Less(i, j int) bool { return e.before(e.refs[j], e.refs[i]) }
func (e *earliestRefs) Swap(i, j int)      { e.refs[i], e.refs[j] = e.refs[j], e.refs[i] }
func (e *earliestRefs) Push(x any)         { e.refs = append(e.refs, x.(pendingRef)) }
func (e *earliestRefs) Pop() any {
	p := e.refs[len(e.refs)-1]
	e.refs = e.refs[:len(e.refs)-1]
	return p
}

func (e *earliestRefs) add(p pendingRef) {
	e.total++
	switch {
	case len(e.refs) < e.max:
		heap.Push(e, p)
	case e.max > 0 && e.before(p, e.refs[0]):
		e.refs[0] = p
		heap.Fix(e, 0)
	}
}

// sorted returns the references kept, in input order.
func (e *earliestRefs) sorted() []pendingRef {
	sort.Slice(e.refs, func(i, j int) bool { return e.before(e.refs[i], e.refs[j]) })
	return e.refs
}

// Finish resolves the references still pending against every id seen, and
// reports each unresolved target once (with the number of references to
// it), up to MaxListedUnresolved of them and then one finding for the
// rest. Under PolicyFail it returns a *FindingsError if any is unresolved:
// the export is incomplete. Under skip and quarantine the findings are
// reported and counted only (the resources were already written).
func (c *Checker) Finish() error {
	unresolved := &earliestRefs{c: c, max: maxListedUnresolved}
	if c.sp == nil {
		for k, p := range c.pending {
			if _, ok := c.ids[k]; !ok {
				unresolved.add(p)
			}
		}
	} else {
		err := c.spillAll()
		if err == nil {
			err = c.sp.unresolved(unresolved.add)
		}
		c.Close()
		if err != nil {
			return err
		}
	}
	var errs []Finding
	for _, p := range unresolved.sorted() {
		msg := fmt.Sprintf("reference %q resolves to no resource in the export", p.ref)
		if p.count > 1 {
			msg += fmt.Sprintf(" (%d references to it; this is the first)", p.count)
		}
		f := Finding{Severity: Error, Code: CodeDanglingRef, Pos: c.posOf(idRec{file: p.file, at: p.at}), Path: p.path, Msg: msg}
		c.report(f)
		errs = append(errs, f)
	}
	more := unresolved.total - len(errs)
	if more > 0 {
		c.stats.Findings[CodeDanglingRef] += int64(more)
		if c.opts.Report != nil {
			c.opts.Report(Finding{Severity: Error, Code: CodeDanglingRef,
				Msg: fmt.Sprintf("%d more referenced targets resolve to no resource in the export (only the first %d are listed)", more, len(errs))})
		}
	}
	c.pending = map[[16]byte]pendingRef{}
	if len(errs) > 0 && c.opts.Policy == PolicyFail {
		return &FindingsError{Findings: errs, More: more}
	}
	return nil
}
