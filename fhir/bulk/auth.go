package bulk

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha512"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"
)

// TokenSource supplies the bearer token for requests to the FHIR server.
//
// Token must be safe for concurrent use, must honour ctx, and should return
// a cached token while it is valid. The returned error must never contain
// a token or key material.
type TokenSource interface {
	Token(ctx context.Context) (string, error)
}

// Invalidator is an optional capability of a TokenSource: the Client calls
// Invalidate with a token the server just refused (401), so that the next
// Token call fetches a fresh one instead of returning the cached one.
type Invalidator interface {
	Invalidate(token string)
}

// StaticToken is a bearer token obtained elsewhere. It is never refreshed:
// once the server refuses it, requests fail with ErrUnauthorized.
type StaticToken string

// Token returns the token itself.
func (t StaticToken) Token(context.Context) (string, error) {
	if t == "" {
		return "", errors.New("bulk: empty bearer token")
	}
	return string(t), nil
}

// String hides the token from fmt and logs.
func (t StaticToken) String() string { return "StaticToken(redacted)" }

// BackendServicesConfig configures SMART Backend Services authorization
// (the client_credentials grant with a JWT client assertion).
type BackendServicesConfig struct {
	TokenURL string // the authorization server's token endpoint
	ClientID string // used as iss and sub of the assertion
	Scope    string // e.g. "system/*.read" or "system/*.rs"

	// Key signs the assertion. It must be an *rsa.PrivateKey (RS384, at
	// least 2048 bits) or an *ecdsa.PrivateKey on P-384 (ES384). Use
	// ParsePrivateKey to load a JWK, a JWK Set or a PEM file.
	Key crypto.Signer
	// KeyID is the `kid` header: the id of the public key the server
	// knows (registered directly or through a JWKS URL). Required.
	KeyID string
	// JKU, optional, is the `jku` header: the client's JWKS URL.
	JKU string

	HTTPClient *http.Client // nil means a plain client; redirects are never followed
	Clock      Clock        // nil means the real clock
	// RefreshBefore renews the token this long before it expires
	// (default 60 s, and never more than half its lifetime).
	RefreshBefore time.Duration
}

// BackendServices is a TokenSource for SMART Backend Services. Tokens are
// cached until RefreshBefore their expiry, and after Invalidate.
type BackendServices struct {
	cfg    BackendServicesConfig
	alg    string
	mu     sync.Mutex
	token  string
	expiry time.Time
}

var (
	_ TokenSource = StaticToken("")
	_ TokenSource = (*BackendServices)(nil)
	_ Invalidator = (*BackendServices)(nil)
)

// NewBackendServices checks the configuration and returns a TokenSource.
// It does not contact the server.
func NewBackendServices(cfg BackendServicesConfig) (*BackendServices, error) {
	if cfg.TokenURL == "" || cfg.ClientID == "" || cfg.Scope == "" || cfg.KeyID == "" {
		return nil, errors.New("bulk: backend services needs a token URL, a client id, a scope and a key id")
	}
	if err := checkFileURL(cfg.TokenURL); err != nil {
		return nil, fmt.Errorf("bulk: token URL: %v", err)
	}
	if u, _ := url.Parse(cfg.TokenURL); !tokenAllowed(u) {
		// The signed assertion and the token it buys are credentials.
		return nil, fmt.Errorf("bulk: token URL %s: plain http is refused (use https; http only to loopback)", redact(cfg.TokenURL))
	}
	alg, err := algFor(cfg.Key)
	if err != nil {
		return nil, err
	}
	hc := http.Client{}
	if cfg.HTTPClient != nil {
		hc = *cfg.HTTPClient
	}
	// A token endpoint answers; it does not redirect. Following a 307
	// would resend the assertion to wherever the redirect points.
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	cfg.HTTPClient = &hc
	if cfg.Clock == nil {
		cfg.Clock = realClock{}
	}
	if cfg.RefreshBefore <= 0 {
		cfg.RefreshBefore = time.Minute
	}
	return &BackendServices{cfg: cfg, alg: alg}, nil
}

func algFor(k crypto.Signer) (string, error) {
	switch key := k.(type) {
	case *rsa.PrivateKey:
		if key.N.BitLen() < 2048 {
			return "", fmt.Errorf("bulk: RSA key has %d bits, RS384 needs at least 2048", key.N.BitLen())
		}
		return "RS384", nil
	case *ecdsa.PrivateKey:
		if key.Curve != elliptic.P384() {
			return "", fmt.Errorf("bulk: EC key is on %s, ES384 needs P-384", key.Curve.Params().Name)
		}
		return "ES384", nil
	case nil:
		return "", errors.New("bulk: backend services needs a private key")
	default:
		return "", fmt.Errorf("bulk: unsupported key type %T (want RSA or EC P-384)", k)
	}
}

// Alg returns the assertion's signing algorithm, RS384 or ES384.
func (b *BackendServices) Alg() string { return b.alg }

// Invalidate drops the cached token if it is the one given.
func (b *BackendServices) Invalidate(token string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.token == token {
		b.token = ""
	}
}

// Token returns the cached token, or fetches a new one when it is missing
// or close to expiry. Concurrent callers share one fetch.
func (b *BackendServices) Token(ctx context.Context) (string, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.token != "" && b.cfg.Clock.Now().Before(b.expiry) {
		return b.token, nil
	}
	tok, life, err := b.fetch(ctx)
	if err != nil {
		return "", err
	}
	margin := min(b.cfg.RefreshBefore, life/2)
	b.token, b.expiry = tok, b.cfg.Clock.Now().Add(life-margin)
	return tok, nil
}

func (b *BackendServices) fetch(ctx context.Context) (string, time.Duration, error) {
	assertion, err := b.assertion()
	if err != nil {
		return "", 0, err
	}
	form := url.Values{
		"scope":                 {b.cfg.Scope},
		"grant_type":            {"client_credentials"},
		"client_assertion_type": {"urn:ietf:params:oauth:client-assertion-type:jwt-bearer"},
		"client_assertion":      {assertion},
	}
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, b.cfg.TokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", 0, fmt.Errorf("bulk: token request %s: %v", redact(b.cfg.TokenURL), err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := b.cfg.HTTPClient.Do(req)
	if err != nil {
		return "", 0, fmt.Errorf("bulk: token request %s: %w", redact(b.cfg.TokenURL), scrubURLError(err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return "", 0, fmt.Errorf("bulk: token response %s: %v", redact(b.cfg.TokenURL), err)
	}
	// Answers that will not change on a retry are ServerErrors, so the
	// Client does not retry them; network failures (above) are retried.
	permanent := func(format string, a ...any) error {
		return &ServerError{Op: "token", URL: redact(b.cfg.TokenURL), StatusCode: resp.StatusCode, Diagnostics: fmt.Sprintf(format, a...)}
	}
	if resp.StatusCode/100 == 3 {
		return "", 0, permanent("the token endpoint redirects to %s; configure its final URL", redact(resp.Header.Get("Location")))
	}
	if resp.StatusCode != http.StatusOK {
		var oe struct {
			Error       string `json:"error"`
			Description string `json:"error_description"`
		}
		_ = json.Unmarshal(body, &oe)
		e := &ServerError{Op: "token", URL: redact(b.cfg.TokenURL), StatusCode: resp.StatusCode,
			Diagnostics: sanitize(oe.Error + " " + oe.Description), class: ErrUnauthorized}
		if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests {
			e.class = nil
			e.Transient = true
		}
		return "", 0, e
	}
	var tr struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
		ExpiresIn   int64  `json:"expires_in"`
	}
	if err := json.Unmarshal(body, &tr); err != nil || tr.AccessToken == "" {
		return "", 0, permanent("the response has no access_token")
	}
	if !strings.EqualFold(tr.TokenType, "bearer") {
		return "", 0, permanent("token_type %q, want bearer", sanitize(tr.TokenType))
	}
	life := time.Duration(tr.ExpiresIn) * time.Second
	if tr.ExpiresIn <= 0 {
		life = 5 * time.Minute // the SMART spec recommends no more than 5 minutes
	}
	return tr.AccessToken, life, nil
}

// assertion builds the signed client assertion: iss = sub = client id,
// aud = token URL, exp at most five minutes ahead, a random jti.
func (b *BackendServices) assertion() (string, error) {
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", err
	}
	hdr := map[string]string{"alg": b.alg, "typ": "JWT", "kid": b.cfg.KeyID}
	if b.cfg.JKU != "" {
		hdr["jku"] = b.cfg.JKU
	}
	now := b.cfg.Clock.Now()
	claims := map[string]any{
		"iss": b.cfg.ClientID,
		"sub": b.cfg.ClientID,
		"aud": b.cfg.TokenURL,
		"exp": now.Add(4 * time.Minute).Unix(),
		"iat": now.Unix(),
		"jti": hex.EncodeToString(jti[:]),
	}
	return signJWT(b.cfg.Key, b.alg, hdr, claims)
}

func signJWT(key crypto.Signer, alg string, hdr map[string]string, claims map[string]any) (string, error) {
	h, err := json.Marshal(hdr)
	if err != nil {
		return "", err
	}
	c, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding
	input := enc.EncodeToString(h) + "." + enc.EncodeToString(c)
	digest := sha512.Sum384([]byte(input))
	var sig []byte
	switch alg {
	case "RS384":
		sig, err = rsa.SignPKCS1v15(rand.Reader, key.(*rsa.PrivateKey), crypto.SHA384, digest[:])
	case "ES384":
		var r, s *big.Int
		r, s, err = ecdsa.Sign(rand.Reader, key.(*ecdsa.PrivateKey), digest[:])
		if err == nil {
			// JWS wants the fixed-size R || S, not ASN.1.
			sig = make([]byte, 96)
			r.FillBytes(sig[:48])
			s.FillBytes(sig[48:])
		}
	default:
		err = fmt.Errorf("unsupported alg %q", alg)
	}
	if err != nil {
		return "", fmt.Errorf("bulk: signing client assertion: %v", err)
	}
	return input + "." + enc.EncodeToString(sig), nil
}

// ParsePrivateKey loads a signing key for BackendServices from a private
// JWK, a JWK Set (the first private RSA or P-384 key is used, or the one
// whose kid matches wantKID when it is not empty), or a PEM block (PKCS#8,
// PKCS#1 or SEC 1). It returns the key and its kid ("" for PEM). Errors
// never include key material.
func ParsePrivateKey(data []byte, wantKID string) (crypto.Signer, string, error) {
	trimmed := strings.TrimSpace(string(data))
	if strings.HasPrefix(trimmed, "{") {
		return parseJWKData([]byte(trimmed), wantKID)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, "", errors.New("bulk: private key is neither a JWK nor PEM")
	}
	if k, err := x509.ParsePKCS8PrivateKey(block.Bytes); err == nil {
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, "", fmt.Errorf("bulk: PKCS#8 key of type %T cannot sign", k)
		}
		if _, err := algFor(s); err != nil {
			return nil, "", err
		}
		return s, "", nil
	}
	if k, err := x509.ParsePKCS1PrivateKey(block.Bytes); err == nil {
		_, err := algFor(k)
		return k, "", err
	}
	if k, err := x509.ParseECPrivateKey(block.Bytes); err == nil {
		_, err := algFor(k)
		return k, "", err
	}
	return nil, "", fmt.Errorf("bulk: PEM block %q is not a PKCS#8, PKCS#1 or SEC 1 private key", block.Type)
}

type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Crv string `json:"crv"`
	N   string `json:"n"`
	E   string `json:"e"`
	D   string `json:"d"`
	P   string `json:"p"`
	Q   string `json:"q"`
	X   string `json:"x"`
	Y   string `json:"y"`
}

func parseJWKData(data []byte, wantKID string) (crypto.Signer, string, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, "", errors.New("bulk: private key JWK is not valid JSON")
	}
	if set.Keys == nil {
		return jwkSigner(data)
	}
	var firstErr error
	for _, raw := range set.Keys {
		k, kid, err := jwkSigner(raw)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		if wantKID == "" || kid == wantKID {
			return k, kid, nil
		}
	}
	if firstErr == nil {
		firstErr = errors.New("no private key")
	}
	if wantKID != "" {
		return nil, "", fmt.Errorf("bulk: JWK Set has no usable private key with kid %q (%v)", wantKID, firstErr)
	}
	return nil, "", fmt.Errorf("bulk: JWK Set has no usable private key: %w", firstErr)
}

func jwkSigner(raw []byte) (crypto.Signer, string, error) {
	var k jwk
	if err := json.Unmarshal(raw, &k); err != nil {
		return nil, "", errors.New("bulk: JWK is not valid JSON")
	}
	if k.D == "" {
		return nil, "", fmt.Errorf("bulk: JWK %q is a public key; a private key (with \"d\") is needed", k.Kid)
	}
	num := func(s string) (*big.Int, error) {
		b, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
		if err != nil || len(b) == 0 {
			return nil, fmt.Errorf("bulk: JWK %q has a bad base64url number", k.Kid)
		}
		return new(big.Int).SetBytes(b), nil
	}
	switch k.Kty {
	case "RSA":
		n, err := num(k.N)
		if err != nil {
			return nil, "", err
		}
		e, err := num(k.E)
		if err != nil {
			return nil, "", err
		}
		d, err := num(k.D)
		if err != nil {
			return nil, "", err
		}
		key := &rsa.PrivateKey{PublicKey: rsa.PublicKey{N: n, E: int(e.Int64())}, D: d}
		if k.P != "" && k.Q != "" {
			p, err := num(k.P)
			if err != nil {
				return nil, "", err
			}
			q, err := num(k.Q)
			if err != nil {
				return nil, "", err
			}
			key.Primes = []*big.Int{p, q}
		} else {
			return nil, "", fmt.Errorf("bulk: RSA JWK %q lacks the primes p and q", k.Kid)
		}
		if err := key.Validate(); err != nil {
			return nil, "", fmt.Errorf("bulk: RSA JWK %q is inconsistent", k.Kid)
		}
		key.Precompute()
		_, err = algFor(key)
		return key, k.Kid, err
	case "EC":
		if k.Crv != "P-384" {
			return nil, "", fmt.Errorf("bulk: EC JWK %q is on %q, ES384 needs P-384", k.Kid, k.Crv)
		}
		d, err := num(k.D)
		if err != nil {
			return nil, "", err
		}
		if d.BitLen() > 384 {
			return nil, "", fmt.Errorf("bulk: EC JWK %q: private scalar too long", k.Kid)
		}
		key, err := ecdsa.ParseRawPrivateKey(elliptic.P384(), d.FillBytes(make([]byte, 48)))
		if err != nil {
			return nil, "", fmt.Errorf("bulk: EC JWK %q: bad private scalar", k.Kid)
		}
		if k.X != "" {
			x, err := num(k.X)
			if err != nil {
				return nil, "", err
			}
			pub, err := key.PublicKey.Bytes()
			if err != nil || x.BitLen() > 384 || !bytes.Equal(x.FillBytes(make([]byte, 48)), pub[1:49]) {
				return nil, "", fmt.Errorf("bulk: EC JWK %q: public x does not match d", k.Kid)
			}
		}
		return key, k.Kid, nil
	default:
		return nil, "", fmt.Errorf("bulk: JWK %q has kty %q; want RSA or EC", k.Kid, k.Kty)
	}
}

// SMARTConfiguration is the part of a server's
// `.well-known/smart-configuration` that Backend Services needs.
type SMARTConfiguration struct {
	TokenEndpoint string   `json:"token_endpoint"`
	SigningAlgs   []string `json:"token_endpoint_auth_signing_alg_values_supported"`
	Capabilities  []string `json:"capabilities"`
}

// DiscoverSMART fetches [base]/.well-known/smart-configuration, so the
// CLI needs only --from and the key to find the token endpoint. hc nil
// means http.DefaultClient. The token endpoint must be an absolute
// http(s) URL.
func DiscoverSMART(ctx context.Context, hc *http.Client, baseURL string) (*SMARTConfiguration, error) {
	if hc == nil {
		hc = http.DefaultClient
	}
	u := strings.TrimRight(baseURL, "/") + "/.well-known/smart-configuration"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("bulk: SMART discovery %s: %v", redact(u), err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("bulk: SMART discovery %s: %w", redact(u), scrubURLError(err))
	}
	defer resp.Body.Close()
	body, err := readLimited(resp.Body, 1<<20)
	if err != nil {
		return nil, fmt.Errorf("bulk: SMART discovery %s: %w", redact(u), err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &ServerError{Op: "discovery", URL: redact(u), StatusCode: resp.StatusCode, Diagnostics: sanitize(string(body))}
	}
	var sc SMARTConfiguration
	if err := json.Unmarshal(body, &sc); err != nil {
		return nil, fmt.Errorf("bulk: SMART discovery %s: not JSON: %v", redact(u), err)
	}
	if err := checkFileURL(sc.TokenEndpoint); err != nil {
		return nil, fmt.Errorf("bulk: SMART discovery %s: token_endpoint: %v", redact(u), err)
	}
	return &sc, nil
}
