// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * "_method" in a POST body (formscan.h). Streaming: every state survives
 * any split of the body, so a chunk boundary inside "%5F", a multipart
 * header field or a JSON escape changes nothing.
 */
#include <errno.h>
#include <string.h>
#include <strings.h>

#include "formscan.h"
#include "reqrule.h"

enum { MP_PREAMBLE, MP_HEADERS, MP_CONTENT };
enum { JS_OUT, JS_STR, JS_ESC, JS_UHEX };

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* A value given for _method: a known method, and the same each time. */
static void found_value(struct formscan *s, const char *v, size_t len, bool too_long)
{
	char buf[sizeof(s->name) + 1]; /* a JSON value is decoded there */
	const char *m;

	if (!len && !too_long)
		return; /* "_method=": no method (Rack, Symfony fall back) */
	if (too_long || len >= sizeof(buf) || memchr(v, '\0', len)) {
		s->bad = true;
		return;
	}
	memcpy(buf, v, len);
	buf[len] = '\0';
	m = reqrule_method_name(buf);
	if (!m || (s->found && strcmp(s->found, m)))
		s->bad = true;
	else
		s->found = m;
}

static void reset_name_val(struct formscan *s)
{
	s->name_len = s->val_len = 0;
	s->name_long = s->val_long = false;
}

/* ---- application/x-www-form-urlencoded ---- */

static void url_put(struct formscan *s, uint8_t ch)
{
	if (!s->in_value) {
		/* PHP drops leading spaces of a name and reads it as a C
		 * string: nothing after a NUL counts. */
		if (!s->name_len && ch == ' ')
			return;
		if (s->name_len && !s->name[s->name_len - 1] && !s->name_long)
			return;
		if (s->name_len + 1 >= sizeof(s->name)) {
			s->name_long = true;
			return;
		}
		s->name[s->name_len++] = (char)ch;
		return;
	}
	if (s->val_len >= sizeof(s->val)) {
		s->val_long = true;
		return;
	}
	s->val[s->val_len++] = (char)ch;
}

/* A '%' not followed by two hex digits is itself. */
static void url_flush_pct(struct formscan *s)
{
	if (s->pct >= 1)
		url_put(s, '%');
	if (s->pct == 2)
		url_put(s, s->pct_hi);
	s->pct = 0;
}

static void url_end_pair(struct formscan *s)
{
	url_flush_pct(s);
	if (s->in_value && !s->name_long) {
		s->name[s->name_len] = '\0';
		if (reqrule_param_is_method(s->name))
			found_value(s, s->val, s->val_len, s->val_long);
	}
	reset_name_val(s);
	s->in_value = false;
}

static void url_feed(struct formscan *s, const uint8_t *b, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		uint8_t c = b[i];

		if (s->pct == 1) {
			if (hexval(c) >= 0) {
				s->pct_hi = c;
				s->pct = 2;
				continue;
			}
			url_flush_pct(s);
		} else if (s->pct == 2) {
			if (hexval(c) >= 0) {
				url_put(s, (uint8_t)(hexval(s->pct_hi) << 4 | hexval(c)));
				s->pct = 0;
				continue;
			}
			url_flush_pct(s);
		}
		if (c == '&' || c == ';')
			url_end_pair(s);
		else if (c == '=' && !s->in_value)
			s->in_value = true;
		else if (c == '+')
			url_put(s, ' ');
		else if (c == '%')
			s->pct = 1;
		else
			url_put(s, c);
	}
}

/* ---- multipart ---- */

/* Does a header field line carry a name parameter that is _method? A
 * quoted value is read both with and without backslash escapes (parsers
 * differ); "filename=" is not "name=". */
static bool mp_names_method(const char *l, size_t len)
{
	for (size_t i = 0; i + 5 <= len; i++) {
		char a[64], b[64];
		size_t j, ka = 0, kb = 0;

		if (strncasecmp(l + i, "name", 4) ||
		    (i && l[i - 1] != ';' && l[i - 1] != ' ' && l[i - 1] != '\t'))
			continue;
		j = i + 4;
		while (j < len && (l[j] == ' ' || l[j] == '\t'))
			j++;
		if (j >= len || l[j] != '=')
			continue;
		j++;
		while (j < len && (l[j] == ' ' || l[j] == '\t'))
			j++;
		if (j < len && l[j] == '"') {
			bool esc = false;

			for (j++; j < len; j++) {
				char c = l[j];

				if (!esc && c == '"')
					break;
				if (ka + 1 < sizeof(a))
					a[ka++] = c; /* raw */
				if (!esc && c == '\\') {
					esc = true;
					continue;
				}
				esc = false;
				if (kb + 1 < sizeof(b))
					b[kb++] = c; /* unescaped */
			}
		} else {
			for (; j < len && l[j] != ';' && l[j] != ' ' && l[j] != '\t'; j++)
				if (ka + 1 < sizeof(a))
					a[ka++] = l[j];
			memcpy(b, a, ka);
			kb = ka;
		}
		a[ka] = '\0';
		b[kb] = '\0';
		if (reqrule_param_is_method(a) || reqrule_param_is_method(b))
			return true;
	}
	return false;
}

static void mp_val_add(struct formscan *s, const char *p, size_t n)
{
	if (n > sizeof(s->val) - s->val_len) {
		s->val_long = true;
		return;
	}
	memcpy(s->val + s->val_len, p, n);
	s->val_len += n;
}

static void mp_end_part(struct formscan *s)
{
	if (s->mp_state == MP_CONTENT && s->part_is_method)
		found_value(s, s->val, s->val_len, s->val_long);
	s->part_is_method = false;
	reset_name_val(s);
}

/* One line of the body, without its LF (nl: it had one). */
static void mp_line(struct formscan *s, bool nl)
{
	const char *l = s->line;
	size_t len = s->line_len;
	bool cr = nl && len && l[len - 1] == '\r';

	if (len >= s->blen && !memcmp(l, s->boundary, s->blen)) {
		/* Any line starting with the delimiter is one (also "--B--",
		 * and with padding): seeing more of them than the server
		 * only adds parts to check. */
		mp_end_part(s);
		s->mp_state = MP_HEADERS;
		return;
	}
	switch (s->mp_state) {
	case MP_PREAMBLE:
		return;
	case MP_HEADERS:
		if (len == (size_t)cr) {
			s->mp_state = MP_CONTENT;
			return;
		}
		if (s->line_long) {
			s->bad = true; /* a field we cannot read */
			return;
		}
		if (mp_names_method(l, len - cr))
			s->part_is_method = true;
		return;
	case MP_CONTENT:
		if (!s->part_is_method)
			return;
		/* The content is the lines up to the delimiter, joined by
		 * their line breaks; the last one's belongs to the delimiter. */
		if (s->val_len || s->name_len)
			mp_val_add(s, s->name, s->name_len); /* the previous break */
		s->name_len = 0;
		if (s->line_long)
			s->val_long = true;
		else
			mp_val_add(s, l, len - cr);
		if (nl) {
			memcpy(s->name, cr ? "\r\n" : "\n", cr ? 2 : 1);
			s->name_len = cr ? 2 : 1;
		}
		return;
	}
}

static void mp_feed(struct formscan *s, const uint8_t *b, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (b[i] == '\n') {
			mp_line(s, true);
			s->line_len = 0;
			s->line_long = false;
			continue;
		}
		if (s->line_len < sizeof(s->line))
			s->line[s->line_len++] = (char)b[i];
		else
			s->line_long = true;
	}
}

/* ---- JSON ---- */

static void js_char(struct formscan *s, uint32_t cp)
{
	if (s->name_len + 1 >= sizeof(s->name)) {
		s->name_long = true;
		return;
	}
	/* Nothing outside ASCII is in a method or in "_method". */
	s->name[s->name_len++] = cp < 0x80 ? (char)cp : (char)0xff;
}

static void js_end_string(struct formscan *s)
{
	s->js = JS_OUT;
	if (s->str_is_key) {
		s->key_is_method = !s->name_long && s->name_len == 7 &&
				   !memcmp(s->name, "_method", 7);
	} else if (s->want_value) {
		s->want_value = false;
		found_value(s, s->name, s->name_len, s->name_long);
	}
	reset_name_val(s);
}

static void js_feed(struct formscan *s, const uint8_t *b, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		uint8_t c = b[i];
		int v;

		switch (s->js) {
		case JS_STR:
			if (c == '"')
				js_end_string(s);
			else if (c == '\\')
				s->js = JS_ESC;
			else
				js_char(s, c);
			continue;
		case JS_ESC:
			s->js = JS_STR;
			switch (c) {
			case 'u':
				s->js = JS_UHEX;
				s->esc_left = 4;
				s->esc_cp = 0;
				break;
			case 'b': js_char(s, '\b'); break;
			case 'f': js_char(s, '\f'); break;
			case 'n': js_char(s, '\n'); break;
			case 'r': js_char(s, '\r'); break;
			case 't': js_char(s, '\t'); break;
			default: js_char(s, c); break;
			}
			continue;
		case JS_UHEX:
			v = hexval(c);
			if (v < 0) {
				/* not JSON: no server reads a method from it */
				s->name_long = true;
				s->js = JS_STR;
				i--;
				continue;
			}
			s->esc_cp = s->esc_cp << 4 | (uint32_t)v;
			if (--s->esc_left == 0) {
				js_char(s, s->esc_cp);
				s->js = JS_STR;
			}
			continue;
		default:
			break;
		}
		if (c == ' ' || c == '\t' || c == '\n' || c == '\r')
			continue;
		if (c == '"') {
			s->str_is_key = s->depth == 1 && s->top_object && s->expect_key;
			s->expect_key = false;
			if (s->want_value && s->depth != 1)
				s->want_value = false;
			reset_name_val(s);
			s->js = JS_STR;
			continue;
		}
		if (s->want_value) {
			/* _method given something other than a string */
			s->want_value = false;
			s->bad = true;
		}
		if (c == '{' || c == '[') {
			/* (deeper than PHP's 512: no JSON to PHP at all) */
			if (s->depth < (1 << 20) && s->depth++ == 0)
				s->top_object = c == '{';
			if (s->depth == 1 && s->top_object)
				s->expect_key = true;
		} else if (c == '}' || c == ']') {
			if (s->depth > 0)
				s->depth--;
		} else if (c == ',') {
			if (s->depth == 1 && s->top_object)
				s->expect_key = true;
		} else if (c == ':') {
			if (s->depth == 1 && s->key_is_method)
				s->want_value = true;
			s->key_is_method = false;
		}
	}
}

/* ---- Content-Type ---- */

static bool has_json(const char *ct)
{
	for (const char *p = ct; *p; p++)
		if ((*p == '/' || *p == '+') && !strncasecmp(p + 1, "json", 4))
			return true;
	return false;
}

/* The boundary parameter: exactly one (Rack takes the last, PHP the
 * first), quoted or up to ';' or ','. */
static int mp_boundary(struct formscan *s, const char *ct)
{
	const char *p = NULL, *q, *e;
	size_t n;

	for (q = ct; *q; q++)
		if (!strncasecmp(q, "boundary=", 9)) {
			if (p)
				return -EINVAL;
			p = q + 9;
		}
	if (!p)
		return -EINVAL;
	if (*p == '"') {
		p++;
		e = strchr(p, '"');
		if (!e)
			return -EINVAL;
	} else {
		e = p + strcspn(p, "\";,");
	}
	n = (size_t)(e - p);
	if (!n || n > FORMSCAN_BOUNDARY_MAX)
		return -EINVAL;
	memcpy(s->boundary, "--", 2);
	memcpy(s->boundary + 2, p, n);
	s->blen = n + 2;
	return 0;
}

int formscan_init(struct formscan *s, const char *ct)
{
	char mt[64];
	size_t n;

	memset(s, 0, sizeof(*s));
	if (!ct)
		ct = "";
	while (*ct == ' ' || *ct == '\t')
		ct++;
	n = strcspn(ct, ";");
	while (n && (ct[n - 1] == ' ' || ct[n - 1] == '\t'))
		n--;
	if (n >= sizeof(mt))
		n = sizeof(mt) - 1;
	memcpy(mt, ct, n);
	mt[n] = '\0';
	if (has_json(mt)) {
		s->kind = FORMSCAN_JSON;
	} else if (!*mt || !strcasecmp(mt, "application/x-www-form-urlencoded")) {
		s->kind = FORMSCAN_URLENCODED;
	} else if (!strncasecmp(mt, "multipart/", 10)) {
		s->kind = FORMSCAN_MULTIPART;
		if (mp_boundary(s, ct))
			return -EINVAL;
	} else {
		return FORMSCAN_NONE;
	}
	/* Laravel reads a body as JSON if "/json" is anywhere in the field
	 * (a parameter too); Rack and PHP by the media type. */
	if (s->kind != FORMSCAN_JSON && has_json(ct))
		return -EINVAL;
	return s->kind;
}

void formscan_feed(struct formscan *s, const uint8_t *b, size_t len)
{
	if (!s || !b)
		return;
	switch (s->kind) {
	case FORMSCAN_URLENCODED:
		url_feed(s, b, len);
		break;
	case FORMSCAN_MULTIPART:
		mp_feed(s, b, len);
		break;
	case FORMSCAN_JSON:
		js_feed(s, b, len);
		break;
	default:
		break;
	}
}

int formscan_finish(struct formscan *s, const char **method)
{
	switch (s->kind) {
	case FORMSCAN_URLENCODED:
		url_end_pair(s);
		break;
	case FORMSCAN_MULTIPART:
		/* an unterminated last line, and a part never closed */
		if (s->line_len || s->line_long)
			mp_line(s, false);
		s->line_len = 0;
		mp_end_part(s);
		break;
	case FORMSCAN_JSON:
		if (s->want_value)
			s->bad = true;
		break;
	default:
		return 0;
	}
	if (s->bad)
		return -1;
	if (!s->found)
		return 0;
	if (method)
		*method = s->found;
	return 1;
}
