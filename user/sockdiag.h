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

#endif
