// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* user/kfold.c: kernel decisions folded for the audit log, and their
 * records (user/kevent.c, user/audit.c). */
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "audit.h"
#include "kevent.h"
#include "kfold.h"

#define MS 1000000ull
#define T0 (5000 * MS)

struct out {
	size_t n, cap;
	struct {
		struct egr_event e;
		struct kfold_span sp;
	} *r;
	uint64_t sum;
};

static void collect(void *ctx, const struct egr_event *e, const struct kfold_span *sp)
{
	struct out *o = ctx;

	if (o->n == o->cap) {
		o->cap = o->cap ? o->cap * 2 : 64;
		o->r = realloc(o->r, o->cap * sizeof(*o->r));
		assert_non_null(o->r);
	}
	o->r[o->n].e = *e;
	o->r[o->n].sp = *sp;
	o->n++;
	assert_true(sp->count >= 1);
	assert_true(sp->first_ns <= sp->last_ns);
	o->sum += sp->count;
}

static struct egr_event ev(uint64_t ts, uint64_t cgroup, uint32_t tgid, uint16_t port)
{
	struct egr_event e;

	memset(&e, 0, sizeof(e));
	e.ts_ns = ts;
	e.type = EGR_EVENT_DENY;
	e.reason = EGR_REASON_UDP;
	e.proto = IPPROTO_UDP;
	e.op = EGR_OP_SENDMSG;
	e.origin.family = EGR_AF_INET;
	e.origin.dst_addr[10] = e.origin.dst_addr[11] = 0xff;
	e.origin.dst_addr[12] = 198;
	e.origin.dst_addr[13] = 51;
	e.origin.dst_addr[14] = 100;
	e.origin.dst_addr[15] = 66;
	e.origin.dst_port = port;
	e.origin.cgroup_id = cgroup;
	e.origin.tgid = tgid;
	e.origin.uid = 65534;
	memcpy(e.origin.comm, "flood", 6);
	return e;
}

/* A flood of one refusal: written once at once, then one record for the
 * repeats when the window ends, with their first and last times. */
static void test_repeats_folded(void **state)
{
	struct out o = { 0 };
	struct kfold *f = kfold_new(0, 0, collect, &o);
	uint64_t i;

	(void)state;
	assert_non_null(f);
	for (i = 0; i < 100000; i++) {
		struct egr_event e = ev(T0 + i * 5000, 7, 100, 53);

		kfold_event(f, &e);
		if (i == 0)
			assert_int_equal(o.n, 1); /* the first: no waiting */
	}
	assert_int_equal(o.n, 1);
	assert_int_equal(o.r[0].sp.count, 1);
	assert_false(o.r[0].sp.mixed);
	kfold_tick(f, T0 + 999 * MS, false); /* window not over */
	assert_int_equal(o.n, 1);
	kfold_tick(f, T0 + 1000 * MS, false);
	assert_int_equal(o.n, 2);
	assert_int_equal(o.r[1].sp.count, 99999);
	assert_int_equal(o.r[1].sp.first_ns, T0 + 5000);
	assert_int_equal(o.r[1].sp.last_ns, T0 + 99999 * 5000);
	assert_false(o.r[1].sp.mixed);
	assert_int_equal(o.r[1].e.origin.dst_port, 53);
	assert_int_equal(o.sum, 100000);
	/* the next window starts over: first written at once */
	{
		struct egr_event e = ev(T0 + 1500 * MS, 7, 100, 53);

		kfold_event(f, &e);
	}
	assert_int_equal(o.n, 3);
	assert_int_equal(o.r[2].sp.count, 1);
	kfold_tick(f, T0 + 1501 * MS, true); /* nothing counted: nothing more */
	assert_int_equal(o.n, 3);
	kfold_free(f);
	free(o.r);
}

/* An event past the window ends it before it is taken. */
static void test_window_ends_on_event(void **state)
{
	struct out o = { 0 };
	struct kfold *f = kfold_new(0, 0, collect, &o);
	struct egr_event a = ev(T0, 7, 100, 80), b = ev(T0 + 10 * MS, 7, 100, 80),
			 c = ev(T0 + 1200 * MS, 7, 100, 80);

	(void)state;
	kfold_event(f, &a);
	kfold_event(f, &b);
	kfold_event(f, &c);
	assert_int_equal(o.n, 3);
	assert_int_equal(o.r[1].sp.count, 1); /* b, as the repeat of a */
	assert_int_equal(o.r[1].sp.first_ns, T0 + 10 * MS);
	assert_int_equal(o.r[2].sp.first_ns, T0 + 1200 * MS); /* c: new window */
	assert_int_equal(o.sum, 3);
	kfold_free(f);
	free(o.r);
}

/* A sweep of ports: the cgroup's first kinds itemized, the rest counted by
 * verdict and reason alone; another cgroup keeps its own share. */
static void test_sweep_mixed(void **state)
{
	struct out o = { 0 };
	struct kfold *f = kfold_new(8, 0, collect, &o);
	unsigned i, mixed = 0;

	(void)state;
	for (i = 0; i < 1000; i++) {
		struct egr_event e = ev(T0 + i * MS / 10, 7, 100 + i % 3, (uint16_t)(1000 + i));

		kfold_event(f, &e);
	}
	assert_int_equal(o.n, 8);
	{
		struct egr_event e = ev(T0 + 200 * MS, 9, 300, 443);

		kfold_event(f, &e); /* another cgroup: itemized */
	}
	assert_int_equal(o.n, 9);
	assert_int_equal(o.r[8].e.origin.cgroup_id, 9);
	kfold_tick(f, T0 + 2000 * MS, false);
	for (i = 9; i < o.n; i++) {
		if (!o.r[i].sp.mixed)
			continue;
		mixed++;
		assert_int_equal(o.r[i].sp.count, 992);
		assert_int_equal(o.r[i].sp.per_cgroup, 8);
		assert_false(o.r[i].sp.any_cgroup);
		assert_int_equal(o.r[i].e.origin.cgroup_id, 7);
	}
	assert_int_equal(mixed, 1);
	assert_int_equal(o.n, 10);
	assert_int_equal(o.sum, 1001);
	kfold_free(f);
	free(o.r);
}

/* More kinds than the table holds (a cgroup each): counted by kind alone,
 * nothing lost; the records a window stay bounded. */
static void test_table_full(void **state)
{
	struct out o = { 0 };
	struct kfold *f = kfold_new(4, 16, collect, &o);
	unsigned i, any = 0;

	(void)state;
	for (i = 0; i < 5000; i++) {
		struct egr_event e = ev(T0 + i, 1000 + i, 100, 53);

		if (i % 2)
			e.reason = EGR_REASON_PORT, e.proto = IPPROTO_TCP, e.op = EGR_OP_CONNECT;
		kfold_event(f, &e);
	}
	kfold_tick(f, 0, true);
	for (i = 0; i < o.n; i++)
		any += o.r[i].sp.any_cgroup;
	assert_int_equal(o.sum, 5000);
	assert_true(any >= 1 && any <= 2);
	assert_true(o.n <= 2 * 16 + 16 + 1);
	kfold_free(f);
	free(o.r);
}

/* Random decisions from small domains: the counts always add up, and no
 * kind is written more than twice a window (at once, and its repeats). */
static void test_random_sums(void **state)
{
	struct out o = { 0 };
	struct kfold *f = kfold_new(16, 64, collect, &o);
	uint64_t ts = T0, n = 0;
	unsigned i, seed = 12345;

	(void)state;
	for (i = 0; i < 200000; i++) {
		struct egr_event e;

		seed = seed * 1103515245u + 12345u;
		ts += (seed >> 16) % 20000;
		e = ev(ts, 1 + (seed >> 8) % 9, 100 + (seed >> 4) % 5, (uint16_t)((seed >> 12) % 40));
		if ((seed >> 20) % 7 == 0)
			e.type = EGR_EVENT_AUDIT;
		kfold_event(f, &e);
		n++;
		if (i % 1000 == 0)
			kfold_tick(f, ts, false);
	}
	kfold_tick(f, ts, true);
	assert_int_equal(o.sum, n);
	assert_true(o.n < n / 4);
	kfold_free(f);
	free(o.r);
}

/* One cgroup filling the whole window's table: another cgroup's decision
 * is not itemized, and its record says the table's limit did it. */
static void test_table_limit_named(void **state)
{
	struct out o = { 0 };
	struct kfold *f = kfold_new(100, 16, collect, &o);
	struct egr_event e;
	char detail[256];
	struct audit_record r;
	unsigned i;

	(void)state;
	for (i = 0; i < 16; i++) {
		e = ev(T0 + i, 7, 100, (uint16_t)(2000 + i));
		kfold_event(f, &e);
	}
	assert_int_equal(o.n, 16);
	e = ev(T0 + 100, 9, 300, 443);
	kfold_event(f, &e);
	assert_int_equal(o.n, 16); /* counted, not itemized */
	kfold_tick(f, 0, true);
	assert_int_equal(o.n, 17);
	assert_true(o.r[16].sp.mixed);
	assert_true(o.r[16].sp.table_full);
	assert_int_equal(o.r[16].e.origin.cgroup_id, 9);
	kevent_to_record(&o.r[16].e, &r);
	kevent_span(&r, &o.r[16].sp, detail, sizeof(detail));
	assert_non_null(strstr(r.detail, "all cgroups together made more than 16 kinds"));
	assert_int_equal(r.dst_port, 0);
	kfold_free(f);
	free(o.r);
}

/* Past the table and its per-kind slots: denials and audit mode's
 * decisions are still counted apart. */
static void test_any_keeps_verdicts(void **state)
{
	struct out o = { 0 };
	struct kfold *f = kfold_new(1, 2, collect, &o);
	uint64_t deny = 0, audit = 0, got_deny = 0, got_audit = 0;
	unsigned i;

	(void)state;
	for (i = 0; i < 3000; i++) {
		struct egr_event e = ev(T0 + i, 1000 + i, 100, 53);

		e.reason = i % EGR_REASON_MAX;
		e.op = (i / EGR_REASON_MAX) % 8;
		e.type = i % 3 ? EGR_EVENT_AUDIT : EGR_EVENT_DENY;
		if (e.type == EGR_EVENT_DENY)
			deny++;
		else
			audit++;
		kfold_event(f, &e);
	}
	kfold_tick(f, 0, true);
	for (i = 0; i < o.n; i++) {
		if (o.r[i].e.type == EGR_EVENT_DENY)
			got_deny += o.r[i].sp.count;
		else
			got_audit += o.r[i].sp.count;
	}
	assert_int_equal(got_deny, deny);
	assert_int_equal(got_audit, audit);
	kfold_free(f);
	free(o.r);
}

/* Events out of order (CPUs hand theirs over late): the span is from the
 * earliest to the latest. */
static void test_span_out_of_order(void **state)
{
	struct out o = { 0 };
	struct kfold *f = kfold_new(0, 0, collect, &o);
	uint64_t at[] = { T0, T0 + 300 * MS, T0 + 200 * MS, T0 + 50 * MS };
	unsigned i;

	(void)state;
	for (i = 0; i < 4; i++) {
		struct egr_event e = ev(at[i], 7, 100, 53);

		kfold_event(f, &e);
	}
	kfold_tick(f, 0, true);
	assert_int_equal(o.n, 2);
	assert_int_equal(o.r[1].sp.count, 3);
	assert_int_equal(o.r[1].sp.first_ns, T0 + 50 * MS);
	assert_int_equal(o.r[1].sp.last_ns, T0 + 300 * MS);
	kfold_free(f);
	free(o.r);
}

/* SipHash-2-4, the paper's test vector (appendix A): key 00..0f, the
 * 15 bytes 00..0e. */
static void test_siphash_vector(void **state)
{
	uint64_t key[2] = { 0x0706050403020100ull, 0x0f0e0d0c0b0a0908ull };
	unsigned char in[15];
	unsigned i;

	(void)state;
	for (i = 0; i < sizeof(in); i++)
		in[i] = (unsigned char)i;
	assert_int_equal(kfold_siphash(key, in, sizeof(in)), 0xa129ca6149be45e5ull);
}

static void *str_dup(void *src)
{
	return strdup(src);
}

static bool str_equal(const void *payload, const void *src)
{
	return !strcmp(payload, src);
}

struct seen {
	unsigned n;
	char names[8][32];
	uint64_t counts[8];
};

static void collect_names(void *ctx, const struct egr_event *e, const struct kfold_span *sp)
{
	struct seen *o = ctx;

	(void)e;
	assert_true(o->n < 8);
	snprintf(o->names[o->n], sizeof(o->names[0]), "%s", (const char *)sp->payload);
	o->counts[o->n++] = sp->count;
}

/* Two names under one tag (a collision, forced here): two kinds, each
 * with its own record and count, the repeats named by their own copy. */
static void test_tag_collision_kept_apart(void **state)
{
	struct seen o = { 0 };
	struct kfold *f = kfold_new(0, 0, collect_names, &o);
	struct egr_event e = ev(T0, 7, 100, 53);
	char a[] = "one.evil.test", b[] = "two.evil.test";

	(void)state;
	kfold_set_payload(f, str_dup, free, str_equal);
	kfold_event_tagged(f, &e, 42, a);
	kfold_event_tagged(f, &e, 42, b);
	kfold_event_tagged(f, &e, 42, b);
	kfold_event_tagged(f, &e, 42, a);
	kfold_event_tagged(f, &e, 42, b);
	assert_int_equal(o.n, 2);
	assert_string_equal(o.names[0], "one.evil.test");
	assert_string_equal(o.names[1], "two.evil.test");
	kfold_tick(f, 0, true);
	assert_int_equal(o.n, 4);
	assert_true((!strcmp(o.names[2], "one.evil.test") && o.counts[2] == 1 &&
		     !strcmp(o.names[3], "two.evil.test") && o.counts[3] == 2) ||
		    (!strcmp(o.names[3], "one.evil.test") && o.counts[3] == 1 &&
		     !strcmp(o.names[2], "two.evil.test") && o.counts[2] == 2));
	kfold_free(f);
}

static unsigned dup_calls;

static void *dup_fails_first(void *src)
{
	return dup_calls++ ? strdup(src) : NULL;
}

/* A kind whose copy could not be made (out of memory) matches nothing:
 * a second name under its tag is a kind of its own, not its repeat. */
static void test_no_copy_no_merge(void **state)
{
	struct out o = { 0 };
	struct kfold *f = kfold_new(0, 0, collect, &o);
	struct egr_event e = ev(T0, 7, 100, 53);
	char a[] = "a.evil.test", b[] = "b.evil.test";

	(void)state;
	dup_calls = 0;
	kfold_set_payload(f, dup_fails_first, free, str_equal);
	kfold_event_tagged(f, &e, 9, a);
	kfold_event_tagged(f, &e, 9, b);
	assert_int_equal(o.n, 2); /* both written at once */
	kfold_tick(f, 0, true);
	assert_int_equal(o.sum, 2);
	kfold_free(f);
	free(o.r);
}

/* The records: count and span; a mixed one without destination or process. */
static void test_records(void **state)
{
	struct egr_event e = ev(T0, 7, 100, 53);
	struct kfold_span sp = { 42, T0, T0 + 250 * MS, false, false, false, 0, 0, NULL, NULL };
	struct audit_record r;
	char detail[256], *js;

	(void)state;
	kevent_to_record(&e, &r);
	kevent_span(&r, &sp, detail, sizeof(detail));
	assert_int_equal(r.count, 42);
	assert_true(r.has_dst);
	assert_int_equal(r.pid, 100);
	js = audit_record_json(&r);
	assert_non_null(js);
	assert_non_null(strstr(js, "\"count\":42"));
	assert_non_null(strstr(js, "\"duration_ms\":250"));
	assert_non_null(strstr(js, "\"dst\":\"198.51.100.66\""));
	free(js);

	sp.mixed = true;
	sp.per_cgroup = 256;
	kevent_to_record(&e, &r);
	kevent_span(&r, &sp, detail, sizeof(detail));
	assert_false(r.has_dst);
	assert_int_equal(r.pid, 0);
	assert_string_equal(r.comm, "");
	assert_int_equal(r.cgroup_id, 7);
	assert_non_null(strstr(r.detail, "udp sendmsg; destinations and processes not itemized"));
	assert_non_null(strstr(r.detail, "more than 256 kinds"));
	js = audit_record_json(&r);
	assert_non_null(js);
	assert_null(strstr(js, "\"dst\""));
	assert_null(strstr(js, "\"pid\""));
	free(js);

	/* one decision: no count in the record */
	sp.count = 1;
	sp.mixed = false;
	kevent_to_record(&e, &r);
	kevent_span(&r, &sp, detail, sizeof(detail));
	js = audit_record_json(&r);
	assert_null(strstr(js, "\"count\""));
	free(js);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_repeats_folded),
		cmocka_unit_test(test_window_ends_on_event),
		cmocka_unit_test(test_sweep_mixed),
		cmocka_unit_test(test_table_full),
		cmocka_unit_test(test_random_sums),
		cmocka_unit_test(test_table_limit_named),
		cmocka_unit_test(test_any_keeps_verdicts),
		cmocka_unit_test(test_span_out_of_order),
		cmocka_unit_test(test_siphash_vector),
		cmocka_unit_test(test_tag_collision_kept_apart),
		cmocka_unit_test(test_no_copy_no_merge),
		cmocka_unit_test(test_records),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
