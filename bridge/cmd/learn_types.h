/*
 * What the files of the learn command share: its limits, the inference
 * model (documents, pairs, targets, variables, rules), its small tools
 * (arena, interned strings, tallies, text buffers that end the command when
 * memory runs out) and the functions one file calls in another.  Private to
 * learn.c, learn_tools.c, learn_input.c, learn_infer.c and learn_render.c.
 */
#ifndef BRIDGE_LEARN_TYPES_H
#define BRIDGE_LEARN_TYPES_H

#include <dirent.h>
#include <stddef.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yajl/yajl_tree.h>

#include "bridge/arena.h"
#include "bridge/buf.h"
#include "cli.h"
#include "bridge/json.h"
#include "bridge/convert.h"
#include "bridge/jsondiff.h"
#include "learn.h"
#include "bridge/mapping.h"
#include "bridge/v1.h"

#define LEARN_MAX_LINE   (64u << 20) /* one input line / file */
#define LEARN_MAX_DEPTH  64          /* yajl_tree recurses: bound nesting first */
#define LEARN_MAX_ENUM   64          /* distinct values of a key for a value map */
#define LEARN_MAX_OPTION 8           /* distinct values of an opt-in key for a map */
#define LEARN_TOLERANCE  0.10        /* share of disagreeing pairs a rule tolerates */
#define LEARN_EXAMPLES   3           /* participation ids quoted per conflict */
#define LEARN_DT_SAMPLE  400         /* observations used to tell time zones apart */

#define sb_printf(b, ...) learn_sb_check(buf_printf(learn_sb(b), __VA_ARGS__))

/* Interned strings: index by name, open addressing. */
struct intern {
	char **names;
	size_t n, cap;
	long *slots;
	size_t n_slots;
};

/* Value -> count tally, for majorities and value maps. */
struct tally_cell {
	const char *from; /* NULL for a plain tally */
	const char *to;
	long count;
	const char *example; /* participation id of the first pair */
};

struct tally {
	struct tally_cell *cells;
	size_t n, cap;
	int overflow; /* more distinct values than the caller allows */
};

struct doc {
	yajl_val tree;   /* the body object */
	const char *raw; /* compact text of the body as read (v2 side: for the diff) */
	size_t raw_len;
	const char *where; /* "file:line" */
};

struct docset {
	struct doc *docs;
	size_t n, cap;
	size_t invalid; /* lines that were no JSON object, capture lines marked invalid */
	struct buf problems;
};

enum { N_FIXED = 19, N_THEMES = 16, N_TARGETS = N_FIXED + 2 * N_THEMES };

static const char *const fixed_targets[N_FIXED] = {
	"id",
	"ip",
	"url",
	"startedAt",
	"completedAt",
	"state",
	"browser.device",
	"browser.userAgent",
	"campaign.id",
	"campaign.name",
	"campaign.type",
	"campaign.channel.uuid",
	"campaign.channel.publishType",
	"campaign.channel.dateStart",
	"campaign.channel.dateEnd",
	"campaign.channel.website.id",
	"campaign.channel.website.name",
	"campaign.channel.website.domain",
	"campaign.channel.website.country",
};

enum section { SEC_FORM, SEC_OPTINS, SEC_QUESTIONNAIRE, N_SECTIONS };

static const char *const section_names[N_SECTIONS] = { "form", "optins", "questionnaire" };

static const char *const default_prefix[N_SECTIONS] = { "", "optin_", "" };

/* Conversions of a field or variable value, in order of preference when
 * several explain the evidence equally (the simplest first). */
enum conv { CONV_COPY, CONV_INTEGER, CONV_UPPER, CONV_LOWER, CONV_DATETIME, N_CONV };

static const char *const conv_names[N_CONV] = { "string", "integer", "upper", "lower", "datetime" };

/* Separators tried for multi-valued answers sent as one string. */
static const char *const separators[] = { NULL, "|", ",", ";", "/", "\n" };

#define N_SEP (sizeof(separators) / sizeof(separators[0]))

#define N_VCONV (3 * N_SEP) /* copy/upper/lower x separator */

struct response {
	const char *value;     /* value text, or the file path of an upload */
	const char *label;     /* choice label, or NULL */
	const char *score;     /* questionnaire response score, or NULL */
	const char *correct;   /* "true"/"false", or NULL */
	const char *file_type; /* upload: file.type */
};

struct entry {
	long var;
	yajl_val obj;
	struct response *resp;
	size_t n_resp;
	int is_file;
};

struct pair {
	yajl_val v1;    /* v1 body */
	yajl_val *kval; /* [n_keys] v1 value per key (NULL: absent or null) */
	const struct doc *v2doc;
	yajl_val v2;               /* v2 body */
	const char *tv[N_TARGETS]; /* v2 scalar per target, NULL when absent */
	int tv_number[N_TARGETS];
	struct entry *entries;
	size_t n_entries;
	const char *id; /* v2 id, for examples */
};

struct field_rule {
	int kind; /* 0 none, 1 move (conv), 2 map, 3 constant */
	long key;
	enum conv conv;
	const char *zone; /* datetime */
	const struct tz_zone *tz;
	int ambiguous_later, gap_shift;
	const char *dt_format;
	const char *zone_also; /* other zones the evidence cannot tell apart */
	struct tally map;      /* from -> to (majority per from) */
	int unknown_reject;
	const char *value; /* constant */
	const char *def;   /* default */
	long agree, against, seen, def_count;
	const char *examples[LEARN_EXAMPLES];
	size_t n_examples;
};

struct var {
	const char *name;
	enum section sec;
	long seen, generic, first_order;
	struct tally id, label, type, description, categories, max_score;
	struct tally choices; /* value -> label */
	struct tally optmap;  /* v1 text -> response (opt-ins) */
	long *agree;          /* [n_keys * N_VCONV] */
	long *score_agree, *max_agree, *rscore_agree, *correct_agree; /* [n_keys] */
	long n_file, n_labeled, n_unlabeled, n_rscore, n_correct, n_score, n_max;
	const char *def; /* response written when the key is absent */
	long def_count;
	/* outcome */
	long key;
	int vconv;
	long key_agree, key_seen;
	long score_key, max_key, rscore_key, correct_key;
	const char *examples[LEARN_EXAMPLES];
	size_t n_examples;
	int order;
};

struct learn {
	struct arena a;
	struct intern keys; /* v1 key names */
	struct intern vars; /* variable names */
	struct var *var;    /* [vars.n] */
	size_t var_cap;
	struct pair *pairs;
	size_t n_pairs;
	size_t unpaired_v1, unpaired_v2, ambiguous;
	long min_support;
	struct field_rule rule[N_TARGETS];
	char *target_names[N_TARGETS];
	long *key_used;           /* [n_keys] */
	long *key_seen;           /* [n_keys] pairs with the key */
	struct tally extra_paths; /* v2 leaves outside the rule language */
	struct tally once;        /* values seen once: "what" -> value */
	enum section dummy;
};

/* Pair every v1 body with the v2 body whose id one of its strings spells
 * (case-insensitively).  Ids that occur more than once on a side are paired
 * by state once the state rule is known (pair_by_state). */
struct v2_index {
	struct intern ids; /* upper-cased v2 ids */
	long *first;       /* [ids.n]: index of the only v2 with it, or -2 when several */
	long *count;
	int *taken;
};

/* The zones of the tz database, loaded once per run on first use. */
struct zones {
	struct tz_zone **z;
	size_t n, cap;
	int loaded;
};

/* Zones preferred when the evidence cannot tell several apart (same
 * offsets on every date seen): the most used zone of each such group. */
static const char *const zone_preferred[] = {
	"UTC",
	"Europe/Brussels",
	"Europe/London",
	"Europe/Paris",
	"Europe/Berlin",
	"America/New_York",
	"America/Chicago",
	"America/Denver",
	"America/Los_Angeles",
	"America/Phoenix",
	"Australia/Sydney",
	"Australia/Lord_Howe",
	"Australia/Adelaide",
	"Asia/Tokyo",
	"Asia/Kolkata",
	"America/Sao_Paulo",
	"Pacific/Auckland",
};

struct report {
	struct buf conflicts, once, unexplained;
	long n_conflicts;
};

struct check {
	long exact, failed;
	struct tally paths;
	const char *fail_example;
	char fail_msg[512];
};

#define LEARN_MAX_STAGES 16

void *learn_arena_alloc(struct arena *a, size_t n);
char *learn_arena_strndup(struct arena *a, const char *s, size_t n);
char *learn_arena_printf(struct arena *a, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void learn_arena_free(struct arena *a);
void *learn_xcalloc(size_t n, size_t size);
void *learn_xrealloc(void *p, size_t n);
void *learn_xgrow(void *p, size_t *cap, size_t need, size_t size, size_t first);
struct buf *learn_sb(struct buf *b);
void learn_sb_check(bool ok);
void learn_sb_add(struct buf *b, const char *s, size_t n);
void learn_sb_puts(struct buf *b, const char *s);
void learn_sb_quoted(struct buf *b, const char *s);
long learn_intern_find(const struct intern *t, const char *s);
long learn_intern_add(struct intern *t, struct arena *a, const char *s);
void learn_intern_free(struct intern *t);
struct tally_cell *learn_tally_bump(struct tally *t, const char *from, const char *to,
				    const char *example, size_t max);
const struct tally_cell *learn_tally_top(const struct tally *t, const char *from, long *ret_total);
void learn_tally_free(struct tally *t);
yajl_val learn_obj_get(yajl_val o, const char *key);
const char *learn_scalar_text(yajl_val v);
int learn_docset_add_path(struct docset *ds, struct arena *a, const char *path, int depth);
void learn_docset_free(struct docset *ds);
yajl_val learn_doc_body(const struct doc *d);
int learn_target_is_integer(int t);
void learn_ascii_upper(char *s);
void learn_pairs_build(struct learn *L, struct docset *v1, struct docset *v2, struct v2_index *ix,
		       long **ret_v1_match);
void learn_pair_add(struct learn *L, const struct doc *v1, const struct doc *v2);
void learn_keys_count(struct learn *L);
void learn_pairs_index_keys(struct learn *L);
void learn_zones_free(struct zones *Z);
void learn_fields(struct learn *L, struct zones *Z);
const char *learn_optin_norm(yajl_val x);
void learn_variables(struct learn *L);
const char *learn_top_zone(const struct learn *L);
void learn_render(struct learn *L, struct buf *b, struct report *rp);

#endif
