package bulk

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// TestRequestTimeout: a status URL that does not answer in time is
// polled again, not waited on forever.
func TestRequestTimeout(t *testing.T) {
	var calls atomic.Int32
	release := make(chan struct{})
	defer close(release)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		w.Write([]byte(`{"transactionTime":"2026-01-01T00:00:00Z","requiresAccessToken":false,"output":[]}`))
	}))
	defer ts.Close()
	var retried []Event
	c, err := New(Options{BaseURL: ts.URL, Clock: newFakeClock(), RequestTimeout: 50 * time.Millisecond,
		Events: func(e Event) {
			if e.Attempt > 0 {
				retried = append(retried, e)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Wait(context.Background(), &State{Version: 1, StatusURL: ts.URL + "/status"}); err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 2 || len(retried) != 1 || !strings.Contains(retried[0].Err.Error(), "RequestTimeout") {
		t.Fatalf("calls %d, retries %+v", calls.Load(), retried)
	}
}

// TestStallTimeout: a download that stops sending data mid-file is
// restarted from the start.
func TestStallTimeout(t *testing.T) {
	const body = "{\"resourceType\":\"Patient\",\"id\":\"1\"}\n{\"resourceType\":\"Patient\",\"id\":\"2\"}\n"
	var calls atomic.Int32
	release := make(chan struct{})
	defer close(release)
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.Write([]byte(body[:20]))
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		w.Write([]byte(body))
	}))
	defer ts.Close()
	c, err := New(Options{BaseURL: ts.URL, Clock: newFakeClock(), StallTimeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	m := &Manifest{Output: []File{{Kind: KindOutput, Type: "Patient", URL: ts.URL + "/f.ndjson", Count: 2, HasCount: true}}}
	st := &State{Version: 1, StatusURL: ts.URL + "/status"}
	sink := newMemSink()
	rep, err := c.Download(context.Background(), m, st, sink, nil)
	if err != nil {
		t.Fatal(err)
	}
	if calls.Load() != 2 || string(sink.files["f.ndjson"]) != body || rep.Files[0].Count.Lines != 2 || sink.calls[m.Output[0].URL] != 2 {
		t.Fatalf("calls %d, stored %q, report %+v", calls.Load(), sink.files["f.ndjson"], rep.Files)
	}
}
