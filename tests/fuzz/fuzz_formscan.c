// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * libFuzzer target for user/formscan.c: a POST body read for "_method".
 * Byte 0 picks the Content-Type (low 3 bits), whether the body is sent
 * gzip-compressed (bit 3: compressed here first, so the decoder sees
 * valid streams too) and the size of the pieces the rest is fed in (high
 * 4 bits, 0: all at once). Checks beyond sanitizers: the verdict and the
 * method do not depend on how the body is cut (the engine feeds whatever
 * TLS records hold), a method found is one http-parser knows, and the
 * compressed body reads as the plain one or stricter (its bytes as sent
 * are read too). The same bytes read as a query string (formscan_query)
 * give the form's verdict.
 */
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "formscan.h"
#include "reqrule.h"

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond))                                                   \
			__builtin_trap();                                      \
	} while (0)

static const char *const types[8] = {
	NULL,
	"application/x-www-form-urlencoded",
	"multipart/form-data; boundary=XyZ",
	"multipart/related; type=\"application/json\"; boundary=\"a b\"",
	"application/json",
	"application/vnd.api+json; charset=utf-8",
	"text/plain",
	"application/x-www-form-urlencoded,application/json",
};

static int scan(const char *ct, const char *ce, const uint8_t *d, size_t n, size_t piece,
		const char **m)
{
	static struct formscan s; /* several KiB: off the fuzzer's stack */
	int kinds = formscan_init(&s, ct, ce), rc;

	CHECK(kinds >= 0 && kinds <= 7);
	for (size_t off = 0; off < n;) {
		size_t k = piece && n - off > piece ? piece : n - off;

		formscan_feed(&s, d + off, k);
		off += k;
	}
	*m = NULL;
	rc = formscan_finish(&s, m);
	CHECK(rc >= -1 && rc <= 1);
	CHECK(!s.z);
	if (!kinds)
		CHECK(rc == 0);
	if (rc == 1)
		CHECK(*m && reqrule_method_name(*m) == *m);
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *ct, *m1, *m2, *m3;
	size_t piece;
	int a, b, c;

	if (size < 1 || size > 65536)
		return 0;
	ct = types[data[0] & 7];
	piece = data[0] >> 4;
	if (data[0] & 8) {
		uLongf zn = compressBound(size);
		uint8_t *z = malloc(zn + 32);
		z_stream zs = { 0 };

		CHECK(z);
		/* gzip, the way a client sends it */
		CHECK(deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) == Z_OK);
		zs.next_in = (Bytef *)(uintptr_t)(data + 1);
		zs.avail_in = (uInt)(size - 1);
		zs.next_out = z;
		zs.avail_out = (uInt)(zn + 32);
		CHECK(deflate(&zs, Z_FINISH) == Z_STREAM_END);
		a = scan(ct, NULL, data + 1, size - 1, 0, &m1);
		b = scan(ct, "gzip", z, zs.total_out, piece, &m2);
		deflateEnd(&zs);
		free(z);
		/* the bytes as sent are read too: stricter, never laxer */
		CHECK(a == b || b == -1 || (a == 0 && b == 1));
		if (a == 1 && b == 1)
			CHECK(!strcmp(m1, m2));
		return 0;
	}
	data++;
	size--;
	a = scan(ct, NULL, data, size, 0, &m1);
	b = scan(ct, NULL, data, size, piece, &m2);
	c = scan(ct, NULL, data, size, 1, &m3);
	/* raw bytes as if compressed: whatever they are, no crash */
	scan(ct, "deflate", data, size, piece, &m3);
	CHECK(a == b && a == c);
	if (a == 1)
		CHECK(!strcmp(m1, m2));
	/* a query string (reqrule's _method) reads as a form body, but for
	 * the byte order mark a body may start with */
	{
		const char *mq = NULL;
		int q = formscan_query((const char *)data, size, &mq);

		CHECK(q >= -1 && q <= 1);
		if (q == 1)
			CHECK(mq && reqrule_method_name(mq) == mq);
		if (ct == types[1] && (!size || data[0] != 0xef)) {
			CHECK(q == a);
			if (q == 1)
				CHECK(!strcmp(mq, m1));
		}
	}
	return 0;
}
