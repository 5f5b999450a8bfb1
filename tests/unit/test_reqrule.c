// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * Unit tests for user/reqrule.c: path normalization and glob tables
 * (the tricky paths an agent would use to walk out of an allowed prefix),
 * Host vs SNI (domain fronting), the rule decision with body limits and
 * credential choice, the string parsers, and env:/file: value sources
 * whose errors must name the source and never carry a value.
 */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include <http_parser.h>

#include "reqrule.h"

static const struct norm_case {
	const char *target;
	const char *want; /* NULL: refused */
} norm_cases[] = {
	{ "/", "/" },
	{ "/repos/acme/x", "/repos/acme/x" },
	{ "/repos/acme/x?a=1&b=/../", "/repos/acme/x" },
	{ "/repos/acme/", "/repos/acme/" },
	{ "/repos/%61cme/%7Euser", "/repos/acme/~user" },
	{ "/a%3ab", "/a%3Ab" },
	{ "/a%20b", "/a%20b" },
	{ "/repos/acme/../evil", NULL },
	{ "/repos/acme/%2e%2e/evil", NULL },
	{ "/repos/acme/%2E./evil", NULL },
	{ "/repos/acme/..", NULL },
	{ "/repos/acme/..;/evil", NULL },
	{ "/repos/./acme", NULL },
	{ "/repos/acme%2Fevil", NULL },
	{ "/repos/acme%2fevil", NULL },
	{ "/repos/acme%5Cevil", NULL },
	{ "/repos/acme\\evil", NULL },
	{ "/repos/acme%00", NULL },
	{ "/repos/acme//x", NULL },
	{ "//repos/acme", NULL },
	{ "/a%", NULL },
	{ "/a%4", NULL },
	{ "/a%zz", NULL },
	{ "/a#frag", NULL },
	{ "repos/acme", NULL },
	{ "", NULL },
	{ "/...", "/..." },
	{ "/.well-known/x", "/.well-known/x" },
};

static void test_normalize(void **state)
{
	for (size_t i = 0; i < sizeof(norm_cases) / sizeof(norm_cases[0]); i++) {
		const struct norm_case *c = &norm_cases[i];
		char out[REQRULE_PATH_MAX];
		int err = reqrule_normalize_path(c->target, out, sizeof(out));

		if (!c->want) {
			if (err != -EINVAL)
				fail_msg("%s: want refused, got %d (%s)", c->target, err, out);
			continue;
		}
		if (err)
			fail_msg("%s: refused %d", c->target, err);
		assert_string_equal(out, c->want);
	}
}

static const struct glob_case {
	const char *glob;
	const char *path;
	bool match;
} glob_cases[] = {
	{ "/repos/acme/**", "/repos/acme", true },
	{ "/repos/acme/**", "/repos/acme/", true },
	{ "/repos/acme/**", "/repos/acme/x", true },
	{ "/repos/acme/**", "/repos/acme/x/y/z", true },
	{ "/repos/acme/**", "/repos/acmeevil", false },
	{ "/repos/acme/**", "/repos/acmeevil/x", false },
	{ "/repos/acme/**", "/repos", false },
	{ "/repos/acme/**", "/REPOS/acme/x", false },
	{ "/repos/*", "/repos/acme", true },
	{ "/repos/*", "/repos/", false },
	{ "/repos/*", "/repos/acme/x", false },
	{ "/repos/*/issues", "/repos/acme/issues", true },
	{ "/repos/*/issues", "/repos/acme/x/issues", false },
	{ "/repos/**/issues", "/repos/issues", true },
	{ "/repos/**/issues", "/repos/a/b/issues", true },
	{ "/repos/**/issues", "/repos/a/b/issues/1", false },
	{ "/**", "/", true },
	{ "/**", "/anything/at/all", true },
	{ "/", "/", true },
	{ "/", "/x", false },
	{ "/repos/acme/", "/repos/acme/", true },
	{ "/repos/acme/", "/repos/acme", false },
	{ "/repos/acme", "/repos/acme/", false },
	{ "/*/*.git/info/refs", "/acme/repo.git/info/refs", true },
	{ "/*/*.git/info/refs", "/acme/repo/info/refs", false },
	{ "/*/*.git/info/refs", "/acme/.git/info/refs", true },
	{ "/a*b", "/ab", true },
	{ "/a*b", "/axxb", true },
	{ "/a*b", "/axxbc", false },
	{ "*", "*", true },
	{ "*", "/x", false },
	{ "/**", "*", false },
	{ "/**/**/**/**/x", "/a/b/c/d/e/f/g/h/i/j/k/l/m/n/o/p/q/r/s/t/u/v/w/y", false },
};

static void test_glob_table(void **state)
{
	for (size_t i = 0; i < sizeof(glob_cases) / sizeof(glob_cases[0]); i++) {
		const struct glob_case *c = &glob_cases[i];

		if (reqrule_glob_match(c->glob, c->path) != c->match)
			fail_msg("glob %s path %s: want %d", c->glob, c->path, c->match);
	}
}

/* How deny rules match: the exact path, or the loose reading lenient
 * servers act on (case, ";params", trailing slash). */
static const struct glob_case loose_cases[] = {
	{ "/repos/acme/secret/**", "/repos/acme/secret/x", true },
	{ "/repos/acme/secret/**", "/repos/acme/SECRET/x", true },
	{ "/repos/acme/secret/**", "/Repos/Acme/Secret", true },
	{ "/repos/acme/secret/**", "/repos/acme/secret;x/y", true },
	{ "/repos/acme/secret/**", "/repos/acme/secret;jsessionid=1", true },
	{ "/repos/acme/secret/**", "/repos/acme;x/secret/y", true },
	{ "/repos/acme/secret/**", "/repos/acme/;x/secret/y", true },
	{ "/repos/acme/secret/**", "/repos/acme/secretx/y", false },
	{ "/repos/acme/secret/**", "/repos/acme/secre;t/y", false },
	{ "/admin", "/admin", true },
	{ "/admin", "/admin/", true },
	{ "/admin", "/ADMIN/", true },
	{ "/admin", "/admin;x", true },
	{ "/admin", "/admin;x/", true },
	{ "/admin", "/admin/x", false },
	{ "/Admin/*.GIT", "/admin/repo.git", true },
	{ "/admin/*", "/admin/;x", true },
	{ "/admin/*", "/admin/;x/", false },
	{ "/", "/;x", true },
	{ "*", "*", true },
	{ "*", "/", false },
	/* reserved characters a glob names, percent-encoded: Go's ServeMux,
	 * WSGI and others decode them before routing */
	{ "/v1/items/*:archive", "/v1/items/x%3Aarchive", true },
	{ "/v1/items/*:archive", "/v1/items/x%3AARCHIVE", true },
	{ "/@acme/**", "/%40acme/secret", true },
	{ "/a/!$&'()*+,;=", "/a/%21%24%26%27%28%29%2A%2B%2C%3B%3D", true },
	{ "/a/b:c", "/a/b%3Ac;x", true },       /* params cut, then decoded */
	{ "/admin", "/admin%3Bx", true },       /* decoded, then params cut */
	{ "/a/{x}", "/a/%7Bx%7D", true },
	{ "/v1/items/*:archive", "/v1/items/x%3Barchive", false },
	{ "/v1/items/*:archive", "/v1/items/x%253Aarchive", false }, /* decoded once */
};

static void test_glob_loose_table(void **state)
{
	for (size_t i = 0; i < sizeof(loose_cases) / sizeof(loose_cases[0]); i++) {
		const struct glob_case *c = &loose_cases[i];

		if (reqrule_glob_match_loose(c->glob, c->path) != c->match)
			fail_msg("loose glob %s path %s: want %d", c->glob, c->path, c->match);
	}
}

static void test_glob_valid(void **state)
{
	static const char *const ok[] = { "/", "/repos/acme/**", "*", "/a/*.git", "/a/" };
	static const char *const bad[] = { "", "repos", "/a//b", "/a/../b", "/a/./b",
					   "/a?x", "/a#x", "/a%2F", "/a\\b", "/a b",
					   "/a**", "/**x/y" };

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		if (reqrule_glob_valid(ok[i]))
			fail_msg("glob %s refused", ok[i]);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (!reqrule_glob_valid(bad[i]))
			fail_msg("glob %s accepted", bad[i]);
}

static const struct host_case {
	const char *host;
	const char *sni;
	int want;
} host_cases[] = {
	{ "api.test", "api.test", 1 },
	{ "API.Test", "api.test", 1 },
	{ "api.test", "API.TEST", 1 },
	{ "api.test.", "api.test", 1 },
	{ "api.test", "api.test.", 1 },
	{ "api.test:443", "api.test", 1 },
	{ "api.test.:443", "api.test", 1 },
	{ "api.test:", "api.test", 1 },
	{ "api.test:8443", "api.test", 0 },
	{ "api.test:80", "api.test", 0 },
	{ "evil.test", "api.test", 0 },
	{ "api.test.evil.test", "api.test", 0 },
	{ "api.tes", "api.test", 0 },
	{ "xapi.test", "api.test", 0 },
	{ "api.test..", "api.test", 0 },
	{ "[2001:db8::1]", "api.test", 0 },
	{ "[2001:db8::1]:443", "api.test", 0 },
	{ "api.test:x", "api.test", -EINVAL },
	{ "api.test:443:443", "api.test", -EINVAL },
	{ "user@api.test", "api.test", -EINVAL },
	{ "api.test/x", "api.test", -EINVAL },
	{ "api test", "api.test", -EINVAL },
	{ "", "api.test", -EINVAL },
	{ ":443", "api.test", -EINVAL },
	{ "[2001:db8::1", "api.test", -EINVAL },
};

static void test_host_table(void **state)
{
	for (size_t i = 0; i < sizeof(host_cases) / sizeof(host_cases[0]); i++) {
		const struct host_case *c = &host_cases[i];
		int got = reqrule_host_matches(c->host, c->sni);

		if (got != c->want)
			fail_msg("host '%s' sni '%s': got %d want %d", c->host, c->sni,
				 got, c->want);
	}
}

/* On a connection to port 9443, Host must say 9443 (or nothing); 443 is
 * then another service. */
static void test_host_port(void **state)
{
	(void)state;
	assert_int_equal(reqrule_host_matches_port("api.test:9443", "api.test", 9443), 1);
	assert_int_equal(reqrule_host_matches_port("api.test", "api.test", 9443), 1);
	assert_int_equal(reqrule_host_matches_port("api.test:443", "api.test", 9443), 0);
	assert_int_equal(reqrule_host_matches_port("api.test:9443", "api.test", 0), 0);
	assert_int_equal(reqrule_host_matches_port("evil.test:9443", "api.test", 9443), 0);
}

static struct reqrule_host host;

static int setup(void **state)
{
	struct reqrule r;

	assert_int_equal(reqrule_host_init(&host, "api.test"), 0);
	assert_int_equal(reqrule_init(&r, "no-archive", "deny", "*",
				      "/repos/acme/*:archive /repos/@acme/**", NULL), 0);
	assert_int_equal(reqrule_host_add_rule(&host, &r), 0);
	assert_int_equal(reqrule_init(&r, "no-secrets", "deny", "*",
				      "/repos/acme/secret/**", NULL), 0);
	assert_int_equal(reqrule_host_add_rule(&host, &r), 0);
	assert_int_equal(reqrule_init(&r, "no-settings", "deny", "*",
				      "/repos/acme/settings", NULL), 0);
	assert_int_equal(reqrule_host_add_rule(&host, &r), 0);
	assert_int_equal(reqrule_init(&r, "no-delete", "deny", "DELETE", "/**", NULL), 0);
	assert_int_equal(reqrule_host_add_rule(&host, &r), 0);
	assert_int_equal(reqrule_init(&r, "read-acme", "allow", "GET,HEAD",
				      "/repos/acme/** /user /repos/acmex/**", NULL), 0);
	assert_int_equal(reqrule_host_add_rule(&host, &r), 0);
	assert_int_equal(reqrule_init(&r, "push-acme", "allow", "POST",
				      "/repos/acme/*/git-upload-pack,/repos/acme/*/issues",
				      "64k"), 0);
	assert_int_equal(reqrule_host_add_rule(&host, &r), 0);
	assert_int_equal(reqrule_init(&r, "options", "allow", "OPTIONS", "*", NULL), 0);
	assert_int_equal(reqrule_host_add_rule(&host, &r), 0);
	assert_int_equal(reqrule_init(&r, "trace", "allow", "TRACE", "/repos/acme/** /user",
				      NULL), 0);
	assert_int_equal(reqrule_host_add_rule(&host, &r), 0);
	assert_int_equal(reqrule_init(&r, "colon", "allow", "GET", "/v1/a:b", NULL), 0);
	assert_int_equal(reqrule_host_add_rule(&host, &r), 0);
	assert_int_equal(reqrule_host_add_cred(&host, "github-token", "Authorization",
					       "", "env:EGR_TEST_TOKEN"), 0);
	assert_int_equal(reqrule_host_add_cred(&host, "acme-token", "authorization",
					       "/repos/acme", "env:EGR_TEST_ACME"), 0);
	assert_int_equal(reqrule_host_add_cred(&host, "api-key", "X-Api-Key",
					       "/user", "file:/nonexistent"), 0);
	return 0;
}

static int teardown(void **state)
{
	reqrule_host_free(&host);
	return 0;
}

#define PLUS10 "++++++++++"
#define PLUS70 PLUS10 PLUS10 PLUS10 PLUS10 PLUS10 PLUS10 PLUS10
#define X10 "xxxxxxxxxx"
#define X70 X10 X10 X10 X10 X10 X10 X10
#define ZERO10 "0000000000"
#define ZERO70 ZERO10 ZERO10 ZERO10 ZERO10 ZERO10 ZERO10 ZERO10

static const struct check_case {
	const char *what;
	const char *method, *target, *host;
	int64_t cl; /* -1: none */
	int status;
	const char *rule;   /* rule_name, NULL: none */
	const char *cred;   /* name of the Authorization credential, or NULL */
	const char *override; /* method override field's value, or NULL */
} check_cases[] = {
	{ "allowed get", "GET", "/repos/acme/x", "api.test", -1, 0, "read-acme", "acme-token", NULL },
	{ "allowed head", "HEAD", "/repos/acme", "api.test", -1, 0, "read-acme", "acme-token", NULL },
	{ "query ignored", "GET", "/repos/acme/x?path=/repos/evil", "api.test", -1, 0, "read-acme", "acme-token", NULL },
	{ "query cannot allow", "GET", "/repos/evil?/repos/acme/x", "api.test", -1, 403, "default", NULL, NULL },
	{ "trailing slash", "GET", "/repos/acme/", "api.test", -1, 0, "read-acme", "acme-token", NULL },
	{ "user", "GET", "/user", "api.test", -1, 0, "read-acme", "github-token", NULL },
	{ "cred prefix boundary", "GET", "/repos/acmex/y", "api.test", -1, 0, "read-acme", "github-token", NULL },
	{ "user prefix boundary", "GET", "/repos/acmeevil", "api.test", -1, 403, "default", NULL, NULL },
	{ "post denied path", "POST", "/repos/evil/x/issues", "api.test", -1, 403, "default", NULL, NULL },
	{ "post allowed", "POST", "/repos/acme/r/issues", "api.test", 10, 0, "push-acme", "acme-token", NULL },
	{ "method not listed", "PATCH", "/repos/acme/x", "api.test", -1, 403, "default", NULL, NULL },
	{ "method denied", "DELETE", "/repos/acme/x", "api.test", -1, 403, "no-delete", NULL, NULL },
	{ "deny rule first", "GET", "/repos/acme/secret/x", "api.test", -1, 403, "no-secrets", NULL, NULL },
	{ "deny rule any method", "POST", "/repos/acme/secret", "api.test", -1, 403, "no-secrets", NULL, NULL },
	/* A deny rule also holds for the path as lenient servers read it;
	 * an allow rule only for the exact path (else: default, 403). */
	{ "deny upper case", "GET", "/repos/acme/SECRET/x", "api.test", -1, 403, "no-secrets", NULL, NULL },
	{ "deny mixed case", "GET", "/Repos/Acme/Secret", "api.test", -1, 403, "no-secrets", NULL, NULL },
	{ "deny encoded upper", "GET", "/repos/acme/%53ECRET/x", "api.test", -1, 403, "no-secrets", NULL, NULL },
	{ "deny path params", "GET", "/repos/acme/secret;x/y", "api.test", -1, 403, "no-secrets", NULL, NULL },
	{ "deny params on parent", "GET", "/repos/acme;x/secret/y", "api.test", -1, 403, "no-secrets", NULL, NULL },
	{ "deny exact", "GET", "/repos/acme/settings", "api.test", -1, 403, "no-settings", NULL, NULL },
	{ "deny trailing slash", "GET", "/repos/acme/settings/", "api.test", -1, 403, "no-settings", NULL, NULL },
	{ "deny case and slash", "GET", "/repos/acme/Settings/", "api.test", -1, 403, "no-settings", NULL, NULL },
	{ "deny params", "GET", "/repos/acme/settings;a=b", "api.test", -1, 403, "no-settings", NULL, NULL },
	{ "deny is per segment", "GET", "/repos/acme/settings/x", "api.test", -1, 0, "read-acme", "acme-token", NULL },
	{ "allow stays exact: case", "GET", "/REPOS/acme/x", "api.test", -1, 403, "default", NULL, NULL },
	{ "allow stays exact: slash", "GET", "/user/", "api.test", -1, 403, "default", NULL, NULL },
	{ "allow stays exact: params", "GET", "/user;x", "api.test", -1, 403, "default", NULL, NULL },
	/* escapes of reserved characters: a deny rule holds for them decoded
	 * too, an allow rule only literally */
	{ "deny ':' encoded", "POST", "/repos/acme/x%3Aarchive", "api.test", 10, 403, "no-archive", NULL, NULL },
	{ "deny ':' encoded, else allowed", "GET", "/repos/acme/x%3Aarchive", "api.test", -1, 403, "no-archive", NULL, NULL },
	{ "deny ':' encoded lower", "POST", "/repos/acme/x%3aarchive", "api.test", 10, 403, "no-archive", NULL, NULL },
	{ "deny '@' encoded", "GET", "/repos/%40acme/secret", "api.test", -1, 403, "no-archive", NULL, NULL },
	{ "deny ':' literal", "GET", "/repos/acme/x:archive", "api.test", -1, 403, "no-archive", NULL, NULL },
	{ "allow ':' literal", "GET", "/v1/a:b", "api.test", -1, 0, "colon", "github-token", NULL },
	{ "allow stays exact: ':' encoded", "GET", "/v1/a%3Ab", "api.test", -1, 403, "default", NULL, NULL },
	{ "S3-style key with %3A", "GET", "/repos/acme/k%3Av1", "api.test", -1, 0, "read-acme", "acme-token", NULL },
	/* A method override must be allowed as well as the method; the
	 * credentials follow the method. */
	{ "override denied", "GET", "/repos/acme/x", "api.test", -1, 403, "no-delete", NULL, "DELETE" },
	{ "override any case", "GET", "/repos/acme/x", "api.test", -1, 403, "no-delete", NULL, "delete" },
	{ "override not allowed", "GET", "/repos/acme/x", "api.test", -1, 403, "default", NULL, "PUT" },
	{ "override on denied method", "PATCH", "/repos/acme/x", "api.test", -1, 403, "default", NULL, "GET" },
	{ "override allowed too", "POST", "/repos/acme/r/issues", "api.test", 10, 0, "push-acme", "acme-token", "GET" },
	{ "override same method", "GET", "/repos/acme/x", "api.test", -1, 0, "read-acme", "acme-token", "GET" },
	{ "override unknown", "GET", "/repos/acme/x", "api.test", -1, 400, NULL, NULL, "FOO" },
	{ "override empty", "GET", "/repos/acme/x", "api.test", -1, 400, NULL, NULL, "" },
	{ "override's body limit", "GET", "/repos/acme/r/issues", "api.test", 65537, 413, "push-acme", NULL, "POST" },
	{ "method's body limit", "POST", "/repos/acme/r/issues", "api.test", 65537, 413, "push-acme", NULL, "GET" },
	/* HEAD or CONNECT as an override: the server answers without a body
	 * (or opens a tunnel) where egressd reads a POST's response */
	{ "override to HEAD", "POST", "/repos/acme/r/issues", "api.test", 10, 400, NULL, NULL, "HEAD" },
	{ "override to head", "GET", "/repos/acme/x", "api.test", -1, 400, NULL, NULL, "head" },
	{ "HEAD overridden to HEAD", "HEAD", "/repos/acme/x", "api.test", -1, 400, NULL, NULL, "HEAD" },
	{ "override to CONNECT", "POST", "/repos/acme/r/issues", "api.test", 10, 400, NULL, NULL, "CONNECT" },
	{ "query _method=HEAD", "POST", "/repos/acme/r/issues?_method=HEAD", "api.test", 10, 400, NULL, NULL, NULL },
	{ "query _method=connect", "POST", "/repos/acme/r/issues?a=1&%5Fmethod=connect", "api.test", 10, 400, NULL, NULL, NULL },
	/* TRACE echoes the request: allowed, never with credentials */
	{ "trace without credentials", "TRACE", "/repos/acme/x", "api.test", -1, 0, "trace", NULL, NULL },
	{ "override to trace", "POST", "/repos/acme/r/issues", "api.test", 10, 0, "push-acme", NULL, "TRACE" },
	{ "trace overridden", "TRACE", "/repos/acme/x", "api.test", -1, 0, "trace", NULL, "GET" },
	/* _method in the query (Rails, Laravel, Symfony, Express) */
	{ "query _method denied", "GET", "/repos/acme/x?_method=DELETE", "api.test", -1, 403, "no-delete", NULL, NULL },
	{ "query _method escaped", "GET", "/repos/acme/x?a=1&%5Fmethod=delete", "api.test", -1, 403, "no-delete", NULL, NULL },
	{ "query _method allowed", "POST", "/repos/acme/r/issues?_method=GET", "api.test", 10, 0, "push-acme", "acme-token", NULL },
	{ "query _method unknown", "GET", "/repos/acme/x?_method=FOO", "api.test", -1, 400, NULL, NULL, NULL },
	{ "query _method twice, disagreeing", "GET", "/repos/acme/x?_method=GET&_method=DELETE", "api.test", -1, 400, NULL, NULL, NULL },
	{ "query _method and field disagree", "GET", "/repos/acme/x?_method=PUT", "api.test", -1, 400, NULL, NULL, "GET" },
	{ "query _METHOD (Slim, ASP.NET Core)", "GET", "/repos/acme/x?_METHOD=DELETE", "api.test", -1, 403, "no-delete", NULL, NULL },
	{ "query method_ is another name", "GET", "/repos/acme/x?x_method=DELETE", "api.test", -1, 0, "read-acme", "acme-token", NULL },
	/* names as PHP makes them ($_GET: Laravel, Symfony) */
	{ "query .method (PHP: _method)", "GET", "/repos/acme/x?.method=DELETE", "api.test", -1, 403, "no-delete", NULL, NULL },
	{ "query %2Emethod", "GET", "/repos/acme/x?%2Emethod=DELETE", "api.test", -1, 403, "no-delete", NULL, NULL },
	{ "query [method", "GET", "/repos/acme/x?[method=DELETE", "api.test", -1, 403, "no-delete", NULL, NULL },
	{ "query +_method", "GET", "/repos/acme/x?+_method=DELETE", "api.test", -1, 403, "no-delete", NULL, NULL },
	/* PHP drops a name's leading spaces and cuts it at a NUL, whatever
	 * its length, and keeps the last of several: $_GET['_method'] */
	{ "query _method after 70 spaces", "POST", "/repos/acme/r/issues?" PLUS70 "_method=DELETE", "api.test", 10, 403, "no-delete", NULL, NULL },
	{ "query _method%00 and 70 more", "POST", "/repos/acme/r/issues?_method%00" X70 "=DELETE", "api.test", 10, 403, "no-delete", NULL, NULL },
	{ "query _method twice, the last long", "POST", "/repos/acme/r/issues?_method=GET&" PLUS70 "_method=DELETE", "api.test", 10, 400, NULL, NULL, NULL },
	{ "query long name, no _method", "POST", "/repos/acme/r/issues?" X70 "_method=DELETE", "api.test", 10, 0, "push-acme", "acme-token", NULL },
	{ "query name too long to decide", "POST", "/repos/acme/r/issues?_method[" ZERO70 "]=DELETE", "api.test", 10, 400, NULL, NULL, NULL },
	/* a fragment: never sent; Go reads on past it */
	{ "fragment in the query", "POST", "/repos/acme/r/issues?a#&_method=DELETE", "api.test", 10, 400, NULL, NULL, NULL },
	{ "dot-dot", "GET", "/repos/acme/../evil", "api.test", -1, 400, NULL, NULL, NULL },
	{ "encoded dot-dot", "GET", "/repos/acme/%2e%2e/evil", "api.test", -1, 400, NULL, NULL, NULL },
	{ "encoded slash", "GET", "/repos/acme%2Fevil", "api.test", -1, 400, NULL, NULL, NULL },
	{ "double slash", "GET", "/repos/acme//x", "api.test", -1, 400, NULL, NULL, NULL },
	{ "leading double slash", "GET", "//repos/acme", "api.test", -1, 400, NULL, NULL, NULL },
	{ "dot segment to deny", "GET", "/repos/acme/./secret/x", "api.test", -1, 400, NULL, NULL, NULL },
	{ "encoded unreserved", "GET", "/repos/%61cme/x", "api.test", -1, 0, "read-acme", "acme-token", NULL },
	{ "host case", "GET", "/repos/acme/x", "API.TEST", -1, 0, "read-acme", "acme-token", NULL },
	{ "host dot", "GET", "/repos/acme/x", "api.test.", -1, 0, "read-acme", "acme-token", NULL },
	{ "host 443", "GET", "/repos/acme/x", "api.test:443", -1, 0, "read-acme", "acme-token", NULL },
	{ "host 8443", "GET", "/repos/acme/x", "api.test:8443", -1, 421, NULL, NULL, NULL },
	{ "fronting", "GET", "/repos/acme/x", "evil.test", -1, 421, NULL, NULL, NULL },
	{ "missing host", "GET", "/repos/acme/x", NULL, -1, 400, NULL, NULL, NULL },
	{ "empty host", "GET", "/repos/acme/x", "", -1, 400, NULL, NULL, NULL },
	{ "bad host", "GET", "/repos/acme/x", "api.test@evil", -1, 400, NULL, NULL, NULL },
	{ "absolute-form", "GET", "https://api.test/repos/acme/x", "api.test", -1, 0, "read-acme", "acme-token", NULL },
	{ "absolute-form :443", "GET", "https://API.test:443/repos/acme/x?q", "api.test", -1, 0, "read-acme", "acme-token", NULL },
	{ "absolute-form mismatch", "GET", "https://evil.test/repos/acme/x", "api.test", -1, 421, NULL, NULL, NULL },
	{ "absolute-form 8443", "GET", "https://api.test:8443/repos/acme/x", "api.test", -1, 421, NULL, NULL, NULL },
	{ "absolute-form userinfo", "GET", "https://api.test@evil.test/x", "api.test", -1, 400, NULL, NULL, NULL },
	{ "absolute-form no path", "GET", "https://api.test", "api.test", -1, 403, "default", NULL, NULL },
	{ "absolute-form other scheme", "GET", "ftp://api.test/x", "api.test", -1, 400, NULL, NULL, NULL },
	{ "options star", "OPTIONS", "*", "api.test", -1, 0, "options", "github-token", NULL },
	{ "get star", "GET", "*", "api.test", -1, 400, NULL, NULL, NULL },
	{ "connect", "CONNECT", "api.test:443", "api.test", -1, 403, "default", NULL, NULL },
	{ "connect elsewhere", "CONNECT", "evil.test:443", "api.test", -1, 421, NULL, NULL, NULL },
	{ "body at limit", "POST", "/repos/acme/r/issues", "api.test", 65536, 0, "push-acme", "acme-token", NULL },
	{ "body over limit", "POST", "/repos/acme/r/issues", "api.test", 65537, 413, "push-acme", NULL, NULL },
};

static void test_check_table(void **state)
{
	for (size_t i = 0; i < sizeof(check_cases) / sizeof(check_cases[0]); i++) {
		const struct check_case *c = &check_cases[i];
		struct reqrule_request req = {
			.method = c->method, .target = c->target, .host = c->host,
			.method_override = c->override,
			.has_length = c->cl >= 0,
			.content_length = c->cl >= 0 ? (uint64_t)c->cl : 0,
		};
		struct reqrule_result res;
		const char *cred = NULL;
		int st = reqrule_check(&host, "api.test", &req, &res);

		if (st != c->status || res.status != st)
			fail_msg("%s: status %d want %d (%s)", c->what, st, c->status,
				 res.reason);
		assert_non_null(res.reason);
		if ((c->rule == NULL) != (res.rule_name == NULL) ||
		    (c->rule && strcmp(c->rule, res.rule_name)))
			fail_msg("%s: rule %s want %s", c->what, res.rule_name, c->rule);
		for (size_t k = 0; k < res.n_creds; k++)
			if (!strcasecmp(res.creds[k]->header, "authorization"))
				cred = res.creds[k]->name;
		if ((c->cred == NULL) != (cred == NULL) || (cred && strcmp(cred, c->cred)))
			fail_msg("%s: credential %s want %s", c->what, cred, c->cred);
		if (st)
			assert_int_equal(res.n_creds, 0);
	}
}

static void test_check_limits_and_creds(void **state)
{
	struct reqrule_request req = { .method = "POST", .target = "/repos/acme/r/git-upload-pack",
				       .host = "api.test" };
	struct reqrule_result res;

	assert_int_equal(reqrule_check(&host, "api.test", &req, &res), 0);
	assert_int_equal(res.max_body, 64 * 1024);
	req.method = "GET";
	req.target = "/repos/acme/x";
	assert_int_equal(reqrule_check(&host, "api.test", &req, &res), 0);
	assert_int_equal(res.max_body, REQRULE_NO_LIMIT);
	/* Only the credential whose prefix covers /user: X-Api-Key. */
	req.target = "/user";
	assert_int_equal(reqrule_check(&host, "api.test", &req, &res), 0);
	assert_int_equal(res.n_creds, 2);
	/* TRACE: no credential of any header. */
	req.method = "TRACE";
	assert_int_equal(reqrule_check(&host, "api.test", &req, &res), 0);
	assert_string_equal(res.rule_name, "trace");
	assert_int_equal(res.n_creds, 0);
	/* A POST's body may name only methods the request is allowed as
	 * too: on /repos/acme/r/issues GET and HEAD (read-acme), TRACE (but not
	 * with credentials set), not DELETE (no-delete), PUT or OPTIONS. */
	{
		struct reqrule_request p = { .method = "POST", .target = "/repos/acme/r/issues",
					     .host = "api.test" };
		struct reqrule_result pr;

		assert_int_equal(reqrule_check(&host, "api.test", &p, &pr), 0);
		assert_true(pr.n_creds > 0);
		assert_true(pr.override_ok & (1ULL << HTTP_GET));
		assert_true(pr.override_ok & (1ULL << HTTP_POST));
		assert_false(pr.override_ok & (1ULL << HTTP_OPTIONS)); /* "*" only */
		assert_false(pr.override_ok & (1ULL << HTTP_DELETE));
		assert_false(pr.override_ok & (1ULL << HTTP_PUT));
		assert_false(pr.override_ok & (1ULL << HTTP_TRACE)); /* credentials */
		/* other methods: no framework reads one from their body */
		req.method = "GET";
		assert_int_equal(reqrule_check(&host, "api.test", &req, &pr), 0);
		assert_true(pr.override_ok == UINT64_MAX);
	}
	req.method = "GET";
	/* The SNI itself with a trailing dot. */
	assert_int_equal(reqrule_check(&host, "api.test.", &req, &res), 0);
	/* Long path: 414, not a crash. */
	char *t = malloc(REQRULE_PATH_MAX + 10);

	assert_non_null(t);
	memset(t, 'a', REQRULE_PATH_MAX + 9);
	t[0] = '/';
	t[REQRULE_PATH_MAX + 9] = '\0';
	req.target = t;
	assert_int_equal(reqrule_check(&host, "api.test", &req, &res), 414);
	free(t);
}

static void test_parsers(void **state)
{
	uint64_t v;
	struct reqrule r;

	assert_int_equal(reqrule_parse_methods("GET,HEAD", &v), 0);
	assert_int_equal(v, (1ULL << 1) | (1ULL << 2));
	assert_int_equal(reqrule_parse_methods(" GET , POST ", &v), 0);
	assert_int_equal(reqrule_parse_methods("*", &v), 0);
	assert_int_equal(v, UINT64_MAX);
	assert_int_equal(reqrule_parse_methods("M-SEARCH", &v), 0);
	assert_int_equal(reqrule_parse_methods("get", &v), -EINVAL);
	assert_int_equal(reqrule_parse_methods("GETX", &v), -EINVAL);
	assert_int_equal(reqrule_parse_methods("", &v), -EINVAL);
	assert_int_equal(reqrule_parse_methods(",", &v), -EINVAL);

	assert_int_equal(reqrule_parse_size("1048576", &v), 0);
	assert_int_equal(v, 1048576);
	assert_int_equal(reqrule_parse_size("64k", &v), 0);
	assert_int_equal(v, 65536);
	assert_int_equal(reqrule_parse_size("10M", &v), 0);
	assert_int_equal(v, 10ULL << 20);
	assert_int_equal(reqrule_parse_size("1G", &v), 0);
	assert_int_equal(v, 1ULL << 30);
	assert_int_equal(reqrule_parse_size("none", &v), 0);
	assert_int_equal(v, REQRULE_NO_LIMIT);
	assert_int_equal(reqrule_parse_size("0", &v), 0);
	assert_int_equal(v, 0);
	assert_int_equal(reqrule_parse_size("1x", &v), -EINVAL);
	assert_int_equal(reqrule_parse_size("1kb", &v), -EINVAL);
	assert_int_equal(reqrule_parse_size("-1", &v), -EINVAL);
	assert_int_equal(reqrule_parse_size("k", &v), -EINVAL);
	assert_int_equal(reqrule_parse_size("99999999999999999999", &v), -ERANGE);
	assert_int_equal(reqrule_parse_size("99999999999999G", &v), -ERANGE);

	assert_int_equal(reqrule_init(&r, "x", "allow", "GET", "/a /b,/c", "1k"), 0);
	assert_int_equal(r.n_globs, 3);
	assert_string_equal(r.globs[2], "/c");
	assert_int_equal(reqrule_init(&r, "x", "permit", "GET", "/a", NULL), -EINVAL);
	assert_int_equal(reqrule_init(&r, "x", "allow", "GET", "", NULL), -EINVAL);
	assert_int_equal(reqrule_init(&r, "x", "allow", "GET", "/a/../b", NULL), -EINVAL);
	assert_int_equal(reqrule_init(&r, "", "allow", "GET", "/a", NULL), -EINVAL);

	struct reqrule_host h;

	assert_int_equal(reqrule_host_init(&h, "api.test"), 0);
	assert_int_equal(reqrule_host_add_cred(&h, "t", "Bad Header", "", "env:X"), -EINVAL);
	assert_int_equal(reqrule_host_add_cred(&h, "t", "X-A", "", "literal-secret"), -EINVAL);
	assert_int_equal(reqrule_host_add_cred(&h, "t", "X-A", "nope", "env:X"), -EINVAL);
	assert_int_equal(reqrule_host_add_cred(&h, "t", "X-A", NULL, "file:/run/x"), 0);
	/* Framing, routing and hop-by-hop fields, in any spelling a server
	 * may read as them. */
	static const char *const reserved[] = {
		"Host", "Content-Length", "Transfer-Encoding", "Connection", "Upgrade",
		"TE", "Trailer", "Keep-Alive", "Proxy-Connection", "Proxy-Authorization",
		"Expect", "host", "CONTENT-LENGTH", "transfer_encoding", "Keep_Alive",
		"proxy_authorization", "te",
		/* PHP maps '.' to '_' in $_SERVER names, Apache's CGI
		 * environment every non-alphanumeric byte */
		"Content.Length", "transfer~encoding", "Proxy!Authorization", "keep.alive",
	};

	for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++) {
		if (reqrule_host_add_cred(&h, "t", reserved[i], NULL, "env:X") != -EINVAL)
			fail_msg("credential header %s accepted", reserved[i]);
		assert_true(reqrule_header_reserved(reserved[i]));
	}
	static const char *const fine[] = { "Authorization", "X-Api-Key", "Tes", "T",
					    "Hosts", "X-Host", "Expected", "Cookie" };

	for (size_t i = 0; i < sizeof(fine) / sizeof(fine[0]); i++) {
		if (reqrule_host_add_cred(&h, "t", fine[i], NULL, "env:X"))
			fail_msg("credential header %s refused", fine[i]);
		assert_false(reqrule_header_reserved(fine[i]));
	}
	reqrule_host_free(&h);
}

#define SECRET "s3cr3t-VALUE-do-not-log"

static void expect_err(const struct reqrule_cred *c, int want, const char *must)
{
	char val[64], err[512];
	size_t len = 7;
	int ret = reqrule_cred_resolve(c, val, sizeof(val), &len, err, sizeof(err));

	if (ret != want)
		fail_msg("%s: got %d want %d (%s)", c->source, ret, want, err);
	assert_int_equal(len, 0);
	assert_non_null(strstr(err, c->name));
	if (must)
		assert_non_null(strstr(err, must));
	assert_null(strstr(err, "s3cr3t"));
	assert_null(strstr(err, "VALUE"));
}

static void test_cred_resolve(void **state)
{
	char val[64], err[256];
	struct reqrule_cred c = { .name = "github-token", .header = "Authorization" };
	size_t len;

	/* env: present, with and without one trailing newline */
	setenv("EGR_TEST_CRED", "Bearer " SECRET, 1);
	snprintf(c.source, sizeof(c.source), "env:EGR_TEST_CRED");
	assert_int_equal(reqrule_cred_resolve(&c, val, sizeof(val), &len, err, sizeof(err)), 0);
	assert_string_equal(val, "Bearer " SECRET);
	assert_int_equal(len, strlen(val));
	setenv("EGR_TEST_CRED", SECRET "\n", 1);
	assert_int_equal(reqrule_cred_resolve(&c, val, sizeof(val), &len, err, sizeof(err)), 0);
	assert_string_equal(val, SECRET);

	/* env: missing, bad name, value with controls, too long */
	snprintf(c.source, sizeof(c.source), "env:EGR_TEST_MISSING");
	unsetenv("EGR_TEST_MISSING");
	expect_err(&c, -ENOENT, "env:EGR_TEST_MISSING");
	snprintf(c.source, sizeof(c.source), "env:BAD-NAME");
	expect_err(&c, -EINVAL, "env:BAD-NAME");
	setenv("EGR_TEST_CRED", SECRET "\r\nX-Evil: 1", 1);
	snprintf(c.source, sizeof(c.source), "env:EGR_TEST_CRED");
	expect_err(&c, -EINVAL, "env:EGR_TEST_CRED");
	setenv("EGR_TEST_CRED", SECRET SECRET SECRET SECRET, 1);
	expect_err(&c, -EFBIG, "env:EGR_TEST_CRED");
	setenv("EGR_TEST_CRED", "\n", 1);
	expect_err(&c, -EINVAL, "empty");
	setenv("EGR_TEST_CRED", " " SECRET, 1);
	expect_err(&c, -EINVAL, "blanks");
	unsetenv("EGR_TEST_CRED");

	/* a literal secret by mistake where the source goes: not echoed */
	snprintf(c.source, sizeof(c.source), SECRET);
	expect_err(&c, -EINVAL, "env:NAME or file:/path");
}

/* path holds text, owned by root, with mode. */
static void write_secret(const char *path, const char *text, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

static int rm_one(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(p);
}

/*
 * file: sources are read as root for a cgroup that must never see them:
 * only a regular file, not through a link, root's and mode 0600 or
 * stricter, in directories only root can change. Errors name the
 * credential, the source and the fix, never the value.
 */
static void test_cred_resolve_file(void **state)
{
	char dir[] = "/tmp/egr-reqrule-XXXXXX";
	char path[128], other[160], val[64], err[512];
	struct reqrule_cred c = { .name = "github-token", .header = "Authorization" };
	size_t len;

	if (geteuid() != 0) {
		printf("test_cred_resolve_file: needs root (files owned by root): skipped\n");
		skip();
	}
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/token", dir);
	write_secret(path, SECRET "\n", 0600);
	snprintf(c.source, sizeof(c.source), "file:%s", path);
	assert_int_equal(reqrule_cred_resolve(&c, val, sizeof(val), &len, err, sizeof(err)), 0);
	assert_string_equal(val, SECRET);
	assert_int_equal(len, strlen(SECRET));
	write_secret(path, SECRET "\n", 0400);
	assert_int_equal(reqrule_cred_resolve(&c, val, sizeof(val), &len, err, sizeof(err)), 0);
	/* one newline trimmed; a second stays and is a control character
	 * in a header value, so the file as a whole is refused */
	write_secret(path, SECRET "\n\n", 0600);
	expect_err(&c, -EINVAL, path);
	write_secret(path, SECRET "\r\n", 0600);
	assert_int_equal(reqrule_cred_resolve(&c, val, sizeof(val), &len, err, sizeof(err)), 0);
	assert_string_equal(val, SECRET);
	write_secret(path, SECRET "\nsecond line\n", 0600);
	expect_err(&c, -EINVAL, path);
	write_secret(path, SECRET SECRET SECRET SECRET SECRET SECRET SECRET SECRET, 0600);
	expect_err(&c, -EFBIG, path);

	/* readable or writable by others, or not root's: refused with the fix */
	write_secret(path, SECRET, 0644);
	expect_err(&c, -EPERM, "chmod 600");
	write_secret(path, SECRET, 0640);
	expect_err(&c, -EPERM, "mode 0640");
	write_secret(path, SECRET, 0602);
	expect_err(&c, -EPERM, "mode 0600 or stricter");
	write_secret(path, SECRET, 0600);
	assert_int_equal(chown(path, 1000, 1000), 0);
	expect_err(&c, -EPERM, "chown root");
	assert_int_equal(chown(path, 0, 0), 0);

	/* a symbolic link (to a good file, even): not followed */
	snprintf(other, sizeof(other), "%s/link", dir);
	assert_int_equal(symlink(path, other), 0);
	snprintf(c.source, sizeof(c.source), "file:%s", other);
	expect_err(&c, -ELOOP, "symbolic link");
	unlink(other);
	/* a second name of the file (or of another root-only one) */
	assert_int_equal(link(path, other), 0);
	expect_err(&c, -EMLINK, "hard links");
	unlink(other);
	/* a FIFO: refused at once, not waited on */
	assert_int_equal(mkfifo(other, 0600), 0);
	expect_err(&c, -EINVAL, "not a regular file");
	unlink(other);

	/* missing file, a directory (unreadable as a file) */
	snprintf(c.source, sizeof(c.source), "file:%s/missing", dir);
	expect_err(&c, -ENOENT, "missing");
	snprintf(c.source, sizeof(c.source), "file:%s", dir);
	expect_err(&c, -EISDIR, dir);

	/* the directories above: root's, not writable by group or others */
	snprintf(c.source, sizeof(c.source), "file:%s", path);
	assert_int_equal(chmod(dir, 0770), 0);
	expect_err(&c, -EPERM, "writable by group or others");
	assert_int_equal(chmod(dir, 0755), 0);
	assert_int_equal(reqrule_cred_resolve(&c, val, sizeof(val), &len, err, sizeof(err)), 0);
	/* sticky, like /tmp: nobody can swap root's file there */
	assert_int_equal(chmod(dir, 01777), 0);
	assert_int_equal(reqrule_cred_resolve(&c, val, sizeof(val), &len, err, sizeof(err)), 0);
	assert_int_equal(chmod(dir, 0700), 0);
	assert_int_equal(chown(dir, 1000, 1000), 0);
	expect_err(&c, -EPERM, "owned by uid 1000");
	assert_int_equal(chown(dir, 0, 0), 0);

	/* a directory on the way through a link: the link root's, and
	 * where it leads checked as well */
	snprintf(other, sizeof(other), "%s/sub", dir);
	assert_int_equal(mkdir(other, 0700), 0);
	snprintf(path, sizeof(path), "%s/sub/token", dir);
	write_secret(path, SECRET, 0600);
	snprintf(other, sizeof(other), "%s/via", dir);
	assert_int_equal(symlink("sub", other), 0);
	snprintf(c.source, sizeof(c.source), "file:%s/via/token", dir);
	assert_int_equal(reqrule_cred_resolve(&c, val, sizeof(val), &len, err, sizeof(err)), 0);
	assert_string_equal(val, SECRET);
	snprintf(other, sizeof(other), "%s/sub", dir);
	assert_int_equal(chown(other, 1000, 1000), 0);
	expect_err(&c, -EPERM, "owned by uid 1000");
	assert_int_equal(chown(other, 0, 0), 0);
	snprintf(other, sizeof(other), "%s/via", dir);
	assert_int_equal(lchown(other, 1000, 1000), 0);
	expect_err(&c, -EPERM, "symbolic link owned by uid 1000");

	nftw(dir, rm_one, 8, FTW_DEPTH | FTW_PHYS);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_normalize),
		cmocka_unit_test(test_glob_table),
		cmocka_unit_test(test_glob_loose_table),
		cmocka_unit_test(test_glob_valid),
		cmocka_unit_test(test_host_table),
		cmocka_unit_test(test_host_port),
		cmocka_unit_test(test_check_table),
		cmocka_unit_test(test_check_limits_and_creds),
		cmocka_unit_test(test_parsers),
		cmocka_unit_test(test_cred_resolve),
		cmocka_unit_test(test_cred_resolve_file),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
