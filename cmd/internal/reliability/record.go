package reliability

import (
	"encoding/json"
	"os"
	"sync"
)

// OutEnv names the file that fault tests append their Records to, one JSON
// line each; unset, nothing is written.
const OutEnv = "EHRPORT_RELIABILITY_OUT"

// Record is one scenario's counts: a line of the file named by OutEnv and
// a row of docs/RELIABILITY.md.
type Record struct {
	// Group is "fault" (a run is broken and must recover or fail cleanly)
	// or "detect" (data is corrupted and must be reported).
	Group    string `json:"group"`
	Scenario string `json:"scenario"`
	Test     string `json:"test"`
	// Injected is how many faults hit a run part-way.
	Injected int `json:"injected"`
	// Recovered counts runs that ended complete and verified: by retries
	// within the run, or by rerunning the same command.
	Recovered int `json:"recovered"`
	// Detected counts injected corruption that was reported (exit code
	// and a finding naming the object), for detection scenarios.
	Detected int `json:"detected"`
	// Lost, Corrupted and Duplicated count objects or resources found
	// missing, changed or twice after the recovery.
	Lost       int    `json:"lost"`
	Corrupted  int    `json:"corrupted"`
	Duplicated int    `json:"duplicated"`
	How        string `json:"how"`
	Seed       uint64 `json:"seed,omitempty"`
	Passed     bool   `json:"passed"`
	Seconds    int    `json:"seconds"`
}

var appendMu sync.Mutex

// Append adds r as a JSON line to the file named by OutEnv, if set.
func (r *Record) Append() error {
	path := os.Getenv(OutEnv)
	if path == "" {
		return nil
	}
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	appendMu.Lock()
	defer appendMu.Unlock()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
