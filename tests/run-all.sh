#!/bin/bash
# SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
# The README's test command (`make test`): the cmocka unit tests
# (tests/run-unit.sh), then the end-to-end cases on the namespace test bed
# (tests/e2e/run.sh). Prints both summaries and, last, the sum for CI:
#   N passed, N failed
# Skipped e2e cases count as failed when CI=true (a CI run that silently
# skipped the end-to-end tests would prove nothing). Exit status 1 if
# anything failed.
#
# usage: tests/run-all.sh UNIT_BIN...   (run from anywhere)

set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.." || exit 2

out=$(mktemp -d) || exit 2
trap 'rm -rf "$out"' EXIT

# stream OUTFILE CMD...: run CMD, show its output as it comes, keep a copy.
stream() {
	local f=$1
	shift
	"$@" 2>&1 | tee "$f"
	return "${PIPESTATUS[0]}"
}

if [ $# -gt 0 ]; then
	stream "$out/unit" tests/run-unit.sh "$@"
	unit_rc=$?
else
	echo "unit: no unit test binaries given" | tee "$out/unit"
	unit_rc=0
fi
stream "$out/e2e" tests/e2e/run.sh
e2e_rc=$?

unit_sum=$(grep -E '^unit: [0-9]+ passed, [0-9]+ failed$' "$out/unit" | tail -n 1)
e2e_sum=$(grep -E '^e2e: [0-9]+ passed, [0-9]+ failed, [0-9]+ skipped$' "$out/e2e" | tail -n 1)

num() { sed -n "s/.* \([0-9][0-9]*\) $2.*/\1/p" <<<"$1"; }
passed=0
failed=0
if [ -n "$unit_sum" ]; then
	passed=$((passed + $(num "$unit_sum" passed)))
	failed=$((failed + $(num "$unit_sum" failed)))
elif [ $# -gt 0 ]; then
	unit_sum="unit: no summary (tests/run-unit.sh exit status $unit_rc)"
	failed=$((failed + 1))
else
	unit_sum="unit: no unit test binaries given"
fi
if [ -n "$e2e_sum" ]; then
	passed=$((passed + $(num "$e2e_sum" passed)))
	failed=$((failed + $(num "$e2e_sum" failed)))
	if [ "${CI:-}" = true ]; then
		failed=$((failed + $(num "$e2e_sum" skipped)))
	fi
else
	e2e_sum="e2e: no summary (tests/e2e/run.sh exit status $e2e_rc)"
	failed=$((failed + 1))
fi
# A runner that failed without counting it still fails the run.
if [ "$failed" -eq 0 ] && { [ "$unit_rc" -ne 0 ] || [ "$e2e_rc" -ne 0 ]; }; then
	failed=1
fi

echo
echo "$unit_sum"
echo "$e2e_sum"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
