// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "landlock.h"

#ifndef __NR_landlock_create_ruleset
#define __NR_landlock_create_ruleset 444
#endif
#ifndef __NR_landlock_restrict_self
#define __NR_landlock_restrict_self 446
#endif

/* From include/uapi/linux/landlock.h (6.12); Debian 12's headers predate
 * the scoped field. A kernel older than a field takes the struct as long
 * as the fields it does not know are zero. */
struct egr_landlock_ruleset_attr {
	uint64_t handled_access_fs;
	uint64_t handled_access_net;
	uint64_t scoped;
};

#define EGR_LANDLOCK_CREATE_RULESET_VERSION (1U << 0)
#define EGR_LANDLOCK_ACCESS_FS_MAKE_BLOCK (1ULL << 11)
#define EGR_LANDLOCK_ACCESS_FS_REFER (1ULL << 13)
#define EGR_LANDLOCK_RULE_PATH_BENEATH 1

struct egr_landlock_path_beneath_attr {
	uint64_t allowed_access;
	int32_t parent_fd;
} __attribute__((packed));

#ifndef __NR_landlock_add_rule
#define __NR_landlock_add_rule 445
#endif
#define EGR_LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET (1ULL << 0)
#define EGR_LANDLOCK_SCOPE_SIGNAL (1ULL << 1)

int landlock_abi(void)
{
	long abi = syscall(__NR_landlock_create_ruleset, NULL, 0,
			   EGR_LANDLOCK_CREATE_RULESET_VERSION);

	if (abi >= 0)
		return (int)abi;
	/* a seccomp filter (a container runtime's) that refuses the call
	 * means the same as no Landlock */
	return errno == EPERM ? -EOPNOTSUPP : -errno;
}

int landlock_scope_ruleset(int *abi)
{
	*abi = landlock_abi();
	return *abi < 0 ? *abi : landlock_ruleset_for(*abi);
}

int landlock_ruleset_for(int abi)
{
	struct egr_landlock_ruleset_attr attr = { 0 };
	struct egr_landlock_path_beneath_attr root;
	long fd;
	int err;

	if (abi >= LANDLOCK_ABI_SCOPES) {
		/* Scopes alone: a domain that handles no file access leaves
		 * files, renames and mounts as they were. */
		attr.scoped = EGR_LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | EGR_LANDLOCK_SCOPE_SIGNAL;
	} else if (abi >= 2) {
		/* Before scopes a domain must handle a file access to exist
		 * (the domain itself is what limits ptrace). Creating block
		 * devices (which needs CAP_MKNOD too) and REFER (renames and
		 * links across directories, denied in any such domain unless
		 * handled and granted), both granted below "/": files work as
		 * before. Mounts are refused in such a domain all the same
		 * (nested sandboxes such as bubblewrap cannot start). */
		attr.handled_access_fs = EGR_LANDLOCK_ACCESS_FS_MAKE_BLOCK |
					 EGR_LANDLOCK_ACCESS_FS_REFER;
	} else {
		/* ABI 1 refuses cross-directory renames in any domain: not
		 * worth what it would break */
		return -EOPNOTSUPP;
	}
	fd = syscall(__NR_landlock_create_ruleset, &attr, sizeof(attr), 0);
	if (fd < 0)
		return -errno;
	if (!attr.handled_access_fs)
		return (int)fd;
	root.allowed_access = attr.handled_access_fs;
	root.parent_fd = open("/", O_PATH | O_CLOEXEC);
	if (root.parent_fd < 0 ||
	    syscall(__NR_landlock_add_rule, (int)fd, EGR_LANDLOCK_RULE_PATH_BENEATH, &root, 0)) {
		err = -errno;
		if (root.parent_fd >= 0)
			close(root.parent_fd);
		close((int)fd);
		return err;
	}
	close(root.parent_fd);
	return (int)fd;
}

int landlock_scope_apply(int ruleset_fd)
{
	return syscall(__NR_landlock_restrict_self, ruleset_fd, 0) ? -errno : 0;
}

static void scope_usage(FILE *out)
{
	fprintf(out,
"Usage: egressd scope [--] CMD [ARG...]\n"
"\n"
"Run CMD so that it and everything it starts can ptrace (also\n"
"/proc/PID/mem and environ, process_vm_*, pidfd_getfd), signal and reach\n"
"the abstract Unix sockets of its own processes only (Landlock: ptrace\n"
"from Linux 5.19, where mounts are refused too before 6.12; signals and\n"
"sockets from 6.12). For agents that egressd does not start\n"
"itself: agent@.service runs each agent this way, so that agents of one\n"
"user, each in its own cgroup under its own policy, cannot drive each\n"
"other's processes. Needs no privilege. `egressd run` does the same for\n"
"its command. It also sets no_new_privs: setuid programs do not elevate.\n"
"\n"
"Exit status: CMD's; 2 for a usage error; 126 if the scoping cannot be\n"
"applied or CMD cannot be run; 127 if CMD is not found.\n");
}

int scope_main(int argc, char **argv)
{
	bool dashdash = false;
	int abi, fd, e;

	if (argc > 1 && (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))) {
		scope_usage(stdout);
		return 0;
	}
	argv++;
	argc--;
	if (argc > 0 && !strcmp(argv[0], "--")) {
		argv++;
		argc--;
		dashdash = true;
	}
	if (argc < 1 || (!dashdash && argv[0][0] == '-')) {
		if (argc > 0)
			fprintf(stderr, "egressd scope: unknown option '%s'\n\n", argv[0]);
		scope_usage(stderr);
		return 2;
	}
	/* Landlock needs no_new_privs from an unprivileged caller; a setuid
	 * program must not give CMD a way out anyway. */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)) {
		fprintf(stderr, "egressd scope: cannot set no_new_privs: %s\n", strerror(errno));
		return 126;
	}
	fd = landlock_scope_ruleset(&abi);
	if (fd == -ENOSYS || fd == -EOPNOTSUPP) {
		fprintf(stderr, "egressd scope: warning: Landlock is not available (Linux 5.19+ "
			"with Landlock enabled, not refused by seccomp): %s runs unscoped\n",
			argv[0]);
	} else if (fd < 0) {
		fprintf(stderr, "egressd scope: cannot create a Landlock ruleset: %s\n",
			strerror(-fd));
		return 126;
	} else {
		if (abi < LANDLOCK_ABI_SCOPES)
			fprintf(stderr, "egressd scope: warning: Landlock ABI %d (Linux < 6.12): "
				"only ptrace is scoped, not signals or abstract Unix sockets, "
				"and mounts are refused\n", abi);
		e = landlock_scope_apply(fd);
		close(fd);
		if (e) {
			fprintf(stderr, "egressd scope: cannot apply the Landlock ruleset: %s\n",
				strerror(-e));
			return 126;
		}
	}
	execvp(argv[0], argv);
	e = errno;
	fprintf(stderr, "egressd scope: cannot run %s: %s\n", argv[0], strerror(e));
	return e == ENOENT ? 127 : 126;
}
