#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
"""Agent-side clients and hand-made attackers for the e2e cases.

Runs inside the enforced cgroup as an unprivileged user. Every mode prints
one JSON object (or one per connection for "echo") on stdout and exits 0
when the operation worked, 1 when it failed; the case decides which of the
two it expects. Errors are reported with their errno so a case can tell an
in-kernel EPERM from a proxy reset or a TLS alert.

  http URL                          urllib (honours SSL_CERT_FILE)
  raw ADDR PORT [options]           one TCP connection, optionally TLS
  udp ADDR PORT [--connect]         one datagram
  echo ADDR LO-HI PROCS             parallel connections to a port-echo range
  loop ADDR PORT OUT PIDFILE        connect every 0.3 s, log each result
"""
import argparse
import errno
import json
import os
import selectors
import socket
import ssl
import sys
import time
import urllib.error
import urllib.request


def out(obj):
    os.write(1, (json.dumps(obj, sort_keys=True) + "\n").encode())


def err_fields(e):
    if isinstance(e, ssl.SSLError):
        # Its errno is an SSL_ERROR_* code, not an errno: 1 is not EPERM.
        return {"errno": None, "errname": "SSL_" + str(e.reason),
                "error": "%s: %s" % (type(e).__name__, e)}
    return {"errno": getattr(e, "errno", None),
            "errname": errno.errorcode.get(getattr(e, "errno", None) or 0),
            "error": "%s: %s" % (type(e).__name__, e)}


def family_of(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def cmd_http(a):
    t0 = time.monotonic()
    res = {"url": a.url}
    # The agent's environment is clean; no proxy is ever configured here.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(a.url, timeout=a.timeout) as r:
            res.update(ok=True, status=r.status, body=r.read().decode())
    except urllib.error.HTTPError as e:
        res.update(ok=False, status=e.code, error="HTTPError %d" % e.code)
    except urllib.error.URLError as e:
        res.update(ok=False, **err_fields(e.reason if isinstance(
            e.reason, BaseException) else e))
    except Exception as e:  # noqa: BLE001
        res.update(ok=False, **err_fields(e))
    res["elapsed"] = round(time.monotonic() - t0, 3)
    out(res)
    return 0 if res["ok"] else 1


def cmd_raw(a):
    t0 = time.monotonic()
    res = {"addr": a.addr, "port": a.port}
    s = None
    try:
        s = socket.socket(family_of(a.addr), socket.SOCK_STREAM)
        s.settimeout(a.timeout)
        req = b""
        if a.host is not None:
            req = ("GET / HTTP/1.1\r\nHost: %s\r\nUser-Agent: egr-e2e\r\n"
                   "Connection: close\r\n\r\n" % a.host).encode()
        elif a.send is not None:
            req = a.send.encode()
        want_reply = bool(req) or a.read
        if a.fastopen:
            # The connect happens inside sendto(): the data rides in the SYN
            # when a cookie is cached. The cgroup connect hook must see it.
            # Blocking, or the kernel returns EINPROGRESS with no cookie.
            s.settimeout(None)
            s.sendto(req or b"x", socket.MSG_FASTOPEN, (a.addr, a.port))
            s.settimeout(a.timeout)
            req = b""
        else:
            s.connect((a.addr, a.port))
        res["peer"] = list(s.getpeername()[:2])
        res["sock"] = list(s.getsockname()[:2])
        if a.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE  # an attacker does not care
            s = ctx.wrap_socket(s, server_hostname=a.sni or None)
            res["tls_version"] = s.version()
        if req:
            s.sendall(req)
        data = b""
        if want_reply:
            while len(data) < 65536:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        body = data.decode("latin-1")
        res["body"] = body.split("\r\n\r\n", 1)[-1]
        res["head"] = body.split("\r\n", 1)[0]
        res["ok"] = (not want_reply) or bool(data)
        if not res["ok"]:
            res["error"] = "empty reply"
        elif res["head"].startswith("HTTP/") and \
                res["head"].split(" ")[1:2] != ["200"]:
            # A proxy's 403 is a refusal, not a success.
            res.update(ok=False, error=res["head"])
    except Exception as e:  # noqa: BLE001
        res.update(ok=False, **err_fields(e))
    finally:
        if s is not None:
            s.close()
    res["elapsed"] = round(time.monotonic() - t0, 3)
    out(res)
    return 0 if res["ok"] else 1


def cmd_udp(a):
    res = {"addr": a.addr, "port": a.port, "connect": a.connect}
    try:
        s = socket.socket(family_of(a.addr), socket.SOCK_DGRAM)
        if a.connect:
            s.connect((a.addr, a.port))
            s.send(b"udp-probe")
        else:
            s.sendto(b"udp-probe", (a.addr, a.port))
        res["ok"] = True
    except Exception as e:  # noqa: BLE001
        res.update(ok=False, **err_fields(e))
    out(res)
    return 0 if res["ok"] else 1


def echo_worker(addr, ports, deadline):
    """Open every connection at once, then collect the answers."""
    sel = selectors.DefaultSelector()
    results = {}
    for p in ports:
        s = socket.socket(family_of(addr), socket.SOCK_STREAM)
        s.setblocking(False)
        e = s.connect_ex((addr, p))
        if e not in (0, errno.EINPROGRESS):
            results[p] = {"err": errno.errorcode.get(e, str(e))}
            s.close()
            continue
        sel.register(s, selectors.EVENT_WRITE, [p, b"", False])
    while sel.get_map() and time.monotonic() < deadline:
        for key, ev in sel.select(timeout=1):
            s, st = key.fileobj, key.data
            p = st[0]
            if ev & selectors.EVENT_WRITE and not st[2]:
                e = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if e:
                    results[p] = {"err": errno.errorcode.get(e, str(e))}
                    sel.unregister(s)
                    s.close()
                    continue
                try:
                    s.send(b"port?\n")
                except OSError as ex:
                    results[p] = {"err": str(ex)}
                    sel.unregister(s)
                    s.close()
                    continue
                st[2] = True
                sel.modify(s, selectors.EVENT_READ, st)
                continue
            try:
                chunk = s.recv(64)
            except OSError as ex:
                results[p] = {"err": str(ex), "partial": st[1].decode()}
                sel.unregister(s)
                s.close()
                continue
            if chunk:
                st[1] += chunk
                continue
            txt = st[1].decode().strip()
            results[p] = {"got": int(txt) if txt.isdigit() else txt}
            sel.unregister(s)
            s.close()
    for key in list(sel.get_map().values()):
        results[key.data[0]] = {"err": "timeout"}
        key.fileobj.close()
    pid = os.getpid()
    for p in ports:
        r = results.get(p, {"err": "lost"})
        r.update(pid=pid, port=p)
        out(r)
    return all(results.get(p, {}).get("got") == p for p in ports)


def cmd_echo(a):
    lo, _, hi = a.range.partition("-")
    ports = list(range(int(lo), int(hi) + 1))
    n = a.procs
    chunks = [ports[i::n] for i in range(n)]
    deadline = time.monotonic() + a.timeout
    kids = []
    for chunk in chunks:
        pid = os.fork()
        if pid == 0:
            try:
                ok = echo_worker(a.addr, chunk, deadline)
            except Exception as e:  # noqa: BLE001
                out({"pid": os.getpid(), "fatal": repr(e)})
                ok = False
            os._exit(0 if ok else 1)
        kids.append(pid)
    rc = 0
    for pid in kids:
        _, st = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(st) != 0:
            rc = 1
    return rc


def cmd_loop(a):
    # A child keeps probing so that it survives even if the runner kills its
    # direct child when it dies (PR_SET_PDEATHSIG).
    pid = os.fork()
    if pid:
        os.waitpid(pid, 0)
        return 0
    os.setsid()
    with open(a.pidfile + ".tmp", "w") as f:
        f.write("%d\n" % os.getpid())
    os.rename(a.pidfile + ".tmp", a.pidfile)
    req = ("GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"
           % a.host).encode()
    end = time.monotonic() + a.timeout
    with open(a.out, "a", buffering=1) as f:
        while time.monotonic() < end:
            t = time.time()
            try:
                with socket.create_connection((a.addr, a.port), timeout=2) as s:
                    s.sendall(req)
                    data = s.recv(4096)
                r = "ok" if b"hello from" in data else "noreply"
            except OSError as e:
                r = "err " + errno.errorcode.get(e.errno or 0, str(e))
            f.write("%.3f %s\n" % (t, r))
            time.sleep(0.3)
    os._exit(0)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("http")
    p.add_argument("url")
    p.add_argument("--timeout", type=float, default=10)
    p.set_defaults(fn=cmd_http)
    p = sub.add_parser("raw")
    p.add_argument("addr")
    p.add_argument("port", type=int)
    p.add_argument("--host", help="send GET / with this Host")
    p.add_argument("--send", help="send these bytes instead")
    p.add_argument("--read", action="store_true", help="read even if silent")
    p.add_argument("--tls", action="store_true")
    p.add_argument("--sni", help="SNI to send (with --tls); none if absent")
    p.add_argument("--fastopen", action="store_true")
    p.add_argument("--timeout", type=float, default=10)
    p.set_defaults(fn=cmd_raw)
    p = sub.add_parser("udp")
    p.add_argument("addr")
    p.add_argument("port", type=int)
    p.add_argument("--connect", action="store_true")
    p.set_defaults(fn=cmd_udp)
    p = sub.add_parser("echo")
    p.add_argument("addr")
    p.add_argument("range")
    p.add_argument("procs", type=int)
    p.add_argument("--timeout", type=float, default=60)
    p.set_defaults(fn=cmd_echo)
    p = sub.add_parser("loop")
    p.add_argument("addr")
    p.add_argument("port", type=int)
    p.add_argument("out")
    p.add_argument("pidfile")
    p.add_argument("--host", default="allowed.test")
    p.add_argument("--timeout", type=float, default=60)
    p.set_defaults(fn=cmd_loop)
    a = ap.parse_args()
    return a.fn(a)


if __name__ == "__main__":
    sys.exit(main())
