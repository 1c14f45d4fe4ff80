package bulk

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode/utf8"
)

// Level is where the export is kicked off.
type Level int

const (
	LevelSystem  Level = iota // [base]/$export
	LevelPatient              // [base]/Patient/$export
	LevelGroup                // [base]/Group/[id]/$export
)

func (l Level) String() string {
	switch l {
	case LevelSystem:
		return "system"
	case LevelPatient:
		return "patient"
	case LevelGroup:
		return "group"
	}
	return fmt.Sprintf("Level(%d)", int(l))
}

// Request is what to export.
type Request struct {
	Level   Level
	GroupID string   // required for LevelGroup
	Types   []string // _type; empty means every type the server offers
	// Since is _since, a FHIR instant such as the transactionTime of the
	// previous export's manifest. Empty means everything.
	Since string
	// OutputFormat is _outputFormat; empty leaves the server's default
	// (application/fhir+ndjson).
	OutputFormat string
}

func (r Request) validate() error {
	switch r.Level {
	case LevelSystem, LevelPatient:
		if r.GroupID != "" {
			return fmt.Errorf("bulk: a group id needs the group level, not %s", r.Level)
		}
	case LevelGroup:
		if r.GroupID == "" || strings.ContainsAny(r.GroupID, "/?#") {
			return fmt.Errorf("bulk: group level needs a group id without '/', '?' or '#', got %q", r.GroupID)
		}
	default:
		return fmt.Errorf("bulk: unknown level %d", int(r.Level))
	}
	for _, t := range r.Types {
		if t == "" || strings.ContainsAny(t, ",&=?#/ ") {
			return fmt.Errorf("bulk: _type %q is not a resource type", t)
		}
	}
	if r.Since != "" {
		if _, err := time.Parse(time.RFC3339Nano, r.Since); err != nil {
			return fmt.Errorf("bulk: _since %q is not a FHIR instant (e.g. 2024-01-02T03:04:05Z)", r.Since)
		}
	}
	switch r.OutputFormat {
	case "", "application/fhir+ndjson", "application/ndjson", "ndjson":
	default:
		return fmt.Errorf("bulk: _outputFormat %q is not NDJSON, the only format this client reads", r.OutputFormat)
	}
	return nil
}

// Event reports what the client is doing, for progress output. Events are
// delivered synchronously from the goroutine making the request.
type Event struct {
	Op       string        // "kick-off", "poll", "download", "delete", "manifest"
	URL      string        // redacted (no query)
	Status   int           // HTTP status, 0 for network errors
	Progress string        // X-Progress while polling
	Wait     time.Duration // how long the client sleeps next
	Attempt  int           // 1-based retry attempt, 0 when not a retry
	Err      error         // what is being retried, if anything
}

// Options configure a Client. Zero values mean the defaults given.
type Options struct {
	// BaseURL is the FHIR base, e.g. https://ehr.example.org/fhir. Required.
	BaseURL string
	// HTTPClient does the requests (default: a client without timeout; the
	// caps below and ctx bound every exchange).
	HTTPClient *http.Client
	// Auth supplies bearer tokens. Nil means no Authorization header, which
	// suits open test servers; a manifest with requiresAccessToken true then
	// fails to download with a clear error.
	Auth TokenSource
	// Clock defaults to the real one.
	Clock Clock
	// PostKickoff sends the kick-off as POST with a Parameters body, which
	// STU4 requires. The default is GET, which STU3 servers all accept.
	PostKickoff bool
	// PollInterval is the wait between polls when the server sends no
	// Retry-After (default 5 s). MinPollInterval floors every wait,
	// including Retry-After: 0 (default 1 s). MaxRetryAfter caps the wait
	// the server can ask for (default 5 min).
	PollInterval, MinPollInterval, MaxRetryAfter time.Duration
	// MaxWait bounds kick-off retries plus polling, measured on Clock
	// (default 24 h). MaxPolls bounds the number of status requests
	// (default 50,000).
	MaxWait  time.Duration
	MaxPolls int
	// MaxRetries bounds consecutive failed attempts of one request (429,
	// 5xx, network errors, transient outcomes) before giving up (default 8).
	// The back-off doubles from 1 s up to MaxBackoff (default 1 min) unless
	// the server sends Retry-After.
	MaxRetries int
	MaxBackoff time.Duration
	// MaxManifestBytes caps a manifest body (default 64 MiB);
	// MaxManifestPages caps the `link` next chain (default 1,000).
	MaxManifestBytes int64
	MaxManifestPages int
	// RequestTimeout bounds the wait for response headers, and for
	// non-download requests the whole exchange (default 1 min, real time).
	// StallTimeout bounds the time between two pieces of a file download
	// (default 2 min); a stalled download is restarted like a broken one.
	RequestTimeout, StallTimeout time.Duration
	// MaxFileBytes caps the decompressed size of one file; 0 means no cap.
	MaxFileBytes int64
	// StrictCounts makes Download fail with ErrCountMismatch when a file's
	// non-blank lines differ from the manifest's count. By default the
	// mismatch is only reported in the Report, as the spec calls count a
	// hint.
	StrictCounts bool
	// Events, when set, receives progress and retry events.
	Events func(Event)
	// TokenHosts lists further hosts (host, or host:port when the port is
	// not the scheme's default) that may receive the bearer token on file
	// downloads when a manifest requires it. By default only the BaseURL's
	// origin (scheme, host and port) does; a download elsewhere fails with
	// a *TokenHostError before any request is sent.
	TokenHosts []string
	// UserAgent is sent on every request (default "ehrport-bulk").
	UserAgent string
}

// Client runs bulk exports against one FHIR server. It is safe for
// concurrent use once created; its configuration is fixed.
type Client struct {
	o    Options
	base *url.URL
	hc   *http.Client // a copy of o.HTTPClient with our redirect policy
}

// New checks the options and fills in defaults.
func New(o Options) (*Client, error) {
	base, err := url.Parse(strings.TrimRight(o.BaseURL, "/"))
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("bulk: base URL %q is not an absolute http(s) URL", redact(o.BaseURL))
	}
	if base.RawQuery != "" || base.Fragment != "" {
		return nil, fmt.Errorf("bulk: base URL %s must not have a query or fragment", redact(o.BaseURL))
	}
	if !tokenAllowed(base) {
		return nil, fmt.Errorf("bulk: base URL %s is plain http, which would carry health records unencrypted: use https (plain http only to a server on this machine: 127.0.0.1, ::1 or localhost)", redact(o.BaseURL))
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{}
	}
	if o.Clock == nil {
		o.Clock = realClock{}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.PollInterval, 5*time.Second)
	def(&o.MinPollInterval, time.Second)
	def(&o.MaxRetryAfter, 5*time.Minute)
	def(&o.MaxWait, 24*time.Hour)
	def(&o.MaxBackoff, time.Minute)
	def(&o.RequestTimeout, time.Minute)
	def(&o.StallTimeout, 2*time.Minute)
	if o.MaxPolls <= 0 {
		o.MaxPolls = 50_000
	}
	if o.MaxRetries <= 0 {
		o.MaxRetries = 8
	}
	if o.MaxManifestBytes <= 0 {
		o.MaxManifestBytes = 64 << 20
	}
	if o.MaxManifestPages <= 0 {
		o.MaxManifestPages = 1000
	}
	if o.UserAgent == "" {
		o.UserAgent = "ehrport-bulk"
	}
	hc := *o.HTTPClient
	if hc.CheckRedirect == nil {
		hc.CheckRedirect = checkRedirect
	}
	return &Client{o: o, base: base, hc: &hc}, nil
}

// KickoffURL returns the URL a GET kick-off of req would use. It is what
// State.Request records.
func (c *Client) KickoffURL(req Request) (string, error) {
	if err := req.validate(); err != nil {
		return "", err
	}
	u := *c.base
	switch req.Level {
	case LevelSystem:
		u.Path += "/$export"
	case LevelPatient:
		u.Path += "/Patient/$export"
	case LevelGroup:
		u.Path += "/Group/" + req.GroupID + "/$export"
	}
	u.RawPath = ""
	if !c.o.PostKickoff {
		q := url.Values{}
		if len(req.Types) > 0 {
			q.Set("_type", strings.Join(req.Types, ","))
		}
		if req.Since != "" {
			q.Set("_since", req.Since)
		}
		if req.OutputFormat != "" {
			q.Set("_outputFormat", req.OutputFormat)
		}
		u.RawQuery = q.Encode()
	}
	return u.String(), nil
}

func kickoffParameters(req Request) []byte {
	type param struct {
		Name         string `json:"name"`
		ValueString  string `json:"valueString,omitempty"`
		ValueInstant string `json:"valueInstant,omitempty"`
	}
	p := struct {
		ResourceType string  `json:"resourceType"`
		Parameter    []param `json:"parameter"`
	}{ResourceType: "Parameters", Parameter: []param{}}
	if len(req.Types) > 0 {
		p.Parameter = append(p.Parameter, param{Name: "_type", ValueString: strings.Join(req.Types, ",")})
	}
	if req.Since != "" {
		p.Parameter = append(p.Parameter, param{Name: "_since", ValueInstant: req.Since})
	}
	if req.OutputFormat != "" {
		p.Parameter = append(p.Parameter, param{Name: "_outputFormat", ValueString: req.OutputFormat})
	}
	b, _ := json.Marshal(p)
	return b
}

// Kickoff starts an export and returns its State, holding the status URL.
// The caller should persist the State at once (State.Save) so that an
// interrupted run can Resume. A 429 or 5xx answer is retried within
// MaxRetries and MaxWait; a 4xx or a non-transient OperationOutcome fails
// with ErrExportFailed and the server's diagnostics.
func (c *Client) Kickoff(ctx context.Context, req Request) (*State, error) {
	kick, err := c.KickoffURL(req)
	if err != nil {
		return nil, err
	}
	k := call{op: "kick-off", method: http.MethodGet, url: kick, auth: c.o.Auth != nil, fatalOutcome: true}
	if c.o.PostKickoff {
		k.method = http.MethodPost
		k.body = kickoffParameters(req)
		k.contentType = "application/fhir+json"
	}
	start := c.o.Clock.Now()
	resp, err := c.exchange(ctx, k, start.Add(c.o.MaxWait), func(s int) bool { return s == http.StatusAccepted })
	if err != nil {
		return nil, err
	}
	drain(resp)
	loc, err := statusURLFrom(resp)
	if err != nil {
		return nil, fmt.Errorf("bulk: kick-off %s: %w", redact(kick), err)
	}
	return &State{
		Version:     stateVersion,
		StatusURL:   loc,
		Request:     kick,
		Method:      k.method,
		KickoffTime: start.UTC(),
	}, nil
}

// statusURLFrom reads Content-Location from a 202 kick-off answer,
// resolving it against the request URL.
func statusURLFrom(resp *http.Response) (string, error) {
	loc := strings.TrimSpace(resp.Header.Get("Content-Location"))
	if loc == "" {
		return "", fmt.Errorf("202 Accepted without Content-Location: %w", ErrExportFailed)
	}
	u, err := url.Parse(loc)
	if err != nil {
		return "", fmt.Errorf("Content-Location is not a URL: %w", ErrExportFailed)
	}
	if resp.Request != nil && resp.Request.URL != nil {
		u = resp.Request.URL.ResolveReference(u)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("Content-Location %q is not an absolute http(s) URL: %w", redact(loc), ErrExportFailed)
	}
	return u.String(), nil
}

// Wait polls the State's status URL until the export completes, then
// returns its manifest, following `link` next through every page of a
// partial manifest (pages are merged in order). It records the
// transaction time and Expires header in st.
func (c *Client) Wait(ctx context.Context, st *State) (*Manifest, error) {
	if err := st.check(); err != nil {
		return nil, err
	}
	deadline := c.o.Clock.Now().Add(c.o.MaxWait)
	m, expires, err := c.poll(ctx, st.StatusURL, deadline)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{st.StatusURL: true}
	for pages := 1; m.Next() != ""; pages++ {
		next := m.Next()
		if pages >= c.o.MaxManifestPages {
			return nil, fmt.Errorf("bulk: manifest has more than %d pages: %w", c.o.MaxManifestPages, ErrLimit)
		}
		if seen[next] {
			return nil, fmt.Errorf("bulk: manifest page %s links back to an earlier page: %w", redact(next), ErrExportFailed)
		}
		seen[next] = true
		page, _, err := c.poll(ctx, next, deadline)
		if err != nil {
			return nil, err
		}
		m.Output = append(m.Output, page.Output...)
		m.Deleted = append(m.Deleted, page.Deleted...)
		m.Errors = append(m.Errors, page.Errors...)
		m.Warnings = append(m.Warnings, page.Warnings...)
		m.Links = page.Links
	}
	st.setManifestInfo(m.TransactionTime, expires)
	return m, nil
}

// Resume continues an export from a State saved by an earlier run: it
// checks the State and waits for the manifest as Wait does. Files the
// State records as done are then skipped by Download. If the server has
// forgotten the export, the error wraps ErrExpired and a new export is
// needed (with _since set to the last completed export's transaction
// time, for an incremental one).
func (c *Client) Resume(ctx context.Context, st *State) (*Manifest, error) {
	if err := st.check(); err != nil {
		return nil, err
	}
	m, err := c.Wait(ctx, st)
	if err != nil {
		return nil, fmt.Errorf("bulk: resuming export %s: %w", redact(st.StatusURL), err)
	}
	return m, nil
}

func (c *Client) poll(ctx context.Context, statusURL string, deadline time.Time) (*Manifest, time.Time, error) {
	k := call{op: "poll", method: http.MethodGet, url: statusURL, auth: c.o.Auth != nil, fatalOutcome: true}
	for polls := 1; ; polls++ {
		if polls > c.o.MaxPolls {
			return nil, time.Time{}, fmt.Errorf("bulk: poll %s: still running after %d polls: %w", redact(statusURL), c.o.MaxPolls, ErrLimit)
		}
		resp, err := c.exchange(ctx, k, deadline, func(s int) bool { return s == http.StatusOK || s == http.StatusAccepted })
		if err != nil {
			return nil, time.Time{}, err
		}
		if resp.StatusCode == http.StatusAccepted {
			wait, ok := parseRetryAfter(resp.Header, c.o.Clock.Now())
			if ok {
				wait = min(wait, c.o.MaxRetryAfter)
			} else {
				wait = c.o.PollInterval
			}
			wait = max(wait, c.o.MinPollInterval)
			c.event(Event{Op: "poll", URL: redact(statusURL), Status: resp.StatusCode, Progress: sanitize(resp.Header.Get("X-Progress")), Wait: wait})
			drain(resp)
			if err := c.sleep(ctx, wait, deadline, "poll", statusURL); err != nil {
				return nil, time.Time{}, err
			}
			continue
		}
		body, err := readLimited(resp.Body, c.o.MaxManifestBytes)
		resp.Body.Close()
		if err != nil {
			return nil, time.Time{}, fmt.Errorf("bulk: manifest %s: %w", redact(statusURL), err)
		}
		m, err := ParseManifest(redact(statusURL), body)
		if err != nil {
			return nil, time.Time{}, err
		}
		var expires time.Time
		if e := resp.Header.Get("Expires"); e != "" {
			expires, _ = http.ParseTime(e)
		}
		c.event(Event{Op: "manifest", URL: redact(statusURL), Status: resp.StatusCode})
		return m, expires, nil
	}
}

// Delete asks the server to cancel the export or free its files (DELETE on
// the status URL). A 404 or 410 counts as done: the job is already gone.
func (c *Client) Delete(ctx context.Context, st *State) error {
	if err := st.check(); err != nil {
		return err
	}
	k := call{op: "delete", method: http.MethodDelete, url: st.StatusURL, auth: c.o.Auth != nil}
	deadline := c.o.Clock.Now().Add(c.o.MaxWait)
	resp, err := c.exchange(ctx, k, deadline, func(s int) bool {
		return s/100 == 2 || s == http.StatusNotFound || s == http.StatusGone
	})
	if err != nil {
		return err
	}
	drain(resp)
	return nil
}

func (c *Client) event(e Event) {
	if c.o.Events != nil {
		c.o.Events(e)
	}
}

// sleep waits d unless that would pass the deadline.
func (c *Client) sleep(ctx context.Context, d time.Duration, deadline time.Time, op, rawURL string) error {
	if c.o.Clock.Now().Add(d).After(deadline) {
		return fmt.Errorf("bulk: %s %s: waiting %s more would pass the overall deadline (MaxWait %s): %w", op, redact(rawURL), d, c.o.MaxWait, ErrLimit)
	}
	return c.o.Clock.Sleep(ctx, d)
}

// call describes one logical HTTP request.
type call struct {
	op, method, url string
	body            []byte
	contentType     string
	accept          string
	auth            bool
	// fatalOutcome: a 5xx carrying a non-transient OperationOutcome is the
	// server's verdict on the export, not a hiccup; fail instead of retrying.
	fatalOutcome bool
	// extra headers
	header http.Header
}

// exchange performs k, retrying network errors, 429, 5xx and transient
// OperationOutcomes with back-off (or Retry-After) within MaxRetries and
// the deadline. It returns the response (body unread) when ok(status), and
// a *ServerError otherwise.
func (c *Client) exchange(ctx context.Context, k call, deadline time.Time, ok func(int) bool) (*http.Response, error) {
	var last error
	for attempt := 0; ; attempt++ {
		resp, err := c.send(ctx, k)
		var wait time.Duration
		var retryAfter bool
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			var re *retryableError
			var se *ServerError
			if !errors.As(err, &re) && !(errors.As(err, &se) && se.Transient) {
				return nil, err
			}
			last = err
		case ok(resp.StatusCode):
			return resp, nil
		default:
			se := c.serverError(k, resp)
			wait, retryAfter = parseRetryAfter(resp.Header, c.o.Clock.Now())
			retry := resp.StatusCode == http.StatusTooManyRequests || se.Transient ||
				(resp.StatusCode >= 500 && !(k.fatalOutcome && se.hasOutcome))
			if !retry {
				return nil, se
			}
			last = se
		}
		if attempt+1 >= c.o.MaxRetries {
			return nil, fmt.Errorf("bulk: %s %s: giving up after %d attempts: %w: %w", k.op, redact(k.url), attempt+1, ErrLimit, last)
		}
		if retryAfter {
			wait = min(wait, c.o.MaxRetryAfter)
		} else {
			wait = min(time.Second<<min(attempt, 20), c.o.MaxBackoff)
		}
		wait = max(wait, c.o.MinPollInterval)
		status := 0
		var se *ServerError
		if errors.As(last, &se) {
			status = se.StatusCode
		}
		c.event(Event{Op: k.op, URL: redact(k.url), Status: status, Wait: wait, Attempt: attempt + 1, Err: last})
		if err := c.sleep(ctx, wait, deadline, k.op, k.url); err != nil {
			return nil, fmt.Errorf("%w (last error: %v)", err, last)
		}
	}
}

// serverError reads (a bounded part of) an error body and classifies it.
func (c *Client) serverError(k call, resp *http.Response) *ServerError {
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	drain(resp)
	se := &ServerError{Op: k.op, URL: redact(k.url), StatusCode: resp.StatusCode}
	if o, ok := ParseOutcome(body); ok {
		se.Diagnostics, se.Transient, se.hasOutcome = sanitize(o.Diagnostics), o.Transient, true
	} else if !bytes.ContainsAny(body[:min(len(body), 512)], "\x00") {
		se.Diagnostics = sanitize(string(body))
	}
	switch {
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		se.class = ErrUnauthorized
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
		se.class = ErrExpired
	case k.op == "kick-off" || k.op == "poll":
		se.class = ErrExportFailed
	}
	return se
}

// retryableError marks a failure worth another attempt: the connection
// failed, or the token source failed without a verdict (no ServerError).
type retryableError struct{ err error }

func (e *retryableError) Error() string { return e.err.Error() }
func (e *retryableError) Unwrap() error { return e.err }

// tokenHostAllowed refuses to send the token over plain http (except to
// loopback), and, for file downloads, to any origin other than the FHIR
// server's (scheme, host and port, default ports made explicit) unless
// Options.TokenHosts lists the host: a manifest must not be able to send
// the token elsewhere.
func (c *Client) tokenHostAllowed(k call, u *url.URL) error {
	if !tokenAllowed(u) {
		return fmt.Errorf("bulk: %s %s: refusing to send the bearer token over plain http (use https): %w", k.op, redact(k.url), ErrUnauthorized)
	}
	if k.op != "download" || sameOrigin(u, c.base) {
		return nil
	}
	for _, h := range c.o.TokenHosts {
		if hostPort(u) == normalHost(h, u.Scheme) {
			return nil
		}
	}
	return &TokenHostError{URL: redact(k.url), Host: hostPort(u), Server: hostPort(c.base)}
}

// TokenHostError is a download the client refused to make: the manifest
// says requiresAccessToken, but the file is not on the FHIR server's
// origin and Options.TokenHosts does not list its host. No request was
// sent. It unwraps to ErrUnauthorized.
type TokenHostError struct {
	URL    string // redacted
	Host   string // host:port of the file
	Server string // host:port of the FHIR server
}

func (e *TokenHostError) Error() string {
	return fmt.Sprintf("bulk: download %s: the manifest asks for the bearer token on %s, not on the FHIR server's origin %s; refusing to send it there (list the host in TokenHosts to allow it)",
		e.URL, e.Host, e.Server)
}

func (e *TokenHostError) Unwrap() error { return ErrUnauthorized }

// sameOrigin compares scheme, host (case-insensitively) and port, with
// the scheme's default port filled in.
func sameOrigin(a, b *url.URL) bool {
	return strings.EqualFold(a.Scheme, b.Scheme) && hostPort(a) == hostPort(b)
}

// hostPort is "host:port" in lower case, with the default port of the
// URL's scheme when it has none.
func hostPort(u *url.URL) string {
	return normalHost(u.Host, u.Scheme)
}

func normalHost(hostport, scheme string) string {
	h := strings.ToLower(hostport)
	if _, _, err := net.SplitHostPort(h); err == nil {
		return h
	}
	port := "443"
	if strings.EqualFold(scheme, "http") {
		port = "80"
	}
	return net.JoinHostPort(strings.Trim(h, "[]"), port)
}

// redirectPolicyError is a redirect the client refused to follow.
type redirectPolicyError struct{ msg string }

func (e *redirectPolicyError) Error() string { return e.msg }

// checkRedirect follows at most 10 redirects and never from https to
// http while an Authorization header is set (net/http already drops it
// on a change of host).
func checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) >= 10 {
		return &redirectPolicyError{"stopped after 10 redirects"}
	}
	if !tokenAllowed(req.URL) {
		return &redirectPolicyError{fmt.Sprintf("refusing a redirect to plain http %s (health records would travel unencrypted)", redact(req.URL.String()))}
	}
	if req.Header.Get("Authorization") != "" && via[len(via)-1].URL.Scheme == "https" && req.URL.Scheme != "https" {
		return &redirectPolicyError{fmt.Sprintf("refusing a redirect from https to %s with the bearer token", redact(req.URL.String()))}
	}
	return nil
}

// tokenAllowed: tokens and health records travel over https, or over http
// only to loopback (a server on this machine).
func tokenAllowed(u *url.URL) bool {
	return u.Scheme == "https" || Loopback(u.Hostname())
}

// Loopback reports whether host names this machine (localhost, 127.0.0.0/8
// or ::1): the only place plain http may carry health records or tokens.
func Loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// send makes one request, adding the bearer token when k.auth, and on a
// 401 asks an Invalidator-capable TokenSource for a fresh token and tries
// once more.
func (c *Client) send(ctx context.Context, k call) (*http.Response, error) {
	var refused string
	for try := 0; try < 2; try++ {
		req, err := http.NewRequestWithContext(ctx, k.method, k.url, bytes.NewReader(k.body))
		if err != nil {
			return nil, fmt.Errorf("bulk: %s %s: %v", k.op, redact(k.url), err)
		}
		if k.body == nil {
			req.Body, req.ContentLength = http.NoBody, 0
		}
		maps(req.Header, k.header)
		accept := k.accept
		if accept == "" {
			accept = "application/fhir+json"
		}
		req.Header.Set("Accept", accept)
		req.Header.Set("User-Agent", c.o.UserAgent)
		if k.op == "kick-off" {
			req.Header.Set("Prefer", "respond-async")
		}
		if k.contentType != "" {
			req.Header.Set("Content-Type", k.contentType)
		}
		var tok string
		if k.auth {
			if c.o.Auth == nil {
				return nil, fmt.Errorf("bulk: %s %s needs an access token, but no token source is configured: %w", k.op, redact(k.url), ErrUnauthorized)
			}
			if err := c.tokenHostAllowed(k, req.URL); err != nil {
				return nil, err
			}
			tok, err = c.o.Auth.Token(ctx)
			if err != nil {
				err = fmt.Errorf("bulk: %s %s: getting a token: %w", k.op, redact(k.url), err)
				var se *ServerError
				if !errors.As(err, &se) && ctx.Err() == nil {
					err = &retryableError{err}
				}
				return nil, err
			}
			if tok == refused {
				break // the source has nothing fresher; report the 401 below
			}
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := c.do(ctx, req, k.op == "download")
		if err != nil {
			err = fmt.Errorf("bulk: %s %s: %w", k.op, redact(k.url), scrubURLError(err))
			var rp *redirectPolicyError
			if errors.As(err, &rp) || errors.As(err, new(*tls.CertificateVerificationError)) {
				// Retrying cannot make an untrusted certificate trusted.
				return nil, err
			}
			return nil, &retryableError{err}
		}
		if resp.StatusCode != http.StatusUnauthorized || !k.auth || try == 1 {
			return resp, nil
		}
		inv, ok := c.o.Auth.(Invalidator)
		if !ok {
			return resp, nil
		}
		drain(resp)
		inv.Invalidate(tok)
		refused = tok
	}
	return nil, &ServerError{Op: k.op, URL: redact(k.url), StatusCode: http.StatusUnauthorized,
		Diagnostics: "the server refused the token and no fresher one is available", class: ErrUnauthorized}
}

var errNoResponse = errors.New("no response in time (RequestTimeout)")

// do runs req under the timeouts: RequestTimeout until the response
// headers arrive and, except for downloads, for the whole body too; for
// downloads, StallTimeout between two reads that return data.
func (c *Client) do(ctx context.Context, req *http.Request, download bool) (*http.Response, error) {
	if !tokenAllowed(req.URL) {
		return nil, &redirectPolicyError{fmt.Sprintf("refusing plain http %s: health records would travel unencrypted; the server must offer its files over https", redact(req.URL.String()))}
	}
	rctx, cancel := context.WithCancelCause(ctx)
	timer := time.AfterFunc(c.o.RequestTimeout, func() { cancel(errNoResponse) })
	resp, err := c.hc.Do(req.WithContext(rctx))
	if err != nil {
		timer.Stop()
		if ctx.Err() == nil && context.Cause(rctx) == errNoResponse {
			err = errNoResponse
		}
		cancel(nil)
		return nil, err
	}
	tb := &timedBody{ReadCloser: resp.Body, ctx: rctx, cancel: cancel, timer: timer}
	if download {
		timer.Stop()
		tb.stall = c.o.StallTimeout
		tb.timer = time.AfterFunc(tb.stall, func() { cancel(errStalled) })
	}
	resp.Body = tb
	return resp, nil
}

var errStalled = errors.New("download stalled (no data within StallTimeout)")

// timedBody ends the request's context when closed, and resets the stall
// timer whenever data arrives.
type timedBody struct {
	io.ReadCloser
	ctx    context.Context
	cancel context.CancelCauseFunc
	timer  *time.Timer
	stall  time.Duration
}

func (b *timedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 && b.stall > 0 {
		b.timer.Reset(b.stall)
	}
	if err != nil && err != io.EOF {
		if cause := context.Cause(b.ctx); cause == errStalled || cause == errNoResponse {
			err = cause
		}
	}
	return n, err
}

func (b *timedBody) Close() error {
	b.timer.Stop()
	err := b.ReadCloser.Close()
	b.cancel(nil)
	return err
}

func maps(dst, src http.Header) {
	for k, v := range src {
		dst[k] = append([]string(nil), v...)
	}
}

// scrubURLError strips the URL (which may carry a capability or a query
// secret) from net/http's *url.Error; the caller names the redacted URL.
func scrubURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
}

func readLimited(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("larger than %d bytes (MaxManifestBytes): %w", limit, ErrLimit)
	}
	return b, nil
}

// sanitize makes server-supplied text safe to print: control characters
// (terminal escapes, newlines) become spaces, runs of space collapse, and
// the result is cut to 300 bytes.
func sanitize(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == utf8.RuneError {
			return ' '
		}
		return r
	}, s)
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 300 {
		cut := 300
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}
