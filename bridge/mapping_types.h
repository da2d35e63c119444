/*
 * The rule model shared by the two halves of the mapping module:
 * mapping_load.c builds it from a rule file, mapping_apply.c runs it on a v1
 * document.  Private to those two files (the public contract is
 * include/bridge/mapping.h).
 */
#ifndef BRIDGE_MAPPING_TYPES_H
#define BRIDGE_MAPPING_TYPES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "bridge/convert.h"
#include "bridge/mapping.h"
#include "bridge/v2out.h"
#include "wordload.h"

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
	int required;
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
	int required;
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
	int is_file;
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
	const char *head, *tail; /* the entry's constant parts (v2_entry_parts), or NULL */
	size_t head_len, tail_len;
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
	size_t n_files, cap_files;
	struct tz_zone **zones;
	size_t n_zones, cap_zones;
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


/* ---- helpers of both halves ----------------------------------------------- */

/* A word at a time (multiply, fold the high half down); the table takes
 * the low bits. */
static inline size_t key_hash(const char *s, size_t len)
{
	const unsigned char *p = (const unsigned char *)s;
	uint64_t h = (uint64_t)len * 0x9e3779b97f4a7c15ULL;

	for (; len >= 8; p += 8, len -= 8) {
		h = (h ^ load_le64(p)) * 0xbf58476d1ce4e5b9ULL;
		h ^= h >> 29;
	}
	h = (h ^ load_tail64(p, len)) * 0x94d049bb133111ebULL;
	return (size_t)(h ^ h >> 32);
}

/* The slot of a v1 key named by a rule, or -1.  The table holds the rule
 * files' keys only (a sender's keys are looked up, never inserted), so an
 * unkeyed hash is enough. */
static inline int key_find(const struct mapping *m, const char *s, size_t len)
{
	size_t mask, i;

	if (!m->hcap)
		return -1;
	mask = m->hcap - 1;
	for (i = key_hash(s, len) & mask;; i = (i + 1) & mask) {
		int v = m->htab[i];

		if (!v)
			return -1;
		if (m->key_lens[v - 1] == len && word_equal(m->keys[v - 1], s, len))
			return v - 1;
	}
}

#define DEFAULT_MIME "application/octet-stream"

#endif
