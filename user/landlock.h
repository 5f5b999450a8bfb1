/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * Landlock scoping of `egressd run`'s command (docs/local.md): the command
 * and everything it starts may ptrace (ptrace, /proc/PID/mem and environ,
 * process_vm_*, pidfd_getfd) only processes of its own run (Landlock ABI
 * 2+, Linux 5.19), and signal them and connect to abstract Unix sockets
 * only they created (ABI 6+, Linux 6.12). Below ABI 6 the domain refuses
 * mounts too (nested sandboxes); from 6 on it touches nothing else. Processes of the same user outside the
 * cgroup are not redirected: without this, the command could drive one of
 * them to connect for it. Unprivileged, inherited across fork and exec,
 * never lifted.
 */
#ifndef EGR_LANDLOCK_H
#define EGR_LANDLOCK_H

/* The kernel's Landlock ABI version, or -ENOSYS / -EOPNOTSUPP (not built
 * in, not enabled at boot, or refused by a seccomp filter). */
int landlock_abi(void);

/* A ruleset of the scoping above for this kernel's ABI: a descriptor
 * (close-on-exec) or -errno (-EOPNOTSUPP also for ABI 1, whose domains
 * refuse renames across directories). *abi gets the version. */
int landlock_scope_ruleset(int *abi);

/* The ruleset as made for Landlock ABI abi (<= the kernel's): tests. */
int landlock_ruleset_for(int abi);

/* Put the calling thread (the child, before exec) under the ruleset. Needs
 * no_new_privs (or CAP_SYS_ADMIN). 0 or -errno. */
int landlock_scope_apply(int ruleset_fd);

/* `egressd scope [--] CMD [ARG...]`: CMD under the scoping above. */
int scope_main(int argc, char **argv);

/* The ABI where connecting to abstract Unix sockets and signalling are
 * scoped too. */
#define LANDLOCK_ABI_SCOPES 6

#endif
