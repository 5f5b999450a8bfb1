// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * Unit tests for user/netns.c without privileges: scan scheduling, and a
 * scan that finds only the daemon's own namespace opens nothing. Listeners
 * inside another namespace need root: tests/e2e daemon_pod_netns.
 */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "netns.h"

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Never dereferenced unless a foreign namespace is found. */
static struct netns *make(void)
{
	static char fake_proxy;
	struct netns_params p = { .proxy = (struct proxy *)&fake_proxy, .port = 15001 };
	struct netns *n = NULL;

	assert_int_equal(netns_create(&n, &p), 0);
	assert_non_null(n);
	assert_true(netns_fd(n) >= 0);
	return n;
}

static void test_periodic_schedule(void **state)
{
	struct netns *n = make();
	uint64_t t = now_ms();
	size_t cnt = 1;

	(void)state;
	assert_true(netns_scan_due(n, t)); /* never scanned */
	netns_scan_begin(n, t);
	netns_scan_end(n);
	assert_false(netns_scan_due(n, t + 100));
	assert_false(netns_scan_due(n, t + NETNS_SCAN_MS - 1));
	assert_true(netns_scan_due(n, t + NETNS_SCAN_MS));
	assert_null(netns_list(n, &cnt));
	assert_int_equal(cnt, 0);
	netns_destroy(n);
}

static void test_watch_kicks_with_followups(void **state)
{
	char dir[] = "/tmp/egr-test-netns.XXXXXX";
	struct netns *n = make();
	uint64_t t;

	(void)state;
	assert_non_null(mkdtemp(dir));
	t = now_ms();
	netns_scan_begin(n, t);
	netns_scan_end(n);
	/* Not a cgroup: the watch fails (logged), the kick still counts. */
	netns_watch_cgroup(n, dir);
	assert_false(netns_scan_due(n, t + 50));  /* minimum gap */
	assert_true(netns_scan_due(n, t + 250));
	netns_scan_begin(n, t + 250);
	netns_scan_end(n);
	/* the follow-ups: about 0.5 s and 2 s after the change */
	assert_false(netns_scan_due(n, t + 300));
	assert_true(netns_scan_due(n, t + 700));
	netns_scan_begin(n, t + 700);
	netns_scan_end(n);
	assert_false(netns_scan_due(n, t + 1000));
	assert_true(netns_scan_due(n, t + 2200));
	rmdir(dir);
	netns_destroy(n);
}

/* cgroup.procs listing only ourselves: our own namespace is served by the
 * daemon's own listeners, nothing is opened (the "daemon itself is in the
 * enforced cgroup" error it logs is expected here). */
static void test_own_namespace_skipped(void **state)
{
	char dir[] = "/tmp/egr-test-netns.XXXXXX", path[PATH_MAX];
	struct netns *n = make();
	size_t cnt = 1;
	FILE *f;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
	f = fopen(path, "w");
	assert_non_null(f);
	fprintf(f, "%d\n999999999\n", (int)getpid()); /* and one that does not exist */
	fclose(f);
	netns_scan_begin(n, now_ms());
	netns_scan_cgroup(n, dir, "/test");
	netns_scan_cgroup(n, "/nonexistent-egr-cgroup", "/gone");
	netns_scan_end(n);
	netns_list(n, &cnt);
	assert_int_equal(cnt, 0);
	unlink(path);
	rmdir(dir);
	netns_destroy(n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_periodic_schedule),
		cmocka_unit_test(test_watch_kicks_with_followups),
		cmocka_unit_test(test_own_namespace_skipped),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
