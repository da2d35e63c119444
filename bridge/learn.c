/*
 * learn: infer a rule file from paired v1 / v2 traffic (see
 * include/bridge/learn.h for the contract).
 *
 * Every document of a run lives until the end of it; strings the learner
 * makes are kept in one arena, freed in one place.  Evidence is counted per
 * (v2 target, v1 key, conversion) across the pairs, so the cost is linear
 * in the pairs times the keys of a document.
 */
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

#include "bridge/buf.h"
#include "bridge/cli.h"
#include "bridge/json.h"
#include "bridge/convert.h"
#include "bridge/jsondiff.h"
#include "bridge/learn.h"
#include "bridge/mapping.h"
#include "bridge/v1.h"

#define LEARN_MAX_LINE   (64u << 20) /* one input line / file */
#define LEARN_MAX_DEPTH  64          /* yajl_tree recurses: bound nesting first */
#define LEARN_MAX_ENUM   64          /* distinct values of a key for a value map */
#define LEARN_MAX_OPTION 8           /* distinct values of an opt-in key for a map */
#define LEARN_TOLERANCE  0.10        /* share of disagreeing pairs a rule tolerates */
#define LEARN_EXAMPLES   3           /* participation ids quoted per conflict */
#define LEARN_DT_SAMPLE  400         /* observations used to tell time zones apart */

static const char usage_learn[] =
	"usage: webhook-bridge learn --v1 FILE... --v2 FILE... [--base RULES] [--min-support N]\n"
	"                            [-o RULES]\n"
	"\n"
	"Infers a mapping rule file from paired traffic: v1 bodies and the real v2\n"
	"bodies of the same participations, matched by participation id and state.\n"
	"\n"
	"  --v1 FILE...       v1 bodies: NDJSON (one body per line), `record` captures,\n"
	"                     JSON files or folders of them\n"
	"  --v2 FILE...       real v2 bodies: NDJSON, `dry_run.v2_record` captures,\n"
	"                     JSON files or folders of them\n"
	"  --base RULES       compare with an existing rule file: what the evidence\n"
	"                     confirms, contradicts or adds, as a diff on stderr\n"
	"  --min-support N    pairs a rule needs (default 3)\n"
	"  -o RULES           write the rule file there (default: stdout)\n"
	"\n"
	"The rule file carries its evidence in comments and ends with a report;\n"
	"a summary goes to stderr.\n"
	"exit: 0 every pair is reproduced exactly by the learned rules, 1 some are\n"
	"      not, 2 usage or input error\n";

/* ---- small tools ------------------------------------------------------ */

struct arena_block {
	struct arena_block *next;
	char data[];
};

struct arena {
	struct arena_block *head;
	size_t used, cap;
};

static void *arena_alloc(struct arena *a, size_t n)
{
	n = (n + 15) & ~(size_t)15;
	if (!a->head || a->used + n > a->cap) {
		size_t cap = n > 65536 ? n : 65536;
		struct arena_block *b = malloc(sizeof(*b) + cap);

		if (!b) {
			fputs("webhook-bridge learn: out of memory\n", stderr);
			exit(2);
		}
		b->next = a->head;
		a->head = b;
		a->used = 0;
		a->cap = cap;
	}
	a->used += n;
	return a->head->data + a->used - n;
}

static char *arena_strndup(struct arena *a, const char *s, size_t n)
{
	char *p = arena_alloc(a, n + 1);

	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

static char *arena_printf(struct arena *a, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static char *arena_printf(struct arena *a, const char *fmt, ...)
{
	va_list ap;
	char small[256];
	int n;
	char *p;

	va_start(ap, fmt);
	n = vsnprintf(small, sizeof(small), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	p = arena_alloc(a, (size_t)n + 1);
	if ((size_t)n < sizeof(small)) {
		memcpy(p, small, (size_t)n + 1);
		return p;
	}
	va_start(ap, fmt);
	vsnprintf(p, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return p;
}

static void arena_free(struct arena *a)
{
	while (a->head) {
		struct arena_block *b = a->head;

		a->head = b->next;
		free(b);
	}
}

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (!p) {
		fputs("webhook-bridge learn: out of memory\n", stderr);
		exit(2);
	}
	return p;
}

static void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (!p) {
		fputs("webhook-bridge learn: out of memory\n", stderr);
		exit(2);
	}
	return p;
}

/* grow_array (buf.h), or the end of the command when out of memory. */
static void *xgrow(void *p, size_t *cap, size_t need, size_t size, size_t first)
{
	p = grow_array(p, cap, need, size, first);
	if (!p) {
		fputs("webhook-bridge learn: out of memory\n", stderr);
		exit(2);
	}
	return p;
}

/* Text is built in struct buf (buf.h).  learn's buffers start zeroed, often
 * as members of calloc'd structs, and grow with inputs that were read under
 * their own limits: a zeroed buffer is unbounded here, and running out of
 * memory ends the command. */
static struct buf *sb(struct buf *b)
{
	if (!b->max && !b->cap)
		b->max = SIZE_MAX;
	return b;
}

static void sb_check(bool ok)
{
	if (!ok) {
		fputs("webhook-bridge learn: out of memory\n", stderr);
		exit(2);
	}
}

static void sb_add(struct buf *b, const char *s, size_t n)
{
	sb_check(buf_add(sb(b), s, n));
}

#define sb_printf(b, ...) sb_check(buf_printf(sb(b), __VA_ARGS__))

static void sb_puts(struct buf *b, const char *s)
{
	sb_add(b, s, strlen(s));
}

/* A libconfig string literal: quote, backslash and control bytes escaped. */
static void sb_quoted(struct buf *b, const char *s)
{
	sb_puts(b, "\"");
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;

		if (c == '"' || c == '\\') {
			char e[2] = { '\\', (char)c };

			sb_add(b, e, 2);
		} else if (c < 0x20) {
			sb_printf(b, "\\x%02x", c);
		} else {
			sb_add(b, s, 1);
		}
	}
	sb_puts(b, "\"");
}

/* Interned strings: index by name, open addressing. */
struct intern {
	char **names;
	size_t n, cap;
	long *slots;
	size_t n_slots;
};

static uint64_t str_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

static long intern_find(const struct intern *t, const char *s)
{
	size_t i;

	if (!t->n_slots)
		return -1;
	for (i = str_hash(s) & (t->n_slots - 1); t->slots[i] >= 0; i = (i + 1) & (t->n_slots - 1))
		if (strcmp(t->names[t->slots[i]], s) == 0)
			return t->slots[i];
	return -1;
}

static long intern_add(struct intern *t, struct arena *a, const char *s)
{
	long id = intern_find(t, s);
	size_t i;

	if (id >= 0)
		return id;
	if ((t->n + 1) * 2 > t->n_slots) {
		size_t ns = t->n_slots ? t->n_slots * 2 : 256;

		free(t->slots);
		t->slots = xcalloc(ns, sizeof(long));
		for (i = 0; i < ns; i++)
			t->slots[i] = -1;
		t->n_slots = ns;
		for (size_t k = 0; k < t->n; k++) {
			for (i = str_hash(t->names[k]) & (ns - 1); t->slots[i] >= 0;
			     i = (i + 1) & (ns - 1))
				;
			t->slots[i] = (long)k;
		}
	}
	t->names = xgrow(t->names, &t->cap, t->n + 1, sizeof(char *), 64);
	t->names[t->n] = arena_strndup(a, s, strlen(s));
	for (i = str_hash(s) & (t->n_slots - 1); t->slots[i] >= 0; i = (i + 1) & (t->n_slots - 1))
		;
	t->slots[i] = (long)t->n;
	return (long)t->n++;
}

static void intern_free(struct intern *t)
{
	free(t->names);
	free(t->slots);
	memset(t, 0, sizeof(*t));
}

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

static struct tally_cell *tally_bump(struct tally *t, const char *from, const char *to,
				     const char *example, size_t max)
{
	for (size_t i = 0; i < t->n; i++) {
		struct tally_cell *c = &t->cells[i];

		if (((!from && !c->from) || (from && c->from && strcmp(from, c->from) == 0)) &&
		    strcmp(to, c->to) == 0) {
			c->count++;
			return c;
		}
	}
	if (max && t->n >= max) {
		t->overflow = 1;
		return NULL;
	}
	t->cells = xgrow(t->cells, &t->cap, t->n + 1, sizeof(*t->cells), 8);
	t->cells[t->n] = (struct tally_cell){ from, to, 1, example };
	return &t->cells[t->n++];
}

/* The most common `to` (optionally among cells whose `from` is from). */
static const struct tally_cell *tally_top(const struct tally *t, const char *from, long *ret_total)
{
	const struct tally_cell *best = NULL;
	long total = 0;

	for (size_t i = 0; i < t->n; i++) {
		const struct tally_cell *c = &t->cells[i];

		if (from && (!c->from || strcmp(c->from, from) != 0))
			continue;
		total += c->count;
		if (!best || c->count > best->count)
			best = c;
	}
	if (ret_total)
		*ret_total = total;
	return best;
}

static void tally_free(struct tally *t)
{
	free(t->cells);
	memset(t, 0, sizeof(*t));
}

/* ---- input ------------------------------------------------------------ */

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

static void docset_problem(struct docset *ds, const char *where, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void docset_problem(struct docset *ds, const char *where, const char *fmt, ...)
{
	va_list ap;
	char msg[512];

	ds->invalid++;
	if (ds->invalid > 20)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	sb_printf(&ds->problems, "%s: %s\n", where, msg);
}

static yajl_val obj_get(yajl_val o, const char *key)
{
	if (!o || o->type != yajl_t_object)
		return NULL;
	for (size_t i = 0; i < o->u.object.len; i++)
		if (strcmp(o->u.object.keys[i], key) == 0)
			return o->u.object.values[i];
	return NULL;
}

/* The text of a scalar (numbers exactly as written), NULL for null,
 * objects and arrays. */
static const char *scalar_text(yajl_val v)
{
	if (!v)
		return NULL;
	switch (v->type) {
	case yajl_t_string: return v->u.string;
	case yajl_t_number: return v->u.number.r;
	case yajl_t_true: return "true";
	case yajl_t_false: return "false";
	default: return NULL;
	}
}

/* One JSON text (a line or a whole file) into the set.  A capture line
 * ({"time":..., "body":{...}}) gives its body. */
static void docset_add_text(struct docset *ds, struct arena *a, char *text, size_t len,
			    const char *where)
{
	char err[256];
	yajl_val tree, body;

	while (len && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' '))
		text[--len] = '\0';
	if (len == 0)
		return;
	if (strlen(text) != len) {
		docset_problem(ds, where, "embedded NUL byte");
		return;
	}
	if (v1_json_depth(text, len) > LEARN_MAX_DEPTH) {
		docset_problem(ds, where, "nested deeper than %d", LEARN_MAX_DEPTH);
		return;
	}
	err[0] = '\0';
	tree = yajl_tree_parse(text, err, sizeof(err));
	if (!tree || tree->type != yajl_t_object) {
		char *nl = strchr(err, '\n');

		if (nl)
			*nl = '\0';
		docset_problem(ds, where, "%s", tree ? "not a JSON object" : err);
		yajl_tree_free(tree);
		return;
	}
	body = obj_get(tree, "body");
	if (obj_get(tree, "time") && (body || obj_get(tree, "invalid"))) {
		if (!body || body->type != yajl_t_object) {
			docset_problem(ds, where, "capture line without a body (invalid post)");
			yajl_tree_free(tree);
			return;
		}
	} else {
		body = tree;
	}
	ds->docs = xgrow(ds->docs, &ds->cap, ds->n + 1, sizeof(*ds->docs), 1024);
	ds->docs[ds->n].tree = tree;
	/* Only the v2 side needs the text, and only of bodies read whole:
	 * capture bodies are compared through their tree. */
	ds->docs[ds->n].raw = body == tree ? arena_strndup(a, text, len) : NULL;
	ds->docs[ds->n].raw_len = len;
	ds->docs[ds->n].where = arena_strndup(a, where, strlen(where));
	ds->n++;
}

static int has_suffix(const char *s, const char *suf)
{
	size_t n = strlen(s), m = strlen(suf);

	return n >= m && strcmp(s + n - m, suf) == 0;
}

static int file_slurp(const char *path, char **ret, size_t *ret_len)
{
	FILE *f = fopen(path, "rb");
	char *buf = NULL;
	size_t len = 0, cap = 0, n;

	if (!f)
		return -1;
	for (;;) {
		if (len + 65536 + 1 > cap) {
			cap = (len + 65536 + 1) * 2;
			buf = xrealloc(buf, cap);
		}
		n = fread(buf + len, 1, cap - len - 1, f);
		len += n;
		if (n == 0 || len > LEARN_MAX_LINE * 4u)
			break;
	}
	buf[len] = '\0';
	fclose(f);
	*ret = buf;
	*ret_len = len;
	return 0;
}

static int name_cmp(const void *x, const void *y)
{
	return strcmp(*(char *const *)x, *(char *const *)y);
}

static int docset_add_path(struct docset *ds, struct arena *a, const char *path, int depth)
{
	struct stat st;
	char *buf;
	size_t len;
	char where[4096];

	if (stat(path, &st) < 0) {
		fprintf(stderr, "webhook-bridge learn: %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (S_ISDIR(st.st_mode)) {
		DIR *d = opendir(path);
		struct dirent *e;
		char **names = NULL;
		size_t n = 0;
		int rc = 0;

		if (!d || depth > 8) {
			fprintf(stderr, "webhook-bridge learn: %s: cannot read the folder\n", path);
			if (d)
				closedir(d);
			return -1;
		}
		while ((e = readdir(d)) != NULL) {
			if (!has_suffix(e->d_name, ".json") && !has_suffix(e->d_name, ".ndjson") &&
			    !has_suffix(e->d_name, ".jsonl"))
				continue;
			names = xrealloc(names, (n + 1) * sizeof(char *));
			names[n++] = arena_printf(a, "%s/%s", path, e->d_name);
		}
		closedir(d);
		qsort(names, n, sizeof(char *), name_cmp);
		for (size_t i = 0; i < n && rc == 0; i++)
			rc = docset_add_path(ds, a, names[i], depth + 1);
		free(names);
		return rc;
	}
	if (file_slurp(path, &buf, &len) < 0) {
		fprintf(stderr, "webhook-bridge learn: %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (has_suffix(path, ".json")) {
		/* One document per file (fixtures may be pretty-printed). */
		snprintf(where, sizeof(where), "%s", path);
		docset_add_text(ds, a, buf, len, where);
	} else {
		size_t line = 0;
		char *p = buf, *end = buf + len;

		while (p < end) {
			char *nl = memchr(p, '\n', (size_t)(end - p));
			size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);

			line++;
			p[n] = '\0';
			snprintf(where, sizeof(where), "%s:%zu", path, line);
			docset_add_text(ds, a, p, n, where);
			p += n + 1;
		}
	}
	free(buf);
	return 0;
}

static void docset_free(struct docset *ds)
{
	for (size_t i = 0; i < ds->n; i++)
		yajl_tree_free(ds->docs[i].tree);
	free(ds->docs);
	free(ds->problems.s);
	memset(ds, 0, sizeof(*ds));
}

static yajl_val doc_body(const struct doc *d)
{
	yajl_val b = obj_get(d->tree, "body");

	return b && b->type == yajl_t_object && obj_get(d->tree, "time") ? b : d->tree;
}

/* ---- the v2 side: targets and entries -------------------------------- */

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
#define N_SEP   (sizeof(separators) / sizeof(separators[0]))
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

/* ---- inference state --------------------------------------------------- */

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

static int target_index(const struct learn *L, const char *path)
{
	for (int i = 0; i < N_TARGETS; i++)
		if (strcmp(L->target_names[i], path) == 0)
			return i;
	return -1;
}

static int target_is_integer(int t)
{
	return t == 8 || t == 15;
}

static struct var *var_get(struct learn *L, enum section sec, const char *name)
{
	long id = intern_add(&L->vars, &L->a, name);

	if ((size_t)id >= L->var_cap) {
		size_t old = L->var_cap;

		L->var = xgrow(L->var, &L->var_cap, (size_t)id + 1, sizeof(*L->var), 64);
		memset(L->var + old, 0, (L->var_cap - old) * sizeof(*L->var));
	}
	if (!L->var[id].name) {
		L->var[id].name = L->vars.names[id];
		L->var[id].sec = sec;
		L->var[id].first_order = id;
	}
	return &L->var[id];
}

/* Flatten one v2 body into the pair: target scalars, entries, and leaves
 * the rule language cannot write. */
static void v2_walk(struct learn *L, struct pair *p, yajl_val v, char *path, size_t plen)
{
	if (!v)
		return;
	if (v->type == yajl_t_object) {
		for (size_t i = 0; i < v->u.object.len; i++) {
			const char *k = v->u.object.keys[i];
			size_t kl = strlen(k);

			if (plen + kl + 2 >= 512)
				continue;
			if (plen)
				path[plen] = '.';
			memcpy(path + plen + (plen ? 1 : 0), k, kl + 1);
			v2_walk(L, p, v->u.object.values[i], path, plen + kl + (plen ? 1 : 0));
			path[plen] = '\0';
		}
		return;
	}
	if (v->type == yajl_t_array) {
		for (size_t i = 0; i < v->u.array.len; i++) {
			int n = snprintf(path + plen, 512 - plen, "[%zu]", i);

			if (n > 0 && plen + (size_t)n < 512)
				v2_walk(L, p, v->u.array.values[i], path, plen + (size_t)n);
			path[plen] = '\0';
		}
		return;
	}
	int t = target_index(L, path);

	if (t >= 0 && scalar_text(v)) {
		p->tv[t] = scalar_text(v);
		p->tv_number[t] = v->type == yajl_t_number;
	} else {
		tally_bump(&L->extra_paths, NULL, arena_strndup(&L->a, path, plen), p->id, 0);
	}
}

static void v2_entries(struct learn *L, struct pair *p)
{
	size_t n = 0;

	for (int s = 0; s < N_SECTIONS; s++) {
		yajl_val arr = obj_get(p->v2, section_names[s]);

		if (arr && arr->type == yajl_t_array)
			n += arr->u.array.len;
	}
	p->entries = arena_alloc(&L->a, (n ? n : 1) * sizeof(struct entry));
	for (int s = 0; s < N_SECTIONS; s++) {
		yajl_val arr = obj_get(p->v2, section_names[s]);

		if (!arr || arr->type != yajl_t_array)
			continue;
		for (size_t i = 0; i < arr->u.array.len; i++) {
			yajl_val e = arr->u.array.values[i];
			yajl_val var = obj_get(e, "variable");
			struct entry *en;
			yajl_val rs;

			if (!var || var->type != yajl_t_string)
				continue;
			en = &p->entries[p->n_entries++];
			memset(en, 0, sizeof(*en));
			en->var = intern_find(&L->vars, var->u.string);
			if (en->var < 0 || L->var[en->var].sec != (enum section)s)
				en->var = var_get(L, s, var->u.string) - L->var;
			en->obj = e;
			if (s == SEC_OPTINS) {
				en->resp = arena_alloc(&L->a, sizeof(struct response));
				memset(en->resp, 0, sizeof(struct response));
				en->resp->value = scalar_text(obj_get(e, "response"));
				en->n_resp = en->resp->value != NULL;
				continue;
			}
			rs = obj_get(e, "responses");
			if (!rs || rs->type != yajl_t_array)
				continue;
			en->resp = arena_alloc(&L->a,
					       (rs->u.array.len + 1) * sizeof(struct response));
			for (size_t r = 0; r < rs->u.array.len; r++) {
				yajl_val rv = rs->u.array.values[r];
				yajl_val file = obj_get(rv, "file");
				struct response *o = &en->resp[en->n_resp++];

				memset(o, 0, sizeof(*o));
				if (file) {
					en->is_file = 1;
					o->value = scalar_text(obj_get(file, "path"));
					o->file_type = scalar_text(obj_get(file, "type"));
				} else {
					o->value = scalar_text(obj_get(rv, "value"));
				}
				o->label = scalar_text(obj_get(rv, "label"));
				o->score = scalar_text(obj_get(rv, "score"));
				o->correct = scalar_text(obj_get(rv, "isCorrect"));
				if (!o->value)
					o->value = "";
			}
		}
	}
}

/* ---- pairing ------------------------------------------------------------ */

static void ascii_upper(char *s)
{
	for (; *s; s++)
		if (*s >= 'a' && *s <= 'z')
			*s = (char)(*s - 'a' + 'A');
}

/* Pair every v1 body with the v2 body whose id one of its strings spells
 * (case-insensitively).  Ids that occur more than once on a side are paired
 * by state once the state rule is known (pair_by_state). */
struct v2_index {
	struct intern ids; /* upper-cased v2 ids */
	long *first;       /* [ids.n]: index of the only v2 with it, or -2 when several */
	long *count;
	int *taken;
};

static void pairs_build(struct learn *L, struct docset *v1, struct docset *v2, struct v2_index *ix,
			long **ret_v1_match)
{
	long *match = xcalloc(v1->n + 1, sizeof(long));
	char up[512];

	for (size_t i = 0; i < v2->n; i++) {
		const char *id = scalar_text(obj_get(doc_body(&v2->docs[i]), "id"));
		long k;

		if (!id || strlen(id) >= sizeof(up))
			continue;
		snprintf(up, sizeof(up), "%s", id);
		ascii_upper(up);
		k = intern_find(&ix->ids, up);
		if (k < 0) {
			k = intern_add(&ix->ids, &L->a, up);
			ix->first = xrealloc(ix->first, ix->ids.cap * sizeof(long));
			ix->count = xrealloc(ix->count, ix->ids.cap * sizeof(long));
			ix->first[k] = (long)i;
			ix->count[k] = 0;
		}
		ix->count[k]++;
		if (ix->count[k] > 1)
			ix->first[k] = -2;
	}
	ix->taken = xcalloc(v2->n + 1, sizeof(int));
	for (size_t i = 0; i < v1->n; i++) {
		yajl_val b = doc_body(&v1->docs[i]);

		match[i] = -1;
		for (size_t f = 0; f < b->u.object.len; f++) {
			const char *s = scalar_text(b->u.object.values[f]);
			long k;

			if (!s || b->u.object.values[f]->type != yajl_t_string ||
			    strlen(s) >= sizeof(up) || strlen(s) < 4)
				continue;
			snprintf(up, sizeof(up), "%s", s);
			ascii_upper(up);
			k = intern_find(&ix->ids, up);
			if (k < 0)
				continue;
			match[i] = ix->first[k] >= 0 ? ix->first[k] : -2 - k; /* -2-k: several */
			break;
		}
	}
	*ret_v1_match = match;
}

static void pair_add(struct learn *L, const struct doc *v1, const struct doc *v2)
{
	struct pair *p = &L->pairs[L->n_pairs++];
	char path[512];

	memset(p, 0, sizeof(*p));
	p->v1 = doc_body(v1);
	p->v2doc = v2;
	p->v2 = doc_body(v2);
	p->id = scalar_text(obj_get(p->v2, "id"));
	if (!p->id)
		p->id = "?";
	for (size_t f = 0; f < p->v1->u.object.len; f++)
		intern_add(&L->keys, &L->a, p->v1->u.object.keys[f]);
	path[0] = '\0';
	{
		/* Entries are read apart; the walk sees the rest. */
		yajl_val v = p->v2;

		for (size_t i = 0; i < v->u.object.len; i++) {
			const char *k = v->u.object.keys[i];

			if (strcmp(k, "form") == 0 || strcmp(k, "optins") == 0 ||
			    strcmp(k, "questionnaire") == 0)
				continue;
			if (strcmp(k, "campaign") == 0 &&
			    v->u.object.values[i]->type == yajl_t_object) {
				yajl_val c = v->u.object.values[i];

				for (size_t j = 0; j < c->u.object.len; j++) {
					yajl_val th = c->u.object.values[j];

					if (strcmp(c->u.object.keys[j], "themes") == 0 &&
					    th->type == yajl_t_array && th->u.array.len == 0)
						continue;
					snprintf(path, sizeof(path), "campaign.%s",
						 c->u.object.keys[j]);
					v2_walk(L, p, th, path, strlen(path));
				}
				continue;
			}
			snprintf(path, sizeof(path), "%s", k);
			v2_walk(L, p, v->u.object.values[i], path, strlen(path));
		}
	}
	v2_entries(L, p);
}

/* Which keys the pairs of this run have (the run may be a subset). */
static void keys_count(struct learn *L)
{
	free(L->key_used);
	free(L->key_seen);
	L->key_used = xcalloc(L->keys.n, sizeof(long));
	L->key_seen = xcalloc(L->keys.n, sizeof(long));
	for (size_t i = 0; i < L->n_pairs; i++)
		for (size_t k = 0; k < L->keys.n; k++)
			L->key_seen[k] += L->pairs[i].kval[k] &&
					  L->pairs[i].kval[k]->type != yajl_t_null;
}

static void pairs_index_keys(struct learn *L)
{
	for (size_t i = 0; i < L->n_pairs; i++) {
		struct pair *p = &L->pairs[i];

		p->kval = arena_alloc(&L->a, (L->keys.n ? L->keys.n : 1) * sizeof(yajl_val));
		memset(p->kval, 0, (L->keys.n ? L->keys.n : 1) * sizeof(yajl_val));
		for (size_t f = 0; f < p->v1->u.object.len; f++) {
			long k = intern_find(&L->keys, p->v1->u.object.keys[f]);
			yajl_val v = p->v1->u.object.values[f];

			/* null is kept: absent for field rules, "unanswered" for opt-ins. */
			if (k >= 0 && v)
				p->kval[k] = v;
		}
	}
}

/* ---- field rules ---------------------------------------------------------- */

static int looks_utc(const char *s)
{
	return s && strlen(s) == 24 && s[10] == 'T' && s[23] == 'Z' && s[4] == '-';
}

static int looks_datetime(const char *s)
{
	return s && strlen(s) >= 16 && s[4] == '-' && s[7] == '-' &&
	       (s[10] == ' ' || s[10] == 'T') && s[13] == ':';
}

static int conv_agrees(enum conv c, const char *x, const char *v)
{
	char buf[64];
	size_t n;

	switch (c) {
	case CONV_COPY: return strcmp(x, v) == 0;
	case CONV_INTEGER:
		return convert_integer(x, strlen(x), buf, sizeof(buf), NULL) == 0 &&
		       strcmp(buf, v) == 0;
	case CONV_UPPER:
	case CONV_LOWER:
		n = strlen(x);
		if (n != strlen(v) || strcasecmp(x, v) != 0)
			return 0;
		for (size_t i = 0; i < n; i++) {
			char e = x[i];

			if (c == CONV_UPPER && e >= 'a' && e <= 'z')
				e = (char)(e - 'a' + 'A');
			if (c == CONV_LOWER && e >= 'A' && e <= 'Z')
				e = (char)(e - 'A' + 'a');
			if (e != v[i])
				return 0;
		}
		return 1;
	default: return 0;
	}
}

/* The zones of the tz database, loaded once per run on first use. */
struct zones {
	struct tz_zone **z;
	size_t n;
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

static void zones_load(struct zones *Z)
{
	FILE *f;
	char line[512];
	size_t np = sizeof(zone_preferred) / sizeof(zone_preferred[0]);

	Z->loaded = 1;
	for (size_t i = 0; i < np; i++) {
		struct tz_zone *z;

		if (tz_zone_load(zone_preferred[i], &z, NULL) == 0) {
			Z->z = xrealloc(Z->z, (Z->n + 1) * sizeof(*Z->z));
			Z->z[Z->n++] = z;
		}
	}
	f = fopen("/usr/share/zoneinfo/zone1970.tab", "r");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char *save = NULL, *tok, *name;
		int dup = 0;
		struct tz_zone *z;

		if (line[0] == '#')
			continue;
		tok = strtok_r(line, "\t\n", &save);
		tok = tok ? strtok_r(NULL, "\t\n", &save) : NULL;
		name = tok ? strtok_r(NULL, "\t\n", &save) : NULL;
		if (!name)
			continue;
		for (size_t i = 0; i < np; i++)
			dup |= strcmp(zone_preferred[i], name) == 0;
		if (dup || tz_zone_load(name, &z, NULL) < 0)
			continue;
		Z->z = xrealloc(Z->z, (Z->n + 1) * sizeof(*Z->z));
		Z->z[Z->n++] = z;
	}
	fclose(f);
}

static void zones_free(struct zones *Z)
{
	for (size_t i = 0; i < Z->n; i++)
		tz_zone_free(Z->z[i]);
	free(Z->z);
}

static int dt_agrees(const char *x, const char *v, const struct tz_zone *z, enum dt_ambiguous amb,
		     enum dt_gap gap)
{
	char out[32];

	return convert_datetime(x, strlen(x), z, amb, gap, out, sizeof(out), NULL) == 0 &&
	       strcmp(out, v) == 0;
}

/* "YYYY-MM-DD HH:MM:SS" and the like: the shape of one v1 date. */
static const char *dt_shape(struct arena *a, const char *x)
{
	char out[64];
	size_t i;

	for (i = 0; x[i] && i < sizeof(out) - 1; i++) {
		char c = x[i];

		if (c >= '0' && c <= '9') {
			static const char tpl[] = "YYYY-MM-DD?HH:MM:SS";

			c = i < sizeof(tpl) - 1 ? tpl[i] : 'f';
		}
		out[i] = c;
	}
	out[i] = '\0';
	return arena_strndup(a, out, i);
}

/* Identify the zone of a datetime rule: the zones whose conversion
 * reproduces a sample of the pairs, then the best of them on all pairs. */
static void rule_datetime(struct learn *L, struct zones *Z, int t, struct field_rule *r)
{
	long *obs = xcalloc(L->n_pairs, sizeof(long));
	size_t n_obs = 0, step, n_sample;
	long best = -1, best_agree = -1;
	struct buf also = { 0 };
	size_t n_also = 0, n_match = 0;

	if (!Z->loaded)
		zones_load(Z);
	for (size_t i = 0; i < L->n_pairs; i++) {
		const char *x = scalar_text(L->pairs[i].kval[r->key]);

		if (x && looks_datetime(x) && looks_utc(L->pairs[i].tv[t]))
			obs[n_obs++] = (long)i;
	}
	step = n_obs > LEARN_DT_SAMPLE ? n_obs / LEARN_DT_SAMPLE : 1;
	n_sample = (n_obs + step - 1) / step;
	for (size_t zi = 0; zi < Z->n; zi++) {
		long miss = 0, agree = 0;

		for (size_t s = 0; s < n_obs; s += step) {
			const struct pair *p = &L->pairs[obs[s]];

			if (dt_agrees(scalar_text(p->kval[r->key]), p->tv[t], Z->z[zi],
				      DT_AMBIGUOUS_EARLIER, DT_GAP_SHIFT))
				agree++;
			else if (++miss > (long)(n_sample * LEARN_TOLERANCE) + 1)
				break;
		}
		if (miss > (long)(n_sample * LEARN_TOLERANCE) + 1)
			continue;
		n_match++;
		if (agree > best_agree) {
			best = (long)zi;
			best_agree = agree;
			also.len = 0;
			n_also = 0;
		} else if (agree == best_agree && n_also < 6) {
			sb_printf(&also, "%s%s", n_also ? ", " : "", tz_zone_name(Z->z[zi]));
			n_also++;
		}
	}
	if (best < 0) {
		r->kind = 0;
		free(obs);
		free(also.s);
		return;
	}
	if (n_match == Z->n) {
		/* Every zone agrees: the dates carry their own offsets. */
		best = 0;
		n_also = 0;
	}
	{
		const struct tz_zone *z = Z->z[best];
		long ag[2][2] = { { 0, 0 }, { 0, 0 } };

		for (size_t s = 0; s < n_obs; s++) {
			const struct pair *p = &L->pairs[obs[s]];
			const char *x = scalar_text(p->kval[r->key]);

			for (int a = 0; a < 2; a++)
				for (int g = 0; g < 2; g++)
					ag[a][g] += dt_agrees(x, p->tv[t], z,
							      a ? DT_AMBIGUOUS_LATER
								: DT_AMBIGUOUS_EARLIER,
							      g ? DT_GAP_SHIFT : DT_GAP_REJECT);
		}
		r->ambiguous_later = ag[1][0] > ag[0][0];
		r->gap_shift = ag[r->ambiguous_later][1] > ag[r->ambiguous_later][0];
		r->zone = tz_zone_name(z);
		r->tz = z;
		r->zone_also = n_also ? arena_strndup(&L->a, also.s, also.len) : NULL;
		r->dt_format = n_obs ? dt_shape(&L->a, scalar_text(L->pairs[obs[0]].kval[r->key]))
				     : NULL;
	}
	free(obs);
	free(also.s);
}

static void rule_example(const char **ex, size_t *n, const char *id)
{
	if (*n < LEARN_EXAMPLES)
		ex[(*n)++] = id;
}

/* Distinct `from` values of a tally. */
static long n_from(const struct tally *t)
{
	long n = 0;

	for (size_t c = 0; c < t->n; c++) {
		int seen = 0;

		for (size_t e = 0; e < c && !seen; e++)
			seen = strcmp(t->cells[e].from, t->cells[c].from) == 0;
		n += !seen;
	}
	return n;
}

/* Does rule r produce value v (NULL: nothing) for v1 value x (NULL: absent)? */
static int rule_produces(const struct learn *L, const struct field_rule *r, int t, const char *x,
			 const char *v, const struct zones *Z)
{
	const struct tally_cell *c;

	(void)L;
	if (!x)
		return r->def ? (v && strcmp(v, r->def) == 0) : v == NULL;
	if (!v)
		return 0;
	switch (r->kind) {
	case 1:
		if (r->conv == CONV_DATETIME)
			return r->tz && dt_agrees(x, v, r->tz,
						  r->ambiguous_later ? DT_AMBIGUOUS_LATER
								     : DT_AMBIGUOUS_EARLIER,
						  r->gap_shift ? DT_GAP_SHIFT : DT_GAP_REJECT);
		return conv_agrees(r->conv, x, v) ||
		       (target_is_integer(t) && conv_agrees(CONV_INTEGER, x, v));
	case 2:
		c = tally_top(&r->map, x, NULL);
		return c ? strcmp(c->to, v) == 0 : strcmp(x, v) == 0;
	default: return 0;
	}
}

/* The default of a rule: the v2 value of the pairs without its key. */
static void rule_default(struct learn *L, int t, struct field_rule *r)
{
	struct tally tl = { 0 };
	long without = 0;
	const struct tally_cell *top;

	for (size_t i = 0; i < L->n_pairs; i++) {
		const struct pair *p = &L->pairs[i];

		if (scalar_text(p->kval[r->key]))
			continue;
		without++;
		if (p->tv[t])
			tally_bump(&tl, NULL, p->tv[t], p->id, 0);
	}
	top = tally_top(&tl, NULL, NULL);
	if (top && top->count >= L->min_support && top->count >= without * (1 - LEARN_TOLERANCE)) {
		r->def = top->to;
		r->def_count = top->count;
	}
	tally_free(&tl);
}

static void learn_fields(struct learn *L, struct zones *Z)
{
	size_t nk = L->keys.n;
	long *agree = xcalloc(nk * N_CONV, sizeof(long));
	long *with_key = xcalloc(nk, sizeof(long));

	for (int t = 0; t < N_TARGETS; t++) {
		struct field_rule *r = &L->rule[t];
		long present = 0;
		long best = -1, best_c = 0, best_agree = 0;

		memset(agree, 0, nk * N_CONV * sizeof(long));
		memset(with_key, 0, nk * sizeof(long));
		for (size_t i = 0; i < L->n_pairs; i++) {
			const struct pair *p = &L->pairs[i];
			const char *v = p->tv[t];

			present += v != NULL;
			for (size_t k = 0; k < nk; k++) {
				const char *x = scalar_text(p->kval[k]);

				if (!x)
					continue;
				with_key[k]++;
				if (!v || (p->tv_number[t] && !target_is_integer(t)))
					continue;
				if (target_is_integer(t)) {
					agree[k * N_CONV + CONV_INTEGER] += conv_agrees(
						CONV_INTEGER, x, v);
					continue;
				}
				if (x[0] != v[0] && ((x[0] | 0x20) != (v[0] | 0x20))) {
					agree[k * N_CONV + CONV_DATETIME] += looks_utc(v) &&
									     looks_datetime(x);
					continue;
				}
				if (strcmp(x, v) == 0)
					agree[k * N_CONV + CONV_COPY]++;
				else if (conv_agrees(CONV_UPPER, x, v))
					agree[k * N_CONV + CONV_UPPER]++;
				if (conv_agrees(CONV_LOWER, x, v) && strcmp(x, v) != 0)
					agree[k * N_CONV + CONV_LOWER]++;
				if (looks_utc(v) && looks_datetime(x))
					agree[k * N_CONV + CONV_DATETIME]++;
			}
		}
		if (!present)
			continue;
		/* A value already in the target's case agrees with copy; upper
		 * and lower count the pairs they change plus those. */
		for (size_t k = 0; k < nk; k++) {
			agree[k * N_CONV + CONV_UPPER] += agree[k * N_CONV + CONV_UPPER]
								  ? agree[k * N_CONV + CONV_COPY]
								  : 0;
			agree[k * N_CONV + CONV_LOWER] += agree[k * N_CONV + CONV_LOWER]
								  ? agree[k * N_CONV + CONV_COPY]
								  : 0;
			for (int c = 0; c < N_CONV; c++) {
				long a = agree[k * N_CONV + c];

				if (a < L->min_support || a < with_key[k] * (1 - LEARN_TOLERANCE))
					continue;
				if (c == CONV_DATETIME) {
					/* Shape agreement only: count what the zone reproduces. */
					struct field_rule d = { .kind = 1,
								.key = (long)k,
								.conv = c };

					rule_datetime(L, Z, t, &d);
					a = 0;
					for (size_t i = 0; d.kind && i < L->n_pairs; i++)
						a += scalar_text(L->pairs[i].kval[k]) &&
						     rule_produces(L, &d, t,
								   scalar_text(L->pairs[i].kval[k]),
								   L->pairs[i].tv[t], Z);
					if (a < L->min_support ||
					    a < with_key[k] * (1 - LEARN_TOLERANCE))
						continue;
				}
				if (a > best_agree) {
					best = (long)k;
					best_c = c;
					best_agree = a;
				}
			}
		}
		if (best >= 0) {
			r->kind = 1;
			r->key = best;
			r->conv = (enum conv)best_c;
			if (r->conv == CONV_DATETIME)
				rule_datetime(L, Z, t, r);
		}
		if (!r->kind) {
			/* A value map: the key whose values decide the target.  It must
			 * explain more pairs than one constant does by more than the
			 * entries it takes, or a few edited pairs would turn a constant
			 * into a map over some unrelated key. */
			long bk = -1, bsup = 0, const_sup = 0;
			struct tally ct = { 0 };

			for (size_t i = 0; i < L->n_pairs; i++)
				if (L->pairs[i].tv[t])
					tally_bump(&ct, NULL, L->pairs[i].tv[t], NULL, 0);
			if (tally_top(&ct, NULL, NULL))
				const_sup = tally_top(&ct, NULL, NULL)->count;
			tally_free(&ct);

			for (size_t k = 0; k < nk; k++) {
				struct tally tl = { 0 };
				long sup = 0, tot = 0, distinct_to = 0;

				if (with_key[k] < L->min_support)
					continue;
				for (size_t i = 0; i < L->n_pairs && !tl.overflow; i++) {
					const struct pair *p = &L->pairs[i];
					const char *x = scalar_text(p->kval[k]);

					if (x && p->tv[t])
						tally_bump(&tl, x, p->tv[t], p->id, LEARN_MAX_ENUM);
				}
				if (!tl.overflow) {
					for (size_t c = 0; c < tl.n; c++) {
						long total;
						const struct tally_cell *top = tally_top(
							&tl, tl.cells[c].from, &total);

						tot += tl.cells[c].count;
						if (top == &tl.cells[c]) {
							int dup = 0;

							sup += top->count;
							for (size_t e = 0; e < c; e++)
								dup |= tally_top(&tl,
										 tl.cells[e].from,
										 NULL) ==
									       &tl.cells[e] &&
								       strcmp(tl.cells[e].to,
									      top->to) == 0;
							distinct_to += !dup;
						}
					}
				}
				if (!tl.overflow && distinct_to >= 2 && sup >= L->min_support &&
				    sup - const_sup > n_from(&tl) &&
				    sup >= with_key[k] * (1 - LEARN_TOLERANCE) && sup > bsup) {
					bk = (long)k;
					bsup = sup;
					tally_free(&r->map);
					r->map = tl;
				} else {
					tally_free(&tl);
				}
				(void)tot;
			}
			if (bk >= 0) {
				r->kind = 2;
				r->key = bk;
			}
		}
		if (!r->kind) {
			struct tally tl = { 0 };
			const struct tally_cell *top;

			for (size_t i = 0; i < L->n_pairs; i++)
				if (L->pairs[i].tv[t])
					tally_bump(&tl, NULL, L->pairs[i].tv[t], L->pairs[i].id, 0);
			top = tally_top(&tl, NULL, NULL);
			if (top && top->count >= L->min_support &&
			    top->count >= (long)(L->n_pairs * (1 - LEARN_TOLERANCE))) {
				r->kind = 3;
				r->value = top->to;
				r->agree = top->count;
				r->seen = (long)L->n_pairs;
				for (size_t i = 0; i < L->n_pairs; i++)
					if (!L->pairs[i].tv[t] ||
					    strcmp(L->pairs[i].tv[t], top->to)) {
						r->against++;
						rule_example(r->examples, &r->n_examples,
							     L->pairs[i].id);
					}
			}
			tally_free(&tl);
			continue;
		}
		if (r->kind == 2) {
			/* Keep the majority per v1 value; identity entries go when the
			 * map keeps unknown values. */
			int identity = 0;

			for (size_t c = 0; c < r->map.n; c++)
				if (tally_top(&r->map, r->map.cells[c].from, NULL) ==
					    &r->map.cells[c] &&
				    strcmp(r->map.cells[c].from, r->map.cells[c].to) == 0)
					identity = 1;
			r->unknown_reject = !identity;
		}
		L->key_used[r->key]++;
		rule_default(L, t, r);
		for (size_t i = 0; i < L->n_pairs; i++) {
			const struct pair *p = &L->pairs[i];
			const char *x = scalar_text(p->kval[r->key]);

			if (!x && !r->def)
				continue;
			r->seen++;
			if (rule_produces(L, r, t, x, p->tv[t], Z)) {
				r->agree++;
			} else {
				r->against++;
				rule_example(r->examples, &r->n_examples, p->id);
			}
		}
	}
	free(agree);
	free(with_key);
}

/* ---- variables ------------------------------------------------------------- */

/* The v1 value as a list of response values under a case conversion and a
 * separator; returns the count written into out (at most cap). */
static size_t v1_values(yajl_val x, int vconv, char (*out)[256], size_t cap)
{
	int c = vconv / (int)N_SEP;
	const char *sep = separators[vconv % (int)N_SEP];
	size_t n = 0;
	const char *items[64];
	size_t ni = 0;

	if (x->type == yajl_t_array) {
		for (size_t i = 0; i < x->u.array.len && ni < 64; i++)
			if (scalar_text(x->u.array.values[i]))
				items[ni++] = scalar_text(x->u.array.values[i]);
	} else if (scalar_text(x)) {
		items[ni++] = scalar_text(x);
	}
	for (size_t i = 0; i < ni && n < cap; i++) {
		const char *s = items[i];

		if (!sep) {
			if (strlen(s) >= 256)
				return SIZE_MAX;
			snprintf(out[n++], 256, "%s", s);
		} else {
			const char *p = s;

			for (;;) {
				const char *e = strstr(p, sep);
				const char *end = e ? e : p + strlen(p);
				const char *b = p;

				while (b < end &&
				       (*b == ' ' || *b == '\t' || *b == '\r' || *b == '\n'))
					b++;
				while (end > b && (end[-1] == ' ' || end[-1] == '\t' ||
						   end[-1] == '\r' || end[-1] == '\n'))
					end--;
				if (end > b && n < cap) {
					if ((size_t)(end - b) >= 256)
						return SIZE_MAX;
					memcpy(out[n], b, (size_t)(end - b));
					out[n][end - b] = '\0';
					n++;
				}
				if (!e)
					break;
				p = e + strlen(sep);
			}
		}
	}
	for (size_t i = 0; i < n; i++)
		for (char *q = out[i]; *q; q++) {
			if (c == 1 && *q >= 'a' && *q <= 'z')
				*q = (char)(*q - 'a' + 'A');
			if (c == 2 && *q >= 'A' && *q <= 'Z')
				*q = (char)(*q - 'A' + 'a');
		}
	return n;
}

static int list_agrees(yajl_val x, int vconv, const struct entry *e)
{
	char vals[64][256];
	size_t n = v1_values(x, vconv, vals, 64);

	if (n != e->n_resp)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (strcmp(vals[i], e->resp[i].value) != 0)
			return 0;
	return 1;
}

/* An opt-in value the engine normalises itself: "1", "0" or "". */
static const char *optin_norm(yajl_val x)
{
	const char *s;

	if (!x || x->type == yajl_t_null)
		return "";
	s = scalar_text(x);
	if (!s)
		return NULL;
	if (strcmp(s, "1") == 0 || strcmp(s, "true") == 0)
		return "1";
	if (strcmp(s, "0") == 0 || strcmp(s, "false") == 0)
		return "0";
	if (strcmp(s, "") == 0)
		return "";
	return NULL;
}

static const char *bool_norm(yajl_val x)
{
	const char *s = optin_norm(x);

	return s && *s ? (*s == '1' ? "true" : "false") : NULL;
}

static int int_equal(yajl_val x, const char *v)
{
	const char *s = scalar_text(x);

	return s && v && conv_agrees(CONV_INTEGER, s, v);
}

/* A v2 entry the `unmapped = "form"` policy wrote: label and variable are
 * the v1 key, nothing else but the responses. */
static int entry_generic(const struct learn *L, const struct pair *p, const struct entry *e)
{
	const char *label = scalar_text(obj_get(e->obj, "label"));
	const struct var *v = &L->var[e->var];
	long k;

	if (v->sec != SEC_FORM || !label || strcmp(label, v->name) != 0 ||
	    e->obj->u.object.len != 3 || (k = intern_find(&L->keys, v->name)) < 0)
		return 0;
	return !p->kval[k] || list_agrees(p->kval[k], 0, e) || e->n_resp == 0;
}

/* Render an opt-in categories array as rule text. */
static void categories_text(struct buf *b, yajl_val cats);

static void category_text(struct buf *b, yajl_val c)
{
	static const char *const names[][2] = { { "id", "id" },
						{ "label", "label" },
						{ "technicalName", "technical_name" } };

	sb_puts(b, "{ ");
	for (size_t i = 0; i < 3; i++) {
		yajl_val v = obj_get(c, names[i][0]);

		if (!v)
			continue;
		sb_printf(b, "%s = ", names[i][1]);
		if (v->type == yajl_t_number)
			sb_printf(b, "%s", v->u.number.r);
		else
			sb_quoted(b, scalar_text(v) ? scalar_text(v) : "");
		sb_puts(b, "; ");
	}
	if (obj_get(c, "parent")) {
		sb_puts(b, "parent = ");
		category_text(b, obj_get(c, "parent"));
		sb_puts(b, "; ");
	}
	sb_puts(b, "}");
}

static void categories_text(struct buf *b, yajl_val cats)
{
	sb_puts(b, "( ");
	for (size_t i = 0; cats && cats->type == yajl_t_array && i < cats->u.array.len; i++) {
		if (i)
			sb_puts(b, ", ");
		category_text(b, cats->u.array.values[i]);
	}
	sb_puts(b, " )");
}

static void var_attr(struct learn *L, struct tally *t, yajl_val v, const char *id)
{
	const char *s = scalar_text(v);

	tally_bump(t, NULL, s ? arena_strndup(&L->a, s, strlen(s)) : "", id, 0);
}

static long best_key(const long *agree, size_t nk, long min, long seen)
{
	long best = -1, ba = 0;

	for (size_t k = 0; k < nk; k++)
		if (agree[k] >= min && agree[k] >= seen * (1 - LEARN_TOLERANCE) && agree[k] > ba) {
			best = (long)k;
			ba = agree[k];
		}
	return best;
}

static void learn_variables(struct learn *L)
{
	size_t nk = L->keys.n;
	long *orderc;
	size_t nv = L->vars.n;

	for (size_t v = 0; v < nv; v++) {
		struct var *V = &L->var[v];

		V->agree = xcalloc(nk * N_VCONV, sizeof(long));
		V->score_agree = xcalloc(nk, sizeof(long));
		V->max_agree = xcalloc(nk, sizeof(long));
		V->rscore_agree = xcalloc(nk, sizeof(long));
		V->correct_agree = xcalloc(nk, sizeof(long));
		V->key = V->score_key = V->max_key = V->rscore_key = V->correct_key = -1;
	}
	for (size_t i = 0; i < L->n_pairs; i++) {
		const struct pair *p = &L->pairs[i];

		for (size_t j = 0; j < p->n_entries; j++) {
			const struct entry *e = &p->entries[j];
			struct var *V = &L->var[e->var];
			const char *first = e->n_resp ? e->resp[0].value : NULL;

			V->seen++;
			if (entry_generic(L, p, e)) {
				V->generic++;
				continue;
			}
			var_attr(L, &V->id, obj_get(e->obj, "id"), p->id);
			var_attr(L, &V->label, obj_get(e->obj, "label"), p->id);
			var_attr(L, &V->type, obj_get(e->obj, "type"), p->id);
			var_attr(L, &V->description, obj_get(e->obj, "description"), p->id);
			if (V->sec == SEC_OPTINS) {
				struct buf b = { 0 };

				if (obj_get(e->obj, "categories") &&
				    obj_get(e->obj, "categories")->u.array.len) {
					categories_text(&b, obj_get(e->obj, "categories"));
					tally_bump(&V->categories, NULL,
						   arena_strndup(&L->a, b.s, b.len), p->id, 0);
				} else {
					tally_bump(&V->categories, NULL, "", p->id, 0);
				}
				free(b.s);
			}
			if (V->sec == SEC_QUESTIONNAIRE) {
				var_attr(L, &V->max_score, obj_get(e->obj, "maxScore"), p->id);
				V->n_score += obj_get(e->obj, "score") != NULL;
				V->n_max += obj_get(e->obj, "maxScore") != NULL;
			}
			V->n_file += e->is_file;
			for (size_t r = 0; r < e->n_resp; r++) {
				if (e->resp[r].label) {
					V->n_labeled++;
					tally_bump(&V->choices, e->resp[r].value, e->resp[r].label,
						   p->id, 0);
				} else if (V->sec == SEC_FORM) {
					V->n_unlabeled++;
				}
			}
			if (e->n_resp) {
				V->n_rscore += e->resp[0].score != NULL;
				V->n_correct += e->resp[0].correct != NULL;
			}
			for (size_t k = 0; k < nk; k++) {
				yajl_val x = p->kval[k];

				if (!x)
					continue;
				if (V->sec == SEC_OPTINS) {
					const char *nv1 = optin_norm(x);

					if (first && nv1 && strcmp(nv1, first) == 0)
						V->agree[k * N_VCONV]++;
					continue;
				}
				if (V->sec == SEC_QUESTIONNAIRE) {
					V->score_agree[k] += int_equal(
						x, scalar_text(obj_get(e->obj, "score")));
					V->max_agree[k] += int_equal(
						x, scalar_text(obj_get(e->obj, "maxScore")));
					if (e->n_resp) {
						V->rscore_agree[k] += int_equal(x,
										e->resp[0].score);
						V->correct_agree[k] += e->resp[0].correct &&
								       bool_norm(x) &&
								       strcmp(bool_norm(x),
									      e->resp[0].correct) ==
									       0;
					}
				}
				if (first) {
					const char *s =
						x->type == yajl_t_array
							? scalar_text(x->u.array.len
									      ? x->u.array.values[0]
									      : NULL)
							: scalar_text(x);

					if (!s || strncasecmp(s, first, 1) != 0)
						continue;
				} else if (e->n_resp) {
					continue;
				}
				for (int c = 0; c < (int)N_VCONV; c++)
					V->agree[k * N_VCONV + c] += list_agrees(x, c, e);
			}
		}
	}
	/* Keys: the best agreement; separators and case changes only when they
	 * explain more pairs than a plain copy. */
	for (size_t v = 0; v < nv; v++) {
		struct var *V = &L->var[v];
		long ba = 0;
		long nonempty = V->seen - V->generic;

		if (V->generic * 2 > V->seen || nonempty <= 0)
			continue;
		for (size_t k = 0; k < nk; k++) {
			int named = strstr(L->keys.names[k], V->name) != NULL;

			for (int c = 0; c < (int)N_VCONV; c++) {
				long a = V->agree[k * N_VCONV + c];
				int cur_named = V->key >= 0 &&
						strstr(L->keys.names[V->key], V->name);

				/* Ties: the simplest conversion, then the key carrying the
				 * variable's name. */
				if (a > ba || (a == ba && a > 0 && named && !cur_named)) {
					ba = a;
					V->key = (long)k;
					V->vconv = c;
				}
			}
		}
		if (V->sec == SEC_OPTINS) {
			/* Opt-ins in another vocabulary ("yes"/"no"): a value map on the
			 * key that decides the response. */
			long bk = -1, bsup = ba;

			for (size_t k = 0; k < nk; k++) {
				struct tally tl = { 0 };
				long sup = 0, mapped = 0;

				for (size_t i = 0; i < L->n_pairs && !tl.overflow; i++) {
					const struct pair *p = &L->pairs[i];

					for (size_t j = 0; j < p->n_entries; j++)
						if (p->entries[j].var == (long)v && p->kval[k] &&
						    scalar_text(p->kval[k]) && p->entries[j].n_resp)
							tally_bump(&tl, scalar_text(p->kval[k]),
								   p->entries[j].resp[0].value,
								   p->id, LEARN_MAX_OPTION * 3);
				}
				for (size_t c = 0; c < tl.n && !tl.overflow; c++)
					if (tally_top(&tl, tl.cells[c].from, NULL) ==
					    &tl.cells[c]) {
						sup += tl.cells[c].count;
						mapped += optin_norm(&(struct yajl_val_s){
								  .type = yajl_t_string,
								  .u.string = (char *)tl.cells[c]
										      .from }) ==
							  NULL;
					}
				if (!tl.overflow && mapped && sup > bsup) {
					bk = (long)k;
					bsup = sup;
					tally_free(&V->optmap);
					V->optmap = tl;
				} else {
					tally_free(&tl);
				}
			}
			if (bk >= 0) {
				V->key = bk;
				V->vconv = 0;
				ba = bsup;
			}
		}
		V->key_agree = ba;
		if (V->key >= 0) {
			/* A default: the response of the entries whose key is absent. */
			struct tally tl = { 0 };
			long without = 0;
			const struct tally_cell *top;

			for (size_t i = 0; i < L->n_pairs; i++) {
				const struct pair *p = &L->pairs[i];
				yajl_val x = p->kval[V->key];

				if (x && (V->sec == SEC_OPTINS || x->type != yajl_t_null))
					continue;
				without++;
				for (size_t j = 0; j < p->n_entries; j++)
					if (p->entries[j].var == (long)v &&
					    p->entries[j].n_resp == 1)
						tally_bump(&tl, NULL, p->entries[j].resp[0].value,
							   p->id, 0);
			}
			top = tally_top(&tl, NULL, NULL);
			if (top && top->count >= L->min_support &&
			    top->count >= without * (1 - LEARN_TOLERANCE)) {
				V->def = top->to;
				V->def_count = top->count;
			}
			tally_free(&tl);
		}
		if (V->key >= 0) {
			/* The evidence of a key: the entries of pairs that carry it
			 * (the others are its default's). */
			nonempty = 0;
			for (size_t i = 0; i < L->n_pairs; i++) {
				yajl_val x = L->pairs[i].kval[V->key];

				if (!x || (V->sec != SEC_OPTINS && x->type == yajl_t_null))
					continue;
				for (size_t j = 0; j < L->pairs[i].n_entries; j++)
					nonempty += L->pairs[i].entries[j].var == (long)v;
			}
		}
		V->key_seen = nonempty;
		if (V->key >= 0 && ba >= L->min_support && ba >= nonempty * (1 - LEARN_TOLERANCE))
			L->key_used[V->key]++;
		else if (V->key >= 0 && ba < nonempty * (1 - LEARN_TOLERANCE))
			V->key = -2; /* no key explains it: attributes only */
		if (V->sec == SEC_QUESTIONNAIRE) {
			V->score_key = V->n_score ? best_key(V->score_agree, nk, L->min_support,
							     V->n_score)
						  : -1;
			V->max_key = V->n_max ? best_key(V->max_agree, nk, L->min_support, V->n_max)
					      : -1;
			V->rscore_key = V->n_rscore ? best_key(V->rscore_agree, nk, L->min_support,
							       V->n_rscore)
						    : -1;
			V->correct_key = V->n_correct ? best_key(V->correct_agree, nk,
								 L->min_support, V->n_correct)
						      : -1;
			/* A constant maxScore is not a key that happens to agree. */
			if (V->max_key >= 0) {
				long total;
				const struct tally_cell *top = tally_top(&V->max_score, NULL,
									 &total);

				if (top && top->count == total && L->key_seen[V->max_key] &&
				    V->max_key != V->score_key) {
					struct tally vals = { 0 };

					for (size_t i = 0; i < L->n_pairs; i++)
						if (scalar_text(L->pairs[i].kval[V->max_key]))
							tally_bump(
								&vals, NULL,
								scalar_text(
									L->pairs[i]
										.kval[V->max_key]),
								NULL, 2);
					if (vals.n < 2)
						V->max_key = -1;
					tally_free(&vals);
				}
			}
			if (V->score_key >= 0)
				L->key_used[V->score_key]++;
			if (V->max_key >= 0)
				L->key_used[V->max_key]++;
			if (V->rscore_key >= 0)
				L->key_used[V->rscore_key]++;
			if (V->correct_key >= 0)
				L->key_used[V->correct_key]++;
		}
	}
	/* Order: an entry comes after those it follows in most documents. */
	orderc = xcalloc(nv * nv + 1, sizeof(long));
	for (size_t i = 0; i < L->n_pairs; i++) {
		const struct pair *p = &L->pairs[i];

		for (size_t a = 0; a < p->n_entries; a++)
			for (size_t b = a + 1; b < p->n_entries; b++)
				orderc[p->entries[a].var * nv + p->entries[b].var]++;
	}
	{
		long *ord = xcalloc(nv + 1, sizeof(long));
		size_t n = 0;

		for (size_t v = 0; v < nv; v++) {
			size_t pos = n;

			while (pos > 0 &&
			       orderc[v * nv + ord[pos - 1]] > orderc[ord[pos - 1] * nv + v])
				pos--;
			memmove(ord + pos + 1, ord + pos, (n - pos) * sizeof(long));
			ord[pos] = (long)v;
			n++;
		}
		for (size_t i = 0; i < n; i++)
			L->var[ord[i]].order = (int)i;
		free(ord);
	}
	free(orderc);
	/* Conflicts of the key: pairs where it is present and disagrees. */
	for (size_t i = 0; i < L->n_pairs; i++) {
		const struct pair *p = &L->pairs[i];

		for (size_t j = 0; j < p->n_entries; j++) {
			const struct entry *e = &p->entries[j];
			struct var *V = &L->var[e->var];
			yajl_val x;
			int ok;

			if (V->key < 0 || entry_generic(L, p, e))
				continue;
			x = p->kval[V->key];
			if (!x)
				continue;
			if (V->sec == SEC_OPTINS) {
				const char *n = optin_norm(x);
				const struct tally_cell *c = V->optmap.n && scalar_text(x)
								     ? tally_top(&V->optmap,
										 scalar_text(x),
										 NULL)
								     : NULL;

				ok = e->n_resp && ((c && strcmp(c->to, e->resp[0].value) == 0) ||
						   (!c && n && strcmp(n, e->resp[0].value) == 0));
			} else {
				ok = list_agrees(x, V->vconv, e);
			}
			if (!ok)
				rule_example(V->examples, &V->n_examples, p->id);
		}
	}
}

/* ---- output ------------------------------------------------------------------ */

static const char *tally_major(const struct tally *t, long *ret_count, long *ret_total)
{
	const struct tally_cell *c = tally_top(t, NULL, ret_total);

	if (ret_count)
		*ret_count = c ? c->count : 0;
	return c ? c->to : NULL;
}

static void examples_text(struct buf *b, const char *const *ex, size_t n)
{
	for (size_t i = 0; i < n; i++)
		sb_printf(b, "%s%s", i ? ", " : " (e.g. ", ex[i]);
	if (n)
		sb_puts(b, ")");
}

static void emit_value(struct buf *b, const char *name, const char *value, int integer)
{
	sb_printf(b, " %s = ", name);
	if (integer && value[0] && strspn(value, "0123456789") == strlen(value) &&
	    strlen(value) < 10)
		sb_add(b, value, strlen(value));
	else
		sb_quoted(b, value);
	sb_puts(b, ";");
}

static int cell_from_cmp(const void *x, const void *y)
{
	const struct tally_cell *a = x, *b = y;

	return strcmp(a->from, b->from);
}

/* Value tables are written sorted by their v1 value: the same evidence
 * always gives the same text. */
static void tally_sort_from(struct tally *t)
{
	qsort(t->cells, t->n, sizeof(*t->cells), cell_from_cmp);
}

static void emit_pairs(struct buf *b, const char *name, struct tally *t, int majority_only)
{
	int first = 1;

	tally_sort_from(t);
	sb_printf(b, " %s = ( ", name);
	for (size_t c = 0; c < t->n; c++) {
		if (majority_only && tally_top(t, t->cells[c].from, NULL) != &t->cells[c])
			continue;
		if (!first)
			sb_puts(b, ", ");
		first = 0;
		sb_puts(b, "[");
		sb_quoted(b, t->cells[c].from);
		sb_puts(b, ", ");
		sb_quoted(b, t->cells[c].to);
		sb_puts(b, "]");
	}
	sb_puts(b, " );");
}

struct report {
	struct buf conflicts, once, unexplained;
	long n_conflicts;
};

static const char *top_zone(const struct learn *L)
{
	const char *zone = NULL;
	long best = 0;

	for (int t = 0; t < N_TARGETS; t++) {
		long n = 0;

		if (L->rule[t].kind != 1 || L->rule[t].conv != CONV_DATETIME)
			continue;
		for (int u = 0; u < N_TARGETS; u++)
			n += L->rule[u].kind == 1 && L->rule[u].conv == CONV_DATETIME &&
			     strcmp(L->rule[u].zone, L->rule[t].zone) == 0;
		if (n > best) {
			best = n;
			zone = L->rule[t].zone;
		}
	}
	return zone;
}

static void emit_fields(struct learn *L, struct buf *b, struct report *rp, const char *zone,
			int amb_later, int gap_shift)
{
	int any = 0;

	sb_puts(b, "fields = (\n");
	for (int t = 0; t < N_TARGETS; t++) {
		const struct field_rule *r = &L->rule[t];
		const char *tn = L->target_names[t];

		if (!r->kind)
			continue;
		if (any)
			sb_puts(b, ",\n");
		any = 1;
		if (r->kind == 3) {
			sb_printf(b,
				  "\t# %ld/%ld pairs: the same value, no v1 key has it\n\t{ to = ",
				  r->agree, r->seen);
			sb_quoted(b, tn);
			sb_puts(b, ";");
			emit_value(b, "value", r->value, target_is_integer(t));
			sb_puts(b, " }");
		} else {
			sb_printf(b, "\t# %ld/%ld pairs", r->agree, r->seen);
			if (r->def)
				sb_printf(b, "; default in %ld pairs without the key",
					  r->def_count);
			if (r->conv == CONV_DATETIME && r->kind == 1)
				sb_printf(b, "; v1 format \"%s\", zone %s%s%s",
					  r->dt_format ? r->dt_format : "", r->zone,
					  r->zone_also ? " (the dates seen also fit " : "",
					  r->zone_also ? r->zone_also : "");
			if (r->zone_also && r->conv == CONV_DATETIME)
				sb_puts(b, ")");
			sb_printf(b, "\n\t{ to = ");
			sb_quoted(b, tn);
			sb_puts(b, "; from = ");
			sb_quoted(b, L->keys.names[r->key]);
			sb_puts(b, ";");
			if (r->kind == 1 && (r->conv != CONV_COPY || target_is_integer(t)))
				sb_printf(
					b, " convert = \"%s\";",
					conv_names[target_is_integer(t) ? CONV_INTEGER : r->conv]);
			if (r->kind == 1 && r->conv == CONV_DATETIME) {
				if (!zone || strcmp(zone, r->zone) != 0)
					sb_printf(b, " timezone = \"%s\";", r->zone);
				if (r->ambiguous_later != amb_later)
					sb_printf(b, " ambiguous = \"%s\";",
						  r->ambiguous_later ? "later" : "earlier");
				if (r->gap_shift != gap_shift)
					sb_printf(b, " gap = \"%s\";",
						  r->gap_shift ? "shift" : "reject");
			}
			if (r->kind == 2) {
				int first = 1;

				if (r->unknown_reject)
					sb_puts(b, " unknown = \"reject\";");
				sb_puts(b, "\n\t  map = ( ");
				tally_sort_from(&L->rule[t].map);
				for (size_t c = 0; c < r->map.n; c++) {
					const struct tally_cell *cell = &r->map.cells[c];

					if (tally_top(&r->map, cell->from, NULL) != cell ||
					    (!r->unknown_reject &&
					     strcmp(cell->from, cell->to) == 0))
						continue;
					if (!first)
						sb_puts(b, ", ");
					first = 0;
					sb_puts(b, "[");
					sb_quoted(b, cell->from);
					sb_puts(b, ", ");
					sb_quoted(b, cell->to);
					sb_puts(b, "]");
					if (cell->count == 1)
						sb_printf(&rp->once,
							  "#   %s: v1 %s = \"%s\" (%s)\n", tn,
							  L->keys.names[r->key], cell->from,
							  cell->example);
				}
				sb_puts(b, " );");
			}
			if (r->def)
				emit_value(b, "default", r->def, target_is_integer(t));
			sb_puts(b, " }");
		}
		if (r->against) {
			sb_printf(&rp->conflicts, "#   %s <- %s: agrees in %ld pairs, not in %ld",
				  tn, r->kind == 3 ? "(constant)" : L->keys.names[r->key], r->agree,
				  r->against);
			examples_text(&rp->conflicts, r->examples, r->n_examples);
			sb_puts(&rp->conflicts, "\n");
			rp->n_conflicts++;
		}
	}
	sb_puts(b, "\n);\n");
	for (int t = 0; t < N_TARGETS; t++) {
		long present = 0;

		if (L->rule[t].kind)
			continue;
		for (size_t i = 0; i < L->n_pairs; i++)
			present += L->pairs[i].tv[t] != NULL;
		if (present)
			sb_printf(&rp->unexplained, "#   %s (in %ld pairs)\n", L->target_names[t],
				  present);
	}
}

static int var_cmp_order(const void *x, const void *y)
{
	const struct var *a = *(const struct var *const *)x, *b = *(const struct var *const *)y;

	return (a->order > b->order) - (a->order < b->order);
}

static const char *var_prefix(const struct learn *L, const struct var *V)
{
	const char *k = L->keys.names[V->key];
	size_t kl = strlen(k), vl = strlen(V->name);

	if (kl >= vl && strcmp(k + kl - vl, V->name) == 0)
		return arena_strndup((struct arena *)&L->a, k, kl - vl);
	return NULL;
}

static void emit_variables(struct learn *L, struct buf *b, struct report *rp,
			   const char *prefix[N_SECTIONS])
{
	size_t nv = L->vars.n, n = 0;
	struct var **vs = xcalloc(nv + 1, sizeof(*vs));

	for (size_t v = 0; v < nv; v++)
		if (!(L->var[v].generic * 2 > L->var[v].seen) && L->var[v].seen > L->var[v].generic)
			vs[n++] = &L->var[v];
	qsort(vs, n, sizeof(*vs), var_cmp_order);
	sb_puts(b, "\nvariables = (\n");
	for (size_t i = 0; i < n; i++) {
		struct var *V = vs[i];
		long cnt, total;
		const char *s;

		sb_printf(b, "\t# %ld entries", V->seen - V->generic);
		if (V->key >= 0)
			sb_printf(b, "; v1 key '%s' agrees in %ld", L->keys.names[V->key],
				  V->key_agree);
		else
			sb_puts(b, "; no v1 key explains the responses");
		sb_printf(b, "\n\t{ section = \"%s\"; variable = ", section_names[V->sec]);
		sb_quoted(b, V->name);
		sb_puts(b, ";");
		if (V->key >= 0) {
			const char *pf = var_prefix(L, V);

			if (!pf || strcmp(pf, prefix[V->sec]) != 0) {
				sb_puts(b, " from = ");
				sb_quoted(b, L->keys.names[V->key]);
				sb_puts(b, ";");
			}
		}
		if ((s = tally_major(&V->id, &cnt, &total)) && *s)
			emit_value(b, "id", s, 1);
		if ((s = tally_major(&V->label, &cnt, &total)) && *s)
			emit_value(b, "label", s, 0);
		if (V->sec != SEC_OPTINS && (s = tally_major(&V->type, &cnt, &total)) && *s)
			emit_value(b, "type", s, 0);
		if (V->sec == SEC_OPTINS && (s = tally_major(&V->description, &cnt, &total)) && *s)
			emit_value(b, "description", s, 0);
		if (V->sec == SEC_FORM && V->n_file * 2 > V->seen - V->generic)
			sb_puts(b, " file = true;");
		if (V->key >= 0 && V->vconv / (int)N_SEP)
			sb_printf(b, " convert = \"%s\";",
				  V->vconv / (int)N_SEP == 1 ? "upper" : "lower");
		if (V->key >= 0 && separators[V->vconv % (int)N_SEP]) {
			sb_puts(b, " separator = ");
			sb_quoted(b, separators[V->vconv % (int)N_SEP]);
			sb_puts(b, ";");
		}
		if (V->sec == SEC_QUESTIONNAIRE) {
			if (V->score_key >= 0)
				sb_printf(b, " score_from = \"%s\";", L->keys.names[V->score_key]);
			if (V->max_key >= 0)
				sb_printf(b, " max_score_from = \"%s\";",
					  L->keys.names[V->max_key]);
			else if ((s = tally_major(&V->max_score, &cnt, &total)) && *s)
				emit_value(b, "max_score", s, 1);
			if (V->rscore_key >= 0)
				sb_printf(b, " response_score_from = \"%s\";",
					  L->keys.names[V->rscore_key]);
			if (V->correct_key >= 0)
				sb_printf(b, " correct_from = \"%s\";",
					  L->keys.names[V->correct_key]);
		}
		if (V->sec == SEC_FORM && V->n_labeled) {
			sb_puts(b, "\n\t ");
			if (!V->n_unlabeled)
				sb_puts(b, " unknown = \"reject\";");
			emit_pairs(b, "choices", &V->choices, 1);
			for (size_t c = 0; c < V->choices.n; c++)
				if (V->choices.cells[c].count == 1)
					sb_printf(&rp->once, "#   %s: choice \"%s\" (%s)\n",
						  V->name, V->choices.cells[c].from,
						  V->choices.cells[c].example);
		}
		if (V->sec == SEC_OPTINS && V->optmap.n) {
			struct tally m = { 0 };

			for (size_t c = 0; c < V->optmap.n; c++) {
				const struct tally_cell *cell = &V->optmap.cells[c];
				const char *nv1 = optin_norm(&(struct yajl_val_s){
					.type = yajl_t_string, .u.string = (char *)cell->from });

				if (tally_top(&V->optmap, cell->from, NULL) == cell &&
				    !(nv1 && strcmp(nv1, cell->to) == 0))
					tally_bump(&m, cell->from, cell->to, cell->example, 0);
			}
			sb_puts(b, "\n\t ");
			emit_pairs(b, "map", &m, 0);
			tally_free(&m);
		}
		if (V->def && V->key >= 0)
			emit_value(b, "default", V->def, 0);
		if (V->sec == SEC_OPTINS && (s = tally_major(&V->categories, &cnt, &total)) && *s)
			sb_printf(b, "\n\t  categories = %s;", s);
		sb_printf(b, " }%s\n", i + 1 < n ? "," : "");
		if (V->n_examples) {
			sb_printf(&rp->conflicts,
				  "#   %s[%s] <- %s: agrees in %ld entries, not in %zu+",
				  section_names[V->sec], V->name,
				  V->key >= 0 ? L->keys.names[V->key] : "?", V->key_agree,
				  V->n_examples);
			examples_text(&rp->conflicts, V->examples, V->n_examples);
			sb_puts(&rp->conflicts, "\n");
			rp->n_conflicts++;
		}
		if (V->key < 0)
			sb_printf(&rp->unexplained, "#   %s[%s].responses (in %ld entries)\n",
				  section_names[V->sec], V->name, V->seen);
	}
	sb_puts(b, ");\n");
	free(vs);
}

/* The prefix of a section: the one most of its variables' keys use. */
static void learn_prefixes(struct learn *L, const char *prefix[N_SECTIONS])
{
	for (int s = 0; s < N_SECTIONS; s++) {
		struct tally t = { 0 };
		long cnt = 0, total = 0;
		const char *top;

		prefix[s] = default_prefix[s];
		for (size_t v = 0; v < L->vars.n; v++) {
			const struct var *V = &L->var[v];
			const char *pf;

			if (V->sec != (enum section)s || V->key < 0 || V->generic * 2 > V->seen)
				continue;
			pf = var_prefix(L, V);
			tally_bump(&t, NULL, pf ? pf : "\x01", NULL, 0);
		}
		top = tally_major(&t, &cnt, &total);
		if (top && *top != '\x01' && (cnt >= 2 || cnt == total)) {
			long def = 0;

			for (size_t c = 0; c < t.n; c++)
				if (strcmp(t.cells[c].to, default_prefix[s]) == 0)
					def = t.cells[c].count;
			if (cnt > def)
				prefix[s] = top;
		}
		tally_free(&t);
	}
}

static void render(struct learn *L, struct buf *b, struct report *rp)
{
	const char *zone = top_zone(L);
	const char *prefix[N_SECTIONS];
	int amb_later = 0, gap_shift = 0;
	long generic_keys = 0;
	int first;

	learn_prefixes(L, prefix);
	for (int t = 0; t < N_TARGETS; t++)
		if (L->rule[t].kind == 1 && L->rule[t].conv == CONV_DATETIME && zone &&
		    strcmp(L->rule[t].zone, zone) == 0) {
			amb_later = L->rule[t].ambiguous_later;
			gap_shift = L->rule[t].gap_shift;
		}
	sb_printf(b,
		  "# Learned by `webhook-bridge learn` from %zu pairs of v1 and real v2\n"
		  "# posts.  Each rule's comment gives its evidence; the report at the end\n"
		  "# lists what the evidence did not explain.  Review, then `webhook-bridge\n"
		  "# check --mapping FILE`.\n\nversion = 1;\n",
		  L->n_pairs);
	if (zone)
		sb_printf(b, "timezone = \"%s\";\nambiguous = \"%s\";\ngap = \"%s\";\n", zone,
			  amb_later ? "later" : "earlier", gap_shift ? "shift" : "reject");
	for (size_t v = 0; v < L->vars.n; v++)
		if (L->var[v].generic * 2 > L->var[v].seen)
			generic_keys++;
	/* Keys no rule reads: written as generic entries by the "form" policy
	 * (seen), or named in `ignore` (absent from every v2). */
	sb_printf(b, "# %s\nunmapped = \"form\";\n",
		  generic_keys ? "v1 keys no rule names arrive as generic form entries"
			       : "no generic entries were seen; \"form\" keeps new keys");
	first = 1;
	for (size_t k = 0; k < L->keys.n; k++) {
		long var = intern_find(&L->vars, L->keys.names[k]);

		if (L->key_used[k] ||
		    (var >= 0 && L->var[var].generic && L->var[var].generic * 2 > L->var[var].seen))
			continue;
		if (first)
			sb_add(b,
			       "# named so that they are not written: in no v2 value\nignore = [ ",
			       63);
		else
			sb_puts(b, ", ");
		first = 0;
		sb_quoted(b, L->keys.names[k]);
	}
	if (!first)
		sb_puts(b, " ];\n");
	if (strcmp(prefix[0], default_prefix[0]) || strcmp(prefix[1], default_prefix[1]) ||
	    strcmp(prefix[2], default_prefix[2])) {
		sb_puts(b, "prefixes = {");
		for (int s = 0; s < N_SECTIONS; s++) {
			sb_printf(b, " %s = ", section_names[s]);
			sb_quoted(b, prefix[s]);
			sb_puts(b, ";");
		}
		sb_puts(b, " };\n");
	}
	sb_puts(b, "\n");
	emit_fields(L, b, rp, zone, amb_later, gap_shift);
	emit_variables(L, b, rp, prefix);
}

/* ---- self-check: the learned file under the real engine ---------------------- */

static struct v1_doc *v1_from_tree(yajl_val o)
{
	struct v1_doc *d = xcalloc(1, sizeof(*d));

	d->fields = xcalloc(o->u.object.len + 1, sizeof(*d->fields));
	for (size_t i = 0; i < o->u.object.len; i++) {
		struct v1_field *f = &d->fields[d->n_fields];
		yajl_val v = o->u.object.values[i];

		f->key = strdup(o->u.object.keys[i]);
		f->key_len = strlen(f->key);
		if (v->type == yajl_t_array) {
			f->value.type = V1_ARRAY;
			f->value.text = strdup("");
			f->value.items = xcalloc(v->u.array.len + 1, sizeof(struct v1_value));
			for (size_t j = 0; j < v->u.array.len; j++) {
				yajl_val it = v->u.array.values[j];
				struct v1_value *iv = &f->value.items[f->value.n_items++];

				iv->type = it->type == yajl_t_string   ? V1_STRING
					   : it->type == yajl_t_number ? V1_NUMBER
					   : scalar_text(it)           ? V1_BOOL
								       : V1_NULL;
				iv->text = strdup(scalar_text(it) ? scalar_text(it) : "");
				iv->len = strlen(iv->text);
			}
		} else {
			f->value.type = v->type == yajl_t_string   ? V1_STRING
					: v->type == yajl_t_number ? V1_NUMBER
					: scalar_text(v)           ? V1_BOOL
								   : V1_NULL;
			f->value.text = strdup(scalar_text(v) ? scalar_text(v) : "");
			f->value.len = strlen(f->value.text);
		}
		d->n_fields++;
	}
	return d;
}

struct check {
	long exact, failed;
	struct tally paths;
	const char *fail_example;
	char fail_msg[512];
};

/* Re-emit a yajl tree as compact JSON (capture bodies have no text of their own). */
static void tree_text(struct buf *b, yajl_val v)
{
	switch (v ? v->type : yajl_t_null) {
	case yajl_t_string:
		sb_check(buf_json_quoted(sb(b), v->u.string, strlen(v->u.string), 0));
		break;
	case yajl_t_number: sb_printf(b, "%s", v->u.number.r); break;
	case yajl_t_true: sb_puts(b, "true"); break;
	case yajl_t_false: sb_puts(b, "false"); break;
	case yajl_t_object:
		sb_puts(b, "{");
		for (size_t i = 0; i < v->u.object.len; i++) {
			struct yajl_val_s key = { .type = yajl_t_string,
						  .u.string = (char *)v->u.object.keys[i] };

			if (i)
				sb_puts(b, ",");
			tree_text(b, &key);
			sb_puts(b, ":");
			tree_text(b, v->u.object.values[i]);
		}
		sb_puts(b, "}");
		break;
	case yajl_t_array:
		sb_puts(b, "[");
		for (size_t i = 0; i < v->u.array.len; i++) {
			if (i)
				sb_puts(b, ",");
			tree_text(b, v->u.array.values[i]);
		}
		sb_puts(b, "]");
		break;
	default: sb_puts(b, "null");
	}
}

static int self_check(struct learn *L, const char *rules, struct check *ck, struct buf *errs,
		      unsigned char *ok)
{
	struct mapping *m = NULL;
	struct diag d = { 0 };

	if (mapping_load(rules, &m, &d) < 0) {
		sb_printf(errs, "%s", d.text ? d.text : "");
		diag_reset(&d);
		return -1;
	}
	diag_reset(&d);
	for (size_t i = 0; i < L->n_pairs; i++) {
		const struct pair *p = &L->pairs[i];
		struct v1_doc *doc = v1_from_tree(p->v1);
		struct mapping_result res = { 0 };
		struct bridge_error err;
		struct jsondiff df;
		struct buf real = { 0 };
		const char *rt = p->v2doc->raw;
		size_t rl = p->v2doc->raw_len;

		bridge_error_clear(&err);
		if (!rt) {
			tree_text(&real, p->v2);
			rt = real.s;
			rl = real.len;
		}
		if (mapping_apply(m, doc, 0, &res, &err) < 0) {
			ck->failed++;
			if (!ck->fail_example) {
				ck->fail_example = p->id;
				snprintf(ck->fail_msg, sizeof(ck->fail_msg), "%s", err.message);
			}
		} else if (jsondiff_compare(res.body, res.len, rt, rl, NULL, &df, &err) == 0) {
			if (df.n_added + df.n_removed + df.n_changed == 0) {
				ck->exact++;
				if (ok)
					ok[i] = 1;
			}
			for (size_t e = 0; e < df.n_entries; e++)
				tally_bump(&ck->paths, NULL,
					   arena_strndup(&L->a, df.entries[e].path,
							 strlen(df.entries[e].path)),
					   p->id, 0);
			jsondiff_clear(&df);
		}
		mapping_result_clear(&res);
		v1_doc_free(doc);
		free(real.s);
	}
	mapping_free(m);
	return 0;
}

static int tally_count_cmp(const void *x, const void *y)
{
	const struct tally_cell *a = x, *b = y;

	return (b->count > a->count) - (b->count < a->count);
}

/* ---- --base: what the evidence says about an existing file -------------------- */

/* One line per rule of a file, as `map` reads it: rules by target/variable
 * with their settings in a fixed order, so two files compare line by line. */
static void rule_lines(FILE *f, struct tally *out, struct arena *a)
{
	char line[4096];
	struct buf cur = { 0 };
	int depth = 0;

	while (fgets(line, sizeof(line), f)) {
		char *hash = NULL;
		int in_str = 0;

		for (char *p = line; *p; p++) {
			if (*p == '"' && (p == line || p[-1] != '\\'))
				in_str = !in_str;
			if (!in_str && *p == '#') {
				hash = p;
				break;
			}
		}
		if (hash)
			*hash = '\0';
		for (char *p = line; *p; p++) {
			if (*p == '\n' || *p == '\t')
				*p = ' ';
		}
		for (char *p = line; *p; p++) {
			if (*p == '"')
				in_str = !in_str;
			if (in_str)
				continue;
			if (*p == '{')
				depth++;
			if (*p == '}')
				depth--;
		}
		if (depth > 0 || cur.len) {
			char *s = line;

			while (*s == ' ')
				s++;
			sb_add(&cur, s, strlen(s));
		}
		if (depth == 0 && cur.len) {
			char *e = cur.s + cur.len;

			while (e > cur.s &&
			       (e[-1] == ' ' || e[-1] == ',' || e[-1] == ';' || e[-1] == ')'))
				*--e = '\0';
			if (strstr(cur.s, "to =") || strstr(cur.s, "variable ="))
				tally_bump(out, NULL, arena_strndup(a, cur.s, strlen(cur.s)), NULL,
					   0);
			cur.len = 0;
			cur.s[0] = '\0';
		} else if (depth == 0 && strchr(line, '=')) {
			char *s = line, *e;

			while (*s == ' ')
				s++;
			e = s + strlen(s);
			while (e > s && (e[-1] == ' ' || e[-1] == ',' || e[-1] == ';'))
				*--e = '\0';
			if (*s && e[-1] != '(')
				tally_bump(out, NULL, arena_strndup(a, s, strlen(s)), NULL, 0);
		}
	}
	free(cur.s);
}

static void base_lines(const char *path, struct tally *out, struct arena *a)
{
	FILE *f = fopen(path, "r");

	if (!f)
		return;
	rule_lines(f, out, a);
	fclose(f);
}

static void base_diff(const char *base, const char *learned, struct arena *a, long base_exact,
		      long learned_exact, size_t n_pairs)
{
	struct tally bl = { 0 }, ll = { 0 };
	long kept = 0;

	base_lines(base, &bl, a);
	base_lines(learned, &ll, a);
	fprintf(stderr,
		"--- %s (reproduces %ld/%zu pairs)\n+++ learned (reproduces %ld/%zu pairs)\n", base,
		base_exact, n_pairs, learned_exact, n_pairs);
	for (size_t i = 0; i < bl.n; i++) {
		int found = 0;

		for (size_t j = 0; j < ll.n && !found; j++)
			found = strcmp(bl.cells[i].to, ll.cells[j].to) == 0;
		if (found)
			kept++;
		else
			fprintf(stderr, "-%s\n", bl.cells[i].to);
	}
	for (size_t j = 0; j < ll.n; j++) {
		int found = 0;

		for (size_t i = 0; i < bl.n && !found; i++)
			found = strcmp(bl.cells[i].to, ll.cells[j].to) == 0;
		if (!found)
			fprintf(stderr, "+%s\n", ll.cells[j].to);
	}
	fprintf(stderr, "# %ld rule(s) of %s confirmed by the evidence\n", kept, base);
	tally_free(&bl);
	tally_free(&ll);
}

/* ---- stages: websites or campaigns whose pairs follow other rules ------------ */

static void learn_all(struct learn *L, struct zones *Z);

#define LEARN_MAX_STAGES 16

static void report_clear(struct report *rp)
{
	free(rp->conflicts.s);
	free(rp->once.s);
	free(rp->unexplained.s);
	memset(rp, 0, sizeof(*rp));
}

/* The rule lines (one per field rule or variable, comments dropped) of a
 * rendering of the current state. */
static void state_rules(struct learn *L, struct tally *out)
{
	struct buf b = { 0 };
	struct report rp = { 0 };
	FILE *f;

	render(L, &b, &rp);
	f = fmemopen(b.s, b.len, "r");
	if (f) {
		rule_lines(f, out, &L->a);
		fclose(f);
	}
	free(b.s);
	report_clear(&rp);
}

static int rule_is_group(const char *line)
{
	return strncmp(line, "{ to =", 6) == 0 || strncmp(line, "{ section =", 11) == 0;
}

static int self_check(struct learn *L, const char *rules, struct check *ck, struct buf *errs,
		      unsigned char *ok);
static int write_text(const char *path, const struct buf *text);

/* Pairs of L whose selector (website or campaign id) is gid, into sub. */
static size_t subset_of(struct learn *L, const struct pair *all, size_t n_all, const int *group,
			int g, struct pair *sub)
{
	size_t n = 0;

	(void)L;
	for (size_t i = 0; i < n_all; i++)
		if (group[i] == g)
			sub[n++] = all[i];
	return n;
}

/* Stages: websites (else campaigns) whose own rules differ from those the
 * other groups share and whose pairs the shared rules do not reproduce.
 * Each group with enough pairs is learned on its own; a group holding a rule
 * (or a zone) that groups with most of the pairs do not hold is a
 * candidate; the base is learned from the other pairs and a candidate
 * whose pairs it mostly fails becomes a stage with its differing rules.
 * Leaves L holding the base rules over all pairs.  Returns the number of
 * stages written into out. */
static int stages_find(struct learn *L, struct zones *Z, const unsigned char *ok_all,
		       struct buf *out)
{
	const char *sel_key[2], *sel_name[2] = { "websites", "campaigns" };
	struct pair *all = L->pairs, *sub;
	size_t n_all = L->n_pairs;
	int *group = xcalloc(n_all + 1, sizeof(int));
	unsigned char *ok = xcalloc(n_all + 1, 1);
	char canon[32];
	int n_stages = 0;

	(void)ok_all;
	sub = xcalloc(n_all + 1, sizeof(*sub));
	sel_key[0] = L->rule[15].kind == 1 ? L->keys.names[L->rule[15].key] : "website_id";
	sel_key[1] = L->rule[8].kind == 1 ? L->keys.names[L->rule[8].key] : "campaign_id";
	for (int s = 0; s < 2 && !n_stages; s++) {
		struct tally ids = { 0 }, lines[LEARN_MAX_STAGES], base = { 0 };
		const char *gid[LEARN_MAX_STAGES], *gzone[LEARN_MAX_STAGES], *zone_major = NULL;
		long gsize[LEARN_MAX_STAGES], total = 0, best_zone = 0;
		int n_groups = 0, cand[LEARN_MAX_STAGES], stage[LEARN_MAX_STAGES], n_cand = 0;
		char tmp[] = "/tmp/webhook-bridge-learn-stage-XXXXXX";
		int fd;

		for (size_t i = 0; i < n_all; i++) {
			const char *x = scalar_text(obj_get(all[i].v1, sel_key[s]));

			if (x && convert_integer(x, strlen(x), canon, sizeof(canon), NULL) == 0)
				tally_bump(&ids, NULL, arena_strndup(&L->a, canon, strlen(canon)),
					   NULL, 0);
		}
		for (size_t c = 0; c < ids.n && n_groups < LEARN_MAX_STAGES; c++)
			if (ids.cells[c].count >= L->min_support && ids.cells[c].count >= 5) {
				gid[n_groups] = ids.cells[c].to;
				gsize[n_groups] = ids.cells[c].count;
				total += gsize[n_groups];
				n_groups++;
			}
		tally_free(&ids);
		if (n_groups < 2)
			continue;
		for (size_t i = 0; i < n_all; i++) {
			const char *x = scalar_text(obj_get(all[i].v1, sel_key[s]));

			group[i] = -1;
			if (!x || convert_integer(x, strlen(x), canon, sizeof(canon), NULL) < 0)
				continue;
			for (int g = 0; g < n_groups; g++)
				if (strcmp(canon, gid[g]) == 0)
					group[i] = g;
		}
		for (int g = 0; g < n_groups; g++) {
			memset(&lines[g], 0, sizeof(lines[g]));
			L->pairs = sub;
			L->n_pairs = subset_of(L, all, n_all, group, g, sub);
			learn_all(L, Z);
			gzone[g] = top_zone(L);
			state_rules(L, &lines[g]);
		}
		for (int g = 0; g < n_groups; g++) {
			long w = 0;

			for (int h = 0; h < n_groups; h++)
				if (gzone[h] && gzone[g] && strcmp(gzone[h], gzone[g]) == 0)
					w += gsize[h];
			if (w > best_zone) {
				best_zone = w;
				zone_major = gzone[g];
			}
		}
		for (int g = 0; g < n_groups; g++) {
			int odd = gzone[g] && zone_major && strcmp(gzone[g], zone_major) != 0;

			for (size_t c = 0; c < lines[g].n && !odd; c++) {
				long w = 0;

				if (!rule_is_group(lines[g].cells[c].to))
					continue;
				for (int h = 0; h < n_groups; h++)
					for (size_t e = 0; e < lines[h].n; e++)
						if (strcmp(lines[h].cells[e].to,
							   lines[g].cells[c].to) == 0) {
							w += gsize[h];
							break;
						}
				odd = w * 2 <= total;
			}
			stage[g] = 0;
			if (odd && gsize[g] * 2 < (long)n_all)
				cand[n_cand++] = g;
		}
		{
			long covered = 0;

			for (int c = 0; c < n_cand; c++)
				covered += gsize[cand[c]];
			/* Stages are the exception: when most pairs would be in one,
			 * the groups are too small to tell rules from chance. */
			if (covered * 2 >= (long)n_all)
				n_cand = 0;
		}
		if (!n_cand) {
			for (int g = 0; g < n_groups; g++)
				tally_free(&lines[g]);
			continue;
		}
		/* The base without the candidates, tried on every pair. */
		L->n_pairs = 0;
		for (size_t i = 0; i < n_all; i++) {
			int skip = 0;

			for (int c = 0; c < n_cand; c++)
				skip |= group[i] == cand[c];
			if (!skip)
				sub[L->n_pairs++] = all[i];
		}
		learn_all(L, Z);
		fd = mkstemp(tmp);
		if (fd >= 0) {
			struct buf bt = { 0 }, errs = { 0 };
			struct report rp = { 0 };
			struct check ck = { 0 };
			size_t n_base = L->n_pairs;

			close(fd);
			render(L, &bt, &rp);
			L->pairs = all;
			L->n_pairs = n_all;
			memset(ok, 0, n_all);
			if (write_text(tmp, &bt) == 0 && self_check(L, tmp, &ck, &errs, ok) == 0)
				for (int c = 0; c < n_cand; c++) {
					long good = 0;

					for (size_t i = 0; i < n_all; i++)
						good += group[i] == cand[c] && ok[i];
					stage[cand[c]] = good * 2 < gsize[cand[c]];
				}
			unlink(tmp);
			L->pairs = sub;
			L->n_pairs = n_base;
			free(bt.s);
			free(errs.s);
			report_clear(&rp);
			tally_free(&ck.paths);
		}
		/* The final base: every pair outside the stages. */
		L->n_pairs = 0;
		for (size_t i = 0; i < n_all; i++)
			if (group[i] < 0 || !stage[group[i]])
				sub[L->n_pairs++] = all[i];
		learn_all(L, Z);
		state_rules(L, &base);
		for (int g = 0; g < n_groups; g++)
			n_stages += stage[g];
		if (n_stages && strcmp(sel_key[s], s ? "campaign_id" : "website_id") != 0) {
			sb_printf(out, "\n# the v1 key of the %s ids the stages select on\n%s = ",
				  s ? "campaign" : "website", s ? "campaign_key" : "website_key");
			sb_quoted(out, sel_key[s]);
			sb_puts(out, ";\n");
		}
		if (n_stages)
			sb_puts(out, "\nstages = (\n");
		for (int g = 0, done = 0; g < n_groups; g++) {
			const char *bz = top_zone(L);

			if (!stage[g])
				continue;
			sb_printf(out,
				  "\t# %s %s: %ld pairs, their own rules below; the others' rules "
				  "reproduce fewer than half of them\n\t{ name = \"%s %s\"; %s = [ "
				  "%s ];",
				  s ? "campaign" : "website", gid[g], gsize[g],
				  s ? "campaign" : "website", gid[g], sel_name[s], gid[g]);
			if (gzone[g] && (!bz || strcmp(gzone[g], bz) != 0))
				sb_printf(out, " timezone = \"%s\";", gzone[g]);
			for (int part = 0; part < 2; part++) {
				int first = 1;

				for (size_t c = 0; c < lines[g].n; c++) {
					const char *line = lines[g].cells[c].to;
					int found = 0;

					if (!rule_is_group(line) || (line[2] == 't') != (part == 0))
						continue;
					for (size_t e = 0; e < base.n && !found; e++)
						found = strcmp(base.cells[e].to, line) == 0;
					if (found)
						continue;
					sb_printf(out, "%s%s",
						  first ? (part ? "\n\t  variables = (\n\t\t"
								: "\n\t  fields = (\n\t\t")
							: ",\n\t\t",
						  line);
					first = 0;
				}
				if (!first)
					sb_puts(out, "\n\t  );");
			}
			done++;
			sb_printf(out, " }%s\n", done < n_stages ? "," : "");
		}
		if (n_stages)
			sb_puts(out, ");\n");
		tally_free(&base);
		for (int g = 0; g < n_groups; g++)
			tally_free(&lines[g]);
		if (!n_stages) {
			/* Nothing to split: the rules of every pair. */
			L->pairs = all;
			L->n_pairs = n_all;
			learn_all(L, Z);
		}
	}
	L->pairs = all;
	L->n_pairs = n_all;
	if (!n_stages)
		learn_all(L, Z);
	free(sub);
	free(group);
	free(ok);
	return n_stages;
}

static int write_text(const char *path, const struct buf *text)
{
	FILE *f = fopen(path, "w");

	if (!f || fwrite(text->s, 1, text->len, f) != text->len || fclose(f) != 0) {
		fprintf(stderr, "webhook-bridge learn: %s: %s\n", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* ---- the command ------------------------------------------------------------- */

/* State of a v1 body under the learned state rule, to pair ids seen more
 * than once; NULL when it cannot tell. */
static const char *predict_state(const struct learn *L, yajl_val v1, const struct zones *Z)
{
	int t = 5; /* state */
	const struct field_rule *r = &L->rule[t];
	const char *x;
	static char buf[256];

	if (!r->kind)
		return NULL;
	if (r->kind == 3)
		return r->value;
	x = scalar_text(obj_get(v1, L->keys.names[r->key]));
	if (!x)
		return r->def;
	if (r->kind == 2) {
		const struct tally_cell *c = tally_top(&r->map, x, NULL);

		return c ? c->to : x;
	}
	if (strlen(x) >= sizeof(buf))
		return NULL;
	snprintf(buf, sizeof(buf), "%s", x);
	if (r->conv == CONV_UPPER)
		ascii_upper(buf);
	if (r->conv == CONV_LOWER)
		for (char *q = buf; *q; q++)
			if (*q >= 'A' && *q <= 'Z')
				*q = (char)(*q - 'A' + 'a');
	(void)Z;
	return buf;
}

static void learn_reset(struct learn *L)
{
	for (int t = 0; t < N_TARGETS; t++) {
		tally_free(&L->rule[t].map);
		memset(&L->rule[t], 0, sizeof(L->rule[t]));
	}
	for (size_t v = 0; v < L->vars.n; v++) {
		struct var *V = &L->var[v];

		tally_free(&V->id);
		tally_free(&V->label);
		tally_free(&V->type);
		tally_free(&V->description);
		tally_free(&V->categories);
		tally_free(&V->max_score);
		tally_free(&V->choices);
		tally_free(&V->optmap);
		free(V->agree);
		free(V->score_agree);
		free(V->max_agree);
		free(V->rscore_agree);
		free(V->correct_agree);
		memset(&V->seen, 0, sizeof(*V) - offsetof(struct var, seen));
		V->first_order = (long)v;
	}
	free(L->key_used);
	free(L->key_seen);
	L->key_used = L->key_seen = NULL;
}

/* Learn every rule from the pairs of L (all of them, or one stage's). */
static void learn_all(struct learn *L, struct zones *Z)
{
	learn_reset(L);
	keys_count(L);
	learn_fields(L, Z);
	learn_variables(L);
}

int cmd_learn(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "v1", required_argument, NULL, '1' },
		{ "v2", required_argument, NULL, '2' },
		{ "base", required_argument, NULL, 'b' },
		{ "min-support", required_argument, NULL, 'm' },
		{ "output", required_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct learn *L = xcalloc(1, sizeof(*L));
	struct docset v1 = { 0 }, v2 = { 0 };
	struct v2_index ix = { 0 };
	struct zones Z = { 0 };
	const char *base = NULL, *out = NULL;
	char **v1p = xcalloc((size_t)argc + 1, sizeof(char *));
	char **v2p = xcalloc((size_t)argc + 1, sizeof(char *));
	size_t n1 = 0, n2 = 0;
	int side = 0, c, rc = 2;
	long long num;
	long *match = NULL;
	struct buf text = { 0 }, errs = { 0 };
	struct report rp = { { 0 }, { 0 }, { 0 }, 0 };
	struct check ck = { 0 };
	char tmp[] = "/tmp/webhook-bridge-learn-XXXXXX";
	const char *rules_path;
	int fd = -1;
	unsigned char *ok = NULL;

	L->min_support = 3;
	for (int t = 0; t < N_FIXED; t++)
		L->target_names[t] = (char *)fixed_targets[t];
	for (int n = 0; n < N_THEMES; n++) {
		L->target_names[N_FIXED + 2 * n] = arena_printf(&L->a, "campaign.themes[%d].code",
								n);
		L->target_names[N_FIXED + 2 * n + 1] = arena_printf(
			&L->a, "campaign.themes[%d].description", n);
	}
	optind = 1;
	while ((c = cli_getopt("learn", argc, argv, "-o:h", opts)) != -1) {
		switch (c) {
		case '1':
			side = 1;
			v1p[n1++] = optarg;
			break;
		case '2':
			side = 2;
			v2p[n2++] = optarg;
			break;
		case 1:
			if (side == 1)
				v1p[n1++] = optarg;
			else if (side == 2)
				v2p[n2++] = optarg;
			else {
				rc = cli_usage("learn", "'%s': say --v1 or --v2 first", optarg);
				goto out;
			}
			break;
		case 'b': base = optarg; break;
		case 'm':
			if (cli_int_parse(optarg, 1, 1000000, &num) < 0) {
				rc = cli_usage("learn",
					       "--min-support must be 1..1000000, not '%s'",
					       optarg);
				goto out;
			}
			L->min_support = (long)num;
			break;
		case 'o': out = optarg; break;
		case 'h':
			fputs(usage_learn, stdout);
			rc = 0;
			goto out;
		default: rc = 2; goto out;
		}
	}
	if (!n1 || !n2) {
		rc = cli_usage("learn", "needs --v1 FILE... and --v2 FILE...");
		goto out;
	}
	for (size_t i = 0; i < n1; i++)
		if (docset_add_path(&v1, &L->a, v1p[i], 0) < 0)
			goto out;
	for (size_t i = 0; i < n2; i++)
		if (docset_add_path(&v2, &L->a, v2p[i], 0) < 0)
			goto out;
	if (v1.problems.len)
		fprintf(stderr, "%s", v1.problems.s);
	if (v2.problems.len)
		fprintf(stderr, "%s", v2.problems.s);

	pairs_build(L, &v1, &v2, &ix, &match);
	L->pairs = xcalloc(v1.n + 1, sizeof(*L->pairs));
	for (size_t i = 0; i < v1.n; i++)
		if (match[i] >= 0 && !ix.taken[match[i]]) {
			ix.taken[match[i]] = 1;
			pair_add(L, &v1.docs[i], &v2.docs[match[i]]);
		}
	pairs_index_keys(L);
	keys_count(L);
	learn_fields(L, &Z);
	{
		/* Ids seen more than once: pair by the state the rule predicts,
		 * then learn again from every pair. */
		size_t added = 0;

		long *head = xcalloc(ix.ids.n + 1, sizeof(long)),
		     *next = xcalloc(v2.n + 1, sizeof(long));

		/* v2 bodies by id: head[id] -> next[j] -> ... (-1 ends). */
		for (size_t k = 0; k < ix.ids.n; k++)
			head[k] = -1;
		for (size_t j = v2.n; j-- > 0;) {
			const char *id2 = scalar_text(obj_get(doc_body(&v2.docs[j]), "id"));
			char up[512];
			long k;

			next[j] = -1;
			if (!id2 || strlen(id2) >= sizeof(up))
				continue;
			snprintf(up, sizeof(up), "%s", id2);
			ascii_upper(up);
			k = intern_find(&ix.ids, up);
			if (k >= 0) {
				next[j] = head[k];
				head[k] = (long)j;
			}
		}
		for (size_t i = 0; i < v1.n; i++) {
			const char *st;
			int paired = 0;

			if (match[i] > -2)
				continue;
			st = predict_state(L, doc_body(&v1.docs[i]), &Z);
			for (long j = head[-2 - match[i]]; st && j >= 0 && !paired; j = next[j]) {
				const char *s2 = scalar_text(
					obj_get(doc_body(&v2.docs[j]), "state"));

				if (ix.taken[j] || !s2 || strcmp(s2, st) != 0)
					continue;
				ix.taken[j] = 1;
				pair_add(L, &v1.docs[i], &v2.docs[j]);
				added++;
				paired = 1;
			}
			L->ambiguous += !paired;
		}
		free(head);
		free(next);
		if (added) {
			learn_reset(L);
			pairs_index_keys(L);
			keys_count(L);
			learn_fields(L, &Z);
		}
	}
	L->unpaired_v1 = v1.n - L->n_pairs;
	for (size_t j = 0; j < v2.n; j++)
		L->unpaired_v2 += !ix.taken[j];
	if (L->n_pairs == 0) {
		fprintf(stderr,
			"webhook-bridge learn: no pairs: no v1 body carries the id of a v2 body "
			"(%zu v1, %zu v2 read)\n",
			v1.n, v2.n);
		goto out;
	}
	learn_variables(L);
	render(L, &text, &rp);

	if (out) {
		rules_path = out;
	} else {
		fd = mkstemp(tmp);
		if (fd < 0) {
			fprintf(stderr, "webhook-bridge learn: temporary file: %s\n",
				strerror(errno));
			goto out;
		}
		close(fd);
		rules_path = tmp;
	}
	ok = xcalloc(L->n_pairs + 1, 1);
	if (write_text(rules_path, &text) < 0)
		goto out;
	if (self_check(L, rules_path, &ck, &errs, ok) < 0) {
		fprintf(stderr, "webhook-bridge learn: the learned file does not load (a bug):\n%s",
			errs.s ? errs.s : "");
		goto out;
	}
	if (ck.exact < (long)L->n_pairs) {
		struct buf stages = { 0 };

		if (stages_find(L, &Z, ok, &stages) > 0) {
			/* The base rules from the other pairs, then the stages. */
			text.len = 0;
			report_clear(&rp);
			tally_free(&ck.paths);
			memset(&ck, 0, sizeof(ck));
			render(L, &text, &rp);
			sb_add(&text, stages.s, stages.len);
			if (write_text(rules_path, &text) < 0 ||
			    self_check(L, rules_path, &ck, &errs, NULL) < 0) {
				fprintf(stderr,
					"webhook-bridge learn: the learned stages do not load "
					"(a bug):\n%s",
					errs.s ? errs.s : "");
				free(stages.s);
				goto out;
			}
		}
		free(stages.s);
	}
	{
		struct buf r = { 0 };

		sb_printf(&r,
			  "\n# ---- report ----\n# pairs: %zu (v1 without a v2: %zu, v2 without a "
			  "v1: "
			  "%zu, ids seen more than once and not told apart: %zu, unreadable lines: "
			  "%zu)\n",
			  L->n_pairs, L->unpaired_v1, L->unpaired_v2, L->ambiguous,
			  v1.invalid + v2.invalid);
		sb_printf(&r, "# reproduced exactly by these rules: %ld/%zu pairs (%.2f %%)",
			  ck.exact, L->n_pairs, 100.0 * (double)ck.exact / (double)L->n_pairs);
		if (ck.failed)
			sb_printf(&r, "; %ld not mapped, e.g. %s: %s", ck.failed, ck.fail_example,
				  ck.fail_msg);
		sb_puts(&r, "\n");
		if (ck.paths.n) {
			qsort(ck.paths.cells, ck.paths.n, sizeof(*ck.paths.cells), tally_count_cmp);
			sb_puts(&r, "# residual differences (path: pairs):\n");
			for (size_t i = 0; i < ck.paths.n && i < 20; i++)
				sb_printf(&r, "#   %s: %ld (e.g. %s)\n", ck.paths.cells[i].to,
					  ck.paths.cells[i].count, ck.paths.cells[i].example);
		}
		sb_printf(&r, "# v2 paths no v1 key explains:%s\n%s",
			  rp.unexplained.len || L->extra_paths.n ? "" : " none",
			  rp.unexplained.s ? rp.unexplained.s : "");
		for (size_t i = 0; i < L->extra_paths.n && i < 20; i++)
			sb_printf(&r, "#   %s (in %ld pairs; outside the rule language)\n",
				  L->extra_paths.cells[i].to, L->extra_paths.cells[i].count);
		{
			int any = 0;

			for (size_t k = 0; k < L->keys.n; k++) {
				long var = intern_find(&L->vars, L->keys.names[k]);

				if (L->key_used[k] || (var >= 0 && L->var[var].generic))
					continue;
				sb_printf(&r, "%s'%s'",
					  any ? ", " : "# v1 keys no v2 value uses (ignored): ",
					  L->keys.names[k]);
				any = 1;
			}
			sb_printf(&r, "%s\n", any ? "" : "# v1 keys no v2 value uses: none");
		}
		sb_printf(&r, "# conflicting evidence:%s\n%s", rp.n_conflicts ? "" : " none",
			  rp.conflicts.s ? rp.conflicts.s : "");
		sb_printf(&r, "# values seen only once:%s\n%s", rp.once.len ? "" : " none",
			  rp.once.s ? rp.once.s : "");
		sb_add(&text, r.s, r.len);
		{
			FILE *f = fopen(rules_path, "a");

			if (f) {
				fwrite(r.s, 1, r.len, f);
				fclose(f);
			}
		}
		if (!out)
			fwrite(text.s, 1, text.len, stdout);
		fprintf(stderr,
			"learn: %zu pairs, %ld reproduced exactly (%.2f %%), %ld conflict(s)%s%s\n",
			L->n_pairs, ck.exact, 100.0 * (double)ck.exact / (double)L->n_pairs,
			rp.n_conflicts, out ? "; rules in " : "", out ? out : "");
		free(r.s);
	}
	if (base) {
		struct check bk = { 0 };
		struct buf be = { 0 };

		if (self_check(L, base, &bk, &be, NULL) < 0) {
			fprintf(stderr, "%s", be.s ? be.s : "");
			free(be.s);
			tally_free(&bk.paths);
			goto out;
		}
		base_diff(base, rules_path, &L->a, bk.exact, ck.exact, L->n_pairs);
		tally_free(&bk.paths);
		free(be.s);
	}
	rc = ck.exact == (long)L->n_pairs ? 0 : 1;
out:
	if (fd >= 0 || (!out && tmp[sizeof(tmp) - 2] != 'X'))
		unlink(tmp);
	learn_reset(L);
	free(L->var);
	free(L->pairs);
	intern_free(&L->keys);
	intern_free(&L->vars);
	intern_free(&ix.ids);
	free(ix.first);
	free(ix.count);
	free(ix.taken);
	free(match);
	docset_free(&v1);
	docset_free(&v2);
	zones_free(&Z);
	tally_free(&ck.paths);
	free(text.s);
	free(errs.s);
	report_clear(&rp);
	tally_free(&L->extra_paths);
	free(ok);
	free(v1p);
	free(v2p);
	arena_free(&L->a);
	free(L);
	return rc;
}
