// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* user/suggest.c: audit log -> minimal policy for `egressctl policy suggest`. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "addr.h"
#include "policy.h"
#include "suggest.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define NOW 1800000000 /* 2027-01-15T08:00:00Z */
#define MAXR 8

/* An audit line as audit.c writes it (compact JSON), at NOW - ago seconds. */
static char *record(long ago, const char *cgroup, const char *verdict, const char *reason,
		    const char *origin, const char *sni, const char *host, const char *dst,
		    int port, const char *resolved)
{
	char t[40], *s = NULL;
	time_t when = NOW - ago;
	struct tm tm;
	int n;

	gmtime_r(&when, &tm);
	strftime(t, sizeof(t), "%Y-%m-%dT%H:%M:%S.000Z", &tm);
	n = asprintf(&s, "{\"time\":\"%s\"%s%s%s,\"pid\":7,\"comm\":\"curl\",\"proto\":\"tcp\""
		     "%s%s%s,\"dst_port\":%d%s%s%s%s%s%s%s%s%s,\"verdict\":\"%s\","
		     "\"reason\":\"%s\",\"origin\":\"%s\",\"bytes_up\":0}",
		     t, cgroup ? ",\"cgroup\":\"" : "", cgroup ? cgroup : "", cgroup ? "\"" : "",
		     dst ? ",\"dst\":\"" : "", dst ? dst : "", dst ? "\"" : "", port,
		     sni ? ",\"sni\":\"" : "", sni ? sni : "", sni ? "\"" : "",
		     host ? ",\"host\":\"" : "", host ? host : "", host ? "\"" : "",
		     resolved ? ",\"resolved\":\"" : "", resolved ? resolved : "",
		     resolved ? "\"" : "", verdict, reason, origin);
	assert_true(n > 0);
	return s;
}

static struct suggest *new_suggest(long since, const char *glob)
{
	struct suggest_options o = { .now = NOW, .since = since, .cgroup_glob = glob };
	struct suggest *s = NULL;

	assert_int_equal(suggest_new(&s, &o), 0);
	return s;
}

static void add(struct suggest *s, char *line)
{
	assert_int_equal(suggest_add_line(s, line, strlen(line)), 0);
	free(line);
}

static void assert_rules(struct suggest *s, const char *const *want)
{
	const char *const *got;
	size_t n, i, nwant = 0;

	while (nwant < MAXR && want[nwant])
		nwant++;
	got = suggest_rules(s, &n);
	for (i = 0; i < n; i++)
		print_message("  got[%zu] = %s\n", i, got[i]);
	assert_int_equal(n, nwant);
	for (i = 0; i < n; i++)
		assert_string_equal(got[i], want[i]);
}

/* --- wildcard collapsing and ports ------------------------------------- */

struct name_use {
	const char *name;
	int port;
};

static const struct {
	const char *what;
	struct name_use uses[5];
	const char *want[MAXR];
	size_t collapsed;
} collapse_cases[] = {
	{ "two subdomains -> wildcard",
	  { { "a.github.com", 443 }, { "b.github.com", 443 } }, { "*.github.com" }, 2 },
	{ "one subdomain stays exact",
	  { { "a.github.com", 443 } }, { "a.github.com" }, 0 },
	{ "the apex is not a subdomain (wildcards skip it)",
	  { { "github.com", 443 }, { "a.github.com", 443 } },
	  { "a.github.com", "github.com" }, 0 },
	{ "apex kept beside the wildcard",
	  { { "github.com", 443 }, { "a.github.com", 443 }, { "b.github.com", 80 } },
	  { "*.github.com", "github.com" }, 2 },
	{ "deeper names collapse to the registrable domain",
	  { { "a.b.example.com", 443 }, { "c.example.com", 443 } }, { "*.example.com" }, 2 },
	{ "never a single-label *.com",
	  { { "x.com", 443 }, { "y.com", 443 } }, { "x.com", "y.com" }, 0 },
	{ "same name twice is one name",
	  { { "a.github.com", 443 }, { "A.GitHub.com.", 80 } }, { "a.github.com" }, 0 },
	{ "other ports kept, not collapsed with 443",
	  { { "a.github.com", 443 }, { "b.github.com", 8443 } },
	  { "a.github.com", "b.github.com:8443" }, 0 },
	{ "same other port collapses",
	  { { "a.github.com", 8443 }, { "b.github.com", 8443 } },
	  { "*.github.com:8443" }, 2 },
	{ "different domains do not mix",
	  { { "a.one.test", 443 }, { "b.two.test", 443 } }, { "a.one.test", "b.two.test" }, 0 },
	/* The Public Suffix List: never a wildcard at a public suffix, where
	 * every name belongs to someone else (two sites would suggest
	 * "*.github.io" and admit every user's) */
	{ "never *.github.io (a public suffix, private section)",
	  { { "a.github.io", 443 }, { "b.github.io", 443 } }, { "a.github.io", "b.github.io" }, 0 },
	{ "never *.s3.amazonaws.com",
	  { { "x.s3.amazonaws.com", 443 }, { "y.s3.amazonaws.com", 443 } },
	  { "x.s3.amazonaws.com", "y.s3.amazonaws.com" }, 0 },
	{ "never *.co.uk",
	  { { "one.co.uk", 443 }, { "two.co.uk", 443 } }, { "one.co.uk", "two.co.uk" }, 0 },
	{ "below a registrable domain under a public suffix: its wildcard",
	  { { "www.bbc.co.uk", 443 }, { "news.bbc.co.uk", 443 } }, { "*.bbc.co.uk" }, 2 },
	{ "one user's site on github.io: its own subdomains only",
	  { { "a.me.github.io", 443 }, { "b.me.github.io", 443 } }, { "*.me.github.io" }, 2 },
};

static void test_collapse_table(void **state)
{
	size_t i, j;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(collapse_cases); i++) {
		struct suggest *s = new_suggest(0, NULL);

		print_message("case: %s\n", collapse_cases[i].what);
		for (j = 0; j < ARRAY_SIZE(collapse_cases[i].uses) &&
			    collapse_cases[i].uses[j].name; j++)
			add(s, record(10, "/a/b", "deny", "no_match", "proxy",
				      collapse_cases[i].uses[j].name, NULL, "192.0.2.1",
				      collapse_cases[i].uses[j].port, NULL));
		assert_rules(s, collapse_cases[i].want);
		assert_int_equal(suggest_stats(s)->collapsed, collapse_cases[i].collapsed);
		suggest_free(s);
	}
}

/* --- one record -> rule, by kind ----------------------------------------- */

static const struct {
	const char *what;
	const char *verdict, *reason, *origin, *sni, *host, *dst;
	int port;
	const char *resolved;
	const char *want[3];
	size_t used, unfixable, not_denied, invalid;
} record_cases[] = {
	{ "sni on 443", "deny", "no_match", "proxy", "api.allowed.test", NULL, "192.0.2.5",
	  443, NULL, { "api.allowed.test" }, 1, 0, 0, 0 },
	{ "http host on 80", "deny", "no_match", "proxy", NULL, "plain.test", "192.0.2.5",
	  80, NULL, { "plain.test" }, 1, 0, 0, 0 },
	{ "audit verdict counts", "audit", "no_match", "proxy", "learn.test", NULL,
	  "192.0.2.5", 443, NULL, { "learn.test" }, 1, 0, 0, 0 },
	{ "other port kept", "deny", "port", "kernel", "svc.test", NULL, "192.0.2.5",
	  5432, NULL, { "svc.test:5432" }, 1, 0, 0, 0 },
	{ "dns denial: the name, default ports", "deny", "no_match", "dns", NULL, "pypi.org",
	  "192.0.2.53", 53, NULL, { "pypi.org" }, 1, 0, 0, 0 },
	{ "no name: v4 address and port", "deny", "no_name", "proxy", NULL, NULL,
	  "198.51.100.7", 22, NULL, { "198.51.100.7:22" }, 1, 0, 0, 0 },
	{ "no name: v6 address and port", "deny", "no_name", "proxy", NULL, NULL,
	  "2001:db8::7", 443, NULL, { "[2001:db8::7]:443" }, 1, 0, 0, 0 },
	{ "IP literal as SNI: the address", "deny", "no_match", "proxy", "192.0.2.9", NULL,
	  "192.0.2.9", 443, NULL, { "192.0.2.9:443" }, 1, 0, 0, 0 },
	{ "private answer: name and the address", "deny", "private_addr", "proxy",
	  "intranet.test", NULL, "192.0.2.5", 443, "10.1.2.3",
	  { "10.1.2.3:443", "intranet.test" }, 1, 0, 0, 0 },
	{ "deny rule: not fixable", "deny", "rule_deny", "proxy", "evil.test", NULL,
	  "192.0.2.66", 443, NULL, { NULL }, 0, 1, 0, 0 },
	{ "loopback: not fixable", "deny", "loopback", "kernel", NULL, NULL, "127.0.0.1",
	  6379, NULL, { NULL }, 0, 1, 0, 0 },
	{ "allowed: nothing to do", "allow", "rule_allow", "proxy", "ok.test", NULL,
	  "192.0.2.5", 443, NULL, { NULL }, 0, 0, 1, 0 },
	{ "a name no rule can spell", "deny", "no_match", "proxy", "exa mple.test", NULL,
	  "192.0.2.5", 443, NULL, { NULL }, 0, 0, 0, 1 },
	{ "no address either", "deny", "no_name", "proxy", NULL, NULL, NULL, 443, NULL,
	  { NULL }, 0, 0, 0, 1 },
};

static void test_record_table(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(record_cases); i++) {
		struct suggest *s = new_suggest(0, NULL);
		const struct suggest_stats *st;
		const char *want[MAXR] = { 0 };

		print_message("case: %s\n", record_cases[i].what);
		memcpy(want, record_cases[i].want, sizeof(record_cases[i].want));
		add(s, record(5, "/a/b", record_cases[i].verdict, record_cases[i].reason,
			      record_cases[i].origin, record_cases[i].sni, record_cases[i].host,
			      record_cases[i].dst, record_cases[i].port,
			      record_cases[i].resolved));
		assert_rules(s, want);
		st = suggest_stats(s);
		assert_int_equal(st->lines, 1);
		assert_int_equal(st->used, record_cases[i].used);
		assert_int_equal(st->unfixable, record_cases[i].unfixable);
		assert_int_equal(st->not_denied, record_cases[i].not_denied);
		assert_int_equal(st->invalid, record_cases[i].invalid);
		assert_int_equal(st->malformed, 0);
		suggest_free(s);
	}
}

/* --- filters -------------------------------------------------------------- */

static void test_time_window(void **state)
{
	struct suggest *s = new_suggest(3600, NULL);
	static const char *const want[MAXR] = { "fresh.test", "just-inside.test" };
	char *line;

	(void)state;
	add(s, record(60, "/a", "deny", "no_match", "proxy", "fresh.test", NULL, "192.0.2.1",
		      443, NULL));
	add(s, record(3600, "/a", "deny", "no_match", "proxy", "just-inside.test", NULL,
		      "192.0.2.1", 443, NULL));
	add(s, record(3601, "/a", "deny", "no_match", "proxy", "stale.test", NULL,
		      "192.0.2.1", 443, NULL));
	add(s, record(86400 * 30, "/a", "deny", "no_match", "proxy", "old.test", NULL,
		      "192.0.2.1", 443, NULL));
	/* with a window, a record without a readable time cannot be placed */
	line = strdup("{\"time\":\"yesterday\",\"verdict\":\"deny\",\"reason\":\"no_match\","
		      "\"sni\":\"when.test\",\"dst_port\":443}");
	add(s, line);
	assert_rules(s, want);
	assert_int_equal(suggest_stats(s)->filtered, 2);
	assert_int_equal(suggest_stats(s)->malformed, 1);
	suggest_free(s);

	/* no window: everything counts */
	s = new_suggest(0, NULL);
	add(s, record(86400 * 30, "/a", "deny", "no_match", "proxy", "old.test", NULL,
		      "192.0.2.1", 443, NULL));
	assert_int_equal(suggest_stats(s)->used, 1);
	suggest_free(s);
}

static const struct {
	const char *glob;
	const char *cgroup;
	bool used;
} glob_cases[] = {
	{ "/agents.slice/*", "/agents.slice/job1", true },
	{ "/agents.slice/*", "/agents.slice/job1/sub", false },
	{ "/agents.slice/*", "/other.slice/job1", false },
	{ "/agents.slice/*", NULL, false },
	{ "/agents.slice/job-*", "/agents.slice/job-7", true },
	{ "/agents.slice/job-*", "/agents.slice/ci-7", false },
	{ "/kubepods.slice/**/pod*", "/kubepods.slice/a/b/pod1", true },
	{ "/kubepods.slice/**/pod*", "/kubepods.slice/pod1", true },
	{ NULL, NULL, true },
	{ NULL, "/anything", true },
};

static void test_cgroup_glob(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(glob_cases); i++) {
		struct suggest *s = new_suggest(0, glob_cases[i].glob);

		print_message("case: %s vs %s\n", glob_cases[i].glob ?: "(none)",
			      glob_cases[i].cgroup ?: "(none)");
		add(s, record(1, glob_cases[i].cgroup, "deny", "no_match", "proxy", "x.test",
			      NULL, "192.0.2.1", 443, NULL));
		assert_int_equal(suggest_stats(s)->used, glob_cases[i].used);
		assert_int_equal(suggest_stats(s)->filtered, !glob_cases[i].used);
		suggest_free(s);
	}
}

static void test_malformed_lines(void **state)
{
	static const char *const bad[] = {
		"garbage", "[1,2,3]", "{\"verdict\":3}", "{\"sni\":\"x.test\"}",
		"{\"verdict\":\"deny\"", "2027-01-15T08:00:00.000Z deny pid=1 comm=curl",
		"{\"verdict\":\"deny\",\"verdict\":\"allow\"}",
	};
	struct suggest *s = new_suggest(0, NULL);
	static const char *const want[MAXR] = { "good.test" };
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(bad); i++)
		assert_int_equal(suggest_add_line(s, bad[i], strlen(bad[i])), 0);
	assert_int_equal(suggest_add_line(s, "\n", 1), 0);    /* blank: not counted */
	assert_int_equal(suggest_add_line(s, "  \r\n", 4), 0);
	add(s, record(1, "/a", "deny", "no_match", "proxy", "good.test", NULL, "192.0.2.1",
		      443, NULL));
	assert_rules(s, want);
	assert_int_equal(suggest_stats(s)->malformed, ARRAY_SIZE(bad));
	assert_int_equal(suggest_stats(s)->lines, ARRAY_SIZE(bad) + 1);
	suggest_free(s);
}

static const struct {
	const char *text;
	long secs; /* 0: invalid */
} duration_cases[] = {
	{ "90s", 90 }, { "15m", 900 }, { "1h", 3600 }, { "2d", 172800 },
	{ "1h30m", 5400 }, { "1d2h3m4s", 93784 },
	{ "", 0 }, { "1", 0 }, { "h", 0 }, { "1x", 0 }, { "-1h", 0 }, { "1.5h", 0 },
	{ "0s", 0 }, { "1h ", 0 }, { "99999999999999999999s", 0 }, { "4000d", 0 },
};

static void test_durations(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(duration_cases); i++) {
		long v = -1;
		int err = suggest_parse_duration(duration_cases[i].text, &v);

		print_message("case: '%s'\n", duration_cases[i].text);
		if (duration_cases[i].secs) {
			assert_int_equal(err, 0);
			assert_int_equal(v, duration_cases[i].secs);
		} else {
			assert_int_equal(err, -EINVAL);
			assert_int_equal(v, -1);
		}
	}
}

/* --- round trip: the suggestion allows every denied destination ----------- */

static const struct {
	const char *reason, *origin, *sni, *host, *dst;
	int port;
	const char *resolved;
} trip[] = {
	{ "no_match", "proxy", "a.github.com", NULL, "192.0.2.10", 443, NULL },
	{ "no_match", "proxy", "b.github.com", NULL, "192.0.2.11", 443, NULL },
	{ "no_match", "proxy", "x.y.github.com", NULL, "192.0.2.12", 80, NULL },
	{ "no_match", "proxy", "github.com", NULL, "192.0.2.13", 443, NULL },
	{ "no_match", "proxy", NULL, "registry.npmjs.org", "192.0.2.14", 80, NULL },
	{ "port", "proxy", "db.internal.test", NULL, "192.0.2.15", 5432, NULL },
	{ "no_match", "dns", NULL, "pypi.org", "192.0.2.53", 53, NULL },
	{ "no_match", "dns", NULL, "files.pythonhosted.org", "192.0.2.53", 53, NULL },
	{ "no_name", "proxy", NULL, NULL, "198.51.100.7", 22, NULL },
	{ "no_name", "proxy", NULL, NULL, "2001:db8::7", 8080, NULL },
	{ "private_addr", "proxy", "intranet.test", NULL, "192.0.2.16", 443, "10.1.2.3" },
	{ "no_match", "proxy", "Upper.Case.TEST.", NULL, "192.0.2.17", 443, NULL },
};

static void test_round_trip(void **state)
{
	struct suggest *s = new_suggest(3600, "/agents.slice/*");
	struct policy *p = policy_new("x");
	struct policy_decision d;
	char err[256] = "", *json;
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(trip); i++)
		add(s, record((long)i * 60, "/agents.slice/job1", i % 2 ? "deny" : "audit",
			      trip[i].reason, trip[i].origin, trip[i].sni, trip[i].host,
			      trip[i].dst, trip[i].port, trip[i].resolved));
	json = suggest_dump_json(s, "learned");
	assert_non_null(json);
	print_message("%s\n", json);
	assert_int_equal(policy_load_buffer(p, "suggested.json", json, strlen(json), err,
					    sizeof(err)), 0);
	assert_string_equal(p->name, "learned");
	assert_int_equal(p->mode, POLICY_ENFORCE);
	assert_int_equal(suggest_stats(s)->used, ARRAY_SIZE(trip));
	for (i = 0; i < ARRAY_SIZE(trip); i++) {
		const char *name = trip[i].sni ? trip[i].sni : trip[i].host;
		struct egr_addr a;
		char lower[64];
		size_t k;

		print_message("check %zu: %s %s:%d\n", i, trip[i].reason, name ?: trip[i].dst,
			      trip[i].port);
		if (name) {
			for (k = 0; name[k] && k + 1 < sizeof(lower); k++)
				lower[k] = (char)(name[k] >= 'A' && name[k] <= 'Z' ?
						  name[k] + 32 : name[k]);
			lower[k] = '\0';
			if (k && lower[k - 1] == '.')
				lower[k - 1] = '\0';
		}
		if (!strcmp(trip[i].origin, "dns")) {
			assert_true(policy_name_resolvable(p, lower));
			policy_decide_name(p, lower, 443, &d);
			assert_int_equal(d.verdict, EGR_VERDICT_ALLOW);
		} else if (name) {
			policy_decide_name(p, lower, (uint16_t)trip[i].port, &d);
			assert_int_equal(d.verdict, EGR_VERDICT_ALLOW);
		}
		if (!name) {
			assert_int_equal(addr_parse(trip[i].dst, &a), 0);
			policy_decide_addr(p, &a, (uint16_t)trip[i].port, &d);
			assert_int_equal(d.verdict, EGR_VERDICT_ALLOW);
			/* minimal: only that port */
			policy_decide_addr(p, &a, (uint16_t)(trip[i].port + 1), &d);
			assert_int_not_equal(d.verdict, EGR_VERDICT_ALLOW);
		}
		if (trip[i].resolved) {
			assert_int_equal(addr_parse(trip[i].resolved, &a), 0);
			assert_true(policy_names_addr(p, &a, (uint16_t)trip[i].port));
		}
	}
	/* and not more than that: neighbours stay denied */
	policy_decide_name(p, "github.com.evil.test", 443, &d);
	assert_int_equal(d.verdict, EGR_VERDICT_DENY);
	policy_decide_name(p, "db.internal.test", 443, &d);
	assert_int_equal(d.verdict, EGR_VERDICT_DENY);
	policy_decide_name(p, "evil.test", 443, &d);
	assert_int_equal(d.verdict, EGR_VERDICT_DENY);
	free(json);
	policy_free(p);
	suggest_free(s);
}

/* suggest_add_file reads line by line; an empty log is an empty policy. */
static void test_file_and_empty(void **state)
{
	struct suggest *s = new_suggest(0, NULL);
	struct policy *p = policy_new("x");
	char err[256], *json, *l1, *l2, buf[1024];
	FILE *f;

	(void)state;
	json = suggest_dump_json(s, NULL);
	assert_non_null(json);
	assert_int_equal(policy_load_buffer(p, "empty.json", json, strlen(json), err,
					    sizeof(err)), 0);
	assert_int_equal(p->n_allow, 0);
	free(json);
	policy_free(p);

	l1 = record(1, "/a", "deny", "no_match", "proxy", "one.test", NULL, "192.0.2.1", 443,
		    NULL);
	l2 = record(1, "/a", "deny", "no_match", "proxy", "two.test", NULL, "192.0.2.1", 443,
		    NULL);
	snprintf(buf, sizeof(buf), "%s\nnot json\n%s", l1, l2); /* no final newline */
	f = fmemopen(buf, strlen(buf), "r");
	assert_non_null(f);
	assert_int_equal(suggest_add_file(s, f), 0);
	fclose(f);
	assert_int_equal(suggest_stats(s)->used, 2);
	assert_int_equal(suggest_stats(s)->malformed, 1);
	free(l1);
	free(l2);
	suggest_free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_collapse_table),
		cmocka_unit_test(test_record_table),
		cmocka_unit_test(test_time_window),
		cmocka_unit_test(test_cgroup_glob),
		cmocka_unit_test(test_malformed_lines),
		cmocka_unit_test(test_durations),
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_file_and_empty),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
