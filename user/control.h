/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * The daemon's control socket for egressctl (protocol: docs/egressctl.md).
 * A Unix stream socket, 0600, in a directory created 0700; peers whose
 * SO_PEERCRED uid is not 0 get one error line and are closed.
 *
 * Served from the daemon's main loop: poll control_fd() and call
 * control_handle() (cheap when nothing is ready; call it on every loop
 * turn). Request/answer clients are served one at a time, each bounded in
 * time (CONTROL_CLIENT_MS), so the callbacks run on the main thread, never
 * concurrently with a SIGHUP reload or the cgroup watcher.
 *
 * `log` clients (egressctl log -f) stay connected as followers: the audit
 * tap (control_tap(), any thread) queues each record in a bounded queue
 * and wakes the main loop, which copies it into every matching follower's
 * bounded buffer and writes without blocking. A follower that falls
 * CONTROL_FOLLOW_BUF behind is told so and dropped; when the queue itself
 * is full, records are counted as lost and followers are told how many.
 * Nothing on the proxy's side ever waits for a follower.
 */
#ifndef EGR_CONTROL_H
#define EGR_CONTROL_H

#include <stddef.h>
#include <stdint.h>

#include "audit.h"
#include "dconfig.h"

struct config;
struct netns_info;
struct proxy_conn_info;

/* A client must send its request and read the answer within this. */
#define CONTROL_CLIENT_MS 2000
#define CONTROL_MAX_FOLLOWERS 16
#define CONTROL_FOLLOW_BUF (256 * 1024) /* unsent bytes per follower */
#define CONTROL_LOG_QUEUE 4096          /* records between tap and main loop */
#define CONTROL_CONNS_MAX 10000         /* connections listed per `conns` */

struct control_status {
	const struct dconfig *dc;  /* running configuration */
	const char *config_path;
	const char *pin_dir;
	uint16_t port;
	size_t n_cgroups;          /* cgroups watched below the attach points */
	size_t n_bound;            /* of those, bound to a policy by a binding */
	/* Other network namespaces (pods) with listeners (netns.h). */
	const struct netns_info *netns;
	size_t n_netns;
	/* The proxy's settings in force (a reload changes the live ones,
	 * config.h) and its number of worker threads; NULL: not reported. */
	const struct config *cfg;
	unsigned workers;
};

struct control_params {
	const char *path;          /* socket path (dconfig control_socket) */
	/* Counters come from this audit log (JSON or text lines), counted
	 * from its size at control_open; NULL (stdout): no counters. */
	const char *audit_path;
	/* pin_dir/egr_stats (kernel denials); NULL: not reported. */
	const char *pin_dir;
	/* Fill st (pointers must stay valid until the call returns). */
	int (*status)(void *ctx, struct control_status *st);
	/* Reload synchronously: 0, or -errno with the one-line reason
	 * ("FILE:LINE: FIELD: reason") in err. */
	int (*reload)(void *ctx, char *err, size_t errlen);
	/* Live connections (proxy_snapshot()); NULL: `conns` is refused. */
	int (*conns)(void *ctx, struct proxy_conn_info **out, size_t *n);
	/* cgroup path of an id for `conns`, may return NULL. */
	/* copies the name into buf (NUL-terminated) and returns buf, or NULL
	 * if the id is unknown; callable from any thread */
	const char *(*cgroup_name)(void *ctx, uint64_t cgroup_id, char *buf, size_t len);
	void *ctx;
	/* has_wake_fd: control_tap() wakes the main loop through this
	 * eventfd (the caller's, kept open until control_close) instead of
	 * one of its own. The daemon makes it before the proxy's workers
	 * start: a worker taps from a descriptor table that is a copy of the
	 * process's at its start (fdbroker.h), so a descriptor made later
	 * would not be there, or be another one. */
	bool has_wake_fd;
	int wake_fd;
};

struct control;

/* Create the directory (0700) if missing, refuse if a live daemon answers
 * on path, replace a stale socket, bind and listen (0600). */
int control_open(struct control **out, const struct control_params *p);
int control_fd(const struct control *c);
/* Accept and serve at most one client; never blocks longer than
 * CONTROL_CLIENT_MS. */
void control_handle(struct control *c);
/* Close and unlink the socket. Accepts NULL. No control_tap() may run
 * concurrently (stop the threads that write audit records first). */
void control_close(struct control *c);

/* The audit tap for `log` followers: any thread, never blocks; does
 * nothing while nobody follows. Accepts NULL. json: the record already
 * rendered by the audit file (audit_tap_fn), or NULL to render it here. */
void control_tap(struct control *c, const struct audit_record *r, const char *json);

#endif
