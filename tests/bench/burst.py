#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
"""make bench, scale: a burst of CONNS connections in SECONDS from PROCS processes.

Runs inside the enforced cgroup. Connection i (of all processes together)
starts at t0 + i * SECONDS / CONNS and goes to port LO + i mod (HI-LO+1)
of the bed's port-echo server, which answers the port it accepted on: an
answer other than the port the client connected to is an origin mismatch
(egressd handed the connection to the wrong destination). Each process
keeps at most WINDOW connections in flight. After the burst it writes
STATUS = {"phase": "done", ...} and waits for RELEASE, so the driver can
count egressd's map entries while the cgroup (and egressd) still exist.
Prints one JSON object with the totals.

With --worker-exe (burst_worker.c, built by bench.py), each process is
that C program doing the same per-connection work and the same check;
the Python workers below cost more CPU per connection than egressd.
"""
import argparse
import errno
import json
import os
import resource
import selectors
import socket
import subprocess
import time


def put(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.rename(tmp, path)


def worker(k, a, lo, nports, t0, wfd):
    mine = list(range(k, a.conns, a.procs))
    step = a.seconds / a.conns
    sel = selectors.DefaultSelector()
    res = {"ok": 0, "mismatch": 0, "errors": {}, "late_ms_max": 0.0,
           "mismatch_examples": []}
    nxt = 0
    active = 0
    deadline = t0 + a.seconds + a.timeout

    def err(why):
        res["errors"][why] = res["errors"].get(why, 0) + 1

    while (nxt < len(mine) or active) and time.monotonic() < deadline:
        now = time.monotonic()
        while nxt < len(mine) and active < a.window and \
                t0 + mine[nxt] * step <= now:
            i = mine[nxt]
            nxt += 1
            late = (now - (t0 + i * step)) * 1000
            res["late_ms_max"] = max(res["late_ms_max"], round(late, 1))
            port = lo + i % nports
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            e = s.connect_ex((a.addr, port))
            if e not in (0, errno.EINPROGRESS):
                err(errno.errorcode.get(e, str(e)))
                s.close()
                continue
            sel.register(s, selectors.EVENT_WRITE, [port, b"", time.monotonic()])
            active += 1
        wait = 0.05
        if nxt < len(mine) and active < a.window:
            wait = max(0.0, min(wait, t0 + mine[nxt] * step - time.monotonic()))
        for key, ev in sel.select(timeout=wait):
            s, st = key.fileobj, key.data
            done = False
            if ev & selectors.EVENT_WRITE:
                e = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if e:
                    err(errno.errorcode.get(e, str(e)))
                    done = True
                else:
                    try:
                        s.send(b"port?\n")
                        sel.modify(s, selectors.EVENT_READ, st)
                    except OSError as ex:
                        err(type(ex).__name__)
                        done = True
            else:
                try:
                    chunk = s.recv(64)
                except OSError as ex:
                    err(type(ex).__name__)
                    chunk = None
                    done = True
                if chunk:
                    st[1] += chunk
                elif chunk is not None:
                    txt = st[1].decode(errors="replace").strip()
                    if txt == str(st[0]):
                        res["ok"] += 1
                    elif txt.isdigit():
                        res["mismatch"] += 1
                        if len(res["mismatch_examples"]) < 5:
                            res["mismatch_examples"].append([st[0], txt])
                    else:
                        err("no answer" if not txt else "bad answer")
                    done = True
            if done:
                sel.unregister(s)
                s.close()
                active -= 1
    for key in list(sel.get_map().values()):
        err("timeout")
        key.fileobj.close()
    if nxt < len(mine):
        err("not started (deadline)")
        res["errors"]["not started (deadline)"] += len(mine) - nxt - 1
    res["end"] = time.monotonic()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    res["cpu_s"] = ru.ru_utime + ru.ru_stime
    os.write(wfd, (json.dumps(res) + "\n").encode())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True)
    ap.add_argument("--ports", required=True, help="LO-HI")
    ap.add_argument("--conns", type=int, default=20000)
    ap.add_argument("--procs", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--window", type=int, default=32)
    ap.add_argument("--timeout", type=float, default=20)
    ap.add_argument("--status", required=True)
    ap.add_argument("--release", required=True)
    ap.add_argument("--worker-exe", help="burst_worker (C) for the processes")
    a = ap.parse_args()
    lo, _, hi = a.ports.partition("-")
    lo, nports = int(lo), int(hi) - int(lo) + 1
    t0 = time.monotonic() + 0.5
    if a.worker_exe:
        # time.monotonic() is CLOCK_MONOTONIC: t0 means the same there
        kids = [subprocess.Popen(
            [a.worker_exe, "client", str(k), str(a.procs), str(a.conns),
             repr(a.seconds), str(a.window), repr(a.timeout), "%.6f" % t0,
             a.addr, str(lo), str(lo + nports - 1)], stdout=subprocess.PIPE)
            for k in range(a.procs)]
        data = b"".join(p.communicate()[0] for p in kids)
    else:
        r, w = os.pipe()
        kids = []
        for k in range(a.procs):
            pid = os.fork()
            if pid == 0:
                os.close(r)
                try:
                    worker(k, a, lo, nports, t0, w)
                finally:
                    os._exit(0)
            kids.append(pid)
        os.close(w)
        data = b""
        while True:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            data += chunk
        for pid in kids:
            os.waitpid(pid, 0)
    parts = [json.loads(l) for l in data.decode().splitlines() if l.strip()]
    tot = {"conns": a.conns, "procs": a.procs, "target_seconds": a.seconds,
           "client": "C" if a.worker_exe else "python",
           "reported_procs": len(parts),
           "ok": sum(p["ok"] for p in parts),
           "mismatch": sum(p["mismatch"] for p in parts),
           "errors": {}, "mismatch_examples": [],
           "late_ms_max": max([p["late_ms_max"] for p in parts] or [0])}
    for p in parts:
        for k, v in p["errors"].items():
            tot["errors"][k] = tot["errors"].get(k, 0) + v
        tot["mismatch_examples"] += p["mismatch_examples"][:2]
    tot["client_cpu_s"] = round(sum(p.get("cpu_s", 0) for p in parts), 3)
    tot["elapsed_s"] = round(max([p["end"] for p in parts] or [t0]) - t0, 3)
    put(a.status, dict(tot, phase="done"))
    wait_end = time.monotonic() + 120
    while not os.path.exists(a.release) and time.monotonic() < wait_end:
        time.sleep(0.1)
    print(json.dumps(tot))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
