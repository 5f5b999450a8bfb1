// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* user/log.c: what reaches stderr. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "log.h"

/* stderr of fn(), as a string */
static char *captured(void (*fn)(void))
{
	char path[] = "/tmp/test_log_XXXXXX", *buf;
	int fd = mkstemp(path), saved;
	long n;
	FILE *f;

	assert_true(fd >= 0);
	fflush(stderr);
	saved = dup(STDERR_FILENO);
	assert_true(saved >= 0);
	assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
	fn();
	fflush(stderr);
	assert_int_equal(dup2(saved, STDERR_FILENO), STDERR_FILENO);
	close(saved);
	close(fd);
	f = fopen(path, "r");
	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	buf = calloc(1, (size_t)n + 1);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	unlink(path);
	return buf;
}

static void hostile(void)
{
	/* a cgroup name below a delegated subtree can hold any byte but '/' */
	log_error("cgroup %s has no binding", "/a\negressd: error: forged\r\x1b[2J");
}

/* A name with control characters cannot start a line of ours or steer
 * the terminal: other controls escaped, a newline's next line indented. */
static void test_untrusted_names(void **state)
{
	char *out;

	(void)state;
	log_set_prefix("egressd");
	out = captured(hostile);
	assert_string_equal(out, "egressd: error: cgroup /a\n"
				 "  egressd: error: forged\\x0d\\x1b[2J has no binding\n");
	free(out);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_untrusted_names),
	};

	return cmocka_run_group_tests_name("log", tests, NULL, NULL);
}
