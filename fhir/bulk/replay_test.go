package bulk

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReplayCapturedManifests serves each manifest captured from the SMART
// reference server through the spec server (its URLs pointed at the test
// server), with files holding `count` lines, except error files, which
// hold one line as the real server's did. The whole export must run, and
// exactly the error files must be reported as count mismatches.
func TestReplayCapturedManifests(t *testing.T) {
	dir := corpusDir(t, "bulk-data-ig-manifests")
	for _, name := range []string{
		"captured-smart-bulk-data-server-manifest.json",
		"captured-smart-bulk-data-server-manifest-with-deleted.json",
		"captured-smart-bulk-data-server-manifest-with-errors.json",
	} {
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			s := newSpecServer(t)
			body := bytes.ReplaceAll(raw, []byte("http://127.0.0.1:9443"), []byte(s.srv.URL))
			orig, err := ParseManifest(name, body)
			if err != nil {
				t.Fatal(err)
			}
			byPath := map[string]File{}
			for _, f := range orig.Files() {
				u, _ := url.Parse(f.URL)
				byPath[u.Path] = f
			}
			s.manifestBody = body
			s.progress = 2
			s.extra = func(w http.ResponseWriter, r *http.Request) {
				f, ok := byPath[r.URL.Path]
				if !ok {
					http.NotFound(w, r)
					return
				}
				if r.Header.Get("Authorization") != "" {
					t.Errorf("token sent to capability URL %s", r.URL.Path)
				}
				n := f.Count
				if f.Kind == KindError {
					n = 1
				}
				bw := bufio.NewWriter(w)
				for i := range n {
					switch f.Kind {
					case KindDeleted:
						fmt.Fprintf(bw, `{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"DELETE","url":"Patient/d%d"}}]}`+"\n", i)
					case KindError:
						fmt.Fprintf(bw, `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"processing","diagnostics":"Failed to export"}]}`+"\n")
					default:
						fmt.Fprintf(bw, `{"resourceType":%q,"id":"r%d"}`+"\n", f.Type, i)
					}
				}
				bw.Flush()
			}
			c := s.client(t, nil)
			st, err := c.Kickoff(context.Background(), Request{Level: LevelPatient})
			if err != nil {
				t.Fatal(err)
			}
			m, err := c.Wait(context.Background(), st)
			if err != nil {
				t.Fatal(err)
			}
			deleted := 0
			rep, err := c.Download(context.Background(), m, st, SinkFunc(func(ctx context.Context, f File, r io.Reader) error {
				sc := bufio.NewScanner(r)
				for sc.Scan() {
					if f.Kind == KindDeleted {
						refs, err := ParseDeletedBundle(f.URL, sc.Bytes())
						if err != nil {
							return err
						}
						deleted += len(refs)
					}
				}
				return sc.Err()
			}), nil)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Delete(context.Background(), st); err != nil {
				t.Fatal(err)
			}
			var wantDeleted int64
			for _, f := range orig.Deleted {
				wantDeleted += f.Count
			}
			if int64(deleted) != wantDeleted {
				t.Errorf("deleted refs = %d, want %d", deleted, wantDeleted)
			}
			mm := rep.Mismatches()
			if len(mm) != len(orig.Errors) {
				t.Errorf("mismatches = %d, want %d (the error files)", len(mm), len(orig.Errors))
			}
			for _, r := range mm {
				if r.File.Kind != KindError || r.Count.Lines != 1 || r.Count.Expected != 2000 || !strings.Contains(r.File.URL, "Observation") {
					t.Errorf("mismatch %+v", r)
				}
			}
			if len(st.Files) != len(orig.Files()) {
				t.Errorf("state has %d files, manifest %d", len(st.Files), len(orig.Files()))
			}
		})
	}
}
