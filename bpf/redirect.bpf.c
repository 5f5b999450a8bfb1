// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * The kernel side of egressd: every TCP connect() from an enforced cgroup is
 * sent to the proxy on loopback, with the original destination and the
 * process that asked recorded for the proxy; what no rule could ever allow
 * is refused right here with EPERM.
 *
 * Programs (all attached to the enforced cgroup only):
 *   cgroup/connect4, cgroup/connect6   verdict + origin record + rewrite
 *                                      (loopback refused, except a policy's
 *                                      gateway addresses: egr_gateways)
 *   sockops (TCP_CONNECT_CB)           origin -> egr_conns, keyed by the
 *                                      client's address/port (known only
 *                                      after the source port is chosen)
 *   cgroup/sock_release                drop egr_conns entries never accepted
 *   cgroup/getpeername4/6              show the original destination
 *   cgroup/sendmsg4/6                  unconnected UDP: DNS (port 53, any
 *                                      server) to the DNS proxy, else EPERM
 *   cgroup/recvmsg4/6                  DNS replies appear to come from the
 *                                      server the application asked
 *   cgroup/sock_create                 only TCP and UDP sockets
 *   cgroup/setsockopt                  no IP options / IPv6 routing headers
 *   cgroup_skb/egress                  nor on any packet (source routing)
 *   cgroup_skb/ingress                 no TCP from other hosts (inbound)
 *   cgroup/bind4, cgroup/bind6         not the proxy's port
 */
#include "egr_helpers.bpf.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set by the loader between open and load. */
const volatile __u32 proxy_ip4 = 0;     /* network order, e.g. 127.0.0.1 */
const volatile __u32 proxy_ip6[4] = {}; /* network order, e.g. ::1 */
const volatile __u16 proxy_port = 0;    /* host order; 0 = proxy not up */
const volatile __u8 proxy_has_v6 = 0;

/* Origin of every redirected socket, for as long as the socket lives. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct egr_origin);
} egr_origins SEC(".maps");

/*
 * Hand-off to the proxy: client address/port -> origin. The proxy deletes on
 * accept, sock_release deletes what was never accepted. Deliberately not an
 * LRU: an LRU would silently evict the origin of a live connection under
 * pressure; a full hash makes the insert fail and the proxy deny (closed).
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EGR_MAX_CONNS);
	__type(key, struct egr_conn_key);
	__type(value, struct egr_origin);
} egr_conns SEC(".maps");

/* cgroup id -> policy id. A cgroup in none of these is denied everything. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u32);
} egr_cgroups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, EGR_MAX_POLICIES);
	__type(key, __u32);
	__type(value, struct egr_policy_info);
} egr_policies SEC(".maps");

/* Ports some allow rule of the policy can match. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EGR_MAX_PORTS);
	__type(key, struct egr_port_key);
	__type(value, __u8);
} egr_ports SEC(".maps");

/* Denied CIDRs (any port) per policy. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, EGR_MAX_CIDRS);
	__type(key, struct egr_cidr_key);
	__type(value, __u8);
} egr_cidrs SEC(".maps");

/*
 * Loopback addresses a policy serves as plain-HTTP gateways to an https
 * upstream (policy "gateways"): the only loopback destinations that are
 * redirected to the proxy rather than refused.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EGR_MAX_GATEWAYS);
	__type(key, struct egr_gateway_key);
	__type(value, __u8);
} egr_gateways SEC(".maps");

/*
 * UDP sockets that sent DNS to the proxy: socket cookie -> origin. The DNS
 * proxy finds the cookie of a datagram's sender with sock_diag (the source
 * port of a connected UDP socket is not chosen yet when connect4 runs, so
 * it cannot be keyed by address like egr_conns). Removed at sock_release.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EGR_MAX_CONNS);
	__type(key, __u64);
	__type(value, struct egr_origin);
} egr_udp_socks SEC(".maps");

/* Per-tenant counts and their cap (struct egr_usage): one cgroup filling
 * egr_udp_socks (UDP sockets held open) or egr_conns (connections the
 * proxy has not accepted: a full accept queue) would refuse every
 * tenant's DNS and connections. Keyed by the bound cgroup, of which there
 * are at most as many as egr_cgroups holds. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct egr_usage);
} egr_usage SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct egr_limits);
} egr_limits SEC(".maps");

/* ~11,000 events (~190 bytes each): a cgroup flooding denied connects
 * must not push other decisions out before user space drains them. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 2 * 1024 * 1024);
} egr_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, EGR_STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} egr_stats SEC(".maps");

static __always_inline void egr_count(__u32 stat)
{
	__u64 *v = bpf_map_lookup_elem(&egr_stats, &stat);

	if (v)
		*v += 1;
}

/* Deepest cgroup on the current task's path that has a policy binding:
 * *cgid is the task's own cgroup, *bound the one whose binding applies. */
static __always_inline int egr_policy_lookup(__u64 *cgid, __u64 *bound, __u32 *policy_id)
{
	__u64 id = bpf_get_current_cgroup_id();
	__u32 *pid = bpf_map_lookup_elem(&egr_cgroups, &id);
	int level;

	*cgid = id;
	*bound = id;
	if (pid) {
		*policy_id = *pid;
		return 0;
	}
	for (level = EGR_MAX_CGROUP_DEPTH; level >= 0; level--) {
		id = bpf_get_current_ancestor_cgroup_id(level);
		if (!id)
			continue;
		pid = bpf_map_lookup_elem(&egr_cgroups, &id);
		if (pid) {
			*bound = id;
			*policy_id = *pid;
			return 0;
		}
	}
	return -1;
}

/*
 * Count socket o against its tenant (bound) once, until sock_release: a
 * TCP socket holds its egr_conns hand-off until the proxy accepts it,
 * which a tenant can delay (a full accept queue); a UDP one holds its
 * egr_udp_socks entry. -1 when the tenant holds egr_limits' cap already.
 * Check and add are two steps: concurrent connects may pass the cap by a
 * few. Only connect/sendmsg (socket locked) and sock_release write flags.
 */
static __always_inline int egr_charge(struct egr_origin *o, __u64 bound, bool udp)
{
	struct egr_usage *u, zero_usage = {};
	struct egr_limits *l;
	__u32 zero = 0;
	__s32 *n;

	if (o->flags & EGR_ORIGIN_CHARGED)
		return 0;
	l = bpf_map_lookup_elem(&egr_limits, &zero);
	if (!l || !l->per_cgroup)
		return 0;
	u = bpf_map_lookup_elem(&egr_usage, &bound);
	if (!u) {
		bpf_map_update_elem(&egr_usage, &bound, &zero_usage, BPF_NOEXIST);
		u = bpf_map_lookup_elem(&egr_usage, &bound);
		if (!u)
			return 0; /* more tenants than bindings: not counted */
	}
	n = udp ? &u->udp : &u->tcp;
	if (*n >= (__s32)l->per_cgroup)
		return -1;
	__sync_fetch_and_add(n, 1);
	o->charged_cgroup = bound;
	o->flags = (o->flags & ~EGR_ORIGIN_EPOCH_MASK) | EGR_ORIGIN_CHARGED |
		   (l->epoch << EGR_ORIGIN_EPOCH_SHIFT);
	return 0;
}

static __always_inline void egr_uncharge(struct egr_origin *o)
{
	struct egr_limits *l;
	struct egr_usage *u;
	__u64 bound = o->charged_cgroup;
	__u32 zero = 0, epoch = o->flags >> EGR_ORIGIN_EPOCH_SHIFT;
	__s32 *n;

	if (!(o->flags & EGR_ORIGIN_CHARGED))
		return;
	o->flags &= ~(EGR_ORIGIN_CHARGED | EGR_ORIGIN_EPOCH_MASK);
	/* counted before the counts started over: not in them */
	l = bpf_map_lookup_elem(&egr_limits, &zero);
	if (!l || (l->epoch & 0xffff) != epoch)
		return;
	u = bpf_map_lookup_elem(&egr_usage, &bound);
	if (!u)
		return;
	n = (o->flags & EGR_ORIGIN_UDP) ? &u->udp : &u->tcp;
	if (*n > 0) /* a count started over under it (a cgroup pruned and back) */
		__sync_fetch_and_add(n, -1);
}

static __always_inline void egr_fill_task(struct egr_origin *o)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();

	o->tgid = pid_tgid >> 32;
	o->pid = (__u32)pid_tgid;
	o->uid = (__u32)uid_gid;
	o->gid = uid_gid >> 32;
	bpf_get_current_comm(o->comm, sizeof(o->comm));
}

static __always_inline void egr_emit(__u32 type, __u32 reason, __u32 proto,
				     const __u8 *dst, __u16 port, __u16 family,
				     __u64 cgid, __u32 policy_id, __u64 netns, __u32 op)
{
	struct egr_event *e = bpf_ringbuf_reserve(&egr_events, sizeof(*e), 0);

	if (!e) {
		egr_count(EGR_STAT_EVENTS_LOST);
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->type = type;
	e->reason = reason;
	e->proto = proto;
	e->op = op;
	__builtin_memcpy(e->origin.dst_addr, dst, 16);
	e->origin.dst_port = port;
	e->origin.family = family;
	e->origin.cgroup_id = cgid;
	e->origin.policy_id = policy_id;
	e->origin.netns_cookie = netns;
	egr_fill_task(&e->origin);
	bpf_ringbuf_submit(e, 0);
}

/* Is dst:port (IPv4 v4-mapped) the proxy? */
static __always_inline bool egr_is_proxy(const __u8 *dst, __u16 port)
{
	__u32 w[4];

	if (port != proxy_port || !proxy_port)
		return false;
	__builtin_memcpy(w, dst, 16);
	if (egr_addr_is_v4(dst))
		return w[3] == proxy_ip4;
	return proxy_has_v6 && w[0] == proxy_ip6[0] && w[1] == proxy_ip6[1] &&
	       w[2] == proxy_ip6[2] && w[3] == proxy_ip6[3];
}

/*
 * Decide a TCP connect() or UDP send to dst:port. Returns 0 to redirect to
 * the proxy (TCP) or the DNS proxy (UDP port 53), 1 to let through
 * unchanged (audit mode), or -EPERM with *reason set.
 */
static __always_inline int egr_decide(const __u8 *dst, __u16 port, bool udp,
				      __u32 policy_id, __u32 *reason)
{
	struct egr_policy_info *pi;
	struct egr_port_key pk = {};
	struct egr_cidr_key ck = {};
	bool audit;

	pi = bpf_map_lookup_elem(&egr_policies, &policy_id);
	if (!pi || !(pi->flags & EGR_POLICY_VALID)) {
		*reason = EGR_REASON_NO_POLICY;
		return -EPERM;
	}
	audit = pi->flags & EGR_POLICY_AUDIT;

	/* DNS to any server, the one in resolv.conf or an attacker's, goes
	 * to our DNS proxy: it answers only names the policy allows. */
	if (port == 53)
		return 0;
	if (udp) {
		*reason = EGR_REASON_UDP;
		return audit ? 1 : -EPERM;
	}
	if (egr_addr_is_local(dst)) {
		struct egr_gateway_key gk = {};

		/* A gateway is the proxy under another address: redirected
		 * (in audit mode too, or it would reach whatever really
		 * listens there), origin recorded; the proxy maps it onto
		 * the gateway's upstream. Ports and CIDRs do not apply. */
		gk.policy_id = policy_id;
		gk.port = port;
		__builtin_memcpy(gk.addr, dst, 16);
		if (bpf_map_lookup_elem(&egr_gateways, &gk))
			return 0;
		*reason = EGR_REASON_LOOPBACK;
		return audit ? 1 : -EPERM;
	}
	if (audit)
		return 0; /* the proxy logs what enforce would deny */
	if (!(pi->flags & EGR_POLICY_ANY_PORT)) {
		pk.policy_id = policy_id;
		pk.port = port;
		if (!bpf_map_lookup_elem(&egr_ports, &pk)) {
			*reason = EGR_REASON_PORT;
			return -EPERM;
		}
	}
	/* Most policies deny no CIDR: skip the trie walk for them. */
	if (!(pi->flags & EGR_POLICY_CIDRS))
		return 0;
	ck.prefixlen = 32 + 128;
	ck.policy_id = policy_id;
	__builtin_memcpy(ck.addr, dst, 16);
	if (bpf_map_lookup_elem(&egr_cidrs, &ck)) {
		*reason = EGR_REASON_CIDR;
		return -EPERM;
	}
	return 0;
}

/*
 * Common connect path. dst is v4-mapped for IPv4 (also for connect6 to a
 * v4-mapped address). Returns 1 (allow the syscall) or 0 (EPERM).
 */
static __always_inline int egr_connect(struct bpf_sock_addr *ctx, const __u8 *dst,
				       __u16 port, __u16 family, bool v4mapped, __u32 op)
{
	bool udp = ctx->type == EGR_SOCK_DGRAM;
	__u32 proto = udp ? EGR_IPPROTO_UDP : EGR_IPPROTO_TCP;
	__u64 netns = bpf_get_netns_cookie(ctx);
	__u32 reason = EGR_REASON_NONE, policy_id = 0;
	struct egr_origin *o;
	struct bpf_sock *sk;
	__u64 cgid, bound;
	int verdict;

	if (ctx->type != EGR_SOCK_STREAM && !udp)
		return 1; /* no other types reach connect hooks (sock_create) */
	/*
	 * sendmsg4/6 also run for a send on a connected UDP socket that the
	 * kernel takes down the unconnected path: one with a control message
	 * (IP_TOS, UDP_SEGMENT) runs it with no address (0.0.0.0:0, which no
	 * sendto() can name: port 0 is EINVAL before the hook), and an
	 * AF_INET6 socket connected to ::ffff:a.b.c.d runs sendmsg4 with its
	 * connected peer, the proxy once connect6 redirected it (the socket
	 * has its origin then; any other send to the proxy's address is
	 * judged as usual: loopback). Both go to the connected peer, which
	 * egr_egress holds to the proxy.
	 */
	if (op == EGR_OP_SENDMSG && udp) {
		if (!port)
			return 1;
		if (egr_is_proxy(dst, port) && ctx->sk) {
			o = bpf_sk_storage_get(&egr_origins, ctx->sk, 0, 0);
			if (o && (o->flags & EGR_ORIGIN_UDP))
				return 1;
		}
	}

	if (egr_policy_lookup(&cgid, &bound, &policy_id)) {
		egr_emit(EGR_EVENT_DENY, EGR_REASON_NO_POLICY, proto, dst, port,
			 family, cgid, 0, netns, op);
		egr_count(EGR_STAT_DENIED);
		return 0;
	}
	verdict = egr_decide(dst, port, udp, policy_id, &reason);
	if (verdict < 0) {
		egr_emit(EGR_EVENT_DENY, reason, proto, dst, port, family, cgid,
			 policy_id, netns, op);
		egr_count(EGR_STAT_DENIED);
		return 0;
	}
	if (verdict == 1) {
		egr_emit(EGR_EVENT_AUDIT, reason, proto, dst, port, family, cgid,
			 policy_id, netns, op);
		/* on record already: egr_egress need not log its packets */
		sk = ctx->sk;
		o = sk ? bpf_sk_storage_get(&egr_origins, sk, 0, BPF_SK_STORAGE_GET_F_CREATE) : NULL;
		if (o)
			o->flags |= EGR_ORIGIN_DIRECT;
		return 1;
	}
	if (!proxy_port) {
		egr_emit(EGR_EVENT_DENY, EGR_REASON_INTERNAL, proto, dst, port,
			 family, cgid, policy_id, netns, op);
		return 0;
	}
	if (family == EGR_AF_INET6 && !v4mapped && !proxy_has_v6) {
		egr_emit(EGR_EVENT_DENY, EGR_REASON_INTERNAL, proto, dst, port,
			 family, cgid, policy_id, netns, op);
		return 0;
	}

	sk = ctx->sk;
	if (!sk)
		return 0;
	o = bpf_sk_storage_get(&egr_origins, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!o) {
		egr_emit(EGR_EVENT_DENY, EGR_REASON_INTERNAL, proto, dst, port,
			 family, cgid, policy_id, netns, op);
		return 0;
	}
	if (egr_charge(o, bound, udp)) {
		egr_emit(EGR_EVENT_DENY, EGR_REASON_CONN_LIMIT, proto, dst, port,
			 family, cgid, policy_id, netns, op);
		egr_count(EGR_STAT_DENIED);
		return 0;
	}
	/* A socket connecting again (its last attempt failed: the hook runs
	 * only for an unconnected socket) drops the hand-off of that attempt,
	 * which no proxy will accept: else each retry leaves an egr_conns
	 * entry that nothing sweeps, and one socket fills the table every
	 * tenant shares (egr_charge counts the socket once). */
	if (o->flags & EGR_ORIGIN_KEYED) {
		struct egr_conn_key old = o->key;
		struct egr_origin *v = bpf_map_lookup_elem(&egr_conns, &old);

		if (v && v->sock_cookie == o->sock_cookie)
			bpf_map_delete_elem(&egr_conns, &old);
	}
	__builtin_memcpy(o->dst_addr, dst, 16);
	o->dst_port = port;
	o->family = v4mapped ? EGR_AF_INET : family;
	o->flags = (o->flags & (EGR_ORIGIN_CHARGED | EGR_ORIGIN_EPOCH_MASK)) |
		   (udp ? EGR_ORIGIN_UDP : EGR_ORIGIN_TCP) | (v4mapped ? EGR_ORIGIN_V4MAPPED : 0);
	o->cgroup_id = cgid;
	o->netns_cookie = netns;
	o->sock_cookie = bpf_get_socket_cookie(ctx);
	o->policy_id = policy_id;
	egr_fill_task(o);
	__builtin_memset(&o->key, 0, sizeof(o->key));
	if (udp && bpf_map_update_elem(&egr_udp_socks, &o->sock_cookie, o, BPF_ANY)) {
		/* The DNS proxy could not tell who asked: refuse now. */
		egr_count(EGR_STAT_CONNS_FULL);
		egr_emit(EGR_EVENT_DENY, EGR_REASON_INTERNAL, proto, dst, port,
			 family, cgid, policy_id, netns, op);
		return 0;
	}

	if (family == EGR_AF_INET) {
		ctx->user_ip4 = proxy_ip4;
	} else if (v4mapped) {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = bpf_htonl(0xffff);
		ctx->user_ip6[3] = proxy_ip4;
	} else {
		ctx->user_ip6[0] = proxy_ip6[0];
		ctx->user_ip6[1] = proxy_ip6[1];
		ctx->user_ip6[2] = proxy_ip6[2];
		ctx->user_ip6[3] = proxy_ip6[3];
	}
	ctx->user_port = bpf_htons(proxy_port);
	egr_count(EGR_STAT_REDIRECTED);
	return 1;
}

static __always_inline int egr_sock_addr4(struct bpf_sock_addr *ctx, __u32 op)
{
	__u8 dst[16];

	egr_addr_set_v4(dst, ctx->user_ip4);
	return egr_connect(ctx, dst, bpf_ntohs(ctx->user_port), EGR_AF_INET, false, op);
}

/*
 * The kernel sends a connect6() (or a UDP sendmsg) to ::ffff:a.b.c.d down
 * the IPv4 path without running the IPv4 hook, so the v4-mapped case is
 * decided here with the IPv4 rules and redirected to the proxy's IPv4
 * address, v4-mapped.
 */
static __always_inline int egr_sock_addr6(struct bpf_sock_addr *ctx, __u32 op)
{
	__u32 ip6[4];
	__u8 dst[16];

	ip6[0] = ctx->user_ip6[0];
	ip6[1] = ctx->user_ip6[1];
	ip6[2] = ctx->user_ip6[2];
	ip6[3] = ctx->user_ip6[3];
	egr_addr_set_v6(dst, ip6);
	return egr_connect(ctx, dst, bpf_ntohs(ctx->user_port), EGR_AF_INET6,
			   egr_addr_is_v4(dst), op);
}

SEC("cgroup/connect4")
int egr_connect4(struct bpf_sock_addr *ctx)
{
	return egr_sock_addr4(ctx, EGR_OP_CONNECT);
}

SEC("cgroup/connect6")
int egr_connect6(struct bpf_sock_addr *ctx)
{
	return egr_sock_addr6(ctx, EGR_OP_CONNECT);
}

/*
 * Runs once the source port is chosen (also for TCP Fast Open, where the SYN
 * leaves from sendmsg). Publishes the origin under the client's address and
 * port, which is all the proxy sees of the accepted connection.
 */
SEC("sockops")
int egr_sockops(struct bpf_sock_ops *skops)
{
	struct egr_conn_key key = {};
	struct egr_origin *o;
	struct bpf_sock *sk;
	__u32 ip6[4], ip4, family;

	if (skops->op != BPF_SOCK_OPS_TCP_CONNECT_CB &&
	    skops->op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		return 1;
	sk = skops->sk;
	if (!sk)
		return 1;
	/* Accepted by a listener of the cgroup: its packets answer whoever
	 * connected in (egr_egress_socket). */
	if (skops->op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB) {
		o = bpf_sk_storage_get(&egr_origins, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (o)
			o->flags |= EGR_ORIGIN_INBOUND;
		return 1;
	}
	o = bpf_sk_storage_get(&egr_origins, sk, 0, 0);
	if (!o || !(o->flags & EGR_ORIGIN_TCP))
		return 1;

	/* Context fields must be read at constant offsets: volatile keeps
	 * clang from merging the v4 and v6 loads into one computed pointer,
	 * which the verifier rejects. */
	ip4 = *(volatile __u32 *)&skops->local_ip4;
	ip6[0] = *(volatile __u32 *)&skops->local_ip6[0];
	ip6[1] = *(volatile __u32 *)&skops->local_ip6[1];
	ip6[2] = *(volatile __u32 *)&skops->local_ip6[2];
	ip6[3] = *(volatile __u32 *)&skops->local_ip6[3];
	family = *(volatile __u32 *)&skops->family;
	key.netns_cookie = o->netns_cookie;
	if (family == EGR_AF_INET || (o->flags & EGR_ORIGIN_V4MAPPED))
		egr_addr_set_v4(key.addr, ip4);
	else
		egr_addr_set_v6(key.addr, ip6);
	key.port = (__u16)skops->local_port;
	o->key = key;
	o->flags |= EGR_ORIGIN_KEYED;
	if (bpf_map_update_elem(&egr_conns, &key, o, BPF_ANY)) {
		/* The proxy will find no origin and deny: closed, counted. */
		o->flags &= ~EGR_ORIGIN_KEYED;
		egr_count(EGR_STAT_CONNS_FULL);
	}
	return 1;
}

SEC("cgroup/sock_release")
int egr_sock_release(struct bpf_sock *sk)
{
	struct egr_conn_key key;
	struct egr_origin *o, *v;

	o = bpf_sk_storage_get(&egr_origins, sk, 0, 0);
	if (!o)
		return 1;
	egr_uncharge(o);
	if (o->flags & EGR_ORIGIN_UDP) {
		__u64 cookie = o->sock_cookie;

		bpf_map_delete_elem(&egr_udp_socks, &cookie);
		return 1;
	}
	if (!(o->flags & EGR_ORIGIN_KEYED))
		return 1;
	key = o->key;
	v = bpf_map_lookup_elem(&egr_conns, &key);
	/*
	 * Only our own entry (compare the socket cookie). Not deleted here: a
	 * client may connect, write and close before the proxy accepts, and
	 * the connection still waits in the accept queue. Marked instead; the
	 * proxy still finds it on accept, and what is never accepted is swept
	 * from user space a few seconds later (egr_bpf_sweep_conns).
	 */
	if (v && v->sock_cookie == o->sock_cookie) {
		v->released_ns = bpf_ktime_get_ns();
		v->flags |= EGR_ORIGIN_RELEASED;
	}
	return 1;
}

SEC("cgroup/getpeername4")
int egr_getpeername4(struct bpf_sock_addr *ctx)
{
	struct egr_origin *o;
	struct bpf_sock *sk = ctx->sk;

	if (!sk)
		return 1;
	o = bpf_sk_storage_get(&egr_origins, sk, 0, 0);
	if (!o || !(o->flags & (EGR_ORIGIN_TCP | EGR_ORIGIN_UDP)) || o->family != EGR_AF_INET)
		return 1;
	ctx->user_ip4 = ((__u32 *)o->dst_addr)[3];
	ctx->user_port = bpf_htons(o->dst_port);
	return 1;
}

SEC("cgroup/getpeername6")
int egr_getpeername6(struct bpf_sock_addr *ctx)
{
	struct egr_origin *o;
	struct bpf_sock *sk = ctx->sk;
	const __u32 *w;

	if (!sk)
		return 1;
	o = bpf_sk_storage_get(&egr_origins, sk, 0, 0);
	if (!o || !(o->flags & (EGR_ORIGIN_TCP | EGR_ORIGIN_UDP)))
		return 1;
	w = (const __u32 *)o->dst_addr;
	ctx->user_ip6[0] = w[0];
	ctx->user_ip6[1] = w[1];
	ctx->user_ip6[2] = w[2];
	ctx->user_ip6[3] = w[3];
	ctx->user_port = bpf_htons(o->dst_port);
	return 1;
}

/*
 * Unconnected UDP (sendto/sendmsg/sendmmsg; connected sockets never get
 * here): DNS goes to the DNS proxy, everything else is refused. Same path
 * as connect: egr_connect() checks the socket type.
 */
SEC("cgroup/sendmsg4")
int egr_sendmsg4(struct bpf_sock_addr *ctx)
{
	return egr_sock_addr4(ctx, EGR_OP_SENDMSG);
}

SEC("cgroup/sendmsg6")
int egr_sendmsg6(struct bpf_sock_addr *ctx)
{
	return egr_sock_addr6(ctx, EGR_OP_SENDMSG);
}

/*
 * A DNS reply comes from the DNS proxy; resolvers (glibc, c-ares, Go) drop
 * answers whose source is not the server they asked, so the source is
 * shown as the original server.
 */
SEC("cgroup/recvmsg4")
int egr_recvmsg4(struct bpf_sock_addr *ctx)
{
	struct egr_origin *o;
	struct bpf_sock *sk = ctx->sk;

	if (!sk)
		return 1;
	o = bpf_sk_storage_get(&egr_origins, sk, 0, 0);
	if (!o || !(o->flags & EGR_ORIGIN_UDP) || o->family != EGR_AF_INET)
		return 1;
	if (ctx->user_ip4 != proxy_ip4 || ctx->user_port != bpf_htons(proxy_port))
		return 1;
	ctx->user_ip4 = ((__u32 *)o->dst_addr)[3];
	ctx->user_port = bpf_htons(o->dst_port);
	return 1;
}

SEC("cgroup/recvmsg6")
int egr_recvmsg6(struct bpf_sock_addr *ctx)
{
	struct egr_origin *o;
	struct bpf_sock *sk = ctx->sk;
	const __u32 *w;
	__u32 ip6[4];
	__u8 src[16];
	bool from_proxy;

	if (!sk)
		return 1;
	o = bpf_sk_storage_get(&egr_origins, sk, 0, 0);
	if (!o || !(o->flags & EGR_ORIGIN_UDP))
		return 1;
	if (ctx->user_port != bpf_htons(proxy_port))
		return 1;
	ip6[0] = ctx->user_ip6[0];
	ip6[1] = ctx->user_ip6[1];
	ip6[2] = ctx->user_ip6[2];
	ip6[3] = ctx->user_ip6[3];
	egr_addr_set_v6(src, ip6);
	if (egr_addr_is_v4(src))
		from_proxy = ip6[3] == proxy_ip4;
	else
		from_proxy = ip6[0] == proxy_ip6[0] && ip6[1] == proxy_ip6[1] &&
			     ip6[2] == proxy_ip6[2] && ip6[3] == proxy_ip6[3];
	if (!from_proxy)
		return 1;
	w = (const __u32 *)o->dst_addr;
	ctx->user_ip6[0] = w[0];
	ctx->user_ip6[1] = w[1];
	ctx->user_ip6[2] = w[2];
	ctx->user_ip6[3] = w[3];
	ctx->user_port = bpf_htons(o->dst_port);
	return 1;
}

/*
 * Only TCP and UDP have connect/sendmsg hooks. Raw and ping (ICMP datagram)
 * sockets, SCTP, UDP-Lite and MPTCP would carry data past them, so they
 * cannot be created inside an enforced cgroup.
 */
/* A refusal with no destination to name (a socket type, a socket option,
 * a bind): logged with who asked, counted. */
static __always_inline void egr_deny_here(__u32 reason, __u32 proto, __u16 port,
					  __u16 family, __u32 op)
{
	__u8 none[16] = {};
	__u32 policy_id = 0;
	__u64 cgid, bound;

	egr_policy_lookup(&cgid, &bound, &policy_id);
	egr_emit(EGR_EVENT_DENY, reason, proto, none, port, family, cgid, policy_id, 0, op);
	egr_count(EGR_STAT_DENIED);
}

SEC("cgroup/sock_create")
int egr_sock_create(struct bpf_sock *sk)
{
	if (sk->family != EGR_AF_INET && sk->family != EGR_AF_INET6)
		return 1;
	if (sk->type == EGR_SOCK_STREAM && sk->protocol == EGR_IPPROTO_TCP)
		return 1;
	if (sk->type == EGR_SOCK_DGRAM && sk->protocol == EGR_IPPROTO_UDP)
		return 1;
	egr_deny_here(EGR_REASON_PROTO, sk->protocol, 0, sk->family, EGR_OP_SOCK_CREATE);
	return 0;
}

/*
 * Source routing. IP options (IPv4 LSRR/SSRR) and IPv6 routing headers
 * (type 4, segment routing: unprivileged on Linux) change where a packet
 * goes after the connect/sendmsg hooks rewrote its destination: the kernel
 * sends it to the first hop the option names, past the proxy. Nothing an
 * agent runs needs them: refused as socket options here, and dropped on
 * any packet that carries them anyway (per-message cmsgs, which no hook
 * sees) in egr_egress.
 */
#define EGR_SOL_IP 0
#define EGR_SOL_IPV6 41
#define EGR_IP_OPTIONS 4
#define EGR_IPV6_2292RTHDR 5
#define EGR_IPV6_2292PKTOPTIONS 6
#define EGR_IPV6_RTHDR 57
/* Multicast joins and source filters (SOL_IP and SOL_IPV6; MCAST_* are
 * the same numbers at both levels) */
#define EGR_IPV6_ADD_MEMBERSHIP 20
#define EGR_IPV6_JOIN_ANYCAST 27
#define EGR_IP_ADD_MEMBERSHIP 35
#define EGR_IP_UNBLOCK_SOURCE 37
#define EGR_IP_BLOCK_SOURCE 38
#define EGR_IP_ADD_SOURCE_MEMBERSHIP 39
#define EGR_IP_MSFILTER 41
#define EGR_MCAST_JOIN_GROUP 42
#define EGR_MCAST_BLOCK_SOURCE 43
#define EGR_MCAST_UNBLOCK_SOURCE 44
#define EGR_MCAST_JOIN_SOURCE_GROUP 46
#define EGR_MCAST_MSFILTER 48

/*
 * A multicast join makes the kernel send IGMP or MLD reports out of the
 * interface the caller names, carrying the group addresses (14 free bytes
 * an IPv6 group, 64 sources of 16 bytes a filter) the caller chose: a
 * channel past the proxy that no hook of the cgroup sees (the kernel
 * builds those packets itself). Nothing an agent runs needs it.
 */
static __always_inline bool egr_is_mcast_join(__s32 level, __s32 optname)
{
	if (optname == EGR_MCAST_JOIN_GROUP || optname == EGR_MCAST_BLOCK_SOURCE ||
	    optname == EGR_MCAST_UNBLOCK_SOURCE || optname == EGR_MCAST_JOIN_SOURCE_GROUP ||
	    optname == EGR_MCAST_MSFILTER)
		return level == EGR_SOL_IP || level == EGR_SOL_IPV6;
	if (level == EGR_SOL_IP)
		return optname == EGR_IP_ADD_MEMBERSHIP || optname == EGR_IP_UNBLOCK_SOURCE ||
		       optname == EGR_IP_BLOCK_SOURCE || optname == EGR_IP_ADD_SOURCE_MEMBERSHIP ||
		       optname == EGR_IP_MSFILTER;
	if (level == EGR_SOL_IPV6)
		return optname == EGR_IPV6_ADD_MEMBERSHIP || optname == EGR_IPV6_JOIN_ANYCAST;
	return false;
}

SEC("cgroup/setsockopt")
int egr_setsockopt(struct bpf_sockopt *ctx)
{
	/* Constant-offset context loads (volatile: see egr_sockops). */
	__s32 level = *(volatile __s32 *)&ctx->level;
	__s32 optname = *(volatile __s32 *)&ctx->optname;
	__s32 optlen = *(volatile __s32 *)&ctx->optlen;
	bool v4 = level == EGR_SOL_IP && optname == EGR_IP_OPTIONS;
	bool v6 = level == EGR_SOL_IPV6 &&
		  (optname == EGR_IPV6_RTHDR || optname == EGR_IPV6_2292RTHDR ||
		   optname == EGR_IPV6_2292PKTOPTIONS);

	if ((v4 || v6) && optlen > 0) {
		struct bpf_sock *sk = ctx->sk;

		egr_deny_here(EGR_REASON_IP_OPTIONS, sk ? sk->protocol : 0, 0,
			      v6 ? EGR_AF_INET6 : EGR_AF_INET, EGR_OP_SETSOCKOPT);
		return 0;
	}
	if (egr_is_mcast_join(level, optname)) {
		struct bpf_sock *sk = ctx->sk;

		egr_deny_here(EGR_REASON_MULTICAST, sk ? sk->protocol : 0, 0,
			      level == EGR_SOL_IPV6 ? EGR_AF_INET6 : EGR_AF_INET,
			      EGR_OP_SETSOCKOPT);
		return 0;
	}
	/* Leave every other option alone; above a page the program sees
	 * only part of the value, and optlen 0 tells the kernel to use the
	 * caller's (kernels before 6.5 would fail the call otherwise). */
	if (optlen > 4096)
		ctx->optlen = 0;
	return 1;
}

#define EGR_ETH_P_IP 0x0800
#define EGR_ETH_P_IPV6 0x86DD
#define EGR_NEXTHDR_HOP 0
#define EGR_NEXTHDR_ROUTING 43
#define EGR_NEXTHDR_FRAGMENT 44
#define EGR_NEXTHDR_AUTH 51
#define EGR_NEXTHDR_DEST 60

/* Does an IPv6 packet carry a routing header among its first extension
 * headers? (The kernel puts a socket's in order: hop-by-hop, destination
 * options, routing, fragment.) */
static __always_inline bool egr_v6_routed(struct __sk_buff *skb)
{
	__u32 off = 40;
	__u8 nh, hdr[2];
	int i;

	if (bpf_skb_load_bytes(skb, 6, &nh, 1))
		return false;
	for (i = 0; i < 6; i++) {
		if (nh == EGR_NEXTHDR_ROUTING)
			return true;
		if (nh != EGR_NEXTHDR_HOP && nh != EGR_NEXTHDR_DEST &&
		    nh != EGR_NEXTHDR_FRAGMENT && nh != EGR_NEXTHDR_AUTH)
			return false;
		if (bpf_skb_load_bytes(skb, off, hdr, 2))
			return false;
		if (nh == EGR_NEXTHDR_FRAGMENT)
			off += 8;
		else if (nh == EGR_NEXTHDR_AUTH)
			off += ((__u32)hdr[1] + 2) * 4;
		else
			off += ((__u32)hdr[1] + 1) * 8;
		nh = hdr[0];
	}
	return true; /* deeper than any socket builds: refuse */
}

/*
 * cgroup_skb runs where the packet is sent, also from softirq (a
 * retransmission): the current task may be another process, and kernels
 * before ~6.16 give this program type none of the current-task helpers.
 * The record names the socket's cgroup and owner instead; no process.
 */
/* The policy slot of the socket's cgroup or its nearest bound ancestor
 * (as egr_policy_lookup, with the skb's helpers); NULL: none. */
static __always_inline __u32 *egr_skb_policy(struct __sk_buff *skb, __u64 *id)
{
	__u32 *pid;
	int level;

	*id = bpf_skb_cgroup_id(skb);
	pid = bpf_map_lookup_elem(&egr_cgroups, id);
	for (level = EGR_MAX_CGROUP_DEPTH; !pid && level >= 0; level--) {
		__u64 a = bpf_skb_ancestor_cgroup_id(skb, level);

		if (a)
			pid = bpf_map_lookup_elem(&egr_cgroups, &a);
	}
	return pid;
}

/* false: the ring had no room (counted lost): the caller may log the next
 * packet instead */
static __always_inline bool egr_emit_skb_op(struct __sk_buff *skb, __u16 family, __u32 reason,
					    __u32 proto, const __u8 *dst, __u16 port, __u32 type,
					    __u32 op)
{
	struct egr_event *e;
	__u64 id;
	__u32 *pid = egr_skb_policy(skb, &id);

	if (type == EGR_EVENT_DENY)
		egr_count(EGR_STAT_DENIED);
	e = bpf_ringbuf_reserve(&egr_events, sizeof(*e), 0);
	if (!e) {
		egr_count(EGR_STAT_EVENTS_LOST);
		return false;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->ts_ns = bpf_ktime_get_ns();
	e->type = type;
	e->reason = reason;
	e->op = op;
	e->origin.family = family;
	e->origin.cgroup_id = id;
	e->origin.policy_id = pid ? *pid : 0;
	e->origin.uid = bpf_get_socket_uid(skb);
	if (dst) {
		e->proto = proto;
		e->origin.dst_port = port;
		__builtin_memcpy(e->origin.dst_addr, dst, 16);
		if (egr_addr_is_v4(dst))
			e->origin.family = EGR_AF_INET;
	}
	bpf_ringbuf_submit(e, 0);
	return true;
}

static __always_inline bool egr_emit_skb(struct __sk_buff *skb, __u16 family, __u32 reason,
					 __u32 proto, const __u8 *dst, __u16 port, __u32 type)
{
	return egr_emit_skb_op(skb, family, reason, proto, dst, port, type, EGR_OP_EGRESS);
}

/* A full socket's peer address, IPv4 stored v4-mapped. Context fields
 * at constant offsets (volatile: see egr_sockops). */
static __always_inline void egr_sk_peer(const struct bpf_sock *sk, __u32 family, __u8 addr[16])
{
	__u32 ip4 = *(volatile __u32 *)&sk->dst_ip4;
	__u32 ip6[4];

	ip6[0] = *(volatile __u32 *)&sk->dst_ip6[0];
	ip6[1] = *(volatile __u32 *)&sk->dst_ip6[1];
	ip6[2] = *(volatile __u32 *)&sk->dst_ip6[2];
	ip6[3] = *(volatile __u32 *)&sk->dst_ip6[3];
	if (family == EGR_AF_INET)
		egr_addr_set_v4(addr, ip4);
	else
		egr_addr_set_v6(addr, ip6);
}


/* A datagram's destination (IPv4 v4-mapped) and port (0: not in it). */
static __always_inline __u16 egr_skb_dst(struct __sk_buff *skb, __u16 family, __u8 dst[16])
{
	__u32 w[4] = {};
	__u16 port = 0;

	if (family == EGR_AF_INET) {
		bpf_skb_load_bytes(skb, 16, w, 4);
		egr_addr_set_v4(dst, w[0]);
		if (bpf_skb_load_bytes(skb, 22, &port, 2))
			port = 0;
	} else {
		bpf_skb_load_bytes(skb, 24, w, 16);
		egr_addr_set_v6(dst, w);
		if (bpf_skb_load_bytes(skb, 42, &port, 2))
			port = 0;
	}
	return bpf_ntohs(port);
}

/*
 * Is this UDP datagram addressed to the proxy? Its own header, not the
 * socket's peer: a datagram corked before the programs were attached
 * (MSG_MORE) is flushed by a later send without the sendmsg hook, to the
 * address it was corked for. IPv4 options never get here (dropped
 * before); a later IPv4 fragment has no UDP header and is judged by its
 * address; an IPv6 datagram behind extension headers is not the proxy's.
 */
static __always_inline bool egr_udp_to_proxy(struct __sk_buff *skb, __u16 family)
{
	__u32 w[4];
	__u16 port, frag;
	__u8 nh;

	if (family == EGR_AF_INET) {
		if (bpf_skb_load_bytes(skb, 16, w, 4) || w[0] != proxy_ip4 ||
		    bpf_skb_load_bytes(skb, 6, &frag, 2))
			return false;
		if (bpf_ntohs(frag) & 0x1fff)
			return true;
		return !bpf_skb_load_bytes(skb, 22, &port, 2) && bpf_ntohs(port) == proxy_port;
	}
	if (bpf_skb_load_bytes(skb, 6, &nh, 1) || nh != EGR_IPPROTO_UDP ||
	    bpf_skb_load_bytes(skb, 24, w, 16) || bpf_skb_load_bytes(skb, 42, &port, 2))
		return false;
	if (egr_addr_is_v4((const __u8 *)w))
		return false; /* v4-mapped addresses travel as IPv4 */
	return egr_is_proxy((const __u8 *)w, bpf_ntohs(port));
}

/*
 * Every connect() and sendto() of the cgroup is redirected to the proxy,
 * but a socket made and connected before the programs were attached (a
 * reload adding an attach point, pods older than the DaemonSet) saw no
 * hook: it would keep its direct connection. So in enforce mode (and with
 * no policy at all) a packet of a TCP socket must go to the proxy, unless
 * a listener of the cgroup accepted the socket after the programs were
 * attached (INBOUND, set in sockops) and it goes over loopback (a peer in
 * the same network namespace) or the policy lets other hosts connect in
 * ("inbound": "any"): an answer to a host outside is a channel out that
 * no proxy sees (whoever can reach the listener reads what the agent
 * writes). Every UDP datagram must be
 * addressed to the proxy, on loopback; a socket of any other protocol
 * may not send at all. A listener sends SYN-ACKs; request and time-wait
 * sockets are no full sockets: they pass. The policy is looked up for
 * every such packet, never remembered: a reload from audit to enforce
 * cuts what audit mode let through. Returns 1 to pass.
 */
static __always_inline int egr_egress_socket(struct __sk_buff *skb, __u16 family)
{
	struct egr_policy_info *pi;
	struct bpf_sock *sk = skb->sk;
	struct egr_origin *o;
	__u32 *pid, proto, sfamily, logged;
	__u8 dst[16];
	__u16 port;
	__u64 id;
	bool audit, inbound;

	if (!sk)
		return 1;
	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return 1;
	proto = *(volatile __u32 *)&sk->protocol;
	sfamily = *(volatile __u32 *)&sk->family;
	port = bpf_ntohs(*(volatile __be16 *)&sk->dst_port);
	/* The proxy is on loopback: a socket bound to another device
	 * (SO_BINDTODEVICE, IP_UNICAST_IF) with route_localnet on would send
	 * "to the proxy" out of that device. Loopback is ifindex 1 in every
	 * network namespace. */
	if (proto == EGR_IPPROTO_TCP) {
		if (*(volatile __u32 *)&sk->state == BPF_TCP_LISTEN)
			return 1;
		egr_sk_peer(sk, sfamily, dst);
		if (skb->ifindex == 1 && egr_is_proxy(dst, port))
			return 1;
	} else if (proto == EGR_IPPROTO_UDP) {
		if (skb->ifindex == 1 && egr_udp_to_proxy(skb, family))
			return 1;
	} else if (*(volatile __u32 *)&sk->type == EGR_SOCK_RAW &&
		   (proto == EGR_IPPROTO_ICMP || proto == EGR_IPPROTO_ICMPV6)) {
		/* The kernel's own ICMP and neighbour-discovery sockets of a
		 * namespace made inside the cgroup (unshare -n) belong to it;
		 * an agent's raw socket needs CAP_NET_RAW there, and such a
		 * namespace reaches nothing outside. Ping sockets (datagram)
		 * are not these. */
		return 1;
	}
	/* Any other protocol: a socket made before the attach (a ping
	 * socket, UDP-Lite, SCTP; sock_create refuses new ones). */
	o = bpf_sk_storage_get(&egr_origins, sk, 0, 0);
	inbound = o && proto == EGR_IPPROTO_TCP && (o->flags & EGR_ORIGIN_INBOUND);
	if (inbound && skb->ifindex == 1)
		return 1;
	pid = egr_skb_policy(skb, &id);
	pi = pid ? bpf_map_lookup_elem(&egr_policies, pid) : NULL;
	if (inbound && pi && (pi->flags & EGR_POLICY_VALID) && (pi->flags & EGR_POLICY_INBOUND_ANY))
		return 1;
	audit = pi && (pi->flags & EGR_POLICY_VALID) && (pi->flags & EGR_POLICY_AUDIT);
	if (audit && o && (o->flags & EGR_ORIGIN_DIRECT))
		return 1; /* its connect() was logged as audit mode's */
	if (!o)
		o = bpf_sk_storage_get(&egr_origins, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	logged = audit ? EGR_EGRESS_LOGGED_AUDIT : EGR_EGRESS_LOGGED_DENY;
	/* one record per socket and verdict (per packet if there is no
	 * storage): a reload between audit and enforce is on record too.
	 * Marked once on record: a packet the ring had no room for leaves
	 * the next one to be logged. */
	if (!o || !(o->egress_flags & logged)) {
		/* a TCP socket's peer is in dst already */
		if (proto != EGR_IPPROTO_TCP && (port = egr_skb_dst(skb, family, dst)) &&
		    proto != EGR_IPPROTO_UDP)
			port = 0; /* no UDP header there */
		if (egr_emit_skb(skb, family,
				 inbound ? EGR_REASON_INBOUND : EGR_REASON_NOT_REDIRECTED, proto,
				 dst, port, audit ? EGR_EVENT_AUDIT : EGR_EVENT_DENY) && o)
			o->egress_flags |= logged;
	} else if (!audit) {
		egr_count(EGR_STAT_DENIED);
	}
	return audit;
}

SEC("cgroup_skb/egress")
int egr_egress(struct __sk_buff *skb)
{
	__u8 vihl;

	if (skb->protocol == bpf_htons(EGR_ETH_P_IP)) {
		if (bpf_skb_load_bytes(skb, 0, &vihl, 1))
			return 1;
		if ((vihl & 0x0f) > 5) {
			egr_emit_skb(skb, EGR_AF_INET, EGR_REASON_IP_OPTIONS, 0, NULL, 0, EGR_EVENT_DENY);
			return 0;
		}
		return egr_egress_socket(skb, EGR_AF_INET);
	}
	if (skb->protocol == bpf_htons(EGR_ETH_P_IPV6)) {
		if (egr_v6_routed(skb)) {
			egr_emit_skb(skb, EGR_AF_INET6, EGR_REASON_IP_OPTIONS, 0, NULL, 0, EGR_EVENT_DENY);
			return 0;
		}
		return egr_egress_socket(skb, EGR_AF_INET6);
	}
	return 1;
}

/*
 * A listener's SYN-ACKs come from request sockets (no full socket: they
 * pass egr_egress) or, with SYN cookies, from no socket at all, and carry
 * what the listener chose: the MSS (TCP_MAXSEG), the window, TTL and TOS,
 * an IPv6 flow label. Whoever connects reads those bits, a few per SYN.
 * So a TCP packet that came from another host (not over loopback) for a
 * socket of the cgroup is dropped before TCP sees it: no handshake, no
 * SYN-ACK, no cookie. The cgroup's own connections all go to the proxy,
 * on loopback. "inbound": "any" lets other hosts in (egr_egress then
 * passes the answers); audit mode lets them in, logged. Logged once per
 * socket (the listener, for SYNs). Returns 1 to pass.
 */
SEC("cgroup_skb/ingress")
int egr_ingress(struct __sk_buff *skb)
{
	struct egr_policy_info *pi;
	struct bpf_sock *sk;
	struct egr_origin *o;
	__u32 *pid, logged, w[4] = {};
	__u16 family, port = 0;
	__u8 src[16], vihl = 0;
	__u64 id;
	bool audit;

	if (skb->ifindex == 1)
		return 1;
	sk = skb->sk;
	if (!sk)
		return 1;
	sk = bpf_sk_fullsock(sk);
	if (!sk || *(volatile __u32 *)&sk->protocol != EGR_IPPROTO_TCP)
		return 1;
	pid = egr_skb_policy(skb, &id);
	pi = pid ? bpf_map_lookup_elem(&egr_policies, pid) : NULL;
	if (pi && (pi->flags & EGR_POLICY_VALID) && (pi->flags & EGR_POLICY_INBOUND_ANY))
		return 1;
	audit = pi && (pi->flags & EGR_POLICY_VALID) && (pi->flags & EGR_POLICY_AUDIT);
	logged = audit ? EGR_INGRESS_LOGGED_AUDIT : EGR_INGRESS_LOGGED_DENY;
	o = bpf_sk_storage_get(&egr_origins, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!o || !(o->egress_flags & logged)) {
		if (skb->protocol == bpf_htons(EGR_ETH_P_IP)) {
			family = EGR_AF_INET;
			bpf_skb_load_bytes(skb, 0, &vihl, 1);
			bpf_skb_load_bytes(skb, 12, w, 4);
			egr_addr_set_v4(src, w[0]);
			if (bpf_skb_load_bytes(skb, (vihl & 0x0f) * 4, &port, 2))
				port = 0;
		} else {
			family = EGR_AF_INET6;
			bpf_skb_load_bytes(skb, 8, w, 16);
			egr_addr_set_v6(src, w);
			if (bpf_skb_load_bytes(skb, 40, &port, 2))
				port = 0;
		}
		if (egr_emit_skb_op(skb, family, EGR_REASON_INBOUND, EGR_IPPROTO_TCP, src,
				    bpf_ntohs(port), audit ? EGR_EVENT_AUDIT : EGR_EVENT_DENY,
				    EGR_OP_INGRESS) && o)
			o->egress_flags |= logged; /* once on record, as in egress */
	} else if (!audit) {
		egr_count(EGR_STAT_DENIED);
	}
	return audit;
}

/*
 * The proxy's port, on any address and either protocol. While egressd
 * restarts the port is free; a process of the cgroup that took it would
 * then receive every redirected connection and DNS query of every
 * enforced cgroup, other tenants' too, and the new egressd could not
 * start.
 */
static __always_inline int egr_bind(struct bpf_sock_addr *ctx, __u16 family)
{
	if (!proxy_port || bpf_ntohs(ctx->user_port) != proxy_port)
		return 1;
	egr_deny_here(EGR_REASON_PROXY_PORT,
		      ctx->type == EGR_SOCK_DGRAM ? EGR_IPPROTO_UDP : EGR_IPPROTO_TCP,
		      proxy_port, family, EGR_OP_BIND);
	return 0;
}

SEC("cgroup/bind4")
int egr_bind4(struct bpf_sock_addr *ctx)
{
	return egr_bind(ctx, EGR_AF_INET);
}

SEC("cgroup/bind6")
int egr_bind6(struct bpf_sock_addr *ctx)
{
	return egr_bind(ctx, EGR_AF_INET6);
}
