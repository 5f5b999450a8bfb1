#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
"""One test-bed server ("allowed.test", "evil.test", ...) in the bed's net
namespace.

Serves HTTPS and HTTP on the given addresses and ports, optionally a range
of "port echo" ports (each connection is answered with the port it was
accepted on) and UDP sinks. Every contact is appended to a JSON-lines log
as soon as it happens (accept first, before any TLS or HTTP), so a test can
prove that a server was never reached: its log stays empty.

Log events:
  {"event":"accept","proto":"tcp","peer":..,"local":..,"port":..}
  {"event":"request","port":..,"peer":..,"sni":..,"request":..,"host":..}
  {"event":"tls_error"|"bad_request","port":..,"peer":..,"error":..}
  {"event":"echo","port":..,"peer":..}
  {"event":"udp","port":..,"peer":..,"len":..}
"""
import argparse
import asyncio
import json
import os
import resource
import signal
import socket
import ssl
import sys
import time


class Server:
    def __init__(self, args):
        self.name = args.name
        self.log = open(args.log, "a", buffering=1)
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
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        except (asyncio.TimeoutError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError) as e:
            self.write(event="bad_request", port=port, peer=list(peer[:2]),
                       sni=sni, error=repr(e))
            return
        lines = head.decode("latin-1").split("\r\n")
        host = None
        for line in lines[1:]:
            k, _, v = line.partition(":")
            if k.strip().lower() == "host":
                host = v.strip()
        self.write(event="request", port=port, peer=list(peer[:2]), sni=sni,
                   request=lines[0], host=host, tls=tls)
        body = ("hello from %s\n" % self.name).encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                     b"X-Egr-Server: " + self.name.encode() + b"\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n"
                     % len(body) + body)
        await writer.drain()


class Udp(asyncio.DatagramProtocol):
    def __init__(self, srv, port):
        self.srv, self.port = srv, port

    def datagram_received(self, data, addr):
        self.srv.write(event="udp", port=self.port, peer=list(addr[:2]),
                       len=len(data))


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
    if args.echo:
        plan += [(p, "echo") for p in args.echo]
    for addr in args.addr:
        for port, mode in plan:
            def cb(r, w, port=port, mode=mode):
                return srv.tcp(r, w, port, mode)
            srv_obj = await asyncio.start_server(
                cb, host=addr, port=port, reuse_address=True, backlog=4096)
            if mode != "echo":
                # Accept data in the SYN (tcp_fastopen_redirected).
                for sock in srv_obj.sockets:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_FASTOPEN,
                                    64)
            servers.append(srv_obj)
        for port in args.udp:
            fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
            await loop.create_datagram_endpoint(
                lambda port=port: Udp(srv, port), local_addr=(addr, port),
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
    ap.add_argument("--cert")
    ap.add_argument("--key")
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
