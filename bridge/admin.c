#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <yajl/yajl_tree.h>

#include "bridge/listen.h"
#include "bridge/access.h"
#include "bridge/accesslog.h"
#include "bridge/admin.h"
#include "bridge/console.h"
#include "bridge/cutover.h"
#include "bridge/guard.h"
#include "bridge/log.h"
#include "bridge/metrics.h"
#include "bridge/queue.h"
#include "bridge/shadow.h"

struct admin {
	const struct admin_view *view;
	struct evhttp *http;
	struct evconnlistener *listener;
	SSL_CTX *tls;
	struct guard *guard;
	int port;
	struct timespec started; /* of the request being answered (one thread) */
	char csrf[33];           /* X-Bridge-Token that state-changing calls carry */
};

/* Every answer leaves through here.  libevent 2.1 writes a body even for
 * HEAD: a HEAD answer gets the length and no body. */
static void reply(struct admin *a, struct evhttp_request *req, int status, const char *type,
		  struct evbuffer *body)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	const char *phrase = status == 200 ? "OK" : status == 401 ? "Unauthorized" : "Error";

	struct accesslog_entry e = { .status = status, .bytes_out = evbuffer_get_length(body) };
	struct accesslog_request ar;

	guard_request_end(a->guard, req);
	accesslog_capture(&ar, req, NULL); /* before the answer, which may free req */
	evhttp_add_header(h, "Content-Type", type);
	evhttp_add_header(h, "Cache-Control", "no-store");
	if (evhttp_request_get_command(req) == EVHTTP_REQ_HEAD) {
		char len[32];

		snprintf(len, sizeof(len), "%zu", evbuffer_get_length(body));
		evhttp_add_header(h, "Content-Length", len);
		evhttp_send_reply(req, status, phrase, NULL);
	} else {
		evhttp_send_reply(req, status, phrase, body);
	}
	evbuffer_free(body);
	/* scrapes come every few seconds: their lines are for debugging */
	{
		struct timespec now;

		clock_gettime(CLOCK_MONOTONIC, &now);
		e.duration_us = (long long)(now.tv_sec - a->started.tv_sec) * 1000000 +
				(now.tv_nsec - a->started.tv_nsec) / 1000;
	}
	accesslog_write(&ar, &e, status >= 400 ? LOG_INFO : LOG_DEBUG);
}

/* {"error":code,"message":message}; both are the bridge's own text. */
static void reply_error(struct admin *a, struct evhttp_request *req, int status, const char *code,
			const char *message)
{
	struct evbuffer *b = evbuffer_new();
	char esc[512];

	json_escape(esc, sizeof(esc), message, strlen(message));
	evbuffer_add_printf(b, "{\"error\":\"%s\",\"message\":\"%s\"}\n", code, esc);
	reply(a, req, status, "application/json", b);
}

int admin_readiness(const struct admin_view *v, char *why, size_t cap)
{
	if (!v->cfg || !v->started) {
		snprintf(why, cap, "starting: the config is not in force yet");
		return 503;
	}
	if (v->draining) {
		snprintf(why, cap, "draining: the bridge is shutting down");
		return 503;
	}
	if (v->queue && queue_ready(v->queue, why, cap) < 0)
		return 503;
	return 200;
}

static void serve_readyz(struct admin *a, struct evhttp_request *req)
{
	const struct admin_view *v = a->view;
	char why[256];
	int status = admin_readiness(v, why, sizeof(why));
	struct evbuffer *b;

	if (status != 200) {
		reply_error(a, req, status, "not_ready", why);
		return;
	}
	b = evbuffer_new();
	evbuffer_add_printf(b, "{\"status\":\"ok\",\"routes\":%zu,\"port\":%d}\n", v->cfg->n_routes,
			    v->port);
	reply(a, req, 200, "application/json", b);
}

static void serve_summary(struct admin *a, struct evhttp_request *req)
{
	char *sum;
	struct evbuffer *b;

	if (!a->view->shadow) {
		reply_error(a, req, 404, "not_found",
			    "the shadow comparison is off: set dry_run.v2_path to enable it");
		return;
	}
	sum = shadow_summary_json(a->view->shadow, 10);
	if (!sum) {
		reply_error(a, req, 503, "out_of_memory",
			    "the bridge is out of memory; retry later");
		return;
	}
	b = evbuffer_new();
	evbuffer_add(b, sum, strlen(sum));
	evbuffer_add(b, "\n", 1);
	free(sum);
	reply(a, req, 200, "application/json", b);
}

/* ---- cutover -------------------------------------------------------------- */

static void reply_json(struct admin *a, struct evhttp_request *req, int status, char *json)
{
	struct evbuffer *b = evbuffer_new();

	if (!json) {
		evbuffer_free(b);
		reply_error(a, req, 503, "out_of_memory",
			    "the bridge is out of memory; retry later");
		return;
	}
	evbuffer_add(b, json, strlen(json));
	evbuffer_add(b, "\n", 1);
	free(json);
	reply(a, req, status, "application/json", b);
}

/* GET /cutover: every dual route's state, and the token POSTs carry. */
static void serve_cutover_state(struct admin *a, struct evhttp_request *req)
{
	char *state = cutover_state_json(a->view->cutover, a->view->cfg), *json = NULL;

	if (state && asprintf(&json, "{\"csrf_token\":\"%s\",%s", a->csrf, state + 1) < 0)
		json = NULL;
	free(state);
	reply_json(a, req, 200, json);
}

/* Why a state-changing call is refused as possibly cross-site, or NULL: a
 * browser page of another site can make the browser POST here with the
 * operator's credential; it cannot read the token (GET /cutover, no CORS)
 * nor hide Sec-Fetch-Site and Origin. */
static const char *cross_site(struct admin *a, struct evhttp_request *req)
{
	struct evkeyvalq *in = evhttp_request_get_input_headers(req);
	const char *site = evhttp_find_header(in, "Sec-Fetch-Site");
	const char *origin = evhttp_find_header(in, "Origin");
	const char *host = evhttp_find_header(in, "Host");
	const char *token = evhttp_find_header(in, "X-Bridge-Token");
	const char *type = evhttp_find_header(in, "Content-Type");

	if (site && strcmp(site, "same-origin") != 0 && strcmp(site, "none") != 0)
		return "a cross-site request (Sec-Fetch-Site) may not change the cutover";
	if (origin && strcmp(origin, "null") != 0) {
		const char *p = strstr(origin, "://");

		if (!p || !host || strcmp(p + 3, host) != 0)
			return "a request from another origin may not change the cutover";
	} else if (origin) {
		return "a request from another origin may not change the cutover";
	}
	if (!token || strlen(token) != strlen(a->csrf) ||
	    CRYPTO_memcmp(token, a->csrf, strlen(a->csrf)) != 0)
		return "the X-Bridge-Token header is missing or wrong (GET /cutover gives it as "
		       "csrf_token)";
	if (!type || strncasecmp(type, "application/json", 16) != 0)
		return "the body must be application/json";
	return NULL;
}

/* "who, from where" of an admin change. */
static void admin_who(const struct bridge_admin *conf, struct evhttp_request *req, const char *peer,
		      char *out, size_t cap)
{
	const char *ua = evhttp_find_header(evhttp_request_get_input_headers(req), "User-Agent");
	char esc[64];

	json_escape(esc, sizeof(esc), ua ? ua : "", ua ? strnlen(ua, 40) : 0);
	snprintf(out, cap, "%s (admin API from %s%s%s)",
		 conf->auth.basic_user ? conf->auth.basic_user : "admin", peer ? peer : "?",
		 ua ? ", " : "", ua ? esc : "");
}

/* POST /cutover/kill and POST /cutover/ROUTE {"ramp":N} | {"primary":"v1"|"v2"} |
 * {"kill":true}. */
static void serve_cutover_change(struct admin *a, struct evhttp_request *req, const char *path,
				 const char *peer)
{
	static const char *k_ramp[] = { "ramp", NULL }, *k_primary[] = { "primary", NULL },
			  *k_kill[] = { "kill", NULL };
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t len = evbuffer_get_length(in);
	struct cutover_change ch = { .ramp = -1 };
	const char *why = cross_site(a, req);
	char *route = NULL, *text, who[CUTOVER_BY_MAX], msg[600];
	struct bridge_error err;
	yajl_val root = NULL, v;
	int n, given = 0;

	if (why) {
		reply_error(a, req, 403, "cross_site", why);
		return;
	}
	if (strcmp(path, "/cutover/kill") == 0) {
		ch.kill = 1;
	} else {
		route = evhttp_uridecode(path + strlen("/cutover/"), 0, NULL);
		text = malloc(len + 1);
		if (!route || !text) {
			free(route);
			free(text);
			reply_error(a, req, 503, "out_of_memory", "out of memory; retry later");
			return;
		}
		evbuffer_copyout(in, text, len);
		text[len] = '\0';
		if (!memchr(text, '\0', len))
			root = yajl_tree_parse(text, NULL, 0);
		free(text);
		if (!root || !YAJL_IS_OBJECT(root)) {
			yajl_tree_free(root);
			free(route);
			reply_error(a, req, 400, "invalid_json",
				    "the body must be one JSON object: {\"ramp\":25}, "
				    "{\"primary\":\"v1\"} or {\"kill\":true}");
			return;
		}
		if ((v = yajl_tree_get(root, k_ramp, yajl_t_any)) != NULL) {
			given++;
			if (!YAJL_IS_INTEGER(v) || YAJL_GET_INTEGER(v) < 0 ||
			    YAJL_GET_INTEGER(v) > 100)
				given = 99;
			else
				ch.ramp = (int)YAJL_GET_INTEGER(v);
		}
		if ((v = yajl_tree_get(root, k_primary, yajl_t_any)) != NULL) {
			given++;
			const char *p = YAJL_IS_STRING(v) ? YAJL_GET_STRING(v) : NULL;

			if (p && strcmp(p, "v1") == 0)
				ch.ramp = 0;
			else if (p && strcmp(p, "v2") == 0)
				ch.ramp = 100;
			else
				given = 99;
		}
		if ((v = yajl_tree_get(root, k_kill, yajl_t_any)) != NULL) {
			given++;
			if (YAJL_IS_TRUE(v))
				ch.kill = 1;
			else
				given = 99;
		}
		if (YAJL_GET_OBJECT(root)->len != 1)
			given = 99;
		yajl_tree_free(root);
		if (given != 1) {
			free(route);
			reply_error(a, req, 400, "bad_request",
				    "give exactly one of \"ramp\" (0..100), \"primary\" "
				    "(\"v1\" or \"v2\") or \"kill\" (true)");
			return;
		}
		ch.route = route;
	}
	admin_who(&a->view->cfg->admin, req, peer, who, sizeof(who));
	ch.by = who;
	bridge_error_clear(&err);
	n = cutover_apply(a->view->cutover, &ch, &err);
	free(route);
	if (n < 0) {
		snprintf(msg, sizeof(msg), "%s", err.message);
		reply_error(a, req, strcmp(err.key, "route") == 0 ? 404 : 503,
			    strcmp(err.key, "route") == 0 ? "no_such_route" : "store_failed", msg);
		return;
	}
	{
		char *state = cutover_state_json(a->view->cutover, a->view->cfg), *json = NULL;

		if (state && asprintf(&json, "{\"changed\":%d,%s", n, state + 1) < 0)
			json = NULL;
		free(state);
		reply_json(a, req, 200, json);
	}
}

/* 1 when path is the cutover API's and the request was answered. */
static int serve_cutover(struct admin *a, struct evhttp_request *req, const char *path,
			 const char *peer)
{
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);

	if (!path || strncmp(path, "/cutover", 8) != 0 || (path[8] && path[8] != '/'))
		return 0;
	if (!a->view->cutover) {
		reply_error(a, req, 404, "not_found", "no cutover state");
		return 1;
	}
	if (!path[8]) {
		if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
			evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
					  "GET, HEAD");
			reply_error(a, req, 405, "method_not_allowed", "use GET");
		} else {
			serve_cutover_state(a, req);
		}
		return 1;
	}
	if (cmd != EVHTTP_REQ_POST) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "POST");
		reply_error(a, req, 405, "method_not_allowed", "a change is a POST");
		return 1;
	}
	serve_cutover_change(a, req, path, peer);
	return 1;
}

/* The console's page, style and script (no other site is ever named: the
 * policy keeps it so, and no page may frame its buttons), and its data.
 * 1 when answered. */
static int serve_console(struct admin *a, struct evhttp_request *req, const char *path)
{
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	struct evkeyvalq *h = evhttp_request_get_output_headers(req);
	const char *type, *body;
	struct evbuffer *b;

	if (!path)
		return 0;
	if (strcmp(path, "/console/data") == 0) {
		if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
			evhttp_add_header(h, "Allow", "GET, HEAD");
			reply_error(a, req, 405, "method_not_allowed", "use GET");
		} else {
			reply_json(a, req, 200, console_data_json(a->view));
		}
		return 1;
	}
	if (!console_asset(path, &type, &body))
		return 0;
	if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
		evhttp_add_header(h, "Allow", "GET, HEAD");
		reply_error(a, req, 405, "method_not_allowed", "use GET");
		return 1;
	}
	evhttp_add_header(
		h, "Content-Security-Policy",
		"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
		"connect-src 'self'; frame-ancestors 'none'; form-action 'none'; "
		"base-uri 'none'");
	evhttp_add_header(h, "X-Frame-Options", "DENY");
	evhttp_add_header(h, "X-Content-Type-Options", "nosniff");
	evhttp_add_header(h, "Referrer-Policy", "no-referrer");
	b = evbuffer_new();
	evbuffer_add_reference(b, body, strlen(body), NULL, NULL);
	reply(a, req, 200, type, b);
	return 1;
}

static void handle(struct evhttp_request *req, void *arg)
{
	struct admin *a = arg;
	const struct bridge_admin *conf = &a->view->cfg->admin;
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	enum evhttp_cmd_type cmd = evhttp_request_get_command(req);
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	char *peer = NULL;
	ev_uint16_t peer_port = 0;
	struct evbuffer *b;

	clock_gettime(CLOCK_MONOTONIC, &a->started);
	guard_request_begin(a->guard, req);
	if (evcon)
		evhttp_connection_get_peer(evcon, &peer, &peer_port);
	if (!access_list_allows(&conf->allow, peer)) {
		reply_error(a, req, 403, "forbidden",
			    "this source address may not use the admin port");
		return;
	}
	if (!access_auth_check(&conf->auth, req)) {
		if (conf->auth.basic_user) /* a challenge only for a scheme it names */
			evhttp_add_header(
				evhttp_request_get_output_headers(req), "WWW-Authenticate",
				"Basic realm=\"webhook-bridge admin\", charset=\"UTF-8\"");
		reply_error(a, req, 401, "unauthorized", "authentication required");
		return;
	}
	if (serve_cutover(a, req, path, peer) || serve_console(a, req, path))
		return;
	if (!path || (strcmp(path, "/metrics") != 0 && strcmp(path, "/readyz") != 0 &&
		      strcmp(path, "/healthz") != 0 && strcmp(path, "/dry-run/summary") != 0)) {
		reply_error(a, req, 404, "not_found",
			    "no such path; the admin port serves /, /metrics, /readyz, /healthz, "
			    "/dry-run/summary and /cutover");
		return;
	}
	if (cmd != EVHTTP_REQ_GET && cmd != EVHTTP_REQ_HEAD) {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET, HEAD");
		reply_error(a, req, 405, "method_not_allowed", "use GET");
		return;
	}
	if (strcmp(path, "/readyz") == 0) {
		serve_readyz(a, req);
	} else if (strcmp(path, "/dry-run/summary") == 0) {
		serve_summary(a, req);
	} else if (strcmp(path, "/metrics") == 0) {
		b = evbuffer_new();
		if (a->view->metrics) {
			if (a->view->shadow)
				metrics_shadow_waiting(a->view->metrics,
						       (long long)shadow_waiting(a->view->shadow));
			metrics_render(a->view->metrics, b);
		}
		if (a->view->queue)
			queue_metrics_render(a->view->queue, a->view->cfg, b);
		if (a->view->cutover)
			cutover_metrics_render(a->view->cutover, a->view->cfg, b);
		reply(a, req, 200, "text/plain; version=0.0.4", b);
	} else {
		b = evbuffer_new();
		evbuffer_add_printf(b, "{\"status\":\"ok\"}\n");
		reply(a, req, 200, "application/json", b);
	}
}

static int admin_bind(struct admin *a, struct event_base *base, const struct bridge_admin *c,
		      struct bridge_error *err)
{
	int fd, port, e;

	if (listen_socket_open_named("admin", c->address, c->port, 64, &fd, &port, err) < 0)
		return -1;
	/* backlog 0: the socket listens already */
	a->listener = evconnlistener_new(base, NULL, NULL,
					 LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_CLOSE_ON_FREE, 0, fd);
	if (!a->listener) {
		e = errno;
		close(fd);
		return bridge_error_set(err, "cannot listen on admin %s port %d: %s", c->address,
					c->port, strerror(e));
	}
	if (!evhttp_bind_listener(a->http, a->listener)) {
		evconnlistener_free(a->listener);
		a->listener = NULL;
		return bridge_error_set(err, "cannot attach the admin listener");
	}
	a->port = port;
	return 0;
}

static int admin_tls(struct admin *a, const struct bridge_admin *c, struct bridge_error *err)
{
	a->tls = listen_tls_new("admin.tls", c->cert_file, c->key_file, err);
	return a->tls ? 0 : -1;
}

int admin_new(struct event_base *base, const struct bridge_config *cfg,
	      const struct admin_view *view, struct admin **ret, struct bridge_error *err)
{
	struct admin *a = calloc(1, sizeof(*a));

	*ret = NULL;
	if (!a)
		return bridge_error_set(err, "out of memory");
	a->view = view;
	{
		unsigned char r[16];

		if (RAND_bytes(r, sizeof(r)) != 1) {
			admin_free(a);
			return bridge_error_set(err, "cannot draw the admin token");
		}
		for (size_t i = 0; i < sizeof(r); i++)
			snprintf(a->csrf + 2 * i, 3, "%02x", r[i]);
	}
	a->http = evhttp_new(base);
	if (!a->http) {
		admin_free(a);
		return bridge_error_set(err, "cannot create the admin HTTP server");
	}
	/* a scraper sends no body; the limits stay small */
	evhttp_set_max_body_size(a->http, 4096);
	evhttp_set_max_headers_size(a->http, (ev_ssize_t)cfg->max_header_bytes);
	evhttp_set_timeout(a->http, 10);
	evhttp_set_allowed_methods(a->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD |
						    EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE |
						    EVHTTP_REQ_OPTIONS | EVHTTP_REQ_PATCH);
	evhttp_set_default_content_type(a->http, "application/json");
	evhttp_set_gencb(a->http, handle, a);
	if (admin_bind(a, base, &cfg->admin, err) < 0 ||
	    (cfg->admin.cert_file && admin_tls(a, &cfg->admin, err) < 0)) {
		admin_free(a);
		return -1;
	}
	a->guard = guard_new(base, a->http, a->listener, cfg->request_deadline_ms, a->tls);
	if (!a->guard) {
		admin_free(a);
		return bridge_error_set(err, "out of memory");
	}
	guard_bind_thread(a->guard); /* the main thread: no worker's guard lives here */
	*ret = a;
	return 0;
}

int admin_port(const struct admin *a)
{
	return a->port;
}

void admin_free(struct admin *a)
{
	if (!a)
		return;
	if (a->http)
		evhttp_free(a->http); /* frees the bound listener and live connections */
	guard_free(a->guard);
	SSL_CTX_free(a->tls);
	free(a);
}
