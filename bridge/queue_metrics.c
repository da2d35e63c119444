/*
 * queue_metrics: what the queue tells about itself: its numbers (the
 * `queue stats` command, the admin summary), readiness (/readyz) and the
 * Prometheus metrics, per route.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "bridge/clock.h"
#include "bridge/config.h"
#include "bridge/metrics.h"
#include "bridge/queue.h"
#include "bridge/store.h"
#include "queue_types.h"

void queue_stats(struct queue *q, struct queue_stats *ret)
{
	int64_t oldest = 0, now = clock_wall_ms();
	struct bridge_error err;

	memset(ret, 0, sizeof(*ret));
	if (store_oldest(q->store, &oldest, &err) == 0)
		atomic_store(&q->oldest_ms, oldest);
	else
		oldest = atomic_load(&q->oldest_ms);
	ret->depth = atomic_load(&q->depth);
	ret->dead = atomic_load(&q->dead);
	ret->in_flight = atomic_load(&q->in_flight_gauge);
	ret->oldest_age_ms = oldest > 0 && now > oldest ? now - oldest : 0;
	ret->enqueued = atomic_load(&q->enqueued);
	ret->duplicates = atomic_load(&q->duplicates);
	ret->delivered = atomic_load(&q->delivered);
	ret->failed_attempts = atomic_load(&q->failed_attempts);
	ret->dead_lettered = atomic_load(&q->dead_lettered);
	ret->store_errors = atomic_load(&q->store_errors);
	ret->corrupt = atomic_load(&q->corrupt);
	if (ret->depth < 0)
		ret->depth = 0;
}

/* The slot of route in the sorted table, or where it would go (*found 0). */
static size_t route_slot(const struct queue_routes *t, const char *route, int *found)
{
	size_t lo = 0, hi = t->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(t->v[mid].route, route);

		if (c == 0) {
			*found = 1;
			return mid;
		}
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found = 0;
	return lo;
}

/* route's entry, made at zero when it has none; NULL: out of memory */
static struct queue_route_count *route_entry(struct queue_routes *t, const char *route)
{
	int found;
	size_t i = route_slot(t, route, &found);
	char *name;

	if (found)
		return &t->v[i];
	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 8;
		struct queue_route_count *v = realloc(t->v, cap * sizeof(*v));

		if (!v)
			return NULL;
		t->v = v;
		t->cap = cap;
	}
	if (!(name = strdup(route)))
		return NULL;
	memmove(&t->v[i + 1], &t->v[i], (t->n - i) * sizeof(*t->v));
	t->v[i] = (struct queue_route_count){ .route = name };
	t->n++;
	return &t->v[i];
}

static void routes_clear(struct queue_routes *t)
{
	for (size_t i = 0; i < t->n; i++)
		free(t->v[i].route);
	free(t->v);
	*t = (struct queue_routes){ 0 };
}

/* route's entry in t moved; out of memory: that route's gauges lag until
 * the next load */
static void route_move(struct queue_routes *t, const char *route, long long pending, long long dead)
{
	struct queue_route_count *r = route_entry(t, route ? route : "");

	if (r) {
		r->pending += pending;
		r->dead += dead;
	}
}

void queue_counts_lock(struct queue *q)
{
	if (!q->shared)
		pthread_mutex_lock(&q->routes_mu);
}

void queue_counts_unlock(struct queue *q)
{
	if (!q->shared)
		pthread_mutex_unlock(&q->routes_mu);
}

void queue_count_add(struct queue *q, const char *route, long long pending, long long dead)
{
	atomic_fetch_add(&q->depth, pending);
	atomic_fetch_add(&q->dead, dead);
	if (q->shared)
		return;
	route_move(&q->routes, route, pending, dead);
	if (q->recounting)
		route_move(&q->moved, route, pending, dead);
}

void queue_routes_free(struct queue *q)
{
	routes_clear(&q->routes);
	routes_clear(&q->moved);
}

static int route_load_cb(const struct store_route_counts *c, void *arg)
{
	struct queue_route_count *r = route_entry(arg, c->route);

	if (!r)
		return -1;
	r->pending = c->pending;
	r->dead = c->dead;
	return 0;
}

/* The pass over the store runs with no lock held (it takes a third of a
 * second at a million rows, and the posts waited for it): the snapshot is
 * taken with the counts held still, and what moves meanwhile is added. */
int queue_routes_load(struct queue *q, struct store_counts *sums, struct bridge_error *err)
{
	struct queue_routes fresh = { 0 }, old;
	int rc;

	memset(sums, 0, sizeof(*sums));
	if (q->shared)
		return 0;
	bridge_error_clear(err);
	pthread_mutex_lock(&q->routes_mu);
	rc = store_snapshot_begin(q->store, err);
	if (rc == 0) {
		routes_clear(&q->moved);
		q->recounting = 1;
	}
	pthread_mutex_unlock(&q->routes_mu);
	if (rc < 0)
		return -1;
	rc = store_count_routes_snapshot(q->store, route_load_cb, &fresh, err);
	pthread_mutex_lock(&q->routes_mu);
	q->recounting = 0;
	for (size_t i = 0; rc == 0 && i < q->moved.n; i++) {
		struct queue_route_count *r = route_entry(&fresh, q->moved.v[i].route);

		if (!r) {
			rc = -1;
			break;
		}
		r->pending += q->moved.v[i].pending;
		r->dead += q->moved.v[i].dead;
	}
	routes_clear(&q->moved);
	if (rc != 0) {
		pthread_mutex_unlock(&q->routes_mu);
		if (!err->message[0])
			bridge_error_set(err, "out of memory counting the queue's routes");
		routes_clear(&fresh);
		return -1;
	}
	for (size_t i = 0; i < fresh.n; i++) {
		sums->pending += fresh.v[i].pending;
		sums->dead += fresh.v[i].dead;
	}
	atomic_store(&q->depth, sums->pending);
	atomic_store(&q->dead, sums->dead);
	old = q->routes;
	q->routes = fresh;
	pthread_mutex_unlock(&q->routes_mu);
	routes_clear(&old);
	return 0;
}

static void metric(struct evbuffer *out, const char *name, const char *type, const char *help,
		   long long v)
{
	evbuffer_add_printf(out,
			    "# HELP webhook_bridge_queue_%s %s\n# TYPE webhook_bridge_queue_%s "
			    "%s\nwebhook_bridge_queue_%s %lld\n",
			    name, help, name, type, name, v);
}

int queue_ready(struct queue *q, char *why, size_t cap)
{
	if (atomic_load(&q->outcomes_failing)) {
		snprintf(why, cap,
			 "the queue store failed its last write: the outcomes of delivery "
			 "attempts cannot be recorded");
		return -1;
	}
	if (atomic_load(&q->refused_bytes) > 0) {
		snprintf(why, cap,
			 "the queue store failed to take a post of %lld bytes and has not "
			 "taken a write that large since",
			 (long long)atomic_load(&q->refused_bytes));
		return -1;
	}
	if (atomic_load(&q->store_failing)) {
		snprintf(why, cap, "the queue store failed its last write");
		return -1;
	}
	if (atomic_load(&q->depth) >= q->cfg.max_depth) {
		snprintf(why, cap, "the queue is full (max_depth = %lld)", q->cfg.max_depth);
		return -1;
	}
	return 0;
}

/* The per-route families, filled side by side so each stays contiguous. */
struct route_render {
	struct evbuffer *depth, *age, *dead;
	const struct bridge_config *cfg;
	char *seen; /* cfg route index -> had rows in the store */
	int64_t now;
};

static void route_sample(struct evbuffer *out, const char *name, const char *route)
{
	evbuffer_add_printf(out, "webhook_bridge_queue_route_%s{route=\"", name);
	metrics_label_add(out, route);
	evbuffer_add_printf(out, "\"} ");
}

static void route_render_add(struct route_render *r, const char *route, int64_t pending,
			     int64_t dead, int64_t oldest_ms)
{
	int64_t age = oldest_ms > 0 && r->now > oldest_ms ? r->now - oldest_ms : 0;

	route_sample(r->depth, "depth", route);
	evbuffer_add_printf(r->depth, "%lld\n", (long long)pending);
	route_sample(r->age, "oldest_age_seconds", route);
	evbuffer_add_printf(r->age, "%lld.%03lld\n", (long long)(age / 1000),
			    (long long)(age % 1000));
	route_sample(r->dead, "dead_letters", route);
	evbuffer_add_printf(r->dead, "%lld\n", (long long)dead);
}

static int route_render_cb(const struct store_route_counts *c, void *arg)
{
	struct route_render *r = arg;

	for (size_t i = 0; r->cfg && r->seen && i < r->cfg->n_routes; i++)
		if (strcmp(r->cfg->routes[i].name, c->route) == 0)
			r->seen[i] = 1;
	route_render_add(r, c->route, c->pending, c->dead, c->oldest_created_ms);
	return 0;
}

/* Per route, from the counts the queue keeps: cb as store_count_routes
 * calls it, the oldest row read with one seek per route that has pending
 * ones.  The names are copied first, so that no lock is held across the
 * store's. */
static int routes_walk(struct queue *q, int (*cb)(const struct store_route_counts *c, void *arg),
		       void *arg, struct bridge_error *err)
{
	struct queue_route_count *v;
	size_t n = 0, i;
	int rc = 0;

	pthread_mutex_lock(&q->routes_mu);
	v = calloc(q->routes.n ? q->routes.n : 1, sizeof(*v));
	for (i = 0; v && i < q->routes.n; i++) {
		const struct queue_route_count *r = &q->routes.v[i];

		if (r->pending <= 0 && r->dead <= 0)
			continue; /* as the store would count it: no rows, no route */
		v[n] = *r;
		if (!(v[n].route = strdup(r->route)))
			break;
		n++;
	}
	if (v && i < q->routes.n)
		rc = bridge_error_set(err, "out of memory");
	pthread_mutex_unlock(&q->routes_mu);
	if (!v)
		return bridge_error_set(err, "out of memory");
	for (i = 0; rc == 0 && i < n; i++) {
		/* below zero only after a lost count (out of memory) */
		struct store_route_counts c = { .route = v[i].route,
						.pending = v[i].pending > 0 ? v[i].pending : 0,
						.dead = v[i].dead > 0 ? v[i].dead : 0 };

		if (c.pending > 0 &&
		    store_route_oldest(q->store, c.route, &c.oldest_created_ms, err) < 0)
			rc = -1;
		else
			rc = cb(&c, arg);
	}
	for (i = 0; i < n; i++)
		free(v[i].route);
	free(v);
	return rc;
}

/* Per route (rows of routes no longer configured included: they still wait
 * for delivery); the config's queued routes at zero when the store has none
 * of theirs.  A store of its own: the counts the queue keeps, so a scrape
 * costs a seek per route, not a pass over every row under the store's lock
 * (which held the posts back); a shared one: counted in PostgreSQL. */
static void render_routes(struct queue *q, const struct bridge_config *cfg, struct evbuffer *out)
{
	struct route_render r = { .cfg = cfg, .now = clock_wall_ms() };
	struct bridge_error err;

	r.depth = evbuffer_new();
	r.age = evbuffer_new();
	r.dead = evbuffer_new();
	if (cfg && cfg->n_routes)
		r.seen = calloc(cfg->n_routes, 1);
	if (r.depth && r.age && r.dead &&
	    (q->shared ? store_count_routes(q->store, route_render_cb, &r, &err)
		       : routes_walk(q, route_render_cb, &r, &err)) == 0) {
		for (size_t i = 0; r.seen && i < cfg->n_routes; i++)
			if (cfg->routes[i].queued && !r.seen[i])
				route_render_add(&r, cfg->routes[i].name, 0, 0, 0);
		evbuffer_add_printf(out,
				    "# HELP webhook_bridge_queue_route_depth Deliveries waiting "
				    "in the queue per route, in flight included.\n# TYPE "
				    "webhook_bridge_queue_route_depth gauge\n");
		evbuffer_add_buffer(out, r.depth);
		evbuffer_add_printf(out,
				    "# HELP webhook_bridge_queue_route_oldest_age_seconds Age of "
				    "the route's oldest waiting delivery (0 when none).\n# TYPE "
				    "webhook_bridge_queue_route_oldest_age_seconds gauge\n");
		evbuffer_add_buffer(out, r.age);
		evbuffer_add_printf(out,
				    "# HELP webhook_bridge_queue_route_dead_letters Dead letters "
				    "in the store per route.\n# TYPE "
				    "webhook_bridge_queue_route_dead_letters gauge\n");
		evbuffer_add_buffer(out, r.dead);
	}
	free(r.seen);
	if (r.depth)
		evbuffer_free(r.depth);
	if (r.age)
		evbuffer_free(r.age);
	if (r.dead)
		evbuffer_free(r.dead);
}

void queue_metrics_render(struct queue *q, const struct bridge_config *cfg, struct evbuffer *out)
{
	struct queue_stats s;

	queue_stats(q, &s);
	render_routes(q, cfg, out);
	metric(out, "depth", "gauge", "Deliveries waiting in the queue, in flight included.",
	       s.depth);
	evbuffer_add_printf(out,
			    "# HELP webhook_bridge_queue_oldest_age_seconds Age of the oldest "
			    "waiting delivery (0 when none).\n# TYPE "
			    "webhook_bridge_queue_oldest_age_seconds gauge\n"
			    "webhook_bridge_queue_oldest_age_seconds %lld.%03lld\n",
			    s.oldest_age_ms / 1000, s.oldest_age_ms % 1000);
	metric(out, "dead_letters", "gauge",
	       "Dead letters in the store, waiting for `queue retry` or `queue purge`.", s.dead);
	metric(out, "in_flight", "gauge", "Delivery attempts under way.", s.in_flight);
	metric(out, "enqueued_total", "counter", "Posts stored for delivery.", s.enqueued);
	metric(out, "duplicates_total", "counter",
	       "Posts not stored again: the same participation and state was already queued.",
	       s.duplicates);
	metric(out, "delivered_total", "counter", "Deliveries the endpoint accepted (2xx).",
	       s.delivered);
	metric(out, "failed_attempts_total", "counter", "Delivery attempts that got no 2xx.",
	       s.failed_attempts);
	metric(out, "dead_lettered_total", "counter", "Deliveries that became dead letters.",
	       s.dead_lettered);
	metric(out, "store_errors_total", "counter",
	       "Store operations that failed (a post then gets 503).", s.store_errors);
	metric(out, "corrupt_total", "counter",
	       "Deliveries made dead letters without being sent: what they would send did not "
	       "match the checksum stored with them.",
	       s.corrupt);
}
