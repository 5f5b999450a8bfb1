// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * user/dnsmsg.c: queries as real clients send them, upstream answers as
 * dnsmasq sends them, and the hostile shapes (bad counts, truncation at
 * every offset, compression loops, forward pointers, pointers in queries,
 * over-long labels and names, dots/NULs inside labels, wrong rdlength).
 *
 * The cap_* arrays were captured byte for byte from dig 9.18, glibc
 * (getent ahosts) and Node 20 (dns.resolve4/6, c-ares) talking through a
 * recording relay to dnsmasq 2.90, all inside a private network namespace
 * (unshare -n) on its own loopback. dnsmasq had:
 *   --host-record=allowed.test,192.0.2.10,2001:db8::10,300
 *   --host-record=cdn.allowed.test,192.0.2.20,2001:db8::20,60
 *   --cname=www.allowed.test,edge.allowed.test,120
 *   --cname=edge.allowed.test,cdn.allowed.test,90
 *   --txt-record=allowed.test,v=spf1 -all,hello
 *   --mx-host=allowed.test,mail.allowed.test,10
 *   --host-record=mail.allowed.test,192.0.2.25  --local=/test/
 * The same bytes are the fuzz seeds in tests/fuzz/corpus/dnsmsg/.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "dnsmsg.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static const uint8_t cap_q_dig_noedns_a[] = {
	0x08, 0x00, 0x01, 0x20, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x07, 0x61, 0x6c, 0x6c, 0x6f, 0x77, 0x65, 0x64, 0x04, 0x74, 0x65, 0x73,
	0x74, 0x00, 0x00, 0x01, 0x00, 0x01
};
static const uint8_t cap_q_dig_edns_aaaa[] = {
	0x4c, 0xae, 0x01, 0x20, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
	0x07, 0x61, 0x6c, 0x6c, 0x6f, 0x77, 0x65, 0x64, 0x04, 0x74, 0x65, 0x73,
	0x74, 0x00, 0x00, 0x1c, 0x00, 0x01, 0x00, 0x00, 0x29, 0x04, 0xd0, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x0a, 0x00, 0x08, 0x2c, 0x2b, 0x47,
	0x69, 0xca, 0x9e, 0x9d, 0xf4
};
static const uint8_t cap_q_dig_upper_cname[] = {
	0x3d, 0x74, 0x01, 0x20, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
	0x03, 0x57, 0x57, 0x57, 0x07, 0x41, 0x6c, 0x6c, 0x6f, 0x77, 0x65, 0x64,
	0x04, 0x54, 0x45, 0x53, 0x54, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00,
	0x29, 0x04, 0xd0, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x0a, 0x00,
	0x08, 0x9b, 0x4b, 0x65, 0x1e, 0xc5, 0x7e, 0x6d, 0x42
};
static const uint8_t cap_q_glibc_1[] = {
	0x1a, 0x2e, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x03, 0x77, 0x77, 0x77, 0x07, 0x61, 0x6c, 0x6c, 0x6f, 0x77, 0x65, 0x64,
	0x04, 0x74, 0x65, 0x73, 0x74, 0x00, 0x00, 0x01, 0x00, 0x01
};
static const uint8_t cap_q_glibc_2[] = {
	0xa5, 0x22, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x03, 0x77, 0x77, 0x77, 0x07, 0x61, 0x6c, 0x6c, 0x6f, 0x77, 0x65, 0x64,
	0x04, 0x74, 0x65, 0x73, 0x74, 0x00, 0x00, 0x1c, 0x00, 0x01
};
static const uint8_t cap_q_node_resolve4[] = {
	0x93, 0xd9, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x03, 0x63, 0x64, 0x6e, 0x07, 0x61, 0x6c, 0x6c, 0x6f, 0x77, 0x65, 0x64,
	0x04, 0x74, 0x65, 0x73, 0x74, 0x00, 0x00, 0x01, 0x00, 0x01
};
static const uint8_t cap_q_node_resolve6[] = {
	0xf6, 0xf7, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x07, 0x61, 0x6c, 0x6c, 0x6f, 0x77, 0x65, 0x64, 0x04, 0x74, 0x65, 0x73,
	0x74, 0x00, 0x00, 0x1c, 0x00, 0x01
};
static const uint8_t cap_q_dig_txt[] = {
	0x27, 0x55, 0x01, 0x20, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x07, 0x61, 0x6c, 0x6c, 0x6f, 0x77, 0x65, 0x64, 0x04, 0x74, 0x65, 0x73,
	0x74, 0x00, 0x00, 0x10, 0x00, 0x01
};
static const uint8_t cap_q_dig_mx[] = {
	0x2b, 0x47, 0x01, 0x20, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
	0x07, 0x61, 0x6c, 0x6c, 0x6f, 0x77, 0x65, 0x64, 0x04, 0x74, 0x65, 0x73,
	0x74, 0x00, 0x00, 0x0f, 0x00, 0x01, 0x00, 0x00, 0x29, 0x04, 0xd0, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x0a, 0x00, 0x08, 0x5f, 0xbc, 0x31,
	0xb9, 0x68, 0x00, 0xbe, 0x30
};
static const uint8_t cap_q_dig_nx[] = {
	0x5c, 0xf1, 0x01, 0x20, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
	0x04, 0x65, 0x76, 0x69, 0x6c, 0x04, 0x74, 0x65, 0x73, 0x74, 0x00, 0x00,
	0x01, 0x00, 0x01, 0x00, 0x00, 0x29, 0x04, 0xd0, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x0c, 0x00, 0x0a, 0x00, 0x08, 0xad, 0x84, 0x9a, 0x4d, 0x90, 0x82,
	0x61, 0x9b
};
static const uint8_t cap_r_dig_upper_cname[] = {
	0x3d, 0x74, 0x85, 0x80, 0x00, 0x01, 0x00, 0x03, 0x00, 0x00, 0x00, 0x01,
	0x03, 0x57, 0x57, 0x57, 0x07, 0x41, 0x6c, 0x6c, 0x6f, 0x77, 0x65, 0x64,
	0x04, 0x54, 0x45, 0x53, 0x54, 0x00, 0x00, 0x01, 0x00, 0x01, 0xc0, 0x0c,
	0x00, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00, 0x78, 0x00, 0x13, 0x04, 0x65,
	0x64, 0x67, 0x65, 0x07, 0x61, 0x6c, 0x6c, 0x6f, 0x77, 0x65, 0x64, 0x04,
	0x74, 0x65, 0x73, 0x74, 0x00, 0xc0, 0x2e, 0x00, 0x05, 0x00, 0x01, 0x00,
	0x00, 0x00, 0x5a, 0x00, 0x12, 0x03, 0x63, 0x64, 0x6e, 0x07, 0x61, 0x6c,
	0x6c, 0x6f, 0x77, 0x65, 0x64, 0x04, 0x74, 0x65, 0x73, 0x74, 0x00, 0xc0,
	0x4d, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x3c, 0x00, 0x04, 0xc0,
	0x00, 0x02, 0x14, 0x00, 0x00, 0x29, 0x04, 0xd0, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00
};
static const uint8_t cap_r_glibc_2[] = {
	0xa5, 0x22, 0x85, 0x80, 0x00, 0x01, 0x00, 0x03, 0x00, 0x00, 0x00, 0x00,
	0x03, 0x77, 0x77, 0x77, 0x07, 0x61, 0x6c, 0x6c, 0x6f, 0x77, 0x65, 0x64,
	0x04, 0x74, 0x65, 0x73, 0x74, 0x00, 0x00, 0x1c, 0x00, 0x01, 0xc0, 0x0c,
	0x00, 0x05, 0x00, 0x01, 0x00, 0x00, 0x00, 0x78, 0x00, 0x13, 0x04, 0x65,
	0x64, 0x67, 0x65, 0x07, 0x61, 0x6c, 0x6c, 0x6f, 0x77, 0x65, 0x64, 0x04,
	0x74, 0x65, 0x73, 0x74, 0x00, 0xc0, 0x2e, 0x00, 0x05, 0x00, 0x01, 0x00,
	0x00, 0x00, 0x5a, 0x00, 0x12, 0x03, 0x63, 0x64, 0x6e, 0x07, 0x61, 0x6c,
	0x6c, 0x6f, 0x77, 0x65, 0x64, 0x04, 0x74, 0x65, 0x73, 0x74, 0x00, 0xc0,
	0x4d, 0x00, 0x1c, 0x00, 0x01, 0x00, 0x00, 0x00, 0x3c, 0x00, 0x10, 0x20,
	0x01, 0x0d, 0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00, 0x20
};
static const uint8_t cap_r_dig_txt[] = {
	0x27, 0x55, 0x85, 0x80, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
	0x07, 0x61, 0x6c, 0x6c, 0x6f, 0x77, 0x65, 0x64, 0x04, 0x74, 0x65, 0x73,
	0x74, 0x00, 0x00, 0x10, 0x00, 0x01, 0xc0, 0x0c, 0x00, 0x10, 0x00, 0x01,
	0x00, 0x00, 0x01, 0x2c, 0x00, 0x12, 0x0b, 0x76, 0x3d, 0x73, 0x70, 0x66,
	0x31, 0x20, 0x2d, 0x61, 0x6c, 0x6c, 0x05, 0x68, 0x65, 0x6c, 0x6c, 0x6f
};
static const uint8_t cap_r_dig_mx[] = {
	0x2b, 0x47, 0x85, 0x80, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x02,
	0x07, 0x61, 0x6c, 0x6c, 0x6f, 0x77, 0x65, 0x64, 0x04, 0x74, 0x65, 0x73,
	0x74, 0x00, 0x00, 0x0f, 0x00, 0x01, 0xc0, 0x0c, 0x00, 0x0f, 0x00, 0x01,
	0x00, 0x00, 0x01, 0x2c, 0x00, 0x15, 0x00, 0x0a, 0x04, 0x6d, 0x61, 0x69,
	0x6c, 0x07, 0x61, 0x6c, 0x6c, 0x6f, 0x77, 0x65, 0x64, 0x04, 0x74, 0x65,
	0x73, 0x74, 0x00, 0xc0, 0x2c, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x01,
	0x2c, 0x00, 0x04, 0xc0, 0x00, 0x02, 0x19, 0x00, 0x00, 0x29, 0x04, 0xd0,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00
};
static const uint8_t cap_r_dig_nx[] = {
	0x5c, 0xf1, 0x81, 0x83, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
	0x04, 0x65, 0x76, 0x69, 0x6c, 0x04, 0x74, 0x65, 0x73, 0x74, 0x00, 0x00,
	0x01, 0x00, 0x01, 0x00, 0x00, 0x29, 0x04, 0xd0, 0x00, 0x00, 0x00, 0x00,
	0x00, 0x00
};
static const uint8_t cap_r_node_resolve6[] = {
	0xf6, 0xf7, 0x85, 0x80, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,
	0x07, 0x61, 0x6c, 0x6c, 0x6f, 0x77, 0x65, 0x64, 0x04, 0x74, 0x65, 0x73,
	0x74, 0x00, 0x00, 0x1c, 0x00, 0x01, 0xc0, 0x0c, 0x00, 0x1c, 0x00, 0x01,
	0x00, 0x00, 0x01, 0x2c, 0x00, 0x10, 0x20, 0x01, 0x0d, 0xb8, 0x00, 0x00,
	0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10
};

/* ---- queries ---------------------------------------------------------- */

static const struct {
	const char *what;
	const uint8_t *buf;
	size_t len;
	uint16_t id;
	const char *qname;
	uint16_t qtype;
	bool has_edns;
	uint16_t udp;
	size_t question_len;
} cap_queries[] = {
	{ "dig +noedns A", cap_q_dig_noedns_a, sizeof(cap_q_dig_noedns_a),
	  2048, "allowed.test", DNSMSG_A, false, 0, 18 },
	{ "dig AAAA, EDNS with cookie", cap_q_dig_edns_aaaa, sizeof(cap_q_dig_edns_aaaa),
	  19630, "allowed.test", DNSMSG_AAAA, true, 1232, 18 },
	{ "dig WWW.Allowed.TEST (lowercased)", cap_q_dig_upper_cname,
	  sizeof(cap_q_dig_upper_cname), 15732, "www.allowed.test", DNSMSG_A, true, 1232, 22 },
	{ "glibc getaddrinfo A", cap_q_glibc_1, sizeof(cap_q_glibc_1),
	  6702, "www.allowed.test", DNSMSG_A, false, 0, 22 },
	{ "glibc getaddrinfo AAAA", cap_q_glibc_2, sizeof(cap_q_glibc_2),
	  42274, "www.allowed.test", DNSMSG_AAAA, false, 0, 22 },
	{ "node dns.resolve4", cap_q_node_resolve4, sizeof(cap_q_node_resolve4),
	  37849, "cdn.allowed.test", DNSMSG_A, false, 0, 22 },
};

static void test_captured_queries(void **state)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cap_queries); i++) {
		struct dnsmsg_query q;

		if (dnsmsg_parse_query(cap_queries[i].buf, cap_queries[i].len, &q))
			fail_msg("%s: rejected", cap_queries[i].what);
		assert_int_equal(q.id, cap_queries[i].id);
		assert_string_equal(q.qname, cap_queries[i].qname);
		assert_int_equal(q.qtype, cap_queries[i].qtype);
		assert_int_equal(q.qclass, 1);
		assert_int_equal(q.has_edns, cap_queries[i].has_edns);
		assert_int_equal(q.edns_udp_size, cap_queries[i].udp);
		assert_int_equal(q.question_len, cap_queries[i].question_len);
		assert_int_equal(q.longest_label, 7); /* "allowed" */
		assert_int_equal(q.flags & 0x0100, 0x0100); /* RD as sent */
		/* a query is never an answer */
		{
			struct dnsmsg_answer a;

			assert_int_equal(dnsmsg_parse_answer(cap_queries[i].buf,
							     cap_queries[i].len, &a), -EINVAL);
		}
	}
}

/* Byte-array cases. The header is id 0x1234 with the given flags/counts;
 * QA is the question "a.test" A IN (offsets 12..23). */
#define B(...) (const uint8_t[]){ __VA_ARGS__ }, sizeof((const uint8_t[]){ __VA_ARGS__ })
#define HDR(fhi, flo, qd, an, ns, ar) 0x12, 0x34, fhi, flo, 0, qd, 0, an, 0, ns, 0, ar
#define QA 1, 'a', 4, 't', 'e', 's', 't', 0, 0, 1, 0, 1
#define OPT(udphi, udplo, rdlen) 0, 0, 41, udphi, udplo, 0, 0, 0, 0, 0, rdlen
#define L63 63, 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', \
	'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', \
	'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', \
	'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', 'x', \
	'x', 'x', 'x', 'x', 'x'
#define L61 61, 'y', 'y', 'y', 'y', 'y', 'y', 'y', 'y', 'y', 'y', 'y', 'y', 'y', \
	'y', 'y', 'y', 'y', 'y', 'y', 'y', 'y', 'y', 'y', 'y', 'y', 'y', 'y', 'y', \
	'y', 'y', 'y', 'y', 'y', 'y', 'y', 'y', 'y', 'y', 'y', 'y', 'y', 'y', 'y', \
	'y', 'y', 'y', 'y', 'y', 'y', 'y', 'y', 'y', 'y', 'y', 'y', 'y', 'y', 'y', \
	'y', 'y', 'y'

static const struct {
	const char *what;
	const uint8_t *buf;
	size_t len;
	int err;
	const char *qname;   /* when err == 0 */
	size_t longest_label;
} query_cases[] = {
	{ "plain", B(HDR(1, 0, 1, 0, 0, 0), QA), 0, "a.test", 4 },
	{ "uppercase", B(HDR(1, 0, 1, 0, 0, 0), 1, 'A', 4, 'T', 'e', 'S', 't', 0, 0, 1, 0, 1),
	  0, "a.test", 4 },
	{ "root", B(HDR(0, 0, 1, 0, 0, 0), 0, 0, 2, 0, 1), 0, "", 0 },
	{ "underscore and hyphen", B(HDR(1, 0, 1, 0, 0, 0), 6, '_', 'd', 'm', 'a', 'r', 'c',
				     3, 'a', '-', 'b', 0, 0, 16, 0, 1), 0, "_dmarc.a-b", 6 },
	{ "EDNS, no options", B(HDR(1, 0, 1, 0, 0, 1), QA, OPT(0x10, 0, 0)), 0, "a.test", 4 },
	{ "EDNS, one option", B(HDR(1, 0, 1, 0, 0, 1), QA, OPT(2, 0, 6), 0, 10, 0, 2, 0xab, 0xcd),
	  0, "a.test", 4 },
	{ "label of 63", B(HDR(1, 0, 1, 0, 0, 0), L63, 0, 0, 1, 0, 1), 0,
	  "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", 63 },
	{ "name of 255 wire bytes", B(HDR(1, 0, 1, 0, 0, 0), L63, L63, L63, L61, 0, 0, 1, 0, 1),
	  0, NULL, 63 },
	{ "empty", B(0), -EINVAL, NULL, 0 },
	{ "header only", B(HDR(1, 0, 1, 0, 0, 0)), -EINVAL, NULL, 0 },
	{ "QR set", B(HDR(0x81, 0x80, 1, 0, 0, 0), QA), -EINVAL, NULL, 0 },
	{ "opcode IQUERY", B(HDR(0x08, 0, 1, 0, 0, 0), QA), -EINVAL, NULL, 0 },
	{ "opcode UPDATE", B(HDR(0x28, 0, 1, 0, 0, 0), QA), -EINVAL, NULL, 0 },
	{ "no question", B(HDR(1, 0, 0, 0, 0, 0)), -EINVAL, NULL, 0 },
	{ "two questions", B(HDR(1, 0, 2, 0, 0, 0), QA, QA), -EINVAL, NULL, 0 },
	{ "answer record", B(HDR(1, 0, 1, 1, 0, 0), QA, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4),
	  -EINVAL, NULL, 0 },
	{ "authority record", B(HDR(1, 0, 1, 0, 1, 0), QA, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4),
	  -EINVAL, NULL, 0 },
	{ "two additional", B(HDR(1, 0, 1, 0, 0, 2), QA, OPT(2, 0, 0), OPT(2, 0, 0)), -EINVAL, NULL, 0 },
	{ "additional is not OPT", B(HDR(1, 0, 1, 0, 0, 1), QA, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 4, 1, 2, 3, 4),
	  -EINVAL, NULL, 0 },
	{ "OPT with a name", B(HDR(1, 0, 1, 0, 0, 1), QA, 1, 'a', 0, 0, 41, 2, 0, 0, 0, 0, 0, 0, 0),
	  -EINVAL, NULL, 0 },
	{ "OPT rdata past end", B(HDR(1, 0, 1, 0, 0, 1), QA, OPT(2, 0, 4), 0, 10, 0),
	  -EINVAL, NULL, 0 },
	{ "OPT option past rdata", B(HDR(1, 0, 1, 0, 0, 1), QA, OPT(2, 0, 6), 0, 10, 0, 3, 1, 2),
	  -EINVAL, NULL, 0 },
	{ "counted OPT missing", B(HDR(1, 0, 1, 0, 0, 1), QA), -EINVAL, NULL, 0 },
	{ "ARCOUNT 2, nothing there", B(HDR(1, 0, 1, 0, 0, 2), QA), -EINVAL, NULL, 0 },
	{ "trailing byte", B(HDR(1, 0, 1, 0, 0, 0), QA, 0), -EINVAL, NULL, 0 },
	{ "pointer to header", B(HDR(1, 0, 1, 0, 0, 0), 0xc0, 0x00, 0, 1, 0, 1), -EINVAL, NULL, 0 },
	{ "pointer after label", B(HDR(1, 0, 1, 0, 0, 0), 1, 'a', 0xc0, 0x0c, 0, 1, 0, 1), -EINVAL, NULL, 0 },
	{ "extended label type", B(HDR(1, 0, 1, 0, 0, 0), 0x41, 0, 0, 0, 1, 0, 1), -EINVAL, NULL, 0 },
	{ "label type 0x80", B(HDR(1, 0, 1, 0, 0, 0), 0x81, 'a', 0, 0, 1, 0, 1), -EINVAL, NULL, 0 },
	{ "label of 64", B(HDR(1, 0, 1, 0, 0, 0), 64, L63, 0, 0, 1, 0, 1), -EINVAL, NULL, 0 },
	{ "name of 256 wire bytes", B(HDR(1, 0, 1, 0, 0, 0), L63, L63, L61, L61, 2, 'z', 'z', 0,
				      0, 1, 0, 1),
	  -EINVAL, NULL, 0 },
	{ "name of 257 wire bytes", B(HDR(1, 0, 1, 0, 0, 0), L63, L63, L63, L63, 0, 0, 1, 0, 1),
	  -EINVAL, NULL, 0 },
	{ "dot inside label", B(HDR(1, 0, 1, 0, 0, 0), 3, 'a', '.', 'b', 4, 't', 'e', 's', 't', 0,
				0, 1, 0, 1), -EINVAL, NULL, 0 },
	{ "NUL inside label", B(HDR(1, 0, 1, 0, 0, 0), 4, 'e', 'v', 'i', 0, 4, 't', 'e', 's', 't', 0,
				0, 1, 0, 1), -EINVAL, NULL, 0 },
	{ "space inside label", B(HDR(1, 0, 1, 0, 0, 0), 3, 'a', ' ', 'b', 0, 0, 1, 0, 1), -EINVAL, NULL, 0 },
	{ "control byte", B(HDR(1, 0, 1, 0, 0, 0), 2, 'a', 0x1b, 0, 0, 1, 0, 1), -EINVAL, NULL, 0 },
	{ "DEL", B(HDR(1, 0, 1, 0, 0, 0), 2, 'a', 0x7f, 0, 0, 1, 0, 1), -EINVAL, NULL, 0 },
	{ "high byte", B(HDR(1, 0, 1, 0, 0, 0), 2, 0xc3, 0xa9, 0, 0, 1, 0, 1), -EINVAL, NULL, 0 },
	{ "label past end", B(HDR(1, 0, 1, 0, 0, 0), 9, 'a', 'b'), -EINVAL, NULL, 0 },
	{ "no root label", B(HDR(1, 0, 1, 0, 0, 0), 1, 'a'), -EINVAL, NULL, 0 },
	{ "qclass cut", B(HDR(1, 0, 1, 0, 0, 0), 1, 'a', 0, 0, 1, 0), -EINVAL, NULL, 0 },
};

static void test_query_cases(void **state)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(query_cases); i++) {
		struct dnsmsg_query q;
		int err = dnsmsg_parse_query(query_cases[i].buf, query_cases[i].len, &q);

		if (err != query_cases[i].err)
			fail_msg("%s: got %d, want %d", query_cases[i].what, err,
				 query_cases[i].err);
		if (err) {
			/* nothing half-parsed is left behind */
			assert_string_equal(q.qname, "");
			assert_int_equal(q.question_len, 0);
			continue;
		}
		assert_int_equal(q.id, 0x1234);
		if (query_cases[i].qname)
			assert_string_equal(q.qname, query_cases[i].qname);
		assert_int_equal(q.longest_label, query_cases[i].longest_label);
	}
}

static void test_query_edns_and_long_name(void **state)
{
	static const uint8_t edns[] = { HDR(1, 0, 1, 0, 0, 1), QA, OPT(0x04, 0xd0, 0) };
	static const uint8_t longname[] = { HDR(1, 0, 1, 0, 0, 0), L63, L63, L63, L61, 0,
					    0, 1, 0, 1 };
	struct dnsmsg_query q;

	assert_int_equal(dnsmsg_parse_query(edns, sizeof(edns), &q), 0);
	assert_true(q.has_edns);
	assert_int_equal(q.edns_udp_size, 1232);
	assert_int_equal(q.question_len, 12);

	assert_int_equal(dnsmsg_parse_query(longname, sizeof(longname), &q), 0);
	assert_int_equal(strlen(q.qname), 253); /* the longest presentation form */
	assert_int_equal(q.question_len, 255 + 4);
	assert_int_equal(q.qname[63], '.');
	assert_int_equal(q.qname[252], 'y');
}

/* A query built from text the way a stub resolver would, in every case. */
static void test_query_built(void **state)
{
	static const struct {
		const char *name, *want;
		uint16_t qtype;
	} cases[] = {
		{ "Example.COM", "example.com", DNSMSG_A },
		{ "api.GitHub.com.", "api.github.com", DNSMSG_AAAA },
		{ "x.y.z.allowed.test", "x.y.z.allowed.test", DNSMSG_HTTPS },
		{ "", "", DNSMSG_NS },
	};
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		uint8_t buf[512] = { 0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0 };
		struct dnsmsg_query q;
		int n = dnsmsg_encode_name(cases[i].name, buf + 12, sizeof(buf) - 16);

		assert_true(n > 0);
		buf[12 + n] = cases[i].qtype >> 8;
		buf[13 + n] = cases[i].qtype & 0xff;
		buf[14 + n] = 0;
		buf[15 + n] = 1;
		assert_int_equal(dnsmsg_parse_query(buf, 16 + (size_t)n, &q), 0);
		assert_string_equal(q.qname, cases[i].want);
		assert_int_equal(q.qtype, cases[i].qtype);
		assert_int_equal(q.id, 0xbeef);
		assert_int_equal(q.question_len, (size_t)n + 4);
	}
}

/* ---- answers ---------------------------------------------------------- */

struct want_rr {
	const char *name;
	uint16_t type;
	uint32_t ttl;
	const char *data; /* address text or CNAME target */
};

static void check_rrs(const char *what, const struct dnsmsg_answer *a,
		      const struct want_rr *want, size_t n)
{
	size_t i;

	if (a->n_rr != n)
		fail_msg("%s: %zu records, want %zu", what, a->n_rr, n);
	for (i = 0; i < n; i++) {
		const struct dnsmsg_rr *rr = &a->rr[i];
		char buf[64];

		assert_string_equal(rr->name, want[i].name);
		assert_int_equal(rr->type, want[i].type);
		assert_int_equal(rr->ttl, want[i].ttl);
		if (want[i].type == DNSMSG_CNAME)
			assert_string_equal(rr->target, want[i].data);
		else
			assert_string_equal(addr_to_str(&rr->addr, buf, sizeof(buf)),
					    want[i].data);
	}
}

static const struct want_rr chain_a[] = {
	{ "www.allowed.test", DNSMSG_CNAME, 120, "edge.allowed.test" },
	{ "edge.allowed.test", DNSMSG_CNAME, 90, "cdn.allowed.test" },
	{ "cdn.allowed.test", DNSMSG_A, 60, "192.0.2.20" },
};
static const struct want_rr chain_aaaa[] = {
	{ "www.allowed.test", DNSMSG_CNAME, 120, "edge.allowed.test" },
	{ "edge.allowed.test", DNSMSG_CNAME, 90, "cdn.allowed.test" },
	{ "cdn.allowed.test", DNSMSG_AAAA, 60, "2001:db8::20" },
};
static const struct want_rr one_aaaa[] = {
	{ "allowed.test", DNSMSG_AAAA, 300, "2001:db8::10" },
};

static const struct {
	const char *what;
	const uint8_t *buf;
	size_t len;
	uint16_t id;
	uint8_t rcode;
	const char *qname;
	uint16_t qtype;
	const struct want_rr *rr;
	size_t n_rr;
} cap_answers[] = {
	{ "CNAME chain + A (dig, EDNS)", cap_r_dig_upper_cname, sizeof(cap_r_dig_upper_cname),
	  15732, 0, "www.allowed.test", DNSMSG_A, chain_a, ARRAY_SIZE(chain_a) },
	{ "CNAME chain + AAAA (glibc)", cap_r_glibc_2, sizeof(cap_r_glibc_2),
	  42274, 0, "www.allowed.test", DNSMSG_AAAA, chain_aaaa, ARRAY_SIZE(chain_aaaa) },
	{ "AAAA (node)", cap_r_node_resolve6, sizeof(cap_r_node_resolve6),
	  63223, 0, "allowed.test", DNSMSG_AAAA, one_aaaa, 1 },
	/* TXT is skipped */
	{ "TXT", cap_r_dig_txt, sizeof(cap_r_dig_txt), 10069, 0, "allowed.test",
	  DNSMSG_TXT, NULL, 0 },
	/* MX skipped; the glue A in the additional section is not an answer */
	{ "MX + additional A + OPT", cap_r_dig_mx, sizeof(cap_r_dig_mx), 11079, 0,
	  "allowed.test", DNSMSG_MX, NULL, 0 },
	{ "NXDOMAIN", cap_r_dig_nx, sizeof(cap_r_dig_nx), 23793, DNSMSG_NXDOMAIN,
	  "evil.test", DNSMSG_A, NULL, 0 },
};

static void test_captured_answers(void **state)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cap_answers); i++) {
		struct dnsmsg_answer a;
		struct dnsmsg_query q;

		if (dnsmsg_parse_answer(cap_answers[i].buf, cap_answers[i].len, &a))
			fail_msg("%s: rejected", cap_answers[i].what);
		assert_int_equal(a.id, cap_answers[i].id);
		assert_int_equal(a.rcode, cap_answers[i].rcode);
		assert_false(a.truncated);
		assert_string_equal(a.qname, cap_answers[i].qname);
		assert_int_equal(a.qtype, cap_answers[i].qtype);
		check_rrs(cap_answers[i].what, &a, cap_answers[i].rr, cap_answers[i].n_rr);
		assert_int_equal(dnsmsg_parse_query(cap_answers[i].buf, cap_answers[i].len, &q),
				 -EINVAL);
	}
}

/* Answer byte cases: question "a.test" A at 12..23, records from 24. */
#define RR_A(ttl3) 0, 1, 0, 1, 0, 0, 0, ttl3, 0, 4
static const struct {
	const char *what;
	const uint8_t *buf;
	size_t len;
	int err;
	size_t n_rr;
	const char *name0;   /* first record's owner when n_rr */
} answer_cases[] = {
	{ "A via pointer to question", B(HDR(0x81, 0x80, 1, 1, 0, 0), QA, 0xc0, 12, RR_A(60), 192, 0, 2, 1),
	  0, 1, "a.test" },
	{ "label + pointer to a suffix", B(HDR(0x81, 0x80, 1, 1, 0, 0), QA, 1, 'X', 0xc0, 14, RR_A(60),
					  192, 0, 2, 1), 0, 1, "x.test" },
	{ "A class CH is skipped", B(HDR(0x81, 0x80, 1, 1, 0, 0), QA, 0xc0, 12, 0, 1, 0, 3, 0, 0, 0, 1,
				     0, 4, 1, 2, 3, 4), 0, 0, NULL },
	{ "FORMERR without question", B(HDR(0x80, 0x81, 0, 0, 0, 0)), 0, 0, NULL },
	{ "A rdlength 5", B(HDR(0x81, 0x80, 1, 1, 0, 0), QA, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 1, 0, 5,
			    192, 0, 2, 1, 0), -EINVAL, 0, NULL },
	{ "A rdlength 3", B(HDR(0x81, 0x80, 1, 1, 0, 0), QA, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 1, 0, 3,
			    192, 0, 2), -EINVAL, 0, NULL },
	{ "AAAA rdlength 4", B(HDR(0x81, 0x80, 1, 1, 0, 0), QA, 0xc0, 12, 0, 28, 0, 1, 0, 0, 0, 1, 0, 4,
			       192, 0, 2, 1), -EINVAL, 0, NULL },
	{ "bad A in additional", B(HDR(0x81, 0x80, 1, 0, 0, 1), QA, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 1, 0, 2,
				   192, 0), -EINVAL, 0, NULL },
	{ "pointer to itself", B(HDR(0x81, 0x80, 1, 1, 0, 0), QA, 0xc0, 24, RR_A(1), 1, 2, 3, 4), -EINVAL, 0, NULL },
	{ "pointer loop through a label", B(HDR(0x81, 0x80, 1, 1, 0, 0), QA, 1, 'x', 0xc0, 24, RR_A(1),
					    1, 2, 3, 4), -EINVAL, 0, NULL },
	/* Backwards, but into the name's own first label, whose bytes
	 * happen to read as the name "b": a second spelling hidden inside a
	 * label. Pointers must land before the run of labels they end. */
	{ "pointer into its own label", B(HDR(0x81, 0x80, 1, 1, 0, 0), QA, 3, 1, 'b', 0, 0xc0, 25,
					  0, 16, 0, 1, 0, 0, 0, 1, 0, 2, 1, 'z'), -EINVAL, 0, NULL },
	{ "forward pointer", B(HDR(0x81, 0x80, 1, 1, 0, 0), QA, 0xc0, 26, RR_A(1), 1, 2, 3, 4), -EINVAL, 0, NULL },
	{ "pointer past end", B(HDR(0x81, 0x80, 1, 1, 0, 0), QA, 0xff, 0xff, RR_A(1), 1, 2, 3, 4), -EINVAL, 0, NULL },
	{ "pointer into header", B(HDR(0x81, 0x80, 1, 1, 0, 0), QA, 0xc0, 4, RR_A(1), 1, 2, 3, 4), -EINVAL, 0, NULL },
	{ "pointer in question to header", B(HDR(0x81, 0x80, 1, 0, 0, 0), 0xc0, 2, 0, 1, 0, 1), -EINVAL, 0, NULL },
	{ "half a pointer", B(HDR(0x81, 0x80, 1, 1, 0, 0), QA, 0xc0), -EINVAL, 0, NULL },
	{ "CNAME rdata longer than its name",
	  B(HDR(0x81, 0x80, 1, 1, 0, 0), QA, 0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 1, 0, 4, 1, 'b', 0, 0xff),
	  -EINVAL, 0, NULL },
	{ "CNAME target runs past rdata",
	  B(HDR(0x81, 0x80, 1, 1, 0, 0), QA, 0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 1, 0, 2, 1, 'b', 0), -EINVAL, 0, NULL },
	{ "CNAME target with a dot in a label",
	  B(HDR(0x81, 0x80, 1, 1, 0, 0), QA, 0xc0, 12, 0, 5, 0, 1, 0, 0, 0, 1, 0, 5, 3, 'b', '.', 'c', 0),
	  -EINVAL, 0, NULL },
	{ "A owner with NUL in a label",
	  B(HDR(0x81, 0x80, 1, 1, 0, 0), QA, 2, 'x', 0, 0xc0, 12, RR_A(1), 1, 2, 3, 4), -EINVAL, 0, NULL },
	{ "TXT owner with odd bytes is only framed",
	  B(HDR(0x81, 0x80, 1, 1, 0, 0), QA, 2, 'x', 0, 0xc0, 12, 0, 16, 0, 1, 0, 0, 0, 1, 0, 2, 1, 'z'),
	  0, 0, NULL },
	{ "QR clear", B(HDR(0x01, 0x80, 1, 1, 0, 0), QA, 0xc0, 12, RR_A(60), 192, 0, 2, 1), -EINVAL, 0, NULL },
	{ "opcode STATUS", B(HDR(0x91, 0x80, 1, 0, 0, 0), QA), -EINVAL, 0, NULL },
	{ "two questions", B(HDR(0x81, 0x80, 2, 0, 0, 0), QA, QA), -EINVAL, 0, NULL },
	{ "ANCOUNT 65535", B(HDR(0x81, 0x80, 1, 0xff, 0, 0), QA, 0xc0, 12, RR_A(60), 192, 0, 2, 1),
	  -EINVAL, 0, NULL },
	{ "ANCOUNT one too many", B(HDR(0x81, 0x80, 1, 2, 0, 0), QA, 0xc0, 12, RR_A(60), 192, 0, 2, 1),
	  -EINVAL, 0, NULL },
	{ "ARCOUNT huge", B(HDR(0x81, 0x80, 1, 0, 0, 0xff), QA), -EINVAL, 0, NULL },
	{ "trailing byte", B(HDR(0x81, 0x80, 1, 1, 0, 0), QA, 0xc0, 12, RR_A(60), 192, 0, 2, 1, 0),
	  -EINVAL, 0, NULL },
	{ "rdata past end", B(HDR(0x81, 0x80, 1, 1, 0, 0), QA, 0xc0, 12, 0, 16, 0, 1, 0, 0, 0, 1, 0, 9,
			      1, 'z'), -EINVAL, 0, NULL },
	{ "header only", B(HDR(0x81, 0x80, 0, 0, 0, 0)), 0, 0, NULL },
	{ "short header", B(HDR(0x81, 0x80, 0, 0, 0, 0)) - 1, -EINVAL, 0, NULL },
};

static void test_answer_cases(void **state)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(answer_cases); i++) {
		struct dnsmsg_answer a;
		int err = dnsmsg_parse_answer(answer_cases[i].buf, answer_cases[i].len, &a);

		if (err != answer_cases[i].err)
			fail_msg("%s: got %d, want %d", answer_cases[i].what, err,
				 answer_cases[i].err);
		if (err) {
			assert_int_equal(a.n_rr, 0);
			continue;
		}
		if (a.n_rr != answer_cases[i].n_rr)
			fail_msg("%s: %zu records", answer_cases[i].what, a.n_rr);
		if (a.n_rr)
			assert_string_equal(a.rr[0].name, answer_cases[i].name0);
	}
}

/* Message builder for the longer synthetic answers. */
struct mb {
	uint8_t b[8192];
	size_t n;
};

static void mb_u8(struct mb *m, unsigned int v)
{
	assert_true(m->n < sizeof(m->b));
	m->b[m->n++] = (uint8_t)v;
}

static void mb_u16(struct mb *m, unsigned int v)
{
	mb_u8(m, v >> 8);
	mb_u8(m, v & 0xff);
}

static void mb_u32(struct mb *m, uint32_t v)
{
	mb_u16(m, v >> 16);
	mb_u16(m, v & 0xffff);
}

static void mb_name(struct mb *m, const char *name)
{
	int n = dnsmsg_encode_name(name, m->b + m->n, sizeof(m->b) - m->n);

	assert_true(n > 0);
	m->n += (size_t)n;
}

static void mb_hdr(struct mb *m, uint16_t id, uint16_t flags, unsigned int qd,
		   unsigned int an, unsigned int ns, unsigned int ar)
{
	m->n = 0;
	mb_u16(m, id);
	mb_u16(m, flags);
	mb_u16(m, qd);
	mb_u16(m, an);
	mb_u16(m, ns);
	mb_u16(m, ar);
}

/* Type, class IN, ttl, rdlength (the owner name is written before). */
static void mb_rr(struct mb *m, uint16_t type, uint32_t ttl, unsigned int rdlen)
{
	mb_u16(m, type);
	mb_u16(m, 1);
	mb_u32(m, ttl);
	mb_u16(m, rdlen);
}

/* CNAME chain + A + AAAA with TXT and MX interleaved, compressed the way
 * real servers do it (owner and target names pointing back at earlier
 * names, two hops deep), plus a TTL with the top bit set. */
static void test_answer_chain(void **state)
{
	static const struct want_rr want[] = {
		{ "www.example.com", DNSMSG_CNAME, 3600, "cdn.example.net" },
		{ "cdn.example.net", DNSMSG_CNAME, 30, "edge.cdn.example.net" },
		{ "edge.cdn.example.net", DNSMSG_A, 20, "203.0.113.7" },
		{ "edge.cdn.example.net", DNSMSG_A, 20, "203.0.113.8" },
		{ "edge.cdn.example.net", DNSMSG_AAAA, 0, "2001:db8::7" },
	};
	static const uint8_t v6[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 7 };
	struct dnsmsg_answer a;
	struct mb m;
	size_t qname_off, cdn_off, edge_off;

	mb_hdr(&m, 0x4242, 0x8180, 1, 7, 0, 1);
	qname_off = m.n;
	mb_name(&m, "WWW.Example.com");
	mb_u16(&m, DNSMSG_A);
	mb_u16(&m, 1);
	/* www -> cdn.example.net */
	mb_u16(&m, 0xc000 | qname_off);
	mb_rr(&m, DNSMSG_CNAME, 3600, 17);
	cdn_off = m.n;
	mb_name(&m, "cdn.example.net");
	/* TXT on the way, skipped */
	mb_u16(&m, 0xc000 | qname_off);
	mb_rr(&m, DNSMSG_TXT, 5, 4);
	mb_u8(&m, 3);
	mb_u8(&m, 'a');
	mb_u8(&m, 'b');
	mb_u8(&m, 'c');
	/* cdn -> edge.<cdn>: target is a label plus a pointer */
	mb_u16(&m, 0xc000 | cdn_off);
	mb_rr(&m, DNSMSG_CNAME, 30, 7);
	edge_off = m.n;
	mb_u8(&m, 4);
	mb_u8(&m, 'e');
	mb_u8(&m, 'd');
	mb_u8(&m, 'g');
	mb_u8(&m, 'e');
	mb_u16(&m, 0xc000 | cdn_off);
	/* two A, owner pointer -> edge (-> cdn: two hops) */
	mb_u16(&m, 0xc000 | edge_off);
	mb_rr(&m, DNSMSG_A, 20, 4);
	mb_u32(&m, 0xcb007107);
	mb_u16(&m, 0xc000 | edge_off);
	mb_rr(&m, DNSMSG_A, 20, 4);
	mb_u32(&m, 0xcb007108);
	/* MX, skipped, its exchange compressed */
	mb_u16(&m, 0xc000 | qname_off);
	mb_rr(&m, DNSMSG_MX, 5, 4);
	mb_u16(&m, 10);
	mb_u16(&m, 0xc000 | edge_off);
	/* AAAA whose TTL has the top bit set: RFC 2181 says zero */
	mb_u16(&m, 0xc000 | edge_off);
	mb_rr(&m, DNSMSG_AAAA, 0x80000010, 16);
	memcpy(m.b + m.n, v6, 16);
	m.n += 16;
	/* OPT in the additional section */
	mb_u8(&m, 0);
	mb_u16(&m, DNSMSG_OPT);
	mb_u16(&m, 1232);
	mb_u32(&m, 0);
	mb_u16(&m, 0);

	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &a), 0);
	assert_int_equal(a.id, 0x4242);
	assert_int_equal(a.rcode, 0);
	assert_string_equal(a.qname, "www.example.com");
	assert_int_equal(a.qtype, DNSMSG_A);
	check_rrs("chain", &a, want, ARRAY_SIZE(want));

	/* TC bit is reported */
	m.b[2] |= 0x02;
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &a), 0);
	assert_true(a.truncated);
}

/* More records than DNSMSG_MAX_ANSWERS: the first ones are kept, the
 * rest still validated. */
static void test_answer_many(void **state)
{
	static struct dnsmsg_answer a;
	struct mb m;
	unsigned int i, n = DNSMSG_MAX_ANSWERS + 10;

	mb_hdr(&m, 1, 0x8180, 1, n, 0, 0);
	mb_name(&m, "many.test");
	mb_u16(&m, DNSMSG_A);
	mb_u16(&m, 1);
	for (i = 0; i < n; i++) {
		mb_u16(&m, 0xc00c);
		mb_rr(&m, DNSMSG_A, i, 4);
		mb_u32(&m, 0xc6336400 + i); /* 198.51.100.i */
	}
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &a), 0);
	assert_int_equal(a.n_rr, DNSMSG_MAX_ANSWERS);
	assert_int_equal(a.rr[DNSMSG_MAX_ANSWERS - 1].ttl, DNSMSG_MAX_ANSWERS - 1);

	/* a bad record after the kept ones still fails the whole answer */
	m.b[m.n - 5] = 5;
	m.b[m.n++] = 0;
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &a), -EINVAL);
}

struct seen_addrs {
	struct egr_addr a[128];
	size_t n;
};

static void see_addr(void *ctx, const struct egr_addr *addr)
{
	struct seen_addrs *s = ctx;

	assert_true(s->n < ARRAY_SIZE(s->a));
	s->a[s->n++] = *addr;
}

/* The DNS proxy's rebinding check sees every address of the answer
 * through dnsmsg_parse_answer_addrs(), also the ones past the
 * DNSMSG_MAX_ANSWERS kept: 64 public records and 127.0.0.1 as the 65th
 * (after a CNAME), then an AAAA; not the address in the additional
 * section, nor TXT. */
static void test_answer_addrs_all(void **state)
{
	static struct dnsmsg_answer a;
	struct seen_addrs seen = { .n = 0 };
	struct egr_addr want;
	struct mb m;
	unsigned int i;

	mb_hdr(&m, 7, 0x8180, 1, DNSMSG_MAX_ANSWERS + 4, 0, 1);
	mb_name(&m, "many.test");
	mb_u16(&m, DNSMSG_A);
	mb_u16(&m, 1);
	for (i = 0; i < DNSMSG_MAX_ANSWERS; i++) {
		mb_u16(&m, 0xc00c);
		mb_rr(&m, DNSMSG_A, 60, 4);
		mb_u32(&m, 0xc6336400 + i); /* 198.51.100.i */
	}
	mb_u16(&m, 0xc00c);
	mb_rr(&m, DNSMSG_TXT, 60, 2);
	mb_u8(&m, 1);
	mb_u8(&m, 'x');
	mb_u16(&m, 0xc00c);
	mb_rr(&m, DNSMSG_A, 60, 4);
	mb_u32(&m, 0x7f000001);
	mb_u16(&m, 0xc00c);
	mb_rr(&m, DNSMSG_CNAME, 60, 2);
	mb_u16(&m, 0xc00c);
	mb_u16(&m, 0xc00c);
	mb_rr(&m, DNSMSG_AAAA, 60, 16);
	for (i = 0; i < 15; i++)
		mb_u8(&m, 0);
	mb_u8(&m, 1); /* ::1 */
	/* additional: a glue A, framed but not an answer */
	mb_u16(&m, 0xc00c);
	mb_rr(&m, DNSMSG_A, 60, 4);
	mb_u32(&m, 0x0a000001);

	assert_int_equal(dnsmsg_parse_answer_addrs(m.b, m.n, &a, see_addr, &seen), 0);
	assert_int_equal(a.n_rr, DNSMSG_MAX_ANSWERS);
	assert_int_equal(seen.n, DNSMSG_MAX_ANSWERS + 2);
	assert_int_equal(addr_parse("198.51.100.63", &want), 0);
	assert_memory_equal(seen.a[DNSMSG_MAX_ANSWERS - 1].b, want.b, 16);
	assert_int_equal(addr_parse("127.0.0.1", &want), 0);
	assert_memory_equal(seen.a[DNSMSG_MAX_ANSWERS].b, want.b, 16);
	assert_int_equal(addr_parse("::1", &want), 0);
	assert_memory_equal(seen.a[DNSMSG_MAX_ANSWERS + 1].b, want.b, 16);

	/* the plain parser keeps the same records */
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &a), 0);
	assert_int_equal(a.n_rr, DNSMSG_MAX_ANSWERS);
}

/* Compressed names longer than 255 bytes, built from pointers to 63-byte
 * labels each of which stays within bounds on its own. */
static void test_answer_long_compressed_name(void **state)
{
	struct dnsmsg_answer a;
	struct mb m;
	size_t prev = 12, cur = 0, i;

	/* A skipped NULL record whose rdata holds four 63-byte labels, each
	 * followed by a pointer to the one before (the first to "q.test"):
	 * every pointer goes backwards, every piece is in bounds. */
	mb_hdr(&m, 1, 0x8180, 1, 2, 0, 0);
	mb_name(&m, "q.test");
	mb_u16(&m, DNSMSG_A);
	mb_u16(&m, 1);
	mb_u16(&m, 0xc00c);
	mb_rr(&m, DNSMSG_NULL, 1, 4 * 66);
	for (i = 0; i < 4; i++) {
		cur = m.n;
		mb_u8(&m, 63);
		memset(m.b + m.n, 'a' + (int)i, 63);
		m.n += 63;
		mb_u16(&m, 0xc000 | prev);
		prev = cur;
	}
	/* A owner -> the fourth: 4 * 64 + 8 = 264 wire bytes, too long */
	mb_u16(&m, 0xc000 | cur);
	mb_rr(&m, DNSMSG_A, 1, 4);
	mb_u32(&m, 0xc0000201);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &a), -EINVAL);

	/* -> the third: 3 * 64 + 8 = 200, accepted */
	m.b[m.n - 16] = (uint8_t)(0xc0 | (cur - 66) >> 8);
	m.b[m.n - 15] = (uint8_t)((cur - 66) & 0xff);
	assert_int_equal(dnsmsg_parse_answer(m.b, m.n, &a), 0);
	assert_int_equal(a.n_rr, 1);
	assert_int_equal(strlen(a.rr[0].name), 3 * 64 + 6);
	assert_int_equal(a.rr[0].name[0], 'c');
	assert_int_equal(a.rr[0].name[63], '.');
	assert_string_equal(a.rr[0].name + 3 * 64, "q.test");
}

/* ---- truncation ------------------------------------------------------- */

/* Every strict prefix of a valid message is invalid: the counts promise
 * more than is there. Run under ASan (make check) this also proves no
 * read past len. */
static void test_truncated_everywhere(void **state)
{
	static const struct {
		const uint8_t *buf;
		size_t len;
		bool query;
	} msgs[] = {
		{ cap_q_dig_noedns_a, sizeof(cap_q_dig_noedns_a), true },
		{ cap_q_dig_edns_aaaa, sizeof(cap_q_dig_edns_aaaa), true },
		{ cap_q_dig_upper_cname, sizeof(cap_q_dig_upper_cname), true },
		{ cap_q_glibc_1, sizeof(cap_q_glibc_1), true },
		{ cap_q_glibc_2, sizeof(cap_q_glibc_2), true },
		{ cap_q_node_resolve4, sizeof(cap_q_node_resolve4), true },
		{ cap_q_dig_mx, sizeof(cap_q_dig_mx), true },
		{ cap_q_dig_nx, sizeof(cap_q_dig_nx), true },
		{ cap_q_dig_txt, sizeof(cap_q_dig_txt), true },
		{ cap_q_node_resolve6, sizeof(cap_q_node_resolve6), true },
		{ cap_r_dig_upper_cname, sizeof(cap_r_dig_upper_cname), false },
		{ cap_r_glibc_2, sizeof(cap_r_glibc_2), false },
		{ cap_r_dig_txt, sizeof(cap_r_dig_txt), false },
		{ cap_r_dig_mx, sizeof(cap_r_dig_mx), false },
		{ cap_r_dig_nx, sizeof(cap_r_dig_nx), false },
		{ cap_r_node_resolve6, sizeof(cap_r_node_resolve6), false },
	};
	size_t i, cut;

	for (i = 0; i < ARRAY_SIZE(msgs); i++) {
		struct dnsmsg_query q;
		struct dnsmsg_answer a;
		uint8_t *copy;

		if (msgs[i].query)
			assert_int_equal(dnsmsg_parse_query(msgs[i].buf, msgs[i].len, &q), 0);
		else
			assert_int_equal(dnsmsg_parse_answer(msgs[i].buf, msgs[i].len, &a), 0);
		for (cut = 0; cut < msgs[i].len; cut++) {
			/* an exact-size heap copy, so ASan sees any overread */
			copy = test_malloc(cut ? cut : 1);
			memcpy(copy, msgs[i].buf, cut);
			if (msgs[i].query && dnsmsg_parse_query(copy, cut, &q) != -EINVAL)
				fail_msg("query %zu cut at %zu accepted", i, cut);
			if (!msgs[i].query && dnsmsg_parse_answer(copy, cut, &a) != -EINVAL)
				fail_msg("answer %zu cut at %zu accepted", i, cut);
			test_free(copy);
		}
	}
	assert_int_equal(dnsmsg_parse_query(NULL, 0, NULL), -EINVAL);
	assert_int_equal(dnsmsg_parse_answer(cap_r_dig_nx, sizeof(cap_r_dig_nx), NULL), -EINVAL);
}

/* ---- build_error ------------------------------------------------------ */

static void test_build_error_roundtrip(void **state)
{
	static const enum dnsmsg_rcode rcodes[] = {
		DNSMSG_NXDOMAIN, DNSMSG_REFUSED, DNSMSG_FORMERR, DNSMSG_SERVFAIL,
	};
	size_t i, j;

	for (i = 0; i < ARRAY_SIZE(cap_queries); i++) {
		for (j = 0; j < ARRAY_SIZE(rcodes); j++) {
			const uint8_t *qb = cap_queries[i].buf;
			struct dnsmsg_query q;
			struct dnsmsg_answer a;
			uint8_t out[512];
			int n;

			assert_int_equal(dnsmsg_parse_query(qb, cap_queries[i].len, &q), 0);
			memset(out, 0xaa, sizeof(out));
			n = dnsmsg_build_error(qb, cap_queries[i].len, &q, rcodes[j], out,
					       sizeof(out));
			assert_int_equal(n, 12 + q.question_len);
			/* header: id, QR=1, opcode 0, AA=0, TC=0, RD copied, RA=1,
			 * Z/AD/CD clear, rcode; counts 1/0/0/0 */
			assert_memory_equal(out, qb, 2);
			assert_int_equal(out[2], 0x80 | (qb[2] & 0x01));
			assert_int_equal(out[3], 0x80 | rcodes[j]);
			assert_memory_equal(out + 4, ((const uint8_t[]){ 0, 1, 0, 0, 0, 0, 0, 0 }), 8);
			assert_memory_equal(out + 12, qb + 12, q.question_len);
			assert_int_equal(out[n], 0xaa);

			assert_int_equal(dnsmsg_parse_answer(out, (size_t)n, &a), 0);
			assert_int_equal(a.id, cap_queries[i].id);
			assert_int_equal(a.rcode, rcodes[j]);
			assert_false(a.truncated);
			assert_string_equal(a.qname, cap_queries[i].qname);
			assert_int_equal(a.qtype, cap_queries[i].qtype);
			assert_int_equal(a.n_rr, 0);
		}
	}
}

static void test_build_error_limits(void **state)
{
	static const uint8_t nord[] = { HDR(0, 0, 1, 0, 0, 0), QA };
	struct dnsmsg_query q;
	struct dnsmsg_answer a;
	uint8_t out[64];
	size_t need = sizeof(cap_q_dig_noedns_a);

	/* RD clear stays clear */
	assert_int_equal(dnsmsg_parse_query(nord, sizeof(nord), &q), 0);
	assert_int_equal(dnsmsg_build_error(nord, sizeof(nord), &q, DNSMSG_REFUSED, out,
					    sizeof(out)), sizeof(nord));
	assert_int_equal(out[2], 0x80);
	assert_int_equal(out[3], 0x85);

	assert_int_equal(dnsmsg_parse_query(cap_q_dig_noedns_a, need, &q), 0);
	assert_int_equal(dnsmsg_build_error(cap_q_dig_noedns_a, need, &q, DNSMSG_NXDOMAIN,
					    out, need), (int)need);
	assert_int_equal(dnsmsg_build_error(cap_q_dig_noedns_a, need, &q, DNSMSG_NXDOMAIN,
					    out, need - 1), -ENOSPC);
	assert_int_equal(dnsmsg_build_error(cap_q_dig_noedns_a, need, &q, DNSMSG_NXDOMAIN,
					    out, 0), -ENOSPC);
	/* the query bytes must hold the question the struct describes */
	assert_int_equal(dnsmsg_build_error(cap_q_dig_noedns_a, need - 1, &q, DNSMSG_NXDOMAIN,
					    out, sizeof(out)), -EINVAL);
	assert_int_equal(dnsmsg_build_error(cap_q_dig_noedns_a, need, &q, 16, out, sizeof(out)),
			 -EINVAL);

	/* EDNS query: the reply drops the OPT record (ARCOUNT 0) */
	assert_int_equal(dnsmsg_parse_query(cap_q_dig_edns_aaaa, sizeof(cap_q_dig_edns_aaaa), &q), 0);
	assert_int_equal(dnsmsg_build_error(cap_q_dig_edns_aaaa, sizeof(cap_q_dig_edns_aaaa), &q,
					    DNSMSG_NXDOMAIN, out, sizeof(out)), 12 + 18);
	assert_int_equal(out[11], 0);
	assert_int_equal(dnsmsg_parse_answer(out, 30, &a), 0);
	assert_string_equal(a.qname, "allowed.test");
}

/* ---- encode_name / type_name ------------------------------------------ */

static void test_encode_name(void **state)
{
	static const struct {
		const char *name;
		int ret;
		const char *wire; /* when ret > 0 */
	} cases[] = {
		{ "a.example.com", 15, "\001a\007example\003com" },
		{ "a.example.com.", 15, "\001a\007example\003com" },
		{ "Mixed.Case", 12, "\005Mixed\004Case" },
		{ "", 1, "" },
		{ ".", 1, "" },
		{ "a..b", -EINVAL, NULL },
		{ ".a", -EINVAL, NULL },
		{ "a..", -EINVAL, NULL },
		{ "..", -EINVAL, NULL },
		{ "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.t", 67,
		  "\077xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\001t" },
		{ "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx.t", -EINVAL, NULL },
	};
	uint8_t out[300];
	char name[300];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		int n = dnsmsg_encode_name(cases[i].name, out, sizeof(out));

		if (n != cases[i].ret)
			fail_msg("\"%s\": got %d, want %d", cases[i].name, n, cases[i].ret);
		if (n > 0) {
			assert_memory_equal(out, cases[i].wire, (size_t)n - 1);
			assert_int_equal(out[n - 1], 0);
		}
	}

	/* 255 wire bytes: 3 x 63 + 61; one more byte is too many */
	memset(name, 'x', sizeof(name));
	name[63] = name[127] = name[191] = '.';
	name[253] = '\0';
	assert_int_equal(dnsmsg_encode_name(name, out, sizeof(out)), 255);
	assert_int_equal(dnsmsg_encode_name(name, out, 254), -ENOSPC);
	name[253] = 'x';
	name[254] = '\0';
	assert_int_equal(dnsmsg_encode_name(name, out, sizeof(out)), -EINVAL);
	assert_int_equal(dnsmsg_encode_name("a.test", out, 7), -ENOSPC);
	assert_int_equal(dnsmsg_encode_name("a.test", out, 8), 8);
	assert_int_equal(dnsmsg_encode_name(NULL, out, sizeof(out)), -EINVAL);
}

static void test_type_name(void **state)
{
	static const struct {
		uint16_t type;
		const char *name;
	} cases[] = {
		{ DNSMSG_A, "A" }, { DNSMSG_AAAA, "AAAA" }, { DNSMSG_CNAME, "CNAME" },
		{ DNSMSG_TXT, "TXT" }, { DNSMSG_MX, "MX" }, { DNSMSG_HTTPS, "HTTPS" },
		{ DNSMSG_NULL, "NULL" }, { DNSMSG_ANY, "ANY" }, { DNSMSG_OPT, "OPT" },
	};
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cases); i++)
		assert_string_equal(dnsmsg_type_name(cases[i].type), cases[i].name);
	assert_null(dnsmsg_type_name(0));
	assert_null(dnsmsg_type_name(1234));
	assert_null(dnsmsg_type_name(65535));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_captured_queries),
		cmocka_unit_test(test_query_cases),
		cmocka_unit_test(test_query_edns_and_long_name),
		cmocka_unit_test(test_query_built),
		cmocka_unit_test(test_captured_answers),
		cmocka_unit_test(test_answer_cases),
		cmocka_unit_test(test_answer_chain),
		cmocka_unit_test(test_answer_many),
		cmocka_unit_test(test_answer_addrs_all),
		cmocka_unit_test(test_answer_long_compressed_name),
		cmocka_unit_test(test_truncated_everywhere),
		cmocka_unit_test(test_build_error_roundtrip),
		cmocka_unit_test(test_build_error_limits),
		cmocka_unit_test(test_encode_name),
		cmocka_unit_test(test_type_name),
	};

	return cmocka_run_group_tests_name("dnsmsg", tests, NULL, NULL);
}
