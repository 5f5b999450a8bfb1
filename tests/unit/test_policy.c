// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* user/policy.c: rule parsing, matching, JSON files, kernel summary. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "policy.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* --- rule strings ------------------------------------------------------- */

static const struct {
	const char *in;
	const char *canon; /* NULL: rejected with err */
	const char *err;
} rule_cases[] = {
	{ "example.com", "example.com", NULL },
	{ "Example.COM.", "example.com", NULL },
	{ "*.example.com", "*.example.com", NULL },
	{ "*.Example.com:8443", "*.example.com:8443", NULL },
	{ "example.com:*", "example.com:*", NULL },
	{ "example.com:443", "example.com:443", NULL },
	{ "example.com:65535", "example.com:65535", NULL },
	{ "_acme-challenge.example.com", "_acme-challenge.example.com", NULL },
	{ "localhost", "localhost", NULL },
	{ "xn--bcher-kva.example", "xn--bcher-kva.example", NULL },
	{ "a.b-c.d", "a.b-c.d", NULL },
	{ "3com.com", "3com.com", NULL },
	{ "192.0.2.7", "192.0.2.7", NULL },
	{ "192.0.2.7:443", "192.0.2.7:443", NULL },
	{ "192.0.2.0/24", "192.0.2.0/24", NULL },
	{ "192.0.2.0/24:443", "192.0.2.0/24:443", NULL },
	{ "192.0.2.0/24:*", "192.0.2.0/24", NULL },
	{ "192.0.2.7/32", "192.0.2.7", NULL },
	{ "0.0.0.0/0", "0.0.0.0/0", NULL },
	{ "2001:db8::1", "2001:db8::1", NULL },
	{ "2001:DB8::/32", "2001:db8::/32", NULL },
	{ "[2001:db8::1]:443", "[2001:db8::1]:443", NULL },
	{ "[2001:db8::]/32:443", "[2001:db8::]/32:443", NULL },
	{ "[2001:db8::/32]:443", "[2001:db8::]/32:443", NULL },
	{ "[2001:db8::1]", "2001:db8::1", NULL },
	{ "[2001:db8::]/32", "2001:db8::/32", NULL },
	{ "[2001:db8::1]:*", "2001:db8::1", NULL },
	{ "::ffff:192.0.2.0/120", "192.0.2.0/24", NULL },
	{ "::/0", "::/0", NULL },

	{ "", NULL, "empty rule" },
	{ "*", NULL, "a bare '*' would allow every destination; list the domains" },
	{ "*:443", NULL, "a bare '*' would allow every destination; list the domains" },
	{ "*.", NULL, "invalid domain name" },
	{ ".", NULL, "invalid domain name" },
	{ "*.com", NULL, "wildcard over a top-level domain would allow half the internet; "
			 "name the domain, e.g. *.example.com" },
	{ "*.test.", NULL, "wildcard over a top-level domain would allow half the internet; "
			   "name the domain, e.g. *.example.test" },
	{ "foo.*.com", NULL, "invalid domain name ('*' is only allowed as a whole first label "
			     "(*.example.com))" },
	{ "*foo.com", NULL, "invalid domain name ('*' is only allowed as a whole first label "
			    "(*.example.com))" },
	{ "**.example.com", NULL, "invalid domain name ('*' is only allowed as a whole first "
				  "label (*.example.com))" },
	{ "*.*.example.com", NULL, "invalid domain name ('*' is only allowed as a whole first "
				   "label (*.example.com))" },
	{ "example..com", NULL, "invalid domain name (empty label)" },
	{ ".example.com", NULL, "invalid domain name (empty label)" },
	{ "-a.com", NULL, "invalid domain name (label starts with '-')" },
	{ "a-.com", NULL, "invalid domain name (label ends with '-')" },
	{ "exa$mple.com", NULL, "invalid domain name (invalid character)" },
	{ "b\xc3\xbc" "cher.de", NULL,
	  "invalid domain name (non-ASCII character; write IDNs in their xn-- form)" },
	{ "example.123", NULL, "invalid domain name (all-numeric last label)" },
	{ "exa mple.com", NULL, "contains whitespace or control characters" },
	{ "example.com\n", NULL, "contains whitespace or control characters" },
	{ "example.com:0", NULL, "invalid port \"0\" (1-65535 or *)" },
	{ "example.com:65536", NULL, "invalid port \"65536\" (1-65535 or *)" },
	{ "example.com:0443", NULL, "invalid port \"0443\" (1-65535 or *)" },
	{ "example.com:-1", NULL, "invalid port \"-1\" (1-65535 or *)" },
	{ "example.com:", NULL, "empty port after ':'" },
	{ "example.com:443:80", NULL, "more than one ':' (an IPv6 address with a port needs "
				      "brackets: [2001:db8::1]:443)" },
	{ "https://example.com", NULL, "looks like a URL; write the host name only (example.com)" },
	{ "example.com/path", NULL, "'/' is only allowed in IP CIDR rules; a rule names a host, "
				    "not a URL path" },
	{ "192.0.2.1/24", NULL, "host bits set, did you mean 192.0.2.0/24" },
	{ "192.0.2.1/24:443", NULL, "host bits set, did you mean 192.0.2.0/24" },
	{ "2001:db8::1/32", NULL, "host bits set, did you mean 2001:db8::/32" },
	{ "[2001:db8::1]/32:443", NULL, "host bits set, did you mean 2001:db8::/32" },
	{ "192.0.2.0/33", NULL, "invalid prefix length \"33\" (0-32)" },
	{ "192.0.2.0/", NULL, "invalid prefix length \"\" (0-32)" },
	{ "2001:db8::/129", NULL, "invalid prefix length \"129\" (0-128)" },
	{ "192.0.2.256", NULL, "invalid IPv4 address" },
	{ "1.2.3", NULL, "invalid IPv4 address" },
	{ "0177.0.0.1", NULL, "invalid IPv4 address" },
	{ "[192.0.2.1]:443", NULL, "invalid IPv6 address" },
	{ "[2001:db8::1", NULL, "missing ']'" },
	{ "[2001:db8::1]443", NULL, "unexpected \"443\" after ']'" },
	{ "2001:db8::g", NULL, "more than one ':' (an IPv6 address with a port needs brackets: "
			       "[2001:db8::1]:443)" },
	{ "2001:db8:::1", NULL, "invalid IPv6 address (write [2001:db8::1]:443 to give a port)" },
};

static void test_rule_parse(void **state)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(rule_cases); i++) {
		struct policy *p = policy_new("t");
		char err[256] = "";
		int r;

		assert_non_null(p);
		r = policy_add_rule(p, false, rule_cases[i].in, "test", err, sizeof(err));
		if (rule_cases[i].canon) {
			if (r)
				fail_msg("\"%s\": rejected: %s", rule_cases[i].in, err);
			assert_int_equal(p->n_allow, 1);
			if (strcmp(p->allow[0].text, rule_cases[i].canon))
				fail_msg("\"%s\": canonical \"%s\", want \"%s\"",
					 rule_cases[i].in, p->allow[0].text, rule_cases[i].canon);
			assert_string_equal(p->allow[0].source, "test");
			/* the canonical text parses to itself */
			assert_int_equal(policy_add_rule(p, true, p->allow[0].text, NULL,
							 err, sizeof(err)), 0);
			assert_string_equal(p->deny[0].text, p->allow[0].text);
		} else {
			if (r != -EINVAL)
				fail_msg("\"%s\": accepted as \"%s\"", rule_cases[i].in,
					 p->n_allow ? p->allow[0].text : "?");
			if (strcmp(err, rule_cases[i].err))
				fail_msg("\"%s\": error \"%s\", want \"%s\"", rule_cases[i].in,
					 err, rule_cases[i].err);
			assert_int_equal(p->n_allow, 0);
		}
		policy_free(p);
	}
}

static void test_rule_fields(void **state)
{
	struct policy *p = policy_new("t");
	struct egr_addr a;
	char err[256];

	assert_int_equal(policy_add_rule(p, false, "*.Example.com", NULL, err, sizeof(err)), 0);
	assert_int_equal(p->allow[0].kind, RULE_DOMAIN);
	assert_true(p->allow[0].wildcard);
	assert_string_equal(p->allow[0].domain, "example.com");
	assert_false(p->allow[0].any_port);
	assert_int_equal(p->allow[0].port, 0);

	assert_int_equal(policy_add_rule(p, false, "192.0.2.0/24", NULL, err, sizeof(err)), 0);
	assert_int_equal(p->allow[1].kind, RULE_CIDR);
	assert_int_equal(p->allow[1].prefixlen, 96 + 24);
	assert_true(p->allow[1].any_port);
	assert_int_equal(addr_parse("192.0.2.0", &a), 0);
	assert_memory_equal(&p->allow[1].net, &a, sizeof(a));

	assert_int_equal(policy_add_rule(p, false, "[2001:db8::]/48:8443", NULL, err,
					 sizeof(err)), 0);
	assert_int_equal(p->allow[2].prefixlen, 48);
	assert_false(p->allow[2].any_port);
	assert_int_equal(p->allow[2].port, 8443);
	policy_free(p);
}

/* --- matching ----------------------------------------------------------- */

static const char *const match_allow[] = {
	"example.com", "*.wild.test", "api.test:8443", "any.test:*", "*.both.test",
	"blocked.both.test", "192.0.2.0/24:443", "198.51.100.7", "2001:db8::/32",
	"[2001:db8:1::1]:22",
};
static const char *const match_deny[] = {
	"blocked.both.test", "*.bad.wild.test", "192.0.2.128/25", "198.51.100.0/24:25",
	"[2001:db8:dead::]/48",
};

static struct policy *match_policy(void)
{
	struct policy *p = policy_new("match");
	char err[256];
	size_t i;

	assert_non_null(p);
	for (i = 0; i < ARRAY_SIZE(match_allow); i++)
		assert_int_equal(policy_add_rule(p, false, match_allow[i], "t", err, sizeof(err)), 0);
	for (i = 0; i < ARRAY_SIZE(match_deny); i++)
		assert_int_equal(policy_add_rule(p, true, match_deny[i], "t", err, sizeof(err)), 0);
	return p;
}

static const struct {
	const char *host;
	uint16_t port;
	enum egr_verdict verdict;
	enum egr_reason reason;
	const char *rule;
} name_cases[] = {
	{ "example.com", 443, EGR_VERDICT_ALLOW, EGR_REASON_RULE_ALLOW, "example.com" },
	{ "example.com", 80, EGR_VERDICT_ALLOW, EGR_REASON_RULE_ALLOW, "example.com" },
	{ "example.com", 8080, EGR_VERDICT_DENY, EGR_REASON_NO_MATCH, NULL },
	{ "example.com", 22, EGR_VERDICT_DENY, EGR_REASON_NO_MATCH, NULL },
	{ "EXAMPLE.Com.", 443, EGR_VERDICT_ALLOW, EGR_REASON_RULE_ALLOW, "example.com" },
	{ "www.example.com", 443, EGR_VERDICT_DENY, EGR_REASON_NO_MATCH, NULL },
	{ "notexample.com", 443, EGR_VERDICT_DENY, EGR_REASON_NO_MATCH, NULL },
	{ "example.com.evil.test", 443, EGR_VERDICT_DENY, EGR_REASON_NO_MATCH, NULL },
	{ "wild.test", 443, EGR_VERDICT_DENY, EGR_REASON_NO_MATCH, NULL },
	{ "a.wild.test", 443, EGR_VERDICT_ALLOW, EGR_REASON_RULE_ALLOW, "*.wild.test" },
	{ "A.Wild.Test.", 80, EGR_VERDICT_ALLOW, EGR_REASON_RULE_ALLOW, "*.wild.test" },
	{ "a.b.wild.test", 443, EGR_VERDICT_ALLOW, EGR_REASON_RULE_ALLOW, "*.wild.test" },
	{ "xwild.test", 443, EGR_VERDICT_DENY, EGR_REASON_NO_MATCH, NULL },
	{ ".wild.test", 443, EGR_VERDICT_DENY, EGR_REASON_NO_MATCH, NULL },
	{ "a.wild.test", 22, EGR_VERDICT_DENY, EGR_REASON_NO_MATCH, NULL },
	{ "api.test", 8443, EGR_VERDICT_ALLOW, EGR_REASON_RULE_ALLOW, "api.test:8443" },
	{ "api.test", 443, EGR_VERDICT_DENY, EGR_REASON_NO_MATCH, NULL },
	{ "any.test", 1, EGR_VERDICT_ALLOW, EGR_REASON_RULE_ALLOW, "any.test:*" },
	{ "any.test", 65535, EGR_VERDICT_ALLOW, EGR_REASON_RULE_ALLOW, "any.test:*" },
	{ "x.any.test", 443, EGR_VERDICT_DENY, EGR_REASON_NO_MATCH, NULL },
	/* deny wins, and deny wildcards are strict too */
	{ "x.bad.wild.test", 443, EGR_VERDICT_DENY, EGR_REASON_RULE_DENY, "*.bad.wild.test" },
	{ "bad.wild.test", 443, EGR_VERDICT_ALLOW, EGR_REASON_RULE_ALLOW, "*.wild.test" },
	{ "blocked.both.test", 443, EGR_VERDICT_DENY, EGR_REASON_RULE_DENY, "blocked.both.test" },
	{ "Blocked.Both.Test.", 80, EGR_VERDICT_DENY, EGR_REASON_RULE_DENY, "blocked.both.test" },
	/* the deny rule has default ports: another port is decided by allow */
	{ "blocked.both.test", 8080, EGR_VERDICT_DENY, EGR_REASON_NO_MATCH, NULL },
	{ "other.both.test", 443, EGR_VERDICT_ALLOW, EGR_REASON_RULE_ALLOW, "*.both.test" },
	{ "evil.test", 443, EGR_VERDICT_DENY, EGR_REASON_NO_MATCH, NULL },
	/* names never match address rules */
	{ "192.0.2.1", 443, EGR_VERDICT_DENY, EGR_REASON_NO_MATCH, NULL },
	{ "", 443, EGR_VERDICT_DENY, EGR_REASON_NO_MATCH, NULL },
};

static void test_decide_name(void **state)
{
	struct policy *p = match_policy();
	size_t i;

	for (i = 0; i < ARRAY_SIZE(name_cases); i++) {
		struct policy_decision d;

		memset(&d, 0xaa, sizeof(d));
		policy_decide_name(p, name_cases[i].host, name_cases[i].port, &d);
		if (d.verdict != name_cases[i].verdict || d.reason != name_cases[i].reason)
			fail_msg("%s:%u: verdict %d reason %d, want %d %d", name_cases[i].host,
				 name_cases[i].port, d.verdict, d.reason,
				 name_cases[i].verdict, name_cases[i].reason);
		if (name_cases[i].rule) {
			assert_non_null(d.rule);
			assert_string_equal(d.rule->text, name_cases[i].rule);
		} else {
			assert_null(d.rule);
		}
	}
	policy_free(p);
}

static const struct {
	const char *addr;
	uint16_t port;
	enum egr_verdict verdict;
	enum egr_reason reason;
	const char *rule;
	bool names;
} addr_cases[] = {
	{ "192.0.2.1", 443, EGR_VERDICT_ALLOW, EGR_REASON_RULE_ALLOW, "192.0.2.0/24:443", true },
	{ "::ffff:192.0.2.1", 443, EGR_VERDICT_ALLOW, EGR_REASON_RULE_ALLOW, "192.0.2.0/24:443", true },
	{ "192.0.2.1", 80, EGR_VERDICT_DENY, EGR_REASON_NO_MATCH, NULL, false },
	{ "192.0.2.200", 443, EGR_VERDICT_DENY, EGR_REASON_RULE_DENY, "192.0.2.128/25", true },
	{ "192.0.2.128", 1, EGR_VERDICT_DENY, EGR_REASON_RULE_DENY, "192.0.2.128/25", false },
	{ "198.51.100.7", 22, EGR_VERDICT_ALLOW, EGR_REASON_RULE_ALLOW, "198.51.100.7", true },
	{ "198.51.100.7", 25, EGR_VERDICT_DENY, EGR_REASON_RULE_DENY, "198.51.100.0/24:25", true },
	{ "198.51.100.8", 22, EGR_VERDICT_DENY, EGR_REASON_NO_MATCH, NULL, false },
	{ "203.0.113.1", 443, EGR_VERDICT_DENY, EGR_REASON_NO_MATCH, NULL, false },
	{ "2001:db8:5::1", 9999, EGR_VERDICT_ALLOW, EGR_REASON_RULE_ALLOW, "2001:db8::/32", true },
	{ "2001:db8:1::1", 22, EGR_VERDICT_ALLOW, EGR_REASON_RULE_ALLOW, "2001:db8::/32", true },
	{ "2001:db8:dead::1", 443, EGR_VERDICT_DENY, EGR_REASON_RULE_DENY, "2001:db8:dead::/48", true },
	{ "2001:db9::1", 443, EGR_VERDICT_DENY, EGR_REASON_NO_MATCH, NULL, false },
	/* v4 rules do not leak into v6 space and back */
	{ "::192.0.2.1", 443, EGR_VERDICT_DENY, EGR_REASON_NO_MATCH, NULL, false },
	{ "10.0.0.1", 443, EGR_VERDICT_DENY, EGR_REASON_NO_MATCH, NULL, false },
};

static void test_decide_addr(void **state)
{
	struct policy *p = match_policy();
	size_t i;

	for (i = 0; i < ARRAY_SIZE(addr_cases); i++) {
		struct policy_decision d;
		struct egr_addr a;

		assert_int_equal(addr_parse(addr_cases[i].addr, &a), 0);
		policy_decide_addr(p, &a, addr_cases[i].port, &d);
		if (d.verdict != addr_cases[i].verdict || d.reason != addr_cases[i].reason)
			fail_msg("%s:%u: verdict %d reason %d, want %d %d", addr_cases[i].addr,
				 addr_cases[i].port, d.verdict, d.reason,
				 addr_cases[i].verdict, addr_cases[i].reason);
		if (addr_cases[i].rule) {
			assert_non_null(d.rule);
			assert_string_equal(d.rule->text, addr_cases[i].rule);
		} else {
			assert_null(d.rule);
		}
		if (policy_names_addr(p, &a, addr_cases[i].port) != addr_cases[i].names)
			fail_msg("%s:%u: names_addr want %d", addr_cases[i].addr,
				 addr_cases[i].port, addr_cases[i].names);
	}
	policy_free(p);
}

static void test_empty_policy_denies(void **state)
{
	struct policy *p = policy_new(NULL);
	struct policy_decision d;
	struct egr_addr a;

	policy_decide_name(p, "example.com", 443, &d);
	assert_int_equal(d.verdict, EGR_VERDICT_DENY);
	assert_int_equal(d.reason, EGR_REASON_NO_MATCH);
	addr_parse("192.0.2.1", &a);
	policy_decide_addr(p, &a, 443, &d);
	assert_int_equal(d.verdict, EGR_VERDICT_DENY);
	policy_decide_name(NULL, "example.com", 443, &d);
	assert_int_equal(d.verdict, EGR_VERDICT_DENY);
	assert_false(policy_names_addr(p, &a, 443));
	policy_free(p);
	policy_free(NULL);
}

/* --- allowed ports ------------------------------------------------------ */

static void add_all(struct policy *p, bool deny, const char *const *rules, size_t n)
{
	char err[256];
	size_t i;

	for (i = 0; i < n; i++)
		if (policy_add_rule(p, deny, rules[i], "t", err, sizeof(err)))
			fail_msg("%s: %s", rules[i], err);
}

static void test_allowed_ports(void **state)
{
	static const char *const allow[] = {
		"api.test:8443", "example.com", "192.0.2.0/24:22", "[2001:db8::1]:8443",
		"*.x.test:80",
	};
	static const char *const deny[] = { "evil.test:25", "192.0.2.0/24" };
	struct policy *p = policy_new("t");
	uint16_t ports[8];
	bool any;
	size_t n;

	assert_int_equal(policy_allowed_ports(p, &any, ports, 8, &n), 0);
	assert_false(any);
	assert_int_equal(n, 0);

	add_all(p, false, allow, ARRAY_SIZE(allow));
	add_all(p, true, deny, ARRAY_SIZE(deny)); /* deny rules add no port */
	assert_int_equal(policy_allowed_ports(p, &any, ports, 8, &n), 0);
	assert_false(any);
	assert_int_equal(n, 4);
	assert_int_equal(ports[0], 22);
	assert_int_equal(ports[1], 80);
	assert_int_equal(ports[2], 443);
	assert_int_equal(ports[3], 8443);
	assert_int_equal(policy_allowed_ports(p, &any, ports, 3, &n), -E2BIG);

	add_all(p, false, (const char *const[]){ "any.test:*" }, 1);
	assert_int_equal(policy_allowed_ports(p, &any, ports, 8, &n), 0);
	assert_true(any);
	policy_free(p);

	p = policy_new("t");
	add_all(p, false, (const char *const[]){ "198.51.100.0/24" }, 1);
	assert_int_equal(policy_allowed_ports(p, &any, ports, 8, &n), 0);
	assert_true(any);
	policy_free(p);
}

/* --- suggestions -------------------------------------------------------- */

static const struct {
	const char *host, *addr;
	uint16_t port;
	const char *want;
} suggest_cases[] = {
	{ "evil.test", NULL, 443, "evil.test" },
	{ "Evil.Test.", "192.0.2.66", 80, "evil.test" },
	{ "evil.test", NULL, 8443, "evil.test:8443" },
	{ NULL, "192.0.2.1", 22, "192.0.2.1:22" },
	{ NULL, "::ffff:192.0.2.1", 443, "192.0.2.1:443" },
	{ NULL, "2001:db8::1", 443, "[2001:db8::1]:443" },
	/* an IP-literal name falls back to the address */
	{ "192.0.2.9", "192.0.2.9", 443, "192.0.2.9:443" },
	{ "bad name!", "192.0.2.9", 443, "192.0.2.9:443" },
};

static void test_suggest(void **state)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(suggest_cases); i++) {
		struct egr_addr a, *ap = NULL;
		struct policy_decision d;
		struct policy *p;
		char buf[300], err[256];

		if (suggest_cases[i].addr) {
			assert_int_equal(addr_parse(suggest_cases[i].addr, &a), 0);
			ap = &a;
		}
		policy_suggest_rule(suggest_cases[i].host, ap, suggest_cases[i].port,
				    buf, sizeof(buf));
		assert_string_equal(buf, suggest_cases[i].want);
		/* the suggestion really admits what was denied */
		p = policy_new("t");
		assert_int_equal(policy_add_rule(p, false, buf, "--allow", err, sizeof(err)), 0);
		if (p->allow[0].kind == RULE_DOMAIN)
			policy_decide_name(p, suggest_cases[i].host, suggest_cases[i].port, &d);
		else
			policy_decide_addr(p, ap, suggest_cases[i].port, &d);
		assert_int_equal(d.verdict, EGR_VERDICT_ALLOW);
		policy_free(p);
	}
}

/* --- JSON files --------------------------------------------------------- */

static const struct {
	const char *what;
	const char *text;
	const char *err;
} file_cases[] = {
	{ "syntax error (trailing comma)",
	  "{\n  \"name\": \"x\",\n  \"allow\": [\n    \"a.com\",\n  ]\n}\n",
	  "p.json:5: syntax error: unexpected token near ']'" },
	{ "empty file", "", "p.json:1: syntax error: '[' or '{' expected near end of file" },
	{ "duplicate key",
	  "{\n  \"allow\": [],\n  \"allow\": []\n}\n",
	  "p.json:3: syntax error: duplicate object key near '\"allow\"'" },
	{ "unknown field with suggestion",
	  "{\n  \"name\": \"x\",\n  \"alow\": [\"a.com\"]\n}\n",
	  "p.json:3: alow: unknown field (did you mean \"allow\"?)" },
	{ "unknown field, transposed",
	  "{\n  \"mdoe\": \"audit\"\n}\n",
	  "p.json:2: mdoe: unknown field (did you mean \"mode\"?)" },
	{ "unknown field without suggestion",
	  "{\n  \"name\": \"x\",\n\n  \"policies\": {}\n}\n",
	  "p.json:4: policies: unknown field (expected name, mode, allow, deny, intercept, "
	  "upstream_ca, gateways, deny_countries)" },
	{ "top level not an object", "\n[\"a.com\"]\n",
	  "p.json:2: top level: expected an object, got an array" },
	{ "allow not an array",
	  "{\n  \"name\": \"x\",\n  \"allow\":\n    \"a.com\"\n}\n",
	  "p.json:4: allow: expected an array of rule strings, got a string" },
	{ "rule not a string",
	  "{\n  \"deny\": [\n    \"a.com\",\n    443\n  ]\n}\n",
	  "p.json:4: deny[1]: expected a rule string, got an integer" },
	{ "bad rule in allow[3] on line 9",
	  "{\n"
	  "  \"name\": \"dev\",\n"
	  "  \"mode\": \"enforce\",\n"
	  "  \"allow\": [\n"
	  "    \"api.anthropic.com\",\n"
	  "    \"github.com\",\n"
	  "\n"
	  "    \"pypi.org\",\n"
	  "    \"*.\"\n"
	  "  ]\n"
	  "}\n",
	  "p.json:9: allow[3]: \"*.\": invalid domain name" },
	{ "bad rule after nested junk in another key",
	  "{\n"
	  "  \"deny\": [\"a.com\"],\n"
	  "  \"allow\": [\n"
	  "    \"ok.com\", \"x.com:99999\"\n"
	  "  ]\n"
	  "}\n",
	  "p.json:4: allow[1]: \"x.com:99999\": invalid port \"99999\" (1-65535 or *)" },
	{ "locator skips strings with brackets and escaped quotes",
	  "{\n"
	  "  \"name\": \"x\",\n"
	  "  \"allow\": [\n"
	  "    [\"]\", \"\\\"]\"], {\"a\": \"}\"},\n"
	  "    \"*\"\n"
	  "  ]\n"
	  "}\n",
	  "p.json:4: allow[0]: expected a rule string or {\"rule\": ..., \"asn\": [...]}, "
	  "got an array" },
	{ "escaped key is found by the locator",
	  "{\n"
	  "  \"name\": \"x\",\n"
	  "  \"\\u0061llow\": [\n"
	  "    \"ok.com\",\n"
	  "    \"192.0.2.1/24\"\n"
	  "  ]\n"
	  "}\n",
	  "p.json:5: allow[1]: \"192.0.2.1/24\": host bits set, did you mean 192.0.2.0/24" },
	{ "bad mode",
	  "{\n  \"name\": \"x\",\n  \"mode\": \"block\"\n}\n",
	  "p.json:3: mode: \"block\": must be \"enforce\" or \"audit\"" },
	{ "mode wrong type",
	  "{\n  \"mode\": true\n}\n",
	  "p.json:2: mode: expected a string, got a boolean" },
	{ "bad inbound",
	  "{\n  \"name\": \"x\",\n  \"inbound\": \"all\"\n}\n",
	  "p.json:3: inbound: \"all\": must be \"local\" or \"any\"" },
	{ "inbound wrong type",
	  "{\n  \"inbound\": true\n}\n",
	  "p.json:2: inbound: expected a string, got a boolean" },
	{ "bad name",
	  "{\n  \"name\": \"my policy\"\n}\n",
	  "p.json:2: name: \"my policy\": must be 1-64 characters of A-Z a-z 0-9 . _ -" },
	{ "name wrong type",
	  "{\"name\": null}",
	  "p.json:1: name: expected a string, got null" },
	{ "control characters in a rule are quoted",
	  "{\"allow\": [\"a\\nb.com\"]}",
	  "p.json:1: allow[0]: \"a\\nb.com\": contains whitespace or control characters" },
	{ "quoted as JSON, like the daemon config's messages",
	  "{\"allow\": [\"a\\tb\\u00e9\\\\.com\"]}",
	  "p.json:1: allow[0]: \"a\\tb\\u00E9\\\\.com\": contains whitespace or control characters" },
	{ "wildcard over a TLD",
	  "{\n  \"deny\": [\n    \"*.com\"\n  ]\n}",
	  "p.json:3: deny[0]: \"*.com\": wildcard over a top-level domain would allow half the "
	  "internet; name the domain, e.g. *.example.com" },
};

static struct policy *orig_policy(void)
{
	struct policy *p = policy_new("orig");
	char err[256];

	assert_int_equal(policy_add_rule(p, false, "keep.test", "t", err, sizeof(err)), 0);
	assert_int_equal(policy_add_rule(p, true, "192.0.2.0/24", "t", err, sizeof(err)), 0);
	return p;
}

static void assert_orig(const struct policy *p)
{
	assert_string_equal(p->name, "orig");
	assert_int_equal(p->mode, POLICY_ENFORCE);
	assert_int_equal(p->n_allow, 1);
	assert_int_equal(p->n_deny, 1);
	assert_string_equal(p->allow[0].text, "keep.test");
	assert_string_equal(p->deny[0].text, "192.0.2.0/24");
}

static void test_file_errors(void **state)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(file_cases); i++) {
		struct policy *p = orig_policy();
		char err[512] = "";
		int r;

		r = policy_load_buffer(p, "p.json", file_cases[i].text,
				       strlen(file_cases[i].text), err, sizeof(err));
		if (r >= 0)
			fail_msg("%s: accepted", file_cases[i].what);
		if (strcmp(err, file_cases[i].err))
			fail_msg("%s:\n got: %s\nwant: %s", file_cases[i].what, err,
				 file_cases[i].err);
		/* nothing half-applied */
		assert_orig(p);
		policy_free(p);
	}
}

static void test_file_unchanged_after_late_error(void **state)
{
	static const char text[] =
		"{\n"
		"  \"name\": \"new\",\n"
		"  \"mode\": \"audit\",\n"
		"  \"allow\": [\"a.test\", \"b.test\", \"*.c.test:8443\"],\n"
		"  \"deny\": [\"d.test\", \"e..test\"]\n"
		"}\n";
	struct policy *p = orig_policy();
	char err[512];

	assert_int_equal(policy_load_buffer(p, "p.json", text, strlen(text), err,
					    sizeof(err)), -EINVAL);
	assert_string_equal(err, "p.json:5: deny[1]: \"e..test\": invalid domain name (empty label)");
	assert_orig(p);
	policy_free(p);
}

/* jansson accepts "[1\0]" (a NUL ends the number); the line locator once
 * looped forever on it (found by fuzz_policy). */
static void test_file_nul_after_number(void **state)
{
	static const char text[] = "{\"allow\":\n [1\0]}";
	struct policy *p = orig_policy();
	char err[256];

	assert_int_equal(policy_load_buffer(p, "p.json", text, sizeof(text) - 1, err,
					    sizeof(err)), -EINVAL);
	assert_string_equal(err, "p.json:2: allow[0]: expected a rule string or {\"rule\": ..., "
			    "\"asn\": [...]}, got an integer");
	assert_orig(p);
	policy_free(p);
}

/* Typo suggestions follow the daemon config's rule (jpos_suggest: more
 * edits allowed for longer words), so a policy file and the same policy
 * inline in config.json suggest the same. policy.c once allowed 2 edits
 * at any length: "dns" became "deny", "deny_country" got no suggestion. */
static void test_file_suggestions(void **state)
{
	static const struct {
		const char *text, *err;
	} cases[] = {
		{ "{\n \"deny_country\": [\"KP\"]}",
		  "p.json:2: deny_country: unknown field (did you mean \"deny_countries\"?)" },
		{ "{\"dns\": 1}",
		  "p.json:1: dns: unknown field (expected name, mode, allow, deny, intercept, "
		  "upstream_ca, gateways, deny_countries)" },
		{ "{\"allow\": [\"a.test\"], \"intercept\": [{\"host\": \"a.test\",\n"
		  "  \"rules\": [{\"NAEM\": \"x\"}]}]}",
		  "p.json:2: intercept[0].rules[0].NAEM: unknown field (did you mean \"name\"?)" },
	};
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		struct policy *p = orig_policy();
		char err[512] = "";

		assert_int_equal(policy_load_buffer(p, "p.json", cases[i].text,
						    strlen(cases[i].text), err, sizeof(err)),
				 -EINVAL);
		assert_string_equal(err, cases[i].err);
		assert_orig(p);
		policy_free(p);
	}
}

static void test_file_too_large(void **state)
{
	size_t len = 1024 * 1024 + 1;
	char *big = malloc(len);
	struct policy *p = orig_policy();
	char err[256];

	memset(big, ' ', len);
	big[0] = '{';
	big[len - 1] = '}';
	assert_int_equal(policy_load_buffer(p, "big.json", big, len, err, sizeof(err)), -EFBIG);
	assert_string_equal(err, "big.json: larger than 1048576 bytes");
	assert_orig(p);
	/* just under the limit is fine */
	assert_int_equal(policy_load_buffer(p, "big.json", big, len - 1 - 1, err,
					    sizeof(err)), -EINVAL); /* no closing brace */
	big[len - 2] = '}';
	assert_int_equal(policy_load_buffer(p, "big.json", big, len - 1, err, sizeof(err)), 0);
	free(big);
	policy_free(p);
}

static void test_file_ok(void **state)
{
	static const char text[] =
		"{\n"
		"  \"name\": \"dev-agent\",\n"
		"  \"mode\": \"audit\", \"inbound\": \"any\",\n"
		"  \"allow\": [\n"
		"    \"Api.Example.com\",\n"
		"    \"*.example.org:8443\",\n"
		"    \"192.0.2.0/24:443\",\n"
		"    \"example.net\", \"example.net\"\n"
		"  ],\n"
		"  \"deny\": [\"evil.example.org\"]\n"
		"}\n";
	struct policy *p = orig_policy();
	struct policy_decision d;
	char err[256];

	assert_int_equal(policy_load_buffer(p, "p.json", text, strlen(text), err,
					    sizeof(err)), 0);
	assert_string_equal(p->name, "dev-agent");
	assert_int_equal(p->mode, POLICY_AUDIT);
	assert_true(p->inbound_any);
	/* appended after what p had; duplicates tolerated */
	assert_int_equal(p->n_allow, 1 + 5);
	assert_int_equal(p->n_deny, 1 + 1);
	assert_string_equal(p->allow[0].text, "keep.test");
	assert_string_equal(p->allow[1].text, "api.example.com");
	assert_string_equal(p->allow[1].source, "p.json:5");
	assert_string_equal(p->allow[2].source, "p.json:6");
	assert_string_equal(p->allow[4].source, "p.json:8");
	assert_string_equal(p->allow[5].source, "p.json:8");
	assert_string_equal(p->deny[1].text, "evil.example.org");
	assert_string_equal(p->deny[1].source, "p.json:10");
	/* the deny rule has default ports, so 8443 falls to the allow wildcard */
	policy_decide_name(p, "evil.example.org", 8443, &d);
	assert_int_equal(d.reason, EGR_REASON_RULE_ALLOW);
	policy_decide_name(p, "evil.example.org", 443, &d);
	assert_int_equal(d.reason, EGR_REASON_RULE_DENY);
	policy_decide_name(p, "x.example.org", 8443, &d);
	assert_int_equal(d.reason, EGR_REASON_RULE_ALLOW);

	/* absent name/mode/inbound leave them as they are */
	assert_int_equal(policy_load_buffer(p, "q.json", "{\"allow\": [\"more.test\"]}", 24,
					    err, sizeof(err)), 0);
	assert_string_equal(p->name, "dev-agent");
	assert_int_equal(p->mode, POLICY_AUDIT);
	assert_true(p->inbound_any);
	assert_int_equal(p->n_allow, 7);
	assert_string_equal(p->allow[6].source, "q.json:1");
	policy_free(p);
}

static void test_load_file(void **state)
{
	char path[] = "/tmp/test_policy_XXXXXX";
	static const char text[] = "{\n  \"name\": \"f\",\n  \"allow\": [\"a.test\", \"*.\"]\n}\n";
	struct policy *p = policy_new("orig");
	char err[512], want[600];
	int fd = mkstemp(path);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	assert_int_equal(policy_load_file(p, path, err, sizeof(err)), -EINVAL);
	snprintf(want, sizeof(want), "%s:3: allow[1]: \"*.\": invalid domain name", path);
	assert_string_equal(err, want);
	unlink(path);
	assert_int_equal(policy_load_file(p, path, err, sizeof(err)), -ENOENT);
	snprintf(want, sizeof(want), "%s: No such file or directory", path);
	assert_string_equal(err, want);
	assert_int_equal(policy_load_file(p, "/tmp", err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "/tmp: not a regular file");
	assert_int_equal(p->n_allow, 0);
	policy_free(p);
}

static void roundtrip(const struct policy *p)
{
	struct policy *q = policy_new("other");
	char *buf = NULL, err[256];
	size_t len = 0, i;
	FILE *f = open_memstream(&buf, &len);

	assert_non_null(f);
	assert_int_equal(policy_write_json(p, f), 0);
	fclose(f);
	if (p->n_allow)
		assert_non_null(strstr(buf, "\n  \"allow\": [\n    \""));
	if (policy_load_buffer(q, "out.json", buf, len, err, sizeof(err)))
		fail_msg("%s\n%s", err, buf);
	assert_string_equal(q->name, p->name);
	assert_int_equal(q->mode, p->mode);
	assert_int_equal(q->n_allow, p->n_allow);
	assert_int_equal(q->n_deny, p->n_deny);
	for (i = 0; i < p->n_allow; i++)
		assert_string_equal(q->allow[i].text, p->allow[i].text);
	for (i = 0; i < p->n_deny; i++)
		assert_string_equal(q->deny[i].text, p->deny[i].text);
	free(buf);
	policy_free(q);
}

static void test_write_json_roundtrip(void **state)
{
	struct policy *p = match_policy();
	struct policy *d = policy_default();
	struct policy *e = policy_new("empty");

	p->mode = POLICY_AUDIT;
	roundtrip(p);
	roundtrip(d);
	roundtrip(e);
	policy_free(p);
	policy_free(d);
	policy_free(e);
}

static void test_default_policy(void **state)
{
	static const struct {
		const char *host;
		uint16_t port;
		enum egr_verdict verdict;
	} cases[] = {
		{ "api.anthropic.com", 443, EGR_VERDICT_ALLOW },
		{ "claude.ai", 443, EGR_VERDICT_ALLOW },
		{ "github.com", 443, EGR_VERDICT_ALLOW },
		{ "api.github.com", 443, EGR_VERDICT_ALLOW },
		{ "uploads.github.com", 443, EGR_VERDICT_ALLOW },
		{ "avatars.githubusercontent.com", 443, EGR_VERDICT_ALLOW },
		{ "registry.npmjs.org", 443, EGR_VERDICT_ALLOW },
		{ "files.pythonhosted.org", 443, EGR_VERDICT_ALLOW },
		{ "index.crates.io", 443, EGR_VERDICT_ALLOW },
		{ "proxy.golang.org", 443, EGR_VERDICT_ALLOW },
		{ "evil.test", 443, EGR_VERDICT_DENY },
		{ "anthropic.com", 443, EGR_VERDICT_DENY },
		{ "github.com", 22, EGR_VERDICT_DENY },   /* ssh needs the DNS proxy */
		{ "githubusercontent.com", 443, EGR_VERDICT_DENY },
		{ "api.anthropic.com.evil.test", 443, EGR_VERDICT_DENY },
	};
	struct policy *p = policy_default();
	struct policy_decision d;
	uint16_t ports[4];
	bool any;
	size_t i, n;

	assert_non_null(p);
	assert_string_equal(p->name, "default");
	assert_int_equal(p->mode, POLICY_ENFORCE);
	assert_int_equal(p->n_allow, 18);
	assert_int_equal(p->n_deny, 0);
	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		policy_decide_name(p, cases[i].host, cases[i].port, &d);
		if (d.verdict != cases[i].verdict)
			fail_msg("%s:%u: verdict %d", cases[i].host, cases[i].port, d.verdict);
	}
	assert_int_equal(policy_allowed_ports(p, &any, ports, 4, &n), 0);
	assert_false(any);
	assert_int_equal(n, 2);
	assert_int_equal(ports[0], 80);
	assert_int_equal(ports[1], 443);
	policy_free(p);
}

static void test_rule_limit(void **state)
{
	struct policy *p = policy_new("t");
	char err[256], rule[64];
	int i;

	for (i = 0; i < 10000; i++) {
		snprintf(rule, sizeof(rule), "h%d.test", i);
		assert_int_equal(policy_add_rule(p, i & 1, rule, NULL, err, sizeof(err)), 0);
	}
	assert_int_equal(policy_add_rule(p, false, "one.more.test", NULL, err, sizeof(err)), -E2BIG);
	assert_string_equal(err, "too many rules (at most 10000)");
	assert_string_equal(p->allow[4999].text, "h9998.test");
	policy_free(p);
}

/* --- DNS: which names the DNS proxy may resolve ------------------------- */

static void test_name_resolvable(void **state)
{
	static const char *const allow[] = {
		"allowed.test", "*.wild.test", "ssh.test:22", "any.test:*",
		"both.test", "192.0.2.0/24", "sub.deny.test",
	};
	static const char *const deny[] = {
		"blocked.any.test:*", "*.wild.test:*", "ports.test", "both.test:443",
		"deny.test:*",
	};
	static const struct {
		const char *name;
		bool resolvable;
	} cases[] = {
		{ "allowed.test", true },
		{ "www.allowed.test", false },     /* exact rule: not its subdomains */
		{ "a.wild.test", false },          /* denied on every port */
		{ "wild.test", false },            /* wildcard: strict subdomains only */
		{ "ssh.test", true },              /* allowed on port 22 only: still resolvable */
		{ "any.test", true },
		{ "blocked.any.test", false },
		{ "both.test", true },             /* denied on 443 only, 80 still allowed */
		{ "ports.test", false },           /* only a deny rule: no allow matches */
		{ "sub.deny.test", true },         /* deny.test:* is exact, not *.deny.test */
		{ "deny.test", false },
		{ "evil.test", false },
		{ "allowed.test.evil.test", false },
		{ "192.0.2.7", false },            /* CIDR rules name no domain */
		{ "", false },
	};
	struct policy *p = policy_new("dns");
	char err[256];
	size_t i;

	assert_non_null(p);
	for (i = 0; i < ARRAY_SIZE(allow); i++)
		assert_int_equal(policy_add_rule(p, false, allow[i], NULL, err, sizeof(err)), 0);
	for (i = 0; i < ARRAY_SIZE(deny); i++)
		assert_int_equal(policy_add_rule(p, true, deny[i], NULL, err, sizeof(err)), 0);
	for (i = 0; i < ARRAY_SIZE(cases); i++)
		if (policy_name_resolvable(p, cases[i].name) != cases[i].resolvable)
			fail_msg("%s: expected %s", cases[i].name,
				 cases[i].resolvable ? "resolvable" : "not resolvable");
	assert_false(policy_name_resolvable(NULL, "allowed.test"));
	assert_false(policy_name_resolvable(p, NULL));
	policy_free(p);
}

/* --- TLS interception --------------------------------------------------- */

static const char ic_text[] =
	"{\n"                                                           /* 1 */
	"  \"name\": \"gh\",\n"                                         /* 2 */
	"  \"allow\": [\"api.github.com\", \"*.example.com\"],\n"       /* 3 */
	"  \"intercept\": [\n"                                          /* 4 */
	"    { \"host\": \"API.GitHub.com.\",\n"                        /* 5 */
	"      \"rules\": [\n"                                          /* 6 */
	"        { \"name\": \"read-acme\", \"methods\": [\"GET\", \"HEAD\"],\n" /* 7 */
	"          \"paths\": [\"/repos/acme/**\"] },\n"                /* 8 */
	"        { \"name\": \"no-delete\", \"action\": \"deny\", \"methods\": \"DELETE\",\n"
	"          \"paths\": \"/**\", \"max_body\": 10 }\n"           /* 10 */
	"      ],\n"                                                    /* 11 */
	"      \"max_body\": \"1MiB\",\n"                              /* 12 */
	"      \"credentials\": [ { \"name\": \"github\", \"header\": \"Authorization\",\n"
	"                           \"value\": \"env:EGR_TEST_GH_TOKEN\", \"path_prefix\": \"/\" } ] },\n"
	"    { \"host\": \"*.example.com\",\n"                          /* 15 */
	"      \"credentials\": [ { \"header\": \"x-api-key\", \"value\": \"file:/run/secrets/k\" } ] }\n"
	"  ],\n"                                                        /* 17 */
	"  \"upstream_ca\": \"/etc/ssl/certs/ca-certificates.crt\"\n"  /* 18 */
	"}\n";

static void test_intercept_file_ok(void **state)
{
	struct policy *p = policy_new("orig");
	const struct reqrule_host *h;
	uint64_t get_head, del;
	char err[512];

	assert_int_equal(policy_load_buffer(p, "p.json", ic_text, strlen(ic_text), err,
					    sizeof(err)), 0);
	assert_int_equal(p->n_intercept, 2);
	assert_string_equal(p->upstream_ca, "/etc/ssl/certs/ca-certificates.crt");

	h = policy_intercept_for(p, "api.github.com");
	assert_non_null(h);
	assert_ptr_equal(h, &p->intercept[0].rules);
	assert_string_equal(p->intercept[0].pattern, "api.github.com");
	assert_string_equal(p->intercept[0].source, "p.json:5");
	assert_string_equal(h->host, "api.github.com");
	assert_int_equal(h->n_rules, 2);
	assert_string_equal(h->rules[0].name, "read-acme");
	assert_int_equal(h->rules[0].action, REQRULE_ALLOW);
	assert_int_equal(reqrule_parse_methods("GET,HEAD", &get_head), 0);
	assert_int_equal(h->rules[0].methods, get_head);
	assert_int_equal(h->rules[0].n_globs, 1);
	assert_string_equal(h->rules[0].globs[0], "/repos/acme/**");
	assert_int_equal(h->rules[0].max_body, 1024 * 1024); /* the host's default */
	assert_string_equal(h->rules[1].name, "no-delete");
	assert_int_equal(h->rules[1].action, REQRULE_DENY);
	assert_int_equal(reqrule_parse_methods("DELETE", &del), 0);
	assert_int_equal(h->rules[1].methods, del);
	assert_int_equal(h->rules[1].max_body, 10); /* the rule's own */
	assert_int_equal(h->n_creds, 1);
	assert_string_equal(h->creds[0].name, "github");
	assert_string_equal(h->creds[0].header, "Authorization");
	assert_string_equal(h->creds[0].source, "env:EGR_TEST_GH_TOKEN");
	assert_string_equal(h->creds[0].path_prefix, "/");

	/* case, trailing dot */
	assert_ptr_equal(policy_intercept_for(p, "API.GITHUB.COM."), h);
	/* not intercepted: other names, the parent of a wildcard */
	assert_null(policy_intercept_for(p, "github.com"));
	assert_null(policy_intercept_for(p, "x.api.github.com"));
	assert_null(policy_intercept_for(p, "example.com"));
	assert_null(policy_intercept_for(p, "evil.test"));
	assert_null(policy_intercept_for(p, "badexample.com"));
	assert_null(policy_intercept_for(p, NULL));
	assert_null(policy_intercept_for(NULL, "api.github.com"));

	/* wildcard: every strict subdomain, with the default "all" rule */
	h = policy_intercept_for(p, "a.b.example.com");
	assert_non_null(h);
	assert_ptr_equal(h, policy_intercept_for(p, "api.example.com"));
	assert_string_equal(h->host, "*.example.com");
	assert_int_equal(h->n_rules, 1);
	assert_string_equal(h->rules[0].name, "all");
	assert_int_equal(h->rules[0].methods, UINT64_MAX);
	assert_string_equal(h->rules[0].globs[0], "/**");
	assert_int_equal(h->rules[0].max_body, REQRULE_NO_LIMIT);
	assert_string_equal(h->creds[0].name, "x-api-key"); /* default: the header */
	assert_string_equal(h->creds[0].source, "file:/run/secrets/k");
	policy_free(p);
}

/* An exact entry wins over a wildcard, a longer wildcard over a shorter. */
static void test_intercept_for_precedence(void **state)
{
	struct policy *p = policy_new("x");
	struct reqrule_host *a, *b, *c, *again;
	char err[256];

	assert_int_equal(policy_add_intercept(p, "*.example.com", "t", &a, err, sizeof(err)), 0);
	assert_int_equal(policy_add_intercept(p, "*.api.example.com", "t", &b, err,
					      sizeof(err)), 0);
	assert_int_equal(policy_add_intercept(p, "v1.api.example.com", "t", &c, err,
					      sizeof(err)), 0);
	/* pointers are stable once the policy is built */
	a = &p->intercept[0].rules;
	b = &p->intercept[1].rules;
	c = &p->intercept[2].rules;
	assert_ptr_equal(policy_intercept_for(p, "www.example.com"), a);
	assert_ptr_equal(policy_intercept_for(p, "api.example.com"), a);
	assert_ptr_equal(policy_intercept_for(p, "v2.api.example.com"), b);
	assert_ptr_equal(policy_intercept_for(p, "v1.api.example.com"), c);
	assert_null(policy_intercept_for(p, "example.com"));
	/* the same pattern again returns the existing entry, rules kept */
	assert_int_equal(reqrule_host_add_cred(c, "k", "x-api-key", "", "env:K"), 0);
	assert_int_equal(policy_add_intercept(p, "V1.api.example.com", "t2", &again, err,
					      sizeof(err)), 0);
	assert_ptr_equal(again, c);
	assert_int_equal(p->n_intercept, 3);
	assert_int_equal(c->n_creds, 1);
	policy_free(p);
}

/* --intercept/--inject on a host a (policy file's) wildcard entry already
 * intercepts: the new entry wins the lookup, so it starts with that
 * entry's rules and credentials, not with "every request". */
static void test_intercept_inherits_wildcard_rules(void **state)
{
	struct policy *p = policy_new("x");
	struct reqrule_host *w, *h, *n;
	struct reqrule ro;
	char err[256];

	assert_int_equal(policy_add_intercept(p, "*.example.com", "file", &w, err, sizeof(err)), 0);
	w->n_rules = 0; /* as a file's entry with rules of its own */
	assert_int_equal(reqrule_init(&ro, "ro", "allow", "GET,HEAD", "/**", NULL), 0);
	assert_int_equal(reqrule_host_add_rule(w, &ro), 0);
	assert_int_equal(reqrule_host_add_cred(w, "base", "x-base", "", "env:BASE"), 0);

	assert_int_equal(policy_add_intercept(p, "api.example.com", "--inject", &h, err,
					      sizeof(err)), 0);
	assert_int_equal(reqrule_host_add_cred(h, "tok", "authorization", "", "env:TOK"), 0);
	h = &p->intercept[1].rules;
	assert_ptr_equal(policy_intercept_for(p, "api.example.com"), h);
	assert_int_equal(h->n_rules, 1);
	assert_string_equal(h->rules[0].name, "ro");
	assert_int_equal(h->n_creds, 2);
	assert_string_equal(h->creds[0].name, "base");
	assert_string_equal(h->creds[1].name, "tok");
	/* the wildcard's own entry is unchanged */
	w = &p->intercept[0].rules;
	assert_int_equal(w->n_rules, 1);
	assert_int_equal(w->n_creds, 1);
	/* a narrower wildcard inherits too; a name outside starts with all */
	assert_int_equal(policy_add_intercept(p, "*.v1.example.com", "--intercept", &n, err,
					      sizeof(err)), 0);
	assert_string_equal(p->intercept[2].rules.rules[0].name, "ro");
	assert_int_equal(policy_add_intercept(p, "other.test", "--intercept", &n, err,
					      sizeof(err)), 0);
	assert_string_equal(p->intercept[3].rules.rules[0].name, "all");
	policy_free(p);
}

static void test_intercept_add_and_check(void **state)
{
	static const struct {
		const char *host;
		const char *err; /* NULL: accepted */
	} cases[] = {
		{ "api.example.com", NULL },
		{ "*.example.org", NULL },
		{ "api.example.com:443", "write the host name only (no port, scheme or path): "
		  "interception applies on every port the allow rules open" },
		{ "https://api.example.com", "write the host name only (no port, scheme or path): "
		  "interception applies on every port the allow rules open" },
		{ "*", "a bare '*' would intercept every host; list the hosts" },
		{ "*.com", "wildcard over a top-level domain; name the domain, e.g. *.example.com" },
		{ "192.0.2.7", "an IP address cannot be intercepted (no name to mint a "
		  "certificate for); name the host" },
		{ "a..b", "invalid host name (empty label)" },
		{ "", "invalid host name" },
	};
	struct reqrule_host *h;
	char err[256];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		struct policy *p = policy_new("x");
		int r = policy_add_intercept(p, cases[i].host, "--intercept", &h, err,
					     sizeof(err));

		if (!cases[i].err) {
			if (r)
				fail_msg("%s: %s", cases[i].host, err);
			assert_int_equal(p->n_intercept, 1);
			assert_string_equal(h->rules[0].name, "all");
		} else {
			assert_int_equal(r, -EINVAL);
			if (strcmp(err, cases[i].err))
				fail_msg("%s:\n got: %s\nwant: %s", cases[i].host, err,
					 cases[i].err);
			assert_int_equal(p->n_intercept, 0);
		}
		policy_free(p);
	}

	/* check: an allow rule must let each intercepted host through */
	{
		struct policy *p = policy_new("x");

		assert_int_equal(policy_add_intercept(p, "api.example.com", "--intercept", NULL,
						      err, sizeof(err)), 0);
		assert_int_equal(policy_check_intercept(p, err, sizeof(err)), -EINVAL);
		assert_string_equal(err, "api.example.com (--intercept): is not allowed by any "
				    "allow rule (add one, e.g. --allow api.example.com)");
		assert_int_equal(policy_add_rule(p, false, "*.example.com:8443", NULL, err,
						 sizeof(err)), 0);
		assert_int_equal(policy_check_intercept(p, err, sizeof(err)), 0);
		/* a wildcard intercept needs a wildcard allow over it */
		assert_int_equal(policy_add_intercept(p, "*.v1.example.org", "--intercept",
						      NULL, err, sizeof(err)), 0);
		assert_int_equal(policy_add_rule(p, false, "v1.example.org", NULL, err,
						 sizeof(err)), 0);
		assert_int_equal(policy_check_intercept(p, err, sizeof(err)), -EINVAL);
		assert_int_equal(policy_add_rule(p, false, "*.example.org", NULL, err,
						 sizeof(err)), 0);
		assert_int_equal(policy_check_intercept(p, err, sizeof(err)), 0);
		policy_free(p);
	}
}

#define IC_HEAD "{\n  \"allow\": [\"api.test\", \"*.wild.test\"],\n  \"intercept\": [\n"
#define IC_TAIL "  ]\n}\n"

static const struct {
	const char *what;
	const char *text;
	const char *err;
} ic_err_cases[] = {
	{ "intercepted host not allowed",
	  IC_HEAD "    { \"host\": \"api.test\" },\n    { \"host\": \"api.github.com\" }\n" IC_TAIL,
	  "p.json:5: intercept[1].host: api.github.com is not allowed by any allow rule" },
	{ "not allowed, wildcard under an exact allow",
	  "{\n  \"intercept\": [{\"host\": \"*.api.test\"}],\n  \"allow\": [\"api.test\"]\n}\n",
	  "p.json:2: intercept[0].host: *.api.test is not allowed by any allow rule" },
	{ "intercept not an array",
	  "{\n  \"intercept\": \"api.test\"\n}\n",
	  "p.json:2: intercept: expected an array of hosts to intercept, got a string" },
	{ "entry not an object",
	  IC_HEAD "    \"api.test\"\n" IC_TAIL,
	  "p.json:4: intercept[0]: expected an object with \"host\", got a string" },
	{ "host missing",
	  IC_HEAD "    { \"rules\": [] }\n" IC_TAIL,
	  "p.json:4: intercept[0]: \"host\" is required" },
	{ "host with a port",
	  IC_HEAD "    {\n      \"host\": \"api.test:443\" }\n" IC_TAIL,
	  "p.json:5: intercept[0].host: \"api.test:443\": write the host name only (no port, "
	  "scheme or path): interception applies on every port the allow rules open" },
	{ "host twice",
	  IC_HEAD "    { \"host\": \"api.test\" },\n    { \"host\": \"API.test\" }\n" IC_TAIL,
	  "p.json:5: intercept[1].host: api.test is intercepted twice; merge the entries" },
	{ "unknown field in an entry",
	  IC_HEAD "    { \"host\": \"api.test\",\n      \"rule\": [] }\n" IC_TAIL,
	  "p.json:5: intercept[0].rule: unknown field (did you mean \"rules\"?)" },
	{ "unknown field in a rule",
	  IC_HEAD "    { \"host\": \"api.test\", \"rules\": [\n"
	  "      { \"name\": \"r\" },\n      { \"method\": [\"GET\"] } ] }\n" IC_TAIL,
	  "p.json:6: intercept[0].rules[1].method: unknown field (did you mean \"methods\"?)" },
	{ "bad method",
	  IC_HEAD "    { \"host\": \"api.test\", \"rules\": [\n"
	  "      { \"methods\": [\"GET\",\n \"get\"] } ] }\n" IC_TAIL,
	  "p.json:6: intercept[0].rules[0].methods[1]: \"get\": not an HTTP method (uppercase, "
	  "e.g. GET, POST; \"*\" for any)" },
	{ "bad method in a string list",
	  IC_HEAD "    { \"host\": \"api.test\", \"rules\": [ { \"methods\": \"GET, FETCH\" } ] }\n"
	  IC_TAIL,
	  "p.json:4: intercept[0].rules[0].methods: \"FETCH\": not an HTTP method (uppercase, "
	  "e.g. GET, POST; \"*\" for any)" },
	{ "path glob without a slash",
	  IC_HEAD "    { \"host\": \"api.test\", \"rules\": [\n"
	  "      { \"paths\": [\"/ok/**\", \"repos/**\"] } ] }\n" IC_TAIL,
	  "p.json:5: intercept[0].rules[0].paths[1]: \"repos/**\": a path glob starts with '/' "
	  "(e.g. /repos/acme/**)" },
	{ "path glob with dot segments",
	  IC_HEAD "    { \"host\": \"api.test\", \"rules\": [ { \"paths\": [\"/a/../b\"] } ] }\n"
	  IC_TAIL,
	  "p.json:4: intercept[0].rules[0].paths[0]: \"/a/../b\": invalid path glob (no '?', '#', "
	  "'%', '\\', spaces, empty, \".\" or \"..\" segments; \"**\" only as a whole segment)" },
	{ "empty paths",
	  IC_HEAD "    { \"host\": \"api.test\", \"rules\": [ { \"paths\": [] } ] }\n" IC_TAIL,
	  "p.json:4: intercept[0].rules[0].paths: no path globs given" },
	{ "bad action",
	  IC_HEAD "    { \"host\": \"api.test\", \"rules\": [ { \"action\": \"block\" } ] }\n" IC_TAIL,
	  "p.json:4: intercept[0].rules[0].action: \"block\": must be \"allow\" or \"deny\"" },
	{ "bad max_body",
	  IC_HEAD "    { \"host\": \"api.test\",\n      \"max_body\": \"1 MB\" }\n" IC_TAIL,
	  "p.json:5: intercept[0].max_body: \"1 MB\": not a size (bytes, or 64k, 10M, 1G, 1MiB, "
	  "none)" },
	{ "literal secret is refused and not echoed",
	  IC_HEAD "    { \"host\": \"api.test\", \"credentials\": [\n"
	  "      { \"header\": \"Authorization\",\n        \"value\": \"Bearer ghp_s3cr3t\" } ] }\n"
	  IC_TAIL,
	  "p.json:6: intercept[0].credentials[0].value: must be \"env:NAME\" (egressd's "
	  "environment) or \"file:/path\"; the secret itself never goes into a policy" },
	{ "bad variable name",
	  IC_HEAD "    { \"host\": \"api.test\", \"credentials\": [\n"
	  "      { \"header\": \"x-api-key\", \"value\": \"env:A-B\" } ] }\n" IC_TAIL,
	  "p.json:5: intercept[0].credentials[0].value: \"env:A-B\": not a variable name" },
	{ "credential without header",
	  IC_HEAD "    { \"host\": \"api.test\", \"credentials\": [\n"
	  "      { \"value\": \"env:K\" } ] }\n" IC_TAIL,
	  "p.json:5: intercept[0].credentials[0]: \"header\" is required" },
	{ "framing header as credential",
	  IC_HEAD "    { \"host\": \"api.test\", \"credentials\": [\n"
	  "      { \"header\": \"Host\", \"value\": \"env:K\" } ] }\n" IC_TAIL,
	  "p.json:5: intercept[0].credentials[0].header: \"Host\": a framing or hop-by-hop "
	  "header cannot be a credential" },
	{ "hop-by-hop header as credential",
	  IC_HEAD "    { \"host\": \"api.test\", \"credentials\": [\n"
	  "      { \"header\": \"x-a\", \"value\": \"env:K\" },\n"
	  "      { \"header\": \"Proxy-Authorization\", \"value\": \"env:K\" } ] }\n" IC_TAIL,
	  "p.json:6: intercept[0].credentials[1].header: \"Proxy-Authorization\": a framing or "
	  "hop-by-hop header cannot be a credential" },
	{ "framing header with underscore as credential",
	  IC_HEAD "    { \"host\": \"api.test\", \"credentials\": [\n"
	  "      { \"header\": \"Transfer_Encoding\", \"value\": \"env:K\" } ] }\n" IC_TAIL,
	  "p.json:5: intercept[0].credentials[0].header: \"Transfer_Encoding\": a framing or "
	  "hop-by-hop header cannot be a credential" },
	{ "TE as credential",
	  IC_HEAD "    { \"host\": \"api.test\", \"credentials\": [\n"
	  "      { \"header\": \"te\", \"value\": \"env:K\" } ] }\n" IC_TAIL,
	  "p.json:5: intercept[0].credentials[0].header: \"te\": a framing or hop-by-hop "
	  "header cannot be a credential" },
	{ "prefix is not supported",
	  IC_HEAD "    { \"host\": \"api.test\", \"credentials\": [\n"
	  "      { \"header\": \"Authorization\", \"value\": \"env:K\",\n"
	  "        \"prefix\": \"Bearer \" } ] }\n" IC_TAIL,
	  "p.json:6: intercept[0].credentials[0].prefix: not supported: put the whole header "
	  "value (e.g. \"Bearer TOKEN\") in the variable or file" },
	{ "two credentials for one header",
	  IC_HEAD "    { \"host\": \"api.test\", \"credentials\": [\n"
	  "      { \"header\": \"x-api-key\", \"value\": \"env:K\" },\n"
	  "      { \"header\": \"X-Api-Key\", \"value\": \"env:L\" } ] }\n" IC_TAIL,
	  "p.json:6: intercept[0].credentials[1]: a second credential for header X-Api-Key on "
	  "the same path_prefix" },
	{ "relative upstream_ca",
	  "{\n  \"upstream_ca\": \"ca.pem\"\n}\n",
	  "p.json:2: upstream_ca: expected the absolute path of a PEM CA bundle, got a "
	  "relative path" },
};

static void test_intercept_file_errors(void **state)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(ic_err_cases); i++) {
		struct policy *p = orig_policy();
		char err[512] = "";
		int r;

		r = policy_load_buffer(p, "p.json", ic_err_cases[i].text,
				       strlen(ic_err_cases[i].text), err, sizeof(err));
		if (r >= 0)
			fail_msg("%s: accepted", ic_err_cases[i].what);
		if (strcmp(err, ic_err_cases[i].err))
			fail_msg("%s:\n got: %s\nwant: %s", ic_err_cases[i].what, err,
				 ic_err_cases[i].err);
		assert_null(strstr(err, "s3cr3t"));
		assert_orig(p);
		assert_int_equal(p->n_intercept, 0);
		assert_null(p->upstream_ca);
		policy_free(p);
	}
}

/* Allowed by what the policy already had (e.g. the built-in default). */
static void test_intercept_allowed_by_earlier_rules(void **state)
{
	static const char text[] = "{\"intercept\": [{\"host\": \"keep.test\"}]}";
	struct policy *p = orig_policy();
	char err[256];

	assert_int_equal(policy_load_buffer(p, "p.json", text, strlen(text), err,
					    sizeof(err)), 0);
	assert_non_null(policy_intercept_for(p, "keep.test"));
	/* a second file cannot intercept the same host again */
	assert_int_equal(policy_load_buffer(p, "q.json", text, strlen(text), err,
					    sizeof(err)), -EINVAL);
	assert_string_equal(err, "q.json:1: intercept[0].host: keep.test is intercepted twice; "
			    "merge the entries");
	assert_int_equal(p->n_intercept, 1);
	policy_free(p);
}

/* Written back: the source of each credential, never its value. */
static void test_intercept_write_json(void **state)
{
	struct policy *p = policy_new("orig"), *q = policy_new("q");
	char *buf = NULL, err[512];
	size_t len = 0, i, j;
	FILE *f;

	setenv("EGR_TEST_GH_TOKEN", "ghp_TopSecretValue", 1);
	assert_int_equal(policy_load_buffer(p, "p.json", ic_text, strlen(ic_text), err,
					    sizeof(err)), 0);
	f = open_memstream(&buf, &len);
	assert_non_null(f);
	assert_int_equal(policy_write_json(p, f), 0);
	fclose(f);
	assert_null(strstr(buf, "TopSecret"));
	assert_non_null(strstr(buf, "\"value\": \"env:EGR_TEST_GH_TOKEN\""));
	assert_non_null(strstr(buf, "\"upstream_ca\": \"/etc/ssl/certs/ca-certificates.crt\""));
	if (policy_load_buffer(q, "out.json", buf, len, err, sizeof(err)))
		fail_msg("%s\n%s", err, buf);
	assert_int_equal(q->n_intercept, p->n_intercept);
	assert_string_equal(q->upstream_ca, p->upstream_ca);
	for (i = 0; i < p->n_intercept; i++) {
		const struct reqrule_host *a = &p->intercept[i].rules, *b = &q->intercept[i].rules;

		assert_string_equal(q->intercept[i].pattern, p->intercept[i].pattern);
		assert_int_equal(a->n_rules, b->n_rules);
		for (j = 0; j < a->n_rules; j++) {
			assert_string_equal(a->rules[j].name, b->rules[j].name);
			assert_int_equal(a->rules[j].action, b->rules[j].action);
			assert_int_equal(a->rules[j].methods, b->rules[j].methods);
			assert_int_equal(a->rules[j].n_globs, b->rules[j].n_globs);
			assert_string_equal(a->rules[j].globs[0], b->rules[j].globs[0]);
			assert_int_equal(a->rules[j].max_body, b->rules[j].max_body);
		}
		assert_int_equal(a->n_creds, b->n_creds);
		for (j = 0; j < a->n_creds; j++) {
			assert_string_equal(a->creds[j].name, b->creds[j].name);
			assert_string_equal(a->creds[j].header, b->creds[j].header);
			assert_string_equal(a->creds[j].source, b->creds[j].source);
			assert_string_equal(a->creds[j].path_prefix, b->creds[j].path_prefix);
		}
	}
	/* policies without interception are written as before */
	free(buf);
	buf = NULL;
	f = open_memstream(&buf, &len);
	{
		struct policy *o = orig_policy();

		assert_int_equal(policy_write_json(o, f), 0);
		policy_free(o);
	}
	fclose(f);
	assert_null(strstr(buf, "intercept"));
	assert_null(strstr(buf, "upstream_ca"));
	free(buf);
	unsetenv("EGR_TEST_GH_TOKEN");
	policy_free(p);
	policy_free(q);
}

/* ---- gateways ---------------------------------------------------------- */

static const struct {
	const char *listen, *upstream;
	const char *canon_listen, *canon_upstream, *host; /* NULL: refused */
	uint16_t port, up_port;
	size_t n_addrs;
	const char *err;
} gw_add_cases[] = {
	{ "127.0.0.1:8080", "https://api.example.com", "127.0.0.1:8080",
	  "https://api.example.com", "api.example.com", 8080, 443, 1, NULL },
	{ "127.1.2.3:9", "HTTPS://API.Example.com:8443/", "127.1.2.3:9",
	  "https://api.example.com:8443", "api.example.com", 9, 8443, 1, NULL },
	{ "[::1]:8080", "https://api.example.com:443", "[::1]:8080",
	  "https://api.example.com", "api.example.com", 8080, 443, 1, NULL },
	{ "LocalHost:8080", "https://api.example.com", "localhost:8080",
	  "https://api.example.com", "api.example.com", 8080, 443, 2, NULL },
	{ "192.0.2.1:8080", "https://api.example.com", NULL, NULL, NULL, 0, 0, 0,
	  "listen 192.0.2.1 is not a loopback address (127.0.0.0/8 or ::1): a gateway is "
	  "an address only the agent's cgroup reaches" },
	{ "0.0.0.0:8080", "https://api.example.com", NULL, NULL, NULL, 0, 0, 0,
	  "listen 0.0.0.0 is not a loopback address (127.0.0.0/8 or ::1): a gateway is "
	  "an address only the agent's cgroup reaches" },
	{ "127.0.0.1", "https://api.example.com", NULL, NULL, NULL, 0, 0, 0,
	  "listen expected ADDRESS:PORT with a loopback address, e.g. 127.0.0.1:8080 "
	  "(IPv6 in brackets: [::1]:8080)" },
	{ "127.0.0.1:0", "https://api.example.com", NULL, NULL, NULL, 0, 0, 0,
	  "listen invalid port \"0\" (1-65535)" },
	{ "127.0.0.1:53", "https://api.example.com", NULL, NULL, NULL, 0, 0, 0,
	  "listen port 53 is DNS, which always goes to egressd's DNS proxy" },
	{ "::1:8080", "https://api.example.com", NULL, NULL, NULL, 0, 0, 0,
	  "listen expected ADDRESS:PORT with a loopback address, e.g. 127.0.0.1:8080 "
	  "(IPv6 in brackets: [::1]:8080)" },
	{ "[127.0.0.1]:8080", "https://api.example.com", NULL, NULL, NULL, 0, 0, 0,
	  "listen \"127.0.0.1\" is not an IP address (or \"localhost\")" },
	{ "127.0.0.1:8080", "http://api.example.com", NULL, NULL, NULL, 0, 0, 0,
	  "upstream expected https://HOST[:PORT] (the upstream leg is always TLS, verified)" },
	{ "127.0.0.1:8080", "https://api.example.com/v1", NULL, NULL, NULL, 0, 0, 0,
	  "upstream no path: write the origin only (https://HOST[:PORT]); the agent's "
	  "request paths are kept as they are" },
	{ "127.0.0.1:8080", "https://192.0.2.7", NULL, NULL, NULL, 0, 0, 0,
	  "upstream an IP address cannot be an upstream (its certificate is verified for "
	  "a name); name the host" },
	{ "127.0.0.1:8080", "https://user@api.example.com", NULL, NULL, NULL, 0, 0, 0,
	  "upstream expected https://HOST[:PORT] with a host name" },
	{ "127.0.0.1:8080", "https://api.example.com:99999", NULL, NULL, NULL, 0, 0, 0,
	  "upstream invalid port (1-65535)" },
	{ "127.0.0.1:8080", "https://*.example.com", NULL, NULL, NULL, 0, 0, 0,
	  "upstream invalid host name ('*' is only allowed as a whole first label "
	  "(*.example.com))" },
};

static void test_gateway_add(void **state)
{
	char err[512];
	size_t i;

	for (i = 0; i < ARRAY_SIZE(gw_add_cases); i++) {
		struct policy *p = policy_new("x");
		struct reqrule_host *h = NULL;
		int r;

		err[0] = '\0';
		r = policy_add_gateway(p, gw_add_cases[i].listen, gw_add_cases[i].upstream,
				       "--gateway", &h, err, sizeof(err));
		if (gw_add_cases[i].err) {
			assert_int_equal(r, -EINVAL);
			if (strcmp(err, gw_add_cases[i].err))
				fail_msg("%s=%s:\n got: %s\nwant: %s", gw_add_cases[i].listen,
					 gw_add_cases[i].upstream, err, gw_add_cases[i].err);
			assert_int_equal(p->n_gateways, 0);
		} else {
			const struct policy_gateway *g;

			if (r)
				fail_msg("%s=%s: %s", gw_add_cases[i].listen,
					 gw_add_cases[i].upstream, err);
			assert_int_equal(p->n_gateways, 1);
			g = &p->gateways[0];
			assert_string_equal(g->listen, gw_add_cases[i].canon_listen);
			assert_string_equal(g->upstream, gw_add_cases[i].canon_upstream);
			assert_string_equal(g->host, gw_add_cases[i].host);
			assert_string_equal(g->rules.host, gw_add_cases[i].host);
			assert_int_equal(g->port, gw_add_cases[i].port);
			assert_int_equal(g->upstream_port, gw_add_cases[i].up_port);
			assert_int_equal(g->n_addrs, gw_add_cases[i].n_addrs);
			assert_ptr_equal(h, &g->rules);
			assert_int_equal(h->n_rules, 1);
			assert_string_equal(h->rules[0].name, "all");
		}
		policy_free(p);
	}
}

static void test_gateway_lookup_and_check(void **state)
{
	struct policy *p = policy_new("x");
	struct egr_addr a4, a4b, a6;
	char err[512];

	assert_int_equal(addr_parse("127.0.0.1", &a4), 0);
	assert_int_equal(addr_parse("127.0.0.2", &a4b), 0);
	assert_int_equal(addr_parse("::1", &a6), 0);
	assert_int_equal(policy_add_gateway(p, "127.0.0.1:8080", "https://api.example.com",
					    "--gateway", NULL, err, sizeof(err)), 0);
	assert_int_equal(policy_add_gateway(p, "localhost:9000", "https://up.example.org:8443",
					    "--gateway", NULL, err, sizeof(err)), 0);
	assert_ptr_equal(policy_gateway_for(p, &a4, 8080), &p->gateways[0]);
	assert_null(policy_gateway_for(p, &a4, 8081));
	assert_null(policy_gateway_for(p, &a4b, 8080));
	assert_null(policy_gateway_for(p, &a6, 8080));
	assert_ptr_equal(policy_gateway_for(p, &a4, 9000), &p->gateways[1]);
	assert_ptr_equal(policy_gateway_for(p, &a6, 9000), &p->gateways[1]);
	/* one address+port, one gateway */
	assert_int_equal(policy_add_gateway(p, "[::1]:9000", "https://api.example.com",
					    "--gateway", NULL, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "[::1]:9000 is already a gateway (to "
			    "https://up.example.org:8443, --gateway)");
	assert_int_equal(p->n_gateways, 2);

	/* the upstream must be allowed, on its port */
	assert_int_equal(policy_check_gateways(p, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "127.0.0.1:8080 (--gateway): upstream api.example.com:443 is "
			    "not allowed by any allow rule (add one, e.g. --allow api.example.com)");
	assert_int_equal(policy_add_rule(p, false, "api.example.com", NULL, err, sizeof(err)), 0);
	assert_int_equal(policy_add_rule(p, false, "up.example.org", NULL, err, sizeof(err)), 0);
	assert_int_equal(policy_check_gateways(p, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "localhost:9000 (--gateway): upstream up.example.org:8443 is "
			    "not allowed by any allow rule (add one, e.g. --allow "
			    "up.example.org:8443)");
	assert_int_equal(policy_add_rule(p, false, "*.example.org:8443", NULL, err,
					 sizeof(err)), 0);
	assert_int_equal(policy_check_gateways(p, err, sizeof(err)), 0);
	/* a deny rule wins */
	assert_int_equal(policy_add_rule(p, true, "api.example.com", NULL, err, sizeof(err)), 0);
	assert_int_equal(policy_check_gateways(p, err, sizeof(err)), -EINVAL);
	policy_free(p);
}

static const char gw_text[] =
	"{\n"
	"  \"name\": \"sdk\",\n"
	"  \"allow\": [\"api.anthropic.com\", \"api.test:8443\"],\n"
	"  \"gateways\": [\n"
	"    { \"listen\": \"127.0.0.1:8080\", \"upstream\": \"https://api.anthropic.com\",\n"
	"      \"rules\": [ { \"name\": \"messages\", \"methods\": [\"POST\"],\n"
	"                   \"paths\": [\"/v1/messages\"] } ],\n"
	"      \"credentials\": [ { \"name\": \"anthropic\", \"header\": \"x-api-key\",\n"
	"                         \"value\": \"env:EGR_TEST_ANTHROPIC\" } ] },\n"
	"    { \"listen\": \"[::1]:9090\", \"upstream\": \"https://api.test:8443\",\n"
	"      \"max_body\": \"1k\" }\n"
	"  ]\n"
	"}\n";

static void test_gateway_file_ok_and_json(void **state)
{
	struct policy *p = policy_new("x"), *q = policy_new("q");
	const struct policy_gateway *g;
	char *buf = NULL, err[512];
	size_t len = 0;
	FILE *f;

	if (policy_load_buffer(p, "p.json", gw_text, strlen(gw_text), err, sizeof(err)))
		fail_msg("%s", err);
	assert_int_equal(p->n_gateways, 2);
	g = &p->gateways[0];
	assert_string_equal(g->listen, "127.0.0.1:8080");
	assert_string_equal(g->upstream, "https://api.anthropic.com");
	assert_string_equal(g->source, "p.json:5");
	assert_int_equal(g->rules.n_rules, 1);
	assert_string_equal(g->rules.rules[0].name, "messages");
	assert_int_equal(g->rules.n_creds, 1);
	assert_string_equal(g->rules.creds[0].header, "x-api-key");
	assert_string_equal(g->rules.creds[0].source, "env:EGR_TEST_ANTHROPIC");
	g = &p->gateways[1];
	assert_string_equal(g->listen, "[::1]:9090");
	assert_int_equal(g->upstream_port, 8443);
	assert_string_equal(g->rules.rules[0].name, "all");
	assert_int_equal(g->rules.rules[0].max_body, 1024);
	/* not intercepted by being a gateway's upstream */
	assert_int_equal(p->n_intercept, 0);

	f = open_memstream(&buf, &len);
	assert_non_null(f);
	assert_int_equal(policy_write_json(p, f), 0);
	fclose(f);
	assert_non_null(strstr(buf, "\"gateways\""));
	assert_non_null(strstr(buf, "\"value\": \"env:EGR_TEST_ANTHROPIC\""));
	assert_null(strstr(buf, "\"host\""));
	if (policy_load_buffer(q, "out.json", buf, len, err, sizeof(err)))
		fail_msg("%s\n%s", err, buf);
	assert_int_equal(q->n_gateways, 2);
	assert_string_equal(q->gateways[0].listen, p->gateways[0].listen);
	assert_string_equal(q->gateways[0].upstream, p->gateways[0].upstream);
	assert_string_equal(q->gateways[1].upstream, p->gateways[1].upstream);
	assert_int_equal(q->gateways[0].rules.n_creds, 1);
	assert_string_equal(q->gateways[0].rules.rules[0].name, "messages");
	assert_int_equal(q->gateways[1].rules.rules[0].max_body, 1024);
	free(buf);
	policy_free(p);
	policy_free(q);
}

#define GW_HEAD "{\n  \"allow\": [\"api.test\"],\n  \"gateways\": [\n"
#define GW_TAIL "  ]\n}\n"

static const struct {
	const char *what;
	const char *text;
	const char *err;
} gw_err_cases[] = {
	{ "not an array", "{\n  \"gateways\": {}\n}\n",
	  "p.json:2: gateways: expected an array of gateways, got an object" },
	{ "entry not an object", GW_HEAD "    \"127.0.0.1:8080\"\n" GW_TAIL,
	  "p.json:4: gateways[0]: expected an object with \"listen\" and \"upstream\", got a "
	  "string" },
	{ "listen missing", GW_HEAD "    { \"upstream\": \"https://api.test\" }\n" GW_TAIL,
	  "p.json:4: gateways[0]: \"listen\" is required (e.g. \"127.0.0.1:8080\")" },
	{ "upstream missing", GW_HEAD "    { \"listen\": \"127.0.0.1:8080\" }\n" GW_TAIL,
	  "p.json:4: gateways[0]: \"upstream\" is required (e.g. \"https://api.example.com\")" },
	{ "listen not loopback",
	  GW_HEAD "    { \"upstream\": \"https://api.test\",\n"
	  "      \"listen\": \"198.51.100.1:80\" }\n" GW_TAIL,
	  "p.json:5: gateways[0].listen: \"198.51.100.1:80\": 198.51.100.1 is not a loopback "
	  "address (127.0.0.0/8 or ::1): a gateway is an address only the agent's cgroup "
	  "reaches" },
	{ "upstream plain http",
	  GW_HEAD "    { \"listen\": \"127.0.0.1:8080\",\n"
	  "      \"upstream\": \"http://api.test\" }\n" GW_TAIL,
	  "p.json:5: gateways[0].upstream: \"http://api.test\": expected https://HOST[:PORT] "
	  "(the upstream leg is always TLS, verified)" },
	{ "upstream not allowed",
	  GW_HEAD "    { \"listen\": \"127.0.0.1:8080\", \"upstream\": \"https://api.test\" },\n"
	  "    { \"listen\": \"127.0.0.1:8081\",\n"
	  "      \"upstream\": \"https://api.test:8443\" }\n" GW_TAIL,
	  "p.json:6: gateways[1].upstream: api.test:8443 is not allowed by any allow rule" },
	{ "same listen twice",
	  GW_HEAD "    { \"listen\": \"127.0.0.1:8080\", \"upstream\": \"https://api.test\" },\n"
	  "    { \"listen\": \"localhost:8080\", \"upstream\": \"https://api.test\" }\n" GW_TAIL,
	  "p.json:5: gateways[1].listen: localhost:8080 is already a gateway (to "
	  "https://api.test, p.json:4)" },
	{ "unknown key",
	  GW_HEAD "    { \"listen\": \"127.0.0.1:8080\", \"upstream\": \"https://api.test\",\n"
	  "      \"upstreams\": [] }\n" GW_TAIL,
	  "p.json:5: gateways[0].upstreams: unknown field (did you mean \"upstream\"?)" },
	{ "literal secret",
	  GW_HEAD "    { \"listen\": \"127.0.0.1:8080\", \"upstream\": \"https://api.test\",\n"
	  "      \"credentials\": [ { \"header\": \"x-api-key\", \"value\": \"s3cr3t\" } ] }\n"
	  GW_TAIL,
	  "p.json:5: gateways[0].credentials[0].value: must be \"env:NAME\" (egressd's "
	  "environment) or \"file:/path\"; the secret itself never goes into a policy" },
	{ "bad rule",
	  GW_HEAD "    { \"listen\": \"127.0.0.1:8080\", \"upstream\": \"https://api.test\",\n"
	  "      \"rules\": [ { \"methods\": [\"get\"] } ] }\n" GW_TAIL,
	  "p.json:5: gateways[0].rules[0].methods[0]: \"get\": not an HTTP method (uppercase, "
	  "e.g. GET, POST; \"*\" for any)" },
};

static void test_gateway_file_errors(void **state)
{
	for (size_t i = 0; i < ARRAY_SIZE(gw_err_cases); i++) {
		struct policy *p = orig_policy();
		char err[512] = "";
		int r;

		r = policy_load_buffer(p, "p.json", gw_err_cases[i].text,
				       strlen(gw_err_cases[i].text), err, sizeof(err));
		if (r >= 0)
			fail_msg("%s: accepted", gw_err_cases[i].what);
		if (strcmp(err, gw_err_cases[i].err))
			fail_msg("%s:\n got: %s\nwant: %s", gw_err_cases[i].what, err,
				 gw_err_cases[i].err);
		assert_null(strstr(err, "s3cr3t"));
		assert_orig(p);
		assert_int_equal(p->n_gateways, 0);
		policy_free(p);
	}
}

/* --- GeoIP fields (docs/geoip.md) ---------------------------------------- */

static const struct {
	const char *what, *text, *err;
} geo_err_cases[] = {
	{ "deny_countries not an array",
	  "{\n  \"deny_countries\": \"KP\"\n}\n",
	  "p.json:2: deny_countries: expected an array of two-letter country codes "
	  "(ISO 3166-1 alpha-2, e.g. [\"KP\"]), got a string" },
	{ "three-letter code",
	  "{\n  \"deny_countries\": [\n    \"KP\",\n    \"IRN\"\n  ]\n}\n",
	  "p.json:4: deny_countries[1]: \"IRN\": not a two-letter country code "
	  "(ISO 3166-1 alpha-2, e.g. \"KP\")" },
	{ "number as code",
	  "{\n  \"deny_countries\": [7]\n}\n",
	  "p.json:2: deny_countries[0]: expected a two-letter country code, got an integer" },
	{ "UK is not ISO",
	  "{\"deny_countries\": [\"uk\"]}",
	  "p.json:1: deny_countries[0]: \"uk\": not an ISO 3166-1 code (the United Kingdom "
	  "is \"GB\")" },
	{ "typo in deny_countries",
	  "{\n  \"name\": \"x\",\n  \"deny_contries\": [\"KP\"]\n}\n",
	  "p.json:3: deny_contries: unknown field (did you mean \"deny_countries\"?)" },
	{ "empty asn list",
	  "{\n  \"allow\": [\n    { \"rule\": \"a.test\", \"asn\": [] }\n  ]\n}\n",
	  "p.json:3: allow[0].asn: empty list: it would read as \"no restriction\"; list AS "
	  "numbers, or write the rule as a plain string" },
	{ "asn typo",
	  "{\n  \"allow\": [\n    \"b.test\",\n    { \"rule\": \"a.test\",\n"
	  "      \"asns\": [64500] }\n  ]\n}\n",
	  "p.json:5: allow[1].asns: unknown field (did you mean \"asn\"?)" },
	{ "AS prefix",
	  "{\"allow\": [{\"rule\": \"a.test\", \"asn\": [64500, \"AS64501\"]}]}",
	  "p.json:1: allow[0].asn[1]: \"AS64501\": write the number alone (64501)" },
	{ "asn zero",
	  "{\"allow\": [{\"rule\": \"a.test\", \"asn\": [0]}]}",
	  "p.json:1: allow[0].asn[0]: 0: not an AS number (1-4294967294)" },
	{ "asn too large",
	  "{\"allow\": [{\"rule\": \"a.test\", \"asn\": [4294967296]}]}",
	  "p.json:1: allow[0].asn[0]: 4294967296: not an AS number (1-4294967294)" },
	{ "asn not a list",
	  "{\"allow\": [{\"rule\": \"a.test\", \"asn\": 64500}]}",
	  "p.json:1: allow[0].asn: expected an array of AS numbers, got an integer" },
	{ "rule object without asn",
	  "{\"allow\": [{\"rule\": \"a.test\"}]}",
	  "p.json:1: allow[0]: \"asn\" is required in a rule object (without it, write the "
	  "rule as a plain string)" },
	{ "rule object without rule",
	  "{\n  \"allow\": [\n    {\n      \"asn\": [1] }\n  ]\n}\n",
	  "p.json:3: allow[0]: \"rule\" is required (the rule string)" },
	{ "bad rule in an object",
	  "{\n  \"allow\": [\n    { \"asn\": [1],\n      \"rule\": \"192.0.2.1/24\" }\n  ]\n}\n",
	  "p.json:4: allow[0].rule: \"192.0.2.1/24\": host bits set, did you mean 192.0.2.0/24" },
	{ "asn on a deny rule",
	  "{\"deny\": [{\"rule\": \"a.test\", \"asn\": [1]}]}",
	  "p.json:1: deny[0]: expected a rule string (an \"asn\" list is for allow rules "
	  "only), got an object" },
	{ "array as rule",
	  "{\"allow\": [[\"a.test\"]]}",
	  "p.json:1: allow[0]: expected a rule string or {\"rule\": ..., \"asn\": [...]}, got an "
	  "array" },
};

static void test_geo_file_errors(void **state)
{
	size_t i;

	for (i = 0; i < ARRAY_SIZE(geo_err_cases); i++) {
		struct policy *p = orig_policy();
		char err[512] = "";
		int r;

		r = policy_load_buffer(p, "p.json", geo_err_cases[i].text,
				       strlen(geo_err_cases[i].text), err, sizeof(err));
		if (r >= 0)
			fail_msg("%s: accepted", geo_err_cases[i].what);
		if (strcmp(err, geo_err_cases[i].err))
			fail_msg("%s:\n got: %s\nwant: %s", geo_err_cases[i].what, err,
				 geo_err_cases[i].err);
		assert_orig(p);
		assert_int_equal(p->n_deny_countries, 0);
		assert_null(p->deny_countries);
		policy_free(p);
	}
}

static const char geo_policy[] =
	"{\n"
	"  \"name\": \"geo\",\n"
	"  \"deny_countries\": [\"kp\", \"IR\"],\n"
	"  \"allow\": [\n"
	"    \"plain.test\",\n"
	"    { \"rule\": \"*.cdn.test\", \"asn\": [64500, 64501] },\n"
	"    { \"rule\": \"*.cdn.test:*\", \"asn\": [64502] },\n"
	"    { \"rule\": \"198.51.100.0/24:443\", \"asn\": [64501] },\n"
	"    \"198.51.100.0/25\"\n"
	"  ]\n"
	"}\n";

static struct policy *load_geo_policy(void)
{
	struct policy *p = policy_new(NULL);
	char err[512] = "";

	if (policy_load_buffer(p, "g.json", geo_policy, strlen(geo_policy), err, sizeof(err)))
		fail_msg("geo policy refused: %s", err);
	return p;
}

static void test_geo_file_ok(void **state)
{
	struct policy *p = load_geo_policy(), *q;
	char err[512] = "", *buf = NULL;
	size_t len = 0, i;
	FILE *f;

	assert_int_equal(p->n_deny_countries, 2);
	assert_string_equal(p->deny_countries[0], "KP");
	assert_string_equal(p->deny_countries[1], "IR");
	assert_null(p->deny_countries[2]);
	assert_string_equal(p->geo_source, "g.json:3");
	assert_int_equal(p->n_allow, 5);
	assert_int_equal(p->allow[0].n_asn, 0);
	assert_string_equal(p->allow[1].text, "*.cdn.test");
	assert_int_equal(p->allow[1].n_asn, 2);
	assert_int_equal(p->allow[1].asn[0], 64500);
	assert_int_equal(p->allow[1].asn[1], 64501);
	assert_string_equal(p->allow[1].source, "g.json:6");
	assert_true(policy_uses_geo(p));

	/* needs its databases */
	assert_int_equal(policy_check_geo(p, true, true, "C", "A", err, sizeof(err)), 0);
	assert_int_equal(policy_check_geo(p, false, true, "give --geoip-country FILE", "A",
					  err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "g.json:3: deny_countries: needs a country database "
			    "(give --geoip-country FILE)");
	assert_int_equal(policy_check_geo(p, true, false, "C", "give --geoip-asn FILE",
					  err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "g.json:6: asn of \"*.cdn.test\": needs an ASN database "
			    "(give --geoip-asn FILE)");

	/* round trip through policy_write_json */
	f = open_memstream(&buf, &len);
	assert_non_null(f);
	assert_int_equal(policy_write_json(p, f), 0);
	fclose(f);
	q = policy_new(NULL);
	if (policy_load_buffer(q, "rt.json", buf, len, err, sizeof(err)))
		fail_msg("written policy refused: %s\n%s", err, buf);
	assert_int_equal(q->n_deny_countries, 2);
	assert_string_equal(q->deny_countries[1], "IR");
	assert_int_equal(q->n_allow, p->n_allow);
	for (i = 0; i < p->n_allow; i++) {
		assert_string_equal(q->allow[i].text, p->allow[i].text);
		assert_int_equal(q->allow[i].n_asn, p->allow[i].n_asn);
		if (p->n_allow && p->allow[i].n_asn)
			assert_memory_equal(q->allow[i].asn, p->allow[i].asn,
					    p->allow[i].n_asn * sizeof(uint32_t));
	}
	free(buf);
	policy_free(q);

	/* a second file appends countries; a policy without geo fields is fine */
	assert_int_equal(policy_load_buffer(p, "h.json", "{\"deny_countries\": [\"cu\"]}", 26,
					    err, sizeof(err)), 0);
	assert_int_equal(p->n_deny_countries, 3);
	assert_string_equal(p->deny_countries[2], "CU");
	assert_null(p->deny_countries[3]);
	policy_free(p);
	p = policy_new(NULL);
	assert_int_equal(policy_add_rule(p, false, "a.test", "t", err, sizeof(err)), 0);
	assert_false(policy_uses_geo(p));
	assert_int_equal(policy_check_geo(p, false, false, "C", "A", err, sizeof(err)), 0);
	policy_free(p);
}

static void test_geo_asn_ok(void **state)
{
	struct policy *p = load_geo_policy();
	struct policy_decision d;
	struct egr_addr a, a2;

	assert_int_equal(addr_parse("198.51.100.7", &a), 0);
	assert_int_equal(addr_parse("198.51.100.200", &a2), 0);

	/* no rule (audit mode) or a rule without a list: anything */
	assert_true(policy_asn_ok(p, NULL, "x.test", &a, 443, 0));
	policy_decide_name(p, "plain.test", 443, &d);
	assert_int_equal(d.verdict, EGR_VERDICT_ALLOW);
	assert_true(policy_asn_ok(p, d.rule, "plain.test", &a, 443, 0));
	assert_true(policy_asn_ok(p, d.rule, "plain.test", &a, 443, 99));

	/* *.cdn.test on 443: the first rule matches, lists 64500/64501; the
	 * second (any port, 64502) matches too and admits 64502 */
	policy_decide_name(p, "img.cdn.test", 443, &d);
	assert_int_equal(d.verdict, EGR_VERDICT_ALLOW);
	assert_string_equal(d.rule->text, "*.cdn.test");
	assert_true(policy_asn_ok(p, d.rule, "img.cdn.test", &a, 443, 64500));
	assert_true(policy_asn_ok(p, d.rule, "img.cdn.test", &a, 443, 64501));
	assert_true(policy_asn_ok(p, d.rule, "img.cdn.test", &a, 443, 64502));
	assert_false(policy_asn_ok(p, d.rule, "img.cdn.test", &a, 443, 64503));
	/* unknown ASN: fail closed, even with several lists */
	assert_false(policy_asn_ok(p, d.rule, "img.cdn.test", &a, 443, 0));
	/* on 8443 only the any-port rule matches */
	policy_decide_name(p, "img.cdn.test", 8443, &d);
	assert_int_equal(d.verdict, EGR_VERDICT_ALLOW);
	assert_true(policy_asn_ok(p, d.rule, "img.cdn.test", &a, 8443, 64502));
	assert_false(policy_asn_ok(p, d.rule, "img.cdn.test", &a, 8443, 64500));

	/* address rules: 198.51.100.0/24:443 lists 64501; the /25 has no list
	 * and admits anything in its half */
	policy_decide_addr(p, &a2, 443, &d);
	assert_int_equal(d.verdict, EGR_VERDICT_ALLOW);
	assert_string_equal(d.rule->text, "198.51.100.0/24:443");
	assert_true(policy_asn_ok(p, d.rule, NULL, &a2, 443, 64501));
	assert_false(policy_asn_ok(p, d.rule, NULL, &a2, 443, 64500));
	assert_false(policy_asn_ok(p, d.rule, NULL, &a2, 443, 0));
	policy_decide_addr(p, &a, 443, &d);
	assert_true(policy_asn_ok(p, d.rule, NULL, &a, 443, 64500));
	assert_true(policy_asn_ok(p, d.rule, NULL, &a, 443, 0));
	policy_free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rule_parse),
		cmocka_unit_test(test_rule_fields),
		cmocka_unit_test(test_decide_name),
		cmocka_unit_test(test_decide_addr),
		cmocka_unit_test(test_empty_policy_denies),
		cmocka_unit_test(test_allowed_ports),
		cmocka_unit_test(test_suggest),
		cmocka_unit_test(test_file_errors),
		cmocka_unit_test(test_file_unchanged_after_late_error),
		cmocka_unit_test(test_file_nul_after_number),
		cmocka_unit_test(test_file_suggestions),
		cmocka_unit_test(test_file_too_large),
		cmocka_unit_test(test_file_ok),
		cmocka_unit_test(test_load_file),
		cmocka_unit_test(test_write_json_roundtrip),
		cmocka_unit_test(test_default_policy),
		cmocka_unit_test(test_rule_limit),
		cmocka_unit_test(test_name_resolvable),
		cmocka_unit_test(test_intercept_file_ok),
		cmocka_unit_test(test_intercept_for_precedence),
		cmocka_unit_test(test_intercept_inherits_wildcard_rules),
		cmocka_unit_test(test_intercept_add_and_check),
		cmocka_unit_test(test_intercept_file_errors),
		cmocka_unit_test(test_intercept_allowed_by_earlier_rules),
		cmocka_unit_test(test_intercept_write_json),
		cmocka_unit_test(test_gateway_add),
		cmocka_unit_test(test_gateway_lookup_and_check),
		cmocka_unit_test(test_gateway_file_ok_and_json),
		cmocka_unit_test(test_gateway_file_errors),
		cmocka_unit_test(test_geo_file_errors),
		cmocka_unit_test(test_geo_file_ok),
		cmocka_unit_test(test_geo_asn_ok),
	};

	return cmocka_run_group_tests_name("policy", tests, NULL, NULL);
}
