/*
 * queue: a writer thread for enqueues (queue_writer.c), a scheduler thread
 * for delivery (here), and what the queue reports (queue_metrics.c).
 *
 * Delivery: the scheduler thread owns everything below `base`: lanes (one
 * upstream pool per endpoint + trust store), attempts, timers.  The store is
 * the only schedule: a tick asks it, per lane with a free slot, for the due
 * heads of participation lines, skipping rows already in flight.  Nothing
 * about a row's progress lives only in memory, so a crash loses no state a
 * restart needs: rows that were in flight are still pending and due.
 * Outcomes of attempts are written together, QUEUE_FLUSH_MS or
 * QUEUE_OUTCOMES_MAX at a time (one fsync); the endpoint slot is free as soon
 * as the answer is in, but the row stays out of reach of the ticks until its
 * outcome is stored.  A crash in between only repeats a delivery.
 * Other threads reach the scheduler only through event_active() on wake_ev
 * and stop_ev (libevent's pthread locking is switched on in queue_new).
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/queue.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <yajl/yajl_parse.h>

#include "bridge/clock.h"
#include "bridge/confread.h"
#include "bridge/config.h"
#include "bridge/metrics.h"
#include "bridge/queue.h"
#include "bridge/retry_after.h"
#include "queue_types.h"

#define QUEUE_OUTCOMES_MAX    64    /* attempt outcomes per transaction */
#define QUEUE_FLUSH_MS        5     /* an outcome waits at most this long for its transaction */
#define QUEUE_TICK_MIN_MS     5     /* ticks closer than this are merged */
#define QUEUE_STORE_PAUSE_MS  1000  /* after a store error, no attempt starts for this long */
#define QUEUE_STORE_LOG_MS    60000 /* a store that keeps failing is logged this often */
#define QUEUE_RECOUNT_MS      100   /* shared: gauges recounted this soon after a wake-up */
#define QUEUE_RECOUNT_SPACING 10    /* SQLite: a recount that took d waits this many d after */
#define QUEUE_BUSY_TIMEOUT_MS 5000
#define QUEUE_READY_ROWS      32           /* due rows read ahead per lane, at most */
#define QUEUE_READY_BYTES     (256 * 1024) /* ... and about this many bytes of bodies */

/* ------------------------------------------------------------------ */
/* policy */

int64_t queue_backoff_cap_ms(const struct queue_config *c, int failures)
{
	int64_t cap = c->backoff_base_ms;

	for (int i = 1; i < failures && cap < c->backoff_max_ms; i++)
		cap *= 2;
	return cap < c->backoff_max_ms ? cap : c->backoff_max_ms;
}

int64_t queue_backoff_ms(const struct queue_config *c, int failures, uint64_t rnd)
{
	return (int64_t)(rnd % (uint64_t)(queue_backoff_cap_ms(c, failures) + 1));
}

static uint64_t random_u64(void)
{
	uint64_t r = 0;

	if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r)) {
		struct timespec ts;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		r = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ULL ^ (uint64_t)ts.tv_sec;
	}
	return r;
}

static void emit(struct queue *q, const struct queue_event *ev)
{
	if (q->cb)
		q->cb(ev, q->cb_arg);
}

static void store_event(struct queue *q, enum queue_event_type type, const char *message)
{
	struct queue_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.type = type;
	ev.route = ev.endpoint = ev.delivery_id = ev.participation_id = ev.state = "";
	ev.reason = message;
	emit(q, &ev);
}

static void store_trouble(struct queue *q, const char *message)
{
	atomic_fetch_add(&q->store_errors, 1);
	atomic_store(&q->store_failing, 1);
	q->store_pause_until = clock_wall_ms() + QUEUE_STORE_PAUSE_MS;
	store_event(q, QUEUE_EV_STORE_ERROR, message);
}

/* Scheduler thread: what the store's checkpointer noted (once per kind). */
static void store_warnings(struct queue *q)
{
	char text[400];

	while (store_checkpoint_warning(q->store, text, sizeof(text)))
		store_event(q, QUEUE_EV_STORE_WARNING, text);
}

/* Scheduler thread: the outcomes of attempts could not be stored.  Logged
 * when it starts and then every QUEUE_STORE_LOG_MS, not at every retry. */
static void outcomes_trouble(struct queue *q, const char *message)
{
	int64_t now = clock_wall_ms();
	char text[sizeof(((struct bridge_error *)0)->message) + 200];

	atomic_fetch_add(&q->store_errors, 1);
	q->store_pause_until = now + QUEUE_STORE_PAUSE_MS;
	if (!atomic_exchange(&q->outcomes_failing, 1)) {
		q->outcomes_failing_since = now;
		q->store_log_at = now;
	}
	if (now < q->store_log_at)
		return;
	q->store_log_at = now + QUEUE_STORE_LOG_MS;
	snprintf(text, sizeof(text),
		 "cannot record the outcome of delivery attempts, for %lld ms now; no "
		 "delivery starts and no post is taken until it can (tried again every "
		 "%d ms): %s",
		 (long long)(now - q->outcomes_failing_since), QUEUE_STORE_PAUSE_MS, message);
	store_event(q, QUEUE_EV_STORE_ERROR, text);
}

/* Scheduler thread: a write went through after outcomes_trouble or
 * store_trouble. */
static void store_recovered(struct queue *q, const char *what)
{
	int64_t now = clock_wall_ms();
	char text[200];

	atomic_store(&q->store_failing, 0);
	if (!atomic_exchange(&q->outcomes_failing, 0))
		snprintf(text, sizeof(text), "the queue store takes writes again (%s)", what);
	else
		snprintf(text, sizeof(text),
			 "the queue store takes writes again (%s) after failing for %lld ms", what,
			 (long long)(now - q->outcomes_failing_since));
	q->store_pause_until = 0;
	store_event(q, QUEUE_EV_STORE_RECOVERED, text);
}

/* ------------------------------------------------------------------ */
/* lanes */

static int key_known(struct queue *q, const char *endpoint, const char *ca_file)
{
	for (size_t i = 0; i < q->n_keys; i++)
		if (strcmp(q->keys[i].endpoint, endpoint) == 0 &&
		    strcmp(q->keys[i].ca_file, ca_file) == 0)
			return 1;
	return 0;
}

/* Any thread. */
void queue_key_add(struct queue *q, const char *endpoint, const char *ca_file)
{
	pthread_mutex_lock(&q->keys_mu);
	if (!key_known(q, endpoint, ca_file) && q->n_keys < QUEUE_LANES_MAX) {
		char *e = strdup(endpoint), *c = strdup(ca_file);

		if (e && c) {
			q->keys[q->n_keys].endpoint = e;
			q->keys[q->n_keys].ca_file = c;
			q->n_keys++;
		} else {
			free(e);
			free(c);
		}
	}
	pthread_mutex_unlock(&q->keys_mu);
}

/* Scheduler thread: make a lane of every key not seen yet. */
static void lanes_sync(struct queue *q)
{
	pthread_mutex_lock(&q->keys_mu);
	while (q->n_keys_seen < q->n_keys) {
		struct lane_key *k = &q->keys[q->n_keys_seen];
		struct lane *l = calloc(1, sizeof(*l));
		struct bridge_error err;

		if (!l)
			break;
		l->endpoint = strdup(k->endpoint);
		l->ca_file = strdup(k->ca_file);
		if (!l->endpoint || !l->ca_file) {
			free(l->endpoint);
			free(l->ca_file);
			free(l);
			break;
		}
		bridge_error_clear(&err);
		if (upstream_url_parse(l->endpoint, &l->url, &err) < 0)
			snprintf(l->url_error, sizeof(l->url_error), "%s", err.message);
		l->next = q->lanes;
		q->lanes = l;
		q->n_lanes++;
		q->n_keys_seen++;
	}
	pthread_mutex_unlock(&q->keys_mu);
}

/* Pick up lanes that rows in the store use (at start and after another
 * process changed the store). */
static int lanes_load(struct queue *q, struct bridge_error *err)
{
	struct store_lane *l;
	size_t n;

	if (store_lanes(q->store, QUEUE_LANES_MAX, &l, &n, err) < 0)
		return -1;
	for (size_t i = 0; i < n; i++)
		queue_key_add(q, l[i].endpoint, l[i].ca_file);
	store_lanes_free(l, n);
	return 0;
}

static struct upstream_tls *tls_for(struct queue *q, const char *ca_file, struct bridge_error *err)
{
	struct tls_entry *t;

	for (t = q->tls; t; t = t->next)
		if (strcmp(t->ca_file, ca_file) == 0)
			return t->tls;
	t = calloc(1, sizeof(*t));
	if (!t || !(t->ca_file = strdup(ca_file))) {
		free(t);
		bridge_error_set(err, "out of memory");
		return NULL;
	}
	if (upstream_tls_new(*ca_file ? ca_file : NULL, &t->tls, err) < 0) {
		free(t->ca_file);
		free(t);
		return NULL; /* not cached: the file may be fixed before the next attempt */
	}
	t->next = q->tls;
	q->tls = t;
	return t->tls;
}

static struct upstream_pool *lane_pool(struct queue *q, struct lane *l, struct bridge_error *err)
{
	struct upstream_tls *tls = NULL;
	struct upstream_limits lim = q->lim;

	if (l->pool)
		return l->pool;
	if (l->url_error[0]) {
		bridge_error_set(err, "endpoint '%s': %s", l->endpoint, l->url_error);
		return NULL;
	}
	if (l->url.https && !(tls = tls_for(q, l->ca_file, err)))
		return NULL;
	lim.max_connections = (size_t)q->cfg.per_endpoint_concurrency;
	l->pool = upstream_pool_new(q->base, q->dns, &l->url, tls, &lim);
	if (!l->pool)
		bridge_error_set(err, "cannot create a connection pool for '%s'", l->endpoint);
	return l->pool;
}

/* ------------------------------------------------------------------ */
/* attempts */

static void tick(struct queue *q);

void queue_tick_soon(struct queue *q)
{
	event_active(q->wake_ev, EV_READ, 0);
}

static void attempt_free(struct attempt *a)
{
	free(a->route);
	free(a->delivery_id);
	free(a->participation_id);
	free(a->state);
	free(a);
}

/* The request is over (answered, failed, cancelled): its slot is free. */
static void attempt_slot_free(struct attempt *a)
{
	a->lane->in_flight--;
	a->q->in_flight--;
	atomic_store(&a->q->in_flight_gauge, a->q->in_flight);
}

static void attempt_unlink(struct attempt *a)
{
	struct lane *l = a->lane;

	LIST_REMOVE(a, link);
	l->n_attempts--;
	if (!a->settled)
		attempt_slot_free(a);
}

static void event_fill(struct queue_event *ev, const struct attempt *a, enum queue_event_type t,
		       int64_t now)
{
	memset(ev, 0, sizeof(*ev));
	ev->type = t;
	ev->id = a->id;
	ev->route = a->route;
	ev->endpoint = a->lane->endpoint;
	ev->delivery_id = a->delivery_id;
	ev->participation_id = a->participation_id;
	ev->state = a->state;
	ev->attempt = a->attempts_before + 1;
	ev->age_ms = now - a->created_ms;
}

static void finish_check(struct queue *q)
{
	if (q->stopping && q->in_flight == 0)
		event_active(q->finish_ev, EV_READ, 0);
}

/* The outcome is known: the slot is free for another row, this row stays
 * with its lane (skipped by ticks) until flush_cb stored the outcome. */
static void attempt_settle(struct queue *q, struct attempt *a)
{
	a->settled = 1;
	a->done_ms = clock_wall_ms();
	attempt_slot_free(a);
	a->settled_next = NULL;
	*q->settled_tail = a;
	q->settled_tail = &a->settled_next;
	q->n_settled++;
	if (q->n_settled >= QUEUE_OUTCOMES_MAX || q->stopping) {
		event_active(q->flush_ev, EV_READ, 0);
	} else if (!evtimer_pending(q->flush_timer, NULL)) {
		struct timeval tv = { 0, QUEUE_FLUSH_MS * 1000 };

		evtimer_add(q->flush_timer, &tv);
	}
	if (!q->stopping)
		event_active(q->refill_ev, EV_READ, 0);
}

/* A failed attempt: another one later, or a dead letter. */
static void attempt_failed(struct queue *q, struct attempt *a, int status, const char *outcome,
			   const char *reason, const char *retry_after, long elapsed_ms)
{
	int64_t now = clock_wall_ms(), delay, ra, next,
		max_age_ms = (int64_t)q->cfg.max_age_s * 1000;
	int attempts = a->attempts_before + 1;

	a->status = status;
	a->outcome = outcome;
	a->elapsed_ms = elapsed_ms;
	snprintf(a->reason, sizeof(a->reason), "%s", reason);
	if (attempts >= q->cfg.max_attempts) {
		a->kind = STORE_OUT_DEAD;
		snprintf(a->why, sizeof(a->why), "gave up after %d attempt%s: %s", attempts,
			 attempts == 1 ? "" : "s", reason);
		attempt_settle(q, a);
		return;
	}
	delay = queue_backoff_ms(&q->cfg, attempts, random_u64());
	ra = retry_after ? retry_after_ms(retry_after, now) : -1;
	if (ra > delay)
		delay = ra;
	next = now + delay;
	if (next - a->since_ms >= max_age_ms) {
		a->kind = STORE_OUT_DEAD;
		snprintf(a->why, sizeof(a->why),
			 "gave up after %d attempt%s: the next one would be "
			 "%s max_age_s (%d s) after it was queued: %s",
			 attempts, attempts == 1 ? "" : "s",
			 ra == delay ? "(Retry-After) past" : "past", q->cfg.max_age_s, reason);
		attempt_settle(q, a);
		return;
	}
	a->kind = STORE_OUT_FAILED;
	a->next_attempt_ms = next;
	snprintf(a->why, sizeof(a->why), "%s", reason);
	attempt_settle(q, a);
}

static void attempt_done(const struct upstream_response *r, void *arg)
{
	struct attempt *a = arg;
	struct queue *q = a->q;
	char reason[QUEUE_REASON_MAX];

	a->req = NULL;
	if (r->outcome == UPSTREAM_CANCELLED) {
		/* shutting down: the row stays pending, untouched */
		attempt_unlink(a);
		attempt_free(a);
		finish_check(q);
		return;
	}
	if (r->outcome == UPSTREAM_RESPONSE && r->status >= 200 && r->status < 300) {
		a->kind = STORE_OUT_DELIVERED;
		a->status = r->status;
		a->outcome = upstream_outcome_name(r->outcome);
		a->elapsed_ms = r->elapsed_ms;
		attempt_settle(q, a);
		return;
	}
	if (r->outcome == UPSTREAM_RESPONSE)
		snprintf(reason, sizeof(reason), "endpoint answered %s",
			 r->reason ? r->reason : "a non-2xx status");
	else
		snprintf(reason, sizeof(reason), "%s: %s", upstream_outcome_name(r->outcome),
			 r->reason ? r->reason : "");
	attempt_failed(q, a, r->outcome == UPSTREAM_RESPONSE ? r->status : 0,
		       upstream_outcome_name(r->outcome), reason, r->retry_after, r->elapsed_ms);
}

/* Store the settled outcomes, QUEUE_OUTCOMES_MAX per transaction, then tell
 * about them and free their slots.  When the write fails the outcomes stay
 * where they are (their rows are not attempted again) and are written again
 * after QUEUE_STORE_PAUSE_MS. */
static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
	struct queue *q = arg;
	int failed = 0;

	while (q->settled) {
		struct store_outcome o[QUEUE_OUTCOMES_MAX];
		struct attempt *batch = q->settled, *a, *next;
		struct bridge_error err;
		size_t n = 0, k;

		for (a = batch; a && n < QUEUE_OUTCOMES_MAX; a = a->settled_next, n++) {
			memset(&o[n], 0, sizeof(o[n]));
			o[n].kind = a->kind;
			o[n].id = a->id;
			o[n].attempts_before = a->attempts_before;
			o[n].attempted = 1;
			o[n].now_ms = a->done_ms;
			o[n].next_attempt_ms = a->next_attempt_ms;
			o[n].last_status = a->status;
			o[n].last_error = a->why;
		}
		bridge_error_clear(&err);
		queue_counts_lock(q);
		if (store_apply(q->store, o, n, &err) < 0) {
			queue_counts_unlock(q);
			outcomes_trouble(q, err.message);
			failed = 1;
			break;
		}
		for (a = batch, k = 0; k < n; a = a->settled_next, k++)
			if (a->kind != STORE_OUT_FAILED)
				queue_count_add(q, a->route, -1, a->kind == STORE_OUT_DEAD);
		queue_counts_unlock(q);
		if (atomic_load(&q->outcomes_failing))
			store_recovered(q, "attempt outcomes recorded");
		q->settled = a; /* the rest, for the next round */
		if (!a)
			q->settled_tail = &q->settled;
		q->n_settled -= n;
		for (a = batch; n > 0; a = next, n--) {
			struct queue_event ev;

			next = a->settled_next;
			event_fill(&ev, a, QUEUE_EV_DELIVERED, a->done_ms);
			ev.status = a->status;
			ev.outcome = a->outcome;
			ev.elapsed_ms = a->elapsed_ms;
			if (a->kind == STORE_OUT_DELIVERED) {
				atomic_fetch_add(&q->delivered, 1);
			} else if (a->kind == STORE_OUT_FAILED) {
				atomic_fetch_add(&q->failed_attempts, 1);
				ev.type = QUEUE_EV_ATTEMPT_FAILED;
				ev.reason = a->reason;
				ev.next_attempt_ms = a->next_attempt_ms;
			} else {
				atomic_fetch_add(&q->failed_attempts, 1);
				atomic_fetch_add(&q->dead_lettered, 1);
				ev.type = QUEUE_EV_DEAD_LETTER;
				ev.reason = a->why;
			}
			emit(q, &ev);
			attempt_unlink(a);
			attempt_free(a);
		}
	}
	evtimer_del(q->flush_timer);
	if (failed && !q->finished) {
		struct timeval tv = { QUEUE_STORE_PAUSE_MS / 1000,
				      QUEUE_STORE_PAUSE_MS % 1000 * 1000 };

		evtimer_add(q->flush_timer, &tv);
	}
	finish_check(q);
	/* lines may have moved on: the next row of a participation is due */
	if (!q->finished)
		tick(q);
}

/* Slots came free: fill them now, not after the wake-up throttle. */
static void refill_cb(evutil_socket_t fd, short what, void *arg)
{
	struct queue *q = arg;

	if (!q->finished)
		tick(q);
}

static int in_flight_on(const struct lane *l, int64_t id)
{
	for (const struct attempt *a = LIST_FIRST(&l->attempts); a; a = LIST_NEXT(a, link))
		if (a->id == id)
			return 1;
	return 0;
}

static void attempt_start(struct queue *q, struct lane *l, const struct store_row *row)
{
	struct attempt *a = calloc(1, sizeof(*a));
	struct upstream_pool *pool;
	struct bridge_error err;
	char reason[QUEUE_REASON_MAX];

	if (!a)
		return;
	a->q = q;
	a->lane = l;
	a->id = row->id;
	a->attempts_before = row->attempts;
	a->since_ms = row->since_ms;
	a->created_ms = row->created_ms;
	a->route = strdup(row->route);
	a->delivery_id = strdup(row->delivery_id);
	a->participation_id = strdup(row->participation_id);
	a->state = strdup(row->state);
	if (!a->route || !a->delivery_id || !a->participation_id || !a->state) {
		attempt_free(a);
		return;
	}
	LIST_INSERT_HEAD(&l->attempts, a, link);
	l->n_attempts++;
	l->in_flight++;
	q->in_flight++;
	atomic_store(&q->in_flight_gauge, q->in_flight);

	bridge_error_clear(&err);
	pool = lane_pool(q, l, &err);
	if (pool && upstream_post(pool, row->headers, row->n_headers, row->body, row->len,
				  row->timeout_ms, attempt_done, a, &a->req, &err) == 0)
		return;
	/* could not even start: counts as a failed attempt */
	snprintf(reason, sizeof(reason), "cannot send: %s", err.message);
	attempt_failed(q, a, 0, "not_sent", reason, NULL, 0);
}

/* ------------------------------------------------------------------ */
/* scheduler */

static void counts_reload(struct queue *q)
{
	struct store_counts c;
	struct bridge_error err;

	bridge_error_clear(&err);
	/* a store of its own: the per-route counts, which set depth and dead */
	if ((q->shared ? store_count(q->store, &c, &err) : queue_routes_load(q, &c, &err)) < 0) {
		store_trouble(q, err.message);
		return;
	}
	if (q->shared) {
		atomic_store(&q->depth, c.pending);
		atomic_store(&q->dead, c.dead);
	}
}

static void timer_arm(struct queue *q, int64_t at_ms, int64_t now)
{
	int64_t d = at_ms - now;
	struct timeval tv;

	if (d < 0)
		d = 0;
	tv.tv_sec = (time_t)(d / 1000);
	tv.tv_usec = (suseconds_t)((d % 1000) * 1000);
	evtimer_add(q->timer_ev, &tv);
	q->timer_at_ms = at_ms;
}

/* A dead letter without an attempt: too old, or not fit to be sent. */
static void dead_now(struct queue *q, struct lane *l, const struct store_row *row, int64_t now,
		     const char *why, int corrupt)
{
	struct queue_event ev;
	struct bridge_error err;

	bridge_error_clear(&err);
	queue_counts_lock(q);
	if (store_dead(q->store, row->id, row->attempts, 0, now, row->last_status, why, &err) < 0) {
		queue_counts_unlock(q);
		store_trouble(q, err.message);
		return;
	}
	queue_count_add(q, row->route, -1, 1);
	queue_counts_unlock(q);
	atomic_fetch_add(&q->dead_lettered, 1);
	if (corrupt)
		atomic_fetch_add(&q->corrupt, 1);
	memset(&ev, 0, sizeof(ev));
	ev.type = QUEUE_EV_DEAD_LETTER;
	ev.id = row->id;
	ev.route = row->route;
	ev.endpoint = l->endpoint;
	ev.delivery_id = row->delivery_id;
	ev.participation_id = row->participation_id;
	ev.state = row->state;
	ev.attempt = row->attempts;
	ev.status = row->last_status;
	ev.reason = why;
	ev.age_ms = now - row->created_ms;
	emit(q, &ev);
}

/* Too old to try again (the bridge was down longer than max_age_s). */
static void expire(struct queue *q, struct lane *l, const struct store_row *row, int64_t now)
{
	char why[QUEUE_REASON_MAX + 100];

	snprintf(why, sizeof(why),
		 "gave up after %d attempt%s: queued more than max_age_s (%d s) "
		 "ago; last error: %s",
		 row->attempts, row->attempts == 1 ? "" : "s", q->cfg.max_age_s,
		 row->last_error[0] ? row->last_error : "none");
	dead_now(q, l, row, now, why, 0);
}

/* 1 when the body is one JSON object (and nothing else), 0 when not, -1
 * out of memory. */
static int body_is_json_object(const char *body, size_t len)
{
	yajl_handle h;
	size_t i = 0;
	int ok;

	while (i < len && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r' || body[i] == '\n'))
		i++;
	if (i == len || body[i] != '{')
		return 0;
	h = yajl_alloc(NULL, NULL, NULL);
	if (!h)
		return -1;
	ok = yajl_parse(h, (const unsigned char *)body, len) == yajl_status_ok &&
	     yajl_complete_parse(h) == yajl_status_ok;
	yajl_free(h);
	return ok;
}

/* Before every attempt: what the row would send must be what was stored.
 * 1 and why when it is not (the row is never sent), 0 when it may go, -1
 * when this cannot be told now. */
static int row_unfit(const struct store_row *row, char *why, size_t cap)
{
	int json;

	if (row->integrity == STORE_ROW_CORRUPT) {
		snprintf(why, cap,
			 "corrupt: what the row would send (endpoint, headers or body) does not "
			 "match the checksum written with it; not sent");
		return 1;
	}
	if (row->integrity == STORE_ROW_INTACT)
		return 0;
	/* written before checksums: the body at least must still be JSON */
	json = body_is_json_object(row->body, row->len);
	if (json < 0)
		return -1;
	if (json)
		return 0;
	snprintf(why, cap,
		 "corrupt: the row was stored before checksums and its body is not a JSON "
		 "object; not sent");
	return 1;
}

/* The rows read ahead of a lane: each completion used to cost a query that
 * walked every row still in flight or waiting for its outcome's write (tens
 * at a time) to find the one or two it could start.  Another process's
 * change (`queue retry`, `queue purge`) drops them (tick). */
static void ready_clear(struct lane *l)
{
	for (size_t i = l->ready_next; i < l->n_ready; i++)
		store_row_clear(&l->ready[i]);
	free(l->ready);
	l->ready = NULL;
	l->n_ready = l->ready_next = 0;
}

/* Read up to want due heads of line into l->ready, passing over this lane's
 * attempts (under way, or settled and not stored yet: still pending rows).
 * The number read, or -1. */
static long ready_fetch(struct queue *q, struct lane *l, int64_t now, size_t want)
{
	struct store_row *rows = calloc(want, sizeof(*rows));
	int64_t *skip = calloc((size_t)l->n_attempts + 1, sizeof(*skip));
	size_t n = 0, n_skip = 0, bytes = 0;
	struct bridge_error err;

	if (!rows || !skip) {
		free(rows);
		free(skip);
		return -1;
	}
	for (struct attempt *a = LIST_FIRST(&l->attempts); a && n_skip < (size_t)l->n_attempts;
	     a = LIST_NEXT(a, link))
		skip[n_skip++] = a->id;
	bridge_error_clear(&err);
	if (store_due_except(q->store, l->endpoint, l->ca_file, now, skip, n_skip, rows, want, &n,
			     &err) < 0) {
		store_trouble(q, err.message);
		free(rows);
		free(skip);
		return -1;
	}
	free(skip);
	for (size_t i = 0; i < n; i++)
		bytes += rows[i].len;
	if (n > 0)
		l->row_bytes = bytes / n;
	l->ready = rows;
	l->n_ready = n;
	l->ready_next = 0;
	return (long)n;
}

static void lane_fill(struct queue *q, struct lane *l, int64_t now)
{
	int free_slots = q->cfg.per_endpoint_concurrency - l->in_flight, fetched = 0;
	int64_t max_age_ms = (int64_t)q->cfg.max_age_s * 1000;

	if (free_slots <= 0 || atomic_load(&q->outcomes_failing))
		return;
	/* a claim is a lease: take only what starts now (and none while the
	 * store is paused) */
	while (free_slots > 0 && now >= q->store_pause_until) {
		struct store_row *row;
		char why[QUEUE_REASON_MAX];
		int unfit;

		if (l->ready_next == l->n_ready) {
			size_t want = (size_t)free_slots;

			ready_clear(l);
			if (fetched++)
				break;
			/* SQLite: read ahead, as far as QUEUE_READY_BYTES of bodies go */
			if (!q->shared) {
				size_t ahead = QUEUE_READY_BYTES /
					       (l->row_bytes ? l->row_bytes : 1);

				want += ahead < QUEUE_READY_ROWS ? ahead : QUEUE_READY_ROWS;
			}
			if (ready_fetch(q, l, now, want) <= 0)
				break;
		}
		row = &l->ready[l->ready_next++];
		if (!in_flight_on(l, row->id)) {
			if ((unfit = row_unfit(row, why, sizeof(why))) != 0) {
				if (unfit > 0)
					dead_now(q, l, row, now, why, 1);
			} else if (row->attempts > 0 && now - row->since_ms >= max_age_ms) {
				expire(q, l, row, now);
			} else {
				attempt_start(q, l, row);
				free_slots--;
			}
		}
		store_row_clear(row);
	}
	if (q->shared)
		ready_clear(l); /* the claims not started lapse */
}

static void watch_cb(evutil_socket_t fd, short what, void *arg)
{
	struct queue *q = arg;
	int n = store_watch_drain(q->store);

	if (n < 0) {
		/* the wake-up connection broke: poll until tick reopens it */
		event_free(q->watch_ev);
		q->watch_ev = NULL;
	}
	if (n != 0) {
		q->notified = 1;
		queue_tick_soon(q);
	}
}

/* Keep every lease of this bridge's attempts (under way, or settled and
 * not stored yet) alive. */
static void renew_cb(evutil_socket_t fd, short what, void *arg)
{
	struct queue *q = arg;
	struct bridge_error err;
	int64_t *ids;
	size_t n = 0, cap = 0;

	for (struct lane *l = q->lanes; l; l = l->next)
		cap += (size_t)l->n_attempts;
	if (cap == 0)
		return;
	ids = calloc(cap, sizeof(*ids));
	if (!ids)
		return;
	for (struct lane *l = q->lanes; l; l = l->next)
		for (struct attempt *a = LIST_FIRST(&l->attempts); a && n < cap;
		     a = LIST_NEXT(a, link))
			ids[n++] = a->id;
	bridge_error_clear(&err);
	if (store_renew(q->store, ids, n, NULL, &err) < 0)
		store_trouble(q, err.message);
	free(ids);
}

/* Shared store: wake-ups, and cluster-wide counts once per shared.poll_ms
 * (soon after another bridge's change). */
static void shared_tick(struct queue *q, int64_t now)
{
	struct bridge_error err;

	if (!q->watch_ev) {
		int fd = store_watch_fd(q->store);

		if (fd >= 0) {
			q->watch_ev = event_new(q->base, fd, EV_READ | EV_PERSIST, watch_cb, q);
			if (q->watch_ev)
				event_add(q->watch_ev, NULL);
		}
	}
	/* another bridge's change recounts soon; without one, once per poll */
	if (now - q->last_counts_ms >= (q->notified ? QUEUE_RECOUNT_MS : q->cfg.shared.poll_ms) ||
	    now < q->last_counts_ms) {
		q->last_counts_ms = now;
		q->notified = 0;
		counts_reload(q);
		bridge_error_clear(&err);
		if (lanes_load(q, &err) < 0)
			store_trouble(q, err.message);
	}
}

static void tick(struct queue *q)
{
	int64_t now = clock_wall_ms();
	/* shared: NOTIFY wakes it, polling is the fallback */
	int64_t wake = now + (q->shared ? q->cfg.shared.poll_ms : QUEUE_POLL_MS);
	struct bridge_error err;
	size_t refused;
	int changed;

	q->last_tick_ms = now;
	if (q->stopping)
		return;
	store_warnings(q);
	bridge_error_clear(&err);
	/* a failed write (a post's, or the scheduler's) made the queue unready:
	 * try one that changes no delivery, as large as the largest post refused,
	 * so readiness comes back by itself when a post would be taken again (the
	 * outcomes waiting for the store are their own probe) */
	refused = (size_t)atomic_load(&q->refused_bytes);
	if ((atomic_load(&q->store_failing) || refused) && !atomic_load(&q->outcomes_failing) &&
	    now >= q->store_pause_until) {
		if (store_probe(q->store, now, refused, &err) == 0) {
			queue_refused_note(q, 0, refused);
			if (atomic_load(&q->store_failing))
				store_recovered(q, "a test write went through");
		} else {
			q->store_pause_until = now + QUEUE_STORE_PAUSE_MS;
		}
		bridge_error_clear(&err);
	}
	if (q->shared) {
		shared_tick(q, now);
		changed = 0;
	} else if (now - q->last_changed_ms >= QUEUE_TICK_MIN_MS || now < q->last_changed_ms) {
		/* a tick follows every completion: asking once per window of ticks
		 * spares a wait for the store's lock, which the writer holds through
		 * its fsync */
		q->last_changed_ms = now;
		changed = store_changed_elsewhere(q->store, &err);
	} else {
		changed = 0;
	}
	if (changed < 0) {
		store_trouble(q, err.message);
	} else if (changed) {
		for (struct lane *l = q->lanes; l; l = l->next)
			ready_clear(l);
		q->counts_stale = 1;
		bridge_error_clear(&err);
		if (lanes_load(q, &err) < 0)
			store_trouble(q, err.message);
	}
	/* a recount is a pass over the store: a `queue` command that commits
	 * batch after batch would keep this thread counting, so after one that
	 * took d the next waits 10 d */
	if (q->counts_stale && now >= q->recount_at) {
		int64_t t0 = clock_mono_ms(), d;

		q->counts_stale = 0;
		counts_reload(q);
		d = clock_mono_ms() - t0;
		q->recount_at = now + d + QUEUE_RECOUNT_SPACING * d;
	}
	lanes_sync(q);
	for (struct lane *l = q->lanes; l; l = l->next) {
		int64_t at = 0;

		lane_fill(q, l, now);
		if (l->in_flight >= q->cfg.per_endpoint_concurrency)
			continue; /* a completion wakes us */
		bridge_error_clear(&err);
		if (store_next_wake(q->store, l->endpoint, l->ca_file, now, &at, &err) < 0)
			store_trouble(q, err.message);
		else if (at > 0 && at < wake)
			wake = at;
	}
	if (q->counts_stale && q->recount_at < wake)
		wake = q->recount_at;
	if (q->notified && q->last_counts_ms + QUEUE_RECOUNT_MS < wake)
		wake = q->last_counts_ms + QUEUE_RECOUNT_MS;
	if (q->store_pause_until > now && q->store_pause_until < wake)
		wake = q->store_pause_until;
	timer_arm(q, wake, now);
}

static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
	struct queue *q = arg;
	int64_t now = clock_wall_ms();

	/* merge bursts of wake-ups (every enqueue and completion sends one) */
	if (now - q->last_tick_ms < QUEUE_TICK_MIN_MS && now >= q->last_tick_ms) {
		int64_t at = q->last_tick_ms + QUEUE_TICK_MIN_MS;

		if (!evtimer_pending(q->timer_ev, NULL) || q->timer_at_ms > at)
			timer_arm(q, at, now);
		return;
	}
	tick(q);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	tick(arg);
}

static void finish_cb(evutil_socket_t fd, short what, void *arg)
{
	struct queue *q = arg;

	if (q->finished)
		return;
	q->finished = 1;
	flush_cb(-1, 0, q); /* outcomes already known are kept */
	/* cancels what is still in flight (attempt_done sees UPSTREAM_CANCELLED),
	 * or hands over an outcome that arrived meanwhile: flushed below */
	for (struct lane *l = q->lanes; l; l = l->next) {
		upstream_pool_free(l->pool);
		l->pool = NULL;
	}
	flush_cb(-1, 0, q);
	/* outcomes the store would still not take: their rows stay pending and
	 * are attempted again after the next start (at least once) */
	while (q->settled) {
		struct attempt *a = q->settled;

		q->settled = a->settled_next;
		q->n_settled--;
		attempt_unlink(a);
		attempt_free(a);
	}
	q->settled_tail = &q->settled;
	if (q->shared) {
		struct bridge_error err;

		/* what was cancelled goes to the other bridges now, not after the lease */
		bridge_error_clear(&err);
		store_release(q->store, &err);
	}
	event_del(q->timer_ev);
	event_del(q->deadline_ev);
	event_del(q->flush_timer);
	if (q->renew_ev)
		event_del(q->renew_ev);
	if (q->watch_ev)
		event_del(q->watch_ev);
	event_base_loopexit(q->base, NULL);
}

static void stop_cb(evutil_socket_t fd, short what, void *arg)
{
	struct queue *q = arg;
	int ms = atomic_load(&q->stop_deadline_ms);
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

	q->stopping = 1;
	event_del(q->timer_ev);
	if (q->settled)
		event_active(q->flush_ev, EV_READ, 0);
	if (q->in_flight == 0 || ms <= 0)
		event_active(q->finish_ev, EV_READ, 0);
	else
		evtimer_add(q->deadline_ev, &tv);
}

/* With the CPU busy, the posts whose senders wait for their 202 go first
 * and the deliveries, which nobody waits for and which retry anyway, run
 * behind them: the thread's nice value goes delivery_nice above the one it
 * was started with (Linux keeps one per thread; raising one's own needs no
 * privilege, but a system call filter may refuse it).  Once, at start. */
static void scheduler_lower_priority(struct queue *q)
{
	id_t tid = (id_t)syscall(SYS_gettid);
	char text[200];
	int now, want;

	if (q->cfg.delivery_nice <= 0)
		return;
	errno = 0;
	now = getpriority(PRIO_PROCESS, tid);
	if (now == -1 && errno != 0)
		goto failed;
	want = now + q->cfg.delivery_nice > 19 ? 19 : now + q->cfg.delivery_nice;
	if (want == now || setpriority(PRIO_PROCESS, tid, want) == 0)
		return;
failed:
	snprintf(text, sizeof(text),
		 "cannot lower the delivery thread's CPU priority (queue.delivery_nice = %d): %s; "
		 "deliveries share the CPU equally with the posts coming in",
		 q->cfg.delivery_nice, strerror(errno));
	store_event(q, QUEUE_EV_PRIORITY, text);
}

static void *scheduler_run(void *arg)
{
	struct queue *q = arg;

	scheduler_lower_priority(q);
	tick(q);
	/* wake_ev and stop_ev are only ever activated, never added */
	event_base_loop(q->base, EVLOOP_NO_EXIT_ON_EMPTY);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* lifecycle */

static int lock_take(struct queue *q, const char *path, struct bridge_error *err)
{
	size_t n = strlen(path) + sizeof(".lock");
	char *lp = malloc(n), pid[32], held[32] = "";
	ssize_t got;
	int fd;

	if (!lp)
		return bridge_error_set(err, "out of memory");
	snprintf(lp, n, "%s.lock", path);
	fd = open(lp, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0) {
		bridge_error_set(err, "queue store lock %s: %s", lp, strerror(errno));
		free(lp);
		return -1;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
		int e = errno;

		got = pread(fd, held, sizeof(held) - 1, 0);
		held[got > 0 ? got : 0] = '\0';
		held[strcspn(held, "\n")] = '\0';
		if (e == EWOULDBLOCK)
			bridge_error_set(err,
					 "queue store %s is in use by another webhook-bridge "
					 "serve%s%s%s (lock %s)",
					 path, held[0] ? " (pid " : "", held, held[0] ? ")" : "",
					 lp);
		else
			bridge_error_set(err, "queue store lock %s: %s", lp, strerror(e));
		close(fd);
		free(lp);
		return -1;
	}
	n = (size_t)snprintf(pid, sizeof(pid), "%ld\n", (long)getpid());
	if (ftruncate(fd, 0) < 0 || pwrite(fd, pid, n, 0) < 0) {
		/* the lock is what matters; the pid is only for the message above */
	}
	free(lp);
	q->lock_fd = fd;
	return 0;
}

static int settings_check(const struct queue_config *c, struct bridge_error *err)
{
	if (!c || !queue_config_has_store(c))
		return bridge_error_set(err,
					"queued delivery needs queue.path or a shared group in the "
					"configuration");
	if (c->max_attempts < 1 || c->max_age_s < 1 || c->backoff_base_ms < 1 ||
	    c->backoff_max_ms < c->backoff_base_ms || c->per_endpoint_concurrency < 1 ||
	    c->max_depth < 1)
		return bridge_error_set(err, "invalid queue settings");
	return 0;
}

int queue_probe(const struct queue_config *c, struct bridge_error *err)
{
	struct store_counts counts;
	struct store *s = NULL;
	int64_t oldest;
	char *lp;
	int rc;

	if (settings_check(c, err) < 0)
		return -1;
	if (!c->path) /* the shared store: check asks PostgreSQL itself */
		return 0;
	if (asprintf(&lp, "%s.lock", c->path) < 0)
		return bridge_error_set(err, "out of memory");
	rc = cfg_path_writable(lp);
	if (rc < 0)
		bridge_error_set(err, "queue store lock %s: %s", lp, strerror(errno));
	free(lp);
	if (rc < 0 || access(c->path, F_OK) != 0) /* absent: serve creates it */
		return rc;
	rc = store_open(c->path, STORE_VERIFY, QUEUE_BUSY_TIMEOUT_MS, &s, err) < 0 ||
			     store_count(s, &counts, err) < 0 || store_oldest(s, &oldest, err) < 0
		     ? -1
		     : 0;
	store_close(s);
	return rc;
}

int queue_new(const struct queue_config *c, const struct upstream_limits *lim, queue_event_cb cb,
	      void *cb_arg, struct queue **ret, struct bridge_error *err)
{
	struct queue *q;
	struct store_counts counts;
	int64_t oldest = 0;
	int rc;

	*ret = NULL;
	if (settings_check(c, err) < 0)
		return -1;
	/* wake_ev, stop_ev and the enqueue callbacks are activated from other
	 * threads */
	if (evthread_use_pthreads() < 0)
		return bridge_error_set(err, "cannot enable libevent's thread support");
	q = calloc(1, sizeof(*q));
	if (!q)
		return bridge_error_set(err, "out of memory");
	q->lock_fd = -1;
	q->cfg = *c;
	q->cfg.path = c->path ? strdup(c->path) : NULL;
	if (shared_config_copy(&q->cfg.shared, &c->shared) < 0) {
		q->cfg.path = NULL;
		free(q);
		return bridge_error_set(err, "out of memory");
	}
	upstream_limits_default(&q->lim);
	if (lim) {
		if (lim->max_response_body)
			q->lim.max_response_body = lim->max_response_body;
		if (lim->max_response_headers)
			q->lim.max_response_headers = lim->max_response_headers;
		if (lim->idle_timeout_ms > 0)
			q->lim.idle_timeout_ms = lim->idle_timeout_ms;
	}
	q->cb = cb;
	q->cb_arg = cb_arg;
	pthread_mutex_init(&q->commit_mu, NULL);
	pthread_cond_init(&q->writer_cv, NULL);
	pthread_cond_init(&q->done_cv, NULL);
	pthread_mutex_init(&q->keys_mu, NULL);
	pthread_mutex_init(&q->routes_mu, NULL);
	q->waiting_tail = &q->waiting;
	q->settled_tail = &q->settled;
	if (c->path && !q->cfg.path) {
		queue_free(q);
		return bridge_error_set(err, "out of memory");
	}
	if (!q->cfg.path) {
		struct bridge_error why;

		/* shared: PostgreSQL may be down now and answer later */
		q->shared = 1;
		if (store_open_shared(&q->cfg.shared, STORE_CREATE, &q->store, err) < 0) {
			queue_free(q);
			return -1;
		}
		bridge_error_clear(&why);
		memset(&counts, 0, sizeof(counts));
		if (store_count(q->store, &counts, &why) < 0 ||
		    store_oldest(q->store, &oldest, &why) < 0)
			store_trouble(q, why.message);
	} else if (lock_take(q, q->cfg.path, err) < 0 ||
		   store_open(q->cfg.path,
			      STORE_CREATE | STORE_VERIFY | STORE_CHECKPOINTER |
				      queue_config_store_flags(&q->cfg),
			      QUEUE_BUSY_TIMEOUT_MS, &q->store, err) < 0 ||
		   queue_routes_load(q, &counts, err) < 0 ||
		   store_oldest(q->store, &oldest, err) < 0) {
		queue_free(q);
		return -1;
	}
	atomic_store(&q->depth, counts.pending);
	atomic_store(&q->dead, counts.dead);
	atomic_store(&q->oldest_ms, oldest);

	q->base = event_base_new();
	if (!q->base) {
		queue_free(q);
		return bridge_error_set(err, "cannot create the scheduler's event loop");
	}
	q->dns = evdns_base_new(q->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
	if (!q->dns) /* no resolv.conf: IP-literal endpoints still work */
		q->dns = evdns_base_new(q->base, 0);
	q->wake_ev = event_new(q->base, -1, 0, wake_cb, q);
	q->timer_ev = evtimer_new(q->base, timer_cb, q);
	q->stop_ev = event_new(q->base, -1, 0, stop_cb, q);
	q->deadline_ev = evtimer_new(q->base, finish_cb, q);
	q->finish_ev = event_new(q->base, -1, 0, finish_cb, q);
	q->flush_ev = event_new(q->base, -1, 0, flush_cb, q);
	q->flush_timer = evtimer_new(q->base, flush_cb, q);
	q->refill_ev = event_new(q->base, -1, 0, refill_cb, q);
	if (q->shared)
		q->renew_ev = event_new(q->base, -1, EV_PERSIST, renew_cb, q);
	if (!q->dns || !q->wake_ev || !q->timer_ev || !q->stop_ev || !q->deadline_ev ||
	    !q->finish_ev || !q->flush_ev || !q->flush_timer || !q->refill_ev ||
	    (q->shared && !q->renew_ev)) {
		queue_free(q);
		return bridge_error_set(err, "cannot create the scheduler's events");
	}
	if (q->shared) {
		int every = q->cfg.shared.lease_ms / 3;
		struct timeval tv = { every / 1000, (every % 1000) * 1000 };
		struct bridge_error why;

		event_add(q->renew_ev, &tv);
		bridge_error_clear(&why);
		if (!atomic_load(&q->store_failing) && lanes_load(q, &why) < 0)
			store_trouble(q, why.message);
	} else if (lanes_load(q, err) < 0) {
		queue_free(q);
		return -1;
	}
	rc = pthread_create(&q->writer, NULL, queue_writer_run, q);
	if (rc != 0) {
		queue_free(q);
		return bridge_error_set(err, "cannot start the store's writer thread: %s",
					strerror(rc));
	}
	q->writer_started = 1;
	pthread_setname_np(q->writer, "queue-writer");
	*ret = q;
	return 0;
}

int queue_start(struct queue *q, struct bridge_error *err)
{
	int rc;

	if (q->started)
		return 0;
	if (q->finished)
		return bridge_error_set(err, "the queue was stopped; it cannot start again");
	rc = pthread_create(&q->thread, NULL, scheduler_run, q);
	if (rc != 0)
		return bridge_error_set(err, "cannot start the delivery thread: %s", strerror(rc));
	q->started = 1;
	pthread_setname_np(q->thread, "queue-deliver");
	return 0;
}

void queue_stop(struct queue *q, int deadline_ms)
{
	if (!q || !q->started)
		return;
	atomic_store(&q->stop_deadline_ms, deadline_ms > 0 ? deadline_ms : 0);
	event_active(q->stop_ev, EV_READ, 0);
	pthread_join(q->thread, NULL);
	q->started = 0;
	q->finished = 1;
}

void queue_free(struct queue *q)
{
	struct lane *l;
	struct tls_entry *t;

	if (!q)
		return;
	queue_stop(q, 0);
	if (q->writer_started) {
		/* what is waiting is still stored: its senders may have been told nothing
		 * yet, but a row too many is better than one too few */
		pthread_mutex_lock(&q->commit_mu);
		q->writer_stop = 1;
		pthread_cond_signal(&q->writer_cv);
		pthread_mutex_unlock(&q->commit_mu);
		pthread_join(q->writer, NULL);
	}
	while ((l = q->lanes) != NULL) {
		q->lanes = l->next;
		ready_clear(l);
		upstream_pool_free(l->pool);
		free(l->endpoint);
		free(l->ca_file);
		free(l);
	}
	while ((t = q->tls) != NULL) {
		q->tls = t->next;
		upstream_tls_free(t->tls);
		free(t->ca_file);
		free(t);
	}
	if (q->wake_ev)
		event_free(q->wake_ev);
	if (q->timer_ev)
		event_free(q->timer_ev);
	if (q->stop_ev)
		event_free(q->stop_ev);
	if (q->deadline_ev)
		event_free(q->deadline_ev);
	if (q->finish_ev)
		event_free(q->finish_ev);
	if (q->flush_ev)
		event_free(q->flush_ev);
	if (q->flush_timer)
		event_free(q->flush_timer);
	if (q->refill_ev)
		event_free(q->refill_ev);
	if (q->watch_ev)
		event_free(q->watch_ev);
	if (q->renew_ev)
		event_free(q->renew_ev);
	if (q->dns)
		evdns_base_free(q->dns, 0);
	if (q->base)
		event_base_free(q->base);
	store_close(q->store);
	if (q->lock_fd >= 0)
		close(q->lock_fd); /* releases the flock */
	for (size_t i = 0; i < q->n_keys; i++) {
		free(q->keys[i].endpoint);
		free(q->keys[i].ca_file);
	}
	pthread_mutex_destroy(&q->commit_mu);
	pthread_cond_destroy(&q->writer_cv);
	pthread_cond_destroy(&q->done_cv);
	pthread_mutex_destroy(&q->keys_mu);
	queue_routes_free(q);
	pthread_mutex_destroy(&q->routes_mu);
	free(q->cfg.path);
	shared_config_clear(&q->cfg.shared);
	free(q);
}
