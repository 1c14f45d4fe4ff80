package cli

import (
	"context"
	"crypto/tls"
	"errors"
	"io/fs"
	"syscall"

	"github.com/ehrport/ehrport/cmd/internal/fhirload"
	ehrcrypto "github.com/ehrport/ehrport/crypto"
	"github.com/ehrport/ehrport/fhir"
	"github.com/ehrport/ehrport/fhir/bulk"
	"github.com/ehrport/ehrport/storage"
)

// Exit codes, documented in docs/exit-codes.md. This file is the only place
// that turns errors into them.
const (
	ExitOK          = 0   // everything ran and everything checked out
	ExitFindings    = 1   // checks ran and found problems (also: unexpected failures)
	ExitUsage       = 2   // usage or bad input: flags, references, config, FHIR input
	ExitCrypto      = 3   // key or crypto failure: corrupt, no matching key, policy
	ExitStorage     = 4   // storage or network failure
	ExitInterrupted = 130 // interrupted by Ctrl-C or SIGTERM
)

var (
	// ErrUsage marks a command line that cannot be run as written.
	ErrUsage = errors.New("usage")
	// ErrFindings is returned by commands whose checks ran to the end and
	// found problems; the findings themselves were already printed.
	ErrFindings = errors.New("checks found problems")
)

// ExitCode maps an error returned by a command to the documented exit code.
// ctx is the command's context: a cancellation counts as an interruption
// only if it came from there (a signal), not from a server's timeout.
func ExitCode(ctx context.Context, err error) int {
	var storeErr *storage.Error
	var pathErr *fs.PathError
	var bulkErr *bulk.ServerError
	var certErr *tls.CertificateVerificationError
	switch {
	case err == nil:
		return ExitOK
	case ctx.Err() != nil && (errors.Is(err, context.Canceled) || errors.Is(err, ctx.Err())):
		return ExitInterrupted
	case errors.Is(err, ErrUsage),
		errors.Is(err, storage.ErrBadRef),
		errors.Is(err, storage.ErrBadConfig),
		errors.Is(err, fhir.ErrBadInput),
		errors.Is(err, fhirload.ErrBadURL),
		errors.Is(err, fhirload.ErrNotFHIR):
		return ExitUsage
	case errors.Is(err, ehrcrypto.ErrCorrupt),
		errors.Is(err, ehrcrypto.ErrNoMatchingKey),
		errors.Is(err, ehrcrypto.ErrPolicy):
		return ExitCrypto
	case errors.As(err, &storeErr),
		errors.Is(err, fhirload.ErrUnavailable), // restore --to-fhir: server down or failing, token refused
		errors.Is(err, fhirload.ErrUnauthorized),
		errors.As(err, &pathErr),
		// The FHIR server of export --from https://…: credentials refused,
		// export failed or expired, retries or time exhausted.
		errors.Is(err, bulk.ErrUnauthorized),
		errors.Is(err, bulk.ErrExportFailed),
		errors.Is(err, bulk.ErrExpired),
		errors.Is(err, bulk.ErrLimit),
		errors.As(err, &bulkErr),
		errors.As(err, &certErr), // a FHIR server's certificate (a store's is a storage.Error)
		errors.Is(err, syscall.ENOSPC),
		errors.Is(err, syscall.EROFS):
		return ExitStorage
	}
	return ExitFindings
}

// hint returns a line telling the user what to do, or "".
func hint(err error) string {
	var certErr *tls.CertificateVerificationError
	var storeErr *storage.Error
	if errors.As(err, &certErr) && !errors.As(err, &storeErr) {
		return "the FHIR server's certificate is not trusted: if your organisation's CA issued it, give that CA's certificate with --fhir-ca-cert FILE (PEM) or EHRPORT_FHIR_CA_CERT; never turn verification off"
	}
	switch {
	case errors.Is(err, ehrcrypto.ErrCorrupt):
		return "the file was changed, truncated or bound to another object: do not trust it; fetch it again from a good copy"
	case errors.Is(err, ehrcrypto.ErrNoMatchingKey):
		return "none of the keys given can open this: check --keys, and that the key is not disabled (ehrport keys list)"
	case errors.Is(err, ehrcrypto.ErrPolicy):
		return "local policy refused this: see docs/format-v1.md and docs/keys.md"
	case errors.Is(err, fhirload.ErrUnavailable):
		return "check that the FHIR server is up and that the URL is its FHIR base (its /metadata answers), then rerun: PUT replaces what was already loaded"
	case errors.Is(err, fhirload.ErrUnauthorized):
		return "give a bearer token the FHIR server accepts in EHRPORT_FHIR_TOKEN"
	case errors.Is(err, fhirload.ErrNotFHIR):
		return "give the server's FHIR R4 base URL, the one whose /metadata returns its CapabilityStatement"
	case errors.Is(err, fhirload.ErrCountMismatch):
		return "load into a FHIR server (or tenant) that holds no other resources of these types; fewer at the server than in the export means it lost resources: check its logs"
	case errors.Is(err, fhirload.ErrRefused):
		return "the FHIR server refused this data for the reason above; if it limits the size of a transaction, lower --batch-size"
	}
	var the *bulk.TokenHostError
	switch {
	case errors.As(err, &the):
		return "if " + the.Host + " is the FHIR server's own file host, allow the token there with --token-host " + the.Host
	case errors.Is(err, bulk.ErrUnauthorized):
		return "the FHIR server or its token endpoint refused the credentials: check EHRPORT_BULK_TOKEN, or --smart-client-id, --smart-kid, --smart-scope and that the server holds the public key of --smart-key (docs/export.md)"
	case errors.Is(err, bulk.ErrExpired):
		return "the server no longer has this export: start a new one (without --resume)"
	}
	return storage.Hint(err)
}
