// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * libFuzzer target for user/dnsmsg.c. Every input goes through both
 * parsers (agents send queries, upstream sends answers; either may send
 * anything). Beyond sanitizer reports it checks what the DNS proxy relies
 * on: names are NUL-terminated, within DNSMSG_NAME_MAX, lowercase and free
 * of bytes that would confuse policy matching; failed parses leave nothing
 * behind; and a refusal built for an accepted query parses back as an
 * answer to that very question (same id, qname, qtype, the rcode asked),
 * and that dnsmsg_parse_answer_addrs() shows every address record rr[]
 * keeps (and more only past the cap).
 */
#include <errno.h>
#include <string.h>

#include "dnsmsg.h"

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond))                                                   \
			__builtin_trap();                                      \
	} while (0)

/* The name promise: presentation form a policy can match byte for byte. */
static void check_name(const char *name, size_t size)
{
	const char *end = memchr(name, '\0', size);
	size_t i, n;

	CHECK(end != NULL);
	n = (size_t)(end - name);
	CHECK(n <= 253);
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)name[i];

		CHECK(c > 0x20 && c < 0x7f);
		CHECK(c < 'A' || c > 'Z');
		/* no empty labels, no leading or trailing dot */
		if (c == '.')
			CHECK(i > 0 && i + 1 < n && name[i + 1] != '.');
	}
}

static void check_answer(const struct dnsmsg_answer *a)
{
	size_t i;

	check_name(a->qname, sizeof(a->qname));
	CHECK(a->n_rr <= DNSMSG_MAX_ANSWERS);
	CHECK(a->rcode <= 15);
	for (i = 0; i < a->n_rr; i++) {
		const struct dnsmsg_rr *rr = &a->rr[i];

		check_name(rr->name, sizeof(rr->name));
		CHECK(rr->type == DNSMSG_A || rr->type == DNSMSG_AAAA ||
		      rr->type == DNSMSG_CNAME);
		CHECK(rr->ttl <= 0x7fffffffU);
		if (rr->type == DNSMSG_CNAME)
			check_name(rr->target, sizeof(rr->target));
		/* (an AAAA may hold a v4-mapped address, which egr_addr
		 * cannot tell from an A: the same destination either way) */
		else if (rr->type == DNSMSG_A)
			CHECK(addr_is_v4(&rr->addr));
		CHECK(dnsmsg_type_name(rr->type) != NULL);
	}
}

/* What dnsmsg_parse_answer_addrs() reported, to hold against rr[]. */
struct seen {
	size_t n;
	struct egr_addr first[DNSMSG_MAX_ANSWERS];
};

static void see_addr(void *ctx, const struct egr_addr *addr)
{
	struct seen *s = ctx;

	if (s->n < DNSMSG_MAX_ANSWERS)
		s->first[s->n] = *addr;
	s->n++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct dnsmsg_answer a, a2;
	static uint8_t out[DNSMSG_MAX_UDP];
	static struct seen seen;
	struct dnsmsg_query q;
	size_t i, k, n_kept;
	int err, err2, n;

	err = dnsmsg_parse_answer(data, size, &a);
	CHECK(err == 0 || err == -EINVAL);
	if (err) {
		CHECK(a.n_rr == 0 && a.qname[0] == '\0' && a.id == 0);
	} else {
		CHECK(size >= 12 && (data[2] & 0x80));
		check_answer(&a);
	}

	/* The visitor: same result, and every kept address among the ones
	 * it was shown, in order (the rebinding check relies on seeing all;
	 * an address record can be missing from rr[] only past the cap). */
	seen.n = 0;
	err2 = dnsmsg_parse_answer_addrs(data, size, &a2, see_addr, &seen);
	CHECK(err2 == err);
	if (!err) {
		CHECK(a2.n_rr == a.n_rr);
		for (i = 0, k = 0, n_kept = 0; i < a.n_rr; i++) {
			CHECK(a2.rr[i].type == a.rr[i].type && a2.rr[i].ttl == a.rr[i].ttl &&
			      !strcmp(a2.rr[i].name, a.rr[i].name));
			if (a.rr[i].type == DNSMSG_CNAME) {
				CHECK(!strcmp(a2.rr[i].target, a.rr[i].target));
				continue;
			}
			CHECK(!memcmp(a2.rr[i].addr.b, a.rr[i].addr.b, 16));
			CHECK(k < seen.n && k < DNSMSG_MAX_ANSWERS);
			CHECK(!memcmp(seen.first[k].b, a.rr[i].addr.b, 16));
			k++;
			n_kept++;
		}
		CHECK(seen.n >= n_kept);
		if (a.n_rr < DNSMSG_MAX_ANSWERS)
			CHECK(seen.n == n_kept);
	}

	err = dnsmsg_parse_query(data, size, &q);
	CHECK(err == 0 || err == -EINVAL);
	if (err) {
		CHECK(q.qname[0] == '\0' && q.question_len == 0 && !q.has_edns);
		return 0;
	}
	check_name(q.qname, sizeof(q.qname));
	CHECK(q.question_len >= 5 && 12 + q.question_len <= size);
	CHECK(q.question_len == strlen(q.qname) + (q.qname[0] ? 2 : 1) + 4);
	CHECK(q.longest_label <= 63 && q.longest_label <= strlen(q.qname));
	CHECK(!(q.flags & 0x8000) && !(q.flags & 0x7800));
	CHECK(q.has_edns || q.edns_udp_size == 0);

	{
		/* the rcode from the input, so every value gets exercised */
		enum dnsmsg_rcode rc = (enum dnsmsg_rcode)(data[size - 1] & 0x0f);

		n = dnsmsg_build_error(data, size, &q, rc, out, 12 + q.question_len - 1);
		CHECK(n == -ENOSPC);
		n = dnsmsg_build_error(data, size, &q, rc, out, sizeof(out));
		CHECK(n > 0 && (size_t)n == 12 + q.question_len);
		err = dnsmsg_parse_answer(out, (size_t)n, &a);
		CHECK(err == 0);
		check_answer(&a);
		CHECK(a.id == q.id);
		CHECK(a.rcode == rc);
		CHECK(!a.truncated);
		CHECK(a.qtype == q.qtype);
		CHECK(!strcmp(a.qname, q.qname));
		CHECK(a.n_rr == 0);
		CHECK((out[2] & 0x01) == (data[2] & 0x01)); /* RD */
		CHECK(!(out[2] & 0x04) && (out[3] & 0x80)); /* AA clear, RA set */
		/* the echoed question is itself a query (with QR cleared) */
		out[2] &= 0x7f;
		CHECK(dnsmsg_parse_query(out, (size_t)n, &q) == 0);
	}

	{
		/* encode_name inverts the parsed name (case aside) */
		uint8_t wire[256];
		char name[DNSMSG_NAME_MAX + 1];

		memcpy(name, a.qname, sizeof(name));
		n = dnsmsg_encode_name(name, wire, sizeof(wire));
		CHECK(n > 0 && (size_t)n + 4 == q.question_len);
	}
	return 0;
}
