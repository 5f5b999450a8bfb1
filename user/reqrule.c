// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * Request rules for intercepted hosts (see reqrule.h). The request comes
 * from the agent; the path we match must be the path the server will act
 * on, so anything a server might normalize differently (dot segments,
 * doubled slashes, encoded separators, Tomcat's "..;") is refused rather
 * than interpreted.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <http_parser.h>

#include "reqrule.h"
#include "formscan.h"
#include "safepath.h"
#include "log.h"

#define N_METHODS 34 /* HTTP_SOURCE + 1 in http-parser 2.9 */
#define MAX_SEGS 1024

static bool copy_str(char *dst, size_t dstsz, const char *src)
{
	size_t n = strlen(src);

	if (n >= dstsz)
		return false;
	memcpy(dst, src, n + 1);
	return true;
}

static unsigned char ascii_lower(unsigned char c)
{
	return c >= 'A' && c <= 'Z' ? (unsigned char)(c + ('a' - 'A')) : c;
}

static int method_index(const char *m, size_t len)
{
	for (int i = 0; i < N_METHODS; i++) {
		const char *s = http_method_str((enum http_method)i);

		if (strlen(s) == len && !memcmp(s, m, len))
			return i;
	}
	return -1;
}

int reqrule_method_index(const char *m)
{
	return m ? method_index(m, strlen(m)) : -1;
}

const char *reqrule_method_name(const char *m)
{
	if (!m)
		return NULL;
	for (int i = 0; i < N_METHODS; i++) {
		const char *s = http_method_str((enum http_method)i);

		if (!strcasecmp(s, m))
			return s;
	}
	return NULL;
}

int reqrule_parse_methods(const char *s, uint64_t *mask)
{
	uint64_t m = 0;

	if (!s || !mask)
		return -EINVAL;
	while (*s) {
		const char *e;
		int idx;

		while (*s == ' ' || *s == ',')
			s++;
		if (!*s)
			break;
		e = s;
		while (*e && *e != ' ' && *e != ',')
			e++;
		if (e - s == 1 && *s == '*') {
			m = UINT64_MAX;
		} else {
			/* Case-sensitive (RFC 9110 9.1): "get" is not GET. */
			idx = method_index(s, (size_t)(e - s));
			if (idx < 0)
				return -EINVAL;
			m |= 1ULL << idx;
		}
		s = e;
	}
	if (!m)
		return -EINVAL;
	*mask = m;
	return 0;
}

int reqrule_parse_size(const char *s, uint64_t *out)
{
	uint64_t v = 0, mul = 1;
	size_t i = 0;

	if (!out)
		return -EINVAL;
	if (!s || !*s || !strcmp(s, "none")) {
		*out = REQRULE_NO_LIMIT;
		return 0;
	}
	for (; s[i] >= '0' && s[i] <= '9'; i++) {
		if (v > (UINT64_MAX - 9) / 10)
			return -ERANGE;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	if (i == 0)
		return -EINVAL;
	switch (s[i]) {
	case '\0':
		break;
	case 'k': case 'K':
		mul = 1ULL << 10;
		break;
	case 'm': case 'M':
		mul = 1ULL << 20;
		break;
	case 'g': case 'G':
		mul = 1ULL << 30;
		break;
	default:
		return -EINVAL;
	}
	if (s[i] && s[i + 1])
		return -EINVAL;
	if (v > UINT64_MAX / mul)
		return -ERANGE;
	*out = v * mul;
	return 0;
}

int reqrule_glob_valid(const char *glob)
{
	size_t n;

	if (!glob)
		return -EINVAL;
	n = strlen(glob);
	if (n == 0 || n >= REQRULE_GLOB_MAX)
		return -EINVAL;
	if (!strcmp(glob, "*"))
		return 0;
	if (glob[0] != '/')
		return -EINVAL;
	for (const char *seg = glob + 1;;) {
		const char *e = strchr(seg, '/');
		size_t len = e ? (size_t)(e - seg) : strlen(seg);

		/* Paths with these never reach matching, so a glob naming
		 * them is a mistake. */
		if ((len == 0 && e) || (len == 1 && seg[0] == '.') ||
		    (len == 2 && !memcmp(seg, "..", 2)))
			return -EINVAL;
		if (memmem(seg, len, "**", 2) && len != 2)
			return -EINVAL;
		for (size_t i = 0; i < len; i++) {
			unsigned char ch = (unsigned char)seg[i];

			if (ch <= 0x20 || ch >= 0x7f || strchr("?#%\\", ch))
				return -EINVAL;
		}
		if (!e)
			break;
		seg = e + 1;
	}
	return 0;
}

int reqrule_init(struct reqrule *r, const char *name, const char *action,
		 const char *methods, const char *globs, const char *max_body)
{
	int err;

	if (!r || !name || !action || !methods || !globs)
		return -EINVAL;
	memset(r, 0, sizeof(*r));
	if (!*name || !copy_str(r->name, sizeof(r->name), name))
		return -EINVAL;
	if (!strcmp(action, "allow"))
		r->action = REQRULE_ALLOW;
	else if (!strcmp(action, "deny"))
		r->action = REQRULE_DENY;
	else
		return -EINVAL;
	err = reqrule_parse_methods(methods, &r->methods);
	if (err)
		return err;
	err = reqrule_parse_size(max_body, &r->max_body);
	if (err)
		return err;
	for (const char *s = globs; *s;) {
		const char *e;
		size_t len;

		while (*s == ' ' || *s == ',')
			s++;
		if (!*s)
			break;
		e = s;
		while (*e && *e != ' ' && *e != ',')
			e++;
		len = (size_t)(e - s);
		if (r->n_globs == REQRULE_MAX_GLOBS || len >= REQRULE_GLOB_MAX)
			return -E2BIG;
		memcpy(r->globs[r->n_globs], s, len);
		r->globs[r->n_globs][len] = '\0';
		err = reqrule_glob_valid(r->globs[r->n_globs]);
		if (err)
			return err;
		r->n_globs++;
		s = e;
	}
	return r->n_globs ? 0 : -EINVAL;
}

int reqrule_host_init(struct reqrule_host *h, const char *host)
{
	if (!h || !host)
		return -EINVAL;
	memset(h, 0, sizeof(*h));
	return *host && copy_str(h->host, sizeof(h->host), host) ? 0 : -EINVAL;
}

int reqrule_host_add_rule(struct reqrule_host *h, const struct reqrule *r)
{
	struct reqrule *n;

	if (!h || !r)
		return -EINVAL;
	n = realloc(h->rules, (h->n_rules + 1) * sizeof(*n));
	if (!n)
		return -ENOMEM;
	h->rules = n;
	h->rules[h->n_rules++] = *r;
	return 0;
}

static bool header_name_valid(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || strchr("!#$%&'*+-.^_`|~", ch)))
			return false;
	}
	return true;
}

static bool is_alnum(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

bool reqrule_field_name_eq(const char *a, size_t alen, const char *b)
{
	size_t blen = strlen(b);

	if (alen != blen)
		return false;
	for (size_t i = 0; i < alen; i++) {
		unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];

		/* every separator is one: CGI's HTTP_X_Y, PHP's '.' to '_' */
		if (!is_alnum(x) && !is_alnum(y))
			continue;
		if (ascii_lower(x) != ascii_lower(y))
			return false;
	}
	return true;
}

bool reqrule_header_reserved(const char *header)
{
	/* Framing, routing and hop-by-hop fields: set by a credential they
	 * would re-frame the request, name another host, drop fields on the
	 * next hop or reach a proxy instead of the server. */
	static const char *const reserved[] = {
		"host", "content-length", "transfer-encoding", "connection",
		"upgrade", "te", "trailer", "keep-alive", "proxy-connection",
		"proxy-authorization", "expect",
	};

	if (!header)
		return false;
	for (size_t i = 0; i < sizeof(reserved) / sizeof(reserved[0]); i++)
		if (reqrule_field_name_eq(header, strlen(header), reserved[i]))
			return true;
	return false;
}

int reqrule_host_add_cred(struct reqrule_host *h, const char *name,
			  const char *header, const char *path_prefix,
			  const char *source)
{
	struct reqrule_cred c = { 0 }, *n;

	if (!h || !name || !header || !source)
		return -EINVAL;
	if (!*name || !copy_str(c.name, sizeof(c.name), name) ||
	    !header_name_valid(header) || reqrule_header_reserved(header) ||
	    !copy_str(c.header, sizeof(c.header), header) ||
	    !copy_str(c.path_prefix, sizeof(c.path_prefix),
		      path_prefix ? path_prefix : "") ||
	    (c.path_prefix[0] && c.path_prefix[0] != '/') ||
	    !copy_str(c.source, sizeof(c.source), source))
		return -EINVAL;
	if (strncmp(source, "env:", 4) && strncmp(source, "file:/", 6))
		return -EINVAL;
	n = realloc(h->creds, (h->n_creds + 1) * sizeof(*n));
	if (!n)
		return -ENOMEM;
	h->creds = n;
	h->creds[h->n_creds++] = c;
	return 0;
}

void reqrule_host_free(struct reqrule_host *h)
{
	if (!h)
		return;
	free(h->rules);
	free(h->creds);
	h->rules = NULL;
	h->creds = NULL;
	h->n_rules = h->n_creds = 0;
}

int reqrule_hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static bool is_unreserved(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
	       c == '~';
}

/* Dot segments, also Tomcat-style with path parameters ("..;x"). */
static bool is_dot_segment(const char *s, size_t len)
{
	const char *semi = memchr(s, ';', len);

	if (semi)
		len = (size_t)(semi - s);
	return (len == 1 && s[0] == '.') || (len == 2 && !memcmp(s, "..", 2));
}

int reqrule_normalize_path(const char *target, char *out, size_t outsz)
{
	size_t o = 0;
	const char *p = target;

	if (!target || !out || outsz < 2 || target[0] != '/')
		return -EINVAL;
	for (; *p && *p != '?'; p++) {
		unsigned char c = (unsigned char)*p;
		char enc[3];
		size_t n = 1;

		if (c == '%') {
			int hi = reqrule_hexval(p[1]), lo = hi < 0 ? -1 : reqrule_hexval(p[2]);

			if (hi < 0 || lo < 0)
				return -EINVAL;
			c = (unsigned char)(hi << 4 | lo);
			p += 2;
			/* Encoded separators and NUL: servers disagree on
			 * whether they split segments. */
			if (c == '/' || c == '\\' || c == '\0')
				return -EINVAL;
			if (is_unreserved(c)) {
				enc[0] = (char)c;
			} else {
				enc[0] = '%';
				enc[1] = "0123456789ABCDEF"[c >> 4];
				enc[2] = "0123456789ABCDEF"[c & 15];
				n = 3;
			}
		} else if (c <= 0x20 || c >= 0x7f || c == '\\' || c == '#') {
			return -EINVAL;
		} else {
			enc[0] = (char)c;
		}
		if (o + n >= outsz)
			return -ENAMETOOLONG;
		memcpy(out + o, enc, n);
		o += n;
	}
	out[o] = '\0';

	/* Segments: no dot segments, no empty ones but a trailing slash. */
	for (const char *seg = out + 1;;) {
		const char *e = strchr(seg, '/');
		size_t len = e ? (size_t)(e - seg) : strlen(seg);

		if (is_dot_segment(seg, len) || (len == 0 && e))
			return -EINVAL;
		if (!e)
			break;
		seg = e + 1;
	}
	return 0;
}

static bool char_eq(char a, char b, bool icase)
{
	return a == b ||
	       (icase && ascii_lower((unsigned char)a) == ascii_lower((unsigned char)b));
}

/* '*' inside one segment: any run of characters (no '/'). */
static bool wild_match(const char *g, size_t gl, const char *s, size_t sl,
		       bool icase)
{
	size_t gi = 0, si = 0, star = SIZE_MAX, mark = 0;

	while (si < sl) {
		if (gi < gl && g[gi] == '*') {
			star = gi++;
			mark = si;
		} else if (gi < gl && char_eq(g[gi], s[si], icase)) {
			gi++;
			si++;
		} else if (star != SIZE_MAX) {
			gi = star + 1;
			si = ++mark;
		} else {
			return false;
		}
	}
	while (gi < gl && g[gi] == '*')
		gi++;
	return gi == gl;
}

struct seg {
	const char *p;
	size_t len;
};

static size_t split(const char *s, struct seg *v, size_t max)
{
	size_t n = 0;

	for (s++;; n++) {
		const char *e = strchr(s, '/');

		if (n == max)
			return max + 1;
		v[n].p = s;
		v[n].len = e ? (size_t)(e - s) : strlen(s);
		if (!e)
			return n + 1;
		s = e + 1;
	}
}

static bool glob_match(const char *glob, const char *path, bool icase)
{
	static _Thread_local struct seg gs[REQRULE_GLOB_MAX], ps[MAX_SEGS];
	static _Thread_local bool row[2][MAX_SEGS + 1];
	size_t ng, np;
	bool *prev = row[0], *cur = row[1], *t;

	if (!glob || !path)
		return false;
	if (!strcmp(glob, "*") || !strcmp(path, "*"))
		return !strcmp(glob, path);
	if (glob[0] != '/' || path[0] != '/')
		return false;
	ng = split(glob, gs, REQRULE_GLOB_MAX);
	np = split(path, ps, MAX_SEGS);
	if (ng > REQRULE_GLOB_MAX || np > MAX_SEGS)
		return false;

	/* Wildcard DP over segments: prev[j] = glob[0..i) matches
	 * path[0..j). Linear in glob x path, whatever the "**" count. */
	memset(prev, 0, (np + 1) * sizeof(bool));
	prev[0] = true;
	for (size_t i = 0; i < ng; i++) {
		const struct seg *g = &gs[i];
		bool any = g->len == 2 && !memcmp(g->p, "**", 2);

		cur[0] = any && prev[0];
		for (size_t j = 1; j <= np; j++) {
			const struct seg *s = &ps[j - 1];

			if (any)
				cur[j] = prev[j] || cur[j - 1];
			else if (g->len == 1 && g->p[0] == '*')
				cur[j] = prev[j - 1] && s->len > 0;
			else
				cur[j] = prev[j - 1] &&
					 wild_match(g->p, g->len, s->p, s->len, icase);
		}
		t = prev;
		prev = cur;
		cur = t;
	}
	return prev[np];
}

bool reqrule_glob_match(const char *glob, const char *path)
{
	return glob_match(glob, path, false);
}

/*
 * The normalized path as a lenient server may read it: each segment's
 * ";params" dropped (Tomcat, Jetty, Spring), and segments that leaves
 * empty or a trailing slash dropped (routers that are not strict about
 * it). Deny rules compare it case-insensitively as well (Express,
 * ASP.NET, GitHub's owner and repository names). A deny rule must hold
 * for every reading a server may pick; an allow rule only for the one we
 * matched, so allow rules never see this.
 */
static void loose_path(const char *path, char *out, size_t outsz)
{
	size_t o = 0;

	if (path[0] != '/') {
		snprintf(out, outsz, "%s", path);
		return;
	}
	/* Never longer than path: fits wherever path did. */
	for (const char *seg = path + 1;;) {
		const char *e = strchr(seg, '/');
		size_t len = e ? (size_t)(e - seg) : strlen(seg);
		const char *semi = memchr(seg, ';', len);

		if (semi)
			len = (size_t)(semi - seg);
		if (len && o + 1 + len < outsz) {
			out[o++] = '/';
			memcpy(out + o, seg, len);
			o += len;
		}
		if (!e)
			break;
		seg = e + 1;
	}
	if (o == 0)
		out[o++] = '/';
	out[o] = '\0';
}

/*
 * The normalized path with the escapes a glob can name decoded: every
 * printable ASCII character but '/', '\\', '%', '?' and '#' (the pchar
 * set's sub-delims "!$&'()*+,;=", ':' and '@' among them). Go's
 * ServeMux, WSGI and others decode "%3A" before routing, so a rule
 * denying "/v1/items/x:archive" must stop "/v1/items/x%3Aarchive" too. Never
 * longer than path. The escapes themselves stay legitimate (S3 keys use
 * "%3A"): only deny rules read this.
 */
static void decoded_path(const char *path, char *out, size_t outsz)
{
	size_t o = 0;

	for (const char *p = path; *p && o + 1 < outsz; p++) {
		int hi, lo, c;

		if (*p == '%' && (hi = reqrule_hexval(p[1])) >= 0 &&
		    (lo = reqrule_hexval(p[2])) >= 0) {
			c = hi << 4 | lo;
			if (c > 0x20 && c < 0x7f && !strchr("/\\%?#", c)) {
				out[o++] = (char)c;
				p += 2;
				continue;
			}
		}
		out[o++] = *p;
	}
	out[o] = '\0';
}

/* The readings of a path a deny rule must hold for (see loose_path,
 * decoded_path), compared case-insensitively: as sent, loose, decoded,
 * decoded then loose (";" from "%3B" cut too), loose then decoded
 * (Tomcat cuts params before it decodes). */
struct readings {
	char buf[4][REQRULE_PATH_MAX];
	const char *r[5];
	size_t n;
	const char *path;
	bool ready; /* made at the first deny rule that asks (most hosts have none) */
};

static void readings_add(struct readings *rd, const char *p)
{
	for (size_t i = 0; i < rd->n; i++)
		if (!strcmp(rd->r[i], p))
			return;
	rd->r[rd->n++] = p;
}

/* rd for path (which fits in REQRULE_PATH_MAX), made when first needed. */
static void readings_init(struct readings *rd, const char *path)
{
	rd->path = path;
	rd->ready = false;
}

static void readings_make(struct readings *rd)
{
	const char *path = rd->path;

	if (rd->ready)
		return;
	rd->ready = true;
	rd->n = 0;
	readings_add(rd, path);
	loose_path(path, rd->buf[0], sizeof(rd->buf[0]));
	readings_add(rd, rd->buf[0]);
	decoded_path(path, rd->buf[1], sizeof(rd->buf[1]));
	readings_add(rd, rd->buf[1]);
	loose_path(rd->buf[1], rd->buf[2], sizeof(rd->buf[2]));
	readings_add(rd, rd->buf[2]);
	decoded_path(rd->buf[0], rd->buf[3], sizeof(rd->buf[3]));
	readings_add(rd, rd->buf[3]);
}

/* A rule's glob against the path as matched, and (a deny rule's, rd
 * given) against every reading of it, case-insensitively. */
static bool glob_hit(const char *glob, const char *path, struct readings *rd)
{
	if (glob_match(glob, path, false))
		return true;
	if (rd)
		readings_make(rd);
	for (size_t i = 0; rd && i < rd->n; i++)
		if (glob_match(glob, rd->r[i], true))
			return true;
	return false;
}

bool reqrule_glob_match_loose(const char *glob, const char *path)
{
	struct readings *rd;
	bool hit;

	if (!glob || !path || strlen(path) >= REQRULE_PATH_MAX)
		return false;
	rd = malloc(sizeof(*rd));
	if (!rd)
		return false;
	readings_init(rd, path);
	hit = glob_hit(glob, path, rd);
	free(rd);
	return hit;
}

int reqrule_host_matches_port(const char *auth, const char *sni, uint16_t port)
{
	size_t alen, slen, hlen;
	const char *colon;

	if (!auth || !sni)
		return -EINVAL;
	alen = strlen(auth);
	if (alen == 0 || alen > 300)
		return -EINVAL;
	if (auth[0] == '[') {
		/* An IP literal never equals a server name. */
		const char *end = strchr(auth, ']');

		if (!end || (end[1] && end[1] != ':'))
			return -EINVAL;
		return 0;
	}
	colon = strchr(auth, ':');
	hlen = colon ? (size_t)(colon - auth) : alen;
	for (size_t i = 0; i < hlen; i++) {
		unsigned char c = (unsigned char)auth[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_'))
			return -EINVAL;
	}
	if (colon) {
		unsigned long p = 0;
		const char *d = colon + 1;

		/* RFC 3986: an empty port means the default. */
		if (strlen(d) > 5)
			return -EINVAL;
		for (; *d; d++) {
			if (*d < '0' || *d > '9')
				return -EINVAL;
			p = p * 10 + (unsigned long)(*d - '0');
		}
		/* A port other than the connection's names another
		 * service: not this one. */
		if (colon[1] && p != (port ? port : 443))
			return 0;
	}
	if (hlen && auth[hlen - 1] == '.')
		hlen--;
	slen = strlen(sni);
	if (slen && sni[slen - 1] == '.')
		slen--;
	if (hlen == 0)
		return -EINVAL;
	return hlen == slen && !strncasecmp(auth, sni, hlen);
}

static int fail(struct reqrule_result *res, int status, const char *reason)
{
	res->status = status;
	res->reason = reason;
	return status;
}

static int host_verdict(struct reqrule_result *res, int m)
{
	if (m < 0)
		return fail(res, 400, "invalid host");
	if (m == 0)
		return fail(res, 421, "host does not match the TLS server name");
	return 0;
}

int reqrule_host_matches(const char *auth, const char *sni)
{
	return reqrule_host_matches_port(auth, sni, 443);
}

/* Path for matching from the request-target; 0 or the status. */
static int target_path(const struct reqrule_request *req, const char *sni,
		       struct reqrule_result *res)
{
	const char *t = req->target, *a, *e;
	char auth[301];
	int err;

	if (!strcmp(req->method, "CONNECT")) {
		/* authority-form; its port must be given and be the connection's */
		if (!strchr(t, ':') || t[strlen(t) - 1] == ':')
			return fail(res, 400, "invalid CONNECT target");
		err = host_verdict(res, reqrule_host_matches_port(t, sni, req->port));
		if (err)
			return err;
		snprintf(res->path, sizeof(res->path), "*");
		return 0;
	}
	if (!strcmp(t, "*")) {
		if (strcmp(req->method, "OPTIONS"))
			return fail(res, 400, "asterisk-form target without OPTIONS");
		snprintf(res->path, sizeof(res->path), "*");
		return 0;
	}
	if (t[0] != '/') {
		/* absolute-form: the authority is one more name for the
		 * server, and it must be the same one (domain fronting) */
		if (!strncasecmp(t, "https://", 8))
			a = t + 8;
		else if (!strncasecmp(t, "http://", 7))
			a = t + 7;
		else
			return fail(res, 400, "invalid request target");
		e = a + strcspn(a, "/?#");
		if (memchr(a, '@', (size_t)(e - a)))
			return fail(res, 400, "userinfo in request target");
		if ((size_t)(e - a) >= sizeof(auth))
			return fail(res, 400, "invalid host");
		memcpy(auth, a, (size_t)(e - a));
		auth[e - a] = '\0';
		err = host_verdict(res, reqrule_host_matches_port(auth, sni, req->port));
		if (err)
			return err;
		if (*e == '#')
			return fail(res, 400, "fragment in request target");
		t = *e == '/' ? e : "/";
	}
	err = reqrule_normalize_path(t, res->path, sizeof(res->path));
	if (err == -ENAMETOOLONG)
		return fail(res, 414, "path too long");
	if (err)
		return fail(res, 400, "invalid path");
	return 0;
}

static bool prefix_matches(const char *prefix, const char *path)
{
	size_t n = strlen(prefix);

	if (n == 0)
		return true;
	if (strncmp(prefix, path, n))
		return false;
	/* "/repos/acme" covers "/repos/acme/x", not "/repos/acmeevil". */
	return prefix[n - 1] == '/' || path[n] == '\0' || path[n] == '/';
}

static void pick_creds(const struct reqrule_host *h, struct reqrule_result *res)
{
	for (size_t i = 0; i < h->n_creds; i++) {
		const struct reqrule_cred *c = &h->creds[i];
		size_t k;

		if (!prefix_matches(c->path_prefix, res->path))
			continue;
		/* One value per header: the longest prefix wins. */
		for (k = 0; k < res->n_creds; k++)
			if (!strcasecmp(res->creds[k]->header, c->header))
				break;
		if (k < res->n_creds) {
			if (strlen(c->path_prefix) >
			    strlen(res->creds[k]->path_prefix))
				res->creds[k] = c;
		} else if (res->n_creds < REQRULE_MAX_CREDS) {
			res->creds[res->n_creds++] = c;
		}
	}
}

/* The first rule for method idx whose globs match path (deny rules: or
 * any of its readings), NULL if none. */
static const struct reqrule *first_rule(const struct reqrule_host *h, int idx,
					const char *path, struct readings *loose)
{
	for (size_t i = 0; idx >= 0 && i < h->n_rules; i++) {
		const struct reqrule *r = &h->rules[i];

		if (!(r->methods & (1ULL << idx)))
			continue;
		for (size_t g = 0; g < r->n_globs; g++)
			if (glob_hit(r->globs[g], path, r->action == REQRULE_DENY ? loose : NULL))
				return r;
	}
	return NULL;
}

/* The parameter name as PHP makes it for $_GET and $_POST (Laravel,
 * Symfony read _method from there): leading spaces dropped, '.', ' ' and
 * an unclosed '[' turned into '_'; or as Rack 2 (Rails 6, 7.0) and qs
 * (Express) read it: brackets around it dropped ("[_method]",
 * "_method]"), an array of one ("_method[]", "_method[0]"). Is it
 * "_method"? */
bool reqrule_param_is_method(const char *name)
{
	char n[64];
	size_t k = 0;
	const char *p = name + strspn(name, "[]");

	if (!strncasecmp(p, "_method", 7)) {
		/* after it: closing brackets, or qs's array of one
		 * ("_method[]", "_method[0]": Express's getter takes the
		 * array's first) */
		const char *r = p + 7 + strspn(p + 7, "]");

		if (!*r)
			return true;
		if (*r == '[') {
			r += 1 + strspn(r + 1, "0123456789");
			if (r[0] == ']' && !r[1])
				return true;
		}
	}
	while (*name == ' ')
		name++;
	for (; *name && k + 1 < sizeof(n); name++) {
		char c = *name;

		if (c == '.' || c == ' ' || (c == '[' && !strchr(name, ']')))
			c = '_';
		n[k++] = c;
	}
	n[k] = '\0';
	return !strcasecmp(n, "_method");
}

/*
 * "_method" in the query string: Laravel and Symfony (through PHP's $_GET
 * names), gorilla's handler and a configured Express take the method from
 * it (Rails' Rack::MethodOverride only from a form body). Read by the
 * form body's scanner (formscan_query), so names are read the same way:
 * leading spaces dropped and cut at a NUL whatever their length, the
 * last of several counting as much as the first. 0 none, 1 found (*out:
 * the method), -1 unknown, several that disagree, or a name too long to
 * read. (One in a POST body: formscan.h, checked against
 * res->override_ok.)
 */
static int query_method_override(const char *target, const char **out)
{
	const char *q = strchr(target, '?');

	if (!q)
		return 0;
	/* (a '#' was refused before: the query runs to the end) */
	q++;
	return formscan_query(q, strlen(q), out);
}

/*
 * The methods a POST's body may name in _method (formscan.h): those the
 * request would be allowed under too (an override already in a field or
 * the query was checked), never TRACE with credentials set. UINT64_MAX:
 * every method, nothing to scan. Other methods: no framework reads a
 * method from their body.
 */
static uint64_t override_mask(const struct reqrule_host *h,
			      const struct reqrule_request *req,
			      const struct reqrule_result *res,
			      struct readings *loose)
{
	uint64_t ok = 0;
	bool all = true;
	int trace = method_index("TRACE", 5);

	if (strcmp(req->method, "POST"))
		return UINT64_MAX;
	for (int i = 0; i < N_METHODS && i < 64; i++) {
		const struct reqrule *o = first_rule(h, i, res->path, loose);

		if (o && o->action != REQRULE_DENY && !(i == trace && res->n_creds))
			ok |= 1ULL << i;
		else
			all = false;
	}
	return all ? UINT64_MAX : ok;
}

int reqrule_check(const struct reqrule_host *h, const char *sni,
		  const struct reqrule_request *req, struct reqrule_result *res)
{
	const struct reqrule *r, *lim;
	const char *omethod = NULL;
	static _Thread_local struct readings loose;
	int idx, oidx = -1, err;

	if (!res)
		return -EINVAL;
	memset(res, 0, sizeof(*res));
	res->max_body = REQRULE_NO_LIMIT;
	if (!h || !sni || !req || !req->method || !req->target)
		return fail(res, 400, "bad request");
	if (!req->host || !*req->host)
		return fail(res, 400, "missing Host");
	err = host_verdict(res, reqrule_host_matches_port(req->host, sni, req->port));
	if (err)
		return err;
	/* A fragment is never sent; servers that do not split it off (Go)
	 * read what follows as more of the query. */
	if (strchr(req->target, '#'))
		return fail(res, 400, "fragment in request target");
	err = target_path(req, sni, res);
	if (err)
		return err;

	{
		const char *m = NULL, *qm = NULL;
		int q = query_method_override(req->target, &qm);

		if (q < 0)
			return fail(res, 400, "unknown or conflicting _method in the query, or a name too long to read");
		if (req->method_override) {
			m = reqrule_method_name(req->method_override);
			if (!m)
				return fail(res, 400, "unknown method in a method override field");
		}
		if (m && qm && strcmp(m, qm))
			return fail(res, 400, "method override field and _method disagree");
		if (!m)
			m = qm;
		/* A server acting on HEAD answers with a Content-Length and
		 * no body, on CONNECT it opens a tunnel: egressd, reading the
		 * answer as the request line's method's, would take the next
		 * response's bytes for this one's body (and a fake 101 in
		 * them for a switch). Also as the request's own method. */
		if (m && (!strcmp(m, "HEAD") || !strcmp(m, "CONNECT")))
			return fail(res, 400, "method override naming HEAD or CONNECT");
		if (m && strcmp(m, req->method)) {
			omethod = m;
			oidx = method_index(m, strlen(m));
		}
	}

	idx = method_index(req->method, strlen(req->method));
	readings_init(&loose, res->path);
	r = first_rule(h, idx, res->path, &loose);
	if (!r) {
		res->rule_name = "default";
		return fail(res, 403, "no rule allows this request");
	}
	res->rule = r;
	res->rule_name = r->name;
	if (r->action == REQRULE_DENY)
		return fail(res, 403, "denied by rule");
	lim = r;
	if (oidx >= 0) {
		/* A framework that honours the override acts as if it were
		 * the method: the request must be allowed as both. */
		const struct reqrule *o = first_rule(h, oidx, res->path, &loose);

		res->rule = o;
		res->rule_name = o ? o->name : "default";
		if (!o)
			return fail(res, 403, "no rule allows the method override");
		if (o->action == REQRULE_DENY)
			return fail(res, 403, "method override denied by rule");
		if (o->max_body < r->max_body)
			lim = o;
		res->rule = r;
		res->rule_name = r->name;
	}
	res->max_body = lim->max_body;
	if (req->has_length && req->content_length > lim->max_body) {
		res->rule = lim;
		res->rule_name = lim->name;
		return fail(res, 413, "request body too large");
	}
	/* RFC 9110 9.3.8: a client must not send credentials in TRACE, and
	 * a server with TRACE on echoes the request, credential included,
	 * back to the agent. Also when a framework may take TRACE from the
	 * override. Allowed, but without credentials. */
	if (strcmp(req->method, "TRACE") && !(omethod && !strcmp(omethod, "TRACE")))
		pick_creds(h, res);
	res->override_ok = override_mask(h, req, res, &loose);
	res->reason = "allowed by rule";
	return 0;
}

static bool env_name_valid(const char *s)
{
	if (!*s || (*s >= '0' && *s <= '9'))
		return false;
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') ||
		      (*s >= '0' && *s <= '9') || *s == '_'))
			return false;
	return true;
}

#define DIRS_FIX "every directory above a credential file must be owned by root and " \
		 "not writable by group or others (sticky ones like /tmp excepted): " \
		 "keep the file under a directory only root can change, e.g. /etc/egressd"

/*
 * Open a credential file: egressd reads it as root, on behalf of a
 * cgroup that must never see the value. Not through a symbolic link, not
 * a FIFO or device (O_NONBLOCK: opening one cannot hang us), only a
 * regular file that is root's and private to it, in directories only
 * root can change (safepath_parents_trusted). The checks are on the descriptor we
 * read, so a swap after them changes nothing. fd, or -errno with why.
 */
static int open_cred_file(const char *path, char *why, size_t whylen)
{
	struct stat st;
	int fd, err;

	err = safepath_parents_trusted(path, DIRS_FIX, why, whylen);
	if (err)
		return err;
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		err = errno;
		if (err == ELOOP && !lstat(path, &st) && S_ISLNK(st.st_mode))
			egr_seterr(why, whylen, "is a symbolic link; credential files are not "
				 "opened through links: name the file itself");
		else
			egr_seterr(why, whylen, "%s", strerror(err));
		return -err;
	}
	if (fstat(fd, &st) < 0) {
		err = errno;
		close(fd);
		egr_seterr(why, whylen, "%s", strerror(err));
		return -err;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		egr_seterr(why, whylen, "%s", S_ISDIR(st.st_mode) ? strerror(EISDIR) :
			 "not a regular file");
		return S_ISDIR(st.st_mode) ? -EISDIR : -EINVAL;
	}
	if (st.st_uid != 0) {
		close(fd);
		egr_seterr(why, whylen, "owned by uid %u; it must be owned by root and mode 0600 "
			 "or stricter: chown root %s, chmod 600 %s", (unsigned)st.st_uid, path,
			 path);
		return -EPERM;
	}
	if (st.st_nlink != 1) {
		/* a second name of another root-only file, linked in where
		 * this one was missing (fs.protected_hardlinks=0) */
		close(fd);
		egr_seterr(why, whylen, "has %lu hard links; it must be a file of its own: copy it",
		       (unsigned long)st.st_nlink);
		return -EMLINK;
	}
	if (st.st_mode & 077) {
		close(fd);
		egr_seterr(why, whylen, "accessible by group or others (mode %04o); it must be "
			 "owned by root and mode 0600 or stricter: chmod 600 %s",
			 (unsigned)(st.st_mode & 07777), path);
		return -EPERM;
	}
	return fd;
}

/* Whole file into val (at most valsz - 1 bytes); 0 or -errno, why set. */
static int read_file(const char *path, char *val, size_t valsz, size_t *len,
		     char *why, size_t whylen)
{
	size_t n = 0;
	int fd, err = 0;

	*len = 0;
	fd = open_cred_file(path, why, whylen);
	if (fd < 0)
		return fd;
	for (;;) {
		ssize_t r;
		char extra;

		if (n == valsz - 1) {
			/* Full: one more byte means too large. */
			r = read(fd, &extra, 1);
			if (r < 0 && errno == EINTR)
				continue;
			err = r < 0 ? -errno : r > 0 ? -EFBIG : 0;
			break;
		}
		r = read(fd, val + n, valsz - 1 - n);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			err = -errno;
			break;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	close(fd);
	*len = n;
	if (err)
		egr_seterr(why, whylen, "%s", err == -EFBIG ? "file too large" : strerror(-err));
	return err;
}

int reqrule_cred_resolve(const struct reqrule_cred *c, char *val,
			 size_t valsz, size_t *len, char *err, size_t errsz)
{
	size_t n = 0;
	int ret = 0;

	if (!err)
		errsz = 0;
	if (errsz)
		err[0] = '\0';
	if (!c || !val || valsz < 2 || !len) {
		snprintf(err, errsz, "credential: bad arguments");
		return -EINVAL;
	}
	*len = 0;
	if (!strncmp(c->source, "env:", 4)) {
		const char *name = c->source + 4, *v;

		if (!env_name_valid(name)) {
			snprintf(err, errsz, "credential '%s': %s: invalid variable name",
				 c->name, c->source);
			return -EINVAL;
		}
		v = getenv(name);
		if (!v) {
			snprintf(err, errsz, "credential '%s': %s: not set in the daemon's environment",
				 c->name, c->source);
			return -ENOENT;
		}
		n = strlen(v);
		if (n >= valsz) {
			snprintf(err, errsz, "credential '%s': %s: value too long (over %zu bytes)",
				 c->name, c->source, valsz - 1);
			return -EFBIG;
		}
		memcpy(val, v, n);
	} else if (!strncmp(c->source, "file:/", 6)) {
		char why[2 * REQRULE_SOURCE_MAX + 256];

		ret = read_file(c->source + 5, val, valsz, &n, why, sizeof(why));
		if (ret) {
			snprintf(err, errsz, "credential '%s': %s: %s", c->name,
				 c->source, why);
			goto wipe;
		}
	} else {
		/* Do not echo the source: a misconfigured literal secret
		 * would end up in the log. */
		snprintf(err, errsz, "credential '%s': value source must be env:NAME or file:/path",
			 c->name);
		return -EINVAL;
	}

	/* One trailing newline, as `echo` or an editor leaves it. */
	if (n && val[n - 1] == '\n') {
		n--;
		if (n && val[n - 1] == '\r')
			n--;
	}
	val[n] = '\0';
	if (n == 0) {
		snprintf(err, errsz, "credential '%s': %s: empty value", c->name,
			 c->source);
		ret = -EINVAL;
		goto wipe;
	}
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)val[i];

		/* Would split or end the header it goes into. */
		if ((ch < 0x20 && ch != '\t') || ch == 0x7f) {
			snprintf(err, errsz, "credential '%s': %s: value contains control characters",
				 c->name, c->source);
			ret = -EINVAL;
			goto wipe;
		}
	}
	if (val[0] == ' ' || val[0] == '\t' || val[n - 1] == ' ' ||
	    val[n - 1] == '\t') {
		snprintf(err, errsz, "credential '%s': %s: value starts or ends with blanks",
			 c->name, c->source);
		ret = -EINVAL;
		goto wipe;
	}
	*len = n;
	return 0;
wipe:
	explicit_bzero(val, valsz);
	return ret;
}
