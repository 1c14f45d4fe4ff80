package bulk

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// repoRoot is the module root, found from this file's location.
func repoRoot(t testing.TB) string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("no caller info")
	}
	return filepath.Join(filepath.Dir(file), "..", "..")
}

// fixture reads testdata/bulk/<name>.
func fixture(t testing.TB, name string) []byte {
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "testdata", "bulk", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// corpusDir returns ../shared/corpus/<sub>, skipping (or failing under
// CI=true) when the shared corpus is absent.
func corpusDir(t testing.TB, sub string) string {
	dir := filepath.Join(repoRoot(t), "..", "shared", "corpus", sub)
	if _, err := os.Stat(dir); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("shared corpus missing under CI: %v", err)
		}
		t.Skipf("shared corpus not present: %v", err)
	}
	return dir
}

// fakeClock advances only when slept on, recording every sleep.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Time
	sleeps []time.Duration
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 11, 22, 5, 39, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
	c.sleeps = append(c.sleeps, d)
	return nil
}

func (c *fakeClock) Sleeps() []time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Duration(nil), c.sleeps...)
}

// srvFile is one file the server offers.
type srvFile struct {
	name  string
	kind  Kind
	typ   string
	body  []byte
	count int64 // -1: omit count
}

// specServer is a Bulk Data export server that follows the spec, with
// knobs for its error paths. Zero knobs give a well-behaved STU3 server.
type specServer struct {
	t     *testing.T
	srv   *httptest.Server
	clock *fakeClock

	mu sync.Mutex
	// knobs
	kickoff429     []string // Retry-After values of 429s before the 202
	kickoffStatus  int      // non-zero: answer kick-off with this and kickoffBody
	kickoffBody    string
	progress       int    // 202s before the manifest
	pollRetryAfter string // Retry-After on 202s ("" omits)
	transient      int    // transient 500 OperationOutcomes, after the 202s
	unavailable    int    // 503s without body, after the 202s
	fatal          string // non-empty: poll answers 500 OperationOutcome with this
	fatalStatus    int    // status for fatal (default 500)
	statusGone     bool   // the status URL answers 404
	stu4           bool   // manifestType, outcome[], extension array
	requiresToken  bool   // requiresAccessToken in the manifest
	authRequired   bool   // kick-off/status/delete need a valid bearer token
	validTokens    map[string]int
	tokenUses      int // a token expires after this many uses (0: never)
	gzipEncoding   bool
	gzipBytes      bool
	fileStatus     map[string]int // name -> status to answer (404, 410, 500...)
	fileFailures   map[string]int // name -> number of 500s before success
	breakFirst     map[string]bool
	pages          int // >1 splits outputs across pages linked with next
	manifestBody   []byte
	extra          http.HandlerFunc // serves paths no other route takes
	files          []srvFile
	tokenClientID  string
	tokenPub       crypto.PublicKey
	tokenKID       string
	tokenIssued    int
	tokenExpiresIn int
	tokenStatus    []int  // statuses the token endpoint answers before it works (503, 307, ...)
	tokenBody      string // non-empty: the 200 answer's body instead of a token
	rejectTokens   bool   // every bearer token is refused (401), fresh or not
	tokenRequests  int

	// records
	kickoffs      []recorded
	polls         int
	deletes       int
	fileAuth      map[string][]string
	seenJTI       map[string]bool
	manifestPages []string
}

type recorded struct {
	method, path, query, body, prefer, accept string
}

func newSpecServer(t *testing.T) *specServer {
	s := &specServer{
		t: t, clock: newFakeClock(),
		validTokens: map[string]int{}, fileStatus: map[string]int{}, fileFailures: map[string]int{},
		breakFirst: map[string]bool{}, fileAuth: map[string][]string{}, seenJTI: map[string]bool{},
		tokenExpiresIn: 300,
	}
	s.files = []srvFile{
		{name: "Patient.ndjson", kind: KindOutput, typ: "Patient", body: fixture(t, "Patient.ndjson"), count: 3},
		{name: "Observation.ndjson", kind: KindOutput, typ: "Observation", body: fixture(t, "Observation.ndjson"), count: 3},
		{name: "Patient.deleted.ndjson", kind: KindDeleted, typ: "Bundle", body: fixture(t, "Patient.deleted.ndjson"), count: 2},
		{name: "OperationOutcome.ndjson", kind: KindError, typ: "OperationOutcome", body: fixture(t, "OperationOutcome.ndjson"), count: 1},
	}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *specServer) base() string { return s.srv.URL + "/fhir" }

func (s *specServer) client(t *testing.T, mod func(*Options)) *Client {
	o := Options{BaseURL: s.base(), Clock: s.clock, HTTPClient: s.srv.Client()}
	if mod != nil {
		mod(&o)
	}
	c, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func writeOutcome(w http.ResponseWriter, status int, code, diag string) {
	w.Header().Set("Content-Type", "application/fhir+json")
	w.WriteHeader(status)
	c, _ := json.Marshal(code)
	d, _ := json.Marshal(diag)
	fmt.Fprintf(w, `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":%s,"diagnostics":%s}]}`, c, d)
}

// authorized checks and consumes one use of the bearer token.
func (s *specServer) authorized(r *http.Request) bool {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return false
	}
	uses, known := s.validTokens[tok]
	if !known || s.rejectTokens {
		return false
	}
	if s.tokenUses > 0 && uses >= s.tokenUses {
		delete(s.validTokens, tok)
		return false
	}
	s.validTokens[tok] = uses + 1
	return true
}

func (s *specServer) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := r.URL.Path
	switch {
	case p == "/token":
		s.serveToken(w, r)
	case p == "/fhir/.well-known/smart-configuration":
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"token_endpoint":%q,"token_endpoint_auth_signing_alg_values_supported":["RS384","ES384"],"capabilities":["client-confidential-asymmetric"]}`, s.srv.URL+"/token")
	case strings.HasSuffix(p, "/$export"):
		s.serveKickoff(w, r)
	case strings.HasPrefix(p, "/status/"):
		s.serveStatus(w, r)
	case strings.HasPrefix(p, "/files/"):
		s.serveFile(w, r, strings.TrimPrefix(p, "/files/"))
	case s.extra != nil:
		s.extra(w, r)
	default:
		http.NotFound(w, r)
	}
}

func (s *specServer) serveKickoff(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	s.kickoffs = append(s.kickoffs, recorded{method: r.Method, path: r.URL.EscapedPath(), query: r.URL.RawQuery,
		body: string(body), prefer: r.Header.Get("Prefer"), accept: r.Header.Get("Accept")})
	if s.authRequired && !s.authorized(r) {
		writeOutcome(w, http.StatusUnauthorized, "login", "token missing or expired")
		return
	}
	if len(s.kickoff429) > 0 {
		ra := s.kickoff429[0]
		s.kickoff429 = s.kickoff429[1:]
		if ra != "" {
			w.Header().Set("Retry-After", ra)
		}
		writeOutcome(w, http.StatusTooManyRequests, "throttled", "an export is already running")
		return
	}
	if s.kickoffStatus != 0 {
		w.Header().Set("Content-Type", "application/fhir+json")
		w.WriteHeader(s.kickoffStatus)
		io.WriteString(w, s.kickoffBody)
		return
	}
	w.Header().Set("Content-Location", s.srv.URL+"/status/job1")
	w.WriteHeader(http.StatusAccepted)
}

func (s *specServer) serveStatus(w http.ResponseWriter, r *http.Request) {
	if s.authRequired && !s.authorized(r) {
		writeOutcome(w, http.StatusUnauthorized, "login", "token missing or expired")
		return
	}
	if s.statusGone {
		writeOutcome(w, http.StatusNotFound, "not-found", "no such export")
		return
	}
	if r.Method == http.MethodDelete {
		s.deletes++
		s.statusGone = true
		w.WriteHeader(http.StatusAccepted)
		return
	}
	page := strings.TrimPrefix(r.URL.Path, "/status/job1")
	if page == "" {
		s.polls++
		switch {
		case s.progress > 0:
			s.progress--
			if s.pollRetryAfter != "" {
				w.Header().Set("Retry-After", s.pollRetryAfter)
			}
			w.Header().Set("X-Progress", fmt.Sprintf("%d%% done", 100-10*s.progress))
			w.WriteHeader(http.StatusAccepted)
			return
		case s.transient > 0:
			s.transient--
			writeOutcome(w, http.StatusInternalServerError, "transient", "An unknown error occurred (transient_error). Please try again.")
			return
		case s.unavailable > 0:
			s.unavailable--
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		case s.fatal != "":
			st := s.fatalStatus
			if st == 0 {
				st = http.StatusInternalServerError
			}
			writeOutcome(w, st, "processing", s.fatal)
			return
		}
	}
	s.manifestPages = append(s.manifestPages, r.URL.Path)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Expires", s.clock.Now().Add(time.Hour).Format(http.TimeFormat))
	if s.manifestBody != nil {
		w.Write(s.manifestBody)
		return
	}
	n := 0
	if page != "" {
		fmt.Sscanf(page, "/page/%d", &n)
	}
	w.Write(s.manifest(n))
}

// manifest builds page n (0-based) of the manifest.
func (s *specServer) manifest(n int) []byte {
	pages := max(s.pages, 1)
	m := map[string]any{
		"transactionTime":     "2026-11-22T05:39:01Z",
		"requiresAccessToken": s.requiresToken,
	}
	if s.stu4 {
		m["manifestType"] = "http://hl7.org/fhir/uv/bulkdata/StructureDefinition/BulkDataManifest"
		m["extension"] = []any{map[string]any{"url": "http://example.org/x", "valueBoolean": true}}
	} else {
		m["request"] = s.base() + "/$export"
		m["extension"] = map[string]any{"http://example.org/x": true}
	}
	lists := map[Kind][]map[string]any{}
	for i, f := range s.files {
		if i%pages != n {
			continue
		}
		e := map[string]any{"url": s.srv.URL + "/files/" + f.name, "type": f.typ}
		if f.count >= 0 {
			e["count"] = f.count
		}
		lists[f.kind] = append(lists[f.kind], e)
	}
	m["output"] = append([]map[string]any{}, lists[KindOutput]...)
	if lists[KindDeleted] != nil {
		m["deleted"] = lists[KindDeleted]
	}
	errKey := "error"
	if s.stu4 {
		errKey = "outcome"
	}
	m[errKey] = append([]map[string]any{}, lists[KindError]...)
	if n+1 < pages {
		m["link"] = []any{map[string]any{"relation": "next", "url": fmt.Sprintf("%s/status/job1/page/%d", s.srv.URL, n+1)}}
	}
	b, err := json.Marshal(m)
	if err != nil {
		s.t.Error(err)
	}
	return b
}

func (s *specServer) serveFile(w http.ResponseWriter, r *http.Request, name string) {
	s.fileAuth[name] = append(s.fileAuth[name], r.Header.Get("Authorization"))
	if s.requiresToken && !s.authorized(r) {
		writeOutcome(w, http.StatusUnauthorized, "login", "file needs a token")
		return
	}
	if st := s.fileStatus[name]; st != 0 {
		writeOutcome(w, st, "not-found", "file "+name+" expired")
		return
	}
	if s.fileFailures[name] > 0 {
		s.fileFailures[name]--
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	var body []byte
	for _, f := range s.files {
		if f.name == name {
			body = f.body
		}
	}
	if body == nil {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Type", "application/fhir+ndjson")
	if s.breakFirst[name] {
		s.breakFirst[name] = false
		// Promise the whole body, send half, then drop the connection.
		w.Header().Set("Content-Length", fmt.Sprint(len(body)))
		w.WriteHeader(http.StatusOK)
		w.Write(body[:len(body)/2])
		w.(http.Flusher).Flush()
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close()
		}
		return
	}
	if s.gzipEncoding && strings.Contains(r.Header.Get("Accept-Encoding"), "gzip") {
		w.Header().Set("Content-Encoding", "gzip")
		body = gz(body)
	} else if s.gzipBytes {
		w.Header().Set("Content-Type", "application/gzip")
		body = gz(body)
	}
	w.Write(body)
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// serveToken is a SMART Backend Services token endpoint that verifies the
// client assertion.
func (s *specServer) serveToken(w http.ResponseWriter, r *http.Request) {
	fail := func(desc string) {
		s.t.Logf("token endpoint: %s", desc)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, `{"error":"invalid_client","error_description":%q}`, desc)
	}
	s.tokenRequests++
	if len(s.tokenStatus) > 0 {
		st := s.tokenStatus[0]
		s.tokenStatus = s.tokenStatus[1:]
		if st/100 == 3 {
			w.Header().Set("Location", "http://elsewhere.invalid/token")
		}
		w.WriteHeader(st)
		return
	}
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/x-www-form-urlencoded" {
		fail("want a form POST")
		return
	}
	if err := r.ParseForm(); err != nil {
		fail(err.Error())
		return
	}
	if r.PostForm.Get("grant_type") != "client_credentials" ||
		r.PostForm.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" ||
		r.PostForm.Get("scope") == "" {
		fail("bad grant parameters")
		return
	}
	hdr, claims, err := verifyAssertion(r.PostForm.Get("client_assertion"), s.tokenPub)
	if err != nil {
		fail(err.Error())
		return
	}
	if hdr["typ"] != "JWT" || hdr["kid"] != s.tokenKID {
		fail("bad typ or kid")
		return
	}
	now := s.clock.Now().Unix()
	exp, _ := claims["exp"].(float64)
	jti, _ := claims["jti"].(string)
	if claims["iss"] != s.tokenClientID || claims["sub"] != s.tokenClientID ||
		claims["aud"] != s.srv.URL+"/token" || int64(exp) <= now || int64(exp) > now+300 || jti == "" || s.seenJTI[jti] {
		fail(fmt.Sprintf("bad claims %v", claims))
		return
	}
	s.seenJTI[jti] = true
	if s.tokenBody != "" {
		io.WriteString(w, s.tokenBody)
		return
	}
	s.tokenIssued++
	tok := fmt.Sprintf("issued-%d", s.tokenIssued)
	s.validTokens[tok] = 0
	w.Header().Set("Content-Type", "application/json")
	fmt.Fprintf(w, `{"access_token":%q,"token_type":"bearer","expires_in":%d,"scope":%q}`, tok, s.tokenExpiresIn, r.PostForm.Get("scope"))
}

// verifyAssertion checks a JWS client assertion's signature with pub
// (RS384 for RSA, ES384 for EC) and returns its header and claims.
func verifyAssertion(assertion string, pub crypto.PublicKey) (map[string]string, map[string]any, error) {
	parts := strings.Split(assertion, ".")
	if len(parts) != 3 {
		return nil, nil, errors.New("assertion is not a JWS")
	}
	var hdr map[string]string
	var claims map[string]any
	hb, _ := base64.RawURLEncoding.DecodeString(parts[0])
	cb, _ := base64.RawURLEncoding.DecodeString(parts[1])
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	if json.Unmarshal(hb, &hdr) != nil || json.Unmarshal(cb, &claims) != nil {
		return nil, nil, errors.New("assertion header or claims not JSON")
	}
	digest := sha512.Sum384([]byte(parts[0] + "." + parts[1]))
	switch pub := pub.(type) {
	case *rsa.PublicKey:
		if hdr["alg"] != "RS384" || rsa.VerifyPKCS1v15(pub, crypto.SHA384, digest[:], sig) != nil {
			return nil, nil, errors.New("bad RS384 signature")
		}
	case *ecdsa.PublicKey:
		if hdr["alg"] != "ES384" || len(sig) != 96 ||
			!ecdsa.Verify(pub, digest[:], new(big.Int).SetBytes(sig[:48]), new(big.Int).SetBytes(sig[48:])) {
			return nil, nil, errors.New("bad ES384 signature")
		}
	default:
		return nil, nil, errors.New("no key registered")
	}
	return hdr, claims, nil
}

// memSink stores files in memory, replacing on restart.
type memSink struct {
	mu    sync.Mutex
	files map[string][]byte
	calls map[string]int
	fail  func(f File) error
}

func newMemSink() *memSink { return &memSink{files: map[string][]byte{}, calls: map[string]int{}} }

func (m *memSink) Store(ctx context.Context, f File, r io.Reader) error {
	m.mu.Lock()
	m.calls[f.URL]++
	fail := m.fail
	m.mu.Unlock()
	if fail != nil {
		if err := fail(f); err != nil {
			return err
		}
	}
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.files[fileName(f)] = b
	m.mu.Unlock()
	return nil
}

func fileName(f File) string {
	u, _ := url.Parse(f.URL)
	return filepath.Base(u.Path)
}
