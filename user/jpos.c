// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * JSON positions and message helpers (jpos.h). The walker reads text that
 * jansson has already accepted, but it is still untrusted: every step is
 * bounds-checked, nesting beyond JPOS_MAX_DEPTH is skipped iteratively
 * rather than recursed into, and any disagreement with jansson makes the
 * build fail (the caller rejects the document) rather than misplace an
 * error.
 */
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "jpos.h"

/* Fields egressd reads live at most 8 levels down
 * (policies.NAME.intercept[i].rules[j].methods[k]); the tree goes deeper
 * only to place errors in foreign (srt) files. */
#define JPOS_MAX_DEPTH 32

/* --- JSON positions ----------------------------------------------------- */

struct walk {
	const char *s;
	size_t n, i;
	int line;
	int err;    /* -ENOMEM once an allocation failed, else 0 */
	bool lenient;
};

static void w_ws(struct walk *w)
{
	while (w->i < w->n) {
		char c = w->s[w->i];

		if (c == '\n')
			w->line++;
		else if (c != ' ' && c != '\t' && c != '\r')
			return;
		w->i++;
	}
}

/* At '"': step over the string; with out, decode it. jansson decodes the
 * token itself (escapes, surrogate pairs) so there is one JSON decoder. */
static bool w_string(struct walk *w, char **out)
{
	size_t start = w->i;
	bool escaped = false;

	if (w->i >= w->n || w->s[w->i] != '"')
		return false;
	w->i++;
	while (w->i < w->n && w->s[w->i] != '"') {
		if (w->s[w->i] == '\\') {
			escaped = true;
			w->i++;
		}
		w->i++;
	}
	if (w->i >= w->n)
		return false;
	w->i++;
	if (!out)
		return true;
	if (!escaped) {
		*out = strndup(w->s + start + 1, w->i - start - 2);
		if (!*out)
			w->err = -ENOMEM;
	} else {
		json_t *v = json_loadb(w->s + start, w->i - start, JSON_DECODE_ANY, NULL);

		*out = json_is_string(v) ? strdup(json_string_value(v)) : NULL;
		if (json_is_string(v) && !*out)
			w->err = -ENOMEM;
		json_decref(v);
	}
	return *out != NULL;
}

/* Step over one value of any kind, iteratively (nesting is unbounded). */
static bool w_skip(struct walk *w)
{
	size_t depth = 0, start = w->i;

	if (w->i >= w->n)
		return false;
	if (w->s[w->i] == '"')
		return w_string(w, NULL);
	if (w->s[w->i] != '{' && w->s[w->i] != '[') {
		/* numbers and true/false/null; anything else ends the scalar
		 * (jansson ends a number at a NUL byte, "[1\0]") */
		while (w->i < w->n) {
			char c = w->s[w->i];

			if (!isalnum((unsigned char)c) && c != '+' && c != '-' && c != '.')
				break;
			w->i++;
		}
		return w->i > start;
	}
	while (w->i < w->n) {
		char c = w->s[w->i];

		if (c == '"') {
			if (!w_string(w, NULL))
				return false;
			continue;
		}
		if (c == '{' || c == '[')
			depth++;
		else if (c == '}' || c == ']')
			depth--;
		else if (c == '\n')
			w->line++;
		w->i++;
		if (!depth)
			return true;
	}
	return false;
}

static bool w_value(struct walk *w, struct jpos *j, unsigned depth)
{
	char close;

	j->line = w->line;
	if (!j->key_line)
		j->key_line = w->line;
	j->start = w->i;
	if (w->i >= w->n)
		return false;
	if ((w->s[w->i] != '{' && w->s[w->i] != '[') || depth >= JPOS_MAX_DEPTH) {
		if (!w_skip(w))
			return false;
		j->end = w->i;
		/* jansson loses the byte it puts back after a number or a
		 * literal when that byte is a NUL: "[1\0]" is [1] to it */
		if (w->lenient && w->i < w->n && !w->s[w->i] && !strchr("\"{[", w->s[j->start]))
			w->i++;
		return true;
	}
	j->object = w->s[w->i] == '{';
	j->array = !j->object;
	close = j->object ? '}' : ']';
	w->i++;
	w_ws(w);
	if (w->i < w->n && w->s[w->i] == close) {
		j->end = ++w->i;
		return true;
	}
	for (;;) {
		struct jpos *kid, *kids;
		char *key = NULL;
		int key_line = 0;

		w_ws(w);
		if (j->object) {
			key_line = w->line;
			if (!w_string(w, &key))
				return false;
			w_ws(w);
			if (w->i >= w->n || w->s[w->i] != ':') {
				free(key);
				return false;
			}
			w->i++;
			w_ws(w);
		}
		/* capacity doubles at each power of two: a long array is
		 * not copied once per element */
		if (!(j->n_kids & (j->n_kids - 1))) {
			kids = realloc(j->kids, (j->n_kids ? 2 * j->n_kids : 1) * sizeof(*kids));
			if (!kids) {
				free(key);
				w->err = -ENOMEM;
				return false;
			}
			j->kids = kids;
		}
		kid = &j->kids[j->n_kids++];
		memset(kid, 0, sizeof(*kid));
		kid->key = key;
		kid->key_line = key_line;
		if (!w_value(w, kid, depth + 1))
			return false;
		w_ws(w);
		if (w->i < w->n && w->s[w->i] == ',') {
			w->i++;
			continue;
		}
		if (w->i < w->n && w->s[w->i] == close) {
			j->end = ++w->i;
			return true;
		}
		return false;
	}
}

static void jpos_clear(struct jpos *j)
{
	size_t i;

	for (i = 0; i < j->n_kids; i++)
		jpos_clear(&j->kids[i]);
	free(j->kids);
	free(j->key);
}

void jpos_free(struct jpos *j)
{
	if (!j)
		return;
	jpos_clear(j);
	free(j);
}

int jpos_build(const char *buf, size_t len, bool lenient, struct jpos **out)
{
	struct walk w = { buf, len, 0, 1, 0, lenient };
	struct jpos *j = calloc(1, sizeof(*j));
	bool ok;

	*out = NULL;
	if (!j)
		return -ENOMEM;
	w_ws(&w);
	ok = w_value(&w, j, 0);
	w_ws(&w);
	/* what was walked is in the tree either way: nodes are added
	 * before their values are walked */
	if (w.err || (!lenient && (!ok || w.i != w.n))) {
		jpos_free(j);
		return w.err ? w.err : -EINVAL;
	}
	*out = j;
	return 0;
}

const struct jpos *jpos_key(const struct jpos *j, const char *key)
{
	size_t i;

	if (!j || !j->object)
		return NULL;
	for (i = j->n_kids; i-- > 0;)
		if (!strcmp(j->kids[i].key, key))
			return &j->kids[i];
	return NULL;
}

const struct jpos *jpos_idx(const struct jpos *j, size_t i)
{
	if (!j || !j->array || i >= j->n_kids)
		return NULL;
	return &j->kids[i];
}

int jpos_line(const struct jpos *j, int fallback)
{
	return j ? j->line : fallback;
}

/* --- message helpers ---------------------------------------------------- */

const char *jpos_quote(const char *s, char *buf, size_t len)
{
	char cut[72];
	size_t n = strlen(s);
	bool more = n > 64;
	json_t *v;
	char *d;

	if (!len)
		return buf;
	if (more) {
		n = 64;
		/* do not split a UTF-8 sequence */
		while (n && ((unsigned char)s[n] & 0xc0) == 0x80)
			n--;
	}
	memcpy(cut, s, n);
	cut[n] = '\0';
	v = json_string(cut);
	d = v ? json_dumps(v, JSON_ENCODE_ANY | JSON_ENSURE_ASCII) : NULL;
	json_decref(v);
	if (!d) {
		snprintf(buf, len, "\"?\"");
		return buf;
	}
	if (more && strlen(d) >= 1)
		d[strlen(d) - 1] = '\0'; /* reopen to append "..." */
	snprintf(buf, len, "%s%s", d, more ? "...\"" : "");
	free(d);
	return buf;
}

const char *jpos_json_type(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT: return "an object";
	case JSON_ARRAY: return "an array";
	case JSON_STRING: return "a string";
	case JSON_INTEGER: return "an integer";
	case JSON_REAL: return "a number";
	case JSON_TRUE:
	case JSON_FALSE: return "a boolean";
	case JSON_NULL: return "null";
	}
	return "?";
}

/* Optimal string alignment distance, case folded; three rolling rows. */
static unsigned osa_distance(const char *a, const char *b)
{
	enum { MAXL = 64 };
	unsigned r0[MAXL + 1] = { 0 }, r1[MAXL + 1], r2[MAXL + 1], *pp = r0, *p = r1, *c = r2, *t;
	size_t la = strlen(a), lb = strlen(b), i, j;

	if (la > MAXL || lb > MAXL)
		return ~0u;
	for (j = 0; j <= lb; j++)
		p[j] = (unsigned)j;
	for (i = 1; i <= la; i++) {
		c[0] = (unsigned)i;
		for (j = 1; j <= lb; j++) {
			int ca = tolower((unsigned char)a[i - 1]);
			int cb = tolower((unsigned char)b[j - 1]);
			unsigned v = p[j - 1] + (ca != cb);

			if (p[j] + 1 < v)
				v = p[j] + 1;
			if (c[j - 1] + 1 < v)
				v = c[j - 1] + 1;
			if (i > 1 && j > 1 && ca == tolower((unsigned char)b[j - 2]) &&
			    tolower((unsigned char)a[i - 2]) == cb && pp[j - 2] + 1 < v)
				v = pp[j - 2] + 1;
			c[j] = v;
		}
		t = pp;
		pp = p;
		p = c;
		c = t;
	}
	return p[lb];
}

const char *jpos_suggest(const char *word, const char *const *cands, size_t n)
{
	const char *best = NULL;
	size_t wl = strlen(word), i;
	/* a third of the word, at least 1, at most 3 edits */
	unsigned limit = wl >= 9 ? 3 : wl >= 3 ? (unsigned)(wl / 3) : 1, bestd = ~0u;

	if (limit < 1)
		limit = 1;
	for (i = 0; i < n; i++) {
		unsigned d = osa_distance(word, cands[i]);

		if (d <= limit && d < bestd) {
			bestd = d;
			best = cands[i];
		}
	}
	return best;
}

