// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* user/httpstream.c: every request on a plain-HTTP connection names its host. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "httpstream.h"

/* The stream fed whole, then one byte at a time: the same answer, and
 * for a tunnel the same place where its raw bytes begin (*at). */
static int feed_at(const char *host, const char *text, size_t *at)
{
	struct httpstream *s = httpstream_new(host);
	size_t i, len = strlen(text), at_whole = 0, at_bytes = 0;
	int whole, bytewise = HTTPSTREAM_OK;

	assert_non_null(s);
	whole = httpstream_feed(s, (const uint8_t *)text, len);
	if (whole == HTTPSTREAM_TUNNEL)
		at_whole = httpstream_tunnel_at(s);
	httpstream_free(s);
	s = httpstream_new(host);
	assert_non_null(s);
	for (i = 0; i < len && bytewise == HTTPSTREAM_OK; i++)
		bytewise = httpstream_feed(s, (const uint8_t *)text + i, 1);
	if (bytewise == HTTPSTREAM_TUNNEL)
		at_bytes = i - 1 + httpstream_tunnel_at(s);
	httpstream_free(s);
	assert_int_equal(whole, bytewise);
	assert_int_equal(at_whole, at_bytes);
	if (at)
		*at = at_whole;
	return whole;
}

static int feed(const char *host, const char *text)
{
	return feed_at(host, text, NULL);
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

/*
 * The body's bytes go to the server as they are: it must find the end of
 * the message where we do. http-parser reads a chunk line on past a bare
 * LF to the next CR; nginx and HAProxy end it at the LF, and what
 * http-parser took for an extension is a request to them.
 */
static void test_strict_chunks(void **state)
{
	static const char pre[] =
		"POST / HTTP/1.1\r\nHost: allowed.test\r\nTransfer-Encoding: chunked\r\n\r\n";
	static const struct {
		const char *body;
		int want;
	} t[] = {
		/* the reviewer's smuggles: an extension or a blank ended
		 * by a bare LF, the next request in bare-LF lines */
		{ "0;x\n\nGET / HTTP/1.1\nHost: evil.test\n\n\r\n\r\n", HTTPSTREAM_MALFORMED },
		{ "0 \n\nGET / HTTP/1.1\nHost: evil.test\n\n\r\n\r\n", HTTPSTREAM_MALFORMED },
		/* any two bytes after the data taken for its CRLF */
		{ "1\r\nA\nX0\r\n\r\n", HTTPSTREAM_MALFORMED },
		{ "1\r\nAXY0\r\n\r\n", HTTPSTREAM_MALFORMED },
		{ "0\n\r\n", HTTPSTREAM_MALFORMED },
		{ "0\r\n\n", HTTPSTREAM_MALFORMED },
		{ "0\r\r\n\r\n", HTTPSTREAM_MALFORMED },
		{ " 5\r\nhello\r\n0\r\n\r\n", HTTPSTREAM_MALFORMED },
		{ "5 \r\nhello\r\n0\r\n\r\n", HTTPSTREAM_MALFORMED },
		{ "0x5\r\nhello\r\n0\r\n\r\n", HTTPSTREAM_MALFORMED },
		{ ";x\r\n0\r\n\r\n", HTTPSTREAM_MALFORMED },
		/* 17 digits: more than a 64-bit size */
		{ "00000000000000005\r\nhello\r\n0\r\n\r\n", HTTPSTREAM_MALFORMED },
		{ "5;a=\"b\x01\"\r\nhello\r\n0\r\n\r\n", HTTPSTREAM_MALFORMED },
		/* trailers: name:value lines with CRLF, no fold, no bare LF */
		{ "0\r\nX-T: 1\nHost: evil.test\r\n\r\n", HTTPSTREAM_MALFORMED },
		{ "0\r\nX-T: 1\r\n folded\r\n\r\n", HTTPSTREAM_MALFORMED },
		{ "0\r\nX-T 1\r\n\r\n", HTTPSTREAM_MALFORMED },
		/* what real clients send, then the next request */
		{ "5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n", HTTPSTREAM_OK },
		{ "0000000000000005\r\nhello\r\n0\r\n\r\n", HTTPSTREAM_OK },
		{ "A;name=\"v a\";x\r\n0123456789\r\n0;y\r\n\r\n", HTTPSTREAM_OK },
		{ "5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-B:\t2\r\n\r\n", HTTPSTREAM_OK },
		{ "5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: evil.test\r\n\r\n", HTTPSTREAM_OTHER_HOST },
	};
	char buf[512];

	(void)state;
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		int got;

		snprintf(buf, sizeof(buf), "%s%s", pre, t[i].body);
		got = feed("allowed.test", buf);
		if (got != t[i].want) {
			print_error("case %zu: got %d want %d\n", i, got, t[i].want);
			fail();
		}
	}
	/* a chunk size a server keeping it in an int reads otherwise */
	assert_int_equal(feed("allowed.test",
			      "POST / HTTP/1.1\r\nHost: allowed.test\r\nTransfer-Encoding: chunked\r\n\r\n"
			      "100000005\r\nhello\r\n0\r\n\r\n"),
			 HTTPSTREAM_MALFORMED);
	assert_int_equal(feed("allowed.test",
			      "POST / HTTP/1.1\r\nHost: allowed.test\r\nTransfer-Encoding: chunked\r\n\r\n"
			      "7fffffff\r\n"),
			 HTTPSTREAM_OK);
	/* Transfer-Encoding: one field, "chunked" alone (http-parser takes
	 * these as chunked, nginx refuses them) */
	assert_int_equal(feed("allowed.test",
			      "POST / HTTP/1.1\r\nHost: allowed.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"
			      "0\r\n\r\n"),
			 HTTPSTREAM_MALFORMED);
	assert_int_equal(feed("allowed.test",
			      "POST / HTTP/1.1\r\nHost: allowed.test\r\nTransfer-Encoding: identity\r\n"
			      "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
			 HTTPSTREAM_MALFORMED);
	assert_int_equal(feed("allowed.test",
			      "POST / HTTP/1.1\r\nHost: allowed.test\r\ntransfer-encoding:  Chunked \r\n\r\n"
			      "0\r\n\r\n"),
			 HTTPSTREAM_OK);
	/* Transfer-Encoding in HTTP/1.0 is faulty framing (RFC 9112 6.1) */
	assert_int_equal(feed("allowed.test",
			      "POST / HTTP/1.0\r\nHost: allowed.test\r\nTransfer-Encoding: chunked\r\n\r\n"
			      "0\r\n\r\n"),
			 HTTPSTREAM_MALFORMED);
	/* a later head with bare LF lines is refused like the first */
	assert_int_equal(feed("allowed.test", "GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n"
			      "GET / HTTP/1.1\nHost: allowed.test\n\n"),
			 HTTPSTREAM_MALFORMED);
}

/* Where the raw bytes after an Upgrade head begin: the caller watches them
 * from there (a request for another host after an ignored upgrade). */
static void test_tunnel_at(void **state)
{
	static const char first[] = "GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n";
	static const char up[] = "GET / HTTP/1.1\r\nHost: allowed.test\r\nConnection: Upgrade\r\n"
				 "Upgrade: x\r\n\r\n";
	char buf[512];
	size_t at = 0;

	(void)state;
	snprintf(buf, sizeof(buf), "%s%sGET / HTTP/1.1\r\nHost: evil.test\r\n\r\n", first, up);
	assert_int_equal(feed_at("allowed.test", buf, &at), HTTPSTREAM_TUNNEL);
	assert_int_equal(at, strlen(first) + strlen(up));
	snprintf(buf, sizeof(buf), "%s", up);
	assert_int_equal(feed_at("allowed.test", buf, &at), HTTPSTREAM_TUNNEL);
	assert_int_equal(at, strlen(up));
	/* CONNECT too */
	assert_int_equal(feed_at("allowed.test",
				 "CONNECT allowed.test:443 HTTP/1.1\r\nHost: allowed.test:443\r\n\r\n"
				 "\x16\x03\x01",
				 &at),
			 HTTPSTREAM_TUNNEL);
	assert_int_equal(at, 61);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_same_host),
		cmocka_unit_test(test_other_host),
		cmocka_unit_test(test_bodies),
		cmocka_unit_test(test_upgrade),
		cmocka_unit_test(test_strict_chunks),
		cmocka_unit_test(test_tunnel_at),
	};

	return cmocka_run_group_tests_name("httpstream", tests, NULL, NULL);
}
