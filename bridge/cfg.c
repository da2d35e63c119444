#include <libgen.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/cfg.h"

static const char *type_name(int type)
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

int cfg_read(config_t *cfg, const char *path, struct diag *d)
{
	char *copy = strdup(path);

	config_init(cfg);
	if (copy) {
		/* libconfig resolves @include against the working directory otherwise */
		config_set_include_dir(cfg, dirname(copy));
	}
	if (config_read_file(cfg, path) != CONFIG_TRUE) {
		const char *file = config_error_file(cfg);

		if (config_error_type(cfg) == CONFIG_ERR_FILE_IO)
			diag_add(d, path, 0, "cannot read file: %s", config_error_text(cfg));
		else
			diag_add(d, file ? file : path, config_error_line(cfg), "%s",
				 config_error_text(cfg));
		free(copy);
		return -1;
	}
	free(copy);
	return 0;
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

static int cfg_error(const config_setting_t *s, const char *file, struct diag *d,
		     const char *name, const char *want)
{
	return diag_add(d, cfg_file(s, file), cfg_line(s), "'%s' must be %s, not %s", name, want,
			type_name(config_setting_type(s)));
}

int cfg_check_keys(const config_setting_t *group, const char *const *allowed,
		   const char *file, struct diag *d)
{
	int unknown = 0;
	int n = config_setting_length(group);

	for (int i = 0; i < n; i++) {
		const config_setting_t *s = config_setting_get_elem(group, (unsigned)i);
		const char *name = config_setting_name(s);
		const char *parent = config_setting_name(group);
		int found = 0;

		if (!name)
			continue;
		for (const char *const *a = allowed; *a; a++)
			if (strcmp(*a, name) == 0)
				found = 1;
		if (!found) {
			unknown++;
			if (parent)
				diag_add(d, cfg_file(s, file), cfg_line(s),
					 "unknown setting '%s' in '%s'", name, parent);
			else
				diag_add(d, cfg_file(s, file), cfg_line(s), "unknown setting '%s'", name);
		}
	}
	return unknown;
}

int cfg_get_string(const config_setting_t *group, const char *name, const char **ret,
		   const char *file, struct diag *d)
{
	const config_setting_t *s = config_setting_get_member(group, name);

	if (!s)
		return 0;
	if (config_setting_type(s) != CONFIG_TYPE_STRING)
		return cfg_error(s, file, d, name, "a string");
	*ret = config_setting_get_string(s);
	return 1;
}

int cfg_get_text(const config_setting_t *group, const char *name, const char **ret,
		 const char *file, struct diag *d)
{
	const char *v;
	int r = cfg_get_string(group, name, &v, file, d);
	const config_setting_t *s = config_setting_get_member(group, name);

	if (r != 1)
		return r;
	if (!*v)
		return diag_add(d, cfg_file(s, file), cfg_line(s), "'%s' must not be empty", name);
	for (const unsigned char *p = (const unsigned char *)v; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return diag_add(d, cfg_file(s, file), cfg_line(s),
					"'%s' must not contain control characters", name);
	*ret = v;
	return 1;
}

int cfg_get_int(const config_setting_t *group, const char *name, long long min, long long max,
		long long *ret, const char *file, struct diag *d)
{
	const config_setting_t *s = config_setting_get_member(group, name);
	long long v;

	if (!s)
		return 0;
	if (config_setting_type(s) != CONFIG_TYPE_INT && config_setting_type(s) != CONFIG_TYPE_INT64)
		return cfg_error(s, file, d, name, "an integer");
	v = config_setting_get_int64(s);
	if (v < min || v > max)
		return diag_add(d, cfg_file(s, file), cfg_line(s),
				"'%s' = %lld is out of range [%lld, %lld]", name, v, min, max);
	*ret = v;
	return 1;
}

int cfg_get_bool(const config_setting_t *group, const char *name, int *ret,
		 const char *file, struct diag *d)
{
	const config_setting_t *s = config_setting_get_member(group, name);

	if (!s)
		return 0;
	if (config_setting_type(s) != CONFIG_TYPE_BOOL)
		return cfg_error(s, file, d, name, "true or false");
	*ret = config_setting_get_bool(s);
	return 1;
}

int cfg_get_enum(const config_setting_t *group, const char *name, const char *const *choices,
		 int *ret, const char *file, struct diag *d)
{
	const config_setting_t *s = config_setting_get_member(group, name);
	const char *v;
	char list[256] = "";
	int r = cfg_get_string(group, name, &v, file, d);

	if (r != 1)
		return r;
	for (int i = 0; choices[i]; i++) {
		if (strcmp(choices[i], v) == 0) {
			*ret = i;
			return 1;
		}
		if (i)
			strncat(list, " | ", sizeof(list) - strlen(list) - 1);
		strncat(list, choices[i], sizeof(list) - strlen(list) - 1);
	}
	return diag_add(d, cfg_file(s, file), cfg_line(s), "'%s' = \"%s\" is not one of: %s", name,
			v, list);
}

const config_setting_t *cfg_get_group(const config_setting_t *group, const char *name,
				      const char *file, struct diag *d)
{
	const config_setting_t *s = config_setting_get_member(group, name);

	if (!s)
		return NULL;
	if (config_setting_type(s) != CONFIG_TYPE_GROUP) {
		cfg_error(s, file, d, name, "a group { }");
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
		cfg_error(s, file, d, name, "a list ( )");
		return NULL;
	}
	return s;
}
