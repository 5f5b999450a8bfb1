// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * Attacker for the io_uring_connect_redirected case: connects with
 * IORING_OP_CONNECT and sends an HTTP request with IORING_OP_SEND, so no
 * connect()/send() system call is ever made by the process. The cgroup
 * connect hooks must still see the connection (io_uring goes through the
 * same ->connect path, possibly from an io-wq worker).
 *
 * Raw syscalls and <linux/io_uring.h> only, no liburing.
 *
 * usage: uring_connect ADDR PORT HOST
 * prints the reply (or "error: ...") on stdout; exit 0 if a reply came.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <linux/io_uring.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

struct ring {
	int fd;
	unsigned *sq_tail, *sq_mask, *sq_array;
	unsigned *cq_head, *cq_tail, *cq_mask;
	struct io_uring_sqe *sqes;
	struct io_uring_cqe *cqes;
};

static int ring_init(struct ring *r, unsigned entries)
{
	struct io_uring_params p;
	size_t sq_sz, cq_sz;
	void *sq, *cq;

	memset(&p, 0, sizeof(p));
	r->fd = (int)syscall(__NR_io_uring_setup, entries, &p);
	if (r->fd < 0)
		return -errno;
	sq_sz = p.sq_off.array + p.sq_entries * sizeof(unsigned);
	cq_sz = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
	if (p.features & IORING_FEAT_SINGLE_MMAP) {
		if (cq_sz > sq_sz)
			sq_sz = cq_sz;
		cq_sz = sq_sz;
	}
	sq = mmap(NULL, sq_sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
		  r->fd, IORING_OFF_SQ_RING);
	if (sq == MAP_FAILED)
		return -errno;
	if (p.features & IORING_FEAT_SINGLE_MMAP) {
		cq = sq;
	} else {
		cq = mmap(NULL, cq_sz, PROT_READ | PROT_WRITE,
			  MAP_SHARED | MAP_POPULATE, r->fd, IORING_OFF_CQ_RING);
		if (cq == MAP_FAILED)
			return -errno;
	}
	r->sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe),
		       PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
		       r->fd, IORING_OFF_SQES);
	if (r->sqes == MAP_FAILED)
		return -errno;
	r->sq_tail = (unsigned *)((char *)sq + p.sq_off.tail);
	r->sq_mask = (unsigned *)((char *)sq + p.sq_off.ring_mask);
	r->sq_array = (unsigned *)((char *)sq + p.sq_off.array);
	r->cq_head = (unsigned *)((char *)cq + p.cq_off.head);
	r->cq_tail = (unsigned *)((char *)cq + p.cq_off.tail);
	r->cq_mask = (unsigned *)((char *)cq + p.cq_off.ring_mask);
	r->cqes = (struct io_uring_cqe *)((char *)cq + p.cq_off.cqes);
	return 0;
}

/* Submit one SQE and wait for its completion; returns cqe->res. */
static int ring_run(struct ring *r, const struct io_uring_sqe *in)
{
	unsigned tail = *r->sq_tail, idx = tail & *r->sq_mask, head;
	int res;

	r->sqes[idx] = *in;
	r->sq_array[idx] = idx;
	__atomic_store_n(r->sq_tail, tail + 1, __ATOMIC_RELEASE);
	for (;;) {
		if (syscall(__NR_io_uring_enter, r->fd, 1, 1,
			    IORING_ENTER_GETEVENTS, NULL, 0) < 0 && errno != EINTR)
			return -errno;
		head = __atomic_load_n(r->cq_head, __ATOMIC_ACQUIRE);
		if (head != __atomic_load_n(r->cq_tail, __ATOMIC_ACQUIRE))
			break;
	}
	res = r->cqes[head & *r->cq_mask].res;
	__atomic_store_n(r->cq_head, head + 1, __ATOMIC_RELEASE);
	return res;
}

int main(int argc, char **argv)
{
	struct sockaddr_storage ss;
	socklen_t sslen;
	struct io_uring_sqe sqe;
	struct ring r;
	char req[512], buf[4096];
	int fd, res, n, total = 0;

	if (argc != 4) {
		fprintf(stderr, "usage: %s ADDR PORT HOST\n", argv[0]);
		return 2;
	}
	alarm(15);
	memset(&ss, 0, sizeof(ss));
	if (strchr(argv[1], ':')) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((unsigned short)atoi(argv[2]));
		if (inet_pton(AF_INET6, argv[1], &s6->sin6_addr) != 1)
			return 2;
		sslen = sizeof(*s6);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

		s4->sin_family = AF_INET;
		s4->sin_port = htons((unsigned short)atoi(argv[2]));
		if (inet_pton(AF_INET, argv[1], &s4->sin_addr) != 1)
			return 2;
		sslen = sizeof(*s4);
	}
	res = ring_init(&r, 4);
	if (res < 0) {
		printf("error: io_uring_setup: %s\n", strerror(-res));
		return 3;
	}
	fd = socket(ss.ss_family, SOCK_STREAM, 0);
	if (fd < 0) {
		printf("error: socket: %s\n", strerror(errno));
		return 1;
	}

	memset(&sqe, 0, sizeof(sqe));
	sqe.opcode = IORING_OP_CONNECT;
	sqe.fd = fd;
	sqe.addr = (unsigned long)&ss;
	sqe.off = sslen; /* addr2: the address length */
	res = ring_run(&r, &sqe);
	if (res < 0) {
		printf("error: connect: %s\n", strerror(-res));
		return 1;
	}

	n = snprintf(req, sizeof(req),
		     "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n",
		     argv[3]);
	memset(&sqe, 0, sizeof(sqe));
	sqe.opcode = IORING_OP_SEND;
	sqe.fd = fd;
	sqe.addr = (unsigned long)req;
	sqe.len = (unsigned)n;
	res = ring_run(&r, &sqe);
	if (res < 0) {
		printf("error: send: %s\n", strerror(-res));
		return 1;
	}

	for (;;) {
		memset(&sqe, 0, sizeof(sqe));
		sqe.opcode = IORING_OP_RECV;
		sqe.fd = fd;
		sqe.addr = (unsigned long)buf;
		sqe.len = sizeof(buf) - 1;
		res = ring_run(&r, &sqe);
		if (res < 0) {
			printf("error: recv: %s\n", strerror(-res));
			return 1;
		}
		if (res == 0)
			break;
		buf[res] = '\0';
		fputs(buf, stdout);
		total += res;
	}
	if (!total) {
		printf("error: empty reply\n");
		return 1;
	}
	return 0;
}
