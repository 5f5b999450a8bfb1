/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * Addresses in one form: 16 bytes, IPv4 stored v4-mapped (::ffff:a.b.c.d),
 * the same form the kernel programs use (include/egressd_shared.h).
 */
#ifndef EGR_ADDR_H
#define EGR_ADDR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct egr_addr {
	uint8_t b[16];
};

/* Special-purpose classes a name must not resolve into unless a rule names
 * the address (DNS rebinding, SSRF towards the host or the cloud). */
enum addr_class {
	ADDR_PUBLIC = 0,
	ADDR_LOOPBACK,    /* 127/8, ::1 */
	ADDR_UNSPEC,      /* 0.0.0.0/8, :: */
	ADDR_PRIVATE,     /* 10/8, 172.16/12, 192.168/16, 100.64/10, fc00::/7 */
	ADDR_LINKLOCAL,   /* 169.254/16, fe80::/10 */
	ADDR_METADATA,    /* 169.254.169.254, fd00:ec2::254 */
	ADDR_MULTICAST,   /* 224/4, ff00::/8, 255.255.255.255 */
	ADDR_RESERVED,    /* 240/4, other non-routable */
};

bool addr_is_v4(const struct egr_addr *a);
void addr_from_v4(struct egr_addr *a, uint32_t be_addr);
void addr_from_v6(struct egr_addr *a, const uint8_t v6[16]);
/* From a sockaddr_in / sockaddr_in6 (v4-mapped v6 stays v4-mapped). */
int addr_from_sockaddr(struct egr_addr *a, uint16_t *port, const struct sockaddr *sa);
/* Fill a sockaddr_in for v4-mapped addresses, else sockaddr_in6. Returns len. */
socklen_t addr_to_sockaddr(const struct egr_addr *a, uint16_t port, struct sockaddr_storage *ss);
/* Text without brackets: "192.0.2.1" or "2001:db8::1". */
const char *addr_to_str(const struct egr_addr *a, char *buf, size_t len);
/* Parse "192.0.2.1" or "2001:db8::1" (no brackets). 0 or -EINVAL. */
int addr_parse(const char *s, struct egr_addr *a);
enum addr_class addr_classify(const struct egr_addr *a);
const char *addr_class_name(enum addr_class c);
/* prefixlen counts in the 128-bit mapped space (v4 /24 == 96+24). */
bool addr_in_prefix(const struct egr_addr *a, const struct egr_addr *net, unsigned prefixlen);

#endif
