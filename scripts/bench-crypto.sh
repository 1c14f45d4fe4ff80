#!/usr/bin/env bash
# Encryption speed against its yardsticks, in two parts:
#
# 1. The Go micro-benchmark BenchmarkRatio (crypto/bench_test.go) on one and
#    two cores: ehrport's encrypt and decrypt paths against raw AES-256-GCM
#    on the same 64 MiB in memory (target >= 0.75x raw GCM on one core).
# 2. `ehrport encrypt` and `ehrport decrypt` against `age -r` and `age -d` on
#    one random file of BENCH_MIB MiB (default 1024), the four commands in
#    turn for ROUNDS rounds (default 5), the order flipped every other round.
#    Each run is timed under /usr/bin/time -v; it prints the medians, the
#    median of the per-round ratios age/ehrport (target >= 2x) and the peak
#    RSS (target < 64 MB for ehrport). Every round checks both round trips.
#
# ehrport encrypts for the public HPKE key of a key directory (no secret
# needed); decrypt unlocks that directory's private key with its passphrase
# (argon2id, 32 MiB), which is part of every real decrypt. age uses an
# X25519 identity file, which needs no unlocking.
#
# Unless BENCH_RECORD=0 it writes the "## Encryption" section of
# docs/BENCHMARKS.md (a hand-written "### Analysis" subsection is kept), its
# entries of docs/benchmarks.json and the Summary made from them.
#
# Usage: bash scripts/bench-crypto.sh [ROUNDS]
# Env:   BENCH_MIB (1024), BENCH_DIR (/dev/shm when it has room, so that the
#        disk does not dominate; else TMPDIR), BENCH_MICRO (1: run part 1),
#        BENCH_MICRO_ITERS (30), BENCH_RECORD (1).
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/benchlib.sh
. "$EHRPORT_ROOT/scripts/benchlib.sh"
cd "$EHRPORT_ROOT"

ROUNDS=${1:-5}
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive number"
MIB=${BENCH_MIB:-1024}
MICRO=${BENCH_MICRO:-1}
ITERS=${BENCH_MICRO_ITERS:-30}
RECORD=${BENCH_RECORD:-1}
T_START=$(now_ms)

[[ -x /usr/bin/time ]] || die "/usr/bin/time is missing (apt-get install -y time)"
require jq
if ! command -v age >/dev/null || ! command -v age-keygen >/dev/null; then
	log "installing age"
	SUDO=""
	[[ $(id -u) -eq 0 ]] || SUDO="sudo"
	$SUDO apt-get install -y age >/dev/null 2>&1 || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y age >/dev/null; }
fi
command -v age >/dev/null || die "age could not be installed"

if [[ -z "${BENCH_DIR:-}" ]]; then
	need=$(((MIB * 5 + 512) * 1024))
	if [[ -d /dev/shm ]] && (($(df -Pk /dev/shm | awk 'NR==2{print $4}') > need)); then BENCH_DIR=/dev/shm; else BENCH_DIR=${TMPDIR:-/tmp}; fi
fi
W=$(mktemp -d "$BENCH_DIR/bench-crypto.XXXXXX")
trap 'rm -rf "$W"' EXIT
log "work folder $W"

# Part 1: the micro-benchmark, -cpu 1 then 2.
if [[ $MICRO == 1 ]]; then
	log "go test ./crypto -bench Ratio -cpu 1,2 -benchtime ${ITERS}x"
	go test ./crypto -run '^$' -bench '^BenchmarkRatio$' -cpu 1,2 -benchtime "${ITERS}x" >"$W/micro.txt" 2>&1 ||
		{ cat "$W/micro.txt" >&2; die "the micro-benchmark failed"; }
	# One row per -cpu and path: "cpus path MB/s rawMB/s ratio".
	awk '/^BenchmarkRatio/ {
		cpus = 1; if (match($1, /-[0-9]+$/)) cpus = substr($1, RSTART + 1)
		delete m; for (i = 5; i < NF; i += 2) m[$(i + 1)] = $i
		n = split("encrypt encryptReadFrom decrypt decryptWriteTo", ps, " ")
		for (k = 1; k <= n; k++) {
			p = ps[k]; raw = (p ~ /^decrypt/) ? "rawGCMopen-MB/s" : "rawGCMseal-MB/s"
			print cpus, p, m[p "-MB/s"], m[raw], m[p "/raw"]
		}}' "$W/micro.txt" >"$W/micro.rows"
fi

# Part 2: the commands on one file.
BIN="$W/ehrport"
build_ehrport "$BIN"
export EHRPORT_PASSPHRASE="bench passphrase $$"
"$BIN" keys init --keys "$W/keys" >/dev/null
age-keygen -o "$W/age.key" 2>/dev/null
AGE_PUB=$(age-keygen -y "$W/age.key")
log "making $MIB MiB of random data"
head -c $((MIB << 20)) /dev/urandom >"$W/plain"
B=exports/bench/Patient.000.ndjson

ENC_EHR=("$BIN" encrypt --recipient "$W/keys/hpke.pub.json" --binding "$B" "$W/plain" "$W/ct.ehr")
ENC_AGE=(age -r "$AGE_PUB" -o "$W/ct.age" "$W/plain")
DEC_EHR=("$BIN" decrypt --keys "$W/keys" --binding "$B" "$W/ct.ehr" "$W/out.ehr")
DEC_AGE=(age -d -i "$W/age.key" -o "$W/out.age" "$W/ct.age")

# run NAME CMD...: appends "ms rss_kb cpu_s" of one run to $W/NAME.
run() {
	local name=$1 ms rss cpu rc
	shift
	read -r ms rss cpu rc < <(bench_run "$W/last" "$@")
	((rc == 0)) || { cat "$W/last.err" >&2; die "$name failed (exit $rc)"; }
	echo "$ms $rss $cpu" >>"$W/$name"
}

for r in $(seq 1 "$ROUNDS"); do
	log "round $r/$ROUNDS"
	rm -f "$W/ct.ehr" "$W/ct.age" "$W/out.ehr" "$W/out.age"
	if ((r % 2)); then
		run ehr_enc "${ENC_EHR[@]}"
		run age_enc "${ENC_AGE[@]}"
		run ehr_dec "${DEC_EHR[@]}"
		run age_dec "${DEC_AGE[@]}"
	else
		run age_enc "${ENC_AGE[@]}"
		run ehr_enc "${ENC_EHR[@]}"
		run age_dec "${DEC_AGE[@]}"
		run ehr_dec "${DEC_EHR[@]}"
	fi
	cmp -s "$W/plain" "$W/out.ehr" || die "ehrport round trip differs"
	cmp -s "$W/plain" "$W/out.age" || die "age round trip differs"
done

col() { awk -v c="$2" '{print $c}' "$W/$1"; }
# ratio OP: per-round age/ehrport wall-time ratios, one a line.
ratio() { paste -d' ' "$W/age_$1" "$W/ehr_$1" | awk '{printf "%.3f\n", $1 / $4}'; }

{
	echo "## Encryption"
	echo
	echo "Measured $(date -u '+%F %H:%M UTC') by \`scripts/bench-crypto.sh $ROUNDS\` in $(since "$T_START")."
	echo
	echo "### Machine"
	echo
	bench_machine
	echo "- age $(age --version 2>/dev/null | head -n 1)"
	echo
	if [[ $MICRO == 1 ]]; then
		echo "### Go micro-benchmark against raw AES-256-GCM (64 MiB in memory, ${ITERS} iterations)"
		echo
		# shellcheck disable=SC2016
		echo '`go test ./crypto -run '"'^\$'"' -bench '"'^BenchmarkRatio\$'"' -cpu 1,2 -benchtime '"${ITERS}x"'`: each iteration runs raw GCM (one Seal or Open per MiB, one goroutine) and every ehrport path on the same buffers in turn; figures are medians over iterations of MB/s and of the per-iteration ratio to raw GCM. `encrypt`: 1 MiB Writes; `encryptReadFrom`: io.Copy from a reader (the path for pipes); `decrypt`: 1 MiB Reads; `decryptWriteTo`: io.Copy to a writer (the path of restore and of pipes). Files take the positional path (`stream.SealAt`, `stream.OpenAt`), measured by part 2. Target: >= 0.75x raw GCM on one core.'
		echo
		echo "| cores | path | MB/s | raw GCM MB/s | ratio to raw GCM |"
		echo "|---|---|---|---|---|"
		while read -r cpus p mbps raw ratio; do
			echo "| $cpus | $p | $mbps | $raw | ${ratio}x |"
		done <"$W/micro.rows"
		echo
	fi
	echo "### Commands against age (${MIB} MiB random file in $BENCH_DIR, $ROUNDS alternating rounds)"
	echo
	echo '```sh'
	echo "ehrport encrypt --recipient keys/hpke.pub.json --binding $B plain ct.ehr"
	echo "age -r AGE_PUBLIC_KEY -o ct.age plain"
	echo "ehrport decrypt --keys keys --binding $B ct.ehr out.ehr   # unlocks the key directory (argon2id, 32 MiB) first"
	echo "age -d -i age.key -o out.age ct.age"
	echo '```'
	echo
	echo "| command | median ms (min-max) | MiB/s at median | median CPU s | peak RSS MB |"
	echo "|---|---|---|---|---|"
	for op in ehr_enc age_enc ehr_dec age_dec; do
		read -r med lo hi < <(col $op 1 | bench_stat3)
		read -r cpu _ _ < <(col $op 3 | bench_stat3)
		rss=$(col $op 2 | sort -n | tail -n 1)
		awk -v op="$op" -v med="$med" -v lo="$lo" -v hi="$hi" -v cpu="$cpu" -v mib="$MIB" -v rss="$rss" 'BEGIN {
			split("ehr_enc:ehrport encrypt,age_enc:age encrypt,ehr_dec:ehrport decrypt,age_dec:age decrypt", n, ",")
			for (i in n) { split(n[i], kv, ":"); name[kv[1]] = kv[2] }
			printf "| %s | %d (%d-%d) | %.0f | %.2f | %.1f |\n", name[op], med, lo, hi, mib * 1000 / med, cpu, rss / 1024}'
	done
	echo
	for op in enc dec; do
		read -r med lo hi < <(ratio $op | bench_stat3)
		word=encrypt
		[[ $op == dec ]] && word=decrypt
		echo "- $word: ehrport is **${med}x** age's speed (median of the $ROUNDS per-round ratios; min $lo, max $hi; target >= 2x)"
	done
	peak=$(cat "$W/ehr_enc" "$W/ehr_dec" | awk '{print $2}' | sort -n | tail -n 1)
	awk -v p="$peak" 'BEGIN {printf "- ehrport peak RSS: **%.1f MB** over every run (target < 64 MB)\n", p / 1024}'
} >"$W/section.md"

# Entries of docs/benchmarks.json: throughput at the median time, the
# median per-round ratio, and peak RSS against issue #3's 64 MB limit.
ENTRIES="$W/entries.json"
for op in enc dec; do
	word=encrypt
	[[ $op == dec ]] && word=decrypt
	read -r e _ _ < <(col "ehr_$op" 1 | bench_stat3)
	read -r a _ _ < <(col "age_$op" 1 | bench_stat3)
	read -r ratio _ _ < <(ratio $op | bench_stat3)
	jq -nc --arg name "file encryption ${MIB} MiB: $word throughput" --arg peer "age $([[ $op == dec ]] && echo -d || echo -r)" \
		--argjson e "$(awk -v m="$MIB" -v ms="$e" 'BEGIN {print m * 1000 / ms}')" --argjson p "$(awk -v m="$MIB" -v ms="$a" 'BEGIN {print m * 1000 / ms}')" \
		--argjson ratio "$ratio" \
		'def r2: . * 100 | round / 100; {name: $name, unit: "MiB/s", ehrport: ($e | r2), peer_name: $peer, peer: ($p | r2), ratio: ($ratio | r2), better: "higher"}' >>"$ENTRIES"
	e=$(col "ehr_$op" 2 | sort -n | tail -n 1)
	a=$(col "age_$op" 2 | sort -n | tail -n 1)
	bench_rss_entry "file encryption ${MIB} MiB: $word peak RSS" "$(awk -v k="$e" 'BEGIN {print k / 1024}')" 64 \
		"age $([[ $op == dec ]] && echo -d || echo -r)" "$(awk -v k="$a" 'BEGIN {print k / 1024}')" >>"$ENTRIES"
done

cat "$W/section.md"
if [[ $RECORD == 1 ]]; then
	bench_section "$W/section.md"
	bench_entries "file encryption " "$ENTRIES"
	bench_summary
	log "wrote the Encryption section of $BENCH_DOC and its entries of $BENCH_JSON"
else
	log "not recorded (BENCH_RECORD=0); entries for $BENCH_JSON:"
	cat "$ENTRIES" >&2
fi
