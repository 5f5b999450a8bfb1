// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * "_method" in a POST body (formscan.h). Streaming: every state survives
 * any split of the body, so a chunk boundary inside "%5F", a multipart
 * header field, a JSON escape or a gzip block changes nothing.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <zlib.h>

#include "formscan.h"
#include "reqrule.h"

enum { MP_PREAMBLE, MP_HEADERS, MP_CONTENT };
enum { JS_OUT, JS_STR, JS_ESC, JS_UHEX };
#define JS_DEPTH_MAX (1 << 20)

static void fs_bad(struct formscan *s, const char *why)
{
	if (!s->bad)
		s->why = why;
	s->bad = true;
}

/* A value given for _method: a known method, and the same each time. */
static void found_value(struct formscan *s, const char *v, size_t len, bool too_long)
{
	char buf[64];
	const char *m;

	if (!len && !too_long)
		return; /* "_method=": no method (Rack, Symfony fall back) */
	if (too_long || len >= sizeof(buf) || memchr(v, '\0', len)) {
		fs_bad(s, "_method too long or holding a NUL");
		return;
	}
	memcpy(buf, v, len);
	buf[len] = '\0';
	m = reqrule_method_name(buf);
	if (m && (!strcmp(m, "HEAD") || !strcmp(m, "CONNECT"))) {
		/* the answer would have no body, or be a tunnel, where
		 * egressd reads a POST's (see reqrule_check) */
		fs_bad(s, "_method naming HEAD or CONNECT");
		s->head_or_connect = true;
	}
	else if (!m || (s->found && strcmp(s->found, m)))
		fs_bad(s, "unknown method in _method, or several that disagree");
	else
		s->found = m;
}

/* ---- forms: application/x-www-form-urlencoded ---- */

static void url_put(struct formscan_url *u, uint8_t ch)
{
	if (!u->in_value) {
		/* PHP drops leading spaces of a name and reads it as a C
		 * string: nothing after a NUL counts. */
		if (!u->name_len && ch == ' ')
			return;
		if (u->name_len && !u->name[u->name_len - 1] && !u->name_long)
			return;
		/* Rack 2 and qs drop any run of brackets around a name: its
		 * first two stand for the run ("[]" stays: qs's array), so
		 * no run makes "_method" too long */
		if ((ch == '[' || ch == ']') && u->name_len >= 2 &&
		    (u->name[u->name_len - 1] == '[' || u->name[u->name_len - 1] == ']') &&
		    (u->name[u->name_len - 2] == '[' || u->name[u->name_len - 2] == ']'))
			return;
		if (u->name_len + 1 >= sizeof(u->name)) {
			u->name_long = true;
			return;
		}
		u->name[u->name_len++] = (char)ch;
		return;
	}
	if (u->val_len >= sizeof(u->val)) {
		u->val_long = true;
		return;
	}
	u->val[u->val_len++] = (char)ch;
}

/* A '%' not followed by two hex digits is itself. */
static void url_flush_pct(struct formscan_url *u)
{
	if (u->pct >= 1)
		url_put(u, '%');
	if (u->pct == 2)
		url_put(u, u->pct_hi);
	u->pct = 0;
}

/* Could a name too long to keep, that begins so, be _method? Past any
 * brackets (Rack 2, qs), "_method" (also as PHP maps '.', ' ', '[')
 * followed by a bracket: "_method[000...0]" is qs's array of one. */
static bool url_long_name_may_be_method(const char *n)
{
	const char *p = n + strspn(n, "[]");
	char c[8];

	for (size_t i = 0; i < 7; i++) {
		if (!p[i])
			return false;
		c[i] = p[i] == '.' || p[i] == ' ' || p[i] == '[' ? '_' : p[i];
	}
	c[7] = '\0';
	/* PHP reads a long name whole (no _method); qs and Rack 2 read
	 * brackets after it */
	return !strcasecmp(c, "_method") && (p[7] == '[' || p[7] == ']');
}

static void url_end_pair(struct formscan *s, struct formscan_url *u)
{
	url_flush_pct(u);
	u->name[u->name_len] = '\0';
	if (u->in_value && !u->name_long) {
		if (reqrule_param_is_method(u->name))
			found_value(s, u->val, u->val_len, u->val_long);
	} else if (u->in_value && url_long_name_may_be_method(u->name)) {
		fs_bad(s, "a form field name too long to read");
	}
	u->name_len = u->val_len = 0;
	u->name_long = u->val_long = u->in_value = false;
}

/* One reading of the pairs: split at '&' (PHP, qs, Go), or at '&' and
 * ';' too (u->semi: Rack 2). Both are read: a name PHP cuts at a NUL
 * may hold a ';' ("_method%00;x=DELETE" is _method there). */
static void url_feed_one(struct formscan *s, struct formscan_url *u, const uint8_t *b,
			 size_t len)
{
	for (size_t i = 0; i < len; i++) {
		uint8_t c = b[i];

		/* body-parser (iconv-lite) drops one UTF-8 byte order mark
		 * before Express parses a form; PHP and Rack keep it in the
		 * first name, which can then be no _method for them */
		if (u->bom < 3) {
			static const uint8_t bom[3] = { 0xef, 0xbb, 0xbf };

			if (c == bom[u->bom]) {
				if (++u->bom == 3)
					u->name_len = 0;
				else
					url_put(u, c);
				continue;
			}
			u->bom = 3;
		}

		if (u->pct == 1) {
			if (reqrule_hexval(c) >= 0) {
				u->pct_hi = c;
				u->pct = 2;
				continue;
			}
			url_flush_pct(u);
		} else if (u->pct == 2) {
			if (reqrule_hexval(c) >= 0) {
				url_put(u, (uint8_t)(reqrule_hexval(u->pct_hi) << 4 | reqrule_hexval(c)));
				u->pct = 0;
				continue;
			}
			url_flush_pct(u);
		}
		if (c == '&' || (c == ';' && u->semi))
			url_end_pair(s, u);
		else if (c == '=' && !u->in_value)
			u->in_value = true;
		else if (c == '+')
			url_put(u, ' ');
		else if (c == '%')
			u->pct = 1;
		else
			url_put(u, c);
	}
}

static void url_feed(struct formscan *s, const uint8_t *b, size_t len)
{
	url_feed_one(s, &s->u, b, len);
	url_feed_one(s, &s->us, b, len);
}

int formscan_query(const char *q, size_t len, const char **method)
{
	/* the thread's own: no allocation per request (an out-of-memory
	 * would read as a bad query) */
	static _Thread_local struct formscan ts;
	struct formscan *s = &ts;

	if (!q)
		return 0;
	memset(s, 0, sizeof(*s));
	s->kinds = FORMSCAN_URLENCODED;
	s->us.semi = true;
	/* no byte order mark is dropped from a query */
	s->u.bom = s->us.bom = 3;
	url_feed(s, (const uint8_t *)q, len);
	return formscan_finish(s, method);
}

/* ---- multipart ---- */

static bool is_word(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '-';
}

static bool is_blank(char c)
{
	return c == ' ' || c == '\t';
}

/* Does this parameter value name _method? Unquoted, as PHP (up to ';'
 * or a blank) and as Rack (up to a separator) read it; quoted with '"'
 * or '\'' (PHP), with and without backslash escapes. */
static bool mp_value_is_method(const char *v, size_t len)
{
	char a[64], b[64];
	size_t j = 0, ka = 0, kb = 0;

	if (len && (v[0] == '"' || v[0] == '\'')) {
		char q = v[0];
		bool esc = false;

		for (j = 1; j < len; j++) {
			char c = v[j];

			if (!esc && c == q)
				break;
			if (ka + 1 < sizeof(a))
				a[ka++] = c;
			if (!esc && c == '\\') {
				esc = true;
				continue;
			}
			esc = false;
			if (kb + 1 < sizeof(b))
				b[kb++] = c;
		}
	} else {
		for (j = 0; j < len && v[j] != ';' && !is_blank(v[j]); j++)
			if (ka + 1 < sizeof(a))
				a[ka++] = v[j];
		for (j = 0; j < len && !strchr(";, \t[]/?()<>=:\"", v[j]); j++)
			if (kb + 1 < sizeof(b))
				b[kb++] = v[j];
	}
	a[ka] = '\0';
	b[kb] = '\0';
	return reqrule_param_is_method(a) || reqrule_param_is_method(b);
}

/* A part's header field line: a name parameter, or a Content-ID (Rack
 * names a part by it, found anywhere in the line), that is _method?
 * *ext: the line has an RFC 2231 "name*" parameter ("name*=utf-8''_method",
 * "name*0=_; name*1=method", percent escapes): Go's mime package (and
 * busboy) decode and join them into the name, which is not read here. */
static bool mp_field_names_method(const char *l, size_t len, bool *ext)
{
	for (size_t i = 0; i + 11 <= len; i++) {
		size_t j = i + 11;

		if (strncasecmp(l + i, "content-id:", 11))
			continue;
		while (j < len && is_blank(l[j]))
			j++;
		if (mp_value_is_method(l + j, len - j))
			return true;
	}
	for (size_t i = 0; i + 5 <= len; i++) {
		size_t j;

		if (strncasecmp(l + i, "name", 4) || (i && is_word(l[i - 1])))
			continue;
		j = i + 4;
		while (j < len && is_blank(l[j]))
			j++;
		if (j < len && l[j] == '*') {
			*ext = true;
			j++;
		}
		if (j >= len || l[j] != '=')
			continue;
		j++;
		while (j < len && is_blank(l[j]))
			j++;
		if (mp_value_is_method(l + j, len - j))
			return true;
	}
	return false;
}

static void mp_val_add(struct formscan_mp *m, const char *p, size_t n)
{
	if (n > sizeof(m->val) - m->val_len) {
		m->val_long = true;
		return;
	}
	memcpy(m->val + m->val_len, p, n);
	m->val_len += n;
}

static void mp_net_check(struct formscan_mp *m, bool end);

/* The end of a part's headers: anything in them that may name a field
 * _method (the safety net) must be in a part read as named _method. */
static void mp_end_headers(struct formscan *s)
{
	struct formscan_mp *m = &s->m;

	mp_net_check(m, true);
	if (m->hits && !m->part_is_method)
		fs_bad(s, "a multipart field that may be _method could not be read");
	m->hits = 0;
}

static void mp_end_part(struct formscan *s)
{
	struct formscan_mp *m = &s->m;

	if (m->state == MP_CONTENT && m->part_is_method)
		found_value(s, m->val, m->val_len, m->val_long);
	m->part_is_method = false;
	m->val_len = m->brk_len = 0;
	m->val_long = false;
}

/* One line of the body, without its LF (nl: it had one). */
static void mp_line(struct formscan *s, bool nl)
{
	struct formscan_mp *m = &s->m;
	const char *l = m->line;
	size_t len = m->line_len;
	bool cr = nl && len && !m->line_long && l[len - 1] == '\r';
	bool ext = false;

	if (m->line_delim) {
		/* A line starting with the delimiter (after blanks, which
		 * Rack strips) is one, also "--B--" and with padding: seeing
		 * more of them than a server only adds parts to read. */
		size_t f = m->first_nonblank;

		if (m->state == MP_HEADERS)
			mp_end_headers(s);
		mp_end_part(s);
		m->state = MP_HEADERS;
		m->tail_len = 0;
		m->hdr_lines = 0;
		/* "--B--": what follows is read as more headers all the same
		 * (PHP finds "--B" in it), but blank lines may end a body */
		m->after_close = f != SIZE_MAX && f + m->blen + 2 <= len &&
				 !memcmp(l + f + m->blen, "--", 2);
		return;
	}
	switch (m->state) {
	case MP_PREAMBLE:
		return;
	case MP_HEADERS:
		if (m->after_close && !m->hdr_lines && (len == 0 || (len == 1 && cr)))
			return;
		/* Header lines as every parser splits them: CRLF, nothing
		 * longer than a line buffer, no control bytes (a bare CR or
		 * LF, a vertical tab: where parsers part ways). */
		if (!cr || m->line_long || m->line_ctl) {
			fs_bad(s, "a multipart part header that cannot be read");
			return;
		}
		if (len == 1) {
			/* Rack reads the lines after an empty first one as
			 * the part's headers (up to CRLF CRLF), PHP as content */
			if (!m->hdr_lines)
				fs_bad(s, "a multipart part header that cannot be read");
			mp_end_headers(s);
			m->state = MP_CONTENT;
			return;
		}
		m->hdr_lines++;
		if (mp_field_names_method(l, len - 1, &ext))
			m->part_is_method = true;
		/* a name this does not decode may be _method: the safety
		 * net's way, refused unless the part is read as _method */
		if (ext)
			m->hits++;
		return;
	case MP_CONTENT:
		if (!m->part_is_method)
			return;
		/* The content is the lines up to the delimiter, joined by
		 * their line breaks; the last one's belongs to the delimiter. */
		mp_val_add(m, m->brk, m->brk_len);
		m->brk_len = 0;
		if (m->line_long)
			m->val_long = true;
		else
			mp_val_add(m, l, len - cr);
		if (nl) {
			memcpy(m->brk, cr ? "\r\n" : "\n", cr ? 2 : 1);
			m->brk_len = cr ? 2 : 1;
		}
		return;
	}
}

/* What mp_net_check looks back over between "name=" and "method". */
static bool net_skip(char c)
{
	return c && strchr("[] \t\"'_.", c);
}

/* The safety net, over part headers only. end: a word ends after the
 * tail. Looks back from a "method" that ends the tail (just before its
 * last byte, or at the end): one of "_. [" before it, brackets, blanks,
 * quotes, then "name" and "=" ("name*=" too) or "content-id" and ":". */
static void mp_net_check(struct formscan_mp *m, bool end)
{
	const char *t = m->tail;
	size_t n = m->tail_len, i;
	uint64_t at = m->net_count; /* where the word ends in the headers */

	if (!end) {
		if (!n || is_word(t[n - 1]))
			return;
		n--;
		at--;
	}
	if (at == m->hit_at)
		return; /* counted already (at the line break before) */
	if (n < 7 || strncasecmp(t + n - 6, "method", 6) || !t[n - 7] || !strchr("_. [", t[n - 7]))
		return;
	i = n - 7;
	while (i > 0 && net_skip(t[i - 1]))
		i--;
	if (i > 0 && t[i - 1] == '=') {
		i--;
		if (i > 0 && t[i - 1] == '*')
			i--;
		while (i > 0 && is_blank(t[i - 1]))
			i--;
		/* "name", not "filename" (a line break or a backslash
		 * taken out before it separates too) */
		if (i >= 4 && !strncasecmp(t + i - 4, "name", 4) &&
		    (i == 4 || !is_word(t[i - 5]) || ((m->brk_bits >> (n - (i - 4) - 1 +
		     (end ? 0 : 1))) & 1))) {
			m->hits++;
			m->hit_at = at;
		}
	} else if (i > 0 && t[i - 1] == ':') {
		i--;
		while (i > 0 && is_blank(t[i - 1]))
			i--;
		if (i >= 10 && !strncasecmp(t + i - 10, "content-id", 10)) {
			m->hits++;
			m->hit_at = at;
		}
	}
}

static void mp_net_put(struct formscan_mp *m, uint8_t c)
{
	if (c == '\r' || c == '\n' || c == '\\') {
		/* PHP joins folded field lines without a separator; Rack
		 * drops backslashes from quoted names. A word ends here. */
		mp_net_check(m, true);
		m->brk_next = true;
		return;
	}
	/* A run of what the check skips is one byte of it: no run of
	 * blanks or brackets pushes "name=" out of the tail. */
	if (net_skip((char)c) && m->tail_len && net_skip(m->tail[m->tail_len - 1])) {
		m->tail[m->tail_len - 1] = (char)c;
		return;
	}
	if (m->tail_len == sizeof(m->tail)) {
		memmove(m->tail, m->tail + 1, sizeof(m->tail) - 1);
		m->tail_len--;
	}
	m->tail[m->tail_len++] = (char)c;
	m->brk_bits = m->brk_bits << 1 | m->brk_next;
	m->brk_next = false;
	m->net_count++;
	mp_net_check(m, false);
}

/* "--boundary" anywhere in the body: only at the start of a line (after
 * blanks) may it be, or a parser splitting lines otherwise (PHP at 5120
 * bytes) would find a delimiter, and a part, this cannot see. */
static void mp_kmp(struct formscan *s, uint8_t c)
{
	struct formscan_mp *m = &s->m;

	while (m->kmp && (uint8_t)m->boundary[m->kmp] != c)
		m->kmp = m->fail[m->kmp - 1];
	if ((uint8_t)m->boundary[m->kmp] == c)
		m->kmp++;
	if (m->kmp < m->blen)
		return;
	m->kmp = m->fail[m->kmp - 1];
	if (m->first_nonblank == m->lpos + 1 - m->blen)
		m->line_delim = true;
	else
		fs_bad(s, "a multipart boundary inside a line");
}

static void mp_feed(struct formscan *s, const uint8_t *b, size_t len)
{
	struct formscan_mp *m = &s->m;

	for (size_t i = 0; i < len; i++) {
		uint8_t c = b[i];

		if (m->state == MP_HEADERS)
			mp_net_put(m, c);
		if (m->cr_seen && c != '\n')
			m->line_ctl = true; /* a bare CR */
		m->cr_seen = c == '\r';
		if (c == '\n') {
			mp_line(s, true);
			m->kmp = 0;
			m->line_len = m->lpos = 0;
			m->first_nonblank = SIZE_MAX;
			m->line_long = m->line_ctl = m->line_delim = false;
			continue;
		}
		if ((c < 0x20 && c != '\t' && c != '\r') || c == 0x7f)
			m->line_ctl = true;
		if (m->first_nonblank == SIZE_MAX && !is_blank((char)c))
			m->first_nonblank = m->lpos;
		mp_kmp(s, c);
		m->lpos++;
		if (m->line_len < sizeof(m->line))
			m->line[m->line_len++] = (char)c;
		else
			m->line_long = true;
	}
}

/* ---- JSON ---- */

static void js_char(struct formscan_js *j, uint32_t cp)
{
	if (j->s_len + 1 >= sizeof(j->s)) {
		j->s_long = true;
		return;
	}
	/* Nothing outside ASCII is in a method or in "_method". */
	j->s[j->s_len++] = cp < 0x80 ? (char)cp : (char)0xff;
}

static void js_end_string(struct formscan *s)
{
	struct formscan_js *j = &s->j;

	j->st = JS_OUT;
	if (j->str_is_key) {
		j->key_is_method = !j->s_long && j->s_len == 7 && !strncasecmp(j->s, "_method", 7);
	} else if (j->want_value) {
		j->want_value = false;
		found_value(s, j->s, j->s_len, j->s_long);
	}
	j->s_len = 0;
	j->s_long = false;
}

/* The end of a value that is no string after "_method": null is no
 * method (Laravel falls back); a number, true or false is no method a
 * server knows. */
static void js_end_literal(struct formscan *s)
{
	struct formscan_js *j = &s->j;

	j->in_literal = false;
	if (!(j->lit_len == 4 && !memcmp(j->lit, "null", 4)))
		fs_bad(s, "_method given a number or boolean");
}

static void js_feed(struct formscan *s, const uint8_t *b, size_t len)
{
	struct formscan_js *j = &s->j;

	for (size_t i = 0; i < len; i++) {
		uint8_t c = b[i];
		int v;

		switch (j->st) {
		case JS_STR:
			if (c == '"')
				js_end_string(s);
			else if (c == '\\')
				j->st = JS_ESC;
			else
				js_char(j, c);
			continue;
		case JS_ESC:
			j->st = JS_STR;
			switch (c) {
			case 'u':
				j->st = JS_UHEX;
				j->esc_left = 4;
				j->esc_cp = 0;
				break;
			case 'b': js_char(j, '\b'); break;
			case 'f': js_char(j, '\f'); break;
			case 'n': js_char(j, '\n'); break;
			case 'r': js_char(j, '\r'); break;
			case 't': js_char(j, '\t'); break;
			default: js_char(j, c); break;
			}
			continue;
		case JS_UHEX:
			v = reqrule_hexval(c);
			if (v < 0) {
				/* not JSON: no server reads a method from it */
				j->s_long = true;
				j->st = JS_STR;
				i--;
				continue;
			}
			j->esc_cp = j->esc_cp << 4 | (uint32_t)v;
			if (--j->esc_left == 0) {
				js_char(j, j->esc_cp);
				j->st = JS_STR;
			}
			continue;
		default:
			break;
		}
		if (j->in_literal) {
			if (is_word((char)c) || c == '.' || c == '+') {
				if (j->lit_len < sizeof(j->lit))
					j->lit[j->lit_len++] = (char)c;
				continue;
			}
			js_end_literal(s);
		}
		if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
			continue;
		if (c == '"') {
			j->str_is_key = j->depth == 1 && j->top_object && j->expect_key;
			j->expect_key = false;
			j->s_len = 0;
			j->s_long = false;
			j->st = JS_STR;
			continue;
		}
		if (j->want_value) {
			/* _method given something other than a string */
			j->want_value = false;
			if (is_word((char)c)) {
				j->in_literal = true;
				j->lit[0] = (char)c;
				j->lit_len = 1;
				continue;
			}
			fs_bad(s, "_method given an object or array");
		}
		if (c == '{' || c == '[') {
			if (j->depth >= JS_DEPTH_MAX) {
				fs_bad(s, "JSON nested too deep to read");
				continue;
			}
			if (j->depth++ == 0)
				j->top_object = c == '{';
			if (j->depth == 1 && j->top_object)
				j->expect_key = true;
		} else if (c == '}' || c == ']') {
			if (j->depth > 0)
				j->depth--;
		} else if (c == ',') {
			if (j->depth == 1 && j->top_object)
				j->expect_key = true;
		} else if (c == ':') {
			if (j->depth == 1 && j->key_is_method)
				j->want_value = true;
			j->key_is_method = false;
		}
	}
}

/* ---- the decoded body ---- */

static void scan_plain(struct formscan *s, const uint8_t *b, size_t len)
{
	if (s->kinds & FORMSCAN_URLENCODED)
		url_feed(s, b, len);
	if (s->kinds & FORMSCAN_MULTIPART)
		mp_feed(s, b, len);
	if (s->kinds & FORMSCAN_JSON)
		js_feed(s, b, len);
}

/* gzip (also several members, as Node reads them) or zlib: inflated in
 * steps, never held whole; past FORMSCAN_DECODED_MAX the body is one
 * this cannot read. PHP and Rack read the bytes as sent: those are
 * scanned too (s->raw; a gzip header's file name is plain text). */
static void scan_inflate(struct formscan *s, const uint8_t *b, size_t len)
{
	z_stream *z = s->z;
	uint8_t out[16384];

	z->next_in = (Bytef *)(uintptr_t)b;
	z->avail_in = (uInt)len;
	while (!s->bad) {
		int rc;
		size_t n;

		if (s->z_ended) {
			if (!z->avail_in)
				return;
			if (inflateReset(z) != Z_OK) {
				fs_bad(s, "compressed body could not be decoded");
				return;
			}
			s->z_ended = false;
		}
		z->next_out = out;
		z->avail_out = sizeof(out);
		rc = inflate(z, Z_NO_FLUSH);
		n = sizeof(out) - z->avail_out;
		s->decoded += n;
		if (s->decoded > FORMSCAN_DECODED_MAX) {
			fs_bad(s, "compressed body too large once decoded");
			return;
		}
		scan_plain(s, out, n);
		if (rc == Z_STREAM_END) {
			s->z_ended = true;
			continue;
		}
		if (rc == Z_BUF_ERROR && !n)
			return; /* wants more input */
		if (rc != Z_OK && rc != Z_BUF_ERROR) {
			fs_bad(s, "compressed body could not be decoded");
			return;
		}
		/* all input taken and the output not full: nothing pending */
		if (!z->avail_in && z->avail_out)
			return;
	}
}

void formscan_feed(struct formscan *s, const uint8_t *b, size_t len)
{
	if (!s || !b || !s->kinds)
		return;
	if (s->z) {
		if (s->raw)
			scan_plain(s->raw, b, len);
		while (len) {
			size_t k = len > (1u << 30) ? (1u << 30) : len;

			scan_inflate(s, b, k);
			b += k;
			len -= k;
		}
		return;
	}
	scan_plain(s, b, len);
}

/* ---- Content-Type, Content-Encoding ---- */

static bool has_json(const char *ct)
{
	for (const char *p = ct; *p; p++)
		if ((*p == '/' || *p == '+') && !strncasecmp(p + 1, "json", 4))
			return true;
	return false;
}

static bool span_is(const char *p, size_t n, const char *word)
{
	return n == strlen(word) && !strncasecmp(p, word, n);
}

/* PHP's boundary: the first "boundary" (case first as written), then
 * past the next '='; quoted, or up to ',' or ';'. */
static int boundary_php(const char *ct, const char **v, size_t *n)
{
	const char *p = strstr(ct, "boundary"), *e;

	if (!p)
		p = strcasestr(ct, "boundary");
	if (!p || !(p = strchr(p, '=')))
		return -EINVAL;
	p++;
	if (*p == '"') {
		p++;
		e = strchr(p, '"');
		if (!e)
			return -EINVAL;
	} else {
		e = p + strcspn(p, ",;");
	}
	*v = p;
	*n = (size_t)(e - p);
	return 0;
}

/* Rack's: the last "boundary=" (any case), an optional '"', then up to
 * '"', ';' or ','. */
static int boundary_rack(const char *ct, const char **v, size_t *n)
{
	const char *p = NULL;

	for (const char *q = ct; (q = strcasestr(q, "boundary=")); q++)
		p = q + 9;
	if (!p)
		return -EINVAL;
	if (*p == '"')
		p++;
	*v = p;
	*n = strcspn(p, "\";,");
	return 0;
}

/*
 * The boundary as Go's mime.ParseMediaType and the WHATWG MIME parser
 * (undici: Node's fetch and Request.formData, Hono) read it: parameters
 * after the first ';', split at ';' outside quoted strings, names in any
 * case, a quoted value with '\' escapes. Returns how many parameters are
 * named "boundary" (any case), the first one's value in buf (*n bytes; cut
 * at cap, which then cannot match).
 */
static int boundary_mime(const char *ct, char *buf, size_t cap, size_t *n)
{
	const char *p = strchr(ct, ';'), *s, *e;
	int count = 0;

	*n = 0;
	while (p && *p == ';') {
		size_t k = 0;
		bool is_b;

		p++;
		while (is_blank(*p))
			p++;
		for (s = p; *p && *p != '=' && *p != ';'; p++)
			;
		for (e = p; e > s && is_blank(e[-1]); e--)
			;
		is_b = e - s == 8 && !strncasecmp(s, "boundary", 8);
		if (*p != '=')
			continue;
		p++;
		while (is_blank(*p))
			p++;
		if (*p == '"') {
			for (p++; *p && *p != '"'; p++) {
				if (*p == '\\' && p[1])
					p++;
				if (is_b && !count && k < cap)
					buf[k++] = *p;
			}
			if (*p == '"')
				p++;
		} else {
			for (; *p && *p != ';' && !is_blank(*p); p++)
				if (is_b && !count && k < cap)
					buf[k++] = *p;
		}
		if (is_b && !count++)
			*n = k;
		while (*p && *p != ';')
			p++;
	}
	return count;
}

static int mp_boundary(struct formscan_mp *m, const char *ct)
{
	char go[FORMSCAN_BOUNDARY_MAX + 1];
	size_t ngo;
	const char *a, *b;
	size_t na, nb;

	if (boundary_php(ct, &a, &na) || boundary_rack(ct, &b, &nb) ||
	    na != nb || memcmp(a, b, na) || !na || na > FORMSCAN_BOUNDARY_MAX)
		return -EINVAL;
	/* Go's mime.ParseMediaType (r.FormValue, gorilla's override
	 * handler; busboy alike) reads the boundary otherwise: an RFC 2231
	 * "boundary*0=Y" or "boundary*=" wins over "boundary=X", a quoted
	 * '\' escapes ("a\"b" is a"b there, a\ in PHP and Rack), blanks
	 * around an unquoted value are dropped ("X " is X). */
	if (strcasestr(ct, "boundary*") || memchr(a, '\\', na) ||
	    is_blank(a[0]) || is_blank(a[na - 1]))
		return -EINVAL;
	/* and names the parameter in any case: "BOUNDARY=G; x=\"boundary=P;\""
	 * is G there, P in PHP and Rack; two of them, one or the other */
	if (boundary_mime(ct, go, sizeof(go), &ngo) != 1 || ngo != na || memcmp(go, a, na))
		return -EINVAL;
	memcpy(m->boundary, "--", 2);
	memcpy(m->boundary + 2, a, na);
	m->blen = na + 2;
	/* KMP failure function of "--boundary" */
	m->fail[0] = 0;
	for (size_t i = 1, k = 0; i < m->blen; i++) {
		while (k && m->boundary[i] != m->boundary[k])
			k = m->fail[k - 1];
		if (m->boundary[i] == m->boundary[k])
			k++;
		m->fail[i] = k;
	}
	m->first_nonblank = SIZE_MAX;
	return 0;
}

/* JSON is read as UTF-8 (Laravel); body-parser honours a charset (the
 * last one given, blanks allowed around '='): every "charset" in the
 * field must be one that says UTF-8. A form's charset is honoured by
 * Tomcat (Spring) and ASP.NET: "%00_%00m%00e..." in UTF-16 is _method
 * there. Every "charset" must be one in which "_method" and the method
 * names are the ASCII bytes read here (form: also US-ASCII and
 * ISO-8859-1). */
static bool charset_ok(const char *ct, bool form)
{
	for (const char *p = ct; (p = strcasestr(p, "charset")); ) {
		size_t n;

		p += 7;
		while (is_blank(*p))
			p++;
		if (*p != '=')
			return false;
		p++;
		while (is_blank(*p))
			p++;
		if (*p == '"')
			p++;
		n = strcspn(p, "\";, \t");
		if (!span_is(p, n, "utf-8") && !span_is(p, n, "utf8") &&
		    (!form || (!span_is(p, n, "us-ascii") && !span_is(p, n, "iso-8859-1"))))
			return false;
	}
	return true;
}

int formscan_init(struct formscan *s, const char *ct, const char *ce)
{
	size_t php, rack;

	memset(s, 0, sizeof(*s));
	if (!ct)
		ct = "";
	while (*ct == ' ' || *ct == '\t')
		ct++;
	/* the media type as PHP cuts it (at ';', ',' or a blank) and as
	 * Rack does (at ';' or ',', blanks around trimmed) */
	php = strcspn(ct, ";, \t");
	rack = strcspn(ct, ";,");
	while (rack && (ct[rack - 1] == ' ' || ct[rack - 1] == '\t'))
		rack--;
	if (!rack || span_is(ct, php, "application/x-www-form-urlencoded") ||
	    span_is(ct, rack, "application/x-www-form-urlencoded"))
		s->kinds |= FORMSCAN_URLENCODED;
	if (!strncasecmp(ct, "multipart/", 10)) {
		s->kinds |= FORMSCAN_MULTIPART;
		if (mp_boundary(&s->m, ct))
			return -EINVAL;
	}
	if (has_json(ct)) {
		s->kinds |= FORMSCAN_JSON;
		if (!charset_ok(ct, false))
			return -EINVAL;
	}
	if ((s->kinds & (FORMSCAN_URLENCODED | FORMSCAN_MULTIPART)) && !charset_ok(ct, true))
		return -EINVAL;
	if (!s->kinds)
		return 0;
	s->us.semi = true;
	if (ce && *ce && strcasecmp(ce, "identity")) {
		z_stream *z;

		if (strcasecmp(ce, "gzip") && strcasecmp(ce, "x-gzip") &&
		    strcasecmp(ce, "deflate"))
			return -ENOTSUP;
		s->raw = malloc(sizeof(*s->raw));
		z = calloc(1, sizeof(*z));
		if (!z || !s->raw) {
			free(z);
			free(s->raw);
			s->raw = NULL;
			return -ENOMEM;
		}
		memcpy(s->raw, s, sizeof(*s)); /* the same reading, of the bytes as sent */
		s->raw->raw = NULL;
		/* 15 + 32: a gzip or a zlib header, whichever it is */
		if (inflateInit2(z, 15 + 32) != Z_OK) {
			free(z);
			free(s->raw);
			s->raw = NULL;
			return -ENOMEM;
		}
		s->z = z;
	}
	return (int)s->kinds;
}

void formscan_free(struct formscan *s)
{
	if (!s)
		return;
	if (s->z) {
		inflateEnd(s->z);
		free(s->z);
		s->z = NULL;
	}
	free(s->raw);
	s->raw = NULL;
}

int formscan_finish(struct formscan *s, const char **method)
{
	if (!s->kinds)
		return 0;
	if (s->raw) {
		const char *rm = NULL;
		int rr = formscan_finish(s->raw, &rm);

		if (s->raw->head_or_connect)
			s->head_or_connect = true;
		if (rr < 0)
			fs_bad(s, s->raw->why);
		else if (rr > 0)
			found_value(s, rm, strlen(rm), false);
	}
	if (s->z && !s->z_ended)
		fs_bad(s, "compressed body could not be decoded"); /* cut short */
	formscan_free(s);
	if (s->kinds & FORMSCAN_URLENCODED) {
		url_end_pair(s, &s->u);
		url_end_pair(s, &s->us);
	}
	if (s->kinds & FORMSCAN_MULTIPART) {
		struct formscan_mp *m = &s->m;

		/* an unterminated last line, and a part never closed */
		if (m->line_len || m->line_long)
			mp_line(s, false);
		m->line_len = 0;
		if (m->state == MP_HEADERS)
			mp_end_headers(s);
		mp_end_part(s);
	}
	if (s->kinds & FORMSCAN_JSON) {
		if (s->j.in_literal)
			js_end_literal(s);
		if (s->j.want_value)
			fs_bad(s, "_method given no value");
	}
	if (s->bad)
		return -1;
	if (!s->found)
		return 0;
	if (method)
		*method = s->found;
	return 1;
}
