// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "landlock.h"
#include "log.h"
#include "runpty.h"

/* The user's terminal: the first of 0, 1, 2 that is one, or -1. */
static int user_tty(const struct runpty *p)
{
	for (int i = 0; i < 3; i++)
		if (p->tty_fd[i])
			return i;
	return -1;
}

/*
 * Whether egressd relays what the user types, and takes the terminal raw:
 * stdin and stdout both the terminal (not a pipeline such as `| less`,
 * whose reader owns the keyboard), and egressd in its foreground (a
 * background job's read or tcsetattr would stop it, SIGTTIN/SIGTTOU).
 * Asked again at every turn: the user can move egressd between the two.
 */
static bool interactive_now(const struct runpty *p)
{
	return p->tty_fd[0] && p->tty_fd[1] && tcgetpgrp(STDIN_FILENO) == getpgrp();
}

int runpty_open(struct runpty *p)
{
	char name[128];
	struct winsize ws;
	int i, err, tty;

	memset(p, 0, sizeof(*p));
	p->master = p->slave = -1;
	p->stop[0] = p->stop[1] = -1;
	for (i = 0; i < 3; i++)
		p->tty_fd[i] = isatty(i);
	/* egressd's controlling terminal: the one /dev/tty would open */
	i = open("/dev/tty", O_RDONLY | O_NOCTTY | O_CLOEXEC);
	if (i >= 0) {
		p->session = true;
		close(i);
	}
	/* No terminal on 0/1/2 (a CI job, a pipe, a file): a session of its
	 * own, if egressd has a terminal, keeps the command away from it. */
	tty = user_tty(p);
	if (tty < 0 || tcgetattr(tty, &p->saved)) {
		memset(p->tty_fd, 0, sizeof(p->tty_fd));
		return 0;
	}
	p->session = true; /* TIOCSCTTY needs a session leader */
	/* Any terminal on 0, 1 or 2 becomes the command's own: on the user's
	 * it could also read what the user types to the shell, without a
	 * controlling terminal to stop it (SIGTTIN) when in the background. */
	p->master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (p->master < 0)
		return -errno;
	if (grantpt(p->master) || unlockpt(p->master) ||
	    ptsname_r(p->master, name, sizeof(name)))
		goto fail;
	p->slave = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (p->slave < 0)
		goto fail;
	/* The command sees the user's settings (echo, line editing) and size. */
	if (tcsetattr(p->slave, TCSANOW, &p->saved))
		goto fail;
	if (!ioctl(tty, TIOCGWINSZ, &ws))
		ioctl(p->slave, TIOCSWINSZ, &ws);
	if (pipe2(p->stop, O_CLOEXEC))
		goto fail;
	return 0;
fail:
	err = -errno;
	runpty_finish(p);
	return err;
}

int runpty_child_session(const struct runpty *p)
{
	if (!p->session)
		return 0;
	return setsid() < 0 ? -errno : 0;
}

int runpty_child_terminal(const struct runpty *p)
{
	int i;

	if (p->master < 0)
		return 0;
	if (ioctl(p->slave, TIOCSCTTY, 0))
		return -errno;
	for (i = 0; i < 3; i++)
		if (p->tty_fd[i] && dup2(p->slave, i) < 0)
			return -errno;
	return 0;
}

/* The signals the monitor passes on to the command's process group:
 * RUNPTY_FORWARDED, the ones egressd passes on to the monitor. */
static const int monitor_signals[] = { RUNPTY_FORWARDED };

int runpty_monitor_argv(const struct runpty *p, int errfd, char *const *cmd,
			char **argv, size_t n, char *buf, size_t buflen)
{
	size_t i = 0, k;
	int tty = -1, len;

	if (p->master >= 0)
		tty = user_tty(p);
	len = snprintf(buf, buflen, "%d%c%d", tty, '\0', errfd);
	if (len < 0 || (size_t)len >= buflen)
		return -ENAMETOOLONG;
	for (k = 0; cmd[k]; k++)
		;
	if (k + 6 > n)
		return -E2BIG;
	argv[i++] = "egressd";
	argv[i++] = RUNPTY_MONITOR_CMD;
	argv[i++] = buf;
	argv[i++] = buf + strlen(buf) + 1;
	argv[i++] = "--";
	for (k = 0; cmd[k]; k++)
		argv[i++] = cmd[k];
	argv[i] = NULL;
	return 0;
}

static int parse_fd(const char *s, int min)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || end == s || v < min || v > 1 << 20)
		return -2;
	return (int)v;
}

int runpty_monitor_main(int argc, char **argv)
{
	sigset_t set, none;
	int sync[2], tty, errfd, i, status, e[2];
	bool stopped = false;
	siginfo_t si;
	pid_t cmd;
	char c;

	/* argv: RUNPTY_MONITOR_CMD TTY ERRFD -- CMD [ARG...] */
	if (argc < 5 || strcmp(argv[3], "--") || (tty = parse_fd(argv[1], -1)) < -1 ||
	    (errfd = parse_fd(argv[2], 0)) < 0) {
		fprintf(stderr, "egressd: %s is egressd run's own, not a command\n",
			RUNPTY_MONITOR_CMD);
		return 2;
	}
	argv += 4;
	prctl(PR_SET_NAME, "egressd-monitor");
	fcntl(errfd, F_SETFD, FD_CLOEXEC);
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	for (i = 0; i < (int)(sizeof(monitor_signals) / sizeof(monitor_signals[0])); i++)
		sigaddset(&set, monitor_signals[i]);
	if (sigprocmask(SIG_BLOCK, &set, NULL) || pipe2(sync, O_CLOEXEC))
		goto fail;
	cmd = fork();
	if (cmd < 0)
		goto fail;
	if (cmd == 0) {
		close(sync[1]);
		setpgid(0, 0);
		/* wait for the monitor to make this group the terminal's
		 * foreground, or the first read would stop it */
		while (read(sync[0], &c, 1) < 0 && errno == EINTR)
			;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		/* A Landlock domain of its own below the monitor's (scopes:
		 * Linux 6.12+): the command cannot signal the monitor, whose
		 * SIGSTOP would stop egressd with it while the command runs
		 * on. The monitor still signals the command. Best effort. */
		{
			int abi, rs = landlock_scope_ruleset(&abi);

			if (rs >= 0) {
				/* on failure the command runs in the monitor's domain */
				if (abi >= LANDLOCK_ABI_SCOPES)
					(void)landlock_scope_apply(rs);
				close(rs);
			}
		}
		execvp(argv[0], argv);
		e[0] = RUNPTY_FAIL_EXEC;
		e[1] = errno;
		if (write(errfd, e, sizeof(e)) < 0) {
			/* egressd then sees exit status 127 alone */
		}
		_exit(127);
	}
	close(sync[0]);
	close(errfd); /* the command's copy reports its exec */
	setpgid(cmd, cmd);
	if (tty >= 0) {
		signal(SIGTTOU, SIG_IGN);
		tcsetpgrp(tty, cmd);
	}
	close(sync[1]);
	/* nothing of the command's terminal or pipes stays open here */
	for (i = 0; i < 3; i++)
		if (i != tty)
			close(i);
	for (;;) {
		if (sigwaitinfo(&set, &si) < 0)
			continue;
		if (si.si_signo != SIGCHLD) {
			/* the terminal's foreground back to the command's
			 * group after a stop; any other time it is the
			 * command's (a shell's job control) to move */
			if (si.si_signo == SIGCONT && stopped && tty >= 0)
				tcsetpgrp(tty, cmd);
			if (si.si_signo == SIGCONT)
				stopped = false;
			kill(-cmd, si.si_signo);
			continue;
		}
		if (waitpid(cmd, &status, WNOHANG | WUNTRACED) != cmd)
			continue;
		if (WIFSTOPPED(status)) {
			/* ^Z on the command's terminal: egressd sees this
			 * and stops too; its SIGCONT comes back here, for the
			 * command. Without a terminal nobody would continue
			 * them: the command stays stopped, on its own. */
			if (tty >= 0) {
				stopped = true;
				raise(SIGSTOP);
			}
			continue;
		}
		if (WIFEXITED(status))
			return WEXITSTATUS(status);
		/* the same death, so egressd reports 128+N; no core of this
		 * process (the command's own was dumped already, if any),
		 * and no other pending signal first */
		{
			struct rlimit none = { 0, 0 };
			sigset_t only;

			setrlimit(RLIMIT_CORE, &none);
			signal(WTERMSIG(status), SIG_DFL);
			sigfillset(&only);
			sigdelset(&only, WTERMSIG(status));
			sigprocmask(SIG_SETMASK, &only, NULL);
			kill(getpid(), WTERMSIG(status));
		}
		return 128 + WTERMSIG(status);
	}
fail:
	e[0] = RUNPTY_FAIL_MONITOR;
	e[1] = errno;
	if (write(errfd, e, sizeof(e)) < 0) {
		/* nothing more to do */
	}
	return 126;
}

static void write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return; /* the user's terminal is gone: drop */
		buf += n;
		len -= (size_t)n;
	}
}

/*
 * User's terminal -> master (typed input, non-blocking master: a command
 * that reads nothing cannot stall its own output) and master -> user's
 * terminal. Told to stop, it relays what is left to read and returns.
 */
static void *relay_main(void *arg)
{
	struct runpty *p = arg;
	char in[4096], out[16384];
	size_t ilen = 0, ioff = 0;
	bool in_open = p->tty_fd[0], stopping = false;
	int drained = 0, ofd = p->tty_fd[1] ? 1 : p->tty_fd[2] ? 2 : 0;

	for (;;) {
		bool want_in = in_open && !ilen && !stopping && interactive_now(p);
		struct pollfd fds[3] = {
			{ .fd = want_in ? STDIN_FILENO : -1, .events = POLLIN },
			{ .fd = p->master, .events = POLLIN | (ilen && !stopping ? POLLOUT : 0) },
			{ .fd = stopping ? -1 : p->stop[0], .events = POLLIN },
		};
		ssize_t n;
		int avail = 0;
		/* not interactive: look again now and then (fg, a pipeline's
		 * reader gone) rather than block on stdin */
		int r = poll(fds, 3, stopping ? 0 : want_in || !in_open ? -1 : 500);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break; /* stopping and nothing left to read, or poll failed */
		if (fds[2].revents)
			stopping = true;
		/* only what is there: another reader of the terminal may
		 * have taken it since poll, and a blocking read would hang */
		if (fds[0].revents && (ioctl(STDIN_FILENO, FIONREAD, &avail) || avail > 0 ||
				       (fds[0].revents & (POLLHUP | POLLERR)))) {
			n = read(STDIN_FILENO, in,
				 avail > 0 && (size_t)avail < sizeof(in) ? (size_t)avail : sizeof(in));
			if (n > 0) {
				ilen = (size_t)n;
				ioff = 0;
			} else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
				in_open = false; /* hung up: the command reads EOF-less */
			}
		}
		if ((fds[1].revents & POLLOUT) && ilen) {
			n = write(p->master, in + ioff, ilen - ioff);
			if (n > 0) {
				ioff += (size_t)n;
				if (ioff == ilen)
					ilen = 0;
			} else if (n < 0 && errno != EAGAIN && errno != EINTR) {
				ilen = 0;
			}
		}
		if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
			n = read(p->master, out, sizeof(out));
			if (n > 0)
				write_all(ofd, out, (size_t)n);
			else if (n < 0 && (errno == EAGAIN || errno == EINTR))
				continue;
			else
				break; /* EIO: nothing holds the command's terminal */
			/* what a leftover background process keeps writing after
			 * the command exited is cut off (the cgroup is killed) */
			if (stopping && ++drained > 256)
				break;
		}
	}
	return NULL;
}

int runpty_start(struct runpty *p)
{
	struct termios raw;
	int err;

	if (p->master < 0)
		return 0;
	close(p->slave);
	p->slave = -1;
	if (fcntl(p->master, F_SETFL, O_NONBLOCK))
		return -errno;
	/* Raw input (^C, ^Z and ^D go to the command's terminal, which turns
	 * them into its signals and EOF), output as before: egressd's own
	 * lines on stderr still end their lines. In the background, later
	 * (runpty_resume, when continued in the foreground). */
	if (interactive_now(p)) {
		raw = p->saved;
		cfmakeraw(&raw);
		raw.c_oflag = p->saved.c_oflag;
		if (tcsetattr(STDIN_FILENO, TCSADRAIN, &raw))
			return -errno;
		p->raw = true;
	}
	err = pthread_create(&p->thread, NULL, relay_main, p);
	if (err) {
		runpty_suspend(p);
		return -err;
	}
	p->running = true;
	return 0;
}

void runpty_winch(struct runpty *p)
{
	struct winsize ws;

	if (p->master >= 0 && !ioctl(user_tty(p), TIOCGWINSZ, &ws))
		ioctl(p->master, TIOCSWINSZ, &ws);
}

void runpty_suspend(struct runpty *p)
{
	/* In the background (stopped and continued from outside, then bg)
	 * it is the foreground job's terminal now: left alone, as a
	 * tcsetattr would stop egressd (SIGTTOU) or undo that job's modes. */
	if (p->raw && tcgetpgrp(STDIN_FILENO) == getpgrp())
		tcsetattr(STDIN_FILENO, TCSADRAIN, &p->saved);
	p->raw = false;
}

void runpty_resume(struct runpty *p)
{
	struct termios raw;

	if (p->master < 0 || !p->running)
		return;
	runpty_winch(p);
	if (p->raw || !interactive_now(p))
		return;
	raw = p->saved;
	cfmakeraw(&raw);
	raw.c_oflag = p->saved.c_oflag;
	if (!tcsetattr(STDIN_FILENO, TCSADRAIN, &raw))
		p->raw = true;
}

void runpty_finish(struct runpty *p)
{
	if (p->running) {
		struct timespec until;

		if (write(p->stop[1], "x", 1) < 0)
			log_warn("cannot stop the terminal relay: %s", strerror(errno));
		/* its last drain is bounded; a write to a terminal that no
		 * longer drains (^S) is not: cut it off */
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += 2;
		if (pthread_timedjoin_np(p->thread, NULL, &until)) {
			pthread_cancel(p->thread);
			pthread_join(p->thread, NULL);
		}
		p->running = false;
	}
	runpty_suspend(p);
	if (p->master >= 0)
		close(p->master);
	if (p->slave >= 0)
		close(p->slave);
	if (p->stop[0] >= 0)
		close(p->stop[0]);
	if (p->stop[1] >= 0)
		close(p->stop[1]);
	p->master = p->slave = p->stop[0] = p->stop[1] = -1;
}
