/*
 * cli: commands implemented outside main.c.  Each takes argv with argv[0]
 * = the command name, parses its own options (getopt_long, --help on
 * stdout, exit 0) and returns the process exit status: 0 success, 1 the
 * input/outcome was bad (documented per command), 2 usage or configuration
 * errors.  Add the command to the table at the end of bridge/main.c and to
 * its usage text.
 */
#ifndef BRIDGE_CLI_H
#define BRIDGE_CLI_H

#include <stddef.h>

int cmd_map(int argc, char **argv);    /* bridge/map_cmd.c */
int cmd_diff(int argc, char **argv);   /* bridge/diff.c */
int cmd_report(int argc, char **argv); /* bridge/diff.c */
int cmd_replay(int argc, char **argv); /* bridge/replay.c */

/* A whole decimal integer in [min, max]: "abc", "1e3", " 7", "+7", "3x" and
 * out-of-range values are refused.  0, or -1 (the caller reports a usage
 * error, exit 2). */
int cli_int_parse(const char *s, long long min, long long max, long long *ret);

struct option;

/* The message for an option getopt_long refused (call it with opterr = 0,
 * from the '?' case): "unknown option '--confg'; did you mean --config?"
 * when one of opts is at most two edits away, else the plain refusal. */
void cli_option_error(const struct option *opts, int argc, char **argv, char *out, size_t cap);

struct queue_event;

/* queue: inspect and repair the store of queued delivery (bridge/queue_cmd.c). */
int cmd_queue(int argc, char **argv);
/* serve's log line for a queue event: pass it to queue_new() as the callback. */
void queue_event_log(const struct queue_event *ev, void *arg);

#endif
