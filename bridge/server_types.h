/*
 * The inbound side's private types, shared by its files: server.c (answers,
 * exchanges, dispatch, the webhook handler, lifecycle), server_deliver.c
 * (a translated post forwarded, queued or passed to the legacy importer)
 * and server_dryrun.c (dry-run reporting and the real v2 path).
 */
#ifndef BRIDGE_SERVER_TYPES_H
#define BRIDGE_SERVER_TYPES_H

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/queue.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <yajl/yajl_tree.h>

#include "bridge/clock.h"
#include "bridge/listen.h"
#include "bridge/access.h"
#include "bridge/accesslog.h"
#include "bridge/confread.h"
#include "bridge/convert.h"
#include "bridge/cutover.h"
#include "bridge/delivery.h"
#include "bridge/guard.h"
#include "bridge/httpd.h"
#include "bridge/jsonl.h"
#include "bridge/log.h"
#include "bridge/mapping.h"
#include "bridge/queue.h"
#include "bridge/metrics.h"
#include "bridge/record.h"
#include "bridge/server.h"
#include "bridge/shadow.h"
#include "bridge/sign.h"
#include "bridge/translate.h"
#include "bridge/upstream.h"
#include "bridge/v1.h"
#include "bridge/v2record.h"

struct exchange;

/* What one config load owns on this worker.  A reload (SIGHUP) makes a new
 * generation; the old one is retired and freed when the last exchange that
 * still waits on its pools is answered. */
struct generation {
	const struct bridge_config *cfg;
	struct metrics *metrics;
	struct upstream_tls **tls;           /* one per cfg->tls_files */
	struct upstream_pool **pools;        /* one per route, NULL for dry-run routes */
	struct upstream_pool **legacy_pools; /* v1 passthrough, one per route, or NULL */
	long *pool_seen;                     /* connections at the last gauge refresh */
	size_t pending;                      /* exchanges waiting on these pools */
	int retired;
	struct generation *next_retired;
	void (*release)(void *arg); /* this worker no longer uses cfg/metrics */
	void *release_arg;
};

struct server {
	struct event_base *base;
	const struct bridge_config *cfg; /* == gen->cfg */
	struct generation *gen;
	struct generation *retired;
	struct server_options opt;
	struct httpd *httpd;             /* the listener's HTTP/1.1 server */
	struct evconnlistener *listener; /* the httpd's once it is made */
	struct evdns_base *dns;
	struct guard *guard;           /* accept pauses */
	SSL_CTX *listen_tls;           /* HTTPS listener, or NULL */
	LIST_HEAD(, exchange) pending; /* posts waiting for their endpoint */
	size_t n_pending;
	struct log_ratelimit rejected_log; /* lines a sender can trigger at will */
	int port;
	int draining;
	struct event *drain_timer;
	struct event *gauge_timer; /* refreshes this worker's pool gauges */
	void (*drain_done)(void *);
	void *drain_arg;
};

/* One webhook post, from arrival to its single answer (the next request on
 * its connection waits for it, so each must be answered): every
 * path ends in server_answer() (through exchange_answer() or the legacy
 * relay), which replies, counts, logs and frees. */
struct exchange {
	LIST_ENTRY(exchange) link; /* in server.pending while waiting upstream */
	struct server *srv;
	struct generation *gen; /* the config this post was handled with */
	struct httpd_request *req;
	const struct bridge_route *route;
	long route_index;                   /* -1 until routed */
	struct upstream_request *up;        /* v2 delivery */
	struct upstream_request *legacy_up; /* v1 passthrough (dry-run with legacy, dual) */
	struct queue_pending *qp;           /* queued delivery: waiting for the store */
	int queued;                         /* in server.pending */
	int answered;                       /* the sender has its answer */
	char delivery_id[DELIVERY_ID_LEN + 1];
	char sig[SIGN_HEADER_MAX]; /* the v2 body's signature, "" when unsigned */
	char traceparent[56];      /* the sender's W3C trace context, "" when none or malformed */
	char request_id[129];      /* the sender's X-Request-Id, "" when none or unusable */
	char *participation_id;
	char *fail_rule, *fail_key; /* a mapping failure, for the access log */
	struct timeval start;
	size_t bytes_in, bytes_out; /* bytes_out: what went to an endpoint */
	int v2_primary;             /* dual: v2 answers this participation (cutover.h) */
	struct held_answer *held;   /* dual: v1's answer to its copy, should v1 take over */
};

/* What the legacy importer answered to a copy. */
struct held_answer {
	int status;
	char *content_type;
	char *body;
	size_t len;
};

/* What an answer is counted and logged as, besides its status. */
struct answer_note {
	enum metrics_outcome outcome; /* ANSWER_UNCOUNTED: neither a post nor a refusal */
	int upstream_status;
	const char *error;       /* the reason, for the access log; NULL on success */
	const char *answered_by; /* "legacy_endpoint": its answer relayed as it is */
};

/* a /healthz answer, a real v2 post taken: not a webhook post, not a refusal */
#define ANSWER_UNCOUNTED OUTCOME_COUNT

/* ---- server.c ---------------------------------------------------------- */

/* JSON text pieces appended to an evbuffer: a quoted escaped string; a
 * ,"key":"value" member (nothing when value is NULL); a JSON array of the
 * result's unmapped keys. */
void server_json_str(struct evbuffer *b, const char *s, size_t n);
void server_json_field(struct evbuffer *b, const char *key, const char *value);
void server_unmapped_json(struct evbuffer *b, const struct mapping_result *m);

/* Every answer leaves through server_answer(): sent (body consumed), counted,
 * logged, and the exchange x (NULL outside one) closed.
 * server_answer_json() closes the JSON object in body first. */
void server_answer(struct httpd_request *req, struct exchange *x, int status, const char *phrase,
		   struct evbuffer *body, const struct answer_note *n);
void server_answer_json(struct httpd_request *req, struct exchange *x, int status,
			struct evbuffer *body, const struct answer_note *n);

/* An error body {"error":code,"message":msg (open: callers add fields). */
struct evbuffer *server_error_body(const char *code, const char *message);

/* A refusal outside the webhook exchange, counted under route "". */
void server_refuse(struct httpd_request *req, int status, enum metrics_outcome outcome,
		   const char *code, const char *message);

/* The challenge header a 401 carries for a's scheme. */
void server_auth_challenge(struct httpd_request *req, const struct access_auth *a);
/* 1 when req carries what a (listen.auth or a route's auth) asks for. */
int server_auth_ok(const struct access_auth *a, const struct httpd_request *req);

/* A webhook post's answer: body an open JSON object (consumed), error the
 * reason for the log (NULL on success).  exchange_fail() builds the error
 * body from code and message. */
void exchange_answer(struct exchange *x, int status, enum metrics_outcome outcome,
		     struct evbuffer *body, int upstream_status, const char *error);
void exchange_fail(struct exchange *x, int status, enum metrics_outcome outcome, const char *code,
		   const char *message);

/* Free x once answered and no upstream request of it is outstanding. */
void exchange_release(struct exchange *x);

/* Put x on the pending list before its first upstream request. */
void exchange_track(struct exchange *x);

/* A capture that cannot be written, logged (rate-limited). */
void server_log_capture_failure(struct server *s, const struct bridge_error *err);

/* ---- server_deliver.c -------------------------------------------------- */

/* Send m to the route's endpoint (or its queue); answered when it ends. */
void server_forward(struct exchange *x, const struct mapping_result *m);

/* Pass the v1 post to the route's legacy importer; 0 when it is on its way,
 * -1 when it could not be sent (x is answered then). */
int server_legacy_send(struct exchange *x, const char *body, size_t len);

/* ---- server_dryrun.c --------------------------------------------------- */

/* A dry-run post's v2 on stdout (dry_run.stdout). */
void server_dry_run_print(const struct exchange *x, const struct mapping_result *m);

/* The unmapped keys of m: counted, and reported to the dry-run report. */
void server_report_unmapped(struct exchange *x, const struct mapping_result *m);

/* A translated post offered to the shadow store and written to the report. */
void server_dry_run_record(struct exchange *x, const struct mapping_result *m);

/* A mapping failure written to the report, with its rule. */
void server_report_failure(const struct exchange *x, const struct bridge_error *err,
			   const char *rule);

/* The real v2 path (dry_run.v2_path): verified, compared, answered. */
void server_real_v2(struct server *s, struct httpd_request *req);

#endif
