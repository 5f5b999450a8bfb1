// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * egressctl: the operator's tool. Daemon commands (status, reload) talk to
 * `egressd daemon` over its control socket (docs/egressctl.md); policy and
 * CA commands work on files.
 *
 * Exit status: 0 success; 1 the daemon could not be reached or failed;
 * 2 bad arguments, or a file (policy, config on reload) is invalid.
 */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "dconfig.h"
#include "egressctl_ca.h"
#include "log.h"
#include "policy_cli.h"
#include "suggest.h"

/* The daemon answers within its own client budget (control.h); allow for
 * a reload that reads large policy files. */
#define CTL_TIMEOUT_MS 15000
#define CTL_REPLY_MAX (1u << 20)

static void usage(FILE *out)
{
	fprintf(out,
"Usage: egressctl COMMAND [ARGS]\n"
"\n"
"Commands (daemon, over its control socket; root only):\n"
"  status [--socket PATH] [--json]\n"
"                           version, uptime, attach points, policies, counters\n"
"  reload [--socket PATH]   reload the daemon's config; exit 2 if it is invalid\n"
"                           (the running one stays)\n"
"\n"
"Commands (files):\n"
"  policy check FILE...     validate policy files (exit 2 if any is invalid)\n"
"  policy show-default      print the built-in default policy (JSON)\n"
"  policy suggest --log FILE [--since DURATION] [--cgroup GLOB] [--name NAME] [--json]\n"
"                           a policy allowing what the audit log shows denied\n"
"  ca init [--dir DIR] [--force] [--permit DOMAIN]... [--days N]\n"
"                           create the TLS interception CA (default /etc/egressd/ca)\n"
"  ca export [--dir DIR]    print the CA certificate (PEM)\n"
"  version                  print the version\n"
"  help                     this text\n"
"\n"
"The socket defaults to " DCONFIG_DEFAULT_CONTROL " (listen.control in the\n"
"daemon's config). See docs/egressctl.md.\n");
}

/* --- control socket client ---------------------------------------------- */

/* Send {"cmd": cmd} and return the last response line parsed, or NULL
 * with a message printed. */
static json_t *ctl_request(const char *path, const char *cmd)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	char req[128], *buf = NULL, *line, *nl;
	size_t len = 0, cap = 0;
	json_t *reply = NULL;
	json_error_t jerr;
	int fd, n;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		fprintf(stderr, "egressctl: %s: socket path too long\n", path);
		return NULL;
	}
	memcpy(sun.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		fprintf(stderr, "egressctl: socket: %s\n", strerror(errno));
		return NULL;
	}
	if (connect(fd, (struct sockaddr *)&sun, sizeof(sun))) {
		int e = errno;

		if (e == EACCES || e == EPERM)
			fprintf(stderr, "egressctl: cannot connect to %s: %s — the control "
				"socket is for root (run egressctl as root)\n", path, strerror(e));
		else
			fprintf(stderr, "egressctl: cannot connect to %s: %s — is egressd "
				"daemon running?\n", path, strerror(e));
		close(fd);
		return NULL;
	}
	n = snprintf(req, sizeof(req), "{\"cmd\":\"%s\"}\n", cmd);
	/* A refused caller finds the socket closed (EPIPE) after the daemon
	 * sent its reason: read that rather than report the write. */
	if (write(fd, req, (size_t)n) != n && errno != EPIPE) {
		fprintf(stderr, "egressctl: %s: write: %s\n", path, strerror(errno));
		close(fd);
		return NULL;
	}
	for (;;) {
		struct pollfd pfd = { fd, POLLIN, 0 };
		ssize_t r;

		if (len + 4096 > cap) {
			char *nb;

			if (cap >= CTL_REPLY_MAX)
				break;
			cap = cap ? cap * 2 : 8192;
			nb = realloc(buf, cap + 1);
			if (!nb)
				break;
			buf = nb;
		}
		if (poll(&pfd, 1, CTL_TIMEOUT_MS) <= 0) {
			fprintf(stderr, "egressctl: %s: no answer from the daemon within %d s\n",
				path, CTL_TIMEOUT_MS / 1000);
			goto out;
		}
		r = read(fd, buf + len, cap - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		len += (size_t)r;
	}
	if (!buf || !len) {
		fprintf(stderr, "egressctl: %s: the daemon closed the connection without "
			"answering\n", path);
		goto out;
	}
	buf[len] = '\0';
	/* The last complete line is the answer (earlier ones: progress). */
	for (line = buf; (nl = strchr(line, '\n')) && nl[1]; line = nl + 1)
		;
	reply = json_loadb(line, nl ? (size_t)(nl - line) : strlen(line), 0, &jerr);
	if (!json_is_object(reply)) {
		fprintf(stderr, "egressctl: %s: unreadable answer: %s\n", path, jerr.text);
		json_decref(reply);
		reply = NULL;
	}
out:
	free(buf);
	close(fd);
	return reply;
}

/* Print the daemon's error and return the exit status for it. */
static int ctl_failed(json_t *reply)
{
	const char *msg = json_string_value(json_object_get(reply, "error"));

	fprintf(stderr, "egressctl: %s\n", msg ? msg : "the daemon reported an error");
	return json_is_true(json_object_get(reply, "invalid")) ? 2 : 1;
}

static int parse_socket_opts(int argc, char **argv, const char *cmd, const char **sock,
			     int *json)
{
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+s:h", longopts, NULL)) != -1) {
		switch (c) {
		case 's':
			*sock = optarg;
			break;
		case 'j':
			if (!json)
				goto bad;
			*json = 1;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			goto bad;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "egressctl %s: unexpected argument '%s'\n", cmd, argv[optind]);
		return -EINVAL;
	}
	return 0;
bad:
	fprintf(stderr, "egressctl %s: unknown option '%s' (see egressctl help)\n", cmd,
		argv[optind - 1]);
	return -EINVAL;
}

static void print_uptime(long long s)
{
	if (s >= 86400)
		printf("%lldd%02lldh%02lldm", s / 86400, s % 86400 / 3600, s % 3600 / 60);
	else if (s >= 3600)
		printf("%lldh%02lldm%02llds", s / 3600, s % 3600 / 60, s % 60);
	else if (s >= 60)
		printf("%lldm%02llds", s / 60, s % 60);
	else
		printf("%llds", s);
}

static const char *jstr(json_t *o, const char *key, const char *dflt)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s ? s : dflt;
}

static long long jint(json_t *o, const char *key)
{
	return (long long)json_integer_value(json_object_get(o, key));
}

static void print_status(json_t *s)
{
	json_t *a, *v, *cnt = json_object_get(s, "counters");
	size_t i;
	int wn = (int)strlen("POLICY"), wc = (int)strlen("CGROUP");

	printf("egressd %s, pid %lld, up ", jstr(s, "version", "?"), jint(s, "pid"));
	print_uptime(jint(s, "uptime_s"));
	printf("\n");
	printf("  config         %s\n", jstr(s, "config", "-"));
	printf("  control        %s\n", jstr(s, "control", "-"));
	printf("  pins           %s\n", jstr(s, "pin_dir", "-"));
	printf("  proxy port     %lld\n", jint(s, "port"));
	a = json_object_get(s, "attach_points");
	printf("  attach points ");
	if (!json_array_size(a))
		printf(" (none)");
	for (i = 0; i < json_array_size(a) && (v = json_array_get(a, i)); i++)
		printf(" %s", json_string_value(v));
	printf("\n");
	v = json_object_get(s, "cgroups");
	printf("  cgroups        %lld below the attach points, %lld bound to a policy "
	       "(the others: deny-all)\n", jint(v, "watched"), jint(v, "bound"));
	if (json_is_object(cnt))
		printf("  connections    %lld allowed, %lld denied, %lld audit (would deny) "
		       "since start, from %s\n", jint(cnt, "allowed"), jint(cnt, "denied"),
		       jint(cnt, "audit"), jstr(cnt, "audit_log", "the audit log"));
	else
		printf("  connections    not counted: the audit log goes to stdout "
		       "(set audit.path)\n");
	if (json_object_get(s, "kernel_denied"))
		printf("  kernel denied  %lld since start (refused at connect(), not in "
		       "the audit log)\n", jint(s, "kernel_denied"));

	a = json_object_get(s, "policies");
	for (i = 0; i < json_array_size(a) && (v = json_array_get(a, i)); i++) {
		int l = (int)strlen(jstr(v, "name", ""));

		wn = l > wn ? l : wn;
	}
	printf("\n  %-*s  %-7s  %5s  %4s  %9s  %s\n", wn, "POLICY", "MODE", "ALLOW", "DENY",
	       "INTERCEPT", "SOURCE");
	for (i = 0; i < json_array_size(a) && (v = json_array_get(a, i)); i++)
		printf("  %-*s  %-7s  %5lld  %4lld  %9lld  %s%s%s%s\n", wn, jstr(v, "name", "?"),
		       jstr(v, "mode", "?"), jint(v, "allow"), jint(v, "deny"),
		       jint(v, "intercept"), jstr(v, "source", "?"),
		       json_object_get(v, "file") ? " " : "", jstr(v, "file", ""),
		       json_is_false(json_object_get(v, "used")) ? " (unused)" : "");
	a = json_object_get(s, "bindings");
	for (i = 0; i < json_array_size(a) && (v = json_array_get(a, i)); i++) {
		int l = (int)strlen(jstr(v, "cgroup", ""));

		wc = l > wc ? l : wc;
	}
	printf("\n  %-*s  %s\n", wc, "CGROUP", "POLICY");
	for (i = 0; i < json_array_size(a) && (v = json_array_get(a, i)); i++)
		printf("  %-*s  %s\n", wc, jstr(v, "cgroup", "?"), jstr(v, "policy", "?"));
	a = json_object_get(s, "netns");
	if (json_array_size(a))
		printf("\n  %-12s  %-20s  %-9s  %-7s  %s\n", "NETNS", "COOKIE", "LISTENING",
		       "PID", "CGROUP");
	for (i = 0; i < json_array_size(a) && (v = json_array_get(a, i)); i++)
		printf("  %-12lld  %-20lld  %-9s  %-7lld  %s\n", jint(v, "inode"),
		       jint(v, "cookie"),
		       !json_is_true(json_object_get(v, "listening")) ? "failed" :
		       json_is_true(json_object_get(v, "ipv6")) ? "v4+v6" : "v4",
		       jint(v, "pid"), jstr(v, "cgroup", "?"));
}

static int cmd_status(int argc, char **argv)
{
	const char *sock = DCONFIG_DEFAULT_CONTROL;
	json_t *reply, *s;
	int json = 0, ret = 0;

	if (parse_socket_opts(argc, argv, "status", &sock, &json))
		return 2;
	reply = ctl_request(sock, "status");
	if (!reply)
		return 1;
	s = json_object_get(reply, "status");
	if (!json_is_true(json_object_get(reply, "ok")) || !json_is_object(s)) {
		ret = ctl_failed(reply);
	} else if (json) {
		json_dumpf(s, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
		printf("\n");
	} else {
		print_status(s);
	}
	json_decref(reply);
	return ret;
}

static int cmd_reload(int argc, char **argv)
{
	const char *sock = DCONFIG_DEFAULT_CONTROL;
	json_t *reply;
	int ret = 0;

	if (parse_socket_opts(argc, argv, "reload", &sock, NULL))
		return 2;
	reply = ctl_request(sock, "reload");
	if (!reply)
		return 1;
	if (json_is_true(json_object_get(reply, "ok")))
		printf("egressctl: reloaded\n");
	else
		ret = ctl_failed(reply);
	json_decref(reply);
	return ret;
}

/* --- policy suggest ----------------------------------------------------- */

static int cmd_suggest(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "log", required_argument, NULL, 'l' },
		{ "since", required_argument, NULL, 's' },
		{ "cgroup", required_argument, NULL, 'c' },
		{ "name", required_argument, NULL, 'n' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct suggest_options o = { 0 };
	const struct suggest_stats *st;
	const char *log = NULL, *name = "suggested", *why;
	struct suggest *s = NULL;
	FILE *f;
	size_t n;
	int c, err, json = 0;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+l:s:c:n:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'l':
			log = optarg;
			break;
		case 's':
			if (suggest_parse_duration(optarg, &o.since)) {
				fprintf(stderr, "egressctl policy suggest: --since: '%s' is not a "
					"duration (e.g. 90s, 15m, 1h, 2d, 1h30m)\n", optarg);
				return 2;
			}
			break;
		case 'c':
			why = dconfig_glob_check(optarg);
			if (why) {
				fprintf(stderr, "egressctl policy suggest: --cgroup: '%s': %s\n",
					optarg, why);
				return 2;
			}
			o.cgroup_glob = optarg;
			break;
		case 'n':
			name = optarg;
			break;
		case 'j':
			json = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			fprintf(stderr, "egressctl policy suggest: unknown option '%s'\n",
				argv[optind - 1]);
			return 2;
		}
	}
	if (!log || optind < argc) {
		fprintf(stderr, "egressctl policy suggest: %s\n", !log ?
			"--log FILE is required (the daemon's JSON audit log)" :
			"unexpected argument");
		return 2;
	}
	f = strcmp(log, "-") ? fopen(log, "r") : stdin;
	if (!f) {
		fprintf(stderr, "egressctl policy suggest: %s: %s\n", log, strerror(errno));
		return 1;
	}
	err = suggest_new(&s, &o);
	if (!err)
		err = suggest_add_file(s, f);
	if (f != stdin)
		fclose(f);
	if (!err) {
		suggest_rules(s, &n);
		err = suggest_write_json(s, name, stdout);
	}
	if (err) {
		fprintf(stderr, "egressctl policy suggest: %s: %s\n", log, strerror(-err));
		suggest_free(s);
		return 1;
	}
	st = suggest_stats(s);
	/* JSON has no comments: the account goes to stderr. */
	if (json)
		fprintf(stderr, "{\"lines\":%zu,\"used\":%zu,\"rules\":%zu,\"collapsed\":%zu,"
			"\"malformed\":%zu,\"allowed\":%zu,\"filtered\":%zu,\"unfixable\":%zu,"
			"\"invalid\":%zu}\n", st->lines, st->used, n, st->collapsed,
			st->malformed, st->not_denied, st->filtered, st->unfixable, st->invalid);
	else
		fprintf(stderr, "egressctl: %zu rules from %zu denied records (%zu names "
			"collapsed into wildcards); %zu lines read: %zu allowed, %zu outside "
			"--since/--cgroup, %zu denied for reasons no allow rule fixes (deny "
			"rule, loopback, UDP, ...), %zu with no usable name or address, "
			"%zu malformed lines skipped\n", n, st->used, st->collapsed, st->lines,
			st->not_denied, st->filtered, st->unfixable, st->invalid, st->malformed);
	suggest_free(s);
	return 0;
}

int main(int argc, char **argv)
{
	log_set_prefix("egressctl");
	signal(SIGPIPE, SIG_IGN);
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "status"))
		return cmd_status(argc - 1, argv + 1);
	if (!strcmp(argv[1], "reload"))
		return cmd_reload(argc - 1, argv + 1);
	if (!strcmp(argv[1], "ca"))
		return egressctl_ca_main(argc - 2, argv + 2);
	if (!strcmp(argv[1], "policy") && argc > 2 && !strcmp(argv[2], "suggest"))
		return cmd_suggest(argc - 2, argv + 2);
	if (!strcmp(argv[1], "policy"))
		return policy_cli_main("egressctl", argc - 2, argv + 2);
	if (!strcmp(argv[1], "version") || !strcmp(argv[1], "--version")) {
		printf("egressctl %s\n", EGRESSD_VERSION);
		return 0;
	}
	if (!strcmp(argv[1], "help") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		usage(stdout);
		return 0;
	}
	fprintf(stderr, "egressctl: unknown command '%s'\n\n", argv[1]);
	usage(stderr);
	return 2;
}
