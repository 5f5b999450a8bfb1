/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * Prometheus metrics of the daemon (docs/daemon.md, "Metrics"): counters
 * fed by the audit tap (every decision record) from any thread with
 * relaxed atomics, no lock; gauges and kernel/DNS counters read when
 * scraped; a small HTTP/1.x server for GET /metrics in the text exposition
 * format 0.0.4, on TCP or a Unix socket, served from the daemon's main loop
 * without ever blocking it (non-blocking sockets, bounded requests, a time
 * limit per client, a bounded number of clients).
 */
#ifndef EGR_METRICS_H
#define EGR_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"
#include "audit.h"
#include "dnsproxy.h"

/* A client must send its request and read the answer within this. */
#define METRICS_CLIENT_MS 5000
#define METRICS_MAX_CLIENTS 16
#define METRICS_REQ_MAX 8192

/* What is read at scrape time rather than counted. */
struct metrics_snapshot {
	bool has_proxy;
	uint64_t active_conns;
	bool has_dns;
	struct dnsproxy_stats dns;
	bool has_kernel;
	uint64_t kernel[EGR_STAT_MAX]; /* egr_stats, per-CPU sums (enum egr_stat) */
	bool has_audit;
	uint64_t audit_write_errors;
};

struct proxy;
struct metrics;

int metrics_new(struct metrics **out);
void metrics_free(struct metrics *m); /* closes the listener; accepts NULL */

/* Count one decision record (the audit tap). Any thread, lock-free.
 * DNS records (origin "dns") are left to the DNS proxy's own counters. */
void metrics_count_record(struct metrics *m, const struct audit_record *r);
/* A configuration (re)load attempt and its outcome. Main thread. */
void metrics_reload_result(struct metrics *m, bool ok);

/* Where the scrape-time values come from; any may be NULL. */
void metrics_set_sources(struct metrics *m, struct proxy *proxy, struct dnsproxy *dns,
			 const char *pin_dir);
struct audit;
/* The audit log whose failed writes are counted (any may be NULL). */
void metrics_set_audit(struct metrics *m, struct audit *a);
/* Fill s from the sources (main thread). */
void metrics_collect(struct metrics *m, struct metrics_snapshot *s);
/* The exposition text: malloc'd, NUL-terminated, *len bytes; NULL on
 * allocation failure. */
char *metrics_render(const struct metrics *m, const struct metrics_snapshot *s, size_t *len);

/* Listen on unix_path (if not NULL: mode 0660, a stale socket file is
 * replaced, a live one refused with -EADDRINUSE) or on addr:port (port 0:
 * ephemeral, see metrics_port()). Non-blocking. */
int metrics_listen(struct metrics *m, const char *unix_path, const struct egr_addr *addr,
		   uint16_t port);
uint16_t metrics_port(const struct metrics *m);
/* An fd that is readable when metrics_handle() has work; -1 when not
 * listening. Poll it from the main loop. */
int metrics_fd(const struct metrics *m);
/* Accept, read, answer and expire clients; never blocks. Calling it when
 * nothing is ready is cheap (the daemon calls it on every loop turn so
 * that slow clients expire). */
void metrics_handle(struct metrics *m);

/* The HTTP request head in buf (complete: ends with an empty line):
 * 200 for GET/HEAD /metrics (query string ignored), 404 other paths, 405
 * other methods, 400 garbage. *head: HEAD (no body). */
int metrics_http_status(const char *buf, size_t len, bool *head);

#endif
