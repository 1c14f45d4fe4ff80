#!/usr/bin/env bash
# Times `ehrport encrypt`/`decrypt` against `age -r`/`age -d` on a 1 GiB
# random file, alternating the tools for ROUNDS rounds (default 5), and prints
# the medians, the ehrport/age throughput ratio (target >= 2x) and the peak
# RSS of each (from /usr/bin/time -v; target < 64 MB for ehrport).
#
# Usage: bash scripts/bench-crypto.sh [ROUNDS]
# Env:   BENCH_DIR (default: /dev/shm when it has room, so that the disk does
#        not dominate; else a temporary folder), BENCH_MIB (default 1024).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
ROUNDS=${1:-5}
MIB=${BENCH_MIB:-1024}
log() { printf 'bench-crypto: %s\n' "$*" >&2; }
die() { printf 'bench-crypto: error: %s\n' "$*" >&2; exit 1; }

[[ -x /usr/bin/time ]] || die "/usr/bin/time is missing (apt-get install -y time)"
if ! command -v age >/dev/null || ! command -v age-keygen >/dev/null; then
	log "installing age"
	SUDO=""; [[ $(id -u) -eq 0 ]] || SUDO="sudo"
	$SUDO apt-get install -y age >/dev/null 2>&1 || { $SUDO apt-get update >/dev/null && $SUDO apt-get install -y age >/dev/null; }
fi
command -v age >/dev/null || die "age could not be installed"

if [[ -z "${BENCH_DIR:-}" ]]; then
	need=$(( (MIB * 5 + 512) * 1024 ))
	if [[ -d /dev/shm ]] && (( $(df -Pk /dev/shm | awk 'NR==2{print $4}') > need )); then BENCH_DIR=/dev/shm; else BENCH_DIR=${TMPDIR:-/tmp}; fi
fi
W=$(mktemp -d "$BENCH_DIR/bench-crypto.XXXXXX")
trap 'rm -rf "$W"' EXIT
log "work folder $W"

BIN="$W/ehrport"
(cd "$ROOT" && go build -o "$BIN" ./cmd/ehrport)
export EHRPORT_PASSPHRASE="bench passphrase $$"
"$BIN" keys init --keys "$W/keys" >/dev/null
age-keygen -o "$W/age.key" 2>/dev/null
AGE_PUB=$(age-keygen -y "$W/age.key")

log "making ${MIB} MiB of random data"
head -c $((MIB << 20)) /dev/urandom >"$W/plain"
B=exports/bench/Patient.000.ndjson

# run NAME CMD...: runs CMD under /usr/bin/time -v; appends "secs rss_kb" to $W/NAME.
run() {
	local name=$1; shift
	local t0 t1
	t0=$(date +%s%N)
	/usr/bin/time -v -o "$W/time.out" "$@" >/dev/null
	t1=$(date +%s%N)
	local rss
	rss=$(awk -F: '/Maximum resident set size/ {gsub(/ /,"",$2); print $2}' "$W/time.out")
	echo "$(( (t1 - t0) / 1000000 )) $rss" >>"$W/$name"
}

for r in $(seq 1 "$ROUNDS"); do
	log "round $r/$ROUNDS"
	rm -f "$W/ct.ehr" "$W/ct.age" "$W/out.ehr" "$W/out.age"
	if (( r % 2 )); then
		run ehr_enc "$BIN" encrypt --recipient "$W/keys/hpke.pub.json" --binding "$B" "$W/plain" "$W/ct.ehr"
		run age_enc age -r "$AGE_PUB" -o "$W/ct.age" "$W/plain"
		run ehr_dec "$BIN" decrypt --keys "$W/keys" --binding "$B" "$W/ct.ehr" "$W/out.ehr"
		run age_dec age -d -i "$W/age.key" -o "$W/out.age" "$W/ct.age"
	else
		run age_enc age -r "$AGE_PUB" -o "$W/ct.age" "$W/plain"
		run ehr_enc "$BIN" encrypt --recipient "$W/keys/hpke.pub.json" --binding "$B" "$W/plain" "$W/ct.ehr"
		run age_dec age -d -i "$W/age.key" -o "$W/out.age" "$W/ct.age"
		run ehr_dec "$BIN" decrypt --keys "$W/keys" --binding "$B" "$W/ct.ehr" "$W/out.ehr"
	fi
	cmp -s "$W/plain" "$W/out.ehr" || die "ehrport round trip differs"
	cmp -s "$W/plain" "$W/out.age" || die "age round trip differs"
done

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
col() { awk -v c="$2" '{print $c}' "$W/$1"; }
echo "ehrport vs age, ${MIB} MiB random file, ${ROUNDS} alternating rounds, folder $BENCH_DIR, $(nproc) cores"
printf '%-16s %10s %10s %12s\n' op median_ms MiB/s peak_RSS_MB
for op in ehr_enc age_enc ehr_dec age_dec; do
	ms=$(col $op 1 | median)
	rss=$(col $op 2 | sort -n | tail -1)
	awk -v op="$op" -v ms="$ms" -v mib="$MIB" -v rss="$rss" 'BEGIN {printf "%-16s %10d %10.0f %12.1f\n", op, ms, mib * 1000 / ms, rss / 1024}'
done
for op in enc dec; do
	e=$(col ehr_$op 1 | median); a=$(col age_$op 1 | median)
	awk -v op="$op" -v a="$a" -v e="$e" 'BEGIN {printf "ratio %s: ehrport is %.2fx age (target >= 2x)\n", op, a / e}'
done
peak=$(cat "$W/ehr_enc" "$W/ehr_dec" | awk '{print $2}' | sort -n | tail -1)
awk -v p="$peak" 'BEGIN {printf "ehrport peak RSS: %.1f MB (target < 64 MB)\n", p / 1024}'
