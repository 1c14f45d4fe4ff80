#!/usr/bin/env bash
# Measures `ehrport export` of about 100k generated FHIR resources (ehrport
# testdata generate) against the pipeline that does less: `age -r PUB` over
# the same NDJSON files, with no validation, to a folder and, piped into
# `mc pipe`, to cloud A (MinIO) of the test bed.
#
# Each round runs, for each target, ehrport and the pipeline one after the
# other (odd rounds ehrport first, even rounds the pipeline first). Prints
# and records medians of time, resources/s, MB/s, CPU seconds and peak RSS
# (/usr/bin/time -v), and the median and min-max of the per-round ratios
# (pipeline time / ehrport time: above 1 means ehrport is faster).
#
# Then it profiles export with pprof (BenchmarkExportLocal of
# cmd/internal/export, -cpuprofile) and reports where its CPU goes: the
# share of validation, and the top functions.
#
# Unless BENCH_RECORD=0 it writes the "## Export" section of
# docs/BENCHMARKS.md and the entries named "export ..." of
# docs/benchmarks.json.
#
# Usage: bash scripts/bench-export.sh [ROUNDS]      (default 5)
# Env:   BENCH_EXPORT_PATIENTS (5280: about 100,000 resources),
#        BENCH_EXPORT_TARGETS ("folder cloud"), BENCH_PEER_JOBS (files the
#        pipeline runs at a time; default: the number of cores),
#        BENCH_EXPORT_PROFILE (1; 0 skips pprof), BENCH_RECORD (1),
#        BENCH_TIMEOUT (seconds one command may take), TMPDIR (local disk
#        for the data and the folder exports).
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=scripts/benchlib.sh
. "$EHRPORT_ROOT/scripts/benchlib.sh"
cd "$EHRPORT_ROOT"

ROUNDS=${1:-5}
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive number"
PATIENTS=${BENCH_EXPORT_PATIENTS:-5280}
TARGETS=${BENCH_EXPORT_TARGETS:-folder cloud}
JOBS=${BENCH_PEER_JOBS:-$(nproc)}
PROFILE=${BENCH_EXPORT_PROFILE:-1}
RECORD=${BENCH_RECORD:-1}
T_START=$(now_ms)

export PATH="$EHRPORT_BIN:$PATH"
[[ -x /usr/bin/time ]] || die "/usr/bin/time is missing (apt-get install -y time)"
if ! command -v age >/dev/null || ! command -v mc >/dev/null; then
	log "peer tools missing: running scripts/install-peers.sh"
	bash scripts/install-peers.sh >&2
fi
require age age-keygen mc jq
[[ " $TARGETS " == *" cloud "* ]] && bench_testbed

W=$(mktemp -d "${TMPDIR:-/tmp}/bench-export.XXXXXX")
RUN="ehrbench-export-$(date -u +%Y%m%d%H%M%S)-$$"
BUCKET="$RUN"
cleanup() {
	local rc=$?
	set +e
	if [[ $rc != 0 && -s "$W/results" ]]; then
		log "failed with exit $rc; the raw results so far (target tool round ms rss_kb cpu_s ok minio_cpu_s):"
		cat "$W/results" >&2
	fi
	[[ " $TARGETS " == *" cloud "* ]] && mc rb --force "bencha/$BUCKET" >/dev/null 2>&1
	rm -rf "$W"
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log "run $RUN, work folder $W, $ROUNDS rounds, targets: $TARGETS"

EHR="$W/ehrport" # a private build: a concurrent rebuild of bin/ehrport cannot change it mid-run
build_ehrport "$EHR"
export EHRPORT_PASSPHRASE="bench passphrase $$"
"$EHR" keys init --keys "$W/keys" >/dev/null 2>&1
age-keygen -o "$W/age.key" 2>/dev/null
PUB=$(age-keygen -y "$W/age.key")
if [[ " $TARGETS " == *" cloud "* ]]; then
	bench_mc "$W"
	mc mb --quiet "bencha/$BUCKET" >/dev/null
fi

"$EHR" testdata generate -q --patients "$PATIENTS" --seed 1 --out "$W/gen" >/dev/null
NFILES=$(find "$W/gen" -name '*.ndjson' | wc -l)
N=$(cat "$W/gen"/*.ndjson | wc -l)
BYTES=$(cat "$W/gen"/*.ndjson | wc -c)
log "data: $N resources in $NFILES NDJSON files, $BYTES bytes"

# The pipeline: age over each file, JOBS files at a time, into a folder or
# through `mc pipe` into cloud A. No validation, no manifest, no hashes.
cat >"$W/peer.sh" <<'EOF'
#!/usr/bin/env bash
# peer.sh folder|cloud SRC DEST PUB JOBS
set -euo pipefail
export DEST=$3 PUB=$4
if [[ $1 == folder ]]; then
	find "$2" -name '*.ndjson' -print0 | xargs -0 -P "$5" -n 1 bash -c 'age -r "$PUB" -o "$DEST/${1##*/}.age" "$1"' _
else
	find "$2" -name '*.ndjson' -print0 | xargs -0 -P "$5" -n 1 bash -c 'set -o pipefail; age -r "$PUB" <"$1" | mc pipe --quiet "$DEST/${1##*/}.age" >/dev/null' _
fi
EOF

MINIO_PID=$(cat "${EHRPORT_TESTBED_MINIO_PID:-/nonexistent}" 2>/dev/null || echo 0)
ticks() { # PID: utime+stime in clock ticks, 0 when unknown
	local st
	st=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
	st=${st##*) }
	awk '{print $12 + $13}' <<<"$st"
}

RES="$W/results" # lines: target tool round ms rss_kb cpu_s ok minio_cpu_s
: >"$RES"
one() { # TARGET TOOL ROUND
	local t=$1 tool=$2 r=$3 dest ok=1 m0 m1 ms rss cpu rc got
	m0=$(ticks "$MINIO_PID")
	if [[ $t == folder ]]; then
		dest="$W/out-$tool-r$r"
		[[ $tool == ehrport ]] || mkdir -p "$dest"
	else
		dest="$BUCKET/$tool-r$r"
	fi
	if [[ $tool == ehrport ]]; then
		[[ $t == cloud ]] && dest="clouda:$dest"
		read -r ms rss cpu rc < <(bench_run "$W/run" "$EHR" --json export --from "$W/gen" --to "$dest" --keys "$W/keys")
		jq -e --argjson n "$N" '.resources == $n and .signed' "$W/run.out" >/dev/null 2>&1 || ok=0
	else
		[[ $t == cloud ]] && dest="bencha/$dest"
		read -r ms rss cpu rc < <(bench_run "$W/run" bash "$W/peer.sh" "$t" "$W/gen" "$dest" "$PUB" "$JOBS")
		if [[ $t == folder ]]; then got=$(find "$dest" -name '*.age' | wc -l); else got=$(mc ls "$dest/" 2>/dev/null | wc -l); fi
		[[ $got == "$NFILES" ]] || { echo "the pipeline wrote $got objects, want $NFILES" >>"$W/run.err"; ok=0; }
		if [[ $r == 1 && $t == folder && $ok == 1 ]]; then # the pipeline's output decrypts to the input
			age -d -i "$W/age.key" "$dest/Patient.ndjson.age" | cmp -s - "$W/gen/Patient.ndjson" || ok=0
		fi
	fi
	[[ $rc == 0 ]] || ok=0
	m1=$(ticks "$MINIO_PID")
	echo "$t $tool $r $ms $rss $cpu $ok $(awk -v d=$((m1 - m0)) -v t="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", d / t}')" >>"$RES"
	if [[ $ok != 1 ]]; then
		log "FAILED: $t $tool round $r (exit $rc):"
		tail -n 5 "$W/run.err" | sed 's/^/    /' >&2
	fi
	if [[ $t == folder ]]; then rm -rf "$dest"; else mc rm --recursive --force "bencha/$BUCKET/$tool-r$r/" >/dev/null 2>&1 || true; fi
}

for ((r = 1; r <= ROUNDS; r++)); do
	if ((r % 2)); then order=(ehrport peer); else order=(peer ehrport); fi
	for t in $TARGETS; do
		log "round $r/$ROUNDS, $t: ${order[*]}"
		for tool in "${order[@]}"; do one "$t" "$tool" "$r"; done
	done
done

# ---------------------------------------------------------------- statistics

col() { # TARGET TOOL COLUMN: one value a successful round
	awk -v t="$1" -v tool="$2" -v c="$3" '$1 == t && $2 == tool && $7 == 1 {print $c}' "$RES"
}
ratios() { # TARGET: pipeline ms / ehrport ms, per round where both passed
	awk -v t="$1" '$1 == t && $7 == 1 {ms[$2, $3] = $4}
		END {for (k in ms) {split(k, a, SUBSEP); if (a[1] == "ehrport" && (("peer", a[2]) in ms)) print ms["peer", a[2]] / ms[k]}}' "$RES"
}
fails() { awk -v t="$1" -v tool="$2" '$1 == t && $2 == tool && $7 != 1' "$RES" | wc -l; }
peer_name() {
	if [[ $1 == folder ]]; then echo "age -r PUB -o FILE.age FILE"; else echo "age -r PUB < FILE | mc pipe"; fi
}
K="$(awk -v n="$N" 'BEGIN {printf "%.0fk", n / 1000}')"

TABLE="$W/table.md"
ENTRIES="$W/entries.jsonl"
TARGETS_MD="$W/targets.md"
: >"$ENTRIES"
: >"$TARGETS_MD"
{
	echo "| target | tool | median time (min-max) | resources/s | MB/s | CPU s | MinIO CPU s | median peak RSS (max) | ratio ehrport/pipeline, rate: median (min-max) | failed runs |"
	echo "|---|---|---|---|---|---|---|---|---|---|"
} >"$TABLE"
for t in $TARGETS; do
	where="a folder"
	[[ $t == cloud ]] && where="cloud A (MinIO)"
	read -r rm rmin rmax < <(ratios "$t" | bench_stat3)
	for tool in ehrport peer; do
		read -r ms msmin msmax < <(col "$t" "$tool" 4 | bench_stat3)
		read -r rss _ rssmax < <(col "$t" "$tool" 5 | bench_stat3)
		read -r cpu _ _ < <(col "$t" "$tool" 6 | bench_stat3)
		read -r mcpu _ _ < <(col "$t" "$tool" 8 | bench_stat3)
		label="\`ehrport export\` (full validation)"
		[[ $tool == peer ]] && label="\`$(peer_name "$t")\`, $JOBS files at a time"
		label=${label//|/\\|} # a pipe in a Markdown table cell must be escaped
		ratio="-"
		[[ $tool == peer ]] && ratio=$(printf '%.2fx (%.2f-%.2f)' "$rm" "$rmin" "$rmax")
		awk -v t="$where" -v l="$label" -v ms="$ms" -v lo="$msmin" -v hi="$msmax" -v n="$N" -v b="$BYTES" \
			-v cpu="$cpu" -v mcpu="$([[ $t == cloud ]] && echo "$mcpu" || echo -)" -v rss="$rss" -v rmax="$rssmax" \
			-v ratio="$ratio" -v f="$(fails "$t" "$tool")" 'BEGIN {
			printf "| %s | %s | %.1f s (%.1f-%.1f) | %.0f | %.1f | %s | %s | %.0f MB (%.0f) | %s | %d |\n",
				t, l, ms / 1000, lo / 1000, hi / 1000, n * 1000 / ms, b / ms / 1000, cpu, mcpu, rss / 1024, rmax / 1024, ratio, f}' >>"$TABLE"
		eval "${tool}_ms=\$ms ${tool}_rss=\$rss"
	done
	# The folder run against age alone is context (the price of validating
	# every resource), not a target of issue #7: it stays in the table only.
	# shellcheck disable=SC2154 # set by the eval above
	if [[ $t == cloud ]]; then
		jq -nc --arg name "export $K resources to $where: resource rate" --arg peer "$(peer_name "$t")" \
			--argjson e "$(awk -v n="$N" -v ms="$ehrport_ms" 'BEGIN {print n * 1000 / ms}')" \
			--argjson p "$(awk -v n="$N" -v ms="$peer_ms" 'BEGIN {print n * 1000 / ms}')" --argjson ratio "$rm" \
			'def r2: . * 100 | round / 100; {name: $name, unit: "resources/s", ehrport: ($e | r2), peer_name: $peer, peer: ($p | r2), ratio: ($ratio | r2), better: "higher"}' >>"$ENTRIES"
	fi
	# shellcheck disable=SC2154
	bench_rss_entry "export $K resources to $where: peak RSS" "$(awk -v k="$ehrport_rss" 'BEGIN {print k / 1024}')" 256 \
		"$(peer_name "$t")" "$(awk -v k="$peer_rss" 'BEGIN {print k / 1024}')" >>"$ENTRIES"
	verdict=$(awk -v x="$rm" 'BEGIN {print (x != "nan" && x + 0 >= 1) ? "**met**" : "**not met**"}')
	# shellcheck disable=SC2016 # Markdown backquotes
	printf -- '- Export to %s, at least 1x `%s` with validation on: %.2fx (%.2f-%.2f): %s.\n' "$where" "$(peer_name "$t")" "$rm" "$rmin" "$rmax" "$verdict" >>"$TARGETS_MD"
done
maxrss=$(col folder ehrport 5; col cloud ehrport 5) || true
maxrss=$(sort -g <<<"$maxrss" | tail -n 1)
if [[ -n $maxrss ]]; then
	# shellcheck disable=SC2016 # Markdown backquotes
	printf -- '- Peak RSS of every `ehrport export` run under 256 MB: largest %.0f MB: %s.\n' "$(awk -v k="$maxrss" 'BEGIN {print k / 1024}')" \
		"$(awk -v k="$maxrss" 'BEGIN {print (k / 1024 <= 256) ? "**met**" : "**not met**"}')" >>"$TARGETS_MD"
fi
best=$(col folder ehrport 4; col cloud ehrport 4) || true
best=$(sort -g <<<"$best" | awk 'NR == 1')
if [[ -n $best ]]; then
	awk -v n="$N" -v ms="$best" 'BEGIN {r = n * 1000 / ms; printf "- Indicative absolute figure, at least 30,000 resources/s on this 2-core machine: best run %.0f resources/s: %s.\n", r, (r >= 30000 ? "**met**" : "**not met**")}' >>"$TARGETS_MD"
fi

# ---------------------------------------------------------------- profile

PROF_MD="$W/profile.md"
: >"$PROF_MD"
if [[ $PROFILE == 1 ]]; then
	log "profiling export (BenchmarkExportLocal, 3 runs, -cpuprofile)"
	go test -run '^$' -bench '^BenchmarkExportLocal$' -benchtime 3x -cpuprofile "$W/export.prof" -o "$W/export.test" ./cmd/internal/export >"$W/prof.bench" 2>&1 ||
		{ cat "$W/prof.bench" >&2; die "profiling failed"; }
	go tool pprof -traces "$W/export.test" "$W/export.prof" 2>/dev/null >"$W/traces.txt"
	# Every stack sample whose frames include the benchmark's set-up (the
	# synthetic data, the keys) is left out; what is left is the export.
	# A category counts a sample when any frame matches (inclusive time).
	awk '
	function ms(v) {
		if (v ~ /ns$/) return v / 1e6; if (v ~ /us$/) return v / 1e3
		if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000
		return v + 0
	}
	function flush(   i, f, seen) {
		if (!n) return
		skip = 0
		for (i = 1; i <= n; i++) if (fr[i] ~ /fhir\/synth\.|newTestKeys|argon2/) skip = 1
		if (!skip) {
			total += val
			flat[fr[1]] += val
			for (i = 1; i <= n; i++) { f = fr[i]; if (!(f in seen)) { seen[f] = 1; cum[f] += val } }
			for (c = 1; c <= nc; c++) for (i = 1; i <= n; i++) if (fr[i] ~ re[c]) { cat[c] += val; break }
		}
		n = 0
	}
	BEGIN {
		nc = 0
		name[++nc] = "validation, all of it: `fhir.(*Validator).check`"; re[nc] = "fhir\\.\\(\\*Validator\\)\\.check$"
		name[++nc] = "- typed R4 model: `fhir.checkTyped` (the generated byte walker)"; re[nc] = "fhir\\.checkTyped$"
		name[++nc] = "- streaming fact scan: `fhir.scanFacts`"; re[nc] = "fhir\\.scanFacts$"
		name[++nc] = "duplicates and references: `fhir.(*Checker).commit`"; re[nc] = "fhir\\.\\(\\*Checker\\)\\.commit$"
		name[++nc] = "reading and compacting NDJSON: `fhir.(*Walker).Next`"; re[nc] = "fhir\\.\\(\\*Walker\\)\\.Next$"
		name[++nc] = "SHA-256 (plaintext and ciphertext digests): `crypto/sha256`"; re[nc] = "sha256\\.\\(\\*Digest\\)\\.Write$|sha256\\.block"
		name[++nc] = "AES-GCM encryption: `crypto/internal/fips140/aes/gcm`"; re[nc] = "fips140/aes/gcm\\."
		name[++nc] = "line scanner of the parts: `export.(*lineScanner).Write`"; re[nc] = "export\\.\\(\\*lineScanner\\)\\.Write$"
		name[++nc] = "memory allocation: `runtime.mallocgc`"; re[nc] = "^runtime\\.mallocgc$"
		name[++nc] = "garbage collection in the background: `runtime.gcBgMarkWorker`"; re[nc] = "^runtime\\.gcBgMarkWorker$"
		name[++nc] = "system calls: `syscall.Syscall6` and kin"; re[nc] = "Syscall6?$|RawSyscall"
	}
	/^-+\+-+$/ { flush(); inb = 1; next }
	!inb { next }
	{
		line = $0; sub(/^ +/, "", line)
		if ($0 ~ /^ +[0-9.]+[a-z]*s +/) { val = ms($1); sub(/^[0-9.]+[a-z]*s +/, "", line) }
		sub(/ \(inline\)$/, "", line)
		fr[++n] = line
	}
	END {
		flush()
		printf "TOTAL %.0f\n", total
		for (c = 1; c <= nc; c++) printf "CAT %.1f\t%s\n", 100 * cat[c] / total, name[c]
		for (f in flat) printf "FLAT %.1f\t%s\n", 100 * flat[f] / total, f
		for (f in cum) printf "CUM %.1f\t%s\n", 100 * cum[f] / total, f
	}' "$W/traces.txt" >"$W/prof.txt"
	VAL_SHARE=$(awk -F'\t' '/^CAT/ && /Validator/ {sub(/^CAT /, "", $1); print $1; exit}' "$W/prof.txt")
	TYPED_SHARE=$(awk -F'\t' '/^CAT/ && /checkTyped/ {sub(/^CAT /, "", $1); print $1; exit}' "$W/prof.txt")
	{
		echo "Command: \`go test -run '^\$' -bench '^BenchmarkExportLocal\$' -benchtime 3x -cpuprofile export.prof ./cmd/internal/export\`, then \`go tool pprof -traces\`: $(awk '$1 == "TOTAL" {printf "%.1f", $2 / 1000}' "$W/prof.txt") CPU-seconds of stack samples of three exports of 2,000 patients (about 37,000 resources) to a local folder, with the samples of the benchmark's set-up (data generation, keys) left out. $(grep -m1 -o '[0-9]* resources/s' "$W/prof.bench" || true) in that benchmark."
		echo
		echo "| where export's CPU goes (inclusive: a sample counts for every group on its stack) | share of samples |"
		echo "|---|---|"
		awk -F'\t' '/^CAT/ {sub(/^CAT /, "", $1); printf "| %s | %s%% |\n", $2, $1}' "$W/prof.txt"
		echo
		echo "Top functions by self time (pprof \`flat\`) and by time including callees (\`cum\`), as shares of the export's samples:"
		echo
		echo '```'
		echo "flat%  function"
		awk -F'\t' '/^FLAT/ {sub(/^FLAT /, "", $1); print $1 "\t" $2}' "$W/prof.txt" | sort -gr | awk -F'\t' 'NR <= 12 {printf "%5.1f  %s\n", $1, $2}'
		echo
		echo " cum%  function"
		awk -F'\t' '/^CUM/ {sub(/^CUM /, "", $1); print $1 "\t" $2}' "$W/prof.txt" | sort -gr |
			awk -F'\t' '$2 !~ /^runtime\.(goexit|main|systemstack|mcall)$|^testing\.|\.BenchmarkExportLocal$/ && ++n <= 16 {printf "%5.1f  %s\n", $1, $2}'
		echo '```'
	} >"$PROF_MD"
fi

# ---------------------------------------------------------------- print

{
	echo "ehrport export vs the age pipeline, $N resources ($BYTES bytes of NDJSON in $NFILES files), $ROUNDS rounds"
	cat "$TABLE"
	echo
	cat "$TARGETS_MD"
	echo
	[[ -s $PROF_MD ]] && cat "$PROF_MD"
	echo
	echo "raw results (target tool round ms rss_kb cpu_s ok minio_cpu_s):"
	cat "$RES"
} | tee "$W/report.txt"

if [[ $RECORD != 1 ]]; then
	log "BENCH_RECORD=$RECORD: docs not written; done in $(since "$T_START")"
	exit 0
fi

# ---------------------------------------------------------------- record

ehr_cpu=$(col "${TARGETS%% *}" ehrport 6 | bench_stat3 | cut -d' ' -f1)
peer_cpu=$(col "${TARGETS%% *}" peer 6 | bench_stat3 | cut -d' ' -f1)
{
	echo "## Export"
	echo
	echo "Written by \`scripts/bench-export.sh $ROUNDS\` on $(date -u +%F) (rerun: \`bash scripts/bench-export.sh [ROUNDS]\`, or \`make bench\`)."
	echo "\`ehrport export\` validates every resource (the R4 typed model, ids, references, duplicates), hashes, encrypts and signs; the pipeline it is measured against only encrypts each file with \`age\` and, for cloud A, streams it into \`mc pipe\`. Both read the same NDJSON files from the local disk. ehrport's time includes opening its passphrase-protected key folder (Argon2id, about a second here), a fixed cost the pipeline's bare age key does not have. Each round runs ehrport and the pipeline one after the other for each target (odd rounds ehrport first); the ratio is ehrport's rate over the pipeline's in the same round, so above 1 means ehrport is faster."
	echo
	echo "### Machine"
	echo
	bench_machine
	echo "- age: $(age --version 2>/dev/null) (Debian package); mc: github.com/minio/mc $(go version -m "$(command -v mc)" 2>/dev/null | awk '$1 == "mod" {print $3}')"
	echo
	echo "### Data and commands"
	echo
	echo "\`ehrport testdata generate --patients $PATIENTS --seed 1\`: $N resources of $NFILES types, one NDJSON file each, $BYTES bytes."
	echo
	echo '```sh'
	echo 'ehrport --json export --from GEN --to DIR --keys KEYS                  # folder; defaults: --concurrency 4, validation workers = cores'
	echo 'ehrport --json export --from GEN --to clouda:BUCKET/PREFIX --keys KEYS  # cloud A'
	echo "find GEN -name '*.ndjson' | xargs -P $JOBS -n 1 sh -c 'age -r PUB -o DIR/\${1##*/}.age \$1' _                       # folder"
	echo "find GEN -name '*.ndjson' | xargs -P $JOBS -n 1 sh -c 'age -r PUB < \$1 | mc pipe bencha/BUCKET/PREFIX/\${1##*/}.age' _  # cloud A"
	echo '```'
	echo
	echo "Time: wall clock of the whole command. Rates: resources and NDJSON bytes (10^6 bytes per MB) over that time. CPU s: user+system seconds of the command and all it waited for, from \`/usr/bin/time -v\`; MinIO CPU s: the server's utime+stime from /proc during the run. Peak RSS: \"Maximum resident set size\" (for the pipeline, its largest single process). Every ehrport run must report all $N resources and a signed manifest, every pipeline run must write $NFILES objects (the first folder round also decrypts one and compares it with its input); a failed run is recorded, left out of the medians, and never retried."
	echo
	echo "### Results ($ROUNDS rounds)"
	echo
	cat "$TABLE"
	echo
	echo "### Targets"
	echo
	cat "$TARGETS_MD"
	if [[ -s $PROF_MD ]]; then
		echo
		echo "### Where the time goes (pprof)"
		echo
		cat "$PROF_MD"
		echo
		echo "**Share of validation: $VAL_SHARE% of the export's CPU** ($TYPED_SHARE% in the typed R4 model alone); without validation the same export would need about $(awk -v s="$VAL_SHARE" 'BEGIN {printf "%.0f", 100 - s}')% of its CPU. The pipeline does none of this work: in the results above ehrport used $ehr_cpu CPU-seconds per run and the pipeline $peer_cpu (${TARGETS%% *}, medians); on two cores shared with the servers, CPU per resource decides the rate."
		# The largest group below the whole of validation names the bottleneck.
		top=$(awk -F'\t' '/^CAT/ && !/Validator/ {sub(/^CAT /, "", $1); print $1 "\t" $2}' "$W/prof.txt" | sort -gr | awk 'NR == 1')
		echo
		top_name=${top#*$'\t'}
		echo "Largest single group: ${top_name#- } at ${top%%$'\t'*}% of the export's CPU."
	fi
	echo
	echo "<details><summary>Raw results: target, tool, round, ms, peak RSS KB, CPU s, passed, MinIO CPU s</summary>"
	echo
	echo '```'
	cat "$RES"
	echo '```'
	echo
	echo "</details>"
} >"$W/section.md"
bench_section "$W/section.md"
bench_entries "export " "$ENTRIES"
bench_summary
log "wrote the Export section of $BENCH_DOC and its entries of $BENCH_JSON; done in $(since "$T_START")"
