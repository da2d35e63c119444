/*
 * mapping: rule loading (libconfig) and application (v1 document -> v2).
 *
 * Loading reads the whole rule file once, validates everything and reports
 * every problem as "file:line: message"; it then copies what it needs out of
 * libconfig (its strings die with config_destroy) and precomputes, for the
 * base rules and for every stage, the ordered rule lists, the set of v1 keys they name and their
 * policies.  Applying does no libconfig work and no rule lookup by name: each
 * v1 key named by any rule gets a slot number at load, and one hash lookup
 * per v1 field fills the slots of a document.
 *
 * Everything a mapping allocates lives in its pool and dies with
 * mapping_free(); everything an apply allocates lives in a per-call arena
 * with a hard ceiling, except what the result hands to the caller.
 */
#include <errno.h>
#include <libconfig.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/buf.h"
#include "bridge/utf8.h"
#include "bridge/convert.h"
#include "bridge/cfg.h"
#include "bridge/mapping.h"
#include "bridge/v2out.h"

#define MAP_ARENA_MAX  ((size_t)64 << 20) /* per apply: converted values, entries */
#define MAP_BODY_MAX   ((size_t)64 << 20) /* one v2 document */
#define MAP_TRACE_MAX  200000             /* trace records per apply */
#define MAP_RULES_MAX  10000              /* fields or variables in one list */
#define MAP_KEYS_MAX   65536              /* distinct v1 keys named by rules */
#define MAP_ERROR_KEYS 5                  /* unmapped keys named in a reject message */

/* ---- model ----------------------------------------------------------------- */

enum conv {
	CONV_NONE,
	CONV_STRING,
	CONV_INTEGER,
	CONV_UPPER,
	CONV_LOWER,
	CONV_DATETIME,
};

static const char *const conv_names[] = { "string", "integer", "upper", "lower", "datetime", NULL };

enum unknown_policy {
	UNKNOWN_KEEP,
	UNKNOWN_REJECT,
};

static const char *const unknown_names[] = { "keep", "reject", NULL };
static const char *const unmapped_names[] = { "form", "drop", "reject", NULL };
static const char *const ambiguous_names[] = { "earlier", "later", "reject", NULL };
static const char *const gap_names[] = { "reject", "shift", NULL };
static const char *const section_names[] = { "form", "optins", "questionnaire", NULL };

struct pair {
	const char *from;
	size_t from_len;
	const char *to;
	size_t to_len;
	int line;
};

/* Datetime options of a rule or ruleset: NULL / -1 inherit. */
struct dt_opts {
	const struct tz_zone *zone;
	int amb;
	int gap;
};

struct field_rule {
	const char *file;
	int line;
	const char *to; /* v2 path as written */
	int slot;
	enum v2_type type;
	const char *from; /* NULL for a constant */
	int key;          /* key slot of `from`, -1 for a constant */
	struct v2_val constant;
	struct v2_val def; /* V2_ABSENT when no default */
	bool required;
	enum conv conv;
	struct dt_opts dt;
	const struct pair *map;
	size_t n_map;
	enum unknown_policy unknown;
};

struct var_rule {
	const char *file;
	int line;
	enum v2_section section;
	const char *variable;
	const char *from;
	int key;
	struct v2_val id, label, type, description, variable_val;
	bool required;
	bool has_def;
	const char *def;
	size_t def_len;
	enum conv conv;
	struct dt_opts dt;
	const struct pair *map;
	size_t n_map;
	const struct pair *choices;
	size_t n_choices;
	enum unknown_policy unknown;
	bool is_file;
	const char *separator;
	size_t sep_len;
	const char *score_from;
	int score_key;
	const char *max_score_from;
	int max_score_key;
	struct v2_val max_score;
	const char *correct_from;
	int correct_key;
	const char *response_score_from;
	int response_score_key;
	const struct v2_category *categories;
	size_t n_categories;
};

struct ruleset {
	const char *name; /* stage name, NULL for the base rules */
	const char *file;
	int line;
	const struct field_rule **fields;
	size_t n_fields;
	const struct var_rule **vars;
	size_t n_vars;
	const char **ignore; /* v1 keys named only to be dropped */
	size_t n_ignore;
	unsigned char *named; /* per key slot: some rule of this set names the key */
	enum mapping_unmapped unmapped;
	const char *unmapped_file; /* where the policy was set (for errors and trace) */
	int unmapped_line;
	const struct tz_zone *zone;
	enum dt_ambiguous amb;
	enum dt_gap gap;
	const char **websites; /* canonical integer text */
	size_t n_websites;
	const char **campaigns;
	size_t n_campaigns;
	int specificity; /* 1 websites, 2 campaigns, 3 both */
};

struct mime {
	const char *ext; /* lower case, no dot */
	const char *type;
};

struct mapping {
	char *path;
	void **pool; /* every allocation of the loader */
	size_t n_pool, cap_pool;
	const char **files; /* interned rule file names */
	size_t n_files;
	struct tz_zone **zones;
	size_t n_zones;
	const char **keys; /* key slot -> v1 key */
	size_t *key_lens;
	size_t n_keys, cap_keys;
	int *htab; /* open addressing: slot + 1, 0 empty */
	size_t hcap;
	int website_key; /* key slots of the stage selectors */
	int campaign_key;
	const char *website_key_name;
	const char *campaign_key_name;
	struct mime *mime;
	size_t n_mime;
	const char *mime_default; /* NULL: omit the type */
	struct ruleset base;
	struct ruleset *stages;
	size_t n_stages;
};

static const struct mime builtin_mime[] = {
	{ "bmp", "image/bmp" },
	{ "csv", "text/csv" },
	{ "doc", "application/msword" },
	{ "docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document" },
	{ "gif", "image/gif" },
	{ "heic", "image/heic" },
	{ "jpeg", "image/jpeg" },
	{ "jpg", "image/jpeg" },
	{ "m4a", "audio/mp4" },
	{ "mov", "video/quicktime" },
	{ "mp3", "audio/mpeg" },
	{ "mp4", "video/mp4" },
	{ "odt", "application/vnd.oasis.opendocument.text" },
	{ "pdf", "application/pdf" },
	{ "png", "image/png" },
	{ "ppt", "application/vnd.ms-powerpoint" },
	{ "pptx", "application/vnd.openxmlformats-officedocument.presentationml.presentation" },
	{ "svg", "image/svg+xml" },
	{ "tif", "image/tiff" },
	{ "tiff", "image/tiff" },
	{ "txt", "text/plain" },
	{ "wav", "audio/wav" },
	{ "webm", "video/webm" },
	{ "webp", "image/webp" },
	{ "xls", "application/vnd.ms-excel" },
	{ "xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet" },
	{ "zip", "application/zip" },
};

#define DEFAULT_MIME "application/octet-stream"

/* ---- small helpers ------------------------------------------------------- */

static size_t key_hash(const char *s, size_t len)
{
	uint64_t h = 1469598103934665603ull;

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 1099511628211ull;
	}
	return (size_t)h;
}

static int key_find(const struct mapping *m, const char *s, size_t len)
{
	size_t mask, i;

	if (!m->hcap)
		return -1;
	mask = m->hcap - 1;
	for (i = key_hash(s, len) & mask;; i = (i + 1) & mask) {
		int v = m->htab[i];

		if (!v)
			return -1;
		if (m->key_lens[v - 1] == len && memcmp(m->keys[v - 1], s, len) == 0)
			return v - 1;
	}
}

static int pair_cmp(const void *a, const void *b)
{
	const struct pair *x = a, *y = b;
	int c;

	if (x->from_len != y->from_len)
		return x->from_len < y->from_len ? -1 : 1;
	c = memcmp(x->from, y->from, x->from_len);
	if (c)
		return c;
	return x->line - y->line;
}

static const struct pair *pair_find(const struct pair *p, size_t n, const char *s, size_t len)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c;

		if (p[mid].from_len != len)
			c = p[mid].from_len < len ? -1 : 1;
		else
			c = memcmp(p[mid].from, s, len);
		if (c == 0)
			return &p[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

/* ---- loader -------------------------------------------------------------- */

struct loader {
	struct mapping *m;
	struct diag *d;
	bool oom;
	const char *dir; /* folder of the rule file: libconfig's include dir */
	struct {
		const char *name; /* as libconfig reports it (valid until config_destroy) */
		const char *full; /* interned */
	} includes[16];
	size_t n_includes;
};

static void *pool_keep(struct loader *L, void *p)
{
	struct mapping *m = L->m;
	void **np;

	if (!p) {
		L->oom = true;
		return NULL;
	}
	np = grow_array(m->pool, &m->cap_pool, m->n_pool + 1, sizeof(*np), 64);
	if (!np) {
		free(p);
		L->oom = true;
		return NULL;
	}
	m->pool = np;
	m->pool[m->n_pool++] = p;
	return p;
}

static void *pool_alloc(struct loader *L, size_t n, size_t size)
{
	if (n == 0)
		n = 1;
	return pool_keep(L, calloc(n, size));
}

static char *pool_dup(struct loader *L, const char *s)
{
	return pool_keep(L, strdup(s));
}

static char *pool_printf(struct loader *L, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static char *pool_printf(struct loader *L, const char *fmt, ...)
{
	va_list ap;
	char *s = NULL;

	va_start(ap, fmt);
	if (vasprintf(&s, fmt, ap) < 0)
		s = NULL;
	va_end(ap);
	return pool_keep(L, s);
}

static const char *intern_file(struct loader *L, const char *f)
{
	struct mapping *m = L->m;
	const char **nf;
	char *c;

	for (size_t i = 0; i < m->n_files; i++)
		if (strcmp(m->files[i], f) == 0)
			return m->files[i];
	c = pool_dup(L, f);
	if (!c)
		return m->path;
	nf = realloc(m->files, (m->n_files + 1) * sizeof(*nf));
	if (!nf) {
		L->oom = true;
		return m->path;
	}
	m->files = nf;
	m->files[m->n_files++] = c;
	return c;
}

/* libconfig 1.5 records an included file under the name written in the
 * @include directive; it opened it as include_dir + "/" + name. */
static const char *S_file(struct loader *L, const config_setting_t *s)
{
	const char *f = config_setting_source_file(s);
	char *full;
	const char *r;

	if (!f || strcmp(f, L->m->path) == 0)
		return intern_file(L, L->m->path);
	for (size_t i = 0; i < L->n_includes; i++)
		if (strcmp(L->includes[i].name, f) == 0)
			return L->includes[i].full;
	if (asprintf(&full, "%s/%s", L->dir, f) < 0) {
		L->oom = true;
		return L->m->path;
	}
	r = intern_file(L, full);
	free(full);
	if (L->n_includes < sizeof(L->includes) / sizeof(L->includes[0])) {
		L->includes[L->n_includes].name = f;
		L->includes[L->n_includes].full = r;
		L->n_includes++;
	}
	return r;
}

static int S_line(const config_setting_t *s)
{
	return (int)config_setting_source_line(s);
}

static void L_err(struct loader *L, const config_setting_t *s, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void L_err(struct loader *L, const config_setting_t *s, const char *fmt, ...)
{
	char msg[900];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	diag_add(L->d, S_file(L, s), S_line(s), "%s", msg);
}

static const char *type_name(int t)
{
	switch (t) {
	case CONFIG_TYPE_GROUP: return "a group { }";
	case CONFIG_TYPE_INT:
	case CONFIG_TYPE_INT64: return "an integer";
	case CONFIG_TYPE_FLOAT: return "a float";
	case CONFIG_TYPE_STRING: return "a string";
	case CONFIG_TYPE_BOOL: return "a boolean";
	case CONFIG_TYPE_ARRAY: return "an array [ ]";
	case CONFIG_TYPE_LIST: return "a list ( )";
	default: return "an unknown type";
	}
}

static bool name_in(const char *const *names, const char *n)
{
	for (; *names; names++)
		if (strcmp(*names, n) == 0)
			return true;
	return false;
}

static void join_names(const char *const *names, char *buf, size_t cap)
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

static void L_check_names(struct loader *L, const config_setting_t *g, const char *const *allowed,
			  const char *where)
{
	int n = config_setting_length(g);

	for (int i = 0; i < n; i++) {
		const config_setting_t *c = config_setting_get_elem(g, (unsigned)i);
		const char *name = config_setting_name(c);
		char list[600];

		if (name && name_in(allowed, name))
			continue;
		join_names(allowed, list, sizeof(list));
		L_err(L, c, "unknown setting '%s' in %s (known: %s)", name ? name : "?", where,
		      list);
	}
}

/* Getters: 0 absent, 1 present and valid, -1 present and invalid (reported). */

static int L_string(struct loader *L, const config_setting_t *g, const char *name, const char **ret)
{
	const config_setting_t *s = config_setting_get_member(g, name);
	const char *v;

	if (!s)
		return 0;
	if (config_setting_type(s) != CONFIG_TYPE_STRING) {
		L_err(L, s, "'%s' must be a string, not %s", name,
		      type_name(config_setting_type(s)));
		return -1;
	}
	v = config_setting_get_string(s);
	if (!utf8_valid(v, strlen(v))) {
		L_err(L, s, "'%s' is not valid UTF-8", name);
		return -1;
	}
	*ret = pool_dup(L, v);
	return *ret ? 1 : -1;
}

static int L_nonempty(struct loader *L, const config_setting_t *g, const char *name,
		      const char **ret)
{
	int rc = L_string(L, g, name, ret);

	if (rc == 1 && !**ret) {
		L_err(L, config_setting_get_member(g, name), "'%s' must not be empty", name);
		return -1;
	}
	return rc;
}

static int L_bool(struct loader *L, const config_setting_t *g, const char *name, bool *ret)
{
	const config_setting_t *s = config_setting_get_member(g, name);

	if (!s)
		return 0;
	if (config_setting_type(s) != CONFIG_TYPE_BOOL) {
		L_err(L, s, "'%s' must be true or false, not %s", name,
		      type_name(config_setting_type(s)));
		return -1;
	}
	*ret = config_setting_get_bool(s) != 0;
	return 1;
}

static int L_enum(struct loader *L, const config_setting_t *g, const char *name,
		  const char *const *names, int *ret)
{
	const char *v = NULL;
	int rc = L_string(L, g, name, &v);
	char list[200];

	if (rc != 1)
		return rc;
	for (int i = 0; names[i]; i++) {
		if (strcmp(names[i], v) == 0) {
			*ret = i;
			return 1;
		}
	}
	join_names(names, list, sizeof(list));
	L_err(L, config_setting_get_member(g, name), "'%s' must be one of %s, not \"%s\"", name,
	      list, v);
	return -1;
}

/* An integer given as a libconfig integer or as a string of digits, returned
 * as canonical decimal text.  Large ids may be written as strings: libconfig
 * 1.5 keeps integer literals in 64 bits at most (see scan_literals()). */
static int L_integer_setting(struct loader *L, const config_setting_t *s, const char *name,
			     const char **ret)
{
	char buf[32];

	if (config_setting_type(s) == CONFIG_TYPE_INT ||
	    config_setting_type(s) == CONFIG_TYPE_INT64) {
		snprintf(buf, sizeof(buf), "%lld", (long long)config_setting_get_int64(s));
	} else if (config_setting_type(s) == CONFIG_TYPE_STRING) {
		const char *v = config_setting_get_string(s);
		struct bridge_error e;

		bridge_error_clear(&e);
		if (convert_integer(v, strlen(v), buf, sizeof(buf), &e) < 0) {
			L_err(L, s, "'%s': %s", name, e.message);
			return -1;
		}
	} else {
		L_err(L, s, "'%s' must be an integer (or a string of digits), not %s", name,
		      type_name(config_setting_type(s)));
		return -1;
	}
	*ret = pool_dup(L, buf);
	return *ret ? 1 : -1;
}

static int L_integer(struct loader *L, const config_setting_t *g, const char *name,
		     const char **ret)
{
	const config_setting_t *s = config_setting_get_member(g, name);

	if (!s)
		return 0;
	return L_integer_setting(L, s, name, ret);
}

static struct v2_val vstr(const char *s)
{
	struct v2_val v = { V2_STRING, s, strlen(s) };

	return v;
}

static struct v2_val vnum(const char *s)
{
	struct v2_val v = { V2_NUMBER, s, strlen(s) };

	return v;
}

static int L_vstring(struct loader *L, const config_setting_t *g, const char *name,
		     struct v2_val *ret)
{
	const char *s = NULL;
	int rc = L_string(L, g, name, &s);

	if (rc == 1)
		*ret = vstr(s);
	return rc;
}

static int L_vinteger(struct loader *L, const config_setting_t *g, const char *name,
		      struct v2_val *ret)
{
	const char *s = NULL;
	int rc = L_integer(L, g, name, &s);

	if (rc == 1)
		*ret = vnum(s);
	return rc;
}

static bool is_list(const config_setting_t *s)
{
	return config_setting_type(s) == CONFIG_TYPE_LIST ||
	       config_setting_type(s) == CONFIG_TYPE_ARRAY;
}

/* A list of ["from", "to"] string pairs, sorted for binary search;
 * duplicates of `from` are load errors. */
static int L_pairs(struct loader *L, const config_setting_t *g, const char *name,
		   const struct pair **ret, size_t *ret_n)
{
	const config_setting_t *s = config_setting_get_member(g, name);
	struct pair *p;
	int n, bad = 0;
	size_t k = 0;

	if (!s)
		return 0;
	if (!is_list(s)) {
		L_err(L, s, "'%s' must be a list of [\"from\", \"to\"] pairs, not %s", name,
		      type_name(config_setting_type(s)));
		return -1;
	}
	n = config_setting_length(s);
	p = pool_alloc(L, (size_t)n, sizeof(*p));
	if (!p)
		return -1;
	for (int i = 0; i < n; i++) {
		const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);
		const config_setting_t *a, *b;
		const char *from, *to;

		if (!is_list(e) || config_setting_length(e) != 2 ||
		    config_setting_type(a = config_setting_get_elem(e, 0)) != CONFIG_TYPE_STRING ||
		    config_setting_type(b = config_setting_get_elem(e, 1)) != CONFIG_TYPE_STRING) {
			L_err(L, e,
			      "each entry of '%s' must be a pair of strings [\"from\", \"to\"]",
			      name);
			bad = 1;
			continue;
		}
		from = config_setting_get_string(a);
		to = config_setting_get_string(b);
		if (!utf8_valid(from, strlen(from)) || !utf8_valid(to, strlen(to))) {
			L_err(L, e, "entry of '%s' is not valid UTF-8", name);
			bad = 1;
			continue;
		}
		p[k].from = pool_dup(L, from);
		p[k].to = pool_dup(L, to);
		if (!p[k].from || !p[k].to)
			return -1;
		p[k].from_len = strlen(from);
		p[k].to_len = strlen(to);
		p[k].line = S_line(e);
		k++;
	}
	qsort(p, k, sizeof(*p), pair_cmp);
	for (size_t i = 1; i < k; i++) {
		if (p[i].from_len == p[i - 1].from_len &&
		    memcmp(p[i].from, p[i - 1].from, p[i].from_len) == 0) {
			diag_add(L->d, S_file(L, s), p[i].line,
				 "duplicate entry \"%s\" in '%s' (first at line %d)", p[i].from,
				 name, p[i - 1].line);
			bad = 1;
		}
	}
	*ret = p;
	*ret_n = k;
	return bad ? -1 : 1;
}

/* A list/array of strings (v1 key names). */
static int L_strings(struct loader *L, const config_setting_t *g, const char *name,
		     const char ***ret, size_t *ret_n)
{
	const config_setting_t *s = config_setting_get_member(g, name);
	const char **v;
	int n, bad = 0;

	if (!s)
		return 0;
	if (!is_list(s)) {
		L_err(L, s, "'%s' must be an array of strings, not %s", name,
		      type_name(config_setting_type(s)));
		return -1;
	}
	n = config_setting_length(s);
	v = pool_alloc(L, (size_t)n, sizeof(*v));
	if (!v)
		return -1;
	for (int i = 0; i < n; i++) {
		const config_setting_t *e = config_setting_get_elem(s, (unsigned)i);

		if (config_setting_type(e) != CONFIG_TYPE_STRING ||
		    !*config_setting_get_string(e)) {
			L_err(L, e, "each entry of '%s' must be a non-empty string", name);
			bad = 1;
			continue;
		}
		v[i] = pool_dup(L, config_setting_get_string(e));
	}
	*ret = v;
	*ret_n = (size_t)n;
	return bad ? -1 : 1;
}

static int L_zone(struct loader *L, const config_setting_t *g, const struct tz_zone **ret)
{
	const config_setting_t *s = config_setting_get_member(g, "timezone");
	const char *name = NULL;
	struct bridge_error e;
	struct tz_zone *z = NULL, **nz;
	struct mapping *m = L->m;
	int rc = L_nonempty(L, g, "timezone", &name);

	if (rc != 1)
		return rc;
	for (size_t i = 0; i < m->n_zones; i++) {
		if (strcmp(tz_zone_name(m->zones[i]), name) == 0) {
			*ret = m->zones[i];
			return 1;
		}
	}
	bridge_error_clear(&e);
	if (tz_zone_load(name, &z, &e) < 0) {
		L_err(L, s, "'timezone': %s", e.message[0] ? e.message : "unknown time zone");
		return -1;
	}
	nz = realloc(m->zones, (m->n_zones + 1) * sizeof(*nz));
	if (!nz) {
		tz_zone_free(z);
		L->oom = true;
		return -1;
	}
	m->zones = nz;
	m->zones[m->n_zones++] = z;
	*ret = z;
	return 1;
}

static void L_dt(struct loader *L, const config_setting_t *g, struct dt_opts *dt)
{
	dt->zone = NULL;
	dt->amb = -1;
	dt->gap = -1;
	L_zone(L, g, &dt->zone);
	L_enum(L, g, "ambiguous", ambiguous_names, &dt->amb);
	L_enum(L, g, "gap", gap_names, &dt->gap);
}

/* Assign (or find) the slot of a v1 key. */
static int key_intern(struct loader *L, const char *k)
{
	struct mapping *m = L->m;
	size_t len = strlen(k);
	int slot = key_find(m, k, len);

	if (slot >= 0)
		return slot;
	if (m->n_keys >= MAP_KEYS_MAX) {
		L->oom = true;
		return -1;
	}
	if (m->n_keys == m->cap_keys) {
		size_t cap = m->cap_keys ? m->cap_keys * 2 : 64;
		const char **nk = realloc(m->keys, cap * sizeof(*nk));
		size_t *nl;

		if (!nk) {
			L->oom = true;
			return -1;
		}
		m->keys = nk;
		nl = realloc(m->key_lens, cap * sizeof(*nl));
		if (!nl) {
			L->oom = true;
			return -1;
		}
		m->key_lens = nl;
		m->cap_keys = cap;
	}
	if ((m->n_keys + 1) * 2 > m->hcap) {
		size_t cap = m->hcap ? m->hcap * 2 : 128;
		int *nh = calloc(cap, sizeof(*nh));

		if (!nh) {
			L->oom = true;
			return -1;
		}
		for (size_t i = 0; i < m->n_keys; i++) {
			size_t j = key_hash(m->keys[i], m->key_lens[i]) & (cap - 1);

			while (nh[j])
				j = (j + 1) & (cap - 1);
			nh[j] = (int)i + 1;
		}
		free(m->htab);
		m->htab = nh;
		m->hcap = cap;
	}
	m->keys[m->n_keys] = k;
	m->key_lens[m->n_keys] = len;
	{
		size_t j = key_hash(k, len) & (m->hcap - 1);

		while (m->htab[j])
			j = (j + 1) & (m->hcap - 1);
		m->htab[j] = (int)m->n_keys + 1;
	}
	return (int)m->n_keys++;
}

static const char *const field_names[] = {
	"to",  "from",    "value",    "default",   "required", "convert",
	"map", "unknown", "timezone", "ambiguous", "gap",      NULL,
};

/* The v2 fields the schema types as date-time. */
static bool is_datetime_target(const char *to)
{
	static const char *const paths[] = { "startedAt", "completedAt",
					     "campaign.channel.dateStart",
					     "campaign.channel.dateEnd", NULL };

	for (int i = 0; to && paths[i]; i++)
		if (strcmp(to, paths[i]) == 0)
			return true;
	return false;
}

/* A constant for a date-time target must already be the v2 form
 * YYYY-MM-DDTHH:MM:SS.mmmZ: converting it as UTC gives it back unchanged. */
static bool is_v2_datetime(const char *s)
{
	char out[32];

	if (!s || strlen(s) != 24 || s[23] != 'Z')
		return false;
	return convert_datetime(s, 24, NULL, DT_AMBIGUOUS_REJECT, DT_GAP_REJECT, out, sizeof(out),
				NULL) == 0 &&
	       strcmp(out, s) == 0;
}

/* A rule writing startedAt, completedAt or a channel date must produce a
 * schema date-time whatever the payload holds: integers are converted
 * whatever the rule says, date-times cannot be guessed, so refuse the rule. */
static void L_datetime_target(struct loader *L, const config_setting_t *g,
			      const struct field_rule *r, bool has_value)
{
	if (!is_datetime_target(r->to))
		return;
	if (has_value) {
		if (r->constant.kind == V2_STRING && !is_v2_datetime(r->constant.s))
			L_err(L, config_setting_get_member(g, "value"),
			      "'%s' is a date-time: a constant must be YYYY-MM-DDTHH:MM:SS.mmmZ, "
			      "not \"%s\"",
			      r->to, r->constant.s);
		return;
	}
	if (r->conv != CONV_DATETIME)
		L_err(L, g,
		      "'%s' is a date-time: the rule needs convert = \"datetime\" (a copied v1 "
		      "value is not YYYY-MM-DDTHH:MM:SS.mmmZ)",
		      r->to);
	if (r->def.kind == V2_STRING && !is_v2_datetime(r->def.s))
		L_err(L, config_setting_get_member(g, "default"),
		      "'%s' is a date-time: a default must be YYYY-MM-DDTHH:MM:SS.mmmZ, not \"%s\"",
		      r->to, r->def.s);
	for (size_t i = 0; i < r->n_map; i++)
		if (!is_v2_datetime(r->map[i].to))
			L_err(L, config_setting_get_member(g, "map"),
			      "'%s' is a date-time: map value \"%s\" is not "
			      "YYYY-MM-DDTHH:MM:SS.mmmZ",
			      r->to, r->map[i].to);
}

static struct field_rule *L_field(struct loader *L, const config_setting_t *g)
{
	struct field_rule *r;
	const char *value = NULL, *def = NULL;
	const config_setting_t *s;
	int conv = -1, unknown = UNKNOWN_KEEP;
	bool has_value = false;

	if (config_setting_type(g) != CONFIG_TYPE_GROUP) {
		L_err(L, g, "each entry of 'fields' must be a group { to = ...; ... }, not %s",
		      type_name(config_setting_type(g)));
		return NULL;
	}
	r = pool_alloc(L, 1, sizeof(*r));
	if (!r)
		return NULL;
	r->file = S_file(L, g);
	r->line = S_line(g);
	r->key = -1;
	L_check_names(L, g, field_names, "a field rule");

	if (L_nonempty(L, g, "to", &r->to) == 0) {
		L_err(L, g, "field rule without 'to' (the v2 path it writes)");
	} else if (r->to && v2_target_lookup(r->to, &r->slot, &r->type) < 0) {
		if (strncmp(r->to, "form", 4) == 0 || strncmp(r->to, "optins", 6) == 0 ||
		    strncmp(r->to, "questionnaire", 13) == 0)
			L_err(L, config_setting_get_member(g, "to"),
			      "unknown v2 path '%s': form, optins and questionnaire entries come "
			      "from 'variables'",
			      r->to);
		else
			L_err(L, config_setting_get_member(g, "to"),
			      "unknown v2 path '%s' (known: %s)", r->to, v2_target_list());
		r->to = NULL;
	}
	L_nonempty(L, g, "from", &r->from);
	L_bool(L, g, "required", &r->required);
	if (L_enum(L, g, "convert", conv_names, &conv) == 1)
		r->conv = (enum conv)(conv + 1);
	L_pairs(L, g, "map", &r->map, &r->n_map);
	L_enum(L, g, "unknown", unknown_names, &unknown);
	r->unknown = (enum unknown_policy)unknown;
	L_dt(L, g, &r->dt);

	/* Constants and defaults are v2 values: typed by the target. */
	if ((s = config_setting_get_member(g, "value")) != NULL) {
		has_value = true;
		if (r->to && r->type == V2_T_INTEGER) {
			if (L_integer_setting(L, s, "value", &value) == 1)
				r->constant = vnum(value);
		} else if (L_string(L, g, "value", &value) == 1) {
			r->constant = vstr(value);
		}
	}
	if ((s = config_setting_get_member(g, "default")) != NULL) {
		if (r->to && r->type == V2_T_INTEGER) {
			if (L_integer_setting(L, s, "default", &def) == 1)
				r->def = vnum(def);
		} else if (L_string(L, g, "default", &def) == 1) {
			r->def = vstr(def);
		}
	}

	if (has_value && config_setting_get_member(g, "from"))
		L_err(L, g, "field rule has both 'value' (a constant) and 'from' (a v1 key)");
	else if (!has_value && !config_setting_get_member(g, "from"))
		L_err(L, g, "field rule needs 'from' (a v1 key) or 'value' (a constant)");
	if (has_value) {
		static const char *const only_from[] = { "default",   "required", "convert",
							 "map",       "unknown",  "timezone",
							 "ambiguous", "gap",      NULL };

		for (int i = 0; only_from[i]; i++)
			if (config_setting_get_member(g, only_from[i]))
				L_err(L, config_setting_get_member(g, only_from[i]),
				      "'%s' needs 'from': a constant is written as is",
				      only_from[i]);
	}
	if (r->required && config_setting_get_member(g, "default"))
		L_err(L, g, "field rule is both 'required' and has a 'default'");
	if (r->to && r->type == V2_T_INTEGER && r->conv != CONV_NONE && r->conv != CONV_INTEGER)
		L_err(L, config_setting_get_member(g, "convert"),
		      "'%s' is an integer: convert must be \"integer\" or absent, not \"%s\"",
		      r->to, conv_names[r->conv - 1]);
	if (config_setting_get_member(g, "unknown") && !config_setting_get_member(g, "map"))
		L_err(L, config_setting_get_member(g, "unknown"), "'unknown' needs a 'map'");
	if ((r->dt.zone || r->dt.amb >= 0 || r->dt.gap >= 0) && r->conv != CONV_DATETIME)
		L_err(L, g, "'timezone', 'ambiguous' and 'gap' need convert = \"datetime\"");
	L_datetime_target(L, g, r, has_value);
	if (r->from)
		r->key = key_intern(L, r->from);
	return r;
}

/* Which sections accept a variable setting. */
#define SEC_F   (1u << V2_FORM)
#define SEC_O   (1u << V2_OPTINS)
#define SEC_Q   (1u << V2_QUESTIONNAIRE)
#define SEC_ALL (SEC_F | SEC_O | SEC_Q)

static const struct {
	const char *name;
	unsigned sections;
} var_settings[] = {
	{ "section", SEC_ALL },
	{ "variable", SEC_ALL },
	{ "from", SEC_ALL },
	{ "id", SEC_ALL },
	{ "label", SEC_ALL },
	{ "type", SEC_F | SEC_Q },
	{ "description", SEC_O },
	{ "categories", SEC_O },
	{ "required", SEC_ALL },
	{ "default", SEC_ALL },
	{ "convert", SEC_ALL },
	{ "map", SEC_ALL },
	{ "choices", SEC_F },
	{ "unknown", SEC_ALL },
	{ "file", SEC_F },
	{ "separator", SEC_F | SEC_Q },
	{ "score_from", SEC_Q },
	{ "max_score", SEC_Q },
	{ "max_score_from", SEC_Q },
	{ "correct_from", SEC_Q },
	{ "response_score_from", SEC_Q },
	{ "timezone", SEC_ALL },
	{ "ambiguous", SEC_ALL },
	{ "gap", SEC_ALL },
};

static const char *const category_names[] = { "id", "label", "technical_name", "parent", NULL };
static const char *const parent_names[] = { "id", "label", "technical_name", NULL };

static void L_category_ref(struct loader *L, const config_setting_t *g, struct v2_val *id,
			   struct v2_val *label, struct v2_val *tn)
{
	L_vinteger(L, g, "id", id);
	L_vstring(L, g, "label", label);
	L_vstring(L, g, "technical_name", tn);
}

static void L_categories(struct loader *L, const config_setting_t *g, struct var_rule *r)
{
	const config_setting_t *s = config_setting_get_member(g, "categories");
	struct v2_category *c;
	int n;

	if (!s)
		return;
	if (config_setting_type(s) != CONFIG_TYPE_LIST &&
	    !(config_setting_type(s) == CONFIG_TYPE_ARRAY && config_setting_length(s) == 0)) {
		L_err(L, s,
		      "'categories' must be a list ( { id = ...; label = ...; technical_name = "
		      "...; } ), not %s",
		      type_name(config_setting_type(s)));
		return;
	}
	n = config_setting_length(s);
	c = pool_alloc(L, (size_t)n, sizeof(*c));
	if (!c)
		return;
	for (int i = 0; i < n; i++) {
		const config_setting_t *e = config_setting_get_elem(s, (unsigned)i), *p;

		if (config_setting_type(e) != CONFIG_TYPE_GROUP) {
			L_err(L, e, "each entry of 'categories' must be a group { }");
			continue;
		}
		L_check_names(L, e, category_names, "a category");
		L_category_ref(L, e, &c[i].id, &c[i].label, &c[i].technical_name);
		if (!config_setting_get_member(e, "id") && !config_setting_get_member(e, "label") &&
		    !config_setting_get_member(e, "technical_name"))
			L_err(L, e, "a category needs at least one of id, label, technical_name");
		if ((p = config_setting_get_member(e, "parent")) != NULL) {
			if (config_setting_type(p) != CONFIG_TYPE_GROUP) {
				L_err(L, p,
				      "'parent' must be a group { id = ...; label = ...; "
				      "technical_name = ...; }");
				continue;
			}
			L_check_names(L, p, parent_names, "a category parent");
			L_category_ref(L, p, &c[i].parent.id, &c[i].parent.label,
				       &c[i].parent.technical_name);
		}
	}
	r->categories = c;
	r->n_categories = (size_t)n;
}

static int L_helper_key(struct loader *L, const config_setting_t *g, const char *name,
			const char **ret)
{
	if (L_nonempty(L, g, name, ret) == 1)
		return key_intern(L, *ret);
	return -1;
}

static struct var_rule *L_var(struct loader *L, const config_setting_t *g,
			      const char *const *prefix)
{
	struct var_rule *r;
	int section = -1, conv = -1, unknown = UNKNOWN_KEEP, n;
	const char *id = NULL;

	if (config_setting_type(g) != CONFIG_TYPE_GROUP) {
		L_err(L, g,
		      "each entry of 'variables' must be a group { section = ...; variable = ...; "
		      "}, not %s",
		      type_name(config_setting_type(g)));
		return NULL;
	}
	r = pool_alloc(L, 1, sizeof(*r));
	if (!r)
		return NULL;
	r->file = S_file(L, g);
	r->line = S_line(g);
	r->key = r->score_key = r->max_score_key = r->correct_key = r->response_score_key = -1;

	if (L_enum(L, g, "section", section_names, &section) == 0)
		L_err(L, g, "variable without 'section' (form, optins or questionnaire)");
	r->section = section >= 0 ? (enum v2_section)section : V2_FORM;
	n = config_setting_length(g);
	for (int i = 0; i < n; i++) {
		const config_setting_t *c = config_setting_get_elem(g, (unsigned)i);
		const char *name = config_setting_name(c);
		size_t k, nk = sizeof(var_settings) / sizeof(var_settings[0]);

		for (k = 0; k < nk; k++)
			if (name && strcmp(var_settings[k].name, name) == 0)
				break;
		if (k == nk)
			L_err(L, c, "unknown setting '%s' in a variable", name ? name : "?");
		else if (section >= 0 && !(var_settings[k].sections & (1u << section)))
			L_err(L, c, "'%s' does not apply to %s variables", name,
			      section_names[section]);
	}

	if (L_nonempty(L, g, "variable", &r->variable) == 0)
		L_err(L, g, "variable without 'variable' (its technical name)");
	if (r->variable)
		r->variable_val = vstr(r->variable);
	if (L_nonempty(L, g, "from", &r->from) == 0 && r->variable)
		r->from = pool_printf(L, "%s%s", prefix[r->section] ? prefix[r->section] : "",
				      r->variable);
	if (r->from)
		r->key = key_intern(L, r->from);
	if (L_integer(L, g, "id", &id) == 1)
		r->id = vnum(id);
	L_vstring(L, g, "label", &r->label);
	L_vstring(L, g, "type", &r->type);
	L_vstring(L, g, "description", &r->description);
	L_bool(L, g, "required", &r->required);
	if (L_string(L, g, "default", &r->def) == 1) {
		r->has_def = true;
		r->def_len = strlen(r->def);
		if (r->section == V2_OPTINS && strcmp(r->def, "1") && strcmp(r->def, "0") &&
		    *r->def)
			L_err(L, config_setting_get_member(g, "default"),
			      "an opt-in default must be \"1\", \"0\" or \"\", not \"%s\"", r->def);
	}
	if (r->required && r->has_def)
		L_err(L, g, "variable '%s' is both 'required' and has a 'default'",
		      r->variable ? r->variable : "?");
	if (L_enum(L, g, "convert", conv_names, &conv) == 1)
		r->conv = (enum conv)(conv + 1);
	L_pairs(L, g, "map", &r->map, &r->n_map);
	L_pairs(L, g, "choices", &r->choices, &r->n_choices);
	L_enum(L, g, "unknown", unknown_names, &unknown);
	r->unknown = (enum unknown_policy)unknown;
	if (config_setting_get_member(g, "unknown") && !config_setting_get_member(g, "map") &&
	    !config_setting_get_member(g, "choices"))
		L_err(L, config_setting_get_member(g, "unknown"),
		      "'unknown' needs a 'map' or 'choices'");
	L_bool(L, g, "file", &r->is_file);
	if (r->is_file && config_setting_get_member(g, "choices"))
		L_err(L, g, "a file variable cannot have 'choices'");
	if (L_string(L, g, "separator", &r->separator) == 1) {
		r->sep_len = strlen(r->separator);
		if (!r->sep_len) {
			L_err(L, config_setting_get_member(g, "separator"),
			      "'separator' must not be empty");
			r->separator = NULL;
		}
	}
	r->score_key = L_helper_key(L, g, "score_from", &r->score_from);
	r->max_score_key = L_helper_key(L, g, "max_score_from", &r->max_score_from);
	r->correct_key = L_helper_key(L, g, "correct_from", &r->correct_from);
	r->response_score_key = L_helper_key(L, g, "response_score_from", &r->response_score_from);
	L_vinteger(L, g, "max_score", &r->max_score);
	if (r->max_score.kind != V2_ABSENT && r->max_score_from)
		L_err(L, g, "variable has both 'max_score' and 'max_score_from'");
	L_categories(L, g, r);
	L_dt(L, g, &r->dt);
	if ((r->dt.zone || r->dt.amb >= 0 || r->dt.gap >= 0) && r->conv != CONV_DATETIME)
		L_err(L, g, "'timezone', 'ambiguous' and 'gap' need convert = \"datetime\"");
	return r;
}

static void L_fields(struct loader *L, const config_setting_t *g, const struct field_rule ***ret,
		     size_t *ret_n)
{
	const config_setting_t *s = config_setting_get_member(g, "fields");
	const struct field_rule **v;
	int n;
	size_t k = 0;

	*ret = NULL;
	*ret_n = 0;
	if (!s)
		return;
	if (config_setting_type(s) != CONFIG_TYPE_LIST &&
	    !(config_setting_type(s) == CONFIG_TYPE_ARRAY && config_setting_length(s) == 0)) {
		L_err(L, s, "'fields' must be a list ( { ... }, { ... } ), not %s",
		      type_name(config_setting_type(s)));
		return;
	}
	n = config_setting_length(s);
	if (n > MAP_RULES_MAX) {
		L_err(L, s, "'fields' has %d rules, more than the limit of %d", n, MAP_RULES_MAX);
		return;
	}
	v = pool_alloc(L, (size_t)n, sizeof(*v));
	if (!v)
		return;
	for (int i = 0; i < n; i++) {
		const struct field_rule *r = L_field(L, config_setting_get_elem(s, (unsigned)i));

		if (!r)
			continue;
		for (size_t j = 0; j < k && r->to; j++) {
			if (v[j]->to && strcmp(v[j]->to, r->to) == 0) {
				diag_add(L->d, r->file, r->line,
					 "duplicate target '%s' (first at %s:%d)", r->to,
					 v[j]->file, v[j]->line);
				break;
			}
		}
		v[k++] = r;
	}
	*ret = v;
	*ret_n = k;
}

static void L_vars(struct loader *L, const config_setting_t *g, const char *const *prefix,
		   const struct var_rule ***ret, size_t *ret_n)
{
	const config_setting_t *s = config_setting_get_member(g, "variables");
	const struct var_rule **v;
	int n;
	size_t k = 0;

	*ret = NULL;
	*ret_n = 0;
	if (!s)
		return;
	if (config_setting_type(s) != CONFIG_TYPE_LIST &&
	    !(config_setting_type(s) == CONFIG_TYPE_ARRAY && config_setting_length(s) == 0)) {
		L_err(L, s, "'variables' must be a list ( { ... }, { ... } ), not %s",
		      type_name(config_setting_type(s)));
		return;
	}
	n = config_setting_length(s);
	if (n > MAP_RULES_MAX) {
		L_err(L, s, "'variables' has %d rules, more than the limit of %d", n,
		      MAP_RULES_MAX);
		return;
	}
	v = pool_alloc(L, (size_t)n, sizeof(*v));
	if (!v)
		return;
	for (int i = 0; i < n; i++) {
		const struct var_rule *r = L_var(L, config_setting_get_elem(s, (unsigned)i),
						 prefix);

		if (!r)
			continue;
		for (size_t j = 0; j < k && r->variable; j++) {
			if (v[j]->variable && strcmp(v[j]->variable, r->variable) == 0) {
				diag_add(L->d, r->file, r->line,
					 "duplicate variable '%s' (first at %s:%d)", r->variable,
					 v[j]->file, v[j]->line);
				break;
			}
		}
		v[k++] = r;
	}
	*ret = v;
	*ret_n = k;
}

/* Stage selector ids: integers or strings of digits, kept canonical. */
static int L_ids(struct loader *L, const config_setting_t *g, const char *name, const char ***ret,
		 size_t *ret_n)
{
	const config_setting_t *s = config_setting_get_member(g, name);
	const char **v;
	int n, bad = 0;

	if (!s)
		return 0;
	if (!is_list(s)) {
		L_err(L, s, "'%s' must be an array of ids [1, 2] or [\"1\", \"2\"], not %s", name,
		      type_name(config_setting_type(s)));
		return -1;
	}
	n = config_setting_length(s);
	if (n == 0) {
		L_err(L, s, "'%s' must not be empty", name);
		return -1;
	}
	v = pool_alloc(L, (size_t)n, sizeof(*v));
	if (!v)
		return -1;
	for (int i = 0; i < n; i++)
		if (L_integer_setting(L, config_setting_get_elem(s, (unsigned)i), name, &v[i]) != 1)
			bad = 1;
	*ret = v;
	*ret_n = (size_t)n;
	return bad ? -1 : 1;
}

static void mark_named(struct ruleset *rs, int key)
{
	if (key >= 0)
		rs->named[key] = 1;
}

/* Fill rs->named from its rules and ignore list (needs the final key count). */
static int ruleset_mark(struct loader *L, struct ruleset *rs)
{
	const struct mapping *m = L->m;

	rs->named = pool_alloc(L, m->n_keys, 1);
	if (!rs->named)
		return -1;
	for (size_t i = 0; i < rs->n_ignore; i++)
		if (rs->ignore[i])
			mark_named(rs, key_find(m, rs->ignore[i], strlen(rs->ignore[i])));
	for (size_t i = 0; i < rs->n_fields; i++)
		mark_named(rs, rs->fields[i]->key);
	for (size_t i = 0; i < rs->n_vars; i++) {
		const struct var_rule *r = rs->vars[i];

		mark_named(rs, r->key);
		mark_named(rs, r->score_key);
		mark_named(rs, r->max_score_key);
		mark_named(rs, r->correct_key);
		mark_named(rs, r->response_score_key);
	}
	return 0;
}

struct stage_src {
	const struct field_rule **fields;
	size_t n_fields;
	const struct var_rule **vars;
	size_t n_vars;
	const char **ignore;
	size_t n_ignore;
	bool replace;
};

/* Effective rule lists of a stage: the stage's rules replace base rules with
 * the same target (fields) or variable name (variables) in place; the others
 * are appended in stage order.  With replace = true the base lists are not
 * used at all. */
static void stage_merge(struct loader *L, const struct ruleset *base, const struct stage_src *src,
			struct ruleset *rs)
{
	size_t nf = 0, nv = 0;
	bool *used_f = calloc(src->n_fields + 1, sizeof(bool));
	bool *used_v = calloc(src->n_vars + 1, sizeof(bool));

	rs->fields = pool_alloc(L, base->n_fields + src->n_fields, sizeof(*rs->fields));
	rs->vars = pool_alloc(L, base->n_vars + src->n_vars, sizeof(*rs->vars));
	if (!used_f || !used_v || !rs->fields || !rs->vars) {
		L->oom = true;
		goto out;
	}
	if (!src->replace) {
		for (size_t i = 0; i < base->n_fields; i++) {
			const struct field_rule *r = base->fields[i];

			for (size_t j = 0; j < src->n_fields; j++) {
				if (!used_f[j] && r->to && src->fields[j]->to &&
				    strcmp(r->to, src->fields[j]->to) == 0) {
					r = src->fields[j];
					used_f[j] = true;
					break;
				}
			}
			rs->fields[nf++] = r;
		}
		for (size_t i = 0; i < base->n_vars; i++) {
			const struct var_rule *r = base->vars[i];

			for (size_t j = 0; j < src->n_vars; j++) {
				if (!used_v[j] && r->variable && src->vars[j]->variable &&
				    strcmp(r->variable, src->vars[j]->variable) == 0) {
					r = src->vars[j];
					used_v[j] = true;
					break;
				}
			}
			rs->vars[nv++] = r;
		}
	}
	for (size_t j = 0; j < src->n_fields; j++)
		if (!used_f[j])
			rs->fields[nf++] = src->fields[j];
	for (size_t j = 0; j < src->n_vars; j++)
		if (!used_v[j])
			rs->vars[nv++] = src->vars[j];
	rs->n_fields = nf;
	rs->n_vars = nv;
out:
	free(used_f);
	free(used_v);
}

static const char *const top_names[] = {
	"version",     "timezone",     "ambiguous", "gap",        "unmapped",
	"website_key", "campaign_key", "prefixes",  "mime_types", "mime_default",
	"ignore",      "fields",       "variables", "stages",     NULL,
};
static const char *const stage_names[] = {
	"name",      "websites", "campaigns", "replace", "unmapped",  "timezone",
	"ambiguous", "gap",      "ignore",    "fields",  "variables", NULL,
};

/* Datetime rules need a zone from somewhere. */
static void check_zones_fields(struct loader *L, const struct field_rule *const *f, size_t n,
			       const struct tz_zone *zone)
{
	for (size_t i = 0; i < n; i++)
		if (f[i]->conv == CONV_DATETIME && !f[i]->dt.zone && !zone)
			diag_add(L->d, f[i]->file, f[i]->line,
				 "convert = \"datetime\" needs a 'timezone' (in the rule, its "
				 "stage or the mapping)");
}

static void check_zones_vars(struct loader *L, const struct var_rule *const *v, size_t n,
			     const struct tz_zone *zone)
{
	for (size_t i = 0; i < n; i++)
		if (v[i]->conv == CONV_DATETIME && !v[i]->dt.zone && !zone)
			diag_add(L->d, v[i]->file, v[i]->line,
				 "convert = \"datetime\" needs a 'timezone' (in the rule, its "
				 "stage or the mapping)");
}

static void L_stages(struct loader *L, const config_setting_t *root, const char *const *prefix,
		     const char **base_ignore, size_t n_base_ignore)
{
	const config_setting_t *s = config_setting_get_member(root, "stages");
	struct mapping *m = L->m;
	int n;

	if (!s)
		return;
	if (config_setting_type(s) != CONFIG_TYPE_LIST &&
	    !(config_setting_type(s) == CONFIG_TYPE_ARRAY && config_setting_length(s) == 0)) {
		L_err(L, s, "'stages' must be a list ( { ... }, { ... } ), not %s",
		      type_name(config_setting_type(s)));
		return;
	}
	n = config_setting_length(s);
	m->stages = pool_alloc(L, (size_t)n, sizeof(*m->stages));
	if (!m->stages)
		return;
	for (int i = 0; i < n; i++) {
		const config_setting_t *g = config_setting_get_elem(s, (unsigned)i);
		struct ruleset *rs = &m->stages[m->n_stages];
		struct stage_src src = { 0 };
		int unmapped = -1, amb = -1, gap = -1;
		const struct tz_zone *zone = NULL;

		if (config_setting_type(g) != CONFIG_TYPE_GROUP) {
			L_err(L, g,
			      "each entry of 'stages' must be a group { websites = [...]; ... }");
			continue;
		}
		L_check_names(L, g, stage_names, "a stage");
		rs->file = S_file(L, g);
		rs->line = S_line(g);
		if (L_nonempty(L, g, "name", &rs->name) != 1)
			rs->name = pool_printf(L, "stage at line %d", rs->line);
		L_ids(L, g, "websites", &rs->websites, &rs->n_websites);
		L_ids(L, g, "campaigns", &rs->campaigns, &rs->n_campaigns);
		if (!config_setting_get_member(g, "websites") &&
		    !config_setting_get_member(g, "campaigns"))
			L_err(L, g,
			      "stage needs 'websites' or 'campaigns' (the ids it applies to)");
		rs->specificity = (rs->n_websites ? 1 : 0) + (rs->n_campaigns ? 2 : 0);
		L_bool(L, g, "replace", &src.replace);
		L_enum(L, g, "unmapped", unmapped_names, &unmapped);
		L_zone(L, g, &zone);
		L_enum(L, g, "ambiguous", ambiguous_names, &amb);
		L_enum(L, g, "gap", gap_names, &gap);
		if (unmapped >= 0) {
			rs->unmapped = (enum mapping_unmapped)unmapped;
			rs->unmapped_file = rs->file;
			rs->unmapped_line = S_line(config_setting_get_member(g, "unmapped"));
		} else {
			rs->unmapped = m->base.unmapped;
			rs->unmapped_file = m->base.unmapped_file;
			rs->unmapped_line = m->base.unmapped_line;
		}
		rs->zone = zone ? zone : m->base.zone;
		rs->amb = amb >= 0 ? (enum dt_ambiguous)amb : m->base.amb;
		rs->gap = gap >= 0 ? (enum dt_gap)gap : m->base.gap;
		L_strings(L, g, "ignore", &src.ignore, &src.n_ignore);
		L_fields(L, g, &src.fields, &src.n_fields);
		L_vars(L, g, prefix, &src.vars, &src.n_vars);
		check_zones_fields(L, src.fields, src.n_fields, rs->zone);
		check_zones_vars(L, src.vars, src.n_vars, rs->zone);
		stage_merge(L, &m->base, &src, rs);
		{
			size_t nb = src.replace ? 0 : n_base_ignore, na = 0;

			rs->ignore = pool_alloc(L, src.n_ignore + nb, sizeof(*rs->ignore));
			for (size_t k = 0; rs->ignore && k < src.n_ignore + nb; k++) {
				const char *key = k < src.n_ignore ? src.ignore[k]
								   : base_ignore[k - src.n_ignore];

				if (key) {
					rs->ignore[na++] = key;
					key_intern(L, key);
				}
			}
			rs->n_ignore = na;
		}
		m->n_stages++;
	}
}

static void L_mime(struct loader *L, const config_setting_t *root)
{
	const struct pair *p = NULL;
	size_t n = 0;
	struct mapping *m = L->m;
	const char *def = NULL;

	if (L_pairs(L, root, "mime_types", &p, &n) == 1) {
		m->mime = pool_alloc(L, n, sizeof(*m->mime));
		if (!m->mime)
			return;
		for (size_t i = 0; i < n; i++) {
			char *ext = pool_dup(L, p[i].from[0] == '.' ? p[i].from + 1 : p[i].from);

			if (!ext)
				return;
			for (char *c = ext; *c; c++)
				if (*c >= 'A' && *c <= 'Z')
					*c = (char)(*c - 'A' + 'a');
			m->mime[i].ext = ext;
			m->mime[i].type = p[i].to;
		}
		m->n_mime = n;
	}
	m->mime_default = DEFAULT_MIME;
	if (L_string(L, root, "mime_default", &def) == 1)
		m->mime_default = *def ? def : NULL;
}

static void load_rules(struct loader *L, config_t *cfg)
{
	struct mapping *m = L->m;
	const config_setting_t *root = config_root_setting(cfg);
	const config_setting_t *s;
	const char *prefix[V2_N_SECTIONS] = { "", "optin_", "" };
	const char **ignore = NULL;
	size_t n_ignore = 0;
	int unmapped = MAPPING_UNMAPPED_FORM, amb = DT_AMBIGUOUS_EARLIER, gap = DT_GAP_REJECT;
	const char *version = NULL;

	L_check_names(L, root, top_names, "the mapping");
	if (L_integer(L, root, "version", &version) == 1 && strcmp(version, "1") != 0)
		L_err(L, config_setting_get_member(root, "version"),
		      "unsupported rule language version %s (this bridge reads version 1)",
		      version);
	L_zone(L, root, &m->base.zone);
	L_enum(L, root, "ambiguous", ambiguous_names, &amb);
	L_enum(L, root, "gap", gap_names, &gap);
	L_enum(L, root, "unmapped", unmapped_names, &unmapped);
	m->base.amb = (enum dt_ambiguous)amb;
	m->base.gap = (enum dt_gap)gap;
	m->base.unmapped = (enum mapping_unmapped)unmapped;
	m->base.unmapped_file = m->path;
	if ((s = config_setting_get_member(root, "unmapped")) != NULL) {
		m->base.unmapped_file = S_file(L, s);
		m->base.unmapped_line = S_line(s);
	}
	m->website_key_name = "website_id";
	m->campaign_key_name = "campaign_id";
	L_nonempty(L, root, "website_key", &m->website_key_name);
	L_nonempty(L, root, "campaign_key", &m->campaign_key_name);
	if ((s = config_setting_get_member(root, "prefixes")) != NULL) {
		if (config_setting_type(s) != CONFIG_TYPE_GROUP) {
			L_err(L, s,
			      "'prefixes' must be a group { form = \"\"; optins = \"optin_\"; "
			      "questionnaire = \"\"; }");
		} else {
			L_check_names(L, s, section_names, "'prefixes'");
			for (int i = 0; i < V2_N_SECTIONS; i++)
				L_string(L, s, section_names[i], &prefix[i]);
		}
	}
	L_mime(L, root);
	L_strings(L, root, "ignore", &ignore, &n_ignore);
	L_fields(L, root, &m->base.fields, &m->base.n_fields);
	L_vars(L, root, prefix, &m->base.vars, &m->base.n_vars);
	check_zones_fields(L, m->base.fields, m->base.n_fields, m->base.zone);
	check_zones_vars(L, m->base.vars, m->base.n_vars, m->base.zone);
	for (size_t k = 0; k < n_ignore; k++)
		if (ignore[k])
			key_intern(L, ignore[k]);
	m->base.ignore = ignore;
	m->base.n_ignore = n_ignore;
	L_stages(L, root, prefix, ignore, n_ignore);
	m->website_key = key_intern(L, m->website_key_name);
	m->campaign_key = key_intern(L, m->campaign_key_name);
	if (L->oom)
		return;

	/* Key count is final: build the named sets. */
	if (ruleset_mark(L, &m->base) < 0)
		return;
	for (size_t i = 0; i < m->n_stages; i++)
		if (ruleset_mark(L, &m->stages[i]) < 0)
			return;
}

static char *dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');

	if (!slash)
		return strdup(".");
	if (slash == path)
		return strdup("/");
	return strndup(path, (size_t)(slash - path));
}

int mapping_load(const char *path, struct mapping **ret, struct diag *d)
{
	struct loader L = { 0 };
	struct mapping *m;
	config_t cfg;
	char *dir;
	int start = d->count;

	*ret = NULL;
	m = calloc(1, sizeof(*m));
	if (!m || !(m->path = strdup(path))) {
		free(m);
		return diag_add(d, path, 0, "out of memory");
	}
	L.m = m;
	L.d = d;
	m->website_key = m->campaign_key = -1;

	dir = dir_of(path);
	if (!dir) {
		mapping_free(m);
		return diag_add(d, path, 0, "out of memory");
	}
	L.dir = dir;
	if (cfg_read(&cfg, path, d) < 0) { /* literal and include checks included */
		config_destroy(&cfg);
		free(dir);
		mapping_free(m);
		return -1;
	}
	load_rules(&L, &cfg);
	config_destroy(&cfg); /* every string was copied into the pool */
	free(dir);
	if (L.oom)
		diag_add(d, path, 0,
			 "out of memory (or more than %d distinct v1 keys) while loading the rules",
			 MAP_KEYS_MAX);
	if (d->count > start) {
		mapping_free(m);
		return -1;
	}
	*ret = m;
	return 0;
}

void mapping_free(struct mapping *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->n_pool; i++)
		free(m->pool[i]);
	free(m->pool);
	for (size_t i = 0; i < m->n_zones; i++)
		tz_zone_free(m->zones[i]);
	free(m->zones);
	free(m->files);
	free(m->keys);
	free(m->key_lens);
	free(m->htab);
	free(m->path);
	free(m);
}

const char *mapping_path(const struct mapping *m)
{
	return m->path;
}

/* ---- apply --------------------------------------------------------------- */

struct arena_block {
	struct arena_block *next;
	size_t used, cap;
	max_align_t data[];
};

struct arena {
	struct arena_block *head;
	size_t total;
};

static void *arena_alloc(struct arena *a, size_t n)
{
	struct arena_block *b = a->head;
	size_t align = sizeof(max_align_t);

	n = (n + align - 1) / align * align;
	if (!n)
		n = align;
	if (!b || b->cap - b->used < n) {
		size_t cap = n > 16384 ? n : 16384;

		if (a->total + cap > MAP_ARENA_MAX)
			return NULL;
		b = malloc(sizeof(*b) + cap);
		if (!b)
			return NULL;
		b->next = a->head;
		b->used = 0;
		b->cap = cap;
		a->head = b;
		a->total += cap;
	}
	b->used += n;
	return (char *)b->data + b->used - n;
}

static void arena_free(struct arena *a)
{
	while (a->head) {
		struct arena_block *n = a->head->next;

		free(a->head);
		a->head = n;
	}
	a->total = 0;
}

struct apply {
	const struct mapping *m;
	const struct ruleset *rs;
	const struct v1_doc *in;
	unsigned flags;
	struct bridge_error *err;
	struct mapping_result *res;
	struct arena arena;
	const struct v1_value **val; /* per key slot, NULL when absent */
	struct v2_doc doc;
	size_t trace_cap;
	bool oom;
};

static int fail(struct apply *a, const char *file, int line, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));
static int fail(struct apply *a, const char *file, int line, const char *key, const char *fmt, ...)
{
	va_list ap;

	if (!a->err)
		return -1;
	va_start(ap, fmt);
	vsnprintf(a->err->message, sizeof(a->err->message), fmt, ap);
	va_end(ap);
	a->err->file = file;
	a->err->line = line;
	snprintf(a->err->key, sizeof(a->err->key), "%s", key ? key : "");
	return -1;
}

static int fail_oom(struct apply *a)
{
	return fail(a, NULL, 0, NULL, "out of memory (or over the %zu MiB mapping limit)",
		    MAP_ARENA_MAX >> 20);
}

/* A v1 value quoted in an error message: escaped and cut (diag_quote), so
 * the message stays one line and shows what was sent, NUL bytes included. */
#define QUOTED_CAP     96
#define KEY_QUOTED_CAP 96

static const char *quoted(char *buf, const char *s, size_t len)
{
	diag_quote(buf, QUOTED_CAP, s, len, 60, '"');
	return buf;
}

/* An integer target given a list or a boolean: say what the value is
 * rather than quoting the (empty or "true") text of it. */
static int not_an_integer(struct apply *a, const char *file, int line, const char *key,
			  const struct v1_value *v)
{
	if (v->type == V1_ARRAY)
		return fail(a, file, line, key, "v1 key '%s': a list, not an integer", key);
	if (v->type == V1_BOOL)
		return fail(a, file, line, key, "v1 key '%s': a boolean (%s), not an integer", key,
			    v->text);
	return 0;
}


static void trace_add(struct apply *a, const char *from_key, const char *file, int line,
		      const char *what, const char *path_fmt, ...)
	__attribute__((format(printf, 6, 7)));
static void trace_add(struct apply *a, const char *from_key, const char *file, int line,
		      const char *what, const char *path_fmt, ...)
{
	struct mapping_result *r = a->res;
	struct mapping_trace *t;
	va_list ap;

	if (!(a->flags & MAPPING_TRACE) || a->oom)
		return;
	if (r->n_trace == MAP_TRACE_MAX ||
	    !(t = grow_array(r->trace, &a->trace_cap, r->n_trace + 1, sizeof(*t), 32))) {
		a->oom = true;
		return;
	}
	r->trace = t;
	t = &r->trace[r->n_trace];
	memset(t, 0, sizeof(*t));
	va_start(ap, path_fmt);
	if (vasprintf(&t->path, path_fmt, ap) < 0)
		t->path = NULL;
	va_end(ap);
	t->from_key = from_key ? strdup(from_key) : NULL;
	t->what = strdup(what);
	t->file = file;
	t->line = line;
	r->n_trace++;
	if (!t->path || !t->what || (from_key && !t->from_key))
		a->oom = true;
}

static const char *conv_what(enum conv c)
{
	return c == CONV_NONE ? "copy" : conv_names[c - 1];
}

/* Describe a conversion for the trace (only built when tracing). */
static const char *what_text(struct apply *a, const char *base, enum conv c,
			     const struct tz_zone *z, const struct pair *mapped, char *buf,
			     size_t cap)
{
	int n;

	if (!(a->flags & MAPPING_TRACE))
		return "";
	if (c == CONV_DATETIME)
		n = snprintf(buf, cap, "%s%sdatetime %s", base ? base : "", base ? " " : "",
			     tz_zone_name(z));
	else if (base && c == CONV_NONE)
		n = snprintf(buf, cap, "%s", base);
	else
		n = snprintf(buf, cap, "%s%s%s", base ? base : "", base ? " " : "", conv_what(c));
	if (mapped && n >= 0 && (size_t)n < cap)
		snprintf(buf + n, cap - (size_t)n, ", map %s->%s", mapped->from, mapped->to);
	return buf;
}

static void scalar_text(const struct v1_value *v, const char **s, size_t *len)
{
	if (v->type == V1_NULL) {
		*s = "";
		*len = 0;
	} else {
		*s = v->text;
		*len = v->len;
	}
}

static const struct tz_zone *rule_zone(const struct apply *a, const struct dt_opts *dt)
{
	return dt->zone ? dt->zone : a->rs->zone;
}

/* Run a value through conversion and map; the result may point into the
 * input, the mapping or the arena. */
static int transform(struct apply *a, enum conv c, const struct dt_opts *dt, const struct pair *map,
		     size_t n_map, enum unknown_policy unknown, const char *file, int line,
		     const char *key, const char *s, size_t len, const char **ret, size_t *ret_len,
		     const struct pair **ret_pair)
{
	struct bridge_error e;
	char *buf;

	*ret_pair = NULL;
	switch (c) {
	case CONV_NONE:
	case CONV_STRING: break;
	case CONV_UPPER:
	case CONV_LOWER:
		if (!(buf = arena_alloc(&a->arena, len + 1)))
			return fail_oom(a);
		if (c == CONV_UPPER)
			convert_upper(s, len, buf);
		else
			convert_lower(s, len, buf);
		buf[len] = '\0';
		s = buf;
		break;
	case CONV_INTEGER:
		if (!(buf = arena_alloc(&a->arena, 32)))
			return fail_oom(a);
		bridge_error_clear(&e);
		if (convert_integer(s, len, buf, 32, &e) < 0)
			return fail(a, file, line, key, "v1 key '%s': %s", key, e.message);
		s = buf;
		len = strlen(buf);
		break;
	case CONV_DATETIME:
		if (!(buf = arena_alloc(&a->arena, 32)))
			return fail_oom(a);
		bridge_error_clear(&e);
		if (convert_datetime(s, len, rule_zone(a, dt),
				     dt->amb >= 0 ? (enum dt_ambiguous)dt->amb : a->rs->amb,
				     dt->gap >= 0 ? (enum dt_gap)dt->gap : a->rs->gap, buf, 32,
				     &e) < 0)
			return fail(a, file, line, key, "v1 key '%s': %s", key, e.message);
		s = buf;
		len = strlen(buf);
		break;
	}
	if (n_map) {
		const struct pair *p = pair_find(map, n_map, s, len);

		if (p) {
			s = p->to;
			len = p->to_len;
			*ret_pair = p;
		} else if (unknown == UNKNOWN_REJECT) {
			char qb[QUOTED_CAP];

			return fail(a, file, line, key,
				    "v1 key '%s': value \"%s\" is not in the map", key,
				    quoted(qb, s, len));
		}
	}
	*ret = s;
	*ret_len = len;
	return 0;
}

static const struct v1_value *present(const struct apply *a, int key)
{
	const struct v1_value *v = key >= 0 ? a->val[key] : NULL;

	return v && v->type != V1_NULL ? v : NULL;
}

static int apply_field(struct apply *a, const struct field_rule *r)
{
	const struct v1_value *v;
	const struct pair *mp = NULL;
	const char *s;
	size_t len;
	struct v2_val out;
	char wbuf[160];

	if (!r->from) {
		a->doc.slot[r->slot] = r->constant;
		trace_add(a, NULL, r->file, r->line, "constant", "%s", r->to);
		return 0;
	}
	v = present(a, r->key);
	if (!v) {
		if (r->def.kind != V2_ABSENT) {
			a->doc.slot[r->slot] = r->def;
			trace_add(a, r->from, r->file, r->line, "default", "%s", r->to);
			return 0;
		}
		if (r->required)
			return fail(a, r->file, r->line, r->from, "required v1 key '%s' is %s",
				    r->from, a->val[r->key] ? "null" : "absent");
		return 0;
	}
	if (v->type == V1_ARRAY)
		return fail(a, r->file, r->line, r->from,
			    "v1 key '%s': a list of %zu values where %s takes one", r->from,
			    v->n_items, r->to);
	if ((r->type == V2_T_INTEGER || r->conv == CONV_INTEGER) &&
	    not_an_integer(a, r->file, r->line, r->from, v) < 0)
		return -1;
	scalar_text(v, &s, &len);
	if (transform(a, r->conv, &r->dt, r->map, r->n_map, r->unknown, r->file, r->line, r->from,
		      s, len, &s, &len, &mp) < 0)
		return -1;
	if (r->type == V2_T_INTEGER && r->conv != CONV_INTEGER) {
		const struct pair *none;

		if (transform(a, CONV_INTEGER, &r->dt, NULL, 0, UNKNOWN_KEEP, r->file, r->line,
			      r->from, s, len, &s, &len, &none) < 0)
			return -1;
	}
	out.kind = r->type == V2_T_INTEGER ? V2_NUMBER : V2_STRING;
	out.s = s;
	out.len = len;
	a->doc.slot[r->slot] = out;
	trace_add(a, r->from, r->file, r->line,
		  what_text(a, NULL, r->type == V2_T_INTEGER ? CONV_INTEGER : r->conv,
			    rule_zone(a, &r->dt), mp, wbuf, sizeof(wbuf)),
		  "%s", r->to);
	return 0;
}

static struct v2_entry *entry_new(struct apply *a, enum v2_section sec)
{
	struct v2_entry *e = &a->doc.entries[sec][a->doc.n_entries[sec]++];

	memset(e, 0, sizeof(*e));
	return e;
}

static const char *const sec_name[V2_N_SECTIONS] = { "form", "optins", "questionnaire" };

static int apply_optin(struct apply *a, const struct var_rule *r, struct v2_entry *e)
{
	const struct v1_value *v = r->key >= 0 ? a->val[r->key] : NULL;
	const struct pair *mp = NULL;
	const char *s, *what = "optin";
	size_t len;
	char wbuf[160];

	if (!v) {
		s = r->def;
		len = r->def_len;
		what = "default";
	} else if (v->type == V1_ARRAY) {
		return fail(a, r->file, r->line, r->from,
			    "v1 key '%s': a list of %zu values is not an opt-in value", r->from,
			    v->n_items);
	} else {
		scalar_text(v, &s, &len);
		if (transform(a, r->conv, &r->dt, r->map, r->n_map, r->unknown, r->file, r->line,
			      r->from, s, len, &s, &len, &mp) < 0)
			return -1;
		if ((len == 1 && (s[0] == '1' || s[0] == '0')) || len == 0) {
			/* already normalised */
		} else if (len == 4 && memcmp(s, "true", 4) == 0) {
			s = "1";
			len = 1;
		} else if (len == 5 && memcmp(s, "false", 5) == 0) {
			s = "0";
			len = 1;
		} else {
			char qb[QUOTED_CAP];

			return fail(a, r->file, r->line, r->from,
				    "v1 key '%s': not an opt-in value: \"%s\" (expected 1, 0, "
				    "true, false, empty or null)",
				    r->from, quoted(qb, s, len));
		}
		what = what_text(a, "optin", r->conv, rule_zone(a, &r->dt), mp, wbuf, sizeof(wbuf));
	}
	e->response.kind = V2_STRING;
	e->response.s = s;
	e->response.len = len;
	e->categories = r->categories;
	e->n_categories = r->n_categories;
	trace_add(a, v ? r->from : NULL, r->file, r->line, what, "optins[%s].response",
		  r->variable);
	return 0;
}

/* true/false for isCorrect: 1/0/true/false as JSON or strings; ""/null absent. */
static int parse_bool(struct apply *a, const struct var_rule *r, const struct v1_value *v,
		      struct v2_val *ret)
{
	const char *s;
	size_t len;

	ret->kind = V2_ABSENT;
	if (!v || v->type == V1_NULL)
		return 0;
	scalar_text(v, &s, &len);
	if (len == 0 && v->type == V1_STRING)
		return 0;
	ret->kind = V2_BOOL;
	if ((len == 1 && s[0] == '1') || (len == 4 && memcmp(s, "true", 4) == 0)) {
		ret->s = "true";
	} else if ((len == 1 && s[0] == '0') || (len == 5 && memcmp(s, "false", 5) == 0)) {
		ret->s = "false";
	} else {
		char qb[QUOTED_CAP];

		return fail(a, r->file, r->line, r->correct_from,
			    "v1 key '%s': not a correctness value: \"%s\" (expected 1, 0, "
			    "true, false, empty or null)",
			    r->correct_from, quoted(qb, s, len));
	}
	ret->len = strlen(ret->s);
	return 0;
}

static int parse_int(struct apply *a, const struct var_rule *r, const char *key,
		     const struct v1_value *v, struct v2_val *ret)
{
	const struct pair *mp;
	const char *s;
	size_t len;

	ret->kind = V2_ABSENT;
	if (!v || v->type == V1_NULL)
		return 0;
	if (not_an_integer(a, r->file, r->line, key, v) < 0)
		return -1;
	scalar_text(v, &s, &len);
	if (len == 0 && v->type == V1_STRING)
		return 0;
	if (transform(a, CONV_INTEGER, &r->dt, NULL, 0, UNKNOWN_KEEP, r->file, r->line, key, s, len,
		      &s, &len, &mp) < 0)
		return -1;
	ret->kind = V2_NUMBER;
	ret->s = s;
	ret->len = len;
	return 0;
}

/* Extension `ext` (lower case) equals name[0..n) compared case-insensitively:
 * no length limit, so every configured extension can match. */
static bool ext_equal(const char *ext, const char *name, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char c = name[i];

		if (c >= 'A' && c <= 'Z')
			c = (char)(c - 'A' + 'a');
		if (ext[i] != c)
			return false;
	}
	return ext[n] == '\0';
}

static const char *mime_lookup(const struct mapping *m, const char *name, size_t len)
{
	const char *dot = NULL;
	size_t el;

	for (size_t i = 0; i < len; i++)
		if (name[i] == '.')
			dot = name + i;
	if (!dot)
		return m->mime_default;
	el = len - (size_t)(dot + 1 - name);
	if (el == 0)
		return m->mime_default;
	for (size_t i = 0; i < m->n_mime; i++)
		if (ext_equal(m->mime[i].ext, dot + 1, el))
			return m->mime[i].type;
	for (size_t i = 0; i < sizeof(builtin_mime) / sizeof(builtin_mime[0]); i++)
		if (ext_equal(builtin_mime[i].ext, dot + 1, el))
			return builtin_mime[i].type;
	return m->mime_default;
}

/* Offset of the first control character (C0, DEL) or -1: a NUL would cut
 * the name the type is guessed from, the others have no place in a URL. */
static long first_control(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7F)
			return (long)i;
	return -1;
}

/* file{path, name, type}: name is the last segment of the URL's path (query
 * and fragment removed, not percent-decoded), type guessed from its
 * extension. */
static void file_response(const struct mapping *m, const char *s, size_t len,
			  struct v2_response *resp)
{
	size_t end = len, start = 0, path_start = 0;
	const char *type;

	resp->file_path.kind = V2_STRING;
	resp->file_path.s = s;
	resp->file_path.len = len;
	for (size_t i = 0; i < len; i++) {
		if (s[i] == '?' || s[i] == '#') {
			end = i;
			break;
		}
	}
	/* "//host/path" (protocol-relative) starts with an authority too. */
	for (size_t i = 0; i + 2 < end || (i == 0 && end == 2); i++) {
		if (i == 0 && s[0] == '/' && s[1] == '/') {
			path_start = 2;
			while (path_start < end && s[path_start] != '/')
				path_start++;
			break;
		}
		if (s[i] == ':' && s[i + 1] == '/' && s[i + 2] == '/') {
			/* Skip the authority: no name unless a path follows it. */
			path_start = i + 3;
			while (path_start < end && s[path_start] != '/')
				path_start++;
			break;
		}
		if (s[i] == '/')
			break;
	}
	start = path_start;
	for (size_t i = path_start; i < end; i++)
		if (s[i] == '/')
			start = i + 1;
	if (start < end) {
		resp->file_name.kind = V2_STRING;
		resp->file_name.s = s + start;
		resp->file_name.len = end - start;
	}
	type = resp->file_name.kind != V2_ABSENT ? mime_lookup(m, s + start, end - start)
						 : m->mime_default;
	if (type) {
		resp->file_type.kind = V2_STRING;
		resp->file_type.s = type;
		resp->file_type.len = strlen(type);
	}
}

struct piece {
	const char *s;
	size_t len;
};

static size_t count_sep(const char *s, size_t len, const char *sep, size_t sep_len)
{
	size_t n = 1;

	for (size_t i = 0; i + sep_len <= len;) {
		if (memcmp(s + i, sep, sep_len) == 0) {
			n++;
			i += sep_len;
		} else {
			i++;
		}
	}
	return n;
}

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* Split on the separator; pieces are trimmed of ASCII white space and empty
 * pieces dropped. */
static size_t split_into(const char *s, size_t len, const char *sep, size_t sep_len,
			 struct piece *out)
{
	size_t n = 0, begin = 0;

	for (size_t i = 0; i <= len;) {
		if (i == len || (i + sep_len <= len && memcmp(s + i, sep, sep_len) == 0)) {
			size_t b = begin, e = i;

			while (b < e && is_space(s[b]))
				b++;
			while (e > b && is_space(s[e - 1]))
				e--;
			if (e > b) {
				out[n].s = s + b;
				out[n].len = e - b;
				n++;
			}
			if (i == len)
				break;
			i += sep_len;
			begin = i;
		} else {
			i++;
		}
	}
	return n;
}

static int collect_pieces(struct apply *a, const struct var_rule *r, const struct v1_value *v,
			  struct piece **ret, size_t *ret_n)
{
	const struct v1_value *items = v;
	size_t n_items = 1, cap = 0, n = 0;
	struct piece *p;

	if (v->type == V1_ARRAY) {
		items = v->items;
		n_items = v->n_items;
	}
	for (size_t i = 0; i < n_items; i++) {
		if (items[i].type == V1_NULL)
			continue;
		cap += r->separator && items[i].type == V1_STRING
			       ? count_sep(items[i].text, items[i].len, r->separator, r->sep_len)
			       : 1;
	}
	p = arena_alloc(&a->arena, (cap ? cap : 1) * sizeof(*p));
	if (!p)
		return fail_oom(a);
	for (size_t i = 0; i < n_items; i++) {
		if (items[i].type == V1_NULL)
			continue;
		if (r->separator && items[i].type == V1_STRING) {
			n += split_into(items[i].text, items[i].len, r->separator, r->sep_len,
					p + n);
		} else {
			p[n].s = items[i].text;
			p[n].len = items[i].len;
			n++;
		}
	}
	*ret = p;
	*ret_n = n;
	return 0;
}

static int apply_answers(struct apply *a, const struct var_rule *r, struct v2_entry *e,
			 const struct v1_value *v, bool from_default)
{
	struct v1_value defv;
	struct piece *p = NULL;
	size_t n = 0;
	const char *sec = sec_name[r->section];
	char wbuf[160];

	if (from_default) {
		memset(&defv, 0, sizeof(defv));
		defv.type = V1_STRING;
		defv.text = (char *)r->def;
		defv.len = r->def_len;
		v = &defv;
	}
	if (v && collect_pieces(a, r, v, &p, &n) < 0)
		return -1;
	e->responses = arena_alloc(&a->arena, (n ? n : 1) * sizeof(*e->responses));
	if (!e->responses)
		return fail_oom(a);
	for (size_t i = 0; i < n; i++) {
		struct v2_response *resp = &e->responses[e->n_responses];
		const struct pair *mp = NULL;
		const char *s;
		size_t len;

		if (r->is_file && p[i].len == 0)
			continue;
		if (transform(a, r->conv, &r->dt, r->map, r->n_map,
			      r->n_choices ? UNKNOWN_KEEP : r->unknown, r->file, r->line, r->from,
			      p[i].s, p[i].len, &s, &len, &mp) < 0)
			return -1;
		memset(resp, 0, sizeof(*resp));
		if (r->n_choices) {
			const struct pair *c = pair_find(r->choices, r->n_choices, s, len);

			if (c) {
				resp->label.kind = V2_STRING;
				resp->label.s = c->to;
				resp->label.len = c->to_len;
			} else if (r->unknown == UNKNOWN_REJECT) {
				char qb[QUOTED_CAP];

				return fail(a, r->file, r->line, r->from,
					    "v1 key '%s': value \"%s\" is not one of the "
					    "choices of '%s'",
					    r->from, quoted(qb, s, len), r->variable);
			}
		}
		if (r->is_file) {
			long bad = first_control(s, len);

			if (bad >= 0)
				return fail(a, r->file, r->line, r->from,
					    "v1 key '%s': upload URL has control character 0x%02X "
					    "at byte %ld",
					    r->from, (unsigned char)s[bad], bad);
			file_response(a->m, s, len, resp);
			trace_add(a, from_default ? NULL : r->from, r->file, r->line,
				  what_text(a, from_default ? "default file" : "file", r->conv,
					    rule_zone(a, &r->dt), mp, wbuf, sizeof(wbuf)),
				  "%s[%s].responses[%zu].file", sec, r->variable, e->n_responses);
		} else {
			resp->value.kind = V2_STRING;
			resp->value.s = s;
			resp->value.len = len;
			trace_add(a, from_default ? NULL : r->from, r->file, r->line,
				  what_text(a,
					    from_default ? "default"
							 : (r->n_choices ? "choice" : NULL),
					    r->conv, rule_zone(a, &r->dt), mp, wbuf, sizeof(wbuf)),
				  "%s[%s].responses[%zu].value", sec, r->variable, e->n_responses);
		}
		e->n_responses++;
	}
	return 0;
}

/* Apply a per-response helper (score or correctness): a scalar applies to
 * every response, a list must have one item per response. */
static int apply_per_response(struct apply *a, const struct var_rule *r, struct v2_entry *e,
			      int key, const char *key_name, bool is_score)
{
	const struct v1_value *v = present(a, key);
	const struct v1_value *items;
	size_t n_items;

	if (!v)
		return 0;
	if (v->type == V1_ARRAY) {
		items = v->items;
		n_items = v->n_items;
		if (n_items != e->n_responses)
			return fail(a, r->file, r->line, key_name,
				    "v1 key '%s': %zu values for the %zu responses of '%s'",
				    key_name, n_items, e->n_responses, r->variable);
	} else {
		items = v;
		n_items = 1;
		/* No response to attach it to: refuse rather than drop it (a score
		 * is also the question's score, so only correctness is lost). */
		if (!is_score && e->n_responses == 0 && v->type != V1_NULL && v->len > 0)
			return fail(a, r->file, r->line, key_name,
				    "v1 key '%s': a correctness value without an answer in '%s'",
				    key_name, r->from);
	}
	for (size_t i = 0; i < e->n_responses; i++) {
		const struct v1_value *it = n_items == 1 && v->type != V1_ARRAY ? items : &items[i];
		struct v2_val *dst = is_score ? &e->responses[i].score
					      : &e->responses[i].is_correct;

		if (is_score ? parse_int(a, r, key_name, it, dst) < 0
			     : parse_bool(a, r, it, dst) < 0)
			return -1;
		if (dst->kind != V2_ABSENT)
			trace_add(a, key_name, r->file, r->line, is_score ? "integer" : "correct",
				  "questionnaire[%s].responses[%zu].%s", r->variable, i,
				  is_score ? "score" : "isCorrect");
	}
	return 0;
}

static int apply_var(struct apply *a, const struct var_rule *r)
{
	const struct v1_value *v = present(a, r->key);
	struct v2_entry *e;
	bool helpers = false, from_default = false;

	if (r->section == V2_OPTINS) {
		/* For opt-ins null is a value: unanswered, "". */
		const struct v1_value *raw = r->key >= 0 ? a->val[r->key] : NULL;

		if (!raw && !r->has_def) {
			if (r->required)
				return fail(a, r->file, r->line, r->from,
					    "required v1 key '%s' is absent", r->from);
			return 0;
		}
		e = entry_new(a, V2_OPTINS);
		e->id = r->id;
		e->label = r->label;
		e->description = r->description;
		e->variable = r->variable_val;
		return apply_optin(a, r, e);
	}
	if (r->section == V2_QUESTIONNAIRE)
		helpers = present(a, r->score_key) || present(a, r->max_score_key) ||
			  present(a, r->correct_key) || present(a, r->response_score_key);
	if (!v) {
		if (r->has_def) {
			from_default = true;
		} else if (r->required) {
			return fail(a, r->file, r->line, r->from, "required v1 key '%s' is %s",
				    r->from, r->key >= 0 && a->val[r->key] ? "null" : "absent");
		} else if (!helpers) {
			return 0;
		}
	}
	e = entry_new(a, r->section);
	e->id = r->id;
	e->label = r->label;
	e->type = r->type;
	e->variable = r->variable_val;
	if (apply_answers(a, r, e, v, from_default) < 0)
		return -1;
	if (r->section != V2_QUESTIONNAIRE)
		return 0;
	if (parse_int(a, r, r->score_from, present(a, r->score_key), &e->score) < 0)
		return -1;
	if (e->score.kind != V2_ABSENT)
		trace_add(a, r->score_from, r->file, r->line, "integer", "questionnaire[%s].score",
			  r->variable);
	if (r->max_score.kind != V2_ABSENT) {
		e->max_score = r->max_score;
		trace_add(a, NULL, r->file, r->line, "constant", "questionnaire[%s].maxScore",
			  r->variable);
	} else {
		if (parse_int(a, r, r->max_score_from, present(a, r->max_score_key),
			      &e->max_score) < 0)
			return -1;
		if (e->max_score.kind != V2_ABSENT)
			trace_add(a, r->max_score_from, r->file, r->line, "integer",
				  "questionnaire[%s].maxScore", r->variable);
	}
	if (apply_per_response(a, r, e, r->response_score_key, r->response_score_from, true) < 0)
		return -1;
	return apply_per_response(a, r, e, r->correct_key, r->correct_from, false);
}

/* The variable rule writing `name`, in any section, or NULL. */
static const struct var_rule *variable_named(const struct ruleset *rs, const char *name)
{
	for (size_t i = 0; i < rs->n_vars; i++)
		if (strcmp(rs->vars[i]->variable, name) == 0)
			return rs->vars[i];
	return NULL;
}

static void unmapped_entry(struct apply *a, const struct v1_field *f)
{
	struct v2_entry *e = entry_new(a, V2_FORM);
	const struct v1_value *items = &f->value;
	size_t n = 1;

	e->label.kind = e->variable.kind = V2_STRING;
	e->label.s = e->variable.s = f->key;
	e->label.len = e->variable.len = f->key_len;
	if (f->value.type == V1_ARRAY) {
		items = f->value.items;
		n = f->value.n_items;
	}
	e->responses = arena_alloc(&a->arena, (n ? n : 1) * sizeof(*e->responses));
	if (!e->responses) {
		a->oom = true;
		return;
	}
	for (size_t i = 0; i < n; i++) {
		struct v2_response *resp;

		if (items[i].type == V1_NULL)
			continue;
		resp = &e->responses[e->n_responses];
		memset(resp, 0, sizeof(*resp));
		resp->value.kind = V2_STRING;
		resp->value.s = items[i].text;
		resp->value.len = items[i].len;
		trace_add(a, f->key, a->rs->unmapped_file, a->rs->unmapped_line, "unmapped:form",
			  "form[%s].responses[%zu].value", f->key, e->n_responses);
		e->n_responses++;
	}
	if (e->n_responses == 0)
		trace_add(a, f->key, a->rs->unmapped_file, a->rs->unmapped_line, "unmapped:form",
			  "form[%s]", f->key);
}

static const struct ruleset *select_ruleset(struct apply *a)
{
	const struct mapping *m = a->m;
	const struct ruleset *best = NULL;
	char web[32], camp[32];
	bool has_web = false, has_camp = false;

	if (!m->n_stages)
		return &m->base;
	for (int k = 0; k < 2; k++) {
		const struct v1_value *v = present(a, k ? m->campaign_key : m->website_key);
		struct bridge_error e;

		if (!v || v->type == V1_ARRAY)
			continue;
		if (convert_integer(v->text, v->len, k ? camp : web, 32, &e) == 0)
			*(k ? &has_camp : &has_web) = true;
	}
	for (size_t i = 0; i < m->n_stages; i++) {
		const struct ruleset *rs = &m->stages[i];
		bool ok = true;

		if (rs->n_websites) {
			bool hit = false;

			for (size_t j = 0; has_web && j < rs->n_websites && !hit; j++)
				hit = strcmp(rs->websites[j], web) == 0;
			ok = hit;
		}
		if (ok && rs->n_campaigns) {
			bool hit = false;

			for (size_t j = 0; has_camp && j < rs->n_campaigns && !hit; j++)
				hit = strcmp(rs->campaigns[j], camp) == 0;
			ok = hit;
		}
		if (ok && (!best || rs->specificity > best->specificity))
			best = rs;
	}
	return best ? best : &m->base;
}

static char *dup_val(const struct v2_val *v)
{
	return v->kind == V2_ABSENT ? NULL : strndup(v->s, v->len);
}

void mapping_result_clear(struct mapping_result *r)
{
	if (!r)
		return;
	free(r->body);
	free(r->participation_id);
	free(r->state);
	free(r->website_id);
	free(r->campaign_id);
	for (size_t i = 0; i < r->n_unmapped; i++)
		free(r->unmapped[i]);
	free(r->unmapped);
	for (size_t i = 0; i < r->n_trace; i++) {
		free(r->trace[i].path);
		free(r->trace[i].from_key);
		free(r->trace[i].what);
	}
	free(r->trace);
	memset(r, 0, sizeof(*r));
}

static int apply_run(struct apply *a)
{
	const struct mapping *m = a->m;
	const struct v1_doc *in = a->in;
	struct mapping_result *res = a->res;
	const struct ruleset *rs;
	size_t n_unmapped = 0, n_form;
	int *slot_of;
	char *first_unmapped = NULL;
	char list[300];
	size_t list_len = 0;

	a->val = arena_alloc(&a->arena, (m->n_keys ? m->n_keys : 1) * sizeof(*a->val));
	slot_of = arena_alloc(&a->arena, (in->n_fields ? in->n_fields : 1) * sizeof(*slot_of));
	if (!a->val || !slot_of)
		return fail_oom(a);
	memset(a->val, 0, (m->n_keys ? m->n_keys : 1) * sizeof(*a->val));
	for (size_t i = 0; i < in->n_fields; i++) {
		int k = key_find(m, in->fields[i].key, in->fields[i].key_len);

		slot_of[i] = k;
		if (k >= 0)
			a->val[k] = &in->fields[i].value;
	}
	rs = a->rs = select_ruleset(a);
	res->unmapped_policy = rs->unmapped;

	n_form = rs->n_vars + (rs->unmapped == MAPPING_UNMAPPED_FORM ? in->n_fields : 0);
	for (int s = 0; s < V2_N_SECTIONS; s++) {
		size_t cap = s == V2_FORM ? n_form : rs->n_vars;

		a->doc.entries[s] = arena_alloc(&a->arena,
						(cap ? cap : 1) * sizeof(struct v2_entry));
		if (!a->doc.entries[s])
			return fail_oom(a);
	}
	for (size_t i = 0; i < rs->n_fields; i++)
		if (apply_field(a, rs->fields[i]) < 0)
			return -1;
	for (size_t i = 0; i < rs->n_vars; i++)
		if (apply_var(a, rs->vars[i]) < 0)
			return -1;

	/* Unmapped keys, in arrival order. */
	for (size_t i = 0; i < in->n_fields; i++)
		if (slot_of[i] < 0 || !rs->named[slot_of[i]])
			n_unmapped++;
	if (n_unmapped) {
		res->unmapped = calloc(n_unmapped, sizeof(*res->unmapped));
		if (!res->unmapped)
			return fail_oom(a);
	}
	for (size_t i = 0; i < in->n_fields; i++) {
		const struct v1_field *f = &in->fields[i];
		int k = slot_of[i];
		char *copy;

		if (k >= 0 && rs->named[k])
			continue;
		copy = strdup(f->key);
		if (!copy)
			return fail_oom(a);
		res->unmapped[res->n_unmapped++] = copy;
		if (!first_unmapped)
			first_unmapped = copy;
		if (rs->unmapped == MAPPING_UNMAPPED_FORM) {
			const struct var_rule *clash = variable_named(rs, f->key);

			if (clash) {
				char kb[KEY_QUOTED_CAP];

				diag_quote(kb, sizeof(kb), f->key, f->key_len, 80, '\'');
				return fail(
					a, clash->file, clash->line, copy,
					"unmapped v1 key '%s' would write a form entry with the "
					"name of the %s variable of this rule: add it to 'ignore' "
					"or give it a rule",
					kb, sec_name[clash->section]);
			}
			unmapped_entry(a, f);
		} else if (rs->unmapped == MAPPING_UNMAPPED_REJECT &&
			   res->n_unmapped <= MAP_ERROR_KEYS && list_len < sizeof(list)) {
			char kb[KEY_QUOTED_CAP];
			int n;

			diag_quote(kb, sizeof(kb), f->key, f->key_len, 80, '\'');
			n = snprintf(list + list_len, sizeof(list) - list_len, "%s'%s'",
				     list_len ? ", " : "", kb);

			if (n > 0)
				list_len += (size_t)n;
		}
	}
	if (a->oom)
		return fail_oom(a);
	if (rs->unmapped == MAPPING_UNMAPPED_REJECT && n_unmapped) {
		if (n_unmapped > MAP_ERROR_KEYS)
			return fail(a, rs->unmapped_file, rs->unmapped_line, first_unmapped,
				    "unmapped v1 keys %s and %zu more (unmapped = \"reject\")",
				    list, n_unmapped - MAP_ERROR_KEYS);
		return fail(a, rs->unmapped_file, rs->unmapped_line, first_unmapped,
			    "unmapped v1 key%s %s (unmapped = \"reject\")",
			    n_unmapped > 1 ? "s" : "", list);
	}

	if (v2_doc_write(&a->doc, MAP_BODY_MAX, &res->body, &res->len, a->err) < 0)
		return -1;
	res->participation_id = dup_val(&a->doc.slot[V2_F_ID]);
	res->state = dup_val(&a->doc.slot[V2_F_STATE]);
	res->website_id = dup_val(&a->doc.slot[V2_F_WEBSITE_ID]);
	res->campaign_id = dup_val(&a->doc.slot[V2_F_CAMPAIGN_ID]);
	if ((a->doc.slot[V2_F_ID].kind && !res->participation_id) ||
	    (a->doc.slot[V2_F_STATE].kind && !res->state) ||
	    (a->doc.slot[V2_F_WEBSITE_ID].kind && !res->website_id) ||
	    (a->doc.slot[V2_F_CAMPAIGN_ID].kind && !res->campaign_id) || a->oom)
		return fail_oom(a);
	return 0;
}

int mapping_apply(const struct mapping *m, const struct v1_doc *in, unsigned flags,
		  struct mapping_result *ret, struct bridge_error *err)
{
	struct apply a;
	int rc;

	memset(ret, 0, sizeof(*ret));
	bridge_error_clear(err);
	memset(&a, 0, sizeof(a));
	a.m = m;
	a.in = in;
	a.flags = flags;
	a.err = err;
	a.res = ret;
	rc = apply_run(&a);
	arena_free(&a.arena);
	if (rc < 0)
		mapping_result_clear(ret);
	return rc;
}
