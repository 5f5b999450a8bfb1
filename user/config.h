/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/* One configuration, filled by the command line, passed down. */
#ifndef EGR_CONFIG_H
#define EGR_CONFIG_H

#include <stdbool.h>
#include <stdint.h>

#include "audit.h"

/* A daemon reload changes the fields marked "live" while the proxy runs
 * (config_set_live() on the main thread, then proxy_config_changed() and
 * intercept_config_changed()); other threads read them with cfg_live(). */
struct config {
	unsigned workers;              /* proxy threads; 0 = one per core */
	unsigned peek_timeout_ms;      /* live; ClientHello/HTTP head (slowloris) */
	unsigned connect_timeout_ms;   /* live; upstream connect, per address */
	unsigned resolve_timeout_ms;
	unsigned idle_timeout_ms;      /* live; relay with no bytes either way */
	/* a relayed connection that has moved this many bytes is handed to
	 * the kernel relay (bpf/splice.bpf.c); 0 = never, the default: on
	 * the machines measured it was slower than the splice loop
	 * (docs/BENCHMARKS.md) */
	unsigned kernel_relay_after;
	unsigned max_conns_per_cgroup; /* live */
	unsigned max_conns;            /* live; whole proxy */
	const char *dns_servers;       /* c-ares servers csv; NULL = resolv.conf */
	struct audit_options audit;
	int verbose;
};

#define CONFIG_DEFAULTS {                     \
	.workers = 0,                         \
	.peek_timeout_ms = 10000,             \
	.connect_timeout_ms = 10000,          \
	.resolve_timeout_ms = 5000,           \
	.idle_timeout_ms = 600000,            \
	.kernel_relay_after = 0,              \
	.max_conns_per_cgroup = 4096,         \
	.max_conns = 65536,                   \
	.dns_servers = NULL,                  \
	.audit = { .path = NULL, .format = AUDIT_TEXT, .denials_to_stderr = true }, \
	.verbose = 0,                         \
}

#define cfg_live(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)

/* Copy next's live fields into run (the running config). */
static inline void config_set_live(struct config *run, const struct config *next)
{
	__atomic_store_n(&run->peek_timeout_ms, next->peek_timeout_ms, __ATOMIC_RELAXED);
	__atomic_store_n(&run->connect_timeout_ms, next->connect_timeout_ms, __ATOMIC_RELAXED);
	__atomic_store_n(&run->idle_timeout_ms, next->idle_timeout_ms, __ATOMIC_RELAXED);
	__atomic_store_n(&run->max_conns_per_cgroup, next->max_conns_per_cgroup,
			 __ATOMIC_RELAXED);
	__atomic_store_n(&run->max_conns, next->max_conns, __ATOMIC_RELAXED);
}

#endif
