/*
 * metrics: process-wide counters in the Prometheus text format.
 *
 * One struct metrics is shared by every worker thread: fixed counters are
 * atomics, label sets that a peer can influence (unmapped variable names,
 * rule locations) live in bounded tables (METRICS_LABELS_MAX entries each;
 * further names are counted under "_other") so a sender cannot grow memory.
 */
#ifndef BRIDGE_METRICS_H
#define BRIDGE_METRICS_H

#include <stddef.h>

struct evbuffer;
struct bridge_config;

#define METRICS_LABELS_MAX 512

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

struct metrics;

/* Sized for cfg's routes; cfg must outlive it. NULL on out of memory. */
struct metrics *metrics_new(const struct bridge_config *cfg, int workers);
void metrics_free(struct metrics *m); /* accepts NULL */

/* route: index into cfg->routes, or -1 before a route was chosen. */
void metrics_request(struct metrics *m, long route, enum metrics_outcome o);
void metrics_upstream_latency(struct metrics *m, long route, long ms);
/* Dual mode: the outcome of the v2 delivery, which never answers the sender. */
void metrics_dual_v2(struct metrics *m, long route, enum metrics_outcome o);
void metrics_mapping_error(struct metrics *m, const char *rule_location);
void metrics_unmapped(struct metrics *m, const char *variable);
void metrics_in_flight_add(struct metrics *m, int delta);
/* Upstream connections of one route's pool, as last reported by a worker. */
void metrics_pool_connections(struct metrics *m, long route, int worker, long open);

/* Append the whole exposition (text format 0.0.4) to out. */
void metrics_render(struct metrics *m, struct evbuffer *out);

#endif
