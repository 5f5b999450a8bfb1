// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * Unit tests for user/formscan.c: "_method" in a POST body as Rack,
 * Laravel and Symfony read it, every body fed whole, in two pieces at
 * every offset, and byte by byte.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <zlib.h>

#include "formscan.h"

/* rc of formscan_finish, the same for every split; *m the method. */
static int scan(const char *ct, const char *body, size_t len, const char **m)
{
	struct formscan s;
	const char *first = NULL;
	int want = 0;

	for (size_t at = 0; at <= len + 1; at++) {
		const char *got = NULL;
		int rc;

		assert_true(formscan_init(&s, ct, NULL) > 0);
		if (at == len + 1) {
			for (size_t i = 0; i < len; i++)
				formscan_feed(&s, (const uint8_t *)body + i, 1);
		} else {
			formscan_feed(&s, (const uint8_t *)body, at);
			formscan_feed(&s, (const uint8_t *)body + at, len - at);
		}
		rc = formscan_finish(&s, &got);
		if (!at) {
			want = rc;
			first = got;
		}
		assert_int_equal(rc, want);
		if (rc == 1)
			assert_string_equal(got, first);
	}
	*m = first;
	return want;
}

#define URL "application/x-www-form-urlencoded"
#define EXPECT(ct, body, rc, method)                                           \
	do {                                                                   \
		const char *m_ = NULL;                                         \
		assert_int_equal(scan(ct, body, sizeof(body) - 1, &m_), rc);   \
		if ((rc) == 1)                                                 \
			assert_string_equal(m_, method);                       \
	} while (0)

static void test_urlencoded(void **state)
{
	(void)state;
	EXPECT(URL, "a=1&_method=DELETE&b=2", 1, "DELETE");
	EXPECT(URL, "_method=patch", 1, "PATCH");        /* frameworks upper-case */
	EXPECT(URL, "%5Fmethod=put", 1, "PUT");          /* escapes in the name */
	EXPECT(URL, "_method=%44ELETE", 1, "DELETE");    /* and in the value */
	EXPECT(URL, "+_method=DELETE", 1, "DELETE");     /* PHP: leading spaces */
	EXPECT(URL, "%20%20_method=DELETE", 1, "DELETE");
	EXPECT(URL, ".method=DELETE", 1, "DELETE");      /* PHP: '.' is '_' */
	/* an unclosed '[' too (PHP 8.2 drops a name starting with '[':
	 * reading it as _method only refuses more) */
	EXPECT(URL, "[method=DELETE", 1, "DELETE");
	EXPECT(URL, "_method%00junk=DELETE", 1, "DELETE"); /* PHP stops at NUL */
	EXPECT(URL, "a=1;_method=DELETE", 1, "DELETE");  /* older Rack's ';' */
	/* PHP splits at '&' only, and cuts the name at a NUL: a ';' after
	 * it is no separator there */
	EXPECT(URL, "_method%00;x=DELETE", 1, "DELETE");
	EXPECT(URL, "_method%00;x=GET&a;_method=DELETE", -1, NULL);
	/* a long name: leading spaces dropped, nothing kept after a NUL */
	EXPECT(URL, "++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++"
		    "_method=DELETE", 1, "DELETE");
	EXPECT(URL, "_method%00xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
		    "=DELETE", 1, "DELETE");
	EXPECT(URL, "_method_of_payment_xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"
		    "=card", 0, NULL);
	EXPECT(URL, "_method=DELETE&_method=delete", 1, "DELETE");
	EXPECT(URL, "_method=DELETE&_method=PUT", -1, NULL); /* disagree */
	EXPECT(URL, "_method=NOPE", -1, NULL);
	EXPECT(URL, "_method=DELETE%00", -1, NULL);
	EXPECT(URL, "_method=DELETEDELETEDELETEDELETEDELETEDELETE", -1, NULL);
	EXPECT(URL, "_method=", 0, NULL);                /* frameworks ignore it */
	EXPECT(URL, "_method", 0, NULL);
	EXPECT(URL, "payment_method=card&x_method=DELETE", 0, NULL);
	EXPECT(URL, "_methods=DELETE&a=_method", 0, NULL);
	EXPECT(URL, "_method[]=DELETE", 1, "DELETE");    /* qs: an array of one */
	EXPECT(URL, "_method%5B0%5D=DELETE", 1, "DELETE");
	EXPECT(URL, "_method[x]=DELETE", 0, NULL);       /* a hash: no method */
	/* body-parser drops a byte order mark before Express reads the form */
	EXPECT(URL, "\xef\xbb\xbf_method=PATCH", 1, "PATCH");
	EXPECT(URL, "\xef\xbb\xbf%5Fmethod=Put&%5Fmethod=OPTIONS", -1, NULL);
	EXPECT(URL, "\xef\xbb_method=PATCH", 0, NULL);
	EXPECT(URL, "_method[0000000000000000000000000000000000000000000000000000000000000000]"
		    "=DELETE", -1, NULL);
	EXPECT(URL, "%zz_method=DELETE", 0, NULL);       /* '%' kept: not ours */
	EXPECT(URL, "", 0, NULL);
	EXPECT("", "_method=DELETE", 1, "DELETE");       /* Rack: no type is a form */
	EXPECT(URL "; charset=utf-8", "_method=DELETE", 1, "DELETE");
}

/* The query string, read as a form (reqrule: $_GET['_method']). */
static void test_query(void **state)
{
	static const struct { const char *q; int rc; const char *m; } c[] = {
		{ "_method=DELETE", 1, "DELETE" },
		{ "a=1&+%20_method=put", 1, "PUT" },
		{ "_method%00;x=DELETE", 1, "DELETE" },
		{ "_method=GET&++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++_method=DELETE", -1, NULL },
		{ "_method[00000000000000000000000000000000000000000000000000000000000000000000]=DELETE", -1, NULL },
		{ "\xef\xbb\xbf_method=DELETE", 0, NULL }, /* no BOM dropped from a query */
		{ "x_method=DELETE", 0, NULL },
		{ "", 0, NULL },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(c) / sizeof(c[0]); i++) {
		const char *m = NULL;
		int rc = formscan_query(c[i].q, strlen(c[i].q), &m);

		if (rc != c[i].rc || (rc == 1 && strcmp(m, c[i].m)))
			fail_msg("%s: %d %s", c[i].q, rc, m ? m : "-");
	}
}

#define MP "multipart/form-data; boundary=XyZ"

static void test_multipart(void **state)
{
	(void)state;
	EXPECT(MP, "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n"
		   "--XyZ\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\n"
		   "DELETE\r\n--XyZ--\r\n", 1, "DELETE");
	EXPECT(MP, "--XyZ\r\ncontent-disposition: form-data; NAME=_method\r\n\r\n"
		   "put\r\n--XyZ--", 1, "PUT");
	EXPECT(MP, "--XyZ\r\ncontent-disposition: form-data; name=\".method\"\r\n\r\n"
		   "DELETE\n--XyZ--", 1, "DELETE");             /* LF in content */
	/* part headers ending in a bare LF: where parsers part ways */
	EXPECT(MP, "--XyZ\ncontent-disposition: form-data; name=\"a\"\n\n"
		   "1\n--XyZ--", -1, NULL);
	EXPECT(MP, "--XyZ\r\nContent-Disposition: form-data; name=\"_meth\\od\"\r\n\r\n"
		   "DELETE\r\n--XyZ--", 1, "DELETE");           /* escapes either way */
	EXPECT(MP, "--XyZ\r\nContent-Disposition: form-data; filename=\"_method\"; "
		   "name=\"f\"\r\n\r\nDELETE\r\n--XyZ--", 0, NULL);
	EXPECT(MP, "--XyZ\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\n"
		   "DELETE\r\nmore\r\n--XyZ--", -1, NULL);      /* two lines: no method */
	EXPECT(MP, "--XyZ\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\n"
		   "DELETE", 1, "DELETE");                      /* never closed */
	EXPECT(MP, "preamble _method\r\n--XyZ\r\nContent-Disposition: form-data; "
		   "name=\"x\"\r\n\r\n_method=DELETE\r\n--XyZ--", 0, NULL);
	EXPECT("multipart/form-data; boundary=\"a b\"",
	       "--a b\r\nContent-Disposition: form-data; name=_method\r\n\r\nPATCH\r\n--a b--",
	       1, "PATCH");
}

static void test_multipart_long_header(void **state)
{
	static char body[FORMSCAN_LINE_MAX + 200];
	const char *m;
	size_t n, k;

	(void)state;
	/* a long file name is no reason to refuse */
	n = (size_t)snprintf(body, sizeof(body), "--XyZ\r\nContent-Disposition: form-data; "
			     "name=\"f\"; filename=\"");
	memset(body + n, 'a', 1000);
	n += 1000;
	n += (size_t)snprintf(body + n, sizeof(body) - n, "\"\r\n\r\nx\r\n--XyZ--");
	assert_int_equal(scan(MP, body, n, &m), 0);
	/* a field longer than a line buffer (PHP splits at 5120): refused */
	n = (size_t)snprintf(body, sizeof(body), "--XyZ\r\nContent-Disposition: form-data; "
			     "name=\"f\"; filename=\"");
	memset(body + n, 'a', FORMSCAN_LINE_MAX);
	n += FORMSCAN_LINE_MAX;
	k = n;
	n += (size_t)snprintf(body + n, sizeof(body) - k, "\"\r\n\r\nx\r\n--XyZ--");
	assert_int_equal(scan(MP, body, n, &m), -1);
}

static void test_json(void **state)
{
	(void)state;
	EXPECT("application/json", "{\"a\":1,\"_method\":\"DELETE\"}", 1, "DELETE");
	EXPECT("application/json", " { \"_method\" : \"patch\" } ", 1, "PATCH");
	EXPECT("application/json", "{\"\\u005fmethod\":\"\\u0044ELETE\"}", 1, "DELETE");
	EXPECT("application/vnd.api+json", "{\"_method\":\"PUT\"}", 1, "PUT");
	EXPECT("text/json; charset=utf-8", "{\"_method\":\"PUT\"}", 1, "PUT");
	EXPECT("application/json", "{\"a\":{\"_method\":\"DELETE\"}}", 0, NULL); /* nested */
	EXPECT("application/json", "[{\"_method\":\"DELETE\"}]", 0, NULL);
	EXPECT("application/json", "{\"a\":\"_method\",\"b\":\"DELETE\"}", 0, NULL);
	EXPECT("application/json", "{\"a\":\"x\\\"_method\\\":\",\"b\":1}", 0, NULL);
	EXPECT("application/json", "{\"_method\":\"DELETE\",\"_method\":\"PUT\"}", -1, NULL);
	EXPECT("application/json", "{\"_method\":[\"DELETE\"]}", -1, NULL);
	EXPECT("application/json", "{\"_method\":\"NOPE\"}", -1, NULL);
	EXPECT("application/json", "{\"_method\\u0000\":\"DELETE\"}", 0, NULL);
}

static void test_types(void **state)
{
	struct formscan s;

	(void)state;
	assert_int_equal(formscan_init(&s, NULL, NULL), FORMSCAN_URLENCODED);
	assert_int_equal(formscan_init(&s, " Application/X-WWW-Form-Urlencoded ", NULL),
			 FORMSCAN_URLENCODED);
	/* PHP cuts the media type at a blank or ',', Rack at ',' */
	assert_int_equal(formscan_init(&s, "application/x-www-form-urlencoded x", NULL),
			 FORMSCAN_URLENCODED);
	assert_int_equal(formscan_init(&s, "application/x-www-form-urlencoded,application/json",
				       NULL), FORMSCAN_URLENCODED | FORMSCAN_JSON);
	assert_int_equal(formscan_init(&s, "multipart/mixed; boundary=q", NULL),
			 FORMSCAN_MULTIPART);
	assert_int_equal(formscan_init(&s, "multipart/related; type=\"application/json\"; "
				       "boundary=b", NULL), FORMSCAN_MULTIPART | FORMSCAN_JSON);
	assert_int_equal(formscan_init(&s, "application/problem+JSON", NULL), FORMSCAN_JSON);
	/* Laravel: "/json" anywhere in the field */
	assert_int_equal(formscan_init(&s, "text/plain; x=/json", NULL), FORMSCAN_JSON);
	assert_int_equal(formscan_init(&s, "text/plain", NULL), 0);
	assert_int_equal(formscan_init(&s, "application/octet-stream", NULL), 0);
	/* unreadable as its server reads it */
	assert_int_equal(formscan_init(&s, "multipart/form-data", NULL), -EINVAL);
	assert_int_equal(formscan_init(&s, "multipart/form-data; boundary=", NULL), -EINVAL);
	/* PHP takes the first "boundary", Rack the last "boundary=" */
	assert_int_equal(formscan_init(&s, "multipart/form-data; boundaryx=B; boundary=A", NULL),
			 -EINVAL);
	assert_int_equal(formscan_init(&s, "multipart/form-data; boundary=\"A,B\"", NULL),
			 -EINVAL);
	assert_int_equal(formscan_init(&s, "application/json; charset=utf-16le", NULL), -EINVAL);
	/* blanks around '=' (body-parser allows them) */
	assert_int_equal(formscan_init(&s, "application/json; charset = utf-7", NULL), -EINVAL);
	assert_int_equal(formscan_init(&s, "application/json; charset =utf-8", NULL),
			 FORMSCAN_JSON);
	/* body-parser takes the last charset */
	assert_int_equal(formscan_init(&s, "application/json; x-charset=utf-8; charset=utf-16le",
				       NULL), -EINVAL);
	assert_int_equal(formscan_init(&s, "application/json; charset=UTF-8", NULL),
			 FORMSCAN_JSON);
	assert_int_equal(formscan_init(&s, "application/json", "br"), -ENOTSUP);
	assert_int_equal(formscan_init(&s, "application/json", "identity"), FORMSCAN_JSON);
	/* nothing to read in a type no framework takes _method from */
	assert_int_equal(formscan_init(&s, "text/plain", "br"), 0);
	formscan_feed(&s, (const uint8_t *)"_method=DELETE", 14);
	assert_int_equal(formscan_finish(&s, NULL), 0);
}

/* What parsers read differently: the scanner reads it as any of them,
 * or refuses the body. */
static void test_parser_differences(void **state)
{
	(void)state;
	EXPECT(URL, "[_method]=DELETE", 1, "DELETE");    /* Rack 2, qs */
	EXPECT(URL, "_method]=DELETE", 1, "DELETE");
	EXPECT(URL, "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["
		    "_method]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]=DELETE",
	       1, "DELETE");
	EXPECT(URL, "[][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][][]"
		    "_method=DELETE", 1, "DELETE");
	EXPECT("application/x-www-form-urlencoded,application/json", "_method=DELETE", 1,
	       "DELETE");
	EXPECT("text/plain; x=/json", "{\"_method\":\"DELETE\"}", 1, "DELETE");
	EXPECT("application/json", "{\"_method\":null}", 0, NULL);
	EXPECT(MP, "--XyZ\r\nContent-Disposition: form-data; name='_method'\r\n\r\n"
		   "DELETE\r\n--XyZ--", 1, "DELETE");     /* PHP's quotes */
	EXPECT(MP, "--XyZ\r\nContent-Disposition:name=_method\r\n\r\nDELETE\r\n--XyZ--",
	       1, "DELETE");
	EXPECT(MP, "--XyZ\r\nContent-Disposition: form-data; name=_method,\r\n\r\n"
		   "DELETE\r\n--XyZ--", 1, "DELETE");     /* Rack's token */
	EXPECT(MP, "--XyZ\r\nContent-ID: _method\r\n\r\nPUT\r\n--XyZ--", 1, "PUT");
	/* PHP joins a field line without ':' to the one before */
	EXPECT(MP, "--XyZ\r\nContent-Disposition: form-data; name=\"_met\r\nhod\"\r\n\r\n"
		   "DELETE\r\n--XyZ--", -1, NULL);
	EXPECT(MP, "--XyZ\r\nContent-Disposition: form-data; name=\r\n"
		   "                                                            "
		   "\"_method\"\r\n\r\nDELETE\r\n--XyZ--", -1, NULL);
	/* Rack ends part headers only at CRLF CRLF */
	EXPECT(MP, "--XyZ\r\nX-A: b\n\nContent-Disposition: form-data; name=\"_method\"\r\n"
		   "\r\nDELETE\r\n--XyZ--", -1, NULL);
	/* a part without headers: Rack reads the next lines as its headers */
	EXPECT(MP, "--XyZ\r\n\r\nContent-Disposition: form-data; name=\"_method\"\r\n\r\n"
		   "DELETE\r\n--XyZ--\r\n", -1, NULL);
	/* a decoy part read as named _method does not cover a hidden one */
	EXPECT(MP, "--XyZ\r\nContent-Disposition: form-data; name=decoy; x=a\\name=_method\r\n"
		   "\r\n\r\n--XyZ\r\nContent-Disposition: form-data; na\r\nme=_method\r\n\r\n"
		   "DELETE\r\n--XyZ--\r\n", -1, NULL);
	EXPECT(MP, "--XyZ\r\nContent-Disposition: form-data; name=_method\r\n\r\n\r\n"
		   "--XyZ\r\nContent-ID: \r\n _method\r\n\r\nDELETE\r\n--XyZ--\r\n", -1, NULL);
	/* blank lines after the close delimiter */
	EXPECT(MP, "--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n"
		   "--XyZ--\r\n\r\n\n", 0, NULL);
	/* a file's content is not read for names */
	EXPECT(MP, "--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a.html\"\r\n"
		   "\r\n<input name=\"_method\" value=\"patch\">\r\nself.name = method\r\n--XyZ--",
	       0, NULL);
	/* the boundary inside a line: PHP's 5120-byte lines could split there */
	EXPECT(MP, "--XyZ\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\n"
		   "data--XyZ\r\n--XyZ--", -1, NULL);
	EXPECT(MP, " \t--XyZ\r\nContent-ID: _method\r\n\r\nPUT\r\n--XyZ--", 1, "PUT");
	/* control bytes in part headers (a vertical tab PHP reads as a blank) */
	EXPECT(MP, "--XyZ\r\nContent-Disposition: form-data; name=\v_method\r\n\r\n"
		   "DELETE\r\n--XyZ--", -1, NULL);
	/* unquoted at the end of a line; Rack's backslash-unescaped name */
	EXPECT(MP, "--XyZ\r\nX: y; name=_method\r\n\r\nPATCH\r\n--XyZ--", 1, "PATCH");
	EXPECT(MP, "--XyZ\r\nContent-Disposition: form-data; name=\"_\\method\"\r\n\r\n"
		   "PATCH\r\n--XyZ--", 1, "PATCH");
}

/* Go's mime.ParseMediaType (r.FormValue, gorilla's override handler)
 * reads a boundary and a part's name where PHP and Rack do not. */
static void test_go_mime(void **state)
{
	struct formscan s;

	(void)state;
	/* RFC 2231 boundary: Go reads Y, PHP and Rack X */
	assert_int_equal(formscan_init(&s, "multipart/form-data; boundary=X; boundary*0=Y",
				       NULL), -EINVAL);
	assert_int_equal(formscan_init(&s, "multipart/form-data; BOUNDARY*=utf-8''Y; "
				       "boundary=X", NULL), -EINVAL);
	/* a quoted backslash: Go a"b, PHP and Rack a\ */
	assert_int_equal(formscan_init(&s, "multipart/form-data; boundary=\"a\\\"b\"", NULL),
			 -EINVAL);
	assert_int_equal(formscan_init(&s, "multipart/form-data; boundary=a\\b", NULL),
			 -EINVAL);
	/* blanks around the value: PHP and Rack "X ", Go X */
	assert_int_equal(formscan_init(&s, "multipart/form-data; boundary=X ;a=b", NULL),
			 -EINVAL);
	assert_int_equal(formscan_init(&s, "multipart/form-data; boundary=X\t", NULL),
			 -EINVAL);
	assert_int_equal(formscan_init(&s, "multipart/form-data; boundary= X", NULL), -EINVAL);
	/* the parameter named in another case (Go and WHATWG/undici fold
	 * names): G there, P in PHP and Rack; or two of them */
	assert_int_equal(formscan_init(&s, "multipart/form-data; BOUNDARY=G; x=\"boundary=P;\"",
				       NULL), -EINVAL);
	assert_int_equal(formscan_init(&s, "multipart/form-data; BOUNDARY=G; boundary=P", NULL),
			 -EINVAL);
	/* a boundary that says "Boundary" in its value (WebKit's) is fine */
	assert_int_equal(formscan_init(&s, "multipart/form-data; "
				       "boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW", NULL),
			 FORMSCAN_MULTIPART);
	/* still read: blanks inside quotes, a blank before the next one */
	assert_int_equal(formscan_init(&s, "multipart/form-data; boundary=\"a b\"", NULL),
			 FORMSCAN_MULTIPART);
	assert_int_equal(formscan_init(&s, "multipart/form-data; boundary=X; a=b", NULL),
			 FORMSCAN_MULTIPART);
	/* RFC 2231 part names: Go decodes and joins them into _method */
	EXPECT(MP, "--XyZ\r\nContent-Disposition: form-data; name*=utf-8''_method\r\n\r\n"
		   "DELETE\r\n--XyZ--", -1, NULL);
	EXPECT(MP, "--XyZ\r\nContent-Disposition: form-data; name*0=_; name*1=method\r\n\r\n"
		   "DELETE\r\n--XyZ--", -1, NULL);
	EXPECT(MP, "--XyZ\r\nContent-Disposition: form-data; name*=utf-8''%5Fmethod\r\n\r\n"
		   "DELETE\r\n--XyZ--", -1, NULL);
	EXPECT(MP, "--XyZ\r\nContent-Disposition: form-data; name=a; Name*=utf-8''b\r\n\r\n"
		   "DELETE\r\n--XyZ--", -1, NULL);
	/* a plain name next to it, or a filename*: read as before */
	EXPECT(MP, "--XyZ\r\nContent-Disposition: form-data; name=_method; "
		   "name*=utf-8''_method\r\n\r\nPUT\r\n--XyZ--", 1, "PUT");
	EXPECT(MP, "--XyZ\r\nContent-Disposition: form-data; name=f; "
		   "filename*=utf-8''a.txt\r\n\r\nDELETE\r\n--XyZ--", 0, NULL);
}

/* Slim reads _METHOD, ASP.NET Core's form lookup ignores case. */
static void test_method_any_case(void **state)
{
	const char *m;

	(void)state;
	EXPECT(URL, "_METHOD=DELETE", 1, "DELETE");
	EXPECT(URL, "[_Method]=PUT", 1, "PUT");
	EXPECT(URL, ".METHOD=DELETE", 1, "DELETE");
	EXPECT(MP, "--XyZ\r\nContent-Disposition: form-data; name=\"_METHOD\"\r\n\r\n"
		   "DELETE\r\n--XyZ--", 1, "DELETE");
	/* the safety net too: a hidden _METHOD is refused */
	EXPECT(MP, "--XyZ\r\nContent-Disposition: form-data; name=decoy; x=a\\name=_method\r\n"
		   "\r\n\r\n--XyZ\r\nContent-Disposition: form-data; na\r\nme=_METHOD\r\n\r\n"
		   "DELETE\r\n--XyZ--\r\n", -1, NULL);
	EXPECT("application/json", "{\"_Method\":\"PATCH\"}", 1, "PATCH");
	assert_int_equal(formscan_query("_mEtHoD=DELETE", 14, &m), 1);
	assert_string_equal(m, "DELETE");
}

/* Tomcat (Spring) and ASP.NET decode a form in its charset: in UTF-16,
 * "%00_%00m%00e..." is _method there. */
static void test_form_charset(void **state)
{
	struct formscan s;

	(void)state;
	assert_int_equal(formscan_init(&s, URL "; charset=UTF-16", NULL), -EINVAL);
	assert_int_equal(formscan_init(&s, URL "; charset=\"utf-16le\"", NULL), -EINVAL);
	assert_int_equal(formscan_init(&s, URL "; charset = utf-32", NULL), -EINVAL);
	assert_int_equal(formscan_init(&s, URL "; charset=utf-8; charset=utf-16", NULL),
			 -EINVAL);
	assert_int_equal(formscan_init(&s, URL "; x-charset=utf-16; charset=utf-8", NULL),
			 -EINVAL);
	assert_int_equal(formscan_init(&s, MP "; charset=utf-16", NULL), -EINVAL);
	assert_int_equal(formscan_init(&s, "multipart/form-data; charset=UTF-16BE; boundary=B",
				       NULL), -EINVAL);
	assert_int_equal(formscan_init(&s, URL "; charset", NULL), -EINVAL);
	/* charsets that read "_method" and the methods as the bytes do */
	assert_int_equal(formscan_init(&s, URL "; charset=UTF-8", NULL), FORMSCAN_URLENCODED);
	assert_int_equal(formscan_init(&s, URL "; charset=\"us-ascii\"", NULL),
			 FORMSCAN_URLENCODED);
	assert_int_equal(formscan_init(&s, URL "; Charset=ISO-8859-1", NULL),
			 FORMSCAN_URLENCODED);
	assert_int_equal(formscan_init(&s, MP "; charset=utf-8", NULL), FORMSCAN_MULTIPART);
	/* a type not read is not refused for its charset */
	assert_int_equal(formscan_init(&s, "text/plain; charset=utf-16", NULL), 0);
	/* JSON: UTF-8 only, as before */
	assert_int_equal(formscan_init(&s, "application/json; charset=iso-8859-1", NULL),
			 -EINVAL);
}

/* PHP splits lines at 5120 bytes: a delimiter after a long line. */
static void test_multipart_long_line(void **state)
{
	static char body[8192];
	const char *m;
	size_t n = 5120;

	(void)state;
	memset(body, 'x', n);
	n += (size_t)snprintf(body + n, sizeof(body) - n, "--XyZ\r\nContent-Disposition: "
			      "form-data; name=\"_method\"\r\n\r\nDELETE\r\n--XyZ--");
	assert_int_equal(scan(MP, body, n, &m), -1);
}

static void test_gzip(void **state)
{
	static const char body[] = "a=1&_method=DELETE";
	uint8_t z[256];
	z_stream zs = { 0 };
	struct formscan s;
	const char *m = NULL;

	(void)state;
	assert_int_equal(deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
	zs.next_in = (Bytef *)body;
	zs.avail_in = sizeof(body) - 1;
	zs.next_out = z;
	zs.avail_out = sizeof(z);
	assert_int_equal(deflate(&zs, Z_FINISH), Z_STREAM_END);
	for (size_t at = 0; at <= zs.total_out; at++) {
		assert_int_equal(formscan_init(&s, URL, "gzip"), FORMSCAN_URLENCODED);
		formscan_feed(&s, z, at);
		formscan_feed(&s, z + at, zs.total_out - at);
		assert_int_equal(formscan_finish(&s, &m), 1);
		assert_string_equal(m, "DELETE");
	}
	deflateEnd(&zs);
	/* cut short */
	assert_int_equal(formscan_init(&s, URL, "gzip"), FORMSCAN_URLENCODED);
	formscan_feed(&s, z, zs.total_out - 4);
	assert_int_equal(formscan_finish(&s, &m), -1);
	/* two members, as Node reads them: "a=1&_method=DELETE" "&b=2" */
	{
		uint8_t z2[64];
		z_stream z2s = { 0 };

		assert_int_equal(deflateInit2(&z2s, 6, Z_DEFLATED, 15 + 16, 8,
					      Z_DEFAULT_STRATEGY), Z_OK);
		z2s.next_in = (Bytef *)"&b=2";
		z2s.avail_in = 4;
		z2s.next_out = z2;
		z2s.avail_out = sizeof(z2);
		assert_int_equal(deflate(&z2s, Z_FINISH), Z_STREAM_END);
		assert_int_equal(formscan_init(&s, URL, "x-gzip"), FORMSCAN_URLENCODED);
		formscan_feed(&s, z, zs.total_out);
		formscan_feed(&s, z2, z2s.total_out);
		assert_int_equal(formscan_finish(&s, &m), 1);
		assert_string_equal(m, "DELETE");
		deflateEnd(&z2s);
	}
	/* not what it says it is */
	assert_int_equal(formscan_init(&s, URL, "gzip"), FORMSCAN_URLENCODED);
	formscan_feed(&s, (const uint8_t *)body, sizeof(body) - 1);
	assert_int_equal(formscan_finish(&s, &m), -1);
	/* PHP and Rack read the bytes as sent: a gzip header's file name
	 * (plain text) holding "&_method=DELETE&" counts too */
	{
		static const char inner[] = "a=1";
		gz_header h = { 0 };
		uint8_t g[256];

		memset(&zs, 0, sizeof(zs));
		assert_int_equal(deflateInit2(&zs, 6, Z_DEFLATED, 15 + 16, 8,
					      Z_DEFAULT_STRATEGY), Z_OK);
		h.name = (Bytef *)"x&_method=DELETE&y";
		assert_int_equal(deflateSetHeader(&zs, &h), Z_OK);
		zs.next_in = (Bytef *)inner;
		zs.avail_in = sizeof(inner) - 1;
		zs.next_out = g;
		zs.avail_out = sizeof(g);
		assert_int_equal(deflate(&zs, Z_FINISH), Z_STREAM_END);
		assert_int_equal(formscan_init(&s, URL, "gzip"), FORMSCAN_URLENCODED);
		formscan_feed(&s, g, zs.total_out);
		assert_int_equal(formscan_finish(&s, &m), 1);
		assert_string_equal(m, "DELETE");
		deflateEnd(&zs);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_urlencoded),
		cmocka_unit_test(test_query),
		cmocka_unit_test(test_multipart),
		cmocka_unit_test(test_multipart_long_header),
		cmocka_unit_test(test_json),
		cmocka_unit_test(test_types),
		cmocka_unit_test(test_parser_differences),
		cmocka_unit_test(test_go_mime),
		cmocka_unit_test(test_method_any_case),
		cmocka_unit_test(test_form_charset),
		cmocka_unit_test(test_multipart_long_line),
		cmocka_unit_test(test_gzip),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
