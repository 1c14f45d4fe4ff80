package export

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/ehrport/ehrport/cmd/internal/workers"
	ehrcrypto "github.com/ehrport/ehrport/crypto"
	"github.com/ehrport/ehrport/storage"
)

// RewrapOptions rotate the keys of a whole export at rest by rewriting only
// object headers: every object gets a new header for the same data key
// (crypto.Rewrap), the payload bytes stay as they are, and the manifest is
// rewritten with the new sizes and hashes and signed again.
type RewrapOptions struct {
	Store storage.Store
	// Identities open the current headers (the old keys).
	Identities []ehrcrypto.Identity
	// Verifier checks the current manifest before anything is changed.
	// Nil requires AllowUnsigned.
	Verifier      *ehrcrypto.Verifier
	AllowUnsigned bool
	// Change edits each header's stanza list.
	Change ehrcrypto.RewrapChange
	// NewIdentities open headers already rewritten by an interrupted
	// earlier run, so a rerun recognises them and finishes the job. Nil
	// means a rerun after an interruption fails on those objects.
	NewIdentities []ehrcrypto.Identity
	// Signer signs the new manifest (the new keys' signing key, usually).
	Signer      *ehrcrypto.Signer
	Concurrency int
	Log         *slog.Logger
}

// RewrapSummary says what a rewrap at rest did.
type RewrapSummary struct {
	ExportID string `json:"export_id"`
	Location string `json:"location"`
	Objects  int    `json:"objects"`
	// ServerSide objects had only their first part uploaded; the server
	// copied the rest of the untouched payload.
	ServerSide int `json:"server_side"`
	Rewritten  int `json:"rewritten"`
	// Resumed objects were already rewrapped by an interrupted earlier run.
	Resumed       int           `json:"resumed"`
	BytesUploaded int64         `json:"bytes_uploaded"`
	BytesCopied   int64         `json:"bytes_server_copied"`
	Recipients    int           `json:"recipients"`
	Duration      time.Duration `json:"duration_ns"`
}

// maxHeaderRead bounds how much of an object is read to parse its header.
const maxHeaderRead = 1 << 20

// Run rewraps every object of the export, then writes the new manifest.
// An object whose bytes differ from the manifest (and that is not a
// rewrapped version of itself) stops the run before the manifest changes.
func (o *RewrapOptions) Run(ctx context.Context) (*RewrapSummary, error) {
	start := time.Now()
	if o.Concurrency <= 0 {
		o.Concurrency = 4
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	m, mb, err := ReadManifest(ctx, o.Store)
	if err != nil {
		return nil, err
	}
	switch {
	case o.Verifier != nil:
		if err := VerifySignature(ctx, o.Store, o.Verifier, mb); err != nil {
			return nil, err
		}
	case !o.AllowUnsigned:
		return nil, fmt.Errorf("%w: no key to check the manifest's signature with", ehrcrypto.ErrPolicy)
	}
	trust, err := storage.VerifiesChecksums(ctx, o.Store)
	if err != nil {
		return nil, err
	}
	x := &m.Extension.Ehrport
	sum := &RewrapSummary{ExportID: x.ExportID, Location: o.Store.Location(), Objects: len(x.Objects)}
	var mu sync.Mutex
	var stanzas []ehrcrypto.Stanza
	err = workers.ForEach(ctx, o.Concurrency, func(yield func(int) bool) {
		for i := range x.Objects {
			if !yield(i) {
				return
			}
		}
	}, func(ctx context.Context, i int) error {
		res, err := o.object(ctx, x.ExportID, x.Objects[i], trust)
		if err != nil {
			return err
		}
		mu.Lock()
		defer mu.Unlock()
		x.Objects[i].Size, x.Objects[i].SHA256 = res.size, res.sha256
		sum.BytesUploaded += res.uploaded
		sum.BytesCopied += res.copied
		switch {
		case res.resumed:
			sum.Resumed++
		case res.serverSide:
			sum.ServerSide++
		default:
			sum.Rewritten++
		}
		if stanzas == nil {
			stanzas = res.stanzas
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	x.Recipients = []RecipientEntry{}
	for _, s := range stanzas {
		x.Recipients = append(x.Recipients, RecipientEntry{Type: ehrcrypto.StanzaTypeName(s.Type), Role: ehrcrypto.RoleName(s.Role), KeyID: s.KeyID, URI: string(s.Locator)})
	}
	sum.Recipients = len(x.Recipients)
	if _, err := WriteManifest(ctx, o.Store, m, o.Signer, storage.RetryPolicy{}); err != nil {
		return nil, err
	}
	sum.Duration = time.Since(start)
	return sum, nil
}

type rewrapResult struct {
	size       int64
	sha256     string
	uploaded   int64
	copied     int64
	serverSide bool
	resumed    bool
	stanzas    []ehrcrypto.Stanza
}

// object rewraps one object in place and proves the result.
func (o *RewrapOptions) object(ctx context.Context, exportID string, e ObjectEntry, trust bool) (rewrapResult, error) {
	var res rewrapResult
	head, err := readHead(ctx, o.Store, e.Key, e.Size)
	if err != nil {
		return res, err
	}
	newHead, off, err := ehrcrypto.Rewrap(bytes.NewReader(head), o.Identities, o.Change)
	if err != nil {
		// A rerun after an interruption: this object may already carry
		// the new header. It must then open under the new keys and be
		// bound to this export and path.
		if o.NewIdentities != nil && errors.Is(err, ehrcrypto.ErrNoMatchingKey) {
			return o.resumed(ctx, exportID, e, head)
		}
		return res, fmt.Errorf("rewrap %s: %w", e.Key, err)
	}
	// One streaming pass hashes the object as it is (it must match the
	// manifest) and as it will be (new header, same payload).
	oldHash, newHash := sha256.New(), sha256.New()
	newHash.Write(newHead)
	rc, err := o.Store.Get(ctx, e.Key)
	if err != nil {
		return res, err
	}
	n, err := io.Copy(io.MultiWriter(oldHash, &skipWriter{skip: off, w: newHash}), io.LimitReader(rc, e.Size+1))
	rc.Close()
	if err != nil {
		return res, err
	}
	if n != e.Size || hex.EncodeToString(oldHash.Sum(nil)) != e.SHA256 {
		return res, fmt.Errorf("rewrap %s: %w: the object differs from the signed manifest; verify the export before rotating its keys", e.Key, ehrcrypto.ErrCorrupt)
	}
	newSize := int64(len(newHead)) + e.Size - off
	want := newHash.Sum(nil)

	res.size, res.sha256 = newSize, hex.EncodeToString(want)
	if hr, ok := o.Store.(storage.HeadReplacer); ok {
		err := hr.ReplaceHead(ctx, e.Key, e.Size, newHead, off)
		switch {
		case err == nil:
			res.serverSide = true
			res.uploaded = int64(len(newHead)) + storage.MinPartSize
			res.copied = e.Size - off - storage.MinPartSize
			// Parts copied by the server carry no checksum of ours:
			// read the result back.
			if _, err := storage.Prove(ctx, o.Store, e.Key, newSize, want, false); err != nil {
				return res, err
			}
			res.stanzas, err = parseStanzas(newHead)
			return res, err
		case !errors.Is(err, storage.ErrNotSupported):
			return res, err
		}
	}
	payload, err := rangeOf(ctx, o.Store, e.Key, off, e.Size-off)
	if err != nil {
		return res, err
	}
	defer payload.Close()
	var body io.Reader = payload
	if e.Size-off <= 2*storage.MinPartSize {
		// Small objects are read whole before the same key is written,
		// so no store ever serves a read while it replaces the object.
		buf, err := io.ReadAll(payload)
		if err != nil {
			return res, err
		}
		body = bytes.NewReader(buf)
	}
	if err := o.Store.Put(ctx, e.Key, io.MultiReader(bytes.NewReader(newHead), body), newSize, storage.PutOptions{SHA256: want}); err != nil {
		return res, err
	}
	if _, err := storage.Prove(ctx, o.Store, e.Key, newSize, want, trust); err != nil {
		return res, err
	}
	res.uploaded = newSize
	res.stanzas, err = parseStanzas(newHead)
	return res, err
}

// resumed accepts an object rewrapped by an earlier, interrupted run.
func (o *RewrapOptions) resumed(ctx context.Context, exportID string, e ObjectEntry, head []byte) (rewrapResult, error) {
	var res rewrapResult
	if _, _, err := ehrcrypto.Rewrap(bytes.NewReader(head), o.NewIdentities, ehrcrypto.RewrapChange{}); err != nil {
		return res, fmt.Errorf("rewrap %s: opens under neither the old nor the new keys: %w", e.Key, err)
	}
	h, err := ehrcrypto.ParseHeader(bytes.NewReader(head))
	if err != nil {
		return res, fmt.Errorf("rewrap %s: %w", e.Key, err)
	}
	if h.Binding != (ehrcrypto.Binding{ExportID: exportID, Path: e.Path}) {
		return res, fmt.Errorf("rewrap %s: %w: bound to %s", e.Key, ehrcrypto.ErrCorrupt, h.Binding)
	}
	oi, err := o.Store.Stat(ctx, e.Key)
	if err != nil {
		return res, err
	}
	rc, err := o.Store.Get(ctx, e.Key)
	if err != nil {
		return res, err
	}
	defer rc.Close()
	hh := sha256.New()
	if _, err := io.Copy(hh, rc); err != nil {
		return res, err
	}
	res.size, res.sha256, res.resumed, res.stanzas = oi.Size, hex.EncodeToString(hh.Sum(nil)), true, h.Stanzas
	return res, nil
}

func readHead(ctx context.Context, st storage.Store, key string, size int64) ([]byte, error) {
	rc, err := rangeOf(ctx, st, key, 0, min(size, maxHeaderRead))
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

func rangeOf(ctx context.Context, st storage.Store, key string, off, n int64) (io.ReadCloser, error) {
	if rr, ok := st.(storage.RangeReader); ok {
		return rr.GetRange(ctx, key, off, n)
	}
	rc, err := st.Get(ctx, key)
	if err != nil {
		return nil, err
	}
	if _, err := io.CopyN(io.Discard, rc, off); err != nil {
		rc.Close()
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(rc, n), rc}, nil
}

func parseStanzas(head []byte) ([]ehrcrypto.Stanza, error) {
	h, err := ehrcrypto.ParseHeader(bytes.NewReader(head))
	if err != nil {
		return nil, err
	}
	return h.Stanzas, nil
}

// skipWriter passes on everything after the first skip bytes.
type skipWriter struct {
	skip int64
	w    hash.Hash
}

func (s *skipWriter) Write(p []byte) (int, error) {
	n := len(p)
	if s.skip > 0 {
		d := min(s.skip, int64(len(p)))
		p, s.skip = p[d:], s.skip-d
	}
	s.w.Write(p)
	return n, nil
}
