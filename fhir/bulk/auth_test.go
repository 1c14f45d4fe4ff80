package bulk

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	rsaOnce sync.Once
	rsaKey  *rsa.PrivateKey
)

func testRSAKey(t *testing.T) *rsa.PrivateKey {
	rsaOnce.Do(func() {
		var err error
		rsaKey, err = rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
	})
	return rsaKey
}

func testECKey(t *testing.T, c elliptic.Curve) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func b64(i *big.Int) string { return base64.RawURLEncoding.EncodeToString(i.Bytes()) }

func rsaJWK(k *rsa.PrivateKey, kid string) map[string]string {
	return map[string]string{"kty": "RSA", "kid": kid, "alg": "RS384",
		"n": b64(k.N), "e": b64(big.NewInt(int64(k.E))), "d": b64(k.D), "p": b64(k.Primes[0]), "q": b64(k.Primes[1])}
}

func ecJWK(t *testing.T, k *ecdsa.PrivateKey, kid string) map[string]string {
	pub, err := k.PublicKey.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	d, err := k.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	return map[string]string{"kty": "EC", "crv": "P-384", "kid": kid,
		"x": enc(pub[1:49]), "y": enc(pub[49:]), "d": enc(d)}
}

func mustJSON(t *testing.T, v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBackendServicesExport runs a whole export where every request needs
// a token from the SMART token endpoint, tokens expire after a few uses
// (the server answers 401 and the client must refresh), and the manifest
// requires the token on file downloads too.
func TestBackendServicesExport(t *testing.T) {
	ec := testECKey(t, elliptic.P384())
	for _, tc := range []struct {
		name string
		key  crypto.Signer
		pub  crypto.PublicKey
	}{
		{"RS384", testRSAKey(t), &testRSAKey(t).PublicKey},
		{"ES384", ec, &ec.PublicKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSpecServer(t)
			s.authRequired, s.requiresToken = true, true
			s.tokenClientID, s.tokenKID, s.tokenPub = "ehrport-client", "key-1", tc.pub
			s.tokenUses = 3
			s.progress = 4
			src, err := NewBackendServices(BackendServicesConfig{
				TokenURL: s.srv.URL + "/token", ClientID: "ehrport-client", Scope: "system/*.rs",
				Key: tc.key, KeyID: "key-1", HTTPClient: s.srv.Client(), Clock: s.clock,
			})
			if err != nil {
				t.Fatal(err)
			}
			_, _, rep, sink := runExport(t, s.client(t, func(o *Options) { o.Auth = src }), Request{})
			if len(sink.files) != 4 || len(rep.Mismatches()) != 0 {
				t.Fatalf("stored %d files", len(sink.files))
			}
			// kick-off + 5 polls + 4 files + delete = 11 uses, 3 per token.
			if s.tokenIssued < 4 {
				t.Errorf("tokens issued = %d, want refreshes after 401s", s.tokenIssued)
			}
			for name, auths := range s.fileAuth {
				for _, a := range auths {
					if !strings.HasPrefix(a, "Bearer issued-") {
						t.Errorf("%s fetched with %q", name, a)
					}
				}
			}
		})
	}
}

func TestBackendServicesCachesAndRefreshesBeforeExpiry(t *testing.T) {
	s := newSpecServer(t)
	s.tokenClientID, s.tokenKID, s.tokenPub = "c", "k", &testRSAKey(t).PublicKey
	s.tokenExpiresIn = 300
	src, err := NewBackendServices(BackendServicesConfig{
		TokenURL: s.srv.URL + "/token", ClientID: "c", Scope: "system/*.read",
		Key: testRSAKey(t), KeyID: "k", HTTPClient: s.srv.Client(), Clock: s.clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	a, err := src.Token(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.clock.Sleep(ctx, 200*time.Second)
	if b, _ := src.Token(ctx); b != a || s.tokenIssued != 1 {
		t.Fatalf("token not cached: %q %q issued %d", a, b, s.tokenIssued)
	}
	s.clock.Sleep(ctx, 45*time.Second) // within a minute of expiry
	if c, _ := src.Token(ctx); c == a || s.tokenIssued != 2 {
		t.Fatalf("token not refreshed before expiry: issued %d", s.tokenIssued)
	}
	src.Invalidate("not-the-current-token")
	if s.tokenIssued != 2 {
		t.Fatal("Invalidate of another token dropped the cache")
	}
}

func TestBackendServicesRefused(t *testing.T) {
	s := newSpecServer(t)
	s.tokenClientID, s.tokenKID, s.tokenPub = "c", "other-kid", &testRSAKey(t).PublicKey
	src, err := NewBackendServices(BackendServicesConfig{
		TokenURL: s.srv.URL + "/token", ClientID: "c", Scope: "system/*.read",
		Key: testRSAKey(t), KeyID: "k", HTTPClient: s.srv.Client(), Clock: s.clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = src.Token(context.Background())
	if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "invalid_client") || !strings.Contains(err.Error(), "/token") {
		t.Fatalf("err = %v", err)
	}
	s.authRequired = true
	c := s.client(t, func(o *Options) { o.Auth = src })
	if _, err := c.Kickoff(context.Background(), Request{}); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("kick-off err = %v", err)
	}
}

func TestNewBackendServicesRejects(t *testing.T) {
	good := BackendServicesConfig{TokenURL: "https://auth.test/token", ClientID: "c", Scope: "system/*.rs", Key: testRSAKey(t), KeyID: "k"}
	if _, err := NewBackendServices(good); err != nil {
		t.Fatal(err)
	}
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	for name, mod := range map[string]func(*BackendServicesConfig){
		"no kid":      func(c *BackendServicesConfig) { c.KeyID = "" },
		"no key":      func(c *BackendServicesConfig) { c.Key = nil },
		"P-256":       func(c *BackendServicesConfig) { c.Key = testECKey(t, elliptic.P256()) },
		"RSA 1024":    func(c *BackendServicesConfig) { c.Key = small },
		"relative":    func(c *BackendServicesConfig) { c.TokenURL = "/token" },
		"no scope":    func(c *BackendServicesConfig) { c.Scope = "" },
		"no clientid": func(c *BackendServicesConfig) { c.ClientID = "" },
	} {
		cfg := good
		mod(&cfg)
		if _, err := NewBackendServices(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestParsePrivateKey(t *testing.T) {
	rk := testRSAKey(t)
	ek := testECKey(t, elliptic.P384())
	pkcs8, _ := x509.MarshalPKCS8PrivateKey(rk)
	sec1, _ := x509.MarshalECPrivateKey(ek)
	pemOf := func(typ string, der []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}) }
	set := mustJSON(t, map[string]any{"keys": []any{
		map[string]string{"kty": "EC", "crv": "P-384", "kid": "pub-only", "x": "AA", "y": "AA"},
		rsaJWK(rk, "rsa-1"), ecJWK(t, ek, "ec-1"),
	}})
	for name, tc := range map[string]struct {
		data    []byte
		kid     string
		wantKID string
		isEC    bool
	}{
		"PKCS#8 RSA": {data: pemOf("PRIVATE KEY", pkcs8)},
		"PKCS#1 RSA": {data: pemOf("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rk))},
		"SEC 1 EC":   {data: pemOf("EC PRIVATE KEY", sec1), isEC: true},
		"RSA JWK":    {data: mustJSON(t, rsaJWK(rk, "r")), wantKID: "r"},
		"EC JWK":     {data: mustJSON(t, ecJWK(t, ek, "e")), wantKID: "e", isEC: true},
		"JWKS first": {data: set, wantKID: "rsa-1"},
		"JWKS kid":   {data: set, kid: "ec-1", wantKID: "ec-1", isEC: true},
	} {
		k, kid, err := ParsePrivateKey(tc.data, tc.kid)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if kid != tc.wantKID {
			t.Errorf("%s: kid %q, want %q", name, kid, tc.wantKID)
		}
		if _, isEC := k.(*ecdsa.PrivateKey); isEC != tc.isEC {
			t.Errorf("%s: key type %T", name, k)
		}
		// The key signs something the server side verifies.
		alg, _ := algFor(k)
		if _, err := signJWT(k, alg, map[string]string{"alg": alg}, map[string]any{"x": 1}); err != nil {
			t.Errorf("%s: sign: %v", name, err)
		}
	}
	badEC := ecJWK(t, ek, "bad")
	badEC["x"] = ecJWK(t, testECKey(t, elliptic.P384()), "")["x"]
	pubOnly := rsaJWK(rk, "pub")
	delete(pubOnly, "d")
	for name, data := range map[string][]byte{
		"garbage":      []byte("hello"),
		"public JWK":   mustJSON(t, pubOnly),
		"mismatched x": mustJSON(t, badEC),
		"P-256 PEM":    pemOf("EC PRIVATE KEY", must(x509.MarshalECPrivateKey(testECKey(t, elliptic.P256())))),
		"JWKS no kid":  set,
		"bad json":     []byte("{"),
	} {
		kid := ""
		if name == "JWKS no kid" {
			kid = "missing"
		}
		_, _, err := ParsePrivateKey(data, kid)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if strings.Contains(err.Error(), b64(rk.D)[:16]) {
			t.Errorf("%s: error leaks key material", name)
		}
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func TestStaticToken(t *testing.T) {
	tok := StaticToken("s3cret")
	if v, err := tok.Token(context.Background()); v != "s3cret" || err != nil {
		t.Fatal(v, err)
	}
	if strings.Contains(tok.String(), "s3cret") {
		t.Fatal("String leaks the token")
	}
	if _, err := StaticToken("").Token(context.Background()); err == nil {
		t.Fatal("empty token accepted")
	}
}

func TestDiscoverSMART(t *testing.T) {
	s := newSpecServer(t)
	sc, err := DiscoverSMART(context.Background(), s.srv.Client(), s.base()+"/")
	if err != nil || sc.TokenEndpoint != s.srv.URL+"/token" || len(sc.SigningAlgs) != 2 {
		t.Fatalf("%+v, %v", sc, err)
	}
	if _, err := DiscoverSMART(context.Background(), s.srv.Client(), s.srv.URL+"/nothing"); err == nil || !strings.Contains(err.Error(), "404") {
		t.Fatalf("err = %v", err)
	}
}

// TestAssertionClaims checks the client assertion against SMART Backend
// Services: the signature verifies with the public key (and only with it),
// iss = sub = client id, aud = token URL, exp at most five minutes ahead,
// and a fresh jti each time.
func TestAssertionClaims(t *testing.T) {
	ec := testECKey(t, elliptic.P384())
	otherEC := testECKey(t, elliptic.P384())
	for _, tc := range []struct {
		alg      string
		key      crypto.Signer
		pub, bad crypto.PublicKey
	}{
		{"RS384", testRSAKey(t), &testRSAKey(t).PublicKey, &must(rsa.GenerateKey(rand.Reader, 2048)).PublicKey},
		{"ES384", ec, &ec.PublicKey, &otherEC.PublicKey},
	} {
		t.Run(tc.alg, func(t *testing.T) {
			clock := newFakeClock()
			const tokenURL = "https://auth.example/oauth/token"
			b, err := NewBackendServices(BackendServicesConfig{TokenURL: tokenURL, ClientID: "ehrport-client", Scope: "system/*.read",
				Key: tc.key, KeyID: "kid-7", JKU: "https://ehrport.example/jwks.json", Clock: clock})
			if err != nil {
				t.Fatal(err)
			}
			a1, err := b.assertion()
			if err != nil {
				t.Fatal(err)
			}
			a2, _ := b.assertion()
			hdr, claims, err := verifyAssertion(a1, tc.pub)
			if err != nil {
				t.Fatal(err)
			}
			if hdr["alg"] != tc.alg || hdr["typ"] != "JWT" || hdr["kid"] != "kid-7" || hdr["jku"] != "https://ehrport.example/jwks.json" {
				t.Errorf("header %v", hdr)
			}
			now := float64(clock.Now().Unix())
			exp, _ := claims["exp"].(float64)
			if claims["iss"] != "ehrport-client" || claims["sub"] != "ehrport-client" || claims["aud"] != tokenURL ||
				exp <= now || exp > now+300 || claims["iat"] != now {
				t.Errorf("claims %v (now %v)", claims, now)
			}
			_, claims2, err := verifyAssertion(a2, tc.pub)
			if err != nil || claims["jti"] == "" || claims["jti"] == claims2["jti"] {
				t.Errorf("jti %v then %v (%v)", claims["jti"], claims2["jti"], err)
			}
			if _, _, err := verifyAssertion(a1, tc.bad); err == nil {
				t.Error("assertion verifies with another key")
			}
			parts := strings.Split(a1, ".")
			forged, _ := json.Marshal(map[string]any{"iss": "someone-else", "sub": "someone-else", "aud": tokenURL, "exp": exp, "jti": "x"})
			if _, _, err := verifyAssertion(parts[0]+"."+base64.RawURLEncoding.EncodeToString(forged)+"."+parts[2], tc.pub); err == nil {
				t.Error("changed claims still verify")
			}
		})
	}
}

// TestTokenEndpointErrors: refusals fail at once with ErrUnauthorized and
// the endpoint's error code; 5xx answers are retried with back-off; an
// answer that cannot change (a redirect, no access_token) is not retried.
// No error text carries the assertion.
func TestTokenEndpointErrors(t *testing.T) {
	for _, tc := range []struct {
		name      string
		mod       func(*specServer)
		ok        bool
		is        error
		contains  string
		requests  int
		sleeps    int
		notUnauth bool
	}{
		{name: "400 invalid_client", mod: func(s *specServer) { s.tokenKID = "another-kid" },
			is: ErrUnauthorized, contains: "HTTP 400: invalid_client", requests: 1},
		{name: "503 then a token", mod: func(s *specServer) { s.tokenStatus = []int{503, 502} }, ok: true, requests: 3, sleeps: 2},
		{name: "503 until giving up", mod: func(s *specServer) { s.tokenStatus = slices.Repeat([]int{503}, 20) },
			is: ErrLimit, contains: "HTTP 503", requests: 8, sleeps: 7, notUnauth: true},
		{name: "redirect not followed", mod: func(s *specServer) { s.tokenStatus = []int{307} },
			contains: "redirects to http://elsewhere.invalid/token", requests: 1, notUnauth: true},
		{name: "no access_token", mod: func(s *specServer) { s.tokenBody = `{"token_type":"bearer","expires_in":300}` },
			contains: "no access_token", requests: 1, notUnauth: true},
		{name: "not a bearer token", mod: func(s *specServer) { s.tokenBody = `{"access_token":"x","token_type":"mac"}` },
			contains: `token_type "mac"`, requests: 1, notUnauth: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSpecServer(t)
			s.authRequired = true
			s.tokenClientID, s.tokenKID, s.tokenPub = "c", "k", &testRSAKey(t).PublicKey
			tc.mod(s)
			src, err := NewBackendServices(BackendServicesConfig{TokenURL: s.srv.URL + "/token", ClientID: "c", Scope: "system/*.read",
				Key: testRSAKey(t), KeyID: "k", HTTPClient: s.srv.Client(), Clock: s.clock})
			if err != nil {
				t.Fatal(err)
			}
			_, err = s.client(t, func(o *Options) { o.Auth = src }).Kickoff(context.Background(), Request{})
			if s.tokenRequests != tc.requests || len(s.clock.Sleeps()) != tc.sleeps {
				t.Errorf("token requests %d, sleeps %d; want %d, %d", s.tokenRequests, len(s.clock.Sleeps()), tc.requests, tc.sleeps)
			}
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || (tc.is != nil && !errors.Is(err, tc.is)) || !strings.Contains(err.Error(), tc.contains) ||
				!strings.Contains(err.Error(), "/token") || (tc.notUnauth && errors.Is(err, ErrUnauthorized)) {
				t.Fatalf("err = %v", err)
			}
			if strings.Contains(err.Error(), "eyJ") {
				t.Fatalf("error carries a JWT: %v", err)
			}
			if len(s.kickoffs) != 0 {
				t.Errorf("kick-off sent without a token")
			}
		})
	}
}

// TestRefreshOn401Once: a 401 makes the client fetch one fresh token and
// try again once; a server that refuses that one too gets no third try.
func TestRefreshOn401Once(t *testing.T) {
	s := newSpecServer(t)
	s.authRequired, s.rejectTokens = true, true
	s.tokenClientID, s.tokenKID, s.tokenPub = "c", "k", &testRSAKey(t).PublicKey
	src, err := NewBackendServices(BackendServicesConfig{TokenURL: s.srv.URL + "/token", ClientID: "c", Scope: "system/*.read",
		Key: testRSAKey(t), KeyID: "k", HTTPClient: s.srv.Client(), Clock: s.clock})
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.client(t, func(o *Options) { o.Auth = src }).Kickoff(context.Background(), Request{})
	if !errors.Is(err, ErrUnauthorized) || !strings.Contains(err.Error(), "HTTP 401") {
		t.Fatalf("err = %v", err)
	}
	if s.tokenIssued != 2 || len(s.kickoffs) != 2 || len(s.clock.Sleeps()) != 0 {
		t.Fatalf("tokens %d, kick-offs %d, sleeps %v; want 2, 2, none", s.tokenIssued, len(s.kickoffs), s.clock.Sleeps())
	}
}

func TestTokenURLPlainHTTP(t *testing.T) {
	cfg := BackendServicesConfig{ClientID: "c", Scope: "system/*.read", Key: testRSAKey(t), KeyID: "k"}
	for raw, ok := range map[string]bool{
		"https://auth.example/token": true, "http://127.0.0.1:9/token": true, "http://localhost/token": true,
		"http://auth.example/token": false,
	} {
		cfg.TokenURL = raw
		if _, err := NewBackendServices(cfg); (err == nil) != ok {
			t.Errorf("%s: err = %v", raw, err)
		}
	}
}
