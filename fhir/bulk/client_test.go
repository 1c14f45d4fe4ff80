package bulk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
)

// runExport does kick-off, wait, download and delete, as the CLI would.
func runExport(t *testing.T, c *Client, req Request) (*State, *Manifest, *Report, *memSink) {
	t.Helper()
	ctx := context.Background()
	st, err := c.Kickoff(ctx, req)
	if err != nil {
		t.Fatalf("Kickoff: %v", err)
	}
	m, err := c.Wait(ctx, st)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	sink := newMemSink()
	rep, err := c.Download(ctx, m, st, sink, nil)
	if err != nil {
		t.Fatalf("Download: %v", err)
	}
	if err := c.Delete(ctx, st); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	return st, m, rep, sink
}

func TestExportGETSystemLevel(t *testing.T) {
	s := newSpecServer(t)
	s.progress = 3
	s.pollRetryAfter = "7"
	var events []Event
	c := s.client(t, func(o *Options) { o.Events = func(e Event) { events = append(events, e) } })
	req := Request{Types: []string{"Patient", "Observation"}, Since: "2026-01-01T00:00:00Z", OutputFormat: "application/fhir+ndjson"}
	st, m, rep, sink := runExport(t, c, req)

	k := s.kickoffs[0]
	if k.method != "GET" || k.path != "/fhir/$export" || k.prefer != "respond-async" || k.accept != "application/fhir+json" {
		t.Errorf("kick-off = %+v", k)
	}
	q, _ := url.ParseQuery(k.query)
	if q.Get("_type") != "Patient,Observation" || q.Get("_since") != "2026-01-01T00:00:00Z" || q.Get("_outputFormat") != "application/fhir+ndjson" {
		t.Errorf("kick-off query = %q", k.query)
	}
	if st.StatusURL != s.srv.URL+"/status/job1" || st.Request != s.base()+"/$export?"+k.query || st.Method != "GET" {
		t.Errorf("state = %+v", st)
	}
	if got := s.clock.Sleeps(); !slices.Equal(got, []time.Duration{7 * time.Second, 7 * time.Second, 7 * time.Second}) {
		t.Errorf("sleeps = %v, want three Retry-After waits of 7s", got)
	}
	var progress []string
	for _, e := range events {
		if e.Op == "poll" {
			progress = append(progress, e.Progress)
		}
	}
	if !slices.Equal(progress, []string{"80% done", "90% done", "100% done"}) {
		t.Errorf("X-Progress events = %q", progress)
	}
	if m.Version != STU3 || len(m.Output) != 2 || len(m.Deleted) != 1 || len(m.Errors) != 1 {
		t.Errorf("manifest = %+v", m)
	}
	if st.TransactionTime != "2026-11-22T05:39:01Z" || st.Expires.IsZero() {
		t.Errorf("state manifest info = %q %v", st.TransactionTime, st.Expires)
	}
	if len(rep.Mismatches()) != 0 {
		t.Errorf("mismatches = %+v", rep.Mismatches())
	}
	for _, f := range s.files {
		if !bytes.Equal(sink.files[f.name], f.body) {
			t.Errorf("%s: stored bytes differ from served bytes", f.name)
		}
	}
	if len(st.Files) != 4 || st.Files[0].Count.Lines != 3 || st.Files[0].Count.Bytes != int64(len(s.files[0].body)) {
		t.Errorf("state files = %+v", st.Files)
	}
	if s.deletes != 1 {
		t.Errorf("deletes = %d", s.deletes)
	}
	for name, auths := range s.fileAuth {
		for _, a := range auths {
			if a != "" {
				t.Errorf("%s: Authorization sent to a capability URL", name)
			}
		}
	}
}

func TestKickoffLevelsAndPOST(t *testing.T) {
	for _, tc := range []struct {
		req  Request
		post bool
		path string
	}{
		{Request{Level: LevelPatient, Types: []string{"Patient"}}, false, "/fhir/Patient/$export"},
		{Request{Level: LevelGroup, GroupID: "BlueCross BlueShield"}, false, "/fhir/Group/BlueCross%20BlueShield/$export"},
		{Request{Level: LevelGroup, GroupID: "g1", Types: []string{"Patient", "Condition"}, Since: "2020-01-01T00:00:00.123+02:00", OutputFormat: "ndjson"}, true, "/fhir/Group/g1/$export"},
	} {
		s := newSpecServer(t)
		c := s.client(t, func(o *Options) { o.PostKickoff = tc.post })
		st, err := c.Kickoff(context.Background(), tc.req)
		if err != nil {
			t.Fatal(err)
		}
		k := s.kickoffs[0]
		if k.path != tc.path {
			t.Errorf("path = %s, want %s", k.path, tc.path)
		}
		if !tc.post {
			continue
		}
		if k.method != "POST" || k.query != "" || st.Method != "POST" {
			t.Errorf("POST kick-off = %+v", k)
		}
		var p struct {
			ResourceType string
			Parameter    []map[string]string
		}
		if err := json.Unmarshal([]byte(k.body), &p); err != nil || p.ResourceType != "Parameters" {
			t.Fatalf("body %q: %v", k.body, err)
		}
		want := []map[string]string{
			{"name": "_type", "valueString": "Patient,Condition"},
			{"name": "_since", "valueInstant": "2020-01-01T00:00:00.123+02:00"},
			{"name": "_outputFormat", "valueString": "ndjson"},
		}
		if len(p.Parameter) != 3 {
			t.Fatalf("parameters = %v", p.Parameter)
		}
		for i := range want {
			for key, v := range want[i] {
				if p.Parameter[i][key] != v {
					t.Errorf("parameter %d = %v, want %v", i, p.Parameter[i], want[i])
				}
			}
		}
	}
}

func TestRequestValidation(t *testing.T) {
	c, err := New(Options{BaseURL: "https://ehr.example/fhir"})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []Request{
		{Level: LevelGroup},
		{Level: LevelGroup, GroupID: "a/b"},
		{Level: LevelPatient, GroupID: "x"},
		{Types: []string{"Patient,Observation"}},
		{Since: "2020-01-01"},
		{OutputFormat: "application/fhir+json"},
		{Level: Level(9)},
	} {
		if _, err := c.KickoffURL(r); err == nil {
			t.Errorf("%+v accepted", r)
		}
	}
	for _, base := range []string{"", "ftp://x/fhir", "/fhir", "https://x/fhir?a=b"} {
		if _, err := New(Options{BaseURL: base}); err == nil {
			t.Errorf("base %q accepted", base)
		}
	}
}

func TestKickoff429RetryAfter(t *testing.T) {
	s := newSpecServer(t)
	date := s.clock.Now().Add(90 * time.Second).Format(http.TimeFormat)
	s.kickoff429 = []string{"3", date, "100000", ""}
	c := s.client(t, func(o *Options) { o.MaxRetryAfter = 2 * time.Minute })
	if _, err := c.Kickoff(context.Background(), Request{}); err != nil {
		t.Fatal(err)
	}
	// 3 s; the HTTP date 90 s ahead (3 s already slept); 100000 s capped to
	// 2 min; no Retry-After: back-off 2^3 s.
	want := []time.Duration{3 * time.Second, 87 * time.Second, 2 * time.Minute, 8 * time.Second}
	if got := s.clock.Sleeps(); !slices.Equal(got, want) {
		t.Errorf("sleeps = %v, want %v", got, want)
	}
	if len(s.kickoffs) != 5 {
		t.Errorf("kick-offs = %d", len(s.kickoffs))
	}
}

func TestKickoff429GivesUp(t *testing.T) {
	s := newSpecServer(t)
	s.kickoff429 = slices.Repeat([]string{"1"}, 10)
	c := s.client(t, func(o *Options) { o.MaxRetries = 3 })
	_, err := c.Kickoff(context.Background(), Request{})
	if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), "already running") || !strings.Contains(err.Error(), "429") {
		t.Fatalf("err = %v", err)
	}
	if len(s.kickoffs) != 3 {
		t.Errorf("kick-offs = %d, want 3", len(s.kickoffs))
	}
}

func TestKickoffRefused(t *testing.T) {
	s := newSpecServer(t)
	s.kickoffStatus = http.StatusBadRequest
	s.kickoffBody = `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"not-supported","diagnostics":"_type Foo is not supported"}]}`
	c := s.client(t, nil)
	_, err := c.Kickoff(context.Background(), Request{Types: []string{"Foo"}})
	var se *ServerError
	if !errors.Is(err, ErrExportFailed) || !errors.As(err, &se) || se.StatusCode != 400 || !strings.Contains(err.Error(), "_type Foo is not supported") {
		t.Fatalf("err = %v", err)
	}
	// A 202 without Content-Location is useless.
	s.kickoffStatus, s.kickoffBody = http.StatusAccepted, ""
	if _, err := c.Kickoff(context.Background(), Request{}); !errors.Is(err, ErrExportFailed) || !strings.Contains(err.Error(), "Content-Location") {
		t.Fatalf("err = %v", err)
	}
}

func TestPollTransientThenSuccess(t *testing.T) {
	s := newSpecServer(t)
	s.progress = 1
	s.transient = 2
	s.unavailable = 1
	c := s.client(t, nil)
	_, m, _, _ := runExport(t, c, Request{})
	if len(m.Output) != 2 {
		t.Fatalf("manifest = %+v", m)
	}
	if s.polls != 5 {
		t.Errorf("polls = %d, want 5", s.polls)
	}
	// 5 s default interval, then back-off 1 s, 2 s, 4 s.
	want := []time.Duration{5 * time.Second, time.Second, 2 * time.Second, 4 * time.Second}
	if got := s.clock.Sleeps(); !slices.Equal(got, want) {
		t.Errorf("sleeps = %v, want %v", got, want)
	}
}

func TestPollFatal(t *testing.T) {
	for _, status := range []int{500, 400} {
		s := newSpecServer(t)
		s.fatal = "An internal timeout has occurred"
		s.fatalStatus = status
		c := s.client(t, nil)
		st, err := c.Kickoff(context.Background(), Request{})
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Wait(context.Background(), st)
		if !errors.Is(err, ErrExportFailed) || !strings.Contains(err.Error(), "An internal timeout has occurred") {
			t.Fatalf("status %d: err = %v", status, err)
		}
		if s.polls != 1 {
			t.Errorf("status %d: polls = %d, a fatal outcome must not be retried", status, s.polls)
		}
	}
}

func TestPollDeadlineAndCaps(t *testing.T) {
	s := newSpecServer(t)
	s.progress = 1 << 30
	s.pollRetryAfter = "3600"
	c := s.client(t, func(o *Options) { o.MaxWait = time.Hour })
	st, err := c.Kickoff(context.Background(), Request{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Wait(context.Background(), st)
	if !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), "deadline") {
		t.Fatalf("err = %v", err)
	}
	for _, d := range s.clock.Sleeps() {
		if d != 5*time.Minute {
			t.Fatalf("sleep %v, want Retry-After capped to 5m", d)
		}
	}
	if s.polls != 13 {
		t.Errorf("polls = %d, want 13 (polls at 0, 5, ..., 60 min)", s.polls)
	}

	s2 := newSpecServer(t)
	s2.progress = 1 << 30
	c2 := s2.client(t, func(o *Options) { o.MaxPolls = 4 })
	st2, _ := c2.Kickoff(context.Background(), Request{})
	if _, err := c2.Wait(context.Background(), st2); !errors.Is(err, ErrLimit) || s2.polls != 4 {
		t.Fatalf("err = %v after %d polls", err, s2.polls)
	}
}

func TestCancelledContext(t *testing.T) {
	s := newSpecServer(t)
	s.progress = 1 << 30
	c := s.client(t, nil)
	st, _ := c.Kickoff(context.Background(), Request{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Wait(ctx, st); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}

func TestStatusExpiredAndDeleteTolerant(t *testing.T) {
	s := newSpecServer(t)
	c := s.client(t, nil)
	st, _ := c.Kickoff(context.Background(), Request{})
	s.statusGone = true
	_, err := c.Resume(context.Background(), st)
	if !errors.Is(err, ErrExpired) || !strings.Contains(err.Error(), "/status/job1") {
		t.Fatalf("err = %v", err)
	}
	if err := c.Delete(context.Background(), st); err != nil {
		t.Fatalf("Delete of a gone job: %v", err)
	}
}

func TestSTU4ManifestAndPartialPages(t *testing.T) {
	s := newSpecServer(t)
	s.stu4 = true
	s.pages = 3
	c := s.client(t, func(o *Options) { o.PostKickoff = true })
	_, m, rep, sink := runExport(t, c, Request{})
	if m.Version != STU4 || m.Request != "" || !strings.HasPrefix(string(m.Extension), "[") {
		t.Errorf("manifest = %+v", m)
	}
	if !slices.Equal(s.manifestPages, []string{"/status/job1", "/status/job1/page/1", "/status/job1/page/2"}) {
		t.Errorf("pages fetched = %v", s.manifestPages)
	}
	if len(m.Output) != 2 || len(m.Deleted) != 1 || len(m.Errors) != 1 || m.Next() != "" {
		t.Errorf("merged manifest = %+v", m)
	}
	if len(rep.Files) != 4 || len(sink.files) != 4 {
		t.Errorf("downloaded %d files", len(sink.files))
	}
}

func TestManifestTooLarge(t *testing.T) {
	s := newSpecServer(t)
	c := s.client(t, func(o *Options) { o.MaxManifestBytes = 100 })
	st, _ := c.Kickoff(context.Background(), Request{})
	if _, err := c.Wait(context.Background(), st); !errors.Is(err, ErrLimit) || !strings.Contains(err.Error(), "MaxManifestBytes") {
		t.Fatalf("err = %v", err)
	}
}

func TestManifestLinkLoop(t *testing.T) {
	s := newSpecServer(t)
	s.manifestBody = []byte(`{"transactionTime":"2026-01-01T00:00:00Z","requiresAccessToken":false,"output":[],
		"link":[{"relation":"next","url":"` + s.srv.URL + `/status/job1"}]}`)
	c := s.client(t, nil)
	st, _ := c.Kickoff(context.Background(), Request{})
	if _, err := c.Wait(context.Background(), st); err == nil || !strings.Contains(err.Error(), "links back") {
		t.Fatalf("err = %v", err)
	}
}

func TestDownloadGzip(t *testing.T) {
	for _, mode := range []string{"encoding", "bytes"} {
		s := newSpecServer(t)
		s.gzipEncoding = mode == "encoding"
		s.gzipBytes = mode == "bytes"
		_, _, rep, sink := runExport(t, s.client(t, nil), Request{})
		for _, f := range s.files {
			if !bytes.Equal(sink.files[f.name], f.body) {
				t.Errorf("%s: %s not decompressed", mode, f.name)
			}
		}
		if len(rep.Mismatches()) != 0 {
			t.Errorf("%s: mismatches %+v", mode, rep.Mismatches())
		}
	}
}

func TestDownloadWrongCounts(t *testing.T) {
	s := newSpecServer(t)
	s.files[3].count = 2000 // like the SMART server's error file
	s.files[1].count = -1   // no count: nothing to compare
	_, _, rep, _ := runExport(t, s.client(t, nil), Request{})
	mm := rep.Mismatches()
	if len(mm) != 1 || mm[0].File.Kind != KindError || mm[0].Count.Expected != 2000 || mm[0].Count.Lines != 1 {
		t.Fatalf("mismatches = %+v", mm)
	}

	s2 := newSpecServer(t)
	s2.files[0].count = 4 // blank line must not count
	c := s2.client(t, func(o *Options) { o.StrictCounts = true })
	st, _ := c.Kickoff(context.Background(), Request{})
	m, _ := c.Wait(context.Background(), st)
	_, err := c.Download(context.Background(), m, st, newMemSink(), nil)
	var ce *CountMismatchError
	if !errors.Is(err, ErrCountMismatch) || !errors.As(err, &ce) || ce.Expected != 4 || ce.Lines != 3 || !strings.Contains(err.Error(), "Patient.ndjson") {
		t.Fatalf("err = %v", err)
	}
	if st.Done(m.Output[0].URL) {
		t.Error("a file failing the strict count was marked done")
	}
}

func TestDownloadExpiredFile(t *testing.T) {
	for _, status := range []int{404, 410} {
		s := newSpecServer(t)
		s.fileStatus["Observation.ndjson"] = status
		c := s.client(t, nil)
		st, _ := c.Kickoff(context.Background(), Request{})
		m, _ := c.Wait(context.Background(), st)
		_, err := c.Download(context.Background(), m, st, newMemSink(), nil)
		if !errors.Is(err, ErrExpired) || !strings.Contains(err.Error(), "/files/Observation.ndjson") {
			t.Fatalf("%d: err = %v", status, err)
		}
		if !st.Done(m.Output[0].URL) || st.Done(m.Output[1].URL) {
			t.Errorf("%d: state files = %+v", status, st.Files)
		}
	}
}

func TestDownloadRetries(t *testing.T) {
	s := newSpecServer(t)
	s.fileFailures["Patient.ndjson"] = 2
	s.breakFirst["Observation.ndjson"] = true
	sink := newMemSink()
	c := s.client(t, nil)
	st, _ := c.Kickoff(context.Background(), Request{})
	m, _ := c.Wait(context.Background(), st)
	if _, err := c.Download(context.Background(), m, st, sink, nil); err != nil {
		t.Fatal(err)
	}
	for _, f := range s.files {
		if !bytes.Equal(sink.files[f.name], f.body) {
			t.Errorf("%s differs after retries", f.name)
		}
	}
	if n := sink.calls[m.Output[1].URL]; n != 2 {
		t.Errorf("Observation stored %d times, want a restart (2)", n)
	}
	if len(s.fileAuth["Patient.ndjson"]) != 3 {
		t.Errorf("Patient fetched %d times, want 3", len(s.fileAuth["Patient.ndjson"]))
	}
}

func TestRequiresAccessTokenStatic(t *testing.T) {
	const secret = "static-secret-token"
	for _, requires := range []bool{true, false} {
		s := newSpecServer(t)
		s.authRequired = true
		s.requiresToken = requires
		s.validTokens[secret] = 0
		runExport(t, s.client(t, func(o *Options) { o.Auth = StaticToken(secret) }), Request{})
		for name, auths := range s.fileAuth {
			for _, a := range auths {
				if requires && a != "Bearer "+secret {
					t.Errorf("requires=true: %s fetched with %q", name, a)
				}
				if !requires && a != "" {
					t.Errorf("requires=false: token sent to capability URL %s", name)
				}
			}
		}
	}
}

func TestMissingTokenErrors(t *testing.T) {
	const secret = "static-secret-token"
	s := newSpecServer(t)
	s.authRequired = true
	c := s.client(t, func(o *Options) { o.Auth = StaticToken("wrong-" + secret) })
	_, err := c.Kickoff(context.Background(), Request{})
	if !errors.Is(err, ErrUnauthorized) || strings.Contains(err.Error(), secret) {
		t.Fatalf("err = %v", err)
	}
	// A manifest demanding a token with no TokenSource configured.
	s2 := newSpecServer(t)
	s2.requiresToken = true
	c2 := s2.client(t, nil)
	st, _ := c2.Kickoff(context.Background(), Request{})
	m, err := c2.Wait(context.Background(), st)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c2.Download(context.Background(), m, st, newMemSink(), nil); !errors.Is(err, ErrUnauthorized) || errors.Is(err, ErrLimit) {
		t.Fatalf("err = %v", err)
	}
	if len(s2.fileAuth) != 0 || len(s2.clock.Sleeps()) != 0 {
		t.Errorf("a missing token source was retried: %v requests, sleeps %v", s2.fileAuth, s2.clock.Sleeps())
	}
}

// TestTokenHosts: a manifest that requires the token must not be able to
// send it to another host unless the caller allows that host.
func TestTokenHosts(t *testing.T) {
	const secret = "static-secret-token"
	for _, allow := range []bool{false, true} {
		s := newSpecServer(t)
		s.requiresToken = true
		s.validTokens[secret] = 0
		other := strings.Replace(s.srv.URL, "127.0.0.1", "localhost", 1)
		s.manifestBody = []byte(`{"transactionTime":"2026-01-01T00:00:00Z","requiresAccessToken":true,
			"output":[{"type":"Patient","url":"` + other + `/files/Patient.ndjson","count":3}]}`)
		c := s.client(t, func(o *Options) {
			o.Auth = StaticToken(secret)
			if allow {
				o.TokenHosts = []string{strings.TrimPrefix(other, "http://")}
			}
		})
		st, _ := c.Kickoff(context.Background(), Request{})
		m, err := c.Wait(context.Background(), st)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Download(context.Background(), m, st, newMemSink(), nil)
		if allow {
			if err != nil || len(s.fileAuth["Patient.ndjson"]) != 1 {
				t.Fatalf("allowed host: %v", err)
			}
			continue
		}
		if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "TokenHosts") || len(s.fileAuth) != 0 {
			t.Fatalf("other host: err = %v, requests %v", err, s.fileAuth)
		}
	}
}

func TestCheckRedirect(t *testing.T) {
	mk := func(raw string, auth bool) *http.Request {
		r, _ := http.NewRequest("GET", raw, nil)
		if auth {
			r.Header.Set("Authorization", "Bearer x")
		}
		return r
	}
	if err := checkRedirect(mk("http://x.test/a", true), []*http.Request{mk("https://x.test/a", true)}); err == nil {
		t.Error("https -> http with token followed")
	}
	if err := checkRedirect(mk("http://x.test/a", false), []*http.Request{mk("https://x.test/a", false)}); err == nil {
		t.Error("https -> plain http on another machine followed: health records would travel unencrypted")
	}
	if err := checkRedirect(mk("http://127.0.0.1/a", false), []*http.Request{mk("https://x.test/a", false)}); err != nil {
		t.Errorf("https -> http on loopback without token refused: %v", err)
	}
	if err := checkRedirect(mk("https://x.test/a", true), slices.Repeat([]*http.Request{mk("https://x.test/a", true)}, 10)); err == nil {
		t.Error("11th redirect followed")
	}
}

func TestServerTextSanitized(t *testing.T) {
	s := newSpecServer(t)
	s.fatal = "bad\x1b[31m thing\nhappened " + strings.Repeat("x", 1000)
	c := s.client(t, nil)
	st, _ := c.Kickoff(context.Background(), Request{})
	_, err := c.Wait(context.Background(), st)
	if err == nil || strings.ContainsAny(err.Error(), "\x1b\n") || !strings.Contains(err.Error(), "bad [31m thing happened") || len(err.Error()) > 500 {
		t.Fatalf("err = %q", err)
	}
}

func TestTokenNeverOverPlainHTTP(t *testing.T) {
	for raw, want := range map[string]bool{
		"https://ehr.example/fhir": true, "http://127.0.0.1:8080/x": true, "http://[::1]/x": true,
		"http://localhost/x": true, "http://ehr.example/fhir": false, "http://10.0.0.1/x": false,
	} {
		u, _ := url.Parse(raw)
		if tokenAllowed(u) != want {
			t.Errorf("tokenAllowed(%s) = %v", raw, !want)
		}
	}
	// New refuses the base URL outright (TestPlainHTTPOnlyToLoopback), so
	// no token can be sent to it either.
	_, err := New(Options{BaseURL: "http://ehr.invalid/fhir", Auth: StaticToken("t")})
	if err == nil || !strings.Contains(err.Error(), "plain http") {
		t.Fatalf("err = %v", err)
	}
}

func TestResume(t *testing.T) {
	s := newSpecServer(t)
	s.progress = 1
	c := s.client(t, nil)
	ctx := context.Background()
	st, err := c.Kickoff(ctx, Request{Types: []string{"Patient"}})
	if err != nil {
		t.Fatal(err)
	}
	var saved bytes.Buffer
	save := func(st *State) error { saved.Reset(); return st.Save(&saved) }
	if err := save(st); err != nil {
		t.Fatal(err)
	}
	m, err := c.Wait(ctx, st)
	if err != nil {
		t.Fatal(err)
	}
	// The first run dies while storing the second file.
	sink := newMemSink()
	boom := errors.New("disk full")
	sink.fail = func(f File) error {
		if strings.HasSuffix(f.URL, "Observation.ndjson") {
			return boom
		}
		return nil
	}
	if _, err := c.Download(ctx, m, st, sink, save); !errors.Is(err, boom) {
		t.Fatalf("err = %v", err)
	}
	if strings.Contains(saved.String(), "Bearer") || !strings.Contains(saved.String(), "/status/job1") {
		t.Errorf("saved state = %s", saved.String())
	}

	// A new process loads the state and resumes.
	st2, err := LoadState(bytes.NewReader(saved.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	c2 := s.client(t, nil)
	m2, err := c2.Resume(ctx, st2)
	if err != nil {
		t.Fatal(err)
	}
	sink2 := newMemSink()
	rep, err := c2.Download(ctx, m2, st2, sink2, save)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Files[0].Skipped || rep.Files[1].Skipped || len(sink2.files) != 3 {
		t.Errorf("resume report = %+v, stored %d", rep.Files, len(sink2.files))
	}
	if err := c2.Delete(ctx, st2); err != nil || s.deletes != 1 {
		t.Fatalf("delete: %v, %d", err, s.deletes)
	}
	if len(s.kickoffs) != 1 {
		t.Errorf("resume kicked off again")
	}
	final, _ := LoadState(bytes.NewReader(saved.Bytes()))
	if len(final.Files) != 4 {
		t.Errorf("final state has %d files", len(final.Files))
	}
}

func TestLoadStateRejects(t *testing.T) {
	for _, in := range []string{``, `{}`, `{"version":2,"statusUrl":"https://x/s"}`, `{"version":1,"statusUrl":"/s"}`, `{"version":1,"statusUrl":"https://x/s"} x`} {
		if _, err := LoadState(strings.NewReader(in)); err == nil {
			t.Errorf("LoadState(%q) accepted", in)
		}
	}
}

func TestErrorsRedactQuery(t *testing.T) {
	s := newSpecServer(t)
	c := s.client(t, nil)
	_, err := c.Open(context.Background(), File{URL: s.srv.URL + "/files/missing.ndjson?sig=SECRET"})
	if !errors.Is(err, ErrExpired) || strings.Contains(err.Error(), "SECRET") {
		t.Fatalf("err = %v", err)
	}
}

func TestSameOrigin(t *testing.T) {
	base, _ := url.Parse("https://EHR.example/fhir")
	for raw, want := range map[string]bool{
		"https://ehr.example/files/1":     true,
		"https://ehr.example:443/files/1": true,
		"https://ehr.example:8443/f":      false,
		"http://ehr.example/files/1":      false,
		"https://files.ehr.example/f":     false,
		"https://ehr.example.evil/f":      false,
	} {
		u, _ := url.Parse(raw)
		if sameOrigin(u, base) != want {
			t.Errorf("sameOrigin(%s) = %v", raw, !want)
		}
	}
}

// TestTokenNotSentCrossOrigin: with requiresAccessToken true, a file on
// another port of the same host is refused before any request (the token
// stays home); with requiresAccessToken false, files elsewhere are
// capability URLs and are fetched without the token.
func TestTokenNotSentCrossOrigin(t *testing.T) {
	const secret = "static-secret-token"
	var auths []string
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auths = append(auths, r.Header.Get("Authorization"))
		io.WriteString(w, `{"resourceType":"Patient","id":"p1"}`+"\n")
	}))
	t.Cleanup(other.Close)
	for _, requires := range []bool{true, false} {
		auths = nil
		s := newSpecServer(t)
		s.authRequired = true
		s.validTokens[secret] = 0
		s.manifestBody = fmt.Appendf(nil, `{"transactionTime":"2026-01-01T00:00:00Z","requiresAccessToken":%v,
			"output":[{"type":"Patient","url":"%s/files/Patient.ndjson","count":1}]}`, requires, other.URL)
		c := s.client(t, func(o *Options) { o.Auth = StaticToken(secret) })
		st, err := c.Kickoff(context.Background(), Request{})
		if err != nil {
			t.Fatal(err)
		}
		m, err := c.Wait(context.Background(), st)
		if err != nil {
			t.Fatal(err)
		}
		_, err = c.Download(context.Background(), m, st, newMemSink(), nil)
		var the *TokenHostError
		if requires {
			if !errors.As(err, &the) || !errors.Is(err, ErrUnauthorized) || len(auths) != 0 || strings.Contains(err.Error(), secret) {
				t.Fatalf("requires=true: err = %v, requests %q", err, auths)
			}
			continue
		}
		if err != nil || len(auths) != 1 || auths[0] != "" {
			t.Fatalf("requires=false: err = %v, Authorization headers %q", err, auths)
		}
	}
}
