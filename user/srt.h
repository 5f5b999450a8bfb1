/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * Import of sandbox-runtime network settings as egressd rules, so that its
 * users can switch without rewriting their allowlists. Reads
 *   {"network": {"allowedDomains": [...], "deniedDomains": [...]}}
 * (sandbox-runtime's settings file) or the same under "sandbox" (Claude
 * Code's settings.json). Everything else in the file is another program's
 * business and is ignored. Semantics and their source: docs/daemon.md.
 *
 * The translation is one rule per entry: sandbox-runtime's "example.com"
 * matches that host only and "*.example.com" strict subdomains only, as
 * egressd's rules do; an entry without ":port" matches every port there,
 * so it becomes "...:*" here.
 */
#ifndef EGR_SRT_H
#define EGR_SRT_H

#include <stdbool.h>
#include <stddef.h>

#include "policy.h"

/* Longest rule text srt_translate() writes (entry + ":*" + NUL). */
#define SRT_RULE_MAX 320

/* Translate one entry of allowedDomains (denied = false) or deniedDomains
 * into an egressd rule text in out. A denied "*" (deny everything) sets
 * *deny_all and leaves out empty. Entries sandbox-runtime itself would
 * refuse are refused. On error returns -EINVAL and writes the reason. */
int srt_translate(const char *entry, bool denied, char *out, size_t outlen,
		  bool *deny_all, char *err, size_t errlen);

/* Append the file's rules to p (mode and name untouched). A denied "*"
 * leaves p without allow rules. On error returns -errno, writes
 * "FILE:LINE: FIELD: reason" and leaves p unchanged. */
int srt_load_file(struct policy *p, const char *path, char *err, size_t errlen);
int srt_load_buffer(struct policy *p, const char *name, const char *buf, size_t len,
		    char *err, size_t errlen);

#endif
