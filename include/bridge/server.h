/*
 * server: the inbound side.  One struct server = one httpd on one
 * event_base with its own evdns base and upstream pools; it answers every
 * request exactly once (an unanswered request holds its connection, and the
 * requests behind it, forever): with the endpoint's outcome in
 * forward mode, at once in dry-run mode, or 503 when shut down first.
 */
#ifndef BRIDGE_SERVER_H
#define BRIDGE_SERVER_H

#include "bridge/config.h"
#include "bridge/diag.h"

struct event_base;
struct jsonl;
struct metrics;
struct recorder;
struct v2record;
struct server;
struct shadow;
struct cutover;

struct server_options {
	struct metrics *metrics; /* shared by every worker; may be NULL */
	/* process-wide, shared by every worker, kept across reloads; may be NULL */
	struct jsonl *report;       /* dry-run report file */
	struct shadow *shadow;      /* translated vs real v2 correlation (dry_run.v2_path) */
	struct recorder *recorder;  /* capture of inbound v1 posts (record) */
	struct v2record *v2_record; /* capture of verified real v2 posts (dry_run.v2_record) */
	int worker;                 /* index of this worker, for per-worker gauges */
	int listen_fd; /* listening socket shared by the workers (listen.h); each dups it */
	struct httpd_share
		*accept_share;      /* the workers' connection counts (httpd.h); may be NULL */
	void (*release)(void *arg); /* called once the server no longer uses cfg/metrics */
	void *release_arg;
	struct queue *queue;     /* queued delivery; NULL when no route uses it */
	struct cutover *cutover; /* dual routes: who answers (cutover.h); may be NULL */
};

/* Watch opt->listen_fd and create pools.  cfg and opt->metrics must outlive
 * the server. */
int server_new(struct event_base *base, const struct bridge_config *cfg,
	       const struct server_options *opt, struct server **ret, struct bridge_error *err);

/* Switch to a new config (SIGHUP), on the server's own thread.  Requests
 * in flight finish with the config they started with; its pools are freed
 * after the last one, then release(release_arg) runs.  The listen address,
 * port, TLS, worker count, report, shadow and recording settings are not
 * changed by a reload.  On failure the
 * old config stays and err says why. */
int server_reload(struct server *s, const struct bridge_config *cfg, struct metrics *metrics,
		  void (*release)(void *arg), void *release_arg, struct bridge_error *err);

/* Call on the thread that will run the server's event_base, before dispatch. */
void server_thread_init(struct server *s);

/* The port actually bound (useful when the config says port 0). */
int server_port(const struct server *s);

/* Stop accepting; in-flight requests keep running.  When none is left, or
 * when deadline_ms passes (remaining ones are answered 503), done(arg) runs. */
void server_drain(struct server *s, int deadline_ms, void (*done)(void *arg), void *arg);

/* Free everything; requests still pending are answered 503 first. */
void server_free(struct server *s);

#endif
