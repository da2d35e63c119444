/*
 * proc_threads.h: the threads of this test process with a given name, read
 * from /proc (the store's checkpointer names its thread), for the tests of
 * store and queue.
 */
#ifndef BRIDGE_TESTS_PROC_THREADS_H
#define BRIDGE_TESTS_PROC_THREADS_H

#include <dirent.h>
#include <stdio.h>
#include <string.h>

/* How many, or -1 when /proc cannot be read. */
static inline int threads_named(const char *name)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)) != NULL) {
		char p[300], comm[32] = "";
		FILE *f;

		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "/proc/self/task/%s/comm", e->d_name);
		f = fopen(p, "r");
		if (!f)
			continue;
		if (fgets(comm, sizeof(comm), f))
			comm[strcspn(comm, "\n")] = '\0';
		fclose(f);
		n += strcmp(comm, name) == 0;
	}
	closedir(d);
	return n;
}

#endif
