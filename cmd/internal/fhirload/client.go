package fhirload

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ehrport/ehrport/fhir/bulk"
)

// Defaults of Options.
const (
	// DefaultBatchSize is small enough for servers that cap the updates in
	// one transaction (Medplum refuses more than 50).
	DefaultBatchSize      = 50
	DefaultConcurrency    = 2
	DefaultAttempts       = 6
	DefaultBaseDelay      = 500 * time.Millisecond
	DefaultMaxDelay       = 30 * time.Second
	DefaultRequestTimeout = 5 * time.Minute
	maxBody               = 4 << 20 // of an answer we parse (errors, counts; a transaction response: 4× the request)
)

// Options configure a Client. Zero values give the defaults above.
type Options struct {
	// BaseURL is the server's FHIR base, e.g. https://fhir.example/r4.
	// Plain http is accepted for loopback hosts only.
	BaseURL string
	// Token, when set, is sent as a bearer token. It never appears in an
	// error or a log line.
	Token string
	// HTTPClient defaults to a client with its own transport.
	HTTPClient *http.Client

	BatchSize   int // entries per transaction Bundle
	Concurrency int // transaction Bundles in flight
	// Attempts is the number of tries of one request before giving up
	// (ErrUnavailable); 1 means no retry.
	Attempts            int
	BaseDelay, MaxDelay time.Duration // back-off: BaseDelay·2^n with jitter, at most MaxDelay (also caps Retry-After)
	RequestTimeout      time.Duration // of one HTTP exchange
	Log                 *slog.Logger

	sleepForTest   func(context.Context, time.Duration) error
	onRetryForTest func(status int, wait time.Duration)
}

// Client talks to one FHIR server.
type Client struct {
	o       Options
	base    *url.URL
	shown   string // base without query or credentials, for messages
	hc      *http.Client
	retries atomic.Int64
}

// New checks the options and the base URL; it sends nothing.
func New(o Options) (*Client, error) {
	u, err := checkBase(o.BaseURL)
	if err != nil {
		return nil, err
	}
	if o.BatchSize <= 0 {
		o.BatchSize = DefaultBatchSize
	}
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.Attempts <= 0 {
		o.Attempts = DefaultAttempts
	}
	if o.BaseDelay <= 0 {
		o.BaseDelay = DefaultBaseDelay
	}
	if o.MaxDelay <= 0 {
		o.MaxDelay = DefaultMaxDelay
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	hc := o.HTTPClient
	if hc == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.MaxIdleConnsPerHost = o.Concurrency + 2
		hc = &http.Client{Transport: tr}
	}
	return &Client{o: o, base: u, shown: u.String(), hc: hc}, nil
}

// BaseURL is the base as shown in messages (no query, no credentials).
func (c *Client) BaseURL() string { return c.shown }

// Retries is the number of requests retried so far.
func (c *Client) Retries() int64 { return c.retries.Load() }

func checkBase(raw string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimRight(raw, "/"))
	bad := func(why string) error {
		return fmt.Errorf("%w %q: %s", ErrBadURL, redactRaw(raw), why)
	}
	switch {
	case err != nil:
		return nil, bad("not a URL")
	case u.Scheme != "https" && u.Scheme != "http":
		return nil, bad("give the server's FHIR base as https://host/path")
	case u.Host == "":
		return nil, bad("no host")
	case u.User != nil:
		return nil, bad("credentials do not belong in the URL: give a bearer token in EHRPORT_FHIR_TOKEN")
	case u.RawQuery != "" || u.Fragment != "":
		return nil, bad("a FHIR base has no query or fragment")
	case u.Scheme == "http" && !bulk.Loopback(u.Hostname()):
		return nil, bad("plain http would send health records unencrypted: use https (http only to 127.0.0.1, ::1 or localhost)")
	}
	return u, nil
}

// redactRaw drops what could be a secret from a URL we could not parse.
func redactRaw(raw string) string {
	if i := strings.IndexAny(raw, "?#"); i >= 0 {
		raw = raw[:i]
	}
	if at := strings.LastIndex(raw, "@"); at >= 0 {
		if s := strings.Index(raw, "://"); s >= 0 && s < at {
			raw = raw[:s+3] + "…@" + raw[at+1:]
		}
	}
	return raw
}

// url joins the base and a relative path (with its own query).
func (c *Client) url(rel string) string {
	if rel == "" {
		return c.base.String() // the transaction endpoint is the base itself
	}
	return c.base.String() + "/" + rel
}

// diagnostics is what an error body says: the OperationOutcome's issues,
// or else the start of the body.
func diagnostics(body []byte) string {
	if oo, ok := bulk.ParseOutcome(body); ok && oo.Diagnostics != "" {
		return oo.Diagnostics
	}
	s := strings.Join(strings.Fields(string(body)), " ")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// do sends one request, retrying what can be retried, and returns the
// status and body (at most maxBody bytes) of a 2xx answer. what names the
// request in messages.
func (c *Client) do(ctx context.Context, method, rel string, body []byte, what string) ([]byte, error) {
	target := c.url(rel)
	var last error
	for attempt := 1; ; attempt++ {
		status, rb, hdr, err := c.once(ctx, method, target, body)
		var wait time.Duration
		switch {
		case err != nil && ctx.Err() != nil:
			return nil, ctx.Err()
		case err != nil && errors.As(err, new(*tls.CertificateVerificationError)):
			// Retrying cannot make an untrusted certificate trusted.
			return nil, fmt.Errorf("%w at %s: %s: %w", ErrUnavailable, c.shown, what, scrub(err))
		case err != nil:
			last = fmt.Errorf("%s: %v", what, scrub(err))
		case status >= 200 && status < 300:
			return rb, nil
		case status == http.StatusUnauthorized || status == http.StatusForbidden:
			return nil, fmt.Errorf("%w: %s: HTTP %d from %s: %s", ErrUnauthorized, what, status, c.shown, diagnostics(rb))
		case status == http.StatusRequestTimeout || status == http.StatusTooManyRequests || status >= 500:
			last = fmt.Errorf("%s: HTTP %d: %s", what, status, diagnostics(rb))
			wait = retryAfter(hdr.Get("Retry-After"), time.Now())
		default:
			return nil, fmt.Errorf("%w: %s: HTTP %d from %s: %s", ErrRefused, what, status, c.shown, diagnostics(rb))
		}
		if attempt >= c.o.Attempts {
			return nil, fmt.Errorf("%w at %s after %d attempts: %v", ErrUnavailable, c.shown, attempt, last)
		}
		if wait <= 0 {
			// Full jitter over an exponential window keeps several
			// clients from retrying in step.
			window := min(c.o.BaseDelay<<min(attempt-1, 20), c.o.MaxDelay)
			wait = window/2 + rand.N(window/2+1)
		}
		wait = min(wait, c.o.MaxDelay)
		c.retries.Add(1)
		c.o.Log.Warn("FHIR server request failed, retrying", "request", what, "attempt", attempt, "wait", wait.String(), "err", last.Error())
		if c.o.onRetryForTest != nil {
			c.o.onRetryForTest(status, wait)
		}
		if err := c.sleep(ctx, wait); err != nil {
			return nil, err
		}
	}
}

func (c *Client) sleep(ctx context.Context, d time.Duration) error {
	if c.o.sleepForTest != nil {
		return c.o.sleepForTest(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *Client) once(ctx context.Context, method, target string, body []byte) (int, []byte, http.Header, error) {
	ctx, cancel := context.WithTimeout(ctx, c.o.RequestTimeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Accept", "application/fhir+json")
	if body != nil {
		req.Header.Set("Content-Type", "application/fhir+json")
		req.Header.Set("Prefer", "return=minimal")
	}
	if c.o.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.o.Token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer resp.Body.Close()
	// A transaction response may echo every resource sent.
	limit := max(int64(maxBody), 4*int64(len(body)))
	rb, err := io.ReadAll(io.LimitReader(resp.Body, limit))
	if err != nil {
		return 0, nil, nil, err
	}
	io.Copy(io.Discard, resp.Body) // a huge answer we do not need: keep the connection
	return resp.StatusCode, rb, resp.Header, nil
}

// scrub removes the URL (which may carry a query) from a transport error.
func scrub(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// retryAfter reads a Retry-After header: seconds or an HTTP date; 0 when
// absent or unreadable.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if n, err := strconv.Atoi(v); err == nil && n >= 0 {
		return time.Duration(min(n, 86400)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// Capabilities reads [base]/metadata and checks the server speaks FHIR R4
// (fhirVersion 4.0.x). It returns the fhirVersion and software name.
func (c *Client) Capabilities(ctx context.Context) (version, software string, err error) {
	b, err := c.do(ctx, http.MethodGet, "metadata", nil, "GET metadata")
	if err != nil {
		if errors.Is(err, ErrRefused) {
			why := strings.TrimPrefix(err.Error(), ErrRefused.Error()+": ")
			return "", "", fmt.Errorf("%w: %s/metadata gave no CapabilityStatement (%s): is this the server's FHIR base URL?", ErrNotFHIR, c.shown, why)
		}
		return "", "", err
	}
	var cs struct {
		ResourceType string `json:"resourceType"`
		FHIRVersion  string `json:"fhirVersion"`
		Software     struct {
			Name    string `json:"name"`
			Version string `json:"version"`
		} `json:"software"`
	}
	if err := json.Unmarshal(b, &cs); err != nil || cs.ResourceType != "CapabilityStatement" {
		return "", "", fmt.Errorf("%w: %s/metadata is not a CapabilityStatement: is this the server's FHIR base URL?", ErrNotFHIR, c.shown)
	}
	if !strings.HasPrefix(cs.FHIRVersion, "4.0.") {
		return "", "", fmt.Errorf("%w: %s says fhirVersion %q; ehrport loads FHIR R4 (4.0.x) only", ErrNotFHIR, c.shown, cs.FHIRVersion)
	}
	return cs.FHIRVersion, strings.TrimSpace(cs.Software.Name + " " + cs.Software.Version), nil
}
