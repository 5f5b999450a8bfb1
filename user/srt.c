// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * sandbox-runtime settings import. The acceptance rules mirror
 * sandbox-runtime's own (src/sandbox/sandbox-config.ts and
 * domain-pattern.ts: isValidDomainPattern, hasValidIpv6Bracketing,
 * splitDomainPatternPort), so a file it refuses is refused here too, and
 * what it accepts is then parsed by policy.c like any egressd rule.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "jpos.h"
#include "srt.h"
#include "log.h"

#define SRT_MAX_FILE (1024 * 1024)
#define SRT_MAX_ENTRIES 10000

/* sandbox-runtime's port suffix: 1-65535, digits only, no leading zero;
 * anything else is not a port and stays part of the host. */
static bool srt_port(const char *s)
{
	size_t n = strlen(s), i;

	if (!n || n > 5 || s[0] == '0')
		return false;
	for (i = 0; i < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return atoi(s) <= 65535;
}

/* The host part as sandbox-runtime validates it (isValidDomainPattern). */
static const char *srt_host_check(const char *h, bool denied)
{
	size_t n = strlen(h);

	if (denied && !strcmp(h, "*"))
		return NULL;
	if (strstr(h, "://") || strchr(h, '/'))
		return "URLs and paths are not domain patterns; write the host name "
		       "(\"example.com\" or \"example.com:443\")";
	if (strchr(h, ':'))
		return "invalid port (1-65535)";
	if (!strcmp(h, "localhost"))
		return NULL;
	if (!strcmp(h, "*"))
		return "a bare \"*\" is only accepted in deniedDomains";
	if (!strncmp(h, "*.", 2)) {
		const char *d = h + 2, *p;

		if (!strchr(d, '.') || d[0] == '.' || d[strlen(d) - 1] == '.')
			return "too broad: \"*.\" must be followed by at least two labels "
			       "(\"*.example.com\")";
		for (p = d; *p; p++)
			if (*p == '.' && p[1] == '.')
				return "empty label";
		if (strchr(d, '*'))
			return "\"*\" is only allowed as a leading \"*.\"";
		return NULL;
	}
	if (strchr(h, '*'))
		return "\"*\" is only allowed as a leading \"*.\"";
	if (!strchr(h, '.'))
		return "a domain needs a dot (only \"localhost\" may go without one)";
	if (h[0] == '.' || h[n - 1] == '.')
		return "leading or trailing \".\"";
	return NULL;
}

int srt_translate(const char *entry, bool denied, char *out, size_t outlen,
		  bool *deny_all, char *err, size_t errlen)
{
	char host[SRT_RULE_MAX], tmp[SRT_RULE_MAX + 8];
	const char *port = NULL, *why, *first = strchr(entry, ':');
	struct policy *probe;
	size_t n = strlen(entry);
	int r;

	*deny_all = false;
	if (outlen)
		out[0] = '\0';
	if (!n) {
		egr_seterr(err, errlen, "empty entry");
		return -EINVAL;
	}
	if (n + 3 > SRT_RULE_MAX || n + 3 > outlen) {
		egr_seterr(err, errlen, "longer than %d characters", SRT_RULE_MAX - 3);
		return -EINVAL;
	}
	/* hasValidIpv6Bracketing: two colons mean IPv6, which needs [] */
	if (first && strchr(first + 1, ':') && entry[0] != '[') {
		egr_seterr(err, errlen, "an IPv6 address must be in brackets "
		       "(\"[2001:db8::1]\" or \"[2001:db8::1]:443\")");
		return -EINVAL;
	}
	if (entry[0] == '[') {
		const char *close = strchr(entry, ']');
		struct egr_addr a;

		if (!close) {
			egr_seterr(err, errlen, "missing \"]\"");
			return -EINVAL;
		}
		memcpy(host, entry + 1, (size_t)(close - entry - 1));
		host[close - entry - 1] = '\0';
		if (close[1] == ':' && srt_port(close + 2))
			port = close + 2;
		else if (close[1]) {
			egr_seterr(err, errlen, "invalid port after \"]\" (1-65535)");
			return -EINVAL;
		}
		if (!strchr(host, ':') || addr_parse(host, &a)) {
			egr_seterr(err, errlen, "not an IPv6 address in brackets");
			return -EINVAL;
		}
		/* egressd's own spelling of the same address and port */
		snprintf(tmp, sizeof(tmp), "[%s]:%s", host, port ? port : "*");
	} else {
		const char *colon = strrchr(entry, ':');

		memcpy(host, entry, n + 1);
		if (colon && srt_port(colon + 1)) {
			host[colon - entry] = '\0';
			port = colon + 1;
		}
		why = srt_host_check(host, denied);
		if (why) {
			egr_seterr(err, errlen, "%s", why);
			return -EINVAL;
		}
		if (!strcmp(host, "*")) {
			if (port) {
				egr_seterr(err, errlen, "\"*:%s\" (every host on one port) has no "
				       "egressd equivalent; deny the hosts by name", port);
				return -EINVAL;
			}
			*deny_all = true;
			return 0;
		}
		snprintf(tmp, sizeof(tmp), "%s:%s", host, port ? port : "*");
	}
	/* policy.c has the last word on what a rule is (and its canonical
	 * text, which is what goes out) */
	probe = policy_new("srt");
	if (!probe) {
		egr_seterr(err, errlen, "out of memory");
		return -ENOMEM;
	}
	r = policy_add_rule(probe, denied, tmp, NULL, err, errlen);
	if (!r)
		snprintf(out, outlen, "%s", denied ? probe->deny[0].text : probe->allow[0].text);
	policy_free(probe);
	return r;
}

/* Copy the rules of p and add into a fresh policy: the way to add to p
 * with nothing half-applied through policy.c's public interface alone. */
static int merged(const struct policy *p, const struct policy *add, bool drop_allow,
		  struct policy **out, char *err, size_t errlen)
{
	const struct policy *src[2] = { p, add };
	struct policy *q = policy_new(p->name);
	size_t s, i;
	int r = 0;

	if (!q) {
		egr_seterr(err, errlen, "out of memory");
		return -ENOMEM;
	}
	q->mode = p->mode;
	for (s = 0; s < 2 && !r; s++) {
		for (i = 0; i < src[s]->n_allow && !r && !drop_allow; i++)
			r = policy_add_rule(q, false, src[s]->allow[i].text,
					    src[s]->allow[i].source, err, errlen);
		for (i = 0; i < src[s]->n_deny && !r; i++)
			r = policy_add_rule(q, true, src[s]->deny[i].text,
					    src[s]->deny[i].source, err, errlen);
	}
	if (r) {
		policy_free(q);
		return r;
	}
	*out = q;
	return 0;
}

struct srt_ctx {
	const char *file;
	char *err;
	size_t errlen;
};

static int load_list(struct srt_ctx *c, struct policy *tmp, bool denied, const char *prefix,
		     const json_t *net, const struct jpos *nj, bool *deny_all)
{
	const char *key = denied ? "deniedDomains" : "allowedDomains";
	const json_t *arr = json_object_get(net, key), *v;
	const struct jpos *aj = jpos_key(nj, key);
	char rule[SRT_RULE_MAX], why[256], q[160], src[512];
	size_t i;
	int r;

	if (!arr || json_is_null(arr))
		return 0;
	if (!json_is_array(arr)) {
		egr_seterr(c->err, c->errlen, "%s:%d: %s.%s: expected an array of domain patterns, got %s",
		       c->file, jpos_line(aj, 1), prefix, key, jpos_json_type(arr));
		return -EINVAL;
	}
	if (json_array_size(arr) > SRT_MAX_ENTRIES) {
		egr_seterr(c->err, c->errlen, "%s:%d: %s.%s: more than %d entries", c->file,
		       jpos_line(aj, 1), prefix, key, SRT_MAX_ENTRIES);
		return -E2BIG;
	}
	json_array_foreach(arr, i, v) {
		int line = jpos_line(jpos_idx(aj, i), jpos_line(aj, 1));
		bool all;

		if (!json_is_string(v)) {
			egr_seterr(c->err, c->errlen, "%s:%d: %s.%s[%zu]: expected a domain pattern string, got %s",
			       c->file, line, prefix, key, i, jpos_json_type(v));
			return -EINVAL;
		}
		if (strlen(json_string_value(v)) != json_string_length(v)) {
			r = -EINVAL;
			snprintf(why, sizeof(why), "contains a NUL byte");
		} else {
			r = srt_translate(json_string_value(v), denied, rule, sizeof(rule), &all,
					  why, sizeof(why));
		}
		if (r) {
			egr_seterr(c->err, c->errlen, "%s:%d: %s.%s[%zu]: %s: %s", c->file, line, prefix,
			       key, i, jpos_quote(json_string_value(v), q, sizeof(q)), why);
			return r;
		}
		if (all) {
			*deny_all = true;
			continue;
		}
		snprintf(src, sizeof(src), "%s:%d", c->file, line);
		r = policy_add_rule(tmp, denied, rule, src, why, sizeof(why));
		if (r) {
			egr_seterr(c->err, c->errlen, "%s:%d: %s.%s[%zu]: %s", c->file, line, prefix, key,
			       i, why);
			return r;
		}
	}
	return 0;
}

int srt_load_buffer(struct policy *p, const char *name, const char *buf, size_t len,
		    char *err, size_t errlen)
{
	struct srt_ctx c = { name ? name : "<settings>", err, errlen };
	const json_t *net = NULL, *top, *sb, *snet = NULL;
	const struct jpos *nj = NULL;
	struct jpos *pos = NULL;
	struct policy *tmp = NULL, *q = NULL;
	const char *prefix = "network";
	bool deny_all = false;
	json_error_t jerr;
	json_t *root;
	int r;

	if (len > SRT_MAX_FILE) {
		egr_seterr(err, errlen, "%s: larger than %d bytes", c.file, SRT_MAX_FILE);
		return -EFBIG;
	}
	/* As JSON.parse does: repeated keys are allowed, the last one wins. */
	root = json_loadb(buf, len, 0, &jerr);
	if (!root) {
		for (char *t = jerr.text; *t; t++)
			if ((unsigned char)*t < 0x20 || (unsigned char)*t >= 0x7f)
				*t = '?';
		egr_seterr(err, errlen, "%s:%d: syntax error: %s", c.file,
		       jerr.line > 0 ? jerr.line : 1, jerr.text);
		return -EINVAL;
	}
	r = jpos_build(buf, len, false, &pos);
	if (r) {
		if (r == -ENOMEM)
			egr_seterr(err, errlen, "%s: out of memory", c.file);
		else
			egr_seterr(err, errlen, "%s:1: syntax error: unexpected bytes (NUL or other "
			       "text the JSON walker refuses)", c.file);
		goto out;
	}
	if (!json_is_object(root)) {
		egr_seterr(err, errlen, "%s:%d: top level: expected an object, got %s", c.file,
		       pos->line, jpos_json_type(root));
		r = -EINVAL;
		goto out;
	}
	top = json_object_get(root, "network");
	sb = json_object_get(root, "sandbox");
	if (json_is_object(sb))
		snet = json_object_get(sb, "network");
	if (top && snet) {
		egr_seterr(err, errlen, "%s:%d: sandbox.network: both \"network\" (line %d) and "
		       "\"sandbox.network\" are present; keep one", c.file,
		       jpos_key(jpos_key(pos, "sandbox"), "network")->key_line,
		       jpos_key(pos, "network")->key_line);
		r = -EINVAL;
		goto out;
	}
	if (top) {
		net = top;
		nj = jpos_key(pos, "network");
	} else if (snet) {
		net = snet;
		nj = jpos_key(jpos_key(pos, "sandbox"), "network");
		prefix = "sandbox.network";
	} else {
		egr_seterr(err, errlen, "%s:%d: network: no network settings (expected \"network\" "
		       "as sandbox-runtime writes it, or \"sandbox.network\" as in Claude Code's "
		       "settings.json)", c.file, pos->line);
		r = -EINVAL;
		goto out;
	}
	if (!json_is_object(net)) {
		egr_seterr(err, errlen, "%s:%d: %s: expected an object, got %s", c.file,
		       jpos_line(nj, 1), prefix, jpos_json_type(net));
		r = -EINVAL;
		goto out;
	}
	tmp = policy_new(p->name);
	if (!tmp) {
		egr_seterr(err, errlen, "%s: out of memory", c.file);
		r = -ENOMEM;
		goto out;
	}
	r = load_list(&c, tmp, false, prefix, net, nj, &deny_all);
	if (!r)
		r = load_list(&c, tmp, true, prefix, net, nj, &deny_all);
	if (r)
		goto out;
	r = merged(p, tmp, deny_all, &q, err, errlen);
	if (r) {
		char why[256];

		snprintf(why, sizeof(why), "%s", err ? err : "");
		egr_seterr(err, errlen, "%s: %s", c.file, why);
		goto out;
	}
	/* commit: p takes q's rule lists, q takes p's old ones to be freed;
	 * everything else in p (name, mode, other settings) stays */
	{
		struct policy_rule *ta = p->allow, *td = p->deny;
		size_t na = p->n_allow, nd = p->n_deny;

		p->allow = q->allow;
		p->n_allow = q->n_allow;
		p->deny = q->deny;
		p->n_deny = q->n_deny;
		q->allow = ta;
		q->n_allow = na;
		q->deny = td;
		q->n_deny = nd;
	}
out:
	policy_free(q);
	policy_free(tmp);
	jpos_free(pos);
	json_decref(root);
	return r;
}

int srt_load_file(struct policy *p, const char *path, char *err, size_t errlen)
{
	struct stat st;
	char *buf = NULL;
	size_t len = 0;
	int fd, ret;

	/* O_NONBLOCK: a FIFO named here must not hang the daemon */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		ret = -errno;
		egr_seterr(err, errlen, "%s: %s", path, strerror(-ret));
		return ret;
	}
	if (fstat(fd, &st)) {
		ret = -errno;
		egr_seterr(err, errlen, "%s: %s", path, strerror(-ret));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		ret = -EINVAL;
		egr_seterr(err, errlen, "%s: not a regular file", path);
		goto out;
	}
	buf = malloc(SRT_MAX_FILE + 1);
	if (!buf) {
		ret = -ENOMEM;
		egr_seterr(err, errlen, "%s: out of memory", path);
		goto out;
	}
	while (len < SRT_MAX_FILE + 1) {
		ssize_t r = read(fd, buf + len, SRT_MAX_FILE + 1 - len);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			ret = -errno;
			egr_seterr(err, errlen, "%s: %s", path, strerror(-ret));
			goto out;
		}
		if (!r)
			break;
		len += (size_t)r;
	}
	ret = srt_load_buffer(p, path, buf, len, err, errlen);
out:
	free(buf);
	close(fd);
	return ret;
}
