/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * `egressd run`'s command never shares a terminal session with the user's
 * shell. On the shell's terminal the command could push input into the
 * shell with TIOCSTI (the kernel allows it on a process's controlling
 * terminal unless dev.tty.legacy_tiocsti=0; always before Linux 6.2): the
 * shell would run it after egressd exits, outside the cgroup. So the
 * command starts a session of its own; where any of its 0/1/2 is a
 * terminal, it gets a pseudo-terminal of its own instead (as sudo's
 * use_pty), and egressd relays between the two: output always, input and
 * raw mode while stdin and stdout are the terminal and egressd is in its
 * foreground.
 */
#ifndef EGR_RUNPTY_H
#define EGR_RUNPTY_H

#include <pthread.h>
#include <stdbool.h>
#include <signal.h>
#include <sys/types.h>
#include <termios.h>

struct runpty {
	int master;         /* -1: no pseudo-terminal */
	bool session;       /* the command gets a session of its own */
	int slave;          /* the command's terminal, closed after the spawn */
	bool tty_fd[3];     /* which of the command's 0/1/2 are the slave */
	struct termios saved; /* the user's terminal before raw mode */
	bool raw;           /* the user's terminal is in raw mode */
	int stop[2];        /* wakes the relay thread: the command exited */
	pthread_t thread;
	bool running;
};

/* Before the spawn: a pseudo-terminal if any of 0/1/2 is a terminal, with
 * its settings and size; a session of the command's own if it gets one or
 * egressd has a controlling terminal (the terminal TIOCSTI would reach).
 * With neither (CI, a service), the command stays in egressd's session:
 * a session is also a scheduler autogroup, and a new one would split the
 * CPU between the agent and the proxy it talks through. 0 (p->master -1
 * if no pseudo-terminal) or -errno. */
int runpty_open(struct runpty *p);

/* In the child (async-signal-safe, 0 or -errno): first a session of its
 * own (if p->session); later, with a pseudo-terminal, that as its
 * controlling terminal on the descriptors that were the user's terminal. */
int runpty_child_session(const struct runpty *p);
int runpty_child_terminal(const struct runpty *p);

/* The signals egressd passes on to the monitor and the monitor to the
 * command: the ones a terminal, a supervisor or a timer sends. */
#define RUNPTY_FORWARDED                                                        \
	SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCONT, \
	SIGTSTP, SIGALRM, SIGVTALRM, SIGPROF, SIGPWR

/* What failed, as the child and the monitor report it on errfd (two
 * ints: this, errno): egressd's message names it. */
enum {
	RUNPTY_FAIL_SETUP = 1,   /* the child: session, user, Landlock */
	RUNPTY_FAIL_MONITOR = 2, /* the monitor: its exec or its start */
	RUNPTY_FAIL_EXEC = 3,    /* the command's exec */
};

/* In egressd after the spawn: the relay thread started, the user's
 * terminal raw if interactive. No-op without a pseudo-terminal. 0 or
 * -errno. */
int runpty_start(struct runpty *p);

/* SIGWINCH: the user's terminal size to the command's. */
void runpty_winch(struct runpty *p);

/* The command stopped (^Z): the user's terminal back as it was (if egressd
 * is in its foreground), before egressd stops itself; and raw again once
 * continued in the foreground. */
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
