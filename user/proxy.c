// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * The transparent proxy (interface in proxy.h).
 *
 * Threads: N workers, each with its own epoll loop (loop.h), its own c-ares
 * resolver (resolver.h) and its own SO_REUSEPORT listeners on 127.0.0.1:P
 * and [::1]:P; the kernel spreads connections over the workers. Nothing on
 * the per-byte path is shared; only the per-cgroup connection counters
 * (accept and close) take a mutex.
 *
 * Each worker also has a descriptor table of its own (fdbroker.h), taken
 * as it starts: RLIMIT_NOFILE bounds each worker, not the process, and a
 * connection's sockets exist in its worker only. The rule that comes with
 * it: a worker uses a descriptor number of the process only if it existed
 * before proxy_start() returned. Anything made later (pods' listeners, the
 * kernel relay's maps, a reopened audit file) comes in through p->fdb or
 * is opened by the worker itself, and sockets handed to other threads
 * (interception, DNS over TCP) go out through it.
 *
 * Connection state machine (one struct conn per accepted socket):
 *
 *   ACCEPTED  origin lookup: egr_conns[{netns cookie, peer addr, peer port}]
 *      |      (lookup-and-delete). No origin -> deny NO_ORIGIN: a process
 *      |      outside an enforced cgroup must not use us as an open relay.
 *      |      No policy -> NO_POLICY. Limits -> CONN_LIMIT. Original
 *      |      destination = a configured DNS server, port 53 -> allow (DNS),
 *      |      straight to CONNECT.
 *      v
 *   PEEK      read the first bytes (buffer grows up to HELLO_MAX_BYTES):
 *      |      TLS -> hello_parse (SNI, ALPN, ECH), HTTP -> http_head_parse
 *      |      (Host), anything else -> no name. Server-speaks-first
 *      |      protocols (ssh, smtp): if nothing arrives within 300 ms and an
 *      |      IP rule allows the original destination, go on without a
 *      |      name. Peek timeout: PEEK_TIMEOUT (bytes seen) / NO_NAME (none).
 *      v
 *   DECIDE    name: invalid -> BAD_NAME; domain rules; no domain rule
 *      |      matched -> IP rules on the ORIGINAL address (then connect
 *      |      there). No name: IP rules on the original address, NO_NAME
 *      |      if none allows. Audit mode: a deny is logged as "audit" and the
 *      |      connection proceeds as if allowed.
 *      v
 *   RESOLVE   (domain rules only) the name is resolved by us, never taken
 *      |      from the agent. Answers that are not public unless a CIDR rule
 *      |      names them, and answers a deny CIDR covers, are dropped:
 *      |      PRIVATE_ADDR / RULE_DENY / RESOLVE when nothing is left.
 *      v
 *   CONNECT   non-blocking connect to each candidate in turn (v6/v4
 *      |      interleaved), connect_timeout_ms each; all failed -> UPSTREAM.
 *      |      GeoIP first: a candidate whose country is denied or whose ASN
 *      |      the matching rule does not list is skipped; all -> GEO.
 *      v
 *   FLUSH     write the peeked bytes upstream, free the peek buffer.
 *      v
 *   RELAY     splice() through a pipe per direction (zero copy), full
 *      |      duplex: a direction reads its source while its pipe has room
 *      |      and drains the pipe into the destination in the same pass;
 *      |      the pipe is held only while bytes sit in it (level-triggered).
 *      |      EOF -> shutdown(SHUT_WR) on the other side once the pipe is
 *      |      empty; both directions finished -> close. Error -> close, and
 *      |      reset the other side (SO_LINGER 0) so its peer sees a failure.
 *      |      Idle timeout: no byte either way for idle_timeout_ms (checked
 *      |      lazily, so the effective bound is between 1x and 2x).
 *      v
 *   CLOSED    exactly one audit record per accepted connection.
 *
 * Handlers never free a connection: they set close_scheduled, and the
 * outermost entry point (fd event, timer, resolver callback) frees it when
 * it unwinds (conn_enter/conn_leave nesting count).
 *
 * Deny behaviour -- the client fails fast, it never hangs:
 *  - TLS: a fatal alert record (access_denied(49), or internal_error(80)
 *    when resolution/upstream failed), record version 0x0303, then FIN;
 *  - plain HTTP: "HTTP/1.1 403 Forbidden" (502 for resolution/upstream
 *    failures) with Connection: close and a one-line text body
 *    "egressd: <host>:<port> denied: <reason>";
 *  - anything else (and no origin, limits): RST (SO_LINGER {1, 0}).
 */
#include <arpa/inet.h>
#include <ares.h>
#include <bpf/bpf.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "hello.h"
#include "httphead.h"
#include "httpstream.h"
#include "log.h"
#include "loop.h"
#include "dnsproxy.h"
#include "fdbroker.h"
#include "geo.h"
#include "intercept.h"
#include "proxy.h"
#include "resolver.h"
#include "splice.skel.h"
#include "tcpinfo.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

#define PROXY_FIRST_BYTE_MS 300 /* server-speaks-first grace */
#define PROXY_GRACE_MS 1000     /* proxy_stop(): live connections' last second */
#define PROXY_ACCEPT_PAUSE_MS 100 /* after EMFILE/ENFILE/ENOMEM */
#define PROXY_ACCEPT_BATCH 64
/* 1 MiB (fs.pipe-max-size's default): a bulk direction moves up to 1 MiB
 * per splice pair and wakeup. Pipes are held only while bytes are in
 * flight, and a refused size keeps the kernel's default. */
#define PROXY_PIPE_SIZE (1024 * 1024)
#define PROXY_PIPE_POOL 32      /* spare pipes per worker */
#define PROXY_DRAIN_MS 2        /* kernel relay: re-check a FIN waiting for bytes */
#define PROXY_PEEK_INITIAL 4096
#define PROXY_RELAY_BUDGET (1024 * 1024) /* per direction and wakeup: fairness */
/* Reads up to this are copied (recv/send), larger backlogs spliced. 64 KiB:
 * most wakeups of a bulk transfer find less than that queued, and two
 * copies of it cost less than splice in, splice out and the probe that
 * tells a dry source from a pipe out of slots; with 16 KiB every such
 * wakeup spliced. It is also what an empty default pipe holds, so a short
 * send always parks (relay_park). */
#define PROXY_COPY_MAX (64 * 1024)
#define PROXY_MAX_WORKERS 256
#define CG_BUCKETS 256

enum conn_state {
	CONN_ACCEPTED,
	CONN_PEEK,
	CONN_DECIDE,
	CONN_RESOLVE,
	CONN_CONNECT,
	CONN_FLUSH,
	CONN_RELAY,
	CONN_CLOSED,
};

enum peek_proto {
	PROTO_UNKNOWN = 0,
	PROTO_TLS,
	PROTO_HTTP,
};

enum conn_side {
	SIDE_CLIENT = 0,
	SIDE_UPSTREAM = 1,
};

/* Result classes of read/write/splice (HAProxy raw_sock style). */
enum io_class {
	IO_DATA,
	IO_EOF,
	IO_AGAIN, /* re-arm and wait */
	IO_INTR,  /* retry now */
	IO_ERROR, /* errno holds the error */
};

struct relay_pipe {
	int rfd, wfd;
	size_t len; /* bytes sitting in the pipe */
	size_t cap;
};

struct relay_dir {
	struct relay_pipe pipe;
	bool src_eof;  /* source sent FIN */
	bool dst_shut; /* FIN forwarded to the destination */
	bool pipe_full; /* source readable but the pipe has no free slot */
	bool hold;      /* not read: the kernel relay takes over once the
			 * pipes are empty */
};

enum { DIR_UP = 0, DIR_DOWN = 1 };

struct worker;

struct conn {
	struct worker *w;
	struct conn *prev, *next;
	enum conn_state state;
	bool close_scheduled;
	int busy; /* entry points on the stack */
	int cfd, ufd;
	uint64_t netns_cookie; /* of the listener that accepted; 0: ask cfd */

	struct timespec start;
	struct egr_origin origin;
	bool has_origin;
	bool counted_cgroup;
	bool counts_moved; /* the engine gives the counts back (hand-off) */
	bool handed_off; /* the fd(s) went to the DNS proxy / interception */
	struct egr_addr peer;
	uint16_t peer_port;
	struct egr_addr orig; /* original destination */
	uint16_t orig_port;
	const struct policy *policy;

	/* peek */
	uint8_t *buf;
	size_t buf_len, buf_cap, buf_off;
	enum peek_proto proto;
	bool c_eof; /* client FIN seen while peeking */
	char name[256];
	char dns_name[256]; /* no SNI/Host: the name the DNS proxy answered
			     * with this address to this cgroup */
	bool name_valid;
	bool name_is_addr; /* HTTP Host is an address (http://192.0.2.7/):
			    * address rules decide, as without a name */
	bool ech;
	char alpn[256];

	/* decision */
	const struct reqrule_host *icpt; /* TLS to an intercepted name */
	struct httpstream *hs; /* plain HTTP allowed by name: the client's
				* later requests must name it too */
	bool watch_first; /* admitted by the DNS memory before the client
			   * spoke: its first bytes must name nothing */
	bool tunnel_watch; /* plain HTTP after an Upgrade/CONNECT request:
			    * no later request line may follow (the server
			    * may not have switched) */
	uint8_t tw_carry[8]; /* the stream's last bytes, across reads */
	uint8_t tw_len;
	const struct policy_gateway *gw; /* plain HTTP to a gateway address */
	uint16_t up_port; /* port to connect to: orig_port, or the gateway's
			   * upstream port */
	enum egr_verdict verdict;
	enum egr_reason reason;
	const struct policy_rule *rule;

	/* resolve + connect */
	struct resolver_query *q;
	struct egr_addr cands[RESOLVER_MAX_ADDRS];
	size_t n_cands, cand_idx;
	struct egr_addr resolved;
	bool has_resolved;
	/* GeoIP of resolved, looked up once per candidate (docs/geoip.md) */
	struct geo_result geo;
	bool has_geo, geo_error;
	size_t n_geo_refused; /* candidates skipped for their country/ASN */

	/* relay */
	struct relay_dir dir[2];
	uint64_t bytes_up, bytes_down;
	uint64_t last_active_ms;

	/* kernel relay (krelay_*): both sockets in egr_splice */
	bool krelay;
	bool krelayed;         /* it was, at some point (audit) */
	bool kbroken;          /* the verdict could not pass bytes on */
	bool ktried;           /* one hand-over per connection: a refused one
				* (peer's FIN in flight, map full) would
				* otherwise be retried after every splice */
	uint64_t kcookie[2];   /* socket cookies, [SIDE_CLIENT] and [SIDE_UPSTREAM] */
	uint64_t kbase[2];     /* what each socket had taken for sending then */
	uint64_t ktaken[2];    /* ... and last seen, to tell a drain's progress */
	uint64_t kprogress_ms; /* when a draining direction last moved */

	struct loop_timer timer;      /* state deadline: peek/resolve/connect/idle */
	struct loop_timer first_timer; /* 300 ms first byte */

	bool rst_client, rst_upstream;
	int err;
	char detail[160];
};

/* A listener pair in a pod's network namespace (netns.c). Owned by the
 * worker serving it; the main thread only posts mailbox requests. */
struct extra_lset {
	struct extra_lset *next;
	int id, fd4, fd6;
};

struct extra_req {
	int id, fd4, fd6; /* fd4 < 0: remove set id */
	bool audit_reopened; /* only this: proxy_audit_reopened() */
	bool config_changed; /* only this: proxy_config_changed() */
};

struct worker {
	struct proxy *p;
	unsigned id;
	pthread_t thread;
	bool thread_started;
	struct loop *loop;
	struct resolver *res;
	int lfd4, lfd6;
	bool accept_paused;
	/* A descriptor kept for the moment RLIMIT_NOFILE is reached: closed
	 * to accept one waiting client and reset it, so it fails at once
	 * instead of sitting in the backlog until a descriptor frees up. */
	int spare_fd;
	uint64_t shed, shed_logged_ms;
	bool stopping;
	struct conn *conns;
	size_t n_conns;
	/* Guards the conns list (insert, remove) against proxy_snapshot()
	 * walking it from another thread; never taken on the byte path. */
	pthread_mutex_t conns_lock;
	struct loop_timer_list *tl_peek, *tl_first, *tl_resolve, *tl_connect, *tl_idle;
	struct loop_timer_list *tl_grace, *tl_accept, *tl_drain;
	struct loop_timer grace_timer, accept_timer;
	struct relay_pipe spare[PROXY_PIPE_POOL];
	size_t n_spare;
	char copybuf[PROXY_COPY_MAX]; /* relay: small reads, see relay_pump */
	uint64_t netns_cookie;        /* of lfd4/lfd6 (0: unknown) */
	/* proxy_add_listeners()/proxy_remove_listeners(): requests from the
	 * main thread (the loop is single-threaded), applied on mb_fd. */
	pthread_mutex_t mb_lock;
	int mb_fd;
	struct extra_req *mb;
	size_t mb_n;
	struct extra_lset *extra;
	/* The worker's descriptor table is its own (fdbroker.h): what it
	 * opens exists only there, and descriptors of the process's table
	 * made after it started cross through p->fdb. main_lfd4/6 and
	 * main_spare_fd are the process's copies, closed by proxy_destroy. */
	bool fds_private;
	int main_lfd4, main_lfd6, main_spare_fd;
	/* The kernel relay's maps in this worker's table: ks_fd[] valid once
	 * ks_ready; ks_failed: could not be had, this worker never uses it. */
	bool ks_ready, ks_failed;
	int ks_fd[3]; /* KS_TO, KS_SOCKS, KS_PEERS */
	/* The interception workers' hand-over sockets in this worker's
	 * table (a private table only), imported on first use; -1: not yet. */
	int *ic_hand;
	unsigned n_ic_hand;
};

enum { KS_TO, KS_SOCKS, KS_PEERS };

struct cg_entry {
	uint64_t id;
	unsigned count;
	uint64_t last_warn_ms;
	struct cg_entry *next;
};

struct proxy {
	struct proxy_params params;
	const struct config *cfg;
	uint16_t port;
	int has_v6;
	unsigned n_workers;
	struct worker *workers;
	bool started;
	atomic_uint n_conns;
	pthread_mutex_t cg_lock;
	struct cg_entry *cg[CG_BUCKETS];
	struct dnsproxy *dns;
	struct intercept *ic;
	unsigned extra_seq; /* main thread only */
	/* kernel relay; NULL when off, not loaded yet (ks_thread loads it
	 * in the background: the verifier takes tens of ms that a run's
	 * start should not wait for) or refused by the kernel */
	struct splice_bpf *ks;
	int ks_to, ks_socks, ks_peers; /* map fds */
	pthread_t ks_thread;
	bool ks_thread_started;
	struct fdbroker *fdb; /* workers' descriptor tables (fdbroker.h) */
	sem_t unshared;       /* each worker posts once, table taken or not */
};

static const uint8_t tls_alert_access_denied[] = { 0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 49 };
static const uint8_t tls_alert_internal_error[] = { 0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 80 };

static void conn_relay_start(struct conn *c);
static void krelay_consider(struct conn *c);
static void krelay_finish(struct conn *c);
static void conn_connect_next(struct conn *c);
static void conn_decide(struct conn *c);
static bool conn_decide_dns_name(struct conn *c, struct policy_decision *d);
enum { NAMES_NO, NAMES_UNDECIDED, NAMES_YES };

/* Blanks a lenient server may take for the one between request-line
 * parts (RFC 9112 3: SP, HTAB, VT, FF, CR). */
static bool is_line_blank(uint8_t ch)
{
	return ch == ' ' || ch == '\t' || ch == '\v' || ch == '\f' || ch == '\r';
}

/* A request line's version ("HTTP/", any case, after a blank) in b[0..n):
 * HTTP/1.x, and the HTTP/2 preface's "PRI * HTTP/2.0". */
static bool has_http_version(const uint8_t *b, size_t n)
{
	const uint8_t *q;
	size_t k = 5;

	/* by its '/', at b[k] with k >= 5, found with memchr: the tunnel
	 * watch reads every byte of a WebSocket's stream */
	while (k < n && (q = memchr(b + k, '/', n - k))) {
		k = (size_t)(q - b);
		if (is_line_blank(b[k - 5]) && !strncasecmp((const char *)b + k - 4, "HTTP", 4))
			return true;
		k++;
	}
	return false;
}

/* "GET" and a blank, any case, at b: an HTTP/0.9 request ("GET target",
 * no version), which nginx and Apache still serve, by the host of an
 * absolute-form target ("GET http://evil.test/") or the address's default
 * site. */
static bool is_get_at(const uint8_t *b, size_t n)
{
	return n >= 4 && !strncasecmp((const char *)b, "GET", 3) && is_line_blank(b[3]);
}

/* is_get_at at a line's start in b[0..n): after each LF or CR (nginx
 * and HAProxy skip both before a request line), and at b itself if a line
 * starts there. */
static bool has_get_line(const uint8_t *b, size_t n, bool line_start)
{
	static const uint8_t ends[] = { '\n', '\r' };
	const uint8_t *q;
	size_t k, i;

	if (line_start && is_get_at(b, n))
		return true;
	for (i = 0; i < sizeof(ends); i++) {
		for (k = 0; k < n && (q = memchr(b + k, ends[i], n - k));) {
			k = (size_t)(q - b) + 1;
			if (is_get_at(b + k, n - k))
				return true;
		}
	}
	return false;
}

/*
 * Whether a client's first bytes could be, or begin, something an address
 * shared by many sites (a CDN) routes by a name in it: a TLS record, or an
 * HTTP-style request line, of any method token and with any blank a
 * lenient server takes between its parts (HAProxy takes a tab), after the
 * blank lines HTTP servers skip. The DNS answer memory admits only what
 * cannot (conn_carries_no_name). NAMES_UNDECIDED: the first line is not
 * over.
 */
static int bytes_may_name(const uint8_t *b, size_t n)
{
	size_t i = 0, tok, eol;

	while (i < n && (b[i] == '\r' || b[i] == '\n' || b[i] == ' ' || b[i] == '\t'))
		i++;
	if (i == n)
		return n ? NAMES_UNDECIDED : NAMES_NO;
	if (b[i] == 0x16)
		return NAMES_YES; /* a TLS handshake record, parsed or not */
	/* the PROXY protocol's header (v1 "PROXY ", v2 "\r\n\r\n\0\r\nQUIT\n",
	 * whose start the blank lines above took), before what a server
	 * listening with it then reads as HTTP or TLS */
	if (!memcmp(b + i, "PROXY", n - i < 5 ? n - i : 5) ||
	    (i >= 4 && !memcmp(b + i, "\0\r\nQUIT\n", n - i < 7 ? n - i : 7)))
		return n - i < 5 ? NAMES_UNDECIDED : NAMES_YES;
	for (tok = i; tok < n && http_is_tchar(b[tok]); tok++)
		;
	if (tok == i)
		return NAMES_NO;
	if (tok == n)
		return NAMES_UNDECIDED;
	if (!is_line_blank(b[tok]))
		return NAMES_NO;
	if (is_get_at(b + i, n - i))
		return NAMES_YES; /* with a version or without (HTTP/0.9) */
	for (eol = tok; eol < n && b[eol] != '\n'; eol++)
		;
	if (has_http_version(b + tok, eol - tok))
		return NAMES_YES;
	return eol == n ? NAMES_UNDECIDED : NAMES_NO;
}

/*
 * After an Upgrade or CONNECT request the client's bytes go raw, but the
 * server may have ignored the upgrade and read on: a later request for
 * another host on a shared address would reach it, as would the HTTP/2
 * preface ("PRI * HTTP/2.0") and its streams for any :authority. Either
 * needs a request line's version (has_http_version) or, for HTTP/0.9,
 * "GET" at a line's start (has_get_line), neither of which a WebSocket
 * client sends in the clear (its frames are masked) or TLS shows; looked
 * for across reads with the stream's last bytes carried over. The raw
 * stream starts a line (the head before it ended with one).
 */
static bool tunnel_request_line(struct conn *c, const uint8_t *b, size_t n)
{
	const size_t keep = 5; /* a blank and "HTTP", an LF and "GET" */
	uint8_t joint[2 * sizeof(c->tw_carry)];
	bool start = !c->tw_len;
	size_t k, j = c->tw_len;

	/* a version or a GET across the last read's end and this one's start */
	memcpy(joint, c->tw_carry, j);
	for (k = 0; k < n && j < sizeof(joint); k++)
		joint[j++] = b[k];
	if (has_http_version(joint, j) || has_http_version(b, n) ||
	    has_get_line(joint, j, start) || has_get_line(b, n, start))
		return true;
	/* carry the stream's last bytes */
	if (n >= keep) {
		memcpy(c->tw_carry, b + n - keep, keep);
		c->tw_len = (uint8_t)keep;
	} else {
		size_t old = c->tw_len + n > keep ? keep - n : c->tw_len;

		memmove(c->tw_carry, c->tw_carry + c->tw_len - old, old);
		memcpy(c->tw_carry + old, b, n);
		c->tw_len = (uint8_t)(old + n);
	}
	return false;
}

#define TUNNEL_REFUSED                                                                  \
	"after an Upgrade or CONNECT request the client sent another HTTP request (the " \
	"server may not have switched)"

static void conn_schedule_close(struct conn *c);

/* A check in the relay refused what the client sent: nothing of it goes
 * on, both ends are reset. Returns -1 for relay_pump. */
static int relay_refuse(struct conn *c, enum egr_reason why)
{
	c->verdict = EGR_VERDICT_DENY;
	c->reason = why;
	c->rule = NULL;
	c->rst_client = c->rst_upstream = true;
	conn_schedule_close(c);
	return -1;
}

static enum egr_reason conn_http_checked(struct conn *c, int r);
static void conn_fd_cb(struct loop *l, int fd, void *data, int events);
static void conn_timer_cb(struct loop *l, struct loop_timer *t);

/* ---- small helpers ---------------------------------------------------- */

static enum io_class io_classify(ssize_t n)
{
	if (n > 0)
		return IO_DATA;
	if (n == 0)
		return IO_EOF;
	if (errno == EAGAIN || errno == EWOULDBLOCK)
		return IO_AGAIN;
	if (errno == EINTR)
		return IO_INTR;
	return IO_ERROR;
}

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int sock_error(int fd)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		return errno;
	return err;
}

static void sock_set_reset(int fd)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	if (fd >= 0)
		setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
}

static void sock_set_nodelay(int fd)
{
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* ---- per-cgroup connection counters ----------------------------------- */

static unsigned cg_bucket(uint64_t id)
{
	id ^= id >> 33;
	id *= 0xff51afd7ed558ccdULL;
	id ^= id >> 33;
	return (unsigned)(id % CG_BUCKETS);
}

/* Returns 0 and counts the connection, or -EBUSY at the limit; *warn says
 * whether this refusal should be logged (once per second per cgroup). */
static int cg_acquire(struct proxy *p, uint64_t id, unsigned limit, bool *warn)
{
	struct cg_entry *e, **head = &p->cg[cg_bucket(id)];
	int ret = 0;

	*warn = false;
	pthread_mutex_lock(&p->cg_lock);
	for (e = *head; e; e = e->next)
		if (e->id == id)
			break;
	if (!e) {
		e = calloc(1, sizeof(*e));
		if (!e) {
			ret = -ENOMEM;
			goto out;
		}
		e->id = id;
		e->next = *head;
		*head = e;
	}
	if (limit && e->count >= limit) {
		uint64_t now = mono_ms();

		if (!e->last_warn_ms || now - e->last_warn_ms >= 1000) {
			e->last_warn_ms = now;
			*warn = true;
		}
		ret = -EBUSY;
		goto out;
	}
	e->count++;
out:
	pthread_mutex_unlock(&p->cg_lock);
	return ret;
}

static void cg_release(struct proxy *p, uint64_t id)
{
	struct cg_entry *e, **pe = &p->cg[cg_bucket(id)];

	pthread_mutex_lock(&p->cg_lock);
	for (; (e = *pe); pe = &e->next) {
		if (e->id != id)
			continue;
		/* Entries with connections stay, so the warning rate limit
		 * holds exactly while the limit is being hit. */
		if (e->count && --e->count == 0) {
			*pe = e->next;
			free(e);
		}
		break;
	}
	pthread_mutex_unlock(&p->cg_lock);
}

unsigned long proxy_raise_nofile(struct rlimit *orig)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl))
		return 0;
	if (orig)
		*orig = rl;
	if (rl.rlim_cur < rl.rlim_max) {
		struct rlimit up = { .rlim_cur = rl.rlim_max, .rlim_max = rl.rlim_max };

		if (!setrlimit(RLIMIT_NOFILE, &up))
			rl.rlim_cur = rl.rlim_max;
	}
	return (unsigned long)rl.rlim_cur;
}

/* ---- pipes ------------------------------------------------------------ */

static int pipe_get(struct worker *w, struct relay_pipe *out)
{
	int fds[2], sz;

	/* Pipes are per direction and in-flight bytes only (taken on the
	 * first byte, returned when drained), so the pool is what a busy
	 * worker recycles; idle connections hold none. */

	if (w->n_spare) {
		*out = w->spare[--w->n_spare];
		return 0;
	}
	if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0)
		return -errno;
	/* Bigger pipes mean fewer wakeups per MiB; refusal (pipe-max-size,
	 * per-user page limits) just keeps the default 64 KiB. */
	fcntl(fds[1], F_SETPIPE_SZ, PROXY_PIPE_SIZE);
	sz = fcntl(fds[1], F_GETPIPE_SZ);
	out->rfd = fds[0];
	out->wfd = fds[1];
	out->len = 0;
	out->cap = sz > 0 ? (size_t)sz : 65536;
	return 0;
}

static void pipe_put(struct worker *w, struct relay_pipe *pp)
{
	if (pp->rfd < 0)
		return;
	/* A pipe with data left in it (connection died mid-transfer) must not
	 * leak those bytes into the next connection. */
	if (!pp->len && w->n_spare < PROXY_PIPE_POOL && !w->stopping) {
		w->spare[w->n_spare++] = *pp;
	} else {
		close(pp->rfd);
		close(pp->wfd);
	}
	pp->rfd = pp->wfd = -1;
	pp->len = 0;
}

/* ---- connection lifecycle --------------------------------------------- */

static void conn_enter(struct conn *c)
{
	c->busy++;
}

static void conn_schedule_close(struct conn *c)
{
	c->close_scheduled = true;
}

static void conn_set_detail(struct conn *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void conn_set_detail(struct conn *c, const char *fmt, ...)
{
	va_list ap;

	if (c->detail[0]) /* keep the first (root) cause */
		return;
	va_start(ap, fmt);
	vsnprintf(c->detail, sizeof(c->detail), fmt, ap);
	va_end(ap);
}

static void conn_audit(struct conn *c)
{
	struct proxy *p = c->w->p;
	struct audit_record r;
	char peerbuf[INET6_ADDRSTRLEN], cgbuf[PATH_MAX];
	char detail[sizeof(c->detail) + 64];

	if (!p->params.audit)
		return;
	memset(&r, 0, sizeof(r));
	r.start = c->start;
	clock_gettime(CLOCK_REALTIME, &r.end);
	r.proto = IPPROTO_TCP;
	if (c->has_origin) {
		if (p->params.cgroup_name)
			r.cgroup = p->params.cgroup_name(p->params.ctx, c->origin.cgroup_id,
							 cgbuf, sizeof(cgbuf));
		r.cgroup_id = c->origin.cgroup_id;
		r.pid = c->origin.tgid;
		r.uid = c->origin.uid;
		memcpy(r.comm, c->origin.comm, EGR_COMM_LEN);
		r.comm[EGR_COMM_LEN] = '\0';
		r.has_dst = true;
		r.dst = c->orig;
		r.dst_port = c->orig_port;
		r.detail = c->detail[0] ? c->detail : NULL;
	} else {
		/* Nobody to name: say where the connection came from. */
		snprintf(detail, sizeof(detail), "%s%sfrom %s:%u", c->detail,
			 c->detail[0] ? "; " : "",
			 addr_to_str(&c->peer, peerbuf, sizeof(peerbuf)), c->peer_port);
		r.detail = detail;
	}
	if (c->name[0]) {
		if (c->proto == PROTO_TLS)
			r.sni = c->name;
		else
			r.host = c->name;
	} else if (c->dns_name[0]) {
		r.host = c->dns_name;
	}
	r.alpn = c->alpn[0] ? c->alpn : NULL;
	r.ech = c->ech;
	r.kernel_relay = c->krelayed;
	r.has_resolved = c->has_resolved;
	r.resolved = c->resolved;
	if (c->has_resolved && c->has_geo) {
		r.country = c->geo.country;
		r.asn = c->geo.asn;
		r.as_org = c->geo.as_org;
		r.geo_error = c->geo_error;
	}
	r.verdict = c->verdict;
	r.reason = c->reason;
	r.rule = c->rule ? c->rule->text : NULL;
	r.policy = c->policy ? c->policy->name : NULL;
	r.origin = "proxy";
	r.bytes_up = c->bytes_up;
	r.bytes_down = c->bytes_down;
	audit_write(p->params.audit, &r);
}

static void conn_close_fd(struct conn *c, int *fd, bool reset)
{
	if (*fd < 0)
		return;
	loop_forget(c->w->loop, *fd); /* close() takes it out of epoll */
	if (reset)
		sock_set_reset(*fd);
	close(*fd);
	*fd = -1;
}

static void conn_finish(struct conn *c)
{
	struct worker *w = c->w;
	struct proxy *p = w->p;

	c->state = CONN_CLOSED;
	loop_timer_stop(&c->timer);
	loop_timer_stop(&c->first_timer);
	if (c->q) {
		resolver_cancel(c->q);
		c->q = NULL;
	}
	/* Closing takes the sockets out of egr_splice. */
	conn_close_fd(c, &c->ufd, c->rst_upstream);
	conn_close_fd(c, &c->cfd, c->rst_client);
	if (c->krelay)
		krelay_finish(c);
	pipe_put(w, &c->dir[DIR_UP].pipe);
	pipe_put(w, &c->dir[DIR_DOWN].pipe);
	free(c->buf);
	c->buf = NULL;
	httpstream_free(c->hs);
	c->hs = NULL;
	if (!c->handed_off)
		conn_audit(c); /* DNS over TCP: the DNS proxy logs each query */
	if (c->counted_cgroup)
		cg_release(p, c->origin.cgroup_id);
	if (!c->counts_moved)
		atomic_fetch_sub(&p->n_conns, 1);
	pthread_mutex_lock(&w->conns_lock);
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	w->n_conns--;
	pthread_mutex_unlock(&w->conns_lock);
	free(c);
	if (w->stopping && !w->n_conns)
		loop_stop(w->loop);
}

static void conn_leave(struct conn *c)
{
	if (--c->busy == 0 && c->close_scheduled)
		conn_finish(c);
}

/* An I/O error on one side: close, and reset the other side so its peer
 * sees a failure rather than a clean end of stream. */
static void conn_io_error(struct conn *c, enum conn_side side, const char *op, int err)
{
	c->err = err;
	conn_set_detail(c, "%s %s: %s", side == SIDE_CLIENT ? "client" : "upstream",
			op, strerror(err));
	log_debug("proxy: connection from port %u: %s", c->peer_port, c->detail);
	if (side == SIDE_CLIENT)
		c->rst_upstream = true;
	else
		c->rst_client = true;
	conn_schedule_close(c);
}

static bool reason_is_failure(enum egr_reason r)
{
	return r == EGR_REASON_RESOLVE || r == EGR_REASON_UPSTREAM ||
	       r == EGR_REASON_INTERNAL;
}

/* Best effort: the response is small and the socket buffer empty, so one
 * non-blocking send either fits or the client is already gone. */
static void conn_send_deny_response(struct conn *c)
{
	char buf[768], body[400], addrbuf[INET6_ADDRSTRLEN];
	const char *host;
	const void *msg = NULL;
	size_t len = 0;
	ssize_t n;
	int blen;

	if (c->cfd < 0)
		return;
	if (c->proto == PROTO_TLS) {
		msg = reason_is_failure(c->reason) ? tls_alert_internal_error
						   : tls_alert_access_denied;
		len = sizeof(tls_alert_access_denied);
	} else if (c->proto == PROTO_HTTP) {
		host = c->name[0] ? c->name : addr_to_str(&c->orig, addrbuf, sizeof(addrbuf));
		blen = snprintf(body, sizeof(body), "egressd: %s:%u denied: %s\n", host,
				(unsigned)(c->name[0] ? c->up_port : c->orig_port),
				egr_reason_name(c->reason));
		if (blen < 0 || (size_t)blen >= sizeof(body))
			blen = (int)strlen(body);
		len = (size_t)snprintf(buf, sizeof(buf),
				       "HTTP/1.1 %s\r\n"
				       "Content-Type: text/plain\r\n"
				       "Content-Length: %d\r\n"
				       "Connection: close\r\n"
				       "\r\n%s",
				       reason_is_failure(c->reason) ? "502 Bad Gateway"
								    : "403 Forbidden",
				       blen, body);
		if (len >= sizeof(buf))
			len = sizeof(buf) - 1;
		msg = buf;
	}
	if (!msg) {
		c->rst_client = true;
		return;
	}
	do
		n = send(c->cfd, msg, len, MSG_NOSIGNAL | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n != (ssize_t)len) {
		c->rst_client = true;
		return;
	}
	/* FIN after the response; drain what the client already sent so that
	 * close() does not turn into a RST that could discard the response. */
	shutdown(c->cfd, SHUT_WR);
	for (int i = 0; i < 16; i++) {
		n = recv(c->cfd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n <= 0 && !(n < 0 && errno == EINTR))
			break;
	}
}

static void conn_deny(struct conn *c, enum egr_reason reason,
		      const struct policy_rule *rule)
{
	char abuf[INET6_ADDRSTRLEN];

	c->verdict = EGR_VERDICT_DENY;
	c->reason = reason;
	c->rule = rule;
	log_debug("proxy: deny %s %s:%u (%s)", c->name[0] ? c->name : "-",
		  c->has_origin ? addr_to_str(&c->orig, abuf, sizeof(abuf)) : "?",
		  c->orig_port, egr_reason_name(reason));
	conn_send_deny_response(c);
	conn_schedule_close(c);
}

/* A policy denial: enforced, or in audit mode logged as "audit" and the
 * connection goes on. Returns true if the caller should proceed. */
static bool conn_policy_deny(struct conn *c, enum egr_reason reason,
			     const struct policy_rule *rule)
{
	if (c->policy && c->policy->mode == POLICY_AUDIT) {
		/* The first would-be denial is the interesting one. */
		if (c->verdict != EGR_VERDICT_AUDIT) {
			c->verdict = EGR_VERDICT_AUDIT;
			c->reason = reason;
			c->rule = rule;
		}
		return true;
	}
	conn_deny(c, reason, rule);
	return false;
}

static void conn_allow(struct conn *c, const struct policy_decision *d)
{
	if (c->verdict == EGR_VERDICT_AUDIT)
		return;
	c->verdict = EGR_VERDICT_ALLOW;
	c->reason = d->reason;
	c->rule = d->rule;
}

/* ---- connect ---------------------------------------------------------- */

static void conn_connect_original(struct conn *c)
{
	c->cands[0] = c->orig;
	c->n_cands = 1;
	c->cand_idx = 0;
	conn_connect_next(c);
}

/* The engine ended a connection handed off to it: it no longer counts
 * toward max_conns_per_cgroup / max_conns. Any thread. */
static void conn_handoff_release(void *ctx, uint64_t cgroup_id)
{
	struct proxy *p = ctx;

	cg_release(p, cgroup_id);
	atomic_fetch_sub(&p->n_conns, 1);
}

/* Hand-overs to other threads: the sockets go to the process's table
 * first when the worker's table is its own (fdbroker_export). */
struct ic_take {
	struct intercept *ic;
	const struct intercept_conn_info *info;
};

static int ic_take_fn(void *arg, int *fds, unsigned n)
{
	const struct ic_take *t = arg;

	(void)n;
	return intercept_take(t->ic, fds[0], fds[1], t->info); /* -1: -EINVAL, released */
}

struct dns_take {
	struct dnsproxy *dns;
	const struct egr_origin *origin;
};

static int dns_take_fn(void *arg, int *fds, unsigned n)
{
	const struct dns_take *t = arg;

	(void)n;
	return dnsproxy_take_tcp(t->dns, fds[0], t->origin);
}

/* The hand-over socket of interception worker k in this worker's table. */
static int worker_ic_hand(struct worker *w, struct intercept *ic, unsigned k)
{
	unsigned i, n = intercept_workers(ic);

	if (!w->ic_hand) {
		w->ic_hand = malloc(n * sizeof(*w->ic_hand));
		if (!w->ic_hand)
			return -ENOMEM;
		for (i = 0; i < n; i++)
			w->ic_hand[i] = -1;
		w->n_ic_hand = n;
	}
	if (k >= w->n_ic_hand)
		return -EINVAL;
	if (w->ic_hand[k] < 0) {
		int fd = intercept_hand_sock(ic, k);

		if (fd < 0)
			return fd;
		fd = fdbroker_import(w->p->fdb, w->id, fd, false);
		if (fd < 0)
			return fd;
		w->ic_hand[k] = fd;
	}
	return w->ic_hand[k];
}

/* Interception (issue 4): the engine terminates TLS on both sockets,
 * starting with the ClientHello we peeked, and audits each request; this
 * connection leaves without a record of its own, its counts stay taken
 * until the engine ends it. A gateway connection goes the same way, its
 * client side plain HTTP with nothing peeked. */
static void conn_handoff_intercept(struct conn *c)
{
	struct worker *w = c->w;
	struct intercept *ic = __atomic_load_n(&w->p->ic, __ATOMIC_ACQUIRE);
	struct intercept_conn_info info = {
		.origin = &c->origin,
		.host = c->name,
		.rules = c->gw ? &c->gw->rules : c->icpt,
		.policy = c->policy,
		.rule = c->rule ? c->rule->text : NULL,
		.upstream = c->resolved,
		.upstream_port = c->up_port,
		.peeked = c->gw ? NULL : c->buf + c->buf_off,
		.peeked_len = c->gw ? 0 : c->buf_len - c->buf_off,
		.gateway = c->gw != NULL,
		.geo = c->has_geo ? &c->geo : NULL,
		.geo_error = c->geo_error,
		.release = c->counted_cgroup ? conn_handoff_release : NULL,
		.release_ctx = w->p,
	};
	struct ic_take t = { .ic = ic, .info = &info };
	int fds[2] = { c->cfd, c->ufd }, err;
	struct ic_conn *ic_c;
	bool sent = false;
	unsigned k;

	if (!ic) {
		/* Never relayed unchecked: the policy wants its rules and
		 * credentials applied, and nothing here can. */
		conn_set_detail(c, "%s: TLS interception is not running here", c->name);
		conn_deny(c, EGR_REASON_INTERNAL, NULL);
		return;
	}
	loop_timer_stop(&c->timer);
	loop_del(w->loop, fds[0]);
	loop_del(w->loop, fds[1]);
	c->cfd = c->ufd = -1;
	/* The engine releases the counts, also if the take fails. */
	c->counts_moved = c->counted_cgroup;
	c->counted_cgroup = false;
	err = 0;
	if (w->fds_private) {
		/* Straight to the engine worker: no broker round trip. */
		err = intercept_prepare(ic, &info, &ic_c, &k);
		if (!err) {
			int s = worker_ic_hand(w, ic, k);

			sent = s >= 0 && !intercept_hand_send(ic_c, s, fds[0], fds[1]);
			if (!sent) /* its queue full: the broker's way below */
				intercept_hand_drop(ic_c, false);
		}
		if (sent || err) { /* err: refused, counts released */
			close(fds[0]);
			close(fds[1]);
		}
	}
	/* intercept_take closes both on error */
	if (!sent && !err)
		err = fdbroker_export(w->p->fdb, w->id, fds, 2, ic_take_fn, &t);
	if (err) {
		conn_set_detail(c, "interception: %s", strerror(-err));
		c->verdict = EGR_VERDICT_DENY;
		c->reason = EGR_REASON_INTERNAL;
	} else {
		c->handed_off = true;
	}
	conn_schedule_close(c);
}

static void conn_connected(struct conn *c)
{
	struct worker *w = c->w;

	loop_timer_stop(&c->timer);
	c->has_resolved = true;
	if (c->icpt || c->gw) {
		conn_handoff_intercept(c);
		return;
	}
	c->last_active_ms = loop_now_ms(w->loop);
	loop_timer_start(w->loop, w->tl_idle, &c->timer, conn_timer_cb);
	if (c->buf_len > c->buf_off) {
		c->state = CONN_FLUSH;
		/* Not registered yet if conn_connect_early() got here. */
		if (loop_add(w->loop, c->ufd, LOOP_WRITE, conn_fd_cb, c) < 0) {
			conn_deny(c, EGR_REASON_INTERNAL, NULL);
			return;
		}
		/* Writable right after connect: try at once. */
		conn_fd_cb(w->loop, c->ufd, c, LOOP_WRITE);
		return;
	}
	conn_relay_start(c);
}

/*
 * GeoIP (docs/geoip.md), where the upstream address is picked: look the
 * candidate up once (the audit record reuses the result) and refuse it if
 * its country is denied or its ASN is not in the list of the allow rule
 * that matched. Returns false to skip it; in audit mode the refusal is
 * recorded and the address used anyway.
 */
static bool conn_geo_check(struct conn *c, const struct egr_addr *a)
{
	const struct policy *pol = c->policy;
	const char *host = c->name[0] ? c->name : c->dns_name[0] ? c->dns_name : NULL;
	char abuf[INET6_ADDRSTRLEN];
	int rc;

	c->has_geo = false;
	c->geo_error = false;
	if (!pol || !pol->geo)
		return true;
	rc = geo_lookup(pol->geo, a, &c->geo);
	c->has_geo = true;
	c->geo_error = rc == -EIO;
	if (geo_country_denied(c->geo.country, (const char *const *)pol->deny_countries))
		conn_set_detail(c, "%s: country %s is in deny_countries",
				addr_to_str(a, abuf, sizeof(abuf)), c->geo.country);
	else if (!policy_asn_ok(pol, c->rule, host, a, c->up_port, c->geo.asn))
		conn_set_detail(c, "%s: AS%u is not in the asn list of %s",
				addr_to_str(a, abuf, sizeof(abuf)), c->geo.asn, c->rule->text);
	else
		return true;
	if (pol->mode == POLICY_AUDIT) {
		conn_policy_deny(c, EGR_REASON_GEO, c->rule);
		return true;
	}
	c->n_geo_refused++;
	return false;
}

/*
 * Right after connect() returned EINPROGRESS: to an origin on this host
 * or over a veth, the handshake has usually completed inside connect()
 * (softirq on our stack), so try to hand over the peeked bytes now. A
 * send() on a socket still in SYN_SENT says EAGAIN (and an error on a
 * failed connect: that error), so nothing is sent before the connection
 * exists. Sent: the connection goes straight to the relay, which then
 * registers the upstream once with its final mask; that saves an
 * EPOLLOUT round trip, an epoll_ctl ADD+MOD pair and SO_ERROR.
 * Returns 1 (connected, taken), 0 (still connecting: wait for EPOLLOUT)
 * or -errno (the connect failed).
 */
static int conn_connect_early(struct conn *c, int fd)
{
	ssize_t n;

	/* Interception and gateways take the peeked bytes themselves. */
	if (c->icpt || c->gw || c->buf_len <= c->buf_off)
		return 0;
	n = send(fd, c->buf + c->buf_off, c->buf_len - c->buf_off, MSG_NOSIGNAL | MSG_DONTWAIT);
	if (n < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? 0 : -errno;
	if (n == 0)
		return 0;
	c->ufd = fd;
	c->buf_off += (size_t)n;
	c->bytes_up += (uint64_t)n;
	if (c->buf_off == c->buf_len) {
		/* as conn_flush(): the peek buffer ends here */
		free(c->buf);
		c->buf = NULL;
		c->buf_len = c->buf_cap = c->buf_off = 0;
	}
	conn_connected(c);
	return 1;
}

static void conn_connect_next(struct conn *c)
{
	struct worker *w = c->w;
	char abuf[INET6_ADDRSTRLEN];

	c->state = CONN_CONNECT;
	while (c->cand_idx < c->n_cands) {
		const struct egr_addr *a = &c->cands[c->cand_idx++];
		struct sockaddr_storage ss;
		socklen_t slen = addr_to_sockaddr(a, c->up_port, &ss);
		int fd, err;

		c->resolved = *a;
		if (!conn_geo_check(c, a))
			continue;
		fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			c->err = errno;
			continue;
		}
		sock_set_nodelay(fd);
		if (connect(fd, (struct sockaddr *)&ss, slen) == 0 || errno == EINPROGRESS) {
			err = conn_connect_early(c, fd);
			if (err > 0)
				return;
			if (err < 0) {
				errno = -err;
				goto failed;
			}
			c->ufd = fd;
			err = loop_add(w->loop, fd, LOOP_WRITE, conn_fd_cb, c);
			if (err) {
				c->err = -err;
				close(fd);
				c->ufd = -1;
				continue;
			}
			loop_timer_start(w->loop, w->tl_connect, &c->timer, conn_timer_cb);
			return;
		}
failed:
		c->err = errno;
		log_debug("proxy: connect %s port %u: %s",
			  addr_to_str(a, abuf, sizeof(abuf)), c->up_port, strerror(errno));
		resolver_note_connect_failure(w->res, a, c->up_port);
		close(fd);
	}
	/* has_resolved tells the audit record which address failed last. */
	c->has_resolved = c->n_cands > 0;
	if (c->n_cands && c->n_geo_refused == c->n_cands) {
		conn_deny(c, EGR_REASON_GEO, c->rule);
		return;
	}
	conn_set_detail(c, "connect %s port %u: %s",
			addr_to_str(&c->resolved, abuf, sizeof(abuf)), c->up_port,
			strerror(c->err ? c->err : ECONNREFUSED));
	conn_deny(c, EGR_REASON_UPSTREAM, c->rule);
}

static void conn_connect_event(struct conn *c, int events)
{
	char abuf[INET6_ADDRSTRLEN];
	/* EPOLLOUT alone: established (a failed connect is EPOLLERR|EPOLLHUP,
	 * and SYN_SENT reports nothing), no need to ask SO_ERROR. */
	int err = events == LOOP_WRITE ? 0 : sock_error(c->ufd);

	if (!err && (events & (LOOP_WRITE | LOOP_ERR | LOOP_HUP)) == LOOP_WRITE) {
		conn_connected(c);
		return;
	}
	if (!err)
		err = ECONNREFUSED;
	c->err = err;
	resolver_note_connect_failure(c->w->res, &c->resolved, c->up_port);
	log_debug("proxy: connect %s port %u: %s",
		  addr_to_str(&c->resolved, abuf, sizeof(abuf)), c->up_port, strerror(err));
	conn_close_fd(c, &c->ufd, false);
	loop_timer_stop(&c->timer);
	conn_connect_next(c);
}

/* ---- flush + relay ---------------------------------------------------- */

static void conn_flush(struct conn *c)
{
	while (c->buf_off < c->buf_len) {
		ssize_t n = send(c->ufd, c->buf + c->buf_off, c->buf_len - c->buf_off,
				 MSG_NOSIGNAL | MSG_DONTWAIT);

		switch (io_classify(n)) {
		case IO_DATA:
			c->buf_off += (size_t)n;
			c->bytes_up += (uint64_t)n;
			c->last_active_ms = loop_now_ms(c->w->loop);
			continue;
		case IO_INTR:
			continue;
		case IO_AGAIN:
			return; /* EPOLLOUT is armed */
		case IO_EOF:
			errno = EPIPE;
			/* fallthrough */
		case IO_ERROR:
			conn_io_error(c, SIDE_UPSTREAM, "write", errno);
			return;
		}
	}
	/* The peek buffer exists only until here: a relayed connection
	 * costs the struct and two pipes. */
	free(c->buf);
	c->buf = NULL;
	c->buf_len = c->buf_cap = c->buf_off = 0;
	conn_relay_start(c);
}

static int relay_fd(const struct conn *c, int dir, bool src)
{
	if (dir == DIR_UP)
		return src ? c->cfd : c->ufd;
	return src ? c->ufd : c->cfd;
}

/* A source whose splice() into a non-empty pipe says EAGAIN is either dry
 * or blocked by a pipe out of slots (a slot holds one skb fragment, so a
 * pipe can be "full" well below its byte capacity). Only the first may wait
 * for EPOLLIN: the second would spin on a readable socket. */
static bool sock_has_input(int fd)
{
	int inq = 0;

	return ioctl(fd, FIONREAD, &inq) == 0 && inq > 0;
}

static bool relay_can_read(const struct relay_dir *d)
{
	return !d->src_eof && !d->pipe_full && !d->hold &&
	       (d->pipe.rfd < 0 || d->pipe.len < d->pipe.cap);
}

/* Bytes of a short read that the destination did not take go into the
 * (empty) pipe, which then continues as in the splice path. */
static int relay_park(struct conn *c, struct relay_dir *d, const char *buf, size_t n)
{
	ssize_t w;
	int err;

	if (d->pipe.rfd < 0) {
		err = pipe_get(c->w, &d->pipe);
		if (err < 0)
			return err;
	}
	w = write(d->pipe.wfd, buf, n);
	if (w < 0)
		return -errno;
	if ((size_t)w != n)
		return -ENOBUFS; /* an empty pipe holds at least 64 KiB */
	d->pipe.len += n;
	return 0;
}

/* Move bytes of one direction, full duplex through its pipe: drain the pipe
 * into the destination and refill it from the source in the same pass, so
 * the source's receive window stays open while the destination catches up
 * (a pipe that must empty before the next read halves the throughput of a
 * bulk transfer). Stops when neither end can move, or when the budget is
 * spent. The pipe is held only while bytes sit in it: an idle relayed
 * connection costs two sockets, no pipes.
 *
 * A read into an empty pipe is first tried as a recv() into the worker's
 * buffer and a send(): for the small messages of request/response traffic
 * that is two cheap copies instead of two splices and an EAGAIN, and a
 * short read tells that the socket is drained. A read that fills the
 * buffer means bulk: the rest of this pass splices. Returns -1 if the
 * connection failed. */
static int relay_pump(struct conn *c, int dir)
{
	struct relay_dir *d = &c->dir[dir];
	int src = relay_fd(c, dir, true), dst = relay_fd(c, dir, false);
	enum conn_side src_side = dir == DIR_UP ? SIDE_CLIENT : SIDE_UPSTREAM;
	enum conn_side dst_side = dir == DIR_UP ? SIDE_UPSTREAM : SIDE_CLIENT;
	uint64_t *bytes = dir == DIR_UP ? &c->bytes_up : &c->bytes_down;
	size_t budget = PROXY_RELAY_BUDGET;
	bool moved, copied, src_dry = false, bulk = false;
	bool hs = dir == DIR_UP && (c->hs || c->tunnel_watch);
	ssize_t n, m;
	int err;

	do {
		moved = false;
		if (d->pipe.len) {
			n = splice(d->pipe.rfd, NULL, dst, NULL, d->pipe.len,
				   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
			switch (io_classify(n)) {
			case IO_DATA:
				d->pipe.len -= (size_t)n;
				if (d->pipe_full)
					src_dry = false; /* it was full, not dry */
				d->pipe_full = false;
				*bytes += (uint64_t)n;
				c->last_active_ms = loop_now_ms(c->w->loop);
				moved = true;
				break;
			case IO_INTR:
				moved = true;
				break;
			case IO_AGAIN:
				break; /* EPOLLOUT on dst */
			case IO_EOF:
				errno = EPIPE;
				/* fallthrough */
			case IO_ERROR:
				conn_io_error(c, dst_side, "write", errno);
				return -1;
			}
		}
		if (!budget || src_dry || !relay_can_read(d))
			continue;
		/* Checked HTTP (c->hs) is read only into the copy buffer, and
		 * only once what waits in the pipe (checked) has gone. */
		if (hs && d->pipe.len)
			continue;
		copied = !d->pipe.len && !bulk;
		if (copied) {
			n = recv(src, c->w->copybuf, PROXY_COPY_MAX, MSG_DONTWAIT);
		} else {
			if (d->pipe.rfd < 0) {
				err = pipe_get(c->w, &d->pipe);
				if (err < 0)
					goto pipe_failed;
			}
			n = splice(src, NULL, d->pipe.wfd, NULL, d->pipe.cap - d->pipe.len,
				   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		}
		switch (io_classify(n)) {
		case IO_DATA:
			budget = (size_t)n >= budget ? 0 : budget - (size_t)n;
			moved = true;
			if (!copied) {
				d->pipe.len += (size_t)n;
				krelay_consider(c);
				break;
			}
			if (dir == DIR_UP && c->watch_first) {
				c->watch_first = false;
				if (bytes_may_name((const uint8_t *)c->w->copybuf, (size_t)n) !=
				    NAMES_NO) {
					/* admitted by the DNS memory as a protocol
					 * without names; this one may name a host */
					conn_set_detail(c, "admitted by the DNS answer for %s before "
							"the client spoke; it then sent TLS or "
							"an HTTP request", c->dns_name);
					return relay_refuse(c, EGR_REASON_NO_NAME);
				}
			}
			if (dir == DIR_UP && c->tunnel_watch &&
			    tunnel_request_line(c, (const uint8_t *)c->w->copybuf, (size_t)n)) {
				conn_set_detail(c, "%s", TUNNEL_REFUSED);
				return relay_refuse(c, EGR_REASON_NO_MATCH);
			}
			if (dir == DIR_UP && c->hs) {
				const uint8_t *cb = (const uint8_t *)c->w->copybuf;
				int r = httpstream_feed(c->hs, cb, (size_t)n);
				size_t at = r == HTTPSTREAM_TUNNEL ?
					    httpstream_tunnel_at(c->hs) : (size_t)n;
				enum egr_reason why = conn_http_checked(c, r);

				if (why != EGR_REASON_NONE)
					return relay_refuse(c, why);
				/* an Upgrade head in this read: what came after
				 * it is raw, and watched from its first byte */
				if (c->tunnel_watch && at < (size_t)n &&
				    tunnel_request_line(c, cb + at, (size_t)n - at)) {
					conn_set_detail(c, "%s", TUNNEL_REFUSED);
					return relay_refuse(c, EGR_REASON_NO_MATCH);
				}
				hs = c->hs || c->tunnel_watch;
			}
			m = send(dst, c->w->copybuf, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
			if (m < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
				conn_io_error(c, dst_side, "write", errno);
				return -1;
			}
			if (m < 0)
				m = 0;
			*bytes += (uint64_t)m;
			c->last_active_ms = loop_now_ms(c->w->loop);
			if (m < n) {
				err = relay_park(c, d, c->w->copybuf + m, (size_t)(n - m));
				if (err < 0)
					goto pipe_failed;
			}
			krelay_consider(c);
			/* a full buffer means bulk; a short read, a drained socket */
			if (n == PROXY_COPY_MAX)
				bulk = !hs; /* checked HTTP stays in the copy path */
			else
				src_dry = true;
			break;
		case IO_EOF:
			d->src_eof = true;
			moved = true;
			break;
		case IO_INTR:
			moved = true;
			break;
		case IO_AGAIN:
			if (!copied && d->pipe.len && sock_has_input(src))
				d->pipe_full = true;
			else
				src_dry = true;
			break;
		case IO_ERROR:
			conn_io_error(c, src_side, "read", errno);
			return -1;
		}
	} while (moved);

	if (d->src_eof && !d->pipe.len && !d->dst_shut) {
		/* ENOTCONN if the peer is gone: the other direction will
		 * find out. */
		shutdown(dst, SHUT_WR);
		d->dst_shut = true;
	}
	if (!d->pipe.len)
		pipe_put(c->w, &d->pipe);
	return 0;

pipe_failed:
	/* EMFILE and friends: neither side can be served, both are told. */
	c->err = -err;
	conn_set_detail(c, "pipe: %s", strerror(-err));
	c->rst_client = c->rst_upstream = true;
	conn_schedule_close(c);
	return -1;
}

/* Interest 0 means "not registered" during the relay: a socket whose peer
 * has finished (FIN read, or pending because our pipe is full) and to which
 * we sent FIN reports EPOLLHUP whatever the mask, so a registration with
 * mask 0 would spin while the other side drains. A socket that dies while
 * not registered is noticed at its next read/write, or by the idle timer. */
static int relay_set_interest(struct conn *c, int fd, int mask)
{
	if (!mask) {
		if (loop_mask(c->w->loop, fd) >= 0)
			return loop_del(c->w->loop, fd);
		return 0;
	}
	return loop_add(c->w->loop, fd, mask, conn_fd_cb, c);
}

static void relay_update_interest(struct conn *c)
{
	struct relay_dir *up = &c->dir[DIR_UP], *down = &c->dir[DIR_DOWN];
	int cmask = 0, umask = 0;

	/* Read a source while its pipe has room; bytes in a pipe wait for
	 * EPOLLOUT on their destination. A pipe out of slots stops its
	 * source until the destination drains it (no spinning on EPOLLIN). */
	if (relay_can_read(up))
		cmask |= LOOP_READ;
	if (down->pipe.len)
		cmask |= LOOP_WRITE;
	if (relay_can_read(down))
		umask |= LOOP_READ;
	if (up->pipe.len)
		umask |= LOOP_WRITE;
	if (relay_set_interest(c, c->cfd, cmask) < 0 ||
	    relay_set_interest(c, c->ufd, umask) < 0) {
		conn_set_detail(c, "epoll: %s", strerror(errno));
		c->rst_client = c->rst_upstream = true;
		conn_schedule_close(c);
	}
}

/* ---- kernel relay -------------------------------------------------------
 *
 * A connection that has relayed kernel_relay_after bytes through the splice
 * loop moves to the kernel relay (bpf/splice.bpf.c): both sockets go into a
 * sockhash whose sk_skb verdict sends each socket's incoming bytes straight
 * to the other's send path. The policy decision was made before the first
 * byte; the proxy keeps the connection's end:
 *  - it stops reading both sources and waits until both pipes are empty, so
 *    no byte can overtake one still in a pipe;
 *  - bytes waiting in a receive queue at the hand-over are picked up by the
 *    verdict: SO_RCVLOWAT makes TCP run its data-ready callback, now the
 *    psock's, at once;
 *  - a FIN is forwarded only once the other socket has taken every byte the
 *    verdict counted (the redirect is asynchronous: skbs wait on the
 *    target's psock for a work item), re-checked every PROXY_DRAIN_MS;
 *  - an error or reset on either side resets both, as in the splice loop.
 */

static bool krelay_due(const struct conn *c)
{
	const struct proxy *p = c->w->p;
	const struct relay_dir *up = &c->dir[DIR_UP], *down = &c->dir[DIR_DOWN];

	return __atomic_load_n(&p->ks, __ATOMIC_ACQUIRE) && !c->krelay && !c->ktried &&
	       !up->hold && !c->hs && !c->tunnel_watch && !c->watch_first &&
	       c->bytes_up + c->bytes_down + up->pipe.len + down->pipe.len >=
		       p->cfg->kernel_relay_after &&
	       !up->src_eof && !down->src_eof && !up->dst_shut && !down->dst_shut;
}

/* The relay's maps in this worker's table, taken once: the loader thread
 * made them in the process's table after the worker started. The worker
 * closes its copies as it ends. */
static bool worker_ks(struct worker *w)
{
	struct proxy *p = w->p;
	int src[3] = { p->ks_to, p->ks_socks, p->ks_peers };

	if (w->ks_ready)
		return true;
	if (w->ks_failed)
		return false;
	for (int i = 0; i < 3; i++) {
		w->ks_fd[i] = fdbroker_import(p->fdb, w->id, src[i], false);
		if (w->ks_fd[i] < 0) {
			log_warn("proxy: worker %u: kernel relay maps: %s; its connections "
				 "stay in the proxy", w->id, strerror(-w->ks_fd[i]));
			while (i--)
				close(w->ks_fd[i]);
			w->ks_failed = true;
			return false;
		}
	}
	w->ks_ready = true;
	return true;
}

static void krelay_consider(struct conn *c)
{
	if (krelay_due(c) && worker_ks(c->w))
		c->dir[DIR_UP].hold = c->dir[DIR_DOWN].hold = true;
}

static int sock_cookie(int fd, uint64_t *out)
{
	socklen_t len = sizeof(*out);

	return getsockopt(fd, SOL_SOCKET, SO_COOKIE, out, &len) < 0 ? -errno : 0;
}

static void krelay_peers_del(struct conn *c)
{
	const int *ks = c->w->ks_fd;

	bpf_map_delete_elem(ks[KS_PEERS], &c->kcookie[SIDE_CLIENT]);
	bpf_map_delete_elem(ks[KS_PEERS], &c->kcookie[SIDE_UPSTREAM]);
}

static uint64_t krelay_counted(struct conn *c, enum conn_side src, uint64_t *last_ns)
{
	struct egr_splice_peer v;

	if (bpf_map_lookup_elem(c->w->ks_fd[KS_PEERS], &c->kcookie[src], &v) < 0)
		return UINT64_MAX; /* gone: never "all delivered" */
	if (v.broken)
		c->kbroken = true;
	if (last_ns && v.last_ns > *last_ns)
		*last_ns = v.last_ns;
	return v.bytes;
}

static int krelay_insert(int map, const uint64_t *cookie, int fd)
{
	uint64_t v = (uint64_t)fd;

	return bpf_map_update_elem(map, cookie, &v, BPF_NOEXIST) < 0 ? -errno : 0;
}

/* Returns 0 when the kernel relays the connection, -EAGAIN when it stays
 * in the splice loop (a socket the sockhash refuses: e.g. its peer's FIN
 * arrived meanwhile), or another -errno when the connection was lost. */
static int krelay_start(struct conn *c)
{
	const int *ks = c->w->ks_fd; /* krelay_consider: ks_ready */
	const uint64_t *ck = &c->kcookie[SIDE_CLIENT], *uk = &c->kcookie[SIDE_UPSTREAM];
	struct egr_splice_peer pc = { 0 }, pu = { 0 };
	uint64_t moved;
	int one = 1, err;

	c->dir[DIR_UP].hold = c->dir[DIR_DOWN].hold = false;
	c->ktried = true;
	pipe_put(c->w, &c->dir[DIR_UP].pipe);
	pipe_put(c->w, &c->dir[DIR_DOWN].pipe);
	if (sock_cookie(c->cfd, &c->kcookie[SIDE_CLIENT]) < 0 ||
	    sock_cookie(c->ufd, &c->kcookie[SIDE_UPSTREAM]) < 0 ||
	    tcpinfo_bytes_taken(c->cfd, &c->kbase[SIDE_CLIENT]) < 0 ||
	    tcpinfo_bytes_taken(c->ufd, &c->kbase[SIDE_UPSTREAM]) < 0)
		return -EAGAIN;
	pc.peer = *uk;
	pu.peer = *ck;
	if (bpf_map_update_elem(ks[KS_PEERS], ck, &pc, BPF_ANY) < 0 ||
	    bpf_map_update_elem(ks[KS_PEERS], uk, &pu, BPF_ANY) < 0)
		goto undo_peers;
	/* Targets first: no program runs for them, so a refusal (a socket
	 * no longer ESTABLISHED) costs nothing. */
	if (krelay_insert(ks[KS_TO], ck, c->cfd) < 0)
		goto undo_peers;
	if (krelay_insert(ks[KS_TO], uk, c->ufd) < 0)
		goto undo_to;
	if (krelay_insert(ks[KS_SOCKS], ck, c->cfd) < 0)
		goto undo_to;
	err = krelay_insert(ks[KS_SOCKS], uk, c->ufd);
	if (err < 0) {
		/* The client's verdict ran for a moment: what it took went to
		 * the upstream's psock, and the splice loop would race those
		 * bytes. Nothing taken: back to the loop; else the stream
		 * cannot be resumed in order and both sides are told. */
		bpf_map_delete_elem(ks[KS_SOCKS], ck);
		moved = krelay_counted(c, SIDE_CLIENT, NULL);
		if (moved) {
			conn_set_detail(c, "kernel relay: upstream socket refused (%s) after "
					"%llu client bytes went in", strerror(-err),
					(unsigned long long)moved);
			c->rst_client = c->rst_upstream = true;
			krelay_peers_del(c);
			conn_schedule_close(c);
			return -EPIPE;
		}
		goto undo_to;
	}
	c->krelay = c->krelayed = true;
	/* Bytes queued before the psocks existed: run data-ready now. */
	setsockopt(c->cfd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one));
	setsockopt(c->ufd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one));
	log_debug("proxy: connection from port %u: kernel relay after %llu bytes",
		  c->peer_port, (unsigned long long)(c->bytes_up + c->bytes_down));
	return 0;

undo_to:
	bpf_map_delete_elem(ks[KS_TO], ck);
	bpf_map_delete_elem(ks[KS_TO], uk);
undo_peers:
	krelay_peers_del(c);
	return -EAGAIN;
}

static int krelay_interest(struct conn *c, int fd, int mask, bool done)
{
	if (done)
		return loop_mask(c->w->loop, fd) >= 0 ? loop_del(c->w->loop, fd) : 0;
	return loop_add(c->w->loop, fd, mask, conn_fd_cb, c);
}

static void krelay_broken(struct conn *c)
{
	conn_set_detail(c, "kernel relay: bytes could not be passed on");
	c->rst_client = c->rst_upstream = true;
	conn_schedule_close(c);
}

/* Forward each finished direction's FIN once its bytes are all out. */
static void krelay_progress(struct conn *c)
{
	struct worker *w = c->w;
	bool waiting = false;
	int dir, cmask, umask;

	for (dir = DIR_UP; dir <= DIR_DOWN; dir++) {
		struct relay_dir *d = &c->dir[dir];
		enum conn_side src = dir == DIR_UP ? SIDE_CLIENT : SIDE_UPSTREAM;
		enum conn_side dst = dir == DIR_UP ? SIDE_UPSTREAM : SIDE_CLIENT;
		int dfd = dst == SIDE_CLIENT ? c->cfd : c->ufd;
		uint64_t counted, taken;

		if (!d->src_eof || d->dst_shut)
			continue;
		counted = krelay_counted(c, src, NULL);
		if (tcpinfo_bytes_taken(dfd, &taken) < 0) {
			conn_io_error(c, dst, "TCP_INFO", errno);
			return;
		}
		if (taken - c->kbase[dst] >= counted) {
			shutdown(dfd, SHUT_WR);
			d->dst_shut = true;
			continue;
		}
		if (taken != c->ktaken[dst]) {
			c->ktaken[dst] = taken;
			c->kprogress_ms = loop_now_ms(w->loop);
		}
		waiting = true;
	}
	if (c->kbroken) {
		krelay_broken(c);
		return;
	}
	if (c->dir[DIR_UP].dst_shut && c->dir[DIR_DOWN].dst_shut) {
		conn_schedule_close(c);
		return;
	}
	if (waiting) {
		if (loop_now_ms(w->loop) - c->kprogress_ms >
		    loop_timer_list_duration(w->tl_idle)) {
			conn_set_detail(c, "kernel relay: bytes not delivered for %u ms",
					loop_timer_list_duration(w->tl_idle));
			c->rst_client = c->rst_upstream = true;
			conn_schedule_close(c);
			return;
		}
		if (!c->first_timer.list)
			loop_timer_start(w->loop, w->tl_drain, &c->first_timer, conn_timer_cb);
	}
	/* The kernel moves the bytes; the proxy listens for the ends only. A
	 * socket whose peer has finished stays registered with no interest
	 * (EPOLLERR, a reset, is reported whatever the mask); one finished
	 * both ways leaves epoll, where its EPOLLHUP would spin. */
	cmask = c->dir[DIR_UP].src_eof ? 0 : LOOP_RDHUP;
	umask = c->dir[DIR_DOWN].src_eof ? 0 : LOOP_RDHUP;
	if (krelay_interest(c, c->cfd, cmask, c->dir[DIR_UP].src_eof && c->dir[DIR_DOWN].dst_shut) < 0 ||
	    krelay_interest(c, c->ufd, umask, c->dir[DIR_DOWN].src_eof && c->dir[DIR_UP].dst_shut) < 0) {
		conn_set_detail(c, "epoll: %s", strerror(errno));
		c->rst_client = c->rst_upstream = true;
		conn_schedule_close(c);
	}
}

static void krelay_event(struct conn *c, enum conn_side side, int events)
{
	int fd = side == SIDE_CLIENT ? c->cfd : c->ufd;

	if (events & LOOP_ERR) {
		int err = sock_error(fd);

		conn_io_error(c, side, "socket", err ? err : EIO);
		return;
	}
	/* A reset comes with LOOP_ERR; HUP alone is both ends shut. */
	if (events & (LOOP_RDHUP | LOOP_HUP))
		c->dir[side == SIDE_CLIENT ? DIR_UP : DIR_DOWN].src_eof = true;
	krelay_progress(c);
}

/* The idle timer: the verdict stamps every skb it moves. */
static void krelay_touch(struct conn *c)
{
	uint64_t last_ns = 0;

	krelay_counted(c, SIDE_CLIENT, &last_ns);
	krelay_counted(c, SIDE_UPSTREAM, &last_ns);
	if (c->kbroken)
		krelay_broken(c);
	if (last_ns / 1000000 > c->last_active_ms)
		c->last_active_ms = last_ns / 1000000;
}

/* What the verdict moved, into the connection's counts (audit, metrics). */
static void krelay_finish(struct conn *c)
{
	uint64_t up = krelay_counted(c, SIDE_CLIENT, NULL);
	uint64_t down = krelay_counted(c, SIDE_UPSTREAM, NULL);

	if (up != UINT64_MAX)
		c->bytes_up += up;
	if (down != UINT64_MAX)
		c->bytes_down += down;
	krelay_peers_del(c);
	c->krelay = false;
}

static void conn_relay_event(struct conn *c, enum conn_side side, int events)
{
	int fd = side == SIDE_CLIENT ? c->cfd : c->ufd;
	bool up, down;

	if (c->krelay) {
		krelay_event(c, side, events);
		return;
	}
	if (events & LOOP_ERR) {
		int err = sock_error(fd);

		conn_io_error(c, side, "socket", err ? err : EIO);
		return;
	}
	/* Only the directions this event can move. */
	if (side == SIDE_CLIENT) {
		up = events & (LOOP_READ | LOOP_HUP);
		down = events & (LOOP_WRITE | LOOP_HUP);
	} else {
		down = events & (LOOP_READ | LOOP_HUP);
		up = events & (LOOP_WRITE | LOOP_HUP);
	}
	if (up && relay_pump(c, DIR_UP) < 0)
		return;
	if (down && relay_pump(c, DIR_DOWN) < 0)
		return;
	if (c->dir[DIR_UP].dst_shut && c->dir[DIR_DOWN].dst_shut) {
		conn_schedule_close(c); /* both directions finished cleanly */
		return;
	}
	if (c->dir[DIR_UP].hold && !c->dir[DIR_UP].pipe.len && !c->dir[DIR_DOWN].pipe.len) {
		int err = krelay_start(c);

		if (!err) {
			krelay_progress(c);
			return;
		}
		if (err != -EAGAIN)
			return;
	}
	relay_update_interest(c);
}

static void conn_relay_start(struct conn *c)
{
	c->state = CONN_RELAY;
	/* Pipes are taken from the worker's pool on the first byte. The
	 * client may have sent its request and FIN before we connected: the
	 * FIN is forwarded now. Bytes waiting on either socket are not
	 * looked for here: level-triggered interest reports them at once,
	 * and an idle socket costs no recv() that says EAGAIN. */
	c->dir[DIR_UP].src_eof = c->c_eof;
	if (c->c_eof && relay_pump(c, DIR_UP) < 0)
		return;
	if (c->dir[DIR_UP].dst_shut && c->dir[DIR_DOWN].dst_shut) {
		conn_schedule_close(c);
		return;
	}
	relay_update_interest(c);
}

/* ---- resolve ---------------------------------------------------------- */

static void conn_resolved(void *arg, int status, const struct egr_addr *addrs, size_t n)
{
	struct conn *c = arg;
	const struct policy *pol = c->policy;
	struct policy_decision d;
	const struct policy_rule *deny_rule = NULL;
	bool dropped_private = false;
	size_t i, kept = 0;

	conn_enter(c);
	c->q = NULL;
	loop_timer_stop(&c->timer);
	if (status || !n) {
		conn_set_detail(c, "resolve %s: %s", c->name,
				status ? strerror(-status) : "no address");
		/* A gateway's original destination is the loopback address
		 * itself: never connected to, whatever the mode. */
		if (c->gw)
			conn_deny(c, EGR_REASON_RESOLVE, NULL);
		else if (conn_policy_deny(c, EGR_REASON_RESOLVE, NULL))
			conn_connect_original(c);
		goto out;
	}
	for (i = 0; i < n; i++) {
		if (addr_classify(&addrs[i]) != ADDR_PUBLIC &&
		    !policy_names_addr(pol, &addrs[i], c->up_port)) {
			dropped_private = true;
			continue;
		}
		policy_decide_addr(pol, &addrs[i], c->up_port, &d);
		if (d.verdict == EGR_VERDICT_DENY && d.reason == EGR_REASON_RULE_DENY) {
			deny_rule = d.rule;
			continue;
		}
		c->cands[kept++] = addrs[i];
	}
	if (!kept) {
		char abuf[INET6_ADDRSTRLEN];

		c->resolved = addrs[0];
		c->has_resolved = true;
		conn_set_detail(c, "%s resolved to %s%s", c->name,
				addr_to_str(&addrs[0], abuf, sizeof(abuf)),
				n > 1 ? " and others" : "");
		if (!conn_policy_deny(c, dropped_private ? EGR_REASON_PRIVATE_ADDR
							 : EGR_REASON_RULE_DENY,
				      dropped_private ? NULL : deny_rule))
			goto out;
		c->has_resolved = false;
		/* audit mode: connect where the name really points */
		memcpy(c->cands, addrs, n * sizeof(*addrs));
		kept = n;
	}
	/* Addresses that just failed on this port are tried last. */
	resolver_order_candidates(c->w->res, c->cands, kept, c->up_port);
	c->n_cands = kept;
	c->cand_idx = 0;
	conn_connect_next(c);
out:
	conn_leave(c);
}

static void conn_resolve(struct conn *c)
{
	struct worker *w = c->w;
	int err;

	c->state = CONN_RESOLVE;
	loop_timer_start(w->loop, w->tl_resolve, &c->timer, conn_timer_cb);
	err = resolver_lookup(w->res, c->name, conn_resolved, c, &c->q);
	if (err) {
		c->q = NULL;
		conn_set_detail(c, "resolver: %s", strerror(-err));
		conn_deny(c, EGR_REASON_INTERNAL, NULL);
	}
}

/* ---- decide ----------------------------------------------------------- */

/* What httpstream_feed() said of the client's bytes: the reason to
 * refuse the connection for, or EGR_REASON_NONE to go on. */
static enum egr_reason conn_http_checked(struct conn *c, int r)
{
	const char *other;

	switch (r) {
	case HTTPSTREAM_OK:
		return EGR_REASON_NONE;
	case HTTPSTREAM_TUNNEL: /* the same host's WebSocket, CONNECT: raw */
		httpstream_free(c->hs);
		c->hs = NULL;
		/* whether the server switched is not known here: watched
		 * for a further request line (tunnel_request_line) */
		c->tunnel_watch = true;
		return EGR_REASON_NONE;
	case HTTPSTREAM_OTHER_HOST:
		other = httpstream_other_host(c->hs);
		conn_set_detail(c, "a later request on this connection names %s",
				*other ? other : "no host");
		return EGR_REASON_NO_MATCH;
	default:
		conn_set_detail(c, "a later request on this connection cannot be framed");
		return EGR_REASON_MALFORMED;
	}
}

/*
 * Plain HTTP allowed by a name rule: a server on a shared address (a CDN)
 * routes each request by its own Host, so every later request on the
 * connection must name the same host (httpstream.h). What the client sent
 * so far is checked now, before any of it goes upstream. Returns false if
 * the connection was refused.
 */
static bool conn_http_follow(struct conn *c)
{
	enum egr_reason why;
	size_t at;
	int r;

	c->hs = httpstream_new(c->name);
	if (!c->hs) {
		conn_set_detail(c, "out of memory");
		conn_deny(c, EGR_REASON_INTERNAL, NULL);
		return false;
	}
	r = httpstream_feed(c->hs, c->buf, c->buf_len);
	at = r == HTTPSTREAM_TUNNEL ? httpstream_tunnel_at(c->hs) : c->buf_len;
	why = conn_http_checked(c, r);
	/* an Upgrade/CONNECT head: what came with it after the head is
	 * watched like what comes later */
	if (why == EGR_REASON_NONE && c->tunnel_watch && at < c->buf_len &&
	    tunnel_request_line(c, c->buf + at, c->buf_len - at)) {
		conn_set_detail(c, "%s", TUNNEL_REFUSED);
		why = EGR_REASON_NO_MATCH;
	}
	if (why == EGR_REASON_NONE)
		return true;
	conn_deny(c, why, NULL);
	return false;
}

/*
 * Only a protocol that has no place for a name (ssh, a database) may be
 * admitted by the DNS proxy's memory. TLS without SNI, HTTP without a Host
 * (or with an address) and HTTP/2 with prior knowledge name their host
 * further in (a Host header, :authority), where a shared address (a CDN,
 * a virtual host) would route them to whichever host they name.
 */
static bool conn_carries_no_name(const struct conn *c)
{
	if (c->proto == PROTO_TLS || c->proto == PROTO_HTTP)
		return false;
	/* the h2 preface is a request line too ("PRI * HTTP/2.0") */
	return bytes_may_name(c->buf, c->buf_len) == NAMES_NO;
}

static bool conn_decide_dns_name(struct conn *c, struct policy_decision *d)
{
	struct dnsproxy *dns = c->w->p->dns;

	if (!dns || !dnsproxy_name_for_addr(dns, c->origin.cgroup_id, &c->orig,
					    c->dns_name, sizeof(c->dns_name))) {
		c->dns_name[0] = '\0';
		return false;
	}
	policy_decide_name(c->policy, c->dns_name, c->orig_port, d);
	return d->verdict == EGR_VERDICT_ALLOW;
}

static void conn_decide(struct conn *c)
{
	const struct policy *pol = c->policy;
	struct policy_decision d, da;

	c->state = CONN_DECIDE;
	loop_timer_stop(&c->timer);
	loop_timer_stop(&c->first_timer);
	/* Nothing more to read until upstream is there to take it; but the
	 * client, having sent its ClientHello or request head, usually waits
	 * for the answer, and the relay wants LOOP_READ again: the interest
	 * is dropped only if the client does send more (conn_client_event),
	 * which saves two epoll_ctl calls per connection. */

	if (!c->name[0] || c->name_is_addr) {
		policy_decide_addr(pol, &c->orig, c->orig_port, &d);
		if (d.verdict == EGR_VERDICT_ALLOW) {
			conn_allow(c, &d);
		} else if (d.reason == EGR_REASON_NO_MATCH && conn_carries_no_name(c) &&
			   (c->buf_len || (c->orig_port != 80 && c->orig_port != 443)) &&
			   conn_decide_dns_name(c, &da)) {
			/* ssh and other protocols without SNI/Host: a name
			 * rule for this port, and our DNS proxy gave this
			 * address for that name to this cgroup. Before the
			 * client spoke (a server-speaks-first protocol, never
			 * on the web's ports), what it says first is checked
			 * in the relay: no TLS, no request line. */
			c->watch_first = !c->buf_len;
			conn_allow(c, &da);
		} else if (!conn_policy_deny(c, d.reason == EGR_REASON_NO_MATCH && !c->name_is_addr
							? EGR_REASON_NO_NAME : d.reason,
					     d.rule)) {
			return;
		}
		conn_connect_original(c);
		return;
	}
	if (!c->name_valid) {
		if (conn_policy_deny(c, EGR_REASON_BAD_NAME, NULL))
			conn_connect_original(c);
		return;
	}
	policy_decide_name(pol, c->name, c->orig_port, &d);
	if (d.verdict == EGR_VERDICT_ALLOW) {
		const struct reqrule_host *icpt = policy_intercept_for(pol, c->name);

		/* An intercepted name's request rules (methods, paths,
		 * bodies) are checked by the TLS engine: plain HTTP to it
		 * would pass unchecked, so it is refused. */
		if (icpt && c->proto != PROTO_TLS) {
			conn_set_detail(c, "%s is intercepted: its request rules are checked "
					"with TLS only (use https)", c->name);
			if (conn_policy_deny(c, EGR_REASON_TLS_REQUIRED, d.rule))
				conn_resolve(c);
			return;
		}
		conn_allow(c, &d);
		c->icpt = icpt;
		if (c->proto == PROTO_HTTP && !icpt && pol->mode != POLICY_AUDIT &&
		    !conn_http_follow(c))
			return;
		conn_resolve(c);
		return;
	}
	if (d.reason == EGR_REASON_NO_MATCH) {
		/* An IP rule allows the address the agent chose, whatever name
		 * it sends; then we connect exactly there. */
		policy_decide_addr(pol, &c->orig, c->orig_port, &da);
		if (da.verdict == EGR_VERDICT_ALLOW) {
			conn_allow(c, &da);
			conn_connect_original(c);
			return;
		}
		if (da.reason == EGR_REASON_RULE_DENY)
			d = da;
	}
	if (conn_policy_deny(c, d.reason, d.rule))
		conn_resolve(c);
}

/* ---- peek ------------------------------------------------------------- */

/* Whether an address rule admits the destination as it is. */
static bool conn_addr_allowed(const struct conn *c)
{
	struct policy_decision d;

	policy_decide_addr(c->policy, &c->orig, c->orig_port, &d);
	return d.verdict == EGR_VERDICT_ALLOW;
}

/* "GE", "OPTIO": could still become an HTTP request line. */
static bool maybe_partial_method(const uint8_t *b, size_t len)
{
	size_t i;

	if (len >= 16)
		return false;
	for (i = 0; i < len; i++)
		if (!((b[i] >= 'A' && b[i] <= 'Z') || b[i] == '-' || b[i] == '_'))
			return false;
	return true;
}

/* Returns true when the peek is over (decided or denied). */
static bool conn_peek_parse(struct conn *c)
{
	int r;

	if (c->proto == PROTO_UNKNOWN) {
		if (hello_looks_like_tls(c->buf, c->buf_len)) {
			c->proto = PROTO_TLS;
		} else if (http_head_looks_like_http(c->buf, c->buf_len)) {
			c->proto = PROTO_HTTP;
		} else if (maybe_partial_method(c->buf, c->buf_len)) {
			return false;
		} else if (bytes_may_name(c->buf, c->buf_len) == NAMES_UNDECIDED &&
			   c->buf_len < c->buf_cap && !conn_addr_allowed(c)) {
			/* a first line not over yet (blank lines, a token):
			 * only the DNS memory could admit it, and only once
			 * it is seen to name nothing */
			return false;
		} else {
			conn_decide(c); /* unknown protocol: no name */
			return true;
		}
	}
	if (c->proto == PROTO_TLS) {
		struct hello_info hi;

		r = hello_parse(c->buf, c->buf_len, &hi);
		switch (r) {
		case HELLO_NEED_MORE:
			return false;
		case HELLO_OK:
			if (hi.has_sni) {
				snprintf(c->name, sizeof(c->name), "%s", hi.sni);
				c->name_valid = hi.sni_valid;
			}
			if (hi.has_alpn)
				snprintf(c->alpn, sizeof(c->alpn), "%s", hi.alpn);
			c->ech = hi.has_ech;
			conn_decide(c);
			return true;
		case HELLO_NOT_TLS:
			c->proto = PROTO_UNKNOWN;
			conn_decide(c);
			return true;
		case HELLO_TOO_LARGE:
			if (conn_policy_deny(c, EGR_REASON_TOO_LARGE, NULL))
				conn_decide(c);
			return true;
		default:
			if (conn_policy_deny(c, EGR_REASON_MALFORMED, NULL))
				conn_decide(c);
			return true;
		}
	}
	{
		struct http_head_info hh;

		r = http_head_parse(c->buf, c->buf_len, &hh);
		switch (r) {
		case HTTP_HEAD_NEED_MORE:
			if (c->buf_len >= HTTP_HEAD_MAX_BYTES) {
				if (conn_policy_deny(c, EGR_REASON_TOO_LARGE, NULL))
					conn_decide(c);
				return true;
			}
			return false;
		case HTTP_HEAD_OK:
			if (hh.has_host) {
				struct egr_addr ha;

				snprintf(c->name, sizeof(c->name), "%s", hh.host);
				c->name_valid = hh.host_valid;
				/* An address is no name (a TLS SNI that is one
				 * stays refused: RFC 6066 forbids it there). */
				c->name_is_addr = !hh.host_valid && addr_parse(hh.host, &ha) == 0;
			}
			conn_decide(c);
			return true;
		case HTTP_HEAD_NOT_HTTP:
			c->proto = PROTO_UNKNOWN;
			conn_decide(c);
			return true;
		case HTTP_HEAD_TOO_LARGE:
			if (conn_policy_deny(c, EGR_REASON_TOO_LARGE, NULL))
				conn_decide(c);
			return true;
		default:
			if (conn_policy_deny(c, EGR_REASON_MALFORMED, NULL))
				conn_decide(c);
			return true;
		}
	}
}

static void conn_peek_read(struct conn *c)
{
	for (;;) {
		ssize_t n;

		if (c->buf_len == c->buf_cap) {
			size_t cap = c->buf_cap ? c->buf_cap * 2 : PROXY_PEEK_INITIAL;
			uint8_t *nb;

			if (c->buf_cap >= HELLO_MAX_BYTES) {
				/* Parsers report TOO_LARGE before this. */
				if (conn_policy_deny(c, EGR_REASON_TOO_LARGE, NULL))
					conn_decide(c);
				return;
			}
			if (cap > HELLO_MAX_BYTES)
				cap = HELLO_MAX_BYTES;
			nb = realloc(c->buf, cap);
			if (!nb) {
				conn_set_detail(c, "peek buffer: out of memory");
				conn_deny(c, EGR_REASON_INTERNAL, NULL);
				return;
			}
			c->buf = nb;
			c->buf_cap = cap;
		}
		n = read(c->cfd, c->buf + c->buf_len, c->buf_cap - c->buf_len);
		switch (io_classify(n)) {
		case IO_DATA:
			c->buf_len += (size_t)n;
			loop_timer_stop(&c->first_timer);
			if (conn_peek_parse(c))
				return;
			continue;
		case IO_INTR:
			continue;
		case IO_AGAIN:
			return;
		case IO_EOF:
			c->c_eof = true;
			/* Nothing sent, or nothing we could parse: the
			 * client spoke its last; decide by address. A TLS or
			 * HTTP head cut short is malformed. */
			if (c->proto != PROTO_UNKNOWN) {
				if (conn_policy_deny(c, EGR_REASON_MALFORMED, NULL))
					conn_decide(c);
			} else {
				conn_decide(c);
			}
			return;
		case IO_ERROR:
			conn_io_error(c, SIDE_CLIENT, "read", errno);
			return;
		}
	}
}

static void conn_peek_timeout(struct conn *c)
{
	if (!c->buf_len) {
		/* Silent client: a server-speaks-first protocol that no IP
		 * rule allows (else the first-byte timer went on already). */
		conn_set_detail(c, "no data from client within %u ms",
				loop_timer_list_duration(c->w->tl_peek));
		conn_decide(c);
		return;
	}
	conn_set_detail(c, "%zu bytes of %s in %u ms", c->buf_len,
			c->proto == PROTO_TLS ? "ClientHello" :
			c->proto == PROTO_HTTP ? "HTTP head" : "data",
			loop_timer_list_duration(c->w->tl_peek));
	if (conn_policy_deny(c, EGR_REASON_PEEK_TIMEOUT, NULL))
		conn_decide(c);
}

/* ---- entry points ----------------------------------------------------- */

static void conn_client_event(struct conn *c, int events)
{
	switch (c->state) {
	case CONN_PEEK:
		conn_peek_read(c);
		break;
	case CONN_RELAY:
		conn_relay_event(c, SIDE_CLIENT, events);
		break;
	default:
		/* Not reading the client now: only its disappearance counts.
		 * Level-triggered: more bytes (or FIN) from the client would
		 * wake us until the relay reads them; stop asking. */
		if (events & LOOP_READ)
			loop_mod(c->w->loop, c->cfd, 0);
		if (events & (LOOP_ERR | LOOP_HUP)) {
			int err = sock_error(c->cfd);

			conn_io_error(c, SIDE_CLIENT, "closed", err ? err : ECONNRESET);
		}
		break;
	}
}

static void conn_upstream_event(struct conn *c, int events)
{
	switch (c->state) {
	case CONN_CONNECT:
		conn_connect_event(c, events);
		break;
	case CONN_FLUSH:
		conn_flush(c);
		break;
	case CONN_RELAY:
		conn_relay_event(c, SIDE_UPSTREAM, events);
		break;
	default:
		break;
	}
}

static void conn_fd_cb(struct loop *l, int fd, void *data, int events)
{
	struct conn *c = data;

	if (c->close_scheduled)
		return;
	conn_enter(c);
	if (fd == c->cfd)
		conn_client_event(c, events);
	else if (fd == c->ufd)
		conn_upstream_event(c, events);
	conn_leave(c);
}

static void conn_timer_cb(struct loop *l, struct loop_timer *t)
{
	struct conn *c = t->data;
	struct worker *w = c->w;

	if (c->close_scheduled)
		return;
	conn_enter(c);
	if (t == &c->first_timer) {
		/* Nothing yet from the client and an IP rule would allow the
		 * destination: a server-speaks-first protocol; go. In the
		 * kernel relay the same timer re-checks a waiting FIN. */
		if (c->state == CONN_PEEK && !c->buf_len)
			conn_decide(c);
		else if (c->krelay)
			krelay_progress(c);
		goto out;
	}
	switch (c->state) {
	case CONN_PEEK:
		conn_peek_timeout(c);
		break;
	case CONN_RESOLVE:
		resolver_cancel(c->q);
		c->q = NULL;
		conn_set_detail(c, "resolve %s: timed out after %u ms", c->name,
				w->p->cfg->resolve_timeout_ms);
		if (c->gw)
			conn_deny(c, EGR_REASON_RESOLVE, NULL);
		else if (conn_policy_deny(c, EGR_REASON_RESOLVE, NULL))
			conn_connect_original(c);
		break;
	case CONN_CONNECT:
		c->err = ETIMEDOUT;
		resolver_note_connect_failure(w->res, &c->resolved, c->up_port);
		conn_close_fd(c, &c->ufd, false);
		conn_connect_next(c);
		break;
	case CONN_FLUSH:
	case CONN_RELAY:
		if (c->krelay)
			krelay_touch(c);
		if (loop_now_ms(l) - c->last_active_ms < loop_timer_list_duration(w->tl_idle)) {
			loop_timer_start(l, w->tl_idle, &c->timer, conn_timer_cb);
			break;
		}
		conn_set_detail(c, "idle for %u ms", loop_timer_list_duration(w->tl_idle));
		conn_schedule_close(c);
		break;
	default:
		break;
	}
out:
	conn_leave(c);
}

/* ---- accept ----------------------------------------------------------- */

void proxy_set_intercept(struct proxy *p, struct intercept *ic)
{
	/* The daemon may set it while serving (a reload's first
	 * intercepting policy). */
	__atomic_store_n(&p->ic, ic, __ATOMIC_RELEASE);
}

void proxy_set_dnsproxy(struct proxy *p, struct dnsproxy *d)
{
	p->dns = d;
}

/*
 * TCP port 53, whatever server the agent asked: DNS over TCP goes to the
 * DNS proxy, which applies the policy per query and logs each one. This
 * connection then leaves the proxy without a record of its own.
 */
static bool conn_handoff_dns(struct conn *c)
{
	struct proxy *p = c->w->p;
	struct dns_take t = { .dns = p->dns, .origin = &c->origin };
	int fd;

	if (c->orig_port != 53)
		return false;
	if (!p->dns) {
		conn_deny(c, EGR_REASON_NO_NAME, NULL);
		return true;
	}
	loop_del(c->w->loop, c->cfd);
	fd = c->cfd;
	c->cfd = -1;
	fdbroker_export(p->fdb, c->w->id, &fd, 1, dns_take_fn, &t);
	c->handed_off = true;
	conn_schedule_close(c);
	return true;
}

/*
 * Gateway (policy "gateways"): plain HTTP to a loopback address that the
 * kernel redirected only because the policy maps it onto an https
 * upstream. Nothing is peeked: the address fixes the upstream. Decided as
 * a connection to the upstream's name and port, then resolved and
 * connected as any name, and handed to the interception engine with a
 * plain-HTTP client side. Returns true if the connection was taken (or
 * denied) here.
 */
static bool conn_start_gateway(struct conn *c)
{
	const struct policy_gateway *gw;
	struct policy_decision d;

	/* Not a gateway (any more: the kernel may still know one a
	 * reload removed): the usual path, where a loopback address goes
	 * only where an IP rule names it. */
	gw = policy_gateway_for(c->policy, &c->orig, c->orig_port);
	if (!gw)
		return false;
	c->gw = gw;
	c->proto = PROTO_HTTP; /* a denial is answered in HTTP */
	if (loop_add(c->w->loop, c->cfd, 0, conn_fd_cb, c) < 0) {
		conn_set_detail(c, "epoll: %s", strerror(errno));
		conn_deny(c, EGR_REASON_INTERNAL, NULL);
		return true;
	}
	snprintf(c->name, sizeof(c->name), "%s", gw->host);
	c->name_valid = true;
	c->up_port = gw->upstream_port;
	if (!__atomic_load_n(&c->w->p->ic, __ATOMIC_ACQUIRE)) {
		conn_set_detail(c, "gateway %s: TLS interception is not running here",
				gw->listen);
		conn_deny(c, EGR_REASON_INTERNAL, NULL);
		return true;
	}
	policy_decide_name(c->policy, gw->host, gw->upstream_port, &d);
	if (d.verdict == EGR_VERDICT_ALLOW)
		conn_allow(c, &d);
	else if (!conn_policy_deny(c, d.reason, d.rule))
		return true;
	conn_resolve(c);
	return true;
}

static void conn_start(struct conn *c)
{
	struct worker *w = c->w;
	struct proxy *p = w->p;
	const struct config *cfg = p->cfg;
	struct egr_conn_key key;
	struct policy_decision d;
	socklen_t olen;
	uint64_t cookie = 0;
	unsigned max, max_cg;
	bool warn;
	int err;

	/* TCP_NODELAY comes from the listener. The client is registered
	 * once it gets past the checks below (a denial needs no epoll), with
	 * the mask of what comes next: one epoll_ctl instead of an ADD and a
	 * MOD. From then on a client that vanishes while we resolve or
	 * connect is noticed (EPOLLERR/EPOLLHUP). */
	cookie = c->netns_cookie;
	olen = sizeof(cookie);
	if (!cookie && getsockopt(c->cfd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &olen) < 0)
		cookie = 0; /* pre-5.14 kernel: the BPF side cannot key by it either */
	memset(&key, 0, sizeof(key));
	key.netns_cookie = cookie;
	memcpy(key.addr, c->peer.b, sizeof(key.addr));
	key.port = c->peer_port;
	if (p->params.conns_map_fd < 0 ||
	    bpf_map_lookup_and_delete_elem(p->params.conns_map_fd, &key, &c->origin) < 0) {
		if (p->params.conns_map_fd >= 0 && errno != ENOENT)
			conn_set_detail(c, "egr_conns lookup: %s", strerror(errno));
		conn_deny(c, EGR_REASON_NO_ORIGIN, NULL);
		return;
	}
	c->has_origin = true;
	memcpy(c->orig.b, c->origin.dst_addr, sizeof(c->orig.b));
	c->orig_port = c->origin.dst_port;
	c->up_port = c->orig_port;

	max = cfg_live(cfg->max_conns);
	max_cg = cfg_live(cfg->max_conns_per_cgroup);
	if (max && atomic_load(&p->n_conns) > max) {
		log_warn("proxy: %u connections, limit max_conns=%u reached; denying",
			 atomic_load(&p->n_conns) - 1, max);
		conn_deny(c, EGR_REASON_CONN_LIMIT, NULL);
		return;
	}
	err = cg_acquire(p, c->origin.cgroup_id, max_cg, &warn);
	if (err) {
		if (warn) {
			char cgbuf[PATH_MAX];
			const char *cg = p->params.cgroup_name ?
				p->params.cgroup_name(p->params.ctx, c->origin.cgroup_id,
						      cgbuf, sizeof(cgbuf)) : NULL;

			log_warn("proxy: cgroup %s (id %llu) has %u connections open, "
				 "limit max_conns_per_cgroup=%u reached; denying new ones",
				 cg ? cg : "?", (unsigned long long)c->origin.cgroup_id,
				 max_cg, max_cg);
		}
		conn_deny(c, err == -EBUSY ? EGR_REASON_CONN_LIMIT : EGR_REASON_INTERNAL, NULL);
		return;
	}
	c->counted_cgroup = true;

	c->policy = p->params.policy_for ? p->params.policy_for(p->params.ctx, &c->origin)
					 : NULL;
	if (!c->policy) {
		conn_deny(c, EGR_REASON_NO_POLICY, NULL);
		return;
	}

	if (conn_handoff_dns(c))
		return;
	if (conn_start_gateway(c))
		return;

	c->state = CONN_PEEK;
	if (loop_add(w->loop, c->cfd, LOOP_READ, conn_fd_cb, c) < 0) {
		conn_set_detail(c, "epoll: %s", strerror(errno));
		conn_deny(c, EGR_REASON_INTERNAL, NULL);
		return;
	}
	loop_timer_start(w->loop, w->tl_peek, &c->timer, conn_timer_cb);
	policy_decide_addr(c->policy, &c->orig, c->orig_port, &d);
	if (d.verdict == EGR_VERDICT_ALLOW || c->policy->mode == POLICY_AUDIT ||
	    conn_decide_dns_name(c, &d))
		loop_timer_start(w->loop, w->tl_first, &c->first_timer, conn_timer_cb);
	/* Data may already be queued (the client wrote right after connect). */
	conn_peek_read(c);
}

static void worker_accept_one(struct worker *w, int fd, const struct sockaddr_storage *ss,
			      uint64_t netns_cookie)
{
	struct proxy *p = w->p;
	struct conn *c;

	c = calloc(1, sizeof(*c));
	if (!c) {
		log_error("proxy: out of memory for a connection; resetting it");
		sock_set_reset(fd);
		close(fd);
		return;
	}
	c->w = w;
	c->cfd = fd;
	c->ufd = -1;
	c->dir[DIR_UP].pipe.rfd = c->dir[DIR_UP].pipe.wfd = -1;
	c->dir[DIR_DOWN].pipe.rfd = c->dir[DIR_DOWN].pipe.wfd = -1;
	c->timer.data = c;
	c->first_timer.data = c;
	c->state = CONN_ACCEPTED;
	c->netns_cookie = netns_cookie;
	clock_gettime(CLOCK_REALTIME, &c->start);
	addr_from_sockaddr(&c->peer, &c->peer_port, (const struct sockaddr *)ss);
	atomic_fetch_add(&p->n_conns, 1);
	pthread_mutex_lock(&w->conns_lock);
	c->next = w->conns;
	if (w->conns)
		w->conns->prev = c;
	w->conns = c;
	w->n_conns++;
	pthread_mutex_unlock(&w->conns_lock);

	conn_enter(c);
	conn_start(c);
	conn_leave(c);
}

/* ---- listeners in pods' network namespaces ------------------------------ */

static void worker_accept_cb(struct loop *l, int lfd, void *data, int events);

static void worker_extra_mask(struct worker *w, int mask)
{
	struct extra_lset *x;

	for (x = w->extra; x; x = x->next) {
		loop_mod(w->loop, x->fd4, mask);
		if (x->fd6 >= 0)
			loop_mod(w->loop, x->fd6, mask);
	}
}

static void extra_close(struct worker *w, struct extra_lset *x)
{
	loop_del(w->loop, x->fd4);
	close(x->fd4);
	if (x->fd6 >= 0) {
		loop_del(w->loop, x->fd6);
		close(x->fd6);
	}
	free(x);
}

/* A listener the main thread made (in the process's table) into this
 * worker's table; the process's copy goes. */
static int worker_take_fd(struct worker *w, int fd)
{
	return fd < 0 ? fd : fdbroker_import(w->p->fdb, w->id, fd, true);
}

static void worker_extra_apply(struct worker *w, const struct extra_req *r)
{
	struct extra_lset *x, **pp;
	int mask = w->accept_paused ? 0 : LOOP_READ, fd4, fd6;

	if (r->fd4 < 0) {
		for (pp = &w->extra; *pp; pp = &(*pp)->next) {
			if ((*pp)->id == r->id) {
				x = *pp;
				*pp = x->next;
				extra_close(w, x);
				return;
			}
		}
		return;
	}
	fd4 = worker_take_fd(w, r->fd4);
	fd6 = worker_take_fd(w, r->fd6);
	x = calloc(1, sizeof(*x));
	if (!x || fd4 < 0 || loop_add(w->loop, fd4, mask, worker_accept_cb, w) ||
	    (fd6 >= 0 && loop_add(w->loop, fd6, mask, worker_accept_cb, w))) {
		/* Nothing listens in that namespace: its connections are
		 * refused (closed, never open). */
		log_error("proxy: worker %u: cannot serve listener set %d%s%s", w->id, r->id,
			  fd4 < 0 ? ": " : "", fd4 < 0 ? strerror(-fd4) : "");
		if (fd4 >= 0) {
			loop_del(w->loop, fd4);
			close(fd4);
		}
		if (fd6 >= 0) {
			loop_del(w->loop, fd6);
			close(fd6);
		}
		free(x);
		return;
	}
	if (r->fd6 >= 0 && fd6 < 0)
		log_warn("proxy: worker %u: listener set %d: IPv6 listener: %s", w->id, r->id,
			 strerror(-fd6));
	x->id = r->id;
	x->fd4 = fd4;
	x->fd6 = fd6;
	x->next = w->extra;
	w->extra = x;
}

static unsigned ms_or(unsigned v, unsigned dflt);

/* The live settings (config.h) after a reload: timers armed from now on
 * use the new durations, and a shorter one also brings the armed ones
 * forward (loop_timer_list_set_duration). */
static void worker_config_apply(struct worker *w)
{
	const struct config *cfg = w->p->cfg;

	loop_update_time(w->loop);
	loop_timer_list_set_duration(w->loop, w->tl_peek,
				     ms_or(cfg_live(cfg->peek_timeout_ms), 10000));
	loop_timer_list_set_duration(w->loop, w->tl_connect,
				     ms_or(cfg_live(cfg->connect_timeout_ms), 10000));
	loop_timer_list_set_duration(w->loop, w->tl_idle,
				     ms_or(cfg_live(cfg->idle_timeout_ms), 600000));
}

/* Take the queued requests; with apply false (stopping), only close. */
static void worker_mailbox(struct worker *w, bool apply)
{
	struct extra_req *q;
	uint64_t v;
	size_t i, n;

	if (read(w->mb_fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_debug("proxy: eventfd: %s", strerror(errno));
	pthread_mutex_lock(&w->mb_lock);
	q = w->mb;
	n = w->mb_n;
	w->mb = NULL;
	w->mb_n = 0;
	pthread_mutex_unlock(&w->mb_lock);
	for (i = 0; i < n; i++) {
		if (q[i].audit_reopened)
			audit_thread_refresh(w->p->params.audit);
		else if (q[i].config_changed)
			worker_config_apply(w);
		else if (apply)
			worker_extra_apply(w, &q[i]);
		else if (q[i].fd4 >= 0) {
			int fd4 = worker_take_fd(w, q[i].fd4), fd6 = worker_take_fd(w, q[i].fd6);

			if (fd4 >= 0)
				close(fd4);
			if (fd6 >= 0)
				close(fd6);
		}
	}
	free(q);
}

static void worker_mailbox_cb(struct loop *l, int fd, void *data, int events)
{
	struct worker *w = data;

	worker_mailbox(w, !w->stopping);
}

static int worker_post(struct worker *w, const struct extra_req *r)
{
	struct extra_req *q;
	uint64_t one = 1;

	pthread_mutex_lock(&w->mb_lock);
	q = realloc(w->mb, (w->mb_n + 1) * sizeof(*q));
	if (q) {
		w->mb = q;
		w->mb[w->mb_n++] = *r;
	}
	pthread_mutex_unlock(&w->mb_lock);
	if (!q)
		return -ENOMEM;
	if (write(w->mb_fd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_warn("proxy: eventfd: %s", strerror(errno));
	return 0;
}

static int listen_socket(int family, const char *addr, uint16_t port, int *out);

void proxy_config_changed(struct proxy *p)
{
	const struct extra_req r = { .config_changed = true, .fd4 = -1, .fd6 = -1 };

	for (unsigned i = 0; p && i < p->n_workers; i++)
		if (worker_post(&p->workers[i], &r))
			log_warn("proxy: worker %u keeps its timeouts until the next reload "
				 "(out of memory)", i);
}

void proxy_audit_reopened(struct proxy *p)
{
	const struct extra_req r = { .audit_reopened = true, .fd4 = -1, .fd6 = -1 };

	for (unsigned i = 0; p && i < p->n_workers; i++)
		if (p->workers[i].fds_private && worker_post(&p->workers[i], &r))
			log_warn("proxy: worker %u keeps the old audit file until its next "
				 "record (out of memory)", i);
}

int proxy_listen_here(const struct proxy *p, int *fd4, int *fd6)
{
	const char *l4 = p->params.listen4 ? p->params.listen4 : "127.0.0.1";
	const char *l6 = p->params.listen6 ? p->params.listen6 : "::1";
	int err;

	*fd6 = -1;
	err = listen_socket(AF_INET, l4, p->port, fd4);
	if (err)
		return err;
	/* No IPv6 in that namespace: its v6 connects fail, closed. */
	if (p->has_v6 && listen_socket(AF_INET6, l6, p->port, fd6))
		*fd6 = -1;
	return 0;
}

int proxy_add_listeners(struct proxy *p, int fd4, int fd6)
{
	struct extra_req r = { .fd4 = fd4, .fd6 = fd6 };
	struct worker *w;
	int err;

	if (fd4 < 0 || !p->n_workers) {
		err = -EINVAL;
		goto fail;
	}
	/* One worker per namespace, round robin: pods are many and each is
	 * small; the id says which worker holds the set. */
	p->extra_seq++;
	if (p->extra_seq > INT32_MAX / PROXY_MAX_WORKERS)
		p->extra_seq = 1;
	w = &p->workers[p->extra_seq % p->n_workers];
	r.id = (int)(p->extra_seq * PROXY_MAX_WORKERS + w->id);
	err = worker_post(w, &r);
	if (err)
		goto fail;
	return r.id;
fail:
	if (fd4 >= 0)
		close(fd4);
	if (fd6 >= 0)
		close(fd6);
	return err;
}

void proxy_remove_listeners(struct proxy *p, int id)
{
	struct extra_req r = { .id = id, .fd4 = -1, .fd6 = -1 };
	unsigned wi = (unsigned)id % PROXY_MAX_WORKERS;

	if (id <= 0 || wi >= p->n_workers)
		return;
	if (worker_post(&p->workers[wi], &r))
		log_error("proxy: out of memory: listener set %d stays open", id);
}

static void worker_accept_resume(struct loop *l, struct loop_timer *t)
{
	struct worker *w = t->data;

	w->accept_paused = false;
	if (w->spare_fd < 0) /* another thread took the slot it freed */
		w->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (w->lfd4 >= 0)
		loop_mod(l, w->lfd4, LOOP_READ);
	if (w->lfd6 >= 0)
		loop_mod(l, w->lfd6, LOOP_READ);
	worker_extra_mask(w, LOOP_READ);
}

/* Out of descriptors: reset the clients waiting in the backlog (a burst's
 * worth) with the spare one. Nothing can be relayed for them anyway (a
 * relay needs two descriptors), and a reset tells them now. */
static void worker_shed(struct worker *w, int lfd)
{
	uint64_t now = loop_now_ms(w->loop);
	int i, fd;

	for (i = 0; i < PROXY_ACCEPT_BATCH && w->spare_fd >= 0; i++) {
		close(w->spare_fd);
		fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd >= 0) {
			sock_set_reset(fd);
			close(fd);
			w->shed++;
		}
		w->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			break;
	}
	if (now - w->shed_logged_ms >= 1000) {
		log_warn("proxy: worker %u: out of file descriptors: %llu connection(s) reset "
			 "so far (RLIMIT_NOFILE, %s; a relayed connection holds two)",
			 w->id, (unsigned long long)w->shed,
			 w->fds_private ? "which bounds each worker" : "shared by all workers");
		w->shed_logged_ms = now;
	}
}

static void worker_accept_cb(struct loop *l, int lfd, void *data, int events)
{
	struct worker *w = data;
	int i;

	for (i = 0; i < PROXY_ACCEPT_BATCH && !w->stopping; i++) {
		struct sockaddr_storage ss;
		socklen_t slen = sizeof(ss);
		int fd = accept4(lfd, (struct sockaddr *)&ss, &slen,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd >= 0) {
			/* The listener's netns is the connection's: known
			 * for ours, asked for a pod's (rare). */
			worker_accept_one(w, fd, &ss,
					  lfd == w->lfd4 || lfd == w->lfd6 ? w->netns_cookie : 0);
			continue;
		}
		if (errno == EINTR || errno == ECONNABORTED)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return;
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
			int err = errno;

			/* Level-triggered accept would spin: pause briefly. */
			if (err == EMFILE || err == ENFILE)
				worker_shed(w, lfd); /* says so, once a second */
			else
				log_warn("proxy: accept: %s; pausing %d ms", strerror(err),
					 PROXY_ACCEPT_PAUSE_MS);
			w->accept_paused = true;
			if (w->lfd4 >= 0)
				loop_mod(l, w->lfd4, 0);
			if (w->lfd6 >= 0)
				loop_mod(l, w->lfd6, 0);
			worker_extra_mask(w, 0);
			loop_timer_start(l, w->tl_accept, &w->accept_timer, worker_accept_resume);
			return;
		}
		log_error("proxy: accept: %s", strerror(errno));
		return;
	}
}

/* ---- workers ---------------------------------------------------------- */

static void worker_close_listeners(struct worker *w)
{
	/* shutdown(): other descriptor tables hold copies of the listeners
	 * made before the workers started (fdbroker.h); this stops the
	 * socket listening whatever holds it. */
	if (w->lfd4 >= 0) {
		loop_del(w->loop, w->lfd4);
		shutdown(w->lfd4, SHUT_RDWR);
		close(w->lfd4);
		w->lfd4 = -1;
	}
	if (w->lfd6 >= 0) {
		loop_del(w->loop, w->lfd6);
		shutdown(w->lfd6, SHUT_RDWR);
		close(w->lfd6);
		w->lfd6 = -1;
	}
	while (w->extra) {
		struct extra_lset *x = w->extra;

		w->extra = x->next;
		extra_close(w, x);
	}
	if (w->mb_fd >= 0)
		worker_mailbox(w, false);
	loop_timer_stop(&w->accept_timer);
}

static void worker_grace_cb(struct loop *l, struct loop_timer *t)
{
	loop_stop(l);
}

/* What this worker opened lives in its table only, which goes with the
 * thread: nothing of it may be left for proxy_destroy (main thread) to
 * close by number there. */
static void worker_private_end(struct worker *w)
{
	while (w->n_spare) {
		struct relay_pipe *pp = &w->spare[--w->n_spare];

		close(pp->rfd);
		close(pp->wfd);
	}
	resolver_destroy(w->res); /* c-ares closes its sockets */
	w->res = NULL;
	if (w->spare_fd >= 0)
		close(w->spare_fd);
	w->spare_fd = -1;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	sigset_t all;
	int err;

	/* Signals belong to the main thread; SIGPIPE from splice() to a
	 * closed socket stays pending here, harmlessly, and EPIPE is handled. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);

	/* A descriptor table of its own (fdbroker.h): RLIMIT_NOFILE then
	 * bounds each worker, not the process. */
	err = w->p->fdb ? fdbroker_unshare(w->p->fdb, w->id) : -ENOSYS;
	if (!err) {
		w->fds_private = true;
		audit_thread_private(w->p->params.audit);
	} else if (w->p->fdb) {
		log_warn("proxy: worker %u: no descriptor table of its own (%s): the "
			 "process's descriptor limit is shared by all workers", w->id,
			 strerror(-err));
	}
	sem_post(&w->p->unshared);
	/* One write() of the audit log per pass, not per record; the
	 * batch is written before the loop waits and by audit_thread_end(). */
	audit_thread_batch(w->p->params.audit);
	loop_set_before_wait(w->loop, audit_thread_flush);

	err = loop_run(w->loop);
	if (err)
		log_error("proxy: worker %u: event loop: %s", w->id, strerror(-err));

	/* proxy_stop(): no new connections, a last second for live ones. */
	w->stopping = true;
	worker_close_listeners(w);
	if (w->n_conns) {
		loop_timer_start(w->loop, w->tl_grace, &w->grace_timer, worker_grace_cb);
		loop_run(w->loop);
	}
	while (w->conns) {
		struct conn *c = w->conns;

		conn_set_detail(c, "proxy shutting down");
		c->rst_client = c->rst_upstream = c->state != CONN_RELAY;
		conn_finish(c);
	}
	loop_timer_stop(&w->grace_timer);
	if (w->ks_ready) /* worker_ks(): this worker's copies */
		for (int i = 0; i < 3; i++)
			close(w->ks_fd[i]);
	w->ks_ready = false;
	if (w->fds_private)
		worker_private_end(w);
	/* the records of the shutdown above, and the thread's handle */
	audit_thread_end();
	return NULL;
}

static int listen_socket(int family, const char *addr, uint16_t port, int *out)
{
	struct sockaddr_storage ss;
	socklen_t slen;
	int fd, one = 1, err;

	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET) {
		struct sockaddr_in *sin = (struct sockaddr_in *)&ss;

		sin->sin_family = AF_INET;
		sin->sin_port = htons(port);
		if (inet_pton(AF_INET, addr, &sin->sin_addr) != 1)
			return -EINVAL;
		slen = sizeof(*sin);
	} else {
		struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;

		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons(port);
		if (inet_pton(AF_INET6, addr, &sin6->sin6_addr) != 1)
			return -EINVAL;
		slen = sizeof(*sin6);
	}
	fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* TCP_NODELAY is inherited by accepted sockets: one syscall less per
	 * connection than setting it on each. */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0 ||
	    (family == AF_INET6 &&
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
	    bind(fd, (struct sockaddr *)&ss, slen) < 0 || listen(fd, SOMAXCONN) < 0) {
		err = -errno;
		close(fd);
		return err;
	}
	*out = fd;
	return 0;
}

static uint16_t socket_port(int fd)
{
	struct sockaddr_storage ss;
	socklen_t slen = sizeof(ss);

	if (getsockname(fd, (struct sockaddr *)&ss, &slen) < 0)
		return 0;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

static void proxy_close_listeners(struct proxy *p)
{
	unsigned i;

	for (i = 0; i < p->n_workers; i++) {
		struct worker *w = &p->workers[i];

		if (w->lfd4 >= 0)
			close(w->lfd4);
		if (w->lfd6 >= 0)
			close(w->lfd6);
		w->lfd4 = w->lfd6 = -1;
	}
}

/* Bind every worker's pair on one port. With port 0 the first IPv4 bind
 * picks it; if [::1] happens to be taken on that port, start over. */
static int proxy_bind(struct proxy *p)
{
	const char *l4 = p->params.listen4 ? p->params.listen4 : "127.0.0.1";
	const char *l6 = p->params.listen6 ? p->params.listen6 : "::1";
	int attempt, err = 0;
	unsigned i;

	for (attempt = 0; attempt < 8; attempt++) {
		uint16_t port = p->params.port;

		p->has_v6 = 1;
		for (i = 0; i < p->n_workers; i++) {
			struct worker *w = &p->workers[i];

			err = listen_socket(AF_INET, l4, port, &w->lfd4);
			if (err) {
				log_error("proxy: listen %s port %u: %s", l4, port, strerror(-err));
				goto fail;
			}
			if (!port)
				port = socket_port(w->lfd4);
			if (!p->has_v6)
				continue;
			err = listen_socket(AF_INET6, l6, port, &w->lfd6);
			if (err == -EADDRINUSE && !p->params.port && i == 0)
				break; /* retry with another ephemeral port */
			if (err && i == 0) {
				log_warn("proxy: listen [%s] port %u: %s; IPv4 only", l6, port,
					 strerror(-err));
				p->has_v6 = 0;
				err = 0;
				continue;
			}
			if (err) {
				log_error("proxy: listen [%s] port %u: %s", l6, port,
					  strerror(-err));
				goto fail;
			}
		}
		if (!err) {
			p->port = port;
			return 0;
		}
		proxy_close_listeners(p);
	}
	return err;
fail:
	proxy_close_listeners(p);
	return err;
}

static unsigned worker_count(const struct config *cfg)
{
	long n = cfg->workers;

	if (!n)
		n = sysconf(_SC_NPROCESSORS_ONLN);
	if (n < 1)
		n = 1;
	if (n > PROXY_MAX_WORKERS)
		n = PROXY_MAX_WORKERS;
	return (unsigned)n;
}

static unsigned ms_or(unsigned v, unsigned dflt)
{
	return v ? v : dflt;
}

static int worker_init(struct worker *w)
{
	const struct config *cfg = w->p->cfg;
	int err;

	err = loop_create(&w->loop);
	if (err)
		return err;
	err = resolver_create(&w->res, w->loop, cfg->dns_servers,
			      ms_or(cfg->resolve_timeout_ms, 5000));
	if (err)
		return err;
	w->tl_peek = loop_timer_list_create(w->loop, ms_or(cfg_live(cfg->peek_timeout_ms), 10000));
	w->tl_first = loop_timer_list_create(w->loop, PROXY_FIRST_BYTE_MS);
	w->tl_resolve = loop_timer_list_create(w->loop, ms_or(cfg->resolve_timeout_ms, 5000));
	w->tl_connect = loop_timer_list_create(w->loop, ms_or(cfg_live(cfg->connect_timeout_ms), 10000));
	w->tl_idle = loop_timer_list_create(w->loop, ms_or(cfg_live(cfg->idle_timeout_ms), 600000));
	w->tl_grace = loop_timer_list_create(w->loop, PROXY_GRACE_MS);
	w->tl_accept = loop_timer_list_create(w->loop, PROXY_ACCEPT_PAUSE_MS);
	w->tl_drain = loop_timer_list_create(w->loop, PROXY_DRAIN_MS);
	if (!w->tl_peek || !w->tl_first || !w->tl_resolve || !w->tl_connect ||
	    !w->tl_idle || !w->tl_grace || !w->tl_accept || !w->tl_drain)
		return -ENOMEM;
	w->accept_timer.data = w;
	w->grace_timer.data = w;
	w->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	w->mb_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (w->mb_fd < 0)
		return -errno;
	return loop_add(w->loop, w->mb_fd, LOOP_READ, worker_mailbox_cb, w);
}

static void proxy_ares_init(void)
{
	int st = ares_library_init(ARES_LIB_INIT_ALL);

	if (st != ARES_SUCCESS)
		log_error("proxy: ares_library_init: %s", ares_strerror(st));
}

/*
 * The kernel relay's program is attached to its own sockhash, not to any
 * cgroup: it runs only for sockets this proxy put there. A kernel that
 * refuses it (no CONFIG_BPF_STREAM_PARSER, no privilege) costs speed, not
 * enforcement: every byte then goes through the splice loop.
 */
static void *proxy_krelay_load(void *arg)
{
	struct proxy *p = arg;
	struct splice_bpf *ks;
	int err;

	ks = splice_bpf__open_and_load();
	if (!ks) {
		err = -errno;
		goto fail;
	}
	err = bpf_prog_attach(bpf_program__fd(ks->progs.egr_splice_verdict),
			      bpf_map__fd(ks->maps.egr_splice), BPF_SK_SKB_VERDICT, 0);
	if (err) {
		err = -errno;
		splice_bpf__destroy(ks);
		goto fail;
	}
	p->ks_to = bpf_map__fd(ks->maps.egr_splice_to);
	p->ks_socks = bpf_map__fd(ks->maps.egr_splice);
	p->ks_peers = bpf_map__fd(ks->maps.egr_splice_peers);
	__atomic_store_n(&p->ks, ks, __ATOMIC_RELEASE);
	/* libbpf parsed the kernel's BTF (megabytes) for the load and freed
	 * it: give those pages back rather than carry them as RSS. */
	malloc_trim(0);
	return NULL;
fail:
	log_warn("proxy: kernel relay unavailable (%s): all bytes go through the proxy",
		 strerror(-err));
	return NULL;
}

int proxy_create(struct proxy **out, const struct proxy_params *params)
{
	static pthread_once_t ares_once = PTHREAD_ONCE_INIT;
	struct proxy *p;
	unsigned i;
	int err;

	if (!params || !params->cfg)
		return -EINVAL;
	/* c-ares' global init is not thread-safe; on Linux it does nothing
	 * that we need to undo. */
	pthread_once(&ares_once, proxy_ares_init);
	p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	p->params = *params;
	p->cfg = params->cfg;
	pthread_mutex_init(&p->cg_lock, NULL);
	sem_init(&p->unshared, 0, 0);
	atomic_init(&p->n_conns, 0);
	p->n_workers = worker_count(p->cfg);
	p->workers = calloc(p->n_workers, sizeof(*p->workers));
	if (!p->workers) {
		err = -ENOMEM;
		goto fail;
	}
	for (i = 0; i < p->n_workers; i++) {
		p->workers[i].p = p;
		p->workers[i].id = i;
		p->workers[i].lfd4 = p->workers[i].lfd6 = -1;
		p->workers[i].mb_fd = -1;
		p->workers[i].spare_fd = -1;
		p->workers[i].main_lfd4 = p->workers[i].main_lfd6 = -1;
		p->workers[i].main_spare_fd = -1;
		pthread_mutex_init(&p->workers[i].mb_lock, NULL);
		pthread_mutex_init(&p->workers[i].conns_lock, NULL);
	}
	for (i = 0; i < p->n_workers; i++) {
		err = worker_init(&p->workers[i]);
		if (err) {
			log_error("proxy: worker %u: %s", i, strerror(-err));
			goto fail;
		}
	}
	err = proxy_bind(p);
	if (err)
		goto fail;
	for (i = 0; i < p->n_workers; i++) {
		p->workers[i].main_lfd4 = p->workers[i].lfd4;
		p->workers[i].main_lfd6 = p->workers[i].lfd6;
		p->workers[i].main_spare_fd = p->workers[i].spare_fd;
	}
	/* Without it the workers share the process's table. */
	if (fdbroker_create(&p->fdb, p->n_workers) == 0 && fdbroker_start(p->fdb)) {
		fdbroker_destroy(p->fdb);
		p->fdb = NULL;
	}
	if (p->cfg->kernel_relay_after) {
		err = pthread_create(&p->ks_thread, NULL, proxy_krelay_load, p);
		if (!err)
			thread_name(p->ks_thread, "egressd-krelay");
		if (err)
			log_warn("proxy: kernel relay not loaded (%s): all bytes go "
				 "through the proxy", strerror(err));
		p->ks_thread_started = !err;
	}
	for (i = 0; i < p->n_workers; i++) {
		struct worker *w = &p->workers[i];
		socklen_t olen = sizeof(w->netns_cookie);

		if (getsockopt(w->lfd4, SOL_SOCKET, SO_NETNS_COOKIE, &w->netns_cookie, &olen) < 0)
			w->netns_cookie = 0;
		err = loop_add(w->loop, w->lfd4, LOOP_READ, worker_accept_cb, w);
		if (!err && w->lfd6 >= 0)
			err = loop_add(w->loop, w->lfd6, LOOP_READ, worker_accept_cb, w);
		if (err)
			goto fail;
	}
	log_debug("proxy: %u workers on 127.0.0.1%s port %u", p->n_workers,
		  p->has_v6 ? " and ::1" : "", p->port);
	*out = p;
	return 0;
fail:
	proxy_destroy(p);
	return err;
}

unsigned proxy_workers(const struct proxy *p)
{
	return p ? p->n_workers : 0;
}

uint16_t proxy_port(const struct proxy *p)
{
	return p->port;
}

int proxy_has_v6(const struct proxy *p)
{
	return p->has_v6;
}

int proxy_start(struct proxy *p)
{
	unsigned i;
	int err;

	if (p->started)
		return -EALREADY;
	for (i = 0; i < p->n_workers; i++) {
		struct worker *w = &p->workers[i];

		err = pthread_create(&w->thread, NULL, worker_main, w);
		if (err) {
			log_error("proxy: starting worker %u: %s", i, strerror(err));
			p->started = true;
			proxy_stop(p);
			return -err;
		}
		thread_name(w->thread, "egressd-prx%u", i);
		w->thread_started = true;
	}
	/* Each worker's table is a copy of the process's as it unshares:
	 * wait for all of them, so that what the caller makes next (the
	 * daemon's control socket, a run's event reader) is in the
	 * process's table only. */
	for (i = 0; i < p->n_workers; i++)
		while (sem_wait(&p->unshared) && errno == EINTR)
			;
	p->started = true;
	return 0;
}

void proxy_stop(struct proxy *p)
{
	unsigned i;

	if (!p || !p->started)
		return;
	for (i = 0; i < p->n_workers; i++)
		if (p->workers[i].thread_started)
			loop_stop(p->workers[i].loop);
	for (i = 0; i < p->n_workers; i++) {
		struct worker *w = &p->workers[i];

		if (!w->thread_started)
			continue;
		pthread_join(w->thread, NULL);
		w->thread_started = false;
	}
	p->started = false;
}

void proxy_destroy(struct proxy *p)
{
	unsigned i, b;

	if (!p)
		return;
	proxy_stop(p);
	if (p->ks_thread_started)
		pthread_join(p->ks_thread, NULL);
	for (i = 0; p->workers && i < p->n_workers; i++) {
		struct worker *w = &p->workers[i];

		/* Never started: listeners and connections are still ours. */
		w->stopping = true;
		if (w->loop) {
			worker_close_listeners(w);
			while (w->conns)
				conn_finish(w->conns);
		}
		/* A private table went with its thread; the process's copies of
		 * the worker's listeners and spare descriptor are still here. */
		if (w->fds_private) {
			if (w->main_lfd4 >= 0)
				close(w->main_lfd4);
			if (w->main_lfd6 >= 0)
				close(w->main_lfd6);
			w->spare_fd = w->main_spare_fd;
		}
		while (w->n_spare) {
			struct relay_pipe *pp = &w->spare[--w->n_spare];

			close(pp->rfd);
			close(pp->wfd);
		}
		resolver_destroy(w->res);
		/* its copies went with its private table */
		free(w->ic_hand);
		if (w->mb_fd >= 0)
			close(w->mb_fd);
		if (w->spare_fd >= 0)
			close(w->spare_fd);
		free(w->mb);
		pthread_mutex_destroy(&w->mb_lock);
		loop_destroy(w->loop);
		pthread_mutex_destroy(&w->conns_lock);
	}
	free(p->workers);
	fdbroker_destroy(p->fdb); /* the workers are gone */
	sem_destroy(&p->unshared);
	splice_bpf__destroy(p->ks); /* after the connections: their finish reads it */
	for (b = 0; b < CG_BUCKETS; b++) {
		while (p->cg[b]) {
			struct cg_entry *e = p->cg[b];

			p->cg[b] = e->next;
			free(e);
		}
	}
	pthread_mutex_destroy(&p->cg_lock);
	free(p);
}

/* ---- live connections (egressctl conns, metrics) ---------------------- */

unsigned proxy_active_conns(const struct proxy *p)
{
	return p ? atomic_load_explicit(&p->n_conns, memory_order_relaxed) : 0;
}

static const char *const conn_state_names[] = {
	[CONN_ACCEPTED] = "accepted", [CONN_PEEK] = "peek", [CONN_DECIDE] = "decide",
	[CONN_RESOLVE] = "resolve", [CONN_CONNECT] = "connect", [CONN_FLUSH] = "flush",
	[CONN_RELAY] = "relay", [CONN_CLOSED] = "closed",
};

/* Bounded copy of a string the worker may be writing right now: the
 * result is always terminated, at worst a mix of old and new bytes. */
static void snap_str(char *dst, size_t len, const char *src)
{
	size_t i;

	for (i = 0; i + 1 < len; i++) {
		char ch = __atomic_load_n(&src[i], __ATOMIC_RELAXED);

		if (!ch)
			break;
		dst[i] = ch;
	}
	dst[i] = '\0';
}

/* The worker owns its connections and writes their fields without a
 * lock; the list lock only keeps them from being freed while we look.
 * So every field is read once, relaxed: a snapshot may mix a field from
 * just before a transition with one from just after it, which is fine for
 * a listing. Policies are never freed while the proxy runs (the daemon
 * retires old configs), so the name behind c->policy stays readable. */
static void snap_conn(const struct conn *c, struct proxy_conn_info *o)
{
	const struct policy *pol = __atomic_load_n(&c->policy, __ATOMIC_RELAXED);
	enum conn_state st = __atomic_load_n(&c->state, __ATOMIC_RELAXED);

	memset(o, 0, sizeof(*o));
	o->start = c->start; /* written before the connection is listed */
	o->worker = c->w->id;
	o->has_origin = __atomic_load_n(&c->has_origin, __ATOMIC_RELAXED);
	if (o->has_origin) {
		o->cgroup_id = c->origin.cgroup_id;
		o->pid = c->origin.tgid;
		o->uid = c->origin.uid;
		memcpy(o->comm, c->origin.comm, EGR_COMM_LEN);
		o->comm[EGR_COMM_LEN] = '\0';
		o->dst = c->orig;
		o->dst_port = c->orig_port;
	}
	o->peer = c->peer;
	o->peer_port = c->peer_port;
	snap_str(o->name, sizeof(o->name), c->name);
	if (o->name[0]) {
		o->name_kind = __atomic_load_n(&c->proto, __ATOMIC_RELAXED) == PROTO_TLS ?
			       "sni" : "host";
	} else {
		snap_str(o->name, sizeof(o->name), c->dns_name);
		if (o->name[0])
			o->name_kind = "dns";
	}
	o->state = (unsigned)st < sizeof(conn_state_names) / sizeof(conn_state_names[0]) ?
		   conn_state_names[st] : "?";
	o->verdict = __atomic_load_n(&c->verdict, __ATOMIC_RELAXED);
	o->reason = __atomic_load_n(&c->reason, __ATOMIC_RELAXED);
	if (pol)
		snap_str(o->policy, sizeof(o->policy), pol->name);
	o->has_resolved = __atomic_load_n(&c->has_resolved, __ATOMIC_RELAXED);
	if (o->has_resolved)
		o->resolved = c->resolved;
	o->bytes_up = __atomic_load_n(&c->bytes_up, __ATOMIC_RELAXED);
	o->bytes_down = __atomic_load_n(&c->bytes_down, __ATOMIC_RELAXED);
	if (__atomic_load_n(&c->krelay, __ATOMIC_RELAXED)) {
		struct proxy *p = c->w->p;
		struct egr_splice_peer v;
		uint64_t k;

		o->state = "kernel";
		k = __atomic_load_n(&c->kcookie[SIDE_CLIENT], __ATOMIC_RELAXED);
		if (!bpf_map_lookup_elem(p->ks_peers, &k, &v))
			o->bytes_up += v.bytes;
		k = __atomic_load_n(&c->kcookie[SIDE_UPSTREAM], __ATOMIC_RELAXED);
		if (!bpf_map_lookup_elem(p->ks_peers, &k, &v))
			o->bytes_down += v.bytes;
	}
}

int proxy_snapshot(struct proxy *p, struct proxy_conn_info **out, size_t *n)
{
	struct proxy_conn_info *v = NULL, *nv;
	size_t len = 0, cap = 0;
	unsigned i;

	*out = NULL;
	*n = 0;
	if (!p)
		return -EINVAL;
	for (i = 0; i < p->n_workers; i++) {
		struct worker *w = &p->workers[i];
		const struct conn *c;

		pthread_mutex_lock(&w->conns_lock);
		/* Grow outside the walk's needs only when short: the lock is
		 * held for the copy, which is a few hundred bytes each. */
		if (len + w->n_conns > cap) {
			cap = len + w->n_conns + 16;
			nv = realloc(v, cap * sizeof(*v));
			if (!nv) {
				pthread_mutex_unlock(&w->conns_lock);
				free(v);
				return -ENOMEM;
			}
			v = nv;
		}
		for (c = w->conns; c && len < cap; c = c->next)
			snap_conn(c, &v[len++]);
		pthread_mutex_unlock(&w->conns_lock);
	}
	*out = v;
	*n = len;
	return 0;
}
