/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * Asynchronous name resolution inside an event loop (c-ares). One resolver
 * per loop/thread; its sockets are registered with the loop through
 * ARES_OPT_SOCK_STATE_CB and its retransmission timer is a loop timer.
 *
 * The proxy resolves names itself with a trusted resolver (never the
 * agent's choice of address): servers come from /etc/resolv.conf, or from
 * a c-ares csv ("127.0.0.1:5353,[2001:db8::53]:53,192.0.2.53").
 */
#ifndef EGR_RESOLVER_H
#define EGR_RESOLVER_H

#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "loop.h"

#define RESOLVER_MAX_ADDRS 16

struct resolver;
struct resolver_query;

/* status: 0, or -ENOENT (no such name / no address), -ETIMEDOUT, -EIO.
 * addrs: IPv6 and IPv4 interleaved (v6, v4, v6, ...), at most
 * RESOLVER_MAX_ADDRS, deduplicated; valid only during the call. */
typedef void (*resolver_cb)(void *arg, int status, const struct egr_addr *addrs,
			    size_t n);

/* servers_csv: NULL = system configuration. timeout_ms bounds one lookup
 * (c-ares retries inside it). */
int resolver_create(struct resolver **out, struct loop *l, const char *servers_csv,
		    unsigned timeout_ms);
/* Pending lookups are dropped without calling their callbacks. */
void resolver_destroy(struct resolver *r); /* accepts NULL */

/* Start a lookup of name (A and AAAA). *handle is set before the lookup
 * starts, so a callback that runs synchronously (hosts file, immediate
 * failure) already sees it; the callback runs exactly once unless the query
 * is cancelled, and the handle is invalid once it has run. */
int resolver_lookup(struct resolver *r, const char *name, resolver_cb cb, void *arg,
		    struct resolver_query **handle);
/* The callback will not run; safe to free arg afterwards. */
void resolver_cancel(struct resolver_query *q);

/* Lookups started and not yet finished (including cancelled ones). */
size_t resolver_pending(const struct resolver *r);

/*
 * Answer cache (one per resolver, so per worker and lock-free): answers are
 * kept for the smallest TTL of the answer (addresses and CNAMEs), clamped
 * to [RESOLVER_TTL_MIN_MS, RESOLVER_TTL_MAX_MS]; "no such name" and "no
 * address" for RESOLVER_NEG_TTL_MS. Timeouts and server failures are never
 * cached. Lookups of a name already in flight join that query. A cache hit
 * calls back synchronously, inside resolver_lookup() (see its contract),
 * and sets *handle to NULL before doing so.
 */
#define RESOLVER_CACHE_DEFAULT 4096 /* names */
#define RESOLVER_TTL_MIN_MS 1000
#define RESOLVER_TTL_MAX_MS 300000
#define RESOLVER_NEG_TTL_MS 5000

struct resolver_stats {
	uint64_t hits;      /* answered from the cache */
	uint64_t misses;    /* sent upstream */
	uint64_t coalesced; /* joined a query in flight */
	uint64_t evictions; /* dropped for room before they expired */
	size_t entries;     /* names cached or in flight */
};

/* Bound the cache to max_names (0 = no caching; in-flight lookups are
 * still shared). Shrinking evicts at once. */
void resolver_set_cache_size(struct resolver *r, size_t max_names);
void resolver_get_stats(const struct resolver *r, struct resolver_stats *st);

/*
 * Connect outcome memory (the "remember what failed" part of Happy
 * Eyeballs, RFC 8305 section 4): a name with an AAAA record whose server
 * only listens on IPv4 (or an unreachable v6 path) would otherwise cost
 * every connection a failed connect first. Per resolver, so per worker.
 */
#define RESOLVER_FAIL_MEMORY_MS 60000
#define RESOLVER_FAIL_SLOTS 256

/* Connecting to a:port failed (refused, unreachable, timed out). */
void resolver_note_connect_failure(struct resolver *r, const struct egr_addr *a,
				   uint16_t port);
/* Stable reorder: addresses that failed on port within the last
 * RESOLVER_FAIL_MEMORY_MS go last, the others keep their order. Nothing is
 * dropped: a remembered failure only costs its place in the queue. */
void resolver_order_candidates(struct resolver *r, struct egr_addr *addrs, size_t n,
			       uint16_t port);

#endif
