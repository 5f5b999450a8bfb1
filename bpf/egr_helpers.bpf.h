/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/* BPF-only helpers shared by the kernel programs. */
#ifndef EGR_HELPERS_BPF_H
#define EGR_HELPERS_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "egressd_shared.h"

#ifndef EPERM
#define EPERM 1
#endif
#ifndef ENOMEM
#define ENOMEM 12
#endif

#define EGR_SOCK_STREAM 1
#define EGR_SOCK_DGRAM 2
#define EGR_SOCK_RAW 3
#define EGR_IPPROTO_TCP 6
#define EGR_IPPROTO_UDP 17
#define EGR_IPPROTO_ICMP 1
#define EGR_IPPROTO_ICMPV6 58

/* addr (16 bytes) := ::ffff:ip4 (ip4 in network byte order) */
static __always_inline void egr_addr_set_v4(__u8 *addr, __u32 ip4)
{
	__u32 *w = (__u32 *)addr;

	w[0] = 0;
	w[1] = 0;
	w[2] = bpf_htonl(0xffff);
	w[3] = ip4;
}

static __always_inline void egr_addr_set_v6(__u8 *addr, const __u32 *ip6)
{
	__u32 *w = (__u32 *)addr;

	w[0] = ip6[0];
	w[1] = ip6[1];
	w[2] = ip6[2];
	w[3] = ip6[3];
}

static __always_inline bool egr_addr_is_v4(const __u8 *addr)
{
	const __u32 *w = (const __u32 *)addr;

	return w[0] == 0 && w[1] == 0 && w[2] == bpf_htonl(0xffff);
}

/*
 * Destinations that reach this host rather than the network: 127/8, 0/8
 * (Linux connects 0.0.0.0 to the local host), ::1, :: and their v4-mapped
 * forms. An agent must not reach host services (the docker socket's TCP
 * twin, a metadata proxy, the daemon's own control ports) by these.
 */
static __always_inline bool egr_addr_is_local(const __u8 *addr)
{
	const __u32 *w = (const __u32 *)addr;

	if (egr_addr_is_v4(addr)) {
		__u8 first = addr[12];

		return first == 127 || first == 0;
	}
	if (w[0] == 0 && w[1] == 0 && w[2] == 0)
		return w[3] == 0 || w[3] == bpf_htonl(1);
	return false;
}

#endif
