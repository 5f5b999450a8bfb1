// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* user/control.c: the daemon's control socket, with stub callbacks. Needs
 * root (the socket is root-only; the refusal is tested with a child that
 * becomes nobody). */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "config.h"
#include "control.h"
#include "dconfig.h"
#include "proxy.h"

static const char config_text[] =
	"{ \"policies\": {\n"
	"    \"agents\": { \"mode\": \"enforce\", \"allow\": [\"allowed.test\", \"*.ok.test\"],\n"
	"                \"deny\": [\"bad.ok.test\"] },\n"
	"    \"learn\": { \"mode\": \"audit\" } },\n"
	"  \"bindings\": [ { \"cgroup\": \"/e2e/agents/job*\", \"policy\": \"agents\" },\n"
	"                { \"cgroup\": \"/k/**/pod*\", \"policy\": \"learn\" } ] }\n";

struct fixture {
	char dir[64];
	char sock[128];
	char audit[128];
	struct dconfig *dc;
	struct control *ctl;
	pthread_t thread;
	atomic_int stop;
	/* stubs */
	int reload_ret;
	char reload_msg[256];
	int reloads;
	int statuses;
	struct config cfg;
};

static int stub_status(void *ctx, struct control_status *st)
{
	struct fixture *f = ctx;

	f->statuses++;
	st->dc = f->dc;
	st->config_path = "/etc/egressd/test.json";
	st->pin_dir = "/sys/fs/bpf/egressd-test";
	st->port = 15099;
	st->n_cgroups = 5;
	st->n_bound = 3;
	st->cfg = &f->cfg;
	st->workers = 3;
	return 0;
}

static int stub_conns(void *ctx, struct proxy_conn_info **out, size_t *n)
{
	struct proxy_conn_info *v = calloc(2, sizeof(*v));

	(void)ctx;
	if (!v)
		return -ENOMEM;
	/* the newer one first: the answer lists the oldest first */
	clock_gettime(CLOCK_REALTIME, &v[0].start);
	v[0].has_origin = true;
	v[0].cgroup_id = 77;
	v[0].pid = 4242;
	v[0].uid = 1000;
	snprintf(v[0].comm, sizeof(v[0].comm), "cu\nrl");
	addr_parse("192.0.2.10", &v[0].dst);
	v[0].dst_port = 443;
	snprintf(v[0].name, sizeof(v[0].name), "allowed.test");
	v[0].name_kind = "sni";
	v[0].state = "relay";
	v[0].verdict = EGR_VERDICT_ALLOW;
	v[0].reason = EGR_REASON_RULE_ALLOW;
	snprintf(v[0].policy, sizeof(v[0].policy), "agents");
	v[0].bytes_up = 10;
	v[0].bytes_down = 1u << 20;
	clock_gettime(CLOCK_REALTIME, &v[1].start);
	v[1].start.tv_sec -= 90;
	addr_parse("::1", &v[1].peer);
	v[1].peer_port = 40000;
	v[1].state = "accepted";
	*out = v;
	*n = 2;
	return 0;
}

static const char *stub_cgroup_name(void *ctx, uint64_t id, char *buf, size_t len)
{
	(void)ctx;
	if (id != 77)
		return NULL;
	snprintf(buf, len, "%s", "/e2e/agents/job1");
	return buf;
}

static int stub_reload(void *ctx, char *err, size_t errlen)
{
	struct fixture *f = ctx;

	f->reloads++;
	if (f->reload_ret)
		snprintf(err, errlen, "%s", f->reload_msg);
	return f->reload_ret;
}

/* The daemon's main loop, reduced to the control fd; bounded by stop. */
static void *serve(void *arg)
{
	struct fixture *f = arg;
	time_t end = time(NULL) + 60;

	/* bounded in time, not turns: a busy log follower wakes it often */
	while (!atomic_load(&f->stop) && time(NULL) < end) {
		struct pollfd pfd = { control_fd(f->ctl), POLLIN, 0 };

		if (poll(&pfd, 1, 50) > 0)
			control_handle(f->ctl);
	}
	return NULL;
}

static void append(const char *path, const char *text)
{
	FILE *fp = fopen(path, "a");

	assert_non_null(fp);
	fputs(text, fp);
	fclose(fp);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct control_params p = { 0 };
	char err[256];

	if (!f || geteuid() != 0)
		return -1;
	f->cfg = (struct config)CONFIG_DEFAULTS;
	f->cfg.idle_timeout_ms = 1234;
	snprintf(f->dir, sizeof(f->dir), "/tmp/egr-control-XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->sock, sizeof(f->sock), "%s/run/control.sock", f->dir);
	snprintf(f->audit, sizeof(f->audit), "%s/audit.jsonl", f->dir);
	/* lines from before the start are not counted */
	append(f->audit, "{\"time\":\"x\",\"verdict\":\"allow\"}\n"
			 "{\"time\":\"x\",\"verdict\":\"deny\"}\n");
	if (dconfig_load_buffer("config.json", config_text, strlen(config_text), &f->dc, err,
				sizeof(err))) {
		fprintf(stderr, "config: %s\n", err);
		return -1;
	}
	p.path = f->sock;
	p.audit_path = f->audit;
	p.status = stub_status;
	p.reload = stub_reload;
	p.conns = stub_conns;
	p.cgroup_name = stub_cgroup_name;
	p.ctx = f;
	if (control_open(&f->ctl, &p))
		return -1;
	if (pthread_create(&f->thread, NULL, serve, f))
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[128];

	atomic_store(&f->stop, 1);
	pthread_join(f->thread, NULL);
	control_close(f->ctl);
	dconfig_free(f->dc);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
	if (system(cmd))
		return -1;
	free(f);
	return 0;
}

/* Connect, send one line, read until EOF. -errno of connect, or 0. */
static int request(const char *path, const char *line, char *out, size_t len)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	size_t n = 0;
	ssize_t r;
	int fd;

	if (strlen(path) >= sizeof(sun.sun_path))
		return -ENAMETOOLONG;
	memcpy(sun.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun))) {
		int err = -errno;

		close(fd);
		return err;
	}
	/* A refused client may find the socket closed already (EPIPE): the
	 * answer is still there to read. */
	if (line && write(fd, line, strlen(line)) < 0 && errno != EPIPE) {
		close(fd);
		return -EIO;
	}
	while (n + 1 < len && (r = read(fd, out + n, len - n - 1)) > 0)
		n += (size_t)r;
	out[n] = '\0';
	close(fd);
	return 0;
}

static json_t *ask(struct fixture *f, const char *line)
{
	char buf[16384];
	json_error_t jerr;
	json_t *o;

	assert_int_equal(request(f->sock, line, buf, sizeof(buf)), 0);
	print_message("reply: %s", buf);
	/* one line, newline-terminated */
	assert_true(strlen(buf) > 1);
	assert_int_equal(buf[strlen(buf) - 1], '\n');
	assert_null(strchr(buf, '\n') + 1 == buf + strlen(buf) ? NULL : "extra lines");
	o = json_loads(buf, 0, &jerr);
	assert_non_null(o);
	return o;
}

static void test_socket_modes(void **state)
{
	struct fixture *f = *state;
	char dir[160];
	struct stat st;

	assert_int_equal(stat(f->sock, &st), 0);
	assert_true(S_ISSOCK(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(st.st_uid, 0);
	snprintf(dir, sizeof(dir), "%s/run", f->dir);
	assert_int_equal(stat(dir, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0700);
}

static void test_status_as_root(void **state)
{
	struct fixture *f = *state;
	json_t *o, *s, *p, *c;

	/* after the start: counted (a torn last line is counted once whole) */
	append(f->audit, "{\"time\":\"t\",\"comm\":\"\\\"verdict\\\":\\\"deny\\\"\","
			 "\"verdict\":\"allow\"}\n{\"verdict\":\"allow\"}\n"
			 "2027-01-15T08:00:00.000Z deny pid=1 comm=curl\n"
			 "{\"verdict\":\"audit\"}\n{\"verdict\":\"al");
	o = ask(f, "{\"cmd\":\"status\"}\n");
	assert_true(json_is_true(json_object_get(o, "ok")));
	s = json_object_get(o, "status");
	assert_true(json_is_object(s));
	/* Not compared with this binary's EGRESSD_VERSION: objects built at
	 * different commits carry different `git describe` strings. */
	assert_true(json_is_string(json_object_get(s, "version")));
	assert_true(strlen(json_string_value(json_object_get(s, "version"))) > 0);
	assert_int_equal(json_integer_value(json_object_get(s, "pid")), getpid());
	assert_true(json_integer_value(json_object_get(s, "uptime_s")) >= 0);
	assert_string_equal(json_string_value(json_object_get(s, "config")),
			    "/etc/egressd/test.json");
	assert_string_equal(json_string_value(json_object_get(s, "pin_dir")),
			    "/sys/fs/bpf/egressd-test");
	assert_int_equal(json_integer_value(json_object_get(s, "port")), 15099);
	p = json_object_get(s, "attach_points");
	assert_int_equal(json_array_size(p), 2);
	assert_string_equal(json_string_value(json_array_get(p, 0)), "/e2e/agents");
	assert_string_equal(json_string_value(json_array_get(p, 1)), "/k");
	c = json_object_get(s, "cgroups");
	assert_int_equal(json_integer_value(json_object_get(c, "watched")), 5);
	assert_int_equal(json_integer_value(json_object_get(c, "bound")), 3);
	/* the proxy's settings in force */
	c = json_object_get(s, "proxy");
	assert_int_equal(json_integer_value(json_object_get(c, "workers")), 3);
	assert_int_equal(json_integer_value(json_object_get(c, "peek_timeout_ms")), 10000);
	assert_int_equal(json_integer_value(json_object_get(c, "connect_timeout_ms")), 10000);
	assert_int_equal(json_integer_value(json_object_get(c, "resolve_timeout_ms")), 5000);
	assert_int_equal(json_integer_value(json_object_get(c, "idle_timeout_ms")), 1234);
	assert_int_equal(json_integer_value(json_object_get(c, "max_conns_per_cgroup")), 4096);
	assert_int_equal(json_integer_value(json_object_get(c, "max_conns")), 65536);
	assert_int_equal(json_integer_value(json_object_get(c, "kernel_relay_after")), 0);
	p = json_object_get(s, "policies");
	assert_int_equal(json_array_size(p), 2);
	assert_string_equal(json_string_value(json_object_get(json_array_get(p, 0), "name")),
			    "agents");
	assert_string_equal(json_string_value(json_object_get(json_array_get(p, 0), "mode")),
			    "enforce");
	assert_int_equal(json_integer_value(json_object_get(json_array_get(p, 0), "allow")), 2);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(p, 0), "deny")), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(p, 1), "mode")),
			    "audit");
	assert_int_equal(json_array_size(json_object_get(s, "bindings")), 2);
	c = json_object_get(s, "counters");
	assert_true(json_is_object(c));
	assert_int_equal(json_integer_value(json_object_get(c, "allowed")), 2);
	assert_int_equal(json_integer_value(json_object_get(c, "denied")), 1);
	assert_int_equal(json_integer_value(json_object_get(c, "audit")), 1);
	json_decref(o);

	/* the torn record completes; new ones add up */
	append(f->audit, "low\"}\n{\"verdict\":\"deny\"}\n");
	o = ask(f, "{\"cmd\":\"status\"}");  /* no newline, then EOF: still a request */
	c = json_object_get(json_object_get(o, "status"), "counters");
	assert_int_equal(json_integer_value(json_object_get(c, "allowed")), 3);
	assert_int_equal(json_integer_value(json_object_get(c, "denied")), 2);
	json_decref(o);

	/* folded kernel records count their decisions; an agent's string
	 * cannot pass for the key (escaped quote, escaped blank) */
	append(f->audit, "{\"comm\":\"\\\"count\\\":9\",\"verdict\":\"deny\","
			 "\"duration_ms\":3,\"count\":40}\n"
			 "{\"comm\":\"x\\\"count\\\":7\",\"verdict\":\"deny\"}\n"
			 "2027-01-15T08:00:00.000Z audit pid=1 comm=a\\x20count=5 dst=- "
			 "reason=udp count=12 detail=udp\\x20sendmsg\n");
	o = ask(f, "{\"cmd\":\"status\"}\n");
	c = json_object_get(json_object_get(o, "status"), "counters");
	assert_int_equal(json_integer_value(json_object_get(c, "denied")), 2 + 40 + 1);
	assert_int_equal(json_integer_value(json_object_get(c, "audit")), 1 + 12);
	json_decref(o);
	assert_int_equal(f->statuses, 3);
}

static void test_refuses_non_root(void **state)
{
	struct fixture *f = *state;
	char dir[160];
	pid_t pid;
	int status, phase;

	snprintf(dir, sizeof(dir), "%s/run", f->dir);
	/* phase 0: as created, the file system refuses; phase 1: with the
	 * modes opened up by mistake, the credential check still refuses. */
	for (phase = 0; phase < 2; phase++) {
		if (phase == 1) {
			assert_int_equal(chmod(f->dir, 0755), 0);
			assert_int_equal(chmod(dir, 0755), 0);
			assert_int_equal(chmod(f->sock, 0666), 0);
		}
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			char buf[1024];
			int err;

			signal(SIGPIPE, SIG_IGN);
			if (setgid(65534) || setuid(65534))
				_exit(10);
			err = request(f->sock, "{\"cmd\":\"reload\"}\n", buf, sizeof(buf));
			if (phase == 0)
				_exit(err == -EACCES ? 0 : 11);
			if (err)
				_exit(12);
			if (!strstr(buf, "\"ok\":false") || !strstr(buf, "permission denied"))
				_exit(13);
			_exit(0);
		}
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}
	assert_int_equal(f->reloads, 0); /* the refused client reached nothing */
}

static void test_reload_result(void **state)
{
	struct fixture *f = *state;
	static const char line[] = "/etc/egressd/config.json:3: proxy.worker: unknown field "
				   "(did you mean \"workers\"?)";
	json_t *o;

	f->reload_ret = -EINVAL;
	snprintf(f->reload_msg, sizeof(f->reload_msg), "%s", line);
	o = ask(f, "{\"cmd\":\"reload\"}\n");
	assert_true(json_is_false(json_object_get(o, "ok")));
	assert_string_equal(json_string_value(json_object_get(o, "error")), line);
	assert_true(json_is_true(json_object_get(o, "invalid")));
	json_decref(o);

	f->reload_ret = -EIO;
	snprintf(f->reload_msg, sizeof(f->reload_msg), "cannot load the new policies");
	o = ask(f, "{\"cmd\":\"reload\"}\n");
	assert_true(json_is_false(json_object_get(o, "ok")));
	assert_true(json_is_false(json_object_get(o, "invalid")));
	json_decref(o);

	f->reload_ret = 0;
	o = ask(f, "{\"cmd\":\"reload\"}\n");
	assert_true(json_is_true(json_object_get(o, "ok")));
	json_decref(o);
	assert_int_equal(f->reloads, 3);
}

static void test_bad_requests(void **state)
{
	static const char *const bad[] = {
		"hello\n", "{}\n", "{\"cmd\": 7}\n", "{\"cmd\":\"nonsense\"}\n", "[\"status\"]\n",
	};
	struct fixture *f = *state;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		json_t *o = ask(f, bad[i]);

		assert_true(json_is_false(json_object_get(o, "ok")));
		assert_non_null(json_string_value(json_object_get(o, "error")));
		json_decref(o);
	}
	assert_int_equal(f->reloads, 0);
	assert_int_equal(f->statuses, 0);
}

/* A live daemon keeps its socket; a dead one's file is replaced. */
static void test_second_open(void **state)
{
	struct fixture *f = *state;
	struct control_params p = { .path = f->sock, .status = stub_status, .ctx = f };
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct control *c2 = NULL;
	char path[160];
	json_t *o;
	int fd;

	assert_int_equal(control_open(&c2, &p), -EADDRINUSE);
	assert_null(c2);
	o = ask(f, "{\"cmd\":\"status\"}\n"); /* the first still serves */
	assert_true(json_is_true(json_object_get(o, "ok")));
	json_decref(o);

	/* stale: bound, never listening (as after a crash) */
	snprintf(path, sizeof(path), "%s/run/stale.sock", f->dir);
	assert_true(strlen(path) < sizeof(sun.sun_path));
	memcpy(sun.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	close(fd);
	p.path = path;
	assert_int_equal(control_open(&c2, &p), 0);
	control_close(c2);
	assert_int_equal(access(path, F_OK), -1); /* unlinked on close */

	/* not a socket: refused, not deleted */
	fd = open(path, O_CREAT | O_WRONLY, 0600);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(control_open(&c2, &p), -EEXIST);
	assert_int_equal(access(path, F_OK), 0);
	p.path = "relative.sock";
	assert_int_equal(control_open(&c2, &p), -EINVAL);

	/* a directory someone else can write: they could swap in a socket
	 * of their own for egressctl to believe (root only: chown) */
	if (geteuid() == 0) {
		char dir[160];

		snprintf(dir, sizeof(dir), "%s/theirs", f->dir);
		assert_int_equal(mkdir(dir, 0700), 0);
		assert_int_equal(chown(dir, 1000, 1000), 0);
		snprintf(path, sizeof(path), "%s/theirs/c.sock", f->dir);
		p.path = path;
		assert_int_equal(control_open(&c2, &p), -EPERM);
		assert_int_equal(chown(dir, 0, 0), 0);
		assert_int_equal(chmod(dir, 0777), 0);
		assert_int_equal(control_open(&c2, &p), -EPERM);
		assert_int_equal(chmod(dir, 0700), 0);
		assert_int_equal(control_open(&c2, &p), 0);
		control_close(c2);
		rmdir(dir);
	}
}

static void test_conns(void **state)
{
	struct fixture *f = *state;
	json_t *o = ask(f, "{\"cmd\":\"conns\"}\n"), *a, *c;

	assert_true(json_is_true(json_object_get(o, "ok")));
	assert_int_equal(json_integer_value(json_object_get(o, "total")), 2);
	assert_true(json_is_false(json_object_get(o, "truncated")));
	a = json_object_get(o, "conns");
	assert_int_equal(json_array_size(a), 2);
	/* oldest first: the one without an origin, 90 s old */
	c = json_array_get(a, 0);
	assert_string_equal(json_string_value(json_object_get(c, "peer")), "::1");
	assert_string_equal(json_string_value(json_object_get(c, "verdict")), "pending");
	assert_null(json_object_get(c, "pid"));
	assert_true(json_integer_value(json_object_get(c, "age_ms")) >= 90000);
	c = json_array_get(a, 1);
	assert_string_equal(json_string_value(json_object_get(c, "cgroup")), "/e2e/agents/job1");
	assert_int_equal(json_integer_value(json_object_get(c, "pid")), 4242);
	assert_string_equal(json_string_value(json_object_get(c, "comm")), "cu\nrl");
	assert_string_equal(json_string_value(json_object_get(c, "dst")), "192.0.2.10");
	assert_int_equal(json_integer_value(json_object_get(c, "dst_port")), 443);
	assert_string_equal(json_string_value(json_object_get(c, "sni")), "allowed.test");
	assert_string_equal(json_string_value(json_object_get(c, "state")), "relay");
	assert_string_equal(json_string_value(json_object_get(c, "verdict")), "allow");
	assert_string_equal(json_string_value(json_object_get(c, "reason")), "rule_allow");
	assert_string_equal(json_string_value(json_object_get(c, "policy")), "agents");
	assert_int_equal(json_integer_value(json_object_get(c, "bytes_down")), 1 << 20);
	json_decref(o);
}

static int follow(struct fixture *f, const char *req)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	memcpy(sun.sun_path, f->sock, strlen(f->sock) + 1);
	assert_int_equal(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
	return fd;
}

/* One line from fd within 2 s, NULL at EOF or timeout. Reads in chunks,
 * as egressctl does (bytes past the line wait for the next call on fd). */
static json_t *read_line(int fd)
{
	static char buf[1 << 17];
	static size_t len;
	static int last_fd = -1;
	json_error_t jerr;
	char *nl;
	json_t *o;

	if (fd != last_fd) {
		last_fd = fd;
		len = 0;
	}
	while (!(nl = memchr(buf, '\n', len))) {
		struct pollfd pfd = { fd, POLLIN, 0 };
		ssize_t r;

		if (len == sizeof(buf) || poll(&pfd, 1, 2000) <= 0)
			return NULL;
		r = read(fd, buf + len, sizeof(buf) - len);
		if (r <= 0)
			return NULL;
		len += (size_t)r;
	}
	*nl = '\0';
	o = json_loads(buf, 0, &jerr);
	len -= (size_t)(nl + 1 - buf);
	memmove(buf, nl + 1, len);
	return o;
}

static struct audit_record tap_rec(enum egr_verdict v, const char *cgroup, const char *sni)
{
	struct audit_record r;

	memset(&r, 0, sizeof(r));
	r.cgroup = cgroup;
	r.pid = 7;
	snprintf(r.comm, sizeof(r.comm), "curl");
	r.sni = sni;
	r.verdict = v;
	r.reason = v == EGR_VERDICT_DENY ? EGR_REASON_NO_MATCH : EGR_REASON_RULE_ALLOW;
	r.origin = "proxy";
	return r;
}

static void test_log_follow(void **state)
{
	struct fixture *f = *state;
	struct audit_record r;
	json_t *o;
	int all, deny, i;

	/* bad filters: one error line */
	o = ask(f, "{\"cmd\":\"log\",\"follow\":true,\"verdict\":\"maybe\"}\n");
	assert_true(json_is_false(json_object_get(o, "ok")));
	json_decref(o);
	o = ask(f, "{\"cmd\":\"log\",\"follow\":true,\"cgroup\":\"rel/*\"}\n");
	assert_true(json_is_false(json_object_get(o, "ok")));
	json_decref(o);
	o = ask(f, "{\"cmd\":\"log\"}\n");
	assert_true(json_is_false(json_object_get(o, "ok")));
	json_decref(o);

	/* nobody follows: the tap does nothing */
	r = tap_rec(EGR_VERDICT_DENY, "/e2e/agents/job1", "early.test");
	control_tap(f->ctl, &r, NULL);

	all = follow(f, "{\"cmd\":\"log\",\"follow\":true}\n");
	deny = follow(f, "{\"cmd\":\"log\",\"follow\":true,\"verdict\":\"deny\","
			 "\"cgroup\":\"/e2e/agents/job*\"}\n");
	for (i = 0; i < 2; i++) {
		o = read_line(i ? deny : all);
		assert_non_null(o);
		assert_true(json_is_true(json_object_get(o, "following")));
		json_decref(o);
	}
	/* a status request is served while followers are connected */
	o = ask(f, "{\"cmd\":\"status\"}\n");
	assert_true(json_is_true(json_object_get(o, "ok")));
	json_decref(o);

	r = tap_rec(EGR_VERDICT_ALLOW, "/e2e/agents/job1", "allowed.test");
	control_tap(f->ctl, &r, NULL);
	r = tap_rec(EGR_VERDICT_DENY, "/other/job1", "other.test");
	control_tap(f->ctl, &r, NULL);
	r = tap_rec(EGR_VERDICT_DENY, "/e2e/agents/job2", "evil.test");
	control_tap(f->ctl, &r, NULL);

	o = read_line(all);
	assert_string_equal(json_string_value(json_object_get(o, "sni")), "allowed.test");
	json_decref(o);
	o = read_line(all);
	assert_string_equal(json_string_value(json_object_get(o, "sni")), "other.test");
	json_decref(o);
	o = read_line(all);
	assert_string_equal(json_string_value(json_object_get(o, "sni")), "evil.test");
	json_decref(o);
	o = read_line(deny);
	assert_string_equal(json_string_value(json_object_get(o, "sni")), "evil.test");
	assert_string_equal(json_string_value(json_object_get(o, "verdict")), "deny");
	json_decref(o);
	close(all);
	close(deny);
}

/* A follower that reads nothing is dropped with a reason; the tap never
 * waits for it. */
static void test_log_slow_follower(void **state)
{
	struct fixture *f = *state;
	struct audit_record r = tap_rec(EGR_VERDICT_ALLOW, "/e2e/agents/job1", "allowed.test");
	char detail[1000];
	struct timespec t0, t1;
	json_t *o, *last = NULL;
	int fd, i, lines = 0;

	memset(detail, 'x', sizeof(detail) - 1);
	detail[sizeof(detail) - 1] = '\0';
	r.detail = detail;
	fd = follow(f, "{\"cmd\":\"log\",\"follow\":true}\n");
	o = read_line(fd);
	assert_true(json_is_true(json_object_get(o, "following")));
	json_decref(o);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	/* ~8 MB: far more than the socket and the follower's buffer hold */
	for (i = 0; i < 8000; i++) {
		control_tap(f->ctl, &r, NULL);
		if (i % 1000 == 999)
			usleep(100000); /* let the main loop drain the queue */
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	/* Nothing waited on the client: it reads nothing until the taps are
	 * done, so a tap that blocked on it would never return. The bound
	 * only turns such a hang into a failure; it is loose because an
	 * ASan build on a loaded 2-core machine took over 3 s for the 8000
	 * (this assertion failed once at 3 s). */
	assert_true((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 < 20000);
	while ((o = read_line(fd))) {
		json_decref(last);
		last = o;
		lines++;
	}
	print_message("%d lines, last: %s\n", lines,
		      json_string_value(json_object_get(last, "error")));
	assert_non_null(last);
	assert_true(json_is_true(json_object_get(last, "dropped")));
	assert_true(json_is_false(json_object_get(last, "ok")));
	assert_true(lines < 8000);
	json_decref(last);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_socket_modes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_status_as_root, setup, teardown),
		cmocka_unit_test_setup_teardown(test_refuses_non_root, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reload_result, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_requests, setup, teardown),
		cmocka_unit_test_setup_teardown(test_second_open, setup, teardown),
		cmocka_unit_test_setup_teardown(test_conns, setup, teardown),
		cmocka_unit_test_setup_teardown(test_log_follow, setup, teardown),
		cmocka_unit_test_setup_teardown(test_log_slow_follower, setup, teardown),
	};

	if (geteuid() != 0) {
		printf("test_control: needs root (the control socket is root-only): "
		       "skipped, nothing tested\n");
		return 0;
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
