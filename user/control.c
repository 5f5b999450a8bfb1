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
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "control.h"
#include "log.h"
#include "netns.h"

#define CONTROL_REQ_MAX 4096
/* Audit bytes counted per status request: a huge backlog is caught up
 * over several requests rather than stalling the main loop. */
#define CONTROL_COUNT_CHUNK (16u << 20)
#define CONTROL_STAT_DENIED 1 /* enum egr_stat in bpf/redirect.bpf.c */

struct control_counts {
	bool available;
	off_t off;                 /* bytes of the audit log already counted */
	dev_t dev;
	ino_t ino;
	char partial[8192];        /* a record not yet complete at the last read */
	size_t n_partial;
	unsigned long long allowed, denied, audit;
};

struct control {
	int fd;
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

/* JSON (compact, as audit.c writes it) or text ("TIME VERDICT pid=..."). */
static void count_line(struct control_counts *c, const char *s, size_t len)
{
	static const char key[] = "\"verdict\":\"";
	char verdict[8] = "";
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
	if (!strcmp(verdict, "allow"))
		c->allowed++;
	else if (!strcmp(verdict, "deny"))
		c->denied++;
	else if (!strcmp(verdict, "audit"))
		c->audit++;
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
	int fd, ncpu = libbpf_num_possible_cpus(), i;
	uint32_t key = CONTROL_STAT_DENIED;
	unsigned long long *v;
	int err = 0;

	if (!ctl->stats_pin || ncpu <= 0)
		return -ENOENT;
	fd = bpf_obj_get(ctl->stats_pin);
	if (fd < 0)
		return -errno;
	v = calloc((size_t)ncpu, sizeof(*v));
	if (!v) {
		close(fd);
		return -ENOMEM;
	}
	if (bpf_map_lookup_elem(fd, &key, v)) {
		err = -errno;
	} else {
		*out = 0;
		for (i = 0; i < ncpu; i++)
			*out += v[i];
	}
	free(v);
	close(fd);
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
		log_error("control socket %s: cannot create its directory: %s", p->path,
			  strerror(-err));
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
	if (bind(c->fd, (struct sockaddr *)&sun, sizeof(sun))) {
		err = -errno;
		log_error("control socket %s: bind: %s", p->path, strerror(-err));
		goto fail;
	}
	if (chmod(p->path, 0600) || listen(c->fd, 16)) {
		err = -errno;
		unlink(p->path);
		log_error("control socket %s: %s", p->path, strerror(-err));
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
	free(c->stats_pin);
	free(c->audit_path);
	free(c->path);
	free(c);
	return err;
}

int control_fd(const struct control *c)
{
	return c ? c->fd : -1;
}

void control_close(struct control *c)
{
	if (!c)
		return;
	if (c->fd >= 0) {
		close(c->fd);
		unlink(c->path);
	}
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

		json_array_append_new(a, json_pack("{s:s, s:s, s:I, s:I, s:I, s:s, s:s?, s:b}",
			"name", p->name,
			"mode", p->policy->mode == POLICY_AUDIT ? "audit" : "enforce",
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

static json_t *dispatch(struct control *c, const char *req, size_t len)
{
	json_error_t jerr;
	json_t *r = json_loadb(req, len, 0, &jerr), *reply;
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
		if (!err) {
			reply = json_pack("{s:b}", "ok", 1);
		} else {
			if (!msg[0])
				snprintf(msg, sizeof(msg), "reload: %s", strerror(-err));
			/* "invalid": the new file was refused (egressctl exits 2);
			 * otherwise the daemon could not apply a valid one. */
			reply = json_pack("{s:b, s:s, s:b}", "ok", 0, "error", msg,
					  "invalid", err == -EINVAL);
		}
	} else {
		char q[96];

		snprintf(msg, sizeof(msg), "unknown command %s (status, reload)",
			 dconfig_quote(cmd, q, sizeof(q)));
		reply = error_reply(msg);
	}
	json_decref(r);
	return reply;
}

void control_handle(struct control *c)
{
	struct timespec deadline;
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	char req[CONTROL_REQ_MAX];
	size_t n = 0;
	char *nl = NULL;
	int fd;

	if (!c)
		return;
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
	else
		send_json(fd, dispatch(c, req, nl ? (size_t)(nl - req) : n), &deadline);
	close(fd);
}
