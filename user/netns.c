// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * Listeners in enforced processes' network namespaces (see netns.h and
 * docs/kubernetes.md).
 */
#include <errno.h>
#include <fcntl.h>
#include <net/if.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dnsproxy.h"
#include "log.h"
#include "netns.h"
#include "proxy.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

#define NETNS_MIN_GAP_MS 200     /* between scans: bounds the cost under churn */
#define NETNS_RETRY_MS 10000     /* a namespace whose listeners failed */
#define NETNS_MAX 65536          /* namespaces with listeners */
#define NETNS_PER_CGROUP 16      /* of them, found through one cgroup's processes */
#define NETNS_WARN_MS 60000      /* at most one warning about that cap per minute */
#define NETNS_MAX_DUE 8

struct netns_entry {
	struct netns_info info;
	int tcp_id, dns_id;      /* proxy / dnsproxy listener sets, 0: none */
	bool seen;               /* in the current scan */
	unsigned missed;         /* scans in a row without an enforced process */
	uint64_t retry_ms;       /* !info.ok: next attempt */
};

struct netns {
	struct netns_params p;
	uint64_t self_ino;       /* the daemon's own namespace: its listeners */
	uint64_t self_dev;
	int ino_fd;
	struct netns_entry *e;
	size_t n, cap;
	struct netns_info *infos;
	size_t n_infos;
	uint64_t last_scan_ms, now_ms;
	uint64_t due[NETNS_MAX_DUE];
	size_t n_due;
	bool warned_perm, warned_self;
	uint64_t warned_cap_ms;  /* last NETNS_PER_CGROUP warning */
	pid_t self_pid;
};

/* ---- scheduling ----------------------------------------------------------- */

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void netns_due_add(struct netns *n, uint64_t at)
{
	size_t i;

	for (i = 0; i < n->n_due; i++)
		if (n->due[i] + 100 >= at && n->due[i] <= at + 100)
			return;
	if (n->n_due < NETNS_MAX_DUE)
		n->due[n->n_due++] = at;
}

/* Now, and again later: runc puts its init process into the container's
 * cgroup before that process setns()es into the pod's namespace, so the
 * populated event alone can show the node's namespace. */
static void netns_kick(struct netns *n, uint64_t now_ms)
{
	netns_due_add(n, now_ms);
	netns_due_add(n, now_ms + 500);
	netns_due_add(n, now_ms + 2000);
}

bool netns_scan_due(const struct netns *n, uint64_t now_ms)
{
	size_t i;

	if (now_ms < n->last_scan_ms + NETNS_MIN_GAP_MS)
		return false;
	if (now_ms >= n->last_scan_ms + NETNS_SCAN_MS)
		return true;
	for (i = 0; i < n->n_due; i++)
		if (n->due[i] <= now_ms)
			return true;
	return false;
}

int netns_fd(const struct netns *n)
{
	return n ? n->ino_fd : -1;
}

void netns_handle(struct netns *n)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));

	/* Which cgroup changed does not matter: the scan reads them all. */
	while (read(n->ino_fd, buf, sizeof(buf)) > 0)
		;
	netns_kick(n, mono_ms());
}

void netns_watch_cgroup(struct netns *n, const char *abs)
{
	char path[4096];

	if (!n || snprintf(path, sizeof(path), "%s/cgroup.events", abs) >= (int)sizeof(path))
		return;
	/* The kernel drops the watch with the cgroup (IN_IGNORED). */
	if (inotify_add_watch(n->ino_fd, path, IN_MODIFY) < 0)
		log_debug("netns: watch %s: %s", path, strerror(errno));
	netns_kick(n, mono_ms());
}

/* ---- listeners inside a namespace ---------------------------------------- */

struct ns_job {
	const struct netns *n;
	int nsfd;
	int tfd4, tfd6, ufd4, ufd6, diag;
	uint64_t cookie;
	bool lo_raised;
	const char *step;
	int err;
};

/* A fresh namespace has lo down (and no 127.0.0.1 to bind); a pod's is up
 * (the CNI loopback plugin). Raising it gives the namespace nothing but
 * its own loopback, which the redirect needs. */
static int lo_up(bool *raised)
{
	struct ifreq ifr;
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0), err = 0;

	if (fd < 0)
		return -errno;
	memset(&ifr, 0, sizeof(ifr));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "lo");
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0) {
		err = -errno;
	} else if (!(ifr.ifr_flags & IFF_UP)) {
		ifr.ifr_flags |= IFF_UP;
		if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
			err = -errno;
		else
			*raised = true;
	}
	close(fd);
	return err;
}

/* Runs in its own thread: setns() changes only the calling thread's
 * namespace, and this thread ends right after, so no thread of the daemon
 * is ever left in a pod's namespace. Sockets keep the namespace they were
 * created in. */
static void *ns_thread(void *arg)
{
	struct ns_job *j = arg;
	socklen_t len = sizeof(j->cookie);

	j->step = "setns";
	if (setns(j->nsfd, CLONE_NEWNET) < 0) {
		j->err = -errno;
		return NULL;
	}
	j->step = "bringing up lo";
	j->err = lo_up(&j->lo_raised);
	if (j->err)
		return NULL;
	j->step = "TCP listener";
	j->err = proxy_listen_here(j->n->p.proxy, &j->tfd4, &j->tfd6);
	if (j->err)
		return NULL;
	if (getsockopt(j->tfd4, SOL_SOCKET, SO_NETNS_COOKIE, &j->cookie, &len) < 0)
		j->cookie = 0;
	if (j->n->p.dns) {
		j->step = "DNS listener";
		j->err = dnsproxy_listen_here(j->n->p.dns, &j->ufd4, &j->ufd6, &j->diag);
	}
	return NULL;
}

static void job_close(struct ns_job *j)
{
	int *fds[] = { &j->tfd4, &j->tfd6, &j->ufd4, &j->ufd6, &j->diag };
	size_t i;

	for (i = 0; i < sizeof(fds) / sizeof(fds[0]); i++) {
		if (*fds[i] >= 0)
			close(*fds[i]);
		*fds[i] = -1;
	}
}

static void entry_close(struct netns *n, struct netns_entry *e)
{
	if (e->tcp_id > 0)
		proxy_remove_listeners(n->p.proxy, e->tcp_id);
	if (e->dns_id > 0)
		dnsproxy_remove_listeners(n->p.dns, e->dns_id);
	e->tcp_id = e->dns_id = 0;
}

/* Open the listeners of e's namespace, through the process e->info.pid. */
static void entry_open(struct netns *n, struct netns_entry *e, bool first)
{
	struct ns_job j = { .n = n, .nsfd = -1, .tfd4 = -1, .tfd6 = -1, .ufd4 = -1,
			    .ufd6 = -1, .diag = -1 };
	char path[64];
	struct stat st;
	pthread_t t;
	int err;

	e->info.ok = false;
	e->retry_ms = n->now_ms + NETNS_RETRY_MS;
	snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)e->info.pid);
	j.nsfd = open(path, O_RDONLY | O_CLOEXEC);
	/* The process may have moved on since the stat: same namespace? */
	if (j.nsfd < 0 || fstat(j.nsfd, &st) || (uint64_t)st.st_ino != e->info.ino) {
		if (j.nsfd >= 0)
			close(j.nsfd);
		e->retry_ms = 0; /* next scan */
		return;
	}
	err = pthread_create(&t, NULL, ns_thread, &j);
	if (err) {
		j.step = "thread";
		j.err = -err;
	} else {
		pthread_join(t, NULL);
	}
	close(j.nsfd);
	if (j.err) {
		job_close(&j);
		if (first)
			log_error("netns %llu (pid %d, cgroup %s): %s: %s; connections from it "
				  "are refused (fail closed) until it works (retried every %d s)",
				  (unsigned long long)e->info.ino, (int)e->info.pid, e->info.cgroup,
				  j.step, strerror(-j.err), NETNS_RETRY_MS / 1000);
		return;
	}
	if (j.lo_raised)
		log_info("netns %llu: lo was down; brought it up", (unsigned long long)e->info.ino);
	e->info.cookie = j.cookie;
	e->info.v6 = j.tfd6 >= 0;
	e->tcp_id = proxy_add_listeners(n->p.proxy, j.tfd4, j.tfd6);
	if (j.ufd4 >= 0)
		e->dns_id = dnsproxy_add_listeners(n->p.dns, j.ufd4, j.ufd6, j.diag);
	if (e->tcp_id < 0 || e->dns_id < 0) {
		log_error("netns %llu: cannot hand its listeners to the proxy: %s",
			  (unsigned long long)e->info.ino,
			  strerror(-(e->tcp_id < 0 ? e->tcp_id : e->dns_id)));
		if (e->tcp_id < 0)
			e->tcp_id = 0;
		if (e->dns_id < 0)
			e->dns_id = 0;
		entry_close(n, e);
		return;
	}
	e->info.ok = true;
	log_info("netns %llu (cookie %llu, pid %d, cgroup %s): listening on 127.0.0.1:%u%s "
		 "(TCP proxy%s)", (unsigned long long)e->info.ino,
		 (unsigned long long)e->info.cookie, (int)e->info.pid, e->info.cgroup,
		 n->p.port, e->info.v6 ? " and [::1]" : "", e->dns_id ? ", DNS" : "");
}

/* ---- scans ----------------------------------------------------------------- */

static struct netns_entry *entry_find(struct netns *n, uint64_t ino)
{
	size_t i;

	for (i = 0; i < n->n; i++)
		if (n->e[i].info.ino == ino)
			return &n->e[i];
	return NULL;
}

static void entry_seen(struct netns *n, pid_t pid, uint64_t ino, const char *rel)
{
	struct netns_entry *e = entry_find(n, ino);

	if (e) {
		e->seen = true;
		if (!e->info.ok && n->now_ms >= e->retry_ms) {
			e->info.pid = pid;
			snprintf(e->info.cgroup, sizeof(e->info.cgroup), "%s", rel);
			entry_open(n, e, false);
		}
		return;
	}
	if (n->n >= NETNS_MAX) {
		log_error("netns: %d namespaces with listeners; pid %d's is not served",
			  NETNS_MAX, (int)pid);
		return;
	}
	if (n->n == n->cap) {
		size_t cap = n->cap ? n->cap * 2 : 16;
		struct netns_entry *ne = realloc(n->e, cap * sizeof(*ne));

		if (!ne)
			return;
		n->e = ne;
		n->cap = cap;
	}
	e = &n->e[n->n++];
	memset(e, 0, sizeof(*e));
	e->info.ino = ino;
	e->info.pid = pid;
	snprintf(e->info.cgroup, sizeof(e->info.cgroup), "%s", rel);
	e->seen = true;
	entry_open(n, e, true);
}

void netns_scan_begin(struct netns *n, uint64_t now_ms)
{
	size_t i, k = 0;

	n->now_ms = now_ms;
	n->last_scan_ms = now_ms;
	for (i = 0; i < n->n_due; i++)
		if (n->due[i] > now_ms)
			n->due[k++] = n->due[i];
	n->n_due = k;
	for (i = 0; i < n->n; i++)
		n->e[i].seen = false;
}

void netns_scan_cgroup(struct netns *n, const char *abs, const char *rel)
{
	uint64_t inos[NETNS_PER_CGROUP];
	size_t n_inos = 0;
	char path[4096];
	FILE *f;
	int pid;

	if (snprintf(path, sizeof(path), "%s/cgroup.procs", abs) >= (int)sizeof(path))
		return;
	f = fopen(path, "re");
	if (!f)
		return; /* removed meanwhile */
	while (fscanf(f, "%d", &pid) == 1) {
		struct stat st;
		size_t k;

		if (pid == n->self_pid && !n->warned_self) {
			/* e.g. a DaemonSet pod below its own attach point */
			n->warned_self = true;
			log_error("the daemon itself is in the enforced cgroup %s: its own "
				  "upstream connections are redirected and denied; run it "
				  "outside every attach point (docs/kubernetes.md)", rel);
		}

		snprintf(path, sizeof(path), "/proc/%d/ns/net", pid);
		if (stat(path, &st)) {
			/* Exited, or a zombie; EACCES: another user's process and
			 * no CAP_SYS_PTRACE (its namespace cannot be served). */
			if ((errno == EACCES || errno == EPERM) && !n->warned_perm) {
				n->warned_perm = true;
				log_error("netns: %s: %s: the daemon needs CAP_SYS_PTRACE to find "
					  "the network namespaces of other users' processes; "
					  "theirs cannot connect (fail closed)", path,
					  strerror(errno));
			}
			continue;
		}
		if ((uint64_t)st.st_ino == n->self_ino && (uint64_t)st.st_dev == n->self_dev)
			continue; /* ours: the daemon's own listeners serve it */
		/*
		 * A pod is one namespace; an agent can make as many as it
		 * likes (unshare(CLONE_NEWUSER | CLONE_NEWNET)), each of
		 * which would cost the daemon descriptors and a thread's
		 * visit, and fill the table every tenant shares. Past the
		 * cap the cgroup's further namespaces are not served: their
		 * connections are refused (closed).
		 */
		for (k = 0; k < n_inos && inos[k] != (uint64_t)st.st_ino; k++)
			;
		if (k == n_inos) {
			if (n_inos == NETNS_PER_CGROUP) {
				if (!n->warned_cap_ms || n->now_ms >= n->warned_cap_ms + NETNS_WARN_MS) {
					n->warned_cap_ms = n->now_ms ? n->now_ms : 1;
					log_warn("netns: cgroup %s: its processes are in more than %d "
						 "network namespaces; pid %d's and any further ones are "
						 "not served (their connections are refused)", rel,
						 NETNS_PER_CGROUP, pid);
				}
				continue;
			}
			inos[n_inos++] = (uint64_t)st.st_ino;
		}
		entry_seen(n, pid, (uint64_t)st.st_ino, rel);
	}
	fclose(f);
}

static void netns_rebuild_infos(struct netns *n)
{
	size_t i;

	free(n->infos);
	n->infos = NULL;
	n->n_infos = 0;
	if (!n->n)
		return;
	n->infos = calloc(n->n, sizeof(*n->infos));
	if (!n->infos)
		return;
	for (i = 0; i < n->n; i++)
		n->infos[i] = n->e[i].info;
	n->n_infos = n->n;
}

void netns_scan_end(struct netns *n)
{
	size_t i = 0;

	while (i < n->n) {
		struct netns_entry *e = &n->e[i];

		if (e->seen) {
			e->missed = 0;
			i++;
			continue;
		}
		/* Twice: a scan can race with processes changing cgroups. */
		if (++e->missed < 2) {
			i++;
			continue;
		}
		if (e->info.ok)
			log_info("netns %llu (cookie %llu): no enforced process left; "
				 "listeners closed", (unsigned long long)e->info.ino,
				 (unsigned long long)e->info.cookie);
		entry_close(n, e);
		n->e[i] = n->e[--n->n];
	}
	netns_rebuild_infos(n);
}

const struct netns_info *netns_list(const struct netns *n, size_t *count)
{
	*count = n ? n->n_infos : 0;
	return n ? n->infos : NULL;
}

/* ---- lifecycle ------------------------------------------------------------- */

int netns_create(struct netns **out, const struct netns_params *p)
{
	struct netns *n;
	struct stat st;
	int err;

	if (!p || !p->proxy)
		return -EINVAL;
	if (stat("/proc/self/ns/net", &st) < 0) {
		err = -errno;
		log_error("netns: /proc/self/ns/net: %s", strerror(-err));
		return err;
	}
	n = calloc(1, sizeof(*n));
	if (!n)
		return -ENOMEM;
	n->p = *p;
	n->self_ino = (uint64_t)st.st_ino;
	n->self_dev = (uint64_t)st.st_dev;
	n->self_pid = getpid();
	n->ino_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (n->ino_fd < 0) {
		err = -errno;
		free(n);
		return err;
	}
	*out = n;
	return 0;
}

void netns_destroy(struct netns *n)
{
	size_t i;

	if (!n)
		return;
	for (i = 0; i < n->n; i++)
		entry_close(n, &n->e[i]);
	close(n->ino_fd);
	free(n->e);
	free(n->infos);
	free(n);
}
