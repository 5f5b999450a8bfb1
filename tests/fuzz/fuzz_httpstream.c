// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * libFuzzer target for user/httpstream.c: a client's plain-HTTP request
 * stream, checked request by request against the connection's host. The
 * first input byte sets the size of the pieces the rest is fed in. Checks
 * beyond sanitizers: the result stays in the enum, is sticky, and does not
 * depend on how the stream is cut (the relay reads whatever the socket
 * has), nor does where a tunnel's raw bytes begin, and a refusal for
 * another host names one that is not ours.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "httpstream.h"

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond))                                                   \
			__builtin_trap();                                      \
	} while (0)

static int feed_pieces(const uint8_t *data, size_t size, size_t piece, const char **other,
		       size_t *tunnel)
{
	struct httpstream *s = httpstream_new("allowed.test");
	int r = HTTPSTREAM_OK, again;
	size_t off = 0;

	if (!s)
		abort();
	while (off < size && r == HTTPSTREAM_OK) {
		size_t n = size - off < piece ? size - off : piece;

		r = httpstream_feed(s, data + off, n);
		if (r == HTTPSTREAM_TUNNEL) {
			/* the raw bytes begin inside this piece */
			CHECK(httpstream_tunnel_at(s) <= n);
			*tunnel = off + httpstream_tunnel_at(s);
		}
		off += n;
	}
	CHECK(r == HTTPSTREAM_OK || r == HTTPSTREAM_TUNNEL || r == HTTPSTREAM_OTHER_HOST ||
	      r == HTTPSTREAM_MALFORMED);
	if (r != HTTPSTREAM_OK) {
		again = httpstream_feed(s, (const uint8_t *)"x", 1);
		CHECK(again == r);
	}
	if (r == HTTPSTREAM_OTHER_HOST) {
		*other = strdup(httpstream_other_host(s));
		CHECK(*other && strcasecmp(*other, "allowed.test"));
	}
	httpstream_free(s);
	return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *o1 = NULL, *o2 = NULL;
	size_t piece, t1 = 0, t2 = 0;
	int whole, cut;

	if (size < 1)
		return 0;
	piece = data[0] ? data[0] : 1;
	whole = feed_pieces(data + 1, size - 1, size, &o1, &t1);
	cut = feed_pieces(data + 1, size - 1, piece, &o2, &t2);
	CHECK(whole == cut);
	CHECK(t1 == t2);
	free((void *)o1);
	free((void *)o2);
	return 0;
}
