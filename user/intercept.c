// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * TLS interception engine (interface in intercept.h).
 *
 * Threads: N workers (cfg->workers, 0 = one per core), each with its own
 * epoll loop (loop.h). intercept_take() may be called from any thread: it
 * copies what it needs, picks a worker round-robin and queues the
 * connection on that worker's inbox (mutex + eventfd); from then on one
 * connection lives on one worker and nothing on its byte path is shared
 * except the SSL_CTXs (thread-safe) and the CA's leaf cache (ca.h).
 *
 * Transports (HAProxy xprt / Redis tls.c style):
 *  - client side: an SSL server on our own socket BIO (ic_bio_*), which
 *    first hands OpenSSL the ClientHello the proxy already read, then
 *    reads the socket directly. Full-size records are gathered: they go
 *    into a buffer (a worker's pool buffer, held only while it has bytes)
 *    and leave in one send() when it fills, when a smaller write follows
 *    them, when OpenSSL flushes and at the end of the pass, so a bulk
 *    transfer sends 64 KiB at a time, not one 16 KiB record per send()
 *    and per packet. Smaller writes (handshake, request/response traffic)
 *    go straight to the socket. A full socket makes SSL_write return
 *    WANT_WRITE (our backpressure).
 *  - upstream side: an SSL client on the same kind of BIO.
 *  - gateway mode (plain HTTP from the client): a BIO pair (memory BIOs
 *    with a fixed capacity) fed from and flushed to the socket, so the
 *    request path reads it like decrypted TLS.
 * The socket BIO remembers whether its socket was found drained (EAGAIN
 * or a short read; epoll is level-triggered and says when that changes),
 * so the progress rounds of conn_run() make no system call that can only
 * answer EAGAIN, and no SSL_read either (sock_idle()). Both SSLs read
 * ahead: one read takes what is queued, not a record header and then its
 * body.
 * Every SSL call starts with an empty error queue; WANT_READ/WANT_WRITE
 * become epoll interest.
 *
 * One connection = one state machine driven by conn_run(): it repeats the
 * steps below until none of them makes progress, then states its interest.
 *   client socket -> pair -> SSL_read -> creq (decrypted, bounded)
 *   creq -> httpreq (framing, smuggling checks) -> per head: reqrule_check,
 *     credentials, httpreq_accept / local refusal -> httpreq_out
 *   httpreq_out -> SSL_write upstream (stop feeding while it is backed up)
 *   upstream SSL_read -> resp (bounded) -> http-parser (HTTP_RESPONSE) just
 *     to find message ends -> SSL_write to the client, unchanged
 * Requests and their responses are paired FIFO (struct ic_req): a refused
 * request becomes a "local" entry, answered by us once every response
 * before it has been forwarded; then the connection closes (httpreq stops
 * at a refusal, so nothing after it may go upstream).
 *
 * Upgrade (WebSocket only: httpreq refuses any other protocol, whose
 * tunnel would be unchecked) and CONNECT: httpreq stops after the
 * accepted head; the bytes after it stay in creq until the upstream
 * answers 101 (2xx for CONNECT), then both directions are relayed raw.
 * Any other answer is forwarded and the connection closes.
 *
 * The upstream handshake runs in parallel with the client's. No request is
 * processed before it ends; if it failed (certificate or name not
 * verified, or any TLS error), the client handshake still completes and
 * every request is answered 502 naming the reason -- never an unverified
 * connection.
 *
 * Handlers never free a connection: they set close_scheduled and the
 * outermost entry point frees it (busy count), as in proxy.c.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <http_parser.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "fdbroker.h"
#include "httpreq.h"
#include "intercept.h"
#include "log.h"
#include "loop.h"
#include "proxy.h"

#define IC_MAX_WORKERS 64
#define IC_BIO_SIZE (34 * 1024)     /* client TLS bytes buffered each way:
				     * two full records */
#define IC_PLAIN_MAX (16 * 1024)    /* decrypted bytes held per direction */
#define IC_UP_OUT_MAX (64 * 1024)   /* request bytes not yet taken upstream */
#define IC_FEED_CHUNK (16 * 1024)
#define IC_MAX_INFLIGHT 64          /* pipelined requests awaiting answers */
#define IC_READ_BUDGET (1024 * 1024) /* socket bytes per wakeup: fairness */
#define IC_LINGER_MS 2000           /* after our FIN: drain the client */
#define IC_HAND_SNDBUF (4 << 20)    /* hand-over queue: thousands of connections */
#define IC_RUN_MAX 10000            /* progress rounds per wakeup (sanity) */
#define IC_SESS_SLOTS 256           /* upstream TLS sessions kept */
#define IC_WBUF_SIZE (64 * 1024)    /* TLS bytes gathered per socket and send */
#define IC_WBUF_SPARE 8             /* empty gather buffers a worker keeps */
#define IC_GATHER_MIN (16 * 1024)   /* a write this big is a full-size record */

static const unsigned char alpn_h11[] = "\x08http/1.1";

enum hr_mode {
	HR_OPEN = 0,    /* requests flow */
	HR_UPGRADE,     /* upgrade head sent: creq holds tunnel bytes */
	HR_REFUSED,     /* a refusal is queued: discard the rest */
};

/* One request in flight (FIFO), or one we answer ourselves. */
struct ic_req {
	struct ic_req *next;
	struct timespec start;
	char method[24];
	char path[256];
	char rule[REQRULE_NAME_MAX];
	char creds[160];        /* credential names, comma-separated */
	char why[320];          /* denial / failure text (safe to show) */
	bool is_head, is_connect, upgrade;
	bool local;             /* answered by egressd with status + why */
	bool close_after;       /* the connection ends after its answer */
	bool resp_started;
	bool body_open;         /* request body still streaming upstream */
	int status;
	enum egr_verdict verdict;
	enum egr_reason reason;
	uint64_t up, down;
	uint64_t req_body, resp_body; /* de-framed body bytes */
};

struct ic_worker;
struct ic_conn;

/* State of one socket under our BIO (see the header comment). */
struct ic_sock {
	struct ic_conn *c;
	int *fd;                /* the conn's cfd/ufd: -1 once closed */
	bool *eof;              /* set when a read returns 0 */
	bool rd_ready, wr_ready; /* false: drained / full until epoll says */
	const uint8_t *pre;     /* bytes read before us (the ClientHello) */
	size_t pre_len;
	uint8_t *wbuf;          /* gathered writes not yet sent, or NULL */
	size_t wlen, woff;      /* [woff, wlen) of wbuf waits for the socket */
	uint64_t rx, tx;        /* socket bytes, for intercept_snapshot() */
};

struct ic_conn {
	struct ic_worker *w;
	struct ic_conn *prev, *next;
	int busy;
	bool close_scheduled;
	bool started;
	bool failed_before_start; /* its sockets did not arrive (hand_recv) */
	int cfd, ufd;

	/* copied from intercept_conn_info */
	struct egr_origin origin;
	char host[256];
	char up_name[256];      /* host as the upstream gets it: lower case,
	                         * no trailing dot (SNI, verification, Host) */
	struct reqrule_host rules;
	char *policy_name;
	bool audit_mode;        /* policy mode "audit": log denials, go on */
	char *allow_rule;
	char *cgroup;
	struct egr_addr upstream;
	uint16_t upstream_port;
	struct geo_result geo;  /* the proxy's lookup of upstream */
	bool has_geo, geo_error;
	uint8_t *peeked;
	size_t peeked_len;
	struct timespec start;

	/* gateway mode: plain HTTP from the client (no cssl) */
	bool plain;
	BIO *cint;              /* plain: our half of the pair */
	char gw_name[INET6_ADDRSTRLEN + 8]; /* "127.0.0.1:8080" the client used */
	char up_hostval[sizeof(((struct reqrule_host *)0)->host) + 8]; /* Host upstream */

	/* client TLS */
	SSL *cssl;
	struct ic_sock cs, us;  /* client and upstream socket BIO state */
	bool u_sock_eof;
	BIO *cnet;              /* plain: network half of the pair */
	bool c_hs_done;
	bool c_eof;             /* socket EOF */
	bool c_tls_eof;         /* no more plaintext from the client */
	bool sni_bad;

	/* upstream TLS */
	SSL_CTX *up_ctx;        /* the trust store for this connection */
	char *up_ca_path;       /* NULL: the engine's default */
	SSL *ussl;
	bool u_hs_done;
	bool u_failed;          /* handshake failed: every request gets 502 */
	int u_hs_want;
	bool u_want_write;      /* last upstream SSL op wants EPOLLOUT */
	bool u_eof;
	bool u_eof_fed;         /* EOF given to the response parser */
	char u_err[256];

	/* requests */
	size_t creq_len;
	struct httpreq *hr;
	enum hr_mode hr_mode;
	struct ic_req *q_head, *q_tail, *cur_up;
	size_t q_n;
	uint64_t n_requests;

	/* responses */
	size_t resp_len, resp_ready; /* [0, ready) parsed, to forward */
	http_parser rp;
	bool tunnel;
	bool close_after_resp;
	bool no_more_reqs;      /* a body forwarded unread: this is the last */

	/* closing */
	bool closing;
	bool no_notify;         /* handshake failed: no close_notify */
	bool notify_sent, fin_sent;
	size_t lout_len, lout_off; /* local answer in lout */

	void (*release)(void *ctx, uint64_t cgroup_id);
	void *release_ctx;

	uint64_t last_active_ms;
	struct loop_timer timer;
	enum egr_verdict verdict; /* connection-level record, no request */
	enum egr_reason reason;
	char detail[256];
	struct ic_req *spare;   /* a freed entry, for the next request */

	/* The buffers last: the fields above, touched on every wakeup,
	 * share a few cache lines instead of being spread over 33 KiB. */
	uint8_t creq[IC_PLAIN_MAX]; /* decrypted request bytes */
	uint8_t resp[IC_PLAIN_MAX]; /* decrypted response bytes */
	char lout[1024];
};

struct ic_worker {
	struct intercept *ic;
	unsigned id;
	pthread_t thread;
	bool thread_started;
	struct loop *loop;
	int efd;
	pthread_mutex_t lock;
	bool closed;            /* under lock: intercept_stop() ran */
	bool config_changed;    /* under lock: intercept_config_changed() */
	/* Hand-over socket pair (SOCK_SEQPACKET, the process's table): a
	 * prepared connection's pointer and its two sockets (SCM_RIGHTS)
	 * arrive on [0]; [1] is what senders import (intercept_hand_send). */
	int hand[2];
	struct ic_conn *inbox_head, *inbox_tail; /* under lock */
	struct ic_conn *conns;  /* changes under conns_lock (snapshots read it) */
	size_t n_conns;
	pthread_mutex_t conns_lock;
	struct loop_timer_list *tl_hs, *tl_idle, *tl_linger;
	void *wbuf_spare;       /* empty gather buffers, linked through
				 * their first bytes */
	unsigned n_wbuf_spare;
	/* credential values, wiped after each use */
	char credval[REQRULE_MAX_CREDS][REQRULE_VALUE_MAX];
};

/* Upstream session cache, direct-mapped by "host|addr|port": resumption
 * saves the upstream's full handshake (and our chain verification) on
 * every new connection to the same origin. Sessions only come from
 * handshakes that verified certificate and host name, and the key holds
 * the name, so a resumed session is one verified for that name. */
struct ic_sess {
	char key[320];
	SSL_SESSION *sess;
};

/* Upstream client contexts per trust store (a policy's upstream_ca). */
struct ic_upctx {
	struct ic_upctx *next;
	char *path;
	SSL_CTX *ctx;
};

struct intercept {
	struct intercept_params params;
	const struct config *cfg;
	SSL_CTX *srv_ctx, *up_ctx;
	pthread_mutex_t ctx_lock;
	struct ic_upctx *upctxs;
	pthread_mutex_t sess_lock;
	struct ic_sess sess[IC_SESS_SLOTS];
	unsigned n_workers;
	struct ic_worker *workers;
	atomic_uint rr;
	bool started;
};

static void conn_run(struct ic_conn *c);
static void conn_fd_cb(struct loop *l, int fd, void *data, int events);
static void conn_timer_cb(struct loop *l, struct loop_timer *t);
static void conn_begin_closing(struct ic_conn *c);

/* ---- small helpers ---------------------------------------------------- */

/* Truncating copy; dst always terminated. */
static void set_str(char *dst, size_t len, const char *src)
{
	size_t n = src ? strnlen(src, len - 1) : 0;

	if (n)
		memcpy(dst, src, n);
	dst[n] = '\0';
}

/* snprintf whose truncation is intended (messages, audit text). */
static void fmt_str(char *dst, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void fmt_str(char *dst, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(dst, len, fmt, ap);
	va_end(ap);
}

static bool host_equal(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b);

	if (la && a[la - 1] == '.')
		la--;
	if (lb && b[lb - 1] == '.')
		lb--;
	return la == lb && !strncasecmp(a, b, la);
}

/* Before each SSL call. ERR_clear_error() walks and wipes the whole
 * queue every time (a few per cent of a keep-alive request); it is empty
 * almost always, and peeking says so cheaply. */
static inline void ssl_clear_errors(void)
{
	if (ERR_peek_error())
		ERR_clear_error();
}

/* The last OpenSSL error as text, or errno's for SSL_ERROR_SYSCALL. */
static const char *ssl_err_text(int e, char *buf, size_t len)
{
	unsigned long le = ERR_peek_last_error();

	if (le) {
		const char *r = ERR_reason_error_string(le);

		fmt_str(buf, len, "%s", r ? r : "TLS error");
	} else if (e == SSL_ERROR_SYSCALL && errno) {
		fmt_str(buf, len, "%s", strerror(errno));
	} else if (e == SSL_ERROR_SYSCALL || e == SSL_ERROR_ZERO_RETURN) {
		fmt_str(buf, len, "connection closed");
	} else {
		fmt_str(buf, len, "TLS error %d", e);
	}
	ssl_clear_errors();
	return buf;
}

static int sock_error(int fd)
{
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		return errno;
	return err;
}

static void conn_set_detail(struct ic_conn *c, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void conn_set_detail(struct ic_conn *c, const char *fmt, ...)
{
	va_list ap;

	if (c->detail[0]) /* the first (root) cause */
		return;
	va_start(ap, fmt);
	vsnprintf(c->detail, sizeof(c->detail), fmt, ap);
	va_end(ap);
}

static const char *status_text(int status)
{
	switch (status) {
	case 400: return "Bad Request";
	case 403: return "Forbidden";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 421: return "Misdirected Request";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 502: return "Bad Gateway";
	case 505: return "HTTP Version Not Supported";
	default: return "Error";
	}
}

static enum egr_reason status_reason(int status)
{
	switch (status) {
	case 403: return EGR_REASON_RULE_DENY;
	case 421: return EGR_REASON_BAD_NAME;
	case 413:
	case 414:
	case 431: return EGR_REASON_TOO_LARGE;
	case 502: return EGR_REASON_UPSTREAM;
	case 500: return EGR_REASON_INTERNAL;
	default: return EGR_REASON_MALFORMED;
	}
}

/* ---- audit ------------------------------------------------------------ */

static void audit_fill_origin(const struct ic_conn *c, struct audit_record *r)
{
	r->proto = IPPROTO_TCP;
	r->cgroup = c->cgroup;
	r->cgroup_id = c->origin.cgroup_id;
	r->pid = c->origin.tgid;
	r->uid = c->origin.uid;
	memcpy(r->comm, c->origin.comm, EGR_COMM_LEN);
	r->comm[EGR_COMM_LEN] = '\0';
	r->has_dst = true;
	memcpy(r->dst.b, c->origin.dst_addr, sizeof(r->dst.b));
	r->dst_port = c->origin.dst_port;
	r->sni = c->plain ? NULL : c->host; /* a gateway's client sends none */
	r->host = c->host;
	r->alpn = c->plain ? NULL : "http/1.1";
	r->has_resolved = true;
	r->resolved = c->upstream;
	r->policy = c->policy_name;
	r->origin = c->plain ? "gateway" : "intercept";
	if (c->has_geo) {
		r->country = c->geo.country;
		r->asn = c->geo.asn;
		r->as_org = c->geo.as_org;
		r->geo_error = c->geo_error;
	}
}

/* One record per request: method, path (no query), status, body sizes
 * and the credential NAMES in the record's http part; detail only says
 * why a request was refused or failed. */
static void audit_req(struct ic_conn *c, const struct ic_req *e)
{
	struct audit *a = c->w->ic->params.audit;
	struct audit_record r;

	if (!a)
		return;
	memset(&r, 0, sizeof(r));
	audit_fill_origin(c, &r);
	r.start = e->start;
	clock_gettime(CLOCK_REALTIME, &r.end);
	r.verdict = e->verdict;
	r.reason = e->reason;
	r.rule = e->rule[0] ? e->rule : NULL;
	r.bytes_up = e->up;
	r.bytes_down = e->down;
	r.http.method = e->method[0] ? e->method : "-";
	r.http.path = e->path[0] ? e->path : NULL;
	r.http.status = e->status;
	r.http.creds = e->creds[0] ? e->creds : NULL;
	r.http.req_body = e->req_body;
	r.http.resp_body = e->resp_body;
	r.detail = e->why[0] ? e->why : NULL;
	audit_write(a, &r);
}

/* A connection that ended without any request (handshake failure,
 * timeout): one record, so it does not vanish from the log. */
static void audit_conn(struct ic_conn *c)
{
	struct audit *a = c->w->ic->params.audit;
	struct audit_record r;

	if (!a)
		return;
	memset(&r, 0, sizeof(r));
	audit_fill_origin(c, &r);
	r.start = c->start;
	clock_gettime(CLOCK_REALTIME, &r.end);
	r.verdict = c->verdict;
	r.reason = c->reason;
	r.rule = c->allow_rule;
	r.detail = c->detail[0] ? c->detail : "no request";
	audit_write(a, &r);
}

/* ---- request FIFO ----------------------------------------------------- */

static struct ic_req *req_new(struct ic_conn *c)
{
	struct ic_req *e = c->spare;

	if (e) {
		c->spare = NULL;
		memset(e, 0, sizeof(*e));
	} else {
		e = calloc(1, sizeof(*e));
		if (!e)
			return NULL;
	}
	clock_gettime(CLOCK_REALTIME, &e->start);
	e->verdict = EGR_VERDICT_ALLOW;
	e->reason = EGR_REASON_RULE_ALLOW;
	c->n_requests++;
	return e;
}

static void req_push(struct ic_conn *c, struct ic_req *e)
{
	e->next = NULL;
	if (c->q_tail)
		c->q_tail->next = e;
	else
		c->q_head = e;
	c->q_tail = e;
	c->q_n++;
}

/* Audit and free the front entry. */
static void req_pop(struct ic_conn *c)
{
	struct ic_req *e = c->q_head;

	if (!e)
		return;
	c->q_head = e->next;
	if (!c->q_head)
		c->q_tail = NULL;
	c->q_n--;
	if (c->cur_up == e)
		c->cur_up = NULL;
	audit_req(c, e);
	if (!c->spare)
		c->spare = e;   /* keep-alive: no malloc/free per request */
	else
		free(e);
}

/* Everything still queued will never be answered. */
static void req_abort_all(struct ic_conn *c, const char *why)
{
	while (c->q_head) {
		struct ic_req *e = c->q_head;

		if (!e->local) {
			if (!e->why[0])
				set_str(e->why, sizeof(e->why), why);
			if (e->verdict == EGR_VERDICT_ALLOW && !e->status)
				e->reason = EGR_REASON_UPSTREAM;
		}
		req_pop(c);
	}
}

/* ---- connection lifecycle --------------------------------------------- */

static void conn_close_fd(struct ic_conn *c, int *fd)
{
	if (*fd < 0)
		return;
	if (c->w && c->started)
		loop_del(c->w->loop, *fd);
	close(*fd);
	*fd = -1;
}

static void sock_drop_gathered(struct ic_sock *s);

static void conn_free(struct ic_conn *c)
{
	conn_close_fd(c, &c->ufd);
	conn_close_fd(c, &c->cfd);
	sock_drop_gathered(&c->us);
	sock_drop_gathered(&c->cs);
	SSL_free(c->cssl); /* frees the internal half of the pair */
	BIO_free(c->cint); /* plain: no SSL owns it */
	BIO_free(c->cnet);
	/* OpenSSL marks the session of a connection freed without our
	 * close_notify as not resumable (a TLS 1.0 rule, dropped since
	 * TLS 1.1), and that session object is the one in the upstream
	 * session cache: every upstream that closes first (Connection:
	 * close) or any early end would cost the next connection a full
	 * handshake and chain verification. Cached sessions come only from
	 * verified handshakes; how a connection ended does not change that. */
	if (c->ussl && c->u_hs_done)
		SSL_set_shutdown(c->ussl, SSL_get_shutdown(c->ussl) | SSL_SENT_SHUTDOWN);
	SSL_free(c->ussl);
	httpreq_free(c->hr);
	while (c->q_head) {
		struct ic_req *e = c->q_head;

		c->q_head = e->next;
		free(e);
	}
	free(c->spare);
	reqrule_host_free(&c->rules);
	free(c->policy_name);
	free(c->allow_rule);
	free(c->cgroup);
	free(c->peeked);
	free(c->up_ca_path);
	if (c->release)
		c->release(c->release_ctx, c->origin.cgroup_id);
	free(c);
}

static void conn_finish(struct ic_conn *c)
{
	struct ic_worker *w = c->w;

	loop_timer_stop(&c->timer);
	log_debug("intercept: %s: %llu request(s), closed%s%s", c->host,
		  (unsigned long long)c->n_requests, c->detail[0] ? ": " : "", c->detail);
	req_abort_all(c, c->detail[0] ? c->detail : "connection closed");
	if (!c->n_requests)
		audit_conn(c);
	pthread_mutex_lock(&w->conns_lock);
	if (c->prev)
		c->prev->next = c->next;
	else
		w->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	w->n_conns--;
	pthread_mutex_unlock(&w->conns_lock);
	conn_free(c);
}

static void conn_enter(struct ic_conn *c)
{
	c->busy++;
}

static void conn_leave(struct ic_conn *c)
{
	if (--c->busy == 0 && c->close_scheduled)
		conn_finish(c);
}

/* Hard close: something failed; the client sees the connection drop. */
static void conn_fail(struct ic_conn *c, bool reset_client)
{
	if (reset_client && c->cfd >= 0) {
		struct linger lg = { .l_onoff = 1, .l_linger = 0 };

		setsockopt(c->cfd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	}
	c->close_scheduled = true;
}

/* ---- socket BIO ------------------------------------------------------- */

static BIO_METHOD *ic_bio_meth;
static pthread_once_t ic_bio_once = PTHREAD_ONCE_INIT;

static int ic_bio_read(BIO *b, char *buf, int len)
{
	struct ic_sock *s = BIO_get_data(b);
	ssize_t n;

	BIO_clear_retry_flags(b);
	if (len <= 0)
		return 0;
	if (s->pre_len) {
		size_t k = s->pre_len < (size_t)len ? s->pre_len : (size_t)len;

		memcpy(buf, s->pre, k);
		s->pre += k;
		s->pre_len -= k;
		return (int)k;
	}
	if (*s->fd < 0 || *s->eof)
		return 0;
	if (!s->rd_ready) {
		BIO_set_retry_read(b);
		return -1;
	}
	for (;;) {
		n = recv(*s->fd, buf, (size_t)len, MSG_DONTWAIT);
		if (n > 0) {
			/* A stream socket returns less than asked only
			 * when its queue ran dry. */
			if (n < len)
				s->rd_ready = false;
			__atomic_store_n(&s->rx, s->rx + (uint64_t)n, __ATOMIC_RELAXED);
			s->c->last_active_ms = loop_now_ms(s->c->w->loop);
			return (int)n;
		}
		if (n == 0) {
			*s->eof = true;
			return 0;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK) {
			s->rd_ready = false;
			BIO_set_retry_read(b);
		}
		return -1; /* errno stays for SSL_ERROR_SYSCALL */
	}
}

static void *wbuf_get(struct ic_worker *w)
{
	void *p = w->wbuf_spare;

	if (!p)
		return malloc(IC_WBUF_SIZE);
	memcpy(&w->wbuf_spare, p, sizeof(void *));
	w->n_wbuf_spare--;
	return p;
}

static void wbuf_put(struct ic_worker *w, void *p)
{
	if (!p)
		return;
	if (w->n_wbuf_spare >= IC_WBUF_SPARE) {
		free(p);
		return;
	}
	memcpy(p, &w->wbuf_spare, sizeof(void *));
	w->wbuf_spare = p;
	w->n_wbuf_spare++;
}

static void wbuf_spare_free(struct ic_worker *w)
{
	while (w->wbuf_spare)
		free(wbuf_get(w));
}

/* Bytes gathered and not yet sent. */
static size_t sock_gathered(const struct ic_sock *s)
{
	return s->wlen - s->woff;
}

/* The socket is gone: what it gathered goes nowhere. */
static void sock_drop_gathered(struct ic_sock *s)
{
	if (s->wbuf && s->c)
		wbuf_put(s->c->w, s->wbuf);
	s->wbuf = NULL;
	s->wlen = s->woff = 0;
}

/* One send() on the socket, with its bookkeeping: bytes counted, activity
 * noted, the socket marked full when it took less or said EAGAIN. Returns
 * what send() returned (errno kept, EINTR retried). */
static ssize_t sock_send(struct ic_sock *s, const void *buf, size_t len)
{
	ssize_t n;

	do
		n = send(*s->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n > 0) {
		if ((size_t)n < len)
			s->wr_ready = false;
		__atomic_store_n(&s->tx, s->tx + (uint64_t)n, __ATOMIC_RELAXED);
		s->c->last_active_ms = loop_now_ms(s->c->w->loop);
	} else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
		s->wr_ready = false;
	}
	return n;
}

/* Sends what the socket gathered. 1: all of it went (the buffer goes back
 * to the pool), 0: the socket is full (the rest waits for EPOLLOUT), -1:
 * the socket failed (errno). */
static int sock_send_gathered(struct ic_sock *s)
{
	while (s->woff < s->wlen) {
		ssize_t n;

		if (*s->fd < 0) {
			errno = EBADF;
			return -1;
		}
		if (!s->wr_ready)
			return 0;
		n = sock_send(s, s->wbuf + s->woff, s->wlen - s->woff);
		if (n > 0) {
			s->woff += (size_t)n;
			continue;
		}
		if (n < 0 && !s->wr_ready)
			return 0; /* EAGAIN */
		if (n == 0)
			errno = EPIPE;
		return -1;
	}
	sock_drop_gathered(s);
	return 1;
}

/* A write that is not gathered: straight to the socket. */
static int sock_send_now(BIO *b, struct ic_sock *s, const char *buf, int len)
{
	ssize_t n;

	if (!s->wr_ready) {
		BIO_set_retry_write(b);
		return -1;
	}
	n = sock_send(s, buf, (size_t)len);
	if (n > 0)
		return (int)n;
	if (n < 0 && !s->wr_ready)
		BIO_set_retry_write(b);
	return -1; /* errno stays for SSL_ERROR_SYSCALL */
}

/* Full-size records are gathered and leave when the buffer fills or the
 * pass ends. Anything smaller (handshake messages, alerts, a response's
 * last record) leaves at once, behind whatever was gathered: its peer may
 * be waiting for it (a client computes its key share while we sign). */
static int ic_bio_write(BIO *b, const char *buf, int len)
{
	struct ic_sock *s = BIO_get_data(b);
	size_t k;

	BIO_clear_retry_flags(b);
	if (len <= 0)
		return 0;
	if (*s->fd < 0) {
		errno = EBADF;
		return -1;
	}
	if ((size_t)len < IC_GATHER_MIN && !sock_gathered(s))
		return sock_send_now(b, s, buf, len);
	if (s->wbuf && s->wlen == IC_WBUF_SIZE) {
		int r = sock_send_gathered(s);

		if (r < 0)
			return -1; /* errno stays for SSL_ERROR_SYSCALL */
		if (!r) {
			BIO_set_retry_write(b);
			return -1;
		}
	}
	if (!s->wbuf) {
		s->wbuf = wbuf_get(s->c->w);
		if (!s->wbuf) {
			errno = ENOMEM;
			return -1;
		}
		s->wlen = s->woff = 0;
	}
	k = IC_WBUF_SIZE - s->wlen;
	if (k > (size_t)len)
		k = (size_t)len;
	memcpy(s->wbuf + s->wlen, buf, k);
	s->wlen += k;
	/* Taken either way; a failure shows at the next send. */
	if ((size_t)len < IC_GATHER_MIN)
		sock_send_gathered(s);
	return (int)k;
}

static long ic_bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
	struct ic_sock *s = BIO_get_data(b);
	int r;

	(void)num;
	(void)ptr;
	switch (cmd) {
	case BIO_CTRL_FLUSH:
		/* OpenSSL flushes after a handshake flight and an alert. */
		BIO_clear_retry_flags(b);
		if (!s || !s->wbuf)
			return 1;
		r = sock_send_gathered(s);
		if (!r)
			BIO_set_retry_write(b);
		return r;
	case BIO_CTRL_EOF:
		return s && !s->pre_len && *s->eof;
	case BIO_CTRL_PENDING:
		return s ? (long)s->pre_len : 0;
	case BIO_CTRL_WPENDING:
		return s ? (long)sock_gathered(s) : 0;
	default:
		return 0;
	}
}

static int ic_bio_create(BIO *b)
{
	BIO_set_init(b, 1);
	return 1;
}

static void ic_bio_meth_init(void)
{
	BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK,
				     "egressd socket");

	if (m && (!BIO_meth_set_read(m, ic_bio_read) || !BIO_meth_set_write(m, ic_bio_write) ||
		  !BIO_meth_set_ctrl(m, ic_bio_ctrl) || !BIO_meth_set_create(m, ic_bio_create))) {
		BIO_meth_free(m);
		m = NULL;
	}
	ic_bio_meth = m;
}

/* Whether an SSL_read on this socket's SSL can only say WANT_READ: the
 * socket was found drained (epoll says when that changes), nothing is
 * handed in before it, no EOF to report, and OpenSSL holds no bytes it
 * read ahead. conn_run() would otherwise make several such calls per
 * request (each a walk through OpenSSL's record layer and error queue). */
static bool sock_idle(const struct ic_sock *s, const SSL *ssl)
{
	return !s->rd_ready && !s->pre_len && !*s->eof && !SSL_has_pending(ssl);
}

/* A BIO over one of the connection's sockets; NULL if out of memory. The
 * SSL it is given to owns it; s lives in the connection. */
static BIO *ic_bio_new(struct ic_conn *c, struct ic_sock *s, int *fd, bool *eof)
{
	BIO *b;

	pthread_once(&ic_bio_once, ic_bio_meth_init);
	if (!ic_bio_meth)
		return NULL;
	b = BIO_new(ic_bio_meth);
	if (!b)
		return NULL;
	s->c = c;
	s->fd = fd;
	s->eof = eof;
	s->rd_ready = s->wr_ready = true; /* until a call says otherwise */
	BIO_set_data(b, s);
	return b;
}

/* ---- client transport ------------------------------------------------- */

/* Socket -> pair (gateway mode). Returns true if bytes moved. */
static bool cli_read_socket(struct ic_conn *c, size_t *budget)
{
	bool moved = false;

	while (!c->c_eof && *budget) {
		char *p;
		int space = BIO_nwrite0(c->cnet, &p);
		ssize_t n;

		if (space <= 0)
			break;
		n = recv(c->cfd, p, (size_t)space, MSG_DONTWAIT);
		if (n > 0) {
			BIO_nwrite(c->cnet, &p, (int)n);
			*budget = (size_t)n >= *budget ? 0 : *budget - (size_t)n;
			c->last_active_ms = loop_now_ms(c->w->loop);
			moved = true;
			continue;
		}
		if (n == 0) {
			c->c_eof = true;
			moved = true;
			break;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			break;
		conn_set_detail(c, "client read: %s", strerror(errno));
		conn_fail(c, false);
		return true;
	}
	return moved;
}

/* Pair -> socket (gateway mode; TLS writes go out in SSL_write). Returns
 * true if bytes moved. */
static bool cli_flush(struct ic_conn *c)
{
	bool moved = false;

	while (c->cnet && c->cfd >= 0) {
		char *p;
		int avail = BIO_nread0(c->cnet, &p);
		ssize_t n;

		if (avail <= 0)
			break;
		n = send(c->cfd, p, (size_t)avail, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n > 0) {
			BIO_nread(c->cnet, &p, (int)n);
			c->last_active_ms = loop_now_ms(c->w->loop);
			moved = true;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		conn_set_detail(c, "client write: %s", n < 0 ? strerror(errno) : "closed");
		conn_fail(c, false);
		return true;
	}
	return moved;
}

/* Plaintext to the client. Returns bytes taken (0: pair full). */
static size_t cli_write(struct ic_conn *c, const void *buf, size_t len)
{
	char eb[128];
	int n, e;

	if (!len)
		return 0;
	if (c->plain) {
		n = BIO_write(c->cint, buf, len > INT32_MAX ? INT32_MAX : (int)len);
		if (n > 0)
			return (size_t)n;
		if (BIO_should_retry(c->cint))
			return 0; /* the pair is full: flush first */
		conn_set_detail(c, "client write: buffer error");
		conn_fail(c, false);
		return 0;
	}
	ssl_clear_errors();
	n = SSL_write(c->cssl, buf, len > INT32_MAX ? INT32_MAX : (int)len);
	if (n > 0)
		return (size_t)n;
	e = SSL_get_error(c->cssl, n);
	if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
		return 0;
	conn_set_detail(c, "client TLS write: %s", ssl_err_text(e, eb, sizeof(eb)));
	conn_fail(c, false);
	return 0;
}

/* Gateway mode: the pair's plaintext into creq. */
static bool cli_read_plain(struct ic_conn *c)
{
	bool moved = false;

	while (!c->c_tls_eof && c->creq_len < sizeof(c->creq)) {
		int n = BIO_read(c->cint, c->creq + c->creq_len,
				 (int)(sizeof(c->creq) - c->creq_len));

		if (n > 0) {
			c->creq_len += (size_t)n;
			moved = true;
			continue;
		}
		if (c->c_eof && !BIO_ctrl_pending(c->cint)) {
			c->c_tls_eof = true;
			moved = true;
		}
		break;
	}
	return moved;
}

/* SSL_read from the client into creq; at most *budget bytes per wakeup
 * (fairness between the worker's connections). */
static bool cli_decrypt(struct ic_conn *c, size_t *budget)
{
	bool moved = false;
	char eb[128];

	if (c->plain)
		return cli_read_plain(c);

	while (!c->c_tls_eof && c->creq_len < sizeof(c->creq) && *budget) {
		int n, e;

		if (sock_idle(&c->cs, c->cssl))
			break;
		ssl_clear_errors();
		n = SSL_read(c->cssl, c->creq + c->creq_len,
			     (int)(sizeof(c->creq) - c->creq_len));
		if (n > 0) {
			c->creq_len += (size_t)n;
			*budget = (size_t)n >= *budget ? 0 : *budget - (size_t)n;
			moved = true;
			continue;
		}
		e = SSL_get_error(c->cssl, n);
		if (e == SSL_ERROR_WANT_READ) {
			/* Nothing buffered; if the socket is at EOF too, the
			 * client left without close_notify: end of stream. */
			if (c->c_eof) {
				c->c_tls_eof = true;
				moved = true;
			}
			break;
		}
		if (e == SSL_ERROR_WANT_WRITE)
			break;
		if (e == SSL_ERROR_ZERO_RETURN) {
			c->c_tls_eof = true;
			moved = true;
			break;
		}
		conn_set_detail(c, "client TLS read: %s", ssl_err_text(e, eb, sizeof(eb)));
		conn_fail(c, false);
		return true;
	}
	return moved;
}

static bool cli_handshake(struct ic_conn *c)
{
	char eb[128];
	int n, e;

	ssl_clear_errors();
	n = SSL_do_handshake(c->cssl);
	if (n == 1) {
		c->c_hs_done = true;
		return true;
	}
	e = SSL_get_error(c->cssl, n);
	if (e == SSL_ERROR_WANT_WRITE)
		return false;
	if (e == SSL_ERROR_WANT_READ && !c->c_eof)
		return false;
	if (c->c_eof && !c->sni_bad) {
		ssl_clear_errors();
		conn_set_detail(c, "client closed during the TLS handshake");
		c->no_notify = true;
		conn_begin_closing(c);
		return true;
	}
	if (c->sni_bad) {
		c->verdict = EGR_VERDICT_DENY;
		c->reason = EGR_REASON_BAD_NAME;
		ssl_clear_errors();
	} else {
		conn_set_detail(c, "client TLS handshake: %s", ssl_err_text(e, eb, sizeof(eb)));
	}
	/* The alert went out with the handshake's last write: close. */
	c->no_notify = true;
	conn_begin_closing(c);
	return true;
}

/* Servername callback: the SNI must be the name the proxy decided on;
 * then switch to that name's leaf context. */
static int ic_sni_cb(SSL *ssl, int *alert, void *arg)
{
	struct intercept *ic = arg;
	struct ic_conn *c = SSL_get_app_data(ssl);
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	struct ca_leaf leaf;
	int err;

	if (!c)
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	if (!name || !host_equal(name, c->host)) {
		c->sni_bad = true;
		conn_set_detail(c, "client TLS SNI %.80s is not %s", name ? name : "(none)",
				c->host);
		*alert = SSL_AD_UNRECOGNIZED_NAME;
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	err = ca_leaf_for(__atomic_load_n(&ic->params.ca, __ATOMIC_ACQUIRE), c->host, &leaf);
	if (err) {
		conn_set_detail(c, "no certificate for %s: %s", c->host, strerror(-err));
		*alert = SSL_AD_INTERNAL_ERROR;
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	SSL_set_SSL_CTX(ssl, leaf.ctx);
	ca_leaf_release(&leaf); /* the SSL holds its own reference */
	return SSL_TLSEXT_ERR_OK;
}

/* ---- upstream transport (socket BIO) ---------------------------------- */

static unsigned sess_key(const struct ic_conn *c, char *key, size_t len)
{
	char abuf[INET6_ADDRSTRLEN];
	unsigned h = 2166136261u;

	/* The context stands for the trust store the session was verified
	 * against. */
	fmt_str(key, len, "%s|%s|%u|%p", c->host, addr_to_str(&c->upstream, abuf, sizeof(abuf)),
		c->upstream_port, (void *)c->up_ctx);
	for (const char *p = key; *p; p++)
		h = (h ^ (unsigned char)*p) * 16777619u;
	return h % IC_SESS_SLOTS;
}

/* OpenSSL hands us a new session (TLS 1.3: a ticket after the handshake).
 * Returning 1 keeps the reference. */
static int ic_new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
	struct ic_conn *c = SSL_get_app_data(ssl);
	struct intercept *ic;
	struct ic_sess *slot;
	char key[sizeof(slot->key)];
	unsigned i;

	if (!c || !c->w || SSL_get_verify_result(ssl) != X509_V_OK)
		return 0;
	ic = c->w->ic;
	i = sess_key(c, key, sizeof(key));
	slot = &ic->sess[i];
	pthread_mutex_lock(&ic->sess_lock);
	SSL_SESSION_free(slot->sess);
	slot->sess = sess;
	memcpy(slot->key, key, sizeof(key));
	pthread_mutex_unlock(&ic->sess_lock);
	return 1;
}

static void up_session_resume(struct ic_conn *c)
{
	struct intercept *ic = c->w->ic;
	struct ic_sess *slot;
	char key[sizeof(slot->key)];

	slot = &ic->sess[sess_key(c, key, sizeof(key))];
	pthread_mutex_lock(&ic->sess_lock);
	if (slot->sess && !strcmp(slot->key, key) && SSL_SESSION_is_resumable(slot->sess))
		SSL_set_session(c->ussl, slot->sess); /* takes its own reference */
	pthread_mutex_unlock(&ic->sess_lock);
}

static void up_close(struct ic_conn *c, bool notify)
{
	if (c->ufd < 0)
		return;
	if (notify && c->u_hs_done && !c->u_eof) {
		/* Best effort close_notify; never wait for the peer's. */
		ssl_clear_errors();
		SSL_shutdown(c->ussl);
		ssl_clear_errors();
	}
	if (notify)
		sock_send_gathered(&c->us); /* best effort too */
	conn_close_fd(c, &c->ufd);
	sock_drop_gathered(&c->us);
	c->u_eof = true;
	c->u_want_write = false;
}

static bool up_handshake(struct ic_conn *c)
{
	char eb[128];
	long vr;
	int n, e;

	ssl_clear_errors();
	n = SSL_do_handshake(c->ussl);
	if (n == 1) {
		c->u_hs_done = true;
		c->last_active_ms = loop_now_ms(c->w->loop);
		return true;
	}
	e = SSL_get_error(c->ussl, n);
	if (e == SSL_ERROR_WANT_READ) {
		c->u_hs_want = LOOP_READ;
		return false;
	}
	if (e == SSL_ERROR_WANT_WRITE) {
		c->u_hs_want = LOOP_WRITE;
		return false;
	}
	vr = SSL_get_verify_result(c->ussl);
	if (vr != X509_V_OK)
		fmt_str(c->u_err, sizeof(c->u_err),
			 "upstream certificate for %s failed verification: %s", c->host,
			 X509_verify_cert_error_string(vr));
	else
		fmt_str(c->u_err, sizeof(c->u_err), "upstream TLS handshake with %s failed: %s",
			 c->host, ssl_err_text(e, eb, sizeof(eb)));
	ssl_clear_errors();
	log_debug("intercept: %s", c->u_err);
	c->u_failed = true;
	up_close(c, false);
	return true;
}

/* Upstream data is over (EOF or error): the parser may complete a body
 * delimited by the close. */
static void up_set_eof(struct ic_conn *c, const char *why)
{
	if (why)
		conn_set_detail(c, "%s", why);
	up_close(c, false);
}

static bool up_read(struct ic_conn *c)
{
	bool moved = false;
	char eb[128], msg[200];

	while (!c->u_eof && c->resp_len < sizeof(c->resp)) {
		int n, e;

		if (sock_idle(&c->us, c->ussl))
			break;
		ssl_clear_errors();
		n = SSL_read(c->ussl, c->resp + c->resp_len, (int)(sizeof(c->resp) - c->resp_len));
		if (n > 0) {
			c->resp_len += (size_t)n;
			c->last_active_ms = loop_now_ms(c->w->loop);
			moved = true;
			continue;
		}
		e = SSL_get_error(c->ussl, n);
		if (e == SSL_ERROR_WANT_READ)
			break;
		if (e == SSL_ERROR_WANT_WRITE) {
			c->u_want_write = true;
			break;
		}
		if (e == SSL_ERROR_ZERO_RETURN) {
			up_set_eof(c, NULL);
		} else {
			fmt_str(msg, sizeof(msg), "upstream TLS read: %s",
				 ssl_err_text(e, eb, sizeof(eb)));
			up_set_eof(c, msg);
		}
		moved = true;
		break;
	}
	return moved;
}

/* Write what is waiting for upstream: request bytes from httpreq, or the
 * tunnel's raw bytes. */
static bool up_write(struct ic_conn *c)
{
	bool moved = false;
	char eb[128], msg[200];

	c->u_want_write = false;
	while (!c->u_eof && c->ufd >= 0) {
		const uint8_t *p;
		size_t len;
		int n, e;

		if (c->tunnel) {
			p = c->creq;
			len = c->creq_len;
		} else {
			p = httpreq_out(c->hr, &len);
		}
		if (!len)
			break;
		ssl_clear_errors();
		n = SSL_write(c->ussl, p, len > INT32_MAX ? INT32_MAX : (int)len);
		if (n > 0) {
			if (c->tunnel) {
				memmove(c->creq, c->creq + n, c->creq_len - (size_t)n);
				c->creq_len -= (size_t)n;
			} else {
				httpreq_out_consume(c->hr, (size_t)n);
			}
			c->last_active_ms = loop_now_ms(c->w->loop);
			moved = true;
			continue;
		}
		e = SSL_get_error(c->ussl, n);
		if (e == SSL_ERROR_WANT_WRITE) {
			c->u_want_write = true;
			break;
		}
		if (e == SSL_ERROR_WANT_READ)
			break; /* we read upstream whenever resp has room */
		fmt_str(msg, sizeof(msg), "upstream TLS write: %s", ssl_err_text(e, eb, sizeof(eb)));
		up_set_eof(c, msg);
		moved = true;
		break;
	}
	return moved;
}

/* ---- requests --------------------------------------------------------- */

/* Path for the audit record: the normalized path when reqrule made one,
 * else the target up to the query (it may be what was refused). */
static void req_set_path(struct ic_req *e, const char *norm, const char *target)
{
	size_t n;

	if (norm && norm[0]) {
		set_str(e->path, sizeof(e->path), norm);
		return;
	}
	if (!target)
		return;
	n = strcspn(target, "?#");
	if (n >= sizeof(e->path))
		n = sizeof(e->path) - 1;
	memcpy(e->path, target, n);
	e->path[n] = '\0';
}

/* A refusal we answer ourselves, queued behind the requests in flight. */
static void req_refuse_local(struct ic_conn *c, struct ic_req *e, int status,
			     enum egr_reason reason, const char *why)
{
	e->local = true;
	e->status = status;
	e->verdict = EGR_VERDICT_DENY;
	e->reason = reason;
	set_str(e->why, sizeof(e->why), why);
	req_push(c, e);
	c->hr_mode = HR_REFUSED;
}

/* Credentials for an allowed request. Returns the number of sets, or
 * -1 with why filled (the request is then answered 502). */
static int req_creds(struct ic_conn *c, const struct reqrule_result *res,
		     struct httpreq_set *sets, struct ic_req *e, char *why, size_t whylen)
{
	struct ic_worker *w = c->w;
	size_t i, n = 0, off = 0;

	for (i = 0; i < res->n_creds && i < REQRULE_MAX_CREDS; i++) {
		const struct reqrule_cred *cr = res->creds[i];
		char err[512];
		size_t len = 0;
		int rc;

		rc = reqrule_cred_resolve(cr, w->credval[n], sizeof(w->credval[n]), &len,
					  err, sizeof(err));
		if (rc) {
			fmt_str(why, whylen, "credential %s unavailable: %s", cr->name, err);
			return -1;
		}
		sets[n].name = cr->header;
		sets[n].value = w->credval[n];
		n++;
		off += (size_t)snprintf(e->creds + off, off < sizeof(e->creds) ?
					sizeof(e->creds) - off : 0,
					"%s%s", off ? "," : "", cr->name);
		if (off >= sizeof(e->creds))
			off = sizeof(e->creds) - 1;
	}
	return (int)n;
}

static void creds_wipe(struct ic_worker *w, int n)
{
	for (int i = 0; i < n; i++)
		explicit_bzero(w->credval[i], sizeof(w->credval[i]));
}

/*
 * Gateway mode: does Host name the gateway the client connected to? Its
 * address (IPv6 in brackets) or "localhost", with the gateway's port (or
 * none for port 80). The gateway exists only for this cgroup and the
 * upstream is fixed, so another name cannot front anything; but a page
 * whose own name was rebound to the gateway address (DNS rebinding, a
 * browser inside the cgroup) would send that name, and must not reach a
 * credentialed upstream.
 */
static bool gw_host_ok(const struct ic_conn *c, const char *host)
{
	char name[INET6_ADDRSTRLEN + 2];
	const char *port = NULL, *hs = host;
	struct egr_addr a;
	size_t hlen;
	unsigned long v;
	char *end;

	if (host[0] == '[') {
		const char *rb = strchr(host, ']');

		if (!rb || (rb[1] && rb[1] != ':'))
			return false;
		hs = host + 1;
		hlen = (size_t)(rb - hs);
		port = rb[1] ? rb + 2 : NULL;
	} else {
		const char *colon = strchr(host, ':');

		if (colon && strchr(colon + 1, ':'))
			return false;
		hlen = colon ? (size_t)(colon - host) : strlen(host);
		port = colon ? colon + 1 : NULL;
	}
	if (!hlen || hlen >= sizeof(name))
		return false;
	memcpy(name, hs, hlen);
	name[hlen] = '\0';
	if (port) {
		if (!*port || strspn(port, "0123456789") != strlen(port) || strlen(port) > 5)
			return false;
		v = strtoul(port, &end, 10);
		if (v != c->origin.dst_port)
			return false;
	} else if (c->origin.dst_port != 80) {
		return false;
	}
	if (host[0] != '[' && (!strcasecmp(name, "localhost") || !strcasecmp(name, "localhost.")))
		return true;
	if (addr_parse(name, &a))
		return false;
	if (host[0] == '[' && !strchr(name, ':'))
		return false; /* "[127.0.0.1]" */
	return !memcmp(a.b, c->origin.dst_addr, sizeof(a.b));
}

/* Gateway mode: refusals before the rules (always enforced, also in
 * audit mode: such a request cannot be forwarded as the agent meant it).
 * true if the request was refused. */
static bool gw_refuse(struct ic_conn *c, const struct httpreq_head *h, struct ic_req *e)
{
	const char *bad = NULL;
	char why[320];
	int st = 0;

	if (h->target[0] != '/' && strcmp(h->target, "*")) {
		st = 400;
		bad = "the gateway takes origin-form request targets (/path), "
		      "not absolute-form or CONNECT";
	} else if (!h->host || !*h->host) {
		st = 400;
		bad = "missing Host";
	} else if (!gw_host_ok(c, h->host)) {
		st = 421;
		bad = "Host does not name the gateway";
	}
	if (!st)
		return false;
	req_set_path(e, NULL, h->target);
	if (st == 421)
		fmt_str(why, sizeof(why), "%s (Host %.120s, gateway %s)", bad, h->host,
			c->gw_name);
	else
		fmt_str(why, sizeof(why), "%s", bad);
	httpreq_refuse(c->hr, st, bad);
	req_refuse_local(c, e, st, status_reason(st), why);
	return true;
}

/* Gateway mode: the gateway's rules. The Host was checked against the
 * gateway and is replaced, so the rules see the upstream's name. */
static int gw_check(const struct ic_conn *c, const struct httpreq_head *h,
		    struct reqrule_result *res)
{
	struct reqrule_request req = {
		.method = h->method,
		.method_override = h->method_override,
		.target = h->target,
		.host = c->host,
		.has_length = h->has_length,
		.content_length = h->content_length,
	};

	return reqrule_check(&c->rules, c->host, &req, res);
}

static void on_head(struct ic_conn *c)
{
	const struct httpreq_head *h = httpreq_head(c->hr);
	struct reqrule_result res;
	struct httpreq_set sets[REQRULE_MAX_CREDS + 1];
	_Static_assert(REQRULE_MAX_CREDS + 1 <= HTTPREQ_MAX_SETS,
		       "httpreq_accept takes every credential and a gateway's Host");
	struct ic_req *e;
	char why[320];
	int st, n, rc, nset;

	e = req_new(c);
	if (!e) {
		conn_set_detail(c, "out of memory");
		conn_fail(c, true);
		return;
	}
	set_str(e->method, sizeof(e->method), h->method);
	e->is_head = !strcmp(h->method, "HEAD");
	e->is_connect = !strcmp(h->method, "CONNECT");
	e->upgrade = h->upgrade;

	if (c->u_failed) {
		req_set_path(e, NULL, h->target);
		httpreq_refuse(c->hr, 502, "upstream failed");
		req_refuse_local(c, e, 502, EGR_REASON_UPSTREAM, c->u_err);
		return;
	}
	if (c->plain) {
		if (gw_refuse(c, h, e))
			return;
		st = gw_check(c, h, &res);
	} else {
		st = httpreq_check_port(c->hr, &c->rules, c->host, c->upstream_port, &res);
	}
	req_set_path(e, res.path, h->target);
	if (res.rule_name)
		set_str(e->rule, sizeof(e->rule), res.rule_name);
	if (c->audit_mode && (st == 403 || st == 421 || st == 413)) {
		/* Audit mode: what the rules would refuse is logged as
		 * "audit" and goes upstream without credentials (creds come
		 * only with an allow). Framing refusals (400, 431) stay:
		 * an ambiguous request cannot be forwarded safely. */
		e->verdict = EGR_VERDICT_AUDIT;
		e->reason = status_reason(st);
		fmt_str(e->why, sizeof(e->why), "would be %d: %s%s%s", st,
			res.reason ? res.reason : "refused",
			res.rule_name ? " rule " : "", res.rule_name ? res.rule_name : "");
		res.n_creds = 0;
		res.max_body = REQRULE_NO_LIMIT;
		st = 0;
	}
	if (st) {
		const char *reason = res.reason ? res.reason : "refused";

		if (res.rule_name)
			fmt_str(why, sizeof(why), "%s (rule %s)", reason, res.rule_name);
		else if (st == 421)
			fmt_str(why, sizeof(why), "%s (Host %.120s, TLS name %s)", reason,
				 h->host ? h->host : "-", c->host);
		else
			fmt_str(why, sizeof(why), "%s", reason);
		httpreq_refuse(c->hr, st, reason);
		req_refuse_local(c, e, st, status_reason(st), why);
		return;
	}
	n = req_creds(c, &res, sets, e, why, sizeof(why));
	if (n < 0) {
		httpreq_refuse(c->hr, 502, "credential unavailable");
		req_refuse_local(c, e, 502, EGR_REASON_INTERNAL, why);
		return;
	}
	/* The rules checked the Host against the name (a gateway: the
	 * gateway's address); the upstream gets the name, in one spelling. */
	nset = n;
	sets[nset].name = "Host";
	sets[nset++].value = c->up_hostval;
	rc = httpreq_accept(c->hr, sets, (size_t)nset, res.max_body);
	creds_wipe(c->w, n);
	if (rc)
		e->creds[0] = '\0'; /* nothing went upstream */
	if (rc == -EFBIG) {
		fmt_str(why, sizeof(why), "request body too large (rule %s)",
			 res.rule_name ? res.rule_name : "-");
		req_refuse_local(c, e, 413, EGR_REASON_TOO_LARGE, why);
		return;
	}
	if (rc) {
		/* -EINVAL: a credential value with control characters. */
		fmt_str(why, sizeof(why), "credential header could not be set: %s",
			 strerror(-rc));
		httpreq_refuse(c->hr, 502, "credential invalid");
		req_refuse_local(c, e, 502, EGR_REASON_INTERNAL, why);
		return;
	}
	/* A POST body's _method (Rails, Laravel) is checked at its end; in
	 * audit mode a method the rules refuse is only noted (EV_END), and
	 * not where they already would refuse the request; one naming HEAD
	 * or CONNECT, or a body that cannot be read, is refused in every
	 * mode: how the response is framed depends on it. A request that
	 * carries a credential is checked as in enforce mode, audit mode or
	 * not: credentials come only with an allow, and its head left with
	 * one before the body could be read, so a _method the rules refuse
	 * must not let the server have it whole. */
	if (httpreq_scan_body(c->hr, e->verdict == EGR_VERDICT_AUDIT ? UINT64_MAX :
			      res.override_ok, c->audit_mode && n == 0)) {
		st = httpreq_status(c->hr);
		e->creds[0] = '\0'; /* nothing went upstream */
		fmt_str(why, sizeof(why), "%s (rule %s)", httpreq_reason(c->hr),
			res.rule_name ? res.rule_name : "-");
		req_refuse_local(c, e, st, status_reason(st), why);
		return;
	}
	e->body_open = true;
	req_push(c, e);
	c->cur_up = e;
}

/* httpreq refused on its own (framing, smuggling, sizes). */
static void on_refused(struct ic_conn *c)
{
	int status = httpreq_status(c->hr);
	const char *reason = httpreq_reason(c->hr);
	bool partial = httpreq_partial(c->hr);
	struct ic_req *e;

	if (c->cur_up && (partial || c->cur_up->body_open)) {
		/* Refused in its body, after the head was accepted (and
		 * queued): this request is answered here, in its place in
		 * the queue. If part of it already went upstream, it must
		 * not be completed there: drop the connection; the client
		 * can be answered only if nothing of a response to anything
		 * has started. If none did (head and body in one read), the
		 * upstream connection still answers the requests before. */
		struct ic_req *cur = c->cur_up;
		size_t len;

		if (partial) {
			httpreq_out(c->hr, &len);
			httpreq_out_consume(c->hr, len);
			if (c->ufd >= 0) {
				struct linger lg = { .l_onoff = 1, .l_linger = 0 };

				setsockopt(c->ufd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
			}
			up_close(c, false);
		} else {
			cur->creds[0] = '\0'; /* its head never left */
		}
		cur->local = true;
		cur->status = status;
		cur->verdict = EGR_VERDICT_DENY;
		cur->reason = status_reason(status);
		cur->body_open = false;
		cur->req_body = httpreq_body_bytes(c->hr);
		set_str(cur->why, sizeof(cur->why), reason);
		c->hr_mode = HR_REFUSED;
		if (partial && (c->q_head != cur || cur->resp_started)) {
			conn_set_detail(c, "request refused mid-body: %s", reason);
			conn_fail(c, true);
		}
		return;
	}
	e = req_new(c);
	if (!e) {
		conn_fail(c, true);
		return;
	}
	req_refuse_local(c, e, status, status_reason(status), reason);
}

/* Decrypted client bytes through httpreq. */
static bool requests(struct ic_conn *c)
{
	bool moved = false;

	if (c->hr_mode == HR_REFUSED) {
		moved = c->creq_len > 0;
		c->creq_len = 0; /* nothing after a refusal goes anywhere */
		return moved;
	}
	if (c->hr_mode == HR_UPGRADE || c->tunnel || c->no_more_reqs)
		return false; /* (no_more_reqs: what follows waits for the close) */
	if (!c->hr) {
		c->hr = httpreq_new();
		if (!c->hr) {
			conn_set_detail(c, "out of memory");
			conn_fail(c, true);
			return true;
		}
	}
	while (!c->close_scheduled && c->hr_mode == HR_OPEN && !c->closing) {
		size_t before, after, used = 0, take;
		int ev;

		if (c->u_eof && !c->u_failed)
			break; /* nobody to send to; responses decide the end */
		httpreq_out(c->hr, &before);
		if (before >= IC_UP_OUT_MAX || c->q_n >= IC_MAX_INFLIGHT)
			break;
		take = c->creq_len < IC_FEED_CHUNK ? c->creq_len : IC_FEED_CHUNK;
		ev = httpreq_feed(c->hr, c->creq, take, &used);
		if (used) {
			memmove(c->creq, c->creq + used, c->creq_len - used);
			c->creq_len -= used;
			moved = true;
		}
		httpreq_out(c->hr, &after);
		if (c->cur_up && after > before)
			c->cur_up->up += after - before;
		switch (ev) {
		case HTTPREQ_EV_HEAD:
			httpreq_out(c->hr, &before);
			on_head(c);
			httpreq_out(c->hr, &after);
			if (c->cur_up && after > before)
				c->cur_up->up += after - before;
			moved = true;
			continue;
		case HTTPREQ_EV_END:
			if (c->cur_up) {
				struct ic_req *cur = c->cur_up;
				const char *sr = NULL;
				int ss = httpreq_scan_audit(c->hr, &sr);

				cur->body_open = false;
				cur->req_body = httpreq_body_bytes(c->hr);
				if (ss && cur->verdict != EGR_VERDICT_AUDIT) {
					cur->verdict = EGR_VERDICT_AUDIT;
					cur->reason = status_reason(ss);
					fmt_str(cur->why, sizeof(cur->why), "would be %d: %s", ss, sr);
				}
			}
			if (httpreq_scan_unread(c->hr)) {
				/* A body egressd could not read for _method
				 * went up (audit mode, or every method
				 * allowed): its server may act on a HEAD or a
				 * CONNECT named there and frame its answer so.
				 * Nothing more on this connection: no later
				 * request, no Upgrade, for a desync to act on. */
				c->no_more_reqs = true;
				if (c->cur_up) {
					struct ic_req *cur = c->cur_up;
					size_t wl = strlen(cur->why);

					cur->close_after = true;
					fmt_str(cur->why + wl, sizeof(cur->why) - wl,
						"%sbody not read for _method (%s): connection closed after this response",
						wl ? "; " : "", httpreq_scan_unread(c->hr));
				} else if (c->q_tail) {
					c->q_tail->close_after = true;
				} else {
					c->close_after_resp = true;
				}
				return true;
			}
			moved = true;
			continue;
		case HTTPREQ_EV_NEED_MORE:
			if (!c->creq_len)
				return moved;
			continue;
		case HTTPREQ_EV_UPGRADE:
			if (c->cur_up)
				c->cur_up->body_open = false;
			c->hr_mode = HR_UPGRADE;
			return true;
		case HTTPREQ_EV_REFUSED:
			on_refused(c);
			c->creq_len = 0;
			return true;
		default:
			conn_set_detail(c, "request stream: %s", strerror(ev < 0 ? -ev : EPROTO));
			conn_fail(c, true);
			return true;
		}
	}
	return moved;
}

/* ---- responses -------------------------------------------------------- */

static int rp_on_headers_complete(http_parser *p)
{
	struct ic_conn *c = p->data;
	struct ic_req *e = c->q_head;
	unsigned st = p->status_code;

	if (st == 101)
		return e->upgrade && !e->is_connect ? 2 : -1;
	if (e->is_connect && st >= 200 && st < 300)
		return 2; /* tunnel, no body */
	if (e->is_head)
		return 1;
	return 0;
}

static int rp_on_body(http_parser *p, const char *at, size_t len)
{
	struct ic_conn *c = p->data;

	(void)at;
	if (c->q_head)
		c->q_head->resp_body += len;
	return 0;
}

static int rp_on_message_complete(http_parser *p)
{
	http_parser_pause(p, 1); /* one message at a time */
	return 0;
}

static const http_parser_settings rp_settings = {
	.on_headers_complete = rp_on_headers_complete,
	.on_body = rp_on_body,
	.on_message_complete = rp_on_message_complete,
};

/* A response message ended (the parser paused). */
static void resp_message_done(struct ic_conn *c)
{
	struct ic_req *e = c->q_head;
	unsigned st = c->rp.status_code;

	if (st >= 100 && st < 200 && st != 101)
		return; /* interim (100 Continue): the final one follows */
	e->status = (int)st;
	if (c->rp.upgrade && e->upgrade) {
		/* 101 (or 2xx to CONNECT): the rest is another protocol. */
		req_pop(c);
		c->tunnel = true;
		c->hr_mode = HR_OPEN;
		c->resp_ready = c->resp_len;
		return;
	}
	if (e->upgrade)
		c->close_after_resp = true; /* upgrade refused: httpreq is done */
	if (e->body_open) {
		/* Answered before the request body was sent (early error):
		 * the rest of that body must not be taken for a request. */
		c->close_after_resp = true;
	}
	if (e->close_after)
		c->close_after_resp = true; /* its body went up unread */
	req_pop(c);
}

/* Build the answer to a local entry. */
static void local_answer(struct ic_conn *c, struct ic_req *e)
{
	char body[sizeof(e->why) + 320];
	int blen, n;

	if (e->status == 502 || e->status == 500)
		blen = snprintf(body, sizeof(body), "egressd: %s\n", e->why);
	else
		blen = snprintf(body, sizeof(body), "egressd: %s %s %s: %s\n", c->host,
				e->method[0] ? e->method : "-", e->path[0] ? e->path : "-",
				e->why);
	if (blen < 0 || (size_t)blen >= sizeof(body))
		blen = (int)strlen(body);
	n = snprintf(c->lout, sizeof(c->lout),
		     "HTTP/1.1 %d %s\r\n"
		     "Content-Type: text/plain\r\n"
		     "Content-Length: %d\r\n"
		     "Connection: close\r\n"
		     "\r\n%s",
		     e->status, status_text(e->status), blen, body);
	if (n < 0 || (size_t)n >= sizeof(c->lout))
		n = (int)strlen(c->lout);
	c->lout_len = (size_t)n;
	c->lout_off = 0;
	e->down = (uint64_t)n;
	e->resp_body = (uint64_t)blen;
	req_pop(c);
	req_abort_all(c, "aborted: an earlier request was refused");
	conn_begin_closing(c);
}

static bool responses(struct ic_conn *c)
{
	bool moved = false;

	while (!c->close_scheduled && !c->closing) {
		struct ic_req *e;

		if (c->resp_ready) {
			size_t n = cli_write(c, c->resp, c->resp_ready);

			if (n) {
				memmove(c->resp, c->resp + n, c->resp_len - n);
				c->resp_len -= n;
				c->resp_ready -= n;
				moved = true;
			}
			if (c->resp_ready || c->close_scheduled)
				break; /* the pair is full: flush first */
		}
		if (c->tunnel) {
			if (c->resp_len) {
				c->resp_ready = c->resp_len;
				continue;
			}
			if (c->u_eof || (c->c_tls_eof && !c->creq_len && !sock_gathered(&c->us))) {
				/* Either end closed: finish what is buffered
				 * toward the other and close both. Bytes the
				 * client sent count as delivered once the
				 * upstream socket took them, not when they
				 * were gathered. */
				conn_begin_closing(c);
				return true;
			}
			break;
		}
		e = c->q_head;
		if (e && e->local) {
			local_answer(c, e);
			return true;
		}
		if (c->close_after_resp) {
			conn_begin_closing(c);
			return true;
		}
		if (c->resp_len > c->resp_ready) {
			size_t n;
			enum http_errno herr;

			if (!e) {
				conn_set_detail(c, "upstream sent %zu bytes with no request pending",
						c->resp_len - c->resp_ready);
				conn_fail(c, true);
				return true;
			}
			n = http_parser_execute(&c->rp, &rp_settings,
						(const char *)c->resp + c->resp_ready,
						c->resp_len - c->resp_ready);
			herr = HTTP_PARSER_ERRNO(&c->rp);
			if (n) {
				e->down += n;
				e->resp_started = true;
				c->resp_ready += n;
				moved = true;
			}
			if (herr == HPE_PAUSED) {
				http_parser_pause(&c->rp, 0);
				resp_message_done(c);
				continue;
			}
			if (herr != HPE_OK) {
				conn_set_detail(c, "upstream response: %s",
						http_errno_description(herr));
				conn_fail(c, true);
				return true;
			}
			continue;
		}
		if (!c->u_eof)
			break;
		/* Upstream is gone and everything it sent is parsed. */
		if (e && !c->u_eof_fed) {
			c->u_eof_fed = true;
			http_parser_execute(&c->rp, &rp_settings, NULL, 0);
			if (HTTP_PARSER_ERRNO(&c->rp) == HPE_PAUSED) {
				http_parser_pause(&c->rp, 0);
				resp_message_done(c); /* body ended by the close */
				moved = true;
				continue;
			}
		}
		if (!e) {
			if (c->u_failed && !c->c_tls_eof)
				break; /* the next request gets the 502 */
			conn_begin_closing(c);
			return true;
		}
		if (!e->resp_started) {
			/* Nothing of its answer was sent: we can still say
			 * why. */
			e->local = true;
			e->status = 502;
			e->verdict = EGR_VERDICT_ALLOW;
			e->reason = EGR_REASON_UPSTREAM;
			fmt_str(e->why, sizeof(e->why),
				 "upstream %s closed the connection before responding%s%s",
				 c->host, c->detail[0] ? ": " : "", c->detail);
			continue;
		}
		conn_set_detail(c, "upstream closed mid-response");
		conn_fail(c, true);
		return true;
	}
	return moved;
}

/* ---- closing ---------------------------------------------------------- */

static void conn_begin_closing(struct ic_conn *c)
{
	struct ic_worker *w = c->w;

	if (c->closing)
		return;
	c->closing = true;
	up_close(c, true);
	loop_timer_start(w->loop, w->tl_linger, &c->timer, conn_timer_cb);
}

/* Local answer, close_notify, FIN, then read until the client's EOF so
 * that close() does not turn into a RST that could discard our answer. */
static bool closing_step(struct ic_conn *c)
{
	bool moved = false;
	char buf[4096];

	while (c->lout_off < c->lout_len) {
		size_t n = cli_write(c, c->lout + c->lout_off, c->lout_len - c->lout_off);

		if (!n)
			break;
		c->lout_off += n;
		moved = true;
	}
	if (c->close_scheduled)
		return true;
	if (c->lout_off == c->lout_len && !c->notify_sent) {
		if (!c->no_notify && c->c_hs_done && c->cssl) {
			int n;

			ssl_clear_errors();
			n = SSL_shutdown(c->cssl);
			if (n < 0 && SSL_get_error(c->cssl, n) == SSL_ERROR_WANT_WRITE) {
				ssl_clear_errors();
				return moved; /* the socket is full: again on EPOLLOUT */
			}
			ssl_clear_errors();
		}
		c->notify_sent = true;
		moved = true;
	}
	moved |= cli_flush(c);
	if (c->close_scheduled)
		return true;
	if (c->cs.wbuf && sock_send_gathered(&c->cs) < 0) {
		conn_set_detail(c, "client write: %s", strerror(errno));
		c->close_scheduled = true; /* the client is gone */
		return true;
	}
	if (c->notify_sent && !c->fin_sent && (!c->cnet || !BIO_ctrl_pending(c->cnet)) &&
	    !sock_gathered(&c->cs)) {
		shutdown(c->cfd, SHUT_WR);
		c->fin_sent = true;
		moved = true;
	}
	if (c->fin_sent) {
		for (;;) {
			ssize_t n = recv(c->cfd, buf, sizeof(buf), MSG_DONTWAIT);

			if (n > 0)
				continue;
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				break;
			c->close_scheduled = true; /* EOF or error: done */
			return true;
		}
	}
	return moved;
}

/* ---- driving ---------------------------------------------------------- */

static void conn_update_interest(struct ic_conn *c)
{
	struct loop *l = c->w->loop;
	int cmask = 0, umask = 0;

	if (c->close_scheduled)
		return;
	if (c->closing) {
		if (c->fin_sent)
			cmask |= LOOP_READ;
	} else if (!c->c_eof && (!c->cnet || BIO_ctrl_get_write_guarantee(c->cnet) > 0) &&
		   (!c->c_hs_done ||
		    (!c->c_tls_eof && c->creq_len < sizeof(c->creq)))) {
		cmask |= LOOP_READ;
	}
	/* TLS: a write found the socket full, OpenSSL holds the rest. */
	if (c->cnet ? BIO_ctrl_pending(c->cnet) > 0 : !c->cs.wr_ready)
		cmask |= LOOP_WRITE;
	if (c->ufd >= 0 && !c->closing) {
		if (!c->u_hs_done) {
			umask = c->u_hs_want;
		} else {
			if (!c->u_eof && c->resp_len < sizeof(c->resp))
				umask |= LOOP_READ;
			if (c->u_want_write)
				umask |= LOOP_WRITE;
		}
		if (sock_gathered(&c->us))
			umask |= LOOP_WRITE;
	}
	if (c->cfd >= 0 && loop_mod(l, c->cfd, cmask) < 0)
		goto fail;
	if (c->ufd >= 0 && loop_mod(l, c->ufd, umask) < 0)
		goto fail;
	return;
fail:
	conn_set_detail(c, "epoll: %s", strerror(errno));
	conn_fail(c, true);
}

/* End of a pass: what both sockets gathered goes out. Returns true if
 * that changed the state (a socket failed, or a buffer emptied, which a
 * tunnel's end waits for): one more round handles it. */
static bool conn_send_gathered(struct ic_conn *c)
{
	bool moved = false;
	char msg[200];
	int r;

	if (c->cs.wbuf && c->cfd >= 0) {
		r = sock_send_gathered(&c->cs);
		if (r < 0) {
			conn_set_detail(c, "client write: %s", strerror(errno));
			conn_fail(c, false);
			return true;
		}
		moved |= r > 0;
	}
	if (c->us.wbuf && c->ufd >= 0) {
		r = sock_send_gathered(&c->us);
		if (r < 0) {
			fmt_str(msg, sizeof(msg), "upstream write: %s", strerror(errno));
			up_set_eof(c, msg);
			return true;
		}
		moved |= r > 0;
	}
	return moved;
}

static void conn_handshakes_done(struct ic_conn *c)
{
	struct ic_worker *w = c->w;

	c->last_active_ms = loop_now_ms(w->loop);
	loop_timer_start(w->loop, w->tl_idle, &c->timer, conn_timer_cb);
}

static void conn_run(struct ic_conn *c)
{
	size_t budget = IC_READ_BUDGET;
	bool ready_before = c->c_hs_done && (c->u_hs_done || c->u_failed);
	int round;

	for (round = 0; round < IC_RUN_MAX && !c->close_scheduled; round++) {
		bool moved = false, ready, client_done;

		if (c->closing) {
			if (!closing_step(c))
				break;
			continue;
		}
		if (c->plain)
			moved |= cli_read_socket(c, &budget);
		if (!c->c_hs_done && !c->close_scheduled)
			moved |= cli_handshake(c);
		if (!c->u_hs_done && !c->u_failed && c->ufd >= 0 && !c->close_scheduled)
			moved |= up_handshake(c);
		ready = c->c_hs_done && (c->u_hs_done || c->u_failed);
		if (ready && !ready_before) {
			ready_before = true;
			conn_handshakes_done(c);
		}
		if (ready && !c->closing && !c->close_scheduled) {
			moved |= cli_decrypt(c, &budget);
			if (!c->close_scheduled)
				moved |= requests(c);
			if (!c->close_scheduled && !c->closing && c->u_hs_done)
				moved |= up_write(c);
			if (!c->close_scheduled && !c->closing && c->u_hs_done)
				moved |= up_read(c);
			if (!c->close_scheduled && !c->closing)
				moved |= responses(c);
			/* The client is done (and everything it sent went
			 * through httpreq): owed nothing, or mid-request. */
			client_done = c->c_tls_eof && (!c->creq_len || c->hr_mode != HR_OPEN);
			if (!c->close_scheduled && !c->closing && !c->tunnel &&
			    client_done && !c->q_head) {
				conn_begin_closing(c);
				moved = true;
			}
			if (!c->close_scheduled && !c->closing && client_done &&
			    !c->tunnel && c->cur_up && c->cur_up->body_open) {
				conn_set_detail(c, "client closed mid-request");
				conn_fail(c, true);
			}
		}
		if (!c->close_scheduled && !c->closing)
			moved |= cli_flush(c);
		if (!moved && !c->close_scheduled && !c->closing)
			moved = conn_send_gathered(c);
		if (!moved)
			break;
	}
	if (round == IC_RUN_MAX && !c->close_scheduled && !c->closing)
		conn_send_gathered(c); /* cut short before a round's last send */
	conn_update_interest(c);
}

static void conn_fd_cb(struct loop *l, int fd, void *data, int events)
{
	struct ic_conn *c = data;
	struct ic_sock *s = fd == c->cfd ? &c->cs : fd == c->ufd ? &c->us : NULL;

	conn_enter(c);
	if (s && (events & (LOOP_READ | LOOP_HUP | LOOP_ERR)))
		s->rd_ready = true;
	if (s && (events & (LOOP_WRITE | LOOP_HUP | LOOP_ERR)))
		s->wr_ready = true;
	if (events & LOOP_ERR) {
		int err = sock_error(fd);

		conn_set_detail(c, "%s socket: %s", fd == c->cfd ? "client" : "upstream",
				strerror(err ? err : EIO));
		if (fd == c->ufd && !c->u_hs_done && !c->u_failed) {
			c->u_failed = true;
			fmt_str(c->u_err, sizeof(c->u_err), "upstream %s: %s", c->host,
				 strerror(err ? err : EIO));
			up_close(c, false);
		} else if (fd == c->ufd) {
			up_set_eof(c, NULL);
		} else {
			conn_fail(c, false);
		}
	}
	if (!c->close_scheduled)
		conn_run(c);
	/* EPOLLHUP means both directions are shut: before our own FIN
	 * (closing) that is a reset, and nothing can reach the client any
	 * more. (In closing, the drain reads the EOF and ends it.) An
	 * upstream hangup is a reset too: its data is gone. */
	if (!c->close_scheduled && (events & LOOP_HUP) && fd == c->cfd && !c->closing) {
		conn_set_detail(c, "client hung up");
		conn_fail(c, false);
	}
	if (!c->close_scheduled && (events & LOOP_HUP) && fd == c->ufd && c->ufd >= 0 &&
	    c->u_hs_done) {
		up_set_eof(c, NULL);
		conn_run(c);
	}
	conn_leave(c);
}

static void conn_timer_cb(struct loop *l, struct loop_timer *t)
{
	struct ic_conn *c = t->data;
	struct ic_worker *w = c->w;
	uint64_t now = loop_now_ms(l);

	conn_enter(c);
	if (c->closing) {
		c->close_scheduled = true; /* linger over */
	} else if (!(c->c_hs_done && (c->u_hs_done || c->u_failed))) {
		conn_set_detail(c, "TLS handshake not done within %u ms",
				loop_timer_list_duration(w->tl_hs));
		c->verdict = EGR_VERDICT_DENY;
		c->reason = EGR_REASON_PEEK_TIMEOUT;
		conn_fail(c, true);
	} else {
		unsigned idle = loop_timer_list_duration(w->tl_idle);

		if (now - c->last_active_ms < idle) {
			loop_timer_start(l, w->tl_idle, &c->timer, conn_timer_cb);
		} else {
			conn_set_detail(c, "idle for %u ms", idle);
			conn_fail(c, true);
		}
	}
	conn_leave(c);
}

static int conn_start(struct ic_conn *c)
{
	struct ic_worker *w = c->w;
	struct intercept *ic = w->ic;
	BIO *internal = NULL, *cb, *ub;
	size_t bsz = c->peeked_len > IC_BIO_SIZE ? c->peeked_len : IC_BIO_SIZE;
	X509_VERIFY_PARAM *vp;

	c->last_active_ms = loop_now_ms(w->loop);
	c->cssl = c->plain ? NULL : SSL_new(ic->srv_ctx);
	c->ussl = c->up_ctx ? SSL_new(c->up_ctx) : NULL;
	if (!c->up_ctx) {
		/* The trust store could not be loaded: no unverified
		 * fallback, every request gets the reason. */
		if (!c->cssl && !c->plain)
			goto ossl;
		c->u_failed = true;
		fmt_str(c->u_err, sizeof(c->u_err),
			"upstream CA file %s for %s could not be loaded", c->up_ca_path, c->host);
		conn_close_fd(c, &c->ufd);
		c->u_eof = true;
	}
	if ((!c->cssl && !c->plain) || (!c->ussl && !c->u_failed))
		goto ossl;
	if (c->plain) {
		/* Plain bytes through a pair, read like decrypted TLS. */
		if (!BIO_new_bio_pair(&internal, bsz, &c->cnet, bsz))
			goto ossl;
		c->cint = internal;
		c->c_hs_done = true;
		if (c->peeked_len &&
		    BIO_write(c->cnet, c->peeked, (int)c->peeked_len) != (int)c->peeked_len)
			goto ossl;
	} else {
		/* The ClientHello the proxy read comes first (c->peeked
		 * lives until conn_free()). */
		cb = ic_bio_new(c, &c->cs, &c->cfd, &c->c_eof);
		if (!cb)
			goto ossl;
		c->cs.pre = c->peeked;
		c->cs.pre_len = c->peeked_len;
		SSL_set_bio(c->cssl, cb, cb);
		SSL_set_read_ahead(c->cssl, 1);
		SSL_set_app_data(c->cssl, c);
		SSL_set_accept_state(c->cssl);
	}
	http_parser_init(&c->rp, HTTP_RESPONSE);
	c->rp.data = c;
	if (c->u_failed)
		goto add;

	ub = ic_bio_new(c, &c->us, &c->ufd, &c->u_sock_eof);
	if (!ub)
		goto ossl;
	SSL_set_bio(c->ussl, ub, ub);
	SSL_set_read_ahead(c->ussl, 1);
	if (!SSL_set_tlsext_host_name(c->ussl, c->up_name))
		goto ossl;
	vp = SSL_get0_param(c->ussl);
	X509_VERIFY_PARAM_set_hostflags(vp, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
	if (!X509_VERIFY_PARAM_set1_host(vp, c->up_name, 0))
		goto ossl;
	SSL_set_app_data(c->ussl, c);
	up_session_resume(c);
	SSL_set_connect_state(c->ussl);
add:
	if (loop_add(w->loop, c->cfd, 0, conn_fd_cb, c) < 0 ||
	    (c->ufd >= 0 && loop_add(w->loop, c->ufd, 0, conn_fd_cb, c) < 0)) {
		conn_set_detail(c, "epoll: %s", strerror(errno));
		return -EIO;
	}
	loop_timer_start(w->loop, w->tl_hs, &c->timer, conn_timer_cb);
	return 0;
ossl:
	conn_set_detail(c, "TLS setup failed");
	ssl_clear_errors();
	return -ENOMEM;
}

/* ---- workers ---------------------------------------------------------- */

static unsigned ms_or(unsigned v, unsigned dflt)
{
	return v ? v : dflt;
}

/* Both sockets are the engine's now: non-blocking, no Nagle (request and
 * response heads are small writes). */
static void conn_socks_setup(struct ic_conn *c)
{
	int one = 1;

	fcntl(c->cfd, F_SETFL, fcntl(c->cfd, F_GETFL) | O_NONBLOCK);
	fcntl(c->ufd, F_SETFL, fcntl(c->ufd, F_GETFL) | O_NONBLOCK);
	setsockopt(c->cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(c->ufd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void worker_start_conn(struct ic_worker *w, struct ic_conn *c)
{
	c->prev = NULL;
	pthread_mutex_lock(&w->conns_lock);
	c->next = w->conns;
	if (w->conns)
		w->conns->prev = c;
	w->conns = c;
	w->n_conns++;
	pthread_mutex_unlock(&w->conns_lock);
	c->started = true;
	conn_enter(c);
	if (c->failed_before_start || conn_start(c) < 0) {
		c->verdict = EGR_VERDICT_DENY;
		c->reason = EGR_REASON_INTERNAL;
		conn_fail(c, true);
	} else {
		conn_run(c);
	}
	conn_leave(c);
}

static void worker_inbox_cb(struct loop *l, int fd, void *data, int events)
{
	struct ic_worker *w = data;
	struct ic_conn *list, *c;
	bool changed;
	uint64_t v;

	while (read(w->efd, &v, sizeof(v)) < 0 && errno == EINTR)
		;
	pthread_mutex_lock(&w->lock);
	list = w->inbox_head;
	w->inbox_head = w->inbox_tail = NULL;
	changed = w->config_changed;
	w->config_changed = false;
	pthread_mutex_unlock(&w->lock);
	if (changed) {
		/* The live settings (config.h): handshake and idle timers
		 * armed from now on use the new durations; a shorter one also
		 * brings the armed ones forward. */
		loop_update_time(l);
		loop_timer_list_set_duration(l, w->tl_hs,
					     ms_or(cfg_live(w->ic->cfg->peek_timeout_ms), 10000));
		loop_timer_list_set_duration(l, w->tl_idle,
					     ms_or(cfg_live(w->ic->cfg->idle_timeout_ms), 600000));
	}
	while ((c = list)) {
		list = c->next;
		worker_start_conn(w, c);
	}
}

/* One message of the hand-over socket: the connection and its sockets.
 * 1 with *c set (its cfd/ufd -1 if the sockets did not arrive), 0 when
 * the queue is empty. */
static int hand_recv(int fd, struct ic_conn **c)
{
	int fds[2];
	unsigned got;

	if (fdbroker_recv_fds(fd, c, sizeof(*c), fds, 2, &got, MSG_DONTWAIT) !=
	    (ssize_t)sizeof(*c)) {
		/* EAGAIN, or nothing a sender of ours writes */
		for (unsigned i = 0; i < got; i++)
			close(fds[i]);
		return 0;
	}
	(*c)->cfd = fds[0];
	(*c)->ufd = fds[1];
	return 1;
}

static void worker_hand_cb(struct loop *l, int fd, void *data, int events)
{
	struct ic_worker *w = data;
	struct ic_conn *c;

	while (hand_recv(fd, &c)) {
		c->w = w;
		if (c->cfd < 0 || c->ufd < 0) {
			/* MSG_CTRUNC: this table is out of descriptors */
			conn_set_detail(c, "interception: the sockets did not reach the engine "
					"(out of descriptors)");
			c->failed_before_start = true;
		} else {
			conn_socks_setup(c);
		}
		worker_start_conn(w, c);
	}
}

static void *worker_main(void *arg)
{
	struct ic_worker *w = arg;
	int err;

	/* every request is a record: one write() per pass (audit.h) */
	audit_thread_batch(w->ic->params.audit);
	loop_set_before_wait(w->loop, audit_thread_flush);
	err = loop_run(w->loop);
	if (err)
		log_error("intercept: worker %u: event loop: %s", w->id, strerror(-err));
	audit_thread_end();
	return NULL;
}

static int worker_init(struct intercept *ic, struct ic_worker *w, unsigned id)
{
	const struct config *cfg = ic->cfg;
	int err;

	w->ic = ic;
	w->id = id;
	w->efd = -1;
	w->hand[0] = w->hand[1] = -1;
	pthread_mutex_init(&w->lock, NULL);
	pthread_mutex_init(&w->conns_lock, NULL);
	err = loop_create(&w->loop);
	if (err)
		return err;
	w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (w->efd < 0)
		return -errno;
	err = loop_add(w->loop, w->efd, LOOP_READ, worker_inbox_cb, w);
	if (err)
		return err;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, w->hand) < 0) {
		w->hand[0] = w->hand[1] = -1;
		return -errno;
	}
	err = loop_add(w->loop, w->hand[0], LOOP_READ, worker_hand_cb, w);
	if (err)
		return err;
	/* Room for a burst of connections waiting for a busy worker (each
	 * message is a small skb, charged to the sender's buffer); when it
	 * is full, the sender takes the broker's way (proxy.c). */
	{
		int sz = IC_HAND_SNDBUF;

		if (setsockopt(w->hand[1], SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof(sz)) < 0)
			setsockopt(w->hand[1], SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
	}
	w->tl_hs = loop_timer_list_create(w->loop, ms_or(cfg_live(cfg->peek_timeout_ms), 10000));
	w->tl_idle = loop_timer_list_create(w->loop, ms_or(cfg_live(cfg->idle_timeout_ms), 600000));
	w->tl_linger = loop_timer_list_create(w->loop, IC_LINGER_MS);
	if (!w->tl_hs || !w->tl_idle || !w->tl_linger)
		return -ENOMEM;
	return 0;
}

static void worker_free_conns(struct ic_worker *w)
{
	struct ic_conn *c;

	while ((c = w->conns)) {
		conn_set_detail(c, "interception engine stopped");
		conn_finish(c);
	}
	while ((c = w->inbox_head)) {
		w->inbox_head = c->next;
		conn_free(c); /* never started: nothing to audit yet */
	}
	w->inbox_tail = NULL;
	while (w->hand[0] >= 0 && hand_recv(w->hand[0], &c))
		conn_free(c); /* the same */
}

/* ---- public API ------------------------------------------------------- */

static SSL_CTX *srv_ctx_new(struct intercept *ic)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());

	if (!ctx)
		return NULL;
	if (ca_server_ctx_configure(ctx)) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	/* No SSL_MODE_RELEASE_BUFFERS: freeing and reallocating both
	 * record buffers around every request costs more than keeping
	 * them (the connection holds its own 32 KiB anyway). */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
			 SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	/* One resumption ticket per connection, not OpenSSL's two: each
	 * costs a session copy, its encryption and a MAC on every
	 * handshake (resumed ones too), and an agent's client resumes
	 * from its latest ticket. */
	SSL_CTX_set_num_tickets(ctx, 1);
	/* A client that just closes the socket has ended its stream. */
	SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
	SSL_CTX_set_tlsext_servername_callback(ctx, ic_sni_cb);
	SSL_CTX_set_tlsext_servername_arg(ctx, ic);
	return ctx;
}

static SSL_CTX *up_ctx_new(const char *ca_file)
{
	SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());

	if (!ctx)
		return NULL;
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	/* No SSL_MODE_RELEASE_BUFFERS: freeing and reallocating both
	 * record buffers around every request costs more than keeping
	 * them (the connection holds its own 32 KiB anyway). */
	SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
			 SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
	if ((ca_file ? SSL_CTX_load_verify_locations(ctx, ca_file, NULL)
		     : SSL_CTX_set_default_verify_paths(ctx)) != 1 ||
	    SSL_CTX_set_alpn_protos(ctx, alpn_h11, sizeof(alpn_h11) - 1) != 0) {
		SSL_CTX_free(ctx);
		return NULL;
	}
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT |
				       SSL_SESS_CACHE_NO_INTERNAL_STORE);
	SSL_CTX_sess_set_new_cb(ctx, ic_new_session_cb);
	return ctx;
}

int intercept_create(struct intercept **out, const struct intercept_params *params)
{
	struct intercept *ic;
	unsigned n;
	long ncpu;
	int err;

	if (!out || !params || !params->cfg)
		return -EINVAL;
	*out = NULL;
	ic = calloc(1, sizeof(*ic));
	if (!ic)
		return -ENOMEM;
	ic->params = *params;
	ic->cfg = params->cfg;
	pthread_mutex_init(&ic->sess_lock, NULL);
	pthread_mutex_init(&ic->ctx_lock, NULL);
	ic->srv_ctx = srv_ctx_new(ic);
	if (!ic->srv_ctx) {
		log_error("intercept: TLS server context: %s",
			  ERR_reason_error_string(ERR_peek_last_error()));
		err = -ENOMEM;
		goto fail;
	}
	ic->up_ctx = up_ctx_new(params->upstream_ca_file);
	if (!ic->up_ctx) {
		log_error("intercept: upstream trust store %s: %s",
			  params->upstream_ca_file ? params->upstream_ca_file : "(system)",
			  ERR_reason_error_string(ERR_peek_last_error()));
		err = -EINVAL;
		goto fail;
	}
	ssl_clear_errors();
	n = ic->cfg->workers;
	if (!n) {
		ncpu = sysconf(_SC_NPROCESSORS_ONLN);
		n = ncpu > 0 ? (unsigned)ncpu : 1;
	}
	if (n > IC_MAX_WORKERS)
		n = IC_MAX_WORKERS;
	ic->workers = calloc(n, sizeof(*ic->workers));
	if (!ic->workers) {
		err = -ENOMEM;
		goto fail;
	}
	ic->n_workers = n;
	for (unsigned i = 0; i < n; i++) {
		err = worker_init(ic, &ic->workers[i], i);
		if (err) {
			log_error("intercept: worker %u: %s", i, strerror(-err));
			goto fail;
		}
	}
	*out = ic;
	return 0;
fail:
	intercept_destroy(ic);
	return err;
}

int intercept_start(struct intercept *ic)
{
	sigset_t all, old;
	int err = 0;

	if (!ic || ic->started)
		return -EINVAL;
	/* Signals belong to the main thread. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	for (unsigned i = 0; i < ic->n_workers; i++) {
		struct ic_worker *w = &ic->workers[i];

		err = -pthread_create(&w->thread, NULL, worker_main, w);
		if (err)
			break;
		w->thread_started = true;
		thread_name(w->thread, "egressd-tls%u", i);
	}
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	ic->started = true;
	if (err) {
		log_error("intercept: starting workers: %s", strerror(-err));
		intercept_stop(ic);
	}
	return err;
}

void intercept_set_ca(struct intercept *ic, struct ca *ca)
{
	if (ic)
		__atomic_store_n(&ic->params.ca, ca, __ATOMIC_RELEASE);
}

void intercept_config_changed(struct intercept *ic)
{
	const uint64_t one = 1;

	for (unsigned i = 0; ic && i < ic->n_workers; i++) {
		struct ic_worker *w = &ic->workers[i];

		pthread_mutex_lock(&w->lock);
		w->config_changed = !w->closed;
		pthread_mutex_unlock(&w->lock);
		if (w->efd >= 0 && write(w->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
			log_warn("intercept: waking worker %u: %s", w->id, strerror(errno));
	}
}

void intercept_stop(struct intercept *ic)
{
	if (!ic)
		return;
	for (unsigned i = 0; i < ic->n_workers; i++) {
		struct ic_worker *w = &ic->workers[i];

		pthread_mutex_lock(&w->lock);
		w->closed = true;
		pthread_mutex_unlock(&w->lock);
		if (w->loop)
			loop_stop(w->loop);
	}
	for (unsigned i = 0; i < ic->n_workers; i++) {
		struct ic_worker *w = &ic->workers[i];

		if (w->thread_started) {
			pthread_join(w->thread, NULL);
			w->thread_started = false;
		}
		worker_free_conns(w);
	}
}

void intercept_destroy(struct intercept *ic)
{
	if (!ic)
		return;
	intercept_stop(ic);
	for (unsigned i = 0; ic->workers && i < ic->n_workers; i++) {
		struct ic_worker *w = &ic->workers[i];

		if (w->efd >= 0)
			close(w->efd);
		if (w->hand[0] >= 0)
			close(w->hand[0]);
		if (w->hand[1] >= 0)
			close(w->hand[1]);
		wbuf_spare_free(w);
		loop_destroy(w->loop);
		pthread_mutex_destroy(&w->lock);
		pthread_mutex_destroy(&w->conns_lock);
	}
	free(ic->workers);
	for (unsigned i = 0; i < IC_SESS_SLOTS; i++)
		SSL_SESSION_free(ic->sess[i].sess);
	pthread_mutex_destroy(&ic->sess_lock);
	while (ic->upctxs) {
		struct ic_upctx *u = ic->upctxs;

		ic->upctxs = u->next;
		SSL_CTX_free(u->ctx);
		free(u->path);
		free(u);
	}
	pthread_mutex_destroy(&ic->ctx_lock);
	SSL_CTX_free(ic->srv_ctx);
	SSL_CTX_free(ic->up_ctx);
	free(ic);
}

static int copy_rules(struct reqrule_host *dst, const struct reqrule_host *src)
{
	memset(dst, 0, sizeof(*dst));
	set_str(dst->host, sizeof(dst->host), src->host);
	if (src->n_rules) {
		dst->rules = malloc(src->n_rules * sizeof(*dst->rules));
		if (!dst->rules)
			return -ENOMEM;
		memcpy(dst->rules, src->rules, src->n_rules * sizeof(*dst->rules));
		dst->n_rules = src->n_rules;
	}
	if (src->n_creds) {
		dst->creds = malloc(src->n_creds * sizeof(*dst->creds));
		if (!dst->creds)
			return -ENOMEM;
		memcpy(dst->creds, src->creds, src->n_creds * sizeof(*dst->creds));
		dst->n_creds = src->n_creds;
	}
	return 0;
}

/* The upstream context for a trust store; NULL if path cannot be loaded
 * (logged once per attempt). */
static SSL_CTX *up_ctx_for(struct intercept *ic, const char *path)
{
	struct ic_upctx *u;
	SSL_CTX *ctx = NULL;

	if (!path || (ic->params.upstream_ca_file && !strcmp(path, ic->params.upstream_ca_file)))
		return ic->up_ctx;
	pthread_mutex_lock(&ic->ctx_lock);
	for (u = ic->upctxs; u; u = u->next)
		if (!strcmp(u->path, path))
			break;
	if (u) {
		ctx = u->ctx;
	} else {
		u = calloc(1, sizeof(*u));
		if (u) {
			u->path = strdup(path);
			u->ctx = u->path ? up_ctx_new(path) : NULL;
		}
		if (u && u->ctx) {
			u->next = ic->upctxs;
			ic->upctxs = u;
			ctx = u->ctx;
		} else {
			log_warn("intercept: upstream CA file %s: %s", path,
				 access(path, R_OK) ? strerror(errno) :
				 "no certificate could be loaded");
			if (u)
				free(u->path);
			free(u);
		}
		ssl_clear_errors();
	}
	pthread_mutex_unlock(&ic->ctx_lock);
	return ctx;
}

static char *dup_or_null(const char *s, bool *oom)
{
	char *d;

	if (!s)
		return NULL;
	d = strdup(s);
	if (!d)
		*oom = true;
	return d;
}

/* A new connection with info's copies and no sockets (cfd/ufd -1), on the
 * next worker of the round robin. On failure info->release has run. */
static int conn_prepare(struct intercept *ic, const struct intercept_conn_info *info,
			struct ic_conn **out)
{
	struct ic_conn *c;
	bool oom = false;

	*out = NULL;
	if (!ic || !info || !info->host || !info->rules ||
	    strlen(info->host) >= sizeof(c->host) || (info->gateway && !info->origin) ||
	    (!info->gateway && !__atomic_load_n(&ic->params.ca, __ATOMIC_ACQUIRE))) {
		if (info && info->release)
			info->release(info->release_ctx,
				      info->origin ? info->origin->cgroup_id : 0);
		return -EINVAL;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		if (info->release)
			info->release(info->release_ctx, info->origin ? info->origin->cgroup_id : 0);
		return -ENOMEM;
	}
	c->release = info->release;
	c->release_ctx = info->release_ctx;
	c->cfd = c->ufd = -1;
	c->timer.data = c;
	clock_gettime(CLOCK_REALTIME, &c->start);
	c->verdict = EGR_VERDICT_ALLOW;
	c->reason = EGR_REASON_RULE_ALLOW;
	if (info->origin)
		c->origin = *info->origin;
	set_str(c->host, sizeof(c->host), info->host);
	/* The rules matched names case-insensitively and with or without a
	 * trailing dot; the upstream gets one spelling of the name, so a
	 * server or CDN that routes on the spelling cannot be steered. */
	{
		size_t k;

		for (k = 0; c->host[k]; k++)
			c->up_name[k] = (char)tolower((unsigned char)c->host[k]);
		if (k > 1 && c->up_name[k - 1] == '.')
			k--;
		c->up_name[k] = '\0';
	}
	c->upstream = info->upstream;
	c->upstream_port = info->upstream_port;
	if (info->geo) {
		c->geo = *info->geo;
		c->has_geo = true;
		c->geo_error = info->geo_error;
	}
	c->plain = info->gateway;
	if (c->plain) {
		char abuf[INET6_ADDRSTRLEN];
		struct egr_addr ga;

		memcpy(ga.b, c->origin.dst_addr, sizeof(ga.b));
		addr_to_str(&ga, abuf, sizeof(abuf));
		fmt_str(c->gw_name, sizeof(c->gw_name), addr_is_v4(&ga) ? "%s:%u" : "[%s]:%u",
			abuf, c->origin.dst_port);
	}
	if (info->upstream_port == 443)
		fmt_str(c->up_hostval, sizeof(c->up_hostval), "%s", c->up_name);
	else
		fmt_str(c->up_hostval, sizeof(c->up_hostval), "%s:%u", c->up_name,
			info->upstream_port);
	if (copy_rules(&c->rules, info->rules))
		oom = true;
	c->policy_name = dup_or_null(info->policy ? info->policy->name : NULL, &oom);
	c->audit_mode = info->policy && info->policy->mode == POLICY_AUDIT;
	/* The operator's --upstream-ca (params) wins, else the policy's
	 * upstream_ca (one daemon, several policies), else the system
	 * store. */
	c->up_ca_path = dup_or_null(!ic->params.upstream_ca_file && info->policy &&
				    info->policy->upstream_ca ? info->policy->upstream_ca : NULL,
				    &oom);
	c->up_ctx = up_ctx_for(ic, c->up_ca_path);
	c->allow_rule = dup_or_null(info->rule, &oom);
	if (ic->params.cgroup_name && info->origin) {
		char cgbuf[PATH_MAX];

		c->cgroup = dup_or_null(ic->params.cgroup_name(ic->params.ctx,
							       info->origin->cgroup_id,
							       cgbuf, sizeof(cgbuf)), &oom);
	}
	if (info->peeked_len) {
		c->peeked = malloc(info->peeked_len);
		if (!c->peeked)
			oom = true;
		else
			memcpy(c->peeked, info->peeked, info->peeked_len);
		c->peeked_len = info->peeked_len;
	}
	if (oom) {
		conn_free(c); /* releases */
		return -ENOMEM;
	}
	c->w = &ic->workers[atomic_fetch_add(&ic->rr, 1) % ic->n_workers];
	*out = c;
	return 0;
}

int intercept_take(struct intercept *ic, int client_fd, int upstream_fd,
		   const struct intercept_conn_info *info)
{
	struct ic_worker *w;
	struct ic_conn *c;
	uint64_t one = 1;
	int err;

	if (client_fd < 0 || upstream_fd < 0) {
		if (info && info->release)
			info->release(info->release_ctx,
				      info->origin ? info->origin->cgroup_id : 0);
		err = -EINVAL;
		goto fail;
	}
	err = conn_prepare(ic, info, &c);
	if (err)
		goto fail;
	c->cfd = client_fd;
	c->ufd = upstream_fd;
	conn_socks_setup(c);
	w = c->w;
	pthread_mutex_lock(&w->lock);
	if (w->closed) {
		pthread_mutex_unlock(&w->lock);
		conn_free(c); /* closes both fds, releases */
		return -ESHUTDOWN;
	}
	c->next = NULL;
	if (w->inbox_tail)
		w->inbox_tail->next = c;
	else
		w->inbox_head = c;
	w->inbox_tail = c;
	pthread_mutex_unlock(&w->lock);
	if (write(w->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_warn("intercept: waking worker %u: %s", w->id, strerror(errno));
	return 0;
fail:
	if (client_fd >= 0)
		close(client_fd);
	if (upstream_fd >= 0)
		close(upstream_fd);
	return err;
}

int intercept_prepare(struct intercept *ic, const struct intercept_conn_info *info,
		      struct ic_conn **out, unsigned *worker)
{
	int err = conn_prepare(ic, info, out);

	if (!err)
		*worker = (*out)->w->id;
	return err;
}

unsigned intercept_workers(const struct intercept *ic)
{
	return ic ? ic->n_workers : 0;
}

int intercept_hand_sock(const struct intercept *ic, unsigned worker)
{
	return ic && worker < ic->n_workers ? ic->workers[worker].hand[1] : -EINVAL;
}

void intercept_hand_drop(struct ic_conn *c, bool release)
{
	if (!c)
		return;
	if (!release)
		c->release = NULL;
	conn_free(c); /* no sockets yet */
}

int intercept_hand_send(struct ic_conn *c, int sock, int client_fd, int upstream_fd)
{
	const int fds[2] = { client_fd, upstream_fd };

	/* 0: the worker owns c now, not touched again here */
	return fdbroker_send_fds(sock, &c, sizeof(c), fds, 2, MSG_DONTWAIT);
}

/* Under the worker's conns_lock: the fields read here are written before
 * the connection is listed (origin, host, policy, upstream) or are the
 * socket counters (relaxed atomics). TLS bytes as they crossed the
 * sockets; a gateway's plain client side is not counted. */
static void ic_snap_conn(const struct ic_conn *c, struct proxy_conn_info *o)
{
	memset(o, 0, sizeof(*o));
	o->start = c->start;
	o->worker = c->w->id;
	o->has_origin = true;
	o->cgroup_id = c->origin.cgroup_id;
	o->pid = c->origin.tgid;
	o->uid = c->origin.uid;
	memcpy(o->comm, c->origin.comm, EGR_COMM_LEN);
	o->comm[EGR_COMM_LEN] = '\0';
	memcpy(o->dst.b, c->origin.dst_addr, sizeof(o->dst.b));
	o->dst_port = c->origin.dst_port;
	snprintf(o->name, sizeof(o->name), "%s", c->host);
	o->name_kind = c->plain ? "host" : "sni";
	o->state = c->plain ? "gateway" : "intercept";
	o->verdict = EGR_VERDICT_ALLOW;
	o->reason = EGR_REASON_RULE_ALLOW;
	if (c->policy_name)
		snprintf(o->policy, sizeof(o->policy), "%s", c->policy_name);
	o->has_resolved = true;
	o->resolved = c->upstream;
	o->bytes_up = __atomic_load_n(&c->cs.rx, __ATOMIC_RELAXED);
	o->bytes_down = __atomic_load_n(&c->cs.tx, __ATOMIC_RELAXED);
}

int intercept_snapshot(struct intercept *ic, struct proxy_conn_info **v, size_t *n,
		       size_t *cap)
{
	struct proxy_conn_info *nv;
	unsigned i;

	if (!ic)
		return 0;
	for (i = 0; i < ic->n_workers; i++) {
		struct ic_worker *w = &ic->workers[i];
		const struct ic_conn *c;

		pthread_mutex_lock(&w->conns_lock);
		if (*n + w->n_conns > *cap) {
			size_t want = *n + w->n_conns + 16;

			nv = realloc(*v, want * sizeof(**v));
			if (!nv) {
				pthread_mutex_unlock(&w->conns_lock);
				return -ENOMEM;
			}
			*v = nv;
			*cap = want;
		}
		for (c = w->conns; c && *n < *cap; c = c->next)
			ic_snap_conn(c, &(*v)[(*n)++]);
		pthread_mutex_unlock(&w->conns_lock);
	}
	return 0;
}
