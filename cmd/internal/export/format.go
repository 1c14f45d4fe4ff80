// Package export is ehrport's export pipeline: it walks and validates FHIR
// input (package fhir), encrypts one NDJSON stream per resource type with
// the version-1 object format (package crypto), uploads the parts to a store
// (package storage), and writes a signed Bulk Data manifest last. Restore
// reverses it after checking the signature and every hash.
//
// The layout and the manifest are specified in docs/export-format.md; the
// constants and types in this file mirror that document.
//
// Both directions take an options struct and run with Run(ctx), so tests and
// the CLI call the same code. Memory is bounded whatever the input size:
// resources are streamed, each open part holds at most one encryption segment
// and a small write buffer, ciphertext is spooled to unlinked temporary files
// (never plaintext), and uploads run in a bounded pool.
package export

import (
	"encoding/hex"
	"errors"
	"fmt"
	"path"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Layout constants (docs/export-format.md §1).
const (
	FormatVersion    = 1
	ObjectFormat     = "ehrport-v1"
	ManifestKey      = "manifest.json"
	SignatureKey     = "manifest.json.sig"
	SummaryPath      = "summary.json"
	ObjectSuffix     = ".ehr"
	SummaryKey       = SummaryPath + ObjectSuffix
	QuarantineDir    = "quarantine/"
	QuarantineStream = "quarantine"
	ServerErrorDir   = "_server/error/"   // the source server's error[]/outcome[] files (docs §5)
	ServerDeletedDir = "_server/deleted/" // the source server's deleted[] files (docs §5)
	DataExt          = ".ndjson"
	SignaturePurpose = "ehrport/export-manifest/v1"

	KindData          = "data"
	KindQuarantine    = "quarantine"
	KindSummary       = "summary"
	KindServerError   = "server-error"   // OperationOutcome lines from the server's error[]/outcome[]
	KindServerDeleted = "server-deleted" // Bundle lines from the server's deleted[]

	DefaultSplitResources = 50_000
	DefaultSplitBytes     = 256 << 20
	DefaultConcurrency    = 4
	DefaultMaxOpenParts   = 32 // about 33 MiB of segment buffers at most

	// maxManifestBytes bounds what restore reads as a manifest or summary.
	maxManifestBytes = 256 << 20
)

// serverKinds maps the kinds that carry a Bulk Data server's own files to
// their folder and the one resource type the spec gives their lines. The
// object names never take a type from the content (docs §5).
var serverKinds = map[string]struct{ dir, typ string }{
	KindServerError:   {ServerErrorDir, "OperationOutcome"},
	KindServerDeleted: {ServerDeletedDir, "Bundle"},
}

// ErrTargetHasExport is returned when the target already holds a manifest:
// one location holds one export.
var ErrTargetHasExport = errors.New("the target already holds a complete export (manifest.json)")

// ErrIncomplete means restore found the export inconsistent in a way that is
// not a cryptographic failure: counts or the object lists disagree.
var ErrIncomplete = errors.New("export is incomplete or inconsistent")

// Manifest is manifest.json (docs §2).
type Manifest struct {
	TransactionTime     string        `json:"transactionTime"`
	Request             string        `json:"request"`
	RequiresAccessToken bool          `json:"requiresAccessToken"`
	Output              []OutputEntry `json:"output"`
	Error               []OutputEntry `json:"error"`             // server-error objects (docs §5)
	Deleted             []OutputEntry `json:"deleted,omitempty"` // server-deleted objects (docs §5)
	Extension           struct {
		Ehrport ManifestExt `json:"ehrport"`
	} `json:"extension"`
}

// OutputEntry is one Bulk Data output file. Count is deliberately absent.
type OutputEntry struct {
	Type string `json:"type"`
	URL  string `json:"url"`
}

// ManifestExt is extension.ehrport.
type ManifestExt struct {
	FormatVersion int              `json:"formatVersion"`
	ExportID      string           `json:"exportId"`
	CreatedAt     string           `json:"createdAt"`
	CompletedAt   string           `json:"completedAt"`
	ObjectFormat  string           `json:"objectFormat"`
	Signed        bool             `json:"signed"`
	SigningKeyID  uint32           `json:"signingKeyId,omitempty"`
	Recipients    []RecipientEntry `json:"recipients"`
	Objects       []ObjectEntry    `json:"objects"`
}

// RecipientEntry describes one stanza every object carries.
type RecipientEntry struct {
	Type  string `json:"type"`
	Role  string `json:"role"`
	KeyID uint32 `json:"keyId"`
	URI   string `json:"uri,omitempty"`
}

// ObjectEntry is one object in the manifest: public facts only.
type ObjectEntry struct {
	Key    string `json:"key"`
	Path   string `json:"path"`
	Kind   string `json:"kind"`
	Type   string `json:"type,omitempty"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Signature is manifest.json.sig (docs §2.3).
type Signature struct {
	Purpose   string `json:"purpose"`
	KeyID     uint32 `json:"keyId"`
	Signature []byte `json:"signature"`
}

// SummaryDoc is the encrypted summary.json (docs §3).
type SummaryDoc struct {
	FormatVersion  int              `json:"formatVersion"`
	ExportID       string           `json:"exportId"`
	Counts         map[string]int64 `json:"counts"`
	Resources      int64            `json:"resources"`
	PlaintextBytes int64            `json:"plaintextBytes"`
	IDListSHA256   string           `json:"idListSha256"`
	Stats          Stats            `json:"stats"`
	Findings       map[string]int64 `json:"findings"`
	Objects        []SummaryObject  `json:"objects"`
	// Server counts the source server's error and deleted files (docs
	// §5); absent for file input.
	Server *ServerFiles `json:"server,omitempty"`
}

// ServerFiles counts what a Bulk Data server listed besides its output:
// OperationOutcomes from `error[]`/`outcome[]` (by their most severe
// issue) and transaction Bundles of DELETEs from `deleted[]`.
type ServerFiles struct {
	ErrorFiles     int              `json:"errorFiles"`
	Outcomes       int64            `json:"outcomes"`
	OutcomesBySev  map[string]int64 `json:"outcomesBySeverity"`
	DeletedFiles   int              `json:"deletedFiles"`
	DeletedBundles int64            `json:"deletedBundles"`
	Deleted        int64            `json:"deletedResources"`
	// Malformed counts lines that are JSON but not what the spec says
	// (not an OperationOutcome, not a Bundle of DELETEs); they are stored
	// anyway and reported as bad-server-file findings.
	Malformed int64 `json:"malformed"`
}

// SummaryObject holds the plaintext facts of one object.
type SummaryObject struct {
	Path            string `json:"path"`
	Kind            string `json:"kind"`
	Type            string `json:"type,omitempty"`
	Resources       int64  `json:"resources"`
	PlaintextSize   int64  `json:"plaintextSize"`
	PlaintextSHA256 string `json:"plaintextSha256"`
	IDsSHA256       string `json:"idsSha256"`
}

// Stats are the checker's counters.
type Stats struct {
	Items         int64 `json:"items"`
	Written       int64 `json:"written"`
	Duplicates    int64 `json:"duplicates"`
	Skipped       int64 `json:"skipped"`
	Quarantined   int64 `json:"quarantined"`
	Bundles       int64 `json:"bundles"`
	BundleEntries int64 `json:"bundleEntries"`
}

var (
	// Compiled on first use: package init runs before every command.
	typeRE     = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Z][A-Za-z]{0,63}$`) })
	exportIDRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z0-9._-]{1,128}$`) })
)

// PartPath returns the binding path of part seq of a stream:
// Patient.000.ndjson, quarantine/quarantine.000.ndjson,
// _server/error/OperationOutcome.000.ndjson or
// _server/deleted/Bundle.000.ndjson.
func PartPath(kind, typ string, seq int) string {
	if kind == KindQuarantine {
		return fmt.Sprintf("%s%s.%03d%s", QuarantineDir, QuarantineStream, seq, DataExt)
	}
	if sk, ok := serverKinds[kind]; ok {
		return fmt.Sprintf("%s%s.%03d%s", sk.dir, sk.typ, seq, DataExt)
	}
	return fmt.Sprintf("%s.%03d%s", typ, seq, DataExt)
}

// isLayoutKey reports whether key is a part (data, quarantine or server
// file) name of the layout, which a new export may delete as a leftover.
func isLayoutKey(key string) bool {
	_, ok := layoutKind(key)
	return ok
}

// layoutKind returns the kind of part a key names in the layout.
func layoutKind(key string) (string, bool) {
	base, ok := strings.CutSuffix(key, DataExt+ObjectSuffix)
	if !ok {
		return "", false
	}
	kind, stream := KindData, "" // "": any resource type
	if rest, ok := strings.CutPrefix(base, QuarantineDir); ok {
		base, kind, stream = rest, KindQuarantine, QuarantineStream
	}
	for k, sk := range serverKinds {
		if rest, ok := strings.CutPrefix(base, sk.dir); ok {
			base, kind, stream = rest, k, sk.typ
		}
	}
	typ, seq, ok := strings.Cut(base, ".")
	if !ok || len(seq) < 3 || (stream != "" && typ != stream) || (stream == "" && !typeRE().MatchString(typ)) {
		return "", false
	}
	for _, c := range seq {
		if c < '0' || c > '9' {
			return "", false
		}
	}
	return kind, true
}

// checkEntry validates an object entry read from a manifest, so that a
// manifest can never make restore write outside its folder.
func checkEntry(e ObjectEntry) error {
	bad := func(why string) error {
		return fmt.Errorf("%w: manifest object %q: %s", ErrIncomplete, e.Key, why)
	}
	if e.Key != e.Path+ObjectSuffix {
		return bad("key is not path + " + ObjectSuffix)
	}
	if e.Path == "" || path.IsAbs(e.Path) || path.Clean(e.Path) != e.Path || strings.HasPrefix(e.Path, "..") || strings.Contains(e.Path, "\\") {
		return bad("path is not a clean relative path")
	}
	switch e.Kind {
	case KindSummary:
		if e.Path != SummaryPath {
			return bad("summary has the wrong path")
		}
	case KindData, KindQuarantine, KindServerError, KindServerDeleted:
		if k, ok := layoutKind(e.Key); !ok || k != e.Kind {
			return bad("name is not part of the layout for kind " + e.Kind)
		}
	default:
		return bad("unknown kind " + e.Kind)
	}
	if e.Size < 0 {
		return bad("negative size")
	}
	if b, err := hex.DecodeString(e.SHA256); err != nil || len(b) != 32 {
		return bad("sha256 is not 64 hex digits")
	}
	return nil
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339) }
