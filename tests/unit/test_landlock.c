// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * user/landlock.c: the scoping `egressd run` and `egressd scope` put the
 * agent under, checked on this kernel for both rulesets it makes: the
 * scopes-only one (ABI 6+) and the one for older kernels (ABI 2-5, made
 * here on a newer kernel). A process under it cannot open another
 * process's /proc/PID/mem (ptrace-class access) but can its own child's,
 * and renames and links across directories still work (a domain
 * that handles file access refuses them unless REFER is granted).
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "landlock.h"

enum {
	R_OUTSIDE_READ = 1 << 0, /* open another process's mem */
	R_OWN_READ = 1 << 1,     /* open its own child's mem */
	R_RENAME = 1 << 2,       /* rename across directories */
	R_LINK = 1 << 3,         /* link across directories */
	R_SIGNAL = 1 << 4,       /* kill(outside, 0) */
	R_APPLIED = 1 << 5,
};

/* ptrace-class access in attach mode (opening /proc/PID/mem): refused to
 * a process in a domain whatever its capabilities, so the test holds when
 * run as root too (reading /proc/PID/environ, a read-mode access, is
 * refused by Landlock only to the unprivileged: e2e run_local_scope). */
static bool readable(pid_t pid)
{
	char path[64];
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/mem", (int)pid);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return false;
	close(fd);
	return true;
}

/* What a child under the ruleset for abi may do; outside: a sibling
 * process of the test, outside the domain. */
static int probe(int abi, pid_t outside)
{
	char dir[] = "/tmp/egr-landlock-XXXXXX", a[64], b[64], x[96], y[96];
	int fds[2], status, r = 0;
	pid_t pid, own;

	assert_non_null(mkdtemp(dir));
	snprintf(a, sizeof(a), "%s/a", dir);
	snprintf(b, sizeof(b), "%s/b", dir);
	assert_int_equal(mkdir(a, 0700), 0);
	assert_int_equal(mkdir(b, 0700), 0);
	snprintf(x, sizeof(x), "%s/x", a);
	close(open(x, O_CREAT | O_WRONLY, 0600));
	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (!pid) {
		int fd;

		close(fds[0]);
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
			_exit(100);
		if (abi) { /* 0: no domain, the bed's own check */
			fd = landlock_ruleset_for(abi);
			if (fd < 0 || landlock_scope_apply(fd))
				_exit(101);
			r |= R_APPLIED;
		}
		if (readable(outside))
			r |= R_OUTSIDE_READ;
		own = fork();
		if (!own) {
			pause();
			_exit(0);
		}
		if (own > 0 && readable(own))
			r |= R_OWN_READ;
		if (own > 0)
			kill(own, SIGKILL);
		snprintf(y, sizeof(y), "%s/x", b);
		if (!rename(x, y))
			r |= R_RENAME;
		snprintf(x, sizeof(x), "%s/y", a);
		if (!link(y, x))
			r |= R_LINK;
		if (!kill(outside, 0))
			r |= R_SIGNAL;
		if (write(fds[1], &r, sizeof(r)) != sizeof(r))
			_exit(102);
		_exit(0);
	}
	close(fds[1]);
	r = 0;
	if (read(fds[0], &r, sizeof(r)) != sizeof(r))
		r = 0;
	close(fds[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	snprintf(x, sizeof(x), "rm -rf '%s'", dir);
	assert_int_equal(system(x), 0);
	return r;
}

static pid_t sibling(void)
{
	pid_t pid = fork();

	assert_true(pid >= 0);
	if (!pid) {
		pause();
		_exit(0);
	}
	return pid;
}

static void check(int abi, bool scopes)
{
	pid_t out = sibling();
	int r;

	/* the bed: without a domain, a sibling's mem can be opened (not so
	 * under Yama's ptrace_scope 1 without root: nothing to show then) */
	r = probe(0, out);
	if (!(r & R_OUTSIDE_READ)) {
		kill(out, SIGKILL);
		waitpid(out, NULL, 0);
		skip();
	}
	r = probe(abi, out);
	kill(out, SIGKILL);
	waitpid(out, NULL, 0);
	assert_true(r & R_APPLIED);
	assert_false(r & R_OUTSIDE_READ);
	assert_true(r & R_OWN_READ);
	assert_true(r & R_RENAME);
	assert_true(r & R_LINK);
	if (scopes)
		assert_false(r & R_SIGNAL);
	else
		assert_true(r & R_SIGNAL); /* not scoped before ABI 6: as documented */
}

static void test_scopes_ruleset(void **state)
{
	int abi = landlock_abi();

	(void)state;
	if (abi < LANDLOCK_ABI_SCOPES)
		skip();
	check(abi, true);
}

static void test_old_kernel_ruleset(void **state)
{
	int abi = landlock_abi();

	(void)state;
	if (abi < 2)
		skip();
	check(2, false);
}

static void test_abi_one_refused(void **state)
{
	(void)state;
	assert_int_equal(landlock_ruleset_for(1), -EOPNOTSUPP);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_scopes_ruleset),
		cmocka_unit_test(test_old_kernel_ruleset),
		cmocka_unit_test(test_abi_one_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
