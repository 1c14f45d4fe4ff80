#!/usr/bin/env bash
# Installs the pinned S3 test servers (versitygw, MinIO) into .cache/bin/ of
# the repo, from the Go module proxy. A binary that is already there and
# built from the pinned module version is kept, so a warm run takes a second.
#
# Usage: bash scripts/install-servers.sh
# Cold, on 2 cores: versitygw about 3.5 min, MinIO about 7 min.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

require go flock

# installed_version BIN MODULE prints the version of MODULE that BIN was built
# from, or nothing. It reads the build info Go embeds, so a truncated or
# foreign binary counts as missing.
installed_version() {
	[[ -x "$1" ]] || return 0
	go version -m "$1" 2>/dev/null | awk -v m="$2" '$1 == "mod" && $2 == m { print $3 }' || true
}

# goflags_without_mod prints GOFLAGS minus any -mod=... flag: 'go install
# pkg@version' refuses -mod=mod/vendor, and a developer may have one set.
goflags_without_mod() {
	local f out=()
	for f in ${GOFLAGS:-}; do
		[[ "$f" == -mod=* ]] || out+=("$f")
	done
	printf '%s' "${out[*]:-}"
}

install_one() {
	local name="$1" pkg="$2" version="$3" module="$4"
	local target="$EHRPORT_BIN/$name" have
	have="$(installed_version "$target" "$module")"
	if [[ "$have" == "$version" ]]; then
		log "$name $version: already installed"
		return 0
	fi
	if [[ -n "$have" ]]; then
		log "$name: have $have, want $version: reinstalling"
	fi

	# Build outside the repo (no go.mod of ours is read or touched) into a
	# staging folder next to the target, then rename: an interrupted install
	# never leaves a half-written binary under the final name.
	local work stage logf start
	work="$(mktemp -d)"
	stage="$(mktemp -d "$EHRPORT_BIN/.stage-$name.XXXXXX")"
	logf="$EHRPORT_BIN/install-$name.log"
	start="$(now_ms)"
	log "$name $version: go install $pkg@$version (log: $logf)"
	if ! (
		cd "$work" &&
			GOBIN="$stage" GOWORK=off GOFLAGS="$(goflags_without_mod)" \
				go install "$pkg@$version"
	) >"$logf" 2>&1; then
		tail -n 30 "$logf" >&2 || true
		rm -rf "$work" "$stage"
		die "$name: go install failed after $(since "$start") (full log: $logf)"
	fi
	mv -f "$stage/$name" "$target"
	rm -rf "$work" "$stage"
	log "$name $version: installed in $(since "$start")"
}

main() {
	local start spec
	start="$(now_ms)"
	mkdir -p "$EHRPORT_BIN"
	# One installer at a time: two concurrent 'go install' of MinIO would
	# double a 7-minute build on 2 cores.
	with_lock "$EHRPORT_BIN/.install.lock"
	for spec in "${EHRPORT_SERVERS[@]}"; do
		# shellcheck disable=SC2086 # spec is four space-separated words
		install_one $spec
	done
	log "servers ready in $EHRPORT_BIN ($(since "$start"))"
}

main "$@"
