/*
 * cutover: which importer answers a participation on a route that has both
 * (mode = "dual": `endpoint` for v2, `legacy_endpoint` for v1), how that
 * share moves at run time, and the automatic rollback.
 *
 * State of a route: `ramp` 0..100, the share of participations whose primary
 * (the importer whose answer the sender gets, and which must succeed) is v2,
 * and a status: "ramping" (set by the config or an operator), "killed" (the
 * kill switch: ramp 0) or "rolled_back" (the automatic rollback: ramp 0).
 * `copy` (config) says whether the other importer gets its copy.
 *
 * The choice is sticky: bucket = keyed hash of (route, participation id)
 * mod 100, primary is v2 when bucket < ramp.  Both states of one
 * participation and every retry take the same bucket, and raising the ramp
 * only adds buckets, so a participation once on v2 stays on v2.
 *
 * Persistence: the state lives in a store behind struct cutover_backend
 * (get every route's row, insert a row when absent, set a row, tell whether
 * another writer changed the rows), so several instances and the `cutover`
 * command follow one ramp.  The config's value is only a route's initial
 * state: a row once stored wins over it.  A struct cutover without backend
 * keeps the state in memory only.
 *
 * Every function is thread-safe: the workers decide and observe, the main
 * thread (admin listener, store refresh) changes.  The module never logs:
 * each change (operator, store, rollback) is reported to the event callback,
 * on the thread that made it.
 */
#ifndef BRIDGE_CUTOVER_H
#define BRIDGE_CUTOVER_H

#include <stddef.h>
#include "bridge/diag.h"

struct evbuffer;
struct bridge_config;

#define CUTOVER_ROUTE_MAX  256 /* bytes of a route name in a stored row */
#define CUTOVER_BY_MAX     160 /* bytes of "who, from where" */
#define CUTOVER_MINUTES    60  /* the per-minute history kept for the console */
#define CUTOVER_WINDOW_MAX 3600

enum cutover_side { CUTOVER_V1, CUTOVER_V2 };

enum cutover_status {
	CUTOVER_RAMPING = 0,
	CUTOVER_KILLED = 1,
	CUTOVER_ROLLED_BACK = 2,
};
const char *cutover_status_name(enum cutover_status s);

/* The route's `cutover` group (config.c fills it; defaults below). */
struct cutover_route_config {
	int ramp;                /* initial ramp, default 0 */
	int copy;                /* the other importer gets its copy, default true */
	double max_failure_rate; /* rollback.max_failure_rate, default 0.05 */
	int window_s;            /* rollback.window_s, default 300 */
	int min_posts;           /* rollback.min_posts, default 20 */
};
void cutover_route_config_default(struct cutover_route_config *c);

/* One stored row. */
struct cutover_row {
	char route[CUTOVER_ROUTE_MAX];
	int ramp;
	enum cutover_status status;
	long long changed_ms; /* Unix epoch ms */
	char by[CUTOVER_BY_MAX];
};

/* A store of rows.  Each function returns 0 or -1 with err set. */
struct cutover_store_ops {
	/* every stored row, in any order */
	int (*load)(void *impl, int (*cb)(const struct cutover_row *r, void *arg), void *arg,
		    struct bridge_error *err);
	/* insert r unless the route has a row; *ret_inserted 1 when it did */
	int (*init)(void *impl, const struct cutover_row *r, int *ret_inserted,
		    struct bridge_error *err);
	int (*set)(void *impl, const struct cutover_row *r, struct bridge_error *err);
	/* 1 when another writer changed rows since the last call, else 0 */
	int (*changed)(void *impl, struct bridge_error *err);
	void (*close)(void *impl);
};
struct cutover_backend {
	const struct cutover_store_ops *ops; /* NULL: in memory only */
	void *impl;
	char *where; /* how the store is named in logs ("sqlite:/path"); owned */
};

/* The SQLite store: table cutover_state in the file at path (the queue's
 * store when there is one, which must exist; else its own file, created
 * mode 0600 when create is set). */
int cutover_sqlite_open(const char *path, int create, struct cutover_backend *ret,
			struct bridge_error *err);
/* The shared store (store.h): table cutover_state in the PostgreSQL
 * database of the config's `shared` group, for every bridge on it. */
struct shared_config;
int cutover_shared_open(const struct shared_config *c, int create, struct cutover_backend *ret,
			struct bridge_error *err);
void cutover_backend_close(struct cutover_backend *b); /* accepts a zeroed one */

/* The state file of a config: its queue store when it has one, else
 * "cutover.db" resolved like queue.path ($STATE_DIRECTORY, else the config's
 * folder).  *ret_shared 1 for the queue store.  Caller frees. */
char *cutover_store_path(const struct bridge_config *cfg, int *ret_shared);

/* What the event callback hears. */
enum cutover_event_kind {
	CUTOVER_EVENT_CHANGED,  /* an operator through this process (API) */
	CUTOVER_EVENT_INITIAL,  /* a route's first state, from the config */
	CUTOVER_EVENT_FOLLOWED, /* a change stored by another writer, applied here */
	CUTOVER_EVENT_ROLLBACK, /* the automatic rollback */
	CUTOVER_EVENT_STORE_ERROR,
};
struct cutover_event {
	enum cutover_event_kind kind;
	const char *route;
	int old_ramp, new_ramp;
	enum cutover_status old_status, new_status;
	const char *by; /* who, from where */
	int n_routes;   /* route NULL (every route at once): how many changed */
	/* rollback: the figures over the window */
	long long v2_posts, v2_failed, v1_posts, v1_failed;
	double v2_rate, v1_rate, max_rate;
	int window_s;
	const char *error; /* STORE_ERROR */
};
typedef void (*cutover_event_cb)(const struct cutover_event *ev, void *arg);

struct cutover;

/* Takes the backend (closed by cutover_free).  NULL on out of memory. */
struct cutover *cutover_new(struct cutover_backend *backend, cutover_event_cb cb, void *arg);
void cutover_free(struct cutover *c); /* accepts NULL */

/* Give a struct cutover made without backend its store (taken); -1 when it
 * has one already. */
int cutover_set_backend(struct cutover *c, struct cutover_backend *backend);
int cutover_has_backend(struct cutover *c);

/* Take a config's cutover routes (at start and at every reload): a route
 * seen for the first time gets its stored row, or the config's initial
 * state (stored).  Routes of older configs are kept (a later config may
 * name them again). */
int cutover_configure(struct cutover *c, const struct bridge_config *cfg, struct bridge_error *err);

/* Apply rows another writer stored (call every second or so). */
int cutover_refresh(struct cutover *c, struct bridge_error *err);

/* 0..99: the participation's bucket on the route. */
int cutover_bucket(const char *route, const char *participation_id);

/* 1 when v2 is the primary of this participation on this route now; 0 for
 * v1 (also for a route without cutover, or no participation id).  *ret_copy
 * (may be NULL): the other side gets a copy. */
int cutover_primary_v2(struct cutover *c, const char *route, const char *participation_id,
		       int *ret_copy);

/* The outcome of one post to one side (primary or copy) at now_ms (Unix
 * epoch ms): counted per minute and, for a cutover route, in the rollback
 * window.  A v2 primary failure may trigger the rollback. */
void cutover_observe(struct cutover *c, const char *route, enum cutover_side side, int primary,
		     int ok, long long now_ms);

/* An operator's change.  route NULL: every cutover route, reported as one
 * event (route NULL, n_routes).  ramp -1: keep.  kill: ramp 0, status
 * killed.  Stored first, then in force; returns the number of routes
 * changed, -1 with err (no such route: err->key = "route"). */
struct cutover_change {
	const char *route;
	int ramp;
	int kill;
	const char *by; /* who, from where */
};
int cutover_apply(struct cutover *c, const struct cutover_change *ch, struct bridge_error *err);

/* {"routes":[{"route","ramp","primary","status","copy","changed_at","by",
 * "rollback":{...},"window":{...}}],"store":...} for cfg's cutover routes.
 * malloc'd, NULL on out of memory. */
char *cutover_state_json(struct cutover *c, const struct bridge_config *cfg);

/* {"minutes":[{"t":epoch_s,"v1_ok","v1_failed","v2_ok","v2_failed"}...]}
 * per route of cfg, the last CUTOVER_MINUTES minutes, oldest first. */
char *cutover_history_json(struct cutover *c, const struct bridge_config *cfg, long long now_ms);

/* webhook_bridge_cutover_* lines (Prometheus text) for cfg's cutover routes. */
void cutover_metrics_render(struct cutover *c, const struct bridge_config *cfg,
			    struct evbuffer *out);

#endif
