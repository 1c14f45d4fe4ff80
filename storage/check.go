package storage

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
)

// Capabilities is what `stores check` measured about a store. Later commands
// read VerifiesChecksums to decide whether a server-verified checksum can
// stand in for a read-back.
type Capabilities struct {
	Location string `json:"location"`
	Kind     string `json:"kind"` // "s3" or "local"
	Endpoint string `json:"endpoint,omitempty"`
	Region   string `json:"region,omitempty"`

	TLSVersion   string    `json:"tls_version,omitempty"`
	CertSHA256   string    `json:"cert_sha256,omitempty"`
	CertSubject  string    `json:"cert_subject,omitempty"`
	CertNotAfter time.Time `json:"cert_not_after,omitzero"`

	// VerifiesChecksums: the server rejected a PUT whose
	// x-amz-checksum-sha256 did not match its body.
	VerifiesChecksums bool   `json:"verifies_checksums"`
	ListPaging        bool   `json:"list_paging"`
	Versioning        string `json:"versioning"`
	ObjectLock        string `json:"object_lock"`

	Checks []CheckResult `json:"checks"`
	// OK is false when a check that every usable store must pass failed.
	OK bool `json:"ok"`
}

// CheckResult is one row of the capability table.
type CheckResult struct {
	Name   string `json:"name"`
	Result string `json:"result"` // "yes", "no", "n/a", or a short value
	Detail string `json:"detail,omitempty"`
	// Required checks make the store unusable when they fail.
	Required bool  `json:"required"`
	Passed   bool  `json:"passed"`
	Millis   int64 `json:"ms"`
}

// CheckOptions tune Check.
type CheckOptions struct {
	// CreateBucket creates a missing bucket instead of failing.
	CreateBucket bool
}

// canaryPrefix is where Check writes its probe objects; it removes them
// before returning.
const canaryPrefix = ".ehrport-check-"

// Check probes what st really does: reachability and TLS, credentials, the
// bucket, put/get/stat/list (with paging)/delete, whether a wrong SHA-256 is
// rejected, multipart with per-part checksums, versioning and object lock.
// It returns an error (a *Error, exit code 4) only when the store cannot be
// probed at all: unreachable, refused credentials or a missing bucket.
// Checks that ran and failed are recorded with OK=false.
func Check(ctx context.Context, st Store, opts CheckOptions) (*Capabilities, error) {
	c := &checker{caps: &Capabilities{Location: st.Location(), OK: true}}
	switch s := st.(type) {
	case *S3Store:
		c.caps.Kind = "s3"
		c.caps.Endpoint = s.Endpoint()
		if err := c.s3Preflight(ctx, s, opts); err != nil {
			return nil, err
		}
	case *LocalStore:
		c.caps.Kind = "local"
		c.add(CheckResult{Name: "reachable", Result: "yes", Detail: "local folder " + s.Root(), Required: true, Passed: true})
	default:
		c.caps.Kind = fmt.Sprintf("%T", st)
	}

	run := make([]byte, 6)
	rand.Read(run)
	dir := canaryPrefix + hex.EncodeToString(run) + "/"
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		for oi, err := range st.List(cctx, dir) {
			if err != nil {
				break
			}
			st.Delete(cctx, oi.Key)
		}
	}()

	c.roundTrip(ctx, st, dir)
	c.listing(ctx, st, dir)
	if s, ok := st.(*S3Store); ok {
		c.s3Checksum(ctx, s, dir)
		c.s3Multipart(ctx, s, dir)
		c.s3Versioning(ctx, s)
		c.s3ObjectLock(ctx, s)
	} else {
		c.add(CheckResult{Name: "rejects wrong checksum", Result: "n/a", Detail: "local folder: writes are hashed and synced by ehrport itself", Passed: true})
		c.caps.Versioning, c.caps.ObjectLock = "n/a", "n/a"
		c.add(CheckResult{Name: "versioning", Result: "n/a", Passed: true})
		c.add(CheckResult{Name: "object lock", Result: "n/a", Passed: true})
	}
	c.cleanup(ctx, st, dir)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return c.caps, nil
}

type checker struct {
	caps  *Capabilities
	start time.Time
}

func (c *checker) begin() { c.start = time.Now() }

func (c *checker) add(r CheckResult) {
	if !c.start.IsZero() {
		r.Millis = time.Since(c.start).Milliseconds()
		c.start = time.Time{}
	}
	if r.Required && !r.Passed {
		c.caps.OK = false
	}
	c.caps.Checks = append(c.caps.Checks, r)
}

func (c *checker) s3Preflight(ctx context.Context, s *S3Store, opts CheckOptions) error {
	c.begin()
	detail, err := c.dial(ctx, s)
	if err != nil {
		return &Error{Op: "connect", Location: s.Location(), Err: withKind(ErrUnavailable, err)}
	}
	c.add(CheckResult{Name: "reachable", Result: "yes", Detail: detail, Required: true, Passed: true})

	c.begin()
	exists, err := s.BucketExists(ctx)
	if err != nil {
		return err
	}
	c.add(CheckResult{Name: "credentials accepted", Result: "yes", Required: true, Passed: true})
	c.begin()
	switch {
	case exists:
		c.add(CheckResult{Name: "bucket", Result: "exists", Detail: s.bucket, Required: true, Passed: true})
	case opts.CreateBucket:
		if err := s.CreateBucket(ctx); err != nil {
			return err
		}
		c.add(CheckResult{Name: "bucket", Result: "created", Detail: s.bucket, Required: true, Passed: true})
	default:
		return &Error{Op: "stat bucket", Location: s.Location(), Err: withKind(ErrNotExist,
			fmt.Errorf("bucket %q does not exist; fix the reference, or create it with: ehrport stores check --create %s", s.bucket, s.Location()))}
	}
	if loc, err := s.client.GetBucketLocation(ctx, s.bucket); err == nil {
		c.caps.Region = loc
	}
	return nil
}

// dial records what the endpoint presents for the capability table.
func (c *checker) dial(ctx context.Context, s *S3Store) (string, error) {
	t, err := s.TLSInfo(ctx)
	if err != nil {
		return "", err
	}
	if !t.TLS {
		return s.Endpoint() + ", plain HTTP (allowed by allow_http): no encryption in transit", nil
	}
	c.caps.TLSVersion, c.caps.CertSHA256, c.caps.CertSubject, c.caps.CertNotAfter = t.Version, t.CertSHA256, t.CertSubject, t.CertNotAfter
	return fmt.Sprintf("%s, %s, certificate sha256 %s…", s.Endpoint(), t.Version, t.CertSHA256[:16]), nil
}

// TLSInfo is what an endpoint presents on connection.
type TLSInfo struct {
	TLS          bool      `json:"tls"`
	Version      string    `json:"tls_version,omitempty"`
	CertSHA256   string    `json:"cert_sha256,omitempty"`
	CertSubject  string    `json:"cert_subject,omitempty"`
	CertNotAfter time.Time `json:"cert_not_after,omitzero"`
}

// TLSInfo opens one connection to record the TLS version and the leaf
// certificate's SHA-256, verified against the store's CA bundle exactly as
// requests will be. An unreachable endpoint is an error.
func (s *S3Store) TLSInfo(ctx context.Context) (TLSInfo, error) {
	host := canonicalAddr(s.endpoint)
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if s.endpoint.Scheme != "https" {
		conn, err := (&net.Dialer{}).DialContext(dctx, "tcp", host)
		if err != nil {
			return TLSInfo{}, err
		}
		conn.Close()
		return TLSInfo{}, nil
	}
	cfg := s.tls.Clone()
	cfg.ServerName = s.endpoint.Hostname()
	conn, err := (&tls.Dialer{Config: cfg}).DialContext(dctx, "tcp", host)
	if err != nil {
		return TLSInfo{}, err
	}
	defer conn.Close()
	state := conn.(*tls.Conn).ConnectionState()
	leaf := state.PeerCertificates[0]
	sum := sha256.Sum256(leaf.Raw)
	return TLSInfo{TLS: true, Version: tls.VersionName(state.Version), CertSHA256: hex.EncodeToString(sum[:]),
		CertSubject: leaf.Subject.String(), CertNotAfter: leaf.NotAfter}, nil
}

func (c *checker) roundTrip(ctx context.Context, st Store, dir string) {
	body := make([]byte, 4096)
	rand.Read(body)
	key := dir + "round-trip"

	c.begin()
	err := st.Put(ctx, key, bytes.NewReader(body), int64(len(body)), PutOptions{})
	c.add(result("put", err, true, ""))
	if err != nil {
		return
	}
	c.begin()
	rc, err := st.Get(ctx, key)
	var got []byte
	if err == nil {
		got, err = io.ReadAll(rc)
		rc.Close()
	}
	if err == nil && !bytes.Equal(got, body) {
		err = withKind(ErrIntegrity, fmt.Errorf("read back %d bytes that differ from the %d written", len(got), len(body)))
	}
	c.add(result("get (bytes match)", err, true, ""))

	c.begin()
	oi, err := st.Stat(ctx, key)
	if err == nil && oi.Size != int64(len(body)) {
		err = fmt.Errorf("size %d, want %d", oi.Size, len(body))
	}
	c.add(result("stat", err, true, ""))
}

// listing writes a few keys and lists them with one key per page, so paging
// (continuation tokens) is exercised, not just assumed.
func (c *checker) listing(ctx context.Context, st Store, dir string) {
	const n = 3
	c.begin()
	for i := range n {
		if err := st.Put(ctx, fmt.Sprintf("%slist/%d", dir, i), strings.NewReader("x"), 1, PutOptions{}); err != nil {
			c.add(result("list", err, true, ""))
			return
		}
	}
	var pages int
	var err error
	seen := 0
	if s, ok := st.(*S3Store); ok {
		pages, seen, err = s.listPages(ctx, dir+"list/", 1)
	} else {
		for _, lerr := range st.List(ctx, dir+"list/") {
			if lerr != nil {
				err = lerr
				break
			}
			seen++
		}
		pages = 1
	}
	if err == nil && seen != n {
		err = fmt.Errorf("listed %d of %d keys", seen, n)
	}
	detail := ""
	if err == nil && c.caps.Kind == "s3" {
		c.caps.ListPaging = pages == n
		detail = fmt.Sprintf("%d keys in %d pages of 1", seen, pages)
	} else if err == nil {
		c.caps.ListPaging = true
		detail = "folder listing, sorted by key"
	}
	c.add(result("list (paging)", err, true, detail))
}

// listPages lists with maxKeys per page through the raw API, counting pages.
func (s *S3Store) listPages(ctx context.Context, prefix string, maxKeys int) (pages, keys int, err error) {
	token := ""
	for pages < 10000 {
		res, err := s.core.ListObjectsV2(s.bucket, s.prefix+prefix, "", token, "", maxKeys)
		if err != nil {
			return pages, keys, s.fail("list", prefix, err)
		}
		pages++
		keys += len(res.Contents)
		if !res.IsTruncated {
			break
		}
		if res.NextContinuationToken == "" {
			return pages, keys, fmt.Errorf("truncated page without a continuation token")
		}
		token = res.NextContinuationToken
		if err := ctx.Err(); err != nil {
			return pages, keys, err
		}
	}
	// A last empty page after a full one is legal; count only pages with keys.
	if keys > 0 && pages > keys {
		pages = keys
	}
	return pages, keys, nil
}

// s3Checksum sends a PUT whose x-amz-checksum-sha256 belongs to other bytes.
// A server that stores it anyway cannot be trusted to verify checksums.
func (c *checker) s3Checksum(ctx context.Context, s *S3Store, dir string) {
	c.begin()
	verifies, detail, err := s.rejectsWrongChecksums(ctx, dir+"wrong-checksum")
	switch {
	case err != nil:
		c.add(result("rejects wrong checksum", err, false, ""))
	case verifies:
		c.caps.VerifiesChecksums = true
		c.add(CheckResult{Name: "rejects wrong checksum", Result: "yes", Detail: detail, Passed: true})
	default:
		c.add(CheckResult{Name: "rejects wrong checksum", Result: "no", Detail: detail + ": integrity will be proven by read-back", Passed: true})
	}
}

// s3Multipart uploads 5 MiB + 1 byte in two parts with per-part SHA-256
// headers and reads it back.
func (c *checker) s3Multipart(ctx context.Context, s *S3Store, dir string) {
	c.begin()
	small := *s
	cfg := *s.cfg
	cfg.PartSize = MinPartSize
	small.cfg = &cfg
	body := make([]byte, MinPartSize+1)
	rand.Read(body)
	want := sha256.Sum256(body)
	key := dir + "multipart"
	err := small.Put(ctx, key, bytes.NewReader(body), int64(len(body)), PutOptions{SHA256: want[:]})
	if err == nil {
		var rc io.ReadCloser
		rc, err = s.Get(ctx, key)
		if err == nil {
			h := sha256.New()
			_, err = io.Copy(h, rc)
			rc.Close()
			if err == nil && !bytes.Equal(h.Sum(nil), want[:]) {
				err = withKind(ErrIntegrity, errors.New("multipart object read back with different bytes"))
			}
		}
	}
	c.add(result("multipart (per-part SHA-256)", err, true, "5 MiB + 1 byte in 2 parts"))
}

func (c *checker) s3Versioning(ctx context.Context, s *S3Store) {
	c.begin()
	v, err := s.client.GetBucketVersioning(ctx, s.bucket)
	switch {
	case err != nil:
		c.caps.Versioning = "unknown"
		c.add(CheckResult{Name: "versioning", Result: "unknown", Detail: firstLine(err), Passed: true})
	case v.Status == "":
		c.caps.Versioning = "off"
		c.add(CheckResult{Name: "versioning", Result: "off", Passed: true})
	default:
		c.caps.Versioning = strings.ToLower(v.Status)
		c.add(CheckResult{Name: "versioning", Result: c.caps.Versioning, Passed: true})
	}
}

func (c *checker) s3ObjectLock(ctx context.Context, s *S3Store) {
	c.begin()
	enabled, mode, validity, unit, err := s.client.GetObjectLockConfig(ctx, s.bucket)
	switch {
	case err != nil && strings.Contains(minio.ToErrorResponse(err).Code, "ObjectLockConfigurationNotFound"):
		c.caps.ObjectLock = "off"
		c.add(CheckResult{Name: "object lock", Result: "off", Passed: true})
	case err != nil:
		// Some servers answer in a form minio-go cannot parse: say so
		// rather than guess.
		c.caps.ObjectLock = "unknown"
		c.add(CheckResult{Name: "object lock", Result: "unknown", Detail: firstLine(err), Passed: true})
	case enabled == "Enabled":
		detail := "no default retention"
		if mode != nil && validity != nil && unit != nil {
			detail = fmt.Sprintf("default %s for %d %s", *mode, *validity, strings.ToLower(string(*unit)))
		}
		c.caps.ObjectLock = "enabled"
		c.add(CheckResult{Name: "object lock", Result: "enabled", Detail: detail, Passed: true})
	default:
		c.caps.ObjectLock = "off"
		c.add(CheckResult{Name: "object lock", Result: "off", Passed: true})
	}
}

func (c *checker) cleanup(ctx context.Context, st Store, dir string) {
	c.begin()
	var err error
	for oi, lerr := range st.List(ctx, dir) {
		if lerr != nil {
			err = lerr
			break
		}
		if err = st.Delete(ctx, oi.Key); err != nil {
			break
		}
	}
	if err == nil {
		if _, serr := st.Stat(ctx, dir+"round-trip"); !errors.Is(serr, ErrNotExist) {
			err = fmt.Errorf("object still there after delete (stat: %v)", serr)
		}
	}
	c.add(result("delete", err, true, ""))
}

func result(name string, err error, required bool, detail string) CheckResult {
	if err != nil {
		return CheckResult{Name: name, Result: "no", Detail: firstLine(err), Required: required}
	}
	return CheckResult{Name: name, Result: "yes", Detail: detail, Required: required, Passed: true}
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}

// VerifiesChecksums finds out, with one request, whether a store rejects a
// PUT whose x-amz-checksum-sha256 does not match its body, so that a copy
// can be proven by the server's verification instead of a read-back. The
// canary is refused by an honest server and never stored; a server that
// stores it anyway gets it deleted again. A folder store hashes every Put
// with a known SHA-256 before committing it (unless the caller marks the
// body Verified and checks it itself), so it counts as verifying.
func VerifiesChecksums(ctx context.Context, st Store) (bool, error) {
	s, ok := st.(*S3Store)
	if !ok {
		_, local := st.(*LocalStore)
		return local, nil
	}
	run := make([]byte, 6)
	rand.Read(run)
	verifies, _, err := s.rejectsWrongChecksums(ctx, canaryPrefix+hex.EncodeToString(run))
	return verifies, err
}

// rejectsWrongChecksums sends a PUT, then a part, whose
// x-amz-checksum-sha256 belongs to other bytes. The store verifies
// checksums only if it refuses both. A canary it stored anyway is deleted.
// detail says what happened, for the capability table.
func (s *S3Store) rejectsWrongChecksums(ctx context.Context, key string) (verifies bool, detail string, err error) {
	full, err := s.key(key)
	if err != nil {
		return false, "", err
	}
	body := []byte("ehrport checksum canary")
	wrong := sha256.Sum256([]byte("not the body"))
	_, err = s.core.PutObject(ctx, s.bucket, full, bytes.NewReader(body), int64(len(body)), "", "", minio.PutObjectOptions{
		UserMetadata: map[string]string{"x-amz-checksum-sha256": base64.StdEncoding.EncodeToString(wrong[:])},
	})
	switch {
	case err == nil:
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		if derr := s.Delete(dctx, key); derr != nil {
			return false, "", derr
		}
		return false, "stored a PUT with a wrong x-amz-checksum-sha256", nil
	case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
		return false, "", err
	case errors.Is(classifyS3(err), ErrUnavailable) || errors.Is(classifyS3(err), ErrPermission) || errors.Is(classifyS3(err), ErrNotExist):
		return false, "", s.fail("probe checksum", key, err)
	}
	code := minio.ToErrorResponse(err).Code
	parts, err := s.rejectsWrongPartChecksum(ctx, key+"-part")
	switch {
	case err != nil:
		return false, "", err
	case !parts:
		return false, "refused a wrong whole-object checksum (" + code + ") but stored a part with a wrong one", nil
	}
	return true, "refused a wrong checksum on a PUT (" + code + ") and on a part", nil
}

// rejectsWrongPartChecksum uploads one part whose x-amz-checksum-sha256
// belongs to other bytes, then aborts the upload. A Stat is only proof of a
// multipart copy when the server checks every part like this.
func (s *S3Store) rejectsWrongPartChecksum(ctx context.Context, key string) (bool, error) {
	full, err := s.key(key)
	if err != nil {
		return false, err
	}
	id, err := s.core.NewMultipartUpload(ctx, s.bucket, full, minio.PutObjectOptions{
		UserMetadata: map[string]string{"x-amz-checksum-algorithm": "SHA256"},
	})
	if err != nil {
		return false, s.fail("probe part checksum", key, err)
	}
	defer func() {
		actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		_ = s.core.AbortMultipartUpload(actx, s.bucket, full, id)
	}()
	body := []byte("ehrport part checksum canary")
	wrong := sha256.Sum256([]byte("not the part"))
	hdr := http.Header{}
	hdr.Set("x-amz-checksum-sha256", base64.StdEncoding.EncodeToString(wrong[:]))
	_, err = s.core.PutObjectPart(ctx, s.bucket, full, id, 1, bytes.NewReader(body), int64(len(body)), minio.PutObjectPartOptions{CustomHeader: hdr})
	switch {
	case err == nil:
		return false, nil
	case errors.Is(err, context.Canceled) || errors.Is(classifyS3(err), ErrUnavailable):
		return false, s.fail("probe part checksum", key, err)
	}
	return true, nil
}
