/*
 * jsondiff: structural comparison of two JSON documents shaped like webhook
 * 2.0 payloads, with every difference named by a path.
 *
 * Paths
 *   - Object members are joined with '.' from the root:
 *     "campaign.channel.website.id".  The root itself is "".
 *   - Array elements are "[N]", N zero-based: "campaign.themes[0].code".
 *   - Elements of the root arrays "form", "optins" and "questionnaire" are
 *     matched by their "variable" member, not by position, and named by it:
 *     "form[email].responses[0].value".  Reordering them is no difference.
 *     An element without a string "variable" is named "#N" (N counts only
 *     such elements, from 0); a repeated variable is "email#2", "email#3"...
 *     in document order.
 *   - Keys are written as they are, except control bytes (\u00XX).  A key
 *     holding '.', '[' or ']' makes a path ambiguous to read, not wrong.
 *
 * Values
 *   - Objects compare member by member whatever their order; a duplicate
 *     key is an error.  Other arrays compare element by element.
 *   - Strings compare by their decoded bytes ("\u00e9" equals "é").
 *   - Numbers compare by their exact text: 1, 1.0 and 1e0 all differ (the
 *     bridge writes integers from their exact text, so any change of text is
 *     a change on the wire).
 *   - A value whose type changed is one "changed" entry holding both values.
 *   - Entries carry values as compact JSON text (members in document order,
 *     strings escaped minimally: quote, backslash and control bytes).
 *
 * Entry order follows document b (members and elements in b's order, at
 * each level the ones only in a after those of b), so that a diff of a
 * document against "{}" lists b's leaves in reading order.
 *
 * Ignore patterns use the path syntax where a segment "*" matches any one
 * member name, "[*]" any one element, and "**" any number of segments, none
 * included: "form[*].id", "campaign.channel.**", "**.score".  A path a
 * pattern matches is skipped together with everything beneath it.
 *
 * Parsing is strict JSON through yajl's streaming parser on exactly len
 * bytes (no comments, no trailing data, UTF-8 validated, embedded NUL
 * rejected), never yajl_tree.  Every allocation is charged against
 * max_memory.  No global state: calls from several threads at once are
 * safe.  Nothing is printed or logged.
 */
#ifndef BRIDGE_JSONDIFF_H
#define BRIDGE_JSONDIFF_H

#include <stddef.h>
#include "bridge/diag.h"

struct evbuffer;
struct mapping_trace;

#define JSONDIFF_MAX_PATTERNS         256 /* ignore patterns per call */
#define JSONDIFF_MAX_PATTERN_SEGMENTS 63

struct jsondiff_options {
	const char *const *ignore; /* patterns (see above); NULL when n_ignore is 0 */
	size_t n_ignore;
	int leaves;         /* 1: an object or array present on one side only is
				* reported leaf by leaf (each scalar, each empty object
				* or array) instead of as one entry */
	const char *name_a; /* names in error messages; default "a" and "b" */
	const char *name_b;
	size_t max_input;   /* bytes per document; 0: 16 MiB */
	size_t max_depth;   /* nesting of objects and arrays, the root counts 1; 0: 64 */
	size_t max_entries; /* entries kept (counting goes on past it); 0: 10000 */
	size_t max_memory;  /* both trees plus the entries; 0: 256 MiB */
};

enum jsondiff_kind {
	JSONDIFF_ADDED,   /* only in b */
	JSONDIFF_REMOVED, /* only in a */
	JSONDIFF_CHANGED, /* in both, different */
};

struct jsondiff_entry {
	enum jsondiff_kind kind;
	char *path;
	char *a; /* compact JSON of the value in a; NULL when added */
	char *b; /* compact JSON of the value in b; NULL when removed */
	size_t a_len, b_len;
	/* Filled by jsondiff_attribute(), else NULL/0: */
	char *rule; /* "file:line" of the rule behind the value */
	char *from; /* v1 key the value came from, NULL for constants */
	char *what; /* what the rule did: "copy", "datetime Europe/Brussels" ... */
};

struct jsondiff {
	struct jsondiff_entry *entries; /* owned */
	size_t n_entries;
	size_t n_added, n_removed, n_changed; /* every difference, kept or not */
	int truncated;                        /* more differences than max_entries */
};

/* Compare documents a and b (alen/blen bytes; need not be NUL-terminated).
 * opt may be NULL for the defaults.  Returns 0 with *ret filled (equal when
 * ret->n_added + n_removed + n_changed == 0), or -1 with err naming the
 * document and the byte ("b: invalid JSON at byte 17: ...", err->offset
 * set), a bad ignore pattern, or a limit.  *ret is zeroed first and is
 * empty after a failure; jsondiff_clear() it after success. */
int jsondiff_compare(const char *a, size_t alen, const char *b, size_t blen,
		     const struct jsondiff_options *opt, struct jsondiff *ret,
		     struct bridge_error *err);

/* Free what d holds and zero it.  Accepts NULL and a zeroed struct. */
void jsondiff_clear(struct jsondiff *d);

/* "added", "removed", "changed". */
const char *jsondiff_kind_name(enum jsondiff_kind k);

/* How a mapping trace record relates to a path (jsondiff_trace_find). */
enum jsondiff_trace_match {
	JSONDIFF_TRACE_NONE,
	JSONDIFF_TRACE_EXACT,  /* the record wrote exactly this value */
	JSONDIFF_TRACE_INSIDE, /* the value is part of what the record wrote
				  * (the name of a file upload, ...) */
	JSONDIFF_TRACE_ENTRY,  /* an attribute of a form/optins/questionnaire
				  * entry built by the record's variable rule
				  * (id, label, type, choice label, categories) */
};

/* The provenance record (include/bridge/mapping.h) behind a path: the
 * record for exactly this path; else the longest record path that contains
 * it; else, inside a form/optins/questionnaire entry, the record sharing the
 * longest path prefix with it (same entry).  NULL when none (values of the
 * fixed v2 structure such as an empty "campaign.themes").  Paths are those
 * of this module, which mapping traces use too. */
const struct mapping_trace *jsondiff_trace_find(const struct mapping_trace *t, size_t n,
						const char *path,
						enum jsondiff_trace_match *ret_match);

/* Fill rule/from/what of every entry: an added or changed entry is looked
 * up in tb (the trace of the mapping that produced b) and then ta, a
 * removed one in ta then tb.  Either trace may be NULL with n 0.  Entries
 * matched only as TRACE_ENTRY get what = "attribute of the variable rule"
 * ("attribute of the entry for an unmapped key" when the unmapped policy
 * built the entry).
 * Returns 0, or -1 (out of memory, err set; entries keep what was filled). */
int jsondiff_attribute(struct jsondiff *d, const struct mapping_trace *ta, size_t na,
		       const struct mapping_trace *tb, size_t nb, struct bridge_error *err);

/* Append the entries as one compact JSON array to out:
 *   [{"kind":"changed","path":"state","a":"COMPLETED","b":"DONE",
 *     "rule":"rules.conf:41","from":"status","what":"lower, map ..."}, ...]
 * "a" is left out for added entries and "b" for removed ones; rule, from
 * and what only when set.  Values are embedded as JSON, not as strings.
 * Returns 0, or -1 when the buffer cannot grow (err set). */
int jsondiff_render_json(const struct jsondiff *d, struct evbuffer *out, struct bridge_error *err);

#endif
