package export

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/ehrport/ehrport/fhir/bulk"
	"github.com/ehrport/ehrport/fhir/synth"
)

// bulkServer serves one finished $export job whose files are the NDJSON
// files of dir, and counts kick-offs and deletes.
type bulkServer struct {
	*httptest.Server
	kickoffs, deletes atomic.Int64
}

func newBulkServer(t *testing.T, dir string, types []string) *bulkServer {
	bs := &bulkServer{}
	bs.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/$export"):
			bs.kickoffs.Add(1)
			w.Header().Set("Content-Location", bs.URL+"/status/1")
			w.WriteHeader(http.StatusAccepted)
		case r.URL.Path == "/status/1" && r.Method == http.MethodDelete:
			bs.deletes.Add(1)
			w.WriteHeader(http.StatusAccepted)
		case r.URL.Path == "/status/1":
			var out []string
			for _, typ := range types {
				out = append(out, fmt.Sprintf(`{"type":%q,"url":"%s/files/%s.ndjson"}`, typ, bs.URL, typ))
			}
			fmt.Fprintf(w, `{"transactionTime":"2026-11-22T05:39:01Z","requiresAccessToken":false,"output":[%s],"error":[]}`, strings.Join(out, ","))
		case strings.HasPrefix(r.URL.Path, "/files/"):
			http.ServeFile(w, r, filepath.Join(dir, filepath.Base(r.URL.Path)))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(bs.Close)
	return bs
}

func TestBulkSourceAndResume(t *testing.T) {
	src := t.TempDir()
	counts, err := synth.WriteNDJSON(src, synth.Options{Patients: 3, Seed: 2})
	if err != nil {
		t.Fatal(err)
	}
	bs := newBulkServer(t, src, synth.Types)
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
