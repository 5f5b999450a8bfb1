// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
#include <netinet/in.h>
#include <string.h>
#include <time.h>

#include "kevent.h"

void kevent_to_record(const struct egr_event *e, struct audit_record *r)
{
	uint64_t now_real, now_mono, at;
	struct timespec ts;

	memset(r, 0, sizeof(*r));
	/* bpf_ktime_get_ns() is CLOCK_MONOTONIC: shift it to wall time. */
	clock_gettime(CLOCK_REALTIME, &ts);
	now_real = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	now_mono = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	at = now_real - (now_mono > e->ts_ns ? now_mono - e->ts_ns : 0);
	r->start.tv_sec = (time_t)(at / 1000000000ull);
	r->start.tv_nsec = (long)(at % 1000000000ull);
	r->end = r->start;
	r->cgroup_id = e->origin.cgroup_id;
	r->pid = e->origin.tgid;
	r->uid = e->origin.uid;
	memcpy(r->comm, e->origin.comm, EGR_COMM_LEN);
	r->comm[EGR_COMM_LEN] = '\0';
	r->proto = (int)e->proto;
	r->has_dst = e->reason != EGR_REASON_PROTO && e->op != EGR_OP_SETSOCKOPT &&
		     (e->op != EGR_OP_EGRESS || e->reason == EGR_REASON_NOT_REDIRECTED ||
		      e->reason == EGR_REASON_INBOUND);
	memcpy(r->dst.b, e->origin.dst_addr, 16);
	r->dst_port = e->origin.dst_port;
	r->verdict = e->type == EGR_EVENT_AUDIT ? EGR_VERDICT_AUDIT : EGR_VERDICT_DENY;
	r->reason = (enum egr_reason)e->reason;
	r->origin = "kernel";
	if (e->proto == IPPROTO_UDP && e->op == EGR_OP_CONNECT && e->reason == EGR_REASON_UDP) {
		/* glibc's getaddrinfo connect()s a UDP socket to every answer
		 * to pick source addresses (RFC 6724), sending nothing: on
		 * record, but not worth a line on the terminal. A real send
		 * on such a socket is impossible (it was not connected). */
		r->detail = "udp connect";
		r->quiet = true;
	} else if (e->op == EGR_OP_SENDMSG) {
		r->detail = "udp sendmsg";
	} else if (e->op == EGR_OP_SETSOCKOPT && e->reason == EGR_REASON_MULTICAST) {
		r->detail = e->origin.family == EGR_AF_INET6 ? "setsockopt IPv6 multicast join"
							     : "setsockopt IPv4 multicast join";
	} else if (e->op == EGR_OP_SETSOCKOPT) {
		r->detail = e->origin.family == EGR_AF_INET6 ? "setsockopt IPV6_RTHDR"
							     : "setsockopt IP_OPTIONS";
	} else if (e->op == EGR_OP_EGRESS && e->reason == EGR_REASON_NOT_REDIRECTED) {
		r->detail = "packet not bound for the proxy";
	} else if (e->op == EGR_OP_EGRESS && e->reason == EGR_REASON_INBOUND) {
		r->detail = "answer to an inbound connection from another host";
	} else if (e->op == EGR_OP_INGRESS) {
		r->detail = "inbound TCP from another host";
	} else if (e->op == EGR_OP_EGRESS) {
		r->detail = e->origin.family == EGR_AF_INET6 ? "packet with a routing header"
							     : "packet with IP options";
	} else if (e->op == EGR_OP_BIND) {
		r->detail = "bind";
	}
}
