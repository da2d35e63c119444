/*
 * upstream: outbound POSTs over a keep-alive pool of bufferevents, with an
 * HTTP/1.1 client of our own: the request is written whole into the
 * bufferevent's output, the answer read by upstream_resp (strict,
 * incremental, no header lists).
 *
 * Ownership and the rules it keeps:
 *  - A request (struct upstream_request) lives from upstream_post() until its
 *    callback has returned (or it is cancelled).  It sits in exactly one of
 *    the pool's lists: waiting (FIFO), running (on a connection) or done
 *    (outcome known, callback not yet run).  Its wire bytes (request line,
 *    Host, the caller's headers, Content-Length, body) are built once there,
 *    in the same allocation, and sent from there for each attempt (see the
 *    write interest below).
 *  - User callbacks never run inside bufferevent callbacks: outcomes are
 *    queued on `done` and delivered from the pool's own deliver event, so a
 *    callback may free the pool, post, or cancel at will.
 *  - A connection that closed or failed is never reused: it moves to `dead`
 *    (its callbacks cleared) and is freed from the pool's reap event, never
 *    from inside its own callbacks.  Freeing the bufferevent frees the SSL
 *    with it (BEV_OPT_CLOSE_ON_FREE); we never SSL_free ourselves.
 *  - One request per connection at a time.  Reading stays enabled for the
 *    connection's whole life: while it idles, an EOF or any byte kills it.
 *    The read timeout is idle_timeout_ms: an idle connection that hears
 *    nothing for that long is closed; while a request runs the timeout is
 *    ignored (reading enabled again) and the request's own deadline decides.
 *    A plain connection, once connected, is read by an event of its own
 *    (rd_ev, one read(2) a time, upstream_bev_readable) instead of its
 *    bufferevent, which asks how much is readable (an ioctl) before each read.
 *  - On a plain connection the output's write interest is off between
 *    requests: a request goes out with one send(2) from its wire bytes, and
 *    only what the socket did not take is copied into the output and turns
 *    it on until the output drains.
 *  - An answer is reused only when it said so (HTTP/1.1 without
 *    Connection: close, HTTP/1.0 with keep-alive), was framed by a length or
 *    chunks, and nothing more arrived after it.
 *  - Names are resolved here with evdns_getaddrinfo and the connection made
 *    to a numeric address: no blocking resolver in the loop, DNS errors are
 *    told apart from connect errors, and an IPv4 address is preferred over
 *    IPv6.
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
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <event2/util.h>

#include "bridge/upstream.h"
#include "bridge/upstream_resp.h"
#include "wordload.h"

#define UPSTREAM_REASON_MAX       320
#define UPSTREAM_HEADER_NAME_MAX  256
#define UPSTREAM_HEADER_VALUE_MAX 8192
#define UPSTREAM_HEADERS_MAX      10016 /* limits.max_headers (10000) and the bridge's own */

struct upstream_tls {
	SSL_CTX *ctx;
};

enum conn_state {
	CONN_RESOLVING, /* evdns lookup pending, no bufferevent yet */
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
	struct bufferevent *bev;
	struct event rd_ev; /* a plain connection's reading, once connected */
	int rd_on;          /* rd_ev is set up (plain and connected) */
	struct upstream_lookup *lookup;
	struct upstream_request *req; /* while RESOLVING or BUSY */
	char addr[256];               /* numeric address connected to */
	unsigned uses;                /* requests sent on it */
	int established;              /* connect (and TLS handshake) completed */
	int eof;                      /* the peer closed, or the connection failed */
	uint64_t bytes_in;            /* response bytes received over its lifetime */
	size_t in_seen;               /* of the input's bytes, those counted already */
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
	struct event deadline; /* embedded: an allocation fewer per request */
	struct timespec started;
	int timeout_ms;
	upstream_done_cb cb;
	void *arg;
	char *wire; /* the whole request as sent: the bytes after the struct */
	size_t wire_len;
	int retried;                              /* the one retry on a fresh connection was used */
	char retried_reason[UPSTREAM_REASON_MAX]; /* why the first attempt failed */
	int fresh_only;                           /* the next attempt must open a new connection */
	int delivering;                           /* callback running: cancel is a no-op */
	uint64_t bytes_start;                     /* the connection's bytes_in when sent */
	struct upstream_resp resp;                /* the current attempt's answer */
	/* outcome */
	enum upstream_outcome outcome;
	int status;
	char reason[UPSTREAM_REASON_MAX];
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
#define READ_MAX 16384 /* one read of a plain socket */

/* One read(2) into buf: the bytes read, 0 at the end of the stream, -1 on
 * an error (errno set), -2 when nothing is there now. */
static int read_plain(evutil_socket_t fd, char *buf, size_t cap)
{
	ssize_t n = read((int)fd, buf, cap);

	if (n < 0)
		return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? -2 : -1;
	return (int)n;
}

/* n bytes onto the end of bev's input (copied, so that the input's chunk is
 * the size of what came); -1 without memory. */
static int input_add(struct bufferevent *bev, const char *p, size_t n)
{
	struct evbuffer *in = bufferevent_get_input(bev);
	int added;

	evbuffer_unfreeze(in, 0); /* the bufferevent keeps its input's end frozen */
	added = evbuffer_add(in, p, n) == 0;
	evbuffer_freeze(in, 0);
	if (!added)
		errno = ENOMEM;
	return added ? 0 : -1;
}

/* A read that brought no byte (rc 0 or -1 of read_plain) or the idle
 * timeout: reading stops and bev's event callback is told. */
static void bev_read_ended(struct bufferevent *bev, struct event *ev, short why)
{
	bufferevent_event_cb eventcb = NULL;
	void *arg = NULL;
	int e = errno;

	bufferevent_getcb(bev, NULL, NULL, &eventcb, &arg);
	event_del(ev);
	errno = e; /* the event callback reads the socket's error */
	if (eventcb)
		eventcb(bev, why, arg);
}

/* One read of ev's socket into buf: the bytes read, or 0 when it brought
 * none (nothing there now; or the end or an error, which bev's event
 * callback has been told). */
static int bev_read(struct bufferevent *bev, struct event *ev, char *buf, size_t cap)
{
	int n = read_plain(event_get_fd(ev), buf, cap);

	if (n == -2)
		return 0;
	if (n <= 0)
		bev_read_ended(bev, ev,
			       BEV_EVENT_READING | (n == 0 ? BEV_EVENT_EOF : BEV_EVENT_ERROR));
	return n > 0 ? n : 0;
}

void upstream_bev_readable(struct bufferevent *bev, struct event *ev, short what)
{
	bufferevent_data_cb readcb = NULL;
	void *arg = NULL;
	char buf[READ_MAX];
	int n;

	if (what & EV_TIMEOUT) {
		bev_read_ended(bev, ev, BEV_EVENT_READING | BEV_EVENT_TIMEOUT);
		return;
	}
	if (!(n = bev_read(bev, ev, buf, sizeof(buf))))
		return;
	if (input_add(bev, buf, (size_t)n) < 0) {
		bev_read_ended(bev, ev, BEV_EVENT_READING | BEV_EVENT_ERROR);
		return;
	}
	bufferevent_getcb(bev, &readcb, NULL, NULL, &arg);
	if (readcb)
		readcb(bev, arg);
}

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
	evtimer_del(&r->deadline);
	TAILQ_INSERT_TAIL(&p->done, r, link);
	event_active(p->deliver_ev, EV_TIMEOUT, 1);
}

static void request_free(struct upstream_request *r)
{
	evtimer_del(&r->deadline); /* assigned before anything can fail */
	upstream_resp_free(&r->resp);
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
	if (r->outcome == UPSTREAM_RESPONSE) {
		resp.body = r->resp.body;
		resp.body_len = r->resp.body_len;
		resp.retry_after = r->resp.has_retry_after ? r->resp.retry_after : NULL;
		resp.content_type = r->resp.has_content_type ? r->resp.content_type : NULL;
	}
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
	if (c->rd_on)
		event_del(&c->rd_ev);
	if (c->bev)
		bufferevent_setcb(c->bev, NULL, NULL, NULL, NULL);
	TAILQ_INSERT_TAIL(&p->dead, c, link);
	event_active(p->reap_ev, EV_TIMEOUT, 1);
	if (!TAILQ_EMPTY(&p->waiting))
		event_active(p->dispatch_ev, EV_TIMEOUT, 1);
}

static void conn_free(struct upstream_conn *c)
{
	if (c->rd_on)
		event_del(&c->rd_ev);
	if (c->bev)
		bufferevent_free(c->bev); /* closes the socket, frees the SSL */
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

/* A finished request hands its connection back: to the idle list when it
 * can carry another request, else it is discarded. */
static void conn_release(struct upstream_conn *c, int reusable)
{
	struct upstream_pool *p = c->pool;

	c->req = NULL;
	if (!reusable || c->state != CONN_BUSY) {
		conn_kill(c);
		return;
	}
	TAILQ_REMOVE(&p->active, c, link);
	c->state = CONN_IDLE;
	TAILQ_INSERT_HEAD(&p->idle, c, link);
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

/* Why a connection that never completed its connect (and TLS handshake)
 * failed, e being the socket error (0 for a close). */
static enum upstream_outcome connect_failed(struct upstream_request *r, int e, const char *tls,
					    const char *peer)
{
	struct upstream_conn *c = r->conn;
	SSL *ssl = r->pool->url.https && c->bev ? bufferevent_openssl_get_ssl(c->bev) : NULL;
	long vr = ssl ? SSL_get_verify_result(ssl) : X509_V_OK;

	if (vr != X509_V_OK) {
		request_set_reason(r, "certificate verify failed: %s (%s)",
				   X509_verify_cert_error_string(vr), peer);
		return UPSTREAM_TLS_FAILED;
	}
	if (tls[0]) {
		request_set_reason(r, "TLS handshake failed: %s (%s)", tls, peer);
		return UPSTREAM_TLS_FAILED;
	}
	if (e == ECONNREFUSED) {
		request_set_reason(r, "connection refused (%s)", peer);
		return UPSTREAM_CONNECT_FAILED;
	}
	if (errno_is_connect_failure(e)) {
		request_set_reason(r, "connect failed: %s (%s)", strerror(e), peer);
		return UPSTREAM_CONNECT_FAILED;
	}
	if (r->pool->url.https) {
		request_set_reason(r, "TLS handshake failed: connection closed by peer (%s)", peer);
		return UPSTREAM_TLS_FAILED;
	}
	request_set_reason(r, "connect failed%s%s (%s)", e ? ": " : "", e ? strerror(e) : "", peer);
	return UPSTREAM_CONNECT_FAILED;
}

/* The current attempt failed without a complete answer: the connection
 * closed (eof) or failed, e being the socket error then. */
static void attempt_failed(struct upstream_request *r, int e, int eof)
{
	struct upstream_conn *c = r->conn;
	struct upstream_pool *p = r->pool;
	enum upstream_outcome o = UPSTREAM_PROTOCOL_ERROR;
	uint64_t got = c->bytes_in - r->bytes_start;
	char peer[300], tls[200];
	int has_tls = conn_tls_errors(c, tls, sizeof(tls));
	int retry = 0;

	conn_peer(c, peer, sizeof(peer));
	if (got > 0)
		c->established = 1;

	if (!c->established) {
		/* a refused TLS connect comes as an EOF with errno still telling */
		o = connect_failed(r, eof && !errno_is_connect_failure(e) ? 0 : e, tls, peer);
	} else {
		const char *how = !eof && e == ECONNRESET ? "reset" : "closed";

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
/* answers */

/* "HTTP DDD[ phrase]" in pieces: this runs for every answer */
static void response_reason(struct upstream_request *r)
{
	size_t n = strlen(r->resp.phrase);
	int code = r->resp.status;

	_Static_assert(UPSTREAM_REASON_MAX >= 9 + sizeof(r->resp.phrase), "reason too small");
	memcpy(r->reason, "HTTP ", 5);
	r->reason[5] = (char)('0' + code / 100 % 10);
	r->reason[6] = (char)('0' + code / 10 % 10);
	r->reason[7] = (char)('0' + code % 10);
	r->reason[8] = ' ';
	memcpy(r->reason + 9, r->resp.phrase, n);
	r->reason[n ? 9 + n : 8] = '\0';
}

/* An answer upstream_resp refused: not HTTP as we read it, or too large.
 * Where it ends, and so whether the connection could go on, is unknown. */
static void response_refused(struct upstream_request *r, enum upstream_resp_rc rc)
{
	struct upstream_conn *c = r->conn;
	struct upstream_pool *p = r->pool;
	char peer[300];

	if (r->resp.error == UPSTREAM_RESP_E_HEAD_LIMIT) {
		request_set_reason(r, "response headers larger than %zu bytes",
				   p->lim.max_response_headers);
	} else if (r->resp.error == UPSTREAM_RESP_E_BODY_LIMIT) {
		request_set_reason(r, "response body larger than %zu bytes",
				   p->lim.max_response_body);
	} else if (r->resp.error == UPSTREAM_RESP_E_LENGTHS) {
		request_set_reason(r, "%s", upstream_resp_error_text(r->resp.error));
	} else {
		conn_peer(c, peer, sizeof(peer));
		request_set_reason(r, "%s (%s)", upstream_resp_error_text(r->resp.error), peer);
	}
	r->conn = NULL;
	c->req = NULL;
	conn_kill(c);
	request_finish(
		r, rc == UPSTREAM_RESP_TOO_LARGE ? UPSTREAM_TOO_LARGE : UPSTREAM_PROTOCOL_ERROR, 0);
}

/* What upstream_resp said of the bytes read so far. */
static void conn_answer(struct upstream_conn *c, enum upstream_resp_rc rc)
{
	struct upstream_request *r = c->req;
	int reusable;

	if (rc == UPSTREAM_RESP_MORE)
		return;
	c->established = 1;
	if (rc != UPSTREAM_RESP_DONE) {
		response_refused(r, rc);
		return;
	}
	/* more bytes after the answer: not ours to guess what they are */
	reusable = r->resp.keep_alive && !c->eof &&
		   evbuffer_get_length(bufferevent_get_input(c->bev)) == 0 &&
		   evbuffer_get_length(bufferevent_get_output(c->bev)) == 0;
	r->conn = NULL;
	conn_release(c, reusable);
	response_reason(r);
	request_finish(r, UPSTREAM_RESPONSE, r->resp.status);
}

static void conn_read_cb(struct bufferevent *bev, void *arg)
{
	struct upstream_conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);

	c->bytes_in += evbuffer_get_length(in) - c->in_seen;
	if (c->state != CONN_BUSY || !c->req) {
		conn_kill(c); /* a byte on an idle connection: nobody asked */
		return;
	}
	conn_answer(c, upstream_resp_parse(&c->req->resp, in));
	c->in_seen = evbuffer_get_length(in);
}

void upstream_bev_reading(struct bufferevent *bev, struct event *ev, int on, int idle_ms)
{
	struct timeval tv;

	if (!ev && on)
		bufferevent_enable(bev, EV_READ);
	else if (!ev)
		bufferevent_disable(bev, EV_READ);
	else if (!on)
		event_del(ev);
	else {
		ms_to_tv(idle_ms, &tv);
		event_add(ev, evutil_timerisset(&tv) ? &tv : NULL);
	}
}

/* Reading on: rd_ev for a plain connection, the bufferevent's for TLS. */
static void conn_reading(struct upstream_conn *c)
{
	upstream_bev_reading(c->bev, c->rd_on ? &c->rd_ev : NULL, 1, c->pool->lim.idle_timeout_ms);
}

/* A plain connection's answer is parsed where read(2) put it when nothing
 * is held over from an earlier read (nearly always: an answer comes in one
 * read): no input chunk, no copy.  What the parse leaves (a line not ended
 * yet, bytes past the answer) goes into the input as before. */
static void conn_plain_read_cb(evutil_socket_t fd, short what, void *arg)
{
	struct upstream_conn *c = arg;
	struct evbuffer *in = bufferevent_get_input(c->bev);
	char buf[READ_MAX];
	size_t used = 0;
	enum upstream_resp_rc rc;
	int n;

	(void)fd; /* the read is rd_ev's, on the same socket */
	if ((what & EV_TIMEOUT) || c->state != CONN_BUSY || !c->req || evbuffer_get_length(in)) {
		upstream_bev_readable(c->bev, &c->rd_ev, what);
		return;
	}
	if (!(n = bev_read(c->bev, &c->rd_ev, buf, sizeof(buf))))
		return;
	c->bytes_in += (uint64_t)n;
	rc = upstream_resp_parse_bytes(&c->req->resp, buf, (size_t)n, &used);
	if (used < (size_t)n && input_add(c->bev, buf + used, (size_t)n - used) < 0) {
		c->in_seen = evbuffer_get_length(in);
		bev_read_ended(c->bev, &c->rd_ev, BEV_EVENT_READING | BEV_EVENT_ERROR);
		return;
	}
	c->in_seen = evbuffer_get_length(in);
	conn_answer(c, rc);
}

/* Plain connections only: the output drained, write interest goes off. */
static void conn_write_cb(struct bufferevent *bev, void *arg)
{
	bufferevent_disable(bev, EV_WRITE);
}

static void conn_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct upstream_conn *c = arg;
	int e = EVUTIL_SOCKET_ERROR();
	struct upstream_request *r = c->req;

	if (what & BEV_EVENT_CONNECTED) {
		c->established = 1;
		if (!c->pool->url.https) {
			event_assign(&c->rd_ev, c->pool->base, bufferevent_getfd(bev),
				     EV_READ | EV_PERSIST, conn_plain_read_cb, c);
			c->rd_on = 1;
		}
		conn_reading(c);
		return;
	}
	if (what & BEV_EVENT_TIMEOUT) {
		if (c->state == CONN_BUSY)
			conn_reading(c); /* the request's deadline decides */
		else
			conn_kill(c); /* idle for idle_timeout_ms */
		return;
	}
	if (c->state != CONN_BUSY || !r) {
		conn_kill(c);
		return;
	}
	c->eof = 1;
	if (what & BEV_EVENT_EOF) {
		enum upstream_resp_rc rc;

		if (evbuffer_get_length(bufferevent_get_input(bev)) > 0) {
			conn_read_cb(bev, c);
			if (c->req != r)
				return;
		}
		rc = upstream_resp_eof(&r->resp);
		if (rc == UPSTREAM_RESP_DONE || r->resp.error != UPSTREAM_RESP_E_CLOSED) {
			conn_answer(c, rc);
			return;
		}
	}
	attempt_failed(r, e, what & BEV_EVENT_EOF);
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
	struct evbuffer *out = bufferevent_get_output(c->bev);
	size_t sent = 0;

	upstream_resp_init(&r->resp, p->lim.max_response_headers, p->lim.max_response_body);
	r->bytes_start = c->bytes_in;
	c->uses++;
	c->state = CONN_BUSY;
	/* a kept-alive plain connection with nothing queued: written from the
	 * request's bytes at once, and only what the socket did not take goes
	 * into the output (an error shows when the bufferevent writes it) */
	if (c->established && !p->url.https && evbuffer_get_length(out) == 0) {
		int e = errno;
		ssize_t n = send((int)bufferevent_getfd(c->bev), r->wire, r->wire_len,
				 MSG_NOSIGNAL);

		errno = e;
		if (n == (ssize_t)r->wire_len)
			return;
		sent = n > 0 ? (size_t)n : 0;
	}
	if (evbuffer_add(out, r->wire + sent, r->wire_len - sent) < 0) {
		attempt_abort(r, UPSTREAM_CONNECT_FAILED, "out of memory building the request");
		return;
	}
	/* the rest when the socket takes it */
	if (c->established && !p->url.https)
		bufferevent_enable(c->bev, EV_WRITE);
}

/* c->addr and the port as a socket address. */
static int conn_sockaddr(const struct upstream_conn *c, struct sockaddr_storage *ss, int *len)
{
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, c->addr, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)c->pool->url.port);
		*len = (int)sizeof(*s4);
		return 0;
	}
	if (inet_pton(AF_INET6, c->addr, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)c->pool->url.port);
		*len = (int)sizeof(*s6);
		return 0;
	}
	return -1;
}

/* A bufferevent for a new connection: plain, or TLS with SNI and the name
 * (or IP) checked. */
static struct bufferevent *conn_bev_new(struct upstream_conn *c)
{
	struct upstream_pool *p = c->pool;
	const int opts = BEV_OPT_CLOSE_ON_FREE;
	struct bufferevent *bev;
	SSL *ssl;
	int okay;

	if (!p->url.https)
		return bufferevent_socket_new(p->base, -1, opts);
	ssl = SSL_new(p->tls->ctx);
	okay = ssl != NULL;
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
		attempt_abort(c->req, UPSTREAM_TLS_FAILED, "cannot set up TLS for the connection");
		return NULL;
	}
	/* On failure libevent may or may not have freed the SSL already;
	 * leaking it on this out-of-memory path beats a double free. */
	bev = bufferevent_openssl_socket_new(p->base, -1, ssl, BUFFEREVENT_SSL_CONNECTING, opts);
	if (bev)
		bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	return bev;
}

static void conn_connect(struct upstream_conn *c)
{
	struct upstream_pool *p = c->pool;
	struct upstream_request *r = c->req;
	struct sockaddr_storage ss;
	struct timeval idle;
	int len;

	if (conn_sockaddr(c, &ss, &len) < 0) {
		attempt_abort(r, UPSTREAM_CONNECT_FAILED, "cannot read the resolved address");
		return;
	}
	c->bev = conn_bev_new(c);
	if (!c->bev) {
		if (r->state == REQ_RUNNING) /* not aborted for TLS already */
			attempt_abort(r, UPSTREAM_CONNECT_FAILED, "cannot create a socket buffer");
		return;
	}
	bufferevent_setcb(c->bev, conn_read_cb, p->url.https ? NULL : conn_write_cb, conn_event_cb,
			  c);
	ms_to_tv(p->lim.idle_timeout_ms, &idle);
	bufferevent_set_timeouts(c->bev, &idle, NULL);
	/* an immediate failure is reported through conn_event_cb, from the loop */
	if (bufferevent_socket_connect(c->bev, (struct sockaddr *)&ss, len) < 0) {
		attempt_failed(r, EVUTIL_SOCKET_ERROR(), 0);
		return;
	}
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
	if (c->bev) {
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

	r->conn = NULL;
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
	const char *e = s;

	while (upstream_tchar[(unsigned char)*e])
		e++;
	return *e == '\0' && e > s && e - s <= UPSTREAM_HEADER_NAME_MAX;
}

/* A value without control characters but tab, of at most the value limit. */
static int header_value_valid(const char *s, size_t n)
{
	long at;

	if (n > UPSTREAM_HEADER_VALUE_MAX)
		return 0;
	while ((at = word_first_control(s, n)) >= 0) {
		if (s[at] != '\t')
			return 0;
		s += at + 1;
		n -= (size_t)at + 1;
	}
	return 1;
}

/* Headers this module owns (Host, Content-Length) or that are hop-by-hop and
 * would corrupt the framing of a fully buffered body. */
static int header_name_reserved(const char *s, size_t n)
{
#define NAME(s)                  \
	{                        \
		s, sizeof(s) - 1 \
	}
	static const struct {
		const char *s;
		size_t n;
	} names[] = {
		NAME("Host"),       NAME("Content-Length"), NAME("Transfer-Encoding"),
		NAME("Connection"), NAME("Keep-Alive"),     NAME("TE"),
		NAME("Trailer"),    NAME("Upgrade"),        NAME("Expect"),
	};
#undef NAME
	size_t i;

	if (!strchr("CcEeHhKkPpTtUu", s[0]))
		return 0; /* no reserved name starts so (s[0] is not NUL: a valid name) */
	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (n == names[i].n && strcasecmp(s, names[i].s) == 0)
			return 1;
	return strncasecmp(s, "Proxy-", 6) == 0;
}

static char *put(char *at, const char *s, size_t n)
{
	memcpy(at, s, n);
	return at + n;
}

/* The request as it goes on the wire, built once: request line, Host, the
 * caller's headers in their order (lens: each one's name and value lengths),
 * Content-Length, blank line, body. */
static size_t request_wire_size(const struct upstream_pool *p, const size_t (*lens)[2],
				size_t n_headers, size_t len)
{
	size_t size = 5 + strlen(p->url.path) + 17 + strlen(p->url.host_header) + 2 + 16 + 24 + 4 +
		      len;

	for (size_t i = 0; i < n_headers; i++)
		size += lens[i][0] + 2 + lens[i][1] + 2;
	return size;
}

static void request_wire(struct upstream_request *r, const struct upstream_header *headers,
			 const size_t (*lens)[2], size_t n_headers, const void *body, size_t len)
{
	const struct upstream_url *u = &r->pool->url;
	size_t i;
	char digits[24], *at;
	int nd = 0;

	at = put(r->wire, "POST ", 5);
	at = put(at, u->path, strlen(u->path));
	at = put(at, " HTTP/1.1\r\nHost: ", 17);
	at = put(at, u->host_header, strlen(u->host_header));
	at = put(at, "\r\n", 2);
	for (i = 0; i < n_headers; i++) {
		at = put(at, headers[i].name, lens[i][0]);
		at = put(at, ": ", 2);
		at = put(at, headers[i].value, lens[i][1]);
		at = put(at, "\r\n", 2);
	}
	i = len;
	do
		digits[sizeof(digits) - 1 - nd++] = (char)('0' + i % 10);
	while ((i /= 10) != 0);
	at = put(at, "Content-Length: ", 16);
	at = put(at, digits + sizeof(digits) - nd, (size_t)nd);
	at = put(at, "\r\n\r\n", 4);
	if (len)
		at = put(at, body, len);
	r->wire_len = (size_t)(at - r->wire);
}

int upstream_post(struct upstream_pool *p, const struct upstream_header *headers, size_t n_headers,
		  const void *body, size_t len, int timeout_ms, upstream_done_cb cb, void *arg,
		  struct upstream_request **ret, struct bridge_error *err)
{
	struct upstream_request *r;
	struct timeval tv;
	size_t i, size, lens[UPSTREAM_HEADERS_MAX][2];

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
		lens[i][0] = strlen(headers[i].name);
		if (header_name_reserved(headers[i].name, lens[i][0]))
			return bridge_error_set(err,
						"header '%s' is set by the bridge itself or is "
						"hop-by-hop; it cannot be configured",
						headers[i].name);
		lens[i][1] = headers[i].value ? strlen(headers[i].value) : 0;
		if (!headers[i].value || !header_value_valid(headers[i].value, lens[i][1]))
			return bridge_error_set(err,
						"invalid value for upstream header '%s' "
						"(control character or longer than %d bytes)",
						headers[i].name, UPSTREAM_HEADER_VALUE_MAX);
	}

	/* the request and its bytes in one allocation */
	size = request_wire_size(p, (const size_t(*)[2])lens, n_headers, len);
	if (size > SIZE_MAX - sizeof(*r) || !(r = malloc(sizeof(*r) + size)))
		return bridge_error_set(err, "out of memory");
	memset(r, 0, sizeof(*r));
	r->wire = (char *)(r + 1);
	r->pool = p;
	r->timeout_ms = timeout_ms;
	r->cb = cb;
	r->arg = arg;
	clock_gettime(CLOCK_MONOTONIC, &r->started);
	request_wire(r, headers, (const size_t(*)[2])lens, n_headers, body, len);
	evtimer_assign(&r->deadline, p->base, request_deadline_cb, r);
	ms_to_tv(timeout_ms, &tv);
	if (evtimer_add(&r->deadline, &tv) < 0)
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
