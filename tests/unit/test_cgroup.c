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
	pid_t p;

	(void)state;
	assert_int_equal(cgroup_owner_alive(getpid()), 0); /* never ourselves */
	assert_int_equal(cgroup_owner_alive(0), 0);

	p = spawn_named("sleep"); /* pid reused by something else */
	assert_int_equal(cgroup_owner_alive(p), 0);
	reap(p);
	assert_int_equal(cgroup_owner_alive(p), 0); /* gone */

	p = spawn_named("/usr/local/bin/egressd");
	assert_int_equal(cgroup_owner_alive(p), 1);
	reap(p);

	/* renamed copies: comm is "sleep" (exec of /bin/sleep), the name is
	 * only in argv[0] — the bench's base build, a versioned install */
	p = spawn_named("/tmp/x/sk-base-egressd");
	assert_int_equal(cgroup_owner_alive(p), 1);
	reap(p);
	p = spawn_named("egressd-1.2");
	assert_int_equal(cgroup_owner_alive(p), 1);
	reap(p);

	/* "egressd" in a directory name does not make a process ours */
	p = spawn_named("/opt/egressd/bin/sleep");
	assert_int_equal(cgroup_owner_alive(p), 0);
	reap(p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_owner_alive),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
