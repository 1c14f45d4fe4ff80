package fhir

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
)

// splittable Bundle types: their entries are independent resources.
// Document and message Bundles are records in their own right and history
// or response Bundles describe operations, so they are always kept whole.
var splittable = map[string]bool{"collection": true, "transaction": true, "batch": true, "searchset": true}

// splitter yields the entries of one Bundle as top-level resources.
type splitter struct {
	b    *Bundle
	rc   io.ReadCloser
	bs   *bundleStream
	h    hash.Hash
	ef   entryFields
	item Item
}

func (w *Walker) newSplitter(b *Bundle) (source, error) {
	whole := func(reason string) (source, error) {
		w.opts.report(Finding{Severity: Info, Code: CodeKeptWhole, Pos: b.Pos, Path: "Bundle",
			Msg: "Bundle kept whole, not split: " + reason})
		return &oneItem{item: &Item{Kind: KindBundle, Pos: b.Pos, Bundle: b}}, nil
	}
	if !splittable[b.Type] {
		return whole(fmt.Sprintf("Bundle.type %q is not one of collection, transaction, batch, searchset", b.Type))
	}
	type urnRef struct {
		entry int
		path  string
		ref   string
	}
	var (
		reason  string
		fullURN = map[string]bool{}
		urnRefs []urnRef
		f       facts
	)
	err := b.Entries(func(e *Entry) error {
		if e.Resource == nil {
			reason = fmt.Sprintf("entry %d has no resource", e.Index)
			return errStop
		}
		if err := readFacts(&f, e.Resource, fmt.Sprintf("Bundle.entry[%d].resource", e.Index)); err != nil {
			return err
		}
		if !f.hasID || f.id == "" {
			reason = fmt.Sprintf("entry %d (%s) has no id", e.Index, f.resourceType)
			return errStop
		}
		if strings.HasPrefix(e.FullURL, "urn:uuid:") {
			fullURN[e.FullURL] = true
		}
		for _, r := range f.refs {
			if strings.HasPrefix(r.ref, "urn:uuid:") {
				urnRefs = append(urnRefs, urnRef{e.Index, r.path, r.ref})
			}
		}
		return nil
	})
	if errors.Is(err, errStop) {
		return whole(reason)
	}
	if err != nil {
		return &oneItem{item: &Item{Kind: KindInvalid, Pos: b.Pos, Err: err}}, nil
	}
	for _, r := range urnRefs {
		msg := fmt.Sprintf("reference %q points at a urn:uuid fullUrl, which is lost when the Bundle is split; the content is not rewritten", r.ref)
		if !fullURN[r.ref] {
			msg = fmt.Sprintf("reference %q matches no fullUrl in this Bundle", r.ref)
		}
		w.opts.report(Finding{Severity: Warning, Code: CodeSplitLostLink, Pos: Position{File: b.Pos.File, Entry: r.entry}, Path: r.path, Msg: msg})
	}
	rc, err := b.open()
	if err != nil {
		return nil, err
	}
	sp := &splitter{b: b, rc: rc, h: sha256.New()}
	sp.bs = newBundleStream(rc, sp.h, b.opts)
	return sp, nil
}

func (sp *splitter) next() (*Item, error) {
	raw, err := sp.bs.next()
	if err == io.EOF {
		if string(sp.h.Sum(nil)) != string(sp.b.digest) {
			return nil, fmt.Errorf("%s: %w: the file changed while it was being read; run the export again", sp.b.Pos.File, ErrBadInput)
		}
		return nil, io.EOF
	}
	if err != nil {
		return nil, sp.b.wrap(err, sp.bs.n-1)
	}
	if err := sp.ef.read(raw); err != nil || sp.ef.res.end == 0 {
		return nil, fmt.Errorf("%s: %w: entry changed between passes", sp.b.Pos.File, ErrBadInput)
	}
	sp.item = Item{Kind: KindResource, Pos: Position{File: sp.b.Pos.File, Entry: sp.bs.n - 1}, Raw: raw[sp.ef.res.start:sp.ef.res.end]}
	return &sp.item, nil
}

func (sp *splitter) close() error { return sp.rc.Close() }
