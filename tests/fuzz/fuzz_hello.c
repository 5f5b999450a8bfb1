// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * libFuzzer target for user/hello.c. Besides crashes and sanitizer reports
 * it checks the promises the proxy relies on: results stay in the enum,
 * strings are NUL-terminated within their buffers, consumed never exceeds
 * the input, a prefix of an accepted hello is never accepted (with another
 * answer), and the cheap first-byte check agrees with the parser.
 * Run with -max_len=70000 so hellos above HELLO_MAX_BYTES are reachable.
 */
#include <stdlib.h>
#include <string.h>

#include "hello.h"

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond))                                                   \
			__builtin_trap();                                      \
	} while (0)

static void check_info(const struct hello_info *h, size_t len)
{
	CHECK(memchr(h->sni, '\0', sizeof(h->sni)) != NULL);
	CHECK(memchr(h->alpn, '\0', sizeof(h->alpn)) != NULL);
	CHECK(h->consumed <= len);
	CHECK(h->consumed <= HELLO_MAX_BYTES);
	CHECK(h->consumed >= 9); /* record header + handshake header */
	CHECK(h->has_sni || (h->sni[0] == '\0' && !h->sni_valid));
	CHECK(!h->has_sni || h->sni[0] != '\0');
	CHECK(h->has_alpn || h->alpn[0] == '\0');
	CHECK(h->sni_valid == (h->has_sni && hello_hostname_valid(h->sni)));
	CHECK(h->legacy_version >> 8 == 3);
}

static void check_same(const struct hello_info *a, const struct hello_info *b)
{
	CHECK(a->has_sni == b->has_sni && !strcmp(a->sni, b->sni));
	CHECK(a->sni_valid == b->sni_valid);
	CHECK(a->has_alpn == b->has_alpn && !strcmp(a->alpn, b->alpn));
	CHECK(a->has_ech == b->has_ech);
	CHECK(a->legacy_version == b->legacy_version);
	CHECK(a->consumed == b->consumed);
}

/* Parse an exact-size copy so ASan sees reads past n. */
static int parse_prefix(const uint8_t *data, size_t n, struct hello_info *h)
{
	uint8_t *p = malloc(n ? n : 1);
	int ret;

	if (!p)
		abort();
	memcpy(p, data, n);
	ret = hello_parse(p, n, h);
	free(p);
	return ret;
}

static void fuzz_hostname(const uint8_t *data, size_t size)
{
	char name[300];
	size_t n = size < sizeof(name) - 1 ? size : sizeof(name) - 1;

	memcpy(name, data, n);
	name[n] = '\0';
	if (!hello_hostname_valid(name))
		return;
	n = strlen(name);
	CHECK(n >= 1 && n <= 254);
	for (size_t i = 0; i < n; i++)
		CHECK(name[i] == '.' || name[i] == '-' || name[i] == '_' ||
		      (name[i] >= '0' && name[i] <= '9') ||
		      (name[i] >= 'a' && name[i] <= 'z') ||
		      (name[i] >= 'A' && name[i] <= 'Z'));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct hello_info h, h2;
	int ret = hello_parse(data, size, &h);

	CHECK(ret == HELLO_OK || ret == HELLO_NEED_MORE || ret == HELLO_NOT_TLS ||
	      ret == HELLO_MALFORMED || ret == HELLO_TOO_LARGE);
	/* NOT_TLS is decided on the first two bytes, exactly as the cheap
	 * check does. */
	if (size > 0)
		CHECK((ret == HELLO_NOT_TLS) == !hello_looks_like_tls(data, size));
	if (ret == HELLO_NEED_MORE)
		CHECK(size < HELLO_MAX_BYTES + 5);

	if (ret == HELLO_OK) {
		size_t c = h.consumed;

		check_info(&h, size);
		/* Exactly the consumed bytes give the same answer ... */
		CHECK(parse_prefix(data, c, &h2) == HELLO_OK);
		check_same(&h, &h2);
		/* ... and nothing shorter is accepted. */
		CHECK(parse_prefix(data, c - 1, &h2) == HELLO_NEED_MORE);
		CHECK(parse_prefix(data, c / 2, &h2) == HELLO_NEED_MORE);
		CHECK(parse_prefix(data, 5, &h2) == HELLO_NEED_MORE);
	} else if (size > 1 && ret != HELLO_NEED_MORE) {
		/* An error never turns into OK when more bytes arrive:
		 * errors are found left to right, so a prefix gives the
		 * same error or needs more. */
		int r2 = parse_prefix(data, size / 2, &h2);

		CHECK(r2 == ret || r2 == HELLO_NEED_MORE ||
		      /* a shorter prefix may not yet show the size */
		      (ret == HELLO_TOO_LARGE && r2 != HELLO_OK));
	}

	fuzz_hostname(data, size);
	return 0;
}
