// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * Unit tests for user/httphead.c: table of request heads (what each must
 * give), every table entry split at every offset, size limits, and the
 * hand-made heads of the fuzz corpus (tests/fuzz/corpus/httphead/, loaded
 * relative to the repo root).
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "httphead.h"

#define CORPUS_DIR "tests/fuzz/corpus/httphead/"

static const struct head_case {
	const char *what;
	const char *in;
	int ret;
	const char *method;
	const char *host; /* NULL: no host */
	uint16_t port;
	bool valid;
	size_t head_len;  /* 0: all of in */
} cases[] = {
	{ "host without port", "GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
	  HTTP_HEAD_OK, "GET", "allowed.test", 0, true, 0 },
	{ "host with port", "GET /x?y=1 HTTP/1.1\r\nHost: allowed.test:8080\r\nAccept: */*\r\n\r\n",
	  HTTP_HEAD_OK, "GET", "allowed.test", 8080, true, 0 },
	{ "lowercase host header", "GET / HTTP/1.1\r\nhost: Allowed.Test\r\n\r\n",
	  HTTP_HEAD_OK, "GET", "Allowed.Test", 0, true, 0 },
	{ "uppercase host header", "GET / HTTP/1.1\r\nHOST: allowed.test\r\n\r\n",
	  HTTP_HEAD_OK, "GET", "allowed.test", 0, true, 0 },
	{ "host with blanks around", "GET / HTTP/1.1\r\nHost: \t allowed.test \t\r\n\r\n",
	  HTTP_HEAD_OK, "GET", "allowed.test", 0, true, 0 },
	{ "trailing dot", "GET / HTTP/1.1\r\nHost: allowed.test.:80\r\n\r\n",
	  HTTP_HEAD_OK, "GET", "allowed.test.", 80, true, 0 },
	{ "ipv6 host", "GET / HTTP/1.1\r\nHost: [2001:db8::1]:8080\r\n\r\n",
	  HTTP_HEAD_OK, "GET", "2001:db8::1", 8080, false, 0 },
	{ "ipv6 host no port", "GET / HTTP/1.1\r\nHost: [2001:db8::1]\r\n\r\n",
	  HTTP_HEAD_OK, "GET", "2001:db8::1", 0, false, 0 },
	{ "ipv4 host", "GET / HTTP/1.1\r\nHost: 192.0.2.1:80\r\n\r\n",
	  HTTP_HEAD_OK, "GET", "192.0.2.1", 80, false, 0 },
	{ "numeric ipv4 shorthand", "GET / HTTP/1.1\r\nHost: 0x7f.1\r\n\r\n",
	  HTTP_HEAD_OK, "GET", "0x7f.1", 0, false, 0 },
	{ "empty port", "GET / HTTP/1.1\r\nHost: allowed.test:\r\n\r\n",
	  HTTP_HEAD_OK, "GET", "allowed.test", 0, true, 0 },
	{ "http/1.0 no host", "GET / HTTP/1.0\r\nUser-Agent: x\r\n\r\n",
	  HTTP_HEAD_OK, "GET", NULL, 0, false, 0 },
	{ "empty host header", "GET / HTTP/1.1\r\nHost:\r\n\r\n",
	  HTTP_HEAD_OK, "GET", NULL, 0, false, 0 },
	{ "body not consumed", "POST /up HTTP/1.1\r\nHost: allowed.test\r\nContent-Length: 5\r\n\r\nhello",
	  HTTP_HEAD_OK, "POST", "allowed.test", 0, true, 60 },
	{ "pipelined second request ignored",
	  "GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\nGET / HTTP/1.1\r\nHost: evil.test\r\n\r\n",
	  HTTP_HEAD_OK, "GET", "allowed.test", 0, true, 38 },
	{ "absolute-form", "GET http://allowed.test:8080/p?q HTTP/1.1\r\n\r\n",
	  HTTP_HEAD_OK, "GET", "allowed.test", 8080, true, 0 },
	{ "absolute-form no path", "GET http://allowed.test HTTP/1.1\r\n\r\n",
	  HTTP_HEAD_OK, "GET", "allowed.test", 0, true, 0 },
	{ "absolute-form ipv6", "GET http://[2001:db8::2]:81/ HTTP/1.1\r\n\r\n",
	  HTTP_HEAD_OK, "GET", "2001:db8::2", 81, false, 0 },
	{ "absolute-form + same host", "GET http://allowed.test/ HTTP/1.1\r\nHost: ALLOWED.test:80\r\n\r\n",
	  HTTP_HEAD_OK, "GET", "allowed.test", 0, true, 0 },
	{ "absolute-form + other host", "GET http://allowed.test/ HTTP/1.1\r\nHost: evil.test\r\n\r\n",
	  HTTP_HEAD_MALFORMED, NULL, NULL, 0, false, 0 },
	{ "absolute-form userinfo", "GET http://allowed.test@evil.test/ HTTP/1.1\r\n\r\n",
	  HTTP_HEAD_MALFORMED, NULL, NULL, 0, false, 0 },
	{ "absolute-form bad port", "GET http://allowed.test:99999/ HTTP/1.1\r\n\r\n",
	  HTTP_HEAD_MALFORMED, NULL, NULL, 0, false, 0 },
	{ "connect", "CONNECT allowed.test:443 HTTP/1.1\r\nHost: allowed.test:443\r\n\r\n",
	  HTTP_HEAD_OK, "CONNECT", "allowed.test", 443, true, 0 },
	{ "connect ipv6", "CONNECT [2001:db8::1]:443 HTTP/1.1\r\n\r\n",
	  HTTP_HEAD_OK, "CONNECT", "2001:db8::1", 443, false, 0 },
	{ "connect + other host", "CONNECT allowed.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n\r\n",
	  HTTP_HEAD_MALFORMED, NULL, NULL, 0, false, 0 },
	{ "connect without port", "CONNECT allowed.test HTTP/1.1\r\n\r\n",
	  HTTP_HEAD_MALFORMED, NULL, NULL, 0, false, 0 },
	{ "connect port 0", "CONNECT allowed.test:0 HTTP/1.1\r\n\r\n",
	  HTTP_HEAD_MALFORMED, NULL, NULL, 0, false, 0 },
	{ "two host headers", "GET / HTTP/1.1\r\nHost: allowed.test\r\nHost: evil.test\r\n\r\n",
	  HTTP_HEAD_MALFORMED, NULL, NULL, 0, false, 0 },
	{ "two host headers, same", "GET / HTTP/1.1\r\nHost: allowed.test\r\nhost: allowed.test\r\n\r\n",
	  HTTP_HEAD_MALFORMED, NULL, NULL, 0, false, 0 },
	{ "empty then real host", "GET / HTTP/1.1\r\nHost:\r\nHost: evil.test\r\n\r\n",
	  HTTP_HEAD_MALFORMED, NULL, NULL, 0, false, 0 },
	{ "empty header then two hosts", "GET / HTTP/1.1\r\nX:\r\nHost: evil.test\r\nHost: a.test\r\n\r\n",
	  HTTP_HEAD_MALFORMED, NULL, NULL, 0, false, 0 },
	{ "host with userinfo", "GET / HTTP/1.1\r\nHost: allowed.test@evil.test\r\n\r\n",
	  HTTP_HEAD_MALFORMED, NULL, NULL, 0, false, 0 },
	{ "host with space", "GET / HTTP/1.1\r\nHost: allowed.test evil.test\r\n\r\n",
	  HTTP_HEAD_MALFORMED, NULL, NULL, 0, false, 0 },
	{ "host folded", "GET / HTTP/1.1\r\nHost: allowed.test\r\n .evil.test\r\n\r\n",
	  HTTP_HEAD_MALFORMED, NULL, NULL, 0, false, 0 },
	{ "host port not numeric", "GET / HTTP/1.1\r\nHost: allowed.test:http\r\n\r\n",
	  HTTP_HEAD_MALFORMED, NULL, NULL, 0, false, 0 },
	{ "host port too big", "GET / HTTP/1.1\r\nHost: allowed.test:65536\r\n\r\n",
	  HTTP_HEAD_MALFORMED, NULL, NULL, 0, false, 0 },
	{ "host port 0", "GET / HTTP/1.1\r\nHost: allowed.test:0\r\n\r\n",
	  HTTP_HEAD_MALFORMED, NULL, NULL, 0, false, 0 },
	{ "host two colons", "GET / HTTP/1.1\r\nHost: 2001:db8::1\r\n\r\n",
	  HTTP_HEAD_MALFORMED, NULL, NULL, 0, false, 0 },
	{ "host bad bracket", "GET / HTTP/1.1\r\nHost: [2001:db8::1]x\r\n\r\n",
	  HTTP_HEAD_MALFORMED, NULL, NULL, 0, false, 0 },
	{ "host only port", "GET / HTTP/1.1\r\nHost: :80\r\n\r\n",
	  HTTP_HEAD_MALFORMED, NULL, NULL, 0, false, 0 },
	{ "host invalid name", "GET / HTTP/1.1\r\nHost: bad_*name\r\n\r\n",
	  HTTP_HEAD_OK, "GET", "bad_*name", 0, false, 0 },
	{ "space before colon", "GET / HTTP/1.1\r\nHost : evil.test\r\n\r\n",
	  HTTP_HEAD_MALFORMED, NULL, NULL, 0, false, 0 },
	{ "space inside name", "GET / HTTP/1.1\r\nHo st: evil.test\r\n\r\n",
	  HTTP_HEAD_MALFORMED, NULL, NULL, 0, false, 0 },
	/* Lines end with CRLF only: http-parser reads a bare LF as a line
	 * end, as nginx does, but other servers read on; obs-fold is one
	 * server's continuation and another's new field. */
	{ "bare LF line ends", "GET / HTTP/1.1\nHost: allowed.test\n\n",
	  HTTP_HEAD_MALFORMED, NULL, NULL, 0, false, 0 },
	{ "one bare LF", "GET / HTTP/1.1\r\nX: a\nHost: allowed.test\r\n\r\n",
	  HTTP_HEAD_MALFORMED, NULL, NULL, 0, false, 0 },
	{ "bare LF after the request line", "GET / HTTP/1.1\nHost: allowed.test\r\n\r\n",
	  HTTP_HEAD_MALFORMED, NULL, NULL, 0, false, 0 },
	{ "bare CR", "GET / HTTP/1.1\r\nX: a\rHost: evil.test\r\nHost: allowed.test\r\n\r\n",
	  HTTP_HEAD_MALFORMED, NULL, NULL, 0, false, 0 },
	{ "obs-fold", "GET / HTTP/1.1\r\nHost: allowed.test\r\nUpgrade: websocket,\r\n h2c\r\n\r\n",
	  HTTP_HEAD_MALFORMED, NULL, NULL, 0, false, 0 },
	{ "obs-fold with a tab", "GET / HTTP/1.1\r\nX: a\r\n\tb\r\nHost: allowed.test\r\n\r\n",
	  HTTP_HEAD_MALFORMED, NULL, NULL, 0, false, 0 },
	{ "control byte in a field", "GET / HTTP/1.1\r\nHost: allowed.test\r\nX: a\x0b\r\n\r\n",
	  HTTP_HEAD_MALFORMED, NULL, NULL, 0, false, 0 },
	{ "tab in the request line", "GET /\tHTTP/1.1\r\nHost: allowed.test\r\n\r\n",
	  HTTP_HEAD_MALFORMED, NULL, NULL, 0, false, 0 },
	{ "tab inside a field", "GET / HTTP/1.1\r\nHost: allowed.test\r\nX: a\tb\r\n\r\n",
	  HTTP_HEAD_OK, "GET", "allowed.test", 0, true, 0 },
	{ "obs-text inside a field", "GET / HTTP/1.1\r\nHost: allowed.test\r\nX: caf\xc3\xa9\r\n\r\n",
	  HTTP_HEAD_OK, "GET", "allowed.test", 0, true, 0 },
	{ "content-length and chunked", "POST / HTTP/1.1\r\nHost: a.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
	  HTTP_HEAD_MALFORMED, NULL, NULL, 0, false, 0 },
	{ "tls bytes", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
	  HTTP_HEAD_NOT_HTTP, NULL, NULL, 0, false, 0 },
	{ "ssh banner", "SSH-2.0-OpenSSH_9.2\r\n",
	  HTTP_HEAD_NOT_HTTP, NULL, NULL, 0, false, 0 },
	{ "lowercase method", "get / HTTP/1.1\r\n\r\n",
	  HTTP_HEAD_NOT_HTTP, NULL, NULL, 0, false, 0 },
	{ "unknown method", "GETX / HTTP/1.1\r\n\r\n",
	  HTTP_HEAD_NOT_HTTP, NULL, NULL, 0, false, 0 },
	{ "leading space", " GET / HTTP/1.1\r\n\r\n",
	  HTTP_HEAD_NOT_HTTP, NULL, NULL, 0, false, 0 },
	{ "long token", "ABCDEFGHIJKLMNOPQRSTUVWXYZ / HTTP/1.1\r\n\r\n",
	  HTTP_HEAD_NOT_HTTP, NULL, NULL, 0, false, 0 },
	{ "http/0.9", "GET /\r\n\r\n",
	  HTTP_HEAD_NOT_HTTP, NULL, NULL, 0, false, 0 },
	{ "http/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
	  HTTP_HEAD_NOT_HTTP, NULL, NULL, 0, false, 0 },
};

/* What a strict prefix of a case may give: never OK, never a different
 * error than the whole (errors are found from left to right), except that
 * a prefix may still need more. */
static void check_prefixes(const struct head_case *c, size_t len)
{
	struct http_head_info h;
	size_t end = c->ret == HTTP_HEAD_OK ? (c->head_len ? c->head_len : len) : len;

	for (size_t cut = 0; cut < end; cut++) {
		uint8_t *p = malloc(cut ? cut : 1);
		int ret;

		assert_non_null(p);
		memcpy(p, c->in, cut);
		ret = http_head_parse(p, cut, &h);
		free(p);
		if (ret == HTTP_HEAD_NEED_MORE)
			continue;
		if (c->ret != HTTP_HEAD_OK && ret == c->ret)
			continue;
		/* The Host checks run when the head is complete; a prefix
		 * that ends in the empty line is the whole head. */
		print_error("%s: cut at %zu gave %d\n", c->what, cut, ret);
		fail();
	}
}

static void test_table(void **state)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct head_case *c = &cases[i];
		size_t len = strlen(c->in);
		struct http_head_info h;
		int ret = http_head_parse((const uint8_t *)c->in, len, &h);

		if (ret != c->ret) {
			print_error("%s: got %d want %d\n", c->what, ret, c->ret);
			fail();
		}
		if (ret != HTTP_HEAD_OK) {
			assert_false(h.has_host);
			continue;
		}
		assert_string_equal(h.method, c->method);
		assert_int_equal(h.has_host, c->host != NULL);
		assert_string_equal(h.host, c->host ? c->host : "");
		assert_int_equal(h.port, c->port);
		if (h.host_valid != c->valid) {
			print_error("%s: host_valid %d\n", c->what, h.host_valid);
			fail();
		}
		assert_int_equal(h.head_len, c->head_len ? c->head_len : len);
	}
}

static void test_split_every_offset(void **state)
{
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		check_prefixes(&cases[i], strlen(cases[i].in));
}

static void test_sizes(void **state)
{
	size_t max = HTTP_HEAD_MAX_BYTES;
	char *buf = malloc(max * 2);
	struct http_head_info h;
	size_t n;

	assert_non_null(buf);
	/* A head of exactly the limit is fine. */
	n = (size_t)sprintf(buf, "GET / HTTP/1.1\r\nHost: allowed.test\r\nX-Pad: ");
	memset(buf + n, 'a', max - n - 4);
	memcpy(buf + max - 4, "\r\n\r\n", 4);
	assert_int_equal(http_head_parse((uint8_t *)buf, max, &h), HTTP_HEAD_OK);
	assert_int_equal(h.head_len, max);
	assert_string_equal(h.host, "allowed.test");
	/* A complete head within the limit, followed by more bytes. */
	memcpy(buf + max, "garbage", 7);
	assert_int_equal(http_head_parse((uint8_t *)buf, max + 7, &h), HTTP_HEAD_OK);
	assert_int_equal(h.head_len, max);

	/* One byte more: too large once the limit is reached unfinished. */
	n = (size_t)sprintf(buf, "GET / HTTP/1.1\r\nHost: allowed.test\r\nX-Pad: ");
	memset(buf + n, 'a', max - n - 3);
	memcpy(buf + max - 3, "\r\n\r\n", 4);
	assert_int_equal(http_head_parse((uint8_t *)buf, max - 1, &h),
			 HTTP_HEAD_NEED_MORE);
	assert_int_equal(http_head_parse((uint8_t *)buf, max, &h),
			 HTTP_HEAD_TOO_LARGE);
	assert_int_equal(http_head_parse((uint8_t *)buf, max + 1, &h),
			 HTTP_HEAD_TOO_LARGE);

	/* Many small headers, endless. */
	n = (size_t)sprintf(buf, "GET / HTTP/1.1\r\n");
	while (n + 8 < max * 2) {
		memcpy(buf + n, "A: b\r\n", 6);
		n += 6;
	}
	assert_int_equal(http_head_parse((uint8_t *)buf, n, &h), HTTP_HEAD_TOO_LARGE);
	free(buf);
}

static void test_looks_like_http(void **state)
{
	static const struct {
		const char *in;
		bool want;
	} lk[] = {
		{ "GET / HTTP/1.1\r\n", true },
		{ "GET ", true },
		{ "GE", true },           /* could still be */
		{ "M-SEARCH * HTTP/1.1", true },
		{ "CONNECT a:1 HTTP/1.1", true },
		{ "", false },
		{ " GET", false },
		{ "get /", false },
		{ "\x16\x03\x01", false },
		{ "GET\t/", false },
		{ "ABCDEFGHIJKLMNOP ", false },
	};

	for (size_t i = 0; i < sizeof(lk) / sizeof(lk[0]); i++) {
		if (http_head_looks_like_http((const uint8_t *)lk[i].in,
					      strlen(lk[i].in)) != lk[i].want) {
			print_error("'%s': want %d\n", lk[i].in, lk[i].want);
			fail();
		}
	}
	assert_false(http_head_looks_like_http(NULL, 0));
}

/* The fuzz seeds are real heads (curl, python, node shaped): all parse,
 * with a valid name where they carry one. */
static void test_corpus(void **state)
{
	DIR *d = opendir(CORPUS_DIR);
	struct dirent *de;
	int files = 0;

	assert_non_null(d);
	while ((de = readdir(d))) {
		char path[512], buf[4096];
		struct http_head_info h;
		size_t n;
		FILE *f;
		int ret;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), CORPUS_DIR "%s", de->d_name);
		f = fopen(path, "rb");
		assert_non_null(f);
		n = fread(buf, 1, sizeof(buf), f);
		fclose(f);
		ret = http_head_parse((uint8_t *)buf, n, &h);
		print_message("  %s: %d host '%s'\n", de->d_name, ret, h.host);
		/* bad-*.txt seeds are meant to be refused */
		if (!strncmp(de->d_name, "bad-", 4)) {
			assert_int_not_equal(ret, HTTP_HEAD_OK);
		} else {
			assert_int_equal(ret, HTTP_HEAD_OK);
			/* only the IPv6 seed carries an address */
			assert_int_equal(h.has_host && !h.host_valid,
					 !strncmp(de->d_name, "ipv6", 4));
		}
		files++;
	}
	closedir(d);
	assert_true(files >= 5);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_table),
		cmocka_unit_test(test_split_every_offset),
		cmocka_unit_test(test_sizes),
		cmocka_unit_test(test_looks_like_http),
		cmocka_unit_test(test_corpus),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
