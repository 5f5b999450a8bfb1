// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * egressd daemon: one proxy for many tenants, configured by dconfig.h.
 *
 *   load + validate the config (nothing starts on an error)
 *   -> bind the proxy on its fixed port (same port across restarts: the
 *      programs a previous daemon left attached redirect there)
 *   -> load the programs with their maps pinned in bpffs (adopted if a
 *      previous daemon pinned them) and fill the policy banks
 *   -> attach with pinned links to every attach point, or swap the new
 *      programs into the links a previous daemon pinned
 *   -> bind every existing cgroup below the attach points that a binding
 *      matches, and watch for new ones (inotify): a new cgroup is enforced
 *      from its first instant (the programs sit on an ancestor), and gets
 *      its own policy as soon as we see it. Until then, and for good if
 *      no binding matches it, the kernel judges it by its nearest bound
 *      ancestor's policy (egr_policy_lookup); with no bound ancestor
 *      either, it is denied everything (no policy = deny). A cgroup the
 *      walk cannot judge (too deep for the programs, an error) is denied
 *      everything; an attach point removed and made again gets its
 *      programs again.
 *   -> serve; SIGHUP reloads (validated completely first; an invalid file
 *      leaves the running config in place); SIGTERM stops serving and
 *      leaves the pins: the cgroups stay enforced, failing closed, until a
 *      daemon comes back.
 *
 * Policies live in two banks of policy ids (EGR_MAX_POLICIES / 2 each);
 * a reload writes the other bank and then rebinds the cgroups, so an
 * origin recorded just before a reload still names a policy of the
 * config it was recorded under.
 */
#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/mount.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include <linux/magic.h>

#include "audit.h"
#include "bpfload.h"
#include "ca.h"
#include "cgroup.h"
#include "config.h"
#include "control.h"
#include "daemon.h"
#include "dconfig.h"
#include "dnsproxy.h"
#include "intercept.h"
#include "kevent.h"
#include "kfold.h"
#include "log.h"
#include "metrics.h"
#include "netns.h"
#include "proxy.h"

#define DAEMON_BANK (EGR_MAX_POLICIES / 2)
#define DAEMON_MAX_WATCHES 65536

struct daemon_watch {
	int wd;
	uint64_t id;
	char *path; /* relative to the cgroup2 mount, "/a/b" */
	bool user;  /* writable by a user, or below one that is */
	long next;  /* the next watch in its wd_head bucket, -1: none */
	long pnext; /* the next in its path_head bucket, -1: none */
};

/* A delegate's own subtree (daemon_below_delegated's top). */
struct daemon_delegation {
	uint64_t id;
	unsigned denied; /* cgroups below it bound to deny-all, this walk */
	bool whole;      /* over DAEMON_DELEGATED_DENIALS: denied itself, until
			  * the daemon restarts */
};

/* Deny entries one delegated subtree may take in egr_cgroups (4096 shared
 * by every tenant) before it is denied everything as a whole. */
#define DAEMON_DELEGATED_DENIALS 16

struct daemon {
	struct config cfg;
	struct kfold *fold;      /* kernel decisions folded for the log */
	bool events_open;        /* the ring is read (egr_bpf_events_open) */
	const char *config_path;
	char pin_dir[PATH_MAX];
	char mount[PATH_MAX];
	uint16_t port;

	pthread_mutex_t lock;    /* dc, bank, old */
	struct dconfig *dc;
	unsigned bank;           /* 0 or 1: where dc's policies are */
	struct dconfig *prev;    /* the other bank's config, kept alive */
	const struct dconfig *boot; /* the config started with: its listen,
				     * audit, dns and proxy settings run until
				     * a restart (a reload keeps it alive) */
	struct dconfig **retired;
	size_t n_retired;

	struct audit *audit;
	struct egr_bpf *bpf;
	struct proxy *proxy;
	struct dnsproxy *dns;
	/* TLS interception: created by the first config that intercepts or
	 * has gateways, kept across reloads; CAs a reload replaced stay
	 * allocated (connections hold their leaves) until exit. */
	struct intercept *ic;
	bool ic_started;
	struct ca *ca;
	struct ca **old_cas;
	size_t n_old_cas;
	struct netns *ns;        /* listeners in pods' network namespaces */
	int ino;
	/* Changed by the main thread only, under watch_lock, which other
	 * threads take to look a name up (daemon_cgroup_name). */
	pthread_mutex_t watch_lock;
	struct daemon_watch *watches;
	size_t n_watches;
	long *wd_head;       /* DAEMON_WD_BUCKETS chains of watches by wd */
	long *path_head;     /* and by path (a removed cgroup is reported to
			      * its parent's watch by name: IN_DELETE) */
	bool watches_full;   /* said once: DAEMON_MAX_WATCHES reached */
	unsigned vanished;   /* cgroups gone while walked, this pass */
	/* Attach points of d->dc (dconfig_attach_points' order): the cgroup
	 * id the programs are attached to, 0 while it does not exist; and
	 * the directories above them watched for their re-creation. */
	uint64_t *ap_ids;
	size_t n_ap_ids;
	int *ap_wds;
	size_t n_ap_wds;
	/* cgroup ids daemon_attach_all()'s walk bound or unbound; every
	 * other binding in the kernel is pruned after it */
	uint64_t *walked;
	size_t n_walked, cap_walked;
	bool walking_all;    /* in daemon_attach_all: record the walk */
	bool walk_incomplete; /* some cgroups could not be judged: denied */
	/* Delegated subtrees (daemon_bind): how many of their cgroups got a
	 * deny entry of their own; counted again at every full walk. */
	struct daemon_delegation *delegations;
	size_t n_delegations;

	/* Audit tap targets: metrics from the start, the control socket once
	 * open (read by the proxy threads, hence atomic). */
	struct metrics *metrics;
	struct control *ctl;
};

void daemon_usage(FILE *out)
{
	fprintf(out,
"Usage: egressd daemon [--config FILE] [--bpffs DIR] [--port N] [--check] [-v]\n"
"\n"
"Enforce the policies of FILE (default " DCONFIG_DEFAULT_PATH ") on the\n"
"cgroups its bindings name, for every process in them, until stopped.\n"
"See docs/daemon.md.\n"
"\n"
"  -c, --config FILE   configuration (JSON)\n"
"      --bpffs DIR     bpffs where programs and maps are pinned\n"
"                      (default /sys/fs/bpf; pins go to DIR/egressd)\n"
"      --port N        proxy port on 127.0.0.1 and ::1, TCP and UDP (default\n"
"                      15001); keep it across restarts, and outside the\n"
"                      kernel's ephemeral port range\n"
"      --check         validate the configuration and exit (0 ok, 2 error)\n"
"  -v, --verbose       debug diagnostics too\n"
"\n"
"Signals: SIGHUP reloads the configuration (an invalid one is refused and\n"
"the running one stays); SIGTERM/SIGINT stop serving, leaving the cgroups\n"
"enforced (connections fail) until the daemon runs again. With\n"
"NOTIFY_SOCKET set (systemd Type=notify) it sends READY=1 once enforcing.\n");
}

static uint64_t daemon_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* ---- policies ------------------------------------------------------- */

static const struct policy *daemon_policy_for(void *ctx, const struct egr_origin *o)
{
	struct daemon *d = ctx;
	const struct policy *p = NULL;
	unsigned bank = o->policy_id / DAEMON_BANK, idx = o->policy_id % DAEMON_BANK;
	const struct dconfig *c;

	if (o->policy_id >= EGR_MAX_POLICIES)
		return NULL;
	pthread_mutex_lock(&d->lock);
	c = bank == d->bank ? d->dc : d->prev;
	if (c && idx < c->n_policies)
		p = c->policies[idx].policy;
	pthread_mutex_unlock(&d->lock);
	return p;
}

/* The name is copied under the lock: the main thread may grow the table
 * (realloc) or drop a removed cgroup's entry (free) at any time. */
static const char *daemon_cgroup_name(void *ctx, uint64_t id, char *buf, size_t len)
{
	struct daemon *d = ctx;
	const char *found = NULL;
	size_t i;

	pthread_mutex_lock(&d->watch_lock);
	for (i = 0; i < d->n_watches; i++) {
		if (d->watches[i].id == id) {
			snprintf(buf, len, "%s", d->watches[i].path);
			found = buf;
			break;
		}
	}
	pthread_mutex_unlock(&d->watch_lock);
	return found;
}

/* The policy id the nearest bound cgroup above rel has (as the kernel
 * walks its ancestors). -ENOENT: none. */
static int daemon_policy_above(struct daemon *d, const char *rel, uint32_t *out)
{
	char path[PATH_MAX], abs[2 * PATH_MAX];
	char *slash;
	struct stat st;

	snprintf(path, sizeof(path), "%s", rel);
	while ((slash = strrchr(path, '/')) && slash != path) {
		*slash = '\0';
		snprintf(abs, sizeof(abs), "%s%s", d->mount, path);
		if (stat(abs, &st) == 0 && egr_bpf_cgroup_binding(d->bpf, st.st_ino, out) == 0)
			return 0;
	}
	return -ENOENT;
}

/*
 * The policy id that binds cgroup id now: its own binding, else its
 * nearest bound ancestor's (found by path below the mount, as the kernel
 * walks its ancestors). -ENOENT: none, denied everything.
 */
static int daemon_current_policy_id(struct daemon *d, uint64_t id, uint32_t *out)
{
	char path[PATH_MAX];
	const char *name;

	if (egr_bpf_cgroup_binding(d->bpf, id, out) == 0)
		return 0;
	name = daemon_cgroup_name(d, id, path, sizeof(path));
	if (!name)
		return -ENOENT;
	return daemon_policy_above(d, path, out);
}

/*
 * A connected UDP socket (c-ares in Node keeps one for its lifetime) and
 * a DNS-over-TCP connection have the origin their connect() recorded,
 * policy id included, for as long as they live; two reloads later that id
 * is in a bank the newest config refilled. Each query is judged by the
 * cgroup's binding now.
 */
static void daemon_origin_refresh(void *ctx, struct egr_origin *o)
{
	struct daemon *d = ctx;

	if (daemon_current_policy_id(d, o->cgroup_id, &o->policy_id))
		o->policy_id = EGR_MAX_POLICIES; /* none: daemon_policy_for refuses */
}

static int daemon_origin_for_udp(void *ctx, const struct sockaddr *peer, socklen_t peer_len,
				 struct egr_origin *o)
{
	struct daemon *d = ctx;
	int err;

	(void)peer_len;
	err = egr_bpf_udp_origin_from(d->bpf, d->port, peer, o);
	if (err)
		return err;
	daemon_origin_refresh(d, o);
	return 0;
}

/* The cgroup's and the policy's names for a kernel decision, as they are
 * now (the policy id names a bank a reload may reuse). */
static void daemon_event_names(struct daemon *d, const struct egr_event *e, char *cgbuf,
			       size_t len, const char **cgroup, const char **policy)
{
	const struct policy *p;

	*cgroup = e->origin.cgroup_id ? daemon_cgroup_name(d, e->origin.cgroup_id, cgbuf, len)
				      : NULL;
	p = e->reason == EGR_REASON_NO_POLICY || !e->origin.cgroup_id
		    ? NULL
		    : daemon_policy_for(d, &e->origin);
	*policy = p ? p->name : NULL;
}

/* Kept through the fold's window for the records its end writes: the
 * names at the first decision of a kind, not a second later (after a
 * reload, or once the cgroup is gone). */
struct daemon_names {
	const char *cgroup, *policy;
	char s[];
};

/* What daemon_names_dup looks the names up with. */
struct daemon_fold_src {
	struct daemon *d;
	const struct egr_event *e;
};

static void *daemon_names_dup(void *src)
{
	struct daemon *d = ((struct daemon_fold_src *)src)->d;
	const struct egr_event *e = ((struct daemon_fold_src *)src)->e;
	char cgbuf[PATH_MAX];
	const char *cg, *pol;
	size_t lc, lp;
	struct daemon_names *n;

	daemon_event_names(d, e, cgbuf, sizeof(cgbuf), &cg, &pol);
	lc = cg ? strlen(cg) + 1 : 0;
	lp = pol ? strlen(pol) + 1 : 0;
	n = malloc(sizeof(*n) + lc + lp);
	if (!n)
		return NULL;
	n->cgroup = cg ? memcpy(n->s, cg, lc) : NULL;
	n->policy = pol ? memcpy(n->s + lc, pol, lp) : NULL;
	return n;
}

/* A decision the kernel took alone (port, CIDR, loopback, UDP, socket
 * type, no binding): one audit record, like the proxy's, or one for its
 * repeats (kfold.h). */
static void daemon_emit_event(void *ctx, const struct egr_event *e, const struct kfold_span *sp)
{
	struct daemon *d = ctx;
	struct audit_record r;
	char cgbuf[PATH_MAX], detail[256];
	const struct daemon_names *n;

	kevent_to_record(e, &r);
	kevent_span(&r, sp, detail, sizeof(detail));
	n = sp->payload; /* NULL if it could not be made */
	if (n) {
		r.cgroup = r.cgroup_id ? n->cgroup : NULL;
		r.policy = n->policy;
	} else {
		daemon_event_names(d, e, cgbuf, sizeof(cgbuf), &r.cgroup, &r.policy);
		if (!r.cgroup_id)
			r.cgroup = NULL;
	}
	if (sp->any_cgroup)
		r.policy = NULL; /* several cgroups: several policies */
	audit_write(d->audit, &r);
}

/* Folded (kfold.h): a flood of refusals is a few records a second. */
static void daemon_on_event(void *ctx, const struct egr_event *e)
{
	struct daemon *d = ctx;
	struct daemon_fold_src src = { d, e };

	kfold_event_tagged(d->fold, e, 0, &src);
}

/* Every audit record, on its writer's thread (audit.h): never blocks. */
static void daemon_audit_tap(void *ctx, const struct audit_record *r, const char *json)
{
	struct daemon *d = ctx;

	metrics_count_record(d->metrics, r);
	control_tap(__atomic_load_n(&d->ctl, __ATOMIC_ACQUIRE), r, json);
}

/* Write the policies of c into bank: the kernel's view (ports, CIDRs). */
static int daemon_fill_bank(struct daemon *d, const struct dconfig *c, unsigned bank)
{
	size_t i;
	int err;

	if (c->n_policies > DAEMON_BANK) {
		log_error("%s: %zu policies, at most %d", c->path, c->n_policies, DAEMON_BANK);
		return -E2BIG;
	}
	for (i = 0; i < c->n_policies; i++) {
		err = egr_bpf_set_policy(d->bpf, bank * DAEMON_BANK + (unsigned)i,
					 c->policies[i].policy);
		if (err)
			return err;
	}
	/* The slots after them held policies of the config two reloads
	 * back: no id there may still name one of those. */
	for (i = c->n_policies; i < DAEMON_BANK; i++) {
		err = egr_bpf_clear_policy(d->bpf, bank * DAEMON_BANK + (unsigned)i);
		if (err)
			return err;
	}
	return 0;
}

/* systemd's readiness protocol (sd_notify(3), without libsystemd): one
 * datagram to $NOTIFY_SOCKET, a path or "@abstract". Type=notify units
 * (deploy/systemd/egressd.service) count as started only at READY=1, so
 * agents ordered after egressd start once their cgroups are enforced. */
static void daemon_notify(const char *msg)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t len;
	int fd;

	if (!path || (path[0] != '/' && path[0] != '@'))
		return;
	len = strlen(path);
	if (len >= sizeof(sa.sun_path))
		return;
	memcpy(sa.sun_path, path, len);
	if (sa.sun_path[0] == '@')
		sa.sun_path[0] = '\0';
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	if (sendto(fd, msg, strlen(msg), MSG_NOSIGNAL, (struct sockaddr *)&sa,
		   (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) < 0)
		log_warn("sd_notify %s to %s: %s", msg, path, strerror(errno));
	close(fd);
}

/* ---- cgroups -------------------------------------------------------- */

static int daemon_policy_index(const struct dconfig *c, const struct dconfig_binding *b)
{
	size_t i;

	for (i = 0; i < c->n_policies; i++)
		if (&c->policies[i] == b->policy)
			return (int)i;
	return -1;
}

/*
 * Whoever can write a cgroup's directory can make cgroups in it, name
 * them, and move its processes between them. Below a cgroup delegated to
 * a user (systemd's Delegate=yes, a rootless container's subtree), the
 * delegate could name one to match a binding meant for somewhere else (a
 * `**` glob for pod cgroups matches a "podX" the delegate made inside its
 * own pod) and move itself there, or make thousands that match, each a
 * tenant of its own in the kernel's tables. A cgroup is below a delegated
 * one when a directory above it, up to the mount, is not root's or is
 * group/other-writable; the delegated cgroup itself (its parent is root's)
 * is bound as usual. Returns true and names the writer in who; *top is
 * the delegate's own subtree (the highest directory a user owns above
 * rel, below the nearest one root keeps to itself, whatever uids own the
 * ones in between), 0 if only directories root shares with a group are.
 */
static bool daemon_below_delegated(const struct daemon *d, const char *rel, char *who,
				   size_t wholen, uint64_t *top)
{
	char abs[2 * PATH_MAX], *slash;
	size_t ml = strlen(d->mount);
	uid_t owner = 0;
	bool below = false;
	struct stat st;

	*top = 0;
	snprintf(abs, sizeof(abs), "%s%s", d->mount, rel);
	while ((slash = strrchr(abs + ml, '/')) && slash != abs + ml) {
		*slash = '\0';
		if (stat(abs, &st) != 0) {
			if (!below)
				snprintf(who, wholen, "unknown (%s: %s)", abs + ml,
					 strerror(errno));
			return true; /* gone or unreadable: trust nothing below */
		}
		if (below) {
			/* the delegate's own subtree goes up as far as
			 * directories root has not kept to itself: the
			 * highest of them a user owns is the delegate's top,
			 * also above directories of other uids (a rootless
			 * container's users, its subordinate uids, make
			 * their own below it: each must not count as a
			 * delegate with a cap of its own) */
			if (st.st_uid == 0 && !(st.st_mode & (S_IWGRP | S_IWOTH)))
				break;
			if (st.st_uid != 0)
				*top = st.st_ino;
			continue;
		}
		if (st.st_uid == 0 && !(st.st_mode & (S_IWGRP | S_IWOTH)))
			continue;
		below = true;
		owner = st.st_uid;
		if (owner != 0) {
			snprintf(who, wholen, "uid %u (%s)", (unsigned)owner, abs + ml);
			*top = st.st_ino;
		} else {
			/* root's but shared with a group: no one delegate's */
			snprintf(who, wholen, "group or others (%s)", abs + ml);
		}
	}
	return below;
}

/* The record of delegated cgroup id; NULL: none yet. */
static struct daemon_delegation *daemon_delegation_find(struct daemon *d, uint64_t id)
{
	size_t i;

	for (i = 0; i < d->n_delegations; i++)
		if (d->delegations[i].id == id)
			return &d->delegations[i];
	return NULL;
}

/* The same, made if new; NULL: out of memory. */
static struct daemon_delegation *daemon_delegation(struct daemon *d, uint64_t id)
{
	struct daemon_delegation *v = daemon_delegation_find(d, id);

	if (v)
		return v;
	v = realloc(d->delegations, (d->n_delegations + 1) * sizeof(*v));
	if (!v)
		return NULL;
	d->delegations = v;
	v = &d->delegations[d->n_delegations++];
	memset(v, 0, sizeof(*v));
	v->id = id;
	return v;
}

/* Bind one cgroup (path relative to the mount) to its policy, if a binding
 * matches; else it inherits from an ancestor, or is denied everything. */
static void daemon_bind(struct daemon *d, const char *rel, uint64_t id)
{
	const struct dconfig_binding *b = dconfig_match(d->dc, rel);
	struct daemon_delegation *dg;
	char who[PATH_MAX + 64];
	uint32_t above;
	uint64_t top;
	int idx;

	/* a delegate's subtree denied as a whole stays so (a reload too) */
	dg = daemon_delegation_find(d, id);
	if (dg && dg->whole) {
		egr_bpf_bind_cgroup(d->bpf, id, EGR_MAX_POLICIES);
		return;
	}
	if (!b) {
		egr_bpf_unbind_cgroup(d->bpf, id);
		return;
	}
	idx = daemon_policy_index(d->dc, b);
	if (idx < 0) { /* cannot be: never left with an older binding */
		egr_bpf_bind_cgroup(d->bpf, id, EGR_MAX_POLICIES);
		return;
	}
	/*
	 * Below a delegated cgroup no binding of its own: a binding that
	 * gives the policy it would inherit anyway is left to inheritance
	 * (the cgroup counts as the bound one above it, and a delegate
	 * making thousands takes no entries); any other may be the
	 * delegate's pick, and inheriting instead could loosen what the
	 * config meant for a process that cannot move itself: denied
	 * everything (an id no policy slot has), its children too.
	 */
	if (daemon_below_delegated(d, rel, who, sizeof(who), &top)) {
		/* the same policy, or a deny above already: inherited */
		if (daemon_policy_above(d, rel, &above) == 0 &&
		    (above == d->bank * DAEMON_BANK + (unsigned)idx ||
		     above >= EGR_MAX_POLICIES)) {
			egr_bpf_unbind_cgroup(d->bpf, id);
			return;
		}
		log_warn("cgroup %s: binding %s not applied: a cgroup above it can be "
			 "written by %s (delegated), and it would give another policy than "
			 "the one above; denied everything",
			 rel, b->cgroup, who);
		/* A delegate could make thousands: past a few (or if the map
		 * is full) its own subtree is denied as a whole, one entry. A
		 * directory root shares with a group has no one delegate to
		 * deny: each cgroup there takes its own entry. */
		dg = top ? daemon_delegation(d, top) : NULL;
		if ((!top || (dg && dg->denied < DAEMON_DELEGATED_DENIALS)) &&
		    egr_bpf_bind_cgroup(d->bpf, id, EGR_MAX_POLICIES) == 0) {
			if (dg)
				dg->denied++;
			return;
		}
		if (top && egr_bpf_bind_cgroup(d->bpf, top, EGR_MAX_POLICIES) == 0) {
			char name[PATH_MAX];

			egr_bpf_unbind_cgroup(d->bpf, id); /* denied from above */
			if (dg && !dg->whole)
				log_error("delegated cgroup %s: more than %d cgroups below it "
					  "match bindings of other policies: denied everything, "
					  "its whole subtree, until egressd restarts",
					  daemon_cgroup_name(d, top, name, sizeof(name)) ?: "?",
					  DAEMON_DELEGATED_DENIALS);
			if (dg)
				dg->whole = true;
			return;
		}
		log_error("cgroup %s: could not be denied everything (egr_cgroups full?)", rel);
		return;
	}
	if (egr_bpf_bind_cgroup(d->bpf, id, d->bank * DAEMON_BANK + (unsigned)idx) == 0)
		log_info("cgroup %s: policy %s (binding %s)", rel, b->policy->name, b->cgroup);
}

/* Attach points of old that new has not: their programs stay attached. */
static void daemon_warn_removed(const struct dconfig *old, const struct dconfig *new)
{
	size_t i, j, n_old, n_new;
	const char *const *o = dconfig_attach_points(old, &n_old);
	const char *const *n = dconfig_attach_points(new, &n_new);

	for (i = 0; i < n_old; i++) {
		for (j = 0; j < n_new && strcmp(o[i], n[j]); j++)
			;
		if (j == n_new)
			log_warn("reload: attach point %s is no longer in the config: its "
				 "cgroups stay enforced and are denied everything until its "
				 "pins are removed (docs/daemon.md, \"Restarts fail closed\")",
				 o[i]);
	}
}

/* ---- the walk ------------------------------------------------------- */

/*
 * The programs find a cgroup's policy by its own binding, else by the
 * bindings of its ancestors at levels EGR_MAX_CGROUP_DEPTH .. 0 (the root
 * is level 0; egr_policy_lookup). Down to level DAEMON_MAX_LEVEL a cgroup
 * sees every ancestor; below it, the ones in between are invisible, and
 * its policy could not be what the daemon meant. So the walk stops there:
 * a deeper cgroup (or one whose path is too long to be named, PATH_MAX)
 * is denied everything through its ancestor at level
 * EGR_MAX_CGROUP_DEPTH or above, which every cgroup below sees.
 */
#define DAEMON_MAX_LEVEL (EGR_MAX_CGROUP_DEPTH + 1)
#define DAEMON_WD_BUCKETS 4096

static size_t daemon_wd_bucket(int wd)
{
	return ((uint32_t)wd * 2654435761u) % DAEMON_WD_BUCKETS;
}

/* Index of the watch of wd in d->watches, or -1. */
static long daemon_watch_find(const struct daemon *d, int wd)
{
	long i;

	if (!d->wd_head)
		return -1;
	for (i = d->wd_head[daemon_wd_bucket(wd)]; i >= 0; i = d->watches[i].next)
		if (d->watches[i].wd == wd)
			return i;
	return -1;
}

static size_t daemon_path_bucket(const char *path)
{
	uint32_t h = 2166136261u; /* FNV-1a */

	for (; *path; path++)
		h = (h ^ (uint8_t)*path) * 16777619u;
	return h % DAEMON_WD_BUCKETS;
}

/* Index of the watch of the cgroup at path, or -1. */
static long daemon_watch_find_path(const struct daemon *d, const char *path)
{
	long i;

	if (!d->path_head)
		return -1;
	for (i = d->path_head[daemon_path_bucket(path)]; i >= 0; i = d->watches[i].pnext)
		if (!strcmp(d->watches[i].path, path))
			return i;
	return -1;
}

/* Watch i's bucket and link in the chain by wd (by_path false) or by
 * path: the same hash chains, two keys. */
static long *daemon_chain_head(struct daemon *d, long i, bool by_path)
{
	return by_path ? &d->path_head[daemon_path_bucket(d->watches[i].path)]
		       : &d->wd_head[daemon_wd_bucket(d->watches[i].wd)];
}

static long *daemon_chain_next(struct daemon *d, long i, bool by_path)
{
	return by_path ? &d->watches[i].pnext : &d->watches[i].next;
}

/* Put watch i in both chains, or take it out of both. */
static void daemon_watch_link(struct daemon *d, long i)
{
	for (int k = 0; k < 2; k++) {
		long *h = daemon_chain_head(d, i, k);

		*daemon_chain_next(d, i, k) = *h;
		*h = i;
	}
}

static void daemon_watch_unlink(struct daemon *d, long i)
{
	for (int k = 0; k < 2; k++) {
		long *p = daemon_chain_head(d, i, k);

		while (*p >= 0 && *p != i)
			p = daemon_chain_next(d, *p, k);
		if (*p == i)
			*p = *daemon_chain_next(d, i, k);
	}
}

/* Forget watch i (its cgroup is gone). */
static void daemon_watch_remove(struct daemon *d, long i)
{
	long last = (long)d->n_watches - 1;
	char *gone;

	pthread_mutex_lock(&d->watch_lock);
	daemon_watch_unlink(d, i);
	gone = d->watches[i].path;
	if (i != last) {
		daemon_watch_unlink(d, last);
		d->watches[i] = d->watches[last];
		daemon_watch_link(d, i);
	}
	d->n_watches--;
	pthread_mutex_unlock(&d->watch_lock);
	free(gone);
}

static int daemon_watch_add(struct daemon *d, const char *abs, const char *rel, uint64_t id,
			    bool user)
{
	struct daemon_watch *w;
	char *path;
	int wd;
	size_t i;

	if (!d->wd_head) {
		d->wd_head = malloc(DAEMON_WD_BUCKETS * sizeof(*d->wd_head));
		d->path_head = malloc(DAEMON_WD_BUCKETS * sizeof(*d->path_head));
		if (!d->wd_head || !d->path_head) {
			free(d->wd_head);
			free(d->path_head);
			d->wd_head = d->path_head = NULL;
			return -ENOMEM;
		}
		for (i = 0; i < DAEMON_WD_BUCKETS; i++)
			d->wd_head[i] = d->path_head[i] = -1;
	}
	/* IN_DELETE: cgroupfs reports a removed cgroup to its parent's
	 * watch only, never with IN_DELETE_SELF on its own */
	wd = inotify_add_watch(d->ino, abs, IN_CREATE | IN_DELETE | IN_DELETE_SELF | IN_ONLYDIR);
	if (wd < 0)
		return -errno;
	if (daemon_watch_find(d, wd) >= 0)
		return 0;
	if (d->n_watches >= DAEMON_MAX_WATCHES) {
		inotify_rm_watch(d->ino, wd);
		return -E2BIG;
	}
	path = strdup(rel);
	if (!path)
		return -ENOMEM;
	pthread_mutex_lock(&d->watch_lock);
	w = realloc(d->watches, (d->n_watches + 1) * sizeof(*w));
	if (w) {
		long idx = (long)d->n_watches++;

		d->watches = w;
		w[idx].wd = wd;
		w[idx].id = id;
		w[idx].path = path;
		w[idx].user = user;
		daemon_watch_link(d, idx);
	}
	pthread_mutex_unlock(&d->watch_lock);
	if (!w) {
		free(path);
		return -ENOMEM;
	}
	/* path is in d->watches[idx], freed by daemon_watch_remove */
	// cppcheck-suppress memleak
	return 0;
}

static unsigned daemon_level(const char *rel)
{
	unsigned n = 0;

	if (!strcmp(rel, "/"))
		return 0;
	for (; *rel; rel++)
		n += *rel == '/';
	return n;
}

/* The id of rel's ancestor at level (rel itself at its own level). */
static int daemon_ancestor_id(const struct daemon *d, const char *rel, unsigned level,
			      uint64_t *id)
{
	char abs[PATH_MAX];
	const char *p = rel;
	struct stat st;
	unsigned l = 0;
	int n;

	while (l < level && *p) {
		p++;
		p += strcspn(p, "/");
		l++;
	}
	n = snprintf(abs, sizeof(abs), "%s%.*s", d->mount, (int)(p - rel), rel);
	if (n >= (int)sizeof(abs))
		return -ENAMETOOLONG;
	if (stat(abs, &st))
		return -errno;
	*id = st.st_ino;
	return 0;
}

/* A cgroup the walk cannot judge lies below rel (at level): rel's
 * ancestor at level EGR_MAX_CGROUP_DEPTH or above, which every cgroup
 * below it sees, is denied everything. whole: for good (until egressd
 * restarts; the cgroup is too deep, not a passing error). */
static void daemon_deny_below(struct daemon *d, const char *rel, unsigned level, uint64_t id,
			      bool whole)
{
	struct daemon_delegation *dg;
	unsigned at = level < EGR_MAX_CGROUP_DEPTH ? level : EGR_MAX_CGROUP_DEPTH;
	char who[PATH_MAX + 64];
	uint64_t top;

	/*
	 * In a delegate's subtree the delegate chooses how many such
	 * cgroups there are: each denial takes an entry of egr_cgroups,
	 * which every tenant shares. They count against its cap, as
	 * daemon_bind's do; past it, its own subtree is denied as a whole
	 * (one entry, which every cgroup below it sees if the delegate's
	 * top is at level 16 or above).
	 */
	if (whole && daemon_below_delegated(d, rel, who, sizeof(who), &top) && top &&
	    (dg = daemon_delegation(d, top)) &&
	    (dg->whole || dg->denied >= DAEMON_DELEGATED_DENIALS)) {
		char name[PATH_MAX];
		const char *tn = daemon_cgroup_name(d, top, name, sizeof(name));

		if (tn && daemon_level(tn) <= EGR_MAX_CGROUP_DEPTH) {
			if (egr_bpf_bind_cgroup(d->bpf, top, EGR_MAX_POLICIES))
				d->walk_incomplete = true;
			if (!dg->whole)
				log_error("delegated cgroup %s: more than %d cgroups below it are "
					  "too deep or have too long a path: denied everything, "
					  "its whole subtree, until egressd restarts", tn,
					  DAEMON_DELEGATED_DENIALS);
			dg->whole = true;
			return;
		}
		/* the delegate's top is deeper than the programs see (or
		 * unknown): each ancestor at level 16 is denied, as below */
	} else if (whole && top && (dg = daemon_delegation_find(d, top))) {
		dg->denied++;
	}

	if (at != level && daemon_ancestor_id(d, rel, at, &id)) {
		log_error("cgroup %s: a cgroup below it cannot be judged, and its ancestor "
			  "at level %u cannot be found to deny it", rel, at);
		d->walk_incomplete = true;
		return;
	}
	if (egr_bpf_bind_cgroup(d->bpf, id, EGR_MAX_POLICIES))
		d->walk_incomplete = true;
	if (!whole)
		return;
	dg = daemon_delegation(d, id);
	if (dg && !dg->whole) {
		char name[PATH_MAX];

		log_error("cgroup %s: deeper than %d levels, or a path longer than %d bytes, "
			  "below it: the programs cannot see the bindings in between, so "
			  "%s (level %u) is denied everything, its whole subtree, until "
			  "egressd restarts", rel, DAEMON_MAX_LEVEL, PATH_MAX,
			  at == level ? rel : daemon_cgroup_name(d, id, name, sizeof(name)) ?: "?",
			  at);
	}
	if (dg)
		dg->whole = true;
	else
		d->walk_incomplete = true;
}

static void daemon_record_walked(struct daemon *d, uint64_t id)
{
	if (!d->walking_all)
		return;
	if (d->n_walked == d->cap_walked) {
		size_t cap = d->cap_walked ? d->cap_walked * 2 : 64;
		uint64_t *v = realloc(d->walked, cap * sizeof(*v));

		if (v) {
			d->walked = v;
			d->cap_walked = cap;
		}
	}
	if (d->n_walked < d->cap_walked)
		d->walked[d->n_walked++] = id;
	else
		d->walk_incomplete = true; /* settled as unseen: denied */
}

/*
 * Bind and watch the cgroup open at fd (rel, at level, its directory
 * writable by a user or below one that is: user) and everything below it,
 * through descriptors relative to their parents (no path is reopened).
 * A directory that vanishes meanwhile is skipped (counted in
 * d->vanished); any other error denies the cgroup it happened in
 * everything, and the walk goes on. Takes fd. rel is a PATH_MAX buffer.
 */
static void daemon_walk_fd(struct daemon *d, int fd, char *rel, unsigned level, bool user)
{
	size_t ml = strlen(d->mount), rl = strlen(rel);
	char abs[PATH_MAX];
	struct dirent *de;
	struct stat st;
	DIR *dir;

	if (fstat(fd, &st)) {
		close(fd);
		d->vanished++;
		return;
	}
	user = user || st.st_uid != 0 || (st.st_mode & (S_IWGRP | S_IWOTH));
	daemon_record_walked(d, st.st_ino);
	daemon_bind(d, rel, st.st_ino);
	snprintf(abs, sizeof(abs), "%s%s", d->mount, strcmp(rel, "/") ? rel : "");
	/* Watched before it is read: a cgroup made meanwhile is either
	 * listed below or reported. */
	if (daemon_watch_add(d, abs, rel, st.st_ino, user) == -E2BIG && !d->watches_full) {
		log_error("more than %d cgroups: new ones below %s are not seen (they "
			  "inherit their nearest bound ancestor's policy)", DAEMON_MAX_WATCHES, rel);
		d->watches_full = true;
	}
	netns_watch_cgroup(d->ns, abs);
	dir = fdopendir(fd);
	if (!dir) {
		log_error("cgroup %s: cannot list it: %s; denied everything", rel, strerror(errno));
		close(fd);
		daemon_deny_below(d, rel, level, st.st_ino, false);
		d->walk_incomplete = true;
		return;
	}
	for (;;) {
		size_t nl;
		int cfd;

		errno = 0;
		de = readdir(dir);
		if (!de) {
			if (errno) {
				log_error("cgroup %s: cannot list it: %s; denied everything",
					  rel, strerror(errno));
				daemon_deny_below(d, rel, level, st.st_ino, false);
				d->walk_incomplete = true;
			}
			break;
		}
		if (de->d_type != DT_DIR && de->d_type != DT_UNKNOWN)
			continue;
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		nl = strlen(de->d_name);
		if (level + 1 > DAEMON_MAX_LEVEL || ml + rl + 1 + nl >= PATH_MAX) {
			struct stat cst;

			if (fstatat(dirfd(dir), de->d_name, &cst, AT_SYMLINK_NOFOLLOW) == 0) {
				if (S_ISDIR(cst.st_mode))
					daemon_deny_below(d, rel, level, st.st_ino, true);
			} else if (errno == ENOENT) {
				d->vanished++;
			} else {
				/* cannot tell what it is: fail closed */
				log_error("cgroup %s: cannot look at %s below it: %s; denied "
					  "from above", rel, de->d_name, strerror(errno));
				daemon_deny_below(d, rel, level, st.st_ino, false);
				d->walk_incomplete = true;
			}
			continue;
		}
		cfd = openat(dirfd(dir), de->d_name,
			     O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (cfd < 0) {
			if (errno == ENOENT) {
				d->vanished++;
			} else if (errno != ENOTDIR) {
				log_error("cgroup %s/%s: cannot open it: %s; %s denied everything",
					  strcmp(rel, "/") ? rel : "", de->d_name, strerror(errno),
					  rel);
				daemon_deny_below(d, rel, level, st.st_ino, false);
				d->walk_incomplete = true;
			}
			continue;
		}
		snprintf(rel + rl, PATH_MAX - rl, "%s%s", rl > 1 ? "/" : "", de->d_name);
		daemon_walk_fd(d, cfd, rel, level + 1, user);
		rel[rl] = '\0';
	}
	closedir(dir);
}

/* Bind and watch rel (relative to the mount, shorter than PATH_MAX) and
 * everything below it; user: its parent is writable by a user, or below
 * one that is. A cgroup gone meanwhile is not an error. */
static void daemon_walk(struct daemon *d, const char *start, bool user)
{
	char rel[PATH_MAX], abs[PATH_MAX], who[PATH_MAX + 64];
	unsigned level = daemon_level(start);
	uint64_t top, id;
	int fd;

	if (snprintf(rel, sizeof(rel), "%s", start) >= (int)sizeof(rel) ||
	    snprintf(abs, sizeof(abs), "%s%s", d->mount, start) >= (int)sizeof(abs)) {
		log_error("cgroup %.200s...: path too long", start);
		d->walk_incomplete = true;
		return;
	}
	if (level > DAEMON_MAX_LEVEL) {
		/* an attach point too deep for the programs: denied from above */
		if (daemon_ancestor_id(d, rel, EGR_MAX_CGROUP_DEPTH, &id) == 0)
			daemon_deny_below(d, rel, EGR_MAX_CGROUP_DEPTH, id, true);
		else
			d->walk_incomplete = true;
		return;
	}
	fd = open(abs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT) {
			d->vanished++;
		} else {
			log_error("cgroup %s: cannot open it: %s", start, strerror(errno));
			d->walk_incomplete = true;
		}
		return;
	}
	if (!user && level > 0)
		user = daemon_below_delegated(d, start, who, sizeof(who), &top);
	daemon_walk_fd(d, fd, rel, level, user);
}

/* A directory name made in the cgroup of watch i (IN_CREATE): bound and
 * watched with everything below it, or, too deep or too long a path for
 * the programs, denied from above. */
static void daemon_walk_created(struct daemon *d, long i, const char *name)
{
	const struct daemon_watch *w = &d->watches[i];
	unsigned level = daemon_level(w->path);
	size_t ml = strlen(d->mount), pl = strcmp(w->path, "/") ? strlen(w->path) : 0;
	char rel[PATH_MAX], abs[PATH_MAX];
	bool user = w->user;
	struct stat st;
	int fd;

	if (level + 1 > DAEMON_MAX_LEVEL || ml + pl + 1 + strlen(name) >= PATH_MAX) {
		int err = 0;

		snprintf(abs, sizeof(abs), "%s%s", d->mount, pl ? w->path : "");
		snprintf(rel, sizeof(rel), "%s", w->path);
		fd = open(abs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0)
			err = errno;
		else if (fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW))
			err = errno;
		if (fd >= 0)
			close(fd);
		if (!err && S_ISDIR(st.st_mode)) {
			daemon_deny_below(d, rel, level, w->id, true);
		} else if (err == ENOENT) {
			d->vanished++;
		} else if (err) {
			/* cannot tell what was made there: fail closed */
			log_error("cgroup %s/%s: cannot look at it: %s; denied from above",
				  rel, name, strerror(err));
			daemon_deny_below(d, rel, level, w->id, false);
			d->walk_incomplete = true;
		}
		return;
	}
	snprintf(rel, sizeof(rel), "%s/%s", pl ? w->path : "", name);
	snprintf(abs, sizeof(abs), "%s%s", d->mount, rel);
	fd = open(abs, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		if (errno == ENOENT || errno == ENOTDIR)
			d->vanished++;
		else
			log_error("cgroup %s: cannot open it: %s; %s denied everything", rel,
				  strerror(errno), w->path);
		if (errno != ENOENT && errno != ENOTDIR)
			daemon_deny_below(d, w->path, level, w->id, false);
		return;
	}
	daemon_walk_fd(d, fd, rel, level + 1, user);
}

/* ---- attach points -------------------------------------------------- */

/* Watch the deepest existing directory above attach point ap (its parent
 * while it exists): its re-creation is then reported (IN_CREATE). */
static void daemon_ap_watch_above(struct daemon *d, const char *ap)
{
	char abs[PATH_MAX], *slash;
	size_t ml = strlen(d->mount), i;
	int wd = -1;

	if (snprintf(abs, sizeof(abs), "%s%s", d->mount, ap) >= (int)sizeof(abs))
		return;
	while ((slash = strrchr(abs + ml, '/'))) {
		*slash = '\0';
		wd = inotify_add_watch(d->ino, abs[0] ? abs : "/",
				       IN_CREATE | IN_DELETE | IN_DELETE_SELF | IN_ONLYDIR);
		if (wd >= 0 || slash == abs + ml)
			break;
	}
	if (wd < 0) {
		log_error("attach point %s: cannot watch the cgroups above it: if it is "
			  "removed and made again, it is not enforced until a reload", ap);
		return;
	}
	for (i = 0; i < d->n_ap_wds; i++)
		if (d->ap_wds[i] == wd)
			return;
	{
		int *v = realloc(d->ap_wds, (d->n_ap_wds + 1) * sizeof(*v));

		if (!v)
			return;
		d->ap_wds = v;
		d->ap_wds[d->n_ap_wds++] = wd;
	}
}

static bool daemon_is_ap_wd(const struct daemon *d, int wd)
{
	size_t i;

	for (i = 0; i < d->n_ap_wds; i++)
		if (d->ap_wds[i] == wd)
			return true;
	return false;
}

/*
 * Every attach point as it is now: one removed (a systemd slice stopped)
 * is watched for from above; one made again (the slice started) is a new
 * cgroup without programs: they are attached to it, and the cgroups below
 * it bound, at once. Until then, processes moved into it are not enforced.
 */
static void daemon_ap_check(struct daemon *d)
{
	size_t i, n;
	const char *const *aps = dconfig_attach_points(d->dc, &n);

	if (n > d->n_ap_ids)
		return; /* daemon_walk_all has not run for this config */
	for (i = 0; i < n; i++) {
		char abs[PATH_MAX];
		struct stat st;
		int fd, err, serr;

		daemon_ap_watch_above(d, aps[i]);
		if (snprintf(abs, sizeof(abs), "%s%s", d->mount, aps[i]) >= (int)sizeof(abs))
			continue;
		serr = stat(abs, &st) ? errno : 0;
		if (serr && serr != ENOENT && serr != ENOTDIR) {
			/* cannot look (ENOMEM, ...): its links stay, and
			 * with them the programs; the next event looks again */
			log_warn("attach point %s: cannot look at it: %s", aps[i], strerror(serr));
			continue;
		}
		if (serr || !S_ISDIR(st.st_mode)) {
			if (d->ap_ids[i]) {
				log_warn("attach point %s was removed: if it is made again, "
					 "egressd attaches its programs to it again", aps[i]);
				/* its links go with their pins */
				egr_bpf_unpin_cgroup(d->bpf, d->ap_ids[i]);
			}
			d->ap_ids[i] = 0;
			continue;
		}
		if (st.st_ino == d->ap_ids[i])
			continue;
		fd = open(abs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0)
			continue; /* gone again: the next event */
		if (fstat(fd, &st) == 0)
			err = egr_bpf_attach_pinned(d->bpf, fd, st.st_ino);
		else
			err = -errno;
		close(fd);
		if (err) {
			log_error("attach point %s (cgroup id %llu): its programs cannot be "
				  "attached to it: %s: it is NOT enforced", aps[i],
				  (unsigned long long)st.st_ino, strerror(-err));
			continue;
		}
		if (d->ap_ids[i]) /* replaced between two looks */
			egr_bpf_unpin_cgroup(d->bpf, d->ap_ids[i]);
		d->ap_ids[i] = st.st_ino;
		log_warn("attach point %s was made again (cgroup id %llu): programs attached, "
			 "enforcing below it", aps[i], (unsigned long long)st.st_ino);
		daemon_walk(d, aps[i], false);
	}
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* After a complete walk: forget the watches of cgroups it did not see.
 * Their IN_DELETE_SELF was lost (an overflowed queue) or never came;
 * kept, they would count against DAEMON_MAX_WATCHES for good. */
static void daemon_prune_watches(struct daemon *d)
{
	size_t dropped = 0;
	long i;

	if (d->n_walked)
		qsort(d->walked, d->n_walked, sizeof(*d->walked), cmp_u64);
	for (i = (long)d->n_watches - 1; i >= 0; i--) {
		if (d->n_walked && bsearch(&d->watches[i].id, d->walked, d->n_walked,
					   sizeof(*d->walked), cmp_u64))
			continue;
		inotify_rm_watch(d->ino, d->watches[i].wd); /* EINVAL if gone already */
		daemon_watch_remove(d, i);
		dropped++;
	}
	if (dropped)
		log_debug("forgot %zu watch(es) of cgroups that are gone", dropped);
}

/*
 * Walk every attach point (attaching the programs first, if attach) and
 * bind every cgroup below them; then no binding is left naming a policy
 * of another bank than the running one (egr_bpf_settle_cgroups): the ones
 * the walk did not see are unbound if it was complete (gone, or outside
 * every attach point: a reload removed it, or a previous daemon bound
 * it), denied everything if it was not. Returns the first attach error;
 * d->walk_incomplete says whether some cgroups could not be judged.
 */
static int daemon_walk_all(struct daemon *d, bool attach)
{
	size_t i, n;
	const char *const *aps = dconfig_attach_points(d->dc, &n);
	int first = 0, unbound, denied = 0;
	uint64_t *ids;

	if (attach) {
		/* the ids attached to now; daemon_ap_check notices changes */
		ids = calloc(n ? n : 1, sizeof(*ids));
		free(d->ap_ids);
		d->ap_ids = ids;
		d->n_ap_ids = ids ? n : 0;
	}
	d->n_walked = 0;
	d->walk_incomplete = false;
	d->walking_all = true;
	d->vanished = 0;
	for (i = 0; i < d->n_delegations; i++)
		d->delegations[i].denied = 0; /* counted again by the walk */
	for (i = 0; i < n; i++) {
		char abs[PATH_MAX];
		struct stat st;
		int fd, err = 0;

		if (snprintf(abs, sizeof(abs), "%s%s", d->mount, aps[i]) >= (int)sizeof(abs)) {
			first = first ? first : -ENAMETOOLONG;
			continue;
		}
		fd = open(abs, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (fd < 0) {
			/* no cgroup there, so none below it to bind */
			err = -errno;
			log_error("attach point %s (%s): %s: create the cgroup (e.g. the "
				  "systemd slice) before starting egressd", aps[i], abs,
				  strerror(-err));
			first = first ? first : err;
			continue;
		}
		if (fstat(fd, &st))
			st.st_ino = cgroup_id(abs);
		if (attach)
			err = egr_bpf_attach_pinned(d->bpf, fd, st.st_ino);
		close(fd);
		first = first ? first : err;
		if (!err && attach && i < d->n_ap_ids)
			d->ap_ids[i] = st.st_ino;
		/* Walked even if attaching failed: links pinned before may
		 * still enforce it, and its cgroups keep their bindings. */
		daemon_walk(d, aps[i], false);
		if (!err && attach)
			log_info("enforcing below %s", aps[i]);
	}
	d->walking_all = false;
	unbound = egr_bpf_settle_cgroups(d->bpf, d->walked, d->n_walked, !d->walk_incomplete,
					 d->bank * DAEMON_BANK,
					 d->bank * DAEMON_BANK + (uint32_t)d->dc->n_policies,
					 &denied);
	if (unbound < 0) {
		log_error("cannot settle the cgroup bindings: %s", strerror(-unbound));
		d->walk_incomplete = true;
	} else if (unbound) {
		log_info("unbound %d cgroup(s) outside the attach points (or gone)", unbound);
	}
	if (d->walk_incomplete)
		log_error("not every cgroup below the attach points could be judged (see "
			  "above): those the walk did not reach are denied everything (%d "
			  "binding(s) denied); a reload walks again", denied);
	else if (denied)
		log_warn("%d cgroup binding(s) of an earlier configuration denied everything",
			 denied);
	if (d->vanished)
		log_debug("%u cgroup(s) vanished while walked", d->vanished);
	if (!d->walk_incomplete)
		daemon_prune_watches(d);
	daemon_ap_check(d);
	return first;
}

/* ---- new and removed cgroups (inotify) ------------------------------ */

struct daemon_created {
	int wd;         /* the parent's watch */
	bool user;      /* made in a directory a user can write */
	char name[NAME_MAX + 1];
};

/*
 * One pass over what inotify reported (a bounded number of reads). Each
 * new directory costs a walk of its own subtree, usually one open that
 * fails (it is gone again) or one cgroup; those made where a user can
 * write (a delegate's subtree, which it can fill as fast as it likes) are
 * walked after every other one read in the same pass, so a delegate's
 * flood does not delay the binding of cgroups root makes elsewhere. An
 * overflowed queue (IN_Q_OVERFLOW: events were lost) walks everything
 * again. Directories gone before they were walked are only counted.
 */
static void daemon_inotify(struct daemon *d)
{
	char buf[64 * 1024] __attribute__((aligned(__alignof__(struct inotify_event))));
	struct daemon_created *made = NULL;
	size_t n_made = 0, cap_made = 0, i;
	bool overflow = false, ap_check = false;
	unsigned reads, pass;

	d->vanished = 0;
	for (reads = 0; reads < 16; reads++) {
		ssize_t n = read(d->ino, buf, sizeof(buf));
		char *p;

		if (n <= 0)
			break;
		for (p = buf; p < buf + n;) {
			struct inotify_event *ev = (struct inotify_event *)p;
			long w;

			p += sizeof(*ev) + ev->len;
			if (ev->mask & IN_Q_OVERFLOW) {
				overflow = true;
				continue;
			}
			if (daemon_is_ap_wd(d, ev->wd)) {
				ap_check = true;
				if (ev->mask & (IN_DELETE_SELF | IN_IGNORED)) {
					for (i = 0; i < d->n_ap_wds; i++)
						if (d->ap_wds[i] == ev->wd)
							d->ap_wds[i] = d->ap_wds[--d->n_ap_wds];
				}
			}
			w = daemon_watch_find(d, ev->wd);
			if (w < 0)
				continue;
			if ((ev->mask & IN_DELETE) && (ev->mask & IN_ISDIR) && ev->len) {
				/* a cgroup below w removed (cgroupfs says so
				 * only here): its watch goes, and its binding */
				char child[PATH_MAX];
				const char *pp = d->watches[w].path;

				if (snprintf(child, sizeof(child), "%s/%s", strcmp(pp, "/") ? pp : "",
					     ev->name) >= (int)sizeof(child))
					continue;
				w = daemon_watch_find_path(d, child);
				if (w < 0)
					continue;
				{
					/* made again and walked before this event
					 * was read: that one stays */
					char abs[PATH_MAX];
					struct stat cst;

					if (snprintf(abs, sizeof(abs), "%s%s", d->mount, child) <
						    (int)sizeof(abs) &&
					    stat(abs, &cst) == 0 && cst.st_ino == d->watches[w].id)
						continue;
				}
				inotify_rm_watch(d->ino, d->watches[w].wd);
			} else if (!(ev->mask & IN_DELETE_SELF)) {
				w = -1;
			}
			if (w >= 0) {
				egr_bpf_unbind_cgroup(d->bpf, d->watches[w].id);
				egr_bpf_forget_usage(d->bpf, d->watches[w].id);
				for (i = 0; i < d->n_ap_ids; i++)
					ap_check |= d->ap_ids[i] == d->watches[w].id;
				daemon_watch_remove(d, w);
				continue;
			}
			w = daemon_watch_find(d, ev->wd);
			if (w < 0)
				continue;
			if ((ev->mask & IN_CREATE) && (ev->mask & IN_ISDIR) && ev->len &&
			    !overflow) {
				if (n_made == cap_made) {
					size_t cap = cap_made ? cap_made * 2 : 64;
					struct daemon_created *v = realloc(made, cap * sizeof(*v));

					if (!v) {
						overflow = true; /* walked below, with the rest */
						continue;
					}
					made = v;
					cap_made = cap;
				}
				made[n_made].wd = ev->wd;
				made[n_made].user = d->watches[w].user;
				snprintf(made[n_made].name, sizeof(made[n_made].name), "%s",
					 ev->name);
				n_made++;
			}
		}
	}
	if (overflow) {
		log_warn("inotify: events were lost (queue overflow): walking every "
			 "attach point again");
		daemon_walk_all(d, false);
		if (d->walk_incomplete)
			log_error("after the inotify overflow, not every cgroup could be judged: "
				  "those not reached are denied everything");
	} else {
		/* root's first, then the ones users made */
		for (pass = 0; pass < 2; pass++) {
			for (i = 0; i < n_made; i++) {
				long w;

				if (made[i].user != (pass == 1))
					continue;
				w = daemon_watch_find(d, made[i].wd);
				if (w >= 0) /* its parent is still there */
					daemon_walk_created(d, w, made[i].name);
			}
		}
	}
	free(made);
	if (ap_check)
		daemon_ap_check(d);
	if (d->vanished)
		log_debug("%u new cgroup(s) were gone before they were walked", d->vanished);
}

/* ---- TLS interception ----------------------------------------------- */

static bool str_same(const char *a, const char *b)
{
	return a == b || (a && b && !strcmp(a, b));
}

static bool daemon_same_ca(const struct dconfig *a, const struct dconfig *b)
{
	return str_same(a->ca_dir, b->ca_dir) && str_same(a->ca_cert, b->ca_cert) &&
	       str_same(a->ca_key, b->ca_key);
}

/* The CA c names (NULL if none); errors "FILE:LINE: ca: reason". */
static int daemon_load_ca(const struct dconfig *c, struct ca **out, char *err, size_t errlen)
{
	char e[768];
	int r;

	*out = NULL;
	if (!c->ca_dir && !c->ca_cert)
		return 0;
	r = c->ca_dir ? ca_load_dir(c->ca_dir, true, out, e, sizeof(e)) :
			ca_load(c->ca_cert, c->ca_key, out, e, sizeof(e));
	if (r)
		snprintf(err, errlen, "%s:%d: ca: %s", c->path, c->ca_line, e);
	return r ? -EINVAL : 0; /* the file names a CA that does not load */
}

/* A credential whose source gives nothing now is answered 502 at each
 * request (never sent without it); say so at load, not at the first
 * request. */
static void daemon_check_credentials(const struct dconfig *c)
{
	char *val = malloc(REQRULE_VALUE_MAX), err[512];
	size_t i, j, k, len;

	if (!val)
		return;
	for (i = 0; i < c->n_policies; i++) {
		const struct policy *p = c->policies[i].policy;

		for (j = 0; j < p->n_intercept + p->n_gateways; j++) {
			const struct reqrule_host *h = j < p->n_intercept ?
				&p->intercept[j].rules : &p->gateways[j - p->n_intercept].rules;

			for (k = 0; k < h->n_creds; k++) {
				if (reqrule_cred_resolve(&h->creds[k], val, REQRULE_VALUE_MAX,
							 &len, err, sizeof(err)))
					log_warn("policy %s: %s: %s (its requests get 502)",
						 c->policies[i].name, h->host, err);
				explicit_bzero(val, REQRULE_VALUE_MAX);
			}
		}
	}
	free(val);
}

/*
 * Before c becomes the running config: the engine if c needs it and
 * there is none yet (started at once if the daemon is serving), and the
 * CA c names, loaded unless it is the running one. On success *ca is the
 * CA to switch to (daemon_commit_ca); on error nothing changed and err
 * says why.
 */
static int daemon_prepare_intercept(struct daemon *d, const struct dconfig *c, bool serving,
				    struct ca **ca, char *err, size_t errlen)
{
	struct intercept_params ip = { 0 };
	int e;

	*ca = d->ca;
	if (c == d->dc || !daemon_same_ca(d->dc, c)) { /* at start: c is d->dc */
		e = daemon_load_ca(c, ca, err, errlen);
		if (e)
			return e;
	}
	daemon_check_credentials(c);
	if (d->ic || !dconfig_needs_engine(c))
		return 0;
	ip.cfg = &d->cfg;
	ip.audit = d->audit;
	ip.ca = *ca;
	ip.cgroup_name = daemon_cgroup_name;
	ip.ctx = d;
	e = intercept_create(&d->ic, &ip);
	if (!e && serving) {
		e = intercept_start(d->ic);
		d->ic_started = !e;
	}
	if (e) {
		snprintf(err, errlen, "cannot start TLS interception: %s", strerror(-e));
		intercept_destroy(d->ic);
		d->ic = NULL;
		if (*ca != d->ca)
			ca_free(*ca);
		*ca = d->ca;
		return -EIO; /* the file is valid; it could not be applied */
	}
	proxy_set_intercept(d->proxy, d->ic);
	return 0;
}

static void daemon_commit_ca(struct daemon *d, struct ca *ca)
{
	struct ca **v;

	if (ca == d->ca)
		return;
	intercept_set_ca(d->ic, ca);
	if (d->ca) {
		v = realloc(d->old_cas, (d->n_old_cas + 1) * sizeof(*v));
		if (v) {
			d->old_cas = v;
			d->old_cas[d->n_old_cas++] = d->ca;
		} /* else leaked on purpose: never freed under live connections */
	}
	d->ca = ca;
}

/* Every watched cgroup (the enforced ones) through the netns scan: their
 * processes' network namespaces get listeners (netns.h). */
static void daemon_netns_scan(struct daemon *d)
{
	struct timespec ts;
	uint64_t now;
	size_t i;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
	if (!d->ns || !netns_scan_due(d->ns, now))
		return;
	netns_scan_begin(d->ns, now);
	for (i = 0; i < d->n_watches; i++) {
		char abs[PATH_MAX];
		const char *rel = d->watches[i].path;

		if (snprintf(abs, sizeof(abs), "%s%s", d->mount,
			     strcmp(rel, "/") ? rel : "") < (int)sizeof(abs))
			netns_scan_cgroup(d->ns, abs, rel);
	}
	netns_scan_end(d->ns);
}

/* ---- reload --------------------------------------------------------- */

static bool daemon_str_differ(const char *a, const char *b)
{
	return (a == NULL) != (b == NULL) || (a && strcmp(a, b));
}

/*
 * The settings a reload does not apply: the listeners, the audit sink, the
 * DNS upstream (and the resolvers' timeout), the proxy's threads and the
 * kernel relay are set up once at start. Names those of next that differ
 * from what runs into buf ("proxy.workers, audit.path"); returns how many.
 * The other proxy timeouts and the connection limits apply live
 * (daemon_apply_live).
 */
static size_t daemon_restart_only(const struct dconfig *run, const struct dconfig *next,
				  char *buf, size_t len)
{
	const struct {
		const char *name;
		bool differ;
	} f[] = {
		{ "listen.control", daemon_str_differ(run->control_socket, next->control_socket) },
		{ "listen.metrics", daemon_str_differ(run->metrics, next->metrics) },
		{ "audit.path", daemon_str_differ(run->audit_path, next->audit_path) },
		{ "audit.format", run->audit_format != next->audit_format },
		{ "dns.upstream", daemon_str_differ(run->dns_servers, next->dns_servers) },
		{ "proxy.workers", run->workers != next->workers },
		{ "proxy.resolve_timeout_ms", run->resolve_timeout_ms != next->resolve_timeout_ms },
		{ "proxy.kernel_relay_after", run->kernel_relay_after != next->kernel_relay_after },
	};
	size_t i, n = 0, off = 0;

	buf[0] = '\0';
	for (i = 0; i < sizeof(f) / sizeof(f[0]); i++) {
		if (!f[i].differ)
			continue;
		if (off < len)
			off += (size_t)snprintf(buf + off, len - off, "%s%s", n ? ", " : "",
						f[i].name);
		n++;
	}
	return n;
}

/* The proxy's timeouts (but the resolvers') and connection limits of c,
 * for the workers of the proxy and the interception engine: timers armed
 * from now on, and armed ones that a shorter timeout brings forward; the
 * limits on the next accept. */
static void daemon_apply_live(struct daemon *d, const struct dconfig *c)
{
	struct config next = d->cfg;

	dconfig_apply(c, &next);
	config_set_live(&d->cfg, &next);
	egr_bpf_set_limits(d->bpf, next.max_conns_per_cgroup);
	proxy_config_changed(d->proxy);
	intercept_config_changed(d->ic);
}

/* Every attach point of c is an existing cgroup directory; else -ENOENT
 * (or the error) with the first one missing named in err. */
static int daemon_check_attach_points(const struct daemon *d, const struct dconfig *c,
				      char *err, size_t errlen)
{
	size_t i, n;
	const char *const *aps = dconfig_attach_points(c, &n);

	for (i = 0; i < n; i++) {
		char abs[PATH_MAX];
		struct stat st;

		if (snprintf(abs, sizeof(abs), "%s%s", d->mount, aps[i]) >= (int)sizeof(abs)) {
			snprintf(err, errlen, "attach point %s: path too long", aps[i]);
			return -ENAMETOOLONG;
		}
		if (stat(abs, &st) || !S_ISDIR(st.st_mode)) {
			int e = stat(abs, &st) ? errno : ENOTDIR;

			snprintf(err, errlen, "attach point %.300s: %s: create the cgroup "
				 "(e.g. the systemd slice) before reloading", aps[i], strerror(e));
			return -e;
		}
	}
	return 0;
}

/* 0, or -EINVAL (invalid file) / -EIO with the reason in msg: egressctl
 * reload shows it (control.c). On success msg is empty, or says which
 * changed settings wait for a restart. */
static int daemon_reload(struct daemon *d, char *msg, size_t msglen)
{
	char later[512];
	struct dconfig *c = NULL;
	struct ca *ca = NULL;
	char err[1024];
	unsigned bank;
	size_t i;
	int e;

	if (dconfig_load(d->config_path, &c, err, sizeof(err))) {
		log_error("reload refused, the running configuration stays: %s", err);
		snprintf(msg, msglen, "%s", err);
		metrics_reload_result(d->metrics, false);
		return -EINVAL;
	}
	for (i = 0; i < c->n_warnings; i++)
		log_warn("%s", c->warnings[i]);
	/* As at start: a cgroup the config names but that does not exist yet
	 * would never be enforced (nothing watches for it), so nothing of
	 * this config is applied. */
	e = daemon_check_attach_points(d, c, err, sizeof(err));
	if (e) {
		log_error("reload refused, the running configuration stays: %s", err);
		snprintf(msg, msglen, "%s", err);
		dconfig_free(c);
		metrics_reload_result(d->metrics, false);
		return -EIO;
	}
	e = daemon_prepare_intercept(d, c, true, &ca, err, sizeof(err));
	if (e) {
		log_error("reload refused, the running configuration stays: %s", err);
		snprintf(msg, msglen, "%s", err);
		dconfig_free(c);
		metrics_reload_result(d->metrics, false);
		/* a CA that does not load makes the file invalid; an engine
		 * that does not start is not the file's fault (egressctl: 1) */
		return e == -EIO ? -EIO : -EINVAL;
	}
	bank = !d->bank;
	if (daemon_fill_bank(d, c, bank)) {
		log_error("reload: cannot load the new policies into the kernel; "
			  "the running configuration stays");
		snprintf(msg, msglen, "cannot load the new policies into the kernel; "
			 "the running configuration stays");
		if (ca != d->ca)
			ca_free(ca);
		dconfig_free(c);
		metrics_reload_result(d->metrics, false);
		return -EIO;
	}
	/* Before the new policies are bound: their first connection finds
	 * the CA they need. */
	daemon_commit_ca(d, ca);
	/* The kernel decisions folded so far are written under the names
	 * they were made under: a bank the reload reuses is not theirs. */
	if (d->events_open && d->fold) {
		egr_bpf_poll(d->bpf, 0);
		kfold_tick(d->fold, 0, true);
	}
	pthread_mutex_lock(&d->lock);
	/* The config two reloads back may still be referenced by a live
	 * connection: retire it, never free it while running. */
	if (d->prev) {
		struct dconfig **r = realloc(d->retired, (d->n_retired + 1) * sizeof(*r));

		if (r) {
			d->retired = r;
			d->retired[d->n_retired++] = d->prev;
		}
	}
	d->prev = d->dc;
	d->dc = c;
	d->bank = bank;
	pthread_mutex_unlock(&d->lock);
	daemon_apply_live(d, c);
	/* New attach points are attached; cgroups rebound to the new bank,
	 * those outside every attach point unbound. */
	e = daemon_walk_all(d, true);
	if (e)
		log_error("reload: some attach points could not be attached (see above)");
	daemon_warn_removed(d->prev, c);
	log_info("reloaded %s: %zu policies, %zu bindings", d->config_path,
		 c->n_policies, c->n_bindings);
	msg[0] = '\0';
	if (daemon_restart_only(d->boot, c, later, sizeof(later))) {
		log_warn("reload: changed %s: these take effect when egressd restarts; "
			 "the running values stay until then", later);
		snprintf(msg, msglen, "changed %s: these take effect when egressd "
			 "restarts; the running values stay until then", later);
	}
	metrics_reload_result(d->metrics, true);
	/* Applied, but not everywhere: not a plain success (egressctl: 1). */
	if (e || d->walk_incomplete) {
		snprintf(msg, msglen, "reloaded, but %s: %s; see the daemon's log",
			 e ? "some attach points could not be attached" :
			     "not every cgroup below the attach points could be judged",
			 e ? "their cgroups keep the programs attached before, if any" :
			     "those are denied everything until a reload judges them");
		return -EIO;
	}
	return 0;
}

/* ---- control socket (egressctl): callbacks, run on the main thread --- */

static int daemon_ctl_status(void *ctx, struct control_status *st)
{
	struct daemon *d = ctx;
	size_t i;

	st->dc = d->dc;
	st->config_path = d->config_path;
	st->pin_dir = d->pin_dir;
	st->port = d->port;
	st->n_cgroups = d->n_watches;
	st->netns = netns_list(d->ns, &st->n_netns);
	st->cfg = &d->cfg;
	st->workers = proxy_workers(d->proxy);
	/* Bound: the cgroup or an ancestor is bound in the kernel (which
	 * inherits the nearest binding); the rest are denied everything. */
	for (i = 0; i < d->n_watches; i++) {
		uint32_t id;

		if ((egr_bpf_cgroup_binding(d->bpf, d->watches[i].id, &id) == 0 ||
		     daemon_policy_above(d, d->watches[i].path, &id) == 0) &&
		    id < EGR_MAX_POLICIES)
			st->n_bound++;
	}
	return 0;
}

static int daemon_ctl_reload(void *ctx, char *err, size_t errlen)
{
	return daemon_reload(ctx, err, errlen);
}

static int daemon_ctl_conns(void *ctx, struct proxy_conn_info **out, size_t *n)
{
	struct daemon *d = ctx;
	size_t cap;
	int err;

	err = proxy_snapshot(d->proxy, out, n);
	if (err)
		return err;
	/* Handed to the interception engine: live connections too. */
	cap = *n;
	err = intercept_snapshot(d->ic, out, n, &cap);
	if (err) {
		free(*out);
		*out = NULL;
		*n = 0;
	}
	return err;
}

/* Metrics listener from the config; not fatal, like the control socket. */
static void daemon_metrics_listen(struct daemon *d)
{
	const struct dconfig *c = d->dc;
	int err;

	if (!c->metrics) {
		log_info("metrics: off (listen.metrics is null)");
		return;
	}
	err = metrics_listen(d->metrics, c->metrics_unix ? c->metrics : NULL,
			     c->metrics_unix ? NULL : &c->metrics_addr, c->metrics_port);
	if (err)
		log_error("metrics: cannot listen on %s: %s; no metrics", c->metrics,
			  err == -EADDRINUSE ? "another daemon answers there" : strerror(-err));
	else
		log_info("metrics on %s%s", c->metrics_unix ? "unix:" : "", c->metrics);
}

/* ---- main ----------------------------------------------------------- */

static int daemon_bpffs(const char *dir, char *pin_dir, size_t len)
{
	struct statfs st;

	if (statfs(dir, &st) || st.f_type != BPF_FS_MAGIC) {
		if (mkdir(dir, 0700) && errno != EEXIST)
			return -errno;
		if (mount("bpf", dir, "bpf", 0, "mode=0700")) {
			int err = -errno;

			log_error("%s is not a bpffs and mounting one failed: %s", dir,
				  strerror(-err));
			return err;
		}
	}
	if (snprintf(pin_dir, len, "%s/egressd", dir) >= (int)len)
		return -ENAMETOOLONG;
	return 0;
}

/* Is port in net.ipv4.ip_local_reserved_ports ("8080,15000-15010")? */
static bool daemon_port_reserved(uint16_t port)
{
	FILE *f = fopen("/proc/sys/net/ipv4/ip_local_reserved_ports", "re");
	char buf[4096], *tok, *save = NULL;
	bool found = false;

	if (!f)
		return false;
	if (fgets(buf, sizeof(buf), f)) {
		for (tok = strtok_r(buf, ",\n", &save); tok && !found;
		     tok = strtok_r(NULL, ",\n", &save)) {
			unsigned a = 0, b = 0;
			int n = sscanf(tok, "%u-%u", &a, &b);

			found = (n == 1 && port == a) || (n == 2 && port >= a && port <= b);
		}
	}
	fclose(f);
	return found;
}

/*
 * The programs refuse bind() to the proxy's port from enforced cgroups, but
 * not a port the kernel picks itself (bind to port 0, an unbound socket's
 * connect or listen): a port in the ephemeral range could be won that way
 * while the daemon restarts. Said at start.
 */
static void daemon_warn_ephemeral(uint16_t port)
{
	FILE *f = fopen("/proc/sys/net/ipv4/ip_local_port_range", "re");
	unsigned lo = 0, hi = 0;

	if (!f)
		return;
	if (fscanf(f, "%u %u", &lo, &hi) == 2 && port >= lo && port <= hi &&
	    !daemon_port_reserved(port))
		log_warn("port %u is in the kernel's ephemeral range (%u-%u): while egressd "
			 "restarts, an enforced process could be given it for a socket of "
			 "its own; pick a port outside it, or reserve it "
			 "(sysctl net.ipv4.ip_local_reserved_ports=%u)", port, lo, hi, port);
	fclose(f);
}

int daemon_main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "bpffs", required_argument, NULL, 'b' },
		{ "port", required_argument, NULL, 'p' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "check", no_argument, NULL, 'k' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct daemon d = { .cfg = CONFIG_DEFAULTS, .config_path = DCONFIG_DEFAULT_PATH,
			    .port = 15001, .ino = -1, .lock = PTHREAD_MUTEX_INITIALIZER,
			    .watch_lock = PTHREAD_MUTEX_INITIALIZER };
	struct proxy_params pp = { 0 };
	struct dnsproxy_params dp = { 0 };
	const char *bpffs = "/sys/fs/bpf";
	struct audit_options ao = { .format = AUDIT_JSON };
	struct control *ctl = NULL;
	struct control_params cp = { 0 };
	struct netns_params np = { 0 };
	char err[1024];
	int c, e, sfd = -1, ctl_wake = -1, pin_lock = -1, ret = 2, verbose = 0, check = 0;
	sigset_t set;
	size_t i;

	optind = 1;
	while ((c = getopt_long(argc, argv, "c:vh", longopts, NULL)) != -1) {
		switch (c) {
		case 'c':
			d.config_path = optarg;
			break;
		case 'b':
			bpffs = optarg;
			break;
		case 'p': {
			char *end;
			long v = strtol(optarg, &end, 10);

			if (*end || v < 1 || v > 65535) {
				fprintf(stderr, "egressd: --port: '%s' is not a port number\n", optarg);
				return 2;
			}
			d.port = (uint16_t)v;
			break;
		}
		case 'v':
			verbose++;
			break;
		case 'k':
			check = 1;
			break;
		case 'h':
			daemon_usage(stdout);
			return 0;
		default:
			fprintf(stderr, "egressd: see egressd daemon --help\n");
			return 2;
		}
	}
	/* INFO is the daemon's normal level: one -v adds the debug lines */
	log_set_level(verbose ? EGR_LOG_DEBUG : EGR_LOG_INFO);
	daemon_warn_ephemeral(d.port);
	if (dconfig_load(d.config_path, &d.dc, err, sizeof(err))) {
		fprintf(stderr, "egressd: %s\n", err);
		return 2;
	}
	for (i = 0; i < d.dc->n_warnings; i++)
		log_warn("%s", d.dc->warnings[i]);
	if (check) {
		struct ca *ca = NULL;

		if (daemon_load_ca(d.dc, &ca, err, sizeof(err))) {
			fprintf(stderr, "egressd: %s\n", err);
			dconfig_free(d.dc);
			return 2;
		}
		ca_free(ca);
		printf("%s: ok (%zu policies, %zu bindings, %zu attach points)\n",
		       d.config_path, d.dc->n_policies, d.dc->n_bindings,
		       d.dc->n_attach_points);
		dconfig_free(d.dc);
		return 0;
	}
	dconfig_apply(d.dc, &d.cfg);
	d.boot = d.dc;
	if (geteuid() != 0) {
		fprintf(stderr, "egressd: the daemon needs root (CAP_BPF, CAP_NET_ADMIN, "
			"CAP_SYS_ADMIN)\n");
		goto out;
	}
	if (egr_bpf_probe(err, sizeof(err))) {
		fprintf(stderr, "egressd: %s\n", err);
		goto out;
	}
	if (cgroup_find_mount(d.mount, sizeof(d.mount), err, sizeof(err))) {
		fprintf(stderr, "egressd: %s\n", err);
		goto out;
	}
	if (daemon_bpffs(bpffs, d.pin_dir, sizeof(d.pin_dir)))
		goto out;

	ao.path = d.dc->audit_path;
	ao.to_stdout = true; /* "-" or null: "path" is NULL */
	ao.format = d.dc->audit_format;
	if (audit_open(&d.audit, &ao)) {
		fprintf(stderr, "egressd: cannot open the audit log %s\n",
			ao.path ? ao.path : "(stdout)");
		goto out;
	}
	if (metrics_new(&d.metrics))
		goto out;
	audit_set_tap(d.audit, daemon_audit_tap, &d);
	if (egr_bpf_prepare_pinned(&d.bpf, d.pin_dir))
		goto out;
	/* One daemon per pin directory: what follows would take the
	 * bindings of a running one (held until this process exits). */
	pin_lock = open(d.pin_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (pin_lock < 0 || flock(pin_lock, LOCK_EX | LOCK_NB)) {
		fprintf(stderr, "egressd: %s: %s\n", d.pin_dir,
			errno == EWOULDBLOCK ? "another egressd daemon is using it" :
					       strerror(errno));
		goto out;
	}
	/* Before the port is served: no connection may reach this daemon
	 * with a policy id of the previous one's config. */
	e = egr_bpf_forget_pinned(d.pin_dir);
	if (e < 0) {
		fprintf(stderr, "egressd: cannot clear the previous daemon's bindings in %s: %s\n",
			d.pin_dir, strerror(-e));
		goto out;
	}
	if (e)
		log_info("cleared %d cgroup binding(s) of the previous daemon: denied "
			 "everything until bound again below", e);
	pp.cfg = &d.cfg;
	pp.policy_for = daemon_policy_for;
	pp.cgroup_name = daemon_cgroup_name;
	pp.ctx = &d;
	pp.conns_map_fd = egr_bpf_conns_fd(d.bpf);
	pp.audit = d.audit;
	pp.port = d.port;
	log_info("daemon: RLIMIT_NOFILE %lu (two per relayed connection)",
		 proxy_raise_nofile(NULL));
	e = proxy_create(&d.proxy, &pp);
	if (e) {
		fprintf(stderr, "egressd: cannot listen on port %u: %s\n", d.port, strerror(-e));
		goto out;
	}
	dp.cfg = &d.cfg;
	dp.policy_for = daemon_policy_for;
	dp.cgroup_name = daemon_cgroup_name;
	dp.origin_for_udp = daemon_origin_for_udp;
	dp.origin_refresh = daemon_origin_refresh;
	dp.ctx = &d;
	dp.audit = d.audit;
	dp.port = d.port;
	dp.upstream = d.cfg.dns_servers;
	e = dnsproxy_create(&d.dns, &dp);
	if (e) {
		fprintf(stderr, "egressd: cannot start the DNS proxy on port %u: %s\n",
			d.port, strerror(-e));
		goto out;
	}
	proxy_set_dnsproxy(d.proxy, d.dns);
	{
		struct ca *ca;

		if (daemon_prepare_intercept(&d, d.dc, false, &ca, err, sizeof(err))) {
			fprintf(stderr, "egressd: %s\n", err);
			goto out;
		}
		daemon_commit_ca(&d, ca);
	}
	if (egr_bpf_load(d.bpf, d.port, proxy_has_v6(d.proxy)))
		goto out;
	if (daemon_fill_bank(&d, d.dc, 0) || egr_bpf_set_limits(d.bpf, d.cfg.max_conns_per_cgroup))
		goto out;
	d.fold = kfold_new(0, 0, daemon_emit_event, &d);
	if (!d.fold) {
		fprintf(stderr, "egressd: audit log folding: %s\n", strerror(errno));
		goto out;
	}
	kfold_set_payload(d.fold, daemon_names_dup, free, NULL);
	if (egr_bpf_events_open(d.bpf, daemon_on_event, &d))
		goto out;
	d.events_open = true;
	d.ino = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (d.ino < 0) {
		fprintf(stderr, "egressd: inotify: %s\n", strerror(errno));
		goto out;
	}
	sigemptyset(&set);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigprocmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);
	sfd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK);
	if (sfd < 0)
		goto out;
	/* control_tap()'s wake-up, made before the workers start (control.h) */
	ctl_wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (ctl_wake < 0) {
		fprintf(stderr, "egressd: eventfd: %s\n", strerror(errno));
		goto out;
	}
	if (d.ic) {
		e = intercept_start(d.ic);
		d.ic_started = !e;
	}
	if ((d.ic && !d.ic_started) || dnsproxy_start(d.dns) || proxy_start(d.proxy)) {
		fprintf(stderr, "egressd: cannot start the proxy threads\n");
		goto out;
	}
	/* Pods' namespaces: without this their connections are refused
	 * (fail closed), so it is not fatal. */
	np.proxy = d.proxy;
	np.dns = d.dns;
	np.port = d.port;
	if (netns_create(&d.ns, &np))
		log_error("no listeners in other network namespaces: processes there "
			  "(pods) cannot connect");
	/* Serving before attaching: the first redirected connection finds
	 * a listener. */
	if (daemon_walk_all(&d, true))
		goto out;
	log_info("serving on port %u, config %s, pins in %s", d.port, d.config_path, d.pin_dir);
	/* Not fatal: enforcement matters more than egressctl reaching us. */
	cp.path = d.dc->control_socket ? d.dc->control_socket : DCONFIG_DEFAULT_CONTROL;
	cp.audit_path = d.dc->audit_path;
	cp.pin_dir = d.pin_dir;
	cp.status = daemon_ctl_status;
	cp.reload = daemon_ctl_reload;
	cp.conns = daemon_ctl_conns;
	cp.cgroup_name = daemon_cgroup_name;
	cp.ctx = &d;
	cp.has_wake_fd = true;
	cp.wake_fd = ctl_wake;
	if (control_open(&ctl, &cp))
		log_error("no control socket: egressctl cannot reach this daemon");
	__atomic_store_n(&d.ctl, ctl, __ATOMIC_RELEASE);
	metrics_set_sources(d.metrics, d.proxy, d.dns, d.pin_dir);
	metrics_set_audit(d.metrics, d.audit);
	daemon_metrics_listen(&d);
	/* attached, serving, egressctl and metrics up */
	daemon_notify("READY=1");

	for (;;) {
		/* the kernel's events wake the loop: drained as they come, not
		 * once per 100 ms turn, so a flood cannot fill the ring first */
		struct pollfd pfd[6] = { { sfd, POLLIN, 0 }, { d.ino, POLLIN, 0 },
					 { control_fd(ctl), POLLIN, 0 },
					 { netns_fd(d.ns), POLLIN, 0 },
					 { metrics_fd(d.metrics), POLLIN, 0 },
					 { egr_bpf_events_fd(d.bpf), POLLIN, 0 } };
		struct signalfd_siginfo si;
		static uint64_t next_sweep_ms;
		uint64_t now_ms;

		if (poll(pfd, 6, 100) < 0 && errno != EINTR)
			break;
		if (pfd[3].revents & POLLIN)
			netns_handle(d.ns);
		/* every turn: cheap when idle, and slow clients expire */
		control_handle(ctl);
		metrics_handle(d.metrics);
		if (pfd[1].revents & POLLIN)
			daemon_inotify(&d);
		daemon_netns_scan(&d);
		if ((pfd[0].revents & POLLIN) && read(sfd, &si, sizeof(si)) == sizeof(si)) {
			if (si.ssi_signo == SIGHUP) {
				/* logrotate: reopen the audit file, then reload */
				if (audit_reopen(d.audit))
					log_warn("cannot reopen the audit log; still writing the old file");
				else
					proxy_audit_reopened(d.proxy);
				daemon_reload(&d, err, sizeof(err));
				continue;
			}
			log_info("signal %u: stopping; enforced cgroups stay enforced "
				 "(fail closed) until egressd runs again", si.ssi_signo);
			daemon_notify("STOPPING=1");
			ret = 0;
			break;
		}
		egr_bpf_poll(d.bpf, 0); /* kernel decisions into the audit log */
		kfold_tick(d.fold, kfold_now_ns(), false);
		now_ms = daemon_now_ms();
		if (now_ms >= next_sweep_ms) {
			egr_bpf_sweep_conns(d.bpf, 5000000000ull);
			next_sweep_ms = now_ms + 2000;
		}
	}
out:
	if (d.fold && d.bpf && d.events_open) {
		egr_bpf_poll(d.bpf, 0); /* what the ring still holds */
		kfold_tick(d.fold, 0, true); /* repeats counted, not yet written */
	}
	/* Pods' listeners go while the proxy's workers still run. */
	netns_destroy(d.ns);
	if (sfd >= 0)
		close(sfd);
	if (d.proxy)
		proxy_stop(d.proxy);
	/* No more hand-offs; the engine's connections end (and give their
	 * proxy counts back) before the proxy is freed. */
	if (d.ic_started)
		intercept_stop(d.ic);
	if (d.proxy)
		proxy_destroy(d.proxy);
	intercept_destroy(d.ic);
	ca_free(d.ca);
	for (i = 0; i < d.n_old_cas; i++)
		ca_free(d.old_cas[i]);
	free(d.old_cas);
	if (d.dns) {
		dnsproxy_stop(d.dns);
		dnsproxy_destroy(d.dns);
	}
	/* After the threads that tap audit records into them. */
	audit_set_tap(d.audit, NULL, NULL);
	control_close(ctl);
	if (ctl_wake >= 0)
		close(ctl_wake);
	metrics_free(d.metrics);
	/* Not detached: the pins keep every attach point enforced. */
	egr_bpf_destroy(d.bpf);
	if (pin_lock >= 0)
		close(pin_lock); /* the next daemon may take the pins */
	if (d.ino >= 0)
		close(d.ino);
	for (i = 0; i < d.n_watches; i++)
		free(d.watches[i].path);
	free(d.watches);
	free(d.walked);
	free(d.wd_head);
	free(d.path_head);
	free(d.ap_ids);
	free(d.ap_wds);
	free(d.delegations);
	audit_close(d.audit);
	kfold_free(d.fold);
	for (i = 0; i < d.n_retired; i++)
		dconfig_free(d.retired[i]);
	free(d.retired);
	dconfig_free(d.prev);
	dconfig_free(d.dc);
	return ret;
}
