#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
#
# make bench: egressd against direct and against the proxies people would
# otherwise pick (HAProxy, nginx stream, squid ssl_bump, mitmproxy), all in
# the same run on the hermetic test bed (tests/e2e/lib.sh). This script
# owns the bed and the one global knob (kernel.bpf_stats_enabled, on for
# the run and put back afterwards); tests/bench/bench.py does the rest.
# docs/BENCHMARKS.md says what is measured and how to read it.
#
#   sudo make bench-deps && sudo make bench
#   sudo BENCH_QUICK=1 make bench     # smoke run, a few seconds per row
#
# Results: build/bench/results.json (every sample) and build/bench/results.md
# (the tables, also printed).
set -uo pipefail

BENCH_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_SRC/../.." && pwd)
EGRESSD=${EGRESSD:-$REPO/egressd}
export E2E_TIMEOUT=600

# shellcheck source=../e2e/lib.sh
. "$REPO/tests/e2e/lib.sh"

die() { echo "bench: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (network namespaces, egressd run)"
[ -x "$EGRESSD" ] || die "$EGRESSD not built (make)"
for c in nginx wrk curl bpftool python3; do
	command -v "$c" >/dev/null || die "$c is missing: make bench-deps"
done

STATS=/proc/sys/kernel/bpf_stats_enabled
stats_old=$(cat "$STATS" 2>/dev/null || echo)
bench_pid=

cleanup() {
	[ -n "$bench_pid" ] && bed_stop_pid "$bench_pid"
	[ -n "$stats_old" ] && echo "$stats_old" >"$STATS" 2>/dev/null
	bed_teardown
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# egressd holds two sockets (and, while relaying, two pipes) per
# connection: the scale rows need every descriptor the machine allows.
ulimit -n "$(ulimit -Hn)" 2>/dev/null

bed_setup || die "test bed setup failed"
# kernel BPF run-time statistics for egr_connect4 (global; restored above)
[ -n "$stats_old" ] && echo 1 >"$STATS"

export E2E_DIR NS_HOST NS_NET E2E_CA EGRESSD ALLOWED4 OTHER4 ECHO_PORTS
export BENCH_OUT=$REPO/build/bench
mkdir -p "$BENCH_OUT"
/usr/bin/python3 "$BENCH_SRC/bench.py" &
bench_pid=$!
wait "$bench_pid"
rc=$?
bench_pid=
exit "$rc"
