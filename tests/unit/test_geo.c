// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * GeoIP module: lookups against real MaxMind DB files built from invented
 * documentation-range data (tests/data/geo/build-mmdb.pl), open errors for
 * missing / corrupt / wrong-kind files, concurrent lookups, and the policy
 * hooks. Run from the repo root (tests/run-unit.sh does).
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "addr.h"
#include "geo.h"

#define GEO_DIR "tests/data/geo/"
#define COUNTRY_DB GEO_DIR "country.mmdb"
#define ASN_DB GEO_DIR "asn.mmdb"

/* "Evil\nOrg" + 59 x U+00E9: the largest whole-character prefix of the
 * database's 208-byte name that fits 127 bytes, newline neutralised. */
static char evil_org[GEO_AS_ORG_LEN];

static void init_evil_org(void)
{
	size_t o = 0;
	int i;

	memcpy(evil_org, "Evil?Org", 8);
	o = 8;
	for (i = 0; i < 59; i++) {
		evil_org[o++] = (char)0xc3;
		evil_org[o++] = (char)0xa9;
	}
	evil_org[o] = '\0';
}

struct lookup_case {
	const char *addr;
	int rc;
	const char *country;
	uint32_t asn;
	const char *org; /* NULL: the evil_org string */
};

static const struct lookup_case lookup_cases[] = {
	/* IPv4 (stored v4-mapped in egr_addr) in an IPv6 database */
	{ "192.0.2.1", 0, "DE", 64500, "Example Transit DE" },
	{ "192.0.2.255", 0, "DE", 64500, "Example Transit DE" },
	{ "198.51.100.200", 0, "US", 64501, "Example Cloud US" },
	{ "203.0.113.9", 0, "KP", 64502, "Example Telecom KP" },
	/* same address, hostile org name in the ASN db */
	{ "203.0.113.200", 0, "KP", 64505, NULL },
	/* written as v4-mapped IPv6 */
	{ "::ffff:198.51.100.7", 0, "US", 64501, "Example Cloud US" },
	/* IPv4-compatible ::a.b.c.d lands in the ::/96 subtree IPv4 lives in */
	{ "::192.0.2.7", 0, "DE", 64500, "Example Transit DE" },
	/* 6to4 (2002:c000:207::/48 = 192.0.2.7) is aliased to IPv4 */
	{ "2002:c000:207::1", 0, "DE", 64500, "Example Transit DE" },
	/* IPv6 */
	{ "2001:db8::1", 0, "FR", 64510, "Example IPv6 Carrier FR" },
	{ "2001:db8:1234:5678::9", 0, "FR", 64510, "Example IPv6 Carrier FR" },
	/* only registered_country; an ASN without an org name */
	{ "2001:db8:ffff::5", 0, "BE", 64511, "" },
	/* not found */
	{ "10.0.0.1", -ENOENT, "", 0, "" },
	{ "192.0.3.1", -ENOENT, "", 0, "" },
	{ "198.51.101.1", -ENOENT, "", 0, "" },
	{ "0.0.0.0", -ENOENT, "", 0, "" },
	{ "255.255.255.255", -ENOENT, "", 0, "" },
	{ "2001:db9::1", -ENOENT, "", 0, "" },
	{ "::1", -ENOENT, "", 0, "" },
	{ "::", -ENOENT, "", 0, "" },
	{ "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", -ENOENT, "", 0, "" },
};

#define N_LOOKUP (sizeof(lookup_cases) / sizeof(lookup_cases[0]))

static const char *case_org(const struct lookup_case *c)
{
	return c->org ? c->org : evil_org;
}

static struct geo *open_ok(const char *country, const char *asn)
{
	char err[256] = "untouched";
	struct geo *g = NULL;
	int rc = geo_open(country, asn, &g, err, sizeof(err));

	if (rc)
		print_error("geo_open(%s, %s): %d %s\n", country ? country : "NULL",
			    asn ? asn : "NULL", rc, err);
	assert_int_equal(rc, 0);
	assert_non_null(g);
	return g;
}

static void parse(const char *s, struct egr_addr *a)
{
	if (addr_parse(s, a)) {
		print_error("bad test address %s\n", s);
		fail();
	}
}

static void test_lookup_table(void **state)
{
	struct geo *g = open_ok(COUNTRY_DB, ASN_DB);
	struct geo_result r;
	struct egr_addr a;
	size_t i;

	for (i = 0; i < N_LOOKUP; i++) {
		const struct lookup_case *c = &lookup_cases[i];
		int rc;

		parse(c->addr, &a);
		memset(&r, 0x5a, sizeof(r)); /* must be overwritten */
		rc = geo_lookup(g, &a, &r);
		if (rc != c->rc || strcmp(r.country, c->country) || r.asn != c->asn ||
		    strcmp(r.as_org, case_org(c)))
			print_error("%s: rc %d country '%s' asn %u org '%s'\n", c->addr, rc,
				    r.country, r.asn, r.as_org);
		assert_int_equal(rc, c->rc);
		assert_string_equal(r.country, c->country);
		assert_int_equal(r.asn, c->asn);
		assert_string_equal(r.as_org, case_org(c));
	}
	geo_close(g);
}

/* The same IPv4 address given as v4-mapped bytes directly, not via parse. */
static void test_lookup_v4_mapped_bytes(void **state)
{
	struct geo *g = open_ok(COUNTRY_DB, NULL);
	const uint8_t mapped[16] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 203, 0, 113, 1 };
	struct geo_result r;
	struct egr_addr a;

	addr_from_v6(&a, mapped);
	assert_true(addr_is_v4(&a));
	assert_int_equal(geo_lookup(g, &a, &r), 0);
	assert_string_equal(r.country, "KP");
	/* no ASN database: ASN fields stay unknown */
	assert_int_equal(r.asn, 0);
	assert_string_equal(r.as_org, "");
	geo_close(g);
}

static void test_lookup_asn_only(void **state)
{
	struct geo *g = open_ok(NULL, ASN_DB);
	struct geo_result r;
	struct egr_addr a;

	parse("198.51.100.1", &a);
	assert_int_equal(geo_lookup(g, &a, &r), 0);
	assert_string_equal(r.country, "");
	assert_int_equal(r.asn, 64501);
	assert_string_equal(r.as_org, "Example Cloud US");
	geo_close(g);
}

struct simple_case {
	const char *addr;
	int rc;
	const char *country;
};

/* An IPv4-only database: IPv6 addresses are "not found", not an error. */
static void test_lookup_ipv4_database(void **state)
{
	static const struct simple_case cases[] = {
		{ "192.0.2.1", 0, "DE" },
		{ "198.51.100.1", 0, "US" },
		{ "::ffff:198.51.100.1", 0, "US" },
		{ "203.0.113.1", -ENOENT, "" },
		{ "2001:db8::1", -ENOENT, "" },
	};
	struct geo *g = open_ok(GEO_DIR "country-v4.mmdb", NULL);
	struct geo_result r;
	struct egr_addr a;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		parse(cases[i].addr, &a);
		assert_int_equal(geo_lookup(g, &a, &r), cases[i].rc);
		assert_string_equal(r.country, cases[i].country);
	}
	geo_close(g);
}

/* The @ip-location-db layout: top-level country_code, any case. */
static void test_lookup_ip_location_db_layout(void **state)
{
	static const struct simple_case cases[] = {
		{ "192.0.2.1", 0, "DE" }, /* stored as "de" */
		{ "2001:db8::1", 0, "FR" },
		{ "198.51.100.1", -ENOENT, "" },
	};
	struct geo *g = open_ok(GEO_DIR "country-ipld.mmdb", NULL);
	struct geo_result r;
	struct egr_addr a;
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		parse(cases[i].addr, &a);
		assert_int_equal(geo_lookup(g, &a, &r), cases[i].rc);
		assert_string_equal(r.country, cases[i].country);
	}
	geo_close(g);
}

static void test_no_databases(void **state)
{
	struct geo *g = open_ok(NULL, NULL);
	struct geo_result r;
	struct egr_addr a;
	char buf[128];

	parse("192.0.2.1", &a);
	assert_int_equal(geo_lookup(g, &a, &r), -ENOENT);
	assert_string_equal(r.country, "");
	assert_int_equal(r.asn, 0);
	assert_int_equal(geo_lookup(NULL, &a, &r), -ENOENT);
	assert_int_equal(geo_lookup(g, NULL, &r), -EINVAL);
	assert_int_equal(geo_lookup(g, &a, NULL), -EINVAL);
	geo_describe(g, buf, sizeof(buf));
	assert_string_equal(buf, "country=none asn=none");
	geo_close(g);
	geo_close(NULL);
}

static void test_describe(void **state)
{
	struct geo *g = open_ok(COUNTRY_DB, ASN_DB);
	char buf[128], small[12];

	geo_describe(g, buf, sizeof(buf));
	assert_string_equal(buf, "country=GeoLite2-Country(2023-11-14) asn=GeoLite2-ASN(2023-11-14)");
	geo_describe(g, small, sizeof(small)); /* truncates, stays terminated */
	assert_string_equal(small, "country=Geo");
	geo_close(g);
}

struct open_case {
	const char *country;
	const char *asn;
	int rc;
	const char *msg1; /* substrings the error must contain */
	const char *msg2;
};

static char empty_path[64];

static const struct open_case open_cases[] = {
	{ GEO_DIR "missing.mmdb", NULL, -ENOENT,
	  "country database " GEO_DIR "missing.mmdb", "No such file" },
	{ COUNTRY_DB, GEO_DIR "missing-asn.mmdb", -ENOENT,
	  "ASN database " GEO_DIR "missing-asn.mmdb", "No such file" },
	{ GEO_DIR, NULL, -EISDIR, GEO_DIR, "is a directory" },
	{ empty_path, NULL, -EBADMSG, "empty file", NULL },
	{ GEO_DIR "corrupt-garbage.mmdb", NULL, -EBADMSG,
	  "corrupt-garbage.mmdb", "not a usable MaxMind DB file" },
	{ GEO_DIR "corrupt-truncated.mmdb", NULL, -EBADMSG,
	  "corrupt-truncated.mmdb", "not a usable MaxMind DB file" },
	{ NULL, GEO_DIR "corrupt-garbage.mmdb", -EBADMSG,
	  "ASN database", "not a usable MaxMind DB file" },
	{ GEO_DIR "corrupt-tree.mmdb", NULL, -EBADMSG,
	  "corrupt-tree.mmdb", "corrupt search tree" },
	{ GEO_DIR "corrupt-data.mmdb", NULL, -EBADMSG,
	  "corrupt-data.mmdb", "corrupt data section" },
	/* wrong kind, by database_type */
	{ ASN_DB, NULL, -EINVAL, "wrong database type \"GeoLite2-ASN\"", "Country or City" },
	{ NULL, COUNTRY_DB, -EINVAL, "wrong database type \"GeoLite2-Country\"", "want an ASN database" },
	/* wrong kind, by content */
	{ GEO_DIR "wrong-type.mmdb", NULL, -EINVAL,
	  "\"GeoIP2-Anonymous-IP\"", "no country.iso_code or country_code" },
	{ NULL, GEO_DIR "wrong-type.mmdb", -EINVAL,
	  "\"GeoIP2-Anonymous-IP\"", "no autonomous_system_number" },
	{ GEO_DIR "mislabeled.mmdb", NULL, -EINVAL,
	  "mislabeled.mmdb", "no country.iso_code or country_code" },
	{ NULL, GEO_DIR "mislabeled.mmdb", -EINVAL, "mislabeled.mmdb", "wrong database type" },
	/* a country-only layout given as ASN */
	{ NULL, GEO_DIR "country-ipld.mmdb", -EINVAL, "no autonomous_system_number", NULL },
};

static void test_open_errors(void **state)
{
	size_t i;

	for (i = 0; i < sizeof(open_cases) / sizeof(open_cases[0]); i++) {
		const struct open_case *c = &open_cases[i];
		struct geo *g = (struct geo *)&g; /* must be reset to NULL */
		char err[256] = "";
		int rc = geo_open(c->country, c->asn, &g, err, sizeof(err));

		if (rc != c->rc || !strstr(err, c->msg1) || (c->msg2 && !strstr(err, c->msg2)))
			print_error("case %zu (%s, %s): rc %d err '%s'\n", i,
				    c->country ? c->country : "NULL", c->asn ? c->asn : "NULL",
				    rc, err);
		assert_int_equal(rc, c->rc);
		assert_null(g);
		assert_non_null(strstr(err, c->msg1));
		if (c->msg2)
			assert_non_null(strstr(err, c->msg2));
		assert_null(strchr(err, '\n'));
	}
}

static void test_open_unreadable(void **state)
{
	char path[] = "/tmp/egr-geo-unreadable-XXXXXX";
	char err[256] = "";
	struct geo *g = NULL;
	int fd;

	pid_t pid;
	int status;

	fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(chmod(path, 0), 0);
	/* root reads mode-000 files: check as nobody, in a child */
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int ok;

		if (geteuid() == 0 && (setgid(65534) || setuid(65534)))
			_exit(2);
		ok = geo_open(path, NULL, &g, err, sizeof(err)) == -EACCES && !g &&
		     strstr(err, "Permission denied");
		_exit(ok ? 0 : 1);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	unlink(path);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_open_bad_args(void **state)
{
	assert_int_equal(geo_open(COUNTRY_DB, NULL, NULL, NULL, 0), -EINVAL);
}

/* 4 threads on one handle must each see exactly the single-thread answers. */
#define CONC_THREADS 4
#define CONC_ROUNDS 2000

struct conc_arg {
	const struct geo *g;
	unsigned offset;
	unsigned mismatches;
	unsigned lookups;
};

static void *conc_worker(void *p)
{
	struct conc_arg *arg = p;
	struct geo_result r;
	struct egr_addr a;
	unsigned round, i;

	for (round = 0; round < CONC_ROUNDS; round++) {
		for (i = 0; i < N_LOOKUP; i++) {
			/* each thread walks the table from its own offset */
			const struct lookup_case *c = &lookup_cases[(i + arg->offset) % N_LOOKUP];
			int rc;

			if (addr_parse(c->addr, &a)) {
				arg->mismatches++;
				continue;
			}
			rc = geo_lookup(arg->g, &a, &r);
			arg->lookups++;
			if (rc != c->rc || strcmp(r.country, c->country) || r.asn != c->asn ||
			    strcmp(r.as_org, case_org(c)))
				arg->mismatches++;
		}
	}
	return NULL;
}

static void test_concurrent_lookups(void **state)
{
	struct geo *g = open_ok(COUNTRY_DB, ASN_DB);
	pthread_t th[CONC_THREADS];
	struct conc_arg args[CONC_THREADS];
	int i;

	for (i = 0; i < CONC_THREADS; i++) {
		args[i] = (struct conc_arg){ .g = g, .offset = (unsigned)i * 5 };
		assert_int_equal(pthread_create(&th[i], NULL, conc_worker, &args[i]), 0);
	}
	for (i = 0; i < CONC_THREADS; i++)
		assert_int_equal(pthread_join(th[i], NULL), 0);
	for (i = 0; i < CONC_THREADS; i++) {
		assert_int_equal(args[i].lookups, CONC_ROUNDS * N_LOOKUP);
		assert_int_equal(args[i].mismatches, 0);
	}
	geo_close(g);
}

static void test_country_denied(void **state)
{
	static const char *const deny[] = { "KP", "ir", "Cu", NULL };
	static const char *const junk[] = { "", "K", "KPX", "1P", "*", NULL };
	static const char *const none[] = { NULL };
	static const struct {
		const char *country;
		const char *const *list;
		bool denied;
	} cases[] = {
		{ "KP", deny, true },
		{ "kp", deny, true },   /* case-insensitive both ways */
		{ "IR", deny, true },
		{ "cU", deny, true },
		{ "DE", deny, false },
		{ "K", deny, false },
		{ "KPX", deny, false }, /* exact, not a prefix match */
		{ "", deny, false },    /* unknown country is not denied */
		{ NULL, deny, false },
		{ "KP", none, false },
		{ "KP", NULL, false },
		{ "", junk, false },    /* "" in a list never matches unknown */
		{ "KP", junk, false },
		{ "1P", junk, false },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		bool got = geo_country_denied(cases[i].country, cases[i].list);

		if (got != cases[i].denied)
			print_error("case %zu: '%s' -> %d\n", i,
				    cases[i].country ? cases[i].country : "NULL", got);
		assert_int_equal(got, cases[i].denied);
	}
}

static void test_asn_allowed(void **state)
{
	static const uint32_t allow[] = { 64500, 64511, 4200000000u };
	static const uint32_t with_zero[] = { 0, 64500 };
	static const struct {
		uint32_t asn;
		const uint32_t *list;
		size_t n;
		bool allowed;
	} cases[] = {
		{ 64500, allow, 3, true },
		{ 64511, allow, 3, true },
		{ 4200000000u, allow, 3, true }, /* 32-bit ASN */
		{ 64501, allow, 3, false },
		{ 0, allow, 3, false },          /* unknown ASN denied by an allow-list */
		{ 0, with_zero, 2, false },      /* ... even if 0 is listed */
		{ 64511, allow, 1, false },      /* n bounds the list */
		{ 64500, NULL, 0, true },        /* no restriction */
		{ 0, NULL, 0, true },
		{ 64500, NULL, 2, false },       /* defensive */
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		bool got = geo_asn_allowed(cases[i].asn, cases[i].list, cases[i].n);

		if (got != cases[i].allowed)
			print_error("case %zu: %u -> %d\n", i, cases[i].asn, got);
		assert_int_equal(got, cases[i].allowed);
	}
}

static int setup(void **state)
{
	int fd;

	init_evil_org();
	snprintf(empty_path, sizeof(empty_path), "/tmp/egr-geo-empty-XXXXXX");
	fd = mkstemp(empty_path);
	if (fd < 0)
		return -1;
	close(fd);
	return 0;
}

static int teardown(void **state)
{
	unlink(empty_path);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lookup_table),
		cmocka_unit_test(test_lookup_v4_mapped_bytes),
		cmocka_unit_test(test_lookup_asn_only),
		cmocka_unit_test(test_lookup_ipv4_database),
		cmocka_unit_test(test_lookup_ip_location_db_layout),
		cmocka_unit_test(test_no_databases),
		cmocka_unit_test(test_describe),
		cmocka_unit_test(test_open_errors),
		cmocka_unit_test(test_open_unreadable),
		cmocka_unit_test(test_open_bad_args),
		cmocka_unit_test(test_concurrent_lookups),
		cmocka_unit_test(test_country_denied),
		cmocka_unit_test(test_asn_allowed),
	};

	return cmocka_run_group_tests_name("geo", tests, setup, teardown);
}
