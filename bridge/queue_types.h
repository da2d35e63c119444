/*
 * The queue's state, shared by its files: queue.c (lanes, attempts, the
 * scheduler thread, lifecycle), queue_writer.c (enqueues and the writer
 * thread's group commit) and queue_metrics.c (stats, readiness, metrics).
 * Private to them; everyone else sees include/bridge/queue.h.
 */
#ifndef BRIDGE_QUEUE_TYPES_H
#define BRIDGE_QUEUE_TYPES_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/queue.h>

#include <event2/event.h>

#include "bridge/queue.h"
#include "bridge/store.h"
#include "bridge/upstream.h"

#define QUEUE_BATCH_MAX         256   /* rows per enqueue transaction */
#define QUEUE_WAITING_MAX       65536 /* enqueues waiting for the writer; more -> refused */
#define QUEUE_WAITING_BYTES_MAX (256u * 1024 * 1024) /* and their bodies */
#define QUEUE_LANES_MAX         1024                 /* distinct endpoint + trust store pairs */
#define QUEUE_REASON_MAX        600

/* One enqueue on its way to the writer thread.  A synchronous one lives on
 * the caller's stack and points at the caller's item; an asynchronous one
 * owns a copy of the item and an event on the caller's base. */
struct queue_pending {
	struct queue *q;
	const struct store_item *item;
	struct store_item own;
	struct upstream_header *own_headers;
	char *own_data;
	struct store_seal own_seal; /* made on the enqueuing thread, not the writer's */
	int sync;
	struct event *ev;
	queue_enqueue_cb cb;
	void *arg;
	int cancelled;
	int done;
	int result;
	struct store_receipt receipt;
	char error[sizeof(((struct bridge_error *)0)->message)];
	struct queue_pending *next;
};

struct lane_key {
	char *endpoint;
	char *ca_file;
};

struct attempt;

struct lane {
	char *endpoint;
	char *ca_file;
	struct upstream_url url;
	char url_error[600]; /* "" when url is valid */
	struct upstream_pool *pool;
	int in_flight;  /* requests under way to the endpoint */
	int n_attempts; /* in `attempts`: under way, or settled and not stored yet */
	LIST_HEAD(, attempt) attempts;
	/* SQLite: due heads of line read ahead, not started yet (ready[next..n)) */
	struct store_row *ready;
	size_t n_ready, ready_next;
	size_t row_bytes; /* the mean body of the last read, sizing the next */
	struct lane *next;
};

struct attempt {
	struct queue *q;
	struct lane *lane;
	struct upstream_request *req;
	int64_t id;
	int attempts_before;
	int64_t since_ms;
	int64_t created_ms;
	char *route, *delivery_id, *participation_id, *state;
	LIST_ENTRY(attempt) link; /* lane->attempts */
	/* outcome, once settled, waiting for the next store write */
	int settled;
	enum store_outcome_kind kind;
	int status;
	const char *outcome;
	long elapsed_ms;
	int64_t done_ms;
	int64_t next_attempt_ms;
	char reason[QUEUE_REASON_MAX];    /* what went wrong with this attempt */
	char why[QUEUE_REASON_MAX + 200]; /* last_error as stored */
	struct attempt *settled_next;
};

struct tls_entry {
	char *ca_file;
	struct upstream_tls *tls;
	struct tls_entry *next;
};

struct queue_route_count {
	char *route;
	long long pending, dead;
};

struct queue_routes {
	struct queue_route_count *v; /* sorted by route */
	size_t n, cap;
};

struct queue {
	struct queue_config cfg;
	struct upstream_limits lim;
	queue_event_cb cb;
	void *cb_arg;
	struct store *store;
	int lock_fd;
	int shared; /* the store is shared with other bridges (leases, wake-ups) */

	/* enqueues waiting for the writer thread */
	pthread_mutex_t commit_mu;
	pthread_cond_t writer_cv; /* the writer waits for work */
	pthread_cond_t done_cv;   /* synchronous callers wait for their result */
	struct queue_pending *waiting, **waiting_tail;
	size_t n_waiting, waiting_bytes;
	pthread_t writer;
	int writer_started, writer_stop;

	/* lanes seen by enqueue, turned into struct lane by the scheduler */
	pthread_mutex_t keys_mu;
	struct lane_key keys[QUEUE_LANES_MAX];
	size_t n_keys;

	/* scheduler thread */
	struct event_base *base;
	struct evdns_base *dns;
	struct event *wake_ev, *timer_ev, *stop_ev, *deadline_ev, *finish_ev, *flush_ev;
	struct event *flush_timer, *refill_ev;
	pthread_t thread;
	int started;
	atomic_int stop_deadline_ms;
	int stopping, finished;
	struct lane *lanes;
	size_t n_lanes, n_keys_seen;
	struct tls_entry *tls;
	int in_flight;
	struct attempt *settled, **settled_tail; /* in the order the outcomes came */
	size_t n_settled;
	int64_t last_tick_ms;
	int64_t last_changed_ms; /* SQLite: the last look for another process's change */
	int counts_stale;   /* SQLite: another process changed the store since the last count */
	int64_t recount_at; /* ... and the next count is not before */
	int64_t timer_at_ms;
	int64_t store_pause_until;
	struct event *watch_ev; /* shared: another bridge changed the store */
	struct event *renew_ev; /* shared: leases of the attempts under way */
	int64_t last_counts_ms;
	int notified; /* a wake-up came since the last recount */

	/* per route, what depth and dead count for the whole queue (a store of
	 * its own only: a shared one is counted in PostgreSQL), sorted by name;
	 * loaded from the store at start and after another process changed it,
	 * kept by the writer and the scheduler in between (any thread).  The
	 * writes to the store that move them hold routes_mu from the write to
	 * the count (queue_counts_lock), so a recount's snapshot comes between
	 * two of them: what moves while it counts goes to `moved` too, and is
	 * added to what it counted. */
	pthread_mutex_t routes_mu;
	struct queue_routes routes;
	struct queue_routes moved;
	int recounting;

	/* shared counters */
	atomic_llong depth, dead, in_flight_gauge, oldest_ms;
	atomic_llong enqueued, duplicates, delivered, failed_attempts, dead_lettered, store_errors;
	atomic_llong corrupt;
	atomic_int store_failing; /* the last store write failed */
	/* the largest post (store_item_bytes) whose write the store refused
	 * since one as large went through; 0: none.  The queue is not ready
	 * while it is set: a smaller write (the probe, an outcome) going
	 * through says nothing about the next post. */
	atomic_llong refused_bytes;
	/* outcomes of attempts cannot be stored: no attempt starts (it would be
	 * sent again and again), no post is taken, the outcomes are written
	 * again every QUEUE_STORE_PAUSE_MS */
	atomic_int outcomes_failing;
	int64_t outcomes_failing_since, store_log_at; /* scheduler thread */
};

/* queue_metrics.c: the per-route counts from the store, and depth and dead
 * (their sums, also in *sums), counted without the store's lock (-1 and err
 * when it cannot count them: the old counts stay); the counts held still
 * from a write to the store until its count (a store of its own); depth,
 * dead and a route's counts moved by its rows stored, delivered or made
 * dead letters, inside that hold; the tables freed. */
int queue_routes_load(struct queue *q, struct store_counts *sums, struct bridge_error *err);
void queue_counts_lock(struct queue *q);
void queue_counts_unlock(struct queue *q);
void queue_count_add(struct queue *q, const char *route, long long pending, long long dead);
void queue_routes_free(struct queue *q);

/* queue.c: an enqueue's endpoint and trust store, for the scheduler's lanes
 * (any thread); a tick of the scheduler soon (any thread). */
void queue_key_add(struct queue *q, const char *endpoint, const char *ca_file);
void queue_tick_soon(struct queue *q);
/* queue_writer.c: a write of `bytes` (a post's, or the probe's) refused
 * or gone through, for refused_bytes (any thread). */
void queue_refused_note(struct queue *q, int refused, size_t bytes);
/* queue_writer.c: the writer thread's loop (arg: the queue). */
void *queue_writer_run(void *arg);

#endif
