// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * Unit tests for user/intercept.c on real loopback sockets, bypassing the
 * proxy: the test plays the proxy (accepts the client, reads its
 * ClientHello, connects upstream itself) and hands both sockets to
 * intercept_take().
 *
 *   client (OpenSSL, trusts only the egressd test CA, verifies the name)
 *     -> engine (leaf minted by ca.h)
 *     -> upstream HTTPS echo server in a thread (leaf for allowed.test from
 *        a second test CA, given to the engine as upstream_ca_file), whose
 *        response body is the exact request bytes it received.
 *
 * Each case asserts what the client got, what the upstream saw (nothing,
 * for refusals) and the audit records (JSON), which must never hold the
 * credential value.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ftw.h>
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
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <http_parser.h>
#include <jansson.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "audit.h"
#include "ca.h"
#include "config.h"
#include "intercept.h"
#include "threads_named.h"
#include "proxy.h"
#include "log.h"
#include "reqrule.h"

#define HOST "allowed.test"
#define SECRET "Bearer s3cr3t-Value-0123456789"
#define MAX_SEEN 16

/* ---- fixture ---------------------------------------------------------- */

struct upstream {
	int lfd;
	uint16_t port;
	SSL_CTX *ctx;
	pthread_t th;
	atomic_bool stop;
	pthread_mutex_t lock;
	/* what it received, per request, and in total */
	char *seen[MAX_SEEN];
	size_t seen_len[MAX_SEEN];
	int n_seen;
	size_t bytes;
	size_t tunnel_bytes; /* raw bytes a "sink" tunnel took */
	int active;          /* connection being served */
	int resumed;         /* TLS sessions resumed by the engine */
	int served;          /* connections finished */
};

struct fixture {
	char dir[64];
	char upca[128];
	char auditlog[128];
	struct ca *ca;
	struct upstream up;
	struct config cfg;
	struct audit *audit;
	struct intercept *ic;
	struct reqrule_host rules;
	struct egr_origin origin;
	struct policy *pol_stub; /* only its name is read */
};

static struct fixture F;
static bool client_no_verify; /* the engine alone must refuse */
static bool client_stall;     /* stop after the ClientHello */

struct ext {
	int nid;
	const char *value;
};

static X509 *make_cert(const char *cn, X509 *issuer, EVP_PKEY *issuer_key, EVP_PKEY *pub,
		       const struct ext *exts)
{
	X509 *x = X509_new();
	X509V3_CTX v3;
	time_t now = time(NULL);

	assert_non_null(x);
	assert_int_equal(X509_set_version(x, X509_VERSION_3), 1);
	assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), (long)random() + 1), 1);
	assert_int_equal(X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN",
						    MBSTRING_ASC, (const unsigned char *)cn,
						    -1, -1, 0), 1);
	assert_int_equal(X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer)
							: X509_get_subject_name(x)), 1);
	assert_non_null(ASN1_TIME_set(X509_getm_notBefore(x), now - 3600));
	assert_non_null(ASN1_TIME_set(X509_getm_notAfter(x), now + 86400));
	assert_int_equal(X509_set_pubkey(x, pub), 1);
	X509V3_set_ctx(&v3, issuer ? issuer : x, x, NULL, NULL, 0);
	for (; exts && exts->nid; exts++) {
		X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, exts->nid, exts->value);

		assert_non_null(e);
		assert_int_equal(X509_add_ext(x, e, -1), 1);
		X509_EXTENSION_free(e);
	}
	assert_true(X509_sign(x, issuer_key, EVP_sha256()) > 0);
	return x;
}

static void set_timeouts(int fd, int sec)
{
	struct timeval tv = { .tv_sec = sec };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static int listen_loopback(uint16_t *port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t slen = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 16), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &slen), 0);
	*port = ntohs(sa.sin_port);
	return fd;
}

static int connect_loopback(uint16_t port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	return fd;
}

/* ---- upstream HTTPS echo server --------------------------------------- */

struct srv_parse {
	bool done;
	bool chunked_resp;   /* URL asks for a chunked response */
	bool head;           /* HEAD: no body in the response */
	bool expect;         /* Expect: 100-continue seen */
	bool ws;             /* Upgrade: websocket seen */
	bool stall;          /* URL "stall": stop reading for a while, once */
	bool sink;           /* URL "sink": a tunnel that reads slowly, counts */
	size_t bulk;         /* URL "bulk-N": N bytes of body instead of the echo */
	SSL *ssl;
};

static int srv_on_header_value(http_parser *p, const char *at, size_t len)
{
	struct srv_parse *sp = p->data;

	if (len == 12 && !strncasecmp(at, "100-continue", 12))
		sp->expect = true;
	if (len == 9 && !strncasecmp(at, "websocket", 9))
		sp->ws = true;
	return 0;
}

static int srv_on_headers_complete(http_parser *p)
{
	struct srv_parse *sp = p->data;

	if (sp->expect)
		SSL_write(sp->ssl, "HTTP/1.1 100 Continue\r\n\r\n", 25);
	return 0;
}

static int srv_on_url(http_parser *p, const char *at, size_t len)
{
	struct srv_parse *sp = p->data;

	const char *b = memmem(at, len, "bulk-", 5);

	if (memmem(at, len, "chunked-response", 16))
		sp->chunked_resp = true;
	if (memmem(at, len, "stall", 5))
		sp->stall = true;
	if (memmem(at, len, "sink", 4))
		sp->sink = true;
	if (b)
		sp->bulk = strtoul(b + 5, NULL, 10);
	return 0;
}

static int srv_on_complete(http_parser *p)
{
	struct srv_parse *sp = p->data;

	sp->done = true;
	sp->head = p->method == HTTP_HEAD;
	http_parser_pause(p, 1);
	return 0;
}

static const http_parser_settings srv_settings = {
	.on_url = srv_on_url,
	.on_header_value = srv_on_header_value,
	.on_headers_complete = srv_on_headers_complete,
	.on_message_complete = srv_on_complete,
};

static void srv_write_all(SSL *ssl, const char *p, size_t n)
{
	while (n) {
		int w = SSL_write(ssl, p, (int)n);

		if (w <= 0)
			return;
		p += w;
		n -= (size_t)w;
	}
}

/* The response body is the request exactly as received. */
static void srv_respond(SSL *ssl, const struct srv_parse *sp, const char *req, size_t len)
{
	char head[256];
	int n;

	if (sp->bulk) {
		static char block[65536];
		size_t left = sp->bulk;

		memset(block, 'b', sizeof(block));
		n = snprintf(head, sizeof(head),
			     "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", sp->bulk);
		srv_write_all(ssl, head, (size_t)n);
		while (left) {
			size_t k = left < sizeof(block) ? left : sizeof(block);

			srv_write_all(ssl, block, k);
			left -= k;
		}
		return;
	}
	if (sp->chunked_resp) {
		size_t half = len / 2;

		n = snprintf(head, sizeof(head),
			     "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
			     "Transfer-Encoding: chunked\r\n\r\n%zx\r\n", half);
		srv_write_all(ssl, head, (size_t)n);
		srv_write_all(ssl, req, half);
		n = snprintf(head, sizeof(head), "\r\n%zx\r\n", len - half);
		srv_write_all(ssl, head, (size_t)n);
		srv_write_all(ssl, req + half, len - half);
		srv_write_all(ssl, "\r\n0\r\n\r\n", 7);
		return;
	}
	n = snprintf(head, sizeof(head),
		     "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n\r\n",
		     len);
	srv_write_all(ssl, head, (size_t)n);
	if (!sp->head)
		srv_write_all(ssl, req, len);
}

static void srv_serve(struct upstream *u, int fd)
{
	char *raw = NULL;
	size_t raw_len = 0, raw_cap = 0, msg_start = 0, parsed = 0;
	struct srv_parse sp = { 0 };
	http_parser p;
	SSL *ssl = SSL_new(u->ctx);
	char buf[16384];

	set_timeouts(fd, 60); /* generous: valgrind runs are slow */
	SSL_set_fd(ssl, fd);
	if (SSL_accept(ssl) != 1)
		goto out;
	if (SSL_session_reused(ssl)) {
		pthread_mutex_lock(&u->lock);
		u->resumed++;
		pthread_mutex_unlock(&u->lock);
	}
	http_parser_init(&p, HTTP_REQUEST);
	sp.ssl = ssl;
	p.data = &sp;
	for (;;) {
		int n = SSL_read(ssl, buf, sizeof(buf));

		if (n <= 0)
			break;
		if (raw_len + (size_t)n > raw_cap) {
			/* doubling: growing by each read was quadratic, and under
			 * ASan (whose large reallocations copy and clear) the 8 MiB
			 * uploads took the fixture 10 s and more */
			size_t cap = raw_cap ? raw_cap : 65536;
			char *nr;

			while (cap < raw_len + (size_t)n)
				cap *= 2;
			nr = realloc(raw, cap);
			if (!nr)
				goto out;
			raw = nr;
			raw_cap = cap;
		}
		memcpy(raw + raw_len, buf, (size_t)n);
		raw_len += (size_t)n;
		pthread_mutex_lock(&u->lock);
		u->bytes += (size_t)n;
		pthread_mutex_unlock(&u->lock);
		while (parsed < raw_len) {
			size_t k = http_parser_execute(&p, &srv_settings, raw + parsed,
						       raw_len - parsed);

			parsed += k;
			if (HTTP_PARSER_ERRNO(&p) == HPE_PAUSED) {
				http_parser_pause(&p, 0);
				pthread_mutex_lock(&u->lock);
				if (u->n_seen < MAX_SEEN) {
					u->seen[u->n_seen] = strndup(raw + msg_start,
								     parsed - msg_start);
					u->seen_len[u->n_seen] = parsed - msg_start;
					u->n_seen++;
				}
				pthread_mutex_unlock(&u->lock);
				if (sp.ws && p.upgrade) {
					/* 101, then echo everything raw */
					static const char sw[] =
						"HTTP/1.1 101 Switching Protocols\r\n"
						"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\n";

					srv_write_all(ssl, sw, sizeof(sw) - 1);
					if (sp.stall)
						usleep(300000); /* the tunnel backs up */
					if (sp.sink) {
						size_t got = raw_len - parsed;

						/* slowly: the tunnel stays backed up */
						while ((n = SSL_read(ssl, buf, sizeof(buf))) > 0) {
							got += (size_t)n;
							usleep(1000);
						}
						pthread_mutex_lock(&u->lock);
						u->tunnel_bytes = got;
						pthread_mutex_unlock(&u->lock);
						goto out;
					}
					srv_write_all(ssl, raw + parsed, raw_len - parsed);
					while ((n = SSL_read(ssl, buf, sizeof(buf))) > 0)
						srv_write_all(ssl, buf, (size_t)n);
					goto out;
				}
				srv_respond(ssl, &sp, raw + msg_start, parsed - msg_start);
				msg_start = parsed;
				sp = (struct srv_parse){ .ssl = ssl };
				continue;
			}
			if (HTTP_PARSER_ERRNO(&p) != HPE_OK)
				goto out;
			break;
		}
		if (sp.stall) {
			/* the sender's socket and then the engine back up */
			sp.stall = false;
			usleep(300000);
		}
	}
out:
	SSL_shutdown(ssl);
	SSL_free(ssl);
	free(raw);
	ERR_clear_error();
}

struct srv_conn {
	struct upstream *u;
	int fd;
};

/* One thread per connection (detached; counted in active). */
static void *srv_conn_main(void *arg)
{
	struct srv_conn *sc = arg;
	struct upstream *u = sc->u;

	srv_serve(u, sc->fd);
	close(sc->fd);
	free(sc);
	OPENSSL_thread_stop();
	pthread_mutex_lock(&u->lock);
	u->active--;
	u->served++;
	pthread_mutex_unlock(&u->lock);
	return NULL;
}

static void *srv_main(void *arg)
{
	struct upstream *u = arg;
	pthread_attr_t attr;

	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	while (!atomic_load(&u->stop)) {
		struct pollfd pf = { .fd = u->lfd, .events = POLLIN };
		struct srv_conn *sc;
		pthread_t th;
		int fd;

		if (poll(&pf, 1, 50) != 1)
			continue;
		fd = accept(u->lfd, NULL, NULL);
		if (fd < 0)
			continue;
		sc = malloc(sizeof(*sc));
		if (!sc) {
			close(fd);
			continue;
		}
		sc->u = u;
		sc->fd = fd;
		pthread_mutex_lock(&u->lock);
		u->active++;
		pthread_mutex_unlock(&u->lock);
		if (pthread_create(&th, &attr, srv_conn_main, sc)) {
			close(fd);
			free(sc);
			pthread_mutex_lock(&u->lock);
			u->active--;
			pthread_mutex_unlock(&u->lock);
		}
	}
	pthread_attr_destroy(&attr);
	return NULL;
}

static void upstream_reset(struct upstream *u)
{
	pthread_mutex_lock(&u->lock);
	for (int i = 0; i < u->n_seen; i++)
		free(u->seen[i]);
	u->n_seen = 0;
	u->bytes = 0;
	u->tunnel_bytes = 0;
	u->resumed = 0;
	pthread_mutex_unlock(&u->lock);
}

/* Wait until the server finished every connection it accepted. */
static void upstream_wait_idle(struct upstream *u)
{
	for (int i = 0; i < 500; i++) {
		bool idle;

		pthread_mutex_lock(&u->lock);
		idle = !u->active;
		pthread_mutex_unlock(&u->lock);
		if (idle)
			return;
		usleep(10000);
	}
	fail_msg("upstream server still busy");
}

/* ---- setup ------------------------------------------------------------ */

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int group_setup(void **state)
{
	static const struct ext ca_exts[] = {
		{ NID_basic_constraints, "critical,CA:TRUE" },
		{ NID_key_usage, "critical,keyCertSign,cRLSign" },
		{ 0, NULL },
	};
	static const struct ext leaf_exts[] = {
		{ NID_basic_constraints, "critical,CA:FALSE" },
		{ NID_subject_alt_name, "DNS:" HOST },
		{ NID_ext_key_usage, "serverAuth" },
		{ 0, NULL },
	};
	char cadir[128], err[256];
	EVP_PKEY *cak, *leafk;
	X509 *cax, *leafx;
	FILE *f;
	struct reqrule r;

	if (!getenv("TEST_DEBUG"))
		log_set_level(EGR_LOG_WARN);
	snprintf(F.dir, sizeof(F.dir), "/tmp/test_intercept.XXXXXX");
	assert_non_null(mkdtemp(F.dir));
	snprintf(cadir, sizeof(cadir), "%s/ca", F.dir);
	assert_int_equal(ca_init(cadir, NULL, &F.ca, err, sizeof(err)), 0);

	/* the upstream's own CA and its leaf for allowed.test */
	cak = EVP_EC_gen("P-256");
	leafk = EVP_EC_gen("P-256");
	assert_non_null(cak);
	assert_non_null(leafk);
	cax = make_cert("upstream test CA", NULL, cak, cak, ca_exts);
	leafx = make_cert(HOST, cax, cak, leafk, leaf_exts);
	snprintf(F.upca, sizeof(F.upca), "%s/upstream-ca.pem", F.dir);
	f = fopen(F.upca, "w");
	assert_non_null(f);
	assert_int_equal(PEM_write_X509(f, cax), 1);
	fclose(f);

	pthread_mutex_init(&F.up.lock, NULL);
	F.up.ctx = SSL_CTX_new(TLS_server_method());
	assert_non_null(F.up.ctx);
	assert_int_equal(SSL_CTX_use_certificate(F.up.ctx, leafx), 1);
	assert_int_equal(SSL_CTX_use_PrivateKey(F.up.ctx, leafk), 1);
	X509_free(cax);
	X509_free(leafx);
	EVP_PKEY_free(cak);
	EVP_PKEY_free(leafk);
	F.up.lfd = listen_loopback(&F.up.port);
	assert_int_equal(pthread_create(&F.up.th, NULL, srv_main, &F.up), 0);

	/* request rules for allowed.test */
	assert_int_equal(reqrule_host_init(&F.rules, HOST), 0);
	assert_int_equal(reqrule_init(&r, "no-admin", "deny", "*", "/admin/**", NULL), 0);
	assert_int_equal(reqrule_host_add_rule(&F.rules, &r), 0);
	assert_int_equal(reqrule_init(&r, "read-acme", "allow", "GET,HEAD",
				      "/repos/acme/**", NULL), 0);
	assert_int_equal(reqrule_host_add_rule(&F.rules, &r), 0);
	assert_int_equal(reqrule_init(&r, "upload", "allow", "POST,PUT", "/upload/**",
				      "1M"), 0);
	assert_int_equal(reqrule_host_add_rule(&F.rules, &r), 0);
	assert_int_equal(reqrule_init(&r, "big-upload", "allow", "PUT", "/big/**", NULL), 0);
	assert_int_equal(reqrule_host_add_rule(&F.rules, &r), 0);
	assert_int_equal(reqrule_host_add_cred(&F.rules, "test-token", "Authorization", "/",
					       "env:TEST_TOKEN"), 0);
	setenv("TEST_TOKEN", SECRET, 1);

	F.origin.cgroup_id = 4242;
	F.origin.tgid = 1234;
	F.origin.uid = 1000;
	memcpy(F.origin.comm, "agent", 6);
	F.origin.dst_addr[10] = F.origin.dst_addr[11] = 0xff;
	F.origin.dst_addr[12] = 192;
	F.origin.dst_addr[15] = 10;
	F.origin.dst_addr[14] = 2;
	F.origin.dst_port = 443;
	F.pol_stub = calloc(1, sizeof(*F.pol_stub));
	assert_non_null(F.pol_stub);
	F.pol_stub->name = "test-policy";
	return 0;
}

static int group_teardown(void **state)
{
	atomic_store(&F.up.stop, true);
	pthread_join(F.up.th, NULL);
	upstream_wait_idle(&F.up);
	close(F.up.lfd);
	upstream_reset(&F.up);
	SSL_CTX_free(F.up.ctx);
	pthread_mutex_destroy(&F.up.lock);
	reqrule_host_free(&F.rules);
	free(F.pol_stub);
	ca_free(F.ca);
	nftw(F.dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	return 0;
}

static const char *cgroup_name(void *ctx, uint64_t id, char *buf, size_t len)
{
	(void)ctx;
	if (id != 4242)
		return NULL;
	snprintf(buf, len, "%s", "/sys/fs/cgroup/agents/test");
	return buf;
}

static unsigned peek_ms = 3000, idle_ms = 5000;
static bool engine_no_ca; /* gateways only: the engine has no CA */

static void engine_start(bool trust_upstream)
{
	struct audit_options ao = { .format = AUDIT_JSON };
	struct intercept_params ip = { 0 };
	static int n;

	F.cfg = (struct config)CONFIG_DEFAULTS;
	F.cfg.workers = 2;
	F.cfg.peek_timeout_ms = peek_ms;
	F.cfg.idle_timeout_ms = idle_ms;
	snprintf(F.auditlog, sizeof(F.auditlog), "%s/audit-%d.log", F.dir, n++);
	ao.path = F.auditlog;
	ao.denials_to_stderr = false;
	assert_int_equal(audit_open(&F.audit, &ao), 0);
	ip.cfg = &F.cfg;
	ip.audit = F.audit;
	ip.ca = engine_no_ca ? NULL : F.ca;
	ip.upstream_ca_file = trust_upstream ? F.upca : NULL;
	ip.cgroup_name = cgroup_name;
	assert_int_equal(intercept_create(&F.ic, &ip), 0);
	assert_int_equal(intercept_start(F.ic), 0);
	upstream_reset(&F.up);
}

static void engine_stop(void)
{
	if (!F.ic)
		return;
	intercept_destroy(F.ic);
	F.ic = NULL;
	audit_close(F.audit);
	F.audit = NULL;
	upstream_wait_idle(&F.up);
}

/* ---- client ----------------------------------------------------------- */

struct client {
	int fd;
	SSL_CTX *ctx;
	SSL *ssl;
	long verify;
	char alpn[16];
};

/* Read one whole TLS record (the ClientHello) as the proxy would. */
static size_t read_first_record(int fd, uint8_t *buf, size_t cap)
{
	size_t have = 0, want = 5;

	while (have < want) {
		struct pollfd pf = { .fd = fd, .events = POLLIN };
		ssize_t n;

		assert_int_equal(poll(&pf, 1, 3000), 1);
		n = recv(fd, buf + have, cap - have, 0);
		assert_true(n > 0);
		have += (size_t)n;
		if (have >= 5)
			want = 5 + ((size_t)buf[3] << 8 | buf[4]);
		assert_true(want <= cap);
	}
	return have;
}

/* Connect a client through the engine. sni: what the client sends;
 * host: what the "proxy" decided (info->host). Returns 0 if the client's
 * handshake (with name verification) succeeded. */
/* The proxy's release callback: connection counts given back. */
static int n_released;
static uint64_t released_cgroup;
/* client_open hands over with intercept_prepare/intercept_hand_send (what
 * a proxy worker with a descriptor table of its own does) instead of
 * intercept_take. */
static bool take_by_hand;

static void count_release(void *ctx, uint64_t cgroup_id)
{
	(void)ctx;
	n_released++;
	released_cgroup = cgroup_id;
}

static int client_open(struct client *cl, const char *sni, const char *host)
{
	struct intercept_conn_info info = { 0 };
	uint8_t hello[16384];
	uint16_t lport;
	int lfd, pfd, ufd, rc;
	size_t hl;

	memset(cl, 0, sizeof(*cl));
	lfd = listen_loopback(&lport);
	cl->fd = connect_loopback(lport);
	pfd = accept(lfd, NULL, NULL);
	assert_true(pfd >= 0);
	close(lfd);

	cl->ctx = SSL_CTX_new(TLS_client_method());
	assert_non_null(cl->ctx);
	assert_int_equal(X509_STORE_add_cert(SSL_CTX_get_cert_store(cl->ctx),
					     ca_cert(F.ca)), 1);
	SSL_CTX_set_verify(cl->ctx, client_no_verify ? SSL_VERIFY_NONE : SSL_VERIFY_PEER, NULL);
	cl->ssl = SSL_new(cl->ctx);
	assert_non_null(cl->ssl);
	assert_int_equal(SSL_set_tlsext_host_name(cl->ssl, sni), 1);
	assert_int_equal(SSL_set1_host(cl->ssl, sni), 1);
	assert_int_equal(SSL_set_alpn_protos(cl->ssl, (const unsigned char *)"\x02h2\x08http/1.1",
					     12), 0);
	SSL_set_fd(cl->ssl, cl->fd);

	/* First flight without blocking: the ClientHello goes out. */
	set_timeouts(cl->fd, 0);
	{
		struct timeval tv = { .tv_usec = 100000 };

		setsockopt(cl->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	}
	rc = SSL_connect(cl->ssl);
	assert_true(rc <= 0);
	ERR_clear_error();
	hl = read_first_record(pfd, hello, sizeof(hello));

	ufd = connect_loopback(F.up.port);
	info.origin = &F.origin;
	info.host = host;
	info.rules = &F.rules;
	info.policy = F.pol_stub;
	info.rule = HOST;
	info.upstream.b[10] = info.upstream.b[11] = 0xff;
	info.upstream.b[12] = 127;
	info.upstream.b[15] = 1;
	info.upstream_port = F.up.port;
	info.peeked = hello;
	info.peeked_len = hl;
	info.release = count_release;
	if (take_by_hand) {
		struct ic_conn *c;
		unsigned k;

		assert_int_equal(intercept_prepare(F.ic, &info, &c, &k), 0);
		assert_true(k < intercept_workers(F.ic));
		assert_int_equal(intercept_hand_send(c, intercept_hand_sock(F.ic, k), pfd, ufd), 0);
		close(pfd);
		close(ufd);
	} else {
		assert_int_equal(intercept_take(F.ic, pfd, ufd, &info), 0);
	}

	set_timeouts(cl->fd, 5);
	if (client_stall)
		return -1; /* never finish the handshake */
	rc = SSL_connect(cl->ssl);
	cl->verify = SSL_get_verify_result(cl->ssl);
	if (rc == 1) {
		const unsigned char *a;
		unsigned int al;

		SSL_get0_alpn_selected(cl->ssl, &a, &al);
		snprintf(cl->alpn, sizeof(cl->alpn), "%.*s", (int)al, a);
	}
	ERR_clear_error();
	return rc == 1 ? 0 : -1;
}

static void client_close(struct client *cl)
{
	if (cl->ssl) {
		SSL_shutdown(cl->ssl);
		SSL_free(cl->ssl);
	}
	SSL_CTX_free(cl->ctx);
	close(cl->fd);
	ERR_clear_error();
}

static void client_send(struct client *cl, const char *s, size_t n)
{
	if (!cl->ssl) { /* gateway: plain HTTP */
		assert_int_equal(send(cl->fd, s, n, MSG_NOSIGNAL), (ssize_t)n);
		return;
	}
	assert_int_equal(SSL_write(cl->ssl, s, (int)n), (int)n);
}

struct resp {
	int status;
	char body[16384];
	size_t body_len;
	bool complete;
};

struct resp_reader {
	struct resp *r;
	int n, max;
	bool head_req;
};

static int rr_on_body(http_parser *p, const char *at, size_t len)
{
	struct resp_reader *rr = p->data;
	struct resp *r = &rr->r[rr->n];

	assert_true(r->body_len + len <= sizeof(r->body));
	memcpy(r->body + r->body_len, at, len);
	r->body_len += len;
	return 0;
}

static int rr_on_complete(http_parser *p)
{
	struct resp_reader *rr = p->data;

	rr->r[rr->n].status = (int)p->status_code;
	rr->r[rr->n].complete = true;
	rr->n++;
	if (rr->n == rr->max)
		http_parser_pause(p, 1);
	return 0;
}

static int rr_on_headers_complete(http_parser *p)
{
	struct resp_reader *rr = p->data;

	return rr->head_req ? 1 : 0;
}

static const http_parser_settings rr_settings = {
	.on_headers_complete = rr_on_headers_complete,
	.on_body = rr_on_body,
	.on_message_complete = rr_on_complete,
};

/* Read until max responses are complete or the connection ends. Returns
 * the number of complete responses; *eof tells whether it ended. */
static int client_read_x(struct client *cl, struct resp *r, int max, bool *eof, bool head)
{
	struct resp_reader rr = { .r = r, .max = max, .head_req = head };
	http_parser p;
	char buf[16384];

	memset(r, 0, sizeof(*r) * (size_t)max);
	http_parser_init(&p, HTTP_RESPONSE);
	p.data = &rr;
	if (eof)
		*eof = false;
	while (rr.n < max) {
		int n = cl->ssl ? SSL_read(cl->ssl, buf, sizeof(buf))
				: (int)recv(cl->fd, buf, sizeof(buf), 0);

		if (n <= 0) {
			if (eof)
				*eof = true;
			http_parser_execute(&p, &rr_settings, NULL, 0);
			break;
		}
		http_parser_execute(&p, &rr_settings, buf, (size_t)n);
		if (HTTP_PARSER_ERRNO(&p) != HPE_OK && HTTP_PARSER_ERRNO(&p) != HPE_PAUSED)
			fail_msg("bad response: %s", http_errno_description(HTTP_PARSER_ERRNO(&p)));
	}
	ERR_clear_error();
	return rr.n;
}

static int client_read(struct client *cl, struct resp *r, int max, bool *eof)
{
	return client_read_x(cl, r, max, eof, false);
}

/* ---- audit ------------------------------------------------------------ */

struct records {
	json_t *rec[64];
	int n;
	char *raw;
};

static void records_load(struct records *rs)
{
	FILE *f = fopen(F.auditlog, "r");
	char line[8192];
	size_t cap = 0, len = 0;

	memset(rs, 0, sizeof(*rs));
	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		json_error_t je;
		size_t l = strlen(line);
		json_t *j = json_loads(line, 0, &je);

		assert_non_null(j);
		assert_true(rs->n < 64);
		rs->rec[rs->n++] = j;
		if (len + l + 1 > cap) {
			cap = (len + l + 1) * 2;
			rs->raw = realloc(rs->raw, cap);
			assert_non_null(rs->raw);
		}
		memcpy(rs->raw + len, line, l + 1);
		len += l;
	}
	fclose(f);
	if (!rs->raw)
		rs->raw = strdup("");
	/* The credential's value is nowhere in the audit log. */
	assert_null(strstr(rs->raw, "s3cr3t"));
}

static void records_free(struct records *rs)
{
	for (int i = 0; i < rs->n; i++)
		json_decref(rs->rec[i]);
	free(rs->raw);
}

static const char *jget(json_t *j, const char *k)
{
	json_t *v = json_object_get(j, k);

	return v && json_is_string(v) ? json_string_value(v) : NULL;
}

static long long jint(json_t *j, const char *k)
{
	json_t *v = json_object_get(j, k);

	return v && json_is_integer(v) ? json_integer_value(v) : -1;
}

/* "METHOD PATH status=N[ cred=a,b]" from the record's http part (the
 * expectations below are written that way). */
static const char *req_summary(json_t *j)
{
	static char buf[512];
	json_t *h = json_object_get(j, "http"), *cr;
	size_t i, n;

	assert_true(json_is_object(h));
	cr = json_object_get(h, "credentials");
	assert_true(json_is_array(cr));
	n = (size_t)snprintf(buf, sizeof(buf), "%s %s status=%lld", jget(h, "method"),
			     jget(h, "path") ? jget(h, "path") : "-", jint(h, "status") < 0 ?
			     0 : jint(h, "status"));
	for (i = 0; i < json_array_size(cr) && n < sizeof(buf); i++)
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%s", i ? "," : " cred=",
				      json_string_value(json_array_get(cr, i)));
	assert_true(jint(h, "req_body_bytes") >= 0);
	assert_true(jint(h, "resp_body_bytes") >= 0);
	return buf;
}

/* Common fields of every per-request record. */
static void check_record(json_t *j, const char *verdict, const char *reason,
			 const char *req)
{
	assert_string_equal(jget(j, "verdict"), verdict);
	assert_string_equal(jget(j, "reason"), reason);
	assert_string_equal(jget(j, "sni"), HOST);
	assert_string_equal(jget(j, "cgroup"), "/sys/fs/cgroup/agents/test");
	assert_int_equal(jint(j, "cgroup_id"), 4242);
	assert_int_equal(jint(j, "pid"), 1234);
	assert_int_equal(jint(j, "uid"), 1000);
	assert_string_equal(jget(j, "comm"), "agent");
	assert_string_equal(jget(j, "dst"), "192.0.2.10");
	assert_int_equal(jint(j, "dst_port"), 443);
	assert_string_equal(jget(j, "resolved"), "127.0.0.1");
	assert_string_equal(jget(j, "policy"), "test-policy");
	assert_true(jint(j, "duration_ms") >= 0);
	assert_string_equal(req_summary(j), req);
}

/* ---- cases ------------------------------------------------------------ */

#define GET_ACME                                                        \
	"GET /repos/acme/x?token=abc HTTP/1.1\r\nHost: " HOST "\r\n"    \
	"Authorization: Bearer agent-placeholder\r\nAccept: */*\r\n\r\n"

static void test_allowed_get_injects_credential(void **state)
{
	struct client cl;
	struct resp r[1];
	struct records rs;

	engine_start(true);
	n_released = 0;
	assert_int_equal(client_open(&cl, HOST, HOST), 0);
	assert_int_equal(cl.verify, X509_V_OK);
	assert_string_equal(cl.alpn, "http/1.1");
	client_send(&cl, GET_ACME, strlen(GET_ACME));
	assert_int_equal(n_released, 0); /* counted while it lives */
	assert_int_equal(client_read(&cl, r, 1, NULL), 1);
	assert_int_equal(r[0].status, 200);
	r[0].body[r[0].body_len] = '\0';
	/* the echo: the upstream got the real value, not the agent's */
	assert_non_null(strstr(r[0].body, "\r\nAuthorization: " SECRET "\r\n"));
	assert_null(strstr(r[0].body, "agent-placeholder"));
	assert_non_null(strstr(r[0].body, "GET /repos/acme/x?token=abc HTTP/1.1\r\n"));
	{
		/* listed while it lives (egressctl conns) */
		struct proxy_conn_info *v = NULL;
		size_t n = 0, cap = 0;

		assert_int_equal(intercept_snapshot(F.ic, &v, &n, &cap), 0);
		assert_int_equal(n, 1);
		assert_int_equal(v[0].pid, 1234);
		assert_int_equal(v[0].cgroup_id, 4242);
		assert_string_equal(v[0].comm, "agent");
		assert_string_equal(v[0].name, HOST);
		assert_string_equal(v[0].name_kind, "sni");
		assert_string_equal(v[0].state, "intercept");
		assert_true(v[0].bytes_up > strlen(GET_ACME));
		assert_true(v[0].bytes_down > r[0].body_len);
		free(v);
	}
	client_close(&cl);
	engine_stop();
	assert_int_equal(n_released, 1); /* once, when it really ended */
	assert_int_equal(released_cgroup, 4242);

	assert_int_equal(F.up.n_seen, 1);
	records_load(&rs);
	assert_int_equal(rs.n, 1);
	check_record(rs.rec[0], "allow", "rule_allow", "GET /repos/acme/x status=200 cred=test-token");
	assert_string_equal(jget(rs.rec[0], "rule"), "read-acme");
	assert_null(strstr(rs.raw, "token=abc")); /* query dropped */
	assert_null(json_object_get(rs.rec[0], "detail")); /* no error */
	assert_int_equal(jint(json_object_get(rs.rec[0], "http"), "req_body_bytes"), 0);
	assert_int_equal(jint(json_object_get(rs.rec[0], "http"), "resp_body_bytes"),
			 (long long)r[0].body_len);
	assert_int_equal(jint(rs.rec[0], "bytes_up"), (long long)F.up.seen_len[0]);
	assert_true(jint(rs.rec[0], "bytes_down") > (long long)F.up.seen_len[0]);
	records_free(&rs);
}

/* What the proxy tells the engine about a connection to HOST, no sockets
 * peeked or resolved. */
static void info_basic(struct intercept_conn_info *info)
{
	info->origin = &F.origin;
	info->host = HOST;
	info->rules = &F.rules;
	info->policy = F.pol_stub;
	info->release = count_release;
}

/* The same through the hand-over socket: credential injected, one record,
 * the counts released once when the connection ends. */
static void test_hand_over_socket(void **state)
{
	take_by_hand = true;
	test_allowed_get_injects_credential(state);
	take_by_hand = false;
}

/* A hand-over that fails releases the counts once, and leaves a record
 * when the engine had the connection: dropped before sending (released or
 * not, as asked; no record), a send that fails (the caller keeps the
 * connection), sockets the engine's table has no room for (refused,
 * audited). */
static void test_hand_over_failures(void **state)
{
	struct intercept_conn_info info = { 0 };
	struct records rs;
	struct rlimit rl, low;
	struct ic_conn *c;
	int sv[2], uv[2], probe, sent;
	unsigned k;

	engine_start(true);
	info_basic(&info);
	n_released = 0;
	assert_int_equal(intercept_prepare(F.ic, &info, &c, &k), 0);
	intercept_hand_drop(c, true);
	assert_int_equal(n_released, 1);

	/* a send that fails leaves the connection to the caller, who drops
	 * it without releasing when it hands the sockets over another way */
	assert_int_equal(intercept_prepare(F.ic, &info, &c, &k), 0);
	assert_int_equal(intercept_hand_send(c, -1, 0, 1), -EBADF);
	assert_int_equal(n_released, 1);
	intercept_hand_drop(c, false);
	assert_int_equal(n_released, 1);
	assert_int_equal(intercept_prepare(F.ic, &info, &c, &k), 0);
	intercept_hand_drop(c, true);
	assert_int_equal(n_released, 2);

	/* no descriptor free below the limit: the worker gets the message
	 * without its sockets (MSG_CTRUNC) */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, uv), 0);
	assert_int_equal(intercept_prepare(F.ic, &info, &c, &k), 0);
	assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
	probe = dup(0);
	assert_true(probe >= 0);
	close(probe);
	low = rl;
	low.rlim_cur = (rlim_t)probe;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	sent = intercept_hand_send(c, intercept_hand_sock(F.ic, k), sv[1], uv[1]);
	for (int t = 0; t < 200 && n_released < 3; t++)
		usleep(10000);
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &rl), 0);
	assert_int_equal(sent, 0);
	assert_int_equal(n_released, 3);
	/* the engine never had the sockets: ours still work */
	assert_int_equal(send(sv[0], "x", 1, MSG_NOSIGNAL), 1);
	close(sv[0]);
	close(sv[1]);
	close(uv[0]);
	close(uv[1]);
	engine_stop();
	assert_int_equal(n_released, 3);

	records_load(&rs);
	assert_int_equal(rs.n, 1);
	assert_string_equal(jget(rs.rec[0], "verdict"), "deny");
	assert_string_equal(jget(rs.rec[0], "reason"), "internal");
	assert_non_null(strstr(jget(rs.rec[0], "detail"), "did not reach the engine"));
	records_free(&rs);
}

static void test_denied_post_403_nothing_upstream(void **state)
{
	static const char req[] =
		"POST /admin/users HTTP/1.1\r\nHost: " HOST "\r\n"
		"Content-Length: 5\r\n\r\nhello";
	struct client cl;
	struct resp r[1];
	struct records rs;
	bool eof;

	engine_start(true);
	assert_int_equal(client_open(&cl, HOST, HOST), 0);
	client_send(&cl, req, sizeof(req) - 1);
	assert_int_equal(client_read(&cl, r, 1, &eof), 1);
	assert_int_equal(r[0].status, 403);
	r[0].body[r[0].body_len] = '\0';
	assert_non_null(strstr(r[0].body, "no-admin"));
	/* and the connection is closed after it */
	assert_int_equal(client_read(&cl, r, 1, &eof), 0);
	assert_true(eof);
	client_close(&cl);
	engine_stop();

	assert_int_equal(F.up.n_seen, 0);
	assert_int_equal(F.up.bytes, 0);
	records_load(&rs);
	assert_int_equal(rs.n, 1);
	check_record(rs.rec[0], "deny", "rule_deny", "POST /admin/users status=403");
	assert_string_equal(jget(rs.rec[0], "rule"), "no-admin");
	records_free(&rs);
}

static void test_host_mismatch_421(void **state)
{
	static const char req[] = "GET /repos/acme/x HTTP/1.1\r\nHost: evil.test\r\n\r\n";
	static const char abs_req[] =
		"GET https://evil.test/repos/acme/x HTTP/1.1\r\nHost: " HOST "\r\n\r\n";
	struct client cl;
	struct resp r[1];
	struct records rs;

	engine_start(true);
	assert_int_equal(client_open(&cl, HOST, HOST), 0);
	client_send(&cl, req, sizeof(req) - 1);
	assert_int_equal(client_read(&cl, r, 1, NULL), 1);
	assert_int_equal(r[0].status, 421);
	client_close(&cl);

	/* absolute-form naming another host: refused too */
	assert_int_equal(client_open(&cl, HOST, HOST), 0);
	client_send(&cl, abs_req, sizeof(abs_req) - 1);
	assert_int_equal(client_read(&cl, r, 1, NULL), 1);
	assert_true(r[0].status == 421 || r[0].status == 403);
	client_close(&cl);
	engine_stop();

	assert_int_equal(F.up.bytes, 0);
	records_load(&rs);
	assert_int_equal(rs.n, 2);
	check_record(rs.rec[0], "deny", "bad_name", "GET /repos/acme/x status=421");
	records_free(&rs);
}

static void test_sni_mismatch_refused(void **state)
{
	struct client cl;
	struct records rs;

	engine_start(true);
	/* the proxy decided on allowed.test, the client names another (and
	 * would accept any certificate) */
	client_no_verify = true;
	assert_int_equal(client_open(&cl, "other.test", HOST), -1);
	client_no_verify = false;
	client_close(&cl);
	engine_stop();
	records_load(&rs);
	assert_int_equal(rs.n, 1);
	assert_string_equal(jget(rs.rec[0], "verdict"), "deny");
	assert_string_equal(jget(rs.rec[0], "reason"), "bad_name");
	records_free(&rs);
}

static void test_pipelined_second_denied(void **state)
{
	static const char reqs[] =
		"GET /repos/acme/a HTTP/1.1\r\nHost: " HOST "\r\n\r\n"
		"DELETE /repos/acme/b HTTP/1.1\r\nHost: " HOST "\r\n\r\n"
		"GET /repos/acme/c HTTP/1.1\r\nHost: " HOST "\r\n\r\n";
	struct client cl;
	struct resp r[3];
	struct records rs;
	bool eof;

	engine_start(true);
	assert_int_equal(client_open(&cl, HOST, HOST), 0);
	client_send(&cl, reqs, sizeof(reqs) - 1);
	assert_int_equal(client_read(&cl, r, 3, &eof), 2);
	assert_true(eof);
	assert_int_equal(r[0].status, 200);
	r[0].body[r[0].body_len] = '\0';
	assert_non_null(strstr(r[0].body, "GET /repos/acme/a "));
	assert_int_equal(r[1].status, 403);
	client_close(&cl);
	engine_stop();

	assert_int_equal(F.up.n_seen, 1);
	assert_non_null(strstr(F.up.seen[0], "/repos/acme/a"));
	records_load(&rs);
	assert_int_equal(rs.n, 2);
	check_record(rs.rec[0], "allow", "rule_allow", "GET /repos/acme/a status=200 cred=test-token");
	check_record(rs.rec[1], "deny", "rule_deny", "DELETE /repos/acme/b status=403");
	assert_string_equal(jget(rs.rec[1], "rule"), "default");
	records_free(&rs);
}

static void test_chunked_request_byte_exact(void **state)
{
	static const char head[] =
		"POST /upload/blob HTTP/1.1\r\nHost: " HOST "\r\n"
		"Transfer-Encoding: chunked\r\nContent-Type: application/octet-stream\r\n\r\n";
	static const char body[] =
		"5\r\nhello\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n";
	struct client cl;
	struct resp r[1];
	char *at;

	engine_start(true);
	assert_int_equal(client_open(&cl, HOST, HOST), 0);
	client_send(&cl, head, sizeof(head) - 1);
	client_send(&cl, body, 10); /* split mid-chunk */
	client_send(&cl, body + 10, sizeof(body) - 1 - 10);
	assert_int_equal(client_read(&cl, r, 1, NULL), 1);
	assert_int_equal(r[0].status, 200);
	r[0].body[r[0].body_len] = '\0';
	at = strstr(r[0].body, "\r\n\r\n");
	assert_non_null(at);
	assert_string_equal(at + 4, body);
	assert_non_null(strstr(r[0].body, "Authorization: " SECRET "\r\n"));
	client_close(&cl);
	engine_stop();
	assert_int_equal(F.up.n_seen, 1);
}

static void test_smuggling_cl_te_400(void **state)
{
	static const char req[] =
		"POST /upload/x HTTP/1.1\r\nHost: " HOST "\r\n"
		"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
		"0\r\n\r\nGET /admin/secret HTTP/1.1\r\nHost: " HOST "\r\n\r\n";
	struct client cl;
	struct resp r[2];
	struct records rs;
	bool eof;

	engine_start(true);
	assert_int_equal(client_open(&cl, HOST, HOST), 0);
	client_send(&cl, req, sizeof(req) - 1);
	assert_int_equal(client_read(&cl, r, 2, &eof), 1);
	assert_true(eof);
	assert_int_equal(r[0].status, 400);
	client_close(&cl);
	engine_stop();

	assert_int_equal(F.up.bytes, 0);
	records_load(&rs);
	assert_int_equal(rs.n, 1);
	assert_string_equal(jget(rs.rec[0], "verdict"), "deny");
	assert_string_equal(jget(rs.rec[0], "reason"), "malformed");
	assert_int_equal(jint(json_object_get(rs.rec[0], "http"), "status"), 400);
	assert_non_null(jget(rs.rec[0], "detail")); /* why */
	records_free(&rs);
}

static void test_untrusted_upstream_502(void **state)
{
	struct client cl;
	struct resp r[1];
	struct records rs;

	engine_start(false); /* system store: the test upstream CA is unknown */
	assert_int_equal(client_open(&cl, HOST, HOST), 0);
	client_send(&cl, GET_ACME, strlen(GET_ACME));
	assert_int_equal(client_read(&cl, r, 1, NULL), 1);
	assert_int_equal(r[0].status, 502);
	r[0].body[r[0].body_len] = '\0';
	assert_string_equal(r[0].body, "egressd: upstream certificate for " HOST
			    " failed verification: unable to get local issuer certificate\n");
	client_close(&cl);
	engine_stop();

	assert_int_equal(F.up.bytes, 0);
	records_load(&rs);
	assert_int_equal(rs.n, 1);
	check_record(rs.rec[0], "deny", "upstream", "GET /repos/acme/x status=502");
	assert_non_null(strstr(jget(rs.rec[0], "detail"), "failed verification"));
	records_free(&rs);
}

static void test_chunked_response_keepalive(void **state)
{
	static const char req1[] =
		"GET /repos/acme/chunked-response HTTP/1.1\r\nHost: " HOST "\r\n\r\n";
	static const char req2[] =
		"HEAD /repos/acme/two HTTP/1.1\r\nHost: " HOST "\r\n\r\n";
	static const char req3[] =
		"GET /repos/acme/three HTTP/1.1\r\nHost: " HOST "\r\n\r\n";
	struct client cl;
	struct resp r[1];
	struct records rs;

	engine_start(true);
	assert_int_equal(client_open(&cl, HOST, HOST), 0);
	client_send(&cl, req1, sizeof(req1) - 1);
	assert_int_equal(client_read(&cl, r, 1, NULL), 1);
	assert_int_equal(r[0].status, 200);
	r[0].body[r[0].body_len] = '\0';
	assert_non_null(strstr(r[0].body, "GET /repos/acme/chunked-response HTTP/1.1\r\n"));

	client_send(&cl, req2, sizeof(req2) - 1);
	assert_int_equal(client_read_x(&cl, r, 1, NULL, true), 1);
	assert_int_equal(r[0].status, 200);
	assert_int_equal(r[0].body_len, 0);

	client_send(&cl, req3, sizeof(req3) - 1);
	assert_int_equal(client_read(&cl, r, 1, NULL), 1);
	assert_int_equal(r[0].status, 200);
	r[0].body[r[0].body_len] = '\0';
	assert_non_null(strstr(r[0].body, "GET /repos/acme/three HTTP/1.1\r\n"));
	client_close(&cl);

	/* a new connection resumes the upstream TLS session */
	assert_int_equal(client_open(&cl, HOST, HOST), 0);
	client_send(&cl, req3, sizeof(req3) - 1);
	assert_int_equal(client_read(&cl, r, 1, NULL), 1);
	assert_int_equal(r[0].status, 200);
	client_close(&cl);
	engine_stop();
	assert_int_equal(F.up.resumed, 1);

	assert_int_equal(F.up.n_seen, 4);
	records_load(&rs);
	assert_int_equal(rs.n, 4);
	check_record(rs.rec[0], "allow", "rule_allow",
		     "GET /repos/acme/chunked-response status=200 cred=test-token");
	check_record(rs.rec[1], "allow", "rule_allow",
		     "HEAD /repos/acme/two status=200 cred=test-token");
	check_record(rs.rec[2], "allow", "rule_allow",
		     "GET /repos/acme/three status=200 cred=test-token");
	records_free(&rs);
}

static void test_expect_continue(void **state)
{
	static const char head[] =
		"PUT /upload/big HTTP/1.1\r\nHost: " HOST "\r\n"
		"Content-Length: 11\r\nExpect: 100-continue\r\n\r\n";
	struct client cl;
	struct resp r[1];
	struct records rs;

	engine_start(true);
	assert_int_equal(client_open(&cl, HOST, HOST), 0);
	client_send(&cl, head, sizeof(head) - 1);
	/* the interim answer comes through before the body is sent */
	assert_int_equal(client_read(&cl, r, 1, NULL), 1);
	assert_int_equal(r[0].status, 100);
	client_send(&cl, "hello world", 11);
	assert_int_equal(client_read(&cl, r, 1, NULL), 1);
	assert_int_equal(r[0].status, 200);
	r[0].body[r[0].body_len] = '\0';
	assert_non_null(strstr(r[0].body, "\r\n\r\nhello world"));
	client_close(&cl);
	engine_stop();

	records_load(&rs);
	assert_int_equal(rs.n, 1);
	check_record(rs.rec[0], "allow", "rule_allow", "PUT /upload/big status=200 cred=test-token");
	assert_string_equal(jget(rs.rec[0], "rule"), "upload");
	records_free(&rs);
}

/* Read raw decrypted bytes until `want` appears. */
static void client_read_until(struct client *cl, char *buf, size_t cap, const char *want)
{
	size_t len = 0;

	buf[0] = '\0';
	while (!strstr(buf, want)) {
		int n;

		assert_true(len + 1 < cap);
		n = SSL_read(cl->ssl, buf + len, (int)(cap - 1 - len));
		if (n <= 0)
			fail_msg("connection ended before \"%s\" (got \"%s\")", want, buf);
		len += (size_t)n;
		buf[len] = '\0';
	}
}

static void test_websocket_upgrade_tunnel(void **state)
{
	static const char req[] =
		"GET /repos/acme/ws HTTP/1.1\r\nHost: " HOST "\r\n"
		"Upgrade: websocket\r\nConnection: Upgrade\r\n"
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
		"\r\nPING-1";
	static const char denied[] =
		"GET /admin/ws HTTP/1.1\r\nHost: " HOST "\r\n"
		"Upgrade: websocket\r\nConnection: Upgrade\r\n\r\nPING-X";
	struct client cl;
	struct resp r[1];
	struct records rs;
	char buf[4096];

	engine_start(true);
	assert_int_equal(client_open(&cl, HOST, HOST), 0);
	client_send(&cl, req, sizeof(req) - 1);
	/* bytes sent right after the head wait for the 101, then flow raw */
	client_read_until(&cl, buf, sizeof(buf), "\r\n\r\nPING-1");
	assert_true(!strncmp(buf, "HTTP/1.1 101 ", 13));
	{
		/* after the switch nothing is parsed as HTTP any more */
		static const char raw[] = "PING-2\r\n\r\nGET /admin/x HTTP/1.1\r\n\r\n";

		client_send(&cl, raw, sizeof(raw) - 1);
	}
	client_read_until(&cl, buf, sizeof(buf), "GET /admin/x");
	client_close(&cl);

	/* an upgrade the rules deny: 403, the tunnel bytes go nowhere */
	assert_int_equal(client_open(&cl, HOST, HOST), 0);
	client_send(&cl, denied, sizeof(denied) - 1);
	assert_int_equal(client_read(&cl, r, 1, NULL), 1);
	assert_int_equal(r[0].status, 403);
	client_close(&cl);
	engine_stop();

	assert_int_equal(F.up.n_seen, 1); /* the tunnel was not parsed as requests */
	assert_null(strstr(F.up.seen[0], "PING"));
	records_load(&rs);
	assert_int_equal(rs.n, 2);
	check_record(rs.rec[0], "allow", "rule_allow", "GET /repos/acme/ws status=101 cred=test-token");
	check_record(rs.rec[1], "deny", "rule_deny", "GET /admin/ws status=403");
	records_free(&rs);
}

/* Any upgrade but WebSocket would turn one checked request into a raw
 * tunnel carrying the credential (h2c: HTTP/2 streams for any path):
 * refused with 400 before anything goes upstream. */
static void test_upgrade_other_than_websocket_400(void **state)
{
	static const char h2c[] =
		"GET /repos/acme/x HTTP/1.1\r\nHost: " HOST "\r\n"
		"Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
		"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
	static const char tcp[] =
		"GET /repos/acme/x HTTP/1.1\r\nHost: " HOST "\r\n"
		"Upgrade: websocket, connect-tcp\r\nConnection: Upgrade\r\n\r\n";
	struct client cl;
	struct resp r[1];
	struct records rs;
	bool eof;

	engine_start(true);
	assert_int_equal(client_open(&cl, HOST, HOST), 0);
	client_send(&cl, h2c, sizeof(h2c) - 1);
	assert_int_equal(client_read(&cl, r, 1, &eof), 1);
	assert_int_equal(r[0].status, 400);
	assert_int_equal(client_read(&cl, r, 1, &eof), 0);
	assert_true(eof);
	client_close(&cl);
	assert_int_equal(client_open(&cl, HOST, HOST), 0);
	client_send(&cl, tcp, sizeof(tcp) - 1);
	assert_int_equal(client_read(&cl, r, 1, &eof), 1);
	assert_int_equal(r[0].status, 400);
	client_close(&cl);
	engine_stop();

	assert_int_equal(F.up.n_seen, 0);
	assert_int_equal(F.up.bytes, 0);
	records_load(&rs);
	assert_int_equal(rs.n, 2);
	for (int i = 0; i < rs.n; i++) {
		assert_string_equal(jget(rs.rec[i], "verdict"), "deny");
		assert_string_equal(jget(rs.rec[i], "reason"), "malformed");
		assert_non_null(strstr(jget(rs.rec[i], "detail"), "websocket"));
	}
	records_free(&rs);
}

/* A tunnel whose client sends a lot and then ends it (close_notify) while
 * the upstream reads slowly: the engine closes the tunnel only once every
 * byte went to the upstream socket, so the upstream gets them all. */
static void test_tunnel_end_while_upstream_backed_up(void **state)
{
	static const char req[] =
		"GET /repos/acme/ws-stall-sink HTTP/1.1\r\nHost: " HOST "\r\n"
		"Upgrade: websocket\r\nConnection: Upgrade\r\n"
		"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
	enum { N = 16 << 20 };
	static char body[65536];
	struct client cl;
	char buf[4096];
	size_t got;

	memset(body, 't', sizeof(body));
	engine_start(true);
	assert_int_equal(client_open(&cl, HOST, HOST), 0);
	client_send(&cl, req, sizeof(req) - 1);
	client_read_until(&cl, buf, sizeof(buf), "\r\n\r\n");
	assert_true(!strncmp(buf, "HTTP/1.1 101 ", 13));
	for (size_t off = 0; off < N; off += sizeof(body))
		client_send(&cl, body, sizeof(body));
	client_close(&cl); /* close_notify and FIN right behind the bytes */
	upstream_wait_idle(&F.up);
	pthread_mutex_lock(&F.up.lock);
	got = F.up.tunnel_bytes;
	pthread_mutex_unlock(&F.up.lock);
	engine_stop();
	if (got != N)
		fail_msg("the upstream got %zu of %d tunnel bytes", got, N);
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A body much larger than every buffer of the engine: it streams through
 * (the engine stops reading upstream while the client side is backed up)
 * and arrives complete; a request on the same connection follows. */
static void test_bulk_response_streams(void **state)
{
	static const char req[] =
		"GET /repos/acme/bulk-33554432 HTTP/1.1\r\nHost: " HOST "\r\n\r\n";
	static const char req2[] = "GET /repos/acme/after HTTP/1.1\r\nHost: " HOST "\r\n\r\n";
	struct client cl;
	struct resp r[1];
	struct records rs;
	char buf[16384];
	size_t got = 0, need;
	double t0;
	char *end;

	/* slow clients (valgrind) leave the engine idle while they read the
	 * megabytes the kernel buffers hold */
	idle_ms = 120000;
	engine_start(true);
	assert_int_equal(client_open(&cl, HOST, HOST), 0);
	client_send(&cl, req, sizeof(req) - 1);
	t0 = now_s();
	/* read the head, then count body bytes; pause once to back up */
	client_read_until(&cl, buf, sizeof(buf), "\r\n\r\n");
	end = strstr(buf, "\r\n\r\n") + 4;
	got = strlen(end);
	need = 33554432;
	usleep(200000);
	while (got < need) {
		int n = SSL_read(cl.ssl, buf, (int)(need - got < sizeof(buf) ? need - got
									  : sizeof(buf)));

		assert_true(n > 0);
		for (int i = 0; i < n; i++)
			if (buf[i] != 'b')
				fail_msg("corrupt body byte at %zu", got + (size_t)i);
		got += (size_t)n;
	}
	print_message("      32 MiB through the engine in %.2f s\n", now_s() - t0);
	client_send(&cl, req2, sizeof(req2) - 1);
	assert_int_equal(client_read(&cl, r, 1, NULL), 1);
	assert_int_equal(r[0].status, 200);
	client_close(&cl);
	engine_stop();

	records_load(&rs);
	assert_int_equal(rs.n, 2);
	check_record(rs.rec[0], "allow", "rule_allow", "GET /repos/acme/bulk-33554432 status=200 cred=test-token");
	assert_true(jint(rs.rec[0], "bytes_down") > 33554432);
	records_free(&rs);
}

/* A body of varied bytes up and back (the echo server answers with the
 * request as it arrived): the engine gathers full-size records before it
 * sends them, both ways, and a byte out of place breaks the check (or the
 * TLS record MAC on the way). */
static void upload_echo(const char *path, size_t body_len)
{
	char head[256], buf[16384], *body, *got, *hend = NULL;
	struct client cl;
	size_t len = 0, have, clen;
	int n;

	body = malloc(body_len);
	assert_non_null(body);
	for (size_t i = 0; i < body_len; i++)
		body[i] = (char)((i * 2654435761u) >> 24);
	n = snprintf(head, sizeof(head),
		     "PUT %s HTTP/1.1\r\nHost: " HOST "\r\nContent-Length: %zu\r\n\r\n",
		     path, body_len);
	engine_start(true);
	assert_int_equal(client_open(&cl, HOST, HOST), 0);
	client_send(&cl, head, (size_t)n);
	for (size_t off = 0; off < body_len; off += 65536)
		client_send(&cl, body + off, body_len - off < 65536 ? body_len - off : 65536);
	usleep(200000); /* let the answer back up in the engine */
	/* the head, then whatever of the body came with it (the body has
	 * zero bytes: lengths, not strings) */
	while (!hend) {
		assert_true(len < sizeof(buf) - 1);
		n = SSL_read(cl.ssl, buf + len, (int)(sizeof(buf) - 1 - len));
		assert_true(n > 0);
		len += (size_t)n;
		buf[len] = '\0';
		hend = memmem(buf, len, "\r\n\r\n", 4);
	}
	hend += 4;
	assert_true(strncmp(buf, "HTTP/1.1 200", 12) == 0);
	assert_non_null(strcasestr(buf, "Content-Length: "));
	clen = strtoul(strcasestr(buf, "Content-Length: ") + 16, NULL, 10);
	assert_true(clen > body_len);
	got = malloc(clen);
	assert_non_null(got);
	have = len - (size_t)(hend - buf);
	assert_true(have <= clen);
	memcpy(got, hend, have);
	while (have < clen) {
		n = SSL_read(cl.ssl, got + have, (int)(clen - have < 65536 ? clen - have : 65536));
		assert_true(n > 0);
		have += (size_t)n;
	}
	assert_int_equal(memcmp(got + clen - body_len, body, body_len), 0);
	assert_non_null(memmem(got, clen - body_len, "Authorization: " SECRET "\r\n",
			       strlen("Authorization: " SECRET "\r\n")));
	free(got);
	free(body);
	client_close(&cl);
	engine_stop();
}

static void test_bulk_upload_echo_byte_exact(void **state)
{
	upload_echo("/upload/big", 900000);
}

/* 8 MB up to an origin that stops reading for 300 ms after the head: the
 * engine's upstream socket fills and its gathered records wait for
 * EPOLLOUT (WANT_WRITE), then everything arrives in order. */
static void test_bulk_upload_stalled_origin(void **state)
{
	upload_echo("/big/stall", 8u << 20);
}

/* top -H, perf and /proc tell the engine's workers apart by name. */
static void test_threads_named(void **state)
{
	engine_start(true);
	assert_int_equal(threads_named("egressd-tls0"), 1);
	assert_int_equal(threads_named("egressd-tls1"), 1);
	engine_stop();
}

static void test_body_limits_413(void **state)
{
	static const char cl_req[] =
		"POST /upload/x HTTP/1.1\r\nHost: " HOST "\r\nContent-Length: 2000000\r\n\r\n";
	static const char ch_head[] =
		"POST /upload/y HTTP/1.1\r\nHost: " HOST "\r\nTransfer-Encoding: chunked\r\n\r\n";
	static char chunk[65536 + 16];
	struct client cl;
	struct resp r[1];
	struct records rs;
	int n;

	engine_start(true);
	/* declared too large: refused before anything goes upstream */
	assert_int_equal(client_open(&cl, HOST, HOST), 0);
	client_send(&cl, cl_req, sizeof(cl_req) - 1);
	assert_int_equal(client_read(&cl, r, 1, NULL), 1);
	assert_int_equal(r[0].status, 413);
	client_close(&cl);

	/* chunked past the rule's 1M: the request is cut off upstream (never
	 * completed there) and the client told 413 */
	assert_int_equal(client_open(&cl, HOST, HOST), 0);
	client_send(&cl, ch_head, sizeof(ch_head) - 1);
	n = snprintf(chunk, sizeof(chunk), "10000\r\n");
	memset(chunk + n, 'c', 65536);
	memcpy(chunk + n + 65536, "\r\n", 2);
	for (int i = 0; i < 20; i++) {
		if (SSL_write(cl.ssl, chunk, n + 65536 + 2) <= 0)
			break; /* the engine may have closed already */
	}
	assert_int_equal(client_read(&cl, r, 1, NULL), 1);
	assert_int_equal(r[0].status, 413);
	client_close(&cl);
	engine_stop();

	assert_int_equal(F.up.n_seen, 0); /* no complete request upstream */
	records_load(&rs);
	assert_int_equal(rs.n, 2);
	check_record(rs.rec[0], "deny", "too_large", "POST /upload/x status=413");
	check_record(rs.rec[1], "deny", "too_large", "POST /upload/y status=413 cred=test-token");
	records_free(&rs);
}

static void test_timeouts(void **state)
{
	struct client cl;
	struct records rs;
	char c;
	double t0;

	peek_ms = 300;
	idle_ms = 300;
	engine_start(true);
	/* the client never finishes its handshake */
	client_stall = true;
	client_open(&cl, HOST, HOST);
	client_stall = false;
	t0 = now_s();
	/* the engine gives up and closes: read sees the end */
	while (recv(cl.fd, &c, 1, 0) > 0)
		;
	assert_true(now_s() - t0 < 3);
	client_close(&cl);

	/* idle after the handshake: closed within 1x-2x the idle timeout */
	assert_int_equal(client_open(&cl, HOST, HOST), 0);
	t0 = now_s();
	assert_true(SSL_read(cl.ssl, &c, 1) <= 0);
	assert_true(now_s() - t0 >= 0.25 && now_s() - t0 < 3);
	client_close(&cl);
	engine_stop();

	records_load(&rs);
	assert_int_equal(rs.n, 2);
	assert_string_equal(jget(rs.rec[0], "reason"), "peek_timeout");
	assert_non_null(strstr(jget(rs.rec[1], "detail"), "idle"));
	records_free(&rs);
}

/* Policy in audit mode: a request the rules deny goes through, logged as
 * "audit", without the credential (that comes only with an allow). */
static void test_audit_mode(void **state)
{
	static const char req[] =
		"POST /admin/users HTTP/1.1\r\nHost: " HOST "\r\n"
		"Content-Length: 5\r\n\r\nhello";
	struct client cl;
	struct resp r[1];
	struct records rs;

	F.pol_stub->mode = POLICY_AUDIT;
	engine_start(true);
	assert_int_equal(client_open(&cl, HOST, HOST), 0);
	client_send(&cl, req, sizeof(req) - 1);
	assert_int_equal(client_read(&cl, r, 1, NULL), 1);
	F.pol_stub->mode = POLICY_ENFORCE;
	assert_int_equal(r[0].status, 200);
	r[0].body[r[0].body_len] = '\0';
	assert_null(strstr(r[0].body, "Authorization"));
	client_close(&cl);
	engine_stop();

	assert_int_equal(F.up.n_seen, 1);
	records_load(&rs);
	assert_int_equal(rs.n, 1);
	check_record(rs.rec[0], "audit", "rule_deny", "POST /admin/users status=200");
	assert_non_null(strstr(jget(rs.rec[0], "detail"), "would be 403"));
	records_free(&rs);
}

/* Audit mode: a POST body egressd cannot read for _method (br) is
 * forwarded, not refused (415), and the connection ends after its
 * answer: the pipelined GET after it is never sent, for a server that
 * read a HEAD in that body would desync the responses. */
static void test_audit_unread_body_closes(void **state)
{
	static const char req[] =
		"POST /admin/users HTTP/1.1\r\nHost: " HOST "\r\n"
		"Content-Type: application/json\r\nContent-Encoding: br\r\n"
		"Content-Length: 5\r\n\r\nhello"
		"GET /repos/acme/after HTTP/1.1\r\nHost: " HOST "\r\n\r\n";
	struct client cl;
	struct resp r[2];
	struct records rs;
	bool eof = false;

	(void)state;
	F.pol_stub->mode = POLICY_AUDIT;
	engine_start(true);
	assert_int_equal(client_open(&cl, HOST, HOST), 0);
	client_send(&cl, req, sizeof(req) - 1);
	assert_int_equal(client_read(&cl, r, 2, &eof), 1);
	F.pol_stub->mode = POLICY_ENFORCE;
	assert_true(eof);
	assert_int_equal(r[0].status, 200);
	client_close(&cl);
	engine_stop();

	assert_int_equal(F.up.n_seen, 1);
	assert_non_null(strstr(F.up.seen[0], "/admin/users"));
	records_load(&rs);
	assert_int_equal(rs.n, 1);
	check_record(rs.rec[0], "audit", "rule_deny", "POST /admin/users status=200");
	assert_non_null(strstr(jget(rs.rec[0], "detail"),
			       "connection closed after this response"));
	records_free(&rs);
}

/* The policy's upstream_ca is the trust store for its connections; a
 * file that cannot be loaded is a 502, never an unverified connection. */
static void test_policy_upstream_ca(void **state)
{
	struct client cl;
	struct resp r[1];
	char bad[160];

	engine_start(false); /* engine default: the system store */
	F.pol_stub->upstream_ca = F.upca;
	assert_int_equal(client_open(&cl, HOST, HOST), 0);
	client_send(&cl, GET_ACME, strlen(GET_ACME));
	assert_int_equal(client_read(&cl, r, 1, NULL), 1);
	assert_int_equal(r[0].status, 200);
	client_close(&cl);

	snprintf(bad, sizeof(bad), "%s/missing.pem", F.dir);
	F.pol_stub->upstream_ca = bad;
	assert_int_equal(client_open(&cl, HOST, HOST), 0);
	client_send(&cl, GET_ACME, strlen(GET_ACME));
	assert_int_equal(client_read(&cl, r, 1, NULL), 1);
	assert_int_equal(r[0].status, 502);
	r[0].body[r[0].body_len] = '\0';
	assert_non_null(strstr(r[0].body, "missing.pem"));
	client_close(&cl);
	F.pol_stub->upstream_ca = NULL;
	engine_stop();
	assert_int_equal(F.up.n_seen, 1);
}

/* Many connections at once, spread over the workers, each checked and
 * answered on its own. */
static void test_many_connections(void **state)
{
	enum { N = 40 };
	static struct client cl[N];
	struct resp r[1];
	struct records rs;
	char req[160];
	int ok = 0;

	idle_ms = 120000; /* 40 handshakes under valgrind take a while */
	engine_start(true);
	for (int i = 0; i < N; i++)
		assert_int_equal(client_open(&cl[i], HOST, HOST), 0);
	for (int i = 0; i < N; i++) {
		int n = snprintf(req, sizeof(req),
				 "GET /repos/%s/%d HTTP/1.1\r\nHost: " HOST "\r\n\r\n",
				 i % 4 == 3 ? "other" : "acme", i);

		client_send(&cl[i], req, (size_t)n);
	}
	for (int i = 0; i < N; i++) {
		char want[32];

		assert_int_equal(client_read(&cl[i], r, 1, NULL), 1);
		assert_int_equal(r[0].status, i % 4 == 3 ? 403 : 200);
		if (r[0].status == 200) {
			r[0].body[r[0].body_len] = '\0';
			snprintf(want, sizeof(want), "/repos/acme/%d ", i);
			assert_non_null(strstr(r[0].body, want));
			ok++;
		}
	}
	for (int i = 0; i < N; i++)
		client_close(&cl[i]);
	engine_stop();
	assert_int_equal(ok, N - N / 4);
	assert_int_equal(F.up.n_seen, MAX_SEEN); /* capped; all were served */
	records_load(&rs);
	assert_int_equal(rs.n, N);
	ok = 0;
	for (int i = 0; i < rs.n; i++)
		ok += !strcmp(jget(rs.rec[i], "verdict"), "deny");
	assert_int_equal(ok, N / 4);
	records_free(&rs);
}

/* The client sends its request and its close_notify at once: the answer
 * still comes, then the engine closes too. */
static void test_client_half_close(void **state)
{
	struct client cl;
	struct resp r[1];
	bool eof;

	engine_start(true);
	assert_int_equal(client_open(&cl, HOST, HOST), 0);
	client_send(&cl, GET_ACME, strlen(GET_ACME));
	assert_int_equal(SSL_shutdown(cl.ssl), 0); /* sent ours, theirs pending */
	assert_int_equal(client_read(&cl, r, 1, &eof), 1);
	assert_int_equal(r[0].status, 200);
	assert_int_equal(client_read(&cl, r, 1, &eof), 0);
	assert_true(eof);
	client_close(&cl);
	engine_stop();
	assert_int_equal(F.up.n_seen, 1);
}

static void test_stop_with_open_connection(void **state)
{
	struct client cl;
	struct records rs;

	/* A kept-alive connection left open: stop closes it and joins. */
	engine_start(true);
	assert_int_equal(client_open(&cl, HOST, HOST), 0);
	client_send(&cl, GET_ACME, strlen(GET_ACME));
	{
		struct resp r[1];

		assert_int_equal(client_read(&cl, r, 1, NULL), 1);
	}
	engine_stop();
	client_close(&cl);
	records_load(&rs);
	assert_int_equal(rs.n, 1);
	records_free(&rs);
}

/* After a failed assertion the engine is still up: stop it so that the
 * next case starts clean. */
/* ---- gateway mode ------------------------------------------------------ */

#define GW_PORT 8080

/* A plain-HTTP client of the gateway 127.0.0.1:8080, handed over as the
 * proxy does: origin = the gateway address, host = the upstream name. */
static void gw_open(struct client *cl)
{
	struct intercept_conn_info info = { 0 };
	static struct egr_origin o;
	uint16_t lport;
	int lfd, pfd, ufd;

	memset(cl, 0, sizeof(*cl));
	o = F.origin;
	memset(o.dst_addr, 0, sizeof(o.dst_addr));
	o.dst_addr[10] = o.dst_addr[11] = 0xff;
	o.dst_addr[12] = 127;
	o.dst_addr[15] = 1;
	o.dst_port = GW_PORT;
	lfd = listen_loopback(&lport);
	cl->fd = connect_loopback(lport);
	pfd = accept(lfd, NULL, NULL);
	assert_true(pfd >= 0);
	close(lfd);
	ufd = connect_loopback(F.up.port);
	info.origin = &o;
	info.host = HOST;
	info.rules = &F.rules;
	info.policy = F.pol_stub;
	info.rule = HOST;
	info.upstream.b[10] = info.upstream.b[11] = 0xff;
	info.upstream.b[12] = 127;
	info.upstream.b[15] = 1;
	info.upstream_port = F.up.port;
	info.gateway = true;
	assert_int_equal(intercept_take(F.ic, pfd, ufd, &info), 0);
	set_timeouts(cl->fd, 5);
}

static void check_gw_record(json_t *j, const char *verdict, const char *reason,
			    const char *req)
{
	assert_string_equal(jget(j, "verdict"), verdict);
	assert_string_equal(jget(j, "reason"), reason);
	assert_string_equal(jget(j, "origin"), "gateway");
	assert_null(jget(j, "sni")); /* the agent spoke plain HTTP */
	assert_string_equal(jget(j, "host"), HOST);
	assert_string_equal(jget(j, "dst"), "127.0.0.1");
	assert_int_equal(jint(j, "dst_port"), GW_PORT);
	assert_string_equal(jget(j, "resolved"), "127.0.0.1");
	assert_string_equal(jget(j, "cgroup"), "/sys/fs/cgroup/agents/test");
	assert_string_equal(jget(j, "policy"), "test-policy");
	assert_string_equal(req_summary(j), req);
}

/* Plain HTTP in, verified TLS out: the credential replaces the agent's,
 * Host becomes the upstream's, keep-alive works, and the engine needs no
 * CA for it. */
static void test_gateway_injects_and_rewrites_host(void **state)
{
	static const char req1[] =
		"GET /repos/acme/x?token=abc HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
		"Authorization: Bearer agent-placeholder\r\nAccept: */*\r\n\r\n";
	static const char req2[] =
		"HEAD /repos/acme/y HTTP/1.1\r\nhost: LOCALHOST:8080\r\n\r\n";
	char want_host[64];
	struct client cl;
	struct resp r[1];
	struct records rs;
	bool eof;

	engine_no_ca = true;
	engine_start(true);
	snprintf(want_host, sizeof(want_host), "\r\nHost: " HOST ":%u\r\n", F.up.port);
	gw_open(&cl);
	client_send(&cl, req1, sizeof(req1) - 1);
	assert_int_equal(client_read(&cl, r, 1, NULL), 1);
	assert_int_equal(r[0].status, 200);
	r[0].body[r[0].body_len] = '\0';
	assert_non_null(strstr(r[0].body, "GET /repos/acme/x?token=abc HTTP/1.1\r\n"));
	assert_non_null(strstr(r[0].body, "\r\nAuthorization: " SECRET "\r\n"));
	assert_non_null(strstr(r[0].body, want_host));
	assert_null(strstr(r[0].body, "agent-placeholder"));
	assert_null(strstr(r[0].body, "127.0.0.1:8080"));
	/* kept alive: a second request, Host "localhost:PORT" */
	client_send(&cl, req2, sizeof(req2) - 1);
	assert_int_equal(client_read_x(&cl, r, 1, &eof, true), 1);
	assert_int_equal(r[0].status, 200);
	client_close(&cl);
	engine_stop();

	assert_int_equal(F.up.n_seen, 2);
	assert_non_null(strstr(F.up.seen[1], want_host));
	assert_null(strstr(F.up.seen[1], "LOCALHOST"));
	records_load(&rs);
	assert_int_equal(rs.n, 2);
	check_gw_record(rs.rec[0], "allow", "rule_allow",
			"GET /repos/acme/x status=200 cred=test-token");
	assert_string_equal(jget(rs.rec[0], "rule"), "read-acme");
	check_gw_record(rs.rec[1], "allow", "rule_allow",
			"HEAD /repos/acme/y status=200 cred=test-token");
	records_free(&rs);
}

static void test_gateway_denied_path_403(void **state)
{
	static const char req[] =
		"POST /admin/users HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
		"Content-Length: 5\r\n\r\nhello";
	struct client cl;
	struct resp r[1];
	struct records rs;
	bool eof;

	engine_start(true);
	gw_open(&cl);
	client_send(&cl, req, sizeof(req) - 1);
	assert_int_equal(client_read(&cl, r, 1, &eof), 1);
	assert_int_equal(r[0].status, 403);
	r[0].body[r[0].body_len] = '\0';
	assert_non_null(strstr(r[0].body, "no-admin"));
	assert_int_equal(client_read(&cl, r, 1, &eof), 0);
	assert_true(eof);
	client_close(&cl);
	engine_stop();

	assert_int_equal(F.up.n_seen, 0);
	assert_int_equal(F.up.bytes, 0);
	records_load(&rs);
	assert_int_equal(rs.n, 1);
	check_gw_record(rs.rec[0], "deny", "rule_deny", "POST /admin/users status=403");
	records_free(&rs);
}

/* Method-override and URL-rewrite fields: a framework honouring them
 * would act on another method or path than the rules saw. The override
 * is checked as a second method (403 when the rules do not allow it);
 * rewrite fields are refused outright (400). Nothing goes upstream. */
static void test_method_override_and_rewrite_refused(void **state)
{
	static const char override[] =
		"GET /repos/acme/x HTTP/1.1\r\nHost: " HOST "\r\n"
		"X-HTTP-Method-Override: DELETE\r\n\r\n";
	static const char rewrite[] =
		"GET /repos/acme/x HTTP/1.1\r\nHost: " HOST "\r\n"
		"X-Original-URL: /admin/users\r\n\r\n";
	static const char gw_override[] =
		"GET /repos/acme/x HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
		"X-HTTP-Method: DELETE\r\n\r\n";
	struct client cl;
	struct resp r[1];
	struct records rs;
	bool eof;

	engine_start(true);
	assert_int_equal(client_open(&cl, HOST, HOST), 0);
	client_send(&cl, override, sizeof(override) - 1);
	assert_int_equal(client_read(&cl, r, 1, &eof), 1);
	assert_int_equal(r[0].status, 403);
	client_close(&cl);
	assert_int_equal(client_open(&cl, HOST, HOST), 0);
	client_send(&cl, rewrite, sizeof(rewrite) - 1);
	assert_int_equal(client_read(&cl, r, 1, &eof), 1);
	assert_int_equal(r[0].status, 400);
	client_close(&cl);
	gw_open(&cl);
	client_send(&cl, gw_override, sizeof(gw_override) - 1);
	assert_int_equal(client_read(&cl, r, 1, &eof), 1);
	assert_int_equal(r[0].status, 403);
	client_close(&cl);
	engine_stop();

	assert_int_equal(F.up.n_seen, 0);
	records_load(&rs);
	assert_int_equal(rs.n, 3);
	check_record(rs.rec[0], "deny", "rule_deny", "GET /repos/acme/x status=403");
	assert_string_equal(jget(rs.rec[0], "rule"), "default");
	assert_string_equal(jget(rs.rec[1], "verdict"), "deny");
	assert_string_equal(jget(rs.rec[1], "reason"), "malformed");
	assert_non_null(strstr(jget(rs.rec[1], "detail"), "X-Original-URL"));
	assert_string_equal(jget(rs.rec[2], "verdict"), "deny");
	assert_string_equal(jget(rs.rec[2], "origin"), "gateway");
	assert_int_equal(jint(json_object_get(rs.rec[2], "http"), "status"), 403);
	records_free(&rs);
}

/* The gateway's own checks: Host must name the gateway (address or
 * localhost, its port), targets must be origin-form. */
static void test_gateway_host_and_target(void **state)
{
	static const struct {
		const char *req;
		int status;
		const char *body;
	} cases[] = {
		{ "GET /repos/acme/x HTTP/1.1\r\nHost: evil.test:8080\r\n\r\n", 421,
		  "Host does not name the gateway (Host evil.test:8080, gateway 127.0.0.1:8080)" },
		{ "GET /repos/acme/x HTTP/1.1\r\nHost: 127.0.0.1:8081\r\n\r\n", 421,
		  "Host does not name the gateway" },
		{ "GET /repos/acme/x HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 421,
		  "Host does not name the gateway" },
		{ "GET /repos/acme/x HTTP/1.1\r\nHost: " HOST "\r\n\r\n", 421,
		  "Host does not name the gateway" },
		{ "GET /repos/acme/x HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n", 421,
		  "Host does not name the gateway" },
		{ "GET http://127.0.0.1:8080/repos/acme/x HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n",
		  400, "origin-form" },
		{ "CONNECT " HOST ":443 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n", 400,
		  "origin-form" },
		{ "GET /repos/acme/x HTTP/1.0\r\n\r\n", 400, "missing Host" },
	};
	struct records rs;

	engine_start(true);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct client cl;
		struct resp r[1];
		bool eof;

		gw_open(&cl);
		client_send(&cl, cases[i].req, strlen(cases[i].req));
		assert_int_equal(client_read(&cl, r, 1, &eof), 1);
		if (r[0].status != cases[i].status)
			fail_msg("case %zu: status %d, want %d", i, r[0].status, cases[i].status);
		r[0].body[r[0].body_len] = '\0';
		if (!strstr(r[0].body, cases[i].body))
			fail_msg("case %zu: body \"%s\" lacks \"%s\"", i, r[0].body,
				 cases[i].body);
		client_close(&cl);
	}
	engine_stop();
	assert_int_equal(F.up.n_seen, 0);
	assert_int_equal(F.up.bytes, 0);
	records_load(&rs);
	assert_int_equal(rs.n, (int)(sizeof(cases) / sizeof(cases[0])));
	check_gw_record(rs.rec[0], "deny", "bad_name", "GET /repos/acme/x status=421");
	records_free(&rs);
}

static void test_gateway_untrusted_upstream_502(void **state)
{
	static const char req[] = "GET /repos/acme/x HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";
	struct client cl;
	struct resp r[1];
	struct records rs;

	engine_no_ca = true;
	engine_start(false); /* system store: the test upstream CA is unknown */
	gw_open(&cl);
	client_send(&cl, req, sizeof(req) - 1);
	assert_int_equal(client_read(&cl, r, 1, NULL), 1);
	assert_int_equal(r[0].status, 502);
	r[0].body[r[0].body_len] = '\0';
	assert_string_equal(r[0].body, "egressd: upstream certificate for " HOST
			    " failed verification: unable to get local issuer certificate\n");
	client_close(&cl);
	engine_stop();

	assert_int_equal(F.up.bytes, 0);
	records_load(&rs);
	assert_int_equal(rs.n, 1);
	check_gw_record(rs.rec[0], "deny", "upstream", "GET /repos/acme/x status=502");
	records_free(&rs);
}

/* Without a CA the engine serves gateways only: a TLS take is refused
 * (and both sockets closed). */
static void test_gateway_only_engine_refuses_tls(void **state)
{
	struct intercept_conn_info info = { 0 };
	int sv[2], uv[2];
	char c;

	engine_no_ca = true;
	engine_start(true);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, uv), 0);
	info_basic(&info);
	n_released = 0;
	assert_int_equal(intercept_take(F.ic, sv[1], uv[1], &info), -EINVAL);
	assert_int_equal(n_released, 1); /* a refused take gives the counts back */
	assert_int_equal(read(sv[0], &c, 1), 0); /* closed */
	assert_int_equal(read(uv[0], &c, 1), 0);
	close(sv[0]);
	close(uv[0]);
	engine_stop();
}

static int teardown(void **state)
{
	client_no_verify = false;
	client_stall = false;
	take_by_hand = false;
	engine_no_ca = false;
	F.pol_stub->mode = POLICY_ENFORCE;
	F.pol_stub->upstream_ca = NULL;
	peek_ms = 3000;
	idle_ms = 5000;
	engine_stop();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_allowed_get_injects_credential, teardown),
		cmocka_unit_test_teardown(test_hand_over_socket, teardown),
		cmocka_unit_test_teardown(test_hand_over_failures, teardown),
		cmocka_unit_test_teardown(test_denied_post_403_nothing_upstream, teardown),
		cmocka_unit_test_teardown(test_host_mismatch_421, teardown),
		cmocka_unit_test_teardown(test_sni_mismatch_refused, teardown),
		cmocka_unit_test_teardown(test_pipelined_second_denied, teardown),
		cmocka_unit_test_teardown(test_chunked_request_byte_exact, teardown),
		cmocka_unit_test_teardown(test_smuggling_cl_te_400, teardown),
		cmocka_unit_test_teardown(test_untrusted_upstream_502, teardown),
		cmocka_unit_test_teardown(test_chunked_response_keepalive, teardown),
		cmocka_unit_test_teardown(test_expect_continue, teardown),
		cmocka_unit_test_teardown(test_websocket_upgrade_tunnel, teardown),
		cmocka_unit_test_teardown(test_upgrade_other_than_websocket_400, teardown),
		cmocka_unit_test_teardown(test_tunnel_end_while_upstream_backed_up, teardown),
		cmocka_unit_test_teardown(test_bulk_response_streams, teardown),
		cmocka_unit_test_teardown(test_bulk_upload_echo_byte_exact, teardown),
		cmocka_unit_test_teardown(test_bulk_upload_stalled_origin, teardown),
		cmocka_unit_test_teardown(test_threads_named, teardown),
		cmocka_unit_test_teardown(test_body_limits_413, teardown),
		cmocka_unit_test_teardown(test_timeouts, teardown),
		cmocka_unit_test_teardown(test_audit_mode, teardown),
		cmocka_unit_test_teardown(test_audit_unread_body_closes, teardown),
		cmocka_unit_test_teardown(test_policy_upstream_ca, teardown),
		cmocka_unit_test_teardown(test_many_connections, teardown),
		cmocka_unit_test_teardown(test_client_half_close, teardown),
		cmocka_unit_test_teardown(test_stop_with_open_connection, teardown),
		cmocka_unit_test_teardown(test_gateway_injects_and_rewrites_host, teardown),
		cmocka_unit_test_teardown(test_gateway_denied_path_403, teardown),
		cmocka_unit_test_teardown(test_gateway_host_and_target, teardown),
		cmocka_unit_test_teardown(test_method_override_and_rewrite_refused, teardown),
		cmocka_unit_test_teardown(test_gateway_untrusted_upstream_502, teardown),
		cmocka_unit_test_teardown(test_gateway_only_engine_refuses_tls, teardown),
	};

	/* The test's own client and server write to sockets the engine may
	 * have reset (the engine's workers block SIGPIPE themselves). */
	signal(SIGPIPE, SIG_IGN);
	if (getenv("TEST_FILTER"))
		cmocka_set_test_filter(getenv("TEST_FILTER"));
	if (getenv("TEST_DEBUG"))
		log_set_level(EGR_LOG_DEBUG);
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
