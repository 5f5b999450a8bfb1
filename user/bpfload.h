/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * Loader for bpf/redirect.bpf.c: open -> set rodata -> load -> fill maps ->
 * attach to cgroups we created -> (run) -> detach -> destroy.
 *
 * Attachment uses BPF_PROG_ATTACH with BPF_F_ALLOW_MULTI rather than bpf
 * links owned by our file descriptors: if egressd is killed, the programs
 * stay attached to the cgroup and keep redirecting to the dead proxy port,
 * so the cgroup fails closed until it is removed (egressd cleanup / the
 * next run).
 */
#ifndef EGR_BPFLOAD_H
#define EGR_BPFLOAD_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "addr.h"
#include "egressd_shared.h"
#include "policy.h"

struct egr_bpf;

/* Create the object and the egr_conns hand-off map (so that the proxy can
 * be created with its fd before the programs are loaded). conns_max: the
 * entries of egr_conns and egr_udp_socks (at most EGR_MAX_CONNS; 0: that):
 * one run needs its per-cgroup cap and a little, and its maps outlive it
 * while a socket of its cgroup does (the programs stay attached). */
int egr_bpf_prepare(struct egr_bpf **out, uint32_t conns_max);
/* The same, for the daemon: every map is pinned under pin_dir (on a bpffs),
 * and maps already pinned there by a previous daemon are adopted. */
int egr_bpf_prepare_pinned(struct egr_bpf **out, const char *pin_dir);
int egr_bpf_conns_fd(const struct egr_bpf *b);
/* Set the proxy address and load the programs into the kernel. */
int egr_bpf_load(struct egr_bpf *b, uint16_t proxy_port, bool proxy_v6);
/* Fill the kernel's view of policy policy_id (ports, denied CIDRs, mode,
 * gateway addresses; gateways the policy no longer has are removed). */
int egr_bpf_set_policy(struct egr_bpf *b, uint32_t policy_id, const struct policy *p);
int egr_bpf_bind_cgroup(struct egr_bpf *b, uint64_t cgroup_id, uint32_t policy_id);
/* The policy id the cgroup itself is bound to now; -ENOENT if none (it
 * inherits from an ancestor, or is denied everything). */
int egr_bpf_cgroup_binding(struct egr_bpf *b, uint64_t cgroup_id, uint32_t *policy_id);
/* The cgroup inherits from its ancestors again (or is denied everything). */
int egr_bpf_unbind_cgroup(struct egr_bpf *b, uint64_t cgroup_id);
/*
 * Each bound cgroup (with everything below it) may have at most per_cgroup
 * open redirected TCP sockets and per_cgroup open UDP sockets that sent
 * DNS, counted in the kernel (egr_usage) from connect()/sendmsg() to
 * close; beyond, connect()/sendmsg() fail with EPERM (reason conn_limit).
 * 0 = no cap.
 */
int egr_bpf_set_limits(struct egr_bpf *b, unsigned per_cgroup);
/* A removed cgroup's counts go with it. */
int egr_bpf_forget_usage(struct egr_bpf *b, uint64_t cgroup_id);
/* Unbind every cgroup whose id is not in keep (sorted here, in place):
 * the bindings a config no longer makes, whose policy ids would
 * otherwise point at whatever the next config puts there. Returns how
 * many, or -errno. */
int egr_bpf_prune_cgroups(struct egr_bpf *b, uint64_t *keep, size_t n_keep);
/*
 * After a walk of every attach point: no binding may name a policy id
 * outside [lo, hi) (the running config's bank; the next reload refills
 * the other one with other policies). A cgroup the walk did not see is
 * unbound if the walk was complete (it is gone, or outside every attach
 * point), else bound to EGR_MAX_POLICIES (denied everything: the walk
 * could not judge it). One the walk saw that still names an id outside
 * [lo, hi) is denied too. seen is sorted here, in place. Returns how many
 * were unbound, *denied how many denied, or -errno.
 */
int egr_bpf_settle_cgroups(struct egr_bpf *b, uint64_t *seen, size_t n_seen, bool complete,
			   uint32_t lo, uint32_t hi, int *denied);
/* Policy slot policy_id is not valid any more: a binding that still names
 * it is denied everything (reason no_policy). */
int egr_bpf_clear_policy(struct egr_bpf *b, uint32_t policy_id);
/*
 * A daemon starting over a previous one's pins (before it listens): that
 * one's bindings name policy ids of its config, which this one refills in
 * its own order, so a cgroup still bound would be judged by another
 * policy until the walk binds it anew (in the kernel too: an audit-mode
 * policy lets UDP pass). Unbind every cgroup and invalidate every policy:
 * until rebound, enforced cgroups are denied everything. The tenants'
 * counts (egr_usage) start over too. Returns how many
 * bindings went, or -errno; nothing pinned yet is 0.
 */
int egr_bpf_forget_pinned(const char *pin_dir);
/* Origin of a UDP socket that sent DNS to the DNS proxy, by socket cookie
 * (sockdiag_udp_cookie). 0 or -ENOENT. */
int egr_bpf_udp_origin(struct egr_bpf *b, uint64_t cookie, struct egr_origin *o);
/* Origin of the UDP socket at peer that sent a datagram to our DNS proxy
 * on port (sock_diag finds its cookie). 0 or -errno. */
int egr_bpf_udp_origin_from(struct egr_bpf *b, uint16_t port, const struct sockaddr *peer,
			    struct egr_origin *o);
/* Attach every program to the cgroup open at cgroup_fd. All or nothing. */
int egr_bpf_attach(struct egr_bpf *b, int cgroup_fd);
/* Daemon: attach with bpf_links pinned under pin_dir/links/<cgroup id>/,
 * or, if a previous daemon left them, swap the new programs into them. */
int egr_bpf_attach_pinned(struct egr_bpf *b, int cgroup_fd, uint64_t cgroup_id);
/* Remove those pins: the programs are detached from that cgroup. */
int egr_bpf_unpin_cgroup(struct egr_bpf *b, uint64_t cgroup_id);
/* Detach what egr_bpf_attach attached. */
void egr_bpf_detach(struct egr_bpf *b);
/* Leave egr_bpf_attach's programs attached when b goes (the cgroup still
 * holds processes that must stay enforced); removing the cgroup, once
 * empty, detaches them. */
void egr_bpf_keep_attached(struct egr_bpf *b);

/* Delete egr_conns entries whose client closed more than older_than_ns
 * ago without the proxy accepting (sock_release only marks them). Returns
 * how many were removed. Call every few seconds. */
int egr_bpf_sweep_conns(struct egr_bpf *b, uint64_t older_than_ns);

typedef void (*egr_bpf_event_fn)(void *ctx, const struct egr_event *e);
/* Start consuming kernel events; egr_bpf_poll() delivers them to fn. */
int egr_bpf_events_open(struct egr_bpf *b, egr_bpf_event_fn fn, void *ctx);
/* A descriptor that polls readable when events wait (egr_bpf_poll them). */
int egr_bpf_events_fd(const struct egr_bpf *b);
int egr_bpf_poll(struct egr_bpf *b, int timeout_ms);
/* Kernel events the programs could not hand over (the ring was full):
 * their decisions were enforced but are on no record. */
int egr_bpf_events_lost(struct egr_bpf *b, uint64_t *out);
/* The sum over CPUs of key in a per-CPU array of u64 (egr_stats), by fd. */
int egr_bpf_percpu_sum(int map_fd, uint32_t key, uint64_t *out);
void egr_bpf_destroy(struct egr_bpf *b); /* accepts NULL; detaches */

/* Kernel feature probe: returns 0 or -errno with a message in err. */
int egr_bpf_probe(char *err, size_t errlen);

#endif
