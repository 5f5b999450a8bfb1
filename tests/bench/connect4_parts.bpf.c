// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * What the pieces of egr_connect4 cost on this kernel, one piece per
 * program (tests/bench/connect4_parts.py attaches them one at a time to a
 * cgroup of its own). Not part of egressd: each program does a prefix of
 * what egr_connect4 does, or an alternative to it, and lets the connect
 * through unchanged.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "egressd_shared.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* as egr_origins */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct egr_origin);
} parts_sk SEC(".maps");

/* the alternative: socket cookie -> origin, removed at sock_release */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 131072);
	__type(key, __u64);
	__type(value, struct egr_origin);
} parts_hash SEC(".maps");

/* as egr_cgroups; empty, so the lookup misses (egressd's first hits) */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u32);
} parts_cgroups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} parts_sink SEC(".maps");

/* The origin as egr_connect4 fills it (egr_fill_task and the cookies). */
static __always_inline void parts_fill(struct egr_origin *o, struct bpf_sock_addr *ctx)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	__u64 uid_gid = bpf_get_current_uid_gid();

	o->dst_port = bpf_ntohs(ctx->user_port);
	o->family = EGR_AF_INET;
	o->flags = EGR_ORIGIN_TCP;
	o->cgroup_id = bpf_get_current_cgroup_id();
	o->netns_cookie = bpf_get_netns_cookie(ctx);
	o->sock_cookie = bpf_get_socket_cookie(ctx);
	o->tgid = pid_tgid >> 32;
	o->pid = (__u32)pid_tgid;
	o->uid = (__u32)uid_gid;
	o->gid = uid_gid >> 32;
	bpf_get_current_comm(o->comm, sizeof(o->comm));
}

SEC("cgroup/connect4")
int p0_empty(struct bpf_sock_addr *ctx)
{
	return 1;
}

SEC("cgroup/connect4")
int p1_cgroup_lookup(struct bpf_sock_addr *ctx)
{
	__u64 id = bpf_get_current_cgroup_id();

	return bpf_map_lookup_elem(&parts_cgroups, &id) ? 1 : 1;
}

SEC("cgroup/connect4")
int p2_fill_on_stack(struct bpf_sock_addr *ctx)
{
	struct egr_origin o = {};
	__u32 k = 0;
	__u64 *v;

	parts_fill(&o, ctx);
	v = bpf_map_lookup_elem(&parts_sink, &k);
	if (v)
		*v += o.pid; /* keep the fill */
	return 1;
}

SEC("cgroup/connect4")
int p3_sk_storage(struct bpf_sock_addr *ctx)
{
	struct egr_origin *o;

	if (!ctx->sk)
		return 1;
	o = bpf_sk_storage_get(&parts_sk, ctx->sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (o)
		parts_fill(o, ctx);
	return 1;
}

SEC("cgroup/connect4")
int p4_cookie_hash(struct bpf_sock_addr *ctx)
{
	struct egr_origin o = {};

	parts_fill(&o, ctx);
	bpf_map_update_elem(&parts_hash, &o.sock_cookie, &o, BPF_ANY);
	return 1;
}

SEC("cgroup/sock_release")
int parts_release(struct bpf_sock *sk)
{
	__u64 cookie = bpf_get_socket_cookie(sk);

	bpf_map_delete_elem(&parts_hash, &cookie);
	return 1;
}
