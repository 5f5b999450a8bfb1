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

#endif
