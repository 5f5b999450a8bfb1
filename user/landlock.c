// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
#include <errno.h>
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
#define EGR_LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET (1ULL << 0)
#define EGR_LANDLOCK_SCOPE_SIGNAL (1ULL << 1)

int landlock_abi(void)
{
	long abi = syscall(__NR_landlock_create_ruleset, NULL, 0,
			   EGR_LANDLOCK_CREATE_RULESET_VERSION);

	return abi < 0 ? -errno : (int)abi;
}

int landlock_scope_ruleset(int *abi)
{
	struct egr_landlock_ruleset_attr attr = {
		/* A domain needs a handled right. Creating block devices
		 * (which also needs CAP_MKNOD) is one no agent uses: denied
		 * with no rule granting it, nothing else about files is
		 * touched. The domain itself is what limits ptrace. */
		.handled_access_fs = EGR_LANDLOCK_ACCESS_FS_MAKE_BLOCK,
	};
	long fd;

	*abi = landlock_abi();
	if (*abi < 0)
		return *abi;
	if (*abi >= LANDLOCK_ABI_SCOPES)
		attr.scoped = EGR_LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | EGR_LANDLOCK_SCOPE_SIGNAL;
	fd = syscall(__NR_landlock_create_ruleset, &attr, sizeof(attr), 0);
	return fd < 0 ? -errno : (int)fd;
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
"the abstract Unix sockets of its own processes only (Landlock; signals\n"
"and sockets need Linux 6.12). For agents that egressd does not start\n"
"itself: agent@.service runs each agent this way, so that agents of one\n"
"user, each in its own cgroup under its own policy, cannot drive each\n"
"other's processes. Needs no privilege. `egressd run` does the same for\n"
"its command.\n"
"\n"
"Exit status: CMD's; 126 if CMD cannot be run, 127 if it is not found.\n");
}

int scope_main(int argc, char **argv)
{
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
	}
	if (argc < 1 || argv[0][0] == '-') {
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
		fprintf(stderr, "egressd scope: warning: Landlock is not available on this kernel: "
			"%s runs unscoped\n", argv[0]);
	} else if (fd < 0) {
		fprintf(stderr, "egressd scope: cannot create a Landlock ruleset: %s\n",
			strerror(-fd));
		return 126;
	} else {
		if (abi < LANDLOCK_ABI_SCOPES)
			fprintf(stderr, "egressd scope: warning: Landlock ABI %d (Linux < 6.12): "
				"only ptrace is scoped, not signals or abstract Unix sockets\n", abi);
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
