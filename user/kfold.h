/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * Kernel decisions folded for the audit log. A process makes refused
 * connect()s and sends as fast as the kernel answers them (hundreds of
 * thousands a second); a record each fills the disk at tens of MB/s. Per
 * window (KFOLD_WINDOW_MS):
 *
 *  - the first decision of its kind (verdict, reason, operation, protocol,
 *    cgroup, policy, process, destination) is written at once, as ever;
 *  - the same decision again is counted, and when the window ends one
 *    record stands for the repeats (its count, the first and last time);
 *  - past keys_per_cgroup kinds in a window (a sweep of ports or
 *    addresses, a fork per attempt), a cgroup's further new kinds are
 *    counted by verdict, reason, operation, protocol and policy alone, a
 *    record each at the window's end, without destination or process (so
 *    a decision made after that many others in a second is on record only
 *    as one of a count: the price of a bounded log);
 *  - likewise every cgroup's new kinds once the window holds keys_max
 *    kinds in all (the record says it was the table's limit);
 *  - past the table's room for those (cgroups x kinds), by verdict,
 *    reason, operation and protocol alone, the cgroup unknown; past a few
 *    such kinds, by verdict alone.
 *
 * Nothing is dropped here: the counts of the records made add up to the
 * decisions given. Not thread-safe: one thread's (the events thread in a
 * run, the main loop in the daemon, the DNS proxy's loop).
 */
#ifndef EGR_KFOLD_H
#define EGR_KFOLD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "egressd_shared.h"

#define KFOLD_WINDOW_MS 1000
#define KFOLD_KEYS_PER_CGROUP 1024
#define KFOLD_KEYS_MAX 8192

/* What one record stands for. */
struct kfold_span {
	uint64_t count;    /* decisions (>= 1) */
	uint64_t first_ns; /* bpf_ktime_get_ns() of the first and the last */
	uint64_t last_ns;
	/* destinations and processes vary: only the verdict, reason,
	 * operation, protocol, policy (and cgroup unless any_cgroup) of the
	 * event given are common to all */
	bool mixed;
	bool any_cgroup;
	bool table_full;     /* mixed by keys_max, not by the cgroup's own */
	unsigned per_cgroup; /* the limits */
	unsigned keys_max;
	/* dup's copy of the first src of its kind (NULL without dup, or if
	 * the copy could not be made) */
	void *payload;
	/* the record made at once: kfold_event_tagged's src; NULL for one
	 * made when the window ends */
	void *src;
};

typedef void (*kfold_emit_fn)(void *ctx, const struct egr_event *e, const struct kfold_span *sp);

struct kfold;

/* keys_per_cgroup, keys_max: 0 for the defaults (KFOLD_KEYS_PER_CGROUP,
 * KFOLD_KEYS_MAX). NULL with errno set: out of memory, or no random key
 * (getrandom). */
struct kfold *kfold_new(unsigned keys_per_cgroup, unsigned keys_max, kfold_emit_fn emit,
			void *ctx);
void kfold_free(struct kfold *f);

/* One decision from the ring: emitted now (count 1) if it is the first of
 * its kind in this window, else counted. Ends the window first if e is
 * past it. */
void kfold_event(struct kfold *f, const struct egr_event *e);

/* The same for decisions not from the kernel (DNS): tag is part of the
 * kind (a keyed hash of what the event does not hold: a name, a detail),
 * src what the emit callback needs to write the record; kept through the
 * window with dup (kfold_set_payload) when the kind is new. The type
 * field is the verdict's class for the last resort (its low two bits). */
void kfold_event_tagged(struct kfold *f, const struct egr_event *e, uint64_t tag, void *src);
/* equal (may be NULL): whether a kept payload and a new src are the same
 * kind (what the tag hashes), so that a tag's collision cannot merge two. */
void kfold_set_payload(struct kfold *f, void *(*dup)(void *src), void (*release)(void *payload),
		       bool (*equal)(const void *payload, const void *src));

/* Tags: SipHash-2-4 of bytes under the fold's random key, chained
 * through h (0 to start). */
uint64_t kfold_hash(const struct kfold *f, uint64_t h, const void *p, size_t len);
uint64_t kfold_siphash(const uint64_t key[2], const void *in, size_t len);

/* Ends the window if now_ns (CLOCK_MONOTONIC) is past it, or always with
 * force (exit): the counted decisions are emitted. Call it at least every
 * window (the events loop's tick). */
void kfold_tick(struct kfold *f, uint64_t now_ns, bool force);

/* A window is open: decisions in it, or counts not yet emitted. */
bool kfold_open(const struct kfold *f);

/* CLOCK_MONOTONIC in ns: bpf_ktime_get_ns()'s clock, for kfold_tick. */
uint64_t kfold_now_ns(void);

#endif
