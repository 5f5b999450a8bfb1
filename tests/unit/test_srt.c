// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* user/srt.c: sandbox-runtime settings import. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "srt.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* --- one entry ---------------------------------------------------------- */

static const struct {
	const char *entry;
	bool denied;
	const char *rule;  /* NULL: refused with err; "" with deny_all */
	const char *err;
} tr_cases[] = {
	/* sandbox-runtime: a plain name is that host only, every port */
	{ "example.com", false, "example.com:*", NULL },
	{ "Example.COM", false, "example.com:*", NULL },
	/* "*.x" is strict subdomains, every port */
	{ "*.example.com", false, "*.example.com:*", NULL },
	{ "api.example.com:443", false, "api.example.com:443", NULL },
	{ "*.npmjs.org:8443", false, "*.npmjs.org:8443", NULL },
	{ "localhost", false, "localhost:*", NULL },
	{ "localhost:3000", false, "localhost:3000", NULL },
	{ "192.0.2.7", false, "192.0.2.7", NULL },
	{ "192.0.2.7:5432", false, "192.0.2.7:5432", NULL },
	{ "[2001:db8::1]", false, "2001:db8::1", NULL },
	{ "[2001:DB8::1]:443", false, "[2001:db8::1]:443", NULL },
	{ "evil.example.com", true, "evil.example.com:*", NULL },
	{ "github.com:22", true, "github.com:22", NULL },
	{ "*", true, "", NULL },

	{ "", false, NULL, "empty entry" },
	{ "*", false, NULL, "a bare \"*\" is only accepted in deniedDomains" },
	{ "*:22", true, NULL, "\"*:22\" (every host on one port) has no egressd equivalent; "
	  "deny the hosts by name" },
	{ "*.com", false, NULL, "too broad: \"*.\" must be followed by at least two labels "
	  "(\"*.example.com\")" },
	{ "*.com", true, NULL, "too broad: \"*.\" must be followed by at least two labels "
	  "(\"*.example.com\")" },
	{ "*.example..com", false, NULL, "empty label" },
	{ "a.*.example.com", false, NULL, "\"*\" is only allowed as a leading \"*.\"" },
	{ "*example.com", false, NULL, "\"*\" is only allowed as a leading \"*.\"" },
	{ "intranet", false, NULL, "a domain needs a dot (only \"localhost\" may go without one)" },
	{ ".example.com", false, NULL, "leading or trailing \".\"" },
	{ "example.com.", false, NULL, "leading or trailing \".\"" },
	{ "https://example.com", false, NULL, "URLs and paths are not domain patterns; write the "
	  "host name (\"example.com\" or \"example.com:443\")" },
	{ "example.com/path", false, NULL, "URLs and paths are not domain patterns; write the "
	  "host name (\"example.com\" or \"example.com:443\")" },
	{ "example.com:0", false, NULL, "invalid port (1-65535)" },
	{ "example.com:65536", false, NULL, "invalid port (1-65535)" },
	{ "example.com:044", false, NULL, "invalid port (1-65535)" },
	{ "2001:db8::1", false, NULL, "an IPv6 address must be in brackets (\"[2001:db8::1]\" or "
	  "\"[2001:db8::1]:443\")" },
	{ "[2001:db8::1", false, NULL, "missing \"]\"" },
	{ "[2001:db8::1]:0", false, NULL, "invalid port after \"]\" (1-65535)" },
	{ "[example.com]", false, NULL, "not an IPv6 address in brackets" },
	/* accepted by sandbox-runtime's pattern check, refused by egressd's
	 * name rules: the stricter rule wins */
	{ "exa mple.com", false, NULL, "contains whitespace or control characters" },
	{ "a..b", false, NULL, "invalid domain name (empty label)" },
};

static void test_translate(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(tr_cases); i++) {
		char out[SRT_RULE_MAX], err[256] = "";
		bool all = true;
		int r = srt_translate(tr_cases[i].entry, tr_cases[i].denied, out, sizeof(out),
				      &all, err, sizeof(err));

		if (tr_cases[i].rule) {
			if (r || strcmp(out, tr_cases[i].rule))
				fail_msg("case %zu (%s): r=%d out=%s err=%s", i, tr_cases[i].entry,
					 r, out, err);
			assert_int_equal(all, !tr_cases[i].rule[0]);
		} else if (r != -EINVAL || strcmp(err, tr_cases[i].err)) {
			fail_msg("case %zu (%s): r=%d\n got:  %s\n want: %s", i, tr_cases[i].entry,
				 r, err, tr_cases[i].err);
		}
	}
}

/* --- whole files -------------------------------------------------------- */

static struct policy *load_ok(const char *text)
{
	struct policy *p = policy_new("srt");
	char err[512] = "";

	assert_non_null(p);
	if (srt_load_buffer(p, "settings.json", text, strlen(text), err, sizeof(err)))
		fail_msg("load: %s", err);
	return p;
}

static bool allowed(const struct policy *p, const char *host, uint16_t port)
{
	struct policy_decision d;

	policy_decide_name(p, host, port, &d);
	return d.verdict == EGR_VERDICT_ALLOW;
}

/* The semantics found in sandbox-runtime's matchesDomainPattern(), checked
 * through egressd's own matcher after the import. */
static void test_semantics(void **state)
{
	struct policy *p = load_ok("{\"network\": {\n"
				   "  \"allowedDomains\": [\"example.com\", \"*.example.org\",\n"
				   "                     \"api.example.net:443\"],\n"
				   "  \"deniedDomains\": [\"bad.example.org\"]}}");

	(void)state;
	assert_true(allowed(p, "example.com", 443));
	assert_true(allowed(p, "EXAMPLE.com", 8080));       /* no port: every port */
	assert_false(allowed(p, "www.example.com", 443));   /* apex only */
	assert_true(allowed(p, "a.example.org", 443));
	assert_true(allowed(p, "a.b.example.org", 22));
	assert_false(allowed(p, "example.org", 443));       /* subdomains only */
	assert_false(allowed(p, "bad.example.org", 443));   /* denied wins */
	assert_false(allowed(p, "bad.example.org", 9999));  /* on every port */
	assert_true(allowed(p, "api.example.net", 443));
	assert_false(allowed(p, "api.example.net", 80));
	assert_string_equal(p->allow[0].source, "settings.json:2");
	assert_string_equal(p->allow[2].source, "settings.json:3");
	assert_string_equal(p->deny[0].source, "settings.json:4");
	assert_string_equal(p->name, "srt");
	policy_free(p);
}

static void test_claude_settings(void **state)
{
	struct policy *p = policy_new("cc");
	char err[512] = "";

	(void)state;
	assert_int_equal(srt_load_file(p, "examples/daemon/claude-settings.json", err,
				       sizeof(err)), 0);
	assert_int_equal(p->n_allow, 2);
	assert_string_equal(p->allow[0].text, "api.anthropic.com:*");
	assert_string_equal(p->allow[1].text, "*.npmjs.org:*");
	assert_int_equal(p->n_deny, 1);
	assert_string_equal(p->deny[0].text, "evil.example.com:*");
	assert_string_equal(p->deny[0].source, "examples/daemon/claude-settings.json:7");
	policy_free(p);

	p = policy_new("srt");
	assert_int_equal(srt_load_file(p, "examples/daemon/srt-settings.json", err, sizeof(err)), 0);
	assert_int_equal(p->n_allow, 4);
	assert_int_equal(p->n_deny, 1);
	policy_free(p);
}

static void test_deny_all(void **state)
{
	struct policy *p = load_ok("{\"network\": {\"allowedDomains\": [\"example.com\"],"
				   " \"deniedDomains\": [\"*\", \"x.example.com\"]}}");

	(void)state;
	assert_int_equal(p->n_allow, 0);
	assert_int_equal(p->n_deny, 1);
	assert_false(allowed(p, "example.com", 443));
	policy_free(p);

	/* empty lists and absent lists are fine: a deliberate deny-all */
	p = load_ok("{\"network\": {\"allowedDomains\": []}, \"other\": [1, {\"x\": null}]}");
	assert_int_equal(p->n_allow + p->n_deny, 0);
	policy_free(p);
	/* JSON.parse semantics: the last of a repeated key wins */
	p = load_ok("{\"network\": {\"allowedDomains\": [\"a.example\"],"
		    " \"allowedDomains\": [\"b.example\"]}}");
	assert_int_equal(p->n_allow, 1);
	assert_string_equal(p->allow[0].text, "b.example:*");
	policy_free(p);
}

static const struct {
	const char *json;
	const char *err;
} bad_files[] = {
	{ "{\"network\": ", "settings.json:1: syntax error: unexpected token near end of file" },
	{ "[]", "settings.json:1: top level: expected an object, got an array" },
	{ "{\n \"filesystem\": {}}", "settings.json:1: network: no network settings (expected "
	  "\"network\" as sandbox-runtime writes it, or \"sandbox.network\" as in Claude Code's "
	  "settings.json)" },
	{ "{\"sandbox\": true}", "settings.json:1: network: no network settings (expected "
	  "\"network\" as sandbox-runtime writes it, or \"sandbox.network\" as in Claude Code's "
	  "settings.json)" },
	{ "{\"network\": {},\n \"sandbox\": {\n  \"network\": {}}}",
	  "settings.json:3: sandbox.network: both \"network\" (line 1) and \"sandbox.network\" are "
	  "present; keep one" },
	{ "{\"network\": [\"example.com\"]}", "settings.json:1: network: expected an object, got an array" },
	{ "{\"sandbox\": {\"network\":\n 5}}", "settings.json:2: sandbox.network: expected an object, got an integer" },
	{ "{\"network\": {\"allowedDomains\":\n \"example.com\"}}",
	  "settings.json:2: network.allowedDomains: expected an array of domain patterns, got a string" },
	{ "{\"network\": {\"allowedDomains\": [\n \"a.example\",\n 7]}}",
	  "settings.json:3: network.allowedDomains[1]: expected a domain pattern string, got an integer" },
	{ "{\"sandbox\": {\"network\": {\"deniedDomains\": [\n\n \"*.com\"]}}}",
	  "settings.json:3: sandbox.network.deniedDomains[0]: \"*.com\": too broad: \"*.\" must be "
	  "followed by at least two labels (\"*.example.com\")" },
	{ "{\"network\": {\"allowedDomains\": [\"ok.example\", \"*\"]}}",
	  "settings.json:1: network.allowedDomains[1]: \"*\": a bare \"*\" is only accepted in "
	  "deniedDomains" },
};

/* Bytes jansson accepts and the line locator refuses ("[1\0]": a NUL ends
 * jansson's number) get the same message as in a daemon config. */
static void test_nul_after_number(void **state)
{
	static const char text[] = "{\"network\": {\"allowedDomains\": [1\0]}}";
	struct policy *p = policy_new("keep");
	char err[512] = "";

	(void)state;
	assert_int_equal(srt_load_buffer(p, "settings.json", text, sizeof(text) - 1, err,
					 sizeof(err)), -EINVAL);
	assert_string_equal(err, "settings.json:1: syntax error: unexpected bytes (NUL or other "
			    "text the JSON walker refuses)");
	policy_free(p);
}

static void test_bad_files(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(bad_files); i++) {
		struct policy *p = policy_new("keep");
		char err[512] = "";
		int r;

		assert_int_equal(policy_add_rule(p, false, "before.example", "x", err, sizeof(err)), 0);
		p->mode = POLICY_AUDIT;
		r = srt_load_buffer(p, "settings.json", bad_files[i].json, strlen(bad_files[i].json),
				    err, sizeof(err));
		if (r >= 0 || strcmp(err, bad_files[i].err))
			fail_msg("case %zu: r=%d\n got:  %s\n want: %s", i, r, err, bad_files[i].err);
		/* nothing half-applied */
		assert_int_equal(p->n_allow, 1);
		assert_int_equal(p->n_deny, 0);
		assert_string_equal(p->allow[0].text, "before.example");
		assert_int_equal(p->mode, POLICY_AUDIT);
		policy_free(p);
	}
}

static void test_appends(void **state)
{
	struct policy *p = policy_new("keep");
	char err[512] = "";
	const char *text = "{\"network\": {\"allowedDomains\": [\"new.example\"]}}";

	(void)state;
	assert_int_equal(policy_add_rule(p, false, "old.example", "cli", err, sizeof(err)), 0);
	p->mode = POLICY_AUDIT;
	assert_int_equal(srt_load_buffer(p, "s.json", text, strlen(text), err, sizeof(err)), 0);
	assert_string_equal(p->name, "keep");
	assert_int_equal(p->mode, POLICY_AUDIT);
	assert_int_equal(p->n_allow, 2);
	assert_string_equal(p->allow[0].text, "old.example");
	assert_string_equal(p->allow[0].source, "cli");
	assert_string_equal(p->allow[1].text, "new.example:*");
	policy_free(p);

	p = policy_new("x");
	assert_int_equal(srt_load_file(p, "/nonexistent/settings.json", err, sizeof(err)), -ENOENT);
	assert_string_equal(err, "/nonexistent/settings.json: No such file or directory");
	assert_int_equal(srt_load_file(p, "/dev/null", err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "/dev/null: not a regular file");
	policy_free(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_translate),
		cmocka_unit_test(test_semantics),
		cmocka_unit_test(test_claude_settings),
		cmocka_unit_test(test_deny_all),
		cmocka_unit_test(test_bad_files),
		cmocka_unit_test(test_nul_after_number),
		cmocka_unit_test(test_appends),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
