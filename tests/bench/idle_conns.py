#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
"""make bench, scale: hold COUNT idle keep-alive connections through egressd.

Runs inside the enforced cgroup. Each connection sends one HTTP/1.1 GET
(egressd allows it by Host and relays it), reads the whole response and
then stays open and idle. Once all are up (or DEADLINE passed) it writes
STATUS = {"phase": "holding", ...} and waits for the driver to create
RELEASE (it samples egressd meanwhile), then sends a second request on
every connection: a connection counts as held only if that one is answered
too. Prints one JSON object with the counts.
"""
import argparse
import errno
import json
import os
import resource
import selectors
import socket
import time


def put(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.rename(tmp, path)


def response_done(buf):
    """True once buf holds a whole response with a Content-Length body."""
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return False
    for line in buf[:end].split(b"\r\n")[1:]:
        k, _, v = line.partition(b":")
        if k.strip().lower() == b"content-length":
            return len(buf) >= end + 4 + int(v)
    return True


def run_pass(socks, req, addr, window, deadline, errors, connect):
    """One request/response on each socket (connecting first if connect)."""
    sel = selectors.DefaultSelector()
    todo = list(socks) if not connect else list(range(len(socks)))
    ok = []
    active = 0

    def fail(i, s, why):
        errors[why] = errors.get(why, 0) + 1
        try:
            sel.unregister(s)
        except (KeyError, ValueError):
            pass
        s.close()

    while (todo or active) and time.monotonic() < deadline:
        while todo and active < window:
            item = todo.pop()
            if connect:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                try:
                    e = s.connect_ex(addr)
                except OSError as ex:
                    e = ex.errno
                if e not in (0, errno.EINPROGRESS):
                    errors[errno.errorcode.get(e, str(e))] = errors.get(
                        errno.errorcode.get(e, str(e)), 0) + 1
                    s.close()
                    continue
                sel.register(s, selectors.EVENT_WRITE, [item, b""])
            else:
                s = item
                try:
                    s.send(req)
                except OSError as ex:
                    errors[type(ex).__name__] = errors.get(
                        type(ex).__name__, 0) + 1
                    s.close()
                    continue
                sel.register(s, selectors.EVENT_READ, [item, b""])
            active += 1
        for key, ev in sel.select(timeout=0.5):
            s, st = key.fileobj, key.data
            if ev & selectors.EVENT_WRITE:
                e = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if e:
                    fail(st[0], s, errno.errorcode.get(e, str(e)))
                    active -= 1
                    continue
                try:
                    s.send(req)
                except OSError as ex:
                    fail(st[0], s, type(ex).__name__)
                    active -= 1
                    continue
                sel.modify(s, selectors.EVENT_READ, st)
                continue
            try:
                chunk = s.recv(65536)
            except OSError as ex:
                fail(st[0], s, type(ex).__name__)
                active -= 1
                continue
            if not chunk:
                fail(st[0], s, "closed" if not st[1] else "closed mid-response")
                active -= 1
                continue
            st[1] += chunk
            if response_done(st[1]):
                if not st[1].startswith(b"HTTP/1.1 200"):
                    fail(st[0], s, "status " + st[1][:12].decode(
                        errors="replace"))
                else:
                    sel.unregister(s)
                    ok.append(s)
                active -= 1
    for key in list(sel.get_map().values()):
        errors["timeout"] = errors.get("timeout", 0) + 1
        key.fileobj.close()
    if not connect and todo:
        errors["not sent (deadline)"] = errors.get(
            "not sent (deadline)", 0) + len(todo)
    return ok


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", required=True)
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--window", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=120)
    ap.add_argument("--status", required=True)
    ap.add_argument("--release", required=True)
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    req = ("GET /1k HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (a.host, a.port)).encode()
    t0 = time.monotonic()
    deadline = t0 + a.seconds
    errors = {}
    up = run_pass([None] * a.count, req, (a.addr, a.port), a.window,
                  deadline, errors, connect=True)
    t_open = time.monotonic() - t0
    put(a.status, {"phase": "holding", "open": len(up), "errors": errors,
                   "open_s": round(t_open, 3), "nofile": hard})
    wait_end = time.monotonic() + 120
    while not os.path.exists(a.release) and time.monotonic() < wait_end:
        time.sleep(0.1)
    errors2 = {}
    held = run_pass(up, req, None, a.window, time.monotonic() + 60, errors2,
                    connect=False)
    for s in held:
        s.close()
    print(json.dumps({"count": a.count, "open": len(up), "held": len(held),
                      "open_s": round(t_open, 3), "errors_open": errors,
                      "errors_second_request": errors2, "nofile": hard}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
