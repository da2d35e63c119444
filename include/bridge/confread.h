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

/* ---- readers ----------------------------------------------------------------
 * Where the messages of a read go and how they are worded.  The cfg_get_*
 * functions below read with a plain reader {d, file}; the rule files have a
 * reader of their own: included files named by their path, strings that
 * must be UTF-8, and their wording (mappings/README.md quotes it). */
struct cfg_reader {
	struct diag *d;
	const char *file; /* the file read: named for settings libconfig gives no file */
	/* The file a message about s names; NULL: cfg_file(s, file). */
	const char *(*file_of)(void *arg, const config_setting_t *s);
	void *arg;
	bool utf8; /* strings must be valid UTF-8 */
	/* The rule files' wording: "'x' must be one of a, b, not \"c\"" and
	 * unknown names followed by the known ones, where the config says
	 * "'x' = \"c\" is not one of: a | b" and gives the nearest name. */
	bool listing;
};

/* "file:line: message" at s (the reader's file when s is NULL); returns -1. */
int cfg_reader_error(const struct cfg_reader *r, const config_setting_t *s, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Report each child of group not in the NULL-terminated list, "in <where>"
 * (NULL: the group's name quoted; no name: nothing).  Returns their number. */
int cfg_reader_check_keys(const struct cfg_reader *r, const config_setting_t *group,
			  const char *const *allowed, const char *where);

/* What a string setting must be besides a string (and UTF-8 for a reader
 * that says so). */
#define CFG_NONEMPTY    1u /* not "" */
#define CFG_NO_CONTROLS 2u /* no control characters */

/* The lookups, as the cfg_get_* ones below (1 found, 0 absent, -1 refused). */
int cfg_reader_string(const struct cfg_reader *r, const config_setting_t *group, const char *name,
		      unsigned flags, const char **ret);
int cfg_reader_bool(const struct cfg_reader *r, const config_setting_t *group, const char *name,
		    int *ret);
int cfg_reader_enum(const struct cfg_reader *r, const config_setting_t *group, const char *name,
		    const char *const *choices, int *ret);

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

/* A setting that must be a group / list / array: NULL when absent or wrong
 * (error added when wrong). */
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

/* ---- settings as tables ----------------------------------------------------
 * One table per settings group (as redis's standardConfig): each row names a
 * setting, its type, range and default, and the field of the group's struct
 * the value goes to.  The defaults, the allow-list of known names (with a
 * "did you mean" hint for a typo), the type and range checks and their
 * messages all come from it.  A CFG_CUSTOM row is a known name that the
 * group's own code reads (a sub-group, a list, a value with a rule of its
 * own).  A table ends with a row whose name is NULL. */
enum cfg_type {
	CFG_INT,    /* an integer in [min, max], stored times `scale` (when set) */
	CFG_BOOL,   /* true or false, into an int */
	CFG_TEXT,   /* non-empty, no control characters (cfg_get_text); strdup'd */
	CFG_ENUM,   /* one of `choices`: its index, into an int */
	CFG_FILE,   /* a file the bridge reads: resolved against the config's folder, readable */
	CFG_OUTPUT, /* a file the bridge writes: cfg_resolve_state_path with `text` as env */
	CFG_CUSTOM, /* read by the group's code */
};

struct cfg_setting {
	const char *name;
	enum cfg_type type;
	size_t offset, size; /* the field: CFG_FIELD(struct, member) */
	long long min, max;  /* CFG_INT */
	long long def;       /* CFG_INT, CFG_BOOL, CFG_ENUM: the default */
	/* CFG_TEXT: the default (NULL: none); CFG_OUTPUT: the environment
	 * variable naming the folder of relative paths (NULL: none) */
	const char *text;
	const char *const *choices; /* CFG_ENUM, NULL-terminated */
	int scale;                  /* CFG_INT: the unit stored per unit written (s -> ms: 1000) */
	/* CFG_TEXT: a rule of the setting's own: 0, or -1 with the whole
	 * message in why (the setting's name first) */
	int (*check)(const char *name, const char *v, char *why, size_t cap);
	/* How the README gives the default when it is not the stored value
	 * ("number of cores" for a stored 0); NULL: the value itself. */
	const char *shown;
};

#define CFG_FIELD(type, member) \
	.offset = offsetof(type, member), .size = sizeof(((type *)0)->member)
/* The common rows, one a line (the struct of the field first). */
#define CFG_INT_ROW(n, st, member, lo, hi, d)                                                  \
	{                                                                                      \
		.name = (n), .type = CFG_INT, CFG_FIELD(st, member), .min = (lo), .max = (hi), \
		.def = (d)                                                                     \
	}
#define CFG_CUSTOM_ROW(n)                       \
	{                                       \
		.name = (n), .type = CFG_CUSTOM \
	}

/* Set every row's default into base (texts strdup'd, over NULL fields). */
void cfg_table_defaults(const struct cfg_setting *t, void *base);
/* Report each child of g that no row names (with the nearest name when one
 * is close), then read every row but CFG_CUSTOM ones into base; an absent
 * setting leaves its field as it is, a wrong one is reported (its field
 * unchanged).  g NULL: nothing. */
void cfg_table_load(const config_setting_t *g, const struct cfg_setting *t, void *base,
		    const char *file, struct diag *d);
/* The row of t named name, or NULL. */
const struct cfg_setting *cfg_table_find(const struct cfg_setting *t, const char *name);
/* The default as the README gives it: `shown`, or the value written as in
 * a config ("8080", "true", "\"forward\""), or NULL when the row has none. */
const char *cfg_setting_default_text(const struct cfg_setting *s, char *buf, size_t cap);

/* Every table of the config file, with the prefix their names take in it
 * ("listen.", "" for the top level, "routes." for a route's). */
struct cfg_table {
	const char *prefix;
	const struct cfg_setting *settings;
};

#endif
