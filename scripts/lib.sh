# shellcheck shell=bash disable=SC2034
# Helpers shared by scripts/install-servers.sh and scripts/testbed.sh.
# Source it; it defines functions and paths, and runs nothing else.

# The repo root comes from this file's own location, so the scripts work from
# any working directory.
EHRPORT_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
EHRPORT_CACHE="$EHRPORT_ROOT/.cache"
EHRPORT_BIN="$EHRPORT_CACHE/bin"

# Pinned test servers: name, Go package, version, module that carries the version.
# install-servers.sh installs them; testbed.sh runs them from $EHRPORT_BIN.
EHRPORT_SERVERS=(
	"versitygw github.com/versity/versitygw/cmd/versitygw v1.8.0 github.com/versity/versitygw"
	"minio github.com/minio/minio v0.0.0-20260212201848-7aac2a2c5b7c github.com/minio/minio"
)

# Messages go to stderr, so stdout stays clean for output meant to be captured
# (for example: source "$(bash scripts/testbed.sh env)").
_ehr_tag="${0##*/}"
_ehr_tag="${_ehr_tag%.sh}"
log() { printf '%s: %s\n' "$_ehr_tag" "$*" >&2; }
die() {
	printf '%s: error: %s\n' "$_ehr_tag" "$*" >&2
	exit 1
}

# now_ms prints a monotonic-enough wall clock in milliseconds (for timings).
now_ms() { date +%s%3N; }

# since START_MS prints the time elapsed since START_MS as "12.3s".
since() {
	local ms=$(($(now_ms) - $1))
	printf '%d.%ds' $((ms / 1000)) $((ms % 1000 / 100))
}

# build_ehrport OUT builds the ehrport binary, for `make build` and for the
# benchmarks alike, so that they time the binary a release ships: static,
# and without urfave/cli's man and Markdown generators (never used). The
# process then starts in about 45 ms instead of 60 (no dynamic loader or
# glibc threads, no blackfriday init), 3% of a 1 GiB encrypt. $GO: the go
# command (default go).
build_ehrport() {
	(cd "$EHRPORT_ROOT" && CGO_ENABLED=0 "${GO:-go}" build -tags urfave_cli_no_docs -o "$1" ./cmd/ehrport)
}

# require CMD... fails early, with the apt package hint, when a tool is missing.
require() {
	local c
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 || die "'$c' is not installed (Debian: apt-get install -y $c)"
	done
}

# with_lock FILE: takes an exclusive lock on FILE for the rest of the script,
# so two concurrent runs (two test packages calling 'up') do not race. The lock
# lives on fd 9: anything started in the background must close it (9>&-) or it
# would hold the lock after the script exits.
with_lock() {
	mkdir -p "$(dirname "$1")"
	exec 9>"$1"
	if ! flock -n 9; then
		log "waiting for another run holding $1"
		flock -w "${2:-1200}" 9 || die "timed out waiting for lock $1"
	fi
}
