// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * make bench, scale: the per-connection work of the burst (burst.py), in C.
 *
 * The Python workers spent ~290 us of CPU per connection and the bed's
 * asyncio port-echo server ~380 us, against ~160 us for egressd: on two
 * cores the burst measured its fixtures. Same protocol, same checks:
 *
 *   burst_worker client K PROCS CONNS SECONDS WINDOW TIMEOUT T0 ADDR LO HI
 *     connection i (i = K, K+PROCS, ...) starts at T0 + i*SECONDS/CONNS
 *     (T0: CLOCK_MONOTONIC seconds, Python's time.monotonic()), goes to
 *     port LO + i mod (HI-LO+1), sends "port?\n" and reads to EOF; the
 *     answer must be that port, else it is an origin mismatch. At most
 *     WINDOW in flight. Prints one JSON line (burst.py's worker result).
 *
 *   burst_worker serve ADDR LO HI
 *     port echo: each connection accepted on port P gets "P\n" once its
 *     first line has arrived, then FIN (the bed server's --echo).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_ERR 16

struct slot {
	int fd;
	int port;
	int reading;
	size_t len;
	char buf[32];
};

static struct {
	const char *name;
	long n;
} errs[MAX_ERR];

static void err_count(const char *name)
{
	int i;

	for (i = 0; i < MAX_ERR && errs[i].name; i++)
		if (!strcmp(errs[i].name, name))
			break;
	if (i == MAX_ERR)
		i = MAX_ERR - 1;
	errs[i].name = name;
	errs[i].n++;
}

static const char *errno_name(int e)
{
	switch (e) {
	case ECONNREFUSED: return "ECONNREFUSED";
	case ECONNRESET: return "ECONNRESET";
	case ETIMEDOUT: return "ETIMEDOUT";
	case EADDRNOTAVAIL: return "EADDRNOTAVAIL";
	case EMFILE: return "EMFILE";
	case EPIPE: return "EPIPE";
	case EHOSTUNREACH: return "EHOSTUNREACH";
	case ENETUNREACH: return "ENETUNREACH";
	case EACCES: return "EACCES";
	case EPERM: return "EPERM";
	default: return "other";
	}
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int client(char **av)
{
	int k = atoi(av[0]), procs = atoi(av[1]), conns = atoi(av[2]);
	double seconds = atof(av[3]), t0 = atof(av[6]);
	int window = atoi(av[4]);
	double timeout = atof(av[5]);
	int lo = atoi(av[8]), nports = atoi(av[9]) - lo + 1;
	double step = seconds / conns, deadline = t0 + seconds + timeout;
	long ok = 0, mismatch = 0, nmine = 0, nxt = 0;
	int active = 0, ex_n = 0, ex[5][2];
	double late_max = 0;
	struct sockaddr_in sa = { .sin_family = AF_INET };
	struct epoll_event evs[64];
	struct slot *slots;
	int *free_slots, nfree, ep, i;
	struct rusage ru;

	if (inet_pton(AF_INET, av[7], &sa.sin_addr) != 1 || window <= 0 || conns <= 0)
		return 2;
	for (i = k; i < conns; i += procs)
		nmine++;
	slots = calloc(window, sizeof(*slots));
	free_slots = calloc(window, sizeof(*free_slots));
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (!slots || !free_slots || ep < 0)
		return 2;
	for (nfree = 0; nfree < window; nfree++)
		free_slots[nfree] = window - 1 - nfree;

	while ((nxt < nmine || active) && now_s() < deadline) {
		double now = now_s(), wait = 0.05;
		int n;

		while (nxt < nmine && active < window && t0 + (k + nxt * procs) * step <= now) {
			long idx = k + nxt * procs;
			double late = (now - (t0 + idx * step)) * 1000;
			struct slot *s;
			int fd;

			nxt++;
			if (late > late_max)
				late_max = late;
			fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
			if (fd < 0) {
				err_count(errno_name(errno));
				continue;
			}
			sa.sin_port = htons(lo + idx % nports);
			if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS) {
				err_count(errno_name(errno));
				close(fd);
				continue;
			}
			s = &slots[free_slots[--nfree]];
			memset(s, 0, sizeof(*s));
			s->fd = fd;
			s->port = lo + idx % nports;
			struct epoll_event ev = { .events = EPOLLOUT, .data.ptr = s };
			if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
				err_count(errno_name(errno));
				close(fd);
				free_slots[nfree++] = s - slots;
				continue;
			}
			active++;
		}
		if (nxt < nmine && active < window) {
			double next = t0 + (k + nxt * procs) * step - now_s();

			if (next < wait)
				wait = next > 0 ? next : 0;
		}
		n = epoll_wait(ep, evs, 64, (int)(wait * 1000 + 0.999));
		for (i = 0; i < n; i++) {
			struct slot *s = evs[i].data.ptr;
			int done = 0, e = 0;
			socklen_t el = sizeof(e);

			if (!s->reading) {
				getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &e, &el);
				if (e) {
					err_count(errno_name(e));
					done = 1;
				} else if (send(s->fd, "port?\n", 6, MSG_NOSIGNAL) != 6) {
					err_count(errno_name(errno));
					done = 1;
				} else {
					struct epoll_event ev = { .events = EPOLLIN, .data.ptr = s };

					s->reading = 1;
					epoll_ctl(ep, EPOLL_CTL_MOD, s->fd, &ev);
				}
			} else {
				ssize_t r = recv(s->fd, s->buf + s->len, sizeof(s->buf) - 1 - s->len, 0);

				if (r > 0 && s->len + r < sizeof(s->buf) - 1) {
					s->len += r;
				} else if (r < 0 && errno == EAGAIN) {
					continue;
				} else if (r < 0) {
					err_count(errno_name(errno));
					done = 1;
				} else {
					char *end;
					long got;

					s->buf[s->len] = '\0';
					got = strtol(s->buf, &end, 10);
					if (r > 0) {
						err_count("bad answer");
					} else if (!s->len) {
						err_count("no answer");
					} else if (end == s->buf || (*end && strcmp(end, "\n"))) {
						err_count("bad answer");
					} else if (got == s->port) {
						ok++;
					} else {
						mismatch++;
						if (ex_n < 5) {
							ex[ex_n][0] = s->port;
							ex[ex_n++][1] = (int)got;
						}
					}
					done = 1;
				}
			}
			if (done) {
				close(s->fd); /* also leaves the epoll set */
				free_slots[nfree++] = s - slots;
				active--;
			}
		}
	}
	for (i = 0; i < window; i++) {
		int used = 1, j;

		for (j = 0; j < nfree; j++)
			if (free_slots[j] == i)
				used = 0;
		if (used) {
			err_count("timeout");
			close(slots[i].fd);
		}
	}
	if (nxt < nmine) {
		err_count("not started (deadline)");
		for (i = 1; i < nmine - nxt; i++)
			err_count("not started (deadline)");
	}
	getrusage(RUSAGE_SELF, &ru);
	printf("{\"ok\": %ld, \"mismatch\": %ld, \"late_ms_max\": %.1f, \"end\": %.6f, "
	       "\"cpu_s\": %.6f, \"mismatch_examples\": [",
	       ok, mismatch, late_max, now_s(),
	       ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	       ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
	for (i = 0; i < ex_n; i++)
		printf("%s[%d, \"%d\"]", i ? ", " : "", ex[i][0], ex[i][1]);
	printf("], \"errors\": {");
	for (i = 0; i < MAX_ERR && errs[i].name; i++)
		printf("%s\"%s\": %ld", i ? ", " : "", errs[i].name, errs[i].n);
	printf("}}\n");
	return 0;
}

static int serve(char **av)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	int lo = atoi(av[1]), hi = atoi(av[2]), ep, p, one = 1;
	struct epoll_event evs[256];

	if (inet_pton(AF_INET, av[0], &sa.sin_addr) != 1 || hi < lo)
		return 2;
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		return 1;
	for (p = lo; p <= hi; p++) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		/* data: fd in the high half, the port in the low 16 bits, bit
		 * 31 set for a listener */
		struct epoll_event ev = { .events = EPOLLIN,
					  .data.u64 = ((uint64_t)fd << 32) | (1ULL << 31) | p };

		sa.sin_port = htons(p);
		if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
		    bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 4096) ||
		    epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev)) {
			perror("burst_worker serve: listen");
			return 1;
		}
	}
	printf("ready\n");
	fflush(stdout);
	for (;;) {
		int n = epoll_wait(ep, evs, 256, -1), i;

		for (i = 0; i < n; i++) {
			uint64_t d = evs[i].data.u64;
			int fd = (int)(d >> 32);

			if (d & (1ULL << 31)) {
				int c;

				while ((c = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0) {
					struct epoll_event ev = { .events = EPOLLIN,
								  .data.u64 = ((uint64_t)c << 32) |
									      (d & 0xffff) };

					if (epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev))
						close(c);
				}
			} else {
				char buf[256], out[16];
				ssize_t r = recv(fd, buf, sizeof(buf), 0);
				int len;

				if (r < 0 && errno == EAGAIN)
					continue;
				if (r > 0 && !memchr(buf, '\n', r))
					continue; /* the line is not complete yet */
				/* The port it was accepted on, as the bed's server. */
				len = snprintf(out, sizeof(out), "%u\n", (unsigned)(d & 0xffff));
				if (r > 0 && send(fd, out, len, MSG_NOSIGNAL) < 0)
					perror("burst_worker serve: send");
				close(fd);
			}
		}
	}
}

int main(int argc, char **argv)
{
	if (argc == 12 && !strcmp(argv[1], "client"))
		return client(argv + 2);
	if (argc == 5 && !strcmp(argv[1], "serve"))
		return serve(argv + 2);
	fprintf(stderr, "usage: burst_worker client K PROCS CONNS SECONDS WINDOW TIMEOUT T0 ADDR LO HI\n"
			"       burst_worker serve ADDR LO HI\n");
	return 2;
}
