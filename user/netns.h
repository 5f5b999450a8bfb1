/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * Proxy listeners in the network namespaces of enforced processes (pods).
 *
 * The programs redirect a connect() to 127.0.0.1:P / [::1]:P, and UDP/53
 * to the DNS proxy's port, in the socket's own network namespace: inside a
 * Kubernetes pod that is the pod's loopback, not the node's. So the daemon
 * finds the namespaces its enforced cgroups' processes live in and opens
 * the TCP proxy's and the DNS proxy's listeners inside each of them
 * (socket() after setns() in a short-lived helper thread, so the main
 * thread never leaves the daemon's namespace); the running event loops
 * serve them like the daemon's own. Upstream connections and upstream DNS
 * still go out from the daemon's namespace (the node's, with hostNetwork).
 *
 * Discovery: a scan reads cgroup.procs of every watched cgroup and stats
 * /proc/PID/ns/net. Scans run when a cgroup's cgroup.events changes (it
 * became populated or empty; inotify IN_MODIFY), again a little later
 * (container runtimes put a process in the cgroup before it joins the
 * pod's namespace), and every NETNS_SCAN_MS regardless. A namespace in
 * which no enforced process was seen in two scans in a row gets its
 * listeners closed (our sockets keep a namespace alive, so this matters).
 * See docs/kubernetes.md.
 *
 * Main thread only.
 */
#ifndef EGR_NETNS_H
#define EGR_NETNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define NETNS_SCAN_MS 2000

struct proxy;
struct dnsproxy;

struct netns_params {
	struct proxy *proxy;
	struct dnsproxy *dns;
	uint16_t port; /* for log lines */
};

/* One namespace with listeners (egressctl status). */
struct netns_info {
	uint64_t ino;      /* inode of /proc/PID/ns/net */
	uint64_t cookie;   /* SO_NETNS_COOKIE, as in audit origins */
	pid_t pid;         /* an enforced process seen in it */
	char cgroup[256];  /* that process's cgroup (relative to the mount) */
	bool v6;           /* listening on [::1] too */
	bool ok;           /* false: creating the listeners failed (retried) */
};

struct netns;

int netns_create(struct netns **out, const struct netns_params *p);
/* Closes every listener set. Accepts NULL. */
void netns_destroy(struct netns *n);

/* inotify fd for cgroup.events changes: poll it, then call netns_handle(). */
int netns_fd(const struct netns *n);
void netns_handle(struct netns *n);
/* Watch the cgroup directory abs (a new one: scan soon). */
void netns_watch_cgroup(struct netns *n, const char *abs);

/* A scan is due (event, follow-up or period); now_ms: CLOCK_MONOTONIC. */
bool netns_scan_due(const struct netns *n, uint64_t now_ms);
/* One scan: begin, each enforced cgroup (abs = directory, rel = path for
 * logs), end (creates nothing; closes what was not seen twice). */
void netns_scan_begin(struct netns *n, uint64_t now_ms);
void netns_scan_cgroup(struct netns *n, const char *abs, const char *rel);
void netns_scan_end(struct netns *n);

/* Namespaces with listeners, for status; valid until the next scan. */
const struct netns_info *netns_list(const struct netns *n, size_t *count);

#endif
