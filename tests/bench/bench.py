#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
"""make bench: egressd against the proxies people would otherwise pick.

Called by tests/bench/run.sh once the hermetic test bed (tests/e2e/lib.sh)
is up; run.sh tears the bed down afterwards (and is the backstop: every
PID started here is also recorded in the bed's pids file). Everything runs
inside the bed's two network namespaces; the only thing outside is the
global sysctl kernel.bpf_stats_enabled, switched on for the run and put
back by run.sh (and BPF run-time statistics held on through
BPF_ENABLE_STATS, tests/bench/bpf_stats.py, while this runs).

Rows (same clients, same run, interleaved order, medians of rounds):
  direct             clients -> origin
  egressd            egressd run --allow allowed.test:9443 (SNI passthrough)
  haproxy-sni        HAProxy mode tcp + req.ssl_sni allowlist (SNI router)
  nginx-sni          nginx stream + ssl_preread (SNI router)
  egressd-intercept  egressd run --intercept allowed.test (TLS terminated)
  haproxy-term       HAProxy terminating TLS with a static leaf, re-encrypting
  squid-bump         squid ssl_bump peek+bump, transparent (nft REDIRECT)
  mitmproxy          mitmdump --mode transparent (nft REDIRECT)
See docs/BENCHMARKS.md for what is measured and how to read it.
"""
import glob
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time

import bpf_stats

E = os.environ
DIR = E["E2E_DIR"]
NS_HOST = E["NS_HOST"]
NS_NET = E["NS_NET"]
CA = E["E2E_CA"]
EGRESSD = E["EGRESSD"]
OUT = E["BENCH_OUT"]
SRC = os.path.dirname(os.path.abspath(__file__))
QUICK = E.get("BENCH_QUICK", "0") == "1"


def knob(name, full, quick):
    return type(full)(E.get(name, quick if QUICK else full))


ROUNDS = knob("BENCH_ROUNDS", 3, 1)
WRK_SECONDS = knob("BENCH_SECONDS", 5, 2)
WRK_THREADS = knob("BENCH_WRK_THREADS", 2, 2)
WRK_CONNS = knob("BENCH_CONNS", 50, 50)
FETCHES = knob("BENCH_FETCHES", 300, 40)
BULK_MIB = knob("BENCH_BULK_MIB", 100, 100)
# downloads per row and round: one sample is a third of a second, and this
# VM's speed moves more than that between rounds
BULK_REPS = knob("BENCH_BULK_REPS", 10, 1)
WORKERS = knob("BENCH_WORKERS", 2, 2)
IDLE_CONNS = knob("BENCH_IDLE_CONNS", 10000, 1000)
BURST_CONNS = knob("BENCH_BURST_CONNS", 20000, 2000)
BURST_PROCS = knob("BENCH_BURST_PROCS", 50, 10)
BURST_SECONDS = knob("BENCH_BURST_SECONDS", 10.0, 2.0)
ONLY = [r for r in E.get("BENCH_ROWS", "").split() if r]
EGRESSD_BASE = E.get("BENCH_EGRESSD_BASE", "")
SKIP_SCALE = E.get("BENCH_SCALE", "1") == "0"
# BENCH_SCALE=idle / burst: only that scale test
SCALE_ONLY = E.get("BENCH_SCALE", "1") if E.get("BENCH_SCALE", "1") in ("idle", "burst") else ""
# BENCH_KINDS="wrk_close fetch": only these measurements (bulk wrk_keepalive
# wrk_close fetch); the warm-up is then one fetch series instead of bulk
KINDS = [k for k in E.get("BENCH_KINDS", "").split() if k]
# BENCH_PERF=DIR: every bulk download and wrk run of every row (direct
# included) runs under a system-wide `perf record -g` and a `perf stat`
# of the row's proxy, one pair of files per sample:
# DIR/KIND-ROW-rROUND-N.data/.stat (`perf report --sort comm` tells which
# process the machine's CPU went to; egressd's threads are named
# egressd-prxN / egressd-tlsN). Diagnosis only: perf's own cost is in
# those samples' figures.
PERF_DIR = E.get("BENCH_PERF", "")
# BENCH_PERF_EVENTS=LIST: more events for that perf stat of the proxy
# (e.g. raw_syscalls:sys_enter,syscalls:sys_enter_epoll_wait).
PERF_EVENTS = E.get("BENCH_PERF_EVENTS", "")
CUR = {"round": 0}

ALLOWED4 = E.get("ALLOWED4", "192.0.2.10")
OTHER4 = E.get("OTHER4", "192.0.2.20")
ECHO_PORTS = E.get("ECHO_PORTS", "20000-21999")
SQUID_VIP = "192.0.2.12"      # virtual origins: same nginx, but nft sends
MITM_VIP = "192.0.2.13"       # the runner's connections to them to a proxy
ECHO_VIP = "192.0.2.14"       # the burst's own port-echo (burst_worker serve)
SQUID_SRC = "198.51.100.3"    # the transparent proxies' own source addresses
MITM_SRC = "198.51.100.4"
HOST = "allowed.test"
URL = "https://%s:9443" % HOST
NOBODY = "nobody"
BIN = os.path.join(DIR, "bench")
LOGS = os.path.join(DIR, "logs")

procs = {}          # name -> Popen, everything started here


def log(msg):
    print("# %s %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr,
          flush=True)


def sh(argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, **kw)


def in_host(argv):
    return ["ip", "netns", "exec", NS_HOST] + argv


def in_net(argv):
    return ["ip", "netns", "exec", NS_NET] + argv


# ------------------------------------------------------------ processes
def start(name, argv, cwd=DIR):
    out = open(os.path.join(LOGS, "bench-%s.log" % name), "ab")
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                         stderr=subprocess.STDOUT, cwd=cwd)
    out.close()
    with open(os.path.join(DIR, "pids"), "a") as f:
        f.write("%d\n" % p.pid)      # run.sh's teardown stops it too
    procs[name] = p
    return p


def stop(name):
    p = procs.pop(name, None)
    if p is None or p.poll() is not None:
        return
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(8)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)


def stop_all():
    for name in list(procs)[::-1]:
        stop(name)


def listening(ns, addr, port):
    r = sh(["ip", "netns", "exec", ns, "ss", "-Hltn",
            "src", "%s:%d" % (addr, port)])
    return bool(r.stdout.strip())


def wait_listen(name, ns, addr, port, secs=20):
    end = time.monotonic() + secs
    while time.monotonic() < end:
        if listening(ns, addr, port):
            return True
        if procs[name].poll() is not None:
            return False
        time.sleep(0.1)
    return False


def last_lines(name, n=8):
    try:
        with open(os.path.join(LOGS, "bench-%s.log" % name), "rb") as f:
            return f.read().decode(errors="replace").strip().splitlines()[-n:]
    except OSError:
        return []


def tree(pid):
    out = [pid]
    for t in glob.glob("/proc/%d/task/*/children" % pid):
        try:
            with open(t) as f:
                for c in f.read().split():
                    out += tree(int(c))
        except OSError:
            pass
    return out


def cpu_ns(pids):
    """On-CPU time of the pids' threads (schedstat, ns)."""
    t = 0
    for pid in pids:
        for s in glob.glob("/proc/%d/task/*/schedstat" % pid):
            try:
                with open(s) as f:
                    t += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    return t


def machine_busy_ms():
    """CPU time of the whole machine, all CPUs, not idle (/proc/stat):
    clients, origin, proxy and the kernel's softirq/kworker work, which
    is where a sockmap relay's bytes are moved (not charged to any proxy
    process)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:8]]
    user, nice, system, _idle, _iowait, irq, softirq = v
    return (user + nice + system + irq + softirq) * 1000.0 / os.sysconf("SC_CLK_TCK")


def open_bytes(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def status_kib(pid, key):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


# ------------------------------------------------------------ the rows
class Row:
    def __init__(self, name, group, desc, connect=None):
        self.name, self.group, self.desc = name, group, desc
        self.connect = connect       # "ADDR:PORT" the client dials, or None
        self.na = None               # why it is not measured
        self.pid = None              # the proxy's main pid
        self.own_tree = True         # account the pid's children too
        self.threads = ""
        self.runner = None           # egressd rows: the runner's directory
        self.cacert = CA
        self.s = {"bulk": [], "wrk_keepalive": [], "wrk_close": [],
                  "fetch": []}
        self.rss_kib = None

    def pids(self):
        if self.pid is None:
            return []
        return tree(self.pid) if self.own_tree else [self.pid]


ROWS = [
    Row("direct", "passthrough", "clients straight to the origin (baseline)"),
    Row("egressd", "passthrough",
        "egressd run --allow allowed.test:9443: SNI peek, splice relay"),
] + ([
    # Before/after of a change in one run: BENCH_EGRESSD_BASE=old/egressd
    Row("egressd-base", "passthrough",
        "the same with the build in BENCH_EGRESSD_BASE (%s)" % EGRESSD_BASE),
] if EGRESSD_BASE else []) + [
    Row("haproxy-sni", "passthrough",
        "HAProxy mode tcp, req.ssl_sni allowlist, SNI router on 127.0.0.1:10443",
        "127.0.0.1:10443"),
    Row("nginx-sni", "passthrough",
        "nginx stream, ssl_preread + map allowlist, SNI router on 127.0.0.1:10444",
        "127.0.0.1:10444"),
    Row("egressd-intercept", "intercept",
        "egressd run --intercept allowed.test --ca-dir (egressctl ca init) --upstream-ca (bed CA)"),
] + ([
    Row("egressd-intercept-base", "intercept",
        "the same with the build in BENCH_EGRESSD_BASE (%s)" % EGRESSD_BASE),
] if EGRESSD_BASE else []) + [
    Row("haproxy-term", "intercept",
        "HAProxy terminating TLS (static leaf, strict-sni) and re-encrypting, on 127.0.0.1:10449",
        "127.0.0.1:10449"),
    Row("squid-bump", "intercept",
        "squid ssl_bump peek+bump, transparent: nft REDIRECT %s:9443 -> 127.0.0.1:3129"
        % SQUID_VIP, SQUID_VIP + ":9443"),
    Row("mitmproxy", "intercept",
        "mitmdump --mode transparent: nft REDIRECT %s:9443 -> 127.0.0.1:8081"
        % MITM_VIP, MITM_VIP + ":9443"),
]
ROW = {r.name: r for r in ROWS}


# ------------------------------------------------------------ configs
def write(path, text, mode=0o644):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def setup_bed_extras():
    """Virtual origins, source addresses, nft redirect, socket sysctls.

    All of it inside the bed's namespaces, gone with them."""
    for a in (SQUID_VIP, MITM_VIP, ECHO_VIP):
        sh(in_net(["ip", "addr", "add", a + "/32", "dev", "lo"]))
    for a in (SQUID_SRC, MITM_SRC):
        sh(in_host(["ip", "addr", "add", a + "/24", "dev", "veth0"]))
    for ns in (NS_HOST, NS_NET):
        sh(["ip", "netns", "exec", ns, "sysctl", "-qw",
            "net.ipv4.ip_local_port_range=1024 65000",
            "net.ipv4.tcp_tw_reuse=1", "net.core.somaxconn=8192",
            "net.ipv4.tcp_max_syn_backlog=8192"])
    # The runner's connections to a virtual origin go to the transparent
    # proxy; the proxies' own upstream connections (uid proxy) do not. Each
    # proxy connects upstream from its own source address, so a reused
    # source port can never match conntrack state of a redirected flow.
    rules = """table ip egrbench {
	chain out {
		type nat hook output priority -100; policy accept;
		ip daddr %s tcp dport 9443 meta skuid != proxy redirect to :3129
		ip daddr %s tcp dport 9443 meta skuid != proxy redirect to :8081
	}
}
""" % (SQUID_VIP, MITM_VIP)
    if shutil.which("nft"):
        r = subprocess.run(in_host(["nft", "-f", "-"]), input=rules, text=True,
                           capture_output=True)
        if r.returncode:
            return "nft: " + r.stderr.strip()[:200]
        return None
    return "nft missing (make bench-deps)"


def start_origin():
    www = os.path.join(DIR, "www")
    os.makedirs(www, exist_ok=True)
    with open(os.path.join(www, "1k"), "wb") as f:
        f.write(os.urandom(1024))
    with open(os.path.join(www, "bulk"), "wb") as f:
        chunk = os.urandom(1 << 20)
        for _ in range(BULK_MIB):
            f.write(chunk)
    for p in (www, os.path.join(www, "1k"), os.path.join(www, "bulk")):
        os.chmod(p, 0o755 if os.path.isdir(p) else 0o644)
    d = os.path.join(DIR, "origin")
    os.makedirs(d, exist_ok=True)
    pki = os.path.join(DIR, "pki")
    listens = "".join("\t\tlisten %s:9443 ssl;\n" % a
                      for a in (ALLOWED4, SQUID_VIP, MITM_VIP))
    write(os.path.join(d, "nginx.conf"), """worker_processes 1;
worker_rlimit_nofile 19000;
daemon off;
pid %(d)s/nginx.pid;
error_log %(d)s/error.log warn;
events { worker_connections 16000; }
http {
	access_log off;
	sendfile on;
	keepalive_requests 1000000;
	keepalive_timeout 300s;
	default_type application/octet-stream;
	client_body_temp_path %(d)s/body;
	proxy_temp_path %(d)s/proxy;
	fastcgi_temp_path %(d)s/fastcgi;
	uwsgi_temp_path %(d)s/uwsgi;
	scgi_temp_path %(d)s/scgi;
	ssl_session_cache shared:bench:10m;
	server {
%(listens)s		listen %(a)s:9080;
		server_name allowed.test;
		ssl_certificate %(pki)s/allowed.test.pem;
		ssl_certificate_key %(pki)s/allowed.test.key;
		ssl_protocols TLSv1.2 TLSv1.3;
		root %(www)s;
	}
}
""" % {"d": d, "listens": listens, "a": ALLOWED4, "pki": pki, "www": www})
    start("origin", in_net(["nginx", "-e", d + "/error.log", "-p", d,
                            "-c", d + "/nginx.conf"]))
    if not wait_listen("origin", NS_NET, ALLOWED4, 9443):
        raise SystemExit("origin nginx did not start: %s" % last_lines("origin"))


def start_haproxy_sni(r):
    d = os.path.join(DIR, "haproxy-sni")
    os.makedirs(d, exist_ok=True)
    write(d + "/haproxy.cfg", """global
	nbthread %(w)d
	maxconn 8000
defaults
	mode tcp
	timeout connect 5s
	timeout client 60s
	timeout server 60s
frontend sni_router
	bind 127.0.0.1:10443
	# hold the connection until a whole ClientHello is in, then let
	# through only SNI allowed.test; anything else is closed.
	tcp-request inspect-delay 5s
	tcp-request content accept if { req.ssl_hello_type 1 } { req.ssl_sni -i allowed.test }
	tcp-request content reject
	default_backend origin
backend origin
	server o %(a)s:9443
""" % {"w": WORKERS, "a": ALLOWED4})
    r.threads = "nbthread %d" % WORKERS
    return start(r.name, in_host(["haproxy", "-db", "-f", d + "/haproxy.cfg"])), \
        ("127.0.0.1", 10443)


def start_nginx_sni(r):
    d = os.path.join(DIR, "nginx-sni")
    os.makedirs(d, exist_ok=True)
    mod = "/usr/lib/nginx/modules/ngx_stream_module.so"
    if not os.path.exists(mod):
        return None, "libnginx-mod-stream missing (make bench-deps)"
    write(d + "/nginx.conf", """load_module %(mod)s;
worker_processes %(w)d;
worker_rlimit_nofile 19000;
daemon off;
pid %(d)s/nginx.pid;
error_log %(d)s/error.log warn;
events { worker_connections 8000; }
stream {
	# allowlist: the SNI picks the upstream; unknown names (and no SNI)
	# go to a port nothing listens on, so the client is closed.
	map $ssl_preread_server_name $upstream {
		allowed.test %(a)s:9443;
		default 127.0.0.1:1;
	}
	server {
		listen 127.0.0.1:10444;
		ssl_preread on;
		preread_timeout 5s;
		proxy_connect_timeout 5s;
		proxy_pass $upstream;
	}
}
""" % {"mod": mod, "w": WORKERS, "d": d, "a": ALLOWED4})
    r.threads = "worker_processes %d" % WORKERS
    return start(r.name, in_host(["nginx", "-e", d + "/error.log", "-p", d,
                                  "-c", d + "/nginx.conf"])), \
        ("127.0.0.1", 10444)


def start_haproxy_term(r):
    d = os.path.join(DIR, "haproxy-term")
    os.makedirs(d, exist_ok=True)
    pki = os.path.join(DIR, "pki")
    with open(d + "/leaf.pem", "w") as f:
        for p in ("allowed.test.pem", "allowed.test.key"):
            with open(os.path.join(pki, p)) as g:
                f.write(g.read())
    os.chmod(d + "/leaf.pem", 0o600)
    write(d + "/haproxy.cfg", """global
	nbthread %(w)d
	maxconn 8000
defaults
	mode tcp
	timeout connect 5s
	timeout client 60s
	timeout server 60s
frontend terminate
	# a static leaf for allowed.test from the bed's CA; strict-sni
	# refuses every other name in the handshake.
	bind 127.0.0.1:10449 ssl crt %(d)s/leaf.pem strict-sni alpn http/1.1
	default_backend origin_tls
backend origin_tls
	server o %(a)s:9443 ssl verify required ca-file %(ca)s sni str(allowed.test) verifyhost allowed.test
""" % {"w": WORKERS, "d": d, "a": ALLOWED4, "ca": CA})
    r.threads = "nbthread %d" % WORKERS
    return start(r.name, in_host(["haproxy", "-db", "-f", d + "/haproxy.cfg"])), \
        ("127.0.0.1", 10449)


def start_squid(r):
    if not shutil.which("squid") or \
            not os.path.exists("/usr/lib/squid/security_file_certgen"):
        return None, "squid-openssl missing (make bench-deps)"
    d = os.path.join(DIR, "squid")
    os.makedirs(d, exist_ok=True)
    pki = os.path.join(DIR, "pki")
    shutil.copy(CA, d + "/ca.pem")
    shutil.copy(os.path.join(pki, "ca.key"), d + "/ca.key")
    write(d + "/hosts", "%s allowed.test\n" % SQUID_VIP)
    r2 = sh(["/usr/lib/squid/security_file_certgen", "-c", "-s",
             d + "/ssl_db", "-M", "4MB"])
    if r2.returncode:
        return None, "security_file_certgen: " + r2.stderr.strip()[:200]
    write(d + "/squid.conf", """# one listener: intercepted TLS (nft REDIRECT), bumped when the
# SNI is allowed.test, refused otherwise. The plain port is required by
# squid and unused.
http_port 127.0.0.1:3128
https_port 127.0.0.1:3129 intercept ssl-bump tls-cert=%(d)s/ca.pem tls-key=%(d)s/ca.key generate-host-certificates=on dynamic_cert_mem_cache_size=4MB
sslcrtd_program /usr/lib/squid/security_file_certgen -s %(d)s/ssl_db -M 4MB
sslcrtd_children 2 startup=1 idle=1
tls_outgoing_options cafile=%(ca)s
tcp_outgoing_address %(src)s
acl step1 at_step SslBump1
acl allowed_sni ssl::server_name allowed.test
ssl_bump peek step1
ssl_bump bump allowed_sni
ssl_bump terminate all
acl bed src 198.51.100.0/24 127.0.0.0/8
http_access allow bed
http_access deny all
hosts_file %(d)s/hosts
dns_nameservers 192.0.2.53
cache deny all
cache_mem 8 MB
pinger_enable off
icp_port 0
htcp_port 0
workers 1
visible_hostname bench-squid
cache_effective_user proxy
pid_filename none
cache_log %(d)s/cache.log
access_log none
logfile_rotate 0
shutdown_lifetime 1 seconds
max_filedescriptors 16384
coredump_dir %(d)s
""" % {"d": d, "ca": CA, "src": SQUID_SRC})
    sh(["chown", "-R", "proxy:proxy", d])
    os.chmod(d + "/ca.key", 0o600)
    r.threads = "1 process (workers 1) + 2 certgen helpers"
    return start(r.name, in_host(["squid", "-N", "-f", d + "/squid.conf"])), \
        ("127.0.0.1", 3129)


def start_mitmproxy(r):
    if not shutil.which("mitmdump"):
        return None, "mitmproxy missing (make bench-deps)"
    d = os.path.join(DIR, "mitm")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(DIR, "pki", "ca.key")) as f:
        key = f.read()
    with open(CA) as f:
        cert = f.read()
    write(d + "/mitmproxy-ca.pem", key + cert, 0o600)
    write(d + "/mitmproxy-ca-cert.pem", cert)
    shutil.copy(os.path.join(SRC, "mitm_allow.py"), d + "/mitm_allow.py")
    sh(["chown", "-R", "proxy:proxy", d])
    r.threads = "1 process (asyncio event loop)"
    return start(r.name, in_host([
        "setpriv", "--reuid=proxy", "--regid=proxy", "--clear-groups",
        "env", "-i", "PATH=/usr/bin:/bin", "HOME=" + d,
        "mitmdump", "-q", "--mode", "transparent",
        "--listen-host", "127.0.0.1", "--listen-port", "8081",
        "--set", "confdir=" + d,
        "--set", "ssl_verify_upstream_trusted_ca=" + CA,
        "--set", "stream_large_bodies=1m",
        "--set", "connect_addr=" + MITM_SRC,
        "-s", d + "/mitm_allow.py"])), ("127.0.0.1", 8081)


def egressd_argv(extra, cmd, exe=None):
    return in_host(["env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin",
                    "HOME=" + os.path.join(DIR, "home"), "LANG=C.UTF-8",
                    exe or EGRESSD, "run", "--user", NOBODY, "-q",
                    "--workers", str(WORKERS)] + extra + ["--"] + cmd)


def start_egressd(r, extra, exe=None):
    d = os.path.join(DIR, "runner-" + r.name)
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o777)
    p = start(r.name, egressd_argv(
        extra, ["/usr/bin/python3", BIN + "/runner.py", d, "10800"], exe))
    r.runner = d
    hello = os.path.join(d, "hello.json")
    end = time.monotonic() + 20
    while time.monotonic() < end and not os.path.exists(hello):
        if p.poll() is not None:
            return None, "egressd exited %s: %s" % (
                p.returncode, " | ".join(last_lines(r.name, 3)))
        time.sleep(0.05)
    if not os.path.exists(hello):
        return None, "the runner did not start inside egressd's cgroup"
    with open(hello) as f:
        h = json.load(f)
    r.hello = h
    r.threads = "--workers %d" % WORKERS
    r.own_tree = False      # egressd's children are the runner and clients
    return p, None


# ------------------------------------------------------------ clients
seq = [0]


def client(r, argv, env=None, timeout=120):
    """Run a client for row r: in egressd's cgroup, or as nobody outside."""
    env = dict(env or {})
    if r.connect:
        env["BENCH_CONNECT"] = r.connect
    if r.runner:
        seq[0] += 1
        n = "%06d" % seq[0]
        req = os.path.join(r.runner, "req.%s.json" % n)
        res = os.path.join(r.runner, "res.%s.json" % n)
        with open(req + ".tmp", "w") as f:
            json.dump({"argv": argv, "env": env, "timeout": timeout}, f)
        os.rename(req + ".tmp", req)
        end = time.monotonic() + timeout + 15
        while time.monotonic() < end:
            if os.path.exists(res):
                with open(res) as f:
                    o = json.load(f)
                os.unlink(res)
                return o["rc"], o["out"], o["err"]
            if procs[r.name].poll() is not None:
                return -3, "", "egressd exited"
            time.sleep(0.01)
        return -1, "", "runner timeout"
    full = in_host(["setpriv", "--reuid=" + NOBODY, "--regid=nogroup",
                    "--clear-groups", "env", "-i",
                    "PATH=/usr/local/bin:/usr/bin:/bin",
                    "HOME=" + os.path.join(DIR, "home")] +
                   ["%s=%s" % kv for kv in env.items()] + argv)
    try:
        p = subprocess.run(full, capture_output=True, timeout=timeout + 10,
                           cwd=DIR, stdin=subprocess.DEVNULL)
        return p.returncode, p.stdout.decode(errors="replace"), \
            p.stderr.decode(errors="replace")
    except subprocess.TimeoutExpired:
        return -1, "", "timeout"


def curl_base(r):
    a = ["curl", "-4", "-sS", "--http1.1", "--cacert", r.cacert]
    if r.connect:
        a += ["--connect-to", "%s:9443:%s" % (HOST, r.connect)]
    return a


def perf_begin(r, kind):
    if not PERF_DIR:
        return None
    CUR["n"] = CUR.get("n", 0) + 1
    base = os.path.join(PERF_DIR, "%s-%s-r%d-%02d" % (
        kind, r.name, CUR["round"], CUR["n"]))
    ps = [subprocess.Popen(["perf", "record", "-q", "-F", "999", "-g", "-a",
                            "-o", base + ".data"],
                           stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)]
    if r.pid:
        ps.append(subprocess.Popen(
            ["perf", "stat", "-p", ",".join(str(p) for p in r.pids()),
             "-o", base + ".stat", "-e", "context-switches,cpu-clock" +
             ("," + PERF_EVENTS if PERF_EVENTS else "")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    time.sleep(0.5)
    return ps


def perf_end(ps):
    for p in ps or []:
        p.send_signal(signal.SIGINT)
    for p in ps or []:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def m_bulk(r):
    ps = perf_begin(r, "bulk")
    c0 = cpu_ns(r.pids())
    m0 = machine_busy_ms()
    rc, out, err = client(r, curl_base(r) + [
        "-o", "/dev/null", "--max-time", "120", "-w",
        "%{http_code} %{size_download} %{speed_download}",
        URL + "/bulk"], timeout=130)
    c1 = cpu_ns(r.pids())
    m1 = machine_busy_ms()
    perf_end(ps)
    try:
        code, size, speed = out.split()
        size, speed = int(size), float(speed)
    except ValueError:
        code, size, speed = "000", 0, 0.0
    ok = rc == 0 and code == "200" and size == BULK_MIB << 20
    return {"ok": ok, "mib_s": round(speed / 1048576, 1) if ok else None,
            "bytes": size, "cpu_ms_per_100mib":
            round((c1 - c0) / 1e6 * (100 << 20) / size, 1) if ok else None,
            "machine_ms_per_100mib":
            round((m1 - m0) * (100 << 20) / size, 1) if ok else None,
            "err": None if ok else (err or out)[-300:]}


def wrk_parse(out):
    res = {"rps": None, "requests": 0, "errors": 0}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        res["rps"] = float(m.group(1))
    m = re.search(r"(\d+) requests in", out)
    if m:
        res["requests"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), "
                  r"timeout (\d+)", out)
    if m:
        res["errors"] += sum(int(x) for x in m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        res["errors"] += int(m.group(1))
    return res


def m_wrk(r, close):
    argv = ["wrk", "-t%d" % WRK_THREADS, "-c%d" % WRK_CONNS,
            "-d%ds" % WRK_SECONDS, "--timeout", "5s",
            "-s", BIN + "/wrk_connect.lua"]
    if close:
        argv += ["-H", "Connection: close"]
    ps = perf_begin(r, "wrk_close" if close else "wrk_keepalive")
    c0 = cpu_ns(r.pids())
    rc, out, err = client(r, argv + [URL + "/1k"], timeout=WRK_SECONDS + 30)
    c1 = cpu_ns(r.pids())
    perf_end(ps)
    w = wrk_parse(out)
    w["ok"] = w["rps"] is not None and w["requests"] > 0
    w["cpu_us_per_req"] = round((c1 - c0) / 1e3 / w["requests"], 1) \
        if w["ok"] else None
    if not w["ok"]:
        w["err"] = (err or out)[-300:]
    return w


def m_fetch(r):
    c0 = cpu_ns(r.pids())
    rc, out, err = client(r, curl_base(r) + [
        "--no-sessionid", "-H", "Connection: close", "--max-time", "20",
        "-o", "/dev/null", "-w",
        "%{http_code} %{time_connect} %{time_appconnect} %{time_total}\\n",
        URL + "/1k?n=[1-%d]" % FETCHES], timeout=FETCHES * 2 + 30)
    c1 = cpu_ns(r.pids())
    conn, total, ok = [], [], 0
    for line in out.splitlines():
        f = line.split()
        if len(f) == 4 and f[0] == "200":
            ok += 1
            conn.append(round(float(f[2]) * 1000, 3))
            total.append(round(float(f[3]) * 1000, 3))
    return {"ok": ok, "n": FETCHES, "appconnect_ms": conn, "total_ms": total,
            "cpu_us_per_conn": round((c1 - c0) / 1e3 / ok, 1) if ok else None,
            "err": None if ok == FETCHES else (err or "")[-300:]}


# ------------------------------------------------------------ setup
def bring_up(err):
    starters = {"haproxy-sni": start_haproxy_sni,
                "nginx-sni": start_nginx_sni,
                "haproxy-term": start_haproxy_term,
                "squid-bump": start_squid, "mitmproxy": start_mitmproxy}
    for r in ROWS:
        if ONLY and r.name not in ONLY and r.name != "direct":
            r.na = "not selected (BENCH_ROWS)"
            continue
        if r.name == "direct":
            r.threads = "-"
            continue
        if r.name == "egressd":
            p, why = start_egressd(r, ["--allow", HOST + ":9443"])
        elif r.name == "egressd-base":
            p, why = start_egressd(r, ["--allow", HOST + ":9443"], EGRESSD_BASE)
        elif r.name in ("egressd-intercept", "egressd-intercept-base"):
            # The peers' clients trust one certificate (the bed CA); so
            # does this one: egressd's CA made with egressctl and exported.
            # The run's bundle (system CAs + egressd's) would make every
            # curl parse ~140 certificates, ~40 ms per process, which is
            # the client's cost, not the proxy's.
            cadir, cacrt = os.path.join(DIR, "bench-ca"), os.path.join(DIR, "bench-ca.crt")
            ctl = os.path.join(os.path.dirname(EGRESSD), "egressctl")
            why = None
            try:
                if not os.path.isdir(cadir):
                    subprocess.run([ctl, "ca", "init", "--dir", cadir], check=True,
                                   capture_output=True, timeout=30)
                with open(cacrt, "w") as f:
                    subprocess.run([ctl, "ca", "export", "--dir", cadir], check=True,
                                   stdout=f, timeout=30)
                os.chmod(cacrt, 0o644)
            except (OSError, subprocess.SubprocessError) as e:
                p, why = None, "egressctl ca init/export: %s" % e
            if not why:
                p, why = start_egressd(r, ["--allow", HOST + ":9443",
                                           "--intercept", HOST, "--ca-dir", cadir,
                                           "--upstream-ca", CA],
                                       EGRESSD_BASE if r.name.endswith("-base") else None)
            if p is not None:
                r.cacert = cacrt
        elif r.name in ("squid-bump", "mitmproxy") and err:
            p, why = None, err
        else:
            exe = {"haproxy-sni": "haproxy", "haproxy-term": "haproxy",
                   "nginx-sni": "nginx"}.get(r.name)
            if exe and not shutil.which(exe):
                p, why = None, "%s missing (make bench-deps)" % exe
            else:
                p, why = starters[r.name](r)
                if p is not None:
                    addr, port = why
                    why = None
                    if not wait_listen(r.name, NS_HOST, addr, port):
                        why = "did not listen on %s:%d: %s" % (
                            addr, port, " | ".join(last_lines(r.name, 3)))
        if why:
            r.na = why
            stop(r.name)
            log("%s: n/a (%s)" % (r.name, why))
            continue
        r.pid = p.pid
        log("%s: started, pid %d (%s)" % (r.name, p.pid, r.threads))
    # every row must work before it is measured: one fetch, checked
    for r in ROWS:
        if r.na:
            continue
        rc, out, err = client(r, curl_base(r) + [
            "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
            URL + "/1k"], timeout=20)
        if out.strip() != "200":
            why = "check fetch failed: curl rc %d, HTTP %s %s" % (
                rc, out.strip() or "-", err.strip()[:160])
            if r.name.startswith("egressd-intercept"):
                why = "n/a (egressd without --intercept): " + why
            r.na = why
            log("%s: %s" % (r.name, why))
            continue
        if r.name.startswith("egressd-intercept"):
            # Intercepting means the agent sees egressd's certificate:
            # trusting only the bed's CA must then fail.
            rc2, out2, _ = client(r, ["curl", "-4", "-sS", "--http1.1", "--cacert",
                                      CA, "-o", "/dev/null", "-w",
                                      "%{http_code}", "--max-time", "10",
                                      URL + "/1k"], timeout=20)
            if out2.strip() == "200":
                r.na = "n/a (egressd without --intercept): the agent saw " \
                       "the origin's own certificate"
                log("%s: %s" % (r.name, r.na))
        if r.na:
            stop(r.name)
    for r in ROWS:
        if r.name.startswith("egressd-intercept") and r.na and \
                not r.na.startswith("n/a (egressd without --intercept)") and \
                not r.na.startswith("not selected"):
            r.na = "n/a (egressd without --intercept): " + r.na


# ------------------------------------------------------------ kernel stats
def bpf_objects(pid, kind, name):
    """IDs of the BPF programs or maps (kind "prog"/"map") named name that
    the process pid holds: found through its fds' fdinfo, so another
    egressd on the machine (another bed, the daemon) is never counted."""
    ids = set()
    for fd in glob.glob("/proc/%d/fd/*" % pid):
        try:
            if os.readlink(fd) != "anon_inode:bpf-" + kind:
                continue
            with open("/proc/%d/fdinfo/%s" % (pid, os.path.basename(fd))) as f:
                m = re.search(r"^%s_id:\s*(\d+)" % kind, f.read(), re.M)
            if m:
                ids.add(int(m.group(1)))
        except OSError:
            pass
    out = []
    for i in sorted(ids):
        r = sh(["bpftool", kind, "show", "id", str(i), "-j"])
        try:
            o = json.loads(r.stdout or "{}")
        except ValueError:
            continue
        if o.get("name") == name:
            out.append(o)
    return out


def bpf_map_entries(pid, name):
    n = None
    for m in bpf_objects(pid, "map", name):
        d = sh(["bpftool", "map", "dump", "id", str(m["id"]), "-j"])
        try:
            n = (n or 0) + len(json.loads(d.stdout or "[]"))
        except ValueError:
            pass
    return n


# The programs a redirected TCP connection runs: sock_create at socket(),
# connect4/6 (which makes the origin record), sockops (several callbacks
# per connection; the hand-off at TCP_CONNECT_CB), sock_release at close(),
# setsockopt at each of the client's setsockopt() calls, egress at each
# packet the client sends (source routing, bpf/redirect.bpf.c) and ingress
# at each packet it receives (inbound TCP from other hosts); those two are
# reported per packet, not summed per connection.
KERNEL_PROGS = ("egr_connect4", "egr_connect6", "egr_sock_create",
                "egr_sockops", "egr_sock_release", "egr_setsockopt",
                "egr_egress", "egr_ingress")
PER_PACKET_PROGS = ("egr_egress", "egr_ingress")


def kernel_stats():
    """Per egressd row: connect4 under the row's name, the other programs
    as "row (connect6)", "row (sock_create)", ...; the connect4 entry also
    gets ns_per_connect, all these programs' time over connect4+6 runs."""
    res = {}
    for r in ROWS:
        if not r.name.startswith("egressd") or r.na or r.pid is None:
            continue
        tot_ns = conns = 0
        for prog in KERNEL_PROGS:
            for p in bpf_objects(r.pid, "prog", prog):
                cnt = p.get("run_cnt", 0)
                ns = p.get("run_time_ns", 0)
                # egress runs per packet, not per connection: its own
                # line gives its average; keep-alive rows send thousands
                # of packets per connection
                if prog not in PER_PACKET_PROGS:
                    tot_ns += ns
                if prog in ("egr_connect4", "egr_connect6"):
                    conns += cnt
                key = r.name if prog == "egr_connect4" else \
                    "%s (%s)" % (r.name, prog[4:])
                res[key] = {"prog_id": p["id"], "run_cnt": cnt,
                            "run_time_ns": ns,
                            "avg_ns": round(ns / cnt, 1) if cnt else None}
        if r.name in res:
            res[r.name]["ns_per_connect"] = \
                round(tot_ns / conns, 1) if conns else None
    return res


# ------------------------------------------------------------ scale
def wait_json(path, secs, proc):
    end = time.monotonic() + secs
    while time.monotonic() < end:
        if os.path.exists(path):
            with open(path) as f:
                return json.load(f)
        if proc.poll() is not None:
            return None
        time.sleep(0.1)
    return None


def fds_by_thread(pid):
    """Descriptors per thread ("comm/tid": n): egressd's proxy workers
    each have a table of their own (user/fdbroker.h), so /proc/PID/fd
    shows only the main thread's; threads that share a table repeat it."""
    out = {}
    for tid in sorted(os.listdir("/proc/%d/task" % pid), key=int):
        try:
            with open("/proc/%d/task/%s/comm" % (pid, tid)) as f:
                comm = f.read().strip()
            out["%s/%s" % (comm, tid)] = len(
                os.listdir("/proc/%d/task/%s/fd" % (pid, tid)))
        except OSError:
            pass
    return out


def scale_idle():
    d = os.path.join(DIR, "scale-idle")
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o777)
    name = "egressd-idle"
    p = start(name, egressd_argv(
        ["--allow", HOST + ":9080", "--max-conns", str(IDLE_CONNS + 1000),
         "-v"],
        ["/usr/bin/python3", BIN + "/idle_conns.py", "--addr", ALLOWED4,
         "--port", "9080", "--host", HOST, "--count", str(IDLE_CONNS),
         "--seconds", "150", "--status", d + "/status.json",
         "--release", d + "/release"]))
    st = wait_json(d + "/status.json", 180, p)
    res = {"target": IDLE_CONNS}
    if st:
        time.sleep(2)       # settle: every relay idle
        est = sh(in_host(["ss", "-Htn", "state", "established", "dst",
                          "%s:9080" % ALLOWED4])).stdout.count("\n")
        res.update(open=st["open"], open_s=st["open_s"],
                   errors_open=st["errors"],
                   egressd_rss_kib=status_kib(p.pid, "VmRSS"),
                   egressd_hwm_kib=status_kib(p.pid, "VmHWM"),
                   egressd_fds=len(os.listdir("/proc/%d/fd" % p.pid)),
                   egressd_fds_by_thread=fds_by_thread(p.pid),
                   egressd_threads=len(os.listdir("/proc/%d/task" % p.pid)),
                   upstream_established=est, nofile_limit=st.get("nofile"))
    open(d + "/release", "w").close()
    try:
        out, _ = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        pass
    stop(name)
    try:
        with open(os.path.join(LOGS, "bench-%s.log" % name)) as f:
            lines = f.read().splitlines()
    except OSError:
        lines = []
    final = None
    for line in lines[::-1]:
        if line.startswith("{") and '"held"' in line:
            final = json.loads(line)
            break
    if final:
        res.update(held=final["held"],
                   errors_second_request=final["errors_second_request"])
    warn = [l for l in lines if re.search(r"(?i)error|limit|refus|fail", l)
            and not l.startswith("{")]
    res["egressd_error_lines"] = len(warn)
    res["egressd_error_examples"] = warn[:5]
    return res


def build_burst_worker():
    """burst_worker.c: the burst's clients and origin in C (see there)."""
    exe = os.path.join(BIN, "burst_worker")
    r = sh(["cc", "-O2", "-o", exe, os.path.join(SRC, "burst_worker.c")])
    if r.returncode:
        log("burst_worker: cc failed, the burst uses Python: %s" %
            r.stderr.strip()[:200])
        return None
    os.chmod(exe, 0o755)
    return exe


def scale_burst():
    d = os.path.join(DIR, "scale-burst")
    os.makedirs(d, exist_ok=True)
    os.chmod(d, 0o777)
    name = "egressd-burst"
    # The C clients and origin when they build (BENCH_BURST_PY=1: the
    # Python clients and the bed's other.test, as before).
    exe = None if E.get("BENCH_BURST_PY") == "1" else build_burst_worker()
    addr, extra = OTHER4, []
    if exe:
        lo, _, hi = ECHO_PORTS.partition("-")
        start("burst-echo", in_net([exe, "serve", ECHO_VIP, lo, hi]))
        if wait_listen("burst-echo", NS_NET, ECHO_VIP, int(hi)):
            addr, extra = ECHO_VIP, ["--worker-exe", exe]
        else:
            log("burst_worker serve did not listen: %s" %
                " | ".join(last_lines("burst-echo", 3)))
            stop("burst-echo")
    p = start(name, egressd_argv(
        ["--allow", addr, "--max-conns", "8000"],
        ["/usr/bin/python3", BIN + "/burst.py", "--addr", addr,
         "--ports", ECHO_PORTS, "--conns", str(BURST_CONNS),
         "--procs", str(BURST_PROCS), "--seconds", str(BURST_SECONDS),
         "--status", d + "/status.json", "--release", d + "/release"] +
        extra))
    # Where the burst's time goes: egressd's threads, the origin,
    # the clients (burst.py reports their CPU).
    if "burst-echo" in procs:
        srv = [procs["burst-echo"].pid]
    else:
        srv = [int(c.split("/")[2]) for c in glob.glob("/proc/[0-9]*/cmdline")
               if b"other.test" in open_bytes(c) and
               b"server.py" in open_bytes(c)]
    c0 = (cpu_ns([p.pid]), cpu_ns(srv))
    st = wait_json(d + "/status.json", BURST_SECONDS + 90, p)
    c1 = (cpu_ns([p.pid]), cpu_ns(srv))
    res = {"target_conns": BURST_CONNS, "procs": BURST_PROCS,
           "target_seconds": BURST_SECONDS,
           "fixtures": "C clients and origin (burst_worker.c)" if extra else
           "Python clients, the bed's other.test",
           "egressd_cpu_s": round((c1[0] - c0[0]) / 1e9, 3),
           "origin_cpu_s": round((c1[1] - c0[1]) / 1e9, 3)}
    if st:
        res["client_cpu_s"] = st.get("client_cpu_s")
        res.update({k: st[k] for k in ("ok", "mismatch", "errors",
                                       "elapsed_s", "late_ms_max",
                                       "mismatch_examples",
                                       "reported_procs")})
        res["map_entries_at_end"] = bpf_map_entries(p.pid, "egr_conns")
        time.sleep(6)       # the 5 s sweep of hand-offs never accepted
        res["map_entries_after_6s"] = bpf_map_entries(p.pid, "egr_conns")
        res["egressd_hwm_kib"] = status_kib(p.pid, "VmHWM")
    open(d + "/release", "w").close()
    try:
        p.wait(60)
    except subprocess.TimeoutExpired:
        pass
    stop(name)
    stop("burst-echo")
    return res


# ------------------------------------------------------------ report
def med(xs):
    xs = [x for x in xs if x is not None]
    return round(statistics.median(xs), 3) if xs else None


def pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return None
    k = min(len(xs) - 1, max(0, int(round(q / 100 * len(xs) + 0.5)) - 1))
    return xs[k]


def summarize(r):
    s = r.s
    fetch_conn = [x for f in s["fetch"] for x in f["appconnect_ms"]]
    fetch_total = [x for f in s["fetch"] for x in f["total_ms"]]
    return {
        "bulk_mib_s": med([b["mib_s"] for b in s["bulk"]]),
        "cpu_ms_per_100mib": med([b["cpu_ms_per_100mib"] for b in s["bulk"]]),
        "machine_ms_per_100mib": med([b.get("machine_ms_per_100mib")
                                      for b in s["bulk"]]),
        "ka_rps": med([w["rps"] for w in s["wrk_keepalive"] if w["ok"]]),
        "ka_cpu_us_per_req": med([w["cpu_us_per_req"]
                                  for w in s["wrk_keepalive"]]),
        "ka_errors": sum(w["errors"] for w in s["wrk_keepalive"]),
        "nc_rps": med([w["rps"] for w in s["wrk_close"] if w["ok"]]),
        "nc_cpu_us_per_conn": med([w["cpu_us_per_req"]
                                   for w in s["wrk_close"]]),
        "nc_errors": sum(w["errors"] for w in s["wrk_close"]),
        "fetch_ok": sum(f["ok"] for f in s["fetch"]),
        "fetch_n": sum(f["n"] for f in s["fetch"]),
        "hs_p50_ms": pct(fetch_conn, 50), "hs_p99_ms": pct(fetch_conn, 99),
        "total_p50_ms": pct(fetch_total, 50),
        "total_p99_ms": pct(fetch_total, 99),
        "fetch_cpu_us_per_conn": med([f["cpu_us_per_conn"]
                                      for f in s["fetch"]]),
        "rss_peak_mib": round(r.rss_kib / 1024, 1) if r.rss_kib else None,
    }


def fmt(v, nd=1):
    if v is None:
        return "–"
    if isinstance(v, float):
        return ("%%.%df" % nd) % v
    return str(v)


def ratio(a, b):
    return round(a / b, 2) if a is not None and b else None


def md_table(head, rows):
    out = ["| " + " | ".join(head) + " |",
           "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def targets(S, kern, scale):
    """The issue's targets, checked against this run."""
    t = []
    d, e = S.get("direct"), S.get("egressd")

    def add(name, ok, detail):
        t.append({"target": name, "met": ok, "detail": detail})

    def r_(row, k):
        x = S.get(row)
        return ratio(x[k], d[k]) if x and d else None

    # Compared unrounded: a threshold is not met by rounding up to it, and
    # "above a peer" is decided by the measurements, not by two ratios
    # that print the same. (The details show the rounded ratios.)
    def raw(row, k):
        x = S.get(row)
        return x[k] / d[k] if x and d and x.get(k) is not None and d.get(k) else None

    if e:
        ka, nc, bk = raw("egressd", "ka_rps"), raw("egressd", "nc_rps"), \
            raw("egressd", "bulk_mib_s")
        peers = [p for p in ("haproxy-sni", "nginx-sni") if p in S]
        add("passthrough keep-alive >= 0.85x direct and above HAProxy/nginx",
            ka is not None and ka >= 0.85 and all(
                (raw(p, "ka_rps") or 0) < ka for p in peers),
            "egressd %s; %s" % (r_("egressd", "ka_rps"), ", ".join(
                "%s %s" % (p, r_(p, "ka_rps")) for p in peers)))
        add("passthrough new-connection >= 0.90x direct and above HAProxy/nginx",
            nc is not None and nc >= 0.90 and all(
                (raw(p, "nc_rps") or 0) < nc for p in peers),
            "egressd %s; %s" % (r_("egressd", "nc_rps"), ", ".join(
                "%s %s" % (p, r_(p, "nc_rps")) for p in peers)))
        add("passthrough bulk >= 0.98x direct", bk is not None and bk >= 0.98,
            "egressd %s" % r_("egressd", "bulk_mib_s"))
        n = S.get("nginx-sni")
        if n:
            a, b = e["cpu_ms_per_100mib"], n["cpu_ms_per_100mib"]
            dm = S.get("direct", {}).get("machine_ms_per_100mib")
            ma, mb = e.get("machine_ms_per_100mib"), n.get("machine_ms_per_100mib")
            xa = round(ma - dm, 1) if None not in (ma, dm) else None
            xb = round(mb - dm, 1) if None not in (mb, dm) else None
            # The reading: the proxy's own CPU. The whole
            # machine's, over direct, is shown beside it.
            add("CPU per 100 MiB <= half of nginx's",
                None not in (a, b) and a <= b / 2,
                "own threads: egressd %s ms, nginx %s ms (whole machine "
                "over direct: egressd %s ms, nginx %s ms)" % (a, b, xa, xb))
            a, b = e["nc_cpu_us_per_conn"], n["nc_cpu_us_per_conn"]
            a2, b2 = e["fetch_cpu_us_per_conn"], n["fetch_cpu_us_per_conn"]
            add("CPU per new connection <= nginx's",
                None not in (a, b, a2, b2) and a <= b and a2 <= b2,
                "wrk new-conn: egressd %s us, nginx %s us; full handshakes: "
                "egressd %s us, nginx %s us" % (a, b, a2, b2))
    i = S.get("egressd-intercept")
    if i:
        peers = [p for p in ("haproxy-term", "squid-bump", "mitmproxy")
                 if p in S]
        for k, lim, what in (("bulk_mib_s", 0.6, "bulk"),
                             ("ka_rps", 0.6, "keep-alive"),
                             ("nc_rps", 0.4, "new-connection")):
            v = raw("egressd-intercept", k)
            add("interception %s >= %.1fx direct and above %s" %
                (what, lim, "/".join(peers)),
                v is not None and v >= lim and all(
                    (raw(p, k) or 0) < v for p in peers),
                "egressd %s; %s" % (r_("egressd-intercept", k), ", ".join(
                    "%s %s" % (p, r_(p, k)) for p in peers)))
    else:
        add("interception targets", None,
            "n/a (egressd without --intercept)")
    c = kern.get("egressd")
    sc = kern.get("egressd (sock_create)") or {}
    add("connect4 average run time < 1 us",
        c is not None and c["avg_ns"] is not None and c["avg_ns"] < 1000,
        "%s ns over %s runs (sock_create %s ns; all programs %s ns per "
        "connect)" % (
            c["avg_ns"], c["run_cnt"], sc.get("avg_ns"),
            c.get("ns_per_connect")) if c else "no stats")
    idle = scale.get("idle")
    if idle:
        ok = idle.get("held") == idle["target"] and \
            (idle.get("egressd_hwm_kib") or 1 << 30) < 100 * 1024 and \
            not idle.get("errors_open") and \
            not idle.get("errors_second_request")
        add("%d idle connections, RSS < 100 MiB, no errors" % idle["target"],
            ok, "held %s/%s, egressd RSS %s KiB (peak %s KiB), errors %s / %s"
            % (idle.get("held"), idle["target"], idle.get("egressd_rss_kib"),
               idle.get("egressd_hwm_kib"), idle.get("errors_open"),
               idle.get("errors_second_request")))
    b = scale.get("burst")
    if b:
        ok = b.get("ok") == b["target_conns"] and b.get("mismatch") == 0 and \
            b.get("map_entries_after_6s") == 0 and \
            (b.get("elapsed_s") or 1e9) <= b["target_seconds"] * 1.1
        add("burst %d conns / %gs / %d procs: 0 mismatches, 0 leaked entries"
            % (b["target_conns"], b["target_seconds"], b["procs"]), ok,
            "ok %s, mismatches %s, errors %s, took %s s, egr_conns entries "
            "%s at end, %s after 6 s" % (
                b.get("ok"), b.get("mismatch"), b.get("errors"),
                b.get("elapsed_s"), b.get("map_entries_at_end"),
                b.get("map_entries_after_6s")))
    return t


def versions():
    def first(argv, pat=None):
        try:
            o = subprocess.run(argv, capture_output=True, text=True,
                               timeout=20)
            s = (o.stdout + o.stderr).strip().splitlines()
            s = s[0] if s else ""
        except (OSError, subprocess.TimeoutExpired):
            return None
        m = re.search(pat, s) if pat else None
        return m.group(1) if m else s
    return {"haproxy": first(["haproxy", "-v"], r"version (\S+)"),
            "nginx": first(["nginx", "-v"], r"nginx/(\S+)"),
            "squid": first(["squid", "-v"], r"Version (\S+)"),
            "mitmproxy": first(["mitmdump", "--version"], r"Mitmproxy: (\S+)"),
            "curl": first(["curl", "-V"], r"curl (\S+)"),
            "openssl": first(["openssl", "version"], r"OpenSSL (\S+)"),
            "wrk": first(["dpkg-query", "-W", "-f", "${Version}", "wrk"])}


def report(started, kern, scale):
    S = {r.name: summarize(r) for r in ROWS if not r.na}
    d = S.get("direct", {})
    cpu = open("/proc/cpuinfo").read()
    m = re.search(r"model name\s*:\s*(.*)", cpu)
    machine = {"cpus": os.cpu_count(), "cpu": m.group(1) if m else "?",
               "kernel": platform.release(),
               "os": sh(["sh", "-c", ". /etc/os-release; echo $PRETTY_NAME"]
                        ).stdout.strip()}
    params = {"quick": QUICK, "rounds": ROUNDS, "wrk_seconds": WRK_SECONDS,
              "wrk_threads": WRK_THREADS, "wrk_conns": WRK_CONNS,
              "fetches_per_round": FETCHES, "bulk_mib": BULK_MIB,
              "bulk_reps_per_round": BULK_REPS,
              "proxy_workers": WORKERS}
    tg = targets(S, kern, scale)
    res = {"date": started, "machine": machine, "versions": versions(),
           "params": params,
           "rows": {r.name: {"group": r.group, "desc": r.desc,
                             "threads": r.threads, "na": r.na,
                             "summary": S.get(r.name), "samples": r.s}
                    for r in ROWS},
           "kernel_connect4": kern, "scale": scale, "targets": tg}
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "results.json"), "w") as f:
        json.dump(res, f, indent=1)

    def rowcells(r, cells):
        if r.na:
            return [r.name, r.na] + [""] * (len(cells) - 1)
        return [r.name] + cells

    L = []
    L.append("# make bench results %s" % started)
    L.append("")
    L.append("machine: %s, %d cores (%s), kernel %s" % (
        machine["os"], machine["cpus"], machine["cpu"], machine["kernel"]))
    v = res["versions"]
    L.append("versions: " + ", ".join("%s %s" % kv for kv in v.items() if kv[1]))
    L.append("params: %d round(s), interleaved; wrk -t%d -c%d -d%ds on /1k; "
             "%d sequential full-handshake fetches of /1k per round; "
             "curl %d MiB bulk %d times per round; every proxy with %d "
             "worker threads where it has the knob%s" % (
                 ROUNDS, WRK_THREADS, WRK_CONNS, WRK_SECONDS, FETCHES,
                 BULK_MIB, BULK_REPS, WORKERS,
                                 " (BENCH_QUICK=1 smoke run)" if QUICK else ""))
    L.append("")
    L.append("## Throughput (medians; × = ratio to direct in this run)")
    L.append("")
    rows = []
    for r in ROWS:
        x = S.get(r.name, {})
        rows.append(rowcells(r, [
            fmt(x.get("ka_rps"), 0) + (" (%d err)" % x["ka_errors"]
                                       if x.get("ka_errors") else ""),
            fmt(ratio(x.get("ka_rps"), d.get("ka_rps")), 2),
            fmt(x.get("nc_rps"), 0) + (" (%d err)" % x["nc_errors"]
                                       if x.get("nc_errors") else ""),
            fmt(ratio(x.get("nc_rps"), d.get("nc_rps")), 2),
            fmt(x.get("bulk_mib_s")),
            fmt(ratio(x.get("bulk_mib_s"), d.get("bulk_mib_s")), 2)]))
    L.append(md_table(["row", "keep-alive req/s", "×", "new-conn req/s", "×",
                       "%d MiB MiB/s" % BULK_MIB, "×"], rows))
    L.append("")
    L.append("## Latency: sequential 1 KiB fetches, each a new TCP connection "
             "and a full TLS handshake (curl --no-sessionid), pooled over rounds")
    L.append("")
    rows = []
    for r in ROWS:
        x = S.get(r.name, {})
        rows.append(rowcells(r, [
            fmt(x.get("hs_p50_ms"), 2), fmt(x.get("hs_p99_ms"), 2),
            fmt(x.get("total_p50_ms"), 2), fmt(x.get("total_p99_ms"), 2),
            "%s/%s" % (x.get("fetch_ok"), x.get("fetch_n"))]))
    L.append(md_table(["row", "connect+TLS p50 ms", "p99 ms", "total p50 ms",
                       "p99 ms", "ok"], rows))
    L.append("")
    L.append("## Proxy cost (CPU of the proxy's own processes, schedstat; "
             "peak RSS = VmHWM)")
    L.append("")
    rows = []
    for r in ROWS:
        x = S.get(r.name, {})
        mach = x.get("machine_ms_per_100mib")
        base = S.get("direct", {}).get("machine_ms_per_100mib")
        extra = fmt(round(mach - base, 1)) if None not in (mach, base) else ""
        if r.name == "direct" and not r.na:
            rows.append([r.name, "-", "(origin only)", "", "", "", fmt(mach),
                         "", ""])
            continue
        rows.append(rowcells(r, [
            r.threads, fmt(x.get("ka_cpu_us_per_req")),
            fmt(x.get("nc_cpu_us_per_conn")),
            fmt(x.get("fetch_cpu_us_per_conn")),
            fmt(x.get("cpu_ms_per_100mib")), fmt(mach), extra,
            fmt(x.get("rss_peak_mib"))]))
    L.append(md_table(["row", "threads", "µs/request (keep-alive)",
                       "µs/connection (wrk new-conn)",
                       "µs/connection (full handshake)", "ms/100 MiB",
                       "machine ms/100 MiB", "machine − direct",
                       "peak RSS MiB"], rows))
    L.append("")
    L.append("ms/100 MiB counts the proxy's own threads (a splice relay's "
             "kernel work runs in them). \"machine ms/100 MiB\" is every "
             "CPU's busy time during the transfer (/proc/stat: client, "
             "origin, proxy, kernel softirq/kworkers) and \"machine − "
             "direct\" what the row adds to the direct transfer; it also "
             "counts work charged to no process (egressd's opt-in sockmap "
             "relay, --kernel-relay-after) but moves by tens of ms between "
             "rounds.")
    L.append("")
    L.append("## Kernel: egressd's programs (BPF run-time statistics "
             "during the run; clients use IPv4; the row name alone is "
             "egr_connect4)")
    L.append("")
    for k, c in kern.items():
        L.append("- %s: %s runs, %s ns total, **%s ns average**%s" % (
            k, c["run_cnt"], c["run_time_ns"], c["avg_ns"],
            "; all its programs: **%s ns per connect**" %
            c["ns_per_connect"] if "ns_per_connect" in c else ""))
    if not kern:
        L.append("- no egr_connect4 of this run's egressd found")
    L.append("")
    L.append("## Scale")
    L.append("")
    i = scale.get("idle")
    if i:
        L.append("- idle: %s of %s keep-alive HTTP connections opened through "
                 "one egressd in %s s and %s still answered after the hold; "
                 "egressd RSS %s KiB (peak %s KiB), %s fds in the main "
                 "thread's table, per thread %s, %s threads; "
                 "client errors %s / %s; egressd error lines %s; "
                 "RLIMIT_NOFILE %s" % (
                     i.get("open"), i["target"], i.get("open_s"),
                     i.get("held"), i.get("egressd_rss_kib"),
                     i.get("egressd_hwm_kib"), i.get("egressd_fds"),
                     i.get("egressd_fds_by_thread"), i.get("egressd_threads"), i.get("errors_open"),
                     i.get("errors_second_request"),
                     i.get("egressd_error_lines"), i.get("nofile_limit")))
    b = scale.get("burst")
    if b:
        L.append("- burst: %s connections from %s processes paced over %g s "
                 "to a port-echo range: %s ok, %s origin "
                 "mismatches, errors %s, took %s s; egr_conns entries %s "
                 "right after, %s after 6 s; CPU s: egressd %s, origin %s, "
                 "clients %s (%s)" % (
                     b["target_conns"], b["procs"], b["target_seconds"],
                     b.get("ok"), b.get("mismatch"), b.get("errors"),
                     b.get("elapsed_s"), b.get("map_entries_at_end"),
                     b.get("map_entries_after_6s"), b.get("egressd_cpu_s"),
                     b.get("origin_cpu_s"), b.get("client_cpu_s"),
                     b.get("fixtures")))
    if not scale:
        L.append("- not run (BENCH_SCALE=0)")
    L.append("")
    L.append("## Targets (issue 6)")
    L.append("")
    for x in tg:
        mark = {True: "met", False: "NOT met", None: "n/a"}[x["met"]]
        L.append("- **%s**: %s — %s" % (mark, x["target"], x["detail"]))
    L.append("")
    L.append("## Rows")
    L.append("")
    for r in ROWS:
        L.append("- %s: %s" % (r.name, r.desc))
    text = "\n".join(L) + "\n"
    with open(os.path.join(OUT, "results.md"), "w") as f:
        f.write(text)
    print(text)


# ------------------------------------------------------------ main
def main():
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        # held until exit: statistics stay on even if another run on the
        # machine puts kernel.bpf_stats_enabled back to 0 meanwhile
        stats_fd = bpf_stats.enable()
    except OSError as e:
        stats_fd = None
        log("BPF_ENABLE_STATS: %s (relying on kernel.bpf_stats_enabled)" % e)
    os.makedirs(BIN, exist_ok=True)
    for f in ("runner.py", "idle_conns.py", "burst.py", "wrk_connect.lua"):
        shutil.copy(os.path.join(SRC, f), BIN)
        os.chmod(os.path.join(BIN, f), 0o755)
    os.chmod(BIN, 0o755)
    err = setup_bed_extras()
    start_origin()
    bring_up(err)
    live = [r for r in ROWS if not r.na]
    log("rows: %s" % " ".join(r.name for r in live))
    # warm-up, not counted: page cache, first handshakes, pools
    for r in live:
        if not KINDS or "bulk" in KINDS:
            m_bulk(r)
        else:
            m_fetch(r)
    kinds = [("bulk", m_bulk), ("wrk_keepalive", lambda r: m_wrk(r, False)),
             ("wrk_close", lambda r: m_wrk(r, True)), ("fetch", m_fetch)]
    kinds = [k for k in kinds if not KINDS or k[0] in KINDS]
    if PERF_DIR:
        os.makedirs(PERF_DIR, exist_ok=True)
    for rnd in range(ROUNDS):
        CUR["round"] = rnd + 1
        k = rnd % len(live)
        order = live[k:] + live[:k]
        for kind, fn in kinds:
            for _ in range(BULK_REPS if kind == "bulk" else 1):
                for r in order:
                    if procs.get(r.name) is not None and \
                            procs[r.name].poll() is not None:
                        continue
                    x = fn(r)
                    x["round"] = rnd + 1
                    r.s[kind].append(x)
                    if kind == "wrk_close":
                        time.sleep(1)     # let TIME_WAIT drain between rows
        log("round %d/%d done (order: %s)" % (
            rnd + 1, ROUNDS, " ".join(r.name for r in order)))
    for r in live:
        if r.pid and procs.get(r.name) and procs[r.name].poll() is None:
            r.rss_kib = sum(status_kib(p, "VmHWM") for p in r.pids())
        elif r.pid:
            r.na = "the proxy died during the run (see logs/bench-%s.log)" \
                % r.name
    kern = kernel_stats()
    for r in live:
        if r.runner:
            open(os.path.join(r.runner, "quit"), "w").close()
    time.sleep(0.3)
    for r in live:
        if r.name != "origin":
            stop(r.name)
    scale = {}
    if not SKIP_SCALE and SCALE_ONLY != "burst":
        log("scale: %d idle connections through one egressd" % IDLE_CONNS)
        scale["idle"] = scale_idle()
    if not SKIP_SCALE and SCALE_ONLY != "idle":
        log("scale: burst of %d connections from %d processes in %g s" % (
            BURST_CONNS, BURST_PROCS, BURST_SECONDS))
        scale["burst"] = scale_burst()
    report(started, kern, scale)
    if stats_fd is not None:
        os.close(stats_fd)
    return 0


if __name__ == "__main__":
    def bye(sig, frame):
        stop_all()
        sys.exit(128 + sig)
    signal.signal(signal.SIGTERM, bye)
    signal.signal(signal.SIGINT, bye)
    try:
        rc = main()
    finally:
        stop_all()
    sys.exit(rc)
