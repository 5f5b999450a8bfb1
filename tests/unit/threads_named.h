/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/* Unit-test helper: count this process's threads by name. Include after
 * cmocka.h (it asserts). */
#ifndef TEST_THREADS_NAMED_H
#define TEST_THREADS_NAMED_H

#include <dirent.h>
#include <stdio.h>
#include <string.h>

/* Threads of this process named `name` (/proc/self/task/TID/comm). */
static inline int threads_named(const char *name)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int n = 0;

	assert_non_null(d);
	while ((e = readdir(d))) {
		char path[300], comm[32] = "";
		FILE *fp;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
		fp = fopen(path, "r");
		if (!fp)
			continue; /* the thread ended meanwhile */
		if (fgets(comm, sizeof(comm), fp))
			comm[strcspn(comm, "\n")] = '\0';
		fclose(fp);
		n += !strcmp(comm, name);
	}
	closedir(d);
	return n;
}

#endif
