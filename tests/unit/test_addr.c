// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* user/addr.c: classification, parsing/formatting, prefix matching. */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "addr.h"

static const struct {
	const char *addr;
	enum addr_class cls;
} class_cases[] = {
	/* the test bed's "internet" (documentation ranges) is public */
	{ "192.0.2.1", ADDR_PUBLIC },
	{ "198.51.100.7", ADDR_PUBLIC },
	{ "203.0.113.255", ADDR_PUBLIC },
	{ "2001:db8::1", ADDR_PUBLIC },
	{ "8.8.8.8", ADDR_PUBLIC },
	{ "1.1.1.1", ADDR_PUBLIC },
	{ "2606:4700::1111", ADDR_PUBLIC },
	{ "172.15.255.255", ADDR_PUBLIC },
	{ "172.32.0.0", ADDR_PUBLIC },
	{ "100.63.255.255", ADDR_PUBLIC },
	{ "100.128.0.0", ADDR_PUBLIC },
	{ "223.255.255.255", ADDR_PUBLIC },
	{ "127.0.0.1", ADDR_LOOPBACK },
	{ "127.255.255.254", ADDR_LOOPBACK },
	{ "::1", ADDR_LOOPBACK },
	{ "::ffff:127.0.0.1", ADDR_LOOPBACK },
	{ "::ffff:7f00:2", ADDR_LOOPBACK },
	{ "64:ff9b::127.0.0.1", ADDR_LOOPBACK },  /* NAT64 */
	{ "::ffff:0:127.0.0.1", ADDR_LOOPBACK },  /* SIIT */
	{ "2002:7f00:1::", ADDR_LOOPBACK },      /* 6to4 */
	{ "0.0.0.0", ADDR_UNSPEC },
	{ "0.1.2.3", ADDR_UNSPEC },
	{ "::", ADDR_UNSPEC },
	{ "::ffff:0.0.0.0", ADDR_UNSPEC },
	{ "10.0.0.1", ADDR_PRIVATE },
	{ "10.255.255.255", ADDR_PRIVATE },
	{ "172.16.0.1", ADDR_PRIVATE },
	{ "172.31.255.255", ADDR_PRIVATE },
	{ "192.168.1.1", ADDR_PRIVATE },
	{ "100.64.0.1", ADDR_PRIVATE },
	{ "100.127.255.255", ADDR_PRIVATE },
	{ "fc00::1", ADDR_PRIVATE },
	{ "fd12:3456::1", ADDR_PRIVATE },
	{ "::ffff:10.1.2.3", ADDR_PRIVATE },
	{ "64:ff9b::10.0.0.1", ADDR_PRIVATE },
	{ "169.254.0.1", ADDR_LINKLOCAL },
	{ "169.254.169.253", ADDR_LINKLOCAL },
	{ "fe80::1", ADDR_LINKLOCAL },
	{ "febf::1", ADDR_LINKLOCAL },
	{ "169.254.169.254", ADDR_METADATA },
	{ "::ffff:169.254.169.254", ADDR_METADATA },
	{ "fd00:ec2::254", ADDR_METADATA },
	{ "64:ff9b::169.254.169.254", ADDR_METADATA },
	{ "224.0.0.1", ADDR_MULTICAST },
	{ "239.255.255.250", ADDR_MULTICAST },
	{ "255.255.255.255", ADDR_MULTICAST },
	{ "ff02::1", ADDR_MULTICAST },
	{ "240.0.0.1", ADDR_RESERVED },
	{ "255.255.255.254", ADDR_RESERVED },
	{ "::1.2.3.4", ADDR_RESERVED },  /* deprecated IPv4-compatible */
	{ "100::1", ADDR_RESERVED },     /* discard-only */
	{ "4000::1", ADDR_RESERVED },    /* outside 2000::/3 */
};

static void test_classify(void **state)
{
	size_t i;

	for (i = 0; i < sizeof(class_cases) / sizeof(class_cases[0]); i++) {
		struct egr_addr a;
		enum addr_class c;

		assert_int_equal(addr_parse(class_cases[i].addr, &a), 0);
		c = addr_classify(&a);
		if (c != class_cases[i].cls)
			fail_msg("%s: got %s, want %s", class_cases[i].addr,
				 addr_class_name(c), addr_class_name(class_cases[i].cls));
	}
}

static void test_class_names(void **state)
{
	enum addr_class c, d;

	for (c = ADDR_PUBLIC; c <= ADDR_RESERVED; c++) {
		assert_non_null(addr_class_name(c));
		for (d = ADDR_PUBLIC; d < c; d++)
			assert_string_not_equal(addr_class_name(c), addr_class_name(d));
	}
	assert_string_equal(addr_class_name(ADDR_METADATA), "metadata");
}

static const struct {
	const char *in;
	const char *out; /* NULL: rejected */
	bool v4;
} parse_cases[] = {
	{ "192.0.2.1", "192.0.2.1", true },
	{ "0.0.0.0", "0.0.0.0", true },
	{ "255.255.255.255", "255.255.255.255", true },
	{ "2001:db8::1", "2001:db8::1", false },
	{ "2001:DB8:0:0:0:0:0:1", "2001:db8::1", false },
	{ "::", "::", false },
	{ "::ffff:192.0.2.1", "192.0.2.1", true },
	{ "::ffff:c000:201", "192.0.2.1", true },
	{ "fe80::1%eth0", NULL, false },
	{ "0177.0.0.1", NULL, false },   /* octal: never */
	{ "0x7f.1", NULL, false },
	{ "127.1", NULL, false },
	{ "256.0.0.1", NULL, false },
	{ "1.2.3.4 ", NULL, false },
	{ "[2001:db8::1]", NULL, false },
	{ "", NULL, false },
	{ "example.com", NULL, false },
	{ "2001:db8::1::2", NULL, false },
};

static void test_parse_format(void **state)
{
	size_t i;

	for (i = 0; i < sizeof(parse_cases) / sizeof(parse_cases[0]); i++) {
		struct egr_addr a, b;
		char buf[64];
		int r = addr_parse(parse_cases[i].in, &a);

		if (!parse_cases[i].out) {
			if (r != -EINVAL)
				fail_msg("%s: accepted", parse_cases[i].in);
			continue;
		}
		if (r)
			fail_msg("%s: rejected", parse_cases[i].in);
		assert_string_equal(addr_to_str(&a, buf, sizeof(buf)), parse_cases[i].out);
		assert_int_equal(addr_is_v4(&a), parse_cases[i].v4);
		/* round trip */
		assert_int_equal(addr_parse(buf, &b), 0);
		assert_memory_equal(&a, &b, sizeof(a));
	}
}

static void test_v4_mapped_form(void **state)
{
	struct egr_addr a;
	static const uint8_t want[16] = { [10] = 0xff, [11] = 0xff, 192, 0, 2, 1 };

	addr_from_v4(&a, htonl(0xc0000201));
	assert_memory_equal(a.b, want, 16);
	assert_true(addr_is_v4(&a));
	addr_from_v6(&a, want);
	assert_true(addr_is_v4(&a));
}

static void test_sockaddr(void **state)
{
	struct sockaddr_storage ss;
	struct sockaddr_in6 sin6;
	struct egr_addr a, b;
	uint16_t port = 0;
	socklen_t len;

	assert_int_equal(addr_parse("192.0.2.9", &a), 0);
	len = addr_to_sockaddr(&a, 443, &ss);
	assert_int_equal(len, sizeof(struct sockaddr_in));
	assert_int_equal(ss.ss_family, AF_INET);
	assert_int_equal(ntohs(((struct sockaddr_in *)&ss)->sin_port), 443);
	assert_int_equal(addr_from_sockaddr(&b, &port, (struct sockaddr *)&ss), 0);
	assert_memory_equal(&a, &b, sizeof(a));
	assert_int_equal(port, 443);

	assert_int_equal(addr_parse("2001:db8::5", &a), 0);
	len = addr_to_sockaddr(&a, 8443, &ss);
	assert_int_equal(len, sizeof(struct sockaddr_in6));
	assert_int_equal(ss.ss_family, AF_INET6);
	assert_int_equal(addr_from_sockaddr(&b, &port, (struct sockaddr *)&ss), 0);
	assert_memory_equal(&a, &b, sizeof(a));
	assert_int_equal(port, 8443);

	/* a v4-mapped sockaddr_in6 stays v4-mapped */
	memset(&sin6, 0, sizeof(sin6));
	sin6.sin6_family = AF_INET6;
	sin6.sin6_port = htons(80);
	inet_pton(AF_INET6, "::ffff:127.0.0.1", &sin6.sin6_addr);
	assert_int_equal(addr_from_sockaddr(&b, &port, (struct sockaddr *)&sin6), 0);
	assert_true(addr_is_v4(&b));
	assert_int_equal(addr_classify(&b), ADDR_LOOPBACK);

	ss.ss_family = AF_UNIX;
	assert_int_equal(addr_from_sockaddr(&b, &port, (struct sockaddr *)&ss), -EAFNOSUPPORT);
}

static const struct {
	const char *addr, *net;
	unsigned plen; /* mapped space */
	bool in;
} prefix_cases[] = {
	{ "192.0.2.77", "192.0.2.0", 96 + 24, true },
	{ "192.0.3.1", "192.0.2.0", 96 + 24, false },
	{ "192.0.2.1", "192.0.2.1", 128, true },
	{ "192.0.2.2", "192.0.2.1", 128, false },
	{ "10.200.0.1", "10.0.0.0", 96 + 8, true },
	{ "172.31.0.1", "172.16.0.0", 96 + 12, true },
	{ "172.32.0.1", "172.16.0.0", 96 + 12, false },
	{ "203.0.113.5", "0.0.0.0", 96, true },       /* all of v4 */
	{ "2001:db8::1", "0.0.0.0", 96, false },      /* v6 is not in v4 space */
	{ "2001:db8::1", "::", 0, true },
	{ "192.0.2.1", "::", 0, true },
	{ "2001:db8:1::1", "2001:db8::", 32, true },
	{ "2001:db9::1", "2001:db8::", 32, false },
	{ "2001:db8::1", "2001:db8::", 127, true },
	{ "2001:db8::2", "2001:db8::", 127, false },
	{ "2001:db8::1", "2001:db8::", 129, false },  /* invalid length */
	{ "fe80::1", "fe80::", 10, true },
	{ "febf::1", "fe80::", 10, true },
	{ "fec0::1", "fe80::", 10, false },
};

static void test_prefix(void **state)
{
	size_t i;

	for (i = 0; i < sizeof(prefix_cases) / sizeof(prefix_cases[0]); i++) {
		struct egr_addr a, n;

		assert_int_equal(addr_parse(prefix_cases[i].addr, &a), 0);
		assert_int_equal(addr_parse(prefix_cases[i].net, &n), 0);
		if (addr_in_prefix(&a, &n, prefix_cases[i].plen) != prefix_cases[i].in)
			fail_msg("%s in %s/%u: want %d", prefix_cases[i].addr,
				 prefix_cases[i].net, prefix_cases[i].plen, prefix_cases[i].in);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_classify),
		cmocka_unit_test(test_class_names),
		cmocka_unit_test(test_parse_format),
		cmocka_unit_test(test_v4_mapped_form),
		cmocka_unit_test(test_sockaddr),
		cmocka_unit_test(test_prefix),
	};

	return cmocka_run_group_tests_name("addr", tests, NULL, NULL);
}
