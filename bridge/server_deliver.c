/*
 * server_deliver: a translated post on its way out: forwarded to the
 * route's endpoint, handed to the queue, or passed to the legacy importer,
 * and the sender answered with what came back.
 */
#include "server_types.h"

/* How a failed exchange with an endpoint is reported: status, outcome,
 * error code and a message naming `who` ("endpoint", "legacy endpoint").
 * msg goes to the sender and says nothing of the inside (no host, port or
 * library text); detail, for the log, adds the reason. */
static int describe_failure(const struct upstream_response *r, const char *who, int timeout_ms,
			    enum metrics_outcome *outcome, const char **code, char *msg, size_t cap,
			    char *detail, size_t dcap)
{
	int status = 502;

	switch (r->outcome) {
	case UPSTREAM_RESPONSE:
		*outcome = OUTCOME_UPSTREAM_STATUS;
		*code = "upstream_status";
		snprintf(msg, cap, "%s answered %d; the participation was not delivered", who,
			 r->status);
		break;
	case UPSTREAM_TIMEOUT:
		status = 504;
		*outcome = OUTCOME_UPSTREAM_TIMEOUT;
		*code = "upstream_timeout";
		snprintf(msg, cap,
			 "%s did not answer within %d ms; it may hold the participation: "
			 "outcome unknown; retry is safe, the delivery id is stable",
			 who, timeout_ms);
		break;
	case UPSTREAM_CONNECT_FAILED:
		*outcome = OUTCOME_UPSTREAM_UNREACHABLE;
		*code = "upstream_unreachable";
		snprintf(msg, cap, "cannot connect to the %s", who);
		break;
	case UPSTREAM_TLS_FAILED:
		*outcome = OUTCOME_UPSTREAM_TLS;
		*code = "upstream_tls";
		snprintf(msg, cap, "TLS with the %s failed", who);
		break;
	case UPSTREAM_TOO_LARGE:
		*outcome = OUTCOME_UPSTREAM_TOO_LARGE;
		*code = "upstream_too_large";
		snprintf(msg, cap, "the %s's response is too large", who);
		break;
	case UPSTREAM_CANCELLED:
		status = 503;
		*outcome = OUTCOME_SHUTTING_DOWN;
		*code = "shutting_down";
		snprintf(msg, cap,
			 "the bridge is shutting down and gave up waiting for %s, which may hold "
			 "the participation: outcome unknown; retry is safe, the delivery id is "
			 "stable",
			 who);
		break;
	case UPSTREAM_PROTOCOL_ERROR:
	default:
		*outcome = OUTCOME_UPSTREAM_PROTOCOL;
		*code = "upstream_protocol";
		snprintf(msg, cap, "the %s broke the HTTP exchange", who);
		break;
	}
	if (r->reason && r->reason[0])
		snprintf(detail, dcap, "%s: %s", msg, r->reason);
	else
		snprintf(detail, dcap, "%s", msg);
	return status;
}

/* One side's outcome, for the cutover's window and the console. */
static void cutover_note(struct exchange *x, enum cutover_side side, int ok)
{
	int primary = side == CUTOVER_V2 ? x->route->mode != ROUTE_DUAL || x->v2_primary
					 : !x->v2_primary;

	cutover_observe(x->srv->opt.cutover, x->route->name, side, primary, ok, clock_wall_ms());
}

static void legacy_takeover(struct exchange *x);

/* ,"upstream_status":DDD without printf (a status is three digits). */
static void add_upstream_status(struct evbuffer *b, int status)
{
	char t[] = ",\"upstream_status\":000";
	size_t n = sizeof(t) - 1;

	if (status < 100 || status > 999) {
		evbuffer_add_printf(b, ",\"upstream_status\":%d", status);
		return;
	}
	t[n - 3] = (char)('0' + status / 100);
	t[n - 2] = (char)('0' + status / 10 % 10);
	t[n - 1] = (char)('0' + status % 10);
	evbuffer_add(b, t, n);
}

static void upstream_done(const struct upstream_response *r, void *arg)
{
	struct exchange *x = arg;
	struct evbuffer *b;
	enum metrics_outcome outcome;
	int status;
	const char *code;
	char msg[600], detail[800];

	x->up = NULL;
	if (r->retried) {
		/* log_level = "debug": the pool's one retry on a new connection */
		struct log_line l;

		log_begin(&l, LOG_DEBUG, "retry");
		log_str(&l, "route", x->route->name);
		log_str(&l, "participation_id", x->participation_id);
		log_str(&l, "delivery_id", x->delivery_id);
		log_str(&l, "error", r->retried);
		log_end(&l);
	}
	metrics_upstream_latency(x->gen->metrics, x->route_index, r->elapsed_us);
	metrics_pool_connections(x->gen->metrics, x->route_index, x->srv->opt.worker,
				 (long)upstream_pool_connections(x->gen->pools[x->route_index]));
	if (r->outcome == UPSTREAM_RESPONSE && r->status >= 200 && r->status < 300) {
		outcome = OUTCOME_DELIVERED;
		status = 200;
		msg[0] = detail[0] = '\0';
	} else {
		status = describe_failure(r, "endpoint", x->route->timeout_ms, &outcome, &code, msg,
					  sizeof(msg), detail, sizeof(detail));
	}
	int takeover = 0;

	cutover_note(x, CUTOVER_V2, outcome == OUTCOME_DELIVERED);
	if (x->v2_primary &&
	    !cutover_primary_v2(x->srv->opt.cutover, x->route->name, x->participation_id, NULL)) {
		/* the ramp went down (kill switch, rollback) while v2 had the post:
		 * from now on v1 answers it */
		x->v2_primary = 0;
		takeover = 1;
	}
	if (x->route->mode == ROUTE_DUAL && !x->v2_primary) {
		/* the legacy importer answers the sender; v2 is only counted */
		struct log_line l;

		metrics_dual_v2(x->gen->metrics, x->route_index, outcome);
		log_begin(&l, outcome == OUTCOME_DELIVERED ? LOG_INFO : LOG_WARN, "dual_v2");
		log_str(&l, "route", x->route->name);
		log_str(&l, "participation_id", x->participation_id);
		log_str(&l, "delivery_id", x->delivery_id);
		if (r->outcome == UPSTREAM_RESPONSE)
			log_int(&l, "upstream_status", r->status);
		log_int(&l, "latency_ms", r->elapsed_ms);
		if (detail[0])
			log_str(&l, "error", detail);
		log_end(&l);
		if (takeover)
			legacy_takeover(x);
		else
			exchange_release(x);
		return;
	}
	if (outcome == OUTCOME_DELIVERED) {
		static const char head[] = "{\"status\":\"delivered\"";

		b = evbuffer_new();
		evbuffer_add(b, head, sizeof(head) - 1);
		server_json_field(b, "participation_id", x->participation_id);
		add_upstream_status(b, r->status);
		exchange_answer(x, 200, OUTCOME_DELIVERED, b, r->status, NULL);
		return;
	}
	b = server_error_body(code, msg);
	if (r->outcome == UPSTREAM_RESPONSE)
		add_upstream_status(b, r->status);
	exchange_answer(x, status, outcome, b, r->outcome == UPSTREAM_RESPONSE ? r->status : 0,
			detail);
}

/* The legacy (v1) importer's answer is the sender's answer: relayed as it
 * is when it answered, a JSON 502/504 when it did not. */
/* The legacy importer's answer, relayed to the sender as it is. */
static void legacy_relay(struct exchange *x, int status, const char *content_type, const char *body,
			 size_t body_len)
{
	struct evbuffer *b = evbuffer_new();
	struct answer_note n = { .outcome = status >= 200 && status < 300 ? OUTCOME_LEGACY_DELIVERED
									  : OUTCOME_UPSTREAM_STATUS,
				 .answered_by = "legacy_endpoint" };

	httpd_add_header(x->req, "Content-Type",
			 content_type ? content_type : "application/octet-stream");
	if (x->delivery_id[0])
		httpd_add_header(x->req, "X-Bridge-Delivery-Id", x->delivery_id);
	if (body_len)
		evbuffer_add(b, body, body_len);
	server_answer(x->req, x, status, status < 300 ? "OK" : "Legacy Answer", b, &n);
}

/* The legacy (v1) importer's answer is the sender's answer: relayed as it
 * is when it answered, a JSON 502/504 when it did not.  To a copy (v2
 * primary) the answer is kept, should v1 take over. */
static void legacy_done(const struct upstream_response *r, void *arg)
{
	struct exchange *x = arg;
	enum metrics_outcome outcome;
	const char *code;
	char msg[600], detail[800];
	int status;

	x->legacy_up = NULL;
	cutover_note(x, CUTOVER_V1,
		     r->outcome == UPSTREAM_RESPONSE && r->status >= 200 && r->status < 300);
	if (x->v2_primary) {
		if (!x->answered && r->outcome == UPSTREAM_RESPONSE &&
		    (x->held = calloc(1, sizeof(*x->held))) != NULL) {
			x->held->status = r->status;
			x->held->content_type = r->content_type ? strdup(r->content_type) : NULL;
			x->held->body = r->body_len ? malloc(r->body_len) : NULL;
			if (x->held->body)
				memcpy(x->held->body, r->body, r->body_len);
			x->held->len = x->held->body ? r->body_len : 0;
		}
		exchange_release(x);
		return;
	}
	if (r->outcome == UPSTREAM_RESPONSE) {
		legacy_relay(x, r->status, r->content_type, r->body, r->body_len);
		return;
	}
	status = describe_failure(r, "legacy endpoint", x->route->timeout_ms, &outcome, &code, msg,
				  sizeof(msg), detail, sizeof(detail));
	exchange_answer(x, status, outcome, server_error_body(code, msg), 0, detail);
}

/* Hop-by-hop and framing headers never go upstream. */
static int legacy_header_skipped(const char *name, const char *connection)
{
	static const char *const skip[] = { "Host",       "Content-Length", "Transfer-Encoding",
					    "Connection", "Keep-Alive",     "TE",
					    "Trailer",    "Upgrade",        "Expect",
					    NULL };

	for (const char *const *k = skip; *k; k++)
		if (strcasecmp(name, *k) == 0)
			return 1;
	if (strncasecmp(name, "Proxy-", 6) == 0)
		return 1;
	if (connection) { /* headers the Connection header names are hop-by-hop too */
		size_t n = strlen(name);

		for (const char *p = connection; (p = strcasestr(p, name)) != NULL; p += n)
			if ((p == connection || p[-1] == ',' || p[-1] == ' ') &&
			    (p[n] == '\0' || p[n] == ',' || p[n] == ' '))
				return 1;
	}
	return 0;
}

/* 1 for a header carrying a credential the bridge itself checked (listen.auth
 * or the route's auth): the legacy importer has its own, legacy_auth_header. */
static int inbound_credential(const struct exchange *x, const char *name)
{
	const struct access_auth *a[] = { &x->gen->cfg->auth, &x->route->auth };

	for (size_t i = 0; i < 2; i++) {
		if (a[i]->basic_user && strcasecmp(name, "Authorization") == 0)
			return 1;
		if (a[i]->header_name && strcasecmp(name, a[i]->header_name) == 0)
			return 1;
	}
	return 0;
}

/* Pass the original v1 post, byte for byte with all its end-to-end headers
 * (at most limits.max_headers: more were refused 431), without the
 * credentials meant for the bridge. */
int server_legacy_send(struct exchange *x, const char *body, size_t len)
{
	const struct httpd_request *in = x->req;
	const char *connection = httpd_find(in, "Connection");
	const struct bridge_route *r = x->route;
	struct upstream_header *h;
	size_t nh = 0;
	struct bridge_error err;
	int rc;

	h = calloc(in->n_headers + 1, sizeof(*h));
	if (!h) {
		exchange_fail(x, 503, OUTCOME_INTERNAL, "out_of_memory",
			      "the bridge is out of memory; retry later");
		return -1;
	}
	for (size_t i = 0; i < in->n_headers; i++) {
		const struct httpd_header *kv = &in->headers[i];

		if (!legacy_header_skipped(kv->name, connection) &&
		    !inbound_credential(x, kv->name) &&
		    !(r->legacy_auth_name && strcasecmp(kv->name, r->legacy_auth_name) == 0))
			h[nh++] = (struct upstream_header){ kv->name, kv->value };
	}
	if (r->legacy_auth_name)
		h[nh++] = (struct upstream_header){ r->legacy_auth_name, r->legacy_auth_value };
	exchange_track(x);
	bridge_error_clear(&err);
	rc = upstream_post(x->gen->legacy_pools[x->route_index], h, nh, body, len,
			   x->route->timeout_ms, legacy_done, x, &x->legacy_up, &err);
	free(h);
	if (rc < 0) {
		x->legacy_up = NULL;
		cutover_note(x, CUTOVER_V1, 0);
		if (x->v2_primary)
			return 0; /* a copy: v2 answers */
		exchange_answer(x, 502, OUTCOME_UPSTREAM_UNREACHABLE,
				server_error_body("upstream_unreachable",
						  "cannot connect to the legacy endpoint"),
				0, err.message);
		return -1;
	}
	return 0;
}

/* v1 answers a post v2 had (the ramp went down meanwhile): its copy's
 * answer when it came, else it is sent to v1 now. */
static void legacy_takeover(struct exchange *x)
{
	struct evbuffer *in = x->req->body;

	if (x->legacy_up)
		return; /* the copy's answer will be the sender's */
	if (x->held) {
		legacy_relay(x, x->held->status, x->held->content_type, x->held->body,
			     x->held->len);
		return;
	}
	server_legacy_send(x, (const char *)evbuffer_pullup(in, -1), x->bytes_in);
}

/* 503 queue_unavailable.  A store error may name the store's file: the
 * sender gets a message without it, the log the whole error. */
static void queue_refuse(struct exchange *x, const char *error)
{
	const char *pub = strchr(error, '/') ? "the queue store cannot take the participation "
					       "now; retry later"
					     : error;

	exchange_answer(x, 503, OUTCOME_INTERNAL, server_error_body("queue_unavailable", pub), 0,
			error);
}

/* Queued delivery: 202 once the row is on disk, 503 when it cannot be. */
static void enqueued(int result, const struct store_receipt *rcpt, const char *error, void *arg)
{
	struct exchange *x = arg;
	struct evbuffer *b;

	x->qp = NULL;
	if (result < 0) {
		queue_refuse(x, error);
		return;
	}
	b = evbuffer_new();
	evbuffer_add_printf(b, "{\"status\":\"%s\",\"queue_id\":%lld",
			    result == QUEUE_DUPLICATE ? "duplicate" : "queued",
			    (long long)rcpt->id);
	server_json_field(b, "participation_id", x->participation_id);
	if (result == QUEUE_DUPLICATE)
		snprintf(x->delivery_id, sizeof(x->delivery_id), "%.36s", rcpt->delivery_id);
	exchange_answer(x, 202, OUTCOME_QUEUED, b, 0, NULL);
}

static void enqueue_post(struct exchange *x, const struct mapping_result *m,
			 const struct upstream_header *h, size_t nh)
{
	const struct bridge_route *route = x->route;
	const struct bridge_config *c = x->srv->cfg;
	struct store_item it;
	struct bridge_error err;

	memset(&it, 0, sizeof(it));
	it.route = route->name;
	it.endpoint = route->endpoint;
	it.ca_file = route->ca_file ? route->ca_file : c->ca_file;
	it.timeout_ms = route->timeout_ms;
	it.delivery_id = x->delivery_id;
	it.participation_id = m->participation_id;
	it.state = m->state;
	it.body = m->body;
	it.len = m->len;
	it.headers = h;
	it.n_headers = nh;
	bridge_error_clear(&err);
	exchange_track(x);
	if (!x->srv->opt.queue) {
		exchange_fail(x, 503, OUTCOME_INTERNAL, "queue_unavailable",
			      "queued delivery is not running");
		return;
	}
	if (queue_enqueue_async(x->srv->opt.queue, x->srv->base, &it, enqueued, x, &x->qp, &err) <
	    0) {
		x->qp = NULL;
		queue_refuse(x, err.message);
	}
}

void server_forward(struct exchange *x, const struct mapping_result *m)
{
	const struct bridge_route *route = x->route;
	struct upstream_header h[DELIVERY_HEADERS_MAX];
	struct bridge_error err;
	int nh;

	if (route->n_secrets && !x->sig[0]) {
		exchange_fail(x, 500, OUTCOME_INTERNAL, "internal",
			      "could not compute the signature");
		return;
	}
	nh = delivery_headers(route, x->delivery_id, x->sig, h);
	if (x->traceparent[0])
		h[nh++] = (struct upstream_header){ "traceparent", x->traceparent };
	if (x->request_id[0])
		h[nh++] = (struct upstream_header){ "X-Request-Id", x->request_id };
	if (route->queued && route->mode == ROUTE_FORWARD) {
		enqueue_post(x, m, h, (size_t)nh);
		return;
	}

	exchange_track(x);
	bridge_error_clear(&err);
	if (upstream_post(x->gen->pools[x->route_index], h, (size_t)nh, m->body, m->len,
			  route->timeout_ms, upstream_done, x, &x->up, &err) < 0) {
		x->up = NULL;
		cutover_note(x, CUTOVER_V2, 0);
		if (route->mode == ROUTE_DUAL && !x->v2_primary)
			metrics_dual_v2(x->gen->metrics, x->route_index,
					OUTCOME_UPSTREAM_UNREACHABLE);
		else
			exchange_answer(x, 502, OUTCOME_UPSTREAM_UNREACHABLE,
					server_error_body("upstream_unreachable",
							  "cannot connect to the endpoint"),
					0, err.message);
	}
}
