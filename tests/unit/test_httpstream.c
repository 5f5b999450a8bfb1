// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* user/httpstream.c: every request on a plain-HTTP connection names its host. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "httpstream.h"

/* The stream fed whole, then one byte at a time: the same answer. */
static int feed(const char *host, const char *text)
{
	struct httpstream *s = httpstream_new(host);
	size_t i, len = strlen(text);
	int whole, bytewise = HTTPSTREAM_OK;

	assert_non_null(s);
	whole = httpstream_feed(s, (const uint8_t *)text, len);
	httpstream_free(s);
	s = httpstream_new(host);
	assert_non_null(s);
	for (i = 0; i < len && bytewise == HTTPSTREAM_OK; i++)
		bytewise = httpstream_feed(s, (const uint8_t *)text + i, 1);
	httpstream_free(s);
	assert_int_equal(whole, bytewise);
	return whole;
}

static void test_same_host(void **state)
{
	(void)state;
	assert_int_equal(feed("allowed.test", "GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n"
			      "GET /b HTTP/1.1\r\nHost: Allowed.Test:80\r\n\r\n"),
			 HTTPSTREAM_OK);
	/* a partial head is not a verdict yet */
	assert_int_equal(feed("allowed.test", "GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n"
			      "GET /b HTTP/1.1\r\nHo"),
			 HTTPSTREAM_OK);
}

static void test_other_host(void **state)
{
	struct httpstream *s;
	const char *t = "GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n"
			"POST /x HTTP/1.1\r\nHost: evil.test\r\nContent-Length: 3\r\n\r\nabc";

	(void)state;
	assert_int_equal(feed("allowed.test", t), HTTPSTREAM_OTHER_HOST);
	s = httpstream_new("allowed.test");
	assert_int_equal(httpstream_feed(s, (const uint8_t *)t, strlen(t)),
			 HTTPSTREAM_OTHER_HOST);
	assert_string_equal(httpstream_other_host(s), "evil.test");
	/* sticky */
	assert_int_equal(httpstream_feed(s, (const uint8_t *)"x", 1), HTTPSTREAM_OTHER_HOST);
	httpstream_free(s);
	/* no Host (HTTP/1.0), an absolute-form target elsewhere */
	assert_int_equal(feed("allowed.test", "GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n"
			      "GET / HTTP/1.0\r\n\r\n"),
			 HTTPSTREAM_OTHER_HOST);
	assert_int_equal(feed("allowed.test", "GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n"
			      "GET http://evil.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n"),
			 HTTPSTREAM_OTHER_HOST);
}

/* A body is framed, not read as requests: its bytes may look like a head. */
static void test_bodies(void **state)
{
	(void)state;
	assert_int_equal(feed("allowed.test",
			      "POST / HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: 35\r\n\r\n"
			      "GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n"
			      "GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n"),
			 HTTPSTREAM_OK);
	assert_int_equal(feed("allowed.test",
			      "POST / HTTP/1.1\r\nHost: allowed.test\r\nTransfer-Encoding: chunked\r\n\r\n"
			      "5\r\nhello\r\n0\r\n\r\n"
			      "GET / HTTP/1.1\r\nHost: evil.test\r\n\r\n"),
			 HTTPSTREAM_OTHER_HOST);
	/* ambiguous framing */
	assert_int_equal(feed("allowed.test",
			      "POST / HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: 3\r\n"
			      "Content-Length: 40\r\n\r\nabc"),
			 HTTPSTREAM_MALFORMED);
	assert_int_equal(feed("allowed.test", "GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n"
			      "\x01\x02 binary\r\n\r\n"),
			 HTTPSTREAM_MALFORMED);
}

/* An upgrade to the same host: what follows is the new protocol. */
static void test_upgrade(void **state)
{
	(void)state;
	assert_int_equal(feed("allowed.test",
			      "GET /ws HTTP/1.1\r\nHost: allowed.test\r\nConnection: Upgrade\r\n"
			      "Upgrade: websocket\r\n\r\n\x81\x05hello"),
			 HTTPSTREAM_TUNNEL);
	/* h2c: its streams could each name another host */
	assert_int_equal(feed("allowed.test",
			      "GET / HTTP/1.1\r\nHost: allowed.test\r\nConnection: Upgrade, HTTP2-Settings\r\n"
			      "Upgrade: H2C\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"),
			 HTTPSTREAM_MALFORMED);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_same_host),
		cmocka_unit_test(test_other_host),
		cmocka_unit_test(test_bodies),
		cmocka_unit_test(test_upgrade),
	};

	return cmocka_run_group_tests_name("httpstream", tests, NULL, NULL);
}
