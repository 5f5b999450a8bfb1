/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * Where things are in a JSON file, for "FILE:LINE: FIELD: reason" errors,
 * and the helpers those messages share ("did you mean ...?", quoting,
 * type names). Used by the policy file loader (policy.c), the daemon
 * config (dconfig.c) and the sandbox-runtime import (srt.c).
 *
 * jansson reports no positions for values, so the raw text is walked once
 * more, after jansson accepted it, into a tree that mirrors the document;
 * nested fields are then placed without re-scanning per lookup.
 */
#ifndef EGR_JPOS_H
#define EGR_JPOS_H

#include <stdbool.h>
#include <stddef.h>
#include <jansson.h>

struct jpos {
	int line;                 /* line of the value's first byte */
	int key_line;             /* line of its key (== line for elements and the root) */
	size_t start, end;        /* byte range of the value */
	char *key;                /* decoded key, NULL for array elements and the root */
	struct jpos *kids;        /* members or elements, in file order */
	size_t n_kids;
	bool object, array;
};

/* Build the tree for buf (which jansson already accepted) into *out.
 * -EINVAL if the text cannot be walked (bytes jansson tolerates but the
 * walker does not, such as a NUL after a number: "[1\0]"); callers then
 * reject the document. lenient accepts what jansson accepts: a NUL right
 * after a number or literal is stepped over, and text the walker still
 * refuses is not an error, the tree then holds what could be walked
 * (lookups beyond it return NULL). -ENOMEM. */
int jpos_build(const char *buf, size_t len, bool lenient, struct jpos **out);
void jpos_free(struct jpos *j); /* accepts NULL */
/* Member key of an object node (the last one if repeated: jansson keeps
 * the last value too), NULL if absent or j is NULL. */
const struct jpos *jpos_key(const struct jpos *j, const char *key);
/* Element i of an array node, NULL if absent or j is NULL. */
const struct jpos *jpos_idx(const struct jpos *j, size_t i);
/* Line of j, or fallback if j is NULL. */
int jpos_line(const struct jpos *j, int fallback);

/* Quote untrusted text for a one-line message: in double quotes, with
 * JSON escapes, ASCII only, cut with "..." after 64 bytes. s must be
 * valid UTF-8 (jansson guarantees it for decoded values). Returns buf. */
const char *jpos_quote(const char *s, char *buf, size_t len);
/* The candidate closest to word (edit distance with transpositions, case
 * folded) if it is close enough to be a likely typo (1 edit for words up
 * to 5 bytes, 2 up to 8, 3 beyond), else NULL. Ties go to the first. */
const char *jpos_suggest(const char *word, const char *const *cands, size_t n);
/* "an object", "a string", "an integer", ... for messages. */
const char *jpos_json_type(const json_t *v);

#endif
