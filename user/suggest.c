// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * Audit log -> minimal policy (suggest.h). The log is written by the
 * daemon but its names come from agents (SNI, Host, DNS questions), so
 * every field is treated as untrusted: each candidate rule goes through
 * the policy parser before it is printed.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <libpsl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "addr.h"
#include "dconfig.h"
#include "policy.h"
#include "suggest.h"

/* Bound the work on a huge or hostile log: names beyond this are counted
 * as invalid rather than grown without limit. */
#define SUGGEST_MAX_NAMES 100000
#define SUGGEST_NAME_MAX 253

struct suggest_name {
	char *name;     /* lowercase, no trailing dot */
	uint16_t port;  /* 0: the default ports 443 and 80 */
};

struct suggest {
	struct suggest_options opt;
	struct suggest_stats st;
	struct suggest_name *names;
	size_t n_names, cap_names;
	char **addrs;   /* final address rules */
	size_t n_addrs, cap_addrs;
	char **rules;   /* built by suggest_rules */
	size_t n_rules;
	bool built;
};

int suggest_new(struct suggest **out, const struct suggest_options *o)
{
	struct suggest *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	if (o)
		s->opt = *o;
	if (!s->opt.now)
		s->opt.now = time(NULL);
	*out = s;
	return 0;
}

static void rules_free(struct suggest *s)
{
	size_t i;

	for (i = 0; i < s->n_rules; i++)
		free(s->rules[i]);
	free(s->rules);
	s->rules = NULL;
	s->n_rules = 0;
	s->built = false;
}

void suggest_free(struct suggest *s)
{
	size_t i;

	if (!s)
		return;
	rules_free(s);
	for (i = 0; i < s->n_names; i++)
		free(s->names[i].name);
	free(s->names);
	for (i = 0; i < s->n_addrs; i++)
		free(s->addrs[i]);
	free(s->addrs);
	free(s);
}

/* --- one record --------------------------------------------------------- */

static const char *jget_str(json_t *o, const char *key)
{
	json_t *v = json_object_get(o, key);

	return json_is_string(v) ? json_string_value(v) : NULL;
}

/* "2026-11-27T10:00:00.123Z" (audit.c's iso_time) -> seconds. */
static int parse_time(const char *s, time_t *out)
{
	struct tm tm = { 0 };
	const char *end;

	if (!s)
		return -EINVAL;
	end = strptime(s, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!end)
		return -EINVAL;
	*out = timegm(&tm);
	return 0;
}

static bool reason_fixable(const char *reason)
{
	static const char *const fixable[] = {
		"no_match", "port", "no_name", "private_addr", "no_policy",
	};
	size_t i;

	for (i = 0; reason && i < sizeof(fixable) / sizeof(fixable[0]); i++)
		if (!strcmp(reason, fixable[i]))
			return true;
	return false;
}

/* Lowercase, drop one trailing dot; false if it cannot be a name. */
static bool name_norm(const char *in, char *out, size_t len)
{
	size_t n = strlen(in), i;

	if (n && in[n - 1] == '.')
		n--;
	if (!n || n > SUGGEST_NAME_MAX || n >= len)
		return false;
	for (i = 0; i < n; i++)
		out[i] = (char)tolower((unsigned char)in[i]);
	out[n] = '\0';
	return true;
}

/* The rule parser is the judge of what a rule can spell. */
static bool rule_valid(const char *rule)
{
	struct policy *p = policy_new("check");
	char err[256];
	bool ok;

	if (!p)
		return false;
	ok = policy_add_rule(p, false, rule, "suggest", err, sizeof(err)) == 0;
	policy_free(p);
	return ok;
}

static int add_name(struct suggest *s, const char *host, uint16_t port)
{
	char name[SUGGEST_NAME_MAX + 2], rule[SUGGEST_NAME_MAX + 16];
	struct suggest_name *n;
	struct egr_addr a;
	size_t i;

	if (port == 443 || port == 80)
		port = 0;
	if (!name_norm(host, name, sizeof(name)))
		return -EINVAL;
	if (!addr_parse(name, &a))
		return -EAFNOSUPPORT; /* an IP literal as SNI: not a name rule */
	for (i = 0; i < s->n_names; i++)
		if (s->names[i].port == port && !strcmp(s->names[i].name, name))
			return 0;
	if (port)
		snprintf(rule, sizeof(rule), "%s:%u", name, port);
	else
		snprintf(rule, sizeof(rule), "%s", name);
	if (!rule_valid(rule) || s->n_names >= SUGGEST_MAX_NAMES)
		return -EINVAL;
	if (s->n_names == s->cap_names) {
		size_t cap = s->cap_names ? s->cap_names * 2 : 32;

		n = realloc(s->names, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		s->names = n;
		s->cap_names = cap;
	}
	n = &s->names[s->n_names];
	n->name = strdup(name);
	if (!n->name)
		return -ENOMEM;
	n->port = port;
	s->n_names++;
	return 0;
}

static int add_addr(struct suggest *s, const char *text, uint16_t port)
{
	char str[INET6_ADDRSTRLEN], rule[INET6_ADDRSTRLEN + 16];
	struct egr_addr a;
	size_t i;

	if (!text || addr_parse(text, &a) || !port)
		return -EINVAL;
	addr_to_str(&a, str, sizeof(str));
	if (addr_is_v4(&a))
		snprintf(rule, sizeof(rule), "%s:%u", str, port);
	else
		snprintf(rule, sizeof(rule), "[%s]:%u", str, port);
	for (i = 0; i < s->n_addrs; i++)
		if (!strcmp(s->addrs[i], rule))
			return 0;
	if (!rule_valid(rule) || s->n_addrs >= SUGGEST_MAX_NAMES)
		return -EINVAL;
	if (s->n_addrs == s->cap_addrs) {
		size_t cap = s->cap_addrs ? s->cap_addrs * 2 : 16;
		char **n = realloc(s->addrs, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		s->addrs = n;
		s->cap_addrs = cap;
	}
	s->addrs[s->n_addrs] = strdup(rule);
	if (!s->addrs[s->n_addrs])
		return -ENOMEM;
	s->n_addrs++;
	return 0;
}

static int add_record(struct suggest *s, json_t *o)
{
	const char *verdict = jget_str(o, "verdict"), *reason = jget_str(o, "reason");
	const char *origin = jget_str(o, "origin"), *cgroup = jget_str(o, "cgroup");
	const char *name = jget_str(o, "sni");
	json_t *jport = json_object_get(o, "dst_port");
	json_int_t port = json_is_integer(jport) ? json_integer_value(jport) : 0;
	bool dns = origin && !strcmp(origin, "dns");
	int err;

	if (!verdict) {
		s->st.malformed++;
		return 0;
	}
	if (strcmp(verdict, "deny") && strcmp(verdict, "audit")) {
		s->st.not_denied++;
		return 0;
	}
	if (s->opt.since) {
		time_t t;

		if (parse_time(jget_str(o, "time"), &t)) {
			s->st.malformed++;
			return 0;
		}
		if (t < s->opt.now - s->opt.since) {
			s->st.filtered++;
			return 0;
		}
	}
	if (s->opt.cgroup_glob &&
	    (!cgroup || !dconfig_glob_match(s->opt.cgroup_glob, cgroup))) {
		s->st.filtered++;
		return 0;
	}
	if (!reason_fixable(reason)) {
		s->st.unfixable++;
		return 0;
	}
	if (port < 0 || port > 65535)
		port = 0;
	if (!name || !*name)
		name = jget_str(o, "host");
	if (name && !*name)
		name = NULL;
	if (dns) {
		/* A refused lookup: the name, on the default ports (the
		 * resolver's port 53 is not what the agent wanted). */
		err = name ? add_name(s, name, 0) : -EINVAL;
	} else if (reason && !strcmp(reason, "private_addr")) {
		/* The name resolved to a private address: allowed only when
		 * an address rule names what it resolved to, too. */
		err = name ? add_name(s, name, (uint16_t)port) : -EINVAL;
		if (err == -EAFNOSUPPORT)
			err = 0; /* the address rule below is the whole answer */
		if (!err)
			err = add_addr(s, jget_str(o, "resolved"), (uint16_t)port);
	} else if (name && (!reason || strcmp(reason, "no_name"))) {
		err = add_name(s, name, (uint16_t)port);
		if (err == -EAFNOSUPPORT)
			err = add_addr(s, jget_str(o, "dst"), (uint16_t)port);
	} else {
		err = add_addr(s, jget_str(o, "dst"), (uint16_t)port);
	}
	if (err == -ENOMEM)
		return err;
	if (err)
		s->st.invalid++;
	else
		s->st.used++;
	return 0;
}

int suggest_add_line(struct suggest *s, const char *line, size_t len)
{
	json_error_t jerr;
	json_t *o;
	size_t i;
	int err;

	while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		len--;
	for (i = 0; i < len && isspace((unsigned char)line[i]); i++)
		;
	if (i == len)
		return 0;
	s->st.lines++;
	rules_free(s);
	o = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!json_is_object(o)) {
		json_decref(o);
		s->st.malformed++;
		return 0;
	}
	err = add_record(s, o);
	json_decref(o);
	return err;
}

int suggest_add_file(struct suggest *s, FILE *f)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int err = 0;

	while ((n = getline(&line, &cap, f)) >= 0) {
		err = suggest_add_line(s, line, (size_t)n);
		if (err)
			break;
	}
	if (!err && ferror(f))
		err = -EIO;
	free(line);
	return err;
}

/* --- rules -------------------------------------------------------------- */

/*
 * What subdomains of name may be collapsed into: its registrable domain
 * (one label below a public suffix, from the Public Suffix List, its
 * private section included: github.io, s3.amazonaws.com, co.uk), or NULL
 * if name is that domain itself or the list does not know it. Never a
 * public suffix: "*.github.io" would admit every user's site, and two
 * observed names would have been enough to suggest it. Without the list
 * (libpsl found none), NULL: exact names only.
 */
static const char *base_domain(const char *name)
{
	static const psl_ctx_t *psl;
	static bool tried;
	const char *reg;

	if (!tried) {
		tried = true;
		psl = psl_latest(NULL);
		if (!psl)
			psl = psl_builtin();
	}
	if (!psl)
		return NULL;
	reg = psl_registrable_domain(psl, name);
	return reg && reg != name ? reg : NULL;
}

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int push_rule(char ***v, size_t *n, size_t *cap, const char *text)
{
	if (*n == *cap) {
		size_t c = *cap ? *cap * 2 : 32;
		char **nv = realloc(*v, c * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		*v = nv;
		*cap = c;
	}
	(*v)[*n] = strdup(text);
	if (!(*v)[*n])
		return -ENOMEM;
	(*n)++;
	return 0;
}

static int build_rules(struct suggest *s)
{
	bool *collapse = calloc(s->n_names ? s->n_names : 1, sizeof(bool));
	char rule[SUGGEST_NAME_MAX + 16];
	size_t i, j, cap = 0, out;
	int err = 0;

	if (!collapse)
		return -ENOMEM;
	rules_free(s);
	s->st.collapsed = 0;
	/* Names are unique per port, so two entries with one base and one
	 * port are two different subdomains. Quadratic, but bounded by
	 * SUGGEST_MAX_NAMES and only run once per output. */
	for (i = 0; i < s->n_names; i++) {
		const char *bi = base_domain(s->names[i].name);

		if (!bi || collapse[i])
			continue;
		for (j = i + 1; j < s->n_names; j++) {
			const char *bj = base_domain(s->names[j].name);

			if (bj && s->names[j].port == s->names[i].port && !strcmp(bi, bj)) {
				collapse[i] = true;
				collapse[j] = true;
			}
		}
	}
	for (i = 0; i < s->n_names && !err; i++) {
		const struct suggest_name *n = &s->names[i];

		if (collapse[i]) {
			s->st.collapsed++;
			snprintf(rule, sizeof(rule), "*.%s", base_domain(n->name));
		} else {
			snprintf(rule, sizeof(rule), "%s", n->name);
		}
		if (n->port)
			snprintf(rule + strlen(rule), sizeof(rule) - strlen(rule), ":%u", n->port);
		if (collapse[i] && !rule_valid(rule)) {
			/* e.g. "*.x.test" is fine, but keep the exact names
			 * rather than print a rule the parser refuses */
			s->st.collapsed--;
			snprintf(rule, sizeof(rule), "%s", n->name);
			if (n->port)
				snprintf(rule + strlen(rule), sizeof(rule) - strlen(rule),
					 ":%u", n->port);
		}
		err = push_rule(&s->rules, &s->n_rules, &cap, rule);
	}
	for (i = 0; i < s->n_addrs && !err; i++)
		err = push_rule(&s->rules, &s->n_rules, &cap, s->addrs[i]);
	free(collapse);
	if (err) {
		rules_free(s);
		return err;
	}
	if (s->n_rules > 1) /* qsort(NULL, 0, ...) is undefined (UBSan) */
		qsort(s->rules, s->n_rules, sizeof(*s->rules), str_cmp);
	for (i = 0, out = 0; i < s->n_rules; i++) {
		if (out && !strcmp(s->rules[out - 1], s->rules[i])) {
			free(s->rules[i]);
			continue;
		}
		s->rules[out++] = s->rules[i];
	}
	s->n_rules = out;
	s->built = true;
	return 0;
}

const char *const *suggest_rules(struct suggest *s, size_t *n)
{
	if (!s->built && build_rules(s)) {
		*n = 0;
		return NULL;
	}
	*n = s->n_rules;
	return (const char *const *)s->rules;
}

const struct suggest_stats *suggest_stats(const struct suggest *s)
{
	return &s->st;
}

static json_t *policy_json(struct suggest *s, const char *name)
{
	const char *const *rules;
	json_t *o = json_object(), *a = json_array();
	size_t n, i;

	rules = suggest_rules(s, &n);
	if (!o || !a || (!rules && s->n_names + s->n_addrs))
		goto fail;
	for (i = 0; i < n; i++)
		if (json_array_append_new(a, json_string(rules[i])))
			goto fail;
	if (json_object_set_new(o, "name", json_string(name ? name : "suggested")) ||
	    json_object_set_new(o, "mode", json_string("enforce")))
		goto fail;
	if (json_object_set_new(o, "allow", a)) /* a is taken either way */
		goto fail_o;
	return o;
fail:
	json_decref(a);
fail_o:
	json_decref(o);
	return NULL;
}

char *suggest_dump_json(struct suggest *s, const char *name)
{
	json_t *o = policy_json(s, name);
	char *out;

	if (!o)
		return NULL;
	out = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(o);
	return out;
}

int suggest_write_json(struct suggest *s, const char *name, FILE *out)
{
	char *text = suggest_dump_json(s, name);
	int err = 0;

	if (!text)
		return -ENOMEM;
	if (fputs(text, out) == EOF || fputc('\n', out) == EOF)
		err = -EIO;
	free(text);
	return err;
}

/* --- durations ---------------------------------------------------------- */

int suggest_parse_duration(const char *text, long *secs)
{
	const long max = 10L * 366 * 24 * 3600;
	const char *p = text;
	long total = 0;

	if (!text || !*text)
		return -EINVAL;
	while (*p) {
		long unit, v = 0;

		if (!isdigit((unsigned char)*p))
			return -EINVAL;
		while (isdigit((unsigned char)*p)) {
			v = v * 10 + (*p++ - '0');
			if (v > max)
				return -EINVAL;
		}
		switch (*p++) {
		case 's':
			unit = 1;
			break;
		case 'm':
			unit = 60;
			break;
		case 'h':
			unit = 3600;
			break;
		case 'd':
			unit = 86400;
			break;
		default:
			return -EINVAL; /* a bare number, or an unknown unit */
		}
		if (v > (max - total) / unit)
			return -EINVAL;
		total += v * unit;
	}
	if (total < 1)
		return -EINVAL;
	*secs = total;
	return 0;
}
