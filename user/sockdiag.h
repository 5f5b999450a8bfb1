/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/* Which socket sent a datagram: sock_diag (NETLINK_SOCK_DIAG) lookups. */
#ifndef EGR_SOCKDIAG_H
#define EGR_SOCKDIAG_H

#include <stdint.h>
#include <sys/socket.h>

/*
 * Cookie of the UDP socket in the caller's network namespace that
 * receives datagrams sent from local (our listener) to peer (the sender's
 * address): the socket that sent us the datagram. 0 or -errno (-ENOENT:
 * no such socket, e.g. it was closed already).
 */
int sockdiag_udp_cookie(const struct sockaddr *local, const struct sockaddr *peer,
			uint64_t *cookie);

/*
 * sock_diag answers for the network namespace its netlink socket was
 * created in, so a datagram that reached a listener in a pod's namespace
 * (netns.c) must be looked up with a socket made there.
 * sockdiag_open(): a NETLINK_SOCK_DIAG socket in the calling thread's
 * current namespace (call it while setns()ed into the pod's); fd or -errno.
 * sockdiag_use(fd): this thread's lookups use fd until sockdiag_use(-1)
 * restores its own socket. The caller keeps ownership of fd.
 */
int sockdiag_open(void);
void sockdiag_use(int fd);

#endif
