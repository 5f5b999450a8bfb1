// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* user/dconfig.c: daemon config parsing, errors, globs, bindings. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <limits.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "dconfig.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static int load(const char *text, struct dconfig **out, char *err, size_t errlen)
{
	return dconfig_load_buffer("config.json", text, strlen(text), out, err, errlen);
}

/* --- a valid config, every field read back ------------------------------ */

/*
 * The daemon loads only files root alone can change (dconfig_file_trusted):
 * a checkout in a user's home is not one (`sudo make test`). The examples
 * are loaded from a root-owned copy, by the same relative path.
 */
static char example_root[64], example_cwd[PATH_MAX];

static int example_copy_in(void **state)
{
	static const char *const files[] = { "config.json", "claude-policy.json",
					     "claude-settings.json", "srt-settings.json",
					     "minimal.json", "systemd-config.json" };
	char cmd[PATH_MAX * 2 + 256];

	assert_non_null(getcwd(example_cwd, sizeof(example_cwd)));
	snprintf(example_root, sizeof(example_root), "/tmp/egressd-examples-XXXXXX");
	assert_non_null(mkdtemp(example_root));
	snprintf(cmd, sizeof(cmd), "%s/examples", example_root);
	assert_int_equal(mkdir(cmd, 0755), 0);
	snprintf(cmd, sizeof(cmd), "%s/examples/daemon", example_root);
	assert_int_equal(mkdir(cmd, 0755), 0);
	for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		snprintf(cmd, sizeof(cmd), "cp '%s/examples/daemon/%s' '%s/examples/daemon/' && "
			 "chmod 644 '%s/examples/daemon/%s'", example_cwd, files[i], example_root,
			 example_root, files[i]);
		assert_int_equal(system(cmd), 0);
	}
	assert_int_equal(chdir(example_root), 0);
	(void)state;
	return 0;
}

/* A teardown: also after a failed assertion, the later tests run from the
 * tree again. */
static int example_copy_out(void **state)
{
	char cmd[PATH_MAX + 32];

	assert_int_equal(chdir(example_cwd), 0);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", example_root);
	assert_int_equal(system(cmd), 0);
	(void)state;
	return 0;
}

static void test_example_config(void **state)
{
	struct dconfig *c = NULL;
	const struct dconfig_policy *p;
	struct config cfg = CONFIG_DEFAULTS;
	char err[512] = "";
	size_t n;
	const char *const *ap;

	(void)state;
	assert_int_equal(dconfig_load("examples/daemon/config.json", &c, err, sizeof(err)), 0);
	assert_string_equal(err, "");
	assert_non_null(c);
	assert_string_equal(c->control_socket, "/run/egressd/control.sock");
	assert_string_equal(c->metrics, "127.0.0.1:9464");
	assert_false(c->metrics_unix);
	assert_int_equal(c->metrics_port, 9464);
	assert_string_equal(c->audit_path, "/var/log/egressd/audit.jsonl");
	assert_int_equal(c->audit_format, AUDIT_JSON);
	assert_string_equal(c->dns_servers, "192.0.2.53:53");
	assert_int_equal(c->workers, 0);
	assert_int_equal(c->peek_timeout_ms, 10000);
	assert_int_equal(c->max_conns_per_cgroup, 4096);

	assert_int_equal(c->n_policies, 4);
	p = dconfig_policy(c, "ci-agents");
	assert_non_null(p);
	assert_int_equal(p->kind, DCONFIG_SRC_INLINE);
	assert_int_equal(p->line, 7);
	assert_string_equal(p->policy->name, "ci-agents");
	assert_int_equal(p->policy->mode, POLICY_ENFORCE);
	assert_int_equal(p->policy->n_allow, 4);
	assert_string_equal(p->policy->allow[1].text, "*.github.com");
	/* inline rules carry the config's own file:line */
	assert_string_equal(p->policy->allow[1].source, "examples/daemon/config.json:9");
	assert_int_equal(p->policy->n_deny, 1);
	assert_string_equal(p->policy->deny[0].text, "gist.github.com:*");
	p = dconfig_policy(c, "learning");
	assert_int_equal(p->policy->mode, POLICY_AUDIT);
	assert_int_equal(p->policy->n_allow, 0);
	p = dconfig_policy(c, "claude");
	assert_int_equal(p->kind, DCONFIG_SRC_FILE);
	assert_string_equal(p->file, "examples/daemon/claude-policy.json");
	assert_string_equal(p->policy->name, "claude");
	assert_int_equal(p->policy->n_allow, 8);
	p = dconfig_policy(c, "srt");
	assert_int_equal(p->kind, DCONFIG_SRC_SRT);
	assert_string_equal(p->policy->allow[0].text, "github.com:*");
	assert_string_equal(p->policy->allow[3].text, "api.example.com:443");
	assert_string_equal(p->policy->deny[0].text, "uploads.github.com:*");
	assert_null(dconfig_policy(c, "nope"));

	assert_int_equal(c->n_bindings, 4);
	assert_string_equal(c->bindings[3].cgroup, "/kubepods.slice/**/pod*");
	assert_ptr_equal(c->bindings[3].policy, dconfig_policy(c, "learning"));
	assert_int_equal(c->bindings[3].line, 20);
	ap = dconfig_attach_points(c, &n);
	assert_int_equal(n, 2);
	assert_string_equal(ap[0], "/agents.slice");
	assert_string_equal(ap[1], "/kubepods.slice");
	assert_int_equal(c->n_warnings, 0);

	dconfig_apply(c, &cfg);
	assert_int_equal(cfg.max_conns_per_cgroup, 4096);
	assert_string_equal(cfg.dns_servers, "192.0.2.53:53");
	assert_string_equal(cfg.audit.path, "/var/log/egressd/audit.jsonl");
	assert_int_equal(cfg.audit.format, AUDIT_JSON);
	assert_false(cfg.audit.denials_to_stderr);
	dconfig_free(c);
}

static void test_defaults_and_variants(void **state)
{
	struct dconfig *c = NULL;
	char err[512] = "";
	char a[64];

	(void)state;
	assert_int_equal(load("{}", &c, err, sizeof(err)), 0);
	assert_string_equal(c->control_socket, DCONFIG_DEFAULT_CONTROL);
	assert_string_equal(c->metrics, DCONFIG_DEFAULT_METRICS);
	assert_null(c->audit_path);
	assert_int_equal(c->audit_format, AUDIT_JSON);
	assert_null(c->dns_servers);
	assert_int_equal(c->idle_timeout_ms, 600000);
	assert_int_equal(c->max_conns, 65536);
	assert_int_equal(c->n_bindings, 0);
	assert_null(dconfig_match(c, "/agents.slice/x"));
	assert_int_equal(c->n_warnings, 1);
	assert_string_equal(c->warnings[0], "config.json:1: bindings: no bindings: no cgroup is enforced");
	dconfig_free(c);

	c = NULL;
	assert_int_equal(load("{\"listen\": {\"metrics\": \"[::1]:9000\"},\n"
			      " \"audit\": {\"path\": \"-\", \"format\": \"text\"},\n"
			      " \"dns\": {\"upstream\": [\"192.0.2.53:5353\", \"2001:db8::53\","
			      " \"[2001:db8::54]:53\"]},\n"
			      " \"bindings\": []}", &c, err, sizeof(err)), 0);
	assert_int_equal(c->metrics_port, 9000);
	assert_string_equal(addr_to_str(&c->metrics_addr, a, sizeof(a)), "::1");
	assert_null(c->audit_path);
	assert_int_equal(c->audit_format, AUDIT_TEXT);
	assert_string_equal(c->dns_servers, "192.0.2.53:5353,[2001:db8::53]:53,[2001:db8::54]:53");
	dconfig_free(c);

	c = NULL;
	assert_int_equal(load("{\"listen\": {\"metrics\": null}}", &c, err, sizeof(err)), 0);
	assert_null(c->metrics);
	dconfig_free(c);
	c = NULL;
	assert_int_equal(load("{\"listen\": {\"metrics\": \"/run/egressd/metrics.sock\"}}",
			      &c, err, sizeof(err)), 0);
	assert_true(c->metrics_unix);
	dconfig_free(c);
}

/* proxy.kernel_relay_after: absent and 0 are off, a value reaches the
 * proxy's config (bad ones: bad_cases). */
static void test_kernel_relay_after(void **state)
{
	static const struct {
		const char *json;
		unsigned want;
	} ok[] = {
		{ "{}", 0 },
		{ "{\"proxy\": {}}", 0 },
		{ "{\"proxy\": {\"kernel_relay_after\": 0}}", 0 },
		{ "{\"proxy\": {\"kernel_relay_after\": 1}}", 1 },
		{ "{\"proxy\": {\"kernel_relay_after\": 1048576}}", 1048576 },
		{ "{\"proxy\": {\"kernel_relay_after\": 1073741824}}", 1073741824 },
	};
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(ok); i++) {
		struct config cfg = CONFIG_DEFAULTS;
		struct dconfig *c = NULL;
		char err[512] = "";

		cfg.kernel_relay_after = 12345; /* overwritten, also by 0 */
		if (load(ok[i].json, &c, err, sizeof(err)))
			fail_msg("%s: %s", ok[i].json, err);
		assert_int_equal(c->kernel_relay_after, ok[i].want);
		dconfig_apply(c, &cfg);
		assert_int_equal(cfg.kernel_relay_after, ok[i].want);
		dconfig_free(c);
	}
}

static void test_warnings(void **state)
{
	struct dconfig *c = NULL;
	char err[512] = "";

	(void)state;
	assert_int_equal(load("{\n"
			      "  \"listen\": {\"metrics\": \"0.0.0.0:9464\"},\n"
			      "  \"policies\": {\n"
			      "    \"used\": {\"allow\": [\"example.com\"]},\n"
			      "    \"spare\": {\"mode\": \"audit\"}\n"
			      "  },\n"
			      "  \"bindings\": [{\"cgroup\": \"/a.slice/*\", \"policy\": \"used\"}]\n"
			      "}\n", &c, err, sizeof(err)), 0);
	assert_int_equal(c->n_warnings, 2);
	assert_string_equal(c->warnings[0], "config.json:2: listen.metrics: 0.0.0.0 is not a "
			    "loopback address: metrics are reachable from other hosts");
	assert_string_equal(c->warnings[1], "config.json:5: policies.spare: not used by any binding");
	dconfig_free(c);
}

/* The CA section, and the daemon's upstream_ca given to the policies that
 * intercept without their own. */
static void test_intercept_ca(void **state)
{
	struct dconfig *c = NULL;
	char err[512] = "";

	(void)state;
	assert_int_equal(load("{\"ca\": {\"dir\": \"/tmp\"}, \"upstream_ca\": \"/etc/passwd\",\n"
			      " \"policies\": {\n"
			      "  \"a\": {\"allow\": [\"api.example.com\"],\n"
			      "   \"intercept\": [{\"host\": \"api.example.com\"}]},\n"
			      "  \"b\": {\"allow\": [\"api.example.com\"], \"upstream_ca\": \"/etc/hostname\",\n"
			      "   \"intercept\": [{\"host\": \"api.example.com\"}]},\n"
			      "  \"c\": {\"allow\": [\"api.example.com\"]}},\n"
			      " \"bindings\": [{\"cgroup\": \"/x/*\", \"policy\": \"a\"},\n"
			      "  {\"cgroup\": \"/y/*\", \"policy\": \"b\"},\n"
			      "  {\"cgroup\": \"/z/*\", \"policy\": \"c\"}]}", &c, err, sizeof(err)), 0);
	assert_string_equal(c->ca_dir, "/tmp");
	assert_int_equal(c->ca_line, 1);
	assert_null(c->ca_cert);
	assert_string_equal(c->upstream_ca, "/etc/passwd");
	assert_true(dconfig_intercepts(c));
	assert_true(dconfig_needs_engine(c));
	assert_string_equal(dconfig_policy(c, "a")->policy->upstream_ca, "/etc/passwd");
	assert_string_equal(dconfig_policy(c, "b")->policy->upstream_ca, "/etc/hostname");
	assert_null(dconfig_policy(c, "c")->policy->upstream_ca);
	dconfig_free(c);

	/* gateways need no CA */
	assert_int_equal(load("{\"policies\": {\"g\": {\"allow\": [\"api.example.com\"],\n"
			      " \"gateways\": [{\"listen\": \"127.0.0.1:8080\",\n"
			      "   \"upstream\": \"https://api.example.com\"}]}},\n"
			      " \"bindings\": [{\"cgroup\": \"/x/*\", \"policy\": \"g\"}]}",
			      &c, err, sizeof(err)), 0);
	assert_false(dconfig_intercepts(c));
	assert_true(dconfig_needs_engine(c));
	dconfig_free(c);
}

/* --- every error, exactly ----------------------------------------------- */

static const struct {
	const char *json;
	const char *err;
} bad_cases[] = {
	{ "{\n  \"policies\": {\n", "config.json:3: syntax error: string or '}' expected near end of file" },
	{ "\n[1]", "config.json:2: top level: expected an object, got an array" },
	{ "{\n\"polices\": {}}", "config.json:2: polices: unknown field (did you mean \"policies\"?)" },
	{ "{\"zzzzzz\": 1}", "config.json:1: zzzzzz: unknown field (expected listen, audit, dns, "
	  "proxy, ca, upstream_ca, policies, bindings, geoip)" },
	{ "{\"a b\": 1}", "config.json:1: \"a b\": unknown field (expected listen, audit, dns, "
	  "proxy, ca, upstream_ca, policies, bindings, geoip)" },
	/* GeoIP (docs/geoip.md): paths relative to the config (here: ".") */
	{ "{\"geoip\": {\n \"contry\": \"x\"}}",
	  "config.json:2: geoip.contry: unknown field (did you mean \"country\"?)" },
	{ "{\"geoip\": []}", "config.json:1: geoip: expected an object, got an array" },
	{ "{\"geoip\": {\"asn\": \"\"}}",
	  "config.json:1: geoip.asn: empty path (leave the field out for no ASN database)" },
	{ "{\"geoip\": {\n \"country\": \"tests/data/geo/none.mmdb\"}}",
	  "config.json:2: geoip.country: country database ./tests/data/geo/none.mmdb: No such "
	  "file or directory" },
	{ "{\"geoip\": {\"asn\": \"tests/data/geo/e2e-asn.mmdb\",\n"
	  " \"country\": \"tests/data/geo/corrupt-tree.mmdb\"}}",
	  "config.json:2: geoip.country: country database ./tests/data/geo/corrupt-tree.mmdb: "
	  "corrupt search tree: node 0 points outside the file" },
	{ "{\"geoip\": {\"country\": \"tests/data/geo/e2e-country.mmdb\",\n"
	  " \"asn\": \"tests/data/geo/e2e-country.mmdb\"}}",
	  "config.json:2: geoip.asn: ASN database ./tests/data/geo/e2e-country.mmdb: wrong "
	  "database type \"GeoLite2-Country\" (want an ASN database)" },
	{ "{\"policies\": {\"p\": {\n \"deny_countries\": [\"KP\"]}}}",
	  "config.json:2: deny_countries: needs a country database (set geoip.country in "
	  "config.json; policies.p)" },
	{ "{\"geoip\": {\"country\": \"tests/data/geo/e2e-country.mmdb\"},\n"
	  " \"policies\": {\"p\": {\"deny_countries\": [\"KP\"],\n"
	  "  \"allow\": [{\"rule\": \"a.test\", \"asn\": [64496]}]}}}",
	  "config.json:3: asn of \"a.test\": needs an ASN database (set geoip.asn in "
	  "config.json; policies.p)" },
	{ "{\"policies\": {\"p\": {\n \"deny_countries\": [\"KPX\"]}}}",
	  "config.json:2: policies.p.deny_countries[0]: \"KPX\": not a two-letter country code "
	  "(ISO 3166-1 alpha-2, e.g. \"KP\")" },
	{ "{\"proxy\": {},\n \"proxy\": {}}", "config.json:2: proxy: duplicate field (first on line 1)" },
	{ "{\"proxy\": []}", "config.json:1: proxy: expected an object, got an array" },
	{ "{\"proxy\": {\n \"worker\": 2}}", "config.json:2: proxy.worker: unknown field (did you mean \"workers\"?)" },
	{ "{\"proxy\": {\n\n \"workers\": 5000}}", "config.json:3: proxy.workers: 5000 is out of range (0-256)" },
	{ "{\"proxy\": {\"workers\": -1}}", "config.json:1: proxy.workers: -1 is out of range (0-256)" },
	{ "{\"proxy\": {\"workers\": \"4\"}}", "config.json:1: proxy.workers: expected an integer, got a string" },
	{ "{\"proxy\": {\"peek_timeout_ms\": 1.5}}", "config.json:1: proxy.peek_timeout_ms: expected an integer, got 1.5" },
	{ "{\"proxy\": {\"peek_timeout_ms\": 10}}", "config.json:1: proxy.peek_timeout_ms: 10 is out of range (100-600000)" },
	/* the kernel relay's threshold (docs/daemon.md): bytes, 0 = off */
	{ "{\"proxy\": {\n \"kernel_relay_after\": \"1M\"}}",
	  "config.json:2: proxy.kernel_relay_after: expected an integer, got a string" },
	{ "{\"proxy\": {\"kernel_relay_after\": true}}",
	  "config.json:1: proxy.kernel_relay_after: expected an integer, got a boolean" },
	{ "{\"proxy\": {\"kernel_relay_after\": 1048576.5}}",
	  "config.json:1: proxy.kernel_relay_after: expected an integer, got 1.04858e+06" },
	{ "{\"proxy\": {\"workers\": 2,\n\n \"kernel_relay_after\": -1}}",
	  "config.json:3: proxy.kernel_relay_after: -1 is out of range (0-1073741824)" },
	{ "{\"proxy\": {\"kernel_relay_after\": 1073741825}}",
	  "config.json:1: proxy.kernel_relay_after: 1073741825 is out of range (0-1073741824)" },
	{ "{\"proxy\": {\"kernel_relay_after\": 4294968320}}",
	  "config.json:1: proxy.kernel_relay_after: 4294968320 is out of range (0-1073741824)" },
	{ "{\"proxy\": {\"kernel_relay_afer\": 1}}",
	  "config.json:1: proxy.kernel_relay_afer: unknown field (did you mean \"kernel_relay_after\"?)" },
	{ "{\"proxy\": {\"max_conns_per_cgroup\": 99999999999}}",
	  "config.json:1: proxy.max_conns_per_cgroup: 99999999999 is out of range (1-1000000)" },
	{ "{\"proxy\": {\"max_conns\": 100,\n \"max_conns_per_cgroup\": 200}}",
	  "config.json:2: proxy.max_conns_per_cgroup: 200 is more than proxy.max_conns (100)" },
	{ "{\"listen\": {\"control\": \"egressd.sock\"}}",
	  "config.json:1: listen.control: \"egressd.sock\": must be an absolute path" },
	{ "{\"listen\": {\"control\": 5}}", "config.json:1: listen.control: expected a string, got an integer" },
	{ "{\"listen\": {\"metrics\": \"localhost:9464\"}}",
	  "config.json:1: listen.metrics: \"localhost:9464\": invalid IP address (a literal address is "
	  "required, not a name) (write ADDRESS:PORT or an absolute Unix socket path)" },
	{ "{\"listen\": {\"metrics\": \"127.0.0.1:0\"}}",
	  "config.json:1: listen.metrics: \"127.0.0.1:0\": invalid port (1-65535) (write ADDRESS:PORT "
	  "or an absolute Unix socket path)" },
	{ "{\"audit\": {\"format\": \"xml\"}}", "config.json:1: audit.format: \"xml\": must be \"json\" or \"text\"" },
	{ "{\"audit\": {\"path\": \"audit.log\"}}",
	  "config.json:1: audit.path: \"audit.log\": must be an absolute path, or \"-\" for stdout" },
	{ "{\"dns\": {\"upstream\": \"dns.google\"}}",
	  "config.json:1: dns.upstream: \"dns.google\": invalid IP address (a literal address is "
	  "required, not a name)" },
	{ "{\"dns\": {\"upstream\": [\"192.0.2.53\",\n 53]}}",
	  "config.json:2: dns.upstream[1]: expected an address string, got an integer" },
	{ "{\"dns\": {\"upstream\": []}}",
	  "config.json:1: dns.upstream: empty list (leave dns.upstream out to use /etc/resolv.conf)" },
	{ "{\"policies\": []}", "config.json:1: policies: expected an object, got an array" },
	{ "{\"policies\": {\n \"a\": {},\n \"b\": {},\n \"a\": {\"mode\": \"audit\"}}}",
	  "config.json:4: policies: duplicate policy name \"a\" (first defined on line 2)" },
	{ "{\"policies\": {\"a/b\": {}}}",
	  "config.json:1: policies: \"a/b\": a policy name is 1-64 characters of A-Z a-z 0-9 . _ -" },
	{ "{\"policies\": {\"a\": \"example.com\"}}",
	  "config.json:1: policies.a: expected an object, got a string" },
	{ "{\"policies\": {\"ci\": {\n  \"alow\": []}}}",
	  "config.json:2: policies.ci.alow: unknown field (did you mean \"allow\"?)" },
	{ "{\"policies\": {\"ci\": {\"name\": \"x\"}}}",
	  "config.json:1: policies.ci.name: not needed: the policy is named by its key in \"policies\"" },
	{ "{\n \"policies\": {\n  \"ci\": {\n   \"allow\": [\n    \"github.com\",\n    \"*.com\"]}}}",
	  "config.json:6: policies.ci.allow[1]: \"*.com\": wildcard over a top-level domain would "
	  "allow half the internet; name the domain, e.g. *.example.com" },
	{ "{\"policies\": {\"ci\": {\n \"mode\": \"block\"}}}",
	  "config.json:2: policies.ci.mode: \"block\": must be \"enforce\" or \"audit\"" },
	{ "{\"policies\": {\"x\": {\"file\": \"a.json\",\n \"sandbox_runtime\": \"b.json\"}}}",
	  "config.json:2: policies.x: \"file\" and \"sandbox_runtime\" are alternatives; give one" },
	{ "{\"policies\": {\"x\": {\"file\": \"a.json\",\n \"allow\": []}}}",
	  "config.json:2: policies.x: \"allow\" cannot be combined with \"file\"; put the rules in that file" },
	{ "{\"policies\": {\"x\": {\n \"file\": \"/nonexistent/egressd/p.json\"}}}",
	  "config.json:2: policies.x.file: \"/nonexistent/egressd/p.json\": No such file or directory" },
	{ "{\"policies\": {\"x\": {\"file\": 3}}}", "config.json:1: policies.x.file: expected a file path, got an integer" },
	{ "{\"policies\": {\"x\": {\"sandbox_runtime\": \"/dev/null\"}}}",
	  "config.json:1: policies.x.sandbox_runtime: \"/dev/null\": not a regular file" },
	{ "{\"bindings\": {}}", "config.json:1: bindings: expected an array, got an object" },
	/* interception: the CA, and nothing intercepts without it */
	{ "{\"policies\": {\"a\": {\"allow\": [\"api.example.com\"],\n"
	  " \"intercept\": [{\"host\": \"api.example.com\"}]}},\n"
	  " \"bindings\": [{\"cgroup\": \"/x/*\", \"policy\": \"a\"}]}",
	  "config.json:1: policies.a: intercepts api.example.com but the daemon has no CA: add "
	  "\"ca\": {\"dir\": \"/etc/egressd/ca\"} (made by egressctl ca init)" },
	{ "{\"ca\": {\"dir\": \"ca\"}}", "config.json:1: ca.dir: \"ca\": must be an absolute path" },
	{ "{\"ca\": {\"dir\": \"/nonexistent/egressd/ca\"}}",
	  "config.json:1: ca.dir: \"/nonexistent/egressd/ca\": No such file or directory" },
	{ "{\"ca\": {\"dir\": \"/dev/null\"}}", "config.json:1: ca.dir: \"/dev/null\": not a directory" },
	{ "{\"ca\": {\"cert\": \"/dev/null\"}}",
	  "config.json:1: ca.cert: \"/dev/null\": not a regular file" },
	{ "{\"ca\": {\n\"dri\": \"/tmp\"}}", "config.json:2: ca.dri: unknown field (did you mean \"dir\"?)" },
	{ "{\"ca\": {}}", "config.json:1: ca: needs \"dir\" (made by egressctl ca init --dir DIR) or "
	  "both \"cert\" and \"key\"" },
	{ "{\"ca\": {\"dir\": \"/tmp\", \"key\": \"/etc/passwd\"}}",
	  "config.json:1: ca: give either \"dir\" or \"cert\" and \"key\", not both" },
	{ "{\"upstream_ca\": 3}", "config.json:1: upstream_ca: expected a string, got an integer" },
	{ "{\"upstream_ca\": \"/tmp\"}", "config.json:1: upstream_ca: \"/tmp\": not a regular file" },
	{ "{\n"
	  "  \"policies\": {\n"
	  "    \"ci-agents\": { \"allow\": [\"github.com\"] },\n"
	  "    \"learning\": { \"mode\": \"audit\" }\n"
	  "  },\n"
	  "  \"bindings\": [\n"
	  "    { \"cgroup\": \"/agents.slice/*\", \"policy\": \"ci-agents\" },\n"
	  "    {\n"
	  "      \"cgroup\": \"/build.slice/*\",\n"
	  "      \"policy\": \"ci-agent\"\n"
	  "    }\n"
	  "  ]\n"
	  "}\n",
	  "config.json:10: bindings[1].policy: unknown policy \"ci-agent\" (did you mean \"ci-agents\"?)" },
	{ "{\"policies\": {\"a\": {}},\n \"bindings\": [{\"cgroup\": \"/x/*\", \"policy\": \"zzz\"}]}",
	  "config.json:2: bindings[0].policy: unknown policy \"zzz\"" },
	{ "{\"bindings\": [{\"cgroup\": \"/x/*\", \"policy\": \"a\"}]}",
	  "config.json:1: bindings[0].policy: unknown policy \"a\" (no policies are defined)" },
	{ "{\"bindings\": [\n {\"cgroup\": \"/x/*\"}]}", "config.json:2: bindings[0]: missing field \"policy\"" },
	{ "{\"bindings\": [\n \"/x/*\"]}", "config.json:2: bindings[0]: expected an object, got a string" },
	{ "{\"bindings\": [{\"cgroup\": \"/x/*\",\n \"polcy\": \"a\"}]}",
	  "config.json:2: bindings[0].polcy: unknown field (did you mean \"policy\"?)" },
	{ "{\"bindings\": [{\"cgroup\": \"/x/*\", \"cgroup\": \"/y\"}]}",
	  "config.json:1: bindings[0].cgroup: duplicate field (first on line 1)" },
	{ "{\"policies\": {\"a\": {}},\n \"bindings\": [{\"cgroup\": \"agents.slice/*\", \"policy\": \"a\"}]}",
	  "config.json:2: bindings[0].cgroup: \"agents.slice/*\": must start with \"/\" (a path below "
	  "the cgroup2 mount)" },
	{ "{\"policies\": {\"a\": {}}, \"bindings\": [{\"cgroup\": \"/a/../b\", \"policy\": \"a\"}]}",
	  "config.json:1: bindings[0].cgroup: \"/a/../b\": \".\" and \"..\" components are not allowed" },
	{ "{\"policies\": {\"a\": {}}, \"bindings\": [{\"cgroup\": \"/*\", \"policy\": \"a\"}]}",
	  "config.json:1: bindings[0].cgroup: \"/*\": the first component must be literal: the programs "
	  "would be attached to the root cgroup and enforce the whole machine" },
	{ "{\"policies\": {\"a\": {}}, \"bindings\": [{\"cgroup\": \"/\", \"policy\": \"a\"}]}",
	  "config.json:1: bindings[0].cgroup: \"/\": \"/\" is the root cgroup: binding it would enforce "
	  "the whole machine" },
	{ "{\"policies\": {\"a\": {}}, \"bindings\": [{\"cgroup\": \"/a/b**\", \"policy\": \"a\"}]}",
	  "config.json:1: bindings[0].cgroup: \"/a/b**\": \"**\" must be a whole path component" },
	{ "{\"policies\": {\"a\": {}}, \"bindings\": [{\"cgroup\": \"/a/job?\", \"policy\": \"a\"}]}",
	  "config.json:1: bindings[0].cgroup: \"/a/job?\": only \"*\" and \"**\" are wildcards" },
	{ "{\"policies\": {\"a\": {}}, \"bindings\": [{\"cgroup\": \"/a//b\", \"policy\": \"a\"}]}",
	  "config.json:1: bindings[0].cgroup: \"/a//b\": empty path component (\"//\")" },
	{ "{\"policies\": {\"a\": {}}, \"bindings\": [{\"cgroup\": \"/a/\", \"policy\": \"a\"}]}",
	  "config.json:1: bindings[0].cgroup: \"/a/\": must not end with \"/\"" },
	{ "{\"policies\": {\"a\": {}, \"b\": {}}, \"bindings\": [\n"
	  " {\"cgroup\": \"/a/*\", \"policy\": \"a\"},\n"
	  " {\"cgroup\": \"/a/*\", \"policy\": \"b\"}]}",
	  "config.json:3: bindings[1].cgroup: \"/a/*\" is already bound on line 2 (to \"a\")" },
};

static void test_bad_configs(void **state)
{
	size_t i, bad = 0;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(bad_cases); i++) {
		struct dconfig *sentinel = (struct dconfig *)&i, *c = sentinel;
		char err[512] = "";
		int r = load(bad_cases[i].json, &c, err, sizeof(err));

		if (r >= 0 || strcmp(err, bad_cases[i].err)) {
			print_error("case %zu: r=%d\n got:  %s\n want: %s\n", i, r, err,
				    bad_cases[i].err);
			bad++;
		}
		/* nothing half-applied: *out is not touched */
		assert_ptr_equal(c, sentinel);
		assert_null(strchr(err, '\n'));
	}
	assert_int_equal(bad, 0);
}

/* The daemon holds two banks of 512 policy ids (the running config's and
 * the next reload's): 512 policies load, 513 are refused here, by --check
 * too, not later by the kernel maps at start or reload. */
static void test_policy_count_limit(void **state)
{
	size_t n, cap = 64 * 1024;
	char *text = malloc(cap), err[512];
	struct dconfig *c;

	(void)state;
	assert_non_null(text);
	for (n = 512; n <= 513; n++) {
		size_t i, len = 0;

		len += (size_t)snprintf(text + len, cap - len, "{ \"policies\": {");
		for (i = 0; i < n; i++)
			len += (size_t)snprintf(text + len, cap - len,
						"%s\"p%zu\": { \"allow\": [\"h%zu.test\"] }",
						i ? ", " : " ", i, i);
		snprintf(text + len, cap - len,
			 " },\n \"bindings\": [ { \"cgroup\": \"/a.slice/*\", \"policy\": \"p0\" } ] }\n");
		c = NULL;
		err[0] = '\0';
		if (n == 512) {
			assert_int_equal(load(text, &c, err, sizeof(err)), 0);
			assert_int_equal(c->n_policies, 512);
			dconfig_free(c);
		} else {
			assert_true(load(text, &c, err, sizeof(err)) < 0);
			assert_null(c);
			assert_string_equal(err, "config.json:1: policies: more than 512 policies");
		}
	}
	free(text);
}

/* --- referenced files --------------------------------------------------- */

static char tmpdir[64];

static void write_file(const char *name, const char *text)
{
	char path[256];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static void rm_file(const char *name)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	unlink(path);
}

static void test_referenced_files(void **state)
{
	struct dconfig *c = NULL, *sentinel = (struct dconfig *)state;
	char cfg[256], err[1024] = "", want[1024];

	(void)state;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/egressd-dconfig-XXXXXX");
	assert_non_null(mkdtemp(tmpdir));
	snprintf(cfg, sizeof(cfg), "%s/config.json", tmpdir);
	write_file("p.json", "{\n  \"mode\": \"audit\",\n  \"allow\": [\"example.com\"]\n}\n");
	write_file("s.json", "{\"sandbox\": {\"network\": {\n  \"allowedDomains\": [\"*.example.org\"]}}}\n");
	write_file("config.json",
		   "{\"policies\": {\n"
		   "  \"f\": {\"file\": \"p.json\", \"mode\": \"enforce\"},\n"
		   "  \"s\": {\"sandbox_runtime\": \"s.json\", \"mode\": \"audit\"}},\n"
		   " \"bindings\": [{\"cgroup\": \"/a/f*\", \"policy\": \"f\"},\n"
		   "              {\"cgroup\": \"/a/s*\", \"policy\": \"s\"}]}\n");
	assert_int_equal(dconfig_load(cfg, &c, err, sizeof(err)), 0);
	/* "mode" next to a reference overrides the file's */
	assert_int_equal(dconfig_policy(c, "f")->policy->mode, POLICY_ENFORCE);
	assert_string_equal(dconfig_policy(c, "f")->policy->allow[0].source + strlen(tmpdir),
			    "/p.json:3");
	assert_int_equal(dconfig_policy(c, "s")->policy->mode, POLICY_AUDIT);
	assert_string_equal(dconfig_policy(c, "s")->policy->allow[0].text, "*.example.org:*");
	dconfig_free(c);

	/* an error in a referenced file keeps that file's name and line */
	write_file("p.json", "{\n  \"allow\": [\n    \"exa mple.com\"]\n}\n");
	c = sentinel;
	assert_int_equal(dconfig_load(cfg, &c, err, sizeof(err)), -EINVAL);
	snprintf(want, sizeof(want), "%s/p.json:3: allow[0]: \"exa mple.com\": contains whitespace "
		 "or control characters (policies.f in %s:2)", tmpdir, cfg);
	assert_string_equal(err, want);
	assert_ptr_equal(c, sentinel);

	write_file("p.json", "{}");
	write_file("s.json", "{\"network\": {\"allowedDomains\": [\n \"https://example.com\"]}}");
	assert_int_equal(dconfig_load(cfg, &c, err, sizeof(err)), -EINVAL);
	snprintf(want, sizeof(want), "%s/s.json:2: network.allowedDomains[0]: \"https://example.com\": "
		 "URLs and paths are not domain patterns; write the host name (\"example.com\" or "
		 "\"example.com:443\") (policies.s in %s:3)", tmpdir, cfg);
	assert_string_equal(err, want);
	assert_ptr_equal(c, sentinel);

	/* Whoever can change a file the daemon reads its policies from
	 * widens them at the next reload: only root's files, in directories
	 * only root can change. (Needs root: files owned by another uid.) */
	if (geteuid() == 0) {
		char pf[300], sf[300];

		write_file("p.json", "{\"allow\": [\"example.com\"]}\n");
		write_file("s.json", "{\"network\": {\"allowedDomains\": [\"example.org\"]}}\n");
		snprintf(pf, sizeof(pf), "%s/p.json", tmpdir);
		snprintf(sf, sizeof(sf), "%s/s.json", tmpdir);
		assert_int_equal(dconfig_load(cfg, &c, err, sizeof(err)), 0);
		dconfig_free(c);
		c = sentinel;
		assert_int_equal(chown(sf, 1000, 1000), 0);
		assert_int_equal(dconfig_load(cfg, &c, err, sizeof(err)), -EPERM);
		snprintf(want, sizeof(want), "%s:3: policies.s.sandbox_runtime: \"%s\": owned by uid 1000; "
			 "the daemon enforces", cfg, sf);
		assert_true(!strncmp(err, want, strlen(want)));
		assert_int_equal(chown(sf, 0, 0), 0);
		assert_int_equal(chmod(pf, 0666), 0);
		assert_int_equal(dconfig_load(cfg, &c, err, sizeof(err)), -EPERM);
		assert_non_null(strstr(err, "p.json\": writable by group or others (mode 0666)"));
		assert_int_equal(chmod(pf, 0644), 0);
		assert_int_equal(chmod(cfg, 0664), 0);
		assert_int_equal(dconfig_load(cfg, &c, err, sizeof(err)), -EPERM);
		assert_non_null(strstr(err, "config.json: writable by group or others"));
		assert_int_equal(chmod(cfg, 0644), 0);
		/* the directory: another uid's, or writable by others */
		assert_int_equal(chown(tmpdir, 1000, 1000), 0);
		assert_int_equal(dconfig_load(cfg, &c, err, sizeof(err)), -EPERM);
		assert_non_null(strstr(err, "is owned by uid 1000"));
		assert_int_equal(chown(tmpdir, 0, 0), 0);
		assert_int_equal(chmod(tmpdir, 0777), 0);
		assert_int_equal(dconfig_load(cfg, &c, err, sizeof(err)), -EPERM);
		assert_non_null(strstr(err, "writable by group or others (mode 0777)"));
		assert_int_equal(chmod(tmpdir, 0700), 0);
		assert_ptr_equal(c, sentinel);
		assert_int_equal(dconfig_load(cfg, &c, err, sizeof(err)), 0);
		dconfig_free(c);
		/* the file is root's link to a file where another uid writes:
		 * where it leads is checked too */
		{
			char sub[300], real[320];

			snprintf(sub, sizeof(sub), "%s/home", tmpdir);
			assert_int_equal(mkdir(sub, 0755), 0);
			snprintf(real, sizeof(real), "%s/p.json", sub);
			assert_int_equal(rename(pf, real), 0);
			assert_int_equal(symlink("home/p.json", pf), 0);
			c = sentinel;
			assert_int_equal(dconfig_load(cfg, &c, err, sizeof(err)), 0);
			dconfig_free(c);
			assert_int_equal(chown(sub, 1000, 1000), 0);
			c = sentinel;
			assert_int_equal(dconfig_load(cfg, &c, err, sizeof(err)), -EPERM);
			assert_non_null(strstr(err, "home is owned by uid 1000"));
			assert_ptr_equal(c, sentinel);
			unlink(pf);
			unlink(real);
			rmdir(sub);
			write_file("p.json", "{}");
		}
	}

	rm_file("p.json");
	rm_file("s.json");
	rm_file("config.json");
	rmdir(tmpdir);
}

static void test_load_file_errors(void **state)
{
	struct dconfig *c = NULL;
	char err[512];

	(void)state;
	assert_int_equal(dconfig_load("/nonexistent/egressd.json", &c, err, sizeof(err)), -ENOENT);
	assert_string_equal(err, "/nonexistent/egressd.json: No such file or directory");
	assert_int_equal(dconfig_load("/dev/null", &c, err, sizeof(err)), -EINVAL);
	assert_string_equal(err, "/dev/null: not a regular file");
	assert_null(c);
}

/* Reload pattern: a bad config after a good one leaves the good one. */
static void test_nothing_half_applied(void **state)
{
	struct dconfig *live = NULL, *next;
	char err[512];

	(void)state;
	assert_int_equal(load("{\"policies\": {\"a\": {\"allow\": [\"a.example\"]}},"
			      " \"bindings\": [{\"cgroup\": \"/s/*\", \"policy\": \"a\"}]}",
			      &live, err, sizeof(err)), 0);
	next = live;
	/* fails late: after policies and the first binding were built */
	assert_int_equal(load("{\"policies\": {\"b\": {\"allow\": [\"b.example\"]}},"
			      " \"bindings\": [{\"cgroup\": \"/s/*\", \"policy\": \"b\"},"
			      " {\"cgroup\": \"/t/*\", \"policy\": \"c\"}]}",
			      &next, err, sizeof(err)), -EINVAL);
	assert_ptr_equal(next, live);
	assert_string_equal(dconfig_match(live, "/s/1")->policy->name, "a");
	assert_string_equal(dconfig_match(live, "/s/1")->policy->policy->allow[0].text, "a.example");
	dconfig_free(live);
}

/* --- globs -------------------------------------------------------------- */

static const struct {
	const char *glob, *path;
	bool match;
} glob_cases[] = {
	{ "/agents.slice/*", "/agents.slice/job-1.scope", true },
	{ "/agents.slice/*", "/agents.slice", false },
	{ "/agents.slice/*", "/agents.slice/a/b", false },
	{ "/agents.slice/*", "/agents.slicex/a", false },
	{ "/agents.slice/*", "/other.slice/a", false },
	{ "/agents.slice/job-*.scope", "/agents.slice/job-7.scope", true },
	{ "/agents.slice/job-*.scope", "/agents.slice/job-.scope", true },
	{ "/agents.slice/job-*.scope", "/agents.slice/job-7.service", false },
	{ "/agents.slice/job-1", "/agents.slice/job-1", true },
	{ "/agents.slice/job-1", "/agents.slice/job-12", false },
	{ "/agents.slice/job-1", "/agents.slice/job-1/x", false },
	{ "/kubepods.slice/*/pod*", "/kubepods.slice/kubepods-burstable.slice/pod123", true },
	{ "/kubepods.slice/*/pod*", "/kubepods.slice/pod123", false },
	{ "/kubepods.slice/*/pod*", "/kubepods.slice/a/b/pod123", false },
	{ "/kubepods.slice/**/pod*", "/kubepods.slice/pod123", true },
	{ "/kubepods.slice/**/pod*", "/kubepods.slice/a/b/c/pod123", true },
	{ "/kubepods.slice/**/pod*", "/kubepods.slice/a/b/c/x", false },
	{ "/kubepods.slice/**/pod*", "/kubepods.slice/pod1/x", false },
	{ "/a/**", "/a", true },
	{ "/a/**", "/a/b/c/d", true },
	{ "/a/**", "/b", false },
	{ "/a/**/b/**/c", "/a/x/b/y/z/c", true },
	{ "/a/**/b/**/c", "/a/b/c", true },
	{ "/a/**/b/**/c", "/a/c/b", false },
	{ "/a/**/b", "/a/b/b/b", true },
	{ "/a/*b*c*", "/a/xxbyyczz", true },
	{ "/a/*b*c*", "/a/xxcyybzz", false },
	{ "/a/**/x*y", "/a/1/2/3/xaaay", true },
	{ "/a/b", "/a/b/", true },    /* empty components are not components */
	{ "/a/*", "a/b", false },     /* relative path: never */
	{ "/a/*", "", false },
	{ "/a/*/*/*/*/*/*/*/*/z", "/a/1/2/3/4/5/6/7/8/z", true },
	{ "/a/**/**/**/**/**/**/z", "/a/1/2/3/4/5/6/7/8/9/10/11/12/13/14/15/16/y", false },
};

static void test_glob_match(void **state)
{
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(glob_cases); i++) {
		assert_null(dconfig_glob_check(glob_cases[i].glob));
		if (dconfig_glob_match(glob_cases[i].glob, glob_cases[i].path) != glob_cases[i].match)
			fail_msg("case %zu: %s vs %s: want %d", i, glob_cases[i].glob,
				 glob_cases[i].path, glob_cases[i].match);
	}
	assert_false(dconfig_glob_match(NULL, "/a"));
	assert_false(dconfig_glob_match("/a", NULL));
}

/* --- most specific binding ---------------------------------------------- */

static const char specific_config[] =
	"{\"policies\": {\"p0\": {}, \"p1\": {}, \"p2\": {}, \"p3\": {}, \"p4\": {},"
	" \"p5\": {}, \"p6\": {}, \"p7\": {}, \"p8\": {}},\n"
	" \"bindings\": [\n"
	"  {\"cgroup\": \"/agents.slice/*\", \"policy\": \"p0\"},\n"
	"  {\"cgroup\": \"/agents.slice/ci-*\", \"policy\": \"p1\"},\n"
	"  {\"cgroup\": \"/agents.slice/ci-7\", \"policy\": \"p2\"},\n"
	"  {\"cgroup\": \"/agents.slice/**\", \"policy\": \"p3\"},\n"
	"  {\"cgroup\": \"/agents.slice/*-7\", \"policy\": \"p4\"},\n"
	"  {\"cgroup\": \"/k.slice/*/pod*\", \"policy\": \"p5\"},\n"
	"  {\"cgroup\": \"/k.slice/**/pod*\", \"policy\": \"p6\"},\n"
	"  {\"cgroup\": \"/k.slice/x/*\", \"policy\": \"p7\"},\n"
	"  {\"cgroup\": \"/k.slice/*/pod?x\", \"policy\": \"p8\"}\n"
	" ]}";

static const struct {
	const char *path;
	const char *policy; /* NULL: no binding, deny all */
} specific_cases[] = {
	{ "/agents.slice/job", "p0" },      /* only "*" and "**" match; "*" beats "**" */
	{ "/agents.slice/ci-3", "p1" },     /* longer literal prefix */
	{ "/agents.slice/ci-7", "p2" },     /* more literal components */
	{ "/agents.slice/a/b", "p3" },      /* only "**" reaches two deep */
	{ "/agents.slice", "p3" },          /* "**" matches zero components */
	{ "/agents.slice/x-7", "p4" },      /* same prefix as "*", more literal chars */
	{ "/k.slice/b/pod1", "p5" },        /* "*" beats "**" (fewer double stars) */
	{ "/k.slice/b/c/pod1", "p6" },
	{ "/k.slice/x/pod1", "p7" },        /* 2 literal components beat 1 */
	{ "/k.slice", NULL },
	{ "/other.slice/a", NULL },
	{ "/", NULL },
};

static void test_most_specific(void **state)
{
	struct dconfig *c = NULL;
	char err[512] = "";
	size_t i;

	(void)state;
	/* '?' is refused: fix up the last glob to a valid one first */
	assert_int_equal(load(specific_config, &c, err, sizeof(err)), -EINVAL);
	{
		char *text = strdup(specific_config), *q = strstr(text, "pod?x");

		q[3] = 'x';
		c = NULL;
		assert_int_equal(load(text, &c, err, sizeof(err)), 0);
		free(text);
	}
	for (i = 0; i < ARRAY_SIZE(specific_cases); i++) {
		const struct dconfig_binding *b = dconfig_match(c, specific_cases[i].path);
		const char *got = b ? b->policy->name : NULL;

		if ((got == NULL) != (specific_cases[i].policy == NULL) ||
		    (got && strcmp(got, specific_cases[i].policy)))
			fail_msg("case %zu: %s: got %s, want %s", i, specific_cases[i].path,
				 got ? got : "(none)",
				 specific_cases[i].policy ? specific_cases[i].policy : "(none)");
	}
	dconfig_free(c);

	/* ties go to the first binding in the file */
	c = NULL;
	assert_int_equal(load("{\"policies\": {\"first\": {}, \"second\": {}},\n"
			      " \"bindings\": [{\"cgroup\": \"/a/x*\", \"policy\": \"first\"},\n"
			      "              {\"cgroup\": \"/a/x*\", \"policy\": \"second\"}]}",
			      &c, err, sizeof(err)), -EINVAL); /* identical: refused */
	assert_int_equal(load("{\"policies\": {\"first\": {}, \"second\": {}},\n"
			      " \"bindings\": [{\"cgroup\": \"/a/x*y\", \"policy\": \"first\"},\n"
			      "              {\"cgroup\": \"/a/x*z\", \"policy\": \"second\"},\n"
			      "              {\"cgroup\": \"/a/x*\", \"policy\": \"second\"}]}",
			      &c, err, sizeof(err)), 0);
	assert_string_equal(dconfig_match(c, "/a/xy")->policy->name, "first");
	assert_string_equal(dconfig_match(c, "/a/xz")->policy->name, "second");
	dconfig_free(c);
	c = NULL;
	assert_int_equal(load("{\"policies\": {\"first\": {}, \"second\": {}},\n"
			      " \"bindings\": [{\"cgroup\": \"/a/*x\", \"policy\": \"first\"},\n"
			      "              {\"cgroup\": \"/a/x*\", \"policy\": \"second\"}]}",
			      &c, err, sizeof(err)), 0);
	/* "/a/x*" has the longer literal prefix */
	assert_string_equal(dconfig_match(c, "/a/xx")->policy->name, "second");
	dconfig_free(c);
	c = NULL;
	assert_int_equal(load("{\"policies\": {\"first\": {}, \"second\": {}},\n"
			      " \"bindings\": [{\"cgroup\": \"/a/*x*\", \"policy\": \"first\"},\n"
			      "              {\"cgroup\": \"/a/*y*\", \"policy\": \"second\"}]}",
			      &c, err, sizeof(err)), 0);
	assert_string_equal(dconfig_match(c, "/a/xy")->policy->name, "first");
	assert_null(dconfig_match(NULL, "/a/xy"));
	assert_null(dconfig_match(c, NULL));
	dconfig_free(c);
}

/* --- attach points ------------------------------------------------------ */

static const struct {
	const char *globs[6];
	const char *points[6];
} attach_cases[] = {
	{ { "/agents.slice/*" }, { "/agents.slice" } },
	{ { "/kubepods.slice/*/pod*" }, { "/kubepods.slice" } },
	{ { "/a/b/c" }, { "/a/b/c" } },                     /* literal: itself */
	{ { "/a/b/*", "/a/*" }, { "/a" } },                  /* below another: dropped */
	{ { "/a/b/c*", "/a/b/d/*", "/a-b/*" }, { "/a/b", "/a-b" } },
	{ { "/a-b/*", "/a/x/*", "/a/*" }, { "/a", "/a-b" } },
	{ { "/b.slice/**", "/a.slice/*/x/*", "/a.slice/j" }, { "/a.slice", "/b.slice" } },
	{ { "/ab/*", "/a/*" }, { "/a", "/ab" } },            /* "/ab" is not under "/a" */
};

static void test_attach_points(void **state)
{
	size_t i, j, n;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(attach_cases); i++) {
		char text[2048];
		size_t o = 0, want = 0;
		struct dconfig *c = NULL;
		char err[512] = "";
		const char *const *ap;

		o += (size_t)snprintf(text + o, sizeof(text) - o,
				      "{\"policies\": {\"p\": {}}, \"bindings\": [");
		for (j = 0; attach_cases[i].globs[j]; j++)
			o += (size_t)snprintf(text + o, sizeof(text) - o,
					      "%s{\"cgroup\": \"%s\", \"policy\": \"p\"}",
					      j ? "," : "", attach_cases[i].globs[j]);
		snprintf(text + o, sizeof(text) - o, "]}");
		if (load(text, &c, err, sizeof(err)))
			fail_msg("case %zu: %s", i, err);
		ap = dconfig_attach_points(c, &n);
		while (attach_cases[i].points[want])
			want++;
		if (n != want)
			fail_msg("case %zu: %zu attach points, want %zu", i, n, want);
		for (j = 0; j < n; j++)
			if (strcmp(ap[j], attach_cases[i].points[j]))
				fail_msg("case %zu: point %zu is %s, want %s", i, j, ap[j],
					 attach_cases[i].points[j]);
		dconfig_free(c);
	}
	assert_null(dconfig_attach_points(NULL, &n));
	assert_int_equal(n, 0);
}

/* Databases opened at load; every policy points at them. */
static void test_geoip_config(void **state)
{
	static const char text[] =
		"{\"geoip\": {\"country\": \"tests/data/geo/e2e-country.mmdb\",\n"
		"            \"asn\": \"tests/data/geo/e2e-asn.mmdb\"},\n"
		" \"policies\": {\"g\": {\"deny_countries\": [\"kp\"],\n"
		"   \"allow\": [\"a.test\", {\"rule\": \"*.a.test\", \"asn\": [64497]}]},\n"
		"   \"plain\": {\"allow\": [\"a.test\"]}},\n"
		" \"bindings\": [{\"cgroup\": \"/x/*\", \"policy\": \"g\"},\n"
		"              {\"cgroup\": \"/y/*\", \"policy\": \"plain\"}]}\n";
	struct dconfig *c = NULL;
	const struct dconfig_policy *g, *plain;
	struct geo_result r;
	struct egr_addr a;
	char err[512] = "";

	(void)state;
	if (load(text, &c, err, sizeof(err)))
		fail_msg("refused: %s", err);
	assert_string_equal(c->geoip_country, "./tests/data/geo/e2e-country.mmdb");
	assert_string_equal(c->geoip_asn, "./tests/data/geo/e2e-asn.mmdb");
	assert_non_null(c->geo);
	g = dconfig_policy(c, "g");
	plain = dconfig_policy(c, "plain");
	assert_ptr_equal(g->policy->geo, c->geo);
	assert_ptr_equal(plain->policy->geo, c->geo);
	assert_string_equal(g->policy->deny_countries[0], "KP");
	assert_int_equal(g->policy->allow[1].n_asn, 1);
	assert_int_equal(addr_parse("192.0.2.66", &a), 0);
	assert_int_equal(geo_lookup(c->geo, &a, &r), 0);
	assert_string_equal(r.country, "KP");
	assert_int_equal(r.asn, 64499);
	dconfig_free(c);

	/* without a geoip block: no handle, policies without geo fields load */
	c = NULL;
	assert_int_equal(load("{\"policies\": {\"p\": {\"allow\": [\"a.test\"]}}}", &c, err,
			      sizeof(err)), 0);
	assert_null(c->geo);
	assert_null(dconfig_policy(c, "p")->policy->geo);
	dconfig_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_example_config, example_copy_in,
						example_copy_out),
		cmocka_unit_test(test_defaults_and_variants),
		cmocka_unit_test(test_kernel_relay_after),
		cmocka_unit_test(test_warnings),
		cmocka_unit_test(test_bad_configs),
		cmocka_unit_test(test_policy_count_limit),
		cmocka_unit_test(test_intercept_ca),
		cmocka_unit_test(test_referenced_files),
		cmocka_unit_test(test_load_file_errors),
		cmocka_unit_test(test_nothing_half_applied),
		cmocka_unit_test(test_glob_match),
		cmocka_unit_test(test_most_specific),
		cmocka_unit_test(test_attach_points),
		cmocka_unit_test(test_geoip_config),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
