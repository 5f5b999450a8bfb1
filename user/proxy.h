/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * The transparent proxy: listeners on 127.0.0.1:P and [::1]:P (one
 * SO_REUSEPORT pair per worker thread, each worker its own epoll loop),
 * origin lookup in the kernel's egr_conns hash, ClientHello / HTTP head
 * peek, policy decision, asynchronous resolution (c-ares), upstream
 * connect, splice() relay, one audit record per connection.
 *
 * Lifecycle: proxy_create() binds (so the port is known and connections
 * queue before any thread runs), proxy_start() spawns the workers,
 * proxy_stop() asks them to finish and joins, proxy_destroy() frees.
 */
#ifndef EGR_PROXY_H
#define EGR_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "addr.h"
#include "audit.h"
#include "config.h"
#include "egressd_shared.h"
#include "policy.h"

struct proxy;

struct proxy_params {
	const struct config *cfg;
	/* Selects the policy for an origin (by cgroup id / policy_id).
	 * Returning NULL denies the connection (fail closed). */
	const struct policy *(*policy_for)(void *ctx, const struct egr_origin *o);
	/* cgroup path for audit records, may return NULL */
	/* copies the name into buf (NUL-terminated) and returns buf, or NULL
	 * if the id is unknown; callable from any thread */
	const char *(*cgroup_name)(void *ctx, uint64_t cgroup_id, char *buf, size_t len);
	void *ctx;
	int conns_map_fd;   /* egr_conns (struct egr_conn_key -> struct egr_origin) */
	struct audit *audit;
	/* Ports to listen on; 0 = pick an ephemeral port (same for v4 and v6). */
	uint16_t port;
	/* Addresses to listen on (default 127.0.0.1 and ::1). */
	const char *listen4;
	const char *listen6;
};

struct dnsproxy;

int proxy_create(struct proxy **out, const struct proxy_params *params);
/* A relayed connection holds two descriptors (pipes only while bytes are
 * in flight), and the usual soft RLIMIT_NOFILE of 1024 would cap egressd
 * at ~500 connections: raise the soft limit to the hard one. *orig (may be
 * NULL) receives the limit as it was, for children that must not inherit
 * the raised one. Returns the soft limit now in force. */
struct rlimit;
unsigned long proxy_raise_nofile(struct rlimit *orig);
/* Number of worker threads. */
unsigned proxy_workers(const struct proxy *p);
/* Port of the listeners (host byte order). */
uint16_t proxy_port(const struct proxy *p);
/* Listening on ::1 too (false if IPv6 is unavailable). */
int proxy_has_v6(const struct proxy *p);
/* DNS over TCP (original destination port 53) is handed to d; without
 * one such connections are denied. Call before proxy_start(). */
void proxy_set_dnsproxy(struct proxy *p, struct dnsproxy *d);
/* TLS connections to names the policy marks "intercept"
 * (policy_intercept_for()) are handed to ic after the upstream connect;
 * without one (or for plain HTTP) they are relayed as usual. Call before
 * proxy_start(). */
struct intercept;
void proxy_set_intercept(struct proxy *p, struct intercept *ic);
int proxy_start(struct proxy *p);
void proxy_stop(struct proxy *p);

/* After config_set_live() on p's config (a daemon reload): every worker
 * takes the new timeouts at its next wakeup (the limits are read on each
 * accept). */
void proxy_config_changed(struct proxy *p);

/* After audit_reopen(): workers with a descriptor table of their own
 * (fdbroker.h) move to the new file now, not at their next record. */
void proxy_audit_reopened(struct proxy *p);

/*
 * Listeners in other network namespaces (pods, netns.c): the programs
 * redirect to 127.0.0.1:P / [::1]:P of the socket's own namespace.
 * proxy_listen_here(): a listener pair on the proxy's addresses and port
 * in the calling thread's current network namespace (call it while
 * setns()ed there; any thread). *fd6 = -1 when ::1 is unavailable there.
 * proxy_add_listeners(): serve them on one worker (round robin over the
 * workers, one worker per namespace); takes ownership of the fds in every
 * case; returns the set's id (> 0) or -errno. proxy_remove_listeners():
 * that worker closes the set (accepted connections go on). Both from one
 * thread (the daemon's main thread) while the proxy runs.
 */
int proxy_listen_here(const struct proxy *p, int *fd4, int *fd6);
int proxy_add_listeners(struct proxy *p, int fd4, int fd6);
void proxy_remove_listeners(struct proxy *p, int id);
void proxy_destroy(struct proxy *p); /* accepts NULL */

/* One live connection as proxy_snapshot() saw it. Connections handed to
 * the DNS proxy or to TLS interception are no longer the proxy's and are
 * not listed. */
struct proxy_conn_info {
	struct timespec start;     /* CLOCK_REALTIME, accept time */
	unsigned worker;
	bool has_origin;           /* false: origin not looked up (yet) */
	uint64_t cgroup_id;
	uint32_t pid, uid;
	char comm[EGR_COMM_LEN + 1];
	struct egr_addr dst;       /* original destination */
	uint16_t dst_port;
	struct egr_addr peer;      /* the agent socket's address */
	uint16_t peer_port;
	char name[256];            /* SNI, Host or DNS-derived name; "" if none */
	const char *name_kind;     /* "sni", "host", "dns"; NULL if no name */
	const char *state;         /* "peek", "resolve", "connect", "relay", ... */
	enum egr_verdict verdict;  /* EGR_VERDICT_NONE until decided */
	enum egr_reason reason;
	char policy[72];           /* policy name, "" if none yet */
	bool has_resolved;
	struct egr_addr resolved;  /* upstream address */
	uint64_t bytes_up, bytes_down;
};

/* Copy the live connections of every worker into a new array (*out, to
 * free(); *n entries). Thread-safe: each worker's list is locked only for
 * the copy of its entries (the byte path never takes that lock). Fields
 * are a best-effort view of connections that keep running meanwhile. */
int proxy_snapshot(struct proxy *p, struct proxy_conn_info **out, size_t *n);
/* Connections accepted and not yet closed (any thread). */
unsigned proxy_active_conns(const struct proxy *p);

#endif
