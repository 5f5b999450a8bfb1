/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * The DNS proxy: every DNS query from an enforced cgroup ends up here (UDP
 * port 53 via the connect/sendmsg hooks, TCP port 53 via the TCP proxy),
 * whichever server the agent asked. Names the cgroup's policy allows are
 * forwarded to the trusted upstream (c-ares, the daemon's resolv.conf or
 * --dns-server); every other name is answered NXDOMAIN and never leaves
 * the host, which closes DNS tunnelling. Addresses handed out for allowed
 * names are remembered per cgroup with their TTL, so that rules for ports
 * without SNI/Host (github.com:22) can be enforced by address.
 *
 * Runs its own thread and event loop (loop.h).
 */
#ifndef EGR_DNSPROXY_H
#define EGR_DNSPROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "addr.h"
#include "audit.h"
#include "config.h"
#include "egressd_shared.h"
#include "policy.h"

struct dnsproxy;

struct dnsproxy_params {
	const struct config *cfg;
	/* Same contract as struct proxy_params. */
	const struct policy *(*policy_for)(void *ctx, const struct egr_origin *o);
	/* copies the name into buf (NUL-terminated) and returns buf, or NULL
	 * if the id is unknown; callable from any thread */
	const char *(*cgroup_name)(void *ctx, uint64_t cgroup_id, char *buf, size_t len);
	/* Who sent a datagram: peer is the agent socket's address, local the
	 * address it was sent to (our listener). Fills *o (cgroup_id, tgid,
	 * comm, original server in dst_addr/dst_port...). Returns 0, or
	 * -ENOENT: then the query is refused (REFUSED, logged no_origin). */
	int (*origin_for_udp)(void *ctx, const struct sockaddr *peer, socklen_t peer_len,
			      struct egr_origin *o);
	/* Optional, for each query over a TCP connection, whose origin was
	 * recorded once, when it was accepted: bring o->policy_id up to the
	 * cgroup's binding now (a connection outlives reloads). */
	void (*origin_refresh)(void *ctx, struct egr_origin *o);
	void *ctx;
	struct audit *audit;
	/* UDP port to listen on at 127.0.0.1 and ::1; 0 = ephemeral. The TCP
	 * proxy's port number is the natural choice (separate port spaces). */
	uint16_t port;
	/* Upstream resolvers, c-ares csv ("192.0.2.53,[2001:db8::53]:53");
	 * NULL = /etc/resolv.conf. */
	const char *upstream;
	/* (cgroup, address) pairs remembered for dnsproxy_name_for_addr(),
	 * shared fairly among tenants; 0 = 65,536 (tests set fewer). */
	size_t mem_max;
};

int dnsproxy_create(struct dnsproxy **out, const struct dnsproxy_params *params);
uint16_t dnsproxy_port(const struct dnsproxy *d);
int dnsproxy_has_v6(const struct dnsproxy *d);
int dnsproxy_start(struct dnsproxy *d);
void dnsproxy_stop(struct dnsproxy *d);
void dnsproxy_destroy(struct dnsproxy *d); /* accepts NULL */

/*
 * UDP listeners in other network namespaces (pods, netns.c), as
 * proxy_listen_here()/proxy_add_listeners() for the TCP proxy.
 * dnsproxy_listen_here(): 127.0.0.1:P (and [::1]:P if available, else
 * *fd6 = -1) plus a sock_diag socket (*diag), all in the calling thread's
 * current network namespace. dnsproxy_add_listeners() takes ownership of
 * the three fds in every case; returns the set's id (> 0) or -errno.
 * dnsproxy_remove_listeners() stops reading them; they are closed once no
 * query that came through them waits for an answer. Main thread only.
 */
int dnsproxy_listen_here(const struct dnsproxy *d, int *fd4, int *fd6, int *diag);
int dnsproxy_add_listeners(struct dnsproxy *d, int fd4, int fd6, int diag);
void dnsproxy_remove_listeners(struct dnsproxy *d, int id);

/* DNS over TCP: the TCP proxy hands over an accepted agent connection
 * whose original destination port is 53 (origin already looked up).
 * Takes ownership of fd in every case. Thread-safe. */
int dnsproxy_take_tcp(struct dnsproxy *d, int fd, const struct egr_origin *o);

/* Was address a handed out to cgroup_id as an answer for an allowed name
 * (and its TTL has not run out)? Fills name (the name the agent asked,
 * not a CNAME target). Thread-safe; called from the TCP proxy workers. */
bool dnsproxy_name_for_addr(struct dnsproxy *d, uint64_t cgroup_id,
			    const struct egr_addr *a, char *name, size_t len);

/* Queries answered since dnsproxy_create() (one per audit record of
 * origin "dns"). Any thread; no lock. */
struct dnsproxy_stats {
	uint64_t queries[4];        /* by enum egr_verdict (none, allow, deny, audit) */
	uint64_t udp, tcp;          /* by transport */
	uint64_t upstream_failures; /* allowed names the upstream did not answer */
};
void dnsproxy_stats(const struct dnsproxy *d, struct dnsproxy_stats *out);

#endif
