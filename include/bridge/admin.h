/*
 * admin: the admin listener, apart from the webhook listener that faces the
 * internet.  It serves GET /metrics, /readyz, /healthz and /dry-run/summary
 * on admin.address:admin.port (127.0.0.1:9180 by default), with its own
 * auth, allow-list and TLS; every other path is 404.
 *
 * One admin runs on the main thread's event_base (the one that also takes
 * the signals), so it keeps answering while the workers drain.  It reads
 * what it reports through struct admin_view, which the main thread updates
 * (reload, drain) on that same thread: no locking.  The metrics, shadow and
 * queue it renders are themselves thread-safe.
 */
#ifndef BRIDGE_ADMIN_H
#define BRIDGE_ADMIN_H

#include "bridge/config.h"
#include "bridge/diag.h"

struct event_base;
struct metrics;
struct queue;
struct shadow;
struct cutover;
struct admin;

struct admin_view {
	const struct bridge_config *cfg; /* the running config; admin settings come from it */
	struct metrics *metrics;         /* may be NULL */
	struct queue *queue;             /* NULL when no route uses queued delivery */
	struct shadow *shadow;           /* NULL when dry_run.v2_path is off */
	struct cutover *cutover;         /* dual routes' state; may be NULL */
	int started;                     /* every worker is listening */
	int draining;                    /* SIGTERM/SIGINT: the workers are draining */
	int port;                        /* the webhook listener's port */
};

/* Bind cfg->admin and serve it on base.  view must outlive the admin; its
 * fields may change between events.  On failure err names the address. */
int admin_new(struct event_base *base, const struct bridge_config *cfg,
	      const struct admin_view *view, struct admin **ret, struct bridge_error *err);

/* The port actually bound (admin.port 0 picks one). */
int admin_port(const struct admin *a);

/* The answer /readyz gives: 200, or 503 with the reason in why. */
int admin_readiness(const struct admin_view *view, char *why, size_t cap);

void admin_free(struct admin *a); /* accepts NULL */

#endif
