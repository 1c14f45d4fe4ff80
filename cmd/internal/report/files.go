package report

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	ehrcrypto "github.com/ehrport/ehrport/crypto"
)

// ErrNotReportDir is returned when the report folder exists, is not empty
// and holds no report: writing there could overwrite someone's files.
var ErrNotReportDir = errors.New("the report folder holds files but no report.json")

// Signature is report.json.sig.
type Signature struct {
	Purpose string `json:"purpose"`
	KeyID   uint32 `json:"keyId"`
	// SHA256 of report.json, for a quick look; the signature is what counts.
	SHA256    string `json:"sha256"`
	Signature []byte `json:"signature"`
}

// Marshal returns report.json's bytes: indented JSON and a final newline.
func (r *Report) Marshal() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	if err := enc.Encode(r); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// PrepareDir creates dir if needed. An existing folder is accepted when it
// is empty or already holds a report (which will be replaced).
func PrepareDir(dir string) error {
	if err := CheckDir(dir); err != nil {
		return err
	}
	return os.MkdirAll(dir, 0o755)
}

// CheckDir reports whether Write may write into dir (ErrNotReportDir if
// not), without creating anything.
func CheckDir(dir string) error {
	ents, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist), err == nil && len(ents) == 0:
		return nil
	case err != nil:
		return err
	}
	if _, err := os.Stat(filepath.Join(dir, FileJSON)); err == nil {
		return nil
	}
	return fmt.Errorf("%w: %s (choose another --report folder)", ErrNotReportDir, dir)
}

// Paths are the files Write wrote.
type Paths struct {
	JSON, HTML, Signature, VerifyKey string
}

// Write writes report.json, report.html and report.json.sig into dir, and
// verifyKey (the bytes of signing.pub.json) beside them when not nil. Each
// file is replaced atomically; report.json.sig is written last.
func Write(dir string, r *Report, signer *ehrcrypto.Signer, verifyKey []byte) (Paths, error) {
	if signer == nil {
		return Paths{}, errors.New("report: no signer")
	}
	if err := PrepareDir(dir); err != nil {
		return Paths{}, err
	}
	r.Keys.ReportSigningKeyID = signer.KeyID()
	jb, err := r.Marshal()
	if err != nil {
		return Paths{}, err
	}
	hb, err := HTML(r)
	if err != nil {
		return Paths{}, err
	}
	sig, err := signer.Sign(SignaturePurpose, jb)
	if err != nil {
		return Paths{}, err
	}
	sum := sha256.Sum256(jb)
	sb, err := json.MarshalIndent(Signature{Purpose: SignaturePurpose, KeyID: signer.KeyID(), SHA256: hex.EncodeToString(sum[:]), Signature: sig}, "", "  ")
	if err != nil {
		return Paths{}, err
	}
	p := Paths{JSON: filepath.Join(dir, FileJSON), HTML: filepath.Join(dir, FileHTML), Signature: filepath.Join(dir, FileSignature)}
	files := []struct {
		path string
		data []byte
	}{{p.JSON, jb}, {p.HTML, hb}}
	if verifyKey != nil {
		p.VerifyKey = filepath.Join(dir, FileVerifyKey)
		files = append(files, struct {
			path string
			data []byte
		}{p.VerifyKey, verifyKey})
	}
	files = append(files, struct {
		path string
		data []byte
	}{p.Signature, append(sb, '\n')})
	for _, f := range files {
		data := f.data
		if err := ehrcrypto.WriteFileAtomic(f.path, func(w io.Writer) error { _, err := w.Write(data); return err }); err != nil {
			return Paths{}, err
		}
		// Reports are meant to be handed to auditors: readable by others.
		if err := os.Chmod(f.path, 0o644); err != nil {
			return Paths{}, err
		}
	}
	return p, nil
}

// Verify checks the signature file sigPath over the exact bytes of the
// report at jsonPath with v, then parses the report. A signature that does
// not verify wraps crypto.ErrCorrupt (the report or its signature was
// changed) or crypto.ErrNoMatchingKey (signed by another key).
func Verify(jsonPath, sigPath string, v *ehrcrypto.Verifier) (*Report, *Signature, error) {
	jb, err := os.ReadFile(jsonPath)
	if err != nil {
		return nil, nil, err
	}
	sb, err := os.ReadFile(sigPath)
	if err != nil {
		return nil, nil, err
	}
	var sig Signature
	if err := json.Unmarshal(sb, &sig); err != nil || sig.Purpose != SignaturePurpose || len(sig.Signature) == 0 {
		return nil, nil, fmt.Errorf("%w: %s is not an ehrport report signature", ehrcrypto.ErrCorrupt, sigPath)
	}
	if err := v.Verify(SignaturePurpose, jb, sig.Signature); err != nil {
		return nil, &sig, fmt.Errorf("%s: signature does not verify: %w", jsonPath, err)
	}
	var r Report
	if err := json.Unmarshal(jb, &r); err != nil {
		return nil, &sig, fmt.Errorf("%w: %s: signed, but not a report: %v", ehrcrypto.ErrCorrupt, jsonPath, err)
	}
	if r.SchemaVersion != SchemaVersion {
		return &r, &sig, fmt.Errorf("%w: %s has report schema version %d; this ehrport reads version %d", ehrcrypto.ErrPolicy, jsonPath, r.SchemaVersion, SchemaVersion)
	}
	return &r, &sig, nil
}
