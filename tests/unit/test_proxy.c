// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * The proxy for real, without the kernel programs: the test plays the part
 * of the sockops program by inserting origins into a real BPF hash map
 * (needs root / CAP_BPF), runs an upstream echo server and a dnsmasq on
 * loopback, and talks to the proxy through real sockets. Every case reads
 * back its JSON audit record.
 *
 * Loopback only; every process, thread, fd and file is cleaned up.
 * TEST_PROXY_BULK_MB overrides the bulk size (default 64) for slow runs
 * under valgrind.
 */
#include <arpa/inet.h>
#include <bpf/bpf.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
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
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "audit.h"
#include "threads_named.h"
#include "config.h"
#include "egressd_shared.h"
#include "log.h"
#include "policy.h"
#include "proxy.h"

#ifndef SO_NETNS_COOKIE
#define SO_NETNS_COOKIE 71
#endif

#define TEST_CGROUP_ID 4242
#define TEST_CGROUP "/test.slice/agent"
#define IO_TIMEOUT_S 5

enum up_mode {
	UP_ECHO = 0,   /* echo, then "|eof" after the client's FIN */
	UP_BANNER = 1, /* server speaks first, then echo */
};

struct upstream {
	int lfd;
	uint16_t port;
	pthread_t thread;
	atomic_bool stop;
	atomic_int mode;
	atomic_int active;
	atomic_int accepted;
};

struct fx {
	int map_fd;
	uint64_t cookie;
	char audit_path[64];
	struct audit *audit;
	size_t audit_seen;
	struct policy *pol;
	struct config cfg;
	struct proxy *p;
	uint16_t pport;
	struct upstream up;
};

static pid_t dnsmasq_pid = -1;
static uint16_t dns_port;
static char dns_csv[64];

/* ---- helpers ---------------------------------------------------------- */

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int send_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Read until EOF or cap; returns bytes, or -errno on error/timeout. */
static ssize_t recv_until_eof(int fd, char *buf, size_t cap)
{
	size_t got = 0;

	while (got < cap) {
		ssize_t n = recv(fd, buf + got, cap - got, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

static int recv_exact(int fd, char *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = recv(fd, buf + got, len - got, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		got += (size_t)n;
	}
	return 0;
}

static void set_timeouts(int fd, int seconds)
{
	struct timeval tv = { .tv_sec = seconds };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static uint16_t sock_port(int fd)
{
	struct sockaddr_in sin;
	socklen_t len = sizeof(sin);

	assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
	return ntohs(sin.sin_port);
}

static void mapped_v4(uint8_t out[16], const char *ip)
{
	struct in_addr a;

	assert_int_equal(inet_pton(AF_INET, ip, &a), 1);
	memset(out, 0, 16);
	out[10] = out[11] = 0xff;
	memcpy(out + 12, &a, 4);
}

/* ---- upstream echo server --------------------------------------------- */

static void *upstream_conn(void *arg)
{
	int fd = (int)(intptr_t)arg;
	char *b = malloc(65536);
	ssize_t n = -1;

	if (!b)
		goto out;
	for (;;) {
		n = recv(fd, b, 65536, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (send_all(fd, b, (size_t)n) < 0)
			break;
	}
	if (n == 0)
		send_all(fd, "|eof", 4); /* proves the half-close arrived */
out:
	free(b);
	close(fd);
	return NULL;
}

struct conn_arg {
	struct upstream *up;
	int fd;
};

static void *upstream_handler(void *arg)
{
	struct conn_arg *ca = arg;
	struct upstream *up = ca->up;
	int fd = ca->fd;

	free(ca);
	set_timeouts(fd, 20);
	if (atomic_load(&up->mode) == UP_BANNER)
		send_all(fd, "SSH-2.0-test\r\n", 14);
	upstream_conn((void *)(intptr_t)fd);
	atomic_fetch_sub(&up->active, 1);
	return NULL;
}

static void *upstream_main(void *arg)
{
	struct upstream *up = arg;

	while (!atomic_load(&up->stop)) {
		struct pollfd pfd = { .fd = up->lfd, .events = POLLIN };
		struct conn_arg *ca;
		pthread_t th;
		int fd;

		if (poll(&pfd, 1, 50) <= 0)
			continue;
		fd = accept(up->lfd, NULL, NULL);
		if (fd < 0)
			continue;
		atomic_fetch_add(&up->accepted, 1);
		ca = malloc(sizeof(*ca));
		if (!ca) {
			close(fd);
			continue;
		}
		ca->up = up;
		ca->fd = fd;
		atomic_fetch_add(&up->active, 1);
		if (pthread_create(&th, NULL, upstream_handler, ca)) {
			atomic_fetch_sub(&up->active, 1);
			close(fd);
			free(ca);
			continue;
		}
		pthread_detach(th);
	}
	return NULL;
}

static void upstream_start(struct upstream *up)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	int one = 1;

	up->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(up->lfd >= 0);
	setsockopt(up->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(up->lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(up->lfd, 64), 0);
	up->port = sock_port(up->lfd);
	atomic_store(&up->stop, false);
	assert_int_equal(pthread_create(&up->thread, NULL, upstream_main, up), 0);
}

static void upstream_stop(struct upstream *up)
{
	uint64_t deadline = now_ms() + 5000;

	atomic_store(&up->stop, true);
	pthread_join(up->thread, NULL);
	close(up->lfd);
	/* Handlers end when their client side closes (bounded by timeouts). */
	while (atomic_load(&up->active) > 0 && now_ms() < deadline)
		usleep(10000);
}

/* ---- dnsmasq ---------------------------------------------------------- */

static uint16_t free_udp_port(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	uint16_t port;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0)
		return 0;
	port = sock_port(fd);
	close(fd);
	return port;
}

static bool udp_port_taken(uint16_t port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
	int fd = socket(AF_INET, SOCK_DGRAM, 0);
	bool taken;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	taken = bind(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0 && errno == EADDRINUSE;
	close(fd);
	return taken;
}

static int dnsmasq_start(void **state)
{
	char port_arg[32];
	uint64_t deadline;

	signal(SIGPIPE, SIG_IGN);
	log_set_level(getenv("TEST_PROXY_DEBUG") ? EGR_LOG_DEBUG : EGR_LOG_ERROR);
	dns_port = free_udp_port();
	if (!dns_port)
		return -1;
	snprintf(port_arg, sizeof(port_arg), "--port=%u", dns_port);
	snprintf(dns_csv, sizeof(dns_csv), "127.0.0.1:%u", dns_port);
	dnsmasq_pid = fork();
	if (dnsmasq_pid < 0)
		return -1;
	if (dnsmasq_pid == 0) {
		int null = open("/dev/null", O_RDWR);

		dup2(null, 0);
		dup2(null, 1);
		dup2(null, 2);
		execl("/usr/sbin/dnsmasq", "dnsmasq", "--no-daemon", "--conf-file=/dev/null",
		      port_arg, "--listen-address=127.0.0.1", "--bind-interfaces",
		      "--no-resolv", "--no-hosts", "--pid-file=",
		      "--address=/allowed.test/127.0.0.1", "--address=/private.test/127.0.0.1",
		      "--address=/nx.test/", (char *)NULL);
		_exit(127);
	}
	deadline = now_ms() + 5000;
	while (!udp_port_taken(dns_port)) {
		int st;

		if (waitpid(dnsmasq_pid, &st, WNOHANG) == dnsmasq_pid || now_ms() > deadline) {
			fprintf(stderr, "dnsmasq did not start\n");
			dnsmasq_pid = -1;
			return -1;
		}
		usleep(10000);
	}
	return 0;
}

static int dnsmasq_stop(void **state)
{
	if (dnsmasq_pid > 0) {
		kill(dnsmasq_pid, SIGTERM);
		waitpid(dnsmasq_pid, NULL, 0);
		dnsmasq_pid = -1;
	}
	return 0;
}

/* ---- fixture ---------------------------------------------------------- */

static const struct policy *fx_policy_for(void *ctx, const struct egr_origin *o)
{
	struct fx *f = ctx;

	return o->cgroup_id == TEST_CGROUP_ID ? f->pol : NULL;
}

static const char *fx_cgroup_name(void *ctx, uint64_t id, char *buf, size_t len)
{
	(void)ctx;
	if (id != TEST_CGROUP_ID)
		return NULL;
	snprintf(buf, len, "%s", TEST_CGROUP);
	return buf;
}

static int fx_setup(void **state)
{
	struct audit_options ao = { .format = AUDIT_JSON, .denials_to_stderr = false };
	struct config dflt = CONFIG_DEFAULTS;
	socklen_t len = sizeof(uint64_t);
	struct fx *f;
	int fd;

	f = calloc(1, sizeof(*f));
	if (!f)
		return -1;
	f->map_fd = bpf_map_create(BPF_MAP_TYPE_HASH, "egr_conns", sizeof(struct egr_conn_key),
				   sizeof(struct egr_origin), 1024, NULL);
	if (f->map_fd < 0) {
		fprintf(stderr, "bpf_map_create: %s (root needed)\n", strerror(errno));
		free(f);
		return -1;
	}
	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &f->cookie, &len) < 0)
		f->cookie = 0;
	close(fd);
	snprintf(f->audit_path, sizeof(f->audit_path), "/tmp/egr-test-proxy-XXXXXX");
	fd = mkstemp(f->audit_path);
	if (fd < 0)
		return -1;
	close(fd);
	ao.path = f->audit_path;
	if (audit_open(&f->audit, &ao))
		return -1;
	f->pol = policy_new("testpol");
	f->cfg = dflt;
	f->cfg.workers = 2;
	f->cfg.dns_servers = dns_csv;
	upstream_start(&f->up);
	*state = f;
	return 0;
}

static int fx_teardown(void **state)
{
	struct fx *f = *state;

	if (!f)
		return 0;
	proxy_destroy(f->p);
	upstream_stop(&f->up);
	policy_free(f->pol);
	audit_close(f->audit);
	unlink(f->audit_path);
	close(f->map_fd);
	free(f);
	return 0;
}

static void fx_rule(struct fx *f, bool deny, const char *fmt, ...)
{
	char text[128], err[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (policy_add_rule(f->pol, deny, text, "test", err, sizeof(err)))
		fail_msg("rule %s: %s", text, err);
}

static void fx_start(struct fx *f)
{
	struct proxy_params pp = {
		.cfg = &f->cfg,
		.policy_for = fx_policy_for,
		.cgroup_name = fx_cgroup_name,
		.ctx = f,
		.conns_map_fd = f->map_fd,
		.audit = f->audit,
	};

	assert_int_equal(proxy_create(&f->p, &pp), 0);
	f->pport = proxy_port(f->p);
	assert_true(f->pport != 0);
	assert_int_equal(proxy_start(f->p), 0);
}

/* A client socket on a known 127.0.0.1 port; with_origin: as if sockops
 * had recorded that it wanted dst_ip:dst_port. Connected to the proxy. */
static int fx_client(struct fx *f, bool with_origin, const char *dst_ip, uint16_t dst_port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	if (with_origin) {
		struct egr_conn_key k;
		struct egr_origin o;

		memset(&k, 0, sizeof(k));
		memset(&o, 0, sizeof(o));
		k.netns_cookie = f->cookie;
		mapped_v4(k.addr, "127.0.0.1");
		k.port = sock_port(fd);
		mapped_v4(o.dst_addr, dst_ip);
		o.dst_port = dst_port;
		o.family = EGR_AF_INET;
		o.flags = EGR_ORIGIN_KEYED | EGR_ORIGIN_TCP;
		o.cgroup_id = TEST_CGROUP_ID;
		o.netns_cookie = f->cookie;
		o.tgid = (uint32_t)getpid();
		o.pid = (uint32_t)getpid();
		o.uid = (uint32_t)getuid();
		snprintf(o.comm, sizeof(o.comm), "tclient");
		o.key = k;
		assert_int_equal(bpf_map_update_elem(f->map_fd, &k, &o, BPF_ANY), 0);
	}
	sin.sin_port = htons(f->pport);
	assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	set_timeouts(fd, IO_TIMEOUT_S);
	return fd;
}

/* The next audit record (one per connection), within 5 s. */
static json_t *fx_audit_next(struct fx *f)
{
	uint64_t deadline = now_ms() + 5000;

	for (;;) {
		FILE *fp = fopen(f->audit_path, "r");
		char line[8192];
		size_t n = 0;

		assert_non_null(fp);
		while (fgets(line, sizeof(line), fp)) {
			if (n++ == f->audit_seen && strchr(line, '\n')) {
				json_error_t jerr;
				json_t *j = json_loads(line, 0, &jerr);

				fclose(fp);
				if (!j)
					fail_msg("audit line not JSON: %s: %s", jerr.text, line);
				f->audit_seen++;
				return j;
			}
		}
		fclose(fp);
		if (now_ms() > deadline)
			fail_msg("no audit record #%zu within 5 s", f->audit_seen + 1);
		usleep(10000);
	}
}

static const char *jstr(json_t *j, const char *key)
{
	json_t *v = json_object_get(j, key);

	return json_is_string(v) ? json_string_value(v) : NULL;
}

static long long jint(json_t *j, const char *key)
{
	json_t *v = json_object_get(j, key);

	return json_is_integer(v) ? json_integer_value(v) : -1;
}

static void assert_audit(json_t *j, const char *verdict, const char *reason)
{
	const char *v = jstr(j, "verdict"), *r = jstr(j, "reason");

	if (!v || !r || strcmp(v, verdict) || strcmp(r, reason)) {
		char *dump = json_dumps(j, 0);

		fail_msg("expected %s/%s, audit says %s", verdict, reason, dump);
	}
	assert_string_equal(jstr(j, "origin"), "proxy");
}

/* A TLS 1.2-style ClientHello record with SNI (and optionally ALPN). */
static size_t build_client_hello(uint8_t *out, const char *sni, const char *alpn)
{
	uint8_t body[1024], ext[512];
	size_t b = 0, e = 0, hl, nl = strlen(sni);

	ext[e++] = 0x00;
	ext[e++] = 0x00;
	ext[e++] = (uint8_t)((nl + 5) >> 8);
	ext[e++] = (uint8_t)(nl + 5);
	ext[e++] = (uint8_t)((nl + 3) >> 8);
	ext[e++] = (uint8_t)(nl + 3);
	ext[e++] = 0x00;
	ext[e++] = (uint8_t)(nl >> 8);
	ext[e++] = (uint8_t)nl;
	memcpy(ext + e, sni, nl);
	e += nl;
	if (alpn) {
		size_t al = strlen(alpn);

		ext[e++] = 0x00;
		ext[e++] = 0x10;
		ext[e++] = 0;
		ext[e++] = (uint8_t)(al + 3);
		ext[e++] = 0;
		ext[e++] = (uint8_t)(al + 1);
		ext[e++] = (uint8_t)al;
		memcpy(ext + e, alpn, al);
		e += al;
	}
	body[b++] = 0x03;
	body[b++] = 0x03;
	for (int i = 0; i < 32; i++)
		body[b++] = (uint8_t)(i * 7);
	body[b++] = 0;                              /* session id */
	body[b++] = 0; body[b++] = 4;               /* cipher suites */
	body[b++] = 0x13; body[b++] = 0x01;
	body[b++] = 0xc0; body[b++] = 0x2f;
	body[b++] = 1; body[b++] = 0;               /* compression: null */
	body[b++] = (uint8_t)(e >> 8);
	body[b++] = (uint8_t)e;
	memcpy(body + b, ext, e);
	b += e;
	hl = b + 4;
	out[0] = 0x16;
	out[1] = 0x03;
	out[2] = 0x01;
	out[3] = (uint8_t)(hl >> 8);
	out[4] = (uint8_t)hl;
	out[5] = 0x01;
	out[6] = 0;
	out[7] = (uint8_t)(b >> 8);
	out[8] = (uint8_t)b;
	memcpy(out + 9, body, b);
	return 9 + b;
}

/* The proxy refused us: RST or FIN with nothing, within the timeout. */
static void assert_closed_without_data(int fd)
{
	char c;
	ssize_t n = recv(fd, &c, 1, 0);

	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
		fail_msg("proxy neither answered nor closed within %d s", IO_TIMEOUT_S);
	assert_true(n <= 0);
}

/* ---- cases ------------------------------------------------------------ */

/* IP rule: bytes both ways, half-close both ways, counts, audit record. */
/* Send msg on fd and get it back from the echo upstream, byte for byte. */
static void expect_echo(int fd, const void *msg, size_t len)
{
	char *buf = malloc(len ? len : 1);

	assert_non_null(buf);
	assert_int_equal(send_all(fd, msg, len), 0);
	assert_int_equal(recv_exact(fd, buf, len), 0);
	assert_memory_equal(buf, msg, len);
	free(buf);
}

/* An address rule admits a protocol whose first words are not a whole
 * line yet ("hello 1", waiting for the server's answer) at once: only what
 * the DNS memory would admit waits for the line to end. */
static void test_ip_rule_partial_line(void **state)
{
	struct fx *f = *state;
	const char msg[] = "hello 1";
	json_t *j;
	int fd;

	fx_rule(f, false, "127.0.0.0/8");
	fx_start(f);
	fd = fx_client(f, true, "127.0.0.1", f->up.port);
	expect_echo(fd, msg, sizeof(msg) - 1);
	close(fd);
	j = fx_audit_next(f);
	assert_audit(j, "allow", "rule_allow");
	json_decref(j);
}

static void test_allow_ip_rule(void **state)
{
	struct fx *f = *state;
	const char msg[] = "<ping>\n";
	char buf[64];
	ssize_t n;
	json_t *j;
	int fd;

	fx_rule(f, false, "127.0.0.0/8");
	fx_start(f);
	fd = fx_client(f, true, "127.0.0.1", f->up.port);
	expect_echo(fd, msg, sizeof(msg) - 1);
	/* our FIN reaches upstream ("|eof"), and its FIN reaches us */
	assert_int_equal(shutdown(fd, SHUT_WR), 0);
	n = recv_until_eof(fd, buf, sizeof(buf));
	assert_int_equal(n, 4);
	assert_memory_equal(buf, "|eof", 4);
	close(fd);

	j = fx_audit_next(f);
	assert_audit(j, "allow", "rule_allow");
	assert_string_equal(jstr(j, "rule"), f->pol->allow[0].text);
	assert_string_equal(jstr(j, "policy"), "testpol");
	assert_string_equal(jstr(j, "cgroup"), TEST_CGROUP);
	assert_int_equal(jint(j, "cgroup_id"), TEST_CGROUP_ID);
	assert_int_equal(jint(j, "pid"), getpid());
	assert_string_equal(jstr(j, "comm"), "tclient");
	assert_string_equal(jstr(j, "dst"), "127.0.0.1");
	assert_int_equal(jint(j, "dst_port"), f->up.port);
	assert_string_equal(jstr(j, "resolved"), "127.0.0.1");
	assert_int_equal(jint(j, "bytes_up"), sizeof(msg) - 1);
	assert_int_equal(jint(j, "bytes_down"), sizeof(msg) - 1 + 4);
	assert_null(jstr(j, "sni"));
	assert_null(jstr(j, "host"));
	json_decref(j);
}

/* top -H, perf and /proc tell the proxy's threads apart by name. */
static void test_threads_named(void **state)
{
	struct fx *f = *state;

	fx_start(f);
	assert_int_equal(threads_named("egressd-prx0"), 1);
	assert_int_equal(threads_named("egressd-prx1"), 1);
	assert_int_equal(threads_named("egressd-fdbrk"), 1);
}

/* Not redirected by our kernel programs: no origin -> reset, no_origin. */
static void test_no_origin(void **state)
{
	struct fx *f = *state;
	json_t *j;
	int fd;

	fx_rule(f, false, "127.0.0.0/8");
	fx_start(f);
	fd = fx_client(f, false, NULL, 0);
	send_all(fd, "<ping>\n", 7);
	assert_closed_without_data(fd);
	close(fd);
	j = fx_audit_next(f);
	assert_audit(j, "deny", "no_origin");
	assert_null(json_object_get(j, "pid"));
	assert_int_equal(atomic_load(&f->up.accepted), 0);
	json_decref(j);
}

static void expect_tls_alert(int fd)
{
	static const uint8_t alert[] = { 0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 49 };
	char buf[64];
	ssize_t n = recv_until_eof(fd, buf, sizeof(buf));

	assert_int_equal(n, sizeof(alert));
	assert_memory_equal(buf, alert, sizeof(alert));
}

/* TLS to a name no rule allows: fatal access_denied alert, then close. */
static void test_tls_denied_name(void **state)
{
	struct fx *f = *state;
	uint8_t hello[1024];
	size_t len = build_client_hello(hello, "evil.test", "http/1.1");
	json_t *j;
	int fd;

	fx_rule(f, false, "allowed.test");
	fx_rule(f, true, "blocked.test");
	fx_start(f);
	fd = fx_client(f, true, "192.0.2.1", 443);
	assert_int_equal(send_all(fd, hello, len), 0);
	expect_tls_alert(fd);
	close(fd);
	j = fx_audit_next(f);
	assert_audit(j, "deny", "no_match");
	assert_string_equal(jstr(j, "sni"), "evil.test");
	assert_string_equal(jstr(j, "alpn"), "http/1.1");
	assert_string_equal(jstr(j, "dst"), "192.0.2.1");
	json_decref(j);

	/* a deny rule names itself */
	len = build_client_hello(hello, "blocked.test", NULL);
	fd = fx_client(f, true, "192.0.2.1", 443);
	assert_int_equal(send_all(fd, hello, len), 0);
	expect_tls_alert(fd);
	close(fd);
	j = fx_audit_next(f);
	assert_audit(j, "deny", "rule_deny");
	assert_string_equal(jstr(j, "rule"), "blocked.test");
	json_decref(j);

	/* SNI that is an IP literal */
	len = build_client_hello(hello, "192.0.2.7", NULL);
	fd = fx_client(f, true, "192.0.2.1", 443);
	assert_int_equal(send_all(fd, hello, len), 0);
	expect_tls_alert(fd);
	close(fd);
	j = fx_audit_next(f);
	assert_audit(j, "deny", "bad_name");
	json_decref(j);
	assert_int_equal(atomic_load(&f->up.accepted), 0);
}

/* Send a request that is refused: the answer is a 403, then EOF. */
static void http_expect_403(int fd, const char *req, size_t len, char *buf, size_t size)
{
	ssize_t n;

	assert_int_equal(send_all(fd, req, len), 0);
	n = recv_until_eof(fd, buf, size - 1);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_true(!strncmp(buf, "HTTP/1.1 403 Forbidden\r\n", 24));
}

/* Plain HTTP to a name no rule allows: 403 with a one-line reason. */
static void test_http_denied_host(void **state)
{
	struct fx *f = *state;
	const char req[] = "GET / HTTP/1.1\r\nHost: evil.test\r\nUser-Agent: t\r\n\r\n";
	const char body[] = "egressd: evil.test:80 denied: no_match\n";
	char buf[2048];
	json_t *j;
	int fd;

	fx_rule(f, false, "allowed.test");
	fx_start(f);
	fd = fx_client(f, true, "192.0.2.1", 80);
	http_expect_403(fd, req, sizeof(req) - 1, buf, sizeof(buf));
	assert_non_null(strstr(buf, "\r\nConnection: close\r\n"));
	assert_non_null(strstr(buf, "\r\n\r\n"));
	assert_string_equal(strstr(buf, "\r\n\r\n") + 4, body);
	close(fd);
	j = fx_audit_next(f);
	assert_audit(j, "deny", "no_match");
	assert_string_equal(jstr(j, "host"), "evil.test");
	json_decref(j);
}

/* http://127.0.0.1:PORT/ names an address, not a host: the address rules
 * decide, as without a Host, and the proxy connects where the agent did. */
static void test_http_host_is_address(void **state)
{
	struct fx *f = *state;
	char req[128];
	json_t *j;
	int fd, len;

	fx_rule(f, false, "127.0.0.0/8");
	fx_start(f);
	len = snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: 127.0.0.1:%u\r\n\r\n",
		       f->up.port);
	fd = fx_client(f, true, "127.0.0.1", f->up.port);
	expect_echo(fd, req, (size_t)len);
	close(fd);
	j = fx_audit_next(f);
	assert_audit(j, "allow", "rule_allow");
	assert_string_equal(jstr(j, "host"), "127.0.0.1");
	assert_string_equal(jstr(j, "resolved"), "127.0.0.1");
	json_decref(j);
}

/* ... and with no address rule for it, the denial says no rule matched
 * (not that the Host was a bad name). */
static void test_http_host_is_address_denied(void **state)
{
	struct fx *f = *state;
	const char req[] = "GET / HTTP/1.1\r\nHost: 192.0.2.1\r\n\r\n";
	char buf[2048];
	json_t *j;
	int fd;

	fx_rule(f, false, "allowed.test");
	fx_start(f);
	fd = fx_client(f, true, "192.0.2.1", 80);
	http_expect_403(fd, req, sizeof(req) - 1, buf, sizeof(buf));
	close(fd);
	j = fx_audit_next(f);
	assert_audit(j, "deny", "no_match");
	assert_string_equal(jstr(j, "host"), "192.0.2.1");
	json_decref(j);
	assert_int_equal(atomic_load(&f->up.accepted), 0);
}

/* Allowed name: resolved by the proxy (dnsmasq says 127.0.0.1), never the
 * agent's address (192.0.2.1), and relayed; both HTTP and TLS. */
static void test_name_resolved_and_relayed(void **state)
{
	struct fx *f = *state;
	char req[128], buf[2048];
	uint8_t hello[1024];
	size_t len;
	ssize_t n;
	json_t *j;
	int fd;

	fx_rule(f, false, "allowed.test:%u", f->up.port);
	fx_rule(f, false, "127.0.0.0/8");
	fx_start(f);

	len = (size_t)snprintf(req, sizeof(req), "GET /x HTTP/1.1\r\nHost: allowed.test:%u\r\n\r\n",
			       f->up.port);
	fd = fx_client(f, true, "192.0.2.1", f->up.port);
	assert_int_equal(send_all(fd, req, len), 0);
	assert_int_equal(shutdown(fd, SHUT_WR), 0);
	n = recv_until_eof(fd, buf, sizeof(buf));
	assert_int_equal(n, (ssize_t)len + 4);
	assert_memory_equal(buf, req, len);
	close(fd);
	j = fx_audit_next(f);
	assert_audit(j, "allow", "rule_allow");
	assert_string_equal(jstr(j, "host"), "allowed.test");
	assert_string_equal(jstr(j, "dst"), "192.0.2.1");
	assert_string_equal(jstr(j, "resolved"), "127.0.0.1");
	assert_string_equal(jstr(j, "rule"), f->pol->allow[0].text);
	assert_int_equal(jint(j, "bytes_up"), (long long)len);
	assert_int_equal(jint(j, "bytes_down"), (long long)len + 4);
	json_decref(j);

	/* TLS: the peeked ClientHello is flushed upstream intact */
	len = build_client_hello(hello, "allowed.test", NULL);
	fd = fx_client(f, true, "192.0.2.1", f->up.port);
	expect_echo(fd, hello, len);
	close(fd);
	j = fx_audit_next(f);
	assert_audit(j, "allow", "rule_allow");
	assert_string_equal(jstr(j, "sni"), "allowed.test");
	assert_string_equal(jstr(j, "resolved"), "127.0.0.1");
	json_decref(j);
}

/* Plain HTTP allowed by name: a later request on the connection naming
 * another host (which a shared address would route by) ends it; one for
 * the same host goes through. Also when it comes with the first head. */
static void test_http_later_request_other_host(void **state)
{
	struct fx *f = *state;
	char req[256], buf[2048];
	size_t len;
	ssize_t n;
	json_t *j;
	int fd;

	fx_rule(f, false, "allowed.test:%u", f->up.port);
	fx_rule(f, false, "127.0.0.0/8"); /* the name's answer is loopback */
	fx_start(f);

	/* same host twice: both relayed (the upstream echoes) */
	len = (size_t)snprintf(req, sizeof(req), "GET /a HTTP/1.1\r\nHost: allowed.test:%u\r\n\r\n",
			       f->up.port);
	fd = fx_client(f, true, "192.0.2.1", f->up.port);
	expect_echo(fd, req, len);
	expect_echo(fd, req, len);
	close(fd);
	j = fx_audit_next(f);
	assert_audit(j, "allow", "rule_allow");
	json_decref(j);

	/* then another host, in the relay: reset, never echoed */
	fd = fx_client(f, true, "192.0.2.1", f->up.port);
	expect_echo(fd, req, len);
	n = snprintf(req, sizeof(req), "GET /b HTTP/1.1\r\nHost: evil.test\r\n\r\n");
	assert_int_equal(send_all(fd, req, (size_t)n), 0);
	n = recv(fd, buf, sizeof(buf), 0);
	assert_true(n <= 0); /* RST (or EOF), no echo */
	close(fd);
	j = fx_audit_next(f);
	assert_audit(j, "deny", "no_match");
	assert_non_null(strstr(jstr(j, "detail"), "names evil.test"));
	json_decref(j);

	/* pipelined with the first head: refused before anything goes up */
	len = (size_t)snprintf(req, sizeof(req),
			       "GET /a HTTP/1.1\r\nHost: allowed.test:%u\r\n\r\n"
			       "GET /b HTTP/1.1\r\nHost: evil.test\r\n\r\n", f->up.port);
	fd = fx_client(f, true, "192.0.2.1", f->up.port);
	http_expect_403(fd, req, len, buf, sizeof(buf));
	close(fd);
	j = fx_audit_next(f);
	assert_audit(j, "deny", "no_match");
	json_decref(j);
}

/* After an Upgrade request the client's bytes go raw, but the server may
 * not have switched (this echo upstream never does): a later request line,
 * even split across reads at its " HTTP/1.", ends the connection; the
 * WebSocket-like frame before it goes through. */
static void test_http_upgrade_then_request(void **state)
{
	struct fx *f = *state;
	static const char frame[] = "\x81\x85\x01\x02\x03\x04\x69\x67\x6f\x68\x6e";
	static const char part1[] = "GET /b HT", part2[] = "TP/1.1\r\nHost: evil.test\r\n\r\n";
	char req[256], buf[2048];
	size_t len;
	ssize_t n;
	json_t *j;
	int fd;

	fx_rule(f, false, "allowed.test:%u", f->up.port);
	fx_rule(f, false, "127.0.0.0/8"); /* the name's answer is loopback */
	fx_start(f);

	len = (size_t)snprintf(req, sizeof(req),
			       "GET /ws HTTP/1.1\r\nHost: allowed.test:%u\r\nConnection: Upgrade\r\n"
			       "Upgrade: websocket\r\n\r\n", f->up.port);
	fd = fx_client(f, true, "192.0.2.1", f->up.port);
	expect_echo(fd, req, len);
	expect_echo(fd, frame, sizeof(frame) - 1);
	expect_echo(fd, part1, sizeof(part1) - 1);
	assert_int_equal(send_all(fd, part2, sizeof(part2) - 1), 0);
	n = recv(fd, buf, sizeof(buf), 0);
	assert_true(n <= 0); /* RST (or EOF), no echo */
	close(fd);
	j = fx_audit_next(f);
	assert_audit(j, "deny", "no_match");
	assert_non_null(strstr(jstr(j, "detail"), "after an Upgrade"));
	json_decref(j);

	/* pipelined with the upgrade head: refused before anything goes up */
	len = (size_t)snprintf(req, sizeof(req),
			       "GET /ws HTTP/1.1\r\nHost: allowed.test:%u\r\nConnection: Upgrade\r\n"
			       "Upgrade: x\r\n\r\nGET /b HTTP/1.1\r\nHost: evil.test\r\n\r\n",
			       f->up.port);
	fd = fx_client(f, true, "192.0.2.1", f->up.port);
	http_expect_403(fd, req, len, buf, sizeof(buf));
	close(fd);
	j = fx_audit_next(f);
	assert_audit(j, "deny", "no_match");
	assert_non_null(strstr(jstr(j, "detail"), "after an Upgrade"));
	json_decref(j);
}

/* The client goes on sending while its name is resolved and upstream
 * connected (the proxy stops reading it only when it does, and reads it
 * again in the relay): every byte arrives upstream, in order, once. */
static void test_client_sends_while_connecting(void **state)
{
	struct fx *f = *state;
	char req[128], buf[4096], want[4096];
	size_t len, total;
	ssize_t n;
	json_t *j;
	int fd, i;

	fx_rule(f, false, "allowed.test:%u", f->up.port);
	fx_rule(f, false, "127.0.0.0/8"); /* the name's answer is loopback */
	fx_start(f);

	len = (size_t)snprintf(req, sizeof(req), "POST /x HTTP/1.1\r\nHost: allowed.test:%u\r\n"
			       "Content-Length: 360\r\n\r\n", f->up.port);
	memcpy(want, req, len);
	total = len;
	fd = fx_client(f, true, "192.0.2.1", f->up.port);
	assert_int_equal(send_all(fd, req, len), 0);
	for (i = 0; i < 40; i++) {
		char chunk[10];

		snprintf(chunk, sizeof(chunk), "chunk%03d\n", i);
		assert_int_equal(send_all(fd, chunk, 9), 0);
		memcpy(want + total, chunk, 9);
		total += 9;
		if (i % 8 == 0)
			usleep(200);
	}
	assert_int_equal(shutdown(fd, SHUT_WR), 0);
	n = recv_until_eof(fd, buf, sizeof(buf));
	assert_int_equal(n, (ssize_t)total + 4);
	assert_memory_equal(buf, want, total);
	assert_memory_equal(buf + total, "|eof", 4);
	close(fd);
	j = fx_audit_next(f);
	assert_audit(j, "allow", "rule_allow");
	assert_int_equal(jint(j, "bytes_up"), (long long)total);
	json_decref(j);
}

/* A name that resolves to loopback without a rule naming it: refused. */
static void test_name_private_addr(void **state)
{
	struct fx *f = *state;
	char req[128], buf[1024];
	size_t len;
	ssize_t n;
	json_t *j;
	int fd;

	fx_rule(f, false, "private.test:%u", f->up.port);
	fx_rule(f, false, "nx.test:%u", f->up.port);
	fx_start(f);
	len = (size_t)snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: private.test\r\n\r\n");
	fd = fx_client(f, true, "192.0.2.1", f->up.port);
	assert_int_equal(send_all(fd, req, len), 0);
	n = recv_until_eof(fd, buf, sizeof(buf) - 1);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_true(!strncmp(buf, "HTTP/1.1 403 ", 13));
	assert_non_null(strstr(buf, "denied: private_addr\n"));
	close(fd);
	j = fx_audit_next(f);
	assert_audit(j, "deny", "private_addr");
	assert_string_equal(jstr(j, "resolved"), "127.0.0.1");
	json_decref(j);

	/* NXDOMAIN */
	len = (size_t)snprintf(req, sizeof(req), "GET / HTTP/1.1\r\nHost: nx.test\r\n\r\n");
	fd = fx_client(f, true, "192.0.2.1", f->up.port);
	assert_int_equal(send_all(fd, req, len), 0);
	n = recv_until_eof(fd, buf, sizeof(buf) - 1);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_true(!strncmp(buf, "HTTP/1.1 502 ", 13));
	close(fd);
	j = fx_audit_next(f);
	assert_audit(j, "deny", "resolve");
	json_decref(j);
	assert_int_equal(atomic_load(&f->up.accepted), 0);
}

/* Slowloris: part of a ClientHello, then nothing. And a silent client
 * to an address no IP rule allows. */
static void test_peek_timeout(void **state)
{
	struct fx *f = *state;
	uint64_t t0;
	json_t *j;
	int fd;

	f->cfg.peek_timeout_ms = 200;
	fx_rule(f, false, "allowed.test");
	fx_start(f);
	fd = fx_client(f, true, "192.0.2.1", 443);
	t0 = now_ms();
	assert_int_equal(send_all(fd, "\x16\x03\x01\x02", 4), 0);
	expect_tls_alert(fd);
	assert_true(now_ms() - t0 >= 150);
	assert_true(now_ms() - t0 < 3000);
	close(fd);
	j = fx_audit_next(f);
	assert_audit(j, "deny", "peek_timeout");
	json_decref(j);

	fd = fx_client(f, true, "192.0.2.1", 22);
	assert_closed_without_data(fd);
	close(fd);
	j = fx_audit_next(f);
	assert_audit(j, "deny", "no_name");
	json_decref(j);
}

/* ssh-like: the server speaks first; an IP rule allows the destination,
 * so the proxy must connect without waiting for client bytes. */
static void test_server_speaks_first(void **state)
{
	struct fx *f = *state;
	char buf[64];
	uint64_t t0;
	json_t *j;
	int fd;

	atomic_store(&f->up.mode, UP_BANNER);
	fx_rule(f, false, "127.0.0.1");
	fx_start(f);
	t0 = now_ms();
	fd = fx_client(f, true, "127.0.0.1", f->up.port);
	assert_int_equal(recv_exact(fd, buf, 14), 0);
	assert_memory_equal(buf, "SSH-2.0-test\r\n", 14);
	assert_true(now_ms() - t0 >= 250);
	assert_true(now_ms() - t0 < 3000);
	assert_int_equal(send_all(fd, "x", 1), 0);
	assert_int_equal(shutdown(fd, SHUT_WR), 0);
	assert_int_equal(recv_until_eof(fd, buf, sizeof(buf)), 5);
	assert_memory_equal(buf, "x|eof", 5);
	close(fd);
	j = fx_audit_next(f);
	assert_audit(j, "allow", "rule_allow");
	assert_int_equal(jint(j, "bytes_up"), 1);
	assert_int_equal(jint(j, "bytes_down"), 19);
	json_decref(j);
}

struct writer_arg {
	int fd;
	size_t total;
	int err;
};

static void fill_pattern(uint8_t *b, size_t off, size_t n)
{
	for (size_t i = 0; i < n; i++)
		b[i] = (uint8_t)(((off + i) * 2654435761u) >> 13);
}

static void *bulk_writer(void *arg)
{
	struct writer_arg *wa = arg;
	uint8_t *b = malloc(1 << 20);
	size_t off = 0;

	while (b && off < wa->total) {
		size_t n = wa->total - off < (1 << 20) ? wa->total - off : (1 << 20);

		fill_pattern(b, off, n);
		if (send_all(wa->fd, b, n) < 0) {
			wa->err = errno ? errno : EIO;
			break;
		}
		off += n;
	}
	shutdown(wa->fd, SHUT_WR);
	free(b);
	return NULL;
}

struct upload_arg {
	int fd, err;
	size_t body;
	char head[256], tail[256];
};

/* head, body bytes of the pattern, tail, then FIN */
static void *http_upload_writer(void *arg)
{
	struct upload_arg *ua = arg;
	uint8_t *b = malloc(1 << 20);
	size_t off = 0;

	if (!b || send_all(ua->fd, ua->head, strlen(ua->head)) < 0)
		ua->err = EIO;
	while (b && !ua->err && off < ua->body) {
		size_t n = ua->body - off < (1 << 20) ? ua->body - off : (1 << 20);

		fill_pattern(b, off, n);
		if (send_all(ua->fd, b, n) < 0)
			ua->err = errno ? errno : EIO;
		off += n;
	}
	if (!ua->err && send_all(ua->fd, ua->tail, strlen(ua->tail)) < 0)
		ua->err = errno ? errno : EIO;
	shutdown(ua->fd, SHUT_WR);
	free(b);
	return NULL;
}

/* A plain-HTTP upload of 8 MiB, framed by its Content-Length (its bytes
 * are not taken for requests), then a second request for the same host:
 * all of it reaches the upstream intact. */
static void test_http_upload_checked(void **state)
{
	struct fx *f = *state;
	struct upload_arg ua = { .body = 8 << 20 };
	uint8_t *buf = malloc(1 << 20);
	size_t got = 0, hl, tl;
	pthread_t th;
	json_t *j;
	int fd;

	assert_non_null(buf);
	fx_rule(f, false, "allowed.test:%u", f->up.port);
	fx_rule(f, false, "127.0.0.0/8"); /* the name's answer is loopback */
	fx_start(f);
	snprintf(ua.head, sizeof(ua.head),
		 "POST /up HTTP/1.1\r\nHost: allowed.test:%u\r\nContent-Length: %zu\r\n\r\n",
		 f->up.port, ua.body);
	snprintf(ua.tail, sizeof(ua.tail), "GET /b HTTP/1.1\r\nHost: allowed.test:%u\r\n\r\n",
		 f->up.port);
	hl = strlen(ua.head);
	tl = strlen(ua.tail);
	fd = fx_client(f, true, "192.0.2.1", f->up.port);
	set_timeouts(fd, 30);
	ua.fd = fd;
	assert_int_equal(pthread_create(&th, NULL, http_upload_writer, &ua), 0);
	for (;;) {
		ssize_t n = recv(fd, buf, 1 << 20, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	pthread_join(th, NULL);
	close(fd);
	assert_int_equal(ua.err, 0);
	assert_int_equal(got, hl + ua.body + tl + 4); /* the echo, then "|eof" */
	j = fx_audit_next(f);
	assert_audit(j, "allow", "rule_allow");
	assert_int_equal(jint(j, "bytes_up"), (long long)(hl + ua.body + tl));
	json_decref(j);
	free(buf);
}

/* 64 MiB up and echoed back down, verified byte by byte. */
static void test_bulk_transfer(void **state)
{
	struct fx *f = *state;
	const char *mb = getenv("TEST_PROXY_BULK_MB");
	size_t total = (size_t)(mb ? atoi(mb) : 64) << 20;
	struct writer_arg wa = { .total = total };
	uint8_t *buf = malloc(1 << 20), *want = malloc(1 << 20);
	size_t got = 0;
	pthread_t th;
	uint64_t t0 = now_ms();
	json_t *j;
	int fd;

	assert_non_null(buf);
	assert_non_null(want);
	fx_rule(f, false, "127.0.0.0/8");
	fx_start(f);
	fd = fx_client(f, true, "127.0.0.1", f->up.port);
	set_timeouts(fd, 30);
	wa.fd = fd;
	assert_int_equal(pthread_create(&th, NULL, bulk_writer, &wa), 0);
	for (;;) {
		ssize_t n = recv(fd, buf, 1 << 20, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			fail_msg("recv after %zu bytes: %s", got, strerror(errno));
		if (n == 0)
			break;
		if (got < total) {
			size_t cmp = (size_t)n;

			if (got + cmp > total)
				cmp = total - got;
			fill_pattern(want, got, cmp);
			if (memcmp(buf, want, cmp))
				fail_msg("corrupt data near offset %zu", got);
		}
		got += (size_t)n;
	}
	pthread_join(th, NULL);
	close(fd);
	assert_int_equal(wa.err, 0);
	assert_int_equal(got, total + 4);
	j = fx_audit_next(f);
	assert_audit(j, "allow", "rule_allow");
	assert_int_equal(jint(j, "bytes_up"), (long long)total);
	assert_int_equal(jint(j, "bytes_down"), (long long)total + 4);
	json_decref(j);
	print_message("bulk: %zu MiB each way in %llu ms\n", total >> 20,
		      (unsigned long long)(now_ms() - t0));
	free(buf);
	free(want);
}

static uint64_t cpu_ms(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (uint64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000 +
	       (uint64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000;
}

/* A client that does not read: everything stalls (upstream blocked, our
 * pipes full, the client's writer blocked) and the proxy must sleep, not
 * spin on EPOLLIN/EPOLLHUP. Then everything arrives. */
static void test_backpressure_no_spin(void **state)
{
	struct fx *f = *state;
	struct writer_arg wa = { .total = 16 << 20 };
	char *buf = malloc(1 << 20);
	uint64_t c0, used;
	size_t got = 0;
	pthread_t th;
	json_t *j;
	int fd;

	assert_non_null(buf);
	fx_rule(f, false, "127.0.0.0/8");
	fx_start(f);
	fd = fx_client(f, true, "127.0.0.1", f->up.port);
	set_timeouts(fd, 30);
	wa.fd = fd;
	assert_int_equal(pthread_create(&th, NULL, bulk_writer, &wa), 0);
	usleep(300000);
	c0 = cpu_ms();
	usleep(300000);
	used = cpu_ms() - c0;
	print_message("cpu while stalled: %llu ms in 300 ms\n", (unsigned long long)used);
	/* valgrind is slow enough to still be moving bytes here */
	if (!getenv("LD_PRELOAD") || !strstr(getenv("LD_PRELOAD"), "vgpreload"))
		assert_true(used < 60);
	for (;;) {
		ssize_t n = recv(fd, buf, 1 << 20, 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			fail_msg("recv after %zu bytes: %s", got, strerror(errno));
		if (n == 0)
			break;
		got += (size_t)n;
	}
	pthread_join(th, NULL);
	close(fd);
	assert_int_equal(got, wa.total + 4);
	j = fx_audit_next(f);
	assert_audit(j, "allow", "rule_allow");
	assert_int_equal(jint(j, "bytes_up"), (long long)wa.total);
	json_decref(j);
	free(buf);
}

static int count_pipe_fds(void)
{
	char path[300], target[64];
	struct dirent *de;
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	assert_non_null(d);
	while ((de = readdir(d))) {
		ssize_t l;

		snprintf(path, sizeof(path), "/proc/self/fd/%s", de->d_name);
		l = readlink(path, target, sizeof(target) - 1);
		if (l > 0 && !strncmp(target, "pipe:", 5))
			n++;
	}
	closedir(d);
	return n;
}

/* Pipes are held only while bytes are in flight: N relayed connections
 * that exchanged data and went idle cost sockets, not 4N pipe fds (what
 * lets one egressd hold 10,000 idle connections within RLIMIT_NOFILE). */
static void test_idle_conns_hold_no_pipes(void **state)
{
	enum { N = 100 };
	struct fx *f = *state;
	int fds[N], before, after, i;
	char buf[8];

	fx_rule(f, false, "127.0.0.0/8");
	fx_start(f);
	before = count_pipe_fds();
	for (i = 0; i < N; i++) {
		fds[i] = fx_client(f, true, "127.0.0.1", f->up.port);
		assert_int_equal(send_all(fds[i], "<ping>\n", 7), 0);
		assert_int_equal(recv_exact(fds[i], buf, 7), 0);
	}
	after = count_pipe_fds();
	print_message("pipe fds: %d before, %d with %d idle relayed connections\n",
		      before, after, N);
	/* At most the workers' spare pools (a few pipes: every transfer
	 * hands its pipe back), never a pair per connection. */
	assert_true(after - before <= 2 * 2 * 8);
	/* and the idle connections still relay, both ways */
	for (i = 0; i < N; i++) {
		assert_int_equal(send_all(fds[i], "<pong>\n", 7), 0);
		assert_int_equal(recv_exact(fds[i], buf, 7), 0);
		assert_memory_equal(buf, "<pong>\n", 7);
		close(fds[i]);
	}
	for (i = 0; i < N; i++)
		json_decref(fx_audit_next(f));
}

/* Per-cgroup limit: the second concurrent connection is reset. */
static void test_conn_limit(void **state)
{
	struct fx *f = *state;
	char buf[8];
	json_t *j;
	int a, b;

	f->cfg.max_conns_per_cgroup = 1;
	fx_rule(f, false, "127.0.0.0/8");
	fx_start(f);
	a = fx_client(f, true, "127.0.0.1", f->up.port);
	assert_int_equal(send_all(a, "<a>", 3), 0);
	assert_int_equal(recv_exact(a, buf, 3), 0);
	b = fx_client(f, true, "127.0.0.1", f->up.port);
	assert_closed_without_data(b);
	close(b);
	j = fx_audit_next(f);
	assert_audit(j, "deny", "conn_limit");
	json_decref(j);
	close(a);
	j = fx_audit_next(f);
	assert_audit(j, "allow", "rule_allow");
	json_decref(j);
	/* the slot is free again */
	b = fx_client(f, true, "127.0.0.1", f->up.port);
	assert_int_equal(send_all(b, "<b>", 3), 0);
	assert_int_equal(recv_exact(b, buf, 3), 0);
	close(b);
	j = fx_audit_next(f);
	assert_audit(j, "allow", "rule_allow");
	json_decref(j);
}

/* Upstream refuses: the client is reset, reason upstream. */
static void test_upstream_refused(void **state)
{
	struct fx *f = *state;
	uint16_t dead = free_udp_port(); /* nothing listens on TCP there, likely */
	json_t *j;
	int fd;

	fx_rule(f, false, "127.0.0.0/8");
	fx_start(f);
	fd = fx_client(f, true, "127.0.0.1", dead);
	assert_int_equal(send_all(fd, "<x>", 3), 0);
	assert_closed_without_data(fd);
	close(fd);
	j = fx_audit_next(f);
	assert_audit(j, "deny", "upstream");
	assert_non_null(jstr(j, "detail"));
	json_decref(j);
}

/* Audit mode: what enforce would deny is relayed and logged as audit. */
static void test_audit_mode(void **state)
{
	struct fx *f = *state;
	char buf[16];
	json_t *j;
	int fd;

	f->pol->mode = POLICY_AUDIT;
	fx_start(f);
	fd = fx_client(f, true, "127.0.0.1", f->up.port);
	assert_int_equal(send_all(fd, "<x>", 3), 0);
	assert_int_equal(recv_exact(fd, buf, 3), 0);
	close(fd);
	j = fx_audit_next(f);
	assert_audit(j, "audit", "no_name");
	json_decref(j);
}

/* No byte either way for idle_timeout_ms: closed (within 2x). */
static void test_idle_timeout(void **state)
{
	struct fx *f = *state;
	char buf[8];
	uint64_t t0;
	json_t *j;
	int fd;

	f->cfg.idle_timeout_ms = 200;
	fx_rule(f, false, "127.0.0.0/8");
	fx_start(f);
	fd = fx_client(f, true, "127.0.0.1", f->up.port);
	assert_int_equal(send_all(fd, "<x>", 3), 0);
	assert_int_equal(recv_exact(fd, buf, 3), 0);
	t0 = now_ms();
	assert_closed_without_data(fd);
	assert_true(now_ms() - t0 >= 150);
	assert_true(now_ms() - t0 < 2000);
	close(fd);
	j = fx_audit_next(f);
	assert_audit(j, "allow", "rule_allow");
	assert_non_null(strstr(jstr(j, "detail"), "idle"));
	json_decref(j);
}

/* proxy_stop() with a live relay: bounded, and the record is written. */
static void test_stop_with_live_conn(void **state)
{
	struct fx *f = *state;
	char buf[8];
	uint64_t t0;
	json_t *j;
	int fd;

	fx_rule(f, false, "127.0.0.0/8");
	fx_start(f);
	fd = fx_client(f, true, "127.0.0.1", f->up.port);
	assert_int_equal(send_all(fd, "<x>", 3), 0);
	assert_int_equal(recv_exact(fd, buf, 3), 0);
	t0 = now_ms();
	proxy_stop(f->p);
	assert_true(now_ms() - t0 < 2500);
	assert_closed_without_data(fd);
	close(fd);
	j = fx_audit_next(f);
	assert_audit(j, "allow", "rule_allow");
	json_decref(j);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_ip_rule_partial_line, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_allow_ip_rule, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_threads_named, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_no_origin, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_tls_denied_name, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_http_denied_host, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_http_host_is_address, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_http_host_is_address_denied, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_name_resolved_and_relayed, fx_setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_http_later_request_other_host, fx_setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_http_upgrade_then_request, fx_setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_client_sends_while_connecting, fx_setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_name_private_addr, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_peek_timeout, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_server_speaks_first, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_bulk_transfer, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_http_upload_checked, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_backpressure_no_spin, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_idle_conns_hold_no_pipes, fx_setup,
						fx_teardown),
		cmocka_unit_test_setup_teardown(test_conn_limit, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_upstream_refused, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_audit_mode, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_idle_timeout, fx_setup, fx_teardown),
		cmocka_unit_test_setup_teardown(test_stop_with_live_conn, fx_setup, fx_teardown),
	};

	return cmocka_run_group_tests(tests, dnsmasq_start, dnsmasq_stop);
}
