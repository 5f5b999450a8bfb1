#!/bin/sh
# SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
# Run libFuzzer targets for a fixed time each, seeded from
# tests/fuzz/corpus/<name without fuzz_>/. The seeds are copied into a
# temporary directory first, so new inputs found during the run do not
# pollute the committed corpus. Crash reproducers are kept (their paths
# are printed) under $FUZZ_ARTIFACTS, default build/fuzz/artifacts/.
#
# usage: tests/fuzz/run.sh SECONDS BIN...
# Prints one line per target and, last, "N passed, N failed"; exits 1 if
# any target crashed or could not run.

cd "$(dirname "$0")/../.." || exit 2

if [ $# -lt 2 ]; then
	echo "usage: $0 SECONDS BIN..." >&2
	exit 2
fi
secs=$1
shift
case $secs in
'' | *[!0-9]*)
	echo "$0: SECONDS must be a number" >&2
	exit 2
	;;
esac

artifacts=${FUZZ_ARTIFACTS:-build/fuzz/artifacts}
mkdir -p "$artifacts" || exit 2
work=$(mktemp -d) || exit 2
trap 'rm -rf "$work"' EXIT INT TERM

passed=0
failed=0
for bin in "$@"; do
	name=$(basename "$bin")
	short=${name#fuzz_}
	seeds=tests/fuzz/corpus/$short
	corpus=$work/$short
	log=$work/$short.log
	mkdir -p "$corpus" "$artifacts/$short"
	if [ -d "$seeds" ]; then
		cp -R "$seeds/." "$corpus/"
	fi
	nseeds=$(find "$corpus" -type f | wc -l)

	extra=
	case $short in
	# Hellos up to HELLO_MAX_BYTES (64 KiB) and just beyond.
	hello) extra=-max_len=70000 ;;
	httphead) extra=-max_len=20000 ;;
	httpreq) extra=-max_len=40000 ;;
	esac

	if [ ! -x "$bin" ]; then
		printf '%-16s FAIL  not built (%s)\n' "$short" "$bin"
		failed=$((failed + 1))
		continue
	fi
	# -timeout: one input taking over 10 s counts as a hang (a crash).
	# shellcheck disable=SC2086
	"$bin" $extra -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
		-print_final_stats=1 \
		-artifact_prefix="$artifacts/$short/" "$corpus" >"$log" 2>&1
	rc=$?
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
	if [ "$rc" -eq 0 ]; then
		printf '%-16s PASS  %ss, %s runs, %s, %s seeds\n' \
			"$short" "$secs" "${runs:-?}" "${cov:-cov: ?}" "$nseeds"
		passed=$((passed + 1))
	else
		printf '%-16s FAIL  exit %s\n' "$short" "$rc"
		# The report's head (what and where), not ASan's legend.
		grep -E -A 14 'ERROR: |runtime error|deadly signal|timeout after' \
			"$log" | head -n 30 | sed 's/^/    /'
		grep -E '^SUMMARY|Test unit written to' "$log" | sed 's/^/    /'
		failed=$((failed + 1))
	fi
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
