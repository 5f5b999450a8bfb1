// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* user/metrics.c: counting from audit records, the exposition text, the
 * request-line check, and the HTTP server on a loopback port and a Unix
 * socket driven like the daemon's main loop does. */
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
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
#include <unistd.h>
#include <cmocka.h>

#include "metrics.h"

static struct audit_record rec(const char *origin, enum egr_verdict v, enum egr_reason r,
			       uint64_t up, uint64_t down)
{
	struct audit_record a;

	memset(&a, 0, sizeof(a));
	a.origin = origin;
	a.verdict = v;
	a.reason = r;
	a.bytes_up = up;
	a.bytes_down = down;
	return a;
}

static char *render(struct metrics *m, const struct metrics_snapshot *s)
{
	size_t len;
	char *t = metrics_render(m, s, &len);

	assert_non_null(t);
	assert_int_equal(strlen(t), len);
	return t;
}

/* The exact line is present. */
static void has_line(const char *text, const char *line)
{
	size_t n = strlen(line);
	const char *p;

	for (p = text; (p = strstr(p, line)); p += n)
		if ((p == text || p[-1] == '\n') && p[n] == '\n')
			return;
	fail_msg("missing line \"%s\" in:\n%s", line, text);
}

static void test_counts_and_text(void **state)
{
	struct metrics *m;
	struct metrics_snapshot s = { 0 };
	struct audit_record r;
	char *t;

	(void)state;
	assert_int_equal(metrics_new(&m), 0);
	r = rec("proxy", EGR_VERDICT_ALLOW, EGR_REASON_RULE_ALLOW, 100, 2000);
	metrics_count_record(m, &r);
	metrics_count_record(m, &r);
	r = rec("proxy", EGR_VERDICT_DENY, EGR_REASON_NO_MATCH, 0, 0);
	metrics_count_record(m, &r);
	r = rec("kernel", EGR_VERDICT_DENY, EGR_REASON_UDP, 0, 0);
	metrics_count_record(m, &r);
	r = rec("proxy", EGR_VERDICT_DENY, EGR_REASON_UPSTREAM, 0, 0);
	metrics_count_record(m, &r);
	r = rec("intercept", EGR_VERDICT_AUDIT, EGR_REASON_NO_MATCH, 5, 7);
	metrics_count_record(m, &r);
	/* DNS is the DNS proxy's own counter, not a connection */
	r = rec("dns", EGR_VERDICT_DENY, EGR_REASON_NO_MATCH, 40, 60);
	metrics_count_record(m, &r);
	/* out of range: ignored, never an out-of-bounds write */
	r = rec("proxy", (enum egr_verdict)9, EGR_REASON_MAX, 0, 0);
	metrics_count_record(m, &r);

	s.has_proxy = true;
	s.active_conns = 3;
	s.has_dns = true;
	s.dns.queries[EGR_VERDICT_ALLOW] = 4;
	s.dns.queries[EGR_VERDICT_DENY] = 2;
	s.dns.udp = 5;
	s.dns.tcp = 1;
	s.dns.upstream_failures = 1;
	s.has_kernel = true;
	s.kernel[EGR_STAT_REDIRECTED] = 11;
	s.kernel[EGR_STAT_DENIED] = 6;
	s.kernel[EGR_STAT_EVENTS_LOST] = 0;
	s.kernel[EGR_STAT_CONNS_FULL] = 1;
	t = render(m, &s);
	print_message("%s", t);
	has_line(t, "# TYPE egressd_connections_total counter");
	has_line(t, "egressd_connections_total{origin=\"proxy\",verdict=\"allow\",reason=\"rule_allow\"} 2");
	has_line(t, "egressd_connections_total{origin=\"proxy\",verdict=\"deny\",reason=\"no_match\"} 1");
	has_line(t, "egressd_connections_total{origin=\"kernel\",verdict=\"deny\",reason=\"udp\"} 1");
	has_line(t, "egressd_connections_total{origin=\"intercept\",verdict=\"audit\",reason=\"no_match\"} 1");
	assert_null(strstr(t, "origin=\"dns\""));
	has_line(t, "egressd_decisions_total{verdict=\"allow\"} 2");
	has_line(t, "egressd_decisions_total{verdict=\"deny\"} 3");
	has_line(t, "egressd_decisions_total{verdict=\"audit\"} 1");
	has_line(t, "egressd_bytes_total{direction=\"up\"} 205");
	has_line(t, "egressd_bytes_total{direction=\"down\"} 4007");
	has_line(t, "# TYPE egressd_active_connections gauge");
	has_line(t, "egressd_active_connections 3");
	has_line(t, "egressd_dns_queries_total{verdict=\"allow\"} 4");
	has_line(t, "egressd_dns_queries_total{verdict=\"deny\"} 2");
	has_line(t, "egressd_dns_queries_total{verdict=\"audit\"} 0");
	has_line(t, "egressd_dns_queries_by_transport_total{transport=\"udp\"} 5");
	has_line(t, "egressd_kernel_redirected_total 11");
	has_line(t, "egressd_kernel_denied_total 6");
	has_line(t, "egressd_errors_total{kind=\"proxy_upstream\"} 1");
	has_line(t, "egressd_errors_total{kind=\"proxy_resolve\"} 0");
	has_line(t, "egressd_errors_total{kind=\"dns_upstream\"} 1");
	has_line(t, "egressd_errors_total{kind=\"kernel_conns_full\"} 1");
	has_line(t, "egressd_config_last_reload_successful 1");
	has_line(t, "egressd_config_reloads_total{result=\"success\"} 0");
	free(t);

	metrics_reload_result(m, false);
	metrics_reload_result(m, true);
	metrics_reload_result(m, false);
	/* without scrape-time sources: those families are absent */
	memset(&s, 0, sizeof(s));
	t = render(m, &s);
	has_line(t, "egressd_config_last_reload_successful 0");
	has_line(t, "egressd_config_reloads_total{result=\"success\"} 1");
	has_line(t, "egressd_config_reloads_total{result=\"failure\"} 2");
	assert_null(strstr(t, "egressd_active_connections"));
	assert_null(strstr(t, "egressd_dns_queries_total"));
	assert_null(strstr(t, "egressd_kernel_denied_total"));
	free(t);
	metrics_free(m);
}

/* Every line is a comment or `name{labels} value` with a numeric value,
 * every family has HELP and TYPE before its samples, no family twice. */
static void test_text_format(void **state)
{
	struct metrics *m;
	struct metrics_snapshot s = { .has_proxy = true, .has_dns = true, .has_kernel = true };
	struct audit_record r = rec(NULL, EGR_VERDICT_ALLOW, EGR_REASON_DNS, 1, 1);
	char *t, *line, *save = NULL, typed[64][80];
	size_t n_typed = 0, i;

	(void)state;
	assert_int_equal(metrics_new(&m), 0);
	metrics_count_record(m, &r);
	t = render(m, &s);
	assert_true(t[strlen(t) - 1] == '\n');
	for (line = strtok_r(t, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char name[80], *end;
		size_t k;

		if (!strncmp(line, "# TYPE ", 7)) {
			assert_int_equal(sscanf(line + 7, "%79s", name), 1);
			for (i = 0; i < n_typed; i++)
				assert_string_not_equal(typed[i], name);
			assert_true(n_typed < 64);
			snprintf(typed[n_typed++], sizeof(typed[0]), "%s", name);
			continue;
		}
		if (!strncmp(line, "# HELP ", 7))
			continue;
		assert_true(line[0] != '#');
		k = strcspn(line, "{ ");
		assert_true(k > 0 && k < sizeof(name));
		memcpy(name, line, k);
		name[k] = '\0';
		/* belongs to the last TYPE'd family */
		assert_true(n_typed > 0);
		assert_string_equal(typed[n_typed - 1], name);
		if (line[k] == '{') {
			char *close = strchr(line, '}');

			assert_non_null(close);
			line = close + 1;
		} else {
			line += k;
		}
		assert_true(line[0] == ' ');
		strtod(line + 1, &end);
		assert_true(end != line + 1 && *end == '\0');
	}
	free(t);
	metrics_free(m);
}

static void test_request_line(void **state)
{
	static const struct {
		const char *req;
		int status;
		bool head;
	} cases[] = {
		{ "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 200, false },
		{ "GET /metrics?name[]=x HTTP/1.0\r\n\r\n", 200, false },
		{ "HEAD /metrics HTTP/1.1\r\n\r\n", 200, true },
		{ "GET /metrics\n\n", 400, false },
		{ "GET / HTTP/1.1\r\n\r\n", 404, false },
		{ "GET /metricsx HTTP/1.1\r\n\r\n", 404, false },
		{ "GET /metrics/ HTTP/1.1\r\n\r\n", 404, false },
		{ "POST /metrics HTTP/1.1\r\n\r\n", 405, false },
		{ "get /metrics HTTP/1.1\r\n\r\n", 405, false },
		{ "GET  /metrics HTTP/1.1\r\n\r\n", 400, false },
		{ "GET /metrics FTP/1.1\r\n\r\n", 400, false },
		{ "\r\n\r\n", 400, false },
		{ "GET", 400, false },
	};
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		bool head = !cases[i].head;

		print_message("%zu: %s\n", i, cases[i].req);
		assert_int_equal(metrics_http_status(cases[i].req, strlen(cases[i].req), &head),
				 cases[i].status);
		assert_int_equal(head, cases[i].head);
	}
}

/* --- the server, driven as the daemon's main loop does ------------------ */

struct srv {
	struct metrics *m;
	pthread_t thread;
	atomic_int stop;
};

static void *serve(void *arg)
{
	struct srv *s = arg;
	int i;

	for (i = 0; i < 20 * 100 && !atomic_load(&s->stop); i++) {
		struct pollfd pfd = { metrics_fd(s->m), POLLIN, 0 };

		poll(&pfd, 1, 10);
		metrics_handle(s->m);
	}
	return NULL;
}

static int connect_to(const struct sockaddr *sa, socklen_t len)
{
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_int_equal(connect(fd, sa, len), 0);
	return fd;
}

static size_t exchange(int fd, const char *req, char *out, size_t len)
{
	size_t n = 0;
	ssize_t r;

	if (req)
		assert_int_equal(write(fd, req, strlen(req)), (ssize_t)strlen(req));
	while (n + 1 < len && (r = read(fd, out + n, len - n - 1)) > 0)
		n += (size_t)r;
	out[n] = '\0';
	close(fd);
	return n;
}

static int tcp_client(struct metrics *m)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(metrics_port(m)),
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };

	return connect_to((struct sockaddr *)&sin, sizeof(sin));
}

static void test_http_tcp(void **state)
{
	struct srv s = { 0 };
	struct egr_addr lo;
	char buf[65536], *body;
	struct audit_record r = rec("proxy", EGR_VERDICT_DENY, EGR_REASON_NO_MATCH, 0, 0);
	int fd, idle[METRICS_MAX_CLIENTS + 2], i;
	size_t n;

	(void)state;
	assert_int_equal(metrics_new(&s.m), 0);
	assert_int_equal(addr_parse("127.0.0.1", &lo), 0);
	assert_int_equal(metrics_listen(s.m, NULL, &lo, 0), 0);
	assert_true(metrics_port(s.m) > 0);
	metrics_count_record(s.m, &r);
	assert_int_equal(pthread_create(&s.thread, NULL, serve, &s), 0);

	/* a request in two pieces */
	fd = tcp_client(s.m);
	assert_int_equal(write(fd, "GET /metrics HT", 15), 15);
	usleep(30000);
	n = exchange(fd, "TP/1.1\r\nHost: localhost\r\n\r\n", buf, sizeof(buf));
	assert_true(n > 0);
	assert_non_null(strstr(buf, "HTTP/1.1 200 OK\r\n"));
	assert_non_null(strstr(buf, "Content-Type: text/plain; version=0.0.4"));
	body = strstr(buf, "\r\n\r\n");
	assert_non_null(body);
	body += 4;
	{
		const char *cl = strstr(buf, "Content-Length: ");

		assert_non_null(cl);
		assert_int_equal(strtoul(cl + 16, NULL, 10), strlen(body));
	}
	has_line(body, "egressd_decisions_total{verdict=\"deny\"} 1");

	exchange(tcp_client(s.m), "HEAD /metrics HTTP/1.1\r\n\r\n", buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 200 OK\r\n"));
	assert_string_equal(strstr(buf, "\r\n\r\n"), "\r\n\r\n");
	exchange(tcp_client(s.m), "GET / HTTP/1.1\r\n\r\n", buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 404 Not Found\r\n"));
	exchange(tcp_client(s.m), "DELETE /metrics HTTP/1.1\r\n\r\n", buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 405 "));
	assert_non_null(strstr(buf, "Allow: GET, HEAD\r\n"));
	/* a head that never ends is cut off at METRICS_REQ_MAX */
	fd = tcp_client(s.m);
	{
		char big[METRICS_REQ_MAX + 16];

		memset(big, 'a', sizeof(big) - 1);
		big[sizeof(big) - 1] = '\0';
		memcpy(big, "GET /metrics HTTP/1.1\r\nX: ", 26);
		exchange(fd, big, buf, sizeof(buf));
	}
	assert_non_null(strstr(buf, "HTTP/1.1 431 "));

	/* silent clients take every slot: the next one is turned away at
	 * once, and the main loop never waited for any of them */
	for (i = 0; i < METRICS_MAX_CLIENTS; i++)
		idle[i] = tcp_client(s.m);
	usleep(100000);
	n = exchange(tcp_client(s.m), "GET /metrics HTTP/1.1\r\n\r\n", buf, sizeof(buf));
	assert_int_equal(n, 0);
	for (i = 0; i < METRICS_MAX_CLIENTS; i++)
		close(idle[i]);
	usleep(100000);
	exchange(tcp_client(s.m), "GET /metrics HTTP/1.1\r\n\r\n", buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 200 OK\r\n"));

	atomic_store(&s.stop, 1);
	pthread_join(s.thread, NULL);
	metrics_free(s.m);
}

static void test_http_unix(void **state)
{
	struct srv s = { 0 };
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	char dir[64] = "/tmp/egr-metrics-XXXXXX", path[128], buf[65536];
	struct metrics *other;
	struct stat st;
	int fd;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/metrics.sock", dir);
	/* a stale socket file (nobody listening) is replaced */
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	memcpy(sun.sun_path, path, strlen(path) + 1);
	assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	close(fd);
	assert_int_equal(metrics_new(&s.m), 0);
	assert_int_equal(metrics_listen(s.m, path, NULL, 0), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0660);
	/* a live one is not taken over */
	assert_int_equal(metrics_new(&other), 0);
	assert_int_equal(metrics_listen(other, path, NULL, 0), -EADDRINUSE);
	metrics_free(other);
	assert_int_equal(stat(path, &st), 0);

	assert_int_equal(pthread_create(&s.thread, NULL, serve, &s), 0);
	exchange(connect_to((struct sockaddr *)&sun, sizeof(sun)),
		 "GET /metrics HTTP/1.0\r\n\r\n", buf, sizeof(buf));
	assert_non_null(strstr(buf, "HTTP/1.1 200 OK\r\n"));
	assert_non_null(strstr(buf, "egressd_config_last_reload_successful 1\n"));
	atomic_store(&s.stop, 1);
	pthread_join(s.thread, NULL);
	metrics_free(s.m);
	/* closed: the socket file is gone */
	assert_int_equal(stat(path, &st), -1);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_counts_and_text),
		cmocka_unit_test(test_text_format),
		cmocka_unit_test(test_request_line),
		cmocka_unit_test(test_http_tcp),
		cmocka_unit_test(test_http_unix),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
