// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * Kernel decisions folded for the audit log (kfold.h). One open-addressing
 * table per window, keyed with a random seed (the keys are the agent's
 * choice: a sweep must not be able to pick colliding ones), emptied when
 * the window ends.
 */
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "kfold.h"

enum kf_kind {
	KF_FREE = 0,
	KF_EXACT,  /* one kind of decision: ev is the first, count the repeats */
	KF_MIXED,  /* a cgroup's decisions past its kinds: ev is the first */
	KF_CGROUP, /* how many EXACT kinds a cgroup has in this window */
};

struct kf_entry {
	uint8_t kind;
	uint32_t keys;     /* KF_CGROUP: its EXACT kinds; KF_MIXED: 1 when the
			    * table's limit made it, not the cgroup's */
	uint64_t hash;
	uint64_t count;    /* EXACT: after the first; MIXED: all */
	uint64_t first_ns; /* of those counted */
	uint64_t last_ns;
	uint64_t tag;
	void *payload;     /* f->dup's copy of the first's src */
	struct egr_event ev;
};

/* Past the table: by kind alone, the last slot for whatever is left. */
#define KF_ANY_SLOTS 16

struct kfold {
	kfold_emit_fn emit;
	void *ctx;
	uint64_t seed;
	unsigned per_cgroup;
	unsigned keys_max;   /* EXACT entries a window */
	unsigned used_max;   /* all entries a window (EXACT + MIXED + CGROUP) */
	size_t mask;         /* capacity - 1 */
	struct kf_entry *t;
	unsigned n_exact, n_used;
	struct kf_entry any[KF_ANY_SLOTS];
	void *(*dup)(void *src);
	void (*release)(void *payload);
	bool window_open;
	uint64_t window_start;
	uint64_t decisions, records;
};

static uint64_t mix(uint64_t h, uint64_t v)
{
	h ^= v;
	h *= 0x9e3779b97f4a7c15ull;
	return h ^ (h >> 29);
}

static uint64_t hash_kind(const struct kfold *f, const struct egr_event *e, uint64_t tag,
			  enum kf_kind kind)
{
	uint64_t h = mix(f->seed, kind);

	h = mix(h, e->origin.cgroup_id);
	if (kind == KF_CGROUP)
		return mix(h, 0);
	h = mix(h, (uint64_t)e->type << 32 | e->reason);
	h = mix(h, (uint64_t)e->op << 32 | e->proto);
	h = mix(h, e->origin.policy_id);
	if (kind == KF_EXACT) {
		uint64_t w[2];
		char c[EGR_COMM_LEN];

		memcpy(w, e->origin.dst_addr, sizeof(w));
		h = mix(h, w[0]);
		h = mix(h, w[1]);
		h = mix(h, (uint64_t)e->origin.dst_port << 32 | e->origin.family);
		h = mix(h, (uint64_t)e->origin.tgid << 32 | e->origin.uid);
		memcpy(c, e->origin.comm, sizeof(c));
		memcpy(w, c, sizeof(w));
		h = mix(h, w[0]);
		h = mix(h, w[1]);
		h = mix(h, tag);
	}
	return mix(h, 0);
}

static bool same_kind(const struct egr_event *a, const struct egr_event *b)
{
	return a->type == b->type && a->reason == b->reason && a->op == b->op &&
	       a->proto == b->proto;
}

static bool same(const struct kf_entry *x, const struct egr_event *b, uint64_t tag,
		 enum kf_kind kind)
{
	const struct egr_event *a = &x->ev;

	if (a->origin.cgroup_id != b->origin.cgroup_id)
		return false;
	if (kind == KF_CGROUP)
		return true;
	if (!same_kind(a, b) || a->origin.policy_id != b->origin.policy_id)
		return false;
	if (kind == KF_MIXED)
		return true;
	return x->tag == tag &&
	       !memcmp(a->origin.dst_addr, b->origin.dst_addr, sizeof(a->origin.dst_addr)) &&
	       a->origin.dst_port == b->origin.dst_port &&
	       a->origin.family == b->origin.family && a->origin.tgid == b->origin.tgid &&
	       a->origin.uid == b->origin.uid &&
	       !memcmp(a->origin.comm, b->origin.comm, sizeof(a->origin.comm));
}

/* The entry of e's key of this kind, or a free slot for it (kind FREE);
 * NULL never: the table is never full (used_max < capacity). */
static struct kf_entry *slot(struct kfold *f, const struct egr_event *e, uint64_t tag,
			     enum kf_kind kind, uint64_t *hash)
{
	uint64_t h = hash_kind(f, e, tag, kind);
	size_t i = (size_t)h & f->mask;

	*hash = h;
	for (;;) {
		struct kf_entry *x = &f->t[i];

		if (x->kind == KF_FREE)
			return x;
		if (x->kind == kind && x->hash == h && same(x, e, tag, kind))
			return x;
		i = (i + 1) & f->mask;
	}
}

static void take(struct kfold *f, struct kf_entry *x, const struct egr_event *e, uint64_t tag,
		 void *src, enum kf_kind kind, uint64_t h)
{
	x->kind = (uint8_t)kind;
	x->hash = h;
	x->keys = 0;
	x->count = 0;
	x->first_ns = x->last_ns = 0;
	x->tag = tag;
	x->payload = kind != KF_CGROUP && f->dup && src ? f->dup(src) : NULL;
	x->ev = *e;
}

/* A free slot taken for a CGROUP or MIXED entry, if the window has room. */
static bool claim(struct kfold *f, struct kf_entry *x, const struct egr_event *e, uint64_t tag,
		  void *src, enum kf_kind kind, uint64_t h)
{
	if (f->n_used >= f->used_max)
		return false;
	take(f, x, e, tag, src, kind, h);
	f->n_used++;
	return true;
}

static void drop(struct kfold *f, struct kf_entry *x)
{
	if (x->payload && f->release)
		f->release(x->payload);
	x->payload = NULL;
}

/* CPUs hand their events over out of order, by microseconds: the span is
 * from the earliest to the latest. */
static void count(struct kf_entry *x, const struct egr_event *e)
{
	if (!x->count++ || e->ts_ns < x->first_ns)
		x->first_ns = e->ts_ns;
	if (e->ts_ns > x->last_ns)
		x->last_ns = e->ts_ns;
}

static void emit(struct kfold *f, const struct egr_event *e, const struct kfold_span *sp)
{
	f->records++;
	f->emit(f->ctx, e, sp);
}

static void flush(struct kfold *f)
{
	unsigned left = f->n_used;
	size_t i;

	for (i = 0; i <= f->mask && left; i++) {
		struct kf_entry *x = &f->t[i];
		struct kfold_span sp = { x->count, x->first_ns, x->last_ns, x->kind == KF_MIXED,
					 false, x->kind == KF_MIXED && x->keys, f->per_cgroup,
					 f->keys_max, x->payload };

		if (x->kind == KF_FREE)
			continue;
		if (x->kind != KF_CGROUP && x->count)
			emit(f, &x->ev, &sp);
		drop(f, x);
		x->kind = KF_FREE; /* take() sets the rest */
		left--;
	}
	for (i = 0; i < KF_ANY_SLOTS; i++) {
		struct kf_entry *x = &f->any[i];
		struct kfold_span sp = { x->count, x->first_ns, x->last_ns, true, true, true,
					 f->per_cgroup, f->keys_max, x->payload };

		if (x->count) {
			/* a last slot may hold several kinds of its verdict */
			if (x->kind == KF_MIXED)
				x->ev.reason = EGR_REASON_NONE;
			emit(f, &x->ev, &sp);
		}
		drop(f, x);
	}
	memset(f->any, 0, sizeof(f->any));
	f->n_exact = f->n_used = 0;
	f->window_open = false;
}

/* Past the table: counted by kind alone; past KF_ANY_SLOTS - 4 kinds, by
 * verdict alone (the last four slots, by the type's low bits). */
static void count_any(struct kfold *f, const struct egr_event *e, void *src)
{
	struct kf_entry *x = NULL;
	unsigned i;

	for (i = 0; i < KF_ANY_SLOTS - 4; i++) {
		x = &f->any[i];
		if (!x->count) {
			take(f, x, e, 0, src, KF_EXACT, 0);
			break;
		}
		if (same_kind(&x->ev, e))
			break;
	}
	if (i == KF_ANY_SLOTS - 4) {
		x = &f->any[KF_ANY_SLOTS - 4 + (e->type & 3)];
		if (!x->count)
			take(f, x, e, 0, src, KF_EXACT, 0);
		else if (!same_kind(&x->ev, e))
			x->kind = KF_MIXED; /* kinds of this verdict vary */
	}
	count(x, e);
}

void kfold_event_tagged(struct kfold *f, const struct egr_event *e, uint64_t tag, void *src)
{
	struct kf_entry *x, *cg;
	uint64_t h, hc;

	f->decisions++;
	if (f->window_open && e->ts_ns >= f->window_start + KFOLD_WINDOW_MS * 1000000ull)
		flush(f);
	if (!f->window_open) {
		f->window_open = true;
		f->window_start = e->ts_ns;
	}
	x = slot(f, e, tag, KF_EXACT, &h);
	if (x->kind == KF_EXACT) {
		count(x, e);
		return;
	}
	cg = slot(f, e, 0, KF_CGROUP, &hc);
	if (cg->kind == KF_FREE && !claim(f, cg, e, 0, NULL, KF_CGROUP, hc)) {
		count_any(f, e, src);
		return;
	}
	if (cg->keys < f->per_cgroup && f->n_exact < f->keys_max && f->n_used < f->used_max) {
		/* cg's slot is taken, so x (a free slot probed before it was)
		 * may be cg now: look again */
		x = slot(f, e, tag, KF_EXACT, &h);
		take(f, x, e, tag, src, KF_EXACT, h);
		f->n_exact++;
		f->n_used++;
		cg->keys++;
		emit(f, e, &(struct kfold_span){ 1, e->ts_ns, e->ts_ns, false, false, false, 0, 0, src });
		return;
	}
	x = slot(f, e, 0, KF_MIXED, &h);
	if (x->kind == KF_FREE) {
		if (!claim(f, x, e, 0, src, KF_MIXED, h)) {
			count_any(f, e, src);
			return;
		}
		x->keys = cg->keys < f->per_cgroup; /* the table's limit, not the cgroup's */
	}
	count(x, e);
}

void kfold_event(struct kfold *f, const struct egr_event *e)
{
	kfold_event_tagged(f, e, 0, NULL);
}

void kfold_set_payload(struct kfold *f, void *(*dup)(void *src), void (*release)(void *payload))
{
	f->dup = dup;
	f->release = release;
}

uint64_t kfold_hash(const struct kfold *f, uint64_t h, const void *p, size_t len)
{
	const unsigned char *b = p;
	uint64_t w;

	h = mix(h ^ f->seed, len);
	for (; len >= 8; b += 8, len -= 8) {
		memcpy(&w, b, 8);
		h = mix(h, w);
	}
	w = 0;
	memcpy(&w, b, len);
	return mix(h, w);
}

void kfold_tick(struct kfold *f, uint64_t now_ns, bool force)
{
	if (f->window_open &&
	    (force || now_ns >= f->window_start + KFOLD_WINDOW_MS * 1000000ull))
		flush(f);
}

bool kfold_open(const struct kfold *f)
{
	return f && f->window_open;
}

uint64_t kfold_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void kfold_stats(const struct kfold *f, uint64_t *decisions, uint64_t *records)
{
	*decisions = f->decisions;
	*records = f->records;
}

struct kfold *kfold_new(unsigned keys_per_cgroup, unsigned keys_max, kfold_emit_fn emit,
			void *ctx)
{
	struct kfold *f = calloc(1, sizeof(*f));
	size_t cap = 16;

	if (!f)
		return NULL;
	f->per_cgroup = keys_per_cgroup ? keys_per_cgroup : KFOLD_KEYS_PER_CGROUP;
	f->keys_max = keys_max ? keys_max : KFOLD_KEYS_MAX;
	/* MIXED and CGROUP entries beside the EXACT ones; load under a half */
	f->used_max = f->keys_max * 2;
	while (cap < (size_t)f->used_max * 2)
		cap <<= 1;
	f->mask = cap - 1;
	f->t = calloc(cap, sizeof(*f->t));
	if (!f->t) {
		free(f);
		return NULL;
	}
	if (getrandom(&f->seed, sizeof(f->seed), GRND_NONBLOCK) != sizeof(f->seed))
		f->seed = (uint64_t)time(NULL) * 0x2545f4914f6cdd1dull ^ (uintptr_t)f;
	f->emit = emit;
	f->ctx = ctx;
	return f;
}

void kfold_free(struct kfold *f)
{
	size_t i;

	if (!f)
		return;
	for (i = 0; i <= f->mask; i++)
		if (f->t[i].kind != KF_FREE)
			drop(f, &f->t[i]);
	for (i = 0; i < KF_ANY_SLOTS; i++)
		drop(f, &f->any[i]);
	free(f->t);
	free(f);
}
