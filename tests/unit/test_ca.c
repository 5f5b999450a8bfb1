// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * Unit tests for user/ca.c: CA creation (files, modes, extensions), loading
 * with its refusals, leaf minting checked by OpenSSL's own verifier
 * (X509_verify_cert, hostname and name constraints), the single-flight LRU
 * cache, and real TLS handshakes on loopback against a client that trusts
 * only the CA. Works in a private temporary directory.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ftw.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "ca.h"
#include "log.h"

struct fixture {
	char base[64];       /* mkdtemp */
	char dir[128];       /* base/etc/ca: does not exist before init */
	char cert[192], key[192];
	struct ca *ca;
};

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	if (!f)
		return -1;
	snprintf(f->base, sizeof(f->base), "/tmp/test_ca.XXXXXX");
	if (!mkdtemp(f->base)) {
		free(f);
		return -1;
	}
	snprintf(f->dir, sizeof(f->dir), "%s/etc/ca", f->base);
	snprintf(f->cert, sizeof(f->cert), "%s/" CA_CERT_NAME, f->dir);
	snprintf(f->key, sizeof(f->key), "%s/" CA_KEY_NAME, f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	ca_free(f->ca);
	nftw(f->base, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	free(f);
	return 0;
}

/* A CA in f->dir, loaded into f->ca. */
static void init_ca(struct fixture *f, const char *const *permit, size_t n)
{
	struct ca_init_opts o = { .hostname = "testhost", .permit = permit, .n_permit = n };
	char err[512] = "";
	int rc = ca_init(f->dir, &o, &f->ca, err, sizeof(err));

	if (rc)
		print_error("ca_init: %s\n", err);
	assert_int_equal(rc, 0);
	assert_non_null(f->ca);
}

static char *slurp(const char *path)
{
	FILE *fp = fopen(path, "r");
	char *buf = calloc(1, 1 << 20);
	size_t n;

	assert_non_null(fp);
	assert_non_null(buf);
	n = fread(buf, 1, (1 << 20) - 1, fp);
	buf[n] = '\0';
	fclose(fp);
	return buf;
}

static X509 *read_cert(const char *path)
{
	FILE *fp = fopen(path, "r");
	X509 *x;

	assert_non_null(fp);
	x = PEM_read_X509(fp, NULL, NULL, NULL);
	fclose(fp);
	assert_non_null(x);
	return x;
}

static EVP_PKEY *read_key(const char *path)
{
	FILE *fp = fopen(path, "r");
	EVP_PKEY *k;

	assert_non_null(fp);
	k = PEM_read_PrivateKey(fp, NULL, NULL, NULL);
	fclose(fp);
	assert_non_null(k);
	return k;
}

/* X509_V_OK or the verifier's error: the store holds only the CA. */
static int verify_leaf(X509 *ca, X509 *leaf, const char *host)
{
	X509_STORE *st = X509_STORE_new();
	X509_STORE_CTX *c = X509_STORE_CTX_new();
	int rc;

	assert_non_null(st);
	assert_non_null(c);
	assert_int_equal(X509_STORE_add_cert(st, ca), 1);
	assert_int_equal(X509_STORE_CTX_init(c, st, leaf, NULL), 1);
	X509_STORE_CTX_set_purpose(c, X509_PURPOSE_SSL_SERVER);
	if (host)
		assert_int_equal(X509_VERIFY_PARAM_set1_host(X509_STORE_CTX_get0_param(c),
							     host, 0), 1);
	rc = X509_verify_cert(c) == 1 ? X509_V_OK : X509_STORE_CTX_get_error(c);
	X509_STORE_CTX_free(c);
	X509_STORE_free(st);
	return rc;
}

/* Hand-made certificate, independent of ca.c's builder. exts: pairs of
 * (nid, value), terminated by nid 0. issuer NULL = self-signed. */
struct ext {
	int nid;
	const char *value;
};

static X509 *make_cert(const char *cn, X509 *issuer, EVP_PKEY *issuer_key, EVP_PKEY *pub,
		       long from, long to, const struct ext *exts)
{
	X509 *x = X509_new();
	X509V3_CTX v3;
	time_t now = time(NULL);

	assert_non_null(x);
	assert_int_equal(X509_set_version(x, X509_VERSION_3), 1);
	assert_int_equal(ASN1_INTEGER_set(X509_get_serialNumber(x), (long)random() + 1), 1);
	assert_int_equal(X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN",
						    MBSTRING_ASC, (const unsigned char *)cn,
						    -1, -1, 0), 1);
	assert_int_equal(X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer)
							: X509_get_subject_name(x)), 1);
	assert_non_null(ASN1_TIME_set(X509_getm_notBefore(x), now + from));
	assert_non_null(ASN1_TIME_set(X509_getm_notAfter(x), now + to));
	assert_int_equal(X509_set_pubkey(x, pub), 1);
	X509V3_set_ctx(&v3, issuer ? issuer : x, x, NULL, NULL, 0);
	for (; exts && exts->nid; exts++) {
		X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, exts->nid, exts->value);

		assert_non_null(e);
		assert_int_equal(X509_add_ext(x, e, -1), 1);
		X509_EXTENSION_free(e);
	}
	assert_true(X509_sign(x, issuer_key, EVP_sha256()) > 0);
	return x;
}

static void write_pem(const char *path, X509 *x, EVP_PKEY *k, mode_t mode)
{
	FILE *fp = fopen(path, "w");

	assert_non_null(fp);
	if (x)
		assert_int_equal(PEM_write_X509(fp, x), 1);
	if (k)
		assert_int_equal(PEM_write_PrivateKey(fp, k, NULL, NULL, 0, NULL, NULL), 1);
	fclose(fp);
	assert_int_equal(chmod(path, mode), 0);
}

static time_t tm_of(const ASN1_TIME *t)
{
	struct tm tm;

	assert_int_equal(ASN1_TIME_to_tm(t, &tm), 1);
	return timegm(&tm);
}

static int ext_critical(X509 *x, int nid)
{
	int i = X509_get_ext_by_NID(x, nid, -1);

	if (i < 0)
		return -1;
	return X509_EXTENSION_get_critical(X509_get_ext(x, i));
}

/* The one dNSName of the SAN, or NULL if there is not exactly one entry. */
static char *only_san(X509 *x)
{
	GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
	char *out = NULL;

	if (gens && sk_GENERAL_NAME_num(gens) == 1) {
		GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, 0);

		if (g->type == GEN_DNS)
			out = strndup((const char *)g->d.dNSName->data, g->d.dNSName->length);
	}
	GENERAL_NAMES_free(gens);
	return out;
}

/* ---------------------------------------------------------------------- */
/* Creation and loading                                                   */

static void test_init_files_and_extensions(void **state)
{
	struct fixture *f = *state;
	char cn[128], *pem, *exported = NULL;
	struct stat st;
	size_t exported_len = 0;
	BIGNUM *serial;
	EVP_PKEY *key;
	FILE *mem;
	X509 *x;
	time_t now = time(NULL);

	init_ca(f, NULL, 0);

	assert_int_equal(stat(f->dir, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0700);
	assert_int_equal(stat(f->key, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(st.st_uid, geteuid());
	assert_int_equal(stat(f->cert, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0644);

	x = read_cert(f->cert);
	key = read_key(f->key);
	assert_int_equal(EVP_PKEY_get_id(key), EVP_PKEY_EC);
	{
		char group[64];
		size_t glen;

		assert_int_equal(EVP_PKEY_get_utf8_string_param(key, "group", group,
								sizeof(group), &glen), 1);
		assert_string_equal(group, "prime256v1");
	}
	assert_int_equal(X509_check_private_key(x, key), 1);
	assert_int_equal(X509_verify(x, key), 1); /* self-signed */
	assert_int_equal(X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName,
						   cn, sizeof(cn)) > 0, 1);
	assert_memory_equal(cn, "egressd local CA testhost ", 26);
	assert_int_equal(strlen(cn), 26 + 10); /* YYYY-MM-DD */
	assert_int_equal(X509_NAME_cmp(X509_get_subject_name(x), X509_get_issuer_name(x)), 0);

	assert_int_equal(ext_critical(x, NID_basic_constraints), 1);
	assert_int_equal(X509_check_ca(x), 1);
	assert_int_equal(X509_get_pathlen(x), 0);
	assert_int_equal(ext_critical(x, NID_key_usage), 1);
	assert_int_equal(X509_get_key_usage(x), KU_KEY_CERT_SIGN | KU_CRL_SIGN);
	assert_non_null(X509_get0_subject_key_id(x));
	assert_int_equal(ext_critical(x, NID_name_constraints), -1);

	serial = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
	assert_non_null(serial);
	assert_false(BN_is_negative(serial));
	assert_true(BN_num_bits(serial) > 100 && BN_num_bits(serial) <= 128);
	BN_free(serial);

	assert_true(tm_of(X509_get0_notBefore(x)) <= now);
	assert_true(tm_of(X509_get0_notAfter(x)) >= now + 3649L * 86400);
	assert_true(tm_of(X509_get0_notAfter(x)) <= now + 3651L * 86400);

	/* export = the file, byte for byte */
	pem = slurp(f->cert);
	mem = open_memstream(&exported, &exported_len);
	assert_non_null(mem);
	assert_int_equal(ca_export_pem(f->ca, mem), 0);
	fclose(mem);
	assert_string_equal(exported, pem);
	assert_int_equal(X509_cmp(ca_cert(f->ca), x), 0);

	free(exported);
	free(pem);
	EVP_PKEY_free(key);
	X509_free(x);
}

static void test_init_refuses_overwrite(void **state)
{
	struct fixture *f = *state;
	struct ca_init_opts force = { .force = true };
	char err[512] = "", *before, *after;
	struct ca *again = NULL;

	init_ca(f, NULL, 0);
	before = slurp(f->key);
	assert_int_equal(ca_init(f->dir, NULL, &again, err, sizeof(err)), -EEXIST);
	assert_null(again);
	assert_non_null(strstr(err, f->key));
	assert_non_null(strstr(err, "exists; use --force to replace it"));
	after = slurp(f->key);
	assert_string_equal(before, after);
	free(after);

	/* only the certificate left over counts too */
	assert_int_equal(unlink(f->key), 0);
	assert_int_equal(ca_init(f->dir, NULL, NULL, err, sizeof(err)), -EEXIST);
	assert_non_null(strstr(err, f->cert));

	assert_int_equal(ca_init(f->dir, &force, &again, err, sizeof(err)), 0);
	after = slurp(f->key);
	assert_string_not_equal(before, after);
	assert_int_not_equal(X509_cmp(ca_cert(again), ca_cert(f->ca)), 0);
	free(after);
	free(before);
	ca_free(again);
}

static void test_init_refuses_open_dir(void **state)
{
	struct fixture *f = *state;
	char err[512] = "", parent[128];

	snprintf(parent, sizeof(parent), "%s/etc", f->base);
	assert_int_equal(mkdir(parent, 0755), 0);
	assert_int_equal(mkdir(f->dir, 0777), 0);
	assert_int_equal(chmod(f->dir, 0777), 0);
	assert_int_equal(ca_init(f->dir, NULL, NULL, err, sizeof(err)), -EPERM);
	assert_non_null(strstr(err, "chmod 700"));
	assert_int_equal(access(f->key, F_OK), -1);
}

static void test_load_reload(void **state)
{
	struct fixture *f = *state;
	struct ca *ca = NULL, *dirca = NULL;
	struct ca_leaf leaf;
	char err[512] = "";

	init_ca(f, NULL, 0);
	assert_int_equal(ca_load(f->cert, f->key, &ca, err, sizeof(err)), 0);
	assert_int_equal(X509_cmp(ca_cert(ca), ca_cert(f->ca)), 0);
	assert_int_equal(ca_leaf_for(ca, "reload.test", &leaf), 0);
	assert_int_equal(verify_leaf(ca_cert(f->ca), leaf.cert, "reload.test"), X509_V_OK);
	ca_leaf_release(&leaf);
	ca_free(ca);

	/* certificate only: exportable, cannot mint */
	assert_int_equal(ca_load_dir(f->dir, false, &dirca, err, sizeof(err)), 0);
	assert_int_equal(ca_leaf_for(dirca, "reload.test", &leaf), -ENOKEY);
	assert_null(leaf.ctx);
	ca_free(dirca);
	assert_int_equal(ca_load_dir(f->dir, true, &dirca, err, sizeof(err)), 0);
	ca_free(dirca);
}

static void test_load_mismatch_refused(void **state)
{
	struct fixture *f = *state;
	char other[256], other_key[300], err[512] = "";
	struct ca_init_opts o = { .hostname = "other" };
	struct ca *ca = (struct ca *)1;

	init_ca(f, NULL, 0);
	snprintf(other, sizeof(other), "%s/other", f->base);
	snprintf(other_key, sizeof(other_key), "%s/" CA_KEY_NAME, other);
	assert_int_equal(ca_init(other, &o, NULL, err, sizeof(err)), 0);
	assert_int_equal(ca_load(f->cert, other_key, &ca, err, sizeof(err)), -EINVAL);
	assert_null(ca);
	assert_non_null(strstr(err, "does not match"));
	assert_non_null(strstr(err, other_key));
}

static void test_load_exposed_key_refused(void **state)
{
	struct fixture *f = *state;
	static const mode_t modes[] = { 0644, 0640, 0604, 0660, 0602, 0620 };
	char err[512], want[300];
	struct ca *ca = NULL;
	size_t i;

	init_ca(f, NULL, 0);
	snprintf(want, sizeof(want), "chmod 600 %s", f->key);
	for (i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		err[0] = '\0';
		assert_int_equal(chmod(f->key, modes[i]), 0);
		assert_int_equal(ca_load(f->cert, f->key, &ca, err, sizeof(err)), -EPERM);
		assert_null(ca);
		assert_non_null(strstr(err, want));
	}
	/* 0400 is fine */
	assert_int_equal(chmod(f->key, 0400), 0);
	assert_int_equal(ca_load(f->cert, f->key, &ca, err, sizeof(err)), 0);
	ca_free(ca);
}

/* Whoever can write the CA directory can swap the key or certificate:
 * a directory writable by group or others, or owned by another user than
 * root or the caller, is refused on load as on init. */
static void test_load_open_dir_refused(void **state)
{
	struct fixture *f = *state;
	static const mode_t modes[] = { 0770, 0707, 0777, 0730, 01777 };
	char err[512], want[300];
	struct ca *ca = NULL;

	init_ca(f, NULL, 0);
	snprintf(want, sizeof(want), "chmod 700 %s", f->dir);
	for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
		for (int with_key = 0; with_key < 2; with_key++) {
			err[0] = '\0';
			assert_int_equal(chmod(f->dir, modes[i]), 0);
			assert_int_equal(ca_load_dir(f->dir, with_key, &ca, err, sizeof(err)),
					 -EPERM);
			assert_null(ca);
			if (!strstr(err, want))
				fail_msg("mode %o: %s", (unsigned)modes[i], err);
		}
	}
	assert_int_equal(chmod(f->dir, 0755), 0);
	assert_int_equal(ca_load_dir(f->dir, true, &ca, err, sizeof(err)), 0);
	ca_free(ca);
	ca = NULL;
	if (geteuid() == 0) {
		assert_int_equal(chown(f->dir, 4242, 0), 0);
		assert_int_equal(ca_load_dir(f->dir, true, &ca, err, sizeof(err)), -EPERM);
		assert_null(ca);
		assert_non_null(strstr(err, "owned by uid 4242"));
		assert_int_equal(chown(f->dir, 0, 0), 0);
	}
}

static void test_load_not_a_ca_refused(void **state)
{
	struct fixture *f = *state;
	static const struct ext not_ca[] = {
		{ NID_basic_constraints, "critical,CA:FALSE" },
		{ 0, NULL },
	};
	static const struct ext no_certsign[] = {
		{ NID_basic_constraints, "critical,CA:TRUE" },
		{ NID_key_usage, "critical,digitalSignature" },
		{ 0, NULL },
	};
	static const struct ext good[] = {
		{ NID_basic_constraints, "critical,CA:TRUE" },
		{ NID_key_usage, "critical,keyCertSign" },
		{ NID_subject_key_identifier, "hash" },
		{ 0, NULL },
	};
	const struct {
		const struct ext *exts;
		long to;
		int want;
	} cases[] = {
		{ not_ca, 86400, -EINVAL },
		{ no_certsign, 86400, -EINVAL },
		{ good, -60, -EKEYEXPIRED },
		{ good, 86400, 0 },
	};
	char cert[256], key[256], err[512];
	EVP_PKEY *k = EVP_EC_gen("P-256");
	size_t i;

	assert_non_null(k);
	snprintf(cert, sizeof(cert), "%s/c.pem", f->base);
	snprintf(key, sizeof(key), "%s/k.pem", f->base);
	write_pem(key, NULL, k, 0600);
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		X509 *x = make_cert("hand CA", NULL, k, k, -7200, cases[i].to, cases[i].exts);
		struct ca *ca = NULL;

		write_pem(cert, x, NULL, 0644);
		err[0] = '\0';
		assert_int_equal(ca_load(cert, key, &ca, err, sizeof(err)), cases[i].want);
		if (cases[i].want)
			assert_non_null(strstr(err, cert));
		ca_free(ca);
		X509_free(x);
	}
	EVP_PKEY_free(k);
}

/* ---------------------------------------------------------------------- */
/* Leaves                                                                 */

static void test_leaf_verifies_and_fields(void **state)
{
	struct fixture *f = *state;
	struct ca_leaf a, b;
	EXTENDED_KEY_USAGE *eku;
	const ASN1_OCTET_STRING *akid_ca;
	AUTHORITY_KEYID *akid;
	X509 *chain_ca;
	STACK_OF(X509) *chain = NULL;
	char cn[300], *san;
	time_t now = time(NULL), nb, na;

	init_ca(f, NULL, 0);
	assert_int_equal(ca_leaf_for(f->ca, "WWW.Example.COM.", &a), 0);
	assert_non_null(a.ctx);
	assert_non_null(a.cert);
	assert_non_null(a.key);

	assert_int_equal(verify_leaf(ca_cert(f->ca), a.cert, "www.example.com"), X509_V_OK);
	assert_int_equal(verify_leaf(ca_cert(f->ca), a.cert, "example.com"),
			 X509_V_ERR_HOSTNAME_MISMATCH);
	assert_int_equal(verify_leaf(ca_cert(f->ca), a.cert, "x.www.example.com"),
			 X509_V_ERR_HOSTNAME_MISMATCH);

	san = only_san(a.cert);
	assert_non_null(san);
	assert_string_equal(san, "www.example.com");
	free(san);
	assert_true(X509_NAME_get_text_by_NID(X509_get_subject_name(a.cert), NID_commonName,
					      cn, sizeof(cn)) > 0);
	assert_string_equal(cn, "www.example.com");
	assert_int_equal(X509_NAME_cmp(X509_get_issuer_name(a.cert),
				       X509_get_subject_name(ca_cert(f->ca))), 0);

	/* validity: backdated an hour, a day long */
	nb = tm_of(X509_get0_notBefore(a.cert));
	na = tm_of(X509_get0_notAfter(a.cert));
	assert_true(nb >= now - CA_LEAF_BACKDATE - 5 && nb <= now - CA_LEAF_BACKDATE + 5);
	assert_true(na >= now + CA_LEAF_LIFETIME - 5 && na <= now + CA_LEAF_LIFETIME + 5);

	/* extensions */
	assert_int_equal(X509_check_ca(a.cert), 0);
	assert_int_equal(ext_critical(a.cert, NID_key_usage), 1);
	assert_int_equal(X509_get_key_usage(a.cert), KU_DIGITAL_SIGNATURE);
	eku = X509_get_ext_d2i(a.cert, NID_ext_key_usage, NULL, NULL);
	assert_non_null(eku);
	assert_int_equal(sk_ASN1_OBJECT_num(eku), 1);
	assert_int_equal(OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, 0)), NID_server_auth);
	EXTENDED_KEY_USAGE_free(eku);
	assert_int_equal(ext_critical(a.cert, NID_subject_alt_name), 0);
	akid = X509_get_ext_d2i(a.cert, NID_authority_key_identifier, NULL, NULL);
	assert_non_null(akid);
	akid_ca = X509_get0_subject_key_id(ca_cert(f->ca));
	assert_int_equal(ASN1_OCTET_STRING_cmp(akid->keyid, akid_ca), 0);
	AUTHORITY_KEYID_free(akid);

	/* the context serves this leaf, its key, and the CA as chain */
	assert_int_equal(SSL_CTX_get_min_proto_version(a.ctx), TLS1_2_VERSION);
	assert_int_equal(X509_cmp(SSL_CTX_get0_certificate(a.ctx), a.cert), 0);
	assert_int_equal(EVP_PKEY_eq(SSL_CTX_get0_privatekey(a.ctx), a.key), 1);
	assert_int_equal(SSL_CTX_get0_chain_certs(a.ctx, &chain), 1);
	assert_int_equal(sk_X509_num(chain), 1);
	chain_ca = sk_X509_value(chain, 0);
	assert_int_equal(X509_cmp(chain_ca, ca_cert(f->ca)), 0);

	/* one key pair for every leaf; serials differ */
	assert_int_equal(ca_leaf_for(f->ca, "api.example.org", &b), 0);
	assert_ptr_equal(a.key, b.key);
	assert_int_equal(EVP_PKEY_eq(X509_get0_pubkey(a.cert), X509_get0_pubkey(b.cert)), 1);
	assert_int_not_equal(ASN1_INTEGER_cmp(X509_get0_serialNumber(a.cert),
					      X509_get0_serialNumber(b.cert)), 0);
	assert_int_equal(EVP_PKEY_get_bits(a.key), 256);
	assert_int_equal(verify_leaf(ca_cert(f->ca), b.cert, "api.example.org"), X509_V_OK);
	ca_leaf_release(&a);
	ca_leaf_release(&b);
	ca_leaf_release(&b); /* zeroed: harmless */
	ca_leaf_release(NULL);
}

static void test_leaf_long_name(void **state)
{
	struct fixture *f = *state;
	char name[254];
	struct ca_leaf l;
	char *san;

	/* 3 x 63 + 61 + 3 dots = 253 */
	memset(name, 'a', sizeof(name));
	name[63] = name[127] = name[191] = '.';
	name[253] = '\0';
	init_ca(f, NULL, 0);
	assert_int_equal(ca_leaf_for(f->ca, name, &l), 0);
	san = only_san(l.cert);
	assert_string_equal(san, name);
	free(san);
	/* too long for a CN: subject empty, SAN critical (RFC 5280 4.2.1.6) */
	assert_int_equal(X509_NAME_entry_count(X509_get_subject_name(l.cert)), 0);
	assert_int_equal(ext_critical(l.cert, NID_subject_alt_name), 1);
	assert_int_equal(verify_leaf(ca_cert(f->ca), l.cert, name), X509_V_OK);
	ca_leaf_release(&l);
}

static void test_invalid_names_rejected(void **state)
{
	struct fixture *f = *state;
	char long254[256], label64[80];
	const char *bad[] = {
		NULL, "", ".", "1.2.3.4", "127.1", "10", "0x7f.1", "::1", "[::1]",
		"2001:db8::1", "*.example.com", "*", "a..b", ".a.com", "a.com..",
		"a b.com", "exa*mple.com", "ex\x01.com", "example.com:443", "a/b.com",
		long254, label64,
	};
	struct ca_stats st;
	struct ca_leaf l;
	size_t i;

	memset(long254, 'a', 254);
	long254[254] = '\0';
	for (i = 63; i < 254; i += 64)
		long254[i] = '.';
	memset(label64, 'b', 64);
	strcpy(label64 + 64, ".test");

	init_ca(f, NULL, 0);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		int rc = ca_leaf_for(f->ca, bad[i], &l);

		if (rc != -EINVAL)
			print_error("name #%zu '%s' gave %d\n", i, bad[i] ? bad[i] : "(null)", rc);
		assert_int_equal(rc, -EINVAL);
		assert_null(l.ctx);
	}
	ca_get_stats(f->ca, &st);
	assert_int_equal(st.mints, 0);
	assert_int_equal(st.entries, 0);
}

/* ---------------------------------------------------------------------- */
/* Cache                                                                  */

static void test_cache_hit_same_object(void **state)
{
	struct fixture *f = *state;
	struct ca_leaf a, b, c;
	struct ca_stats st;

	init_ca(f, NULL, 0);
	assert_int_equal(ca_leaf_for(f->ca, "cache.test", &a), 0);
	assert_int_equal(ca_leaf_for(f->ca, "cache.test", &b), 0);
	assert_int_equal(ca_leaf_for(f->ca, "Cache.TEST.", &c), 0);
	assert_ptr_equal(a.ctx, b.ctx);
	assert_ptr_equal(a.cert, b.cert);
	assert_ptr_equal(a.ctx, c.ctx);
	ca_get_stats(f->ca, &st);
	assert_int_equal(st.mints, 1);
	assert_int_equal(st.misses, 1);
	assert_int_equal(st.hits, 2);
	assert_int_equal(st.entries, 1);
	ca_leaf_release(&a);
	ca_leaf_release(&b);
	ca_leaf_release(&c);
}

struct flight {
	struct ca *ca;
	pthread_barrier_t go;
	struct ca_leaf leaf[8];
	int rc[8];
	int idx;
	pthread_mutex_t lock;
	int hook_calls;
};

/* Hold the mint until the seven others are waiting for it (bounded), so
 * the test proves they waited rather than arrived late. */
static void hold_mint(void *arg, const char *name)
{
	struct flight *fl = arg;
	struct ca_stats st;
	int i;

	pthread_mutex_lock(&fl->lock);
	fl->hook_calls++;
	pthread_mutex_unlock(&fl->lock);
	for (i = 0; i < 500; i++) {
		ca_get_stats(fl->ca, &st);
		if (st.waiting >= 7)
			break;
		usleep(10000);
	}
}

static void *flight_thread(void *arg)
{
	struct flight *fl = arg;
	int me;

	pthread_mutex_lock(&fl->lock);
	me = fl->idx++;
	pthread_mutex_unlock(&fl->lock);
	pthread_barrier_wait(&fl->go);
	fl->rc[me] = ca_leaf_for(fl->ca, "flight.test", &fl->leaf[me]);
	return NULL;
}

static void test_single_flight(void **state)
{
	struct fixture *f = *state;
	struct flight fl = { 0 };
	pthread_t th[8];
	struct ca_stats st;
	int i;

	init_ca(f, NULL, 0);
	fl.ca = f->ca;
	pthread_mutex_init(&fl.lock, NULL);
	pthread_barrier_init(&fl.go, NULL, 8);
	ca_set_mint_hook(f->ca, hold_mint, &fl);
	for (i = 0; i < 8; i++)
		assert_int_equal(pthread_create(&th[i], NULL, flight_thread, &fl), 0);
	for (i = 0; i < 8; i++)
		pthread_join(th[i], NULL);
	ca_get_stats(f->ca, &st);
	assert_int_equal(fl.hook_calls, 1);
	assert_int_equal(st.mints, 1);
	assert_int_equal(st.misses, 1);
	assert_int_equal(st.waits, 7);
	assert_int_equal(st.waiting, 0);
	for (i = 0; i < 8; i++) {
		assert_int_equal(fl.rc[i], 0);
		assert_ptr_equal(fl.leaf[i].ctx, fl.leaf[0].ctx);
	}
	for (i = 0; i < 8; i++)
		ca_leaf_release(&fl.leaf[i]);
	ca_set_mint_hook(f->ca, NULL, NULL);
	pthread_barrier_destroy(&fl.go);
	pthread_mutex_destroy(&fl.lock);
}

static void test_lru_eviction(void **state)
{
	struct fixture *f = *state;
	const char *names[] = { "a.test", "b.test", "c.test" };
	struct ca_leaf l[3], held_b, again_b, d;
	struct ca_stats st;
	SSL *ssl;
	char cn[64];
	int i;

	init_ca(f, NULL, 0);
	assert_int_equal(ca_set_cache(f->ca, 0, 10), -EINVAL);
	assert_int_equal(ca_set_cache(f->ca, 3, 0), -EINVAL);
	assert_int_equal(ca_set_cache(f->ca, 3, CA_LEAF_TTL_DEFAULT), 0);
	for (i = 0; i < 3; i++) {
		assert_int_equal(ca_leaf_for(f->ca, names[i], &l[i]), 0);
		if (i != 1)
			ca_leaf_release(&l[i]);
	}
	held_b = l[1];
	/* a becomes the most recent; b is now least recently used */
	assert_int_equal(ca_leaf_for(f->ca, "a.test", &l[0]), 0);
	ca_leaf_release(&l[0]);
	assert_int_equal(ca_leaf_for(f->ca, "d.test", &d), 0);
	ca_get_stats(f->ca, &st);
	assert_int_equal(st.entries, 3);
	assert_int_equal(st.evictions, 1);
	assert_int_equal(st.mints, 4);

	/* the evicted leaf still works for a connection holding it */
	ssl = SSL_new(held_b.ctx);
	assert_non_null(ssl);
	assert_true(X509_NAME_get_text_by_NID(X509_get_subject_name(SSL_get_certificate(ssl)),
					      NID_commonName, cn, sizeof(cn)) > 0);
	assert_string_equal(cn, "b.test");
	SSL_free(ssl);

	/* a and c are still cached; b is minted again, a new object */
	assert_int_equal(ca_leaf_for(f->ca, "a.test", &l[0]), 0);
	assert_int_equal(ca_leaf_for(f->ca, "c.test", &l[2]), 0);
	ca_get_stats(f->ca, &st);
	assert_int_equal(st.mints, 4);
	assert_int_equal(ca_leaf_for(f->ca, "b.test", &again_b), 0);
	assert_ptr_not_equal(again_b.ctx, held_b.ctx);
	ca_get_stats(f->ca, &st);
	assert_int_equal(st.mints, 5);
	assert_int_equal(st.entries, 3);
	assert_int_equal(st.evictions, 2); /* d went */

	/* shrinking evicts at once */
	assert_int_equal(ca_set_cache(f->ca, 1, CA_LEAF_TTL_DEFAULT), 0);
	ca_get_stats(f->ca, &st);
	assert_int_equal(st.entries, 1);
	assert_int_equal(ca_leaf_for(f->ca, "b.test", &l[1]), 0);
	assert_ptr_equal(l[1].ctx, again_b.ctx);

	ca_leaf_release(&l[0]);
	ca_leaf_release(&l[1]);
	ca_leaf_release(&l[2]);
	ca_leaf_release(&held_b);
	ca_leaf_release(&again_b);
	ca_leaf_release(&d);
}

static time_t fake_now(void *arg)
{
	return *(time_t *)arg;
}

static void test_expiry_remints(void **state)
{
	struct fixture *f = *state;
	time_t clock = time(NULL);
	struct ca_leaf a, b, c;
	struct ca_stats st;

	init_ca(f, NULL, 0);
	ca_set_clock(f->ca, fake_now, &clock);
	assert_int_equal(ca_leaf_for(f->ca, "ttl.test", &a), 0);
	clock += CA_LEAF_TTL_DEFAULT - 60;
	assert_int_equal(ca_leaf_for(f->ca, "ttl.test", &b), 0);
	assert_ptr_equal(a.ctx, b.ctx);
	clock += 120;
	assert_int_equal(ca_leaf_for(f->ca, "ttl.test", &c), 0);
	assert_ptr_not_equal(a.ctx, c.ctx);
	ca_get_stats(f->ca, &st);
	assert_int_equal(st.mints, 2);
	assert_int_equal(st.expirations, 1);
	assert_int_equal(st.entries, 1);
	/* the old one is still a whole context */
	assert_int_equal(X509_cmp(SSL_CTX_get0_certificate(a.ctx), a.cert), 0);
	ca_leaf_release(&a);
	ca_leaf_release(&b);
	ca_leaf_release(&c);
	ca_set_clock(f->ca, NULL, NULL);
}

/* A CA made by hand, valid until now + to, loaded with ca_load(). */
static struct ca *make_hand_ca(struct fixture *f, long to, X509 **xout)
{
	static const struct ext ca_exts[] = {
		{ NID_basic_constraints, "critical,CA:TRUE,pathlen:0" },
		{ NID_key_usage, "critical,keyCertSign,cRLSign" },
		{ NID_subject_key_identifier, "hash" },
		{ 0, NULL },
	};
	char cert[256], key[256], err[512];
	EVP_PKEY *k = EVP_EC_gen("P-256");
	struct ca *ca = NULL;
	X509 *x;

	assert_non_null(k);
	snprintf(cert, sizeof(cert), "%s/c.pem", f->base);
	snprintf(key, sizeof(key), "%s/k.pem", f->base);
	write_pem(key, NULL, k, 0600);
	x = make_cert("hand CA", NULL, k, k, -7200, to, ca_exts);
	write_pem(cert, x, NULL, 0644);
	assert_int_equal(ca_load(cert, key, &ca, err, sizeof(err)), 0);
	EVP_PKEY_free(k);
	*xout = x;
	return ca;
}

/* A CA that ends soon: leaves stop at its notAfter and are re-minted at
 * half their shortened life; a CA about to end mints nothing. */
static void test_leaf_capped_by_ca(void **state)
{
	struct fixture *f = *state;
	time_t clock = time(NULL);
	struct ca_leaf l, m;
	struct ca_stats st;
	struct ca *ca;
	X509 *x;

	ca = make_hand_ca(f, 7200, &x);
	ca_set_clock(ca, fake_now, &clock);
	assert_int_equal(ca_leaf_for(ca, "short.test", &l), 0);
	assert_int_equal(ASN1_TIME_compare(X509_get0_notAfter(l.cert), X509_get0_notAfter(x)), 0);
	assert_int_equal(verify_leaf(x, l.cert, "short.test"), X509_V_OK);
	clock += 3600 + 60; /* past half of the ~2 h left */
	assert_int_equal(ca_leaf_for(ca, "short.test", &m), 0);
	assert_ptr_not_equal(l.ctx, m.ctx);
	ca_get_stats(ca, &st);
	assert_int_equal(st.mints, 2);
	ca_leaf_release(&l);
	ca_leaf_release(&m);
	ca_free(ca);
	X509_free(x);

	ca = make_hand_ca(f, 30, &x);
	assert_int_equal(ca_leaf_for(ca, "short.test", &l), -EKEYEXPIRED);
	assert_null(l.ctx);
	ca_get_stats(ca, &st);
	assert_int_equal(st.mints, 0);
	assert_int_equal(st.mint_failures, 1);
	assert_int_equal(st.entries, 0);
	ca_free(ca);
	X509_free(x);
}

/* Waiters of a failed mint get the minter's error, once; nothing is
 * cached, so the next lookup tries again. */
static void test_single_flight_failure(void **state)
{
	struct fixture *f = *state;
	struct flight fl = { 0 };
	struct ca_stats st;
	struct ca_leaf l;
	pthread_t th[8];
	X509 *x;
	int i;

	fl.ca = make_hand_ca(f, 30, &x);
	pthread_mutex_init(&fl.lock, NULL);
	pthread_barrier_init(&fl.go, NULL, 8);
	ca_set_mint_hook(fl.ca, hold_mint, &fl);
	for (i = 0; i < 8; i++)
		assert_int_equal(pthread_create(&th[i], NULL, flight_thread, &fl), 0);
	for (i = 0; i < 8; i++)
		pthread_join(th[i], NULL);
	ca_get_stats(fl.ca, &st);
	assert_int_equal(fl.hook_calls, 1);
	assert_int_equal(st.mint_failures, 1);
	assert_int_equal(st.waits, 7);
	assert_int_equal(st.entries, 0);
	for (i = 0; i < 8; i++) {
		assert_int_equal(fl.rc[i], -EKEYEXPIRED);
		assert_null(fl.leaf[i].ctx);
	}
	ca_set_mint_hook(fl.ca, NULL, NULL);
	assert_int_equal(ca_leaf_for(fl.ca, "flight.test", &l), -EKEYEXPIRED);
	ca_get_stats(fl.ca, &st);
	assert_int_equal(st.mint_failures, 2);
	ca_free(fl.ca);
	X509_free(x);
	pthread_barrier_destroy(&fl.go);
	pthread_mutex_destroy(&fl.lock);
}

/* ---------------------------------------------------------------------- */
/* Name constraints                                                       */

static void test_name_constraints(void **state)
{
	struct fixture *f = *state;
	const char *permit[] = { "example.com", "*.corp.test" };
	const struct {
		const char *name;
		int want;
	} cases[] = {
		{ "example.com", 0 },
		{ "www.example.com", 0 },
		{ "a.b.EXAMPLE.com", 0 },
		{ "badexample.com", -EPERM },
		{ "example.com.evil.test", -EPERM },
		{ "a.corp.test", 0 },
		{ "corp.test", -EPERM },
		{ "other.test", -EPERM },
	};
	NAME_CONSTRAINTS *nc;
	struct ca *reloaded = NULL;
	struct ca_stats st;
	char err[512];
	uint64_t minted = 0;
	size_t i;
	int pass;

	init_ca(f, permit, 2);
	assert_int_equal(ext_critical(ca_cert(f->ca), NID_name_constraints), 1);
	nc = X509_get_ext_d2i(ca_cert(f->ca), NID_name_constraints, NULL, NULL);
	assert_non_null(nc);
	assert_int_equal(sk_GENERAL_SUBTREE_num(nc->permittedSubtrees), 2);
	assert_int_equal(sk_GENERAL_SUBTREE_num(nc->excludedSubtrees), 2); /* all IPs */
	NAME_CONSTRAINTS_free(nc);

	assert_int_equal(ca_load(f->cert, f->key, &reloaded, err, sizeof(err)), 0);
	for (pass = 0; pass < 2; pass++) {
		struct ca *ca = pass ? reloaded : f->ca;

		minted = 0;
		for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
			struct ca_leaf l;
			int rc = ca_leaf_for(ca, cases[i].name, &l);

			if (rc != cases[i].want)
				print_error("%s: got %d\n", cases[i].name, rc);
			assert_int_equal(rc, cases[i].want);
			if (!rc) {
				/* OpenSSL enforces the constraint too, and agrees */
				assert_int_equal(verify_leaf(ca_cert(ca), l.cert, cases[i].name),
						 X509_V_OK);
				minted++;
			} else {
				assert_null(l.ctx);
			}
			ca_leaf_release(&l);
		}
		ca_get_stats(ca, &st);
		assert_int_equal(st.mints, minted); /* refused before minting */
		assert_int_equal(st.mint_failures, 0);
	}
	ca_free(reloaded);
}

/* Independently of ca_leaf_for(): OpenSSL refuses leaves the constrained
 * CA signs outside its subtree, so the constraint holds even if the key
 * were misused. */
static void test_name_constraints_openssl_enforces(void **state)
{
	struct fixture *f = *state;
	const char *permit[] = { "example.com" };
	static const struct ext outside[] = {
		{ NID_basic_constraints, "critical,CA:FALSE" },
		{ NID_ext_key_usage, "serverAuth" },
		{ NID_subject_alt_name, "DNS:other.test" },
		{ 0, NULL },
	};
	static const struct ext inside[] = {
		{ NID_basic_constraints, "critical,CA:FALSE" },
		{ NID_ext_key_usage, "serverAuth" },
		{ NID_subject_alt_name, "DNS:www.example.com" },
		{ 0, NULL },
	};
	static const struct ext ip[] = {
		{ NID_basic_constraints, "critical,CA:FALSE" },
		{ NID_ext_key_usage, "serverAuth" },
		{ NID_subject_alt_name, "DNS:www.example.com,IP:192.0.2.1" },
		{ 0, NULL },
	};
	EVP_PKEY *cakey, *leafkey = EVP_EC_gen("P-256");
	X509 *ca, *x;

	init_ca(f, permit, 1);
	ca = read_cert(f->cert);
	cakey = read_key(f->key);
	assert_non_null(leafkey);

	x = make_cert("www.example.com", ca, cakey, leafkey, -60, 3600, inside);
	assert_int_equal(verify_leaf(ca, x, "www.example.com"), X509_V_OK);
	X509_free(x);
	x = make_cert("other.test", ca, cakey, leafkey, -60, 3600, outside);
	assert_int_equal(verify_leaf(ca, x, "other.test"), X509_V_ERR_PERMITTED_VIOLATION);
	assert_int_equal(verify_leaf(ca, x, NULL), X509_V_ERR_PERMITTED_VIOLATION);
	X509_free(x);
	x = make_cert("www.example.com", ca, cakey, leafkey, -60, 3600, ip);
	assert_int_equal(verify_leaf(ca, x, "www.example.com"), X509_V_ERR_EXCLUDED_VIOLATION);
	X509_free(x);

	EVP_PKEY_free(leafkey);
	EVP_PKEY_free(cakey);
	X509_free(ca);
}

static void test_invalid_permit_rejected(void **state)
{
	struct fixture *f = *state;
	const char *bad[] = { "192.0.2.1", "exa mple.com", "*", "*.*.example.com", "" };
	char err[512];
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct ca_init_opts o = { .permit = &bad[i], .n_permit = 1 };

		err[0] = '\0';
		assert_int_equal(ca_init(f->dir, &o, NULL, err, sizeof(err)), -EINVAL);
		assert_non_null(strstr(err, "not a DNS name"));
	}
	assert_int_equal(access(f->dir, F_OK), -1); /* nothing created */
}

/* ---------------------------------------------------------------------- */
/* TLS on loopback                                                        */

struct server {
	int lfd;
	struct ca *ca;
	int accepted;        /* handshake completed */
	char alpn[32];
	char sni[256];
};

/* The interception engine's pattern: an initial context with the shared
 * settings; the servername callback switches to the name's context. */
static int sni_switch(SSL *ssl, int *alert, void *arg)
{
	struct server *s = arg;
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	struct ca_leaf leaf;

	if (!name || ca_leaf_for(s->ca, name, &leaf)) {
		*alert = SSL_AD_UNRECOGNIZED_NAME;
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	}
	snprintf(s->sni, sizeof(s->sni), "%s", name);
	SSL_set_SSL_CTX(ssl, leaf.ctx);
	ca_leaf_release(&leaf); /* the SSL holds its own reference */
	return SSL_TLSEXT_ERR_OK;
}

static void set_timeouts(int fd)
{
	struct timeval tv = { .tv_sec = 5 };

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static void *server_main(void *arg)
{
	struct server *s = arg;
	struct pollfd p = { .fd = s->lfd, .events = POLLIN };
	const unsigned char *alpn;
	unsigned int alpn_len;
	SSL_CTX *base;
	SSL *ssl;
	char c;
	int fd;

	if (poll(&p, 1, 5000) != 1)
		return NULL;
	fd = accept(s->lfd, NULL, NULL);
	if (fd < 0)
		return NULL;
	set_timeouts(fd);
	base = SSL_CTX_new(TLS_server_method());
	if (base && !ca_server_ctx_configure(base)) {
		SSL_CTX_set_tlsext_servername_callback(base, sni_switch);
		SSL_CTX_set_tlsext_servername_arg(base, s);
		ssl = SSL_new(base);
		SSL_set_fd(ssl, fd);
		if (SSL_accept(ssl) == 1) {
			s->accepted = 1;
			SSL_get0_alpn_selected(ssl, &alpn, &alpn_len);
			snprintf(s->alpn, sizeof(s->alpn), "%.*s", (int)alpn_len, alpn);
			if (SSL_read(ssl, &c, 1) == 1)
				SSL_write(ssl, &c, 1);
			SSL_shutdown(ssl);
		}
		SSL_free(ssl);
	}
	SSL_CTX_free(base);
	close(fd);
	ERR_clear_error();
	return NULL;
}

struct hs_result {
	int ok;              /* handshake and one byte echoed */
	long verify;         /* SSL_get_verify_result */
	char alpn[32];
	int server_accepted;
	char server_sni[256];
};

static void handshake(struct ca *ca, X509 *trust, const char *sni, const char *host,
		      const unsigned char *alpn, unsigned alpn_len, struct hs_result *r)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t slen = sizeof(sa);
	struct server s = { .ca = ca };
	const unsigned char *sel;
	unsigned int sel_len;
	pthread_t th;
	SSL_CTX *cctx;
	SSL *ssl;
	char c = 'x';
	int fd;

	memset(r, 0, sizeof(*r));
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	s.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(s.lfd >= 0);
	assert_int_equal(bind(s.lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(s.lfd, 1), 0);
	assert_int_equal(getsockname(s.lfd, (struct sockaddr *)&sa, &slen), 0);
	assert_int_equal(pthread_create(&th, NULL, server_main, &s), 0);

	fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	set_timeouts(fd);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	cctx = SSL_CTX_new(TLS_client_method());
	assert_non_null(cctx);
	/* a fresh context's store is empty: only what we add is trusted */
	if (trust)
		assert_int_equal(X509_STORE_add_cert(SSL_CTX_get_cert_store(cctx), trust), 1);
	SSL_CTX_set_verify(cctx, SSL_VERIFY_PEER, NULL);
	ssl = SSL_new(cctx);
	assert_non_null(ssl);
	assert_int_equal(SSL_set_tlsext_host_name(ssl, sni), 1);
	assert_int_equal(SSL_set1_host(ssl, host), 1);
	if (alpn)
		assert_int_equal(SSL_set_alpn_protos(ssl, alpn, alpn_len), 0);
	SSL_set_fd(ssl, fd);
	if (SSL_connect(ssl) == 1) {
		SSL_get0_alpn_selected(ssl, &sel, &sel_len);
		snprintf(r->alpn, sizeof(r->alpn), "%.*s", (int)sel_len, sel);
		r->ok = SSL_write(ssl, &c, 1) == 1 && SSL_read(ssl, &c, 1) == 1 && c == 'x';
		SSL_shutdown(ssl);
	}
	r->verify = SSL_get_verify_result(ssl);
	SSL_free(ssl);
	SSL_CTX_free(cctx);
	close(fd);
	pthread_join(th, NULL);
	close(s.lfd);
	r->server_accepted = s.accepted;
	snprintf(r->server_sni, sizeof(r->server_sni), "%s", s.sni);
	ERR_clear_error();
}

static void test_tls_handshake_loopback(void **state)
{
	struct fixture *f = *state;
	static const unsigned char h2_h11[] = "\x02h2\x08http/1.1";
	static const unsigned char h2[] = "\x02h2";
	struct hs_result r;
	struct ca_stats st;
	X509 *stranger;
	EVP_PKEY *k;
	static const struct ext ca_exts[] = {
		{ NID_basic_constraints, "critical,CA:TRUE" },
		{ NID_key_usage, "critical,keyCertSign" },
		{ 0, NULL },
	};

	init_ca(f, NULL, 0);

	/* trusted CA, right name: handshake, http/1.1 chosen over h2 */
	handshake(f->ca, ca_cert(f->ca), "shop.test", "shop.test", h2_h11,
		  sizeof(h2_h11) - 1, &r);
	assert_int_equal(r.ok, 1);
	assert_int_equal(r.verify, X509_V_OK);
	assert_string_equal(r.alpn, "http/1.1");
	assert_int_equal(r.server_accepted, 1);
	assert_string_equal(r.server_sni, "shop.test");

	/* no ALPN at all: fine */
	handshake(f->ca, ca_cert(f->ca), "Shop.Test", "shop.test", NULL, 0, &r);
	assert_int_equal(r.ok, 1);
	assert_string_equal(r.alpn, "");
	ca_get_stats(f->ca, &st);
	assert_int_equal(st.mints, 1); /* the second connection hit the cache */

	/* the leaf is for shop.test: a client that wants another name refuses */
	handshake(f->ca, ca_cert(f->ca), "shop.test", "other.test", NULL, 0, &r);
	assert_int_equal(r.ok, 0);
	assert_int_equal(r.verify, X509_V_ERR_HOSTNAME_MISMATCH);
	assert_int_equal(r.server_accepted, 0);

	/* a client that does not trust this CA refuses */
	k = EVP_EC_gen("P-256");
	assert_non_null(k);
	stranger = make_cert("stranger CA", NULL, k, k, -60, 86400, ca_exts);
	handshake(f->ca, stranger, "shop.test", "shop.test", NULL, 0, &r);
	assert_int_equal(r.ok, 0);
	assert_true(r.verify == X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN ||
		    r.verify == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY);
	X509_free(stranger);
	EVP_PKEY_free(k);

	/* h2 only: no protocol in common, refused */
	handshake(f->ca, ca_cert(f->ca), "shop.test", "shop.test", h2, sizeof(h2) - 1, &r);
	assert_int_equal(r.ok, 0);
	assert_int_equal(r.server_accepted, 0);

	/* an invalid SNI gets no certificate at all */
	handshake(f->ca, ca_cert(f->ca), "192.0.2.1", "192.0.2.1", NULL, 0, &r);
	assert_int_equal(r.ok, 0);
	assert_int_equal(r.server_accepted, 0);
}

static void test_bundle(void **state)
{
	struct fixture *f = *state;
	char sys[256], *out = NULL, *pem;
	size_t len = 0;
	FILE *fp;

	init_ca(f, NULL, 0);
	snprintf(sys, sizeof(sys), "%s/system.pem", f->base);
	fp = fopen(sys, "w");
	assert_non_null(fp);
	fputs("SYSTEM CAS", fp); /* no final newline */
	fclose(fp);
	pem = slurp(f->cert);

	fp = open_memstream(&out, &len);
	assert_int_equal(ca_write_bundle(f->ca, sys, fp), 0);
	fclose(fp);
	assert_memory_equal(out, "SYSTEM CAS\n", 11);
	assert_string_equal(out + 11, pem);
	free(out);

	/* missing system bundle: just the CA */
	snprintf(sys, sizeof(sys), "%s/none.pem", f->base);
	out = NULL;
	fp = open_memstream(&out, &len);
	assert_int_equal(ca_write_bundle(f->ca, sys, fp), 0);
	fclose(fp);
	assert_string_equal(out, pem);
	free(out);
	free(pem);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_init_files_and_extensions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_init_refuses_overwrite, setup, teardown),
		cmocka_unit_test_setup_teardown(test_init_refuses_open_dir, setup, teardown),
		cmocka_unit_test_setup_teardown(test_load_reload, setup, teardown),
		cmocka_unit_test_setup_teardown(test_load_mismatch_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_load_exposed_key_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_load_open_dir_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_load_not_a_ca_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_leaf_verifies_and_fields, setup, teardown),
		cmocka_unit_test_setup_teardown(test_leaf_long_name, setup, teardown),
		cmocka_unit_test_setup_teardown(test_invalid_names_rejected, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cache_hit_same_object, setup, teardown),
		cmocka_unit_test_setup_teardown(test_single_flight, setup, teardown),
		cmocka_unit_test_setup_teardown(test_single_flight_failure, setup, teardown),
		cmocka_unit_test_setup_teardown(test_lru_eviction, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expiry_remints, setup, teardown),
		cmocka_unit_test_setup_teardown(test_leaf_capped_by_ca, setup, teardown),
		cmocka_unit_test_setup_teardown(test_name_constraints, setup, teardown),
		cmocka_unit_test_setup_teardown(test_name_constraints_openssl_enforces, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_invalid_permit_rejected, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tls_handshake_loopback, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bundle, setup, teardown),
	};

	log_set_level(EGR_LOG_ERROR);
	log_set_prefix("test_ca");
	return cmocka_run_group_tests(tests, NULL, NULL);
}
