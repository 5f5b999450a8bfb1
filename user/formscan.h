/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * A method carried in a POST body: Rails (Rack::MethodOverride), Laravel
 * and Symfony take the request's method from a "_method" parameter of a
 * form body, and Laravel also from a JSON body's top-level "_method" key.
 * `POST /x` with `_method=DELETE` is a DELETE there. This finds such a
 * parameter in a body streamed in any split, the way those frameworks
 * read it, and where they read it differently, the way any of them does:
 *   - a form (application/x-www-form-urlencoded as PHP or Rack cut the
 *     media type, or no Content-Type: Rack reads a POST without one as a
 *     form): pairs split at '&', and read again split at '&' and ';'
 *     (older Rack; PHP does not, and a name it cuts at a NUL may hold
 *     one), '+' and %XX decoded, the name as PHP, Rack 2 or qs make it ("+_method",
 *     ".method", "[_method]" are "_method" there);
 *   - multipart (a "multipart/" type; PHP and Rack must agree on its
 *     boundary): every part whose header fields carry a name parameter
 *     (or a Content-ID) that is "_method"; its content is the value. The
 *     body must split into parts the same way for every parser: the
 *     boundary only at the start of a line (PHP also splits lines at 5120
 *     bytes), part headers in CRLF lines shorter than that without
 *     control bytes. As a safety net for how parsers read header fields
 *     (PHP joins folded lines, quotes, escapes), part headers are also
 *     searched for anything that may name a field _method ("name=" or
 *     "Content-ID:" before it, line breaks ignored): one in the headers
 *     of a part not read as named _method is a body this cannot read;
 *   - JSON (Laravel: "/json" or "+json" anywhere in the field): a string
 *     key "_method" of the top-level object, escapes decoded; UTF-8 only.
 * A type can be read several ways at once (a form type with "/json" in a
 * parameter): every way applies. A gzip or deflate Content-Encoding is
 * read decoded (body-parser decodes it) and as sent (PHP and Rack never
 * decode); one that does not decode to its end cannot be read.
 * Untrusted input; fuzzed (tests/fuzz/fuzz_formscan.c).
 */
#ifndef EGR_FORMSCAN_H
#define EGR_FORMSCAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum formscan_kind {
	FORMSCAN_URLENCODED = 1 << 0,
	FORMSCAN_MULTIPART = 1 << 1,
	FORMSCAN_JSON = 1 << 2,
};

#define FORMSCAN_BOUNDARY_MAX 70       /* RFC 2046 */
#define FORMSCAN_LINE_MAX 5000         /* a multipart part's header field (PHP
                                        * splits lines at 5120) */
#define FORMSCAN_DECODED_MAX (64ULL << 20) /* a compressed body, decoded */

struct formscan_url {
	bool semi;           /* pairs split at ';' too (Rack 2) */
	uint8_t bom;         /* bytes of a leading byte order mark seen (3: done) */
	bool in_value;
	uint8_t pct;         /* 0, or 1/2 digits of a %XX seen */
	uint8_t pct_hi;
	char name[64];
	size_t name_len;
	bool name_long;
	char val[32];
	size_t val_len;
	bool val_long;
};

struct formscan_mp {
	char boundary[FORMSCAN_BOUNDARY_MAX + 3]; /* "--" + boundary */
	size_t blen;
	size_t fail[FORMSCAN_BOUNDARY_MAX + 2]; /* KMP over the raw body */
	size_t kmp;
	char line[FORMSCAN_LINE_MAX];
	size_t line_len;
	size_t lpos;         /* bytes of the line so far (all of them) */
	size_t first_nonblank; /* in the line; SIZE_MAX: none yet */
	bool line_long;
	bool line_ctl;       /* a control byte or a bare CR in the line */
	bool line_delim;     /* the line starts with the delimiter */
	bool cr_seen;
	uint8_t state;       /* preamble, part headers, part content */
	bool part_is_method;
	char val[32];        /* such a part's content */
	size_t val_len;
	bool val_long;
	char brk[2];         /* the line break before the next content line */
	size_t brk_len;
	/* the safety net: part headers without line breaks, the last bytes */
	char tail[48];
	size_t tail_len;
	unsigned int hits;   /* places in this part's headers that may
	                      * name a field _method */
	unsigned int hdr_lines; /* header lines of this part so far */
	bool after_close;    /* after "--boundary--" */
	uint64_t brk_bits;   /* bit k: a break came out before the k-th
	                      * last byte of the tail */
	bool brk_next;
	uint64_t net_count;  /* bytes put in the tail so far */
	uint64_t hit_at;     /* net_count where the last hit's word ended */
};

struct formscan_js {
	int depth;
	bool top_object;     /* the top-level value is an object */
	uint8_t st;          /* tokenizer state */
	uint8_t esc_left;    /* hex digits of \uXXXX still to read */
	uint32_t esc_cp;
	bool expect_key;     /* at depth 1: the next string is a key */
	bool str_is_key;
	bool key_is_method;  /* the last key was "_method" */
	bool want_value;     /* after "_method": the next value is ours */
	bool in_literal;     /* inside a value such as null or 12 */
	char lit[5];
	size_t lit_len;
	char s[64];          /* the string being decoded */
	size_t s_len;
	bool s_long;
};

struct formscan {
	unsigned int kinds;  /* enum formscan_kind bits */
	bool bad;            /* several _method that disagree, an unknown
	                      * method, a body that cannot be read */
	const char *why;     /* the first of those (static text) */
	bool head_or_connect; /* a _method read as naming HEAD or CONNECT */
	const char *found;   /* the method (http-parser's name), or NULL */
	struct formscan_url u;  /* pairs split at '&' (PHP, qs, Go) */
	struct formscan_url us; /* ... and at ';' (Rack 2) */
	struct formscan_mp m;
	struct formscan_js j;
	void *z;             /* zlib stream of a compressed body */
	bool z_ended;        /* at the end of a member */
	uint64_t decoded;
	struct formscan *raw; /* a compressed body's bytes as sent, read too */
};

/*
 * What to read in a body with this Content-Type and Content-Encoding
 * value (NULL: none): fills s and returns its kinds (0: nothing to read).
 * -EINVAL: a body that cannot be read as its server reads it (a multipart
 * type whose boundary PHP, Rack or Go read differently or not at all, JSON
 * in a charset other than UTF-8, a form or multipart body in one other
 * than UTF-8, US-ASCII, ISO-8859-1); -ENOTSUP: an encoding other than gzip
 * or deflate; -ENOMEM.
 */
int formscan_init(struct formscan *s, const char *content_type,
		  const char *content_encoding);
/* The next bytes of the de-framed body. */
void formscan_feed(struct formscan *s, const uint8_t *b, size_t len);
/* At the end of the body: 0 no _method, 1 found (*method: http-parser's
 * name of it), -1 one that names no known method, or several that
 * disagree, or a body that cannot be read. Frees what init took. */
int formscan_finish(struct formscan *s, const char **method);
/*
 * A query string (after '?', len bytes) read as a form: the _method
 * Laravel and Symfony ($_GET), gorilla's handler and a configured Express
 * take from it, names read as for a form body (leading spaces dropped,
 * cut at a NUL, whatever their length). 0 none, 1 found (*method), -1
 * unknown, several that disagree, or a name too long to read that may be
 * _method.
 */
int formscan_query(const char *q, size_t len, const char **method);
/* Frees what init took (also after finish; a zeroed s is fine). */
void formscan_free(struct formscan *s);

#endif
