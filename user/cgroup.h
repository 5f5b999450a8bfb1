/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * cgroup v2 handling for `egressd run`: find (or privately mount) the
 * unified hierarchy, create the run's own transient cgroup, empty and
 * remove it, and clean up after runs that were killed.
 *
 * Only cgroups named "egressd.run.<pid>" that egressd created are ever
 * touched; nothing is attached to or changed in a cgroup the machine had.
 */
#ifndef EGR_CGROUP_H
#define EGR_CGROUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CGROUP_RUN_PREFIX "egressd.run."

/* Mount point of the cgroup2 hierarchy. If none is visible (e.g. under
 * `ip netns exec`, which remounts /sys), mounts one in a private mount
 * namespace (call before starting threads). */
int cgroup_find_mount(char *mnt, size_t len, char *err, size_t errlen);
/* The calling process's cgroup path ("/..." relative to the mount). */
int cgroup_self_path(char *path, size_t len);
/* The command's user, whose write access decides where a run's cgroup
 * may go (cgroup_run_parent). */
struct cgroup_user {
	uid_t uid;
	gid_t gid;
	const gid_t *groups; /* supplementary groups */
	int n_groups;
	/* --allow-root-agent: root passes every permission check and can
	 * leave any cgroup anyway; only cgroups a user other than root
	 * could write are avoided, and the mount's root is never refused. */
	bool root;
};
/*
 * A process may move itself into another cgroup if its user can write the
 * cgroup.procs of the destination and of the common ancestor of the two
 * (the kernel's cgroup_procs_write_permission): one writable ancestor, at
 * any height, is a way out of the cgroup below it. parent: the cgroup
 * egressd was started from (a path below mnt, or mnt itself); on return,
 * where the run's cgroup goes: unchanged if the user can write none of
 * parent and its ancestors up to mnt, else the parent of the highest one
 * it can write. -EACCES (parent unchanged) if the user can write mnt's
 * root itself (a cgroup namespace whose root is delegated to it): no place
 * in this hierarchy keeps the command in.
 */
int cgroup_run_parent(const char *mnt, char *parent, const struct cgroup_user *u);
/*
 * A run holds flock(LOCK_EX) on its cgroup's directory, and on its CA
 * directory, for as long as it lives; the kernel drops it when the run dies,
 * SIGKILL included. Only root may open those directories (mode 0711), so
 * nothing the command starts can hold the lock in a dead run's place; the
 * fds are O_CLOEXEC and the command gets none of them. The pid in a
 * leftover's name (egressd.run.<pid>) does not make it live: a dead run's
 * pid can be taken by anything, a process of its own command named
 * "egressd" included. Only a ROOT process named egressd under that pid
 * keeps it (a run of an egressd from before the lock holds none; the
 * command cannot be root).
 */
/* Take the lock on an open directory: 0, or -EWOULDBLOCK if it is held. */
int cgroup_run_lock(int fd);
/* Open the directory at path and take its lock: the fd, or -EWOULDBLOCK
 * (held), -ESTALE (path is another directory by the time it was locked:
 * removed and made again), -errno. */
int cgroup_lock_dir(const char *path);
/* path's run (pid: the one in its name) is gone: an fd holding its lock
 * (close it once path is removed); -EWOULDBLOCK while it lives; -errno. */
int cgroup_run_claim(const char *path, int pid);
/* mkdir <parent>/egressd.run.<pid> (0711) and take its lock; returns the
 * O_DIRECTORY fd holding it, to keep open for the run's whole life. A
 * leftover of a killed run with our pid is emptied and taken over. */
int cgroup_create(const char *parent, char *path_out, size_t len, int *fd_out);
uint64_t cgroup_id(const char *path); /* 0 on error */
/* Kill every process in the cgroup (cgroup.kill, or SIGKILL each pid on
 * kernels before 5.14) and wait up to timeout_ms for it to become empty. */
int cgroup_kill_all(const char *path, int timeout_ms);
int cgroup_remove(const char *path);
/* Remove egressd.run.* cgroups under parent whose run is gone (their lock
 * is free), killing what is left in them.
 * Returns how many were removed. */
int cgroup_cleanup_stale(const char *parent);
/* The same under every cgroup of the hierarchy at mount (a run makes its
 * cgroup below the cgroup it was started from, or higher, anywhere). */
int cgroup_cleanup_tree(const char *mount);

#endif
