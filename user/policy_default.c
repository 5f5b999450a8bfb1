// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * The built-in policy for coding agents, used when no policy is given.
 * Kept short on purpose: every entry is a place an agent can send data.
 * docs/policy.md lists the same table; keep both in step.
 */
#include <stddef.h>

#include "policy.h"

static const char *const default_allow[] = {
	/* Claude API: the agent's own model calls */
	"api.anthropic.com",
	/* Claude web app: login and OAuth flows of the CLI */
	"claude.ai",
	/* git over HTTPS (clone, fetch, push) and the web UI */
	"github.com",
	/* GitHub's own subdomains (uploads, gist, ...) */
	"*.github.com",
	/* REST/GraphQL API (gh, Actions tooling); also covered by *.github.com
	 * but named so removing the wildcard keeps the API working */
	"api.github.com",
	/* tarball/zip downloads of repositories (npm/pip git deps) */
	"codeload.github.com",
	/* release assets and LFS objects */
	"objects.githubusercontent.com",
	/* raw file downloads (install scripts, configs) */
	"raw.githubusercontent.com",
	/* other GitHub content hosts (avatars, user-attachments) */
	"*.githubusercontent.com",
	/* GitHub container registry (docker/oras pulls) */
	"ghcr.io",
	/* npm packages */
	"registry.npmjs.org",
	/* PyPI index (pip, uv, poetry) */
	"pypi.org",
	/* PyPI package files */
	"files.pythonhosted.org",
	/* crates.io API (cargo search/publish, web) */
	"crates.io",
	/* crate downloads */
	"static.crates.io",
	/* cargo's sparse registry index */
	"index.crates.io",
	/* Go module proxy */
	"proxy.golang.org",
	/* Go checksum database (go mod verify) */
	"sum.golang.org",
	/* Not here: github.com:22 (git over ssh has no SNI; it needs the DNS
	 * proxy to tie the address to the name) */
};

struct policy *policy_default(void)
{
	struct policy *p = policy_new("default");
	char err[256];
	size_t i;

	if (!p)
		return NULL;
	for (i = 0; i < sizeof(default_allow) / sizeof(default_allow[0]); i++) {
		if (policy_add_rule(p, false, default_allow[i], "built-in default",
				    err, sizeof(err))) {
			policy_free(p);
			return NULL;
		}
	}
	return p;
}
