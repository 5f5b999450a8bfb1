#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
#
# make bench: direct vs through `egressd run` on the hermetic test bed
# (tests/e2e/lib.sh), measured in the same run, interleaved, medians of
# BENCH_ROUNDS rounds. The origin is nginx in the bed's "internet"
# (192.0.2.10:9443, TLS with the bed's test CA); the clients run in the
# runner namespace as nobody, outside and inside an enforced cgroup.
#
#   bulk:  curl downloads a BENCH_BULK_MIB MiB object over TLS   -> MiB/s
#   conns: wrk, one new TLS connection per request (Connection: close),
#          a 1 KiB object, BENCH_SECONDS seconds                  -> req/s
#
# Results: build/bench/results.json and a table on stdout (copy it into
# docs/BENCHMARKS.md with the date and machine).
set -uo pipefail

BENCH_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_SRC/../.." && pwd)
EGRESSD=${EGRESSD:-$REPO/egressd}
BENCH_ROUNDS=${BENCH_ROUNDS:-5}
BENCH_SECONDS=${BENCH_SECONDS:-5}
BENCH_BULK_MIB=${BENCH_BULK_MIB:-100}
BENCH_CONNS=${BENCH_CONNS:-8}
BENCH_ONLY=${BENCH_ONLY:-}   # "bulk" or "conns" to run one benchmark
OUT=$REPO/build/bench
export E2E_TIMEOUT=$((BENCH_SECONDS + 60))

# shellcheck source=../e2e/lib.sh
. "$REPO/tests/e2e/lib.sh"

die() { echo "bench: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "needs root (network namespaces, egressd run)"
[ -x "$EGRESSD" ] || die "$EGRESSD not built (make)"
command -v nginx >/dev/null || die "nginx is missing: make bench-deps"
command -v wrk >/dev/null || die "wrk is missing: make bench-deps"

trap 'bed_teardown' EXIT INT TERM
bed_setup || die "test bed setup failed"
mkdir -p "$OUT"

# The origin: nginx, one worker, sendfile off (TLS), in the net namespace.
www=$E2E_DIR/www
mkdir -p "$www"
head -c 1024 /dev/urandom >"$www/1k"
head -c $((BENCH_BULK_MIB * 1024 * 1024)) /dev/zero >"$www/bulk"
chmod -R a+rX "$www"
cat >"$E2E_DIR/nginx.conf" <<NGINX
worker_processes 1;
pid $E2E_DIR/run/nginx.pid;
error_log $E2E_DIR/logs/nginx.err warn;
daemon off;
events { worker_connections 4096; }
http {
	access_log off;
	keepalive_requests 100000;
	server {
		listen $ALLOWED4:9443 ssl reuseport;
		server_name allowed.test;
		ssl_certificate $E2E_DIR/pki/allowed.test.pem;
		ssl_certificate_key $E2E_DIR/pki/allowed.test.key;
		ssl_session_cache off;
		ssl_session_tickets off;
		root $www;
	}
}
NGINX
in_net nginx -c "$E2E_DIR/nginx.conf" </dev/null >"$E2E_DIR/logs/nginx.out" 2>&1 &
bed_track $!
for ((i = 0; i < 50; i++)); do
	in_host timeout 2 curl -sk --resolve allowed.test:9443:$ALLOWED4 \
		-o /dev/null https://allowed.test:9443/1k && break
	sleep 0.1
done

URL=https://allowed.test:9443
RULE=allowed.test:9443

# run_client MODE CMD...: MODE direct or egressd; prints CMD's stdout.
run_client() {
	local mode=$1
	shift
	local envv=(env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$E2E_DIR/home"
		SSL_CERT_FILE="$E2E_CA")
	if [ "$mode" = direct ]; then
		(cd "$E2E_DIR" && ip netns exec "$NS_HOST" setpriv \
			--reuid="$E2E_NOBODY_UID" --regid="$E2E_NOBODY_GID" \
			--clear-groups "${envv[@]}" "$@" </dev/null)
	else
		(cd "$E2E_DIR" && ip netns exec "$NS_HOST" "$EGRESSD" run -q \
			--user nobody --allow "$RULE" -- "${envv[@]}" "$@" </dev/null)
	fi
}

# bulk MODE: prints "MiB/s egressd-CPU-ms-per-100MiB" (CPU: utime+stime of
# the egressd process, read from /proc by the agent's parent-side wrapper;
# "-" for direct).
bulk() {
	local tck
	tck=$(getconf CLK_TCK)
	run_client "$1" sh -c '
		cpu() { [ "$1" = egressd ] && awk "{ print \$14 + \$15 }" /proc/$PPID/stat || echo 0; }
		a=$(cpu "$1")
		s=$(curl -sS --cacert "$2" -o /dev/null -w "%{speed_download} %{size_download}" "$3")
		b=$(cpu "$1")
		echo "$s $a $b"' sh "$1" "$E2E_CA" "$URL/bulk" |
		awk -v mode="$1" -v tck="$tck" '{
			cpu = ($4 - $3) * 1000 / tck
			per = $2 > 0 ? cpu * 104857600 / $2 : 0
			if (mode == "egressd") printf "%.1f %.0f\n", $1 / 1048576, per
			else printf "%.1f -\n", $1 / 1048576
		}'
}

conns() { # req/s, a new TLS connection per request
	run_client "$1" wrk -t1 -c"$BENCH_CONNS" -d"${BENCH_SECONDS}s" \
		-H 'Connection: close' "$URL/1k" |
		awk '/^Requests\/sec:/ { print $2 }'
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print "null"; else if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# Warm-up, not counted: page cache for the object, first-run costs.
for mode in direct egressd; do
	[ "$BENCH_ONLY" != conns ] && bulk "$mode" >/dev/null
done

declare -A samples
for ((r = 1; r <= BENCH_ROUNDS; r++)); do
	# Interleave, alternating which mode goes first.
	if ((r % 2)); then order="direct egressd"; else order="egressd direct"; fi
	for mode in $order; do
		if [ "$BENCH_ONLY" != conns ]; then
			read -r v c < <(bulk "$mode")
			samples[bulk_$mode]+="$v "
			[ "$mode" = egressd ] && samples[cpu_egressd]+="$c "
		fi
		if [ "$BENCH_ONLY" != bulk ]; then
			v=$(conns "$mode")
			samples[conns_$mode]+="$v "
		fi
	done
	printf '# round %d/%d done\n' "$r" "$BENCH_ROUNDS" >&2
done

med() { tr ' ' '\n' <<<"${samples[$1]:-}" | grep -v '^$' | median; }
bd=$(med bulk_direct) be=$(med bulk_egressd)
cd_=$(med conns_direct) ce=$(med conns_egressd)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "null" && b != "null" && b + 0 > 0) printf "%.3f", a / b; else print "null" }'; }
rb=$(ratio "$be" "$bd") rc=$(ratio "$ce" "$cd_")
cpu=$(med cpu_egressd)

cat >"$OUT/results.json" <<JSON
{
  "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "kernel": "$(uname -r)",
  "cpus": $(nproc),
  "rounds": $BENCH_ROUNDS,
  "bulk_mib": $BENCH_BULK_MIB,
  "conns_seconds": $BENCH_SECONDS,
  "conns_concurrency": $BENCH_CONNS,
  "bulk_mib_s": { "direct": $bd, "egressd": $be, "ratio": $rb,
                  "samples_direct": [$(echo ${samples[bulk_direct]:-} | tr ' ' ',')],
                  "samples_egressd": [$(echo ${samples[bulk_egressd]:-} | tr ' ' ',')],
                  "egressd_cpu_ms_per_100mib": $cpu },
  "new_conn_req_s": { "direct": $cd_, "egressd": $ce, "ratio": $rc,
                  "samples_direct": [$(echo ${samples[conns_direct]:-} | tr ' ' ',')],
                  "samples_egressd": [$(echo ${samples[conns_egressd]:-} | tr ' ' ',')] }
}
JSON

printf '\n%-34s %12s %12s %8s\n' "benchmark (median of $BENCH_ROUNDS)" direct egressd ratio
printf '%-34s %12s %12s %8s\n' "TLS bulk ${BENCH_BULK_MIB} MiB (MiB/s)" "$bd" "$be" "$rb"
printf '%-34s %12s %12s %8s\n' "egressd CPU per 100 MiB (ms)" - "$cpu" -
printf '%-34s %12s %12s %8s\n' "new TLS conn per request (req/s)" "$cd_" "$ce" "$rc"
printf '\nresults: %s\n' "$OUT/results.json"
