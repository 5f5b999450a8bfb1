#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
#
# What egressd's kernel programs cost per connection: `egressd run` with a
# client in the cgroup doing CONNS sequential connects (one at a time) to
# the bed's port-echo server (allowed by address, each answer checked),
# then run_time_ns / run_cnt of every egr_* program that egressd holds
# (found through its own fds, so no other egressd on the machine counts),
# and their sum per connection. Run-time statistics are on for the run
# through BPF_ENABLE_STATS (tests/bench/bpf_stats.py), not the global
# kernel.bpf_stats_enabled: nothing to restore, also after a crash, and no
# other run on the machine can switch them off under this one. Bounded:
# about 10-20 s per round and binary on an idle 2-core VM.
#
#   sudo tests/bench/connect4_stats.sh
#   sudo C4_BASE=/tmp/base/egressd C4_ROUNDS=4 tests/bench/connect4_stats.sh
#
# C4_CONNS (20000), C4_ROUNDS (1), EGRESSD (./egressd), C4_BASE (a second
# build measured in the same rounds, order alternating: before/after).
# With C4_PERF=FILE the first round of EGRESSD runs under
# `perf record -a -g -o FILE`.
set -uo pipefail

BENCH_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_SRC/../.." && pwd)
EGRESSD=${EGRESSD:-$REPO/egressd}
CONNS=${C4_CONNS:-20000}
ROUNDS=${C4_ROUNDS:-1}
BASE=${C4_BASE:-}
PERF=${C4_PERF:-}
export E2E_TIMEOUT=120

# shellcheck source=../e2e/lib.sh
. "$REPO/tests/e2e/lib.sh"

die() { echo "connect4_stats: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (network namespaces, egressd run)"
[ -x "$EGRESSD" ] || die "$EGRESSD not built (make)"
[ -z "$BASE" ] || [ -x "$BASE" ] || die "C4_BASE=$BASE is not executable"
# Another egressd starting on the machine removes egressd.run.<pid> cgroups
# of runs that hold no lock on them (user/cgroup.c); builds before the lock
# hold none, and their cgroup is kept only while a root process named
# egressd* has the pid: a copy named otherwise would lose it mid-run.
for b in "$EGRESSD" $BASE; do
	case ${b##*/} in
	egressd*) ;;
	*) die "$b: the binary's name must start with egressd (cp it to DIR/egressd)" ;;
	esac
done
[[ "$CONNS" =~ ^[0-9]+$ ]] && [ "$CONNS" -ge 1 ] && [ "$CONNS" -le 25000 ] ||
	die "C4_CONNS must be 1..25000 (source ports of one netns)"
[[ "$ROUNDS" =~ ^[0-9]+$ ]] && [ "$ROUNDS" -ge 1 ] && [ "$ROUNDS" -le 10 ] ||
	die "C4_ROUNDS must be 1..10"
command -v bpftool >/dev/null || die "bpftool is missing"

run_pid=
perf_pid=
hold_pid=

cleanup() {
	[ -n "$perf_pid" ] && bed_stop_pid "$perf_pid"
	[ -n "$run_pid" ] && bed_stop_pid "$run_pid"
	[ -n "$hold_pid" ] && bed_stop_pid "$hold_pid"
	bed_teardown
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bed_setup || die "test bed setup failed"
cp "$BENCH_SRC/burst.py" "$E2E_DIR/bin/" && chmod 755 "$E2E_DIR/bin/burst.py"
# The holder's stdin is a pipe this shell keeps open: it lets go of the
# statistics when this script ends, however it ends (or after 15 min).
# shellcheck disable=SC2034 # held open, never written
exec {hold_fd}> >(exec /usr/bin/python3 "$BENCH_SRC/bpf_stats.py" 900 \
	>"$E2E_DIR/stats.on")
hold_pid=$!
bed_wait_file "$E2E_DIR/stats.on" 10 || die "BPF_ENABLE_STATS failed"

# prog_stats PID: "name run_cnt run_time_ns" of every egr_* program PID holds.
prog_stats() {
	local fd id
	for fd in /proc/"$1"/fd/*; do
		[ "$(readlink "$fd" 2>/dev/null)" = anon_inode:bpf-prog ] || continue
		id=$(awk '$1 == "prog_id:" { print $2 }' "/proc/$1/fdinfo/${fd##*/}")
		[ -n "$id" ] || continue
		bpftool prog show id "$id" 2>/dev/null | awk '
			/ name / { for (i = 1; i < NF; i++) {
				if ($i == "name") n = $(i + 1)
				if ($i == "run_time_ns") t = $(i + 1)
				if ($i == "run_cnt") c = $(i + 1) } }
			END { if (n ~ /^egr_/) print n, c + 0, t + 0 }'
	done | sort
}

# measure TAG BINARY ROUND: one egressd, CONNS sequential connects; appends
# "TAG ROUND name cnt ns ok" lines to $E2E_DIR/c4.txt. One retry: on a
# machine shared with other test runs an egressd run is sometimes stopped
# from outside.
measure() {
	measure_once "$@" && return 0
	echo "connect4_stats: $1 round $3 failed, once more" >&2
	measure_once "$@" || echo "connect4_stats: $1 round $3 skipped" >&2
}

measure_once() {
	local tag=$1 bin=$2 rnd=$3 d i ok
	d=$E2E_DIR/run/c4-$tag-$rnd
	rm -rf "$d"
	mkdir -p "$d" && chmod 777 "$d"
	ip netns exec "$NS_HOST" env -i PATH=/usr/local/bin:/usr/bin:/bin \
		HOME="$E2E_DIR/home" LANG=C.UTF-8 \
		"$bin" run --user nobody -q --allow "$OTHER4" -- \
		/usr/bin/python3 "$E2E_DIR/bin/burst.py" --addr "$OTHER4" \
		--ports "$ECHO_PORTS" --conns "$CONNS" --procs 1 --window 1 \
		--seconds 0.001 --timeout 90 --status "$d/status.json" \
		--release "$d/release" </dev/null >"$d/out" 2>"$d/err" &
	run_pid=$!
	bed_track "$run_pid"
	if [ -n "$PERF" ] && [ "$tag" = new ] && [ "$rnd" = 1 ]; then
		perf record -a -g -o "$PERF" -- sleep 8 >/dev/null 2>&1 &
		perf_pid=$!
	fi
	for ((i = 0; i < 1200; i++)); do
		[ -s "$d/status.json" ] && break
		kill -0 "$run_pid" 2>/dev/null || break
		sleep 0.1
	done
	[ -s "$d/status.json" ] || {
		cat "$d/out" "$d/err" >&2
		echo "connect4_stats: $tag: the client did not finish (see above)" >&2
		bed_stop_pid "$run_pid"
		run_pid=
		return 1
	}
	ok=$("$E2E_PY" -c 'import json,sys; s=json.load(open(sys.argv[1]))
print(s["ok"]) if not s["mismatch"] and not s["errors"] else print("bad", s)' \
		"$d/status.json")
	if ! [[ "$ok" =~ ^[0-9]+$ ]]; then
		echo "connect4_stats: $tag: client errors: $ok" >&2
		bed_stop_pid "$run_pid"
		run_pid=
		return 1
	fi
	prog_stats "$run_pid" | sed "s/^/$tag $rnd /; s/\$/ $ok/" >>"$E2E_DIR/c4.txt"
	: >"$d/release"
	for ((i = 0; i < 100; i++)); do
		kill -0 "$run_pid" 2>/dev/null || break
		sleep 0.1
	done
	bed_stop_pid "$run_pid"
	run_pid=
	if [ -n "$perf_pid" ]; then
		wait "$perf_pid" 2>/dev/null
		perf_pid=
	fi
}

: >"$E2E_DIR/c4.txt"
for ((r = 1; r <= ROUNDS; r++)); do
	if [ -z "$BASE" ]; then
		measure new "$EGRESSD" "$r"
	elif ((r % 2)); then
		measure base "$BASE" "$r"
		measure new "$EGRESSD" "$r"
	else
		measure new "$EGRESSD" "$r"
		measure base "$BASE" "$r"
	fi
done

echo "# $CONNS sequential IPv4 connects per run; kernel $(uname -r)"
"$E2E_PY" - "$E2E_DIR/c4.txt" <<'PY'
import statistics, sys
runs = {}
for l in open(sys.argv[1]):
    tag, rnd, name, cnt, ns, ok = l.split()
    if int(cnt):
        runs.setdefault((tag, int(rnd)), {})[name] = (int(cnt), int(ns), int(ok))
print("# build round program            runs   avg_ns runs/conn  ns/conn")
for (tag, rnd), progs in sorted(runs.items()):
    tot = 0
    for name, (cnt, ns, ok) in sorted(progs.items()):
        tot += ns / ok
        print("%-5s %5d %-18s %7d %8.1f %6.2f %8.1f" % (
            tag, rnd, name, cnt, ns / cnt, cnt / ok, ns / ok))
    print("%-5s %5d %-18s %34.1f" % (tag, rnd, "= per connection", tot))
print("# median over rounds: avg_ns of each program; sum per connection")
for tag in sorted({t for t, _ in runs}):
    rs = [p for (t, _), p in runs.items() if t == tag]
    names = sorted({n for p in rs for n in p})
    parts = ["%s %.0f" % (n[4:], statistics.median(
        p[n][1] / p[n][0] for p in rs if n in p)) for n in names]
    tot = statistics.median(sum(ns / ok for _, ns, ok in p.values()) for p in rs)
    print("%-5s %s; per connection %.0f ns (%d rounds)" % (
        tag, ", ".join(parts), tot, len(rs)))
PY
