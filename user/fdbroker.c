// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * Descriptors between threads whose descriptor tables differ (fdbroker.h).
 *
 * One SOCK_SEQPACKET pair per client: the client end blocks (a call waits
 * for its answer), the broker end is polled. A request is one packet, its
 * descriptors SCM_RIGHTS; so is the answer. The broker never blocks on a
 * client: its answers are a few bytes into an otherwise empty socket.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "fdbroker.h"
#include "log.h"

#define FB_MAX_FDS FDBROKER_MAX_FDS

enum { FB_EXPORT = 1, FB_IMPORT };

struct fb_req {
	uint32_t op;
	uint32_t n;    /* FB_EXPORT: descriptors attached */
	int32_t fd;    /* FB_IMPORT: in the broker's table */
	uint32_t take; /* FB_IMPORT */
	fdbroker_fn fn;
	void *arg;
};

struct fb_rep {
	int32_t ret;
};

struct fdbroker {
	unsigned n;
	int (*ch)[2]; /* [0] the client's end, [1] the broker's */
	int stopfd;
	pthread_t thread;
	bool started;
};

static __thread bool tl_private;

static void close_fds(int *fds, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		if (fds[i] >= 0)
			close(fds[i]);
		fds[i] = -1;
	}
}

ssize_t fdbroker_recv_fds(int s, void *buf, size_t len, int *fds, unsigned want,
			  unsigned *got, int flags)
{
	union {
		char b[CMSG_SPACE(FB_MAX_FDS * sizeof(int))];
		struct cmsghdr align;
	} cbuf;
	struct iovec iov = { .iov_base = buf, .iov_len = len };
	struct msghdr mh = {
		.msg_iov = &iov, .msg_iovlen = 1,
		.msg_control = cbuf.b, .msg_controllen = sizeof(cbuf.b),
	};
	struct cmsghdr *cm;
	unsigned n = 0;
	ssize_t r;

	*got = 0;
	for (unsigned i = 0; i < want; i++)
		fds[i] = -1;
	do
		r = recvmsg(s, &mh, flags | MSG_CMSG_CLOEXEC);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
		size_t k;

		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		k = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < k; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(fd));
			if (n < want)
				fds[n++] = fd;
			else
				close(fd); /* more than asked for: not ours to keep */
		}
	}
	if (mh.msg_flags & MSG_CTRUNC) {
		close_fds(fds, n);
		n = 0;
	}
	*got = n;
	return r;
}

int fdbroker_send_fds(int s, const void *buf, size_t len, const int *fds, unsigned n,
		      int flags)
{
	union {
		char b[CMSG_SPACE(FB_MAX_FDS * sizeof(int))];
		struct cmsghdr align;
	} cbuf;
	struct iovec iov = { .iov_base = (void *)buf, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	ssize_t r;

	if (n) {
		struct cmsghdr *cm;

		memset(&cbuf, 0, sizeof(cbuf));
		mh.msg_control = cbuf.b;
		mh.msg_controllen = CMSG_SPACE(n * sizeof(int));
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(n * sizeof(int));
		memcpy(CMSG_DATA(cm), fds, n * sizeof(int));
	}
	do
		r = sendmsg(s, &mh, flags | MSG_NOSIGNAL);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	return r == (ssize_t)len ? 0 : -EIO;
}

/* ---- the broker thread ------------------------------------------------- */

/* One request from channel s. Returns -1 when the channel is gone (EOF,
 * error): the caller stops polling it. */
static int serve(int s)
{
	struct fb_req q;
	struct fb_rep a = { 0 };
	int fds[FB_MAX_FDS];
	unsigned got;
	ssize_t r;

	r = fdbroker_recv_fds(s, &q, sizeof(q), fds, FB_MAX_FDS, &got, MSG_DONTWAIT);
	if (r == -EAGAIN)
		return 0;
	if (r <= 0) {
		if (r < 0)
			log_error("fdbroker: %s", strerror((int)-r));
		return -1;
	}
	if (r != (ssize_t)sizeof(q)) {
		/* Only our own clients write here; a short packet is a bug. */
		close_fds(fds, got);
		log_error("fdbroker: bad request (%zd bytes)", r);
		return 0;
	}
	if (q.op == FB_EXPORT && q.n <= FB_MAX_FDS && q.fn) {
		if (got != q.n) {
			int tmp[FB_MAX_FDS];

			close_fds(fds, got);
			for (unsigned i = 0; i < q.n; i++)
				tmp[i] = -1;
			a.ret = q.fn(q.arg, tmp, q.n);
		} else {
			a.ret = q.fn(q.arg, fds, q.n);
		}
		fdbroker_send_fds(s, &a, sizeof(a), NULL, 0, 0);
		return 0;
	}
	close_fds(fds, got);
	if (q.op == FB_IMPORT) {
		if (fcntl(q.fd, F_GETFD) < 0) {
			a.ret = -EBADF;
			fdbroker_send_fds(s, &a, sizeof(a), NULL, 0, 0);
			return 0;
		}
		int err = fdbroker_send_fds(s, &a, sizeof(a), &q.fd, 1, 0);

		if (err)
			log_warn("fdbroker: cannot answer an import: %s", strerror(-err));
		if (q.take)
			close(q.fd);
		return 0;
	}
	a.ret = -EINVAL;
	fdbroker_send_fds(s, &a, sizeof(a), NULL, 0, 0);
	return 0;
}

static void *broker_main(void *arg)
{
	struct fdbroker *b = arg;
	struct pollfd *pf;
	sigset_t all;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL);
	pf = calloc(b->n + 1, sizeof(*pf));
	if (!pf) {
		log_error("fdbroker: out of memory");
		return NULL;
	}
	for (unsigned i = 0; i < b->n; i++) {
		pf[i].fd = b->ch[i][1];
		pf[i].events = POLLIN;
	}
	pf[b->n].fd = b->stopfd;
	pf[b->n].events = POLLIN;
	for (;;) {
		if (poll(pf, b->n + 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			log_error("fdbroker: poll: %s", strerror(errno));
			break;
		}
		if (pf[b->n].revents)
			break;
		for (unsigned i = 0; i < b->n; i++) {
			/* POLLHUP/POLLERR without data: serve() sees the end */
			if (pf[i].revents && serve(pf[i].fd) < 0)
				pf[i].fd = -1; /* poll() skips it from now on */
		}
	}
	free(pf);
	return NULL;
}

int fdbroker_create(struct fdbroker **out, unsigned n_clients)
{
	struct fdbroker *b;
	int err;

	*out = NULL;
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->stopfd = -1;
	b->ch = calloc(n_clients ? n_clients : 1, sizeof(*b->ch));
	if (!b->ch) {
		free(b);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < n_clients; i++)
		b->ch[i][0] = b->ch[i][1] = -1;
	b->n = n_clients;
	for (unsigned i = 0; i < n_clients; i++) {
		if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, b->ch[i]) < 0) {
			err = -errno;
			goto fail;
		}
	}
	b->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (b->stopfd < 0) {
		err = -errno;
		goto fail;
	}
	*out = b;
	return 0;
fail:
	fdbroker_destroy(b);
	return err;
}

int fdbroker_start(struct fdbroker *b)
{
	int err;

	if (!b || b->started)
		return -EINVAL;
	err = pthread_create(&b->thread, NULL, broker_main, b);
	if (err)
		return -err;
	thread_name(b->thread, "egressd-fdbrk");
	b->started = true;
	return 0;
}

void fdbroker_destroy(struct fdbroker *b)
{
	uint64_t one = 1;

	if (!b)
		return;
	if (b->started) {
		if (write(b->stopfd, &one, sizeof(one)) < 0)
			log_warn("fdbroker: stop: %s", strerror(errno));
		pthread_join(b->thread, NULL);
	}
	for (unsigned i = 0; i < b->n; i++) {
		if (b->ch[i][0] >= 0)
			close(b->ch[i][0]);
		if (b->ch[i][1] >= 0)
			close(b->ch[i][1]);
	}
	if (b->stopfd >= 0)
		close(b->stopfd);
	free(b->ch);
	free(b);
}

/* ---- the clients ------------------------------------------------------- */

int fdbroker_unshare(struct fdbroker *b, unsigned client)
{
	if (!b || client >= b->n || !b->started)
		return -EINVAL;
	if (unshare(CLONE_FILES) < 0)
		return -errno;
	tl_private = true;
	return 0;
}

bool fdbroker_private(void)
{
	return tl_private;
}

int fdbroker_export(struct fdbroker *b, unsigned client, int *fds, unsigned n,
		    fdbroker_fn fn, void *arg)
{
	struct fb_req q = { .op = FB_EXPORT, .n = n, .fn = fn, .arg = arg };
	struct fb_rep a;
	int err, s, none;
	unsigned got;
	ssize_t r;

	if (!tl_private)
		return fn(arg, fds, n);
	if (!b || client >= b->n || n > FB_MAX_FDS) {
		close_fds(fds, n); /* and sets them to -1 */
		return fn(arg, fds, n);
	}
	s = b->ch[client][0];
	err = fdbroker_send_fds(s, &q, sizeof(q), fds, n, 0);
	close_fds(fds, n); /* the broker has its copies, or nothing crossed */
	if (err) {
		log_warn("fdbroker: cannot hand descriptors over: %s", strerror(-err));
		return fn(arg, fds, n);
	}
	/* fn runs in the broker now: wait for it, whatever happens here. */
	r = fdbroker_recv_fds(s, &a, sizeof(a), &none, 0, &got, 0);
	if (r != (ssize_t)sizeof(a)) {
		log_error("fdbroker: no answer from the broker (%zd)", r);
		return r < 0 ? (int)r : -EIO;
	}
	return a.ret;
}

int fdbroker_import(struct fdbroker *b, unsigned client, int fd, bool take)
{
	struct fb_req q = { .op = FB_IMPORT, .fd = fd, .take = take };
	struct fb_rep a;
	int err, s, got_fd;
	unsigned got;
	ssize_t r;

	if (fd < 0)
		return -EBADF;
	if (!tl_private) {
		if (take)
			return fd;
		got_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
		return got_fd < 0 ? -errno : got_fd;
	}
	if (!b || client >= b->n)
		return -EINVAL;
	s = b->ch[client][0];
	err = fdbroker_send_fds(s, &q, sizeof(q), NULL, 0, 0);
	if (err)
		return err;
	r = fdbroker_recv_fds(s, &a, sizeof(a), &got_fd, 1, &got, 0);
	if (r != (ssize_t)sizeof(a)) {
		if (got)
			close(got_fd);
		return r < 0 ? (int)r : -EIO;
	}
	if (a.ret < 0)
		return a.ret;
	return got ? got_fd : -EMFILE; /* sent, but no room here */
}
