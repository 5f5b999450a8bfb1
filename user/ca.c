// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * Local CA for TLS interception: create, load, mint leaves per SNI into a
 * single-flight LRU cache. See ca.h for the contract.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include "ca.h"
#include "hello.h"
#include "log.h"

#define CA_MAX_CAPACITY (1u << 20)
#define CN_MAX 64 /* RFC 5280 ub-common-name */

enum entry_state {
	ENTRY_MINTING,
	ENTRY_READY,
	ENTRY_FAILED,
};

struct ca_entry {
	struct ca_entry *hnext;
	struct ca_entry *lru_prev, *lru_next; /* head = most recently used */
	unsigned refs;       /* cache + minter + waiters; under ca->lock */
	bool in_cache;
	enum entry_state state;
	int err;             /* ENTRY_FAILED: what the waiters return */
	time_t expires;      /* ca->now() clock */
	SSL_CTX *ctx;
	X509 *cert;
	char name[];         /* lowercase, no trailing dot */
};

struct ca {
	X509 *cert;
	EVP_PKEY *key;       /* NULL: loaded for export only */
	EVP_PKEY *leaf_key;
	const EVP_MD *md;    /* NULL for EdDSA CA keys */
	time_t not_after;
	char **permit, **exclude; /* DNS subtrees from nameConstraints */
	size_t n_permit, n_exclude;

	pthread_mutex_t lock;
	pthread_cond_t minted;
	struct ca_entry **buckets;
	size_t nbuckets;     /* power of two */
	struct ca_entry *lru_head, *lru_tail;
	size_t count, capacity;
	unsigned ttl;
	struct ca_stats st;
	time_t (*now)(void *arg);
	void *now_arg;
	void (*mint_hook)(void *arg, const char *name);
	void *hook_arg;
};

/* The most useful line of OpenSSL's error queue, which is then cleared so
 * the next call on this thread starts clean. */
static const char *ssl_reason(char *buf, size_t len)
{
	unsigned long e = ERR_peek_last_error();

	if (!e)
		snprintf(buf, len, "unknown OpenSSL error");
	else
		ERR_error_string_n(e, buf, len);
	ERR_clear_error();
	return buf;
}

/* Never prompt on a terminal for an encrypted key: the daemon has none. */
static int no_password(char *buf, int size, int rwflag, void *u)
{
	return -1;
}

static time_t real_now(void *arg)
{
	return time(NULL);
}

/* ---------------------------------------------------------------------- */
/* Names                                                                  */

/* hello_hostname_valid() is the one definition of a host name the proxy
 * uses, so anything the proxy would intercept can be minted. */
static int normalize_name(const char *in, char out[256])
{
	size_t len, i;

	if (!in || !hello_hostname_valid(in))
		return -EINVAL;
	len = strlen(in);
	if (in[len - 1] == '.')
		len--;
	for (i = 0; i < len; i++)
		out[i] = (char)tolower((unsigned char)in[i]);
	out[len] = '\0';
	return 0;
}

/* RFC 5280 dNSName subtree match as OpenSSL's nc_dns() does it: the base
 * matches itself and names with labels added on the left; a base with a
 * leading '.' matches only names with at least one label added. */
static bool dns_in_subtree(const char *name, const char *base)
{
	size_t n = strlen(name), b = strlen(base);

	if (b == 0)
		return true;
	if (n < b)
		return false;
	if (n > b && base[0] != '.' && name[n - b - 1] != '.')
		return false;
	return !strcasecmp(name + n - b, base);
}

static bool ca_name_permitted(const struct ca *ca, const char *name)
{
	size_t i;
	bool ok = ca->n_permit == 0;

	for (i = 0; i < ca->n_permit && !ok; i++)
		ok = dns_in_subtree(name, ca->permit[i]);
	for (i = 0; i < ca->n_exclude && ok; i++)
		ok = !dns_in_subtree(name, ca->exclude[i]);
	return ok;
}

/* "example.com" -> itself; "*.example.com" / ".example.com" -> ".example.com"
 * (subdomains only, the form OpenSSL, Go and NSS understand). */
static int permit_normalize(const char *in, char out[257])
{
	char name[256];
	bool sub = false;
	int err;

	if (!strncmp(in, "*.", 2)) {
		in += 2;
		sub = true;
	} else if (in[0] == '.') {
		in += 1;
		sub = true;
	}
	err = normalize_name(in, name);
	if (err)
		return err;
	snprintf(out, 257, "%s%s", sub ? "." : "", name);
	return 0;
}

static int collect_subtrees(STACK_OF(GENERAL_SUBTREE) *sk, char ***out, size_t *n)
{
	int i, count = sk_GENERAL_SUBTREE_num(sk);

	for (i = 0; i < count; i++) {
		GENERAL_SUBTREE *st = sk_GENERAL_SUBTREE_value(sk, i);
		const ASN1_IA5STRING *s;
		char **grown, *dup;

		if (st->base->type != GEN_DNS)
			continue;
		s = st->base->d.dNSName;
		/* An embedded NUL would make our view differ from the
		 * verifier's: refuse the CA rather than guess. */
		if (memchr(s->data, 0, (size_t)s->length))
			return -EINVAL;
		dup = strndup((const char *)s->data, (size_t)s->length);
		grown = realloc(*out, (*n + 1) * sizeof(**out));
		if (!dup || !grown) {
			free(dup);
			if (grown)
				*out = grown;
			return -ENOMEM;
		}
		*out = grown;
		(*out)[(*n)++] = dup;
	}
	return 0;
}

static int ca_read_constraints(struct ca *ca, const char *cert_path, char *err,
			       size_t errlen)
{
	NAME_CONSTRAINTS *nc;
	int crit = -1, ret = 0;

	nc = X509_get_ext_d2i(ca->cert, NID_name_constraints, &crit, NULL);
	if (!nc) {
		if (crit == -2) {
			egr_seterr(err, errlen, "%s: more than one nameConstraints extension",
			       cert_path);
			return -EINVAL;
		}
		return 0;
	}
	if (nc->permittedSubtrees)
		ret = collect_subtrees(nc->permittedSubtrees, &ca->permit, &ca->n_permit);
	if (!ret && nc->excludedSubtrees)
		ret = collect_subtrees(nc->excludedSubtrees, &ca->exclude, &ca->n_exclude);
	NAME_CONSTRAINTS_free(nc);
	if (ret)
		egr_seterr(err, errlen, "%s: unusable nameConstraints extension", cert_path);
	return ret;
}

/* ---------------------------------------------------------------------- */
/* Certificate building                                                   */

/* 128 random bits with the top one cleared: positive, at most 16 octets
 * (RFC 5280 allows 20), unpredictable. */
static int set_random_serial(X509 *x)
{
	unsigned char b[16];
	BIGNUM *bn;
	int ok;

	if (RAND_bytes(b, sizeof(b)) != 1)
		return -EIO;
	b[0] &= 0x7f;
	b[15] |= 1; /* never zero */
	bn = BN_bin2bn(b, sizeof(b), NULL);
	if (!bn)
		return -ENOMEM;
	ok = BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
	BN_free(bn);
	return ok ? 0 : -ENOMEM;
}

static int add_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value)
{
	X509_EXTENSION *ex = X509V3_EXT_conf_nid(NULL, v3, nid, value);
	int ok;

	if (!ex)
		return -EIO;
	ok = X509_add_ext(x, ex, -1);
	X509_EXTENSION_free(ex);
	return ok ? 0 : -ENOMEM;
}

static time_t asn1_time_to_time_t(const ASN1_TIME *t)
{
	struct tm tm;

	if (!t || !ASN1_TIME_to_tm(t, &tm))
		return 0;
	return timegm(&tm);
}

static const EVP_MD *sign_md(EVP_PKEY *key)
{
	int id = EVP_PKEY_get_id(key);

	/* EdDSA signs the message itself: no separate digest. */
	if (id == EVP_PKEY_ED25519 || id == EVP_PKEY_ED448)
		return NULL;
	return EVP_sha256();
}

/* critical nameConstraints: the permitted DNS subtrees, and, since a CA
 * constrained to names has no business vouching for addresses, every IPv4
 * and IPv6 address excluded. Names are validated LDH, so the list syntax
 * cannot be confused by them. */
static int add_name_constraints(X509 *x, X509V3_CTX *v3, char perm[][257], size_t n)
{
	static const char tail[] = "excluded;IP:0.0.0.0/0.0.0.0,excluded;IP:::/::";
	size_t i, len = sizeof("critical,") + sizeof(tail) + n * (257 + 16);
	char *val = malloc(len), *p;
	int err;

	if (!val)
		return -ENOMEM;
	p = val + sprintf(val, "critical,");
	for (i = 0; i < n; i++)
		p += sprintf(p, "permitted;DNS:%s,", perm[i]);
	strcpy(p, tail);
	err = add_ext(x, v3, NID_name_constraints, val);
	free(val);
	return err;
}

static int build_ca_cert(EVP_PKEY *key, const char *hostname, unsigned days,
			 char perm[][257], size_t n_perm, X509 **out)
{
	char cn[CN_MAX + 1], host[256], date[16];
	X509V3_CTX v3;
	X509_NAME *name;
	struct tm tm;
	time_t now = time(NULL);
	X509 *x;
	int err = -ENOMEM;

	if (hostname) {
		snprintf(host, sizeof(host), "%s", hostname);
	} else if (gethostname(host, sizeof(host)) < 0) {
		snprintf(host, sizeof(host), "unknown");
	}
	host[sizeof(host) - 1] = '\0';
	gmtime_r(&now, &tm);
	strftime(date, sizeof(date), "%Y-%m-%d", &tm);
	/* CN is at most 64 characters: shorten the host name, keep the date
	 * that tells two generations apart. */
	snprintf(cn, sizeof(cn), "egressd local CA %.*s %s",
		 (int)(CN_MAX - (int)strlen("egressd local CA ") - 1 - (int)strlen(date)),
		 host, date);

	x = X509_new();
	if (!x)
		return -ENOMEM;
	if (!X509_set_version(x, X509_VERSION_3))
		goto fail;
	err = set_random_serial(x);
	if (err)
		goto fail;
	err = -ENOMEM;
	name = X509_get_subject_name(x);
	if (!X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8,
					(const unsigned char *)"egressd", -1, -1, 0) ||
	    !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
					(const unsigned char *)cn, -1, -1, 0) ||
	    !X509_set_issuer_name(x, name))
		goto fail;
	/* Backdated like the leaves, for hosts whose clock is a little behind. */
	if (!ASN1_TIME_set(X509_getm_notBefore(x), now - CA_LEAF_BACKDATE) ||
	    !ASN1_TIME_set(X509_getm_notAfter(x), now + (time_t)days * 86400) ||
	    !X509_set_pubkey(x, key))
		goto fail;
	X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
	err = add_ext(x, &v3, NID_basic_constraints, "critical,CA:TRUE,pathlen:0");
	if (!err)
		err = add_ext(x, &v3, NID_key_usage, "critical,keyCertSign,cRLSign");
	if (!err)
		err = add_ext(x, &v3, NID_subject_key_identifier, "hash");
	if (!err && n_perm)
		err = add_name_constraints(x, &v3, perm, n_perm);
	if (err)
		goto fail;
	if (X509_sign(x, key, EVP_sha256()) <= 0) {
		err = -EIO;
		goto fail;
	}
	*out = x;
	return 0;
fail:
	X509_free(x);
	return err;
}

/* Parameters every context that serves an intercepted client shares. */
static int alpn_select_http11(SSL *ssl, const unsigned char **out, unsigned char *outlen,
			      const unsigned char *in, unsigned int inlen, void *arg)
{
	static const unsigned char http11[] = "\x08http/1.1";
	unsigned char *sel;

	/* The engine speaks HTTP/1.1 only: a client that offers ALPN without
	 * it gets no_application_protocol, a clearer failure than a silent
	 * fallback it would then misparse. */
	if (SSL_select_next_proto(&sel, outlen, http11, sizeof(http11) - 1, in, inlen) !=
	    OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_ALERT_FATAL;
	*out = sel;
	return SSL_TLSEXT_ERR_OK;
}

int ca_server_ctx_configure(SSL_CTX *ctx)
{
	if (!ctx)
		return -EINVAL;
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION))
		return -EIO;
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION |
				 SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_alpn_select_cb(ctx, alpn_select_http11, NULL);
	return 0;
}

/* Sign a leaf for name and wrap it in a server context. *lifetime: seconds
 * from now until the leaf's notAfter. */
static int mint_leaf(struct ca *ca, const char *name, X509 **certp, SSL_CTX **ctxp,
		     time_t *lifetime)
{
	time_t now = time(NULL), not_after = now + CA_LEAF_LIFETIME;
	bool has_cn = strlen(name) <= CN_MAX;
	char san[300], ebuf[256];
	X509V3_CTX v3;
	SSL_CTX *ctx = NULL;
	X509 *x;
	int err = -ENOMEM;

	if (not_after > ca->not_after)
		not_after = ca->not_after;
	/* Too little left to be worth handing out: the CA is (nearly) dead. */
	if (not_after <= now + 60)
		return -EKEYEXPIRED;

	x = X509_new();
	if (!x)
		return -ENOMEM;
	if (!X509_set_version(x, X509_VERSION_3))
		goto fail;
	err = set_random_serial(x);
	if (err)
		goto fail;
	err = -ENOMEM;
	/* A name longer than a CN may be lives in the SAN only; the subject is
	 * then empty and RFC 5280 wants the SAN critical. */
	if (has_cn && !X509_NAME_add_entry_by_txt(X509_get_subject_name(x), "CN",
						  MBSTRING_ASC,
						  (const unsigned char *)name, -1, -1, 0))
		goto fail;
	if (!X509_set_issuer_name(x, X509_get_subject_name(ca->cert)) ||
	    !ASN1_TIME_set(X509_getm_notBefore(x), now - CA_LEAF_BACKDATE) ||
	    !ASN1_TIME_set(X509_getm_notAfter(x), not_after) ||
	    !X509_set_pubkey(x, ca->leaf_key))
		goto fail;
	X509V3_set_ctx(&v3, ca->cert, x, NULL, NULL, 0);
	snprintf(san, sizeof(san), "%sDNS:%s", has_cn ? "" : "critical,", name);
	err = add_ext(x, &v3, NID_basic_constraints, "critical,CA:FALSE");
	if (!err)
		err = add_ext(x, &v3, NID_key_usage, "critical,digitalSignature");
	if (!err)
		err = add_ext(x, &v3, NID_ext_key_usage, "serverAuth");
	if (!err)
		err = add_ext(x, &v3, NID_subject_alt_name, san);
	if (!err)
		err = add_ext(x, &v3, NID_authority_key_identifier,
			      X509_get0_subject_key_id(ca->cert) ? "keyid:always"
								 : "issuer:always");
	if (err)
		goto fail_ssl;
	if (X509_sign(x, ca->key, ca->md) <= 0) {
		err = -EIO;
		goto fail_ssl;
	}

	ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx) {
		err = -ENOMEM;
		goto fail_ssl;
	}
	err = ca_server_ctx_configure(ctx);
	if (err)
		goto fail_ssl;
	if (SSL_CTX_use_certificate(ctx, x) != 1 ||
	    SSL_CTX_use_PrivateKey(ctx, ca->leaf_key) != 1 ||
	    SSL_CTX_add1_chain_cert(ctx, ca->cert) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1) {
		err = -EIO;
		goto fail_ssl;
	}
	*certp = x;
	*ctxp = ctx;
	*lifetime = not_after - now;
	return 0;
fail_ssl:
	log_error("ca: minting a certificate for %s: %s", name, ssl_reason(ebuf, sizeof(ebuf)));
fail:
	ERR_clear_error(); /* the caller's next SSL call starts clean */
	SSL_CTX_free(ctx);
	X509_free(x);
	return err;
}

/* ---------------------------------------------------------------------- */
/* Files                                                                  */

/* An existing CA directory: whoever can write it can swap the key or
 * the certificate, so it must be root's or ours and writable by neither
 * group nor others (sticky or not). */
static int check_private_dir(const char *dir, char *err, size_t errlen)
{
	struct statvfs sv;
	struct stat st;

	if (stat(dir, &st) < 0) {
		int e = errno;

		egr_seterr(err, errlen, "%s: %s", dir, strerror(e));
		return -e;
	}
	if (!S_ISDIR(st.st_mode)) {
		egr_seterr(err, errlen, "%s is not a directory", dir);
		return -ENOTDIR;
	}
	if (st.st_uid != geteuid() && st.st_uid != 0) {
		egr_seterr(err, errlen,
		       "%s is owned by uid %u; the CA directory must be owned by root or "
		       "the user running egressd and private (chown root %s, chmod 700 %s)",
		       dir, (unsigned)st.st_uid, dir, dir);
		return -EPERM;
	}
	/* (A read-only mount cannot be written whatever its modes: a
	 * Kubernetes secret volume's directory is 1777, mounted read-only.
	 * Only this mount is seen: one writable through another mount, a
	 * hostPath, is the operator's to avoid; docs/interception.md.) */
	if ((st.st_mode & 022) && !(statvfs(dir, &sv) == 0 && (sv.f_flag & ST_RDONLY))) {
		egr_seterr(err, errlen,
		       "%s is writable by group or others (mode %04o); whoever can write "
		       "it can swap the CA key or certificate: chmod 700 %s",
		       dir, (unsigned)(st.st_mode & 07777), dir);
		return -EPERM;
	}
	return 0;
}

/* mkdir -p, the last component private. */
static int make_private_dir(const char *dir, char *err, size_t errlen)
{
	char path[PATH_MAX], *p;

	if (snprintf(path, sizeof(path), "%s", dir) >= (int)sizeof(path)) {
		egr_seterr(err, errlen, "%s: path too long", dir);
		return -ENAMETOOLONG;
	}
	for (p = path + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, 0755) < 0 && errno != EEXIST) {
			int e = errno;

			egr_seterr(err, errlen, "cannot create %s: %s", path, strerror(e));
			return -e;
		}
		*p = '/';
	}
	if (mkdir(path, 0700) < 0 && errno != EEXIST) {
		int e = errno;

		egr_seterr(err, errlen, "cannot create %s: %s", path, strerror(e));
		return -e;
	}
	/* Whoever can write the directory can swap the key or certificate. */
	return check_private_dir(path, err, errlen);
}

typedef int (*pem_writer)(FILE *f, void *arg);

static int write_key_pem(FILE *f, void *arg)
{
	return PEM_write_PrivateKey(f, arg, NULL, NULL, 0, NULL, NULL) == 1 ? 0 : -EIO;
}

static int write_cert_pem(FILE *f, void *arg)
{
	return PEM_write_X509(f, arg) == 1 ? 0 : -EIO;
}

/* Write path.tmp with mode (umask does not apply: fchmod), fsync it.
 * Renamed into place by the caller once both files are written. */
static int write_tmp(const char *path, mode_t mode, pem_writer w, void *arg,
		     char *err, size_t errlen)
{
	char tmp[PATH_MAX];
	FILE *f;
	int fd, e;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	if (unlink(tmp) < 0 && errno != ENOENT) {
		e = errno;
		egr_seterr(err, errlen, "cannot remove %s: %s", tmp, strerror(e));
		return -e;
	}
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
	if (fd < 0) {
		e = errno;
		egr_seterr(err, errlen, "cannot create %s: %s", tmp, strerror(e));
		return -e;
	}
	if (fchmod(fd, mode) < 0) {
		e = errno;
		close(fd);
		goto fail;
	}
	f = fdopen(fd, "w");
	if (!f) {
		e = errno;
		close(fd);
		goto fail;
	}
	e = -w(f, arg);
	if (fflush(f) != 0 && !e)
		e = errno;
	if (!e && fsync(fileno(f)) < 0)
		e = errno;
	if (fclose(f) != 0 && !e)
		e = errno;
	if (!e)
		return 0;
fail:
	unlink(tmp);
	egr_seterr(err, errlen, "cannot write %s: %s", tmp, strerror(e));
	return -e;
}

static int rename_tmp(const char *path, char *err, size_t errlen)
{
	char tmp[PATH_MAX];
	int e;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	if (rename(tmp, path) == 0)
		return 0;
	e = errno;
	egr_seterr(err, errlen, "cannot rename %s to %s: %s", tmp, path, strerror(e));
	return -e;
}

static void unlink_tmp(const char *path)
{
	char tmp[PATH_MAX];

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) < (int)sizeof(tmp))
		unlink(tmp);
}

static void fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
}

/* ---------------------------------------------------------------------- */
/* Create and load                                                        */

int ca_init(const char *dir, const struct ca_init_opts *opts, struct ca **out,
	    char *err, size_t errlen)
{
	static const struct ca_init_opts defaults = { 0 };
	char key_path[PATH_MAX], cert_path[PATH_MAX], ebuf[256];
	char (*perm)[257] = NULL;
	EVP_PKEY *key = NULL;
	X509 *cert = NULL;
	struct stat st;
	unsigned days;
	size_t i;
	int ret;

	if (out)
		*out = NULL;
	if (!opts)
		opts = &defaults;
	if (!dir || !*dir) {
		egr_seterr(err, errlen, "no CA directory given");
		return -EINVAL;
	}
	days = opts->days ? opts->days : CA_DAYS_DEFAULT;
	if (days > 36500) {
		egr_seterr(err, errlen, "CA validity of %u days is too long (at most 36500)", days);
		return -EINVAL;
	}
	if (opts->n_permit > CA_MAX_PERMIT) {
		egr_seterr(err, errlen, "too many permitted names (%zu, at most %d)",
		       opts->n_permit, CA_MAX_PERMIT);
		return -EINVAL;
	}
	if (opts->n_permit) {
		perm = calloc(opts->n_permit, sizeof(*perm));
		if (!perm) {
			egr_seterr(err, errlen, "out of memory");
			return -ENOMEM;
		}
	}
	for (i = 0; i < opts->n_permit; i++) {
		if (!opts->permit[i] || permit_normalize(opts->permit[i], perm[i])) {
			egr_seterr(err, errlen,
			       "permitted name '%s' is not a DNS name (e.g. example.com or *.example.com)",
			       opts->permit[i] ? opts->permit[i] : "(null)");
			ret = -EINVAL;
			goto out;
		}
	}
	if (snprintf(key_path, sizeof(key_path), "%s/%s", dir, CA_KEY_NAME) >=
		    (int)sizeof(key_path) ||
	    snprintf(cert_path, sizeof(cert_path), "%s/%s", dir, CA_CERT_NAME) >=
		    (int)sizeof(cert_path)) {
		egr_seterr(err, errlen, "%s: path too long", dir);
		ret = -ENAMETOOLONG;
		goto out;
	}
	if (!opts->force) {
		const char *exists = lstat(key_path, &st) == 0	  ? key_path
				     : lstat(cert_path, &st) == 0 ? cert_path
								  : NULL;

		if (exists) {
			egr_seterr(err, errlen,
			       "%s exists; use --force to replace it "
			       "(every agent trusting the old CA must be updated)",
			       exists);
			ret = -EEXIST;
			goto out;
		}
	}
	ret = make_private_dir(dir, err, errlen);
	if (ret)
		goto out;

	key = EVP_EC_gen("P-256");
	if (!key) {
		egr_seterr(err, errlen, "generating the CA key: %s", ssl_reason(ebuf, sizeof(ebuf)));
		ret = -EIO;
		goto out;
	}
	ret = build_ca_cert(key, opts->hostname, days, perm, opts->n_permit, &cert);
	if (ret) {
		egr_seterr(err, errlen, "building the CA certificate: %s",
		       ssl_reason(ebuf, sizeof(ebuf)));
		goto out;
	}
	ret = write_tmp(key_path, 0600, write_key_pem, key, err, errlen);
	if (ret)
		goto out;
	ret = write_tmp(cert_path, 0644, write_cert_pem, cert, err, errlen);
	if (ret) {
		unlink_tmp(key_path);
		goto out;
	}
	/* Key first: a crash in between leaves a new key with the old
	 * certificate, which ca_load() refuses (mismatch) rather than using. */
	ret = rename_tmp(key_path, err, errlen);
	if (!ret)
		ret = rename_tmp(cert_path, err, errlen);
	if (ret)
		goto out;
	fsync_dir(dir);
	if (out)
		ret = ca_load(cert_path, key_path, out, err, errlen);
out:
	free(perm);
	X509_free(cert);
	EVP_PKEY_free(key);
	return ret;
}

static int load_cert(const char *path, X509 **out, char *err, size_t errlen)
{
	char ebuf[256];
	FILE *f = fopen(path, "re");
	X509 *x;
	int e;

	if (!f) {
		e = errno;
		egr_seterr(err, errlen, "cannot open %s: %s", path, strerror(e));
		return -e;
	}
	x = PEM_read_X509(f, NULL, no_password, NULL);
	fclose(f);
	if (!x) {
		egr_seterr(err, errlen, "%s: no PEM certificate (%s)", path,
		       ssl_reason(ebuf, sizeof(ebuf)));
		return -EINVAL;
	}
	*out = x;
	return 0;
}

static int load_key(const char *path, EVP_PKEY **out, char *err, size_t errlen)
{
	char ebuf[256];
	struct stat st;
	EVP_PKEY *key;
	FILE *f;
	int fd, e;

	/* Check the file we read, not the name (no race with a swap). */
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		e = errno;
		egr_seterr(err, errlen, "cannot open %s: %s", path, strerror(e));
		return -e;
	}
	if (fstat(fd, &st) < 0) {
		e = errno;
		close(fd);
		egr_seterr(err, errlen, "%s: %s", path, strerror(e));
		return -e;
	}
	if (!S_ISREG(st.st_mode)) {
		close(fd);
		egr_seterr(err, errlen, "%s is not a regular file", path);
		return -EINVAL;
	}
	if (st.st_mode & 077) {
		close(fd);
		egr_seterr(err, errlen,
		       "%s is accessible by group or others (mode %04o); the CA key must be "
		       "private: chmod 600 %s",
		       path, (unsigned)(st.st_mode & 07777), path);
		return -EPERM;
	}
	if (st.st_uid != geteuid() && st.st_uid != 0) {
		close(fd);
		egr_seterr(err, errlen,
		       "%s is owned by uid %u; the CA key must belong to root or to the "
		       "user running egressd: chown root %s",
		       path, (unsigned)st.st_uid, path);
		return -EPERM;
	}
	f = fdopen(fd, "r");
	if (!f) {
		e = errno;
		close(fd);
		egr_seterr(err, errlen, "%s: %s", path, strerror(e));
		return -e;
	}
	key = PEM_read_PrivateKey(f, NULL, no_password, NULL);
	fclose(f);
	if (!key) {
		egr_seterr(err, errlen, "%s: no unencrypted PEM private key (%s)", path,
		       ssl_reason(ebuf, sizeof(ebuf)));
		return -EINVAL;
	}
	*out = key;
	return 0;
}

static struct ca *ca_alloc(void)
{
	struct ca *ca = calloc(1, sizeof(*ca));

	if (!ca)
		return NULL;
	ca->nbuckets = 2048;
	ca->buckets = calloc(ca->nbuckets, sizeof(*ca->buckets));
	if (!ca->buckets) {
		free(ca);
		return NULL;
	}
	pthread_mutex_init(&ca->lock, NULL);
	pthread_cond_init(&ca->minted, NULL);
	ca->capacity = CA_CACHE_DEFAULT;
	ca->ttl = CA_LEAF_TTL_DEFAULT;
	ca->now = real_now;
	return ca;
}

int ca_load(const char *cert_path, const char *key_path, struct ca **out,
	    char *err, size_t errlen)
{
	char ebuf[256], when[64];
	struct ca *ca;
	time_t now = time(NULL);
	struct tm tm;
	int ret;

	*out = NULL;
	if (!cert_path) {
		egr_seterr(err, errlen, "no CA certificate file given");
		return -EINVAL;
	}
	ca = ca_alloc();
	if (!ca) {
		egr_seterr(err, errlen, "out of memory");
		return -ENOMEM;
	}
	ret = load_cert(cert_path, &ca->cert, err, errlen);
	if (ret)
		goto fail;
	/* X509_check_ca() also caches the extensions, so worker threads later
	 * only read them. */
	if (X509_check_ca(ca->cert) != 1) {
		egr_seterr(err, errlen,
		       "%s is not a CA certificate (needs basicConstraints CA:TRUE and, "
		       "if keyUsage is present, keyCertSign)",
		       cert_path);
		ret = -EINVAL;
		goto fail;
	}
	if (!(X509_get_key_usage(ca->cert) & KU_KEY_CERT_SIGN)) {
		egr_seterr(err, errlen, "%s: keyUsage lacks keyCertSign", cert_path);
		ret = -EINVAL;
		goto fail;
	}
	ca->not_after = asn1_time_to_time_t(X509_get0_notAfter(ca->cert));
	if (ca->not_after <= now) {
		gmtime_r(&ca->not_after, &tm);
		strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC", &tm);
		egr_seterr(err, errlen, "%s expired on %s; create a new CA (egressctl ca init --force)",
		       cert_path, when);
		ret = -EKEYEXPIRED;
		goto fail;
	}
	if (asn1_time_to_time_t(X509_get0_notBefore(ca->cert)) > now)
		log_warn("%s is not valid yet (notBefore in the future): check the clock",
			 cert_path);
	ret = ca_read_constraints(ca, cert_path, err, errlen);
	if (ret)
		goto fail;
	if (key_path) {
		ret = load_key(key_path, &ca->key, err, errlen);
		if (ret)
			goto fail;
		if (X509_check_private_key(ca->cert, ca->key) != 1) {
			ERR_clear_error();
			egr_seterr(err, errlen,
			       "%s does not match %s (the key is not the certificate's); "
			       "supply the matching pair",
			       key_path, cert_path);
			ret = -EINVAL;
			goto fail;
		}
		ca->md = sign_md(ca->key);
		ca->leaf_key = EVP_EC_gen("P-256");
		if (!ca->leaf_key) {
			egr_seterr(err, errlen, "generating the leaf key: %s",
			       ssl_reason(ebuf, sizeof(ebuf)));
			ret = -EIO;
			goto fail;
		}
	}
	*out = ca;
	return 0;
fail:
	ca_free(ca);
	return ret;
}

int ca_load_dir(const char *dir, bool with_key, struct ca **out, char *err,
		size_t errlen)
{
	char cert_path[PATH_MAX], key_path[PATH_MAX];
	int ret;

	*out = NULL;
	ret = check_private_dir(dir, err, errlen);
	if (ret)
		return ret;
	if (snprintf(cert_path, sizeof(cert_path), "%s/%s", dir, CA_CERT_NAME) >=
		    (int)sizeof(cert_path) ||
	    snprintf(key_path, sizeof(key_path), "%s/%s", dir, CA_KEY_NAME) >=
		    (int)sizeof(key_path)) {
		egr_seterr(err, errlen, "%s: path too long", dir);
		return -ENAMETOOLONG;
	}
	return ca_load(cert_path, with_key ? key_path : NULL, out, err, errlen);
}

static void entry_put(struct ca_entry *e)
{
	if (--e->refs)
		return;
	SSL_CTX_free(e->ctx);
	X509_free(e->cert);
	free(e);
}

void ca_free(struct ca *ca)
{
	struct ca_entry *e, *next;
	size_t i;

	if (!ca)
		return;
	for (e = ca->lru_head; e; e = next) {
		next = e->lru_next;
		e->in_cache = false;
		entry_put(e);
	}
	for (i = 0; i < ca->n_permit; i++)
		free(ca->permit[i]);
	for (i = 0; i < ca->n_exclude; i++)
		free(ca->exclude[i]);
	free(ca->permit);
	free(ca->exclude);
	free(ca->buckets);
	pthread_mutex_destroy(&ca->lock);
	pthread_cond_destroy(&ca->minted);
	X509_free(ca->cert);
	EVP_PKEY_free(ca->key);
	EVP_PKEY_free(ca->leaf_key);
	free(ca);
}

int ca_export_pem(const struct ca *ca, FILE *f)
{
	if (PEM_write_X509(f, ca->cert) != 1 || fflush(f) != 0)
		return -EIO;
	return 0;
}

X509 *ca_cert(const struct ca *ca)
{
	return ca->cert;
}

int ca_write_bundle(const struct ca *ca, const char *system_bundle, FILE *f)
{
	FILE *in = fopen(system_bundle ? system_bundle : CA_SYSTEM_BUNDLE, "re");
	char buf[8192];
	int last = '\n';
	size_t n;

	if (in) {
		while ((n = fread(buf, 1, sizeof(buf), in)) > 0) {
			if (fwrite(buf, 1, n, f) != n) {
				fclose(in);
				return -EIO;
			}
			last = buf[n - 1];
		}
		fclose(in);
		if (last != '\n' && fputc('\n', f) == EOF)
			return -EIO;
	}
	return ca_export_pem(ca, f);
}

/* ---------------------------------------------------------------------- */
/* Cache                                                                  */

static size_t name_hash(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ull;

	while (*s) {
		h ^= (unsigned char)*s++;
		h *= 0x100000001b3ull;
	}
	return (size_t)h;
}

static struct ca_entry *cache_find(struct ca *ca, const char *name)
{
	struct ca_entry *e = ca->buckets[name_hash(name) & (ca->nbuckets - 1)];

	while (e && strcmp(e->name, name))
		e = e->hnext;
	return e;
}

static void lru_unlink(struct ca *ca, struct ca_entry *e)
{
	if (e->lru_prev)
		e->lru_prev->lru_next = e->lru_next;
	else
		ca->lru_head = e->lru_next;
	if (e->lru_next)
		e->lru_next->lru_prev = e->lru_prev;
	else
		ca->lru_tail = e->lru_prev;
	e->lru_prev = e->lru_next = NULL;
}

static void lru_push_front(struct ca *ca, struct ca_entry *e)
{
	e->lru_prev = NULL;
	e->lru_next = ca->lru_head;
	if (ca->lru_head)
		ca->lru_head->lru_prev = e;
	else
		ca->lru_tail = e;
	ca->lru_head = e;
}

/* Drop the cache's reference; users keep theirs. */
static void cache_remove(struct ca *ca, struct ca_entry *e)
{
	struct ca_entry **pp = &ca->buckets[name_hash(e->name) & (ca->nbuckets - 1)];

	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	e->hnext = NULL;
	lru_unlink(ca, e);
	e->in_cache = false;
	ca->count--;
	entry_put(e);
}

static void cache_insert(struct ca *ca, struct ca_entry *e)
{
	size_t b = name_hash(e->name) & (ca->nbuckets - 1);

	e->hnext = ca->buckets[b];
	ca->buckets[b] = e;
	lru_push_front(ca, e);
	e->in_cache = true;
	e->refs++;
	ca->count++;
}

/* Least recently used first. Entries being minted have waiters and stay;
 * the cache may exceed its capacity by the number of mints in flight. */
static void cache_evict(struct ca *ca)
{
	struct ca_entry *e = ca->lru_tail, *prev;

	while (ca->count > ca->capacity && e) {
		prev = e->lru_prev;
		if (e->state == ENTRY_READY) {
			cache_remove(ca, e);
			ca->st.evictions++;
		}
		e = prev;
	}
}

int ca_set_cache(struct ca *ca, size_t capacity, unsigned ttl_seconds)
{
	struct ca_entry **nb, *e;
	size_t n = 16;

	if (!ca || capacity < 1 || capacity > CA_MAX_CAPACITY || ttl_seconds < 1)
		return -EINVAL;
	while (n < capacity * 2)
		n <<= 1;
	nb = calloc(n, sizeof(*nb));
	if (!nb)
		return -ENOMEM;
	pthread_mutex_lock(&ca->lock);
	for (e = ca->lru_head; e; e = e->lru_next) {
		size_t b = name_hash(e->name) & (n - 1);

		e->hnext = nb[b];
		nb[b] = e;
	}
	free(ca->buckets);
	ca->buckets = nb;
	ca->nbuckets = n;
	ca->capacity = capacity;
	ca->ttl = ttl_seconds;
	cache_evict(ca);
	pthread_mutex_unlock(&ca->lock);
	return 0;
}

static void leaf_fill(const struct ca *ca, const struct ca_entry *e, struct ca_leaf *out)
{
	SSL_CTX_up_ref(e->ctx);
	X509_up_ref(e->cert);
	EVP_PKEY_up_ref(ca->leaf_key);
	out->ctx = e->ctx;
	out->cert = e->cert;
	out->key = ca->leaf_key;
}

int ca_leaf_for(struct ca *ca, const char *sni, struct ca_leaf *out)
{
	void (*hook)(void *arg, const char *name);
	char name[256];
	struct ca_entry *e;
	void *hook_arg;
	time_t lifetime = 0;
	SSL_CTX *ctx = NULL;
	X509 *cert = NULL;
	int err;

	memset(out, 0, sizeof(*out));
	err = normalize_name(sni, name);
	if (err)
		return err;
	if (!ca || !ca->key)
		return -ENOKEY;
	/* Refuse before signing anything: a leaf outside the constraints
	 * would only fail later, in the client, with a worse message. */
	if (!ca_name_permitted(ca, name))
		return -EPERM;

	pthread_mutex_lock(&ca->lock);
	e = cache_find(ca, name);
	if (e && e->state == ENTRY_MINTING) {
		e->refs++;
		ca->st.waits++;
		ca->st.waiting++;
		while (e->state == ENTRY_MINTING)
			pthread_cond_wait(&ca->minted, &ca->lock);
		ca->st.waiting--;
		if (e->state == ENTRY_READY)
			leaf_fill(ca, e, out);
		err = e->state == ENTRY_READY ? 0 : e->err;
		entry_put(e);
		pthread_mutex_unlock(&ca->lock);
		return err;
	}
	if (e && ca->now(ca->now_arg) < e->expires) {
		ca->st.hits++;
		lru_unlink(ca, e);
		lru_push_front(ca, e);
		leaf_fill(ca, e, out);
		pthread_mutex_unlock(&ca->lock);
		return 0;
	}
	if (e) {
		ca->st.expirations++;
		cache_remove(ca, e);
	}
	ca->st.misses++;
	e = calloc(1, sizeof(*e) + strlen(name) + 1);
	if (!e) {
		pthread_mutex_unlock(&ca->lock);
		return -ENOMEM;
	}
	strcpy(e->name, name);
	e->state = ENTRY_MINTING;
	e->refs = 1; /* ours, while minting */
	cache_insert(ca, e);
	cache_evict(ca);
	hook = ca->mint_hook;
	hook_arg = ca->hook_arg;
	pthread_mutex_unlock(&ca->lock);

	if (hook)
		hook(hook_arg, name);
	err = mint_leaf(ca, name, &cert, &ctx, &lifetime);

	pthread_mutex_lock(&ca->lock);
	if (!err) {
		time_t age = lifetime / 2;

		if (age > (time_t)ca->ttl)
			age = ca->ttl;
		e->cert = cert;
		e->ctx = ctx;
		e->expires = ca->now(ca->now_arg) + age;
		e->state = ENTRY_READY;
		ca->st.mints++;
		leaf_fill(ca, e, out);
	} else {
		e->state = ENTRY_FAILED;
		e->err = err;
		ca->st.mint_failures++;
		/* Not cached: the next lookup tries again. */
		if (e->in_cache)
			cache_remove(ca, e);
	}
	pthread_cond_broadcast(&ca->minted);
	entry_put(e);
	pthread_mutex_unlock(&ca->lock);
	return err;
}

void ca_leaf_release(struct ca_leaf *leaf)
{
	if (!leaf)
		return;
	SSL_CTX_free(leaf->ctx);
	X509_free(leaf->cert);
	EVP_PKEY_free(leaf->key);
	memset(leaf, 0, sizeof(*leaf));
}

void ca_get_stats(struct ca *ca, struct ca_stats *st)
{
	pthread_mutex_lock(&ca->lock);
	*st = ca->st;
	st->entries = ca->count;
	pthread_mutex_unlock(&ca->lock);
}

void ca_set_clock(struct ca *ca, time_t (*now)(void *arg), void *arg)
{
	pthread_mutex_lock(&ca->lock);
	ca->now = now ? now : real_now;
	ca->now_arg = now ? arg : NULL;
	pthread_mutex_unlock(&ca->lock);
}

void ca_set_mint_hook(struct ca *ca, void (*hook)(void *arg, const char *name),
		      void *arg)
{
	pthread_mutex_lock(&ca->lock);
	ca->mint_hook = hook;
	ca->hook_arg = arg;
	pthread_mutex_unlock(&ca->lock);
}
