package fhirload

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeServer is a minimal FHIR server: metadata, transaction Bundles of PUT
// and POST entries, and _summary=count, with faults on demand. It keeps the
// exact bytes of each resource it was sent.
type fakeServer struct {
	mu      sync.Mutex
	stored  map[string]string // Type/id → bytes
	nextID  int
	bundles int
	// fault, when set, may answer a request itself (returning true).
	fault func(w http.ResponseWriter, r *http.Request) bool
	srv   *httptest.Server
}

func newFake(t *testing.T) *fakeServer {
	f := &fakeServer{stored: map[string]string{}}
	f.srv = httptest.NewServer(http.HandlerFunc(f.serve))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeServer) base() string { return f.srv.URL + "/fhir" }

func outcomeJSON(msg string) string {
	b, _ := json.Marshal(map[string]any{"resourceType": "OperationOutcome", "issue": []any{map[string]any{"severity": "error", "code": "invalid", "diagnostics": msg}}})
	return string(b)
}

func (f *fakeServer) serve(w http.ResponseWriter, r *http.Request) {
	if f.fault != nil && f.fault(w, r) {
		return
	}
	w.Header().Set("Content-Type", "application/fhir+json")
	path := strings.TrimPrefix(r.URL.Path, "/fhir")
	switch {
	case r.Method == http.MethodGet && path == "/metadata":
		io.WriteString(w, `{"resourceType":"CapabilityStatement","fhirVersion":"4.0.1","software":{"name":"fake"}}`)
	case r.Method == http.MethodPost && path == "":
		var b struct {
			Type  string `json:"type"`
			Entry []struct {
				Resource json.RawMessage `json:"resource"`
				Request  struct{ Method, URL string }
			} `json:"entry"`
		}
		if err := json.NewDecoder(r.Body).Decode(&b); err != nil || b.Type != "transaction" {
			w.WriteHeader(400)
			io.WriteString(w, outcomeJSON("not a transaction"))
			return
		}
		f.mu.Lock()
		defer f.mu.Unlock()
		f.bundles++
		var out []string
		for _, e := range b.Entry {
			key := e.Request.URL
			if e.Request.Method == http.MethodPost {
				f.nextID++
				key = fmt.Sprintf("%s/new-%d", e.Request.URL, f.nextID)
			}
			f.stored[key] = string(e.Resource)
			out = append(out, `{"response":{"status":"201 Created"}}`)
		}
		io.WriteString(w, `{"resourceType":"Bundle","type":"transaction-response","entry":[`+strings.Join(out, ",")+`]}`)
	case r.Method == http.MethodGet && r.URL.Query().Get("_summary") == "count":
		typ := strings.Trim(path, "/")
		f.mu.Lock()
		n := 0
		for k := range f.stored {
			if strings.HasPrefix(k, typ+"/") {
				n++
			}
		}
		f.mu.Unlock()
		fmt.Fprintf(w, `{"resourceType":"Bundle","type":"searchset","total":%d}`, n)
	default:
		w.WriteHeader(404)
		io.WriteString(w, outcomeJSON("no route "+r.Method+" "+path))
	}
}

func ndjson(typ string, n int, from int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, `{"resourceType":%q,"id":"%s-%d","note":"x\u00e9\"y"}`+"\n", typ, strings.ToLower(typ), from+i)
	}
	return b.String()
}

// client makes a Client whose sleeps are recorded, not slept.
func client(t *testing.T, base string, o Options) (*Client, *[]time.Duration) {
	t.Helper()
	var waits []time.Duration
	var mu sync.Mutex
	o.BaseURL = base
	o.sleepForTest = func(ctx context.Context, d time.Duration) error {
		mu.Lock()
		waits = append(waits, d)
		mu.Unlock()
		return ctx.Err()
	}
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return c, &waits
}

func TestLoadKeepsIDsAndBytesAndCounts(t *testing.T) {
	f := newFake(t)
	c, _ := client(t, f.base(), Options{BatchSize: 50, Concurrency: 3})
	ctx := context.Background()
	if v, _, err := c.Capabilities(ctx); err != nil || v != "4.0.1" {
		t.Fatalf("capabilities: %q %v", v, err)
	}
	l := c.Start(ctx)
	obs := ndjson("Observation", 120, 0)
	pats := ndjson("Patient", 7, 0) + "\n" + `{"resourceType":"Patient","name":[{"text":"no id"}]}` + "\n"
	bundle := `{"resourceType":"Bundle","id":"b1","type":"collection","entry":[{"resource":{"resourceType":"Patient","id":"inner"}}]}` + "\n"
	if err := l.Add("Observation.000.ndjson", strings.NewReader(obs)); err != nil {
		t.Fatal(err)
	}
	if err := l.Add("Patient.000.ndjson", strings.NewReader(pats)); err != nil {
		t.Fatal(err)
	}
	if err := l.Add("Bundle.000.ndjson", strings.NewReader(bundle)); err != nil {
		t.Fatal(err)
	}
	st, err := l.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if st.Resources != 129 || st.Counts["Observation"] != 120 || st.Counts["Patient"] != 8 || st.Counts["Bundle"] != 1 || st.Posted != 1 {
		t.Fatalf("stats %+v", st)
	}
	// 120 in 50s: 3 Bundles; the Patients and the Bundle one each.
	if st.Bundles != 5 || f.bundles != 5 {
		t.Fatalf("bundles: stats %d, server %d", st.Bundles, f.bundles)
	}
	for _, line := range strings.Split(strings.TrimSpace(obs), "\n") {
		var h struct{ ID string }
		json.Unmarshal([]byte(line), &h)
		if got := f.stored["Observation/"+h.ID]; got != line {
			t.Fatalf("Observation/%s stored as %q, sent %q", h.ID, got, line)
		}
	}
	if f.stored["Bundle/b1"] != strings.TrimSpace(bundle) || f.stored["Patient/inner"] != "" {
		t.Fatalf("a whole Bundle must be stored as one resource: %q", f.stored["Bundle/b1"])
	}
	cc, err := c.CheckCounts(ctx, map[string]int64{"Observation": 120, "Patient": 8, "Bundle": 1})
	if err != nil || len(cc.Mismatches) != 0 {
		t.Fatalf("count check: %+v %v", cc, err)
	}
	// A type the server holds less of, and one it holds more of.
	cc, err = c.CheckCounts(ctx, map[string]int64{"Observation": 121, "Patient": 7})
	if !errors.Is(err, ErrCountMismatch) || len(cc.Mismatches) != 2 || !strings.Contains(err.Error(), "Observation: export 121, server 120") {
		t.Fatalf("mismatch: %+v %v", cc, err)
	}
}

// The same Type/id twice never shares a transaction (one sender, so the
// later one lands last).
func TestLoadSplitsRepeatedIDs(t *testing.T) {
	f := newFake(t)
	c, _ := client(t, f.base(), Options{Concurrency: 1})
	l := c.Start(context.Background())
	in := `{"resourceType":"Patient","id":"a"}` + "\n" + `{"resourceType":"Patient","id":"b"}` + "\n" + `{"resourceType":"Patient","id":"a","active":true}` + "\n"
	if err := l.Add("in", strings.NewReader(in)); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Wait(); err != nil {
		t.Fatal(err)
	}
	if f.bundles != 2 || f.stored["Patient/a"] != `{"resourceType":"Patient","id":"a","active":true}` {
		t.Fatalf("bundles %d, Patient/a %q", f.bundles, f.stored["Patient/a"])
	}
}

// 429 with Retry-After, 503 and a dropped connection are retried; the
// waits follow Retry-After, then the back-off.
func TestRetries(t *testing.T) {
	f := newFake(t)
	var mu sync.Mutex
	posts := 0
	f.fault = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodPost {
			return false
		}
		mu.Lock()
		posts++
		n := posts
		mu.Unlock()
		switch n {
		case 1:
			w.Header().Set("Retry-After", "7")
			w.WriteHeader(429)
			return true
		case 2:
			w.WriteHeader(503)
			io.WriteString(w, outcomeJSON("warming up"))
			return true
		case 3:
			conn, _, _ := w.(http.Hijacker).Hijack()
			conn.Close()
			return true
		}
		return false
	}
	var statuses []int
	c, waits := client(t, f.base(), Options{BaseDelay: 100 * time.Millisecond})
	c.o.onRetryForTest = func(status int, _ time.Duration) { statuses = append(statuses, status) }
	l := c.Start(context.Background())
	if err := l.Add("Patient.000.ndjson", strings.NewReader(ndjson("Patient", 3, 0))); err != nil {
		t.Fatal(err)
	}
	st, err := l.Wait()
	if err != nil {
		t.Fatal(err)
	}
	if st.Retries != 3 || len(f.stored) != 3 {
		t.Fatalf("retries %d, stored %d", st.Retries, len(f.stored))
	}
	if fmt.Sprint(statuses) != "[429 503 0]" || (*waits)[0] != 7*time.Second || (*waits)[1] > 200*time.Millisecond || (*waits)[2] > 400*time.Millisecond {
		t.Fatalf("statuses %v waits %v", statuses, *waits)
	}
}

func TestGivesUpAndRefuses(t *testing.T) {
	ctx := context.Background()
	f := newFake(t)
	f.fault = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodPost {
			w.WriteHeader(502)
			return true
		}
		return false
	}
	c, waits := client(t, f.base(), Options{Attempts: 4})
	l := c.Start(ctx)
	l.Add("Patient.000.ndjson", strings.NewReader(ndjson("Patient", 1, 0)))
	_, err := l.Wait()
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), f.base()) || !strings.Contains(err.Error(), "after 4 attempts") || len(*waits) != 3 {
		t.Fatalf("always 502: %v (waits %v)", err, *waits)
	}

	// A refusal is not retried and names the lines and the server's reason.
	f.fault = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodPost {
			w.WriteHeader(422)
			io.WriteString(w, outcomeJSON("Observation.status is required"))
			return true
		}
		return false
	}
	c, waits = client(t, f.base(), Options{BatchSize: 2})
	l = c.Start(ctx)
	l.Add("Observation.003.ndjson", strings.NewReader(ndjson("Observation", 2, 5)))
	_, err = l.Wait()
	if !errors.Is(err, ErrRefused) || len(*waits) != 0 ||
		!strings.Contains(err.Error(), "Observation.003.ndjson lines 1-2 (Observation/observation-5 … Observation/observation-6)") ||
		!strings.Contains(err.Error(), "Observation.status is required") {
		t.Fatalf("422: %v", err)
	}

	// An entry that failed inside a 200 answer.
	f.fault = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodPost {
			io.WriteString(w, `{"resourceType":"Bundle","type":"transaction-response","entry":[{"response":{"status":"400 Bad Request"}}]}`)
			return true
		}
		return false
	}
	l = c.Start(ctx)
	l.Add("x", strings.NewReader(ndjson("Patient", 1, 0)))
	if _, err = l.Wait(); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), `"400 Bad Request"`) {
		t.Fatalf("entry failed: %v", err)
	}

	// 401: credentials, not retried, and the token never shows.
	f.fault = func(w http.ResponseWriter, r *http.Request) bool {
		if r.Header.Get("Authorization") != "Bearer s3cret-token" {
			t.Errorf("Authorization header %q", r.Header.Get("Authorization"))
		}
		w.WriteHeader(401)
		return true
	}
	c, _ = client(t, f.base(), Options{Token: "s3cret-token"})
	if _, _, err := c.Capabilities(ctx); !errors.Is(err, ErrUnauthorized) || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("401: %v", err)
	}
}

func TestBadInputLines(t *testing.T) {
	f := newFake(t)
	c, _ := client(t, f.base(), Options{})
	for _, in := range []string{"not json\n", `{"resourceType":"patient","id":"a"}` + "\n", `{"resourceType":"Patient","id":"a/b"}` + "\n", `{"resourceType":"Patient","id":""}` + "\n"} {
		l := c.Start(context.Background())
		err := l.Add("in.ndjson", strings.NewReader(in))
		l.Wait()
		if err == nil || !strings.Contains(err.Error(), "in.ndjson line 1") {
			t.Errorf("%q: %v", in, err)
		}
	}
}

func TestCapabilities(t *testing.T) {
	ctx := context.Background()
	f := newFake(t)
	for body, want := range map[string]string{
		`<html>hello</html>`: "not a CapabilityStatement",
		`{"resourceType":"CapabilityStatement","fhirVersion":"3.0.2"}`: `fhirVersion "3.0.2"`,
	} {
		f.fault = func(w http.ResponseWriter, r *http.Request) bool { io.WriteString(w, body); return true }
		c, _ := client(t, f.base(), Options{})
		if _, _, err := c.Capabilities(ctx); !errors.Is(err, ErrNotFHIR) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v", body, err)
		}
	}
	f.fault = nil
	c, _ := client(t, f.srv.URL+"/not-fhir", Options{})
	if _, _, err := c.Capabilities(ctx); !errors.Is(err, ErrNotFHIR) || !strings.Contains(err.Error(), "FHIR base URL") {
		t.Errorf("404 metadata: %v", err)
	}

	// Nobody listening: unavailable after the attempts, naming the URL.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	c, waits := client(t, "http://"+addr+"/fhir", Options{Attempts: 2})
	_, _, err := c.Capabilities(ctx)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "http://"+addr+"/fhir") || len(*waits) != 1 {
		t.Fatalf("down: %v", err)
	}
}

func TestCheckBase(t *testing.T) {
	for raw, ok := range map[string]bool{
		"https://fhir.example/r4":          true,
		"https://fhir.example/r4/":         true,
		"http://127.0.0.1:8080/fhir":       true,
		"http://localhost/fhir":            true,
		"http://[::1]:9/fhir":              true,
		"http://fhir.example/r4":           false,
		"ftp://fhir.example/r4":            false,
		"https:///r4":                      false,
		"https://user:pw@fhir.example/r4":  false,
		"https://fhir.example/r4?token=x":  false,
		"https://fhir.example/r4#frag":     false,
		"fhir.example/r4":                  false,
		"https://fhir.example/r4\x7f":      false,
		"https://fhir.example/%zz/bad-esc": false,
	} {
		u, err := checkBase(raw)
		if (err == nil) != ok {
			t.Errorf("%q: %v", raw, err)
		}
		if err != nil && (!errors.Is(err, ErrBadURL) || strings.Contains(err.Error(), "pw") || strings.Contains(err.Error(), "token=x")) {
			t.Errorf("%q: %v", raw, err)
		}
		if err == nil && strings.HasSuffix(u.String(), "/") {
			t.Errorf("%q: base keeps its trailing slash: %s", raw, u)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	for v, want := range map[string]time.Duration{
		"":                              0,
		"3":                             3 * time.Second,
		"-1":                            0,
		"soon":                          0,
		"Mon, 23 Nov 2026 10:00:30 GMT": 30 * time.Second,
		"Mon, 23 Nov 2026 09:00:00 GMT": 0,
	} {
		if got := retryAfter(v, now); got != want {
			t.Errorf("%q: %v, want %v", v, got, want)
		}
	}
}

// The bytes of a transaction Bundle are valid JSON around the original
// resource bytes.
func TestBuilder(t *testing.T) {
	b := newBuilder()
	b.add([]byte(`{"resourceType":"Patient","id":"p"}`), "Patient", "Patient/p", true)
	b.add([]byte(`{"resourceType":"Patient"}`), "Patient", "Patient", false)
	bt := b.finish("x")
	var v map[string]any
	if err := json.Unmarshal(bt.body, &v); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(bt.body, []byte(`{"resource":{"resourceType":"Patient","id":"p"},"request":{"method":"PUT","url":"Patient/p"}}`)) ||
		!bytes.Contains(bt.body, []byte(`"request":{"method":"POST","url":"Patient"}`)) || bt.posted != 1 {
		t.Fatalf("%s", bt.body)
	}
}
