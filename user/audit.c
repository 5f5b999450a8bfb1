// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * Audit sink: one line per decision, text or JSON, plus the set of denied
 * destinations for the summary `egressd run` prints when it ends.
 *
 * Most fields come from the untrusted side (comm, SNI, Host, ALPN), so text
 * values are escaped to one token each: an agent must not be able to forge
 * a second record or a fake field by naming itself "curl\nallow ...".
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "audit.h"
#include "log.h"
#include "policy.h"
#include "safepath.h"

/* Distinct denied destinations remembered for the summary; an agent
 * scanning the internet must not grow the daemon without bound. */
#define AUDIT_MAX_DESTS 1000
#define AUDIT_LINE_MAX 4096

struct audit_dest {
	char dest[300];     /* "evil.test:443", "192.0.2.9:22", "[2001:db8::1]:443" */
	char advice[320];   /* "--allow evil.test" or "(reason)" */
	char comm[EGR_COMM_LEN * 4 + 1];
	uint32_t pid;
	uint64_t count;
};

struct audit {
	pthread_mutex_t lock;
	char *path;
	int dirfd;        /* the file's directory, held (safepath.h) */
	int given_fd;     /* /dev/stdout & co.: a descriptor of ours, or -1 */
	const char *base; /* path's last component */
	FILE *f;
	enum audit_format format;
	bool denials_to_stderr;
	bool sink; /* records are written: a file, or standard output */
	bool batchable; /* a regular file: a write() of many lines stays whole */
	struct audit_dest *dests;
	size_t n_dests;
	size_t cap_dests;
	uint64_t dropped;
	audit_tap_fn tap;
	void *tap_ctx;
	unsigned gen; /* audit_reopen()s */
	uint64_t write_errors; /* records (or batches) a write lost; under lock */
	uint64_t next_error_log_ms;
};

/* A thread with a descriptor table of its own (audit_thread_private)
 * writes through its own handle on the file: a->f's descriptor number
 * means the file in that table only until a reopen replaces it in the
 * process's table. */
static __thread struct audit *tl_a;
static __thread FILE *tl_f;
static __thread unsigned tl_gen;

/* A batching thread (audit_thread_batch) keeps its records for a here
 * until audit_thread_flush(): one write() per pass of its event loop. */
#define AUDIT_BATCH_MAX (64 * 1024)
static __thread struct audit *tl_batch_a;
static __thread char *tl_batch;
static __thread size_t tl_batch_len;

static const char *const reason_names[] = {
	[EGR_REASON_NONE] = "none",
	[EGR_REASON_RULE_ALLOW] = "rule_allow",
	[EGR_REASON_RULE_DENY] = "rule_deny",
	[EGR_REASON_NO_MATCH] = "no_match",
	[EGR_REASON_NO_POLICY] = "no_policy",
	[EGR_REASON_LOOPBACK] = "loopback",
	[EGR_REASON_PORT] = "port",
	[EGR_REASON_CIDR] = "cidr",
	[EGR_REASON_UDP] = "udp",
	[EGR_REASON_PROTO] = "proto",
	[EGR_REASON_NO_ORIGIN] = "no_origin",
	[EGR_REASON_BAD_NAME] = "bad_name",
	[EGR_REASON_NO_NAME] = "no_name",
	[EGR_REASON_MALFORMED] = "malformed",
	[EGR_REASON_PEEK_TIMEOUT] = "peek_timeout",
	[EGR_REASON_TOO_LARGE] = "too_large",
	[EGR_REASON_RESOLVE] = "resolve",
	[EGR_REASON_PRIVATE_ADDR] = "private_addr",
	[EGR_REASON_UPSTREAM] = "upstream",
	[EGR_REASON_CONN_LIMIT] = "conn_limit",
	[EGR_REASON_INTERNAL] = "internal",
	[EGR_REASON_DNS] = "dns",
	[EGR_REASON_GEO] = "geo",
	[EGR_REASON_TLS_REQUIRED] = "tls_required",
	[EGR_REASON_IP_OPTIONS] = "ip_options",
	[EGR_REASON_PROXY_PORT] = "proxy_port",
	[EGR_REASON_NOT_REDIRECTED] = "not_redirected",
	[EGR_REASON_MULTICAST] = "multicast",
	[EGR_REASON_INBOUND] = "inbound",
};
_Static_assert(sizeof(reason_names) / sizeof(reason_names[0]) == EGR_REASON_MAX,
	       "every enum egr_reason value needs a name");

/* What a person reads on stderr and in the summary. */
static const char *const reason_texts[] = {
	[EGR_REASON_NONE] = "no reason given",
	[EGR_REASON_RULE_ALLOW] = "allowed by rule",
	[EGR_REASON_RULE_DENY] = "denied by a deny rule",
	[EGR_REASON_NO_MATCH] = "no allow rule matches",
	[EGR_REASON_NO_POLICY] = "no policy for this cgroup",
	[EGR_REASON_LOOPBACK] = "loopback destination",
	[EGR_REASON_PORT] = "no rule allows this port",
	[EGR_REASON_CIDR] = "address in a denied range",
	[EGR_REASON_UDP] = "UDP other than DNS is not relayed",
	[EGR_REASON_PROTO] = "socket type not allowed",
	[EGR_REASON_NO_ORIGIN] = "origin of the connection unknown",
	[EGR_REASON_BAD_NAME] = "SNI/Host is an IP address or not a valid name",
	[EGR_REASON_NO_NAME] = "no SNI/Host and no address rule allows it",
	[EGR_REASON_MALFORMED] = "malformed TLS ClientHello or HTTP request",
	[EGR_REASON_PEEK_TIMEOUT] = "ClientHello/request not received in time",
	[EGR_REASON_TOO_LARGE] = "ClientHello/request head too large",
	[EGR_REASON_RESOLVE] = "name did not resolve",
	[EGR_REASON_PRIVATE_ADDR] = "name resolves to a private/loopback/metadata address",
	[EGR_REASON_UPSTREAM] = "upstream unreachable",
	[EGR_REASON_CONN_LIMIT] = "connection limit reached",
	[EGR_REASON_INTERNAL] = "internal error",
	[EGR_REASON_DNS] = "DNS to the configured resolver",
	[EGR_REASON_GEO] = "upstream country or ASN refused by the policy",
	[EGR_REASON_TLS_REQUIRED] = "intercepted host without TLS (its request rules need TLS)",
	[EGR_REASON_IP_OPTIONS] = "IP options or routing header (source routing past the proxy)",
	[EGR_REASON_PROXY_PORT] = "bind to the proxy's port",
	[EGR_REASON_NOT_REDIRECTED] = "packet not bound for the proxy on loopback (a socket connected before enforcement, or bound to a device)",
	[EGR_REASON_MULTICAST] = "multicast group join (its IGMP/MLD reports would carry data out)",
	[EGR_REASON_INBOUND] = "TCP from another host to a listener of the cgroup, or an answer to it (the policy keeps inbound connections local)",
};
_Static_assert(sizeof(reason_texts) / sizeof(reason_texts[0]) == EGR_REASON_MAX,
	       "every enum egr_reason value needs a text");

const char *egr_reason_name(enum egr_reason r)
{
	if ((unsigned)r < EGR_REASON_MAX)
		return reason_names[r];
	return "unknown";
}

const char *egr_verdict_name(enum egr_verdict v)
{
	switch (v) {
	case EGR_VERDICT_NONE:
		return "none";
	case EGR_VERDICT_ALLOW:
		return "allow";
	case EGR_VERDICT_DENY:
		return "deny";
	case EGR_VERDICT_AUDIT:
		return "audit";
	}
	return "unknown";
}

static const char *reason_text(enum egr_reason r)
{
	if ((unsigned)r < EGR_REASON_MAX)
		return reason_texts[r];
	return "unknown reason";
}

/* Reasons an allow rule can fix: the summary suggests one for these only
 * (a deny rule wins anyway; loopback, UDP, malformed input cannot be allowed). */
static bool reason_allowable(enum egr_reason r)
{
	return r == EGR_REASON_NO_MATCH || r == EGR_REASON_PORT ||
	       r == EGR_REASON_NO_NAME || r == EGR_REASON_PRIVATE_ADDR;
}

/* --- formatting helpers ------------------------------------------------- */

struct buf {
	char *s;
	size_t len, cap;
};

static void bputs(struct buf *b, const char *s)
{
	size_t n = strlen(s);

	if (b->len + n >= b->cap)
		n = b->cap - b->len - 1;
	memcpy(b->s + b->len, s, n);
	b->len += n;
	b->s[b->len] = '\0';
}

static void bprintf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void bprintf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	if (n > 0)
		b->len += (size_t)n < b->cap - b->len ? (size_t)n : b->cap - b->len - 1;
}

/* One token: printable ASCII except space and backslash as is, others \xNN. */
/* Agent-controlled text can never break a line or forge a field: control
 * bytes, non-ASCII and backslashes become \xNN; spaces too, except in the
 * human-readable stderr lines (keep_space). */
static void besc_mode(struct buf *b, const char *s, bool keep_space)
{
	char hex[5];

	for (; *s && b->len + 5 < b->cap; s++) {
		unsigned char c = (unsigned char)*s;

		if (c < 0x20 || (c == 0x20 && !keep_space) || c >= 0x7f || c == '\\') {
			snprintf(hex, sizeof(hex), "\\x%02x", c);
			bputs(b, hex);
		} else {
			b->s[b->len++] = (char)c;
			b->s[b->len] = '\0';
		}
	}
}

static void besc(struct buf *b, const char *s)
{
	besc_mode(b, s, false);
}

static void esc_into(char *out, size_t len, const char *s)
{
	struct buf b = { out, 0, len };

	out[0] = '\0';
	besc(&b, s);
}

static void iso_time(const struct timespec *ts, char *out, size_t len)
{
	/* gmtime_r and strftime once per second and thread, not twice per
	 * record */
	static __thread time_t last = (time_t)-1;
	static __thread char day[32];
	unsigned ms = (unsigned)(ts->tv_nsec / 1000000) % 1000;
	time_t t = ts->tv_sec;
	struct tm tm;

	if (t != last) {
		if (!gmtime_r(&t, &tm) || !strftime(day, sizeof(day), "%Y-%m-%dT%H:%M:%S", &tm))
			snprintf(day, sizeof(day), "1970-01-01T00:00:00");
		last = t;
	}
	snprintf(out, len, "%.19s.%03uZ", day, ms);
}

static uint64_t duration_ms(const struct timespec *start, const struct timespec *end)
{
	int64_t ms;

	if (!start->tv_sec && !start->tv_nsec)
		return 0;
	ms = ((int64_t)end->tv_sec - start->tv_sec) * 1000 +
	     ((int64_t)end->tv_nsec - start->tv_nsec) / 1000000;
	return ms > 0 ? (uint64_t)ms : 0;
}

/* "192.0.2.1:443" or "[2001:db8::1]:443" */
static void addr_port_str(const struct egr_addr *a, uint16_t port, char *out, size_t len)
{
	char s[INET6_ADDRSTRLEN];

	addr_to_str(a, s, sizeof(s));
	if (addr_is_v4(a))
		snprintf(out, len, "%s:%u", s, port);
	else
		snprintf(out, len, "[%s]:%u", s, port);
}

static const char *record_name(const struct audit_record *r)
{
	if (r->sni && *r->sni)
		return r->sni;
	if (r->host && *r->host)
		return r->host;
	return NULL;
}

static bool is_denial(const struct audit_record *r)
{
	return r->verdict == EGR_VERDICT_DENY || r->verdict == EGR_VERDICT_AUDIT;
}

/* --- records ------------------------------------------------------------ */

static void format_text_http(const struct audit_http *h, struct buf *b)
{
	bputs(b, " method=");
	besc(b, h->method);
	bputs(b, " path=");
	besc(b, h->path && *h->path ? h->path : "-");
	bprintf(b, " status=%d creds=", h->status);
	besc(b, h->creds && *h->creds ? h->creds : "-");
	bprintf(b, " req_body=%llu resp_body=%llu", (unsigned long long)h->req_body,
		(unsigned long long)h->resp_body);
}

static void format_text(const struct audit_record *r, const struct timespec *end,
			struct buf *b)
{
	char t[40], a[64];

	iso_time(end, t, sizeof(t));
	bprintf(b, "%s %s pid=%u comm=", t, egr_verdict_name(r->verdict), r->pid);
	besc(b, r->comm[0] ? r->comm : "-");
	if (r->has_dst) {
		addr_port_str(&r->dst, r->dst_port, a, sizeof(a));
		bprintf(b, " dst=%s", a);
	} else {
		bputs(b, " dst=-");
	}
	if (r->sni) {
		bputs(b, " sni=");
		besc(b, r->sni);
	}
	if (r->host) {
		bputs(b, " host=");
		besc(b, r->host);
	}
	if (r->alpn) {
		bputs(b, " alpn=");
		besc(b, r->alpn);
	}
	if (r->ech)
		bputs(b, " ech=1");
	if (r->kernel_relay)
		bputs(b, " relay=kernel");
	if (r->has_resolved) {
		addr_to_str(&r->resolved, a, sizeof(a));
		bprintf(b, " resolved=%s", a);
	}
	bprintf(b, " reason=%s rule=", egr_reason_name(r->reason));
	besc(b, r->rule ? r->rule : "-");
	bputs(b, " policy=");
	besc(b, r->policy ? r->policy : "-");
	bprintf(b, " up=%llu down=%llu dur=%llums uid=%u proto=",
		(unsigned long long)r->bytes_up, (unsigned long long)r->bytes_down,
		(unsigned long long)duration_ms(&r->start, end), r->uid);
	if (r->proto == IPPROTO_TCP)
		bputs(b, "tcp");
	else if (r->proto == IPPROTO_UDP)
		bputs(b, "udp");
	else
		bprintf(b, "%d", r->proto);
	if (r->origin) {
		bputs(b, " origin=");
		besc(b, r->origin);
	}
	if (r->cgroup) {
		bputs(b, " cgroup=");
		besc(b, r->cgroup);
	}
	if (r->cgroup_id)
		bprintf(b, " cgroup_id=%llu", (unsigned long long)r->cgroup_id);
	if (r->http.method)
		format_text_http(&r->http, b);
	if (r->count > 1)
		bprintf(b, " count=%llu", (unsigned long long)r->count);
	if (r->detail) {
		bputs(b, " detail=");
		besc(b, r->detail);
	}
	/* GeoIP of the upstream address (docs/geoip.md): unknown is left out */
	if (r->country && r->country[0])
		bprintf(b, " country=%s", r->country);
	if (r->asn)
		bprintf(b, " asn=%u", r->asn);
	if (r->as_org && r->as_org[0]) {
		bputs(b, " as_org=");
		besc(b, r->as_org);
	}
	if (r->geo_error)
		bputs(b, " geo_error=1");
	bputs(b, "\n");
}

/*
 * JSON, written straight into a buffer: the bytes json_dumps(JSON_COMPACT)
 * gave for the same object (keys in this order, jansson's escapes), without
 * building and freeing an object per record. Under interception every
 * request is a record; jansson took ~7 of the ~10 us each one cost.
 */
struct jbuf {
	char *s;
	size_t len, cap;
	bool heap;  /* s was malloc'd here (outgrew the caller's buffer) */
	bool oom;   /* an allocation failed: the record is not written */
	bool first; /* no member yet in the innermost object or array */
};

static bool jb_room(struct jbuf *b, size_t n)
{
	size_t want;
	char *p;

	if (b->oom)
		return false;
	if (b->len + n < b->cap)
		return true;
	want = b->cap * 2 > b->len + n + 1 ? b->cap * 2 : b->len + n + 1;
	p = b->heap ? realloc(b->s, want) : malloc(want);
	if (!p) {
		b->oom = true;
		return false;
	}
	if (!b->heap)
		memcpy(p, b->s, b->len);
	b->s = p;
	b->cap = want;
	b->heap = true;
	return true;
}

static void jb_put(struct jbuf *b, const void *s, size_t n)
{
	if (!jb_room(b, n))
		return;
	memcpy(b->s + b->len, s, n);
	b->len += n;
	b->s[b->len] = '\0';
}

/* The UTF-8 jansson's json_string() accepts: no overlong forms, no
 * surrogates, nothing above U+10FFFF. */
static bool utf8_valid(const unsigned char *s)
{
	while (*s) {
		unsigned c = *s, n, v, i;

		if (c < 0x80) {
			s++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			n = 1;
			v = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			n = 2;
			v = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			n = 3;
			v = c & 0x07;
		} else {
			return false;
		}
		for (i = 1; i <= n; i++) {
			if ((s[i] & 0xc0) != 0x80) /* also the terminating NUL */
				return false;
			v = v << 6 | (s[i] & 0x3f);
		}
		if ((n == 2 && v < 0x800) || (n == 3 && v < 0x10000) || v > 0x10ffff ||
		    (v >= 0xd800 && v <= 0xdfff))
			return false;
		s += n + 1;
	}
	return true;
}

/* A JSON string. Agent-supplied bytes may be anything: what is not UTF-8
 * gets the text format's \xNN escapes first (cut at 1 KiB), as it did when
 * jansson refused it. */
static void jb_str(struct jbuf *b, const char *str)
{
	static const char hex[] = "0123456789ABCDEF";
	const unsigned char *p = (const unsigned char *)str;
	char tmp[1024], *d;

	if (!utf8_valid(p)) {
		esc_into(tmp, sizeof(tmp), str);
		p = (const unsigned char *)tmp;
	}
	if (!jb_room(b, 6 * strlen((const char *)p) + 2)) /* all \u00XX */
		return;
	d = b->s + b->len;
	*d++ = '"';
	for (; *p; p++) {
		unsigned char c = *p;
		size_t hz = c >= 0x80 ? egr_utf8_hazard(p) : 0;

		if (hz) {
			/* as \uXXXX: a log on a terminal obeys none of it */
			unsigned cp = hz == 2 ? (unsigned)(p[1] & 0x3f) | 0x80
					      : 0x2000u | ((unsigned)(p[1] & 0x3f) << 6) |
							(unsigned)(p[2] & 0x3f);

			d += sprintf(d, "\\u%04X", cp);
			p += hz - 1;
			continue;
		}
		if (c >= 0x20 && c != '"' && c != '\\') {
			*d++ = (char)c;
			continue;
		}
		*d++ = '\\';
		switch (c) {
		case '"': *d++ = '"'; break;
		case '\\': *d++ = '\\'; break;
		case '\b': *d++ = 'b'; break;
		case '\f': *d++ = 'f'; break;
		case '\n': *d++ = 'n'; break;
		case '\r': *d++ = 'r'; break;
		case '\t': *d++ = 't'; break;
		default:
			*d++ = 'u';
			*d++ = '0';
			*d++ = '0';
			*d++ = hex[c >> 4];
			*d++ = hex[c & 15];
			break;
		}
	}
	*d++ = '"';
	*d = '\0';
	b->len = (size_t)(d - b->s);
}

static void jb_open(struct jbuf *b, char c)
{
	jb_put(b, &c, 1);
	b->first = true;
}

static void jb_close(struct jbuf *b, char c)
{
	jb_put(b, &c, 1);
	b->first = false;
}

/* The comma before every member but an object's or array's first. */
static void jb_sep(struct jbuf *b)
{
	if (!b->first)
		jb_put(b, ",", 1);
	b->first = false;
}

/* ,"key": (keys are this file's own ASCII names: nothing to escape) */
static void jb_key(struct jbuf *b, const char *key)
{
	size_t n = strlen(key);
	char *d;

	jb_sep(b);
	if (!jb_room(b, n + 3))
		return;
	d = b->s + b->len;
	*d++ = '"';
	memcpy(d, key, n);
	d += n;
	*d++ = '"';
	*d++ = ':';
	*d = '\0';
	b->len = (size_t)(d - b->s);
}

static void jb_kstr(struct jbuf *b, const char *key, const char *v)
{
	jb_key(b, key);
	jb_str(b, v);
}

/* jansson's integers are long long: what it printed for a uint64_t too. */
static void jb_kint(struct jbuf *b, const char *key, long long v)
{
	char d[24], *e = d + sizeof(d), *p = e;
	unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;

	jb_key(b, key);
	do {
		*--p = (char)('0' + u % 10);
		u /= 10;
	} while (u);
	if (v < 0)
		*--p = '-';
	jb_put(b, p, (size_t)(e - p));
}

/* {"method", "path", "status", "credentials": [names], "req_body_bytes",
 * "resp_body_bytes"}; credentials is always there, [] if none. */
static void json_http(struct jbuf *b, const struct audit_http *h)
{
	const char *s = h->creds;

	jb_key(b, "http");
	jb_open(b, '{');
	jb_kstr(b, "method", h->method);
	if (h->path && *h->path)
		jb_kstr(b, "path", h->path);
	if (h->status)
		jb_kint(b, "status", h->status);
	jb_key(b, "credentials");
	jb_open(b, '[');
	while (s && *s) {
		char name[128];
		size_t n = strcspn(s, ",");

		snprintf(name, sizeof(name), "%.*s", (int)(n < sizeof(name) ? n : sizeof(name) - 1),
			 s);
		if (n) {
			jb_sep(b);
			jb_str(b, name);
		}
		s += n;
		if (*s)
			s++;
	}
	jb_close(b, ']');
	jb_kint(b, "req_body_bytes", (long long)h->req_body);
	jb_kint(b, "resp_body_bytes", (long long)h->resp_body);
	jb_close(b, '}');
}

/* The record into b (NUL-terminated, no newline); b->oom if it could not
 * be. */
static void format_json(const struct audit_record *r, const struct timespec *end,
			struct jbuf *b)
{
	char t[40], a[64];

	jb_open(b, '{');
	iso_time(end, t, sizeof(t));
	jb_kstr(b, "time", t);
	if (r->start.tv_sec || r->start.tv_nsec) {
		iso_time(&r->start, t, sizeof(t));
		jb_kstr(b, "start", t);
	}
	if (r->cgroup)
		jb_kstr(b, "cgroup", r->cgroup);
	if (r->cgroup_id)
		jb_kint(b, "cgroup_id", (long long)r->cgroup_id);
	if (r->pid) {
		jb_kint(b, "pid", r->pid);
		jb_kint(b, "uid", r->uid);
	}
	if (r->comm[0])
		jb_kstr(b, "comm", r->comm);
	if (r->proto == IPPROTO_TCP)
		jb_kstr(b, "proto", "tcp");
	else if (r->proto == IPPROTO_UDP)
		jb_kstr(b, "proto", "udp");
	else if (r->proto)
		jb_kint(b, "proto", r->proto);
	if (r->has_dst) {
		jb_kstr(b, "dst", addr_to_str(&r->dst, a, sizeof(a)));
		jb_kint(b, "dst_port", r->dst_port);
	}
	if (r->sni)
		jb_kstr(b, "sni", r->sni);
	if (r->host)
		jb_kstr(b, "host", r->host);
	if (r->alpn)
		jb_kstr(b, "alpn", r->alpn);
	if (r->ech) {
		jb_key(b, "ech");
		jb_put(b, "true", 4);
	}
	if (r->kernel_relay)
		jb_kstr(b, "relay", "kernel");
	if (r->has_resolved)
		jb_kstr(b, "resolved", addr_to_str(&r->resolved, a, sizeof(a)));
	jb_kstr(b, "verdict", egr_verdict_name(r->verdict));
	jb_kstr(b, "reason", egr_reason_name(r->reason));
	if (r->rule)
		jb_kstr(b, "rule", r->rule);
	if (r->policy)
		jb_kstr(b, "policy", r->policy);
	if (r->origin)
		jb_kstr(b, "origin", r->origin);
	jb_kint(b, "bytes_up", (long long)r->bytes_up);
	jb_kint(b, "bytes_down", (long long)r->bytes_down);
	jb_kint(b, "duration_ms", (long long)duration_ms(&r->start, end));
	if (r->http.method)
		json_http(b, &r->http);
	if (r->count > 1)
		jb_kint(b, "count", (long long)r->count);
	if (r->detail)
		jb_kstr(b, "detail", r->detail);
	/* GeoIP of the upstream address (docs/geoip.md): unknown is left out */
	if (r->country && r->country[0])
		jb_kstr(b, "country", r->country);
	if (r->asn)
		jb_kint(b, "asn", r->asn);
	if (r->as_org && r->as_org[0])
		jb_kstr(b, "as_org", r->as_org);
	if (r->geo_error) {
		jb_key(b, "geo_error");
		jb_put(b, "true", 4);
	}
	jb_close(b, '}');
}

/* "curl[123] -> evil.test:443 (192.0.2.66)" */
static void format_dest(const struct audit_record *r, struct buf *b)
{
	const char *name = record_name(r);
	char a[64];

	if (name) {
		besc(b, name);
		bprintf(b, ":%u", r->dst_port);
		if (r->has_dst) {
			addr_to_str(&r->dst, a, sizeof(a));
			bprintf(b, " (%s)", a);
		}
	} else if (r->has_dst) {
		addr_port_str(&r->dst, r->dst_port, a, sizeof(a));
		bputs(b, a);
	} else {
		bputs(b, "?");
	}
}

/* A query answered by the DNS proxy (not a connection to port 53). */
static bool record_is_dns(const struct audit_record *r)
{
	return r->origin && !strcmp(r->origin, "dns");
}

static void print_denial(const struct audit_record *r)
{
	char line[1024];
	struct buf b = { line, 0, sizeof(line) };

	line[0] = '\0';
	bputs(&b, r->verdict == EGR_VERDICT_AUDIT ? "egressd: audit: would deny " :
						    "egressd: denied ");
	besc(&b, r->comm[0] ? r->comm : "?");
	bprintf(&b, "[%u] -> ", r->pid);
	if (record_is_dns(r) && record_name(r)) {
		bputs(&b, "DNS query for ");
		besc(&b, record_name(r));
	} else {
		format_dest(r, &b);
	}
	if (r->http.method) {
		bputs(&b, " ");
		besc(&b, r->http.method);
		bputs(&b, " ");
		besc(&b, r->http.path && *r->http.path ? r->http.path : "-");
	}
	bputs(&b, ": ");
	if (r->reason == EGR_REASON_RULE_DENY && r->rule) {
		bputs(&b, "denied by rule ");
		besc(&b, r->rule);
	} else if (r->reason == EGR_REASON_PORT && r->has_dst) {
		bprintf(&b, "no rule allows port %u", r->dst_port);
	} else {
		bputs(&b, reason_text(r->reason));
	}
	if (r->detail) {
		bputs(&b, " (");
		besc_mode(&b, r->detail, true);
		bputs(&b, ")");
	}
	if (r->count > 1)
		bprintf(&b, ", %llu times in %llu ms", (unsigned long long)r->count,
			(unsigned long long)duration_ms(&r->start, &r->end));
	fprintf(stderr, "%s\n", line);
}

static void remember_denial(struct audit *a, const struct audit_record *r)
{
	const char *name = record_name(r);
	char dest[300], rule[300], addr[64];
	struct buf b = { dest, 0, sizeof(dest) };
	struct audit_dest *d;
	size_t i;

	dest[0] = '\0';
	if (name) {
		char lower[256];

		for (i = 0; name[i] && i + 1 < sizeof(lower); i++)
			lower[i] = (char)tolower((unsigned char)name[i]);
		lower[i] = '\0';
		if (i && lower[i - 1] == '.')
			lower[i - 1] = '\0';
		besc(&b, lower);
		if (record_is_dns(r))
			bputs(&b, " (DNS)");
		else
			bprintf(&b, ":%u", r->dst_port);
	} else if (r->has_dst) {
		addr_port_str(&r->dst, r->dst_port, addr, sizeof(addr));
		bputs(&b, addr);
	} else {
		bputs(&b, "?");
	}
	for (i = 0; i < a->n_dests; i++) {
		if (!strcmp(a->dests[i].dest, dest)) {
			a->dests[i].count += r->count > 1 ? r->count : 1;
			return;
		}
	}
	if (a->n_dests >= AUDIT_MAX_DESTS) {
		a->dropped += r->count > 1 ? r->count : 1;
		return;
	}
	if (a->n_dests == a->cap_dests) {
		size_t cap = a->cap_dests ? a->cap_dests * 2 : 16;
		struct audit_dest *nd;

		if (cap > AUDIT_MAX_DESTS)
			cap = AUDIT_MAX_DESTS;
		nd = realloc(a->dests, cap * sizeof(*nd));
		if (!nd) {
			a->dropped += r->count > 1 ? r->count : 1;
			return;
		}
		a->dests = nd;
		a->cap_dests = cap;
	}
	d = &a->dests[a->n_dests++];
	memset(d, 0, sizeof(*d));
	snprintf(d->dest, sizeof(d->dest), "%s", dest);
	esc_into(d->comm, sizeof(d->comm), r->comm[0] ? r->comm : "?");
	d->pid = r->pid;
	d->count = r->count > 1 ? r->count : 1;
	rule[0] = '\0';
	if (reason_allowable(r->reason)) {
		const struct egr_addr *ap = r->has_dst ? &r->dst : NULL;

		/* A private answer is admitted by naming the address it resolved to. */
		if (r->reason == EGR_REASON_PRIVATE_ADDR && r->has_resolved)
			policy_suggest_rule(NULL, &r->resolved, r->dst_port, rule, sizeof(rule));
		else if (r->reason == EGR_REASON_NO_NAME)
			policy_suggest_rule(NULL, ap, r->dst_port, rule, sizeof(rule));
		else if (record_is_dns(r))
			/* a denied lookup: the name, not the resolver's port */
			policy_suggest_rule(name, NULL, 443, rule, sizeof(rule));
		else
			policy_suggest_rule(name, ap, r->dst_port, rule, sizeof(rule));
	}
	if (rule[0])
		snprintf(d->advice, sizeof(d->advice), "--allow %s", rule);
	else
		snprintf(d->advice, sizeof(d->advice), "(%s)", reason_text(r->reason));
}

static FILE *open_log(const struct audit *a, int *err);

/* Under a->lock, in a private-table thread: its handle, renewed after a
 * reopen (kept if the path cannot be opened: the old file, as
 * audit_reopen does). */
static FILE *thread_file(struct audit *a)
{
	if (a->path && (tl_gen != a->gen || !tl_f)) {
		int err = 0;
		FILE *nf = open_log(a, &err);

		if (nf) {
			if (tl_f)
				fclose(tl_f);
			tl_f = nf;
		} else if (!tl_f) {
			log_error("audit: %s: %s", a->path, strerror(-err));
		}
		tl_gen = a->gen;
	}
	return tl_f;
}

/* The whole buffer with one write() where the file allows it: O_APPEND
 * puts it at the end in one piece, so records of other writers (threads
 * with their own handle, another process after a rotation) never land
 * inside a line. A failed write (a full disk) loses what it held: counted
 * (audit_write_errors: the daemon's metrics) and said, at most every
 * 10 s, so a log that stopped growing is never silent. Under a->lock. */
static void write_all(struct audit *a, FILE *f, const char *s, size_t len)
{
	int fd = fileno(f);

	while (len) {
		ssize_t n = write(fd, s, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			struct timespec ts;
			uint64_t now;
			int err = n < 0 ? errno : ENOSPC;

			a->write_errors++;
			clock_gettime(CLOCK_MONOTONIC, &ts);
			now = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
			if (now >= a->next_error_log_ms) {
				log_error("audit log %s: write: %s: records are being lost "
					  "(%llu write%s failed so far)", a->path ? a->path : "(stdout)",
					  strerror(err), (unsigned long long)a->write_errors,
					  a->write_errors == 1 ? "" : "s");
				a->next_error_log_ms = now + 10000;
			}
			return;
		}
		s += n;
		len -= (size_t)n;
	}
}

uint64_t audit_write_errors(struct audit *a)
{
	uint64_t n;

	if (!a)
		return 0;
	pthread_mutex_lock(&a->lock);
	n = a->write_errors;
	pthread_mutex_unlock(&a->lock);
	return n;
}

/* Under a->lock: the handle this thread writes through. */
static FILE *writer_file(struct audit *a)
{
	return tl_a == a ? thread_file(a) : a->f;
}

void audit_thread_flush(void)
{
	struct audit *a = tl_batch_a;
	FILE *f;

	if (!a || !tl_batch_len)
		return;
	pthread_mutex_lock(&a->lock);
	f = writer_file(a);
	if (f)
		write_all(a, f, tl_batch, tl_batch_len);
	pthread_mutex_unlock(&a->lock);
	tl_batch_len = 0;
}

/* Into this thread's batch if it has one and the line fits; false: the
 * caller writes it now (after the batch, which keeps the order). */
static bool batch_add(struct audit *a, const char *line, size_t len)
{
	if (tl_batch_a != a)
		return false;
	if (tl_batch_len + len > AUDIT_BATCH_MAX)
		audit_thread_flush();
	if (len > AUDIT_BATCH_MAX)
		return false;
	memcpy(tl_batch + tl_batch_len, line, len);
	tl_batch_len += len;
	return true;
}

void audit_write(struct audit *a, const struct audit_record *r)
{
	char line[AUDIT_LINE_MAX], jline[AUDIT_LINE_MAX];
	struct buf b = { line, 0, sizeof(line) };
	struct jbuf jb = { jline, 0, sizeof(jline), false, false, false };
	const char *out = NULL, *js = NULL;
	size_t out_len = 0;
	bool denial;
	struct timespec end;
	FILE *f;

	if (!a || !r)
		return;
	end = r->end;
	if (!end.tv_sec && !end.tv_nsec)
		clock_gettime(CLOCK_REALTIME, &end);
	line[0] = '\0';
	if (a->sink) {
		if (a->format == AUDIT_JSON) {
			format_json(r, &end, &jb);
			if (!jb.oom)
				js = jb.s;
		} else {
			format_text(r, &end, &b);
			if (line[0]) {
				/* a cut line still ends the record */
				if (line[b.len - 1] != '\n')
					line[b.len - 1] = '\n';
				out = line;
				out_len = b.len;
			}
		}
	}
	if (a->tap)
		a->tap(a->tap_ctx, r, js); /* the line without its newline */
	if (js) {
		jb_put(&jb, "\n", 1);
		if (!jb.oom) {
			out = jb.s;
			out_len = jb.len;
		}
	}
	denial = is_denial(r) && !r->quiet;
	if (out && batch_add(a, out, out_len))
		out = NULL;
	if (out || denial) {
		pthread_mutex_lock(&a->lock);
		if (out && (f = writer_file(a)))
			write_all(a, f, out, out_len);
		if (denial) {
			if (a->denials_to_stderr)
				print_denial(r);
			remember_denial(a, r);
		}
		pthread_mutex_unlock(&a->lock);
	}
	if (jb.heap)
		free(jb.s);
}

void audit_set_tap(struct audit *a, audit_tap_fn fn, void *ctx)
{
	if (!a)
		return;
	a->tap = fn;
	a->tap_ctx = ctx;
}

char *audit_record_json(const struct audit_record *r)
{
	char tmp[AUDIT_LINE_MAX];
	struct jbuf jb = { tmp, 0, sizeof(tmp), false, false, false };
	struct timespec end = r->end;

	if (!end.tv_sec && !end.tv_nsec)
		clock_gettime(CLOCK_REALTIME, &end);
	format_json(r, &end, &jb);
	if (jb.oom)
		return NULL;
	return jb.heap ? jb.s : strdup(jb.s);
}

/* "/dev/stdout", "/dev/stderr", "/dev/fd/N", "/proc/self/fd/N": a
 * descriptor egressd was given, used as it is; else -1. */
static int given_descriptor(const char *path)
{
	const char *n = NULL;
	char *end;
	long v;

	if (!strcmp(path, "/dev/stdout"))
		return STDOUT_FILENO;
	if (!strcmp(path, "/dev/stderr"))
		return STDERR_FILENO;
	if (!strncmp(path, "/dev/fd/", 8))
		n = path + 8;
	else if (!strncmp(path, "/proc/self/fd/", 14))
		n = path + 14;
	if (!n || !*n)
		return -1;
	errno = 0;
	v = strtol(n, &end, 10);
	if (errno || *end || v < 0 || v > 65535 || fcntl((int)v, F_GETFD) < 0)
		return -1;
	return (int)v;
}

/* The file at a->base in the held directory, never through a symlink
 * or into a file root did not create (safepath.h): the path often lies
 * in the agent's own directory. */
static FILE *open_log(const struct audit *a, int *err)
{
	char why[256];
	FILE *f;
	int fd;

	/* O_APPEND: each record lands whole at the end, also with other
	 * writers and across rotation by copytruncate. */
	if (a->given_fd >= 0) {
		/* our own standard output: the descriptor itself, whatever
		 * it is (a socket cannot be reopened through /proc) */
		fd = fcntl(a->given_fd, F_DUPFD_CLOEXEC, 3);
		if (fd < 0) {
			*err = -errno;
			log_error("audit log %s: %s", a->path, strerror(errno));
			return NULL;
		}
	} else {
		fd = safepath_append(a->dirfd, a->base, why, sizeof(why));
	}
	if (fd < 0) {
		log_error("audit log %s: %s", a->path, why);
		*err = fd;
		return NULL;
	}
	f = fdopen(fd, "a");
	if (!f) {
		*err = -errno;
		close(fd);
		return NULL;
	}
	setvbuf(f, NULL, _IOLBF, 0);
	return f;
}

int audit_open(struct audit **out, const struct audit_options *opts)
{
	struct audit *a;
	int err = 0;

	*out = NULL;
	a = calloc(1, sizeof(*a));
	if (!a)
		return -ENOMEM;
	pthread_mutex_init(&a->lock, NULL);
	a->dirfd = -1;
	a->given_fd = -1;
	a->format = opts ? opts->format : AUDIT_TEXT;
	a->denials_to_stderr = opts ? opts->denials_to_stderr : false;
	if (opts && opts->path) {
		char why[256];
		size_t base;

		a->path = strdup(opts->path);
		if (!a->path) {
			err = -ENOMEM;
			goto fail;
		}
		a->given_fd = given_descriptor(a->path);
		a->dirfd = a->given_fd >= 0 ? -1 : safepath_dir(a->path, &base, why, sizeof(why));
		if (a->given_fd < 0 && a->dirfd < 0) {
			log_error("audit log %s: %s", a->path, why);
			err = a->dirfd;
			goto fail;
		}
		if (a->dirfd >= 0)
			a->base = a->path + base;
		a->f = open_log(a, &err);
		if (!a->f)
			goto fail;
	} else if (opts && opts->to_stdout) {
		/* a copy: closing it at the end leaves stdout alone */
		int fd = fcntl(STDOUT_FILENO, F_DUPFD_CLOEXEC, 3);

		if (fd < 0 || !(a->f = fdopen(fd, "a"))) {
			err = -errno;
			if (fd >= 0)
				close(fd);
			goto fail;
		}
	}
	a->sink = a->f != NULL;
	if (a->f) {
		/* A pipe (journald's stream, `| tee`) keeps only writes of up
		 * to PIPE_BUF whole: there, one record per write(). */
		struct stat st;

		a->batchable = fstat(fileno(a->f), &st) == 0 && S_ISREG(st.st_mode);
	}
	*out = a;
	return 0;
fail:
	audit_close(a);
	return err;
}

void audit_close(struct audit *a)
{
	if (!a)
		return;
	if (a->f)
		fclose(a->f);
	if (a->dirfd >= 0)
		close(a->dirfd);
	pthread_mutex_destroy(&a->lock);
	free(a->dests);
	free(a->path);
	free(a);
}

int audit_reopen(struct audit *a)
{
	FILE *f;
	int err = 0;

	if (!a || !a->path)
		return 0;
	f = open_log(a, &err);
	if (!f)
		return err; /* keep writing to the old file rather than lose records */
	pthread_mutex_lock(&a->lock);
	if (a->f)
		fclose(a->f);
	a->f = f;
	a->gen++;
	pthread_mutex_unlock(&a->lock);
	return 0;
}

void audit_thread_private(struct audit *a)
{
	if (!a)
		return;
	pthread_mutex_lock(&a->lock);
	tl_a = a;
	tl_gen = a->gen;
	if (a->f) {
		/* This table's copy of the file, same number: ours now (a->f
		 * is never used here), closed when thread_file() moves on, so
		 * a rotated-away file is not held open. No handle (out of
		 * memory): thread_file() opens the path at the first record. */
		tl_f = fdopen(fileno(a->f), "a");
		if (tl_f)
			setvbuf(tl_f, NULL, _IOLBF, 0);
	}
	pthread_mutex_unlock(&a->lock);
}

void audit_thread_refresh(struct audit *a)
{
	if (!a || tl_a != a)
		return;
	pthread_mutex_lock(&a->lock);
	thread_file(a);
	pthread_mutex_unlock(&a->lock);
}

void audit_thread_batch(struct audit *a)
{
	if (!a || !a->sink || !a->batchable || tl_batch_a)
		return;
	tl_batch = malloc(AUDIT_BATCH_MAX);
	if (tl_batch) /* else: every record written at once, as before */
		tl_batch_a = a;
}

void audit_thread_end(void)
{
	audit_thread_flush();
	free(tl_batch);
	tl_batch = NULL;
	tl_batch_a = NULL;
	if (tl_f)
		fclose(tl_f);
	tl_f = NULL;
	tl_a = NULL;
}

static int dest_cmp(const void *x, const void *y)
{
	const struct audit_dest *a = x, *b = y;

	if (a->count != b->count)
		return a->count < b->count ? 1 : -1;
	return strcmp(a->dest, b->dest);
}

void audit_print_summary(struct audit *a, FILE *out)
{
	int wd = (int)strlen("DESTINATION"), ww = (int)strlen("WHO");
	size_t i;

	if (!a)
		return;
	pthread_mutex_lock(&a->lock);
	if (!a->n_dests) {
		pthread_mutex_unlock(&a->lock);
		return;
	}
	qsort(a->dests, a->n_dests, sizeof(*a->dests), dest_cmp);
	for (i = 0; i < a->n_dests; i++) {
		int l = (int)strlen(a->dests[i].dest);

		if (l > wd)
			wd = l < 48 ? l : 48;
		l = (int)strlen(a->dests[i].comm);
		if (l > ww)
			ww = l < 20 ? l : 20;
	}
	fprintf(out, "egressd: %zu destination%s denied:\n", a->n_dests,
		a->n_dests == 1 ? " was" : "s were");
	fprintf(out, "  %-*s  %8s  %-*s  %s\n", wd, "DESTINATION", "ATTEMPTS", ww, "WHO",
		"TO ALLOW");
	for (i = 0; i < a->n_dests; i++) {
		const struct audit_dest *d = &a->dests[i];

		fprintf(out, "  %-*s  %8llu  %-*s  %s\n", wd, d->dest,
			(unsigned long long)d->count, ww, d->comm, d->advice);
	}
	if (a->dropped)
		fprintf(out, "  ... and %llu more denied attempts to destinations not listed\n",
			(unsigned long long)a->dropped);
	pthread_mutex_unlock(&a->lock);
}
