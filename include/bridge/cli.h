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

int cmd_map(int argc, char **argv);    /* bridge/map_cmd.c */
int cmd_diff(int argc, char **argv);   /* bridge/diff.c */
int cmd_report(int argc, char **argv); /* bridge/diff.c */
int cmd_replay(int argc, char **argv); /* bridge/replay.c */
#endif
