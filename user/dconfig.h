/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * Daemon configuration (/etc/egressd/config.json): listeners, audit sink,
 * DNS upstream, proxy knobs, named policies and the bindings of cgroup path
 * globs to those policies. User documentation: docs/daemon.md.
 *
 * A load parses and validates everything (referenced policy files and
 * sandbox-runtime settings included) into a new struct dconfig and returns
 * it whole, or returns an error and nothing: hot reload keeps the old
 * configuration when the new one is invalid. Errors are one line,
 * "FILE:LINE: FIELD: reason"; errors inside a referenced policy file carry
 * that file's name and line.
 */
#ifndef EGR_DCONFIG_H
#define EGR_DCONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "addr.h"
#include "audit.h"
#include "config.h"
#include "geo.h"
#include "policy.h"

#define DCONFIG_DEFAULT_PATH "/etc/egressd/config.json"
#define DCONFIG_DEFAULT_CONTROL "/run/egressd/control.sock"
#define DCONFIG_DEFAULT_METRICS "127.0.0.1:9464"

enum dconfig_policy_source {
	DCONFIG_SRC_INLINE = 0,   /* "mode"/"allow"/"deny" in config.json */
	DCONFIG_SRC_FILE = 1,     /* "file": an egressd policy file */
	DCONFIG_SRC_SRT = 2,      /* "sandbox_runtime": a settings file */
};

struct dconfig_policy {
	char *name;               /* key in "policies"; also policy->name */
	struct policy *policy;
	enum dconfig_policy_source kind;
	char *file;               /* referenced file (resolved), NULL if inline */
	int line;                 /* line of the definition in config.json */
	bool used;                /* some binding names it */
};

struct dconfig_binding {
	char *cgroup;             /* the glob as written */
	const struct dconfig_policy *policy;
	size_t index;             /* position in "bindings" */
	int line;
	/* Specificity, compared in this order (docs/daemon.md, "Bindings"). */
	unsigned literal_components; /* components without '*' */
	size_t literal_prefix;    /* bytes before the first '*' */
	size_t literal_chars;     /* bytes that are not '*' */
	unsigned double_stars;    /* "**" components (fewer wins) */
};

struct dconfig {
	char *path;               /* file the config came from */
	/* listen */
	char *control_socket;     /* Unix socket path for egressctl */
	char *metrics;            /* as written; NULL: metrics off */
	bool metrics_unix;        /* metrics is a Unix socket path */
	struct egr_addr metrics_addr; /* !metrics_unix */
	uint16_t metrics_port;
	/* audit */
	char *audit_path;         /* NULL: stdout */
	enum audit_format audit_format;
	/* dns */
	char *dns_servers;        /* c-ares csv "a:53,[b]:53"; NULL: resolv.conf */
	/* proxy */
	unsigned workers;
	unsigned peek_timeout_ms;
	unsigned connect_timeout_ms;
	unsigned resolve_timeout_ms;
	unsigned idle_timeout_ms;
	unsigned kernel_relay_after;
	unsigned max_conns_per_cgroup;
	unsigned max_conns;
	/* TLS interception (docs/daemon.md, "Interception"): the CA as a
	 * directory (ca.crt + ca.key) or two files; NULL: none, and then no
	 * policy may intercept. upstream_ca: trust store for upstreams of
	 * policies without their own (copied into them at load). */
	char *ca_dir;
	char *ca_cert;
	char *ca_key;
	int ca_line;              /* line of the "ca" value, for CA load errors */
	char *upstream_ca;
	/* geoip (docs/geoip.md): database paths (resolved against the
	 * config's directory), NULL: none; opened and checked at load, every
	 * policy's ->geo points at geo (NULL without databases). */
	char *geoip_country;
	char *geoip_asn;
	struct geo *geo;

	struct dconfig_policy *policies;
	size_t n_policies;
	struct dconfig_binding *bindings;
	size_t n_bindings;
	/* Cgroups the programs must be attached to: the literal prefix of each
	 * glob, deduplicated, without any that lies below another. Sorted. */
	char **attach_points;
	size_t n_attach_points;
	/* Not errors, but worth a log line: "FILE:LINE: FIELD: text". */
	char **warnings;
	size_t n_warnings;
};

/* Load and validate path. On success *out is a new config (free it with
 * dconfig_free). On error returns -errno, writes one line into err and
 * leaves *out untouched. */
int dconfig_load(const char *path, struct dconfig **out, char *err, size_t errlen);
/* Same from memory. name is used in messages; relative "file" and
 * "sandbox_runtime" paths are resolved against name's directory. */
int dconfig_load_buffer(const char *name, const char *buf, size_t len,
			struct dconfig **out, char *err, size_t errlen);
void dconfig_free(struct dconfig *c); /* accepts NULL */

/* The binding for a cgroup path ("/agents.slice/job-1.scope", relative to
 * the cgroup2 mount): the most specific matching binding, ties going to
 * the first in the file. NULL: no binding; the caller denies everything. */
const struct dconfig_binding *dconfig_match(const struct dconfig *c,
					    const char *cgroup_path);
/* Policy by name, NULL if none. */
const struct dconfig_policy *dconfig_policy(const struct dconfig *c, const char *name);
/* Attach points (see struct dconfig); *n receives the count. */
const char *const *dconfig_attach_points(const struct dconfig *c, size_t *n);
/* Copy the runtime knobs into cfg (strings point into c). */
void dconfig_apply(const struct dconfig *c, struct config *cfg);

/* Whether any policy intercepts TLS / has gateways (the daemon then runs
 * the interception engine). */
bool dconfig_intercepts(const struct dconfig *c);
bool dconfig_needs_engine(const struct dconfig *c);

/* Glob syntax check: NULL if valid, else the reason. */
const char *dconfig_glob_check(const char *glob);
/* Whether path (starting with '/') matches a valid glob: '*' matches
 * within one component, a "**" component matches zero or more. */
bool dconfig_glob_match(const char *glob, const char *path);

struct stat;
/* Only root can change the file at path (stat'ed as st) or a directory on
 * the way to it: 0, or -EPERM with the reason and the fix in why. */
int dconfig_file_trusted(const char *path, const struct stat *st, char *why, size_t whylen);

#endif
