/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * Request rules for an intercepted host: Host vs SNI (domain fronting),
 * method and path globs, request body size, and which credential headers
 * to set. The policy loader fills these structs (reqrule_host_add_rule,
 * reqrule_host_add_cred take the policy's strings); the interception
 * engine calls reqrule_check() per request and reqrule_cred_resolve() to
 * fetch a credential's value.
 *
 * Paths: the request-target's path (query excluded) is normalized before
 * matching: percent-encoded unreserved characters are decoded, other
 * escapes get uppercase hex; "..", "." and empty segments (except a
 * trailing slash), %2F, %5C, '\', NUL and fragments are refused with 400,
 * because a server that normalizes them would see another path than the
 * one we matched.
 *
 * Globs match whole segments: "*" one non-empty segment, "**" any number
 * of segments, zero included (so "/repos/acme" followed by "/" and "**"
 * matches "/repos/acme", "/repos/acme/" and "/repos/acme/x/y"); "*"
 * inside a segment ("*.git") any run of characters in that segment;
 * everything else literally. The glob "*" alone matches the target of
 * "OPTIONS *" and of CONNECT.
 *
 * Rules are tried in order and the first that matches decides. Allow
 * rules and credential path prefixes match the normalized path exactly
 * (case-sensitive). A deny rule also matches a loose reading of it, the
 * one lenient servers act on: compared case-insensitively, each
 * segment's ";params" dropped, segments left empty and a trailing slash
 * dropped; and with the escapes a glob can name decoded (every printable
 * ASCII character but '/', '\\', '%', '?', '#': the sub-delims, ':' and
 * '@' among them), before and after the params are cut. So a rule
 * denying everything under "/repos/acme/secret" also stops
 * "/repos/acme/SECRET/x" and "/repos/acme/secret;x/y", deny "/admin"
 * stops "/admin/", and deny "/v1/x:archive" stops "/v1/x%3Aarchive"; a
 * request that matches an allow rule only loosely gets the default
 * denial (fail closed). Such escapes are not refused: S3 keys and
 * others use them.
 *
 * Credentials go only with an allowed request, never with TRACE (the
 * server may echo the request; also not when TRACE is the method
 * override).
 */
#ifndef EGR_REQRULE_H
#define EGR_REQRULE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define REQRULE_NAME_MAX 64
#define REQRULE_GLOB_MAX 256
#define REQRULE_MAX_GLOBS 16
#define REQRULE_HEADER_MAX 64
#define REQRULE_SOURCE_MAX 512
#define REQRULE_MAX_CREDS 8       /* credentials applied to one request */
#define REQRULE_VALUE_MAX 8192    /* longest credential value */
#define REQRULE_PATH_MAX 4096     /* longest normalized path (else 414) */
#define REQRULE_NO_LIMIT UINT64_MAX

enum reqrule_action {
	REQRULE_ALLOW = 0,
	REQRULE_DENY = 1,
};

/* First matching rule wins; no match is a denial by "default". */
struct reqrule {
	char name[REQRULE_NAME_MAX];
	enum reqrule_action action;
	uint64_t methods;        /* bit (1 << enum http_method); all ones: any */
	char globs[REQRULE_MAX_GLOBS][REQRULE_GLOB_MAX];
	size_t n_globs;
	uint64_t max_body;       /* REQRULE_NO_LIMIT: none */
};

/* Set header `header` to the value read from `source` ("env:NAME",
 * "file:/path") on requests whose path is under path_prefix. */
struct reqrule_cred {
	char name[REQRULE_NAME_MAX];     /* audit-facing, e.g. "github-token" */
	char header[REQRULE_HEADER_MAX]; /* e.g. "Authorization" */
	char path_prefix[REQRULE_GLOB_MAX]; /* "" or "/": every path */
	char source[REQRULE_SOURCE_MAX];
};

struct reqrule_host {
	char host[256];          /* the intercepted name, as the SNI */
	struct reqrule *rules;
	size_t n_rules;
	struct reqrule_cred *creds;
	size_t n_creds;
};

/* The parts of a request head the rules look at. */
struct reqrule_request {
	const char *method;
	const char *method_override; /* X-HTTP-Method-Override & co. (see
				  * httpreq.h), NULL if none: the request
				  * must be allowed under method and under
				  * this; credentials follow method */
	const char *target;      /* request-target as sent */
	const char *host;        /* Host field value, NULL if none */
	bool has_length;
	uint64_t content_length;
	uint16_t port;           /* the connection's port; 0 = 443. A Host
				  * (or absolute-form) port must equal it */
};

struct reqrule_result {
	int status;              /* 0 allow, else 400/403/413/421 */
	const char *reason;      /* static text, safe to log and to answer */
	const struct reqrule *rule; /* matching rule, NULL if none */
	const char *rule_name;   /* rule->name or "default"; NULL if 400/421 */
	char path[REQRULE_PATH_MAX]; /* normalized path (no query) */
	uint64_t max_body;       /* for httpreq_accept(), on allow */
	const struct reqrule_cred *creds[REQRULE_MAX_CREDS]; /* on allow */
	size_t n_creds;
	/* on allow: bit i set if the request would be allowed as method i
	 * (http-parser's numbering) too, for a _method in a POST body
	 * (httpreq_scan_body); UINT64_MAX: as every method, or not a POST */
	uint64_t override_ok;
};

/* "GET,HEAD" (uppercase, known to http-parser) or "*" -> mask. */
int reqrule_parse_methods(const char *s, uint64_t *mask);
/* http-parser's name of method s, compared case-insensitively, or NULL. */
const char *reqrule_method_name(const char *s);
/* http-parser's number of method m (its exact name; the bit in a rule's
 * and in override_ok's mask), or -1. */
int reqrule_method_index(const char *m);
/* The value of hex digit c (either case), or -1. */
int reqrule_hexval(int c);
/* Is a query or form parameter named this "_method" as PHP reads names
 * (leading spaces dropped; '.', ' ', an unclosed '[' read as '_')? */
bool reqrule_param_is_method(const char *name);
/* "1048576", "64k", "10M", "1G" (1024-based) or "" / "none" -> limit. */
int reqrule_parse_size(const char *s, uint64_t *out);
/* Check a glob: starts with "/" (or is "*"), no '?', '#', '%', '\'. */
int reqrule_glob_valid(const char *glob);

/*
 * Fill r from strings: action "allow"/"deny", methods as above, globs
 * separated by spaces/commas, max_body as above (NULL: none).
 */
int reqrule_init(struct reqrule *r, const char *name, const char *action,
		 const char *methods, const char *globs, const char *max_body);

/*
 * Do field names a (alen bytes) and b name the same field for some
 * server? Letters case-insensitive, digits exact, and every other byte
 * (any separator: '-', '_', '.', '~', ...) the same: CGI-style gateways
 * make "HTTP_X_Y" of "X-Y" and "X_Y", PHP maps '.' to '_' in $_SERVER
 * names, Apache's CGI environment every non-alphanumeric byte.
 */
bool reqrule_field_name_eq(const char *a, size_t alen, const char *b);

/*
 * Is header one a credential may not set? Host, Content-Length,
 * Transfer-Encoding, Connection, Upgrade, TE, Trailer, Keep-Alive,
 * Proxy-Connection, Proxy-Authorization, Expect, in any spelling
 * reqrule_field_name_eq() takes for them.
 */
bool reqrule_header_reserved(const char *header);

int reqrule_host_init(struct reqrule_host *h, const char *host);
/* Copy r / c into h (growing its arrays). A credential's header must be
 * a token and not reserved (above); source "env:NAME" or "file:/path". */
int reqrule_host_add_rule(struct reqrule_host *h, const struct reqrule *r);
int reqrule_host_add_cred(struct reqrule_host *h, const char *name,
			  const char *header, const char *path_prefix,
			  const char *source);
void reqrule_host_free(struct reqrule_host *h);

/*
 * Normalize the path of target into out (see top). 0, or -EINVAL (400).
 * Origin-form only; reqrule_check handles the other forms.
 */
int reqrule_normalize_path(const char *target, char *out, size_t outsz);
/* Does normalized path match glob? (exactly: how allow rules match) */
bool reqrule_glob_match(const char *glob, const char *path);
/* The same, or does its loose reading (see top)? How deny rules match. */
bool reqrule_glob_match_loose(const char *glob, const char *path);
/*
 * Does a Host value / authority name sni? Case-insensitive, one trailing
 * dot ignored on both, port absent or 443. 1 yes, 0 no, -EINVAL bad
 * syntax.
 */
int reqrule_host_matches(const char *authority, const char *sni);
/* The same for a connection to port (0 = 443): "host:port" must name it. */
int reqrule_host_matches_port(const char *authority, const char *sni, uint16_t port);

/* Decide on one request. Returns res->status. */
int reqrule_check(const struct reqrule_host *h, const char *sni,
		  const struct reqrule_request *req, struct reqrule_result *res);

/*
 * Read a credential's value: env var of this process or a file's
 * contents, minus one trailing newline. A file must be a regular file
 * (not opened through a symbolic link), root's and mode 0600 or
 * stricter, and every directory above it root's and not writable by
 * group or others unless sticky (-EPERM, -ELOOP, -EINVAL otherwise).
 * 0, or -errno with a message in err that names the source and the fix
 * but never contains any value.
 */
int reqrule_cred_resolve(const struct reqrule_cred *c, char *val,
			 size_t valsz, size_t *len, char *err, size_t errsz);

#endif
