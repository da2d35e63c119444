/*
 * replay: send v1 fixtures or captured traffic through a route's mapping to
 * its endpoint (or --to), signed and authenticated as `serve` does in
 * forward mode, and optionally compare every v2 output with an expected one.
 *
 * Inputs are read as a stream (one item in memory per in-flight request),
 * mapped on the event loop's thread and posted through one upstream pool
 * per target; an in-flight cap and a timer-driven rate limit pace the
 * posts.  Order: files in the order given, folders in name order, lines in
 * file order; with --concurrency 1 (the default) deliveries keep that order,
 * which matters to importers that upsert by participation id.
 */

#include "replay_types.h"

#define PROBLEMS_KEPT     1000 /* problems listed in the --json summary */
#define TALLY_MAX         64   /* distinct failure reasons counted by name */
#define CONCURRENCY_MAX   1024
#define RATE_MAX          1000000.0 /* --rate, posts a second */
#define PROGRESS_EVERY_MS 100


static const char usage_replay[] =
	"usage: webhook-bridge replay --config FILE [--route NAME] [--to URL]\n"
	"                             [--rate N[/s|/m]] [--concurrency N] [--expect DIR]\n"
	"                             [--dry-run] [--json] PATH...\n"
	"\n"
	"Sends v1 payloads through a route's mapping to its endpoint, signed and with\n"
	"the auth header exactly as `serve` does in forward mode.\n"
	"PATH: a v1 JSON file (NAME.json), a folder (its *.json, *.ndjson and *.jsonl\n"
	"files in name order), or an NDJSON file (*.ndjson, *.jsonl): one v1 body per\n"
	"line, or capture lines as written by the `record` setting (their \"body\";\n"
	"lines recorded as invalid are skipped).\n"
	"  --route NAME        use this route for every payload (default: the route\n"
	"                      `serve` would pick from the payload's website/campaign id)\n"
	"  --to URL            post here instead of the route's endpoint (which is\n"
	"                      used whatever the route's mode)\n"
	"  --rate N[/s|/m]     at most N posts per second (or per minute)\n"
	"  --concurrency N     posts in flight at once (default 1: keeps the order)\n"
	"  --expect DIR        compare each v2 with DIR/NAME.json (key order ignored);\n"
	"                      line L of NAME.ndjson is compared with DIR/NAME.L.json;\n"
	"                      DIR/NAME.error instead: the payload must be refused with\n"
	"                      a message containing its second line\n"
	"  --dry-run           map and compare only; send nothing\n"
	"  --json              the summary as one JSON object on stdout\n"
	"A progress bar is drawn on stderr when it is a terminal.\n"
	"exit: 0 every payload delivered (2xx) and matched, 1 anything failed or\n"
	"      mismatched, 2 usage or configuration error\n";


/* ---- small helpers --------------------------------------------------------- */


static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}


/* A rule file as `map` run from the working directory names it: relative
 * when it lies below it, so .error expectations quote one form. */
static const char *path_shown(const char *file)
{
	char cwd[4096];
	size_t n;

	if (file[0] != '/' || !getcwd(cwd, sizeof(cwd)))
		return file;
	n = strlen(cwd);
	if (n > 1 && strncmp(file, cwd, n) == 0 && file[n] == '/')
		return file + n + 1;
	return file;
}


/* ---- run state ------------------------------------------------------------- */


struct tally {
	char key[48];
	long count;
};


struct problem {
	char *input;
	char *outcome;
	char *message;
};


struct replay {
	const struct bridge_config *cfg;
	const struct bridge_route *only; /* --route */
	const char *to;
	struct upstream_url to_url;
	const char *expect_dir;
	int dry_run, json, progress;
	int concurrency;
	double interval; /* seconds between posts; 0 = no rate limit */
	double next_slot;

	struct feed feed;
	struct item ready; /* prepared, waiting for a rate slot */
	struct job *ready_job;
	int input_done, interrupted;

	struct event_base *base;
	struct evdns_base *dns;
	struct upstream_tls **tls;    /* per cfg->tls_files, plus one for --to */
	struct upstream_pool **pools; /* per route, or [0] for --to */
	struct event *pump_ev, *rate_ev, *progress_ev, *sigint_ev;
	int in_flight;
	char *warned; /* per route: "sent unsigned" said once */

	/* counters */
	size_t total, done, mapped, sent, delivered, failed, skipped;
	size_t refused_expected; /* refusals a NAME.error file calls for */
	size_t checked, matched, mismatched, missing;
	struct tally fails[TALLY_MAX], skips[TALLY_MAX];
	size_t n_fails, n_skips;
	struct problem *problems;
	size_t n_problems, cap_problems;
	double started;
	double last_draw;
	double first_draw; /* start of the run, for the rate and the ETA */
	int progress_drawn;
};


struct job {
	struct replay *rp;
	char *label;
	char *v2;
	size_t v2_len;
	const struct bridge_route *route;
	struct upstream_request *up;
};


/* Count by key; past TALLY_MAX - 1 distinct keys the rest go to "other". */
static void tally_add(struct tally *t, size_t *n, const char *key)
{
	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < *n; i++) {
			if (strcmp(t[i].key, key) == 0) {
				t[i].count++;
				return;
			}
		}
		if (*n < TALLY_MAX - 1 || strcmp(key, "other") == 0)
			break;
		key = "other";
	}
	snprintf(t[*n].key, sizeof(t[*n].key), "%s", key);
	t[(*n)++].count = 1;
}


static void progress_clear(struct replay *rp)
{
	if (rp->progress && rp->progress_drawn) {
		fputs("\r\033[K", stderr);
		rp->progress_drawn = 0;
	}
}


/* Columns of the terminal on stderr (80 when it cannot say). */
static int progress_columns(void)
{
	struct winsize ws;

	if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col >= 20)
		return ws.ws_col;
	return 80;
}


/* [####....] done/total  R/s  ETA Ns  sent … failed …, cut to the width of
 * the terminal: the counters first, the bar takes what is left. */
static void progress_draw(struct replay *rp, int force)
{
	double t = now_s(), rate;
	char tail[160], head[64], bar[256];
	int cols = progress_columns(), n, room, used;

	if (!rp->progress || (!force && t - rp->last_draw < PROGRESS_EVERY_MS / 1000.0))
		return;
	rp->last_draw = t;
	rate = t > rp->first_draw ? rp->done / (t - rp->first_draw) : 0;
	n = snprintf(tail, sizeof(tail), "  %.1f/s", rate);
	if (rp->total && rate > 0 && rp->done < rp->total)
		n += snprintf(tail + n, sizeof(tail) - (size_t)n, "  ETA %.0fs",
			      (double)(rp->total - rp->done) / rate);
	if (rp->dry_run)
		n += snprintf(tail + n, sizeof(tail) - (size_t)n, "  mapped %zu", rp->mapped);
	else
		n += snprintf(tail + n, sizeof(tail) - (size_t)n, "  sent %zu  2xx %zu", rp->sent,
			      rp->delivered);
	n += snprintf(tail + n, sizeof(tail) - (size_t)n, "  failed %zu", rp->failed);
	if (rp->expect_dir)
		snprintf(tail + n, sizeof(tail) - (size_t)n, "  mismatched %zu",
			 rp->mismatched + rp->missing);
	if (rp->total)
		snprintf(head, sizeof(head), " %zu/%zu", rp->done, rp->total);
	else
		snprintf(head, sizeof(head), "%zu done", rp->done);
	/* one column spare: writing the last one makes some terminals wrap */
	room = cols - 1 - (int)strlen(head) - (int)strlen(tail) - 2;
	used = (int)strlen(head);
	if (rp->total && room >= 10) {
		size_t w = (size_t)(room > 60 ? 60 : room), fill = rp->done * w / rp->total;

		if (fill > w)
			fill = w;
		memset(bar, '#', fill);
		memset(bar + fill, '.', w - fill);
		bar[w] = '\0';
		fprintf(stderr, "\r\033[K[%s]%s", bar, head);
		used += (int)w + 2;
	} else {
		fprintf(stderr, "\r\033[K%s", head);
	}
	fprintf(stderr, "%.*s", cols - 1 - used > 0 ? cols - 1 - used : 0, tail);
	rp->progress_drawn = 1;
}


/* One line on stderr per payload that went wrong, and one entry in the
 * --json summary's problem list. */
static void report(struct replay *rp, const char *input, const char *outcome, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));


static void report(struct replay *rp, const char *input, const char *outcome, const char *fmt, ...)
{
	va_list ap;
	char msg[1400];

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	progress_clear(rp);
	fprintf(stderr, "%s: %s: %s\n", input, outcome, msg);
	progress_draw(rp, 1);
	if (rp->n_problems < PROBLEMS_KEPT) {
		struct problem *t = grow_array(rp->problems, &rp->cap_problems, rp->n_problems + 1,
					       sizeof(*t), 16);

		if (t) {
			rp->problems = t;
			t[rp->n_problems].input = strdup(input);
			t[rp->n_problems].outcome = strdup(outcome);
			t[rp->n_problems].message = strdup(msg);
			rp->n_problems++;
		}
	}
}


static void count_failure(struct replay *rp, const char *input, const char *key, const char *msg)
{
	rp->failed++;
	tally_add(rp->fails, &rp->n_fails, key);
	report(rp, input, key, "%s", msg);
}


static void count_skip(struct replay *rp, const char *input, const char *key, const char *msg)
{
	rp->skipped++;
	tally_add(rp->skips, &rp->n_skips, key);
	report(rp, input, "skipped", "%s", msg);
}


static void count_expect(struct replay *rp, const char *input, enum expect_result r,
			 const char *msg)
{
	if (r == EXPECT_NONE)
		return;
	rp->checked++;
	if (r == EXPECT_MATCH) {
		rp->matched++;
	} else if (r == EXPECT_MISSING) {
		rp->missing++;
		report(rp, input, "no_expectation", "%s", msg);
	} else {
		rp->mismatched++;
		report(rp, input, "mismatch", "%s", msg);
	}
}


/* ---- mapping one payload ------------------------------------------------- */


/* A payload refused before sending: a failure, unless DIR/NAME.error
 * expects exactly this refusal. */
static void refuse(struct replay *rp, const struct item *it, const char *key, const char *msg)
{
	enum expect_result er = EXPECT_NONE;
	char emsg[8192];

	if (rp->expect_dir) {
		er = replay_expect_check(rp->expect_dir, it->name, NULL, 0, msg, emsg,
					 sizeof(emsg));
		count_expect(rp, it->label, er, emsg);
	}
	if (er == EXPECT_MATCH)
		rp->refused_expected++;
	else
		count_failure(rp, it->label, key, msg);
}


/* Route, map, compare.  Returns a job to send, or NULL when the payload is
 * finished here (refused, skipped, or --dry-run). */
static struct job *prepare(struct replay *rp, struct item *it)
{
	const struct bridge_config *c = rp->cfg;
	const struct bridge_route *route = rp->only;
	struct v1_limits lim;
	struct v1_doc *doc = NULL;
	struct bridge_error err;
	struct mapping_result m;
	struct job *j;
	char msg[1200], emsg[8192];

	if (it->problem) {
		if (it->skip)
			count_skip(rp, it->label, it->problem_key, it->problem);
		else
			refuse(rp, it, it->problem_key, it->problem);
		return NULL;
	}
	if (it->len > c->max_body) {
		snprintf(msg, sizeof(msg), "body of %zu bytes is over limits.max_body (%zu)",
			 it->len, c->max_body);
		refuse(rp, it, "too_large", msg);
		return NULL;
	}
	translate_limits(c, &lim);
	if (translate_parse(V1_ENC_JSON, it->body, it->len, &lim, &doc, &err) < 0) {
		refuse(rp, it, "invalid_v1", err.message);
		return NULL;
	}
	if (!route) {
		struct translate_ids ids;

		route = translate_route(c, doc, &ids);
		if (!route) {
			translate_no_route(&ids, msg, sizeof(msg));
			v1_doc_free(doc);
			if (c->unrouted_accept) /* the server answers 202 and drops it */
				count_skip(rp, it->label, "unrouted", msg);
			else
				refuse(rp, it, "no_route", msg);
			return NULL;
		}
	}
	if (translate_map(route->mapping, NULL, doc, 0, &m, NULL, NULL, &err) < 0) {
		v1_doc_free(doc);
		if (err.file)
			snprintf(msg, sizeof(msg), "%s (rule %s:%d)", err.message,
				 path_shown(err.file), err.line);
		else
			snprintf(msg, sizeof(msg), "%s", err.message);
		refuse(rp, it, "mapping_failed", msg);
		return NULL;
	}
	v1_doc_free(doc);
	rp->mapped++;
	if (rp->expect_dir)
		count_expect(rp, it->label,
			     replay_expect_check(rp->expect_dir, it->name, m.body, m.len, NULL,
						 emsg, sizeof(emsg)),
			     emsg);
	if (rp->dry_run) {
		mapping_result_clear(&m);
		return NULL;
	}
	if (!rp->to && !route->endpoint) {
		mapping_result_clear(&m);
		snprintf(msg, sizeof(msg), "route '%s' has no endpoint; give --to URL or --dry-run",
			 route->name);
		count_failure(rp, it->label, "no_endpoint", msg);
		return NULL;
	}
	j = calloc(1, sizeof(*j));
	if (!j || !(j->label = strdup(it->label))) {
		free(j);
		mapping_result_clear(&m);
		count_failure(rp, it->label, "internal", "out of memory");
		return NULL;
	}
	j->rp = rp;
	j->route = route;
	j->v2 = m.body; /* taken over from the result */
	j->v2_len = m.len;
	m.body = NULL;
	mapping_result_clear(&m);
	return j;
}


static void job_free(struct job *j)
{
	if (!j)
		return;
	free(j->label);
	free(j->v2);
	free(j);
}


/* ---- sending ------------------------------------------------------------- */


static void pump_soon(struct replay *rp)
{
	event_active(rp->pump_ev, EV_READ, 0);
}


static void finish_if_done(struct replay *rp)
{
	if ((rp->input_done || rp->interrupted) && rp->in_flight == 0 && !rp->ready_job)
		event_base_loopexit(rp->base, NULL);
}


static void job_done(const struct upstream_response *r, void *arg)
{
	struct job *j = arg;
	struct replay *rp = j->rp;
	char key[48], msg[700];

	j->up = NULL;
	rp->in_flight--;
	rp->done++;
	if (r->outcome == UPSTREAM_RESPONSE && r->status >= 200 && r->status < 300) {
		rp->delivered++;
	} else if (r->outcome == UPSTREAM_RESPONSE) {
		snprintf(key, sizeof(key), "status %d", r->status);
		snprintf(msg, sizeof(msg), "endpoint answered %d", r->status);
		count_failure(rp, j->label, key, msg);
	} else {
		snprintf(msg, sizeof(msg), "%s%s%s", upstream_outcome_name(r->outcome),
			 r->reason ? ": " : "", r->reason ? r->reason : "");
		count_failure(rp, j->label, upstream_outcome_name(r->outcome), msg);
	}
	job_free(j);
	progress_draw(rp, 0);
	pump_soon(rp);
	finish_if_done(rp);
}


static struct upstream_pool *pool_for(struct replay *rp, const struct bridge_route *route,
				      struct bridge_error *err)
{
	const struct bridge_config *c = rp->cfg;
	size_t idx = rp->to ? 0 : (size_t)(route - c->routes);
	const struct upstream_url *url = rp->to ? &rp->to_url : &route->url;
	struct upstream_tls *tls = NULL;

	if (rp->pools[idx])
		return rp->pools[idx];
	if (url->https) {
		size_t ti = rp->to ? c->n_tls_files : route->tls_index;
		const char *ca = rp->to ? c->ca_file
					: (c->tls_files[ti][0] ? c->tls_files[ti] : NULL);

		if (!rp->tls[ti] && upstream_tls_new(ca, &rp->tls[ti], err) < 0)
			return NULL;
		tls = rp->tls[ti];
	}
	rp->pools[idx] = upstream_pool_new(rp->base, rp->dns, url, tls, &c->upstream);
	if (!rp->pools[idx])
		bridge_error_set(err, "cannot create a connection pool");
	return rp->pools[idx];
}


/* Post one job: the same headers as bridge/server.c forward(). */
static void job_send(struct replay *rp, struct job *j)
{
	const struct bridge_route *route = j->route;
	struct upstream_header h[DELIVERY_HEADERS_MAX];
	int nh;
	char sig[SIGN_HEADER_MAX], did[DELIVERY_ID_LEN + 1];
	struct bridge_error err;
	struct upstream_pool *pool;

	bridge_error_clear(&err);
	pool = pool_for(rp, route, &err);
	if (!pool) {
		rp->done++;
		count_failure(rp, j->label, "internal", err.message);
		job_free(j);
		return;
	}
	if (delivery_digests(route, j->v2, j->v2_len, did, sig) < 0) {
		rp->done++;
		count_failure(rp, j->label, "internal", "could not compute the signature");
		job_free(j);
		return;
	}
	nh = delivery_headers(route, did, sig, h);
	if (!route->n_secrets && !rp->warned[route - rp->cfg->routes]) {
		rp->warned[route - rp->cfg->routes] = 1;
		progress_clear(rp);
		fprintf(stderr,
			"webhook-bridge replay: route '%s' has no secret: posts are sent "
			"unsigned\n",
			route->name);
	}

	rp->sent++;
	rp->in_flight++;
	if (upstream_post(pool, h, (size_t)nh, j->v2, j->v2_len, route->timeout_ms, job_done, j,
			  &j->up, &err) < 0) {
		rp->in_flight--;
		rp->done++;
		count_failure(rp, j->label, "connect_failed", err.message);
		job_free(j);
	}
}


static void pump(struct replay *rp)
{
	while (!rp->interrupted && rp->in_flight < rp->concurrency) {
		struct job *j = rp->ready_job;

		if (!j) {
			struct item it;

			if (rp->input_done)
				break;
			if (!replay_feed_next(&rp->feed, &it)) {
				rp->input_done = 1;
				break;
			}
			j = prepare(rp, &it);
			replay_item_clear(&it);
			if (!j) {
				rp->done++;
				progress_draw(rp, 0);
				continue;
			}
		}
		rp->ready_job = NULL;
		if (rp->interval > 0) {
			double t = now_s();

			if (t < rp->next_slot) {
				double wait = rp->next_slot - t;
				struct timeval tv = { (time_t)wait,
						      (suseconds_t)((wait - (double)(time_t)wait) *
								    1e6) };

				rp->ready_job = j;
				evtimer_add(rp->rate_ev, &tv);
				return;
			}
			/* no catching up in a burst after a stall */
			rp->next_slot = (rp->next_slot > t - rp->interval ? rp->next_slot : t) +
					rp->interval;
		}
		job_send(rp, j);
	}
	finish_if_done(rp);
}


static void pump_cb(evutil_socket_t fd, short what, void *arg)
{
	pump(arg);
}


static void progress_cb(evutil_socket_t fd, short what, void *arg)
{
	progress_draw(arg, 1);
}


static void sigint_cb(evutil_socket_t fd, short what, void *arg)
{
	struct replay *rp = arg;

	if (rp->interrupted) { /* second time: stop waiting for answers */
		event_base_loopbreak(rp->base);
		return;
	}
	rp->interrupted = 1;
	progress_clear(rp);
	fprintf(stderr,
		"webhook-bridge replay: interrupted; waiting for %d post(s) in flight "
		"(again to stop at once)\n",
		rp->in_flight);
	if (rp->ready_job) {
		job_free(rp->ready_job);
		rp->ready_job = NULL;
		evtimer_del(rp->rate_ev);
	}
	finish_if_done(rp);
}


static int run_loop(struct replay *rp)
{
	const struct bridge_config *c = rp->cfg;
	struct timeval every = { 0, PROGRESS_EVERY_MS * 1000 };

	rp->base = event_base_new();
	if (!rp->base)
		return -1;
	rp->dns = evdns_base_new(rp->base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
	if (!rp->dns) /* no resolv.conf: IP-literal endpoints still work */
		rp->dns = evdns_base_new(rp->base, 0);
	rp->tls = calloc(c->n_tls_files + 1, sizeof(*rp->tls));
	rp->pools = calloc(c->n_routes + 1, sizeof(*rp->pools));
	rp->pump_ev = event_new(rp->base, -1, 0, pump_cb, rp);
	rp->rate_ev = evtimer_new(rp->base, pump_cb, rp);
	rp->progress_ev = event_new(rp->base, -1, EV_PERSIST, progress_cb, rp);
	rp->sigint_ev = evsignal_new(rp->base, SIGINT, sigint_cb, rp);
	if (!rp->dns || !rp->tls || !rp->pools || !rp->pump_ev || !rp->rate_ev ||
	    !rp->progress_ev || !rp->sigint_ev)
		return -1;
	if (rp->progress)
		event_add(rp->progress_ev, &every);
	event_add(rp->sigint_ev, NULL);
	pump_soon(rp);
	event_base_dispatch(rp->base);
	return 0;
}


static void loop_free(struct replay *rp)
{
	const struct bridge_config *c = rp->cfg;

	job_free(rp->ready_job);
	rp->ready_job = NULL;
	/* requests still pending (after a second SIGINT) are cancelled here;
	 * their callbacks run now and count them as failed */
	for (size_t i = 0; rp->pools && i <= c->n_routes; i++)
		upstream_pool_free(rp->pools[i]);
	free(rp->pools);
	for (size_t i = 0; rp->tls && i <= c->n_tls_files; i++)
		upstream_tls_free(rp->tls[i]);
	free(rp->tls);
	if (rp->pump_ev)
		event_free(rp->pump_ev);
	if (rp->rate_ev)
		event_free(rp->rate_ev);
	if (rp->progress_ev)
		event_free(rp->progress_ev);
	if (rp->sigint_ev)
		event_free(rp->sigint_ev);
	if (rp->dns)
		evdns_base_free(rp->dns, 0);
	if (rp->base)
		event_base_free(rp->base);
}


/* ---- summary --------------------------------------------------------------- */


static void summary_text(struct replay *rp, double elapsed)
{
	const struct bridge_route *one = rp->only                 ? rp->only
					 : rp->cfg->n_routes == 1 ? &rp->cfg->routes[0]
								  : NULL;

	printf("replay: %zu payload(s)%s, %s", rp->done, rp->interrupted ? " (interrupted)" : "",
	       rp->dry_run ? "dry run: nothing sent" : "");
	if (!rp->dry_run) {
		if (rp->to)
			printf("to %s", rp->to);
		else if (one)
			printf("to route '%s' (%s)", one->name,
			       one->endpoint ? one->endpoint : "no endpoint");
		else
			printf("to each route's endpoint");
	}
	printf("\n");
	printf("  mapped      %zu\n", rp->mapped);
	if (!rp->dry_run) {
		printf("  sent        %zu\n", rp->sent);
		printf("  2xx         %zu\n", rp->delivered);
	}
	printf("  failed      %zu\n", rp->failed);
	for (size_t i = 0; i < rp->n_fails; i++)
		printf("    %-22s %ld\n", rp->fails[i].key, rp->fails[i].count);
	if (rp->skipped) {
		printf("  skipped     %zu\n", rp->skipped);
		for (size_t i = 0; i < rp->n_skips; i++)
			printf("    %-22s %ld\n", rp->skips[i].key, rp->skips[i].count);
	}
	if (rp->refused_expected)
		printf("  refused     %zu (as their .error file expects)\n", rp->refused_expected);
	if (rp->expect_dir)
		printf("  expected    %zu checked: %zu matched, %zu mismatched, %zu without "
		       "expected file\n",
		       rp->checked, rp->matched, rp->mismatched, rp->missing);
	printf("  elapsed     %.3f s", elapsed);
	if (!rp->dry_run && elapsed > 0 && rp->sent)
		printf(" (%.1f posts/s)", (double)rp->sent / elapsed);
	printf("\n");
}


static void g_kv_str(yajl_gen g, const char *k, const char *v)
{
	yajl_gen_string(g, (const unsigned char *)k, strlen(k));
	if (v)
		yajl_gen_string(g, (const unsigned char *)v, strlen(v));
	else
		yajl_gen_null(g);
}


static void g_kv_int(yajl_gen g, const char *k, long long v)
{
	yajl_gen_string(g, (const unsigned char *)k, strlen(k));
	yajl_gen_integer(g, v);
}


static void g_tally(yajl_gen g, const char *k, const struct tally *t, size_t n)
{
	yajl_gen_string(g, (const unsigned char *)k, strlen(k));
	yajl_gen_map_open(g);
	for (size_t i = 0; i < n; i++)
		g_kv_int(g, t[i].key, t[i].count);
	yajl_gen_map_close(g);
}


/* The --json summary.  Inputs come from the user's files, so the
 * generator is told to validate UTF-8; on failure a minimal object that
 * cannot fail is printed instead. */
static void summary_json(struct replay *rp, double elapsed)
{
	yajl_gen g = yajl_gen_alloc(NULL);
	const unsigned char *buf;
	size_t len;

	if (!g)
		goto minimal;
	yajl_gen_config(g, yajl_gen_validate_utf8, 1);
	yajl_gen_map_open(g);
	g_kv_int(g, "payloads", (long long)rp->done);
	yajl_gen_string(g, (const unsigned char *)"dry_run", 7);
	yajl_gen_bool(g, rp->dry_run);
	yajl_gen_string(g, (const unsigned char *)"interrupted", 11);
	yajl_gen_bool(g, rp->interrupted);
	g_kv_str(g, "to",
		 rp->to                           ? rp->to
		 : rp->only && rp->only->endpoint ? rp->only->endpoint
						  : NULL);
	g_kv_int(g, "mapped", (long long)rp->mapped);
	g_kv_int(g, "sent", (long long)rp->sent);
	g_kv_int(g, "delivered", (long long)rp->delivered);
	g_kv_int(g, "failed", (long long)rp->failed);
	g_tally(g, "failures", rp->fails, rp->n_fails);
	g_kv_int(g, "skipped", (long long)rp->skipped);
	g_tally(g, "skips", rp->skips, rp->n_skips);
	g_kv_int(g, "refused_as_expected", (long long)rp->refused_expected);
	if (rp->expect_dir) {
		yajl_gen_string(g, (const unsigned char *)"expect", 6);
		yajl_gen_map_open(g);
		g_kv_str(g, "dir", rp->expect_dir);
		g_kv_int(g, "checked", (long long)rp->checked);
		g_kv_int(g, "matched", (long long)rp->matched);
		g_kv_int(g, "mismatched", (long long)rp->mismatched);
		g_kv_int(g, "missing", (long long)rp->missing);
		yajl_gen_map_close(g);
	}
	g_kv_int(g, "elapsed_ms", (long long)(elapsed * 1000));
	yajl_gen_string(g, (const unsigned char *)"problems", 8);
	yajl_gen_array_open(g);
	for (size_t i = 0; i < rp->n_problems; i++) {
		yajl_gen_map_open(g);
		g_kv_str(g, "input", rp->problems[i].input);
		g_kv_str(g, "outcome", rp->problems[i].outcome);
		g_kv_str(g, "message", rp->problems[i].message);
		yajl_gen_map_close(g);
	}
	yajl_gen_array_close(g);
	if (yajl_gen_map_close(g) != yajl_gen_status_ok ||
	    yajl_gen_get_buf(g, &buf, &len) != yajl_gen_status_ok) {
		yajl_gen_free(g);
		goto minimal;
	}
	fwrite(buf, 1, len, stdout);
	fputc('\n', stdout);
	yajl_gen_free(g);
	return;
minimal:
	printf("{\"payloads\":%zu,\"sent\":%zu,\"delivered\":%zu,\"failed\":%zu,\"skipped\":%zu,"
	       "\"mismatched\":%zu,\"missing\":%zu,\"summary_error\":true}\n",
	       rp->done, rp->sent, rp->delivered, rp->failed, rp->skipped, rp->mismatched,
	       rp->missing);
}


/* ---- the command ----------------------------------------------------------- */


/* N or N.N (no sign, exponent, hex or space: strtod alone takes them),
 * then nothing, /s, /sec, /m or /min; at most RATE_MAX a second. */
static int parse_rate(const char *s, double *ret)
{
	const char *p = s;
	char *end;
	double n;

	if (*p < '0' || *p > '9')
		return -1;
	while (*p >= '0' && *p <= '9')
		p++;
	if (*p == '.') {
		if (p[1] < '0' || p[1] > '9')
			return -1;
		for (p++; *p >= '0' && *p <= '9'; p++)
			;
	}
	errno = 0;
	n = strtod(s, &end);
	if (errno || end != p || !(n > 0) || !(n <= RATE_MAX))
		return -1;
	if (*end == '\0' || strcmp(end, "/s") == 0 || strcmp(end, "/sec") == 0)
		*ret = n;
	else if (strcmp(end, "/m") == 0 || strcmp(end, "/min") == 0)
		*ret = n / 60.0;
	else
		return -1;
	return 0;
}


int cmd_replay(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "route", required_argument, NULL, 'r' },
		{ "to", required_argument, NULL, 't' },
		{ "rate", required_argument, NULL, 'R' },
		{ "concurrency", required_argument, NULL, 'n' },
		{ "expect", required_argument, NULL, 'e' },
		{ "dry-run", no_argument, NULL, 'd' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *config_path = NULL, *route_name = NULL;
	struct replay rp;
	struct bridge_config *cfg = NULL;
	struct diag d = { 0 };
	struct bridge_error err;
	struct stat st;
	double rate = 0, elapsed;
	int c, rc = 2;
	long long num;

	memset(&rp, 0, sizeof(rp));
	rp.concurrency = 1;
	optind = 0;
	while ((c = cli_getopt("replay", argc, argv, "c:h", opts)) != -1) {
		switch (c) {
		case 'c': config_path = optarg; break;
		case 'r': route_name = optarg; break;
		case 't': rp.to = optarg; break;
		case 'R':
			if (parse_rate(optarg, &rate) < 0)
				return cli_usage("replay",
						 "--rate must be a positive number of posts per "
						 "second (N or N/s) or minute (N/m), not '%s'",
						 optarg);
			break;
		case 'n':
			if (cli_int_parse(optarg, 1, CONCURRENCY_MAX, &num) < 0)
				return cli_usage("replay", "--concurrency must be 1..%d, not '%s'",
						 CONCURRENCY_MAX, optarg);
			rp.concurrency = (int)num;
			break;
		case 'e': rp.expect_dir = optarg; break;
		case 'd': rp.dry_run = 1; break;
		case 'j': rp.json = 1; break;
		case 'h': fputs(usage_replay, stdout); return 0;
		default: return 2;
		}
	}
	if (!config_path)
		return cli_usage("replay", "%s", "--config FILE is required");
	if (optind >= argc)
		return cli_usage("replay", "%s",
				 "give at least one PATH (fixture file, folder or NDJSON capture)");
	if (rp.expect_dir && (stat(rp.expect_dir, &st) < 0 || !S_ISDIR(st.st_mode)))
		return cli_usage("replay", "--expect %s: not a folder", rp.expect_dir);
	if (rp.to) {
		bridge_error_clear(&err);
		if (upstream_url_parse(rp.to, &rp.to_url, &err) < 0)
			return cli_usage("replay", "--to %s: %s", rp.to, err.message);
	}
	if (bridge_config_load(config_path, &cfg, &d) < 0) {
		fputs(d.text ? d.text : "", stderr);
		fprintf(stderr, "webhook-bridge replay: %s: %d error(s)\n", config_path, d.count);
		diag_reset(&d);
		return 2;
	}
	rp.cfg = cfg;
	if (route_name) {
		for (size_t i = 0; i < cfg->n_routes && !rp.only; i++)
			if (strcmp(cfg->routes[i].name, route_name) == 0)
				rp.only = &cfg->routes[i];
		if (!rp.only) {
			cli_usage("replay", "no route named '%s' in %s", route_name, config_path);
			goto out;
		}
	}
	if (!rp.dry_run && !rp.to) {
		int any = 0;

		for (size_t i = 0; i < cfg->n_routes; i++)
			any |= (!rp.only || rp.only == &cfg->routes[i]) && cfg->routes[i].endpoint;
		if (!any) {
			cli_usage("replay",
				  "%s has no endpoint to send to; give --to URL or --dry-run",
				  rp.only ? "the route" : "no route of the config");
			goto out;
		}
	}
	rp.warned = calloc(cfg->n_routes + 1, 1);
	rp.feed.max_body = cfg->max_body;
	rp.feed.max_line = cfg->max_body * 4 + 65536; /* escaping, headers of a capture */
	if (!rp.warned || replay_feed_expand(&rp.feed, argv + optind, argc - optind) < 0)
		goto out;
	rp.interval = rate > 0 ? 1.0 / rate : 0;
	rp.progress = isatty(STDERR_FILENO) &&
		      !(getenv("TERM") && strcmp(getenv("TERM"), "dumb") == 0);
	rp.first_draw = now_s();
	if (rp.progress)
		rp.total = replay_feed_count(&rp.feed);
	signal(SIGPIPE, SIG_IGN);
	rp.started = now_s();
	rp.next_slot = rp.started;

	if (rp.dry_run) {
		struct item it;

		while (replay_feed_next(&rp.feed, &it)) {
			prepare(&rp, &it); /* never returns a job in a dry run */
			replay_item_clear(&it);
			rp.done++;
			progress_draw(&rp, 0);
		}
	} else if (run_loop(&rp) < 0) {
		fprintf(stderr, "webhook-bridge replay: cannot set up the event loop\n");
		loop_free(&rp);
		goto out;
	}
	elapsed = now_s() - rp.started;
	if (!rp.dry_run)
		loop_free(&rp);
	progress_clear(&rp);
	if (rp.json)
		summary_json(&rp, elapsed);
	else
		summary_text(&rp, elapsed);
	fflush(stdout);
	rc = rp.failed || rp.mismatched || rp.missing || rp.interrupted ? 1 : 0;
out:
	replay_feed_free(&rp.feed);
	for (size_t i = 0; i < rp.n_problems; i++) {
		free(rp.problems[i].input);
		free(rp.problems[i].outcome);
		free(rp.problems[i].message);
	}
	free(rp.problems);
	free(rp.warned);
	bridge_config_free(cfg);
	return rc;
}
