/*
 * queue: queued delivery.  A post on a queued route is stored (store.h) and
 * answered 202 at once; a scheduler thread then delivers it, retrying until
 * the endpoint answers 2xx or the delivery becomes a dead letter.
 *
 * Promise: at least once, with a stable delivery id.  queue_enqueue returns
 * only after the row is on disk, so a 202 is never lost by a crash; a crash
 * during an attempt means the attempt is made again after the restart (the
 * endpoint may then see the delivery twice: same delivery id, same body,
 * same signature).
 *
 * Scheduling:
 *  - Attempts go out on their own thread, event_base, DNS base and upstream
 *    pools; at most per_endpoint_concurrency at a time per lane (endpoint
 *    URL + trust store).
 *  - After a failed attempt n (anything but 2xx), the next one waits a random
 *    time in [0, min(backoff_max_ms, backoff_base_ms * 2^(n-1))] ("full
 *    jitter"), or longer if the endpoint sent Retry-After (seconds or an HTTP
 *    date).
 *  - A delivery becomes a dead letter after max_attempts attempts, or when
 *    its next attempt would start max_age_s or more after it was queued (a
 *    delivery that was never attempted always gets one attempt).
 *  - Rows of one participation (same route and participation id) go in
 *    arrival order: a row is not attempted while an older one of the same
 *    participation is pending, so an incomplete participation reaches the
 *    endpoint before its complete one.  A dead letter no longer holds the
 *    line.
 *  - The `queue` command may retry or purge rows while this runs: changes
 *    made by another process are noticed within QUEUE_POLL_MS.
 *
 * Threads: queue_enqueue(_async), queue_stats and queue_metrics_render
 * may be called from any thread; enqueues waiting at the same time share
 * one transaction (group commit, on the queue's writer thread).  The event
 * callback runs on the scheduler thread.
 */
#ifndef BRIDGE_QUEUE_H
#define BRIDGE_QUEUE_H

#include <stddef.h>
#include <stdint.h>
#include <libconfig.h>

#include "bridge/confread.h"
#include "bridge/diag.h"
#include "bridge/store.h"
#include "bridge/upstream.h"

struct bridge_config;

struct evbuffer;
struct event_base;

#define QUEUE_POLL_MS 1000 /* the scheduler looks at the store at least this often */

struct queue_config {
	char *path; /* the SQLite store; NULL when the config names none */
	struct shared_config
		shared;      /* shared.url set: the store is PostgreSQL unless path is set */
	int max_attempts;    /* 10 */
	int max_age_s;       /* 86400 */
	int backoff_base_ms; /* 1000 */
	int backoff_max_ms;  /* 600000 */
	int per_endpoint_concurrency; /* 4 */
	int delivery_nice;            /* 5: the delivery thread's nice value above the workers' */
	long long max_depth;          /* 1000000 pending rows; beyond, enqueue fails (503) */
	int secure_delete;            /* 0 "fast", 1 "on": STORE_SECURE_DELETE (store.h) */
};

void queue_config_default(struct queue_config *c); /* path NULL, no shared store */
void queue_config_clear(struct queue_config *c);   /* frees path and shared; accepts zeroed */
/* The store_open flags (store.h) the settings ask of the SQLite store. */
unsigned queue_config_store_flags(const struct queue_config *c);
/* Whether queued delivery has a store: queue.path or a shared group. */
int queue_config_has_store(const struct queue_config *c);
/* The `queue` group's settings (bridge/queue_config.c). */
extern const struct cfg_setting queue_settings[];

/* Read the optional top-level group
 *   queue = { path = "queue.db"; max_attempts = 10; max_age_s = 86400;
 *             backoff_base_ms = 1000; backoff_max_ms = 600000;
 *             per_endpoint_concurrency = 4; max_depth = 1000000;
 *             secure_delete = "fast"; delivery_nice = 5; };
 * and the top-level `shared` group (shared.h) into ret (defaults for what is
 * absent; path resolved against the folder of `file`; path is required when
 * the group is present and there is no `shared` group).  Every problem goes
 * to d as file:line; returns -1 if there was one.  Absent groups: 0 with
 * ret->path and ret->shared.url NULL. */
int queue_config_load(const config_setting_t *root, const char *file, struct queue_config *ret,
		      struct diag *d);

/* ---- delivery policy (pure functions, exposed for tests) ---- */

/* Upper bound of the wait after `failures` failed attempts (>= 1). */
int64_t queue_backoff_cap_ms(const struct queue_config *c, int failures);
/* Full jitter: rnd mapped into [0, cap]. */
int64_t queue_backoff_ms(const struct queue_config *c, int failures, uint64_t rnd);

/* ---- the queue ---- */

enum queue_event_type {
	QUEUE_EV_DELIVERED,       /* endpoint answered 2xx; the row is deleted */
	QUEUE_EV_ATTEMPT_FAILED,  /* another attempt at next_attempt_ms */
	QUEUE_EV_DEAD_LETTER,     /* no more attempts */
	QUEUE_EV_STORE_ERROR,     /* the scheduler could not read or update the store */
	QUEUE_EV_STORE_RECOVERED, /* a write went through again after store errors */
	QUEUE_EV_STORE_WARNING,   /* the store's WAL could not be checkpointed (once per kind) */
	QUEUE_EV_PRIORITY,        /* the delivery thread's priority could not be lowered (once) */
};

struct queue_event {
	enum queue_event_type type;
	int64_t id;
	const char *route, *endpoint, *delivery_id, *participation_id, *state; /* may be "" */
	int attempt;             /* the attempt this is about (1 = first), 0 if none */
	int status;              /* HTTP status of the attempt, 0 if none */
	const char *outcome;     /* upstream_outcome_name(), NULL if no attempt */
	const char *reason;      /* human text, NULL on delivery */
	long elapsed_ms;         /* of the attempt */
	int64_t next_attempt_ms; /* ATTEMPT_FAILED: epoch ms of the next attempt */
	int64_t age_ms;          /* since the delivery was queued */
};

typedef void (*queue_event_cb)(const struct queue_event *ev, void *arg);

/* serve's log line for a queue event: pass it to queue_new() as the callback. */
void queue_event_log(const struct queue_event *ev, void *arg);

struct queue;

/* Opens (creating on first use) the store at c->path and takes its lock
 * file (path + ".lock"): a second serve on the same store fails here.
 * Without c->path, the shared store of c->shared: several bridges use it at
 * once; each attempt runs under a lease renewed every lease_ms / 3, and
 * other bridges' changes wake the scheduler (LISTEN/NOTIFY, polling every
 * shared.poll_ms as the fallback).  PostgreSQL unreachable at start is no
 * error: enqueues fail (503) and queue_ready says so until it answers.  lim
 * (may be NULL) bounds responses; its max_connections is replaced by
 * per_endpoint_concurrency.  cb (may be NULL) hears about every attempt. */
int queue_new(const struct queue_config *c, const struct upstream_limits *lim, queue_event_cb cb,
	      void *cb_arg, struct queue **ret, struct bridge_error *err);

/* What queue_new would refuse, with its message, for `check`: the settings,
 * the lock file's folder, and a store serve would refuse (damaged: the
 * quick_check, someone else's, newer; opened and counted, never created).
 * A lock held by a running serve is not a refusal. */
int queue_probe(const struct queue_config *c, struct bridge_error *err);

/* Start the scheduler thread. */
int queue_start(struct queue *q, struct bridge_error *err);

/* Stop starting attempts, wait up to deadline_ms for those in flight, cancel
 * the rest (they stay pending and go out after the next start), join the
 * thread.  Enqueueing still works until queue_free. */
void queue_stop(struct queue *q, int deadline_ms);

/* Stops if needed, stores what is still waiting, closes the store,
 * releases the lock.  Accepts NULL. */
void queue_free(struct queue *q);

enum queue_enqueue_result {
	QUEUE_STORED = 0,
	QUEUE_DUPLICATE = 1, /* the same route + participation + state is already pending:
			      * not stored again; ret names the pending row */
};

/* Store one delivery durably.  Returns QUEUE_STORED or QUEUE_DUPLICATE
 * (answer 202 either way), or -1 when it was not stored: store error, full
 * disk, queue full (max_depth), invalid item (answer 503). */
int queue_enqueue(struct queue *q, const struct store_item *item, struct store_receipt *ret,
		  struct bridge_error *err);

/* The outcome of an asynchronous enqueue: result is QUEUE_STORED,
 * QUEUE_DUPLICATE (receipt set) or -1 (error says why). */
typedef void (*queue_enqueue_cb)(int result, const struct store_receipt *receipt, const char *error,
				 void *arg);
struct queue_pending;

/* queue_enqueue without blocking the caller's event loop: the item is
 * copied and stored together with whatever else is waiting (one fsync for
 * all), then cb(arg) runs exactly once from `base`'s loop (never inside this
 * call) unless cancelled first.  Answer the sender from cb: 202 for
 * QUEUE_STORED and QUEUE_DUPLICATE, 503 for -1.  Returns -1 with err set
 * (and no callback) when the item is invalid or QUEUE_WAITING_MAX posts are
 * already waiting.  base must have been created after
 * evthread_use_pthreads(); every pending enqueue must be finished or
 * cancelled before queue_free. */
int queue_enqueue_async(struct queue *q, struct event_base *base, const struct store_item *item,
			queue_enqueue_cb cb, void *arg, struct queue_pending **ret,
			struct bridge_error *err);

/* On base's thread: cb will not run.  The row may still be stored: a
 * sender answered 503 instead will post again and gets a duplicate (or a
 * second delivery: at least once). */
void queue_enqueue_cancel(struct queue_pending *p);

struct queue_stats {
	long long depth; /* pending rows, in flight included */
	long long dead;  /* dead letters in the store */
	long long in_flight;
	long long oldest_age_ms; /* of the pending rows; 0 when none */
	long long enqueued;      /* counters since queue_new */
	long long duplicates;
	long long delivered;
	long long failed_attempts;
	long long dead_lettered;
	long long store_errors;
	long long corrupt; /* dead letters made because a row failed its checksum */
};
void queue_stats(struct queue *q, struct queue_stats *ret);

/* Whether a post could be stored now: 0 yes; -1 when the store's last write
 * failed (a post's, or an attempt outcome's: then posts are refused until
 * the outcomes are stored) or the queue holds max_depth rows, with the
 * reason in why.  It comes back by itself once the store takes writes. */
int queue_ready(struct queue *q, char *why, size_t cap);

/* Append the queue's lines (Prometheus text format 0.0.4) to out: the
 * process-wide series and, per route (label route), depth, oldest age and
 * dead letters counted in the store; cfg (may be NULL) names the queued
 * routes shown at zero when the store holds none of their rows. */
void queue_metrics_render(struct queue *q, const struct bridge_config *cfg, struct evbuffer *out);

#endif
