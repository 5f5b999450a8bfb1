// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * The DNS proxy (see dnsproxy.h). One thread, one event loop, one c-ares
 * channel:
 *
 *   UDP datagram / TCP message
 *     -> dnsmsg_parse_query (malformed: FORMERR if it has a header, else drop)
 *     -> origin (UDP: origin_for_udp; TCP: handed over with the fd)
 *     -> policy_for (none: REFUSED)
 *     -> policy_name_resolvable (no: NXDOMAIN; the name never leaves the
 *        host, which is what stops DNS tunnelling; audit mode forwards)
 *     -> ares_send of the agent's raw query bytes to the trusted upstream
 *     -> dnsmsg_parse_answer_addrs; private/loopback/... addresses (in
 *        any record of the answer) that no rule names: REFUSED (DNS
 *        rebinding); else remember (cgroup, address) -> asked name,
 *        restore the agent's ID, truncate for UDP if needed.
 *
 * Every query ends in one audit decision (dq_finish()): its own record,
 * or, repeated within a second, a count in one record for the repeats
 * (kfold.h, dq_audit()).
 *
 * c-ares runs in our loop as in resolver.c: sock_state_cb registers its
 * sockets, ares_timeout() drives one "at" timer. A query's struct dq lives
 * until c-ares calls back (also with ARES_EDESTRUCTION from ares_destroy),
 * and a TCP connection that goes away first only unlinks itself from its
 * queries, so a late answer never touches freed memory.
 */
#include <arpa/inet.h>
#include <ares.h>
#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "dnsmsg.h"
#include "dnsproxy.h"
#include "kevent.h"
#include "kfold.h"
#include "log.h"
#include "loop.h"
#include "sockdiag.h"

#define DNSP_MAX_INFLIGHT 1024     /* upstream queries at once; over: SERVFAIL */
#define DNSP_MAX_TCP 256           /* DNS-over-TCP connections at once */
#define DNSP_MAX_TCP_TENANT 32     /* of them, one tenant's (origin_tenant()) */
#define DNSP_HANDOFF_MAX 256       /* fds queued by dnsproxy_take_tcp() */
#define DNSP_TCP_IDLE_MS 10000     /* RFC 7766 6.2.3: seconds, not minutes */
#define DNSP_TCP_MSG_MS 5000       /* a message, from its first byte to its last */
#define DNSP_TCP_MAX_PENDING 32    /* per connection: stop reading beyond */
#define DNSP_TCP_MAX_OUTQ (256 * 1024)
#define DNSP_UDP_BATCH 64          /* datagrams per wakeup, fairness with TCP */
#define DNSP_RCVBUF (1 << 20)
#define DNSP_UDP_PLAIN 512         /* RFC 1035 4.2.1, no EDNS */
#define DNSP_UDP_EDNS_CAP 4096
#define DNSP_MEM_MAX 65536         /* remembered (cgroup, address) pairs */
#define DNSP_MEM_BUCKETS 16384
#define DNSP_MEM_TENANT_BUCKETS 256
#define DNSP_TTL_CAP_S 3600
#define DNSP_TTL_ZERO_MS 5000      /* TTL 0: long enough for the connect that follows */
#define DNSP_HDR_LEN 12
#define DNSP_DETAIL_LEN 160

/* ---- remembered answers -------------------------------------------------- */

/*
 * Remembered answers are the tenants' to share: one tenant (origin_tenant:
 * the bound cgroup the kernel charged, with every cgroup below it) holding
 * max / (tenants holding any) of them or more makes room among its own,
 * and a full memory gives up the oldest entry of the tenant holding the
 * most; so one that resolves without end (cgroups of its own times
 * addresses of an allowed name), or that filled the memory while it was
 * alone, cannot push out the others'.
 */
struct mem_tenant {
	struct mem_tenant *next;         /* bucket chain */
	uint64_t id;
	size_t n;
	struct mem_entry *oldest, *newest; /* its entries, age order */
};

struct mem_entry {
	struct mem_entry *hnext, *hprev; /* bucket chain */
	struct mem_entry *onext, *oprev; /* age order: oldest first */
	struct mem_entry *tnext, *tprev; /* the tenant's, age order */
	struct mem_tenant *tenant;
	uint64_t cgroup_id;
	struct egr_addr addr;
	uint64_t expiry_ms;              /* CLOCK_MONOTONIC */
	char name[];
};

struct name_mem {
	pthread_mutex_t lock;
	uint64_t seed;
	size_t max;                      /* DNSP_MEM_MAX, or a test's */
	struct mem_entry *buckets[DNSP_MEM_BUCKETS];
	struct mem_entry *oldest, *newest;
	size_t n;
	struct mem_tenant *tenants[DNSP_MEM_TENANT_BUCKETS];
	size_t n_tenants;                /* holding at least one entry */
};

/* ---- queries and connections -------------------------------------------- */

struct tconn;

/* UDP listeners in a pod's network namespace (netns.c), with a sock_diag
 * socket made there for origin lookups. Alive while listed or while a
 * query that arrived on it waits for upstream (it answers on ufd). */
struct dns_lset {
	struct dns_lset *next;
	struct dnsproxy *d;
	int id, fd4, fd6, diag;
	unsigned refs;
};

struct dns_lreq {
	int id, fd4, fd6, diag; /* fd4 < 0: remove set id */
};

struct dq {
	struct dnsproxy *d;
	int proto;                  /* IPPROTO_UDP / IPPROTO_TCP */
	/* UDP: where to answer */
	int ufd;
	struct dns_lset *ls;        /* ufd belongs to it; NULL: ours */
	struct sockaddr_storage peer;
	socklen_t peer_len;
	/* TCP: the connection, NULL once it closed */
	struct tconn *tc;
	struct dq *tnext, *tprev;
	bool has_origin;
	struct egr_origin origin;
	const struct policy *policy;
	struct dnsmsg_query q;
	bool parsed;
	struct timespec start;
	enum egr_verdict verdict;
	enum egr_reason reason;
	const char *rule;
	char detail[DNSP_DETAIL_LEN];
	size_t bytes_down;
	size_t raw_len;
	uint8_t raw[];              /* the agent's query as received */
};

struct outbuf {
	struct outbuf *next;
	size_t len, off;
	uint8_t data[];
};

struct tconn {
	struct dnsproxy *d;
	struct tconn *next, *prev;
	int fd;
	struct egr_origin origin;
	uint64_t tenant;            /* origin_tenant(&origin) */
	struct loop_timer timer;    /* idle between messages */
	struct loop_timer msg_timer; /* armed while a message is incomplete */
	uint64_t last_active_ms;
	struct dq *pending;         /* queries still waiting for upstream */
	unsigned n_pending;
	struct outbuf *oq_head, *oq_tail;
	size_t oq_bytes;
	bool rd_eof;
	bool failed;                /* read/write error: close */
	bool busy;                  /* inside tconn_cb: do not free */
	size_t rlen;
	uint8_t rbuf[2 + 65535];
};

struct handoff {
	int fd;
	struct egr_origin origin;
};

struct dnsproxy {
	struct dnsproxy_params params;
	unsigned resolve_timeout_ms;
	uint16_t port;
	int has_v6;
	int ufd4, ufd6;
	int evfd;                   /* dnsproxy_take_tcp() wakes the loop */
	struct loop *loop;
	ares_channel channel;
	bool channel_ok;
	struct loop_timer ares_timer;
	/* records folded as the kernel's are (kfold.h): a loop of queries is
	 * a few records a second; fold_timer ends each second */
	struct kfold *fold;
	struct loop_timer fold_timer;
	struct loop_timer_list *tl_idle;
	struct loop_timer_list *tl_msg;
	pthread_t thread;
	bool started;
	bool destroying;
	unsigned inflight;
	struct tconn *tconns;
	unsigned n_tcp;
	uint64_t last_tcp_warn_ms;
	uint64_t last_tcp_tenant_warn_ms;
	uint64_t last_inflight_warn_ms;

	pthread_mutex_t ho_lock;
	struct handoff ho[DNSP_HANDOFF_MAX];
	unsigned ho_n;
	bool ho_closed;             /* destroy began: take_tcp closes fds itself */
	struct dns_lreq *lreq;      /* dnsproxy_add/remove_listeners() */
	size_t lreq_n;
	struct dns_lset *lsets;     /* loop thread only */
	int lseq;                   /* main thread only */

	uint16_t ids[64];           /* random query IDs for upstream */
	unsigned n_ids;

	struct name_mem mem;
	uint8_t rbuf[65536];        /* one UDP datagram */

	/* dnsproxy_stats(): written by the DNS thread only, read by others
	 * (relaxed atomics, no lock). */
	uint64_t st_queries[4];     /* by enum egr_verdict */
	uint64_t st_udp, st_tcp, st_upstream_fail;
};

static void dq_finish(struct dq *x, const uint8_t *reply, size_t len);
static uint64_t origin_tenant(const struct egr_origin *o);
static uint64_t mix64(uint64_t h);
static void tconn_update(struct tconn *tc);

/* ---- small helpers ------------------------------------------------------ */

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = v >> 8;
	p[1] = v & 0xff;
}

/* c-ares 1.18 sends a raw query with the ID it carries: the agent's.
 * Upstream gets one of ours instead, unpredictable (spoofed answers) and
 * not the agent's choice (no collisions between agents in c-ares' table). */
static uint16_t upstream_id(struct dnsproxy *d)
{
	if (!d->n_ids) {
		if (getrandom(d->ids, sizeof(d->ids), GRND_NONBLOCK) != sizeof(d->ids)) {
			uint64_t seed = mix64(mono_ms() ^ (uintptr_t)d);
			unsigned i;

			for (i = 0; i < 64; i++)
				d->ids[i] = (uint16_t)(seed = mix64(seed + i));
		}
		d->n_ids = 64;
	}
	return d->ids[--d->n_ids];
}

static const char *type_str(uint16_t type, char *buf, size_t len)
{
	const char *s = dnsmsg_type_name(type);

	if (s)
		return s;
	snprintf(buf, len, "TYPE%u", type);
	return buf;
}

static void dq_detail(struct dq *x, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

/* Appends "; ..." so that the query type written first stays in front. */
static void dq_detail(struct dq *x, const char *fmt, ...)
{
	size_t n = strlen(x->detail);
	va_list ap;

	if (n && n + 2 < sizeof(x->detail)) {
		memcpy(x->detail + n, "; ", 3);
		n += 2;
	}
	if (n >= sizeof(x->detail) - 1)
		return;
	va_start(ap, fmt);
	vsnprintf(x->detail + n, sizeof(x->detail) - n, fmt, ap);
	va_end(ap);
}

/* ---- name memory -------------------------------------------------------- */

static uint64_t mix64(uint64_t h)
{
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdULL;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ULL;
	h ^= h >> 33;
	return h;
}

static size_t mem_bucket(const struct name_mem *m, uint64_t cgroup_id,
			 const struct egr_addr *a)
{
	uint64_t w0, w1;

	memcpy(&w0, a->b, 8);
	memcpy(&w1, a->b + 8, 8);
	return mix64(mix64(m->seed ^ cgroup_id) ^ w0 ^ mix64(w1)) % DNSP_MEM_BUCKETS;
}

static struct mem_entry *mem_find(struct name_mem *m, uint64_t cgroup_id,
				  const struct egr_addr *a, size_t *bucket)
{
	struct mem_entry *e;

	*bucket = mem_bucket(m, cgroup_id, a);
	for (e = m->buckets[*bucket]; e; e = e->hnext)
		if (e->cgroup_id == cgroup_id && !memcmp(e->addr.b, a->b, sizeof(a->b)))
			return e;
	return NULL;
}

static void mem_unlink_age(struct name_mem *m, struct mem_entry *e)
{
	struct mem_tenant *t = e->tenant;

	if (e->oprev)
		e->oprev->onext = e->onext;
	else
		m->oldest = e->onext;
	if (e->onext)
		e->onext->oprev = e->oprev;
	else
		m->newest = e->oprev;
	e->onext = e->oprev = NULL;
	if (e->tprev)
		e->tprev->tnext = e->tnext;
	else
		t->oldest = e->tnext;
	if (e->tnext)
		e->tnext->tprev = e->tprev;
	else
		t->newest = e->tprev;
	e->tnext = e->tprev = NULL;
}

static void mem_append_age(struct name_mem *m, struct mem_entry *e)
{
	struct mem_tenant *t = e->tenant;

	e->oprev = m->newest;
	e->onext = NULL;
	if (m->newest)
		m->newest->onext = e;
	else
		m->oldest = e;
	m->newest = e;
	e->tprev = t->newest;
	e->tnext = NULL;
	if (t->newest)
		t->newest->tnext = e;
	else
		t->oldest = e;
	t->newest = e;
}

/* The tenant holding the most entries (m->n > 0). */
static struct mem_tenant *mem_tenant_largest(struct name_mem *m)
{
	struct mem_tenant *t, *big = NULL;
	size_t i;

	for (i = 0; i < DNSP_MEM_TENANT_BUCKETS; i++)
		for (t = m->tenants[i]; t; t = t->next)
			if (!big || t->n > big->n)
				big = t;
	return big;
}

static struct mem_tenant **mem_tenant_slot(struct name_mem *m, uint64_t id)
{
	struct mem_tenant **tp = &m->tenants[mix64(m->seed ^ ~id) % DNSP_MEM_TENANT_BUCKETS];

	while (*tp && (*tp)->id != id)
		tp = &(*tp)->next;
	return tp;
}

static void mem_remove(struct name_mem *m, struct mem_entry *e)
{
	size_t b = mem_bucket(m, e->cgroup_id, &e->addr);

	if (e->hprev)
		e->hprev->hnext = e->hnext;
	else
		m->buckets[b] = e->hnext;
	if (e->hnext)
		e->hnext->hprev = e->hprev;
	mem_unlink_age(m, e);
	m->n--;
	if (!--e->tenant->n) {
		struct mem_tenant **tp = mem_tenant_slot(m, e->tenant->id);

		*tp = e->tenant->next;
		free(e->tenant);
		m->n_tenants--;
	}
	free(e);
}

/* Insert or refresh; the newest answer wins (the agent connects to what it
 * was told last). Bounded: the tenant's oldest entry makes room when it
 * holds its share, the oldest of all when the memory is full. */
static void mem_remember(struct name_mem *m, uint64_t cgroup_id, uint64_t tenant,
			 const struct egr_addr *a, const char *name, uint64_t expiry_ms)
{
	struct mem_tenant **tp, *t;
	struct mem_entry *e;
	size_t b, nlen = strlen(name);

	pthread_mutex_lock(&m->lock);
	e = mem_find(m, cgroup_id, a, &b);
	if (e && !strcmp(e->name, name)) {
		e->expiry_ms = expiry_ms;
		mem_unlink_age(m, e);
		mem_append_age(m, e);
		goto out;
	}
	if (e)
		mem_remove(m, e);
	t = *mem_tenant_slot(m, tenant);
	if (t && t->n >= m->max / m->n_tenants)
		mem_remove(m, t->oldest); /* may free t */
	while (m->n >= m->max && m->n)
		mem_remove(m, mem_tenant_largest(m)->oldest);
	tp = mem_tenant_slot(m, tenant);
	if (!*tp) {
		*tp = calloc(1, sizeof(**tp));
		if (!*tp) {
			log_warn("dnsproxy: out of memory remembering %s", name);
			goto out;
		}
		(*tp)->id = tenant;
		m->n_tenants++;
	}
	t = *tp;
	e = malloc(sizeof(*e) + nlen + 1);
	if (!e) {
		log_warn("dnsproxy: out of memory remembering %s", name);
		if (!t->n) {
			*tp = t->next;
			free(t);
			m->n_tenants--;
		}
		goto out;
	}
	e->tenant = t;
	t->n++;
	e->cgroup_id = cgroup_id;
	e->addr = *a;
	e->expiry_ms = expiry_ms;
	memcpy(e->name, name, nlen + 1);
	e->hprev = NULL;
	e->hnext = m->buckets[b];
	if (e->hnext)
		e->hnext->hprev = e;
	m->buckets[b] = e;
	mem_append_age(m, e);
	m->n++;
out:
	pthread_mutex_unlock(&m->lock);
}

static void mem_clear(struct name_mem *m)
{
	while (m->oldest)
		mem_remove(m, m->oldest);
}

bool dnsproxy_name_for_addr(struct dnsproxy *d, uint64_t cgroup_id,
			    const struct egr_addr *a, char *name, size_t len)
{
	struct name_mem *m;
	struct mem_entry *e;
	bool found = false;
	size_t b;

	if (!d || !a)
		return false;
	m = &d->mem;
	pthread_mutex_lock(&m->lock);
	e = mem_find(m, cgroup_id, a, &b);
	if (e && e->expiry_ms <= mono_ms()) {
		mem_remove(m, e);
		e = NULL;
	}
	if (e) {
		found = true;
		if (name && len)
			snprintf(name, len, "%s", e->name);
	}
	pthread_mutex_unlock(&m->lock);
	return found;
}

/* ---- policy helpers (DNS semantics: the port is not known yet) ---------- */

/* The allow rule that makes name resolvable, for the audit record. */
static const struct policy_rule *allow_rule_for(const struct policy *p, const char *name)
{
	struct policy one = { .name = p->name, .mode = p->mode };
	struct policy_decision dd;
	size_t i;

	for (i = 0; i < p->n_allow; i++) {
		const struct policy_rule *r = &p->allow[i];
		uint16_t port = r->any_port ? 0 : r->port ? r->port : 443;

		if (r->kind != RULE_DOMAIN)
			continue;
		one.allow = &p->allow[i];
		one.n_allow = 1;
		policy_decide_name(&one, name, port, &dd);
		if (dd.verdict == EGR_VERDICT_ALLOW)
			return r;
	}
	return NULL;
}

/* A deny rule for every port (":*") that matches name, if any: port 0
 * matches exactly those in policy_decide_name(). */
static const struct policy_rule *deny_rule_for(const struct policy *p, const char *name)
{
	struct policy_decision dd;

	policy_decide_name(p, name, 0, &dd);
	return dd.reason == EGR_REASON_RULE_DENY ? dd.rule : NULL;
}

/* A private/loopback/... answer is acceptable if an allow CIDR rule covers
 * the address on some port: the policy author named it. */
static bool policy_covers_addr(const struct policy *p, const struct egr_addr *a)
{
	size_t i;

	for (i = 0; i < p->n_allow; i++)
		if (p->allow[i].kind == RULE_CIDR &&
		    addr_in_prefix(a, &p->allow[i].net, p->allow[i].prefixlen))
			return true;
	return false;
}

/* ---- c-ares in our loop (the pattern of resolver.c) --------------------- */

static void upstream_arm_timer(struct dnsproxy *d);

static void upstream_fd_cb(struct loop *l, int fd, void *data, int events)
{
	struct dnsproxy *d = data;
	ares_socket_t rfd = ARES_SOCKET_BAD, wfd = ARES_SOCKET_BAD;

	if (events & (LOOP_READ | LOOP_ERR | LOOP_HUP))
		rfd = fd;
	if (events & LOOP_WRITE)
		wfd = fd;
	ares_process_fd(d->channel, rfd, wfd);
	upstream_arm_timer(d);
}

static void upstream_sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
	struct dnsproxy *d = data;
	int mask = (readable ? LOOP_READ : 0) | (writable ? LOOP_WRITE : 0);
	int err;

	if (!readable && !writable) {
		loop_del(d->loop, fd);
		return;
	}
	err = loop_add(d->loop, fd, mask, upstream_fd_cb, d);
	if (err)
		log_error("dnsproxy: cannot watch upstream socket %d: %s", fd, strerror(-err));
}

static void upstream_timer_cb(struct loop *l, struct loop_timer *t)
{
	struct dnsproxy *d = t->data;

	ares_process_fd(d->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	upstream_arm_timer(d);
}

static void upstream_arm_timer(struct dnsproxy *d)
{
	struct timeval tvbuf, *tv;
	uint64_t ms;

	if (d->destroying)
		return;
	tv = ares_timeout(d->channel, NULL, &tvbuf);
	if (!tv) {
		loop_timer_stop(&d->ares_timer);
		return;
	}
	ms = (uint64_t)tv->tv_sec * 1000 + ((uint64_t)tv->tv_usec + 999) / 1000;
	loop_timer_start_at(d->loop, &d->ares_timer, loop_update_time(d->loop) + ms,
			    upstream_timer_cb);
}

static int channel_init(struct dnsproxy *d)
{
	struct ares_options opts = { 0 };
	char lookups[] = "b";
	int optmask, st;

	optmask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES |
		  ARES_OPT_DOMAINS | ARES_OPT_FLAGS | ARES_OPT_LOOKUPS;
	opts.sock_state_cb = upstream_sock_state_cb;
	opts.sock_state_cb_data = d;
	opts.timeout = d->resolve_timeout_ms / 3 > 100 ? (int)(d->resolve_timeout_ms / 3) : 100;
	opts.tries = 2;
	/* We forward the agent's query as is: no search domains, no aliases,
	 * no hosts file (the daemon's /etc/hosts is not the agent's answer). */
	opts.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
	opts.domains = NULL;
	opts.ndomains = 0;
	opts.lookups = lookups;
	st = ares_init_options(&d->channel, &opts, optmask);
	if (st != ARES_SUCCESS) {
		log_error("dnsproxy: ares_init_options: %s", ares_strerror(st));
		return -EIO;
	}
	d->channel_ok = true;
	if (d->params.upstream && *d->params.upstream) {
		st = ares_set_servers_ports_csv(d->channel, d->params.upstream);
		if (st != ARES_SUCCESS) {
			log_error("dnsproxy: DNS upstream '%s': %s", d->params.upstream,
				  ares_strerror(st));
			return -EINVAL;
		}
	}
	return 0;
}

/* ---- answering ---------------------------------------------------------- */

static void lset_unref(struct dns_lset *ls)
{
	if (--ls->refs)
		return;
	close(ls->fd4);
	if (ls->fd6 >= 0)
		close(ls->fd6);
	close(ls->diag);
	free(ls);
}

static void dq_free(struct dq *x)
{
	if (x->ls)
		lset_unref(x->ls);
	free(x);
}

/* A record kept through the fold's window: its strings copied. */
struct dns_fold_copy {
	struct audit_record r;
	char s[];
};

static void *dns_fold_dup(void *src)
{
	const struct audit_record *r = src;
	const char *strs[] = { r->cgroup, r->host, r->rule, r->policy, r->detail };
	size_t len[5], total = 0, i;
	struct dns_fold_copy *c;
	char *p;

	for (i = 0; i < 5; i++) {
		len[i] = strs[i] ? strlen(strs[i]) + 1 : 0;
		total += len[i];
	}
	c = malloc(sizeof(*c) + total);
	if (!c)
		return NULL;
	c->r = *r;
	p = c->s;
	for (i = 0; i < 5; i++) {
		const char *q = NULL;

		if (strs[i]) {
			memcpy(p, strs[i], len[i]);
			q = p;
			p += len[i];
		}
		switch (i) {
		case 0: c->r.cgroup = q; break;
		case 1: c->r.host = q; break;
		case 2: c->r.rule = q; break;
		case 3: c->r.policy = q; break;
		default: c->r.detail = q; break;
		}
	}
	c->r.origin = "dns";
	return c;
}

static bool same_str(const char *a, const char *b)
{
	return a == b || (a && b && !strcmp(a, b));
}

/* Whether a kept copy and a new query's record are the same kind: the
 * tag is a hash of these, and a collision must not merge two names. */
static bool dns_fold_equal(const void *payload, const void *src)
{
	const struct audit_record *a = &((const struct dns_fold_copy *)payload)->r, *b = src;

	return same_str(a->host, b->host) && same_str(a->rule, b->rule) &&
	       same_str(a->policy, b->policy) && same_str(a->detail, b->detail) &&
	       a->bytes_up == b->bytes_up && a->bytes_down == b->bytes_down;
}

/* A record the fold gives back: the query's own (the first of its kind in
 * the window), or one standing for the repeats, or for the kinds past the
 * cgroup's share (no name, destination or process). */
static void dns_fold_emit(void *ctx, const struct egr_event *e, const struct kfold_span *sp)
{
	struct dnsproxy *d = ctx;
	struct dns_fold_copy *c;
	struct audit_record r;
	char detail[256], why[sizeof(detail) + 8];

	if (sp->src) {
		/* the query's own record, the first of its kind: at once */
		audit_write(d->params.audit, sp->src);
		return;
	}
	c = sp->payload;
	if (c) {
		r = c->r;
	} else {
		/* its copy could not be made: what the event holds */
		kevent_to_record(e, &r);
		r.verdict = (enum egr_verdict)e->type;
		r.detail = "name not kept (out of memory)";
	}
	if (sp->any_cgroup) {
		/* by kind alone: the event's kind (reason none if kinds vary) */
		r.reason = (enum egr_reason)e->reason;
		r.proto = r.reason ? (int)e->proto : 0;
	}
	if (sp->mixed) {
		r.host = NULL;
		r.rule = NULL;
		r.detail = NULL;
		r.bytes_up = r.bytes_down = 0;
	} else {
		/* the sizes of query and answer are part of the kind */
		r.bytes_up *= sp->count;
		r.bytes_down *= sp->count;
	}
	kevent_span(&r, sp, detail, sizeof(detail));
	if (sp->mixed) {
		snprintf(why, sizeof(why), "names, %s", detail);
		r.detail = why;
		if (sp->any_cgroup)
			r.cgroup = NULL, r.policy = NULL;
	}
	r.origin = "dns";
	audit_write(d->params.audit, &r);
}

static void dns_fold_timer_cb(struct loop *l, struct loop_timer *t)
{
	struct dnsproxy *d = t->data;

	kfold_tick(d->fold, kfold_now_ns(), false);
	if (kfold_open(d->fold))
		loop_timer_start_at(l, &d->fold_timer, loop_now_ms(l) + 100, dns_fold_timer_cb);
}

/* What dns_fold_equal compares, hashed into the kind's tag. */
static uint64_t fold_tag_str(const struct kfold *f, uint64_t tag, const char *s)
{
	return kfold_hash(f, tag, s ? s : "", s ? strlen(s) + 1 : 0);
}

static void dq_audit(struct dq *x)
{
	struct dnsproxy *d = x->d;
	struct audit_record r;
	char peerbuf[INET6_ADDRSTRLEN], cgbuf[PATH_MAX];
	char detail[DNSP_DETAIL_LEN + 64];
	struct egr_addr pa;
	uint16_t pport = 0;

	if (!d->params.audit)
		return;
	memset(&r, 0, sizeof(r));
	r.start = x->start;
	clock_gettime(CLOCK_REALTIME, &r.end);
	r.proto = x->proto;
	r.detail = x->detail[0] ? x->detail : NULL;
	if (x->has_origin) {
		if (d->params.cgroup_name)
			r.cgroup = d->params.cgroup_name(d->params.ctx, x->origin.cgroup_id,
							 cgbuf, sizeof(cgbuf));
		r.cgroup_id = x->origin.cgroup_id;
		r.pid = x->origin.tgid;
		r.uid = x->origin.uid;
		memcpy(r.comm, x->origin.comm, EGR_COMM_LEN);
		r.comm[EGR_COMM_LEN] = '\0';
		r.has_dst = true;
		memcpy(r.dst.b, x->origin.dst_addr, sizeof(r.dst.b));
		r.dst_port = x->origin.dst_port;
	} else if (x->proto == IPPROTO_UDP &&
		   !addr_from_sockaddr(&pa, &pport, (const struct sockaddr *)&x->peer)) {
		/* Nobody to name: say where the datagram came from. */
		snprintf(detail, sizeof(detail), "%s%sfrom %s:%u", x->detail,
			 x->detail[0] ? "; " : "", addr_to_str(&pa, peerbuf, sizeof(peerbuf)),
			 pport);
		r.detail = detail;
	}
	if (x->parsed)
		r.host = x->q.qname;
	r.verdict = x->verdict;
	r.reason = x->reason;
	r.rule = x->rule;
	r.policy = x->policy ? x->policy->name : NULL;
	r.origin = "dns";
	r.bytes_up = x->raw_len;
	r.bytes_down = x->bytes_down;
	if (d->fold) {
		struct egr_event e;
		uint64_t tag = 0;

		/* the kind: the event's fields, and a keyed hash of the rest */
		memset(&e, 0, sizeof(e));
		e.ts_ns = kfold_now_ns();
		e.type = (uint32_t)r.verdict;
		e.reason = (uint32_t)r.reason;
		e.proto = (uint32_t)r.proto;
		if (x->has_origin)
			e.origin = x->origin;
		e.origin.cgroup_id = r.cgroup_id;
		tag = fold_tag_str(d->fold, tag, r.host);
		tag = fold_tag_str(d->fold, tag, r.rule);
		tag = fold_tag_str(d->fold, tag, r.policy);
		tag = fold_tag_str(d->fold, tag, r.detail);
		tag = kfold_hash(d->fold, tag, &r.bytes_up, sizeof(r.bytes_up));
		tag = kfold_hash(d->fold, tag, &r.bytes_down, sizeof(r.bytes_down));
		kfold_event_tagged(d->fold, &e, tag, &r);
		if (kfold_open(d->fold) && !d->destroying && !loop_timer_active(&d->fold_timer))
			loop_timer_start_at(d->loop, &d->fold_timer,
					    loop_now_ms(d->loop) + KFOLD_WINDOW_MS + 1,
					    dns_fold_timer_cb);
		return;
	}
	audit_write(d->params.audit, &r);
}

static void st_inc(uint64_t *v)
{
	/* one writer: a load and a store, no locked instruction */
	__atomic_store_n(v, __atomic_load_n(v, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
}

static void dq_count(struct dq *x)
{
	struct dnsproxy *d = x->d;

	if ((unsigned)x->verdict < 4)
		st_inc(&d->st_queries[x->verdict]);
	st_inc(x->proto == IPPROTO_TCP ? &d->st_tcp : &d->st_udp);
	if (x->reason == EGR_REASON_UPSTREAM)
		st_inc(&d->st_upstream_fail);
}

void dnsproxy_stats(const struct dnsproxy *d, struct dnsproxy_stats *out)
{
	unsigned i;

	memset(out, 0, sizeof(*out));
	if (!d)
		return;
	for (i = 0; i < 4; i++)
		out->queries[i] = __atomic_load_n(&d->st_queries[i], __ATOMIC_RELAXED);
	out->udp = __atomic_load_n(&d->st_udp, __ATOMIC_RELAXED);
	out->tcp = __atomic_load_n(&d->st_tcp, __ATOMIC_RELAXED);
	out->upstream_failures = __atomic_load_n(&d->st_upstream_fail, __ATOMIC_RELAXED);
}

static void udp_send(struct dq *x, const uint8_t *buf, size_t len)
{
	ssize_t n;

	do
		n = sendto(x->ufd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL,
			   (const struct sockaddr *)&x->peer, x->peer_len);
	while (n < 0 && errno == EINTR);
	/* A full socket buffer drops the answer, as the network would; the
	 * agent's resolver retries. */
	if (n < 0)
		log_debug("dnsproxy: answer to agent: %s", strerror(errno));
}

static void tconn_unlink_query(struct tconn *tc, struct dq *x)
{
	if (x->tprev)
		x->tprev->tnext = x->tnext;
	else
		tc->pending = x->tnext;
	if (x->tnext)
		x->tnext->tprev = x->tprev;
	x->tnext = x->tprev = NULL;
	x->tc = NULL;
	tc->n_pending--;
}

static int tconn_flush(struct tconn *tc)
{
	while (tc->oq_head) {
		struct outbuf *o = tc->oq_head;
		ssize_t n = send(tc->fd, o->data + o->off, o->len - o->off,
				 MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			return -errno;
		}
		tc->last_active_ms = loop_now_ms(tc->d->loop);
		o->off += (size_t)n;
		tc->oq_bytes -= (size_t)n;
		if (o->off < o->len)
			continue;
		tc->oq_head = o->next;
		if (!tc->oq_head)
			tc->oq_tail = NULL;
		free(o);
	}
	return 0;
}

static void tconn_queue(struct tconn *tc, const uint8_t *buf, size_t len)
{
	struct outbuf *o;
	int err;

	if (tc->failed || len > 65535)
		return;
	o = malloc(sizeof(*o) + 2 + len);
	if (!o) {
		tc->failed = true;
		return;
	}
	o->next = NULL;
	o->len = 2 + len;
	o->off = 0;
	put16(o->data, (uint16_t)len);
	memcpy(o->data + 2, buf, len);
	if (tc->oq_tail)
		tc->oq_tail->next = o;
	else
		tc->oq_head = o;
	tc->oq_tail = o;
	tc->oq_bytes += o->len;
	err = tconn_flush(tc);
	if (err) {
		log_debug("dnsproxy: tcp write: %s", strerror(-err));
		tc->failed = true;
	}
}

/* The one exit of every query: answer (reply may be NULL: no answer),
 * audit, free. */
static void dq_finish(struct dq *x, const uint8_t *reply, size_t len)
{
	struct tconn *tc = x->tc;
	bool send = reply && !x->d->destroying && (x->proto == IPPROTO_UDP || tc);

	/* The record first: whoever sees the answer can already read it. */
	x->bytes_down = send ? len : 0;
	dq_count(x);
	dq_audit(x);
	if (send) {
		if (x->proto == IPPROTO_UDP)
			udp_send(x, reply, len);
		else
			tconn_queue(tc, reply, len);
	}
	if (tc)
		tconn_unlink_query(tc, x);
	x->tc = NULL;
	dq_free(x);
	if (tc)
		tconn_update(tc);
}

static void dq_reply_rcode(struct dq *x, enum dnsmsg_rcode rcode)
{
	uint8_t out[DNSP_HDR_LEN + DNSMSG_NAME_MAX + 2 + 4 + 16];
	int n;

	n = dnsmsg_build_error(x->raw, x->raw_len, &x->q, rcode, out, sizeof(out));
	if (n < 0) {
		log_warn("dnsproxy: cannot build %u answer for %s: %s", rcode, x->q.qname,
			 strerror(-n));
		dq_finish(x, NULL, 0);
		return;
	}
	dq_finish(x, out, (size_t)n);
}

/* The largest answer the agent accepts over UDP (RFC 6891 6.2.3/6.2.5). */
static size_t udp_limit(const struct dnsmsg_query *q)
{
	size_t n;

	if (!q->has_edns)
		return DNSP_UDP_PLAIN;
	n = q->edns_udp_size;
	if (n < DNSP_UDP_PLAIN)
		n = DNSP_UDP_PLAIN;
	if (n > DNSP_UDP_EDNS_CAP)
		n = DNSP_UDP_EDNS_CAP;
	return n;
}

static bool name_in(const char names[][DNSMSG_NAME_MAX + 1], size_t n, const char *s)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!strcmp(names[i], s))
			return true;
	return false;
}

/* Remember the addresses of the asked name's CNAME chain under the asked
 * name. A record's lifetime is the smallest TTL on its way from the asked
 * name (the chain expires as a whole), capped, and TTL 0 still gets a few
 * seconds so that the connect right after the answer works. */
static size_t dq_remember(struct dq *x, const struct dnsmsg_answer *a)
{
	char chain[16][DNSMSG_NAME_MAX + 1];
	uint32_t chain_ttl = UINT32_MAX;
	size_t n_chain = 1, i, count = 0, pass;
	uint64_t now = mono_ms();
	bool grew = true;

	snprintf(chain[0], sizeof(chain[0]), "%s", x->q.qname);
	for (pass = 0; grew && pass < 16; pass++) {
		grew = false;
		for (i = 0; i < a->n_rr && n_chain < 16; i++) {
			const struct dnsmsg_rr *rr = &a->rr[i];

			if (rr->type != DNSMSG_CNAME || !name_in(chain, n_chain, rr->name) ||
			    name_in(chain, n_chain, rr->target))
				continue;
			snprintf(chain[n_chain++], sizeof(chain[0]), "%s", rr->target);
			if (rr->ttl < chain_ttl)
				chain_ttl = rr->ttl;
			grew = true;
		}
	}
	for (i = 0; i < a->n_rr; i++) {
		const struct dnsmsg_rr *rr = &a->rr[i];
		uint64_t ttl = rr->ttl < chain_ttl ? rr->ttl : chain_ttl;
		uint64_t ms;

		if ((rr->type != DNSMSG_A && rr->type != DNSMSG_AAAA) ||
		    !name_in(chain, n_chain, rr->name))
			continue;
		if (ttl > DNSP_TTL_CAP_S)
			ttl = DNSP_TTL_CAP_S;
		ms = ttl ? ttl * 1000 : DNSP_TTL_ZERO_MS;
		if (x->has_origin)
			mem_remember(&x->d->mem, x->origin.cgroup_id, origin_tenant(&x->origin),
				     &rr->addr, x->q.qname, now + ms);
		count++;
	}
	return count;
}

/* The first address of an answer that leads where an allowed name must
 * not (DNS rebinding): loopback, the LAN, the metadata service, unless the
 * policy names it. Sees every address record, not only the ones kept. */
struct rebind_check {
	const struct policy *policy;
	bool found;
	enum addr_class cls;
	struct egr_addr addr;
};

static void rebind_check_addr(void *ctx, const struct egr_addr *a)
{
	struct rebind_check *rc = ctx;
	enum addr_class cls;

	if (rc->found)
		return;
	cls = addr_classify(a);
	if (cls == ADDR_PUBLIC || policy_covers_addr(rc->policy, a))
		return;
	rc->found = true;
	rc->cls = cls;
	rc->addr = *a;
}

static void dq_answered(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct dq *x = arg;
	struct dnsproxy *d = x->d;
	struct dnsmsg_answer *a = NULL;
	struct rebind_check rc = { .policy = x->policy };
	uint8_t *out = NULL;
	size_t n_addr, limit;
	char abuf_s[INET6_ADDRSTRLEN];

	d->inflight--;
	if (status != ARES_SUCCESS || !abuf || alen < DNSP_HDR_LEN) {
		x->verdict = EGR_VERDICT_DENY;
		x->reason = EGR_REASON_UPSTREAM;
		dq_detail(x, "upstream: %s", status == ARES_SUCCESS ? "short answer"
								    : ares_strerror(status));
		if (status == ARES_EDESTRUCTION || d->destroying)
			dq_finish(x, NULL, 0);
		else
			dq_reply_rcode(x, DNSMSG_SERVFAIL);
		return;
	}
	a = malloc(sizeof(*a));
	out = malloc((size_t)alen);
	if (!a || !out) {
		x->verdict = EGR_VERDICT_DENY;
		x->reason = EGR_REASON_INTERNAL;
		dq_detail(x, "out of memory");
		dq_reply_rcode(x, DNSMSG_SERVFAIL);
		goto out;
	}
	if (dnsmsg_parse_answer_addrs(abuf, (size_t)alen, a, rebind_check_addr, &rc)) {
		x->verdict = EGR_VERDICT_DENY;
		x->reason = EGR_REASON_UPSTREAM;
		dq_detail(x, "upstream: malformed answer");
		dq_reply_rcode(x, DNSMSG_SERVFAIL);
		goto out;
	}
	/* DNS rebinding: an allowed name must not lead the agent to the
	 * host's loopback, the LAN or the metadata service unless the policy
	 * names that address. Every address record of the answer counts (the
	 * whole answer is forwarded), also past the DNSMSG_MAX_ANSWERS kept. */
	if (rc.found) {
		dq_detail(x, "%s is %s", addr_to_str(&rc.addr, abuf_s, sizeof(abuf_s)),
			  addr_class_name(rc.cls));
		if (x->policy->mode != POLICY_AUDIT) {
			x->verdict = EGR_VERDICT_DENY;
			x->reason = EGR_REASON_PRIVATE_ADDR;
			x->rule = NULL;
			dq_reply_rcode(x, DNSMSG_REFUSED);
			goto out;
		}
		if (x->verdict != EGR_VERDICT_AUDIT) {
			x->verdict = EGR_VERDICT_AUDIT;
			x->reason = EGR_REASON_PRIVATE_ADDR;
			x->rule = NULL;
		}
	}
	n_addr = dq_remember(x, a);
	dq_detail(x, "addrs=%zu", n_addr);
	if (a->rcode != DNSMSG_NOERROR)
		dq_detail(x, "rcode=%u", a->rcode);

	memcpy(out, abuf, (size_t)alen);
	put16(out, x->q.id);
	limit = x->proto == IPPROTO_UDP ? udp_limit(&x->q) : 65535;
	if ((size_t)alen > limit) {
		/* Question only, TC=1: the agent asks again over TCP (RFC 2181 9
		 * prefers this to a partial RRset). */
		uint8_t tr[DNSP_HDR_LEN + DNSMSG_NAME_MAX + 2 + 4 + 16];
		int n = dnsmsg_build_error(x->raw, x->raw_len, &x->q,
					   (enum dnsmsg_rcode)(a->rcode & 0xf), tr, sizeof(tr));

		dq_detail(x, "truncated (%d bytes > %zu)", alen, limit);
		if (n < 0) {
			dq_finish(x, NULL, 0);
			goto out;
		}
		tr[2] |= 0x02; /* TC */
		dq_finish(x, tr, (size_t)n);
		goto out;
	}
	dq_finish(x, out, (size_t)alen);
out:
	free(a);
	free(out);
}

/* Malformed query: FORMERR if there is a header to answer, else silence.
 * Answers (QR=1) are never answered, so two reflectors cannot loop. */
static void dq_malformed(struct dq *x)
{
	uint8_t out[DNSP_HDR_LEN];

	x->verdict = EGR_VERDICT_DENY;
	x->reason = EGR_REASON_MALFORMED;
	dq_detail(x, "malformed query (%zu bytes)", x->raw_len);
	log_debug("dnsproxy: malformed query of %zu bytes", x->raw_len);
	if (x->raw_len < DNSP_HDR_LEN || (x->raw[2] & 0x80)) {
		dq_finish(x, NULL, 0);
		return;
	}
	memset(out, 0, sizeof(out));
	out[0] = x->raw[0];
	out[1] = x->raw[1];
	out[2] = 0x80 | (x->raw[2] & 0x79); /* QR, opcode and RD copied */
	out[3] = 0x80 | DNSMSG_FORMERR;     /* RA */
	dq_finish(x, out, sizeof(out));
}

/* Decide one parsed-or-not query; consumes x. */
static void dq_handle(struct dq *x)
{
	struct dnsproxy *d = x->d;
	const struct policy_rule *rule;
	char tbuf[16];

	if (dnsmsg_parse_query(x->raw, x->raw_len, &x->q)) {
		dq_malformed(x);
		return;
	}
	x->parsed = true;
	dq_detail(x, "%s", type_str(x->q.qtype, tbuf, sizeof(tbuf)));
	if (!x->has_origin) {
		x->verdict = EGR_VERDICT_DENY;
		x->reason = EGR_REASON_NO_ORIGIN;
		dq_reply_rcode(x, DNSMSG_REFUSED);
		return;
	}
	x->policy = d->params.policy_for ? d->params.policy_for(d->params.ctx, &x->origin)
					 : NULL;
	if (!x->policy) {
		x->verdict = EGR_VERDICT_DENY;
		x->reason = EGR_REASON_NO_POLICY;
		dq_reply_rcode(x, DNSMSG_REFUSED);
		return;
	}
	if (policy_name_resolvable(x->policy, x->q.qname)) {
		rule = allow_rule_for(x->policy, x->q.qname);
		x->verdict = EGR_VERDICT_ALLOW;
		x->reason = EGR_REASON_RULE_ALLOW;
		x->rule = rule ? rule->text : NULL;
	} else {
		rule = deny_rule_for(x->policy, x->q.qname);
		x->reason = rule ? EGR_REASON_RULE_DENY : EGR_REASON_NO_MATCH;
		x->rule = rule ? rule->text : NULL;
		if (x->policy->mode != POLICY_AUDIT) {
			/* Never forwarded: not one byte of the name reaches a
			 * resolver, so nothing can be tunnelled through it. */
			x->verdict = EGR_VERDICT_DENY;
			dq_reply_rcode(x, DNSMSG_NXDOMAIN);
			return;
		}
		x->verdict = EGR_VERDICT_AUDIT;
	}
	if (d->inflight >= DNSP_MAX_INFLIGHT) {
		uint64_t now = loop_now_ms(d->loop);

		if (now - d->last_inflight_warn_ms > 10000) {
			log_warn("dnsproxy: %u queries waiting for upstream; answering SERVFAIL",
				 d->inflight);
			d->last_inflight_warn_ms = now;
		}
		x->verdict = EGR_VERDICT_DENY;
		x->reason = EGR_REASON_UPSTREAM;
		dq_detail(x, "too many queries in flight");
		dq_reply_rcode(x, DNSMSG_SERVFAIL);
		return;
	}
	d->inflight++;
	/* dq_answered() puts the agent's ID back. The callback may run
	 * before ares_send() returns. */
	put16(x->raw, upstream_id(d));
	ares_send(d->channel, x->raw, (int)x->raw_len, dq_answered, x);
	upstream_arm_timer(d);
}

static struct dq *dq_new(struct dnsproxy *d, int proto, const uint8_t *buf, size_t len)
{
	struct dq *x = calloc(1, sizeof(*x) + len);

	if (!x)
		return NULL;
	x->d = d;
	x->proto = proto;
	x->ufd = -1;
	x->raw_len = len;
	memcpy(x->raw, buf, len);
	clock_gettime(CLOCK_REALTIME, &x->start);
	return x;
}

/* ---- UDP ---------------------------------------------------------------- */

static void udp_read(struct dnsproxy *d, int fd, struct dns_lset *ls)
{
	unsigned i;

	for (i = 0; i < DNSP_UDP_BATCH; i++) {
		struct sockaddr_storage peer;
		socklen_t plen = sizeof(peer);
		struct dq *x;
		ssize_t n;

		n = recvfrom(fd, d->rbuf, sizeof(d->rbuf), MSG_DONTWAIT,
			     (struct sockaddr *)&peer, &plen);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK)
				/* ICMP errors from earlier answers land here. */
				log_debug("dnsproxy: recvfrom: %s", strerror(errno));
			return;
		}
		x = dq_new(d, IPPROTO_UDP, d->rbuf, (size_t)n);
		if (!x) {
			log_warn("dnsproxy: out of memory; query dropped");
			return;
		}
		x->ufd = fd;
		if (ls) {
			x->ls = ls;
			ls->refs++;
		}
		x->peer = peer;
		x->peer_len = plen;
		if (d->params.origin_for_udp &&
		    !d->params.origin_for_udp(d->params.ctx, (struct sockaddr *)&peer, plen,
					      &x->origin))
			x->has_origin = true;
		dq_handle(x);
	}
}

static void udp_cb(struct loop *l, int fd, void *data, int events)
{
	udp_read(data, fd, NULL);
}

/* A pod's listener: its sender is found by sock_diag in the pod's
 * namespace (origin_for_udp runs synchronously inside udp_read). */
static void udp_netns_cb(struct loop *l, int fd, void *data, int events)
{
	struct dns_lset *ls = data;

	sockdiag_use(ls->diag);
	udp_read(ls->d, fd, ls);
	sockdiag_use(-1);
}

/* ---- TCP ---------------------------------------------------------------- */

static void tconn_timer_cb(struct loop *l, struct loop_timer *t);
static void tconn_cb(struct loop *l, int fd, void *data, int events);

static void tconn_free(struct tconn *tc)
{
	struct dnsproxy *d = tc->d;

	while (tc->pending)
		tconn_unlink_query(tc, tc->pending);
	loop_timer_stop(&tc->timer);
	loop_timer_stop(&tc->msg_timer);
	if (tc->fd >= 0) {
		loop_del(d->loop, tc->fd);
		close(tc->fd);
	}
	while (tc->oq_head) {
		struct outbuf *o = tc->oq_head;

		tc->oq_head = o->next;
		free(o);
	}
	if (tc->prev)
		tc->prev->next = tc->next;
	else
		d->tconns = tc->next;
	if (tc->next)
		tc->next->prev = tc->prev;
	d->n_tcp--;
	free(tc);
}

static void tconn_parse(struct tconn *tc);

static bool tconn_has_message(const struct tconn *tc)
{
	return tc->rlen >= 2 &&
	       tc->rlen - 2 >= ((size_t)tc->rbuf[0] << 8 | tc->rbuf[1]);
}

static void tconn_msg_timer_cb(struct loop *l, struct loop_timer *t);

/* A message must arrive whole within DNSP_TCP_MSG_MS of its first byte,
 * however its bytes trickle in (each would restart the idle timer): the
 * deadline runs while rbuf holds the start of a message and no complete
 * one before it. tconn_parse() stops it when messages are taken out, so
 * the next one's time starts no earlier than its first byte. After EOF
 * the rest never comes: the connection ends with its last answer. */
static void tconn_track_message(struct tconn *tc)
{
	if (!tc->rlen || tc->rd_eof || tconn_has_message(tc))
		loop_timer_stop(&tc->msg_timer);
	else if (!loop_timer_active(&tc->msg_timer))
		loop_timer_start(tc->d->loop, tc->d->tl_msg, &tc->msg_timer, tconn_msg_timer_cb);
}

/* Interest and lifetime after anything happened; may free tc. */
static void tconn_update(struct tconn *tc)
{
	int mask = 0;

	if (tc->busy)
		return;
	/* Messages held back by the pending limit, now that one finished. */
	if (!tc->failed && tc->n_pending < DNSP_TCP_MAX_PENDING && tconn_has_message(tc)) {
		tc->busy = true;
		tconn_parse(tc);
		tc->busy = false;
	}
	if (tc->failed ||
	    (tc->rd_eof && !tc->n_pending && !tc->oq_head && !tconn_has_message(tc))) {
		tconn_free(tc);
		return;
	}
	tconn_track_message(tc);
	/* Back-pressure: an agent that pipelines without reading its answers
	 * stops being read. */
	if (!tc->rd_eof && tc->n_pending < DNSP_TCP_MAX_PENDING &&
	    tc->oq_bytes < DNSP_TCP_MAX_OUTQ)
		mask |= LOOP_READ;
	if (tc->oq_head)
		mask |= LOOP_WRITE;
	if (loop_mod(tc->d->loop, tc->fd, mask) < 0)
		tconn_free(tc);
}

/* Take every complete message out of rbuf. */
static void tconn_parse(struct tconn *tc)
{
	size_t off = 0;

	while (tc->rlen - off >= 2 && !tc->failed && tc->n_pending < DNSP_TCP_MAX_PENDING) {
		size_t mlen = (size_t)tc->rbuf[off] << 8 | tc->rbuf[off + 1];
		struct dq *x;

		if (!mlen) {
			/* Nothing to answer and no ID: the stream is garbage. */
			tc->failed = true;
			break;
		}
		if (tc->rlen - off - 2 < mlen)
			break;
		x = dq_new(tc->d, IPPROTO_TCP, tc->rbuf + off + 2, mlen);
		off += 2 + mlen;
		if (!x) {
			tc->failed = true;
			break;
		}
		x->has_origin = true;
		x->origin = tc->origin;
		if (tc->d->params.origin_refresh)
			tc->d->params.origin_refresh(tc->d->params.ctx, &x->origin);
		x->tc = tc;
		x->tnext = tc->pending;
		if (tc->pending)
			tc->pending->tprev = x;
		tc->pending = x;
		tc->n_pending++;
		dq_handle(x);
	}
	if (off) {
		memmove(tc->rbuf, tc->rbuf + off, tc->rlen - off);
		tc->rlen -= off;
		loop_timer_stop(&tc->msg_timer);
	}
}

static void tconn_read(struct tconn *tc)
{
	unsigned rounds;

	/* Bounded: a fast sender cannot keep the loop here. */
	for (rounds = 0; rounds < 16 && !tc->rd_eof && !tc->failed; rounds++) {
		ssize_t n;

		if (tc->n_pending >= DNSP_TCP_MAX_PENDING || tc->oq_bytes >= DNSP_TCP_MAX_OUTQ ||
		    tc->rlen == sizeof(tc->rbuf))
			break;
		n = recv(tc->fd, tc->rbuf + tc->rlen, sizeof(tc->rbuf) - tc->rlen, MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN && errno != EWOULDBLOCK) {
				log_debug("dnsproxy: tcp read: %s", strerror(errno));
				tc->failed = true;
			}
			break;
		}
		if (n == 0) {
			tc->rd_eof = true;
			break;
		}
		tc->last_active_ms = loop_now_ms(tc->d->loop);
		tc->rlen += (size_t)n;
		tconn_parse(tc);
	}
}

static void tconn_cb(struct loop *l, int fd, void *data, int events)
{
	struct tconn *tc = data;
	int err;

	tc->busy = true;
	if (events & LOOP_ERR)
		tc->failed = true;
	if (!tc->failed && (events & LOOP_WRITE)) {
		err = tconn_flush(tc);
		if (err)
			tc->failed = true;
	}
	if (!tc->failed && (events & (LOOP_READ | LOOP_HUP)))
		tconn_read(tc);
	/* Both directions gone: nobody will read what is still queued. */
	if ((events & LOOP_HUP) && !(events & LOOP_READ))
		tc->failed = true;
	tc->busy = false;
	tconn_update(tc);
}

/* A denial of a DNS-over-TCP connection itself, not of a query in it:
 * a record (origin dns, proto tcp, no name) from a query struct that never
 * holds one. NULL if out of memory; the caller adds the detail and passes
 * it to dq_finish(x, NULL, 0). */
static struct dq *tconn_denial(struct dnsproxy *d, const struct egr_origin *o,
			       enum egr_reason reason)
{
	struct dq *x = dq_new(d, IPPROTO_TCP, (const uint8_t *)"", 0);

	if (!x)
		return NULL;
	x->has_origin = true;
	x->origin = *o;
	if (d->params.origin_refresh)
		d->params.origin_refresh(d->params.ctx, &x->origin);
	x->policy = d->params.policy_for ? d->params.policy_for(d->params.ctx, &x->origin)
					 : NULL;
	x->verdict = EGR_VERDICT_DENY;
	x->reason = reason;
	return x;
}

static void tconn_msg_timer_cb(struct loop *l, struct loop_timer *t)
{
	struct tconn *tc = t->data;
	struct dnsproxy *d = tc->d;
	struct dq *x;

	/* Not the agent's doing: we stopped reading (queries in flight at
	 * the limit), so the rest of the message may wait in the socket. */
	if (tc->n_pending >= DNSP_TCP_MAX_PENDING) {
		loop_timer_start(l, d->tl_msg, &tc->msg_timer, tconn_msg_timer_cb);
		return;
	}
	log_debug("dnsproxy: tcp message incomplete after %u ms; closing", DNSP_TCP_MSG_MS);
	x = tconn_denial(d, &tc->origin, EGR_REASON_PEEK_TIMEOUT);
	if (x) {
		dq_detail(x, "DNS over TCP: message incomplete after %u ms (%zu of %zu bytes)",
			  DNSP_TCP_MSG_MS, tc->rlen < 2 ? 0 : tc->rlen - 2,
			  tc->rlen < 2 ? (size_t)0 : ((size_t)tc->rbuf[0] << 8 | tc->rbuf[1]));
		dq_finish(x, NULL, 0);
	}
	tc->failed = true;
	tconn_update(tc);
}

static void tconn_timer_cb(struct loop *l, struct loop_timer *t)
{
	struct tconn *tc = t->data;
	struct dnsproxy *d = tc->d;
	uint64_t idle = loop_now_ms(l) - tc->last_active_ms;

	/* Queries still upstream are bounded by c-ares' own timeouts. */
	if (tc->n_pending || idle < DNSP_TCP_IDLE_MS) {
		loop_timer_start(l, d->tl_idle, &tc->timer, tconn_timer_cb);
		return;
	}
	log_debug("dnsproxy: tcp connection idle for %u ms; closing", DNSP_TCP_IDLE_MS);
	tc->failed = true;
	tconn_update(tc);
}

/*
 * Whose share a DNS-over-TCP connection takes: the bound cgroup the kernel
 * charged the agent's socket to (a tenant: the cgroup whose binding
 * applies, with everything below it, as the kernel's per-tenant counts),
 * else the socket's own cgroup. The TCP proxy's counts do not cover these
 * connections: it lets go of them at the hand-over.
 */
static uint64_t origin_tenant(const struct egr_origin *o)
{
	if ((o->flags & EGR_ORIGIN_CHARGED) && o->charged_cgroup)
		return o->charged_cgroup;
	return o->cgroup_id;
}

static unsigned tenant_tcp_count(const struct dnsproxy *d, uint64_t tenant)
{
	const struct tconn *tc;
	unsigned n = 0;

	/* at most DNSP_MAX_TCP entries */
	for (tc = d->tconns; tc; tc = tc->next)
		n += tc->tenant == tenant;
	return n;
}

/* Over a limit: the connection is closed unread (the agent sees a reset
 * or EOF, and its resolver tries again or fails), with a record. */
static void tconn_refuse(struct dnsproxy *d, int fd, const struct egr_origin *o,
			 unsigned open, unsigned limit, bool tenant)
{
	uint64_t now = loop_now_ms(d->loop);
	uint64_t *last = tenant ? &d->last_tcp_tenant_warn_ms : &d->last_tcp_warn_ms;
	struct dq *x;

	if (now - *last > 10000) {
		char cgbuf[PATH_MAX];
		const char *cg = d->params.cgroup_name ?
			d->params.cgroup_name(d->params.ctx, o->cgroup_id, cgbuf, sizeof(cgbuf)) :
			NULL;

		if (tenant)
			log_warn("dnsproxy: cgroup %s (id %llu): its tenant has %u DNS-over-TCP "
				 "connections open, the limit; refusing more",
				 cg ? cg : "?", (unsigned long long)o->cgroup_id, open);
		else
			log_warn("dnsproxy: %u DNS-over-TCP connections open; refusing more",
				 open);
		*last = now;
	}
	close(fd);
	x = tconn_denial(d, o, EGR_REASON_CONN_LIMIT);
	if (!x)
		return;
	dq_detail(x, "DNS over TCP: %u connections open%s, limit %u", open,
		  tenant ? " for this cgroup's tenant" : " in all", limit);
	dq_finish(x, NULL, 0);
}

static void tconn_start(struct dnsproxy *d, int fd, const struct egr_origin *o)
{
	uint64_t tenant = origin_tenant(o);
	struct tconn *tc;
	unsigned n;
	int fl;

	/* One tenant cannot take every connection: the cap per tenant is
	 * checked first, so a tenant at it does not also hold the rest. */
	n = tenant_tcp_count(d, tenant);
	if (n >= DNSP_MAX_TCP_TENANT) {
		tconn_refuse(d, fd, o, n, DNSP_MAX_TCP_TENANT, true);
		return;
	}
	if (d->n_tcp >= DNSP_MAX_TCP) {
		tconn_refuse(d, fd, o, d->n_tcp, DNSP_MAX_TCP, false);
		return;
	}
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		log_warn("dnsproxy: tcp fd %d: %s", fd, strerror(errno));
		close(fd);
		return;
	}
	tc = malloc(sizeof(*tc));
	if (!tc) {
		close(fd);
		return;
	}
	memset(tc, 0, offsetof(struct tconn, rbuf));
	tc->d = d;
	tc->fd = fd;
	tc->origin = *o;
	tc->tenant = tenant;
	tc->timer.data = tc;
	tc->msg_timer.data = tc;
	tc->last_active_ms = loop_now_ms(d->loop);
	tc->next = d->tconns;
	if (d->tconns)
		d->tconns->prev = tc;
	d->tconns = tc;
	d->n_tcp++;
	if (loop_add(d->loop, fd, LOOP_READ, tconn_cb, tc) < 0) {
		log_warn("dnsproxy: tcp fd %d: epoll: %s", fd, strerror(errno));
		tconn_free(tc);
		return;
	}
	loop_timer_start(d->loop, d->tl_idle, &tc->timer, tconn_timer_cb);
	/* The query may already be waiting. */
	tconn_cb(d->loop, fd, tc, LOOP_READ);
}

static void lset_unlist(struct dnsproxy *d, struct dns_lset *ls)
{
	struct dns_lset **pp;

	for (pp = &d->lsets; *pp; pp = &(*pp)->next) {
		if (*pp == ls) {
			*pp = ls->next;
			break;
		}
	}
	loop_del(d->loop, ls->fd4);
	if (ls->fd6 >= 0)
		loop_del(d->loop, ls->fd6);
	lset_unref(ls);
}

static void lreq_apply(struct dnsproxy *d, const struct dns_lreq *r)
{
	struct dns_lset *ls;

	if (r->fd4 < 0) {
		for (ls = d->lsets; ls; ls = ls->next)
			if (ls->id == r->id)
				break;
		if (ls)
			lset_unlist(d, ls);
		return;
	}
	ls = calloc(1, sizeof(*ls));
	if (!ls) {
		log_error("dnsproxy: out of memory: no DNS listener in a pod namespace");
		close(r->fd4);
		if (r->fd6 >= 0)
			close(r->fd6);
		close(r->diag);
		return;
	}
	ls->d = d;
	ls->id = r->id;
	ls->fd4 = r->fd4;
	ls->fd6 = r->fd6;
	ls->diag = r->diag;
	ls->refs = 1;
	ls->next = d->lsets;
	d->lsets = ls;
	if (loop_add(d->loop, ls->fd4, LOOP_READ, udp_netns_cb, ls) ||
	    (ls->fd6 >= 0 && loop_add(d->loop, ls->fd6, LOOP_READ, udp_netns_cb, ls))) {
		log_error("dnsproxy: cannot serve listener set %d", ls->id);
		lset_unlist(d, ls);
	}
}

static void handoff_cb(struct loop *l, int fd, void *data, int events)
{
	struct dnsproxy *d = data;
	struct handoff batch[DNSP_HANDOFF_MAX];
	struct dns_lreq *lq;
	uint64_t v;
	unsigned i, n;
	size_t j, ln;

	if (read(fd, &v, sizeof(v)) < 0 && errno != EAGAIN)
		log_debug("dnsproxy: eventfd: %s", strerror(errno));
	pthread_mutex_lock(&d->ho_lock);
	n = d->ho_n;
	memcpy(batch, d->ho, n * sizeof(batch[0]));
	d->ho_n = 0;
	lq = d->lreq;
	ln = d->lreq_n;
	d->lreq = NULL;
	d->lreq_n = 0;
	pthread_mutex_unlock(&d->ho_lock);
	for (i = 0; i < n; i++)
		tconn_start(d, batch[i].fd, &batch[i].origin);
	for (j = 0; j < ln; j++)
		lreq_apply(d, &lq[j]);
	free(lq);
}

static void lreq_close(const struct dns_lreq *r)
{
	if (r->fd4 < 0)
		return;
	close(r->fd4);
	if (r->fd6 >= 0)
		close(r->fd6);
	close(r->diag);
}

static int lreq_post(struct dnsproxy *d, const struct dns_lreq *r)
{
	struct dns_lreq *q = NULL;
	uint64_t one = 1;
	int err = 0;

	pthread_mutex_lock(&d->ho_lock);
	if (d->ho_closed)
		err = -ESHUTDOWN;
	else if (!(q = realloc(d->lreq, (d->lreq_n + 1) * sizeof(*q))))
		err = -ENOMEM;
	else {
		d->lreq = q;
		d->lreq[d->lreq_n++] = *r;
	}
	pthread_mutex_unlock(&d->ho_lock);
	if (err)
		return err;
	if (write(d->evfd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_warn("dnsproxy: eventfd: %s", strerror(errno));
	return 0;
}

int dnsproxy_take_tcp(struct dnsproxy *d, int fd, const struct egr_origin *o)
{
	uint64_t one = 1;
	int err = 0;

	if (fd < 0)
		return -EBADF;
	if (!d || !o) {
		close(fd);
		return -EINVAL;
	}
	pthread_mutex_lock(&d->ho_lock);
	if (d->ho_closed)
		err = -ESHUTDOWN;
	else if (d->ho_n >= DNSP_HANDOFF_MAX)
		err = -EBUSY;
	else {
		d->ho[d->ho_n].fd = fd;
		d->ho[d->ho_n].origin = *o;
		d->ho_n++;
	}
	pthread_mutex_unlock(&d->ho_lock);
	if (err) {
		close(fd);
		return err;
	}
	if (write(d->evfd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_warn("dnsproxy: eventfd: %s", strerror(errno));
	return 0;
}

/* ---- sockets, thread, lifecycle ------------------------------------------ */

static int udp_socket(int family, uint16_t port, int *out);

int dnsproxy_listen_here(const struct dnsproxy *d, int *fd4, int *fd6, int *diag)
{
	int err;

	*fd6 = -1;
	err = udp_socket(AF_INET, d->port, fd4);
	if (err)
		return err;
	*diag = sockdiag_open();
	if (*diag < 0) {
		err = *diag;
		close(*fd4);
		return err;
	}
	if (d->has_v6 && udp_socket(AF_INET6, d->port, fd6))
		*fd6 = -1;
	return 0;
}

int dnsproxy_add_listeners(struct dnsproxy *d, int fd4, int fd6, int diag)
{
	struct dns_lreq r = { .fd4 = fd4, .fd6 = fd6, .diag = diag };
	int err;

	if (fd4 < 0 || diag < 0) {
		err = -EINVAL;
		goto fail;
	}
	if (++d->lseq <= 0)
		d->lseq = 1;
	r.id = d->lseq;
	err = lreq_post(d, &r);
	if (err)
		goto fail;
	return r.id;
fail:
	if (fd4 >= 0)
		close(fd4);
	if (fd6 >= 0)
		close(fd6);
	if (diag >= 0)
		close(diag);
	return err;
}

void dnsproxy_remove_listeners(struct dnsproxy *d, int id)
{
	struct dns_lreq r = { .id = id, .fd4 = -1 };

	if (id > 0 && lreq_post(d, &r) == -ENOMEM)
		log_error("dnsproxy: out of memory: listener set %d stays open", id);
}

static int udp_socket(int family, uint16_t port, int *out)
{
	struct sockaddr_storage ss;
	struct egr_addr a;
	socklen_t slen;
	int fd, one = 1, rcv = DNSP_RCVBUF, err;

	if (family == AF_INET)
		addr_from_v4(&a, htonl(INADDR_LOOPBACK));
	else
		addr_from_v6(&a, in6addr_loopback.s6_addr);
	slen = addr_to_sockaddr(&a, port, &ss);
	fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* A burst of queries from many agents must not be dropped by a small
	 * default buffer; best effort (net.core.rmem_max caps it). */
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv));
	if ((family == AF_INET6 &&
	     setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) < 0) ||
	    bind(fd, (struct sockaddr *)&ss, slen) < 0) {
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
	struct egr_addr a;
	uint16_t port = 0;

	if (getsockname(fd, (struct sockaddr *)&ss, &slen) < 0 ||
	    addr_from_sockaddr(&a, &port, (struct sockaddr *)&ss))
		return 0;
	return port;
}

/* 127.0.0.1 and ::1 on one port; with port 0, if the ephemeral port picked
 * for IPv4 is taken on ::1, try another. IPv6 is optional. */
static int dnsproxy_bind(struct dnsproxy *d)
{
	int attempt, err = 0;

	for (attempt = 0; attempt < 8; attempt++) {
		uint16_t port = d->params.port;

		err = udp_socket(AF_INET, port, &d->ufd4);
		if (err) {
			log_error("dnsproxy: bind 127.0.0.1 port %u: %s", port, strerror(-err));
			return err;
		}
		if (!port)
			port = socket_port(d->ufd4);
		err = udp_socket(AF_INET6, port, &d->ufd6);
		if (err == -EADDRINUSE && !d->params.port) {
			close(d->ufd4);
			d->ufd4 = -1;
			continue;
		}
		d->has_v6 = !err;
		if (err)
			log_warn("dnsproxy: bind [::1] port %u: %s; IPv4 only", port,
				 strerror(-err));
		d->port = port;
		return 0;
	}
	log_error("dnsproxy: no port free on both 127.0.0.1 and ::1");
	return err;
}

static void dnsproxy_ares_init(void)
{
	int st = ares_library_init(ARES_LIB_INIT_ALL);

	if (st != ARES_SUCCESS)
		log_error("dnsproxy: ares_library_init: %s", ares_strerror(st));
}

int dnsproxy_create(struct dnsproxy **out, const struct dnsproxy_params *params)
{
	static pthread_once_t ares_once = PTHREAD_ONCE_INIT;
	struct dnsproxy *d;
	int err;

	if (!out || !params)
		return -EINVAL;
	pthread_once(&ares_once, dnsproxy_ares_init);
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->params = *params;
	d->ufd4 = d->ufd6 = d->evfd = -1;
	d->resolve_timeout_ms = params->cfg && params->cfg->resolve_timeout_ms ?
				params->cfg->resolve_timeout_ms : 5000;
	pthread_mutex_init(&d->ho_lock, NULL);
	pthread_mutex_init(&d->mem.lock, NULL);
	d->mem.max = params->mem_max ? params->mem_max : DNSP_MEM_MAX;
	if (getrandom(&d->mem.seed, sizeof(d->mem.seed), GRND_NONBLOCK) < 0)
		d->mem.seed = mono_ms() ^ (uint64_t)(uintptr_t)d;
	d->ares_timer.data = d;
	d->fold_timer.data = d;
	if (params->audit) {
		d->fold = kfold_new(0, 0, dns_fold_emit, d);
		if (!d->fold) {
			err = -errno;
			log_error("dnsproxy: audit log folding: %s", strerror(-err));
			goto fail;
		}
		kfold_set_payload(d->fold, dns_fold_dup, free, dns_fold_equal);
	}

	err = loop_create(&d->loop);
	if (err)
		goto fail;
	d->tl_idle = loop_timer_list_create(d->loop, DNSP_TCP_IDLE_MS);
	d->tl_msg = loop_timer_list_create(d->loop, DNSP_TCP_MSG_MS);
	if (!d->tl_idle || !d->tl_msg) {
		err = -ENOMEM;
		goto fail;
	}
	err = channel_init(d);
	if (err)
		goto fail;
	err = dnsproxy_bind(d);
	if (err)
		goto fail;
	d->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (d->evfd < 0) {
		err = -errno;
		goto fail;
	}
	err = loop_add(d->loop, d->ufd4, LOOP_READ, udp_cb, d);
	if (!err && d->ufd6 >= 0)
		err = loop_add(d->loop, d->ufd6, LOOP_READ, udp_cb, d);
	if (!err)
		err = loop_add(d->loop, d->evfd, LOOP_READ, handoff_cb, d);
	if (err)
		goto fail;
	log_debug("dnsproxy: UDP on 127.0.0.1%s port %u, upstream %s", d->has_v6 ? " and ::1" : "",
		  d->port, params->upstream && *params->upstream ? params->upstream
								 : "from resolv.conf");
	*out = d;
	return 0;
fail:
	dnsproxy_destroy(d);
	return err;
}

uint16_t dnsproxy_port(const struct dnsproxy *d)
{
	return d->port;
}

int dnsproxy_has_v6(const struct dnsproxy *d)
{
	return d->has_v6;
}

static void *dnsproxy_main(void *arg)
{
	struct dnsproxy *d = arg;
	sigset_t all;
	int err;

	/* Signals belong to the main thread. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	err = loop_run(d->loop);
	if (err)
		log_error("dnsproxy: event loop: %s", strerror(-err));
	return NULL;
}

int dnsproxy_start(struct dnsproxy *d)
{
	int err;

	if (!d)
		return -EINVAL;
	if (d->started)
		return -EALREADY;
	err = pthread_create(&d->thread, NULL, dnsproxy_main, d);
	if (err) {
		log_error("dnsproxy: starting thread: %s", strerror(err));
		return -err;
	}
	thread_name(d->thread, "egressd-dns");
	d->started = true;
	return 0;
}

void dnsproxy_stop(struct dnsproxy *d)
{
	if (!d || !d->started)
		return;
	loop_stop(d->loop);
	pthread_join(d->thread, NULL);
	d->started = false;
}

void dnsproxy_destroy(struct dnsproxy *d)
{
	unsigned i;

	if (!d)
		return;
	dnsproxy_stop(d);
	pthread_mutex_lock(&d->ho_lock);
	d->ho_closed = true;
	for (i = 0; i < d->ho_n; i++)
		close(d->ho[i].fd);
	d->ho_n = 0;
	pthread_mutex_unlock(&d->ho_lock);
	d->destroying = true;
	while (d->tconns)
		tconn_free(d->tconns);
	loop_timer_stop(&d->ares_timer);
	/* Calls every pending query back with ARES_EDESTRUCTION (each writes
	 * its audit record and frees itself) and sock_state_cb for every
	 * socket, which leaves the loop. */
	if (d->channel_ok)
		ares_destroy(d->channel);
	/* the repeats counted in the last second, on record */
	loop_timer_stop(&d->fold_timer);
	if (d->fold)
		kfold_tick(d->fold, 0, true);
	kfold_free(d->fold);
	d->fold = NULL;
	/* Every query has been called back: only the list holds the sets. */
	while (d->lsets)
		lset_unlist(d, d->lsets);
	for (i = 0; i < d->lreq_n; i++)
		lreq_close(&d->lreq[i]);
	free(d->lreq);
	if (d->ufd4 >= 0)
		close(d->ufd4);
	if (d->ufd6 >= 0)
		close(d->ufd6);
	if (d->evfd >= 0)
		close(d->evfd);
	loop_destroy(d->loop);
	mem_clear(&d->mem);
	pthread_mutex_destroy(&d->mem.lock);
	pthread_mutex_destroy(&d->ho_lock);
	free(d);
}
