#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>

#include "bridge/cli.h"

int cli_int_parse(const char *s, long long min, long long max, long long *ret)
{
	const char *p = s[0] == '-' ? s + 1 : s;
	char *end;
	long long v;

	/* strtoll alone takes " 7", "+7" and "7x" (up to the x) */
	if (*p < '0' || *p > '9')
		return -1;
	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno || *end || v < min || v > max)
		return -1;
	*ret = v;
	return 0;
}

/* Edit distance of two short strings (option names), capped at 9. */
static int distance(const char *a, size_t na, const char *b, size_t nb)
{
	int row[64], prev, tmp;

	if (na >= 63 || nb >= 63)
		return 9;
	for (size_t j = 0; j <= nb; j++)
		row[j] = (int)j;
	for (size_t i = 1; i <= na; i++) {
		prev = row[0];
		row[0] = (int)i;
		for (size_t j = 1; j <= nb; j++) {
			int best = prev + (a[i - 1] != b[j - 1]);

			if (row[j] + 1 < best)
				best = row[j] + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			tmp = row[j];
			row[j] = best;
			prev = tmp;
		}
	}
	return row[nb];
}

void cli_option_error(const struct option *opts, int argc, char **argv, char *out, size_t cap)
{
	const char *arg = optind > 0 && optind <= argc ? argv[optind - 1] : NULL, *name;
	const char *best = NULL;
	size_t n;
	int best_d = 3;

	if (!arg || strncmp(arg, "--", 2) != 0) {
		if (optopt && strchr("?:", optopt) == NULL)
			snprintf(out, cap, "unknown option '-%c'", optopt);
		else
			snprintf(out, cap, "invalid option%s%s", arg ? " " : "", arg ? arg : "");
		return;
	}
	name = arg + 2;
	n = strcspn(name, "=");
	for (const struct option *o = opts; o->name; o++) {
		int d = distance(name, n, o->name, strlen(o->name));

		if (d == 0) { /* known, so its argument was missing */
			snprintf(out, cap, "option '--%s' needs an argument", o->name);
			return;
		}
		if (d < best_d) {
			best_d = d;
			best = o->name;
		}
	}
	if (best)
		snprintf(out, cap, "unknown option '%.*s'; did you mean --%s?", (int)(n + 2), arg,
			 best);
	else
		snprintf(out, cap, "unknown option '%.*s'", (int)(n + 2), arg);
}
