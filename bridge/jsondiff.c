/*
 * jsondiff: structural diff of two JSON documents (see the header for the
 * path and value semantics).
 *
 * Both documents are parsed with yajl's streaming API into a small tree
 * held in one arena per call: yajl_tree would stop at an embedded NUL,
 * accept comments and recurse without bound when freeing.
 * Strings handed to callbacks are copied (they point into yajl's
 * buffer, valid only during the callback); numbers keep their text from
 * the yajl_number callback, so no integer is ever parsed (yajl's long
 * long would lose 64-bit ids).  The depth
 * limit is enforced in the start callbacks, before yajl's stack grows.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>
#include <yajl/yajl_parse.h>

#include "bridge/buf.h"
#include "bridge/json.h"
#include "bridge/jsondiff.h"
#include "bridge/v1.h"
#include "bridge/mapping.h"

#define DEFAULT_MAX_INPUT   (16u * 1024 * 1024)
#define DEFAULT_MAX_DEPTH   64
#define DEFAULT_MAX_ENTRIES 10000
#define DEFAULT_MAX_MEMORY  (256u * 1024 * 1024)
#define ARENA_CHUNK         (64u * 1024)
#define MAX_PATTERN_LEN     4096

/* ------------------------------------------------------------------------ */
/* Memory: one budget per call, shared by the arena and the entries. */

struct budget {
	size_t used;
	size_t limit;
};

static void *budget_alloc(struct budget *b, size_t n)
{
	void *p;

	if (n > b->limit - b->used)
		return NULL;
	p = malloc(n ? n : 1);
	if (p)
		b->used += n;
	return p;
}

struct chunk {
	struct chunk *next;
	size_t cap;
	size_t used;
	max_align_t data[];
};

struct diff_arena {
	struct chunk *head;
	struct budget *budget;
};

static void *diff_arena_alloc(struct diff_arena *a, size_t n)
{
	const size_t align = sizeof(max_align_t);
	struct chunk *c = a->head;

	if (n > SIZE_MAX / 2)
		return NULL;
	n = (n + align - 1) / align * align;
	if (!c || c->cap - c->used < n) {
		size_t cap = n > ARENA_CHUNK ? n : ARENA_CHUNK;

		c = budget_alloc(a->budget, sizeof(*c) + cap);
		if (!c)
			return NULL;
		c->cap = cap;
		c->used = 0;
		c->next = a->head;
		a->head = c;
	}
	c->used += n;
	return (char *)c->data + c->used - n;
}

static void diff_arena_free(struct diff_arena *a)
{
	while (a->head) {
		struct chunk *c = a->head;

		a->head = c->next;
		free(c);
	}
}

/* ------------------------------------------------------------------------ */
/* A key or label inside a path: written as it is, except control bytes. */
static bool sbuf_path_segment(struct buf *b, const char *s, size_t n)
{
	size_t run = 0;

	for (size_t i = 0; i < n; i++) {
		char esc[8];

		if ((unsigned char)s[i] >= 0x20)
			continue;
		snprintf(esc, sizeof(esc), "\\u%04x", (unsigned char)s[i]);
		if (!buf_add(b, s + run, i - run) || !buf_str(b, esc))
			return false;
		run = i + 1;
	}
	return buf_add(b, s + run, n - run);
}

/* ------------------------------------------------------------------------ */
/* Tree */

enum jtype { J_NULL, J_BOOL, J_NUMBER, J_STRING, J_OBJECT, J_ARRAY };

struct node {
	enum jtype type;
	const char *key; /* member name when the parent is an object */
	size_t key_len;
	const char *s; /* scalar text: decoded string, number text, "true"/"false" */
	size_t len;
	struct node *first, *last, *next; /* children while parsing */
	size_t n;
	struct node **kids;   /* document order */
	struct node **sorted; /* objects: by key */
};

static int key_cmp(const char *a, size_t alen, const char *b, size_t blen)
{
	int c = memcmp(a, b, alen < blen ? alen : blen);

	if (c)
		return c;
	return alen < blen ? -1 : alen > blen;
}

static int node_key_cmp(const void *x, const void *y)
{
	const struct node *a = *(struct node *const *)x, *b = *(struct node *const *)y;

	return key_cmp(a->key, a->key_len, b->key, b->key_len);
}

static const struct node *object_get(const struct node *o, const char *key, size_t len)
{
	size_t lo = 0, hi = o->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct node *k = o->sorted[mid];
		int c = key_cmp(key, len, k->key, k->key_len);

		if (c == 0)
			return k;
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

/* ------------------------------------------------------------------------ */
/* Parser */

enum parse_fail { PF_NONE, PF_DEPTH, PF_MEMORY, PF_DUPLICATE };

struct parse {
	struct diff_arena *arena;
	yajl_handle h;
	const char *text;
	size_t len;
	size_t max_depth;
	struct node **stack; /* open containers */
	size_t depth;
	struct node *root;
	const char *key; /* pending member name */
	size_t key_len;
	enum parse_fail fail;
	const char *dup_key;
	size_t dup_len;
};

static char *diff_arena_copy(struct diff_arena *a, const void *s, size_t n)
{
	char *p = diff_arena_alloc(a, n + 1);

	if (!p)
		return NULL;
	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

static struct node *parse_add(struct parse *p, enum jtype type)
{
	struct node *n = diff_arena_alloc(p->arena, sizeof(*n));
	struct node *parent = p->depth ? p->stack[p->depth - 1] : NULL;

	if (!n) {
		p->fail = PF_MEMORY;
		return NULL;
	}
	memset(n, 0, sizeof(*n));
	n->type = type;
	if (!parent) {
		p->root = n;
		return n;
	}
	if (parent->type == J_OBJECT) {
		n->key = p->key;
		n->key_len = p->key_len;
	}
	if (parent->last)
		parent->last->next = n;
	else
		parent->first = n;
	parent->last = n;
	parent->n++;
	return n;
}

static int parse_scalar(struct parse *p, enum jtype type, const char *s, size_t len)
{
	struct node *n = parse_add(p, type);

	if (!n)
		return 0;
	n->s = diff_arena_copy(p->arena, s, len);
	n->len = len;
	if (!n->s) {
		p->fail = PF_MEMORY;
		return 0;
	}
	return 1;
}

static int on_null(void *ctx)
{
	return parse_scalar(ctx, J_NULL, "null", 4);
}

static int on_boolean(void *ctx, int v)
{
	return parse_scalar(ctx, J_BOOL, v ? "true" : "false", v ? 4 : 5);
}

static int on_number(void *ctx, const char *s, size_t len)
{
	return parse_scalar(ctx, J_NUMBER, s, len);
}

static int on_string(void *ctx, const unsigned char *s, size_t len)
{
	return parse_scalar(ctx, J_STRING, (const char *)s, len);
}

static int on_start(struct parse *p, enum jtype type)
{
	struct node *n;

	if (p->depth >= p->max_depth) {
		p->fail = PF_DEPTH;
		return 0;
	}
	n = parse_add(p, type);
	if (!n)
		return 0;
	p->stack[p->depth++] = n;
	return 1;
}

static int on_start_map(void *ctx)
{
	return on_start(ctx, J_OBJECT);
}

static int on_start_array(void *ctx)
{
	return on_start(ctx, J_ARRAY);
}

static int on_map_key(void *ctx, const unsigned char *s, size_t len)
{
	struct parse *p = ctx;

	p->key = diff_arena_copy(p->arena, s, len);
	p->key_len = len;
	if (!p->key) {
		p->fail = PF_MEMORY;
		return 0;
	}
	return 1;
}

static int on_end(struct parse *p)
{
	struct node *n = p->stack[--p->depth];
	size_t i = 0;

	n->kids = diff_arena_alloc(p->arena, (n->n ? n->n : 1) * sizeof(*n->kids));
	if (!n->kids) {
		p->fail = PF_MEMORY;
		return 0;
	}
	for (struct node *k = n->first; k; k = k->next)
		n->kids[i++] = k;
	if (n->type != J_OBJECT)
		return 1;
	n->sorted = diff_arena_alloc(p->arena, (n->n ? n->n : 1) * sizeof(*n->sorted));
	if (!n->sorted) {
		p->fail = PF_MEMORY;
		return 0;
	}
	memcpy(n->sorted, n->kids, n->n * sizeof(*n->kids));
	qsort(n->sorted, n->n, sizeof(*n->sorted), node_key_cmp);
	for (i = 1; i < n->n; i++) {
		if (node_key_cmp(&n->sorted[i - 1], &n->sorted[i]) == 0) {
			p->fail = PF_DUPLICATE;
			p->dup_key = n->sorted[i]->key;
			p->dup_len = n->sorted[i]->key_len;
			return 0;
		}
	}
	return 1;
}

static int on_end_map(void *ctx)
{
	return on_end(ctx);
}

static int on_end_array(void *ctx)
{
	return on_end(ctx);
}

static const yajl_callbacks parse_callbacks = {
	.yajl_null = on_null,
	.yajl_boolean = on_boolean,
	.yajl_number = on_number,
	.yajl_string = on_string,
	.yajl_start_map = on_start_map,
	.yajl_map_key = on_map_key,
	.yajl_end_map = on_end_map,
	.yajl_start_array = on_start_array,
	.yajl_end_array = on_end_array,
};

static int parse_error(struct bridge_error *err, const char *name, long at, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int parse_error(struct bridge_error *err, const char *name, long at, const char *fmt, ...)
{
	char msg[400];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (at >= 0)
		bridge_error_set(err, "%s: invalid JSON at byte %ld: %s", name, at, msg);
	else
		bridge_error_set(err, "%s: %s", name, msg);
	if (err)
		err->offset = at;
	return -1;
}

static size_t parse_offset(const struct parse *p)
{
	size_t at = yajl_get_bytes_consumed(p->h);

	return at > p->len ? p->len : at;
}

/* yajl's "lexical error: invalid char in json text.\n" -> "invalid char in json text". */
static void parse_syntax_error(struct parse *p, const char *name, struct bridge_error *err)
{
	char reason[320];

	v1_yajl_reason(p->h, p->text, p->len, reason, sizeof(reason));
	parse_error(err, name, (long)parse_offset(p), "%s", reason);
}

static int parse_doc(const char *text, size_t len, const char *name, size_t max_depth,
		     struct diff_arena *arena, struct node **ret, struct bridge_error *err)
{
	struct parse p;
	const char *nul;
	yajl_status st;
	int rc = -1;

	memset(&p, 0, sizeof(p));
	if (!text)
		len = 0;
	if (len && (nul = memchr(text, '\0', len)))
		return parse_error(err, name, (long)(nul - text), "embedded NUL byte");
	p.arena = arena;
	p.text = text ? text : "";
	p.len = len;
	p.max_depth = max_depth;
	p.stack = diff_arena_alloc(arena, max_depth * sizeof(*p.stack));
	if (!p.stack)
		return parse_error(err, name, -1, "out of memory (or over the memory limit)");
	p.h = yajl_alloc(&parse_callbacks, NULL, &p);
	if (!p.h)
		return parse_error(err, name, -1, "out of memory");
	/* Strict JSON: yajl's defaults, stated as the contract. */
	if (!yajl_config(p.h, yajl_allow_comments, 0) ||
	    !yajl_config(p.h, yajl_dont_validate_strings, 0) ||
	    !yajl_config(p.h, yajl_allow_trailing_garbage, 0) ||
	    !yajl_config(p.h, yajl_allow_multiple_values, 0) ||
	    !yajl_config(p.h, yajl_allow_partial_values, 0)) {
		parse_error(err, name, -1, "cannot configure the JSON parser");
		goto out;
	}
	st = yajl_parse(p.h, (const unsigned char *)p.text, len);
	if (st == yajl_status_ok)
		st = yajl_complete_parse(p.h);
	if (st == yajl_status_ok && p.root) {
		*ret = p.root;
		rc = 0;
	} else if (p.fail == PF_DEPTH) {
		parse_error(err, name, (long)parse_offset(&p), "nested deeper than %zu", max_depth);
	} else if (p.fail == PF_MEMORY) {
		parse_error(err, name, -1, "out of memory (or over the memory limit)");
	} else if (p.fail == PF_DUPLICATE) {
		char k[201];

		json_escape_to(k, sizeof(k), p.dup_key, p.dup_len > 100 ? 100 : p.dup_len,
			       JSON_ESC_YAJL, NULL);
		parse_error(err, name, (long)parse_offset(&p), "duplicate key \"%s\"", k);
	} else if (st == yajl_status_ok) {
		parse_error(err, name, (long)len, "empty document");
	} else {
		parse_syntax_error(&p, name, err);
	}
out:
	yajl_free(p.h);
	return rc;
}

/* ------------------------------------------------------------------------ */
/* Paths and ignore patterns */

enum seg_kind { SEG_KEY, SEG_INDEX };

struct seg {
	enum seg_kind kind;
	const char *s; /* key or element label */
	size_t len;
	char num[24]; /* index text when the element has no label */
};

enum pat_kind { PAT_KEY, PAT_ANY_KEY, PAT_INDEX, PAT_ANY_INDEX, PAT_DEEP };

struct pat_seg {
	enum pat_kind kind;
	const char *s;
	size_t len;
};

struct pattern {
	struct pat_seg seg[JSONDIFF_MAX_PATTERN_SEGMENTS];
	size_t n;
};

static int pattern_compile(const char *text, struct pattern *ret, struct bridge_error *err)
{
	const char *p = text;
	size_t tlen = strnlen(text, MAX_PATTERN_LEN + 1);

	ret->n = 0;
	if (tlen == 0 || tlen > MAX_PATTERN_LEN)
		return bridge_error_set(err, "ignore pattern \"%.60s\": %s", text,
					tlen ? "longer than 4096 bytes" : "empty");
	while (*p) {
		struct pat_seg *s;

		if (ret->n == JSONDIFF_MAX_PATTERN_SEGMENTS)
			return bridge_error_set(err,
						"ignore pattern \"%.60s\": more than %d segments",
						text, JSONDIFF_MAX_PATTERN_SEGMENTS);
		s = &ret->seg[ret->n];
		if (*p == '[') {
			const char *close = strchr(p + 1, ']');

			if (!close || close == p + 1)
				return bridge_error_set(
					err, "ignore pattern \"%.60s\": %s at byte %ld", text,
					close ? "empty []" : "unclosed [", (long)(p - text));
			s->s = p + 1;
			s->len = (size_t)(close - p - 1);
			s->kind = s->len == 1 && *s->s == '*' ? PAT_ANY_INDEX : PAT_INDEX;
			p = close + 1;
		} else {
			size_t n = strcspn(p, ".[");

			if (n == 0)
				return bridge_error_set(
					err, "ignore pattern \"%.60s\": empty segment at byte %ld",
					text, (long)(p - text));
			s->s = p;
			s->len = n;
			s->kind = n == 2 && p[0] == '*' && p[1] == '*' ? PAT_DEEP
				  : n == 1 && p[0] == '*'              ? PAT_ANY_KEY
								       : PAT_KEY;
			p += n;
		}
		ret->n++;
		if (*p == '.') {
			p++;
			if (!*p || *p == '.' || *p == '[')
				return bridge_error_set(
					err, "ignore pattern \"%.60s\": empty segment at byte %ld",
					text, (long)(p - text));
		} else if (*p && *p != '[') {
			return bridge_error_set(
				err, "ignore pattern \"%.60s\": expected '.' or '[' at byte %ld",
				text, (long)(p - text));
		}
	}
	return 0;
}

/* A pattern is run as an NFA over the path's segments: bit i of a state set
 * means "the first i pattern segments match the path so far"; bit n means
 * the whole pattern matched.  Sets are kept per depth, so each node costs
 * one step per pattern whatever the pattern holds. */
static uint64_t pattern_closure(const struct pattern *pt, uint64_t set)
{
	for (size_t i = 0; i < pt->n; i++)
		if ((set >> i & 1) && pt->seg[i].kind == PAT_DEEP)
			set |= (uint64_t)1 << (i + 1);
	return set;
}

static const char *seg_text(const struct seg *s)
{
	return s->s ? s->s : s->num;
}

static bool pat_seg_match(const struct pat_seg *p, const struct seg *s)
{
	switch (p->kind) {
	case PAT_KEY:
		return s->kind == SEG_KEY && p->len == s->len &&
		       memcmp(p->s, seg_text(s), s->len) == 0;
	case PAT_ANY_KEY: return s->kind == SEG_KEY;
	case PAT_INDEX:
		return s->kind == SEG_INDEX && p->len == s->len &&
		       memcmp(p->s, seg_text(s), s->len) == 0;
	case PAT_ANY_INDEX: return s->kind == SEG_INDEX;
	case PAT_DEEP: return true;
	}
	return false;
}

static uint64_t pattern_step(const struct pattern *pt, uint64_t set, const struct seg *s)
{
	uint64_t next = 0;

	for (size_t i = 0; i < pt->n; i++) {
		if (!(set >> i & 1))
			continue;
		if (pt->seg[i].kind == PAT_DEEP)
			next |= (uint64_t)1 << i;
		else if (pat_seg_match(&pt->seg[i], s))
			next |= (uint64_t)1 << (i + 1);
	}
	return pattern_closure(pt, next);
}

/* ------------------------------------------------------------------------ */
/* Comparison */

struct cmp {
	const struct jsondiff_options *opt;
	struct jsondiff *out;
	struct diff_arena *arena;
	struct budget *budget;
	struct bridge_error *err;
	struct pattern *pats;
	size_t n_pats;
	uint64_t *sets;   /* (max_depth + 1) x n_pats */
	struct seg *segs; /* the current path */
	size_t depth;
	size_t entries_cap;
	bool failed;
};

/* Enter segment s; returns false when the new path is ignored (and then
 * the caller must not pop). */
static bool path_push(struct cmp *c, const struct seg *s)
{
	uint64_t *prev = c->sets + c->depth * c->n_pats;
	uint64_t *next = prev + c->n_pats;

	for (size_t i = 0; i < c->n_pats; i++) {
		next[i] = pattern_step(&c->pats[i], prev[i], s);
		if (next[i] >> c->pats[i].n & 1)
			return false;
	}
	c->segs[c->depth++] = *s;
	return true;
}

static void path_pop(struct cmp *c)
{
	c->depth--;
}

static struct seg seg_key(const struct node *n)
{
	struct seg s = { .kind = SEG_KEY, .s = n->key, .len = n->key_len };

	return s;
}

static struct seg seg_index(size_t i, const char *label)
{
	struct seg s = { .kind = SEG_INDEX };

	if (label) {
		s.s = label;
		s.len = strlen(label);
	} else {
		s.len = (size_t)snprintf(s.num, sizeof(s.num), "%zu", i);
	}
	return s;
}

static char *path_text(struct cmp *c)
{
	struct buf b = { .max = c->budget->limit - c->budget->used };

	if (!buf_add(&b, "", 0))
		return NULL;
	for (size_t i = 0; i < c->depth; i++) {
		const struct seg *s = &c->segs[i];
		const char *text = seg_text(s);

		if (s->kind == SEG_INDEX) {
			if (!buf_add(&b, "[", 1) || !sbuf_path_segment(&b, text, s->len) ||
			    !buf_add(&b, "]", 1))
				break;
		} else if ((i && !buf_add(&b, ".", 1)) || !sbuf_path_segment(&b, text, s->len)) {
			break;
		}
	}
	if (b.failed) {
		free(b.s);
		return NULL;
	}
	c->budget->used += b.cap;
	return b.s;
}

static bool write_value(struct buf *b, const struct node *n)
{
	switch (n->type) {
	case J_NULL:
	case J_BOOL:
	case J_NUMBER: return buf_add(b, n->s, n->len);
	case J_STRING: return buf_json_quoted(b, n->s, n->len, JSON_ESC_YAJL);
	case J_OBJECT:
		if (!buf_add(b, "{", 1))
			return false;
		for (size_t i = 0; i < n->n; i++) {
			const struct node *k = n->kids[i];

			if ((i && !buf_add(b, ",", 1)) ||
			    !buf_json_quoted(b, k->key, k->key_len, JSON_ESC_YAJL) ||
			    !buf_add(b, ":", 1) || !write_value(b, k))
				return false;
		}
		return buf_add(b, "}", 1);
	case J_ARRAY:
		if (!buf_add(b, "[", 1))
			return false;
		for (size_t i = 0; i < n->n; i++)
			if ((i && !buf_add(b, ",", 1)) || !write_value(b, n->kids[i]))
				return false;
		return buf_add(b, "]", 1);
	}
	return false;
}

static char *value_text(struct cmp *c, const struct node *n, size_t *ret_len)
{
	struct buf b = { .max = c->budget->limit - c->budget->used };

	if (!write_value(&b, n)) {
		free(b.s);
		return NULL;
	}
	c->budget->used += b.cap;
	*ret_len = b.len;
	return b.s;
}

static void emit(struct cmp *c, enum jsondiff_kind kind, const struct node *a, const struct node *b)
{
	struct jsondiff *d = c->out;
	struct jsondiff_entry *e;

	if (c->failed)
		return;
	if (kind == JSONDIFF_ADDED)
		d->n_added++;
	else if (kind == JSONDIFF_REMOVED)
		d->n_removed++;
	else
		d->n_changed++;
	if (d->n_entries == c->opt->max_entries) {
		d->truncated = 1;
		return;
	}
	if (d->n_entries == c->entries_cap) {
		size_t cap = c->entries_cap ? c->entries_cap * 2 : 16;
		struct jsondiff_entry *t;

		if (cap > c->opt->max_entries)
			cap = c->opt->max_entries;
		if ((cap - c->entries_cap) * sizeof(*t) > c->budget->limit - c->budget->used ||
		    !(t = realloc(d->entries, cap * sizeof(*t)))) {
			c->failed = true;
			return;
		}
		c->budget->used += (cap - c->entries_cap) * sizeof(*t);
		d->entries = t;
		c->entries_cap = cap;
	}
	e = &d->entries[d->n_entries];
	memset(e, 0, sizeof(*e));
	e->kind = kind;
	e->path = path_text(c);
	if (a)
		e->a = value_text(c, a, &e->a_len);
	if (b)
		e->b = value_text(c, b, &e->b_len);
	d->n_entries++;
	if (!e->path || (a && !e->a) || (b && !e->b))
		c->failed = true;
}

/* Labels of the elements of a root form/optins/questionnaire array (see
 * the header), or NULL when arr is not such an array. */
struct label_ix {
	const char *s; /* "" when the element has no variable */
	size_t len;
	size_t index;
	bool keyed;
};

static int label_ix_cmp(const void *x, const void *y)
{
	const struct label_ix *a = x, *b = y;
	int c = key_cmp(a->s, a->len, b->s, b->len);

	if (c)
		return c;
	return a->index < b->index ? -1 : a->index > b->index;
}

static bool keyed_array(const struct cmp *c, const struct node *arr)
{
	const struct seg *s;

	if (arr->type != J_ARRAY || c->depth != 1)
		return false;
	s = &c->segs[0];
	if (s->kind != SEG_KEY)
		return false;
	return (s->len == 4 && memcmp(s->s, "form", 4) == 0) ||
	       (s->len == 6 && memcmp(s->s, "optins", 6) == 0) ||
	       (s->len == 13 && memcmp(s->s, "questionnaire", 13) == 0);
}

/* labels[i] for element i, and sorted (by label) index for lookups. */
static int keyed_labels(struct cmp *c, const struct node *arr, const char ***ret_labels,
			struct label_ix **ret_sorted)
{
	size_t n = arr->n, unkeyed = 0;
	struct label_ix *ix = diff_arena_alloc(c->arena, (n ? n : 1) * sizeof(*ix));
	const char **labels = diff_arena_alloc(c->arena, (n ? n : 1) * sizeof(*labels));

	if (!ix || !labels)
		return -1;
	for (size_t i = 0; i < n; i++) {
		const struct node *e = arr->kids[i];
		const struct node *v = e->type == J_OBJECT ? object_get(e, "variable", 8) : NULL;

		ix[i].index = i;
		ix[i].keyed = v && v->type == J_STRING;
		ix[i].s = ix[i].keyed ? v->s : "";
		ix[i].len = ix[i].keyed ? v->len : 0;
	}
	/* Elements without a variable: "#N" in document order. */
	for (size_t i = 0; i < n; i++) {
		char num[32];

		if (ix[i].keyed)
			continue;
		snprintf(num, sizeof(num), "#%zu", unkeyed++);
		labels[i] = diff_arena_copy(c->arena, num, strlen(num));
		if (!labels[i])
			return -1;
	}
	qsort(ix, n, sizeof(*ix), label_ix_cmp);
	/* Repeated variables: the k-th occurrence (k >= 2) is "variable#k". */
	for (size_t i = 0, run = 0; i < n; i++) {
		char *l;

		if (!ix[i].keyed)
			continue;
		run = i && ix[i - 1].keyed &&
				      key_cmp(ix[i - 1].s, ix[i - 1].len, ix[i].s, ix[i].len) == 0
			      ? run + 1
			      : 1;
		if (run == 1) {
			labels[ix[i].index] = ix[i].s;
			continue;
		}
		l = diff_arena_alloc(c->arena, ix[i].len + 24);
		if (!l)
			return -1;
		memcpy(l, ix[i].s, ix[i].len);
		snprintf(l + ix[i].len, 24, "#%zu", run);
		labels[ix[i].index] = l;
	}
	/* A made label can equal a variable of the same array ("country#2" or
	 * "#0" written as such): the later of two equal labels gets one more "#"
	 * until all differ, so no element is looked up in place of another. */
	for (bool again = true; again;) {
		again = false;
		for (size_t i = 0; i < n; i++) {
			ix[i].index = i;
			ix[i].s = labels[i];
			ix[i].len = strlen(labels[i]);
		}
		qsort(ix, n, sizeof(*ix), label_ix_cmp);
		for (size_t i = 1; i < n; i++) {
			char *l;

			if (key_cmp(ix[i - 1].s, ix[i - 1].len, ix[i].s, ix[i].len) != 0)
				continue;
			l = diff_arena_alloc(c->arena, ix[i].len + 2);
			if (!l)
				return -1;
			memcpy(l, ix[i].s, ix[i].len);
			memcpy(l + ix[i].len, "#", 2);
			labels[ix[i].index] = l;
			again = true;
		}
	}
	if (ret_sorted)
		*ret_sorted = ix;
	*ret_labels = labels;
	return 0;
}

static long label_find(const struct label_ix *ix, size_t n, const char *s)
{
	size_t lo = 0, hi = n, len = strlen(s);

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = key_cmp(s, len, ix[mid].s, ix[mid].len);

		if (c == 0)
			return (long)ix[mid].index;
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return -1;
}

static void compare_node(struct cmp *c, const struct node *a, const struct node *b);

/* A value present on one side only. */
static void one_side(struct cmp *c, enum jsondiff_kind kind, const struct node *n)
{
	const char **labels = NULL;

	if (!c->opt->leaves || (n->type != J_OBJECT && n->type != J_ARRAY) || n->n == 0) {
		emit(c, kind, kind == JSONDIFF_REMOVED ? n : NULL,
		     kind == JSONDIFF_ADDED ? n : NULL);
		return;
	}
	if (keyed_array(c, n) && keyed_labels(c, n, &labels, NULL) < 0) {
		c->failed = true;
		return;
	}
	for (size_t i = 0; i < n->n && !c->failed; i++) {
		const struct node *k = n->kids[i];
		struct seg s = n->type == J_OBJECT ? seg_key(k)
						   : seg_index(i, labels ? labels[i] : NULL);

		if (!path_push(c, &s))
			continue;
		one_side(c, kind, k);
		path_pop(c);
	}
}

static void compare_object(struct cmp *c, const struct node *a, const struct node *b)
{
	for (size_t i = 0; i < b->n && !c->failed; i++) {
		const struct node *kb = b->kids[i];
		struct seg s = seg_key(kb);

		if (!path_push(c, &s))
			continue;
		compare_node(c, object_get(a, kb->key, kb->key_len), kb);
		path_pop(c);
	}
	for (size_t i = 0; i < a->n && !c->failed; i++) {
		const struct node *ka = a->kids[i];
		struct seg s = seg_key(ka);

		if (object_get(b, ka->key, ka->key_len) || !path_push(c, &s))
			continue;
		compare_node(c, ka, NULL);
		path_pop(c);
	}
}

static void compare_keyed(struct cmp *c, const struct node *a, const struct node *b)
{
	const char **la, **lb;
	struct label_ix *sa;
	bool *used;

	if (keyed_labels(c, a, &la, &sa) < 0 || keyed_labels(c, b, &lb, NULL) < 0 ||
	    !(used = diff_arena_alloc(c->arena, (a->n ? a->n : 1) * sizeof(*used)))) {
		c->failed = true;
		return;
	}
	memset(used, 0, (a->n ? a->n : 1) * sizeof(*used));
	for (size_t i = 0; i < b->n && !c->failed; i++) {
		long j = label_find(sa, a->n, lb[i]);
		struct seg s = seg_index(i, lb[i]);

		if (j >= 0)
			used[j] = true;
		if (!path_push(c, &s))
			continue;
		compare_node(c, j >= 0 ? a->kids[j] : NULL, b->kids[i]);
		path_pop(c);
	}
	for (size_t i = 0; i < a->n && !c->failed; i++) {
		struct seg s = seg_index(i, la[i]);

		if (used[i] || !path_push(c, &s))
			continue;
		compare_node(c, a->kids[i], NULL);
		path_pop(c);
	}
}

static void compare_array(struct cmp *c, const struct node *a, const struct node *b)
{
	size_t n = a->n > b->n ? a->n : b->n;

	for (size_t i = 0; i < n && !c->failed; i++) {
		struct seg s = seg_index(i, NULL);

		if (!path_push(c, &s))
			continue;
		compare_node(c, i < a->n ? a->kids[i] : NULL, i < b->n ? b->kids[i] : NULL);
		path_pop(c);
	}
}

static void compare_node(struct cmp *c, const struct node *a, const struct node *b)
{
	if (c->failed)
		return;
	if (!a) {
		one_side(c, JSONDIFF_ADDED, b);
		return;
	}
	if (!b) {
		one_side(c, JSONDIFF_REMOVED, a);
		return;
	}
	if (a->type != b->type) {
		emit(c, JSONDIFF_CHANGED, a, b);
		return;
	}
	switch (a->type) {
	case J_OBJECT: compare_object(c, a, b); return;
	case J_ARRAY:
		if (keyed_array(c, a))
			compare_keyed(c, a, b);
		else
			compare_array(c, a, b);
		return;
	default:
		if (a->len != b->len || memcmp(a->s, b->s, a->len) != 0)
			emit(c, JSONDIFF_CHANGED, a, b);
		return;
	}
}

/* ------------------------------------------------------------------------ */

void jsondiff_clear(struct jsondiff *d)
{
	if (!d)
		return;
	for (size_t i = 0; i < d->n_entries; i++) {
		struct jsondiff_entry *e = &d->entries[i];

		free(e->path);
		free(e->a);
		free(e->b);
		free(e->rule);
		free(e->from);
		free(e->what);
	}
	free(d->entries);
	memset(d, 0, sizeof(*d));
}

const char *jsondiff_kind_name(enum jsondiff_kind k)
{
	switch (k) {
	case JSONDIFF_ADDED: return "added";
	case JSONDIFF_REMOVED: return "removed";
	case JSONDIFF_CHANGED: return "changed";
	}
	return "unknown";
}

int jsondiff_compare(const char *a, size_t alen, const char *b, size_t blen,
		     const struct jsondiff_options *opt_in, struct jsondiff *ret,
		     struct bridge_error *err)
{
	struct jsondiff_options opt = { 0 };
	struct budget budget;
	struct diff_arena arena = { .budget = &budget };
	struct node *ra = NULL, *rb = NULL;
	struct cmp c;
	int rc = -1;

	memset(ret, 0, sizeof(*ret));
	bridge_error_clear(err);
	if (opt_in)
		opt = *opt_in;
	if (!opt.name_a)
		opt.name_a = "a";
	if (!opt.name_b)
		opt.name_b = "b";
	if (!opt.max_input)
		opt.max_input = DEFAULT_MAX_INPUT;
	if (!opt.max_depth)
		opt.max_depth = DEFAULT_MAX_DEPTH;
	if (!opt.max_entries)
		opt.max_entries = DEFAULT_MAX_ENTRIES;
	if (!opt.max_memory)
		opt.max_memory = DEFAULT_MAX_MEMORY;
	if (opt.n_ignore > JSONDIFF_MAX_PATTERNS)
		return bridge_error_set(err, "more than %d ignore patterns", JSONDIFF_MAX_PATTERNS);
	if (opt.max_depth > 4096)
		opt.max_depth = 4096; /* the comparison recurses once per level */
	if (alen > opt.max_input)
		return bridge_error_set(err, "%s: larger than %zu bytes", opt.name_a,
					opt.max_input);
	if (blen > opt.max_input)
		return bridge_error_set(err, "%s: larger than %zu bytes", opt.name_b,
					opt.max_input);
	budget.used = 0;
	budget.limit = opt.max_memory;

	memset(&c, 0, sizeof(c));
	c.opt = &opt;
	c.out = ret;
	c.arena = &arena;
	c.budget = &budget;
	c.err = err;
	c.n_pats = opt.n_ignore;
	c.pats = diff_arena_alloc(&arena, (c.n_pats ? c.n_pats : 1) * sizeof(*c.pats));
	c.sets = diff_arena_alloc(&arena, (opt.max_depth + 1) * (c.n_pats ? c.n_pats : 1) *
						  sizeof(*c.sets));
	c.segs = diff_arena_alloc(&arena, (opt.max_depth + 1) * sizeof(*c.segs));
	if (!c.pats || !c.sets || !c.segs) {
		bridge_error_set(err, "out of memory (or over the memory limit)");
		goto out;
	}
	for (size_t i = 0; i < c.n_pats; i++) {
		if (!opt.ignore[i]) {
			bridge_error_set(err, "ignore pattern %zu is NULL", i);
			goto out;
		}
		if (pattern_compile(opt.ignore[i], &c.pats[i], err) < 0)
			goto out;
		c.sets[i] = pattern_closure(&c.pats[i], 1);
	}
	if (parse_doc(a, alen, opt.name_a, opt.max_depth, &arena, &ra, err) < 0 ||
	    parse_doc(b, blen, opt.name_b, opt.max_depth, &arena, &rb, err) < 0)
		goto out;

	/* A pattern matching the root ("**") ignores everything. */
	for (size_t i = 0; i < c.n_pats; i++)
		if (c.sets[i] >> c.pats[i].n & 1)
			ra = rb = NULL;
	if (ra && rb)
		compare_node(&c, ra, rb);
	if (c.failed) {
		bridge_error_set(err, "out of memory (or over the %zu-byte memory limit)",
				 opt.max_memory);
		goto out;
	}
	rc = 0;
out:
	diff_arena_free(&arena);
	if (rc < 0)
		jsondiff_clear(ret);
	return rc;
}

/* ------------------------------------------------------------------------ */
/* Provenance */

/* Length of the common prefix of two paths, cut back to a segment
 * boundary (end of either path, or before '.' or '['). */
static size_t common_segments(const char *x, const char *y)
{
	size_t i = 0, boundary = 0;

	while (x[i] && x[i] == y[i]) {
		i++;
		if ((x[i] == '.' || x[i] == '[' || !x[i]) && (y[i] == '.' || y[i] == '[' || !y[i]))
			boundary = i;
	}
	return boundary;
}

/* Length of "form[x]", "optins[x]" or "questionnaire[x]" at the start of
 * path, or 0. */
static size_t entry_prefix(const char *path)
{
	static const char *const sections[] = { "form[", "optins[", "questionnaire[" };

	for (size_t i = 0; i < 3; i++) {
		size_t n = strlen(sections[i]);
		const char *close;

		if (strncmp(path, sections[i], n) != 0)
			continue;
		close = strchr(path + n, ']');
		return close ? (size_t)(close - path) + 1 : 0;
	}
	return 0;
}

const struct mapping_trace *jsondiff_trace_find(const struct mapping_trace *t, size_t n,
						const char *path,
						enum jsondiff_trace_match *ret_match)
{
	const struct mapping_trace *inside = NULL, *entry = NULL;
	size_t inside_len = 0, entry_len = 0, plen = strlen(path), eplen = entry_prefix(path);

	if (ret_match)
		*ret_match = JSONDIFF_TRACE_NONE;
	for (size_t i = 0; i < n; i++) {
		const char *tp = t[i].path;
		size_t tlen, common;

		if (!tp)
			continue;
		tlen = strlen(tp);
		if (tlen == plen && memcmp(tp, path, plen) == 0) {
			if (ret_match)
				*ret_match = JSONDIFF_TRACE_EXACT;
			return &t[i];
		}
		if (tlen < plen && memcmp(tp, path, tlen) == 0 &&
		    (path[tlen] == '.' || path[tlen] == '[')) {
			if (tlen > inside_len) {
				inside = &t[i];
				inside_len = tlen;
			}
			continue;
		}
		if (!eplen)
			continue;
		common = common_segments(tp, path);
		if (common >= eplen && common > entry_len) {
			entry = &t[i];
			entry_len = common;
		}
	}
	if (inside) {
		if (ret_match)
			*ret_match = JSONDIFF_TRACE_INSIDE;
		return inside;
	}
	if (entry && ret_match)
		*ret_match = JSONDIFF_TRACE_ENTRY;
	return entry;
}

int jsondiff_attribute(struct jsondiff *d, const struct mapping_trace *ta, size_t na,
		       const struct mapping_trace *tb, size_t nb, struct bridge_error *err)
{
	for (size_t i = 0; i < d->n_entries; i++) {
		struct jsondiff_entry *e = &d->entries[i];
		enum jsondiff_trace_match m;
		const struct mapping_trace *tr;
		bool removed = e->kind == JSONDIFF_REMOVED;

		tr = jsondiff_trace_find(removed ? ta : tb, removed ? na : nb, e->path, &m);
		if (!tr)
			tr = jsondiff_trace_find(removed ? tb : ta, removed ? nb : na, e->path, &m);
		free(e->rule);
		free(e->from);
		free(e->what);
		e->rule = e->from = e->what = NULL;
		if (!tr)
			continue;
		if (asprintf(&e->rule, "%s:%d", tr->file ? tr->file : "?", tr->line) < 0) {
			e->rule = NULL;
			return bridge_error_set(err, "out of memory");
		}
		if (m == JSONDIFF_TRACE_ENTRY) {
			e->what = strdup(tr->what && strncmp(tr->what, "unmapped:", 9) == 0
						 ? "attribute of the entry for an unmapped key"
						 : "attribute of the variable rule");
		} else {
			e->what = strdup(tr->what ? tr->what : "");
			if (tr->from_key && !(e->from = strdup(tr->from_key)))
				return bridge_error_set(err, "out of memory");
		}
		if (!e->what)
			return bridge_error_set(err, "out of memory");
	}
	return 0;
}

/* ------------------------------------------------------------------------ */

static bool render_member(struct buf *b, const char *name, const char *s)
{
	return !s || (buf_add(b, ",\"", 2) && buf_str(b, name) && buf_add(b, "\":", 2) &&
		      buf_json_quoted(b, s, strlen(s), JSON_ESC_YAJL));
}

int jsondiff_render_json(const struct jsondiff *d, struct evbuffer *out, struct bridge_error *err)
{
	struct buf b = { .max = SIZE_MAX / 2 };
	bool ok = buf_add(&b, "[", 1);

	for (size_t i = 0; ok && i < d->n_entries; i++) {
		const struct jsondiff_entry *e = &d->entries[i];

		ok = (!i || buf_add(&b, ",", 1)) && buf_str(&b, "{\"kind\":\"") &&
		     buf_str(&b, jsondiff_kind_name(e->kind)) && buf_str(&b, "\",\"path\":") &&
		     buf_json_quoted(&b, e->path, strlen(e->path), JSON_ESC_YAJL) &&
		     (!e->a || (buf_str(&b, ",\"a\":") && buf_add(&b, e->a, e->a_len))) &&
		     (!e->b || (buf_str(&b, ",\"b\":") && buf_add(&b, e->b, e->b_len))) &&
		     render_member(&b, "rule", e->rule) && render_member(&b, "from", e->from) &&
		     render_member(&b, "what", e->what) && buf_add(&b, "}", 1);
	}
	ok = ok && buf_add(&b, "]", 1);
	if (!ok || evbuffer_add(out, b.s, b.len) < 0) {
		free(b.s);
		return bridge_error_set(err, "out of memory while writing the differences");
	}
	free(b.s);
	return 0;
}
