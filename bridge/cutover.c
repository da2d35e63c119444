#include <ctype.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>
#include <openssl/hmac.h>

#include "bridge/buf.h"
#include "bridge/clock.h"
#include "bridge/config.h"
#include "bridge/cutover.h"
#include "bridge/log.h"
#include "bridge/metrics.h"

/* The bucket's key: fixed, so every instance and every restart puts a
 * participation in the same bucket. */
static const char bucket_key[] = "webhook-bridge cutover bucket";

static const char *const status_names[] = { "ramping", "killed", "rolled_back" };

const char *cutover_status_name(enum cutover_status s)
{
	return (unsigned)s < 3 ? status_names[s] : "?";
}

void cutover_route_config_default(struct cutover_route_config *c)
{
	c->ramp = 0;
	c->copy = 1;
	c->max_failure_rate = 0.05;
	c->window_s = 300;
	c->min_posts = 20;
}

/* One second of the rollback window: posts and failures per side (v2: as
 * primary only; v1: primary and copies). */
struct second {
	long long sec;
	unsigned n[2], failed[2];
};

struct minute {
	long long min;
	unsigned ok[2], failed[2];
};

struct entry {
	char *name;
	int cutover; /* a dual route of the latest config */
	struct cutover_route_config conf;
	struct cutover_row row;
	int has_row;
	struct second *win; /* conf.window_s slots */
	int win_len;
	struct minute minutes[CUTOVER_MINUTES];
	unsigned long long posts[2][2]; /* [primary side][failed] */
	unsigned long long rollbacks, changes;
	struct cutover_event last_rollback; /* figures (route/by not kept) */
	long long last_rollback_ms;         /* 0: none */
};

struct cutover {
	pthread_mutex_t lock; /* entries and their state */
	pthread_mutex_t store_lock;
	struct entry **entries;
	size_t n, cap;
	struct cutover_backend backend;
	cutover_event_cb cb;
	void *cb_arg;
	unsigned long long store_errors;
};

int cutover_bucket(const char *route, const char *participation_id)
{
	unsigned char msg[1024], md[32];
	unsigned md_len = 0;
	size_t rl = strlen(route), pl = strlen(participation_id), n = 0;
	uint64_t v = 0;

	/* route, a newline, the id case-folded (v1 posts may vary its case) */
	if (rl > 500)
		rl = 500;
	memcpy(msg, route, rl);
	n = rl;
	msg[n++] = '\n';
	for (size_t i = 0; i < pl && n < sizeof(msg); i++)
		msg[n++] = (unsigned char)tolower((unsigned char)participation_id[i]);
	if (!HMAC(EVP_sha256(), bucket_key, (int)sizeof(bucket_key) - 1, msg, n, md, &md_len))
		return 99; /* never v2 by accident */
	for (int i = 0; i < 8; i++)
		v = v << 8 | md[i];
	return (int)(v % 100);
}

/* ---- entries (under c->lock) ------------------------------------------- */

static struct entry *entry_find(struct cutover *c, const char *name)
{
	for (size_t i = 0; i < c->n; i++)
		if (strcmp(c->entries[i]->name, name) == 0)
			return c->entries[i];
	return NULL;
}

static struct entry *entry_get(struct cutover *c, const char *name)
{
	struct entry *e = entry_find(c, name), **grown;

	if (e)
		return e;
	grown = grow_array(c->entries, &c->cap, c->n + 1, sizeof(*grown), 16);
	if (!grown)
		return NULL;
	c->entries = grown;
	e = calloc(1, sizeof(*e));
	if (!e || !(e->name = strdup(name))) {
		free(e);
		return NULL;
	}
	cutover_route_config_default(&e->conf);
	snprintf(e->row.route, sizeof(e->row.route), "%s", name);
	c->entries[c->n++] = e;
	return e;
}

static void window_reset(struct entry *e)
{
	if (e->win)
		memset(e->win, 0, (size_t)e->win_len * sizeof(*e->win));
}

static void window_size(struct entry *e, int len)
{
	struct second *w;

	if (len == e->win_len && e->win)
		return;
	w = calloc((size_t)len, sizeof(*w));
	if (!w)
		return; /* the old window stays */
	free(e->win);
	e->win = w;
	e->win_len = len;
}

/* Posts and failures per side over the window ending at sec. */
static void window_sum(const struct entry *e, long long sec, long long n[2], long long failed[2])
{
	n[0] = n[1] = failed[0] = failed[1] = 0;
	for (int i = 0; e->win && i < e->win_len; i++) {
		const struct second *s = &e->win[i];

		if (s->sec > sec - e->win_len && s->sec <= sec)
			for (int k = 0; k < 2; k++) {
				n[k] += s->n[k];
				failed[k] += s->failed[k];
			}
	}
}

/* ---- the store ----------------------------------------------------------- */

static void store_error(struct cutover *c, const char *route, const char *message)
{
	struct cutover_event ev = { .kind = CUTOVER_EVENT_STORE_ERROR,
				    .route = route,
				    .error = message };

	__atomic_fetch_add(&c->store_errors, 1, __ATOMIC_RELAXED);
	if (c->cb)
		c->cb(&ev, c->cb_arg);
}

static int store_set(struct cutover *c, const struct cutover_row *r, struct bridge_error *err)
{
	int rc = 0;

	if (!c->backend.ops)
		return 0;
	pthread_mutex_lock(&c->store_lock);
	rc = c->backend.ops->set(c->backend.impl, r, err);
	pthread_mutex_unlock(&c->store_lock);
	return rc;
}

struct loaded {
	struct cutover_row *rows;
	size_t n, cap;
};

static int collect_row(const struct cutover_row *r, void *arg)
{
	struct loaded *l = arg;

	struct cutover_row *g = grow_array(l->rows, &l->cap, l->n + 1, sizeof(*g), 16);

	if (!g)
		return -1;
	l->rows = g;
	l->rows[l->n++] = *r;
	return 0;
}

static int store_load(struct cutover *c, struct loaded *l, struct bridge_error *err)
{
	int rc;

	memset(l, 0, sizeof(*l));
	if (!c->backend.ops)
		return 0;
	pthread_mutex_lock(&c->store_lock);
	rc = c->backend.ops->load(c->backend.impl, collect_row, l, err);
	pthread_mutex_unlock(&c->store_lock);
	return rc;
}

/* ---- life -------------------------------------------------------------- */

struct cutover *cutover_new(struct cutover_backend *backend, cutover_event_cb cb, void *arg)
{
	struct cutover *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_init(&c->store_lock, NULL);
	if (backend) {
		c->backend = *backend;
		memset(backend, 0, sizeof(*backend));
	}
	c->cb = cb;
	c->cb_arg = arg;
	return c;
}

int cutover_set_backend(struct cutover *c, struct cutover_backend *backend)
{
	int rc = -1;

	pthread_mutex_lock(&c->store_lock);
	if (!c->backend.ops) {
		c->backend = *backend;
		memset(backend, 0, sizeof(*backend));
		rc = 0;
	}
	pthread_mutex_unlock(&c->store_lock);
	return rc;
}

int cutover_has_backend(struct cutover *c)
{
	int has;

	pthread_mutex_lock(&c->store_lock);
	has = c->backend.ops != NULL;
	pthread_mutex_unlock(&c->store_lock);
	return has;
}

void cutover_free(struct cutover *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n; i++) {
		free(c->entries[i]->name);
		free(c->entries[i]->win);
		free(c->entries[i]);
	}
	free(c->entries);
	cutover_backend_close(&c->backend);
	pthread_mutex_destroy(&c->lock);
	pthread_mutex_destroy(&c->store_lock);
	free(c);
}

void cutover_backend_close(struct cutover_backend *b)
{
	if (!b)
		return;
	if (b->ops)
		b->ops->close(b->impl);
	free(b->where);
	memset(b, 0, sizeof(*b));
}

/* Apply stored rows to the entries; events for the ones that changed
 * (kind FOLLOWED), unless quiet. */
static void rows_apply(struct cutover *c, const struct loaded *l, int quiet)
{
	for (size_t i = 0; i < l->n; i++) {
		const struct cutover_row *r = &l->rows[i];
		struct cutover_event ev;
		struct entry *e;
		int changed;

		pthread_mutex_lock(&c->lock);
		e = entry_get(c, r->route);
		if (!e) {
			pthread_mutex_unlock(&c->lock);
			continue;
		}
		changed = e->has_row && (e->row.ramp != r->ramp || e->row.status != r->status);
		memset(&ev, 0, sizeof(ev));
		ev.kind = CUTOVER_EVENT_FOLLOWED;
		ev.old_ramp = e->row.ramp;
		ev.old_status = e->row.status;
		ev.new_ramp = r->ramp;
		ev.new_status = r->status;
		if (changed && r->ramp > e->row.ramp)
			window_reset(e); /* an operator raised it: a fresh window */
		e->row = *r;
		e->has_row = 1;
		pthread_mutex_unlock(&c->lock);
		if (changed && !quiet && c->cb) {
			ev.route = r->route;
			ev.by = r->by;
			c->cb(&ev, c->cb_arg);
		}
	}
}

int cutover_configure(struct cutover *c, const struct bridge_config *cfg, struct bridge_error *err)
{
	struct loaded l;

	if (store_load(c, &l, err) < 0) {
		free(l.rows);
		return -1;
	}
	rows_apply(c, &l, 0);
	free(l.rows);
	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < c->n; i++)
		c->entries[i]->cutover = 0;
	pthread_mutex_unlock(&c->lock);
	for (size_t i = 0; i < cfg->n_routes; i++) {
		const struct bridge_route *r = &cfg->routes[i];
		struct cutover_row row;
		struct entry *e;
		int inserted = 1, need_row;

		pthread_mutex_lock(&c->lock);
		e = entry_get(c, r->name);
		if (!e) {
			pthread_mutex_unlock(&c->lock);
			return bridge_error_set(err, "out of memory");
		}
		e->cutover = r->mode == ROUTE_DUAL;
		if (!e->cutover) {
			pthread_mutex_unlock(&c->lock);
			continue;
		}
		if (e->conf.window_s != r->cutover.window_s || !e->win)
			window_size(e, r->cutover.window_s);
		e->conf = r->cutover;
		need_row = !e->has_row;
		memset(&row, 0, sizeof(row));
		snprintf(row.route, sizeof(row.route), "%s", r->name);
		row.ramp = r->cutover.ramp;
		row.status = CUTOVER_RAMPING;
		row.changed_ms = clock_wall_ms();
		snprintf(row.by, sizeof(row.by), "config");
		if (need_row) {
			e->row = row;
			e->has_row = 1;
		}
		pthread_mutex_unlock(&c->lock);
		if (!need_row)
			continue;
		if (c->backend.ops) {
			pthread_mutex_lock(&c->store_lock);
			if (c->backend.ops->init(c->backend.impl, &row, &inserted, err) < 0) {
				pthread_mutex_unlock(&c->store_lock);
				return -1;
			}
			pthread_mutex_unlock(&c->store_lock);
		}
		if (!inserted) { /* another writer was first: follow its row */
			if (store_load(c, &l, err) < 0) {
				free(l.rows);
				return -1;
			}
			rows_apply(c, &l, 1);
			free(l.rows);
		} else if (c->cb) {
			struct cutover_event ev = { .kind = CUTOVER_EVENT_INITIAL,
						    .route = r->name,
						    .new_ramp = row.ramp,
						    .by = "config" };

			c->cb(&ev, c->cb_arg);
		}
	}
	return 0;
}

int cutover_refresh(struct cutover *c, struct bridge_error *err)
{
	struct loaded l;
	int rc;

	if (!c->backend.ops)
		return 0;
	pthread_mutex_lock(&c->store_lock);
	rc = c->backend.ops->changed(c->backend.impl, err);
	pthread_mutex_unlock(&c->store_lock);
	if (rc <= 0)
		return rc;
	if (store_load(c, &l, err) < 0) {
		free(l.rows);
		return -1;
	}
	rows_apply(c, &l, 0);
	free(l.rows);
	return 1;
}

/* ---- the decision ------------------------------------------------------- */

int cutover_primary_v2(struct cutover *c, const char *route, const char *participation_id,
		       int *ret_copy)
{
	struct entry *e;
	int ramp = 0, copy = 1;

	if (ret_copy)
		*ret_copy = 1;
	if (!c || !route)
		return 0;
	pthread_mutex_lock(&c->lock);
	e = entry_find(c, route);
	if (e && e->cutover) {
		ramp = e->row.ramp;
		copy = e->conf.copy;
	}
	pthread_mutex_unlock(&c->lock);
	if (ret_copy)
		*ret_copy = copy;
	if (ramp <= 0 || !participation_id || !participation_id[0])
		return 0;
	return ramp >= 100 || cutover_bucket(route, participation_id) < ramp;
}

/* Under c->lock: whether the window now calls for the rollback; fills ev. */
static int rollback_due(struct entry *e, long long sec, struct cutover_event *ev)
{
	long long n[2], failed[2];
	double v2_rate, v1_rate;

	if (e->row.ramp <= 0)
		return 0;
	window_sum(e, sec, n, failed);
	if (n[CUTOVER_V2] < e->conf.min_posts)
		return 0;
	v2_rate = (double)failed[CUTOVER_V2] / (double)n[CUTOVER_V2];
	v1_rate = n[CUTOVER_V1] ? (double)failed[CUTOVER_V1] / (double)n[CUTOVER_V1] : 0;
	if (!(v2_rate > e->conf.max_failure_rate))
		return 0;
	if (n[CUTOVER_V1] && !(v2_rate > v1_rate))
		return 0; /* v1 fails as much: not the new importer's fault */
	memset(ev, 0, sizeof(*ev));
	ev->kind = CUTOVER_EVENT_ROLLBACK;
	ev->old_ramp = e->row.ramp;
	ev->old_status = e->row.status;
	ev->new_ramp = 0;
	ev->new_status = CUTOVER_ROLLED_BACK;
	ev->v2_posts = n[CUTOVER_V2];
	ev->v2_failed = failed[CUTOVER_V2];
	ev->v1_posts = n[CUTOVER_V1];
	ev->v1_failed = failed[CUTOVER_V1];
	ev->v2_rate = v2_rate;
	ev->v1_rate = v1_rate;
	ev->max_rate = e->conf.max_failure_rate;
	ev->window_s = e->conf.window_s;
	ev->by = "rollback";
	return 1;
}

void cutover_observe(struct cutover *c, const char *route, enum cutover_side side, int primary,
		     int ok, long long now_ms)
{
	struct cutover_event ev;
	struct cutover_row row;
	struct bridge_error err;
	struct entry *e;
	long long sec = now_ms / 1000, min = now_ms / 60000;
	int rolled = 0;

	if (!c || !route || (side != CUTOVER_V1 && side != CUTOVER_V2))
		return;
	pthread_mutex_lock(&c->lock);
	e = entry_get(c, route);
	if (!e) {
		pthread_mutex_unlock(&c->lock);
		return;
	}
	{
		struct minute *m = &e->minutes[min % CUTOVER_MINUTES];

		if (m->min != min)
			memset(m, 0, sizeof(*m));
		m->min = min;
		if (ok)
			m->ok[side]++;
		else
			m->failed[side]++;
	}
	if (primary)
		e->posts[side][!ok]++;
	if (e->cutover && e->win && (side == CUTOVER_V1 || primary)) {
		struct second *s = &e->win[sec % e->win_len];

		if (s->sec != sec)
			memset(s, 0, sizeof(*s));
		s->sec = sec;
		s->n[side]++;
		s->failed[side] += !ok;
		if (side == CUTOVER_V2 && !ok && rollback_due(e, sec, &ev)) {
			rolled = 1;
			e->row.ramp = 0;
			e->row.status = CUTOVER_ROLLED_BACK;
			e->row.changed_ms = clock_wall_ms();
			snprintf(e->row.by, sizeof(e->row.by), "rollback");
			e->rollbacks++;
			e->changes++;
			e->last_rollback = ev;
			e->last_rollback_ms = e->row.changed_ms;
			row = e->row;
		}
	}
	pthread_mutex_unlock(&c->lock);
	if (!rolled)
		return;
	bridge_error_clear(&err);
	if (store_set(c, &row, &err) < 0)
		store_error(c, route, err.message);
	ev.route = route;
	if (c->cb)
		c->cb(&ev, c->cb_arg);
}

int cutover_apply(struct cutover *c, const struct cutover_change *ch, struct bridge_error *err)
{
	int changed = 0, found = 0;

	if (ch->ramp > 100 || ch->ramp < -1)
		return bridge_error_set(err, "ramp must be 0..100");
	for (size_t i = 0;; i++) {
		struct cutover_row row, old;
		struct cutover_event ev;
		struct entry *e;

		pthread_mutex_lock(&c->lock);
		if (i >= c->n) {
			pthread_mutex_unlock(&c->lock);
			break;
		}
		e = c->entries[i];
		if (!e->cutover || (ch->route && strcmp(ch->route, e->name) != 0)) {
			pthread_mutex_unlock(&c->lock);
			continue;
		}
		found++;
		old = e->row;
		row = e->row;
		if (ch->kill) {
			row.ramp = 0;
			row.status = CUTOVER_KILLED;
		} else if (ch->ramp >= 0) {
			row.ramp = ch->ramp;
			row.status = CUTOVER_RAMPING;
		}
		row.changed_ms = clock_wall_ms();
		snprintf(row.by, sizeof(row.by), "%s", ch->by ? ch->by : "?");
		pthread_mutex_unlock(&c->lock);
		if (row.ramp == old.ramp && row.status == old.status)
			continue;
		/* stored first: a change that cannot be kept is not made */
		if (store_set(c, &row, err) < 0)
			return -1;
		pthread_mutex_lock(&c->lock);
		if (row.ramp > e->row.ramp || e->row.status != CUTOVER_RAMPING)
			window_reset(e);
		e->row = row;
		e->changes++;
		pthread_mutex_unlock(&c->lock);
		changed++;
		if (!ch->route)
			continue; /* one event for all, below */
		memset(&ev, 0, sizeof(ev));
		ev.kind = CUTOVER_EVENT_CHANGED;
		ev.route = row.route;
		ev.old_ramp = old.ramp;
		ev.old_status = old.status;
		ev.new_ramp = row.ramp;
		ev.new_status = row.status;
		ev.by = row.by;
		ev.n_routes = 1;
		if (c->cb)
			c->cb(&ev, c->cb_arg);
	}
	if (!ch->route && c->cb) {
		struct cutover_event ev = { .kind = CUTOVER_EVENT_CHANGED,
					    .new_ramp = ch->kill ? 0 : ch->ramp,
					    .new_status = ch->kill ? CUTOVER_KILLED
								   : CUTOVER_RAMPING,
					    .by = ch->by,
					    .n_routes = changed };

		c->cb(&ev, c->cb_arg);
	}
	if (ch->route && !found) {
		bridge_error_set(err, "no route '%.200s' with a cutover (mode = \"dual\")",
				 ch->route);
		snprintf(err->key, sizeof(err->key), "route");
		return -1;
	}
	return changed;
}

/* ---- reports -------------------------------------------------------------- */

static const char *primary_name(int ramp)
{
	return ramp <= 0 ? "v1" : ramp >= 100 ? "v2" : "split";
}

static char *buffer_string(struct evbuffer *b)
{
	size_t n = evbuffer_get_length(b);
	char *s = malloc(n + 1);

	if (s) {
		evbuffer_remove(b, s, n);
		s[n] = '\0';
	}
	evbuffer_free(b);
	return s;
}

/* {"routes":[ITEM,...]: under the lock, one {"route":NAME,...} per
 * configured route (only those with a cutover when cutover_only), the
 * members after the name written by item (e is NULL for a route the
 * cutover does not know).  The caller closes the object; NULL on out of
 * memory. */
static struct evbuffer *routes_json(struct cutover *c, const struct bridge_config *cfg,
				    int cutover_only, long long now,
				    void (*item)(struct evbuffer *b, const struct entry *e,
						 long long now))
{
	struct evbuffer *b = evbuffer_new();
	int first = 1;

	if (!b)
		return NULL;
	evbuffer_add_printf(b, "{\"routes\":[");
	pthread_mutex_lock(&c->lock);
	for (size_t i = 0; i < cfg->n_routes; i++) {
		const struct entry *e = entry_find(c, cfg->routes[i].name);

		if (cutover_only && (!e || !e->cutover))
			continue;
		evbuffer_add_printf(b, "%s{\"route\":", first ? "" : ",");
		first = 0;
		json_escape_add(b, cfg->routes[i].name);
		item(b, e, now);
		evbuffer_add_printf(b, "}");
	}
	pthread_mutex_unlock(&c->lock);
	evbuffer_add_printf(b, "]");
	return b;
}

static void state_item(struct evbuffer *b, const struct entry *e, long long now)
{
	long long n[2], failed[2];

	window_sum(e, now / 1000, n, failed);
	evbuffer_add_printf(b,
			    ",\"ramp\":%d,\"primary\":\"%s\",\"status\":\"%s\","
			    "\"copy\":%s,\"changed_at_ms\":%lld,\"by\":",
			    e->row.ramp, primary_name(e->row.ramp),
			    cutover_status_name(e->row.status), e->conf.copy ? "true" : "false",
			    e->row.changed_ms);
	json_escape_add(b, e->row.by);
	evbuffer_add_printf(b,
			    ",\"rollback\":{\"max_failure_rate\":%g,\"window_s\":%d,"
			    "\"min_posts\":%d,\"rollbacks\":%llu",
			    e->conf.max_failure_rate, e->conf.window_s, e->conf.min_posts,
			    e->rollbacks);
	if (e->last_rollback_ms)
		evbuffer_add_printf(b,
				    ",\"last\":{\"at_ms\":%lld,\"v2_posts\":%lld,"
				    "\"v2_failed\":%lld,\"v2_failure_rate\":%.4f,"
				    "\"v1_posts\":%lld,\"v1_failed\":%lld,"
				    "\"v1_failure_rate\":%.4f,\"ramp_before\":%d}",
				    e->last_rollback_ms, e->last_rollback.v2_posts,
				    e->last_rollback.v2_failed, e->last_rollback.v2_rate,
				    e->last_rollback.v1_posts, e->last_rollback.v1_failed,
				    e->last_rollback.v1_rate, e->last_rollback.old_ramp);
	evbuffer_add_printf(b,
			    "},\"window\":{\"v1_posts\":%lld,\"v1_failed\":%lld,"
			    "\"v2_posts\":%lld,\"v2_failed\":%lld},"
			    "\"posts\":{\"v1_ok\":%llu,\"v1_failed\":%llu,\"v2_ok\":%llu,"
			    "\"v2_failed\":%llu}",
			    n[0], failed[0], n[1], failed[1], e->posts[0][0], e->posts[0][1],
			    e->posts[1][0], e->posts[1][1]);
}

char *cutover_state_json(struct cutover *c, const struct bridge_config *cfg)
{
	struct evbuffer *b = routes_json(c, cfg, 1, clock_wall_ms(), state_item);

	if (!b)
		return NULL;
	evbuffer_add_printf(b, ",\"store\":");
	json_escape_add(b, c->backend.where ? c->backend.where : "memory");
	evbuffer_add_printf(b, "}");
	return buffer_string(b);
}

/* the last CUTOVER_MINUTES minutes up to now_ms, oldest first */
static void history_item(struct evbuffer *b, const struct entry *e, long long now_ms)
{
	long long now_min = now_ms / 60000;

	evbuffer_add_printf(b, ",\"minutes\":[");
	for (long long m = now_min - CUTOVER_MINUTES + 1; m <= now_min; m++) {
		const struct minute *x = e ? &e->minutes[m % CUTOVER_MINUTES] : NULL;
		int here = x && x->min == m;

		evbuffer_add_printf(b,
				    "%s{\"t\":%lld,\"v1_ok\":%u,\"v1_failed\":%u,"
				    "\"v2_ok\":%u,\"v2_failed\":%u}",
				    m == now_min - CUTOVER_MINUTES + 1 ? "" : ",", m * 60,
				    here ? x->ok[0] : 0, here ? x->failed[0] : 0,
				    here ? x->ok[1] : 0, here ? x->failed[1] : 0);
	}
	evbuffer_add_printf(b, "]");
}

char *cutover_history_json(struct cutover *c, const struct bridge_config *cfg, long long now_ms)
{
	struct evbuffer *b = routes_json(c, cfg, 0, now_ms, history_item);

	if (!b)
		return NULL;
	evbuffer_add_printf(b, "}");
	return buffer_string(b);
}

/* name{route="…"[,extra]} value */
static void route_line(struct evbuffer *out, const char *name, const char *route, const char *extra,
		       unsigned long long v)
{
	evbuffer_add_printf(out, "%s{route=\"", name);
	metrics_label_add(out, route);
	evbuffer_add_printf(out, "\"%s} %llu\n", extra, v);
}

void cutover_metrics_render(struct cutover *c, const struct bridge_config *cfg,
			    struct evbuffer *out)
{
	static const struct {
		const char *name, *type, *help;
	} fams[] = {
		{ "webhook_bridge_cutover_ramp", "gauge",
		  "Share of participations (percent) whose primary is v2." },
		{ "webhook_bridge_cutover_primary", "gauge",
		  "1 for the route's primary: v1 (ramp 0), v2 (ramp 100) or split." },
		{ "webhook_bridge_cutover_killed", "gauge",
		  "1 while the route's kill switch is on, 2 while it is rolled back, else 0." },
		{ "webhook_bridge_cutover_rollbacks_total", "counter",
		  "Automatic rollbacks (ramp set to 0 because v2 failed)." },
		{ "webhook_bridge_cutover_changes_total", "counter",
		  "Cutover state changes (operators, rollbacks, other instances)." },
		{ "webhook_bridge_cutover_posts_total", "counter",
		  "Posts of cutover routes by the primary that answered and its outcome." },
	};
	static const char *const prim[3] = { "v1", "v2", "split" };
	char extra[64];

	pthread_mutex_lock(&c->lock);
	for (size_t f = 0; f < sizeof(fams) / sizeof(fams[0]); f++) {
		evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", fams[f].name, fams[f].help,
				    fams[f].name, fams[f].type);
		for (size_t i = 0; i < cfg->n_routes; i++) {
			struct entry *e = entry_find(c, cfg->routes[i].name);

			if (!e || !e->cutover)
				continue;
			switch (f) {
			case 0:
				route_line(out, fams[f].name, e->name, "", (unsigned)e->row.ramp);
				break;
			case 1:
				for (int k = 0; k < 3; k++) {
					snprintf(extra, sizeof(extra), ",primary=\"%s\"", prim[k]);
					route_line(out, fams[f].name, e->name, extra,
						   strcmp(primary_name(e->row.ramp), prim[k]) == 0);
				}
				break;
			case 2:
				route_line(out, fams[f].name, e->name, "", (unsigned)e->row.status);
				break;
			case 3: route_line(out, fams[f].name, e->name, "", e->rollbacks); break;
			case 4: route_line(out, fams[f].name, e->name, "", e->changes); break;
			default:
				for (int k = 0; k < 4; k++) {
					snprintf(extra, sizeof(extra),
						 ",primary=\"%s\",outcome=\"%s\"",
						 k < 2 ? "v1" : "v2", k % 2 ? "failed" : "ok");
					route_line(out, fams[f].name, e->name, extra,
						   e->posts[k / 2][k % 2]);
				}
				break;
			}
		}
	}
	pthread_mutex_unlock(&c->lock);
	evbuffer_add_printf(out,
			    "# HELP webhook_bridge_cutover_store_errors_total Cutover state "
			    "writes or reads the store refused.\n"
			    "# TYPE webhook_bridge_cutover_store_errors_total counter\n"
			    "webhook_bridge_cutover_store_errors_total %llu\n",
			    __atomic_load_n(&c->store_errors, __ATOMIC_RELAXED));
}
