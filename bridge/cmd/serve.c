/*
 * serve: the proxy's run.  Workers (one event loop each on the shared
 * listening socket), the process-wide files and stores, the signals (stop
 * and drain, reload, reopen) and the service manager's notifications.
 * Exit codes: 0 clean stop, 1 invalid config or a start that failed,
 * 2 usage errors.
 */
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>
#include <unistd.h>

#include "bridge/admin.h"
#include "cli.h"
#include "bridge/clock.h"
#include "bridge/config.h"
#include "bridge/cutover.h"
#include "bridge/guard.h"
#include "bridge/httpd.h"
#include "bridge/json.h"
#include "bridge/jsonl.h"
#include "bridge/listen.h"
#include "bridge/log.h"
#include "bridge/metrics.h"
#include "bridge/notify.h"
#include "bridge/queue.h"
#include "bridge/record.h"
#include "bridge/server.h"
#include "bridge/shadow.h"
#include "bridge/store.h"
#include "bridge/translate.h"
#include "bridge/upstream.h"
#include "bridge/v2record.h"

static const char usage_serve[] =
	"usage: webhook-bridge serve --config FILE [--log-level debug|info|warn|error]\n"
	"                            [--workers N] [--drain-ms MS] [--listen ADDR:PORT]\n"
	"\n"
	"Runs the proxy. Logs are JSON lines on stderr; in dry-run mode each v2\n"
	"payload that would be sent is printed to stdout as one JSON line.\n"
	"--workers: event-loop threads sharing the port (default: config, else cores).\n"
	"--listen: listen here instead of listen.address and listen.port ([::1]:8080\n"
	"for IPv6); another process already on that port is an error unless both set\n"
	"listen.reuseport = true.\n"
	"SIGTERM/SIGINT: stop accepting, finish in-flight requests (up to\n"
	"--drain-ms, default 10000), answer the rest 503, exit 0.\n"
	"SIGHUP: reload the config, reopen the report and capture; SIGUSR1: reopen only.\n"
	"exit: 0 clean stop, 1 invalid config or the port cannot be bound, 2 usage error\n";

/* What a stuck stdout/stderr reader has not taken LOG_FLUSH_MS after the
 * stop is lost, so that SIGTERM never waits on it. */
#define LOG_FLUSH_MS 1000

/* One worker = one thread with its own event_base, evhttp, DNS base and
 * upstream pools, all watching one listening socket (listen.h), so that no
 * other process can share the port unless listen.reuseport says so.
 * The main thread only waits for signals and tells each worker to drain. */
/* A loaded config and its metrics, shared by the workers; freed when the
 * last worker (and the main thread) let go of it. */
struct config_hold {
	struct bridge_config *cfg;
	struct metrics *metrics;
	atomic_int refs;
};

struct worker {
	int index;
	pthread_t thread;
	struct event_base *base;
	struct server *server;
	struct event *stop;
	struct event *reload;
	struct event *exited;        /* on the main thread: this worker's loop ended */
	struct metrics_store *store; /* its reload gauge, should this worker refuse one */
	atomic_int *n_exited;
	struct config_hold *_Atomic next; /* handed over by the main thread on SIGHUP */
	int drain_ms;
};

struct serve_state {
	struct event_base *base; /* main thread: signals and the shadow expiry timer */
	const char *config_path;
	struct config_hold *current;
	struct jsonl *report;       /* dry_run.report, for the whole run */
	struct shadow *shadow;      /* dry_run.v2_path correlation store, for the whole run */
	struct store *shadow_store; /* shared: where the shadow entries and totals live */
	char instance[80];          /* shared: this bridge's name in report lines */
	struct recorder *recorder;  /* record, for the whole run */
	struct v2record *v2rec;     /* dry_run.v2_record, for the whole run */
	struct event *expire;
	struct worker *workers;
	int n_workers;
	atomic_int n_exited;         /* workers whose loop ended */
	struct event *worker_exit;   /* main thread: one of them just did */
	struct admin *admin;         /* admin listener, or NULL without an admin group */
	struct metrics_store *store; /* counters for the whole run; each config has a view */
	struct admin_view view;      /* what it reports; updated on this thread */
	int drain_ms;
	int stopping;
	const char *listen_address; /* --listen, applied to every config loaded; or NULL */
	int listen_port;
	int listen_fd;                    /* the one listening socket, shared by the workers */
	struct httpd_share *accept_share; /* the workers take turns accepting */
	const char *last_reload;          /* for STATUS=: NULL before the first SIGHUP */
	char last_reload_text[128];
	struct event *watchdog;
	struct cutover *cutover; /* dual routes' state, for the whole run */
	struct event *cutover_tick;
	struct queue *queue; /* queued delivery, or NULL without a store */
	struct event *sigterm, *sigint, *sighup, *sigusr1;
};

/* What serve's options ask for beyond the state: the config, a log level
 * given on the command line, the number of workers (-1: not given). */
struct serve_args {
	const char *config_path;
	char listen_address[64];
	int level_given;
	int workers;
};

static void config_hold_release(void *arg)
{
	struct config_hold *h = arg;

	if (atomic_fetch_sub(&h->refs, 1) == 1) {
		metrics_free(h->metrics);
		bridge_config_free(h->cfg);
		free(h);
	}
}

static void worker_reload(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;
	struct config_hold *h = atomic_exchange(&w->next, NULL);
	struct bridge_error err;
	struct log_line l;

	if (!h)
		return;
	bridge_error_clear(&err);
	if (server_reload(w->server, h->cfg, h->metrics, config_hold_release, h, &err) < 0) {
		log_begin(&l, LOG_ERROR, "reload_failed");
		log_int(&l, "worker", w->index);
		log_str(&l, "message", err.message);
		log_end(&l);
		metrics_store_reload(w->store, 0);
		config_hold_release(h);
	}
}

static void worker_drained(void *arg)
{
	struct worker *w = arg;
	struct timeval flush = { 0, 200 * 1000 }; /* let the last answers leave */

	event_base_loopexit(w->base, &flush);
}

static void worker_stop(evutil_socket_t fd, short what, void *arg)
{
	struct worker *w = arg;

	server_drain(w->server, w->drain_ms, worker_drained, w);
}

static void *worker_run(void *arg)
{
	struct worker *w = arg;

	server_thread_init(w->server);
	event_base_dispatch(w->base);
	atomic_fetch_add(w->n_exited, 1);
	event_active(w->exited, EV_READ, 0);
	return NULL;
}

/* serve --listen wins over the config's listen.address and listen.port. */
static void listen_override(struct bridge_config *cfg, const char *address, int port)
{
	char *a;

	if (!address || !(a = strdup(address)))
		return;
	free(cfg->listen_address);
	cfg->listen_address = a;
	cfg->listen_port = port;
}

static int same_str(const char *a, const char *b)
{
	return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

/* SIGHUP: load and check the whole config again; hand it to every worker only
 * when it is valid, else keep the running one and say why (file:line). */
static const char *reload_config(struct serve_state *st)
{
	const struct bridge_config *old = st->current->cfg;
	struct config_hold *h;
	struct bridge_config *cfg = NULL;
	struct diag d = { 0 };
	struct log_line l;
	struct bridge_error err;
	const char *fixed = NULL;

	if (bridge_config_load(st->config_path, &cfg, &d) < 0) {
		log_begin(&l, LOG_ERROR, "reload_failed");
		log_str(&l, "config", st->config_path);
		log_int(&l, "errors", d.count);
		log_str(&l, "diagnostics", d.text);
		log_str(&l, "message", "the running configuration stays in force");
		log_end(&l);
		diag_reset(&d);
		metrics_store_reload(st->store, 0);
		return "the config has errors";
	}
	listen_override(cfg, st->listen_address, st->listen_port);
	if (strcmp(cfg->listen_address, old->listen_address) != 0 ||
	    cfg->listen_port != old->listen_port || cfg->listen_reuseport != old->listen_reuseport)
		fixed = "listen.address, listen.port and listen.reuseport";
	else if ((cfg->listen_cert_file == NULL) != (old->listen_cert_file == NULL))
		fixed = "listen.tls";
	else if (cfg->workers != old->workers)
		fixed = "workers";
	else if (cfg->admin.enabled != old->admin.enabled ||
		 (cfg->admin.enabled && (strcmp(cfg->admin.address, old->admin.address) != 0 ||
					 cfg->admin.port != old->admin.port ||
					 !same_str(cfg->admin.cert_file, old->admin.cert_file))))
		fixed = "admin.address, admin.port and admin.tls";
	else if (!same_str(cfg->report_path, old->report_path) ||
		 !same_str(cfg->shadow_path, old->shadow_path) ||
		 !same_str(cfg->v2_record_path, old->v2_record_path) ||
		 cfg->shadow_window_ms != old->shadow_window_ms ||
		 cfg->shadow_max_entries != old->shadow_max_entries)
		fixed = "dry_run";
	else if (!same_str(cfg->record_path, old->record_path))
		fixed = "record";
	else if (!same_str(cfg->queue.path, old->queue.path))
		fixed = "queue";
	else if (!same_str(cfg->queue.shared.url, old->queue.shared.url) ||
		 !same_str(cfg->queue.shared.instance, old->queue.shared.instance))
		fixed = "shared";
	if (fixed) {
		log_begin(&l, LOG_ERROR, "reload_failed");
		log_str(&l, "config", st->config_path);
		log_str(&l, "message", "a reload cannot change this; restart to apply it");
		log_str(&l, "setting", fixed);
		log_end(&l);
		bridge_config_free(cfg);
		metrics_store_reload(st->store, 0);
		return "a setting that needs a restart changed";
	}
	h = calloc(1, sizeof(*h));
	if (h)
		h->metrics = metrics_new(st->store, cfg);
	if (!h || !h->metrics) {
		if (h)
			metrics_free(h->metrics);
		free(h);
		bridge_config_free(cfg);
		return "out of memory";
	}
	h->cfg = cfg;
	if (st->cutover && cutover_serve_configure(st->cutover, cfg, &err) < 0) {
		log_begin(&l, LOG_ERROR, "cutover_store_error");
		log_str(&l, "message", err.message);
		log_end(&l);
	}
	atomic_store(&h->refs, st->n_workers + 1);
	for (int i = 0; i < st->n_workers; i++) {
		struct config_hold *prev = atomic_exchange(&st->workers[i].next, h);

		if (prev) /* a reload the worker has not picked up yet */
			config_hold_release(prev);
		event_active(st->workers[i].reload, EV_READ, 0);
	}
	config_hold_release(st->current);
	st->current = h;
	st->view.cfg = h->cfg;
	st->view.metrics = h->metrics;
	metrics_store_reload(st->store, 1);
	log_begin(&l, LOG_INFO, "reloaded");
	log_str(&l, "config", st->config_path);
	log_int(&l, "routes", (long long)cfg->n_routes);
	log_end(&l);
	return NULL;
}

/* What the service manager shows (systemctl status): routes, port and
 * how the last reload went. */
static void notify_status(struct serve_state *st, const char *state)
{
	time_t now = time(NULL);
	struct tm tm;
	char when[32];

	gmtime_r(&now, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	notify_sendf("%sSTATUS=serving %zu route(s) on %s port %d; last reload: %s (%s)", state,
		     st->current->cfg->n_routes, st->current->cfg->listen_address, st->view.port,
		     st->last_reload ? st->last_reload : "none", when);
}

/* SIGHUP and SIGUSR1: the report and the capture are opened again, so
 * logrotate can move them away without copytruncate. */
static void reopen_files(struct serve_state *st)
{
	struct bridge_error err;
	struct log_line l;

	bridge_error_clear(&err);
	if ((st->report && jsonl_reopen(st->report, &err) < 0) ||
	    (st->recorder && recorder_reopen(st->recorder, &err) < 0)) {
		log_begin(&l, LOG_ERROR, "reopen_failed");
		log_str(&l, "message", err.message);
		log_end(&l);
		return;
	}
	if (st->report || st->recorder) {
		log_begin(&l, LOG_INFO, "reopened");
		log_str(&l, "files",
			st->report && st->recorder ? "report, capture"
			: st->report               ? "report"
						   : "capture");
		log_end(&l);
	}
}

static void on_reopen(evutil_socket_t sig, short what, void *arg)
{
	reopen_files(arg);
}

static void on_reload(evutil_socket_t sig, short what, void *arg)
{
	struct serve_state *st = arg;
	struct timespec ts;
	const char *failed;

	if (st->stopping)
		return;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	notify_sendf("RELOADING=1\nMONOTONIC_USEC=%lld",
		     (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
	reopen_files(st);
	failed = reload_config(st);
	snprintf(st->last_reload_text, sizeof(st->last_reload_text), "%s%s",
		 failed ? "failed, running config kept: " : "ok", failed ? failed : "");
	st->last_reload = st->last_reload_text;
	notify_status(st, "READY=1\n");
}

/* WatchdogSec=: the main loop is alive (it handles signals and reloads). */
static void on_watchdog(evutil_socket_t fd, short what, void *arg)
{
	notify_send("WATCHDOG=1");
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
	struct serve_state *st = arg;
	struct log_line l;

	if (st->stopping) { /* second signal: do not wait any more */
		for (int i = 0; i < st->n_workers; i++)
			event_base_loopbreak(st->workers[i].base);
		event_base_loopexit(st->base, NULL);
		return;
	}
	st->stopping = 1;
	st->view.draining = 1;
	notify_sendf("STOPPING=1\nSTATUS=draining (up to %d ms)", st->drain_ms);
	log_begin(&l, LOG_INFO, "stopping");
	log_str(&l, "signal", sig == SIGTERM ? "SIGTERM" : "SIGINT");
	log_int(&l, "drain_ms", st->drain_ms);
	log_end(&l);
	/* the main loop runs on until the last worker ends, so that the admin
	 * port keeps telling a load balancer that this one is draining */
	for (int i = 0; i < st->n_workers; i++)
		event_active(st->workers[i].stop, EV_READ, 0);
}

static void on_worker_exit(evutil_socket_t fd, short what, void *arg)
{
	struct serve_state *st = arg;

	if (atomic_load(&st->n_exited) == st->n_workers)
		event_base_loopexit(st->base, NULL);
}

/* The admin listener, bound before the workers so that a bad admin address
 * stops the start. */
static int admin_start(struct serve_state *st, struct queue *queue, struct bridge_error *err)
{
	const struct bridge_config *cfg = st->current->cfg;
	struct log_line l;

	st->view.cfg = cfg;
	st->view.metrics = st->current->metrics;
	st->view.queue = queue;
	st->view.shadow = st->shadow;
	if (!cfg->admin.enabled)
		return 0;
	if (admin_new(st->base, cfg, &st->view, &st->admin, err) < 0)
		return -1;
	log_begin(&l, LOG_INFO, "admin_listening");
	log_str(&l, "address", cfg->admin.address);
	log_int(&l, "port", admin_port(st->admin));
	log_str(&l, "tls", cfg->admin.cert_file ? "on" : "off");
	log_end(&l);
	return 0;
}

/* A participation that waited for its other side in vain: in the report and
 * the log, never silently dropped.  Runs on any thread. */
static void shadow_expired_cb(const struct shadow_expired *e, void *arg)
{
	struct serve_state *st = arg;
	struct log_line l;
	char line[1024], ts[32];
	int n;

	log_begin(&l, LOG_WARN, "shadow_expired");
	log_str(&l, "route", e->route);
	log_str(&l, "side", shadow_side_name(e->side));
	log_str(&l, "participation_id", e->participation_id);
	log_str(&l, "state", e->state);
	log_int(&l, "age_ms", e->age_ms);
	log_str(&l, "reason", e->reason);
	log_end(&l);
	metrics_store_shadow_expired(st->store, e->route, shadow_side_name(e->side), e->reason);
	if (!st->report)
		return;
	log_time_now(ts, sizeof(ts));
	n = snprintf(line, sizeof(line),
		     "{\"event\":\"expired\",\"time\":\"%s\",\"side\":\"%s\",\"age_ms\":%lld,"
		     "\"reason\":\"%s\",",
		     ts, shadow_side_name(e->side), e->age_ms, e->reason);
	if (st->shadow_store) {
		n += snprintf(line + n, sizeof(line) - (size_t)n, "\"instance\":");
		n += (int)json_escape_quoted(line + n, sizeof(line) - (size_t)n, st->instance);
		n += snprintf(line + n, sizeof(line) - (size_t)n, ",");
	}
	n += snprintf(line + n, sizeof(line) - (size_t)n, "\"route\":");
	n += (int)json_escape_quoted(line + n, sizeof(line) - (size_t)n, e->route);
	n += snprintf(line + n, sizeof(line) - (size_t)n, ",\"participation_id\":");
	n += (int)json_escape_quoted(line + n, sizeof(line) - (size_t)n, e->participation_id);
	n += snprintf(line + n, sizeof(line) - (size_t)n, ",\"state\":");
	n += (int)json_escape_quoted(line + n, sizeof(line) - (size_t)n, e->state);
	n += snprintf(line + n, sizeof(line) - (size_t)n, "}\n");
	if (n > 0 && (size_t)n < sizeof(line))
		jsonl_write(st->report, line, (size_t)n);
}

/* Changes another writer stored (the cutover command, another instance). */
static void cutover_tick(evutil_socket_t fd, short what, void *arg)
{
	struct serve_state *st = arg;
	struct bridge_error err;
	struct cutover_event ev = { .kind = CUTOVER_EVENT_STORE_ERROR };

	bridge_error_clear(&err);
	if (cutover_refresh(st->cutover, &err) < 0) {
		ev.error = err.message;
		cutover_event_log(&ev, NULL);
	}
}

static void shadow_expire_tick(evutil_socket_t fd, short what, void *arg)
{
	struct serve_state *st = arg;

	shadow_expire(st->shadow, clock_mono_ms(), shadow_expired_cb, st);
}

/* The capture as the config describes it (record = { ... }). */
void record_options_from(const struct bridge_config *cfg, struct record_options *ro)
{
	record_options_default(ro);
	ro->path = cfg->record_path;
	ro->rotate_bytes = cfg->record_rotate_bytes;
	ro->keep = cfg->record_keep;
	ro->redact_defaults = cfg->record_redact_defaults;
	ro->redact = (const char *const *)cfg->record_redact;
	ro->n_redact = cfg->n_record_redact;
	if (cfg->record_headers) {
		ro->headers = (const char *const *)cfg->record_headers;
		ro->n_headers = cfg->n_record_headers;
	}
	translate_limits(cfg, &ro->limits);
}

/* Files and stores that live as long as the process (a reload keeps them). */
static int open_process_files(struct serve_state *st, const struct bridge_config *cfg,
			      struct bridge_error *err)
{
	if (cfg->report_path &&
	    !(st->report = jsonl_open(cfg->report_path, cfg->report_rotate_bytes, cfg->report_keep,
				      err)))
		return -1;
	if (cfg->shadow_path) {
		struct shadow_limits lim = { .max_entries = cfg->shadow_max_entries,
					     .ttl_ms = cfg->shadow_window_ms };
		struct timeval second = { 1, 0 };

		st->shadow = shadow_new(&lim, NULL, shadow_expired_cb, st, err);
		if (!st->shadow)
			return -1;
		if (cfg->queue.shared.url) {
			/* correlated across the bridges, in their shared store */
			if (store_open_shared(&cfg->queue.shared, STORE_CREATE, &st->shadow_store,
					      err) < 0)
				return -1;
			shadow_use_store(st->shadow, st->shadow_store);
			snprintf(st->instance, sizeof(st->instance), "%s",
				 cfg->queue.shared.instance ? cfg->queue.shared.instance : "");
		}
		st->expire = event_new(st->base, -1, EV_PERSIST, shadow_expire_tick, st);
		if (!st->expire || event_add(st->expire, &second) < 0)
			return bridge_error_set(err, "cannot start the shadow expiry timer");
	}
	if (cfg->v2_record_path &&
	    !(st->v2rec = v2record_open(cfg->v2_record_path,
					(const char *const *)cfg->record_redact,
					cfg->n_record_redact, cfg->record_redact_defaults, err)))
		return -1;
	if (cfg->record_path) {
		struct record_options ro;

		record_options_from(cfg, &ro);
		st->recorder = recorder_open(&ro, err);
		if (!st->recorder)
			return -1;
	}
	return 0;
}

/* evhttp switches read and write interest on and off at every step of an
 * exchange; with the epoll changelist those toggles within one loop
 * iteration collapse into one epoll_ctl (or none). */
static struct event_base *worker_base_new(void)
{
	struct event_config *ec = event_config_new();
	struct event_base *b;

	if (!ec)
		return NULL;
	event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
	b = event_base_new_with_config(ec);
	event_config_free(ec);
	return b;
}

static int default_workers(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return n < 1 ? 1 : n > 64 ? 64 : (int)n;
}

static void serve_log_start(const struct bridge_config *cfg, const char *config_path, int port,
			    int workers)
{
	struct log_line l;

	log_begin(&l, LOG_INFO, "listening");
	log_str(&l, "address", cfg->listen_address);
	log_int(&l, "port", port);
	log_str(&l, "path", cfg->listen_path);
	log_str(&l, "config", config_path);
	log_int(&l, "routes", (long long)cfg->n_routes);
	log_int(&l, "workers", workers);
	log_str(&l, "version", BRIDGE_VERSION);
	log_end(&l);
	for (size_t i = 0; i < cfg->n_routes; i++) {
		const struct bridge_route *r = &cfg->routes[i];
		char endpoint[512];

		upstream_url_redact(r->endpoint ? r->endpoint : "", endpoint, sizeof(endpoint));
		log_begin(&l, LOG_INFO, "route");
		log_str(&l, "name", r->name);
		log_str(&l, "mode", route_mode_name(r->mode));
		log_str(&l, "endpoint", r->endpoint ? endpoint : NULL);
		log_str(&l, "mapping", r->mapping_file);
		log_end(&l);
	}
}

/* serve's options into a and st (drain, --listen).  -1 to go on, else the
 * exit status (--help, usage errors). */
static int serve_args_parse(int argc, char **argv, struct serve_args *a, struct serve_state *st)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "log-level", required_argument, NULL, 'l' },
		{ "drain-ms", required_argument, NULL, 'd' },
		{ "workers", required_argument, NULL, 'w' },
		{ "listen", required_argument, NULL, 'L' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct bridge_error err;
	enum log_level level;
	long long num;
	int c;

	while ((c = cli_getopt("serve", argc, argv, "c:h", opts)) != -1) {
		switch (c) {
		case 'c': a->config_path = optarg; break;
		case 'l':
			if (log_level_parse(optarg, &level) < 0)
				return cli_usage("serve", "unknown log level '%s'", optarg);
			log_set_level(level);
			a->level_given = 1;
			break;
		case 'd':
			if (cli_int_parse(optarg, 0, 3600000, &num) < 0)
				return cli_usage("serve",
						 "--drain-ms must be a whole number 0..3600000, "
						 "not '%s'",
						 optarg);
			st->drain_ms = (int)num;
			break;
		case 'w':
			if (cli_int_parse(optarg, 1, 256, &num) < 0)
				return cli_usage("serve", "--workers must be 1..256, not '%s'",
						 optarg);
			a->workers = (int)num;
			break;
		case 'L':
			if (listen_spec_parse(optarg, a->listen_address, sizeof(a->listen_address),
					      &st->listen_port, &err) < 0)
				return cli_usage("serve", "--listen %s", err.message);
			st->listen_address = a->listen_address;
			break;
		case 'h': fputs(usage_serve, stdout); return 0;
		default: return 2;
		}
	}
	if (!a->config_path)
		return cli_usage("serve", "%s", "--config FILE is required");
	if (optind < argc)
		return cli_usage("serve", "unexpected argument '%s'", argv[optind]);
	return -1;
}

/* One worker per thread, each with its own loop and server on the shared
 * listening socket and a share of the current config. */
static int workers_create(struct serve_state *st, struct bridge_error *err)
{
	for (int i = 0; i < st->n_workers; i++) {
		struct worker *w = &st->workers[i];
		struct server_options opt = { .metrics = st->current->metrics,
					      .report = st->report,
					      .shadow = st->shadow,
					      .recorder = st->recorder,
					      .v2_record = st->v2rec,
					      .worker = i,
					      .listen_fd = st->listen_fd,
					      .accept_share = st->accept_share,
					      .release = config_hold_release,
					      .release_arg = st->current,
					      .queue = st->queue,
					      .cutover = st->cutover };

		w->index = i;
		w->drain_ms = st->drain_ms;
		w->base = worker_base_new();
		if (!w->base)
			return bridge_error_set(err, "cannot create an event loop");
		if (server_new(w->base, st->current->cfg, &opt, &w->server, err) < 0)
			return -1;
		w->stop = event_new(w->base, -1, 0, worker_stop, w);
		w->reload = event_new(w->base, -1, 0, worker_reload, w);
		w->exited = st->worker_exit;
		w->store = st->store;
		w->n_exited = &st->n_exited;
	}
	return 0;
}

/* The main thread's events: stop, reload, reopen, the service manager's
 * watchdog. */
static void signals_start(struct serve_state *st)
{
	st->sigterm = evsignal_new(st->base, SIGTERM, on_signal, st);
	st->sigint = evsignal_new(st->base, SIGINT, on_signal, st);
	st->sighup = evsignal_new(st->base, SIGHUP, on_reload, st);
	st->sigusr1 = evsignal_new(st->base, SIGUSR1, on_reopen, st);
	event_add(st->sigusr1, NULL);
	event_add(st->sigterm, NULL);
	event_add(st->sigint, NULL);
	event_add(st->sighup, NULL);
	if (notify_watchdog_usec() > 0) {
		long long half = notify_watchdog_usec() / 2;
		struct timeval every = { (time_t)(half / 1000000), (suseconds_t)(half % 1000000) };

		st->watchdog = event_new(st->base, -1, EV_PERSIST, on_watchdog, st);
		if (st->watchdog)
			event_add(st->watchdog, &every);
	}
}

static void event_free_null(struct event *ev)
{
	if (ev)
		event_free(ev);
}

/* Everything the run held, in the order its users need: the workers before
 * the queue and the cutover state they use, the metrics store after every
 * view of it. */
static void serve_state_free(struct serve_state *st)
{
	for (int i = 0; st->workers && i < st->n_workers; i++) {
		struct worker *w = &st->workers[i];
		struct config_hold *h = atomic_exchange(&w->next, NULL);

		if (h)
			config_hold_release(h);
		if (w->server)
			server_free(w->server); /* releases its holds */
		else if (st->current)
			config_hold_release(st->current); /* never created: its share */
		event_free_null(w->stop);
		event_free_null(w->reload);
		if (w->base)
			event_base_free(w->base);
	}
	free(st->workers);
	httpd_share_free(st->accept_share);
	if (st->listen_fd >= 0)
		close(st->listen_fd);
	admin_free(st->admin);
	event_free_null(st->worker_exit);
	queue_free(st->queue); /* after the workers: they enqueue until they stop */
	if (st->current)
		config_hold_release(st->current); /* the main thread's share */
	event_free_null(st->sighup);
	event_free_null(st->sigusr1);
	event_free_null(st->watchdog);
	event_free_null(st->expire);
	shadow_free(st->shadow);
	event_free_null(st->cutover_tick);
	cutover_free(st->cutover); /* after the workers: they decide until they stop */
	store_close(st->shadow_store);
	recorder_close(st->recorder);
	v2record_close(st->v2rec);
	jsonl_close(st->report);
	event_free_null(st->sigterm);
	event_free_null(st->sigint);
	if (st->base)
		event_base_free(st->base);
}

/* What the process needs before anything starts: a closed peer or a file
 * size limit is an error to report, not a signal that kills; the log
 * writers; malloc giving large bodies back; descriptors; threads. */
static int process_setup(const struct bridge_config *cfg)
{
	signal(SIGPIPE, SIG_IGN);
	/* a file size limit (ulimit -f) makes a write fail with EFBIG, reported
	 * like a full disk, instead of killing the bridge */
	signal(SIGXFSZ, SIG_IGN);
	if (log_stream_start(cfg->log_buffer) < 0) {
		fprintf(stderr, "webhook-bridge serve: cannot start the log writers\n");
		return -1;
	}
	/* bodies up to 2 x max_body pass through malloc: past 128 KiB they are
	 * mapped and given back on free, so a burst of large posts does not keep
	 * the resident size up (glibc otherwise raises the threshold itself) */
	mallopt(M_MMAP_THRESHOLD, 128 * 1024);
	guard_raise_fd_limit();  /* idle keep-alive clients each hold a descriptor */
	evthread_use_pthreads(); /* main thread activates the workers' stop events */
	return 0;
}

/* The workers run until they have drained after a stop signal; then the
 * queue gets what is left of the drain time. */
static void serve_run(struct serve_state *st)
{
	for (int i = 0; i < st->n_workers; i++) {
		/* top -H and perf name the thread; the kernel keeps 15 bytes, and
		 * "worker-255" (at most 256 workers) fits */
		char name[24];

		pthread_create(&st->workers[i].thread, NULL, worker_run, &st->workers[i]);
		snprintf(name, sizeof(name), "worker-%d", i);
		pthread_setname_np(st->workers[i].thread, name);
	}
	notify_status(st, "READY=1\n");
	event_base_dispatch(st->base);
	for (int i = 0; i < st->n_workers; i++)
		pthread_join(st->workers[i].thread, NULL);
	queue_stop(st->queue, st->drain_ms);
}

int cmd_serve(int argc, char **argv)
{
	struct serve_args a = { .workers = -1 };
	struct serve_state st = { .drain_ms = 10000, .listen_fd = -1 };
	struct bridge_config *cfg = NULL;
	struct metrics *metrics = NULL;
	struct diag d = { 0 };
	struct bridge_error err;
	struct log_line l;
	struct timeval second = { 1, 0 };
	int port = -1, rc;

	if ((rc = serve_args_parse(argc, argv, &a, &st)) >= 0)
		return rc;
	rc = 1;
	if (bridge_config_load(a.config_path, &cfg, &d) < 0) {
		fputs(d.text ? d.text : "", stderr);
		fprintf(stderr, "webhook-bridge: %s: %d error(s), not starting\n", a.config_path,
			d.count);
		diag_reset(&d);
		return 1;
	}
	listen_override(cfg, st.listen_address, st.listen_port);
	if (!a.level_given && cfg->log_level >= 0)
		log_set_level((enum log_level)cfg->log_level);
	if (process_setup(cfg) < 0) {
		bridge_config_free(cfg);
		return 1;
	}

	st.n_workers = a.workers > 0      ? a.workers
		       : cfg->workers > 0 ? cfg->workers
					  : default_workers();
	st.workers = calloc((size_t)st.n_workers, sizeof(*st.workers));
	st.store = metrics_store_new(st.n_workers);
	metrics = st.store ? metrics_new(st.store, cfg) : NULL;
	st.current = calloc(1, sizeof(*st.current));
	st.base = event_base_new();
	if (st.n_workers > 1)
		st.accept_share = httpd_share_new(st.n_workers);
	if (!st.workers || !metrics || !st.base || !st.current ||
	    (st.n_workers > 1 && !st.accept_share)) {
		bridge_error_set(&err, "out of memory");
		goto fail;
	}
	st.config_path = a.config_path;
	if ((queue_config_has_store(&cfg->queue) &&
	     (queue_new(&cfg->queue, &cfg->upstream, queue_event_log, NULL, &st.queue, &err) < 0 ||
	      queue_start(st.queue, &err) < 0)) ||
	    !(st.cutover = cutover_serve_open(cfg, &err)) ||
	    open_process_files(&st, cfg, &err) < 0) {
		free(st.current); /* cfg and metrics are still ours: freed below */
		st.current = NULL;
		goto fail;
	}
	st.current->cfg = cfg;
	st.current->metrics = metrics;
	atomic_store(&st.current->refs, st.n_workers + 1);
	cfg = NULL; /* owned by the hold from here on */
	metrics = NULL;
	st.worker_exit = event_new(st.base, -1, 0, on_worker_exit, &st);
	if (!st.worker_exit) {
		bridge_error_set(&err, "out of memory");
		goto fail;
	}
	st.view.cutover = st.cutover;
	st.cutover_tick = event_new(st.base, -1, EV_PERSIST, cutover_tick, &st);
	if (!st.cutover_tick || event_add(st.cutover_tick, &second) < 0) {
		bridge_error_set(&err, "cannot start the cutover timer");
		goto fail;
	}
	if (admin_start(&st, st.queue, &err) < 0)
		goto fail;
	if (listen_socket_open(st.current->cfg->listen_address, st.current->cfg->listen_port,
			       st.current->cfg->listen_reuseport, &st.listen_fd, &port, &err) < 0)
		goto fail;
	if (workers_create(&st, &err) < 0)
		goto fail;
	signals_start(&st);
	serve_log_start(st.current->cfg, a.config_path, port, st.n_workers);
	st.view.port = port;
	st.view.started = 1;
	serve_run(&st);
	rc = 0;
	goto out;

fail:
	log_begin(&l, LOG_ERROR, "start_failed");
	log_str(&l, "message", err.message);
	log_end(&l);
out:
	serve_state_free(&st);
	metrics_free(metrics);
	metrics_store_free(st.store); /* after every view */
	bridge_config_free(cfg);
	if (rc == 0) {
		log_begin(&l, LOG_INFO, "stopped");
		log_end(&l);
	}
	log_stream_stop(LOG_FLUSH_MS);
	return rc;
}
