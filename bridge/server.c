#include "server_types.h"

/* ---- answers ------------------------------------------------------------ */

/* ,"key": (when key) then the quoted, escaped value, added to b in one
 * piece: the answers' fields are their hot path. */
static void json_member(struct evbuffer *b, const char *key, const char *s, size_t n)
{
	char small[512];
	size_t k = key ? strlen(key) : 0, head = key ? k + 5 : 1, need; /* ,"key":" */
	char *out = small;

	if (head + 1 < sizeof(small)) {
		need = json_escape(small + head, sizeof(small) - head - 1, s, n);
		if (head + need + 1 >= sizeof(small))
			out = NULL;
	} else {
		need = json_escape(NULL, 0, s, n);
		out = NULL;
	}
	if (!out) {
		if ((out = malloc(head + need + 2)) == NULL)
			return;
		json_escape(out + head, need + 1, s, n);
	}
	if (key) {
		out[0] = ',';
		out[1] = '"';
		memcpy(out + 2, key, k);
		out[k + 2] = '"';
		out[k + 3] = ':';
	}
	out[head - 1] = '"';
	out[head + need] = '"';
	evbuffer_add(b, out, head + need + 1);
	if (out != small)
		free(out);
}

void server_json_str(struct evbuffer *b, const char *s, size_t n)
{
	json_member(b, NULL, s, n);
}

void server_json_field(struct evbuffer *b, const char *key, const char *value)
{
	if (value)
		json_member(b, key, value, strlen(value));
}

static const char *status_phrase(int status)
{
	switch (status) {
	case 200: return "OK";
	case 202: return "Accepted";
	case 400: return "Bad Request";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 413: return "Payload Too Large";
	case 415: return "Unsupported Media Type";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 431: return "Request Header Fields Too Large";
	case 422: return "Unprocessable Content";
	case 500: return "Internal Server Error";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	case 505: return "HTTP Version Not Supported";
	default: return "Error";
	}
}

/* seconds a 503 asks the sender to wait before retrying */
#define SERVER_RETRY_AFTER "5"

static __thread struct server *thread_server;        /* the same thread's server */
static __thread struct timeval thread_request_start; /* of the request being handled */
static __thread size_t thread_bytes_out;             /* body of the last answer sent */
/* the last answered request as the access log tells it, captured before
 * the answer (which frees the request) */
static __thread struct accesslog_request thread_access;

static long long us_since(const struct timeval *start);
static void access_plain(size_t bytes_in, int status, const char *error);
static void access_exchange(const struct exchange *x, int status, const struct answer_note *n);

static void access_capture(struct httpd_request *req, const struct server *s)
{
	struct accesslog_view v = { .peer = req->peer,
				    .peer_port = req->peer_port,
				    .forwarded_for = httpd_find(req, "X-Forwarded-For"),
				    .path = req->path,
				    .user_agent = httpd_find(req, "User-Agent"),
				    .method = req->method,
				    .major = req->major,
				    .minor = req->minor };

	accesslog_capture_view(&thread_access, &v, s ? &s->cfg->trusted_proxies : NULL);
}

/* Every answer leaves through here: sent, counted in the requests total
 * (route "" outside an exchange), written to the access log, and the
 * exchange x (NULL for an answer outside one) closed.  body is sent as it
 * is and freed.  A HEAD answer gets the length of the body it does not
 * carry. */
void server_answer(struct httpd_request *req, struct exchange *x, int status, const char *phrase,
		   struct evbuffer *body, const struct answer_note *n)
{
	struct server *s = thread_server;
	struct metrics *metrics = x ? x->gen->metrics : s ? s->gen->metrics : NULL;
	/* the request is gone once answered */
	size_t in = x ? x->bytes_in : evbuffer_get_length(req->body);

	thread_bytes_out = evbuffer_get_length(body);
	access_capture(req, s);
	if (req->method == HTTPD_HEAD) {
		char len[32];

		snprintf(len, sizeof(len), "%zu", evbuffer_get_length(body));
		httpd_add_header(req, "Content-Length", len);
	}
	httpd_send(req, status, phrase, body);
	evbuffer_free(body);
	if (n->outcome != ANSWER_UNCOUNTED) {
		metrics_request(metrics, x ? x->route_index : -1, n->outcome);
		if (x)
			metrics_request_duration(metrics, x->route_index, n->outcome,
						 us_since(&x->start));
	}
	if (!x) {
		access_plain(in, status, n->error);
		return;
	}
	access_exchange(x, status, n);
	x->answered = 1;
	exchange_release(x);
}

/* Close the JSON object in body and answer with it.  The reason phrase is
 * always one of ours, never client data (it goes onto the status line as
 * given). */
void server_answer_json(struct httpd_request *req, struct exchange *x, int status,
			struct evbuffer *body, const struct answer_note *n)
{
	httpd_add_header(req, "Content-Type", "application/json");
	httpd_add_header(req, "Cache-Control", "no-store");
	/* every 503 here is passing (stopping, queue busy, memory): say when */
	if (status == 503 && !httpd_out_find(req, "Retry-After"))
		httpd_add_header(req, "Retry-After", SERVER_RETRY_AFTER);
	evbuffer_add(body, "}\n", 2);
	server_answer(req, x, status, status_phrase(status), body, n);
}

/* Start an error body {"error":code,"message":msg; callers add fields. */
struct evbuffer *server_error_body(const char *code, const char *message)
{
	struct evbuffer *b = evbuffer_new();

	evbuffer_add_printf(b, "{\"error\":\"%s\",\"message\":", code);
	server_json_str(b, message, strlen(message));
	return b;
}

/* A refusal outside the webhook exchange (health, 404, 405, the v2 path
 * ...), counted under route "" as outcome. */
void server_refuse(struct httpd_request *req, int status, enum metrics_outcome outcome,
		   const char *code, const char *message)
{
	struct answer_note n = { .outcome = outcome, .error = message };

	server_answer_json(req, NULL, status, server_error_body(code, message), &n);
}

/* RFC 9110 section 11.6.1: a 401 carries a challenge; without one,
 * challenge-driven clients (curl --anyauth, Python's HTTPBasicAuthHandler)
 * never send the credential they hold.  Only Basic has a scheme to name. */
void server_auth_challenge(struct httpd_request *req, const struct access_auth *a)
{
	if (a->basic_user)
		httpd_add_header(req, "WWW-Authenticate",
				 "Basic realm=\"webhook-bridge\", charset=\"UTF-8\"");
}

int server_auth_ok(const struct access_auth *a, const struct httpd_request *req)
{
	if (!a || !a->enabled)
		return 1;
	return access_auth_check_parts(a, httpd_find(req, "Authorization"), req->query,
				       a->header_name ? httpd_find(req, a->header_name) : NULL);
}

static long long us_since(const struct timeval *start)
{
	struct timeval now;

	gettimeofday(&now, NULL);
	return (long long)(now.tv_sec - start->tv_sec) * 1000000 + (now.tv_usec - start->tv_usec);
}

static void generation_free(struct generation *g)
{
	if (!g)
		return;
	for (size_t i = 0; g->pools && i < g->cfg->n_routes; i++)
		upstream_pool_free(g->pools[i]);
	free(g->pools);
	for (size_t i = 0; g->legacy_pools && i < g->cfg->n_routes; i++)
		upstream_pool_free(g->legacy_pools[i]);
	free(g->legacy_pools);
	free(g->pool_seen);
	for (size_t i = 0; g->tls && i < g->cfg->n_tls_files; i++)
		upstream_tls_free(g->tls[i]);
	free(g->tls);
	if (g->release)
		g->release(g->release_arg);
	free(g);
}

static struct generation *generation_new(struct server *s, const struct bridge_config *cfg,
					 struct metrics *metrics, void (*release)(void *),
					 void *release_arg, struct bridge_error *err)
{
	struct generation *g = calloc(1, sizeof(*g));

	if (!g) {
		bridge_error_set(err, "out of memory");
		return NULL;
	}
	g->cfg = cfg;
	g->metrics = metrics;
	g->tls = calloc(cfg->n_tls_files + 1, sizeof(*g->tls));
	g->pools = calloc(cfg->n_routes + 1, sizeof(*g->pools));
	g->legacy_pools = calloc(cfg->n_routes + 1, sizeof(*g->legacy_pools));
	g->pool_seen = calloc(cfg->n_routes + 1, sizeof(*g->pool_seen));
	if (!g->tls || !g->pools || !g->legacy_pools || !g->pool_seen) {
		generation_free(g);
		bridge_error_set(err, "out of memory");
		return NULL;
	}
	for (size_t i = 0; i < cfg->n_tls_files; i++) {
		const char *ca = cfg->tls_files[i][0] ? cfg->tls_files[i] : NULL;

		if (upstream_tls_new(ca, &g->tls[i], err) < 0) {
			generation_free(g);
			return NULL;
		}
	}
	for (size_t i = 0; i < cfg->n_routes; i++) {
		const struct bridge_route *r = &cfg->routes[i];

		if (r->legacy_endpoint) {
			g->legacy_pools[i] = upstream_pool_new(
				s->base, s->dns, &r->legacy_url,
				r->legacy_url.https ? g->tls[r->legacy_tls_index] : NULL,
				&cfg->upstream);
			if (!g->legacy_pools[i]) {
				generation_free(g);
				bridge_error_set(err, "cannot create the legacy pool of route '%s'",
						 r->name);
				return NULL;
			}
		}
		if (!ROUTE_SENDS_V2(r))
			continue;
		g->pools[i] = upstream_pool_new(s->base, s->dns, &r->url,
						r->url.https ? g->tls[r->tls_index] : NULL,
						&cfg->upstream);
		if (!g->pools[i]) {
			generation_free(g);
			bridge_error_set(err, "cannot create the connection pool of route '%s'",
					 r->name);
			return NULL;
		}
	}
	/* set last: a failed generation must not release what it never held */
	g->release = release;
	g->release_arg = release_arg;
	return g;
}

/* Drop a retired generation once nothing waits on it. */
static void generation_reap(struct server *s)
{
	struct generation **pp = &s->retired;

	while (*pp) {
		struct generation *g = *pp;

		if (g->pending == 0) {
			*pp = g->next_retired;
			generation_free(g);
		} else {
			pp = &g->next_retired;
		}
	}
}

static void exchange_free(struct exchange *x)
{
	if (x->held) {
		free(x->held->content_type);
		free(x->held->body);
		free(x->held);
	}
	free(x->fail_rule);
	free(x->fail_key);
	free(x->participation_id);
	free(x);
}

static void pending_unlink(struct exchange *x)
{
	struct server *s = x->srv;

	LIST_REMOVE(x, link);
	s->n_pending--;
	x->gen->pending--;
	metrics_in_flight_add(x->gen->metrics, -1);
	if (x->gen->retired && x->gen->pending == 0)
		generation_reap(s);
}

static void drain_check(struct server *s);

/* Free the exchange once the sender has its answer and no upstream request
 * of it is outstanding (in dual mode the v2 delivery may end after the
 * legacy answer). */
void exchange_release(struct exchange *x)
{
	struct server *s = x->srv;

	if (!x->answered || x->up || x->legacy_up)
		return;
	if (x->queued) {
		pending_unlink(x);
		exchange_free(x);
		if (s->draining)
			drain_check(s);
		return;
	}
	exchange_free(x);
}

/* Put x on the pending list before its first upstream request. */
void exchange_track(struct exchange *x)
{
	struct server *s = x->srv;

	if (x->queued)
		return;
	x->queued = 1;
	LIST_INSERT_HEAD(&s->pending, x, link);
	s->n_pending++;
	x->gen->pending++;
	metrics_in_flight_add(x->gen->metrics, 1);
}

/* The one way a webhook post is answered: body is an open JSON object
 * (consumed), `error` the human reason for the log (NULL on success). */
void exchange_answer(struct exchange *x, int status, enum metrics_outcome outcome,
		     struct evbuffer *body, int upstream_status, const char *error)
{
	struct answer_note n = { .outcome = outcome,
				 .upstream_status = upstream_status,
				 .error = error };

	if (x->route)
		server_json_field(body, "route", x->route->name);
	if (x->delivery_id[0])
		server_json_field(body, "delivery_id", x->delivery_id);
	if (status >= 400)
		server_json_field(body, "participation_id", x->participation_id);
	server_answer_json(x->req, x, status, body, &n);
}

/* The access line of an exchange's answer.  Refusals a sender can repeat
 * at will are rate-limited; the legacy importer's answers are its own. */
static void access_exchange(const struct exchange *x, int status, const struct answer_note *n)
{
	unsigned long suppressed = 0;
	size_t up_out = n->answered_by                         ? x->bytes_in
			: x->route && ROUTE_SENDS_V2(x->route) ? x->bytes_out
							       : 0;

	if (!n->answered_by && status >= 400 && status < 500 &&
	    !log_ratelimit_allow(&x->srv->rejected_log, &suppressed))
		return;
	struct accesslog_entry e = { .status = status,
				     .bytes_in = x->bytes_in,
				     .bytes_out = thread_bytes_out,
				     .upstream_bytes_out = up_out,
				     .duration_us = us_since(&x->start),
				     .upstream_status = n->upstream_status,
				     .route = x->route ? x->route->name : NULL,
				     .participation_id = x->participation_id,
				     .delivery_id = x->delivery_id[0] ? x->delivery_id : NULL,
				     .traceparent = x->traceparent[0] ? x->traceparent : NULL,
				     .request_id = x->request_id[0] ? x->request_id : NULL,
				     .rule = x->fail_rule,
				     .key = x->fail_key,
				     .error = n->error,
				     .answered_by = n->answered_by,
				     .suppressed = suppressed };

	accesslog_write(&thread_access, &e, status >= 500 ? LOG_WARN : LOG_INFO);
}

void exchange_fail(struct exchange *x, int status, enum metrics_outcome outcome, const char *code,
		   const char *message)
{
	exchange_answer(x, status, outcome, server_error_body(code, message), 0, message);
}

/* ---- request checks ----------------------------------------------------- */

/* Our own framing checks, whatever the library let through (libevent 2.1
 * honours TE only when exactly "chunked" and takes the first of duplicate
 * Content-Lengths):
 * anything a front proxy might read differently is refused, and the
 * connection closed, so no request can hide in another's body.  Webhook
 * senders use Content-Length: Transfer-Encoding is refused outright. */
static const char *framing_problem(const struct httpd_request *req)
{
	int cl = 0, te = 0;

	if (req->major != 1 || (req->minor != 0 && req->minor != 1))
		return "HTTP version other than 1.0 or 1.1";
	if (!req->framing_bad)
		return NULL; /* what the loop below looks for, the reader saw none of */
	for (size_t i = 0; i < req->n_headers; i++) {
		const struct httpd_header *kv = &req->headers[i];

		if (!upstream_header_name_valid(kv->name))
			return "a header name that is not a token (space before the colon?)";
		if (strcasecmp(kv->name, "Content-Length") == 0) {
			cl++;
			if (!kv->value[0] || kv->value[strspn(kv->value, "0123456789")])
				return "a Content-Length that is not only digits";
		} else if (strcasecmp(kv->name, "Transfer-Encoding") == 0) {
			te++;
		}
	}
	if (cl > 1)
		return "more than one Content-Length header";
	if (te && cl)
		return "Transfer-Encoding together with Content-Length";
	if (te)
		return "Transfer-Encoding (send the body with a Content-Length)";
	return NULL;
}


/* ---- delivery ----------------------------------------------------------- */

void server_unmapped_json(struct evbuffer *b, const struct mapping_result *m)
{
	evbuffer_add(b, "[", 1);
	for (size_t i = 0; i < m->n_unmapped; i++) {
		if (i)
			evbuffer_add(b, ",", 1);
		server_json_str(b, m->unmapped[i], strlen(m->unmapped[i]));
	}
	evbuffer_add(b, "]", 1);
}


/* A capture that cannot be written is logged (rate-limited), never fatal. */
void server_log_capture_failure(struct server *s, const struct bridge_error *err)
{
	struct log_line l;
	unsigned long suppressed = 0;

	if (log_ratelimit_allow(&s->rejected_log, &suppressed)) {
		log_begin(&l, LOG_ERROR, "record_failed");
		log_str(&l, "message", err->message);
		log_end(&l);
	}
}

/* Capture the inbound post (redacted) for replay; a failure to write is
 * logged and never fails the post. */
static void record_post(struct exchange *x, const char *content_type, const char *body, size_t len)
{
	const struct httpd_request *in = x->req;
	struct record_header h[64];
	size_t n = 0;
	struct bridge_error err;

	for (size_t i = 0; i < in->n_headers && n < 64; i++)
		h[n++] = (struct record_header){ in->headers[i].name, in->headers[i].value };
	bridge_error_clear(&err);
	if (recorder_write(x->srv->opt.recorder, content_type, &x->start, h, n, body, len, &err) <
	    0)
		server_log_capture_failure(x->srv, &err);
}

/* log_level = "debug": why a post took its route. */
static void log_routing(const struct exchange *x, const char *website, const char *campaign)
{
	const struct bridge_route *r = x->route;
	struct log_line l;

	log_begin(&l, LOG_DEBUG, "routed");
	log_str(&l, "route", r->name);
	log_str(&l, "website_id", website);
	log_str(&l, "campaign_id", campaign);
	log_str(&l, "matched_by",
		r->n_campaign_ids  ? "campaign_id"
		: r->n_website_ids ? "website_id"
				   : "catch-all");
	log_str(&l, "mode", route_mode_name(r->mode));
	log_str(&l, "delivery", r->queued ? "queued" : "direct");
	log_end(&l);
}

/* The sender's trace context, kept when well-formed: a W3C traceparent
 * ("00-" 32 hex "-" 16 hex "-" 2 hex) and an X-Request-Id of printable
 * ASCII (at most 128 bytes); anything else is not passed on. */
static void trace_context(struct exchange *x, const struct httpd_request *in)
{
	const char *tp = httpd_find(in, "traceparent");
	const char *rid = httpd_find(in, "X-Request-Id");
	size_t n;

	if (tp && strlen(tp) == 55 && tp[2] == '-' && tp[35] == '-' && tp[52] == '-' &&
	    strspn(tp, "0123456789abcdef-") == 55)
		memcpy(x->traceparent, tp, 56);
	if (rid && (n = strlen(rid)) > 0 && n < sizeof(x->request_id)) {
		for (size_t i = 0; i < n; i++)
			if ((unsigned char)rid[i] < 0x21 || (unsigned char)rid[i] > 0x7e)
				return;
		memcpy(x->request_id, rid, n + 1);
	}
}

/* The charset parameter of a Content-Type, lower-cased, at most cap - 1
 * bytes ("" when there is none). */
static void content_charset(const char *ct, char *out, size_t cap)
{
	const char *p = ct ? strcasestr(ct, "charset=") : NULL;
	size_t n = 0;

	out[0] = '\0';
	if (!p)
		return;
	p += 8;
	if (*p == '"')
		p++;
	while (p[n] && p[n] != '"' && p[n] != ';' && p[n] != ' ' && p[n] != '\t' && n + 1 < cap) {
		out[n] = (char)tolower((unsigned char)p[n]);
		n++;
	}
	out[n] = '\0';
}

/* A body the parsers would misread is refused 415, never decoded as if it
 * were plain UTF-8: a compressed body (Content-Encoding other than
 * identity; the answer says Accept-Encoding: identity) and a charset other
 * than UTF-8 (or its subset US-ASCII).  Returns -1 when x was answered. */
static int body_encoding_refused(struct exchange *x, const struct httpd_request *in)
{
	const char *ce = httpd_find(in, "Content-Encoding");
	char charset[64], msg[200];

	if (ce && strcasecmp(ce, "identity") != 0) {
		snprintf(msg, sizeof(msg),
			 "Content-Encoding %.60s is not accepted: send the body uncompressed", ce);
		httpd_add_header(x->req, "Accept-Encoding", "identity");
		exchange_fail(x, 415, OUTCOME_INVALID_INPUT, "unsupported_encoding", msg);
		return -1;
	}
	content_charset(httpd_find(in, "Content-Type"), charset, sizeof(charset));
	if (charset[0] && strcmp(charset, "utf-8") != 0 && strcmp(charset, "utf8") != 0 &&
	    strcmp(charset, "us-ascii") != 0) {
		snprintf(msg, sizeof(msg),
			 "charset %s is not accepted: the bridge reads UTF-8 only; send "
			 "charset=utf-8",
			 charset);
		exchange_fail(x, 415, OUTCOME_INVALID_INPUT, "unsupported_charset", msg);
		return -1;
	}
	return 0;
}

/* The body is not NUL-terminated: scan at most n bytes. */
static int looks_like_json(const char *body, size_t n)
{
	size_t i = 0;

	while (i < n && (body[i] == ' ' || body[i] == '\t' || body[i] == '\r' || body[i] == '\n'))
		i++;
	return i < n && body[i] == '{';
}

/* A new exchange for req; NULL when out of memory (req answered 503). */
static struct exchange *exchange_new(struct server *s, struct httpd_request *req)
{
	struct exchange *x = calloc(1, sizeof(*x));

	if (!x) {
		server_refuse(req, 503, OUTCOME_INTERNAL, "out_of_memory",
			      "the bridge is out of memory; retry later");
		return NULL;
	}
	x->srv = s;
	x->gen = s->gen;
	x->req = req;
	x->route_index = -1;
	x->bytes_in = evbuffer_get_length(req->body);
	gettimeofday(&x->start, NULL);
	trace_context(x, req);
	return x;
}

/* The checks before the body is read: header count, listen.auth,
 * Content-Type (its parser into *kind), encodings, size.  -1 when x was
 * answered. */
static int webhook_refused(struct exchange *x, const struct httpd_request *in,
			   enum v1_encoding *kind)
{
	const struct bridge_config *c = x->gen->cfg;
	size_t n_headers = in->n_headers;
	char msg[200];

	if (n_headers > c->max_headers) {
		snprintf(msg, sizeof(msg), "%zu header lines, over the limit of %zu", n_headers,
			 c->max_headers);
		exchange_fail(x, 431, OUTCOME_INVALID_INPUT, "too_many_headers", msg);
		return -1;
	}
	if (!server_auth_ok(&c->auth, x->req)) {
		server_auth_challenge(x->req, &c->auth);
		exchange_fail(x, 401, OUTCOME_UNAUTHORIZED, "unauthorized",
			      "authentication required");
		return -1;
	}
	*kind = v1_encoding_of(httpd_find(in, "Content-Type"));
	if (*kind == V1_ENC_OTHER) {
		exchange_fail(x, 415, OUTCOME_INVALID_INPUT, "unsupported_media_type",
			      "Content-Type must be application/json or "
			      "application/x-www-form-urlencoded");
		return -1;
	}
	if (body_encoding_refused(x, in) < 0)
		return -1;
	if (x->bytes_in > c->max_body) {
		snprintf(msg, sizeof(msg), "body of %zu bytes is over the limit of %zu bytes",
			 x->bytes_in, c->max_body);
		exchange_fail(x, 413, OUTCOME_INVALID_INPUT, "body_too_large", msg);
		return -1;
	}
	return 0;
}

/* The body parsed as kind says into *doc; -1 when x was answered. */
static int webhook_parse(struct exchange *x, enum v1_encoding kind, const char *body,
			 struct v1_doc **doc)
{
	struct v1_limits lim;
	struct bridge_error err;
	struct evbuffer *b;

	if (kind == V1_ENC_FORM && body && looks_like_json(body, x->bytes_in)) {
		/* curl --data without -H sends JSON as a form: say so, not that a
		 * required key is absent */
		exchange_fail(x, 415, OUTCOME_INVALID_INPUT, "unsupported_media_type",
			      "the body looks like JSON but Content-Type says "
			      "application/x-www-form-urlencoded; send Content-Type: "
			      "application/json");
		return -1;
	}
	translate_limits(x->gen->cfg, &lim);
	if (translate_parse(kind, body, x->bytes_in, &lim, doc, &err) == 0)
		return 0;
	b = server_error_body(kind == V1_ENC_JSON ? "invalid_json" : "invalid_form", err.message);
	if (err.offset >= 0)
		evbuffer_add_printf(b, ",\"offset\":%ld", err.offset);
	exchange_answer(x, 400, OUTCOME_INVALID_INPUT, b, 0, err.message);
	return -1;
}

/* x->route for doc, and the route's own authentication; -1 when x was
 * answered (no route, or the sender may not post to it) and doc freed. */
static int webhook_route(struct exchange *x, struct v1_doc *doc)
{
	const struct bridge_config *c = x->gen->cfg;
	struct translate_ids ids;
	struct evbuffer *b;
	char msg[200];

	x->route = translate_route(c, doc, &ids);
	if (!x->route) {
		translate_no_route(&ids, msg, sizeof(msg));
		if (c->unrouted_accept) {
			b = evbuffer_new();
			evbuffer_add_printf(b, "{\"status\":\"dropped\",\"message\":");
			server_json_str(b, msg, strlen(msg));
		} else {
			b = server_error_body("no_route", msg);
		}
		server_json_field(b, "website_id", ids.website);
		server_json_field(b, "campaign_id", ids.campaign);
		v1_doc_free(doc);
		exchange_answer(x, c->unrouted_accept ? 202 : 422,
				c->unrouted_accept ? OUTCOME_DROPPED : OUTCOME_NO_ROUTE, b, 0, msg);
		return -1;
	}
	x->route_index = x->route - c->routes;
	log_routing(x, ids.website, ids.campaign);
	if (!server_auth_ok(&x->route->auth, x->req)) {
		v1_doc_free(doc);
		server_auth_challenge(x->req, &x->route->auth);
		x->route = NULL; /* say nothing about the route to an unauthenticated sender */
		x->route_index = -1;
		exchange_fail(x, 401, OUTCOME_UNAUTHORIZED, "unauthorized",
			      "authentication required");
		return -1;
	}
	return 0;
}

/* The route's rules refused the post: counted, reported, and answered 422,
 * or the post passed on to the legacy importer, which stays authoritative. */
static void webhook_mapping_failed(struct exchange *x, const struct bridge_error *err, int trace,
				   const char *body)
{
	char rule[600] = "", rule_full[600] = "";
	struct evbuffer *b;

	/* the sender and the metrics see the file relative to the config's
	 * folder, the log the whole path */
	if (err->file) {
		snprintf(rule, sizeof(rule), "%s:%d",
			 cfg_relative_path(x->gen->cfg->path, err->file), err->line);
		snprintf(rule_full, sizeof(rule_full), "%s:%d", err->file, err->line);
	}
	metrics_mapping_error(x->gen->metrics, x->route_index, rule);
	if (trace && x->srv->opt.report)
		server_report_failure(x, err, rule);
	if (x->route->legacy_endpoint) {
		/* the translation failure is logged, counted and reported */
		struct log_line l;

		log_begin(&l, LOG_WARN, "mapping_failed");
		log_str(&l, "route", x->route->name);
		log_str(&l, "rule", rule_full[0] ? rule_full : NULL);
		log_str(&l, "key", err->key[0] ? err->key : NULL);
		log_str(&l, "message", err->message);
		log_end(&l);
		server_legacy_send(x, body, x->bytes_in);
		return;
	}
	b = server_error_body("mapping_failed", err->message);
	x->fail_rule = rule_full[0] ? strdup(rule_full) : NULL;
	x->fail_key = err->key[0] ? strdup(err->key) : NULL;
	if (rule[0])
		server_json_field(b, "rule", rule);
	if (err->key[0])
		server_json_field(b, "key", err->key);
	exchange_answer(x, 422, OUTCOME_MAPPING_FAILED, b, 0, err->message);
}

/* The translated post m on its way, as the route's mode says. */
static void webhook_send(struct exchange *x, const struct mapping_result *m, const char *body)
{
	int legacy = x->route->legacy_endpoint != NULL;
	struct evbuffer *b;

	switch (x->route->mode) {
	case ROUTE_FORWARD: server_forward(x, m); break;
	case ROUTE_DUAL: {
		/* both importers at once (unless copy = false); the cutover says
		 * which one answers the sender */
		int copy = 1;

		x->v2_primary = cutover_primary_v2(x->srv->opt.cutover, x->route->name,
						   m->participation_id, &copy);
		if (x->v2_primary ? !copy || server_legacy_send(x, body, x->bytes_in) == 0
				  : server_legacy_send(x, body, x->bytes_in) == 0 && copy)
			server_forward(x, m);
		break;
	}
	case ROUTE_DRY_RUN:
	default:
		server_dry_run_print(x, m);
		if (legacy) {
			server_legacy_send(x, body, x->bytes_in);
			break;
		}
		b = evbuffer_new();
		evbuffer_add_printf(b, "{\"status\":\"dry-run\"");
		server_json_field(b, "participation_id", m->participation_id);
		evbuffer_add_printf(b, ",\"unmapped\":");
		server_unmapped_json(b, m);
		evbuffer_add_printf(b, ",\"v2\":");
		evbuffer_add(b, m->body, m->len);
		exchange_answer(x, 200, OUTCOME_DRY_RUN, b, 0, NULL);
		break;
	}
}

/* A v1 post: checked, parsed, routed, translated, and sent on its way. */
static void handle_webhook(struct server *s, struct httpd_request *req)
{
	struct exchange *x = exchange_new(s, req);
	struct v1_doc *doc = NULL;
	struct bridge_error err;
	struct mapping_result m;
	enum v1_encoding kind;
	const char *body;
	int rc, trace;

	if (!x || webhook_refused(x, req, &kind) < 0)
		return;
	body = (const char *)evbuffer_pullup(req->body, -1);
	if (s->opt.recorder)
		record_post(x, httpd_find(req, "Content-Type"), body ? body : "", x->bytes_in);
	if (webhook_parse(x, kind, body, &doc) < 0 || webhook_route(x, doc) < 0)
		return;
	trace = (s->opt.report || s->opt.shadow) && x->route->mode != ROUTE_FORWARD;
	/* signed now, beside the delivery id: both hash the same body */
	rc = translate_map(x->route->mapping, x->route, doc, trace ? MAPPING_TRACE : 0, &m,
			   x->delivery_id, x->route->mode != ROUTE_DRY_RUN ? x->sig : NULL, &err);
	v1_doc_free(doc);
	if (rc < 0) {
		webhook_mapping_failed(x, &err, trace, body);
		return;
	}
	x->participation_id = m.participation_id ? strdup(m.participation_id) : NULL;
	x->bytes_out = m.len;
	if (m.n_unmapped)
		server_report_unmapped(x, &m);
	if (trace)
		server_dry_run_record(x, &m);
	webhook_send(x, &m, body);
	mapping_result_clear(&m);
}

/* The access line of an answer outside an exchange (health, shadow path,
 * refusals before a post is read).  Refusals are rate-limited like the
 * exchanges' ones; /healthz is logged at debug (probes are many). */
static void access_plain(size_t bytes_in, int status, const char *error)
{
	struct server *s = thread_server;
	struct accesslog_entry e = { .status = status, .error = error };
	enum log_level level = status >= 500 ? LOG_WARN : LOG_INFO;

	if (!s)
		return;
	if (status >= 400 && status < 500 && !log_ratelimit_allow(&s->rejected_log, &e.suppressed))
		return;
	if (status < 400 && strcmp(thread_access.path, "/healthz") == 0)
		level = LOG_DEBUG;
	e.bytes_in = bytes_in;
	e.bytes_out = thread_bytes_out;
	e.duration_us = us_since(&thread_request_start);
	accesslog_write(&thread_access, &e, level);
}

/* ---- dispatch ------------------------------------------------------------ */

static void handle_healthz(struct server *s, struct httpd_request *req)
{
	struct evbuffer *b = evbuffer_new();

	(void)s;
	evbuffer_add_printf(b, "{\"status\":\"ok\"");
	server_answer_json(req, NULL, 200, b, &(struct answer_note){ .outcome = ANSWER_UNCOUNTED });
}

static const char *healthz_path(const struct server *s)
{
	(void)s;
	return "/healthz";
}

static const char *real_v2_path(const struct server *s)
{
	return s->opt.shadow ? s->cfg->shadow_path : NULL;
}

static const char *webhook_path(const struct server *s)
{
	return s->cfg->listen_path;
}

/* The paths the internet side answers: liveness for load balancers, the
 * real v2 posts of a dry run, the webhook.  Metrics, readiness and the
 * dry-run summary live on the admin listener.  First match wins. */
static const struct endpoint {
	const char *(*path)(const struct server *s); /* NULL: the endpoint is off */
	int methods;                                 /* HTTPD_* bits */
	const char *allow;                           /* a 405's Allow header */
	const char *use;                             /* a 405's message */
	int open; /* answered whatever listen.allow says (probes) */
	void (*handler)(struct server *s, struct httpd_request *req);
} endpoints[] = {
	{ healthz_path, HTTPD_GET | HTTPD_HEAD, "GET, HEAD", "use GET", 1, handle_healthz },
	{ real_v2_path, HTTPD_POST, "POST", "the v2 path accepts POST only", 0, server_real_v2 },
	{ webhook_path, HTTPD_POST, "POST", "the webhook path accepts POST only", 0,
	  handle_webhook },
};

static const struct endpoint *endpoint_find(const struct server *s, const char *path)
{
	for (size_t i = 0; i < sizeof(endpoints) / sizeof(endpoints[0]); i++) {
		const char *p = endpoints[i].path(s);

		if (p && strcmp(p, path) == 0)
			return &endpoints[i];
	}
	return NULL;
}

/* Our framing checks (framing_problem) failed: 400, or 505 for a version
 * we do not speak, and the connection closed. */
static int framing_refused(struct httpd_request *req)
{
	const char *problem = framing_problem(req);
	int version;

	if (!problem)
		return 0;
	version = req->major != 1 || (req->minor != 0 && req->minor != 1);
	/* the answer is in the request's version: one we do not speak gets 1.1 */
	req->major = 1;
	req->minor = 1;
	httpd_add_header(req, "Connection", "close");
	server_refuse(req, version ? 505 : 400, OUTCOME_INVALID_INPUT,
		      version ? "http_version" : "bad_framing", problem);
	return 1;
}

/* listen.allow: 403 to any other source address. */
static int source_refused(struct server *s, struct httpd_request *req)
{
	if (!s->cfg->allow.n)
		return 0;
	if (access_list_allows(&s->cfg->allow, req->peer))
		return 0;
	server_refuse(req, 403, OUTCOME_FORBIDDEN, "forbidden",
		      "this source address may not post here");
	return 1;
}

static void handle_request(struct httpd_request *req, void *arg)
{
	struct server *s = arg;
	const struct endpoint *e = endpoint_find(s, req->path);

	gettimeofday(&thread_request_start, NULL);
	if (framing_refused(req) || (!(e && e->open) && source_refused(s, req)))
		return;
	if (s->draining) {
		httpd_add_header(req, "Connection", "close");
		server_refuse(req, 503, OUTCOME_SHUTTING_DOWN, "shutting_down",
			      "the bridge is shutting down; retry later");
		return;
	}
	if (!e) {
		server_refuse(req, 404, OUTCOME_INVALID_INPUT, "not_found", "no such path");
		return;
	}
	if (!(req->method & e->methods)) {
		httpd_add_header(req, "Allow", e->allow);
		server_refuse(req, 405, OUTCOME_INVALID_INPUT, "method_not_allowed", e->use);
		return;
	}
	e->handler(s, req);
}

static int bind_listener(struct server *s, struct bridge_error *err)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int fd = fcntl(s->opt.listen_fd, F_DUPFD_CLOEXEC, 0);

	if (fd < 0)
		return bridge_error_set(err, "cannot share the listening socket: %s",
					strerror(errno));
	/* backlog 0: the socket already listens */
	s->listener = evconnlistener_new(s->base, NULL, NULL,
					 LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_CLOSE_ON_FREE, 0, fd);
	if (!s->listener) {
		close(fd);
		return bridge_error_set(err, "cannot watch the listening socket");
	}
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
		s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
							 : ((struct sockaddr_in *)&ss)->sin_port);
	return 0;
}

/* The reader's limits: a head over max_header_bytes, or a declared body
 * over the hard ceiling, is refused before it is read; a body within it is
 * read whole, so that the usual over-size post gets the handler's own 413
 * while memory stays bounded.  Incoming connections get an idle timeout
 * only when one is set. */
static void apply_http_limits(struct server *s, const struct bridge_config *cfg)
{
	struct httpd_limits lim = { .max_head = cfg->max_header_bytes,
				    .body = { cfg->max_body, cfg->max_body * 2 + 65536 },
				    .idle_timeout_ms = cfg->request_timeout_ms,
				    .deadline_ms = cfg->request_deadline_ms };

	if (s->httpd)
		httpd_set_limits(s->httpd, &lim);
}

static void gauge_refresh(evutil_socket_t fd, short what, void *arg)
{
	struct server *s = arg;
	struct generation *g = s->gen;

	for (size_t i = 0; i < s->cfg->n_routes; i++) {
		long open;
		struct log_line l;

		if (!g->pools[i])
			continue;
		open = (long)upstream_pool_connections(g->pools[i]);
		metrics_pool_connections(g->metrics, (long)i, s->opt.worker, open);
		if (open == g->pool_seen[i])
			continue;
		/* log_level = "debug": the pool opened or closed connections */
		log_begin(&l, LOG_DEBUG, "pool");
		log_str(&l, "route", s->cfg->routes[i].name);
		log_int(&l, "worker", s->opt.worker);
		log_int(&l, "connections", open);
		log_int(&l, "before", g->pool_seen[i]);
		log_end(&l);
		g->pool_seen[i] = open;
	}
	metrics_worker_connections(g->metrics, s->opt.worker, (long)httpd_connections(s->httpd));
}

/* TLS 1.2 suites of the HTTPS listener: forward-secret AEAD only (no CBC,
 * whose MAC-then-encrypt padding LUCKY13 attacks); TLS 1.3 suites are all
 * AEAD already. */
#define LISTEN_TLS12_CIPHERS "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:!aNULL"

/* Plain HTTP sent to the HTTPS listener: OpenSSL recognises a request line
 * where a ClientHello should be; answer it in plain HTTP (as nginx does), so
 * the sender learns why, instead of a silent close. */
static void tls_plain_http(const SSL *ssl, int where, int ret)
{
	static const char resp[] =
		"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
		"Connection: close\r\nContent-Length: 99\r\n\r\n"
		"{\"error\":\"plain_http_to_https\",\"message\":\"this port speaks HTTPS: "
		"send the "
		"request with https://\"}\n";
	ssize_t w;

	if (!(where & SSL_CB_EXIT) || ret > 0 ||
	    ERR_GET_REASON(ERR_peek_error()) != SSL_R_HTTP_REQUEST)
		return;
	w = send(SSL_get_fd(ssl), resp, sizeof(resp) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
	(void)w;
}

static int tls_pair_load(SSL_CTX *ctx, const struct bridge_config *cfg)
{
	return SSL_CTX_use_certificate_chain_file(ctx, cfg->listen_cert_file) == 1 &&
			       SSL_CTX_use_PrivateKey_file(ctx, cfg->listen_key_file,
							   SSL_FILETYPE_PEM) == 1 &&
			       SSL_CTX_check_private_key(ctx) == 1
		       ? 0
		       : -1;
}

/* A renewed certificate and key (ACME) take effect at SIGHUP for new
 * connections.  The pair is tried on a scratch context first, so a broken
 * or half-written renewal keeps the running one. */
static int listen_tls_reload(struct server *s, const struct bridge_config *cfg,
			     struct bridge_error *err)
{
	SSL_CTX *probe;
	char e[256] = "";
	int rc;

	if (!s->listen_tls || !cfg->listen_cert_file)
		return 0;
	probe = SSL_CTX_new(TLS_server_method());
	rc = probe && tls_pair_load(probe, cfg) == 0 ? tls_pair_load(s->listen_tls, cfg) : -1;
	if (rc < 0)
		ERR_error_string_n(ERR_get_error(), e, sizeof(e));
	SSL_CTX_free(probe);
	ERR_clear_error();
	if (rc < 0)
		return bridge_error_set(
			err,
			"listen.tls: cannot use %s / %s: %s; the running certificate "
			"stays",
			cfg->listen_cert_file, cfg->listen_key_file, e);
	return 0;
}

/* server_free for a server_new that fails after taking the caller's config:
 * the caller keeps its share, so the generation must not release it. */
static void server_abort(struct server *s)
{
	if (s->gen)
		s->gen->release = NULL;
	server_free(s);
}

int server_new(struct event_base *base, const struct bridge_config *cfg,
	       const struct server_options *opt, struct server **ret, struct bridge_error *err)
{
	struct server *s = calloc(1, sizeof(*s));

	*ret = NULL;
	if (!s)
		return bridge_error_set(err, "out of memory");
	s->base = base;
	s->cfg = cfg;
	s->opt = *opt;
	log_ratelimit_init(&s->rejected_log, 1000, 50);
	s->dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS);
	if (!s->dns) /* no resolv.conf: IP-literal endpoints still work */
		s->dns = evdns_base_new(base, 0);

	s->gen = generation_new(s, cfg, opt->metrics, opt->release, opt->release_arg, err);
	if (!s->gen) {
		server_free(s);
		return -1;
	}
	/* from here on a failure must not release what the caller still owns */
	if (bind_listener(s, err) < 0) {
		server_abort(s);
		return -1;
	}
	if (cfg->listen_cert_file) {
		s->listen_tls = SSL_CTX_new(TLS_server_method());
		if (!s->listen_tls ||
		    SSL_CTX_set_min_proto_version(s->listen_tls, TLS1_2_VERSION) != 1 ||
		    SSL_CTX_set_cipher_list(s->listen_tls, LISTEN_TLS12_CIPHERS) != 1 ||
		    tls_pair_load(s->listen_tls, cfg) < 0) {
			char e[256];

			ERR_error_string_n(ERR_get_error(), e, sizeof(e));
			server_abort(s);
			return bridge_error_set(err, "listen.tls: cannot use %s / %s: %s",
						cfg->listen_cert_file, cfg->listen_key_file, e);
		}
		/* no session tickets: their key would live as long as the process
		 * and break forward secrecy; sessions resume from the cache */
		SSL_CTX_set_options(s->listen_tls,
				    SSL_OP_NO_TICKET | SSL_OP_CIPHER_SERVER_PREFERENCE);
		SSL_CTX_set_info_callback(s->listen_tls, tls_plain_http);
	}
	s->httpd = httpd_new(base, s->listener, s->listen_tls, handle_request, s);
	if (s->httpd && opt->accept_share)
		httpd_set_share(s->httpd, opt->accept_share, opt->worker);
	s->guard = s->httpd ? guard_new(base, NULL, s->listener, cfg->request_deadline_ms,
					s->listen_tls)
			    : NULL;
	if (!s->guard) {
		server_abort(s);
		return bridge_error_set(err, "out of memory");
	}
	apply_http_limits(s, cfg);
	{
		struct timeval second = { 1, 0 };

		s->gauge_timer = event_new(base, -1, EV_PERSIST, gauge_refresh, s);
		if (s->gauge_timer)
			event_add(s->gauge_timer, &second);
	}
	*ret = s;
	return 0;
}

int server_reload(struct server *s, const struct bridge_config *cfg, struct metrics *metrics,
		  void (*release)(void *arg), void *release_arg, struct bridge_error *err)
{
	struct generation *g;

	if (listen_tls_reload(s, cfg, err) < 0)
		return -1;
	g = generation_new(s, cfg, metrics, release, release_arg, err);
	if (!g)
		return -1;
	s->gen->retired = 1;
	s->gen->next_retired = s->retired;
	s->retired = s->gen;
	s->gen = g;
	s->cfg = cfg;
	apply_http_limits(s, cfg);
	generation_reap(s);
	return 0;
}

void server_thread_init(struct server *s)
{
	guard_bind_thread(s->guard);
	thread_server = s;
}

int server_port(const struct server *s)
{
	return s->port;
}

/* ---- shutdown ----------------------------------------------------------- */

static void drain_finish(struct server *s)
{
	void (*done)(void *) = s->drain_done;

	s->drain_done = NULL;
	if (s->drain_timer) {
		event_free(s->drain_timer);
		s->drain_timer = NULL;
	}
	if (done)
		done(s->drain_arg);
}

static void drain_check(struct server *s)
{
	if (s->draining && s->n_pending == 0 && s->drain_done)
		drain_finish(s);
}

static void cancel_pending(struct server *s)
{
	while (!LIST_EMPTY(&s->pending)) {
		struct exchange *x = LIST_FIRST(&s->pending);
		int sent = x->up || x->legacy_up; /* the endpoint may have it */

		if (x->up)
			upstream_request_cancel(x->up);
		if (x->legacy_up)
			upstream_request_cancel(x->legacy_up);
		queue_enqueue_cancel(x->qp);
		x->qp = NULL;
		x->up = x->legacy_up = NULL;
		if (!x->answered)
			exchange_fail(x, 503, OUTCOME_SHUTTING_DOWN, "shutting_down",
				      sent ? "the bridge is shutting down and gave up waiting "
					     "for "
					     "the endpoint, which may hold the participation: "
					     "outcome unknown; retry is safe, the delivery id is "
					     "stable"
					   : "the bridge is shutting down; the participation was "
					     "not delivered, retry later");
		else
			exchange_release(x); /* dual: the v2 delivery was still running */
	}
}

static void drain_deadline(evutil_socket_t fd, short what, void *arg)
{
	struct server *s = arg;

	cancel_pending(s);
	drain_finish(s);
}

void server_drain(struct server *s, int deadline_ms, void (*done)(void *arg), void *arg)
{
	struct timeval tv = { deadline_ms / 1000, (deadline_ms % 1000) * 1000 };

	s->draining = 1;
	if (s->gauge_timer)
		event_del(s->gauge_timer);
	s->drain_done = done;
	s->drain_arg = arg;
	if (s->listener) {
		httpd_unlisten(s->httpd); /* frees the listener */
		guard_listener_gone(s->guard);
		s->listener = NULL;
	}
	if (s->n_pending == 0) {
		drain_finish(s);
		return;
	}
	s->drain_timer = evtimer_new(s->base, drain_deadline, s);
	evtimer_add(s->drain_timer, &tv);
}

void server_free(struct server *s)
{
	if (!s)
		return;
	cancel_pending(s);
	if (s->drain_timer)
		event_free(s->drain_timer);
	if (s->gauge_timer)
		event_free(s->gauge_timer);
	if (s->httpd)
		httpd_free(s->httpd); /* frees the listener and live connections */
	else if (s->listener)
		evconnlistener_free(s->listener);
	generation_free(s->gen);
	while (s->retired) {
		struct generation *g = s->retired;

		s->retired = g->next_retired;
		generation_free(g);
	}
	if (s->dns)
		evdns_base_free(s->dns, 0);
	guard_free(s->guard);
	SSL_CTX_free(s->listen_tls);
	free(s);
}
