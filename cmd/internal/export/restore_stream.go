package export

import (
	"bufio"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"

	ehrcrypto "github.com/ehrport/ehrport/crypto"
)

// RestoredObject names one data object handed to a RestoreSink.
type RestoredObject struct {
	Key       string // the object's key in the store
	Path      string // its path in the export (Type.NNN.ndjson)
	Type      string // the resource type of every line
	Resources int64  // lines, as the signed summary counts them
}

// RestoreSink receives the plaintext NDJSON of one data object of a restore
// (RestoreOptions.Sink). The object's ciphertext has already matched the
// signed manifest (size and SHA-256) when the sink is called, so nothing
// tampered with reaches it; the plaintext hash, line count and ids are
// checked against the summary as the sink reads.
//
// Contract: the sink reads plaintext to EOF, or returns an error, which
// fails the restore. It is called from up to RestoreOptions.Concurrency
// goroutines at once, and must not keep plaintext after it returns.
type RestoreSink func(ctx context.Context, obj RestoredObject, plaintext io.Reader) error

// streamObject is restoreObject for a Sink: no plaintext file. The
// ciphertext is spooled to an unlinked 0600 file in SpoolDir, hashed on the
// way, and checked against the manifest before the first byte is decrypted;
// then the plaintext streams from the spool through the hash and the line
// scanner into the sink. Quarantined objects are checked the same way but
// never given to the sink: they are not valid resources.
func (o *RestoreOptions) streamObject(ctx context.Context, exportID string, ob ObjectEntry, so SummaryObject) (*lineResult, error) {
	spool, err := os.CreateTemp(o.SpoolDir, "ehrport-restore-*.ehr")
	if err != nil {
		return nil, fmt.Errorf("spooling ciphertext: %w", err)
	}
	os.Remove(spool.Name()) // gone when closed, whatever happens
	defer spool.Close()
	rc, err := getListed(ctx, o.Store, ob.Key)
	if err != nil {
		return nil, err
	}
	ct := &hashCounter{h: sha256.New(), r: rc}
	buf := make([]byte, 1<<20)
	_, err = io.CopyBuffer(spool, ct, buf)
	rc.Close()
	if err != nil {
		return nil, err
	}
	if err := checkCiphertext(ob, ct.n, ct.h.Sum(nil)); err != nil {
		return nil, err
	}
	if _, err := spool.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	r, err := ehrcrypto.NewDecryptReader(bufio.NewReaderSize(spool, 1<<20), o.Identities, ehrcrypto.Binding{ExportID: exportID, Path: ob.Path})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ob.Key, err)
	}
	scan := newLineScanner()
	pt := &hashCounter{h: sha256.New(), r: io.TeeReader(r, scan)}
	if ob.Kind == KindData {
		obj := RestoredObject{Key: ob.Key, Path: ob.Path, Type: so.Type, Resources: so.Resources}
		if err := o.Sink(ctx, obj, pt); err != nil {
			return nil, fmt.Errorf("%s: %w", ob.Key, err)
		}
	}
	// The rest (all of a quarantined object): authenticated and hashed.
	if _, err := io.CopyBuffer(io.Discard, pt, buf); err != nil {
		return nil, fmt.Errorf("%s: %w", ob.Key, err)
	}
	return checkPlaintext(ob, so, pt, scan)
}
