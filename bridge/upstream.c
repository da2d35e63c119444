/*
 * upstream: outbound POSTs over a keep-alive pool of evhttp_connections.
 *
 * Ownership and the rules evhttp 2.1.12 imposes on us:
 *  - A request (struct upstream_request) lives from upstream_post() until its
 *    callback has returned (or it is cancelled).  It sits in exactly one of
 *    the pool's lists: waiting (FIFO), running (on a connection) or done
 *    (outcome known, callback not yet run).
 *  - User callbacks never run inside libevent's evhttp callbacks: outcomes are
 *    queued on `done` and delivered from the pool's own deliver event, so a
 *    callback may free the pool, post, or cancel without freeing an
 *    evhttp_connection from inside its own callback.
 *  - A connection that closed or failed is never reused: it moves to `dead`
 *    and is freed from the pool's reap event (never from inside its own
 *    callbacks).  Freeing the evhttp_connection frees its bufferevent, which
 *    frees the SSL (BEV_OPT_CLOSE_ON_FREE); we never SSL_free ourselves.
 *  - evhttp frees its request before calling our callbacks; the completion
 *    callback gets NULL on most failures but a request with status 0 when the
 *    TCP connect was refused (evhttp_connection_cb_cleanup path, which skips
 *    the error callback).  evhttp_cancel_request calls no completion callback;
 *    some versions still call the error callback with
 *    EVREQ_HTTP_REQUEST_CANCEL, which we ignore.
 *  - evhttp's own connect/read/write timeouts are set 1 s beyond our deadline
 *    while a request runs, and to idle_timeout_ms while the connection idles
 *    (evhttp then closes it and its close callback drops it from the pool).
 *  - Names are resolved here with evdns_getaddrinfo and evhttp is handed a
 *    numeric address: no blocking resolver in the loop, DNS errors are told
 *    apart from connect errors, and an IPv4 address is preferred over IPv6
 *    (evhttp would try only the first address returned).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/keyvalq_struct.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/util.h>

#include "bridge/upstream.h"

#define UPSTREAM_REASON_MAX       320
#define UPSTREAM_HEADER_NAME_MAX  256
#define UPSTREAM_HEADER_VALUE_MAX 8192
#define UPSTREAM_HEADERS_MAX      10016 /* limits.max_headers (10000) and the bridge's own */
/* evhttp's own timeouts trail our deadline by this much, so ours fires first */
#define UPSTREAM_EVHTTP_SLACK_MS  1000

struct upstream_tls {
	SSL_CTX *ctx;
};

enum conn_state {
	CONN_RESOLVING, /* evdns lookup pending, no evhttp_connection yet */
	CONN_BUSY,      /* one request on it: connecting, sending or receiving */
	CONN_IDLE,      /* keep-alive, in pool->idle */
	CONN_DEAD,      /* closed or failed, in pool->dead until reaped */
};

struct upstream_conn;

/* An evdns lookup outlives its connection when cancelled: evdns still calls
 * back later (with EVUTIL_EAI_CANCEL), so the callback argument is this small
 * record, orphaned (conn = NULL) by the connection and freed by the callback. */
struct upstream_lookup {
	struct upstream_conn *conn;
	struct evdns_getaddrinfo_request *handle;
};

struct upstream_conn {
	struct upstream_pool *pool;
	enum conn_state state;
	TAILQ_ENTRY(upstream_conn) link; /* idle, active or dead list */
	struct evhttp_connection *evcon;
	struct bufferevent *bev;
	struct evbuffer_cb_entry *in_cb;
	struct upstream_lookup *lookup;
	struct upstream_request *req; /* while RESOLVING or BUSY */
	char addr[256];               /* numeric address connected to */
	unsigned uses;                /* requests sent on it */
	int established;              /* connect (and TLS handshake) completed */
	int closed;                   /* evhttp reset it */
	uint64_t bytes_in;            /* response bytes received over its lifetime */
	int status_pending;           /* the current response's status line is not checked yet */
	int bad_status;               /* ... and it was not "HTTP/1.x DDD" */
};

enum req_state {
	REQ_WAITING,
	REQ_RUNNING,
	REQ_DONE,
};

struct upstream_request {
	struct upstream_pool *pool;
	enum req_state state;
	TAILQ_ENTRY(upstream_request) link; /* waiting, running or done list */
	struct upstream_conn *conn;
	struct evhttp_request *ereq;
	struct event *deadline;
	struct timespec started;
	int timeout_ms;
	upstream_done_cb cb;
	void *arg;
	char **names, **values;
	size_t n_headers;
	char *body;
	size_t len;
	int retried;                              /* the one retry on a fresh connection was used */
	char retried_reason[UPSTREAM_REASON_MAX]; /* why the first attempt failed */
	int fresh_only;                           /* the next attempt must open a new connection */
	int delivering;                           /* callback running: cancel is a no-op */
	/* current attempt */
	int got_error;
	enum evhttp_request_error error;
	int error_errno;
	uint64_t bytes_start;
	/* outcome */
	enum upstream_outcome outcome;
	int status;
	char reason[UPSTREAM_REASON_MAX];
	char *resp_body;
	size_t resp_len;
	char *retry_after;  /* the response's Retry-After value, or NULL */
	char *content_type; /* the response's Content-Type, or NULL */
	long elapsed_ms;
	long long elapsed_us;
};

TAILQ_HEAD(upstream_conn_list, upstream_conn);
TAILQ_HEAD(upstream_request_list, upstream_request);

struct upstream_pool {
	struct event_base *base;
	struct evdns_base *dns;
	struct upstream_url url;
	struct upstream_tls *tls;
	struct upstream_limits lim;
	int host_family; /* AF_INET/AF_INET6 for IP literals, 0 for names */
	struct upstream_conn_list idle, active, dead;
	size_t n_live; /* idle + active */
	struct upstream_request_list waiting, running, done;
	struct event *dispatch_ev, *reap_ev, *deliver_ev;
	int delivering; /* deliver_cb is running: it frees the pool if asked to */
	int freeing;
};

static void pool_dispatch_cb(evutil_socket_t fd, short what, void *arg);
static void request_send(struct upstream_request *r);

size_t upstream_pool_connections(const struct upstream_pool *p)
{
	return p ? p->n_live : 0;
}
static void conn_connect(struct upstream_conn *c);

/* ------------------------------------------------------------------ */
/* TLS context */

/* The earliest queued OpenSSL error: the root cause rather than the
 * "system lib" / "BIO lib" wrappers pushed after it. */
static void tls_error_text(char *buf, size_t cap)
{
	unsigned long e = ERR_peek_error();
	const char *r = e ? ERR_reason_error_string(e) : NULL;

	if (r)
		snprintf(buf, cap, "%s", r);
	else if (e)
		ERR_error_string_n(e, buf, cap);
	else
		snprintf(buf, cap, "unknown OpenSSL error");
	ERR_clear_error();
}

int upstream_tls_new(const char *ca_file, struct upstream_tls **ret, struct bridge_error *err)
{
	struct upstream_tls *t;
	char why[256];

	if (!ret)
		return bridge_error_set(err, "upstream_tls_new: no result pointer");
	*ret = NULL;
	ERR_clear_error();
	t = calloc(1, sizeof(*t));
	if (!t)
		return bridge_error_set(err, "out of memory");
	t->ctx = SSL_CTX_new(TLS_client_method());
	if (!t->ctx) {
		tls_error_text(why, sizeof(why));
		free(t);
		return bridge_error_set(err, "cannot create TLS context: %s", why);
	}
	if (!SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION)) {
		tls_error_text(why, sizeof(why));
		upstream_tls_free(t);
		return bridge_error_set(err, "cannot require TLS 1.2: %s", why);
	}
	SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER, NULL);
	/* OpenSSL 3 reports a peer closing without close_notify as an error that
	 * libevent 2.1's dirty-shutdown handling does not recognise; HTTP framing
	 * (Content-Length / chunked) detects truncation instead. */
	SSL_CTX_set_options(t->ctx, SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_RENEGOTIATION);
	if (ca_file) {
		FILE *f = fopen(ca_file, "r");

		if (!f) {
			int e = errno;

			upstream_tls_free(t);
			return bridge_error_set(err, "cannot open CA file '%s': %s", ca_file,
						strerror(e));
		}
		fclose(f);
		if (SSL_CTX_load_verify_locations(t->ctx, ca_file, NULL) != 1) {
			tls_error_text(why, sizeof(why));
			upstream_tls_free(t);
			return bridge_error_set(err, "cannot load CA file '%s': %s", ca_file, why);
		}
	} else if (SSL_CTX_set_default_verify_paths(t->ctx) != 1) {
		tls_error_text(why, sizeof(why));
		upstream_tls_free(t);
		return bridge_error_set(err, "cannot load the system trust store: %s", why);
	}
	*ret = t;
	return 0;
}

void upstream_tls_free(struct upstream_tls *t)
{
	if (!t)
		return;
	SSL_CTX_free(t->ctx);
	free(t);
}

/* ------------------------------------------------------------------ */
/* small helpers */

#define L(member)                   CFG_FIELD(struct upstream_limits, member)
#define L_INT(n, member, lo, hi, d) CFG_INT_ROW(n, struct upstream_limits, member, lo, hi, d)
const struct cfg_setting upstream_limits_settings[] = {
	L_INT("max_connections", max_connections, 1, 10000, 64),
	L_INT("max_response_body", max_response_body, 1024, 64LL << 20, 1 << 20),
	L_INT("idle_timeout_ms", idle_timeout_ms, 100, 3600000, 30000),
	{ .name = NULL },
};
#undef L
#undef L_INT

void upstream_limits_default(struct upstream_limits *l)
{
	if (!l)
		return;
	cfg_table_defaults(upstream_limits_settings, l);
	l->max_response_headers = 64 * 1024;
}

const char *upstream_outcome_name(enum upstream_outcome o)
{
	switch (o) {
	case UPSTREAM_RESPONSE: return "response";
	case UPSTREAM_TIMEOUT: return "timeout";
	case UPSTREAM_CONNECT_FAILED: return "connect_failed";
	case UPSTREAM_TLS_FAILED: return "tls_failed";
	case UPSTREAM_PROTOCOL_ERROR: return "protocol_error";
	case UPSTREAM_TOO_LARGE: return "too_large";
	case UPSTREAM_CANCELLED: return "cancelled";
	}
	return "unknown";
}

static long long us_since(const struct timespec *t0)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (long long)(now.tv_sec - t0->tv_sec) * 1000000 + (now.tv_nsec - t0->tv_nsec) / 1000;
}

static long ms_since(const struct timespec *t0)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return (long)(now.tv_sec - t0->tv_sec) * 1000 + (now.tv_nsec - t0->tv_nsec) / 1000000;
}

static void ms_to_tv(long ms, struct timeval *tv)
{
	if (ms < 0)
		ms = 0;
	tv->tv_sec = ms / 1000;
	tv->tv_usec = (ms % 1000) * 1000;
}

/* "addr:port" for messages, with brackets for IPv6. */
static void conn_peer(const struct upstream_conn *c, char *buf, size_t cap)
{
	const char *a = c->addr[0] ? c->addr : c->pool->url.host;

	if (strchr(a, ':'))
		snprintf(buf, cap, "[%s]:%d", a, c->pool->url.port);
	else
		snprintf(buf, cap, "%s:%d", a, c->pool->url.port);
}

/* ------------------------------------------------------------------ */
/* requests: finishing and delivery */

static void request_set_reason(struct upstream_request *r, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void request_set_reason(struct upstream_request *r, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(r->reason, sizeof(r->reason), fmt, ap);
	va_end(ap);
}

static struct upstream_request_list *request_list(struct upstream_request *r)
{
	switch (r->state) {
	case REQ_WAITING: return &r->pool->waiting;
	case REQ_RUNNING: return &r->pool->running;
	case REQ_DONE: return &r->pool->done;
	}
	return NULL;
}

/* Record the outcome (reason already set) and queue the callback. */
static void request_finish(struct upstream_request *r, enum upstream_outcome o, int status)
{
	struct upstream_pool *p = r->pool;

	if (r->state == REQ_DONE)
		return;
	TAILQ_REMOVE(request_list(r), r, link);
	r->state = REQ_DONE;
	r->outcome = o;
	r->status = o == UPSTREAM_RESPONSE ? status : 0;
	r->elapsed_us = us_since(&r->started);
	r->elapsed_ms = (long)(r->elapsed_us / 1000);
	evtimer_del(r->deadline);
	TAILQ_INSERT_TAIL(&p->done, r, link);
	event_active(p->deliver_ev, EV_TIMEOUT, 1);
}

static void request_free(struct upstream_request *r)
{
	if (r->deadline)
		event_free(r->deadline);
	free(r->names); /* the header names, values and body are in its block */
	free(r->resp_body);
	free(r->retry_after);
	free(r->content_type);
	free(r);
}

/* Run the callback of a request already removed from every list, then free it. */
static void request_call(struct upstream_request *r)
{
	struct upstream_response resp;

	memset(&resp, 0, sizeof(resp));
	resp.outcome = r->outcome;
	resp.status = r->status;
	resp.reason = r->reason;
	resp.body = r->resp_body;
	resp.body_len = r->resp_len;
	resp.retry_after = r->retry_after;
	resp.content_type = r->content_type;
	resp.retried = r->retried ? r->retried_reason : NULL;
	resp.elapsed_ms = r->elapsed_ms;
	resp.elapsed_us = r->elapsed_us;
	r->delivering = 1;
	r->cb(&resp, r->arg);
	request_free(r);
}

static void pool_deliver_cb(evutil_socket_t fd, short what, void *arg)
{
	struct upstream_pool *p = arg;
	struct upstream_request *r;

	p->delivering = 1;
	while (!p->freeing && (r = TAILQ_FIRST(&p->done)) != NULL) {
		TAILQ_REMOVE(&p->done, r, link);
		request_call(r);
	}
	p->delivering = 0;
	if (p->freeing)
		free(p); /* upstream_pool_free ran inside a callback and left us the struct */
}

/* ------------------------------------------------------------------ */
/* connections */

/* libevent reads the status code with atoi, so "200abc", "0200" or "+200"
 * would pass as 200: the raw status line is checked here, before evhttp
 * parses it (status-code = 3DIGIT, RFC 9112 section 4). */
static void status_line_check(struct upstream_conn *c, struct evbuffer *buf)
{
	char line[16];
	size_t len = evbuffer_get_length(buf);
	ev_ssize_t n;

	if (len < 13) {
		struct evbuffer_ptr eol = evbuffer_search_eol(buf, NULL, NULL, EVBUFFER_EOL_CRLF);

		if (eol.pos < 0)
			return; /* not complete yet */
	}
	c->status_pending = 0;
	n = evbuffer_copyout(buf, line, sizeof(line));
	if (n < 13 || memcmp(line, "HTTP/1.", 7) != 0 || (line[7] != '0' && line[7] != '1') ||
	    line[8] != ' ' || line[9] < '1' || line[9] > '5' || line[10] < '0' || line[10] > '9' ||
	    line[11] < '0' || line[11] > '9' || (line[12] != ' ' && line[12] != '\r'))
		c->bad_status = 1;
}

static void conn_input_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct upstream_conn *c = arg;

	c->bytes_in += info->n_added;
	if (c->status_pending && info->n_added)
		status_line_check(c, buf);
}

static void conn_orphan_lookup(struct upstream_conn *c)
{
	struct upstream_lookup *lk = c->lookup;

	if (!lk)
		return;
	c->lookup = NULL;
	lk->conn = NULL;
	if (lk->handle)
		evdns_getaddrinfo_cancel(lk->handle); /* its callback frees lk */
}

/* Take a connection out of service; it is freed later from reap_cb. */
static void conn_kill(struct upstream_conn *c)
{
	struct upstream_pool *p = c->pool;

	if (c->state == CONN_DEAD)
		return;
	if (c->state == CONN_IDLE)
		TAILQ_REMOVE(&p->idle, c, link);
	else
		TAILQ_REMOVE(&p->active, c, link);
	p->n_live--;
	c->state = CONN_DEAD;
	conn_orphan_lookup(c);
	TAILQ_INSERT_TAIL(&p->dead, c, link);
	event_active(p->reap_ev, EV_TIMEOUT, 1);
	if (!TAILQ_EMPTY(&p->waiting))
		event_active(p->dispatch_ev, EV_TIMEOUT, 1);
}

static void conn_free(struct upstream_conn *c)
{
	if (c->evcon) {
		if (c->in_cb)
			evbuffer_remove_cb_entry(bufferevent_get_input(c->bev), c->in_cb);
		evhttp_connection_set_closecb(c->evcon, NULL, NULL);
		evhttp_connection_free(c->evcon); /* frees bev, and the SSL with it */
	}
	free(c);
}

static void pool_reap_cb(evutil_socket_t fd, short what, void *arg)
{
	struct upstream_pool *p = arg;
	struct upstream_conn *c;

	while ((c = TAILQ_FIRST(&p->dead)) != NULL) {
		TAILQ_REMOVE(&p->dead, c, link);
		conn_free(c);
	}
}

/* evhttp calls this from evhttp_connection_reset_ only for a connection that
 * was established, i.e. the TCP connect and the TLS handshake completed. */
static void conn_close_cb(struct evhttp_connection *evcon, void *arg)
{
	struct upstream_conn *c = arg;

	c->established = 1;
	c->closed = 1;
	if (c->state == CONN_IDLE)
		conn_kill(c);
}

/* A finished request hands its connection back: to the idle list if evhttp
 * kept it open, else it is discarded. */
static void conn_release(struct upstream_conn *c)
{
	struct upstream_pool *p = c->pool;
	struct timeval tv;

	c->req = NULL;
	if (c->closed || c->state != CONN_BUSY) {
		conn_kill(c);
		return;
	}
	TAILQ_REMOVE(&p->active, c, link);
	c->state = CONN_IDLE;
	TAILQ_INSERT_HEAD(&p->idle, c, link);
	ms_to_tv(p->lim.idle_timeout_ms, &tv);
	evhttp_connection_set_timeout_tv(c->evcon, &tv);
	if (!TAILQ_EMPTY(&p->waiting))
		event_active(p->dispatch_ev, EV_TIMEOUT, 1);
}

static struct upstream_conn *conn_new(struct upstream_pool *p)
{
	struct upstream_conn *c = calloc(1, sizeof(*c));

	if (!c)
		return NULL;
	c->pool = p;
	c->state = CONN_RESOLVING;
	TAILQ_INSERT_TAIL(&p->active, c, link);
	p->n_live++;
	return c;
}

/* ------------------------------------------------------------------ */
/* failure classification */

static int errno_is_connect_failure(int e)
{
	switch (e) {
	case ECONNREFUSED:
	case ENETUNREACH:
	case EHOSTUNREACH:
	case ETIMEDOUT:
	case EADDRNOTAVAIL:
	case ENETDOWN:
	case EHOSTDOWN:
	case EACCES:
	case EPERM:
	case EAFNOSUPPORT:
	case EMFILE:
	case ENFILE:
	case ENOBUFS: return 1;
	}
	return 0;
}

/* The first (root-cause) OpenSSL error the bufferevent queued, as text.
 * bufferevent_get_openssl_error pops newest first; entries with no library
 * are SSL_get_error codes, not ERR codes. */
static int conn_tls_errors(struct upstream_conn *c, char *buf, size_t cap)
{
	unsigned long e, root = 0;
	const char *s;

	buf[0] = '\0';
	if (!c->bev || !c->pool->url.https)
		return 0;
	while ((e = bufferevent_get_openssl_error(c->bev)) != 0)
		if (ERR_GET_LIB(e) != 0)
			root = e;
	if (!root)
		return 0;
	s = ERR_reason_error_string(root);
	if (s)
		snprintf(buf, cap, "%s", s);
	else
		ERR_error_string_n(root, buf, cap);
	return 1;
}

/* The current attempt failed without a response.  `refused_path` is set when
 * evhttp reported it through the connect-cleanup path (completion callback
 * with a status-0 request, no error callback). */
static void attempt_failed(struct upstream_request *r, int refused_path, int saved_errno)
{
	struct upstream_conn *c = r->conn;
	struct upstream_pool *p = r->pool;
	enum upstream_outcome o = UPSTREAM_PROTOCOL_ERROR;
	uint64_t got = c->bytes_in - r->bytes_start;
	char peer[300], tls[200];
	int e = r->got_error ? r->error_errno : saved_errno;
	int has_tls = conn_tls_errors(c, tls, sizeof(tls));
	int retry = 0;

	conn_peer(c, peer, sizeof(peer));
	if (got > 0)
		c->established = 1;

	if (!c->established) {
		SSL *ssl = p->url.https && c->bev ? bufferevent_openssl_get_ssl(c->bev) : NULL;
		long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;

		if (vr != X509_V_OK) {
			o = UPSTREAM_TLS_FAILED;
			request_set_reason(r, "certificate verify failed: %s (%s)",
					   X509_verify_cert_error_string(vr), peer);
		} else if (has_tls) {
			o = UPSTREAM_TLS_FAILED;
			request_set_reason(r, "TLS handshake failed: %s (%s)", tls, peer);
		} else if (refused_path || e == ECONNREFUSED) {
			/* evhttp closed the socket before calling us: errno then
			 * holds ENOTCONN from its shutdown(), not the connect error. */
			o = UPSTREAM_CONNECT_FAILED;
			if (!refused_path || e == ECONNREFUSED || e == ENOTCONN || e == 0)
				request_set_reason(r, "connection refused (%s)", peer);
			else
				request_set_reason(r, "connect failed: %s (%s)", strerror(e), peer);
		} else if (errno_is_connect_failure(e)) {
			o = UPSTREAM_CONNECT_FAILED;
			request_set_reason(r, "connect failed: %s (%s)", strerror(e), peer);
		} else if (p->url.https) {
			o = UPSTREAM_TLS_FAILED;
			request_set_reason(
				r, "TLS handshake failed: connection closed by peer (%s)", peer);
		} else {
			o = UPSTREAM_CONNECT_FAILED;
			request_set_reason(r, "connect failed%s%s (%s)", e ? ": " : "",
					   e ? strerror(e) : "", peer);
		}
	} else if (r->got_error && r->error == EVREQ_HTTP_TIMEOUT) {
		o = UPSTREAM_TIMEOUT;
		request_set_reason(r, "upstream stopped sending or reading data (I/O timeout, %s)",
				   peer);
	} else if (r->got_error && r->error == EVREQ_HTTP_DATA_TOO_LONG) {
		o = UPSTREAM_TOO_LARGE;
		request_set_reason(r, "response body larger than %zu bytes",
				   p->lim.max_response_body);
	} else if (r->got_error && r->error == EVREQ_HTTP_INVALID_HEADER) {
		/* evhttp reports over-size headers as INVALID_HEADER too */
		if (got > p->lim.max_response_headers) {
			o = UPSTREAM_TOO_LARGE;
			request_set_reason(r, "response headers larger than %zu bytes",
					   p->lim.max_response_headers);
		} else {
			request_set_reason(r, "malformed response status line or headers (%s)",
					   peer);
		}
	} else {
		const char *how = e == ECONNRESET ? "reset" : "closed";

		if (got == 0) {
			request_set_reason(r, "connection %s before any response byte%s%s (%s)",
					   how, has_tls ? ": " : "", has_tls ? tls : "", peer);
			/* A keep-alive connection the server closed while we were
			 * sending: nothing was answered, so one retry on a new
			 * connection is safe enough (webhook bodies carry their
			 * participation id, so a receiver can spot a duplicate). */
			retry = c->uses > 1 && !r->retried;
		} else {
			request_set_reason(r,
					   "connection %s mid-response after %llu bytes%s%s (%s)",
					   how, (unsigned long long)got, has_tls ? ": " : "",
					   has_tls ? tls : "", peer);
		}
	}

	r->conn = NULL;
	r->ereq = NULL;
	c->req = NULL;
	conn_kill(c);
	if (retry) {
		TAILQ_REMOVE(&p->running, r, link);
		r->state = REQ_WAITING;
		r->retried = 1;
		snprintf(r->retried_reason, sizeof(r->retried_reason), "%s", r->reason);
		r->fresh_only = 1;
		TAILQ_INSERT_HEAD(&p->waiting, r, link);
		event_active(p->dispatch_ev, EV_TIMEOUT, 1);
		return;
	}
	request_finish(r, o, 0);
}

/* ------------------------------------------------------------------ */
/* evhttp callbacks */

static void ereq_error_cb(enum evhttp_request_error error, void *arg)
{
	struct upstream_request *r = arg;
	int e = EVUTIL_SOCKET_ERROR();

	if (error == EVREQ_HTTP_REQUEST_CANCEL)
		return; /* we cancelled it and already moved on */
	r->got_error = 1;
	r->error = error;
	r->error_errno = e;
}

static void response_reason(struct upstream_request *r, struct evhttp_request *ereq, int code)
{
	const char *line = evhttp_request_get_response_code_line(ereq);
	char clean[65]; /* the reason holds "HTTP DDD " and all of it */
	size_t i, n = 0;

	_Static_assert(UPSTREAM_REASON_MAX >= 9 + sizeof(clean), "reason too small");
	for (i = 0; line && line[i] && n < sizeof(clean) - 1; i++)
		if ((unsigned char)line[i] >= 0x20 && (unsigned char)line[i] < 0x7f)
			clean[n++] = line[i];
	/* "HTTP DDD[ phrase]" in pieces: this runs for every answer */
	memcpy(r->reason, "HTTP ", 5);
	r->reason[5] = (char)('0' + code / 100 % 10);
	r->reason[6] = (char)('0' + code / 10 % 10);
	r->reason[7] = (char)('0' + code % 10);
	r->reason[8] = ' ';
	memcpy(r->reason + 9, clean, n);
	r->reason[n ? 9 + n : 8] = '\0';
}

/* 1 when an answer carries Content-Length headers that disagree. */
static int content_length_ambiguous(struct evkeyvalq *h)
{
	const char *first = NULL;

	for (struct evkeyval *kv = h ? h->tqh_first : NULL; kv; kv = kv->next.tqe_next) {
		if (strcasecmp(kv->key, "Content-Length") != 0)
			continue;
		if (!first)
			first = kv->value;
		else if (strcmp(first, kv->value) != 0)
			return 1;
	}
	return 0;
}

static void ereq_done_cb(struct evhttp_request *ereq, void *arg)
{
	struct upstream_request *r = arg;
	int saved_errno = EVUTIL_SOCKET_ERROR();
	struct upstream_conn *c = r->conn;
	int code = ereq ? evhttp_request_get_response_code(ereq) : 0;

	if (r->state != REQ_RUNNING || !c)
		return; /* not ours any more; cannot happen while evhttp keeps its contract */
	r->ereq = NULL;
	if (code > 0 && (c->bad_status || code < 100 || code > 599)) {
		c->closed = 1; /* a peer that garbles its status line is not reused */
		r->conn = NULL;
		conn_release(c);
		request_set_reason(r, "malformed status line (status code %d as libevent read it)",
				   code);
		request_finish(r, UPSTREAM_PROTOCOL_ERROR, 0);
		return;
	}
	if (code > 0) {
		struct evbuffer *in = evhttp_request_get_input_buffer(ereq);
		size_t n = in ? evbuffer_get_length(in) : 0;
		const char *ra = evhttp_find_header(evhttp_request_get_input_headers(ereq),
						    "Retry-After");
		const char *ct = evhttp_find_header(evhttp_request_get_input_headers(ereq),
						    "Content-Type");

		c->established = 1;
		r->conn = NULL;
		if (content_length_ambiguous(evhttp_request_get_input_headers(ereq))) {
			/* evhttp framed the body by the first one: where this
			 * answer ends, and so whether it was ours, is unknown */
			c->closed = 1;
			conn_release(c);
			request_set_reason(r, "two different Content-Length headers in the answer");
			request_finish(r, UPSTREAM_PROTOCOL_ERROR, 0);
			return;
		}
		conn_release(c);
		if (n > r->pool->lim.max_response_body) {
			request_set_reason(r, "response body larger than %zu bytes",
					   r->pool->lim.max_response_body);
			request_finish(r, UPSTREAM_TOO_LARGE, 0);
			return;
		}
		if (n) {
			r->resp_body = malloc(n + 1);
			if (!r->resp_body ||
			    evbuffer_copyout(in, r->resp_body, n) != (ev_ssize_t)n) {
				free(r->resp_body);
				r->resp_body = NULL;
				n = 0;
			} else {
				r->resp_body[n] = '\0';
			}
		}
		r->resp_len = n;
		if (ra)
			r->retry_after = strndup(ra, 64);
		if (ct)
			r->content_type = strndup(ct, 128);
		response_reason(r, ereq, code);
		request_finish(r, UPSTREAM_RESPONSE, code);
		return;
	}
	attempt_failed(r, ereq != NULL, saved_errno);
}

/* ------------------------------------------------------------------ */
/* starting attempts */

static void attempt_abort(struct upstream_request *r, enum upstream_outcome o, const char *why)
{
	struct upstream_conn *c = r->conn;

	if (c) {
		c->req = NULL;
		r->conn = NULL;
		conn_kill(c);
	}
	request_set_reason(r, "%s", why);
	request_finish(r, o, 0);
}

int upstream_bev_write_now(struct bufferevent *bev)
{
	struct evbuffer *out = bufferevent_get_output(bev);
	evutil_socket_t fd = bufferevent_getfd(bev);
	bufferevent_data_cb writecb = NULL;
	void *cbarg = NULL;
	int e = errno, n;

	if (fd < 0 || bufferevent_openssl_get_ssl(bev) || evbuffer_get_length(out) == 0)
		return 0;
	evbuffer_unfreeze(out, 1); /* the bufferevent keeps its front frozen */
	n = evbuffer_write(out, fd);
	evbuffer_freeze(out, 1);
	errno = e;
	if (n <= 0 || evbuffer_get_length(out) > 0)
		return 0;
	bufferevent_getcb(bev, NULL, &writecb, NULL, &cbarg);
	if (writecb)
		writecb(bev, cbarg);
	return 1;
}

static void request_send(struct upstream_request *r)
{
	struct upstream_conn *c = r->conn;
	struct upstream_pool *p = r->pool;
	struct evhttp_request *ereq;
	struct evkeyvalq *out;
	struct timeval tv;
	size_t i;

	ereq = evhttp_request_new(ereq_done_cb, r);
	if (!ereq) {
		attempt_abort(r, UPSTREAM_CONNECT_FAILED, "out of memory");
		return;
	}
	evhttp_request_set_error_cb(ereq, ereq_error_cb);
	out = evhttp_request_get_output_headers(ereq);
	if (evhttp_add_header(out, "Host", p->url.host_header) < 0)
		goto fail;
	for (i = 0; i < r->n_headers; i++)
		if (evhttp_add_header(out, r->names[i], r->values[i]) < 0)
			goto fail;
	/* evhttp adds Content-Length itself for POST */
	if (r->len && evbuffer_add(evhttp_request_get_output_buffer(ereq), r->body, r->len) < 0)
		goto fail;

	r->got_error = 0;
	r->error_errno = 0;
	r->bytes_start = c->bytes_in;
	c->status_pending = 1;
	c->bad_status = 0;
	c->uses++;
	c->state = CONN_BUSY;
	ms_to_tv(r->timeout_ms - ms_since(&r->started) + UPSTREAM_EVHTTP_SLACK_MS, &tv);
	evhttp_connection_set_timeout_tv(c->evcon, &tv);
	r->ereq = ereq;
	/* May call ereq_done_cb before returning (immediate connect failure). */
	if (evhttp_make_request(c->evcon, ereq, EVHTTP_REQ_POST, p->url.path) < 0) {
		/* evhttp has released the request */
		if (r->state == REQ_RUNNING && r->ereq == ereq) {
			r->ereq = NULL;
			attempt_abort(r, UPSTREAM_CONNECT_FAILED, "cannot start the request");
		}
		return;
	}
	/* a kept-alive connection (never while connecting) */
	if (r->state == REQ_RUNNING && r->ereq == ereq && r->conn == c && c->established &&
	    !c->closed)
		upstream_bev_write_now(c->bev);
	return;
fail:
	evhttp_request_free(ereq);
	attempt_abort(r, UPSTREAM_CONNECT_FAILED, "out of memory building the request");
}

static void conn_connect(struct upstream_conn *c)
{
	struct upstream_pool *p = c->pool;
	struct upstream_request *r = c->req;
	const int opts = BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS;
	struct bufferevent *bev;

	if (p->url.https) {
		SSL *ssl = SSL_new(p->tls->ctx);
		int okay = ssl != NULL;

		if (okay && p->host_family == 0) {
			okay = SSL_set_tlsext_host_name(ssl, p->url.host) == 1 &&
			       SSL_set1_host(ssl, p->url.host) == 1;
			SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		} else if (okay) {
			okay = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), p->url.host) == 1;
		}
		if (!okay) {
			SSL_free(ssl);
			ERR_clear_error();
			attempt_abort(r, UPSTREAM_TLS_FAILED,
				      "cannot set up TLS for the connection");
			return;
		}
		/* On failure libevent may or may not have freed the SSL already;
		 * leaking it on this out-of-memory path beats a double free. */
		bev = bufferevent_openssl_socket_new(p->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
						     opts);
		if (bev)
			bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	} else {
		bev = bufferevent_socket_new(p->base, -1, opts);
	}
	if (!bev) {
		attempt_abort(r, UPSTREAM_CONNECT_FAILED, "cannot create a socket buffer");
		return;
	}
	c->evcon = evhttp_connection_base_bufferevent_new(p->base, NULL, bev, c->addr,
							  (ev_uint16_t)p->url.port);
	if (!c->evcon) {
		bufferevent_free(bev);
		attempt_abort(r, UPSTREAM_CONNECT_FAILED, "cannot create an HTTP connection");
		return;
	}
	c->bev = bev;
	c->in_cb = evbuffer_add_cb(bufferevent_get_input(bev), conn_input_cb, c);
	evhttp_connection_set_max_body_size(c->evcon, (ev_ssize_t)p->lim.max_response_body);
	evhttp_connection_set_max_headers_size(c->evcon, (ev_ssize_t)p->lim.max_response_headers);
	evhttp_connection_set_retries(c->evcon, 0);
	evhttp_connection_set_closecb(c->evcon, conn_close_cb, c);
	request_send(r);
}

static void lookup_cb(int result, struct evutil_addrinfo *res, void *arg)
{
	struct upstream_lookup *lk = arg;
	struct upstream_conn *c = lk->conn;
	struct evutil_addrinfo *ai, *pick = NULL;
	char why[300];

	free(lk);
	if (!c) { /* orphaned: the connection gave up on it */
		if (res)
			evutil_freeaddrinfo(res);
		return;
	}
	c->lookup = NULL;
	if (result == 0) {
		for (ai = res; ai && !pick; ai = ai->ai_next)
			if (ai->ai_family == AF_INET)
				pick = ai;
		for (ai = res; ai && !pick; ai = ai->ai_next)
			if (ai->ai_family == AF_INET6)
				pick = ai;
	}
	if (pick) {
		const void *a =
			pick->ai_family == AF_INET
				? (const void *)&((struct sockaddr_in *)pick->ai_addr)->sin_addr
				: (const void *)&((struct sockaddr_in6 *)pick->ai_addr)->sin6_addr;

		if (!evutil_inet_ntop(pick->ai_family, a, c->addr, sizeof(c->addr)))
			pick = NULL;
	}
	if (res)
		evutil_freeaddrinfo(res);
	if (!pick) {
		snprintf(why, sizeof(why), "cannot resolve '%s': %s", c->pool->url.host,
			 result ? evutil_gai_strerror(result) : "no IPv4 or IPv6 address");
		attempt_abort(c->req, UPSTREAM_CONNECT_FAILED, why);
		return;
	}
	conn_connect(c);
}

static void conn_resolve(struct upstream_conn *c)
{
	struct upstream_pool *p = c->pool;
	struct upstream_lookup *lk = calloc(1, sizeof(*lk));
	struct evdns_getaddrinfo_request *h;
	struct evutil_addrinfo hints;

	if (!lk) {
		attempt_abort(c->req, UPSTREAM_CONNECT_FAILED, "out of memory");
		return;
	}
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	lk->conn = c;
	c->lookup = lk;
	/* Answers from /etc/hosts come back before evdns_getaddrinfo returns. */
	h = evdns_getaddrinfo(p->dns, p->url.host, NULL, &hints, lookup_cb, lk);
	if (c->lookup == lk)
		lk->handle = h;
}

static void request_start(struct upstream_request *r, struct upstream_conn *c)
{
	struct upstream_pool *p = r->pool;

	TAILQ_REMOVE(&p->waiting, r, link);
	r->state = REQ_RUNNING;
	TAILQ_INSERT_TAIL(&p->running, r, link);
	r->conn = c;
	c->req = r;
	if (c->evcon) {
		request_send(r);
	} else if (p->host_family) {
		snprintf(c->addr, sizeof(c->addr), "%s", p->url.host);
		conn_connect(c);
	} else {
		conn_resolve(c);
	}
}

static void pool_dispatch_cb(evutil_socket_t fd, short what, void *arg)
{
	struct upstream_pool *p = arg;
	struct upstream_request *r;
	struct upstream_conn *c;

	while ((r = TAILQ_FIRST(&p->waiting)) != NULL) {
		c = NULL;
		if (!r->fresh_only && (c = TAILQ_FIRST(&p->idle)) != NULL) {
			TAILQ_REMOVE(&p->idle, c, link);
			TAILQ_INSERT_TAIL(&p->active, c, link);
			c->state = CONN_BUSY;
		} else {
			if (p->n_live >= p->lim.max_connections) {
				/* a retry needs a new connection: close the coldest idle one */
				struct upstream_conn *cold = TAILQ_LAST(&p->idle,
									upstream_conn_list);

				if (!r->fresh_only || !cold)
					break; /* FIFO: wait for a connection to come back */
				conn_kill(cold);
			}
			c = conn_new(p);
			if (!c) {
				TAILQ_REMOVE(&p->waiting, r, link);
				r->state = REQ_RUNNING;
				TAILQ_INSERT_TAIL(&p->running, r, link);
				attempt_abort(r, UPSTREAM_CONNECT_FAILED, "out of memory");
				continue;
			}
		}
		r->fresh_only = 0;
		request_start(r, c);
	}
}

/* Detach a running request from its connection for good (timeout, cancel,
 * pool shutdown); the connection is discarded because the response would
 * still arrive on it. */
static void request_detach(struct upstream_request *r)
{
	struct upstream_conn *c = r->conn;
	struct evhttp_request *ereq = r->ereq;

	r->conn = NULL;
	r->ereq = NULL;
	if (ereq)
		evhttp_cancel_request(ereq); /* calls no completion callback */
	if (c) {
		c->req = NULL;
		conn_kill(c);
	}
}

static const char *request_phase(struct upstream_request *r)
{
	struct upstream_conn *c = r->conn;
	evutil_socket_t fd;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);

	if (r->state == REQ_WAITING)
		return r->retried ? "waiting to retry on a new connection"
				  : "waiting for a free connection";
	if (!c)
		return "sending";
	if (c->lookup)
		return "resolving the host name";
	if (!c->bev)
		return "connecting";
	fd = bufferevent_getfd(c->bev);
	if (fd < 0 || getpeername(fd, (struct sockaddr *)&ss, &sl) < 0)
		return "connecting";
	if (c->pool->url.https) {
		SSL *ssl = bufferevent_openssl_get_ssl(c->bev);

		if (ssl && !SSL_is_init_finished(ssl))
			return "in the TLS handshake";
	}
	if (c->bytes_in > r->bytes_start)
		return "receiving the response";
	return "waiting for the response";
}

static void request_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct upstream_request *r = arg;
	const char *phase = request_phase(r);
	char peer[300];

	if (r->conn && r->conn->addr[0]) {
		conn_peer(r->conn, peer, sizeof(peer));
		request_set_reason(r, "no complete response within %d ms (%s, %s)", r->timeout_ms,
				   phase, peer);
	} else {
		request_set_reason(r, "no complete response within %d ms (%s)", r->timeout_ms,
				   phase);
	}
	if (r->state == REQ_RUNNING)
		request_detach(r);
	request_finish(r, UPSTREAM_TIMEOUT, 0);
}

/* ------------------------------------------------------------------ */
/* public API */

struct upstream_pool *upstream_pool_new(struct event_base *base, struct evdns_base *dns,
					const struct upstream_url *url, struct upstream_tls *tls,
					const struct upstream_limits *lim)
{
	struct upstream_pool *p;
	struct in6_addr a6;
	struct in_addr a4;

	if (!base || !url || !url->host[0] || url->port < 1 || url->port > 65535 ||
	    url->path[0] != '/')
		return NULL;
	if (url->https && (!tls || !tls->ctx))
		return NULL;
	p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->base = base;
	p->dns = dns;
	p->url = *url;
	p->tls = tls;
	upstream_limits_default(&p->lim);
	if (lim) {
		if (lim->max_connections)
			p->lim.max_connections = lim->max_connections;
		if (lim->max_response_body)
			p->lim.max_response_body = lim->max_response_body;
		if (lim->max_response_headers)
			p->lim.max_response_headers = lim->max_response_headers;
		if (lim->idle_timeout_ms > 0)
			p->lim.idle_timeout_ms = lim->idle_timeout_ms;
	}
	if (inet_pton(AF_INET, url->host, &a4) == 1)
		p->host_family = AF_INET;
	else if (inet_pton(AF_INET6, url->host, &a6) == 1)
		p->host_family = AF_INET6;
	else if (!dns) {
		free(p); /* a name without evdns would need a blocking resolver */
		return NULL;
	}
	TAILQ_INIT(&p->idle);
	TAILQ_INIT(&p->active);
	TAILQ_INIT(&p->dead);
	TAILQ_INIT(&p->waiting);
	TAILQ_INIT(&p->running);
	TAILQ_INIT(&p->done);
	p->dispatch_ev = event_new(base, -1, 0, pool_dispatch_cb, p);
	p->reap_ev = event_new(base, -1, 0, pool_reap_cb, p);
	p->deliver_ev = event_new(base, -1, 0, pool_deliver_cb, p);
	if (!p->dispatch_ev || !p->reap_ev || !p->deliver_ev) {
		upstream_pool_free(p);
		return NULL;
	}
	return p;
}

/* Requests whose outcome is already known get that outcome (the upstream may
 * have accepted the delivery); the others get UPSTREAM_CANCELLED. */
void upstream_pool_free(struct upstream_pool *p)
{
	struct upstream_request *r;
	struct upstream_conn *c;

	if (!p || p->freeing)
		return;
	p->freeing = 1;
	TAILQ_FOREACH(r, &p->running, link)
	request_detach(r);
	while ((c = TAILQ_FIRST(&p->idle)) != NULL)
		conn_kill(c);
	while ((c = TAILQ_FIRST(&p->active)) != NULL)
		conn_kill(c);
	pool_reap_cb(-1, 0, p);

	while ((r = TAILQ_FIRST(&p->done)) != NULL) {
		TAILQ_REMOVE(&p->done, r, link);
		request_call(r);
	}
	for (;;) {
		r = TAILQ_FIRST(&p->running);
		if (!r)
			r = TAILQ_FIRST(&p->waiting);
		if (!r)
			break;
		TAILQ_REMOVE(request_list(r), r, link);
		r->state = REQ_DONE;
		r->outcome = UPSTREAM_CANCELLED;
		r->status = 0;
		r->elapsed_us = us_since(&r->started);
		r->elapsed_ms = (long)(r->elapsed_us / 1000);
		request_set_reason(r, "upstream pool shut down");
		request_call(r);
	}
	if (p->dispatch_ev)
		event_free(p->dispatch_ev);
	if (p->reap_ev)
		event_free(p->reap_ev);
	if (p->deliver_ev)
		event_free(p->deliver_ev);
	if (!p->delivering)
		free(p);
}

int upstream_header_name_valid(const char *s)
{
	size_t n = 0;

	for (; *s; s++, n++) {
		unsigned char ch = (unsigned char)*s;

		if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
		      (ch >= '0' && ch <= '9') || strchr("!#$%&'*+-.^_`|~", ch)))
			return 0;
	}
	return n > 0 && n <= UPSTREAM_HEADER_NAME_MAX;
}

static int header_value_valid(const char *s)
{
	size_t n = 0;

	for (; *s; s++, n++) {
		unsigned char ch = (unsigned char)*s;

		if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
			return 0;
	}
	return n <= UPSTREAM_HEADER_VALUE_MAX;
}

/* Headers this module owns (Host, Content-Length) or that are hop-by-hop and
 * would corrupt the framing of a fully buffered body. */
static int header_name_reserved(const char *s)
{
	static const char *const names[] = {
		"Host", "Content-Length", "Transfer-Encoding", "Connection", "Keep-Alive",
		"TE",   "Trailer",        "Upgrade",           "Expect",
	};
	size_t i;

	if (!strchr("CcEeHhKkPpTtUu", s[0]))
		return 0; /* no reserved name starts so (s[0] is not NUL: a valid name) */
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcasecmp(s, names[i]) == 0)
			return 1;
	return strncasecmp(s, "Proxy-", 6) == 0;
}

int upstream_post(struct upstream_pool *p, const struct upstream_header *headers, size_t n_headers,
		  const void *body, size_t len, int timeout_ms, upstream_done_cb cb, void *arg,
		  struct upstream_request **ret, struct bridge_error *err)
{
	struct upstream_request *r;
	struct timeval tv;
	size_t i, size;
	char *at;

	if (ret)
		*ret = NULL;
	if (!p || !cb)
		return bridge_error_set(err, "upstream_post: pool and callback are required");
	if (p->freeing)
		return bridge_error_set(err, "upstream pool is shutting down");
	if (timeout_ms <= 0)
		return bridge_error_set(err, "upstream timeout must be positive, got %d ms",
					timeout_ms);
	if ((n_headers && !headers) || (len && !body))
		return bridge_error_set(err, "upstream_post: NULL headers or body");
	if (n_headers > UPSTREAM_HEADERS_MAX)
		return bridge_error_set(err, "too many upstream headers (%zu, limit %d)", n_headers,
					UPSTREAM_HEADERS_MAX);
	for (i = 0; i < n_headers; i++) {
		if (!headers[i].name || !upstream_header_name_valid(headers[i].name))
			return bridge_error_set(err, "invalid upstream header name '%.64s'",
						headers[i].name ? headers[i].name : "(null)");
		if (header_name_reserved(headers[i].name))
			return bridge_error_set(err,
						"header '%s' is set by the bridge itself or is "
						"hop-by-hop; it cannot be configured",
						headers[i].name);
		if (!headers[i].value || !header_value_valid(headers[i].value))
			return bridge_error_set(err,
						"invalid value for upstream header '%s' "
						"(control character or longer than %d bytes)",
						headers[i].name, UPSTREAM_HEADER_VALUE_MAX);
	}

	r = calloc(1, sizeof(*r));
	if (!r)
		return bridge_error_set(err, "out of memory");
	r->pool = p;
	r->timeout_ms = timeout_ms;
	r->cb = cb;
	r->arg = arg;
	clock_gettime(CLOCK_MONOTONIC, &r->started);
	/* the header pointers, their texts and the body in one block */
	size = 2 * n_headers * sizeof(char *) + len + 1;
	for (i = 0; i < n_headers; i++)
		size += strlen(headers[i].name) + strlen(headers[i].value) + 2;
	r->names = malloc(size);
	if (!r->names)
		goto oom;
	r->values = r->names + n_headers;
	at = (char *)(r->values + n_headers);
	for (i = 0; i < n_headers; i++) {
		r->names[i] = at;
		at = stpcpy(at, headers[i].name) + 1;
		r->values[i] = at;
		at = stpcpy(at, headers[i].value) + 1;
	}
	r->n_headers = n_headers;
	r->body = at;
	if (len)
		memcpy(r->body, body, len);
	r->len = len;
	r->deadline = evtimer_new(p->base, request_deadline_cb, r);
	ms_to_tv(timeout_ms, &tv);
	if (!r->deadline || evtimer_add(r->deadline, &tv) < 0)
		goto oom;
	r->state = REQ_WAITING;
	TAILQ_INSERT_TAIL(&p->waiting, r, link);
	event_active(p->dispatch_ev, EV_TIMEOUT, 1);
	if (ret)
		*ret = r;
	return 0;
oom:
	request_free(r);
	return bridge_error_set(err, "out of memory");
}

void upstream_request_cancel(struct upstream_request *r)
{
	if (!r || r->delivering)
		return;
	if (r->state == REQ_RUNNING)
		request_detach(r);
	TAILQ_REMOVE(request_list(r), r, link);
	request_free(r);
}
