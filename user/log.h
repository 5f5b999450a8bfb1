/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/* Diagnostics to stderr with levels. Audit records do not go here (audit.h). */
#ifndef EGR_LOG_H
#define EGR_LOG_H

#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>

enum egr_log_level {
	EGR_LOG_ERROR = 0,
	EGR_LOG_WARN = 1,
	EGR_LOG_INFO = 2,
	EGR_LOG_DEBUG = 3,
};

void log_set_level(enum egr_log_level level);
enum egr_log_level log_get_level(void);
/* Prefix printed before every line, e.g. "egressd". */
void log_set_prefix(const char *prefix);
void log_msg(enum egr_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void log_vmsg(enum egr_log_level level, const char *fmt, va_list ap);

#define log_error(...) log_msg(EGR_LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(EGR_LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(EGR_LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(EGR_LOG_DEBUG, __VA_ARGS__)

/* Names a thread for top -H, perf and /proc/PID/task/TID/comm, e.g.
 * "egressd-prx0" (at most 15 bytes; longer is cut). Best effort. */
void thread_name(pthread_t t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* An error message into err (at most errlen bytes; nothing if err is NULL
 * or errlen 0), for functions that report why they failed. */
void egr_seterr(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* The length of what a terminal would obey rather than show at s, beyond
 * ASCII controls, in valid UTF-8: a C1 control (U+0080-U+009F: CSI and
 * the like) or a bidirectional override or isolate (U+202A-U+202E,
 * U+2066-U+2069: text that reads otherwise than it is); 0 if none starts
 * there. s is NUL-terminated. */
static inline size_t egr_utf8_hazard(const unsigned char *s)
{
	if (s[0] == 0xc2 && s[1] >= 0x80 && s[1] <= 0x9f)
		return 2;
	if (s[0] == 0xe2 && s[1] == 0x80 && s[2] >= 0xaa && s[2] <= 0xae)
		return 3;
	if (s[0] == 0xe2 && s[1] == 0x81 && s[2] >= 0xa6 && s[2] <= 0xa9)
		return 3;
	return 0;
}

#endif
