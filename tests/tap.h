/*
 * tap.h: minimal TAP producer for the C unit tests (meson `protocol: 'tap'`).
 * Each check prints "ok N - name" or "not ok N - name" with a diagnostic;
 * tap_done() prints the plan and returns the exit status.
 */
#ifndef BRIDGE_TESTS_TAP_H
#define BRIDGE_TESTS_TAP_H

#include <stdio.h>
#include <string.h>

static int tap_n, tap_failed;

static inline int tap_ok(int cond, const char *name, const char *file, int line)
{
	tap_n++;
	printf("%sok %d - %s\n", cond ? "" : "not ", tap_n, name);
	if (!cond) {
		tap_failed++;
		printf("#   failed at %s:%d\n", file, line);
	}
	fflush(stdout);
	return cond;
}

static inline int tap_is_str(const char *got, const char *want, const char *name,
			     const char *file, int line)
{
	int cond = (got && want) ? strcmp(got, want) == 0 : got == want;

	if (!tap_ok(cond, name, file, line)) {
		printf("#   got:  \"%s\"\n", got ? got : "(null)");
		printf("#   want: \"%s\"\n", want ? want : "(null)");
	}
	return cond;
}

static inline int tap_is_int(long long got, long long want, const char *name,
			     const char *file, int line)
{
	int cond = got == want;

	if (!tap_ok(cond, name, file, line))
		printf("#   got: %lld, want: %lld\n", got, want);
	return cond;
}

static inline int tap_done(void)
{
	printf("1..%d\n", tap_n);
	return tap_failed ? 1 : 0;
}

#define ok(cond, name) tap_ok(!!(cond), (name), __FILE__, __LINE__)
#define is_str(got, want, name) tap_is_str((got), (want), (name), __FILE__, __LINE__)
#define is_int(got, want, name) tap_is_int((long long)(got), (long long)(want), (name), __FILE__, __LINE__)

#endif
