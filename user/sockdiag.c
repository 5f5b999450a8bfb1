// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>

#include "sockdiag.h"

/* One netlink socket per thread: lookups happen on the DNS proxy thread,
 * and a socket per call would cost two syscalls more per query. */
static __thread int sockdiag_fd = -1;
/* sockdiag_use(): a socket in another network namespace, or -1. */
static __thread int sockdiag_other = -1;

int sockdiag_open(void)
{
	struct timeval tv = { .tv_sec = 1 };
	int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);

	if (fd < 0)
		return -errno;
	/* The kernel answers synchronously; a timeout only guards bugs. */
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

void sockdiag_use(int fd)
{
	sockdiag_other = fd;
}

static int sockdiag_socket(void)
{
	if (sockdiag_other >= 0)
		return sockdiag_other;
	if (sockdiag_fd < 0)
		sockdiag_fd = sockdiag_open();
	return sockdiag_fd;
}

static void sockdiag_fill(__be32 *addr, __be16 *port, const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *in = (const struct sockaddr_in *)sa;

		addr[0] = in->sin_addr.s_addr;
		*port = in->sin_port;
	} else {
		const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;

		memcpy(addr, &in6->sin6_addr, 16);
		*port = in6->sin6_port;
	}
}

int sockdiag_udp_cookie(const struct sockaddr *local, const struct sockaddr *peer,
			uint64_t *cookie)
{
	struct {
		struct nlmsghdr nlh;
		struct inet_diag_req_v2 req;
	} msg = {
		.nlh = {
			.nlmsg_len = sizeof(msg),
			.nlmsg_type = SOCK_DIAG_BY_FAMILY,
			.nlmsg_flags = NLM_F_REQUEST,
			.nlmsg_seq = 1,
		},
		.req = {
			.sdiag_family = (__u8)peer->sa_family,
			.sdiag_protocol = IPPROTO_UDP,
			.idiag_states = ~0U,
		},
	};
	union {
		struct nlmsghdr nlh;
		char buf[8192];
	} resp;
	struct nlmsghdr *nlh;
	ssize_t n;
	int fd;

	if (peer->sa_family != local->sa_family ||
	    (peer->sa_family != AF_INET && peer->sa_family != AF_INET6))
		return -EAFNOSUPPORT;
	fd = sockdiag_socket();
	if (fd < 0)
		return fd;
	/* udp_dump_one looks up the socket that would receive a datagram
	 * from idiag_src:sport to idiag_dst:dport: our reply's direction. */
	sockdiag_fill(msg.req.id.idiag_src, &msg.req.id.idiag_sport, local);
	sockdiag_fill(msg.req.id.idiag_dst, &msg.req.id.idiag_dport, peer);
	msg.req.id.idiag_cookie[0] = INET_DIAG_NOCOOKIE;
	msg.req.id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
	if (send(fd, &msg, sizeof(msg), 0) < 0)
		return -errno;
	do {
		n = recv(fd, &resp, sizeof(resp), 0);
	} while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	for (nlh = &resp.nlh; NLMSG_OK(nlh, (unsigned)n); nlh = NLMSG_NEXT(nlh, n)) {
		if (nlh->nlmsg_type == NLMSG_ERROR) {
			const struct nlmsgerr *e = NLMSG_DATA(nlh);

			return e->error ? e->error : -ENOENT;
		}
		if (nlh->nlmsg_type == SOCK_DIAG_BY_FAMILY) {
			const struct inet_diag_msg *m = NLMSG_DATA(nlh);

			*cookie = (uint64_t)m->id.idiag_cookie[0] |
				  (uint64_t)m->id.idiag_cookie[1] << 32;
			return 0;
		}
	}
	return -ENOENT;
}
