/*
 * confread: checked access to libconfig 1.5 settings, shared by the server config
 * and the mapping loader.  Every problem is added to a diag as
 * "file:line: message" and the caller carries on, so that one run reports
 * every error in a file.  Returned strings point into the config_t: copy them
 * before config_destroy.
 */
#ifndef BRIDGE_CONFREAD_H
#define BRIDGE_CONFREAD_H

#include <libconfig.h>
#include <stdbool.h>
#include <stddef.h>

#include "bridge/diag.h"

/* Read path into cfg with includes resolved against the file's folder
 * (libconfig 1.5 resolves them against the working directory).
 * Integer literals libconfig 1.5 would silently wrap are reported (a value
 * over 32 bits reads as 0 or wrapped) but the file is still read, so callers
 * go on and report every other problem too: judge success by the diag count.  Returns
 * -1 only when cfg is unusable (I/O or syntax error, an @include that is
 * not a readable file); cfg is initialised either way: config_destroy it. */
int cfg_read(config_t *cfg, const char *path, struct diag *d);

/* What a setting is, for messages: "a string", "a list ( )" ... ("nothing"
 * for a missing one). */
const char *cfg_type_name(int type);
/* Whether name is in the NULL-terminated list; the list joined with ", "
 * into buf (cut at cap). */
bool cfg_name_in(const char *const *names, const char *name);
void cfg_join_names(const char *const *names, char *buf, size_t cap);

/* File and line of a setting (the included file when there is one). */
const char *cfg_file(const config_setting_t *s, const char *fallback);
int cfg_line(const config_setting_t *s);

/* Add "unknown setting 'x' in 'group'" for every child of group not in the
 * NULL-terminated list.  Returns the number of unknown children. */
int cfg_check_keys(const config_setting_t *group, const char *const *allowed, const char *file,
		   struct diag *d);

/* Each lookup: returns 1 when found and valid (*ret set), 0 when absent,
 * -1 when present but wrong (error added).  Integers are read as int64 and
 * range-checked (libconfig 1.5 wraps what does not fit 32 bits); floats are not integers. */
int cfg_get_string(const config_setting_t *group, const char *name, const char **ret,
		   const char *file, struct diag *d);
int cfg_get_int(const config_setting_t *group, const char *name, long long min, long long max,
		long long *ret, const char *file, struct diag *d);
int cfg_get_bool(const config_setting_t *group, const char *name, int *ret, const char *file,
		 struct diag *d);
/* One of the NULL-terminated choices; *ret = its index. */
int cfg_get_enum(const config_setting_t *group, const char *name, const char *const *choices,
		 int *ret, const char *file, struct diag *d);

/* A setting that must be a group / list / array: NULL when absent or wrong (error added when wrong). */
const config_setting_t *cfg_get_group(const config_setting_t *group, const char *name,
				      const char *file, struct diag *d);
const config_setting_t *cfg_get_list(const config_setting_t *group, const char *name,
				     const char *file, struct diag *d);

/* A string that must not be empty nor contain control characters. */
int cfg_get_text(const config_setting_t *group, const char *name, const char **ret,
		 const char *file, struct diag *d);

/* A secret setting `name` or its file form `name_file` (not both): the
 * file's content without one final newline.  A relative file name resolves
 * in $CREDENTIALS_DIRECTORY when set (systemd's LoadCredential=), else
 * against the config's folder; absolute paths are taken as they are.  An
 * inline value holding "${" is refused: nothing is expanded, and a secret
 * that looks like a variable is a mistake.  *ret is malloc'd (*ret_len
 * bytes).  Returns 2 inline, 1 from a file, 0 absent, -1 (with a diag). */
int cfg_get_secret(const config_setting_t *group, const char *name, char **ret, size_t *ret_len,
		   const char *file, struct diag *d);

/* Resolve a path relative to the folder of `base_file`; malloc'd result. */
char *cfg_resolve_path(const char *base_file, const char *path);
/* A file the process writes (queue store, report, capture): a relative path
 * resolves under the folder in environment variable `env` (systemd's
 * STATE_DIRECTORY or LOGS_DIRECTORY) when it is set, so a config in /etc
 * never writes beside itself; else as cfg_resolve_path.  Caller frees. */
char *cfg_resolve_state_path(const char *base_file, const char *env, const char *path);
/* Whether the process could open such a file for writing, creating it when
 * absent, without touching it: 0, or -1 with errno as open(2) would set it
 * (ENOENT: its folder is missing; EACCES: no write permission; EISDIR). */
int cfg_path_writable(const char *path);

/* How a file is named to the outside (answers, metric labels): relative to
 * the folder of `base_file` when it lies under it, else its last component,
 * so that no absolute path of the host leaks.  Points into `path`. */
const char *cfg_relative_path(const char *base_file, const char *path);

#endif
