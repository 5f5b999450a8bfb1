// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * DNS wire format (RFC 1035 4.1, RFC 3596, RFC 6891 6.1) for the DNS proxy.
 * Queries come from untrusted agents (DNS tunnelling is one of the attacks
 * the proxy exists to stop) and answers from upstream; both are parsed with
 * every length checked against the message and nothing read past len.
 *
 * A name is only handed to the caller (for policy matching, logging, or
 * remembering addresses) when every label byte is printable ASCII other
 * than space and '.' (0x21..0x7e minus 0x2e): a label holding a dot, a NUL
 * or a control byte has no unambiguous presentation form, so
 * "evil.test\0.allowed.test" or "a.b" as a single label could otherwise
 * be matched as a different name than the one upstream would resolve.
 */
#include <errno.h>
#include <string.h>

#include "dnsmsg.h"

#define HDR_LEN 12
#define RR_FIXED_LEN 10     /* type, class, ttl, rdlength */
#define QUESTION_MIN_LEN 5  /* root name + qtype + qclass */
#define RR_MIN_LEN 11       /* root name + RR_FIXED_LEN */
#define NAME_WIRE_MAX 255   /* RFC 1035 2.3.4, incl. the root label */
#define LABEL_MAX 63
/* Pointers must go strictly backwards, so a loop is impossible anyway;
 * the bound keeps the work per name small whatever the input. */
#define PTR_HOPS_MAX 64

#define F_QR 0x8000
#define F_OPCODE 0x7800
#define F_TC 0x0200
#define F_RD 0x0100
#define F_RA 0x0080
#define F_RCODE 0x000f

#define CLASS_IN 1
#define TTL_MAX 0x7fffffffU

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = v >> 8;
	p[1] = v & 0xff;
}

static bool label_byte_ok(uint8_t c)
{
	return c >= 0x21 && c <= 0x7e && c != '.';
}

struct name_info {
	size_t longest_label;
	bool clean; /* every label byte passed label_byte_ok() */
};

/*
 * Read the name starting at *off. With allow_ptr, compression pointers are
 * followed, each one to an offset before the start of the run of labels
 * that holds it (so before every byte read so far for this name): pointer
 * chains strictly decrease and cannot loop. On success *off is just past
 * the name as stored there (past its first pointer, if any) and out (if
 * not NULL, DNSMSG_NAME_MAX + 1 bytes) holds it lowercased, dotted, without
 * the root dot; it is only meaningful when ni->clean.
 */
static int read_name(const uint8_t *buf, size_t len, size_t *off, bool allow_ptr,
		     char *out, struct name_info *ni)
{
	size_t pos = *off, end = 0, wire = 0, olen = 0;
	size_t run_start = pos; /* where the current run of labels began */
	unsigned int hops = 0;

	ni->longest_label = 0;
	ni->clean = true;
	for (;;) {
		uint8_t c;
		size_t i;

		if (pos >= len)
			return -EINVAL;
		c = buf[pos];
		if ((c & 0xc0) == 0xc0) {
			size_t target;

			if (!allow_ptr || pos + 1 >= len)
				return -EINVAL;
			target = (size_t)(c & 0x3f) << 8 | buf[pos + 1];
			if (target < HDR_LEN || target >= run_start || ++hops > PTR_HOPS_MAX)
				return -EINVAL;
			if (!end)
				end = pos + 2;
			pos = run_start = target;
			continue;
		}
		/* 0x40 (extended label types, RFC 6891 5) and 0x80 are unused. */
		if (c & 0xc0)
			return -EINVAL;
		wire += 1 + (size_t)c;
		if (wire > NAME_WIRE_MAX)
			return -EINVAL;
		if (c == 0) {
			pos++;
			break;
		}
		if (len - pos - 1 < c)
			return -EINVAL;
		if (c > ni->longest_label)
			ni->longest_label = c;
		if (out && olen)
			out[olen++] = '.';
		for (i = 0; i < c; i++) {
			uint8_t b = buf[pos + 1 + i];

			if (!label_byte_ok(b))
				ni->clean = false;
			if (b >= 'A' && b <= 'Z')
				b += 'a' - 'A';
			if (out)
				out[olen++] = (char)b;
		}
		pos += 1 + (size_t)c;
	}
	if (out)
		out[olen] = '\0';
	*off = end ? end : pos;
	return 0;
}

/* EDNS options (RFC 6891 6.1.2) must tile the OPT rdata exactly. */
static int check_edns_options(const uint8_t *p, size_t len)
{
	while (len) {
		size_t optlen;

		if (len < 4)
			return -EINVAL;
		optlen = get16(p + 2);
		if (len - 4 < optlen)
			return -EINVAL;
		p += 4 + optlen;
		len -= 4 + optlen;
	}
	return 0;
}

static int parse_query(const uint8_t *buf, size_t len, struct dnsmsg_query *q)
{
	struct name_info ni;
	size_t off = HDR_LEN;
	uint16_t flags;
	int err;

	if (!buf || len < HDR_LEN || len > DNSMSG_MAX_UDP)
		return -EINVAL;
	flags = get16(buf + 2);
	if ((flags & F_QR) || (flags & F_OPCODE))
		return -EINVAL;
	if (get16(buf + 4) != 1 || get16(buf + 6) != 0 || get16(buf + 8) != 0 ||
	    get16(buf + 10) > 1)
		return -EINVAL;

	/* A pointer in a query has nothing legitimate to point at but the
	 * header, and would only give the agent a second way to spell a name. */
	err = read_name(buf, len, &off, false, q->qname, &ni);
	if (err)
		return err;
	if (!ni.clean)
		return -EINVAL;
	if (len - off < 4)
		return -EINVAL;
	q->qtype = get16(buf + off);
	q->qclass = get16(buf + off + 2);
	off += 4;
	q->question_len = off - HDR_LEN;
	q->longest_label = ni.longest_label;

	if (get16(buf + 10) == 1) {
		size_t rdlen;

		/* OPT: root owner name, type 41, class = requestor's UDP size. */
		if (len - off < RR_MIN_LEN || buf[off] != 0 ||
		    get16(buf + off + 1) != DNSMSG_OPT)
			return -EINVAL;
		q->edns_udp_size = get16(buf + off + 3);
		rdlen = get16(buf + off + 9);
		off += RR_MIN_LEN;
		if (len - off < rdlen || check_edns_options(buf + off, rdlen))
			return -EINVAL;
		off += rdlen;
		q->has_edns = true;
	}
	/* Trailing bytes would be a place to hide data from the policy. */
	if (off != len)
		return -EINVAL;
	q->id = get16(buf);
	q->flags = flags;
	return 0;
}

int dnsmsg_parse_query(const uint8_t *buf, size_t len, struct dnsmsg_query *q)
{
	int err;

	if (!q)
		return -EINVAL;
	memset(q, 0, sizeof(*q));
	err = parse_query(buf, len, q);
	if (err)
		memset(q, 0, sizeof(*q));
	return err;
}

static int parse_rr(const uint8_t *buf, size_t len, size_t *off, bool in_answer,
		    struct dnsmsg_answer *a, dnsmsg_addr_fn addr_fn, void *ctx)
{
	char name[DNSMSG_NAME_MAX + 1];
	struct name_info ni;
	size_t rdoff, rdlen;
	uint16_t type, class;
	uint32_t ttl;
	struct dnsmsg_rr *rr;
	int err;

	err = read_name(buf, len, off, true, name, &ni);
	if (err)
		return err;
	if (len - *off < RR_FIXED_LEN)
		return -EINVAL;
	type = get16(buf + *off);
	class = get16(buf + *off + 2);
	ttl = get32(buf + *off + 4);
	rdlen = get16(buf + *off + 8);
	rdoff = *off + RR_FIXED_LEN;
	if (len - rdoff < rdlen)
		return -EINVAL;
	*off = rdoff + rdlen;

	if (class != CLASS_IN ||
	    (type != DNSMSG_A && type != DNSMSG_AAAA && type != DNSMSG_CNAME))
		return 0;
	if ((type == DNSMSG_A && rdlen != 4) || (type == DNSMSG_AAAA && rdlen != 16))
		return -EINVAL;
	if (!in_answer)
		return 0;
	if (!ni.clean)
		return -EINVAL;

	/* Every address of the answer, kept or not: the caller's rebinding
	 * check must not stop at the ones that fit in rr[]. */
	if (addr_fn && type != DNSMSG_CNAME) {
		struct egr_addr ad;

		if (type == DNSMSG_A) {
			uint32_t be;

			memcpy(&be, buf + rdoff, 4);
			addr_from_v4(&ad, be);
		} else {
			addr_from_v6(&ad, buf + rdoff);
		}
		addr_fn(ctx, &ad);
	}
	/* Past DNSMSG_MAX_ANSWERS records are validated but not kept: the
	 * addresses not remembered fail closed for address-only rules. */
	rr = a->n_rr < DNSMSG_MAX_ANSWERS ? &a->rr[a->n_rr] : NULL;
	if (type == DNSMSG_CNAME) {
		char target[DNSMSG_NAME_MAX + 1];
		size_t toff = rdoff;

		err = read_name(buf, len, &toff, true, target, &ni);
		if (err)
			return err;
		if (toff != rdoff + rdlen || !ni.clean)
			return -EINVAL;
		if (rr)
			memcpy(rr->target, target, sizeof(rr->target));
	} else if (rr && type == DNSMSG_A) {
		uint32_t be;

		memcpy(&be, buf + rdoff, 4);
		addr_from_v4(&rr->addr, be);
	} else if (rr) {
		addr_from_v6(&rr->addr, buf + rdoff);
	}
	if (!rr)
		return 0;
	memcpy(rr->name, name, sizeof(rr->name));
	rr->type = type;
	/* RFC 2181 8: a TTL with the top bit set is to be read as zero. */
	rr->ttl = ttl > TTL_MAX ? 0 : ttl;
	a->n_rr++;
	return 0;
}

int dnsmsg_parse_answer(const uint8_t *buf, size_t len, struct dnsmsg_answer *a)
{
	return dnsmsg_parse_answer_addrs(buf, len, a, NULL, NULL);
}

int dnsmsg_parse_answer_addrs(const uint8_t *buf, size_t len, struct dnsmsg_answer *a,
			      dnsmsg_addr_fn addr_fn, void *ctx)
{
	unsigned int qd, an, ns, ar, i;
	size_t off = HDR_LEN;
	uint16_t flags;
	int err;

	if (!a)
		return -EINVAL;
	memset(a, 0, sizeof(*a));
	if (!buf || len < HDR_LEN || len > DNSMSG_MAX_UDP)
		return -EINVAL;
	flags = get16(buf + 2);
	if (!(flags & F_QR) || (flags & F_OPCODE))
		return -EINVAL;
	qd = get16(buf + 4);
	an = get16(buf + 6);
	ns = get16(buf + 8);
	ar = get16(buf + 10);
	/* FORMERR replies may carry no question; more than one is never ours. */
	if (qd > 1)
		return -EINVAL;
	/* Counts that cannot fit are rejected before any record is read. */
	if ((size_t)qd * QUESTION_MIN_LEN + ((size_t)an + ns + ar) * RR_MIN_LEN >
	    len - HDR_LEN)
		return -EINVAL;

	if (qd) {
		struct name_info ni;

		err = read_name(buf, len, &off, true, a->qname, &ni);
		if (err || !ni.clean || len - off < 4)
			goto inval;
		a->qtype = get16(buf + off);
		off += 4;
	}
	for (i = 0; i < an + ns + ar; i++) {
		err = parse_rr(buf, len, &off, i < an, a, addr_fn, ctx);
		if (err)
			goto inval;
	}
	if (off != len)
		goto inval;
	a->id = get16(buf);
	a->rcode = flags & F_RCODE;
	a->truncated = flags & F_TC;
	return 0;
inval:
	memset(a, 0, sizeof(*a));
	return -EINVAL;
}

int dnsmsg_build_error(const uint8_t *query, size_t query_len,
		       const struct dnsmsg_query *q, enum dnsmsg_rcode rcode,
		       uint8_t *out, size_t outlen)
{
	size_t qlen, n;

	if (!query || !q || !out || (unsigned int)rcode > F_RCODE)
		return -EINVAL;
	qlen = q->question_len;
	if (qlen < QUESTION_MIN_LEN || qlen > DNSMSG_MAX_UDP ||
	    query_len < HDR_LEN + qlen)
		return -EINVAL;
	n = HDR_LEN + qlen;
	if (outlen < n)
		return -ENOSPC;
	put16(out, q->id);
	put16(out + 2, F_QR | (q->flags & (F_OPCODE | F_RD)) | F_RA | (uint16_t)rcode);
	put16(out + 4, 1);
	put16(out + 6, 0);
	put16(out + 8, 0);
	put16(out + 10, 0);
	memmove(out + HDR_LEN, query + HDR_LEN, qlen);
	return (int)n;
}

int dnsmsg_encode_name(const char *name, uint8_t *out, size_t outlen)
{
	size_t n, i, start, wire;

	if (!name)
		return -EINVAL;
	n = strlen(name);
	/* One trailing dot (fully qualified form) is accepted; "." is root. */
	if (n && name[n - 1] == '.')
		n--;

	/* Validate and size first, so -EINVAL wins over -ENOSPC. */
	wire = 1;
	for (start = 0, i = 0; n && i <= n; i++) {
		if (i < n && name[i] != '.')
			continue;
		if (i == start || i - start > LABEL_MAX)
			return -EINVAL;
		wire += 1 + i - start;
		start = i + 1;
	}
	if (wire > NAME_WIRE_MAX)
		return -EINVAL;
	if (!out || outlen < wire)
		return -ENOSPC;

	wire = 0;
	for (start = 0, i = 0; n && i <= n; i++) {
		if (i < n && name[i] != '.')
			continue;
		out[wire++] = (uint8_t)(i - start);
		memcpy(out + wire, name + start, i - start);
		wire += i - start;
		start = i + 1;
	}
	out[wire++] = 0;
	return (int)wire;
}

const char *dnsmsg_type_name(uint16_t type)
{
	switch (type) {
	case DNSMSG_A:
		return "A";
	case DNSMSG_NS:
		return "NS";
	case DNSMSG_CNAME:
		return "CNAME";
	case DNSMSG_SOA:
		return "SOA";
	case DNSMSG_NULL:
		return "NULL";
	case DNSMSG_PTR:
		return "PTR";
	case DNSMSG_MX:
		return "MX";
	case DNSMSG_TXT:
		return "TXT";
	case DNSMSG_AAAA:
		return "AAAA";
	case DNSMSG_SRV:
		return "SRV";
	case DNSMSG_OPT:
		return "OPT";
	case DNSMSG_SVCB:
		return "SVCB";
	case DNSMSG_HTTPS:
		return "HTTPS";
	case DNSMSG_ANY:
		return "ANY";
	default:
		return NULL;
	}
}
