/*
 * webhook-bridge: the command table.  Each command lives in a file of its
 * own (serve.c, check_cmd.c, map_cmd.c, queue_cmd.c, diff.c, report.c,
 * replay.c, learn.c, cutover_cmd.c); this file picks one by name, answers
 * --help and --version, and turns output that never reached stdout into a
 * failure.
 * Exit codes: 0 success, 1 input or configuration that cannot be used,
 * 2 usage errors (and, for `map`, configuration errors).
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <libconfig.h>
#include <libpq-fe.h>
#include <openssl/crypto.h>
#include <sqlite3.h>
#include <yajl/yajl_version.h>

#include "cli.h"
#include "learn.h"

static const char usage_main[] =
	"usage: webhook-bridge <command> [options]\n"
	"\n"
	"Accepts Qualifio webhook 1.0 posts, rewrites them into webhook 2.0 payloads\n"
	"with mapping-variable rules, and forwards them signed.\n"
	"\n"
	"commands:\n"
	"  serve --config FILE            run the proxy\n"
	"  map --mapping FILE [INPUT]     map one v1 payload (file or stdin) to v2 on stdout\n"
	"  check --config FILE | --mapping FILE\n"
	"                                 load and validate, report every error as file:line\n"
	"  queue (--config FILE | --store PATH) list | show ID | retry ID|--all | purge ... | "
	"stats | recover\n"
	"                                 inspect and repair queued deliveries (while serve runs)\n"
	"  diff --mapping FILE V1.json    provenance: every v2 value and the rule behind it\n"
	"  diff A.json B.json             structural diff of two v2 documents (exit 1 if "
	"different)\n"
	"  diff --mapping OLD --against NEW FIXTURES...\n"
	"                                 what a rule change changes across a fixture set\n"
	"  report FILE...                 summarise dry-run reports (comparisons, top "
	"differences)\n"
	"  replay --config FILE [--to URL] [--expect DIR] [--dry-run] PATH...\n"
	"                                 send fixtures or captured traffic through a route\n"
	"  learn --v1 FILE... --v2 FILE... [--base RULES] [-o RULES]\n"
	"                                 infer a rule file from paired v1 and real v2 traffic\n"
	"  cutover --config FILE [ROUTE [--ramp N | --kill]]\n"
	"                                 show or steer which importer answers dual routes\n"
	"\n"
	"  --help, -h                     this text (also: webhook-bridge <command> --help)\n"
	"  --version                      print the version (version --verbose, -V: and\n"
	"                                 the libraries and build options)\n";

static const char usage_version[] =
	"usage: webhook-bridge version [--verbose]\n"
	"       webhook-bridge --version | -V\n"
	"\n"
	"Prints the version; --verbose (-v, or -V alone): also the libraries it\n"
	"runs with and the build options.\n"
	"exit: 0, or 2 usage error\n";

/* --version: one line; version --verbose (or -V): the libraries it runs
 * with and how it was built, for bug reports. */
static int print_version(int argc, char **argv, int verbose)
{
	static const struct option opts[] = {
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int y = yajl_version(), c;

	while ((c = cli_getopt("version", argc, argv, "vVh", opts)) != -1) {
		switch (c) {
		case 'v':
		case 'V': verbose = 1; break;
		case 'h': fputs(usage_version, stdout); return 0;
		default: return 2;
		}
	}
	if (optind < argc)
		return cli_usage("version", "unexpected argument '%s'", argv[optind]);
	printf("webhook-bridge %s\n", BRIDGE_VERSION);
	if (!verbose)
		return 0;
	printf("libevent %s\n", event_get_version());
	printf("OpenSSL %s\n", OpenSSL_version(OPENSSL_VERSION_STRING));
	printf("yajl %d.%d.%d\n", y / 10000, y / 100 % 100, y % 100);
	printf("libconfig %d.%d.%d\n", LIBCONFIG_VER_MAJOR, LIBCONFIG_VER_MINOR,
	       LIBCONFIG_VER_REVISION);
	printf("SQLite %s\n", sqlite3_libversion());
	printf("libpq %d.%d\n", PQlibVersion() / 10000, PQlibVersion() % 10000);
	printf("build %s\n", BRIDGE_BUILD_OPTIONS);
	return 0;
}

/* One line per command; commands living in other files are declared in
 * cli.h. */
static const struct command {
	const char *name;
	int (*run)(int argc, char **argv);
} commands[] = {
	{ "serve", cmd_serve },   { "map", cmd_map },     { "check", cmd_check },
	{ "queue", cmd_queue },   { "diff", cmd_diff },   { "report", cmd_report },
	{ "replay", cmd_replay }, { "learn", cmd_learn }, { "cutover", cmd_cutover },
};

/* Output that never reached stdout (a full disk, a closed descriptor) is a
 * failure, not a success: say so and exit non-zero (2 unless the command
 * already failed). */
static int stdout_finish(const char *cmd, int rc)
{
	int flushed = fflush(stdout) == 0;
	int e = errno;

	if (flushed && !ferror(stdout))
		return rc;
	fprintf(stderr, "webhook-bridge %s: error: cannot write to stdout: %s\n", cmd,
		flushed ? "an earlier write failed (full disk, closed pipe or descriptor)"
			: strerror(e));
	return rc ? rc : 2;
}

int main(int argc, char **argv)
{
	const char *cmd;

	/* libevent's own calloc goes to calloc, which glibc serves without its
	 * per-thread cache; given malloc, libevent zeroes what it asked for
	 * itself, and its small objects (an evbuffer per answer) come from the
	 * cache.  Before any libevent call, as libevent asks. */
	event_set_mem_functions(malloc, realloc, free);
	if (argc < 2) {
		fputs(usage_main, stderr);
		return 2;
	}
	cmd = argv[1];
	if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
		fputs(usage_main, stdout);
		return stdout_finish("help", 0);
	}
	if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0 || strcmp(cmd, "-V") == 0)
		return stdout_finish("version",
				     print_version(argc - 1, argv + 1, strcmp(cmd, "-V") == 0));
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(cmd, commands[i].name) == 0)
			return stdout_finish(cmd, commands[i].run(argc - 1, argv + 1));
	return cli_usage(NULL, "unknown command '%s'", cmd);
}
