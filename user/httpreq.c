// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * HTTP/1.1 request stream processor (see httpreq.h).
 *
 * Two layers check each head. Our own byte-level pass is strict about what
 * Debian's lenient http-parser lets through (header names with spaces,
 * obs-fold, bare CR/LF, NUL, whitespace before the colon) and about framing
 * a chain of proxies could read two ways (CL+TE, several CL or TE fields,
 * codings other than "chunked"). http-parser then parses the same bytes
 * and owns the framing of the body: body length, chunk sizes, trailers,
 * where the message ends. What we emit is rebuilt from what http-parser
 * reported, so the upstream server cannot read a different message
 * boundary than the one we checked.
 *
 * We never read past the end of a head before it is accepted: bytes after
 * an Upgrade/CONNECT head stay with the caller, untouched.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <http_parser.h>

#include "httpreq.h"
#include "formscan.h"
#include "reqrule.h"

#define SET_NAME_MAX 64
#define TRAILER_NAME_MAX 256

enum state {
	ST_HEAD,        /* collecting a head */
	ST_PENDING,     /* head parsed, waiting for accept/refuse */
	ST_END_PENDING, /* accepted a head whose message is already complete */
	ST_BODY,        /* body bytes go through http-parser */
	ST_UPGRADED,    /* terminal: the rest is another protocol */
	ST_REFUSED,     /* terminal */
};

struct httpreq {
	enum state st;
	int status;
	const char *reason;
	char reason_buf[160];      /* a reason naming what the agent sent */
	bool partial;

	/* head being collected; NUL-terminated copies of its parts in strs */
	uint8_t head[HTTPREQ_HEAD_MAX];
	size_t head_len;
	size_t skipped;            /* empty lines dropped before a head */
	char strs[HTTPREQ_HEAD_MAX + 2 * HTTPREQ_MAX_HEADERS + 16];
	struct httpreq_field fields[HTTPREQ_MAX_HEADERS];
	struct httpreq_head h;
	bool msg_complete;         /* http-parser finished the message */

	http_parser p;
	bool in_body;              /* callbacks belong to the body phase */
	uint64_t max_body;
	uint64_t body_bytes;
	bool last_chunk;

	/* trailer field being collected, and the re-serialized section */
	char tr_name[TRAILER_NAME_MAX];
	size_t tr_name_len;
	char tr_value[HTTPREQ_TRAILER_MAX];
	size_t tr_value_len;
	bool tr_in_value;
	char trailers[HTTPREQ_TRAILER_MAX];
	size_t trailers_len;

	char set_names[HTTPREQ_MAX_SETS][SET_NAME_MAX];
	size_t n_set_names;

	/* output: out[out_off..out_len) not yet taken by the caller */
	uint8_t *out;
	size_t out_off, out_len, out_cap;
	uint64_t out_base;         /* stream offset of out[out_off] */
	uint64_t req_start;        /* stream offset where this request began */

	uint64_t count;

	/* a POST body read for _method (httpreq_scan_body) */
	bool scanning;
	bool scan_audit;           /* audit mode: note, never refuse */
	bool scan_lenient;         /* audit mode, or every method allowed */
	const char *unread;        /* a body forwarded unread: why (static) */
	int audit_status;          /* what enforce mode would have answered */
	const char *audit_reason;
	uint64_t override_ok;
	uint64_t body_start;       /* stream offset where its body began */
	struct formscan fs;
};

/* RFC 9110 5.6.2 tchar */
static bool is_tchar(unsigned char ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
	       (ch >= '0' && ch <= '9') || (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* field-value octets: HTAB, SP, VCHAR, obs-text */
static bool is_value_char(unsigned char ch)
{
	return ch == '\t' || (ch >= 0x20 && ch != 0x7f);
}

/* Field names compared as a server may map them (reqrule_field_name_eq):
 * "X_Api_Key" or "x.api.key" cannot ride along next to the "X-Api-Key"
 * we set, nor "X.HTTP.Method.Override" past the override check. */
static bool name_eq(const char *a, size_t alen, const char *b)
{
	return reqrule_field_name_eq(a, alen, b);
}

/* A framing field spelled with another separator ('_', '.'): refuse
 * rather than guess. */
static bool name_is(const char *name, const char *canon, bool *odd)
{
	if (!name_eq(name, strlen(name), canon))
		return false;
	if (strcasecmp(name, canon))
		*odd = true;
	return true;
}

/* The next element of a comma-separated field value at *p, blanks around
 * it trimmed, empty ones skipped: its length (its start in *elem), 0 at
 * the end. */
static size_t list_next(const char **p, const char **elem)
{
	const char *s, *e;

	while (**p == ' ' || **p == '\t' || **p == ',')
		(*p)++;
	if (!**p)
		return 0;
	s = *p;
	while (**p && **p != ',')
		(*p)++;
	e = *p;
	while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
		e--;
	*elem = s;
	return (size_t)(e - s);
}

/*
 * Does a Connection value list this field name? A hop that honours it
 * drops the field before the next one: "Connection: Authorization"
 * strips the credential we set. (check_framing refuses every option but
 * close, keep-alive, upgrade and te already: a second line, should that
 * list ever grow.)
 */
static bool connection_lists(const char *value, const char *name)
{
	const char *p = value, *s;
	size_t n;

	while ((n = list_next(&p, &s)))
		if (name_eq(s, n, name))
			return true;
	return false;
}

static bool any_connection_lists(const struct httpreq *r, const char *name)
{
	for (size_t i = 0; i < r->h.n_fields; i++)
		if (name_eq(r->fields[i].name, strlen(r->fields[i].name),
			    "connection") &&
		    connection_lists(r->fields[i].value, name))
			return true;
	return false;
}

/*
 * The first Connection option other than close, keep-alive, upgrade and
 * te (any case), into buf as the reason to refuse; NULL if none. A hop
 * that honours Connection (Go's ReverseProxy, Traefik, Caddy, Apache)
 * drops every field it names before the next one: Content-Length or
 * Transfer-Encoding re-frame the request, Content-Type makes Rack read
 * a text/plain body as a form, Authorization strips our credential.
 */
static const char *connection_bad_option(const struct httpreq *r, char *buf, size_t bufsz)
{
	static const char *const ok[] = { "close", "keep-alive", "upgrade", "te" };

	for (size_t i = 0; i < r->h.n_fields; i++) {
		const char *p = r->fields[i].value, *s;
		size_t k, n;

		if (!name_eq(r->fields[i].name, strlen(r->fields[i].name), "connection"))
			continue;
		while ((n = list_next(&p, &s))) {
			for (k = 0; k < sizeof(ok) / sizeof(ok[0]); k++)
				if (strlen(ok[k]) == n && !strncasecmp(s, ok[k], n))
					break;
			if (k < sizeof(ok) / sizeof(ok[0]))
				continue;
			/* the option as sent, tchars only (it goes to the
			 * audit log and the client) */
			k = (size_t)snprintf(buf, bufsz, "Connection names a field (only close, "
					     "keep-alive, upgrade, te may be): ");
			for (size_t j = 0; j < n && j < 64 && k + 1 < bufsz; j++)
				buf[k++] = is_tchar((unsigned char)s[j]) ? s[j] : '?';
			buf[k < bufsz ? k : bufsz - 1] = '\0';
			return buf;
		}
	}
	return NULL;
}

static int out_reserve(struct httpreq *r, size_t n)
{
	size_t need, cap;
	uint8_t *p;

	if (r->out_off && r->out_off == r->out_len)
		r->out_off = r->out_len = 0;
	if (n > SIZE_MAX / 2 - r->out_len)
		return -ENOMEM;
	need = r->out_len + n;
	if (need <= r->out_cap)
		return 0;
	/* Slide unread bytes down before growing. */
	if (r->out_off) {
		memmove(r->out, r->out + r->out_off, r->out_len - r->out_off);
		r->out_len -= r->out_off;
		r->out_off = 0;
		need = r->out_len + n;
		if (need <= r->out_cap)
			return 0;
	}
	cap = r->out_cap ? r->out_cap : 4096;
	while (cap < need)
		cap *= 2;
	p = realloc(r->out, cap);
	if (!p)
		return -ENOMEM;
	r->out = p;
	r->out_cap = cap;
	return 0;
}

static int out_add(struct httpreq *r, const void *data, size_t n)
{
	int err;

	if (!n)
		return 0;
	err = out_reserve(r, n);
	if (err)
		return err;
	memcpy(r->out + r->out_len, data, n);
	r->out_len += n;
	return 0;
}

static int out_str(struct httpreq *r, const char *s)
{
	return out_add(r, s, strlen(s));
}

static uint64_t out_pos(const struct httpreq *r)
{
	return r->out_base + (r->out_len - r->out_off);
}

static int refuse(struct httpreq *r, int status, const char *reason)
{
	uint64_t keep_to;

	if (r->st == ST_REFUSED)
		return HTTPREQ_EV_REFUSED;
	if (r->scanning)
		formscan_free(&r->fs);
	r->scanning = false;
	/* Drop what of this request has not left yet; earlier, complete
	 * requests stay queued. */
	if (r->st == ST_BODY || r->st == ST_END_PENDING) {
		keep_to = r->req_start > r->out_base ? r->req_start : r->out_base;
		r->partial = r->out_base > r->req_start;
		r->out_len = r->out_off + (size_t)(keep_to - r->out_base);
	}
	r->st = ST_REFUSED;
	r->status = status;
	r->reason = reason;
	return HTTPREQ_EV_REFUSED;
}

/* ---- body phase callbacks (http-parser) ---- */

static int cb_fail(struct httpreq *r, int status, const char *reason)
{
	if (!r->status) {
		r->status = status;
		r->reason = reason;
	}
	return -1;
}

static int cb_body(http_parser *p, const char *at, size_t len)
{
	struct httpreq *r = p->data;

	if (!r->in_body)
		return 0;
	if (len > r->max_body || r->body_bytes > r->max_body - len)
		return cb_fail(r, 413, "request body too large");
	r->body_bytes += len;
	if (r->scanning)
		formscan_feed(&r->fs, (const uint8_t *)at, len);
	if (out_add(r, at, len))
		return cb_fail(r, 500, "out of memory");
	return 0;
}

/* A refusal of the scan: in audit mode only noted (the first) where the
 * rules refuse (403). A body that cannot be read, or that names HEAD or
 * CONNECT (400, 415), is refused in audit mode too: how the response is
 * framed depends on the method the server acts on. */
static int scan_fail(struct httpreq *r, int status, const char *reason)
{
	if (r->scan_audit && status == 403) {
		if (!r->audit_status) {
			r->audit_status = status;
			r->audit_reason = reason;
		}
		return 0;
	}
	return cb_fail(r, status, reason);
}

/* The end of a scanned body, before its last bytes are emitted: a
 * _method there must name a method the request is allowed as too. */
static int scan_verdict(struct httpreq *r)
{
	const char *m = NULL;
	int rc;

	r->scanning = false;
	rc = formscan_finish(&r->fs, &m);
	if (rc < 0 && r->fs.head_or_connect)
		return scan_fail(r, 400, "_method naming HEAD or CONNECT");
	if (rc < 0 && r->scan_lenient) {
		/* Nothing the rules refuse can be in it: only a HEAD or a
		 * CONNECT unseen would matter, and that desyncs nothing on
		 * a connection that ends after this answer. */
		r->unread = r->fs.why ? r->fs.why : "_method in the body cannot be read";
		return 0;
	}
	if (rc < 0)
		return scan_fail(r, 400, r->fs.why ? r->fs.why : "_method in the body cannot be read");
	if (rc > 0) {
		int idx = reqrule_method_index(m);

		if (idx < 0 || idx > 63 || !(r->override_ok & (1ULL << idx)))
			return scan_fail(r, 403, "method override (_method) in the body denied");
	}
	return 0;
}

static int cb_chunk_header(http_parser *p)
{
	struct httpreq *r = p->data;
	char line[32];

	if (!r->in_body)
		return 0;
	if (p->content_length == 0) {
		r->last_chunk = true;
		return 0;
	}
	snprintf(line, sizeof(line), "%" PRIx64 "\r\n", p->content_length);
	if (out_str(r, line))
		return cb_fail(r, 500, "out of memory");
	return 0;
}

static int cb_chunk_complete(http_parser *p)
{
	struct httpreq *r = p->data;

	if (!r->in_body || r->last_chunk)
		return 0;
	if (out_add(r, "\r\n", 2))
		return cb_fail(r, 500, "out of memory");
	return 0;
}

static bool is_dropped_trailer(const struct httpreq *r, const char *n,
			       size_t len)
{
	/* Fields that frame, route or authenticate have no business in a
	 * trailer; RFC 9110 6.5.1 lets us drop trailer fields. */
	static const char *const drop[] = {
		"content-length", "transfer-encoding", "host", "trailer", "te",
		"connection", "keep-alive", "upgrade", "expect", "authorization",
		"proxy-authorization", "cookie", "content-type",
		"content-encoding", "content-range",
	};

	for (size_t i = 0; i < sizeof(drop) / sizeof(drop[0]); i++)
		if (name_eq(n, len, drop[i]))
			return true;
	for (size_t i = 0; i < r->n_set_names; i++)
		if (name_eq(n, len, r->set_names[i]))
			return true;
	return false;
}

static int trailer_commit(struct httpreq *r)
{
	const char *v = r->tr_value;
	size_t vlen = r->tr_value_len, nlen = r->tr_name_len;

	r->tr_in_value = false;
	r->tr_name_len = r->tr_value_len = 0;
	if (nlen == 0)
		return cb_fail(r, 400, "invalid trailer field");
	for (size_t i = 0; i < nlen; i++)
		if (!is_tchar((unsigned char)r->tr_name[i]))
			return cb_fail(r, 400, "invalid trailer field name");
	while (vlen && (v[0] == ' ' || v[0] == '\t')) {
		v++;
		vlen--;
	}
	while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
		vlen--;
	for (size_t i = 0; i < vlen; i++)
		if (!is_value_char((unsigned char)v[i]))
			return cb_fail(r, 400, "invalid trailer field value");
	if (is_dropped_trailer(r, r->tr_name, nlen))
		return 0;
	if (nlen + vlen + 4 > sizeof(r->trailers) - r->trailers_len)
		return cb_fail(r, 431, "trailer section too large");
	memcpy(r->trailers + r->trailers_len, r->tr_name, nlen);
	r->trailers_len += nlen;
	memcpy(r->trailers + r->trailers_len, ": ", 2);
	r->trailers_len += 2;
	memcpy(r->trailers + r->trailers_len, v, vlen);
	r->trailers_len += vlen;
	memcpy(r->trailers + r->trailers_len, "\r\n", 2);
	r->trailers_len += 2;
	return 0;
}

/* Trailer pieces may arrive split over several feeds: collect them. */
static int cb_header_field(http_parser *p, const char *at, size_t len)
{
	struct httpreq *r = p->data;

	if (!r->in_body)
		return 0;
	if (r->tr_in_value && trailer_commit(r))
		return -1;
	if (len > sizeof(r->tr_name) - r->tr_name_len)
		return cb_fail(r, 431, "trailer field too large");
	memcpy(r->tr_name + r->tr_name_len, at, len);
	r->tr_name_len += len;
	return 0;
}

static int cb_header_value(http_parser *p, const char *at, size_t len)
{
	struct httpreq *r = p->data;

	if (!r->in_body)
		return 0;
	if (len > sizeof(r->tr_value) - r->tr_value_len)
		return cb_fail(r, 431, "trailer field too large");
	memcpy(r->tr_value + r->tr_value_len, at, len);
	r->tr_value_len += len;
	r->tr_in_value = true;
	return 0;
}

static int cb_message_complete(http_parser *p)
{
	struct httpreq *r = p->data;

	r->msg_complete = true;
	if (r->in_body && r->scanning && scan_verdict(r))
		return -1;
	if (r->in_body && r->h.chunked) {
		/* A name without value (http-parser allows "Name\r\n" in
		 * lenient mode) is refused by trailer_commit too. */
		if ((r->tr_in_value || r->tr_name_len) && trailer_commit(r))
			return -1;
		if (out_str(r, "0\r\n") ||
		    out_add(r, r->trailers, r->trailers_len) ||
		    out_add(r, "\r\n", 2))
			return cb_fail(r, 500, "out of memory");
	}
	/* Stop at the message boundary: the next head is ours to check. */
	http_parser_pause(p, 1);
	return 0;
}

static const http_parser_settings settings = {
	.on_header_field = cb_header_field,
	.on_header_value = cb_header_value,
	.on_body = cb_body,
	.on_message_complete = cb_message_complete,
	.on_chunk_header = cb_chunk_header,
	.on_chunk_complete = cb_chunk_complete,
};

/* ---- head ---- */

static char *str_add(struct httpreq *r, size_t *used, const uint8_t *s,
		     size_t len)
{
	char *d = r->strs + *used;

	/* Fits: strs has room for every head byte plus a NUL per part. */
	memcpy(d, s, len);
	d[len] = '\0';
	*used += len + 1;
	return d;
}

/* Parse and check the request line; 0 or refusal event. */
static int parse_request_line(struct httpreq *r, size_t *pos, size_t *su)
{
	const uint8_t *b = r->head;
	size_t i = 0, m, t, eol;

	while (is_tchar(b[i]))
		i++;
	m = i;
	if (m == 0 || b[i] != ' ')
		return refuse(r, 400, "malformed request line");
	i++;
	t = i;
	while (b[i] > 0x20 && b[i] < 0x7f)
		i++;
	if (i == t || b[i] != ' ')
		return refuse(r, 400, "malformed request line");
	r->h.method = str_add(r, su, b, m);
	r->h.target = str_add(r, su, b + t, i - t);
	i++;
	eol = i;
	while (b[eol] != '\r')
		eol++;
	if (eol - i != 8 || memcmp(b + i, "HTTP/1.", 7) ||
	    (b[i + 7] != '0' && b[i + 7] != '1'))
		return refuse(r, 400, "unsupported HTTP version");
	r->h.version_minor = (unsigned int)(b[i + 7] - '0');
	*pos = eol + 2;
	return 0;
}

/* Split and check field lines (head ends with CRLF CRLF, all CR before LF). */
static int parse_fields(struct httpreq *r, size_t pos, size_t *su)
{
	const uint8_t *b = r->head;

	while (!(b[pos] == '\r' && b[pos + 1] == '\n')) {
		size_t ns = pos, ne, vs, ve;

		if (b[pos] == ' ' || b[pos] == '\t')
			return refuse(r, 400, "obsolete line folding");
		while (is_tchar(b[pos]))
			pos++;
		ne = pos;
		if (b[pos] != ':') {
			if (b[pos] == ' ' || b[pos] == '\t')
				return refuse(r, 400, "whitespace before colon");
			return refuse(r, 400, "invalid field name");
		}
		if (ne == ns)
			return refuse(r, 400, "empty field name");
		pos++;
		while (b[pos] == ' ' || b[pos] == '\t')
			pos++;
		vs = pos;
		while (b[pos] != '\r') {
			if (!is_value_char(b[pos]))
				return refuse(r, 400, "invalid field value");
			pos++;
		}
		ve = pos;
		while (ve > vs && (b[ve - 1] == ' ' || b[ve - 1] == '\t'))
			ve--;
		if (r->h.n_fields == HTTPREQ_MAX_HEADERS)
			return refuse(r, 431, "too many header fields");
		r->fields[r->h.n_fields].name = str_add(r, su, b + ns, ne - ns);
		r->fields[r->h.n_fields].value = str_add(r, su, b + vs, ve - vs);
		r->h.n_fields++;
		pos += 2;
	}
	return 0;
}

static bool parse_u64(const char *s, uint64_t *out)
{
	uint64_t v = 0;
	size_t n = strlen(s);

	/* RFC 9110 8.6: 1*DIGIT; no sign, no list, no blanks. */
	if (n == 0 || n > 18)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	*out = v;
	return true;
}

/* Fields some frameworks take the method from instead of the request
 * line (Express method-override, Symfony, Rails, ASP.NET Web API). */
static bool is_method_override(const char *name)
{
	size_t n = strlen(name);

	return name_eq(name, n, "x-http-method-override") ||
	       name_eq(name, n, "x-http-method") ||
	       name_eq(name, n, "x-method-override");
}

/* Fields some front ends (IIS URL Rewrite, Symfony's IIS support) take the
 * path from instead of the request line. */
static bool is_url_rewrite(const char *name)
{
	size_t n = strlen(name);

	return name_eq(name, n, "x-original-url") || name_eq(name, n, "x-rewrite-url");
}

/*
 * Does an Upgrade value list "websocket" (any case), and nothing else?
 * After a 101 the engine relays raw bytes. A WebSocket stays with the
 * request it upgraded, whose path the rules checked; h2c would carry
 * HTTP/2 streams for any path and authority, and connect-tcp or
 * connect-udp a tunnel to anywhere, none of it checked, all of it on a
 * connection that carries our credential.
 */
static bool upgrade_only_websocket(const char *v)
{
	bool any = false;
	const char *s;
	size_t n;

	while ((n = list_next(&v, &s))) {
		if (n != 9 || strncasecmp(s, "websocket", 9))
			return false;
		any = true;
	}
	return any;
}

/* Framing decisions from the field list; 0 or refusal event. */
static int check_framing(struct httpreq *r)
{
	unsigned int n_cl = 0, n_te = 0, n_host = 0;
	const char *bad;
	bool odd = false;

	for (size_t i = 0; i < r->h.n_fields; i++) {
		const struct httpreq_field *f = &r->fields[i];

		if (name_is(f->name, "content-length", &odd)) {
			n_cl++;
			if (!parse_u64(f->value, &r->h.content_length))
				return refuse(r, 400, "invalid Content-Length");
			r->h.has_length = true;
		} else if (name_is(f->name, "transfer-encoding", &odd)) {
			n_te++;
			/* Only "chunked" alone: any other coding list is
			 * where front and back ends start to disagree. */
			if (strcasecmp(f->value, "chunked"))
				return refuse(r, 400, "unsupported Transfer-Encoding");
			r->h.chunked = true;
		} else if (name_is(f->name, "host", &odd)) {
			n_host++;
			r->h.host = f->value;
		} else if (name_eq(f->name, strlen(f->name), "expect")) {
			if (!strcasecmp(f->value, "100-continue"))
				r->h.expect_continue = true;
		} else if (name_eq(f->name, strlen(f->name), "upgrade")) {
			/* Whether or not Connection lists it: some servers
			 * (Go's h2c) upgrade without. */
			if (!upgrade_only_websocket(f->value))
				return refuse(r, 400, "upgrade to a protocol other than websocket");
			r->h.upgrade_proto = f->value;
		} else if (is_url_rewrite(f->name)) {
			/* The rules matched the request line's path; a
			 * server honouring these would act on another. */
			return refuse(r, 400, "URL rewrite field (X-Original-URL, X-Rewrite-URL)");
		} else if (is_method_override(f->name)) {
			const char *m = reqrule_method_name(f->value);

			if (!m)
				return refuse(r, 400, "unknown method in a method override field");
			/* answered without a body, or with a tunnel, where
			 * the engine reads the request line's method's
			 * answer (reqrule_check refuses it too) */
			if (!strcmp(m, "HEAD") || !strcmp(m, "CONNECT"))
				return refuse(r, 400, "method override naming HEAD or CONNECT");
			if (r->h.method_override && strcmp(r->h.method_override, m))
				return refuse(r, 400, "method override fields disagree");
			r->h.method_override = m;
		}
	}
	if (odd)
		return refuse(r, 400, "framing field name with another separator");
	if (n_cl > 1)
		return refuse(r, 400, "several Content-Length fields");
	if (n_te > 1)
		return refuse(r, 400, "several Transfer-Encoding fields");
	if (n_cl && n_te)
		return refuse(r, 400, "both Content-Length and Transfer-Encoding");
	if (n_te && r->h.version_minor == 0)
		return refuse(r, 400, "Transfer-Encoding in HTTP/1.0");
	if (n_host > 1)
		return refuse(r, 400, "several Host fields");
	bad = connection_bad_option(r, r->reason_buf, sizeof(r->reason_buf));
	if (bad)
		return refuse(r, 400, bad);
	return 0;
}

static int parse_head(struct httpreq *r)
{
	size_t pos = 0, su = 0, n;
	enum http_errno herr;
	int ret;

	memset(&r->h, 0, sizeof(r->h));
	r->h.fields = r->fields;
	r->h.head_len = r->head_len;
	r->msg_complete = false;

	ret = parse_request_line(r, &pos, &su);
	if (ret)
		return ret;
	ret = parse_fields(r, pos, &su);
	if (ret)
		return ret;
	ret = check_framing(r);
	if (ret)
		return ret;

	/* The same bytes through http-parser: it must agree on everything
	 * and now holds the framing state for the body. */
	http_parser_init(&r->p, HTTP_REQUEST);
	r->p.data = r;
	r->in_body = false;
	n = http_parser_execute(&r->p, &settings, (const char *)r->head,
				r->head_len);
	herr = HTTP_PARSER_ERRNO(&r->p);
	if (r->status)
		return refuse(r, r->status, r->reason);
	if ((herr != HPE_OK && herr != HPE_PAUSED) || n != r->head_len)
		return refuse(r, 400, http_errno_description(herr));
	if (herr == HPE_PAUSED)
		http_parser_pause(&r->p, 0);
	if (strcmp(http_method_str((enum http_method)r->p.method),
		   r->h.method) ||
	    r->p.http_major != 1 || r->p.http_minor != r->h.version_minor)
		return refuse(r, 400, "malformed request line");
	if (r->h.chunked != !!(r->p.flags & F_CHUNKED))
		return refuse(r, 400, "ambiguous framing");
	if (r->h.has_length && r->h.content_length != r->p.content_length &&
	    !r->msg_complete)
		return refuse(r, 400, "ambiguous framing");

	r->h.upgrade = r->p.upgrade || r->p.method == HTTP_CONNECT;
	if (r->h.upgrade &&
	    (r->h.chunked || (r->h.has_length && r->h.content_length)))
		return refuse(r, 400, "upgrade request with a body");
	/* Without a body http-parser completes the message with the head. */
	if (!r->h.upgrade && !r->msg_complete &&
	    !r->h.chunked && !(r->h.has_length && r->h.content_length))
		return refuse(r, 400, "ambiguous framing");
	r->h.keep_alive = http_should_keep_alive(&r->p);
	r->st = ST_PENDING;
	return HTTPREQ_EV_HEAD;
}

static int feed_head(struct httpreq *r, const uint8_t *b, size_t len,
		     size_t *used)
{
	for (size_t i = 0; i < len; i++) {
		uint8_t ch = b[i];
		bool after_cr = r->head_len && r->head[r->head_len - 1] == '\r';

		*used = i + 1;
		if (ch == '\0')
			return refuse(r, 400, "NUL in request head");
		if (after_cr && ch != '\n')
			return refuse(r, 400, "bare CR in request head");
		if (ch == '\n' && !after_cr)
			return refuse(r, 400, "bare LF in request head");
		if (r->head_len == HTTPREQ_HEAD_MAX)
			return refuse(r, 431, "request head too large");
		r->head[r->head_len++] = ch;
		if (ch != '\n')
			continue;
		if (r->head_len == 2) {
			/* RFC 9112 2.2: ignore empty lines before a
			 * request line (some clients add CRLF after a
			 * body); they are not forwarded. */
			r->head_len = 0;
			r->skipped += 2;
			if (r->skipped > HTTPREQ_HEAD_MAX)
				return refuse(r, 400, "empty lines instead of a request");
			continue;
		}
		if (r->head_len >= 4 &&
		    !memcmp(r->head + r->head_len - 4, "\r\n\r\n", 4)) {
			r->skipped = 0;
			return parse_head(r);
		}
	}
	*used = len;
	return HTTPREQ_EV_NEED_MORE;
}

static int end_message(struct httpreq *r)
{
	r->scanning = false;
	r->count++;
	r->head_len = 0;
	r->in_body = false;
	r->st = ST_HEAD;
	return HTTPREQ_EV_END;
}

static int feed_body(struct httpreq *r, const uint8_t *b, size_t len,
		     size_t *used)
{
	enum http_errno herr;
	size_t n;

	/* len 0 would tell http-parser the stream ended. */
	if (!len)
		return HTTPREQ_EV_NEED_MORE;
	n = http_parser_execute(&r->p, &settings, (const char *)b, len);
	herr = HTTP_PARSER_ERRNO(&r->p);
	*used = n;
	if (r->status)
		return refuse(r, r->status, r->reason);
	if (herr == HPE_PAUSED) {
		http_parser_pause(&r->p, 0);
		return end_message(r);
	}
	if (herr != HPE_OK)
		return refuse(r, 400, http_errno_description(herr));
	return HTTPREQ_EV_NEED_MORE;
}

int httpreq_feed(struct httpreq *r, const void *buf, size_t len, size_t *used)
{
	if (!r || !used || (!buf && len))
		return -EINVAL;
	*used = 0;
	switch (r->st) {
	case ST_HEAD:
		return len ? feed_head(r, buf, len, used) : HTTPREQ_EV_NEED_MORE;
	case ST_PENDING:
		return -EBUSY;
	case ST_END_PENDING:
		return end_message(r);
	case ST_BODY:
		return feed_body(r, buf, len, used);
	case ST_UPGRADED:
		return HTTPREQ_EV_UPGRADE;
	case ST_REFUSED:
		return HTTPREQ_EV_REFUSED;
	}
	return -EINVAL;
}

const struct httpreq_head *httpreq_head(const struct httpreq *r)
{
	return r && r->st == ST_PENDING ? &r->h : NULL;
}

static bool set_valid(const struct httpreq_set *s)
{
	size_t n;

	if (!s->name || !s->value)
		return false;
	n = strlen(s->name);
	if (n == 0 || n >= SET_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!is_tchar((unsigned char)s->name[i]))
			return false;
	n = strlen(s->value);
	for (size_t i = 0; i < n; i++)
		if (!is_value_char((unsigned char)s->value[i]))
			return false;
	/* Leading/trailing blanks would be trimmed by the server anyway. */
	if (n && (s->value[0] == ' ' || s->value[0] == '\t' ||
		  s->value[n - 1] == ' ' || s->value[n - 1] == '\t'))
		return false;
	return true;
}

static bool field_dropped(const struct httpreq *r, const char *name)
{
	size_t len = strlen(name);

	/* Hop-by-hop: the agent's proxy credentials are not the upstream's
	 * business. */
	if (name_eq(name, len, "proxy-authorization"))
		return true;
	for (size_t i = 0; i < r->n_set_names; i++)
		if (name_eq(name, len, r->set_names[i]))
			return true;
	return false;
}

const char *httpreq_origin_form(const char *method, const char *target, bool *slash)
{
	const char *a;

	*slash = false;
	if (target[0] == '/' || !strcmp(target, "*") || !strcmp(method, "CONNECT"))
		return target;
	a = strstr(target, "://");
	if (!a)
		return target;
	a += 3;
	a += strcspn(a, "/?");
	*slash = *a != '/';
	return a;
}

static int emit_head(struct httpreq *r, const struct httpreq_set *sets,
		     size_t n_sets)
{
	const struct httpreq_head *h = &r->h;
	bool slash;
	const char *t = httpreq_origin_form(h->method, h->target, &slash);
	int err;

	/* The request line allows only 1.0 and 1.1 (no snprintf per
	 * request). */
	err = out_str(r, h->method) ?: out_str(r, " ") ?:
	      (slash ? out_str(r, "/") : 0) ?: out_str(r, t) ?:
	      out_str(r, h->version_minor ? " HTTP/1.1\r\n" : " HTTP/1.0\r\n");
	for (size_t i = 0; !err && i < h->n_fields; i++) {
		if (field_dropped(r, h->fields[i].name))
			continue;
		err = out_str(r, h->fields[i].name) ?: out_str(r, ": ") ?:
		      out_str(r, h->fields[i].value) ?: out_str(r, "\r\n");
	}
	for (size_t i = 0; !err && i < n_sets; i++)
		err = out_str(r, sets[i].name) ?: out_str(r, ": ") ?:
		      out_str(r, sets[i].value) ?: out_str(r, "\r\n");
	return err ?: out_str(r, "\r\n");
}

int httpreq_accept(struct httpreq *r, const struct httpreq_set *sets,
		   size_t n_sets, uint64_t max_body)
{
	int err;

	if (!r || (!sets && n_sets))
		return -EINVAL;
	if (r->st != ST_PENDING)
		return -EPROTO;
	if (n_sets > HTTPREQ_MAX_SETS)
		return -EINVAL;
	for (size_t i = 0; i < n_sets; i++)
		if (!set_valid(&sets[i]))
			return -EINVAL;
	for (size_t i = 0; i < n_sets; i++)
		if (any_connection_lists(r, sets[i].name)) {
			refuse(r, 400, "Connection names an injected field");
			return -EPERM;
		}
	if (r->h.has_length && r->h.content_length > max_body) {
		refuse(r, 413, "request body too large");
		return -EFBIG;
	}
	r->n_set_names = n_sets;
	for (size_t i = 0; i < n_sets; i++)
		snprintf(r->set_names[i], SET_NAME_MAX, "%s", sets[i].name);

	r->req_start = out_pos(r);
	err = emit_head(r, sets, n_sets);
	if (err) {
		/* Nothing of a half-written head may go out. */
		r->out_len = r->out_off + (size_t)(r->req_start - r->out_base);
		refuse(r, 500, "out of memory");
		return err;
	}
	r->max_body = max_body;
	r->audit_status = 0;
	r->body_bytes = 0;
	r->last_chunk = false;
	r->tr_name_len = r->tr_value_len = r->trailers_len = 0;
	r->tr_in_value = false;
	if (r->h.upgrade) {
		r->st = ST_UPGRADED;
		r->count++;
	} else if (r->msg_complete) {
		r->st = ST_END_PENDING;
	} else {
		r->st = ST_BODY;
		r->in_body = true;
		r->msg_complete = false;
	}
	return 0;
}

/* Refused before the body (a body that cannot be read), unless lenient
 * (audit mode, or every method allowed): then forwarded unread, and the
 * caller ends the connection after its answer (httpreq_scan_unread). */
static int scan_refuse_now(struct httpreq *r, int status, const char *reason)
{
	if (r->scan_audit && status == 403) {
		r->audit_status = status;
		r->audit_reason = reason;
		return 0;
	}
	if (r->scan_lenient && (status == 400 || status == 415)) {
		r->unread = reason;
		return 0;
	}
	refuse(r, status, reason);
	return -EPERM;
}

int httpreq_scan_body(struct httpreq *r, uint64_t override_ok, bool audit)
{
	const char *ct = NULL, *ce = NULL;
	unsigned int n_ct = 0, n_ce = 0;
	int kinds;

	if (!r)
		return -EINVAL;
	r->scan_audit = audit;
	r->scan_lenient = audit || override_ok == UINT64_MAX;
	r->unread = NULL;
	r->audit_status = 0;
	/* Also where every method is allowed (override_ok UINT64_MAX): a
	 * _method naming HEAD or CONNECT is refused whatever the rules. */
	if (r->st != ST_BODY || strcmp(r->h.method, "POST"))
		return 0;
	for (size_t i = 0; i < r->h.n_fields; i++) {
		const char *n = r->h.fields[i].name;

		if (name_eq(n, strlen(n), "content-type")) {
			n_ct++;
			ct = r->h.fields[i].value;
		} else if (name_eq(n, strlen(n), "content-encoding")) {
			n_ce++;
			ce = r->h.fields[i].value;
		}
	}
	if (n_ct > 1)
		return scan_refuse_now(r, 400, "several Content-Type fields");
	kinds = formscan_init(&r->fs, ct, n_ce > 1 ? "several" : ce);
	if (kinds == -ENOTSUP)
		return scan_refuse_now(r, 415, "form body in an encoding whose _method cannot be read");
	if (kinds == -ENOMEM)
		return scan_refuse_now(r, 500, "out of memory");
	if (kinds < 0)
		return scan_refuse_now(r, 400, "form body whose _method cannot be read (boundary, charset)");
	if (!kinds)
		return 0;
	r->scanning = true;
	r->override_ok = override_ok;
	r->body_start = out_pos(r);
	return 0;
}

void httpreq_refuse(struct httpreq *r, int status, const char *reason)
{
	if (r)
		refuse(r, status, reason ? reason : "refused");
}

int httpreq_check(const struct httpreq *r, const struct reqrule_host *h,
		  const char *sni, struct reqrule_result *res)
{
	return httpreq_check_port(r, h, sni, 443, res);
}

int httpreq_check_port(const struct httpreq *r, const struct reqrule_host *h,
		       const char *sni, uint16_t port, struct reqrule_result *res)
{
	const struct httpreq_head *head = httpreq_head(r);
	struct reqrule_request req;

	if (!head || !res) {
		if (res)
			memset(res, 0, sizeof(*res));
		return -EINVAL;
	}
	req = (struct reqrule_request){
		.method = head->method,
		.method_override = head->method_override,
		.target = head->target,
		.host = head->host,
		.has_length = head->has_length,
		.content_length = head->content_length,
		.port = port,
	};
	return reqrule_check(h, sni, &req, res);
}

const uint8_t *httpreq_out(const struct httpreq *r, size_t *len)
{
	if (!r || !r->out) {
		if (len)
			*len = 0;
		return NULL;
	}
	if (len) {
		*len = r->out_len - r->out_off;
		/* A scanned body's last byte waits for the verdict on it: the
		 * server never has the whole request before (the head goes
		 * whole: a client may wait for 100 Continue). */
		if (r->scanning && !r->scan_audit && r->st == ST_BODY && *len &&
		    out_pos(r) > r->body_start)
			(*len)--;
	}
	return r->out + r->out_off;
}

void httpreq_out_consume(struct httpreq *r, size_t n)
{
	if (!r)
		return;
	if (n > r->out_len - r->out_off)
		n = r->out_len - r->out_off;
	r->out_off += n;
	r->out_base += n;
	if (r->out_off == r->out_len)
		r->out_off = r->out_len = 0;
}

const char *httpreq_scan_unread(const struct httpreq *r)
{
	return r ? r->unread : NULL;
}

int httpreq_scan_audit(const struct httpreq *r, const char **reason)
{
	if (!r || !r->audit_status)
		return 0;
	if (reason)
		*reason = r->audit_reason;
	return r->audit_status;
}

int httpreq_status(const struct httpreq *r)
{
	return r && r->st == ST_REFUSED ? r->status : 0;
}

const char *httpreq_reason(const struct httpreq *r)
{
	return r && r->st == ST_REFUSED ? r->reason : NULL;
}

bool httpreq_partial(const struct httpreq *r)
{
	return r && r->st == ST_REFUSED && r->partial;
}

uint64_t httpreq_count(const struct httpreq *r)
{
	return r ? r->count : 0;
}

uint64_t httpreq_body_bytes(const struct httpreq *r)
{
	return r ? r->body_bytes : 0;
}

struct httpreq *httpreq_new(void)
{
	struct httpreq *r = calloc(1, sizeof(*r));

	if (r)
		r->st = ST_HEAD;
	return r;
}

void httpreq_free(struct httpreq *r)
{
	if (!r)
		return;
	formscan_free(&r->fs);
	free(r->out);
	free(r);
}
