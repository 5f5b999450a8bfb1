// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * Daemon configuration: parsing, validation, cgroup glob bindings.
 * User documentation: docs/daemon.md.
 *
 * Everything is built into a fresh struct dconfig and handed out only when
 * the whole file (and every file it references) is valid: a daemon told to
 * reload a broken config keeps enforcing the old one.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "dconfig.h"
#include "safepath.h"
#include "jpos.h"
#include "srt.h"

/* A config is a page of JSON; anything bigger is a mistake. */
#define DCONFIG_MAX_FILE (1024 * 1024)
/* The daemon keeps two banks of EGR_MAX_POLICIES / 2 policy ids (the
 * running config's and the next reload's): a config fills one. */
#define DCONFIG_MAX_POLICIES (EGR_MAX_POLICIES / 2)
#define DCONFIG_MAX_BINDINGS 1024
#define DCONFIG_MAX_GLOB 4095
#define DCONFIG_MAX_DNS 8
#define POLICY_NAME_MAX 64

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* --- globs -------------------------------------------------------------- */

struct comp {
	const char *s;
	size_t n;
};

/* Next '/'-separated component at *p (empty components skipped). */
static bool next_comp(const char **p, struct comp *c)
{
	const char *s = *p;

	while (*s == '/')
		s++;
	if (!*s) {
		*p = s;
		return false;
	}
	c->s = s;
	while (*s && *s != '/')
		s++;
	c->n = (size_t)(s - c->s);
	*p = s;
	return true;
}

static bool is_dstar(const struct comp *c)
{
	return c->n == 2 && c->s[0] == '*' && c->s[1] == '*';
}

/* '*' within one component: the classic greedy match with one backtrack
 * point, linear in practice and never exponential. */
static bool comp_match(const struct comp *pat, const struct comp *str)
{
	size_t p = 0, s = 0, star_p = SIZE_MAX, star_s = 0;

	while (s < str->n) {
		if (p < pat->n && pat->s[p] == '*') {
			star_p = p++;
			star_s = s;
		} else if (p < pat->n && pat->s[p] == str->s[s]) {
			p++;
			s++;
		} else if (star_p != SIZE_MAX) {
			p = star_p + 1;
			s = ++star_s;
		} else {
			return false;
		}
	}
	while (p < pat->n && pat->s[p] == '*')
		p++;
	return p == pat->n;
}

/* The same algorithm one level up: components are the characters and a
 * "**" component is the star. */
bool dconfig_glob_match(const char *glob, const char *path)
{
	const char *g = glob, *s = path, *star_g = NULL, *star_s = NULL;
	struct comp gc = { NULL, 0 }, sc;

	if (!glob || !path || *path != '/')
		return false;
	for (;;) {
		const char *g_next = g, *s_next = s;
		bool have_g = next_comp(&g_next, &gc);

		if (!next_comp(&s_next, &sc))
			break;
		if (have_g && is_dstar(&gc)) {
			/* "**" matches nothing for now */
			star_g = g = g_next;
			star_s = s;
			continue;
		}
		if (have_g && comp_match(&gc, &sc)) {
			g = g_next;
			s = s_next;
			continue;
		}
		if (!star_g)
			return false;
		/* let the last "**" take one more component, retry after it */
		next_comp(&star_s, &sc);
		s = star_s;
		g = star_g;
	}
	/* path used up: only "**" may remain in the glob */
	while (next_comp(&g, &gc))
		if (!is_dstar(&gc))
			return false;
	return true;
}

const char *dconfig_glob_check(const char *glob)
{
	const char *p = glob;
	size_t len = strlen(glob), ncomp = 0;
	struct comp c;

	if (!len)
		return "empty cgroup glob";
	if (glob[0] != '/')
		return "must start with \"/\" (a path below the cgroup2 mount)";
	if (len > DCONFIG_MAX_GLOB)
		return "longer than 4095 characters";
	if (len > 1 && glob[len - 1] == '/')
		return "must not end with \"/\"";
	if (strstr(glob, "//"))
		return "empty path component (\"//\")";
	while (next_comp(&p, &c)) {
		size_t i;

		if ((c.n == 1 && c.s[0] == '.') || (c.n == 2 && c.s[0] == '.' && c.s[1] == '.'))
			return "\".\" and \"..\" components are not allowed";
		for (i = 0; i < c.n; i++) {
			unsigned char ch = (unsigned char)c.s[i];

			if (ch < 0x20 || ch == 0x7f)
				return "control character";
			if (ch == '?' || ch == '[' || ch == ']' || ch == '\\' || ch == '{' || ch == '}')
				return "only \"*\" and \"**\" are wildcards";
			if (ch == '*' && i + 1 < c.n && c.s[i + 1] == '*' && !is_dstar(&c))
				return "\"**\" must be a whole path component";
		}
		if (!ncomp++ && memchr(c.s, '*', c.n))
			return "the first component must be literal: the programs would be "
			       "attached to the root cgroup and enforce the whole machine";
	}
	if (!ncomp)
		return "\"/\" is the root cgroup: binding it would enforce the whole machine";
	return NULL;
}

static void glob_rank(struct dconfig_binding *b)
{
	const char *p = b->cgroup, *star = strchr(b->cgroup, '*');
	struct comp c;
	size_t i;

	b->literal_prefix = star ? (size_t)(star - b->cgroup) : strlen(b->cgroup);
	for (i = 0; b->cgroup[i]; i++)
		b->literal_chars += b->cgroup[i] != '*';
	while (next_comp(&p, &c)) {
		if (is_dstar(&c))
			b->double_stars++;
		else if (!memchr(c.s, '*', c.n))
			b->literal_components++;
	}
}

/* >0 if a is more specific than b. */
static int rank_cmp(const struct dconfig_binding *a, const struct dconfig_binding *b)
{
	if (a->literal_components != b->literal_components)
		return a->literal_components > b->literal_components ? 1 : -1;
	if (a->literal_prefix != b->literal_prefix)
		return a->literal_prefix > b->literal_prefix ? 1 : -1;
	if (a->literal_chars != b->literal_chars)
		return a->literal_chars > b->literal_chars ? 1 : -1;
	if (a->double_stars != b->double_stars)
		return a->double_stars < b->double_stars ? 1 : -1;
	return 0;
}

const struct dconfig_binding *dconfig_match(const struct dconfig *c, const char *cgroup_path)
{
	const struct dconfig_binding *best = NULL;
	size_t i;

	if (!c || !cgroup_path)
		return NULL;
	for (i = 0; i < c->n_bindings; i++) {
		const struct dconfig_binding *b = &c->bindings[i];

		if (dconfig_glob_match(b->cgroup, cgroup_path) &&
		    (!best || rank_cmp(b, best) > 0))
			best = b;
	}
	return best;
}

/* --- loading ------------------------------------------------------------ */

struct ld {
	const char *file;
	char *dir;               /* for relative references */
	const char *buf;
	size_t len;
	json_t *root;
	struct jpos *pos;
	char *err;
	size_t errlen;
	struct dconfig *c;
};

static int fail(struct ld *l, int ret, int line, const char *field, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

static int fail(struct ld *l, int ret, int line, const char *field, const char *fmt, ...)
{
	char reason[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	if (l->err && l->errlen)
		snprintf(l->err, l->errlen, "%s:%d: %s: %s", l->file, line, field, reason);
	return ret;
}

static int nomem(struct ld *l)
{
	if (l->err && l->errlen)
		snprintf(l->err, l->errlen, "%s: out of memory", l->file);
	return -ENOMEM;
}

static int warn(struct ld *l, int line, const char *field, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int warn(struct ld *l, int line, const char *field, const char *fmt, ...)
{
	char reason[512], *w, **v;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	v = realloc(l->c->warnings, (l->c->n_warnings + 1) * sizeof(*v));
	if (!v)
		return nomem(l);
	l->c->warnings = v;
	if (asprintf(&w, "%s:%d: %s: %s", l->file, line, field, reason) < 0)
		return nomem(l);
	v[l->c->n_warnings++] = w;
	return 0;
}

static void field_path(char *out, size_t len, const char *parent, const char *key)
{
	if (parent && *parent)
		snprintf(out, len, "%s.%s", parent, key);
	else
		snprintf(out, len, "%s", key);
}

/*
 * Check an object's members against the known names, in file order (so
 * the first mistake in the file is the one reported): unknown names get a
 * suggestion, repeated names are refused (jansson would keep the last one
 * silently). Also checks that the walker and jansson agree.
 */
static int check_keys(struct ld *l, const json_t *obj, const struct jpos *j,
		      const char *path, const char *const *known, size_t n)
{
	char f[256], q[160];
	size_t i, k;

	if (!j || !j->object || json_object_size(obj) > j->n_kids)
		return fail(l, -EINVAL, jpos_line(j, 1), path[0] ? path : "top level",
			    "cannot place fields (malformed text)");
	for (i = 0; i < j->n_kids; i++) {
		const struct jpos *kid = &j->kids[i];

		/* plain names print as they are (proxy.workers), others quoted */
		if (*kid->key && strlen(kid->key) <= 64 &&
		    strspn(kid->key, "abcdefghijklmnopqrstuvwxyz"
			   "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.$") == strlen(kid->key))
			field_path(f, sizeof(f), path, kid->key);
		else
			field_path(f, sizeof(f), path, jpos_quote(kid->key, q, sizeof(q)));
		if (!json_object_get(obj, kid->key))
			return fail(l, -EINVAL, kid->key_line, f, "cannot place field (malformed text)");
		for (k = 0; k < i; k++)
			if (!strcmp(j->kids[k].key, kid->key))
				return fail(l, -EINVAL, kid->key_line, f,
					    "duplicate field (first on line %d)",
					    j->kids[k].key_line);
		if (!known)
			continue;
		for (k = 0; k < n; k++)
			if (!strcmp(kid->key, known[k]))
				break;
		if (k < n)
			continue;
		{
			const char *s = jpos_suggest(kid->key, known, n);
			char list[256] = "";
			size_t o = 0;

			if (s)
				return fail(l, -EINVAL, kid->key_line, f,
					    "unknown field (did you mean \"%s\"?)", s);
			for (k = 0; k < n && o < sizeof(list); k++)
				o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s",
						      k ? ", " : "", known[k]);
			return fail(l, -EINVAL, kid->key_line, f,
				    "unknown field (expected %s)", list);
		}
	}
	return 0;
}

static int want_type(struct ld *l, const json_t *v, const struct jpos *j,
		     const char *field, json_type type, const char *what)
{
	if (json_typeof(v) == type)
		return 0;
	return fail(l, -EINVAL, jpos_line(j, 1), field, "expected %s, got %s",
		    what, jpos_json_type(v));
}

static int get_uint(struct ld *l, const json_t *obj, const struct jpos *j,
		    const char *parent, const char *key, unsigned min, unsigned max,
		    unsigned *out)
{
	const json_t *v = json_object_get(obj, key);
	const struct jpos *vj = jpos_key(j, key);
	char f[128];
	long long x;

	if (!v)
		return 0;
	field_path(f, sizeof(f), parent, key);
	if (json_is_real(v))
		return fail(l, -EINVAL, jpos_line(vj, 1), f,
			    "expected an integer, got %g", json_real_value(v));
	if (!json_is_integer(v))
		return fail(l, -EINVAL, jpos_line(vj, 1), f,
			    "expected an integer, got %s", jpos_json_type(v));
	x = json_integer_value(v);
	if (x < (long long)min || x > (long long)max)
		return fail(l, -ERANGE, jpos_line(vj, 1), f,
			    "%lld is out of range (%u-%u)", x, min, max);
	*out = (unsigned)x;
	return 0;
}

/* String member (absent: *out untouched). Copies into *out. */
static int get_str(struct ld *l, const json_t *obj, const struct jpos *j,
		   const char *parent, const char *key, bool nullable, char **out,
		   const struct jpos **pos)
{
	const json_t *v = json_object_get(obj, key);
	char f[128], *s;

	*pos = jpos_key(j, key);
	if (!v)
		return 0;
	field_path(f, sizeof(f), parent, key);
	if (nullable && json_is_null(v)) {
		free(*out);
		*out = NULL;
		return 1;
	}
	if (!json_is_string(v))
		return fail(l, -EINVAL, jpos_line(*pos, 1), f,
			    "expected a string%s, got %s", nullable ? " or null" : "",
			    jpos_json_type(v));
	if (strlen(json_string_value(v)) != json_string_length(v))
		return fail(l, -EINVAL, jpos_line(*pos, 1), f, "contains a NUL byte");
	s = strdup(json_string_value(v));
	if (!s)
		return nomem(l);
	free(*out);
	*out = s;
	return 1;
}

static bool has_ctl(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

/* "IP:PORT" or "[IPv6]:PORT"; with port_optional, "IP" alone too. */
static const char *parse_hostport(const char *s, bool port_optional, struct egr_addr *a,
				  uint16_t *port)
{
	char host[64];
	const char *ps = NULL;
	size_t hl;
	unsigned long v;
	char *end;

	if (s[0] == '[') {
		const char *close = strchr(s, ']');

		if (!close)
			return "missing \"]\"";
		hl = (size_t)(close - s - 1);
		if (hl >= sizeof(host))
			return "invalid IPv6 address";
		memcpy(host, s + 1, hl);
		host[hl] = '\0';
		if (!strchr(host, ':') || addr_parse(host, a))
			return "invalid IPv6 address";
		if (close[1] == ':')
			ps = close + 2;
		else if (close[1])
			return "unexpected text after \"]\"";
	} else {
		const char *colon = strchr(s, ':');

		if (colon && strchr(colon + 1, ':')) {
			if (!port_optional || addr_parse(s, a))
				return "an IPv6 address needs brackets: [2001:db8::1]:53";
			*port = 0;
			return NULL;
		}
		hl = colon ? (size_t)(colon - s) : strlen(s);
		if (hl >= sizeof(host))
			return "invalid IPv4 address";
		memcpy(host, s, hl);
		host[hl] = '\0';
		if (addr_parse(host, a) || strchr(host, ':'))
			return "invalid IP address (a literal address is required, not a name)";
		if (colon)
			ps = colon + 1;
	}
	if (!ps) {
		if (!port_optional)
			return "missing \":PORT\"";
		*port = 0;
		return NULL;
	}
	if (!isdigit((unsigned char)ps[0]) || (ps[0] == '0' && ps[1]))
		return "invalid port (1-65535)";
	errno = 0;
	v = strtoul(ps, &end, 10);
	if (*end || errno || v < 1 || v > 65535)
		return "invalid port (1-65535)";
	*port = (uint16_t)v;
	return NULL;
}

static int load_listen(struct ld *l, const json_t *obj, const struct jpos *j)
{
	static const char *const known[] = { "control", "metrics" };
	const struct jpos *vj;
	struct dconfig *c = l->c;
	char q[160];
	int r;

	if ((r = want_type(l, obj, j, "listen", JSON_OBJECT, "an object")) ||
	    (r = check_keys(l, obj, j, "listen", known, ARRAY_SIZE(known))))
		return r;
	r = get_str(l, obj, j, "listen", "control", false, &c->control_socket, &vj);
	if (r < 0)
		return r;
	if (r) {
		const char *s = c->control_socket;

		if (s[0] != '/')
			return fail(l, -EINVAL, vj->line, "listen.control",
				    "%s: must be an absolute path", jpos_quote(s, q, sizeof(q)));
		if (strlen(s) >= sizeof(((struct sockaddr_un *)0)->sun_path))
			return fail(l, -EINVAL, vj->line, "listen.control",
				    "longer than %zu bytes (the limit of a Unix socket path)",
				    sizeof(((struct sockaddr_un *)0)->sun_path) - 1);
		if (has_ctl(s))
			return fail(l, -EINVAL, vj->line, "listen.control", "control character");
	}
	r = get_str(l, obj, j, "listen", "metrics", true, &c->metrics, &vj);
	if (r < 0)
		return r;
	if (r && c->metrics) {
		const char *s = c->metrics, *why;
		char a[64];

		c->metrics_unix = s[0] == '/';
		if (c->metrics_unix) {
			if (strlen(s) >= sizeof(((struct sockaddr_un *)0)->sun_path) || has_ctl(s))
				return fail(l, -EINVAL, vj->line, "listen.metrics",
					    "%s: invalid Unix socket path",
					    jpos_quote(s, q, sizeof(q)));
			return 0;
		}
		why = parse_hostport(s, false, &c->metrics_addr, &c->metrics_port);
		if (why)
			return fail(l, -EINVAL, vj->line, "listen.metrics",
				    "%s: %s (write ADDRESS:PORT or an absolute Unix socket path)",
				    jpos_quote(s, q, sizeof(q)), why);
		if (addr_classify(&c->metrics_addr) != ADDR_LOOPBACK)
			return warn(l, vj->line, "listen.metrics",
				    "%s is not a loopback address: metrics are reachable from other hosts",
				    addr_to_str(&c->metrics_addr, a, sizeof(a)));
	}
	return 0;
}

static int load_audit(struct ld *l, const json_t *obj, const struct jpos *j)
{
	static const char *const known[] = { "path", "format" };
	const struct jpos *vj;
	struct dconfig *c = l->c;
	char *fmt = NULL, q[160];
	int r;

	if ((r = want_type(l, obj, j, "audit", JSON_OBJECT, "an object")) ||
	    (r = check_keys(l, obj, j, "audit", known, ARRAY_SIZE(known))))
		return r;
	r = get_str(l, obj, j, "audit", "path", true, &c->audit_path, &vj);
	if (r < 0)
		return r;
	if (r && c->audit_path) {
		if (!strcmp(c->audit_path, "-")) {
			free(c->audit_path);
			c->audit_path = NULL;
		} else if (c->audit_path[0] != '/' || has_ctl(c->audit_path)) {
			return fail(l, -EINVAL, vj->line, "audit.path",
				    "%s: must be an absolute path, or \"-\" for stdout",
				    jpos_quote(c->audit_path, q, sizeof(q)));
		}
	}
	r = get_str(l, obj, j, "audit", "format", false, &fmt, &vj);
	if (r < 0)
		return r;
	if (r) {
		if (!strcmp(fmt, "json")) {
			c->audit_format = AUDIT_JSON;
		} else if (!strcmp(fmt, "text")) {
			c->audit_format = AUDIT_TEXT;
		} else {
			r = fail(l, -EINVAL, vj->line, "audit.format",
				 "%s: must be \"json\" or \"text\"", jpos_quote(fmt, q, sizeof(q)));
			free(fmt);
			return r;
		}
	}
	free(fmt);
	return 0;
}

static int load_dns(struct ld *l, const json_t *obj, const struct jpos *j)
{
	static const char *const known[] = { "upstream" };
	const json_t *up, *v;
	const struct jpos *uj;
	char csv[DCONFIG_MAX_DNS * 56] = "", q[160], f[64], a[64];
	size_t i, n, o = 0;
	int r;

	if ((r = want_type(l, obj, j, "dns", JSON_OBJECT, "an object")) ||
	    (r = check_keys(l, obj, j, "dns", known, ARRAY_SIZE(known))))
		return r;
	up = json_object_get(obj, "upstream");
	uj = jpos_key(j, "upstream");
	if (!up || json_is_null(up))
		return 0;
	if (!json_is_string(up) && !json_is_array(up))
		return fail(l, -EINVAL, jpos_line(uj, 1), "dns.upstream",
			    "expected an address or an array of addresses, got %s",
			    jpos_json_type(up));
	n = json_is_array(up) ? json_array_size(up) : 1;
	if (!n)
		return fail(l, -EINVAL, jpos_line(uj, 1), "dns.upstream",
			    "empty list (leave dns.upstream out to use /etc/resolv.conf)");
	if (n > DCONFIG_MAX_DNS)
		return fail(l, -EINVAL, jpos_line(uj, 1), "dns.upstream",
			    "more than %d servers", DCONFIG_MAX_DNS);
	for (i = 0; i < n; i++) {
		const struct jpos *ej = json_is_array(up) ? jpos_idx(uj, i) : uj;
		struct egr_addr ad;
		uint16_t port;
		const char *why;

		v = json_is_array(up) ? json_array_get(up, i) : up;
		if (json_is_array(up))
			snprintf(f, sizeof(f), "dns.upstream[%zu]", i);
		else
			snprintf(f, sizeof(f), "dns.upstream");
		if (!json_is_string(v))
			return fail(l, -EINVAL, jpos_line(ej, 1), f,
				    "expected an address string, got %s", jpos_json_type(v));
		why = parse_hostport(json_string_value(v), true, &ad, &port);
		if (why)
			return fail(l, -EINVAL, jpos_line(ej, 1), f, "%s: %s",
				    jpos_quote(json_string_value(v), q, sizeof(q)), why);
		addr_to_str(&ad, a, sizeof(a));
		/* c-ares's csv form; brackets only where a port follows */
		if (addr_is_v4(&ad))
			o += (size_t)snprintf(csv + o, sizeof(csv) - o, "%s%s:%u", i ? "," : "",
					      a, port ? (unsigned)port : 53u);
		else
			o += (size_t)snprintf(csv + o, sizeof(csv) - o, "%s[%s]:%u", i ? "," : "",
					      a, port ? (unsigned)port : 53u);
	}
	l->c->dns_servers = strdup(csv);
	return l->c->dns_servers ? 0 : nomem(l);
}

static int load_proxy(struct ld *l, const json_t *obj, const struct jpos *j)
{
	static const char *const known[] = {
		"workers", "peek_timeout_ms", "connect_timeout_ms", "resolve_timeout_ms",
		"idle_timeout_ms", "kernel_relay_after", "max_conns_per_cgroup", "max_conns",
	};
	struct dconfig *c = l->c;
	int r;

	if ((r = want_type(l, obj, j, "proxy", JSON_OBJECT, "an object")) ||
	    (r = check_keys(l, obj, j, "proxy", known, ARRAY_SIZE(known))) ||
	    (r = get_uint(l, obj, j, "proxy", "workers", 0, 256, &c->workers)) ||
	    (r = get_uint(l, obj, j, "proxy", "peek_timeout_ms", 100, 600000,
			  &c->peek_timeout_ms)) ||
	    (r = get_uint(l, obj, j, "proxy", "connect_timeout_ms", 100, 600000,
			  &c->connect_timeout_ms)) ||
	    (r = get_uint(l, obj, j, "proxy", "resolve_timeout_ms", 100, 600000,
			  &c->resolve_timeout_ms)) ||
	    (r = get_uint(l, obj, j, "proxy", "idle_timeout_ms", 1000, 86400000,
			  &c->idle_timeout_ms)) ||
	    (r = get_uint(l, obj, j, "proxy", "kernel_relay_after", 0, 1073741824,
			  &c->kernel_relay_after)) ||
	    (r = get_uint(l, obj, j, "proxy", "max_conns_per_cgroup", 1, 1000000,
			  &c->max_conns_per_cgroup)) ||
	    (r = get_uint(l, obj, j, "proxy", "max_conns", 1, 10000000, &c->max_conns)))
		return r;
	if (c->max_conns_per_cgroup > c->max_conns) {
		const struct jpos *vj = jpos_key(j, "max_conns_per_cgroup");

		if (!vj)
			vj = jpos_key(j, "max_conns");
		return fail(l, -EINVAL, jpos_line(vj, j->line),
			    "proxy.max_conns_per_cgroup",
			    "%u is more than proxy.max_conns (%u)", c->max_conns_per_cgroup,
			    c->max_conns);
	}
	return 0;
}

static bool policy_name_ok(const char *s)
{
	size_t i, len = strlen(s);

	if (!len || len > POLICY_NAME_MAX)
		return false;
	for (i = 0; i < len; i++)
		if (!(isalnum((unsigned char)s[i]) || strchr("._-", s[i])))
			return false;
	return true;
}

/* Absolute path of a reference, relative ones against the config's dir. */
static char *resolve_ref(struct ld *l, const char *ref)
{
	char *out;

	if (ref[0] == '/')
		return strdup(ref);
	if (asprintf(&out, "%s/%s", l->dir, ref) < 0)
		return NULL;
	return out;
}

/*
 * A referenced file must be a regular file: checked here so that the error
 * points at the reference, and so that a FIFO or device never blocks or
 * floods the loader.
 */
#define DCONFIG_TRUST_FIX "the daemon enforces what it says, so only root may " \
	"change it: keep it root-owned, not writable by group or others, under " \
	"directories only root can change (e.g. /etc/egressd)"

/*
 * A file the daemon reads its policy from (the config, a policy file, a
 * sandbox-runtime settings file): whoever can change it, or a directory on
 * the way, decides what every enforced cgroup may reach at the next
 * reload; an agent that can write it widens its own policy. So it must be
 * root's and not writable by group or others, in directories that are
 * the same (safepath_parents_trusted). 0, or -errno with why filled.
 */
int dconfig_file_trusted(const char *path, const struct stat *st, char *why, size_t whylen)
{
	if (st->st_uid != 0 && st->st_uid != geteuid()) {
		snprintf(why, whylen, "owned by uid %u; %s", (unsigned)st->st_uid,
			 DCONFIG_TRUST_FIX);
		return -EPERM;
	}
	if (st->st_mode & 022) {
		snprintf(why, whylen, "writable by group or others (mode %04o); %s",
			 (unsigned)(st->st_mode & 07777), DCONFIG_TRUST_FIX);
		return -EPERM;
	}
	return safepath_file_trusted(path, DCONFIG_TRUST_FIX, why, whylen);
}

static int check_ref(struct ld *l, const char *path, int line, const char *field)
{
	struct stat st;
	char q[160], why[512];
	int r;

	if (stat(path, &st))
		return fail(l, -errno, line, field, "%s: %s", jpos_quote(path, q, sizeof(q)),
			    strerror(errno));
	if (!S_ISREG(st.st_mode))
		return fail(l, -EINVAL, line, field, "%s: not a regular file",
			    jpos_quote(path, q, sizeof(q)));
	r = dconfig_file_trusted(path, &st, why, sizeof(why));
	if (r)
		return fail(l, r, line, field, "%s: %s", jpos_quote(path, q, sizeof(q)), why);
	return 0;
}

/*
 * Inline policy: hand the object's own text to policy_load_buffer(), after
 * as many newlines as precede it, so that policy.c's messages carry the
 * config's file name and real line numbers; only the field needs the
 * "policies.NAME." prefix.
 */
static int load_inline(struct ld *l, struct policy *p, const char *name,
		       const struct jpos *pj)
{
	char perr[512], *buf;
	size_t pad = (size_t)(pj->line - 1), n = pj->end - pj->start, fl = strlen(l->file);
	int r;

	buf = malloc(pad + n + 1);
	if (!buf)
		return nomem(l);
	memset(buf, '\n', pad);
	memcpy(buf + pad, l->buf + pj->start, n);
	perr[0] = '\0';
	r = policy_load_buffer(p, l->file, buf, pad + n, perr, sizeof(perr));
	free(buf);
	if (!r)
		return 0;
	if (l->err && l->errlen) {
		const char *rest = perr + fl;

		if (!strncmp(perr, l->file, fl) && rest[0] == ':' && isdigit((unsigned char)rest[1])) {
			size_t d = 1 + strspn(rest + 1, "0123456789");

			if (!strncmp(rest + d, ": ", 2)) {
				snprintf(l->err, l->errlen, "%s%.*s: policies.%s.%s", l->file,
					 (int)d, rest, name, rest + d + 2);
				return r;
			}
		}
		if (!strncmp(perr, l->file, fl) && !strncmp(rest, ": ", 2))
			rest += 2;
		else
			rest = perr;
		snprintf(l->err, l->errlen, "%s:%d: policies.%s: %s", l->file, pj->line, name, rest);
	}
	return r;
}

static int set_mode(struct ld *l, struct policy *p, const json_t *v,
		    const struct jpos *vj, const char *name)
{
	char f[128], q[160];

	snprintf(f, sizeof(f), "policies.%s.mode", name);
	if (!json_is_string(v))
		return fail(l, -EINVAL, jpos_line(vj, 1), f, "expected a string, got %s",
			    jpos_json_type(v));
	if (!strcmp(json_string_value(v), "enforce"))
		p->mode = POLICY_ENFORCE;
	else if (!strcmp(json_string_value(v), "audit"))
		p->mode = POLICY_AUDIT;
	else
		return fail(l, -EINVAL, jpos_line(vj, 1), f,
			    "%s: must be \"enforce\" or \"audit\"",
			    jpos_quote(json_string_value(v), q, sizeof(q)));
	return 0;
}

static int load_policy(struct ld *l, const char *name, const json_t *obj,
		       const struct jpos *j, struct dconfig_policy *dp)
{
	/* inline: what a policy file holds (docs/policy.md) */
	static const char *const known[] = { "mode", "inbound", "allow", "deny", "intercept",
					     "gateways", "upstream_ca", "file", "sandbox_runtime",
					     "deny_countries" };
	static const char *const inline_only[] = { "inbound", "allow", "deny", "intercept",
						   "gateways", "upstream_ca", "deny_countries" };
	const json_t *file = json_object_get(obj, "file");
	const json_t *srt = json_object_get(obj, "sandbox_runtime");
	const json_t *ref = file ? file : srt;
	const char *refkey = file ? "file" : "sandbox_runtime";
	const struct jpos *rj;
	char path[128], f[160], perr[512];
	int r;

	snprintf(path, sizeof(path), "policies.%s", name);
	dp->line = j->key_line;
	dp->name = strdup(name);
	dp->policy = policy_new(name);
	if (!dp->name || !dp->policy)
		return nomem(l);
	if ((r = want_type(l, obj, j, path, JSON_OBJECT, "an object")))
		return r;
	if (json_object_get(obj, "name") && jpos_key(j, "name")) {
		snprintf(f, sizeof(f), "%s.name", path);
		return fail(l, -EINVAL, jpos_key(j, "name")->key_line, f,
			    "not needed: the policy is named by its key in \"policies\"");
	}
	if ((r = check_keys(l, obj, j, path, known, ARRAY_SIZE(known))))
		return r;
	if (file && srt)
		return fail(l, -EINVAL, jpos_key(j, "sandbox_runtime")->key_line, path,
			    "\"file\" and \"sandbox_runtime\" are alternatives; give one");
	if (!ref) {
		dp->kind = DCONFIG_SRC_INLINE;
		r = load_inline(l, dp->policy, name, j);
		if (r)
			return r;
		/* a policy named by the config, whatever policy.c defaulted */
		free(dp->policy->name);
		dp->policy->name = strdup(name);
		return dp->policy->name ? 0 : nomem(l);
	}
	rj = jpos_key(j, refkey);
	snprintf(f, sizeof(f), "policies.%s.%s", name, refkey);
	{
		const char *k = NULL;

		for (size_t i = 0; i < ARRAY_SIZE(inline_only) && !k; i++)
			if (json_object_get(obj, inline_only[i]))
				k = inline_only[i];
		if (k)
			return fail(l, -EINVAL, jpos_key(j, k)->key_line, path,
				    "\"%s\" cannot be combined with \"%s\"; put the rules in that file",
				    k, refkey);
	}
	if (!json_is_string(ref) || !json_string_value(ref)[0])
		return fail(l, -EINVAL, jpos_line(rj, 1), f,
			    "expected a file path, got %s",
			    json_is_string(ref) ? "an empty string" : jpos_json_type(ref));
	if (strlen(json_string_value(ref)) != json_string_length(ref))
		return fail(l, -EINVAL, jpos_line(rj, 1), f, "contains a NUL byte");
	dp->file = resolve_ref(l, json_string_value(ref));
	if (!dp->file)
		return nomem(l);
	r = check_ref(l, dp->file, jpos_line(rj, 1), f);
	if (r)
		return r;
	dp->kind = file ? DCONFIG_SRC_FILE : DCONFIG_SRC_SRT;
	perr[0] = '\0';
	if (file)
		r = policy_load_file(dp->policy, dp->file, perr, sizeof(perr));
	else
		r = srt_load_file(dp->policy, dp->file, perr, sizeof(perr));
	if (r) {
		/* the referenced file's own FILE:LINE, then where it was named */
		if (l->err && l->errlen)
			snprintf(l->err, l->errlen, "%s (%s in %s:%d)", perr, path, l->file,
				 jpos_line(rj, 1));
		return r;
	}
	free(dp->policy->name);
	dp->policy->name = strdup(name);
	if (!dp->policy->name)
		return nomem(l);
	if (json_object_get(obj, "mode"))
		return set_mode(l, dp->policy, json_object_get(obj, "mode"),
				jpos_key(j, "mode"), name);
	return 0;
}

static int load_policies(struct ld *l, const json_t *obj, const struct jpos *j)
{
	struct dconfig *c = l->c;
	char q[160];
	size_t i;
	int r;

	if ((r = want_type(l, obj, j, "policies", JSON_OBJECT, "an object")))
		return r;
	if (json_object_size(obj) > DCONFIG_MAX_POLICIES)
		return fail(l, -E2BIG, j->line, "policies", "more than %d policies",
			    DCONFIG_MAX_POLICIES);
	/* names first, so that a duplicate is reported as such */
	for (i = 0; i < j->n_kids; i++) {
		const char *name = j->kids[i].key;

		if (!policy_name_ok(name))
			return fail(l, -EINVAL, j->kids[i].key_line, "policies",
				    "%s: a policy name is 1-%d characters of A-Z a-z 0-9 . _ -",
				    jpos_quote(name, q, sizeof(q)), POLICY_NAME_MAX);
	}
	for (i = 0; i < j->n_kids; i++) {
		size_t k;

		for (k = 0; k < i; k++)
			if (!strcmp(j->kids[k].key, j->kids[i].key))
				return fail(l, -EINVAL, j->kids[i].key_line, "policies",
					    "duplicate policy name \"%s\" (first defined on line %d)",
					    j->kids[i].key, j->kids[k].key_line);
	}
	if ((r = check_keys(l, obj, j, "policies", NULL, 0)))
		return r;
	c->policies = calloc(j->n_kids ? j->n_kids : 1, sizeof(*c->policies));
	if (!c->policies)
		return nomem(l);
	for (i = 0; i < j->n_kids; i++) {
		const char *name = j->kids[i].key;

		r = load_policy(l, name, json_object_get(obj, name), &j->kids[i],
				&c->policies[c->n_policies++]);
		if (r)
			return r;
	}
	return 0;
}

const struct dconfig_policy *dconfig_policy(const struct dconfig *c, const char *name)
{
	size_t i;

	if (!c || !name)
		return NULL;
	for (i = 0; i < c->n_policies; i++)
		if (!strcmp(c->policies[i].name, name))
			return &c->policies[i];
	return NULL;
}

static int load_binding(struct ld *l, size_t idx, const json_t *obj,
			const struct jpos *j, struct dconfig_binding *b)
{
	static const char *const known[] = { "cgroup", "policy" };
	const json_t *cg = json_object_get(obj, "cgroup"), *pol = json_object_get(obj, "policy");
	const struct jpos *cj = jpos_key(j, "cgroup");
	const struct jpos *pj = jpos_key(j, "policy");
	struct dconfig_policy *dp = NULL;
	char path[48], f[64], q[160];
	const char *why;
	size_t i;
	int r;

	snprintf(path, sizeof(path), "bindings[%zu]", idx);
	b->index = idx;
	b->line = jpos_line(j, 1);
	if ((r = want_type(l, obj, j, path, JSON_OBJECT, "an object")) ||
	    (r = check_keys(l, obj, j, path, known, ARRAY_SIZE(known))))
		return r;
	if (!cg || !pol)
		return fail(l, -EINVAL, b->line, path, "missing field \"%s\"",
			    cg ? "policy" : "cgroup");
	snprintf(f, sizeof(f), "%s.cgroup", path);
	if (!json_is_string(cg))
		return fail(l, -EINVAL, cj->line, f, "expected a path glob, got %s",
			    jpos_json_type(cg));
	why = strlen(json_string_value(cg)) != json_string_length(cg) ? "contains a NUL byte" :
	      dconfig_glob_check(json_string_value(cg));
	if (why)
		return fail(l, -EINVAL, cj->line, f, "%s: %s",
			    jpos_quote(json_string_value(cg), q, sizeof(q)), why);
	for (i = 0; i < idx; i++)
		if (!strcmp(l->c->bindings[i].cgroup, json_string_value(cg)))
			return fail(l, -EINVAL, cj->line, f,
				    "%s is already bound on line %d (to \"%s\")",
				    jpos_quote(json_string_value(cg), q, sizeof(q)),
				    l->c->bindings[i].line, l->c->bindings[i].policy->name);
	b->cgroup = strdup(json_string_value(cg));
	if (!b->cgroup)
		return nomem(l);
	glob_rank(b);

	snprintf(f, sizeof(f), "%s.policy", path);
	if (!json_is_string(pol))
		return fail(l, -EINVAL, pj->line, f, "expected a policy name, got %s",
			    jpos_json_type(pol));
	for (i = 0; i < l->c->n_policies; i++)
		if (!strcmp(l->c->policies[i].name, json_string_value(pol)))
			dp = &l->c->policies[i];
	if (!dp) {
		const char **names = calloc(l->c->n_policies + 1, sizeof(*names));
		const char *s;

		if (!names)
			return nomem(l);
		for (i = 0; i < l->c->n_policies; i++)
			names[i] = l->c->policies[i].name;
		s = jpos_suggest(json_string_value(pol), names, l->c->n_policies);
		if (s)
			r = fail(l, -EINVAL, pj->line, f, "unknown policy %s (did you mean \"%s\"?)",
				 jpos_quote(json_string_value(pol), q, sizeof(q)), s);
		else if (!l->c->n_policies)
			r = fail(l, -EINVAL, pj->line, f,
				 "unknown policy %s (no policies are defined)",
				 jpos_quote(json_string_value(pol), q, sizeof(q)));
		else
			r = fail(l, -EINVAL, pj->line, f, "unknown policy %s",
				 jpos_quote(json_string_value(pol), q, sizeof(q)));
		free(names);
		return r;
	}
	dp->used = true;
	b->policy = dp;
	return 0;
}

static int load_bindings(struct ld *l, const json_t *arr, const struct jpos *j)
{
	struct dconfig *c = l->c;
	size_t i, n;
	int r;

	if ((r = want_type(l, arr, j, "bindings", JSON_ARRAY, "an array")))
		return r;
	n = json_array_size(arr);
	if (n > DCONFIG_MAX_BINDINGS)
		return fail(l, -E2BIG, j->line, "bindings", "more than %d bindings",
			    DCONFIG_MAX_BINDINGS);
	if (!j->array || j->n_kids != n)
		return fail(l, -EINVAL, j->line, "bindings", "cannot place elements (malformed text)");
	c->bindings = calloc(n ? n : 1, sizeof(*c->bindings));
	if (!c->bindings)
		return nomem(l);
	for (i = 0; i < n; i++) {
		r = load_binding(l, i, json_array_get(arr, i), &j->kids[i], &c->bindings[i]);
		c->n_bindings = i + 1;
		if (r)
			return r;
	}
	return 0;
}

/* strcmp with '/' lowest, so that a path's descendants sort right after
 * it ("/a", "/a/b", "/a-b") and not after its siblings. */
static int path_cmp(const void *pa, const void *pb)
{
	const unsigned char *a = *(const unsigned char *const *)pa;
	const unsigned char *b = *(const unsigned char *const *)pb;

	for (; *a && *a == *b; a++, b++)
		;
	if (*a == *b)
		return 0;
	if (!*a || !*b)
		return *a ? 1 : -1;
	if (*a == '/' || *b == '/')
		return *a == '/' ? -1 : 1;
	return *a < *b ? -1 : 1;
}

/* "/a/b" lies at or below "/a". */
static bool path_under(const char *p, const char *parent)
{
	size_t n = strlen(parent);

	return !strncmp(p, parent, n) && (p[n] == '/' || !p[n]);
}

static int build_attach_points(struct ld *l)
{
	struct dconfig *c = l->c;
	size_t i, k, n = 0;
	char **v;

	v = calloc(c->n_bindings ? c->n_bindings : 1, sizeof(*v));
	if (!v)
		return nomem(l);
	c->attach_points = v;
	for (i = 0; i < c->n_bindings; i++) {
		const char *g = c->bindings[i].cgroup, *p = g;
		size_t len = 0;
		struct comp cp;

		/* up to (not including) the first component with a '*' */
		while (next_comp(&p, &cp) && !memchr(cp.s, '*', cp.n))
			len = (size_t)(cp.s + cp.n - g);
		v[n] = strndup(g, len);
		if (!v[n])
			return nomem(l);
		c->n_attach_points = ++n;
	}
	qsort(v, n, sizeof(*v), path_cmp);
	/* Sorted, an ancestor comes right before its descendants (and a
	 * duplicate right after itself), so one pass keeps the topmost. */
	for (i = 0, k = 0; i < n; i++) {
		if (k && path_under(v[i], v[k - 1])) {
			free(v[i]);
			continue;
		}
		v[k++] = v[i];
	}
	c->n_attach_points = k;
	return 0;
}

const char *const *dconfig_attach_points(const struct dconfig *c, size_t *n)
{
	if (!c) {
		*n = 0;
		return NULL;
	}
	*n = c->n_attach_points;
	return (const char *const *)c->attach_points;
}

void dconfig_free(struct dconfig *c)
{
	size_t i;

	if (!c)
		return;
	for (i = 0; i < c->n_policies; i++) {
		free(c->policies[i].name);
		free(c->policies[i].file);
		policy_free(c->policies[i].policy);
	}
	free(c->policies);
	for (i = 0; i < c->n_bindings; i++)
		free(c->bindings[i].cgroup);
	free(c->bindings);
	for (i = 0; i < c->n_attach_points; i++)
		free(c->attach_points[i]);
	free(c->attach_points);
	for (i = 0; i < c->n_warnings; i++)
		free(c->warnings[i]);
	free(c->warnings);
	free(c->path);
	free(c->control_socket);
	free(c->metrics);
	free(c->audit_path);
	free(c->dns_servers);
	free(c->ca_dir);
	free(c->ca_cert);
	free(c->ca_key);
	free(c->upstream_ca);
	free(c->geoip_country);
	free(c->geoip_asn);
	geo_close(c->geo);
	free(c);
}

bool dconfig_intercepts(const struct dconfig *c)
{
	for (size_t i = 0; c && i < c->n_policies; i++)
		if (c->policies[i].policy->n_intercept)
			return true;
	return false;
}

bool dconfig_needs_engine(const struct dconfig *c)
{
	for (size_t i = 0; c && i < c->n_policies; i++)
		if (c->policies[i].policy->n_intercept || c->policies[i].policy->n_gateways)
			return true;
	return false;
}

void dconfig_apply(const struct dconfig *c, struct config *cfg)
{
	cfg->workers = c->workers;
	cfg->peek_timeout_ms = c->peek_timeout_ms;
	cfg->connect_timeout_ms = c->connect_timeout_ms;
	cfg->resolve_timeout_ms = c->resolve_timeout_ms;
	cfg->idle_timeout_ms = c->idle_timeout_ms;
	cfg->kernel_relay_after = c->kernel_relay_after;
	cfg->max_conns_per_cgroup = c->max_conns_per_cgroup;
	cfg->max_conns = c->max_conns;
	cfg->dns_servers = c->dns_servers;
	cfg->audit.path = c->audit_path;
	cfg->audit.format = c->audit_format;
	/* a daemon's denials go to the audit sink, not to a terminal */
	cfg->audit.denials_to_stderr = false;
}

static struct dconfig *dconfig_new(const char *name)
{
	static const struct config defaults = CONFIG_DEFAULTS;
	struct dconfig *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->path = strdup(name);
	c->control_socket = strdup(DCONFIG_DEFAULT_CONTROL);
	c->metrics = strdup(DCONFIG_DEFAULT_METRICS);
	if (!c->path || !c->control_socket || !c->metrics) {
		dconfig_free(c);
		return NULL;
	}
	parse_hostport(c->metrics, false, &c->metrics_addr, &c->metrics_port);
	c->audit_format = AUDIT_JSON;
	c->workers = defaults.workers;
	c->peek_timeout_ms = defaults.peek_timeout_ms;
	c->connect_timeout_ms = defaults.connect_timeout_ms;
	c->resolve_timeout_ms = defaults.resolve_timeout_ms;
	c->idle_timeout_ms = defaults.idle_timeout_ms;
	c->kernel_relay_after = defaults.kernel_relay_after;
	c->max_conns_per_cgroup = defaults.max_conns_per_cgroup;
	c->max_conns = defaults.max_conns;
	return c;
}

/* An absolute path to a regular file or (dir) a directory. */
static int get_path(struct ld *l, const json_t *obj, const struct jpos *j,
		    const char *parent, const char *key, bool dir, char **out)
{
	const struct jpos *vj;
	char f[64], q[160];
	struct stat st;
	int r;

	r = get_str(l, obj, j, parent, key, false, out, &vj);
	if (r <= 0)
		return r;
	snprintf(f, sizeof(f), "%s%s%s", parent, *parent ? "." : "", key);
	if ((*out)[0] != '/' || has_ctl(*out))
		return fail(l, -EINVAL, jpos_line(vj, 1), f, "%s: must be an absolute path",
			    jpos_quote(*out, q, sizeof(q)));
	if (stat(*out, &st))
		return fail(l, -errno, jpos_line(vj, 1), f, "%s: %s",
			    jpos_quote(*out, q, sizeof(q)), strerror(errno));
	if (dir ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode))
		return fail(l, -EINVAL, jpos_line(vj, 1), f, "%s: not a %s",
			    jpos_quote(*out, q, sizeof(q)), dir ? "directory" : "regular file");
	return 0;
}

/* "ca": {"dir": DIR} or {"cert": FILE, "key": FILE}. The files themselves
 * (permissions, key matching the certificate) are checked by the daemon
 * when it loads them (ca.h), with this line. */
static int load_ca(struct ld *l, const json_t *obj, const struct jpos *j)
{
	static const char *const known[] = { "dir", "cert", "key" };
	struct dconfig *c = l->c;
	int r;

	if ((r = want_type(l, obj, j, "ca", JSON_OBJECT, "an object")) ||
	    (r = check_keys(l, obj, j, "ca", known, ARRAY_SIZE(known))) ||
	    (r = get_path(l, obj, j, "ca", "dir", true, &c->ca_dir)) ||
	    (r = get_path(l, obj, j, "ca", "cert", false, &c->ca_cert)) ||
	    (r = get_path(l, obj, j, "ca", "key", false, &c->ca_key)))
		return r;
	c->ca_line = jpos_line(j, 1);
	if (c->ca_dir && (c->ca_cert || c->ca_key))
		return fail(l, -EINVAL, c->ca_line, "ca",
			    "give either \"dir\" or \"cert\" and \"key\", not both");
	if (!c->ca_dir && (!c->ca_cert || !c->ca_key))
		return fail(l, -EINVAL, c->ca_line, "ca",
			    "needs \"dir\" (made by egressctl ca init --dir DIR) or both "
			    "\"cert\" and \"key\"");
	return 0;
}

/*
 * Interception across policies: an intercepting policy needs the CA (no
 * engine can mint leaves without it: refused here, never a 502 at run
 * time); the daemon's upstream_ca becomes the trust store of every policy
 * that names none.
 */
static int check_intercept(struct ld *l)
{
	struct dconfig *c = l->c;
	size_t i;

	for (i = 0; i < c->n_policies; i++) {
		struct dconfig_policy *dp = &c->policies[i];
		char f[128];

		if (dp->policy->n_intercept && !c->ca_dir && !c->ca_cert) {
			snprintf(f, sizeof(f), "policies.%s", dp->name);
			return fail(l, -EINVAL, dp->line, f,
				    "intercepts %s but the daemon has no CA: add \"ca\": "
				    "{\"dir\": \"/etc/egressd/ca\"} (made by egressctl ca init)",
				    dp->policy->intercept[0].pattern);
		}
		if (c->upstream_ca && !dp->policy->upstream_ca &&
		    (dp->policy->n_intercept || dp->policy->n_gateways)) {
			dp->policy->upstream_ca = strdup(c->upstream_ca);
			if (!dp->policy->upstream_ca)
				return nomem(l);
		}
	}
	return 0;
}

/*
 * "geoip": {"country": FILE, "asn": FILE}. The files are opened and
 * checked here, so a missing or corrupt database refuses the start or the
 * reload (the running configuration keeps its own handle).
 */
static int load_geoip(struct ld *l, const json_t *obj, const struct jpos *j)
{
	static const char *const known[] = { "country", "asn" };
	const struct jpos *cj = NULL, *aj = NULL;
	struct dconfig *c = l->c;
	char *country = NULL, *asn = NULL, gerr[512];
	int r;

	if ((r = want_type(l, obj, j, "geoip", JSON_OBJECT, "an object")) ||
	    (r = check_keys(l, obj, j, "geoip", known, ARRAY_SIZE(known))))
		return r;
	if ((r = get_str(l, obj, j, "geoip", "country", true, &country, &cj)) < 0 ||
	    (r = get_str(l, obj, j, "geoip", "asn", true, &asn, &aj)) < 0)
		goto out;
	r = 0;
	if (country && !country[0])
		r = fail(l, -EINVAL, jpos_line(cj, 1), "geoip.country",
			 "empty path (leave the field out for no country database)");
	else if (asn && !asn[0])
		r = fail(l, -EINVAL, jpos_line(aj, 1), "geoip.asn",
			 "empty path (leave the field out for no ASN database)");
	if (r)
		goto out;
	if ((country && !(c->geoip_country = resolve_ref(l, country))) ||
	    (asn && !(c->geoip_asn = resolve_ref(l, asn)))) {
		r = nomem(l);
		goto out;
	}
	if (!c->geoip_country && !c->geoip_asn)
		goto out;
	r = geo_open(c->geoip_country, c->geoip_asn, &c->geo, gerr, sizeof(gerr));
	if (r) {
		/* geo.c names the role first: point at that field */
		bool is_asn = !strncmp(gerr, "ASN", 3);

		r = fail(l, r, jpos_line(is_asn ? aj : cj, j->line),
			 is_asn ? "geoip.asn" : "geoip.country", "%s", gerr);
	}
out:
	free(country);
	free(asn);
	return r;
}

/* Every policy gets the databases; one that uses GeoIP must have them.
 * The message starts with where the field is (config.json or the
 * policy's own file) and names the policy. */
static int check_geo_policies(struct ld *l)
{
	struct dconfig *c = l->c;
	char perr[512], hc[256], ha[256];
	size_t i;

	snprintf(hc, sizeof(hc), "set geoip.country in %s", l->file);
	snprintf(ha, sizeof(ha), "set geoip.asn in %s", l->file);
	for (i = 0; i < c->n_policies; i++) {
		struct policy *p = c->policies[i].policy;
		size_t n;

		p->geo = c->geo;
		if (!policy_check_geo(p, c->geoip_country != NULL, c->geoip_asn != NULL,
				      hc, ha, perr, sizeof(perr)))
			continue;
		n = strlen(perr);
		if (n && perr[n - 1] == ')')
			perr[n - 1] = '\0';
		if (l->err && l->errlen)
			snprintf(l->err, l->errlen, "%s; policies.%s)", perr, c->policies[i].name);
		return -EINVAL;
	}
	return 0;
}

static int load_root(struct ld *l)
{
	static const char *const known[] = {
		"listen", "audit", "dns", "proxy", "ca", "upstream_ca", "policies", "bindings",
		"geoip",
	};
	const json_t *v;
	size_t i;
	int r;

	if (!json_is_object(l->root))
		return fail(l, -EINVAL, jpos_line(l->pos, 1), "top level",
			    "expected an object, got %s", jpos_json_type(l->root));
	if ((r = check_keys(l, l->root, l->pos, "", known, ARRAY_SIZE(known))))
		return r;
	if ((v = json_object_get(l->root, "listen")) &&
	    (r = load_listen(l, v, jpos_key(l->pos, "listen"))))
		return r;
	if ((v = json_object_get(l->root, "audit")) &&
	    (r = load_audit(l, v, jpos_key(l->pos, "audit"))))
		return r;
	if ((v = json_object_get(l->root, "dns")) &&
	    (r = load_dns(l, v, jpos_key(l->pos, "dns"))))
		return r;
	if ((v = json_object_get(l->root, "proxy")) &&
	    (r = load_proxy(l, v, jpos_key(l->pos, "proxy"))))
		return r;
	if ((v = json_object_get(l->root, "ca")) &&
	    (r = load_ca(l, v, jpos_key(l->pos, "ca"))))
		return r;
	if ((r = get_path(l, l->root, l->pos, "", "upstream_ca", false, &l->c->upstream_ca)))
		return r;
	if ((v = json_object_get(l->root, "geoip")) &&
	    (r = load_geoip(l, v, jpos_key(l->pos, "geoip"))))
		return r;
	if ((v = json_object_get(l->root, "policies")) &&
	    (r = load_policies(l, v, jpos_key(l->pos, "policies"))))
		return r;
	if ((r = check_intercept(l)))
		return r;
	if ((r = check_geo_policies(l)))
		return r;
	if ((v = json_object_get(l->root, "bindings")) &&
	    (r = load_bindings(l, v, jpos_key(l->pos, "bindings"))))
		return r;
	if ((r = build_attach_points(l)))
		return r;
	if (!l->c->n_bindings &&
	    (r = warn(l, jpos_line(jpos_key(l->pos, "bindings"), l->pos->line),
		      "bindings", "no bindings: no cgroup is enforced")))
		return r;
	for (i = 0; i < l->c->n_policies; i++) {
		const struct dconfig_policy *p = &l->c->policies[i];
		char f[128];

		if (p->used)
			continue;
		snprintf(f, sizeof(f), "policies.%s", p->name);
		if ((r = warn(l, p->line, f, "not used by any binding")))
			return r;
	}
	return 0;
}

int dconfig_load_buffer(const char *name, const char *buf, size_t len,
			struct dconfig **out, char *err, size_t errlen)
{
	struct ld l = { .file = name ? name : "<config>", .buf = buf, .len = len,
			.err = err, .errlen = errlen };
	json_error_t jerr;
	char *tmp;
	int r;

	if (err && errlen)
		err[0] = '\0';
	if (len > DCONFIG_MAX_FILE)
		return fail(&l, -EFBIG, 1, "file", "larger than %d bytes", DCONFIG_MAX_FILE);
	tmp = strdup(l.file);
	if (!tmp)
		return nomem(&l);
	l.dir = strdup(dirname(tmp));
	free(tmp);
	if (!l.dir)
		return nomem(&l);
	/* Duplicates are found by check_keys, with both lines named. */
	l.root = json_loadb(buf, len, 0, &jerr);
	if (!l.root) {
		for (char *t = jerr.text; *t; t++)
			if ((unsigned char)*t < 0x20 || (unsigned char)*t >= 0x7f)
				*t = '?';
		if (err && errlen)
			snprintf(err, errlen, "%s:%d: syntax error: %s", l.file,
				 jerr.line > 0 ? jerr.line : 1, jerr.text);
		r = -EINVAL;
		goto out;
	}
	r = jpos_build(buf, len, false, &l.pos);
	if (r == -ENOMEM) {
		r = nomem(&l);
		goto out;
	}
	if (r) {
		r = fail(&l, -EINVAL, 1, "syntax error",
			 "unexpected bytes (NUL or other text the JSON walker refuses)");
		goto out;
	}
	l.c = dconfig_new(l.file);
	if (!l.c) {
		r = nomem(&l);
		goto out;
	}
	r = load_root(&l);
	if (!r) {
		*out = l.c;
		l.c = NULL;
	}
out:
	dconfig_free(l.c);
	jpos_free(l.pos);
	json_decref(l.root);
	free(l.dir);
	return r;
}

int dconfig_load(const char *path, struct dconfig **out, char *err, size_t errlen)
{
	struct stat st;
	char *buf = NULL;
	size_t len = 0;
	int fd, ret;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		ret = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(-ret));
		return ret;
	}
	if (fstat(fd, &st)) {
		ret = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(-ret));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		ret = -EINVAL;
		snprintf(err, errlen, "%s: not a regular file", path);
		goto out;
	}
	{
		char why[512];

		ret = dconfig_file_trusted(path, &st, why, sizeof(why));
		if (ret) {
			snprintf(err, errlen, "%s: %s", path, why);
			goto out;
		}
	}
	buf = malloc(DCONFIG_MAX_FILE + 1);
	if (!buf) {
		ret = -ENOMEM;
		snprintf(err, errlen, "%s: out of memory", path);
		goto out;
	}
	while (len < DCONFIG_MAX_FILE + 1) {
		ssize_t r = read(fd, buf + len, DCONFIG_MAX_FILE + 1 - len);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			ret = -errno;
			snprintf(err, errlen, "%s: %s", path, strerror(-ret));
			goto out;
		}
		if (!r)
			break;
		len += (size_t)r;
	}
	ret = dconfig_load_buffer(path, buf, len, out, err, errlen);
out:
	free(buf);
	close(fd);
	return ret;
}
