/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * TLS interception engine (issue 4). The TCP proxy decides, resolves and
 * connects as for any connection; for a host the policy marks "intercept"
 * it then hands both sockets here instead of splicing:
 *
 *   client TLS (leaf minted per SNI by ca.h, ALPN http/1.1 only)
 *     -> each request: httpreq.h framing + reqrule.h rules (Host == SNI,
 *        method/path, body size) -> credential headers injected
 *     -> upstream TLS (SNI = host, certificate and host name verified
 *        against the system store or the policy's upstream CA; a failure
 *        is a 502 to the client, never an unverified connection)
 *   one audit record per request.
 *
 * Runs its own thread(s) and loop(s) (loop.h); OpenSSL WANT_READ/WANT_WRITE
 * map onto epoll interest; a socket BIO of our own hands OpenSSL the
 * ClientHello the proxy already read first. Upstream sessions are cached
 * and resumed (only sessions of verified handshakes).
 */
#ifndef EGR_INTERCEPT_H
#define EGR_INTERCEPT_H

#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "audit.h"
#include "ca.h"
#include "config.h"
#include "egressd_shared.h"
#include "geo.h"
#include "policy.h"
#include "reqrule.h"

struct intercept;

struct intercept_params {
	const struct config *cfg;
	struct audit *audit;
	struct ca *ca;                 /* mints the leaves; must hold the key.
	                                * NULL: gateways only (a TLS take is
	                                * refused with -EINVAL) */
	/* Trust store for upstream certificates. Set: used for every
	 * connection (--upstream-ca). NULL: the connection's policy's
	 * upstream_ca if it has one, else the system store. A file that
	 * cannot be loaded means 502 for that connection's requests. */
	const char *upstream_ca_file;
	/* copies the name into buf (NUL-terminated) and returns buf, or NULL
	 * if the id is unknown; callable from any thread */
	const char *(*cgroup_name)(void *ctx, uint64_t cgroup_id, char *buf, size_t len);
	void *ctx;
};

/* cfg->workers threads (0 = one per core), each with its own loop.
 * params->ca must outlive the engine (leaves are minted from the workers). */
int intercept_create(struct intercept **out, const struct intercept_params *params);
int intercept_start(struct intercept *ic);
/* Mint the leaves of new TLS connections with ca from now on (a daemon
 * reload that changes the CA); NULL refuses new TLS takes. The old CA
 * must stay allocated until intercept_destroy(): connections in flight
 * hold its leaves. */
void intercept_set_ca(struct intercept *ic, struct ca *ca);
/* After config_set_live() on the engine's config (a daemon reload): every
 * worker takes the new handshake and idle timeouts at its next wakeup. */
void intercept_config_changed(struct intercept *ic);
/* Closes every connection (their pending requests are audited as
 * aborted) and joins the workers. Stop the proxy first: a take after
 * stop is refused with -ESHUTDOWN. */
void intercept_stop(struct intercept *ic);
void intercept_destroy(struct intercept *ic); /* accepts NULL; stops first */

struct intercept_conn_info {
	const struct egr_origin *origin;
	const char *host;              /* SNI, already allowed by policy */
	const struct reqrule_host *rules; /* from policy_intercept_for() */
	const struct policy *policy;   /* for the audit record's policy name */
	const char *rule;              /* text of the allow rule that matched */
	struct egr_addr upstream;      /* address cfd's peer is connected to */
	uint16_t upstream_port;
	const uint8_t *peeked;         /* bytes already read from the client */
	size_t peeked_len;             /* (the ClientHello) */
	/*
	 * Gateway mode (policy "gateways"): the client speaks plain HTTP to
	 * a loopback gateway address (origin->dst_addr/dst_port). host is
	 * the upstream's name (TLS SNI and verified certificate name, as
	 * for interception), upstream_port its port, rules the gateway's.
	 * Each request must be origin-form ("/path"; else 400) with a Host
	 * naming the gateway: the address the client connected to or
	 * "localhost", with the gateway's port (else 421: a page that
	 * rebinds its own name to the gateway address must not borrow the
	 * credential). The Host sent upstream is "host[:port]".
	 */
	bool gateway;
	/* GeoIP of upstream as the proxy looked it up (NULL: none), for the
	 * per-request audit records. Copied. */
	const struct geo_result *geo;
	bool geo_error;
	/* Called once, from any thread, when the connection really ends
	 * (also when intercept_take() fails): the proxy's connection counts
	 * follow the connection. NULL: nothing to call. */
	void (*release)(void *ctx, uint64_t cgroup_id);
	void *release_ctx;
};

/* Takes ownership of both fds in every case (closes them on error).
 * Thread-safe; copies everything in info it needs (the rules included, so
 * a policy reload does not pull them away). Before intercept_start() the
 * connection waits in its worker's queue. Audit: one record per request
 * (origin "intercept"; record.http: method, path without the query,
 * status, credential names, body sizes; detail only the reason of a
 * refusal or failure; rule = the request rule's name), and
 * one record for a connection that ended without any request. Gateway
 * connections are audited with origin "gateway" and no SNI. */
int intercept_take(struct intercept *ic, int client_fd, int upstream_fd,
		   const struct intercept_conn_info *info);

/*
 * The same hand-over without a thread of the process's descriptor table in
 * between, for a caller whose table is its own (fdbroker.h): the sockets
 * go straight to the engine worker with SCM_RIGHTS.
 *  - intercept_prepare() does what intercept_take() does, but for the
 *    sockets: *out is the connection, *worker the engine worker chosen
 *    (round robin). On failure info->release has run.
 *  - intercept_hand_sock(): that worker's hand-over socket, a descriptor of
 *    the process's table; import it once (fdbroker_import) and keep it.
 *  - intercept_hand_send() sends the connection and both sockets over the
 *    caller's copy. 0: the worker owns the connection and the sockets
 *    (the caller closes its own client_fd and upstream_fd); -errno
 *    (EAGAIN: the worker's queue is full): nothing was sent, the caller
 *    still owns the connection and its sockets.
 *  - intercept_hand_drop() frees a prepared connection that was not sent;
 *    with release its counts are released (info->release), without, the
 *    caller hands the sockets over another way (intercept_take).
 * A worker that receives the connection without its sockets (its table
 * full) audits it as refused.
 */
struct ic_conn;
int intercept_prepare(struct intercept *ic, const struct intercept_conn_info *info,
		      struct ic_conn **out, unsigned *worker);
unsigned intercept_workers(const struct intercept *ic);
int intercept_hand_sock(const struct intercept *ic, unsigned worker);
int intercept_hand_send(struct ic_conn *c, int sock, int client_fd, int upstream_fd);
void intercept_hand_drop(struct ic_conn *c, bool release);

/* The engine's live connections appended to *v (*n used of *cap
 * allocated; grown with realloc), as proxy_snapshot() lists the proxy's:
 * state "intercept" or "gateway", bytes as TLS crossed the agent's socket.
 * Thread-safe; ic may be NULL. 0 or -ENOMEM (*v keeps what it had). */
struct proxy_conn_info;
int intercept_snapshot(struct intercept *ic, struct proxy_conn_info **v, size_t *n,
		       size_t *cap);

#endif
