/*
 * shadow: the correlation store behind dry-run shadow comparison (see the
 * header for the contract).
 *
 * Layout: each waiting entry is one allocation (header, key, id, state,
 * body, trace), found through a chained hash table keyed with SipHash under
 * a per-store random key (ids and states come from peers: a predictable hash
 * would let them build long chains), and linked in arrival order so that TTL
 * expiry and capacity eviction take the oldest in O(1).  The body is copied
 * once, before the lock is taken; the comparison runs after it is released,
 * so the lock only ever covers pointer moves and counters.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <yajl/yajl_parse.h>

#include "bridge/buf.h"
#include "bridge/json.h"
#include "bridge/mapping.h"
#include "bridge/shadow.h"
#include "bridge/siphash.h"
#include "bridge/store.h"

#define MIN_BUCKETS     64
#define MAX_BUCKETS     (1u << 24)
#define PATH_SLOTS      (2 * SHADOW_MAX_PATHS) /* open addressing, load <= 1/2 */
#define PATH_RULES      4                      /* distinct rules remembered per path */
#define TRACE_MAX_DEPTH 16
#define OTHER_PATH      "_other"

struct entry {
	struct entry *hnext;        /* hash chain */
	TAILQ_ENTRY(entry) arrival; /* shadow.arrivals, oldest first */
	uint64_t hash;
	long long arrived_ms;
	enum shadow_side side;
	bool too_large;     /* v2 over max_body: its bytes were not kept */
	bool trace_dropped; /* trace over max_body: not kept */
	size_t key_len, v2_len, v2_size, trace_len;
	const char *key, *route, *id, *state, *v2, *trace; /* into data; trace NULL if none */
	char data[];
};

struct path_stat {
	char *path;
	uint64_t hash;
	size_t count;
	size_t kinds[3]; /* by enum jsondiff_kind */
	char *rules[PATH_RULES];
	size_t rule_counts[PATH_RULES];
	size_t unmapped; /* differences no trace record covers */
};

struct shadow {
	pthread_mutex_t lock;
	struct shadow_limits lim;
	struct jsondiff_options opt; /* patterns owned */
	void (*on_expired)(const struct shadow_expired *e, void *arg);
	void *on_expired_arg;
	struct siphash_key key; /* per store: a sender cannot aim at one bucket */

	struct entry **buckets;
	size_t n_buckets, max_buckets, n_entries;
	TAILQ_HEAD(, entry) arrivals;

	size_t seen[2], waiting[2], expired_ttl[2], expired_capacity[2];
	size_t matched, identical, different, not_compared, duplicates, rejected, trace_errors;

	struct path_stat *paths; /* SHADOW_MAX_PATHS */
	size_t n_paths;
	int *path_slots; /* PATH_SLOTS indexes into paths, -1 free */
	struct path_stat other;

	struct store *shared; /* not owned: the waiting entries and the totals live there */
};

const char *shadow_side_name(enum shadow_side side)
{
	return side == SHADOW_REAL ? "real" : "translated";
}

const char *shadow_status_name(enum shadow_status status)
{
	switch (status) {
	case SHADOW_IDENTICAL: return "identical";
	case SHADOW_DIFFERENT: return "different";
	default: return "not_compared";
	}
}

/* ------------------------------------------------------------------------ */
/* Keys */

static bool field_ok(const char *s, size_t max, bool empty_ok)
{
	size_t n = 0;

	for (; s[n]; n++)
		if ((unsigned char)s[n] < 0x20 || s[n] == 0x7f || n >= max)
			return false;
	return empty_ok || n > 0;
}

static char ascii_upper(char c)
{
	return c >= 'a' && c <= 'z' ? (char)(c - 'a' + 'A') : c;
}

/* route "\n" ID "\n" STATE into buf (big enough by the field limits). */
static size_t key_make(char *buf, const char *route, const char *id, const char *state)
{
	size_t n = 0;

	for (const char *p = route; *p; p++)
		buf[n++] = *p;
	buf[n++] = '\n';
	for (const char *p = id; *p; p++)
		buf[n++] = ascii_upper(*p);
	buf[n++] = '\n';
	for (const char *p = state; *p; p++)
		buf[n++] = ascii_upper(*p);
	buf[n] = '\0';
	return n;
}

/* ------------------------------------------------------------------------ */
/* Table and arrival list (callers hold the lock) */

static struct entry **bucket_of(struct shadow *s, uint64_t hash)
{
	return &s->buckets[hash & (s->n_buckets - 1)];
}

static struct entry *table_find(struct shadow *s, const char *key, size_t key_len, uint64_t hash)
{
	for (struct entry *e = *bucket_of(s, hash); e; e = e->hnext)
		if (e->hash == hash && e->key_len == key_len && memcmp(e->key, key, key_len) == 0)
			return e;
	return NULL;
}

/* Doubles the bucket array; on no memory the chains just grow longer. */
static void table_grow(struct shadow *s)
{
	size_t n = s->n_buckets * 2;
	struct entry **nb;

	if (n > s->max_buckets || !(nb = calloc(n, sizeof(*nb))))
		return;
	for (size_t i = 0; i < s->n_buckets; i++) {
		struct entry *e = s->buckets[i], *next;

		for (; e; e = next) {
			next = e->hnext;
			e->hnext = nb[e->hash & (n - 1)];
			nb[e->hash & (n - 1)] = e;
		}
	}
	free(s->buckets);
	s->buckets = nb;
	s->n_buckets = n;
}

static void entry_link(struct shadow *s, struct entry *e)
{
	struct entry **b;

	if (s->n_entries >= s->n_buckets)
		table_grow(s);
	b = bucket_of(s, e->hash);
	e->hnext = *b;
	*b = e;
	TAILQ_INSERT_TAIL(&s->arrivals, e, arrival);
	s->n_entries++;
	s->waiting[e->side]++;
}

static void entry_unlink(struct shadow *s, struct entry *e)
{
	struct entry **pp = bucket_of(s, e->hash);

	while (*pp != e)
		pp = &(*pp)->hnext;
	*pp = e->hnext;
	TAILQ_REMOVE(&s->arrivals, e, arrival);
	e->hnext = NULL;
	s->n_entries--;
	s->waiting[e->side]--;
}

static long long age_of(const struct entry *e, long long now_ms)
{
	return now_ms > e->arrived_ms ? now_ms - e->arrived_ms : 0;
}

/* Unlink e as expired for `reason` and push it on *gone (linked through
 * hnext) for reporting once the lock is released. */
static void entry_retire(struct shadow *s, struct entry *e, bool capacity, struct entry **gone)
{
	entry_unlink(s, e);
	if (capacity)
		s->expired_capacity[e->side]++;
	else
		s->expired_ttl[e->side]++;
	e->hnext = *gone;
	*gone = e;
}

/* ------------------------------------------------------------------------ */
/* Creation */

static int options_copy(struct jsondiff_options *dst, const struct jsondiff_options *src,
			struct bridge_error *err)
{
	char **pats = NULL;

	memset(dst, 0, sizeof(*dst));
	if (src)
		*dst = *src;
	dst->ignore = NULL;
	if (src && src->n_ignore) {
		if (!src->ignore || src->n_ignore > JSONDIFF_MAX_PATTERNS)
			return bridge_error_set(err, "shadow: %zu ignore patterns (at most %d)",
						src->n_ignore, JSONDIFF_MAX_PATTERNS);
		pats = calloc(src->n_ignore, sizeof(*pats));
		if (!pats)
			return bridge_error_set(err, "out of memory");
		dst->ignore = (const char *const *)pats;
		for (size_t i = 0; i < src->n_ignore; i++)
			if (!src->ignore[i] || !(pats[i] = strdup(src->ignore[i])))
				return bridge_error_set(err, "shadow: ignore pattern %zu: %s", i,
							src->ignore[i] ? "out of memory" : "NULL");
	}
	if (!dst->name_a)
		dst->name_a = "translated";
	if (!dst->name_b)
		dst->name_b = "real";
	return 0;
}

static void options_free(struct jsondiff_options *o)
{
	char **pats = (char **)o->ignore;

	for (size_t i = 0; pats && i < o->n_ignore; i++)
		free(pats[i]);
	free(pats);
	o->ignore = NULL;
	o->n_ignore = 0;
}

struct shadow *shadow_new(const struct shadow_limits *lim, const struct jsondiff_options *ignore,
			  void (*on_expired)(const struct shadow_expired *e, void *arg), void *arg,
			  struct bridge_error *err)
{
	struct shadow *s;
	struct jsondiff probe;

	if (lim && lim->ttl_ms < 0) {
		bridge_error_set(err, "shadow: ttl_ms must not be negative (got %ld)", lim->ttl_ms);
		return NULL;
	}
	s = calloc(1, sizeof(*s));
	if (!s) {
		bridge_error_set(err, "out of memory");
		return NULL;
	}
	if (lim)
		s->lim = *lim;
	if (!s->lim.max_entries)
		s->lim.max_entries = SHADOW_DEFAULT_MAX_ENTRIES;
	if (!s->lim.ttl_ms)
		s->lim.ttl_ms = SHADOW_DEFAULT_TTL_MS;
	if (!s->lim.max_body)
		s->lim.max_body = SHADOW_DEFAULT_MAX_BODY;
	s->on_expired = on_expired;
	s->on_expired_arg = arg;
	siphash_key_random(&s->key);
	TAILQ_INIT(&s->arrivals);
	pthread_mutex_init(&s->lock, NULL);
	for (s->max_buckets = MIN_BUCKETS;
	     s->max_buckets < s->lim.max_entries && s->max_buckets < MAX_BUCKETS;)
		s->max_buckets *= 2;
	s->n_buckets = MIN_BUCKETS;
	s->buckets = calloc(s->n_buckets, sizeof(*s->buckets));
	s->paths = calloc(SHADOW_MAX_PATHS, sizeof(*s->paths));
	s->path_slots = malloc(PATH_SLOTS * sizeof(*s->path_slots));
	if (!s->buckets || !s->paths || !s->path_slots) {
		bridge_error_set(err, "out of memory");
		goto fail;
	}
	for (size_t i = 0; i < PATH_SLOTS; i++)
		s->path_slots[i] = -1;
	if (options_copy(&s->opt, ignore, err) < 0)
		goto fail;
	/* Refuse a bad ignore pattern now rather than on every comparison. */
	if (jsondiff_compare("{}", 2, "{}", 2, &s->opt, &probe, err) < 0)
		goto fail;
	jsondiff_clear(&probe);
	return s;
fail:
	shadow_free(s);
	return NULL;
}

static void path_stat_clear(struct path_stat *p)
{
	free(p->path);
	for (size_t k = 0; k < PATH_RULES; k++)
		free(p->rules[k]);
}

void shadow_free(struct shadow *s)
{
	struct entry *e, *next;

	if (!s)
		return;
	for (e = TAILQ_FIRST(&s->arrivals); e; e = next) {
		next = TAILQ_NEXT(e, arrival);
		free(e);
	}
	free(s->buckets);
	for (size_t i = 0; s->paths && i < s->n_paths; i++)
		path_stat_clear(&s->paths[i]);
	path_stat_clear(&s->other);
	free(s->paths);
	free(s->path_slots);
	options_free(&s->opt);
	pthread_mutex_destroy(&s->lock);
	free(s);
}

/* ------------------------------------------------------------------------ */
/* Provenance trace: a JSON array of records, parsed strictly with yajl's
 * stream API on exactly its bytes (yajl_tree_parse
 * stops at a NUL and allows comments), depth-limited (yajl_tree_free recurses). */

struct trace_parse {
	struct mapping_trace *recs;
	size_t n, cap;
	int depth;
	bool in_record, failed, top_array;
	const char *key; /* the member being read, or NULL for one we ignore */
	struct mapping_trace cur;
	char *cur_rule;
	long long cur_line;
};

static void trace_rec_clear(struct mapping_trace *t)
{
	free(t->path);
	free(t->from_key);
	free((char *)t->file); /* allocated here, const only in mapping.h */
	free(t->what);
	memset(t, 0, sizeof(*t));
}

static void trace_free(struct mapping_trace *t, size_t n)
{
	for (size_t i = 0; i < n; i++)
		trace_rec_clear(&t[i]);
	free(t);
}

static int tr_start_map(void *ctx)
{
	struct trace_parse *p = ctx;

	if (++p->depth > TRACE_MAX_DEPTH || p->depth == 1)
		return 0; /* too deep, or not an array at the top */
	if (p->depth == 2) {
		p->in_record = true;
		p->key = NULL;
	}
	return 1;
}

static int tr_start_array(void *ctx)
{
	struct trace_parse *p = ctx;

	if (p->depth == 0)
		p->top_array = true;
	return ++p->depth <= TRACE_MAX_DEPTH;
}

static int tr_map_key(void *ctx, const unsigned char *s, size_t len)
{
	static const char *const names[] = { "path", "rule", "file", "line", "from", "what" };
	struct trace_parse *p = ctx;

	if (p->depth != 2)
		return 1;
	p->key = NULL;
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strlen(names[i]) == len && memcmp(names[i], s, len) == 0)
			p->key = names[i];
	return 1;
}

static int tr_string(void *ctx, const unsigned char *s, size_t len)
{
	struct trace_parse *p = ctx;
	char **slot = NULL, *v;

	if (p->depth != 2 || !p->key)
		return 1;
	if (strcmp(p->key, "path") == 0)
		slot = &p->cur.path;
	else if (strcmp(p->key, "rule") == 0)
		slot = &p->cur_rule;
	else if (strcmp(p->key, "file") == 0)
		slot = (char **)&p->cur.file;
	else if (strcmp(p->key, "from") == 0)
		slot = &p->cur.from_key;
	else if (strcmp(p->key, "what") == 0)
		slot = &p->cur.what;
	if (!slot)
		return 1;
	if (!(v = strndup((const char *)s, len))) {
		p->failed = true;
		return 0;
	}
	free(*slot);
	*slot = v;
	return 1;
}

static int tr_integer(void *ctx, long long v)
{
	struct trace_parse *p = ctx;

	if (p->depth == 2 && p->key && strcmp(p->key, "line") == 0)
		p->cur_line = v;
	return 1;
}

static int tr_double(void *ctx, double v)
{
	return 1;
}

static int tr_null(void *ctx)
{
	return 1;
}

static int tr_bool(void *ctx, int v)
{
	return 1;
}

/* "file:line" into file and line; a rule without a numeric line is a file. */
static bool trace_split_rule(struct trace_parse *p)
{
	char *colon = strrchr(p->cur_rule, ':');
	size_t digits = colon ? strspn(colon + 1, "0123456789") : 0;

	free((char *)p->cur.file);
	if (colon && digits > 0 && digits <= 9 && !colon[1 + digits]) {
		p->cur.line = atoi(colon + 1);
		p->cur.file = strndup(p->cur_rule, (size_t)(colon - p->cur_rule));
	} else {
		p->cur.line = 0;
		p->cur.file = strdup(p->cur_rule);
	}
	return p->cur.file != NULL;
}

static int tr_end_map(void *ctx)
{
	struct mapping_trace *r;
	struct trace_parse *p = ctx;

	if (p->depth-- != 2)
		return 1;
	p->in_record = false;
	p->cur.line = p->cur_line >= 0 && p->cur_line <= 1000000000 ? (int)p->cur_line : 0;
	if (p->cur_rule && !trace_split_rule(p))
		goto oom;
	free(p->cur_rule);
	p->cur_rule = NULL;
	p->cur_line = 0;
	if (!p->cur.path) { /* a record naming no path covers nothing */
		trace_rec_clear(&p->cur);
		return 1;
	}
	if (!(r = grow_array(p->recs, &p->cap, p->n + 1, sizeof(*r), 32)))
		goto oom;
	p->recs = r;
	p->recs[p->n++] = p->cur;
	memset(&p->cur, 0, sizeof(p->cur));
	return 1;
oom:
	p->failed = true;
	return 0;
}

static int tr_end_array(void *ctx)
{
	struct trace_parse *p = ctx;

	p->depth--;
	return 1;
}

static const yajl_callbacks trace_callbacks = {
	.yajl_null = tr_null,
	.yajl_boolean = tr_bool,
	.yajl_integer = tr_integer,
	.yajl_double = tr_double,
	.yajl_string = tr_string,
	.yajl_start_map = tr_start_map,
	.yajl_map_key = tr_map_key,
	.yajl_end_map = tr_end_map,
	.yajl_start_array = tr_start_array,
	.yajl_end_array = tr_end_array,
};

/* Returns 0 with the records, or -1 (malformed or no memory). */
static int trace_parse(const char *text, size_t len, struct mapping_trace **ret, size_t *ret_n)
{
	struct trace_parse p = { 0 };
	yajl_handle h = yajl_alloc(&trace_callbacks, NULL, &p);
	bool ok;

	*ret = NULL;
	*ret_n = 0;
	if (!h)
		return -1;
	ok = yajl_parse(h, (const unsigned char *)text, len) == yajl_status_ok &&
	     yajl_complete_parse(h) == yajl_status_ok && !p.failed;
	yajl_free(h);
	trace_rec_clear(&p.cur); /* a record cut short by an error */
	free(p.cur_rule);
	if (!ok || !p.top_array) {
		trace_free(p.recs, p.n);
		return -1;
	}
	*ret = p.recs;
	*ret_n = p.n;
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Comparison (no lock held) */

struct side_doc {
	const char *v2;
	size_t len; /* bytes offered */
	bool too_large;
	const char *trace;
	size_t trace_len;
	bool trace_dropped;
};

/* Returns whether the trace could be read (false also counts a bad one). */
static bool compare_docs(const struct shadow *s, const struct side_doc *tr,
			 const struct side_doc *real, struct shadow_result *r)
{
	struct bridge_error err;
	struct mapping_trace *recs = NULL;
	size_t n_recs = 0;
	bool trace_ok = true;

	bridge_error_clear(&err);
	if (tr->too_large || real->too_large) {
		const struct side_doc *big = tr->too_large ? tr : real;

		r->status = SHADOW_NOT_COMPARED;
		if (asprintf(&r->reason, "%s v2 is %zu bytes, over max_body (%zu)",
			     big == tr ? "translated" : "real", big->len, s->lim.max_body) < 0)
			r->reason = NULL;
		return true;
	}
	if (jsondiff_compare(tr->v2, tr->len, real->v2, real->len, &s->opt, &r->diff, &err) < 0) {
		r->status = SHADOW_NOT_COMPARED;
		r->reason = strdup(err.message);
		return true;
	}
	r->status = r->diff.n_added + r->diff.n_removed + r->diff.n_changed ? SHADOW_DIFFERENT
									    : SHADOW_IDENTICAL;
	if (r->status == SHADOW_IDENTICAL || (!tr->trace && !tr->trace_dropped))
		return true;
	if (tr->trace_dropped || trace_parse(tr->trace, tr->trace_len, &recs, &n_recs) < 0)
		return false;
	if (jsondiff_attribute(&r->diff, recs, n_recs, NULL, 0, &err) < 0)
		trace_ok = false;
	for (size_t i = 0; trace_ok && i < r->diff.n_entries; i++)
		if (!r->diff.entries[i].rule && !(r->diff.entries[i].rule = strdup("unmapped")))
			trace_ok = false;
	trace_free(recs, n_recs);
	return trace_ok;
}

/* ------------------------------------------------------------------------ */
/* Differing paths (lock held) */

static struct path_stat *path_get(struct shadow *s, const char *path)
{
	uint64_t h = siphash24(&s->key, path, strlen(path));
	size_t i = h & (PATH_SLOTS - 1);
	struct path_stat *p;

	for (; s->path_slots[i] >= 0; i = (i + 1) & (PATH_SLOTS - 1)) {
		p = &s->paths[s->path_slots[i]];
		if (p->hash == h && strcmp(p->path, path) == 0)
			return p;
	}
	if (s->n_paths == SHADOW_MAX_PATHS)
		return &s->other;
	p = &s->paths[s->n_paths];
	if (!(p->path = strdup(path)))
		return &s->other;
	p->hash = h;
	s->path_slots[i] = (int)s->n_paths++;
	return p;
}

static void path_count(struct shadow *s, const struct jsondiff_entry *e)
{
	struct path_stat *p = path_get(s, e->path);

	p->count++;
	p->kinds[e->kind]++;
	if (p == &s->other || !e->rule)
		return;
	if (strcmp(e->rule, "unmapped") == 0) {
		p->unmapped++;
		return;
	}
	for (size_t k = 0; k < PATH_RULES; k++) {
		if (p->rules[k] && strcmp(p->rules[k], e->rule) == 0) {
			p->rule_counts[k]++;
			return;
		}
		if (!p->rules[k]) {
			if ((p->rules[k] = strdup(e->rule)))
				p->rule_counts[k] = 1;
			return;
		}
	}
}

/* ------------------------------------------------------------------------ */
/* Offer */

static int offer_shared(struct shadow *s, enum shadow_side side, const char *route, const char *id,
			const char *state, const char *v2, size_t len, const char *trace_json,
			const char *key, size_t key_len, struct shadow_result *ret,
			struct bridge_error *err);
static void count_rejected(struct shadow *s);
static void expired_report(const struct store_shadow_entry *e, const char *reason,
			   void (*cb)(const struct shadow_expired *e, void *arg), void *arg);

static void report_gone(struct entry *gone, long long now_ms,
			void (*cb)(const struct shadow_expired *e, void *arg), void *arg,
			const char *reason)
{
	struct entry *next;

	for (; gone; gone = next) {
		struct shadow_expired x = {
			.route = gone->route,
			.side = gone->side,
			.participation_id = gone->id,
			.state = gone->state,
			.age_ms = age_of(gone, now_ms),
			.reason = reason,
		};

		next = gone->hnext;
		if (cb)
			cb(&x, arg);
		free(gone);
	}
}

static struct entry *entry_new(const struct shadow *s, enum shadow_side side, const char *key,
			       size_t key_len, const char *route, const char *id, const char *state,
			       const char *v2, size_t len, const char *trace, long long now_ms)
{
	size_t rl = strlen(route), il = strlen(id), sl = strlen(state);
	size_t tl = trace ? strlen(trace) : 0;
	bool too_large = len > s->lim.max_body, trace_dropped = trace && tl > s->lim.max_body;
	size_t keep = too_large ? 0 : len, tkeep = trace && !trace_dropped ? tl + 1 : 0;
	struct entry *e = malloc(sizeof(*e) + key_len + 1 + rl + 1 + il + 1 + sl + 1 + keep +
				 tkeep);
	char *d;

	if (!e)
		return NULL;
	memset(e, 0, sizeof(*e));
	e->side = side;
	e->arrived_ms = now_ms;
	e->too_large = too_large;
	e->trace_dropped = trace_dropped;
	d = e->data;
	e->key = memcpy(d, key, key_len + 1);
	e->key_len = key_len;
	d += key_len + 1;
	e->route = memcpy(d, route, rl + 1);
	d += rl + 1;
	e->id = memcpy(d, id, il + 1);
	d += il + 1;
	e->state = memcpy(d, state, sl + 1);
	d += sl + 1;
	e->v2 = keep ? memcpy(d, v2, keep) : d;
	e->v2_len = keep;
	e->v2_size = len;
	d += keep;
	if (tkeep) {
		e->trace = memcpy(d, trace, tkeep);
		e->trace_len = tl;
	}
	return e;
}

int shadow_offer(struct shadow *s, enum shadow_side side, const char *route,
		 const char *participation_id, const char *state, const char *v2, size_t len,
		 const char *trace_json, long long now_ms, struct shadow_result *ret,
		 struct bridge_error *err)
{
	char key[SHADOW_MAX_ROUTE + SHADOW_MAX_ID + SHADOW_MAX_STATE + 3];
	size_t key_len;
	uint64_t h;
	struct entry *mine, *other = NULL, *gone_ttl = NULL, *gone_cap = NULL;
	struct side_doc tr, real;
	bool trace_ok;

	memset(ret, 0, sizeof(*ret));
	if (!route)
		route = "";
	if (!state)
		state = "";
	if (side != SHADOW_TRANSLATED)
		trace_json = NULL;
	if (side != SHADOW_TRANSLATED && side != SHADOW_REAL)
		return bridge_error_set(err, "shadow: unknown side %d", (int)side);
	if (!participation_id || !field_ok(participation_id, SHADOW_MAX_ID, false) ||
	    !field_ok(state, SHADOW_MAX_STATE, true) || !field_ok(route, SHADOW_MAX_ROUTE, true) ||
	    (!v2 && len)) {
		pthread_mutex_lock(&s->lock);
		s->rejected++;
		pthread_mutex_unlock(&s->lock);
		count_rejected(s);
		if (!participation_id || !*participation_id)
			return bridge_error_set(err, "shadow: no participation id");
		if (!field_ok(participation_id, SHADOW_MAX_ID, false))
			return bridge_error_set(err,
						"shadow: participation id longer than %d bytes "
						"or holding control bytes",
						SHADOW_MAX_ID);
		if (!field_ok(state, SHADOW_MAX_STATE, true))
			return bridge_error_set(err,
						"shadow: state longer than %d bytes or holding "
						"control bytes",
						SHADOW_MAX_STATE);
		if (!field_ok(route, SHADOW_MAX_ROUTE, true))
			return bridge_error_set(err,
						"shadow: route name longer than %d bytes or "
						"holding control bytes",
						SHADOW_MAX_ROUTE);
		return bridge_error_set(err, "shadow: NULL body of %zu bytes", len);
	}
	key_len = key_make(key, route, participation_id, state);
	if (s->shared)
		return offer_shared(s, side, route, participation_id, state, v2, len, trace_json,
				    key, key_len, ret, err);
	h = siphash24(&s->key, key, key_len);
	/* Copied before locking; freed unused when it matches. */
	mine = entry_new(s, side, key, key_len, route, participation_id, state, v2, len, trace_json,
			 now_ms);
	if (!mine)
		return bridge_error_set(err, "out of memory");
	mine->hash = h;

	pthread_mutex_lock(&s->lock);
	s->seen[side]++;
	other = table_find(s, key, key_len, h);
	if (other && age_of(other, now_ms) >= s->lim.ttl_ms) {
		entry_retire(s, other, false, &gone_ttl);
		other = NULL;
	}
	if (other && other->side != side) {
		entry_unlink(s, other);
	} else {
		if (other) {
			entry_unlink(s, other);
			s->duplicates++;
			other->hnext = NULL;
			free(other); /* under the lock, but only a free */
			other = NULL;
		} else if (s->n_entries >= s->lim.max_entries && !TAILQ_EMPTY(&s->arrivals)) {
			entry_retire(s, TAILQ_FIRST(&s->arrivals), true, &gone_cap);
		}
		entry_link(s, mine);
		mine = NULL;
	}
	pthread_mutex_unlock(&s->lock);

	report_gone(gone_ttl, now_ms, s->on_expired, s->on_expired_arg, "ttl");
	report_gone(gone_cap, now_ms, s->on_expired, s->on_expired_arg, "capacity");
	if (!other)
		return 0;

	/* Matched: compare the waiting side with the offered bytes. */
	free(mine);
	{
		struct side_doc waiting = {
			.v2 = other->v2,
			.len = other->v2_size,
			.too_large = other->too_large,
			.trace = other->trace,
			.trace_len = other->trace_len,
			.trace_dropped = other->trace_dropped,
		};
		struct side_doc offered = {
			.v2 = v2,
			.len = len,
			.too_large = len > s->lim.max_body,
			.trace = trace_json,
			.trace_len = trace_json ? strlen(trace_json) : 0,
			.trace_dropped = trace_json && strlen(trace_json) > s->lim.max_body,
		};

		tr = side == SHADOW_TRANSLATED ? offered : waiting;
		real = side == SHADOW_TRANSLATED ? waiting : offered;
		if (tr.trace_dropped)
			tr.trace = NULL;
	}
	ret->first = other->side;
	ret->waited_ms = age_of(other, now_ms);
	trace_ok = compare_docs(s, &tr, &real, ret);
	free(other);

	pthread_mutex_lock(&s->lock);
	s->matched++;
	if (ret->status == SHADOW_IDENTICAL)
		s->identical++;
	else if (ret->status == SHADOW_DIFFERENT)
		s->different++;
	else
		s->not_compared++;
	if (!trace_ok)
		s->trace_errors++;
	for (size_t i = 0; i < ret->diff.n_entries; i++)
		path_count(s, &ret->diff.entries[i]);
	pthread_mutex_unlock(&s->lock);
	return 1;
}

struct sweep_ctx {
	void (*cb)(const struct shadow_expired *e, void *arg);
	void *arg;
};

static void sweep_cb(const struct store_shadow_entry *e, const char *reason, void *arg)
{
	struct sweep_ctx *c = arg;

	expired_report(e, reason, c->cb, c->arg);
}

void shadow_expire(struct shadow *s, long long now_ms,
		   void (*cb)(const struct shadow_expired *e, void *arg), void *arg)
{
	struct entry *gone = NULL, **tail = &gone;

	if (s->shared) {
		struct sweep_ctx c = { cb, arg };
		struct bridge_error err;
		int swept;

		/* one bridge at a time; the others skip this round */
		store_shadow_sweep(s->shared, s->lim.ttl_ms, s->lim.max_entries, sweep_cb, &c,
				   &swept, &err);
		return;
	}
	pthread_mutex_lock(&s->lock);
	/* Oldest first: append, not push. */
	while (TAILQ_FIRST(&s->arrivals) &&
	       age_of(TAILQ_FIRST(&s->arrivals), now_ms) >= s->lim.ttl_ms) {
		struct entry *e = TAILQ_FIRST(&s->arrivals);

		entry_unlink(s, e);
		s->expired_ttl[e->side]++;
		*tail = e;
		tail = &e->hnext;
	}
	pthread_mutex_unlock(&s->lock);
	report_gone(gone, now_ms, cb, arg, "ttl");
}

void shadow_result_clear(struct shadow_result *r)
{
	if (!r)
		return;
	jsondiff_clear(&r->diff);
	free(r->reason);
	memset(r, 0, sizeof(*r));
}

/* ------------------------------------------------------------------------ */
/* JSON output */

/* s as a JSON string; bytes that are not UTF-8 (a parser's message may
 * quote raw input) become U+FFFD. */
static int json_str(struct evbuffer *b, const char *s)
{
	struct buf t = BUF_INIT(SIZE_MAX);
	int rc = buf_json_quoted(&t, s, strlen(s), JSON_ESC_REPLACE) ? evbuffer_add(b, t.s, t.len)
								     : -1;

	buf_free(&t);
	return rc;
}

/* The buffer's bytes as a NUL-terminated malloc'd string, or NULL; frees b. */
static char *buffer_take(struct evbuffer *b, bool ok)
{
	size_t n = evbuffer_get_length(b);
	char *s = ok ? malloc(n + 1) : NULL;

	if (s) {
		evbuffer_remove(b, s, n);
		s[n] = '\0';
	}
	evbuffer_free(b);
	return s;
}

char *shadow_result_json(const struct shadow_result *r)
{
	struct evbuffer *b = evbuffer_new();
	struct bridge_error err;
	bool ok;

	if (!b)
		return NULL;
	ok = evbuffer_add_printf(b,
				 "{\"status\":\"%s\",\"first\":\"%s\",\"waited_ms\":%lld,"
				 "\"added\":%zu,\"removed\":%zu,\"changed\":%zu",
				 shadow_status_name(r->status), shadow_side_name(r->first),
				 r->waited_ms, r->diff.n_added, r->diff.n_removed,
				 r->diff.n_changed) > 0;
	if (ok && r->diff.truncated)
		ok = evbuffer_add_printf(b, ",\"truncated\":true") > 0;
	if (ok && r->reason)
		ok = evbuffer_add_printf(b, ",\"reason\":") > 0 && json_str(b, r->reason) == 0;
	ok = ok && evbuffer_add_printf(b, ",\"differences\":") > 0 &&
	     jsondiff_render_json(&r->diff, b, &err) == 0 && evbuffer_add(b, "}", 1) == 0;
	return buffer_take(b, ok);
}

static int path_by_count(const void *x, const void *y)
{
	const struct path_stat *a = *(const struct path_stat *const *)x;
	const struct path_stat *b = *(const struct path_stat *const *)y;

	if (a->count != b->count)
		return a->count > b->count ? -1 : 1;
	return strcmp(a->path ? a->path : OTHER_PATH, b->path ? b->path : OTHER_PATH);
}

/* The rule most often named for p: a "file:line", "unmapped", or NULL. */
static const char *path_rule(const struct path_stat *p)
{
	size_t best = PATH_RULES, best_count = 0;

	for (size_t k = 0; k < PATH_RULES && p->rules[k]; k++)
		if (p->rule_counts[k] > best_count) {
			best = k;
			best_count = p->rule_counts[k];
		}
	if (best < PATH_RULES && best_count >= p->unmapped)
		return p->rules[best];
	return p->unmapped ? "unmapped" : NULL;
}

static char *summary_render(struct shadow *s, size_t top_n)
{
	struct evbuffer *b = evbuffer_new();
	struct path_stat **v;
	size_t n = 0;
	bool ok;

	if (!b)
		return NULL;
	v = calloc(SHADOW_MAX_PATHS + 1, sizeof(*v));
	if (!v) {
		evbuffer_free(b);
		return NULL;
	}
	pthread_mutex_lock(&s->lock);
	ok = evbuffer_add_printf(
		     b,
		     "{\"seen\":{\"translated\":%zu,\"real\":%zu},\"matched\":%zu,\"identical\":%"
		     "zu,"
		     "\"different\":%zu,\"not_compared\":%zu,\"unmatched\":{\"translated\":%zu,"
		     "\"real\":%zu},"
		     "\"expired\":{\"translated\":%zu,\"real\":%zu,\"ttl\":%zu,\"capacity\":%zu},"
		     "\"duplicates\":%zu,\"rejected\":%zu,\"trace_errors\":%zu,"
		     "\"paths\":{\"distinct\":%zu,\"other\":%zu},\"top_paths\":[",
		     s->seen[SHADOW_TRANSLATED], s->seen[SHADOW_REAL], s->matched, s->identical,
		     s->different, s->not_compared, s->waiting[SHADOW_TRANSLATED],
		     s->waiting[SHADOW_REAL],
		     s->expired_ttl[SHADOW_TRANSLATED] + s->expired_capacity[SHADOW_TRANSLATED],
		     s->expired_ttl[SHADOW_REAL] + s->expired_capacity[SHADOW_REAL],
		     s->expired_ttl[0] + s->expired_ttl[1],
		     s->expired_capacity[0] + s->expired_capacity[1], s->duplicates, s->rejected,
		     s->trace_errors, s->n_paths, s->other.count) > 0;
	for (size_t i = 0; i < s->n_paths; i++)
		v[n++] = &s->paths[i];
	if (s->other.count)
		v[n++] = &s->other;
	qsort(v, n, sizeof(*v), path_by_count);
	for (size_t i = 0; ok && i < n && i < top_n; i++) {
		const struct path_stat *p = v[i];
		const char *rule = p == &s->other ? NULL : path_rule(p);

		ok = evbuffer_add_printf(b, "%s{\"path\":", i ? "," : "") > 0 &&
		     json_str(b, p == &s->other ? OTHER_PATH : p->path) == 0 &&
		     evbuffer_add_printf(b,
					 ",\"count\":%zu,\"added\":%zu,\"removed\":%zu,"
					 "\"changed\":%zu,\"rule\":",
					 p->count, p->kinds[JSONDIFF_ADDED],
					 p->kinds[JSONDIFF_REMOVED],
					 p->kinds[JSONDIFF_CHANGED]) > 0 &&
		     (rule ? json_str(b, rule) : evbuffer_add(b, "null", 4)) == 0 &&
		     evbuffer_add(b, "}", 1) == 0;
	}
	ok = ok && evbuffer_add_printf(b,
				       "],\"limits\":{\"max_entries\":%zu,\"ttl_ms\":%ld,"
				       "\"max_body\":%zu}}",
				       s->lim.max_entries, s->lim.ttl_ms, s->lim.max_body) > 0;
	pthread_mutex_unlock(&s->lock);
	free(v);
	return buffer_take(b, ok);
}

/* ------------------------------------------------------------------------ */
/* Shared: the entries and the totals in the shared store */

void shadow_use_store(struct shadow *s, struct store *st)
{
	s->shared = st;
}

/* FNV-1a: the key's advisory lock, the same on every bridge. */
static unsigned key_lock_hash(const char *key, size_t n)
{
	uint32_t h = 2166136261u;

	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)key[i]) * 16777619u;
	return h;
}

static void count_rejected(struct shadow *s)
{
	static const char *const name[1] = { "rejected" };
	static const long long one[1] = { 1 };
	struct bridge_error err;

	if (s->shared)
		store_shadow_count(s->shared, name, one, 1, NULL, 0, &err);
}

static void expired_report(const struct store_shadow_entry *e, const char *reason,
			   void (*cb)(const struct shadow_expired *e, void *arg), void *arg)
{
	struct shadow_expired x = {
		.route = e->route,
		.side = e->side ? SHADOW_REAL : SHADOW_TRANSLATED,
		.participation_id = e->participation_id,
		.state = e->state,
		.age_ms = e->age_ms,
		.reason = reason,
	};

	if (cb)
		cb(&x, arg);
}

/* shadow_offer on the shared store: key already checked and made. */
static int offer_shared(struct shadow *s, enum shadow_side side, const char *route, const char *id,
			const char *state, const char *v2, size_t len, const char *trace_json,
			const char *key, size_t key_len, struct shadow_result *ret,
			struct bridge_error *err)
{
	size_t rl = strlen(route), il = strlen(id), tl = trace_json ? strlen(trace_json) : 0;
	struct store_shadow_offer o = {
		.route = route,
		.id_key = key + rl + 1,
		.state_key = key + rl + 1 + il + 1,
		.side = side == SHADOW_REAL,
		.participation_id = id,
		.state = state,
		.too_large = len > s->lim.max_body,
		.body_len = (long long)len,
		.trace_dropped = trace_json && tl > s->lim.max_body,
		.key_hash = key_lock_hash(key, key_len),
	};
	struct store_shadow_entry other, expired;
	struct side_doc tr, real;
	char keybuf[SHADOW_MAX_ROUTE + SHADOW_MAX_ID + SHADOW_MAX_STATE + 3];
	const char *names[5];
	long long n[5];
	struct store_shadow_path *paths = NULL;
	int dup = 0, rc;
	bool trace_ok;
	size_t k = 0;

	/* the key's three parts, NUL-separated */
	memcpy(keybuf, key, key_len + 1);
	keybuf[rl] = keybuf[rl + 1 + il] = '\0';
	o.id_key = keybuf + rl + 1;
	o.state_key = keybuf + rl + 1 + il + 1;
	o.body = o.too_large ? "" : v2;
	o.len = o.too_large ? 0 : len;
	o.trace = trace_json && !o.trace_dropped ? trace_json : NULL;
	rc = store_shadow_offer(s->shared, &o, s->lim.ttl_ms, &other, &expired, &dup, err);
	if (rc < 0)
		return -1;
	if (expired.present)
		expired_report(&expired, "ttl", s->on_expired, s->on_expired_arg);
	store_shadow_entry_clear(&expired);
	if (rc == 0)
		return 0;
	{
		struct side_doc waiting = {
			.v2 = other.body,
			.len = (size_t)other.body_len,
			.too_large = other.too_large,
			.trace = other.trace,
			.trace_len = other.trace_len,
			.trace_dropped = other.trace_dropped,
		};
		struct side_doc offered = {
			.v2 = v2,
			.len = len,
			.too_large = o.too_large,
			.trace = o.trace,
			.trace_len = o.trace ? tl : 0,
			.trace_dropped = o.trace_dropped,
		};

		tr = side == SHADOW_TRANSLATED ? offered : waiting;
		real = side == SHADOW_TRANSLATED ? waiting : offered;
	}
	ret->first = other.side ? SHADOW_REAL : SHADOW_TRANSLATED;
	ret->waited_ms = other.age_ms;
	trace_ok = compare_docs(s, &tr, &real, ret);
	store_shadow_entry_clear(&other);
	names[k] = "matched";
	n[k++] = 1;
	names[k] = ret->status == SHADOW_IDENTICAL   ? "identical"
		   : ret->status == SHADOW_DIFFERENT ? "different"
						     : "not_compared";
	n[k++] = 1;
	if (!trace_ok) {
		names[k] = "trace_errors";
		n[k++] = 1;
	}
	if (ret->diff.n_entries)
		paths = calloc(ret->diff.n_entries, sizeof(*paths));
	for (size_t i = 0; paths && i < ret->diff.n_entries; i++) {
		paths[i].path = ret->diff.entries[i].path;
		paths[i].kind = (int)ret->diff.entries[i].kind;
		paths[i].rule = ret->diff.entries[i].rule;
	}
	/* the comparison was made (and is the caller's): a failure here only
	 * leaves it out of the totals */
	store_shadow_count(s->shared, names, n, k, paths, paths ? ret->diff.n_entries : 0, err);
	free(paths);
	return 1;
}

static void snapshot_count_none(const char *name, long long n, void *arg)
{
}

static void snapshot_count(const char *name, long long n, void *arg)
{
	struct shadow *x = arg;
	static const struct {
		const char *name;
		size_t off;
	} fields[] = {
		{ "seen_translated", offsetof(struct shadow, seen[SHADOW_TRANSLATED]) },
		{ "seen_real", offsetof(struct shadow, seen[SHADOW_REAL]) },
		{ "matched", offsetof(struct shadow, matched) },
		{ "identical", offsetof(struct shadow, identical) },
		{ "different", offsetof(struct shadow, different) },
		{ "not_compared", offsetof(struct shadow, not_compared) },
		{ "duplicates", offsetof(struct shadow, duplicates) },
		{ "rejected", offsetof(struct shadow, rejected) },
		{ "trace_errors", offsetof(struct shadow, trace_errors) },
		{ "expired_ttl_translated",
		  offsetof(struct shadow, expired_ttl[SHADOW_TRANSLATED]) },
		{ "expired_ttl_real", offsetof(struct shadow, expired_ttl[SHADOW_REAL]) },
		{ "expired_capacity_translated",
		  offsetof(struct shadow, expired_capacity[SHADOW_TRANSLATED]) },
		{ "expired_capacity_real", offsetof(struct shadow, expired_capacity[SHADOW_REAL]) },
	};

	for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		if (strcmp(fields[i].name, name) == 0)
			*(size_t *)((char *)x + fields[i].off) = n > 0 ? (size_t)n : 0;
}

static void snapshot_path(const struct store_shadow_path_total *t, void *arg)
{
	struct shadow *x = arg;
	struct path_stat *p;

	if (x->n_paths >= SHADOW_MAX_PATHS || !(x->paths[x->n_paths].path = strdup(t->path)))
		return;
	p = &x->paths[x->n_paths++];
	p->count = (size_t)t->count;
	p->kinds[JSONDIFF_ADDED] = (size_t)t->added;
	p->kinds[JSONDIFF_REMOVED] = (size_t)t->removed;
	p->kinds[JSONDIFF_CHANGED] = (size_t)t->changed;
	p->unmapped = (size_t)t->unmapped;
	if (t->rule && (p->rules[0] = strdup(t->rule)))
		p->rule_counts[0] = (size_t)t->rule_n;
}

/* The cluster's totals, rendered as the in-memory ones are. */
static char *summary_shared(struct shadow *s, size_t top_n)
{
	struct shadow *x = calloc(1, sizeof(*x));
	struct bridge_error err;
	long long waiting[2] = { 0, 0 };
	char *out = NULL;

	if (!x || !(x->paths = calloc(SHADOW_MAX_PATHS, sizeof(*x->paths)))) {
		free(x);
		return NULL;
	}
	pthread_mutex_init(&x->lock, NULL);
	x->lim = s->lim;
	bridge_error_clear(&err);
	if (store_shadow_totals(s->shared, SHADOW_MAX_PATHS, snapshot_count, snapshot_path, x,
				waiting, &err) == 0) {
		x->waiting[SHADOW_TRANSLATED] = (size_t)waiting[0];
		x->waiting[SHADOW_REAL] = (size_t)waiting[1];
		out = summary_render(x, top_n);
	}
	for (size_t i = 0; i < x->n_paths; i++)
		path_stat_clear(&x->paths[i]);
	free(x->paths);
	pthread_mutex_destroy(&x->lock);
	free(x);
	return out;
}

char *shadow_summary_json(struct shadow *s, size_t top_n)
{
	return s->shared ? summary_shared(s, top_n) : summary_render(s, top_n);
}

size_t shadow_waiting(struct shadow *s)
{
	size_t n;

	if (s->shared) {
		long long waiting[2] = { 0, 0 };
		struct bridge_error err;

		store_shadow_totals(s->shared, 0, snapshot_count_none, NULL, NULL, waiting, &err);
		return (size_t)(waiting[0] + waiting[1]);
	}

	pthread_mutex_lock(&s->lock);
	n = s->n_entries;
	pthread_mutex_unlock(&s->lock);
	return n;
}
