package storage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"io"
	"iter"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Store is one bucket (and optional prefix) of an S3-compatible server,
// spoken to through minio-go.
//
// Every Put sends the content's SHA-256 as an x-amz-checksum-sha256 header
// (per part for multipart uploads), never as a trailer: trailers break on
// some servers over plain HTTP, and a header costs nothing. Whether the
// server actually verifies it is what `stores check` finds out.
type S3Store struct {
	cfg      *StoreConfig
	client   *minio.Client
	core     minio.Core
	bucket   string
	prefix   string
	endpoint *url.URL
	tls      *tls.Config
	// partParallel is how many parts of one object upload at once. Two
	// cores and servers that saturate a core per stream favour few streams.
	partParallel int
}

var (
	_ Store       = (*S3Store)(nil)
	_ RangeReader = (*S3Store)(nil)
)

// s3MaxRetries bounds minio-go's own retries, so an unreachable store fails
// in seconds; callers that move data (migrate) add their own bounded retry.
const s3MaxRetries = 3

// maxCABundleBytes bounds what is read as a CA bundle.
const maxCABundleBytes = 4 << 20

// RootCAs returns the system's roots plus the certificates of the PEM
// bundle at path: what a server with a certificate from the hospital's own
// CA is verified against. A file without a certificate is an error.
func RootCAs(path string) (*x509.CertPool, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	pem, err := io.ReadAll(io.LimitReader(f, maxCABundleBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(pem) > maxCABundleBytes {
		return nil, fmt.Errorf("%s is over %d MiB: give the CA's certificate, not a whole store", path, maxCABundleBytes>>20)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s holds no PEM certificate: give the CA's certificate in PEM form (-----BEGIN CERTIFICATE-----)", path)
	}
	return pool, nil
}

// NewS3Store connects (lazily: no request is sent) to the bucket and prefix
// given, with the store's own endpoint, credentials and CA bundle.
func NewS3Store(sc *StoreConfig, bucket, prefix string) (*S3Store, error) {
	u, err := url.Parse(sc.Endpoint)
	if err != nil {
		return nil, fmt.Errorf("%w: store %q: endpoint: %v", ErrBadConfig, sc.Name, err)
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, ClientSessionCache: tls.NewLRUClientSessionCache(64)}
	if sc.CACert != "" {
		pool, err := RootCAs(sc.CACert)
		if err != nil {
			return nil, fmt.Errorf("%w: store %q: CA bundle: %v", ErrBadConfig, sc.Name, err)
		}
		tlsCfg.RootCAs = pool
	}
	idle := time.Duration(sc.IdleTimeout)
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	rt := newTransport(tlsCfg, idle)
	var creds *credentials.Credentials
	if sc.AccessKey != "" {
		creds = credentials.NewStaticV4(sc.AccessKey, sc.SecretKey.Reveal(), sc.SessionToken.Reveal())
	} else {
		// The standard AWS environment, then the shared credentials file.
		// Instance metadata is deliberately not consulted: it would send
		// requests to a link-local address nobody configured.
		creds = credentials.NewChainCredentials([]credentials.Provider{
			&credentials.EnvAWS{},
			&credentials.FileAWSCredentials{},
		})
	}
	lookup := minio.BucketLookupAuto
	switch sc.PathStyle {
	case "path":
		lookup = minio.BucketLookupPath
	case "virtual":
		lookup = minio.BucketLookupDNS
	}
	client, err := minio.New(u.Host, &minio.Options{
		Creds:        creds,
		Secure:       u.Scheme == "https",
		Transport:    rt,
		Region:       sc.Region,
		BucketLookup: lookup,
		MaxRetries:   s3MaxRetries,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: store %q: %v", ErrBadConfig, sc.Name, err)
	}
	client.SetAppInfo("ehrport", "1")
	return &S3Store{
		cfg: sc, client: client, core: minio.Core{Client: client},
		bucket: bucket, prefix: prefix, endpoint: u, tls: tlsCfg,
		partParallel: 4,
	}, nil
}

// Location implements Store.
func (s *S3Store) Location() string {
	if s.prefix == "" {
		return s.cfg.Name + ":" + s.bucket
	}
	return s.cfg.Name + ":" + s.bucket + "/" + s.prefix
}

// Bucket returns the bucket name.
func (s *S3Store) Bucket() string { return s.bucket }

// Endpoint returns the endpoint URL, which never carries credentials.
func (s *S3Store) Endpoint() string { return s.endpoint.String() }

func (s *S3Store) fail(op, key string, err error) error {
	return &Error{Op: op, Location: s.Location(), Key: key, Err: classifyS3(err)}
}

// classifyS3 marks minio-go and network errors with this package's
// sentinels, keeping the server's message for the user.
func classifyS3(err error) error {
	if err != nil && errors.Is(err, context.DeadlineExceeded) && !callerDeadline(err) {
		// net/http's response-header timeout claims to be a context
		// deadline; it is the server's silence, not the caller's limit:
		// unavailable (retried), with the chain cut so that no caller
		// mistakes it for its own deadline.
		return withKind(ErrUnavailable, errors.New(err.Error()))
	}
	if err == nil || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var resp minio.ErrorResponse
	if errors.As(err, &resp) {
		switch resp.Code {
		case minio.NoSuchBucket:
			return withKind(ErrNotExist, withKind(ErrNoBucket, err))
		case minio.NoSuchKey, "NotFound", "NoSuchVersion":
			return withKind(ErrNotExist, err)
		case minio.AccessDenied, "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken", "AuthorizationHeaderMalformed":
			return withKind(ErrPermission, err)
		case "BadDigest", "XAmzContentSHA256Mismatch", "InvalidDigest", "XAmzContentChecksumMismatch", "InvalidChecksum":
			return withKind(ErrIntegrity, err)
		case "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout":
			return withKind(ErrUnavailable, err)
		}
		if resp.StatusCode == http.StatusNotFound {
			return withKind(ErrNotExist, err)
		}
		if resp.StatusCode == http.StatusForbidden {
			return withKind(ErrPermission, err)
		}
		if resp.StatusCode >= 500 {
			return withKind(ErrUnavailable, err)
		}
		return err
	}
	var netErr net.Error
	var urlErr *url.Error
	var certErr *tls.CertificateVerificationError
	if errors.As(err, &netErr) || errors.As(err, &urlErr) || errors.As(err, &certErr) ||
		errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(err.Error(), "connection reset") {
		return withKind(ErrUnavailable, err)
	}
	return err
}

// callerDeadline reports whether err carries context.DeadlineExceeded
// itself, as a context that ran out does, rather than an error that only
// matches it.
func callerDeadline(err error) bool {
	for e := err; e != nil; e = errors.Unwrap(e) {
		if e == context.DeadlineExceeded {
			return true
		}
	}
	return false
}

func (s *S3Store) key(key string) (string, error) {
	if err := checkKey(key); err != nil {
		return "", err
	}
	return s.prefix + key, nil
}

// Put implements Store.
func (s *S3Store) Put(ctx context.Context, key string, r io.Reader, size int64, opts PutOptions) error {
	if size < 0 {
		return s.fail("put", key, fmt.Errorf("size must be known, got %d", size))
	}
	full, err := s.key(key)
	if err != nil {
		return s.fail("put", key, err)
	}
	src := &exactReader{r: r, left: size}
	if size <= s.cfg.PartSize || (opts.OneRequest && opts.SHA256 != nil && size <= MaxSinglePut) {
		err = s.putSingle(ctx, full, src, size, opts)
	} else {
		err = s.putMultipart(ctx, full, src, size, opts)
	}
	if err != nil {
		return s.fail("put", key, err)
	}
	return nil
}

// MaxSinglePut is the largest object S3 takes in one PUT (5 GiB).
const MaxSinglePut = 5 << 30

// putSingle sends one PUT. With a known SHA-256 it streams, whatever the
// size (up to MaxSinglePut), and the server checks the whole body against
// it; otherwise it buffers the (at most one part) body to compute the
// checksum first.
func (s *S3Store) putSingle(ctx context.Context, full string, src *exactReader, size int64, opts PutOptions) error {
	sum := opts.SHA256
	var body io.Reader = src
	if sum == nil {
		buf := make([]byte, size)
		if _, err := io.ReadFull(src, buf); err != nil {
			return err
		}
		if err := src.checkExhausted(); err != nil {
			return err
		}
		h := sha256.Sum256(buf)
		sum = h[:]
		body = bytes.NewReader(buf)
	} else {
		// Hide any Seek method: minio-go would otherwise HEAD the source.
		body = struct{ io.Reader }{src}
	}
	// Core.PutObject sends our checksum as a plain header; the high-level
	// PutObject would insist on trailers, which some servers reject.
	_, err := s.core.PutObject(ctx, s.bucket, full, body, size, "", "", minio.PutObjectOptions{
		ContentType:  contentType(opts),
		UserMetadata: map[string]string{"x-amz-checksum-sha256": base64.StdEncoding.EncodeToString(sum)},
	})
	if err != nil {
		return err
	}
	if opts.SHA256 != nil {
		return src.checkExhausted()
	}
	return nil
}

func contentType(opts PutOptions) string {
	if opts.ContentType != "" {
		return opts.ContentType
	}
	return "application/octet-stream"
}

// putMultipart uploads parts of PartSize bytes, at most partParallel at a
// time, each with its own SHA-256 header. Memory is bounded by
// (partParallel+1) part buffers. The upload is completed only after every
// part succeeded and, when the caller gave one, the whole-object SHA-256
// matched; otherwise it is aborted and nothing becomes visible.
//
// Each part is read in chunks small enough to stay in cache, and every
// chunk is hashed for the part's SHA-256 (and, unless opts.Verified, the
// whole object's) right after it arrives: one pass over the bytes, not one
// per hash.
func (s *S3Store) putMultipart(ctx context.Context, full string, src *exactReader, size int64, opts PutOptions) (err error) {
	partSize := s.cfg.PartSize
	uploadID, err := s.core.NewMultipartUpload(ctx, s.bucket, full, minio.PutObjectOptions{
		ContentType:  contentType(opts),
		UserMetadata: map[string]string{"x-amz-checksum-algorithm": "SHA256"},
	})
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			// Abort with a fresh, bounded context: the caller's may be the
			// reason we are here.
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			_ = s.core.AbortMultipartUpload(actx, s.bucket, full, uploadID)
		}
	}()

	nparts := int((size + partSize - 1) / partSize)
	parts := make([]minio.CompletePart, nparts)
	whole, partHash := sha256.New(), sha256.New()

	uctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sem := make(chan struct{}, s.partParallel)
	var wg sync.WaitGroup
	var once sync.Once
	var firstErr error
	setErr := func(e error) { once.Do(func() { firstErr = e; cancel() }) }

	for i := range nparts {
		n := min(partSize, size-int64(i)*partSize)
		select {
		case sem <- struct{}{}:
		case <-uctx.Done():
		}
		if uctx.Err() != nil {
			break
		}
		pbuf := getPartBuf(partSize)
		buf := pbuf[:n]
		partHash.Reset()
		hs := []hash.Hash{partHash}
		if !opts.Verified {
			hs = append(hs, whole)
		}
		if rerr := readHashed(src, buf, hs...); rerr != nil {
			putPartBuf(pbuf)
			<-sem
			setErr(rerr)
			break
		}
		sum := partHash.Sum(nil)
		wg.Add(1)
		go func(num int, buf, pbuf []byte, sum []byte) {
			defer wg.Done()
			defer func() { putPartBuf(pbuf); <-sem }()
			b64 := base64.StdEncoding.EncodeToString(sum)
			hdr := http.Header{}
			hdr.Set("x-amz-checksum-sha256", b64)
			part, perr := s.core.PutObjectPart(uctx, s.bucket, full, uploadID, num, bytes.NewReader(buf), int64(len(buf)),
				minio.PutObjectPartOptions{CustomHeader: hdr})
			if perr != nil {
				setErr(fmt.Errorf("part %d: %w", num, perr))
				return
			}
			parts[num-1] = minio.CompletePart{PartNumber: num, ETag: part.ETag, ChecksumSHA256: b64}
		}(i+1, buf, pbuf, sum)
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if err := src.checkExhausted(); err != nil {
		return err
	}
	if opts.SHA256 != nil && !opts.Verified && !bytes.Equal(whole.Sum(nil), opts.SHA256) {
		return withKind(ErrIntegrity, errors.New("content read from the source does not match the expected SHA-256"))
	}
	_, err = s.core.CompleteMultipartUpload(ctx, s.bucket, full, uploadID, parts, minio.PutObjectOptions{})
	return err
}

// hashChunk is how much of a part is read and hashed at a time: small
// enough to still be in the CPU's cache when the hashes read it.
const hashChunk = 256 << 10

// readHashed fills buf from r (io.ReadFull's rules), writing every chunk to
// each of hs as soon as it has arrived.
func readHashed(r io.Reader, buf []byte, hs ...hash.Hash) error {
	for len(buf) > 0 {
		c := buf[:min(len(buf), hashChunk)]
		if _, err := io.ReadFull(r, c); err != nil {
			return err
		}
		for _, h := range hs {
			h.Write(c)
		}
		buf = buf[len(c):]
	}
	return nil
}

// Get implements Store. The request is sent now, so a missing object is
// reported here rather than on the first Read.
func (s *S3Store) Get(ctx context.Context, key string) (io.ReadCloser, error) {
	full, err := s.key(key)
	if err != nil {
		return nil, s.fail("get", key, err)
	}
	rc, _, _, err := s.core.GetObject(ctx, s.bucket, full, minio.GetObjectOptions{})
	if err != nil {
		return nil, s.fail("get", key, err)
	}
	return &s3Body{rc: rc, s: s, key: key}, nil
}

// GetRange implements RangeReader.
func (s *S3Store) GetRange(ctx context.Context, key string, offset, length int64) (io.ReadCloser, error) {
	full, err := s.key(key)
	if err != nil {
		return nil, s.fail("get", key, err)
	}
	if length == 0 {
		return io.NopCloser(strings.NewReader("")), nil
	}
	opts := minio.GetObjectOptions{}
	if err := opts.SetRange(offset, offset+length-1); err != nil {
		return nil, s.fail("get", key, err)
	}
	rc, info, _, err := s.core.GetObject(ctx, s.bucket, full, opts)
	if err != nil {
		return nil, s.fail("get", key, err)
	}
	if info.Size != length {
		rc.Close()
		return nil, s.fail("get", key, fmt.Errorf("asked for %d bytes at %d, server sent %d", length, offset, info.Size))
	}
	return &s3Body{rc: rc, s: s, key: key}, nil
}

// s3Body classifies errors that surface while reading a body.
type s3Body struct {
	rc  io.ReadCloser
	s   *S3Store
	key string
}

func (b *s3Body) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err != nil && err != io.EOF {
		err = b.s.fail("get", b.key, err)
	}
	return n, err
}

func (b *s3Body) Close() error { return b.rc.Close() }

// Stat implements Store.
func (s *S3Store) Stat(ctx context.Context, key string) (ObjectInfo, error) {
	full, err := s.key(key)
	if err != nil {
		return ObjectInfo{}, s.fail("stat", key, err)
	}
	oi, err := s.client.StatObject(ctx, s.bucket, full, minio.StatObjectOptions{})
	if err != nil {
		return ObjectInfo{}, s.fail("stat", key, err)
	}
	return ObjectInfo{Key: key, Size: oi.Size, ModTime: oi.LastModified, ETag: oi.ETag}, nil
}

// List implements Store.
func (s *S3Store) List(ctx context.Context, prefix string) iter.Seq2[ObjectInfo, error] {
	return func(yield func(ObjectInfo, error) bool) {
		for oi := range s.client.ListObjectsIter(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.prefix + prefix, Recursive: true}) {
			if oi.Err != nil {
				yield(ObjectInfo{}, s.fail("list", prefix, oi.Err))
				return
			}
			if !yield(ObjectInfo{Key: strings.TrimPrefix(oi.Key, s.prefix), Size: oi.Size, ModTime: oi.LastModified, ETag: oi.ETag}, nil) {
				return
			}
		}
		if err := ctx.Err(); err != nil {
			yield(ObjectInfo{}, s.fail("list", prefix, err))
		}
	}
}

// Delete implements Store.
func (s *S3Store) Delete(ctx context.Context, key string) error {
	full, err := s.key(key)
	if err != nil {
		return s.fail("delete", key, err)
	}
	err = s.client.RemoveObject(ctx, s.bucket, full, minio.RemoveObjectOptions{})
	if err != nil && !errors.Is(classifyS3(err), ErrNotExist) {
		return s.fail("delete", key, err)
	}
	return nil
}

// BucketExists reports whether the bucket is there.
func (s *S3Store) BucketExists(ctx context.Context) (bool, error) {
	ok, err := s.client.BucketExists(ctx, s.bucket)
	if err != nil {
		return false, s.fail("stat bucket", "", err)
	}
	return ok, nil
}

// CreateBucket creates the bucket in the store's region.
func (s *S3Store) CreateBucket(ctx context.Context) error {
	if err := s.client.MakeBucket(ctx, s.bucket, minio.MakeBucketOptions{Region: s.cfg.Region}); err != nil {
		return s.fail("create bucket", "", err)
	}
	return nil
}

// idleDialer dials with d and wraps each connection in an idleConn: HTTP
// bodies have no timeout of their own, so without it a server or network
// that stalls part-way through a transfer would hold ehrport for ever.
func idleDialer(d *net.Dialer, idle time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := d.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &idleConn{Conn: c, idle: idle}, nil
	}
}

// idleConn fails a read or a write that makes no progress for idle. A
// write clears the read deadline: while a request goes out, the server owes
// nothing, and the client may be pacing the body (waiting on a slow
// source), so only a blocked write counts. The wait for the response
// headers is a read like any other under syncTransport (and bounded by
// ResponseHeaderTimeout, the same idle, under its net/http fallback), and
// every read of a body sets the deadline again. The timeout is
// a net.Error, which the store reports as ErrUnavailable: retried like a
// reset.
type idleConn struct {
	net.Conn
	idle time.Duration
	// While a body streams, reads go through a pooled buffer (see
	// connReadBuf): buf[r:w] are bytes read and not yet returned.
	buf       *[]byte
	r, w      int
	err       error // from the read that filled buf, returned after its bytes
	streaming bool  // the last read of the connection filled its buffer: more is queued
}

// connReadBuf is how much one read of a streaming connection may take.
// crypto/tls reads its connection one record (16 KiB) at a time, so a
// large body cost a read system call (and on loopback, an ACK) per record;
// reading what the socket holds, up to this, into a buffer first takes
// a fraction of the calls, and halved the client's system time of a 1 GiB
// verify --against here. A read goes through the buffer only after a read
// that filled its buffer (more is surely queued), and the buffer is pooled
// and held only while it has unread bytes: a response's last read is a
// short one, so an idle connection, whose transport waits in a read,
// holds none.
const connReadBuf = 1 << 20

var connBufs = sync.Pool{New: func() any { b := make([]byte, connReadBuf); return &b }}

func (c *idleConn) Read(p []byte) (int, error) {
	if c.buf == nil {
		if c.err != nil {
			err := c.err
			c.err = nil
			return 0, err
		}
		if !c.streaming || len(p) == 0 || len(p) >= connReadBuf {
			n, err := c.read(p)
			c.streaming = n > 0 && n == len(p)
			return n, err
		}
		b := connBufs.Get().(*[]byte)
		n, err := c.read(*b)
		c.streaming = n == len(*b)
		if n == 0 {
			connBufs.Put(b)
			return 0, err
		}
		c.buf, c.r, c.w, c.err = b, 0, n, err
	}
	n := copy(p, (*c.buf)[c.r:c.w])
	c.r += n
	if c.r == c.w {
		connBufs.Put(c.buf)
		c.buf = nil
	}
	return n, nil
}

// read reads the connection itself, failing after idle without progress.
func (c *idleConn) read(p []byte) (int, error) {
	c.Conn.SetReadDeadline(time.Now().Add(c.idle))
	return c.Conn.Read(p)
}

func (c *idleConn) Write(p []byte) (int, error) {
	c.Conn.SetReadDeadline(time.Time{})
	c.Conn.SetWriteDeadline(time.Now().Add(c.idle))
	return c.Conn.Write(p)
}
