#!/usr/bin/env bash
# Installs the peer tools that scripts/bench-migrate.sh compares ehrport with,
# each only when it is missing, and prints every peer's version.
#   rclone, age   Debian packages (apt-get; /usr/bin)
#   mc            go install, pinned pseudo-version      -> .cache/bin/mc
#   s5cmd         built from a temporary module, pinned  -> .cache/bin/s5cmd
#
# Usage: bash scripts/install-peers.sh
# Env:   EHRPORT_MC_VERSION, EHRPORT_S5CMD_VERSION override the pins.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# mc publishes no semver tags on the module proxy; this pseudo-version is the
# proxy's @latest in November 2026 (a March 2025 commit).
MC_VERSION="${EHRPORT_MC_VERSION:-v0.0.0-20250313080218-cf909e1063a9}"
S5CMD_VERSION="${EHRPORT_S5CMD_VERSION:-v2.3.0}"

mkdir -p "$EHRPORT_BIN"
export PATH="$EHRPORT_BIN:$PATH"
SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO="sudo"

# apt_install PKG...: installs missing Debian packages; runs 'apt-get update'
# once and retries when the first try fails (a fresh machine has no lists).
apt_install() {
	local missing=() p
	for p in "$@"; do command -v "$p" >/dev/null 2>&1 || missing+=("$p"); done
	((${#missing[@]})) || return 0
	log "apt-get install -y ${missing[*]}"
	if ! $SUDO apt-get install -y "${missing[@]}" >/dev/null 2>&1; then
		log "apt-get update, then retry"
		$SUDO apt-get update >/dev/null
		$SUDO apt-get install -y "${missing[@]}" >/dev/null
	fi
}

# 'time' is /usr/bin/time (peak RSS); not a command name we can test for.
[[ -x /usr/bin/time ]] || apt_install time
apt_install rclone age
require go rclone age

# A temporary folder outside the module, so 'go install'/'go get' do not
# touch ehrport's go.mod.
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

if [[ ! -x "$EHRPORT_BIN/mc" ]]; then
	log "go install github.com/minio/mc@$MC_VERSION -> $EHRPORT_BIN/mc (a few minutes cold)"
	t0=$(now_ms)
	(cd "$TMP" && GOBIN="$EHRPORT_BIN" GOFLAGS=-mod=mod go install "github.com/minio/mc@$MC_VERSION")
	log "mc built in $(since "$t0")"
fi

if [[ ! -x "$EHRPORT_BIN/s5cmd" ]]; then
	# 'go install github.com/peak/s5cmd/v2@v2.3.0' fails on the proxy's
	# version list; a temporary module that requires the version works.
	log "building github.com/peak/s5cmd/v2@$S5CMD_VERSION in a temporary module -> $EHRPORT_BIN/s5cmd"
	t0=$(now_ms)
	mkdir -p "$TMP/s5cmd"
	(
		cd "$TMP/s5cmd"
		go mod init tmp >/dev/null 2>&1
		go get "github.com/peak/s5cmd/v2@$S5CMD_VERSION" >/dev/null 2>&1
		go build -o "$EHRPORT_BIN/s5cmd" github.com/peak/s5cmd/v2
	)
	log "s5cmd built in $(since "$t0")"
fi

# Versions, one line each, on stdout.
echo "rclone: $(rclone version 2>/dev/null | head -n 1) ($(command -v rclone))"
echo "age:    $(age --version 2>/dev/null) ($(command -v age))"
echo "mc:     $(mc --version 2>/dev/null | head -n 1) [module $MC_VERSION] ($EHRPORT_BIN/mc)"
echo "s5cmd:  $(s5cmd version 2>/dev/null | head -n 1) [module $S5CMD_VERSION] ($EHRPORT_BIN/s5cmd)"
