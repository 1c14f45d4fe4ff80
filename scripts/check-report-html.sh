#!/usr/bin/env bash
# check-report-html.sh [REPORT.html]: open a drill's report.html in a real
# headless browser (Debian chromium) and fail on any console error, any
# blocked or attempted load (the page carries a CSP of default-src 'none',
# so any external or inline-script load is refused and logged), or a page
# without the verdict and its two SVG charts. Without an argument it runs a
# small drill first (bin/ehrport, built if missing) in a temporary folder.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
if ! command -v chromium >/dev/null; then
	echo "check-report-html: installing chromium" >&2
	apt-get install -y chromium >/dev/null
fi
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
page=${1:-}
if [ -z "$page" ]; then
	[ -x bin/ehrport ] || build_ehrport bin/ehrport
	(cd "$T" && "$OLDPWD/bin/ehrport" --quiet drill --patients 20 --report rep >/dev/null)
	page=$T/rep/report.html
fi
[ -s "$page" ] || { echo "check-report-html: no page $page" >&2; exit 2; }
# Static: nothing that could fetch anything.
if grep -qiE '(src|href)=|<script|@import|url\(' "$page"; then
	echo "check-report-html: FAIL: $page references something outside itself:" >&2
	grep -noiE '.{0,40}((src|href)=|<script|@import|url\().{0,40}' "$page" >&2
	exit 1
fi
# Dynamic: render it with networking off, console on.
timeout 120 chromium --headless --no-sandbox --disable-gpu --disable-background-networking \
	--no-first-run --disable-extensions --host-resolver-rules='MAP * ~NOTFOUND' \
	--enable-logging=stderr --v=0 --user-data-dir="$T/profile" \
	--dump-dom "file://$(realpath "$page")" >"$T/dom.html" 2>"$T/console.log" || {
	echo "check-report-html: FAIL: chromium exited $?" >&2; tail -5 "$T/console.log" >&2; exit 1; }
if grep -E 'CONSOLE|Refused to|net::ERR|Uncaught' "$T/console.log" >&2; then
	echo "check-report-html: FAIL: console errors or blocked loads above" >&2
	exit 1
fi
n=$(grep -o '<svg' "$T/dom.html" | wc -l)
grep -q 'id="verdict"' "$T/dom.html" || { echo "check-report-html: FAIL: no verdict in the rendered page" >&2; exit 1; }
verdict=$(grep -o '<div class="big">[A-Z]*</div>' "$T/dom.html" | sed 's/<[^>]*>//g')
[ "$n" -eq 2 ] || { echo "check-report-html: FAIL: $n SVG charts rendered, want 2" >&2; exit 1; }
echo "check-report-html: ok: $page renders in chromium ($(chromium --version 2>/dev/null | head -1)), verdict $verdict, 2 SVG charts, no console error, nothing loaded from outside"
