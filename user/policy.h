/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * Policy: named allow/deny rule lists, loaded from JSON files (jansson) or
 * --allow/--deny flags, matched by the proxy and summarised for the kernel.
 * Documented for users in docs/policy.md.
 *
 * Rule syntax (strings):
 *   example.com            exact name, ports 443 and 80
 *   *.example.com          any subdomain (not the apex), ports 443 and 80
 *   example.com:8443       one port ("*" = any port)
 *   192.0.2.7, 192.0.2.0/24[:port], [2001:db8::1]:443, 2001:db8::/32
 *                          IP/CIDR, any port unless one is given
 * Names: case-insensitive, trailing dot ignored. Deny rules win over allow.
 */
#ifndef EGR_POLICY_H
#define EGR_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "addr.h"
#include "egressd_shared.h"
#include "reqrule.h"

struct geo;

enum policy_mode {
	POLICY_ENFORCE = 0,
	POLICY_AUDIT = 1,
};

enum policy_rule_kind {
	RULE_DOMAIN = 0,
	RULE_CIDR = 1,
};

struct policy_rule {
	enum policy_rule_kind kind;
	char *text;     /* canonical text, used in audit records and messages */
	char *source;   /* where it came from: "policy.json:12" or "--allow" */
	/* RULE_DOMAIN */
	char *domain;   /* lowercase, no trailing dot, without the "*." */
	bool wildcard;  /* "*.domain": strict subdomains only */
	/* RULE_CIDR */
	struct egr_addr net;
	unsigned prefixlen; /* in the 128-bit mapped space */
	/* ports: any_port, or port != 0, or (domain only) default 443+80 */
	bool any_port;
	uint16_t port;  /* 0 = default */
	/* GeoIP (allow rules only, docs/geoip.md): the rule admits only
	 * upstream addresses in these ASNs; n_asn == 0: no restriction. */
	uint32_t *asn;
	size_t n_asn;
};

/*
 * A host whose TLS egressd terminates to check each request and inject
 * credentials (docs/interception.md). Credentials are kept as their
 * source ("env:NAME", "file:/path"), never as values.
 */
struct policy_intercept {
	char *pattern;  /* canonical: "api.example.com" or "*.example.com" */
	char *domain;   /* lowercase, without the "*." */
	bool wildcard;  /* "*.domain": strict subdomains only */
	char *source;   /* "policy.json:12", "--intercept", "--inject" */
	struct reqrule_host rules; /* rules.host = pattern */
};

/*
 * Gateway (docs/interception.md, "Gateway mode"): plain HTTP to a
 * loopback address+port the agent uses as a base URL
 * (ANTHROPIC_BASE_URL=http://127.0.0.1:8080) goes to an https upstream
 * origin, with the request rules and credentials of an intercepted host,
 * so the agent needs no CA and never holds the credential.
 */
#define POLICY_GATEWAY_ADDRS 2
struct policy_gateway {
	char *listen;   /* canonical: "127.0.0.1:8080", "[::1]:8080", "localhost:8080" */
	struct egr_addr addrs[POLICY_GATEWAY_ADDRS]; /* v4-mapped; localhost: both */
	size_t n_addrs;
	uint16_t port;
	char *upstream; /* canonical: "https://api.example.com" (":port" if not 443) */
	char *host;     /* upstream host name, lowercase (TLS SNI, verified name) */
	uint16_t upstream_port;
	char *source;   /* "policy.json:12", "--gateway" */
	struct reqrule_host rules; /* rules.host = host */
};

struct policy {
	char *name;
	enum policy_mode mode;
	/* "inbound": "any": connections a listener of the cgroup accepts from
	 * other hosts may be answered; false ("local"): only over loopback */
	bool inbound_any;
	struct policy_rule *allow;
	size_t n_allow;
	struct policy_rule *deny;
	size_t n_deny;
	struct policy_intercept *intercept;
	size_t n_intercept;
	char *upstream_ca; /* CA bundle for upstream TLS; NULL = system store */
	struct policy_gateway *gateways;
	size_t n_gateways;
	/* GeoIP (docs/geoip.md). deny_countries: NULL-terminated upper-case
	 * ISO 3166-1 alpha-2 codes (NULL: none), as geo_country_denied()
	 * takes them; geo_source: where the list was given. */
	char **deny_countries;
	size_t n_deny_countries;
	char *geo_source;
	/* The databases lookups use, set by the owner (run.c, dconfig.c),
	 * not owned; NULL: none. */
	const struct geo *geo;
};

struct policy *policy_new(const char *name);
void policy_free(struct policy *p); /* accepts NULL */

/* Parse one rule string and append it. source names where it came from.
 * On error returns -EINVAL and writes "reason" into err. */
int policy_add_rule(struct policy *p, bool deny, const char *text,
		    const char *source, char *err, size_t errlen);

/* Load a JSON policy file into p (rules are appended, name/mode set).
 * On error returns -errno and writes "FILE:LINE: FIELD: reason" into err;
 * p is then left unchanged (nothing half-applied). */
int policy_load_file(struct policy *p, const char *path, char *err, size_t errlen);
/* Same, from memory; name is used in messages in place of a file name. */
int policy_load_buffer(struct policy *p, const char *name, const char *buf,
		       size_t len, char *err, size_t errlen);

/* The built-in policy for coding agents (used when none is given). */
struct policy *policy_default(void);

/* Write p as a JSON policy file that policy_load_file() accepts. */
int policy_write_json(const struct policy *p, FILE *out);

struct policy_decision {
	enum egr_verdict verdict; /* ALLOW or DENY (mode is applied by caller) */
	enum egr_reason reason;   /* RULE_ALLOW, RULE_DENY, NO_MATCH */
	const struct policy_rule *rule; /* matching rule, NULL for NO_MATCH */
};

/* Decision for a connection that named a host (SNI or Host) to port.
 * host must already be valid (hello_hostname_valid). Only domain rules are
 * consulted; deny domain rules win. */
void policy_decide_name(const struct policy *p, const char *host, uint16_t port,
			struct policy_decision *d);

/* Whether the DNS proxy may resolve name (lowercase, no trailing dot) at
 * all: some allow domain rule matches it on some port, and no deny domain
 * rule for every port (":*") matches it. The port is decided later, when
 * the agent connects. */
bool policy_name_resolvable(const struct policy *p, const char *name);

/* Decision by address alone (IP/CIDR rules; deny CIDR rules win). Used for
 * connections without a name, and to check deny CIDRs against the address a
 * name resolved to. */
void policy_decide_addr(const struct policy *p, const struct egr_addr *a,
			uint16_t port, struct policy_decision *d);

/* An allow CIDR rule covers a (and port): the rule "names" the address, so a
 * resolved private/loopback/link-local address is acceptable. */
bool policy_names_addr(const struct policy *p, const struct egr_addr *a, uint16_t port);

/* Summary for the kernel fast path: the set of ports any allow rule can
 * match. Sets *any_port if some rule allows every port; otherwise fills
 * ports[0..*n) (deduplicated, sorted). Returns -E2BIG if more than max. */
int policy_allowed_ports(const struct policy *p, bool *any_port,
			 uint16_t *ports, size_t max, size_t *n);

/* TLS interception (issue 4): the request rules for host if the policy
 * marks it "intercept" (exact name or "*.domain"), else NULL. An exact
 * entry wins over a wildcard one, a longer wildcard over a shorter. */
const struct reqrule_host *policy_intercept_for(const struct policy *p, const char *host);

/*
 * Mark host ("name" or "*.domain") intercepted, with one rule "all"
 * allowing every method on every path, unless the policy already
 * intercepts exactly that pattern (its rules are then kept). *out (may be
 * NULL) receives the entry's rules, e.g. to add credentials. On error
 * -EINVAL and "reason" in err.
 */
int policy_add_intercept(struct policy *p, const char *host, const char *source,
			 struct reqrule_host **out, char *err, size_t errlen);

/* Every intercepted host is allowed by some allow rule (an interception
 * that no rule lets through is a mistake). 0, or -EINVAL with
 * "HOST (SOURCE): is not allowed by any allow rule" in err. */
int policy_check_intercept(const struct policy *p, char *err, size_t errlen);

/*
 * Add a gateway: listen "127.0.0.1:8080" (any 127/8 address), "[::1]:8080"
 * or "localhost:8080" (both 127.0.0.1 and ::1), upstream
 * "https://host[:port]" (a name, no path). Its rules are one rule "all"
 * allowing every request. *out (may be NULL) receives them, e.g. to add
 * credentials. -EINVAL with "reason" in err (a listen address another
 * gateway of p already uses, too).
 */
int policy_add_gateway(struct policy *p, const char *listen, const char *upstream,
		       const char *source, struct reqrule_host **out, char *err, size_t errlen);

/* The gateway of p at loopback address a (v4-mapped) and port, or NULL. */
const struct policy_gateway *policy_gateway_for(const struct policy *p,
						 const struct egr_addr *a, uint16_t port);

/* Every gateway's upstream host is allowed on its port by some allow rule.
 * 0, or -EINVAL with "LISTEN (SOURCE): upstream HOST:PORT is not allowed by
 * any allow rule" in err. */
int policy_check_gateways(const struct policy *p, char *err, size_t errlen);

/* GeoIP (docs/geoip.md) --------------------------------------------------
 * A policy that names countries needs a country database, one whose rules
 * name ASNs an ASN database; otherwise a rule could pass for want of data.
 * 0, or -EINVAL with "SOURCE: FIELD needs a(n) ... database (HOW)" in err,
 * where HOW says how to give one (e.g. "--geoip-country FILE"). */
int policy_check_geo(const struct policy *p, bool have_country, bool have_asn,
		     const char *how_country, const char *how_asn, char *err, size_t errlen);
/* The policy uses GeoIP at all (deny_countries or some rule's asn). */
bool policy_uses_geo(const struct policy *p);
/*
 * Whether the upstream ASN asn (0: unknown) may serve a connection that
 * matched allow rule r: r has no ASN list, or lists asn, or another allow
 * rule of the same kind that also matches (name host and port, or address
 * a and port for address rules) has no list or lists asn. Unknown (0)
 * never satisfies a list: fail closed. r NULL (no allow rule, audit mode)
 * is no restriction.
 */
bool policy_asn_ok(const struct policy *p, const struct policy_rule *r, const char *host,
		   const struct egr_addr *a, uint16_t port, uint32_t asn);

/* "--allow RULE" text that would admit host (or address) and port; used in
 * the exit summary. Returns buf. */
const char *policy_suggest_rule(const char *host, const struct egr_addr *a,
				uint16_t port, char *buf, size_t len);

#endif
