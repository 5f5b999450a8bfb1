// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * user/cgroup.c: cgroup_owner_alive() decides whether a run's cgroup (and
 * the agent in it) may be killed as left behind. A live egressd under
 * another file name must count as alive; an unrelated process that reused
 * the pid must not.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "cgroup.h"

/* A child running /bin/sleep under the name argv0; stopped by the caller. */
static pid_t spawn_named(const char *argv0)
{
	int fds[2];
	pid_t pid;
	char c;

	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (!pid) {
		close(fds[0]);
		fcntl(fds[1], F_SETFD, FD_CLOEXEC);
		execl("/bin/sleep", argv0, "30", (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	/* EOF once exec closed the pipe: comm and cmdline are the new ones */
	assert_int_equal(read(fds[0], &c, 1), 0);
	close(fds[0]);
	return pid;
}

static void reap(pid_t pid)
{
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

static void test_owner_alive(void **state)
{
	static const struct {
		const char *argv0;
		int alive;
	} cases[] = {
		{ "sleep", 0 }, /* the pid reused by something else */
		{ "/usr/local/bin/egressd", 1 },
		/* renamed copies: comm is "sleep" (exec of /bin/sleep), the
		 * name only in argv[0]: a bench's base build, a versioned
		 * install */
		{ "/tmp/x/sk-base-egressd", 1 },
		{ "egressd-1.2", 1 },
		/* "egressd" in a directory name does not make it ours */
		{ "/opt/egressd/bin/sleep", 0 },
	};
	size_t i;
	pid_t p;

	(void)state;
	assert_int_equal(cgroup_owner_alive(getpid()), 0); /* never ourselves */
	assert_int_equal(cgroup_owner_alive(0), 0);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		p = spawn_named(cases[i].argv0);
		if (cgroup_owner_alive(p) != cases[i].alive)
			fail_msg("argv[0] %s: alive %d, want %d", cases[i].argv0,
				 !cases[i].alive, cases[i].alive);
		reap(p);
		assert_int_equal(cgroup_owner_alive(p), 0); /* gone */
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_owner_alive),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
