package cli

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// smartServer is a FHIR server with a SMART token endpoint: every request
// and, as its manifest says requiresAccessToken, every file download needs
// a token it issued. The token endpoint checks the grant and the
// assertion's claims (fhir/bulk's tests verify the signature). Its
// manifest lists output, error and deleted files.
type smartServer struct {
	*httptest.Server
	mu       sync.Mutex
	clientID string
	refuse   bool     // the token endpoint answers 400 invalid_client
	fileHost string   // non-empty: file URLs point at this host:port instead
	issued   []string // access tokens issued
	seen     []string // Authorization headers of file downloads
}

func newSMARTServer(t *testing.T, clientID string) *smartServer {
	s := &smartServer{clientID: clientID}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *smartServer) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := r.URL.Path
	if p == "/fhir/.well-known/smart-configuration" {
		fmt.Fprintf(w, `{"token_endpoint":"%s/auth/token","token_endpoint_auth_signing_alg_values_supported":["ES384","RS384"]}`, s.URL)
		return
	}
	if p == "/auth/token" {
		s.token(w, r)
		return
	}
	auth := r.Header.Get("Authorization")
	ok := false
	for _, tok := range s.issued {
		ok = ok || auth == "Bearer "+tok
	}
	if strings.HasPrefix(p, "/files/") {
		s.seen = append(s.seen, auth)
	}
	if !ok {
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprint(w, `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"login","diagnostics":"no valid token"}]}`)
		return
	}
	files := map[string]string{
		"Patient.ndjson": `{"resourceType":"Patient","id":"p1","gender":"female"}` + "\n" + `{"resourceType":"Patient","id":"p2"}` + "\n",
		"err.ndjson":     `{"resourceType":"OperationOutcome","issue":[{"severity":"error","code":"processing","diagnostics":"Condition/c7 could not be exported"}]}` + "\n",
		"del.ndjson":     `{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"DELETE","url":"Patient/p0"}}]}` + "\n",
	}
	switch {
	case strings.HasSuffix(p, "/$export"):
		w.Header().Set("Content-Location", s.URL+"/status/1")
		w.WriteHeader(http.StatusAccepted)
	case p == "/status/1" && r.Method == http.MethodDelete:
		w.WriteHeader(http.StatusAccepted)
	case p == "/status/1":
		host := s.URL
		if s.fileHost != "" {
			host = "http://" + s.fileHost
		}
		fmt.Fprintf(w, `{"transactionTime":"2026-11-22T05:39:01Z","requiresAccessToken":true,
			"output":[{"type":"Patient","url":"%[1]s/files/Patient.ndjson"}],
			"error":[{"type":"OperationOutcome","url":"%[1]s/files/err.ndjson"}],
			"deleted":[{"type":"Bundle","url":"%[1]s/files/del.ndjson"}]}`, host)
	case files[strings.TrimPrefix(p, "/files/")] != "":
		fmt.Fprint(w, files[strings.TrimPrefix(p, "/files/")])
	default:
		http.NotFound(w, r)
	}
}

func (s *smartServer) token(w http.ResponseWriter, r *http.Request) {
	fail := func() {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprint(w, `{"error":"invalid_client","error_description":"unknown key"}`)
	}
	if r.ParseForm() != nil || s.refuse || r.PostForm.Get("grant_type") != "client_credentials" ||
		r.PostForm.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" ||
		r.PostForm.Get("scope") != "system/*.read" {
		fail()
		return
	}
	parts := strings.Split(r.PostForm.Get("client_assertion"), ".")
	var claims map[string]any
	if len(parts) != 3 {
		fail()
		return
	}
	cb, _ := base64.RawURLEncoding.DecodeString(parts[1])
	if json.Unmarshal(cb, &claims) != nil || claims["iss"] != s.clientID || claims["sub"] != s.clientID || claims["aud"] != s.URL+"/auth/token" {
		fail()
		return
	}
	tok := fmt.Sprintf("planted-access-token-%d", len(s.issued))
	s.issued = append(s.issued, tok)
	fmt.Fprintf(w, `{"access_token":%q,"token_type":"Bearer","expires_in":300}`, tok)
}

// writeSMARTKey writes an EC P-384 private key as a JWK Set (with kid) or
// PEM (without), and returns its file and its base64url private scalar,
// the material that must never be printed.
func writeSMARTKey(t *testing.T, dir string, asPEM bool, mode os.FileMode) (string, string) {
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := k.Bytes()
	pub, _ := k.PublicKey.Bytes()
	enc := base64.RawURLEncoding.EncodeToString
	var data []byte
	path := filepath.Join(dir, "client.jwks.json")
	if asPEM {
		der, _ := x509.MarshalPKCS8PrivateKey(k)
		data = pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
		path = filepath.Join(dir, "client.pem")
	} else {
		data, _ = json.Marshal(map[string]any{"keys": []any{map[string]string{
			"kty": "EC", "crv": "P-384", "kid": "ehrport-key-1", "x": enc(pub[1:49]), "y": enc(pub[49:]), "d": enc(d)}}})
	}
	if err := os.WriteFile(path, data, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil {
		t.Fatal(err)
	}
	return path, enc(d)
}

// TestExportSMARTBackendServices runs `ehrport export --from https://…`
// with SMART Backend Services end to end through Main: discovery, the
// token, files downloaded with it, the server's error and deleted files
// exported, verify --deep and restore passing; then the failure paths
// with their exit codes. No captured output may hold the key, the access
// token or the client assertion.
func TestExportSMARTBackendServices(t *testing.T) {
	t.Setenv("EHRPORT_PASSPHRASE", "unit passphrase")
	t.Setenv("EHRPORT_BULK_TOKEN", "")
	tmp := t.TempDir()
	keys := filepath.Join(tmp, "k")
	initTestKeys(t, keys)
	keyFile, secretD := writeSMARTKey(t, tmp, false, 0o600)
	srv := newSMARTServer(t, "ehrport-test")
	var captured bytes.Buffer
	run := func(args ...string) (int, string) {
		var out bytes.Buffer
		code := Main(context.Background(), append([]string{"ehrport", "--log-level", "debug"}, args...), &out, &out)
		captured.Write(out.Bytes())
		return code, out.String()
	}
	smart := []string{"--smart-client-id", "ehrport-test", "--smart-key", keyFile}
	store := filepath.Join(tmp, "s")

	code, out := run(append([]string{"export", "--from", srv.URL + "/fhir", "--to", store, "--keys", keys}, smart...)...)
	if code != ExitOK {
		t.Fatalf("export: exit %d\n%s", code, out)
	}
	for _, want := range []string{"Exported 2 resources", "server-error 1", "from the server: 1 error files (1 OperationOutcomes: 1 error), 1 deleted files (1 Bundles, 1 deleted resources), in _server/",
		"Condition/c7 could not be exported"} {
		if !strings.Contains(out, want) {
			t.Errorf("export output lacks %q:\n%s", want, out)
		}
	}
	if len(srv.seen) != 3 || strings.Count(strings.Join(srv.seen, " "), "Bearer planted-access-token-") != 3 {
		t.Errorf("file downloads carried %q", srv.seen)
	}
	if code, out := run("verify", "--at", store, "--keys", keys, "--deep"); code != ExitOK {
		t.Fatalf("verify --deep: exit %d\n%s", code, out)
	}
	restored := filepath.Join(tmp, "r")
	if code, out := run("restore", "--from", store, "--keys", keys, "--to", restored); code != ExitOK {
		t.Fatalf("restore: exit %d\n%s", code, out)
	}
	if b, err := os.ReadFile(filepath.Join(restored, "_server", "deleted", "Bundle.000.ndjson")); err != nil || !bytes.Contains(b, []byte("Patient/p0")) {
		t.Fatalf("restored deleted file: %q %v", b, err)
	}

	// --json counts the server's files.
	code, out = run(append([]string{"--json", "export", "--from", srv.URL + "/fhir", "--to", filepath.Join(tmp, "s-json"), "--keys", keys}, smart...)...)
	var sum struct {
		Findings map[string]int64 `json:"findings"`
		Server   struct {
			ErrorFiles, DeletedFiles int
			Outcomes                 int64
			Deleted                  int64 `json:"deletedResources"`
		} `json:"server"`
	}
	if i := strings.Index(out, "{\n"); code != ExitOK || i < 0 || json.Unmarshal([]byte(out[i:]), &sum) != nil ||
		sum.Server.ErrorFiles != 1 || sum.Server.Outcomes != 1 || sum.Server.DeletedFiles != 1 || sum.Server.Deleted != 1 || sum.Findings["server-error"] != 1 {
		t.Fatalf("--json: exit %d, %+v\n%s", code, sum, out)
	}

	loose, _ := writeSMARTKey(t, t.TempDir(), false, 0o644)
	pemKey, _ := writeSMARTKey(t, t.TempDir(), true, 0o600)
	fails := []struct {
		name  string
		setup func()
		args  []string
		code  int
		want  string
	}{
		{name: "key readable by others", args: []string{"--smart-client-id", "ehrport-test", "--smart-key", loose}, code: ExitCrypto, want: "chmod 600"},
		{name: "PEM without kid", args: []string{"--smart-client-id", "ehrport-test", "--smart-key", pemKey}, code: ExitUsage, want: "--smart-kid"},
		{name: "no client id", args: []string{"--smart-key", keyFile}, code: ExitUsage, want: "--smart-client-id"},
		{name: "invalid_client", setup: func() { srv.refuse = true }, args: smart, code: ExitStorage, want: "HTTP 400: invalid_client unknown key"},
		{name: "static token and SMART", setup: func() { t.Setenv("EHRPORT_BULK_TOKEN", "planted-static-token") }, args: smart, code: ExitUsage, want: "use one of them"},
		{name: "wrong static token", setup: func() { t.Setenv("EHRPORT_BULK_TOKEN", "planted-static-token") }, code: ExitStorage, want: "HTTP 401"},
		{name: "token for another host", setup: func() {
			srv.fileHost = strings.Replace(strings.TrimPrefix(srv.URL, "http://"), "127.0.0.1", "localhost", 1)
		},
			args: smart, code: ExitStorage, want: "hint: if localhost:"},
	}
	for i, tc := range fails {
		t.Run(tc.name, func(t *testing.T) {
			srv.mu.Lock()
			srv.refuse, srv.fileHost = false, ""
			srv.mu.Unlock()
			t.Setenv("EHRPORT_BULK_TOKEN", "")
			if tc.setup != nil {
				srv.mu.Lock()
				tc.setup()
				srv.mu.Unlock()
			}
			code, out := run(append([]string{"export", "--from", srv.URL + "/fhir", "--to", filepath.Join(tmp, fmt.Sprint("f", i)), "--keys", keys}, tc.args...)...)
			t.Log(out)
			if code != tc.code || !strings.Contains(out, tc.want) {
				t.Fatalf("exit %d (want %d), output lacks %q:\n%s", code, tc.code, tc.want, out)
			}
		})
	}

	all := captured.String()
	for _, secret := range append([]string{secretD, "planted-static-token", "eyJ", "-----BEGIN"}, srv.issued...) {
		if strings.Contains(all, secret) {
			t.Errorf("captured output holds secret material %q", secret)
		}
	}
	if !strings.Contains(all, "event=") {
		t.Error("debug log captured nothing: the secret check proves little")
	}
}
