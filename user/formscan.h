/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * A method carried in a POST body: Rails (Rack::MethodOverride), Laravel
 * and Symfony take the request's method from a "_method" parameter of a
 * form body, and Laravel also from a JSON body's top-level "_method" key.
 * `POST /x` with `_method=DELETE` is a DELETE there. This finds such a
 * parameter in a body streamed in any split, the way those frameworks
 * read it:
 *   - application/x-www-form-urlencoded, or no Content-Type at all (Rack
 *     reads a POST without one as a form): pairs split at '&' (and ';',
 *     which older Rack split at), '+' and %XX decoded, the name as PHP
 *     makes it ("+_method", ".method", "[method" are "_method" there);
 *   - multipart/(any) with a boundary: every part whose header fields carry
 *     a name parameter that is "_method" (as above); its content is the
 *     value;
 *   - a media type containing "/json" or "+json": a string key
 *     "_method" of the top-level object (escapes decoded).
 * Where a framework and this scanner could disagree, the scanner sees
 * more, never less: more separators, any line starting with the
 * boundary a delimiter, any header field's name parameter.
 * Untrusted input; fuzzed (tests/fuzz/fuzz_formscan.c).
 */
#ifndef EGR_FORMSCAN_H
#define EGR_FORMSCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum formscan_kind {
	FORMSCAN_NONE = 0,      /* a body no framework reads _method from */
	FORMSCAN_URLENCODED = 1,
	FORMSCAN_MULTIPART = 2,
	FORMSCAN_JSON = 3,
};

#define FORMSCAN_BOUNDARY_MAX 70   /* RFC 2046 */
#define FORMSCAN_LINE_MAX 2048     /* a multipart part's header field */

struct formscan {
	enum formscan_kind kind;
	bool bad;            /* several _method that disagree, an unknown
	                      * method, a header field too long */
	const char *found;   /* the method (http-parser's name), or NULL */

	/* a parameter name or JSON string being decoded, and a value */
	char name[64];
	size_t name_len;
	bool name_long;
	char val[32];
	size_t val_len;
	bool val_long;

	/* urlencoded */
	bool in_value;
	uint8_t pct;         /* 0, or 1/2 digits of a %XX seen */
	uint8_t pct_hi;

	/* multipart */
	char boundary[FORMSCAN_BOUNDARY_MAX + 3]; /* "--" + boundary */
	size_t blen;
	char line[FORMSCAN_LINE_MAX];
	size_t line_len;
	bool line_long;
	uint8_t mp_state;    /* preamble, part headers, part content */
	bool part_is_method;

	/* JSON */
	int depth;
	bool top_object;     /* the top-level value is an object */
	uint8_t js;          /* tokenizer state */
	uint8_t esc_left;    /* hex digits of \uXXXX still to read */
	uint32_t esc_cp;
	bool expect_key;     /* at depth 1: the next string is a key */
	bool str_is_key;
	bool key_is_method;  /* the last key was "_method" */
	bool want_value;     /* after "_method": the next value is ours */
};

/*
 * What to scan for a body with this Content-Type value (NULL: none):
 * fills s and returns its kind; -EINVAL for a multipart type without a
 * usable boundary (the body cannot be read as its server reads it).
 */
int formscan_init(struct formscan *s, const char *content_type);
/* The next bytes of the de-framed body. */
void formscan_feed(struct formscan *s, const uint8_t *b, size_t len);
/* At the end of the body: 0 no _method, 1 found (*method: http-parser's
 * name of it), -1 one that names no known method, or several that
 * disagree, or a part header too long to read. */
int formscan_finish(struct formscan *s, const char **method);

#endif
