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
"  conns [--socket PATH] [--json]\n"
"                           live connections: cgroup, pid, comm, destination,\n"
"                           SNI/Host, state, verdict, policy, bytes, age\n"
"  log -f [--cgroup GLOB] [--verdict allow|deny|audit] [--json] [--socket PATH]\n"
"                           follow the daemon's decisions as they are made,\n"
"                           until interrupted (Ctrl-C)\n"
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

/* Connect to the control socket and send req as one line: the fd, or -1
 * with a message printed. */
static int ctl_send(const char *path, json_t *req)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	char *line;
	size_t n;
	int fd;

	if (strlen(path) >= sizeof(sun.sun_path)) {
		fprintf(stderr, "egressctl: %s: socket path too long\n", path);
		return -1;
	}
	memcpy(sun.sun_path, path, strlen(path) + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		fprintf(stderr, "egressctl: socket: %s\n", strerror(errno));
		return -1;
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
		return -1;
	}
	{
		/* The daemon runs as root: a socket another user put at the
		 * path (in a directory they can write) would feed us forged
		 * status and a false "reloaded". */
		struct ucred cr;
		socklen_t crlen = sizeof(cr);

		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &crlen) ||
		    (cr.uid != 0 && cr.uid != geteuid())) {
			fprintf(stderr, "egressctl: %s: answered by uid %ld, not root: not an "
				"egressd daemon's socket; check who can write its directory\n",
				path, crlen == sizeof(cr) ? (long)cr.uid : -1L);
			close(fd);
			return -1;
		}
	}
	line = json_dumps(req, JSON_COMPACT);
	if (!line) {
		close(fd);
		return -1;
	}
	n = strlen(line);
	line[n] = '\n'; /* over json_dumps's NUL: n + 1 bytes are ours */
	/* A refused caller finds the socket closed (EPIPE) after the daemon
	 * sent its reason: read that rather than report the write. */
	if (write(fd, line, n + 1) != (ssize_t)(n + 1) && errno != EPIPE) {
		fprintf(stderr, "egressctl: %s: write: %s\n", path, strerror(errno));
		free(line);
		close(fd);
		return -1;
	}
	free(line);
	return fd;
}

/* Send {"cmd": cmd} and return the last response line parsed, or NULL
 * with a message printed. */
static json_t *ctl_request(const char *path, const char *cmd)
{
	char *buf = NULL, *line, *nl;
	size_t len = 0, cap = 0;
	json_t *reply = NULL, *req;
	json_error_t jerr;
	int fd;

	req = json_pack("{s:s}", "cmd", cmd);
	fd = req ? ctl_send(path, req) : -1;
	json_decref(req);
	if (fd < 0)
		return NULL;
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

static const char *safe(const char *s, char *buf, size_t len);

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
		printf("  kernel denied  %lld since start (refused at connect(); "
		       "each is an audit record too)\n", jint(s, "kernel_denied"));
	v = json_object_get(s, "proxy");
	if (json_is_object(v)) {
		printf("  proxy          %lld workers; timeouts (ms): peek %lld, connect %lld, "
		       "resolve %lld, idle %lld\n", jint(v, "workers"), jint(v, "peek_timeout_ms"),
		       jint(v, "connect_timeout_ms"), jint(v, "resolve_timeout_ms"),
		       jint(v, "idle_timeout_ms"));
		printf("  limits         %lld connections per cgroup, %lld in all; kernel relay ",
		       jint(v, "max_conns_per_cgroup"), jint(v, "max_conns"));
		if (jint(v, "kernel_relay_after"))
			printf("after %lld bytes\n", jint(v, "kernel_relay_after"));
		else
			printf("off\n");
	}

	a = json_object_get(s, "policies");
	for (i = 0; i < json_array_size(a) && (v = json_array_get(a, i)); i++) {
		int l = (int)strlen(jstr(v, "name", ""));

		wn = l > wn ? l : wn;
	}
	printf("\n  %-*s  %-7s  %-7s  %5s  %4s  %9s  %s\n", wn, "POLICY", "MODE", "INBOUND",
	       "ALLOW", "DENY", "INTERCEPT", "SOURCE");
	for (i = 0; i < json_array_size(a) && (v = json_array_get(a, i)); i++)
		printf("  %-*s  %-7s  %-7s  %5lld  %4lld  %9lld  %s%s%s%s\n", wn,
		       jstr(v, "name", "?"), jstr(v, "mode", "?"), jstr(v, "inbound", "?"),
		       jint(v, "allow"), jint(v, "deny"),
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
	for (i = 0; i < json_array_size(a) && (v = json_array_get(a, i)); i++) {
		char cg[1024]; /* a delegate names its cgroups */

		printf("  %-12lld  %-20lld  %-9s  %-7lld  %s\n", jint(v, "inode"),
		       jint(v, "cookie"),
		       !json_is_true(json_object_get(v, "listening")) ? "failed" :
		       json_is_true(json_object_get(v, "ipv6")) ? "v4+v6" : "v4",
		       jint(v, "pid"), safe(jstr(v, "cgroup", NULL), cg, sizeof(cg)));
	}
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
		json_dumpf(s, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
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
	if (json_is_true(json_object_get(reply, "ok"))) {
		const char *note = json_string_value(json_object_get(reply, "note"));

		printf("egressctl: reloaded\n");
		if (note)
			fprintf(stderr, "egressctl: %s\n", note);
	} else {
		ret = ctl_failed(reply);
	}
	json_decref(reply);
	return ret;
}

/* --- conns, log -f -------------------------------------------------------- */

/* Agent-chosen text (comm, SNI, Host) goes to a terminal: no control
 * bytes (C1 and bidirectional overrides in UTF-8 too), no spaces that
 * would shift columns. */
static const char *safe(const char *s, char *buf, size_t len)
{
	size_t o = 0, hazard = 0;

	if (!s || !*s)
		return "-";
	for (; *s && o + 5 < len; s++) {
		unsigned char ch = (unsigned char)*s;

		if (!hazard)
			hazard = egr_utf8_hazard((const unsigned char *)s);
		if (ch <= 0x20 || ch == 0x7f || ch == '\\' || hazard)
			o += (size_t)snprintf(buf + o, len - o, "\\x%02x", ch);
		else
			buf[o++] = (char)ch;
		if (hazard)
			hazard--;
	}
	buf[o] = '\0';
	return buf;
}

static void human_bytes(long long n, char *out, size_t len)
{
	static const char units[] = "KMGTP";
	double v = (double)n;
	int u = -1;

	if (n < 1024) {
		snprintf(out, len, "%lld", n);
		return;
	}
	while (v >= 1024 && u < 4) {
		v /= 1024;
		u++;
	}
	snprintf(out, len, v < 10 ? "%.1f%c" : "%.0f%c", v, units[u]);
}

static void human_age(long long ms, char *out, size_t len)
{
	long long s = ms / 1000;

	if (s < 60)
		snprintf(out, len, "%lld.%llds", s, ms % 1000 / 100);
	else if (s < 3600)
		snprintf(out, len, "%lldm%02llds", s / 60, s % 60);
	else if (s < 86400)
		snprintf(out, len, "%lldh%02lldm", s / 3600, s % 3600 / 60);
	else
		snprintf(out, len, "%lldd%02lldh", s / 86400, s % 86400 / 3600);
}

/* "name:443 (192.0.2.10)" or "192.0.2.10:443" or "[2001:db8::1]:443" */
static void conn_dest(json_t *c, char *out, size_t len)
{
	const char *dst = jstr(c, "dst", NULL);
	char a[80];

	if (!dst) {
		snprintf(out, len, "? (from %s:%lld)", jstr(c, "peer", "?"), jint(c, "peer_port"));
		return;
	}
	if (strchr(dst, ':'))
		snprintf(a, sizeof(a), "[%s]:%lld", dst, jint(c, "dst_port"));
	else
		snprintf(a, sizeof(a), "%s:%lld", dst, jint(c, "dst_port"));
	snprintf(out, len, "%s", a);
}

static const char *conn_name(json_t *c, char *buf, size_t len)
{
	const char *n = jstr(c, "sni", NULL);

	if (!n)
		n = jstr(c, "host", NULL);
	if (!n && jstr(c, "dns_name", NULL)) {
		char t[300];

		snprintf(buf, len, "%s(dns)", safe(jstr(c, "dns_name", ""), t, sizeof(t)));
		return buf;
	}
	return safe(n, buf, len);
}

static void print_conns(json_t *a, long long total)
{
	int wcg = (int)strlen("CGROUP"), wd = (int)strlen("DESTINATION"), wn = (int)strlen("NAME");
	int wc = (int)strlen("COMM");
	char b1[300], b2[300], up[48], down[48], age[48];
	json_t *c;
	size_t i;

	json_array_foreach(a, i, c) {
		int l = (int)strlen(safe(jstr(c, "cgroup", NULL), b1, sizeof(b1)));

		wcg = l > wcg ? (l < 40 ? l : 40) : wcg;
		conn_dest(c, b1, sizeof(b1));
		l = (int)strlen(b1);
		wd = l > wd ? l : wd;
		l = (int)strlen(conn_name(c, b1, sizeof(b1)));
		wn = l > wn ? (l < 40 ? l : 40) : wn;
		l = (int)strlen(safe(jstr(c, "comm", NULL), b1, sizeof(b1)));
		wc = l > wc ? l : wc;
	}
	printf("%-8s %7s  %-*s  %-*s  %-*s  %-*s  %-7s  %-7s  %-12s %7s %7s\n", "AGE", "PID",
	       wc, "COMM", wcg, "CGROUP", wd, "DESTINATION", wn, "NAME", "STATE", "VERDICT",
	       "POLICY", "UP", "DOWN");
	json_array_foreach(a, i, c) {
		char dest[128], pid[16];

		human_age(jint(c, "age_ms"), age, sizeof(age));
		human_bytes(jint(c, "bytes_up"), up, sizeof(up));
		human_bytes(jint(c, "bytes_down"), down, sizeof(down));
		conn_dest(c, dest, sizeof(dest));
		if (json_object_get(c, "pid"))
			snprintf(pid, sizeof(pid), "%lld", jint(c, "pid"));
		else
			snprintf(pid, sizeof(pid), "-");
		printf("%-8s %7s  %-*s  ", age, pid, wc, safe(jstr(c, "comm", NULL), b1, sizeof(b1)));
		printf("%-*s  %-*s  ", wcg, safe(jstr(c, "cgroup", NULL), b1, sizeof(b1)), wd, dest);
		printf("%-*s  %-7s  %-7s  %-12s %7s %7s\n", wn, conn_name(c, b2, sizeof(b2)),
		       jstr(c, "state", "?"), jstr(c, "verdict", "?"),
		       safe(jstr(c, "policy", NULL), b1, sizeof(b1)), up, down);
	}
	if ((long long)json_array_size(a) < total)
		printf("(%lld more not listed)\n", total - (long long)json_array_size(a));
	else if (!json_array_size(a))
		printf("(no live connections)\n");
}

static int cmd_conns(int argc, char **argv)
{
	const char *sock = DCONFIG_DEFAULT_CONTROL;
	json_t *reply, *a;
	int json = 0, ret = 0;

	if (parse_socket_opts(argc, argv, "conns", &sock, &json))
		return 2;
	reply = ctl_request(sock, "conns");
	if (!reply)
		return 1;
	a = json_object_get(reply, "conns");
	if (!json_is_true(json_object_get(reply, "ok")) || !json_is_array(a)) {
		ret = ctl_failed(reply);
	} else if (json) {
		json_object_del(reply, "ok");
		json_dumpf(reply, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENSURE_ASCII);
		printf("\n");
	} else {
		print_conns(a, jint(reply, "total"));
	}
	json_decref(reply);
	return ret;
}

/* One decision, as a line of text. */
static void print_record(json_t *r)
{
	char b1[300], b2[300], dest[128];
	const char *origin = jstr(r, "origin", "");
	const char *name = jstr(r, "sni", NULL);

	if (!name)
		name = jstr(r, "host", NULL);
	printf("%s %-5s %s[%lld] %s -> ", jstr(r, "time", "?"), jstr(r, "verdict", "?"),
	       safe(jstr(r, "comm", NULL), b1, sizeof(b1)), jint(r, "pid"),
	       safe(jstr(r, "cgroup", NULL), b2, sizeof(b2)));
	conn_dest(r, dest, sizeof(dest));
	if (!strcmp(origin, "dns"))
		printf("DNS %s", safe(name, b1, sizeof(b1)));
	else if (name)
		printf("%s:%lld (%s)", safe(name, b1, sizeof(b1)), jint(r, "dst_port"),
		       jstr(r, "dst", "?"));
	else
		printf("%s", dest);
	printf(" %s", jstr(r, "reason", "?"));
	if (jstr(r, "rule", NULL))
		printf(" rule=%s", safe(jstr(r, "rule", NULL), b1, sizeof(b1)));
	printf(" policy=%s origin=%s", safe(jstr(r, "policy", NULL), b1, sizeof(b1)),
	       origin[0] ? origin : "-");
	if (jint(r, "bytes_up") || jint(r, "bytes_down"))
		printf(" up=%lld down=%lld", jint(r, "bytes_up"), jint(r, "bytes_down"));
	if (jstr(r, "detail", NULL))
		printf(" detail=%s", safe(jstr(r, "detail", NULL), b1, sizeof(b1)));
	printf("\n");
}

static volatile sig_atomic_t log_stop;

static void on_stop(int sig)
{
	(void)sig;
	log_stop = 1;
}

static int cmd_log(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "follow", no_argument, NULL, 'f' },
		{ "cgroup", required_argument, NULL, 'c' },
		{ "verdict", required_argument, NULL, 'V' },
		{ "json", no_argument, NULL, 'j' },
		{ "socket", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *sock = DCONFIG_DEFAULT_CONTROL, *glob = NULL, *verdict = NULL, *why;
	struct sigaction sa = { .sa_handler = on_stop };
	int c, follow = 0, json = 0, fd, ret = 1;
	char *buf = NULL;
	size_t len = 0, cap = 1 << 20;
	bool started = false;
	json_t *req;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "+fc:s:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'f':
			follow = 1;
			break;
		case 'c':
			why = dconfig_glob_check(optarg);
			if (why) {
				fprintf(stderr, "egressctl log: --cgroup: '%s': %s\n", optarg, why);
				return 2;
			}
			glob = optarg;
			break;
		case 'V':
			if (strcmp(optarg, "allow") && strcmp(optarg, "deny") &&
			    strcmp(optarg, "audit")) {
				fprintf(stderr, "egressctl log: --verdict: '%s': not allow, deny "
					"or audit\n", optarg);
				return 2;
			}
			verdict = optarg;
			break;
		case 'j':
			json = 1;
			break;
		case 's':
			sock = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			fprintf(stderr, "egressctl log: unknown option '%s' (see egressctl help)\n",
				argv[optind - 1]);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "egressctl log: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	if (!follow) {
		fprintf(stderr, "egressctl log: only -f (follow) is supported; past decisions "
			"are in the daemon's audit log (audit.path)\n");
		return 2;
	}
	req = json_pack("{s:s, s:b}", "cmd", "log", "follow", 1);
	if (req && glob)
		json_object_set_new(req, "cgroup", json_string(glob));
	if (req && verdict)
		json_object_set_new(req, "verdict", json_string(verdict));
	fd = req ? ctl_send(sock, req) : -1;
	json_decref(req);
	if (fd < 0)
		return 1;
	buf = malloc(cap + 1);
	if (!buf) {
		close(fd);
		return 1;
	}
	/* Interrupted: stop cleanly (exit 0); no SA_RESTART, so poll/read
	 * return EINTR. */
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	setvbuf(stdout, NULL, _IOLBF, 0);
	while (!log_stop) {
		struct pollfd pfd = { fd, POLLIN, 0 };
		char *line, *nl;
		ssize_t r;

		/* No answer at all within the client budget: something is wrong;
		 * once following, silence only means no decisions. */
		if (poll(&pfd, 1, started ? -1 : CTL_TIMEOUT_MS) == 0) {
			fprintf(stderr, "egressctl: %s: no answer from the daemon within %d s\n",
				sock, CTL_TIMEOUT_MS / 1000);
			break;
		}
		if (log_stop)
			break;
		r = read(fd, buf + len, cap - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			fprintf(stderr, "egressctl: %s: the daemon closed the connection%s\n", sock,
				started ? " (stopped?)" : " without answering");
			break;
		}
		len += (size_t)r;
		buf[len] = '\0';
		for (line = buf; (nl = memchr(line, '\n', len - (size_t)(line - buf)));
		     line = nl + 1) {
			json_error_t jerr;
			json_t *o;

			*nl = '\0';
			o = json_loads(line, 0, &jerr);
			if (!json_is_object(o)) {
				fprintf(stderr, "egressctl: %s: unreadable line: %s\n", sock, jerr.text);
			} else if (json_object_get(o, "ok")) {
				/* control lines: the start, or why the daemon ends it */
				if (!json_is_true(json_object_get(o, "ok"))) {
					ret = ctl_failed(o);
					json_decref(o);
					goto out;
				}
				started = true;
				fprintf(stderr, "egressctl: following decisions%s%s%s%s "
					"(Ctrl-C to stop)\n", glob ? " of cgroups " : "",
					glob ? glob : "", verdict ? ", verdict " : "",
					verdict ? verdict : "");
			} else if (json_object_get(o, "lost")) {
				fprintf(stderr, "egressctl: %lld decisions were not delivered (the "
					"daemon's queue was full); they are in the audit log\n",
					jint(o, "lost"));
			} else if (json) {
				printf("%s\n", line);
			} else {
				print_record(o);
			}
			json_decref(o);
		}
		len -= (size_t)(line - buf);
		memmove(buf, line, len);
		if (len == cap) {
			fprintf(stderr, "egressctl: %s: a line longer than %zu bytes\n", sock, cap);
			break;
		}
	}
	if (log_stop)
		ret = 0;
out:
	free(buf);
	close(fd);
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
	if (!strcmp(argv[1], "conns"))
		return cmd_conns(argc - 1, argv + 1);
	if (!strcmp(argv[1], "log"))
		return cmd_log(argc - 1, argv + 1);
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
