// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * HTTP/1.x request head peek with Debian's http-parser. The agent controls
 * every byte, so the name we decide on must be the one an upstream server
 * or proxy would use: several Host headers, or a Host header naming another
 * host than an absolute-form/authority-form request-target, are MALFORMED
 * rather than resolved one way or the other (request smuggling, domain
 * fronting through a plain-HTTP proxy).
 *
 * http-parser is stateful; the caller passes everything received so far
 * on every call, so each call parses from the start with a fresh parser.
 * Heads are at most HTTP_HEAD_MAX_BYTES, so that costs little.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <http_parser.h>

#include "hello.h"
#include "httphead.h"

/* Longest method token we wait for before deciding "not HTTP". */
#define METHOD_MAX 15

struct span {
	const char *p;
	size_t len;
};

struct head_ctx {
	struct span url;
	struct span host;      /* value of the first Host header */
	unsigned int n_host;
	bool cur_is_host;      /* the header being read is a Host header */
	struct span te;        /* value of the first Transfer-Encoding */
	unsigned int n_te;
	bool cur_is_te, cur_is_upgrade;
	bool h2c;              /* an Upgrade value names h2c */
	bool done;
};

/*
 * The whole buffer goes to one http_parser_execute() call, so every element
 * that is complete gets exactly one callback, except values continued by
 * obs-fold, whose pieces are adjacent in the buffer: a span grows by
 * moving its end.
 */
static void span_add(struct span *s, const char *at, size_t len)
{
	if (!s->p) {
		s->p = at;
		s->len = len;
	} else {
		s->len = (size_t)(at + len - s->p);
	}
}

static int on_url(http_parser *p, const char *at, size_t len)
{
	struct head_ctx *c = p->data;

	span_add(&c->url, at, len);
	return 0;
}

bool http_is_tchar(uint8_t ch)
{
	return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
	       (ch >= '0' && ch <= '9') || (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* One call per header name (see span_add); names are case-insensitive. */
static int on_header_field(http_parser *p, const char *at, size_t len)
{
	struct head_ctx *c = p->data;

	/* Debian's http-parser is built lenient and passes "Host " or
	 * "Ho st" as names; servers that trim them would see a Host header
	 * we did not (RFC 9112 5.1 says reject), so refuse the request. */
	for (size_t i = 0; i < len; i++)
		if (!http_is_tchar((uint8_t)at[i]))
			return -1;
	c->cur_is_host = len == 4 && !strncasecmp(at, "host", 4);
	if (c->cur_is_host)
		c->n_host++;
	c->cur_is_te = len == 17 && !strncasecmp(at, "transfer-encoding", 17);
	if (c->cur_is_te)
		c->n_te++;
	c->cur_is_upgrade = len == 7 && !strncasecmp(at, "upgrade", 7);
	return 0;
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
	struct head_ctx *c = p->data;

	if (c->cur_is_host && c->n_host == 1)
		span_add(&c->host, at, len);
	if (c->cur_is_te && c->n_te == 1)
		span_add(&c->te, at, len);
	/* h2c anywhere in the value (a piece of one only with obs-fold,
	 * which head_strict_len refuses) */
	for (size_t i = 0; c->cur_is_upgrade && i + 3 <= len; i++)
		if (!strncasecmp(at + i, "h2c", 3))
			c->h2c = true;
	return 0;
}

static int on_headers_complete(http_parser *p)
{
	struct head_ctx *c = p->data;

	c->done = true;
	/* Stop here: the body is not ours to read. */
	http_parser_pause(p, 1);
	return 0;
}

static bool is_method_char(uint8_t ch)
{
	return (ch >= 'A' && ch <= 'Z') || ch == '-';
}

/*
 * 1 if buf starts with "TOKEN SP", 0 if it still might, -1 if it cannot.
 */
static int method_prefix(const uint8_t *buf, size_t len)
{
	for (size_t i = 0; i < len && i <= METHOD_MAX; i++) {
		if (buf[i] == ' ')
			return i > 0 ? 1 : -1;
		if (!is_method_char(buf[i]))
			return -1;
	}
	return len <= METHOD_MAX ? 0 : -1;
}

bool http_head_looks_like_http(const uint8_t *buf, size_t len)
{
	/* A prefix that can still become "TOKEN SP" counts, as
	 * hello_looks_like_tls() does for its first byte. */
	return buf && len > 0 && method_prefix(buf, len) >= 0;
}

static bool parse_port(const char *p, size_t len, uint16_t *port)
{
	unsigned long v = 0;

	/* RFC 3986 allows an empty port (meaning the default). */
	if (len == 0) {
		*port = 0;
		return true;
	}
	if (len > 5)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		v = v * 10 + (unsigned long)(p[i] - '0');
	}
	if (v == 0 || v > 65535)
		return false;
	*port = (uint16_t)v;
	return true;
}

/*
 * Split "host[:port]" or "[v6]:port" into host (brackets removed, copied
 * NUL-terminated into out) and port. No userinfo, no whitespace or
 * controls; an empty host is refused.
 */
static int parse_authority(const char *p, size_t len, char *out, size_t outsz,
			   uint16_t *port)
{
	const char *host = p, *colon = NULL;
	size_t hlen;

	*port = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)p[i];

		if (ch <= 0x20 || ch >= 0x7f || ch == '@' || ch == '/' ||
		    ch == '\\' || ch == '?' || ch == '#')
			return -EINVAL;
	}
	if (len && p[0] == '[') {
		const char *end = memchr(p, ']', len);

		if (!end)
			return -EINVAL;
		host = p + 1;
		hlen = (size_t)(end - host);
		if (end + 1 < p + len) {
			if (end[1] != ':')
				return -EINVAL;
			colon = end + 1;
		}
		if (memchr(host, '[', hlen))
			return -EINVAL;
	} else {
		colon = memchr(p, ':', len);
		hlen = colon ? (size_t)(colon - p) : len;
		if (memchr(p, '[', len) || memchr(p, ']', len))
			return -EINVAL;
	}
	if (colon && !parse_port(colon + 1, (size_t)(p + len - colon - 1), port))
		return -EINVAL;
	if (hlen == 0 || hlen >= outsz)
		return -EINVAL;
	memcpy(out, host, hlen);
	out[hlen] = '\0';
	return 0;
}

/*
 * Authority of an absolute-form target ("scheme://authority/..."), or
 * -ENOENT for origin-form ("/path") and asterisk-form ("*").
 */
static int url_authority(const struct span *url, struct span *auth)
{
	const char *p = url->p, *end = url->p + url->len, *sep;
	size_t i;

	if (url->len == 0 || p[0] == '/' || (url->len == 1 && p[0] == '*'))
		return -ENOENT;
	/* scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) */
	for (i = 0; i < url->len; i++) {
		char ch = p[i];

		if (ch == ':')
			break;
		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (i > 0 && ((ch >= '0' && ch <= '9') || ch == '+' ||
				 ch == '-' || ch == '.'))))
			return -EINVAL;
	}
	if (i == 0 || url->len < i + 3 || p[i + 1] != '/' || p[i + 2] != '/')
		return -EINVAL;
	auth->p = p + i + 3;
	for (sep = auth->p; sep < end; sep++)
		if (*sep == '/' || *sep == '?' || *sep == '#')
			break;
	auth->len = (size_t)(sep - auth->p);
	return 0;
}

static void trim(struct span *s)
{
	while (s->len && (s->p[0] == ' ' || s->p[0] == '\t')) {
		s->p++;
		s->len--;
	}
	while (s->len && (s->p[s->len - 1] == ' ' || s->p[s->len - 1] == '\t'))
		s->len--;
}

/* Work out host and port from the target and the Host header. */
static int resolve_host(const http_parser *p, struct head_ctx *c,
			struct http_head_info *out)
{
	char hhost[sizeof(out->host)];
	struct span auth = { 0 };
	uint16_t hport = 0;
	bool have_target = false;
	int err;

	if (c->n_host > 1)
		return HTTP_HEAD_MALFORMED;

	if (p->method == HTTP_CONNECT) {
		/* authority-form: host:port, port required */
		auth = c->url;
		if (!memchr(auth.p, ':', auth.len))
			return HTTP_HEAD_MALFORMED;
		have_target = true;
	} else {
		err = url_authority(&c->url, &auth);
		if (err == -EINVAL)
			return HTTP_HEAD_MALFORMED;
		have_target = err == 0;
	}
	if (have_target) {
		if (parse_authority(auth.p, auth.len, out->host, sizeof(out->host),
				    &out->port))
			return HTTP_HEAD_MALFORMED;
		if (p->method == HTTP_CONNECT && out->port == 0)
			return HTTP_HEAD_MALFORMED;
		out->has_host = true;
	}

	trim(&c->host);
	/* An empty Host is what HTTP/1.1 clients send when the target has no
	 * authority: it names nothing. */
	if (c->n_host == 1 && c->host.len) {
		if (parse_authority(c->host.p, c->host.len, hhost, sizeof(hhost),
				    &hport))
			return HTTP_HEAD_MALFORMED;
		if (have_target) {
			/* RFC 9112 3.2.2 says to ignore Host here; we refuse
			 * instead, since a proxy or server further on may not. */
			if (strcasecmp(hhost, out->host))
				return HTTP_HEAD_MALFORMED;
		} else {
			memcpy(out->host, hhost, sizeof(hhost));
			out->port = hport;
			out->has_host = true;
		}
	}
	out->host_valid = out->has_host && hello_hostname_valid(out->host);
	return HTTP_HEAD_OK;
}

/*
 * What Debian's lenient http-parser lets through and servers read in
 * different ways, refused: a line ended by a bare LF (nginx ends it there,
 * others read on), a bare CR, obs-fold (a line starting with a blank: one
 * server's continuation is another's new field), NUL and other control
 * bytes (a tab only inside fields). Every line ends with CRLF, so the head
 * ends at the first empty line for everyone. Returns the head's length
 * through that empty line, 0 if it has not come yet, -1 if malformed.
 */
static long head_strict_len(const uint8_t *b, size_t len)
{
	bool first_line = true;

	for (size_t i = 0; i < len; i++) {
		uint8_t ch = b[i];

		if (ch == '\r') {
			if (i + 1 < len && b[i + 1] != '\n')
				return -1;
			continue;
		}
		if (ch == '\n') {
			if (!i || b[i - 1] != '\r')
				return -1;
			/* "\r\n\r\n": the LF before that CR was checked */
			if (!first_line && b[i - 2] == '\n')
				return (long)(i + 1);
			first_line = false;
			if (i + 1 < len && (b[i + 1] == ' ' || b[i + 1] == '\t'))
				return -1;
			continue;
		}
		if ((ch < 0x20 && (ch != '\t' || first_line)) || ch == 0x7f)
			return -1;
	}
	return 0;
}

int http_head_parse(const uint8_t *buf, size_t len, struct http_head_info *out)
{
	static const http_parser_settings settings = {
		.on_url = on_url,
		.on_header_field = on_header_field,
		.on_header_value = on_header_value,
		.on_headers_complete = on_headers_complete,
	};
	struct head_ctx c = { 0 };
	enum http_errno herr;
	http_parser p;
	size_t feed, n;
	long strict;
	int ret;

	memset(out, 0, sizeof(*out));
	if (!buf || len == 0)
		return HTTP_HEAD_NEED_MORE;
	ret = method_prefix(buf, len);
	if (ret < 0)
		return HTTP_HEAD_NOT_HTTP;
	if (ret == 0)
		return HTTP_HEAD_NEED_MORE;

	feed = len < HTTP_HEAD_MAX_BYTES ? len : HTTP_HEAD_MAX_BYTES;
	strict = head_strict_len(buf, feed);
	if (strict < 0)
		return HTTP_HEAD_MALFORMED;
	http_parser_init(&p, HTTP_REQUEST);
	p.data = &c;
	n = http_parser_execute(&p, &settings, (const char *)buf, feed);
	herr = HTTP_PARSER_ERRNO(&p);

	if (!c.done) {
		if (herr == HPE_OK && n == feed)
			return len >= HTTP_HEAD_MAX_BYTES ? HTTP_HEAD_TOO_LARGE
							  : HTTP_HEAD_NEED_MORE;
		/* Unknown method or an HTTP/0.9-ish first line. */
		if (herr == HPE_INVALID_METHOD || herr == HPE_INVALID_CONSTANT)
			return HTTP_HEAD_NOT_HTTP;
		return HTTP_HEAD_MALFORMED;
	}
	if (herr != HPE_PAUSED)
		return HTTP_HEAD_MALFORMED;
	/* Paused in on_headers_complete, before the LF of the empty line;
	 * the first empty line by the strict reading too. */
	if (n >= feed || buf[n] != '\n' || strict != (long)n + 1)
		return HTTP_HEAD_MALFORMED;
	if (p.http_major != 1)
		return HTTP_HEAD_NOT_HTTP;

	ret = resolve_host(&p, &c, out);
	if (ret != HTTP_HEAD_OK) {
		memset(out, 0, sizeof(*out));
		return ret;
	}
	trim(&c.te);
	out->te_plain = c.n_te == 0 ||
			(c.n_te == 1 && c.te.len == 7 && !strncasecmp(c.te.p, "chunked", 7));
	out->upgrade_h2c = c.h2c;
	snprintf(out->method, sizeof(out->method), "%s",
		 http_method_str((enum http_method)p.method));
	out->head_len = n + 1;
	return HTTP_HEAD_OK;
}
