// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"

static enum egr_log_level log_level = EGR_LOG_INFO;
static const char *log_prefix = "egressd";
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

void log_set_level(enum egr_log_level level)
{
	log_level = level;
}

enum egr_log_level log_get_level(void)
{
	return log_level;
}

void log_set_prefix(const char *prefix)
{
	log_prefix = prefix;
}

/*
 * Messages carry names egressd did not choose (cgroup paths below a
 * delegated subtree, SNI, DNS names): a control character in one must not
 * start a line of its own that reads as egressd's (a forged "egressd:
 * error: ..." in the journal) or steer the terminal. Other control
 * characters become \xNN, as do the bytes of a C1 control or a
 * bidirectional override in UTF-8 (egr_utf8_hazard); a newline (libbpf's
 * multi-line verifier logs) stays, but the line after it is indented, so
 * it never starts like one of ours.
 */
static void log_put_escaped(FILE *f, const char *s, size_t n)
{
	size_t hazard = 0;

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		/* s[i..n) may lack its NUL: look only inside it */
		if (!hazard && c >= 0xc2 && i + 1 < n) {
			char seq[4] = { s[i], s[i + 1], i + 2 < n ? s[i + 2] : 0, 0 };

			hazard = egr_utf8_hazard((const unsigned char *)seq);
		}
		if (c == '\n')
			fputs("\n  ", f);
		else if ((c < 0x20 && c != '\t') || c == 0x7f || hazard)
			fprintf(f, "\\x%02x", c);
		else
			fputc(c, f);
		if (hazard)
			hazard--;
	}
}

void log_vmsg(enum egr_log_level level, const char *fmt, va_list ap)
{
	static const char *const names[] = { "error", "warning", "info", "debug" };
	char buf[1024], *line = buf;
	va_list ap2;
	size_t n;
	int len;

	if (level > log_level)
		return;
	/* libbpf hands over whole verifier logs: no truncation */
	va_copy(ap2, ap);
	len = vsnprintf(buf, sizeof(buf), fmt, ap);
	if (len >= (int)sizeof(buf) && vasprintf(&line, fmt, ap2) < 0)
		line = buf;
	va_end(ap2);
	n = strlen(line);
	while (n && line[n - 1] == '\n')
		line[--n] = '\0';
	pthread_mutex_lock(&log_lock);
	if (level == EGR_LOG_INFO)
		fprintf(stderr, "%s: ", log_prefix);
	else
		fprintf(stderr, "%s: %s: ", log_prefix, names[level]);
	log_put_escaped(stderr, line, n);
	fputc('\n', stderr);
	pthread_mutex_unlock(&log_lock);
	if (line != buf)
		free(line);
}

void log_msg(enum egr_log_level level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vmsg(level, fmt, ap);
	va_end(ap);
}

void thread_name(pthread_t t, const char *fmt, ...)
{
	char name[16];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(name, sizeof(name), fmt, ap);
	va_end(ap);
	pthread_setname_np(t, name);
}

void egr_seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}
