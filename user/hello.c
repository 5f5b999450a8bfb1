// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * TLS ClientHello peek (RFC 8446 4.1.2, RFC 5246 7.4.1.2, RFC 6066 3,
 * RFC 7301 3.1). The bytes come from an untrusted agent that may forge
 * anything, so every length is checked against its container, nothing is
 * read past what was received, and anything ambiguous (a second SNI, a
 * duplicated extension) is MALFORMED: the proxy must never see a different
 * name than the server will.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "hello.h"

#define TLS_RECORD_HEADER 5
#define TLS_RECORD_MAX (1U << 14) /* TLSPlaintext.length limit */
#define TLS_CT_HANDSHAKE 22
#define TLS_HS_HEADER 4
#define TLS_HS_CLIENT_HELLO 1

#define EXT_SERVER_NAME 0
#define EXT_ALPN 16
#define EXT_PRE_SHARED_KEY 41
#define EXT_ECH 0xfe0d
#define SNI_HOST_NAME 0

/* Bounds-checked reader over one contiguous byte range. */
struct rd {
	const uint8_t *p;
	size_t left;
};

static bool rd_u8(struct rd *r, unsigned int *v)
{
	if (r->left < 1)
		return false;
	*v = r->p[0];
	r->p++;
	r->left--;
	return true;
}

static bool rd_u16(struct rd *r, unsigned int *v)
{
	if (r->left < 2)
		return false;
	*v = (unsigned int)r->p[0] << 8 | r->p[1];
	r->p += 2;
	r->left -= 2;
	return true;
}

/* Split off the next n bytes as their own reader (a length-prefixed body). */
static bool rd_sub(struct rd *r, size_t n, struct rd *sub)
{
	if (r->left < n)
		return false;
	sub->p = r->p;
	sub->left = n;
	r->p += n;
	r->left -= n;
	return true;
}

static bool rd_vec8(struct rd *r, struct rd *sub)
{
	unsigned int n;

	return rd_u8(r, &n) && rd_sub(r, n, sub);
}

static bool rd_vec16(struct rd *r, struct rd *sub)
{
	unsigned int n;

	return rd_u16(r, &n) && rd_sub(r, n, sub);
}

/*
 * server_name: exactly one host_name entry. RFC 6066 forbids several names
 * of one type, and only host_name is defined; anything else would let the
 * agent show us one name and the server another, so it is MALFORMED.
 */
static int parse_sni(struct rd ext, struct hello_info *out)
{
	struct rd list, name;
	unsigned int type;

	if (!rd_vec16(&ext, &list) || ext.left != 0 || list.left == 0)
		return HELLO_MALFORMED;
	while (list.left) {
		if (!rd_u8(&list, &type) || !rd_vec16(&list, &name))
			return HELLO_MALFORMED;
		if (type != SNI_HOST_NAME || out->has_sni)
			return HELLO_MALFORMED;
		if (name.left == 0 || name.left >= sizeof(out->sni))
			return HELLO_MALFORMED;
		/* An embedded NUL would make "allowed.test\0.evil.test" look
		 * like allowed.test to every C string consumer. */
		if (memchr(name.p, '\0', name.left))
			return HELLO_MALFORMED;
		memcpy(out->sni, name.p, name.left);
		out->sni[name.left] = '\0';
		out->has_sni = true;
	}
	out->sni_valid = hello_hostname_valid(out->sni);
	return HELLO_OK;
}

static bool alpn_printable(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] <= 0x20 || p[i] >= 0x7f || p[i] == ',')
			return false;
	return true;
}

/*
 * ALPN: protocol names joined with ','. The string is informational (audit
 * log, interception), so names that are not printable or do not fit are
 * left out rather than truncated mid-name; the wire syntax is still
 * checked strictly.
 */
static int parse_alpn(struct rd ext, struct hello_info *out)
{
	struct rd list, name;
	size_t used = 0;

	if (!rd_vec16(&ext, &list) || ext.left != 0 || list.left == 0)
		return HELLO_MALFORMED;
	while (list.left) {
		if (!rd_vec8(&list, &name) || name.left == 0)
			return HELLO_MALFORMED;
		if (!alpn_printable(name.p, name.left))
			continue;
		/* separator + name + NUL must fit */
		if (used + (used ? 1 : 0) + name.left + 1 > sizeof(out->alpn))
			continue;
		if (used)
			out->alpn[used++] = ',';
		memcpy(out->alpn + used, name.p, name.left);
		used += name.left;
	}
	out->alpn[used] = '\0';
	out->has_alpn = true;
	return HELLO_OK;
}

static int parse_extensions(struct rd exts, struct hello_info *out)
{
	/* One bit per extension type: duplicates are MALFORMED (RFC 8446
	 * 4.2) and checking them must stay linear for hostile inputs. */
	uint64_t seen[65536 / 64];
	unsigned int type;
	struct rd ext;
	int err;

	memset(seen, 0, sizeof(seen));
	while (exts.left) {
		if (!rd_u16(&exts, &type) || !rd_vec16(&exts, &ext))
			return HELLO_MALFORMED;
		if (seen[type / 64] & (1ULL << (type % 64)))
			return HELLO_MALFORMED;
		seen[type / 64] |= 1ULL << (type % 64);

		switch (type) {
		case EXT_SERVER_NAME:
			err = parse_sni(ext, out);
			if (err)
				return err;
			break;
		case EXT_ALPN:
			err = parse_alpn(ext, out);
			if (err)
				return err;
			break;
		case EXT_ECH:
			out->has_ech = true;
			break;
		case EXT_PRE_SHARED_KEY:
			/* RFC 8446 4.2.11: MUST be the last extension. */
			if (exts.left)
				return HELLO_MALFORMED;
			break;
		default:
			break;
		}
	}
	return HELLO_OK;
}

/* body: the ClientHello message without its 4-byte handshake header. */
static int parse_client_hello(struct rd body, struct hello_info *out)
{
	struct rd v, exts;
	unsigned int ver;

	if (!rd_u16(&body, &ver) || ver >> 8 != 3)
		return HELLO_MALFORMED;
	out->legacy_version = (uint16_t)ver;
	if (!rd_sub(&body, 32, &v)) /* random */
		return HELLO_MALFORMED;
	if (!rd_vec8(&body, &v) || v.left > 32) /* legacy_session_id */
		return HELLO_MALFORMED;
	if (!rd_vec16(&body, &v) || v.left < 2 || v.left % 2) /* cipher_suites */
		return HELLO_MALFORMED;
	if (!rd_vec8(&body, &v) || v.left < 1) /* legacy_compression_methods */
		return HELLO_MALFORMED;
	/* SSL 3.0 / early TLS 1.0 hellos may end here (no extensions). */
	if (body.left == 0)
		return HELLO_OK;
	if (!rd_vec16(&body, &exts) || body.left != 0)
		return HELLO_MALFORMED;
	return parse_extensions(exts, out);
}

/*
 * Walk the records (without copying) until the handshake message is
 * complete. On HELLO_OK, *hs_total is the handshake message length
 * (header included), *consumed the bytes of records holding it, and
 * *records how many records that took.
 */
static int frame_records(const uint8_t *buf, size_t len, size_t *hs_total,
			 size_t *consumed, size_t *records)
{
	uint8_t hdr[TLS_HS_HEADER];
	size_t off = 0, got = 0, need = TLS_HS_HEADER, nrec = 0;

	while (got < need) {
		size_t rlen, take;

		if (off + TLS_RECORD_HEADER > HELLO_MAX_BYTES)
			return HELLO_TOO_LARGE;
		/* Check each header byte as soon as it is there, so that a
		 * non-TLS or broken stream is refused without waiting. */
		if (len > off && buf[off] != TLS_CT_HANDSHAKE)
			return off == 0 ? HELLO_NOT_TLS : HELLO_MALFORMED;
		if (len > off + 1 && buf[off + 1] != 3)
			return off == 0 ? HELLO_NOT_TLS : HELLO_MALFORMED;
		if (len < off + TLS_RECORD_HEADER)
			return HELLO_NEED_MORE;
		rlen = (size_t)buf[off + 3] << 8 | buf[off + 4];
		/* RFC 8446 5.1: no zero-length handshake fragments. */
		if (rlen == 0 || rlen > TLS_RECORD_MAX)
			return HELLO_MALFORMED;
		off += TLS_RECORD_HEADER;
		if (off + rlen > HELLO_MAX_BYTES)
			return HELLO_TOO_LARGE;

		/* A record may carry the rest of the 4-byte header and then
		 * the body; consume what is there, checking limits first. */
		take = rlen;
		while (take && got < TLS_HS_HEADER) {
			if (off >= len)
				return HELLO_NEED_MORE;
			hdr[got++] = buf[off++];
			take--;
			if (got == TLS_HS_HEADER) {
				if (hdr[0] != TLS_HS_CLIENT_HELLO)
					return HELLO_MALFORMED;
				need = TLS_HS_HEADER + ((size_t)hdr[1] << 16 |
							(size_t)hdr[2] << 8 | hdr[3]);
				/* It takes at least one record header per
				 * 2^14 bytes: refuse early what cannot fit. */
				if (need + TLS_RECORD_HEADER *
					    ((need + TLS_RECORD_MAX - 1) / TLS_RECORD_MAX) >
				    HELLO_MAX_BYTES)
					return HELLO_TOO_LARGE;
			}
		}
		/* The ClientHello must end with its record: a client sends
		 * nothing else in the handshake before the server answers. */
		if (got + take > need)
			return HELLO_MALFORMED;
		got += take;
		nrec++;
		if (off + take > len)
			return HELLO_NEED_MORE;
		off += take;
	}
	*hs_total = need;
	*consumed = off;
	*records = nrec;
	return HELLO_OK;
}

/* Copy the handshake fragments of already-framed records into dst. */
static void gather_records(const uint8_t *buf, uint8_t *dst, size_t hs_total)
{
	size_t off = 0, got = 0;

	while (got < hs_total) {
		size_t rlen = (size_t)buf[off + 3] << 8 | buf[off + 4];

		memcpy(dst + got, buf + off + TLS_RECORD_HEADER, rlen);
		got += rlen;
		off += TLS_RECORD_HEADER + rlen;
	}
}

int hello_parse(const uint8_t *buf, size_t len, struct hello_info *out)
{
	size_t hs_total = 0, consumed = 0, records = 0;
	uint8_t *copy = NULL;
	struct rd body;
	int ret;

	memset(out, 0, sizeof(*out));
	if (!buf || len == 0)
		return HELLO_NEED_MORE;
	ret = frame_records(buf, len, &hs_total, &consumed, &records);
	if (ret != HELLO_OK)
		return ret;

	if (records == 1) {
		/* Common case: parse in place. */
		body.p = buf + TLS_RECORD_HEADER + TLS_HS_HEADER;
	} else {
		/* hs_total < HELLO_MAX_BYTES, checked while framing. */
		copy = malloc(hs_total);
		if (!copy)
			return HELLO_MALFORMED; /* fail closed */
		gather_records(buf, copy, hs_total);
		body.p = copy + TLS_HS_HEADER;
	}
	body.left = hs_total - TLS_HS_HEADER;

	ret = parse_client_hello(body, out);
	free(copy);
	if (ret != HELLO_OK) {
		memset(out, 0, sizeof(*out));
		return ret;
	}
	out->consumed = consumed;
	return HELLO_OK;
}

bool hello_looks_like_tls(const uint8_t *buf, size_t len)
{
	if (!buf || len < 1 || buf[0] != TLS_CT_HANDSHAKE)
		return false;
	return len < 2 || buf[1] == 3;
}

static bool is_ldh(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/*
 * WHATWG URL "ends in a number": a last label that is all decimal digits or
 * 0x + hex digits makes browsers and inet_aton()-style resolvers treat the
 * whole name as an IPv4 address ("1.2.3", "0x7f.1", "2130706433"). No real
 * TLD is numeric, so such names are refused outright.
 */
static bool label_is_number(const char *s, size_t n)
{
	size_t i = 0;

	if (n >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
		for (i = 2; i < n; i++)
			if (!((s[i] >= '0' && s[i] <= '9') ||
			      (s[i] >= 'a' && s[i] <= 'f') ||
			      (s[i] >= 'A' && s[i] <= 'F')))
				return false;
		return true;
	}
	for (i = 0; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return n > 0;
}

/*
 * LDH labels of 1..63 bytes, at most 253 bytes without the optional
 * trailing dot. '_' is accepted anywhere in a label (seen in real names,
 * e.g. _dmarc or CDN hosts); leading and trailing '-' are accepted too,
 * since refusing them protects nothing. IPv4 literals in any form a
 * resolver might accept, and IPv6 literals, are refused.
 */
bool hello_hostname_valid(const char *name)
{
	struct in6_addr a6;
	struct in_addr a4;
	size_t len, i, label = 0, last_start = 0;

	if (!name)
		return false;
	len = strnlen(name, 255);
	if (len == 0 || len > 254)
		return false;
	if (name[len - 1] == '.')
		len--;
	if (len == 0 || len > 253)
		return false;
	for (i = 0; i < len; i++) {
		if (name[i] == '.') {
			if (label == 0)
				return false;
			label = 0;
			last_start = i + 1;
			continue;
		}
		if (!is_ldh(name[i]) || ++label > 63)
			return false;
	}
	if (label == 0)
		return false;
	if (label_is_number(name + last_start, len - last_start))
		return false;
	/* Belt and braces: nothing LDH should parse as an address, but the
	 * resolver's view is what matters. */
	if (inet_aton(name, &a4) || inet_pton(AF_INET6, name, &a6) == 1)
		return false;
	return true;
}
