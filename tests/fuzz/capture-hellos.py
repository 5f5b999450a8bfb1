#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
"""Capture real TLS ClientHellos from the clients installed on this machine.

For every client: listen on 127.0.0.1 (ephemeral port), start the client
pointed at it, read the first complete ClientHello (every TLS record that
holds it, byte for byte), save it as <out>/<name>.bin, close the
connection so the client gives up, and stop the client (by its own PID).
Only loopback traffic. A client that is missing or that this OpenSSL
cannot drive (e.g. -groups X25519MLKEM768 on OpenSSL 3.0) is skipped.
Afterwards a few captures are also saved re-framed into small records
(<name>-records<N>.bin) as multi-record seeds.

usage: tests/fuzz/capture-hellos.py [OUTDIR]   (default tests/fuzz/corpus/hello)
"""

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

TIMEOUT = 10.0
SNI = "allowed.test"

NODE_TLS = r"""
const tls = require('tls');
const port = Number(process.argv[1]);
const s = tls.connect({host: '127.0.0.1', port, servername: '%s',
                       ALPNProtocols: ['h2', 'http/1.1'],
                       rejectUnauthorized: false});
s.on('error', () => process.exit(0));
s.on('close', () => process.exit(0));
""" % SNI

# fetch() has no resolve option in Node 20 and /etc/hosts is not ours:
# point the resolver at loopback so the URL (and so SNI) keeps the name.
NODE_FETCH = r"""
const dns = require('dns');
const orig = dns.lookup;
dns.lookup = function (host, opts, cb) { return orig.call(dns, '127.0.0.1', opts, cb); };
const port = Number(process.argv[1]);
fetch('https://%s:' + port + '/').catch(() => process.exit(0));
""" % SNI

PY_SSL = r"""
import socket, ssl, sys
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=5)
try:
    ctx.wrap_socket(s, server_hostname='%s')
except Exception:
    pass
""" % SNI

JAVA_SRC = r"""
import javax.net.ssl.*;
import java.util.List;
public class Hello {
    public static void main(String[] a) throws Exception {
        SSLSocketFactory f = (SSLSocketFactory) SSLSocketFactory.getDefault();
        SSLSocket s = (SSLSocket) f.createSocket("127.0.0.1", Integer.parseInt(a[0]));
        SSLParameters p = s.getSSLParameters();
        p.setServerNames(List.of(new SNIHostName("%s")));
        p.setApplicationProtocols(new String[] {"h2", "http/1.1"});
        s.setSSLParameters(p);
        try { s.startHandshake(); } catch (Exception e) { }
    }
}
""" % SNI


def clients(tmp):
    """(name, argv with {port}, needs) -- needs names the binary to look for."""
    java = os.path.join(tmp, "Hello.java")
    with open(java, "w") as f:
        f.write(JAVA_SRC)
    url = "https://%s:{port}/" % SNI
    resolve = "%s:{port}:127.0.0.1" % SNI
    return [
        ("curl", ["curl", "-sk", "--max-time", "5", "--resolve", resolve, url]),
        ("curl-http1.1", ["curl", "-sk", "--http1.1", "--max-time", "5",
                          "--resolve", resolve, url]),
        ("curl-tls12", ["curl", "-sk", "--tlsv1.2", "--tls-max", "1.2",
                        "--max-time", "5", "--resolve", resolve, url]),
        # An IP literal URL: real clients send no SNI at all.
        ("curl-nosni", ["curl", "-sk", "--max-time", "5",
                        "https://127.0.0.1:{port}/"]),
        ("openssl", ["openssl", "s_client", "-connect", "127.0.0.1:{port}",
                     "-servername", SNI]),
        ("openssl-alpn", ["openssl", "s_client", "-connect", "127.0.0.1:{port}",
                          "-servername", SNI, "-alpn", "h2,http/1.1"]),
        ("openssl-tls12", ["openssl", "s_client", "-connect", "127.0.0.1:{port}",
                           "-servername", SNI, "-tls1_2"]),
        ("openssl-mlkem", ["openssl", "s_client", "-connect", "127.0.0.1:{port}",
                           "-servername", SNI, "-groups", "X25519MLKEM768"]),
        ("node", ["node", "-e", NODE_TLS, "{port}"]),
        ("node-fetch", ["node", "-e", NODE_FETCH, "{port}"]),
        ("python", [sys.executable, "-c", PY_SSL, "{port}"]),
        ("wget-nosni", ["wget", "-q", "-O", "/dev/null", "--tries=1",
                        "--timeout=5", "--no-check-certificate",
                        "https://127.0.0.1:{port}/"]),
        ("java", ["java", java, "{port}"]),
    ]


def read_hello(conn):
    """Bytes of the records that carry the first ClientHello, or None."""
    buf = b""
    conn.settimeout(TIMEOUT)

    def need(n):
        nonlocal buf
        while len(buf) < n:
            chunk = conn.recv(65536)
            if not chunk:
                return False
            buf += chunk
        return True

    off = 0
    hs = b""
    hs_len = None
    while hs_len is None or len(hs) < 4 + hs_len:
        if not need(off + 5):
            return None
        if buf[off] != 22:
            return None
        rlen = int.from_bytes(buf[off + 3:off + 5], "big")
        if not need(off + 5 + rlen):
            return None
        hs += buf[off + 5:off + 5 + rlen]
        off += 5 + rlen
        if hs_len is None and len(hs) >= 4:
            hs_len = int.from_bytes(hs[1:4], "big")
    return buf[:off]


def capture(name, argv, outdir):
    if shutil.which(argv[0]) is None:
        return "skipped (%s not installed)" % argv[0]
    ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    ls.settimeout(TIMEOUT)
    port = ls.getsockname()[1]
    argv = [a.replace("{port}", str(port)) for a in argv]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    result = None
    try:
        conn = None
        deadline = time.monotonic() + TIMEOUT
        # Short accept timeouts so a client that fails at once (unknown
        # option) is noticed without waiting for the full timeout.
        ls.settimeout(0.1)
        while conn is None:
            try:
                conn, _ = ls.accept()
            except socket.timeout:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise
        with conn:
            data = read_hello(conn)
        if data is None:
            result = "failed (no ClientHello)"
        else:
            with open(os.path.join(outdir, name + ".bin"), "wb") as f:
                f.write(data)
            result = "%d bytes" % len(data)
    except socket.timeout:
        result = "skipped (client did not connect)"
    finally:
        ls.close()
        try:
            _, err = proc.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
    if result.startswith("skipped") and err:
        result += ": " + err.decode(errors="replace").strip().splitlines()[0]
    return result


def reframe(src, dst, size):
    """Same hello split into records of `size` bytes (as some clients and
    middleboxes do), so the fuzzer starts from multi-record inputs too."""
    data = open(src, "rb").read()
    hs, off = b"", 0
    while off + 5 <= len(data):
        rlen = int.from_bytes(data[off + 3:off + 5], "big")
        hs += data[off + 5:off + 5 + rlen]
        off += 5 + rlen
    out = b""
    for i in range(0, len(hs), size):
        frag = hs[i:i + size]
        out += bytes([22, 3, 1]) + len(frag).to_bytes(2, "big") + frag
    with open(dst, "wb") as f:
        f.write(out)


def main():
    outdir = sys.argv[1] if len(sys.argv) > 1 else "tests/fuzz/corpus/hello"
    os.makedirs(outdir, exist_ok=True)
    ok = 0
    with tempfile.TemporaryDirectory() as tmp:
        for name, argv in clients(tmp):
            t = time.monotonic()
            res = capture(name, argv, outdir)
            ok += res.endswith("bytes")
            print("%-14s %s (%.1fs)" % (name, res, time.monotonic() - t))
    for name, size in (("curl", 100), ("node", 7), ("openssl", 1)):
        src = os.path.join(outdir, name + ".bin")
        if os.path.exists(src):
            reframe(src, os.path.join(outdir, "%s-records%d.bin" % (name, size)),
                    size)
    print("captured %d ClientHellos into %s" % (ok, outdir))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
