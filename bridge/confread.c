#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <libgen.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/buf.h"
#include "bridge/confread.h"
#include "bridge/utf8.h"

const char *cfg_type_name(int type)
{
	switch (type) {
	case CONFIG_TYPE_GROUP: return "a group { }";
	case CONFIG_TYPE_INT:
	case CONFIG_TYPE_INT64: return "an integer";
	case CONFIG_TYPE_FLOAT: return "a float";
	case CONFIG_TYPE_STRING: return "a string";
	case CONFIG_TYPE_BOOL: return "a boolean";
	case CONFIG_TYPE_ARRAY: return "an array [ ]";
	case CONFIG_TYPE_LIST: return "a list ( )";
	default: return "nothing";
	}
}

char *cfg_resolve_path(const char *base_file, const char *path)
{
	char *copy, *dir, *out;
	size_t n;

	if (path[0] == '/' || !base_file)
		return strdup(path);
	copy = strdup(base_file);
	if (!copy)
		return NULL;
	dir = dirname(copy);
	n = strlen(dir) + strlen(path) + 2;
	out = malloc(n);
	if (out)
		snprintf(out, n, "%s/%s", dir, path);
	free(copy);
	return out;
}

char *cfg_resolve_state_path(const char *base_file, const char *env, const char *path)
{
	const char *dir = getenv(env);
	size_t n;
	char *out;

	if (path[0] == '/' || !dir || dir[0] != '/')
		return cfg_resolve_path(base_file, path);
	/* systemd may list several folders separated by ':'; the first is ours */
	n = strcspn(dir, ":");
	out = malloc(n + strlen(path) + 2);
	if (out)
		sprintf(out, "%.*s/%s", (int)n, dir, path);
	return out;
}

/* Secrets are short: a file larger than this is the wrong file. */
#define SECRET_FILE_MAX 65536

static char *secret_path(const char *file, const char *v)
{
	const char *creds = getenv("CREDENTIALS_DIRECTORY");
	char *out;

	if (v[0] == '/' || !creds || !creds[0])
		return cfg_resolve_path(file, v);
	out = malloc(strlen(creds) + strlen(v) + 2);
	if (out)
		sprintf(out, "%s/%s", creds, v);
	return out;
}

static int secret_read(const char *path, char **ret, size_t *ret_len, char *why, size_t cap)
{
	FILE *f = fopen(path, "rb");
	char *buf;
	size_t n;

	if (!f) {
		snprintf(why, cap, "%s", strerror(errno));
		return -1;
	}
	buf = malloc(SECRET_FILE_MAX + 1);
	n = buf ? fread(buf, 1, SECRET_FILE_MAX + 1, f) : 0;
	fclose(f);
	if (!buf || n > SECRET_FILE_MAX) {
		free(buf);
		snprintf(why, cap, "larger than %d bytes", SECRET_FILE_MAX);
		return -1;
	}
	if (n && buf[n - 1] == '\n')
		n--;
	if (n && buf[n - 1] == '\r')
		n--;
	buf[n] = '\0';
	if (n == 0 || memchr(buf, '\0', n)) {
		free(buf);
		snprintf(why, cap, n ? "holds a NUL byte" : "is empty");
		return -1;
	}
	*ret = buf;
	*ret_len = n;
	return 0;
}

int cfg_get_secret(const config_setting_t *group, const char *name, char **ret, size_t *ret_len,
		   const char *file, struct diag *d)
{
	char fname[64], why[128], *path;
	const config_setting_t *inl = config_setting_get_member(group, name), *fs;
	const char *v;

	snprintf(fname, sizeof(fname), "%s_file", name);
	fs = config_setting_get_member(group, fname);
	*ret = NULL;
	*ret_len = 0;
	if (inl && fs)
		return diag_add(d, cfg_file(fs, file), cfg_line(fs), "set '%s' or '%s', not both",
				name, fname);
	if (inl) {
		if (cfg_get_text(group, name, &v, file, d) != 1)
			return -1;
		if (strstr(v, "${"))
			return diag_add(d, cfg_file(inl, file), cfg_line(inl),
					"'%s' holds '${': nothing is expanded; put the secret "
					"in a file and name it with '%s'",
					name, fname);
		*ret = strdup(v);
		*ret_len = strlen(v);
		return *ret ? 2 : diag_add(d, file, 0, "out of memory");
	}
	if (!fs)
		return 0;
	if (cfg_get_text(group, fname, &v, file, d) != 1)
		return -1;
	path = secret_path(file, v);
	if (!path)
		return diag_add(d, file, 0, "out of memory");
	if (secret_read(path, ret, ret_len, why, sizeof(why)) < 0) {
		diag_add(d, cfg_file(fs, file), cfg_line(fs), "%s '%s': %s", fname, path, why);
		free(path);
		return -1;
	}
	free(path);
	return 1;
}

const char *cfg_relative_path(const char *base_file, const char *path)
{
	const char *slash = base_file ? strrchr(base_file, '/') : NULL;
	const char *last = strrchr(path, '/');
	size_t n = slash ? (size_t)(slash - base_file) : 0;

	if (!slash) /* the config is in the working folder */
		return strncmp(path, "./", 2) == 0 ? path + 2 : path[0] == '/' ? last + 1 : path;
	if (strncmp(path, base_file, n + 1) == 0 && !strstr(path + n + 1, "../"))
		return path + n + 1;
	return last ? last + 1 : path;
}

/*
 * libconfig 1.5 stores an integer literal without an L suffix in 32 bits and
 * wraps silently (99999999999 reads as 1215752191), and saturates 64-bit
 * literals: for ids that means a wrong route or a wrong value,
 * with no error.  So before libconfig reads a file we scan its integer
 * literals ourselves and reject every one that does not fit its type.
 */
static int is_name_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '-' || c == '*';
}

static void check_literal(const char *file, int line, const char *tok, size_t n, struct diag *d)
{
	unsigned long long v = 0, limit;
	int neg = 0, hex = 0, overflow = 0, longs = 0;
	size_t i = 0, digits_end, whole = n;

	while (n && (tok[n - 1] == 'L' || tok[n - 1] == 'l')) {
		longs++;
		n--;
	}
	digits_end = n;
	if (tok[i] == '-' || tok[i] == '+')
		neg = tok[i++] == '-';
	if (i + 1 < n && tok[i] == '0' && (tok[i + 1] == 'x' || tok[i + 1] == 'X')) {
		hex = 1;
		i += 2;
	}
	for (; i < digits_end; i++) {
		unsigned dv = tok[i] <= '9' ? (unsigned)(tok[i] - '0')
					    : (unsigned)((tok[i] | 0x20) - 'a' + 10);

		if (v > (~0ULL - dv) / (hex ? 16 : 10))
			overflow = 1;
		else
			v = v * (hex ? 16 : 10) + dv;
	}
	if (hex)
		limit = longs ? 0x7FFFFFFFFFFFFFFFULL : 0x7FFFFFFFULL;
	else if (longs)
		limit = neg ? 9223372036854775808ULL : 9223372036854775807ULL;
	else
		limit = neg ? 2147483648ULL : 2147483647ULL;
	if (!overflow && v <= limit)
		return;
	diag_add(d, file, line,
		 "integer %.*s does not fit in %s bits: libconfig 1.5 would silently change it; "
		 "write it as a string (\"%.*s\")%s",
		 (int)whole, tok, longs ? "64" : "32", (int)digits_end, tok,
		 longs ? "" : " or with the L suffix");
}

/* libconfig's scanner exit()s the process when an @include names a
 * directory or an empty name ("input in flex scanner failed"): only regular
 * files may be read. */
static int regular_file(const char *path)
{
	struct stat st;

	return path[0] && stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, R_OK) == 0;
}

/* Scan one file's integer literals and its @include targets (recursively);
 * returns the number of unusable includes found. */
/* The chain of files being scanned (for cycles) and a budget of files per
 * read: a file that includes itself three times would otherwise be read
 * 3^10 times before libconfig's depth limit. */
struct scan_state {
	const char *chain[12];
	int depth;
	int files;
};

#define SCAN_FILES_MAX 64

static int scan_literals(const char *path, const char *top, struct scan_state *st, struct diag *d)
{
	FILE *f;
	int bad_includes = 0, depth = st->depth;

	if (++st->files > SCAN_FILES_MAX)
		return 0; /* reported once, by the caller that went over */
	f = fopen(path, "rb");
	struct buf b = BUF_INIT(SIZE_MAX);
	char *text;
	size_t len = 0, i = 0;
	int line = 1;

	if (!f)
		return 0;     /* libconfig reports it itself */
	buf_read_file(&b, f); /* a read error: scan what was read */
	fclose(f);
	text = b.s;
	if (!text)
		return 0;
	len = b.len;
	if (memchr(text, '\0', len)) {
		/* libconfig would read up to the NUL, or exit() on an include name
		 * holding one: never hand it such a file */
		size_t at = (size_t)((char *)memchr(text, '\0', len) - text);
		int nul_line = 1;

		for (size_t k = 0; k < at; k++)
			nul_line += text[k] == '\n';
		diag_add(d, path, nul_line, "the file holds a NUL byte");
		free(text);
		return 1;
	}
	while (i < len) {
		char c = text[i];

		if (c == '\n') {
			line++;
			i++;
		} else if (c == '#' || (c == '/' && text[i + 1] == '/')) {
			while (i < len && text[i] != '\n')
				i++;
		} else if (c == '/' && text[i + 1] == '*') {
			for (i += 2; i < len && !(text[i] == '*' && text[i + 1] == '/'); i++)
				if (text[i] == '\n')
					line++;
			i += 2;
		} else if (c == '"') {
			for (i++; i < len && text[i] != '"'; i++) {
				if (text[i] == '\\' && i + 1 < len)
					i++;
				else if (text[i] == '\n')
					line++;
			}
			i++;
		} else if (c == '@' && strncmp(text + i, "@include", 8) == 0) {
			char *q1 = strchr(text + i, '"'), *q2 = q1 ? strchr(q1 + 1, '"') : NULL;
			char *nl = strchr(text + i, '\n');

			if (q1 && q2 && (!nl || q2 < nl)) {
				char *inc = strndup(q1 + 1, (size_t)(q2 - q1 - 1));
				/* libconfig 1.5 resolves every include, nested ones too,
				 * against the top file's folder, and prepends that folder
				 * even to absolute names */
				char *full = inc && inc[0] != '/' ? cfg_resolve_path(top, inc)
								  : NULL;

				if (inc && inc[0] == '/') {
					diag_add(
						d, path, line,
						"@include \"%s\": absolute paths are read wrong by "
						"libconfig 1.5; name it relative to %s's folder",
						inc, top);
					bad_includes++;
				} else if (full && regular_file(full)) {
					int cycle = 0;

					for (int k = 0; k <= depth && k < 12; k++)
						if (st->chain[k] && strcmp(st->chain[k], full) == 0)
							cycle = 1;
					if (cycle) {
						diag_add(d, path, line,
							 "@include \"%s\" includes itself "
							 "(directly or through other files)",
							 inc);
						bad_includes++;
					} else if (depth + 1 >= 11) {
						diag_add(d, path, line,
							 "@include \"%s\": more than 10 "
							 "levels of includes",
							 inc);
						bad_includes++;
					} else if (st->files >= SCAN_FILES_MAX) {
						diag_add(d, path, line,
							 "@include \"%s\": more than %d "
							 "included files",
							 inc, SCAN_FILES_MAX);
						bad_includes++;
					} else {
						st->depth = depth + 1;
						st->chain[depth + 1] = full;
						bad_includes += scan_literals(full, top, st, d);
						st->chain[depth + 1] = NULL;
						st->depth = depth;
					}
				} else {
					diag_add(d, path, line,
						 "@include \"%s\": not a readable file",
						 inc ? inc : "");
					bad_includes++;
				}
				free(full);
				free(inc);
			}
			while (i < len && text[i] != '\n')
				i++;
		} else if (is_name_char(c) && !((c >= '0' && c <= '9') || c == '-')) {
			while (i < len && is_name_char(text[i]))
				i++; /* a setting name may hold digits: not a literal */
		} else if ((c >= '0' && c <= '9') ||
			   ((c == '-' || c == '+') && text[i + 1] >= '0' && text[i + 1] <= '9')) {
			size_t start = i++;
			int is_float = 0;

			while (i < len && ((text[i] >= '0' && text[i] <= '9') ||
					   (text[i] >= 'a' && text[i] <= 'f') ||
					   (text[i] >= 'A' && text[i] <= 'F') || text[i] == 'x' ||
					   text[i] == 'X' || text[i] == 'L' || text[i] == 'l' ||
					   text[i] == '.' || text[i] == '+' || text[i] == '-')) {
				if (text[i] == '.' ||
				    ((text[i] == 'e' || text[i] == 'E') &&
				     !(text[start] == '0' && (text[start + 1] | 0x20) == 'x')))
					is_float = 1;
				if ((text[i] == '+' || text[i] == '-') && !is_float)
					break;
				i++;
			}
			if (!is_float)
				check_literal(path, line, text + start, i - start, d);
		} else {
			i++;
		}
	}
	free(text);
	return bad_includes;
}

int cfg_read(config_t *cfg, const char *path, struct diag *d)
{

	char *copy = strdup(path);

	config_init(cfg);
	if (access(path, R_OK) != 0) {
		diag_add(d, path, 0, "cannot read: %s", strerror(errno));
		free(copy);
		return -1;
	}
	if (!regular_file(path)) {
		diag_add(d, path, 0, "cannot read: not a regular file");
		free(copy);
		return -1;
	}
	/* literal errors are reported and the file still read, so that every
	 * problem shows in one run; a bad include must never reach libconfig */
	struct scan_state st = { .chain = { path } };

	if (scan_literals(path, path, &st, d) > 0) {
		free(copy);
		return -1;
	}
	if (copy) {
		/* libconfig resolves @include against the working directory otherwise */
		config_set_include_dir(cfg, dirname(copy));
	}
	if (config_read_file(cfg, path) != CONFIG_TRUE) {
		/* libconfig names an included file as written, relative to
		 * the include dir; there is no file for I/O errors */
		const char *file = config_error_file(cfg);
		char *full = NULL;

		if (file && strcmp(file, path) != 0 && file[0] != '/')
			full = cfg_resolve_path(path, file);
		if (config_error_type(cfg) == CONFIG_ERR_FILE_IO)
			diag_add(d,
				 full   ? full
				 : file ? file
					: path,
				 0, "cannot read: %s",
				 config_error_text(cfg) ? config_error_text(cfg) : "I/O error");
		else
			diag_add(d,
				 full   ? full
				 : file ? file
					: path,
				 config_error_line(cfg), "%s",
				 config_error_text(cfg) ? config_error_text(cfg) : "syntax error");
		free(full);
		free(copy);
		return -1;
	}
	free(copy);
	return 0;
}

bool cfg_name_in(const char *const *names, const char *name)
{
	for (; *names; names++)
		if (strcmp(*names, name) == 0)
			return true;
	return false;
}

void cfg_join_names(const char *const *names, char *buf, size_t cap)
{
	size_t len = 0;

	buf[0] = '\0';
	for (; *names && len < cap; names++) {
		int n = snprintf(buf + len, cap - len, "%s%s", len ? ", " : "", *names);

		if (n < 0)
			break;
		len += (size_t)n;
	}
}

const char *cfg_file(const config_setting_t *s, const char *fallback)
{
	const char *f = s ? config_setting_source_file(s) : NULL;

	return f ? f : fallback;
}

int cfg_line(const config_setting_t *s)
{
	return s ? (int)config_setting_source_line(s) : 0;
}

static const char *reader_file(const struct cfg_reader *r, const config_setting_t *s)
{
	if (s && r->file_of)
		return r->file_of(r->arg, s);
	return cfg_file(s, r->file);
}

int cfg_reader_error(const struct cfg_reader *r, const config_setting_t *s, const char *fmt, ...)
{
	char msg[900];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return diag_add(r->d, reader_file(r, s), cfg_line(s), "%s", msg);
}

static int type_error(const struct cfg_reader *r, const config_setting_t *s, const char *name,
		      const char *want)
{
	return cfg_reader_error(r, s, "'%s' must be %s, not %s", name, want,
				cfg_type_name(config_setting_type(s)));
}

/* The known name nearest to a typo, when it is at most two edits away and
 * the typo is not mostly edits. */
static const char *nearest_name(const char *name, const char *const *names)
{
	const char *best = NULL;
	size_t n = strlen(name);
	int best_d = 3;

	for (; *names; names++) {
		int dist = diag_edit_distance(name, n, *names, strlen(*names));

		if (dist < best_d && (size_t)dist < n) {
			best_d = dist;
			best = *names;
		}
	}
	return best;
}

int cfg_reader_check_keys(const struct cfg_reader *r, const config_setting_t *group,
			  const char *const *allowed, const char *where)
{
	const char *parent = config_setting_name(group);
	char in[120] = "", hint[700] = "";
	int unknown = 0, n = config_setting_length(group);

	if (where)
		snprintf(in, sizeof(in), " in %s", where);
	else if (parent)
		snprintf(in, sizeof(in), " in '%s'", parent);
	for (int i = 0; i < n; i++) {
		const config_setting_t *s = config_setting_get_elem(group, (unsigned)i);
		const char *name = config_setting_name(s), *near;

		if (!name || cfg_name_in(allowed, name))
			continue;
		unknown++;
		hint[0] = '\0';
		if (r->listing) {
			memcpy(hint, " (known: ", 10);
			cfg_join_names(allowed, hint + 9, sizeof(hint) - 10);
			strcat(hint, ")");
		} else if ((near = nearest_name(name, allowed)) != NULL) {
			snprintf(hint, sizeof(hint), "; did you mean '%s'?", near);
		}
		cfg_reader_error(r, s, "unknown setting '%s'%s%s", name, in, hint);
	}
	return unknown;
}

int cfg_check_keys(const config_setting_t *group, const char *const *allowed, const char *file,
		   struct diag *d)
{
	struct cfg_reader r = { .d = d, .file = file };

	return cfg_reader_check_keys(&r, group, allowed, NULL);
}

int cfg_reader_string(const struct cfg_reader *r, const config_setting_t *group, const char *name,
		      unsigned flags, const char **ret)
{
	const config_setting_t *s = config_setting_get_member(group, name);
	const char *v;

	if (!s)
		return 0;
	if (config_setting_type(s) != CONFIG_TYPE_STRING)
		return type_error(r, s, name, "a string");
	v = config_setting_get_string(s);
	if (r->utf8 && !utf8_valid(v, strlen(v)))
		return cfg_reader_error(r, s, "'%s' is not valid UTF-8", name);
	if ((flags & CFG_NONEMPTY) && !*v)
		return cfg_reader_error(r, s, "'%s' must not be empty", name);
	if (flags & CFG_NO_CONTROLS)
		for (const unsigned char *p = (const unsigned char *)v; *p; p++)
			if (*p < 0x20 || *p == 0x7f)
				return cfg_reader_error(
					r, s, "'%s' must not contain control characters", name);
	*ret = v;
	return 1;
}

int cfg_get_string(const config_setting_t *group, const char *name, const char **ret,
		   const char *file, struct diag *d)
{
	struct cfg_reader r = { .d = d, .file = file };

	return cfg_reader_string(&r, group, name, 0, ret);
}

int cfg_get_text(const config_setting_t *group, const char *name, const char **ret,
		 const char *file, struct diag *d)
{
	struct cfg_reader r = { .d = d, .file = file };

	return cfg_reader_string(&r, group, name, CFG_NONEMPTY | CFG_NO_CONTROLS, ret);
}

int cfg_get_int(const config_setting_t *group, const char *name, long long min, long long max,
		long long *ret, const char *file, struct diag *d)
{
	struct cfg_reader r = { .d = d, .file = file };
	const config_setting_t *s = config_setting_get_member(group, name);
	long long v;

	if (!s)
		return 0;
	if (config_setting_type(s) != CONFIG_TYPE_INT &&
	    config_setting_type(s) != CONFIG_TYPE_INT64)
		return type_error(&r, s, name, "an integer");
	v = config_setting_get_int64(s);
	if (v < min || v > max)
		return cfg_reader_error(&r, s, "'%s' = %lld is out of range [%lld, %lld]", name, v,
					min, max);
	*ret = v;
	return 1;
}

int cfg_reader_bool(const struct cfg_reader *r, const config_setting_t *group, const char *name,
		    int *ret)
{
	const config_setting_t *s = config_setting_get_member(group, name);

	if (!s)
		return 0;
	if (config_setting_type(s) != CONFIG_TYPE_BOOL)
		return type_error(r, s, name, "true or false");
	*ret = config_setting_get_bool(s) != 0;
	return 1;
}

int cfg_get_bool(const config_setting_t *group, const char *name, int *ret, const char *file,
		 struct diag *d)
{
	struct cfg_reader r = { .d = d, .file = file };

	return cfg_reader_bool(&r, group, name, ret);
}

int cfg_reader_enum(const struct cfg_reader *r, const config_setting_t *group, const char *name,
		    const char *const *choices, int *ret)
{
	const char *v;
	char list[256] = "";
	int rc = cfg_reader_string(r, group, name, 0, &v);

	if (rc != 1)
		return rc;
	for (int i = 0; choices[i]; i++) {
		if (strcmp(choices[i], v) == 0) {
			*ret = i;
			return 1;
		}
		if (!r->listing) {
			if (i)
				strncat(list, " | ", sizeof(list) - strlen(list) - 1);
			strncat(list, choices[i], sizeof(list) - strlen(list) - 1);
		}
	}
	if (r->listing) {
		cfg_join_names(choices, list, 200);
		return cfg_reader_error(r, config_setting_get_member(group, name),
					"'%s' must be one of %s, not \"%s\"", name, list, v);
	}
	return cfg_reader_error(r, config_setting_get_member(group, name),
				"'%s' = \"%s\" is not one of: %s", name, v, list);
}

int cfg_get_enum(const config_setting_t *group, const char *name, const char *const *choices,
		 int *ret, const char *file, struct diag *d)
{
	struct cfg_reader r = { .d = d, .file = file };

	return cfg_reader_enum(&r, group, name, choices, ret);
}

const config_setting_t *cfg_get_group(const config_setting_t *group, const char *name,
				      const char *file, struct diag *d)
{
	const config_setting_t *s = config_setting_get_member(group, name);

	if (!s)
		return NULL;
	if (config_setting_type(s) != CONFIG_TYPE_GROUP) {
		struct cfg_reader r = { .d = d, .file = file };

		type_error(&r, s, name, "a group { }");
		return NULL;
	}
	return s;
}

const config_setting_t *cfg_get_list(const config_setting_t *group, const char *name,
				     const char *file, struct diag *d)
{
	const config_setting_t *s = config_setting_get_member(group, name);

	if (!s)
		return NULL;
	if (config_setting_type(s) != CONFIG_TYPE_LIST) {
		struct cfg_reader r = { .d = d, .file = file };

		type_error(&r, s, name, "a list ( )");
		return NULL;
	}
	return s;
}

int cfg_path_writable(const char *path)
{
	struct stat st;
	char *copy;
	int rc, e;

	if (stat(path, &st) == 0) {
		if (S_ISDIR(st.st_mode)) {
			errno = EISDIR;
			return -1;
		}
		return access(path, W_OK);
	}
	if (errno != ENOENT)
		return -1;
	copy = strdup(path);
	if (!copy) {
		errno = ENOMEM;
		return -1;
	}
	rc = access(dirname(copy), W_OK | X_OK);
	e = errno;
	free(copy);
	errno = e;
	return rc;
}

/* ---- settings as tables ---- */

static void store_int(void *field, size_t size, long long v)
{
	int8_t i8 = (int8_t)v;
	int16_t i16 = (int16_t)v;
	int32_t i32 = (int32_t)v;
	int64_t i64 = v;

	switch (size) {
	case 1: memcpy(field, &i8, 1); break;
	case 2: memcpy(field, &i16, 2); break;
	case 4: memcpy(field, &i32, 4); break;
	default: memcpy(field, &i64, 8); break;
	}
}

/* The char * field takes v (owned), the text it held is freed. */
static void store_text(void *field, char *v)
{
	char *old;

	memcpy(&old, field, sizeof(old));
	free(old);
	memcpy(field, &v, sizeof(v));
}

void cfg_table_defaults(const struct cfg_setting *t, void *base)
{
	for (; t->name; t++) {
		char *field = (char *)base + t->offset;

		if (t->type == CFG_INT || t->type == CFG_BOOL || t->type == CFG_ENUM)
			store_int(field, t->size, t->def * (t->scale ? t->scale : 1));
		else if (t->type == CFG_TEXT && t->text)
			store_text(field, strdup(t->text));
	}
}

const struct cfg_setting *cfg_table_find(const struct cfg_setting *t, const char *name)
{
	for (; t->name; t++)
		if (strcmp(t->name, name) == 0)
			return t;
	return NULL;
}

/* A text setting: checked by the row's rule; a path resolved (and, for a
 * file the bridge reads, found readable). */
static void load_text_row(const config_setting_t *g, const struct cfg_setting *t, void *field,
			  const char *file, struct diag *d)
{
	const config_setting_t *s = config_setting_get_member(g, t->name);
	const char *v;
	char why[400], *out;

	if (cfg_get_text(g, t->name, &v, file, d) != 1)
		return;
	if (t->check && t->check(t->name, v, why, sizeof(why)) < 0) {
		diag_add(d, cfg_file(s, file), cfg_line(s), "%s", why);
		return;
	}
	if (t->type == CFG_TEXT)
		out = strdup(v);
	else if (t->type == CFG_OUTPUT && t->text)
		out = cfg_resolve_state_path(file, t->text, v);
	else
		out = cfg_resolve_path(file, v);
	if (!out) {
		diag_add(d, cfg_file(s, file), cfg_line(s), "out of memory");
		return;
	}
	store_text(field, out);
	if (t->type == CFG_FILE && access(out, R_OK) != 0)
		diag_add(d, cfg_file(s, file), cfg_line(s), "%s '%s': %s", t->name, out,
			 strerror(errno));
}

void cfg_table_load(const config_setting_t *g, const struct cfg_setting *t, void *base,
		    const char *file, struct diag *d)
{
	const char *names[64];
	size_t n = 0;

	if (!g)
		return;
	for (const struct cfg_setting *r = t; r->name && n < 63; r++)
		names[n++] = r->name;
	names[n] = NULL;
	cfg_check_keys(g, names, file, d);
	for (; t->name; t++) {
		char *field = (char *)base + t->offset;
		long long v;
		int i;

		switch (t->type) {
		case CFG_INT:
			if (cfg_get_int(g, t->name, t->min, t->max, &v, file, d) == 1)
				store_int(field, t->size, v * (t->scale ? t->scale : 1));
			break;
		case CFG_BOOL:
			if (cfg_get_bool(g, t->name, &i, file, d) == 1)
				store_int(field, t->size, i);
			break;
		case CFG_ENUM:
			if (cfg_get_enum(g, t->name, t->choices, &i, file, d) == 1)
				store_int(field, t->size, i);
			break;
		case CFG_TEXT:
		case CFG_FILE:
		case CFG_OUTPUT: load_text_row(g, t, field, file, d); break;
		case CFG_CUSTOM: break;
		}
	}
}

const char *cfg_setting_default_text(const struct cfg_setting *s, char *buf, size_t cap)
{
	if (s->shown)
		return s->shown;
	switch (s->type) {
	case CFG_INT: snprintf(buf, cap, "%lld", s->def); return buf;
	case CFG_BOOL: return s->def ? "true" : "false";
	case CFG_ENUM:
		if (s->def < 0)
			return NULL;
		snprintf(buf, cap, "\"%s\"", s->choices[s->def]);
		return buf;
	case CFG_TEXT:
		if (!s->text)
			return NULL;
		snprintf(buf, cap, "\"%s\"", s->text);
		return buf;
	default: return NULL;
	}
}
