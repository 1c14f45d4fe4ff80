package bulk

import (
	"encoding/json"
	"fmt"
	"io"
	"net/url"
	"slices"
	"sync"
	"time"

	"github.com/ehrport/ehrport/fhir"
)

const stateVersion = 1

// State is what an interrupted export needs to continue: the status URL,
// the kick-off request and the files already stored. The caller persists
// it as JSON (Save, LoadState) after Kickoff and at every Download
// checkpoint. It never holds a token, but the status URL (and capability
// file URLs) grant access to the export: keep the file private.
//
// The methods are safe for concurrent use; read the fields directly only
// when no Download is running.
type State struct {
	Version         int          `json:"version"`
	StatusURL       string       `json:"statusUrl"`
	Request         string       `json:"request"` // the kick-off URL (its query holds the GET parameters)
	Method          string       `json:"method"`  // GET or POST
	KickoffTime     time.Time    `json:"kickoffTime"`
	TransactionTime string       `json:"transactionTime,omitempty"` // from the manifest, once complete
	Expires         time.Time    `json:"expires,omitzero"`          // the manifest's Expires header, if any
	Files           []FileRecord `json:"files,omitempty"`           // stored files, in completion order

	mu sync.Mutex
}

// FileRecord is one file stored completely, with what was counted.
type FileRecord struct {
	URL   string      `json:"url"`
	Kind  Kind        `json:"kind"`
	Type  string      `json:"type,omitempty"`
	Count CountResult `json:"count"`
}

// Done reports whether the file at url was stored completely.
func (s *State) Done(url string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.ContainsFunc(s.Files, func(r FileRecord) bool { return r.URL == url })
}

// MarkDone records a completely stored file (replacing an earlier record
// of the same URL).
func (s *State) MarkDone(f File, res CountResult) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Files = slices.DeleteFunc(s.Files, func(r FileRecord) bool { return r.URL == f.URL })
	s.Files = append(s.Files, FileRecord{URL: f.URL, Kind: f.Kind, Type: f.Type, Count: res})
}

func (s *State) setManifestInfo(tt string, expires time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.TransactionTime, s.Expires = tt, expires
}

// Save writes the State as indented JSON.
func (s *State) Save(w io.Writer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(s); err != nil {
		return fmt.Errorf("bulk: saving state: %w", err)
	}
	return nil
}

// LoadState reads a State written by Save. Errors wrap fhir.ErrBadInput.
func LoadState(r io.Reader) (*State, error) {
	data, err := io.ReadAll(io.LimitReader(r, 256<<20))
	if err != nil {
		return nil, fmt.Errorf("bulk: reading state: %w", err)
	}
	var s State
	if err := decodeStrictJSON(data, &s); err != nil {
		return nil, fmt.Errorf("bulk: state: %v: %w", err, fhir.ErrBadInput)
	}
	if err := s.check(); err != nil {
		return nil, err
	}
	return &s, nil
}

func (s *State) check() error {
	if s == nil {
		return fmt.Errorf("bulk: no export state: %w", fhir.ErrBadInput)
	}
	if s.Version != stateVersion {
		return fmt.Errorf("bulk: export state version %d, this build reads %d: %w", s.Version, stateVersion, fhir.ErrBadInput)
	}
	u, err := url.Parse(s.StatusURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("bulk: export state has no usable status URL: %w", fhir.ErrBadInput)
	}
	return nil
}
