// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * Control socket (control.h, protocol in docs/egressctl.md): one JSON
 * request line in, JSON response lines out, then close.
 *
 * Root only, twice over: the socket file is 0600 (and its directory 0700
 * when we create it), and the peer's SO_PEERCRED uid must be 0 — a mode
 * can be loosened by a careless chmod or a bind mount, the credential
 * check cannot.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "bpfload.h"
#include "config.h"
#include "control.h"
#include "jpos.h"
#include "log.h"
#include "netns.h"
#include "proxy.h"

#define CONTROL_REQ_MAX 4096
/* Audit bytes counted per status request: a huge backlog is caught up
 * over several requests rather than stalling the main loop. */
#define CONTROL_COUNT_CHUNK (16u << 20)

struct control_counts {
	bool available;
	off_t off;                 /* bytes of the audit log already counted */
	dev_t dev;
	ino_t ino;
	char partial[8192];        /* a record not yet complete at the last read */
	size_t n_partial;
	unsigned long long allowed, denied, audit;
};

/* A finished record on its way from the tap to the followers. */
struct log_item {
	enum egr_verdict verdict;
	const char *cgroup;        /* into data, NULL if the record has none */
	size_t len;                /* of the JSON line, without newline */
	char data[];               /* JSON, NUL, cgroup, NUL */
};

/* Filled by the tap on any thread, drained by the main thread. */
struct log_queue {
	pthread_mutex_t lock;
	struct log_item *items[CONTROL_LOG_QUEUE];
	unsigned head, n;
	uint64_t lost;             /* dropped because the queue was full */
	atomic_int followers;      /* the tap does nothing while 0 */
	int evfd;                  /* wakes the main loop */
};

struct follower {
	int fd;
	char *glob;                /* --cgroup, NULL: all */
	int verdict;               /* enum egr_verdict, -1: all */
	char *buf;                 /* unsent bytes: buf[off..len) */
	size_t len, off;
	bool mid_line;             /* the last byte sent was not a newline */
	bool dropping;             /* told it fell behind; closed once flushed */
	struct timespec drop_deadline;
	uint64_t sent;
};

/* epoll data tags; followers carry their slot index + CTL_TAG_FOLLOWER. */
#define CTL_TAG_LISTEN 1
#define CTL_TAG_QUEUE 2
#define CTL_TAG_FOLLOWER 16

struct control {
	int fd;
	int efd;                   /* control_fd(): listener, queue, followers */
	struct log_queue q;
	struct follower followers[CONTROL_MAX_FOLLOWERS];
	char *path;
	char *audit_path;
	char *stats_pin;
	struct control_params p;
	struct timespec started;   /* CLOCK_MONOTONIC */
	struct control_counts cnt;
	unsigned long long kernel_denied_base;
	bool kernel_base_ok;
};

/* --- counters ----------------------------------------------------------- */

/* Decisions a record stands for: its "count" (count=N), else one. Agents'
 * strings cannot forge the key: quotes in JSON strings and blanks in
 * text fields are escaped. */
static unsigned long long line_count(const char *s, size_t len)
{
	static const char jkey[] = "\"count\":", tkey[] = " count=";
	const char *key = len && s[0] == '{' ? jkey : tkey;
	size_t klen = strlen(key);
	const char *v = memmem(s, len, key, klen);
	unsigned long long n = 0;

	if (!v)
		return 1;
	for (v += klen; v < s + len && *v >= '0' && *v <= '9' && n < (1ull << 50); v++)
		n = n * 10 + (unsigned)(*v - '0');
	return n ? n : 1;
}

/* JSON (compact, as audit.c writes it) or text ("TIME VERDICT pid=..."). */
static void count_line(struct control_counts *c, const char *s, size_t len)
{
	static const char key[] = "\"verdict\":\"";
	char verdict[8] = "";
	unsigned long long n;
	const char *v;
	size_t i;

	if (len && s[0] == '{') {
		/* Inside JSON strings quotes are escaped, so the first
		 * unescaped "verdict":" is the key, whatever an agent named
		 * itself. */
		v = memmem(s, len, key, sizeof(key) - 1);
		if (!v)
			return;
		v += sizeof(key) - 1;
		for (i = 0; i < sizeof(verdict) - 1 && v + i < s + len && v[i] != '"'; i++)
			verdict[i] = v[i];
		verdict[i] = '\0';
	} else {
		v = memchr(s, ' ', len);
		if (!v)
			return;
		v++;
		for (i = 0; i < sizeof(verdict) - 1 && v + i < s + len && v[i] != ' '; i++)
			verdict[i] = v[i];
		verdict[i] = '\0';
	}
	n = line_count(s, len);
	if (!strcmp(verdict, "allow"))
		c->allowed += n;
	else if (!strcmp(verdict, "deny"))
		c->denied += n;
	else if (!strcmp(verdict, "audit"))
		c->audit += n;
}

static void count_bytes(struct control_counts *c, const char *buf, size_t n)
{
	const char *p = buf, *end = buf + n, *nl;

	while (p < end && (nl = memchr(p, '\n', (size_t)(end - p)))) {
		size_t len = (size_t)(nl - p);

		if (c->n_partial) {
			/* the head of this record came with the last read */
			size_t room = sizeof(c->partial) - c->n_partial;

			memcpy(c->partial + c->n_partial, p, len < room ? len : room);
			count_line(c, c->partial, c->n_partial + (len < room ? len : room));
			c->n_partial = 0;
		} else {
			count_line(c, p, len);
		}
		p = nl + 1;
	}
	if (p < end) {
		size_t len = (size_t)(end - p), room = sizeof(c->partial) - c->n_partial;

		memcpy(c->partial + c->n_partial, p, len < room ? len : room);
		c->n_partial += len < room ? len : room;
	}
}

static void counts_start(struct control *ctl)
{
	struct stat st;

	if (!ctl->audit_path)
		return;
	ctl->cnt.available = true;
	if (stat(ctl->audit_path, &st) == 0) {
		ctl->cnt.off = st.st_size;
		ctl->cnt.dev = st.st_dev;
		ctl->cnt.ino = st.st_ino;
	}
}

static void counts_update(struct control *ctl)
{
	struct control_counts *c = &ctl->cnt;
	char buf[65536];
	struct stat st;
	size_t total = 0;
	ssize_t n;
	int fd;

	if (!c->available)
		return;
	fd = open(ctl->audit_path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		return;
	if (fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		close(fd);
		return;
	}
	/* Rotated (new file) or truncated (copytruncate): count the new
	 * file from its start. */
	if (st.st_dev != c->dev || st.st_ino != c->ino || st.st_size < c->off) {
		c->off = 0;
		c->n_partial = 0;
		c->dev = st.st_dev;
		c->ino = st.st_ino;
	}
	while (total < CONTROL_COUNT_CHUNK &&
	       (n = pread(fd, buf, sizeof(buf), c->off)) > 0) {
		count_bytes(c, buf, (size_t)n);
		c->off += n;
		total += (size_t)n;
	}
	close(fd);
}

/* Sum of the per-CPU egr_stats[DENIED] counter, pinned by the loader. */
static int kernel_denied(const struct control *ctl, unsigned long long *out)
{
	uint64_t sum = 0;
	int fd, err;

	if (!ctl->stats_pin)
		return -ENOENT;
	fd = bpf_obj_get(ctl->stats_pin);
	if (fd < 0)
		return -errno;
	err = egr_bpf_percpu_sum(fd, EGR_STAT_DENIED, &sum);
	close(fd);
	if (!err)
		*out = sum;
	return err;
}

/* --- socket ------------------------------------------------------------- */

static int mkdir_private(const char *path)
{
	char dir[PATH_MAX], *p;

	if (snprintf(dir, sizeof(dir), "%s", path) >= (int)sizeof(dir))
		return -ENAMETOOLONG;
	p = strrchr(dir, '/');
	if (!p || p == dir)
		return 0;
	*p = '\0';
	for (p = dir + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(dir, 0755) && errno != EEXIST)
			return -errno;
		*p = '/';
	}
	/* Only the socket's own directory is ours to make private. */
	if (mkdir(dir, 0700) && errno != EEXIST)
		return -errno;
	/* One made by someone else: whoever can write it could replace our
	 * socket with theirs, for egressctl to talk to. */
	{
		struct stat st;

		if (lstat(dir, &st))
			return -errno;
		if (!S_ISDIR(st.st_mode))
			return -ENOTDIR;
		if ((st.st_uid != 0 && st.st_uid != geteuid()) ||
		    ((st.st_mode & 022) && !(st.st_mode & S_ISVTX)))
			return -EPERM;
	}
	return 0;
}

/* A daemon already answering on path must not lose its socket to us;
 * a file left by a dead one is replaced. */
static int clear_stale(const char *path, const struct sockaddr_un *sun)
{
	struct stat st;
	int fd, err;

	if (lstat(path, &st)) {
		if (errno == ENOENT)
			return 0;
		return -errno;
	}
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	err = connect(fd, (const struct sockaddr *)sun, sizeof(*sun));
	close(fd);
	if (!err)
		return -EADDRINUSE;
	if (unlink(path) && errno != ENOENT)
		return -errno;
	return 0;
}

int control_open(struct control **out, const struct control_params *p)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct control *c;
	int err;

	*out = NULL;
	if (!p || !p->path || p->path[0] != '/')
		return -EINVAL;
	if (strlen(p->path) >= sizeof(sun.sun_path))
		return -ENAMETOOLONG;
	memcpy(sun.sun_path, p->path, strlen(p->path) + 1);
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->fd = -1;
	c->efd = -1;
	c->q.evfd = -1;
	for (int i = 0; i < CONTROL_MAX_FOLLOWERS; i++)
		c->followers[i].fd = -1;
	pthread_mutex_init(&c->q.lock, NULL);
	c->p = *p;
	c->path = strdup(p->path);
	c->audit_path = p->audit_path ? strdup(p->audit_path) : NULL;
	if (p->pin_dir && asprintf(&c->stats_pin, "%s/egr_stats", p->pin_dir) < 0)
		c->stats_pin = NULL;
	if (!c->path || (p->audit_path && !c->audit_path)) {
		err = -ENOMEM;
		goto fail;
	}
	c->p.path = c->path;
	c->p.audit_path = c->audit_path;
	err = mkdir_private(p->path);
	if (err) {
		log_error("control socket %s: %s", p->path,
			  err == -EPERM ? "its directory belongs to another user or is "
			  "writable by group or others, who could replace the socket: "
			  "use a directory only root can write (the default is "
			  "/run/egressd)" : strerror(-err));
		goto fail;
	}
	err = clear_stale(p->path, &sun);
	if (err) {
		log_error("control socket %s: %s", p->path,
			  err == -EADDRINUSE ? "another egressd daemon is answering there" :
			  err == -EEXIST ? "exists and is not a socket" : strerror(-err));
		goto fail;
	}
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (c->fd < 0) {
		err = -errno;
		goto fail;
	}
	/* Made 0600 by bind itself: no chmod by path after it, which a
	 * symlink swapped in meanwhile would redirect. */
	{
		mode_t old_mask = umask(0177);

		err = bind(c->fd, (struct sockaddr *)&sun, sizeof(sun)) ? -errno : 0;
		umask(old_mask);
	}
	if (err) {
		log_error("control socket %s: bind: %s", p->path, strerror(-err));
		goto fail;
	}
	if (listen(c->fd, 16)) {
		err = -errno;
		unlink(p->path);
		log_error("control socket %s: %s", p->path, strerror(-err));
		goto fail;
	}
	c->efd = epoll_create1(EPOLL_CLOEXEC);
	c->q.evfd = p->has_wake_fd ? p->wake_fd : eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (c->efd < 0 || c->q.evfd < 0 ||
	    epoll_ctl(c->efd, EPOLL_CTL_ADD, c->fd,
		      &(struct epoll_event){ .events = EPOLLIN, .data.u64 = CTL_TAG_LISTEN }) ||
	    epoll_ctl(c->efd, EPOLL_CTL_ADD, c->q.evfd,
		      &(struct epoll_event){ .events = EPOLLIN, .data.u64 = CTL_TAG_QUEUE })) {
		err = -errno;
		unlink(p->path);
		goto fail;
	}
	clock_gettime(CLOCK_MONOTONIC, &c->started);
	counts_start(c);
	c->kernel_base_ok = kernel_denied(c, &c->kernel_denied_base) == 0;
	*out = c;
	return 0;
fail:
	if (c->fd >= 0)
		close(c->fd);
	if (c->efd >= 0)
		close(c->efd);
	if (c->q.evfd >= 0 && !p->has_wake_fd)
		close(c->q.evfd);
	pthread_mutex_destroy(&c->q.lock);
	free(c->stats_pin);
	free(c->audit_path);
	free(c->path);
	free(c);
	return err;
}

int control_fd(const struct control *c)
{
	return c ? c->efd : -1;
}

static void follower_close(struct control *c, struct follower *f);

void control_close(struct control *c)
{
	int i;

	if (!c)
		return;
	for (i = 0; i < CONTROL_MAX_FOLLOWERS; i++)
		follower_close(c, &c->followers[i]);
	if (c->fd >= 0) {
		close(c->fd);
		unlink(c->path);
	}
	while (c->q.n) {
		free(c->q.items[c->q.head]);
		c->q.head = (c->q.head + 1) % CONTROL_LOG_QUEUE;
		c->q.n--;
	}
	close(c->efd);
	if (!c->p.has_wake_fd)
		close(c->q.evfd);
	pthread_mutex_destroy(&c->q.lock);
	free(c->stats_pin);
	free(c->audit_path);
	free(c->path);
	free(c);
}

/* --- one client --------------------------------------------------------- */

static long ms_left(const struct timespec *deadline)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (deadline->tv_sec - now.tv_sec) * 1000 +
	       (deadline->tv_nsec - now.tv_nsec) / 1000000;
}

static int write_all(int fd, const char *s, size_t len, const struct timespec *deadline)
{
	while (len) {
		ssize_t n = write(fd, s, len);

		if (n > 0) {
			s += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			struct pollfd pfd = { fd, POLLOUT, 0 };
			long left = ms_left(deadline);

			if (left <= 0 || poll(&pfd, 1, (int)left) <= 0)
				return -ETIMEDOUT;
			continue;
		}
		return -errno;
	}
	return 0;
}

/* Send o as one line and drop it. */
static int send_json(int fd, json_t *o, const struct timespec *deadline)
{
	char *s;
	int err;

	if (!o)
		return -ENOMEM;
	s = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	json_decref(o);
	if (!s)
		return -ENOMEM;
	err = write_all(fd, s, strlen(s), deadline);
	if (!err)
		err = write_all(fd, "\n", 1, deadline);
	free(s);
	return err;
}

static json_t *error_reply(const char *msg)
{
	return json_pack("{s:b, s:s}", "ok", 0, "error", msg);
}

static const char *policy_source(const struct dconfig_policy *p)
{
	switch (p->kind) {
	case DCONFIG_SRC_FILE:
		return "file";
	case DCONFIG_SRC_SRT:
		return "sandbox_runtime";
	default:
		return "inline";
	}
}

static json_t *status_json(struct control *c, const struct control_status *st)
{
	const struct dconfig *dc = st->dc;
	json_t *o, *s, *a;
	struct timespec now;
	unsigned long long kd;
	size_t i;

	clock_gettime(CLOCK_MONOTONIC, &now);
	s = json_pack("{s:s, s:I, s:I, s:s?, s:s?, s:i}",
		      "version", EGRESSD_VERSION,
		      "pid", (json_int_t)getpid(),
		      "uptime_s", (json_int_t)(now.tv_sec - c->started.tv_sec),
		      "config", st->config_path,
		      "pin_dir", st->pin_dir,
		      "port", (int)st->port);
	if (!s)
		return NULL;
	json_object_set_new(s, "control", json_string(c->path));
	a = json_array();
	for (i = 0; dc && i < dc->n_attach_points; i++)
		json_array_append_new(a, json_string(dc->attach_points[i]));
	json_object_set_new(s, "attach_points", a);
	json_object_set_new(s, "cgroups", json_pack("{s:I, s:I}",
		"watched", (json_int_t)st->n_cgroups, "bound", (json_int_t)st->n_bound));
	a = json_array();
	for (i = 0; dc && i < dc->n_policies; i++) {
		const struct dconfig_policy *p = &dc->policies[i];

		json_array_append_new(a, json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:s, s:s?, s:b}",
			"name", p->name,
			"mode", p->policy->mode == POLICY_AUDIT ? "audit" : "enforce",
			"inbound", p->policy->inbound_any ? "any" : "local",
			"allow", (json_int_t)p->policy->n_allow,
			"deny", (json_int_t)p->policy->n_deny,
			"intercept", (json_int_t)p->policy->n_intercept,
			"source", policy_source(p),
			"file", p->file,
			"used", p->used));
	}
	json_object_set_new(s, "policies", a);
	a = json_array();
	for (i = 0; dc && i < dc->n_bindings; i++)
		json_array_append_new(a, json_pack("{s:s, s:s}",
			"cgroup", dc->bindings[i].cgroup,
			"policy", dc->bindings[i].policy->name));
	json_object_set_new(s, "bindings", a);
	a = json_array();
	for (i = 0; st->netns && i < st->n_netns; i++)
		json_array_append_new(a, json_pack("{s:I, s:I, s:I, s:s, s:b, s:b}",
			"inode", (json_int_t)st->netns[i].ino,
			"cookie", (json_int_t)st->netns[i].cookie,
			"pid", (json_int_t)st->netns[i].pid,
			"cgroup", st->netns[i].cgroup,
			"listening", st->netns[i].ok,
			"ipv6", st->netns[i].v6));
	json_object_set_new(s, "netns", a);
	if (st->cfg)
		json_object_set_new(s, "proxy", json_pack(
			"{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}",
			"workers", (json_int_t)st->workers,
			"peek_timeout_ms", (json_int_t)cfg_live(st->cfg->peek_timeout_ms),
			"connect_timeout_ms", (json_int_t)cfg_live(st->cfg->connect_timeout_ms),
			"resolve_timeout_ms", (json_int_t)st->cfg->resolve_timeout_ms,
			"idle_timeout_ms", (json_int_t)cfg_live(st->cfg->idle_timeout_ms),
			"max_conns_per_cgroup", (json_int_t)cfg_live(st->cfg->max_conns_per_cgroup),
			"max_conns", (json_int_t)cfg_live(st->cfg->max_conns),
			"kernel_relay_after", (json_int_t)st->cfg->kernel_relay_after));

	counts_update(c);
	if (c->cnt.available) {
		json_object_set_new(s, "counters", json_pack("{s:s, s:s, s:I, s:I, s:I}",
			"source", "audit log since start",
			"audit_log", c->audit_path,
			"allowed", (json_int_t)c->cnt.allowed,
			"denied", (json_int_t)c->cnt.denied,
			"audit", (json_int_t)c->cnt.audit));
	} else {
		json_object_set_new(s, "counters", json_null());
	}
	if (c->kernel_base_ok && !kernel_denied(c, &kd))
		json_object_set_new(s, "kernel_denied",
				    json_integer((json_int_t)(kd - c->kernel_denied_base)));
	o = json_pack("{s:b, s:o}", "ok", 1, "status", s);
	return o;
}

/* --- conns ---------------------------------------------------------------- */

/* Agent-chosen text (comm, SNI) may be anything; jansson wants UTF-8. */
static json_t *jtext(const char *s)
{
	char out[1100];
	size_t o = 0;
	json_t *v = json_string(s);

	if (v)
		return v;
	for (; *s && o + 5 < sizeof(out); s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch < 0x20 || ch >= 0x7f || ch == '\\')
			o += (size_t)snprintf(out + o, sizeof(out) - o, "\\x%02x", ch);
		else
			out[o++] = (char)ch;
	}
	out[o] = '\0';
	return json_string(out);
}

static json_t *conn_json(const struct control *c, const struct proxy_conn_info *ci,
			 const struct timespec *now)
{
	char a[INET6_ADDRSTRLEN], cgbuf[PATH_MAX];
	json_t *o = json_object();
	long long age;
	const char *cg;

	if (!o)
		return NULL;
	age = (now->tv_sec - ci->start.tv_sec) * 1000LL +
	      (now->tv_nsec - ci->start.tv_nsec) / 1000000;
	if (ci->has_origin) {
		cg = c->p.cgroup_name ? c->p.cgroup_name(c->p.ctx, ci->cgroup_id,
							 cgbuf, sizeof(cgbuf)) : NULL;
		if (cg)
			json_object_set_new(o, "cgroup", jtext(cg));
		json_object_set_new(o, "cgroup_id", json_integer((json_int_t)ci->cgroup_id));
		json_object_set_new(o, "pid", json_integer(ci->pid));
		json_object_set_new(o, "uid", json_integer(ci->uid));
		json_object_set_new(o, "comm", jtext(ci->comm));
		json_object_set_new(o, "dst", json_string(addr_to_str(&ci->dst, a, sizeof(a))));
		json_object_set_new(o, "dst_port", json_integer(ci->dst_port));
	} else {
		json_object_set_new(o, "peer", json_string(addr_to_str(&ci->peer, a, sizeof(a))));
		json_object_set_new(o, "peer_port", json_integer(ci->peer_port));
	}
	if (ci->name_kind) {
		/* "sni", "host", or "dns": the name the DNS proxy gave out for
		 * this address (no SNI/Host on the wire) */
		json_object_set_new(o, !strcmp(ci->name_kind, "dns") ? "dns_name" : ci->name_kind,
				    jtext(ci->name));
	}
	json_object_set_new(o, "state", json_string(ci->state));
	json_object_set_new(o, "verdict", json_string(ci->verdict == EGR_VERDICT_NONE ?
		"pending" : egr_verdict_name(ci->verdict)));
	if (ci->verdict != EGR_VERDICT_NONE)
		json_object_set_new(o, "reason", json_string(egr_reason_name(ci->reason)));
	if (ci->policy[0])
		json_object_set_new(o, "policy", jtext(ci->policy));
	if (ci->has_resolved)
		json_object_set_new(o, "resolved",
				    json_string(addr_to_str(&ci->resolved, a, sizeof(a))));
	json_object_set_new(o, "bytes_up", json_integer((json_int_t)ci->bytes_up));
	json_object_set_new(o, "bytes_down", json_integer((json_int_t)ci->bytes_down));
	json_object_set_new(o, "age_ms", json_integer(age > 0 ? age : 0));
	return o;
}

static int conn_age_cmp(const void *x, const void *y)
{
	const struct proxy_conn_info *a = x, *b = y;

	if (a->start.tv_sec != b->start.tv_sec)
		return a->start.tv_sec < b->start.tv_sec ? -1 : 1;
	return a->start.tv_nsec < b->start.tv_nsec ? -1 : a->start.tv_nsec > b->start.tv_nsec;
}

static json_t *conns_json(struct control *c)
{
	struct proxy_conn_info *v = NULL;
	struct timespec now;
	size_t n = 0, i;
	json_t *a;
	char msg[128];
	int err;

	err = c->p.conns ? c->p.conns(c->p.ctx, &v, &n) : -ENOSYS;
	if (err) {
		snprintf(msg, sizeof(msg), "conns: %s", strerror(-err));
		return error_reply(msg);
	}
	clock_gettime(CLOCK_REALTIME, &now);
	qsort(v, n, sizeof(*v), conn_age_cmp); /* oldest first */
	a = json_array();
	for (i = 0; a && i < n && i < CONTROL_CONNS_MAX; i++)
		json_array_append_new(a, conn_json(c, &v[i], &now));
	free(v);
	if (!a)
		return NULL;
	return json_pack("{s:b, s:I, s:b, s:o}", "ok", 1, "total", (json_int_t)n,
			 "truncated", n > CONTROL_CONNS_MAX, "conns", a);
}

/* --- log -f ----------------------------------------------------------------- */

void control_tap(struct control *c, const struct audit_record *r, const char *json)
{
	struct log_item *it;
	size_t jl, cl;
	char *own = NULL;
	const char *js = json;
	bool wake = false;

	if (!c || !atomic_load_explicit(&c->q.followers, memory_order_relaxed))
		return;
	if (!js)
		js = own = audit_record_json(r);
	if (!js)
		return;
	jl = strlen(js);
	cl = r->cgroup ? strlen(r->cgroup) : 0;
	it = malloc(sizeof(*it) + jl + 1 + cl + 1);
	if (it) {
		it->verdict = r->verdict;
		it->len = jl;
		memcpy(it->data, js, jl + 1);
		it->cgroup = NULL;
		if (r->cgroup) {
			memcpy(it->data + jl + 1, r->cgroup, cl + 1);
			it->cgroup = it->data + jl + 1;
		}
	}
	free(own);
	pthread_mutex_lock(&c->q.lock);
	if (it && c->q.n < CONTROL_LOG_QUEUE) {
		c->q.items[(c->q.head + c->q.n) % CONTROL_LOG_QUEUE] = it;
		wake = c->q.n++ == 0;
		it = NULL;
	} else {
		c->q.lost++;
	}
	pthread_mutex_unlock(&c->q.lock);
	free(it);
	if (wake) {
		uint64_t one = 1;

		/* full counter (EAGAIN): the main loop is awake anyway */
		if (write(c->q.evfd, &one, sizeof(one)) < 0)
			(void)errno;
	}
}

static struct follower *follower_of(struct control *c, int idx)
{
	return idx >= 0 && idx < CONTROL_MAX_FOLLOWERS ? &c->followers[idx] : NULL;
}

static void follower_close(struct control *c, struct follower *f)
{
	if (f->fd < 0)
		return;
	epoll_ctl(c->efd, EPOLL_CTL_DEL, f->fd, NULL);
	close(f->fd);
	f->fd = -1;
	free(f->glob);
	free(f->buf);
	f->glob = f->buf = NULL;
	f->len = f->off = 0;
	atomic_fetch_sub(&c->q.followers, 1);
}

/* Write what we can; keep EPOLLOUT interest only while bytes wait. */
static void follower_flush(struct control *c, struct follower *f)
{
	int idx = (int)(f - c->followers);

	while (f->off < f->len) {
		ssize_t n = send(f->fd, f->buf + f->off, f->len - f->off,
				 MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n > 0) {
			f->off += (size_t)n;
			f->mid_line = f->buf[f->off - 1] != '\n';
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		follower_close(c, f); /* gone */
		return;
	}
	if (f->off == f->len) {
		f->off = f->len = 0;
		if (f->dropping) {
			follower_close(c, f);
			return;
		}
	} else if (f->off > CONTROL_FOLLOW_BUF / 2) {
		memmove(f->buf, f->buf + f->off, f->len - f->off);
		f->len -= f->off;
		f->off = 0;
	}
	epoll_ctl(c->efd, EPOLL_CTL_MOD, f->fd, &(struct epoll_event){
		.events = EPOLLRDHUP | (f->off < f->len ? EPOLLOUT : 0),
		.data.u64 = CTL_TAG_FOLLOWER + (uint64_t)idx });
}

/* Queue a line for f. A follower that cannot take it has fallen behind:
 * what it has not been sent is dropped, it is told why, and it is closed
 * once that last line is out (or after CONTROL_CLIENT_MS). */
static void follower_put(struct follower *f, const char *s, size_t len)
{
	static const char behind[] = "{\"ok\":false,\"dropped\":true,\"error\":\"dropped: "
		"this client fell behind the daemon's decisions (more than 256 KiB "
		"unread); the audit log has every record\"}\n";
	_Static_assert(CONTROL_FOLLOW_BUF == 256 * 1024, "the message names the size");

	if (f->dropping)
		return;
	if (f->len + len + 1 + sizeof(behind) <= CONTROL_FOLLOW_BUF) {
		memcpy(f->buf + f->len, s, len);
		f->buf[f->len + len] = '\n';
		f->len += len + 1;
		f->sent++;
		return;
	}
	/* finish a line already half-sent, drop the rest */
	if (f->mid_line) {
		char *nl = memchr(f->buf + f->off, '\n', f->len - f->off);

		f->len = nl ? (size_t)(nl - f->buf) + 1 : f->len;
	} else {
		f->len = f->off;
	}
	memcpy(f->buf + f->len, behind, sizeof(behind) - 1);
	f->len += sizeof(behind) - 1;
	f->dropping = true;
	clock_gettime(CLOCK_MONOTONIC, &f->drop_deadline);
	f->drop_deadline.tv_sec += CONTROL_CLIENT_MS / 1000;
}

static bool follower_wants(const struct follower *f, const struct log_item *it)
{
	if (f->verdict >= 0 && (int)it->verdict != f->verdict)
		return false;
	if (f->glob && (!it->cgroup || !dconfig_glob_match(f->glob, it->cgroup)))
		return false;
	return true;
}

static void queue_drain(struct control *c)
{
	struct log_item *batch[CONTROL_LOG_QUEUE];
	unsigned n, i;
	uint64_t lost, ev;
	int k;

	if (read(c->q.evfd, &ev, sizeof(ev)) < 0)
		(void)errno; /* EAGAIN: nothing signalled, still drain */
	pthread_mutex_lock(&c->q.lock);
	n = c->q.n;
	for (i = 0; i < n; i++)
		batch[i] = c->q.items[(c->q.head + i) % CONTROL_LOG_QUEUE];
	c->q.head = (c->q.head + n) % CONTROL_LOG_QUEUE;
	c->q.n = 0;
	lost = c->q.lost;
	c->q.lost = 0;
	pthread_mutex_unlock(&c->q.lock);

	for (k = 0; k < CONTROL_MAX_FOLLOWERS; k++) {
		struct follower *f = &c->followers[k];
		char line[96];

		if (f->fd < 0)
			continue;
		if (lost) {
			int l = snprintf(line, sizeof(line), "{\"lost\":%llu}",
					 (unsigned long long)lost);

			follower_put(f, line, (size_t)l);
		}
		for (i = 0; i < n; i++)
			if (follower_wants(f, batch[i]))
				follower_put(f, batch[i]->data, batch[i]->len);
		follower_flush(c, f);
	}
	for (i = 0; i < n; i++)
		free(batch[i]);
}

/* {"cmd":"log","follow":true,"cgroup":GLOB,"verdict":"deny"}: fd becomes
 * a follower (NULL reply, *kept), or the reason it cannot. */
static json_t *follow_start(struct control *c, json_t *r, int fd, bool *kept)
{
	static const char ok[] = "{\"ok\":true,\"following\":true}";
	const char *glob = NULL, *verdict = NULL, *why;
	json_t *fl = json_object_get(r, "follow");
	struct follower *f = NULL;
	char msg[256], q[96];
	int v = -1, i;

	json_t *jg = json_object_get(r, "cgroup"), *jv = json_object_get(r, "verdict");

	if ((jg && !json_is_null(jg) && !json_is_string(jg)) ||
	    (jv && !json_is_null(jv) && !json_is_string(jv)))
		return error_reply("log: \"cgroup\" and \"verdict\" must be strings");
	glob = json_string_value(jg);
	verdict = json_string_value(jv);
	if (!json_is_true(fl))
		return error_reply("log: only \"follow\": true is served (past decisions "
				   "are in the audit log)");
	if (glob && (why = dconfig_glob_check(glob))) {
		snprintf(msg, sizeof(msg), "log: cgroup %s: %s", jpos_quote(glob, q, sizeof(q)),
			 why);
		return error_reply(msg);
	}
	if (verdict) {
		if (!strcmp(verdict, "allow"))
			v = EGR_VERDICT_ALLOW;
		else if (!strcmp(verdict, "deny"))
			v = EGR_VERDICT_DENY;
		else if (!strcmp(verdict, "audit"))
			v = EGR_VERDICT_AUDIT;
		else {
			snprintf(msg, sizeof(msg), "log: verdict %s: not allow, deny or audit",
				 jpos_quote(verdict, q, sizeof(q)));
			return error_reply(msg);
		}
	}
	for (i = 0; i < CONTROL_MAX_FOLLOWERS && !f; i++)
		if (c->followers[i].fd < 0)
			f = &c->followers[i];
	if (!f)
		return error_reply("log: too many followers already");
	memset(f, 0, sizeof(*f));
	f->fd = -1;
	f->verdict = v;
	f->buf = malloc(CONTROL_FOLLOW_BUF);
	f->glob = glob ? strdup(glob) : NULL;
	if (!f->buf || (glob && !f->glob) ||
	    epoll_ctl(c->efd, EPOLL_CTL_ADD, fd, &(struct epoll_event){
		.events = EPOLLRDHUP, .data.u64 = CTL_TAG_FOLLOWER + (uint64_t)(f - c->followers) })) {
		free(f->buf);
		free(f->glob);
		f->buf = f->glob = NULL;
		return error_reply("log: out of resources");
	}
	f->fd = fd;
	atomic_fetch_add(&c->q.followers, 1);
	follower_put(f, ok, sizeof(ok) - 1);
	f->sent = 0;
	follower_flush(c, f);
	*kept = true;
	return NULL;
}

static void follower_event(struct control *c, struct follower *f, uint32_t events)
{
	char buf[256];

	if (!f || f->fd < 0)
		return;
	if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
		/* the client left (egressctl stopped): nothing more to say */
		while (read(f->fd, buf, sizeof(buf)) > 0)
			;
		follower_close(c, f);
		return;
	}
	if (events & EPOLLOUT)
		follower_flush(c, f);
}

static void followers_expire(struct control *c)
{
	int i;

	for (i = 0; i < CONTROL_MAX_FOLLOWERS; i++) {
		struct follower *f = &c->followers[i];

		if (f->fd >= 0 && f->dropping && ms_left(&f->drop_deadline) <= 0)
			follower_close(c, f);
	}
}

static json_t *dispatch(struct control *c, const char *req, size_t len, int fd, bool *kept)
{
	json_error_t jerr;
	json_t *r = json_loadb(req, len, 0, &jerr), *reply = NULL;
	const char *cmd = NULL;
	char msg[1024];

	if (!json_is_object(r) || json_unpack(r, "{s:s}", "cmd", &cmd)) {
		json_decref(r);
		return error_reply("bad request: expected {\"cmd\": \"...\"}");
	}
	if (!strcmp(cmd, "status")) {
		struct control_status st = { 0 };
		int err = c->p.status ? c->p.status(c->p.ctx, &st) : -ENOSYS;

		if (err) {
			snprintf(msg, sizeof(msg), "status: %s", strerror(-err));
			reply = error_reply(msg);
		} else {
			reply = status_json(c, &st);
		}
	} else if (!strcmp(cmd, "reload")) {
		int err;

		msg[0] = '\0';
		err = c->p.reload ? c->p.reload(c->p.ctx, msg, sizeof(msg)) : -ENOSYS;
		if (!err && msg[0]) {
			/* applied, with settings that wait for a restart */
			reply = json_pack("{s:b, s:s}", "ok", 1, "note", msg);
		} else if (!err) {
			reply = json_pack("{s:b}", "ok", 1);
		} else {
			if (!msg[0])
				snprintf(msg, sizeof(msg), "reload: %s", strerror(-err));
			/* "invalid": the new file was refused (egressctl exits 2);
			 * otherwise the daemon could not apply a valid one. */
			reply = json_pack("{s:b, s:s, s:b}", "ok", 0, "error", msg,
					  "invalid", err == -EINVAL);
		}
	} else if (!strcmp(cmd, "conns")) {
		reply = conns_json(c);
	} else if (!strcmp(cmd, "log")) {
		reply = follow_start(c, r, fd, kept);
	} else {
		char q[96];

		snprintf(msg, sizeof(msg), "unknown command %s (status, conns, log, reload)",
			 jpos_quote(cmd, q, sizeof(q)));
		reply = error_reply(msg);
	}
	json_decref(r);
	return reply;
}

static void serve_one(struct control *c)
{
	struct timespec deadline;
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	char req[CONTROL_REQ_MAX];
	size_t n = 0;
	char *nl = NULL;
	bool kept = false;
	int fd;

	fd = accept4(c->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return;
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += CONTROL_CLIENT_MS / 1000;
	deadline.tv_nsec += (CONTROL_CLIENT_MS % 1000) * 1000000L;
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) || cred.uid != 0) {
		log_warn("control socket: refused a client with uid %d (root only)",
			 clen == sizeof(cred) ? (int)cred.uid : -1);
		send_json(fd, error_reply("permission denied: the control socket is for root only"),
			  &deadline);
		close(fd);
		return;
	}
	while (!nl && n < sizeof(req)) {
		ssize_t r = read(fd, req + n, sizeof(req) - n);

		if (r > 0) {
			nl = memchr(req + n, '\n', (size_t)r);
			n += (size_t)r;
			continue;
		}
		if (r == 0)
			break;
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN) {
			struct pollfd pfd = { fd, POLLIN, 0 };
			long left = ms_left(&deadline);

			if (left > 0 && poll(&pfd, 1, (int)left) > 0)
				continue;
		}
		break;
	}
	if (!nl && n == sizeof(req))
		send_json(fd, error_reply("request too long"), &deadline);
	else if (!nl && !n)
		; /* a probe (or a timeout): nothing to answer */
	else {
		json_t *reply = dispatch(c, req, nl ? (size_t)(nl - req) : n, fd, &kept);

		if (kept)
			return; /* a follower now, served from the epoll set */
		send_json(fd, reply, &deadline);
	}
	close(fd);
}

void control_handle(struct control *c)
{
	struct epoll_event ev[CONTROL_MAX_FOLLOWERS + 2];
	int n, i;

	if (!c)
		return;
	n = epoll_wait(c->efd, ev, CONTROL_MAX_FOLLOWERS + 2, 0);
	for (i = 0; i < n; i++) {
		uint64_t tag = ev[i].data.u64;

		if (tag == CTL_TAG_QUEUE)
			queue_drain(c);
		else if (tag >= CTL_TAG_FOLLOWER)
			follower_event(c, follower_of(c, (int)(tag - CTL_TAG_FOLLOWER)),
				       ev[i].events);
	}
	/* One synchronous client per call, after the followers got theirs. */
	for (i = 0; i < n; i++)
		if (ev[i].data.u64 == CTL_TAG_LISTEN)
			serve_one(c);
	followers_expire(c);
}
