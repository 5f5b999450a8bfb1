#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
"""One test-bed server ("allowed.test", "evil.test", ...) in the bed's net
namespace.

Serves HTTPS and HTTP on the given addresses and ports, optionally a range
of "port echo" ports (each connection is answered with the port it was
accepted on), UDP sinks, SSH-style banner ports (the server speaks first,
no SNI or Host: what a name-bound `other.test:22` rule is for) and an
attacker's DNS server (UDP and TCP; it answers every A query with the
server's own address, so a query that reached it shows up both in its log
and in the client's answer). Every contact is appended to a JSON-lines log
as soon as it happens (accept first, before any TLS or HTTP), so a test can
prove that a server was never reached: its log stays empty.

Log events:
  {"event":"accept","proto":"tcp","peer":..,"local":..,"port":..}
  {"event":"request","port":..,"peer":..,"sni":..,"request":..,"host":..,
   "headers":[[name, value], ...],"body_len":..}

HTTP(S) answers "hello from <name>", except: GET /echo answers the request
head it received (request line and headers, as text), so a test can see
what a proxy in between sent; GET /slow?ms=N&size=B sends B bytes (default
1 MiB, the hash port's pattern) paced over N ms; with --static PREFIX=DIR, paths under PREFIX
are files of DIR (query dropped; 404 if missing), e.g. a dumb-HTTP git
repository made with `git update-server-info`.
  {"event":"tls_error"|"bad_request","port":..,"peer":..,"error":..}
  {"event":"echo","port":..,"peer":..}
  {"event":"udp","port":..,"peer":..,"len":..}
  {"event":"banner","port":..,"peer":..,"line":..}
  {"event":"dns","proto":"udp"|"tcp","port":..,"peer":..,"qname":..,"qtype":..}
  {"event":"hash","port":..,"peer":..,"up":..,"down":..}
  {"event":"h2_preface","port":..,"peer":..}

A --vhost port is a front end for several sites on one address, framing
requests the lenient way nginx and HAProxy do (a line ends at LF, a CR
before it dropped; a chunk's size line at LF, its extension ignored; an
Upgrade it does not know ignored) and answering each request on a
keep-alive connection (until Connection: close) by its own Host ("hello
from <host>"; an HTTP/0.9 "GET target" line by the host of an
absolute-form target, as nginx does, then closing), each logged
as a "request" event; the HTTP/2 preface is logged as "h2_preface" (a
server with h2c would switch to HTTP/2 there).
"""
import argparse
import asyncio
import hashlib
import json
import os
import resource
import signal
import socket
import ssl
import struct
import sys
import time


class Server:
    def __init__(self, args):
        self.name = args.name
        self.log = open(args.log, "a", buffering=1)
        # What the DNS mode answers for every A question.
        self.addr4 = next((a for a in args.addr if ":" not in a), None)
        self.static = []
        for spec in args.static:
            prefix, _, d = spec.partition("=")
            self.static.append((prefix.rstrip("/") + "/", os.path.realpath(d)))
        self.ctx = None
        if args.tls:
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.ctx.load_cert_chain(args.cert, args.key)
            self.ctx.set_alpn_protocols(["http/1.1"])
            self.ctx.sni_callback = self._sni

    @staticmethod
    def _sni(sslobj, name, ctx):
        # Remember what the client asked for; the certificate is the same.
        sslobj.egr_sni = name
        return None

    def write(self, **kv):
        kv["time"] = round(time.time(), 3)
        kv["server"] = self.name
        self.log.write(json.dumps(kv, sort_keys=True) + "\n")

    async def tcp(self, reader, writer, port, mode):
        peer = writer.get_extra_info("peername")
        local = writer.get_extra_info("sockname")
        self.write(event="accept", proto="tcp", peer=list(peer[:2]),
                   local=list(local[:2]), port=port)
        try:
            if mode == "echo":
                await self.echo(reader, writer, port, peer)
            elif mode == "banner":
                await self.banner(reader, writer, port, peer)
            elif mode == "dns":
                await self.dns_tcp(reader, writer, port, peer)
            elif mode == "hash":
                await self.hash(reader, writer, port, peer)
            elif mode == "vhost":
                await self.vhost(reader, writer, port, peer)
            else:
                await self.http(reader, writer, port, peer, mode == "tls")
        except Exception as e:  # noqa: BLE001 - log every failure, keep serving
            self.write(event="error", port=port, peer=list(peer[:2]),
                       error=repr(e))
        finally:
            try:
                writer.close()
                await asyncio.wait_for(writer.wait_closed(), 2)
            except Exception:  # noqa: BLE001
                pass

    async def hash(self, reader, writer, port, peer):
        # Both directions of a bulk stream and both half-closes: read the
        # line "N", then everything up to the client's FIN; answer
        # "<sha256 of what came after the line> <its length>" and N bytes
        # of pattern_bytes(), then close.
        line = await asyncio.wait_for(reader.readline(), 10)
        want = int(line.strip() or b"0")
        h, n = hashlib.sha256(), 0
        while True:
            chunk = await asyncio.wait_for(reader.read(1 << 16), 30)
            if not chunk:
                break
            h.update(chunk)
            n += len(chunk)
        self.write(event="hash", port=port, peer=list(peer[:2]), up=n,
                   down=want)
        writer.write(b"%s %d\n" % (h.hexdigest().encode(), n))
        block = pattern_block()
        sent = 0
        while sent < want:
            k = min(len(block), want - sent)
            writer.write(block[:k])
            sent += k
            await writer.drain()

    async def echo(self, reader, writer, port, peer):
        # Read the client's line first: answering before reading and then
        # closing with unread data would turn the close into a RST.
        try:
            await asyncio.wait_for(reader.readline(), 5)
        except asyncio.TimeoutError:
            pass
        self.write(event="echo", port=port, peer=list(peer[:2]))
        writer.write(b"%d\n" % port)
        await writer.drain()

    async def banner(self, reader, writer, port, peer):
        # Like sshd: the server speaks first; then log the client's line.
        writer.write(b"SSH-2.0-bed-%s\r\n" % self.name.encode())
        await writer.drain()
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
        except asyncio.TimeoutError:
            line = b""
        self.write(event="banner", port=port, peer=list(peer[:2]),
                   line=line.decode("latin-1").strip())

    def dns_answer(self, query, proto, port, peer):
        """Log the question and answer it like a hostile resolver would:
        every A question gets this server's own IPv4 address."""
        qname, qtype, qend = dns_question(query)
        self.write(event="dns", proto=proto, port=port, peer=list(peer[:2]),
                   qname=qname, qtype=qtype, len=len(query))
        if qend is None:
            return None
        flags = 0x8400 | (struct.unpack("!H", query[2:4])[0] & 0x0100)
        answers = b""
        ancount = 0
        if qtype == 1 and self.addr4:
            answers = (b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) +
                       socket.inet_aton(self.addr4))
            ancount = 1
        elif qtype == 16:
            txt = b"evil-" + self.name.encode()
            answers = (b"\xc0\x0c" + struct.pack("!HHIH", 16, 1, 60,
                                                   len(txt) + 1) +
                       bytes([len(txt)]) + txt)
            ancount = 1
        return (query[:2] + struct.pack("!HHHHH", flags, 1, ancount, 0, 0) +
                query[12:qend] + answers)

    async def dns_tcp(self, reader, writer, port, peer):
        while True:
            try:
                n = struct.unpack("!H", await asyncio.wait_for(
                    reader.readexactly(2), 5))[0]
                query = await asyncio.wait_for(reader.readexactly(n), 5)
            except (asyncio.TimeoutError, asyncio.IncompleteReadError):
                return
            reply = self.dns_answer(query, "tcp", port, peer)
            if reply is None:
                return
            writer.write(struct.pack("!H", len(reply)) + reply)
            await writer.drain()

    async def vhost(self, reader, writer, port, peer):
        async def line():
            return (await asyncio.wait_for(reader.readline(), 5)).rstrip(b"\r\n")

        while True:
            first = b""
            for _ in range(8):  # blank lines before a request are skipped
                raw = await asyncio.wait_for(reader.readline(), 5)
                if not raw:
                    return
                first = raw.rstrip(b"\r\n")
                if first:
                    break
            if first.startswith(b"PRI * HTTP/2.0"):
                self.write(event="h2_preface", port=port, peer=list(peer[:2]))
                return
            parts = first.split()
            if len(parts) == 2 and parts[0] == b"GET":
                # HTTP/0.9, as nginx serves it: the host of an
                # absolute-form target, or the default site; no headers
                target = parts[1].decode("latin-1")
                host = target.split("/")[2] if target.lower().startswith("http://") else None
                self.write(event="request", port=port, peer=list(peer[:2]),
                           request=first.decode("latin-1"), host=host, mode="vhost")
                writer.write(("hello from %s\n" % host).encode())
                await writer.drain()
                return
            host, clen, chunked, close = None, 0, False, False
            while True:
                h = await line()
                if not h:
                    break
                k, _, v = h.partition(b":")
                k, v = k.strip().lower(), v.strip()
                if k == b"host":
                    host = v.decode("latin-1")
                elif k == b"content-length" and v.isdigit():
                    clen = int(v)
                elif k == b"transfer-encoding" and v.lower() == b"chunked":
                    chunked = True
                elif k == b"connection" and v.lower() == b"close":
                    close = True
            if chunked:
                while True:
                    size = int(((await line()).split(b";")[0].strip() or b"0"), 16)
                    if not size:
                        while await line():  # trailers
                            pass
                        break
                    await reader.readexactly(size)
                    await line()
            elif clen:
                await reader.readexactly(min(clen, 1 << 20))
            self.write(event="request", port=port, peer=list(peer[:2]),
                       request=first.decode("latin-1"), host=host, mode="vhost")
            body = ("hello from %s\n" % host).encode()
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                         b"Content-Length: %d\r\nConnection: %s\r\n\r\n"
                         % (len(body), b"close" if close else b"keep-alive") + body)
            await writer.drain()
            if close:
                return

    async def http(self, reader, writer, port, peer, tls):
        sni = None
        if tls:
            try:
                await writer.start_tls(self.ctx, ssl_handshake_timeout=5)
            except Exception as e:  # noqa: BLE001
                self.write(event="tls_error", port=port, peer=list(peer[:2]),
                           error=repr(e))
                return
            sslobj = writer.get_extra_info("ssl_object")
            sni = getattr(sslobj, "egr_sni", None)
        # /ka answers with keep-alive and reads the next request on the
        # same connection (ignoring any Upgrade, as many servers do)
        while await self.http_one(reader, writer, port, peer, tls, sni):
            pass

    async def http_one(self, reader, writer, port, peer, tls, sni):
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError) as e:
            self.write(event="bad_request", port=port, peer=list(peer[:2]),
                       sni=sni, error=repr(e))
            return False
        text = head.decode("latin-1")
        lines = text.split("\r\n")
        host = None
        headers = []
        clen = 0
        for line in lines[1:]:
            if not line:
                continue
            k, _, v = line.partition(":")
            headers.append([k, v.strip()])
            if k.strip().lower() == "host":
                host = v.strip()
            if k.strip().lower() == "content-length" and v.strip().isdigit():
                clen = min(int(v.strip()), 1 << 20)
        body_len = 0
        if clen:
            try:
                body_len = len(await asyncio.wait_for(reader.readexactly(clen), 5))
            except (asyncio.TimeoutError, asyncio.IncompleteReadError):
                pass
        self.write(event="request", port=port, peer=list(peer[:2]), sni=sni,
                   request=lines[0], host=host, tls=tls, headers=headers,
                   body_len=body_len)
        parts = lines[0].split(" ")
        path = parts[1].split("?")[0] if len(parts) > 1 else ""
        status, ctype = b"200 OK", b"text/plain"
        if path == "/slow":
            # ?size= bytes (default 1 MiB) paced by the server over ?ms=
            # (default 8000) in 64 steps: a download of known length that
            # lasts, whatever the client's rate limiting does (curl 7.88's
            # --limit-rate lets 1 MiB through at once). The body is the
            # hash port's pattern stream, so a client can check it byte
            # for byte (slow_sha256).
            query = parts[1].split("?", 1)[1] if "?" in parts[1] else ""
            args = dict(a.split("=", 1) for a in query.split("&") if "=" in a)
            total_ms = min(max(int(args.get("ms", "8000") or 0), 0), 60000)
            total = min(max(int(args.get("size", "1048576") or 0), 0), 64 << 20)
            n = 64
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream"
                         b"\r\nX-Egr-Server: " + self.name.encode() + b"\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n" % total)
            body = pattern_stream(total)
            for i in range(n):
                writer.write(body[total * i // n:total * (i + 1) // n])
                await writer.drain()
                await asyncio.sleep(total_ms / 1000.0 / n)
            return False
        keep = path == "/ka"
        if path == "/echo":
            body = text.encode("latin-1")
        elif any(path.startswith(p) for p, _ in self.static):
            body, status = self.static_file(path), b"200 OK"
            if body is None:
                body, status = b"not found\n", b"404 Not Found"
        else:
            body = ("hello from %s\n" % self.name).encode()
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Type: " + ctype +
                     b"\r\nX-Egr-Server: " + self.name.encode() + b"\r\n"
                     b"Content-Length: %d\r\nConnection: %s\r\n\r\n"
                     % (len(body), b"keep-alive" if keep else b"close") + body)
        await writer.drain()
        return keep

    def static_file(self, path):
        for prefix, root in self.static:
            if not path.startswith(prefix):
                continue
            full = os.path.realpath(os.path.join(root, path[len(prefix):]))
            if not full.startswith(root + "/") or not os.path.isfile(full):
                return None
            with open(full, "rb") as f:
                return f.read()
        return None


def dns_question(msg):
    """(qname, qtype, end of the question) of a query; end None if bad."""
    try:
        if len(msg) < 12 or struct.unpack("!H", msg[4:6])[0] < 1:
            return None, None, None
        labels, i = [], 12
        while msg[i]:
            if msg[i] > 63:
                return None, None, None
            labels.append(msg[i + 1:i + 1 + msg[i]].decode("latin-1"))
            i += 1 + msg[i]
        qtype = struct.unpack("!H", msg[i + 1:i + 3])[0]
        return ".".join(labels), qtype, i + 5
    except (IndexError, struct.error):
        return None, None, None


class UdpDns(asyncio.DatagramProtocol):
    def __init__(self, srv, port):
        self.srv, self.port, self.transport = srv, port, None

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        reply = self.srv.dns_answer(data, "udp", self.port, addr)
        if reply is not None:
            self.transport.sendto(reply, addr)


class Udp(asyncio.DatagramProtocol):
    def __init__(self, srv, port):
        self.srv, self.port = srv, port

    def datagram_received(self, data, addr):
        self.srv.write(event="udp", port=self.port, peer=list(addr[:2]),
                       len=len(data))


def pattern_block():
    """64 KiB the hash port repeats (client.py hashxfer checks it)."""
    out, h = [], b"egressd"
    while sum(map(len, out)) < 1 << 16:
        h = hashlib.sha256(h).digest()
        out.append(h)
    return b"".join(out)[:1 << 16]


def pattern_stream(size):
    """The first size bytes of pattern_block() repeated."""
    block = pattern_block()
    return (block * (size // len(block) + 1))[:size]


def slow_sha256(size):
    """sha256 hex of GET /slow?size=SIZE's body (for run.sh)."""
    return hashlib.sha256(pattern_stream(size)).hexdigest()


def port_range(text):
    lo, _, hi = text.partition("-")
    lo, hi = int(lo), int(hi or lo)
    if not 0 < lo <= hi < 65536 or hi - lo > 5000:
        raise argparse.ArgumentTypeError("bad port range " + text)
    return range(lo, hi + 1)


async def serve(args):
    srv = Server(args)
    loop = asyncio.get_running_loop()
    servers = []
    plan = [(p, "tls") for p in args.tls] + [(p, "http") for p in args.http]
    plan += [(p, "banner") for p in args.banner]
    plan += [(p, "dns") for p in args.dns]
    plan += [(p, "hash") for p in args.hash]
    plan += [(p, "vhost") for p in args.vhost]
    if args.echo:
        plan += [(p, "echo") for p in args.echo]
    for addr in args.addr:
        for port, mode in plan:
            def cb(r, w, port=port, mode=mode):
                return srv.tcp(r, w, port, mode)
            srv_obj = await asyncio.start_server(
                cb, host=addr, port=port, reuse_address=True, backlog=4096)
            if mode in ("tls", "http"):
                # Accept data in the SYN (tcp_fastopen_redirected).
                for sock in srv_obj.sockets:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_FASTOPEN,
                                    64)
            servers.append(srv_obj)
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        for port in args.udp:
            await loop.create_datagram_endpoint(
                lambda port=port: Udp(srv, port), local_addr=(addr, port),
                family=fam)
        for port in args.dns:
            await loop.create_datagram_endpoint(
                lambda port=port: UdpDns(srv, port), local_addr=(addr, port),
                family=fam)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    if args.ready:
        with open(args.ready, "w") as f:
            f.write("%d\n" % os.getpid())
    await stop.wait()
    for s in servers:
        s.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--name", required=True)
    ap.add_argument("--addr", action="append", required=True)
    ap.add_argument("--tls", action="append", type=int, default=[])
    ap.add_argument("--http", action="append", type=int, default=[])
    ap.add_argument("--echo", type=port_range, help="LO-HI port echo range")
    ap.add_argument("--udp", action="append", type=int, default=[])
    ap.add_argument("--banner", action="append", type=int, default=[],
                    help="SSH-style port: send a banner line, log the reply")
    ap.add_argument("--dns", action="append", type=int, default=[],
                    help="attacker DNS server port (UDP and TCP)")
    ap.add_argument("--hash", action="append", type=int, default=[],
                    help="port: sha256 of an upload, then N pattern bytes")
    ap.add_argument("--vhost", action="append", type=int, default=[],
                    help="port: a lenient front end for several sites, "
                         "answering each request by its Host")
    ap.add_argument("--cert")
    ap.add_argument("--key")
    ap.add_argument("--static", action="append", default=[],
                    help="PREFIX=DIR: serve DIR's files under URL path PREFIX")
    ap.add_argument("--log", required=True)
    ap.add_argument("--ready", help="file written once every port is bound")
    args = ap.parse_args()
    if args.tls and not (args.cert and args.key):
        ap.error("--tls needs --cert and --key")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 65536)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
