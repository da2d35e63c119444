/*
 * webhook-bridge: command line entry points (serve, map, check, queue, diff,
 * report, replay).
 * Exit codes: 0 success, 1 input or configuration that cannot be used,
 * 2 usage errors (and, for `map`, configuration errors).
 */
#include <errno.h>
#include <getopt.h>
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <libconfig.h>
#include <openssl/crypto.h>
#include <openssl/ssl.h>
#include <libpq-fe.h>
#include <sqlite3.h>
#include <yajl/yajl_version.h>
#include <pthread.h>
#include <stdatomic.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bridge/clock.h"
#include "bridge/admin.h"
#include "bridge/cfg.h"
#include "bridge/cli.h"
#include "bridge/config.h"
#include "bridge/cutover.h"
#include "bridge/guard.h"
#include "bridge/jsonl.h"
#include "bridge/listen.h"
#include "bridge/record.h"
#include "bridge/shadow.h"
#include "bridge/log.h"
#include "bridge/mapping.h"
#include "bridge/learn.h"
#include "bridge/metrics.h"
#include "bridge/notify.h"
#include "bridge/queue.h"
#include "bridge/server.h"
#include "bridge/translate.h"
#include "bridge/v1.h"
#include "bridge/v2record.h"


static const char usage_main[] =
	"usage: webhook-bridge <command> [options]\n"
	"\n"
	"Accepts Qualifio webhook 1.0 posts, rewrites them into webhook 2.0 payloads\n"
	"with mapping-variable rules, and forwards them signed.\n"
	"\n"
	"commands:\n"
	"  serve --config FILE            run the proxy\n"
	"  map --mapping FILE [INPUT]     map one v1 payload (file or stdin) to v2 on stdout\n"
	"  check --config FILE | --mapping FILE\n"
	"                                 load and validate, report every error as file:line\n"
	"  queue (--config FILE | --store PATH) list | show ID | retry ID|--all | purge ... | "
	"stats | recover\n"
	"                                 inspect and repair queued deliveries (while serve runs)\n"
	"  diff --mapping FILE V1.json    provenance: every v2 value and the rule behind it\n"
	"  diff A.json B.json             structural diff of two v2 documents (exit 1 if "
	"different)\n"
	"  diff --mapping OLD --against NEW FIXTURES...\n"
	"                                 what a rule change changes across a fixture set\n"
	"  report FILE...                 summarise dry-run reports (comparisons, top "
	"differences)\n"
	"  replay --config FILE [--to URL] [--expect DIR] [--dry-run] PATH...\n"
	"                                 send fixtures or captured traffic through a route\n"
	"  learn --v1 FILE... --v2 FILE... [--base RULES] [-o RULES]\n"
	"                                 infer a rule file from paired v1 and real v2 traffic\n"
	"  cutover --config FILE [ROUTE [--ramp N | --kill]]\n"
	"                                 show or steer which importer answers dual routes\n"
	"\n"
	"  --help, -h                     this text (also: webhook-bridge <command> --help)\n"
	"  --version                      print the version (version --verbose, -V: and\n"
	"                                 the libraries and build options)\n";

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

static const char usage_version[] =
	"usage: webhook-bridge version [--verbose]\n"
	"       webhook-bridge --version | -V\n"
	"\n"
	"Prints the version; --verbose (-v, or -V alone): also the libraries it\n"
	"runs with and the build options.\n"
	"exit: 0, or 2 usage error\n";

static const char usage_check[] =
	"usage: webhook-bridge check --config FILE [--print-config]\n"
	"       webhook-bridge check --mapping FILE\n"
	"\n"
	"Loads and validates; every problem is printed as file:line: message.\n"
	"Refuses what serve refuses at start (nothing is created or bound).\n"
	"--print-config: print the effective configuration instead of the summary:\n"
	"every default filled in, secrets masked; check accepts it again.\n"
	"exit: 0 valid, 1 invalid, 2 usage error\n";

/* ---- serve --------------------------------------------------------------- */

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
	int listen_fd;           /* the one listening socket, shared by the workers */
	const char *last_reload; /* for STATUS=: NULL before the first SIGHUP */
	char last_reload_text[128];
	struct event *watchdog;
	struct cutover *cutover; /* dual routes' state, for the whole run */
	struct event *cutover_tick;
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
static void record_options_from(const struct bridge_config *cfg, struct record_options *ro)
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

static int cmd_serve(int argc, char **argv)
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
	const char *config_path = NULL;
	char listen_address[64];
	struct serve_state st = { .drain_ms = 10000, .listen_fd = -1 };
	struct bridge_config *cfg = NULL;
	struct metrics *metrics = NULL;
	struct event *sighup = NULL, *sigusr1 = NULL;
	struct queue *queue = NULL;
	struct diag d = { 0 };
	struct bridge_error err;
	struct event *sigterm = NULL, *sigint = NULL;
	struct log_line l;
	enum log_level level;
	int c, level_given = 0, workers_arg = -1, port = -1, rc = 1;
	long long num;

	while ((c = cli_getopt("serve", argc, argv, "c:h", opts)) != -1) {
		switch (c) {
		case 'c': config_path = optarg; break;
		case 'l':
			if (log_level_parse(optarg, &level) < 0)
				return cli_usage("serve", "unknown log level '%s'", optarg);
			log_set_level(level);
			level_given = 1;
			break;
		case 'd':
			if (cli_int_parse(optarg, 0, 3600000, &num) < 0)
				return cli_usage("serve",
						 "--drain-ms must be a whole number 0..3600000, "
						 "not '%s'",
						 optarg);
			st.drain_ms = (int)num;
			break;
		case 'w':
			if (cli_int_parse(optarg, 1, 256, &num) < 0)
				return cli_usage("serve", "--workers must be 1..256, not '%s'",
						 optarg);
			workers_arg = (int)num;
			break;
		case 'L':
			if (listen_spec_parse(optarg, listen_address, sizeof(listen_address),
					      &st.listen_port, &err) < 0)
				return cli_usage("serve", "--listen %s", err.message);
			st.listen_address = listen_address;
			break;
		case 'h': fputs(usage_serve, stdout); return 0;
		default: return 2;
		}
	}
	if (!config_path)
		return cli_usage("serve", "%s", "--config FILE is required");
	if (optind < argc)
		return cli_usage("serve", "unexpected argument '%s'", argv[optind]);
	if (bridge_config_load(config_path, &cfg, &d) < 0) {
		fputs(d.text ? d.text : "", stderr);
		fprintf(stderr, "webhook-bridge: %s: %d error(s), not starting\n", config_path,
			d.count);
		diag_reset(&d);
		return 1;
	}
	listen_override(cfg, st.listen_address, st.listen_port);
	if (!level_given && cfg->log_level >= 0)
		log_set_level((enum log_level)cfg->log_level);
	signal(SIGPIPE, SIG_IGN);
	/* a file size limit (ulimit -f) makes a write fail with EFBIG, reported
	 * like a full disk, instead of killing the bridge */
	signal(SIGXFSZ, SIG_IGN);
	if (log_stream_start(cfg->log_buffer) < 0) {
		fprintf(stderr, "webhook-bridge serve: cannot start the log writers\n");
		bridge_config_free(cfg);
		return 1;
	}
	/* bodies up to 2 x max_body pass through malloc: past 128 KiB they are
	 * mapped and given back on free, so a burst of large posts does not keep
	 * the resident size up (glibc otherwise raises the threshold itself) */
	mallopt(M_MMAP_THRESHOLD, 128 * 1024);
	guard_raise_fd_limit();  /* idle keep-alive clients each hold a descriptor */
	evthread_use_pthreads(); /* main thread activates the workers' stop events */

	st.n_workers = workers_arg > 0    ? workers_arg
		       : cfg->workers > 0 ? cfg->workers
					  : default_workers();
	st.workers = calloc((size_t)st.n_workers, sizeof(*st.workers));
	st.store = metrics_store_new(st.n_workers);
	metrics = st.store ? metrics_new(st.store, cfg) : NULL;
	st.current = calloc(1, sizeof(*st.current));
	st.base = event_base_new();
	if (!st.workers || !metrics || !st.base || !st.current) {
		bridge_error_set(&err, "out of memory");
		goto fail;
	}
	st.config_path = config_path;
	if (queue_config_has_store(&cfg->queue) &&
	    (queue_new(&cfg->queue, &cfg->upstream, queue_event_log, NULL, &queue, &err) < 0 ||
	     queue_start(queue, &err) < 0)) {
		free(st.current); /* cfg and metrics are still ours: freed below */
		st.current = NULL;
		goto fail;
	}
	if (!(st.cutover = cutover_serve_open(cfg, &err)) ||
	    open_process_files(&st, cfg, &err) < 0) {
		free(st.current);
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
	{
		struct timeval second = { 1, 0 };

		st.cutover_tick = event_new(st.base, -1, EV_PERSIST, cutover_tick, &st);
		if (!st.cutover_tick || event_add(st.cutover_tick, &second) < 0) {
			bridge_error_set(&err, "cannot start the cutover timer");
			goto fail;
		}
	}
	if (admin_start(&st, queue, &err) < 0)
		goto fail;
	if (listen_socket_open(st.current->cfg->listen_address, st.current->cfg->listen_port,
			       st.current->cfg->listen_reuseport, &st.listen_fd, &port, &err) < 0)
		goto fail;
	for (int i = 0; i < st.n_workers; i++) {
		struct worker *w = &st.workers[i];
		struct server_options opt = { .metrics = st.current->metrics,
					      .report = st.report,
					      .shadow = st.shadow,
					      .recorder = st.recorder,
					      .v2_record = st.v2rec,
					      .worker = i,
					      .listen_fd = st.listen_fd,
					      .release = config_hold_release,
					      .release_arg = st.current,
					      .queue = queue,
					      .cutover = st.cutover };

		w->index = i;
		w->drain_ms = st.drain_ms;
		w->base = worker_base_new();
		if (!w->base) {
			bridge_error_set(&err, "cannot create an event loop");
			goto fail;
		}
		if (server_new(w->base, st.current->cfg, &opt, &w->server, &err) < 0)
			goto fail;
		w->stop = event_new(w->base, -1, 0, worker_stop, w);
		w->reload = event_new(w->base, -1, 0, worker_reload, w);
		w->exited = st.worker_exit;
		w->store = st.store;
		w->n_exited = &st.n_exited;
	}
	sigterm = evsignal_new(st.base, SIGTERM, on_signal, &st);
	sigint = evsignal_new(st.base, SIGINT, on_signal, &st);
	sighup = evsignal_new(st.base, SIGHUP, on_reload, &st);
	sigusr1 = evsignal_new(st.base, SIGUSR1, on_reopen, &st);
	event_add(sigusr1, NULL);
	event_add(sigterm, NULL);
	event_add(sigint, NULL);
	event_add(sighup, NULL);
	serve_log_start(st.current->cfg, config_path, port, st.n_workers);
	st.view.port = port;
	st.view.started = 1;
	if (notify_watchdog_usec() > 0) {
		long long half = notify_watchdog_usec() / 2;
		struct timeval every = { (time_t)(half / 1000000), (suseconds_t)(half % 1000000) };

		st.watchdog = event_new(st.base, -1, EV_PERSIST, on_watchdog, &st);
		if (st.watchdog)
			event_add(st.watchdog, &every);
	}

	for (int i = 0; i < st.n_workers; i++)
		pthread_create(&st.workers[i].thread, NULL, worker_run, &st.workers[i]);
	notify_status(&st, "READY=1\n");
	event_base_dispatch(st.base);
	for (int i = 0; i < st.n_workers; i++)
		pthread_join(st.workers[i].thread, NULL);
	queue_stop(queue, st.drain_ms);
	rc = 0;
	goto out;

fail:
	log_begin(&l, LOG_ERROR, "start_failed");
	log_str(&l, "message", err.message);
	log_end(&l);
out:
	for (int i = 0; st.workers && i < st.n_workers; i++) {
		struct worker *w = &st.workers[i];
		struct config_hold *h = atomic_exchange(&w->next, NULL);

		if (h)
			config_hold_release(h);
		if (w->server)
			server_free(w->server); /* releases its holds */
		else if (st.current)
			config_hold_release(st.current); /* never created: its share */
		if (w->stop)
			event_free(w->stop);
		if (w->reload)
			event_free(w->reload);
		if (w->base)
			event_base_free(w->base);
	}
	free(st.workers);
	if (st.listen_fd >= 0)
		close(st.listen_fd);
	admin_free(st.admin);
	if (st.worker_exit)
		event_free(st.worker_exit);
	queue_free(queue); /* after the workers: they enqueue until they stop */
	if (st.current)
		config_hold_release(st.current); /* the main thread's share */
	if (sighup)
		event_free(sighup);
	if (sigusr1)
		event_free(sigusr1);
	if (st.watchdog)
		event_free(st.watchdog);
	if (st.expire)
		event_free(st.expire);
	shadow_free(st.shadow);
	if (st.cutover_tick)
		event_free(st.cutover_tick);
	cutover_free(st.cutover); /* after the workers: they decide until they stop */
	store_close(st.shadow_store);
	recorder_close(st.recorder);
	v2record_close(st.v2rec);
	jsonl_close(st.report);
	if (sigterm)
		event_free(sigterm);
	if (sigint)
		event_free(sigint);
	if (st.base)
		event_base_free(st.base);
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

/* ---- check --------------------------------------------------------------- */

/* A file serve appends to (report, capture): can it be opened? */
static int check_file(const char *path, struct bridge_error *err)
{
	if (path && cfg_path_writable(path) < 0)
		return bridge_error_set(err, "cannot open %s: %s", path, strerror(errno));
	return 0;
}

/* Can serve bind there?  Taken by another process (or by this config's own
 * running serve) is the host's state at this moment, not the config's: a
 * note on stderr, not a refusal. */
static int check_bind(const char *what, const char *address, int port, struct bridge_error *err)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM,
				  .ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV };
	struct addrinfo *ai = NULL;
	char service[16];
	int fd, rc = 0, one = 1, e;

	snprintf(service, sizeof(service), "%d", port);
	if (getaddrinfo(address, service, &hints, &ai) != 0)
		return 0; /* listen_address_check said it */
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd >= 0) {
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0) {
			e = errno;
			if (e == EADDRINUSE)
				fprintf(stderr,
					"webhook-bridge check: note: %s%s port %d is in use now "
					"(serve cannot start while it is, unless it is its own "
					"running serve)\n",
					what, address, port);
			else
				rc = bridge_error_set(err, "cannot listen on %s%s port %d: %s",
						      what, address, port, strerror(e));
		}
		close(fd);
	}
	freeaddrinfo(ai);
	return rc;
}

/* serve opens (or creates) the cutover state with its first dual route. */
static int check_cutover_store(const struct bridge_config *cfg, struct bridge_error *err)
{
	struct cutover_backend b;
	char *path;
	int any = 0, shared = 0, rc = 0;

	for (size_t i = 0; i < cfg->n_routes; i++)
		any |= cfg->routes[i].mode == ROUTE_DUAL;
	if (!any || cfg->queue.shared.url) /* the shared store: checked with it */
		return 0;
	if (!(path = cutover_store_path(cfg, &shared)))
		return bridge_error_set(err, "out of memory");
	if (access(path, F_OK) == 0) {
		rc = cutover_sqlite_open(path, 0, &b, err);
		if (rc == 0)
			cutover_backend_close(&b);
	} else if (!shared && cfg_path_writable(path) < 0) { /* the queue creates its own */
		rc = bridge_error_set(err, "cannot create cutover state %s: %s", path,
				      strerror(errno));
	}
	free(path);
	return rc;
}

/* What serve refuses at start beyond the config file itself: listen and
 * admin addresses that are not IP literals or cannot be bound here, TLS
 * certificates and keys that cannot be loaded or do not match, CA files
 * that do not load, a queue store that cannot be opened, report and capture
 * files that cannot be written.  Nothing is created or changed. */
static int check_startup(const struct bridge_config *cfg, struct bridge_error *err)
{
	struct record_options ro;
	SSL_CTX *ctx;

	if (cfg->queue.path && queue_probe(&cfg->queue, err) < 0)
		return -1;
	if (check_cutover_store(cfg, err) < 0)
		return -1;
	if (check_file(cfg->report_path, err) < 0 || check_file(cfg->v2_record_path, err) < 0)
		return -1;
	if (cfg->record_path) {
		record_options_from(cfg, &ro);
		if (record_options_check(&ro, err) < 0 || check_file(cfg->record_path, err) < 0)
			return -1;
	}
	if (cfg->admin.enabled &&
	    (listen_address_check("admin", cfg->admin.address, err) < 0 ||
	     check_bind("admin ", cfg->admin.address, cfg->admin.port, err) < 0))
		return -1;
	if (listen_address_check("listen", cfg->listen_address, err) < 0 ||
	    check_bind("", cfg->listen_address, cfg->listen_port, err) < 0)
		return -1;
	for (size_t i = 0; i < cfg->n_tls_files; i++) {
		struct upstream_tls *t = NULL;

		if (upstream_tls_new(cfg->tls_files[i][0] ? cfg->tls_files[i] : NULL, &t, err) < 0)
			return -1;
		upstream_tls_free(t);
	}
	if (cfg->listen_cert_file) {
		ctx = listen_tls_new("listen.tls", cfg->listen_cert_file, cfg->listen_key_file,
				     err);
		if (!ctx)
			return -1;
		SSL_CTX_free(ctx);
	}
	if (cfg->admin.enabled && cfg->admin.cert_file) {
		ctx = listen_tls_new("admin.tls", cfg->admin.cert_file, cfg->admin.key_file, err);
		if (!ctx)
			return -1;
		SSL_CTX_free(ctx);
	}
	return 0;
}

/* A config that holds secrets itself should be readable by its owner only
 * (the *_file forms keep them out of it). */
static void check_secret_mode(const struct bridge_config *cfg, const char *path)
{
	int inline_secret = cfg->auth.inline_secret || cfg->admin.auth.inline_secret;
	struct stat st;

	for (size_t i = 0; i < cfg->n_routes; i++)
		inline_secret |= cfg->routes[i].inline_secret || cfg->routes[i].auth.inline_secret;
	if (inline_secret && stat(path, &st) == 0 && (st.st_mode & 077))
		fprintf(stderr,
			"webhook-bridge check: warning: %s holds secrets and is readable by "
			"%s (mode %04o); chmod 600 it, or move the secrets to *_file settings\n",
			path, (st.st_mode & 007) ? "others" : "its group",
			(unsigned)(st.st_mode & 07777));
}

/* The shared store: reachable, and at which schema version. */
static int check_shared(const struct bridge_config *cfg, struct bridge_error *err)
{
	struct store *s = NULL;
	int v;

	if (store_open_shared(&cfg->queue.shared, 0, &s, err) < 0)
		return -1;
	v = store_schema_version(s, err);
	if (v < 0) {
		store_close(s);
		return -1;
	}
	if (v > store_schema_known()) {
		bridge_error_set(err,
				 "shared store %s has schema version %d; this webhook-bridge "
				 "knows %d: upgrade it",
				 store_path(s), v, store_schema_known());
		store_close(s);
		return -1;
	}
	if (v == 0)
		printf("  shared %s: reachable, no schema yet (serve creates version %d), "
		       "instance %s\n",
		       store_path(s), store_schema_known(), cfg->queue.shared.instance);
	else
		printf("  shared %s: reachable, schema version %d, instance %s\n", store_path(s), v,
		       cfg->queue.shared.instance);
	store_close(s);
	return 0;
}

static int cmd_check(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "mapping", required_argument, NULL, 'm' },
		{ "print-config", no_argument, NULL, 'p' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *config_path = NULL, *mapping_path = NULL;
	int print_config = 0;
	struct bridge_error err;
	struct diag d = { 0 };
	int c, rc;

	while ((c = cli_getopt("check", argc, argv, "c:m:h", opts)) != -1) {
		switch (c) {
		case 'c': config_path = optarg; break;
		case 'm': mapping_path = optarg; break;
		case 'p': print_config = 1; break;
		case 'h': fputs(usage_check, stdout); return 0;
		default: return 2;
		}
	}
	if (!config_path == !mapping_path)
		return cli_usage("check", "%s",
				 "give exactly one of --config FILE or --mapping FILE");
	if (optind < argc)
		return cli_usage("check", "unexpected argument '%s'", argv[optind]);
	if (print_config && !config_path)
		return cli_usage("check", "%s", "--print-config needs --config FILE");
	if (config_path) {
		struct bridge_config *cfg = NULL;

		rc = bridge_config_load(config_path, &cfg, &d);
		if (rc == 0 && check_startup(cfg, &err) < 0) {
			diag_add(&d, config_path, 0, "%s", err.message);
			rc = -1;
		}
		if (rc == 0 && print_config) {
			bridge_config_print(cfg, stdout);
			check_secret_mode(cfg, config_path);
		} else if (rc == 0) {
			printf("ok: %s: %zu route(s)\n", config_path, cfg->n_routes);
			for (size_t i = 0; i < cfg->n_routes; i++) {
				char endpoint[512];

				upstream_url_redact(
					cfg->routes[i].endpoint ? cfg->routes[i].endpoint : "",
					endpoint, sizeof(endpoint));
				printf("  route %s: %s, mapping %s%s%s", cfg->routes[i].name,
				       route_mode_name(cfg->routes[i].mode),
				       cfg->routes[i].mapping_file,
				       cfg->routes[i].endpoint ? ", endpoint " : "", endpoint);
				if (cfg->routes[i].mode == ROUTE_DUAL)
					printf(", cutover: initial ramp %d%%, copy %s, rolls back "
					       "over %g in %d s (at least %d posts)",
					       cfg->routes[i].cutover.ramp,
					       cfg->routes[i].cutover.copy ? "on" : "off",
					       cfg->routes[i].cutover.max_failure_rate,
					       cfg->routes[i].cutover.window_s,
					       cfg->routes[i].cutover.min_posts);
				printf("\n");
			}
			check_secret_mode(cfg, config_path);
			if (cfg->queue.shared.url && check_shared(cfg, &err) < 0) {
				diag_add(&d, config_path, 0, "%s", err.message);
				rc = -1;
			}
		}
		bridge_config_free(cfg);
	} else {
		struct mapping *m = NULL;

		rc = mapping_load(mapping_path, &m, &d);
		if (rc == 0)
			printf("ok: %s\n", mapping_path);
		mapping_free(m);
	}
	if (rc < 0) {
		fputs(d.text ? d.text : "", stderr);
		fprintf(stderr, "%d error(s)\n", d.count);
	}
	diag_reset(&d);
	return rc < 0 ? 1 : 0;
}

/* --version: one line; version --verbose (or -V): the libraries it runs
 * with and how it was built, for bug reports. */
static int print_version(int argc, char **argv, int verbose)
{
	static const struct option opts[] = {
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int y = yajl_version(), c;

	while ((c = cli_getopt("version", argc, argv, "vVh", opts)) != -1) {
		switch (c) {
		case 'v':
		case 'V': verbose = 1; break;
		case 'h': fputs(usage_version, stdout); return 0;
		default: return 2;
		}
	}
	if (optind < argc)
		return cli_usage("version", "unexpected argument '%s'", argv[optind]);
	printf("webhook-bridge %s\n", BRIDGE_VERSION);
	if (!verbose)
		return 0;
	printf("libevent %s\n", event_get_version());
	printf("OpenSSL %s\n", OpenSSL_version(OPENSSL_VERSION_STRING));
	printf("yajl %d.%d.%d\n", y / 10000, y / 100 % 100, y % 100);
	printf("libconfig %d.%d.%d\n", LIBCONFIG_VER_MAJOR, LIBCONFIG_VER_MINOR,
	       LIBCONFIG_VER_REVISION);
	printf("SQLite %s\n", sqlite3_libversion());
	printf("libpq %d.%d\n", PQlibVersion() / 10000, PQlibVersion() % 10000);
	printf("build %s\n", BRIDGE_BUILD_OPTIONS);
	return 0;
}

/* One line per command; commands living in other files are declared in
 * include/bridge/cli.h. */
static const struct command {
	const char *name;
	int (*run)(int argc, char **argv);
} commands[] = {
	{ "serve", cmd_serve },   { "map", cmd_map },     { "check", cmd_check },
	{ "queue", cmd_queue },   { "diff", cmd_diff },   { "report", cmd_report },
	{ "replay", cmd_replay }, { "learn", cmd_learn }, { "cutover", cmd_cutover },
};

/* Output that never reached stdout (a full disk, a closed descriptor) is a
 * failure, not a success: say so and exit non-zero (2 unless the command
 * already failed). */
static int stdout_finish(const char *cmd, int rc)
{
	int flushed = fflush(stdout) == 0;
	int e = errno;

	if (flushed && !ferror(stdout))
		return rc;
	fprintf(stderr, "webhook-bridge %s: error: cannot write to stdout: %s\n", cmd,
		flushed ? "an earlier write failed (full disk, closed pipe or descriptor)"
			: strerror(e));
	return rc ? rc : 2;
}

int main(int argc, char **argv)
{
	const char *cmd;

	if (argc < 2) {
		fputs(usage_main, stderr);
		return 2;
	}
	cmd = argv[1];
	if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
		fputs(usage_main, stdout);
		return stdout_finish("help", 0);
	}
	if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0 || strcmp(cmd, "-V") == 0)
		return stdout_finish("version",
				     print_version(argc - 1, argv + 1, strcmp(cmd, "-V") == 0));
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (strcmp(cmd, commands[i].name) == 0)
			return stdout_finish(cmd, commands[i].run(argc - 1, argv + 1));
	return cli_usage(NULL, "unknown command '%s'", cmd);
}
