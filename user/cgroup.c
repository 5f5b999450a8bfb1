// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include <linux/magic.h>

#include "cgroup.h"
#include "log.h"

static int cgroup_is_cgroup2(const char *path)
{
	struct statfs st;

	return statfs(path, &st) == 0 && st.f_type == CGROUP2_SUPER_MAGIC;
}

int cgroup_find_mount(char *mnt, size_t len, char *err, size_t errlen)
{
	char line[4096], dev[256], dir[PATH_MAX], type[64];
	static const char *const guesses[] = { "/sys/fs/cgroup", "/sys/fs/cgroup/unified" };
	char tmpl[] = "/run/egressd-cgroup2.XXXXXX";
	FILE *f;
	size_t i;

	f = fopen("/proc/mounts", "re");
	if (f) {
		while (fgets(line, sizeof(line), f)) {
			if (sscanf(line, "%255s %4095s %63s", dev, dir, type) != 3)
				continue;
			if (strcmp(type, "cgroup2") || !cgroup_is_cgroup2(dir))
				continue;
			snprintf(mnt, len, "%s", dir);
			fclose(f);
			return 0;
		}
		fclose(f);
	}
	for (i = 0; i < sizeof(guesses) / sizeof(guesses[0]); i++) {
		if (cgroup_is_cgroup2(guesses[i])) {
			snprintf(mnt, len, "%s", guesses[i]);
			return 0;
		}
	}
	/* Not visible here (ip netns exec remounts /sys): mount the same
	 * hierarchy privately, in a mount namespace of our own so nothing
	 * leaks into the caller's. */
	if (unshare(CLONE_NEWNS)) {
		snprintf(err, errlen, "no cgroup v2 hierarchy is mounted and a private "
			 "mount namespace cannot be created (%s); mount cgroup2 "
			 "(mount -t cgroup2 none /sys/fs/cgroup)", strerror(errno));
		return -errno;
	}
	if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL)) {
		snprintf(err, errlen, "cannot make mounts private: %s", strerror(errno));
		return -errno;
	}
	/* /sys/fs/cgroup exists in every sysfs and nothing is mounted on it
	 * here: mounting over it inside our own namespace leaves nothing
	 * behind on the host. */
	if (!mount("cgroup2", "/sys/fs/cgroup", "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL)) {
		snprintf(mnt, len, "/sys/fs/cgroup");
		return 0;
	}
	mkdir("/run", 0755);
	if (!mkdtemp(tmpl)) {
		snprintf(err, errlen, "cannot create a cgroup2 mount point: %s", strerror(errno));
		return -errno;
	}
	if (mount("cgroup2", tmpl, "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL)) {
		int e = errno;

		rmdir(tmpl);
		snprintf(err, errlen, "no cgroup v2 hierarchy is mounted and mounting one "
			 "failed (%s): egressd needs cgroup v2 (unified or hybrid "
			 "hierarchy)", strerror(e));
		return -e;
	}
	/* The mount namespace is ours: the directory can go at once while
	 * the mount stays usable; removing it is impossible while mounted,
	 * so detach-on-exit of the namespace cleans it up. */
	snprintf(mnt, len, "%s", tmpl);
	return 0;
}

int cgroup_self_path(char *path, size_t len)
{
	char line[PATH_MAX + 16];
	FILE *f = fopen("/proc/self/cgroup", "re");
	int err = -ENOENT;

	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		if (strncmp(line, "0::", 3))
			continue;
		line[strcspn(line, "\n")] = '\0';
		/* "(deleted)" or paths outside our cgroup namespace ("/..")
		 * cannot be used: fall back to the mount root. */
		if (strstr(line + 3, "/..") || strstr(line + 3, " (deleted)"))
			snprintf(path, len, "/");
		else
			snprintf(path, len, "%s", line + 3);
		err = 0;
		break;
	}
	fclose(f);
	return err;
}

/* What generic_permission decides for a user with no capabilities (kernfs,
 * which cgroupfs is, has no ACLs): owner bits for the owner, group bits for
 * a member of the file's group, other bits for the rest. */
static bool cgroup_user_may_write(const struct stat *st, const struct cgroup_user *u)
{
	int i;

	if (u->root)
		return st->st_uid != 0 || (st->st_mode & (S_IWGRP | S_IWOTH));
	if (st->st_uid == u->uid)
		return st->st_mode & S_IWUSR;
	if (st->st_gid == u->gid)
		return st->st_mode & S_IWGRP;
	for (i = 0; i < u->n_groups; i++)
		if (st->st_gid == u->groups[i])
			return st->st_mode & S_IWGRP;
	return st->st_mode & S_IWOTH;
}

int cgroup_run_parent(const char *mnt, char *parent, const struct cgroup_user *u)
{
	size_t ml = strlen(mnt), len = strlen(parent), end = ml, above = ml;
	char procs[PATH_MAX + 16];
	const char *slash;
	struct stat st;

	if (len < ml || strncmp(parent, mnt, ml) || (len > ml && parent[ml] != '/'))
		return -EINVAL;
	/* From the root down: the first writable one is the highest. */
	for (;;) {
		if (snprintf(procs, sizeof(procs), "%.*s/cgroup.procs", (int)end, parent) >=
		    (int)sizeof(procs))
			return -ENAMETOOLONG;
		/* one that cannot be checked counts as writable */
		if (stat(procs, &st) || cgroup_user_may_write(&st, u)) {
			if (end == ml) {
				if (!u->root)
					return -EACCES;
				parent[ml] = '\0';
				return 0;
			}
			parent[above] = '\0';
			return 0;
		}
		if (end == len)
			return 0;
		above = end;
		slash = strchr(parent + end + 1, '/');
		end = slash ? (size_t)(slash - parent) : len;
	}
}

int cgroup_run_lock(int fd)
{
	return flock(fd, LOCK_EX | LOCK_NB) ? -errno : 0;
}

/*
 * A root process under pid whose comm, or the file name of its argv[0], has
 * "egressd" in it (a renamed copy is one too): a run of an egressd from
 * before the lock, which holds none, or another egressd that took the pid.
 * The command cannot be root (or become root: no_new_privs), so naming its
 * processes "egressd" does not make them pass.
 */
static bool cgroup_root_egressd(int pid)
{
	char p[64], line[256], argv0[PATH_MAX];
	unsigned ruid = 1, euid = 1;
	const char *base;
	ssize_t n;
	FILE *f;
	int fd;

	if (pid <= 0 || pid == getpid())
		return false;
	snprintf(p, sizeof(p), "/proc/%d/status", pid);
	f = fopen(p, "re");
	if (!f)
		return false;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Uid: %u %u", &ruid, &euid) == 2)
			break;
	fclose(f);
	if (ruid != 0 || euid != 0)
		return false;
	snprintf(p, sizeof(p), "/proc/%d/comm", pid);
	f = fopen(p, "re");
	if (!f)
		return false;
	if (!fgets(line, sizeof(line), f))
		line[0] = '\0';
	fclose(f);
	if (!strncmp(line, "egressd", 7))
		return true;
	snprintf(p, sizeof(p), "/proc/%d/cmdline", pid);
	fd = open(p, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	n = read(fd, argv0, sizeof(argv0) - 1);
	close(fd);
	if (n <= 0)
		return false;
	argv0[n] = '\0'; /* argv[0] ends at the first NUL */
	base = strrchr(argv0, '/');
	base = base ? base + 1 : argv0;
	return strstr(base, "egressd") != NULL;
}

int cgroup_run_claim(const char *path, int pid)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	int e;

	if (fd < 0)
		return -errno;
	e = cgroup_run_lock(fd);
	if (!e && cgroup_root_egressd(pid))
		e = -EWOULDBLOCK;
	if (e) {
		close(fd);
		return e;
	}
	return fd;
}

int cgroup_lock_dir(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC), e;
	struct stat a, b;

	if (fd < 0)
		return -errno;
	e = cgroup_run_lock(fd);
	/* still the directory at path: another run's cleanup that claimed
	 * it between our mkdir and our lock removed it */
	if (!e && (fstat(fd, &a) || stat(path, &b) || a.st_dev != b.st_dev ||
		   a.st_ino != b.st_ino))
		e = -ESTALE;
	if (e) {
		close(fd);
		return e;
	}
	return fd;
}

int cgroup_create(const char *parent, char *path_out, size_t len, int *fd_out)
{
	struct timespec ts = { 0, 20 * 1000 * 1000 };
	int n, fd, e, tries;
	bool made;

	n = snprintf(path_out, len, "%s/" CGROUP_RUN_PREFIX "%d", parent, (int)getpid());
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	/* Up to 3 s for another run's cleanup that holds the name (it kills
	 * and removes a leftover of ours) to finish. */
	for (tries = 0; tries < 150; tries++) {
		/* 0711: only root can open it, so only root can take its lock
		 * (cgroup_run_lock); the command's processes could hold it
		 * for a dead run otherwise. */
		made = !mkdir(path_out, 0711);
		if (!made && errno != EEXIST)
			return -errno;
		fd = cgroup_lock_dir(path_out);
		if (fd == -ENOENT)
			continue;
		if (fd == -EWOULDBLOCK || fd == -ESTALE) {
			nanosleep(&ts, NULL);
			continue;
		}
		if (fd < 0) {
			e = fd;
			goto fail;
		}
		/* whatever the umask; a leftover of an egressd before the
		 * lock may be 0755 */
		if (fchmod(fd, 0711)) {
			e = -errno;
			goto fail_fd;
		}
		/* a previous run with our pid that was killed (its lock went
		 * with it): ours now, emptied */
		if (!made)
			cgroup_kill_all(path_out, 2000);
		*fd_out = fd;
		return 0;
	}
	/* a live run holds it: an egressd with our pid in another pid
	 * namespace, started from the same cgroup */
	return -EBUSY;
fail_fd:
	close(fd);
fail:
	if (made)
		rmdir(path_out);
	return e;
}

uint64_t cgroup_id(const char *path)
{
	struct stat st;

	/* On cgroup2 the kernfs inode number is the cgroup id. */
	if (stat(path, &st))
		return 0;
	return st.st_ino;
}

static int cgroup_write(const char *dir, const char *file, const char *val)
{
	char p[PATH_MAX];
	int fd, err = 0;

	snprintf(p, sizeof(p), "%s/%s", dir, file);
	fd = open(p, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (write(fd, val, strlen(val)) < 0)
		err = -errno;
	close(fd);
	return err;
}

static int cgroup_populated(const char *dir)
{
	char p[PATH_MAX], line[128];
	int populated = -1;
	FILE *f;

	snprintf(p, sizeof(p), "%s/cgroup.events", dir);
	f = fopen(p, "re");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "populated %d", &populated) == 1)
			break;
	fclose(f);
	return populated;
}

static void cgroup_kill_each(const char *dir)
{
	char p[PATH_MAX];
	FILE *f;
	int pid;

	snprintf(p, sizeof(p), "%s/cgroup.procs", dir);
	f = fopen(p, "re");
	if (!f)
		return;
	while (fscanf(f, "%d", &pid) == 1)
		kill(pid, SIGKILL);
	fclose(f);
}

int cgroup_kill_all(const char *path, int timeout_ms)
{
	struct timespec ts = { 0, 10 * 1000 * 1000 };
	int waited = 0, populated;

	if (cgroup_write(path, "cgroup.kill", "1"))
		cgroup_kill_each(path);
	for (;;) {
		populated = cgroup_populated(path);
		if (populated <= 0)
			return populated < 0 ? populated : 0;
		if (waited >= timeout_ms)
			return -EBUSY;
		cgroup_kill_each(path); /* forks that raced the kill */
		nanosleep(&ts, NULL);
		waited += 10;
	}
}

int cgroup_remove(const char *path)
{
	int tries;

	for (tries = 0; tries < 100; tries++) {
		if (!rmdir(path) || errno == ENOENT)
			return 0;
		if (errno != EBUSY)
			return -errno;
		cgroup_kill_all(path, 100);
	}
	return -EBUSY;
}

int cgroup_cleanup_stale(const char *parent)
{
	char p[PATH_MAX];
	struct dirent *de;
	int removed = 0;
	DIR *d;

	d = opendir(parent);
	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		char *end;
		long pid;
		int fd, e;

		if (strncmp(de->d_name, CGROUP_RUN_PREFIX, strlen(CGROUP_RUN_PREFIX)))
			continue;
		pid = strtol(de->d_name + strlen(CGROUP_RUN_PREFIX), &end, 10);
		if (*end || pid <= 0 || pid > INT_MAX)
			continue;
		if (snprintf(p, sizeof(p), "%s/%s", parent, de->d_name) >= (int)sizeof(p))
			continue;
		/* Its run holds the lock while it lives; what runs under the
		 * pid in the name counts only if it is root's (cgroup.h). */
		fd = cgroup_run_claim(p, (int)pid);
		if (fd < 0) {
			if (fd != -EWOULDBLOCK && fd != -ENOENT)
				log_warn("cannot check %s: %s", p, strerror(-fd));
			continue;
		}
		e = cgroup_kill_all(p, 2000);
		if (!e)
			e = cgroup_remove(p);
		close(fd);
		if (!e) {
			log_info("removed %s left behind by a run that was killed", p);
			removed++;
		} else {
			log_warn("cannot remove %s left behind by a killed run: %s",
				 p, strerror(-e));
		}
	}
	closedir(d);
	return removed;
}

/* cgroup_cleanup_stale in dir and every cgroup below it (not inside the
 * runs' own cgroups), depth first, at most depth levels down. */
static int cleanup_below(const char *dir, int depth)
{
	char p[PATH_MAX];
	struct dirent *de;
	int removed, r;
	DIR *d;

	removed = cgroup_cleanup_stale(dir);
	if (removed < 0)
		return removed;
	if (depth <= 0)
		return removed;
	d = opendir(dir);
	if (!d)
		return removed;
	while ((de = readdir(d))) {
		if (de->d_type != DT_DIR || de->d_name[0] == '.' ||
		    !strncmp(de->d_name, CGROUP_RUN_PREFIX, strlen(CGROUP_RUN_PREFIX)))
			continue;
		if (snprintf(p, sizeof(p), "%s/%s", dir, de->d_name) >= (int)sizeof(p))
			continue;
		r = cleanup_below(p, depth - 1);
		if (r > 0)
			removed += r;
	}
	closedir(d);
	return removed;
}

int cgroup_cleanup_tree(const char *mount)
{
	return cleanup_below(mount, 32);
}
