/*
 * cli: the commands of the table in bridge/cmd/main.c.  Each takes argv with argv[0]
 * = the command name, parses its own options (getopt_long, --help on
 * stdout, exit 0) and returns the process exit status: 0 success, 1 the
 * input/outcome was bad (documented per command), 2 usage or configuration
 * errors.  Add the command to the table at the end of bridge/cmd/main.c and to
 * its usage text.
 */
#ifndef BRIDGE_CLI_H
#define BRIDGE_CLI_H

#include <stddef.h>

int cmd_serve(int argc, char **argv);  /* bridge/cmd/serve.c */
int cmd_check(int argc, char **argv);  /* bridge/cmd/check_cmd.c */
int cmd_map(int argc, char **argv);    /* bridge/cmd/map_cmd.c */
int cmd_diff(int argc, char **argv);   /* bridge/cmd/diff.c */
int cmd_report(int argc, char **argv); /* bridge/cmd/report.c */
int cmd_replay(int argc, char **argv); /* bridge/cmd/replay.c */

/* A whole decimal integer in [min, max]: "abc", "1e3", " 7", "+7", "3x" and
 * out-of-range values are refused.  0, or -1 (the caller reports a usage
 * error, exit 2). */
int cli_int_parse(const char *s, long long min, long long max, long long *ret);

struct option;

/* "webhook-bridge CMD: message" and "Try 'webhook-bridge CMD --help'." on
 * stderr (cmd NULL: the program itself).  Returns 2, the usage exit status,
 * so that callers write `return cli_usage(...)`. */
int cli_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* getopt_long for every command, which does not guess: a long option is
 * written in full ("--conf" is refused, not taken for --config), and every
 * refusal is printed with cli_usage: "unknown option '--confg'; did you mean
 * --config?" when an option is at most two edits away (or the written name
 * is the start of one), "option '--config' needs an argument", "option
 * '--help' takes no argument", "unknown option '-x'".  Returns what
 * getopt_long returns, or '?' once the refusal is printed (the caller
 * returns 2).  Set optind before the first call as with getopt_long. */
int cli_getopt(const char *cmd, int argc, char **argv, const char *shortopts,
	       const struct option *opts);

/* queue: inspect and repair the store of queued delivery (bridge/cmd/queue_cmd.c). */
int cmd_queue(int argc, char **argv);

struct bridge_config;
struct bridge_error;
struct cutover;
struct cutover_event;

/* cutover: show or steer the cutover state of dual routes (bridge/cmd/cutover_cmd.c). */
int cmd_cutover(int argc, char **argv);
/* serve's log line for a cutover event: the callback of its struct cutover. */
void cutover_event_log(const struct cutover_event *ev, void *arg);
/* serve's cutover state: its store (cutover_store_path) opened, created
 * when absent, and cfg's routes taken.  NULL with err. */
struct cutover *cutover_serve_open(const struct bridge_config *cfg, struct bridge_error *err);
/* A reload's config: the store opened with the first dual route. */
int cutover_serve_configure(struct cutover *c, const struct bridge_config *cfg,
			    struct bridge_error *err);

struct record_options;

/* The capture as cfg's record group describes it (serve opens it, check
 * checks it); ro's strings stay cfg's. */
void record_options_from(const struct bridge_config *cfg, struct record_options *ro);

#endif
