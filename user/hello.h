/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * TLS ClientHello peek: SNI, ALPN, ECH presence. Untrusted input; fuzzed
 * (tests/fuzz/fuzz_hello.c). The ClientHello may span several TLS records
 * and arrive in several TCP segments: call hello_parse() again with the
 * whole buffer received so far until it stops returning HELLO_NEED_MORE.
 */
#ifndef EGR_HELLO_H
#define EGR_HELLO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Largest ClientHello we reassemble (records + handshake), bytes. */
#define HELLO_MAX_BYTES (64 * 1024)

enum hello_result {
	HELLO_OK = 0,        /* complete ClientHello parsed */
	HELLO_NEED_MORE = 1, /* looks like TLS so far; need more bytes */
	HELLO_NOT_TLS = -1,  /* first bytes are not a TLS handshake record */
	HELLO_MALFORMED = -2,
	HELLO_TOO_LARGE = -3, /* exceeds HELLO_MAX_BYTES */
};

struct hello_info {
	bool has_sni;        /* server_name extension with a host_name entry */
	char sni[256];       /* as sent (not lowercased), NUL-terminated */
	bool sni_valid;      /* has_sni and a syntactically valid DNS name,
	                      * not an IP literal (RFC 6066 forbids those) */
	bool has_alpn;
	char alpn[256];      /* protocols joined with ',' e.g. "h2,http/1.1" */
	bool has_ech;        /* encrypted_client_hello (0xfe0d) present */
	uint16_t legacy_version; /* client_version field */
	size_t consumed;     /* bytes of records that held the ClientHello */
};

/* Parse buf[0..len). Returns enum hello_result; fills *out on HELLO_OK. */
int hello_parse(const uint8_t *buf, size_t len, struct hello_info *out);

/* Cheap check on the first byte(s): could this be a TLS handshake? */
bool hello_looks_like_tls(const uint8_t *buf, size_t len);

/* Valid DNS host name (LDH labels, 1..253 chars, optional trailing dot),
 * and not an IPv4/IPv6 literal. Shared with the HTTP Host check. */
bool hello_hostname_valid(const char *name);

#endif
