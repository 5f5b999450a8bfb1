#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
"""What the pieces of egr_connect4 cost on this kernel.

Builds tests/bench/connect4_parts.bpf.c and attaches its connect4
programs, one at a time, to a cgroup this script creates (never to one
the machine had), in a network namespace of its own with only loopback;
a client in that cgroup and namespace makes CONNS sequential connects to
a listener of its own, and each program's run_time_ns / run_cnt (kernel
BPF statistics, held on with BPF_ENABLE_STATS) is printed:

  p0_empty           the cost of running a program at all
  p1_cgroup_lookup   bpf_get_current_cgroup_id + a hash lookup
  p2_fill_on_stack   the origin record filled on the stack (task, cookies)
  p3_sk_storage      the record in sk_storage, created at connect: what
                     egr_connect4 does for it (issue 2's design)
  p4_cookie_hash     the alternative: the record in a hash keyed by the
                     socket cookie, deleted at sock_release

A sequential client on an otherwise idle machine: the bench's figure for
egr_connect4 (under load, cold caches) is higher. Cleans up on every exit.

  sudo tests/bench/connect4_parts.py [CONNS] [ROUNDS]    (20000, 2)
"""
import json
import os
import subprocess
import sys
import tempfile

import bpf_stats

SRC = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(SRC, "..", ".."))
PROGS = ["p0_empty", "p1_cgroup_lookup", "p2_fill_on_stack",
         "p3_sk_storage", "p4_cookie_hash"]
CLIENT = r"""
import socket, sys, threading
ls = socket.socket()
ls.bind(("127.0.0.1", 0))
ls.listen(4096)
def serve():
    while True:
        c, _ = ls.accept()
        c.close()
threading.Thread(target=serve, daemon=True).start()
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.connect(ls.getsockname())
    s.close()
"""


def die(msg):
    print("connect4_parts: " + msg, file=sys.stderr)
    sys.exit(1)


def run(argv, **kw):
    return subprocess.run(argv, check=True, capture_output=True, text=True, **kw)


def cgroup2_mount():
    with open("/proc/mounts") as f:
        for line in f:
            dev, mnt, fs = line.split()[:3]
            if fs == "cgroup2":
                return mnt
    die("no cgroup v2 mount")


def prog_stats(pin):
    d = json.loads(run(["bpftool", "-j", "prog", "show", "pinned", pin]).stdout)
    return d.get("run_time_ns", 0), d.get("run_cnt", 0)


def main():
    conns = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    if os.geteuid():
        die("needs root (cgroup, netns, BPF)")
    if not 1 <= conns <= 25000 or not 1 <= rounds <= 10:
        die("CONNS 1..25000, ROUNDS 1..10")
    tmp = tempfile.mkdtemp(prefix="egr-c4parts.")
    obj = os.path.join(tmp, "parts.bpf.o")
    fs = os.path.join(tmp, "bpffs")
    cg = os.path.join(cgroup2_mount(), "egr-c4parts.%d" % os.getpid())
    ns = "egr-c4parts.%d" % os.getpid()
    arch = {"x86_64": "x86", "aarch64": "arm64"}.get(os.uname().machine,
                                                     os.uname().machine)
    run(["clang", "-g", "-O2", "-target", "bpf", "-D__TARGET_ARCH_" + arch,
         "-Wall", "-I" + os.path.join(REPO, "include"), "-I" + REPO,
         "-c", os.path.join(SRC, "connect4_parts.bpf.c"), "-o", obj])
    stats_fd = bpf_stats.enable()
    attached = []
    made = {"fs": False, "cg": False, "ns": False}
    try:
        os.mkdir(fs)
        run(["mount", "-t", "bpf", "bpf", fs])
        made["fs"] = True
        os.mkdir(cg)
        made["cg"] = True
        run(["ip", "netns", "add", ns])
        made["ns"] = True
        run(["ip", "-n", ns, "link", "set", "lo", "up"])
        run(["bpftool", "prog", "loadall", obj, fs + "/p"])
        rel = fs + "/p/parts_release"
        run(["bpftool", "cgroup", "attach", cg, "sock_release", "pinned",
             rel, "multi"])
        attached.append(("sock_release", rel))
        print("# %d sequential connects per program and round; kernel %s"
              % (conns, os.uname().release))
        print("# round program              runs   avg_ns")
        for rnd in range(1, rounds + 1):
            for name in PROGS:
                pin = fs + "/p/" + name
                run(["bpftool", "cgroup", "attach", cg, "connect4", "pinned",
                     pin, "multi"])
                attached.append(("connect4", pin))
                t0, n0 = prog_stats(pin)
                subprocess.run(
                    ["sh", "-c", 'echo $$ > "$1/cgroup.procs" && exec ip netns '
                     'exec "$2" python3 -c "$3" "$4"', "sh", cg, ns, CLIENT,
                     str(conns)], check=True, timeout=300)
                t1, n1 = prog_stats(pin)
                run(["bpftool", "cgroup", "detach", cg, "connect4", "pinned",
                     pin])
                attached.remove(("connect4", pin))
                n = n1 - n0
                print("%7d %-20s %6d %8.1f" % (rnd, name, n,
                                               (t1 - t0) / n if n else 0))
    finally:
        # every step, even when one before it fails: nothing left behind
        for kind, pin in attached:
            subprocess.run(["bpftool", "cgroup", "detach", cg, kind, "pinned",
                            pin], capture_output=True)
        if made["cg"]:
            try:
                os.rmdir(cg)
            except OSError as e:
                print("connect4_parts: cannot remove %s: %s" % (cg, e),
                      file=sys.stderr)
        if made["ns"]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        if made["fs"]:
            subprocess.run(["umount", fs], capture_output=True)
        os.close(stats_fd)
        subprocess.run(["rm", "-rf", tmp])
    return 0


if __name__ == "__main__":
    sys.exit(main())
