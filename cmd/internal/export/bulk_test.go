package export

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ehrcrypto "github.com/ehrport/ehrport/crypto"
	"github.com/ehrport/ehrport/fhir"
	"github.com/ehrport/ehrport/fhir/bulk"
	"github.com/ehrport/ehrport/fhir/synth"
)

func TestBulkSourceAndResume(t *testing.T) {
	src := t.TempDir()
	counts, err := synth.WriteNDJSON(src, synth.Options{Patients: 3, Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	var files []jobFile
	for _, typ := range synth.Types {
		b, err := os.ReadFile(filepath.Join(src, typ+".ndjson"))
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, jobFile{"output", typ, typ + ".ndjson", b})
	}
	bs := newJobServer(t, false, files, "")
	client, err := bulk.New(bulk.Options{BaseURL: bs.URL + "/fhir"})
	if err != nil {
		t.Fatal(err)
	}
	k := newTestKeys(t)
	var saved []byte
	save := func(st *bulk.State) error {
		var b bytes.Buffer
		err := st.Save(&b)
		saved = b.Bytes()
		return err
	}
	check := func(dir string) {
		t.Helper()
		got := restoredLines(t, dir)
		for typ, n := range counts {
			b, _ := os.ReadFile(filepath.Join(src, typ+".ndjson"))
			want := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
			if len(want) != n || !slices.Equal(got[typ], want) {
				t.Errorf("%s: restored %d lines, want %d identical", typ, len(got[typ]), n)
			}
		}
	}

	st1 := localStore(t)
	o := &Options{Bulk: &BulkSource{Client: client, Request: bulk.Request{Level: bulk.LevelSystem}, Save: save, KeepJob: true},
		Store: st1, Recipients: k.exportOpts(nil).Recipients, Signer: k.signer}
	if _, err := o.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	_, dir, err := k.restore(t, st1)
	if err != nil {
		t.Fatal(err)
	}
	check(dir)
	if m, _, err := ReadManifest(context.Background(), st1); err != nil || m.TransactionTime != "2026-11-22T05:39:01Z" {
		t.Fatalf("transactionTime: %v %v", m, err)
	}
	if bs.deletes.Load() != 0 || len(saved) == 0 {
		t.Fatalf("deletes %d, state saved %d bytes", bs.deletes.Load(), len(saved))
	}

	// Resume from the saved state: no new kick-off, every file again.
	state, err := bulk.LoadState(bytes.NewReader(saved))
	if err != nil {
		t.Fatal(err)
	}
	st2 := localStore(t)
	o = &Options{Bulk: &BulkSource{Client: client, State: state, Save: save}, Store: st2,
		Recipients: k.exportOpts(nil).Recipients, Signer: k.signer}
	if _, err := o.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if bs.kickoffs.Load() != 1 || bs.deletes.Load() != 1 {
		t.Errorf("kick-offs %d (want 1), deletes %d (want 1)", bs.kickoffs.Load(), bs.deletes.Load())
	}
	_, dir, err = k.restore(t, st2)
	if err != nil {
		t.Fatal(err)
	}
	check(dir)
}

// jobFile is one file of a finished $export job.
type jobFile struct {
	kind, typ, name string
	body            []byte
}

// jobServer serves one finished $export job listing files (STU3
// `error[]`, or STU4 `outcome[]` and manifestType), and counts kick-offs
// and deletes; the first download of breakFirst stops halfway and drops
// the connection.
type jobServer struct {
	*httptest.Server
	kickoffs, deletes atomic.Int64
}

func newJobServer(t *testing.T, stu4 bool, files []jobFile, breakFirst string) *jobServer {
	var mu sync.Mutex
	broken := false
	js := &jobServer{}
	js.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case strings.HasSuffix(r.URL.Path, "/$export"):
			js.kickoffs.Add(1)
			w.Header().Set("Content-Location", js.URL+"/status/1")
			w.WriteHeader(http.StatusAccepted)
		case r.URL.Path == "/status/1" && r.Method == http.MethodDelete:
			js.deletes.Add(1)
			w.WriteHeader(http.StatusAccepted)
		case r.URL.Path == "/status/1":
			m := map[string]any{"transactionTime": "2026-11-22T05:39:01Z", "requiresAccessToken": false}
			if stu4 {
				m["manifestType"] = "http://hl7.org/fhir/uv/bulkdata/StructureDefinition/BulkDataManifest"
			}
			lists := map[string][]any{"output": {}}
			for _, f := range files {
				key := f.kind
				if key == "error" && stu4 {
					key = "outcome"
				}
				lists[key] = append(lists[key], map[string]any{"type": f.typ, "url": js.URL + "/files/" + f.name})
			}
			for k, v := range lists {
				m[k] = v
			}
			json.NewEncoder(w).Encode(m)
		case strings.HasPrefix(r.URL.Path, "/files/"):
			name := strings.TrimPrefix(r.URL.Path, "/files/")
			for _, f := range files {
				if f.name != name {
					continue
				}
				if name == breakFirst && !broken {
					broken = true
					w.Header().Set("Content-Length", fmt.Sprint(len(f.body)))
					w.WriteHeader(http.StatusOK)
					w.Write(f.body[:len(f.body)/2])
					w.(http.Flusher).Flush()
					if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
						conn.Close()
					}
					return
				}
				w.Write(f.body)
				return
			}
			http.NotFound(w, r)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(js.Close)
	return js
}

func readFixture(t *testing.T, name string) []byte {
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "testdata", "bulk", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func compactLines(t *testing.T, b []byte) []string {
	var out []string
	for _, l := range bytes.Split(b, []byte("\n")) {
		if len(bytes.TrimSpace(l)) == 0 {
			continue
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, l); err != nil {
			t.Fatal(err)
		}
		out = append(out, buf.String())
	}
	return out
}

// TestBulkServerFiles: the server's error/outcome and deleted files are
// exported encrypted under _server/, listed in the manifest's error[] and
// deleted[], counted, and their OperationOutcomes reported as findings; a
// download that breaks midway stores each line once and never a cut one;
// restore gives back
// the compacted lines and can be rerun into the same folder.
func TestBulkServerFiles(t *testing.T) {
	outcomes := append(readFixture(t, "OperationOutcome.ndjson"),
		[]byte("\n   \n"+`{ "resourceType": "OperationOutcome", "issue": [ { "severity": "information", "code": "informational", "diagnostics": "3 Patient resources" } ] }`+"\n")...)
	deleted := readFixture(t, "Patient.deleted.ndjson")
	files := []jobFile{
		{"output", "Patient", "Patient.ndjson", readFixture(t, "Patient.ndjson")},
		{"output", "Observation", "Observation.ndjson", readFixture(t, "Observation.ndjson")},
		{"deleted", "Bundle", "del.ndjson", deleted},
		{"error", "OperationOutcome", "err.ndjson", outcomes},
	}
	for _, stu4 := range []bool{false, true} {
		t.Run(fmt.Sprintf("stu4=%v", stu4), func(t *testing.T) {
			// The first download of one file breaks midway: a server file
			// (each line must be stored once) or a data file (the cut line
			// must not reach validation).
			brk := "err.ndjson"
			if stu4 {
				brk = "Patient.ndjson"
			}
			srv := newJobServer(t, stu4, files, brk)
			client, err := bulk.New(bulk.Options{BaseURL: srv.URL + "/fhir", MinPollInterval: time.Millisecond, MaxBackoff: time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			k := newTestKeys(t)
			st := localStore(t)
			var reported []string
			o := &Options{Bulk: &BulkSource{Client: client, Request: bulk.Request{Level: bulk.LevelSystem}}, Store: st,
				Recipients: k.exportOpts(nil).Recipients, Signer: k.signer,
				Findings: func(f fhir.Finding) {
					if strings.HasPrefix(string(f.Code), "server-") {
						reported = append(reported, f.String())
					}
				}}
			sum, err := o.Run(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			want := ServerFiles{ErrorFiles: 1, Outcomes: 2, OutcomesBySev: map[string]int64{"error": 1, "information": 1},
				DeletedFiles: 1, DeletedBundles: 2, Deleted: 3}
			if sum.Server == nil || !reflect.DeepEqual(*sum.Server, want) {
				t.Fatalf("server files %+v, want %+v", sum.Server, want)
			}
			if sum.Findings[CodeServerError] != 1 || sum.Findings[CodeServerInformation] != 1 || len(reported) != 2 ||
				!strings.Contains(reported[0], "Could not export Condition/c13") || !strings.Contains(reported[0], "bulk error 1 (OperationOutcome):1") {
				t.Fatalf("findings %v, reported %q", sum.Findings, reported)
			}
			if sum.Counts["OperationOutcome"] != 0 || sum.Counts["Patient"] != 3 {
				t.Fatalf("counts %v: server files are not resources of the export", sum.Counts)
			}
			m, _, err := ReadManifest(context.Background(), st)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(m.Error, []OutputEntry{{Type: "OperationOutcome", URL: "_server/error/OperationOutcome.000.ndjson.ehr"}}) ||
				!reflect.DeepEqual(m.Deleted, []OutputEntry{{Type: "Bundle", URL: "_server/deleted/Bundle.000.ndjson.ehr"}}) {
				t.Fatalf("manifest error %v, deleted %v", m.Error, m.Deleted)
			}
			kinds := map[string]int{}
			for _, ob := range m.Extension.Ehrport.Objects {
				kinds[ob.Kind]++
			}
			if kinds[KindServerError] != 1 || kinds[KindServerDeleted] != 1 {
				t.Fatalf("object kinds %v", kinds)
			}
			for _, key := range storeKeys(t, st) {
				b, _ := st.Get(context.Background(), key)
				data, _ := io.ReadAll(b)
				b.Close()
				if bytes.Contains(data, []byte("Condition/c13")) || bytes.Contains(data, []byte("Patient/p9")) {
					t.Fatalf("%s holds server file plaintext", key)
				}
			}

			rs, dir, err := k.restore(t, st)
			if err != nil {
				t.Fatal(err)
			}
			for path, src := range map[string][]byte{
				"_server/error/OperationOutcome.000.ndjson": outcomes, "_server/deleted/Bundle.000.ndjson": deleted,
			} {
				got, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(path)))
				if err != nil {
					t.Fatal(err)
				}
				if w := strings.Join(compactLines(t, src), "\n") + "\n"; string(got) != w {
					t.Errorf("%s restored as\n%s\nwant\n%s", path, got, w)
				}
			}
			if rs.Resources != 6 {
				t.Errorf("restored %d resources, want 6", rs.Resources)
			}
			// A rerun into the same folder (after an interruption) is allowed.
			if _, err := (&RestoreOptions{Store: st, To: dir, Identities: []ehrcrypto.Identity{k.id}, Verifier: k.verif}).Run(context.Background()); err != nil {
				t.Fatalf("rerun: %v", err)
			}
			// Rewrapped for new keys, the server files stay listed and restore.
			k2 := newTestKeys(t)
			ro := &RewrapOptions{Store: st, Identities: []ehrcrypto.Identity{k.id}, Verifier: k.verif, Signer: k2.signer,
				Change: ehrcrypto.RewrapChange{Keep: func(*ehrcrypto.Stanza) bool { return false }, Add: []ehrcrypto.Recipient{k2.rec}}}
			if _, err := ro.Run(context.Background()); err != nil {
				t.Fatal(err)
			}
			m2, _, err := ReadManifest(context.Background(), st)
			if err != nil || !reflect.DeepEqual(m2.Error, m.Error) || !reflect.DeepEqual(m2.Deleted, m.Deleted) {
				t.Fatalf("after rewrap: error %v, deleted %v (%v)", m2.Error, m2.Deleted, err)
			}
			if _, _, err := k2.restore(t, st); err != nil {
				t.Fatalf("restore after rewrap: %v", err)
			}
		})
	}
}

// TestBulkServerFilesMalformed: a line of a server file that is not JSON
// follows --on-invalid like any NDJSON line; JSON that is not what the file
// should hold is stored and reported as bad-server-file.
func TestBulkServerFilesMalformed(t *testing.T) {
	files := []jobFile{
		{"output", "Patient", "Patient.ndjson", readFixture(t, "Patient.ndjson")},
		{"error", "OperationOutcome", "err.ndjson", []byte(`{"resourceType":"Patient","id":"not-an-outcome"}` + "\nnot json at all\n")},
		{"deleted", "Bundle", "del.ndjson", []byte(`{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"GET","url":"Patient/1"}}]}` + "\n")},
	}
	for _, pol := range []fhir.Policy{fhir.PolicyFail, fhir.PolicySkip, fhir.PolicyQuarantine} {
		t.Run(pol.String(), func(t *testing.T) {
			srv := newJobServer(t, false, files, "")
			client, err := bulk.New(bulk.Options{BaseURL: srv.URL + "/fhir"})
			if err != nil {
				t.Fatal(err)
			}
			k := newTestKeys(t)
			st := localStore(t)
			o := &Options{Bulk: &BulkSource{Client: client, Request: bulk.Request{Level: bulk.LevelSystem}}, Store: st, Policy: pol,
				Recipients: k.exportOpts(nil).Recipients, Signer: k.signer}
			sum, err := o.Run(context.Background())
			if pol == fhir.PolicyFail {
				if !errors.Is(err, fhir.ErrBadInput) || !strings.Contains(err.Error(), "bulk error 1 (OperationOutcome):2") {
					t.Fatalf("err = %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if sum.Server.Malformed != 2 || sum.Findings[CodeBadServerFile] != 2 || sum.Server.Outcomes != 0 || sum.Server.DeletedBundles != 0 {
				t.Fatalf("server %+v, findings %v", sum.Server, sum.Findings)
			}
			if pol == fhir.PolicySkip && sum.Stats.Skipped != 1 || pol == fhir.PolicyQuarantine && sum.Stats.Quarantined != 1 {
				t.Fatalf("stats %+v", sum.Stats)
			}
			_, dir, err := k.restore(t, st)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := os.ReadFile(filepath.Join(dir, "_server", "error", "OperationOutcome.000.ndjson"))
			if string(got) != `{"resourceType":"Patient","id":"not-an-outcome"}`+"\n" {
				t.Fatalf("error file restored as %q", got)
			}
			if q, _ := os.ReadFile(filepath.Join(dir, "quarantine", "quarantine.000.ndjson")); (pol == fhir.PolicyQuarantine) != bytes.Contains(q, []byte(base64.StdEncoding.EncodeToString([]byte("not json at all")))) {
				t.Fatalf("quarantine %q", q)
			}
		})
	}
}
