// Package keys manages an ehrport key directory (docs/keys.md): the
// hospital's KEK keyset, an HPKE keypair and an Ed25519 signing keyset, each
// encrypted at rest under a passphrase-derived key (argon2id) or a KMS key,
// plus the public halves in the clear.
//
// Secret key files have mode 0600 and are refused (ErrPolicy) when group or
// others can read them. Key ids, types, statuses and creation dates are
// readable without unlocking; secrets never leave a Tink keyset handle.
package keys

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"sort"
	"strings"
	"sync"
	"time"

	ehrcrypto "github.com/ehrport/ehrport/crypto"
	"github.com/tink-crypto/tink-go/v2/aead"
	aeadsubtle "github.com/tink-crypto/tink-go/v2/aead/subtle"
	"github.com/tink-crypto/tink-go/v2/hybrid"
	"github.com/tink-crypto/tink-go/v2/keyset"
	tinkpb "github.com/tink-crypto/tink-go/v2/proto/tink_go_proto"
	"github.com/tink-crypto/tink-go/v2/signature"
	"github.com/tink-crypto/tink-go/v2/tink"
	"golang.org/x/crypto/argon2"
)

// File names inside a key directory.
const (
	FileKEK        = "kek.json"
	FileHPKE       = "hpke.json"
	FileSigning    = "signing.json"
	FileHPKEPublic = "hpke.pub.json"
	FileVerify     = "signing.pub.json"

	fileFormat = "ehrport-keyset/v1"
)

// Purposes of the three keysets.
const (
	PurposeKEK     = "kek"
	PurposeHPKE    = "hpke"
	PurposeSigning = "signing"
)

var purposeFile = map[string]string{PurposeKEK: FileKEK, PurposeHPKE: FileHPKE, PurposeSigning: FileSigning}

// Argon2id parameters written by Init. 32 MiB and 3 passes exceed every
// OWASP argon2id profile while keeping decrypt's peak memory under 64 MB.
var DefaultArgon2 = Argon2Params{Time: 3, MemoryKiB: 32 * 1024, Threads: 1}

// Bounds accepted when reading a key file: below is too weak, above is a
// denial of service.
const (
	minArgonTime, maxArgonTime = 2, 16
	minArgonMem, maxArgonMem   = 19 * 1024, 1024 * 1024
	maxArgonThreads            = 8
)

// Argon2Params are recorded in every passphrase-protected key file.
type Argon2Params struct {
	Time      uint32 `json:"time"`
	MemoryKiB uint32 `json:"memory_kib"`
	Threads   uint8  `json:"threads"`
}

// Protection is how a key file is encrypted at rest.
type Protection struct {
	Kind   string        `json:"kind"` // "argon2id" or "kms"
	Salt   []byte        `json:"salt,omitempty"`
	Argon2 *Argon2Params `json:"argon2,omitempty"`
	URI    string        `json:"uri,omitempty"`
}

// KeyMeta records what Tink keysets do not: when a key was made.
type KeyMeta struct {
	ID      uint32    `json:"id"`
	Created time.Time `json:"created"`
}

type file struct {
	Format     string          `json:"format"`
	Purpose    string          `json:"purpose"`
	Protection Protection      `json:"protection"`
	Keys       []KeyMeta       `json:"keys"`
	Keyset     json.RawMessage `json:"keyset"`
}

// Unlock supplies what it takes to open key files. Passphrase is called at
// most once per Dir, only when a passphrase-protected file is opened. KMS
// returns the AEAD for a KMS key URI (see crypto/kms).
type Unlock struct {
	Passphrase func() ([]byte, error)
	KMS        func(uri string) (tink.AEAD, error)
}

// Dir is an opened key directory. Secret keysets are decrypted lazily.
type Dir struct {
	Path   string
	unlock Unlock
	pass   []byte
	now    func() time.Time
	// derived passphrase keys by salt, so a directory costs one argon2 run
	// per file at most.
	kdf map[string]tink.AEAD
	// mu serialises unlocking: concurrent readers of one directory (many
	// objects opened at once) wait for one argon2 run instead of racing.
	mu sync.Mutex
}

// Options for Init.
type InitOptions struct {
	// KMSURI protects the key files with a KMS key instead of a passphrase.
	KMSURI string
	Argon2 Argon2Params
	Now    func() time.Time
	Rand   io.Reader
}

func policyErr(f string, a ...any) error {
	return fmt.Errorf("%w: %s", ehrcrypto.ErrPolicy, fmt.Sprintf(f, a...))
}

func ad(purpose string, p Protection, keys []KeyMeta) []byte {
	pj, _ := json.Marshal(p)
	kj, _ := json.Marshal(keys)
	b := []byte(fileFormat + "\x00" + purpose + "\x00")
	b = append(b, pj...)
	b = append(b, 0)
	return append(b, kj...)
}

// Init creates a key directory at path with a KEK keyset, an HPKE keypair
// and an Ed25519 signing keyset. It refuses to overwrite existing key files.
func Init(path string, unlock Unlock, opt InitOptions) (*Dir, error) {
	if opt.Now == nil {
		opt.Now = time.Now
	}
	if opt.Rand == nil {
		opt.Rand = rand.Reader
	}
	if opt.Argon2 == (Argon2Params{}) {
		opt.Argon2 = DefaultArgon2
	}
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, err
	}
	for _, f := range []string{FileKEK, FileHPKE, FileSigning} {
		if _, err := os.Stat(filepath.Join(path, f)); err == nil {
			return nil, policyErr("%s already exists; refusing to overwrite keys", filepath.Join(path, f))
		}
	}
	d := &Dir{Path: path, unlock: unlock, now: opt.Now, kdf: map[string]tink.AEAD{}}
	templates := map[string]*tinkpb.KeyTemplate{
		PurposeKEK:     aead.AES256GCMKeyTemplate(),
		PurposeHPKE:    hybrid.DHKEM_X25519_HKDF_SHA256_HKDF_SHA256_AES_256_GCM_Key_Template(),
		PurposeSigning: signature.ED25519KeyTemplate(),
	}
	for _, purpose := range []string{PurposeKEK, PurposeHPKE, PurposeSigning} {
		h, err := keyset.NewHandle(templates[purpose])
		if err != nil {
			return nil, err
		}
		var prot Protection
		if opt.KMSURI != "" {
			prot = Protection{Kind: "kms", URI: opt.KMSURI}
		} else {
			salt := make([]byte, 16)
			if _, err := io.ReadFull(opt.Rand, salt); err != nil {
				return nil, err
			}
			a := opt.Argon2
			prot = Protection{Kind: "argon2id", Salt: salt, Argon2: &a}
		}
		meta := []KeyMeta{{ID: h.KeysetInfo().GetPrimaryKeyId(), Created: opt.Now().UTC().Truncate(time.Second)}}
		if err := d.write(purpose, h, prot, meta); err != nil {
			return nil, err
		}
		if purpose != PurposeKEK {
			pub, err := h.Public()
			if err != nil {
				return nil, err
			}
			name := FileHPKEPublic
			if purpose == PurposeSigning {
				name = FileVerify
			}
			if err := writePublic(filepath.Join(path, name), pub); err != nil {
				return nil, err
			}
		}
	}
	return d, nil
}

func writePublic(path string, pub *keyset.Handle) error {
	var buf bytes.Buffer
	if err := pub.WriteWithNoSecrets(keyset.NewJSONWriter(&buf)); err != nil {
		return err
	}
	return ehrcrypto.WriteFileAtomic(path, func(w io.Writer) error {
		_, err := w.Write(buf.Bytes())
		if err == nil {
			err = os.Chmod(w.(*os.File).Name(), 0o644)
		}
		return err
	})
}

// Open opens an existing key directory. It checks that every secret key
// file exists and is private to its owner.
func Open(path string, unlock Unlock) (*Dir, error) {
	for _, f := range []string{FileKEK, FileHPKE, FileSigning} {
		p := filepath.Join(path, f)
		st, err := os.Stat(p)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				return nil, fmt.Errorf("%w: %s is not a key directory (no %s); run `ehrport keys init --keys %s`", ehrcrypto.ErrNoMatchingKey, path, f, path)
			}
			return nil, err
		}
		if st.Mode().Perm()&0o077 != 0 {
			return nil, policyErr("key file %s has mode %04o: group or others can read it; run chmod 600 %s", p, st.Mode().Perm(), p)
		}
	}
	return &Dir{Path: path, unlock: unlock, now: time.Now, kdf: map[string]tink.AEAD{}}, nil
}

func (d *Dir) readFile(purpose string) (*file, error) {
	p := filepath.Join(d.Path, purposeFile[purpose])
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	return parseFile(b, p, purpose)
}

// maxKeyFile bounds a key file; real ones are a few KiB.
const maxKeyFile = 1 << 20

func parseFile(b []byte, p, purpose string) (*file, error) {
	if len(b) > maxKeyFile {
		return nil, fmt.Errorf("%w: key file %s is larger than %d bytes", ehrcrypto.ErrCorrupt, p, maxKeyFile)
	}
	var f file
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%w: key file %s: %v", ehrcrypto.ErrCorrupt, p, err)
	}
	if f.Format != fileFormat || f.Purpose != purpose {
		return nil, fmt.Errorf("%w: key file %s is %q/%q, want %q/%q", ehrcrypto.ErrPolicy, p, f.Format, f.Purpose, fileFormat, purpose)
	}
	if _, err := keyset.NewJSONReader(bytes.NewReader(f.Keyset)).ReadEncrypted(); err != nil {
		return nil, fmt.Errorf("%w: key file %s: encrypted keyset: %v", ehrcrypto.ErrCorrupt, p, err)
	}
	return &f, nil
}

func (d *Dir) masterAEAD(p Protection) (tink.AEAD, error) {
	switch p.Kind {
	case "kms":
		if d.unlock.KMS == nil {
			return nil, policyErr("key files are protected by KMS key %s and no KMS access was configured", p.URI)
		}
		a, err := d.unlock.KMS(p.URI)
		if err != nil {
			return nil, fmt.Errorf("%w: KMS %s: %v", ehrcrypto.ErrNoMatchingKey, p.URI, err)
		}
		return a, nil
	case "argon2id":
		a := p.Argon2
		if a == nil || len(p.Salt) < 16 || len(p.Salt) > 64 {
			return nil, policyErr("argon2id parameters missing")
		}
		if a.Time < minArgonTime || a.Time > maxArgonTime || a.MemoryKiB < minArgonMem || a.MemoryKiB > maxArgonMem || a.Threads < 1 || a.Threads > maxArgonThreads {
			return nil, policyErr("argon2id parameters t=%d m=%dKiB p=%d are outside the accepted range", a.Time, a.MemoryKiB, a.Threads)
		}
		key := string(p.Salt) + fmt.Sprint(*a)
		d.mu.Lock()
		defer d.mu.Unlock()
		if m, ok := d.kdf[key]; ok {
			return m, nil
		}
		if d.pass == nil {
			if d.unlock.Passphrase == nil {
				return nil, policyErr("key files are passphrase-protected and no passphrase source was configured")
			}
			pass, err := d.unlock.Passphrase()
			if err != nil {
				return nil, err
			}
			if len(pass) == 0 {
				return nil, policyErr("empty passphrase")
			}
			d.pass = pass
		}
		k := argon2.IDKey(d.pass, p.Salt, a.Time, a.MemoryKiB, a.Threads, 32)
		// Hand argon2's memory back to the OS before any streaming starts, so
		// that peak memory is the larger of the two phases, not their sum.
		debug.FreeOSMemory()
		m, err := aeadsubtle.NewAESGCM(k)
		if err != nil {
			return nil, err
		}
		d.kdf[key] = m
		return m, nil
	}
	return nil, policyErr("unknown key protection %q", p.Kind)
}

func (d *Dir) write(purpose string, h *keyset.Handle, p Protection, meta []KeyMeta) error {
	m, err := d.masterAEAD(p)
	if err != nil {
		return err
	}
	var ks bytes.Buffer
	if err := h.WriteWithAssociatedData(keyset.NewJSONWriter(&ks), m, ad(purpose, p, meta)); err != nil {
		return fmt.Errorf("encrypting %s keyset: %w", purpose, err)
	}
	f := file{Format: fileFormat, Purpose: purpose, Protection: p, Keys: meta, Keyset: ks.Bytes()}
	out, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	return ehrcrypto.WriteFileAtomic(filepath.Join(d.Path, purposeFile[purpose]), func(w io.Writer) error {
		_, err := w.Write(append(out, '\n'))
		return err
	})
}

// Keyset decrypts and returns the secret keyset for purpose.
func (d *Dir) Keyset(purpose string) (*keyset.Handle, error) {
	h, _, err := d.load(purpose)
	return h, err
}

func (d *Dir) load(purpose string) (*keyset.Handle, *file, error) {
	f, err := d.readFile(purpose)
	if err != nil {
		return nil, nil, err
	}
	m, err := d.masterAEAD(f.Protection)
	if err != nil {
		if errors.Is(err, ehrcrypto.ErrPolicy) && !strings.Contains(err.Error(), "passphrase") {
			// The protection block of this file is at fault: name it.
			err = fmt.Errorf("key file %s: %w", filepath.Join(d.Path, purposeFile[purpose]), err)
		}
		return nil, nil, err
	}
	h, err := keyset.ReadWithAssociatedData(keyset.NewJSONReader(bytes.NewReader(f.Keyset)), m, ad(purpose, f.Protection, f.Keys))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: cannot decrypt %s: wrong passphrase or KMS key, or the key file was altered", ehrcrypto.ErrNoMatchingKey, filepath.Join(d.Path, purposeFile[purpose]))
	}
	return h, f, nil
}

// Recipients returns the recipients `encrypt --keys DIR` writes for: the
// primary KEK.
func (d *Dir) Recipients() ([]ehrcrypto.Recipient, error) {
	h, err := d.Keyset(PurposeKEK)
	if err != nil {
		return nil, err
	}
	r, err := ehrcrypto.NewKeysetRecipient(h)
	if err != nil {
		return nil, err
	}
	return []ehrcrypto.Recipient{r}, nil
}

// Identities returns identities for the KEK and HPKE keysets. Each keyset
// is decrypted only when a stanza names one of its key ids.
func (d *Dir) Identities() []ehrcrypto.Identity {
	return []ehrcrypto.Identity{&lazyIdentity{d: d, purpose: PurposeKEK}, &lazyIdentity{d: d, purpose: PurposeHPKE}}
}

type lazyIdentity struct {
	d       *Dir
	purpose string
	// mu guards the lazily loaded fields: identities are used by many
	// goroutines at once (objects opened concurrently).
	mu  sync.Mutex
	ids map[uint32]bool
	id  ehrcrypto.Identity
	err error
}

func (l *lazyIdentity) Unwrap(s *ehrcrypto.Stanza, ad []byte) ([]byte, error) {
	want := uint8(ehrcrypto.StanzaTinkAEAD)
	if l.purpose == PurposeHPKE {
		want = ehrcrypto.StanzaHPKE
	}
	if s.Type != want {
		return nil, fmt.Errorf("%w: not a %s stanza", ehrcrypto.ErrNoMatchingKey, ehrcrypto.StanzaTypeName(want))
	}
	id, err := l.identity(s.KeyID)
	if err != nil {
		return nil, err
	}
	return id.Unwrap(s, ad)
}

// identity loads (once) the keyset that holds keyID.
func (l *lazyIdentity) identity(keyID uint32) (ehrcrypto.Identity, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ids == nil {
		l.ids = map[uint32]bool{}
		infos, err := l.d.listFile(l.purpose)
		if err != nil {
			return nil, err
		}
		for _, i := range infos {
			l.ids[i.ID] = true
		}
	}
	if !l.ids[keyID] {
		return nil, fmt.Errorf("%w: key %d is not in %s", ehrcrypto.ErrNoMatchingKey, keyID, l.d.Path)
	}
	if l.id == nil && l.err == nil {
		h, err := l.d.Keyset(l.purpose)
		if err != nil {
			l.err = err
		} else if l.purpose == PurposeKEK {
			l.id, l.err = ehrcrypto.NewKeysetIdentity(h)
		} else {
			l.id, l.err = ehrcrypto.NewHPKEIdentity(h)
		}
	}
	if l.err != nil {
		return nil, l.err
	}
	return l.id, nil
}

// Info describes one key, without any secret.
type Info struct {
	ID      uint32    `json:"id"`
	Purpose string    `json:"purpose"`
	Type    string    `json:"type"`
	Status  string    `json:"status"`
	Primary bool      `json:"primary"`
	Created time.Time `json:"created"`
	File    string    `json:"file"`
}

func (d *Dir) listFile(purpose string) ([]Info, error) {
	f, err := d.readFile(purpose)
	if err != nil {
		return nil, err
	}
	eks, err := keyset.NewJSONReader(bytes.NewReader(f.Keyset)).ReadEncrypted()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ehrcrypto.ErrCorrupt, purposeFile[purpose], err)
	}
	created := map[uint32]time.Time{}
	for _, k := range f.Keys {
		created[k.ID] = k.Created
	}
	info := eks.GetKeysetInfo()
	var out []Info
	for _, ki := range info.GetKeyInfo() {
		out = append(out, Info{
			ID: ki.GetKeyId(), Purpose: purpose,
			Type:    strings.TrimPrefix(ki.GetTypeUrl(), "type.googleapis.com/google.crypto.tink."),
			Status:  strings.ToLower(ki.GetStatus().String()),
			Primary: ki.GetKeyId() == info.GetPrimaryKeyId(),
			Created: created[ki.GetKeyId()],
			File:    purposeFile[purpose],
		})
	}
	return out, nil
}

// List returns every key of the directory without unlocking anything.
func (d *Dir) List() ([]Info, error) {
	var all []Info
	for _, p := range []string{PurposeKEK, PurposeHPKE, PurposeSigning} {
		l, err := d.listFile(p)
		if err != nil {
			return nil, err
		}
		all = append(all, l...)
	}
	sort.SliceStable(all, func(i, j int) bool {
		if all[i].Purpose != all[j].Purpose {
			return false
		}
		return all[i].Created.Before(all[j].Created)
	})
	return all, nil
}

// Rotate adds a new primary KEK; the old keys stay for decryption.
func (d *Dir) Rotate() (uint32, error) {
	h, f, err := d.load(PurposeKEK)
	if err != nil {
		return 0, err
	}
	m := keyset.NewManagerFromHandle(h)
	id, err := m.Add(aead.AES256GCMKeyTemplate())
	if err != nil {
		return 0, err
	}
	if err := m.SetPrimary(id); err != nil {
		return 0, err
	}
	nh, err := m.Handle()
	if err != nil {
		return 0, err
	}
	meta := append(f.Keys, KeyMeta{ID: id, Created: d.now().UTC().Truncate(time.Second)})
	return id, d.write(PurposeKEK, nh, f.Protection, meta)
}

// Disable disables key id in whichever keyset holds it. A primary key
// cannot be disabled (rotate first).
func (d *Dir) Disable(id uint32) (string, error) {
	for _, p := range []string{PurposeKEK, PurposeHPKE, PurposeSigning} {
		infos, err := d.listFile(p)
		if err != nil {
			return "", err
		}
		for _, i := range infos {
			if i.ID != id {
				continue
			}
			if i.Primary {
				return "", policyErr("key %d is the primary %s key; rotate before disabling it", id, p)
			}
			h, f, err := d.load(p)
			if err != nil {
				return "", err
			}
			m := keyset.NewManagerFromHandle(h)
			if err := m.Disable(id); err != nil {
				return "", policyErr("cannot disable key %d: %v", id, err)
			}
			nh, err := m.Handle()
			if err != nil {
				return "", err
			}
			return p, d.write(p, nh, f.Protection, f.Keys)
		}
	}
	return "", fmt.Errorf("%w: no key %d in %s", ehrcrypto.ErrNoMatchingKey, id, d.Path)
}

// WritePublic copies the public recipient and verification keysets to
// outDir (created if needed) and returns the paths written.
func (d *Dir) WritePublic(outDir string) ([]string, error) {
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, err
	}
	var out []string
	for _, name := range []string{FileHPKEPublic, FileVerify} {
		h, err := readPublic(filepath.Join(d.Path, name))
		if err != nil {
			return nil, err
		}
		p := filepath.Join(outDir, name)
		if filepath.Clean(p) != filepath.Clean(filepath.Join(d.Path, name)) {
			if err := writePublic(p, h); err != nil {
				return nil, err
			}
		}
		out = append(out, p)
	}
	return out, nil
}

func readPublic(path string) (*keyset.Handle, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return parsePublic(b, path)
}

func parsePublic(b []byte, path string) (*keyset.Handle, error) {
	if len(b) > maxKeyFile {
		return nil, fmt.Errorf("%w: %s is too large for a public keyset", ehrcrypto.ErrCorrupt, path)
	}
	h, err := keyset.ReadWithNoSecrets(keyset.NewJSONReader(bytes.NewReader(b)))
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not a public Tink keyset (or holds secrets): %v", ehrcrypto.ErrPolicy, path, err)
	}
	return h, nil
}

// LoadRecipient loads a public HPKE recipient file (hpke.pub.json).
func LoadRecipient(path string) (*ehrcrypto.HPKERecipient, error) {
	h, err := readPublic(path)
	if err != nil {
		return nil, err
	}
	return ehrcrypto.NewHPKERecipient(h)
}

// LoadVerifier loads a public signature-verification keyset
// (signing.pub.json) alone.
func LoadVerifier(path string) (*ehrcrypto.Verifier, error) {
	h, err := readPublic(path)
	if err != nil {
		return nil, err
	}
	return ehrcrypto.NewVerifier(h)
}

// Signer returns the directory's signer.
func (d *Dir) Signer() (*ehrcrypto.Signer, error) {
	h, err := d.Keyset(PurposeSigning)
	if err != nil {
		return nil, err
	}
	return ehrcrypto.NewSigner(h)
}

// Public returns the directory's public HPKE recipient.
func (d *Dir) Public() (*ehrcrypto.HPKERecipient, error) {
	return LoadRecipient(filepath.Join(d.Path, FileHPKEPublic))
}
