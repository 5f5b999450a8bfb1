// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * libFuzzer target for policy files (user/policy.c): arbitrary bytes into
 * policy_load_buffer(). Invariants checked beyond "no crash":
 *  - a failed load leaves the policy untouched and writes a one-line error;
 *  - an accepted policy written by policy_write_json() loads back to the
 *    same rules (canonical text is a fixed point);
 *  - the raw bytes as a single rule string never crash the rule parser,
 *    and an accepted rule's canonical text parses to itself.
 * Seed corpus: tests/fuzz/corpus/policy/.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy.h"

static void check(int cond, const char *what)
{
	if (!cond) {
		fprintf(stderr, "fuzz_policy: invariant broken: %s\n", what);
		abort();
	}
}

static void roundtrip(const struct policy *p)
{
	struct policy *q = policy_new("x");
	char *buf = NULL, err[512];
	size_t len = 0, i;
	FILE *f = open_memstream(&buf, &len);

	check(f && q, "alloc");
	check(policy_write_json(p, f) == 0, "write_json");
	fclose(f);
	check(policy_load_buffer(q, "rt", buf, len, err, sizeof(err)) == 0, "reload");
	check(!strcmp(q->name, p->name) && q->mode == p->mode, "name/mode");
	check(q->n_allow == p->n_allow && q->n_deny == p->n_deny, "rule count");
	for (i = 0; i < p->n_allow; i++)
		check(!strcmp(q->allow[i].text, p->allow[i].text), "allow text");
	for (i = 0; i < p->n_deny; i++)
		check(!strcmp(q->deny[i].text, p->deny[i].text), "deny text");
	free(buf);
	policy_free(q);
}

static void one_rule(const uint8_t *data, size_t size)
{
	struct policy *p = policy_new("r");
	struct policy_decision d;
	struct egr_addr a;
	char *s = malloc(size + 1), err[256];

	check(p && s, "alloc");
	memcpy(s, data, size);
	s[size] = '\0';
	if (!policy_add_rule(p, false, s, "fuzz", err, sizeof(err))) {
		check(!policy_add_rule(p, true, p->allow[0].text, NULL, err, sizeof(err)),
		      "canonical text reparses");
		check(!strcmp(p->deny[0].text, p->allow[0].text), "canonical fixed point");
		if (p->allow[0].kind == RULE_DOMAIN) {
			policy_decide_name(p, p->allow[0].domain, 443, &d);
		} else {
			policy_decide_addr(p, &p->allow[0].net, p->allow[0].port, &d);
			check(d.verdict == EGR_VERDICT_DENY, "deny wins over allow");
		}
	} else {
		check(strlen(err) > 0 && !strchr(err, '\n'), "one-line rule error");
	}
	policy_decide_name(p, s, 443, &d);
	if (!addr_parse(s, &a))
		policy_decide_addr(p, &a, 443, &d);
	free(s);
	policy_free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct policy *p = policy_new("before");
	char err[512];
	int r;

	check(p != NULL, "alloc");
	err[0] = '\0';
	r = policy_load_buffer(p, "fuzz.json", (const char *)data, size, err, sizeof(err));
	if (r) {
		check(r < 0, "negative errno");
		check(!strcmp(p->name, "before") && p->mode == POLICY_ENFORCE &&
		      !p->n_allow && !p->n_deny, "failed load left p unchanged");
		check(!strncmp(err, "fuzz.json", 9) && !strchr(err, '\n'), "one-line error");
	} else {
		bool any;
		uint16_t ports[64];
		size_t n;

		roundtrip(p);
		policy_allowed_ports(p, &any, ports, 64, &n);
	}
	policy_free(p);
	if (size <= 512)
		one_rule(data, size);
	return 0;
}
