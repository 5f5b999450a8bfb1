// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * Unit tests for user/formscan.c: "_method" in a POST body as Rack,
 * Laravel and Symfony read it, every body fed whole, in two pieces at
 * every offset, and byte by byte.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "formscan.h"

/* rc of formscan_finish, the same for every split; *m the method. */
static int scan(const char *ct, const char *body, size_t len, const char **m)
{
	struct formscan s;
	const char *first = NULL;
	int want = 0;

	for (size_t at = 0; at <= len + 1; at++) {
		const char *got = NULL;
		int rc;

		assert_true(formscan_init(&s, ct) > 0);
		if (at == len + 1) {
			for (size_t i = 0; i < len; i++)
				formscan_feed(&s, (const uint8_t *)body + i, 1);
		} else {
			formscan_feed(&s, (const uint8_t *)body, at);
			formscan_feed(&s, (const uint8_t *)body + at, len - at);
		}
		rc = formscan_finish(&s, &got);
		if (!at) {
			want = rc;
			first = got;
		}
		assert_int_equal(rc, want);
		if (rc == 1)
			assert_string_equal(got, first);
	}
	*m = first;
	return want;
}

#define URL "application/x-www-form-urlencoded"
#define EXPECT(ct, body, rc, method)                                           \
	do {                                                                   \
		const char *m_ = NULL;                                         \
		assert_int_equal(scan(ct, body, sizeof(body) - 1, &m_), rc);   \
		if ((rc) == 1)                                                 \
			assert_string_equal(m_, method);                       \
	} while (0)

static void test_urlencoded(void **state)
{
	(void)state;
	EXPECT(URL, "a=1&_method=DELETE&b=2", 1, "DELETE");
	EXPECT(URL, "_method=patch", 1, "PATCH");        /* frameworks upper-case */
	EXPECT(URL, "%5Fmethod=put", 1, "PUT");          /* escapes in the name */
	EXPECT(URL, "_method=%44ELETE", 1, "DELETE");    /* and in the value */
	EXPECT(URL, "+_method=DELETE", 1, "DELETE");     /* PHP: leading spaces */
	EXPECT(URL, "%20%20_method=DELETE", 1, "DELETE");
	EXPECT(URL, ".method=DELETE", 1, "DELETE");      /* PHP: '.' is '_' */
	EXPECT(URL, "[method=DELETE", 1, "DELETE");      /* an unclosed '[' too */
	EXPECT(URL, "_method%00junk=DELETE", 1, "DELETE"); /* PHP stops at NUL */
	EXPECT(URL, "a=1;_method=DELETE", 1, "DELETE");  /* older Rack's ';' */
	EXPECT(URL, "_method=DELETE&_method=delete", 1, "DELETE");
	EXPECT(URL, "_method=DELETE&_method=PUT", -1, NULL); /* disagree */
	EXPECT(URL, "_method=NOPE", -1, NULL);
	EXPECT(URL, "_method=DELETE%00", -1, NULL);
	EXPECT(URL, "_method=DELETEDELETEDELETEDELETEDELETEDELETE", -1, NULL);
	EXPECT(URL, "_method=", 0, NULL);                /* frameworks ignore it */
	EXPECT(URL, "_method", 0, NULL);
	EXPECT(URL, "payment_method=card&x_method=DELETE", 0, NULL);
	EXPECT(URL, "_methods=DELETE&a=_method", 0, NULL);
	EXPECT(URL, "_method[]=DELETE", 0, NULL);        /* an array: ignored */
	EXPECT(URL, "%zz_method=DELETE", 0, NULL);       /* '%' kept: not ours */
	EXPECT(URL, "", 0, NULL);
	EXPECT("", "_method=DELETE", 1, "DELETE");       /* Rack: no type is a form */
	EXPECT(URL "; charset=utf-8", "_method=DELETE", 1, "DELETE");
}

#define MP "multipart/form-data; boundary=XyZ"

static void test_multipart(void **state)
{
	(void)state;
	EXPECT(MP, "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n"
		   "--XyZ\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\n"
		   "DELETE\r\n--XyZ--\r\n", 1, "DELETE");
	EXPECT(MP, "--XyZ\r\ncontent-disposition: form-data; NAME=_method\r\n\r\n"
		   "put\r\n--XyZ--", 1, "PUT");
	EXPECT(MP, "--XyZ\ncontent-disposition: form-data; name=\".method\"\n\n"
		   "DELETE\n--XyZ--", 1, "DELETE");             /* LF only */
	EXPECT(MP, "--XyZ\r\nContent-Disposition: form-data; name=\"_meth\\od\"\r\n\r\n"
		   "DELETE\r\n--XyZ--", 1, "DELETE");           /* escapes either way */
	EXPECT(MP, "--XyZ\r\nContent-Disposition: form-data; filename=\"_method\"; "
		   "name=\"f\"\r\n\r\nDELETE\r\n--XyZ--", 0, NULL);
	EXPECT(MP, "--XyZ\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\n"
		   "DELETE\r\nmore\r\n--XyZ--", -1, NULL);      /* two lines: no method */
	EXPECT(MP, "--XyZ\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\n"
		   "DELETE", 1, "DELETE");                      /* never closed */
	EXPECT(MP, "preamble _method\r\n--XyZ\r\nContent-Disposition: form-data; "
		   "name=\"x\"\r\n\r\n_method=DELETE\r\n--XyZ--", 0, NULL);
	EXPECT("multipart/form-data; boundary=\"a b\"",
	       "--a b\r\nContent-Disposition: form-data; name=_method\r\n\r\nPATCH\r\n--a b--",
	       1, "PATCH");
}

static void test_multipart_long_header(void **state)
{
	static char body[FORMSCAN_LINE_MAX + 200];
	const char *m;
	size_t n;

	(void)state;
	n = (size_t)snprintf(body, sizeof(body), "--XyZ\r\nContent-Disposition: form-data; "
			     "name=\"f\"; filename=\"");
	memset(body + n, 'a', FORMSCAN_LINE_MAX);
	n += FORMSCAN_LINE_MAX;
	n += (size_t)snprintf(body + n, sizeof(body) - n, "\"\r\n\r\nx\r\n--XyZ--");
	/* a field too long to read could hide a name: refused */
	assert_int_equal(scan(MP, body, n, &m), -1);
}

static void test_json(void **state)
{
	(void)state;
	EXPECT("application/json", "{\"a\":1,\"_method\":\"DELETE\"}", 1, "DELETE");
	EXPECT("application/json", " { \"_method\" : \"patch\" } ", 1, "PATCH");
	EXPECT("application/json", "{\"\\u005fmethod\":\"\\u0044ELETE\"}", 1, "DELETE");
	EXPECT("application/vnd.api+json", "{\"_method\":\"PUT\"}", 1, "PUT");
	EXPECT("text/json; charset=utf-8", "{\"_method\":\"PUT\"}", 1, "PUT");
	EXPECT("application/json", "{\"a\":{\"_method\":\"DELETE\"}}", 0, NULL); /* nested */
	EXPECT("application/json", "[{\"_method\":\"DELETE\"}]", 0, NULL);
	EXPECT("application/json", "{\"a\":\"_method\",\"b\":\"DELETE\"}", 0, NULL);
	EXPECT("application/json", "{\"a\":\"x\\\"_method\\\":\",\"b\":1}", 0, NULL);
	EXPECT("application/json", "{\"_method\":\"DELETE\",\"_method\":\"PUT\"}", -1, NULL);
	EXPECT("application/json", "{\"_method\":[\"DELETE\"]}", -1, NULL);
	EXPECT("application/json", "{\"_method\":null}", -1, NULL);
	EXPECT("application/json", "{\"_method\":\"NOPE\"}", -1, NULL);
	EXPECT("application/json", "{\"_method\\u0000\":\"DELETE\"}", 0, NULL);
}

static void test_types(void **state)
{
	struct formscan s;

	(void)state;
	assert_int_equal(formscan_init(&s, NULL), FORMSCAN_URLENCODED);
	assert_int_equal(formscan_init(&s, " Application/X-WWW-Form-Urlencoded "),
			 FORMSCAN_URLENCODED);
	assert_int_equal(formscan_init(&s, "multipart/mixed; boundary=q"), FORMSCAN_MULTIPART);
	assert_int_equal(formscan_init(&s, "application/problem+JSON"), FORMSCAN_JSON);
	assert_int_equal(formscan_init(&s, "text/plain"), FORMSCAN_NONE);
	assert_int_equal(formscan_init(&s, "application/octet-stream"), FORMSCAN_NONE);
	/* unreadable as its server reads it */
	assert_int_equal(formscan_init(&s, "multipart/form-data"), -EINVAL);
	assert_int_equal(formscan_init(&s, "multipart/form-data; boundary="), -EINVAL);
	assert_int_equal(formscan_init(&s, "multipart/form-data; boundary=a; boundary=b"),
			 -EINVAL);
	assert_int_equal(formscan_init(&s, "application/x-www-form-urlencoded; x=a/json"),
			 -EINVAL);
	/* nothing to read in a type no framework takes _method from */
	assert_int_equal(formscan_init(&s, "text/plain"), FORMSCAN_NONE);
	formscan_feed(&s, (const uint8_t *)"_method=DELETE", 14);
	assert_int_equal(formscan_finish(&s, NULL), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_urlencoded),
		cmocka_unit_test(test_multipart),
		cmocka_unit_test(test_multipart_long_header),
		cmocka_unit_test(test_json),
		cmocka_unit_test(test_types),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
