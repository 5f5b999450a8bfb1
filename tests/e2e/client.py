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
  dns NAME [--server A] [--via V]   hand-made DNS query: V = connect, sendto,
                                    sendmsg, sendmmsg (ctypes) or tcp
  resolve NAME                      socket.getaddrinfo
  ssh ADDR PORT [--resolve NAME]    SSH-style exchange (client line, banner)
  socks                             which socket types can be created
  echo ADDR LO-HI PROCS             parallel connections to a port-echo range
  loop ADDR PORT OUT PIDFILE        connect every 0.3 s, log each result
"""
import argparse
import ctypes
import errno
import json
import os
import selectors
import socket
import random
import ssl
import struct
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
        want_reply = (bool(req) or a.read) and not a.no_read
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
        if a.wait_before:
            time.sleep(a.wait_before / 1000.0)  # silent, as if the server spoke first
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
                if a.send2 is not None and b"\r\n\r\n" in data:
                    break  # keep-alive: the first answer is here
        if a.send2 is not None:
            # a second request on the same connection once the first was
            # answered (the first answer read up to its end or a pause)
            time.sleep(a.send2_after / 1000.0)
            try:
                s.sendall(a.send2.encode())
            except OSError as e:
                res["error2"] = errno.errorcode.get(e.errno or 0, str(e))
            more = b""
            s.settimeout(3)
            try:
                while len(more) < 65536:
                    chunk = s.recv(4096)
                    if not chunk:
                        break
                    more += chunk
            except socket.timeout:
                pass
            except OSError as e:
                res["error2"] = errno.errorcode.get(e.errno or 0, str(e))
            res["body2"] = more.decode("latin-1")
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


QTYPES = {"A": 1, "NS": 2, "CNAME": 5, "NULL": 10, "TXT": 16, "AAAA": 28,
          "ANY": 255}
RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN",
          4: "NOTIMP", 5: "REFUSED"}


def dns_query(name, qtype, qid):
    q = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.rstrip(".").split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\0" + struct.pack("!HH", qtype, 1)


def dns_skip_name(msg, i):
    while True:
        n = msg[i]
        if n == 0:
            return i + 1
        if n & 0xC0 == 0xC0:
            return i + 2
        i += 1 + n


def dns_parse(msg):
    """id, rcode name and the answers (A/AAAA as text, others as type)."""
    qid, flags, qd, an = struct.unpack("!HHHH", msg[:8])
    i = 12
    for _ in range(qd):
        i = dns_skip_name(msg, i) + 4
    answers = []
    for _ in range(an):
        i = dns_skip_name(msg, i)
        rtype, _, _, rdlen = struct.unpack("!HHIH", msg[i:i + 10])
        rdata = msg[i + 10:i + 10 + rdlen]
        i += 10 + rdlen
        if rtype == 1 and rdlen == 4:
            answers.append(socket.inet_ntop(socket.AF_INET, rdata))
        elif rtype == 28 and rdlen == 16:
            answers.append(socket.inet_ntop(socket.AF_INET6, rdata))
        else:
            answers.append("type%d" % rtype)
    return {"id": qid, "qr": bool(flags & 0x8000),
            "rcode": RCODES.get(flags & 0xF, str(flags & 0xF)),
            "answers": answers}


def sockaddr_bytes(addr, port):
    if ":" in addr:
        return (struct.pack("=H", socket.AF_INET6) + struct.pack("!HI", port, 0)
                + socket.inet_pton(socket.AF_INET6, addr) + struct.pack("=I", 0))
    return (struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) +
            socket.inet_aton(addr) + b"\0" * 8)


class Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class Msghdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.POINTER(Iovec)),
                ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p),
                ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]


class Mmsghdr(ctypes.Structure):
    _fields_ = [("msg_hdr", Msghdr), ("msg_len", ctypes.c_uint)]


def sendmmsg_to(sock, payloads, addr, port):
    """One sendmmsg(2) call carrying every payload to addr:port, through
    libc (Python has no binding): the sendmsg hook runs once per message."""
    libc = ctypes.CDLL(None, use_errno=True)
    name = ctypes.create_string_buffer(sockaddr_bytes(addr, port))
    bufs = [ctypes.create_string_buffer(p, len(p)) for p in payloads]
    iovs = (Iovec * len(bufs))()
    msgs = (Mmsghdr * len(bufs))()
    for k, b in enumerate(bufs):
        iovs[k].iov_base = ctypes.cast(b, ctypes.c_void_p)
        iovs[k].iov_len = len(payloads[k])
        h = msgs[k].msg_hdr
        h.msg_name = ctypes.cast(name, ctypes.c_void_p)
        h.msg_namelen = len(name.raw)
        h.msg_iov = ctypes.pointer(iovs[k])
        h.msg_iovlen = 1
    n = libc.sendmmsg(sock.fileno(), msgs, len(bufs), 0)
    if n < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return n


def resolv_conf_server():
    try:
        with open("/etc/resolv.conf") as f:
            for line in f:
                w = line.split()
                if len(w) >= 2 and w[0] == "nameserver":
                    return w[1]
    except OSError:
        pass
    return "127.0.0.1"


def cmd_dns(a):
    server = a.server or resolv_conf_server()
    qtype = QTYPES.get(a.qtype.upper()) or int(a.qtype)
    res = {"name": a.name, "server": server, "port": a.port, "via": a.via,
           "qtype": a.qtype}
    rng = random.Random()
    ids = [rng.randrange(1, 65536) for _ in range(a.count)]
    queries = [dns_query(a.name, qtype, i) for i in ids]
    t0 = time.monotonic()
    s = None
    try:
        if a.via == "tcp":
            s = socket.socket(family_of(server), socket.SOCK_STREAM)
            s.settimeout(a.timeout)
            s.connect((server, a.port))
            res["peer"] = list(s.getpeername()[:2])
            replies = []
            for q in queries:
                s.sendall(struct.pack("!H", len(q)) + q)
                buf = b""
                while len(buf) < 2 or len(buf) < 2 + struct.unpack(
                        "!H", buf[:2])[0]:
                    chunk = s.recv(4096)
                    if not chunk:
                        raise ConnectionError("connection closed")
                    buf += chunk
                replies.append((buf[2:], res["peer"]))
        else:
            fam = family_of(server)
            if a.via == "connect-mapped":  # Java's dual-stack sockets
                fam, server = socket.AF_INET6, "::ffff:" + server
            s = socket.socket(fam, socket.SOCK_DGRAM)
            s.settimeout(a.timeout)
            if a.via in ("connect", "connect-mapped"):
                s.connect((server, a.port))
                res["peer"] = list(s.getpeername()[:2])
                for q in queries:
                    s.send(q)
            elif a.via == "connect-cmsg":  # a connected send with a TOS
                s.connect((server, a.port))
                res["peer"] = list(s.getpeername()[:2])
                tos = ((socket.IPPROTO_IP, socket.IP_TOS) if fam == socket.AF_INET
                       else (socket.IPPROTO_IPV6, socket.IPV6_TCLASS))
                for q in queries:
                    s.sendmsg([q], [(tos[0], tos[1], struct.pack("i", 0x10))])
            elif a.via == "sendto":
                for q in queries:
                    s.sendto(q, (server, a.port))
            elif a.via == "sendmsg":
                for q in queries:
                    s.sendmsg([q], [], 0, (server, a.port))
            else:
                res["sent"] = sendmmsg_to(s, queries, server, a.port)
            replies = []
            end = time.monotonic() + a.timeout
            while len(replies) < len(queries):
                s.settimeout(max(0.01, end - time.monotonic()))
                data, src = s.recvfrom(4096)
                replies.append((data, list(src[:2])))
        out_replies = []
        for data, src in replies:
            r = dns_parse(data)
            r["from"] = src
            out_replies.append(r)
        res["replies"] = out_replies
        first = out_replies[0]
        res.update(rcode=first["rcode"], answers=first["answers"],
                   source=first["from"])
        got = sorted(r["id"] for r in out_replies)
        res["ids_match"] = got == sorted(ids)
        res["ok"] = res["ids_match"] and all(r["qr"] for r in out_replies)
        if not res["ok"]:
            res["error"] = "reply ids %s for queries %s" % (got, sorted(ids))
    except Exception as e:  # noqa: BLE001
        res.update(ok=False, **err_fields(e))
    finally:
        if s is not None:
            s.close()
    res["elapsed"] = round(time.monotonic() - t0, 3)
    out(res)
    return 0 if res["ok"] else 1


def cmd_resolve(a):
    t0 = time.monotonic()
    res = {"name": a.name}
    try:
        infos = socket.getaddrinfo(a.name, a.port, proto=socket.IPPROTO_TCP)
        res.update(ok=True, addrs=sorted({i[4][0] for i in infos}))
    except socket.gaierror as e:
        names = {v: k for k, v in vars(socket).items() if k.startswith("EAI_")
                 and isinstance(v, int)}
        res.update(ok=False, gaierror=names.get(e.errno, str(e.errno)),
                   error=str(e))
    except Exception as e:  # noqa: BLE001
        res.update(ok=False, **err_fields(e))
    res["elapsed"] = round(time.monotonic() - t0, 3)
    out(res)
    return 0 if res["ok"] else 1


def cmd_ssh(a):
    """What ssh does: (optionally) resolve the name, connect to an address,
    send the version line, read the server's."""
    t0 = time.monotonic()
    res = {"addr": a.addr, "port": a.port}
    s = None
    try:
        if a.resolve:
            infos = socket.getaddrinfo(a.resolve, a.port, socket.AF_INET,
                                       socket.SOCK_STREAM)
            res["resolved"] = sorted({i[4][0] for i in infos})
        s = socket.socket(family_of(a.addr), socket.SOCK_STREAM)
        s.settimeout(a.timeout)
        s.connect((a.addr, a.port))
        s.sendall(b"SSH-2.0-client\r\n")
        data = b""
        while b"\n" not in data and len(data) < 4096:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        res["banner"] = data.decode("latin-1").strip()
        res["ok"] = data.startswith(b"SSH-")
        if not res["ok"]:
            res["error"] = "no banner"
    except Exception as e:  # noqa: BLE001
        res.update(ok=False, **err_fields(e))
    finally:
        if s is not None:
            s.close()
    res["elapsed"] = round(time.monotonic() - t0, 3)
    out(res)
    return 0 if res["ok"] else 1


SOCKS = {
    "ping": (socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP),
    "ping6": (socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_ICMPV6),
    "raw": (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
    "raw6": (socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6),
    "udplite": (socket.AF_INET, socket.SOCK_DGRAM, 136),
    "udplite6": (socket.AF_INET6, socket.SOCK_DGRAM, 136),
    "sctp": (socket.AF_INET, socket.SOCK_STREAM, 132),
    "sctp_seq": (socket.AF_INET, socket.SOCK_SEQPACKET, 132),
    "mptcp": (socket.AF_INET, socket.SOCK_STREAM, 262),
    "tcp": (socket.AF_INET, socket.SOCK_STREAM, 0),
    "udp": (socket.AF_INET, socket.SOCK_DGRAM, 0),
}


def cmd_socks(a):
    """Try to create each kind of socket: "ok" or the errno name."""
    res = {}
    for name in a.kinds or sorted(SOCKS):
        if name not in SOCKS:
            res[name] = "unknown kind"
            continue
        try:
            socket.socket(*SOCKS[name]).close()
            res[name] = "ok"
        except OSError as e:
            res[name] = errno.errorcode.get(e.errno, str(e.errno))
    out(res)
    return 0


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


def cmd_hashxfer(a):
    """Upload --up random bytes to a server.py --hash port after the line
    "--down", half-close, then check the server's sha256 of the upload and
    --down bytes of its pattern. Prints {"ok": bool, ...}."""
    import hashlib
    res = {"addr": a.addr, "port": a.port, "up": a.up, "down": a.down}
    try:
        s = socket.create_connection((a.addr, a.port), timeout=a.timeout)
        s.sendall(b"%d\n" % a.down)
        h, left = hashlib.sha256(), a.up
        data = os.urandom(1 << 16)
        while left:
            chunk = data[:min(left, len(data))]
            s.sendall(chunk)
            h.update(chunk)
            left -= len(chunk)
        s.shutdown(socket.SHUT_WR)
        f = s.makefile("rb")
        line = f.readline().decode().split()
        res["up_match"] = line == [h.hexdigest(), str(a.up)]
        # the server's pattern: 64 KiB from a sha256 chain, repeated
        parts, hh = [], b"egressd"
        while sum(map(len, parts)) < 1 << 16:
            hh = hashlib.sha256(hh).digest()
            parts.append(hh)
        block = b"".join(parts)[:1 << 16]
        got, bad = 0, 0
        while True:
            chunk = f.read(1 << 16)
            if not chunk:
                break
            off = got % len(block)
            exp = (block[off:] + block * (len(chunk) // len(block) + 2))[:len(chunk)]
            if chunk != exp:
                bad += 1
            got += len(chunk)
        res.update(got=got, bad_chunks=bad)
        res["ok"] = res["up_match"] and got == a.down and not bad
        s.close()
    except OSError as e:
        res.update(ok=False, **err_fields(e))
    out(res)
    return 0 if res["ok"] else 1


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


SRCROUTE_MARK = b"egressd-srcroute-probe"


def cmd_srcroute(a):
    """Try to send a marker past the redirect with IP source routing: the
    socket's destination is rewritten to the proxy, the option sends the
    packet to a.via (the first hop) instead. Each way reports ok (sent)
    or the error."""
    import ipaddress
    res = {"via": a.via, "ways": {}}
    v6 = ipaddress.ip_address(a.via).version == 6

    def lsrr(hop):
        return bytes([0x83, 7, 4]) + socket.inet_aton(hop) + b"\x01"

    def rthdr2(hop):
        # type 2 (one segment): struct ipv6_rt_hdr + reserved + address
        return bytes([0, 2, 2, 1]) + b"\0" * 4 + socket.inet_pton(socket.AF_INET6, hop)

    def srh4(hop):
        # type 4 (segment routing), one segment, the last: struct
        # ipv6_sr_hdr (nexthdr, hdrlen 2, type 4, segments_left 0,
        # last_entry 0, flags, tag) + segments[0]
        return bytes([0, 2, 4, 0, 0, 0, 0, 0]) + socket.inet_pton(socket.AF_INET6, hop)

    IPV6_RTHDR = 57
    ways = {}
    if not v6:
        def udp_sockopt():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, lsrr(a.via))
            s.connect((a.dst, 53))
            s.send(SRCROUTE_MARK)

        def udp_cmsg():
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.sendmsg([SRCROUTE_MARK], [(socket.IPPROTO_IP, socket.IP_RETOPTS,
                                         lsrr(a.via))], 0, (a.dst, 53))

        def tcp_sockopt():
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(2)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_OPTIONS, lsrr(a.via))
            s.setsockopt(socket.IPPROTO_TCP, 30, 1)  # TCP_FASTOPEN_NO_COOKIE
            try:
                s.sendto(SRCROUTE_MARK, socket.MSG_FASTOPEN, (a.dst, 443))
            except (socket.timeout, ConnectionError, OSError) as e:
                if getattr(e, "errno", None) == 1:
                    raise
        def udp_cmsg_rr():
            # record route: allowed unprivileged, routes nothing, but
            # shows that a packet with options never leaves
            rr = bytes([7, 7, 4, 0, 0, 0, 0, 1])
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.sendmsg([SRCROUTE_MARK], [(socket.IPPROTO_IP, socket.IP_RETOPTS, rr)],
                      0, (a.dst, 53))
        ways = {"udp-sockopt": udp_sockopt, "udp-cmsg": udp_cmsg,
                "tcp-sockopt": tcp_sockopt, "udp-cmsg-rr": udp_cmsg_rr}
    else:
        def udp6_sockopt():
            s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_RTHDR, rthdr2(a.via))
            s.connect((a.dst, 53))
            s.send(SRCROUTE_MARK)

        def udp6_cmsg():
            s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            s.sendmsg([SRCROUTE_MARK], [(socket.IPPROTO_IPV6, IPV6_RTHDR,
                                         rthdr2(a.via))], 0, (a.dst, 53))
        def udp6_srh():
            s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_RTHDR, srh4(a.via))
            s.connect((a.dst, 53))
            s.send(SRCROUTE_MARK)

        def tcp6_srh():
            s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            s.settimeout(2)
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_RTHDR, srh4(a.via))
            s.setsockopt(socket.IPPROTO_TCP, 30, 1)  # TCP_FASTOPEN_NO_COOKIE
            try:
                s.sendto(SRCROUTE_MARK, socket.MSG_FASTOPEN, (a.dst, 443))
            except (socket.timeout, ConnectionError, OSError) as e:
                if getattr(e, "errno", None) == 1:
                    raise
        ways = {"udp6-sockopt": udp6_sockopt, "udp6-cmsg": udp6_cmsg,
                "udp6-srh": udp6_srh, "tcp6-srh": tcp6_srh}
    for name, fn in ways.items():
        try:
            fn()
            res["ways"][name] = "sent"
        except Exception as e:  # noqa: BLE001
            res["ways"][name] = err_fields(e).get("errname") or str(e)
    out(res)
    return 0


def cmd_bindtodevice(a):
    """DNS-port datagrams with the marker from sockets bound to a.ifname
    (SO_BINDTODEVICE, unprivileged since Linux 5.7): the hooks send them to
    the proxy on loopback, which that device does not reach."""
    ways = {}

    def unconnected(s):
        s.sendto(SRCROUTE_MARK, (a.dst, 53))

    def connected(s):
        s.connect((a.dst, 53))
        s.send(SRCROUTE_MARK)

    for name, fn in (("udp-sendto", unconnected), ("udp-connect", connected)):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, a.ifname.encode())
            fn(s)
            ways[name] = "sent"
        except OSError as e:
            ways[name] = errno.errorcode.get(e.errno, str(e.errno))
        finally:
            s.close()
    out({"ways": ways})
    return 0


MCAST_MARK = b"egr-mcast!"  # inside the IPv6 group joined (14 free bytes)
MCAST_MARK4 = b"\xef\x65\x67\x72"  # the IPv4 group 239.101.103.114


def cmd_mcast(a):
    """Join multicast groups on an interface, each way the socket API has:
    the kernel then sends IGMP/MLD reports carrying the group address out
    of it (a channel no hook of the cgroup sees). Each way reports ok or
    the error."""
    ifindex = socket.if_nametoindex(a.ifname)
    group6 = b"\xff\x0e" + MCAST_MARK + b"\x00\x01\x00\x02"
    ways = {}

    def sa6(addr):
        return struct.pack("=HHI16sI", socket.AF_INET6, 0, 0, addr, 0).ljust(128, b"\0")

    def sa4(addr):
        return struct.pack("=HH4s", socket.AF_INET, 0, addr).ljust(128, b"\0")

    def try_(name, fam, level, opt, val):
        s = socket.socket(fam, socket.SOCK_DGRAM)
        try:
            s.setsockopt(level, opt, val)
            ways[name] = "ok"
            time.sleep(0.3)  # the report goes out now
        except OSError as e:
            ways[name] = errno.errorcode.get(e.errno or 0, str(e))
        finally:
            s.close()

    IPV6_JOIN_GROUP, MCAST_JOIN_GROUP, MCAST_JOIN_SOURCE_GROUP = 20, 42, 46
    try_("ipv6-join", socket.AF_INET6, socket.IPPROTO_IPV6, IPV6_JOIN_GROUP,
         group6 + struct.pack("=I", ifindex))
    try_("mcast-join6", socket.AF_INET6, socket.IPPROTO_IPV6, MCAST_JOIN_GROUP,
         struct.pack("=I4x", ifindex) + sa6(group6))
    try_("mcast-join-source6", socket.AF_INET6, socket.IPPROTO_IPV6, MCAST_JOIN_SOURCE_GROUP,
         struct.pack("=I4x", ifindex) + sa6(group6) +
         sa6(b"\x20\x01\x0d\xb8" + MCAST_MARK + b"\x00\x09"))
    try_("ipv4-join", socket.AF_INET, socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
         MCAST_MARK4 + b"\0\0\0\0" + struct.pack("=i", ifindex))
    try_("mcast-join4", socket.AF_INET, socket.IPPROTO_IP, MCAST_JOIN_GROUP,
         struct.pack("=I4x", ifindex) + sa4(MCAST_MARK4))
    out({"ifname": a.ifname, "ways": ways})
    return 0


def cmd_sniff(a):
    """Count frames on an interface that carry the source-route marker
    (or, with --mcast, the multicast probe's group addresses), for
    a.seconds (AF_PACKET: sees them whatever the IP layer does)."""
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    s.bind((a.ifname, 0))
    s.settimeout(0.2)
    n = 0
    end = time.monotonic() + a.seconds
    ready = open(a.ready, "w")
    ready.write("ready\n")
    ready.close()
    while time.monotonic() < end:
        try:
            frame = s.recv(65535)
        except socket.timeout:
            continue
        if a.mcast:
            n += MCAST_MARK in frame or MCAST_MARK4 in frame
        elif SRCROUTE_MARK in frame:
            n += 1
    out({"frames": n})
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawTextHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("http")
    p.add_argument("url")
    p.add_argument("--timeout", type=float, default=10)
    p.set_defaults(fn=cmd_http)
    p = sub.add_parser("hashxfer")
    p.add_argument("addr")
    p.add_argument("port", type=int)
    p.add_argument("--up", type=int, default=0, help="bytes to upload")
    p.add_argument("--down", type=int, default=0, help="bytes to download")
    p.add_argument("--timeout", type=float, default=20)
    p.set_defaults(fn=cmd_hashxfer)
    p = sub.add_parser("raw")
    p.add_argument("addr")
    p.add_argument("port", type=int)
    p.add_argument("--host", help="send GET / with this Host")
    p.add_argument("--send", help="send these bytes instead")
    p.add_argument("--read", action="store_true", help="read even if silent")
    p.add_argument("--no-read", action="store_true",
                   help="send and close at once, without waiting for a reply")
    p.add_argument("--tls", action="store_true")
    p.add_argument("--sni", help="SNI to send (with --tls); none if absent")
    p.add_argument("--fastopen", action="store_true")
    p.add_argument("--wait-before", type=int, default=0, metavar="MS",
                   help="stay silent this long after connecting")
    p.add_argument("--send2", help="then, once answered, send these bytes too")
    p.add_argument("--send2-after", type=int, default=300, metavar="MS",
                   help="pause before --send2")
    p.add_argument("--timeout", type=float, default=10)
    p.set_defaults(fn=cmd_raw)
    p = sub.add_parser("udp")
    p.add_argument("addr")
    p.add_argument("port", type=int)
    p.add_argument("--connect", action="store_true")
    p.set_defaults(fn=cmd_udp)
    p = sub.add_parser("mcast")
    p.add_argument("ifname", help="interface to join the groups on")
    p.set_defaults(fn=cmd_mcast)
    p = sub.add_parser("srcroute")
    p.add_argument("via", help="first hop the option names")
    p.add_argument("dst", help="the destination connect() names")
    p.set_defaults(fn=cmd_srcroute)
    p = sub.add_parser("bindtodevice")
    p.add_argument("ifname")
    p.add_argument("dst")
    p.set_defaults(fn=cmd_bindtodevice)
    p = sub.add_parser("sniff")
    p.add_argument("ifname")
    p.add_argument("seconds", type=float)
    p.add_argument("ready", help="file written once listening")
    p.add_argument("--mcast", action="store_true",
                   help="count the multicast probe's groups instead")
    p.set_defaults(fn=cmd_sniff)
    p = sub.add_parser("dns")
    p.add_argument("name")
    p.add_argument("--server", help="default: /etc/resolv.conf's first")
    p.add_argument("--port", type=int, default=53)
    p.add_argument("--qtype", default="A")
    p.add_argument("--via", default="connect",
                   choices=["connect", "connect-cmsg", "connect-mapped", "sendto",
                            "sendmsg", "sendmmsg", "tcp"])
    p.add_argument("--count", type=int, default=1, help="queries (ids)")
    p.add_argument("--timeout", type=float, default=4)
    p.set_defaults(fn=cmd_dns)
    p = sub.add_parser("resolve")
    p.add_argument("name")
    p.add_argument("--port", type=int, default=443)
    p.set_defaults(fn=cmd_resolve)
    p = sub.add_parser("ssh")
    p.add_argument("addr")
    p.add_argument("port", type=int)
    p.add_argument("--resolve", help="getaddrinfo this name first")
    p.add_argument("--timeout", type=float, default=8)
    p.set_defaults(fn=cmd_ssh)
    p = sub.add_parser("socks")
    p.add_argument("kinds", nargs="*", help=", ".join(sorted(SOCKS)))
    p.set_defaults(fn=cmd_socks)
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
