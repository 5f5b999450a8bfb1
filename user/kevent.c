// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "kevent.h"

/* bpf_ktime_get_ns() is CLOCK_MONOTONIC: how far behind the wall clock
 * it is now (read once per record: a span's two ends shift alike). */
static uint64_t wall_offset(void)
{
	struct timespec r, m;

	clock_gettime(CLOCK_REALTIME, &r);
	clock_gettime(CLOCK_MONOTONIC, &m);
	return ((uint64_t)r.tv_sec * 1000000000ull + (uint64_t)r.tv_nsec) -
	       ((uint64_t)m.tv_sec * 1000000000ull + (uint64_t)m.tv_nsec);
}

static struct timespec wall_time(uint64_t offset, uint64_t mono_ns)
{
	uint64_t at = offset + mono_ns;
	struct timespec ts;

	ts.tv_sec = (time_t)(at / 1000000000ull);
	ts.tv_nsec = (long)(at % 1000000000ull);
	return ts;
}

void kevent_span(struct audit_record *r, const struct kfold_span *sp, char *detail, size_t len)
{
	uint64_t off = wall_offset();

	r->count = sp->count;
	r->start = wall_time(off, sp->first_ns);
	r->end = wall_time(off, sp->last_ns);
	if (!sp->mixed)
		return;
	/* what the decisions have in common, and no more */
	r->has_dst = false;
	r->dst_port = 0;
	r->pid = r->uid = 0;
	r->comm[0] = '\0';
	if (sp->any_cgroup) {
		r->cgroup_id = 0;
		if (!r->reason)
			r->proto = 0; /* kinds vary */
		snprintf(detail, len, "%s%sfrom several cgroups, destinations and processes not "
			 "itemized (more kinds of decision in a second than egressd keeps apart)",
			 r->detail && r->reason ? r->detail : "", r->detail && r->reason ? "; " : "");
	} else if (sp->table_full) {
		snprintf(detail, len, "%s%sdestinations and processes not itemized (all cgroups "
			 "together made more than %u kinds of decision in a second)",
			 r->detail ? r->detail : "", r->detail ? "; " : "", sp->keys_max);
	} else {
		snprintf(detail, len, "%s%sdestinations and processes not itemized (the cgroup "
			 "made more than %u kinds of decision in a second)",
			 r->detail ? r->detail : "", r->detail ? "; " : "", sp->per_cgroup);
	}
	r->detail = detail;
	r->quiet = false;
}

void kevent_to_record(const struct egr_event *e, struct audit_record *r)
{
	memset(r, 0, sizeof(*r));
	r->start = wall_time(wall_offset(), e->ts_ns);
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
