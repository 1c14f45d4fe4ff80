# shellcheck shell=bash
# Helpers of scripts/bench-export.sh, bench-scale.sh and bench-micro.sh:
# timing under /usr/bin/time -v, medians, the test bed and mc set-up, and the
# writing of one section of docs/BENCHMARKS.md and of some entries of
# docs/benchmarks.json. Source it after scripts/lib.sh; it runs nothing.
# (Named without a dash so that `make bench`, which runs every
# scripts/bench-*.sh, does not run it.)

BENCH_DOC=docs/BENCHMARKS.md
BENCH_JSON=docs/benchmarks.json

# bench_rev prints the commit ehrport is built from, and says so when the
# tree has uncommitted changes in the code.
bench_rev() {
	local rev
	rev=$(git rev-parse --short HEAD 2>/dev/null || echo '?')
	git diff --quiet HEAD -- cmd crypto fhir storage go.mod 2>/dev/null || rev="$rev + uncommitted changes"
	echo "$rev"
}

# bench_run PREFIX CMD...: runs CMD under timeout and /usr/bin/time -v, its
# output in PREFIX.out and PREFIX.err, and prints "ms rss_kb cpu_s rc":
# wall milliseconds, peak RSS of the largest process, user+system seconds of
# CMD and all it waited for, exit status.
bench_run() {
	local p=$1 t0 t1 rc=0
	shift
	t0=$(date +%s%N)
	timeout "${BENCH_TIMEOUT:-3600}" /usr/bin/time -v -o "$p.time" "$@" >"$p.out" 2>"$p.err" || rc=$?
	t1=$(date +%s%N)
	awk -v ms=$(((t1 - t0) / 1000000)) -v rc=$rc -F': ' '
		/Maximum resident set size/ {rss = $2}
		/User time|System time/ {cpu += $2}
		END {printf "%d %d %.2f %d\n", ms, rss, cpu, rc}' "$p.time" 2>/dev/null || echo "$(((t1 - t0) / 1000000)) 0 0 $rc"
}

# bench_stat3 reads numbers, one a line, and prints "median min max" ("nan
# nan nan" for none).
bench_stat3() {
	sort -g | awk '{a[NR] = $1}
		END {if (!NR) {print "nan nan nan"; exit}
			print (NR % 2 ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2), a[1], a[NR]}'
}

# bench_testbed sources the shared test bed's env, starting it when needed.
bench_testbed() {
	if [[ -z "${EHRPORT_STORE_CLOUDA_ENDPOINT:-}" ]]; then
		bash "$EHRPORT_ROOT/scripts/testbed.sh" up >&2
		set -a
		# shellcheck disable=SC1091
		. "$EHRPORT_CACHE/testbed/env"
		set +a
	fi
	: "${EHRPORT_STORE_CLOUDA_ENDPOINT:?}" "${EHRPORT_STORE_CLOUDB_ENDPOINT:?}"
}

# bench_mc DIR: mc with the aliases bencha and benchb (cloud A and B) and the
# test bed's CA in a private config folder under DIR; secrets stay in the
# environment.
bench_mc() {
	export MC_CONFIG_DIR="$1/mc"
	mkdir -p "$MC_CONFIG_DIR/certs/CAs"
	cp "$EHRPORT_STORE_CLOUDA_CA_CERT" "$MC_CONFIG_DIR/certs/CAs/clouda-ca.pem"
	cp "$EHRPORT_STORE_CLOUDB_CA_CERT" "$MC_CONFIG_DIR/certs/CAs/cloudb-ca.pem"
	export MC_HOST_bencha="https://$EHRPORT_STORE_CLOUDA_ACCESS_KEY:$EHRPORT_STORE_CLOUDA_SECRET_KEY@${EHRPORT_STORE_CLOUDA_ENDPOINT#https://}"
	export MC_HOST_benchb="https://$EHRPORT_STORE_CLOUDB_ACCESS_KEY:$EHRPORT_STORE_CLOUDB_SECRET_KEY@${EHRPORT_STORE_CLOUDB_ENDPOINT#https://}"
}

# bench_machine prints the machine as Markdown list items.
bench_machine() {
	echo "- $(nproc) cores ($(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)), $(free -h | awk '/^Mem:/ {print $2}') memory, $(uname -sr)"
	echo "- load average at the end of the run: $(cut -d' ' -f1-3 /proc/loadavg) (the machine is shared with other builds and tests)"
	echo "- ehrport built from the tree at $(bench_rev) with $(go env GOVERSION)"
}

# bench_section FILE: FILE starts with a "## HEADING" line; it replaces that
# section of docs/BENCHMARKS.md (up to the next "## " heading), or is added
# at the end. A "### Analysis" subsection of the old section, written by
# hand, is kept at the end of the new one.
bench_section() {
	local f=$1 head tmp
	head=$(head -n 1 "$f")
	tmp=$(mktemp)
	if [[ -f $BENCH_DOC ]]; then
		awk -v h="$head" '$0 == h {in_s = 1; next} in_s && /^## / {exit}
			in_s && /^### Analysis/ {keep = 1} keep {print}' "$BENCH_DOC" >"$tmp.analysis"
		if [[ -s "$tmp.analysis" ]]; then
			{ echo; sed -e :a -e '/^\n*$/{$d;N;ba' -e '}' "$tmp.analysis"; } >>"$f"
		fi
	fi
	if [[ -f $BENCH_DOC ]] && grep -qxF "$head" "$BENCH_DOC"; then
		awk -v h="$head" -v f="$f" '
			$0 == h {while ((getline l < f) > 0) print l; skip = 1; next}
			skip && /^## / {skip = 0; print ""}
			!skip {print}' "$BENCH_DOC" >"$tmp"
	elif [[ -f $BENCH_DOC ]]; then
		{ cat "$BENCH_DOC"; echo; cat "$f"; } >"$tmp"
	else
		{ echo "# Benchmarks"; echo; cat "$f"; } >"$tmp"
	fi
	cp "$tmp" "$BENCH_DOC"
	rm -f "$tmp" "$tmp.analysis"
}

# bench_entries PREFIX FILE: replaces the entries of docs/benchmarks.json
# whose name starts with PREFIX by those of FILE (JSON objects), keeping
# every other entry where it was.
bench_entries() {
	local old='[]' tmp
	[[ -s $BENCH_JSON ]] && old=$(cat "$BENCH_JSON")
	tmp=$(mktemp)
	jq -s --argjson old "$old" --arg p "$1" '
		. as $new | [$old[] | select(.name | startswith($p) | not)] + $new' "$2" >"$tmp"
	cp "$tmp" "$BENCH_JSON"
	rm -f "$tmp"
}

# bench_rss_entry NAME MB LIMIT_MB [PEER PEER_MB]...: prints a "peak RSS"
# entry of docs/benchmarks.json. The issues set memory targets as limits
# (#3: under 64 MB for a 1 GiB file; #7: at most 256 MB in every run), not
# as ratios to a peer, so the entry's comparison is with that limit; the
# peers' peaks of the same runs go along in peers_mb, shown beside it in
# the Summary and in each section's table.
bench_rss_entry() {
	local name=$1 mb=$2 limit=$3 peers='{}'
	shift 3
	while (($# >= 2)); do
		peers=$(jq -c --arg k "$1" --argjson v "$2" '. + {($k): ($v * 100 | round / 100)}' <<<"$peers")
		shift 2
	done
	jq -nc --arg name "$name" --argjson e "$mb" --argjson l "$limit" --argjson peers "$peers" \
		'def r2: . * 100 | round / 100; {name: $name, unit: "MB", ehrport: ($e | r2), peer_name: "limit", peer: $l, ratio: ($e / $l | r2), better: "lower", peers_mb: $peers}'
}

# bench_summary rewrites the "## Summary" section of docs/BENCHMARKS.md
# from docs/benchmarks.json: every comparison with a peer, whoever wrote it.
bench_summary() {
	[[ -s $BENCH_JSON ]] || return 0
	local f
	f=$(mktemp)
	{
		echo "## Summary"
		echo
		echo "Every comparison in [docs/benchmarks.json](benchmarks.json), as last recorded by the section that measured it (its date, machine, commands and spread are there). Ratio: ehrport over the peer, medians of per-round ratios; \`better\` says which direction is good. Regenerated from the JSON by every \`scripts/bench-*.sh\` that records, on $(date -u +%F)."
		echo
		echo "Peak RSS entries compare with the issue's limit (64 MB for a 1 GiB file, 256 MB for every other run), not with a peer: the peers' peaks in the same runs are listed beside the limit, and some are lower (age is a small single-purpose program). \"ehrport ahead\" means a ratio on the good side of 1 (as rounded here); the issues ask more of some (2x age for encryption, 1.5x the best peer for small-object migration), and each section's Targets says whether that is met."
		echo
		echo "| comparison | unit | ehrport | peer | peer's figure | ratio | better | ehrport ahead |"
		echo "|---|---|---|---|---|---|---|---|"
		jq -r 'def cell: gsub("\\|"; "\\|"); .[] | "| \(.name | cell) | \(.unit) | \(.ehrport) | \(.peer_name | cell)\(if .peers_mb then " (peers: " + ([.peers_mb | to_entries[] | "\(.key) \(.value) MB"] | join(", ") | cell) + ")" else "" end) | \(.peer) | \(if .ratio == null then "-" else "\(.ratio)x" end) | \(.better) | " +
			(if .ratio == null then "-" elif (.better == "higher" and .ratio >= 1) or (.better == "lower" and .ratio <= 1) then "yes" else "**no**" end) + " |"' "$BENCH_JSON"
	} >"$f"
	bench_section "$f"
	rm -f "$f"
}
