// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * c-ares inside our event loop. c-ares tells us which sockets it wants
 * watched (sock_state_cb) and we hand events back with ares_process_fd();
 * its retransmission deadline (ares_timeout) is one "at" timer of the loop.
 *
 * Cancellation: every lookup owns a small struct resolver_query that lives
 * until c-ares calls back. Cancelling only clears the user callback, so a
 * connection that closes while its lookup is in flight is never touched
 * again, and c-ares still finds valid memory when the answer (or the
 * timeout) arrives.
 */
#include <arpa/inet.h>
#include <ares.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "resolver.h"

struct resolver {
	struct loop *loop;
	ares_channel channel;
	struct loop_timer timer;
	size_t pending;
	bool destroying;
};

struct resolver_query {
	struct resolver *r;
	resolver_cb cb; /* NULL once cancelled */
	void *arg;
};

static void resolver_arm_timer(struct resolver *r);

static void resolver_fd_cb(struct loop *l, int fd, void *data, int events)
{
	struct resolver *r = data;
	ares_socket_t rfd = ARES_SOCKET_BAD, wfd = ARES_SOCKET_BAD;

	/* Errors and hangups surface through a read. */
	if (events & (LOOP_READ | LOOP_ERR | LOOP_HUP))
		rfd = fd;
	if (events & LOOP_WRITE)
		wfd = fd;
	ares_process_fd(r->channel, rfd, wfd);
	resolver_arm_timer(r);
}

static void resolver_sock_state_cb(void *data, ares_socket_t fd, int readable,
				   int writable)
{
	struct resolver *r = data;
	int mask = (readable ? LOOP_READ : 0) | (writable ? LOOP_WRITE : 0);
	int err;

	if (!readable && !writable) {
		loop_del(r->loop, fd);
		return;
	}
	err = loop_add(r->loop, fd, mask, resolver_fd_cb, r);
	if (err)
		/* The lookup will then time out: fail closed, loudly. */
		log_error("resolver: cannot watch socket %d: %s", fd, strerror(-err));
}

static void resolver_timer_cb(struct loop *l, struct loop_timer *t)
{
	struct resolver *r = t->data;

	ares_process_fd(r->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	resolver_arm_timer(r);
}

static void resolver_arm_timer(struct resolver *r)
{
	struct timeval tvbuf, *tv;
	uint64_t ms;

	if (r->destroying)
		return;
	tv = ares_timeout(r->channel, NULL, &tvbuf);
	if (!tv) {
		loop_timer_stop(&r->timer);
		return;
	}
	/* Round up so that we never wake up just before the deadline. */
	ms = (uint64_t)tv->tv_sec * 1000 + ((uint64_t)tv->tv_usec + 999) / 1000;
	loop_timer_start_at(r->loop, &r->timer, loop_update_time(r->loop) + ms,
			    resolver_timer_cb);
}

int resolver_create(struct resolver **out, struct loop *l, const char *servers_csv,
		    unsigned timeout_ms)
{
	struct ares_options opts = { 0 };
	struct resolver *r;
	int optmask, st;

	r = calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->loop = l;
	r->timer.data = r;
	if (!timeout_ms)
		timeout_ms = 5000;
	optmask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES |
		  ARES_OPT_DOMAINS;
	opts.sock_state_cb = resolver_sock_state_cb;
	opts.sock_state_cb_data = r;
	/* Two tries per server within the lookup budget; the caller's own
	 * deadline still bounds the whole lookup. */
	opts.timeout = timeout_ms / 3 > 100 ? (int)(timeout_ms / 3) : 100;
	opts.tries = 2;
	/* No search domains: SNI/Host is a fully qualified name and must be
	 * resolved as given, never as name.corp.example. */
	opts.domains = NULL;
	opts.ndomains = 0;
	st = ares_init_options(&r->channel, &opts, optmask);
	if (st != ARES_SUCCESS) {
		log_error("resolver: ares_init_options: %s", ares_strerror(st));
		free(r);
		return -EIO;
	}
	if (servers_csv && *servers_csv) {
		st = ares_set_servers_ports_csv(r->channel, servers_csv);
		if (st != ARES_SUCCESS) {
			log_error("resolver: DNS servers '%s': %s", servers_csv,
				  ares_strerror(st));
			ares_destroy(r->channel);
			free(r);
			return -EINVAL;
		}
	}
	*out = r;
	return 0;
}

void resolver_destroy(struct resolver *r)
{
	if (!r)
		return;
	r->destroying = true;
	loop_timer_stop(&r->timer);
	/* Calls every pending callback with ARES_EDESTRUCTION (they free their
	 * queries) and sock_state_cb for every socket (they leave the loop). */
	ares_destroy(r->channel);
	free(r);
}

size_t resolver_pending(const struct resolver *r)
{
	return r->pending;
}

static int status_to_errno(int status)
{
	switch (status) {
	case ARES_ENOTFOUND:
	case ARES_ENODATA:
	case ARES_ENONAME:
		return -ENOENT;
	case ARES_ETIMEOUT:
		return -ETIMEDOUT;
	case ARES_ENOMEM:
		return -ENOMEM;
	case ARES_ECANCELLED:
	case ARES_EDESTRUCTION:
		return -ECANCELED;
	default:
		return -EIO;
	}
}

static bool addr_seen(const struct egr_addr *list, size_t n, const struct egr_addr *a)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!memcmp(list[i].b, a->b, sizeof(a->b)))
			return true;
	return false;
}

static void resolver_addrinfo_cb(void *arg, int status, int timeouts,
				 struct ares_addrinfo *res)
{
	struct resolver_query *q = arg;
	struct resolver *r = q->r;
	struct egr_addr v4[RESOLVER_MAX_ADDRS], v6[RESOLVER_MAX_ADDRS];
	struct egr_addr out[RESOLVER_MAX_ADDRS];
	size_t n4 = 0, n6 = 0, n = 0, i4 = 0, i6 = 0;
	struct ares_addrinfo_node *node;
	resolver_cb cb = q->cb;
	void *cb_arg = q->arg;

	r->pending--;
	free(q);
	if (res && status == ARES_SUCCESS) {
		for (node = res->nodes; node; node = node->ai_next) {
			struct egr_addr a;
			uint16_t port;

			if (!node->ai_addr || addr_from_sockaddr(&a, &port, node->ai_addr))
				continue;
			if (node->ai_family == AF_INET6 && n6 < RESOLVER_MAX_ADDRS &&
			    !addr_seen(v6, n6, &a))
				v6[n6++] = a;
			else if (node->ai_family == AF_INET && n4 < RESOLVER_MAX_ADDRS &&
				 !addr_seen(v4, n4, &a))
				v4[n4++] = a;
		}
	}
	if (res)
		ares_freeaddrinfo(res);
	if (!cb || r->destroying)
		return;
	/* Happy-eyeballs-ish order: v6, v4, v6, v4, ... so that a host
	 * without IPv6 connectivity loses one fast failure, not all. */
	while (n < RESOLVER_MAX_ADDRS && (i6 < n6 || i4 < n4)) {
		if (i6 < n6)
			out[n++] = v6[i6++];
		if (n < RESOLVER_MAX_ADDRS && i4 < n4)
			out[n++] = v4[i4++];
	}
	if (status == ARES_SUCCESS && !n)
		status = ARES_ENODATA;
	cb(cb_arg, status == ARES_SUCCESS ? 0 : status_to_errno(status), out, n);
}

int resolver_lookup(struct resolver *r, const char *name, resolver_cb cb, void *arg,
		    struct resolver_query **handle)
{
	struct ares_addrinfo_hints hints = {
		.ai_family = AF_UNSPEC,
		.ai_socktype = SOCK_STREAM,
		/* We order the answers ourselves; c-ares' RFC 6724 sort costs
		 * one UDP socket + connect() per address. */
		.ai_flags = ARES_AI_NOSORT,
	};
	struct resolver_query *q;

	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->r = r;
	q->cb = cb;
	q->arg = arg;
	r->pending++;
	*handle = q;
	ares_getaddrinfo(r->channel, name, NULL, &hints, resolver_addrinfo_cb, q);
	/* q may be gone here (answered from the hosts file or failed). */
	resolver_arm_timer(r);
	return 0;
}

void resolver_cancel(struct resolver_query *q)
{
	if (q)
		q->cb = NULL;
}
