#!/usr/bin/env bash
# Runs govulncheck (pinned in go.mod: go tool govulncheck) on the module, for
# make check and make reliability (issue #8). Three outcomes:
#   clean                  exit 0
#   findings               exit 1, govulncheck's report printed
#   database unreachable   a prominent NOT CHECKED line; exit 0, or exit 1
#                          with VULNCHECK=require
# Anything else (a package that does not load, a timeout) fails: exit 1.
#
# Environment:
#   GOVULNDB           the vulnerability database: a URL (default
#                      https://vuln.go.dev) or file:///path/to/mirror (a
#                      copy in govulncheck's v1 layout: index/db.json,
#                      index/modules.json, ID/<id>.json); a bare absolute
#                      path is taken as file://
#   VULNCHECK=require  an unreachable database fails instead of passing
#   VULNCHECK_TIMEOUT  seconds for the whole scan (default 300)
#   VULNCHECK_SCAN     govulncheck's -scan level (default symbol)
#
# `bash scripts/vulncheck.sh --self-test` proves the three outcomes on
# databases it builds in a temporary folder (one with a made-up entry for a
# module version go.mod pins and a function ehrport calls, one empty, one
# unreachable): each run scans the real module, about a minute in all.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$EHRPORT_ROOT"

GO=${GO:-go}

# vulncheck: one scan with the environment above; prints the outcome and
# returns the exit status described at the top.
vulncheck() {
	local db="${GOVULNDB:-https://vuln.go.dev}" secs="${VULNCHECK_TIMEOUT:-300}" out rc
	[[ "$db" == /* ]] && db="file://$db"
	db="${db%/}"
	if ! db_reachable "$db"; then
		unreachable "$db"
		return
	fi
	out="$(mktemp)"
	rc=0
	log "go tool govulncheck -db $db -scan ${VULNCHECK_SCAN:-symbol} ./... (timeout ${secs}s)"
	timeout "$secs" "$GO" tool govulncheck -db "$db" -scan "${VULNCHECK_SCAN:-symbol}" ./... >"$out" 2>&1 || rc=$?
	case "$rc" in
	0)
		log "clean: no known vulnerability in the code or its dependencies ($db)"
		rm -f "$out"
		return 0
		;;
	3)
		cat "$out" >&2
		rm -f "$out"
		log "FAILED: govulncheck found known vulnerabilities (above)"
		return 1
		;;
	124)
		tail -n 20 "$out" >&2
		rm -f "$out"
		log "FAILED: govulncheck did not finish within ${secs}s (VULNCHECK_TIMEOUT)"
		return 1
		;;
	esac
	if grep -q 'fetching vulnerabilities' "$out"; then
		# Reachable a moment ago, gone while the scan ran.
		grep 'fetching vulnerabilities' "$out" >&2
		rm -f "$out"
		unreachable "$db"
		return
	fi
	cat "$out" >&2
	rm -f "$out"
	log "FAILED: govulncheck exited $rc"
	return 1
}

# db_reachable DB: the database answers (its index/db endpoint), checked in
# seconds, before govulncheck spends half a minute loading packages to find
# out.
db_reachable() {
	local db="$1"
	case "$db" in
	file://*)
		[[ -f "${db#file://}/index/modules.json" ]]
		;;
	http://* | https://*)
		# Without curl, let govulncheck find out itself.
		command -v curl >/dev/null 2>&1 || return 0
		curl -sSf -o /dev/null --connect-timeout 5 --max-time 15 "$db/index/db.json.gz" 2>/dev/null
		;;
	*)
		log "GOVULNDB=$db: want https://..., file:///path or /path"
		return 1
		;;
	esac
}

unreachable() {
	local msg="NOT CHECKED: vulnerability database unreachable ($1) (set GOVULNDB=file:///path/to/mirror to check offline)"
	printf '\n*** %s ***\n\n' "$msg" >&2
	if [[ "${VULNCHECK:-}" == require ]]; then
		log "FAILED: VULNCHECK=require and the database could not be read"
		return 1
	fi
	return 0
}

# ------------------------------------------------------------ self-test
# fake_db DIR [MODULE VERSION PACKAGE SYMBOL]: a database in govulncheck's
# v1 layout, empty or with one made-up entry affecting MODULE below the
# version after VERSION, at PACKAGE.SYMBOL.
fake_db() {
	local dir="$1" mod="${2:-}" ver="${3:-}" pkg="${4:-}" sym="${5:-}" now id=GO-9999-0001
	now="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
	mkdir -p "$dir/index" "$dir/ID"
	printf '{"modified":"%s"}\n' "$now" >"$dir/index/db.json"
	if [[ -z "$mod" ]]; then
		printf '[]\n' >"$dir/index/modules.json"
		return
	fi
	local fixed="${ver#v}"
	fixed="${fixed%.*}.$((${fixed##*.} + 1))"
	printf '[{"path":"%s","vulns":[{"id":"%s","modified":"%s","fixed":"%s"}]}]\n' "$mod" "$id" "$now" "$fixed" >"$dir/index/modules.json"
	cat >"$dir/ID/$id.json" <<EOF
{"schema_version":"1.3.1","id":"$id","modified":"$now","published":"$now",
 "summary":"ehrport vulncheck self-test: a made-up vulnerability",
 "details":"Not a real vulnerability: scripts/vulncheck.sh --self-test made it up to prove that findings fail the check.",
 "affected":[{"package":{"name":"$mod","ecosystem":"Go"},
   "ranges":[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"$fixed"}]}],
   "ecosystem_specific":{"imports":[{"path":"$pkg","symbols":["$sym"]}]}}],
 "database_specific":{"url":"https://pkg.go.dev/vuln/$id","review_status":"REVIEWED"}}
EOF
}

self_test() {
	local ver rc failed=0
	tmp="$(mktemp -d)"
	trap 'rm -rf "$tmp"' EXIT
	# A module ehrport depends on, at the version go.mod pins, and a function
	# it calls (crypto/keys derives key-encryption keys with argon2.IDKey).
	ver="$("$GO" list -m -f '{{.Version}}' golang.org/x/crypto)"
	grep -rq 'argon2.IDKey' crypto/keys || die "self-test: crypto/keys no longer calls argon2.IDKey; pick another function"
	fake_db "$tmp/vuln" golang.org/x/crypto "$ver" golang.org/x/crypto/argon2 IDKey
	fake_db "$tmp/empty"

	expect() { # NAME WANT_RC GREP ENV...
		local name="$1" want="$2" pat="$3"
		shift 3
		rc=0
		env "$@" bash "${BASH_SOURCE[0]}" >"$tmp/out" 2>&1 || rc=$?
		if [[ "$rc" == "$want" ]] && grep -q -- "$pat" "$tmp/out" && ! grep -q '^panic' "$tmp/out"; then
			log "self-test: $name: exit $rc, as expected"
		else
			failed=1
			tail -n 30 "$tmp/out" >&2
			log "self-test: $name: exit $rc, want $want and output matching '$pat'"
		fi
	}
	expect "findings (made-up entry for golang.org/x/crypto $ver)" 1 'FAILED: govulncheck found known vulnerabilities' GOVULNDB="file://$tmp/vuln"
	expect "clean (empty database)" 0 'clean: no known vulnerability' GOVULNDB="file://$tmp/empty"
	expect "unreachable (a database that does not exist)" 0 'NOT CHECKED: vulnerability database unreachable' GOVULNDB="file://$tmp/none"
	expect "unreachable with VULNCHECK=require" 1 'NOT CHECKED: vulnerability database unreachable' GOVULNDB="file://$tmp/none" VULNCHECK=require
	expect "unreachable over https (a closed local port)" 0 'NOT CHECKED' GOVULNDB="https://127.0.0.1:9"
	return "$failed"
}

case "${1:-}" in
--self-test) self_test ;;
"") vulncheck ;;
*) die "usage: $0 [--self-test]" ;;
esac
