/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * Plain-HTTP passthrough: every request on a connection must name the host
 * the connection was allowed for. The first request head decided the
 * connection (httphead.h); the client may send more requests on it, each
 * with its own Host, and a server on a shared address (a CDN) routes each
 * by its own. This follows the client's byte stream: every head through
 * http_head_parse (the same strict rules as the first: one Host, agreeing
 * with an absolute-form target; CRLF line ends only), every body framed
 * strictly (Content-Length, or chunked with CRLF line ends only), so the
 * server cannot find a message boundary elsewhere. Untrusted input; fuzzed
 * (tests/fuzz/fuzz_httpstream.c).
 */
#ifndef EGR_HTTPSTREAM_H
#define EGR_HTTPSTREAM_H

#include <stddef.h>
#include <stdint.h>

enum httpstream_result {
	HTTPSTREAM_OK = 0,         /* every head so far named the host */
	HTTPSTREAM_TUNNEL = 1,     /* an Upgrade (not to h2c, whose streams
	                            * could name any host) or CONNECT request:
	                            * what follows is not HTTP; stop feeding */
	HTTPSTREAM_OTHER_HOST = -1, /* a head named another host, or none */
	HTTPSTREAM_MALFORMED = -2, /* a head or a body that cannot be framed */
};

struct httpstream;

/* host: the name the connection was allowed for (no port). NULL: ENOMEM. */
struct httpstream *httpstream_new(const char *host);
void httpstream_free(struct httpstream *s); /* accepts NULL */
/* The next bytes the client sent, in order, from its first byte. Once it
 * returned anything but HTTPSTREAM_OK, it returns the same again. */
int httpstream_feed(struct httpstream *s, const uint8_t *buf, size_t len);
/* The host a refused head named ("" if none), for the audit record. */
const char *httpstream_other_host(const struct httpstream *s);
/* After httpstream_feed() first returned HTTPSTREAM_TUNNEL: how many bytes
 * of that call's buffer came before the raw bytes (the end of the Upgrade
 * or CONNECT head); what follows them was not looked at. */
size_t httpstream_tunnel_at(const struct httpstream *s);

#endif
