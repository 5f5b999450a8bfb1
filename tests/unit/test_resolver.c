// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * Unit tests for user/resolver.c: the answer cache, TTLs, negative answers,
 * coalescing of concurrent lookups and cancellation, against a real
 * dnsmasq on 127.0.0.1 (loopback only). dnsmasq logs every query it
 * receives (--log-queries), so "did this lookup reach the server" is
 * counted from its log, not inferred from our own statistics.
 *
 * The log is written asynchronously to our reads; to know that everything
 * before a point has been logged, a test looks up a fresh sentinel name
 * and waits for that name to show up (dnsmasq logs in order).
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "addr.h"
#include "log.h"
#include "loop.h"
#include "resolver.h"

static pid_t dnsmasq_pid = -1;
static char dns_csv[64];
static char tmpdir[64];
static char logpath[128];
static struct loop *loop;
static unsigned sentinel_seq;

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- dnsmasq ---------------------------------------------------------- */

/* A port free for UDP and TCP on 127.0.0.1: dnsmasq binds both, and a
 * port only UDP had free made it exit at once ("dnsmasq did not start",
 * seen once in a full run). */
static uint16_t free_udp_port(void)
{
	for (int tries = 0; tries < 20; tries++) {
		struct sockaddr_in sin = { .sin_family = AF_INET };
		socklen_t len = sizeof(sin);
		int fd = socket(AF_INET, SOCK_DGRAM, 0), tfd = -1;
		uint16_t port = 0;

		sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		if (fd >= 0 && bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
		    getsockname(fd, (struct sockaddr *)&sin, &len) == 0) {
			tfd = socket(AF_INET, SOCK_STREAM, 0);
			if (tfd >= 0 && bind(tfd, (struct sockaddr *)&sin, sizeof(sin)) == 0)
				port = ntohs(sin.sin_port);
		}
		if (tfd >= 0)
			close(tfd);
		if (fd >= 0)
			close(fd);
		if (port)
			return port;
	}
	return 0;
}

static bool udp_port_taken(uint16_t port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	bool taken;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	taken = bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 && errno == EADDRINUSE;
	close(fd);
	return taken;
}

/* Upstream queries dnsmasq logged for name (both A and AAAA). */
static int upstream_queries(const char *name)
{
	char line[512], pat[300];
	FILE *f = fopen(logpath, "r");
	int n = 0;

	if (!f)
		return -1;
	snprintf(pat, sizeof(pat), "] %s from ", name);
	while (fgets(line, sizeof(line), f))
		if (strstr(line, ": query[") && strstr(line, pat))
			n++;
	fclose(f);
	return n;
}

static int group_setup(void **state)
{
	char port_arg[32], log_arg[160];
	uint64_t deadline;
	uint16_t port;

	signal(SIGPIPE, SIG_IGN);
	log_set_level(getenv("TEST_RESOLVER_DEBUG") ? EGR_LOG_DEBUG : EGR_LOG_ERROR);
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/egr-test-resolver-XXXXXX");
	if (!mkdtemp(tmpdir))
		return -1;
	snprintf(logpath, sizeof(logpath), "%s/dnsmasq.log", tmpdir);
	port = free_udp_port();
	if (!port)
		return -1;
	snprintf(port_arg, sizeof(port_arg), "--port=%u", port);
	snprintf(log_arg, sizeof(log_arg), "--log-facility=%s", logpath);
	snprintf(dns_csv, sizeof(dns_csv), "127.0.0.1:%u", port);
	dnsmasq_pid = fork();
	if (dnsmasq_pid < 0)
		return -1;
	if (dnsmasq_pid == 0) {
		int null = open("/dev/null", O_RDWR);

		dup2(null, 0);
		dup2(null, 1);
		dup2(null, 2);
		/* --local=/test/: every other .test name is NXDOMAIN, answered
		 * here. --local-ttl=1: --address answers live one second;
		 * host records carry their own TTL. */
		execl("/usr/sbin/dnsmasq", "dnsmasq", "--no-daemon", "--conf-file=/dev/null",
		      port_arg, "--listen-address=127.0.0.1", "--bind-interfaces",
		      "--no-resolv", "--no-hosts", "--pid-file=", "--user=root",
		      "--log-queries", log_arg, "--local-ttl=1", "--local=/test/",
		      "--host-record=hit.test,192.0.2.1,2001:db8::1,600",
		      "--host-record=case.test,192.0.2.3,600",
		      "--host-record=coal.test,192.0.2.4,600",
		      "--host-record=cancel.test,192.0.2.5,600",
		      "--host-record=reent.test,192.0.2.6,600",
		      "--host-record=cnt.test,192.0.2.7,600",
		      "--cname=cn.test,cnt.test,1",
		      "--host-record=ev1.test,192.0.2.11,600",
		      "--host-record=ev2.test,192.0.2.12,600",
		      "--host-record=ev3.test,192.0.2.13,600",
		      "--host-record=off.test,192.0.2.14,600",
		      "--host-record=gone.test,192.0.2.15,600",
		      "--address=/short.test/192.0.2.2", (char *)NULL);
		_exit(127);
	}
	deadline = now_ms() + 5000;
	while (!udp_port_taken(port)) {
		int st;

		if (waitpid(dnsmasq_pid, &st, WNOHANG) == dnsmasq_pid || now_ms() > deadline) {
			fprintf(stderr, "dnsmasq did not start\n");
			dnsmasq_pid = -1;
			return -1;
		}
		usleep(10000);
	}
	return loop_create(&loop);
}

static int group_teardown(void **state)
{
	char cmd[160];

	if (dnsmasq_pid > 0) {
		kill(dnsmasq_pid, SIGTERM);
		waitpid(dnsmasq_pid, NULL, 0);
		dnsmasq_pid = -1;
	}
	loop_destroy(loop);
	if (tmpdir[0] && !getenv("TEST_RESOLVER_KEEP")) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
		if (system(cmd) != 0)
			fprintf(stderr, "cannot remove %s\n", tmpdir);
	}
	return 0;
}

/* ---- lookups driven through the loop ---------------------------------- */

struct result {
	int calls;
	int status;
	size_t n;
	struct egr_addr addrs[RESOLVER_MAX_ADDRS];
	/* re-entrancy tests */
	struct resolver *r;
	struct resolver_query *cancel_other;
	const char *lookup_again;
	struct result *again;
};

static int outstanding; /* callbacks still expected by run_loop() */
/* A stop requested outside loop_run() would end the next run at once. */
static bool running;

static void lookup_cb(void *arg, int status, const struct egr_addr *addrs, size_t n)
{
	struct result *res = arg;

	res->calls++;
	res->status = status;
	res->n = n;
	memcpy(res->addrs, addrs, n * sizeof(*addrs));
	if (res->cancel_other)
		resolver_cancel(res->cancel_other);
	if (res->lookup_again) {
		struct resolver_query *q = (void *)1;

		assert_int_equal(resolver_lookup(res->r, res->lookup_again, lookup_cb,
						 res->again, &q), 0);
		assert_null(q); /* answered from the cache, synchronously */
	}
	if (--outstanding <= 0 && running)
		loop_stop(loop);
}

static void guard_cb(struct loop *l, struct loop_timer *t)
{
	*(bool *)t->data = true;
	loop_stop(l);
}

/* Run the loop until `expect` callbacks came or timeout_ms passed. */
static void run_loop(int expect, unsigned timeout_ms)
{
	struct loop_timer guard = { 0 };
	bool fired = false;

	outstanding = expect;
	if (expect <= 0)
		return;
	guard.data = &fired;
	loop_timer_start_at(loop, &guard, loop_update_time(loop) + timeout_ms, guard_cb);
	running = true;
	assert_int_equal(loop_run(loop), 0);
	running = false;
	loop_timer_stop(&guard);
	outstanding = 0;
}

/* Look up name and wait for the answer; returns the number of callbacks
 * that ran synchronously (0 = it went to the loop). */
static int lookup_wait(struct resolver *r, const char *name, struct result *res)
{
	struct resolver_query *q = NULL;
	int before = res->calls;

	outstanding = 1;
	assert_int_equal(resolver_lookup(r, name, lookup_cb, res, &q), 0);
	if (res->calls > before) {
		outstanding = 0;
		return res->calls - before;
	}
	assert_non_null(q);
	run_loop(1, 3000);
	assert_int_equal(res->calls, before + 1);
	return 0;
}

/* Waits until dnsmasq has logged everything sent before now. */
static void sync_log(struct resolver *r)
{
	struct result res = { 0 };
	char name[64];
	uint64_t deadline;

	snprintf(name, sizeof(name), "sentinel%u.test", ++sentinel_seq);
	lookup_wait(r, name, &res);
	assert_int_equal(res.status, -ENOENT);
	deadline = now_ms() + 3000;
	while (upstream_queries(name) < 2 && now_ms() < deadline)
		usleep(5000);
	assert_int_equal(upstream_queries(name), 2);
}

static bool has_addr(const struct result *res, const char *text)
{
	struct egr_addr a;
	size_t i;

	if (addr_parse(text, &a))
		return false;
	for (i = 0; i < res->n; i++)
		if (!memcmp(res->addrs[i].b, a.b, sizeof(a.b)))
			return true;
	return false;
}

static int res_setup(void **state)
{
	struct resolver *r;

	if (resolver_create(&r, loop, dns_csv, 2000))
		return -1;
	*state = r;
	return 0;
}

static int res_teardown(void **state)
{
	struct resolver *r = *state;

	if (r) {
		/* Nothing may be left behind by a test but cached answers. */
		assert_int_equal(resolver_pending(r), 0);
		resolver_destroy(r);
	}
	return 0;
}

/* ---- tests ------------------------------------------------------------ */

/* Second lookup within the TTL: answered from the cache, synchronously,
 * same addresses, and dnsmasq never hears of it. */
static void test_cache_hit_skips_upstream(void **state)
{
	struct resolver *r = *state;
	struct result a = { 0 }, b = { 0 };
	struct resolver_stats st;

	assert_int_equal(lookup_wait(r, "hit.test", &a), 0);
	assert_int_equal(a.status, 0);
	assert_int_equal(a.n, 2);
	/* v6 first, then v4 */
	assert_true(has_addr(&a, "2001:db8::1"));
	assert_false(addr_is_v4(&a.addrs[0]));
	assert_true(addr_is_v4(&a.addrs[1]));
	sync_log(r);
	assert_int_equal(upstream_queries("hit.test"), 2); /* A + AAAA */

	assert_int_equal(lookup_wait(r, "hit.test", &b), 1);
	assert_int_equal(b.status, 0);
	assert_int_equal(b.n, a.n);
	assert_memory_equal(b.addrs, a.addrs, a.n * sizeof(a.addrs[0]));
	sync_log(r);
	assert_int_equal(upstream_queries("hit.test"), 2);
	resolver_get_stats(r, &st);
	assert_int_equal(st.hits, 1);
}

/* The key is the lowercased name: case variants share one entry. */
static void test_cache_case_insensitive(void **state)
{
	struct resolver *r = *state;
	struct result a = { 0 }, b = { 0 };

	assert_int_equal(lookup_wait(r, "Case.TEST", &a), 0);
	assert_int_equal(a.status, 0);
	assert_true(has_addr(&a, "192.0.2.3"));
	assert_int_equal(lookup_wait(r, "case.test", &b), 1);
	assert_true(has_addr(&b, "192.0.2.3"));
}

/* TTL 1 (--local-ttl=1): cached for that second, asked again after. */
static void test_ttl_expiry_refetches(void **state)
{
	struct resolver *r = *state;
	struct result a = { 0 };

	assert_int_equal(lookup_wait(r, "x.short.test", &a), 0);
	assert_int_equal(a.status, 0);
	assert_true(has_addr(&a, "192.0.2.2"));
	assert_int_equal(lookup_wait(r, "x.short.test", &a), 1);
	sync_log(r);
	assert_int_equal(upstream_queries("x.short.test"), 2);
	usleep(1200 * 1000);
	assert_int_equal(lookup_wait(r, "x.short.test", &a), 0);
	assert_int_equal(a.status, 0);
	sync_log(r);
	assert_int_equal(upstream_queries("x.short.test"), 4);
}

/* A CNAME with TTL 1 in front of a 600 s record: the answer lives 1 s. */
static void test_cname_ttl_bounds_answer(void **state)
{
	struct resolver *r = *state;
	struct result a = { 0 };

	assert_int_equal(lookup_wait(r, "cn.test", &a), 0);
	assert_int_equal(a.status, 0);
	assert_true(has_addr(&a, "192.0.2.7"));
	assert_int_equal(lookup_wait(r, "cn.test", &a), 1);
	usleep(1200 * 1000);
	assert_int_equal(lookup_wait(r, "cn.test", &a), 0);
	sync_log(r);
	assert_int_equal(upstream_queries("cn.test"), 4);
}

/* NXDOMAIN is cached for RESOLVER_NEG_TTL_MS, not longer. */
static void test_nxdomain_cached_briefly(void **state)
{
	struct resolver *r = *state;
	struct result a = { 0 };

	assert_int_equal(lookup_wait(r, "nx.test", &a), 0);
	assert_int_equal(a.status, -ENOENT);
	assert_int_equal(a.n, 0);
	assert_int_equal(lookup_wait(r, "nx.test", &a), 1);
	assert_int_equal(a.status, -ENOENT);
	sync_log(r);
	assert_int_equal(upstream_queries("nx.test"), 2);
	usleep((RESOLVER_NEG_TTL_MS + 300) * 1000);
	assert_int_equal(lookup_wait(r, "nx.test", &a), 0);
	assert_int_equal(a.status, -ENOENT);
	sync_log(r);
	assert_int_equal(upstream_queries("nx.test"), 4);
}

/* Two lookups issued back to back: one upstream query, both answered. */
static void test_coalesce_concurrent(void **state)
{
	struct resolver *r = *state;
	struct result a = { 0 }, b = { 0 };
	struct resolver_query *qa = NULL, *qb = NULL;
	struct resolver_stats st;

	assert_int_equal(resolver_lookup(r, "coal.test", lookup_cb, &a, &qa), 0);
	assert_int_equal(resolver_lookup(r, "COAL.test", lookup_cb, &b, &qb), 0);
	assert_non_null(qa);
	assert_non_null(qb);
	assert_int_equal(resolver_pending(r), 2);
	run_loop(2, 3000);
	assert_int_equal(a.calls, 1);
	assert_int_equal(b.calls, 1);
	assert_int_equal(a.status, 0);
	assert_int_equal(b.status, 0);
	assert_true(has_addr(&a, "192.0.2.4"));
	assert_true(has_addr(&b, "192.0.2.4"));
	sync_log(r);
	assert_int_equal(upstream_queries("coal.test"), 2); /* A + AAAA, once */
	resolver_get_stats(r, &st);
	assert_int_equal(st.coalesced, 1);
}

/* Cancelling one waiter of a shared query: the other still gets its
 * answer, the cancelled one never runs. */
static void test_cancel_one_waiter(void **state)
{
	struct resolver *r = *state;
	struct result a = { 0 }, b = { 0 };
	struct resolver_query *qa = NULL, *qb = NULL;

	assert_int_equal(resolver_lookup(r, "cancel.test", lookup_cb, &a, &qa), 0);
	assert_int_equal(resolver_lookup(r, "cancel.test", lookup_cb, &b, &qb), 0);
	resolver_cancel(qa);
	run_loop(1, 3000);
	/* Give a wrongly delivered callback for a a chance to show up. */
	run_loop(1, 200);
	assert_int_equal(a.calls, 0);
	assert_int_equal(b.calls, 1);
	assert_int_equal(b.status, 0);
	assert_true(has_addr(&b, "192.0.2.5"));
	assert_int_equal(resolver_pending(r), 0);
}

/* Everyone cancelled: no callback, but the answer still lands in the cache
 * (the next connection to that name is the likely one). */
static void test_cancel_all_still_caches(void **state)
{
	struct resolver *r = *state;
	struct result a = { 0 }, b = { 0 };
	struct resolver_query *qa = NULL;
	uint64_t deadline = now_ms() + 3000;

	assert_int_equal(resolver_lookup(r, "gone.test", lookup_cb, &a, &qa), 0);
	resolver_cancel(qa);
	while (resolver_pending(r) && now_ms() < deadline)
		run_loop(1, 50);
	assert_int_equal(resolver_pending(r), 0);
	assert_int_equal(a.calls, 0);
	assert_int_equal(lookup_wait(r, "gone.test", &b), 1);
	assert_true(has_addr(&b, "192.0.2.15"));
}

/* A callback that cancels a later waiter of the same answer and looks the
 * name up again (hit, synchronous): the cancelled one never runs. */
static void test_callback_reentry(void **state)
{
	struct resolver *r = *state;
	struct result a = { 0 }, b = { 0 }, again = { 0 };
	struct resolver_query *qa = NULL, *qb = NULL;

	a.r = r;
	a.lookup_again = "reent.test";
	a.again = &again;
	assert_int_equal(resolver_lookup(r, "reent.test", lookup_cb, &a, &qa), 0);
	assert_int_equal(resolver_lookup(r, "reent.test", lookup_cb, &b, &qb), 0);
	a.cancel_other = qb;
	run_loop(1, 3000);
	run_loop(1, 200);
	assert_int_equal(a.calls, 1);
	assert_int_equal(again.calls, 1);
	assert_true(has_addr(&again, "192.0.2.6"));
	assert_int_equal(b.calls, 0);
	assert_int_equal(resolver_pending(r), 0);
}

/* Bounded size: the least recently used name goes first. */
static void test_lru_eviction(void **state)
{
	struct resolver *r = *state;
	struct result res = { 0 };
	struct resolver_stats st;

	resolver_set_cache_size(r, 2);
	assert_int_equal(lookup_wait(r, "ev1.test", &res), 0);
	assert_int_equal(lookup_wait(r, "ev2.test", &res), 0);
	assert_int_equal(lookup_wait(r, "ev1.test", &res), 1); /* ev1 now recent */
	assert_int_equal(lookup_wait(r, "ev3.test", &res), 0); /* evicts ev2 */
	resolver_get_stats(r, &st);
	assert_int_equal(st.entries, 2);
	assert_int_equal(st.evictions, 1);
	assert_int_equal(lookup_wait(r, "ev1.test", &res), 1);
	assert_int_equal(lookup_wait(r, "ev3.test", &res), 1);
	assert_int_equal(lookup_wait(r, "ev2.test", &res), 0);
	assert_true(has_addr(&res, "192.0.2.12"));
}

/* Size 0: no caching at all. */
static void test_cache_disabled(void **state)
{
	struct resolver *r = *state;
	struct result res = { 0 };
	struct resolver_stats st;

	resolver_set_cache_size(r, 0);
	assert_int_equal(lookup_wait(r, "off.test", &res), 0);
	assert_int_equal(lookup_wait(r, "off.test", &res), 0);
	assert_int_equal(res.status, 0);
	resolver_get_stats(r, &st);
	assert_int_equal(st.hits, 0);
	assert_int_equal(st.entries, 0);
	sync_log(r);
	assert_int_equal(upstream_queries("off.test"), 4);
}

/* Failures that say nothing about the name are not cached. */
static void test_failure_not_cached(void **state)
{
	struct resolver *r = NULL;
	struct result res = { 0 };
	struct resolver_stats st;
	char csv[64];
	uint16_t port = free_udp_port(); /* nothing listens there */

	snprintf(csv, sizeof(csv), "127.0.0.1:%u", port);
	assert_int_equal(resolver_create(&r, loop, csv, 300), 0);
	lookup_wait(r, "hit.test", &res);
	assert_int_not_equal(res.status, 0);
	assert_int_not_equal(res.status, -ENOENT);
	lookup_wait(r, "hit.test", &res);
	assert_int_equal(res.calls, 2);
	resolver_get_stats(r, &st);
	assert_int_equal(st.hits, 0);
	assert_int_equal(st.misses, 2);
	assert_int_equal(st.entries, 0);
	assert_int_equal(resolver_pending(r), 0);
	resolver_destroy(r);
}

/* Destroy with waiters in flight: nobody is called back. */
static void test_destroy_pending(void **state)
{
	struct resolver *r = NULL;
	struct result a = { 0 }, b = { 0 };
	struct resolver_query *qa = NULL, *qb = NULL;

	assert_int_equal(resolver_create(&r, loop, dns_csv, 2000), 0);
	assert_int_equal(resolver_lookup(r, "pending1.test", lookup_cb, &a, &qa), 0);
	assert_int_equal(resolver_lookup(r, "pending1.test", lookup_cb, &b, &qb), 0);
	assert_int_equal(resolver_pending(r), 2);
	resolver_destroy(r);
	run_loop(1, 200);
	assert_int_equal(a.calls, 0);
	assert_int_equal(b.calls, 0);
}

static void test_name_too_long(void **state)
{
	struct resolver *r = *state;
	struct result res = { 0 };
	struct resolver_query *q = NULL;
	char name[300];

	memset(name, 'a', sizeof(name) - 1);
	name[sizeof(name) - 1] = '\0';
	assert_int_equal(resolver_lookup(r, name, lookup_cb, &res, &q), -ENAMETOOLONG);
	assert_int_equal(res.calls, 0);
}

/* Remembered connect failures move to the back, per port, in order. */
static void test_order_candidates(void **state)
{
	struct resolver *r = *state;
	static const struct {
		const char *in[4];
		size_t n;
		uint16_t port;
		const char *out[4];
	} cases[] = {
		/* the v6 address refused on 443: v4 first */
		{ { "2001:db8::10", "192.0.2.10" }, 2, 443, { "192.0.2.10", "2001:db8::10" } },
		/* another port: unaffected */
		{ { "2001:db8::10", "192.0.2.10" }, 2, 80, { "2001:db8::10", "192.0.2.10" } },
		/* stable for the rest */
		{ { "2001:db8::10", "2001:db8::11", "192.0.2.10", "192.0.2.11" }, 4, 443,
		  { "2001:db8::11", "192.0.2.10", "192.0.2.11", "2001:db8::10" } },
		/* everything failed: order kept, nothing dropped */
		{ { "2001:db8::10", "192.0.2.99" }, 2, 443, { "2001:db8::10", "192.0.2.99" } },
	};
	struct egr_addr a, list[4];
	size_t i, j;

	/* No failure noted yet: untouched. */
	assert_int_equal(addr_parse("2001:db8::10", &list[0]), 0);
	assert_int_equal(addr_parse("192.0.2.10", &list[1]), 0);
	resolver_order_candidates(r, list, 2, 443);
	assert_false(addr_is_v4(&list[0]));

	assert_int_equal(addr_parse("2001:db8::10", &a), 0);
	resolver_note_connect_failure(r, &a, 443);
	assert_int_equal(addr_parse("192.0.2.99", &a), 0);
	resolver_note_connect_failure(r, &a, 443);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		for (j = 0; j < cases[i].n; j++)
			assert_int_equal(addr_parse(cases[i].in[j], &list[j]), 0);
		resolver_order_candidates(r, list, cases[i].n, cases[i].port);
		for (j = 0; j < cases[i].n; j++) {
			assert_int_equal(addr_parse(cases[i].out[j], &a), 0);
			if (memcmp(a.b, list[j].b, sizeof(a.b)))
				fail_msg("case %zu: position %zu is not %s", i, j,
					 cases[i].out[j]);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_cache_hit_skips_upstream, res_setup, res_teardown),
		cmocka_unit_test_setup_teardown(test_cache_case_insensitive, res_setup, res_teardown),
		cmocka_unit_test_setup_teardown(test_ttl_expiry_refetches, res_setup, res_teardown),
		cmocka_unit_test_setup_teardown(test_cname_ttl_bounds_answer, res_setup, res_teardown),
		cmocka_unit_test_setup_teardown(test_nxdomain_cached_briefly, res_setup, res_teardown),
		cmocka_unit_test_setup_teardown(test_coalesce_concurrent, res_setup, res_teardown),
		cmocka_unit_test_setup_teardown(test_cancel_one_waiter, res_setup, res_teardown),
		cmocka_unit_test_setup_teardown(test_cancel_all_still_caches, res_setup, res_teardown),
		cmocka_unit_test_setup_teardown(test_callback_reentry, res_setup, res_teardown),
		cmocka_unit_test_setup_teardown(test_lru_eviction, res_setup, res_teardown),
		cmocka_unit_test_setup_teardown(test_cache_disabled, res_setup, res_teardown),
		cmocka_unit_test(test_failure_not_cached),
		cmocka_unit_test(test_destroy_pending),
		cmocka_unit_test_setup_teardown(test_name_too_long, res_setup, res_teardown),
		cmocka_unit_test_setup_teardown(test_order_candidates, res_setup, res_teardown),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
