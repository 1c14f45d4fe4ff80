package bulk_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"

	"github.com/ehrport/ehrport/fhir/bulk"
)

// exampleServer is the smallest server that follows the spec: one job,
// ready at once, one Patient file.
func exampleServer() *httptest.Server {
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/$export"):
			w.Header().Set("Content-Location", srv.URL+"/status/1")
			w.WriteHeader(http.StatusAccepted)
		case r.URL.Path == "/status/1" && r.Method == http.MethodDelete:
			w.WriteHeader(http.StatusAccepted)
		case r.URL.Path == "/status/1":
			fmt.Fprintf(w, `{"transactionTime":"2026-11-22T05:39:01Z","requiresAccessToken":false,
				"output":[{"type":"Patient","url":"%s/files/Patient.ndjson","count":2}],"error":[]}`, srv.URL)
		case r.URL.Path == "/files/Patient.ndjson":
			io.WriteString(w, "{\"resourceType\":\"Patient\",\"id\":\"a\"}\n{\"resourceType\":\"Patient\",\"id\":\"b\"}\n")
		default:
			http.NotFound(w, r)
		}
	}))
	return srv
}

// The flow `ehrport export --from https://…/fhir` follows: kick off, save
// the State, wait, download through a Sink with a checkpoint that saves
// the State again, then DELETE. With --resume, LoadState and Resume
// replace Kickoff and Wait.
func Example() {
	srv := exampleServer()
	defer srv.Close()
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "bulk-example")
	defer os.RemoveAll(dir)
	statePath := filepath.Join(dir, "export-state.json")
	save := func(st *bulk.State) error {
		var buf bytes.Buffer
		if err := st.Save(&buf); err != nil {
			return err
		}
		return os.WriteFile(statePath, buf.Bytes(), 0o600)
	}

	c, err := bulk.New(bulk.Options{BaseURL: srv.URL + "/fhir"})
	if err != nil {
		panic(err)
	}
	st, err := c.Kickoff(ctx, bulk.Request{Level: bulk.LevelPatient, Types: []string{"Patient"}})
	if err != nil {
		panic(err)
	}
	if err := save(st); err != nil {
		panic(err)
	}
	m, err := c.Wait(ctx, st)
	if err != nil {
		panic(err)
	}
	sink := bulk.SinkFunc(func(ctx context.Context, f bulk.File, r io.Reader) error {
		n, err := io.Copy(io.Discard, r) // encrypt and store here
		fmt.Printf("stored %s %s: %d bytes\n", f.Kind, f.Type, n)
		return err
	})
	rep, err := c.Download(ctx, m, st, sink, save)
	if err != nil {
		panic(err)
	}
	for _, f := range rep.Files {
		fmt.Printf("%s: %d lines, manifest count %d, mismatch %v\n", f.File.Type, f.Count.Lines, f.Count.Expected, f.Count.Mismatch())
	}
	if err := c.Delete(ctx, st); err != nil {
		panic(err)
	}

	// A later run resumes from the saved state: nothing is downloaded twice.
	fh, _ := os.Open(statePath)
	defer fh.Close()
	st2, err := bulk.LoadState(fh)
	if err != nil {
		panic(err)
	}
	fmt.Println("resume state:", len(st2.Files), "file(s) done, next _since", st2.TransactionTime)
	// Output:
	// stored output Patient: 72 bytes
	// Patient: 2 lines, manifest count 2, mismatch false
	// resume state: 1 file(s) done, next _since 2026-11-22T05:39:01Z
}
