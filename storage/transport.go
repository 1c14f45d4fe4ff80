package storage

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// syncTransport is an HTTP/1.1 client transport that writes each request
// and reads its response on the caller's goroutine, over a pool of kept-
// alive connections. net/http's Transport gives every connection a reader
// and a writer goroutine and hands each request and response between
// them and the caller: four or five goroutine wake-ups per request, which
// on a small-object copy cost more client CPU than the TLS and the hashing
// together (docs/copy.md). Here a request costs one wake-up, when its
// response arrives.
//
// The bytes on the wire are net/http's own: requests are written with
// http.Request.Write and responses parsed with http.ReadResponse. Anything
// this transport does not handle itself goes to fallback unchanged: a
// proxy, an Expect: 100-continue request, a scheme other than http and
// https, and protocol upgrades.
//
// A connection returns to the pool only after its response body was read
// to the end and neither side asked to close it; a body closed early, an
// error, or a cancelled context closes the connection.
type syncTransport struct {
	dial     func(ctx context.Context, network, addr string) (net.Conn, error)
	tls      *tls.Config
	proxy    func(*http.Request) (*url.URL, error)
	fallback http.RoundTripper
	// handshakeTimeout bounds a TLS handshake; idleTimeout is how long a
	// pooled connection may stay unused; maxIdle is the pool's size per
	// host.
	handshakeTimeout time.Duration
	idleTimeout      time.Duration
	maxIdle          int

	mu   sync.Mutex
	idle map[string][]*syncConn // by scheme://host:port, most recent last
}

var _ http.RoundTripper = (*syncTransport)(nil)

// newTransport is the transport of an S3 store: TLS with tlsCfg, and
// reads and writes that fail after idle without progress (idleConn).
func newTransport(tlsCfg *tls.Config, idle time.Duration) *syncTransport {
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	fallback := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           idleDialer(dialer, idle),
		TLSClientConfig:       tlsCfg,
		TLSHandshakeTimeout:   10 * time.Second,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   128,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: idle, // the silence after a request went out in full (see idleConn)
		ExpectContinueTimeout: time.Second,
		// Objects are ciphertext: compression would cost CPU for nothing,
		// and transparent decompression would hide the stored bytes.
		// (syncTransport never asks for it.)
		DisableCompression: true,
	}
	return &syncTransport{
		dial: fallback.DialContext, tls: tlsCfg, proxy: fallback.Proxy, fallback: fallback,
		handshakeTimeout: fallback.TLSHandshakeTimeout, idleTimeout: fallback.IdleConnTimeout,
		maxIdle: fallback.MaxIdleConnsPerHost,
	}
}

type syncConn struct {
	net.Conn
	tcp      net.Conn // the connection under TLS and idleConn, for alive
	key      string
	br       *bufio.Reader
	bw       *bufio.Writer
	lastUsed time.Time
}

// Buffer sizes: a request's headers and a small object's body leave in one
// write; response headers are read in one.
const (
	syncReadBuf  = 4 << 10
	syncWriteBuf = 64 << 10
)

// RoundTrip implements http.RoundTripper.
func (t *syncTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !t.handles(req) {
		return t.fallback.RoundTrip(req)
	}
	ctx := req.Context()
	key := req.URL.Scheme + "://" + canonicalAddr(req.URL)
	for {
		c, reused, err := t.getConn(ctx, key, req.URL)
		if err != nil {
			closeBody(req)
			return nil, err
		}
		resp, err, retry := t.roundTripOn(ctx, c, req, reused)
		if err == nil {
			return resp, nil
		}
		if !retry {
			return nil, err
		}
		// The server closed a pooled connection before reading the
		// request (it timed out its idle side): send it again, on the next
		// pooled connection or a fresh one, as net/http does.
		if req.GetBody != nil && req.Body != nil && req.Body != http.NoBody {
			body, gerr := req.GetBody()
			if gerr != nil {
				return nil, err
			}
			req = req.Clone(ctx)
			req.Body = body
		}
	}
}

// handles says whether RoundTrip sends req itself.
func (t *syncTransport) handles(req *http.Request) bool {
	if req.URL == nil || (req.URL.Scheme != "http" && req.URL.Scheme != "https") || req.Method == http.MethodConnect {
		return false
	}
	if req.Header.Get("Expect") != "" || req.Header.Get("Upgrade") != "" {
		return false
	}
	if t.proxy != nil {
		if p, err := t.proxy(req); err != nil || p != nil {
			return false
		}
	}
	return true
}

// roundTripOn sends req on c and reads the response's headers. retry says
// that c was a pooled connection the server had closed (nothing of a
// response arrived) and req is replayable, so sending it again is safe.
func (t *syncTransport) roundTripOn(ctx context.Context, c *syncConn, req *http.Request, reused bool) (*http.Response, error, bool) {
	// A cancelled context closes the connection, which ends any read or
	// write in progress; the caller then sees ctx's error.
	stop := context.AfterFunc(ctx, func() { c.Close() })
	fail := func(err error) error {
		stop()
		c.Close()
		if cerr := ctx.Err(); cerr != nil {
			return cerr
		}
		return err
	}

	body := &trackedBody{r: req.Body}
	wreq := req
	if req.Body != nil && req.Body != http.NoBody {
		wreq = new(http.Request)
		*wreq = *req
		wreq.Body = body
	}
	werr := wreq.Write(c.bw)
	if werr == nil {
		werr = c.bw.Flush()
	}
	if werr != nil {
		if body.err != nil {
			// The body failed (the source of a copy): its error, not the
			// connection's, is the cause.
			return nil, fail(body.err), false
		}
		// The server may have answered and closed before reading the whole
		// request (a refusal): that answer says more than the broken pipe.
		// A write that timed out met a silent server: nothing to read.
		var ne net.Error
		if errors.As(werr, &ne) && ne.Timeout() {
			return nil, fail(werr), false
		}
		if resp, rerr := t.readResponse(ctx, c, req); rerr == nil {
			resp.Close = true
			t.bindBody(ctx, c, req, resp, stop)
			return resp, nil, false
		}
		return nil, fail(werr), reused && replayable(req) && isConnClosed(werr) && ctx.Err() == nil
	}
	resp, rerr := t.readResponse(ctx, c, req)
	if rerr != nil {
		// Nothing arrived on a pooled connection: the server had closed it
		// before it read the request, so it did nothing with it.
		retry := reused && replayable(req) && isConnClosed(rerr) && ctx.Err() == nil
		return nil, fail(rerr), retry
	}
	t.bindBody(ctx, c, req, resp, stop)
	return resp, nil, false
}

// readResponse reads the response to req, skipping informational (1xx)
// responses other than 101. A response that arrives after ctx ended is
// dropped for ctx's error, as net/http does: closing the connection sends
// TLS's close_notify first, and a server may answer that before the socket
// closes, but the caller asked to stop.
func (t *syncTransport) readResponse(ctx context.Context, c *syncConn, req *http.Request) (*http.Response, error) {
	for {
		resp, err := http.ReadResponse(c.br, req)
		if err != nil {
			return nil, err
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if resp.StatusCode >= 100 && resp.StatusCode < 200 && resp.StatusCode != http.StatusSwitchingProtocols {
			continue
		}
		return resp, nil
	}
}

// bindBody makes resp.Body give c back to the pool when it is read to its
// end, and close c when it is closed before that or fails.
func (t *syncTransport) bindBody(ctx context.Context, c *syncConn, req *http.Request, resp *http.Response, stop func() bool) {
	reusable := !resp.Close && !req.Close && resp.StatusCode != http.StatusSwitchingProtocols
	if resp.Body == http.NoBody || resp.Body == nil {
		resp.Body = http.NoBody
		t.release(c, reusable && stop())
		return
	}
	resp.Body = &syncBody{rc: resp.Body, ctx: ctx, done: func(ok bool) {
		t.release(c, ok && reusable && stop())
	}}
}

// release puts c back in the pool, or closes it.
func (t *syncTransport) release(c *syncConn, reuse bool) {
	if !reuse {
		c.Close()
		return
	}
	c.lastUsed = time.Now()
	t.mu.Lock()
	if t.idle == nil {
		t.idle = make(map[string][]*syncConn)
	}
	if len(t.idle[c.key]) < t.maxIdle {
		t.idle[c.key] = append(t.idle[c.key], c)
		c = nil
	}
	t.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// getConn returns a pooled connection to key (reused: true) or dials one.
func (t *syncTransport) getConn(ctx context.Context, key string, u *url.URL) (*syncConn, bool, error) {
	var stale []*syncConn
	var c *syncConn
	t.mu.Lock()
	for conns := t.idle[key]; len(conns) > 0 && c == nil; {
		last := conns[len(conns)-1]
		conns = conns[:len(conns)-1]
		t.idle[key] = conns
		if t.idleTimeout > 0 && time.Since(last.lastUsed) > t.idleTimeout {
			stale = append(stale, last)
			continue
		}
		c = last
	}
	t.mu.Unlock()
	for _, s := range stale {
		s.Close()
	}
	if c != nil && time.Since(c.lastUsed) > probeAfter && !c.alive() {
		// Closed by the server while pooled: try the next one.
		c.Close()
		return t.getConn(ctx, key, u)
	}
	if c != nil {
		return c, true, nil
	}
	c, err := t.dialConn(ctx, key, u)
	return c, false, err
}

func (t *syncTransport) dialConn(ctx context.Context, key string, u *url.URL) (*syncConn, error) {
	addr := canonicalAddr(u)
	raw, err := t.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	conn := raw
	if u.Scheme == "https" {
		cfg := t.tls.Clone()
		if cfg.ServerName == "" {
			cfg.ServerName = u.Hostname()
		}
		tc := tls.Client(raw, cfg)
		hctx := ctx
		if t.handshakeTimeout > 0 {
			var cancel context.CancelFunc
			hctx, cancel = context.WithTimeout(ctx, t.handshakeTimeout)
			defer cancel()
		}
		if err := tc.HandshakeContext(hctx); err != nil {
			raw.Close()
			return nil, err
		}
		conn = tc
	}
	tcp := raw
	if ic, ok := raw.(*idleConn); ok {
		tcp = ic.Conn
	}
	return &syncConn{Conn: conn, tcp: tcp, key: key, br: bufio.NewReaderSize(conn, syncReadBuf), bw: bufio.NewWriterSize(conn, syncWriteBuf)}, nil
}

// probeAfter is how long a connection may sit in the pool before it is
// checked with alive before reuse. A server closes idle connections after
// seconds at the least; net/http notices at once because its reader
// goroutine waits on every pooled connection, which is the cost this
// transport avoids.
const probeAfter = time.Second

// probeWait is how long alive waits for a sign that the server closed the
// connection; one that is alive and quiet costs this much.
const probeWait = time.Millisecond

// alive says whether c, idle in the pool, can carry a request: the server
// has neither closed it nor sent anything (a pooled HTTP/1.1 connection
// that has bytes to read is out of step). The read happens on the TCP
// connection under TLS, and only ever returns data when c is unusable.
func (c *syncConn) alive() bool {
	if c.br.Buffered() > 0 {
		return false
	}
	if err := c.tcp.SetReadDeadline(time.Now().Add(probeWait)); err != nil {
		return false
	}
	var b [1]byte
	n, err := c.tcp.Read(b[:])
	c.tcp.SetReadDeadline(time.Time{})
	var ne net.Error
	return n == 0 && errors.As(err, &ne) && ne.Timeout()
}

// CloseIdleConnections closes the pooled connections (and the fallback's).
func (t *syncTransport) CloseIdleConnections() {
	t.mu.Lock()
	idle := t.idle
	t.idle = nil
	t.mu.Unlock()
	for _, conns := range idle {
		for _, c := range conns {
			c.Close()
		}
	}
	if ci, ok := t.fallback.(interface{ CloseIdleConnections() }); ok {
		ci.CloseIdleConnections()
	}
}

// syncBody is a response body that reports, once, whether it was read to
// its end (the connection can carry another request) or not. After its
// end it reads as io.EOF again, or as the error it failed with, as
// net/http's bodies do; after Close, as an error.
type syncBody struct {
	rc     io.Reader
	ctx    context.Context
	done   func(ok bool)
	err    error // sticky: io.EOF or the failure, once finished
	closed bool
}

func (b *syncBody) Read(p []byte) (int, error) {
	if b.closed {
		return 0, errors.New("http: read on closed response body")
	}
	if b.err != nil {
		return 0, b.err
	}
	n, err := b.rc.Read(p)
	if err != nil {
		if err != io.EOF && b.ctx.Err() != nil {
			err = b.ctx.Err()
		}
		b.err = err
		b.done(err == io.EOF)
	}
	return n, err
}

func (b *syncBody) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	if b.err != nil {
		return nil
	}
	b.err = errors.New("http: read on closed response body")
	b.done(false)
	return nil
}

// replayable says whether req may be sent again after a pooled connection
// turned out closed: an idempotent method (RFC 9110; an S3 PUT of the same
// bytes to the same key is one) with a body that can be had again.
func replayable(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodPut, http.MethodDelete, http.MethodOptions:
	default:
		return false
	}
	return req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
}

// trackedBody records the error a request body failed with.
type trackedBody struct {
	r   io.ReadCloser
	err error
}

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		b.err = err
	}
	return n, err
}

func (b *trackedBody) Close() error { return b.r.Close() }

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// isConnClosed says whether err is a connection closed by its peer.
func isConnClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || isReset(err)
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}

// canonicalAddr is u's host:port, with the scheme's default port. It is
// computed for every request, so it allocates nothing beyond the result.
func canonicalAddr(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	return net.JoinHostPort(u.Hostname(), port)
}
