#!/usr/bin/env bash
# The Go micro-benchmarks (testing.B) of the packages: the NDJSON, gzip and
# Bundle readers and validation (fhir), encryption against raw AES-GCM and
# header parsing (crypto). Runs them COUNT times and summarises them with
# benchstat (a pinned tool of go.mod: go tool benchstat).
#
# The raw output is kept in docs/bench/micro.txt, so that a rerun is
# compared with the last recorded one (benchstat OLD NEW, printed, not
# recorded). Unless BENCH_RECORD=0 it writes docs/bench/micro.txt and the
# "## Micro-benchmarks" section of docs/BENCHMARKS.md.
#
# Usage: bash scripts/bench-micro.sh [COUNT]     (default 6: benchstat needs
#        at least 6 samples for a confidence interval)
# Env:   BENCH_MICRO_FROM (a raw output file: rewrite the section from it,
#        run nothing), BENCH_MICRO_PKGS ("./fhir ./crypto"), BENCH_MICRO_RUN (benchmark
#        regexp, "."), BENCH_MICRO_TIME (-benchtime, "1s"), BENCH_RECORD (1).
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/benchlib.sh
. "$EHRPORT_ROOT/scripts/benchlib.sh"
cd "$EHRPORT_ROOT"

COUNT=${1:-6}
[[ "$COUNT" =~ ^[1-9][0-9]*$ ]] || die "COUNT must be a positive number"
read -r -a PKGS <<<"${BENCH_MICRO_PKGS:-./fhir ./crypto}"
RUN=${BENCH_MICRO_RUN:-.}
BT=${BENCH_MICRO_TIME:-1s}
RECORD=${BENCH_RECORD:-1}
T_START=$(now_ms)

W=$(mktemp -d "${TMPDIR:-/tmp}/bench-micro.XXXXXX")
trap 'rm -rf "$W"' EXIT
CMD="go test -run '^\$' -bench '$RUN' -benchmem -benchtime $BT -count $COUNT ${PKGS[*]}"
if [[ -n ${BENCH_MICRO_FROM:-} ]]; then
	# Only rewrite the section from a run already made (its raw output).
	cp "$BENCH_MICRO_FROM" "$W/new.txt"
	COUNT=$(awk '/^Benchmark/ {n[$1]++} END {for (k in n) if (n[k] > m) m = n[k]; print m + 0}' "$W/new.txt")
	CMD="go test -run '^\$' -bench '$RUN' -benchmem -benchtime $BT -count $COUNT ${PKGS[*]}"
else
	log "$CMD"
	go test -run '^$' -bench "$RUN" -benchmem -benchtime "$BT" -count "$COUNT" "${PKGS[@]}" >"$W/new.txt" 2>"$W/err.txt" ||
		{ cat "$W/new.txt" "$W/err.txt" >&2; die "the benchmarks failed"; }
fi
# benchstat names each column after its file, so it runs in $W on short
# names; built once from the version go.mod pins.
go build -o "$W/benchstat" golang.org/x/perf/cmd/benchstat
(cd "$W" && ./benchstat new.txt) >"$W/stat.txt"
cat "$W/stat.txt"
if [[ -s docs/bench/micro.txt && -z ${BENCH_MICRO_FROM:-} ]]; then
	echo
	echo "the last recorded run (docs/bench/micro.txt) against this one:"
	cp docs/bench/micro.txt "$W/recorded.txt"
	(cd "$W" && ./benchstat recorded.txt new.txt) || true
fi

# One goroutine, from the medians: the share of BenchmarkExport (walk and
# check) that is not BenchmarkNDJSONRead (walk only) is validation with
# duplicate and reference checks.
share=$(awk '$1 ~ /^BenchmarkNDJSONRead-|^BenchmarkExport-/ {
		n = $1; sub(/-[0-9]+$/, "", n)
		for (i = 3; i < NF; i++) if ($(i + 1) == "ns/op") v[n] = v[n] " " $i
	}
	function med(s,   a, k, i, j, t) {
		k = split(s, a, " "); if (!k) return 0
		for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (a[j] + 0 < a[i] + 0) {t = a[i]; a[i] = a[j]; a[j] = t}
		return k % 2 ? a[(k + 1) / 2] : (a[k / 2] + a[k / 2 + 1]) / 2
	}
	END {r = med(v["BenchmarkNDJSONRead"]); e = med(v["BenchmarkExport"]); if (r > 0 && e > 0) printf "%.0f", 100 * (1 - r / e)}' "$W/new.txt")

if [[ $RECORD != 1 ]]; then
	log "BENCH_RECORD=$RECORD: docs not written; done in $(since "$T_START")"
	exit 0
fi
mkdir -p docs/bench
[[ -n ${BENCH_MICRO_FROM:-} ]] || cp "$W/new.txt" docs/bench/micro.txt
{
	echo "## Micro-benchmarks"
	echo
	echo "Written by \`scripts/bench-micro.sh $COUNT\` on $(date -u +%F) (rerun: \`bash scripts/bench-micro.sh [COUNT]\`, or \`make bench\`): \`$CMD\`, summarised by \`go tool benchstat\` (golang.org/x/perf, pinned in go.mod). Raw output: [docs/bench/micro.txt](bench/micro.txt); a rerun prints \`benchstat\` of the recorded run against the new one."
	echo
	bench_machine
	echo
	echo "What they measure, in the package's own words:"
	echo
	echo "- \`fhir\`: \`NDJSONRead\` the walker alone (read, check JSON syntax, compact) over about 50,000 generated resources; \`NDJSONGzipRead\` the same gzipped; \`BundleRead\` transaction Bundles kept whole (streamed entry by entry) and split; \`Validate\` per-resource validation with the typed R4 model, \`ValidateNoTyped\` without it; \`Export\` walker and checker (validation, duplicates, references) on one goroutine, \`ExportParallel\` through \`Checker.Run\` on all cores."
	echo "- \`crypto\`: \`RawGCM\`/\`RawGCMOpen\` plain AES-256-GCM in 1 MiB chunks, the yardstick; \`Encrypt\`/\`Decrypt\` the v1 format over 64 MiB; \`Ratio\` both in the same iterations (\`encrypt/raw\`, \`decrypt/raw\`: ehrport's throughput as a share of raw GCM's); \`ParseHeader\` a v1 header with one and two recipient stanzas, no key; \`OpenHeader\` parse, unwrap the DEK, check commitment and MAC, read 1 KiB."
	if [[ -n $share ]]; then
		echo
		echo "On one goroutine, validation with the duplicate and reference checks takes **$share%** of walking and checking (1 - NDJSONRead / Export, medians of sec/op); the export profile in the Export section gives its share of a whole export."
	fi
	echo
	echo
	echo "benchstat prints the median of the $COUNT runs and, after ±, the 95% confidence interval of it (wide here: the machine is shared); \`encrypt/raw\` and the like are ratios measured within the same iterations, which noise affects far less than absolute rates."
	echo
	echo '```'
	cat "$W/stat.txt"
	echo '```'
} >"$W/section.md"
bench_section "$W/section.md"
bench_summary
log "wrote docs/bench/micro.txt and the Micro-benchmarks section of $BENCH_DOC; done in $(since "$T_START")"
