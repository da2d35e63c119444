/*
 * v1: the legacy webhook 1.0 payload as parsed input.
 *
 * A v1 payload is a flat object: each key maps to a scalar (string, number,
 * true/false, null) or to an array of scalars (multi-valued answers).  Nested
 * objects, or arrays inside arrays, are rejected.  Two encodings are accepted:
 * JSON (strict: no comments, no trailing garbage, UTF-8 validated, duplicate
 * keys rejected, no embedded NUL in the raw body) and
 * application/x-www-form-urlencoded (a repeated key becomes an array,
 * '+' is a space, %XX decoded, result must be valid UTF-8).
 *
 * Numbers keep the exact text the sender wrote (never a double round trip).
 * The document owns every byte it points to, all in its own arena (the
 * document itself included); v1_doc_free() releases all at once.
 * Parsing is reentrant and thread-safe.
 */
#ifndef BRIDGE_V1_H
#define BRIDGE_V1_H

#include <stddef.h>
#include "bridge/arena.h"
#include "bridge/diag.h"

enum v1_type {
	V1_STRING,
	V1_NUMBER, /* text = the JSON number exactly as sent */
	V1_BOOL,   /* text = "true" or "false" */
	V1_NULL,   /* text = "", len 0 */
	V1_ARRAY,  /* items/n_items; each item is a scalar */
};

struct v1_value {
	enum v1_type type;
	char *text; /* NUL-terminated copy; may contain NUL bytes inside (JSON \u0000), so use len */
	size_t len;
	struct v1_value *items; /* V1_ARRAY only */
	size_t n_items;
};

struct v1_field {
	char *key; /* NUL-terminated; keys containing NUL are rejected at parse time */
	size_t key_len;
	struct v1_value value;
};

struct v1_doc {
	struct v1_field *fields; /* in arrival order */
	size_t n_fields;
	struct arena arena; /* holds the document, its fields, keys and texts */
};

/* An empty document in an arena of its own (NULL without memory): a caller
 * that builds one fills fields, keys and texts from d->arena. */
struct v1_doc *v1_doc_new(void);

struct v1_limits {
	size_t max_depth;  /* nesting of [ and {; the top object counts 1; default 8 */
	size_t max_keys;   /* fields in the object; default 1000 */
	size_t max_string; /* bytes in one key or value; default 65536 */
	size_t max_items;  /* items in one array; default 1000 */
};

/* Fill *l with the defaults above. */
void v1_limits_default(struct v1_limits *l);

/* Parse a JSON body of exactly len bytes. On error returns -1, *ret is NULL,
 * err->message names the problem and err->offset the byte offset where it was
 * found (e.g. "invalid JSON at byte 17: unexpected character"). */
int v1_parse_json(const char *body, size_t len, const struct v1_limits *lim, struct v1_doc **ret,
		  struct bridge_error *err);

/* For tests, v1_parse_json's two paths alone.  The one-pass path returns 1
 * with *ret when it accepted the body (the yajl path must then accept it
 * too, into the same document), 0 when it gave up (*ret NULL): any error, any
 * limit, or something it leaves to the yajl path.  The yajl path, the
 * reference, has v1_parse_json's contract and gives every error message. */
int v1_parse_json_fast(const char *body, size_t len, const struct v1_limits *lim,
		       struct v1_doc **ret);
int v1_parse_json_yajl(const char *body, size_t len, const struct v1_limits *lim,
		       struct v1_doc **ret, struct bridge_error *err);

/* Parse an application/x-www-form-urlencoded body. Values are V1_STRING
 * (V1_ARRAY of strings for repeated keys). Same error contract. */
int v1_parse_form(const char *body, size_t len, const struct v1_limits *lim, struct v1_doc **ret,
		  struct bridge_error *err);

/* Which v1 parser a Content-Type asks for (media type compared without
 * case, parameters such as charset ignored). */
enum v1_encoding { V1_ENC_JSON, V1_ENC_FORM, V1_ENC_OTHER };
enum v1_encoding v1_encoding_of(const char *content_type);

/* Deepest nesting of [ and { in raw JSON text, counted outside strings.
 * yajl_tree recurses without a limit (yajl_tree_free
 * overflows the C stack on deep input): callers that hand text to
 * it check this first. */
size_t v1_json_depth(const char *s, size_t n);

/* yajl's verbose error ("lexical error: invalid char in json text.\n"
 * plus context lines) as a short reason ("invalid char in json text") in
 * out; h is the yajl_handle (void * keeps yajl out of this header). */
void v1_yajl_reason(void *h, const char *text, size_t len, char *out, size_t cap);

/* Find a field by key (exact, case-sensitive); NULL if absent. */
const struct v1_field *v1_doc_get(const struct v1_doc *d, const char *key);

/* Index of a field within d->fields, for "consumed" bookkeeping; -1 if absent. */
long v1_doc_index(const struct v1_doc *d, const char *key);

void v1_doc_free(struct v1_doc *d); /* accepts NULL */

#endif
