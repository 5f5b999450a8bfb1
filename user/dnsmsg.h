/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * DNS messages as the DNS proxy sees them (RFC 1035, 3596, 6891): the
 * question of a query from an agent, the answer records of an upstream
 * reply (to remember which addresses were handed out for which name), and
 * the refusals we build (NXDOMAIN / REFUSED / FORMERR). Untrusted bytes
 * from both sides; fuzzed (tests/fuzz/fuzz_dnsmsg.c).
 */
#ifndef EGR_DNSMSG_H
#define EGR_DNSMSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"

#define DNSMSG_MAX_UDP 65535
#define DNSMSG_NAME_MAX 255   /* presentation form incl. dots, no trailing dot */
#define DNSMSG_MAX_ANSWERS 64

enum dnsmsg_rcode {
	DNSMSG_NOERROR = 0,
	DNSMSG_FORMERR = 1,
	DNSMSG_SERVFAIL = 2,
	DNSMSG_NXDOMAIN = 3,
	DNSMSG_NOTIMP = 4,
	DNSMSG_REFUSED = 5,
};

enum dnsmsg_type {
	DNSMSG_A = 1,
	DNSMSG_NS = 2,
	DNSMSG_CNAME = 5,
	DNSMSG_SOA = 6,
	DNSMSG_NULL = 10,
	DNSMSG_PTR = 12,
	DNSMSG_MX = 15,
	DNSMSG_TXT = 16,
	DNSMSG_AAAA = 28,
	DNSMSG_SRV = 33,
	DNSMSG_OPT = 41,
	DNSMSG_SVCB = 64,
	DNSMSG_HTTPS = 65,
	DNSMSG_ANY = 255,
};

struct dnsmsg_query {
	uint16_t id;
	uint16_t flags;       /* header flags word as received */
	char qname[DNSMSG_NAME_MAX + 1]; /* lowercase, no trailing dot; "" = root */
	uint16_t qtype;
	uint16_t qclass;
	size_t question_len;  /* bytes of the question section (for echoing) */
	bool has_edns;        /* an OPT record in the additional section */
	uint16_t edns_udp_size;
	size_t longest_label; /* longest label in qname, for tunnelling checks */
};

/* Parse a query: exactly one question, QR=0, opcode QUERY, no answer/
 * authority records, at most one additional record which must be an OPT
 * with the root name (EDNS; its options must be well-formed), and no bytes
 * after the message. Compression pointers are not allowed in a query's
 * question (they are rejected). Names are at most 255 wire bytes, labels at
 * most 63. A label holding '.', NUL, space, a control byte or any byte
 * outside printable ASCII (0x21..0x7e) is rejected: such a name has no
 * unambiguous presentation form and could not be matched against the
 * policy safely. qname is returned lowercased (ASCII). On error *q is
 * zeroed. Returns 0, or -EINVAL for anything else. */
int dnsmsg_parse_query(const uint8_t *buf, size_t len, struct dnsmsg_query *q);

struct dnsmsg_rr {
	char name[DNSMSG_NAME_MAX + 1]; /* owner, lowercase, no trailing dot */
	uint16_t type;
	uint32_t ttl;
	/* A/AAAA: the address; CNAME: the target name */
	struct egr_addr addr;
	char target[DNSMSG_NAME_MAX + 1];
};

struct dnsmsg_answer {
	uint16_t id;
	uint8_t rcode;
	bool truncated;   /* TC bit */
	char qname[DNSMSG_NAME_MAX + 1];
	uint16_t qtype;
	struct dnsmsg_rr rr[DNSMSG_MAX_ANSWERS]; /* A, AAAA and CNAME only */
	size_t n_rr;
};

/* Parse an upstream response: QR=1, opcode QUERY, at most one question.
 * Compression pointers are followed only backwards (to before the labels
 * that hold them, so chains cannot loop; also hop-bounded), never into the
 * header. Every record of every section is framed (A rdlength must be 4,
 * AAAA 16, also outside the answer section); A/AAAA/CNAME of class IN in
 * the answer section are kept, the first DNSMSG_MAX_ANSWERS of them, others
 * skipped. The question name and the names of kept records follow the
 * query rule above (printable, no dots in labels, lowercased). TTLs with
 * the top bit set read as 0 (RFC 2181 8). No bytes after the message.
 * On error *a is zeroed. Returns 0 or -EINVAL. */
int dnsmsg_parse_answer(const uint8_t *buf, size_t len, struct dnsmsg_answer *a);

/* As dnsmsg_parse_answer(), and addr_fn(ctx, address) for every A and
 * AAAA record of class IN in the answer section, in message order, also
 * the ones past DNSMSG_MAX_ANSWERS that rr[] does not keep: a check of
 * every address handed out (DNS rebinding) must not stop at the first 64.
 * Called while parsing: what it saw counts only if this returns 0. */
typedef void (*dnsmsg_addr_fn)(void *ctx, const struct egr_addr *addr);
int dnsmsg_parse_answer_addrs(const uint8_t *buf, size_t len, struct dnsmsg_answer *a,
			      dnsmsg_addr_fn addr_fn, void *ctx);

/* Build a response to q with rcode and no records (header + the question
 * echoed from the original query bytes, QDCOUNT 1, other counts 0: an OPT
 * record is not echoed), into out. Returns its length, -ENOSPC, or -EINVAL
 * (query_len too short for q->question_len, rcode > 15). ID and opcode
 * copied, QR and RA set, AA/TC/AD/CD clear, RD copied. */
int dnsmsg_build_error(const uint8_t *query, size_t query_len,
		       const struct dnsmsg_query *q, enum dnsmsg_rcode rcode,
		       uint8_t *out, size_t outlen);

/* Encode name ("a.example.com", one trailing dot allowed; "" or "." is
 * the root) as DNS wire labels, case kept. Returns length, -EINVAL (empty
 * label, label > 63, total > 255) or -ENOSPC (outlen too small). */
int dnsmsg_encode_name(const char *name, uint8_t *out, size_t outlen);

/* "A", "TXT", ... for the types in enum dnsmsg_type; NULL for any other
 * (callers print "TYPE%u" themselves: no static buffer here). */
const char *dnsmsg_type_name(uint16_t type);

#endif
