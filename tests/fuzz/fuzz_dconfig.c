// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * libFuzzer target for the daemon config (user/dconfig.c, user/srt.c):
 * arbitrary bytes into dconfig_load_buffer() and srt_load_buffer().
 * Invariants checked beyond "no crash":
 *  - a failed load leaves *out untouched and writes one non-empty line;
 *  - an accepted config binds every binding to a defined policy, every
 *    attach point is a literal prefix of some binding, and each binding's
 *    own literal text (a glob without '*') matches it;
 *  - a failed sandbox-runtime import leaves the policy untouched;
 *  - the bytes as "GLOB\nPATH" never crash the glob checker or matcher.
 * References are resolved against a directory that does not exist.
 * Seed corpus: tests/fuzz/corpus/dconfig/.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dconfig.h"
#include "srt.h"

static void check(int cond, const char *what)
{
	if (!cond) {
		fprintf(stderr, "fuzz_dconfig: invariant broken: %s\n", what);
		abort();
	}
}

static void accepted(const struct dconfig *c)
{
	size_t i, k, n;
	const char *const *ap = dconfig_attach_points(c, &n);

	for (i = 0; i < c->n_bindings; i++) {
		const struct dconfig_binding *b = &c->bindings[i];

		check(b->policy && dconfig_policy(c, b->policy->name) == b->policy,
		      "binding names a defined policy");
		check(!dconfig_glob_check(b->cgroup), "bound glob is valid");
		if (!strchr(b->cgroup, '*'))
			check(dconfig_match(c, b->cgroup) != NULL, "literal glob matches itself");
		for (k = 0; k < n; k++)
			if (!strncmp(b->cgroup, ap[k], strlen(ap[k])))
				break;
		check(k < n, "every binding is below an attach point");
	}
	for (k = 0; k < n; k++)
		check(ap[k][0] == '/' && ap[k][1] && !strchr(ap[k], '*'),
		      "attach point is literal and not the root");
	for (i = 0; i < c->n_warnings; i++)
		check(!strchr(c->warnings[i], '\n'), "one-line warning");
}

static void globs(const uint8_t *data, size_t size)
{
	char *s = malloc(size + 1), *nl;

	check(s != NULL, "alloc");
	memcpy(s, data, size);
	s[size] = '\0';
	nl = strchr(s, '\n');
	if (nl) {
		*nl = '\0';
		if (!dconfig_glob_check(s))
			dconfig_glob_match(s, nl + 1);
	}
	free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dconfig *sentinel = (struct dconfig *)&size, *c = sentinel;
	struct policy *p;
	char err[1024];
	int r;

	err[0] = '\0';
	r = dconfig_load_buffer("/nonexistent-egressd-fuzz/config.json", (const char *)data,
				size, &c, err, sizeof(err));
	if (r) {
		check(r < 0, "negative errno");
		check(c == sentinel, "failed load left *out untouched");
		check(err[0] && !strchr(err, '\n'), "one-line error");
	} else {
		check(c != sentinel && c != NULL, "config returned");
		accepted(c);
		dconfig_free(c);
	}

	p = policy_new("before");
	check(p != NULL, "alloc");
	err[0] = '\0';
	r = srt_load_buffer(p, "settings.json", (const char *)data, size, err, sizeof(err));
	if (r) {
		check(!p->n_allow && !p->n_deny && !strcmp(p->name, "before"),
		      "failed import left the policy untouched");
		check(err[0] && !strchr(err, '\n'), "one-line srt error");
	}
	policy_free(p);
	if (size <= 4096)
		globs(data, size);
	return 0;
}
