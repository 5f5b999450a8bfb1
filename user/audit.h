/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * Audit sink: one record per connection (and per kernel denial), text or
 * JSON lines, to its own file (never mixed into diagnostics unless the
 * user asks for stderr). Thread-safe. Also keeps the set of denied
 * destinations for the summary printed when `egressd run` ends.
 */
#ifndef EGR_AUDIT_H
#define EGR_AUDIT_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include "addr.h"
#include "egressd_shared.h"

enum audit_format {
	AUDIT_TEXT = 0,
	AUDIT_JSON = 1,
};

struct audit_record {
	struct timespec start;  /* CLOCK_REALTIME */
	struct timespec end;
	const char *cgroup;     /* cgroup path, may be NULL */
	uint64_t cgroup_id;
	uint32_t pid;           /* tgid of the process that connected */
	uint32_t uid;
	char comm[EGR_COMM_LEN + 1];
	int proto;              /* IPPROTO_TCP / IPPROTO_UDP */
	bool has_dst;
	struct egr_addr dst;    /* original destination */
	uint16_t dst_port;
	const char *sni;        /* SNI from the ClientHello, NULL if none */
	const char *host;       /* HTTP Host, NULL if none */
	const char *alpn;       /* NULL if none */
	bool ech;
	bool kernel_relay;       /* bytes went socket to socket in the kernel */
	bool has_resolved;
	struct egr_addr resolved; /* address the proxy connected to */
	enum egr_verdict verdict;
	enum egr_reason reason;
	const char *rule;       /* text of the rule that matched, NULL if none */
	const char *policy;     /* policy name */
	const char *origin;     /* "kernel" or "proxy" */
	uint64_t bytes_up;      /* agent -> upstream */
	uint64_t bytes_down;    /* upstream -> agent */
	const char *detail;     /* free text (error), NULL if none */
	/* GeoIP of the upstream address (resolved, or dst for address rules;
	 * docs/geoip.md). NULL/""/0: unknown, left out of the record. */
	const char *country;    /* ISO 3166-1 alpha-2 */
	uint32_t asn;
	const char *as_org;
	bool geo_error;         /* a database reported an error for it */
	/* Decisions this record stands for: 0 or 1 one; more for kernel
	 * decisions folded (kfold.h), from start to end. */
	uint64_t count;
	/* Only in the audit file: not on stderr, not in the exit summary
	 * (e.g. glibc's UDP connect() probes for address sorting). */
	bool quiet;
	/*
	 * One HTTP request under TLS interception or gateway mode
	 * (docs/interception.md, "Audit records"): JSON object "http", text
	 * fields method= path= status= creds= req_body= resp_body=. method
	 * NULL: not a request record, nothing written. Never a header value.
	 */
	struct audit_http {
		const char *method;
		const char *path;       /* normalized, query string dropped */
		int status;             /* status answered, 0 if none */
		const char *creds;      /* names (not values) of the credentials
		                         * injected, comma-separated; NULL: none */
		uint64_t req_body;      /* request body bytes (de-framed) */
		uint64_t resp_body;     /* response body bytes (de-framed) */
	} http;
};

struct audit_options {
	const char *path;          /* NULL: no per-connection log file */
	/* path NULL: the records go to standard output instead (the daemon:
	 * journald, kubectl logs). Not reopened by audit_reopen(). */
	bool to_stdout;
	enum audit_format format;
	/* Also print denials as one text line each to stderr. */
	bool denials_to_stderr;
};

struct audit;

int audit_open(struct audit **out, const struct audit_options *opts);
void audit_close(struct audit *a); /* accepts NULL */
void audit_write(struct audit *a, const struct audit_record *r);
/* Writes that failed (a full disk, an I/O error): their records are lost.
 * Any thread. */
uint64_t audit_write_errors(struct audit *a);
/* Reopen the file (log rotation). */
int audit_reopen(struct audit *a);
/* The calling thread has just taken a descriptor table of its own
 * (fdbroker.h): from now on it writes a's records through a handle in
 * that table, renewed after each audit_reopen(). audit_thread_end()
 * before the thread ends. */
void audit_thread_private(struct audit *a);
/* In such a thread: move to the file audit_reopen() opened now, rather
 * than at its next record (an idle thread would hold a rotated-away file
 * open). */
void audit_thread_refresh(struct audit *a);
/* Batch this thread's records for a (when it writes to a regular file):
 * audit_write() keeps their lines in a buffer of the thread's (64 KiB),
 * audit_thread_flush() writes them with one write(). For threads that run an event loop, which calls the flush
 * before every wait (loop_set_before_wait): a record reaches the file at
 * the end of the pass that made it, not one write() per record. A record
 * that does not fit, or a thread whose buffer could not be allocated, is
 * written at once. Denials reach stderr and the summary at once either
 * way, and the tap sees every record when it is made. */
void audit_thread_batch(struct audit *a);
void audit_thread_flush(void);
/* Flushes the batch and drops it, and the private-table handle. */
void audit_thread_end(void);

/* A tap sees every record audit_write() gets (file or not), before it is
 * written, on the writer's thread (proxy workers, the DNS proxy, the main
 * thread), outside the audit lock, and possibly concurrently: it must be
 * thread-safe and must never block (the daemon counts metrics and feeds
 * `egressctl log -f` from it). Set it before any writer thread starts.
 * json is the line the JSON audit file gets (audit_record_json's text)
 * when there is one, rendered once for both; NULL otherwise. */
typedef void (*audit_tap_fn)(void *ctx, const struct audit_record *r, const char *json);
void audit_set_tap(struct audit *a, audit_tap_fn fn, void *ctx);
/* The record as the JSON audit format writes it: one compact object, no
 * newline; malloc'd (free()), NULL on allocation failure. */
char *audit_record_json(const struct audit_record *r);

/* One-screen summary of denied destinations with the --allow that would
 * admit each; prints nothing if there were none. */
void audit_print_summary(struct audit *a, FILE *out);

const char *egr_reason_name(enum egr_reason r);
const char *egr_verdict_name(enum egr_verdict v);

#endif
