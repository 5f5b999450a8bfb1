// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * user/cgroup.c: a run's lock (cgroup_create, cgroup_run_claim) decides
 * whether its cgroup (and the agent in it) may be killed as left behind;
 * the pid in its name does not. cgroup_run_parent() places a run's cgroup below every
 * cgroup the command's user can write.
 */
#include <errno.h>
#include <grp.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "cgroup.h"

/* A child running /bin/sleep under the name argv0, as root if as_root and
 * we are root, else as another user (a command's process); stopped by the
 * caller. */
static pid_t spawn_named(const char *argv0, int as_root)
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
		if (!as_root && geteuid() == 0 && (setgroups(0, NULL) ||
		    setresgid(65534, 65534, 65534) || setresuid(65534, 65534, 65534)))
			_exit(126);
		/* as spawn_holder's (after the uid change, which clears it) */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
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

/* A child that holds path's lock as a run does, named "egressd". */
static pid_t spawn_holder(const char *path)
{
	int fds[2];
	pid_t pid;
	char c;

	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (!pid) {
		int fd = cgroup_run_claim(path, 0);

		close(fds[0]);
		/* gone with the test process, also when an assertion ends the
		 * test before reap(): else it holds the runner's pipe open */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		alarm(60);
		c = fd >= 0 ? 'y' : 'n';
		if (write(fds[1], &c, 1) != 1 || c == 'n')
			_exit(1);
		for (;;)
			pause();
	}
	close(fds[1]);
	assert_int_equal(read(fds[0], &c, 1), 1);
	close(fds[0]);
	assert_int_equal(c, 'y');
	return pid;
}

/*
 * Whether a run's leftovers may be removed is whether its lock is free:
 * held while the run lives (its fd), free once it is gone, SIGKILL
 * included. What runs under the pid in the name does not count: on the
 * build before, a process named egressd that took a dead run's pid kept
 * its cgroup (and the command in it) alive through every cleanup.
 */
static void test_run_lock(void **state)
{
	char tmpl[] = "/tmp/test_cgroup.XXXXXX", path[PATH_MAX], other[PATH_MAX];
	struct stat st;
	pid_t p;
	int fd, fd2;

	(void)state;
	assert_non_null(mkdtemp(tmpl));
	assert_int_equal(cgroup_create(tmpl, path, sizeof(path), &fd), 0);
	snprintf(other, sizeof(other), "%s/egressd.run.%d", tmpl, (int)getpid());
	assert_string_equal(path, other);
	/* only root may open it (and so hold its lock); not passed on exec */
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0066, 0);
	assert_true(fcntl(fd, F_GETFD) & FD_CLOEXEC);
	/* the run lives: not claimable, another open file included */
	assert_int_equal(cgroup_run_claim(path, 0), -EWOULDBLOCK);
	assert_int_equal(close(fd), 0);
	/* the run is gone */
	fd = cgroup_run_claim(path, 0);
	assert_true(fd >= 0);
	close(fd);

	/* held by another process until it is SIGKILLed */
	p = spawn_holder(path);
	assert_int_equal(cgroup_run_claim(path, 0), -EWOULDBLOCK);
	reap(p);
	fd = cgroup_run_claim(path, 0);
	assert_true(fd >= 0);
	close(fd);

	/* the pid in the name reused by the command's process named egressd
	 * (comm and argv[0]): no lock, not root's, so the leftover is
	 * claimable */
	p = spawn_named("egressd", 0);
	snprintf(other, sizeof(other), "%s/egressd.run.%d", tmpl, (int)p);
	assert_int_equal(mkdir(other, 0755), 0);
	fd = cgroup_run_claim(other, p);
	assert_true(fd >= 0);
	close(fd);
	reap(p);
	/* a root egressd under it (a run of an egressd from before the
	 * lock, holding none): kept; a root process of another name: not */
	if (geteuid() == 0) {
		p = spawn_named("/usr/local/bin/egressd-1.2", 1);
		assert_int_equal(cgroup_run_claim(other, p), -EWOULDBLOCK);
		reap(p);
		p = spawn_named("sleep", 1);
		fd = cgroup_run_claim(other, p);
		assert_true(fd >= 0);
		close(fd);
		reap(p);
	}
	assert_int_equal(rmdir(other), 0);

	/* a leftover with our pid, 0755 (an egressd before the lock): taken
	 * over and made 0711 */
	assert_int_equal(chmod(path, 0755), 0);
	assert_int_equal(cgroup_create(tmpl, path, sizeof(path), &fd), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0066, 0);
	assert_int_equal(cgroup_run_claim(path, 0), -EWOULDBLOCK);
	close(fd);
	/* one a live run holds (our pid in another pid namespace) is not
	 * taken: -EBUSY after the wait */
	p = spawn_holder(path);
	assert_int_equal(cgroup_create(tmpl, other, sizeof(other), &fd2), -EBUSY);
	reap(p);
	assert_int_equal(rmdir(path), 0);
	assert_int_equal(rmdir(tmpl), 0);
}

/*
 * cgroup_run_parent on a directory tree standing for a hierarchy: root/a/b/c,
 * each with a cgroup.procs whose mode says who may write it. The user is
 * not the files' owner (another uid) unless a case says so.
 */
struct tree_case {
	const char *name;
	mode_t modes[4];  /* root, a, b, c */
	int own;          /* index whose file the user owns (-1: none) */
	int in_group;     /* the user is in the files' group */
	const char *want; /* where the run's cgroup goes, below root; NULL: -EACCES */
};

static void test_run_parent(void **state)
{
	static const struct tree_case cases[] = {
		{ "nothing writable: below the start", { 0644, 0644, 0644, 0644 }, -1, 0, "/a/b/c" },
		{ "the start writable (a terminal's)", { 0644, 0644, 0644, 0666 }, -1, 0, "/a/b" },
		/* the reviewer's repro: a writable cgroup above a root-owned one */
		{ "writable above a protected one", { 0644, 0646, 0644, 0644 }, -1, 0, "" },
		{ "two writable: below the highest", { 0644, 0644, 0646, 0646 }, -1, 0, "/a" },
		{ "group write, user in the group", { 0644, 0644, 0664, 0644 }, -1, 1, "/a" },
		{ "group write, user not in it", { 0644, 0644, 0664, 0644 }, -1, 0, "/a/b/c" },
		/* owner bits alone count for the owner */
		{ "owned by the user, writable", { 0644, 0644, 0644, 0644 }, 2, 0, "/a" },
		{ "owned by the user, no owner write", { 0644, 0644, 0466, 0644 }, 2, 0, "/a/b/c" },
		/* a cgroup namespace whose root is the user's */
		{ "the root writable", { 0646, 0644, 0644, 0644 }, -1, 0, NULL },
		{ "the root owned by the user", { 0644, 0644, 0644, 0644 }, 0, 0, NULL },
	};
	static const char *const rel[4] = { "", "/a", "/a/b", "/a/b/c" };
	char tmpl[] = "/tmp/test_cgroup.XXXXXX", path[PATH_MAX], parent[PATH_MAX];
	gid_t other_gid = getgid() + 1;
	struct stat st;
	size_t i;
	int k, e;

	(void)state;
	assert_non_null(mkdtemp(tmpl));
	for (k = 1; k < 4; k++) {
		snprintf(path, sizeof(path), "%s%s", tmpl, rel[k]);
		assert_int_equal(mkdir(path, 0755), 0);
	}
	for (k = 0; k < 4; k++) {
		snprintf(path, sizeof(path), "%s%s/cgroup.procs", tmpl, rel[k]);
		close(open(path, O_CREAT | O_WRONLY, 0644));
	}
	assert_int_equal(stat(path, &st), 0);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct tree_case *c = &cases[i];
		struct cgroup_user u = { .uid = st.st_uid + 1, .gid = other_gid };

		if (c->in_group) {
			u.groups = &st.st_gid;
			u.n_groups = 1;
		}
		for (k = 0; k < 4; k++) {
			snprintf(path, sizeof(path), "%s%s/cgroup.procs", tmpl, rel[k]);
			assert_int_equal(chmod(path, c->modes[k]), 0);
		}
		if (c->own >= 0) {
			/* the user owns exactly that one: make it the files'
			 * owner and give every other file write for others
			 * off (they are 0644 in these cases) */
			u.uid = st.st_uid;
			for (k = 0; k < 4; k++) {
				if (k == c->own)
					continue;
				snprintf(path, sizeof(path), "%s%s/cgroup.procs", tmpl, rel[k]);
				assert_int_equal(chmod(path, 0444), 0);
			}
		}
		snprintf(parent, sizeof(parent), "%s/a/b/c", tmpl);
		e = cgroup_run_parent(tmpl, parent, &u);
		if (!c->want) {
			if (e != -EACCES)
				fail_msg("%s: %d, want -EACCES", c->name, e);
			snprintf(path, sizeof(path), "%s/a/b/c", tmpl);
			assert_string_equal(parent, path); /* unchanged */
			continue;
		}
		if (e)
			fail_msg("%s: %d (%s)", c->name, e, strerror(-e));
		snprintf(path, sizeof(path), "%s%s", tmpl, c->want);
		if (strcmp(parent, path))
			fail_msg("%s: %s, want %s", c->name, parent + strlen(tmpl), c->want);
	}
	/* started in the root itself */
	{
		struct cgroup_user u = { .uid = st.st_uid + 1, .gid = other_gid };

		for (k = 0; k < 4; k++) {
			snprintf(path, sizeof(path), "%s%s/cgroup.procs", tmpl, rel[k]);
			assert_int_equal(chmod(path, 0644), 0);
		}
		snprintf(parent, sizeof(parent), "%s", tmpl);
		assert_int_equal(cgroup_run_parent(tmpl, parent, &u), 0);
		assert_string_equal(parent, tmpl);
		/* a cgroup.procs that cannot be checked counts as writable */
		snprintf(path, sizeof(path), "%s/a/cgroup.procs", tmpl);
		unlink(path);
		snprintf(parent, sizeof(parent), "%s/a/b/c", tmpl);
		assert_int_equal(cgroup_run_parent(tmpl, parent, &u), 0);
		assert_string_equal(parent, tmpl);
		/* not below the mount */
		assert_int_equal(cgroup_run_parent(tmpl, (char[]){ "/elsewhere" }, &u), -EINVAL);
	}
	for (k = 3; k >= 0; k--) {
		snprintf(path, sizeof(path), "%s%s/cgroup.procs", tmpl, rel[k]);
		unlink(path);
		snprintf(path, sizeof(path), "%s%s", tmpl, rel[k]);
		rmdir(path);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_run_lock),
		cmocka_unit_test(test_run_parent),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
