/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * The local certificate authority used for TLS interception: creating one
 * (`egressctl ca init`), loading one from PEM files, and minting leaf
 * certificates per SNI on the fly, cached.
 *
 * Leaves: one P-256 key pair per CA instance, generated at load time and
 * reused for every leaf (key generation is the expensive part of minting;
 * the key never leaves the daemon). Each leaf is SAN = DNS:<sni> exactly,
 * CN = sni, serverAuth, valid from now - 1 h (client clock skew) to
 * now + 24 h, never past the CA's notAfter. Cached in an LRU keyed by the
 * lowercase name and re-minted after CA_LEAF_TTL_DEFAULT, well before the
 * leaf expires. Concurrent first requests for one name mint once; the
 * others wait for that mint (single-flight).
 *
 * What a TLS server gets (struct ca_leaf): a ready SSL_CTX per name (leaf
 * certificate + leaf key + the CA certificate as chain, TLS 1.2+, ALPN
 * selecting http/1.1 only), for SSL_set_SSL_CTX() in a servername (SNI)
 * callback, plus the X509 and EVP_PKEY for engines that build their own.
 * Every pointer in a ca_leaf holds its own reference: an entry evicted from
 * the cache stays valid for the connections that use it.
 *
 * Thread-safe: one struct ca is shared by all proxy workers. ca_free()
 * only once no thread is inside ca_leaf_for().
 */
#ifndef EGR_CA_H
#define EGR_CA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

#define CA_DEFAULT_DIR "/etc/egressd/ca"
#define CA_CERT_NAME "ca.crt" /* inside the CA directory, mode 0644 */
#define CA_KEY_NAME "ca.key"  /* inside the CA directory, mode 0600 */
#define CA_SYSTEM_BUNDLE "/etc/ssl/certs/ca-certificates.crt"

#define CA_DAYS_DEFAULT 3650          /* CA certificate validity */
#define CA_MAX_PERMIT 256             /* permitted DNS subtrees */
#define CA_CACHE_DEFAULT 1024         /* leaves in the LRU */
#define CA_LEAF_TTL_DEFAULT (12 * 3600) /* seconds before a leaf is re-minted */
#define CA_LEAF_LIFETIME (24 * 3600)  /* leaf notAfter - now */
#define CA_LEAF_BACKDATE 3600         /* now - leaf notBefore */

struct ca;

struct ca_init_opts {
	/* Replace an existing CA in the directory. Every agent that trusts
	 * the old certificate must then be given the new one. */
	bool force;
	unsigned days;           /* 0 = CA_DAYS_DEFAULT */
	const char *hostname;    /* for the CN; NULL = gethostname() */
	/* Permitted DNS subtrees for a critical nameConstraints extension,
	 * e.g. "example.com" (the name and all its subdomains) or
	 * "*.example.com" / ".example.com" (subdomains only). With at least
	 * one, all IPv4 and IPv6 addresses are excluded too. None (the
	 * default) = no constraints. */
	const char *const *permit;
	size_t n_permit;
};

/*
 * Create a CA in dir: an ECDSA P-256 key (dir/ca.key, 0600, owned by the
 * caller) and a self-signed certificate (dir/ca.crt, 0644; CN "egressd
 * local CA <hostname> <YYYY-MM-DD>", basicConstraints critical CA:TRUE
 * pathlen:0, keyUsage critical keyCertSign+cRLSign, subjectKeyIdentifier,
 * random 128-bit serial). dir is created 0700 (parents 0755) if missing; an
 * existing dir must not be writable by group or others.
 * Returns 0 or -errno: -EEXIST if a CA is there and !opts->force, -EINVAL
 * for a bad option (e.g. an invalid permitted name). On error err holds
 * one line naming the file and the fix. out (optional) receives the
 * loaded CA, as ca_load() would return it.
 */
int ca_init(const char *dir, const struct ca_init_opts *opts, struct ca **out,
	    char *err, size_t errlen);

/*
 * Load a CA supplied as PEM files. Refused (-EPERM / -EINVAL / -EKEYEXPIRED,
 * with err naming the file and the fix): a key file readable or writable by
 * group or others, or owned by another user than the caller or root; a key
 * that does not match the certificate; a certificate that is not a CA
 * (basicConstraints CA:TRUE) with keyCertSign; an expired certificate.
 * key_path may be NULL: the CA can then be exported but not mint
 * (ca_leaf_for() returns -ENOKEY); that is what `ca export` uses.
 * Permitted/excluded DNS subtrees in the certificate's nameConstraints are
 * honoured by ca_leaf_for().
 */
int ca_load(const char *cert_path, const char *key_path, struct ca **out,
	    char *err, size_t errlen);
/* ca_load(dir/ca.crt, with_key ? dir/ca.key : NULL, ...), after checking
 * dir: owned by root or the caller and not writable by group or others
 * (-EPERM, err naming the fix), as ca_init() requires. */
int ca_load_dir(const char *dir, bool with_key, struct ca **out, char *err,
		size_t errlen);
void ca_free(struct ca *ca); /* accepts NULL */

/* The CA certificate (PEM) to f. 0 or -EIO. */
int ca_export_pem(const struct ca *ca, FILE *f);
/* The CA's certificate, not up-ref'd: valid as long as ca. */
X509 *ca_cert(const struct ca *ca);
/*
 * The trust bundle an agent gets: the system bundle (system_bundle, NULL =
 * CA_SYSTEM_BUNDLE; a missing file is skipped) followed by this CA.
 */
int ca_write_bundle(const struct ca *ca, const char *system_bundle, FILE *f);

struct ca_leaf {
	SSL_CTX *ctx;   /* leaf + key + CA chain; TLS 1.2+; ALPN http/1.1 */
	X509 *cert;
	EVP_PKEY *key;  /* the shared leaf key */
};

/*
 * The leaf for sni (case-insensitive, one trailing dot ignored), from the
 * cache or freshly minted. Fills *out with new references, to be dropped
 * with ca_leaf_release(). Returns 0 or -errno:
 *   -EINVAL       not a valid DNS host name (hello_hostname_valid()), an IP
 *                 literal, or a wildcard;
 *   -EPERM        outside the CA's name constraints (checked before
 *                 minting: nothing is signed);
 *   -ENOKEY       CA loaded without its key;
 *   -EKEYEXPIRED  the CA certificate has expired;
 *   -ENOMEM, -EIO OpenSSL failure (logged).
 * Waiters of a failed single-flight mint get the minter's error.
 */
int ca_leaf_for(struct ca *ca, const char *sni, struct ca_leaf *out);
void ca_leaf_release(struct ca_leaf *leaf); /* accepts NULL and zeroed leaves */

/*
 * Apply the server settings of the per-name contexts to ctx (TLS 1.2
 * minimum, ALPN http/1.1 only, no renegotiation). The engine's initial
 * context, the one with the servername callback, needs them too: the
 * protocol version is chosen from the initial context, before the callback
 * switches to the per-name one.
 */
int ca_server_ctx_configure(SSL_CTX *ctx);

/* Cache size and re-mint age. capacity >= 1; ttl_seconds >= 1 (it is
 * capped so that an entry always expires before its leaf). Shrinking
 * evicts at once. 0 or -EINVAL. */
int ca_set_cache(struct ca *ca, size_t capacity, unsigned ttl_seconds);

struct ca_stats {
	uint64_t mints;          /* leaves signed */
	uint64_t mint_failures;
	uint64_t hits;
	uint64_t misses;         /* lookups that started a mint */
	uint64_t waits;          /* lookups that waited for another's mint */
	uint64_t evictions;      /* LRU, over capacity */
	uint64_t expirations;    /* re-mints because the entry aged out */
	size_t entries;
	unsigned waiting;        /* threads waiting right now */
};
void ca_get_stats(struct ca *ca, struct ca_stats *st);

/* Test hooks. The clock drives cache expiry only (leaf validity always
 * uses the real time). The mint hook runs in the minting thread, without
 * the cache lock held, just before signing. NULL restores the default. */
void ca_set_clock(struct ca *ca, time_t (*now)(void *arg), void *arg);
void ca_set_mint_hook(struct ca *ca, void (*hook)(void *arg, const char *name),
		      void *arg);

#endif
