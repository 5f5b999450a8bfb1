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
#include <unistd.h>
#include <cmocka.h>

#include "control.h"
#include "dconfig.h"

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
	return 0;
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
	int i;

	for (i = 0; i < 20 * 60 && !atomic_load(&f->stop); i++) {
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
	assert_int_equal(f->statuses, 2);
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
		"hello\n", "{}\n", "{\"cmd\": 7}\n", "{\"cmd\":\"conns\"}\n", "[\"status\"]\n",
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
	};

	if (geteuid() != 0) {
		printf("test_control: needs root (the control socket is root-only): "
		       "skipped, nothing tested\n");
		return 0;
	}
	return cmocka_run_group_tests(tests, NULL, NULL);
}
