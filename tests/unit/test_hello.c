// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * Unit tests for user/hello.c: real ClientHellos captured from curl,
 * openssl, node, python, wget and java (tests/fuzz/capture-hellos.py,
 * loaded from tests/fuzz/corpus/hello/ -- run from the repo root), split
 * at every offset and re-framed into many records, plus synthetic hellos
 * from a small builder for the hostile cases.
 */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "hello.h"

#define CORPUS_DIR "tests/fuzz/corpus/hello/"
#define BUILD_MAX (HELLO_MAX_BYTES + 4096)

/* ---------------------------------------------------------------------- */
/* Helpers                                                                */

static uint8_t *load_file(const char *name, size_t *len)
{
	char path[256];
	uint8_t *buf;
	FILE *f;
	long n;

	snprintf(path, sizeof(path), CORPUS_DIR "%s", name);
	f = fopen(path, "rb");
	if (!f) {
		print_error("cannot open %s (run from the repo root)\n", path);
		return NULL;
	}
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc(n > 0 ? (size_t)n : 1);
	if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
		free(buf);
		buf = NULL;
	}
	fclose(f);
	*len = (size_t)n;
	return buf;
}

/* Same result, field by field (consumed is checked by the callers). */
static void assert_same_info(const struct hello_info *a,
			     const struct hello_info *b)
{
	assert_int_equal(a->has_sni, b->has_sni);
	assert_string_equal(a->sni, b->sni);
	assert_int_equal(a->sni_valid, b->sni_valid);
	assert_int_equal(a->has_alpn, b->has_alpn);
	assert_string_equal(a->alpn, b->alpn);
	assert_int_equal(a->has_ech, b->has_ech);
	assert_int_equal(a->legacy_version, b->legacy_version);
}

/*
 * Take the handshake message out of well-formed records (any framing).
 * Returns its length, header included.
 */
static size_t unframe(const uint8_t *rec, size_t len, uint8_t *hs)
{
	size_t off = 0, got = 0;

	while (off + 5 <= len) {
		size_t rlen = (size_t)rec[off + 3] << 8 | rec[off + 4];

		assert_true(off + 5 + rlen <= len);
		memcpy(hs + got, rec + off + 5, rlen);
		got += rlen;
		off += 5 + rlen;
	}
	return got;
}

/* Wrap a handshake message into records of at most rec_size bytes. */
static size_t frame(const uint8_t *hs, size_t hs_len, size_t rec_size,
		    uint8_t *out)
{
	size_t off = 0, o = 0;

	while (off < hs_len) {
		size_t n = hs_len - off < rec_size ? hs_len - off : rec_size;

		out[o++] = 22;
		out[o++] = 3;
		out[o++] = 1;
		out[o++] = (uint8_t)(n >> 8);
		out[o++] = (uint8_t)n;
		memcpy(out + o, hs + off, n);
		o += n;
		off += n;
	}
	return o;
}

/* ---------------------------------------------------------------------- */
/* ClientHello builder for synthetic cases                                */

struct buf {
	uint8_t *p;
	size_t len;
};

static void put_u8(struct buf *b, unsigned int v)
{
	assert_true(b->len + 1 <= BUILD_MAX);
	b->p[b->len++] = (uint8_t)v;
}

static void put_u16(struct buf *b, unsigned int v)
{
	put_u8(b, v >> 8);
	put_u8(b, v);
}

static void put_bytes(struct buf *b, const void *p, size_t n)
{
	assert_true(b->len + n <= BUILD_MAX);
	memcpy(b->p + b->len, p, n);
	b->len += n;
}

struct ext {
	unsigned int type;
	const uint8_t *data; /* NULL with len > 0: len zero bytes */
	size_t len;
};

struct spec {
	unsigned int version;   /* 0: 0x0303 */
	unsigned int hs_type;   /* 0: ClientHello */
	size_t sid_len;
	size_t ciphers_len;     /* bytes; 0: 4 */
	size_t comp_len;        /* 0: 1; use comp_zero for an empty list */
	bool comp_zero;
	bool no_exts;           /* end after compression methods */
	const struct ext *exts;
	size_t n_exts;
	long exts_len_delta;    /* lie in the extensions block length */
	long hs_len_delta;      /* lie in the handshake header length */
};

/* Build a handshake message (4-byte header included) into out. */
static size_t build_hs(const struct spec *s, uint8_t *out)
{
	struct buf b = { out, 0 };
	size_t body_start, ext_start = 0, n, body;
	uint8_t random[32];

	memset(random, 0xa5, sizeof(random));
	put_u8(&b, s->hs_type ? s->hs_type : 1);
	put_u8(&b, 0);
	put_u16(&b, 0); /* length patched below */
	body_start = b.len;
	put_u16(&b, s->version ? s->version : 0x0303);
	put_bytes(&b, random, 32);
	put_u8(&b, s->sid_len);
	for (n = 0; n < s->sid_len; n++)
		put_u8(&b, 0x11);
	n = s->ciphers_len ? s->ciphers_len : 4;
	put_u16(&b, n);
	for (size_t i = 0; i < n; i++)
		put_u8(&b, i % 2 ? 0x01 : 0x13);
	n = s->comp_zero ? 0 : s->comp_len ? s->comp_len : 1;
	put_u8(&b, n);
	for (size_t i = 0; i < n; i++)
		put_u8(&b, 0);
	if (!s->no_exts) {
		put_u16(&b, 0);
		ext_start = b.len;
		for (size_t i = 0; i < s->n_exts; i++) {
			const struct ext *e = &s->exts[i];

			put_u16(&b, e->type);
			put_u16(&b, e->len);
			if (e->data) {
				put_bytes(&b, e->data, e->len);
			} else {
				assert_true(b.len + e->len <= BUILD_MAX);
				memset(b.p + b.len, 0, e->len);
				b.len += e->len;
			}
		}
		n = b.len - ext_start + s->exts_len_delta;
		out[ext_start - 2] = (uint8_t)(n >> 8);
		out[ext_start - 1] = (uint8_t)n;
	}
	body = b.len - body_start + s->hs_len_delta;
	out[1] = (uint8_t)(body >> 16);
	out[2] = (uint8_t)(body >> 8);
	out[3] = (uint8_t)body;
	return b.len;
}

/* Extension bodies. */
static size_t sni_body(uint8_t *out, const char *name)
{
	size_t n = strlen(name);

	out[0] = (uint8_t)((n + 3) >> 8);
	out[1] = (uint8_t)(n + 3);
	out[2] = 0;
	out[3] = (uint8_t)(n >> 8);
	out[4] = (uint8_t)n;
	memcpy(out + 5, name, n);
	return n + 5;
}

/* protos: NUL-separated names, terminated by an empty one. */
static size_t alpn_body(uint8_t *out, const char *protos)
{
	size_t o = 2;

	for (const char *p = protos; *p; p += strlen(p) + 1) {
		out[o++] = (uint8_t)strlen(p);
		memcpy(out + o, p, strlen(p));
		o += strlen(p);
	}
	out[0] = (uint8_t)((o - 2) >> 8);
	out[1] = (uint8_t)(o - 2);
	return o;
}

static uint8_t *hs_buf, *rec_buf, *tmp_buf;

static int setup_bufs(void **state)
{
	hs_buf = malloc(BUILD_MAX);
	rec_buf = malloc(BUILD_MAX * 2);
	tmp_buf = malloc(BUILD_MAX * 2);
	return hs_buf && rec_buf && tmp_buf ? 0 : -1;
}

static int teardown_bufs(void **state)
{
	free(hs_buf);
	free(rec_buf);
	free(tmp_buf);
	return 0;
}

/* Build spec s and frame it into records of rec_size bytes. */
static size_t build(const struct spec *s, size_t rec_size)
{
	size_t n = build_hs(s, hs_buf);

	return frame(hs_buf, n, rec_size ? rec_size : 16384, rec_buf);
}

/* ---------------------------------------------------------------------- */
/* Real ClientHellos                                                      */

static const struct real_case {
	const char *file;
	const char *sni;  /* NULL: no SNI */
	const char *alpn; /* NULL: no ALPN */
} real_cases[] = {
	{ "curl.bin", "allowed.test", "h2,http/1.1" },
	{ "curl-http1.1.bin", "allowed.test", "http/1.1" },
	{ "curl-tls12.bin", "allowed.test", "h2,http/1.1" },
	{ "curl-nosni.bin", NULL, "h2,http/1.1" },
	{ "openssl.bin", "allowed.test", NULL },
	{ "openssl-alpn.bin", "allowed.test", "h2,http/1.1" },
	{ "openssl-tls12.bin", "allowed.test", NULL },
	{ "node.bin", "allowed.test", "h2,http/1.1" },
	{ "node-fetch.bin", "allowed.test", "http/1.1" },
	{ "python.bin", "allowed.test", NULL },
	{ "wget-nosni.bin", NULL, NULL },
	{ "java.bin", "allowed.test", "h2,http/1.1" },
};

static void check_real(const struct real_case *c, const struct hello_info *h)
{
	assert_int_equal(h->has_sni, c->sni != NULL);
	assert_string_equal(h->sni, c->sni ? c->sni : "");
	assert_int_equal(h->sni_valid, c->sni != NULL);
	assert_int_equal(h->has_alpn, c->alpn != NULL);
	assert_string_equal(h->alpn, c->alpn ? c->alpn : "");
	assert_false(h->has_ech);
	assert_int_equal(h->legacy_version, 0x0303);
}

static void test_real_hellos(void **state)
{
	for (size_t i = 0; i < sizeof(real_cases) / sizeof(real_cases[0]); i++) {
		const struct real_case *c = &real_cases[i];
		struct hello_info h;
		size_t len;
		uint8_t *buf = load_file(c->file, &len);

		print_message("  %s (%zu bytes)\n", c->file, len);
		assert_non_null(buf);
		assert_true(hello_looks_like_tls(buf, len));
		assert_int_equal(hello_parse(buf, len, &h), HELLO_OK);
		assert_int_equal(h.consumed, len);
		check_real(c, &h);
		free(buf);
	}
}

/* Every seed in the corpus (captures and their re-framed copies) is a
 * complete, valid ClientHello. */
static void test_corpus_all_ok(void **state)
{
	DIR *d = opendir(CORPUS_DIR);
	struct dirent *de;
	int files = 0;

	assert_non_null(d);
	while ((de = readdir(d))) {
		struct hello_info h;
		uint8_t *buf;
		size_t len;

		if (de->d_name[0] == '.')
			continue;
		buf = load_file(de->d_name, &len);
		assert_non_null(buf);
		if (hello_parse(buf, len, &h) != HELLO_OK || h.consumed != len) {
			print_error("%s does not parse\n", de->d_name);
			fail();
		}
		/* only the -nosni captures lack a name */
		assert_int_equal(h.sni_valid, !strstr(de->d_name, "nosni"));
		free(buf);
		files++;
	}
	closedir(d);
	assert_true(files >= (int)(sizeof(real_cases) / sizeof(real_cases[0])));
}

/* Every strict prefix needs more; the whole gives the same answer. */
static void test_real_split_every_offset(void **state)
{
	for (size_t i = 0; i < sizeof(real_cases) / sizeof(real_cases[0]); i++) {
		struct hello_info full, h;
		size_t len;
		uint8_t *buf = load_file(real_cases[i].file, &len);

		assert_non_null(buf);
		assert_int_equal(hello_parse(buf, len, &full), HELLO_OK);
		for (size_t cut = 0; cut < len; cut++) {
			/* A copy of exactly cut bytes so ASan would see
			 * any read past the end. */
			uint8_t *p = malloc(cut ? cut : 1);

			assert_non_null(p);
			memcpy(p, buf, cut);
			if (hello_parse(p, cut, &h) != HELLO_NEED_MORE) {
				print_error("%s: cut at %zu\n", real_cases[i].file, cut);
				fail();
			}
			free(p);
		}
		assert_int_equal(hello_parse(buf, len, &h), HELLO_OK);
		assert_same_info(&full, &h);
		free(buf);
	}
}

/* Re-frame into records of 1, 7, 100 bytes; split the 7-byte framing at
 * every offset too. */
static void test_real_reframed(void **state)
{
	static const size_t sizes[] = { 1, 7, 100, 16384 };

	for (size_t i = 0; i < sizeof(real_cases) / sizeof(real_cases[0]); i++) {
		struct hello_info full, h;
		size_t len, hs_len;
		uint8_t *buf = load_file(real_cases[i].file, &len);

		assert_non_null(buf);
		assert_int_equal(hello_parse(buf, len, &full), HELLO_OK);
		hs_len = unframe(buf, len, hs_buf);
		for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
			size_t n = frame(hs_buf, hs_len, sizes[s], rec_buf);

			assert_int_equal(hello_parse(rec_buf, n, &h), HELLO_OK);
			assert_int_equal(h.consumed, n);
			assert_same_info(&full, &h);
			check_real(&real_cases[i], &h);
			if (sizes[s] != 7)
				continue;
			for (size_t cut = 0; cut < n; cut++)
				assert_int_equal(hello_parse(rec_buf, cut, &h),
						 HELLO_NEED_MORE);
		}
		free(buf);
	}
}

/* Bytes after the ClientHello (early data, the next record) are not ours. */
static void test_real_trailing_data(void **state)
{
	static const uint8_t after[] = { 0x17, 0x03, 0x03, 0x00, 0x02, 0xde, 0xad };
	struct hello_info h;
	size_t len;
	uint8_t *buf = load_file("curl.bin", &len);

	assert_non_null(buf);
	memcpy(tmp_buf, buf, len);
	memcpy(tmp_buf + len, after, sizeof(after));
	assert_int_equal(hello_parse(tmp_buf, len + sizeof(after), &h), HELLO_OK);
	assert_int_equal(h.consumed, len);
	assert_string_equal(h.sni, "allowed.test");
	free(buf);
}

/* Corruptions of a real hello: each must be refused, never accepted. */
static void test_real_corrupted(void **state)
{
	struct hello_info h;
	size_t len, hs_len, n;
	uint8_t *buf = load_file("curl.bin", &len);

	assert_non_null(buf);

	/* record says one byte less, the rest arrives as a CCS record */
	memcpy(tmp_buf, buf, len);
	tmp_buf[3] = (uint8_t)((len - 6) >> 8);
	tmp_buf[4] = (uint8_t)(len - 6);
	memcpy(tmp_buf + len - 1, "\x14\x03\x03\x00\x01\x01", 6);
	assert_int_equal(hello_parse(tmp_buf, len + 5, &h), HELLO_MALFORMED);

	/* a record that is not a handshake in the middle of the hello */
	hs_len = unframe(buf, len, hs_buf);
	n = frame(hs_buf, hs_len, 100, rec_buf);
	rec_buf[105] = 0x17;
	assert_int_equal(hello_parse(rec_buf, n, &h), HELLO_MALFORMED);
	rec_buf[105] = 0x16;
	rec_buf[106] = 0x02;
	assert_int_equal(hello_parse(rec_buf, n, &h), HELLO_MALFORMED);
	rec_buf[106] = 0x03;
	assert_int_equal(hello_parse(rec_buf, n, &h), HELLO_OK);

	/* handshake length one too long: the record ends inside the hello;
	 * one too short: extra handshake bytes in the record */
	memcpy(tmp_buf, buf, len);
	tmp_buf[8]++;
	assert_int_equal(hello_parse(tmp_buf, len, &h), HELLO_NEED_MORE);
	tmp_buf[8] -= 2;
	assert_int_equal(hello_parse(tmp_buf, len, &h), HELLO_MALFORMED);

	/* a valid hello whose last record carries two more handshake bytes
	 * (one record, then 100-byte records) */
	for (size_t rs = 16384; rs >= 100; rs = rs == 100 ? 0 : 100) {
		memcpy(tmp_buf, hs_buf, hs_len);
		memcpy(tmp_buf + hs_len, "\x14\x00", 2);
		n = frame(tmp_buf, hs_len + 2, rs, rec_buf);
		assert_int_equal(hello_parse(rec_buf, n, &h), HELLO_MALFORMED);
		n = frame(tmp_buf, hs_len, rs, rec_buf);
		assert_int_equal(hello_parse(rec_buf, n, &h), HELLO_OK);
	}

	/* ServerHello type in a client stream */
	memcpy(tmp_buf, buf, len);
	tmp_buf[5] = 2;
	assert_int_equal(hello_parse(tmp_buf, len, &h), HELLO_MALFORMED);

	/* flip the top bit of every byte: whatever still parses never
	 * yields a different valid name */
	for (size_t i = 0; i < len; i++) {
		memcpy(tmp_buf, buf, len);
		tmp_buf[i] ^= 0x80;
		if (hello_parse(tmp_buf, len, &h) != HELLO_OK || !h.has_sni)
			continue;
		if (h.sni_valid)
			assert_string_equal(h.sni, "allowed.test");
	}
	free(buf);
}

/* ---------------------------------------------------------------------- */
/* Synthetic ClientHellos                                                 */

static void test_synthetic_basic(void **state)
{
	uint8_t sni[300], alpn[300];
	struct ext exts[3];
	struct spec s = { .exts = exts };
	struct hello_info h;
	size_t n;

	exts[0] = (struct ext){ 0, sni, sni_body(sni, "Allowed.Test") };
	exts[1] = (struct ext){ 16, alpn, alpn_body(alpn, "h2\0http/1.1\0x\0") };
	exts[2] = (struct ext){ 0xfe0d, (const uint8_t *)"\0\0\1\0\1\2\0\0", 8 };
	s.n_exts = 3;
	n = build(&s, 0);
	assert_int_equal(hello_parse(rec_buf, n, &h), HELLO_OK);
	assert_true(h.has_sni);
	assert_string_equal(h.sni, "Allowed.Test"); /* as sent */
	assert_true(h.sni_valid);
	assert_true(h.has_alpn);
	assert_string_equal(h.alpn, "h2,http/1.1,x");
	assert_true(h.has_ech);
	assert_int_equal(h.consumed, n);

	/* no extensions at all (TLS 1.0 style) */
	s = (struct spec){ .no_exts = true, .version = 0x0301 };
	n = build(&s, 0);
	assert_int_equal(hello_parse(rec_buf, n, &h), HELLO_OK);
	assert_false(h.has_sni);
	assert_false(h.sni_valid);
	assert_false(h.has_alpn);
	assert_false(h.has_ech);
	assert_int_equal(h.legacy_version, 0x0301);

	/* empty extension block, maximal session id */
	s = (struct spec){ .sid_len = 32 };
	n = build(&s, 0);
	assert_int_equal(hello_parse(rec_buf, n, &h), HELLO_OK);
	assert_false(h.has_sni);
}

/* SNI values: valid names, IP literals (accepted syntax, sni_valid false),
 * malformed encodings. */
static void test_synthetic_sni(void **state)
{
	static const struct {
		const char *name;
		int ret;
		bool valid;
	} cases[] = {
		{ "allowed.test", HELLO_OK, true },
		{ "allowed.test.", HELLO_OK, true },
		{ "a", HELLO_OK, true },
		{ "192.0.2.1", HELLO_OK, false },
		{ "2001:db8::1", HELLO_OK, false },
		{ "[2001:db8::1]", HELLO_OK, false },
		{ "0x7f.1", HELLO_OK, false },
		{ "evil.test:443", HELLO_OK, false },
		{ "bad name.test", HELLO_OK, false },
		{ "", HELLO_MALFORMED, false }, /* empty host_name */
	};
	uint8_t body[300];
	struct ext e = { 0, body, 0 };
	struct spec s = { .exts = &e, .n_exts = 1 };
	struct hello_info h;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t n;
		int ret;

		e.len = sni_body(body, cases[i].name);
		n = build(&s, 0);
		ret = hello_parse(rec_buf, n, &h);
		if (ret != cases[i].ret || h.sni_valid != cases[i].valid) {
			print_error("sni '%s': ret %d valid %d\n", cases[i].name,
				    ret, h.sni_valid);
			fail();
		}
		if (ret == HELLO_OK) {
			assert_true(h.has_sni);
			assert_string_equal(h.sni, cases[i].name);
		}
	}
}

/* A raw extension list and what it must give. */
static const struct raw_case {
	const char *what;
	unsigned int type;
	const char *data;
	size_t len;
	int ret;
} raw_cases[] = {
	{ "sni list shorter than ext", 0, "\x00\x05\x00\x00\x03" "abc", 8, HELLO_MALFORMED },
	{ "sni list longer than ext", 0, "\x00\x07\x00\x00\x03" "abc", 8, HELLO_MALFORMED },
	{ "sni name longer than list", 0, "\x00\x06\x00\x00\x04" "abc", 8, HELLO_MALFORMED },
	{ "sni name shorter than list", 0, "\x00\x06\x00\x00\x02" "abc", 8, HELLO_MALFORMED },
	{ "sni two host_names", 0, "\x00\x0a\x00\x00\x02" "ab" "\x00\x00\x02" "cd", 12, HELLO_MALFORMED },
	{ "sni unknown name type", 0, "\x00\x06\x01\x00\x03" "abc", 8, HELLO_MALFORMED },
	{ "sni empty list", 0, "\x00\x00", 2, HELLO_MALFORMED },
	{ "sni empty extension", 0, "", 0, HELLO_MALFORMED },
	{ "sni embedded NUL", 0, "\x00\x08\x00\x00\x05" "ab\0cd", 10, HELLO_MALFORMED },
	{ "sni ok", 0, "\x00\x06\x00\x00\x03" "abc", 8, HELLO_OK },
	{ "alpn ok", 16, "\x00\x03\x02h2", 5, HELLO_OK },
	{ "alpn empty protocol", 16, "\x00\x04\x02h2\x00", 6, HELLO_MALFORMED },
	{ "alpn empty list", 16, "\x00\x00", 2, HELLO_MALFORMED },
	{ "alpn name past list", 16, "\x00\x03\x05h2", 5, HELLO_MALFORMED },
	{ "alpn list past ext", 16, "\x00\x09\x02h2", 5, HELLO_MALFORMED },
	{ "alpn trailing bytes", 16, "\x00\x03\x02h2\x00", 6, HELLO_MALFORMED },
	{ "unknown ext, any content", 0x1234, "\xff\xff\xff", 3, HELLO_OK },
	{ "ech, any content", 0xfe0d, "", 0, HELLO_OK },
};

static void test_synthetic_raw_exts(void **state)
{
	struct ext e;
	struct spec s = { .exts = &e, .n_exts = 1 };
	struct hello_info h;

	for (size_t i = 0; i < sizeof(raw_cases) / sizeof(raw_cases[0]); i++) {
		const struct raw_case *c = &raw_cases[i];
		size_t n;
		int ret;

		e = (struct ext){ c->type, (const uint8_t *)c->data, c->len };
		n = build(&s, 0);
		ret = hello_parse(rec_buf, n, &h);
		if (ret != c->ret) {
			print_error("%s: got %d want %d\n", c->what, ret, c->ret);
			fail();
		}
		/* And split over 1-byte records: same answer. */
		n = build(&s, 1);
		assert_int_equal(hello_parse(rec_buf, n, &h), c->ret);
	}
}

static void test_synthetic_structure(void **state)
{
	uint8_t sni[64];
	struct ext two_sni[2], psk[2];
	struct hello_info h;
	struct spec s;
	size_t n;

	/* duplicate server_name extension */
	two_sni[0] = (struct ext){ 0, sni, sni_body(sni, "allowed.test") };
	two_sni[1] = two_sni[0];
	s = (struct spec){ .exts = two_sni, .n_exts = 2 };
	n = build(&s, 0);
	assert_int_equal(hello_parse(rec_buf, n, &h), HELLO_MALFORMED);

	/* any duplicated extension type */
	two_sni[0] = (struct ext){ 0x0a0a, NULL, 0 };
	two_sni[1] = two_sni[0];
	n = build(&s, 0);
	assert_int_equal(hello_parse(rec_buf, n, &h), HELLO_MALFORMED);
	two_sni[1].type = 0x1a1a; /* two different GREASE values are fine */
	n = build(&s, 0);
	assert_int_equal(hello_parse(rec_buf, n, &h), HELLO_OK);

	/* pre_shared_key must be last */
	psk[0] = (struct ext){ 41, NULL, 4 };
	psk[1] = (struct ext){ 0, sni, sni_body(sni, "allowed.test") };
	s = (struct spec){ .exts = psk, .n_exts = 2 };
	n = build(&s, 0);
	assert_int_equal(hello_parse(rec_buf, n, &h), HELLO_MALFORMED);
	psk[0] = psk[1];
	psk[1] = (struct ext){ 41, NULL, 4 };
	n = build(&s, 0);
	assert_int_equal(hello_parse(rec_buf, n, &h), HELLO_OK);
	assert_string_equal(h.sni, "allowed.test");

	/* extension block length lies (both ways) */
	s = (struct spec){ .exts = psk, .n_exts = 1, .exts_len_delta = 1 };
	n = build(&s, 0);
	assert_int_equal(hello_parse(rec_buf, n, &h), HELLO_MALFORMED);
	s.exts_len_delta = -1;
	n = build(&s, 0);
	assert_int_equal(hello_parse(rec_buf, n, &h), HELLO_MALFORMED);

	/* an extension length that runs past the block */
	psk[0] = (struct ext){ 0x1234, NULL, 4 };
	s = (struct spec){ .exts = psk, .n_exts = 1, .exts_len_delta = -2 };
	n = build(&s, 0);
	assert_int_equal(hello_parse(rec_buf, n, &h), HELLO_MALFORMED);

	/* field-level lies */
	s = (struct spec){ .sid_len = 33 };
	n = build(&s, 0);
	assert_int_equal(hello_parse(rec_buf, n, &h), HELLO_MALFORMED);
	s = (struct spec){ .ciphers_len = 3 };
	n = build(&s, 0);
	assert_int_equal(hello_parse(rec_buf, n, &h), HELLO_MALFORMED);
	s = (struct spec){ .comp_zero = true };
	n = build(&s, 0);
	assert_int_equal(hello_parse(rec_buf, n, &h), HELLO_MALFORMED);
	s = (struct spec){ .version = 0x0200 };
	n = build(&s, 0);
	assert_int_equal(hello_parse(rec_buf, n, &h), HELLO_MALFORMED);
	s = (struct spec){ .hs_type = 2 };
	n = build(&s, 0);
	assert_int_equal(hello_parse(rec_buf, n, &h), HELLO_MALFORMED);

	/* handshake body too short to hold the fixed fields */
	memcpy(rec_buf, "\x16\x03\x01\x00\x06\x01\x00\x00\x02\x03\x03", 11);
	assert_int_equal(hello_parse(rec_buf, 11, &h), HELLO_MALFORMED);
	memcpy(rec_buf, "\x16\x03\x01\x00\x04\x01\x00\x00\x00", 9);
	assert_int_equal(hello_parse(rec_buf, 9, &h), HELLO_MALFORMED);
}

static void test_records(void **state)
{
	struct hello_info h;
	struct spec s = { 0 };
	size_t n, hs_len;

	/* zero-length handshake record */
	memcpy(rec_buf, "\x16\x03\x01\x00\x00", 5);
	assert_int_equal(hello_parse(rec_buf, 5, &h), HELLO_MALFORMED);
	/* record longer than 2^14 */
	memcpy(rec_buf, "\x16\x03\x01\x40\x01", 5);
	assert_int_equal(hello_parse(rec_buf, 5, &h), HELLO_MALFORMED);
	/* exactly 2^14 is fine: needs more */
	memcpy(rec_buf, "\x16\x03\x01\x40\x00\x01\x00\x40\x00", 9);
	assert_int_equal(hello_parse(rec_buf, 9, &h), HELLO_NEED_MORE);

	/* handshake header split over records of 1 byte; every prefix of
	 * that needs more */
	hs_len = build_hs(&s, hs_buf);
	n = frame(hs_buf, hs_len, 1, rec_buf);
	assert_int_equal(n, hs_len * 6);
	for (size_t cut = 0; cut < n; cut++)
		assert_int_equal(hello_parse(rec_buf, cut, &h), HELLO_NEED_MORE);
	assert_int_equal(hello_parse(rec_buf, n, &h), HELLO_OK);
	assert_int_equal(h.consumed, n);
}

static void test_not_tls(void **state)
{
	static const struct {
		const char *what;
		const char *bytes;
		size_t len;
		int ret;
		bool looks;
	} cases[] = {
		{ "empty", "", 0, HELLO_NEED_MORE, false },
		{ "one byte", "\x16", 1, HELLO_NEED_MORE, true },
		{ "two bytes", "\x16\x03", 2, HELLO_NEED_MORE, true },
		{ "sslv2 hello", "\x80\x2e\x01\x03\x01\x00\x15", 7, HELLO_NOT_TLS, false },
		{ "http", "GET / HTTP/1.1\r\n", 16, HELLO_NOT_TLS, false },
		{ "ssh", "SSH-2.0-OpenSSH_9.2\r\n", 21, HELLO_NOT_TLS, false },
		{ "bad major", "\x16\x02\x00\x00\x10", 5, HELLO_NOT_TLS, false },
		{ "alert record", "\x15\x03\x03\x00\x02\x02\x28", 7, HELLO_NOT_TLS, false },
		{ "app data", "\x17\x03\x03\x00\x02\x00\x00", 7, HELLO_NOT_TLS, false },
	};
	struct hello_info h;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const uint8_t *b = (const uint8_t *)cases[i].bytes;
		int ret = hello_parse(b, cases[i].len, &h);

		if (ret != cases[i].ret ||
		    hello_looks_like_tls(b, cases[i].len) != cases[i].looks) {
			print_error("%s: ret %d\n", cases[i].what, ret);
			fail();
		}
	}
}

/* Post-quantum key shares make real hellos 1.5-2 KiB; allow up to
 * HELLO_MAX_BYTES, refuse beyond. */
static void test_sizes(void **state)
{
	static const size_t pads[] = { 1200, 2000, 16 * 1024, 17000, 40000, 65000 };
	uint8_t sni[64];
	struct ext exts[2];
	struct spec s = { .exts = exts, .n_exts = 2 };
	struct hello_info h;
	size_t n, hs_len;

	exts[0] = (struct ext){ 0, sni, sni_body(sni, "big.allowed.test") };
	for (size_t i = 0; i < sizeof(pads) / sizeof(pads[0]); i++) {
		exts[1] = (struct ext){ 21, NULL, pads[i] }; /* padding */
		hs_len = build_hs(&s, hs_buf);
		n = frame(hs_buf, hs_len, 16384, rec_buf);
		if (n <= HELLO_MAX_BYTES) {
			assert_int_equal(hello_parse(rec_buf, n, &h), HELLO_OK);
			assert_string_equal(h.sni, "big.allowed.test");
			assert_int_equal(h.consumed, n);
			/* a prefix still needs more */
			assert_int_equal(hello_parse(rec_buf, n - 1, &h),
					 HELLO_NEED_MORE);
		} else {
			/* refused from the handshake header on */
			assert_int_equal(hello_parse(rec_buf, 9, &h),
					 HELLO_TOO_LARGE);
			assert_int_equal(hello_parse(rec_buf, n, &h),
					 HELLO_TOO_LARGE);
		}
	}
	/* 17000 bytes of padding, the ≥16 KiB case, must have parsed above;
	 * check explicitly that it spans two records */
	exts[1] = (struct ext){ 21, NULL, 17000 };
	hs_len = build_hs(&s, hs_buf);
	assert_true(hs_len > 16384);
	n = frame(hs_buf, hs_len, 16384, rec_buf);
	assert_int_equal(n, hs_len + 10);
	assert_int_equal(hello_parse(rec_buf, n, &h), HELLO_OK);

	/* fits as a handshake but too many small records to stay under the
	 * limit */
	exts[1] = (struct ext){ 21, NULL, 20000 };
	hs_len = build_hs(&s, hs_buf);
	n = frame(hs_buf, hs_len, 100, rec_buf);
	assert_true(n < HELLO_MAX_BYTES);
	assert_int_equal(hello_parse(rec_buf, n, &h), HELLO_OK);
	n = frame(hs_buf, hs_len, 1, rec_buf);
	assert_true(n > HELLO_MAX_BYTES);
	assert_int_equal(hello_parse(rec_buf, n, &h), HELLO_TOO_LARGE);

	/* handshake length 2^24-1 */
	memcpy(rec_buf, "\x16\x03\x01\x00\x04\x01\xff\xff\xff", 9);
	assert_int_equal(hello_parse(rec_buf, 9, &h), HELLO_TOO_LARGE);
}

static void test_alpn_overflow(void **state)
{
	char protos[1024], want[256];
	uint8_t body[1200];
	struct ext e = { 16, body, 0 };
	struct spec s = { .exts = &e, .n_exts = 1 };
	struct hello_info h;
	size_t o = 0, w = 0, n;

	/* 40 names of 9 bytes: only the first 25 fit in 255 chars */
	for (int i = 0; i < 40; i++) {
		o += (size_t)sprintf(protos + o, "proto-%03d", i) + 1;
		if (w + 10 <= 255)
			w += (size_t)sprintf(want + w, "%sproto-%03d", w ? "," : "", i);
	}
	protos[o] = '\0';
	e.len = alpn_body(body, protos);
	n = build(&s, 0);
	assert_int_equal(hello_parse(rec_buf, n, &h), HELLO_OK);
	assert_true(h.has_alpn);
	assert_string_equal(h.alpn, want);
	assert_true(strlen(h.alpn) < sizeof(h.alpn));

	/* a name with a comma or a control byte is left out, not joined */
	e.len = alpn_body(body, "h2\0a,b\0\x01x\0http/1.1\0");
	n = build(&s, 0);
	assert_int_equal(hello_parse(rec_buf, n, &h), HELLO_OK);
	assert_string_equal(h.alpn, "h2,http/1.1");
}

/* SNI at the length limits of the sni[] buffer. */
static void test_sni_lengths(void **state)
{
	char name[300];
	uint8_t body[320];
	struct ext e = { 0, body, 0 };
	struct spec s = { .exts = &e, .n_exts = 1 };
	struct hello_info h;
	size_t n;

	/* 253 chars in labels of 63: valid; 255: parsed but invalid;
	 * 256: does not fit, malformed */
	for (size_t len = 250; len <= 256; len++) {
		memset(name, 'a', len);
		for (size_t i = 63; i < len; i += 64)
			name[i] = '.';
		name[len] = '\0';
		e.len = sni_body(body, name);
		n = build(&s, 0);
		if (len >= 256) {
			assert_int_equal(hello_parse(rec_buf, n, &h), HELLO_MALFORMED);
			continue;
		}
		assert_int_equal(hello_parse(rec_buf, n, &h), HELLO_OK);
		assert_int_equal(strlen(h.sni), len);
		assert_int_equal(h.sni_valid, len <= 253 && name[len - 1] != '.');
	}
}

/* ---------------------------------------------------------------------- */
/* Host name validity (shared with the HTTP Host check)                   */

static void test_hostname_valid(void **state)
{
	static const struct {
		const char *name;
		bool valid;
	} cases[] = {
		{ "allowed.test", true },
		{ "ALLOWED.TEST", true },
		{ "allowed.test.", true },
		{ "localhost", true },
		{ "a", true },
		{ "x-1.example.com", true },
		{ "_dmarc.example.com", true },
		{ "a_b.example.com", true },
		{ "-lead.example.com", true }, /* accepted on purpose */
		{ "trail-.example.com", true },
		{ "1password.com", true },
		{ "123.example", true },
		{ "example.123x", true },
		{ "0xg.example", true },
		{ "", false },
		{ ".", false },
		{ "..", false },
		{ "a..b", false },
		{ ".a", false },
		{ "a.b..", false },
		{ "a b", false },
		{ "a\tb", false },
		{ "a/b", false },
		{ "a:80", false },
		{ "a@b", false },
		{ "caf\xc3\xa9.test", false },
		{ "a*.test", false },
		{ "*.test", false },
		{ "192.0.2.1", false },
		{ "192.0.2.1.", false },
		{ "1.2.3", false },
		{ "1.2", false },
		{ "2130706433", false },
		{ "0x7f.1", false },
		{ "0x7f000001", false },
		{ "0X7F.0.0.1", false },
		{ "017700000001", false },
		{ "1.2.3.999", false },
		{ "foo.0x", false },
		{ "foo.123", false },
		{ "::1", false },
		{ "2001:db8::1", false },
		{ "[2001:db8::1]", false },
		{ "::ffff:192.0.2.1", false },
	};
	char buf[300];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (hello_hostname_valid(cases[i].name) != cases[i].valid) {
			print_error("'%s': want %d\n", cases[i].name, cases[i].valid);
			fail();
		}
	}
	assert_false(hello_hostname_valid(NULL));

	/* label and total length limits */
	memset(buf, 'a', 63);
	strcpy(buf + 63, ".test");
	assert_true(hello_hostname_valid(buf));
	memset(buf, 'a', 64);
	strcpy(buf + 64, ".test");
	assert_false(hello_hostname_valid(buf));
	for (size_t len = 250; len < 258; len++) {
		memset(buf, 'a', len);
		for (size_t i = 50; i < len; i += 51)
			buf[i] = '.';
		buf[len] = '\0';
		assert_int_equal(hello_hostname_valid(buf), len <= 253);
		buf[len] = '.';
		buf[len + 1] = '\0';
		assert_int_equal(hello_hostname_valid(buf), len <= 253);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_real_hellos),
		cmocka_unit_test(test_corpus_all_ok),
		cmocka_unit_test(test_real_split_every_offset),
		cmocka_unit_test(test_real_reframed),
		cmocka_unit_test(test_real_trailing_data),
		cmocka_unit_test(test_real_corrupted),
		cmocka_unit_test(test_synthetic_basic),
		cmocka_unit_test(test_synthetic_sni),
		cmocka_unit_test(test_synthetic_raw_exts),
		cmocka_unit_test(test_synthetic_structure),
		cmocka_unit_test(test_records),
		cmocka_unit_test(test_not_tls),
		cmocka_unit_test(test_sizes),
		cmocka_unit_test(test_alpn_overflow),
		cmocka_unit_test(test_sni_lengths),
		cmocka_unit_test(test_hostname_valid),
	};

	return cmocka_run_group_tests(tests, setup_bufs, teardown_bufs);
}
