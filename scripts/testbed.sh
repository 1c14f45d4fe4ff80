#!/usr/bin/env bash
# The S3 test bed: two real, different S3 servers on loopback over TLS.
#   cloud A = MinIO, cloud B = versitygw (posix backend, versioning on).
#
# Usage: bash scripts/testbed.sh COMMAND
#   up                 install the servers if needed, start both, wait until
#                      they answer; a no-op when the test bed is already healthy
#   down               stop both servers, delete their data, certificates, keys
#   status             print whether each cloud is up (exit 0 if both, else 3)
#   env                print the path of the env file to source
#   restart CLOUD      restart clouda or cloudb on the same port, with the
#                      same data and keys (after a kill -9, for instance)
#   stop CLOUD         stop clouda or cloudb only (a cloud outage)
#
# Everything lives in .cache/testbed/ of the repo. The env file holds the
# endpoints, keys and CA of both clouds; it is mode 0600 and secrets are never
# printed nor passed on a command line.
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Keys, data, logs: readable by us only.
umask 077

SELF="$EHRPORT_ROOT/scripts/testbed.sh"
TB="$EHRPORT_CACHE/testbed"
TLS="$TB/tls"
ENV_FILE="$TB/env"
STATE="$TB/state" # ports and keys; restart reads it
LOCK="$EHRPORT_CACHE/testbed.lock"
TIMEOUT="${EHRPORT_TESTBED_TIMEOUT:-90}" # seconds a server may take to answer
REGION=us-east-1

# ---------------------------------------------------------------- processes

# Cloud names map to servers: clouda = minio, cloudb = versitygw.
server_of() {
	case "$1" in
	clouda | a | minio) echo minio ;;
	cloudb | b | versitygw) echo versitygw ;;
	*) die "unknown cloud '$1' (want clouda or cloudb)" ;;
	esac
}
pid_file() { echo "$TB/$1.pid"; }
log_file() { echo "$TB/$1.log"; }

# alive PID: the process exists and is not a zombie (a server this script
# killed is its child and stays a zombie until the script exits).
alive() {
	local stat
	stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
	stat="${stat##*) }"
	[[ "${stat:0:1}" != Z ]]
}

# our_pid NAME prints the pid from NAME's pid file if that process is alive
# and is our server binary running on our test bed folder; a recycled pid
# that now belongs to something else does not count.
our_pid() {
	local pf pid cmdline
	pf="$(pid_file "$1")"
	[[ -f "$pf" ]] || return 1
	pid="$(<"$pf")"
	[[ "$pid" =~ ^[0-9]+$ ]] || return 1
	alive "$pid" || return 1
	cmdline="$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
	[[ "$(head -n 1 <<<"$cmdline")" == "$EHRPORT_BIN/$1" ]] || return 1
	grep -qF -- "$TB/" <<<"$cmdline" || return 1
	echo "$pid"
}

# ready PORT: an anonymous request answered 403 means the S3 API is serving,
# with our certificate.
ready() {
	local code
	code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
		--cacert "$TLS/ca.pem" "https://127.0.0.1:$1/" 2>/dev/null)" || true
	[[ "$code" == 403 ]]
}

# show_log NAME prints the tail of NAME's log to stderr, keys masked.
show_log() {
	local lf
	lf="$(log_file "$1")"
	[[ -f "$lf" ]] || return 0
	echo "---- last lines of $lf ----" >&2
	tail -n 25 "$lf" | mask >&2 || true
	echo "----" >&2
}
mask() {
	local s k
	s="$(cat)"
	for k in "${A_AK:-}" "${A_SK:-}" "${B_AK:-}" "${B_SK:-}"; do
		[[ -n "$k" ]] && s="${s//"$k"/***}"
	done
	printf '%s\n' "$s"
}

# launch NAME starts one server detached (own session, no terminal, output
# to its log) so it outlives this script and the caller's shell. Keys go in
# through the environment, never argv, so 'ps' shows no secret. fd 9 (the
# lock) is closed for the child.
launch() {
	local name="$1" lf pid
	lf="$(log_file "$name")"
	if [[ -s "$lf" ]]; then echo >>"$lf"; fi
	printf '==== %s start %s\n' "$(date -u +%FT%TZ)" "$name" >>"$lf"
	case "$name" in
	minio)
		mkdir -p "$TB/clouda/data"
		(
			export MINIO_ROOT_USER="$A_AK" MINIO_ROOT_PASSWORD="$A_SK"
			export MINIO_UPDATE=off MINIO_SITE_REGION="$REGION"
			exec setsid "$EHRPORT_BIN/minio" server \
				--address "127.0.0.1:$A_PORT" \
				--console-address "127.0.0.1:$A_CONSOLE_PORT" \
				--certs-dir "$TLS/minio" --quiet --anonymous \
				"$TB/clouda/data"
		) </dev/null >>"$lf" 2>&1 9>&- &
		;;
	versitygw)
		mkdir -p "$TB/cloudb/data" "$TB/cloudb/versions"
		(
			# versitygw prefers the *_ID names: drop any inherited ones.
			unset ROOT_ACCESS_KEY_ID ROOT_SECRET_ACCESS_KEY
			export ROOT_ACCESS_KEY="$B_AK" ROOT_SECRET_KEY="$B_SK"
			# --keep-alive: without it every response closes the connection
			# and each request pays a TLS handshake.
			exec setsid "$EHRPORT_BIN/versitygw" \
				--port "127.0.0.1:$B_PORT" \
				--cert "$TLS/server.pem" --key "$TLS/server.key" \
				--region "$REGION" --keep-alive --quiet \
				posix --versioning-dir "$TB/cloudb/versions" "$TB/cloudb/data"
		) </dev/null >>"$lf" 2>&1 9>&- &
		;;
	esac
	# A background job of a script does not lead a process group, so setsid
	# does not fork and $! is the server itself (our_pid checks it anyway).
	pid=$!
	echo "$pid" >"$(pid_file "$name")"
}

port_of() { if [[ "$1" == minio ]]; then echo "$A_PORT"; else echo "$B_PORT"; fi; }

# last_start NAME prints NAME's log since its latest start marker.
last_start() {
	awk '/^==== / { buf = "" } { buf = buf $0 "\n" } END { printf "%s", buf }' \
		"$(log_file "$1")" 2>/dev/null || true
}

# wait_ready NAME: until the server answers, it dies, or TIMEOUT passes.
# Returns 2 when the port was taken (the caller may retry on other ports).
wait_ready() {
	local name="$1" port pid deadline
	port="$(port_of "$name")"
	pid="$(<"$(pid_file "$name")")"
	deadline=$((SECONDS + TIMEOUT))
	while ((SECONDS < deadline)); do
		if ready "$port"; then return 0; fi
		if ! alive "$pid"; then
			if last_start "$name" | grep -Eqi 'address already in use|port is already in use'; then
				log "$name: port $port was taken"
				return 2
			fi
			log "$name exited during start-up"
			show_log "$name"
			return 1
		fi
		sleep 0.2
	done
	log "$name did not answer on https://127.0.0.1:$port/ within ${TIMEOUT}s"
	show_log "$name"
	return 1
}

# stop NAME: SIGTERM, up to 15 s to exit, then SIGKILL. Only a pid that is
# verifiably our server is signalled.
stop() {
	local name="$1" pid i
	if pid="$(our_pid "$name")"; then
		kill -TERM "$pid" 2>/dev/null || true
		for ((i = 0; i < 75; i++)); do
			alive "$pid" || break
			sleep 0.2
		done
		if alive "$pid"; then
			log "$name (pid $pid) ignored SIGTERM: killing"
			kill -KILL "$pid" 2>/dev/null || true
			for ((i = 0; i < 25; i++)); do
				alive "$pid" || break
				sleep 0.2
			done
		fi
		log "$name stopped (pid $pid)"
	fi
	rm -f "$(pid_file "$name")"
}

# ---------------------------------------------------------------- set-up

# free_ports N prints N distinct ports that nothing listens on. They are
# drawn below the kernel's ephemeral range, so a client socket's local port
# can never hold a server's port while it restarts.
free_ports() {
	local n="$1" lo hi p tries=0 got=()
	read -r lo _ </proc/sys/net/ipv4/ip_local_port_range || lo=32768
	hi=$((lo - 1))
	lo=$((hi > 21000 ? 20000 : 10000))
	while ((${#got[@]} < n)); do
		((++tries < 1000)) || die "no free TCP port found in $lo-$hi"
		p=$((lo + (RANDOM * 32768 + RANDOM) % (hi - lo + 1)))
		[[ " ${got[*]:-} " == *" $p "* ]] && continue
		# A refused connection means nobody listens there.
		if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then continue; fi
		got+=("$p")
	done
	echo "${got[@]}"
}

# make_tls writes a throw-away CA and a server certificate for 127.0.0.1 and
# localhost (ECDSA P-256), plus the layout MinIO wants in its certs dir:
# public.crt, private.key and CAs/.
make_tls() {
	rm -rf "$TLS"
	mkdir -p "$TLS/minio/CAs"
	cat >"$TLS/openssl.cnf" <<-'EOF'
		[req]
		distinguished_name = dn
		prompt = no
		[dn]
		CN = ehrport test bed CA
		[ca_ext]
		basicConstraints = critical,CA:TRUE
		keyUsage = critical,keyCertSign,cRLSign
		subjectKeyIdentifier = hash
		[server_ext]
		basicConstraints = critical,CA:FALSE
		keyUsage = critical,digitalSignature
		extendedKeyUsage = serverAuth
		subjectAltName = IP:127.0.0.1,DNS:localhost
		subjectKeyIdentifier = hash
		authorityKeyIdentifier = keyid
	EOF
	local o=(-algorithm EC -pkeyopt ec_paramgen_curve:P-256)
	openssl genpkey "${o[@]}" -out "$TLS/ca.key" 2>/dev/null
	openssl req -x509 -new -config "$TLS/openssl.cnf" -extensions ca_ext \
		-key "$TLS/ca.key" -sha256 -days 365 -out "$TLS/ca.pem"
	openssl genpkey "${o[@]}" -out "$TLS/server.key" 2>/dev/null
	openssl req -new -config "$TLS/openssl.cnf" -subj "/CN=localhost" \
		-key "$TLS/server.key" -out "$TLS/server.csr"
	openssl x509 -req -in "$TLS/server.csr" -CA "$TLS/ca.pem" -CAkey "$TLS/ca.key" \
		-set_serial "0x$(openssl rand -hex 8)" -days 365 -sha256 \
		-extfile "$TLS/openssl.cnf" -extensions server_ext \
		-out "$TLS/server.pem" 2>/dev/null
	openssl verify -CAfile "$TLS/ca.pem" "$TLS/server.pem" >/dev/null ||
		die "generated server certificate does not verify"
	cp "$TLS/server.pem" "$TLS/minio/public.crt"
	cp "$TLS/server.key" "$TLS/minio/private.key"
	cp "$TLS/ca.pem" "$TLS/minio/CAs/ca.pem"
	# The CA is public: clients read it.
	chmod 0644 "$TLS/ca.pem"
}

make_keys() {
	A_AK="$(openssl rand -hex 10)"
	A_SK="$(openssl rand -hex 20)"
	B_AK="$(openssl rand -hex 10)"
	B_SK="$(openssl rand -hex 20)"
	[[ "$A_AK" != "$B_AK" && "$A_SK" != "$B_SK" ]] || die "key generation repeated itself"
}

# write_file PATH: stdin to PATH atomically, mode 0600, so a reader never
# sees half a file.
write_file() {
	local tmp
	tmp="$(mktemp "$1.XXXXXX")"
	cat >"$tmp"
	chmod 0600 "$tmp"
	mv -f "$tmp" "$1"
}

write_state() {
	write_file "$STATE" <<-EOF
		A_PORT=$A_PORT
		A_CONSOLE_PORT=$A_CONSOLE_PORT
		B_PORT=$B_PORT
		A_AK=$A_AK
		A_SK=$A_SK
		B_AK=$B_AK
		B_SK=$B_SK
	EOF
}

load_state() {
	[[ -f "$STATE" ]] || die "the test bed is not up (no $STATE): run 'bash scripts/testbed.sh up'"
	# shellcheck source=/dev/null
	. "$STATE"
}

# q VALUE: the value as is when it is plainly safe in a shell, else single-quoted.
q() {
	if [[ "$1" =~ ^[A-Za-z0-9_./:@%+=,-]*$ ]]; then
		printf '%s' "$1"
	else
		printf "'%s'" "${1//\'/\'\\\'\'}"
	fi
}

write_env() {
	local restart
	restart="bash $(q "$SELF") restart"
	{
		echo "# ehrport S3 test bed, written by scripts/testbed.sh up. Secrets: keep private."
		echo "export EHRPORT_STORE_CLOUDA_ENDPOINT=https://127.0.0.1:$A_PORT"
		echo "export EHRPORT_STORE_CLOUDA_ACCESS_KEY=$A_AK"
		echo "export EHRPORT_STORE_CLOUDA_SECRET_KEY=$A_SK"
		echo "export EHRPORT_STORE_CLOUDA_REGION=$REGION"
		echo "export EHRPORT_STORE_CLOUDA_CA_CERT=$(q "$TLS/ca.pem")"
		echo "export EHRPORT_STORE_CLOUDB_ENDPOINT=https://127.0.0.1:$B_PORT"
		echo "export EHRPORT_STORE_CLOUDB_ACCESS_KEY=$B_AK"
		echo "export EHRPORT_STORE_CLOUDB_SECRET_KEY=$B_SK"
		echo "export EHRPORT_STORE_CLOUDB_REGION=$REGION"
		echo "export EHRPORT_STORE_CLOUDB_CA_CERT=$(q "$TLS/ca.pem")"
		echo "export EHRPORT_TESTBED=$(q "$TB")"
		echo "export EHRPORT_TESTBED_MINIO_PID=$(q "$(pid_file minio)")"
		echo "export EHRPORT_TESTBED_VERSITYGW_PID=$(q "$(pid_file versitygw)")"
		echo "# Run as: bash \"\$EHRPORT_TESTBED_SCRIPT\" restart clouda|cloudb (or stop, status)"
		echo "export EHRPORT_TESTBED_SCRIPT=$(q "$SELF")"
		echo "# The same as a shell command prefix: sh -c \"\$EHRPORT_TESTBED_RESTART cloudb\""
		echo "export EHRPORT_TESTBED_RESTART=$(q "$restart")"
	} | write_file "$ENV_FILE"
}

healthy() {
	[[ -f "$STATE" && -f "$ENV_FILE" ]] || return 1
	load_state
	our_pid minio >/dev/null && our_pid versitygw >/dev/null &&
		ready "$A_PORT" && ready "$B_PORT"
}

# teardown stops both servers and deletes everything but the logs.
teardown() {
	stop minio
	stop versitygw
	rm -rf "$TB/clouda" "$TB/cloudb" "$TLS" "$ENV_FILE" "$STATE"
}

# ---------------------------------------------------------------- commands

cmd_up() {
	local start attempt rc_a rc_b ports
	start="$(now_ms)"
	with_lock "$LOCK"
	bash "$EHRPORT_ROOT/scripts/install-servers.sh"
	require openssl curl setsid

	if healthy; then
		log "already up: clouda (minio) https://127.0.0.1:$A_PORT, cloudb (versitygw) https://127.0.0.1:$B_PORT"
		log "env: $ENV_FILE"
		return 0
	fi
	if [[ -e "$STATE" || -e "$(pid_file minio)" || -e "$(pid_file versitygw)" ]]; then
		log "found a stale or half-running test bed: cleaning up and starting fresh"
	fi
	teardown
	mkdir -p "$TB"
	: >"$(log_file minio)"
	: >"$(log_file versitygw)"
	make_tls
	make_keys

	# A port found free can be taken before the server binds it: try again
	# on new ports when that happens.
	for attempt in 1 2 3; do
		ports="$(free_ports 3)" || exit 1
		read -r A_PORT A_CONSOLE_PORT B_PORT <<<"$ports"
		write_state
		launch minio
		launch versitygw
		rc_a=0 rc_b=0
		wait_ready minio || rc_a=$?
		wait_ready versitygw || rc_b=$?
		if ((rc_a == 0 && rc_b == 0)); then break; fi
		if ((rc_a == 1 || rc_b == 1 || attempt == 3)); then
			teardown # keeps the logs
			die "the test bed did not start (logs: $TB/*.log)"
		fi
		stop minio
		stop versitygw
		log "retrying on other ports"
	done

	write_env
	ports="clouda (minio) https://127.0.0.1:$A_PORT, cloudb (versitygw) https://127.0.0.1:$B_PORT"
	log "up in $(since "$start"): $ports"
	log "env: $ENV_FILE"
}

cmd_down() {
	local start
	start="$(now_ms)"
	with_lock "$LOCK"
	if [[ -f "$STATE" ]]; then load_state; fi
	teardown
	log "down in $(since "$start") (binaries kept in $EHRPORT_BIN, logs in $TB)"
}

cmd_restart() {
	local name start rc=0
	name="$(server_of "${1:-}")"
	start="$(now_ms)"
	with_lock "$LOCK"
	load_state
	stop "$name"
	launch "$name"
	wait_ready "$name" || rc=$?
	((rc == 0)) || die "$name did not come back on port $(port_of "$name")"
	log "$name restarted on https://127.0.0.1:$(port_of "$name") in $(since "$start")"
}

cmd_stop() {
	local name
	name="$(server_of "${1:-}")"
	with_lock "$LOCK"
	load_state
	stop "$name"
}

cmd_status() {
	local rc=0 cloud name port pid
	if [[ ! -f "$STATE" ]]; then
		echo "clouda (minio): down"
		echo "cloudb (versitygw): down"
		return 3
	fi
	load_state
	for cloud in clouda cloudb; do
		name="$(server_of "$cloud")"
		port="$(port_of "$name")"
		if pid="$(our_pid "$name")" && ready "$port"; then
			echo "$cloud ($name): up, https://127.0.0.1:$port, pid $pid"
		elif [[ -n "$pid" ]]; then
			echo "$cloud ($name): not answering, https://127.0.0.1:$port, pid $pid"
			rc=3
		else
			echo "$cloud ($name): down"
			rc=3
		fi
	done
	return "$rc"
}

cmd_env() {
	[[ -f "$ENV_FILE" ]] || die "the test bed is not up (no $ENV_FILE): run 'bash scripts/testbed.sh up'"
	echo "$ENV_FILE"
}

usage() {
	sed -n '2,16p' "$SELF" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

main() {
	local cmd="${1:-}"
	shift || true
	case "$cmd" in
	up) cmd_up ;;
	down) cmd_down ;;
	status) cmd_status ;;
	env) cmd_env ;;
	restart) cmd_restart "$@" ;;
	stop) cmd_stop "$@" ;;
	*) usage ;;
	esac
}

main "$@"
