// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * Kernel decisions folded for the audit log (kfold.h). One open-addressing
 * table per window, keyed with a random seed (the keys are the agent's
 * choice: a sweep must not be able to pick colliding ones), emptied when
 * the window ends.
 */
#include <errno.h>
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
	uint64_t key[2];     /* SipHash key, random */
	unsigned per_cgroup;
	unsigned keys_max;   /* EXACT entries a window */
	unsigned used_max;   /* all entries a window (EXACT + MIXED + CGROUP) */
	size_t mask;         /* capacity - 1 */
	struct kf_entry *t;
	unsigned n_exact, n_used;
	struct kf_entry any[KF_ANY_SLOTS];
	void *(*dup)(void *src);
	void (*release)(void *payload);
	bool (*equal)(const void *payload, const void *src);
	bool window_open;
	uint64_t window_start;
};

/*
 * SipHash-2-4 (Aumasson, Bernstein: "SipHash: a fast short-input PRF",
 * 2012), from the paper: the kinds are the agent's choice, and a hash it
 * could make collide would merge two names into one record (a name off
 * the log) or pile its kinds onto one probe chain.
 */
#define SIP_ROTL(x, b) (uint64_t)(((x) << (b)) | ((x) >> (64 - (b))))
#define SIP_ROUND                                                              \
	do {                                                                   \
		v0 += v1; v1 = SIP_ROTL(v1, 13); v1 ^= v0; v0 = SIP_ROTL(v0, 32); \
		v2 += v3; v3 = SIP_ROTL(v3, 16); v3 ^= v2;                     \
		v0 += v3; v3 = SIP_ROTL(v3, 21); v3 ^= v0;                     \
		v2 += v1; v1 = SIP_ROTL(v1, 17); v1 ^= v2; v2 = SIP_ROTL(v2, 32); \
	} while (0)

static uint64_t le64(const unsigned char *p)
{
	uint64_t v = 0;
	int i;

	for (i = 7; i >= 0; i--)
		v = v << 8 | p[i];
	return v;
}

uint64_t kfold_siphash(const uint64_t key[2], const void *in, size_t len)
{
	const unsigned char *p = in;
	uint64_t v0 = 0x736f6d6570736575ull ^ key[0], v1 = 0x646f72616e646f6dull ^ key[1];
	uint64_t v2 = 0x6c7967656e657261ull ^ key[0], v3 = 0x7465646279746573ull ^ key[1];
	uint64_t b = (uint64_t)len << 56, m;
	size_t left = len & 7, i;

	for (; len >= 8; p += 8, len -= 8) {
		m = le64(p);
		v3 ^= m;
		SIP_ROUND;
		SIP_ROUND;
		v0 ^= m;
	}
	for (i = 0; i < left; i++)
		b |= (uint64_t)p[i] << (8 * i);
	v3 ^= b;
	SIP_ROUND;
	SIP_ROUND;
	v0 ^= b;
	v2 ^= 0xff;
	SIP_ROUND;
	SIP_ROUND;
	SIP_ROUND;
	SIP_ROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

/* The fields of a kind, packed: what is hashed. */
struct kf_key {
	uint64_t kind;
	uint64_t cgroup_id;
	uint32_t type, reason, op, proto, policy_id, family;
	uint8_t dst[16];
	uint32_t dst_port, tgid, uid, pad;
	char comm[EGR_COMM_LEN];
	uint64_t tag;
};

static uint64_t hash_kind(const struct kfold *f, const struct egr_event *e, uint64_t tag,
			  enum kf_kind kind)
{
	struct kf_key k;

	memset(&k, 0, sizeof(k));
	k.kind = kind;
	k.cgroup_id = e->origin.cgroup_id;
	if (kind != KF_CGROUP) {
		k.type = e->type;
		k.reason = e->reason;
		k.op = e->op;
		k.proto = e->proto;
		k.policy_id = e->origin.policy_id;
	}
	if (kind == KF_EXACT) {
		k.family = e->origin.family;
		memcpy(k.dst, e->origin.dst_addr, sizeof(k.dst));
		k.dst_port = e->origin.dst_port;
		k.tgid = e->origin.tgid;
		k.uid = e->origin.uid;
		memcpy(k.comm, e->origin.comm, sizeof(k.comm));
		k.tag = tag;
	}
	return kfold_siphash(f->key, &k, sizeof(k));
}

static bool same_kind(const struct egr_event *a, const struct egr_event *b)
{
	return a->type == b->type && a->reason == b->reason && a->op == b->op &&
	       a->proto == b->proto;
}

static bool same(const struct kfold *f, const struct kf_entry *x, const struct egr_event *b,
		 uint64_t tag, void *src, enum kf_kind kind)
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
	/* the tag is a hash: the payload says whether it is the same */
	if (x->tag != tag || (f->equal && src && (!x->payload || !f->equal(x->payload, src))))
		return false; /* no copy (out of memory): nothing to match it by */
	return !memcmp(a->origin.dst_addr, b->origin.dst_addr, sizeof(a->origin.dst_addr)) &&
	       a->origin.dst_port == b->origin.dst_port &&
	       a->origin.family == b->origin.family && a->origin.tgid == b->origin.tgid &&
	       a->origin.uid == b->origin.uid &&
	       !memcmp(a->origin.comm, b->origin.comm, sizeof(a->origin.comm));
}

/* The entry of e's key of this kind (hash h), or a free slot for it (kind
 * FREE); NULL never: the table is never full (used_max < capacity). */
static struct kf_entry *slot(struct kfold *f, const struct egr_event *e, uint64_t tag,
			     void *src, enum kf_kind kind, uint64_t h)
{
	size_t i = (size_t)h & f->mask;

	for (;;) {
		struct kf_entry *x = &f->t[i];

		if (x->kind == KF_FREE)
			return x;
		if (x->kind == kind && x->hash == h && same(f, x, e, tag, src, kind))
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

static void flush(struct kfold *f)
{
	unsigned left = f->n_used;
	size_t i;

	for (i = 0; i <= f->mask && left; i++) {
		struct kf_entry *x = &f->t[i];
		struct kfold_span sp = { x->count, x->first_ns, x->last_ns, x->kind == KF_MIXED,
					 false, x->kind == KF_MIXED && x->keys, f->per_cgroup,
					 f->keys_max, x->payload, NULL };

		if (x->kind == KF_FREE)
			continue;
		if (x->kind != KF_CGROUP && x->count)
			f->emit(f->ctx, &x->ev, &sp);
		drop(f, x);
		x->kind = KF_FREE; /* take() sets the rest */
		left--;
	}
	for (i = 0; i < KF_ANY_SLOTS; i++) {
		struct kf_entry *x = &f->any[i];
		struct kfold_span sp = { x->count, x->first_ns, x->last_ns, true, true, true,
					 f->per_cgroup, f->keys_max, x->payload, NULL };

		if (x->count) {
			/* a last slot may hold several kinds of its verdict */
			if (x->kind == KF_MIXED)
				x->ev.reason = EGR_REASON_NONE;
			f->emit(f->ctx, &x->ev, &sp);
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

	if (f->window_open && e->ts_ns >= f->window_start + KFOLD_WINDOW_MS * 1000000ull)
		flush(f);
	if (!f->window_open) {
		f->window_open = true;
		f->window_start = e->ts_ns;
	}
	h = hash_kind(f, e, tag, KF_EXACT);
	x = slot(f, e, tag, src, KF_EXACT, h);
	if (x->kind == KF_EXACT) {
		count(x, e);
		return;
	}
	hc = hash_kind(f, e, 0, KF_CGROUP);
	cg = slot(f, e, 0, NULL, KF_CGROUP, hc);
	if (cg->kind == KF_FREE && !claim(f, cg, e, 0, NULL, KF_CGROUP, hc)) {
		count_any(f, e, src);
		return;
	}
	if (cg->keys < f->per_cgroup && f->n_exact < f->keys_max && f->n_used < f->used_max) {
		/* cg's slot is taken, so x (a free slot probed before it was)
		 * may be cg now: look again */
		x = slot(f, e, tag, src, KF_EXACT, h);
		take(f, x, e, tag, src, KF_EXACT, h);
		f->n_exact++;
		f->n_used++;
		cg->keys++;
		f->emit(f->ctx, e,
			&(struct kfold_span){ 1, e->ts_ns, e->ts_ns, false, false, false, 0, 0,
					      x->payload, src });
		return;
	}
	h = hash_kind(f, e, 0, KF_MIXED);
	x = slot(f, e, 0, NULL, KF_MIXED, h);
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

void kfold_set_payload(struct kfold *f, void *(*dup)(void *src), void (*release)(void *payload),
		       bool (*equal)(const void *payload, const void *src))
{
	f->dup = dup;
	f->release = release;
	f->equal = equal;
}

uint64_t kfold_hash(const struct kfold *f, uint64_t h, const void *p, size_t len)
{
	uint64_t key[2] = { f->key[0] ^ h, f->key[1] };

	return kfold_siphash(key, p, len);
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

struct kfold *kfold_new(unsigned keys_per_cgroup, unsigned keys_max, kfold_emit_fn emit,
			void *ctx)
{
	struct kfold *f = calloc(1, sizeof(*f));
	size_t cap = 16;
	int err;

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
	/* blocking: before the pool is ready (early boot) this waits */
	for (;;) {
		ssize_t n = getrandom(f->key, sizeof(f->key), 0);

		if (n == (ssize_t)sizeof(f->key))
			break;
		if (n < 0 && errno == EINTR)
			continue;
		if (n >= 0)
			errno = EIO;
		err = errno;
		free(f->t);
		free(f);
		errno = err;
		return NULL; /* no key: an agent could aim collisions */
	}
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
