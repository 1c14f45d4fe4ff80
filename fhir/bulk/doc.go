// Package bulk is a client for the FHIR Bulk Data Access `$export`
// operation (IG STU3 3.0.0, with the STU4 manifest changes).
//
// An export has four steps, and each one is a method here:
//
//  1. Kick-off. [Client.Kickoff] sends the `$export` request at system,
//     Patient or Group level (GET by default, POST of a Parameters resource
//     when [Options.PostKickoff] is set) and returns a [State] holding the
//     status URL from `Content-Location`. A 429 ("an export is already
//     running") is backed off and retried.
//  2. Polling. [Client.Wait] polls the status URL, honouring Retry-After
//     (seconds or an HTTP date) up to [Options.MaxRetryAfter], backing off on
//     429 and 5xx, and polling again when the server answers an error status
//     whose OperationOutcome says `transient`. It returns the [Manifest],
//     following `link` next for partial manifests.
//  3. Download. [Client.Open] streams one output file, decompressing gzip,
//     and counts its non-blank lines against the manifest's `count`, which
//     the spec calls a hint: a mismatch is a [CountResult], not an error,
//     unless the caller makes it one. [Client.Download] runs every pending
//     file of a manifest through a [Sink], records each finished file in the
//     [State], and calls a checkpoint so the caller can persist it.
//  4. Clean-up. [Client.Delete] sends DELETE to the status URL so the server
//     can free the files.
//
// # Resuming
//
// The [State] is plain JSON written and read by the caller ([State.Save],
// [LoadState]). It holds the status URL, the kick-off request and the files
// already stored with their line counts, and never a token. [Client.Resume]
// picks an interrupted export up from it: it polls the status URL again
// (the server keeps the job until it expires or is deleted), and
// [Client.Download] skips files the State marks as done. Note that the
// status URL and, when `requiresAccessToken` is false, the file URLs are
// capability URLs: whoever holds them can fetch the data, so the State file
// deserves the same care (mode 0600) as the export itself.
//
// # Tokens
//
// A [TokenSource] supplies bearer tokens: [StaticToken] for a token obtained
// elsewhere, or [BackendServices] for SMART Backend Services (a JWT client
// assertion signed with RS384 or ES384, exchanged for a token with the
// client_credentials grant, cached, and refreshed before expiry and after a
// 401). The token goes to the kick-off, status and DELETE requests, and to
// file downloads only when the manifest says `requiresAccessToken: true`
// and the file is on the FHIR server's origin (scheme, host and port) or a
// host in [Options.TokenHosts]; a file elsewhere fails with a
// [*TokenHostError] before any request. The token is never sent to
// capability URLs, never sent over plain HTTP except to loopback
// addresses, never carried across an https-to-http redirect, and never
// appears in an error, an [Event] or the State. The client assertion goes
// only to the configured token endpoint (https, or http to loopback), and
// a redirect from it is not followed. A token endpoint's 5xx or 429 is
// retried like any request; its refusal (400 `invalid_client`, 401) is
// not, and wraps [ErrUnauthorized]. [DiscoverSMART] finds the token
// endpoint from the server's `.well-known/smart-configuration`;
// [ParsePrivateKey] loads the key from a JWK, a JWK Set or PEM.
//
// # Time
//
// Every wait goes through an injectable [Clock], and every loop has a cap:
// MaxWait (overall, default 24 h), MaxPolls, MaxRetries per request,
// MaxRetryAfter (default 5 min), MaxManifestBytes, MaxManifestPages. Real
// network time is bounded by RequestTimeout and, for downloads, by
// StallTimeout. Server text (diagnostics, X-Progress) is stripped of
// control characters before it reaches an error or an Event.
//
// # Errors
//
// Failures wrap one of the sentinels [ErrExportFailed], [ErrExpired],
// [ErrUnauthorized] or [ErrLimit], or fhir.ErrBadInput for a manifest or
// file that is not what the spec says. A server's own words reach the
// caller through [*ServerError], which carries the HTTP status and the
// OperationOutcome's diagnostics.
//
// The package does no encryption and no storage: the IG defines none, and
// the caller's [Sink] decides where the bytes go.
package bulk
