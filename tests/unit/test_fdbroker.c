// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* Unit tests for user/fdbroker.c: a thread with a descriptor table of its
 * own hands descriptors to the process's table and takes them from it. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "fdbroker.h"

static bool fd_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0;
}

struct ctx {
	struct fdbroker *b;
	pthread_barrier_t bar;
	bool unshare;
	int private_fd;   /* made by the thread after unsharing */
	int main_pipe[2]; /* made by the main thread after that */
	int imported;
	int export_ret;
	int bad_import;
	char got[8];
	bool fn_ran_in_broker;
	int bad; /* the thread's failed checks */
	pthread_t thread;
};

static int write_x(void *arg, int *fds, unsigned n)
{
	struct ctx *c = arg;

	c->fn_ran_in_broker = !pthread_equal(pthread_self(), c->thread);
	if (n != 1 || fds[0] < 0)
		return -EBADF;
	if (write(fds[0], "x", 1) != 1)
		return -errno;
	close(fds[0]);
	return 7;
}

static int count_missing(void *arg, int *fds, unsigned n)
{
	int missing = 0;

	(void)arg;
	for (unsigned i = 0; i < n; i++)
		missing += fds[i] < 0;
	return missing;
}

static void *client(void *arg)
{
	struct ctx *c = arg;
	int p[2], wfd;

	/* cmocka's asserts belong to the test's thread: note, check there */
	if (c->unshare && fdbroker_unshare(c->b, 0))
		c->bad++;
	if (fdbroker_private() != c->unshare)
		c->bad++;
	c->private_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	pthread_barrier_wait(&c->bar); /* main: looks, makes its pipe */
	pthread_barrier_wait(&c->bar);

	/* export: the broker writes through our pipe's write end */
	if (pipe2(p, O_CLOEXEC))
		c->bad++;
	wfd = p[1];
	c->export_ret = fdbroker_export(c->b, 0, &p[1], 1, write_x, c);
	if (read(p[0], c->got, 1) != 1)
		c->bad++;
	if (c->unshare && fd_open(wfd)) /* our copy must be gone */
		c->bad++;
	close(p[0]);

	/* import: the main thread's pipe, taken */
	c->imported = fdbroker_import(c->b, 0, c->main_pipe[0], true);
	c->bad_import = fdbroker_import(c->b, 0, 1000, false);
	pthread_barrier_wait(&c->bar); /* main: checks its copy, writes */
	pthread_barrier_wait(&c->bar);
	if (c->imported >= 0 && read(c->imported, c->got + 1, 1) != 1)
		c->bad++;
	return NULL;
}

static void run(bool unshare)
{
	struct ctx c = { .unshare = unshare };

	assert_int_equal(fdbroker_create(&c.b, 1), 0);
	assert_int_equal(fdbroker_start(c.b), 0);
	pthread_barrier_init(&c.bar, NULL, 2);
	assert_int_equal(pthread_create(&c.thread, NULL, client, &c), 0);
	pthread_barrier_wait(&c.bar);
	/* A descriptor the thread made is in the main table only if shared. */
	assert_int_equal(fd_open(c.private_fd), !unshare);
	assert_int_equal(pipe2(c.main_pipe, O_CLOEXEC), 0);
	pthread_barrier_wait(&c.bar);
	pthread_barrier_wait(&c.bar);
	assert_true(c.imported >= 0);
	if (unshare)
		assert_false(fd_open(c.main_pipe[0])); /* taken: ours is closed */
	else
		assert_int_equal(c.imported, c.main_pipe[0]);
	assert_int_equal(write(c.main_pipe[1], "y", 1), 1);
	pthread_barrier_wait(&c.bar);
	pthread_join(c.thread, NULL);
	assert_int_equal(c.bad, 0);
	assert_int_equal(c.export_ret, 7);
	assert_int_equal(c.fn_ran_in_broker, unshare);
	assert_memory_equal(c.got, "xy", 2);
	assert_int_equal(c.bad_import, -EBADF);
	close(c.main_pipe[1]);
	if (!unshare) {
		close(c.imported);
		close(c.private_fd);
	}
	fdbroker_destroy(c.b);
	pthread_barrier_destroy(&c.bar);
}

static void test_private(void **state)
{
	(void)state;
	run(true);
}

static void test_shared(void **state)
{
	(void)state;
	run(false);
}

/* Too many to send: fn still runs (here), with -1 for each, and the
 * caller's copies are closed. */
struct many {
	struct fdbroker *b;
	int ret;
	bool closed;
};

static void *many_client(void *arg)
{
	struct many *m = arg;
	int fds[5];

	if (fdbroker_unshare(m->b, 0))
		return NULL;
	for (int i = 0; i < 5; i++)
		fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
	int first = fds[0];

	m->ret = fdbroker_export(m->b, 0, fds, 5, count_missing, NULL);
	m->closed = !fd_open(first);
	return NULL;
}

static void test_export_refused(void **state)
{
	struct many m = { 0 };
	pthread_t t;

	(void)state;
	assert_int_equal(fdbroker_create(&m.b, 1), 0);
	assert_int_equal(fdbroker_start(m.b), 0);
	assert_int_equal(pthread_create(&t, NULL, many_client, &m), 0);
	pthread_join(t, NULL);
	assert_int_equal(m.ret, 5);
	assert_true(m.closed);
	fdbroker_destroy(m.b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_private),
		cmocka_unit_test(test_shared),
		cmocka_unit_test(test_export_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
