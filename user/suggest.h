/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * `egressctl policy suggest`: turn a JSON audit log into the smallest
 * policy that would have allowed what was denied (or, in audit mode, what
 * would have been denied). Offline: reads the log, never the daemon.
 * User documentation: docs/egressctl.md.
 *
 * Records used: verdict "deny" or "audit", with a reason an allow rule can
 * fix (no_match, port, no_name, private_addr, no_policy), inside the time
 * window and matching the cgroup glob. A deny-rule match, loopback, UDP,
 * malformed input and the like cannot be fixed by an allow rule; they are
 * counted, not suggested.
 *
 * Rules: the name (SNI, else Host; the query name for DNS records) as an
 * exact rule, ":port" unless 443/80; "*.domain" instead where two or more
 * different names below one domain of two labels (the last two) were
 * used; the original address as "a.b.c.d:port" / "[v6]:port" when there
 * was no name. Every rule is checked with policy_add_rule, so the output
 * always loads.
 */
#ifndef EGR_SUGGEST_H
#define EGR_SUGGEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <time.h>

struct suggest_options {
	time_t now;              /* 0: time(NULL) */
	long since;              /* seconds before now; 0: no window */
	const char *cgroup_glob; /* dconfig glob; NULL: every cgroup */
};

struct suggest_stats {
	size_t lines;            /* non-empty lines read */
	size_t malformed;        /* not a JSON audit record (or no time with a window) */
	size_t not_denied;       /* allowed records */
	size_t filtered;         /* outside the window or the cgroup glob */
	size_t unfixable;        /* denied for a reason no allow rule fixes */
	size_t invalid;          /* a name or address no rule can spell */
	size_t used;             /* records that produced a rule */
	size_t collapsed;        /* exact names replaced by a wildcard */
};

struct suggest;

int suggest_new(struct suggest **out, const struct suggest_options *o);
void suggest_free(struct suggest *s); /* accepts NULL */
/* One audit log line (no newline needed). Never fails on bad input: it is
 * counted. Returns 0, or -ENOMEM. */
int suggest_add_line(struct suggest *s, const char *line, size_t len);
/* Every line of f. */
int suggest_add_file(struct suggest *s, FILE *f);
/* The rules, sorted and deduplicated; valid until suggest_free. */
const char *const *suggest_rules(struct suggest *s, size_t *n);
const struct suggest_stats *suggest_stats(const struct suggest *s);
/* The policy file ({"name", "mode": "enforce", "allow": [...]}, JSON). */
int suggest_write_json(struct suggest *s, const char *name, FILE *out);
/* The same as a string (free()). */
char *suggest_dump_json(struct suggest *s, const char *name);

/* "90s", "15m", "1h", "2d", "1h30m" -> seconds (1 .. 10 years). 0 or -EINVAL. */
int suggest_parse_duration(const char *text, long *secs);

#endif
