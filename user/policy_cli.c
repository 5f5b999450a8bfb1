// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
#include <stdio.h>
#include <string.h>

#include "policy.h"
#include "policy_cli.h"

static int policy_cli_check(const char *prog, int argc, char **argv)
{
	char err[1024];
	int i, bad = 0;

	if (argc < 1) {
		fprintf(stderr, "%s: policy check: no file given\n", prog);
		return 2;
	}
	for (i = 0; i < argc; i++) {
		struct policy *p = policy_new(argv[i]);

		if (!p) {
			fprintf(stderr, "%s: out of memory\n", prog);
			return 1;
		}
		if (policy_load_file(p, argv[i], err, sizeof(err))) {
			fprintf(stderr, "%s\n", err);
			bad++;
		} else {
			printf("%s: ok (%zu allow, %zu deny rules, mode %s)\n", argv[i],
			       p->n_allow, p->n_deny, p->mode == POLICY_AUDIT ? "audit" : "enforce");
		}
		policy_free(p);
	}
	return bad ? 2 : 0;
}

int policy_cli_main(const char *prog, int argc, char **argv)
{
	if (argc >= 1 && !strcmp(argv[0], "show-default")) {
		struct policy *p = policy_default();
		int err;

		if (!p) {
			fprintf(stderr, "%s: out of memory\n", prog);
			return 1;
		}
		err = policy_write_json(p, stdout);
		policy_free(p);
		return err ? 1 : 0;
	}
	if (argc >= 1 && !strcmp(argv[0], "check"))
		return policy_cli_check(prog, argc - 1, argv + 1);
	fprintf(stderr, "%s: policy: expected 'show-default' or 'check FILE...'\n", prog);
	return 2;
}
