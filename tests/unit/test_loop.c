// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* Unit tests for user/loop.c: fd events, masks, timers, stop. */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "loop.h"

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct fd_ctx {
	int calls;
	int events;
	int other_fd; /* delete this one from the callback, -1 = none */
	bool stop;
};

static void fd_cb(struct loop *l, int fd, void *data, int events)
{
	struct fd_ctx *x = data;
	char b[16];

	x->calls++;
	x->events |= events;
	if (read(fd, b, sizeof(b)) < 0)
		fail_msg("read: %s", strerror(errno));
	if (x->other_fd >= 0)
		loop_del(l, x->other_fd);
	if (x->stop)
		loop_stop(l);
}

/* A guard timer so that a broken loop fails the test instead of hanging. */
static void guard_cb(struct loop *l, struct loop_timer *t)
{
	*(bool *)t->data = true;
	loop_stop(l);
}

static void test_fd_read_event(void **state)
{
	struct loop *l;
	struct fd_ctx x = { .other_fd = -1, .stop = true };
	struct loop_timer guard = { 0 };
	bool fired = false;
	int p[2];

	assert_int_equal(loop_create(&l), 0);
	assert_int_equal(pipe(p), 0);
	assert_int_equal(loop_mask(l, p[0]), -1);
	assert_int_equal(loop_add(l, p[0], LOOP_READ, fd_cb, &x), 0);
	assert_int_equal(loop_mask(l, p[0]), LOOP_READ);
	assert_int_equal(write(p[1], "x", 1), 1);
	guard.data = &fired;
	loop_timer_start_at(l, &guard, loop_update_time(l) + 2000, guard_cb);
	assert_int_equal(loop_run(l), 0);
	assert_false(fired);
	assert_int_equal(x.calls, 1);
	assert_int_equal(x.events, LOOP_READ);
	assert_true(loop_timer_active(&guard));
	loop_timer_stop(&guard);
	assert_false(loop_timer_active(&guard));
	assert_int_equal(loop_del(l, p[0]), 0);
	assert_int_equal(loop_del(l, p[0]), -ENOENT);
	loop_destroy(l);
	close(p[0]);
	close(p[1]);
}

/* The before-wait hook runs after each pass's callbacks, before the loop
 * waits again, and once more when loop_run() returns. */
static int bw_calls, bw_cb_calls_seen[4];
static struct fd_ctx *bw_x;

static void bw_hook(void)
{
	if (bw_calls < 4)
		bw_cb_calls_seen[bw_calls] = bw_x->calls;
	bw_calls++;
}

static void bw_write_cb(struct loop *l, struct loop_timer *t)
{
	int fd = *(int *)t->data;

	if (write(fd, "y", 1) != 1)
		fail_msg("write: %s", strerror(errno));
}

static void test_before_wait_hook(void **state)
{
	struct loop *l;
	struct fd_ctx x = { .other_fd = -1 };
	struct loop_timer t = { 0 }, guard = { 0 };
	bool fired = false;
	int p[2];

	assert_int_equal(loop_create(&l), 0);
	assert_int_equal(pipe(p), 0);
	assert_int_equal(loop_add(l, p[0], LOOP_READ, fd_cb, &x), 0);
	bw_x = &x;
	loop_set_before_wait(l, bw_hook);
	assert_int_equal(write(p[1], "x", 1), 1);
	/* a second event 50 ms later, then stop from the callback */
	t.data = &p[1];
	loop_timer_start_at(l, &t, loop_update_time(l) + 50, bw_write_cb);
	guard.data = &fired;
	loop_timer_start_at(l, &guard, loop_update_time(l) + 2000, guard_cb);
	x.stop = false;
	while (x.calls < 2 && !fired) {
		x.stop = true; /* the first callback stops the first run */
		assert_int_equal(loop_run(l), 0);
	}
	assert_false(fired);
	assert_int_equal(x.calls, 2);
	/* run 1: before the first wait (no callback yet), at its return (one);
	 * run 2: before its wait (one), then the timer's pass and the
	 * wait for the write, at its return (two) */
	assert_true(bw_calls >= 4);
	assert_int_equal(bw_cb_calls_seen[0], 0);
	assert_int_equal(bw_cb_calls_seen[1], 1);
	assert_int_equal(bw_cb_calls_seen[2], 1);
	loop_set_before_wait(l, NULL);
	loop_timer_stop(&guard);
	loop_destroy(l);
	close(p[0]);
	close(p[1]);
}

static void test_mask_zero_suppresses(void **state)
{
	struct loop *l;
	struct fd_ctx x = { .other_fd = -1 };
	struct loop_timer guard = { 0 };
	bool fired = false;
	int p[2];

	assert_int_equal(loop_create(&l), 0);
	assert_int_equal(pipe(p), 0);
	assert_int_equal(loop_add(l, p[0], LOOP_READ, fd_cb, &x), 0);
	assert_int_equal(loop_mod(l, p[0], 0), 0);
	assert_int_equal(loop_mask(l, p[0]), 0);
	assert_int_equal(write(p[1], "x", 1), 1);
	guard.data = &fired;
	loop_timer_start_at(l, &guard, loop_update_time(l) + 50, guard_cb);
	assert_int_equal(loop_run(l), 0);
	assert_true(fired);
	assert_int_equal(x.calls, 0);
	/* re-enable: now the pending byte is reported */
	x.stop = true;
	assert_int_equal(loop_mod(l, p[0], LOOP_READ), 0);
	fired = false;
	loop_timer_start_at(l, &guard, loop_update_time(l) + 2000, guard_cb);
	assert_int_equal(loop_run(l), 0);
	assert_false(fired);
	assert_int_equal(x.calls, 1);
	assert_int_equal(loop_mod(l, 1000, LOOP_READ), -ENOENT);
	loop_destroy(l);
	close(p[0]);
	close(p[1]);
}

/* Two fds ready in the same batch; whichever runs first deletes the other,
 * which must then not be called (its owner may be freed). */
static void test_delete_in_batch(void **state)
{
	struct loop *l;
	struct fd_ctx a = { 0 }, b = { 0 };
	struct loop_timer guard = { 0 };
	bool fired = false;
	int p[2], q[2];

	assert_int_equal(loop_create(&l), 0);
	assert_int_equal(pipe(p), 0);
	assert_int_equal(pipe(q), 0);
	a.other_fd = q[0];
	b.other_fd = p[0];
	assert_int_equal(loop_add(l, p[0], LOOP_READ, fd_cb, &a), 0);
	assert_int_equal(loop_add(l, q[0], LOOP_READ, fd_cb, &b), 0);
	assert_int_equal(write(p[1], "x", 1), 1);
	assert_int_equal(write(q[1], "x", 1), 1);
	guard.data = &fired;
	loop_timer_start_at(l, &guard, loop_update_time(l) + 100, guard_cb);
	assert_int_equal(loop_run(l), 0);
	assert_true(fired);
	assert_int_equal(a.calls + b.calls, 1);
	loop_destroy(l);
	close(p[0]);
	close(p[1]);
	close(q[0]);
	close(q[1]);
}

struct order {
	int seq[8];
	int n;
	int stop_after;
};

struct tagged {
	struct loop_timer t;
	int tag;
	struct order *o;
};

static void order_cb(struct loop *l, struct loop_timer *t)
{
	struct tagged *x = t->data;

	x->o->seq[x->o->n++] = x->tag;
	if (x->o->n == x->o->stop_after)
		loop_stop(l);
}

static void tagged_init(struct tagged *x, int tag, struct order *o)
{
	memset(x, 0, sizeof(*x));
	x->t.data = x;
	x->tag = tag;
	x->o = o;
}

static void test_timer_lists_order(void **state)
{
	struct loop *l;
	struct loop_timer_list *slow, *fast;
	struct order o = { .stop_after = 3 };
	struct tagged t1, t2, t3, t4;
	uint64_t start;

	assert_int_equal(loop_create(&l), 0);
	slow = loop_timer_list_create(l, 60);
	fast = loop_timer_list_create(l, 20);
	assert_non_null(slow);
	assert_non_null(fast);
	assert_int_equal(loop_timer_list_duration(slow), 60);
	tagged_init(&t1, 1, &o);
	tagged_init(&t2, 2, &o);
	tagged_init(&t3, 3, &o);
	tagged_init(&t4, 4, &o);
	start = now_ms();
	loop_update_time(l);
	loop_timer_start(l, slow, &t1.t, order_cb);
	loop_timer_start(l, fast, &t2.t, order_cb);
	loop_timer_start(l, slow, &t3.t, order_cb);
	loop_timer_start(l, slow, &t4.t, order_cb);
	/* stopped: never fires */
	loop_timer_stop(&t4.t);
	assert_false(loop_timer_active(&t4.t));
	assert_int_equal(loop_run(l), 0);
	assert_int_equal(o.n, 3);
	assert_int_equal(o.seq[0], 2);
	assert_int_equal(o.seq[1], 1);
	assert_int_equal(o.seq[2], 3);
	assert_true(now_ms() - start >= 60);
	assert_true(now_ms() - start < 1000);
	loop_destroy(l);
}

static void test_timer_rearm_moves_to_tail(void **state)
{
	struct loop *l;
	struct loop_timer_list *q;
	struct order o = { .stop_after = 2 };
	struct tagged t1, t2;

	assert_int_equal(loop_create(&l), 0);
	q = loop_timer_list_create(l, 30);
	tagged_init(&t1, 1, &o);
	tagged_init(&t2, 2, &o);
	loop_update_time(l);
	loop_timer_start(l, q, &t1.t, order_cb);
	loop_timer_start(l, q, &t2.t, order_cb);
	usleep(5000);
	loop_update_time(l);
	loop_timer_start(l, q, &t1.t, order_cb); /* re-arm: now after t2 */
	assert_int_equal(loop_run(l), 0);
	assert_int_equal(o.seq[0], 2);
	assert_int_equal(o.seq[1], 1);
	assert_true(t1.t.deadline_ms > t2.t.deadline_ms);
	loop_destroy(l);
}

/* A reload shortens a list: armed timers come forward to the new duration
 * from now, in their order, and later ones follow them; lengthening leaves
 * armed timers where they were. */
static void test_timer_list_set_duration(void **state)
{
	struct loop *l;
	struct loop_timer_list *q;
	struct order o = { .stop_after = 3 };
	struct tagged t1, t2, t3;
	uint64_t start;

	assert_int_equal(loop_create(&l), 0);
	q = loop_timer_list_create(l, 600000);
	tagged_init(&t1, 1, &o);
	tagged_init(&t2, 2, &o);
	tagged_init(&t3, 3, &o);
	start = now_ms();
	loop_update_time(l);
	loop_timer_start(l, q, &t1.t, order_cb);
	usleep(5000);
	loop_update_time(l);
	loop_timer_start(l, q, &t2.t, order_cb);
	loop_timer_list_set_duration(l, q, 40);
	assert_int_equal(loop_timer_list_duration(q), 40);
	assert_true(t1.t.deadline_ms <= t2.t.deadline_ms);
	assert_true(t2.t.deadline_ms <= loop_now_ms(l) + 40);
	loop_timer_start(l, q, &t3.t, order_cb);
	assert_int_equal(loop_run(l), 0);
	assert_int_equal(o.n, 3);
	assert_int_equal(o.seq[0], 1);
	assert_int_equal(o.seq[1], 2);
	assert_int_equal(o.seq[2], 3);
	assert_true(now_ms() - start >= 40);
	assert_true(now_ms() - start < 1000);

	/* longer: the armed timer keeps its deadline, the next gets the new
	 * duration */
	memset(&o, 0, sizeof(o));
	o.stop_after = 2;
	loop_timer_list_set_duration(l, q, 20);
	loop_update_time(l);
	start = loop_now_ms(l);
	loop_timer_start(l, q, &t1.t, order_cb);
	loop_timer_list_set_duration(l, q, 200);
	assert_int_equal(t1.t.deadline_ms, start + 20);
	loop_timer_start(l, q, &t2.t, order_cb);
	assert_true(t2.t.deadline_ms >= start + 200);
	assert_int_equal(loop_run(l), 0);
	assert_int_equal(o.seq[0], 1);
	assert_int_equal(o.seq[1], 2);
	assert_true(now_ms() - start >= 200);
	loop_destroy(l);
}

static void test_timer_at_sorted(void **state)
{
	struct loop *l;
	struct order o = { .stop_after = 3 };
	struct tagged t1, t2, t3;
	uint64_t now;

	assert_int_equal(loop_create(&l), 0);
	tagged_init(&t1, 1, &o);
	tagged_init(&t2, 2, &o);
	tagged_init(&t3, 3, &o);
	now = loop_update_time(l);
	loop_timer_start_at(l, &t1.t, now + 40, order_cb);
	loop_timer_start_at(l, &t2.t, now + 10, order_cb);
	loop_timer_start_at(l, &t3.t, now + 25, order_cb);
	assert_int_equal(loop_run(l), 0);
	assert_int_equal(o.seq[0], 2);
	assert_int_equal(o.seq[1], 3);
	assert_int_equal(o.seq[2], 1);
	loop_destroy(l);
}

static void *stopper(void *arg)
{
	usleep(50000);
	loop_stop(arg);
	return NULL;
}

static void test_stop_from_thread(void **state)
{
	struct loop *l;
	pthread_t th;
	uint64_t start;

	assert_int_equal(loop_create(&l), 0);
	/* stop before run: returns at once, and the request is consumed */
	loop_stop(l);
	start = now_ms();
	assert_int_equal(loop_run(l), 0);
	assert_true(now_ms() - start < 20);
	/* no timers, no fds: only the other thread can end this run */
	start = now_ms();
	assert_int_equal(pthread_create(&th, NULL, stopper, l), 0);
	assert_int_equal(loop_run(l), 0);
	assert_true(now_ms() - start >= 40);
	assert_true(now_ms() - start < 2000);
	pthread_join(th, NULL);
	loop_destroy(l);
}

static void test_destroy_unlinks_timers(void **state)
{
	struct loop *l;
	struct loop_timer_list *q;
	struct loop_timer t = { 0 }, u = { 0 };

	assert_int_equal(loop_create(&l), 0);
	q = loop_timer_list_create(l, 1000);
	loop_timer_start(l, q, &t, NULL);
	loop_timer_start_at(l, &u, loop_now_ms(l) + 1000, NULL);
	assert_true(loop_timer_active(&t));
	loop_destroy(l);
	assert_false(loop_timer_active(&t));
	assert_false(loop_timer_active(&u));
	loop_destroy(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_fd_read_event),
		cmocka_unit_test(test_before_wait_hook),
		cmocka_unit_test(test_mask_zero_suppresses),
		cmocka_unit_test(test_delete_in_batch),
		cmocka_unit_test(test_timer_lists_order),
		cmocka_unit_test(test_timer_list_set_duration),
		cmocka_unit_test(test_timer_rearm_moves_to_tail),
		cmocka_unit_test(test_timer_at_sorted),
		cmocka_unit_test(test_stop_from_thread),
		cmocka_unit_test(test_destroy_unlinks_timers),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
