// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * libFuzzer target for the intercepted request path: user/httpreq.c (with
 * http-parser) and user/reqrule.c, driven as the engine drives them.
 *
 * Input: byte 0 = engine mode (bit 0: no rules, accept everything; bit 1:
 * small max_body), byte 1 = number of split points (mod 8), then two bytes
 * per split point, then the client's bytes.
 *
 * With rules, POST bodies are read for a _method (httpreq_scan_body;
 * the rules allow no DELETE).
 *
 * Checks beyond sanitizers:
 *  - every head we emit re-parses, alone, as exactly one valid head with
 *    the same method, target, version and framing, exactly one of each
 *    injected header with our value, no Proxy-Authorization;
 *  - nothing is emitted after a refusal, and nothing at all of a refused
 *    request unless httpreq_partial() says so;
 *  - the stream of complete requests does not depend on the splits;
 *  - fed back in, that stream is a fixed point (canonical) and yields the
 *    same requests in the same order: the server cannot see a request we
 *    did not check (smuggling);
 *  - an allowed path is normalized (normalizing it again changes nothing).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "httpreq.h"
#include "reqrule.h"

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond))                                                   \
			__builtin_trap();                                      \
	} while (0)

#define SNI "api.test"
#define SECRET "Bearer FUZZ-SECRET"
#define MAX_REQS 64

static struct reqrule_host rules;

struct outbuf {
	uint8_t *p;
	size_t len, cap;
};

struct run {
	bool no_rules;
	bool no_sets;          /* with no_rules: set nothing */
	bool small_body;
	struct outbuf out;
	size_t committed;      /* out.len at the last request boundary */
	int n_heads, n_ends;
	char reqs[MAX_REQS][64]; /* "METHOD target" (cut) of accepted heads */
	int n_reqs;
	int n_committed;       /* n_reqs at the last request boundary */
	bool refused, upgraded;
	int status;
};

static void ob_add(struct outbuf *o, const uint8_t *p, size_t n)
{
	if (o->len + n > o->cap) {
		size_t cap = o->cap ? o->cap : 4096;

		while (cap < o->len + n)
			cap *= 2;
		o->p = realloc(o->p, cap);
		CHECK(o->p);
		o->cap = cap;
	}
	memcpy(o->p + o->len, p, n);
	o->len += n;
}

static void drain(struct httpreq *r, struct run *u)
{
	size_t n;
	const uint8_t *p = httpreq_out(r, &n);

	if (n) {
		/* Refused is terminal: not a byte after it. */
		CHECK(!u->refused);
		ob_add(&u->out, p, n);
	}
	httpreq_out_consume(r, n);
}

static void init_rules(void)
{
	struct reqrule r;

	if (rules.n_rules)
		return;
	CHECK(!reqrule_host_init(&rules, SNI));
	CHECK(!reqrule_init(&r, "no-secret", "deny", "*", "/repos/acme/secret/**", NULL));
	CHECK(!reqrule_host_add_rule(&rules, &r));
	CHECK(!reqrule_init(&r, "acme", "allow", "GET,HEAD,POST,PUT",
			    "/repos/acme/** /*/*.git/** /info/refs /git-upload-pack", NULL));
	CHECK(!reqrule_host_add_rule(&rules, &r));
	CHECK(!reqrule_init(&r, "options", "allow", "OPTIONS,CONNECT", "*", "1k"));
	CHECK(!reqrule_host_add_rule(&rules, &r));
	CHECK(!reqrule_host_add_cred(&rules, "token", "Authorization", "", "env:X"));
	CHECK(!reqrule_host_add_cred(&rules, "key", "X-Api-Key", "/repos/acme", "env:Y"));
}

/* The head just emitted re-parses as exactly this one head. */
static void check_emitted_head(const uint8_t *p, size_t n,
			       const struct httpreq_head *orig,
			       const struct httpreq_set *sets, size_t n_sets)
{
	struct httpreq *r = httpreq_new();
	const struct httpreq_head *h;
	size_t used;

	CHECK(r);
	CHECK(httpreq_feed(r, p, n, &used) == HTTPREQ_EV_HEAD);
	CHECK(used == n);
	h = httpreq_head(r);
	CHECK(h && h->head_len == n);
	CHECK(!strcmp(h->method, orig->method));
	{
		bool slash;
		const char *t = httpreq_origin_form(orig->method, orig->target, &slash);

		if (slash)
			CHECK(h->target[0] == '/' && !strcmp(h->target + 1, t));
		else
			CHECK(!strcmp(h->target, t));
	}
	CHECK(h->version_minor == orig->version_minor);
	CHECK(h->chunked == orig->chunked && h->has_length == orig->has_length &&
	      h->content_length == orig->content_length &&
	      h->upgrade == orig->upgrade);
	CHECK((h->host == NULL) == (orig->host == NULL));
	CHECK(!h->host || !strcmp(h->host, orig->host));
	for (size_t s = 0; s < n_sets; s++) {
		int seen = 0;

		for (size_t i = 0; i < h->n_fields; i++)
			if (!strcasecmp(h->fields[i].name, sets[s].name)) {
				seen++;
				CHECK(!strcmp(h->fields[i].value, sets[s].value));
			}
		CHECK(seen == 1);
	}
	for (size_t i = 0; i < h->n_fields; i++)
		CHECK(strcasecmp(h->fields[i].name, "proxy-authorization"));
	httpreq_free(r);
}

static void on_head(struct httpreq *r, struct run *u)
{
	const struct httpreq_head *h = httpreq_head(r);
	struct httpreq_set sets[REQRULE_MAX_CREDS];
	struct reqrule_result res;
	uint64_t max = u->small_body ? 64 : HTTPREQ_NO_LIMIT;
	size_t n_sets = 0, before, used;
	int err;

	CHECK(h && h->method[0] && h->target[0] && h->head_len <= HTTPREQ_HEAD_MAX);
	CHECK(h->n_fields <= HTTPREQ_MAX_HEADERS);
	CHECK(!(h->chunked && h->has_length));
	CHECK(httpreq_feed(r, "x", 1, &used) == -EBUSY && used == 0);
	u->n_heads++;
	if (!u->no_rules) {
		if (httpreq_check(r, &rules, SNI, &res)) {
			CHECK(res.status >= 400 && res.reason && !res.n_creds);
			httpreq_refuse(r, res.status, res.reason);
			return;
		}
		if (res.path[0] == '/') {
			char again[REQRULE_PATH_MAX];

			CHECK(!reqrule_normalize_path(res.path, again, sizeof(again)));
			CHECK(!strcmp(again, res.path));
		} else {
			CHECK(!strcmp(res.path, "*"));
		}
		for (size_t i = 0; i < res.n_creds; i++) {
			sets[n_sets].name = res.creds[i]->header;
			sets[n_sets++].value = SECRET;
		}
		if (res.max_body < max)
			max = res.max_body;
	} else if (!u->no_sets) {
		sets[0].name = "Authorization";
		sets[0].value = SECRET;
		n_sets = 1;
	}
	before = u->out.len;
	err = httpreq_accept(r, sets, n_sets, max);
	if (err) {
		CHECK((err == -EFBIG && httpreq_status(r) == 413) ||
		      (err == -EPERM && httpreq_status(r) == 400));
		return;
	}
	/* A POST body's _method (the rules allow no DELETE): refused now
	 * (a type or encoding that cannot be read) or at the body's end. */
	if (!u->no_rules && httpreq_scan_body(r, res.override_ok, false)) {
		CHECK(httpreq_status(r) == 400 || httpreq_status(r) == 415);
		CHECK(!strcmp(h->method, "POST") && res.override_ok != UINT64_MAX);
		return;
	}
	drain(r, u);
	check_emitted_head(u->out.p + before, u->out.len - before, h, sets, n_sets);
	if (u->n_reqs < MAX_REQS) {
		size_t ml = strlen(h->method);
		bool slash;
		const char *t = httpreq_origin_form(h->method, h->target, &slash);

		/* as the server gets it: an absolute-form target in origin-form */
		memcpy(u->reqs[u->n_reqs], h->method, ml);
		u->reqs[u->n_reqs][ml] = ' ';
		if (slash)
			u->reqs[u->n_reqs][++ml] = '/';
		strncpy(u->reqs[u->n_reqs] + ml + 1, t, 62 - ml);
		u->reqs[u->n_reqs][63] = '\0';
		u->n_reqs++;
	}
	if (h->upgrade) {
		u->committed = u->out.len;
		u->n_committed = u->n_reqs;
	}
}

static bool feed(struct httpreq *r, struct run *u, const uint8_t *p, size_t n)
{
	for (int guard = 0; guard < 100000; guard++) {
		size_t used = 0;
		int ev = httpreq_feed(r, p, n, &used);

		CHECK(used <= n);
		p += used;
		n -= used;
		drain(r, u);
		switch (ev) {
		case HTTPREQ_EV_HEAD:
			on_head(r, u);
			break;
		case HTTPREQ_EV_END:
			u->n_ends++;
			u->committed = u->out.len;
			u->n_committed = u->n_reqs;
			break;
		case HTTPREQ_EV_NEED_MORE:
			CHECK(n == 0);
			return true;
		case HTTPREQ_EV_UPGRADE:
			CHECK(used == 0);
			u->upgraded = true;
			return false;
		case HTTPREQ_EV_REFUSED:
			u->refused = true;
			u->status = httpreq_status(r);
			CHECK(u->status >= 400 && u->status <= 599);
			CHECK(httpreq_reason(r));
			/* Nothing of the refused request, unless flagged. */
			if (!httpreq_partial(r))
				CHECK(u->out.len == u->committed);
			return false;
		default:
			CHECK(0);
		}
	}
	CHECK(0);
	return false;
}

static void run(struct run *u, const uint8_t *data, size_t size,
		const size_t *cuts, size_t n_cuts)
{
	struct httpreq *r = httpreq_new();
	size_t off = 0;

	CHECK(r);
	if (!data)
		data = (const uint8_t *)"";
	for (size_t i = 0; i <= n_cuts; i++) {
		size_t end = i < n_cuts ? cuts[i] : size;

		if (end < off)
			continue;
		if (!feed(r, u, data + off, end - off))
			break;
		off = end;
	}
	httpreq_free(r);
}

static int cmp_size(const void *a, const void *b)
{
	size_t x = *(const size_t *)a, y = *(const size_t *)b;

	return x < y ? -1 : x > y;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct run a = { 0 }, b = { 0 }, c = { 0 };
	size_t cuts[8], n_cuts, hdr;

	init_rules();
	if (size < 2)
		return 0;
	a.no_rules = b.no_rules = data[0] & 1;
	a.small_body = b.small_body = data[0] & 2;
	n_cuts = data[1] % 8;
	hdr = 2 + 2 * n_cuts;
	if (size < hdr)
		return 0;
	for (size_t i = 0; i < n_cuts; i++)
		cuts[i] = (size_t)(data[2 + 2 * i] | data[3 + 2 * i] << 8) %
			  (size - hdr + 1);
	qsort(cuts, n_cuts, sizeof(cuts[0]), cmp_size);
	data += hdr;
	size -= hdr;

	run(&a, data, size, cuts, n_cuts);
	run(&b, data, size, NULL, 0);

	/* Splits change nothing about complete requests. */
	CHECK(a.committed == b.committed);
	CHECK(!a.committed || !memcmp(a.out.p, b.out.p, a.committed));
	CHECK(a.n_heads == b.n_heads && a.n_ends == b.n_ends);
	CHECK(a.n_reqs == b.n_reqs && a.refused == b.refused &&
	      a.upgraded == b.upgraded);
	/* Which client error a streaming parser meets first can depend on
	 * where the bytes were cut (a trailer name over its limit at a cut:
	 * 431; the same name whole, with a bad byte further on: 400). Both
	 * refuse the request and emit nothing of it; only the code differs. */
	CHECK(a.status == b.status ||
	      (a.refused && a.status / 100 == 4 && b.status / 100 == 4));
	for (int i = 0; i < a.n_reqs; i++)
		CHECK(!strcmp(a.reqs[i], b.reqs[i]));

	/* What the server gets, seen again: same requests, same bytes. */
	c.no_rules = c.no_sets = true;
	run(&c, a.out.p, a.committed, NULL, 0);
	CHECK(!c.refused);
	CHECK(c.committed == a.committed);
	CHECK(!c.committed || !memcmp(c.out.p, a.out.p, c.committed));
	CHECK(c.n_reqs == a.n_committed);
	for (int i = 0; i < c.n_reqs; i++)
		CHECK(!strcmp(c.reqs[i], a.reqs[i]));

	free(a.out.p);
	free(b.out.p);
	free(c.out.p);
	return 0;
}
