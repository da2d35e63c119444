/*
 * mapping, loading: a rule file (libconfig) read once, everything validated
 * and every problem reported as "file:line: message"; then what applying
 * needs is copied out of libconfig (its strings die with config_destroy) and
 * precomputed, for the base rules and for every stage: the ordered rule
 * lists, the set of v1 keys they name (each gets a slot number) and their
 * policies.  Everything a mapping allocates lives in its pool and dies with
 * mapping_free().
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
#include "bridge/confread.h"
#include "bridge/utf8.h"
#include "mapping_types.h"

static const char *const unknown_names[] = { "keep", "reject", NULL };
static const char *const unmapped_names[] = { "form", "drop", "reject", NULL };
static const char *const ambiguous_names[] = { "earlier", "later", "reject", NULL };
static const char *const gap_names[] = { "reject", "shift", NULL };
static const char *const section_names[] = { "form", "optins", "questionnaire", NULL };

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
	struct cfg_reader r; /* included files by their path, UTF-8, the rule files' wording */
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
	nf = grow_array(m->files, &m->cap_files, m->n_files + 1, sizeof(*nf), 8);
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
static const char *setting_file(struct loader *L, const config_setting_t *s)
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

static const char *reader_file_of(void *arg, const config_setting_t *s)
{
	return setting_file(arg, s);
}

/* A string setting (cfg_reader_string: 0 absent, 1 valid, -1 refused),
 * copied into the pool. */
static int pool_string(struct loader *L, const config_setting_t *g, const char *name,
		       unsigned flags, const char **ret)
{
	const char *v;
	int rc = cfg_reader_string(&L->r, g, name, flags, &v);

	if (rc != 1)
		return rc;
	*ret = pool_dup(L, v);
	return *ret ? 1 : -1;
}

/* An integer given as a libconfig integer or as a string of digits, returned
 * as canonical decimal text.  Large ids may be written as strings: libconfig
 * 1.5 keeps integer literals in 64 bits at most (see scan_literals()). */
static int load_integer_setting(struct loader *L, const config_setting_t *s, const char *name,
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
			cfg_reader_error(&L->r, s, "'%s': %s", name, e.message);
			return -1;
		}
	} else {
		cfg_reader_error(&L->r, s,
				 "'%s' must be an integer (or a string of digits), not %s", name,
				 cfg_type_name(config_setting_type(s)));
		return -1;
	}
	*ret = pool_dup(L, buf);
	return *ret ? 1 : -1;
}

static int load_integer(struct loader *L, const config_setting_t *g, const char *name,
			const char **ret)
{
	const config_setting_t *s = config_setting_get_member(g, name);

	if (!s)
		return 0;
	return load_integer_setting(L, s, name, ret);
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

static int load_vstring(struct loader *L, const config_setting_t *g, const char *name,
			struct v2_val *ret)
{
	const char *s = NULL;
	int rc = pool_string(L, g, name, 0, &s);

	if (rc == 1)
		*ret = vstr(s);
	return rc;
}

static int load_vinteger(struct loader *L, const config_setting_t *g, const char *name,
			 struct v2_val *ret)
{
	const char *s = NULL;
	int rc = load_integer(L, g, name, &s);

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
static int load_pairs(struct loader *L, const config_setting_t *g, const char *name,
		      const struct pair **ret, size_t *ret_n)
{
	const config_setting_t *s = config_setting_get_member(g, name);
	struct pair *p;
	int n, bad = 0;
	size_t k = 0;

	if (!s)
		return 0;
	if (!is_list(s)) {
		cfg_reader_error(&L->r, s,
				 "'%s' must be a list of [\"from\", \"to\"] pairs, not %s", name,
				 cfg_type_name(config_setting_type(s)));
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
			cfg_reader_error(
				&L->r, e,
				"each entry of '%s' must be a pair of strings [\"from\", \"to\"]",
				name);
			bad = 1;
			continue;
		}
		from = config_setting_get_string(a);
		to = config_setting_get_string(b);
		if (!utf8_valid(from, strlen(from)) || !utf8_valid(to, strlen(to))) {
			cfg_reader_error(&L->r, e, "entry of '%s' is not valid UTF-8", name);
			bad = 1;
			continue;
		}
		p[k].from = pool_dup(L, from);
		p[k].to = pool_dup(L, to);
		if (!p[k].from || !p[k].to)
			return -1;
		p[k].from_len = strlen(from);
		p[k].to_len = strlen(to);
		p[k].line = cfg_line(e);
		k++;
	}
	qsort(p, k, sizeof(*p), pair_cmp);
	for (size_t i = 1; i < k; i++) {
		if (p[i].from_len == p[i - 1].from_len &&
		    memcmp(p[i].from, p[i - 1].from, p[i].from_len) == 0) {
			diag_add(L->d, setting_file(L, s), p[i].line,
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
static int load_strings(struct loader *L, const config_setting_t *g, const char *name,
			const char ***ret, size_t *ret_n)
{
	const config_setting_t *s = config_setting_get_member(g, name);
	const char **v;
	int n, bad = 0;

	if (!s)
		return 0;
	if (!is_list(s)) {
		cfg_reader_error(&L->r, s, "'%s' must be an array of strings, not %s", name,
				 cfg_type_name(config_setting_type(s)));
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
			cfg_reader_error(&L->r, e, "each entry of '%s' must be a non-empty string",
					 name);
			bad = 1;
			continue;
		}
		v[i] = pool_dup(L, config_setting_get_string(e));
	}
	*ret = v;
	*ret_n = (size_t)n;
	return bad ? -1 : 1;
}

static int load_zone(struct loader *L, const config_setting_t *g, const struct tz_zone **ret)
{
	const config_setting_t *s = config_setting_get_member(g, "timezone");
	const char *name = NULL;
	struct bridge_error e;
	struct tz_zone *z = NULL, **nz;
	struct mapping *m = L->m;
	int rc = pool_string(L, g, "timezone", CFG_NONEMPTY, &name);

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
		cfg_reader_error(&L->r, s, "'timezone': %s",
				 e.message[0] ? e.message : "unknown time zone");
		return -1;
	}
	nz = grow_array(m->zones, &m->cap_zones, m->n_zones + 1, sizeof(*nz), 8);
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

static void load_dt(struct loader *L, const config_setting_t *g, struct dt_opts *dt)
{
	dt->zone = NULL;
	dt->amb = -1;
	dt->gap = -1;
	load_zone(L, g, &dt->zone);
	cfg_reader_enum(&L->r, g, "ambiguous", ambiguous_names, &dt->amb);
	cfg_reader_enum(&L->r, g, "gap", gap_names, &dt->gap);
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
	if (m->n_keys == m->cap_keys) { /* two arrays of one capacity */
		size_t cap = m->cap_keys;
		const char **nk = grow_array(m->keys, &cap, m->n_keys + 1, sizeof(*nk), 64);
		size_t *nl;

		if (!nk) {
			L->oom = true;
			return -1;
		}
		m->keys = nk;
		nl = grow_array(m->key_lens, &m->cap_keys, m->n_keys + 1, sizeof(*nl), 64);
		if (!nl) {
			L->oom = true;
			return -1;
		}
		m->key_lens = nl;
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
static void load_datetime_target(struct loader *L, const config_setting_t *g,
				 const struct field_rule *r, bool has_value)
{
	if (!is_datetime_target(r->to))
		return;
	if (has_value) {
		if (r->constant.kind == V2_STRING && !is_v2_datetime(r->constant.s))
			cfg_reader_error(
				&L->r, config_setting_get_member(g, "value"),
				"'%s' is a date-time: a constant must be YYYY-MM-DDTHH:MM:SS.mmmZ, "
				"not \"%s\"",
				r->to, r->constant.s);
		return;
	}
	if (r->conv != CONV_DATETIME)
		cfg_reader_error(
			&L->r, g,
			"'%s' is a date-time: the rule needs convert = \"datetime\" (a copied v1 "
			"value is not YYYY-MM-DDTHH:MM:SS.mmmZ)",
			r->to);
	if (r->def.kind == V2_STRING && !is_v2_datetime(r->def.s))
		cfg_reader_error(
			&L->r, config_setting_get_member(g, "default"),
			"'%s' is a date-time: a default must be YYYY-MM-DDTHH:MM:SS.mmmZ, not "
			"\"%s\"",
			r->to, r->def.s);
	for (size_t i = 0; i < r->n_map; i++)
		if (!is_v2_datetime(r->map[i].to))
			cfg_reader_error(&L->r, config_setting_get_member(g, "map"),
					 "'%s' is a date-time: map value \"%s\" is not "
					 "YYYY-MM-DDTHH:MM:SS.mmmZ",
					 r->to, r->map[i].to);
}

/* A constant or a default of a field rule: a v2 value, typed by the target
 * (an integer target reads an integer or a string of digits).  Whether the
 * setting is there, valid or not. */
static bool load_typed(struct loader *L, const config_setting_t *g, const char *name,
		       const struct field_rule *r, struct v2_val *ret)
{
	const config_setting_t *s = config_setting_get_member(g, name);
	const char *v = NULL;

	if (!s)
		return false;
	if (r->to && r->type == V2_T_INTEGER) {
		if (load_integer_setting(L, s, name, &v) == 1)
			*ret = vnum(v);
	} else if (pool_string(L, g, name, 0, &v) == 1) {
		*ret = vstr(v);
	}
	return true;
}

static struct field_rule *load_field(struct loader *L, const config_setting_t *g)
{
	struct field_rule *r;
	int conv = -1, unknown = UNKNOWN_KEEP;
	bool has_value = false;

	if (config_setting_type(g) != CONFIG_TYPE_GROUP) {
		cfg_reader_error(&L->r, g,
				 "each entry of 'fields' must be a group { to = ...; ... }, not %s",
				 cfg_type_name(config_setting_type(g)));
		return NULL;
	}
	r = pool_alloc(L, 1, sizeof(*r));
	if (!r)
		return NULL;
	r->file = setting_file(L, g);
	r->line = cfg_line(g);
	r->key = -1;
	cfg_reader_check_keys(&L->r, g, field_names, "a field rule");

	if (pool_string(L, g, "to", CFG_NONEMPTY, &r->to) == 0) {
		cfg_reader_error(&L->r, g, "field rule without 'to' (the v2 path it writes)");
	} else if (r->to && v2_target_lookup(r->to, &r->slot, &r->type) < 0) {
		if (strncmp(r->to, "form", 4) == 0 || strncmp(r->to, "optins", 6) == 0 ||
		    strncmp(r->to, "questionnaire", 13) == 0)
			cfg_reader_error(
				&L->r, config_setting_get_member(g, "to"),
				"unknown v2 path '%s': form, optins and questionnaire entries come "
				"from 'variables'",
				r->to);
		else
			cfg_reader_error(&L->r, config_setting_get_member(g, "to"),
					 "unknown v2 path '%s' (known: %s)", r->to,
					 v2_target_list());
		r->to = NULL;
	}
	pool_string(L, g, "from", CFG_NONEMPTY, &r->from);
	cfg_reader_bool(&L->r, g, "required", &r->required);
	if (cfg_reader_enum(&L->r, g, "convert", conv_names, &conv) == 1)
		r->conv = (enum conv)(conv + 1);
	load_pairs(L, g, "map", &r->map, &r->n_map);
	cfg_reader_enum(&L->r, g, "unknown", unknown_names, &unknown);
	r->unknown = (enum unknown_policy)unknown;
	load_dt(L, g, &r->dt);

	has_value = load_typed(L, g, "value", r, &r->constant);
	load_typed(L, g, "default", r, &r->def);

	if (has_value && config_setting_get_member(g, "from"))
		cfg_reader_error(&L->r, g,
				 "field rule has both 'value' (a constant) and 'from' (a v1 key)");
	else if (!has_value && !config_setting_get_member(g, "from"))
		cfg_reader_error(&L->r, g,
				 "field rule needs 'from' (a v1 key) or 'value' (a constant)");
	if (has_value) {
		static const char *const only_from[] = { "default",   "required", "convert",
							 "map",       "unknown",  "timezone",
							 "ambiguous", "gap",      NULL };

		for (int i = 0; only_from[i]; i++)
			if (config_setting_get_member(g, only_from[i]))
				cfg_reader_error(&L->r, config_setting_get_member(g, only_from[i]),
						 "'%s' needs 'from': a constant is written as is",
						 only_from[i]);
	}
	if (r->required && config_setting_get_member(g, "default"))
		cfg_reader_error(&L->r, g, "field rule is both 'required' and has a 'default'");
	if (r->to && r->type == V2_T_INTEGER && r->conv != CONV_NONE && r->conv != CONV_INTEGER)
		cfg_reader_error(
			&L->r, config_setting_get_member(g, "convert"),
			"'%s' is an integer: convert must be \"integer\" or absent, not \"%s\"",
			r->to, conv_names[r->conv - 1]);
	if (config_setting_get_member(g, "unknown") && !config_setting_get_member(g, "map"))
		cfg_reader_error(&L->r, config_setting_get_member(g, "unknown"),
				 "'unknown' needs a 'map'");
	if ((r->dt.zone || r->dt.amb >= 0 || r->dt.gap >= 0) && r->conv != CONV_DATETIME)
		cfg_reader_error(&L->r, g,
				 "'timezone', 'ambiguous' and 'gap' need convert = \"datetime\"");
	load_datetime_target(L, g, r, has_value);
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

static void load_category_ref(struct loader *L, const config_setting_t *g, struct v2_val *id,
			      struct v2_val *label, struct v2_val *tn)
{
	load_vinteger(L, g, "id", id);
	load_vstring(L, g, "label", label);
	load_vstring(L, g, "technical_name", tn);
}

static void load_categories(struct loader *L, const config_setting_t *g, struct var_rule *r)
{
	const config_setting_t *s = config_setting_get_member(g, "categories");
	struct v2_category *c;
	int n;

	if (!s)
		return;
	if (config_setting_type(s) != CONFIG_TYPE_LIST &&
	    !(config_setting_type(s) == CONFIG_TYPE_ARRAY && config_setting_length(s) == 0)) {
		cfg_reader_error(
			&L->r, s,
			"'categories' must be a list ( { id = ...; label = ...; technical_name = "
			"...; } ), not %s",
			cfg_type_name(config_setting_type(s)));
		return;
	}
	n = config_setting_length(s);
	c = pool_alloc(L, (size_t)n, sizeof(*c));
	if (!c)
		return;
	for (int i = 0; i < n; i++) {
		const config_setting_t *e = config_setting_get_elem(s, (unsigned)i), *p;

		if (config_setting_type(e) != CONFIG_TYPE_GROUP) {
			cfg_reader_error(&L->r, e,
					 "each entry of 'categories' must be a group { }");
			continue;
		}
		cfg_reader_check_keys(&L->r, e, category_names, "a category");
		load_category_ref(L, e, &c[i].id, &c[i].label, &c[i].technical_name);
		if (!config_setting_get_member(e, "id") && !config_setting_get_member(e, "label") &&
		    !config_setting_get_member(e, "technical_name"))
			cfg_reader_error(
				&L->r, e,
				"a category needs at least one of id, label, technical_name");
		if ((p = config_setting_get_member(e, "parent")) != NULL) {
			if (config_setting_type(p) != CONFIG_TYPE_GROUP) {
				cfg_reader_error(
					&L->r, p,
					"'parent' must be a group { id = ...; label = ...; "
					"technical_name = ...; }");
				continue;
			}
			cfg_reader_check_keys(&L->r, p, parent_names, "a category parent");
			load_category_ref(L, p, &c[i].parent.id, &c[i].parent.label,
					  &c[i].parent.technical_name);
		}
	}
	r->categories = c;
	r->n_categories = (size_t)n;
}

static int load_helper_key(struct loader *L, const config_setting_t *g, const char *name,
			   const char **ret)
{
	if (pool_string(L, g, name, CFG_NONEMPTY, ret) == 1)
		return key_intern(L, *ret);
	return -1;
}

/* The constant parts of the rule's entries written once (see struct
 * v2_entry); without them (a string that is not UTF-8) the writer writes
 * the values, and fails on them, as it would.  Returns r. */
static struct var_rule *rule_parts(struct loader *L, struct var_rule *r)
{
	struct v2_entry e = { 0 };
	char *head, *tail;

	e.id = r->id;
	e.label = r->label;
	e.type = r->type;
	e.description = r->description;
	e.variable = r->variable_val;
	e.categories = r->categories;
	e.n_categories = r->n_categories;
	if (v2_entry_parts(r->section, &e, &head, &r->head_len, &tail, &r->tail_len) < 0)
		return r;
	r->head = pool_keep(L, head);
	r->tail = tail ? pool_keep(L, tail) : NULL;
	return r;
}

static struct var_rule *load_var(struct loader *L, const config_setting_t *g,
				 const char *const *prefix)
{
	struct var_rule *r;
	int section = -1, conv = -1, unknown = UNKNOWN_KEEP, n;
	const char *id = NULL;

	if (config_setting_type(g) != CONFIG_TYPE_GROUP) {
		cfg_reader_error(
			&L->r, g,
			"each entry of 'variables' must be a group { section = ...; variable = "
			"...; "
			"}, not %s",
			cfg_type_name(config_setting_type(g)));
		return NULL;
	}
	r = pool_alloc(L, 1, sizeof(*r));
	if (!r)
		return NULL;
	r->file = setting_file(L, g);
	r->line = cfg_line(g);
	r->key = r->score_key = r->max_score_key = r->correct_key = r->response_score_key = -1;

	if (cfg_reader_enum(&L->r, g, "section", section_names, &section) == 0)
		cfg_reader_error(&L->r, g,
				 "variable without 'section' (form, optins or questionnaire)");
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
			cfg_reader_error(&L->r, c, "unknown setting '%s' in a variable",
					 name ? name : "?");
		else if (section >= 0 && !(var_settings[k].sections & (1u << section)))
			cfg_reader_error(&L->r, c, "'%s' does not apply to %s variables", name,
					 section_names[section]);
	}

	if (pool_string(L, g, "variable", CFG_NONEMPTY, &r->variable) == 0)
		cfg_reader_error(&L->r, g, "variable without 'variable' (its technical name)");
	if (r->variable)
		r->variable_val = vstr(r->variable);
	if (pool_string(L, g, "from", CFG_NONEMPTY, &r->from) == 0 && r->variable)
		r->from = pool_printf(L, "%s%s", prefix[r->section] ? prefix[r->section] : "",
				      r->variable);
	if (r->from)
		r->key = key_intern(L, r->from);
	if (load_integer(L, g, "id", &id) == 1)
		r->id = vnum(id);
	load_vstring(L, g, "label", &r->label);
	load_vstring(L, g, "type", &r->type);
	load_vstring(L, g, "description", &r->description);
	cfg_reader_bool(&L->r, g, "required", &r->required);
	if (pool_string(L, g, "default", 0, &r->def) == 1) {
		r->has_def = true;
		r->def_len = strlen(r->def);
		if (r->section == V2_OPTINS && strcmp(r->def, "1") && strcmp(r->def, "0") &&
		    *r->def)
			cfg_reader_error(
				&L->r, config_setting_get_member(g, "default"),
				"an opt-in default must be \"1\", \"0\" or \"\", not \"%s\"",
				r->def);
	}
	if (r->required && r->has_def)
		cfg_reader_error(&L->r, g, "variable '%s' is both 'required' and has a 'default'",
				 r->variable ? r->variable : "?");
	if (cfg_reader_enum(&L->r, g, "convert", conv_names, &conv) == 1)
		r->conv = (enum conv)(conv + 1);
	load_pairs(L, g, "map", &r->map, &r->n_map);
	load_pairs(L, g, "choices", &r->choices, &r->n_choices);
	cfg_reader_enum(&L->r, g, "unknown", unknown_names, &unknown);
	r->unknown = (enum unknown_policy)unknown;
	if (config_setting_get_member(g, "unknown") && !config_setting_get_member(g, "map") &&
	    !config_setting_get_member(g, "choices"))
		cfg_reader_error(&L->r, config_setting_get_member(g, "unknown"),
				 "'unknown' needs a 'map' or 'choices'");
	cfg_reader_bool(&L->r, g, "file", &r->is_file);
	if (r->is_file && config_setting_get_member(g, "choices"))
		cfg_reader_error(&L->r, g, "a file variable cannot have 'choices'");
	if (pool_string(L, g, "separator", 0, &r->separator) == 1) {
		r->sep_len = strlen(r->separator);
		if (!r->sep_len) {
			cfg_reader_error(&L->r, config_setting_get_member(g, "separator"),
					 "'separator' must not be empty");
			r->separator = NULL;
		}
	}
	r->score_key = load_helper_key(L, g, "score_from", &r->score_from);
	r->max_score_key = load_helper_key(L, g, "max_score_from", &r->max_score_from);
	r->correct_key = load_helper_key(L, g, "correct_from", &r->correct_from);
	r->response_score_key = load_helper_key(L, g, "response_score_from",
						&r->response_score_from);
	load_vinteger(L, g, "max_score", &r->max_score);
	if (r->max_score.kind != V2_ABSENT && r->max_score_from)
		cfg_reader_error(&L->r, g, "variable has both 'max_score' and 'max_score_from'");
	load_categories(L, g, r);
	load_dt(L, g, &r->dt);
	if ((r->dt.zone || r->dt.amb >= 0 || r->dt.gap >= 0) && r->conv != CONV_DATETIME)
		cfg_reader_error(&L->r, g,
				 "'timezone', 'ambiguous' and 'gap' need convert = \"datetime\"");
	return rule_parts(L, r);
}

static void load_fields(struct loader *L, const config_setting_t *g, const struct field_rule ***ret,
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
		cfg_reader_error(&L->r, s, "'fields' must be a list ( { ... }, { ... } ), not %s",
				 cfg_type_name(config_setting_type(s)));
		return;
	}
	n = config_setting_length(s);
	if (n > MAP_RULES_MAX) {
		cfg_reader_error(&L->r, s, "'fields' has %d rules, more than the limit of %d", n,
				 MAP_RULES_MAX);
		return;
	}
	v = pool_alloc(L, (size_t)n, sizeof(*v));
	if (!v)
		return;
	for (int i = 0; i < n; i++) {
		const struct field_rule *r = load_field(L, config_setting_get_elem(s, (unsigned)i));

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

static void load_vars(struct loader *L, const config_setting_t *g, const char *const *prefix,
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
		cfg_reader_error(&L->r, s,
				 "'variables' must be a list ( { ... }, { ... } ), not %s",
				 cfg_type_name(config_setting_type(s)));
		return;
	}
	n = config_setting_length(s);
	if (n > MAP_RULES_MAX) {
		cfg_reader_error(&L->r, s, "'variables' has %d rules, more than the limit of %d", n,
				 MAP_RULES_MAX);
		return;
	}
	v = pool_alloc(L, (size_t)n, sizeof(*v));
	if (!v)
		return;
	for (int i = 0; i < n; i++) {
		const struct var_rule *r = load_var(L, config_setting_get_elem(s, (unsigned)i),
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
static int load_ids(struct loader *L, const config_setting_t *g, const char *name,
		    const char ***ret, size_t *ret_n)
{
	const config_setting_t *s = config_setting_get_member(g, name);
	const char **v;
	int n, bad = 0;

	if (!s)
		return 0;
	if (!is_list(s)) {
		cfg_reader_error(&L->r, s,
				 "'%s' must be an array of ids [1, 2] or [\"1\", \"2\"], not %s",
				 name, cfg_type_name(config_setting_type(s)));
		return -1;
	}
	n = config_setting_length(s);
	if (n == 0) {
		cfg_reader_error(&L->r, s, "'%s' must not be empty", name);
		return -1;
	}
	v = pool_alloc(L, (size_t)n, sizeof(*v));
	if (!v)
		return -1;
	for (int i = 0; i < n; i++)
		if (load_integer_setting(L, config_setting_get_elem(s, (unsigned)i), name, &v[i]) !=
		    1)
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
	int replace;
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

static void load_stages(struct loader *L, const config_setting_t *root, const char *const *prefix,
			const char **base_ignore, size_t n_base_ignore)
{
	const config_setting_t *s = config_setting_get_member(root, "stages");
	struct mapping *m = L->m;
	int n;

	if (!s)
		return;
	if (config_setting_type(s) != CONFIG_TYPE_LIST &&
	    !(config_setting_type(s) == CONFIG_TYPE_ARRAY && config_setting_length(s) == 0)) {
		cfg_reader_error(&L->r, s, "'stages' must be a list ( { ... }, { ... } ), not %s",
				 cfg_type_name(config_setting_type(s)));
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
			cfg_reader_error(
				&L->r, g,
				"each entry of 'stages' must be a group { websites = [...]; ... }");
			continue;
		}
		cfg_reader_check_keys(&L->r, g, stage_names, "a stage");
		rs->file = setting_file(L, g);
		rs->line = cfg_line(g);
		if (pool_string(L, g, "name", CFG_NONEMPTY, &rs->name) != 1)
			rs->name = pool_printf(L, "stage at line %d", rs->line);
		load_ids(L, g, "websites", &rs->websites, &rs->n_websites);
		load_ids(L, g, "campaigns", &rs->campaigns, &rs->n_campaigns);
		if (!config_setting_get_member(g, "websites") &&
		    !config_setting_get_member(g, "campaigns"))
			cfg_reader_error(
				&L->r, g,
				"stage needs 'websites' or 'campaigns' (the ids it applies to)");
		rs->specificity = (rs->n_websites ? 1 : 0) + (rs->n_campaigns ? 2 : 0);
		cfg_reader_bool(&L->r, g, "replace", &src.replace);
		cfg_reader_enum(&L->r, g, "unmapped", unmapped_names, &unmapped);
		load_zone(L, g, &zone);
		cfg_reader_enum(&L->r, g, "ambiguous", ambiguous_names, &amb);
		cfg_reader_enum(&L->r, g, "gap", gap_names, &gap);
		if (unmapped >= 0) {
			rs->unmapped = (enum mapping_unmapped)unmapped;
			rs->unmapped_file = rs->file;
			rs->unmapped_line = cfg_line(config_setting_get_member(g, "unmapped"));
		} else {
			rs->unmapped = m->base.unmapped;
			rs->unmapped_file = m->base.unmapped_file;
			rs->unmapped_line = m->base.unmapped_line;
		}
		rs->zone = zone ? zone : m->base.zone;
		rs->amb = amb >= 0 ? (enum dt_ambiguous)amb : m->base.amb;
		rs->gap = gap >= 0 ? (enum dt_gap)gap : m->base.gap;
		load_strings(L, g, "ignore", &src.ignore, &src.n_ignore);
		load_fields(L, g, &src.fields, &src.n_fields);
		load_vars(L, g, prefix, &src.vars, &src.n_vars);
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

static void load_mime(struct loader *L, const config_setting_t *root)
{
	const struct pair *p = NULL;
	size_t n = 0;
	struct mapping *m = L->m;
	const char *def = NULL;

	if (load_pairs(L, root, "mime_types", &p, &n) == 1) {
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
	if (pool_string(L, root, "mime_default", 0, &def) == 1)
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

	cfg_reader_check_keys(&L->r, root, top_names, "the mapping");
	if (load_integer(L, root, "version", &version) == 1 && strcmp(version, "1") != 0)
		cfg_reader_error(
			&L->r, config_setting_get_member(root, "version"),
			"unsupported rule language version %s (this bridge reads version 1)",
			version);
	load_zone(L, root, &m->base.zone);
	cfg_reader_enum(&L->r, root, "ambiguous", ambiguous_names, &amb);
	cfg_reader_enum(&L->r, root, "gap", gap_names, &gap);
	cfg_reader_enum(&L->r, root, "unmapped", unmapped_names, &unmapped);
	m->base.amb = (enum dt_ambiguous)amb;
	m->base.gap = (enum dt_gap)gap;
	m->base.unmapped = (enum mapping_unmapped)unmapped;
	m->base.unmapped_file = m->path;
	if ((s = config_setting_get_member(root, "unmapped")) != NULL) {
		m->base.unmapped_file = setting_file(L, s);
		m->base.unmapped_line = cfg_line(s);
	}
	m->website_key_name = "website_id";
	m->campaign_key_name = "campaign_id";
	pool_string(L, root, "website_key", CFG_NONEMPTY, &m->website_key_name);
	pool_string(L, root, "campaign_key", CFG_NONEMPTY, &m->campaign_key_name);
	if ((s = config_setting_get_member(root, "prefixes")) != NULL) {
		if (config_setting_type(s) != CONFIG_TYPE_GROUP) {
			cfg_reader_error(
				&L->r, s,
				"'prefixes' must be a group { form = \"\"; optins = \"optin_\"; "
				"questionnaire = \"\"; }");
		} else {
			cfg_reader_check_keys(&L->r, s, section_names, "'prefixes'");
			for (int i = 0; i < V2_N_SECTIONS; i++)
				pool_string(L, s, section_names[i], 0, &prefix[i]);
		}
	}
	load_mime(L, root);
	load_strings(L, root, "ignore", &ignore, &n_ignore);
	load_fields(L, root, &m->base.fields, &m->base.n_fields);
	load_vars(L, root, prefix, &m->base.vars, &m->base.n_vars);
	check_zones_fields(L, m->base.fields, m->base.n_fields, m->base.zone);
	check_zones_vars(L, m->base.vars, m->base.n_vars, m->base.zone);
	for (size_t k = 0; k < n_ignore; k++)
		if (ignore[k])
			key_intern(L, ignore[k]);
	m->base.ignore = ignore;
	m->base.n_ignore = n_ignore;
	load_stages(L, root, prefix, ignore, n_ignore);
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
	L.r = (struct cfg_reader){ .d = d,
				   .file = path,
				   .file_of = reader_file_of,
				   .arg = &L,
				   .utf8 = true,
				   .listing = true };
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
