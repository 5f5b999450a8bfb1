// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * The kernel relay: once the proxy has decided a passthrough connection and
 * moved enough bytes to know it is a bulk one, it puts both sockets (agent
 * side and upstream side) into egr_splice and the bytes from then on go from
 * one socket's receive path straight to the other's send path, without a
 * wakeup of the proxy per chunk.
 *
 * Not attached to any cgroup: an sk_skb verdict program is attached to the
 * sockhash and runs only for sockets the proxy itself inserted.
 *
 * The proxy keeps the policy decision (made before any byte went through) and
 * the connection's end: it watches both sockets for EOF/errors, and before it
 * propagates a FIN it checks that every byte counted here has reached the
 * other socket's send queue (the redirect is asynchronous: the kernel queues
 * the skb on the target's psock and a work item sends it).
 */
#include "egr_helpers.bpf.h"
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/*
 * socket cookie -> socket; only the proxy inserts and deletes. Two maps so
 * that a hand-over has no moment where one socket's verdict runs and the
 * socket it sends to cannot be found (its skb would be dropped): both go
 * into egr_splice_to (no program: nothing changes for their bytes) first,
 * and only then into egr_splice, whose verdict takes their bytes.
 */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, EGR_MAX_SPLICE);
	__type(key, __u64);
	__type(value, __u64);
} egr_splice_to SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, EGR_MAX_SPLICE);
	__type(key, __u64);
	__type(value, __u64);
} egr_splice SEC(".maps");

/* socket cookie -> the peer to send to, and what went through. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, EGR_MAX_SPLICE);
	__type(key, __u64);
	__type(value, struct egr_splice_peer);
} egr_splice_peers SEC(".maps");

extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

/* bpf_skb_adjust_room() shrinks by at most 0xfff bytes per call. */
#define TRIM_STEP 4095
#define TRIM_STEPS 160 /* 640 KiB: a receive queue coalesces skbs up to
			* MAX_SKB_FRAGS (17) frags of up to 32 KiB */

/*
 * The first skb after the hand-over may have been read in part by the
 * proxy's splice loop; the verdict path takes whole skbs (tcp_read_skb), so
 * its first copied_seq - seq bytes would go out a second time. Cut them.
 * Later skbs start at copied_seq exactly (the kernel advances it by each
 * skb's length after the verdict, trimmed length included).
 */
static __always_inline int trim_consumed(struct __sk_buff *skb)
{
	struct bpf_sock *bsk = skb->sk;
	struct tcp_sock *tp;
	struct sk_buff *kskb;
	__u32 seq, copied;
	__s32 off;
	int i;

	if (!bsk)
		return -1;
	tp = bpf_skc_to_tcp_sock(bsk);
	if (!tp)
		return -1;
	kskb = bpf_cast_to_kern_ctx(skb);
	seq = BPF_CORE_READ((struct tcp_skb_cb *)kskb->cb, seq);
	copied = tp->copied_seq;
	off = (__s32)(copied - seq);
	if (off <= 0)
		return 0;
	if ((__u32)off >= skb->len)
		return -1;
	for (i = 0; i < TRIM_STEPS && off > 0; i++) {
		int step = off > TRIM_STEP ? TRIM_STEP : off;

		if (bpf_skb_adjust_room(skb, -step, 0, 0))
			return -1;
		off -= step;
	}
	return off ? -1 : 0;
}

SEC("sk_skb")
int egr_splice_verdict(struct __sk_buff *skb)
{
	struct egr_splice_peer *p;
	__u64 cookie = bpf_get_socket_cookie(skb);

	/*
	 * A segment with nothing but the FIN reaches the verdict as an empty
	 * skb; redirected, the target's psock fails to "send" zero bytes and
	 * marks that socket EPIPE. The FIN itself is already recorded by TCP
	 * (the proxy sees EPOLLRDHUP and propagates it), so drop the husk.
	 */
	if (!skb->len)
		return SK_DROP;
	p = bpf_map_lookup_elem(&egr_splice_peers, &cookie);
	if (!p)
		return SK_DROP;	/* the proxy always inserts the peer first */
	if (trim_consumed(skb)) {
		/* Cannot tell what is new: the stream is broken, and the
		 * proxy resets both sides rather than pass a corrupt one. */
		p->broken = 1;
		return SK_DROP;
	}
	/*
	 * Counted before the redirect: the proxy compares this with what the
	 * target's send queue has taken, so an skb counted here and dropped
	 * below (peer gone) keeps the proxy from ever seeing the counts agree
	 * and it resets the connection instead of sending a clean FIN.
	 */
	__sync_fetch_and_add(&p->bytes, skb->len);
	p->last_ns = bpf_ktime_get_coarse_ns();
	return bpf_sk_redirect_hash(skb, &egr_splice_to, &p->peer, 0);
}
