// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * libFuzzer target for user/formscan.c: a POST body read for "_method".
 * Byte 0 picks the Content-Type (low 3 bits) and the size of the pieces
 * the rest is fed in (high 5 bits, 0: all at once). Checks beyond
 * sanitizers: the verdict and the method do not depend on how the body
 * is cut (the engine feeds whatever TLS records hold), a method found is
 * one http-parser knows, and scanning more than the frameworks read
 * (the body fed whole) finds what the pieces found.
 */
#include <stdlib.h>
#include <string.h>

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
	"multipart/form-data; boundary=\"a b;c\"",
	"application/json",
	"application/vnd.api+json; charset=utf-8",
	"text/plain",
	"application/x-www-form-urlencoded; charset=UTF-8",
};

static int scan(const char *ct, const uint8_t *d, size_t n, size_t piece, const char **m)
{
	static struct formscan s; /* ~2.3 KiB: off the fuzzer's stack */
	int kind = formscan_init(&s, ct), rc;

	CHECK(kind == FORMSCAN_NONE || kind == FORMSCAN_URLENCODED ||
	      kind == FORMSCAN_MULTIPART || kind == FORMSCAN_JSON);
	for (size_t off = 0; off < n;) {
		size_t k = piece && n - off > piece ? piece : n - off;

		formscan_feed(&s, d + off, k);
		off += k;
	}
	*m = NULL;
	rc = formscan_finish(&s, m);
	CHECK(rc >= -1 && rc <= 1);
	if (kind == FORMSCAN_NONE)
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

	if (size < 1)
		return 0;
	ct = types[data[0] & 7];
	piece = data[0] >> 3;
	data++;
	size--;
	a = scan(ct, data, size, 0, &m1);
	b = scan(ct, data, size, piece, &m2);
	c = scan(ct, data, size, 1, &m3);
	CHECK(a == b && a == c);
	if (a == 1)
		CHECK(!strcmp(m1, m2) && !strcmp(m1, m3));
	return 0;
}
