// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * user/dnsproxy.c against a real upstream: dnsmasq on 127.0.0.1 at a high
 * port (started here, killed by PID), queries over real loopback UDP and
 * TCP sockets, audit records read back from a JSON file. dnsmasq's query
 * log proves what was (not) forwarded.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "dnsmsg.h"
#include "dnsproxy.h"
#include "kfold.h"
#include "log.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Cgroup ids the test origin can claim; each maps to one policy. */
enum {
	CG_NONE = 0,   /* origin_for_udp fails: no origin */
	CG_ENFORCE = 1,
	CG_CIDR = 2,   /* CG_ENFORCE's rules + 127.0.0.1 */
	CG_AUDIT = 3,
	CG_NOPOLICY = 4,
};

#define TEST_PID 4242
#define TEST_UID 1000
#define TEST_COMM "agent-dig"
#define ASKED_SERVER "198.51.100.53" /* the server the "agent" thought it asked */

struct fixture {
	char dir[64];
	char audit_path[128];
	char dnsmasq_log[128];
	pid_t dnsmasq;
	uint16_t upstream_port;
	struct audit *audit;
	struct config cfg;
	struct policy *pol[5];
	struct dnsproxy *d;
	uint16_t port;
};

static struct fixture F;
static int g_cg = CG_ENFORCE; /* read by the proxy thread, set between queries */
static uint64_t g_charged;    /* likewise: the bound cgroup charged, 0 none */

/* ---- callbacks ---------------------------------------------------------- */

static void fill_origin(struct egr_origin *o, uint64_t cg)
{
	struct egr_addr a;

	memset(o, 0, sizeof(*o));
	addr_parse(ASKED_SERVER, &a);
	memcpy(o->dst_addr, a.b, sizeof(o->dst_addr));
	o->dst_port = 53;
	o->family = EGR_AF_INET;
	o->flags = EGR_ORIGIN_UDP;
	o->cgroup_id = cg;
	o->charged_cgroup = __atomic_load_n(&g_charged, __ATOMIC_SEQ_CST);
	if (o->charged_cgroup)
		o->flags |= EGR_ORIGIN_CHARGED;
	o->tgid = TEST_PID;
	o->pid = TEST_PID;
	o->uid = TEST_UID;
	snprintf(o->comm, sizeof(o->comm), "%s", TEST_COMM);
}

static int test_origin_for_udp(void *ctx, const struct sockaddr *peer, socklen_t peer_len,
			       struct egr_origin *o)
{
	int cg = __atomic_load_n(&g_cg, __ATOMIC_SEQ_CST);

	assert_true(peer->sa_family == AF_INET || peer->sa_family == AF_INET6);
	if (cg == CG_NONE)
		return -ENOENT;
	fill_origin(o, (uint64_t)cg);
	return 0;
}

static const struct policy *test_policy_for(void *ctx, const struct egr_origin *o)
{
	struct fixture *f = ctx;

	if (o->cgroup_id >= ARRAY_SIZE(f->pol))
		return NULL;
	return f->pol[o->cgroup_id];
}

static const char *const cg_names[] = { NULL, "/test/enforce", "/test/cidr",
					"/test/audit", "/test/nopolicy" };

static const char *test_cgroup_name(void *ctx, uint64_t id, char *buf, size_t len)
{
	(void)ctx;
	if (id >= ARRAY_SIZE(cg_names) || !cg_names[id])
		return NULL;
	snprintf(buf, len, "%s", cg_names[id]);
	return buf;
}

static void set_cg(int cg)
{
	__atomic_store_n(&g_cg, cg, __ATOMIC_SEQ_CST);
}

/* ---- DNS messages ------------------------------------------------------- */

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = v >> 8;
	p[1] = v & 0xff;
}

/* A query for name/qtype, RD set; edns != 0 adds an OPT record with that
 * UDP size. Returns its length. */
static size_t make_query(uint8_t *buf, size_t len, uint16_t id, const char *name,
			 uint16_t qtype, uint16_t edns)
{
	int n;
	size_t off;

	assert_true(len >= 12 + 255 + 4 + 11);
	memset(buf, 0, 12);
	put16(buf, id);
	put16(buf + 2, 0x0100);
	put16(buf + 4, 1);
	put16(buf + 10, edns ? 1 : 0);
	n = dnsmsg_encode_name(name, buf + 12, len - 12);
	assert_true(n > 0);
	off = 12 + (size_t)n;
	put16(buf + off, qtype);
	put16(buf + off + 2, 1);
	off += 4;
	if (edns) {
		buf[off] = 0;             /* root */
		put16(buf + off + 1, DNSMSG_OPT);
		put16(buf + off + 3, edns);
		memset(buf + off + 5, 0, 6); /* ttl, rdlength */
		off += 11;
	}
	return off;
}

static uint16_t next_id(void)
{
	static uint16_t id = 0x1200;

	return ++id;
}

/* ---- sockets ------------------------------------------------------------ */

static int udp_client(int family)
{
	struct sockaddr_storage ss;
	struct egr_addr a;
	socklen_t sl;
	int fd;

	assert_int_equal(addr_parse(family == AF_INET ? "127.0.0.1" : "::1", &a), 0);
	sl = addr_to_sockaddr(&a, F.port, &ss);
	fd = socket(family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&ss, sl), 0);
	return fd;
}

/* Wait up to timeout_ms for one datagram; returns its length or -1. */
static ssize_t recv_timeout(int fd, uint8_t *buf, size_t len, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };

	if (poll(&p, 1, timeout_ms) != 1)
		return -1;
	return recv(fd, buf, len, 0);
}

/* Send q over UDP (family), return the answer length (or -1: none). */
static ssize_t udp_ask_fam(int family, const uint8_t *q, size_t qlen, uint8_t *ans,
			   size_t alen, int timeout_ms)
{
	int fd = udp_client(family);
	ssize_t n;

	assert_int_equal(send(fd, q, qlen, 0), (ssize_t)qlen);
	n = recv_timeout(fd, ans, alen, timeout_ms);
	close(fd);
	return n;
}

static ssize_t udp_ask(const uint8_t *q, size_t qlen, uint8_t *ans, size_t alen)
{
	return udp_ask_fam(AF_INET, q, qlen, ans, alen, 5000);
}

/* Ask name/qtype over UDP as cgroup cg; parse the answer into *a (which
 * must carry the query's ID). Returns the answer's rcode. */
static int ask(int cg, const char *name, uint16_t qtype, uint16_t edns,
	       struct dnsmsg_answer *a)
{
	uint8_t q[512], ans[4096];
	uint16_t id = next_id();
	size_t ql = make_query(q, sizeof(q), id, name, qtype, edns);
	ssize_t n;

	set_cg(cg);
	n = udp_ask(q, ql, ans, sizeof(ans));
	if (n < 0)
		fail_msg("no answer for %s", name);
	assert_int_equal(dnsmsg_parse_answer(ans, (size_t)n, a), 0);
	assert_int_equal(a->id, id);
	assert_string_equal(a->qname, name);
	assert_int_equal(a->qtype, qtype);
	return a->rcode;
}

static bool answer_has(const struct dnsmsg_answer *a, uint16_t type, const char *addr)
{
	struct egr_addr want;
	size_t i;

	assert_int_equal(addr_parse(addr, &want), 0);
	for (i = 0; i < a->n_rr; i++)
		if (a->rr[i].type == type && !memcmp(a->rr[i].addr.b, want.b, 16))
			return true;
	return false;
}

static size_t answer_count(const struct dnsmsg_answer *a, uint16_t type)
{
	size_t i, n = 0;

	for (i = 0; i < a->n_rr; i++)
		n += a->rr[i].type == type;
	return n;
}

/* A TCP connection handed to the DNS proxy as the TCP proxy would: the
 * accepted end goes to dnsproxy_take_tcp(), the other end is returned. */
static int tcp_handoff(int cg)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sin);
	struct egr_origin o;
	int lfd, cfd, afd;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(lfd >= 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(listen(lfd, 1), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&sin, &sl), 0);
	cfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(cfd >= 0);
	assert_int_equal(connect(cfd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	afd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	assert_true(afd >= 0);
	close(lfd);
	fill_origin(&o, (uint64_t)cg);
	o.flags = EGR_ORIGIN_TCP;
	assert_int_equal(dnsproxy_take_tcp(F.d, afd, &o), 0);
	return cfd;
}

/* Read exactly len bytes (or fail after timeout_ms). 0 bytes read at EOF
 * returns 0. */
static ssize_t read_full(int fd, uint8_t *buf, size_t len, int timeout_ms)
{
	size_t got = 0;

	while (got < len) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (poll(&p, 1, timeout_ms) != 1)
			return -1;
		n = recv(fd, buf + got, len - got, 0);
		if (n <= 0)
			return got ? -1 : n;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

/* One length-prefixed DNS message from a TCP stream. */
static ssize_t tcp_read_msg(int fd, uint8_t *buf, size_t len)
{
	uint8_t hdr[2];
	size_t mlen;

	if (read_full(fd, hdr, 2, 5000) != 2)
		return -1;
	mlen = (size_t)hdr[0] << 8 | hdr[1];
	assert_true(mlen <= len);
	return read_full(fd, buf, mlen, 5000) == (ssize_t)mlen ? (ssize_t)mlen : -1;
}

/* ---- logs --------------------------------------------------------------- */

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *s;
	long n;

	if (!f)
		return strdup("");
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	s = calloc(1, (size_t)n + 1);
	assert_non_null(s);
	if (n && fread(s, 1, (size_t)n, f) != (size_t)n)
		fail_msg("short read of %s", path);
	fclose(f);
	return s;
}

static bool file_contains(const char *path, const char *needle)
{
	char *s = slurp(path);
	bool r = strstr(s, needle) != NULL;

	free(s);
	return r;
}

/* dnsmasq writes its log asynchronously: wait for a line. */
static bool wait_for_log(const char *path, const char *needle, int timeout_ms)
{
	int waited;

	for (waited = 0; waited < timeout_ms; waited += 20) {
		if (file_contains(path, needle))
			return true;
		usleep(20 * 1000);
	}
	return false;
}

/* The last audit record whose host is host (and proto, if not NULL);
 * the caller json_decref()s it. */
static json_t *audit_find(const char *host, const char *proto)
{
	char *s = slurp(F.audit_path), *line, *save = NULL;
	json_t *found = NULL;

	for (line = strtok_r(s, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		json_error_t err;
		json_t *o = json_loads(line, 0, &err);
		const char *h, *p;

		if (!o)
			fail_msg("audit line is not JSON: %s", line);
		h = json_string_value(json_object_get(o, "host"));
		p = json_string_value(json_object_get(o, "proto"));
		if ((host ? h && !strcmp(h, host) : !h) && (!proto || (p && !strcmp(p, proto)))) {
			json_decref(found);
			found = o;
		} else {
			json_decref(o);
		}
	}
	free(s);
	if (!found)
		fail_msg("no audit record for %s", host ? host : "(no host)");
	return found;
}

static const char *jstr(json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s ? s : "";
}

static long long jint(json_t *o, const char *key)
{
	return json_integer_value(json_object_get(o, key));
}

/* Verdict, reason, and the origin fields every record with an origin has. */
static void check_record(json_t *o, const char *proto, int cg, const char *verdict,
			 const char *reason)
{
	assert_string_equal(jstr(o, "proto"), proto);
	assert_string_equal(jstr(o, "verdict"), verdict);
	assert_string_equal(jstr(o, "reason"), reason);
	assert_string_equal(jstr(o, "origin"), "dns");
	if (cg == CG_NONE)
		return;
	assert_int_equal(jint(o, "cgroup_id"), cg);
	assert_string_equal(jstr(o, "cgroup"), cg_names[cg]);
	assert_int_equal(jint(o, "pid"), TEST_PID);
	assert_int_equal(jint(o, "uid"), TEST_UID);
	assert_string_equal(jstr(o, "comm"), TEST_COMM);
	assert_string_equal(jstr(o, "dst"), ASKED_SERVER);
	assert_int_equal(jint(o, "dst_port"), 53);
}

/* ---- dnsmasq ------------------------------------------------------------ */

static pid_t start_dnsmasq(uint16_t port)
{
	char portarg[32], logarg[160];
	char *argv[64];
	char big[40][48];
	int i, n = 0, fd;
	pid_t pid;

	snprintf(portarg, sizeof(portarg), "--port=%u", port);
	snprintf(logarg, sizeof(logarg), "--log-facility=%s", F.dnsmasq_log);
	argv[n++] = "dnsmasq";
	argv[n++] = "--keep-in-foreground";
	argv[n++] = "--no-resolv";
	argv[n++] = "--no-hosts";
	argv[n++] = "--conf-file=/dev/null";
	argv[n++] = "--pid-file=";
	argv[n++] = portarg;
	argv[n++] = "--listen-address=127.0.0.1";
	argv[n++] = "--bind-interfaces";
	argv[n++] = "--host-record=allowed.test,192.0.2.10,2001:db8::10";
	argv[n++] = "--host-record=evil.test,192.0.2.66";
	argv[n++] = "--cname=www.allowed.test,allowed.test";
	argv[n++] = "--host-record=rebind.test,127.0.0.1";
	argv[n++] = "--txt-record=allowed.test,hello";
	argv[n++] = "--local-ttl=1";
	argv[n++] = "--log-queries";
	argv[n++] = logarg;
	/* 40 A records: 666 bytes, more than a plain UDP answer may carry */
	for (i = 0; i < 40; i++) {
		snprintf(big[i], sizeof(big[i]), "--host-record=big.test,192.0.2.%d", 100 + i);
		argv[n++] = big[i];
	}
	argv[n] = NULL;
	assert_true(n < (int)ARRAY_SIZE(argv));

	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		fd = open("/dev/null", O_RDWR);
		if (fd >= 0) {
			dup2(fd, 0);
			dup2(fd, 1);
		}
		execvp("dnsmasq", argv);
		execv("/usr/sbin/dnsmasq", argv);
		_exit(127);
	}
	return pid;
}

/* Is something answering DNS over UDP on 127.0.0.1:port? */
static bool upstream_ready(uint16_t port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port) };
	uint8_t q[512], ans[1024];
	size_t ql = make_query(q, sizeof(q), 1, "allowed.test", DNSMSG_A, 0);
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	bool ok;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ok = fd >= 0 && connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0 &&
	     send(fd, q, ql, 0) == (ssize_t)ql && recv_timeout(fd, ans, sizeof(ans), 100) > 0;
	if (fd >= 0)
		close(fd);
	return ok;
}

static void stop_dnsmasq(void)
{
	if (F.dnsmasq > 0) {
		kill(F.dnsmasq, SIGTERM);
		waitpid(F.dnsmasq, NULL, 0);
		F.dnsmasq = 0;
	}
}

/* Also after a failed group setup, which cmocka does not tear down. */
static void cleanup_at_exit(void)
{
	char cmd[128];

	stop_dnsmasq();
	if (F.dir[0] && !getenv("DNSPROXY_TEST_KEEP")) {
		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", F.dir);
		if (system(cmd) != 0)
			fprintf(stderr, "could not remove %s\n", F.dir);
		F.dir[0] = '\0';
	}
}

/* The fixture's callbacks and audit log, with cfg and upstream. */
static void fixture_params(struct dnsproxy_params *p, struct config *cfg, const char *upstream)
{
	p->cfg = cfg;
	p->policy_for = test_policy_for;
	p->cgroup_name = test_cgroup_name;
	p->origin_for_udp = test_origin_for_udp;
	p->ctx = &F;
	p->audit = F.audit;
	p->port = 0;
	p->upstream = upstream;
}

static int setup(void **state)
{
	static const char *const enforce_allow[] = {
		"allowed.test", "*.allowed.test", "rebind.test:*", "big.test",
	};
	struct dnsproxy_params params = { 0 };
	struct audit_options ao = { 0 };
	struct config cfg = CONFIG_DEFAULTS;
	char err[256];
	int attempt, i, status;
	size_t k;

	atexit(cleanup_at_exit);
	log_set_level(getenv("DNSPROXY_TEST_DEBUG") ? EGR_LOG_DEBUG : EGR_LOG_ERROR);
	snprintf(F.dir, sizeof(F.dir), "/tmp/test_dnsproxy.XXXXXX");
	assert_non_null(mkdtemp(F.dir));
	/* dnsmasq writes its log after dropping privileges (to nobody). */
	assert_int_equal(chmod(F.dir, 0755), 0);
	snprintf(F.audit_path, sizeof(F.audit_path), "%s/audit.json", F.dir);
	snprintf(F.dnsmasq_log, sizeof(F.dnsmasq_log), "%s/dnsmasq.log", F.dir);

	/* A high port that is free now; dnsmasq exits if it lost the race. */
	srand((unsigned)getpid() ^ (unsigned)time(NULL));
	for (attempt = 0; attempt < 10 && !F.dnsmasq; attempt++) {
		F.upstream_port = (uint16_t)(40000 + rand() % 20000);
		F.dnsmasq = start_dnsmasq(F.upstream_port);
		for (i = 0; i < 100; i++) {
			if (waitpid(F.dnsmasq, &status, WNOHANG) == F.dnsmasq) {
				F.dnsmasq = 0;
				break;
			}
			if (upstream_ready(F.upstream_port))
				break;
			usleep(50 * 1000);
		}
		if (F.dnsmasq && i == 100) {
			stop_dnsmasq();
			fail_msg("dnsmasq did not come up");
		}
	}
	assert_true(F.dnsmasq > 0);

	for (k = 0; k < ARRAY_SIZE(F.pol); k++)
		F.pol[k] = NULL;
	F.pol[CG_ENFORCE] = policy_new("enforce");
	F.pol[CG_CIDR] = policy_new("cidr");
	F.pol[CG_AUDIT] = policy_new("audit");
	for (k = 0; k < ARRAY_SIZE(enforce_allow); k++) {
		assert_int_equal(policy_add_rule(F.pol[CG_ENFORCE], false, enforce_allow[k],
						 NULL, err, sizeof(err)), 0);
		assert_int_equal(policy_add_rule(F.pol[CG_CIDR], false, enforce_allow[k],
						 NULL, err, sizeof(err)), 0);
	}
	assert_int_equal(policy_add_rule(F.pol[CG_ENFORCE], true, "blocked.allowed.test:*",
					 NULL, err, sizeof(err)), 0);
	assert_int_equal(policy_add_rule(F.pol[CG_CIDR], false, "127.0.0.1", NULL, err,
					 sizeof(err)), 0);
	assert_int_equal(policy_add_rule(F.pol[CG_AUDIT], false, "other.test", NULL, err,
					 sizeof(err)), 0);
	assert_int_equal(policy_add_rule(F.pol[CG_AUDIT], false, "rebind.test", NULL, err,
					 sizeof(err)), 0);
	F.pol[CG_AUDIT]->mode = POLICY_AUDIT;

	ao.path = F.audit_path;
	ao.format = AUDIT_JSON;
	ao.denials_to_stderr = false;
	assert_int_equal(audit_open(&F.audit, &ao), 0);

	cfg.resolve_timeout_ms = 3000;
	F.cfg = cfg;
	{
		static char upstream[32];

		snprintf(upstream, sizeof(upstream), "127.0.0.1:%u", F.upstream_port);
		fixture_params(&params, &F.cfg, upstream);
	}
	assert_int_equal(dnsproxy_create(&F.d, &params), 0);
	F.port = dnsproxy_port(F.d);
	assert_true(F.port != 0);
	assert_int_equal(dnsproxy_start(F.d), 0);
	return 0;
}

static int teardown(void **state)
{
	size_t k;

	dnsproxy_destroy(F.d);
	F.d = NULL;
	audit_close(F.audit);
	F.audit = NULL;
	for (k = 0; k < ARRAY_SIZE(F.pol); k++)
		policy_free(F.pol[k]);
	cleanup_at_exit();
	return 0;
}

/* ---- cases -------------------------------------------------------------- */

static void test_allowed_a_aaaa(void **state)
{
	struct dnsmsg_answer a;
	json_t *o;

	assert_int_equal(ask(CG_ENFORCE, "allowed.test", DNSMSG_A, 0, &a), DNSMSG_NOERROR);
	assert_true(answer_has(&a, DNSMSG_A, "192.0.2.10"));
	assert_int_equal(answer_count(&a, DNSMSG_A), 1);
	o = audit_find("allowed.test", "udp");
	check_record(o, "udp", CG_ENFORCE, "allow", "rule_allow");
	assert_string_equal(jstr(o, "rule"), "allowed.test");
	assert_string_equal(jstr(o, "policy"), "enforce");
	assert_string_equal(jstr(o, "detail"), "A; addrs=1");
	json_decref(o);

	assert_int_equal(ask(CG_ENFORCE, "allowed.test", DNSMSG_AAAA, 1232, &a), DNSMSG_NOERROR);
	assert_true(answer_has(&a, DNSMSG_AAAA, "2001:db8::10"));
	assert_int_equal(answer_count(&a, DNSMSG_AAAA), 1);
	o = audit_find("allowed.test", "udp");
	assert_string_equal(jstr(o, "detail"), "AAAA; addrs=1");
	json_decref(o);
}

static void test_ipv6_listener(void **state)
{
	uint8_t q[512], ans[1024];
	struct dnsmsg_answer a;
	size_t ql;
	ssize_t n;

	if (!dnsproxy_has_v6(F.d))
		skip();
	set_cg(CG_ENFORCE);
	ql = make_query(q, sizeof(q), 0x6666, "allowed.test", DNSMSG_A, 0);
	n = udp_ask_fam(AF_INET6, q, ql, ans, sizeof(ans), 5000);
	assert_true(n > 0);
	assert_int_equal(dnsmsg_parse_answer(ans, (size_t)n, &a), 0);
	assert_int_equal(a.id, 0x6666);
	assert_true(answer_has(&a, DNSMSG_A, "192.0.2.10"));
}

static void test_cname_chain(void **state)
{
	struct dnsmsg_answer a;
	struct egr_addr ip;
	char name[256];
	size_t i;
	bool cname = false;

	assert_int_equal(ask(CG_ENFORCE, "www.allowed.test", DNSMSG_A, 0, &a), DNSMSG_NOERROR);
	for (i = 0; i < a.n_rr; i++)
		if (a.rr[i].type == DNSMSG_CNAME && !strcmp(a.rr[i].target, "allowed.test"))
			cname = true;
	assert_true(cname);
	assert_true(answer_has(&a, DNSMSG_A, "192.0.2.10"));
	/* remembered under the name the agent asked, not the CNAME target */
	addr_parse("192.0.2.10", &ip);
	assert_true(dnsproxy_name_for_addr(F.d, CG_ENFORCE, &ip, name, sizeof(name)));
	assert_string_equal(name, "www.allowed.test");
}

static void test_denied_never_forwarded(void **state)
{
	static const struct {
		const char *name;
		uint16_t qtype;
		const char *reason;
		const char *rule;
	} cases[] = {
		{ "evil.test", DNSMSG_A, "no_match", NULL },
		/* tunnelling: data in a long random label, TXT for the reply */
		{ "k3j4h5g6f7d8s9a0q1w2e3r4t5y6u7i8o9p0z1x2c3v4b5n6m7l8k9j0h1g2f3d.evil.test",
		  DNSMSG_TXT, "no_match", NULL },
		{ "agvsbg8gd29ybgqgdghpcybpcyblegzpbhryyxrlzcbkyxrh.x1.evil.test",
		  DNSMSG_AAAA, "no_match", NULL },
		{ "evil.test", DNSMSG_ANY, "no_match", NULL },
		{ "blocked.allowed.test", DNSMSG_A, "rule_deny", "blocked.allowed.test:*" },
		{ "rebind.test.evil.test", DNSMSG_A, "no_match", NULL },
	};
	char marker[64], line[300], tbuf[16];
	struct dnsmsg_answer a;
	size_t i;
	json_t *o;

	for (i = 0; i < ARRAY_SIZE(cases); i++) {
		assert_int_equal(ask(CG_ENFORCE, cases[i].name, cases[i].qtype, 0, &a),
				 DNSMSG_NXDOMAIN);
		assert_int_equal(a.n_rr, 0);
		o = audit_find(cases[i].name, "udp");
		check_record(o, "udp", CG_ENFORCE, "deny", cases[i].reason);
		assert_string_equal(jstr(o, "rule"), cases[i].rule ? cases[i].rule : "");
		snprintf(tbuf, sizeof(tbuf), "%s", dnsmsg_type_name(cases[i].qtype));
		assert_string_equal(jstr(o, "detail"), tbuf);
		json_decref(o);
	}
	/* An allowed name asked afterwards shows up in dnsmasq's log; once it
	 * is there, everything asked before would be too. */
	snprintf(marker, sizeof(marker), "marker%u.allowed.test", (unsigned)getpid());
	assert_int_equal(ask(CG_ENFORCE, marker, DNSMSG_A, 0, &a), DNSMSG_SERVFAIL);
	snprintf(line, sizeof(line), "query[A] %s", marker);
	assert_true(wait_for_log(F.dnsmasq_log, line, 3000));
	assert_true(file_contains(F.dnsmasq_log, "query[A] allowed.test"));
	assert_false(file_contains(F.dnsmasq_log, "evil.test"));
	assert_false(file_contains(F.dnsmasq_log, "blocked.allowed.test"));
}

static void test_rebinding(void **state)
{
	struct dnsmsg_answer a;
	struct egr_addr lo;
	json_t *o;

	addr_parse("127.0.0.1", &lo);
	assert_int_equal(ask(CG_ENFORCE, "rebind.test", DNSMSG_A, 0, &a), DNSMSG_REFUSED);
	assert_int_equal(a.n_rr, 0);
	assert_false(dnsproxy_name_for_addr(F.d, CG_ENFORCE, &lo, NULL, 0));
	o = audit_find("rebind.test", "udp");
	check_record(o, "udp", CG_ENFORCE, "deny", "private_addr");
	assert_non_null(strstr(jstr(o, "detail"), "127.0.0.1 is loopback"));
	json_decref(o);

	/* A rule that names the address makes it acceptable. */
	assert_int_equal(ask(CG_CIDR, "rebind.test", DNSMSG_A, 0, &a), DNSMSG_NOERROR);
	assert_true(answer_has(&a, DNSMSG_A, "127.0.0.1"));
	assert_true(dnsproxy_name_for_addr(F.d, CG_CIDR, &lo, NULL, 0));
	o = audit_find("rebind.test", "udp");
	check_record(o, "udp", CG_CIDR, "allow", "rule_allow");
	assert_string_equal(jstr(o, "rule"), "rebind.test:*");
	json_decref(o);
}

static void test_no_origin_no_policy(void **state)
{
	struct dnsmsg_answer a;
	json_t *o;

	assert_int_equal(ask(CG_NONE, "allowed.test", DNSMSG_A, 0, &a), DNSMSG_REFUSED);
	assert_int_equal(a.n_rr, 0);
	o = audit_find("allowed.test", "udp");
	check_record(o, "udp", CG_NONE, "deny", "no_origin");
	assert_null(json_object_get(o, "cgroup_id"));
	assert_non_null(strstr(jstr(o, "detail"), "from 127.0.0.1:"));
	json_decref(o);

	assert_int_equal(ask(CG_NOPOLICY, "allowed.test", DNSMSG_A, 0, &a), DNSMSG_REFUSED);
	o = audit_find("allowed.test", "udp");
	assert_string_equal(jstr(o, "reason"), "no_policy");
	assert_int_equal(jint(o, "cgroup_id"), CG_NOPOLICY);
	json_decref(o);
}

static void test_malformed(void **state)
{
	uint8_t q[512], ans[512];
	size_t ql;
	ssize_t n;
	int fd;

	set_cg(CG_ENFORCE);
	/* A header without a question: FORMERR with its ID. */
	memset(q, 0, 12);
	put16(q, 0xbeef);
	put16(q + 2, 0x0100);
	n = udp_ask(q, 12, ans, sizeof(ans));
	assert_int_equal(n, 12);
	assert_int_equal(ans[0], 0xbe);
	assert_int_equal(ans[1], 0xef);
	assert_true(ans[2] & 0x80);            /* QR */
	assert_int_equal(ans[3] & 0x0f, DNSMSG_FORMERR);

	/* Two questions: FORMERR. */
	ql = make_query(q, sizeof(q), 0xbef0, "allowed.test", DNSMSG_A, 0);
	put16(q + 4, 2);
	n = udp_ask(q, ql, ans, sizeof(ans));
	assert_int_equal(n, 12);
	assert_int_equal(ans[3] & 0x0f, DNSMSG_FORMERR);

	/* No header to answer, and an answer (QR=1): silence. Then a good
	 * query on the same socket gets its own answer, nothing stale. */
	fd = udp_client(AF_INET);
	assert_int_equal(send(fd, "\x12\x34\x01", 3, 0), 3);
	ql = make_query(q, sizeof(q), 0xbef1, "allowed.test", DNSMSG_A, 0);
	q[2] |= 0x80;
	assert_int_equal(send(fd, q, ql, 0), (ssize_t)ql);
	assert_true(recv_timeout(fd, ans, sizeof(ans), 300) < 0);
	ql = make_query(q, sizeof(q), 0xbef2, "allowed.test", DNSMSG_A, 0);
	assert_int_equal(send(fd, q, ql, 0), (ssize_t)ql);
	n = recv_timeout(fd, ans, sizeof(ans), 5000);
	assert_true(n > 12);
	assert_int_equal(ans[0], 0xbe);
	assert_int_equal(ans[1], 0xf2);
	close(fd);
}

static void test_tcp_pipelined(void **state)
{
	uint8_t buf[1024], ans[4096];
	struct dnsmsg_answer a;
	size_t l1, l2, l3, off;
	bool got1 = false, got2 = false, got3 = false;
	int fd, i;
	json_t *o;

	fd = tcp_handoff(CG_ENFORCE);
	/* Three queries: the first written in two pieces (a partial read for
	 * the proxy), then the other two in one segment (pipelined). */
	l1 = make_query(buf + 2, sizeof(buf) - 2, 0x7001, "allowed.test", DNSMSG_A, 0);
	put16(buf, (uint16_t)l1);
	off = 2 + l1;
	l2 = make_query(buf + off + 2, sizeof(buf) - off - 2, 0x7002, "www.allowed.test",
			DNSMSG_AAAA, 0);
	put16(buf + off, (uint16_t)l2);
	off += 2 + l2;
	l3 = make_query(buf + off + 2, sizeof(buf) - off - 2, 0x7003, "evil.test", DNSMSG_A, 0);
	put16(buf + off, (uint16_t)l3);
	off += 2 + l3;
	assert_int_equal(send(fd, buf, 7, 0), 7);
	usleep(50 * 1000);
	assert_int_equal(send(fd, buf + 7, off - 7, 0), (ssize_t)(off - 7));

	/* Answers may come in any order (RFC 7766 7). */
	for (i = 0; i < 3; i++) {
		ssize_t n = tcp_read_msg(fd, ans, sizeof(ans));

		assert_true(n > 0);
		assert_int_equal(dnsmsg_parse_answer(ans, (size_t)n, &a), 0);
		if (a.id == 0x7001) {
			assert_int_equal(a.rcode, DNSMSG_NOERROR);
			assert_true(answer_has(&a, DNSMSG_A, "192.0.2.10"));
			got1 = true;
		} else if (a.id == 0x7002) {
			assert_int_equal(a.rcode, DNSMSG_NOERROR);
			assert_true(answer_has(&a, DNSMSG_AAAA, "2001:db8::10"));
			got2 = true;
		} else if (a.id == 0x7003) {
			assert_int_equal(a.rcode, DNSMSG_NXDOMAIN);
			got3 = true;
		} else {
			fail_msg("unexpected id %#x", a.id);
		}
	}
	assert_true(got1 && got2 && got3);
	/* We close our side: the proxy closes too. */
	shutdown(fd, SHUT_WR);
	assert_int_equal(read_full(fd, ans, 1, 3000), 0);
	close(fd);

	o = audit_find("evil.test", "tcp");
	check_record(o, "tcp", CG_ENFORCE, "deny", "no_match");
	json_decref(o);
	o = audit_find("www.allowed.test", "tcp");
	check_record(o, "tcp", CG_ENFORCE, "allow", "rule_allow");
	assert_string_equal(jstr(o, "rule"), "*.allowed.test");
	json_decref(o);
}

static void test_tcp_client_gone(void **state)
{
	uint8_t buf[512], ans[512];
	size_t l;
	int fd;

	/* Half a message, then a reset: nothing to answer, nothing leaks
	 * (valgrind/ASan), and the proxy still answers the next client. */
	fd = tcp_handoff(CG_ENFORCE);
	l = make_query(buf + 2, sizeof(buf) - 2, 0x7100, "allowed.test", DNSMSG_A, 0);
	put16(buf, (uint16_t)l);
	assert_int_equal(send(fd, buf, 5, 0), 5);
	close(fd);
	/* A query whose client leaves before upstream answers. */
	fd = tcp_handoff(CG_ENFORCE);
	assert_int_equal(send(fd, buf, 2 + l, 0), (ssize_t)(2 + l));
	close(fd);

	fd = tcp_handoff(CG_ENFORCE);
	put16(buf + 2, 0x7101);
	assert_int_equal(send(fd, buf, 2 + l, 0), (ssize_t)(2 + l));
	assert_true(tcp_read_msg(fd, ans, sizeof(ans)) > 12);
	assert_int_equal(ans[0], 0x71);
	assert_int_equal(ans[1], 0x01);
	close(fd);
}

/* Has the proxy closed its end? Waits up to timeout_ms for EOF or a
 * reset; false if the connection is still open then. */
static bool tcp_closed_within(int fd, int timeout_ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	uint8_t b[512];

	if (poll(&p, 1, timeout_ms) != 1)
		return false;
	return recv(fd, b, sizeof(b), MSG_DONTWAIT) <= 0;
}

/* Decisions on record whose line holds needle: a folded record (kfold.h:
 * the repeats of a kind in a second) counts as its "count". */
static unsigned audit_count(const char *needle)
{
	char *s = slurp(F.audit_path), *p = s, *nl;
	unsigned n = 0;

	while ((p = strstr(p, needle))) {
		char *c;

		nl = strchr(p, '\n');
		if (nl)
			*nl = '\0';
		while (p > s && p[-1] != '\0' && p[-1] != '\n')
			p--; /* the line's start: "count" may come before needle */
		c = strstr(p, "\"count\":");
		n += c ? (unsigned)strtoul(c + 8, NULL, 10) : 1;
		if (!nl)
			break;
		p = nl + 1;
	}
	free(s);
	return n;
}

/* The same, once it reaches want (repeats are written when their second
 * ends), or after ms. */
static unsigned audit_count_wait(const char *needle, unsigned want, unsigned ms)
{
	unsigned n = audit_count(needle);

	for (; n < want && ms >= 50; ms -= 50) {
		usleep(50 * 1000);
		n = audit_count(needle);
	}
	return n;
}

/* One tenant cannot hold every DNS-over-TCP connection: past 32 of its
 * own, its connections are closed unread (with a record) while another
 * cgroup's query is still answered. A message trickled in a byte at a
 * time (each byte used to restart the 10 s idle timer: held forever) is
 * cut 5 s after its first byte. */
static void test_tcp_limits(void **state)
{
	enum { CAP = 32 };
	uint8_t buf[512], ans[512];
	int held[CAP], extra, other, i, round, still;
	unsigned limit_before = audit_count("\"conn_limit\"");
	unsigned late_before = audit_count("message incomplete");
	struct timespec t0, t1;
	long ms;
	size_t l;

	l = make_query(buf + 2, sizeof(buf) - 2, 0x7300, "allowed.test", DNSMSG_A, 0);
	put16(buf, (uint16_t)l);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (i = 0; i < CAP; i++) {
		held[i] = tcp_handoff(CG_ENFORCE);
		/* the length and one byte of a message never finished */
		assert_int_equal(send(held[i], buf, 3, 0), 3);
	}
	extra = tcp_handoff(CG_ENFORCE);
	assert_true(tcp_closed_within(extra, 3000));
	close(extra);
	assert_true(wait_for_log(F.audit_path, "connections open for this cgroup's tenant, limit 32",
				 3000));
	assert_int_equal(audit_count_wait("\"conn_limit\"", limit_before + 1, 2500),
			 limit_before + 1);

	/* another cgroup meanwhile */
	other = tcp_handoff(CG_CIDR);
	put16(buf + 2, 0x7301);
	assert_int_equal(send(other, buf, 2 + l, 0), (ssize_t)(2 + l));
	assert_true(tcp_read_msg(other, ans, sizeof(ans)) > 12);
	assert_int_equal(ans[0], 0x73);
	assert_int_equal(ans[1], 0x01);
	close(other);

	/* trickle a byte a second: cut at 5 s from the first byte, not
	 * kept open by the bytes (bounded: 10 rounds) */
	for (round = 0, still = CAP; round < 10 && still; round++) {
		usleep(1000 * 1000);
		for (i = 0, still = 0; i < CAP; i++) {
			if (held[i] < 0)
				continue;
			if (tcp_closed_within(held[i], 0) ||
			    send(held[i], buf + 3 + round, 1, MSG_NOSIGNAL) != 1) {
				close(held[i]);
				held[i] = -1;
				continue;
			}
			still++;
		}
		clock_gettime(CLOCK_MONOTONIC, &t1);
		ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
		/* none before the deadline */
		if (ms < 4500)
			assert_int_equal(still, CAP);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
	for (i = 0; i < CAP; i++)
		if (held[i] >= 0)
			close(held[i]);
	assert_int_equal(still, 0);
	assert_true(ms < 8500);
	assert_true(wait_for_log(F.audit_path, "message incomplete after 5000 ms (", 2000));
	assert_int_equal(audit_count_wait("message incomplete", late_before + CAP, 2500),
			 late_before + CAP);

	/* and the tenant's connections are its own again */
	other = tcp_handoff(CG_ENFORCE);
	put16(buf + 2, 0x7302);
	assert_int_equal(send(other, buf, 2 + l, 0), (ssize_t)(2 + l));
	assert_true(tcp_read_msg(other, ans, sizeof(ans)) > 12);
	assert_int_equal(ans[1], 0x02);
	close(other);
}

static void test_truncation(void **state)
{
	uint8_t q[512], ans[4096], buf[600];
	struct dnsmsg_answer a;
	size_t ql;
	ssize_t n;
	int fd;
	json_t *o;

	/* No EDNS: at most 512 bytes over UDP, so TC=1 and the question only. */
	assert_int_equal(ask(CG_ENFORCE, "big.test", DNSMSG_A, 0, &a), DNSMSG_NOERROR);
	assert_true(a.truncated);
	assert_int_equal(a.n_rr, 0);
	o = audit_find("big.test", "udp");
	assert_non_null(strstr(jstr(o, "detail"), "truncated"));
	assert_non_null(strstr(jstr(o, "detail"), "addrs=40"));
	json_decref(o);

	/* EDNS 4096: it fits. */
	assert_int_equal(ask(CG_ENFORCE, "big.test", DNSMSG_A, 4096, &a), DNSMSG_NOERROR);
	assert_false(a.truncated);
	assert_int_equal(answer_count(&a, DNSMSG_A), 40);

	/* The retry over TCP gets all of it. */
	fd = tcp_handoff(CG_ENFORCE);
	ql = make_query(q, sizeof(q), 0x7200, "big.test", DNSMSG_A, 0);
	put16(buf, (uint16_t)ql);
	memcpy(buf + 2, q, ql);
	assert_int_equal(send(fd, buf, 2 + ql, 0), (ssize_t)(2 + ql));
	n = tcp_read_msg(fd, ans, sizeof(ans));
	assert_true(n > 512);
	assert_int_equal(dnsmsg_parse_answer(ans, (size_t)n, &a), 0);
	assert_int_equal(a.id, 0x7200);
	assert_false(a.truncated);
	assert_int_equal(answer_count(&a, DNSMSG_A), 40);
	assert_true(answer_has(&a, DNSMSG_A, "192.0.2.139"));
	close(fd);
}

static void test_name_memory(void **state)
{
	struct dnsmsg_answer a;
	struct egr_addr ip4, ip6, other;
	char name[256];

	addr_parse("192.0.2.10", &ip4);
	addr_parse("2001:db8::10", &ip6);
	addr_parse("192.0.2.66", &other);
	assert_int_equal(ask(CG_ENFORCE, "allowed.test", DNSMSG_A, 0, &a), DNSMSG_NOERROR);
	assert_int_equal(ask(CG_ENFORCE, "allowed.test", DNSMSG_AAAA, 0, &a), DNSMSG_NOERROR);
	assert_true(dnsproxy_name_for_addr(F.d, CG_ENFORCE, &ip4, name, sizeof(name)));
	assert_string_equal(name, "allowed.test");
	assert_true(dnsproxy_name_for_addr(F.d, CG_ENFORCE, &ip6, name, sizeof(name)));
	assert_string_equal(name, "allowed.test");
	/* a short buffer gets a terminated prefix */
	assert_true(dnsproxy_name_for_addr(F.d, CG_ENFORCE, &ip4, name, 5));
	assert_string_equal(name, "allo");
	/* handed out to this cgroup only, and only this address */
	assert_false(dnsproxy_name_for_addr(F.d, CG_AUDIT, &ip4, name, sizeof(name)));
	assert_false(dnsproxy_name_for_addr(F.d, 99, &ip4, name, sizeof(name)));
	assert_false(dnsproxy_name_for_addr(F.d, CG_ENFORCE, &other, name, sizeof(name)));
	/* TTL 1 s (dnsmasq --local-ttl=1) */
	usleep(1300 * 1000);
	assert_false(dnsproxy_name_for_addr(F.d, CG_ENFORCE, &ip4, name, sizeof(name)));
	assert_false(dnsproxy_name_for_addr(F.d, CG_ENFORCE, &ip6, name, sizeof(name)));
}

static void test_audit_mode(void **state)
{
	struct dnsmsg_answer a;
	struct egr_addr ip;
	char name[256];
	json_t *o;

	/* "allowed.test" is not in the audit policy: forwarded anyway. */
	assert_int_equal(ask(CG_AUDIT, "allowed.test", DNSMSG_A, 0, &a), DNSMSG_NOERROR);
	assert_true(answer_has(&a, DNSMSG_A, "192.0.2.10"));
	o = audit_find("allowed.test", "udp");
	check_record(o, "udp", CG_AUDIT, "audit", "no_match");
	assert_string_equal(jstr(o, "policy"), "audit");
	json_decref(o);
	addr_parse("192.0.2.10", &ip);
	assert_true(dnsproxy_name_for_addr(F.d, CG_AUDIT, &ip, name, sizeof(name)));
	/* Rebinding in audit mode (rebind.test is allowed there): answered,
	 * logged as what enforce would do. */
	assert_int_equal(ask(CG_AUDIT, "rebind.test", DNSMSG_A, 0, &a), DNSMSG_NOERROR);
	assert_true(answer_has(&a, DNSMSG_A, "127.0.0.1"));
	o = audit_find("rebind.test", "udp");
	check_record(o, "udp", CG_AUDIT, "audit", "private_addr");
	json_decref(o);
}

/* A second DNS proxy of the fixture's kind with its own upstream, resolve
 * timeout and name memory size (0: the default), asked in F's place until
 * other_proxy_end(). */
struct other_proxy {
	struct config cfg;
	struct dnsproxy *d, *saved;
	uint16_t saved_port;
};

static void other_proxy_start(struct other_proxy *x, const char *upstream, unsigned timeout_ms,
			      size_t mem_max)
{
	struct dnsproxy_params params = { 0 };

	x->cfg = (struct config)CONFIG_DEFAULTS;
	x->cfg.resolve_timeout_ms = timeout_ms;
	fixture_params(&params, &x->cfg, upstream);
	params.mem_max = mem_max;
	assert_int_equal(dnsproxy_create(&x->d, &params), 0);
	assert_int_equal(dnsproxy_start(x->d), 0);
	x->saved = F.d;
	x->saved_port = F.port;
	F.d = x->d;
	F.port = dnsproxy_port(x->d);
}

static void other_proxy_end(struct other_proxy *x)
{
	F.d = x->saved;
	F.port = x->saved_port;
	dnsproxy_destroy(x->d);
}

/* How many of big.test's 40 addresses cg has in the memory. */
static int big_remembered(int cg)
{
	struct egr_addr big;
	char addr[32];
	int i, n = 0;

	for (i = 0; i < 40; i++) {
		snprintf(addr, sizeof(addr), "192.0.2.%d", 100 + i);
		assert_int_equal(addr_parse(addr, &big), 0);
		n += dnsproxy_name_for_addr(F.d, (uint64_t)cg, &big, NULL, 0);
	}
	return n;
}

/*
 * The memory is shared among tenants (the bound cgroup charged, else the
 * cgroup): one resolving a name of many addresses without end keeps its
 * share (16 / 2 tenants here) and pushes out its own oldest, not another
 * tenant's answers. Cgroups of one tenant share its share.
 */
static void test_name_memory_shared(void **state)
{
	struct other_proxy x;
	struct dnsmsg_answer a;
	struct egr_addr ip4;
	char upstream[32];

	snprintf(upstream, sizeof(upstream), "127.0.0.1:%u", F.upstream_port);
	assert_int_equal(addr_parse("192.0.2.10", &ip4), 0);
	other_proxy_start(&x, upstream, 3000, 16);
	assert_int_equal(ask(CG_CIDR, "allowed.test", DNSMSG_A, 0, &a), DNSMSG_NOERROR);
	assert_int_equal(ask(CG_ENFORCE, "big.test", DNSMSG_A, 4096, &a), DNSMSG_NOERROR);
	assert_int_equal(a.n_rr, 40);
	/* TTL 1 s (dnsmasq --local-ttl=1): asked at once */
	assert_true(dnsproxy_name_for_addr(F.d, CG_CIDR, &ip4, NULL, 0));
	assert_int_equal(big_remembered(CG_ENFORCE), 8);
	other_proxy_end(&x);

	/* both cgroups charged to one bound cgroup: one tenant, one share */
	other_proxy_start(&x, upstream, 3000, 16);
	__atomic_store_n(&g_charged, 77, __ATOMIC_SEQ_CST);
	assert_int_equal(ask(CG_CIDR, "allowed.test", DNSMSG_A, 0, &a), DNSMSG_NOERROR);
	assert_int_equal(ask(CG_ENFORCE, "big.test", DNSMSG_A, 4096, &a), DNSMSG_NOERROR);
	__atomic_store_n(&g_charged, 0, __ATOMIC_SEQ_CST);
	assert_false(dnsproxy_name_for_addr(F.d, CG_CIDR, &ip4, NULL, 0));
	assert_int_equal(big_remembered(CG_ENFORCE), 16);
	other_proxy_end(&x);

	/* a tenant that filled the memory alone: the next tenant's answers
	 * push out its entries, not the other way round, also when it
	 * resolves again and the newcomer's entries are the oldest */
	other_proxy_start(&x, upstream, 3000, 16);
	assert_int_equal(ask(CG_ENFORCE, "big.test", DNSMSG_A, 4096, &a), DNSMSG_NOERROR);
	assert_int_equal(ask(CG_CIDR, "allowed.test", DNSMSG_A, 0, &a), DNSMSG_NOERROR);
	assert_int_equal(ask(CG_ENFORCE, "big.test", DNSMSG_A, 4096, &a), DNSMSG_NOERROR);
	assert_int_equal(ask(CG_CIDR, "rebind.test", DNSMSG_A, 0, &a), DNSMSG_NOERROR);
	assert_true(dnsproxy_name_for_addr(F.d, CG_CIDR, &ip4, NULL, 0));
	assert_true(big_remembered(CG_ENFORCE) <= 15);
	other_proxy_end(&x);
}

static void test_upstream_failure(void **state)
{
	struct dnsproxy_params params = { 0 };
	struct config cfg = CONFIG_DEFAULTS;
	struct other_proxy x;
	struct dnsproxy *d;
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sin);
	struct dnsmsg_answer a;
	char upstream[32];
	int hole;
	json_t *o;

	/* An upstream port with nobody behind it: ICMP port unreachable. */
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	hole = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	assert_int_equal(bind(hole, (struct sockaddr *)&sin, sizeof(sin)), 0);
	assert_int_equal(getsockname(hole, (struct sockaddr *)&sin, &sl), 0);
	close(hole);
	snprintf(upstream, sizeof(upstream), "127.0.0.1:%u", ntohs(sin.sin_port));

	other_proxy_start(&x, upstream, 600, 0);
	assert_int_equal(ask(CG_ENFORCE, "www.allowed.test", DNSMSG_TXT, 0, &a), DNSMSG_SERVFAIL);
	other_proxy_end(&x);
	o = audit_find("www.allowed.test", "udp");
	check_record(o, "udp", CG_ENFORCE, "deny", "upstream");
	assert_non_null(strstr(jstr(o, "detail"), "TXT; upstream: "));
	json_decref(o);

	/* A bad upstream list is refused at create time. */
	params.cfg = &cfg;
	params.audit = F.audit;
	params.upstream = "not an address";
	assert_int_equal(dnsproxy_create(&d, &params), -EINVAL);
}

/* ---- a hand-made upstream ------------------------------------------------ */

/* Answers every query for "many.allowed.test" with 64 public A records and
 * 127.0.0.1 as the 65th (past the DNSMSG_MAX_ANSWERS the parser keeps),
 * and "manypub.allowed.test" with 70 public ones, over UDP and TCP (c-ares
 * asks again over TCP for a UDP answer over 512 bytes). Bounded: stops
 * when told or after 30 s. */
struct fake_up {
	int fd, lfd; /* UDP, TCP listener: the same port */
	uint16_t port;
	int stop;
	pthread_t th;
};

static size_t fake_answer(const uint8_t *q, size_t ql, uint8_t *out, size_t outlen)
{
	struct dnsmsg_query dq;
	unsigned int i, n;
	bool rebind;
	size_t off;

	if (dnsmsg_parse_query(q, ql, &dq))
		return 0;
	rebind = !strcmp(dq.qname, "many.allowed.test");
	n = rebind ? 65 : 70;
	off = 12 + dq.question_len;
	if (outlen < off + n * 16)
		return 0;
	memset(out, 0, 12);
	out[0] = q[0];
	out[1] = q[1];
	put16(out + 2, 0x8180);
	put16(out + 4, 1);
	put16(out + 6, (uint16_t)n);
	memcpy(out + 12, q + 12, dq.question_len);
	for (i = 0; i < n; i++) {
		uint8_t *r = out + off;

		put16(r, 0xc00c);
		put16(r + 2, DNSMSG_A);
		put16(r + 4, 1);
		memset(r + 6, 0, 4);
		r[9] = 60;
		put16(r + 10, 4);
		r[12] = 192;
		r[13] = 0;
		r[14] = 2;
		r[15] = (uint8_t)(i + 1);
		if (rebind && i == 64) {
			r[12] = 127;
			r[13] = 0;
			r[14] = 0;
			r[15] = 1;
		}
		off += 16;
	}
	return off;
}

/* One TCP client: answer its messages until it closes (or 20 quiet
 * polls of 100 ms). */
static void fake_up_tcp(int cfd)
{
	uint8_t q[1024], out[2 + 4096];
	int quiet = 0;

	while (quiet < 20) {
		struct pollfd p = { .fd = cfd, .events = POLLIN };
		ssize_t n;
		size_t ql, al;

		if (poll(&p, 1, 100) != 1) {
			quiet++;
			continue;
		}
		if (read_full(cfd, q, 2, 1000) != 2)
			break;
		ql = (size_t)q[0] << 8 | q[1];
		if (ql > sizeof(q))
			break;
		n = read_full(cfd, q, ql, 1000);
		if (n != (ssize_t)ql)
			break;
		al = fake_answer(q, ql, out + 2, sizeof(out) - 2);
		if (!al)
			break;
		put16(out, (uint16_t)al);
		if (send(cfd, out, 2 + al, MSG_NOSIGNAL) != (ssize_t)(2 + al))
			break;
	}
	close(cfd);
}

static void *fake_up_main(void *arg)
{
	struct fake_up *u = arg;
	int rounds;

	for (rounds = 0; rounds < 300 && !__atomic_load_n(&u->stop, __ATOMIC_SEQ_CST);
	     rounds++) {
		struct pollfd p[2] = { { .fd = u->fd, .events = POLLIN },
				       { .fd = u->lfd, .events = POLLIN } };
		struct sockaddr_storage peer;
		socklen_t pl = sizeof(peer);
		uint8_t q[1024], out[4096];
		ssize_t n;
		size_t al;
		int cfd;

		if (poll(p, 2, 100) < 1)
			continue;
		if (p[1].revents & POLLIN) {
			cfd = accept4(u->lfd, NULL, NULL, SOCK_CLOEXEC);
			if (cfd >= 0)
				fake_up_tcp(cfd);
		}
		if (!(p[0].revents & POLLIN))
			continue;
		n = recvfrom(u->fd, q, sizeof(q), 0, (struct sockaddr *)&peer, &pl);
		if (n <= 0)
			continue;
		al = fake_answer(q, (size_t)n, out, sizeof(out));
		if (al)
			sendto(u->fd, out, al, 0, (struct sockaddr *)&peer, pl);
	}
	return NULL;
}

static void fake_up_start(struct fake_up *u)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sin);

	int attempt;

	memset(u, 0, sizeof(*u));
	/* the UDP port the kernel picks may be taken for TCP (another
	 * test's connection on loopback): pick again */
	for (attempt = 0; attempt < 50; attempt++) {
		sin.sin_port = 0;
		sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		u->fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		assert_true(u->fd >= 0);
		assert_int_equal(bind(u->fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
		sl = sizeof(sin);
		assert_int_equal(getsockname(u->fd, (struct sockaddr *)&sin, &sl), 0);
		u->port = ntohs(sin.sin_port);
		u->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		assert_true(u->lfd >= 0);
		if (!bind(u->lfd, (struct sockaddr *)&sin, sizeof(sin)))
			break;
		assert_int_equal(errno, EADDRINUSE);
		close(u->lfd);
		close(u->fd);
	}
	assert_true(attempt < 50);
	assert_int_equal(listen(u->lfd, 8), 0);
	assert_int_equal(pthread_create(&u->th, NULL, fake_up_main, u), 0);
}

static void fake_up_stop(struct fake_up *u)
{
	__atomic_store_n(&u->stop, 1, __ATOMIC_SEQ_CST);
	pthread_join(u->th, NULL);
	close(u->fd);
	close(u->lfd);
}

/* DNS rebinding hidden past the records the parser keeps: an allowed
 * name's answer with 127.0.0.1 as its 65th address is refused like one
 * with it first (it used to be forwarded whole, 127.0.0.1 included); an
 * answer as long with only public addresses is forwarded; a policy that
 * names 127.0.0.1 gets it. */
static void test_rebinding_past_kept_records(void **state)
{
	struct other_proxy x;
	static struct dnsmsg_answer a;
	struct fake_up up;
	char upstream[32];
	int rc_rebind, rc_cidr, rc_pub;
	size_t n_pub;
	json_t *o;

	fake_up_start(&up);
	snprintf(upstream, sizeof(upstream), "127.0.0.1:%u", up.port);
	other_proxy_start(&x, upstream, 2000, 0);
	rc_rebind = ask(CG_ENFORCE, "many.allowed.test", DNSMSG_A, 4096, &a);
	o = audit_find("many.allowed.test", "udp");
	rc_cidr = ask(CG_CIDR, "many.allowed.test", DNSMSG_A, 4096, &a);
	rc_pub = ask(CG_ENFORCE, "manypub.allowed.test", DNSMSG_A, 4096, &a);
	n_pub = a.n_rr;
	other_proxy_end(&x);
	fake_up_stop(&up);

	check_record(o, "udp", CG_ENFORCE, "deny", "private_addr");
	assert_non_null(strstr(jstr(o, "detail"), "127.0.0.1 is loopback"));
	json_decref(o);
	assert_int_equal(rc_rebind, DNSMSG_REFUSED);
	assert_int_equal(rc_cidr, DNSMSG_NOERROR);
	assert_int_equal(rc_pub, DNSMSG_NOERROR);
	assert_int_equal(n_pub, DNSMSG_MAX_ANSWERS);
}

static size_t audit_lines(void)
{
	char *s = slurp(F.audit_path), *p;
	size_t n = 0;

	for (p = s; *p; p++)
		n += *p == '\n';
	free(s);
	return n;
}

static void test_one_record_per_query(void **state)
{
	uint8_t q[512], ans[512];
	struct dnsmsg_answer a;
	size_t before;

	/* past the fold's window: a kind asked in the last second by the
	 * tests before would be counted, its record written later */
	usleep((KFOLD_WINDOW_MS + 200) * 1000);
	before = audit_lines();

	ask(CG_ENFORCE, "allowed.test", DNSMSG_A, 0, &a);       /* forwarded */
	ask(CG_ENFORCE, "evil.test", DNSMSG_A, 0, &a);          /* denied */
	ask(CG_ENFORCE, "rebind.test", DNSMSG_A, 0, &a);        /* refused after upstream */
	ask(CG_NONE, "allowed.test", DNSMSG_A, 0, &a);          /* no origin */
	ask(CG_ENFORCE, "big.test", DNSMSG_A, 0, &a);           /* truncated */
	memset(q, 0, 12);                                       /* malformed */
	assert_int_equal(udp_ask(q, 12, ans, sizeof(ans)), 12);
	assert_int_equal(audit_lines(), before + 6);
}

/* A loop of one refused query: its first record at once, before the
 * answer; the rest in one record with their count when the second ends
 * (kfold.h), the bytes of all of them. */
static void test_repeats_folded(void **state)
{
	char name[64], needle[80];
	struct dnsmsg_answer a;
	unsigned i, lines = 0;
	char *s, *p;

	snprintf(name, sizeof(name), "loop%u.evil.test", (unsigned)getpid());
	snprintf(needle, sizeof(needle), "\"%s\"", name);
	for (i = 0; i < 300; i++) {
		assert_int_equal(ask(CG_ENFORCE, name, DNSMSG_A, 0, &a), DNSMSG_NXDOMAIN);
		if (i == 0)
			assert_int_equal(audit_count(needle), 1);
	}
	assert_int_equal(audit_count_wait(needle, 300, 3000), 300);
	s = slurp(F.audit_path);
	for (p = s; (p = strstr(p, needle)); p += strlen(needle))
		lines++;
	free(s);
	/* the first, then the repeats of each second (the loop may span two) */
	assert_true(lines >= 2 && lines <= 4);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_allowed_a_aaaa),
		cmocka_unit_test(test_ipv6_listener),
		cmocka_unit_test(test_cname_chain),
		cmocka_unit_test(test_denied_never_forwarded),
		cmocka_unit_test(test_rebinding),
		cmocka_unit_test(test_no_origin_no_policy),
		cmocka_unit_test(test_malformed),
		cmocka_unit_test(test_tcp_pipelined),
		cmocka_unit_test(test_tcp_client_gone),
		cmocka_unit_test(test_tcp_limits),
		cmocka_unit_test(test_truncation),
		cmocka_unit_test(test_name_memory),
		cmocka_unit_test(test_name_memory_shared),
		cmocka_unit_test(test_audit_mode),
		cmocka_unit_test(test_upstream_failure),
		cmocka_unit_test(test_rebinding_past_kept_records),
		cmocka_unit_test(test_one_record_per_query),
		cmocka_unit_test(test_repeats_folded),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests_name("dnsproxy", tests, setup, teardown);
}
