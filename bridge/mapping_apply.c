/*
 * mapping, applying: a loaded mapping run on a v1 document.  No libconfig
 * work and no rule lookup by name: one hash lookup per v1 field fills the
 * key slots of the document, then the rule lists run in order.  Everything
 * an apply allocates lives in a per-call arena with a hard ceiling, except
 * what the result hands to the caller.
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

#include "bridge/arena.h"
#include "bridge/buf.h"
#include "bridge/diag.h"
#include "mapping_types.h"

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

/* ---- apply --------------------------------------------------------------- */

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


static void trace_entry(struct apply *a, const char *from_key, const char *file, int line,
			const char *what, const char *path_fmt, ...)
	__attribute__((format(printf, 6, 7)));
static void trace_entry(struct apply *a, const char *from_key, const char *file, int line,
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

/* Tracing is off on the hot path: the flag is tested before the call (and
 * its varargs) is made. */
#define trace_add(a, ...)                              \
	do {                                           \
		if ((a)->flags & MAPPING_TRACE)        \
			trace_entry((a), __VA_ARGS__); \
	} while (0)

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

/* transform() of a value that a conversion or a map changes. */
static int transform_slow(struct apply *a, enum conv c, const struct dt_opts *dt,
			  const struct pair *map, size_t n_map, enum unknown_policy unknown,
			  const char *file, int line, const char *key, const char *s, size_t len,
			  const char **ret, size_t *ret_len, const struct pair **ret_pair)
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

/* Run a value through conversion and map; the result may point into the
 * input, the mapping or the arena.  A plain copy (most rules) is decided
 * here, inline, without the call. */
static inline int transform(struct apply *a, enum conv c, const struct dt_opts *dt,
			    const struct pair *map, size_t n_map, enum unknown_policy unknown,
			    const char *file, int line, const char *key, const char *s, size_t len,
			    const char **ret, size_t *ret_len, const struct pair **ret_pair)
{
	if ((c == CONV_NONE || c == CONV_STRING) && !n_map) {
		*ret = s;
		*ret_len = len;
		*ret_pair = NULL;
		return 0;
	}
	return transform_slow(a, c, dt, map, n_map, unknown, file, line, key, s, len, ret, ret_len,
			      ret_pair);
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

/* file{path, name, type}: name is the last segment of the URL's path (query
 * and fragment removed, not percent-decoded), type guessed from its
 * extension. */
static void file_response(const struct mapping *m, const char *s, size_t len,
			  struct v2_response *resp)
{
	const char *query = memchr(s, '?', len);
	const char *frag = memchr(s, '#', query ? (size_t)(query - s) : len);
	size_t end = frag ? (size_t)(frag - s) : query ? (size_t)(query - s) : len;
	size_t start = 0, path_start = 0;
	const char *type, *slash;

	resp->file_path.kind = V2_STRING;
	resp->file_path.s = s;
	resp->file_path.len = len;
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
	slash = memrchr(s + path_start, '/', end - path_start);
	start = slash ? (size_t)(slash - s) + 1 : path_start;
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
			/* a NUL would cut the name the type is guessed from, the
			 * other control characters have no place in a URL */
			long bad = word_first_control(s, len);

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
		e->head = r->head;
		e->head_len = r->head_len;
		e->tail = r->tail;
		e->tail_len = r->tail_len;
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
	e->head = r->head;
	e->head_len = r->head_len;
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

/* The result's four identifying texts, copied into one allocation that
 * res->ids owns (an absent one stays NULL). */
static int dup_ids(const struct apply *a, struct mapping_result *res)
{
	const struct v2_val *v[] = { &a->doc.slot[V2_F_ID], &a->doc.slot[V2_F_STATE],
				     &a->doc.slot[V2_F_WEBSITE_ID],
				     &a->doc.slot[V2_F_CAMPAIGN_ID] };
	char **to[] = { &res->participation_id, &res->state, &res->website_id, &res->campaign_id };
	size_t need = 0, i;
	char *p;

	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++)
		if (v[i]->kind != V2_ABSENT)
			need += v[i]->len + 1;
	if (!need)
		return 0;
	if (!(p = res->ids = malloc(need)))
		return -1;
	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		if (v[i]->kind == V2_ABSENT)
			continue;
		/* a text is a C string: one holding a NUL ends there */
		memcpy(p, v[i]->s, v[i]->len);
		p[v[i]->len] = '\0';
		*to[i] = p;
		p += v[i]->len + 1;
	}
	return 0;
}

void mapping_result_clear(struct mapping_result *r)
{
	if (!r)
		return;
	free(r->body);
	free(r->ids);
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
	if (dup_ids(a, res) < 0 || a->oom)
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
	arena_init(&a.arena, ARENA_BLOCK, MAP_ARENA_MAX);
	rc = apply_run(&a);
	arena_free(&a.arena);
	if (rc < 0)
		mapping_result_clear(ret);
	return rc;
}
