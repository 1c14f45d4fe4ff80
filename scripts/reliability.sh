#!/usr/bin/env bash
# Measures ehrport's reliability and regenerates docs/RELIABILITY.md (issue #8):
#   1. the fault and detection tests (cmd/internal/reliability, build tag
#      integration) against private MinIO and versitygw servers they start
#      and kill themselves; each writes its counts to EHRPORT_RELIABILITY_OUT;
#   2. the bad-input corpus, testdata/bad/ (TestBadInputs in cmd/ehrport);
#   3. every Go fuzz target, for FUZZTIME each (default 10s);
#   4. the security checks, each a named test; a check whose test does not
#      exist yet is written down as not yet measured. The no-plaintext checks
#      (build tag integration) use the shared S3 test bed, started here if it
#      is not up (scripts/testbed.sh up); govulncheck runs through
#      scripts/vulncheck.sh (GOVULNDB=file:///mirror checks offline).
# Environment: EHRPORT_FAULT_ROUNDS (kill loops, default 5), EHRPORT_FAULT_SEED
# (replay), FUZZTIME, RELIABILITY_RACE=1 (also run go test -race ./..., long),
# RELIABILITY_DOC (output, default docs/RELIABILITY.md), RELIABILITY_KEEP=DIR
# (keep the raw figures and logs there).
# The document is written even when something fails, and says what; the exit
# status is 0 only if everything that ran passed.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$EHRPORT_ROOT"

GO=${GO:-go}
fuzztime=${FUZZTIME:-10s}
doc=${RELIABILITY_DOC:-docs/RELIABILITY.md}
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
status=0
start="$(now_ms)"

bash scripts/install-servers.sh

# ------------------------------------------------------------ 1. faults
log "fault and detection tests (rounds: ${EHRPORT_FAULT_ROUNDS:-5})"
fault_result=ok
# TestIntegrationNoPlaintextOnDisk is a security check (section 4).
if ! EHRPORT_RELIABILITY_OUT="$out/faults.jsonl" "$GO" test -count=1 -p 1 -timeout 60m \
	-tags integration -run '^TestIntegration' -skip '^TestIntegrationNoPlaintextOnDisk$' ./cmd/internal/reliability/ >"$out/faults.log" 2>&1; then
	fault_result=FAIL
	status=1
	log "fault tests FAILED:"
	grep -E -- '^(--- FAIL|FAIL|panic)' "$out/faults.log" >&2 || tail -n 30 "$out/faults.log" >&2
fi

# ------------------------------------------------------------ 2. bad inputs
tags=() runenv=()
bad_files=0
if [[ -d testdata/bad ]]; then
	bad_files="$(find testdata/bad -type f ! -name EXPECTED.json | wc -l)"
fi
# has PKG TEST: the test exists. (The list is read whole: with pipefail,
# grep -q stopping early would fail the pipe.)
has() {
	local list
	list="$("$GO" test "${tags[@]}" -list "^$2\$" "$1" 2>/dev/null || true)"
	grep -qx "$2" <<<"$list"
}
if has ./cmd/ehrport/ TestBadInputs; then
	log "bad inputs: $bad_files files in testdata/bad"
	if ! "$GO" test -count=1 -json -run '^TestBadInputs$' ./cmd/ehrport/ >"$out/bad.json" 2>"$out/bad.err"; then
		status=1
		log "bad-input test FAILED"
	fi
else
	log "bad inputs: no TestBadInputs yet (not measured)"
fi

# ------------------------------------------------------------ 3. fuzzing
: >"$out/fuzz.tsv"
for pkg in $("$GO" list ./...); do
	for target in $("$GO" test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true); do
		log "fuzz $pkg $target ($fuzztime)"
		result=pass
		if ! "$GO" test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" "$pkg" >"$out/fuzz.log" 2>&1; then
			result=FAIL
			status=1
			tail -n 20 "$out/fuzz.log" >&2
		fi
		execs="$(grep -oE 'execs: [0-9]+' "$out/fuzz.log" | tail -n 1 | grep -oE '[0-9]+' || echo 0)"
		printf '%s\t%s\t%s\t%s\t%s\n' "${pkg#"$("$GO" list -m)"/}" "$target" "$fuzztime" "$execs" "$result" >>"$out/fuzz.tsv"
	done
done

# ------------------------------------------------------------ 4. security
: >"$out/security.tsv"
# check PKG TEST_REGEX DESCRIPTION: runs the test if it exists (with the
# build tags in the array tags and the variables in the array runenv). For a
# script test (TestScripts/NAME), the txtar file must exist.
check() {
	local pkg="$1" re="$2" what="$3" top="${2%%/*}" result
	top="${top#^}"
	top="${top%\$}"
	if ! has "$pkg" "$top"; then
		result="not yet measured (no test)"
	elif [[ "$top" == TestScripts && ! -f "$pkg/testdata/script/$(basename "${re#*/}" | tr -d '^$').txtar" ]]; then
		result="not yet measured (no script)"
	elif (
		# export, a builtin: the store secrets never stand in an argv.
		if ((${#runenv[@]})); then export "${runenv[@]}"; fi
		exec "$GO" test "${tags[@]}" -count=1 -v -run "$re" "$pkg"
	) >"$out/sec.log" 2>&1; then
		result=pass
		# A pattern that matches nothing passes in go test (a sub-test
		# pattern too, once the parent ran): not here.
		if grep -q 'no tests to run' "$out/sec.log" || { [[ "$re" == */* ]] && ! grep -qE -- '--- PASS: [^ ]+/' "$out/sec.log"; }; then
			result="FAIL (no test matched)"
			status=1
		fi
	else
		result=FAIL
		status=1
		tail -n 20 "$out/sec.log" >&2
	fi
	log "security: $what: $result"
	printf '%s\t%s\t%s\t%s\n' "$what" "$pkg" "$re" "$result" >>"$out/security.tsv"
}
check ./crypto/keys '^TestKeyFilesPrivateWhateverTheUmask$' "key files are created 0600 in a 0700 folder, whatever the umask"
check ./crypto/keys '^TestKeyFileReadableByOthersRefused$' "key files that group or others can read are refused"
check ./crypto/keys '^TestPassphraseNeverStored$' "the passphrase is never stored or echoed"
check ./cmd/ehrport '^TestScripts$/^secrets$' "planted secrets never appear in logs, errors, --json output or reports"
check ./storage '^TestSecretNeverPrints$' "credentials print as [redacted] in every format"
check ./cmd/internal/export '^TestNoPlaintextOnDisk$' "no plaintext in the spool folder or the store after an export (package test)"
# The real command against the shared test bed, watched by inotify, strace
# and a final scan; the negative controls prove the watch catches leaks.
if bash scripts/testbed.sh up >"$out/testbed.log" 2>&1; then
	mapfile -t runenv < <(
		set -a
		# shellcheck source=/dev/null
		. .cache/testbed/env
		env | grep -E '^EHRPORT_(STORE_CLOUD[AB]_|TESTBED)'
	)
fi
tags=(-tags integration)
check ./cmd/internal/reliability '^TestIntegrationNoPlaintextOnDisk$/^export$' "no plaintext on disk during export: watched TMPDIR, HOME/XDG, working and output folders, every file write traced"
check ./cmd/internal/reliability '^TestIntegrationNoPlaintextOnDisk$/^migrate$' "no plaintext on disk during migrate (clouda to cloudb and to a folder), watched the same way"
check ./cmd/internal/reliability '^TestIntegrationNoPlaintextOnDisk$/^negative_controls$' "the no-plaintext watch catches 6 planted leaks (file left, deleted at once, unlinked spool, gzip, output folder, ehrport restore)"
tags=() runenv=()
check ./cmd/ehrport '^TestScripts$/^transport$' "http:// endpoints are refused unless allowed explicitly"
check ./cmd/ehrport '^TestTLSVerifiedAgainstConfiguredCA$' "TLS certificates are verified against the configured CA"
if [[ "${RELIABILITY_RACE:-}" == 1 ]]; then
	if "$GO" test -race -count=1 ./... >"$out/race.log" 2>&1; then race=pass; else race=FAIL status=1; fi
else
	race="not run here (RELIABILITY_RACE=1 runs it; make check always does)"
fi
printf '%s\t%s\t%s\t%s\n' "go test -race passes across the whole suite" "./..." "-race" "$race" >>"$out/security.tsv"
if ! bash scripts/vulncheck.sh >"$out/vuln.log" 2>&1; then
	vuln=FAIL
	status=1
	tail -n 30 "$out/vuln.log" >&2
elif grep -q 'NOT CHECKED' "$out/vuln.log"; then
	vuln="not checked (vulnerability database unreachable; GOVULNDB=file:///path/to/mirror checks offline)"
else
	vuln=pass
fi
printf '%s\t%s\t%s\t%s\n' "govulncheck finds no known vulnerability" "./..." "govulncheck" "$vuln" >>"$out/security.tsv"

# ------------------------------------------------------------ document
dirty=""
if [[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]]; then dirty=" (with uncommitted changes)"; fi
{
	printf 'date\t%s\n' "$(date -u +%Y-%m-%d)"
	printf 'commit\t%s%s\n' "$(git rev-parse --short HEAD)" "$dirty"
	printf 'cpus\t%s\n' "$(nproc)"
	printf 'go\t%s\n' "$("$GO" env GOVERSION)"
	printf 'rounds\t%s\n' "${EHRPORT_FAULT_ROUNDS:-5}"
	printf 'fuzztime\t%s\n' "$fuzztime"
	printf 'fault_result\t%s\n' "$fault_result"
	printf 'bad_files\t%s\n' "$bad_files"
} >"$out/meta.tsv"
"$GO" run ./cmd/internal/reliability/reltable "$out" >"$out/RELIABILITY.md"
mv "$out/RELIABILITY.md" "$doc"
if [[ -n "${RELIABILITY_KEEP:-}" ]]; then
	mkdir -p "$RELIABILITY_KEEP"
	cp -r "$out"/. "$RELIABILITY_KEEP"/
fi
log "wrote $doc in $(since "$start") (status $status)"
exit "$status"
