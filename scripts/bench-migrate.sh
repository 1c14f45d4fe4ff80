#!/usr/bin/env bash
# Measures `ehrport migrate` against rclone copy, rclone crypt (small set
# only, as issue 7 lists it), mc mirror and s5cmd, and
# `ehrport verify --against` against `rclone check --download`, on the same
# data in the same run, cloud A (MinIO) -> cloud B (versitygw) of the test bed.
#
# Two data sets are made once per run, in a fresh bucket on cloud A:
#   small  a real signed ehrport export of synthetic FHIR (ehrport testdata +
#          ehrport export --split-bytes 20KiB): about 2,000 objects of ~20 KB
#   large  4 objects of 256 MiB: random bytes encrypted with ehrport encrypt,
#          plus an UNSIGNED manifest.json made here (there is no signing
#          command; verify then reports exactly one finding, "unsigned",
#          which this script accepts and nothing else)
# rclone crypt gets the small set's objects stored once through a crypt
# remote on cloud A, and copies them to a crypt remote on cloud B with the
# same password: rclone decrypts and re-encrypts at the client, as between
# any two crypt remotes (copying the raw ciphertext is the plain rclone row).
# Each round copies each set with every tool into a fresh prefix of a fresh
# bucket on cloud B, the tools in a rotating order (round 1 starts with
# ehrport, round 2 with rclone, ...), then verifies ehrport's copy with both
# verifiers (alternating which goes first), then deletes the copies (the
# small ones only after the last round: see the rounds below).
#
# Prints medians per tool, the median and min-max of the per-round ratios
# ehrport/peer, peak RSS (/usr/bin/time -v), and, unless BENCH_RECORD=0,
# writes the "Migration and verification" section of docs/BENCHMARKS.md and
# its entries of docs/benchmarks.json.
#
# Usage: bash scripts/bench-migrate.sh [ROUNDS]        (default 5)
# Env:   BENCH_SETS ("small large"), BENCH_SMALL_PATIENTS (2800: ~2,000
#        objects), BENCH_LARGE_MIB (256), BENCH_LARGE_N (4), BENCH_RECORD (1),
#        BENCH_TIMEOUT (seconds one command may take; 600), TMPDIR (local
#        disk s5cmd goes through).
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/benchlib.sh
. "$EHRPORT_ROOT/scripts/benchlib.sh"
ROOT="$EHRPORT_ROOT"
cd "$ROOT"

ROUNDS=${1:-5}
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive number"
SETS=${BENCH_SETS:-small large}
SMALL_PATIENTS=${BENCH_SMALL_PATIENTS:-2800}
LARGE_MIB=${BENCH_LARGE_MIB:-256}
LARGE_N=${BENCH_LARGE_N:-4}
RECORD=${BENCH_RECORD:-1}
TMO=${BENCH_TIMEOUT:-600}
# The tools of each set, in the order of round 1.
tools_of() {
	if [[ $1 == small ]]; then echo ehrport rclone rclone-crypt mc s5cmd; else echo ehrport rclone mc s5cmd; fi
}
T_START=$(now_ms)
# What ehrport is measured: the commit, and whether the tree had changes.
REV=$(git rev-parse --short HEAD 2>/dev/null || echo '?')
git diff --quiet HEAD -- cmd crypto fhir storage go.mod 2>/dev/null || REV="$REV + uncommitted changes"

export PATH="$EHRPORT_BIN:$PATH"
[[ -x /usr/bin/time ]] || die "/usr/bin/time is missing (apt-get install -y time)"
if ! command -v rclone >/dev/null || ! command -v mc >/dev/null || ! command -v s5cmd >/dev/null; then
	log "peer tools missing: running scripts/install-peers.sh"
	bash "$ROOT/scripts/install-peers.sh" >&2
fi
for c in rclone mc s5cmd jq; do
	command -v "$c" >/dev/null || die "'$c' is missing: run bash scripts/install-peers.sh"
done

if [[ -z "${EHRPORT_TESTBED:-}" ]]; then
	bash scripts/testbed.sh up
	set -a
	# shellcheck disable=SC1091
	. "$EHRPORT_CACHE/testbed/env"
	set +a
fi
: "${EHRPORT_STORE_CLOUDA_ENDPOINT:?}" "${EHRPORT_STORE_CLOUDB_ENDPOINT:?}"
CA="$EHRPORT_STORE_CLOUDA_CA_CERT"
[[ "$EHRPORT_STORE_CLOUDB_CA_CERT" == "$CA" ]] || die "the two clouds have different CAs; this script expects one"

W=$(mktemp -d "${TMPDIR:-/tmp}/bench-migrate.XXXXXX")
RUN="ehrbench-$(date -u +%Y%m%d%H%M%S)-$$"
SRC_BUCKET="$RUN-src"
DST_BUCKET="$RUN-dst"
log "run $RUN, work folder $W, $ROUNDS rounds, sets: $SETS"

# ---------------------------------------------------------------- tools' config
# Secrets go through the environment only, never argv.

# ehrport itself: built from the tree into the work folder, so a concurrent
# rebuild of bin/ehrport cannot change it mid-run.
EHR="$W/ehrport"
build_ehrport "$EHR"

# rclone: remotes from RCLONE_CONFIG_<NAME>_* variables; the CA by --ca-cert.
# It fails when AWS_CA_BUNDLE is set, so it always runs under env -u.
export RCLONE_CONFIG="$W/rclone.conf" # none: the remotes come from the env
export RCLONE_CONFIG_BENCHA_TYPE=s3 RCLONE_CONFIG_BENCHA_PROVIDER=Minio
export RCLONE_CONFIG_BENCHA_ENDPOINT="$EHRPORT_STORE_CLOUDA_ENDPOINT"
export RCLONE_CONFIG_BENCHA_ACCESS_KEY_ID="$EHRPORT_STORE_CLOUDA_ACCESS_KEY"
export RCLONE_CONFIG_BENCHA_SECRET_ACCESS_KEY="$EHRPORT_STORE_CLOUDA_SECRET_KEY"
export RCLONE_CONFIG_BENCHA_REGION="$EHRPORT_STORE_CLOUDA_REGION"
export RCLONE_CONFIG_BENCHB_TYPE=s3 RCLONE_CONFIG_BENCHB_PROVIDER=Other
export RCLONE_CONFIG_BENCHB_ENDPOINT="$EHRPORT_STORE_CLOUDB_ENDPOINT"
export RCLONE_CONFIG_BENCHB_ACCESS_KEY_ID="$EHRPORT_STORE_CLOUDB_ACCESS_KEY"
export RCLONE_CONFIG_BENCHB_SECRET_ACCESS_KEY="$EHRPORT_STORE_CLOUDB_SECRET_KEY"
export RCLONE_CONFIG_BENCHB_REGION="$EHRPORT_STORE_CLOUDB_REGION"
RCLONE=(env -u AWS_CA_BUNDLE rclone --ca-cert "$CA" --s3-no-check-bucket)
# rclone crypt: a crypt remote over each cloud, one password for both,
# obscured by rclone from stdin; cryptB's remote (the target prefix) is set
# per run.
CRYPT_PASSWORD=$(rclone obscure - <<<"$(head -c 24 /dev/urandom | base64)")
export RCLONE_CONFIG_CRYPTA_TYPE=crypt RCLONE_CONFIG_CRYPTA_REMOTE="bencha:$SRC_BUCKET/small-rclone-crypt"
export RCLONE_CONFIG_CRYPTB_TYPE=crypt
export RCLONE_CONFIG_CRYPTA_PASSWORD="$CRYPT_PASSWORD" RCLONE_CONFIG_CRYPTB_PASSWORD="$CRYPT_PASSWORD"

# mc: aliases from MC_HOST_<alias>; the CA in a private config folder (no --insecure).
export MC_CONFIG_DIR="$W/mc"
mkdir -p "$MC_CONFIG_DIR/certs/CAs"
cp "$CA" "$MC_CONFIG_DIR/certs/CAs/testbed-ca.pem"
export MC_HOST_bencha="https://$EHRPORT_STORE_CLOUDA_ACCESS_KEY:$EHRPORT_STORE_CLOUDA_SECRET_KEY@${EHRPORT_STORE_CLOUDA_ENDPOINT#https://}"
export MC_HOST_benchb="https://$EHRPORT_STORE_CLOUDB_ACCESS_KEY:$EHRPORT_STORE_CLOUDB_SECRET_KEY@${EHRPORT_STORE_CLOUDB_ENDPOINT#https://}"

# s5cmd: one endpoint per command, so it goes through local disk; credentials
# from AWS_* variables set per step by this small script; CA by AWS_CA_BUNDLE.
cat >"$W/s5cmd-copy.sh" <<'EOF'
#!/usr/bin/env bash
# s5cmd-copy.sh SRC_BUCKET/PREFIX DST_BUCKET/PREFIX LOCALDIR: A -> disk -> B.
set -euo pipefail
export AWS_CA_BUNDLE="$EHRPORT_STORE_CLOUDA_CA_CERT" AWS_REGION="$EHRPORT_STORE_CLOUDA_REGION"
AWS_ACCESS_KEY_ID="$EHRPORT_STORE_CLOUDA_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$EHRPORT_STORE_CLOUDA_SECRET_KEY" \
	s5cmd --endpoint-url "$EHRPORT_STORE_CLOUDA_ENDPOINT" cp "s3://$1/*" "$3/" >/dev/null
AWS_ACCESS_KEY_ID="$EHRPORT_STORE_CLOUDB_ACCESS_KEY" AWS_SECRET_ACCESS_KEY="$EHRPORT_STORE_CLOUDB_SECRET_KEY" \
	s5cmd --endpoint-url "$EHRPORT_STORE_CLOUDB_ENDPOINT" cp "$3/*" "s3://$2/" >/dev/null
EOF

cleanup() {
	local rc=$?
	set +e
	log "cleaning up buckets $SRC_BUCKET, $DST_BUCKET and $W"
	mc rb --force "bencha/$SRC_BUCKET" >/dev/null 2>&1
	mc rb --force "benchb/$DST_BUCKET" >/dev/null 2>&1
	rm -rf "$W"
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mc mb --quiet "bencha/$SRC_BUCKET" >/dev/null
mc mb --quiet "benchb/$DST_BUCKET" >/dev/null

# ---------------------------------------------------------------- data sets

export EHRPORT_PASSPHRASE="bench passphrase $$"
"$EHR" keys init --keys "$W/keys" >/dev/null 2>&1

declare -A N BYTES
make_small() {
	local t0
	t0=$(now_ms)
	"$EHR" testdata generate -q --patients "$SMALL_PATIENTS" --out "$W/gen" >/dev/null
	"$EHR" export -q --from "$W/gen" --to "clouda:$SRC_BUCKET/small" --keys "$W/keys" --split-bytes 20KiB >/dev/null
	rm -rf "$W/gen"
	# rclone crypt's source: the same objects, stored through cryptA.
	"${RCLONE[@]}" copy "bencha:$SRC_BUCKET/small" cryptA: --transfers 32 --checkers 32 2>"$W/err" ||
		die "storing the small set through rclone crypt failed: $(tail -n 3 "$W/err")"
	log "small set: exported in $(since "$t0")"
}
make_large() {
	local t0 i key eid="bench-large-$RUN" kid
	t0=$(now_ms)
	mkdir -p "$W/large"
	: >"$W/large.objects"
	for ((i = 0; i < LARGE_N; i++)); do
		key=$(printf 'Binary.%03d.ndjson' "$i")
		head -c $((LARGE_MIB << 20)) /dev/urandom >"$W/plain"
		"$EHR" encrypt -q --recipient "$W/keys/hpke.pub.json" --binding "$key" --export-id "$eid" "$W/plain" "$W/large/$key.ehr"
		jq -nc --arg key "$key.ehr" --arg path "$key" --argjson size "$(stat -c %s "$W/large/$key.ehr")" \
			--arg sha "$(sha256sum "$W/large/$key.ehr" | cut -d' ' -f1)" \
			'{key: $key, path: $path, kind: "data", type: "Binary", size: $size, sha256: $sha}' >>"$W/large.objects"
	done
	rm -f "$W/plain"
	kid=$("$EHR" inspect --json "$W/large/Binary.000.ndjson.ehr" | jq '.stanzas[0].key_id')
	local now
	now=$(date -u +%FT%TZ)
	jq -s --arg eid "$eid" --arg now "$now" --argjson kid "$kid" '{
		transactionTime: $now, request: "ehrport bench (synthetic random objects)",
		requiresAccessToken: false,
		output: [.[] | {type: .type, url: .key}], error: [],
		extension: {ehrport: {formatVersion: 1, exportId: $eid, createdAt: $now, completedAt: $now,
			objectFormat: "ehrport-v1", signed: false,
			recipients: [{type: "hpke-x25519", role: "recipient", keyId: $kid}],
			objects: .}}}' "$W/large.objects" >"$W/large/manifest.json"
	# Upload: ehrport migrate reads a local folder as an export.
	"$EHR" migrate -q --from "$W/large" --to "clouda:$SRC_BUCKET/large" >/dev/null
	rm -rf "$W/large"
	log "large set: made and uploaded in $(since "$t0")"
}
for set in $SETS; do
	case "$set" in
	small) make_small ;;
	large) make_large ;;
	*) die "unknown set '$set' (small or large)" ;;
	esac
	mc cat "bencha/$SRC_BUCKET/$set/manifest.json" >"$W/$set.manifest.json"
	N[$set]=$(jq '.extension.ehrport.objects | length' "$W/$set.manifest.json")
	BYTES[$set]=$(jq '[.extension.ehrport.objects[].size] | add' "$W/$set.manifest.json")
	log "$set set: ${N[$set]} objects, ${BYTES[$set]} bytes"
done

# ---------------------------------------------------------------- timing

RES="$W/results" # lines: set op tool round ms rss_kb ok(1/0) cpu_s minio_cpu_s versitygw_cpu_s
: >"$RES"

# CPU seconds used by each test server during a run (utime+stime from
# /proc), beside the client's own (from /usr/bin/time): on two shared cores,
# CPU per byte or per object is what bounds every tool.
MINIO_PID=$(cat "${EHRPORT_TESTBED_MINIO_PID:-/nonexistent}" 2>/dev/null || echo 0)
VGW_PID=$(cat "${EHRPORT_TESTBED_VERSITYGW_PID:-/nonexistent}" 2>/dev/null || echo 0)
TICK=$(getconf CLK_TCK)
ticks() { # PID: utime+stime in clock ticks, 0 when unknown
	local st
	st=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
	st=${st##*) }
	awk '{print $12 + $13}' <<<"$st"
}

# timed SET OP TOOL ROUND CMD...: runs CMD under /usr/bin/time -v and timeout,
# records wall ms and peak RSS. A failure is recorded, never retried.
timed() {
	local set=$1 op=$2 tool=$3 r=$4 t0 t1 rc=0 rss ms a0 b0 a1 b1 cpu
	shift 4
	a0=$(ticks "$MINIO_PID") b0=$(ticks "$VGW_PID")
	t0=$(date +%s%N)
	timeout "$TMO" /usr/bin/time -v -o "$W/time.out" "$@" >"$W/out" 2>"$W/err" || rc=$?
	t1=$(date +%s%N)
	a1=$(ticks "$MINIO_PID") b1=$(ticks "$VGW_PID")
	cpu=$(awk -F': ' '/User time|System time/ {s += $2} END {printf "%.2f", s}' "$W/time.out" 2>/dev/null || echo 0)
	ms=$(((t1 - t0) / 1000000))
	rss=$(awk -F: '/Maximum resident set size/ {gsub(/ /, "", $2); print $2}' "$W/time.out" 2>/dev/null || true)
	LAST_RC=$rc
	echo "$set $op $tool $r $ms ${rss:-0} $rc $cpu $(awk -v a=$((a1 - a0)) -v b=$((b1 - b0)) -v t="$TICK" 'BEGIN {printf "%.2f %.2f", a / t, b / t}')" >>"$RES"
}
# settle SET OP TOOL ROUND OK: rewrites the last result's status to OK (1/0).
settle() {
	local last
	last=$(tail -n 1 "$RES")
	sed -i '$d' "$RES"
	read -r s o t r ms rss rc cpu ca cb <<<"$last"
	echo "$s $o $t $r $ms $rss $5 $cpu $ca $cb" >>"$RES"
	if [[ "$5" != 1 ]]; then
		log "FAILED: $1 $2 $3 round $4 (exit $rc):"
		tail -n 5 "$W/err" | sed 's/^/    /' >&2
	fi
}
# count PREFIX: objects under benchb/DST_BUCKET/PREFIX.
count() { mc ls --recursive "benchb/$DST_BUCKET/$1/" 2>/dev/null | wc -l; }

migrate_one() { # SET TOOL ROUND
	local set=$1 tool=$2 r=$3 dst="$1/$2-r$3" src="$SRC_BUCKET/$1" want ok=1
	case "$tool" in
	ehrport) timed "$set" migrate "$tool" "$r" "$EHR" --json migrate --from "clouda:$src" --to "cloudb:$DST_BUCKET/$dst" ;;
	rclone)
		if [[ $set == small ]]; then
			timed "$set" migrate "$tool" "$r" "${RCLONE[@]}" copy "bencha:$src" "benchb:$DST_BUCKET/$dst" --transfers 32 --checkers 32
		else
			timed "$set" migrate "$tool" "$r" "${RCLONE[@]}" copy "bencha:$src" "benchb:$DST_BUCKET/$dst" --s3-chunk-size 16M --s3-upload-concurrency 8
		fi
		;;
	rclone-crypt)
		timed "$set" migrate "$tool" "$r" env RCLONE_CONFIG_CRYPTB_REMOTE="benchb:$DST_BUCKET/$dst" "${RCLONE[@]}" copy cryptA: cryptB: --transfers 32 --checkers 32
		;;
	mc) timed "$set" migrate "$tool" "$r" mc mirror --quiet "bencha/$src" "benchb/$DST_BUCKET/$dst" ;;
	s5cmd)
		rm -rf "$W/s5" && mkdir -p "$W/s5"
		timed "$set" migrate "$tool" "$r" bash "$W/s5cmd-copy.sh" "$src" "$DST_BUCKET/$dst" "$W/s5"
		rm -rf "$W/s5"
		;;
	esac
	[[ $LAST_RC == 0 ]] || ok=0
	# Every tool must have copied every object plus the manifest files.
	want=$(jq -r '.extension.ehrport as $e | ($e.objects | length) + (if $e.signed then 2 else 1 end)' "$W/$set.manifest.json")
	if ((ok)) && [[ $(count "$dst") != "$want" ]]; then
		echo "target holds $(count "$dst") objects, want $want" >>"$W/err"
		ok=0
	fi
	if [[ $tool == ehrport && $ok == 1 ]] && ! jq -e '.manifest_written == true' "$W/out" >/dev/null 2>&1; then
		ok=0
	fi
	[[ $tool == ehrport ]] && cp "$W/out" "$W/migrate-$set-r$r.json"
	settle "$set" migrate "$tool" "$r" "$ok"
}

verify_one() { # SET TOOL ROUND: both verify ehrport's copy against the source
	local set=$1 tool=$2 r=$3 dst="$DST_BUCKET/$1/ehrport-r$3" src="$SRC_BUCKET/$1" ok=0 codes
	if [[ $tool == ehrport ]]; then
		timed "$set" verify "$tool" "$r" "$EHR" verify --json --at "cloudb:$dst" --against "clouda:$src"
		codes=$(jq -r '[.. | objects | select(has("code")) | .code] | unique | join(",")' "$W/out" 2>/dev/null || echo "?")
		# exit 1 is a pass only when the single kind of finding is "unsigned"
		# (the large set's manifest is unsigned by construction).
		if [[ $LAST_RC == 0 ]] || { [[ $LAST_RC == 1 && $codes == unsigned ]] && jq -e '.against.report' "$W/out" >/dev/null; }; then ok=1; fi
		[[ $ok == 1 ]] || echo "findings: $codes" >>"$W/err"
	else
		if [[ $set == small ]]; then
			timed "$set" verify "$tool" "$r" "${RCLONE[@]}" check --download "bencha:$src" "benchb:$dst" --checkers 32
		else
			timed "$set" verify "$tool" "$r" "${RCLONE[@]}" check --download "bencha:$src" "benchb:$dst"
		fi
		[[ $LAST_RC == 0 ]] && ok=1
	fi
	settle "$set" verify "$tool" "$r" "$ok"
}

# ---------------------------------------------------------------- rounds

for set in $SETS; do
	read -r -a TOOLS <<<"$(tools_of "$set")"
	for ((r = 1; r <= ROUNDS; r++)); do
		order=()
		for ((i = 0; i < ${#TOOLS[@]}; i++)); do order+=("${TOOLS[$(((r - 1 + i) % ${#TOOLS[@]}))]}"); done
		log "$set round $r/$ROUNDS: migrate ${order[*]}"
		for tool in "${order[@]}"; do migrate_one "$set" "$tool" "$r"; done
		if ((r % 2)); then vorder=(ehrport rclone); else vorder=(rclone ehrport); fi
		log "$set round $r/$ROUNDS: verify ${vorder[*]}"
		for tool in "${vorder[@]}"; do verify_one "$set" "$tool" "$r"; done
		# The large copies go at once (disk space). The small ones stay until
		# the set is done: cloud B's data folder is on ext4, where creating a
		# file soon after thousands were deleted scans past their inodes
		# (perf: a third of versitygw's CPU in find_inode_bit), a cost of
		# the test bed that the next tool, whichever it is, would pay.
		if [[ $set == large ]]; then
			for tool in "${TOOLS[@]}"; do mc rm --recursive --force "benchb/$DST_BUCKET/$set/$tool-r$r/" >/dev/null 2>&1 || true; done
		fi
	done
	[[ $set == large ]] || mc rm --recursive --force "benchb/$DST_BUCKET/$set/" >/dev/null 2>&1 || true
done

# ---------------------------------------------------------------- statistics

# rate SET MS: objects/s for small, MB/s (10^6 bytes) for large.
unit_of() { [[ $1 == small ]] && echo "obj/s" || echo "MB/s"; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR == 0) print "nan"; else print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2)}'; }
# rates SET OP TOOL: one rate per successful round, "round rate rss".
rates() {
	local set=$1 per
	if [[ $set == small ]]; then per=${N[$set]}; else per=$(awk -v b="${BYTES[$set]}" 'BEGIN {print b / 1e6}'); fi
	awk -v s="$1" -v o="$2" -v t="$3" -v per="$per" '$1 == s && $2 == o && $3 == t && $7 == 1 {printf "%d %.6f %d\n", $4, per * 1000 / $5, $6}' "$RES"
}
med_rate() { rates "$@" | awk '{print $2}' | median; }
med_rss() { rates "$@" | awk '{print $3 / 1024}' | median; }
max_rss() { rates "$@" | awk '{print $3 / 1024}' | sort -g | tail -n 1; }
# cpu SET OP TOOL: median CPU seconds of the tool, MinIO and versitygw per run.
cpu() {
	local c a b
	c=$(awk -v s="$1" -v o="$2" -v t="$3" '$1 == s && $2 == o && $3 == t && $7 == 1 {print $8}' "$RES" | median)
	a=$(awk -v s="$1" -v o="$2" -v t="$3" '$1 == s && $2 == o && $3 == t && $7 == 1 {print $9}' "$RES" | median)
	b=$(awk -v s="$1" -v o="$2" -v t="$3" '$1 == s && $2 == o && $3 == t && $7 == 1 {print $10}' "$RES" | median)
	printf '%.1f / %.1f / %.1f' "$c" "$a" "$b"
}
# label_of OP TOOL: the tool's name in the tables and in benchmarks.json.
label_of() {
	case "$1 $2" in
	"verify rclone") echo "rclone check --download" ;;
	"verify ehrport") echo "ehrport verify --against" ;;
	*" rclone-crypt") echo "rclone crypt" ;;
	*) echo "$2" ;;
	esac
}
fails() { awk -v s="$1" -v o="$2" -v t="$3" '$1 == s && $2 == o && $3 == t && $7 != 1' "$RES" | wc -l; }
# ratios SET OP PEER: per-round ehrport/peer rate ratios (rounds where both succeeded).
ratios() {
	join <(rates "$1" "$2" ehrport | sort -k1,1) <(rates "$1" "$2" "$3" | sort -k1,1) | awk '{printf "%.6f\n", $2 / $4}'
}
stat3() { # prints "median min max" of stdin
	sort -g | awk '{a[NR]=$1} END {if (NR == 0) {print "nan nan nan"; exit} m = (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2); print m, a[1], a[NR]}'
}

TABLE="$W/table.md"
ENTRIES="$W/entries.jsonl"
: >"$ENTRIES"
{
	echo "| set | operation | tool | median rate | median peak RSS | ehrport/peer rate: median (min-max) | RSS ehrport/peer | CPU s: tool / MinIO / versitygw | failed runs |"
	echo "|---|---|---|---|---|---|---|---|---|"
} >"$TABLE"
declare -A BEST
for set in $SETS; do
	u=$(unit_of "$set")
	for op in migrate verify; do
		if [[ $op == migrate ]]; then read -r -a tools <<<"$(tools_of "$set")"; else tools=(ehrport rclone); fi
		RSS_PEERS=()
		for tool in "${tools[@]}"; do
			mr=$(med_rate "$set" "$op" "$tool")
			ms=$(med_rss "$set" "$op" "$tool")
			label=$(label_of "$op" "$tool")
			if [[ $tool == ehrport ]]; then
				printf '| %s | %s | %s | %.1f %s | %.0f MB | - | - | %s | %d |\n' "$set" "$op" "$label" "$mr" "$u" "$ms" "$(cpu "$set" "$op" "$tool")" "$(fails "$set" "$op" "$tool")" >>"$TABLE"
				continue
			fi
			read -r rm rmin rmax < <(ratios "$set" "$op" "$tool" | stat3)
			em=$(med_rate "$set" "$op" ehrport)
			es=$(med_rss "$set" "$op" ehrport)
			rr=$(awk -v a="$es" -v b="$ms" 'BEGIN {printf "%.2f", (b > 0 ? a / b : 0)}')
			printf '| %s | %s | %s | %.1f %s | %.0f MB | %.2fx (%.2f-%.2f) | %s | %s | %d |\n' "$set" "$op" "$label" "$mr" "$u" "$ms" "$rm" "$rmin" "$rmax" "$rr" "$(cpu "$set" "$op" "$tool")" "$(fails "$set" "$op" "$tool")" >>"$TABLE"
			what="copy"; [[ $op == verify ]] && what="byte-for-byte verification"
			jq -nc --arg name "$op $set objects: $what rate" --arg unit "$u" --arg peer "$label" \
				--argjson e "$em" --argjson p "$mr" --argjson ratio "$rm" \
				'def r2: . * 100 | round / 100; {name: $name, unit: $unit, ehrport: ($e | r2), peer_name: $peer, peer: ($p | r2), ratio: ($ratio | r2), better: "higher"}' >>"$ENTRIES"
			RSS_PEERS+=("$label" "$ms")
			# The target's "best peer" is the one ehrport leads by least (the
			# lowest median of per-round ratios), so that a target met is
			# met against every peer; two peers of nearly equal rate would
			# otherwise let the noise pick the easier comparison.
			if [[ $op == migrate ]] && { [[ -z "${BEST[$set]:-}" ]] || awk -v a="$rm" -v b="${BEST[$set]}" 'BEGIN {exit !(a < b)}'; }; then
				BEST[$set]=$rm
				BEST[$set.name]=$tool
			fi
		done
		bench_rss_entry "$op $set objects: peak RSS" "$(med_rss "$set" "$op" ehrport)" 256 "${RSS_PEERS[@]}" >>"$ENTRIES"
	done
done

# ---------------------------------------------------------------- targets

TARGETS="$W/targets.md"
: >"$TARGETS"
verdict() { awk -v x="$1" -v t="$2" 'BEGIN {print ((x + 0 >= t + 0 && x != "nan") ? "**met**" : "**not met**")}'; }
for set in $SETS; do
	[[ -n "${BEST[$set.name]:-}" ]] || continue
	b=${BEST[$set.name]}
	read -r rm rmin rmax < <(ratios "$set" migrate "$b" | stat3)
	if [[ $set == small ]]; then
		printf -- '- Migration, small objects, at least the best peer (%s, the peer ehrport leads by least): %.2fx (%.2f-%.2f): %s. Issue 7 asks for 1.5x the best peer: %s.\n' \
			"$(label_of migrate "$b")" "$rm" "$rmin" "$rmax" "$(verdict "$rm" 1)" "$(verdict "$rm" 1.5)" >>"$TARGETS"
	else
		printf -- '- Migration, large objects, at least the best peer (%s, the peer ehrport leads by least): %.2fx (%.2f-%.2f): %s.\n' "$(label_of migrate "$b")" "$rm" "$rmin" "$rmax" "$(verdict "$rm" 1)" >>"$TARGETS"
	fi
	read -r rm rmin rmax < <(ratios "$set" verify rclone | stat3)
	printf -- '- Verification, %s objects, at least 1x `rclone check --download`: %.2fx (%.2f-%.2f): %s.\n' "$set" "$rm" "$rmin" "$rmax" "$(verdict "$rm" 1)" >>"$TARGETS"
done
if [[ " $SETS " == *" small "* && " $SETS " == *" large "* ]]; then
	rs=$(max_rss small migrate ehrport)
	rl=$(max_rss large migrate ehrport)
	ok=$(awk -v s="$rs" -v l="$rl" 'BEGIN {print (l <= 1.5 * s && l < 256) ? "**met**" : "**not met**"}')
	printf -- '- Peak RSS of `ehrport migrate` bounded and independent of object size (here: the largest peak on %d MiB objects at most 1.5x the largest on ~20 KB objects, and under 256 MB): %.0f MB on small vs %.0f MB on large: %s.\n' \
		"$LARGE_MIB" "$rs" "$rl" "$ok" >>"$TARGETS"
fi

echo
echo "ehrport migrate/verify vs peers, clouda (MinIO) -> cloudb (versitygw), TLS on loopback; $ROUNDS rounds"
for set in $SETS; do
	echo "  $set: ${N[$set]} objects, ${BYTES[$set]} bytes"
done
cat "$TABLE"
echo
cat "$TARGETS"
echo
echo "raw results (set op tool round ms rss_kb ok cpu_s minio_cpu_s versitygw_cpu_s):"
cat "$RES"

# ---------------------------------------------------------------- record

if [[ $RECORD != 1 ]]; then
	log "BENCH_RECORD=$RECORD: docs not written; done in $(since "$T_START")"
	exit 0
fi
mkdir -p docs
# benchmarks.json: replace our entries (names starting "migrate " or "verify "), keep the rest.
old='[]'
[[ -s docs/benchmarks.json ]] && old=$(cat docs/benchmarks.json)
jq -s --argjson old "$old" '
	def mine: (.name | startswith("migrate ") or startswith("verify "));
	. as $new
	| if ($old | type) == "object" and ($old | has("entries"))
	  then $old | .entries = ([.entries[] | select(mine | not)] + $new)
	  else [$old[] | select(mine | not)] + $new end' "$ENTRIES" >"$W/benchmarks.json"
cp "$W/benchmarks.json" docs/benchmarks.json

versions() {
	echo "- ehrport: built from the tree at $REV ($(go env GOVERSION))"
	echo "- rclone: $(rclone version 2>/dev/null | head -n 1) (Debian package)"
	echo "- mc: github.com/minio/mc $(go version -m "$(command -v mc)" 2>/dev/null | awk '$1 == "mod" {print $3}') ($(go version "$(command -v mc)" 2>/dev/null | awk '{print $2}'))"
	echo "- s5cmd: github.com/peak/s5cmd/v2 $(go version -m "$(command -v s5cmd)" 2>/dev/null | awk '$1 == "mod" {print $3}') ($(go version "$(command -v s5cmd)" 2>/dev/null | awk '{print $2}'))"
}
{
	echo "## Migration and verification"
	echo
	echo "Written by \`scripts/bench-migrate.sh $ROUNDS\` on $(date -u +%F) (rerun: \`bash scripts/install-peers.sh && bash scripts/bench-migrate.sh [ROUNDS]\`, or \`make bench\`)."
	echo "Cloud A is MinIO, cloud B is versitygw (\`--keep-alive\`), both over TLS on loopback, on the same machine as the tools."
	echo "The machine is shared and noisy: only medians and per-round ratios mean anything. Each round runs every tool once, in a rotating order; the ratio is ehrport's rate over the peer's in the same round."
	echo
	echo "### Machine"
	echo
	echo "- $(nproc) cores: $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
	echo "- memory: $(free -h | awk '/^Mem:/ {print $2 " total, " $7 " available at the end of the run"}')"
	echo "- load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
	versions
	echo
	echo "### Data"
	echo
	for set in $SETS; do
		if [[ $set == small ]]; then
			echo "- small: \`ehrport testdata generate --patients $SMALL_PATIENTS\` exported with \`ehrport export --keys DIR --split-bytes 20KiB\`: a real signed export of ${N[small]} encrypted objects, ${BYTES[small]} bytes (~20 KB each), plus manifest.json and manifest.json.sig."
			echo "- small, for rclone crypt: the same objects (and manifest files), stored once with \`rclone copy bencha:SRC cryptA:\` through a crypt remote on cloud A (rclone's default XSalsa20-Poly1305 content and name encryption), about 0.2% larger. Each round copies them from cryptA: to a crypt remote on cloud B with the same password, so rclone decrypts and re-encrypts every object at the client, as it does between any two crypt remotes; copying the ciphertext as it is, without keys, is the plain rclone row."
		else
			echo "- large: $LARGE_N objects of $LARGE_MIB MiB of random bytes, each encrypted with \`ehrport encrypt --recipient hpke.pub.json --binding Binary.NNN.ndjson\`, ${BYTES[large]} bytes, with a manifest.json written by the script. It is **unsigned** (ehrport has no command that signs a hand-made manifest), so \`ehrport verify\` reports one finding, \`unsigned\`, and exits 1; the script counts that run as passed only when that is the only kind of finding and the comparison ran. The work is the same as for a signed export, less one signature check."
		fi
	done
	echo
	echo "### Commands (one fresh target prefix per tool and round; REF = bucket/prefix)"
	echo
	echo '```sh'
	echo '# migration, A -> B'
	echo 'bin/ehrport --json migrate --from clouda:SRC --to cloudb:DST            # full proof of every object (defaults: --concurrency 16 --parallel 1 --large-in-flight 2 --part-size 16MiB --single-put-max 5GiB)'
	echo 'env -u AWS_CA_BUNDLE rclone --ca-cert CA --s3-no-check-bucket copy bencha:SRC benchb:DST --transfers 32 --checkers 32              # small'
	echo 'env -u AWS_CA_BUNDLE rclone --ca-cert CA --s3-no-check-bucket copy bencha:SRC benchb:DST --s3-chunk-size 16M --s3-upload-concurrency 8  # large'
	echo 'env RCLONE_CONFIG_CRYPTB_REMOTE=benchb:DST rclone ... copy cryptA: cryptB: --transfers 32 --checkers 32   # small; crypt remotes over A and B, one password'
	echo 'mc mirror --quiet bencha/SRC benchb/DST                                   # MC_HOST_* aliases, CA in MC_CONFIG_DIR/certs/CAs'
	echo 's5cmd --endpoint-url A cp "s3://SRC/*" LOCALDIR/ && s5cmd --endpoint-url B cp "LOCALDIR/*" s3://DST/   # AWS_CA_BUNDLE; LOCALDIR on the local disk (TMPDIR)'
	echo '# verification of ehrport'"'"'s copy against the source'
	echo 'bin/ehrport verify --json --at cloudb:DST --against clouda:SRC           # default --concurrency 16; both sides read at once'
	echo 'env -u AWS_CA_BUNDLE rclone --ca-cert CA check --download bencha:SRC benchb:DST [--checkers 32 for small]'
	echo '```'
	echo
	echo "Rates: objects/s for the small set (objects the manifest lists), MB/s (10^6 bytes) of listed objects for the large set; a verification rate counts the export once although both sides are read. Peak RSS: \"Maximum resident set size\" of \`/usr/bin/time -v\` (for s5cmd the larger of its two steps). CPU s: user+system seconds of the tool (\`/usr/bin/time -v\`) and of each test server (utime+stime from /proc) during the run, medians. Every copy is checked afterwards by counting the objects at the target; a run that fails is recorded, not retried, and left out of the medians and ratios."
	echo
	echo "### Results ($ROUNDS rounds)"
	echo
	cat "$TABLE"
	echo
	echo "<details><summary>Raw results: set, operation, tool, round, ms, peak RSS KB, passed, CPU s of the tool, of MinIO, of versitygw</summary>"
	echo
	echo '```'
	cat "$RES"
	echo '```'
	echo
	echo "</details>"
	echo
	echo "### Targets"
	echo
	cat "$TARGETS"
	# A hand-written "### Analysis" subsection of the previous section is kept.
	if [[ -f docs/BENCHMARKS.md ]]; then
		awk '/^## Migration and verification$/ {in_s = 1; next}
			in_s && /^## / {exit}
			in_s && /^### Analysis/ {keep = 1}
			keep {print}' docs/BENCHMARKS.md >"$W/analysis.md"
		if [[ -s "$W/analysis.md" ]]; then
			echo
			sed -e :a -e '/^\n*$/{$d;N;ba' -e '}' "$W/analysis.md"
		fi
	fi
} >"$W/section.md"

# Replace our section of docs/BENCHMARKS.md (up to the next "## " heading), keep the rest.
B=docs/BENCHMARKS.md
if [[ -f $B ]] && grep -q '^## Migration and verification$' "$B"; then
	awk -v f="$W/section.md" '
		/^## Migration and verification$/ {while ((getline l < f) > 0) print l; skip = 1; next}
		skip && /^## / {skip = 0; print ""}
		!skip {print}' "$B" >"$W/B.md"
elif [[ -f $B ]]; then
	{ cat "$B"; echo; cat "$W/section.md"; } >"$W/B.md"
else
	{ echo "# Benchmarks"; echo; cat "$W/section.md"; } >"$W/B.md"
fi
cp "$W/B.md" "$B"
bench_summary
log "wrote docs/BENCHMARKS.md and docs/benchmarks.json; done in $(since "$T_START")"
