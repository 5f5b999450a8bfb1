/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * HTTP/1.x request head peek (plain HTTP): method and Host, using Debian's
 * http-parser for the syntax. Untrusted input; fuzzed
 * (tests/fuzz/fuzz_httphead.c). Call again with the whole buffer received
 * so far while it returns HTTP_NEED_MORE.
 */
#ifndef EGR_HTTPHEAD_H
#define EGR_HTTPHEAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTP_HEAD_MAX_BYTES (16 * 1024)

enum http_head_result {
	HTTP_HEAD_OK = 0,
	HTTP_HEAD_NEED_MORE = 1,
	HTTP_HEAD_NOT_HTTP = -1,  /* does not start like an HTTP/1.x request */
	HTTP_HEAD_MALFORMED = -2, /* bad syntax, several Host headers, Host
	                           * and absolute-form URI disagree, ... */
	HTTP_HEAD_TOO_LARGE = -3,
};

struct http_head_info {
	char method[16];
	bool has_host;
	char host[256];   /* Host without port, brackets removed for IPv6 */
	uint16_t port;    /* port from Host / absolute URI, 0 if none given */
	bool host_valid;  /* has_host and hello_hostname_valid(host) */
	bool te_plain;    /* no Transfer-Encoding, or one field "chunked" alone
			   * (http-parser also takes "gzip, chunked" and an
			   * identity field before a chunked one as chunked;
			   * nginx refuses both, others read them otherwise) */
	bool upgrade_h2c; /* an Upgrade field names h2c */
	size_t head_len;  /* bytes up to and including the empty line */
};

int http_head_parse(const uint8_t *buf, size_t len, struct http_head_info *out);

/* RFC 9110 5.6.2 tchar: a byte of a token (a method, a field name). */
bool http_is_tchar(uint8_t ch);

/* Cheap check: first bytes are an HTTP method token followed by a space. */
bool http_head_looks_like_http(const uint8_t *buf, size_t len);

#endif
