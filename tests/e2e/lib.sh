# SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
# shellcheck shell=bash
#
# The hermetic test bed (tests/e2e/README.md): two network namespaces
# joined by a veth, a small "internet" of servers and a DNS server in one,
# egressd and the agents in the other. Names are unique per run (from $$)
# and everything is removed by bed_teardown, which run.sh calls from a trap
# on EXIT/INT/TERM, so also after a failure or ^C.
#
# Nothing here attaches anything to a cgroup: egressd does that to the
# cgroup it creates. Only PIDs this script started (or processes inside the
# bed's own namespaces) are ever signalled.

E2E_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
E2E_REPO=$(cd "$E2E_SRC/../.." && pwd)
E2E_ID=${E2E_ID:-egr$$}
NS_HOST=$E2E_ID-host
NS_NET=$E2E_ID-net
E2E_DIR=
E2E_CA=
E2E_PY=/usr/bin/python3
E2E_TIMEOUT=${E2E_TIMEOUT:-20}
E2E_NOBODY_UID=$(id -u nobody 2>/dev/null || echo 65534)
E2E_NOBODY_GID=$(id -g nobody 2>/dev/null || echo 65534)

# The bed's internet: name -> addresses.
ALLOWED4=192.0.2.10
ALLOWED6=2001:db8::10
API4=192.0.2.11          # api.allowed.test, for wildcard rules
EVIL4=192.0.2.66
EVIL6=2001:db8::66
OTHER4=192.0.2.20
DNS4=192.0.2.53
# Names whose answers must never be handed to an agent (DNS rebinding):
# rebind.test points at the runner's loopback, meta.test at the cloud
# metadata address, which a server on net's loopback plays.
REBIND4=127.0.0.1
META4=169.254.169.254
ECHO_PORTS=20000-21999   # port-echo range on other.test

bed_log() { printf '# %s\n' "$*" >&2; }

in_host() { ip netns exec "$NS_HOST" "$@"; }
in_net() { ip netns exec "$NS_NET" "$@"; }
# (Start background processes with `ip netns exec` itself, not these
# functions: `func &` forks a subshell, so $! would not be the process.)

# Remember a PID we started so teardown can stop it.
bed_track() { echo "$1" >>"$E2E_DIR/pids"; }

# bed_wait_file FILE SECONDS
bed_wait_file() {
	local i
	for ((i = 0; i < $2 * 10; i++)); do
		[ -s "$1" ] && return 0
		sleep 0.1
	done
	return 1
}

bed_pki() {
	local d=$E2E_DIR/pki name
	mkdir -p "$d"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
		-nodes -keyout "$d/ca.key" -out "$d/ca.pem" -days 2 \
		-subj "/CN=egressd e2e test CA $E2E_ID" \
		-addext basicConstraints=critical,CA:TRUE \
		-addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null || return 1
	for name in allowed.test api.allowed.test evil.test other.test; do
		openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
			-nodes -keyout "$d/$name.key" -out "$d/$name.csr" \
			-subj "/CN=$name" -addext "subjectAltName=DNS:$name" \
			2>/dev/null || return 1
		openssl x509 -req -in "$d/$name.csr" -CA "$d/ca.pem" \
			-CAkey "$d/ca.key" -CAcreateserial -days 2 \
			-copy_extensions copyall \
			-extfile <(printf 'extendedKeyUsage=serverAuth\n') \
			-out "$d/$name.pem" 2>/dev/null || return 1
	done
	chmod 600 "$d"/*.key
	chmod 644 "$d/ca.pem"
	E2E_CA=$d/ca.pem
}

# A dumb-HTTP git repository (static files after `git update-server-info`)
# that allowed.test serves under /repo.git, for git ls-remote over HTTPS.
bed_gitrepo() {
	command -v git >/dev/null || return 0
	local w=$E2E_DIR/run/gitwork r=$E2E_DIR/www/repo.git
	mkdir -p "$E2E_DIR/www" || return 1
	git init -q --bare -b main "$r" >/dev/null 2>&1 &&
		git init -q -b main "$w" >/dev/null 2>&1 &&
		echo "bed repository" >"$w/README" &&
		git -C "$w" add README &&
		git -C "$w" -c user.name=e2e -c user.email=e2e@allowed.test \
			commit -q -m init &&
		git -C "$w" push -q "$r" main 2>/dev/null &&
		git --git-dir="$r" update-server-info || return 1
	rm -rf "$w"
	chmod -R a+rX "$E2E_DIR/www"
}

bed_netns() {
	ip netns add "$NS_HOST" || return 1
	ip netns add "$NS_NET" || return 1
	# Created straight inside the namespaces: no interface ever appears in
	# the machine's own namespace.
	ip link add veth0 netns "$NS_HOST" type veth peer name veth0 \
		netns "$NS_NET" || return 1
	ip -n "$NS_HOST" link set lo up
	ip -n "$NS_NET" link set lo up
	ip -n "$NS_HOST" addr add 198.51.100.2/24 dev veth0
	ip -n "$NS_HOST" addr add 2001:db8:100::2/64 dev veth0 nodad
	ip -n "$NS_NET" addr add 198.51.100.1/24 dev veth0
	ip -n "$NS_NET" addr add 2001:db8:100::1/64 dev veth0 nodad
	ip -n "$NS_HOST" link set veth0 up
	ip -n "$NS_NET" link set veth0 up
	ip -n "$NS_HOST" route add default via 198.51.100.1 || return 1
	ip -n "$NS_HOST" -6 route add default via 2001:db8:100::1 || return 1
	# The servers' addresses, on net's loopback (the kernel may lack the
	# dummy driver); net has no default route, so nothing it receives can
	# be sent on anywhere.
	local a
	for a in $ALLOWED4 $API4 $EVIL4 $OTHER4 $DNS4 $META4; do
		ip -n "$NS_NET" addr add "$a/32" dev lo || return 1
	done
	for a in $ALLOWED6 $EVIL6; do
		ip -n "$NS_NET" addr add "$a/128" dev lo nodad || return 1
	done
	# Per network namespace, so this touches the bed only: client and
	# server TCP Fast Open for tcp_fastopen_redirected.
	in_host sysctl -qw net.ipv4.tcp_fastopen=3 || return 1
	in_net sysctl -qw net.ipv4.tcp_fastopen=3 || return 1
	# Also per namespace: anyone may open ping (ICMP datagram) sockets in
	# the runner's namespace, so sock_create_refused can show that only
	# the enforced cgroup is refused them.
	in_host sysctl -qw net.ipv4.ping_group_range="0 2147483647" || return 1
	# ip netns exec bind-mounts these over /etc/resolv.conf and /etc/hosts.
	mkdir -p "/etc/netns/$NS_HOST" || return 1
	echo "nameserver $DNS4" >"/etc/netns/$NS_HOST/resolv.conf"
	printf '127.0.0.1 localhost\n::1 localhost ip6-localhost\n' \
		>"/etc/netns/$NS_HOST/hosts"
}

bed_dns() {
	local log=$E2E_DIR/logs/dnsmasq.log
	: >"$log"
	ip netns exec "$NS_NET" dnsmasq --keep-in-foreground --conf-file=/dev/null \
		--no-resolv --no-hosts --no-poll --pid-file= --user=root \
		--listen-address=$DNS4 --bind-interfaces --port=53 \
		--host-record=allowed.test,$ALLOWED4,$ALLOWED6 \
		--host-record=api.allowed.test,$API4 \
		--host-record=www.allowed.test,$ALLOWED4 \
		--host-record=evil.test,$EVIL4,$EVIL6 \
		--host-record=other.test,$OTHER4 \
		--host-record=rebind.test,$REBIND4 \
		--host-record=meta.test,$META4 \
		--log-queries --log-facility="$log" \
		</dev/null >"$E2E_DIR/logs/dnsmasq.out" 2>&1 &
	bed_track $!
	local i
	for ((i = 0; i < 50; i++)); do
		in_host timeout 2 dig +short +time=1 +tries=1 @$DNS4 allowed.test A \
			2>/dev/null | grep -qx "$ALLOWED4" && return 0
		sleep 0.1
	done
	bed_log "dnsmasq did not answer: $(cat "$E2E_DIR/logs/dnsmasq.out")"
	return 1
}

# bed_server NAME [server.py options]: one python server in the net netns.
bed_server() {
	local name=$1
	shift
	local ready=$E2E_DIR/run/$name.ready
	ip netns exec "$NS_NET" "$E2E_PY" "$E2E_DIR/bin/server.py" --name "$name" \
		--log "$E2E_DIR/srv/$name.log" --ready "$ready" "$@" \
		</dev/null >>"$E2E_DIR/logs/servers.out" 2>&1 &
	bed_track $!
	: >>"$E2E_DIR/srv/$name.log"
}

bed_servers() {
	local p=$E2E_DIR/pki
	# a bulk download of known content (kernel_relay)
	mkdir -p "$E2E_DIR/www/dl" &&
		head -c 16777216 /dev/urandom >"$E2E_DIR/www/dl/16m" || return 1
	bed_server allowed.test --addr $ALLOWED4 --addr $ALLOWED6 \
		--tls 443 --tls 8443 --http 80 --http 8080 --hash 9100 --vhost 8081 \
		--static /repo.git="$E2E_DIR/www/repo.git" \
		--static /dl="$E2E_DIR/www/dl" \
		--cert "$p/allowed.test.pem" --key "$p/allowed.test.key"
	bed_server api.allowed.test --addr $API4 --tls 443 --http 80 \
		--cert "$p/api.allowed.test.pem" --key "$p/api.allowed.test.key"
	# evil.test also runs the attacker's own DNS server (UDP and TCP 53)
	# and an ssh-style port.
	bed_server evil.test --addr $EVIL4 --addr $EVIL6 \
		--tls 443 --tls 8443 --http 80 --http 8080 --udp 443 --udp 123 \
		--dns 53 --banner 22 \
		--cert "$p/evil.test.pem" --key "$p/evil.test.key"
	bed_server other.test --addr $OTHER4 --tls 443 --http 80 \
		--echo $ECHO_PORTS --banner 22 \
		--cert "$p/other.test.pem" --key "$p/other.test.key"
	bed_server meta.test --addr $META4 --http 80
	local n
	for n in allowed.test api.allowed.test evil.test other.test meta.test; do
		if ! bed_wait_file "$E2E_DIR/run/$n.ready" 20; then
			bed_log "server $n did not start:"
			sed 's/^/#   /' "$E2E_DIR/logs/servers.out" >&2
			return 1
		fi
	done
}

# Build the attacker programs (into build/e2e, then copied into the bed so
# the unprivileged agent can run them).
bed_build() {
	local out=$E2E_REPO/build/e2e prog
	mkdir -p "$out" || return 1
	for prog in uring_connect deny_flood; do
		if [ ! -x "$out/$prog" ] || [ "$E2E_SRC/$prog.c" -nt "$out/$prog" ]; then
			${CC:-cc} -O2 -g -std=gnu11 -Wall -Wextra -Werror \
				-o "$out/$prog" "$E2E_SRC/$prog.c" || return 1
		fi
		cp "$out/$prog" "$E2E_DIR/bin/"
	done
}

# Beds of earlier runs that were SIGKILLed (their run.sh is gone): their
# namespaces and whatever runs inside were made by this script.
bed_reap_stale() {
	local ns id pid
	for ns in $(ip netns list 2>/dev/null | awk '{ print $1 }' |
		grep -E '^egr[0-9]+-(host|net|pod)$'); do
		id=${ns%-*}
		id=${id#egr}
		[ "$id" = $$ ] && continue
		# Its creator (run.sh, bench/run.sh, a script sourcing lib.sh)
		# is still alive: another bed in use, not stale.
		[ -d "/proc/$id" ] && continue
		bed_log "removing stale bed namespace $ns"
		for pid in $(ip netns pids "$ns" 2>/dev/null); do
			bed_stop_pid "$pid"
		done
		ip netns del "$ns" 2>/dev/null
		rm -rf "/etc/netns/$ns"
	done
}

bed_setup() {
	bed_reap_stale
	E2E_DIR=$(mktemp -d /tmp/egressd-e2e.XXXXXX) || return 1
	chmod 755 "$E2E_DIR"
	mkdir -p "$E2E_DIR"/{bin,logs,srv,run,pki,home,cases}
	: >"$E2E_DIR/pids"
	chmod 755 "$E2E_DIR"/{bin,logs,srv,run,cases}
	chown "$E2E_NOBODY_UID:$E2E_NOBODY_GID" "$E2E_DIR/home"
	# Agents write their results here.
	chmod 1777 "$E2E_DIR/run"
	cp "$E2E_SRC/server.py" "$E2E_SRC/client.py" "$E2E_SRC/scope_probe.py" \
		"$E2E_SRC/tty_session.py" "$E2E_DIR/bin/"
	chmod 755 "$E2E_DIR"/bin/*
	bed_build || { bed_log "building the attackers failed"; return 1; }
	bed_pki || { bed_log "openssl failed"; return 1; }
	bed_gitrepo || { bed_log "git repository for the bed failed"; return 1; }
	bed_netns || { bed_log "network namespaces failed"; return 1; }
	bed_servers || return 1
	bed_dns || return 1
}

# Signal a PID and wait for it to go (bounded).
bed_stop_pid() {
	local pid=$1 i
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null
	for ((i = 0; i < 20; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null
	for ((i = 0; i < 20; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	return 1
}

bed_teardown() {
	[ -n "${E2E_DIR:-}" ] && [ -d "$E2E_DIR" ] || return 0
	local pid ns
	if [ -f "$E2E_DIR/pids" ]; then
		while read -r pid; do
			[ -n "$pid" ] && bed_stop_pid "$pid"
		done <"$E2E_DIR/pids"
	fi
	# cgroups an egressd of this run left behind (cleanup_after_kill),
	# once the processes above are gone; nothing else is touched.
	if [ -s "$E2E_DIR/leftover_cgroups" ]; then
		local cg
		while read -r cg; do
			[ -n "$cg" ] || continue
			# shellcheck disable=SC2016
			cg_run 'd=$CG'"$cg"'; [ ! -d "$d" ] ||
				find "$d" -depth -type d -execdir rmdir {} \;' 2>/dev/null
		done <"$E2E_DIR/leftover_cgroups"
	fi
	# Anything still inside the bed's namespaces was started by this run.
	# ($E2E_ID-pod: daemon_pod_netns's pod, if the run was interrupted)
	for ns in "$NS_HOST" "$NS_NET" "$E2E_ID-pod"; do
		if ip netns list 2>/dev/null | grep -qw "^$ns"; then
			for pid in $(ip netns pids "$ns" 2>/dev/null); do
				bed_stop_pid "$pid"
			done
			ip netns del "$ns" 2>/dev/null
		fi
	done
	[ -n "$NS_HOST" ] && rm -rf "/etc/netns/$NS_HOST"
	rm -rf "/etc/netns/$E2E_ID-pod"
	if [ "${E2E_KEEP:-0}" = 1 ]; then
		bed_log "kept $E2E_DIR"
	else
		rm -rf "$E2E_DIR"
	fi
	E2E_DIR=
}

# ---------------------------------------------------------------------
# Running agents.
#
# The agent's clean environment (env -i ...), trusting the bed's CA: sets
# the caller's envv array.
agent_env() {
	envv=(env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$E2E_DIR/home"
		LANG=C.UTF-8 SSL_CERT_FILE="$E2E_CA" NODE_EXTRA_CA_CERTS="$E2E_CA")
}

# egr [egressd-run options] -- CMD...
# Runs CMD as nobody in the host netns through `egressd run` with the
# options given (never the built-in default policy: every case passes its
# rules), a JSON audit log in $CASE_AUDIT and egressd's stderr appended to
# $CASE_STDERR. With E2E_RUNNER=direct it runs CMD as nobody WITHOUT
# egressd (the options are ignored): that proves the bed, servers and
# clients work, and that every denial case can fail.
# CMD gets a clean environment that trusts the bed's CA.
egr() {
	local opts=()
	while [ $# -gt 0 ] && [ "$1" != -- ]; do
		opts+=("$1")
		shift
	done
	[ $# -gt 0 ] && shift
	local envv
	agent_env
	if [ "$E2E_RUNNER" = direct ]; then
		outside "$@"
	else
		(cd "$E2E_DIR" && timeout -k 5 "$E2E_TIMEOUT" \
			ip netns exec "$NS_HOST" "$EGRESSD" run --user nobody \
			--log "$CASE_AUDIT" --log-format json "${opts[@]}" \
			-- "${envv[@]}" "$@" </dev/null 2>>"$CASE_STDERR")
	fi
}

# egr_ic [egressd-run options] -- CMD...
# Like egr, for TLS interception: CMD gets only what `egressd run` sets (no
# env -i around CMD, which would drop the CA bundle variables), so egressd
# itself starts from a clean environment plus the caller's IC_ENV array
# (credentials, e.g. IC_ENV=(API_KEY=...)). egressd verifies upstream
# servers against the bed's CA (a later --upstream-ca wins).
egr_ic() {
	local opts=()
	while [ $# -gt 0 ] && [ "$1" != -- ]; do
		opts+=("$1")
		shift
	done
	[ $# -gt 0 ] && shift
	(cd "$E2E_DIR" && timeout -k 5 "$E2E_TIMEOUT" \
		ip netns exec "$NS_HOST" env -i PATH=/usr/local/bin:/usr/bin:/bin \
		HOME="$E2E_DIR/home" LANG=C.UTF-8 "${IC_ENV[@]}" \
		"$EGRESSD" run --user nobody --log "$CASE_AUDIT" --log-format json \
		--upstream-ca "$E2E_CA" "${opts[@]}" -- "$@" </dev/null 2>>"$CASE_STDERR")
}

# outside CMD...: CMD as nobody in the host netns, with egr's environment,
# but never inside egressd (what egr does with E2E_RUNNER=direct): for the
# "works outside the cgroup" half of a case.
outside() {
	local envv
	agent_env
	(cd "$E2E_DIR" && timeout -k 3 "$E2E_TIMEOUT" \
		ip netns exec "$NS_HOST" setpriv --reuid="$E2E_NOBODY_UID" \
		--regid="$E2E_NOBODY_GID" --clear-groups "${envv[@]}" "$@" \
		</dev/null)
}

# egressd itself (not through run --user), in the host netns.
egr_raw() {
	(cd "$E2E_DIR" && timeout -k 5 "$E2E_TIMEOUT" \
		ip netns exec "$NS_HOST" env -u SUDO_UID -u SUDO_GID -u SUDO_USER \
		"$EGRESSD" "$@" </dev/null)
}

# Server log helpers: log_mark NAME remembers the current length of a
# server's log; log_new NAME prints what was logged since.
log_mark() { wc -l <"$E2E_DIR/srv/$1.log" >"$E2E_DIR/run/mark.$1"; }
log_new() {
	local m
	m=$(cat "$E2E_DIR/run/mark.$1" 2>/dev/null || echo 0)
	tail -n +$((m + 1)) "$E2E_DIR/srv/$1.log"
}

# cgroup2 seen from a private mount (the machine may have cgroup v1 or a
# hybrid layout; a private mount shows the whole v2 hierarchy either way).
# cg_run 'shell using $CG' -- runs it with the hierarchy at $CG.
cg_run() {
	local mnt=$E2E_DIR/cgroup2
	mkdir -p "$mnt"
	CG=$mnt unshare -m --propagation private sh -c \
		'mount -t cgroup2 none "$CG" && eval "$1"' sh "$1"
}

# egressd* cgroups anywhere in the hierarchy, one path per line.
cg_list_egressd() {
	cg_run 'cd "$CG" && find . -mindepth 1 -maxdepth 8 -type d \
		-name "egressd*" 2>/dev/null | sed "s|^\.||" | sort'
}

# IDs of loaded BPF programs named egr_*.
bpf_list_egr() {
	bpftool prog show 2>/dev/null |
		sed -n 's/^\([0-9]*\): .* name \(egr_[^ ]*\) .*/\1 \2/p' | sort
}

# JSON helpers on stdout of client.py (one object).
jget() { "$E2E_PY" -c 'import json,sys
o=json.loads(sys.stdin.read().strip().splitlines()[-1] or "{}")
v=o
for k in sys.argv[1:]:
    v=v.get(k) if isinstance(v,dict) else (v[int(k)] if isinstance(v,list) and len(v)>int(k) else None)
print("" if v is None else (json.dumps(v) if isinstance(v,(list,dict)) else v))' "$@" 2>/dev/null; }

now_ms() { date +%s%3N; }
