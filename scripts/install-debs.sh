#!/usr/bin/env bash
# Installs the Debian packages whose commands the tests use, when missing:
# strace (the no-plaintext-on-disk watch) and time (/usr/bin/time, peak RSS).
# Usage: bash scripts/install-debs.sh
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

missing=()
command -v strace >/dev/null 2>&1 || missing+=(strace)
[[ -x /usr/bin/time ]] || missing+=(time)
((${#missing[@]})) || exit 0
SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO="sudo"
log "apt-get install -y ${missing[*]}"
if ! $SUDO apt-get install -y "${missing[@]}" >/dev/null 2>&1; then
	log "apt-get update, then retry"
	$SUDO apt-get update >/dev/null
	$SUDO apt-get install -y "${missing[@]}" >/dev/null
fi
