#!/usr/bin/env bash
# The scale curve: `ehrport export` of generated FHIR data to cloud A
# (MinIO) and `ehrport migrate` of that export to cloud B (versitygw), at
# 10k, 100k and 1M resources, with wall time, CPU time and peak RSS
# (/usr/bin/time -v) of every run. Each round runs every size, in a rotating
# order, so that the machine's drift hits every size alike.
#
# The runs go through cmd/internal/benchchart, which writes the summary
# docs/bench/scale.json (runs, medians, the exponent k of time ∝
# resources^k, RSS growth) and the chart docs/bench/scale.svg, and, unless
# BENCH_RECORD=0, the "## Scale curve" section of docs/BENCHMARKS.md.
#
# Usage: bash scripts/bench-scale.sh [ROUNDS]      (default 3)
#        BENCH_SCALE_REDRAW=1 bash scripts/bench-scale.sh: no measuring;
#        redraw the chart and rewrite the section from docs/bench/scale.json
# Env:   BENCH_SCALE_RESOURCES ("10000 100000 1000000": about that many
#        resources each; testdata makes ~18.9 per patient), BENCH_RECORD (1),
#        BENCH_TIMEOUT (seconds one command may take; 3600), TMPDIR (local
#        disk for the generated data: about 0.75 GB per million resources).
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/benchlib.sh
. "$EHRPORT_ROOT/scripts/benchlib.sh"
cd "$EHRPORT_ROOT"

ROUNDS=${1:-3}
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive number"
read -r -a SIZES <<<"${BENCH_SCALE_RESOURCES:-10000 100000 1000000}"
RECORD=${BENCH_RECORD:-1}
RSS_LIMIT=256
TITLE="ehrport export (to MinIO) and migrate (MinIO to versitygw): time and peak RSS by size"
T_START=$(now_ms)

if [[ ${BENCH_SCALE_REDRAW:-0} != 1 ]]; then
	export PATH="$EHRPORT_BIN:$PATH"
	[[ -x /usr/bin/time ]] || die "/usr/bin/time is missing (apt-get install -y time)"
	command -v mc >/dev/null || bash scripts/install-peers.sh >&2
	require mc jq
	bench_testbed

	W=$(mktemp -d "${TMPDIR:-/tmp}/bench-scale.XXXXXX")
	BUCKET="ehrbench-scale-$(date -u +%Y%m%d%H%M%S)-$$"
	cleanup() {
		local rc=$?
		set +e
		mc rb --force "bencha/$BUCKET" >/dev/null 2>&1
		mc rb --force "benchb/$BUCKET" >/dev/null 2>&1
		rm -rf "$W"
		exit $rc
	}
	trap cleanup EXIT
	trap 'exit 130' INT TERM
	log "work folder $W, bucket $BUCKET on both clouds, sizes ${SIZES[*]}, $ROUNDS rounds"

	EHR="$W/ehrport"
	build_ehrport "$EHR"
	export EHRPORT_PASSPHRASE="bench passphrase $$"
	"$EHR" keys init --keys "$W/keys" >/dev/null 2>&1
	bench_mc "$W"
	mc mb --quiet "bencha/$BUCKET" >/dev/null
	mc mb --quiet "benchb/$BUCKET" >/dev/null

	declare -A N BYTES
	for size in "${SIZES[@]}"; do
		[[ $size =~ ^[1-9][0-9]*$ ]] || die "BENCH_SCALE_RESOURCES: '$size' is not a number"
		# 100,000 resources from 5,280 patients (seed 1): the generator's ratio.
		patients=$(((size * 5280 + 50000) / 100000))
		((patients > 0)) || patients=1
		"$EHR" testdata generate -q --patients "$patients" --seed 1 --out "$W/gen-$size" >/dev/null
		N[$size]=$(cat "$W/gen-$size"/*.ndjson | wc -l)
		BYTES[$size]=$(cat "$W/gen-$size"/*.ndjson | wc -c)
		log "size $size: $patients patients, ${N[$size]} resources, ${BYTES[$size]} bytes"
	done

	RUNS="$W/runs.jsonl"
	: >"$RUNS"
	record() { # OP SIZE ROUND "ms rss cpu rc" OK
		local ms rss cpu rc
		read -r ms rss cpu rc <<<"$4"
		jq -nc --arg op "$1" --argjson n "${N[$2]}" --argjson b "${BYTES[$2]}" --argjson r "$3" \
			--argjson ms "$ms" --argjson rss "$rss" --argjson cpu "$cpu" --argjson ok "$([[ $5 == 1 && $rc == 0 ]] && echo true || echo false)" \
			'{op: $op, resources: $n, bytes: $b, round: $r, seconds: ($ms / 1000), cpu_s: $cpu, rss_mb: ($rss / 1024 * 100 | round / 100), ok: $ok}' >>"$RUNS"
		log "  $1 ${N[$2]}: $((ms / 1000)).$((ms % 1000 / 100)) s, $((rss / 1024)) MB peak, $cpu CPU-s, exit $rc"
		if [[ $5 != 1 || $rc != 0 ]]; then
			log "FAILED: $1 ${N[$2]} round $3"
			tail -n 5 "$W/run.err" | sed 's/^/    /' >&2
		fi
	}

	for ((r = 1; r <= ROUNDS; r++)); do
		k=${#SIZES[@]}
		for ((i = 0; i < k; i++)); do
			size=${SIZES[$(((r - 1 + i) % k))]}
			ref="$BUCKET/s$size-r$r"
			log "round $r/$ROUNDS: ${N[$size]} resources"
			res=$(bench_run "$W/run" "$EHR" --json export --from "$W/gen-$size" --to "clouda:$ref" --keys "$W/keys")
			ok=0
			jq -e --argjson n "${N[$size]}" '.resources == $n and .signed' "$W/run.out" >/dev/null 2>&1 && ok=1
			record export "$size" "$r" "$res" "$ok"
			if [[ $ok == 1 ]]; then
				res=$(bench_run "$W/run" "$EHR" --json migrate --from "clouda:$ref" --to "cloudb:$ref")
				ok=0
				jq -e '.manifest_written == true' "$W/run.out" >/dev/null 2>&1 && ok=1
				record migrate "$size" "$r" "$res" "$ok"
			fi
			mc rm --recursive --force "bencha/$ref/" >/dev/null 2>&1 || true
			mc rm --recursive --force "benchb/$ref/" >/dev/null 2>&1 || true
		done
	done

	META=$(jq -nc --arg date "$(date -u +%FT%TZ)" --arg rev "$(bench_rev)" --arg go "$(go env GOVERSION)" \
		--argjson cores "$(nproc)" --arg cpu "$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)" \
		--arg load "$(cut -d' ' -f1-3 /proc/loadavg)" --argjson rounds "$ROUNDS" \
		'{date: $date, commit: $rev, go: $go, cores: $cores, cpu: $cpu, load_at_end: $load, rounds: $rounds,
		  export: "ehrport --json export --from GEN --to clouda:BUCKET/PREFIX --keys KEYS",
		  migrate: "ehrport --json migrate --from clouda:BUCKET/PREFIX --to cloudb:BUCKET/PREFIX"}')
	OUT="$W/bench"
	[[ $RECORD == 1 ]] && OUT=docs/bench
	mkdir -p "$OUT"
	go run ./cmd/internal/benchchart -runs "$RUNS" -meta "$META" -rss-limit "$RSS_LIMIT" -title "$TITLE" \
		-json "$OUT/scale.json" -svg "$OUT/scale.svg" -md "$W/table.md"
else
	# Only redraw the chart and rewrite the section from the recorded runs.
	W=$(mktemp -d "${TMPDIR:-/tmp}/bench-scale.XXXXXX")
	trap 'rm -rf "$W"' EXIT
	OUT=docs/bench
	go run ./cmd/internal/benchchart -from "$OUT/scale.json" -rss-limit "$RSS_LIMIT" -title "$TITLE" \
		-json "$OUT/scale.json" -svg "$OUT/scale.svg" -md "$W/table.md"
fi
ROUNDS=$(jq -r '.meta.rounds' "$OUT/scale.json")
echo "scale curve, $ROUNDS rounds"
cat "$W/table.md"

if [[ $RECORD != 1 ]]; then
	log "BENCH_RECORD=$RECORD: docs not written; done in $(since "$T_START")"
	exit 0
fi
verdict() { # OP: the targets, from the summary
	jq -r --arg op "$1" --argjson lim "$RSS_LIMIT" '.fits[] | select(.op == $op) |
		"- `ehrport \($op)`: " + (if .sizes < 2 then "one size only, no exponent" else
		"CPU time ∝ resources^\(.cpu_exponent * 100 | round / 100) over all sizes and ^\(.last_cpu_exponent * 100 | round / 100) between the two largest (wall time: ^\(.time_exponent * 100 | round / 100) and ^\(.last_time_exponent * 100 | round / 100)): " +
		(if (.cpu_exponent <= 1.15 and .last_cpu_exponent <= 1.15) then "**linear**" else "**not linear**" end) +
		"; peak RSS \(.rss_growth * 100 | round / 100)x from the smallest size to the largest: " +
		(if .rss_growth <= 1.5 then "**flat**" else "**grows**" end) end) +
		"; largest peak \(.max_rss_mb | round) MB: " + (if .max_rss_mb <= $lim then "**under \($lim) MB**" else "**over \($lim) MB**" end) + "."' docs/bench/scale.json
}
{
	echo "## Scale curve"
	echo
	echo "Written by \`scripts/bench-scale.sh $ROUNDS\` (rerun: \`bash scripts/bench-scale.sh [ROUNDS]\`, sizes from \`BENCH_SCALE_RESOURCES\`; or \`make bench\`). Data: [docs/bench/scale.json](bench/scale.json), every run included; the chart is drawn from it by \`go run ./cmd/internal/benchchart -from docs/bench/scale.json -svg docs/bench/scale.svg\`."
	echo
	echo "Each size is generated once (\`ehrport testdata generate --patients P --seed 1\`, about 18.9 resources per patient), then each round, in a rotating order of sizes, exports it to cloud A and migrates that export to cloud B, both over TLS on loopback:"
	echo
	echo '```sh'
	echo 'ehrport --json export --from GEN --to clouda:BUCKET/PREFIX --keys KEYS     # validate, encrypt, sign (defaults)'
	echo 'ehrport --json migrate --from clouda:BUCKET/PREFIX --to cloudb:BUCKET/PREFIX # copy and prove every object (defaults)'
	echo '```'
	echo
	jq -r '.meta | "- \(.cores) cores (\(.cpu)); load average at the end of the run: \(.load_at_end) (the machine is shared with other builds and tests)\n- ehrport built from the tree at \(.commit) with \(.go); measured on \(.date)"' "$OUT/scale.json"
	echo
	echo "![Scale curve: time and peak RSS of export and migrate at each size](bench/scale.svg)"
	echo
	cat "$W/table.md"
	echo
	echo "### Targets"
	echo
	verdict export
	verdict migrate
	echo
	echo "Linear means CPU-time exponents of at most 1.15, over all sizes (where the fixed start-up, such as unlocking the passphrase-protected keys, weighs on the smallest size and pulls the exponent down) and between the two largest sizes (where it does not). CPU time is the verdict's measure because wall time on this shared machine swings by 2-5x between rounds of the same size (see min-max); flat means the largest peak RSS at the largest size is at most 1.5x the one at the smallest. Peak RSS is the \"Maximum resident set size\" of \`/usr/bin/time -v\`."
} >"$W/section.md"
bench_section "$W/section.md"
bench_summary
log "wrote docs/bench/scale.json, docs/bench/scale.svg and the Scale curve section of $BENCH_DOC; done in $(since "$T_START")"
