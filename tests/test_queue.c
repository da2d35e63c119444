/*
 * queue: the delivery policy as pure functions (backoff bounds and jitter,
 * Retry-After), the configuration group, and the scheduler against real
 * loopback sinks (evhttp on this test's event_base, main thread) while the
 * queue runs its own thread: retries with the same delivery id and
 * signature, Retry-After, dead letters by attempts and by age, ordering per
 * participation, duplicates, a full queue, the per-endpoint limit, stop and
 * restart, a SIGKILLed owner (in a child process), changes made through a
 * second connection as the `queue` command does, the `queue` command itself
 * and the log line of an event.
 *
 * Run through tests/with_pg.py (BRIDGE_TEST_PG_URL set), the same checks run
 * on the PostgreSQL engine: every queue gets a database of its own, and the
 * SIGKILLed owner's deliveries come back when their lease expires (a shared
 * store has no lock file: several bridges use it at once).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/thread.h>
#include <libpq-fe.h>

#include "bridge/confread.h"
#include "bridge/queue.h"
#include "bridge/retry_after.h"
#include "bridge/sign.h"
#include "bridge/store.h"
#include "proc_threads.h"
#include "tap.h"

static struct event_base *base;
static char tmpdir[64];
static char pg_host[80]; /* the cluster's socket folder: the PostgreSQL engine; "": SQLite */

static int64_t wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void noop_cb(evutil_socket_t fd, short what, void *arg)
{
}

/* Run this thread's loop (the sinks) until pred(arg) or ms pass. */
static int wait_for(int (*pred)(void *), void *arg, int ms)
{
	int64_t end = wall_ms() + ms;
	struct timeval tick = { 0, 10000 };
	struct event *t = event_new(base, -1, EV_PERSIST, noop_cb, NULL);
	int r;

	event_add(t, &tick);
	while (!(r = pred(arg)) && wall_ms() < end)
		event_base_loop(base, EVLOOP_ONCE);
	event_free(t);
	return r;
}

static int never(void *arg)
{
	return 0;
}

static void run_for(int ms)
{
	wait_for(never, NULL, ms);
}

/* ------------------------------------------------------------------ */
/* sink */

#define SINK_MAX 512

struct rec {
	char path[64];
	char delivery_id[64];
	char signature[128];
	char auth[128];
	char content_type[64];
	char body[512];
	int64_t at_ms;
	int status; /* what the sink answered; 0 = held */
};

struct sink {
	struct evhttp *http;
	int port;
	struct rec recs[SINK_MAX];
	int n;
	int inflight, max_inflight;
	int script[16];
	const char *retry_after[16];
	int n_script, pos;
	int fail_percent; /* random 500s */
	int hold;         /* keep requests unanswered */
	struct evhttp_request *held[64];
	int n_held;
	int ok_count; /* 2xx answered */
};

static void sink_answer(struct sink *s, struct evhttp_request *req, int status, const char *ra)
{
	struct evbuffer *b = evbuffer_new();

	evbuffer_add_printf(b, "{\"status\":%d}", status);
	if (ra)
		evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", ra);
	evhttp_send_reply(req, status, status < 300 ? "OK" : "Nope", b);
	evbuffer_free(b);
	s->inflight--;
	if (status >= 200 && status < 300)
		s->ok_count++;
}

static void copy_header(struct evkeyvalq *h, const char *name, char *out, size_t cap)
{
	const char *v = evhttp_find_header(h, name);

	snprintf(out, cap, "%s", v ? v : "");
}

static void sink_cb(struct evhttp_request *req, void *arg)
{
	struct sink *s = arg;
	struct evkeyvalq *h = evhttp_request_get_input_headers(req);
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	struct rec *r;
	size_t len = evbuffer_get_length(in);
	const char *ra = NULL;
	int status = 200;

	s->inflight++;
	if (s->inflight > s->max_inflight)
		s->max_inflight = s->inflight;
	if (s->n >= SINK_MAX) {
		sink_answer(s, req, 500, NULL);
		return;
	}
	r = &s->recs[s->n++];
	memset(r, 0, sizeof(*r));
	snprintf(r->path, sizeof(r->path), "%s", evhttp_request_get_uri(req));
	copy_header(h, "X-Bridge-Delivery-Id", r->delivery_id, sizeof(r->delivery_id));
	copy_header(h, "X-Qualifio-Signature", r->signature, sizeof(r->signature));
	copy_header(h, "Authorization", r->auth, sizeof(r->auth));
	copy_header(h, "Content-Type", r->content_type, sizeof(r->content_type));
	if (len >= sizeof(r->body))
		len = sizeof(r->body) - 1;
	evbuffer_copyout(in, r->body, len);
	r->body[len] = '\0';
	r->at_ms = wall_ms();
	if (s->hold) {
		if (s->n_held < 64)
			s->held[s->n_held++] = req;
		return;
	}
	if (s->pos < s->n_script) {
		ra = s->retry_after[s->pos];
		status = s->script[s->pos++];
	} else if (s->fail_percent) {
		uint32_t x = 0;

		if (getrandom(&x, sizeof(x), 0) == sizeof(x) && x % 100 < (uint32_t)s->fail_percent)
			status = 500;
	}
	r->status = status;
	sink_answer(s, req, status, ra);
}

static int sink_start(struct sink *s)
{
	struct evhttp_bound_socket *bs;
	struct sockaddr_storage ss;
	ev_socklen_t sl = sizeof(ss);

	memset(s, 0, sizeof(*s));
	s->http = evhttp_new(base);
	if (!s->http)
		return -1;
	evhttp_set_gencb(s->http, sink_cb, s);
	bs = evhttp_bind_socket_with_handle(s->http, "127.0.0.1", 0);
	if (!bs || getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&ss, &sl) < 0)
		return -1;
	s->port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	return 0;
}

static void sink_release(struct sink *s)
{
	s->hold = 0;
	for (int i = 0; i < s->n_held; i++)
		sink_answer(s, s->held[i], 200, NULL);
	s->n_held = 0;
}

static void sink_stop(struct sink *s)
{
	sink_release(s);
	if (s->http)
		evhttp_free(s->http);
	s->http = NULL;
}

static void sink_url(const struct sink *s, const char *path, char *buf, size_t cap)
{
	snprintf(buf, cap, "http://127.0.0.1:%d%s", s->port, path);
}

/* ------------------------------------------------------------------ */
/* events heard from the scheduler thread */

static pthread_mutex_t ev_mu = PTHREAD_MUTEX_INITIALIZER;
static int ev_count[QUEUE_EV_PRIORITY + 1]; /* by enum queue_event_type */
static char ev_last_dead[800];

static void on_event(const struct queue_event *ev, void *arg)
{
	pthread_mutex_lock(&ev_mu);
	ev_count[ev->type]++;
	if (ev->type == QUEUE_EV_DEAD_LETTER)
		snprintf(ev_last_dead, sizeof(ev_last_dead), "%s", ev->reason ? ev->reason : "");
	pthread_mutex_unlock(&ev_mu);
}

static int ev_get(enum queue_event_type t)
{
	int n;

	pthread_mutex_lock(&ev_mu);
	n = ev_count[t];
	pthread_mutex_unlock(&ev_mu);
	return n;
}

static void ev_reset(void)
{
	pthread_mutex_lock(&ev_mu);
	memset(ev_count, 0, sizeof(ev_count));
	ev_last_dead[0] = '\0';
	pthread_mutex_unlock(&ev_mu);
}

/* ------------------------------------------------------------------ */
/* queue helpers */

static int store_seq;

/* A database of its own for one queue of this test. */
static void pg_database(int seq)
{
	char conninfo[400], sql[64];
	PGconn *pc;
	PGresult *r;

	snprintf(conninfo, sizeof(conninfo), "host=%s user=bridge dbname=postgres", pg_host);
	pc = PQconnectdb(conninfo);
	snprintf(sql, sizeof(sql), "CREATE DATABASE q%d", seq);
	r = PQexec(pc, sql);
	if (PQresultStatus(r) != PGRES_COMMAND_OK)
		printf("# %s: %s", sql, PQerrorMessage(pc));
	PQclear(r);
	PQfinish(pc);
}

static void config_for_test(struct queue_config *c, char *path, size_t cap)
{
	queue_config_default(c);
	if (pg_host[0]) {
		pg_database(++store_seq);
		snprintf(path, cap, "postgresql://bridge@/q%d?host=%s", store_seq, pg_host);
		c->shared.url = path;
		c->shared.lease_ms = 1000;
	} else {
		snprintf(path, cap, "%s/q%d.db", tmpdir, ++store_seq);
		c->path = path;
	}
	c->backoff_base_ms = 20;
	c->backoff_max_ms = 100;
}

/* A second connection to the store of config_for_test, as the queue
 * command opens it. */
static int test_store_open(const char *path, struct store **ret, struct bridge_error *err)
{
	struct shared_config sc;

	if (!pg_host[0])
		return store_open(path, 0, 1000, ret, err);
	shared_config_default(&sc);
	sc.url = (char *)path;
	return store_open_shared(&sc, 0, ret, err);
}

static struct queue *queue_open(const struct queue_config *c)
{
	struct queue *q = NULL;
	struct bridge_error err;

	bridge_error_clear(&err);
	if (queue_new(c, NULL, on_event, NULL, &q, &err) < 0)
		printf("# queue_new: %s\n", err.message);
	return q;
}

struct body_buf {
	char text[256];
	char sig[SIGN_HEADER_MAX];
	struct upstream_header h[5];
	struct store_item it;
};

static void item_make(struct body_buf *b, const char *endpoint, const char *route, const char *pid,
		      const char *state, const char *delivery_id)
{
	memset(b, 0, sizeof(*b));
	snprintf(b->text, sizeof(b->text), "{\"id\":\"%s\",\"state\":\"%s\"}", pid, state);
	sign_body("s3cret", 6, b->text, strlen(b->text), SIGN_HEX, b->sig, sizeof(b->sig));
	b->h[0] = (struct upstream_header){ "Content-Type", "application/json" };
	b->h[1] = (struct upstream_header){ "Authorization", "Bearer tok" };
	b->h[2] = (struct upstream_header){ "X-Qualifio-Signature", b->sig };
	b->h[3] = (struct upstream_header){ "X-Bridge-Delivery-Id", delivery_id };
	b->h[4] = (struct upstream_header){ "User-Agent", "webhook-bridge/test" };
	b->it.route = route;
	b->it.endpoint = endpoint;
	b->it.timeout_ms = 2000;
	b->it.delivery_id = delivery_id;
	b->it.participation_id = pid;
	b->it.state = state;
	b->it.body = b->text;
	b->it.len = strlen(b->text);
	b->it.headers = b->h;
	b->it.n_headers = 5;
}

static int enqueue(struct queue *q, const char *endpoint, const char *route, const char *pid,
		   const char *state, const char *delivery_id, struct store_receipt *r)
{
	struct body_buf b;
	struct bridge_error err;
	int rc;

	item_make(&b, endpoint, route, pid, state, delivery_id);
	bridge_error_clear(&err);
	rc = queue_enqueue(q, &b.it, r, &err);
	if (rc < 0)
		printf("# enqueue: %s\n", err.message);
	return rc;
}

struct stat_want {
	struct queue *q;
	long long delivered, dead_lettered;
};

static int delivered_reached(void *arg)
{
	struct stat_want *w = arg;
	struct queue_stats s;

	queue_stats(w->q, &s);
	return s.delivered >= w->delivered && s.dead_lettered >= w->dead_lettered;
}

static int wait_stats(struct queue *q, long long delivered, long long dead, int ms)
{
	struct stat_want w = { q, delivered, dead };

	return wait_for(delivered_reached, &w, ms);
}

/* The dead-letter event is emitted after the store counts the row: wait for
 * it, and read its reason under the lock the callback writes it under. */
static int dead_reason_has(void *arg)
{
	int found;

	pthread_mutex_lock(&ev_mu);
	found = strstr(ev_last_dead, arg) != NULL;
	pthread_mutex_unlock(&ev_mu);
	return found;
}

static int wait_dead_reason(const char *needle, int ms)
{
	return wait_for(dead_reason_has, (void *)needle, ms);
}

struct sink_want {
	struct sink *s;
	int n;
};

static int sink_has(void *arg)
{
	struct sink_want *w = arg;

	return w->s->n >= w->n;
}

static int wait_sink(struct sink *s, int n, int ms)
{
	struct sink_want w = { s, n };

	return wait_for(sink_has, &w, ms);
}

/* ------------------------------------------------------------------ */
/* policy */

static void test_backoff(void)
{
	struct queue_config c;
	int64_t lo = INT64_MAX, hi = -1, sum = 0, cap;
	int out_of_range = 0;
	const int n = 20000;

	queue_config_default(&c);
	is_int(queue_backoff_cap_ms(&c, 1), 1000, "cap after 1 failure = base");
	is_int(queue_backoff_cap_ms(&c, 2), 2000, "cap doubles");
	is_int(queue_backoff_cap_ms(&c, 5), 16000, "cap after 5 = base * 2^4");
	is_int(queue_backoff_cap_ms(&c, 10), 512000, "cap after 10");
	is_int(queue_backoff_cap_ms(&c, 11), 600000, "cap clamped at backoff_max_ms");
	is_int(queue_backoff_cap_ms(&c, 1000000), 600000, "no overflow for huge counts");
	is_int(queue_backoff_ms(&c, 3, 0), 0, "jitter: rnd 0 gives 0");
	is_int(queue_backoff_ms(&c, 3, 4000), 4000, "jitter: rnd = cap gives cap");
	ok(queue_backoff_ms(&c, 3, UINT64_MAX) <= 4000, "jitter: any rnd stays <= cap");

	cap = queue_backoff_cap_ms(&c, 4); /* 8000 */
	for (int i = 0; i < n; i++) {
		uint64_t r = 0;
		int64_t d;

		if (getrandom(&r, sizeof(r), 0) != sizeof(r))
			r = (uint64_t)rand() * 2654435761u;
		d = queue_backoff_ms(&c, 4, r);
		if (d < 0 || d > cap)
			out_of_range++;
		lo = d < lo ? d : lo;
		hi = d > hi ? d : hi;
		sum += d;
	}
	is_int(out_of_range, 0, "20000 draws all within [0, cap]");
	ok(lo < cap / 20, "full jitter reaches near 0");
	ok(hi > cap - cap / 20, "full jitter reaches near the cap");
	ok(sum / n > cap * 45 / 100 && sum / n < cap * 55 / 100, "mean near cap/2 (uniform)");
}

static void test_retry_after(void)
{
	int64_t now = 784111777000LL; /* Sun, 06 Nov 1994 08:49:37 GMT */

	is_int(retry_after_ms("120", now), 120000, "delta-seconds");
	is_int(retry_after_ms("  7 ", now), 7000, "delta-seconds with spaces");
	is_int(retry_after_ms("0", now), 0, "zero");
	is_int(retry_after_ms("Sun, 06 Nov 1994 08:50:37 GMT", now), 60000, "IMF-fixdate");
	is_int(retry_after_ms("Sunday, 06-Nov-94 08:49:47 GMT", now), 10000, "RFC 850 date");
	is_int(retry_after_ms("Sun Nov  6 08:49:57 1994", now), 20000, "asctime date");
	is_int(retry_after_ms("Sun Nov 16 08:49:37 1994", now), 10LL * 86400000,
	       "asctime with a two-digit day");
	is_int(retry_after_ms("Sun, 06 Nov 1994 08:00:00 GMT", now), 0, "date in the past: 0");
	is_int(retry_after_ms("Sun, 06 Nov 1994 08:49:37 UTC", now), -1, "not GMT: ignored");
	is_int(retry_after_ms("soon", now), -1, "garbage: ignored");
	is_int(retry_after_ms("-5", now), -1, "negative: ignored");
	is_int(retry_after_ms("1.5", now), -1, "fraction: ignored");
	is_int(retry_after_ms("", now), -1, "empty: ignored");
	is_int(retry_after_ms(NULL, now), -1, "absent: ignored");
	is_int(retry_after_ms("Sun, 06 Foo 1994 08:49:37 GMT", now), -1, "bad month: ignored");
	is_int(retry_after_ms("Sun, 06 Nov 1994 25:49:37 GMT", now), -1, "bad hour: ignored");
	is_int(retry_after_ms("99999999999999999999", now), 366LL * 86400 * 1000,
	       "huge delta clamped, no overflow");
}

static int load_text(const char *text, struct queue_config *qc, struct diag *d)
{
	char path[128];
	FILE *f;
	config_t cfg;
	int rc;

	snprintf(path, sizeof(path), "%s/queue-cfg.conf", tmpdir);
	f = fopen(path, "w");
	fputs(text, f);
	fclose(f);
	if (cfg_read(&cfg, path, d) < 0) {
		config_destroy(&cfg);
		return -2;
	}
	rc = queue_config_load(config_root_setting(&cfg), path, qc, d);
	config_destroy(&cfg);
	return rc;
}

static void test_config(void)
{
	struct queue_config qc;
	struct diag d = { 0 };
	char want[128];

	is_int(load_text("workers = 1;\n", &qc, &d), 0, "no queue group: fine");
	ok(qc.path == NULL, "no queue group: no path");
	is_int(qc.max_attempts, 10, "default max_attempts 10");
	is_int(qc.max_age_s, 86400, "default max_age_s 86400");
	is_int(qc.backoff_base_ms, 1000, "default backoff_base_ms 1000");
	is_int(qc.backoff_max_ms, 600000, "default backoff_max_ms 600000");
	is_int(qc.per_endpoint_concurrency, 4, "default per_endpoint_concurrency 4");
	is_int(qc.max_depth, 1000000, "default max_depth 1000000");
	is_int(qc.delivery_nice, 5, "default delivery_nice 5");

	is_int(load_text("queue = { path = \"data/q.db\"; max_attempts = 3; max_age_s = 60;\n"
			 "  backoff_base_ms = 10; backoff_max_ms = 50; per_endpoint_concurrency = "
			 "2;\n"
			 "  max_depth = 7; delivery_nice = 0; };\n",
			 &qc, &d),
	       0, "full group loads");
	snprintf(want, sizeof(want), "%s/data/q.db", tmpdir);
	is_str(qc.path, want, "path resolved against the config's folder");
	ok(qc.max_attempts == 3 && qc.max_age_s == 60 && qc.backoff_base_ms == 10 &&
		   qc.backoff_max_ms == 50 && qc.per_endpoint_concurrency == 2 &&
		   qc.max_depth == 7 && qc.delivery_nice == 0,
	   "every value read");
	queue_config_clear(&qc);
	ok(d.count == 0, "no diagnostics");

	is_int(load_text("queue = {\n  path = \"q.db\";\n  backoff_base_ms = 500;\n"
			 "  backoff_max_ms = 100;\n  retries = 3;\n  max_attempts = 0;\n"
			 "  delivery_nice = 20;\n};\n",
			 &qc, &d),
	       -1, "bad group fails");
	for (const char *p = d.text; p && *p;) {
		const char *nl = strchr(p, '\n');
		int n = nl ? (int)(nl - p) : (int)strlen(p);

		printf("# %.*s\n", n, p);
		p += n + (nl != NULL);
	}
	ok(d.text && strstr(d.text, "queue-cfg.conf:4: 'backoff_max_ms' (100) is smaller"),
	   "max < base reported at its line");
	ok(d.text && strstr(d.text, "retries"), "unknown key reported");
	ok(d.text && strstr(d.text, "max_attempts"), "out-of-range max_attempts reported");
	ok(d.text && strstr(d.text, "queue-cfg.conf:7:") && strstr(d.text, "delivery_nice"),
	   "out-of-range delivery_nice reported at its line");
	ok(qc.path == NULL, "nothing kept on failure");
	diag_reset(&d);
	is_int(load_text("queue = { max_attempts = 3; };\n", &qc, &d), -1, "path is required");
	ok(d.text && strstr(d.text, "needs a 'path'"), "and the message says so");
	diag_reset(&d);
}

/* ------------------------------------------------------------------ */
/* delivery */

static void test_deliver(void)
{
	struct sink s;
	struct queue_config c;
	char path[128], url[128];
	struct queue *q;
	struct store_receipt r;
	struct queue_stats st;
	struct evbuffer *m;
	char *text;
	struct body_buf b;

	ev_reset();
	sink_start(&s);
	config_for_test(&c, path, sizeof(path));
	q = queue_open(&c);
	if (!ok(q != NULL, "queue opens (store created)"))
		return;
	sink_url(&s, "/hook?x=1", url, sizeof(url));
	is_int(enqueue(q, url, "r", "P-1", "COMPLETED", "d-1", &r), QUEUE_STORED, "stored");
	is_int(r.id, 1, "receipt id");
	is_str(r.delivery_id, "d-1", "receipt delivery id");
	queue_stats(q, &st);
	is_int(st.depth, 1, "depth 1 before start");
	ok(queue_start(q, NULL) == 0, "started");
	ok(wait_stats(q, 1, 0, 5000), "delivered");
	item_make(&b, url, "r", "P-1", "COMPLETED", "d-1");
	is_int(s.n, 1, "one request");
	is_str(s.recs[0].path, "/hook?x=1", "path and query of the endpoint");
	is_str(s.recs[0].body, b.text, "body as stored");
	is_str(s.recs[0].signature, b.sig, "signature header as stored");
	is_str(s.recs[0].delivery_id, "d-1", "delivery id header");
	is_str(s.recs[0].auth, "Bearer tok", "auth header");
	is_str(s.recs[0].content_type, "application/json", "content type");
	queue_stats(q, &st);
	ok(st.depth == 0 && st.delivered == 1 && st.enqueued == 1 && st.in_flight == 0,
	   "stats: depth 0, delivered 1, enqueued 1");
	is_int(ev_get(QUEUE_EV_DELIVERED), 1, "delivered event");
	m = evbuffer_new();
	queue_metrics_render(q, NULL, m);
	evbuffer_add(m, "", 1);
	text = (char *)evbuffer_pullup(m, -1);
	ok(strstr(text, "\nwebhook_bridge_queue_delivered_total 1\n") &&
		   strstr(text, "\nwebhook_bridge_queue_depth 0\n") &&
		   strstr(text, "# TYPE webhook_bridge_queue_oldest_age_seconds gauge\n"),
	   "metrics lines");
	evbuffer_free(m);
	queue_free(q);
	sink_stop(&s);
}

static void test_retry_after_live(void)
{
	struct sink s;
	struct queue_config c;
	char path[128], url[128], date[64];
	struct queue *q;
	time_t t;
	struct tm tm;

	ev_reset();
	sink_start(&s);
	config_for_test(&c, path, sizeof(path));
	c.backoff_base_ms = 10;
	c.backoff_max_ms = 10;
	q = queue_open(&c);
	if (!q)
		return;
	sink_url(&s, "/ra", url, sizeof(url));
	t = time(NULL) + 3;
	gmtime_r(&t, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
	s.script[0] = 503;
	s.retry_after[0] = "1";
	s.script[1] = 429;
	s.retry_after[1] = date;
	s.script[2] = 500;
	s.script[3] = 200;
	s.n_script = 4;
	enqueue(q, url, "r", "P-ra", "COMPLETED", "d-ra", NULL);
	queue_start(q, NULL);
	ok(wait_stats(q, 1, 0, 8000), "delivered after 503, 429 and 500");
	is_int(s.n, 4, "four attempts");
	ok(s.n == 4 && s.recs[1].at_ms - s.recs[0].at_ms >= 950,
	   "Retry-After: 1 honoured (backoff alone would be <= 10 ms)");
	printf("# gaps: %lld %lld %lld ms\n", (long long)(s.recs[1].at_ms - s.recs[0].at_ms),
	       (long long)(s.recs[2].at_ms - s.recs[1].at_ms),
	       (long long)(s.recs[3].at_ms - s.recs[2].at_ms));
	ok(s.n == 4 && s.recs[2].at_ms >= (int64_t)t * 1000 - 50,
	   "Retry-After HTTP date honoured: not before that time");
	ok(s.n == 4 && s.recs[3].at_ms - s.recs[2].at_ms < 500, "without Retry-After, the backoff");
	for (int i = 1; i < s.n; i++) {
		ok(strcmp(s.recs[i].delivery_id, s.recs[0].delivery_id) == 0 &&
			   strcmp(s.recs[i].signature, s.recs[0].signature) == 0 &&
			   strcmp(s.recs[i].body, s.recs[0].body) == 0,
		   "same delivery id, signature and body on every attempt");
	}
	is_int(ev_get(QUEUE_EV_ATTEMPT_FAILED), 3, "three failed-attempt events");
	queue_free(q);
	sink_stop(&s);
}

static void test_dead_letters(void)
{
	struct sink s;
	struct queue_config c;
	char path[128], url[128];
	struct queue *q;
	struct store *st;
	struct store_row row;
	struct queue_stats qs;
	struct bridge_error err;
	int64_t t0;

	/* by attempts */
	ev_reset();
	sink_start(&s);
	config_for_test(&c, path, sizeof(path));
	c.max_attempts = 4;
	c.backoff_base_ms = 50;
	c.backoff_max_ms = 200;
	q = queue_open(&c);
	if (!q)
		return;
	sink_url(&s, "/dead", url, sizeof(url));
	s.fail_percent = 100;
	enqueue(q, url, "r", "P-dead", "COMPLETED", "d-dead", NULL);
	queue_start(q, NULL);
	ok(wait_stats(q, 0, 1, 5000), "dead-lettered");
	run_for(300);
	is_int(s.n, 4, "exactly max_attempts attempts, none after");
	for (int i = 1; i < s.n; i++) {
		int64_t gap = s.recs[i].at_ms - s.recs[i - 1].at_ms;

		ok(gap <= queue_backoff_cap_ms(&c, i) + 150,
		   "gap after attempt n within the backoff cap (+ slack)");
	}
	queue_stats(q, &qs);
	ok(qs.depth == 0 && qs.dead == 1 && qs.dead_lettered == 1 && qs.failed_attempts == 4,
	   "stats: depth 0, 1 dead letter, 4 failed attempts");
	is_int(ev_get(QUEUE_EV_DEAD_LETTER), 1, "one dead-letter event");
	ok(wait_dead_reason("gave up after 4 attempts", 4000), "event says why");
	queue_free(q);
	ok(test_store_open(path, &st, &err) == 0 && store_get(st, 1, &row, &err) == 0,
	   "row still in the store");
	is_int(row.status, STORE_DEAD, "status dead");
	is_int(row.attempts, 4, "attempts 4");
	is_int(row.last_status, 500, "last status 500");
	ok(strstr(row.last_error, "gave up after 4 attempts: endpoint answered HTTP 500") != NULL,
	   "last error explains");
	store_row_clear(&row);
	store_close(st);
	sink_stop(&s);

	/* by age */
	ev_reset();
	sink_start(&s);
	config_for_test(&c, path, sizeof(path));
	c.max_age_s = 1;
	c.max_attempts = 1000; /* full jitter may fit many tries in 1 s: the age must decide */
	c.backoff_base_ms = 400;
	c.backoff_max_ms = 400;
	q = queue_open(&c);
	if (!q)
		return;
	sink_url(&s, "/old", url, sizeof(url));
	s.fail_percent = 100;
	t0 = wall_ms();
	enqueue(q, url, "r", "P-old", "COMPLETED", "d-old", NULL);
	queue_start(q, NULL);
	ok(wait_stats(q, 0, 1, 4000), "dead-lettered by age");
	ok(wall_ms() - t0 < 1600, "within about max_age_s");
	printf("# %d attempts within max_age_s\n", s.n);
	ok(s.n >= 3 && s.n <= 100, "attempts kept coming (gaps <= 400 ms) until the age limit");
	ok(wait_dead_reason("max_age_s (1 s)", 4000), "reason names max_age_s");
	queue_free(q);
	sink_stop(&s);
}

struct pstate {
	int first_ok_incomplete; /* index of the 2xx INCOMPLETE, -1 */
	int first_completed;     /* index of the first COMPLETED request, -1 */
	int last_incomplete;
	int ok_incomplete, ok_completed;
};

static void test_ordering(void)
{
	enum { NP = 40 };
	struct sink s;
	struct queue_config c;
	char path[128], url[128], pid[16], did[32];
	struct queue *q;
	struct pstate ps[NP];
	int bad_order = 0, bad_count = 0;

	ev_reset();
	sink_start(&s);
	config_for_test(&c, path, sizeof(path));
	c.backoff_base_ms = 5;
	c.backoff_max_ms = 40;
	c.max_attempts = 1000;
	q = queue_open(&c);
	if (!q)
		return;
	sink_url(&s, "/order", url, sizeof(url));
	s.fail_percent = 40;
	for (int i = 0; i < NP; i++) {
		snprintf(pid, sizeof(pid), "P%02d", i);
		snprintf(did, sizeof(did), "d-%02d-i", i);
		enqueue(q, url, "r", pid, "INCOMPLETE", did, NULL);
		if (i % 2) {
			snprintf(did, sizeof(did), "d-%02d-c", i);
			enqueue(q, url, "r", pid, "COMPLETED", did, NULL);
		}
	}
	queue_start(q, NULL);
	for (int i = 0; i < NP; i += 2) { /* COMPLETED of the even ones arrives while running */
		snprintf(pid, sizeof(pid), "P%02d", i);
		snprintf(did, sizeof(did), "d-%02d-c", i);
		enqueue(q, url, "r", pid, "COMPLETED", did, NULL);
	}
	ok(wait_stats(q, 2 * NP, 0, 20000), "every row delivered despite 40% failures");
	for (int i = 0; i < NP; i++)
		ps[i] = (struct pstate){ -1, -1, -1, 0, 0 };
	for (int k = 0; k < s.n; k++) {
		int i = atoi(s.recs[k].delivery_id + 2);
		int completed = s.recs[k].delivery_id[5] == 'c';

		if (i < 0 || i >= NP)
			continue;
		if (completed) {
			if (ps[i].first_completed < 0)
				ps[i].first_completed = k;
			ps[i].ok_completed += s.recs[k].status == 200;
		} else {
			ps[i].last_incomplete = k;
			if (s.recs[k].status == 200 && ps[i].first_ok_incomplete < 0)
				ps[i].first_ok_incomplete = k;
			ps[i].ok_incomplete += s.recs[k].status == 200;
		}
	}
	for (int i = 0; i < NP; i++) {
		if (ps[i].first_completed < ps[i].first_ok_incomplete ||
		    ps[i].last_incomplete > ps[i].first_completed)
			bad_order++;
		if (ps[i].ok_incomplete != 1 || ps[i].ok_completed != 1)
			bad_count++;
	}
	printf("# %d requests for %d rows\n", s.n, 2 * NP);
	is_int(bad_order, 0,
	       "per participation: no COMPLETED attempt before its INCOMPLETE got 2xx");
	is_int(bad_count, 0, "each row accepted exactly once (no crash: no duplicate)");
	ok(s.max_inflight <= c.per_endpoint_concurrency, "never more than the per-endpoint limit");
	ok(s.n > 2 * NP, "failures did happen");
	queue_free(q);
	sink_stop(&s);
}

static void test_dedup_full(void)
{
	struct sink s;
	struct queue_config c;
	char path[128], url[128];
	struct queue *q;
	struct store_receipt r1, r2;
	struct queue_stats st;
	struct bridge_error err;
	struct body_buf b;

	ev_reset();
	sink_start(&s);
	config_for_test(&c, path, sizeof(path));
	c.max_depth = 3;
	q = queue_open(&c);
	if (!q)
		return;
	sink_url(&s, "/dedup", url, sizeof(url));
	is_int(enqueue(q, url, "r", "P1", "INCOMPLETE", "d1", &r1), QUEUE_STORED, "P1 incomplete");
	is_int(enqueue(q, url, "r", "P1", "INCOMPLETE", "d1", &r2), QUEUE_DUPLICATE,
	       "same participation and state again: duplicate");
	is_int(r2.id, r1.id, "duplicate names the queued row");
	is_int(enqueue(q, url, "r", "P1", "COMPLETED", "d1c", NULL), QUEUE_STORED, "P1 complete");
	is_int(enqueue(q, url, "r", "P2", "COMPLETED", "d2", NULL), QUEUE_STORED, "P2 (depth 3)");
	item_make(&b, url, "r", "P3", "COMPLETED", "d3");
	bridge_error_clear(&err);
	is_int(queue_enqueue(q, &b.it, NULL, &err), -1, "over max_depth: refused");
	ok(strstr(err.message, "queue is full") != NULL, "message says the queue is full");
	queue_stats(q, &st);
	ok(st.depth == 3 && st.duplicates == 1 && st.enqueued == 3, "depth 3, 1 duplicate");
	queue_start(q, NULL);
	ok(wait_stats(q, 3, 0, 5000), "the three delivered");
	is_int(s.n, 3, "the duplicate was not delivered");
	is_int(enqueue(q, url, "r", "P1", "INCOMPLETE", "d1", NULL), QUEUE_STORED,
	       "after delivery the same participation and state queues again");
	ok(wait_stats(q, 4, 0, 5000), "and is delivered");
	queue_free(q);
	sink_stop(&s);
}

struct lanes_want {
	struct sink *a, *b;
	struct queue *q;
};

static int lanes_state(void *arg)
{
	struct lanes_want *w = arg;
	struct queue_stats st;

	queue_stats(w->q, &st);
	return w->b->ok_count >= 3 && w->a->n_held >= 3 && st.in_flight == 3;
}

static void test_concurrency(void)
{
	struct sink a, b;
	struct queue_config c;
	char path[128], ua[128], ub[128], pid[16];
	struct queue *q;
	struct lanes_want w;

	ev_reset();
	sink_start(&a);
	sink_start(&b);
	config_for_test(&c, path, sizeof(path));
	c.per_endpoint_concurrency = 3;
	q = queue_open(&c);
	if (!q)
		return;
	sink_url(&a, "/a", ua, sizeof(ua));
	sink_url(&b, "/b", ub, sizeof(ub));
	a.hold = 1;
	for (int i = 0; i < 8; i++) {
		snprintf(pid, sizeof(pid), "A%d", i);
		enqueue(q, ua, "ra", pid, "COMPLETED", pid, NULL);
	}
	for (int i = 0; i < 3; i++) {
		snprintf(pid, sizeof(pid), "B%d", i);
		enqueue(q, ub, "rb", pid, "COMPLETED", pid, NULL);
	}
	queue_start(q, NULL);
	w = (struct lanes_want){ &a, &b, q };
	ok(wait_for(lanes_state, &w, 5000), "endpoint B served while A holds 3 requests");
	run_for(200);
	is_int(a.n_held, 3, "A never gets more than per_endpoint_concurrency = 3");
	sink_release(&a);
	ok(wait_stats(q, 11, 0, 5000), "all delivered once A answers");
	is_int(a.max_inflight, 3, "A: at most 3 at a time, and 3 reached");
	queue_free(q);
	sink_stop(&a);
	sink_stop(&b);
}

static void test_stop_restart(void)
{
	struct sink s;
	struct queue_config c;
	char path[128], url[128];
	struct queue *q;
	struct queue_stats st;
	int64_t t0, took;
	int again = 0, fresh = 0;

	ev_reset();
	sink_start(&s);
	config_for_test(&c, path, sizeof(path));
	q = queue_open(&c);
	if (!q)
		return;
	sink_url(&s, "/stop", url, sizeof(url));
	s.hold = 1;
	enqueue(q, url, "r", "S1", "COMPLETED", "s1", NULL);
	enqueue(q, url, "r", "S2", "COMPLETED", "s2", NULL);
	queue_start(q, NULL);
	ok(wait_sink(&s, 2, 3000), "two attempts in flight");
	t0 = wall_ms();
	queue_stop(q, 300);
	took = wall_ms() - t0;
	ok(took >= 250 && took < 1500, "stop waits for the deadline, not longer");
	queue_stats(q, &st);
	is_int(st.depth, 2, "cancelled attempts stay pending");
	is_int(enqueue(q, url, "r", "S3", "COMPLETED", "s3", NULL), QUEUE_STORED,
	       "enqueue still works after stop");
	queue_free(q);
	sink_release(&s);
	q = queue_open(&c);
	if (!ok(q != NULL, "reopened"))
		return;
	queue_stats(q, &st);
	is_int(st.depth, 3, "depth 3 after restart");
	queue_start(q, NULL);
	ok(wait_stats(q, 3, 0, 5000), "all three delivered after restart");
	/* the three go out at once, on their own connections: in any order */
	for (int i = 2; i < s.n && i < 5; i++) {
		again += strcmp(s.recs[i].delivery_id, "s1") == 0 ||
			 strcmp(s.recs[i].delivery_id, "s2") == 0;
		fresh += strcmp(s.recs[i].delivery_id, "s3") == 0;
	}
	ok(s.n == 5 && again == 2 && fresh == 1 &&
		   strcmp(s.recs[2].delivery_id, s.recs[3].delivery_id) != 0 &&
		   strcmp(s.recs[2].delivery_id, s.recs[4].delivery_id) != 0 &&
		   strcmp(s.recs[3].delivery_id, s.recs[4].delivery_id) != 0,
	   "the interrupted ones again, same delivery ids");
	queue_free(q);
	sink_stop(&s);
}

static void test_kill(void)
{
	struct sink s;
	struct queue_config c;
	char path[128], url[128], did[16];
	struct queue *q, *q2 = NULL;
	struct queue_stats st;
	struct bridge_error err;
	pid_t child;
	int status, seen[5] = { 0 }, all = 1;

	ev_reset();
	sink_start(&s);
	config_for_test(&c, path, sizeof(path));
	sink_url(&s, "/kill", url, sizeof(url));
	s.hold = 1;
	fflush(stdout);
	child = fork();
	if (child == 0) {
		q = queue_open(&c);
		for (int i = 0; q && i < 5; i++) {
			snprintf(did, sizeof(did), "k%d", i);
			enqueue(q, url, "r", did, "COMPLETED", did, NULL);
		}
		if (q)
			queue_start(q, NULL);
		for (;;)
			pause();
	}
	ok(child > 0, "child started");
	ok(wait_sink(&s, 4, 5000), "the child's attempts are in flight");
	bridge_error_clear(&err);
	if (!pg_host[0]) {
		ok(queue_new(&c, NULL, NULL, NULL, &q2, &err) < 0 && !q2,
		   "store locked by the child");
		ok(strstr(err.message, "in use by another webhook-bridge serve") != NULL,
		   "message says the store is in use");
	} else {
		/* a shared store is meant for several bridges at once */
		ok(queue_new(&c, NULL, NULL, NULL, &q2, &err) == 0 && q2,
		   "a second queue on the shared store while the child runs");
		queue_stats(q2, &st);
		is_int(st.depth, 5, "it sees the child's rows");
		queue_free(q2);
	}
	kill(child, SIGKILL);
	waitpid(child, &status, 0);
	ok(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL, "child killed with SIGKILL");
	s.n_held = 0; /* their connections died with the child */
	s.hold = 0;
	s.n = 0;
	q = queue_open(&c);
	if (!ok(q != NULL, "store opens after the kill (lock released)"))
		return;
	queue_stats(q, &st);
	is_int(st.depth, 5, "every acknowledged row survived");
	queue_start(q, NULL);
	/* shared: the killed owner's leases expire first */
	ok(wait_stats(q, 5, 0, 5000 + c.shared.lease_ms), "all delivered after restart");
	for (int i = 0; i < s.n; i++)
		if (s.recs[i].delivery_id[0] == 'k')
			seen[atoi(s.recs[i].delivery_id + 1) % 5]++;
	for (int i = 0; i < 5; i++)
		all &= seen[i] == 1;
	ok(all, "each of the five delivered (the in-flight ones retried)");
	queue_free(q);
	sink_stop(&s);
}

static int gauges_zero(void *arg)
{
	struct queue_stats st;

	queue_stats(arg, &st);
	return st.dead == 0 && st.depth == 0;
}

static void test_external(void)
{
	struct sink s, s2;
	struct queue_config c;
	char path[128], url[128], url2[128];
	struct queue *q;
	struct store *cli;
	struct queue_stats st;
	struct bridge_error err;
	struct body_buf b;
	const struct store_item *items[1];

	ev_reset();
	sink_start(&s);
	sink_start(&s2);
	config_for_test(&c, path, sizeof(path));
	c.max_attempts = 1;
	q = queue_open(&c);
	if (!q)
		return;
	sink_url(&s, "/ext", url, sizeof(url));
	s.fail_percent = 100;
	enqueue(q, url, "r", "E1", "COMPLETED", "e1", NULL);
	queue_start(q, NULL);
	ok(wait_stats(q, 0, 1, 3000), "dead after one attempt");
	s.fail_percent = 0;
	ok(test_store_open(path, &cli, &err) == 0, "a second connection, as the CLI has");
	is_int(store_retry(cli, 1, wall_ms(), &err), STORE_RETRY_DONE,
	       "retry the dead letter there");
	ok(wait_stats(q, 1, 1, QUEUE_POLL_MS + 3000), "the running queue delivers it");
	/* SQLite: recounted before the delivery; shared: within QUEUE_RECOUNT_MS */
	ok(wait_for(gauges_zero, q, 1000), "gauges recounted after the outside change");
	queue_stats(q, &st);

	sink_url(&s2, "/new-lane", url2, sizeof(url2));
	item_make(&b, url2, "r", "E2", "COMPLETED", "e2");
	items[0] = &b.it;
	ok(store_insert(cli, items, 1, wall_ms(), NULL, NULL, &err) == 0,
	   "a row for an endpoint the queue never saw, written from outside");
	ok(wait_stats(q, 2, 1, QUEUE_POLL_MS + 3000), "found and delivered");
	is_int(s2.n, 1, "to that endpoint");
	store_close(cli);
	queue_free(q);
	sink_stop(&s);
	sink_stop(&s2);
}

/* ------------------------------------------------------------------ */
/* asynchronous and concurrent enqueues */

struct async_res {
	int calls;
	int result;
	int64_t id;
	char delivery_id[128];
	char error[512];
	int in_call; /* set while queue_enqueue_async runs */
	pthread_t thread;
};

static int async_in_call;

static void async_cb(int result, const struct store_receipt *r, const char *error, void *arg)
{
	struct async_res *a = arg;

	a->calls++;
	a->result = result;
	a->in_call = async_in_call;
	a->thread = pthread_self();
	if (r) {
		a->id = r->id;
		snprintf(a->delivery_id, sizeof(a->delivery_id), "%s", r->delivery_id);
	}
	if (error)
		snprintf(a->error, sizeof(a->error), "%s", error);
}

struct calls_want {
	struct async_res *r;
	int n;
};

static int all_called(void *arg)
{
	struct calls_want *w = arg;

	for (int i = 0; i < w->n; i++)
		if (w->r[i].calls == 0)
			return 0;
	return 1;
}

static void test_async(void)
{
	enum { N = 300 };
	struct queue_config c;
	char path[128], pid[16], url[] = "http://127.0.0.1:9/async";
	struct queue *q;
	struct body_buf b;
	struct async_res *res = calloc(N + 4, sizeof(*res));
	struct queue_pending *p;
	struct bridge_error err;
	struct calls_want w;
	struct store *st;
	struct store_row row;
	int ok_all = 1, wrong_thread = 0;

	config_for_test(&c, path, sizeof(path));
	c.max_depth = N;
	q = queue_open(&c);
	if (!q)
		return;
	item_make(&b, url, "r", "A0", "COMPLETED", "a0");
	async_in_call = 1;
	ok(queue_enqueue_async(q, base, &b.it, async_cb, &res[0], &p, &err) == 0 && p,
	   "async enqueue accepted");
	async_in_call = 0;
	strcpy(b.text, "{\"changed\":\"after the call\"}"); /* the item was copied */
	w = (struct calls_want){ res, 1 };
	ok(wait_for(all_called, &w, 3000), "callback ran");
	is_int(res[0].calls, 1, "exactly once");
	ok(!res[0].in_call, "not from inside queue_enqueue_async");
	ok(pthread_equal(res[0].thread, pthread_self()), "on the base's thread");
	is_int(res[0].result, QUEUE_STORED, "stored");
	is_str(res[0].delivery_id, "a0", "receipt delivery id");
	test_store_open(path, &st, &err);
	if (ok(store_get(st, res[0].id, &row, &err) == 0, "row in the store")) {
		is_str(row.body, "{\"id\":\"A0\",\"state\":\"COMPLETED\"}",
		       "body as it was at the call (copied)");
		store_row_clear(&row);
	}

	/* duplicate, then a cancelled one */
	item_make(&b, url, "r", "A0", "COMPLETED", "a0");
	queue_enqueue_async(q, base, &b.it, async_cb, &res[1], &p, &err);
	w = (struct calls_want){ res + 1, 1 };
	wait_for(all_called, &w, 3000);
	ok(res[1].result == QUEUE_DUPLICATE && res[1].id == res[0].id, "async duplicate");
	item_make(&b, url, "r", "A-cancel", "COMPLETED", "a-cancel");
	queue_enqueue_async(q, base, &b.it, async_cb, &res[2], &p, &err);
	queue_enqueue_cancel(p);
	run_for(300);
	is_int(res[2].calls, 0, "cancelled: the callback never runs");

	/* many at once: one transaction holds many of them */
	for (int i = 0; i < N; i++) {
		snprintf(pid, sizeof(pid), "M%d", i);
		item_make(&b, url, "r", pid, "COMPLETED", pid);
		if (queue_enqueue_async(q, base, &b.it, async_cb, &res[3 + i], &p, &err) < 0)
			ok_all = 0;
	}
	ok(ok_all, "300 enqueues accepted without waiting");
	w = (struct calls_want){ res + 3, N };
	ok(wait_for(all_called, &w, 10000), "all 300 answered");
	for (int i = 0; i < N; i++) {
		if (i < N - 2 && res[3 + i].result != QUEUE_STORED)
			ok_all = 0;
		if (!pthread_equal(res[3 + i].thread, pthread_self()))
			wrong_thread++;
	}
	ok(ok_all, "stored");
	is_int(wrong_thread, 0, "every callback on the base's thread");
	{
		int full = 0;

		for (int i = 0; i < N; i++)
			full += res[3 + i].result < 0 && strstr(res[3 + i].error, "queue is full");
		/* A0, A-cancel and N-2 of these fill max_depth = N */
		is_int(full, 2, "past max_depth: -1 with the reason, in the callback");
	}
	store_close(st);
	queue_free(q);
	free(res);
}

/* A seal the caller made goes into the row as it is: here one with a wrong
 * checksum, which reads back corrupt (made again, it would read back intact). */
static void test_async_sealed(void)
{
	struct queue_config c;
	char path[128], url[] = "http://127.0.0.1:9/sealed";
	struct queue *q;
	struct body_buf b;
	struct async_res res = { 0 };
	struct queue_pending *p;
	struct bridge_error err;
	struct calls_want w = { &res, 1 };
	struct store_seal seal = { 0 };
	struct store *st;
	struct store_row row;

	config_for_test(&c, path, sizeof(path));
	q = queue_open(&c);
	if (!q)
		return;
	item_make(&b, url, "r", "S0", "COMPLETED", "s0");
	ok(store_seal_make(&b.it, &seal) == 0, "seal made by the caller");
	seal.checksum[0] ^= 0x01;
	b.it.seal = &seal;
	ok(queue_enqueue_async(q, base, &b.it, async_cb, &res, &p, &err) == 0 && p,
	   "sealed async enqueue accepted");
	store_seal_clear(&seal); /* the queue keeps its own copy */
	ok(wait_for(all_called, &w, 3000) && res.result == QUEUE_STORED, "sealed item stored");
	test_store_open(path, &st, &err);
	if (ok(store_get(st, res.id, &row, &err) == 0, "sealed row in the store")) {
		is_int(row.integrity, STORE_ROW_CORRUPT,
		       "the caller's seal is stored as given, not made again");
		ok(row.n_headers == 5 && strcmp(row.headers[3].value, "s0") == 0,
		   "its headers as the seal had them");
		store_row_clear(&row);
	}
	store_close(st);
	queue_free(q);
}

struct thread_arg {
	struct queue *q;
	int index;
	int stored;
	int64_t ids[200];
};

static void *enqueue_thread(void *arg)
{
	struct thread_arg *t = arg;
	char pid[32];

	for (int i = 0; i < 200; i++) {
		struct body_buf b;
		struct store_receipt r;
		struct bridge_error err;

		snprintf(pid, sizeof(pid), "T%d-%d", t->index, i);
		item_make(&b, "http://127.0.0.1:9/t", "r", pid, "COMPLETED", pid);
		if (queue_enqueue(t->q, &b.it, &r, &err) == QUEUE_STORED)
			t->ids[t->stored++] = r.id;
	}
	return NULL;
}

static int cmp_id(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return x < y ? -1 : x > y;
}

static void test_threads(void)
{
	struct queue_config c;
	char path[128];
	struct queue *q;
	struct thread_arg t[4];
	pthread_t th[4];
	int64_t all[800];
	int n = 0, unique = 1;
	struct queue_stats st;

	config_for_test(&c, path, sizeof(path));
	q = queue_open(&c);
	if (!q)
		return;
	if (!pg_host[0])
		is_int(threads_named("store-ckpt"), 1,
		       "the store's checkpointer thread runs beside the writer");
	for (int i = 0; i < 4; i++) {
		memset(&t[i], 0, sizeof(t[i]));
		t[i].q = q;
		t[i].index = i;
		pthread_create(&th[i], NULL, enqueue_thread, &t[i]);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		for (int k = 0; k < t[i].stored; k++)
			all[n++] = t[i].ids[k];
	}
	is_int(n, 800, "4 threads x 200 synchronous enqueues all stored");
	qsort(all, (size_t)n, sizeof(all[0]), cmp_id);
	for (int i = 1; i < n; i++)
		unique &= all[i] != all[i - 1];
	ok(unique, "every receipt id distinct");
	queue_stats(q, &st);
	is_int(st.depth, 800, "depth 800");
	queue_free(q);
	if (!pg_host[0])
		is_int(threads_named("store-ckpt"), 0, "and stops with the queue");
}

/* ------------------------------------------------------------------ */
/* serve's log line of a queue event (the queue command itself is tested
 * through the binary, tests/test_queue.py) */

static char err_buf[8192];

static int read_file(const char *path, char *buf, size_t cap)
{
	FILE *f = fopen(path, "r");
	size_t n = 0;

	if (f) {
		n = fread(buf, 1, cap - 1, f);
		fclose(f);
	}
	buf[n] = '\0';
	return (int)n;
}

/* The log line of ev, read back into err_buf. */
static void log_capture(const struct queue_event *ev)
{
	char errp[128];
	int saved, fd;

	snprintf(errp, sizeof(errp), "%s/log.err", tmpdir);
	fflush(stderr);
	saved = dup(2);
	fd = open(errp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	dup2(fd, 2);
	queue_event_log(ev, NULL);
	dup2(saved, 2);
	close(saved);
	close(fd);
	read_file(errp, err_buf, sizeof(err_buf));
}

static void test_event_log(void)
{
	struct queue_event ev;

	memset(&ev, 0, sizeof(ev));
	ev.type = QUEUE_EV_ATTEMPT_FAILED;
	ev.id = 7;
	ev.route = "r";
	ev.endpoint = "http://x/";
	ev.delivery_id = "d-7";
	ev.participation_id = "P7";
	ev.state = "COMPLETED";
	ev.attempt = 2;
	ev.status = 503;
	ev.outcome = "response";
	ev.reason = "endpoint answered HTTP 503";
	ev.next_attempt_ms = 784111777000LL;
	log_capture(&ev);
	ok(strstr(err_buf, "\"event\":\"queue_attempt_failed\"") &&
		   strstr(err_buf, "\"level\":\"warn\"") && strstr(err_buf, "\"queue_id\":7") &&
		   strstr(err_buf, "\"upstream_status\":503") &&
		   strstr(err_buf, "\"next_attempt\":\"1994-11-06T08:49:37.000Z\"") &&
		   strstr(err_buf, "\"delivery_id\":\"d-7\""),
	   "event log line: JSON with the attempt's facts");
	printf("# %s", err_buf);

	memset(&ev, 0, sizeof(ev));
	ev.type = QUEUE_EV_STORE_WARNING;
	ev.route = ev.endpoint = ev.delivery_id = ev.participation_id = ev.state = "";
	ev.reason = "queue store q.db: a checkpoint of the WAL failed";
	log_capture(&ev);
	ok(strstr(err_buf, "\"event\":\"queue_store_warning\"") &&
		   strstr(err_buf, "\"level\":\"warn\"") &&
		   strstr(err_buf,
			  "\"error\":\"queue store q.db: a checkpoint of the WAL failed\""),
	   "the checkpointer's warning: its own event, at warning level");
	printf("# %s", err_buf);

	ev.type = QUEUE_EV_PRIORITY;
	ev.reason = "cannot lower the delivery thread's CPU priority (queue.delivery_nice = 5): "
		    "Operation not permitted";
	log_capture(&ev);
	ok(strstr(err_buf, "\"event\":\"queue_priority_unchanged\"") &&
		   strstr(err_buf, "\"level\":\"warn\"") &&
		   strstr(err_buf, "\"error\":\"cannot lower the delivery thread's CPU priority"),
	   "a priority left as it was: its own event, at warning level");
	printf("# %s", err_buf);
}

int main(void)
{
	char cmd[128];

	signal(SIGPIPE, SIG_IGN);
	if (getenv("BRIDGE_TEST_PG_URL")) {
		const char *h = strstr(getenv("BRIDGE_TEST_PG_URL"), "host=");

		snprintf(pg_host, sizeof(pg_host), "%s", h ? h + 5 : "");
		pg_host[strcspn(pg_host, "&")] = '\0';
		printf("# engine: PostgreSQL (socket in %s)\n", pg_host);
	}
	evthread_use_pthreads();
	base = event_base_new();
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_queue.XXXXXX");
	if (!base || !mkdtemp(tmpdir)) {
		perror("setup");
		return 1;
	}
	test_backoff();
	test_retry_after();
	test_config();
	test_deliver();
	test_retry_after_live();
	test_dead_letters();
	test_ordering();
	test_dedup_full();
	test_concurrency();
	test_stop_restart();
	test_kill();
	test_external();
	test_async();
	test_async_sealed();
	test_threads();
	test_event_log();
	event_base_free(base);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
	if (system(cmd) != 0)
		printf("# could not remove %s\n", tmpdir);
	return tap_done();
}
