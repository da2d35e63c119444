#include <errno.h>
#include <stdarg.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>

#include "cli.h"
#include "bridge/diag.h"

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

int cli_usage(const char *cmd, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "webhook-bridge%s%s: ", cmd ? " " : "", cmd ? cmd : "");
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nTry 'webhook-bridge %s%s--help'.\n", cmd ? cmd : "", cmd ? " " : "");
	return 2;
}

/* The option name as written in arg ("--conf=x": "conf"), its length in *n. */
static const char *written_name(const char *arg, size_t *n)
{
	*n = strcspn(arg + 2, "=");
	return arg + 2;
}

/* Why getopt_long refused argv[optind - 1] (called with opterr = 0). */
static void option_error(const char *shortopts, const struct option *opts, int argc, char **argv,
			 char *out, size_t cap)
{
	const char *arg = optind > 0 && optind <= argc ? argv[optind - 1] : NULL, *name, *sp;
	const char *best = NULL;
	size_t n;
	int best_d = 3;

	if (!arg || strncmp(arg, "--", 2) != 0) {
		sp = optopt ? strchr(shortopts, optopt) : NULL;
		if (sp && sp[1] == ':')
			snprintf(out, cap, "option '-%c' needs an argument", optopt);
		else if (optopt && strchr("?:", optopt) == NULL)
			snprintf(out, cap, "unknown option '-%c'", optopt);
		else
			snprintf(out, cap, "invalid option%s%s", arg ? " " : "", arg ? arg : "");
		return;
	}
	name = written_name(arg, &n);
	for (const struct option *o = opts; o->name; o++) {
		int d = diag_edit_distance(name, n, o->name, strlen(o->name));

		if (d == 0) { /* known: its argument was missing, or one was given to a flag */
			snprintf(out, cap, "option '--%s' %s", o->name,
				 o->has_arg == no_argument ? "takes no argument"
							   : "needs an argument");
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

int cli_getopt(const char *cmd, int argc, char **argv, const char *shortopts,
	       const struct option *opts)
{
	char bad[200];
	int idx = -1, c;

	opterr = 0; /* option_error says it, in the one style */
	c = getopt_long(argc, argv, shortopts, opts, &idx);
	if (c == '?' || c == ':') {
		option_error(shortopts, opts, argc, argv, bad, sizeof(bad));
		cli_usage(cmd, "%s", bad);
		return '?';
	}
	if (c != -1 && idx >= 0) {
		/* the element it came from: the one before a separate argument */
		const char *arg = argv[optind - 1], *name;
		size_t n;

		if (optarg && optarg == argv[optind - 1] && optind >= 2)
			arg = argv[optind - 2];
		name = written_name(arg, &n);
		if (strncmp(arg, "--", 2) == 0 && n != strlen(opts[idx].name)) {
			cli_usage(cmd, "unknown option '--%.*s'; did you mean --%s?", (int)n, name,
				  opts[idx].name);
			return '?';
		}
	}
	return c;
}
