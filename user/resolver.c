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
 *
 * Answer cache: a name (lowercased) maps to one struct resolver_entry,
 * which is either in flight (waiters queued on it, one c-ares query for
 * all of them) or holds an answer until it expires. Answers sit on an LRU
 * list; entries in flight do not, so they are never evicted and c-ares'
 * callback argument (the entry) stays valid. Per worker, no locks: each
 * worker has its own resolver.
 */
#include <arpa/inet.h>
#include <ares.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "resolver.h"

#define RESOLVER_NAME_MAX 255
/* Power of two, twice the default cache size: chains stay short. */
#define RESOLVER_BUCKETS 8192

struct resolver_entry {
	struct resolver *r;
	struct resolver_entry *hnext;         /* hash chain */
	struct resolver_entry *lprev, *lnext; /* LRU list, answers only */
	struct resolver_query *waiters;       /* in flight: FIFO */
	struct resolver_query **wtail;
	bool inflight;
	uint32_t hash;
	int status;                           /* answer: 0 or -ENOENT */
	uint64_t expires_ms;
	size_t n;
	struct egr_addr *addrs;
	char name[];                          /* lowercase */
};

struct resolver {
	struct loop *loop;
	ares_channel channel;
	struct loop_timer timer;
	size_t pending;
	bool destroying;
	struct resolver_entry *buckets[RESOLVER_BUCKETS];
	struct resolver_entry *lru_head, *lru_tail; /* head = most recent */
	size_t cache_max;
	struct resolver_stats stats;
	struct resolver_fail {
		struct egr_addr addr;
		uint16_t port;
		uint64_t until_ms; /* 0 = free */
	} fails[RESOLVER_FAIL_SLOTS];
	size_t n_fails; /* slots in use, expired or not: 0 = fast path */
};

struct resolver_query {
	struct resolver *r;
	struct resolver_query *next;
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
	r->cache_max = RESOLVER_CACHE_DEFAULT;
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
	for (size_t i = 0; i < RESOLVER_BUCKETS; i++) {
		struct resolver_entry *e, *next;

		for (e = r->buckets[i]; e; e = next) {
			next = e->hnext;
			free(e->addrs);
			free(e);
		}
	}
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

/* ---- cache ------------------------------------------------------------ */

/* The cache outlives loop iterations and tests sleep between lookups, so
 * read the clock rather than the loop's cached time (vDSO, no syscall). */
static uint64_t resolver_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Lowercases name into key (FNV-1a on the way). Returns the length, or
 * -ENAMETOOLONG. */
static int resolver_key(const char *name, char key[RESOLVER_NAME_MAX + 1], uint32_t *hash)
{
	uint32_t h = 2166136261u;
	size_t i;

	for (i = 0; name[i]; i++) {
		char ch = name[i];

		if (i == RESOLVER_NAME_MAX)
			return -ENAMETOOLONG;
		if (ch >= 'A' && ch <= 'Z')
			ch = (char)(ch - 'A' + 'a');
		key[i] = ch;
		h = (h ^ (uint8_t)ch) * 16777619u;
	}
	key[i] = '\0';
	*hash = h;
	return (int)i;
}

static struct resolver_entry **resolver_bucket(struct resolver *r, uint32_t hash)
{
	return &r->buckets[hash & (RESOLVER_BUCKETS - 1)];
}

static struct resolver_entry *cache_find(struct resolver *r, const char *key, uint32_t hash)
{
	struct resolver_entry *e;

	for (e = *resolver_bucket(r, hash); e; e = e->hnext)
		if (e->hash == hash && !strcmp(e->name, key))
			return e;
	return NULL;
}

static void lru_unlink(struct resolver *r, struct resolver_entry *e)
{
	if (e->lprev)
		e->lprev->lnext = e->lnext;
	else if (r->lru_head == e)
		r->lru_head = e->lnext;
	if (e->lnext)
		e->lnext->lprev = e->lprev;
	else if (r->lru_tail == e)
		r->lru_tail = e->lprev;
	e->lprev = e->lnext = NULL;
}

static void lru_push_head(struct resolver *r, struct resolver_entry *e)
{
	e->lprev = NULL;
	e->lnext = r->lru_head;
	if (r->lru_head)
		r->lru_head->lprev = e;
	else
		r->lru_tail = e;
	r->lru_head = e;
}

/* Unhash, unlink and free an entry that has no waiters. */
static void cache_remove(struct resolver *r, struct resolver_entry *e)
{
	struct resolver_entry **pe = resolver_bucket(r, e->hash);

	for (; *pe; pe = &(*pe)->hnext) {
		if (*pe == e) {
			*pe = e->hnext;
			break;
		}
	}
	lru_unlink(r, e);
	r->stats.entries--;
	free(e->addrs);
	free(e);
}

/* Only answers are on the LRU list: entries in flight are never evicted
 * (c-ares holds them), so the bound can be exceeded by as many names as
 * are being resolved at once, and no more. */
static void cache_trim(struct resolver *r)
{
	uint64_t now = 0;

	while (r->stats.entries > r->cache_max && r->lru_tail) {
		struct resolver_entry *e = r->lru_tail;

		if (!now)
			now = resolver_now_ms();
		if (e->expires_ms > now)
			r->stats.evictions++;
		cache_remove(r, e);
	}
}

void resolver_set_cache_size(struct resolver *r, size_t max_names)
{
	r->cache_max = max_names;
	cache_trim(r);
}

void resolver_get_stats(const struct resolver *r, struct resolver_stats *st)
{
	*st = r->stats;
}

/* ---- connect outcomes ------------------------------------------------- */

/* Direct-mapped: a collision forgets the older failure, which only costs
 * one more failed connect later. */
static struct resolver_fail *fail_slot(struct resolver *r, const struct egr_addr *a,
				       uint16_t port)
{
	uint32_t h = 2166136261u;
	size_t i;

	for (i = 0; i < sizeof(a->b); i++)
		h = (h ^ a->b[i]) * 16777619u;
	h = (h ^ port) * 16777619u;
	return &r->fails[(h ^ (h >> 16)) % RESOLVER_FAIL_SLOTS];
}

void resolver_note_connect_failure(struct resolver *r, const struct egr_addr *a,
				   uint16_t port)
{
	struct resolver_fail *f = fail_slot(r, a, port);

	if (!f->until_ms)
		r->n_fails++;
	f->addr = *a;
	f->port = port;
	f->until_ms = resolver_now_ms() + RESOLVER_FAIL_MEMORY_MS;
}

static bool failed_recently(struct resolver *r, const struct egr_addr *a, uint16_t port,
			    uint64_t now)
{
	struct resolver_fail *f = fail_slot(r, a, port);

	if (!f->until_ms || f->port != port || memcmp(f->addr.b, a->b, sizeof(a->b)))
		return false;
	if (f->until_ms > now)
		return true;
	f->until_ms = 0;
	r->n_fails--;
	return false;
}

void resolver_order_candidates(struct resolver *r, struct egr_addr *addrs, size_t n,
			       uint16_t port)
{
	struct egr_addr bad[RESOLVER_MAX_ADDRS];
	size_t i, good = 0, nbad = 0;
	uint64_t now;

	if (!r->n_fails || n < 2 || n > RESOLVER_MAX_ADDRS)
		return;
	now = resolver_now_ms();
	for (i = 0; i < n; i++) {
		if (failed_recently(r, &addrs[i], port, now))
			bad[nbad++] = addrs[i];
		else
			addrs[good++] = addrs[i];
	}
	if (nbad)
		memcpy(addrs + good, bad, nbad * sizeof(*bad));
}

/* ---- lookups ---------------------------------------------------------- */

static void query_free(struct resolver *r, struct resolver_query *q)
{
	r->pending--;
	free(q);
}

/* Smallest TTL in the answer, CNAME links included (the chain is only as
 * good as its shortest-lived link), clamped; in ms. */
static uint64_t answer_ttl_ms(const struct ares_addrinfo *res)
{
	const struct ares_addrinfo_node *node;
	const struct ares_addrinfo_cname *cn;
	long long ttl = RESOLVER_TTL_MAX_MS / 1000;

	for (node = res->nodes; node; node = node->ai_next)
		if (node->ai_ttl < ttl)
			ttl = node->ai_ttl;
	for (cn = res->cnames; cn; cn = cn->next)
		if (cn->ttl < ttl)
			ttl = cn->ttl;
	if (ttl * 1000 < RESOLVER_TTL_MIN_MS)
		return RESOLVER_TTL_MIN_MS;
	return (uint64_t)ttl * 1000;
}

static void resolver_addrinfo_cb(void *arg, int status, int timeouts,
				 struct ares_addrinfo *res)
{
	struct resolver_entry *e = arg;
	struct resolver *r = e->r;
	struct egr_addr v4[RESOLVER_MAX_ADDRS], v6[RESOLVER_MAX_ADDRS];
	struct egr_addr out[RESOLVER_MAX_ADDRS];
	size_t n4 = 0, n6 = 0, n = 0, i4 = 0, i6 = 0;
	struct ares_addrinfo_node *node;
	struct resolver_query *q, *next;
	uint64_t ttl_ms = 0;
	bool cacheable;
	int err;

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
		ttl_ms = answer_ttl_ms(res);
	}
	if (res)
		ares_freeaddrinfo(res);
	/* The waiters leave the entry before any callback runs: a callback
	 * may look the name up again, or cancel a later waiter. */
	q = e->waiters;
	e->waiters = NULL;
	e->wtail = &e->waiters;
	e->inflight = false;
	if (r->destroying) {
		/* resolver_destroy() frees the entry itself. */
		for (; q; q = next) {
			next = q->next;
			query_free(r, q);
		}
		return;
	}
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
	err = status == ARES_SUCCESS ? 0 : status_to_errno(status);
	/* Answers and authoritative "no" are cached; timeouts, server
	 * failures and refusals are not (the next connection retries).
	 * c-ares' getaddrinfo does not expose the SOA of a negative answer,
	 * so its minimum cannot shorten RESOLVER_NEG_TTL_MS. */
	cacheable = r->cache_max && (err == 0 || err == -ENOENT);
	if (cacheable && n) {
		e->addrs = malloc(n * sizeof(*out));
		if (e->addrs)
			memcpy(e->addrs, out, n * sizeof(*out));
		else
			cacheable = false;
	}
	if (cacheable) {
		e->status = err;
		e->n = n;
		e->expires_ms = resolver_now_ms() + (err ? RESOLVER_NEG_TTL_MS : ttl_ms);
		lru_push_head(r, e);
		cache_trim(r);
	} else {
		cache_remove(r, e);
	}
	/* e may be gone: everything below works on copies. */
	for (; q; q = next) {
		resolver_cb cb = q->cb;
		void *cb_arg = q->arg;

		next = q->next;
		query_free(r, q);
		if (cb)
			cb(cb_arg, err, out, n);
	}
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
	char key[RESOLVER_NAME_MAX + 1];
	struct resolver_entry *e;
	struct resolver_query *q;
	uint32_t hash;
	int len;

	len = resolver_key(name, key, &hash);
	if (len < 0)
		return len;
	e = cache_find(r, key, hash);
	if (e && !e->inflight && e->expires_ms > resolver_now_ms()) {
		struct egr_addr out[RESOLVER_MAX_ADDRS];
		size_t n = e->n;
		int err = e->status;

		/* Copies: the callback may start lookups that evict e. */
		if (n)
			memcpy(out, e->addrs, n * sizeof(*out));
		lru_unlink(r, e);
		lru_push_head(r, e);
		r->stats.hits++;
		*handle = NULL;
		cb(arg, err, out, n);
		return 0;
	}

	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->r = r;
	q->cb = cb;
	q->arg = arg;
	if (e && e->inflight) {
		*e->wtail = q;
		e->wtail = &q->next;
		r->pending++;
		r->stats.coalesced++;
		*handle = q;
		return 0;
	}
	if (e) {
		/* Expired: the entry becomes the query for the fresh answer. */
		lru_unlink(r, e);
		free(e->addrs);
		e->addrs = NULL;
		e->n = 0;
	} else {
		e = calloc(1, sizeof(*e) + (size_t)len + 1);
		if (!e) {
			free(q);
			return -ENOMEM;
		}
		e->r = r;
		e->hash = hash;
		memcpy(e->name, key, (size_t)len + 1);
		e->hnext = *resolver_bucket(r, hash);
		*resolver_bucket(r, hash) = e;
		r->stats.entries++;
	}
	e->inflight = true;
	e->waiters = q;
	e->wtail = &q->next;
	r->pending++;
	r->stats.misses++;
	cache_trim(r);
	*handle = q;
	ares_getaddrinfo(r->channel, e->name, NULL, &hints, resolver_addrinfo_cb, e);
	/* q (and e) may be gone here (answered from the hosts file or
	 * failed). */
	resolver_arm_timer(r);
	return 0;
}

void resolver_cancel(struct resolver_query *q)
{
	if (q)
		q->cb = NULL;
}
