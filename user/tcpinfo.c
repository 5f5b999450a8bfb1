// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * TCP_INFO fields glibc's <netinet/tcp.h> does not declare, in a file of
 * their own: <linux/tcp.h> and <netinet/tcp.h> cannot share a unit.
 */
#include <errno.h>
#include <stddef.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "tcpinfo.h"

int tcpinfo_bytes_taken(int fd, uint64_t *out)
{
	struct tcp_info ti = { 0 };
	socklen_t len = sizeof(ti);
	int outq = 0;

	/* tcp_info first: an ACK between the two calls can only make the
	 * sum smaller (bytes_acked read before it moved, the queue after),
	 * never claim a byte the socket has not taken. */
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
		return -errno;
	if (len < offsetof(struct tcp_info, tcpi_bytes_acked) + sizeof(ti.tcpi_bytes_acked))
		return -EOPNOTSUPP;
	if (ioctl(fd, SIOCOUTQ, &outq) < 0)
		return -errno;
	*out = ti.tcpi_bytes_acked + (uint64_t)outq;
	return 0;
}
