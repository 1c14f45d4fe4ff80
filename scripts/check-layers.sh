#!/usr/bin/env bash
# Import layering, as restic enforces with depguard: the domain packages stay
# independent so each can be reasoned about (and audited) on its own.
#   - fhir/... and storage/... never import crypto/... (or each other's domain);
#   - crypto/... never imports fhir/... or storage/...;
#   - nothing outside cmd/ imports urfave/cli.
set -euo pipefail
cd "$(dirname "$0")/.."
mod=$(go list -m)
fail=0
deny() { # deny PKG_PATTERN FORBIDDEN_PREFIX...
	local pat=$1; shift
	while read -r pkg deps; do
		for bad in "$@"; do
			for d in $deps; do
				case "$d" in "$bad" | "$bad"/*)
					echo "layering: $pkg imports $d"; fail=1 ;;
				esac
			done
		done
	done < <(go list -f '{{.ImportPath}} {{join .Imports " "}}' "$pat")
}
deny "./fhir/..." "$mod/crypto" "$mod/storage" "$mod/cmd" github.com/urfave/cli/v2
deny "./storage/..." "$mod/crypto" "$mod/fhir" "$mod/cmd" github.com/urfave/cli/v2
deny "./crypto/..." "$mod/fhir" "$mod/storage" "$mod/cmd" github.com/urfave/cli/v2
# The top level is the design card's: code that combines domains goes under
# cmd/, never in a new folder at the root.
while read -r top; do
	case "$top" in
	cmd | crypto | fhir | storage | testdata | docs | scripts | .ci | go.mod | go.sum | Makefile | README.md | DEVELOPERS.md | .gitignore) ;;
	*) echo "layering: $top at the top level (allowed: cmd crypto fhir storage testdata docs scripts .ci and the module files)"; fail=1 ;;
	esac
done < <(git ls-files | cut -d/ -f1 | sort -u)
[ "$fail" -eq 0 ] && echo "layering: ok"
exit "$fail"
