// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * Prometheus metrics (metrics.h). Counters are plain uint64_t updated with
 * relaxed atomic adds from whichever thread writes an audit record: a
 * decision is counted once, when its record is written, which is when the
 * connection closes for the proxy (bytes are known then).
 */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "log.h"
#include "bpfload.h"
#include "audit.h"
#include "metrics.h"
#include "proxy.h"

enum m_origin {
	M_PROXY = 0,
	M_KERNEL,
	M_INTERCEPT,
	M_GATEWAY,
	M_OTHER,
	M_ORIGINS,
};

static const char *const origin_names[M_ORIGINS] = {
	"proxy", "kernel", "intercept", "gateway", "other",
};

#define M_VERDICTS 4 /* enum egr_verdict */

struct m_client {
	int fd;
	uint64_t deadline_ms;
	char req[METRICS_REQ_MAX];
	size_t n_req;
	char *out;
	size_t n_out, off_out;
};

struct metrics {
	/* counters (any thread, relaxed atomics) */
	uint64_t conns[M_ORIGINS][M_VERDICTS][EGR_REASON_MAX];
	uint64_t bytes_up, bytes_down;

	/* main thread only */
	struct timespec started;     /* CLOCK_REALTIME */
	bool reload_ok;
	struct timespec reload_time;
	uint64_t reloads_ok, reloads_failed;
	struct proxy *proxy;
	struct dnsproxy *dns;
	struct audit *audit;
	char *stats_pin;

	int lfd, efd;
	char *unix_path;
	uint16_t port;
	struct m_client clients[METRICS_MAX_CLIENTS];
};

static uint64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int metrics_new(struct metrics **out)
{
	struct metrics *m = calloc(1, sizeof(*m));
	int i;

	*out = NULL;
	if (!m)
		return -ENOMEM;
	m->lfd = m->efd = -1;
	for (i = 0; i < METRICS_MAX_CLIENTS; i++)
		m->clients[i].fd = -1;
	clock_gettime(CLOCK_REALTIME, &m->started);
	/* The configuration the daemon started with was loaded. */
	m->reload_ok = true;
	m->reload_time = m->started;
	*out = m;
	return 0;
}

static void client_close(struct metrics *m, struct m_client *c)
{
	if (c->fd < 0)
		return;
	if (m->efd >= 0)
		epoll_ctl(m->efd, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->fd = -1;
	free(c->out);
	c->out = NULL;
	c->n_req = c->n_out = c->off_out = 0;
}

void metrics_free(struct metrics *m)
{
	int i;

	if (!m)
		return;
	for (i = 0; i < METRICS_MAX_CLIENTS; i++)
		client_close(m, &m->clients[i]);
	if (m->lfd >= 0) {
		close(m->lfd);
		if (m->unix_path)
			unlink(m->unix_path);
	}
	if (m->efd >= 0)
		close(m->efd);
	free(m->unix_path);
	free(m->stats_pin);
	free(m);
}

/* --- counting ----------------------------------------------------------- */

static enum m_origin origin_of(const char *o)
{
	if (!o || !strcmp(o, "proxy"))
		return M_PROXY;
	if (!strcmp(o, "kernel"))
		return M_KERNEL;
	if (!strcmp(o, "intercept"))
		return M_INTERCEPT;
	if (!strcmp(o, "gateway"))
		return M_GATEWAY;
	return M_OTHER;
}

static void add(uint64_t *v, uint64_t n)
{
	__atomic_fetch_add(v, n, __ATOMIC_RELAXED);
}

static uint64_t get(const uint64_t *v)
{
	return __atomic_load_n(v, __ATOMIC_RELAXED);
}

void metrics_count_record(struct metrics *m, const struct audit_record *r)
{
	enum m_origin o;

	if (!m || !r || (r->origin && !strcmp(r->origin, "dns")))
		return;
	o = origin_of(r->origin);
	if ((unsigned)r->verdict < M_VERDICTS && (unsigned)r->reason < EGR_REASON_MAX)
		add(&m->conns[o][r->verdict][r->reason], r->count > 1 ? r->count : 1);
	if (r->bytes_up)
		add(&m->bytes_up, r->bytes_up);
	if (r->bytes_down)
		add(&m->bytes_down, r->bytes_down);
}

void metrics_reload_result(struct metrics *m, bool ok)
{
	if (!m)
		return;
	m->reload_ok = ok;
	clock_gettime(CLOCK_REALTIME, &m->reload_time);
	if (ok)
		m->reloads_ok++;
	else
		m->reloads_failed++;
}

/* --- scrape-time values ------------------------------------------------- */

void metrics_set_sources(struct metrics *m, struct proxy *proxy, struct dnsproxy *dns,
			 const char *pin_dir)
{
	if (!m)
		return;
	m->proxy = proxy;
	m->dns = dns;
	free(m->stats_pin);
	m->stats_pin = NULL;
	if (pin_dir && asprintf(&m->stats_pin, "%s/egr_stats", pin_dir) < 0)
		m->stats_pin = NULL;
}

/* Per-CPU sums of the pinned egr_stats map. */
static int read_kstats(const char *pin, uint64_t out[EGR_STAT_MAX])
{
	int fd, err = 0;
	uint32_t k;

	if (!pin)
		return -ENOENT;
	fd = bpf_obj_get(pin);
	if (fd < 0)
		return -errno;
	for (k = 0; k < EGR_STAT_MAX && !err; k++) {
		out[k] = 0;
		err = egr_bpf_percpu_sum(fd, k, &out[k]);
	}
	close(fd);
	return err;
}

void metrics_set_audit(struct metrics *m, struct audit *a)
{
	if (m)
		m->audit = a;
}

void metrics_collect(struct metrics *m, struct metrics_snapshot *s)
{
	memset(s, 0, sizeof(*s));
	if (!m)
		return;
	if (m->proxy) {
		s->has_proxy = true;
		s->active_conns = proxy_active_conns(m->proxy);
	}
	if (m->dns) {
		s->has_dns = true;
		dnsproxy_stats(m->dns, &s->dns);
	}
	s->has_kernel = m->stats_pin && read_kstats(m->stats_pin, s->kernel) == 0;
	if (m->audit) {
		s->has_audit = true;
		s->audit_write_errors = audit_write_errors(m->audit);
	}
}

/* --- exposition --------------------------------------------------------- */

static void head(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static double ts_seconds(const struct timespec *t)
{
	return (double)t->tv_sec + (double)t->tv_nsec / 1e9;
}

char *metrics_render(const struct metrics *m, const struct metrics_snapshot *s, size_t *len)
{
	static const enum egr_verdict verdicts[] = {
		EGR_VERDICT_ALLOW, EGR_VERDICT_DENY, EGR_VERDICT_AUDIT,
	};
	uint64_t by_verdict[M_VERDICTS] = { 0 };
	uint64_t failures[M_ORIGINS][3] = { { 0 } };
	char *buf = NULL;
	size_t n = 0;
	unsigned o, v, r;
	FILE *f;

	*len = 0;
	f = open_memstream(&buf, &n);
	if (!f)
		return NULL;

	head(f, "egressd_build_info", "gauge", "Version of the running egressd.");
	fprintf(f, "egressd_build_info{version=\"%s\"} 1\n", EGRESSD_VERSION);
	head(f, "egressd_start_time_seconds", "gauge", "When the daemon started (Unix time).");
	fprintf(f, "egressd_start_time_seconds %.3f\n", ts_seconds(&m->started));

	/* Series that have been seen only: origin x verdict x reason would be
	 * hundreds of zeros. egressd_decisions_total has every verdict. */
	head(f, "egressd_connections_total", "counter",
	     "Connection decisions by who decided (proxy, kernel, intercept, gateway), "
	     "verdict and reason; counted when the audit record is written.");
	for (o = 0; o < M_ORIGINS; o++)
		for (v = 0; v < M_VERDICTS; v++)
			for (r = 0; r < EGR_REASON_MAX; r++) {
				uint64_t c = get(&m->conns[o][v][r]);

				if (!c)
					continue;
				by_verdict[v] += c;
				if (r == EGR_REASON_UPSTREAM)
					failures[o][0] += c;
				else if (r == EGR_REASON_RESOLVE)
					failures[o][1] += c;
				else if (r == EGR_REASON_INTERNAL)
					failures[o][2] += c;
				fprintf(f, "egressd_connections_total{origin=\"%s\",verdict=\"%s\","
					"reason=\"%s\"} %llu\n", origin_names[o],
					egr_verdict_name((enum egr_verdict)v),
					egr_reason_name((enum egr_reason)r), (unsigned long long)c);
			}
	head(f, "egressd_decisions_total", "counter",
	     "Connection decisions by verdict (the sum of egressd_connections_total).");
	for (v = 0; v < sizeof(verdicts) / sizeof(verdicts[0]); v++)
		fprintf(f, "egressd_decisions_total{verdict=\"%s\"} %llu\n",
			egr_verdict_name(verdicts[v]), (unsigned long long)by_verdict[verdicts[v]]);

	head(f, "egressd_bytes_total", "counter",
	     "Bytes relayed, agent to upstream (up) and back (down), counted when a "
	     "connection closes.");
	fprintf(f, "egressd_bytes_total{direction=\"up\"} %llu\n",
		(unsigned long long)get(&m->bytes_up));
	fprintf(f, "egressd_bytes_total{direction=\"down\"} %llu\n",
		(unsigned long long)get(&m->bytes_down));

	if (s && s->has_proxy) {
		head(f, "egressd_active_connections", "gauge",
		     "Connections the proxy has accepted and not yet closed.");
		fprintf(f, "egressd_active_connections %llu\n",
			(unsigned long long)s->active_conns);
	}
	if (s && s->has_dns) {
		head(f, "egressd_dns_queries_total", "counter",
		     "DNS queries answered by the DNS proxy, by verdict.");
		for (v = 0; v < sizeof(verdicts) / sizeof(verdicts[0]); v++)
			fprintf(f, "egressd_dns_queries_total{verdict=\"%s\"} %llu\n",
				egr_verdict_name(verdicts[v]),
				(unsigned long long)s->dns.queries[verdicts[v]]);
		head(f, "egressd_dns_queries_by_transport_total", "counter",
		     "DNS queries answered by the DNS proxy, by transport.");
		fprintf(f, "egressd_dns_queries_by_transport_total{transport=\"udp\"} %llu\n",
			(unsigned long long)s->dns.udp);
		fprintf(f, "egressd_dns_queries_by_transport_total{transport=\"tcp\"} %llu\n",
			(unsigned long long)s->dns.tcp);
	}
	if (s && s->has_kernel) {
		head(f, "egressd_kernel_redirected_total", "counter",
		     "Connections the cgroup programs redirected to the proxy (pinned "
		     "egr_stats map: since the pins were created).");
		fprintf(f, "egressd_kernel_redirected_total %llu\n",
			(unsigned long long)s->kernel[EGR_STAT_REDIRECTED]);
		head(f, "egressd_kernel_denied_total", "counter",
		     "Connections and datagrams the cgroup programs refused themselves "
		     "(port, CIDR, UDP, socket type, no policy), from the pinned egr_stats "
		     "map; unlike origin=\"kernel\" records, counted even when events are lost.");
		fprintf(f, "egressd_kernel_denied_total %llu\n",
			(unsigned long long)s->kernel[EGR_STAT_DENIED]);
	}

	head(f, "egressd_errors_total", "counter",
	     "Failures that are not policy decisions, by kind.");
	for (o = 0; o < M_ORIGINS; o++) {
		static const char *const kinds[3] = { "upstream", "resolve", "internal" };

		if (o == M_KERNEL)
			continue;
		for (r = 0; r < 3; r++)
			if (o == M_PROXY || failures[o][r])
				fprintf(f, "egressd_errors_total{kind=\"%s_%s\"} %llu\n",
					origin_names[o], kinds[r],
					(unsigned long long)failures[o][r]);
	}
	if (s && s->has_dns)
		fprintf(f, "egressd_errors_total{kind=\"dns_upstream\"} %llu\n",
			(unsigned long long)s->dns.upstream_failures);
	if (s && s->has_kernel) {
		fprintf(f, "egressd_errors_total{kind=\"kernel_events_lost\"} %llu\n",
			(unsigned long long)s->kernel[EGR_STAT_EVENTS_LOST]);
		fprintf(f, "egressd_errors_total{kind=\"kernel_conns_full\"} %llu\n",
			(unsigned long long)s->kernel[EGR_STAT_CONNS_FULL]);
	}

	if (s && s->has_audit)
		fprintf(f, "egressd_errors_total{kind=\"audit_write\"} %llu\n",
			(unsigned long long)s->audit_write_errors);

	head(f, "egressd_config_last_reload_successful", "gauge",
	     "1 if the last configuration reload (SIGHUP, egressctl reload) was applied, "
	     "0 if it was refused (the previous configuration is running).");
	fprintf(f, "egressd_config_last_reload_successful %d\n", m->reload_ok ? 1 : 0);
	head(f, "egressd_config_last_reload_timestamp_seconds", "gauge",
	     "When the configuration was last loaded or a reload attempted (Unix time).");
	fprintf(f, "egressd_config_last_reload_timestamp_seconds %.3f\n",
		ts_seconds(&m->reload_time));
	head(f, "egressd_config_reloads_total", "counter",
	     "Configuration reload attempts since start, by result.");
	fprintf(f, "egressd_config_reloads_total{result=\"success\"} %llu\n",
		(unsigned long long)m->reloads_ok);
	fprintf(f, "egressd_config_reloads_total{result=\"failure\"} %llu\n",
		(unsigned long long)m->reloads_failed);

	if (fclose(f)) {
		free(buf);
		return NULL;
	}
	*len = n;
	return buf;
}

/* --- HTTP ----------------------------------------------------------------- */

int metrics_http_status(const char *buf, size_t len, bool *is_head)
{
	const char *sp, *sp2, *end = buf + len, *eol;
	size_t mlen, plen;

	*is_head = false;
	eol = memchr(buf, '\n', len);
	if (!eol)
		return 400;
	end = eol;
	if (end > buf && end[-1] == '\r')
		end--;
	sp = memchr(buf, ' ', (size_t)(end - buf));
	if (!sp || sp == buf)
		return 400;
	sp2 = memchr(sp + 1, ' ', (size_t)(end - sp - 1));
	if (!sp2 || sp2 == sp + 1 || (size_t)(end - sp2 - 1) < 8 ||
	    strncmp(sp2 + 1, "HTTP/1.", 7))
		return 400;
	mlen = (size_t)(sp - buf);
	plen = (size_t)(sp2 - sp - 1);
	if (!(mlen == 3 && !memcmp(buf, "GET", 3)) && !(mlen == 4 && !memcmp(buf, "HEAD", 4)))
		return 405;
	*is_head = mlen == 4;
	if (memchr(sp + 1, '?', plen))
		plen = (size_t)((const char *)memchr(sp + 1, '?', plen) - (sp + 1));
	if (plen != 8 || memcmp(sp + 1, "/metrics", 8))
		return 404;
	return 200;
}

static int set_out(struct m_client *c, int status, bool is_head, const char *body, size_t blen)
{
	const char *reason = status == 200 ? "OK" : status == 404 ? "Not Found" :
			     status == 405 ? "Method Not Allowed" :
			     status == 431 ? "Request Header Fields Too Large" :
			     status == 500 ? "Internal Server Error" : "Bad Request";
	const char *ctype = status == 200 ? "text/plain; version=0.0.4; charset=utf-8" :
			    "text/plain; charset=utf-8";
	char hdr[512];
	int h;

	h = snprintf(hdr, sizeof(hdr), "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n"
		     "Content-Length: %zu\r\n%sConnection: close\r\n\r\n", status, reason,
		     ctype, blen, status == 405 ? "Allow: GET, HEAD\r\n" : "");
	if (h < 0 || (size_t)h >= sizeof(hdr))
		return -EINVAL;
	if (is_head)
		blen = 0;
	c->out = malloc((size_t)h + blen);
	if (!c->out)
		return -ENOMEM;
	memcpy(c->out, hdr, (size_t)h);
	if (blen)
		memcpy(c->out + h, body, blen);
	c->n_out = (size_t)h + blen;
	c->off_out = 0;
	return 0;
}

static void client_answer(struct metrics *m, struct m_client *c, int status, bool is_head)
{
	struct metrics_snapshot s;
	char msg[64];
	char *body = NULL;
	size_t blen = 0;
	int err;

	if (status == 200) {
		metrics_collect(m, &s);
		body = metrics_render(m, &s, &blen);
		if (!body)
			status = 500;
	}
	if (status != 200) {
		blen = (size_t)snprintf(msg, sizeof(msg), "%s\n",
					status == 404 ? "not found: try /metrics" :
					status == 405 ? "method not allowed" :
					status == 431 ? "request too large" :
					status == 500 ? "out of memory" : "bad request");
		err = set_out(c, status, is_head, msg, blen);
	} else {
		err = set_out(c, status, is_head, body, blen);
	}
	free(body);
	if (err) {
		client_close(m, c);
		return;
	}
	/* Nothing more is read; wait for room to write. */
	shutdown(c->fd, SHUT_RD);
	epoll_ctl(m->efd, EPOLL_CTL_MOD, c->fd,
		  &(struct epoll_event){ .events = EPOLLOUT, .data.ptr = c });
}

static void client_write(struct metrics *m, struct m_client *c)
{
	while (c->off_out < c->n_out) {
		ssize_t n = send(c->fd, c->out + c->off_out, c->n_out - c->off_out,
				 MSG_DONTWAIT | MSG_NOSIGNAL);

		if (n > 0) {
			c->off_out += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		break;
	}
	client_close(m, c);
}

static void client_read(struct metrics *m, struct m_client *c)
{
	bool is_head;

	for (;;) {
		ssize_t n;

		if (c->n_req == sizeof(c->req) - 1) {
			client_answer(m, c, 431, false);
			return;
		}
		n = recv(c->fd, c->req + c->n_req, sizeof(c->req) - 1 - c->n_req, MSG_DONTWAIT);
		if (n > 0) {
			c->n_req += (size_t)n;
			c->req[c->n_req] = '\0';
			/* The head ends with an empty line; a body is ignored. */
			if (strstr(c->req, "\r\n\r\n") || strstr(c->req, "\n\n")) {
				int st = metrics_http_status(c->req, c->n_req, &is_head);

				client_answer(m, c, st, is_head);
				return;
			}
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		client_close(m, c); /* EOF before a whole request, or an error */
		return;
	}
}

static void accept_clients(struct metrics *m)
{
	int i, fd;

	for (;;) {
		struct m_client *c = NULL;

		fd = accept4(m->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return;
		for (i = 0; i < METRICS_MAX_CLIENTS; i++)
			if (m->clients[i].fd < 0) {
				c = &m->clients[i];
				break;
			}
		/* Busy: a scraper retries; the main loop owes nobody a wait. */
		if (!c) {
			close(fd);
			continue;
		}
		c->fd = fd;
		c->deadline_ms = mono_ms() + METRICS_CLIENT_MS;
		c->n_req = 0;
		if (epoll_ctl(m->efd, EPOLL_CTL_ADD, fd,
			      &(struct epoll_event){ .events = EPOLLIN, .data.ptr = c })) {
			close(fd);
			c->fd = -1;
		}
	}
}

void metrics_handle(struct metrics *m)
{
	struct epoll_event ev[METRICS_MAX_CLIENTS + 1];
	uint64_t now;
	int n, i;

	if (!m || m->efd < 0)
		return;
	n = epoll_wait(m->efd, ev, METRICS_MAX_CLIENTS + 1, 0);
	for (i = 0; i < n; i++) {
		struct m_client *c = ev[i].data.ptr;

		if (!c) {
			accept_clients(m);
			continue;
		}
		if (c->fd < 0)
			continue;
		if (c->out)
			client_write(m, c);
		else
			client_read(m, c);
	}
	now = mono_ms();
	for (i = 0; i < METRICS_MAX_CLIENTS; i++)
		if (m->clients[i].fd >= 0 && now > m->clients[i].deadline_ms)
			client_close(m, &m->clients[i]);
}

int metrics_fd(const struct metrics *m)
{
	return m ? m->efd : -1;
}

uint16_t metrics_port(const struct metrics *m)
{
	return m ? m->port : 0;
}

static int unix_clear_stale(const char *path, const struct sockaddr_un *sun)
{
	struct stat st;
	int fd, err;

	if (lstat(path, &st))
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	err = connect(fd, (const struct sockaddr *)sun, sizeof(*sun));
	close(fd);
	if (!err)
		return -EADDRINUSE;
	return unlink(path) && errno != ENOENT ? -errno : 0;
}

int metrics_listen(struct metrics *m, const char *unix_path, const struct egr_addr *addr,
		   uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t slen;
	int fd = -1, err, one = 1;
	bool bound = false;

	if (!m || m->lfd >= 0 || (!unix_path && !addr))
		return -EINVAL;
	memset(&ss, 0, sizeof(ss));
	if (unix_path) {
		struct sockaddr_un *sun = (struct sockaddr_un *)&ss;

		if (strlen(unix_path) >= sizeof(sun->sun_path))
			return -ENAMETOOLONG;
		sun->sun_family = AF_UNIX;
		memcpy(sun->sun_path, unix_path, strlen(unix_path) + 1);
		slen = sizeof(*sun);
		err = unix_clear_stale(unix_path, sun);
		if (err)
			return err;
		m->unix_path = strdup(unix_path);
		if (!m->unix_path)
			return -ENOMEM;
	} else {
		slen = addr_to_sockaddr(addr, port, &ss);
	}
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		err = -errno;
		goto fail;
	}
	if (!unix_path)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, slen)) {
		err = -errno;
		goto fail;
	}
	bound = true;
	if ((unix_path && chmod(unix_path, 0660)) || listen(fd, METRICS_MAX_CLIENTS)) {
		err = -errno;
		goto fail;
	}
	if (!unix_path) {
		struct sockaddr_storage b;
		socklen_t blen = sizeof(b);
		struct egr_addr ba;

		if (!getsockname(fd, (struct sockaddr *)&b, &blen))
			addr_from_sockaddr(&ba, &m->port, (struct sockaddr *)&b);
	}
	m->efd = epoll_create1(EPOLL_CLOEXEC);
	if (m->efd < 0 ||
	    epoll_ctl(m->efd, EPOLL_CTL_ADD, fd,
		      &(struct epoll_event){ .events = EPOLLIN, .data.ptr = NULL })) {
		err = -errno;
		goto fail;
	}
	m->lfd = fd;
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	if (m->efd >= 0)
		close(m->efd);
	m->efd = -1;
	if (m->unix_path) {
		if (bound)
			unlink(unix_path);
		free(m->unix_path);
		m->unix_path = NULL;
	}
	return err;
}
