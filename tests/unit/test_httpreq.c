// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * Unit tests for user/httpreq.c, driven like the interception engine
 * will drive it: feed (at every split offset where it matters), check each
 * head with reqrule, accept with credential headers or refuse, collect
 * what would go upstream. Smuggling vectors are a table; each must be
 * refused with nothing of the bad request emitted.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cmocka.h>

#include "httpreq.h"
#include "reqrule.h"

#define SNI "api.test"

struct sim {
	/* engine behaviour */
	const struct httpreq_set *sets;
	size_t n_sets;
	bool use_rules;           /* check heads with rules() below */
	bool scan;                /* with use_rules: read POST bodies for _method */
	bool audit;               /* ... in audit mode */
	int audit_status;         /* httpreq_scan_audit() at the last END */
	uint64_t max_body;
	/* what happened */
	char out[256 * 1024];
	size_t out_len;
	int n_heads, n_ends;
	char targets[8][256];
	bool expect[8];
	bool refused, upgraded, partial;
	int status;
	const char *reason;       /* reason_copy, once refused */
	char reason_copy[256];    /* (the module's text may live in it) */
	size_t consumed;          /* input bytes the module consumed */
};

static struct reqrule_host host;

static void setup_rules(void)
{
	struct reqrule r;

	if (host.n_rules)
		return;
	assert_int_equal(reqrule_host_init(&host, SNI), 0);
	assert_int_equal(reqrule_init(&r, "read-acme", "allow", "GET,HEAD",
				      "/repos/acme/**", NULL), 0);
	assert_int_equal(reqrule_host_add_rule(&host, &r), 0);
	assert_int_equal(reqrule_init(&r, "push-acme", "allow", "POST,PUT",
				      "/repos/acme/**", "1k"), 0);
	assert_int_equal(reqrule_host_add_rule(&host, &r), 0);
}

static void drain(struct httpreq *r, struct sim *s)
{
	size_t n;
	const uint8_t *p = httpreq_out(r, &n);

	assert_true(s->out_len + n <= sizeof(s->out));
	if (n)
		memcpy(s->out + s->out_len, p, n);
	s->out_len += n;
	httpreq_out_consume(r, n);
}

static void on_head(struct httpreq *r, struct sim *s)
{
	const struct httpreq_head *h = httpreq_head(r);
	struct reqrule_result res;
	uint64_t max = s->max_body ? s->max_body : HTTPREQ_NO_LIMIT;

	assert_non_null(h);
	if (s->n_heads < 8) {
		snprintf(s->targets[s->n_heads], sizeof(s->targets[0]), "%s",
			 h->target);
		s->expect[s->n_heads] = h->expect_continue;
	}
	s->n_heads++;
	/* Nothing may move before the decision. */
	size_t used = 99;
	assert_int_equal(httpreq_feed(r, "x", 1, &used), -EBUSY);
	assert_int_equal(used, 0);
	if (s->use_rules) {
		if (httpreq_check(r, &host, SNI, &res)) {
			httpreq_refuse(r, res.status, res.reason);
			return;
		}
		if (res.max_body < max)
			max = res.max_body;
	}
	int err = httpreq_accept(r, s->sets, s->n_sets, max);

	if (!err && s->scan && httpreq_scan_body(r, res.override_ok, s->audit))
		return; /* refused: the stream says so */
	if (err == -EFBIG)
		assert_int_equal(httpreq_status(r), 413);
	else if (err == -EPERM)
		assert_int_equal(httpreq_status(r), 400);
	else
		assert_int_equal(err, 0);
}

/* Feed one piece; false once the stream is over (refused/upgraded). */
static bool feed_piece(struct httpreq *r, struct sim *s, const char *p,
		       size_t n)
{
	for (;;) {
		size_t used = 0;
		int ev = httpreq_feed(r, p, n, &used);

		assert_true(used <= n);
		p += used;
		n -= used;
		s->consumed += used;
		drain(r, s);
		switch (ev) {
		case HTTPREQ_EV_HEAD:
			on_head(r, s);
			drain(r, s);
			break;
		case HTTPREQ_EV_END:
			s->n_ends++;
			s->audit_status = httpreq_scan_audit(r, NULL);
			break;
		case HTTPREQ_EV_NEED_MORE:
			assert_int_equal(n, 0);
			return true;
		case HTTPREQ_EV_UPGRADE:
			s->upgraded = true;
			return false;
		case HTTPREQ_EV_REFUSED:
			s->refused = true;
			s->status = httpreq_status(r);
			assert_non_null(httpreq_reason(r));
			snprintf(s->reason_copy, sizeof(s->reason_copy), "%s", httpreq_reason(r));
			s->reason = s->reason_copy;
			s->partial = httpreq_partial(r);
			return false;
		default:
			fail_msg("unexpected event %d", ev);
		}
	}
}

/* split: 0 = one piece; else pieces of at most split bytes. at: if
 * nonzero, exactly two pieces [0,at) and [at,len). */
static void run(struct sim *s, const char *in, size_t len, size_t split,
		size_t at)
{
	struct httpreq *r = httpreq_new();
	size_t off = 0;

	assert_non_null(r);
	if (s->use_rules)
		setup_rules();
	while (off < len) {
		size_t n = len - off;

		if (at)
			n = off < at ? at - off : len - off;
		else if (split && n > split)
			n = split;
		if (!feed_piece(r, s, in + off, n))
			break;
		off += n;
	}
	if (!s->refused && !s->upgraded)
		assert_int_equal(s->consumed, len);
	httpreq_free(r);
}

static void sim_init(struct sim *s)
{
	memset(s, 0, sizeof(*s));
}

#define GET1 "GET /repos/acme/x HTTP/1.1\r\nHost: api.test\r\nAccept: */*\r\n\r\n"
#define CHUNKED                                                               \
	"POST /repos/acme/r/git-upload-pack HTTP/1.1\r\nHost: api.test\r\n"   \
	"Transfer-Encoding: chunked\r\nContent-Type: x\r\n\r\n"               \
	"5\r\nhello\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n"                  \
	"0\r\nX-Checksum: abc\r\n\r\n"
#define CLBODY                                                                \
	"PUT /repos/acme/f HTTP/1.1\r\nHost: api.test\r\nContent-Length: 11\r\n\r\n" \
	"hello world"

static void test_simple_get_canonical_passthrough(void **state)
{
	struct sim s;

	sim_init(&s);
	s.use_rules = true;
	run(&s, GET1, strlen(GET1), 0, 0);
	assert_int_equal(s.n_heads, 1);
	assert_int_equal(s.n_ends, 1);
	assert_false(s.refused);
	assert_int_equal(s.out_len, strlen(GET1));
	assert_memory_equal(s.out, GET1, s.out_len);
}

static void test_pipelined_second_denied(void **state)
{
	static const char in[] = GET1
		"GET /repos/evil/x HTTP/1.1\r\nHost: api.test\r\n\r\n"
		GET1;

	for (size_t at = 0; at < sizeof(in) - 1; at++) {
		struct sim s;

		sim_init(&s);
		s.use_rules = true;
		run(&s, in, sizeof(in) - 1, 0, at);
		assert_int_equal(s.n_heads, 2);
		assert_int_equal(s.n_ends, 1);
		assert_true(s.refused);
		assert_int_equal(s.status, 403);
		assert_false(s.partial);
		assert_string_equal(s.targets[1], "/repos/evil/x");
		/* The first request, exactly; nothing of the second. */
		assert_int_equal(s.out_len, strlen(GET1));
		assert_memory_equal(s.out, GET1, s.out_len);
	}
}

static void test_pipelined_all_checked(void **state)
{
	static const char in[] = GET1 CLBODY CHUNKED GET1;
	struct sim s;

	sim_init(&s);
	s.use_rules = true;
	run(&s, in, sizeof(in) - 1, 0, 0);
	assert_int_equal(s.n_heads, 4);
	assert_int_equal(s.n_ends, 4);
	assert_string_equal(s.targets[2], "/repos/acme/r/git-upload-pack");
	assert_int_equal(s.out_len, sizeof(in) - 1);
	assert_memory_equal(s.out, in, s.out_len);
}

/* Canonical chunked body with a trailer comes out byte-exact at any split. */
static void test_chunked_every_split(void **state)
{
	static const char in[] = CHUNKED;

	for (size_t at = 0; at < sizeof(in) - 1; at++) {
		struct sim s;

		sim_init(&s);
		s.use_rules = true;
		run(&s, in, sizeof(in) - 1, 0, at);
		assert_int_equal(s.n_ends, 1);
		assert_int_equal(s.out_len, sizeof(in) - 1);
		assert_memory_equal(s.out, in, s.out_len);
	}
	for (size_t step = 1; step < 8; step++) {
		struct sim s;

		sim_init(&s);
		run(&s, in, sizeof(in) - 1, step, 0);
		assert_int_equal(s.out_len, sizeof(in) - 1);
		assert_memory_equal(s.out, in, s.out_len);
	}
}

/* Non-canonical chunk framing is rewritten the one way we read it. */
static void test_chunked_canonicalized(void **state)
{
	static const char in[] =
		"POST /repos/acme/x HTTP/1.1\r\nHost: api.test\r\n"
		"Transfer-Encoding: Chunked\r\n\r\n"
		"0005;ext=1\r\nhello\r\nA\r\n0123456789\r\n"
		"0\r\nContent-Length: 5\r\nX-T:  v \r\n\r\n";
	static const char want[] =
		"POST /repos/acme/x HTTP/1.1\r\nHost: api.test\r\n"
		"Transfer-Encoding: Chunked\r\n\r\n"
		"5\r\nhello\r\na\r\n0123456789\r\n"
		"0\r\nX-T: v\r\n\r\n";
	struct sim s;

	sim_init(&s);
	run(&s, in, sizeof(in) - 1, 1, 0);
	assert_int_equal(s.n_ends, 1);
	assert_int_equal(s.out_len, sizeof(want) - 1);
	assert_memory_equal(s.out, want, s.out_len);
}

static void test_content_length_every_split(void **state)
{
	static const char in[] = CLBODY GET1;

	for (size_t at = 0; at < sizeof(in) - 1; at++) {
		struct sim s;

		sim_init(&s);
		s.use_rules = true;
		run(&s, in, sizeof(in) - 1, 0, at);
		assert_int_equal(s.n_ends, 2);
		assert_int_equal(s.out_len, sizeof(in) - 1);
		assert_memory_equal(s.out, in, s.out_len);
	}
}

static const struct smuggle_case {
	const char *what;
	const char *head; /* fields between Host and the empty line */
	int status;
	const char *reason; /* which check caught it (NULL: any) */
} smuggle[] = {
	{ "CL+TE", "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", 400, "both Content-Length and Transfer-Encoding" },
	{ "TE+CL", "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", 400, "both Content-Length and Transfer-Encoding" },
	{ "double CL equal", "Content-Length: 5\r\nContent-Length: 5\r\n", 400, "several Content-Length fields" },
	{ "double CL differ", "Content-Length: 5\r\nContent-Length: 6\r\n", 400, "several Content-Length fields" },
	{ "CL list", "Content-Length: 5, 5\r\n", 400, "invalid Content-Length" },
	{ "CL sign", "Content-Length: +5\r\n", 400, "invalid Content-Length" },
	{ "CL empty", "Content-Length:\r\n", 400, NULL },
	{ "TE chunked, identity", "Transfer-Encoding: chunked, identity\r\n", 400, "unsupported Transfer-Encoding" },
	{ "TE identity", "Transfer-Encoding: identity\r\n", 400, "unsupported Transfer-Encoding" },
	{ "TE gzip, chunked", "Transfer-Encoding: gzip, chunked\r\n", 400, NULL },
	{ "TE twice", "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", 400, "several Transfer-Encoding fields" },
	{ "TE xchunked", "Transfer-Encoding: xchunked\r\n", 400, NULL },
	{ "TE with underscore", "Transfer_Encoding: chunked\r\n", 400, "framing field name with another separator" },
	{ "CL with underscore", "Content_Length: 5\r\n", 400, NULL },
	{ "obs-fold", "X-A: a\r\n b\r\n", 400, "obsolete line folding" },
	{ "obs-fold tab", "X-A: a\r\n\tTransfer-Encoding: chunked\r\n", 400, "obsolete line folding" },
	{ "obs-fold on TE", "Transfer-Encoding:\r\n chunked\r\n", 400, NULL },
	{ "bare LF", "X-A: a\nX-B: b\r\n", 400, "bare LF in request head" },
	{ "bare LF end", "X-A: a\n", 400, NULL },
	{ "bare CR", "X-A: a\rX-B: b\r\n", 400, "bare CR in request head" },
	{ "space before colon", "Transfer-Encoding : chunked\r\n", 400, "whitespace before colon" },
	{ "tab before colon", "Content-Length\t: 5\r\n", 400, "whitespace before colon" },
	{ "space in name", "Content Length: 5\r\n", 400, NULL },
	{ "empty name", ": x\r\n", 400, NULL },
	{ "NUL in value", "X-A: a\0b\r\n", 400, "NUL in request head" },
	{ "NUL in name", "X-\0A: a\r\n", 400, NULL },
	{ "control in value", "X-A: a\001b\r\n", 400, NULL },
	{ "two Hosts", "Host: api.test\r\n", 400, "several Host fields" },
	{ "Connection: Content-Length", "Connection: keep-alive, content-length\r\nContent-Length: 5\r\n", 400,
	  "Connection names a field (only close, keep-alive, upgrade, te may be): content-length" },
	{ "Connection: Transfer-Encoding", "Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n", 400,
	  "Connection names a field (only close, keep-alive, upgrade, te may be): Transfer-Encoding" },
	/* a proxy honouring Connection drops the field it names: without
	 * Content-Type, Rack reads a text/plain body as a form */
	{ "Connection: Content-Type", "Connection: Content-Type\r\nContent-Type: text/plain\r\n", 400,
	  "Connection names a field (only close, keep-alive, upgrade, te may be): Content-Type" },
	{ "second Connection field", "Connection: close\r\nConnection: X-Forwarded-For\r\n", 400,
	  "Connection names a field (only close, keep-alive, upgrade, te may be): X-Forwarded-For" },
	{ "Connection: keep_alive", "Connection: keep_alive\r\n", 400, NULL },
	{ "upgrade with body", "Upgrade: websocket\r\nConnection: Upgrade\r\nContent-Length: 5\r\n", 400, "upgrade request with a body" },
	/* after a 101 the bytes are relayed unchecked: only WebSocket,
	 * which stays with the checked request */
	{ "Upgrade h2c", "Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
	  "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n", 400, "upgrade to a protocol other than websocket" },
	{ "Upgrade h2c no Connection", "Upgrade: h2c\r\nConnection: HTTP2-Settings\r\n", 400,
	  "upgrade to a protocol other than websocket" },
	{ "Upgrade websocket, h2c", "Upgrade: websocket, h2c\r\nConnection: Upgrade\r\n", 400,
	  "upgrade to a protocol other than websocket" },
	{ "second Upgrade h2c", "Upgrade: websocket\r\nUpgrade: H2C\r\nConnection: Upgrade\r\n", 400,
	  "upgrade to a protocol other than websocket" },
	{ "Upgrade connect-tcp", "Upgrade: connect-tcp\r\nConnection: Upgrade\r\n", 400,
	  "upgrade to a protocol other than websocket" },
	{ "Upgrade connect-udp", "Upgrade: connect-udp\r\nConnection: Upgrade\r\n", 400,
	  "upgrade to a protocol other than websocket" },
	{ "Upgrade websocket/13", "Upgrade: websocket/13\r\nConnection: Upgrade\r\n", 400,
	  "upgrade to a protocol other than websocket" },
	{ "Upgrade empty", "Upgrade: \r\nConnection: Upgrade\r\n", 400,
	  "upgrade to a protocol other than websocket" },
	/* a framework honouring these would act on another path or method
	 * than the one the rules saw */
	{ "X-Original-URL", "X-Original-URL: /admin\r\n", 400, "URL rewrite field (X-Original-URL, X-Rewrite-URL)" },
	{ "X-Rewrite-URL", "x-rewrite-url: /admin\r\n", 400, "URL rewrite field (X-Original-URL, X-Rewrite-URL)" },
	{ "X_Original_URL", "X_Original_URL: /admin\r\n", 400, "URL rewrite field (X-Original-URL, X-Rewrite-URL)" },
	{ "override unknown method", "X-HTTP-Method-Override: FOO\r\n", 400, "unknown method in a method override field" },
	{ "override empty", "X-HTTP-Method:\r\n", 400, "unknown method in a method override field" },
	{ "override list", "X-Method-Override: PUT, DELETE\r\n", 400, "unknown method in a method override field" },
	{ "overrides disagree", "X-HTTP-Method-Override: PUT\r\nX-Method-Override: DELETE\r\n", 400, "method override fields disagree" },
	{ "override denied", "X-HTTP-Method-Override: DELETE\r\n", 403, NULL },
	{ "override HEAD", "X-HTTP-Method-Override: HEAD\r\n", 400, "method override naming HEAD or CONNECT" },
	{ "override connect", "X_Method_Override: connect\r\n", 400, "method override naming HEAD or CONNECT" },
	/* PHP maps '.' to '_' in $_SERVER names, Apache's CGI environment
	 * every non-alphanumeric byte: any separator spells the name */
	{ "override with dots", "X.HTTP.Method.Override: DELETE\r\n", 403, NULL },
	{ "override with tildes", "x~http~method: DELETE\r\n", 403, NULL },
	{ "override mixed", "X-Method.Override: NOPE\r\n", 400, "unknown method in a method override field" },
	{ "X.Original.URL", "X.Original.URL: /admin\r\n", 400, "URL rewrite field (X-Original-URL, X-Rewrite-URL)" },
	{ "CL with dot", "Content.Length: 5\r\n", 400, NULL },
	{ "TE with dot", "Transfer.Encoding: chunked\r\n", 400, NULL },
};

static void expect_refused_first(const char *in, size_t len, int status,
				 const char *what, const char *reason)
{
	struct sim s;

	sim_init(&s);
	s.use_rules = true;
	run(&s, in, len, 0, 0);
	if (!s.refused || s.status != status || s.out_len)
		fail_msg("%s: refused %d status %d out %zu", what, s.refused,
			 s.status, s.out_len);
	assert_int_equal(s.n_ends, 0);
	if (reason && strcmp(s.reason, reason))
		fail_msg("%s: reason \"%s\", want \"%s\"", what, s.reason, reason);
}

static void test_smuggling_vectors(void **state)
{
	char in[1024];

	for (size_t i = 0; i < sizeof(smuggle) / sizeof(smuggle[0]); i++) {
		const struct smuggle_case *c = &smuggle[i];
		size_t hl = strlen(c->head);
		int n;

		/* The NUL cases: copy by length, not by string. */
		if (strstr(c->what, "NUL"))
			hl = strlen(c->head) + 1 + strlen(c->head + strlen(c->head) + 1);
		n = snprintf(in, sizeof(in),
			     "POST /repos/acme/x HTTP/1.1\r\nHost: api.test\r\n");
		memcpy(in + n, c->head, hl);
		memcpy(in + n + hl, "\r\nhello", 7);
		expect_refused_first(in, (size_t)n + hl + 7, c->status, c->what,
				     c->reason);

		/* As the second of two pipelined requests: the first goes,
		 * nothing of the second does. */
		struct sim s;
		size_t l1 = strlen(GET1);

		memmove(in + l1, in, (size_t)n + hl + 7);
		memcpy(in, GET1, l1);
		sim_init(&s);
		s.use_rules = true;
		run(&s, in, l1 + (size_t)n + hl + 7, 0, 0);
		assert_true(s.refused);
		assert_int_equal(s.status, c->status);
		assert_int_equal(s.out_len, l1);
		assert_memory_equal(s.out, GET1, l1);
	}
}

static const struct line_case {
	const char *what;
	const char *in;
	int status;
} line_cases[] = {
	{ "bare LF request line", "GET / HTTP/1.1\nHost: api.test\r\n\r\n", 400 },
	{ "all bare LF", "GET / HTTP/1.1\nHost: api.test\n\n", 400 },
	{ "NUL in target", "GET /a\0b HTTP/1.1\r\nHost: api.test\r\n\r\n", 400 },
	{ "double space", "GET  / HTTP/1.1\r\nHost: api.test\r\n\r\n", 400 },
	{ "tab separator", "GET\t/ HTTP/1.1\r\nHost: api.test\r\n\r\n", 400 },
	{ "HTTP/2.0", "GET / HTTP/2.0\r\nHost: api.test\r\n\r\n", 400 },
	{ "HTTP/1.2", "GET / HTTP/1.2\r\nHost: api.test\r\n\r\n", 400 },
	{ "HTTP/0.9", "GET /\r\n\r\n", 400 },
	{ "lowercase method", "get / HTTP/1.1\r\nHost: api.test\r\n\r\n", 400 },
	{ "unknown method", "FOO / HTTP/1.1\r\nHost: api.test\r\n\r\n", 400 },
	{ "high byte in target", "GET /\xc3\xa9 HTTP/1.1\r\nHost: api.test\r\n\r\n", 400 },
	{ "TE in HTTP/1.0", "POST /repos/acme/x HTTP/1.0\r\nHost: api.test\r\n"
	  "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400 },
	{ "missing Host", "GET /repos/acme/x HTTP/1.1\r\n\r\n", 400 },
	{ "other Host", "GET /repos/acme/x HTTP/1.1\r\nHost: evil.test\r\n\r\n", 421 },
	{ "absolute-form other host",
	  "GET https://evil.test/repos/acme/x HTTP/1.1\r\nHost: api.test\r\n\r\n", 421 },
	{ "dot-dot", "GET /repos/acme/../evil HTTP/1.1\r\nHost: api.test\r\n\r\n", 400 },
};

static void test_bad_lines(void **state)
{
	for (size_t i = 0; i < sizeof(line_cases) / sizeof(line_cases[0]); i++) {
		const struct line_case *c = &line_cases[i];
		size_t len = strlen(c->in);

		if (strstr(c->what, "NUL"))
			len += 1 + strlen(c->in + len + 1);
		expect_refused_first(c->in, len, c->status, c->what, NULL);
	}
}

/* Chunk framing errors surface mid-body: what went out is a truncated
 * request, flagged partial, and nothing after it. */
static void test_bad_chunks(void **state)
{
	static const char *const bodies[] = {
		"zz\r\nhello\r\n0\r\n\r\n",
		"5\r\nhello\r\n-1\r\n\r\n",
		"fffffffffffffffffff\r\nx\r\n0\r\n\r\n",
		"5\r\nhello\r\n0\r\nBad Name: x\r\n\r\n",
		"5\r\nhello\r\n0\r\nX: a\001b\r\n\r\n",
	};
	static const char head[] =
		"POST /repos/acme/x HTTP/1.1\r\nHost: api.test\r\n"
		"Transfer-Encoding: chunked\r\n\r\n";

	for (size_t i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		char in[512];
		struct sim s;

		snprintf(in, sizeof(in), "%s%s" GET1, head, bodies[i]);
		sim_init(&s);
		s.use_rules = true;
		run(&s, in, strlen(in), 0, 0);
		assert_true(s.refused);
		assert_int_equal(s.status, 400);
		assert_true(s.partial);
		assert_int_equal(s.n_heads, 1);
		assert_int_equal(s.n_ends, 0);
		assert_true(s.out_len >= sizeof(head) - 1);
		assert_memory_equal(s.out, head, sizeof(head) - 1);
		/* never the final "0\r\n\r\n" of a complete message */
		assert_null(memmem(s.out, s.out_len, "0\r\n\r\n", 5));
	}
}

static void test_head_too_large(void **state)
{
	size_t len = HTTPREQ_HEAD_MAX + 100;
	char *in = malloc(len);
	struct sim s;
	int n;

	assert_non_null(in);
	n = snprintf(in, len, "GET /repos/acme/x HTTP/1.1\r\nHost: api.test\r\nX-Big: ");
	memset(in + n, 'a', len - (size_t)n);
	sim_init(&s);
	run(&s, in, len, 1000, 0);
	assert_true(s.refused);
	assert_int_equal(s.status, 431);
	assert_int_equal(s.out_len, 0);

	/* Too many fields, though small. */
	size_t off = (size_t)snprintf(in, len, "GET / HTTP/1.1\r\nHost: api.test\r\n");
	for (int i = 0; i < HTTPREQ_MAX_HEADERS + 1; i++)
		off += (size_t)snprintf(in + off, len - off, "X-%d: v\r\n", i);
	off += (size_t)snprintf(in + off, len - off, "\r\n");
	sim_init(&s);
	run(&s, in, off, 0, 0);
	assert_true(s.refused);
	assert_int_equal(s.status, 431);

	/* Exactly at the limit is fine. */
	n = snprintf(in, len, "GET /repos/acme/x HTTP/1.1\r\nHost: api.test\r\nX-Big: ");
	memset(in + n, 'a', HTTPREQ_HEAD_MAX - (size_t)n - 4);
	memcpy(in + HTTPREQ_HEAD_MAX - 4, "\r\n\r\n", 4);
	sim_init(&s);
	run(&s, in, HTTPREQ_HEAD_MAX, 4096, 0);
	assert_false(s.refused);
	assert_int_equal(s.n_ends, 1);
	assert_int_equal(s.out_len, HTTPREQ_HEAD_MAX);
	free(in);
}

static void test_expect_continue(void **state)
{
	static const char in[] =
		"PUT /repos/acme/f HTTP/1.1\r\nHost: api.test\r\n"
		"Content-Length: 3\r\nExpect: 100-continue\r\n\r\nabc" GET1;
	struct httpreq *r = httpreq_new();
	const struct httpreq_head *h;
	size_t used, n;
	struct sim s;

	assert_int_equal(httpreq_feed(r, in, sizeof(in) - 1, &used), HTTPREQ_EV_HEAD);
	h = httpreq_head(r);
	assert_non_null(h);
	assert_true(h->expect_continue);
	assert_true(h->has_length);
	assert_int_equal(h->content_length, 3);
	assert_int_equal(used, h->head_len);
	/* Not a byte out before the decision. */
	httpreq_out(r, &n);
	assert_int_equal(n, 0);
	httpreq_free(r);

	sim_init(&s);
	s.use_rules = true;
	run(&s, in, sizeof(in) - 1, 0, 0);
	assert_true(s.expect[0]);
	assert_false(s.expect[1]);
	assert_int_equal(s.n_ends, 2);
	assert_int_equal(s.out_len, sizeof(in) - 1);
}

static void test_upgrade_websocket(void **state)
{
	static const char head[] =
		"GET /repos/acme/ws HTTP/1.1\r\nHost: api.test\r\n"
		"Upgrade: websocket\r\nConnection: Upgrade\r\n"
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
		"Sec-WebSocket-Version: 13\r\n\r\n";
	static const char frames[] = "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"
				     "GET /evil HTTP/1.1\r\n\r\n";
	char in[sizeof(head) + sizeof(frames)];
	size_t len = sizeof(head) - 1 + sizeof(frames) - 1;

	memcpy(in, head, sizeof(head) - 1);
	memcpy(in + sizeof(head) - 1, frames, sizeof(frames) - 1);
	for (size_t at = 0; at < len; at++) {
		struct sim s;

		sim_init(&s);
		s.use_rules = true;
		run(&s, in, len, 0, at);
		assert_true(s.upgraded);
		assert_int_equal(s.n_heads, 1);
		/* Everything after the head is handed back untouched. */
		assert_int_equal(s.consumed, sizeof(head) - 1);
		assert_int_equal(s.out_len, sizeof(head) - 1);
		assert_memory_equal(s.out, head, s.out_len);
	}

	/* The token in any case, listed twice, in two fields: still only
	 * WebSocket. */
	{
		static const char mixed[] =
			"GET /repos/acme/ws HTTP/1.1\r\nHost: api.test\r\n"
			"Upgrade: WebSocket , websocket\r\nupgrade: WEBSOCKET\r\n"
			"Connection: Upgrade\r\n\r\n";
		struct sim s;

		sim_init(&s);
		s.use_rules = true;
		run(&s, mixed, sizeof(mixed) - 1, 0, 0);
		assert_true(s.upgraded);
	}

	/* The head says so before the decision. */
	struct httpreq *r = httpreq_new();
	size_t used;

	assert_int_equal(httpreq_feed(r, in, len, &used), HTTPREQ_EV_HEAD);
	assert_true(httpreq_head(r)->upgrade);
	assert_string_equal(httpreq_head(r)->upgrade_proto, "websocket");
	assert_int_equal(httpreq_accept(r, NULL, 0, HTTPREQ_NO_LIMIT), 0);
	assert_int_equal(httpreq_feed(r, in + used, len - used, &used), HTTPREQ_EV_UPGRADE);
	assert_int_equal(used, 0);
	httpreq_free(r);
}

/* A method override is checked as a second method: the request goes only
 * if the rules allow both. */
static void test_method_override_checked(void **state)
{
	static const char denied[] =
		"GET /repos/acme/x HTTP/1.1\r\nHost: api.test\r\n"
		"X-HTTP-Method-Override: DELETE\r\n\r\n";
	static const char allowed[] =
		"POST /repos/acme/x HTTP/1.1\r\nHost: api.test\r\nContent-Length: 0\r\n"
		"x_http_method: put\r\nX-Method-Override: PUT\r\n\r\n";
	struct httpreq *r;
	struct sim s;
	size_t used;

	expect_refused_first(denied, sizeof(denied) - 1, 403, "GET overridden to DELETE", NULL);
	sim_init(&s);
	s.use_rules = true;
	run(&s, allowed, sizeof(allowed) - 1, 0, 0);
	assert_false(s.refused);
	assert_int_equal(s.n_ends, 1);
	assert_int_equal(s.out_len, sizeof(allowed) - 1);

	r = httpreq_new();
	assert_non_null(r);
	assert_int_equal(httpreq_feed(r, allowed, sizeof(allowed) - 1, &used), HTTPREQ_EV_HEAD);
	assert_string_equal(httpreq_head(r)->method_override, "PUT");
	httpreq_free(r);
	r = httpreq_new();
	assert_non_null(r);
	assert_int_equal(httpreq_feed(r, GET1, strlen(GET1), &used), HTTPREQ_EV_HEAD);
	assert_null(httpreq_head(r)->method_override);
	httpreq_free(r);
}

static void test_connect_is_upgrade(void **state)
{
	static const char in[] = "CONNECT api.test:443 HTTP/1.1\r\nHost: api.test:443\r\n\r\nrawbytes";
	struct httpreq *r = httpreq_new();
	size_t used;

	assert_int_equal(httpreq_feed(r, in, sizeof(in) - 1, &used), HTTPREQ_EV_HEAD);
	assert_true(httpreq_head(r)->upgrade);
	assert_int_equal(used, sizeof(in) - 1 - 8);
	httpreq_free(r);
}

static void test_injection_and_canonical_head(void **state)
{
	static const char in[] =
		"GET /repos/acme/x HTTP/1.1\r\n"
		"Host:api.test  \r\n"
		"authorization: Bearer agent-one\r\n"
		"User-Agent: curl/7.88.1\r\n"
		"AUTHORIZATION:\tBearer agent-two\t\r\n"
		"Proxy-Authorization: Basic Zm9vOmJhcg==\r\n"
		"X_Api_Key: agent-three\r\n"
		"x.api.key: agent-four\r\n"
		"X!Api'Key: agent-five\r\n"
		"X-Api-Keys: kept\r\n"
		"Accept: */*\r\n\r\n";
	static const char want[] =
		"GET /repos/acme/x HTTP/1.1\r\n"
		"Host: api.test\r\n"
		"User-Agent: curl/7.88.1\r\n"
		"X-Api-Keys: kept\r\n"
		"Accept: */*\r\n"
		"Authorization: Bearer real-token\r\n"
		"x-api-key: real-key\r\n\r\n";
	static const struct httpreq_set sets[] = {
		{ "Authorization", "Bearer real-token" },
		{ "x-api-key", "real-key" },
	};
	struct sim s;

	for (size_t at = 0; at < sizeof(in) - 1; at += 7) {
		sim_init(&s);
		s.use_rules = true;
		s.sets = sets;
		s.n_sets = 2;
		run(&s, in, sizeof(in) - 1, 0, at);
		assert_int_equal(s.n_ends, 1);
		assert_int_equal(s.out_len, sizeof(want) - 1);
		assert_memory_equal(s.out, want, s.out_len);
	}

	/* The output re-parses as one head with exactly one of each. */
	struct httpreq *r = httpreq_new();
	const struct httpreq_head *h;
	size_t used;
	int n_auth = 0;

	assert_int_equal(httpreq_feed(r, s.out, s.out_len, &used), HTTPREQ_EV_HEAD);
	assert_int_equal(used, s.out_len);
	h = httpreq_head(r);
	for (size_t i = 0; i < h->n_fields; i++)
		if (!strcasecmp(h->fields[i].name, "authorization")) {
			n_auth++;
			assert_string_equal(h->fields[i].value, "Bearer real-token");
		}
	assert_int_equal(n_auth, 1);
	httpreq_free(r);
}

/* "Connection: Authorization" would make a next hop drop our credential,
 * "Connection: Content-Type" the field a framework reads the body by:
 * only the options close, keep-alive, upgrade and te (any case) pass. */
static void test_connection_names_injected(void **state)
{
	static const char in[] = "GET /repos/acme/x HTTP/1.1\r\nHost: api.test\r\n"
				 "Connection: close,  AUTHORIZATION \r\n\r\n";
	static const char fine[] = "GET /repos/acme/x HTTP/1.1\r\nHost: api.test\r\n"
				   "Connection: Keep-Alive, TE\r\nTE: trailers\r\n"
				   "connection:  , CLOSE,,upgrade \r\n\r\n";
	static const struct httpreq_set sets[] = { { "Authorization", "Bearer real" } };
	struct sim s;

	sim_init(&s);
	s.sets = sets;
	s.n_sets = 1;
	run(&s, in, sizeof(in) - 1, 0, 0);
	assert_true(s.refused);
	assert_int_equal(s.status, 400);
	assert_int_equal(s.out_len, 0);
	/* Without injection too. */
	sim_init(&s);
	run(&s, in, sizeof(in) - 1, 0, 0);
	assert_true(s.refused);
	assert_int_equal(s.status, 400);
	assert_string_equal(s.reason, "Connection names a field (only close, keep-alive, "
			    "upgrade, te may be): AUTHORIZATION");
	sim_init(&s);
	s.sets = sets;
	s.n_sets = 1;
	run(&s, fine, sizeof(fine) - 1, 0, 0);
	assert_false(s.refused);
	assert_int_equal(s.n_ends, 1);
}

static void test_proxy_authorization_stripped(void **state)
{
	static const char in[] = "GET /repos/acme/x HTTP/1.1\r\nHost: api.test\r\n"
				 "proxy-authorization: Basic eA==\r\n\r\n";
	static const char want[] = "GET /repos/acme/x HTTP/1.1\r\nHost: api.test\r\n\r\n";
	struct sim s;

	sim_init(&s);
	run(&s, in, sizeof(in) - 1, 0, 0);
	assert_int_equal(s.out_len, sizeof(want) - 1);
	assert_memory_equal(s.out, want, s.out_len);
}

static void test_accept_rejects_bad_sets(void **state)
{
	static const struct httpreq_set bad[][1] = {
		{ { "Authorization", "Bearer x\r\nX-Evil: 1" } },
		{ { "Bad Name", "x" } },
		{ { "", "x" } },
		{ { "X-A", " padded" } },
		{ { "X-A", "nul\x01" } },
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct httpreq *r = httpreq_new();
		size_t used, n;

		assert_int_equal(httpreq_feed(r, GET1, strlen(GET1), &used), HTTPREQ_EV_HEAD);
		assert_int_equal(httpreq_accept(r, bad[i], 1, HTTPREQ_NO_LIMIT), -EINVAL);
		httpreq_out(r, &n);
		assert_int_equal(n, 0);
		/* Still pending: the engine must decide again. */
		assert_non_null(httpreq_head(r));
		httpreq_free(r);
	}
}

/* Every credential of a request (8) and a gateway's Host: 9 sets. */
static void test_accept_many_sets(void **state)
{
	static const char *const names[] = { "A1", "A2", "A3", "A4", "A5", "A6", "A7", "A8",
					     "Host" };
	struct httpreq_set sets[9];
	struct httpreq *r = httpreq_new();
	const uint8_t *out;
	size_t used, n;

	(void)state;
	for (size_t i = 0; i < 9; i++) {
		sets[i].name = names[i];
		sets[i].value = "v";
	}
	assert_int_equal(httpreq_feed(r, GET1, strlen(GET1), &used), HTTPREQ_EV_HEAD);
	assert_int_equal(httpreq_accept(r, sets, 9, HTTPREQ_NO_LIMIT), 0);
	out = httpreq_out(r, &n);
	static const char tail[] = "\r\nA8: v\r\nHost: v\r\n\r\n";
	static const char agent_host[] = "Host: api.test";

	assert_non_null(memmem(out, n, tail, sizeof(tail) - 1));
	assert_null(memmem(out, n, agent_host, sizeof(agent_host) - 1)); /* replaced */
	httpreq_free(r);
	r = httpreq_new();
	assert_int_equal(httpreq_feed(r, GET1, strlen(GET1), &used), HTTPREQ_EV_HEAD);
	assert_int_equal(httpreq_accept(r, sets, HTTPREQ_MAX_SETS + 1, HTTPREQ_NO_LIMIT),
			 -EINVAL);
	httpreq_free(r);
}

/* An absolute-form target goes upstream in origin-form. */
static void test_origin_form(void **state)
{
	static const struct { const char *in, *out; } cases[] = {
		{ "GET https://API.test./repos/acme/x?y=1 HTTP/1.1\r\nHost: api.test\r\n\r\n",
		  "GET /repos/acme/x?y=1 HTTP/1.1\r\n" },
		{ "GET https://api.test?q HTTP/1.1\r\nHost: api.test\r\n\r\n",
		  "GET /?q HTTP/1.1\r\n" },
		{ "GET http://api.test HTTP/1.1\r\nHost: api.test\r\n\r\n",
		  "GET / HTTP/1.1\r\n" },
		{ "OPTIONS * HTTP/1.1\r\nHost: api.test\r\n\r\n", "OPTIONS * HTTP/1.1\r\n" },
		{ "GET /a?b HTTP/1.1\r\nHost: api.test\r\n\r\n", "GET /a?b HTTP/1.1\r\n" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct httpreq *r = httpreq_new();
		const uint8_t *out;
		size_t used, n;

		assert_int_equal(httpreq_feed(r, cases[i].in, strlen(cases[i].in), &used),
				 HTTPREQ_EV_HEAD);
		assert_int_equal(httpreq_accept(r, NULL, 0, HTTPREQ_NO_LIMIT), 0);
		out = httpreq_out(r, &n);
		assert_true(n >= strlen(cases[i].out));
		assert_memory_equal(out, cases[i].out, strlen(cases[i].out));
		httpreq_free(r);
	}
}

static void test_body_limits(void **state)
{
	char in[4096];
	struct sim s;
	int n;

	/* CL over the rule's 1k: 413 before a byte goes out. */
	n = snprintf(in, sizeof(in), "POST /repos/acme/x HTTP/1.1\r\nHost: api.test\r\n"
		     "Content-Length: 1025\r\n\r\n");
	memset(in + n, 'a', 1025);
	sim_init(&s);
	s.use_rules = true;
	run(&s, in, (size_t)n + 1025, 0, 0);
	assert_true(s.refused);
	assert_int_equal(s.status, 413);
	assert_int_equal(s.out_len, 0);

	/* CL exactly 1k passes. */
	n = snprintf(in, sizeof(in), "POST /repos/acme/x HTTP/1.1\r\nHost: api.test\r\n"
		     "Content-Length: 1024\r\n\r\n");
	memset(in + n, 'a', 1024);
	sim_init(&s);
	s.use_rules = true;
	run(&s, in, (size_t)n + 1024, 0, 0);
	assert_false(s.refused);
	assert_int_equal(s.n_ends, 1);

	/* Chunked: counted, the connection fails once over. */
	n = snprintf(in, sizeof(in), "POST /repos/acme/x HTTP/1.1\r\nHost: api.test\r\n"
		     "Transfer-Encoding: chunked\r\n\r\n");
	for (int i = 0; i < 3; i++) {
		n += snprintf(in + n, sizeof(in) - (size_t)n, "200\r\n");
		memset(in + n, 'b', 512);
		n += 512;
		n += snprintf(in + n, sizeof(in) - (size_t)n, "\r\n");
	}
	n += snprintf(in + n, sizeof(in) - (size_t)n, "0\r\n\r\n");
	sim_init(&s);
	s.use_rules = true;
	run(&s, in, (size_t)n, 100, 0);
	assert_true(s.refused);
	assert_int_equal(s.status, 413);
	assert_true(s.partial);
	assert_true(s.out_len < (size_t)n - 512);

	/* Same body, no limit from the engine: allowed by a rule without
	 * max_body. */
	sim_init(&s);
	run(&s, in, (size_t)n, 100, 0);
	assert_false(s.refused);
	assert_int_equal(s.out_len, (size_t)n);
}

static void test_leading_crlf_and_http10(void **state)
{
	static const char in[] = GET1 "\r\n\r\n"
		"GET /repos/acme/y HTTP/1.0\r\nHost: api.test\r\n\r\n";
	static const char want[] = GET1
		"GET /repos/acme/y HTTP/1.0\r\nHost: api.test\r\n\r\n";
	struct sim s;

	sim_init(&s);
	s.use_rules = true;
	run(&s, in, sizeof(in) - 1, 1, 0);
	assert_int_equal(s.n_ends, 2);
	assert_int_equal(s.out_len, sizeof(want) - 1);
	assert_memory_equal(s.out, want, s.out_len);
}

/* The agent can never get a byte out after a refusal, whatever follows. */
static void test_refused_is_terminal(void **state)
{
	struct httpreq *r = httpreq_new();
	size_t used, n;

	assert_int_equal(httpreq_feed(r, GET1, strlen(GET1), &used), HTTPREQ_EV_HEAD);
	httpreq_refuse(r, 403, "denied");
	assert_int_equal(httpreq_feed(r, GET1, strlen(GET1), &used), HTTPREQ_EV_REFUSED);
	assert_int_equal(used, 0);
	assert_int_equal(httpreq_accept(r, NULL, 0, HTTPREQ_NO_LIMIT), -EPROTO);
	httpreq_out(r, &n);
	assert_int_equal(n, 0);
	assert_int_equal(httpreq_status(r), 403);
	httpreq_free(r);
}


/* A _method in a POST body (Rails, Laravel): the request must be allowed
 * as that method too, decided at the body's end, before the server has
 * its last byte. The rules allow GET, HEAD, POST and PUT, not DELETE. */
static void post_case(const char *in, size_t split, int status, const char *tail_out)
{
	struct sim s;
	size_t len = strlen(in);

	sim_init(&s);
	s.use_rules = true;
	s.scan = true;
	run(&s, in, len, split, 0);
	if (s.status != status)
		fail_msg("%.60s (split %zu): %d %s", in + 48, split, s.status,
			 s.reason ? s.reason : "-");
	if (status) {
		assert_true(s.refused);
		/* never the whole request: at most all but its last byte */
		assert_true(s.out_len < len);
		assert_int_equal(s.n_ends, 0);
	} else {
		assert_false(s.refused);
		assert_int_equal(s.n_ends, 1);
		assert_true(s.out_len >= strlen(tail_out));
		assert_memory_equal(s.out + s.out_len - strlen(tail_out), tail_out,
				    strlen(tail_out));
	}
}

static void test_body_method_override(void **state)
{
	(void)state;
	static const char deny_url[] = "POST /repos/acme/x HTTP/1.1\r\nHost: api.test\r\n"
		"Content-Type: application/x-www-form-urlencoded\r\n"
		"Content-Length: 18\r\n\r\na=1&_method=DELETE";
	static const char deny_noct[] = "POST /repos/acme/x HTTP/1.1\r\nHost: api.test\r\n"
		"Content-Length: 16\r\n\r\n%5Fmethod=delete";
	static const char allow_put[] = "POST /repos/acme/x HTTP/1.1\r\nHost: api.test\r\n"
		"Content-Length: 15\r\n\r\n_method=put&b=2";
	static const char deny_chunked[] = "POST /repos/acme/x HTTP/1.1\r\nHost: api.test\r\n"
		"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
		"9\r\n{\"_method\r\n"
		"b\r\n\":\"DELETE\"}\r\n0\r\n\r\n";
	static const char deny_mp[] = "POST /repos/acme/x HTTP/1.1\r\nHost: api.test\r\n"
		"Content-Type: multipart/form-data; boundary=B\r\nContent-Length: 66\r\n\r\n"
		"--B\r\nContent-Disposition: form-data; name=_method\r\n\r\nDELETE\r\n--B--";
	static const char text[] = "POST /repos/acme/x HTTP/1.1\r\nHost: api.test\r\n"
		"Content-Type: text/plain\r\nContent-Length: 14\r\n\r\n_method=DELETE";
	static const char gzip[] = "POST /repos/acme/x HTTP/1.1\r\nHost: api.test\r\n"
		"Content-Type: application/json\r\nContent-Encoding: gzip\r\n"
		"Content-Length: 2\r\n\r\n{}";
	static const char brotli[] = "POST /repos/acme/x HTTP/1.1\r\nHost: api.test\r\n"
		"Content-Type: application/json\r\nContent-Encoding: br\r\n"
		"Content-Length: 2\r\n\r\n{}";
	static const char two_ct[] = "POST /repos/acme/x HTTP/1.1\r\nHost: api.test\r\n"
		"Content-Type: text/plain\r\nContent-Type: application/json\r\n"
		"Content-Length: 2\r\n\r\n{}";
	static const char unknown[] = "POST /repos/acme/x HTTP/1.1\r\nHost: api.test\r\n"
		"Content-Length: 12\r\n\r\n_method=NOPE";
	static const char head[] = "POST /repos/acme/x HTTP/1.1\r\nHost: api.test\r\n"
		"Content-Length: 12\r\n\r\n_method=head";
	static const char connect[] = "POST /repos/acme/x HTTP/1.1\r\nHost: api.test\r\n"
		"Content-Type: application/json\r\nContent-Length: 22\r\n\r\n"
		"{\"_method\": \"CONNECT\"}";
	static const char expect[] = "POST /repos/acme/x HTTP/1.1\r\nHost: api.test\r\n"
		"Expect: 100-continue\r\nContent-Length: 14\r\n\r\n";
	struct sim s;

	for (size_t split = 0; split < 24; split++) {
		post_case(deny_url, split, 403, NULL);
		post_case(deny_noct, split, 403, NULL);
		post_case(allow_put, split, 0, "\r\n\r\n_method=put&b=2");
		post_case(deny_chunked, split, 403, NULL);
		post_case(deny_mp, split, 403, NULL);
		post_case(text, split, 0, "_method=DELETE");
		post_case(gzip, split, 400, NULL); /* "{}" is no gzip stream */
		post_case(brotli, split, 415, NULL);
		post_case(two_ct, split, 400, NULL);
		post_case(unknown, split, 400, NULL);
		/* HEAD is allowed here, but a response without a body to
		 * what egressd reads as a POST would shift every response
		 * after it (and a tunnel opened by a fake 101): 400 */
		post_case(head, split, 400, NULL);
		post_case(connect, split, 400, NULL);
	}
	/* Rejected at the body's end, the head and body but the last byte
	 * went out: the engine must abort the upstream connection. */
	sim_init(&s);
	s.use_rules = s.scan = true;
	run(&s, deny_url, strlen(deny_url), 0, 0);
	assert_true(s.partial);
	/* the head went out before the body was fed; none of the body */
	assert_int_equal(s.out_len, (size_t)(strstr(deny_url, "\r\n\r\n") + 4 - deny_url));
	sim_init(&s);
	s.use_rules = s.scan = true;
	run(&s, deny_url, strlen(deny_url) - 1, 0, 0);
	assert_false(s.refused);
	assert_int_equal(s.out_len, strlen(deny_url) - 2);
	/* Audit mode: what the rules refuse (403) is let through, nothing
	 * held back, the verdict told; a body that cannot be read or names
	 * HEAD or CONNECT is refused as in enforce mode: the response
	 * framing depends on it. */
	{
		static const struct { const char *in; int status; bool refused; } au[] = {
			{ deny_url, 403, false }, { allow_put, 0, false },
			{ two_ct, 0, false }, { head, 400, true }, { connect, 400, true },
		};

		for (size_t i = 0; i < sizeof(au) / sizeof(au[0]); i++) {
			sim_init(&s);
			s.use_rules = s.scan = s.audit = true;
			run(&s, au[i].in, strlen(au[i].in), 0, 0);
			if (au[i].refused) {
				assert_true(s.refused);
				assert_int_equal(s.status, au[i].status);
				assert_true(s.out_len < strlen(au[i].in));
				continue;
			}
			assert_false(s.refused);
			assert_int_equal(s.out_len, strlen(au[i].in));
			assert_int_equal(s.audit_status, au[i].status);
		}
	}
	/* Rules that allow every method: the body is read all the same,
	 * for HEAD and CONNECT, in both modes. */
	for (int audit = 0; audit < 2; audit++) {
		struct httpreq *r = httpreq_new();
		size_t used, n;

		assert_non_null(r);
		assert_int_equal(httpreq_feed(r, head, strlen(head), &used), HTTPREQ_EV_HEAD);
		assert_int_equal(httpreq_accept(r, NULL, 0, HTTPREQ_NO_LIMIT), 0);
		assert_int_equal(httpreq_scan_body(r, UINT64_MAX, audit), 0);
		assert_int_equal(httpreq_feed(r, head + used, strlen(head) - used, &n),
				 HTTPREQ_EV_REFUSED);
		assert_int_equal(httpreq_status(r), 400);
		httpreq_free(r);
	}
	/* A body that cannot be read, where every method is allowed or in
	 * audit mode: forwarded whole and told (the engine ends the
	 * connection after its answer); a readable HEAD stays refused; in
	 * enforce mode under rules that refuse some method: 400, 415. */
	{
		static const char lf_mp[] = "POST /upload HTTP/1.1\r\nHost: api.test\r\n"
			"Content-Type: multipart/related; boundary=B\r\nContent-Length: 44\r\n\r\n"
			"--B\nContent-Type: application/json\n\n{}\n--B--";
		static const struct { const char *in; uint64_t ok; bool audit; int status; }
		lenient[] = {
			{ lf_mp, UINT64_MAX, false, 0 }, { lf_mp, UINT64_MAX, true, 0 },
			{ lf_mp, 1ULL << 3, true, 0 }, { lf_mp, 1ULL << 3, false, 400 },
			{ brotli, UINT64_MAX, false, 0 }, { brotli, UINT64_MAX, true, 0 },
			{ brotli, 1ULL << 3, true, 0 }, { brotli, 1ULL << 3, false, 415 },
			{ gzip, UINT64_MAX, false, 0 }, { gzip, 1ULL << 3, false, 400 },
			{ head, UINT64_MAX, false, 400 }, { head, UINT64_MAX, true, 400 },
			{ connect, UINT64_MAX, true, 400 }, { allow_put, UINT64_MAX, false, 0 },
		};

		for (size_t i = 0; i < sizeof(lenient) / sizeof(lenient[0]); i++) {
			const char *in = lenient[i].in;
			struct httpreq *r = httpreq_new();
			size_t used, n = 0;
			int ev;

			assert_non_null(r);
			assert_int_equal(httpreq_feed(r, in, strlen(in), &used), HTTPREQ_EV_HEAD);
			assert_int_equal(httpreq_accept(r, NULL, 0, HTTPREQ_NO_LIMIT), 0);
			if (httpreq_scan_body(r, lenient[i].ok, lenient[i].audit)) {
				assert_int_equal(httpreq_status(r), lenient[i].status);
				httpreq_free(r);
				continue;
			}
			ev = httpreq_feed(r, in + used, strlen(in) - used, &n);
			if (lenient[i].status) {
				assert_int_equal(ev, HTTPREQ_EV_REFUSED);
				assert_int_equal(httpreq_status(r), lenient[i].status);
			} else {
				size_t len;

				assert_int_equal(ev, HTTPREQ_EV_END);
				httpreq_out(r, &len);
				assert_int_equal(len, strlen(in));
				if (in == allow_put)
					assert_null(httpreq_scan_unread(r));
				else
					assert_non_null(httpreq_scan_unread(r));
			}
			httpreq_free(r);
		}
	}
	/* A client waiting for 100 Continue gets its head out whole. */
	sim_init(&s);
	s.use_rules = s.scan = true;
	run(&s, expect, strlen(expect), 0, 0);
	assert_false(s.refused);
	assert_true(s.out_len > 4);
	assert_memory_equal(s.out + s.out_len - 4, "\r\n\r\n", 4);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_simple_get_canonical_passthrough),
		cmocka_unit_test(test_pipelined_second_denied),
		cmocka_unit_test(test_pipelined_all_checked),
		cmocka_unit_test(test_chunked_every_split),
		cmocka_unit_test(test_chunked_canonicalized),
		cmocka_unit_test(test_content_length_every_split),
		cmocka_unit_test(test_smuggling_vectors),
		cmocka_unit_test(test_bad_lines),
		cmocka_unit_test(test_bad_chunks),
		cmocka_unit_test(test_head_too_large),
		cmocka_unit_test(test_expect_continue),
		cmocka_unit_test(test_upgrade_websocket),
		cmocka_unit_test(test_method_override_checked),
		cmocka_unit_test(test_connect_is_upgrade),
		cmocka_unit_test(test_injection_and_canonical_head),
		cmocka_unit_test(test_connection_names_injected),
		cmocka_unit_test(test_proxy_authorization_stripped),
		cmocka_unit_test(test_accept_rejects_bad_sets),
		cmocka_unit_test(test_accept_many_sets),
		cmocka_unit_test(test_origin_form),
		cmocka_unit_test(test_body_limits),
		cmocka_unit_test(test_leading_crlf_and_http10),
		cmocka_unit_test(test_refused_is_terminal),
		cmocka_unit_test(test_body_method_override),
	};
	int ret = cmocka_run_group_tests(tests, NULL, NULL);

	reqrule_host_free(&host);
	return ret;
}
