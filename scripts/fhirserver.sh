#!/usr/bin/env bash
# A real FHIR R4 server for the tests: @medplum/fhir-router's REST engine with
# its in-memory repository behind a small Node HTTP server
# (scripts/fhirserver/server.mjs). It loads transaction Bundles (PUT keeps
# ids) and answers searches, including _summary=count; it has no $export.
#
# Usage: bash scripts/fhirserver.sh COMMAND
#   up       install Node.js (Debian) and the pinned npm packages if needed,
#            start the server on a free port of 127.0.0.1, wait until it
#            answers; a no-op when it is already up
#   down     stop the server (its data lives in memory only)
#   status   print whether it is up (exit 0 if up, 3 if not)
#   env      print the path of the env file to source
#
# Everything lives in .cache/fhirserver/: the npm packages (installed with
# 'npm ci' from scripts/fhirserver/package-lock.json, never committed), the
# pid, the port, the log and the env file, which sets
#   EHRPORT_FHIR_URL         the base URL, http://127.0.0.1:PORT/fhir
#   EHRPORT_FHIRSERVER_ROOT  http://127.0.0.1:PORT: ROOT/tenant/NAME/fhir is
#                            a base with a repository of its own per NAME
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SRC="$EHRPORT_ROOT/scripts/fhirserver"
FS="$EHRPORT_CACHE/fhirserver"
APP="$FS/app"
PID_FILE="$FS/server.pid"
PORT_FILE="$FS/port"
LOG_FILE="$FS/server.log"
ENV_FILE="$FS/env"
LOCK="$EHRPORT_CACHE/fhirserver.lock"
TIMEOUT="${EHRPORT_FHIRSERVER_TIMEOUT:-120}" # seconds to load the FHIR definitions and answer
# @medplum/fhir-router 4.5.2 (package.json) wants Node ^20.19 or >=22.12.
NODE_MIN_MAJOR=20
NODE_MIN_MINOR=19

SUDO=""
[[ $(id -u) -eq 0 ]] || SUDO="sudo"

# node_ok: node is installed and recent enough.
node_ok() {
	local v major minor
	command -v node >/dev/null 2>&1 || return 1
	v="$(node --version 2>/dev/null)" || return 1
	v="${v#v}"
	major="${v%%.*}"
	minor="${v#*.}"
	minor="${minor%%.*}"
	((major > NODE_MIN_MAJOR || (major == NODE_MIN_MAJOR && minor >= NODE_MIN_MINOR)))
}

# ensure_node installs Debian's nodejs and npm when they are missing, then
# checks the version (Debian 12 ships Node 18, too old for the pinned
# packages: then this says so instead of failing later).
ensure_node() {
	local missing=()
	command -v node >/dev/null 2>&1 || missing+=(nodejs)
	command -v npm >/dev/null 2>&1 || missing+=(npm)
	if ((${#missing[@]})); then
		log "apt-get install -y ${missing[*]}"
		if ! $SUDO apt-get install -y "${missing[@]}" >/dev/null 2>&1; then
			log "apt-get update, then retry"
			$SUDO apt-get update >/dev/null
			$SUDO apt-get install -y "${missing[@]}" >/dev/null
		fi
	fi
	node_ok || die "Node.js $(node --version 2>/dev/null || echo '(none)') is too old: the pinned @medplum/fhir-router needs Node >= $NODE_MIN_MAJOR.$NODE_MIN_MINOR (install a newer nodejs package, then rerun)"
	require npm
}

# install copies the wrapper into .cache and runs 'npm ci' when the lock file
# changed since the last install.
install() {
	local want have=""
	mkdir -p "$APP"
	want="$(sha256sum "$SRC/package-lock.json" | cut -d' ' -f1)"
	[[ -f "$APP/.installed" ]] && have="$(<"$APP/.installed")"
	if [[ "$want" != "$have" || ! -d "$APP/node_modules/@medplum/fhir-router" ]]; then
		cp "$SRC/package.json" "$SRC/package-lock.json" "$APP/"
		log "npm ci in $APP (@medplum/fhir-router and its definitions, about 100 MB)"
		local t0
		t0=$(now_ms)
		(cd "$APP" && npm ci --no-audit --no-fund --omit=dev --loglevel=error >&2) ||
			die "npm ci failed in $APP: is the npm registry reachable? (npm config get registry)"
		echo "$want" >"$APP/.installed"
		log "npm packages installed in $(since "$t0")"
	fi
	cp "$SRC/server.mjs" "$APP/server.mjs"
}

# alive PID: running, and not a zombie waiting for its parent.
alive() {
	local st
	st="$(ps -o stat= -p "$1" 2>/dev/null)" || return 1
	[[ -n "$st" && "$st" != Z* ]]
}

# our_pid prints the server's pid if that process is alive and is node
# running our copy of server.mjs (a recycled pid does not count).
our_pid() {
	local pid
	[[ -f "$PID_FILE" ]] || return 1
	pid="$(<"$PID_FILE")"
	[[ "$pid" =~ ^[0-9]+$ ]] || return 1
	alive "$pid" || return 1
	tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qxF -- "$APP/server.mjs" || return 1
	echo "$pid"
}

ready() {
	local port
	[[ -f "$PORT_FILE" ]] || return 1
	port="$(<"$PORT_FILE")"
	[[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$port/healthz" 2>/dev/null)" == 200 ]]
}

write_env() {
	local port tmp
	port="$(<"$PORT_FILE")"
	tmp="$(mktemp "$ENV_FILE.XXXXXX")"
	{
		echo "# ehrport test FHIR server, written by scripts/fhirserver.sh up."
		echo "export EHRPORT_FHIR_URL=http://127.0.0.1:$port/fhir"
		echo "export EHRPORT_FHIRSERVER_ROOT=http://127.0.0.1:$port"
	} >"$tmp"
	mv -f "$tmp" "$ENV_FILE"
}

up() {
	with_lock "$LOCK"
	if our_pid >/dev/null && ready; then
		write_env
		log "up: $(grep -o 'http://[^ ]*' "$ENV_FILE" | head -n 1)"
		return 0
	fi
	stop
	ensure_node
	install
	local flags=()
	# Node 20 has no global WebSocket unless asked; @medplum/core needs it.
	if ! node -e 'process.exit(typeof WebSocket === "undefined" ? 1 : 0)'; then
		flags+=(--experimental-websocket)
	fi
	rm -f "$PORT_FILE"
	if [[ -s "$LOG_FILE" ]]; then echo >>"$LOG_FILE"; fi
	printf '==== %s start\n' "$(date -u +%FT%TZ)" >>"$LOG_FILE"
	(cd "$APP" && exec setsid node "${flags[@]}" "$APP/server.mjs" --host 127.0.0.1 --port 0 \
		--port-file "$PORT_FILE") </dev/null >>"$LOG_FILE" 2>&1 9>&- &
	echo $! >"$PID_FILE"
	local pid deadline t0
	pid="$(<"$PID_FILE")"
	t0=$(now_ms)
	deadline=$((SECONDS + TIMEOUT))
	until ready; do
		if ! alive "$pid"; then
			tail -n 25 "$LOG_FILE" >&2 || true
			die "the FHIR server exited during start-up (log: $LOG_FILE)"
		fi
		((SECONDS < deadline)) || {
			tail -n 25 "$LOG_FILE" >&2 || true
			die "the FHIR server did not answer within ${TIMEOUT}s (log: $LOG_FILE)"
		}
		sleep 0.2
	done
	write_env
	log "up in $(since "$t0"): http://127.0.0.1:$(<"$PORT_FILE")/fhir (pid $pid, log $LOG_FILE)"
	log "env: $ENV_FILE"
}

# stop: SIGTERM to our server only, up to 10 s, then SIGKILL.
stop() {
	local pid i
	if pid="$(our_pid)"; then
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < 50; i++)); do
			alive "$pid" || break
			sleep 0.2
		done
		if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
		log "stopped (pid $pid)"
	fi
	rm -f "$PID_FILE" "$PORT_FILE" "$ENV_FILE"
}

case "${1:-}" in
up) up ;;
down)
	with_lock "$LOCK"
	stop
	;;
status)
	if pid="$(our_pid)" && ready; then
		echo "fhirserver: up, http://127.0.0.1:$(<"$PORT_FILE")/fhir, pid $pid"
	else
		echo "fhirserver: down"
		exit 3
	fi
	;;
env) echo "$ENV_FILE" ;;
*)
	sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
	exit 2
	;;
esac
