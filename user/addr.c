// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * Addresses in the kernel's form (16 bytes, IPv4 v4-mapped) and their
 * classification. The classification decides which resolved addresses a
 * name may lead to: a public name that resolves to 127.0.0.1, 10.0.0.5 or
 * the cloud metadata service is DNS rebinding / SSRF, not egress.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "addr.h"

static const uint8_t v4mapped_prefix[12] = {
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff,
};

bool addr_is_v4(const struct egr_addr *a)
{
	return memcmp(a->b, v4mapped_prefix, sizeof(v4mapped_prefix)) == 0;
}

void addr_from_v4(struct egr_addr *a, uint32_t be_addr)
{
	memcpy(a->b, v4mapped_prefix, sizeof(v4mapped_prefix));
	memcpy(a->b + 12, &be_addr, 4);
}

void addr_from_v6(struct egr_addr *a, const uint8_t v6[16])
{
	memcpy(a->b, v6, 16);
}

int addr_from_sockaddr(struct egr_addr *a, uint16_t *port, const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;

		addr_from_v4(a, sin->sin_addr.s_addr);
		if (port)
			*port = ntohs(sin->sin_port);
		return 0;
	}
	if (sa->sa_family == AF_INET6) {
		const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;

		addr_from_v6(a, sin6->sin6_addr.s6_addr);
		if (port)
			*port = ntohs(sin6->sin6_port);
		return 0;
	}
	return -EAFNOSUPPORT;
}

socklen_t addr_to_sockaddr(const struct egr_addr *a, uint16_t port, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (addr_is_v4(a)) {
		struct sockaddr_in *sin = (struct sockaddr_in *)ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		memcpy(&sin->sin_addr.s_addr, a->b + 12, 4);
		return sizeof(*sin);
	}
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

	sin6->sin6_family = AF_INET6;
	sin6->sin6_port = htons(port);
	memcpy(sin6->sin6_addr.s6_addr, a->b, 16);
	return sizeof(*sin6);
}

const char *addr_to_str(const struct egr_addr *a, char *buf, size_t len)
{
	const char *r;

	if (!len)
		return buf;
	if (addr_is_v4(a))
		r = inet_ntop(AF_INET, a->b + 12, buf, len);
	else
		r = inet_ntop(AF_INET6, a->b, buf, len);
	if (!r)
		buf[0] = '\0';
	return buf;
}

int addr_parse(const char *s, struct egr_addr *a)
{
	struct in_addr in4;
	struct in6_addr in6;

	if (!s)
		return -EINVAL;
	/* glibc's inet_pton() is strict: dotted quad only, no octal/hex
	 * forms, no zone ids, so "0177.1" can never sneak in as 127.0.0.1. */
	if (inet_pton(AF_INET, s, &in4) == 1) {
		addr_from_v4(a, in4.s_addr);
		return 0;
	}
	if (inet_pton(AF_INET6, s, &in6) == 1) {
		addr_from_v6(a, in6.s6_addr);
		return 0;
	}
	return -EINVAL;
}

static bool v4_in(const uint8_t *v4, uint32_t net, unsigned bits)
{
	uint32_t x = (uint32_t)v4[0] << 24 | (uint32_t)v4[1] << 16 |
		     (uint32_t)v4[2] << 8 | v4[3];
	uint32_t mask = bits ? ~0U << (32 - bits) : 0;

	return (x & mask) == (net & mask);
}

#define V4(a, b, c, d) ((uint32_t)(a) << 24 | (uint32_t)(b) << 16 | (uint32_t)(c) << 8 | (d))

static enum addr_class classify_v4(const uint8_t *v4)
{
	if (v4_in(v4, V4(0, 0, 0, 0), 8))
		return ADDR_UNSPEC;
	if (v4_in(v4, V4(127, 0, 0, 0), 8))
		return ADDR_LOOPBACK;
	/* The metadata address is link-local; check it first so the audit log
	 * says what was actually attempted. */
	if (v4_in(v4, V4(169, 254, 169, 254), 32))
		return ADDR_METADATA;
	if (v4_in(v4, V4(169, 254, 0, 0), 16))
		return ADDR_LINKLOCAL;
	if (v4_in(v4, V4(10, 0, 0, 0), 8) ||
	    v4_in(v4, V4(172, 16, 0, 0), 12) ||
	    v4_in(v4, V4(192, 168, 0, 0), 16) ||
	    v4_in(v4, V4(100, 64, 0, 0), 10))  /* CGNAT: other tenants */
		return ADDR_PRIVATE;
	if (v4_in(v4, V4(255, 255, 255, 255), 32))
		return ADDR_MULTICAST; /* limited broadcast */
	if (v4_in(v4, V4(224, 0, 0, 0), 4))
		return ADDR_MULTICAST;
	if (v4_in(v4, V4(240, 0, 0, 0), 4))
		return ADDR_RESERVED;
	/* IETF protocol assignments, 6to4 relay anycast, benchmarking nets:
	 * nothing an agent legitimately reaches by name. The documentation
	 * nets (192.0.2/24, 198.51.100/24, 203.0.113/24) stay public on
	 * purpose: the test bed uses them as "the internet". */
	if (v4_in(v4, V4(192, 0, 0, 0), 24) ||
	    v4_in(v4, V4(192, 88, 99, 0), 24) ||
	    v4_in(v4, V4(198, 18, 0, 0), 15))
		return ADDR_RESERVED;
	return ADDR_PUBLIC;
}

static bool v6_prefix(const uint8_t *b, const uint8_t *p, unsigned bits)
{
	unsigned full = bits / 8, rest = bits % 8;

	if (memcmp(b, p, full))
		return false;
	if (rest) {
		uint8_t mask = (uint8_t)(0xff << (8 - rest));

		if ((b[full] & mask) != (p[full] & mask))
			return false;
	}
	return true;
}

enum addr_class addr_classify(const struct egr_addr *a)
{
	static const uint8_t zero[16];
	static const uint8_t loop6[16] = { [15] = 1 };
	static const uint8_t meta6[16] = { 0xfd, 0x00, 0x0e, 0xc2, [15] = 0x54, [14] = 0x02 };
	static const uint8_t nat64[12] = { 0x00, 0x64, 0xff, 0x9b };
	static const uint8_t nat64_local[6] = { 0x00, 0x64, 0xff, 0x9b, 0x00, 0x01 };
	static const uint8_t siit[12] = { [8] = 0xff, [9] = 0xff };
	static const uint8_t discard[8] = { 0x01, 0x00 };
	static const uint8_t doc[4] = { 0x20, 0x01, 0x0d, 0xb8 };
	const uint8_t *b = a->b;

	if (addr_is_v4(a))
		return classify_v4(b + 12);
	if (!memcmp(b, zero, 16))
		return ADDR_UNSPEC;
	if (!memcmp(b, loop6, 16))
		return ADDR_LOOPBACK;
	/* Forms that embed an IPv4 address the packet may end up at: NAT64
	 * (64:ff9b::a.b.c.d reaches a.b.c.d through the gateway) and SIIT
	 * (::ffff:0:a.b.c.d). 64:ff9b::127.0.0.1 must not pass as public. */
	if (!memcmp(b, nat64, 12) || !memcmp(b, siit, 12))
		return classify_v4(b + 12);
	if (v6_prefix(b, nat64_local, 48))
		return ADDR_PRIVATE;
	/* Deprecated IPv4-compatible ::a.b.c.d and the rest of ::/8. */
	if (b[0] == 0)
		return ADDR_RESERVED;
	if (v6_prefix(b, discard, 64))
		return ADDR_RESERVED;
	if (v6_prefix(b, doc, 32))
		return ADDR_PUBLIC;
	/* 6to4 2002:a.b.c.d::/48 is routed to a.b.c.d's network. */
	if (b[0] == 0x20 && b[1] == 0x02)
		return classify_v4(b + 2);
	if (!memcmp(b, meta6, 16))
		return ADDR_METADATA;
	if ((b[0] & 0xfe) == 0xfc)
		return ADDR_PRIVATE; /* fc00::/7 ULA */
	if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80)
		return ADDR_LINKLOCAL; /* fe80::/10 */
	if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0)
		return ADDR_PRIVATE; /* fec0::/10, deprecated site-local */
	if (b[0] == 0xff)
		return ADDR_MULTICAST;
	/* Global unicast is 2000::/3; everything else is unassigned. */
	if ((b[0] & 0xe0) != 0x20)
		return ADDR_RESERVED;
	return ADDR_PUBLIC;
}

const char *addr_class_name(enum addr_class c)
{
	switch (c) {
	case ADDR_PUBLIC:
		return "public";
	case ADDR_LOOPBACK:
		return "loopback";
	case ADDR_UNSPEC:
		return "unspecified";
	case ADDR_PRIVATE:
		return "private";
	case ADDR_LINKLOCAL:
		return "link-local";
	case ADDR_METADATA:
		return "metadata";
	case ADDR_MULTICAST:
		return "multicast";
	case ADDR_RESERVED:
		return "reserved";
	}
	return "unknown";
}

bool addr_in_prefix(const struct egr_addr *a, const struct egr_addr *net, unsigned prefixlen)
{
	if (prefixlen > 128)
		return false;
	return v6_prefix(a->b, net->b, prefixlen);
}
