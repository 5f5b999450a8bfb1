// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * libFuzzer target for user/httphead.c (and, through it, http-parser with
 * our callbacks). Checks beyond sanitizers: results stay in the enum, the
 * head ends with the LF of its empty line inside the input and the limit,
 * strings are NUL-terminated, host_valid agrees with the shared name check,
 * and the head alone gives the same answer while anything shorter needs
 * more.
 */
#include <stdlib.h>
#include <string.h>

#include "hello.h"
#include "httphead.h"

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond))                                                   \
			__builtin_trap();                                      \
	} while (0)

static int parse_prefix(const uint8_t *data, size_t n, struct http_head_info *h)
{
	uint8_t *p = malloc(n ? n : 1);
	int ret;

	if (!p)
		abort();
	memcpy(p, data, n);
	ret = http_head_parse(p, n, h);
	free(p);
	return ret;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct http_head_info h, h2;
	int ret = http_head_parse(data, size, &h);

	CHECK(ret == HTTP_HEAD_OK || ret == HTTP_HEAD_NEED_MORE ||
	      ret == HTTP_HEAD_NOT_HTTP || ret == HTTP_HEAD_MALFORMED ||
	      ret == HTTP_HEAD_TOO_LARGE);
	if (size > 0 && !http_head_looks_like_http(data, size))
		CHECK(ret == HTTP_HEAD_NOT_HTTP);
	if (ret == HTTP_HEAD_NEED_MORE)
		CHECK(size < HTTP_HEAD_MAX_BYTES);
	if (ret != HTTP_HEAD_OK)
		return 0;

	CHECK(h.head_len > 0 && h.head_len <= size);
	CHECK(h.head_len <= HTTP_HEAD_MAX_BYTES);
	CHECK(data[h.head_len - 1] == '\n');
	CHECK(memchr(h.method, '\0', sizeof(h.method)) && h.method[0]);
	CHECK(memchr(h.host, '\0', sizeof(h.host)));
	CHECK(h.has_host || (h.host[0] == '\0' && h.port == 0));
	CHECK(!h.has_host || h.host[0] != '\0');
	CHECK(h.host_valid == (h.has_host && hello_hostname_valid(h.host)));

	CHECK(parse_prefix(data, h.head_len, &h2) == HTTP_HEAD_OK);
	CHECK(h2.head_len == h.head_len && h2.port == h.port &&
	      h2.has_host == h.has_host && h2.host_valid == h.host_valid &&
	      !strcmp(h2.host, h.host) && !strcmp(h2.method, h.method));
	CHECK(parse_prefix(data, h.head_len - 1, &h2) == HTTP_HEAD_NEED_MORE);
	return 0;
}
