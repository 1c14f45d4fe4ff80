package cli

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"

	"github.com/urfave/cli/v2"

	ehrcrypto "github.com/ehrport/ehrport/crypto"
	"github.com/ehrport/ehrport/fhir/bulk"
)

// defaultSMARTScope asks for read access to every resource type, in the
// SMART v1 syntax that v2 servers also accept.
const defaultSMARTScope = "system/*.read"

// maxKeyFileBytes bounds what is read as a private key file.
const maxKeyFileBytes = 1 << 20

// bulkAuthFlags are export's FHIR server credentials. Secrets never come
// from the command line: the token from EHRPORT_BULK_TOKEN, the private
// key from a file (its path is not a secret).
func bulkAuthFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "smart-client-id", EnvVars: []string{"EHRPORT_SMART_CLIENT_ID"},
			Usage: "server export: authenticate with SMART Backend Services as client `ID`"},
		&cli.StringFlag{Name: "smart-key", EnvVars: []string{"EHRPORT_SMART_KEY"}, TakesFile: true,
			Usage: "server export: sign the client assertion with the private key in `FILE` (PEM, JWK or JWK Set; RSA ≥ 2048 bits or EC P-384; mode 0600)"},
		&cli.StringFlag{Name: "smart-kid", EnvVars: []string{"EHRPORT_SMART_KID"},
			Usage: "server export: the key id `KID` the server knows the public key by (default: the kid in the JWK)"},
		&cli.StringFlag{Name: "smart-scope", EnvVars: []string{"EHRPORT_SMART_SCOPE"}, Value: defaultSMARTScope,
			Usage: "server export: the `SCOPE` to ask for"},
		&cli.StringFlag{Name: "smart-token-url", EnvVars: []string{"EHRPORT_SMART_TOKEN_URL"},
			Usage: "server export: the token endpoint `URL` (default: token_endpoint of BASE/.well-known/smart-configuration)"},
		&cli.StringSliceFlag{Name: "token-host",
			Usage: "server export: also send the token for files on `HOST` (host or host:port) when the manifest requires a token (repeatable)"},
		fhirCAFlag(),
	}
}

// bulkAuthOptions are the values of bulkAuthFlags.
type bulkAuthOptions struct {
	ClientID, KeyFile, KeyID, Scope, TokenURL string
	TokenHosts                                []string
	CACert                                    string // --fhir-ca-cert
}

func bulkAuthFrom(c *cli.Context) bulkAuthOptions {
	return bulkAuthOptions{ClientID: c.String("smart-client-id"), KeyFile: c.String("smart-key"), KeyID: c.String("smart-kid"),
		Scope: c.String("smart-scope"), TokenURL: c.String("smart-token-url"), TokenHosts: c.StringSlice("token-host"),
		CACert: c.String("fhir-ca-cert")}
}

// smart reports whether SMART Backend Services was asked for.
func (a bulkAuthOptions) smart() bool {
	return a.ClientID != "" || a.KeyFile != "" || a.KeyID != "" || a.TokenURL != ""
}

// tokenSource returns what supplies the bearer token for server, or nil
// for an open server: a static token from EHRPORT_BULK_TOKEN, or SMART
// Backend Services, whose token endpoint is discovered from the server
// unless given. hc does the discovery and the token requests.
func (a bulkAuthOptions) tokenSource(ctx context.Context, server string, hc *http.Client, log func(msg string, args ...any)) (bulk.TokenSource, error) {
	tok := os.Getenv("EHRPORT_BULK_TOKEN")
	switch {
	case tok != "" && a.smart():
		return nil, usagef("EHRPORT_BULK_TOKEN is set and SMART Backend Services is configured (--smart-*): use one of them")
	case tok != "":
		return bulk.StaticToken(tok), nil
	case !a.smart():
		return nil, nil
	case a.ClientID == "" || a.KeyFile == "":
		return nil, usagef("SMART Backend Services needs --smart-client-id ID and --smart-key FILE")
	}
	key, kid, err := readSMARTKey(a.KeyFile, a.KeyID)
	if err != nil {
		return nil, err
	}
	if a.KeyID != "" {
		kid = a.KeyID
	}
	if kid == "" {
		return nil, usagef("--smart-key %s names no key id: give --smart-kid KID, the kid the server registered the public key under", a.KeyFile)
	}
	scope := a.Scope
	if scope == "" {
		scope = defaultSMARTScope
	}
	tokenURL := a.TokenURL
	var algs []string
	if tokenURL == "" {
		sc, err := bulk.DiscoverSMART(ctx, hc, server)
		if err != nil {
			return nil, fmt.Errorf("finding the token endpoint (give --smart-token-url to skip discovery): %w", err)
		}
		tokenURL, algs = sc.TokenEndpoint, sc.SigningAlgs
	}
	src, err := bulk.NewBackendServices(bulk.BackendServicesConfig{TokenURL: tokenURL, ClientID: a.ClientID, Scope: scope,
		Key: key, KeyID: kid, HTTPClient: hc})
	if err != nil {
		return nil, usagef("%v", err)
	}
	if len(algs) > 0 && !slices.Contains(algs, src.Alg()) {
		log("the server's smart-configuration does not list the key's signing algorithm; trying anyway", "alg", src.Alg(), "supported", algs)
	}
	// Ask for the first token now, so refused credentials fail before the
	// keys are unlocked. Other failures (a 503, the network) are left to
	// the client's retries; the token is cached for the kick-off.
	if _, err := src.Token(ctx); errors.Is(err, bulk.ErrUnauthorized) {
		return nil, fmt.Errorf("SMART Backend Services as %q: %w", a.ClientID, err)
	}
	return src, nil
}

// readSMARTKey loads the private key, refusing a file that group or
// others can read, as the key directories do. Errors never quote the
// file's content.
func readSMARTKey(path, kid string) (crypto.Signer, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, "", usagef("--smart-key: %v", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, "", usagef("--smart-key: %v", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, "", usagef("--smart-key %s is not a regular file", path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, "", fmt.Errorf("%w: key file %s has mode %04o: group or others can read it; run chmod 600 %s", ehrcrypto.ErrPolicy, path, fi.Mode().Perm(), path)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFileBytes+1))
	if err != nil {
		return nil, "", usagef("--smart-key: %v", err)
	}
	if len(data) > maxKeyFileBytes {
		return nil, "", usagef("--smart-key %s is larger than %d bytes: not a key file", path, maxKeyFileBytes)
	}
	k, fileKID, err := bulk.ParsePrivateKey(data, kid)
	clear(data)
	if err != nil {
		return nil, "", usagef("--smart-key %s: %v", path, err)
	}
	return k, fileKID, nil
}
