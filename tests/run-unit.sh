#!/bin/sh
# SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
# Run cmocka unit test binaries from the repo root (tests load fixtures by
# paths relative to it), stream their output, and sum cmocka's summaries:
#   [  PASSED  ] N test(s).
#   [  FAILED  ] N test(s), listed below:
# A binary that exits non-zero without a FAILED count (crash, setup
# failure, missing file) counts as one failed test.
# Last line, for CI: "unit: N passed, N failed". Exit status 1 if any failed.
#
# usage: tests/run-unit.sh BIN...

cd "$(dirname "$0")/.." || exit 2

if [ $# -eq 0 ]; then
	echo "usage: $0 BIN..." >&2
	exit 2
fi

passed=0
failed=0
log=$(mktemp) || exit 2
trap 'rm -f "$log" "$log.rc"' EXIT INT TERM

for bin in "$@"; do
	case $bin in
	/*) path=$bin ;;
	*) path=./$bin ;;
	esac
	echo "== $bin"
	if [ ! -x "$path" ]; then
		echo "$bin: not found or not executable" >&2
		failed=$((failed + 1))
		continue
	fi
	# cmocka writes its report to stdout and errors to stderr: stream
	# both, in order, and keep a copy for counting. POSIX sh has no
	# pipefail, so the status travels through a file.
	{
		"$path" 2>&1
		echo $? >"$log.rc"
	} | tee "$log"
	rc=$(cat "$log.rc" 2>/dev/null || echo 1)
	rm -f "$log.rc"
	p=$(sed -n 's/^\[  PASSED  \] \([0-9][0-9]*\) test.*/\1/p' "$log" | tail -n 1)
	f=$(sed -n 's/^\[  FAILED  \] \([0-9][0-9]*\) test.*/\1/p' "$log" | tail -n 1)
	passed=$((passed + ${p:-0}))
	if [ -n "$f" ]; then
		failed=$((failed + f))
	elif [ "$rc" -ne 0 ]; then
		echo "$bin: exited with status $rc without a cmocka summary" >&2
		failed=$((failed + 1))
	fi
done

echo "unit: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
