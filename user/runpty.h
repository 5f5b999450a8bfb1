/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * `egressd run`'s command never shares a terminal session with the user's
 * shell. On the shell's terminal the command could push input into the
 * shell with TIOCSTI (the kernel allows it on a process's controlling
 * terminal unless dev.tty.legacy_tiocsti=0; always before Linux 6.2): the
 * shell would run it after egressd exits, outside the cgroup. So the
 * command starts a session of its own; when the user's terminal is stdin
 * and stdout and egressd is in its foreground, the command gets a pseudo-
 * terminal of its own too (as sudo's use_pty), and egressd relays bytes
 * between the two with the user's terminal in raw mode.
 */
#ifndef EGR_RUNPTY_H
#define EGR_RUNPTY_H

#include <pthread.h>
#include <stdbool.h>
#include <sys/types.h>
#include <termios.h>

struct runpty {
	int master;         /* -1: no pseudo-terminal */
	int slave;          /* the command's terminal, closed after the spawn */
	bool tty_fd[3];     /* which of the command's 0/1/2 are the slave */
	struct termios saved; /* the user's terminal before raw mode */
	bool raw;           /* the user's terminal is in raw mode */
	int stop[2];        /* wakes the relay thread: the command exited */
	pthread_t thread;
	bool running;
};

/* Before the spawn: a pseudo-terminal if egressd is in the foreground of
 * a terminal on its stdin and stdout, with that terminal's settings and
 * size. 0 (p->master -1 if not interactive) or -errno. */
int runpty_open(struct runpty *p);

/* In the child: a session of its own, and with a pseudo-terminal that
 * terminal as controlling terminal on the descriptors that were the
 * user's terminal. Async-signal-safe. 0 or -errno. */
int runpty_child(const struct runpty *p);

/* In egressd after the spawn: the user's terminal raw, the relay thread
 * started. No-op without a pseudo-terminal. 0 or -errno. */
int runpty_start(struct runpty *p);

/* SIGWINCH: the user's terminal size to the command's. */
void runpty_winch(struct runpty *p);

/* The command stopped (^Z): the user's terminal back as it was, before
 * egressd stops itself; and raw again once continued. */
void runpty_suspend(struct runpty *p);
void runpty_resume(struct runpty *p);

/*
 * The command's monitor. A session leader's own process group is orphaned
 * (its parent, egressd, is in another session), and the kernel discards
 * ^Z's SIGTSTP there. So the child execs egressd afresh as the monitor
 * (nothing of egressd's memory or descriptors goes with it): it runs the
 * command in a process group of its own (the terminal's foreground),
 * passes egressd's signals on to it, stops when it stops (^Z; egressd then
 * stops too) and exits as it exits, as sudo's monitor does.
 *
 * runpty_monitor_argv: the monitor's argv for the command cmd, errfd the
 * descriptor the command's failed exec writes its errno to; argv has room
 * for n pointers, its numbers go to buf. 0 or -errno. Call before the
 * spawn: the child must not allocate.
 * runpty_monitor_main: `egressd RUNPTY_MONITOR_CMD ...`; the monitor.
 */
#define RUNPTY_MONITOR_CMD "__run-monitor"
int runpty_monitor_argv(const struct runpty *p, int errfd, char *const *cmd,
			char **argv, size_t n, char *buf, size_t buflen);
int runpty_monitor_main(int argc, char **argv);

/* The command exited: what it wrote last is relayed, the relay stops, the
 * user's terminal is restored. Safe to call more than once, also without
 * runpty_start or a pseudo-terminal. */
void runpty_finish(struct runpty *p);

#endif
