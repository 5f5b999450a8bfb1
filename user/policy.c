// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * Policy rules: parsing (rule strings, JSON files), matching, and the
 * summary the kernel fast path needs. User documentation: docs/policy.md.
 *
 * Policy files are written by people, so errors name the file, the line
 * and the field, and a failed load leaves the policy untouched: a daemon
 * reloading a broken file keeps enforcing the old rules.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <http_parser.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jpos.h"
#include "policy.h"
#include "log.h"

/* A policy file is a short allowlist; anything bigger is a mistake or an
 * attack on the parser. */
#define POLICY_MAX_FILE (1024 * 1024)
#define POLICY_MAX_RULES 10000
#define POLICY_MAX_RULE_LEN 300
#define POLICY_MAX_NAME_LEN 64
#define NAME_MAX_LEN 253

/* --- host names --------------------------------------------------------- */

/*
 * Validate and normalise a DNS name: lowercase, one trailing dot dropped,
 * LDH labels (plus '_', which real names such as _acme-challenge use) of
 * 1..63 characters, at most 253 in all, and not all-numeric at the end
 * (that is an IPv4 address to most resolvers). Our own copy of the rules
 * hello_hostname_valid() enforces on SNI/Host, so that policy.c links
 * without the TLS parser. out must hold NAME_MAX_LEN + 1 bytes.
 * Returns NULL if valid, else the reason.
 */
static const char *name_normalise(const char *in, size_t len, char *out)
{
	size_t i, label = 0;
	bool numeric = true;

	if (len && in[len - 1] == '.')
		len--;
	if (!len)
		return "";
	if (len > NAME_MAX_LEN)
		return "longer than 253 characters";
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)in[i];

		if (c == '.') {
			if (!label)
				return "empty label";
			if (out[i - 1] == '-')
				return "label ends with '-'";
			label = 0;
			numeric = true;
			out[i] = '.';
			continue;
		}
		if (c >= 0x80)
			return "non-ASCII character; write IDNs in their xn-- form";
		c = (unsigned char)tolower(c);
		if (!(isalnum(c) || c == '-' || c == '_')) {
			if (c == '*')
				return "'*' is only allowed as a whole first label (*.example.com)";
			return "invalid character";
		}
		if (c == '-' && !label)
			return "label starts with '-'";
		if (!isdigit(c))
			numeric = false;
		if (++label > 63)
			return "label longer than 63 characters";
		out[i] = (char)c;
	}
	if (out[len - 1] == '-')
		return "label ends with '-'";
	if (numeric)
		return "all-numeric last label";
	out[len] = '\0';
	return NULL;
}

/* Lowercase copy without the trailing dot, for matching names that the
 * caller already validated. false if it cannot be a rule's name. */
static bool name_lower(const char *in, char *out)
{
	size_t len = strlen(in), i;

	if (len && in[len - 1] == '.')
		len--;
	if (!len || len > NAME_MAX_LEN)
		return false;
	for (i = 0; i < len; i++)
		out[i] = (char)tolower((unsigned char)in[i]);
	out[len] = '\0';
	return true;
}

/* --- rules -------------------------------------------------------------- */

struct policy_rule;
static bool domain_match(const struct policy_rule *r, const char *host, size_t hlen);
static void intercept_clear(struct policy_intercept *e);
static void gateway_clear(struct policy_gateway *g);

static void rule_clear(struct policy_rule *r)
{
	free(r->text);
	free(r->source);
	free(r->domain);
	free(r->asn);
	memset(r, 0, sizeof(*r));
}

/* Digits only, no sign, no leading zeros beyond a single "0". */
static int parse_uint(const char *s, size_t len, unsigned max, unsigned *out)
{
	unsigned v = 0;
	size_t i;

	if (!len || len > 5 || (len > 1 && s[0] == '0'))
		return -EINVAL;
	for (i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > max)
		return -ERANGE;
	*out = v;
	return 0;
}

/* ":PORT" or ":*" suffix (without the colon). */
static int parse_port(const char *s, size_t len, struct policy_rule *r,
		      char *err, size_t errlen)
{
	unsigned v;

	if (len == 1 && s[0] == '*') {
		r->any_port = true;
		r->port = 0;
		return 0;
	}
	if (!len) {
		egr_seterr(err, errlen, "empty port after ':'");
		return -EINVAL;
	}
	if (parse_uint(s, len, 65535, &v) || v == 0) {
		egr_seterr(err, errlen, "invalid port \"%.*s\" (1-65535 or *)",
		       (int)(len > 16 ? 16 : len), s);
		return -EINVAL;
	}
	r->any_port = false;
	r->port = (uint16_t)v;
	return 0;
}

static void v6_str(const struct egr_addr *a, char *buf, size_t len)
{
	/* Always the IPv6 spelling, also for v4-mapped nets shorter than /96. */
	if (!inet_ntop(AF_INET6, a->b, buf, len))
		snprintf(buf, len, "?");
}

static bool cidr_is_v4(const struct policy_rule *r)
{
	return addr_is_v4(&r->net) && r->prefixlen >= 96;
}

/* Canonical text of a parsed rule; one spelling per meaning. */
static int rule_format(const struct policy_rule *r, char *buf, size_t len)
{
	char a[INET6_ADDRSTRLEN], pfx[8] = "", port[8] = "";
	bool v4;

	if (r->kind == RULE_DOMAIN) {
		if (r->any_port)
			snprintf(port, sizeof(port), ":*");
		else if (r->port)
			snprintf(port, sizeof(port), ":%u", r->port);
		return snprintf(buf, len, "%s%s%s", r->wildcard ? "*." : "",
				r->domain, port);
	}
	v4 = cidr_is_v4(r);
	if (v4)
		addr_to_str(&r->net, a, sizeof(a));
	else
		v6_str(&r->net, a, sizeof(a));
	if (r->prefixlen != 128)
		snprintf(pfx, sizeof(pfx), "/%u", v4 ? r->prefixlen - 96 : r->prefixlen);
	if (!r->any_port)
		snprintf(port, sizeof(port), ":%u", r->port);
	if (!v4 && !r->any_port)
		return snprintf(buf, len, "[%s]%s%s", a, pfx, port);
	return snprintf(buf, len, "%s%s%s", a, pfx, port);
}

static void mask_net(struct egr_addr *a, unsigned prefixlen)
{
	unsigned i;

	for (i = 0; i < 16; i++) {
		unsigned bits = prefixlen > i * 8 ? prefixlen - i * 8 : 0;

		if (bits < 8)
			a->b[i] &= (uint8_t)(0xff << (8 - bits));
	}
}

/*
 * Address part of an IP rule: "A" or "A/N". v6 says which family the
 * syntax promised (brackets or several colons). Sets net and prefixlen.
 */
static int parse_cidr(const char *s, size_t len, bool v6, bool bare,
		      struct policy_rule *r, char *err, size_t errlen)
{
	char buf[INET6_ADDRSTRLEN + 8];
	const char *slash = memchr(s, '/', len);
	size_t alen = slash ? (size_t)(slash - s) : len;
	unsigned plen, max;
	struct egr_addr masked;

	if (alen >= INET6_ADDRSTRLEN) {
		egr_seterr(err, errlen, "invalid IP address");
		return -EINVAL;
	}
	memcpy(buf, s, alen);
	buf[alen] = '\0';
	if (addr_parse(buf, &r->net) || (v6 != (strchr(buf, ':') != NULL))) {
		if (v6 && bare)
			egr_seterr(err, errlen, "invalid IPv6 address (write [2001:db8::1]:443 to give a port)");
		else if (v6)
			egr_seterr(err, errlen, "invalid IPv6 address");
		else
			egr_seterr(err, errlen, "invalid IPv4 address");
		return -EINVAL;
	}
	max = v6 ? 128 : 32;
	if (slash) {
		if (parse_uint(slash + 1, len - alen - 1, max, &plen)) {
			egr_seterr(err, errlen, "invalid prefix length \"%.*s\" (0-%u)",
			       (int)(len - alen - 1 > 8 ? 8 : len - alen - 1),
			       slash + 1, max);
			return -EINVAL;
		}
	} else {
		plen = max;
	}
	r->kind = RULE_CIDR;
	r->prefixlen = v6 ? plen : plen + 96;
	masked = r->net;
	mask_net(&masked, r->prefixlen);
	if (memcmp(&masked, &r->net, sizeof(masked))) {
		char a[INET6_ADDRSTRLEN];

		if (v6)
			v6_str(&masked, a, sizeof(a));
		else
			addr_to_str(&masked, a, sizeof(a));
		egr_seterr(err, errlen, "host bits set, did you mean %s/%u", a, plen);
		return -EINVAL;
	}
	return 0;
}

static bool all_digits_dots(const char *s, size_t len)
{
	bool digit = false;
	size_t i;

	for (i = 0; i < len; i++) {
		if (s[i] >= '0' && s[i] <= '9')
			digit = true;
		else if (s[i] != '.')
			return false;
	}
	return digit;
}

static int parse_domain(const char *s, size_t len, struct policy_rule *r,
			char *err, size_t errlen)
{
	char name[NAME_MAX_LEN + 1];
	const char *why;

	if (len == 1 && s[0] == '*') {
		egr_seterr(err, errlen, "a bare '*' would allow every destination; list the domains");
		return -EINVAL;
	}
	r->kind = RULE_DOMAIN;
	if (len >= 2 && s[0] == '*' && s[1] == '.') {
		r->wildcard = true;
		s += 2;
		len -= 2;
	}
	why = name_normalise(s, len, name);
	if (why) {
		if (*why)
			egr_seterr(err, errlen, "invalid domain name (%s)", why);
		else
			egr_seterr(err, errlen, "invalid domain name");
		return -EINVAL;
	}
	if (r->wildcard && !strchr(name, '.')) {
		egr_seterr(err, errlen,
		       "wildcard over a top-level domain would allow half the internet; "
		       "name the domain, e.g. *.example.%s", name);
		return -EINVAL;
	}
	r->domain = strdup(name);
	return r->domain ? 0 : -ENOMEM;
}

/* Parse text into r (text and domain allocated; source left to caller). */
static int rule_parse(const char *text, struct policy_rule *r, char *err, size_t errlen)
{
	char canon[POLICY_MAX_RULE_LEN + 64];
	size_t len = strlen(text), i, colons = 0;
	const char *colon;
	int ret;

	memset(r, 0, sizeof(*r));
	if (!len) {
		egr_seterr(err, errlen, "empty rule");
		return -EINVAL;
	}
	if (len > POLICY_MAX_RULE_LEN) {
		egr_seterr(err, errlen, "rule longer than %d characters", POLICY_MAX_RULE_LEN);
		return -EINVAL;
	}
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)text[i];

		if (c <= ' ' || c == 0x7f) {
			egr_seterr(err, errlen, "contains whitespace or control characters");
			return -EINVAL;
		}
		colons += c == ':';
	}

	if (strstr(text, "://")) {
		egr_seterr(err, errlen, "looks like a URL; write the host name only (example.com)");
		return -EINVAL;
	}
	if (text[0] == '[') {
		/* [v6]:port, [v6]/len:port, and [v6/len]:port for good measure */
		const char *close = strchr(text, ']'), *rest;
		bool inner_slash;

		if (!close) {
			egr_seterr(err, errlen, "missing ']'");
			return -EINVAL;
		}
		inner_slash = memchr(text + 1, '/', (size_t)(close - text - 1)) != NULL;
		rest = close + 1;
		if (*rest == '/' && !inner_slash) {
			/* append "/N" to the bracketed part for parse_cidr */
			char tmp[POLICY_MAX_RULE_LEN + 1];
			const char *end = strchr(rest, ':');
			size_t alen = (size_t)(close - text - 1);
			size_t plen = end ? (size_t)(end - rest) : strlen(rest);

			memcpy(tmp, text + 1, alen);
			memcpy(tmp + alen, rest, plen);
			tmp[alen + plen] = '\0';
			ret = parse_cidr(tmp, alen + plen, true, false, r, err, errlen);
			rest += plen;
		} else {
			ret = parse_cidr(text + 1, (size_t)(close - text - 1), true,
					 false, r, err, errlen);
		}
		if (ret)
			goto fail;
		r->any_port = true;
		if (*rest == ':') {
			ret = parse_port(rest + 1, strlen(rest + 1), r, err, errlen);
			if (ret)
				goto fail;
		} else if (*rest) {
			egr_seterr(err, errlen, "unexpected \"%.16s\" after ']'", rest);
			ret = -EINVAL;
			goto fail;
		}
	} else if (colons >= 2) {
		if (strspn(text, "0123456789abcdefABCDEF:./") != len) {
			egr_seterr(err, errlen, "more than one ':' (an IPv6 address with a port "
			       "needs brackets: [2001:db8::1]:443)");
			return -EINVAL;
		}
		ret = parse_cidr(text, len, true, true, r, err, errlen);
		if (ret)
			goto fail;
		r->any_port = true;
	} else {
		size_t hlen;

		const char *slash;

		colon = strchr(text, ':');
		hlen = colon ? (size_t)(colon - text) : len;
		slash = memchr(text, '/', hlen);
		if (slash && !all_digits_dots(text, (size_t)(slash - text))) {
			egr_seterr(err, errlen, "'/' is only allowed in IP CIDR rules; "
			       "a rule names a host, not a URL path");
			ret = -EINVAL;
			goto fail;
		}
		if (slash || all_digits_dots(text, hlen)) {
			ret = parse_cidr(text, hlen, false, false, r, err, errlen);
			if (ret)
				goto fail;
			r->any_port = true;
		} else {
			ret = parse_domain(text, hlen, r, err, errlen);
			if (ret)
				goto fail;
		}
		if (colon) {
			ret = parse_port(colon + 1, len - hlen - 1, r, err, errlen);
			if (ret)
				goto fail;
		}
	}

	rule_format(r, canon, sizeof(canon));
	r->text = strdup(canon);
	if (!r->text) {
		ret = -ENOMEM;
		goto fail;
	}
	return 0;
fail:
	rule_clear(r);
	return ret;
}

static size_t rules_cap(size_t n)
{
	size_t c = 8;

	if (!n)
		return 0;
	while (c < n)
		c *= 2;
	return c;
}

/* Make room for want rules in *v (holding n). Keeps *v on failure. */
static int rules_reserve(struct policy_rule **v, size_t n, size_t want)
{
	struct policy_rule *nv;

	if (want <= rules_cap(n) && (n || !want))
		return 0;
	nv = realloc(*v, rules_cap(want) * sizeof(**v));
	if (!nv)
		return -ENOMEM;
	*v = nv;
	return 0;
}

struct policy *policy_new(const char *name)
{
	struct policy *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	p->name = strdup(name ? name : "unnamed");
	if (!p->name) {
		free(p);
		return NULL;
	}
	p->mode = POLICY_ENFORCE;
	return p;
}

void policy_free(struct policy *p)
{
	size_t i;

	if (!p)
		return;
	for (i = 0; i < p->n_allow; i++)
		rule_clear(&p->allow[i]);
	for (i = 0; i < p->n_deny; i++)
		rule_clear(&p->deny[i]);
	for (i = 0; i < p->n_intercept; i++)
		intercept_clear(&p->intercept[i]);
	free(p->intercept);
	for (i = 0; i < p->n_gateways; i++)
		gateway_clear(&p->gateways[i]);
	free(p->gateways);
	free(p->upstream_ca);
	for (i = 0; i < p->n_deny_countries; i++)
		free(p->deny_countries[i]);
	free(p->deny_countries);
	free(p->geo_source);
	free(p->allow);
	free(p->deny);
	free(p->name);
	free(p);
}

int policy_add_rule(struct policy *p, bool deny, const char *text,
		    const char *source, char *err, size_t errlen)
{
	struct policy_rule r, **v = deny ? &p->deny : &p->allow;
	size_t *n = deny ? &p->n_deny : &p->n_allow;
	int ret;

	if (!text) {
		egr_seterr(err, errlen, "empty rule");
		return -EINVAL;
	}
	if (p->n_allow + p->n_deny >= POLICY_MAX_RULES) {
		egr_seterr(err, errlen, "too many rules (at most %d)", POLICY_MAX_RULES);
		return -E2BIG;
	}
	ret = rule_parse(text, &r, err, errlen);
	if (ret)
		return ret;
	if (source) {
		r.source = strdup(source);
		if (!r.source)
			goto nomem;
	}
	if (rules_reserve(v, *n, *n + 1))
		goto nomem;
	(*v)[(*n)++] = r;
	return 0;
nomem:
	rule_clear(&r);
	egr_seterr(err, errlen, "out of memory");
	return -ENOMEM;
}

/* --- interception ------------------------------------------------------- */

static void intercept_clear(struct policy_intercept *e)
{
	free(e->pattern);
	free(e->domain);
	free(e->source);
	reqrule_host_free(&e->rules);
	memset(e, 0, sizeof(*e));
}

/*
 * "api.example.com" or "*.example.com" into e's pattern/domain/wildcard.
 * Names only: interception checks the certificate name and the Host
 * header against this, and applies on every port the allow rules open.
 */
static int intercept_pattern(const char *text, struct policy_intercept *e,
			     char *err, size_t errlen)
{
	char name[NAME_MAX_LEN + 1], canon[NAME_MAX_LEN + 3];
	size_t len = strlen(text);
	const char *s = text, *why;
	bool wildcard = false;

	if (strchr(text, ':') || strchr(text, '/')) {
		egr_seterr(err, errlen, "write the host name only (no port, scheme or path): "
		       "interception applies on every port the allow rules open");
		return -EINVAL;
	}
	if (len == 1 && s[0] == '*') {
		egr_seterr(err, errlen, "a bare '*' would intercept every host; list the hosts");
		return -EINVAL;
	}
	if (len >= 2 && s[0] == '*' && s[1] == '.') {
		wildcard = true;
		s += 2;
		len -= 2;
	}
	if (all_digits_dots(s, len)) {
		egr_seterr(err, errlen, "an IP address cannot be intercepted (no name to "
		       "mint a certificate for); name the host");
		return -EINVAL;
	}
	why = name_normalise(s, len, name);
	if (why) {
		if (*why)
			egr_seterr(err, errlen, "invalid host name (%s)", why);
		else
			egr_seterr(err, errlen, "invalid host name");
		return -EINVAL;
	}
	if (wildcard && !strchr(name, '.')) {
		egr_seterr(err, errlen, "wildcard over a top-level domain; name the domain, "
		       "e.g. *.example.%s", name);
		return -EINVAL;
	}
	snprintf(canon, sizeof(canon), "%s%s", wildcard ? "*." : "", name);
	e->wildcard = wildcard;
	e->pattern = strdup(canon);
	e->domain = strdup(name);
	if (!e->pattern || !e->domain) {
		egr_seterr(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if (reqrule_host_init(&e->rules, canon)) {
		egr_seterr(err, errlen, "invalid host name");
		return -EINVAL;
	}
	return 0;
}

static struct policy_intercept *find_intercept(const struct policy *p, const char *pattern)
{
	size_t i;

	for (i = 0; p && i < p->n_intercept; i++)
		if (!strcmp(p->intercept[i].pattern, pattern))
			return &p->intercept[i];
	return NULL;
}

/* The rule an intercept entry gets when it names none: every request. */
static int add_allow_all(struct reqrule_host *h)
{
	struct reqrule r;
	int ret = reqrule_init(&r, "all", "allow", "*", "/**", NULL);

	return ret ? ret : reqrule_host_add_rule(h, &r);
}

/* The longest wildcard entry whose names include all of e's (e exact, or
 * a wildcard below it), or NULL. */
static const struct policy_intercept *covering_intercept(const struct policy *p,
							 const struct policy_intercept *e)
{
	const struct policy_intercept *best = NULL;
	size_t i, dlen = strlen(e->domain), blen = 0;

	for (i = 0; i < p->n_intercept; i++) {
		const struct policy_intercept *w = &p->intercept[i];
		size_t wlen = strlen(w->domain);

		if (!w->wildcard || wlen <= blen)
			continue;
		/* e's names are strict subdomains of w's domain: e exact below
		 * it, or e a wildcard over it or below it */
		if ((e->wildcard && !strcmp(e->domain, w->domain)) ||
		    (dlen > wlen + 1 && e->domain[dlen - wlen - 1] == '.' &&
		     !strcmp(e->domain + dlen - wlen, w->domain))) {
			best = w;
			blen = wlen;
		}
	}
	return best;
}

static int intercept_copy_rules(struct reqrule_host *dst, const struct reqrule_host *src)
{
	size_t i;

	for (i = 0; i < src->n_rules; i++)
		if (reqrule_host_add_rule(dst, &src->rules[i]))
			return -ENOMEM;
	for (i = 0; i < src->n_creds; i++) {
		const struct reqrule_cred *c = &src->creds[i];

		if (reqrule_host_add_cred(dst, c->name, c->header, c->path_prefix, c->source))
			return -ENOMEM;
	}
	return 0;
}

static int intercept_append(struct policy *p, struct policy_intercept *e)
{
	struct policy_intercept *v;

	v = realloc(p->intercept, (p->n_intercept + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	p->intercept = v;
	p->intercept[p->n_intercept++] = *e;
	memset(e, 0, sizeof(*e));
	return 0;
}

int policy_add_intercept(struct policy *p, const char *host, const char *source,
			 struct reqrule_host **out, char *err, size_t errlen)
{
	struct policy_intercept e = { 0 }, *old;
	const struct policy_intercept *cover;
	int ret;

	if (!p || !host) {
		egr_seterr(err, errlen, "empty host");
		return -EINVAL;
	}
	ret = intercept_pattern(host, &e, err, errlen);
	if (ret)
		goto fail;
	old = find_intercept(p, e.pattern);
	if (old) {
		intercept_clear(&e);
		if (out)
			*out = &old->rules;
		return 0;
	}
	if (source && !(e.source = strdup(source)))
		goto nomem;
	/* A host a wildcard entry (a policy file's) already intercepts keeps
	 * that entry's rules and credentials: the new entry, exact or a
	 * narrower wildcard, wins the lookup, and "every request" would
	 * silently replace a file's read-only rule. */
	cover = covering_intercept(p, &e);
	if (cover ? intercept_copy_rules(&e.rules, &cover->rules) : add_allow_all(&e.rules))
		goto nomem;
	if (intercept_append(p, &e))
		goto nomem;
	if (out)
		*out = &p->intercept[p->n_intercept - 1].rules;
	return 0;
nomem:
	egr_seterr(err, errlen, "out of memory");
	ret = -ENOMEM;
fail:
	intercept_clear(&e);
	return ret;
}

/* Some allow domain rule of p lets e's names through (on some port). */
static bool intercept_allowed_by(const struct policy *p, const struct policy_intercept *e)
{
	size_t i, dlen = strlen(e->domain);

	for (i = 0; p && i < p->n_allow; i++) {
		const struct policy_rule *r = &p->allow[i];
		size_t rlen;

		if (r->kind != RULE_DOMAIN)
			continue;
		if (!e->wildcard) {
			if (domain_match(r, e->domain, dlen))
				return true;
			continue;
		}
		/* every subdomain of e->domain: only a wildcard rule over it
		 * or over one of its parents */
		if (!r->wildcard)
			continue;
		rlen = strlen(r->domain);
		if (!strcmp(e->domain, r->domain) ||
		    (dlen > rlen + 1 && e->domain[dlen - rlen - 1] == '.' &&
		     !strcmp(e->domain + dlen - rlen, r->domain)))
			return true;
	}
	return false;
}

int policy_check_intercept(const struct policy *p, char *err, size_t errlen)
{
	size_t i;

	for (i = 0; p && i < p->n_intercept; i++) {
		const struct policy_intercept *e = &p->intercept[i];

		if (!intercept_allowed_by(p, e)) {
			egr_seterr(err, errlen, "%s (%s): is not allowed by any allow rule "
			       "(add one, e.g. --allow %s)", e->pattern,
			       e->source ? e->source : "intercept", e->pattern);
			return -EINVAL;
		}
	}
	return 0;
}

const struct reqrule_host *policy_intercept_for(const struct policy *p, const char *host)
{
	char name[NAME_MAX_LEN + 1];
	const struct policy_intercept *best = NULL;
	size_t i, hlen, blen = 0;

	if (!p || !host || !p->n_intercept || !name_lower(host, name))
		return NULL;
	hlen = strlen(name);
	for (i = 0; i < p->n_intercept; i++) {
		const struct policy_intercept *e = &p->intercept[i];
		size_t dlen = strlen(e->domain);

		if (!e->wildcard) {
			if (!strcmp(name, e->domain))
				return &e->rules;
			continue;
		}
		if (hlen > dlen + 1 && name[hlen - dlen - 1] == '.' &&
		    !strcmp(name + hlen - dlen, e->domain) && dlen > blen) {
			best = e;
			blen = dlen;
		}
	}
	return best ? &best->rules : NULL;
}

/* --- gateways ----------------------------------------------------------- */

static void gateway_clear(struct policy_gateway *g)
{
	free(g->listen);
	free(g->upstream);
	free(g->host);
	free(g->source);
	reqrule_host_free(&g->rules);
	memset(g, 0, sizeof(*g));
}

static int gw_port(const char *s, size_t len, uint16_t *port)
{
	unsigned v;

	if (parse_uint(s, len, 65535, &v) || v == 0)
		return -EINVAL;
	*port = (uint16_t)v;
	return 0;
}

/*
 * "127.0.0.1:8080", "[::1]:8080" or "localhost:8080" into g->addrs/port/
 * listen. Only loopback: the gateway is reached through the kernel
 * redirect, and an address that leaves the host would be a real
 * destination the agent could otherwise not reach.
 */
static int gateway_listen(const char *text, struct policy_gateway *g, char *err, size_t errlen)
{
	char host[64], canon[80], abuf[INET6_ADDRSTRLEN];
	const char *colon, *h = text;
	size_t hlen;

	if (text[0] == '[') {
		const char *rb = strchr(text, ']');

		if (!rb || rb[1] != ':') {
			egr_seterr(err, errlen, "expected [ADDRESS]:PORT, e.g. [::1]:8080");
			return -EINVAL;
		}
		h = text + 1;
		hlen = (size_t)(rb - h);
		colon = rb + 1;
	} else {
		colon = strrchr(text, ':');
		if (!colon || strchr(text, ':') != colon) {
			egr_seterr(err, errlen, "expected ADDRESS:PORT with a loopback address, "
			       "e.g. 127.0.0.1:8080 (IPv6 in brackets: [::1]:8080)");
			return -EINVAL;
		}
		hlen = (size_t)(colon - text);
	}
	if (gw_port(colon + 1, strlen(colon + 1), &g->port)) {
		egr_seterr(err, errlen, "invalid port \"%.16s\" (1-65535)", colon + 1);
		return -EINVAL;
	}
	if (g->port == 53) {
		egr_seterr(err, errlen, "port 53 is DNS, which always goes to egressd's DNS proxy");
		return -EINVAL;
	}
	if (!hlen || hlen >= sizeof(host)) {
		egr_seterr(err, errlen, "expected ADDRESS:PORT with a loopback address");
		return -EINVAL;
	}
	memcpy(host, h, hlen);
	host[hlen] = '\0';
	if (text[0] != '[' && !strcasecmp(host, "localhost")) {
		addr_from_v4(&g->addrs[0], htonl(INADDR_LOOPBACK));
		addr_from_v6(&g->addrs[1], in6addr_loopback.s6_addr);
		g->n_addrs = 2;
		snprintf(canon, sizeof(canon), "localhost:%u", g->port);
	} else {
		if (addr_parse(host, &g->addrs[0]) || (text[0] == '[') == addr_is_v4(&g->addrs[0])) {
			egr_seterr(err, errlen, "\"%.63s\" is not an IP address (or \"localhost\")",
			       host);
			return -EINVAL;
		}
		if (addr_classify(&g->addrs[0]) != ADDR_LOOPBACK) {
			egr_seterr(err, errlen, "%s is not a loopback address (127.0.0.0/8 or ::1): "
			       "a gateway is an address only the agent's cgroup reaches",
			       host);
			return -EINVAL;
		}
		g->n_addrs = 1;
		addr_to_str(&g->addrs[0], abuf, sizeof(abuf));
		snprintf(canon, sizeof(canon), addr_is_v4(&g->addrs[0]) ? "%s:%u" : "[%s]:%u",
			 abuf, g->port);
	}
	g->listen = strdup(canon);
	if (!g->listen) {
		egr_seterr(err, errlen, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

/* "https://host[:port][/]" into g->host/upstream_port/upstream. */
static int gateway_upstream(const char *text, struct policy_gateway *g, char *err,
			    size_t errlen)
{
	char name[NAME_MAX_LEN + 1], canon[NAME_MAX_LEN + 16];
	const char *s, *end, *colon, *why;
	size_t len;

	if (strncasecmp(text, "https://", 8)) {
		egr_seterr(err, errlen, "expected https://HOST[:PORT]%s",
		       strncasecmp(text, "http://", 7) ? "" :
		       " (the upstream leg is always TLS, verified)");
		return -EINVAL;
	}
	s = text + 8;
	end = s + strcspn(s, "/?#");
	if (*end && strcmp(end, "/")) {
		egr_seterr(err, errlen, "no path: write the origin only (https://HOST[:PORT]); "
		       "the agent's request paths are kept as they are");
		return -EINVAL;
	}
	if (memchr(s, '@', (size_t)(end - s)) || *s == '[') {
		egr_seterr(err, errlen, "expected https://HOST[:PORT] with a host name");
		return -EINVAL;
	}
	colon = memchr(s, ':', (size_t)(end - s));
	len = (size_t)((colon ? colon : end) - s);
	g->upstream_port = 443;
	if (colon && gw_port(colon + 1, (size_t)(end - colon - 1), &g->upstream_port)) {
		egr_seterr(err, errlen, "invalid port (1-65535)");
		return -EINVAL;
	}
	if (all_digits_dots(s, len)) {
		egr_seterr(err, errlen, "an IP address cannot be an upstream (its certificate "
		       "is verified for a name); name the host");
		return -EINVAL;
	}
	why = name_normalise(s, len, name);
	if (why) {
		egr_seterr(err, errlen, "invalid host name%s%s%s", *why ? " (" : "", why,
		       *why ? ")" : "");
		return -EINVAL;
	}
	if (g->upstream_port == 443)
		snprintf(canon, sizeof(canon), "https://%s", name);
	else
		snprintf(canon, sizeof(canon), "https://%s:%u", name, g->upstream_port);
	g->host = strdup(name);
	g->upstream = strdup(canon);
	if (!g->host || !g->upstream) {
		egr_seterr(err, errlen, "out of memory");
		return -ENOMEM;
	}
	if (reqrule_host_init(&g->rules, name)) {
		egr_seterr(err, errlen, "invalid host name");
		return -EINVAL;
	}
	return 0;
}

/* A gateway of p that answers on one of g's addresses and its port. */
static const struct policy_gateway *gateway_overlap(const struct policy *p,
						    const struct policy_gateway *g)
{
	for (size_t i = 0; g->n_addrs && i < g->n_addrs; i++) {
		const struct policy_gateway *o = policy_gateway_for(p, &g->addrs[i], g->port);

		if (o)
			return o;
	}
	return NULL;
}

static int gateway_append(struct policy *p, struct policy_gateway *g)
{
	struct policy_gateway *v;

	v = realloc(p->gateways, (p->n_gateways + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	p->gateways = v;
	p->gateways[p->n_gateways++] = *g;
	memset(g, 0, sizeof(*g));
	return 0;
}

int policy_add_gateway(struct policy *p, const char *listen, const char *upstream,
		       const char *source, struct reqrule_host **out, char *err, size_t errlen)
{
	struct policy_gateway g = { 0 };
	const struct policy_gateway *old;
	char e[256];
	int ret;

	if (!p || !listen || !upstream) {
		egr_seterr(err, errlen, "empty gateway");
		return -EINVAL;
	}
	ret = gateway_listen(listen, &g, e, sizeof(e));
	if (ret) {
		egr_seterr(err, errlen, "listen %s", e);
		goto fail;
	}
	ret = gateway_upstream(upstream, &g, e, sizeof(e));
	if (ret) {
		egr_seterr(err, errlen, "upstream %s", e);
		goto fail;
	}
	old = gateway_overlap(p, &g);
	if (old) {
		egr_seterr(err, errlen, "%s is already a gateway (to %s, %s)", g.listen,
		       old->upstream, old->source ? old->source : "policy");
		ret = -EINVAL;
		goto fail;
	}
	if (source && !(g.source = strdup(source)))
		goto nomem;
	if (add_allow_all(&g.rules) || gateway_append(p, &g))
		goto nomem;
	if (out)
		*out = &p->gateways[p->n_gateways - 1].rules;
	return 0;
nomem:
	egr_seterr(err, errlen, "out of memory");
	ret = -ENOMEM;
fail:
	gateway_clear(&g);
	return ret;
}

const struct policy_gateway *policy_gateway_for(const struct policy *p,
						 const struct egr_addr *a, uint16_t port)
{
	for (size_t i = 0; p && a && i < p->n_gateways; i++) {
		const struct policy_gateway *g = &p->gateways[i];

		if (g->port != port)
			continue;
		for (size_t j = 0; j < g->n_addrs; j++)
			if (!memcmp(g->addrs[j].b, a->b, sizeof(a->b)))
				return g;
	}
	return NULL;
}

static bool gateway_allowed_by(const struct policy *p, const struct policy_gateway *g)
{
	struct policy_decision d;

	if (!p)
		return false;
	policy_decide_name(p, g->host, g->upstream_port, &d);
	return d.verdict == EGR_VERDICT_ALLOW;
}

int policy_check_gateways(const struct policy *p, char *err, size_t errlen)
{
	for (size_t i = 0; p && i < p->n_gateways; i++) {
		const struct policy_gateway *g = &p->gateways[i];

		if (!gateway_allowed_by(p, g)) {
			egr_seterr(err, errlen, "%s (%s): upstream %s:%u is not allowed by any "
			       "allow rule (add one, e.g. --allow %s%s%.0u)", g->listen,
			       g->source ? g->source : "gateway", g->host, g->upstream_port,
			       g->host, g->upstream_port == 443 ? "" : ":",
			       g->upstream_port == 443 ? 0 : g->upstream_port);
			return -EINVAL;
		}
	}
	return 0;
}

/* --- JSON files --------------------------------------------------------- */

/* Errors are placed with the position tree of jpos.h, built once per file. */

/*
 * Nested fields: one step of a path through the document, a key of an
 * object or an index into an array. The text form ("intercept[0].host")
 * names the field in messages; the steps find its line.
 */
#define FPATH_MAX 6

struct fpath {
	struct {
		const char *key; /* NULL: idx */
		size_t idx;
	} c[FPATH_MAX];
	size_t n;
};

static struct fpath fp_key(struct fpath f, const char *key)
{
	if (f.n < FPATH_MAX) {
		f.c[f.n].key = key;
		f.c[f.n].idx = 0;
	}
	f.n++;
	return f;
}

static struct fpath fp_idx(struct fpath f, size_t idx)
{
	if (f.n < FPATH_MAX) {
		f.c[f.n].key = NULL;
		f.c[f.n].idx = idx;
	}
	f.n++;
	return f;
}

static const char *fp_text(const struct fpath *f, char *buf, size_t len)
{
	size_t i, o = 0;

	buf[0] = '\0';
	for (i = 0; i < f->n && i < FPATH_MAX && o < len; i++) {
		int w;

		if (f->c[i].key)
			w = snprintf(buf + o, len - o, "%s%s", i ? "." : "", f->c[i].key);
		else
			w = snprintf(buf + o, len - o, "[%zu]", f->c[i].idx);
		if (w < 0)
			break;
		o += (size_t)w;
	}
	return buf;
}

/*
 * Line of the value at f (of its key, with want_key and a key last); the
 * line of the closest enclosing value if the path goes beyond the document.
 */
static int locate_path(const struct jpos *root, const struct fpath *f, bool want_key)
{
	const struct jpos *j = root, *next;
	size_t k;

	for (k = 0; k < f->n && k < FPATH_MAX; k++) {
		next = f->c[k].key ? jpos_key(j, f->c[k].key) : jpos_idx(j, f->c[k].idx);
		if (!next)
			return j->line;
		j = next;
	}
	return want_key ? j->key_line : j->line;
}

/* Untrusted text for a one-line message, as the inside of a JSON string
 * (the messages put it in quotes): escapes as in the file's own syntax,
 * the same as dconfig's (jpos_quote), long text cut with "...". */
static const char *esc(const char *s, char *buf, size_t len)
{
	size_t n;

	jpos_quote(s, buf, len);
	n = strlen(buf);
	if (n && buf[0] == '"')
		memmove(buf, buf + 1, n--); /* with the NUL */
	if (n && buf[n - 1] == '"')
		buf[n - 1] = '\0';
	return buf;
}

static const char *const known_keys[] = { "name", "mode", "inbound", "allow", "deny",
					   "intercept", "upstream_ca", "gateways",
					   "deny_countries" };

static bool policy_name_valid(const char *s)
{
	size_t i, len = strlen(s);

	if (!len || len > POLICY_MAX_NAME_LEN)
		return false;
	for (i = 0; i < len; i++)
		if (!(isalnum((unsigned char)s[i]) || strchr("._-", s[i])))
			return false;
	return true;
}

struct load_ctx {
	const char *file;
	const struct jpos *pos;
	char *err;
	size_t errlen;
};

/* Line of a top-level key. */
static int key_line(const struct load_ctx *c, const char *key)
{
	const struct jpos *k = jpos_key(c->pos, key);

	return k ? k->key_line : 1;
}

static int load_rule_object(const struct load_ctx *c, struct policy *tmp, const char *key,
			    size_t idx, json_t *o);

/* A top-level field that is one of two strings (mode, inbound): *second
 * says which; -EINVAL with FILE:LINE: FIELD: reason otherwise. */
static int load_choice(const struct load_ctx *c, const char *key, const json_t *v,
		       const char *first, const char *second, bool *is_second)
{
	const char *s = json_string_value(v);
	char e[256];

	if (!s) {
		egr_seterr(c->err, c->errlen, "%s:%d: %s: expected a string, got %s", c->file,
			   key_line(c, key), key, jpos_json_type(v));
		return -EINVAL;
	}
	if (strcmp(s, first) && strcmp(s, second)) {
		egr_seterr(c->err, c->errlen, "%s:%d: %s: \"%s\": must be \"%s\" or \"%s\"",
			   c->file, key_line(c, key), key, esc(s, e, sizeof(e)), first, second);
		return -EINVAL;
	}
	*is_second = !strcmp(s, second);
	return 0;
}

static int load_rules(const struct load_ctx *c, struct policy *tmp, bool deny,
		      const char *key, json_t *arr)
{
	char source[512], rerr[256], e[256];
	const struct jpos *aj = jpos_key(c->pos, key);
	int line = jpos_line(aj, 1), ret = 0;
	size_t i, n;
	json_t *v;

	if (!json_is_array(arr)) {
		egr_seterr(c->err, c->errlen, "%s:%d: %s: expected an array of rule strings, got %s",
		       c->file, line, key, jpos_json_type(arr));
		return -EINVAL;
	}
	n = json_array_size(arr);
	if (n > POLICY_MAX_RULES) {
		egr_seterr(c->err, c->errlen, "%s:%d: %s: too many rules (at most %d)",
		       c->file, line, key, POLICY_MAX_RULES);
		return -E2BIG;
	}
	json_array_foreach(arr, i, v) {
		int el = jpos_line(jpos_idx(aj, i), line);

		if (!deny && json_is_object(v)) {
			ret = load_rule_object(c, tmp, key, i, v);
			if (ret)
				break;
			continue;
		}
		if (!json_is_string(v)) {
			egr_seterr(c->err, c->errlen, "%s:%d: %s[%zu]: expected a rule string%s, got %s",
			       c->file, el, key, i,
			       deny ? (json_is_object(v) ? " (an \"asn\" list is for allow rules only)"
							 : "")
				    : " or {\"rule\": ..., \"asn\": [...]}",
			       jpos_json_type(v));
			ret = -EINVAL;
			break;
		}
		snprintf(source, sizeof(source), "%s:%d", c->file, el);
		ret = policy_add_rule(tmp, deny, json_string_value(v), source,
				      rerr, sizeof(rerr));
		if (ret) {
			egr_seterr(c->err, c->errlen, "%s:%d: %s[%zu]: \"%s\": %s", c->file,
			       el, key, i, esc(json_string_value(v), e, sizeof(e)),
			       rerr);
			break;
		}
	}
	return ret;
}

/* --- interception in files ---------------------------------------------- */

#define IC_JOIN_MAX (REQRULE_MAX_GLOBS * (REQRULE_GLOB_MAX + 1))

static const char *const intercept_keys[] = { "host", "rules", "max_body", "credentials" };
static const char *const reqrule_keys[] = { "name", "action", "methods", "paths", "max_body" };
static const char *const cred_keys[] = { "name", "header", "value", "path_prefix" };

static int ferr(const struct load_ctx *c, const struct fpath *f, bool at_key,
		const char *fmt, ...) __attribute__((format(printf, 4, 5)));

/* "FILE:LINE: FIELD: reason"; returns -EINVAL. */
static int ferr(const struct load_ctx *c, const struct fpath *f, bool at_key,
		const char *fmt, ...)
{
	char field[256], msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	egr_seterr(c->err, c->errlen, "%s:%d: %s: %s", c->file,
	       locate_path(c->pos, f, at_key), fp_text(f, field, sizeof(field)), msg);
	return -EINVAL;
}

/* An unknown key in an object at f: suggest the closest known one. */
static int unknown_key(const struct load_ctx *c, struct fpath f, const char *key,
		       const char *const *known, size_t n)
{
	const char *best = jpos_suggest(key, known, n);
	char e[256], list[256] = "", field[256];
	size_t i, o = 0;
	struct fpath k = fp_key(f, key);
	int line = locate_path(c->pos, &k, true);

	for (i = 0; i < n; i++)
		o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s", i ? ", " : "", known[i]);
	fp_text(&f, field, sizeof(field));
	if (best)
		egr_seterr(c->err, c->errlen, "%s:%d: %s.%s: unknown field (did you mean \"%s\"?)",
		       c->file, line, field, esc(key, e, sizeof(e)), best);
	else
		egr_seterr(c->err, c->errlen, "%s:%d: %s.%s: unknown field (expected %s)",
		       c->file, line, field, esc(key, e, sizeof(e)), list);
	return -EINVAL;
}

/* A size: a number of bytes, or "64k", "10M", "1G", "1MiB", "none". */
static int ic_size(const struct load_ctx *c, const struct fpath *f, json_t *v,
		   char *out, size_t outlen)
{
	char e[256];
	uint64_t n;

	if (json_is_integer(v)) {
		if (json_integer_value(v) < 0)
			return ferr(c, f, false, "must not be negative");
		snprintf(out, outlen, "%lld", (long long)json_integer_value(v));
		return 0;
	}
	if (!json_is_string(v))
		return ferr(c, f, false, "expected a size (bytes, or \"64k\", \"1MiB\"), got %s",
			    jpos_json_type(v));
	snprintf(out, outlen, "%s", json_string_value(v));
	/* "1MiB" is what people write; reqrule_parse_size takes "1M" */
	{
		size_t l = strlen(out);

		if (l > 3 && !strcmp(out + l - 2, "iB") && strchr("kKmMgG", out[l - 3]))
			out[l - 2] = '\0';
	}
	if (reqrule_parse_size(out, &n))
		return ferr(c, f, false, "\"%s\": not a size (bytes, or 64k, 10M, 1G, 1MiB, none)",
			    esc(json_string_value(v), e, sizeof(e)));
	return 0;
}

/*
 * A list of words: an array of strings or one string (separated by
 * commas/spaces), joined with sep into out. check() validates one word
 * and returns the reason it is wrong, or NULL.
 */
static int ic_words(const struct load_ctx *c, const struct fpath *f, json_t *v,
		    const char *what, const char *(*check)(const char *w),
		    char *out, size_t outlen)
{
	char e[256];
	size_t i, o = 0;
	json_t *w;

	out[0] = '\0';
	if (json_is_string(v)) {
		json_t *a = json_array(), *one;
		const char *s = json_string_value(v);
		int ret;

		if (!a)
			return -ENOMEM;
		while (*s) {
			const char *end;

			s += strspn(s, " ,");
			if (!*s)
				break;
			end = s + strcspn(s, " ,");
			one = json_stringn(s, (size_t)(end - s));
			if (!one || json_array_append_new(a, one)) {
				json_decref(a);
				return -ENOMEM;
			}
			s = end;
		}
		/* errors then name the field, not an index the user did not write */
		ret = json_array_size(a) ? 0 : ferr(c, f, false, "no %s given", what);
		for (i = 0; !ret && i < json_array_size(a); i++) {
			const char *why = check(json_string_value(json_array_get(a, i)));

			if (why)
				ret = ferr(c, f, false, "\"%s\": %s",
					   esc(json_string_value(json_array_get(a, i)), e, sizeof(e)),
					   why);
		}
		for (i = 0; !ret && i < json_array_size(a); i++) {
			int w2 = snprintf(out + o, outlen - o, "%s%s", i ? "," : "",
					  json_string_value(json_array_get(a, i)));

			if (w2 < 0 || (size_t)w2 >= outlen - o)
				ret = ferr(c, f, false, "too many %s", what);
			else
				o += (size_t)w2;
		}
		json_decref(a);
		return ret;
	}
	if (!json_is_array(v))
		return ferr(c, f, false, "expected an array of %s, got %s", what, jpos_json_type(v));
	if (!json_array_size(v))
		return ferr(c, f, false, "no %s given", what);
	json_array_foreach(v, i, w) {
		struct fpath fi = fp_idx(*f, i);
		const char *s = json_string_value(w), *why;
		int n;

		if (!s)
			return ferr(c, &fi, false, "expected a string, got %s", jpos_json_type(w));
		if (!*s || strpbrk(s, " ,"))
			return ferr(c, &fi, false, "\"%s\": one per element, without spaces or commas",
				    esc(s, e, sizeof(e)));
		why = check(s);
		if (why)
			return ferr(c, &fi, false, "\"%s\": %s", esc(s, e, sizeof(e)), why);
		n = snprintf(out + o, outlen - o, "%s%s", i ? "," : "", s);
		if (n < 0 || (size_t)n >= outlen - o)
			return ferr(c, &fi, false, "too many %s", what);
		o += (size_t)n;
	}
	return 0;
}

static const char *check_method(const char *w)
{
	uint64_t m;

	return reqrule_parse_methods(w, &m) ?
	       "not an HTTP method (uppercase, e.g. GET, POST; \"*\" for any)" : NULL;
}

static const char *check_glob(const char *w)
{
	if (!reqrule_glob_valid(w))
		return NULL;
	if (w[0] != '/')
		return "a path glob starts with '/' (e.g. /repos/acme/**)";
	return "invalid path glob (no '?', '#', '%', '\\', spaces, empty, \".\" or \"..\" "
	       "segments; \"**\" only as a whole segment)";
}

static int ic_string(const struct load_ctx *c, const struct fpath *f, json_t *v,
		     const char **out)
{
	*out = json_string_value(v);
	if (!*out)
		return ferr(c, f, false, "expected a string, got %s", jpos_json_type(v));
	return 0;
}

static int ic_rule(const struct load_ctx *c, struct fpath f, json_t *o, size_t idx,
		   const char *host_max_body, struct reqrule_host *h)
{
	char name[REQRULE_NAME_MAX], methods[1024] = "*", paths[IC_JOIN_MAX] = "/**";
	char maxb[64] = "", e[256];
	const char *action = "allow", *s, *key;
	bool has_max = false;
	struct reqrule r;
	json_t *v;
	int ret;

	if (!json_is_object(o))
		return ferr(c, &f, false, "expected an object, got %s", jpos_json_type(o));
	snprintf(name, sizeof(name), "rules[%zu]", idx);
	json_object_foreach(o, key, v) {
		struct fpath k = fp_key(f, key);

		if (!strcmp(key, "name")) {
			ret = ic_string(c, &k, v, &s);
			if (ret)
				return ret;
			if (!*s || strlen(s) >= REQRULE_NAME_MAX || strpbrk(s, "\"\\") ||
			    strspn(s, " ") == strlen(s))
				return ferr(c, &k, false, "\"%s\": 1-%d characters, no quotes",
					    esc(s, e, sizeof(e)), REQRULE_NAME_MAX - 1);
			for (const char *t = s; *t; t++)
				if ((unsigned char)*t < 0x20 || *t == 0x7f)
					return ferr(c, &k, false, "\"%s\": control characters",
						    esc(s, e, sizeof(e)));
			snprintf(name, sizeof(name), "%s", s);
		} else if (!strcmp(key, "action")) {
			ret = ic_string(c, &k, v, &action);
			if (ret)
				return ret;
			if (strcmp(action, "allow") && strcmp(action, "deny"))
				return ferr(c, &k, false, "\"%s\": must be \"allow\" or \"deny\"",
					    esc(action, e, sizeof(e)));
		} else if (!strcmp(key, "methods")) {
			ret = ic_words(c, &k, v, "methods", check_method, methods, sizeof(methods));
			if (ret)
				return ret;
		} else if (!strcmp(key, "paths")) {
			ret = ic_words(c, &k, v, "path globs", check_glob, paths, sizeof(paths));
			if (ret)
				return ret;
		} else if (!strcmp(key, "max_body")) {
			ret = ic_size(c, &k, v, maxb, sizeof(maxb));
			if (ret)
				return ret;
			has_max = true;
		} else {
			return unknown_key(c, f, key, reqrule_keys,
					   sizeof(reqrule_keys) / sizeof(reqrule_keys[0]));
		}
	}
	ret = reqrule_init(&r, name, action, methods, paths,
			   has_max ? maxb : host_max_body);
	if (ret == -E2BIG)
		return ferr(c, &f, false, "at most %d path globs of under %d characters",
			    REQRULE_MAX_GLOBS, REQRULE_GLOB_MAX);
	if (ret)
		return ferr(c, &f, false, "invalid rule (%s)", strerror(-ret));
	return reqrule_host_add_rule(h, &r) ? -ENOMEM : 0;
}

static const char *check_header(const char *s)
{
	if (!*s)
		return "empty header name";
	for (; *s; s++)
		if (!(isalnum((unsigned char)*s) || strchr("!#$%&'*+-.^_`|~", *s)))
			return "not an HTTP header name";
	return NULL;
}

static int ic_cred(const struct load_ctx *c, struct fpath f, json_t *o,
		   struct reqrule_host *h)
{
	const char *name = NULL, *header = NULL, *value = NULL, *prefix = "", *key, *why;
	char e[256];
	json_t *v;
	int ret;

	if (!json_is_object(o))
		return ferr(c, &f, false, "expected an object, got %s", jpos_json_type(o));
	json_object_foreach(o, key, v) {
		struct fpath k = fp_key(f, key);

		if (!strcmp(key, "name")) {
			ret = ic_string(c, &k, v, &name);
			if (ret)
				return ret;
			if (!*name || strlen(name) >= REQRULE_NAME_MAX || strpbrk(name, "\"\\"))
				return ferr(c, &k, false, "\"%s\": 1-%d characters, no quotes",
					    esc(name, e, sizeof(e)), REQRULE_NAME_MAX - 1);
		} else if (!strcmp(key, "header")) {
			ret = ic_string(c, &k, v, &header);
			if (ret)
				return ret;
			why = check_header(header);
			if (why || strlen(header) >= REQRULE_HEADER_MAX)
				return ferr(c, &k, false, "\"%s\": %s", esc(header, e, sizeof(e)),
					    why ? why : "too long");
			if (reqrule_header_reserved(header))
				return ferr(c, &k, false, "\"%s\": a framing or hop-by-hop header "
					    "cannot be a credential", esc(header, e, sizeof(e)));
		} else if (!strcmp(key, "value")) {
			value = json_string_value(v);
			if (!value)
				return ferr(c, &k, false, "expected \"env:NAME\" or \"file:/path\", "
					    "got %s", jpos_json_type(v));
			/* Never echo it: a literal secret here must not reach a log. */
			if (strncmp(value, "env:", 4) && strncmp(value, "file:/", 6))
				return ferr(c, &k, false, "must be \"env:NAME\" (egressd's "
					    "environment) or \"file:/path\"; the secret itself "
					    "never goes into a policy");
			if (strlen(value) >= REQRULE_SOURCE_MAX)
				return ferr(c, &k, false, "longer than %d characters",
					    REQRULE_SOURCE_MAX - 1);
			if (!strncmp(value, "env:", 4) &&
			    (!value[4] || strspn(value + 4, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
						 "abcdefghijklmnopqrstuvwxyz0123456789_") !=
					  strlen(value + 4) || isdigit((unsigned char)value[4])))
				return ferr(c, &k, false, "\"%s\": not a variable name",
					    esc(value, e, sizeof(e)));
		} else if (!strcmp(key, "path_prefix")) {
			ret = ic_string(c, &k, v, &prefix);
			if (ret)
				return ret;
			if ((*prefix && *prefix != '/') || strlen(prefix) >= REQRULE_GLOB_MAX ||
			    strpbrk(prefix, " ?#%\\*"))
				return ferr(c, &k, false, "\"%s\": a path starting with '/' "
					    "(no '*', '?', '#', '%%', spaces)",
					    esc(prefix, e, sizeof(e)));
		} else if (!strcmp(key, "prefix")) {
			return ferr(c, &k, true, "not supported: put the whole header value "
				    "(e.g. \"Bearer TOKEN\") in the variable or file");
		} else {
			return unknown_key(c, f, key, cred_keys,
					   sizeof(cred_keys) / sizeof(cred_keys[0]));
		}
	}
	if (!header)
		return ferr(c, &f, false, "\"header\" is required");
	if (!value)
		return ferr(c, &f, false, "\"value\" is required (\"env:NAME\" or \"file:/path\")");
	for (size_t i = 0; i < h->n_creds; i++)
		if (!strcasecmp(h->creds[i].header, header) &&
		    !strcmp(h->creds[i].path_prefix, prefix))
			return ferr(c, &f, false, "a second credential for header %s on the "
				    "same path_prefix", header);
	ret = reqrule_host_add_cred(h, name ? name : header, header, prefix, value);
	if (ret == -ENOMEM)
		return ret;
	if (ret)
		return ferr(c, &f, false, "invalid credential");
	return 0;
}

/* "rules", "max_body" and "credentials" of an intercept or gateway entry
 * at f into h. No "rules": one rule allowing every request. */
static int load_reqrules(const struct load_ctx *c, struct fpath f, json_t *rules,
			 json_t *creds, const char *maxb, struct reqrule_host *h)
{
	size_t i;
	json_t *x;
	int ret;

	if (!rules) {
		ret = add_allow_all(h);
		if (!ret && maxb)
			ret = reqrule_parse_size(maxb, &h->rules[0].max_body);
		if (ret)
			return ret;
	}
	json_array_foreach(rules, i, x) {
		ret = ic_rule(c, fp_idx(fp_key(f, "rules"), i), x, i, maxb, h);
		if (ret)
			return ret;
	}
	json_array_foreach(creds, i, x) {
		ret = ic_cred(c, fp_idx(fp_key(f, "credentials"), i), x, h);
		if (ret)
			return ret;
	}
	return 0;
}

static int ic_entry(const struct load_ctx *c, const struct policy *p, struct policy *tmp,
		    struct fpath f, json_t *o)
{
	struct policy_intercept e = { 0 };
	char rerr[256], maxb[64] = "", src[512];
	const char *host = NULL, *key;
	json_t *v, *rules = NULL, *creds = NULL;
	struct fpath fh = fp_key(f, "host");
	bool has_max = false;
	int ret;

	if (!json_is_object(o))
		return ferr(c, &f, false, "expected an object with \"host\", got %s",
			    jpos_json_type(o));
	json_object_foreach(o, key, v) {
		struct fpath k = fp_key(f, key);

		if (!strcmp(key, "host")) {
			ret = ic_string(c, &k, v, &host);
			if (ret)
				return ret;
		} else if (!strcmp(key, "rules")) {
			if (!json_is_array(v))
				return ferr(c, &k, false, "expected an array of rules, got %s",
					    jpos_json_type(v));
			rules = v;
		} else if (!strcmp(key, "credentials")) {
			if (!json_is_array(v))
				return ferr(c, &k, false, "expected an array of credentials, "
					    "got %s", jpos_json_type(v));
			creds = v;
		} else if (!strcmp(key, "max_body")) {
			ret = ic_size(c, &k, v, maxb, sizeof(maxb));
			if (ret)
				return ret;
			has_max = true;
		} else {
			return unknown_key(c, f, key, intercept_keys,
					   sizeof(intercept_keys) / sizeof(intercept_keys[0]));
		}
	}
	if (!host)
		return ferr(c, &f, false, "\"host\" is required");
	ret = intercept_pattern(host, &e, rerr, sizeof(rerr));
	if (ret) {
		char q[256];

		intercept_clear(&e);
		return ret == -ENOMEM ? ret : ferr(c, &fh, false, "\"%s\": %s",
						   esc(host, q, sizeof(q)), rerr);
	}
	if (find_intercept(tmp, e.pattern) || find_intercept(p, e.pattern)) {
		ret = ferr(c, &fh, false, "%s is intercepted twice; merge the entries",
			   e.pattern);
		goto fail;
	}
	snprintf(src, sizeof(src), "%s:%d", c->file, locate_path(c->pos, &fh, false));
	e.source = strdup(src);
	if (!e.source) {
		ret = -ENOMEM;
		goto fail;
	}
	ret = load_reqrules(c, f, rules, creds, has_max ? maxb : NULL, &e.rules);
	if (ret)
		goto fail;
	ret = intercept_append(tmp, &e);
	if (ret)
		goto fail;
	return 0;
fail:
	if (ret == -ENOMEM)
		egr_seterr(c->err, c->errlen, "%s: out of memory", c->file);
	intercept_clear(&e);
	return ret;
}

static int load_intercept(const struct load_ctx *c, const struct policy *p,
			  struct policy *tmp, json_t *arr)
{
	struct fpath f = fp_key((struct fpath){ .n = 0 }, "intercept");
	size_t i;
	json_t *v;
	int ret;

	if (!json_is_array(arr))
		return ferr(c, &f, false, "expected an array of hosts to intercept, got %s",
			    jpos_json_type(arr));
	if (json_array_size(arr) > POLICY_MAX_RULES)
		return ferr(c, &f, false, "too many entries (at most %d)", POLICY_MAX_RULES);
	json_array_foreach(arr, i, v) {
		ret = ic_entry(c, p, tmp, fp_idx(f, i), v);
		if (ret)
			return ret;
	}
	return 0;
}

/* After the whole file: each intercepted host must be let through by an
 * allow rule of the file or of what p already had. */
static int check_intercept_allowed(const struct load_ctx *c, const struct policy *p,
				   const struct policy *tmp)
{
	size_t i;

	for (i = 0; i < tmp->n_intercept; i++) {
		const struct policy_intercept *e = &tmp->intercept[i];
		struct fpath f = fp_key(fp_idx(fp_key((struct fpath){ .n = 0 }, "intercept"), i),
					"host");

		if (!intercept_allowed_by(tmp, e) && !intercept_allowed_by(p, e))
			return ferr(c, &f, false, "%s is not allowed by any allow rule",
				    e->pattern);
	}
	return 0;
}

static const char *const gateway_keys[] = { "listen", "upstream", "rules", "max_body",
					    "credentials" };

/* One "gateways" entry: like an intercept entry, with listen + upstream in
 * place of host. */
static int gw_entry(const struct load_ctx *c, const struct policy *p, struct policy *tmp,
		    struct fpath f, json_t *o)
{
	struct policy_gateway g = { 0 };
	const struct policy_gateway *old;
	char rerr[256], maxb[64] = "", src[512], q[256];
	const char *listen = NULL, *upstream = NULL, *key;
	json_t *v, *rules = NULL, *creds = NULL;
	struct fpath fl = fp_key(f, "listen"), fu = fp_key(f, "upstream");
	bool has_max = false;
	int ret;

	if (!json_is_object(o))
		return ferr(c, &f, false, "expected an object with \"listen\" and \"upstream\", "
			    "got %s", jpos_json_type(o));
	json_object_foreach(o, key, v) {
		struct fpath k = fp_key(f, key);

		if (!strcmp(key, "listen")) {
			ret = ic_string(c, &k, v, &listen);
		} else if (!strcmp(key, "upstream")) {
			ret = ic_string(c, &k, v, &upstream);
		} else if (!strcmp(key, "rules")) {
			ret = json_is_array(v) ? 0 : ferr(c, &k, false, "expected an array of "
							  "rules, got %s", jpos_json_type(v));
			rules = v;
		} else if (!strcmp(key, "credentials")) {
			ret = json_is_array(v) ? 0 : ferr(c, &k, false, "expected an array of "
							  "credentials, got %s",
							  jpos_json_type(v));
			creds = v;
		} else if (!strcmp(key, "max_body")) {
			ret = ic_size(c, &k, v, maxb, sizeof(maxb));
			has_max = true;
		} else {
			return unknown_key(c, f, key, gateway_keys,
					   sizeof(gateway_keys) / sizeof(gateway_keys[0]));
		}
		if (ret)
			return ret;
	}
	if (!listen)
		return ferr(c, &f, false, "\"listen\" is required (e.g. \"127.0.0.1:8080\")");
	if (!upstream)
		return ferr(c, &f, false, "\"upstream\" is required (e.g. "
			    "\"https://api.example.com\")");
	ret = gateway_listen(listen, &g, rerr, sizeof(rerr));
	if (ret) {
		if (ret != -ENOMEM)
			ret = ferr(c, &fl, false, "\"%s\": %s", esc(listen, q, sizeof(q)), rerr);
		goto fail;
	}
	ret = gateway_upstream(upstream, &g, rerr, sizeof(rerr));
	if (ret) {
		if (ret != -ENOMEM)
			ret = ferr(c, &fu, false, "\"%s\": %s", esc(upstream, q, sizeof(q)), rerr);
		goto fail;
	}
	old = gateway_overlap(tmp, &g);
	if (!old)
		old = gateway_overlap(p, &g);
	if (old) {
		ret = ferr(c, &fl, false, "%s is already a gateway (to %s, %s)", g.listen,
			   old->upstream, old->source ? old->source : "policy");
		goto fail;
	}
	snprintf(src, sizeof(src), "%s:%d", c->file, locate_path(c->pos, &fl, false));
	g.source = strdup(src);
	if (!g.source) {
		ret = -ENOMEM;
		goto fail;
	}
	ret = load_reqrules(c, f, rules, creds, has_max ? maxb : NULL, &g.rules);
	if (ret)
		goto fail;
	ret = gateway_append(tmp, &g);
	if (ret)
		goto fail;
	return 0;
fail:
	if (ret == -ENOMEM)
		egr_seterr(c->err, c->errlen, "%s: out of memory", c->file);
	gateway_clear(&g);
	return ret;
}

static int load_gateways(const struct load_ctx *c, const struct policy *p,
			 struct policy *tmp, json_t *arr)
{
	struct fpath f = fp_key((struct fpath){ .n = 0 }, "gateways");
	size_t i;
	json_t *v;
	int ret;

	if (!json_is_array(arr))
		return ferr(c, &f, false, "expected an array of gateways, got %s",
			    jpos_json_type(arr));
	if (json_array_size(arr) > EGR_MAX_GATEWAYS / POLICY_GATEWAY_ADDRS)
		return ferr(c, &f, false, "too many entries (at most %d)",
			    EGR_MAX_GATEWAYS / POLICY_GATEWAY_ADDRS);
	json_array_foreach(arr, i, v) {
		ret = gw_entry(c, p, tmp, fp_idx(f, i), v);
		if (ret)
			return ret;
	}
	return 0;
}

/* After the whole file: each gateway's upstream must be let through (host
 * and port) by the file's rules or by what p already had. */
static int check_gateways_allowed(const struct load_ctx *c, const struct policy *p,
				  const struct policy *tmp)
{
	for (size_t i = 0; i < tmp->n_gateways; i++) {
		const struct policy_gateway *g = &tmp->gateways[i];
		struct fpath f = fp_key(fp_idx(fp_key((struct fpath){ .n = 0 }, "gateways"), i),
					"upstream");

		if (!gateway_allowed_by(tmp, g) && !gateway_allowed_by(p, g))
			return ferr(c, &f, false, "%s:%u is not allowed by any allow rule",
				    g->host, g->upstream_port);
	}
	return 0;
}

/* --- GeoIP in files (docs/geoip.md) ------------------------------------- */

#define POLICY_MAX_ASNS 1000
#define POLICY_MAX_COUNTRIES 300

static const char *const rule_obj_keys[] = { "rule", "asn" };

/* An allow rule limited to ASNs: {"rule": "*.cdn.example.com", "asn": [64500]}. */
static int load_rule_object(const struct load_ctx *c, struct policy *tmp, const char *key,
			    size_t idx, json_t *o)
{
	struct fpath f = fp_idx(fp_key((struct fpath){ .n = 0 }, key), idx);
	struct fpath fr = fp_key(f, "rule"), fa = fp_key(f, "asn");
	char source[512], rerr[256], q[256];
	json_t *rule = NULL, *asn = NULL, *v;
	uint32_t *list;
	const char *k;
	size_t i, n;
	int ret;

	json_object_foreach(o, k, v) {
		if (!strcmp(k, "rule"))
			rule = v;
		else if (!strcmp(k, "asn"))
			asn = v;
		else
			return unknown_key(c, f, k, rule_obj_keys,
					   sizeof(rule_obj_keys) / sizeof(rule_obj_keys[0]));
	}
	if (!rule)
		return ferr(c, &f, false, "\"rule\" is required (the rule string)");
	if (!json_is_string(rule))
		return ferr(c, &fr, false, "expected a rule string, got %s", jpos_json_type(rule));
	if (!asn)
		return ferr(c, &f, false, "\"asn\" is required in a rule object "
			    "(without it, write the rule as a plain string)");
	if (!json_is_array(asn))
		return ferr(c, &fa, false, "expected an array of AS numbers, got %s",
			    jpos_json_type(asn));
	n = json_array_size(asn);
	if (!n)
		return ferr(c, &fa, false, "empty list: it would read as \"no restriction\"; "
			    "list AS numbers, or write the rule as a plain string");
	if (n > POLICY_MAX_ASNS)
		return ferr(c, &fa, false, "too many AS numbers (at most %d)", POLICY_MAX_ASNS);
	json_array_foreach(asn, i, v) {
		struct fpath fe = fp_idx(fa, i);
		json_int_t x;

		if (json_is_string(v)) {
			const char *sv = json_string_value(v);

			if ((sv[0] == 'A' || sv[0] == 'a') && (sv[1] == 'S' || sv[1] == 's') &&
			    isdigit((unsigned char)sv[2]))
				return ferr(c, &fe, false, "\"%s\": write the number alone (%s)",
					    esc(sv, q, sizeof(q)), sv + 2);
			return ferr(c, &fe, false, "\"%s\": expected an AS number (1-4294967294)",
				    esc(sv, q, sizeof(q)));
		}
		if (!json_is_integer(v))
			return ferr(c, &fe, false, "expected an AS number (1-4294967294), got %s",
				    jpos_json_type(v));
		x = json_integer_value(v);
		/* 0 means "unknown" to the database reader; 4294967295 is
		 * reserved (RFC 7300): neither can be an upstream's ASN. */
		if (x < 1 || x > 4294967294LL)
			return ferr(c, &fe, false, "%lld: not an AS number (1-4294967294)",
				    (long long)x);
	}
	list = calloc(n, sizeof(*list));
	if (!list) {
		egr_seterr(c->err, c->errlen, "%s: out of memory", c->file);
		return -ENOMEM;
	}
	json_array_foreach(asn, i, v)
		list[i] = (uint32_t)json_integer_value(v);
	snprintf(source, sizeof(source), "%s:%d", c->file,
		 locate_path(c->pos, &fr, false));
	ret = policy_add_rule(tmp, false, json_string_value(rule), source, rerr, sizeof(rerr));
	if (ret) {
		free(list);
		if (ret == -ENOMEM) {
			egr_seterr(c->err, c->errlen, "%s: out of memory", c->file);
			return ret;
		}
		return ferr(c, &fr, false, "\"%s\": %s", esc(json_string_value(rule), q, sizeof(q)),
			    rerr);
	}
	tmp->allow[tmp->n_allow - 1].asn = list;
	tmp->allow[tmp->n_allow - 1].n_asn = n;
	return 0;
}

static bool is_alpha2(const char *s)
{
	return isascii((unsigned char)s[0]) && isalpha((unsigned char)s[0]) &&
	       isascii((unsigned char)s[1]) && isalpha((unsigned char)s[1]) && !s[2];
}

/* "deny_countries": ["KP", "ir"] -> upper case, NULL-terminated. */
static int load_countries(const struct load_ctx *c, struct policy *tmp, json_t *arr)
{
	struct fpath f = fp_key((struct fpath){ .n = 0 }, "deny_countries");
	char source[512], q[256];
	size_t i, n;
	json_t *v;

	if (!json_is_array(arr))
		return ferr(c, &f, false, "expected an array of two-letter country codes "
			    "(ISO 3166-1 alpha-2, e.g. [\"KP\"]), got %s", jpos_json_type(arr));
	n = json_array_size(arr);
	if (n > POLICY_MAX_COUNTRIES)
		return ferr(c, &f, false, "too many entries (at most %d)", POLICY_MAX_COUNTRIES);
	json_array_foreach(arr, i, v) {
		struct fpath fe = fp_idx(f, i);
		const char *sv = json_string_value(v);

		if (!sv)
			return ferr(c, &fe, false, "expected a two-letter country code, got %s",
				    jpos_json_type(v));
		if (!is_alpha2(sv))
			return ferr(c, &fe, false, "\"%s\": not a two-letter country code "
				    "(ISO 3166-1 alpha-2, e.g. \"KP\")", esc(sv, q, sizeof(q)));
		if (!strcasecmp(sv, "UK"))
			return ferr(c, &fe, false, "\"%s\": not an ISO 3166-1 code (the United "
				    "Kingdom is \"GB\")", sv);
	}
	for (i = 0; tmp->deny_countries && tmp->deny_countries[i]; i++)
		free(tmp->deny_countries[i]);
	free(tmp->deny_countries);
	free(tmp->geo_source);
	tmp->n_deny_countries = 0;
	tmp->geo_source = NULL;
	tmp->deny_countries = calloc(n + 1, sizeof(*tmp->deny_countries));
	if (!tmp->deny_countries)
		goto nomem;
	json_array_foreach(arr, i, v) {
		const char *sv = json_string_value(v);
		char *cc = malloc(3);

		if (!cc)
			goto nomem;
		cc[0] = (char)toupper((unsigned char)sv[0]);
		cc[1] = (char)toupper((unsigned char)sv[1]);
		cc[2] = '\0';
		tmp->deny_countries[tmp->n_deny_countries++] = cc;
	}
	snprintf(source, sizeof(source), "%s:%d", c->file, locate_path(c->pos, &f, true));
	tmp->geo_source = strdup(source);
	if (!tmp->geo_source)
		goto nomem;
	return 0;
nomem:
	egr_seterr(c->err, c->errlen, "%s: out of memory", c->file);
	return -ENOMEM;
}

/* Room for tmp's countries in p's list (before anything moves). */
static int reserve_countries(struct policy *p, const struct policy *tmp)
{
	char **v;

	if (!tmp->n_deny_countries)
		return 0;
	v = realloc(p->deny_countries,
		    (p->n_deny_countries + tmp->n_deny_countries + 1) * sizeof(*v));
	if (!v)
		return -ENOMEM;
	v[p->n_deny_countries] = NULL;
	p->deny_countries = v;
	return 0;
}

/* Append tmp's countries to p's; cannot fail after reserve_countries. */
static void move_countries(struct policy *p, struct policy *tmp)
{
	if (!tmp->n_deny_countries)
		return;
	memcpy(p->deny_countries + p->n_deny_countries, tmp->deny_countries,
	       tmp->n_deny_countries * sizeof(*p->deny_countries));
	p->n_deny_countries += tmp->n_deny_countries;
	p->deny_countries[p->n_deny_countries] = NULL;
	free(tmp->deny_countries);
	tmp->deny_countries = NULL;
	tmp->n_deny_countries = 0;
	free(p->geo_source);
	p->geo_source = tmp->geo_source;
	tmp->geo_source = NULL;
}

int policy_load_buffer(struct policy *p, const char *name, const char *buf,
		       size_t len, char *err, size_t errlen)
{
	struct load_ctx c = { name ? name : "<policy>", NULL, err, errlen };
	struct policy *tmp = NULL;
	struct jpos *pos = NULL;
	char *newname = NULL, e[256];
	bool has_mode = false, has_inbound = false, inbound_any = false;
	enum policy_mode mode = POLICY_ENFORCE;
	json_error_t jerr;
	json_t *root, *v;
	const char *key;
	int ret = 0;

	if (len > POLICY_MAX_FILE) {
		egr_seterr(err, errlen, "%s: larger than %d bytes", c.file, POLICY_MAX_FILE);
		return -EFBIG;
	}
	root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		/* jansson quotes the offending token: keep it on one line */
		for (char *t = jerr.text; *t; t++)
			if ((unsigned char)*t < 0x20 || (unsigned char)*t >= 0x7f)
				*t = '?';
		egr_seterr(err, errlen, "%s:%d: syntax error: %s", c.file,
		       jerr.line > 0 ? jerr.line : 1, jerr.text);
		return -EINVAL;
	}
	/* lenient: jansson's verdict stands, the tree only places errors */
	ret = jpos_build(buf, len, true, &pos);
	if (ret) {
		egr_seterr(err, errlen, "%s: out of memory", c.file);
		goto out;
	}
	c.pos = pos;
	if (!json_is_object(root)) {
		egr_seterr(err, errlen, "%s:%d: top level: expected an object, got %s",
		       c.file, pos->line, jpos_json_type(root));
		ret = -EINVAL;
		goto out;
	}
	tmp = policy_new(NULL);
	if (!tmp) {
		ret = -ENOMEM;
		egr_seterr(err, errlen, "%s: out of memory", c.file);
		goto out;
	}
	json_object_foreach(root, key, v) {
		if (!strcmp(key, "name")) {
			const char *s = json_string_value(v);

			if (!s) {
				egr_seterr(err, errlen, "%s:%d: name: expected a string, got %s",
				       c.file, key_line(&c, key), jpos_json_type(v));
				ret = -EINVAL;
				goto out;
			}
			if (!policy_name_valid(s)) {
				egr_seterr(err, errlen,
				       "%s:%d: name: \"%s\": must be 1-%d characters of A-Z a-z 0-9 . _ -",
				       c.file, key_line(&c, key), esc(s, e, sizeof(e)),
				       POLICY_MAX_NAME_LEN);
				ret = -EINVAL;
				goto out;
			}
			free(newname);
			newname = strdup(s);
			if (!newname) {
				ret = -ENOMEM;
				egr_seterr(err, errlen, "%s: out of memory", c.file);
				goto out;
			}
		} else if (!strcmp(key, "mode")) {
			bool audit;

			ret = load_choice(&c, key, v, "enforce", "audit", &audit);
			if (ret)
				goto out;
			mode = audit ? POLICY_AUDIT : POLICY_ENFORCE;
			has_mode = true;
		} else if (!strcmp(key, "inbound")) {
			ret = load_choice(&c, key, v, "local", "any", &inbound_any);
			if (ret)
				goto out;
			has_inbound = true;
		} else if (!strcmp(key, "allow") || !strcmp(key, "deny")) {
			ret = load_rules(&c, tmp, !strcmp(key, "deny"), key, v);
			if (ret)
				goto out;
		} else if (!strcmp(key, "intercept")) {
			ret = load_intercept(&c, p, tmp, v);
			if (ret)
				goto out;
		} else if (!strcmp(key, "gateways")) {
			ret = load_gateways(&c, p, tmp, v);
			if (ret)
				goto out;
		} else if (!strcmp(key, "deny_countries")) {
			ret = load_countries(&c, tmp, v);
			if (ret)
				goto out;
		} else if (!strcmp(key, "upstream_ca")) {
			const char *s = json_string_value(v);

			if (!s || s[0] != '/') {
				egr_seterr(err, errlen, "%s:%d: upstream_ca: expected the absolute path "
				       "of a PEM CA bundle, got %s", c.file, key_line(&c, key),
				       s ? "a relative path" : jpos_json_type(v));
				ret = -EINVAL;
				goto out;
			}
			free(tmp->upstream_ca);
			tmp->upstream_ca = strdup(s);
			if (!tmp->upstream_ca) {
				ret = -ENOMEM;
				egr_seterr(err, errlen, "%s: out of memory", c.file);
				goto out;
			}
		} else {
			const char *best = jpos_suggest(key, known_keys, sizeof(known_keys) /
							sizeof(known_keys[0]));

			if (best)
				egr_seterr(err, errlen,
				       "%s:%d: %s: unknown field (did you mean \"%s\"?)",
				       c.file, key_line(&c, key), esc(key, e, sizeof(e)), best);
			else
				egr_seterr(err, errlen,
				       "%s:%d: %s: unknown field (expected name, mode, allow, deny, "
				       "intercept, upstream_ca, gateways, deny_countries)",
				       c.file, key_line(&c, key), esc(key, e, sizeof(e)));
			ret = -EINVAL;
			goto out;
		}
	}

	ret = check_intercept_allowed(&c, p, tmp);
	if (!ret)
		ret = check_gateways_allowed(&c, p, tmp);
	if (ret)
		goto out;
	if (p->n_allow + p->n_deny + tmp->n_allow + tmp->n_deny > POLICY_MAX_RULES) {
		egr_seterr(err, errlen, "%s: too many rules in all (at most %d)", c.file,
		       POLICY_MAX_RULES);
		ret = -E2BIG;
		goto out;
	}
	/* Commit: allocate everything first, then move; nothing fails after. */
	if (rules_reserve(&p->allow, p->n_allow, p->n_allow + tmp->n_allow) ||
	    rules_reserve(&p->deny, p->n_deny, p->n_deny + tmp->n_deny)) {
		egr_seterr(err, errlen, "%s: out of memory", c.file);
		ret = -ENOMEM;
		goto out;
	}
	if (reserve_countries(p, tmp)) {
		egr_seterr(err, errlen, "%s: out of memory", c.file);
		ret = -ENOMEM;
		goto out;
	}
	if (tmp->n_intercept) {
		struct policy_intercept *iv = realloc(p->intercept, (p->n_intercept +
						      tmp->n_intercept) * sizeof(*iv));

		if (!iv) {
			egr_seterr(err, errlen, "%s: out of memory", c.file);
			ret = -ENOMEM;
			goto out;
		}
		p->intercept = iv;
		memcpy(p->intercept + p->n_intercept, tmp->intercept,
		       tmp->n_intercept * sizeof(*tmp->intercept));
		p->n_intercept += tmp->n_intercept;
		tmp->n_intercept = 0;
	}
	if (tmp->n_gateways) {
		struct policy_gateway *gv = realloc(p->gateways, (p->n_gateways +
						    tmp->n_gateways) * sizeof(*gv));

		if (!gv) {
			egr_seterr(err, errlen, "%s: out of memory", c.file);
			ret = -ENOMEM;
			goto out;
		}
		p->gateways = gv;
		memcpy(p->gateways + p->n_gateways, tmp->gateways,
		       tmp->n_gateways * sizeof(*tmp->gateways));
		p->n_gateways += tmp->n_gateways;
		tmp->n_gateways = 0;
	}
	move_countries(p, tmp);
	if (tmp->upstream_ca) {
		free(p->upstream_ca);
		p->upstream_ca = tmp->upstream_ca;
		tmp->upstream_ca = NULL;
	}
	if (tmp->n_allow)
		memcpy(p->allow + p->n_allow, tmp->allow, tmp->n_allow * sizeof(*tmp->allow));
	if (tmp->n_deny)
		memcpy(p->deny + p->n_deny, tmp->deny, tmp->n_deny * sizeof(*tmp->deny));
	p->n_allow += tmp->n_allow;
	p->n_deny += tmp->n_deny;
	tmp->n_allow = tmp->n_deny = 0;
	if (newname) {
		free(p->name);
		p->name = newname;
		newname = NULL;
	}
	if (has_mode)
		p->mode = mode;
	if (has_inbound)
		p->inbound_any = inbound_any;
out:
	free(newname);
	policy_free(tmp);
	jpos_free(pos);
	json_decref(root);
	return ret;
}

int policy_load_file(struct policy *p, const char *path, char *err, size_t errlen)
{
	struct stat st;
	char *buf = NULL;
	size_t len = 0;
	int fd, ret;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		egr_seterr(err, errlen, "%s: %s", path, strerror(-ret));
		return ret;
	}
	if (fstat(fd, &st)) {
		ret = -errno;
		egr_seterr(err, errlen, "%s: %s", path, strerror(-ret));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		ret = -EINVAL;
		egr_seterr(err, errlen, "%s: not a regular file", path);
		goto out;
	}
	/* One byte more than allowed, to notice files that grew since fstat. */
	buf = malloc(POLICY_MAX_FILE + 1);
	if (!buf) {
		ret = -ENOMEM;
		egr_seterr(err, errlen, "%s: out of memory", path);
		goto out;
	}
	while (len < POLICY_MAX_FILE + 1) {
		ssize_t r = read(fd, buf + len, POLICY_MAX_FILE + 1 - len);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			ret = -errno;
			egr_seterr(err, errlen, "%s: %s", path, strerror(-ret));
			goto out;
		}
		if (!r)
			break;
		len += (size_t)r;
	}
	ret = policy_load_buffer(p, path, buf, len, err, errlen);
out:
	free(buf);
	close(fd);
	return ret;
}

static json_t *rules_json(const struct policy_rule *v, size_t n)
{
	json_t *a = json_array();
	size_t i;

	if (!a)
		return NULL;
	for (i = 0; i < n; i++) {
		json_t *e = json_string(v[i].text);

		if (e && v[i].n_asn) {
			json_t *o = json_object(), *asn = json_array();
			size_t k;

			for (k = 0; asn && k < v[i].n_asn; k++)
				if (json_array_append_new(asn, json_integer(v[i].asn[k]))) {
					json_decref(asn);
					asn = NULL;
				}
			if (!o || !asn || json_object_set_new(o, "rule", e) ||
			    json_object_set_new(o, "asn", asn)) {
				json_decref(o);
				json_decref(a);
				return NULL;
			}
			e = o;
		}
		if (json_array_append_new(a, e)) {
			json_decref(a);
			return NULL;
		}
	}
	return a;
}

static json_t *methods_json(uint64_t mask)
{
	json_t *a = json_array();
	unsigned i;

	if (!a)
		return NULL;
	if (mask == UINT64_MAX) {
		if (json_array_append_new(a, json_string("*")))
			goto fail;
		return a;
	}
	for (i = 0; i < 64; i++) {
		const char *m;

		if (!(mask & (1ULL << i)))
			continue;
		m = http_method_str((enum http_method)i);
		if (!strcmp(m, "<unknown>"))
			continue;
		if (json_array_append_new(a, json_string(m)))
			goto fail;
	}
	return a;
fail:
	json_decref(a);
	return NULL;
}

/* One intercept entry. Credentials as their source ("env:NAME"), which is
 * not secret; the value is never in the policy. */
static json_t *intercept_json(const struct policy_intercept *e)
{
	json_t *o = json_object(), *rules = json_array(), *creds = json_array();
	size_t i, g;

	if (!o || !rules || !creds)
		goto fail;
	for (i = 0; i < e->rules.n_rules; i++) {
		const struct reqrule *r = &e->rules.rules[i];
		json_t *ro = json_object(), *paths = json_array();

		if (!ro || !paths) {
			json_decref(ro);
			json_decref(paths);
			goto fail;
		}
		if (json_array_append_new(rules, ro)) { /* frees ro */
			json_decref(paths);
			goto fail;
		}
		for (g = 0; g < r->n_globs; g++)
			if (json_array_append_new(paths, json_string(r->globs[g]))) {
				json_decref(paths);
				goto fail;
			}
		if (json_object_set_new(ro, "name", json_string(r->name)) ||
		    json_object_set_new(ro, "action", json_string(r->action == REQRULE_DENY ?
								  "deny" : "allow")) ||
		    json_object_set_new(ro, "methods", methods_json(r->methods)) ||
		    json_object_set_new(ro, "paths", paths))
			goto fail;
		if (r->max_body != REQRULE_NO_LIMIT &&
		    json_object_set_new(ro, "max_body", json_integer((json_int_t)r->max_body)))
			goto fail;
	}
	for (i = 0; i < e->rules.n_creds; i++) {
		const struct reqrule_cred *cr = &e->rules.creds[i];
		json_t *co = json_object();

		if (!co || json_array_append_new(creds, co)) /* frees co */
			goto fail;
		if (json_object_set_new(co, "name", json_string(cr->name)) ||
		    json_object_set_new(co, "header", json_string(cr->header)) ||
		    json_object_set_new(co, "value", json_string(cr->source)))
			goto fail;
		if (cr->path_prefix[0] &&
		    json_object_set_new(co, "path_prefix", json_string(cr->path_prefix)))
			goto fail;
	}
	if (json_object_set_new(o, "host", json_string(e->pattern)))
		goto fail;
	if (json_object_set_new(o, "rules", rules)) /* frees rules */
		goto fail_o;
	if (!e->rules.n_creds) {
		json_decref(creds);
		return o;
	}
	if (json_object_set_new(o, "credentials", creds))
		goto fail_o2;
	return o;
fail:
	json_decref(rules);
fail_o:
	json_decref(creds);
fail_o2:
	json_decref(o);
	return NULL;
}

/* A gateway entry: an intercept entry's rules and credentials, with
 * listen and upstream in place of host. */
static json_t *gateway_json(const struct policy_gateway *g)
{
	struct policy_intercept view = { .pattern = g->host, .rules = g->rules };
	json_t *o = intercept_json(&view);

	if (!o)
		return NULL;
	if (json_object_del(o, "host") ||
	    json_object_set_new(o, "listen", json_string(g->listen)) ||
	    json_object_set_new(o, "upstream", json_string(g->upstream))) {
		json_decref(o);
		return NULL;
	}
	return o;
}

int policy_write_json(const struct policy *p, FILE *out)
{
	json_t *o = json_object();
	int ret = -ENOMEM;

	if (!o)
		return -ENOMEM;
	if (json_object_set_new(o, "name", json_string(p->name ? p->name : "unnamed")) ||
	    json_object_set_new(o, "mode", json_string(p->mode == POLICY_AUDIT ?
							"audit" : "enforce")) ||
	    json_object_set_new(o, "allow", rules_json(p->allow, p->n_allow)) ||
	    json_object_set_new(o, "deny", rules_json(p->deny, p->n_deny)) ||
	    (p->inbound_any && json_object_set_new(o, "inbound", json_string("any"))))
		goto out;
	if (p->n_intercept) {
		json_t *a = json_array();
		size_t i;

		if (json_object_set_new(o, "intercept", a))
			goto out;
		for (i = 0; i < p->n_intercept; i++)
			if (json_array_append_new(a, intercept_json(&p->intercept[i])))
				goto out;
	}
	if (p->n_gateways) {
		json_t *a = json_array();
		size_t i;

		if (json_object_set_new(o, "gateways", a))
			goto out;
		for (i = 0; i < p->n_gateways; i++)
			if (json_array_append_new(a, gateway_json(&p->gateways[i])))
				goto out;
	}
	if (p->upstream_ca &&
	    json_object_set_new(o, "upstream_ca", json_string(p->upstream_ca)))
		goto out;
	if (p->n_deny_countries) {
		json_t *a = json_array();
		size_t i;

		if (json_object_set_new(o, "deny_countries", a))
			goto out;
		for (i = 0; i < p->n_deny_countries; i++)
			if (json_array_append_new(a, json_string(p->deny_countries[i])))
				goto out;
	}
	ret = -EIO;
	if (json_dumpf(o, out, JSON_INDENT(2)) || fputc('\n', out) == EOF)
		goto out;
	ret = 0;
out:
	json_decref(o);
	return ret;
}

/* --- matching ----------------------------------------------------------- */

static bool domain_port_match(const struct policy_rule *r, uint16_t port)
{
	if (r->any_port)
		return true;
	if (r->port)
		return r->port == port;
	return port == 443 || port == 80;
}

static bool domain_match(const struct policy_rule *r, const char *host, size_t hlen)
{
	size_t dlen;

	if (r->kind != RULE_DOMAIN)
		return false;
	if (!r->wildcard)
		return !strcmp(host, r->domain);
	dlen = strlen(r->domain);
	/* strict subdomain: at least one label before ".domain" */
	return hlen > dlen + 1 && host[hlen - dlen - 1] == '.' &&
	       !strcmp(host + hlen - dlen, r->domain);
}

static const struct policy_rule *find_name(const struct policy_rule *v, size_t n,
					   const char *host, size_t hlen, uint16_t port)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (domain_match(&v[i], host, hlen) && domain_port_match(&v[i], port))
			return &v[i];
	return NULL;
}

static void decide(struct policy_decision *d, const struct policy_rule *deny,
		   const struct policy_rule *allow)
{
	if (deny) {
		d->verdict = EGR_VERDICT_DENY;
		d->reason = EGR_REASON_RULE_DENY;
		d->rule = deny;
	} else if (allow) {
		d->verdict = EGR_VERDICT_ALLOW;
		d->reason = EGR_REASON_RULE_ALLOW;
		d->rule = allow;
	} else {
		d->verdict = EGR_VERDICT_DENY;
		d->reason = EGR_REASON_NO_MATCH;
		d->rule = NULL;
	}
}

void policy_decide_name(const struct policy *p, const char *host, uint16_t port,
			struct policy_decision *d)
{
	char name[NAME_MAX_LEN + 1];
	const struct policy_rule *deny = NULL, *allow = NULL;
	size_t hlen;

	if (p && host && name_lower(host, name)) {
		hlen = strlen(name);
		deny = find_name(p->deny, p->n_deny, name, hlen, port);
		if (!deny)
			allow = find_name(p->allow, p->n_allow, name, hlen, port);
	}
	decide(d, deny, allow);
}

bool policy_name_resolvable(const struct policy *p, const char *name)
{
	size_t i, nlen;

	if (!p || !name || !*name)
		return false;
	nlen = strlen(name);
	for (i = 0; i < p->n_deny; i++)
		if (p->deny[i].any_port && domain_match(&p->deny[i], name, nlen))
			return false;
	for (i = 0; i < p->n_allow; i++)
		if (domain_match(&p->allow[i], name, nlen))
			return true;
	return false;
}

static const struct policy_rule *find_addr(const struct policy_rule *v, size_t n,
					   const struct egr_addr *a, uint16_t port)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (v[i].kind == RULE_CIDR && (v[i].any_port || v[i].port == port) &&
		    addr_in_prefix(a, &v[i].net, v[i].prefixlen))
			return &v[i];
	return NULL;
}

void policy_decide_addr(const struct policy *p, const struct egr_addr *a,
			uint16_t port, struct policy_decision *d)
{
	const struct policy_rule *deny = NULL, *allow = NULL;

	if (p && a) {
		deny = find_addr(p->deny, p->n_deny, a, port);
		if (!deny)
			allow = find_addr(p->allow, p->n_allow, a, port);
	}
	decide(d, deny, allow);
}

bool policy_names_addr(const struct policy *p, const struct egr_addr *a, uint16_t port)
{
	return p && a && find_addr(p->allow, p->n_allow, a, port);
}

int policy_allowed_ports(const struct policy *p, bool *any_port,
			 uint16_t *ports, size_t max, size_t *n)
{
	uint8_t set[65536 / 8];
	size_t i, count = 0;

	memset(set, 0, sizeof(set));
	*any_port = false;
	*n = 0;
	for (i = 0; i < p->n_allow; i++) {
		const struct policy_rule *r = &p->allow[i];

		if (r->any_port) {
			*any_port = true;
			return 0;
		}
		if (r->port) {
			set[r->port / 8] |= (uint8_t)(1 << (r->port % 8));
		} else {
			set[443 / 8] |= 1 << (443 % 8);
			set[80 / 8] |= 1 << (80 % 8);
		}
	}
	for (i = 1; i < 65536; i++) {
		if (!(set[i / 8] & (1 << (i % 8))))
			continue;
		if (count >= max) {
			*n = count;
			return -E2BIG;
		}
		ports[count++] = (uint16_t)i;
	}
	*n = count;
	return 0;
}

const char *policy_suggest_rule(const char *host, const struct egr_addr *a,
				uint16_t port, char *buf, size_t len)
{
	char name[NAME_MAX_LEN + 1], s[INET6_ADDRSTRLEN];
	struct egr_addr tmp;

	if (!len)
		return buf;
	buf[0] = '\0';
	/* Only names a rule could spell; IP-literal SNI falls back to the
	 * address, which is what an allow rule would have to name. */
	if (host && addr_parse(host, &tmp) &&
	    !name_normalise(host, strlen(host), name)) {
		if (port == 443 || port == 80)
			snprintf(buf, len, "%s", name);
		else
			snprintf(buf, len, "%s:%u", name, port);
		return buf;
	}
	if (!a)
		return buf;
	addr_to_str(a, s, sizeof(s));
	if (!port)
		snprintf(buf, len, "%s", s);
	else if (addr_is_v4(a))
		snprintf(buf, len, "%s:%u", s, port);
	else
		snprintf(buf, len, "[%s]:%u", s, port);
	return buf;
}

/* --- GeoIP -------------------------------------------------------------- */

bool policy_uses_geo(const struct policy *p)
{
	size_t i;

	if (!p)
		return false;
	if (p->n_deny_countries)
		return true;
	for (i = 0; i < p->n_allow; i++)
		if (p->allow[i].n_asn)
			return true;
	return false;
}

int policy_check_geo(const struct policy *p, bool have_country, bool have_asn,
		     const char *how_country, const char *how_asn, char *err, size_t errlen)
{
	size_t i;

	if (p->n_deny_countries && !have_country) {
		egr_seterr(err, errlen, "%s: deny_countries: needs a country database (%s)",
		       p->geo_source ? p->geo_source : p->name, how_country);
		return -EINVAL;
	}
	for (i = 0; i < p->n_allow && !have_asn; i++) {
		if (!p->allow[i].n_asn)
			continue;
		egr_seterr(err, errlen, "%s: asn of \"%s\": needs an ASN database (%s)",
		       p->allow[i].source ? p->allow[i].source : p->name, p->allow[i].text,
		       how_asn);
		return -EINVAL;
	}
	return 0;
}

static bool asn_listed(const struct policy_rule *r, uint32_t asn)
{
	size_t i;

	if (!r->n_asn)
		return true;
	if (!asn)
		return false; /* unknown never satisfies a list: fail closed */
	for (i = 0; i < r->n_asn; i++)
		if (r->asn[i] == asn)
			return true;
	return false;
}

bool policy_asn_ok(const struct policy *p, const struct policy_rule *r, const char *host,
		   const struct egr_addr *a, uint16_t port, uint32_t asn)
{
	size_t i, hlen = host ? strlen(host) : 0;

	if (!r || asn_listed(r, asn))
		return true;
	/* Another allow rule admits the connection as well: order in the
	 * file must not decide whether an address is usable. */
	for (i = 0; p && i < p->n_allow; i++) {
		const struct policy_rule *o = &p->allow[i];

		if (o == r || o->kind != r->kind || !asn_listed(o, asn))
			continue;
		if (o->kind == RULE_DOMAIN && host && domain_match(o, host, hlen) &&
		    domain_port_match(o, port))
			return true;
		if (o->kind == RULE_CIDR && a && addr_in_prefix(a, &o->net, o->prefixlen) &&
		    (o->any_port || o->port == port))
			return true;
	}
	return false;
}
