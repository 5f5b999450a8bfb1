/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * Types shared by the kernel programs (bpf/) and the daemon (user/).
 *
 * Fixed-width __u32-style types only and no libc: this header is included
 * both by BPF C (after vmlinux.h) and by user space (after <linux/types.h>).
 * Map values that may grow carry explicit reserved fields so that an old
 * daemon can read a newer kernel object's values and vice versa.
 */
#ifndef EGRESSD_SHARED_H
#define EGRESSD_SHARED_H

#ifndef __VMLINUX_H__
#include <linux/types.h>
#endif

#define EGR_COMM_LEN 16
#define EGR_MAX_POLICIES 1024
#define EGR_MAX_CONNS 65536
#define EGR_MAX_PORTS 4096
#define EGR_MAX_CIDRS 4096
#define EGR_MAX_GATEWAYS 1024
/* Sockets in the kernel relay (two per relayed connection). */
#define EGR_MAX_SPLICE 65536
/* How many cgroup ancestors the kernel walks to find a policy binding. */
#define EGR_MAX_CGROUP_DEPTH 16

#ifndef EGR_AF_INET
#define EGR_AF_INET 2
#define EGR_AF_INET6 10
#endif

/*
 * Verdicts and reasons. One enum for every consumer:
 *  - bpf/redirect.bpf.c: kernel fast denials (reported in struct egr_event);
 *  - user/proxy.c: decisions after peeking SNI/Host;
 *  - user/audit.c: the "reason" field of every audit record (egr_reason_name());
 *  - tools/egressctl.c and tests/e2e: match on the names printed by audit.
 * Never renumber: values appear in logs that other tools parse.
 */
enum egr_verdict {
	EGR_VERDICT_NONE = 0,
	EGR_VERDICT_ALLOW = 1,
	EGR_VERDICT_DENY = 2,
	/* audit mode: would have been denied, was allowed */
	EGR_VERDICT_AUDIT = 3,
};

enum egr_reason {
	EGR_REASON_NONE = 0,
	/* allowed: a policy allow rule matched */
	EGR_REASON_RULE_ALLOW = 1,
	/* denied: a policy deny rule matched (deny wins over allow) */
	EGR_REASON_RULE_DENY = 2,
	/* denied: no allow rule matched */
	EGR_REASON_NO_MATCH = 3,
	/* kernel: the origin's cgroup has no policy binding (fail closed) */
	EGR_REASON_NO_POLICY = 4,
	/* kernel: loopback (or unspecified) destination other than the proxy */
	EGR_REASON_LOOPBACK = 5,
	/* kernel: no rule of the policy allows this port */
	EGR_REASON_PORT = 6,
	/* kernel: destination inside a denied CIDR */
	EGR_REASON_CIDR = 7,
	/* kernel: UDP (other than DNS) is not relayed */
	EGR_REASON_UDP = 8,
	/* kernel: socket type/protocol not covered by the hooks */
	EGR_REASON_PROTO = 9,
	/* proxy: accepted connection without an origin record */
	EGR_REASON_NO_ORIGIN = 10,
	/* proxy: SNI/Host is an IP literal or not a valid host name */
	EGR_REASON_BAD_NAME = 11,
	/* proxy: no SNI/Host (unknown protocol or TLS without SNI) and no
	 * IP rule allows the original destination */
	EGR_REASON_NO_NAME = 12,
	/* proxy: malformed ClientHello / HTTP head */
	EGR_REASON_MALFORMED = 13,
	/* proxy: ClientHello/head did not arrive in time (slowloris); DNS
	 * proxy: a DNS-over-TCP message did not arrive whole in time */
	EGR_REASON_PEEK_TIMEOUT = 14,
	/* proxy: ClientHello/head larger than the peek limit */
	EGR_REASON_TOO_LARGE = 15,
	/* proxy: name did not resolve */
	EGR_REASON_RESOLVE = 16,
	/* proxy: name resolved only to loopback/private/link-local/metadata */
	EGR_REASON_PRIVATE_ADDR = 17,
	/* proxy: every resolved address refused the connection / timed out */
	EGR_REASON_UPSTREAM = 18,
	/* proxy: per-cgroup concurrent connection limit reached; DNS proxy:
	 * DNS-over-TCP connections per tenant or in all */
	EGR_REASON_CONN_LIMIT = 19,
	/* proxy: internal error (allocation, socket) -- fail closed */
	EGR_REASON_INTERNAL = 20,
	/* proxy: TCP port 53, handed to the DNS proxy (which logs each query) */
	EGR_REASON_DNS = 21,
	/* proxy: every upstream address was refused by GeoIP: its country is
	 * in the policy's deny_countries, or its ASN is not in the matching
	 * allow rule's asn list (docs/geoip.md) */
	EGR_REASON_GEO = 22,
	/* proxy: plain HTTP to a host the policy intercepts: its request
	 * rules are checked only with TLS (docs/interception.md) */
	EGR_REASON_TLS_REQUIRED = 23,
	/* kernel: IP options or an IPv6 routing header (source routing: the
	 * packet would go to a first hop of the sender's choosing instead
	 * of the proxy), as a socket option or on a packet */
	EGR_REASON_IP_OPTIONS = 24,
	/* kernel: bind() to the proxy's port (a process of the cgroup that
	 * held it while egressd restarts would receive every redirected
	 * connection) */
	EGR_REASON_PROXY_PORT = 25,
	/* kernel: a packet not bound for the proxy on loopback (a socket made
	 * and connected before enforcement began, so no connect hook saw it;
	 * one bound to another device) */
	EGR_REASON_NOT_REDIRECTED = 26,
	/* kernel: a multicast group joined (setsockopt): the kernel's IGMP
	 * and MLD reports carry the group addresses, chosen by the agent,
	 * out of every interface it names, past the proxy */
	EGR_REASON_MULTICAST = 27,
	/* kernel: TCP from another host (not over loopback) for a socket of
	 * the cgroup (cgroup_skb/ingress: a listener's SYN-ACK would carry
	 * bits the listener chose), or a packet of a connection a listener
	 * accepted from one (egress), whose policy keeps inbound connections
	 * local: answering would carry data out past the proxy */
	EGR_REASON_INBOUND = 28,
	EGR_REASON_MAX,
};

/* egr_stats (a per-CPU array of u64): counters the programs keep */
enum egr_stat {
	EGR_STAT_REDIRECTED = 0,
	EGR_STAT_DENIED = 1,
	EGR_STAT_EVENTS_LOST = 2, /* the event ring was full */
	EGR_STAT_CONNS_FULL = 3,
	EGR_STAT_MAX,
};

/* struct egr_origin.flags */
#define EGR_ORIGIN_V4MAPPED (1U << 0) /* connect6 to ::ffff:a.b.c.d */
#define EGR_ORIGIN_KEYED (1U << 1)    /* sockops stored egr_conns key */
#define EGR_ORIGIN_TCP (1U << 2)
#define EGR_ORIGIN_UDP (1U << 3)
#define EGR_ORIGIN_RELEASED (1U << 4) /* egr_conns entry: the client closed
				       * before the proxy accepted */
#define EGR_ORIGIN_CHARGED (1U << 5)  /* counted in egr_usage[charged_cgroup] */
#define EGR_ORIGIN_INBOUND (1U << 6)  /* accepted by a listener of the cgroup */
#define EGR_ORIGIN_DIRECT (1U << 7)   /* audit mode let its connect() through */
/* bits 16-31 with CHARGED: egr_limits.epoch (low 16 bits) of the charge */
#define EGR_ORIGIN_EPOCH_SHIFT 16
#define EGR_ORIGIN_EPOCH_MASK 0xffff0000U

/* struct egr_origin.egress_flags: written by cgroup_skb/egress alone (it
 * runs in softirq too, unlocked; flags has writers of its own) */
#define EGR_EGRESS_LOGGED_DENY (1U << 0)  /* a not_redirected denial was sent */
#define EGR_EGRESS_LOGGED_AUDIT (1U << 1) /* ... an audit record (audit mode) */
/* and by cgroup_skb/ingress (the same socket's packets, the same CPU's
 * softirq or its own task: flags it alone sets) */
#define EGR_INGRESS_LOGGED_DENY (1U << 2)  /* an inbound denial was sent */
#define EGR_INGRESS_LOGGED_AUDIT (1U << 3) /* ... an audit record */

/*
 * Key of the hand-off hash (egr_conns): the client end of the redirected
 * connection, as the proxy sees it as the peer of the accepted socket.
 * IPv4 addresses are stored v4-mapped (::ffff:a.b.c.d). The netns cookie
 * separates agents in different network namespaces that all use 127.0.0.1.
 */
struct egr_conn_key {
	__u64 netns_cookie;
	__u8 addr[16];
	__u16 port; /* host byte order */
	__u16 pad[3];
};

/*
 * Who connected where. Kept in sk_storage of the agent's socket (from
 * connect4/6 on) and copied into egr_conns at TCP_CONNECT_CB.
 */
struct egr_origin {
	__u8 dst_addr[16]; /* original destination; IPv4 stored v4-mapped */
	__u16 dst_port;    /* host byte order */
	__u16 family;      /* EGR_AF_INET or EGR_AF_INET6 of the destination */
	__u32 flags;       /* EGR_ORIGIN_* */
	__u64 cgroup_id;   /* cgroup of the task that called connect() */
	__u64 netns_cookie;
	__u64 sock_cookie;
	__u32 tgid;
	__u32 pid;
	__u32 uid;
	__u32 gid;
	__u32 policy_id;
	__u32 egress_flags; /* EGR_EGRESS_* */
	char comm[EGR_COMM_LEN];
	struct egr_conn_key key; /* valid with EGR_ORIGIN_KEYED */
	__u64 released_ns; /* bpf_ktime_get_ns() at sock_release (RELEASED) */
	__u64 charged_cgroup; /* with EGR_ORIGIN_CHARGED: its egr_usage key */
};

/*
 * What one bound cgroup (a tenant: the cgroup whose binding applies, with
 * everything below it) holds in the tables all tenants share: open
 * redirected TCP sockets (each holds its egr_conns hand-off until the
 * proxy accepts it) and UDP sockets in egr_udp_socks. Signed, and never
 * taken below zero: a count that started over while sockets lived (a
 * cgroup's entry pruned by a reload and made again) may undercount them.
 */
struct egr_usage {
	__s32 tcp;
	__s32 udp;
	__u32 reserved[2];
};

/*
 * egr_limits[0]: per_cgroup caps each of egr_usage's counts; 0 = none.
 * epoch: bumped when the counts start over (a daemon start); a socket
 * charged in another epoch is not taken off the new counts.
 */
struct egr_limits {
	__u32 per_cgroup;
	__u32 epoch;
	__u32 reserved[2];
};

/* Per-policy settings the kernel needs (egr_policies array). */
#define EGR_POLICY_ANY_PORT (1U << 0) /* some allow rule matches every port */
#define EGR_POLICY_AUDIT (1U << 1)    /* audit mode: log, never deny in kernel */
#define EGR_POLICY_CIDRS (1U << 2)    /* egr_cidrs holds denials for this policy */
#define EGR_POLICY_INBOUND_ANY (1U << 3) /* "inbound": "any": connections accepted
					  * from other hosts may be answered */
#define EGR_POLICY_VALID (1U << 31)   /* slot in use */

struct egr_policy_info {
	__u32 flags;
	__u32 reserved[3];
};

struct egr_port_key {
	__u32 policy_id;
	__u16 port; /* host byte order */
	__u16 pad;
};

/* LPM trie key: prefixlen counts the 32 bits of policy_id plus address bits. */
struct egr_cidr_key {
	__u32 prefixlen;
	__u32 policy_id;
	__u8 addr[16]; /* IPv4 v4-mapped */
};

/*
 * Gateway addresses (egr_gateways): a loopback address+port of a policy
 * that the kernel redirects to the proxy instead of refusing as loopback,
 * because the policy maps it onto an https upstream (docs/interception.md,
 * "Gateway mode"). Filled by user/bpfload.c from policy "gateways".
 */
struct egr_gateway_key {
	__u32 policy_id;
	__u16 port; /* host byte order */
	__u16 pad;
	__u8 addr[16]; /* IPv4 v4-mapped */
};

enum egr_event_type {
	EGR_EVENT_DENY = 1, /* kernel refused a connect/sendmsg */
	EGR_EVENT_AUDIT = 2, /* audit mode: kernel would have refused */
};

/* Which hook decided. */
enum egr_event_op {
	EGR_OP_CONNECT = 1,
	EGR_OP_SENDMSG = 2,
	EGR_OP_SOCK_CREATE = 3,
	EGR_OP_SETSOCKOPT = 4,
	EGR_OP_EGRESS = 5,  /* a packet leaving a socket of the cgroup */
	EGR_OP_BIND = 6,
	EGR_OP_INGRESS = 7, /* a packet arriving for a socket of the cgroup */
};

/* Ring buffer record (egr_events) for kernel-side decisions. */
struct egr_event {
	__u64 ts_ns; /* bpf_ktime_get_ns() */
	__u32 type;  /* enum egr_event_type */
	__u32 reason; /* enum egr_reason */
	__u32 proto;  /* IPPROTO_TCP / IPPROTO_UDP / other */
	__u32 op;     /* enum egr_event_op */
	struct egr_origin origin;
};

/*
 * Kernel relay (bpf/splice.bpf.c): per socket in egr_splice, the cookie of
 * the socket its bytes go to and how many went (the verdict adds, the proxy
 * reads).
 */
struct egr_splice_peer {
	__u64 peer;	/* socket cookie of the other side */
	__u64 bytes;	/* bytes redirected to it */
	__u64 last_ns;	/* bpf_ktime_get_coarse_ns() of the last skb */
	__u32 broken;	/* the verdict dropped bytes: reset the connection */
	__u32 pad;
};

#endif /* EGRESSD_SHARED_H */
