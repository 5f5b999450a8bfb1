// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * egressd run: one command in its own enforced cgroup.
 *
 *   parse + validate everything (nothing created yet)
 *   -> find cgroup2 (mount privately if invisible) -> clean up killed runs
 *   -> bind the proxy (port known, connections queue)
 *   -> load the programs with that port -> fill policy maps
 *   -> create egressd.run.<pid> -> attach the programs to it only
 *   -> clone3(CLONE_INTO_CGROUP): CMD never runs an instruction outside;
 *      the child leaves the shell's session, drops to the agent's user,
 *      enters a Landlock domain (landlock.h) and execs egressd afresh as
 *      the command's monitor (runpty.h), which runs CMD
 *   -> start the interception engine (if any host is intercepted), proxy
 *      workers and the kernel-event reader
 *   -> wait for CMD, forwarding signals
 *   -> kill what CMD left in the cgroup -> stop proxy -> rmdir, the
 *      programs left attached (run_teardown says why)
 *
 * egressd has threads by the time it clones (the descriptor broker's, the
 * kernel relay's loader): the child is a copy of a threaded process
 * without glibc's fork handlers, so it makes only system calls and
 * async-signal-safe calls. Its environment, groups and the monitor's argv
 * are made before the clone (run_child_prepare, runpty_monitor_argv).
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/close_range.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <linux/sched.h>
#include <pthread.h>
#include <pwd.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "addr.h"
#include "audit.h"
#include "bpfload.h"
#include "ca.h"
#include "cgroup.h"
#include "config.h"
#include "dnsproxy.h"
#include "geo.h"
#include "intercept.h"
#include "kevent.h"
#include "kfold.h"
#include "landlock.h"
#include "log.h"
#include "policy.h"
#include "proxy.h"
#include "reqrule.h"
#include "runpty.h"
#include "run.h"

#define RUN_MAX_RULES 4096
#define RUN_MAX_CRED_ENV 64

/* Where every TLS client the agent may run looks for its CA bundle. */
static const char *const run_ca_env[] = {
	"SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE",
	"CURL_CA_BUNDLE", "GIT_SSL_CAINFO",
};

struct run_opts {
	const char *policy_file;
	const char *allow[RUN_MAX_RULES];
	size_t n_allow;
	const char *deny[RUN_MAX_RULES];
	size_t n_deny;
	bool with_default;
	const char *user;
	bool allow_root_agent;
	bool quiet;
	const char *intercept[RUN_MAX_RULES];
	size_t n_intercept;
	const char *inject[RUN_MAX_RULES];
	size_t n_inject;
	const char *gateway[RUN_MAX_RULES];
	size_t n_gateway;
	const char *ca_dir;
	const char *upstream_ca;
	const char *geoip_country;
	const char *geoip_asn;
	const char *inbound; /* --inbound: "local", "any", NULL: the policy's */
	char **cmd;
};

/* What the child's environment gets, prepared before the clone. */
struct run_child_env {
	const char *bundle;  /* CA bundle for run_ca_env, NULL: none */
	const char *unset[RUN_MAX_CRED_ENV]; /* credential variables */
	size_t n_unset;
	struct rlimit nofile; /* the invoker's, not egressd's raised one */
	bool has_nofile;
	int landlock_fd; /* landlock.h's scoping, -1: Landlock unavailable */
	const struct runpty *pty; /* the command's session and terminal */
	/* Files of this run the command's user should not be able to change
	 * (run_agent_files): checked in the child, with its credentials. */
	struct run_agent_file {
		char path[PATH_MAX];
		const char *what;
	} agent_files[3];
	size_t n_agent_files;
	/* Made before the spawn (run_child_prepare): the child of a
	 * threaded process must not allocate or look up users. */
	char **envp;         /* the command's environment */
	gid_t *groups;       /* its supplementary groups */
	int n_groups;
};

struct run_state {
	struct config cfg;
	struct policy *policy;
	struct geo *geo;
	struct audit *audit;
	struct egr_bpf *bpf;
	struct proxy *proxy;
	char mount[PATH_MAX];
	char parent[PATH_MAX];
	char cgroup[PATH_MAX];
	const char *cgroup_rel; /* path relative to the mount, for records */
	uint64_t cgroup_id;
	int cgroup_fd;
	bool cgroup_created;
	pthread_t events_thread;
	bool events_running;
	volatile sig_atomic_t events_stop;
	uint64_t events_lost; /* reported so far (egr_bpf_events_lost) */
	struct kfold *fold;   /* kernel decisions folded for the log */
	struct dnsproxy *dns;
	/* TLS interception */
	struct ca *ca;
	struct intercept *ic;
	bool ic_started;
	char icdir[PATH_MAX];    /* this run's directory: bundle (+ fresh CA) */
	int icdir_fd;            /* holds its lock (cgroup.h) */
	char bundle[PATH_MAX];
	struct run_child_env child_env;
	struct runpty pty;
};

void run_usage(FILE *out)
{
	fprintf(out,
"Usage: egressd run [OPTIONS] -- CMD [ARG...]\n"
"\n"
"Run CMD in its own cgroup whose network traffic can only go where the\n"
"policy allows: every TCP connection is redirected to egressd's proxy,\n"
"which allows it by TLS SNI / HTTP Host / address; other UDP than DNS,\n"
"raw sockets and loopback services are refused. Every decision is logged.\n"
"CMD cannot ptrace processes outside the run, nor (Linux 6.12+) signal them\n"
"or reach their abstract Unix sockets (Landlock); it never shares your\n"
"shell's terminal: with one on 0/1/2 it gets its own (docs/local.md).\n"
"CMD's cgroup goes above every cgroup CMD's user can write (it could move\n"
"itself into one); if that user can write the hierarchy's root (a cgroup\n"
"namespace delegated to it), egressd refuses to start.\n"
"\n"
"Policy (default: the built-in policy for coding agents, see\n"
"`egressd policy show-default`; any of these replaces it):\n"
"  -a, --allow RULE         allow RULE (repeatable): example.com, *.example.com,\n"
"                           example.com:8443, 192.0.2.0/24, [2001:db8::1]:443\n"
"  -d, --deny RULE          deny RULE (repeatable); deny wins over allow\n"
"  -p, --policy FILE        JSON policy file (docs/policy.md)\n"
"      --with-default       also include the built-in default policy\n"
"      --inbound WHO        who may connect to CMD's listeners and get answers:\n"
"                           local (default: over loopback only) or any (other\n"
"                           hosts too: whoever reaches the listener reads what\n"
"                           CMD writes, past the proxy)\n"
"\n"
"TLS interception (docs/interception.md; the host must also be allowed):\n"
"      --intercept HOST     terminate TLS to HOST (repeatable; *.example.com\n"
"                           for subdomains): every request is checked (Host\n"
"                           must match the SNI) and logged; all methods and\n"
"                           paths allowed unless the policy file has rules\n"
"      --inject 'HOST:HEADER=SOURCE'  set HEADER on requests to HOST (implies\n"
"                           --intercept HOST), replacing what the agent sent;\n"
"                           SOURCE is env:NAME (egressd's environment; under\n"
"                           sudo: sudo --preserve-env=NAME) or file:/path.\n"
"                           NAME is removed from CMD's environment\n"
"      --ca-dir DIR         CA from `egressctl ca init --dir DIR` (default: a\n"
"                           new CA for this run, deleted at exit)\n"
"      --upstream-ca FILE   verify upstream servers against FILE (PEM) instead\n"
"                           of the system store\n"
"      --gateway LISTEN=https://HOST[:PORT]  plain HTTP from CMD to the loopback\n"
"                           address LISTEN (127.0.0.1:8080, [::1]:8080,\n"
"                           localhost:8080) goes to https://HOST (verified\n"
"                           TLS; HOST must be allowed); for SDK base URLs\n"
"                           (ANTHROPIC_BASE_URL=http://127.0.0.1:8080); --inject\n"
"                           HOST:... sets its credential (no CA needed)\n"
"  With --intercept/--inject, CMD gets a CA bundle (system CAs + egressd's\n"
"  CA) in SSL_CERT_FILE, NODE_EXTRA_CA_CERTS, REQUESTS_CA_BUNDLE,\n"
"  CURL_CA_BUNDLE, GIT_SSL_CAINFO.\n"
"\n"
"The agent:\n"
"  -u, --user NAME          run CMD as NAME (default: the sudo caller)\n"
"      --allow-root-agent   allow CMD to run as root (root inside the cgroup\n"
"                           can leave it; do not use for untrusted agents)\n"
"\n"
"GeoIP (docs/geoip.md; MaxMind DB files, checked at start):\n"
"      --geoip-country FILE country database: audit records get the upstream's\n"
"                           country; needed by a policy's deny_countries\n"
"      --geoip-asn FILE     ASN database: records get asn and as_org; needed\n"
"                           by allow rules with an \"asn\" list\n"
"\n"
"Logging:\n"
"  -l, --log FILE           audit log: one record per connection (root's file;\n"
"                           not through a symlink root does not own)\n"
"      --log-format FMT     text (default) or json\n"
"  -q, --quiet              no denial lines or summary on stderr\n"
"  -v, --verbose            more diagnostics (twice: debug)\n"
"\n"
"Proxy:\n"
"      --workers N          proxy threads (default: one per core), each with its\n"
"                           own descriptor table: the open-files limit is per worker\n"
"      --dns-server ADDR[:PORT]  trusted upstream resolver for the proxy and the\n"
"                           DNS proxy (default: egressd's /etc/resolv.conf)\n"
"      --peek-timeout MS    wait for ClientHello / HTTP head (default 10000)\n"
"      --connect-timeout MS upstream connect timeout per address (default 10000)\n"
"      --idle-timeout MS    close relays idle this long (default 600000)\n"
"      --kernel-relay-after BYTES  hand a connection that has relayed this much\n"
"                           to the kernel relay (sockmap); 0 = never\n"
"                           (default 0: see docs/BENCHMARKS.md); not plain\n"
"                           HTTP, whose requests the proxy checks one by one\n"
"      --max-conns N        concurrent connections of the cgroup (default 4096);\n"
"                           the kernel also caps its open sockets, TCP and\n"
"                           UDP that sent DNS, at N each\n"
"\n"
"Exit status: CMD's status; 128+N if CMD was killed by signal N; 126 if\n"
"CMD could not be executed, 127 if it was not found; 2 if egressd itself\n"
"could not start (the message says why).\n");
}

enum {
	OPT_WITH_DEFAULT = 256,
	OPT_ALLOW_ROOT,
	OPT_LOG_FORMAT,
	OPT_WORKERS,
	OPT_DNS_SERVER,
	OPT_PEEK_TIMEOUT,
	OPT_CONNECT_TIMEOUT,
	OPT_IDLE_TIMEOUT,
	OPT_KERNEL_RELAY_AFTER,
	OPT_MAX_CONNS,
	OPT_INTERCEPT,
	OPT_INJECT,
	OPT_CA_DIR,
	OPT_UPSTREAM_CA,
	OPT_GATEWAY,
	OPT_GEOIP_COUNTRY,
	OPT_GEOIP_ASN,
	OPT_INBOUND,
};

static int parse_uint(const char *opt, const char *s, unsigned min, unsigned max, unsigned *out)
{
	unsigned long v;
	char *end;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || s[0] == '-' || v < min || v > max) {
		fprintf(stderr, "egressd: %s: '%s' is not a number from %u to %u\n",
			opt, s, min, max);
		return -EINVAL;
	}
	*out = (unsigned)v;
	return 0;
}

static int run_parse(int argc, char **argv, struct run_opts *o, struct config *cfg)
{
	static const struct option longopts[] = {
		{ "allow", required_argument, NULL, 'a' },
		{ "deny", required_argument, NULL, 'd' },
		{ "policy", required_argument, NULL, 'p' },
		{ "with-default", no_argument, NULL, OPT_WITH_DEFAULT },
		{ "inbound", required_argument, NULL, OPT_INBOUND },
		{ "user", required_argument, NULL, 'u' },
		{ "allow-root-agent", no_argument, NULL, OPT_ALLOW_ROOT },
		{ "log", required_argument, NULL, 'l' },
		{ "log-format", required_argument, NULL, OPT_LOG_FORMAT },
		{ "quiet", no_argument, NULL, 'q' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "workers", required_argument, NULL, OPT_WORKERS },
		{ "dns-server", required_argument, NULL, OPT_DNS_SERVER },
		{ "peek-timeout", required_argument, NULL, OPT_PEEK_TIMEOUT },
		{ "connect-timeout", required_argument, NULL, OPT_CONNECT_TIMEOUT },
		{ "idle-timeout", required_argument, NULL, OPT_IDLE_TIMEOUT },
		{ "kernel-relay-after", required_argument, NULL, OPT_KERNEL_RELAY_AFTER },
		{ "max-conns", required_argument, NULL, OPT_MAX_CONNS },
		{ "intercept", required_argument, NULL, OPT_INTERCEPT },
		{ "inject", required_argument, NULL, OPT_INJECT },
		{ "ca-dir", required_argument, NULL, OPT_CA_DIR },
		{ "upstream-ca", required_argument, NULL, OPT_UPSTREAM_CA },
		{ "gateway", required_argument, NULL, OPT_GATEWAY },
		{ "geoip-country", required_argument, NULL, OPT_GEOIP_COUNTRY },
		{ "geoip-asn", required_argument, NULL, OPT_GEOIP_ASN },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	opterr = 0;
	optind = 1;
	/* '+': stop at the first non-option, CMD's options are CMD's */
	while ((c = getopt_long(argc, argv, "+:a:d:p:u:l:qvh", longopts, NULL)) != -1) {
		switch (c) {
		case 'a':
		case 'd':
			if ((c == 'a' ? o->n_allow : o->n_deny) >= RUN_MAX_RULES) {
				fprintf(stderr, "egressd: too many --%s rules (max %d)\n",
					c == 'a' ? "allow" : "deny", RUN_MAX_RULES);
				return -EINVAL;
			}
			if (c == 'a')
				o->allow[o->n_allow++] = optarg;
			else
				o->deny[o->n_deny++] = optarg;
			break;
		case 'p':
			if (o->policy_file) {
				fprintf(stderr, "egressd: --policy given twice\n");
				return -EINVAL;
			}
			o->policy_file = optarg;
			break;
		case OPT_WITH_DEFAULT:
			o->with_default = true;
			break;
		case OPT_INBOUND:
			if (strcmp(optarg, "local") && strcmp(optarg, "any")) {
				fprintf(stderr, "egressd: --inbound: '%s': must be local or any\n",
					optarg);
				return -EINVAL;
			}
			o->inbound = optarg;
			break;
		case 'u':
			o->user = optarg;
			break;
		case OPT_ALLOW_ROOT:
			o->allow_root_agent = true;
			break;
		case 'l':
			cfg->audit.path = optarg;
			break;
		case OPT_LOG_FORMAT:
			if (!strcmp(optarg, "text")) {
				cfg->audit.format = AUDIT_TEXT;
			} else if (!strcmp(optarg, "json")) {
				cfg->audit.format = AUDIT_JSON;
			} else {
				fprintf(stderr, "egressd: --log-format: '%s' is not text or json\n", optarg);
				return -EINVAL;
			}
			break;
		case 'q':
			o->quiet = true;
			cfg->audit.denials_to_stderr = false;
			break;
		case 'v':
			cfg->verbose++;
			break;
		case OPT_WORKERS:
			if (parse_uint("--workers", optarg, 1, 256, &cfg->workers))
				return -EINVAL;
			break;
		case OPT_DNS_SERVER:
			cfg->dns_servers = optarg;
			break;
		case OPT_PEEK_TIMEOUT:
			if (parse_uint("--peek-timeout", optarg, 1, 3600000, &cfg->peek_timeout_ms))
				return -EINVAL;
			break;
		case OPT_CONNECT_TIMEOUT:
			if (parse_uint("--connect-timeout", optarg, 1, 3600000, &cfg->connect_timeout_ms))
				return -EINVAL;
			break;
		case OPT_IDLE_TIMEOUT:
			if (parse_uint("--idle-timeout", optarg, 1, 86400000, &cfg->idle_timeout_ms))
				return -EINVAL;
			break;
		case OPT_KERNEL_RELAY_AFTER:
			if (parse_uint("--kernel-relay-after", optarg, 0, 1073741824,
				       &cfg->kernel_relay_after))
				return -EINVAL;
			break;
		case OPT_MAX_CONNS:
			if (parse_uint("--max-conns", optarg, 1, 1000000, &cfg->max_conns_per_cgroup))
				return -EINVAL;
			break;
		case OPT_INTERCEPT:
		case OPT_INJECT:
			if ((c == OPT_INTERCEPT ? o->n_intercept : o->n_inject) >= RUN_MAX_RULES) {
				fprintf(stderr, "egressd: too many --%s options (max %d)\n",
					c == OPT_INTERCEPT ? "intercept" : "inject", RUN_MAX_RULES);
				return -EINVAL;
			}
			if (c == OPT_INTERCEPT)
				o->intercept[o->n_intercept++] = optarg;
			else
				o->inject[o->n_inject++] = optarg;
			break;
		case OPT_CA_DIR:
			o->ca_dir = optarg;
			break;
		case OPT_UPSTREAM_CA:
			o->upstream_ca = optarg;
			break;
		case OPT_GATEWAY:
			if (o->n_gateway >= RUN_MAX_RULES) {
				fprintf(stderr, "egressd: too many --gateway options (max %d)\n",
					RUN_MAX_RULES);
				return -EINVAL;
			}
			o->gateway[o->n_gateway++] = optarg;
			break;
		case OPT_GEOIP_COUNTRY:
			o->geoip_country = optarg;
			break;
		case OPT_GEOIP_ASN:
			o->geoip_asn = optarg;
			break;
		case 'h':
			run_usage(stdout);
			exit(0);
		case ':':
			fprintf(stderr, "egressd: option '%s' needs a value (see egressd run --help)\n",
				argv[optind - 1]);
			return -EINVAL;
		default:
			fprintf(stderr, "egressd: unknown option '%s' (see egressd run --help)\n",
				argv[optind - 1]);
			return -EINVAL;
		}
	}
	if (optind < argc && !strcmp(argv[optind], "--"))
		optind++;
	if (optind >= argc) {
		fprintf(stderr, "egressd: no command given: egressd run [OPTIONS] -- CMD [ARG...]\n");
		return -EINVAL;
	}
	o->cmd = &argv[optind];
	return 0;
}

/* HEADER from SOURCE on every request of h (for HOST), once. */
static int run_add_cred(struct reqrule_host *h, const char *host, const char *header,
			const char *source)
{
	for (size_t i = 0; i < h->n_creds; i++) {
		if (!strcasecmp(h->creds[i].header, header) && !h->creds[i].path_prefix[0]) {
			fprintf(stderr, "egressd: --inject %s:%s: %s already gets a %s "
				"credential\n", host, header, host, header);
			return -EINVAL;
		}
	}
	if (reqrule_header_reserved(header)) {
		fprintf(stderr, "egressd: --inject %s:%s: a framing or hop-by-hop header "
			"cannot be a credential\n", host, header);
		return -EINVAL;
	}
	if (reqrule_host_add_cred(h, header, header, "", source)) {
		fprintf(stderr, "egressd: --inject %s:%s: invalid header name or source\n",
			host, header);
		return -EINVAL;
	}
	return 0;
}

/*
 * An entry made for --inject on a host that a policy file's wildcard entry
 * intercepts starts with that entry's credentials (policy_add_intercept):
 * one for the same header is the wildcard's, which --inject for this one
 * host replaces, as it did before the entry inherited them. A credential
 * the entry itself got (the file's exact entry, another --inject) stays a
 * conflict (run_add_cred).
 */
static void run_drop_inherited_cred(const struct policy *p, struct reqrule_host *h,
				    const char *header)
{
	for (size_t i = 0; i < h->n_creds; i++) {
		const struct reqrule_cred *c = &h->creds[i];
		bool inherited = false;

		if (strcasecmp(c->header, header) || c->path_prefix[0])
			continue;
		for (size_t k = 0; k < p->n_intercept && !inherited; k++) {
			const struct reqrule_host *w = &p->intercept[k].rules;

			if (w == h || !p->intercept[k].wildcard)
				continue;
			for (size_t j = 0; j < w->n_creds && !inherited; j++)
				inherited = !strcmp(w->creds[j].name, c->name) &&
					    !strcmp(w->creds[j].header, c->header) &&
					    !strcmp(w->creds[j].source, c->source) &&
					    !strcmp(w->creds[j].path_prefix, c->path_prefix);
		}
		if (!inherited)
			continue;
		memmove(&h->creds[i], &h->creds[i + 1], (h->n_creds - i - 1) * sizeof(*c));
		h->n_creds--;
		i--;
	}
}

/*
 * --inject 'HOST:HEADER=SOURCE' into the policy. HOST is intercepted,
 * unless it is the upstream of a gateway: then the gateway gets the
 * credential, and HOST is intercepted as well only if --intercept or the
 * policy file asked for it (a gateway needs no CA in the agent).
 */
static int run_add_inject(struct policy *p, const char *arg)
{
	char host[300], header[REQRULE_HEADER_MAX], err[512];
	const char *colon = strchr(arg, ':'), *eq = colon ? strchr(colon, '=') : NULL;
	const char *source = eq ? eq + 1 : NULL;
	struct reqrule_host *h;
	bool gateway = false, intercepted = false;
	size_t hl, i;

	if (!colon || !eq || colon == arg || eq == colon + 1 ||
	    (size_t)(colon - arg) >= sizeof(host) || (size_t)(eq - colon - 1) >= sizeof(header)) {
		fprintf(stderr, "egressd: --inject: expected HOST:HEADER=SOURCE, e.g. "
			"'api.example.com:x-api-key=env:API_KEY'\n");
		return -EINVAL;
	}
	/* Never echo SOURCE when it is not a source: it may be the secret. */
	if (strncmp(source, "env:", 4) && strncmp(source, "file:/", 6)) {
		fprintf(stderr, "egressd: --inject %.*s: the value must be env:NAME or "
			"file:/path, never the secret itself\n", (int)(eq - arg), arg);
		return -EINVAL;
	}
	hl = (size_t)(colon - arg);
	memcpy(host, arg, hl);
	host[hl] = '\0';
	memcpy(header, colon + 1, (size_t)(eq - colon - 1));
	header[eq - colon - 1] = '\0';
	for (i = 0; i < p->n_gateways; i++) {
		if (strcasecmp(p->gateways[i].host, host))
			continue;
		gateway = true;
		if (run_add_cred(&p->gateways[i].rules, host, header, source))
			return -EINVAL;
	}
	for (i = 0; i < p->n_intercept; i++)
		if (!strcasecmp(p->intercept[i].pattern, host))
			intercepted = true;
	if (gateway && !intercepted)
		return 0;
	if (policy_add_intercept(p, host, "--inject", &h, err, sizeof(err))) {
		fprintf(stderr, "egressd: --inject '%s': %s\n", host, err);
		return -EINVAL;
	}
	run_drop_inherited_cred(p, h, header);
	return run_add_cred(h, host, header, source);
}

/* --gateway LISTEN=https://HOST[:PORT] */
static int run_add_gateway(struct policy *p, const char *arg)
{
	char listen[128], err[512];
	const char *eq = strchr(arg, '=');

	if (!eq || eq == arg || (size_t)(eq - arg) >= sizeof(listen)) {
		fprintf(stderr, "egressd: --gateway: expected LISTEN=https://HOST[:PORT], e.g. "
			"127.0.0.1:8080=https://api.example.com\n");
		return -EINVAL;
	}
	memcpy(listen, arg, (size_t)(eq - arg));
	listen[eq - arg] = '\0';
	if (policy_add_gateway(p, listen, eq + 1, "--gateway", NULL, err, sizeof(err))) {
		fprintf(stderr, "egressd: --gateway '%s': %s\n", arg, err);
		return -EINVAL;
	}
	return 0;
}

/* GeoIP databases (docs/geoip.md): a named file must be usable, and a
 * policy that needs one must have it; nothing starts otherwise. */
static int run_open_geo(struct run_state *s, const struct run_opts *o)
{
	char err[512], desc[256];
	int e;

	if (policy_check_geo(s->policy, o->geoip_country, o->geoip_asn,
			     "give --geoip-country FILE", "give --geoip-asn FILE",
			     err, sizeof(err))) {
		fprintf(stderr, "egressd: %s\n", err);
		return -EINVAL;
	}
	if (!o->geoip_country && !o->geoip_asn)
		return 0;
	e = geo_open(o->geoip_country, o->geoip_asn, &s->geo, err, sizeof(err));
	if (e) {
		fprintf(stderr, "egressd: --geoip-%s: %s\n",
			!strncmp(err, "ASN", 3) ? "asn" : "country", err);
		return e;
	}
	s->policy->geo = s->geo;
	geo_describe(s->geo, desc, sizeof(desc));
	log_info("GeoIP: %s", desc);
	return 0;
}

static struct policy *run_build_policy(const struct run_opts *o)
{
	char err[1024];
	struct policy *p;
	size_t i;

	if (!o->policy_file && !o->n_allow && !o->n_deny) {
		p = policy_default();
		if (!p) {
			fprintf(stderr, "egressd: out of memory\n");
			return NULL;
		}
		goto intercept;
	}
	p = o->with_default ? policy_default() : policy_new(o->policy_file ? o->policy_file : "command-line");
	if (!p) {
		fprintf(stderr, "egressd: out of memory\n");
		return NULL;
	}
	if (o->policy_file && policy_load_file(p, o->policy_file, err, sizeof(err))) {
		fprintf(stderr, "egressd: %s\n", err);
		goto fail;
	}
	for (i = 0; i < o->n_allow; i++) {
		if (policy_add_rule(p, false, o->allow[i], "--allow", err, sizeof(err))) {
			fprintf(stderr, "egressd: --allow '%s': %s\n", o->allow[i], err);
			goto fail;
		}
	}
	for (i = 0; i < o->n_deny; i++) {
		if (policy_add_rule(p, true, o->deny[i], "--deny", err, sizeof(err))) {
			fprintf(stderr, "egressd: --deny '%s': %s\n", o->deny[i], err);
			goto fail;
		}
	}
intercept:
	if (o->inbound)
		p->inbound_any = !strcmp(o->inbound, "any");
	for (i = 0; i < o->n_gateway; i++)
		if (run_add_gateway(p, o->gateway[i]))
			goto fail;
	for (i = 0; i < o->n_intercept; i++) {
		if (policy_add_intercept(p, o->intercept[i], "--intercept", NULL, err,
					 sizeof(err))) {
			fprintf(stderr, "egressd: --intercept '%s': %s\n", o->intercept[i], err);
			goto fail;
		}
	}
	for (i = 0; i < o->n_inject; i++)
		if (run_add_inject(p, o->inject[i]))
			goto fail;
	if (policy_check_intercept(p, err, sizeof(err))) {
		fprintf(stderr, "egressd: intercept %s\n", err);
		goto fail;
	}
	if (policy_check_gateways(p, err, sizeof(err))) {
		fprintf(stderr, "egressd: gateway %s\n", err);
		goto fail;
	}
	return p;
fail:
	policy_free(p);
	return NULL;
}

struct run_user {
	uid_t uid;
	gid_t gid;
	char name[256];
	char home[PATH_MAX];
	bool is_root;
};

static int run_resolve_user(const struct run_opts *o, struct run_user *u)
{
	const char *sudo_uid = getenv("SUDO_UID");
	struct passwd *pw = NULL;

	if (o->user) {
		char *end;
		unsigned long id;

		pw = getpwnam(o->user);
		if (!pw) {
			errno = 0;
			id = strtoul(o->user, &end, 10);
			if (!errno && *end == '\0' && end != o->user)
				pw = getpwuid((uid_t)id);
		}
		if (!pw) {
			fprintf(stderr, "egressd: --user '%s': no such user\n", o->user);
			return -ENOENT;
		}
	} else if (sudo_uid && geteuid() == 0) {
		char *end;
		unsigned long id;

		errno = 0;
		id = strtoul(sudo_uid, &end, 10);
		if (errno || *end || end == sudo_uid) {
			fprintf(stderr, "egressd: SUDO_UID '%s' is not a number\n", sudo_uid);
			return -EINVAL;
		}
		pw = getpwuid((uid_t)id);
		if (!pw) {
			fprintf(stderr, "egressd: SUDO_UID %lu has no passwd entry; use --user NAME\n", id);
			return -ENOENT;
		}
	}
	if (pw) {
		u->uid = pw->pw_uid;
		u->gid = pw->pw_gid;
		snprintf(u->name, sizeof(u->name), "%s", pw->pw_name);
		snprintf(u->home, sizeof(u->home), "%s", pw->pw_dir);
	} else {
		u->uid = geteuid();
		u->gid = getegid();
		u->name[0] = '\0';
	}
	u->is_root = u->uid == 0;
	if (u->is_root && !o->allow_root_agent) {
		fprintf(stderr,
			"egressd: refusing to run the command as root: root inside the cgroup "
			"can detach the programs or move itself out of the cgroup. Run egressd "
			"through sudo (the command runs as you), pass --user NAME, or, for a "
			"trusted command only, --allow-root-agent\n");
		return -EPERM;
	}
	return 0;
}

/* The user's supplementary groups, as the command gets them (getgrouplist:
 * the child cannot look users up). */
static int run_user_groups(const struct run_user *u, gid_t **groups, int *n_groups)
{
	int ng = 32;

	for (;;) {
		int want = ng;
		gid_t *g = realloc(*groups, (size_t)ng * sizeof(*g));

		if (!g)
			return -ENOMEM;
		*groups = g;
		if (getgrouplist(u->name, u->gid, *groups, &want) >= 0) {
			*n_groups = want;
			return 0;
		}
		if (want <= ng || want > 65536)
			return -E2BIG;
		ng = want;
	}
}

/*
 * Where the run's cgroup goes. Started from a cgroup delegated to a user (a
 * desktop terminal under user@UID.service), a cgroup below it would let an
 * agent of that user write itself back out; so would any cgroup above it
 * that the user can write (cgroup_run_parent): the run's cgroup goes below
 * every one the command's user can write. s->parent: the cgroup egressd
 * runs in; 0 or RUN_EXIT_USAGE (said why).
 */
static int run_place_cgroup(struct run_state *s, const struct run_user *u)
{
	struct cgroup_user cu = { .uid = u->uid, .gid = u->gid, .root = u->is_root };
	struct run_child_env *env = &s->child_env;
	char was[PATH_MAX];
	int e;

	/* the groups the command is given (run_child_prepare): the ones
	 * judged here, looked up once */
	if (!u->is_root && u->name[0]) {
		e = run_user_groups(u, &env->groups, &env->n_groups);
		if (e) {
			fprintf(stderr, "egressd: cannot look up the groups of %s: %s\n", u->name,
				strerror(-e));
			return RUN_EXIT_USAGE;
		}
	}
	cu.groups = env->groups;
	cu.n_groups = env->n_groups;
	snprintf(was, sizeof(was), "%s", s->parent);
	e = cgroup_run_parent(s->mount, s->parent, &cu);
	if (e == -EACCES) {
		fprintf(stderr, "egressd: the command's user (uid %u) can write %s/cgroup.procs, "
			"the root of the cgroup hierarchy egressd sees (a cgroup namespace whose "
			"root is delegated to that user?): the command could move itself out of "
			"any cgroup egressd makes there, unenforced. Start egressd outside that "
			"cgroup namespace, or from a hierarchy whose root only root can write\n",
			(unsigned)u->uid, s->mount);
		return RUN_EXIT_USAGE;
	}
	if (e) {
		fprintf(stderr, "egressd: cannot place the run's cgroup below %s: %s\n", was,
			strerror(-e));
		return RUN_EXIT_USAGE;
	}
	if (strcmp(was, s->parent))
		log_info("the command's user can write a cgroup above %s: the run's cgroup "
			 "goes below %s", was, s->parent);
	return 0;
}

static int run_join(char *out, size_t len, const char *mnt, const char *path)
{
	int n = snprintf(out, len, "%s%s", mnt, strcmp(path, "/") ? path : "");

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static const struct policy *run_policy_for(void *ctx, const struct egr_origin *o)
{
	struct run_state *s = ctx;

	return o->policy_id == 0 ? s->policy : NULL;
}

static const char *run_cgroup_name(void *ctx, uint64_t id, char *buf, size_t len)
{
	struct run_state *s = ctx;

	if (id != s->cgroup_id)
		return NULL;
	snprintf(buf, len, "%s", s->cgroup_rel);
	return buf;
}

/* A record for kernel decisions (kfold.h: one, or a fold of them). */
static void run_emit_event(void *ctx, const struct egr_event *e, const struct kfold_span *sp)
{
	struct run_state *s = ctx;
	struct audit_record r;
	char cgbuf[PATH_MAX], detail[256];

	kevent_to_record(e, &r);
	kevent_span(&r, sp, detail, sizeof(detail));
	r.cgroup = run_cgroup_name(s, r.cgroup_id, cgbuf, sizeof(cgbuf));
	r.policy = s->policy->name;
	audit_write(s->audit, &r);
}

static void run_on_event(void *ctx, const struct egr_event *e)
{
	struct run_state *s = ctx;

	kfold_event(s->fold, e);
}

/* The audit log says it too (the file CI keeps): one record, count N, no
 * destination or process (the ring had none to give). */
static void run_record_lost(struct run_state *s, uint64_t n)
{
	struct audit_record r;

	memset(&r, 0, sizeof(r));
	clock_gettime(CLOCK_REALTIME, &r.start);
	r.end = r.start;
	r.cgroup = s->cgroup_rel;
	r.cgroup_id = s->cgroup_id;
	r.verdict = s->policy->mode == POLICY_AUDIT ? EGR_VERDICT_AUDIT : EGR_VERDICT_DENY;
	r.reason = EGR_REASON_NONE;
	r.policy = s->policy->name;
	r.origin = "kernel";
	r.count = n;
	r.detail = "kernel decisions the event ring had no room for: each enforced, none itemized";
	r.quiet = true; /* stderr has its own line */
	audit_write(s->audit, &r);
}

/* Kernel decisions the ring had no room for were enforced, but are on no
 * record: say how many, as they are found (and the total at the end). */
static void run_report_events_lost(struct run_state *s)
{
	uint64_t lost;

	if (egr_bpf_events_lost(s->bpf, &lost) || lost <= s->events_lost)
		return;
	log_warn("%llu kernel decision%s not logged: the event ring was full (each still "
		 "held; the command made them faster than egressd could record them)",
		 (unsigned long long)(lost - s->events_lost), lost - s->events_lost == 1 ? "" : "s");
	run_record_lost(s, lost - s->events_lost);
	s->events_lost = lost;
}

static void *run_events_thread(void *arg)
{
	struct run_state *s = arg;
	unsigned ticks = 0;

	while (!s->events_stop) {
		egr_bpf_poll(s->bpf, 100);
		kfold_tick(s->fold, kfold_now_ns(), false);
		++ticks;
		if (ticks % 10 == 0)
			run_report_events_lost(s);
		/* Hand-offs of clients that closed before we accepted. */
		if (ticks % 20 == 0)
			egr_bpf_sweep_conns(s->bpf, 5000000000ull);
	}
	egr_bpf_poll(s->bpf, 0); /* what arrived while stopping */
	kfold_tick(s->fold, kfold_now_ns(), true);
	run_report_events_lost(s);
	return NULL;
}

/* Who sent a DNS datagram: the sender's socket cookie (sock_diag), then
 * the origin the sendmsg/connect hook recorded under it. */
static int run_origin_for_udp(void *ctx, const struct sockaddr *peer, socklen_t peer_len,
			      struct egr_origin *o)
{
	struct run_state *s = ctx;

	(void)peer_len;
	return egr_bpf_udp_origin_from(s->bpf, dnsproxy_port(s->dns), peer, o);
}

/* --- TLS interception ---------------------------------------------------- */

/*
 * Each credential's source must give a value now, not at the agent's first
 * request; and every env: variable is noted, to be removed from CMD's
 * environment (the agent must not see what egressd injects for it).
 */
static int run_check_credentials(struct run_state *s)
{
	char *val = malloc(REQRULE_VALUE_MAX), err[512];
	const struct policy *p = s->policy;
	size_t i, j, k, len;
	int ret = 0;

	if (!val) {
		fprintf(stderr, "egressd: out of memory\n");
		return -ENOMEM;
	}
	for (i = 0; i < p->n_intercept + p->n_gateways && !ret; i++) {
		const struct reqrule_host *h = i < p->n_intercept ? &p->intercept[i].rules :
					       &p->gateways[i - p->n_intercept].rules;
		const char *what = i < p->n_intercept ? p->intercept[i].pattern :
				   p->gateways[i - p->n_intercept].upstream;

		for (j = 0; j < h->n_creds && !ret; j++) {
			const struct reqrule_cred *c = &h->creds[j];
			bool env = !strncmp(c->source, "env:", 4);

			ret = reqrule_cred_resolve(c, val, REQRULE_VALUE_MAX, &len, err,
						   sizeof(err));
			explicit_bzero(val, REQRULE_VALUE_MAX);
			if (ret) {
				if (env && ret == -ENOENT)
					fprintf(stderr, "egressd: %s: %s (under sudo, export it "
						"and pass it with `sudo --preserve-env=%s egressd "
						"...`; not as `sudo %s=...`, which puts it in "
						"sudo's command line, readable by the agent)\n",
						what, err, c->source + 4, c->source + 4);
				else
					fprintf(stderr, "egressd: %s: %s\n", what, err);
				break;
			}
			if (!env)
				continue;
			for (k = 0; k < s->child_env.n_unset; k++)
				if (!strcmp(s->child_env.unset[k], c->source + 4))
					break;
			if (k < s->child_env.n_unset)
				continue;
			if (s->child_env.n_unset == RUN_MAX_CRED_ENV) {
				fprintf(stderr, "egressd: more than %d credential variables\n",
					RUN_MAX_CRED_ENV);
				ret = -E2BIG;
				break;
			}
			s->child_env.unset[s->child_env.n_unset++] = c->source + 4;
		}
	}
	free(val);
	return ret;
}

static int run_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	/* best effort: what is left is reported by the caller */
	if (flag == FTW_DP)
		rmdir(path);
	else
		unlink(path);
	return 0;
}

/*
 * A run killed with SIGKILL leaves its directory behind, and with it the
 * private key of its fresh CA: the next run (or egressd cleanup) removes
 * the directories of runs that are gone: whose lock is free (cgroup.h).
 */
static int run_cleanup_icdirs(void)
{
	static const struct { const char *dir, *prefix; } where[] = {
		{ "/run/egressd", "run." },
		{ "/tmp", "egressd-run." },
	};
	char path[PATH_MAX];
	struct dirent *de;
	int removed = 0;
	size_t i;

	for (i = 0; i < sizeof(where) / sizeof(where[0]); i++) {
		size_t plen = strlen(where[i].prefix);
		DIR *d = opendir(where[i].dir);
		struct stat st;

		if (!d)
			continue;
		while ((de = readdir(d))) {
			char *end;
			long pid;

			if (strncmp(de->d_name, where[i].prefix, plen))
				continue;
			int fd;

			pid = strtol(de->d_name + plen, &end, 10);
			if (*end != '.' || pid <= 0 || pid > INT_MAX)
				continue;
			snprintf(path, sizeof(path), "%s/%s", where[i].dir, de->d_name);
			/* ours only: a root-owned directory, not a link */
			if (lstat(path, &st) || !S_ISDIR(st.st_mode) || st.st_uid != 0)
				continue;
			/* its run holds the lock while it lives (cgroup.h) */
			fd = cgroup_run_claim(path, (int)pid);
			if (fd < 0)
				continue;
			nftw(path, run_rm_entry, 8, FTW_DEPTH | FTW_PHYS);
			if (access(path, F_OK))
				removed++;
			close(fd);
		}
		closedir(d);
	}
	return removed;
}

/*
 * This run's directory, made by root: /run/egressd/run.XXXXXX (or
 * /tmp/egressd-run.XXXXXX if /run/egressd is unusable). Mode 0711: the
 * agent can open the bundle by its name, not list the directory; a fresh
 * CA goes into its ca/ subdirectory (0700, key 0600).
 */
static int run_make_icdir(struct run_state *s)
{
	struct stat st;
	bool tmp = false;
	int tries;

	if ((mkdir("/run/egressd", 0755) && errno != EEXIST) ||
	    lstat("/run/egressd", &st) || !S_ISDIR(st.st_mode) || st.st_uid != 0 ||
	    (st.st_mode & 022))
		tmp = true;
	for (tries = 0; tries < 10; tries++) {
		if (!tmp)
			snprintf(s->icdir, sizeof(s->icdir), "/run/egressd/run.%d.XXXXXX",
				 (int)getpid());
		else
			snprintf(s->icdir, sizeof(s->icdir), "/tmp/egressd-run.%d.XXXXXX",
				 (int)getpid());
		if (!mkdtemp(s->icdir)) {
			int e = -errno;

			if (!tmp) {
				tmp = true;
				continue;
			}
			fprintf(stderr, "egressd: cannot create a directory for the CA bundle: %s\n",
				strerror(-e));
			s->icdir[0] = '\0';
			return e;
		}
		/* Locked while this run lives (cgroup.h): another run's
		 * cleanup that saw it before the lock may have removed it;
		 * then another one. */
		s->icdir_fd = cgroup_lock_dir(s->icdir);
		if (s->icdir_fd >= 0)
			break;
		if (s->icdir_fd != -ENOENT && s->icdir_fd != -ESTALE &&
		    s->icdir_fd != -EWOULDBLOCK) {
			/* not a race with a cleanup (out of descriptors, ...):
			 * the next would fail alike */
			rmdir(s->icdir);
			s->icdir_fd = -1;
			break;
		}
		s->icdir_fd = -1;
	}
	if (s->icdir_fd < 0) {
		fprintf(stderr, "egressd: cannot create and lock a directory for the CA bundle\n");
		s->icdir[0] = '\0';
		return -EBUSY;
	}
	/* 0711 (not readable): the agent can open the bundle by its name,
	 * not list the directory, nor open it to hold its lock */
	if (fchmod(s->icdir_fd, 0711)) {
		int e = -errno;

		fprintf(stderr, "egressd: chmod %s: %s\n", s->icdir, strerror(-e));
		return e;
	}
	return 0;
}

static int run_write_bundle(struct run_state *s)
{
	FILE *f;
	int fd, e;

	snprintf(s->bundle, sizeof(s->bundle), "%s/ca-bundle.crt", s->icdir);
	fd = open(s->bundle, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
	if (fd < 0) {
		e = -errno;
		goto fail;
	}
	/* umask must not take the agent's read permission away */
	if (fchmod(fd, 0644)) {
		e = -errno;
		close(fd);
		goto fail;
	}
	f = fdopen(fd, "w");
	if (!f) {
		e = -errno;
		close(fd);
		goto fail;
	}
	e = ca_write_bundle(s->ca, NULL, f);
	if (fclose(f) && !e)
		e = -EIO;
	if (!e)
		return 0;
fail:
	fprintf(stderr, "egressd: cannot write the CA bundle %s: %s\n", s->bundle,
		strerror(-e));
	return e;
}

/* Everything interception needs before the child exists: no threads. */
static int run_setup_intercept(struct run_state *s, const struct run_opts *o)
{
	struct intercept_params ip = { 0 };
	const char *upstream = o->upstream_ca ? o->upstream_ca : s->policy->upstream_ca;
	char err[1024], cadir[PATH_MAX];
	int e;

	if (!s->policy->n_intercept && !s->policy->n_gateways) {
		if (o->ca_dir || o->upstream_ca)
			log_warn("--ca-dir/--upstream-ca given but no host is intercepted");
		return 0;
	}
	if (upstream && access(upstream, R_OK)) {
		e = -errno;
		fprintf(stderr, "egressd: upstream CA %s: %s\n", upstream, strerror(-e));
		return e;
	}
	e = run_check_credentials(s);
	if (e)
		return e;
	if (!s->policy->n_intercept) {
		/* Gateways only: the agent talks plain HTTP to them, so no
		 * CA is made and none is put in its environment. */
		if (o->ca_dir)
			log_warn("--ca-dir given but no host is intercepted (gateways need no CA)");
		goto engine;
	}
	e = run_make_icdir(s);
	if (e)
		return e;
	if (o->ca_dir) {
		e = ca_load_dir(o->ca_dir, true, &s->ca, err, sizeof(err));
	} else {
		struct ca_init_opts copts = { 0 };

		snprintf(cadir, sizeof(cadir), "%s/ca", s->icdir);
		e = ca_init(cadir, &copts, &s->ca, err, sizeof(err));
	}
	if (e) {
		fprintf(stderr, "egressd: %s\n", err);
		return e;
	}
	e = run_write_bundle(s);
	if (e)
		return e;
	s->child_env.bundle = s->bundle;
engine:
	ip.cfg = &s->cfg;
	ip.audit = s->audit;
	ip.ca = s->ca;
	ip.upstream_ca_file = upstream;
	ip.cgroup_name = run_cgroup_name;
	ip.ctx = s;
	e = intercept_create(&s->ic, &ip);
	if (e) {
		fprintf(stderr, "egressd: cannot start TLS interception: %s\n", strerror(-e));
		return e;
	}
	proxy_set_intercept(s->proxy, s->ic);
	if (s->policy->n_intercept)
		log_info("intercepting %zu host pattern(s); CA bundle for the command: %s",
			 s->policy->n_intercept, s->bundle);
	for (size_t i = 0; i < s->policy->n_gateways; i++)
		log_info("gateway http://%s -> %s", s->policy->gateways[i].listen,
			 s->policy->gateways[i].upstream);
	return 0;
}

static void run_teardown_intercept(struct run_state *s)
{
	if (s->ic) {
		if (s->ic_started)
			intercept_stop(s->ic);
		intercept_destroy(s->ic);
		s->ic = NULL;
		s->ic_started = false;
	}
	ca_free(s->ca);
	s->ca = NULL;
	/* The fresh CA's key goes with the run. */
	if (s->icdir[0]) {
		nftw(s->icdir, run_rm_entry, 8, FTW_DEPTH | FTW_PHYS);
		if (!access(s->icdir, F_OK))
			log_warn("cannot remove %s: remove it by hand (it may hold a CA key)",
				 s->icdir);
		s->icdir[0] = '\0';
	}
	if (s->icdir_fd >= 0) {
		close(s->icdir_fd);
		s->icdir_fd = -1;
	}
}

/* Capabilities a root agent must not keep: they would let it detach the
 * programs, load its own, open raw sockets or leave the cgroup. */
static const int run_drop_caps[] = {
	CAP_SYS_ADMIN, CAP_NET_ADMIN, CAP_NET_RAW, CAP_BPF, CAP_PERFMON,
	CAP_SYS_MODULE, CAP_SYS_PTRACE, CAP_SYS_RAWIO, CAP_SETPCAP,
	CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER, CAP_SYS_CHROOT,
	CAP_SETUID, CAP_SETGID,
};

static int run_drop_root_caps(void)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[2];
	size_t i;

	if (syscall(SYS_capget, &hdr, data))
		return -errno;
	for (i = 0; i < sizeof(run_drop_caps) / sizeof(run_drop_caps[0]); i++) {
		int cap = run_drop_caps[i];

		if (prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) && errno != EINVAL)
			return -errno;
		data[cap / 32].effective &= ~(1u << (cap % 32));
		data[cap / 32].permitted &= ~(1u << (cap % 32));
		data[cap / 32].inheritable &= ~(1u << (cap % 32));
	}
	if (syscall(SYS_capset, &hdr, data))
		return -errno;
	return 0;
}

/*
 * Unix sockets of services that start processes, or run commands, for
 * whoever can connect: what those processes do is outside the cgroup and
 * unenforced. Landlock does not scope pathname sockets, so CMD is told
 * (%u: its uid). Checked in the child with CMD's credentials, so access()
 * answers exactly (groups, ACLs, directory permissions).
 */
static const struct {
	const char *path;
	const char *what;
} run_host_sockets[] = {
	{ "/var/run/docker.sock", "Docker" },
	{ "/run/docker.sock", "Docker" },
	{ "/run/user/%u/docker.sock", "rootless Docker" },
	{ "/run/podman/podman.sock", "Podman" },
	{ "/run/user/%u/podman/podman.sock", "rootless Podman" },
	{ "/run/containerd/containerd.sock", "containerd" },
	{ "/run/user/%u/bus", "the user's D-Bus (systemd-run --user)" },
	{ "/run/user/%u/systemd/private", "the user's systemd" },
	{ "/tmp/tmux-%u/default", "a tmux server" },
};

static void run_warn_host_sockets(void)
{
	char path[PATH_MAX], msg[PATH_MAX + 512];
	const char *seen = NULL;
	struct stat st;
	size_t i;
	int n;

	for (i = 0; i < sizeof(run_host_sockets) / sizeof(run_host_sockets[0]); i++) {
		const char *t = run_host_sockets[i].path, *pct = strstr(t, "%u");

		if (pct)
			snprintf(path, sizeof(path), "%.*s%u%s", (int)(pct - t), t,
				 (unsigned)getuid(), pct + 2);
		else
			snprintf(path, sizeof(path), "%s", t);
		/* /var/run is /run: one warning for one service */
		if (seen && !strcmp(seen, run_host_sockets[i].what))
			continue;
		if (stat(path, &st) || !S_ISSOCK(st.st_mode) || access(path, W_OK))
			continue;
		seen = run_host_sockets[i].what;
		/* write(2), not log_warn: another thread of egressd may have
		 * held the log's or stderr's lock when this child was cloned */
		n = snprintf(msg, sizeof(msg), "egressd: warning: the command can connect to %s "
			     "(%s): what that starts runs outside the cgroup, unenforced; run "
			     "the agent as a user without access to it (--user; docs/local.md)\n",
			     path, run_host_sockets[i].what);
		if (n > 0 && write(STDERR_FILENO, msg, strnlen(msg, sizeof(msg))) < 0) {
			/* nowhere else to say it */
		}
	}
}

/*
 * The audit log and the policy file often lie in the user's directories,
 * and the command usually runs as that user: it could delete or replace
 * this run's log, or widen the policy the next run reads, through the file
 * itself or any directory above it (renaming one away and putting its own
 * in its place). Said, not refused (the common `sudo egressd run --log
 * audit.jsonl` in a project directory); root never follows what it may
 * have left there (safepath.h). Each entry is an absolute path that the
 * child tests, and every directory above it, for write access with the
 * command's credentials (access() sees groups and ACLs).
 */
static void run_agent_file_add(struct run_child_env *env, const char *file, const char *what)
{
	struct run_agent_file *f;
	struct stat st;
	char *real;

	if (!file || env->n_agent_files == sizeof(env->agent_files) / sizeof(env->agent_files[0]))
		return;
	f = &env->agent_files[env->n_agent_files];
	real = realpath(file, NULL);
	if (!real)
		return; /* opened already, or the run would have stopped */
	/* a file that keeps what is written (not the terminal or pipe behind
	 * --log /dev/stdout) */
	if (stat(real, &st) == 0 && S_ISREG(st.st_mode) &&
	    snprintf(f->path, sizeof(f->path), "%s", real) < (int)sizeof(f->path)) {
		f->what = what;
		env->n_agent_files++;
	}
	free(real);
}

/* In the child, as the command's user: system calls only. */
static void run_warn_agent_files(const struct run_child_env *env)
{
	char msg[2 * PATH_MAX + 512], p[PATH_MAX];
	uid_t below = 0; /* owner of the entry checked before p */
	struct stat st;
	int n;

	for (size_t i = 0; i < env->n_agent_files; i++) {
		const struct run_agent_file *f = &env->agent_files[i];
		bool first = true;

		memcpy(p, f->path, sizeof(p));
		for (;;) {
			char *slash;

			/* one the command cannot even stat (a root-only
			 * directory on the way) is still one it may rename
			 * away from the directory above */
			if (stat(p, &st)) {
				st.st_mode = 0;
				st.st_uid = (uid_t)-1;
			}
			/* a sticky directory lets nobody but its owner remove
			 * root's entry: only what is writable counts */
			if (st.st_mode && !access(p, W_OK) &&
			    (first || !(st.st_mode & S_ISVTX) || below != 0)) {
				/* write(2): see run_warn_host_sockets */
				n = snprintf(msg, sizeof(msg), "egressd: warning: the command's "
					     "user can write %s%s%s: %s; keep it where only root "
					     "can write (docs/local.md)\n", p,
					     first ? "" : ", above ", first ? "" : f->path, f->what);
				if (n > 0 && write(STDERR_FILENO, msg, strnlen(msg, sizeof(msg))) < 0) {
					/* nowhere else to say it */
				}
				break;
			}
			below = st.st_uid;
			first = false;
			slash = strrchr(p, '/');
			if (!slash || slash == p) {
				if (p[1] == '\0')
					break;
				p[1] = '\0'; /* then "/" */
				continue;
			}
			*slash = '\0';
		}
	}
}

static bool run_env_named(const char *entry, const char *name)
{
	size_t n = strlen(name);

	return !strncmp(entry, name, n) && entry[n] == '=';
}

static int run_env_add(char **envp, size_t *n, const char *name, const char *value)
{
	if (asprintf(&envp[*n], "%s=%s", name, value) < 0)
		return -ENOMEM;
	(*n)++;
	return 0;
}

/*
 * The command's environment and groups, made in egressd before the
 * spawn. Set here, not in egressd's own environment: egressd's upstream
 * verification must never trust its own CA; credential variables
 * (--inject env:NAME) are left out.
 */
static int run_child_prepare(struct run_child_env *env, const struct run_user *u)
{
	static const char *const user_env[] = { "USER", "LOGNAME", "HOME" };
	size_t n = 0, cap = 8, k;
	bool drop;

	for (char **e = environ; *e; e++)
		cap++;
	cap += sizeof(run_ca_env) / sizeof(run_ca_env[0]);
	env->envp = calloc(cap, sizeof(*env->envp));
	if (!env->envp)
		return -ENOMEM;
	for (char **e = environ; *e; e++) {
		drop = false;
		for (k = 0; k < env->n_unset; k++)
			drop |= run_env_named(*e, env->unset[k]);
		for (k = 0; env->bundle && k < sizeof(run_ca_env) / sizeof(run_ca_env[0]); k++)
			drop |= run_env_named(*e, run_ca_env[k]);
		for (k = 0; !u->is_root && u->name[0] && k < 3; k++)
			drop |= run_env_named(*e, user_env[k]);
		if (!drop && !(env->envp[n++] = strdup(*e)))
			return -ENOMEM;
	}
	if (!u->is_root && u->name[0] &&
	    (run_env_add(env->envp, &n, "USER", u->name) ||
	     run_env_add(env->envp, &n, "LOGNAME", u->name) ||
	     run_env_add(env->envp, &n, "HOME", u->home)))
		return -ENOMEM;
	for (k = 0; env->bundle && k < sizeof(run_ca_env) / sizeof(run_ca_env[0]); k++)
		if (run_env_add(env->envp, &n, run_ca_env[k], env->bundle))
			return -ENOMEM;
	if (u->is_root || !u->name[0] || env->groups)
		return 0; /* root keeps its groups; a uid without a name gets none;
			   * the others were looked up by run_place_cgroup */
	return run_user_groups(u, &env->groups, &env->n_groups);
}

static void run_child_env_free(struct run_child_env *env)
{
	for (size_t k = 0; env->envp && env->envp[k]; k++)
		free(env->envp[k]);
	free(env->envp);
	free(env->groups);
	env->envp = NULL;
	env->groups = NULL;
	env->n_groups = 0;
	if (env->landlock_fd >= 0)
		close(env->landlock_fd);
	env->landlock_fd = -1;
}

/* In the child, between clone and exec. */
static void run_child(const struct run_opts *o, const struct run_user *u,
		      const struct run_child_env *env, int cgroup_fd, bool in_cgroup, int errfd,
		      char *const *mon_argv)
{
	int i, stage = RUNPTY_FAIL_SETUP;
	sigset_t none;

	sigemptyset(&none);
	for (i = 1; i < NSIG; i++)
		signal(i, SIG_DFL);
	sigprocmask(SIG_SETMASK, &none, NULL);

	if (!in_cgroup) {
		/* fork fallback: join the cgroup before anything else runs */
		if (write(cgroup_fd, "0", 1) != 1)
			goto fail;
	}
	close(cgroup_fd);
	/* Not in the shell's session: no TIOCSTI into it (runpty.h). */
	{
		int e = runpty_child_session(env->pty);

		if (e) {
			errno = -e;
			goto fail;
		}
	}

	/* setuid binaries (sudo, su) must not give the agent root back */
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		goto fail;
	if (u->is_root) {
		if (run_drop_root_caps())
			goto fail;
	} else {
		/* raw system calls: glibc's wrappers would try to change the
		 * credentials of egressd's other threads, not in this copy */
		if (syscall(SYS_setgroups, (size_t)env->n_groups, env->groups) ||
		    syscall(SYS_setresgid, u->gid, u->gid, u->gid) ||
		    syscall(SYS_setresuid, u->uid, u->uid, u->uid))
			goto fail;
	}
	if (env->has_nofile && setrlimit(RLIMIT_NOFILE, &env->nofile))
		goto fail;
	/* still on the user's terminal: seen even if what follows fails */
	run_warn_host_sockets();
	run_warn_agent_files(env);
	{
		int e = runpty_child_terminal(env->pty);

		if (e) {
			errno = -e;
			goto fail;
		}
	}
	/* Last: needs no_new_privs, and holds for everything CMD starts. */
	if (env->landlock_fd >= 0) {
		int e = landlock_scope_apply(env->landlock_fd);

		if (e) {
			errno = -e;
			goto fail;
		}
	}
	/* Nothing but 0, 1 and 2 goes to CMD: a socket inherited from
	 * whoever started egressd was created outside the cgroup, and the
	 * cgroup's programs never see it (as sudo, which closes them too). */
	if (syscall(SYS_close_range, 3U, ~0U, CLOSE_RANGE_CLOEXEC)) {
		struct rlimit nl;
		int fd, top = 65536;

		if (!getrlimit(RLIMIT_NOFILE, &nl) && nl.rlim_cur < (rlim_t)top)
			top = (int)nl.rlim_cur;
		for (fd = 3; fd < top; fd++)
			fcntl(fd, F_SETFD, FD_CLOEXEC);
	}
	/* The monitor (runpty.h) is egressd executed afresh; it runs CMD.
	 * errfd stays open across this exec, for CMD's. */
	if (fcntl(errfd, F_SETFD, 0))
		goto fail;
	execve("/proc/self/exe", mon_argv, env->envp);
	stage = RUNPTY_FAIL_MONITOR;
	(void)o;
fail:
	{
		int e[2] = { stage, errno };

		if (write(errfd, e, sizeof(e)) < 0) {
			/* nothing more we can do */
		}
		_exit(127);
	}
}

static pid_t run_spawn(const struct run_opts *o, const struct run_user *u,
		       const struct run_child_env *env, int cgroup_fd, int *child_errno,
		       int *child_stage)
{
	struct clone_args args = {
		.flags = CLONE_INTO_CGROUP,
		.exit_signal = SIGCHLD,
		.cgroup = (__u64)cgroup_fd,
	};
	char **mon_argv = NULL, numbuf[32];
	int pipefd[2], e = 0, report[2];
	bool in_cgroup = true;
	size_t ncmd;
	ssize_t n;
	pid_t pid;

	*child_errno = 0;
	*child_stage = 0;
	if (pipe2(pipefd, O_CLOEXEC))
		return -errno;
	/* built here: the child must not allocate (no atfork handlers ran) */
	for (ncmd = 0; o->cmd[ncmd]; ncmd++)
		;
	mon_argv = calloc(ncmd + 6, sizeof(*mon_argv));
	e = mon_argv ? runpty_monitor_argv(env->pty, pipefd[1], o->cmd, mon_argv, ncmd + 6,
					   numbuf, sizeof(numbuf)) : -ENOMEM;
	if (e) {
		pid = e;
		goto out;
	}
	pid = syscall(SYS_clone3, &args, sizeof(args));
	if (pid < 0 && (errno == ENOSYS || errno == E2BIG || errno == EINVAL)) {
		in_cgroup = false;
		/* fork fallback writes to cgroup.procs itself */
		int procs = openat(cgroup_fd, "cgroup.procs", O_WRONLY | O_CLOEXEC);

		if (procs < 0) {
			pid = -errno;
			goto out;
		}
		pid = fork();
		if (pid == 0) {
			close(pipefd[0]);
			run_child(o, u, env, procs, false, pipefd[1], mon_argv);
		}
		e = errno;
		close(procs);
		errno = e;
	} else if (pid == 0) {
		close(pipefd[0]);
		run_child(o, u, env, cgroup_fd, in_cgroup, pipefd[1], mon_argv);
	}
	if (pid < 0) {
		pid = -errno;
		goto out;
	}
	close(pipefd[1]);
	pipefd[1] = -1;
	/* exec succeeded when the CLOEXEC pipe closes without data: the
	 * monitor's exec keeps it open for CMD's, which closes it */
	do {
		n = read(pipefd[0], report, sizeof(report));
	} while (n < 0 && errno == EINTR);
	if (n == sizeof(report)) {
		*child_stage = report[0];
		*child_errno = report[1] ? report[1] : EIO;
	}
out:
	close(pipefd[0]);
	if (pipefd[1] >= 0)
		close(pipefd[1]);
	free(mon_argv);
	return pid;
}

static void run_teardown(struct run_state *s)
{
	if (s->cgroup_created) {
		int err = cgroup_kill_all(s->cgroup, 5000);

		if (err) {
			log_warn("processes left in %s could not be killed: %s; its programs "
				 "stay attached (they redirect to a closed port) until `egressd "
				 "cleanup` removes it", s->cgroup, strerror(-err));
		}
	}
	/* after the kill: nothing left writes to the command's terminal */
	runpty_finish(&s->pty);
	if (s->events_running) {
		s->events_stop = 1;
		pthread_join(s->events_thread, NULL);
		s->events_running = false;
	}
	if (s->proxy)
		proxy_stop(s->proxy);
	/* No more hand-offs once the proxy stopped; the engine's connections
	 * end before the proxy that created them is freed. */
	if (s->ic && s->ic_started) {
		intercept_stop(s->ic);
		s->ic_started = false;
	}
	if (s->proxy) {
		proxy_destroy(s->proxy);
		s->proxy = NULL;
	}
	run_teardown_intercept(s);
	if (s->dns) {
		dnsproxy_stop(s->dns);
		dnsproxy_destroy(s->dns);
		s->dns = NULL;
	}
	/*
	 * Never detached: a socket outlives its process (an orphan still
	 * sending what the egress check held back, an answer to a host that
	 * connected in), and a removed cgroup keeps its programs for as long
	 * as a socket of it lives (sockets hold the cgroup's BPF reference),
	 * where a detach would let those bytes out. Processes that survived
	 * the kill stay enforced the same way: closed.
	 */
	egr_bpf_keep_attached(s->bpf);
	egr_bpf_destroy(s->bpf);
	s->bpf = NULL;
	if (s->cgroup_created) {
		int err = cgroup_remove(s->cgroup);

		if (err)
			log_warn("cannot remove cgroup %s: %s (egressd cleanup removes it)",
				 s->cgroup, strerror(-err));
		s->cgroup_created = false;
	}
	/* last: the fd holds the lock that says this run lives (cgroup.h) */
	if (s->cgroup_fd >= 0) {
		close(s->cgroup_fd);
		s->cgroup_fd = -1;
	}
}

static const int run_forwarded[] = { RUNPTY_FORWARDED };

static int run_wait(struct run_state *s, pid_t child, const sigset_t *set)
{
	siginfo_t si;
	int status;

	for (;;) {
		if (sigwaitinfo(set, &si) < 0) {
			if (errno == EINTR)
				continue;
			log_error("sigwaitinfo: %s", strerror(errno));
			return 1;
		}
		if (si.si_signo == SIGCHLD) {
			pid_t r = waitpid(child, &status, WNOHANG | WUNTRACED);

			if (r == child && WIFSTOPPED(status)) {
				/* ^Z on the command's terminal (the monitor
				 * stops only then): stop with it, giving the
				 * shell its terminal back; fg sends SIGCONT */
				if (s->pty.master >= 0) {
					runpty_suspend(&s->pty);
					raise(SIGSTOP);
				}
				continue;
			}
			if (r == child)
				break;
			continue;
		}
		if (si.si_signo == SIGWINCH && s->pty.master >= 0) {
			runpty_winch(&s->pty); /* its terminal signals it */
			continue;
		}
		/* fg (or bg): the user's terminal raw again if it is ours */
		if (si.si_signo == SIGCONT)
			runpty_resume(&s->pty);
		/* The command has a session of its own: the terminal's ^C,
		 * ^\ and ^Z reach egressd alone (or, with a terminal of its
		 * own, come to the command through it). The child, the
		 * command's monitor (runpty.h), passes them on. */
		kill(child, si.si_signo);
		/* ^Z from the terminal with no terminal of the command's own
		 * (its 0/1/2 redirected): the command stopped through the
		 * monitor, egressd stops too so the shell takes over; fg
		 * continues both */
		if (si.si_signo == SIGTSTP && s->pty.master < 0)
			raise(SIGSTOP);
	}
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return 1;
}

/*
 * CMD's processes are the only ones redirected; another process of the
 * same user (a shell, a tmux server, systemd --user) is not. Landlock
 * (landlock.h) keeps CMD from driving those through ptrace or
 * /proc/PID/mem, from signalling them and from their abstract Unix
 * sockets. Where the kernel has no Landlock it still runs, and says so.
 */
static int run_landlock(struct run_child_env *env)
{
	int abi, fd = landlock_scope_ruleset(&abi);

	if (fd == -ENOSYS || fd == -EOPNOTSUPP) {
		log_warn("Landlock is not available (Linux 5.19+ with Landlock enabled, not "
			 "refused by seccomp): the command can ptrace, signal and reach the "
			 "abstract Unix sockets of its user's processes outside the cgroup, "
			 "which egressd does not redirect (docs/local.md)");
		return 0;
	}
	if (fd < 0) {
		fprintf(stderr, "egressd: cannot create a Landlock ruleset: %s\n", strerror(-fd));
		return -1;
	}
	if (abi < LANDLOCK_ABI_SCOPES)
		log_warn("Landlock ABI %d (Linux < 6.12): the command cannot ptrace processes "
			 "outside its cgroup, but can signal them and reach their abstract "
			 "Unix sockets, and cannot mount (docs/local.md)", abi);
	env->landlock_fd = fd;
	return 0;
}

/*
 * A socket made outside the command's cgroup passes none of its hooks (they
 * follow the socket's cgroup, not the caller's): as the command's stdin,
 * stdout or stderr, an IPv4/IPv6 one could be reconnected anywhere
 * (connect(AF_UNSPEC), then connect()), or sent from to anywhere, unseen;
 * a packet socket (a root launcher's) sends raw frames, and other families
 * have no hook at all. Only Unix sockets are let through.
 * egressd started by inetd, `socat EXEC:` or a systemd socket unit with
 * Accept=yes gets one; refused before anything is created.
 */
static int run_check_stdio(void)
{
	static const char *const names[] = { "standard input", "standard output",
					     "standard error" };

	for (int fd = 0; fd < 3; fd++) {
		int dom = 0;
		socklen_t len = sizeof(dom);

		if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &dom, &len) == 0 && dom != AF_UNIX) {
			fprintf(stderr, "egressd: %s is a socket (%s) made outside the "
				"command's cgroup: the command could send through it "
				"anywhere, unenforced; connect egressd's standard streams to "
				"pipes, files or Unix sockets instead\n", names[fd],
				dom == AF_INET ? "IPv4" : dom == AF_INET6 ? "IPv6" :
				dom == AF_PACKET ? "packet" : "not a Unix socket");
			return -1;
		}
	}
	return 0;
}

int run_main(int argc, char **argv)
{
	struct run_state s = { .cfg = CONFIG_DEFAULTS, .cgroup_fd = -1, .icdir_fd = -1,
			       .child_env.landlock_fd = -1,
			       .pty = { .master = -1, .slave = -1, .stop = { -1, -1 } } };
	struct run_opts o = { 0 };
	struct proxy_params pp = { 0 };
	struct dnsproxy_params dp = { 0 };
	struct run_user u;
	char err[1024], self[PATH_MAX];
	sigset_t set;
	int ret = RUN_EXIT_USAGE, e, child_errno, child_stage;
	pid_t child = -1;

	if (run_parse(argc, argv, &o, &s.cfg))
		return RUN_EXIT_USAGE;
	if (run_check_stdio())
		return RUN_EXIT_USAGE;
	if (s.cfg.verbose)
		log_set_level(s.cfg.verbose > 1 ? EGR_LOG_DEBUG : EGR_LOG_INFO);
	else
		log_set_level(EGR_LOG_WARN);

	/* Everything that can be checked without creating anything. */
	s.policy = run_build_policy(&o);
	if (!s.policy)
		return RUN_EXIT_USAGE;
	if (run_open_geo(&s, &o))
		goto out;
	if (run_resolve_user(&o, &u))
		goto out;
	if (geteuid() != 0) {
		fprintf(stderr, "egressd: egressd run needs root to load and attach BPF programs "
			"and create a cgroup: run it with sudo (the command still runs as you)\n");
		goto out;
	}
	if (egr_bpf_probe(err, sizeof(err))) {
		fprintf(stderr, "egressd: %s\n", err);
		goto out;
	}
	if (cgroup_find_mount(s.mount, sizeof(s.mount), err, sizeof(err))) {
		fprintf(stderr, "egressd: %s\n", err);
		goto out;
	}
	if (cgroup_self_path(self, sizeof(self)))
		snprintf(self, sizeof(self), "/");
	if (run_join(s.parent, sizeof(s.parent), s.mount, self)) {
		fprintf(stderr, "egressd: cgroup path too long: %s%s\n", s.mount, self);
		goto out;
	}
	if (run_place_cgroup(&s, &u))
		goto out;
	cgroup_cleanup_stale(s.parent);
	run_cleanup_icdirs();
	if (strcmp(s.parent, s.mount))
		cgroup_cleanup_stale(s.mount);

	e = audit_open(&s.audit, &s.cfg.audit);
	if (e) {
		fprintf(stderr, "egressd: cannot open audit log %s: %s\n",
			s.cfg.audit.path ? s.cfg.audit.path : "-", strerror(-e));
		goto out;
	}
	/* its cgroup's cap on open sockets of each kind (egr_bpf_set_limits),
	 * and room for the few concurrent connects that pass it */
	if (egr_bpf_prepare(&s.bpf, s.cfg.max_conns_per_cgroup + 1024))
		goto out;

	pp.cfg = &s.cfg;
	pp.policy_for = run_policy_for;
	pp.cgroup_name = run_cgroup_name;
	pp.ctx = &s;
	pp.conns_map_fd = egr_bpf_conns_fd(s.bpf);
	pp.audit = s.audit;
	s.child_env.has_nofile = proxy_raise_nofile(&s.child_env.nofile) > 0;
	e = proxy_create(&s.proxy, &pp);
	if (e) {
		fprintf(stderr, "egressd: cannot start the proxy: %s\n", strerror(-e));
		goto out;
	}
	/* The DNS proxy takes the same port number for UDP: one port for
	 * the kernel programs to redirect to, TCP and UDP. */
	dp.cfg = &s.cfg;
	dp.policy_for = run_policy_for;
	dp.cgroup_name = run_cgroup_name;
	dp.origin_for_udp = run_origin_for_udp;
	dp.ctx = &s;
	dp.audit = s.audit;
	dp.port = proxy_port(s.proxy);
	dp.upstream = s.cfg.dns_servers;
	e = dnsproxy_create(&s.dns, &dp);
	if (e) {
		fprintf(stderr, "egressd: cannot start the DNS proxy on port %u: %s\n",
			proxy_port(s.proxy), strerror(-e));
		goto out;
	}
	proxy_set_dnsproxy(s.proxy, s.dns);
	if (run_setup_intercept(&s, &o))
		goto out;
	if (egr_bpf_load(s.bpf, proxy_port(s.proxy), proxy_has_v6(s.proxy)))
		goto out;
	if (egr_bpf_set_policy(s.bpf, 0, s.policy) ||
	    egr_bpf_set_limits(s.bpf, s.cfg.max_conns_per_cgroup))
		goto out;

	e = cgroup_create(s.parent, s.cgroup, sizeof(s.cgroup), &s.cgroup_fd);
	if (e) {
		fprintf(stderr, "egressd: cannot create a cgroup under %s: %s\n",
			s.parent, strerror(-e));
		goto out;
	}
	s.cgroup_created = true;
	s.cgroup_rel = s.cgroup + strlen(s.mount);
	s.cgroup_id = cgroup_id(s.cgroup);
	if (!s.cgroup_id || egr_bpf_bind_cgroup(s.bpf, s.cgroup_id, 0))
		goto out;
	if (egr_bpf_attach(s.bpf, s.cgroup_fd))
		goto out;
	s.fold = kfold_new(0, 2048, run_emit_event, &s);
	if (!s.fold) {
		fprintf(stderr, "egressd: audit log folding: %s\n", strerror(errno));
		goto out;
	}
	if (egr_bpf_events_open(s.bpf, run_on_event, &s))
		goto out;
	log_info("enforcing policy '%s' on %s (proxy 127.0.0.1:%u)", s.policy->name,
		 s.cgroup, proxy_port(s.proxy));

	/* Signals are taken synchronously by the main thread; every thread
	 * started from here on inherits the mask. */
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	for (size_t k = 0; k < sizeof(run_forwarded) / sizeof(run_forwarded[0]); k++)
		sigaddset(&set, run_forwarded[k]);
	sigprocmask(SIG_BLOCK, &set, NULL);
	signal(SIGPIPE, SIG_IGN);

	if (run_landlock(&s.child_env))
		goto out;
	if (!u.is_root) {
		run_agent_file_add(&s.child_env, s.cfg.audit.path,
				   "the command could delete or replace this run's audit log");
		run_agent_file_add(&s.child_env, o.policy_file,
				   "the command could change the policy of the next run");
		run_agent_file_add(&s.child_env, "/proc/self/exe",
				   "the command could replace egressd itself, and the next "
				   "`sudo egressd` would run its code as root (install it: "
				   "sudo make install)");
	}
	e = run_child_prepare(&s.child_env, &u);
	if (e) {
		fprintf(stderr, "egressd: cannot prepare the command's environment and groups: %s\n",
			strerror(-e));
		goto out;
	}
	e = runpty_open(&s.pty);
	if (e) {
		fprintf(stderr, "egressd: cannot make a terminal for the command: %s\n",
			strerror(-e));
		goto out;
	}
	s.child_env.pty = &s.pty;
	child = run_spawn(&o, &u, &s.child_env, s.cgroup_fd, &child_errno, &child_stage);
	run_child_env_free(&s.child_env); /* the child has what it needed */
	if (child < 0) {
		fprintf(stderr, "egressd: cannot start %s: %s\n", o.cmd[0], strerror(-child));
		goto out;
	}
	if (child_errno) {
		waitpid(child, NULL, 0);
		if (child_stage == RUNPTY_FAIL_EXEC) {
			fprintf(stderr, "egressd: cannot run %s: %s\n", o.cmd[0],
				strerror(child_errno));
			ret = child_errno == ENOENT ? 127 : 126;
		} else if (child_stage == RUNPTY_FAIL_MONITOR) {
			fprintf(stderr, "egressd: cannot start the command's monitor (egressd "
				"itself, run as the agent's user: its binary must be executable "
				"by that user): %s\n", strerror(child_errno));
		} else {
			fprintf(stderr, "egressd: cannot set up the command (session, user, "
				"terminal, Landlock): %s\n", strerror(child_errno));
		}
		goto out;
	}
	e = runpty_start(&s.pty);
	if (e) {
		fprintf(stderr, "egressd: cannot relay the command's terminal: %s\n", strerror(-e));
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
		goto out;
	}
	e = dnsproxy_start(s.dns);
	if (!e && s.ic) {
		e = intercept_start(s.ic);
		s.ic_started = !e;
	}
	if (!e)
		e = proxy_start(s.proxy);
	if (e) {
		fprintf(stderr, "egressd: cannot start the proxy workers: %s\n", strerror(-e));
		kill(child, SIGKILL);
		waitpid(child, NULL, 0);
		goto out;
	}
	if (pthread_create(&s.events_thread, NULL, run_events_thread, &s) == 0) {
		s.events_running = true;
		thread_name(s.events_thread, "egressd-events");
	} else
		log_warn("cannot start the kernel event reader: kernel denials will not be logged");

	ret = run_wait(&s, child, &set);
out:
	run_teardown(&s);
	if (s.audit && !o.quiet)
		audit_print_summary(s.audit, stderr);
	if (s.events_lost)
		fprintf(stderr, "egressd: %llu kernel decision%s of this run %s on no record "
			"(the event ring was full)\n", (unsigned long long)s.events_lost,
			s.events_lost == 1 ? "" : "s", s.events_lost == 1 ? "is" : "are");
	audit_close(s.audit);
	kfold_free(s.fold);
	policy_free(s.policy);
	geo_close(s.geo);
	run_child_env_free(&s.child_env);
	return ret;
}

static void run_cleanup_usage(FILE *out)
{
	fprintf(out,
"Usage: egressd cleanup\n"
"\n"
"Remove what runs killed with SIGKILL left behind: their cgroups, anywhere in\n"
"the cgroup hierarchy, killing what still runs in them (without network since\n"
"egressd died), and their CA directories. A run is gone when the lock it held\n"
"on its cgroup is free (the kernel drops it with the run): what runs under the\n"
"pid in a leftover's name (egressd.run.PID) does not keep it, even a process\n"
"named egressd, unless that process is root's (an egressd from before the\n"
"lock). The next run started from the same cgroup does the same there.\n");
}

int run_cleanup_main(int argc, char **argv)
{
	char mnt[PATH_MAX], err[512];
	int n = 0, r;

	if (argc > 1 && (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help"))) {
		run_cleanup_usage(stdout);
		return 0;
	}
	if (argc > 1) {
		fprintf(stderr, "egressd: cleanup takes no arguments\n");
		run_cleanup_usage(stderr);
		return RUN_EXIT_USAGE;
	}
	if (geteuid() != 0) {
		fprintf(stderr, "egressd: cleanup needs root\n");
		return RUN_EXIT_USAGE;
	}
	if (cgroup_find_mount(mnt, sizeof(mnt), err, sizeof(err))) {
		fprintf(stderr, "egressd: %s\n", err);
		return RUN_EXIT_USAGE;
	}
	r = run_cleanup_icdirs();
	if (r > 0)
		n += r;
	/* A run's cgroup is below the cgroup it was started from: another
	 * login, a systemd unit, a CI job. */
	r = cgroup_cleanup_tree(mnt);
	if (r > 0)
		n += r;
	printf("removed %d leftover%s of killed runs (cgroups, CA directories)\n", n, n == 1 ? "" : "s");
	return 0;
}
