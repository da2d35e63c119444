#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "bridge/config.h"
#include "bridge/metrics.h"

static const char *const outcome_names[OUTCOME_COUNT] = {
	"delivered",       "dry_run",           "dropped",
	"invalid_input",   "no_route",          "mapping_failed",
	"upstream_status", "upstream_timeout",  "upstream_unreachable",
	"upstream_tls",    "upstream_protocol", "upstream_too_large",
	"shutting_down",   "internal",          "unauthorized",
	"forbidden",       "legacy_delivered",  "queued",
};

/* upper bounds in milliseconds; the last bucket is +Inf */
static const long latency_bounds_ms[] = { 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000 };
#define N_BOUNDS (sizeof(latency_bounds_ms) / sizeof(latency_bounds_ms[0]))

struct histogram {
	atomic_uint_fast64_t buckets[N_BOUNDS + 1];
	atomic_uint_fast64_t count;
	atomic_uint_fast64_t sum_ms;
};

/* A bounded name -> counter table; overflow counts under "_other". */
struct label_table {
	pthread_mutex_t lock;
	char *names[METRICS_LABELS_MAX];
	uint64_t counts[METRICS_LABELS_MAX];
	size_t n;
	uint64_t other;
};

struct metrics {
	const struct bridge_config *cfg;
	size_t n_routes;
	int workers;
	atomic_uint_fast64_t *requests; /* (n_routes + 1) * OUTCOME_COUNT; row 0 = no route */
	atomic_uint_fast64_t *dual_v2;  /* n_routes * OUTCOME_COUNT */
	struct histogram *latency;      /* n_routes */
	atomic_long *pool_open;         /* n_routes * workers */
	atomic_long in_flight;
	struct label_table mapping_errors;
	struct label_table unmapped;
};

struct metrics *metrics_new(const struct bridge_config *cfg, int workers)
{
	struct metrics *m = calloc(1, sizeof(*m));

	if (!m)
		return NULL;
	m->cfg = cfg;
	m->n_routes = cfg->n_routes;
	m->workers = workers;
	m->requests = calloc((m->n_routes + 1) * OUTCOME_COUNT, sizeof(*m->requests));
	m->dual_v2 = calloc((m->n_routes + 1) * OUTCOME_COUNT, sizeof(*m->dual_v2));
	m->latency = calloc(m->n_routes + 1, sizeof(*m->latency));
	m->pool_open = calloc((m->n_routes + 1) * (size_t)workers, sizeof(*m->pool_open));
	pthread_mutex_init(&m->mapping_errors.lock, NULL);
	pthread_mutex_init(&m->unmapped.lock, NULL);
	if (!m->requests || !m->dual_v2 || !m->latency || !m->pool_open) {
		metrics_free(m);
		return NULL;
	}
	return m;
}

static void label_table_clear(struct label_table *t)
{
	for (size_t i = 0; i < t->n; i++)
		free(t->names[i]);
	pthread_mutex_destroy(&t->lock);
}

void metrics_free(struct metrics *m)
{
	if (!m)
		return;
	free(m->requests);
	free(m->dual_v2);
	free(m->latency);
	free(m->pool_open);
	label_table_clear(&m->mapping_errors);
	label_table_clear(&m->unmapped);
	free(m);
}

void metrics_request(struct metrics *m, long route, enum metrics_outcome o)
{
	if (!m || route >= (long)m->n_routes || o >= OUTCOME_COUNT)
		return;
	atomic_fetch_add(&m->requests[(size_t)(route + 1) * OUTCOME_COUNT + o], 1);
}

void metrics_dual_v2(struct metrics *m, long route, enum metrics_outcome o)
{
	if (!m || route < 0 || route >= (long)m->n_routes || o >= OUTCOME_COUNT)
		return;
	atomic_fetch_add(&m->dual_v2[(size_t)route * OUTCOME_COUNT + o], 1);
}

void metrics_upstream_latency(struct metrics *m, long route, long ms)
{
	struct histogram *h;
	size_t b = 0;

	if (!m || route < 0 || route >= (long)m->n_routes)
		return;
	h = &m->latency[route];
	while (b < N_BOUNDS && ms > latency_bounds_ms[b])
		b++;
	atomic_fetch_add(&h->buckets[b], 1);
	atomic_fetch_add(&h->count, 1);
	atomic_fetch_add(&h->sum_ms, ms > 0 ? (uint64_t)ms : 0);
}

static void label_count(struct label_table *t, const char *name)
{
	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; i < t->n; i++) {
		if (strcmp(t->names[i], name) == 0) {
			t->counts[i]++;
			pthread_mutex_unlock(&t->lock);
			return;
		}
	}
	if (t->n < METRICS_LABELS_MAX && (t->names[t->n] = strdup(name)) != NULL)
		t->counts[t->n++] = 1;
	else
		t->other++;
	pthread_mutex_unlock(&t->lock);
}

void metrics_mapping_error(struct metrics *m, const char *rule_location)
{
	if (m)
		label_count(&m->mapping_errors, rule_location ? rule_location : "");
}

void metrics_unmapped(struct metrics *m, const char *variable)
{
	if (m)
		label_count(&m->unmapped, variable);
}

void metrics_in_flight_add(struct metrics *m, int delta)
{
	if (m)
		atomic_fetch_add(&m->in_flight, delta);
}

void metrics_pool_connections(struct metrics *m, long route, int worker, long open)
{
	if (!m || route < 0 || route >= (long)m->n_routes || worker < 0 || worker >= m->workers)
		return;
	atomic_store(&m->pool_open[(size_t)route * (size_t)m->workers + (size_t)worker], open);
}

/* Prometheus label values escape \, " and newline. */
static void add_label(struct evbuffer *out, const char *v)
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

static void render_table(struct evbuffer *out, struct label_table *t, const char *metric,
			 const char *label)
{
	pthread_mutex_lock(&t->lock);
	for (size_t i = 0; i < t->n; i++) {
		evbuffer_add_printf(out, "%s{%s=\"", metric, label);
		add_label(out, t->names[i]);
		evbuffer_add_printf(out, "\"} %llu\n", (unsigned long long)t->counts[i]);
	}
	if (t->other)
		evbuffer_add_printf(out, "%s{%s=\"_other\"} %llu\n", metric, label,
				    (unsigned long long)t->other);
	pthread_mutex_unlock(&t->lock);
}

void metrics_render(struct metrics *m, struct evbuffer *out)
{
	evbuffer_add_printf(out, "# HELP webhook_bridge_requests_total Webhook posts answered, by "
				 "route and outcome.\n"
				 "# TYPE webhook_bridge_requests_total counter\n");
	for (size_t r = 0; r <= m->n_routes; r++) {
		for (int o = 0; o < OUTCOME_COUNT; o++) {
			uint64_t v = atomic_load(&m->requests[r * OUTCOME_COUNT + (size_t)o]);

			if (!v)
				continue;
			evbuffer_add_printf(out, "webhook_bridge_requests_total{route=\"");
			add_label(out, r ? m->cfg->routes[r - 1].name : "");
			evbuffer_add_printf(out, "\",outcome=\"%s\"} %llu\n", outcome_names[o],
					    (unsigned long long)v);
		}
	}
	evbuffer_add_printf(out, "# HELP webhook_bridge_dual_v2_total Dual mode: v2 deliveries by "
				 "route and outcome (the legacy importer answers the sender).\n"
				 "# TYPE webhook_bridge_dual_v2_total counter\n");
	for (size_t r = 0; r < m->n_routes; r++) {
		for (int o = 0; o < OUTCOME_COUNT; o++) {
			uint64_t v = atomic_load(&m->dual_v2[r * OUTCOME_COUNT + (size_t)o]);

			if (!v)
				continue;
			evbuffer_add_printf(out, "webhook_bridge_dual_v2_total{route=\"");
			add_label(out, m->cfg->routes[r].name);
			evbuffer_add_printf(out, "\",outcome=\"%s\"} %llu\n", outcome_names[o],
					    (unsigned long long)v);
		}
	}
	evbuffer_add_printf(out, "# HELP webhook_bridge_mapping_errors_total Posts a rule "
				 "rejected, by rule location.\n"
				 "# TYPE webhook_bridge_mapping_errors_total counter\n");
	render_table(out, &m->mapping_errors, "webhook_bridge_mapping_errors_total", "rule");
	evbuffer_add_printf(
		out,
		"# HELP webhook_bridge_unmapped_variables_total v1 keys no rule named, by key.\n"
		"# TYPE webhook_bridge_unmapped_variables_total counter\n");
	render_table(out, &m->unmapped, "webhook_bridge_unmapped_variables_total", "variable");

	evbuffer_add_printf(out, "# HELP webhook_bridge_upstream_latency_seconds Time from sending "
				 "a delivery to its outcome.\n"
				 "# TYPE webhook_bridge_upstream_latency_seconds histogram\n");
	for (size_t r = 0; r < m->n_routes; r++) {
		struct histogram *h = &m->latency[r];
		uint64_t cum = 0;

		if (!ROUTE_SENDS_V2(&m->cfg->routes[r]))
			continue;
		for (size_t b = 0; b <= N_BOUNDS; b++) {
			cum += atomic_load(&h->buckets[b]);
			evbuffer_add_printf(
				out, "webhook_bridge_upstream_latency_seconds_bucket{route=\"");
			add_label(out, m->cfg->routes[r].name);
			if (b < N_BOUNDS)
				evbuffer_add_printf(out, "\",le=\"%g\"} %llu\n",
						    latency_bounds_ms[b] / 1000.0,
						    (unsigned long long)cum);
			else
				evbuffer_add_printf(out, "\",le=\"+Inf\"} %llu\n",
						    (unsigned long long)cum);
		}
		evbuffer_add_printf(out, "webhook_bridge_upstream_latency_seconds_sum{route=\"");
		add_label(out, m->cfg->routes[r].name);
		evbuffer_add_printf(out, "\"} %.3f\n", atomic_load(&h->sum_ms) / 1000.0);
		evbuffer_add_printf(out, "webhook_bridge_upstream_latency_seconds_count{route=\"");
		add_label(out, m->cfg->routes[r].name);
		evbuffer_add_printf(out, "\"} %llu\n", (unsigned long long)atomic_load(&h->count));
	}

	evbuffer_add_printf(out, "# HELP webhook_bridge_upstream_connections Open connections to "
				 "each route's endpoint.\n"
				 "# TYPE webhook_bridge_upstream_connections gauge\n");
	for (size_t r = 0; r < m->n_routes; r++) {
		long open = 0;

		if (!ROUTE_SENDS_V2(&m->cfg->routes[r]))
			continue;
		for (int w = 0; w < m->workers; w++)
			open += atomic_load(&m->pool_open[r * (size_t)m->workers + (size_t)w]);
		evbuffer_add_printf(out, "webhook_bridge_upstream_connections{route=\"");
		add_label(out, m->cfg->routes[r].name);
		evbuffer_add_printf(out, "\"} %ld\n", open);
	}
	evbuffer_add_printf(
		out,
		"# HELP webhook_bridge_in_flight_requests Posts waiting for their endpoint.\n"
		"# TYPE webhook_bridge_in_flight_requests gauge\n"
		"webhook_bridge_in_flight_requests %ld\n",
		atomic_load(&m->in_flight));
	evbuffer_add_printf(out,
			    "# HELP webhook_bridge_workers Worker threads serving the port.\n"
			    "# TYPE webhook_bridge_workers gauge\n"
			    "webhook_bridge_workers %d\n",
			    m->workers);
}
