#include <dirent.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/crypto.h>

#include "bridge/clock.h"
#include "bridge/config.h"
#include "bridge/log.h"
#include "bridge/metrics.h"

static const char *const outcome_names[OUTCOME_COUNT] = {
	"delivered",       "dry_run",           "dropped",
	"invalid_input",   "no_route",          "mapping_failed",
	"upstream_status", "upstream_timeout",  "upstream_unreachable",
	"upstream_tls",    "upstream_protocol", "upstream_too_large",
	"shutting_down",   "internal",          "unauthorized",
	"forbidden",       "legacy_delivered",  "queued",
};
static const char *const result_names[SHADOW_RESULT_COUNT] = { "identical", "different",
							       "not_compared" };
static const char *const side_names[2] = { "translated", "real" };
static const char *const reason_names[2] = { "ttl", "capacity" };

/* upper bounds in microseconds (sub-millisecond first: a dry-run answer
 * takes a fraction of one); the last bucket is +Inf */
static const long long bounds_us[] = { 250,    500,     1000,    2500,    5000,
				       10000,  25000,   50000,   100000,  250000,
				       500000, 1000000, 2500000, 5000000, 10000000 };
#define N_BOUNDS (sizeof(bounds_us) / sizeof(bounds_us[0]))

struct histogram {
	atomic_uint_fast64_t buckets[N_BOUNDS + 1];
	atomic_uint_fast64_t count;
	atomic_uint_fast64_t sum_us;
};

/* Everything counted for one route name, for the life of the process. */
struct route_series {
	char *name;
	atomic_uint_fast64_t requests[OUTCOME_COUNT];
	atomic_uint_fast64_t dual_v2[OUTCOME_COUNT];
	struct histogram upstream;
	struct histogram duration[OUTCOME_COUNT];
	atomic_uint_fast64_t compared[SHADOW_RESULT_COUNT];
	atomic_uint_fast64_t expired[2][2]; /* side x reason */
	atomic_long *pool_open;             /* one per worker */
};

/* A bounded (route, name) -> counter table; overflow counts under "_other". */
struct label_table {
	pthread_mutex_t lock;
	char *names[METRICS_LABELS_MAX];
	size_t routes[METRICS_LABELS_MAX];
	uint64_t counts[METRICS_LABELS_MAX];
	size_t n;
	uint64_t other;
};

struct metrics_store {
	int workers;
	pthread_mutex_t lock;                                /* adding a route name */
	struct route_series *routes[METRICS_ROUTES_MAX + 1]; /* [0]: before a route was chosen */
	size_t n_routes;
	atomic_long in_flight;
	atomic_long *conns; /* client connections each worker holds */
	atomic_llong shadow_waiting;
	atomic_int reload_ok;
	atomic_llong reload_ok_at_ms;
	long long start_ms;
	struct label_table mapping_errors;
	struct label_table unmapped;
};

struct metrics {
	struct metrics_store *st;
	const struct bridge_config *cfg;
	size_t *slot; /* cfg route index + 1 -> st->routes index; slot[0] = 0 */
};

static struct route_series *series_new(const char *name, int workers)
{
	struct route_series *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->name = strdup(name);
	r->pool_open = calloc((size_t)workers, sizeof(*r->pool_open));
	if (!r->name || !r->pool_open) {
		free(r->name);
		free(r->pool_open);
		free(r);
		return NULL;
	}
	return r;
}

struct metrics_store *metrics_store_new(int workers)
{
	struct metrics_store *st = calloc(1, sizeof(*st));

	if (!st)
		return NULL;
	st->workers = workers > 0 ? workers : 1;
	pthread_mutex_init(&st->lock, NULL);
	pthread_mutex_init(&st->mapping_errors.lock, NULL);
	pthread_mutex_init(&st->unmapped.lock, NULL);
	st->start_ms = clock_wall_ms();
	atomic_store(&st->reload_ok, 1);
	atomic_store(&st->reload_ok_at_ms, st->start_ms);
	st->routes[0] = series_new("", st->workers);
	st->conns = calloc((size_t)st->workers, sizeof(*st->conns));
	if (!st->routes[0] || !st->conns) {
		metrics_store_free(st);
		return NULL;
	}
	st->n_routes = 1;
	return st;
}

static void label_table_clear(struct label_table *t)
{
	for (size_t i = 0; i < t->n; i++)
		free(t->names[i]);
	pthread_mutex_destroy(&t->lock);
}

void metrics_store_free(struct metrics_store *st)
{
	if (!st)
		return;
	for (size_t i = 0; i < st->n_routes; i++) {
		free(st->routes[i]->name);
		free(st->routes[i]->pool_open);
		free(st->routes[i]);
	}
	label_table_clear(&st->mapping_errors);
	label_table_clear(&st->unmapped);
	pthread_mutex_destroy(&st->lock);
	free(st->conns);
	free(st);
}

void metrics_store_reload(struct metrics_store *st, int ok)
{
	atomic_store(&st->reload_ok, ok ? 1 : 0);
	if (ok)
		atomic_store(&st->reload_ok_at_ms, clock_wall_ms());
}

/* The store's index of a route name, added when new; 0 when full. */
static size_t slot_for(struct metrics_store *st, const char *name, int add)
{
	size_t found = 0;

	pthread_mutex_lock(&st->lock);
	for (size_t i = 1; i < st->n_routes && !found; i++)
		if (strcmp(st->routes[i]->name, name) == 0)
			found = i;
	if (!found && add && st->n_routes <= METRICS_ROUTES_MAX &&
	    (st->routes[st->n_routes] = series_new(name, st->workers)) != NULL)
		found = st->n_routes++;
	pthread_mutex_unlock(&st->lock);
	return found;
}

struct metrics *metrics_new(struct metrics_store *st, const struct bridge_config *cfg)
{
	struct metrics *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	m->st = st;
	m->cfg = cfg;
	m->slot = calloc(cfg->n_routes + 1, sizeof(*m->slot));
	if (!m->slot) {
		metrics_free(m);
		return NULL;
	}
	for (size_t i = 0; i < cfg->n_routes; i++) {
		m->slot[i + 1] = slot_for(st, cfg->routes[i].name, 1);
		if (!m->slot[i + 1]) {
			metrics_free(m);
			return NULL;
		}
	}
	return m;
}

void metrics_free(struct metrics *m)
{
	if (!m)
		return;
	free(m->slot);
	free(m);
}

/* The series of route index `route` (-1: none chosen), or NULL. */
static struct route_series *series_of(struct metrics *m, long route)
{
	if (!m || route < -1 || route >= (long)m->cfg->n_routes)
		return NULL;
	return m->st->routes[m->slot[route + 1]];
}

void metrics_request(struct metrics *m, long route, enum metrics_outcome o)
{
	struct route_series *r = series_of(m, route);

	if (r && o < OUTCOME_COUNT)
		atomic_fetch_add(&r->requests[o], 1);
}

void metrics_dual_v2(struct metrics *m, long route, enum metrics_outcome o)
{
	struct route_series *r = route >= 0 ? series_of(m, route) : NULL;

	if (r && o < OUTCOME_COUNT)
		atomic_fetch_add(&r->dual_v2[o], 1);
}

static void observe(struct histogram *h, long long us)
{
	size_t b = 0;

	if (us < 0)
		us = 0;
	while (b < N_BOUNDS && us > bounds_us[b])
		b++;
	atomic_fetch_add(&h->buckets[b], 1);
	atomic_fetch_add(&h->count, 1);
	atomic_fetch_add(&h->sum_us, (uint64_t)us);
}

void metrics_request_duration(struct metrics *m, long route, enum metrics_outcome o, long long us)
{
	struct route_series *r = series_of(m, route);

	if (r && o < OUTCOME_COUNT)
		observe(&r->duration[o], us);
}

void metrics_upstream_latency(struct metrics *m, long route, long long us)
{
	struct route_series *r = route >= 0 ? series_of(m, route) : NULL;

	if (r)
		observe(&r->upstream, us);
}

static void label_count(struct label_table *t, size_t route, const char *name)
{
	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; i < t->n; i++) {
		if (t->routes[i] == route && strcmp(t->names[i], name) == 0) {
			t->counts[i]++;
			pthread_mutex_unlock(&t->lock);
			return;
		}
	}
	if (t->n < METRICS_LABELS_MAX && (t->names[t->n] = strdup(name)) != NULL) {
		t->routes[t->n] = route;
		t->counts[t->n++] = 1;
	} else {
		t->other++;
	}
	pthread_mutex_unlock(&t->lock);
}

void metrics_mapping_error(struct metrics *m, long route, const char *rule_location)
{
	if (series_of(m, route))
		label_count(&m->st->mapping_errors, m->slot[route + 1],
			    rule_location ? rule_location : "");
}

void metrics_unmapped(struct metrics *m, long route, const char *variable)
{
	if (series_of(m, route))
		label_count(&m->st->unmapped, m->slot[route + 1], variable);
}

void metrics_in_flight_add(struct metrics *m, int delta)
{
	if (m)
		atomic_fetch_add(&m->st->in_flight, delta);
}

void metrics_worker_connections(struct metrics *m, int worker, long open)
{
	if (m && worker >= 0 && worker < m->st->workers)
		atomic_store(&m->st->conns[worker], open);
}

void metrics_pool_connections(struct metrics *m, long route, int worker, long open)
{
	struct route_series *r = route >= 0 ? series_of(m, route) : NULL;

	if (r && worker >= 0 && worker < m->st->workers)
		atomic_store(&r->pool_open[worker], open);
}

void metrics_shadow_compared(struct metrics *m, const char *route, enum metrics_shadow_result res)
{
	size_t i = m && route ? slot_for(m->st, route, 0) : 0;

	if (i && res < SHADOW_RESULT_COUNT)
		atomic_fetch_add(&m->st->routes[i]->compared[res], 1);
}

void metrics_store_shadow_expired(struct metrics_store *st, const char *route, const char *side,
				  const char *reason)
{
	size_t i = st && route ? slot_for(st, route, 0) : 0;

	if (i)
		atomic_fetch_add(&st->routes[i]->expired[strcmp(side, "real") == 0]
							[strcmp(reason, "capacity") == 0],
				 1);
}

void metrics_shadow_waiting(struct metrics *m, long long waiting)
{
	if (m)
		atomic_store(&m->st->shadow_waiting, waiting);
}

/* ---- exposition ------------------------------------------------------------ */

void metrics_label_add(struct evbuffer *out, const char *v)
{
	for (; *v; v++) {
		if (*v == '\\' || *v == '"')
			evbuffer_add_printf(out, "\\%c", *v);
		else if (*v == '\n')
			evbuffer_add(out, "\\n", 2);
		else
			evbuffer_add(out, v, 1);
	}
}

static void family(struct evbuffer *out, const char *name, const char *type, const char *help)
{
	evbuffer_add_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name{route="…"[,extra]} value: extra is a label list of our own ("" for none). */
static void route_line(struct evbuffer *out, const char *name, const char *route, const char *extra,
		       unsigned long long v)
{
	evbuffer_add_printf(out, "%s{route=\"", name);
	metrics_label_add(out, route);
	evbuffer_add_printf(out, "\"%s%s} %llu\n", *extra ? "," : "", extra, v);
}

static void render_histogram(struct evbuffer *out, const char *name, const char *route,
			     const char *extra, struct histogram *h)
{
	uint64_t cum = 0;
	char labels[160];

	for (size_t b = 0; b <= N_BOUNDS; b++) {
		cum += atomic_load(&h->buckets[b]);
		if (b < N_BOUNDS)
			snprintf(labels, sizeof(labels), "%s%sle=\"%g\"", extra, *extra ? "," : "",
				 bounds_us[b] / 1e6);
		else
			snprintf(labels, sizeof(labels), "%s%sle=\"+Inf\"", extra,
				 *extra ? "," : "");
		evbuffer_add_printf(out, "%s_bucket{route=\"", name);
		metrics_label_add(out, route);
		evbuffer_add_printf(out, "\",%s} %llu\n", labels, (unsigned long long)cum);
	}
	evbuffer_add_printf(out, "%s_sum{route=\"", name);
	metrics_label_add(out, route);
	evbuffer_add_printf(out, "\"%s%s} %.6f\n", *extra ? "," : "", extra,
			    atomic_load(&h->sum_us) / 1e6);
	evbuffer_add_printf(out, "%s_count{route=\"", name);
	metrics_label_add(out, route);
	evbuffer_add_printf(out, "\"%s%s} %llu\n", *extra ? "," : "", extra,
			    (unsigned long long)atomic_load(&h->count));
}

/* Whether the view exports store slot i (a route of its config, or 0). */
static int exported(const struct metrics *m, size_t i)
{
	for (size_t r = 0; r <= m->cfg->n_routes; r++)
		if (m->slot[r] == i)
			return 1;
	return 0;
}

static void render_table(struct metrics *m, struct evbuffer *out, struct label_table *t,
			 const char *metric, const char *label)
{
	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; i < t->n; i++) {
		if (!exported(m, t->routes[i]))
			continue;
		evbuffer_add_printf(out, "%s{route=\"", metric);
		metrics_label_add(out, m->st->routes[t->routes[i]]->name);
		evbuffer_add_printf(out, "\",%s=\"", label);
		metrics_label_add(out, t->names[i]);
		evbuffer_add_printf(out, "\"} %llu\n", (unsigned long long)t->counts[i]);
	}
	if (t->other)
		evbuffer_add_printf(out, "%s{route=\"_other\",%s=\"_other\"} %llu\n", metric, label,
				    (unsigned long long)t->other);
	pthread_mutex_unlock(&t->lock);
}

static void render_requests(struct metrics *m, struct evbuffer *out)
{
	char extra[64];

	family(out, "webhook_bridge_requests_total", "counter",
	       "Webhook posts answered, by route and outcome (route \"\": before routing).");
	for (size_t r = 0; r <= m->cfg->n_routes; r++) {
		struct route_series *s = m->st->routes[m->slot[r]];

		for (int o = 0; o < OUTCOME_COUNT; o++) {
			uint64_t v = atomic_load(&s->requests[o]);

			/* every known route x outcome from the start; before routing
			 * only what happened */
			if (!v && r == 0)
				continue;
			snprintf(extra, sizeof(extra), "outcome=\"%s\"", outcome_names[o]);
			route_line(out, "webhook_bridge_requests_total", s->name, extra, v);
		}
	}
	family(out, "webhook_bridge_request_duration_seconds", "histogram",
	       "Time from a webhook post's arrival to its answer, by route and outcome.");
	for (size_t r = 0; r <= m->cfg->n_routes; r++) {
		struct route_series *s = m->st->routes[m->slot[r]];

		for (int o = 0; o < OUTCOME_COUNT; o++) {
			/* like the counters: known routes x outcomes at zero */
			if (!atomic_load(&s->duration[o].count) && r == 0)
				continue;
			snprintf(extra, sizeof(extra), "outcome=\"%s\"", outcome_names[o]);
			render_histogram(out, "webhook_bridge_request_duration_seconds", s->name,
					 extra, &s->duration[o]);
		}
	}
	family(out, "webhook_bridge_dual_v2_total", "counter",
	       "Dual mode: v2 deliveries by route and outcome (the legacy importer answers the "
	       "sender).");
	for (size_t r = 0; r < m->cfg->n_routes; r++) {
		struct route_series *s = m->st->routes[m->slot[r + 1]];

		if (m->cfg->routes[r].mode != ROUTE_DUAL)
			continue;
		for (int o = 0; o < OUTCOME_COUNT; o++) {
			snprintf(extra, sizeof(extra), "outcome=\"%s\"", outcome_names[o]);
			route_line(out, "webhook_bridge_dual_v2_total", s->name, extra,
				   atomic_load(&s->dual_v2[o]));
		}
	}
}

static void render_upstream(struct metrics *m, struct evbuffer *out)
{
	family(out, "webhook_bridge_upstream_latency_seconds", "histogram",
	       "Time from sending a delivery to its outcome.");
	for (size_t r = 0; r < m->cfg->n_routes; r++)
		if (ROUTE_SENDS_V2(&m->cfg->routes[r]))
			render_histogram(out, "webhook_bridge_upstream_latency_seconds",
					 m->cfg->routes[r].name, "",
					 &m->st->routes[m->slot[r + 1]]->upstream);
	family(out, "webhook_bridge_upstream_connections", "gauge",
	       "Open connections to each route's endpoint.");
	for (size_t r = 0; r < m->cfg->n_routes; r++) {
		struct route_series *s = m->st->routes[m->slot[r + 1]];
		long open = 0;

		if (!ROUTE_SENDS_V2(&m->cfg->routes[r]))
			continue;
		for (int w = 0; w < m->st->workers; w++)
			open += atomic_load(&s->pool_open[w]);
		route_line(out, "webhook_bridge_upstream_connections", s->name, "",
			   (unsigned long long)(open > 0 ? open : 0));
	}
}

static void render_shadow(struct metrics *m, struct evbuffer *out)
{
	char extra[96];

	if (!m->cfg->shadow_path)
		return;
	family(out, "webhook_bridge_shadow_comparisons_total", "counter",
	       "Translations compared with the real v2 of the same participation, by result.");
	for (size_t r = 0; r < m->cfg->n_routes; r++) {
		struct route_series *s = m->st->routes[m->slot[r + 1]];

		if (m->cfg->routes[r].mode == ROUTE_FORWARD)
			continue;
		for (int k = 0; k < SHADOW_RESULT_COUNT; k++) {
			snprintf(extra, sizeof(extra), "result=\"%s\"", result_names[k]);
			route_line(out, "webhook_bridge_shadow_comparisons_total", s->name, extra,
				   atomic_load(&s->compared[k]));
		}
	}
	family(out, "webhook_bridge_shadow_expired_total", "counter",
	       "Participations whose other side never came, by side and reason.");
	for (size_t r = 0; r < m->cfg->n_routes; r++) {
		struct route_series *s = m->st->routes[m->slot[r + 1]];

		if (m->cfg->routes[r].mode == ROUTE_FORWARD)
			continue;
		for (int a = 0; a < 2; a++)
			for (int b = 0; b < 2; b++) {
				snprintf(extra, sizeof(extra), "side=\"%s\",reason=\"%s\"",
					 side_names[a], reason_names[b]);
				route_line(out, "webhook_bridge_shadow_expired_total", s->name,
					   extra, atomic_load(&s->expired[a][b]));
			}
	}
	family(out, "webhook_bridge_shadow_waiting", "gauge",
	       "Participations waiting for their other side.");
	evbuffer_add_printf(out, "webhook_bridge_shadow_waiting %lld\n",
			    atomic_load(&m->st->shadow_waiting));
}

static long open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	long n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)) != NULL)
		if (e->d_name[0] != '.')
			n++;
	closedir(d);
	return n - 1; /* the directory's own descriptor */
}

static void render_process(struct metrics *m, struct evbuffer *out)
{
	struct rusage ru;
	struct rlimit rl;
	long pages = sysconf(_SC_PAGESIZE), fds = open_fds();
	unsigned long long vsz = 0, rss = 0;
	FILE *f = fopen("/proc/self/statm", "r");

	if (f) {
		if (fscanf(f, "%llu %llu", &vsz, &rss) != 2)
			vsz = rss = 0;
		fclose(f);
	}
	getrusage(RUSAGE_SELF, &ru);
	family(out, "process_cpu_seconds_total", "counter", "User and system CPU time spent.");
	evbuffer_add_printf(out, "process_cpu_seconds_total %.6f\n",
			    ru.ru_utime.tv_sec + ru.ru_stime.tv_sec +
				    (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
	family(out, "process_resident_memory_bytes", "gauge", "Resident memory size.");
	evbuffer_add_printf(out, "process_resident_memory_bytes %llu\n",
			    rss * (unsigned long long)pages);
	family(out, "process_virtual_memory_bytes", "gauge", "Virtual memory size.");
	evbuffer_add_printf(out, "process_virtual_memory_bytes %llu\n",
			    vsz * (unsigned long long)pages);
	if (fds >= 0) {
		family(out, "process_open_fds", "gauge", "Open file descriptors.");
		evbuffer_add_printf(out, "process_open_fds %ld\n", fds);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		family(out, "process_max_fds", "gauge", "Limit of open file descriptors.");
		evbuffer_add_printf(out, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
	}
	family(out, "process_start_time_seconds", "gauge",
	       "When serve started, in seconds since the epoch; counters count from here.");
	evbuffer_add_printf(out, "process_start_time_seconds %.3f\n", m->st->start_ms / 1000.0);
	family(out, "webhook_bridge_build_info", "gauge", "Version and libraries, always 1.");
	evbuffer_add_printf(
		out,
		"webhook_bridge_build_info{version=\"%s\",libevent=\"%s\",openssl=\"%s\"} "
		"1\n",
		BRIDGE_VERSION, event_get_version(), OpenSSL_version(OPENSSL_VERSION_STRING));
	family(out, "webhook_bridge_config_last_reload_successful", "gauge",
	       "1 when the last reload (SIGHUP) was applied, 0 when it was refused.");
	evbuffer_add_printf(out, "webhook_bridge_config_last_reload_successful %d\n",
			    atomic_load(&m->st->reload_ok));
	family(out, "webhook_bridge_config_last_reload_success_timestamp_seconds", "gauge",
	       "When the running config was loaded, in seconds since the epoch.");
	evbuffer_add_printf(out,
			    "webhook_bridge_config_last_reload_success_timestamp_seconds %.3f\n",
			    atomic_load(&m->st->reload_ok_at_ms) / 1000.0);
}

void metrics_render(struct metrics *m, struct evbuffer *out)
{
	render_requests(m, out);
	family(out, "webhook_bridge_mapping_errors_total", "counter",
	       "Posts a rule rejected, by route and rule location.");
	render_table(m, out, &m->st->mapping_errors, "webhook_bridge_mapping_errors_total", "rule");
	family(out, "webhook_bridge_unmapped_variables_total", "counter",
	       "v1 keys no rule named, by route and key.");
	render_table(m, out, &m->st->unmapped, "webhook_bridge_unmapped_variables_total",
		     "variable");
	render_upstream(m, out);
	render_shadow(m, out);
	family(out, "webhook_bridge_in_flight_requests", "gauge",
	       "Posts waiting for their endpoint.");
	evbuffer_add_printf(out, "webhook_bridge_in_flight_requests %ld\n",
			    atomic_load(&m->st->in_flight));
	family(out, "webhook_bridge_log_dropped_total", "counter",
	       "Log and dry-run lines dropped because their reader did not keep up.");
	for (int i = 0; i < LOG_STREAM_COUNT; i++)
		evbuffer_add_printf(out, "webhook_bridge_log_dropped_total{stream=\"%s\"} %llu\n",
				    log_stream_name((enum log_stream)i),
				    log_stream_dropped((enum log_stream)i));
	family(out, "webhook_bridge_workers", "gauge", "Worker threads serving the port.");
	evbuffer_add_printf(out, "webhook_bridge_workers %d\n", m->st->workers);
	family(out, "webhook_bridge_worker_connections", "gauge",
	       "Client connections each worker holds on the webhook port (refreshed every "
	       "second).");
	for (int w = 0; w < m->st->workers; w++)
		evbuffer_add_printf(out, "webhook_bridge_worker_connections{worker=\"%d\"} %ld\n",
				    w, atomic_load(&m->st->conns[w]));
	render_process(m, out);
}

/* ---- JSON for the console ------------------------------------------------- */

void metrics_requests_json(struct metrics *m, struct evbuffer *out)
{
	evbuffer_add(out, "[", 1);
	for (size_t r = 0; m && r <= m->cfg->n_routes; r++) {
		struct route_series *s = m->st->routes[m->slot[r]];

		evbuffer_add_printf(out, "%s{\"route\":", r ? "," : "");
		json_escape_add(out, s->name);
		evbuffer_add_printf(out, ",\"mode\":");
		json_escape_add(out, r ? route_mode_name(m->cfg->routes[r - 1].mode) : "");
		evbuffer_add_printf(out, ",\"requests\":{");
		for (int o = 0; o < OUTCOME_COUNT; o++)
			evbuffer_add_printf(out, "%s\"%s\":%llu", o ? "," : "", outcome_names[o],
					    (unsigned long long)atomic_load(&s->requests[o]));
		evbuffer_add(out, "}}", 2);
	}
	evbuffer_add(out, "]", 1);
}

void metrics_unmapped_json(struct metrics *m, struct evbuffer *out)
{
	struct label_table *t = m ? &m->st->unmapped : NULL;
	int first = 1;

	evbuffer_add(out, "[", 1);
	if (t) {
		pthread_mutex_lock(&t->lock);
		for (size_t i = 0; i < t->n; i++) {
			if (!exported(m, t->routes[i]))
				continue;
			evbuffer_add_printf(out, "%s{\"route\":", first ? "" : ",");
			first = 0;
			json_escape_add(out, m->st->routes[t->routes[i]]->name);
			evbuffer_add_printf(out, ",\"variable\":");
			json_escape_add(out, t->names[i]);
			evbuffer_add_printf(out, ",\"count\":%llu}",
					    (unsigned long long)t->counts[i]);
		}
		pthread_mutex_unlock(&t->lock);
	}
	evbuffer_add(out, "]", 1);
}
