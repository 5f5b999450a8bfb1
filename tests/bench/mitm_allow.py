# SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
"""make bench: mitmproxy addon that makes mitmdump an SNI allowlist.

TLS with an allowed SNI is intercepted (mitmproxy's CA is the bed's test
CA, which the clients trust) and re-encrypted upstream; for any other SNI,
or none, mitmproxy is told not to intercept and its upstream connection is
then refused, so the client gets nothing from the origin.
"""
from mitmproxy import tls

ALLOWED = frozenset({"allowed.test"})


class SniAllowlist:
    def __init__(self):
        self.refused = set()

    def tls_clienthello(self, data: tls.ClientHelloData):
        if data.client_hello.sni not in ALLOWED:
            self.refused.add(data.context.client.id)
            data.ignore_connection = True

    def server_connect(self, data):
        if data.client.id in self.refused:
            self.refused.discard(data.client.id)
            data.server.error = "SNI not in the allowlist"


addons = [SniAllowlist()]
