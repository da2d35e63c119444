/*
 * metrics: process-wide counters in the Prometheus text format.
 *
 * Two levels, so that what is measured survives a reload (SIGHUP):
 *  - struct metrics_store lives as long as the process.  It keeps one set of
 *    series per route *name* (created the first time a config names it, at
 *    most METRICS_ROUTES_MAX names), the unmapped-variable and mapping-error
 *    tables, the reload outcome and the process start time.
 *  - struct metrics is one config's view of the store: it maps that config's
 *    route indexes to the store's series, and it decides what is exported
 *    (a route the running config no longer has stops being exported; one
 *    that stays keeps counting).  One view per loaded config, shared by
 *    every worker; freed with the config.
 *
 * Counters are atomics; label sets that a peer can influence (unmapped
 * variable names, rule locations) live in bounded tables (METRICS_LABELS_MAX
 * entries each; further names are counted under "_other") so a sender cannot
 * grow memory.  Every function is thread-safe.
 */
#ifndef BRIDGE_METRICS_H
#define BRIDGE_METRICS_H

#include <stddef.h>

struct evbuffer;
struct bridge_config;

#define METRICS_LABELS_MAX 512
#define METRICS_ROUTES_MAX 1024

enum metrics_outcome {
	OUTCOME_DELIVERED,
	OUTCOME_DRY_RUN,
	OUTCOME_DROPPED,       /* unrouted, accepted */
	OUTCOME_INVALID_INPUT, /* 400/413/415 */
	OUTCOME_NO_ROUTE,
	OUTCOME_MAPPING_FAILED,
	OUTCOME_UPSTREAM_STATUS,
	OUTCOME_UPSTREAM_TIMEOUT,
	OUTCOME_UPSTREAM_UNREACHABLE,
	OUTCOME_UPSTREAM_TLS,
	OUTCOME_UPSTREAM_PROTOCOL,
	OUTCOME_UPSTREAM_TOO_LARGE,
	OUTCOME_SHUTTING_DOWN,
	OUTCOME_INTERNAL,
	OUTCOME_UNAUTHORIZED,
	OUTCOME_FORBIDDEN,
	OUTCOME_LEGACY_DELIVERED, /* dry-run/dual: the legacy importer took the v1 post */
	OUTCOME_QUEUED,           /* stored for queued delivery (202) */
	OUTCOME_COUNT
};

enum metrics_shadow_result {
	SHADOW_RESULT_IDENTICAL,
	SHADOW_RESULT_DIFFERENT,
	SHADOW_RESULT_NOT_COMPARED, /* a body too large or not JSON */
	SHADOW_RESULT_COUNT
};

struct metrics_store;
struct metrics;

/* workers: worker threads (per-worker gauges).  NULL on out of memory. */
struct metrics_store *metrics_store_new(int workers);
void metrics_store_free(struct metrics_store *st); /* accepts NULL; after every view */

/* The outcome of a reload: config_last_reload_successful and, when ok,
 * reload_success_timestamp_seconds. */
void metrics_store_reload(struct metrics_store *st, int ok);

/* cfg's view of st; cfg must outlive it. NULL on out of memory or when the
 * store holds METRICS_ROUTES_MAX route names already. */
struct metrics *metrics_new(struct metrics_store *st, const struct bridge_config *cfg);
void metrics_free(struct metrics *m); /* accepts NULL; the store keeps the counts */

/* route: index into the view's cfg->routes, or -1 before a route was chosen.
 * Every function accepts m == NULL (nothing counted). */
void metrics_request(struct metrics *m, long route, enum metrics_outcome o);
/* An answered webhook post: duration from its arrival to the answer. */
void metrics_request_duration(struct metrics *m, long route, enum metrics_outcome o, long long us);
void metrics_upstream_latency(struct metrics *m, long route, long long us);
/* Dual mode: the outcome of the v2 delivery, which never answers the sender. */
void metrics_dual_v2(struct metrics *m, long route, enum metrics_outcome o);
/* rule_location: "file:line" as the sender sees it (no folder of the host). */
void metrics_mapping_error(struct metrics *m, long route, const char *rule_location);
void metrics_unmapped(struct metrics *m, long route, const char *variable);
void metrics_in_flight_add(struct metrics *m, int delta);
/* Upstream connections of one route's pool, as last reported by a worker. */
void metrics_pool_connections(struct metrics *m, long route, int worker, long open);
/* Client connections a worker (its index, as in the log's "worker") holds. */
void metrics_worker_connections(struct metrics *m, int worker, long open);
/* The shadow comparison, by route name (the shadow store keeps names). */
void metrics_shadow_compared(struct metrics *m, const char *route, enum metrics_shadow_result r);
/* side: "translated" or "real"; reason: "ttl" or "capacity".  On the store:
 * the shadow store reports from any thread, whatever config runs. */
void metrics_store_shadow_expired(struct metrics_store *st, const char *route, const char *side,
				  const char *reason);
/* Participations waiting for their other side now (set before a render). */
void metrics_shadow_waiting(struct metrics *m, long long waiting);

/* Append the whole exposition (text format 0.0.4) to out: the view's
 * routes, the tables, process_* and build information. */
void metrics_render(struct metrics *m, struct evbuffer *out);

/* For the console: [{"route","mode","requests":{"OUTCOME":N,...}}] (route ""
 * first: before a route was chosen) and [{"route","variable","count"}] of the
 * unmapped keys, for the view's routes. */
void metrics_requests_json(struct metrics *m, struct evbuffer *out);
void metrics_unmapped_json(struct metrics *m, struct evbuffer *out);

/* Append v to out as a Prometheus label value (backslash, " and newline escaped). */
void metrics_label_add(struct evbuffer *out, const char *v);

#endif
