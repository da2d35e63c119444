/*
 * v1: strict parsing of legacy webhook 1.0 bodies into a flat document.
 *
 * JSON goes through yajl's streaming parser on the exact body length, never
 * yajl_tree: the tree API stops at the first NUL byte, always allows comments
 * and has no depth limit.  Every callback copies what it receives because
 * yajl hands out pointers into the input or into its own scratch buffer.
 *
 * Everything the document holds comes from its arena, so every error path
 * frees what was built so far with the one v1_doc_free().
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <yajl/yajl_parse.h>

#include "bridge/buf.h"
#include "bridge/hex.h"
#include "bridge/siphash.h"
#include "bridge/utf8.h"
#include "bridge/v1.h"
#include "strscan.h"
#include "wordload.h"

void v1_limits_default(struct v1_limits *l)
{
	l->max_depth = 8;
	l->max_keys = 1000;
	l->max_string = 65536;
	l->max_items = 1000;
}

/* ------------------------------------------------------------------------ */
/* Messages.  Keys come from the peer: render them printable and bounded
 * before they reach a message or a log line. */

#define KEY_SHOWN_MAX 80

static void key_render(char *dst, size_t cap, const char *s, size_t n)
{
	diag_quote(dst, cap, s, n, KEY_SHOWN_MAX, '\'');
}

/* Sets message, offset and key (already rendered, may be NULL); returns -1. */
static int fail(struct bridge_error *err, long offset, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int fail(struct bridge_error *err, long offset, const char *key, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	err->offset = offset;
	if (key)
		snprintf(err->key, sizeof(err->key), "%s", key);
	return -1;
}

/* ------------------------------------------------------------------------ */
/* Document building. */

/* The first block holds a typical payload's document whole. */
#define DOC_BLOCK 8192

struct v1_doc *v1_doc_new(void)
{
	struct arena a;
	struct v1_doc *d;

	arena_init(&a, DOC_BLOCK, 0);
	d = arena_alloc(&a, sizeof(*d));
	if (!d)
		return NULL;
	memset(d, 0, sizeof(*d));
	d->arena = a; /* from here on the document's own copy is used */
	return d;
}

void v1_doc_free(struct v1_doc *d)
{
	struct arena a;

	if (!d)
		return;
	a = d->arena; /* the document is in it */
	arena_free(&a);
}

/* Item arrays grow by doubling from 4; the capacity is implied by n_items. */
static int items_reserve(struct v1_doc *d, struct v1_value *arr)
{
	size_t n = arr->n_items;
	struct v1_value *t;

	if (n != 0 && (n < 4 || (n & (n - 1)) != 0))
		return 0;
	if (n > SIZE_MAX / 2 / sizeof(*t))
		return -1;
	t = arena_alloc(&d->arena, (n ? n * 2 : 4) * sizeof(*t));
	if (!t)
		return -1;
	if (n)
		memcpy(t, arr->items, n * sizeof(*t));
	arr->items = t;
	return 0;
}

/* Append a scalar item whose text (n bytes) is already in d's arena. */
static int items_append(struct v1_doc *d, struct v1_value *arr, enum v1_type type, char *text,
			size_t n)
{
	struct v1_value *it;

	if (items_reserve(d, arr) < 0)
		return -1;
	it = &arr->items[arr->n_items++];
	memset(it, 0, sizeof(*it));
	it->type = type;
	it->text = text;
	it->len = n;
	return 0;
}

/* Append a copy of s as a scalar item. */
static int items_push(struct v1_doc *d, struct v1_value *arr, enum v1_type type, const char *s,
		      size_t n)
{
	char *text = arena_strndup(&d->arena, s, n);

	return text ? items_append(d, arr, type, text, n) : -1;
}

/* Turn a scalar into a one-item array holding it. */
static int value_make_array(struct v1_doc *d, struct v1_value *v)
{
	char *empty = arena_strndup(&d->arena, "", 0);
	struct v1_value *items = arena_alloc(&d->arena, 4 * sizeof(*items));

	if (!empty || !items)
		return -1;
	items[0] = *v;
	memset(v, 0, sizeof(*v));
	v->type = V1_ARRAY;
	v->text = empty;
	v->items = items;
	v->n_items = 1;
	return 0;
}

/*
 * The builder owns the document under construction and a private hash index
 * of its keys (open addressing; a slot holds the field's index + 1 and its
 * key's hash, so a key is hashed once, growth included), so duplicate
 * detection and form key merging stay linear in the body size.
 */
struct slot {
	uint32_t idx1; /* field index + 1; 0 = empty */
	uint32_t hash; /* low bits: the index never has 2^32 slots */
};

struct builder {
	struct v1_doc *doc;
	size_t cap_fields;
	struct slot *slots;
	size_t n_slots; /* power of two */
	const struct v1_limits *lim;
	const struct siphash_key *hkey; /* siphash_process_key(), fetched once */
};

#ifdef __SIZEOF_INT128__
/* The two halves of a * b folded together: wyhash's mixing step. */
static inline uint64_t key_mix(uint64_t a, uint64_t b)
{
	unsigned __int128 r = (unsigned __int128)a * b;

	return (uint64_t)r ^ (uint64_t)(r >> 64);
}
#endif

/* Keys are the sender's choice: keyed, so no set of keys is known to collide.
 * A key of up to 32 bytes (nearly all of them) is its words mixed with the
 * random key, as wyhash (and Go's maps, seeded per process) hash short
 * input: a few multiplies where SipHash-1-3 takes five rounds or more. */
static inline uint64_t key_hash(const struct builder *b, const char *s, size_t n)
{
#ifdef __SIZEOF_INT128__
	const unsigned char *p = (const unsigned char *)s;
	const uint64_t k0 = b->hkey->k0, k1 = b->hkey->k1;
	uint64_t seed = k1, lo, hi;

	if (n <= 32) {
		if (n > 16) { /* the first 16 bytes, then the last 16 */
			seed = key_mix(load_le64(p) ^ k0, load_le64(p + 8) ^ seed);
			lo = load_le64(p + n - 16);
			hi = load_le64(p + n - 8);
		} else {
			lo = n >= 8 ? load_le64(p) : load_tail64(p, n);
			hi = n > 8 ? load_le64(p + n - 8) : 0;
		}
		return key_mix(k1 ^ 0xe7037ed1a0b428dbULL ^ n, key_mix(lo ^ k0, hi ^ seed));
	}
#endif
	return siphash13(b->hkey, s, n);
}

/* A typical payload's keys fit without growing the index or the fields. */
#define SLOTS_FIRST  64
#define FIELDS_FIRST 48

static int builder_init(struct builder *b, const struct v1_limits *lim)
{
	memset(b, 0, sizeof(*b));
	b->lim = lim;
	b->hkey = siphash_process_key();
	b->doc = v1_doc_new();
	b->n_slots = SLOTS_FIRST;
	b->slots = b->doc ? arena_alloc(&b->doc->arena, b->n_slots * sizeof(*b->slots)) : NULL;
	if (!b->slots) {
		v1_doc_free(b->doc);
		b->doc = NULL;
		return -1;
	}
	memset(b->slots, 0, b->n_slots * sizeof(*b->slots));
	return 0;
}

/* The document goes to *ret, or is freed when ret is NULL (the index with
 * it: it is in the document's arena). */
static void builder_finish(struct builder *b, struct v1_doc **ret)
{
	b->slots = NULL;
	if (ret)
		*ret = b->doc;
	else
		v1_doc_free(b->doc);
	b->doc = NULL;
}

/* The field with this key (h = key_hash(b, key, len)), or -1. */
static long builder_find(const struct builder *b, const char *key, size_t len, uint64_t h)
{
	size_t mask = b->n_slots - 1;
	size_t i = (size_t)h & mask;

	while (b->slots[i].idx1) {
		const struct v1_field *f = &b->doc->fields[b->slots[i].idx1 - 1];

		if (b->slots[i].hash == (uint32_t)h && f->key_len == len &&
		    memcmp(f->key, key, len) == 0)
			return (long)(b->slots[i].idx1 - 1);
		i = (i + 1) & mask;
	}
	return -1;
}

static void builder_slot_put(struct slot *slots, size_t n_slots, uint64_t h, size_t idx1)
{
	size_t mask = n_slots - 1;
	size_t i = (size_t)h & mask;

	while (slots[i].idx1)
		i = (i + 1) & mask;
	slots[i].idx1 = (uint32_t)idx1;
	slots[i].hash = (uint32_t)h;
}

/* Append a field whose value is still unset (h = key_hash(b, key, key_len));
 * key is in the document's arena.  Inlined: it runs once per key. */
static inline __attribute__((always_inline)) int builder_add(struct builder *b, char *key,
							     size_t key_len, uint64_t h)
{
	struct v1_doc *d = b->doc;
	struct v1_field *f;

	if (d->n_fields == b->cap_fields) {
		size_t cap = b->cap_fields ? b->cap_fields * 2 : FIELDS_FIRST;
		struct v1_field *t = arena_alloc(&d->arena, cap * sizeof(*t));

		if (!t)
			return -1;
		if (d->n_fields)
			memcpy(t, d->fields, d->n_fields * sizeof(*t));
		d->fields = t;
		b->cap_fields = cap;
	}
	if ((d->n_fields + 1) * 4 > b->n_slots * 3) { /* at most 3/4 full */
		size_t n = b->n_slots * 2, i;
		struct slot *s = arena_alloc(&d->arena, n * sizeof(*s));

		if (!s)
			return -1;
		memset(s, 0, n * sizeof(*s));
		for (i = 0; i < b->n_slots; i++)
			if (b->slots[i].idx1)
				builder_slot_put(s, n, b->slots[i].hash, b->slots[i].idx1);
		b->slots = s;
		b->n_slots = n;
	}
	f = &d->fields[d->n_fields];
	memset(f, 0, sizeof(*f));
	f->key = key;
	f->key_len = key_len;
	f->value.type = V1_NULL;
	builder_slot_put(b->slots, b->n_slots, h, d->n_fields + 1);
	d->n_fields++;
	return 0;
}

const struct v1_field *v1_doc_get(const struct v1_doc *d, const char *key)
{
	long i = v1_doc_index(d, key);

	return i < 0 ? NULL : &d->fields[i];
}

long v1_doc_index(const struct v1_doc *d, const char *key)
{
	size_t len, i;

	if (!d || !key)
		return -1;
	len = strlen(key);
	for (i = 0; i < d->n_fields; i++)
		if (d->fields[i].key_len == len && word_equal(d->fields[i].key, key, len))
			return (long)i;
	return -1;
}

/* ------------------------------------------------------------------------ */
/* JSON */

struct json_ctx {
	struct builder b;
	yajl_handle h;
	const char *body;
	size_t len;
	int finishing; /* inside yajl_complete_parse: tokens end at len */
	size_t depth;
	int in_array;
	long field;      /* field waiting for its value, or -1 */
	long top_offset; /* first non-blank byte, where the top-level value starts */
	struct bridge_error *err;
};

/* Offset just past the token the current callback reports. */
static size_t json_pos(const struct json_ctx *c)
{
	size_t p;

	if (c->finishing)
		return c->len;
	p = yajl_get_bytes_consumed(c->h);
	return p > c->len ? c->len : p;
}

/* Offset of the opening quote of the string token that ends at json_pos(). */
static size_t json_string_start(const struct json_ctx *c)
{
	size_t end = json_pos(c), i;

	if (end < 2)
		return 0;
	for (i = end - 1; i-- > 0;) {
		size_t bs = 0;

		if (c->body[i] != '"')
			continue;
		while (bs < i && c->body[i - 1 - bs] == '\\')
			bs++;
		if (bs % 2 == 0)
			return i;
	}
	return 0;
}

static int hex4(const char *s, unsigned *ret)
{
	unsigned v = 0;
	int i;

	for (i = 0; i < 4; i++) {
		int d = hex_digit(s[i]);

		if (d < 0)
			return -1;
		v = v << 4 | (unsigned)d;
	}
	*ret = v;
	return 0;
}

/*
 * yajl 2.1 silently turns a lone high surrogate escape into '?' and pairs a
 * high surrogate with whatever \u escape follows; check the raw token.
 * Returns the offset of the bad escape, or -1.
 */
static long json_bad_surrogate(const struct json_ctx *c, size_t open)
{
	size_t end = json_pos(c) - 1; /* closing quote */
	size_t i = open + 1;

	while (i < end) {
		unsigned cp, lo;

		if (c->body[i] != '\\') {
			i++;
			continue;
		}
		if (i + 1 >= end || c->body[i + 1] != 'u') {
			i += 2;
			continue;
		}
		if (i + 6 > end || hex4(c->body + i + 2, &cp) < 0)
			return (long)i;
		if (cp >= 0xDC00 && cp <= 0xDFFF)
			return (long)i;
		if (cp >= 0xD800 && cp <= 0xDBFF) {
			if (i + 12 > end || c->body[i + 6] != '\\' || c->body[i + 7] != 'u' ||
			    hex4(c->body + i + 8, &lo) < 0 || lo < 0xDC00 || lo > 0xDFFF)
				return (long)i;
			i += 12;
			continue;
		}
		i += 6;
	}
	return -1;
}

/*
 * Whether yajl handed the string s (n bytes) straight out of the body: then
 * the token had no escape to check and *ret_open is its opening quote.  A
 * string with escapes comes decoded from yajl's own buffer instead.
 */
static bool json_raw_token(const struct json_ctx *c, const unsigned char *s, size_t n,
			   size_t *ret_open)
{
	const char *p = (const char *)s;
	size_t end = json_pos(c);

	if (p <= c->body || p > c->body + c->len || end < n + 2 ||
	    (size_t)(p - c->body) != end - 1 - n)
		return false;
	*ret_open = end - n - 2;
	return true;
}

static const char *json_field_key(const struct json_ctx *c, char *buf, size_t cap)
{
	const struct v1_field *f = &c->b.doc->fields[c->field];

	key_render(buf, cap, f->key, f->key_len);
	return buf;
}

static int json_oom(struct json_ctx *c)
{
	fail(c->err, (long)json_pos(c), NULL, "out of memory while parsing JSON");
	return 0;
}

static int json_top_level(struct json_ctx *c, const char *what)
{
	fail(c->err, c->top_offset, NULL,
	     "the v1 payload must be a JSON object, found %s at byte %ld", what, c->top_offset);
	return 0;
}

/* Common path of every scalar; start = offset of the token. */
static int json_scalar(struct json_ctx *c, enum v1_type type, const char *s, size_t n, size_t start)
{
	const struct v1_limits *lim = c->b.lim;
	char k[KEY_SHOWN_MAX + 8];
	struct v1_value *v;
	size_t bad;

	if (c->depth == 0)
		return json_top_level(c, "a scalar");
	v = &c->b.doc->fields[c->field].value;
	if (n > lim->max_string) {
		fail(c->err, (long)start, json_field_key(c, k, sizeof(k)),
		     "value of key '%s' at byte %zu is longer than %zu bytes", k, start,
		     lim->max_string);
		return 0;
	}
	if (type == V1_STRING && (bad = utf8_invalid_at(s, n)) < n) {
		fail(c->err, (long)start, json_field_key(c, k, sizeof(k)),
		     "value of key '%s' at byte %zu is not valid UTF-8 (decoded byte %zu)", k,
		     start, bad);
		return 0;
	}
	if (c->in_array) {
		if (v->n_items >= lim->max_items) {
			fail(c->err, (long)start, json_field_key(c, k, sizeof(k)),
			     "array of key '%s' has more than %zu items (byte %zu)", k,
			     lim->max_items, start);
			return 0;
		}
		if (items_push(c->b.doc, v, type, s, n) < 0)
			return json_oom(c);
		return 1;
	}
	v->text = arena_strndup(&c->b.doc->arena, s, n);
	if (!v->text)
		return json_oom(c);
	v->type = type;
	v->len = n;
	c->field = -1;
	return 1;
}

static int json_on_null(void *ctx)
{
	struct json_ctx *c = ctx;

	return json_scalar(c, V1_NULL, "", 0, json_pos(c) - 4);
}

static int json_on_boolean(void *ctx, int b)
{
	struct json_ctx *c = ctx;

	return json_scalar(c, V1_BOOL, b ? "true" : "false", b ? 4 : 5, json_pos(c) - (b ? 4 : 5));
}

static int json_on_number(void *ctx, const char *s, size_t n)
{
	struct json_ctx *c = ctx;
	size_t end = json_pos(c);

	return json_scalar(c, V1_NUMBER, s, n, end >= n ? end - n : 0);
}

static int json_on_string(void *ctx, const unsigned char *s, size_t n)
{
	struct json_ctx *c = ctx;
	size_t start;
	char k[KEY_SHOWN_MAX + 8];
	long bad;

	if (json_raw_token(c, s, n, &start))
		return json_scalar(c, V1_STRING, (const char *)s, n, start);
	start = json_string_start(c);
	if (c->depth > 0 && (bad = json_bad_surrogate(c, start)) >= 0) {
		fail(c->err, bad, json_field_key(c, k, sizeof(k)),
		     "value of key '%s' has an unpaired UTF-16 surrogate escape at byte %ld", k,
		     bad);
		return 0;
	}
	return json_scalar(c, V1_STRING, (const char *)s, n, start);
}

static int json_on_map_key(void *ctx, const unsigned char *s, size_t n)
{
	struct json_ctx *c = ctx;
	const struct v1_limits *lim = c->b.lim;
	const char *key = (const char *)s;
	size_t start;
	char k[KEY_SHOWN_MAX + 8];
	size_t bad;
	long at;
	char *copy;
	uint64_t h;

	/* the key is rendered for messages only when there is one (hot path) */
#define K (key_render(k, sizeof(k), key, n), k)
	if (!json_raw_token(c, s, n, &start) &&
	    (at = json_bad_surrogate(c, start = json_string_start(c))) >= 0) {
		fail(c->err, at, K, "key '%s' has an unpaired UTF-16 surrogate escape at byte %ld",
		     k, at);
		return 0;
	}
	if (n > lim->max_string) {
		fail(c->err, (long)start, K, "key '%s' at byte %zu is longer than %zu bytes", k,
		     start, lim->max_string);
		return 0;
	}
	if (memchr(key, '\0', n)) {
		fail(c->err, (long)start, K, "key '%s' at byte %zu contains a NUL character", k,
		     start);
		return 0;
	}
	if ((bad = utf8_invalid_at(key, n)) < n) {
		fail(c->err, (long)start, K, "key '%s' at byte %zu is not valid UTF-8", k, start);
		return 0;
	}
	h = key_hash(&c->b, key, n);
	if (builder_find(&c->b, key, n, h) >= 0) {
		fail(c->err, (long)start, K, "duplicate key '%s' at byte %zu", k, start);
		return 0;
	}
	if (c->b.doc->n_fields >= lim->max_keys) {
		fail(c->err, (long)start, K,
		     "more than %zu keys in the object (key '%s' at byte %zu)", lim->max_keys, k,
		     start);
		return 0;
	}
#undef K
	copy = arena_strndup(&c->b.doc->arena, key, n);
	if (!copy || builder_add(&c->b, copy, n, h) < 0)
		return json_oom(c);
	c->field = (long)c->b.doc->n_fields - 1;
	return 1;
}

/* Depth first (the configured limit protects yajl's state stack whatever
 * the shape), then the flat shape of a v1 payload. */
static int json_open(struct json_ctx *c, int is_map)
{
	size_t at = json_pos(c) - 1;
	char k[KEY_SHOWN_MAX + 8];

	if (c->depth + 1 > c->b.lim->max_depth) {
		fail(c->err, (long)at, NULL, "nesting deeper than %zu at byte %zu",
		     c->b.lim->max_depth, at);
		return 0;
	}
	if (c->depth == 0) {
		if (!is_map)
			return json_top_level(c, "an array");
		c->depth = 1;
		return 1;
	}
	if (c->in_array) {
		fail(c->err, (long)at, json_field_key(c, k, sizeof(k)),
		     "array of key '%s' contains %s at byte %zu: only scalars are allowed in "
		     "arrays",
		     k, is_map ? "an object" : "an array", at);
		return 0;
	}
	if (is_map) {
		fail(c->err, (long)at, json_field_key(c, k, sizeof(k)),
		     "value of key '%s' is an object at byte %zu: values must be scalars or arrays "
		     "of scalars",
		     k, at);
		return 0;
	}
	if (!(c->b.doc->fields[c->field].value.text = arena_strndup(&c->b.doc->arena, "", 0)))
		return json_oom(c);
	c->b.doc->fields[c->field].value.type = V1_ARRAY;
	c->in_array = 1;
	c->depth++;
	return 1;
}

static int json_on_start_map(void *ctx)
{
	return json_open(ctx, 1);
}

static int json_on_start_array(void *ctx)
{
	return json_open(ctx, 0);
}

static int json_on_end_map(void *ctx)
{
	struct json_ctx *c = ctx;

	c->depth--;
	return 1;
}

static int json_on_end_array(void *ctx)
{
	struct json_ctx *c = ctx;

	c->depth--;
	c->in_array = 0;
	c->field = -1;
	return 1;
}

static const yajl_callbacks json_callbacks = {
	.yajl_null = json_on_null,
	.yajl_boolean = json_on_boolean,
	.yajl_number = json_on_number,
	.yajl_string = json_on_string,
	.yajl_start_map = json_on_start_map,
	.yajl_map_key = json_on_map_key,
	.yajl_end_map = json_on_end_map,
	.yajl_start_array = json_on_start_array,
	.yajl_end_array = json_on_end_array,
};

/* "lexical error: invalid char in json text.\n" -> "invalid char in json text".
 * `at` is yajl's count of bytes consumed: the bad byte is at or just before it. */
void v1_yajl_reason(void *h, const char *text, size_t len, char *out, size_t cap)
{
	unsigned char *raw = yajl_get_error(h, 0, (const unsigned char *)text, len);
	const char *reason = raw ? (const char *)raw : "syntax error";
	const char *colon = strstr(reason, "error: ");
	size_t n;

	if (colon)
		reason = colon + 7;
	n = strlen(reason);
	while (n && (reason[n - 1] == '\n' || reason[n - 1] == '.' || reason[n - 1] == ' '))
		n--;
	snprintf(out, cap, "%.*s", (int)(n > 300 ? 300 : n), reason);
	if (raw)
		yajl_free_error(h, raw);
}

static void json_syntax_error(struct json_ctx *c, size_t at)
{
	char reason[320];

	v1_yajl_reason(c->h, c->body, c->len, reason, sizeof(reason));
	fail(c->err, (long)at, NULL, "invalid JSON at byte %zu: %s", at, reason);
}

/* Offset of the first vertical tab or form feed, or len. */
static size_t json_first_vt_ff(const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if (s[i] == '\v' || s[i] == '\f')
			break;
	return i;
}

/* ------------------------------------------------------------------------ */
/*
 * JSON in one pass, for the common body: strict RFC 8259, the flat v1 shape,
 * built with the same builder as the yajl path.  It accepts only what the
 * yajl path accepts, into the same document; at anything else (any error or
 * limit, a lone surrogate escape) it gives up and the yajl path parses the
 * body again from the start, so every message still comes from there.
 */

struct fast {
	struct builder b;
	const unsigned char *p, *end;
	char *w; /* next free byte of the text region (see v1_parse_json_fast) */
};

/* Past JSON's whitespace (space, tab, CR, LF: bits of a word).  Inlined:
 * pretty-printed posts have a short run between every two tokens, and the
 * call cost more than the run. */
static inline __attribute__((always_inline)) void fast_ws(struct fast *f)
{
	const uint64_t ws = 1ULL << ' ' | 1ULL << '\t' | 1ULL << '\r' | 1ULL << '\n';
	const unsigned char *p = f->p, *end = f->end;

	while (p < end && *p <= ' ' && (ws >> *p & 1))
		p++;
	f->p = p;
}

/* The escape at *qp (a backslash) decoded to *wp; -1 for one left to the
 * yajl path (a bad one, a lone surrogate). */
static int fast_escape(const unsigned char **qp, const unsigned char *end, char **wp)
{
	static const char simple[128] = {
		['"'] = '"',  ['\\'] = '\\', ['/'] = '/',  ['b'] = '\b',
		['f'] = '\f', ['n'] = '\n',  ['r'] = '\r', ['t'] = '\t',
	};
	const unsigned char *q = *qp;
	unsigned cp, lo;

	if (end - q < 2)
		return -1;
	if (q[1] < 128 && simple[q[1]]) {
		*(*wp)++ = simple[q[1]];
		*qp = q + 2;
		return 0;
	}
	if (q[1] != 'u' || end - q < 6 || hex4((const char *)q + 2, &cp) < 0 ||
	    (cp >= 0xDC00 && cp <= 0xDFFF))
		return -1;
	q += 6;
	if (cp >= 0xD800 && cp <= 0xDBFF) {
		if (end - q < 6 || q[0] != '\\' || q[1] != 'u' ||
		    hex4((const char *)q + 2, &lo) < 0 || lo < 0xDC00 || lo > 0xDFFF)
			return -1;
		cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
		q += 6;
	}
	*wp += utf8_encode(cp, *wp);
	*qp = q;
	return 0;
}

/* The string whose content starts at f->p, decoded into the text region;
 * -1 to give up.  A key holding NUL (only an escape makes one) gives up.
 * Inlined into its two callers: a call per key and value cost more than the
 * scan of a short one. */
static inline __attribute__((always_inline)) int fast_string(struct fast *f, bool key, char **ret,
							     size_t *ret_len)
{
	const unsigned char *q = f->p, *end = f->end;
	char *t = f->w, *w = t;
	unsigned high = 0;
	bool esc = false;
	size_t n;

	for (;;) {
		q = scan_copy(q, end, &w, &high);
		if (q == end)
			return -1;
		if (*q == '"')
			break;
		if (*q != '\\' || fast_escape(&q, end, &w) < 0)
			return -1;
		esc = true;
	}
	n = (size_t)(w - t);
	*w++ = '\0';
	f->w = w;
	f->p = q + 1;
	if (n > f->b.lim->max_string || (high && !utf8_valid(t, n)) ||
	    (key && esc && memchr(t, '\0', n)))
		return -1;
	*ret = t;
	*ret_len = n;
	return 0;
}

/* A copy of s[0..n) in the text region. */
static char *fast_copy(struct fast *f, const unsigned char *s, size_t n)
{
	char *t = f->w;

	memcpy(t, s, n);
	t[n] = '\0';
	f->w += n + 1;
	return t;
}

static inline bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

/* The end of the number at p (RFC 8259's grammar, yajl's too), or NULL. */
static const unsigned char *fast_number(const unsigned char *p, const unsigned char *end)
{
	if (p < end && *p == '-')
		p++;
	if (p == end || !is_digit(*p))
		return NULL;
	if (*p++ != '0')
		while (p < end && is_digit(*p))
			p++;
	if (p < end && *p == '.') {
		if (++p == end || !is_digit(*p))
			return NULL;
		while (p < end && is_digit(*p))
			p++;
	}
	if (p < end && (*p == 'e' || *p == 'E')) {
		if (++p < end && (*p == '+' || *p == '-'))
			p++;
		if (p == end || !is_digit(*p))
			return NULL;
		while (p < end && is_digit(*p))
			p++;
	}
	return p;
}

/* One scalar at f->p (f->p < f->end) into type, text, len; -1 to give up.
 * Inlined into fast_value, the string scan with it. */
static inline __attribute__((always_inline)) int fast_scalar(struct fast *f, enum v1_type *type,
							     char **text, size_t *len)
{
	const unsigned char *p = f->p, *e;
	enum v1_type t;
	size_t n;

	if (*p == '"') {
		f->p++;
		*type = V1_STRING;
		return fast_string(f, false, text, len);
	}
	if (*p == 't' || *p == 'f' || *p == 'n') {
		const char *word = *p == 't' ? "true" : *p == 'f' ? "false" : "null";

		n = strlen(word);
		if ((size_t)(f->end - p) < n || memcmp(p, word, n) != 0)
			return -1;
		t = *p == 'n' ? V1_NULL : V1_BOOL;
		e = p + n;
		if (t == V1_NULL)
			n = 0;
	} else {
		if (!(e = fast_number(p, f->end)))
			return -1;
		t = V1_NUMBER;
		n = (size_t)(e - p);
	}
	if (n > f->b.lim->max_string)
		return -1;
	*text = fast_copy(f, p, n);
	*type = t;
	*len = n;
	f->p = e;
	return 0;
}

/* A field's value at f->p (f->p < f->end): a scalar or an array of them. */
static int fast_value(struct fast *f, struct v1_value *v)
{
	const struct v1_limits *lim = f->b.lim;
	enum v1_type t;
	char *text;
	size_t n;

	if (*f->p != '[')
		return fast_scalar(f, &v->type, &v->text, &v->len);
	if (lim->max_depth < 2)
		return -1;
	v->text = fast_copy(f, f->p, 0);
	v->type = V1_ARRAY;
	f->p++;
	fast_ws(f);
	if (f->p < f->end && *f->p == ']') {
		f->p++;
		return 0;
	}
	for (;;) {
		if (f->p == f->end || v->n_items >= lim->max_items ||
		    fast_scalar(f, &t, &text, &n) < 0 || items_append(f->b.doc, v, t, text, n) < 0)
			return -1;
		fast_ws(f);
		if (f->p == f->end || (*f->p != ',' && *f->p != ']'))
			return -1;
		if (*f->p++ == ']')
			return 0;
		fast_ws(f);
	}
}

/* "key": value at f->p, the opening quote passed. */
static int fast_member(struct fast *f)
{
	struct v1_doc *d = f->b.doc;
	char *key;
	size_t n;
	uint64_t h;

	if (fast_string(f, true, &key, &n) < 0)
		return -1;
	h = key_hash(&f->b, key, n);
	if (d->n_fields >= f->b.lim->max_keys || builder_find(&f->b, key, n, h) >= 0 ||
	    builder_add(&f->b, key, n, h) < 0)
		return -1;
	fast_ws(f);
	if (f->p == f->end || *f->p != ':')
		return -1;
	f->p++;
	fast_ws(f);
	if (f->p == f->end)
		return -1;
	return fast_value(f, &d->fields[d->n_fields - 1].value);
}

int v1_parse_json_fast(const char *body, size_t len, const struct v1_limits *lim,
		       struct v1_doc **ret)
{
	struct v1_limits dflt;
	struct fast f;

	*ret = NULL;
	if (!lim) {
		v1_limits_default(&dflt);
		lim = &dflt;
	}
	if (!body || lim->max_depth < 1)
		return 0;
	f.p = (const unsigned char *)body;
	f.end = f.p + len;
	fast_ws(&f);
	if (f.p == f.end || *f.p != '{' || builder_init(&f.b, lim) < 0)
		return 0;
	/* Every text of the document, NULs included, is at most as long as
	 * the bytes it comes from (a NUL takes a quote's or a separator's
	 * place), so one region of len bytes plus a block's overrun holds
	 * them all. */
	if (len > SIZE_MAX - SCAN_BLOCK - 1 ||
	    !(f.w = arena_alloc(&f.b.doc->arena, len + SCAN_BLOCK + 1)))
		goto give_up;
	f.p++;
	fast_ws(&f);
	if (f.p < f.end && *f.p == '}')
		f.p++;
	else
		for (;;) {
			if (f.p == f.end || *f.p != '"')
				goto give_up;
			f.p++;
			if (fast_member(&f) < 0)
				goto give_up;
			fast_ws(&f);
			if (f.p == f.end || (*f.p != ',' && *f.p != '}'))
				goto give_up;
			if (*f.p++ == '}')
				break;
			fast_ws(&f);
		}
	fast_ws(&f);
	if (f.p != f.end)
		goto give_up;
	builder_finish(&f.b, ret);
	return 1;
give_up:
	builder_finish(&f.b, NULL);
	return 0;
}

int v1_parse_json_yajl(const char *body, size_t len, const struct v1_limits *lim,
		       struct v1_doc **ret, struct bridge_error *err)
{
	struct bridge_error scratch;
	struct v1_limits dflt;
	struct json_ctx c;
	const char *nul;
	yajl_status st;
	size_t stop;
	int rc = -1;

	*ret = NULL;
	if (!err)
		err = &scratch;
	bridge_error_clear(err);
	if (!lim) {
		v1_limits_default(&dflt);
		lim = &dflt;
	}
	if (!body)
		len = 0;
	if (len && (nul = memchr(body, '\0', len)))
		return fail(err, (long)(nul - body), NULL,
			    "invalid JSON at byte %ld: embedded NUL byte", (long)(nul - body));

	memset(&c, 0, sizeof(c));
	c.body = body ? body : "";
	c.len = len;
	c.field = -1;
	c.err = err;
	while ((size_t)c.top_offset < len && strchr(" \t\r\n", body[c.top_offset]))
		c.top_offset++;
	if (builder_init(&c.b, lim) < 0)
		return fail(err, -1, NULL, "out of memory while parsing JSON");
	c.h = yajl_alloc(&json_callbacks, NULL, &c);
	if (!c.h) {
		fail(err, -1, NULL, "out of memory while parsing JSON");
		goto out;
	}
	/* Strict JSON: these are yajl's defaults, set explicitly as the contract. */
	if (!yajl_config(c.h, yajl_allow_comments, 0) ||
	    !yajl_config(c.h, yajl_dont_validate_strings, 0) ||
	    !yajl_config(c.h, yajl_allow_trailing_garbage, 0) ||
	    !yajl_config(c.h, yajl_allow_multiple_values, 0) ||
	    !yajl_config(c.h, yajl_allow_partial_values, 0)) {
		fail(err, -1, NULL, "cannot configure the JSON parser");
		goto out;
	}

	/* yajl's lexer also skips vertical tab and form feed between tokens; RFC
	 * 8259 allows only space, tab, LF and CR.  Parse up to the first such byte
	 * so an earlier error keeps its own offset, then refuse the byte itself. */
	stop = json_first_vt_ff(c.body, len);
	st = yajl_parse(c.h, (const unsigned char *)c.body, stop);
	if (st == yajl_status_ok && stop < len) {
		fail(err, (long)stop, NULL,
		     "invalid JSON at byte %zu: stray %s (JSON whitespace is space, tab, LF and "
		     "CR)",
		     stop, c.body[stop] == '\v' ? "vertical tab (0x0B)" : "form feed (0x0C)");
		goto out;
	}
	if (st == yajl_status_ok) {
		c.finishing = 1;
		st = yajl_complete_parse(c.h);
	}
	if (st == yajl_status_error)
		json_syntax_error(&c, json_pos(&c));
	else if (st == yajl_status_ok)
		rc = 0;
	/* yajl_status_client_canceled: the callback already filled err */
out:
	if (c.h)
		yajl_free(c.h);
	builder_finish(&c.b, rc == 0 ? ret : NULL);
	return rc;
}

int v1_parse_json(const char *body, size_t len, const struct v1_limits *lim, struct v1_doc **ret,
		  struct bridge_error *err)
{
	if (v1_parse_json_fast(body, len, lim, ret)) {
		if (err)
			bridge_error_clear(err);
		return 0;
	}
	return v1_parse_json_yajl(body, len, lim, ret, err);
}

/* ------------------------------------------------------------------------ */
/* application/x-www-form-urlencoded */

/* Decode raw[0..n) (at byte base of the body) into a fresh NUL-terminated
 * buffer from d's arena; '+' is a space, %XX a byte. */
static int form_decode(struct v1_doc *d, const char *raw, size_t n, size_t base, char **ret,
		       size_t *ret_len, struct bridge_error *err)
{
	char *out = n < SIZE_MAX ? arena_alloc(&d->arena, n + 1) : NULL;
	size_t i, o = 0;

	*ret = NULL;
	if (!out)
		return fail(err, (long)base, NULL, "out of memory while parsing form data");
	for (i = 0; i < n; i++) {
		if (raw[i] == '+')
			out[o++] = ' ';
		else if (raw[i] == '%') {
			int hi = i + 1 < n ? hex_digit(raw[i + 1]) : -1;
			int lo = i + 2 < n ? hex_digit(raw[i + 2]) : -1;

			if (hi < 0 || lo < 0)
				return fail(err, (long)(base + i), NULL,
					    "invalid form data at byte %zu: '%%' must be followed "
					    "by two hex digits",
					    base + i);
			out[o++] = (char)(hi << 4 | lo);
			i += 2;
		} else
			out[o++] = raw[i];
	}
	out[o] = '\0';
	*ret = out;
	*ret_len = o;
	return 0;
}

/* One "key=value" segment at body[start..end). */
static int form_segment(struct builder *b, const char *body, size_t start, size_t end,
			struct bridge_error *err)
{
	const struct v1_limits *lim = b->lim;
	const char *eq = memchr(body + start, '=', end - start);
	size_t key_end = eq ? (size_t)(eq - body) : end;
	size_t val_start = eq ? key_end + 1 : end;
	char *key, *val;
	size_t key_len, val_len, bad;
	char k[KEY_SHOWN_MAX + 8];
	struct v1_value *v;
	long idx;
	uint64_t h;

	if (form_decode(b->doc, body + start, key_end - start, start, &key, &key_len, err) < 0)
		return -1;
	key_render(k, sizeof(k), key, key_len);
	if (key_len > lim->max_string)
		return fail(err, (long)start, k, "key '%s' at byte %zu is longer than %zu bytes", k,
			    start, lim->max_string);
	if (memchr(key, '\0', key_len))
		return fail(err, (long)start, k, "key '%s' at byte %zu contains a NUL character", k,
			    start);
	if ((bad = utf8_invalid_at(key, key_len)) < key_len)
		return fail(err, (long)start, k, "key '%s' at byte %zu is not valid UTF-8", k,
			    start);
	if (form_decode(b->doc, body + val_start, end - val_start, val_start, &val, &val_len, err) <
	    0)
		return -1;
	if (val_len > lim->max_string)
		return fail(err, (long)val_start, k,
			    "value of key '%s' at byte %zu is longer than %zu bytes", k, val_start,
			    lim->max_string);
	if ((bad = utf8_invalid_at(val, val_len)) < val_len)
		return fail(err, (long)val_start, k,
			    "value of key '%s' at byte %zu is not valid UTF-8 (decoded byte %zu)",
			    k, val_start, bad);

	h = key_hash(b, key, key_len);
	idx = builder_find(b, key, key_len, h);
	if (idx < 0) {
		if (b->doc->n_fields >= lim->max_keys)
			return fail(err, (long)start, k,
				    "more than %zu keys in the form (key '%s' at byte %zu)",
				    lim->max_keys, k, start);
		if (builder_add(b, key, key_len, h) < 0)
			goto oom;
		v = &b->doc->fields[b->doc->n_fields - 1].value;
		v->type = V1_STRING;
		v->text = val;
		v->len = val_len;
		return 0;
	}
	v = &b->doc->fields[idx].value;
	if (v->type != V1_ARRAY && value_make_array(b->doc, v) < 0)
		goto oom;
	if (v->n_items >= lim->max_items)
		return fail(err, (long)start, k, "key '%s' repeated more than %zu times (byte %zu)",
			    k, lim->max_items, start);
	if (items_append(b->doc, v, V1_STRING, val, val_len) < 0)
		goto oom;
	return 0;
oom:
	return fail(err, (long)start, NULL, "out of memory while parsing form data");
}

int v1_parse_form(const char *body, size_t len, const struct v1_limits *lim, struct v1_doc **ret,
		  struct bridge_error *err)
{
	struct bridge_error scratch;
	struct v1_limits dflt;
	struct builder b;
	const char *nul;
	size_t pos = 0;

	*ret = NULL;
	if (!err)
		err = &scratch;
	bridge_error_clear(err);
	if (!lim) {
		v1_limits_default(&dflt);
		lim = &dflt;
	}
	if (!body)
		len = 0;
	if (len && (nul = memchr(body, '\0', len)))
		return fail(err, (long)(nul - body), NULL,
			    "invalid form data at byte %ld: embedded NUL byte", (long)(nul - body));
	if (builder_init(&b, lim) < 0)
		return fail(err, -1, NULL, "out of memory while parsing form data");
	while (pos < len) {
		const char *amp = memchr(body + pos, '&', len - pos);
		size_t end = amp ? (size_t)(amp - body) : len;

		if (end > pos && form_segment(&b, body, pos, end, err) < 0) {
			builder_finish(&b, NULL);
			return -1;
		}
		pos = end + 1;
	}
	builder_finish(&b, ret);
	return 0;
}

enum v1_encoding v1_encoding_of(const char *ct)
{
	size_t n;

	if (!ct)
		return V1_ENC_OTHER;
	while (*ct == ' ' || *ct == '\t')
		ct++;
	n = strcspn(ct, "; \t");
	if (n == strlen("application/json") && strncasecmp(ct, "application/json", n) == 0)
		return V1_ENC_JSON;
	if (n == strlen("application/x-www-form-urlencoded") &&
	    strncasecmp(ct, "application/x-www-form-urlencoded", n) == 0)
		return V1_ENC_FORM;
	return V1_ENC_OTHER;
}

size_t v1_json_depth(const char *s, size_t n)
{
	size_t depth = 0, max = 0;
	int in_str = 0;

	for (size_t i = 0; i < n; i++) {
		char c = s[i];

		if (in_str) {
			if (c == '\\')
				i++;
			else if (c == '"')
				in_str = 0;
		} else if (c == '"') {
			in_str = 1;
		} else if (c == '{' || c == '[') {
			if (++depth > max)
				max = depth;
		} else if ((c == '}' || c == ']') && depth) {
			depth--;
		}
	}
	return max;
}
