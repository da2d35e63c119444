/*
 * upstream: outbound HTTP/1.1 and HTTPS delivery with a keep-alive pool per
 * endpoint, on one libevent event_base (one pool belongs to one loop/thread).
 *
 * Contract:
 *  - upstream_post() queues one POST; its done callback runs exactly once,
 *    always from the event loop (never from inside upstream_post), unless the
 *    request is cancelled with upstream_request_cancel() first.
 *  - The body and headers are copied; the caller may free them on return.
 *  - The per-request wall-clock deadline (timeout_ms) is enforced here; when
 *    it fires the outcome is UPSTREAM_TIMEOUT and the connection is discarded.
 *  - HTTPS: TLS 1.2+, certificate chain verified against the pool's trust
 *    store, host name checked (SSL_set1_host, or the IP for IP literals), SNI
 *    sent for names.  One fresh SSL + bufferevent per TCP connection,
 *    discarded when it closes.
 *  - HTTP/1.1 of our own on the bufferevent (no evhttp client): the request
 *    written whole, the answer read strictly (upstream_resp.h).
 *  - A request that fails with no response byte on a reused keep-alive
 *    connection is retried once on a fresh connection.
 *  - Names are resolved with evdns (never a blocking getaddrinfo in the loop).
 */
#ifndef BRIDGE_UPSTREAM_H
#define BRIDGE_UPSTREAM_H

#include <stddef.h>
#include "bridge/confread.h"
#include "bridge/diag.h"

struct event_base;
struct evdns_base;

struct upstream_url {
	int https;             /* 1 for https:// */
	char host[256];        /* without brackets for IPv6 literals */
	int port;              /* explicit or 80/443 */
	char path[2048];       /* path + query, "/" when empty; validated: no CR/LF/space/control */
	char host_header[300]; /* value for the Host header ("host", "host:port", "[::1]:8443") */
};

/* 1 when s is an HTTP header name (an RFC 9110 token, 1 to
 * 256 bytes), else 0. */
int upstream_header_name_valid(const char *s);

struct bufferevent;
struct event;

/* What is queued on a plain connection's bufferevent (by httpd or by the
 * upstream pool), written to the socket now instead of after a loop round
 * for EPOLLOUT (and the epoll_ctl calls turning write interest on and off);
 * when all of it is out, the owner is told as the bufferevent would tell it
 * (its write callback).  Whatever the socket does not take at once, errors
 * included, is left to the bufferevent.  Only on a connection that is not
 * connecting.  Returns 1 when everything went out. */
int upstream_bev_write_now(struct bufferevent *bev);

/* The callback's work for an event (ev, EV_READ | EV_PERSIST, perhaps a
 * timeout) by which an owner reads bev's plain socket itself, because the
 * bufferevent's reading asks the kernel how much is readable (an ioctl)
 * before every read: one read(2) into bev's input, then bev's own read
 * callback, as the bufferevent would call it; at the end of the stream, an
 * error or the timeout, ev is deleted and bev's event callback told
 * (BEV_EVENT_READING with EOF, ERROR or TIMEOUT). */
void upstream_bev_readable(struct bufferevent *bev, struct event *ev, short what);

/* Reading on or off for such an owner: ev with idle_ms as its timeout (0 or
 * less: none), as the bufferevent's read timeout would be; with ev NULL (a
 * TLS connection, which its bufferevent reads) the bufferevent's reading. */
void upstream_bev_reading(struct bufferevent *bev, struct event *ev, int on, int idle_ms);

/* url with what a URL can carry as a credential masked, for logs, errors
 * and listings: a user-info password and every query value become "***"
 * (https://h/in?key=*** ); truncated to fit cap (always NUL-terminated). */
void upstream_url_redact(const char *url, char *out, size_t cap);

/* Parse an http:// or https:// URL. No user-info, no fragment. */
int upstream_url_parse(const char *url, struct upstream_url *ret, struct bridge_error *err);

/* A TLS client context (one SSL_CTX), shareable read-only between pools and
 * threads. ca_file NULL uses the system's default trust store. */
struct upstream_tls;
int upstream_tls_new(const char *ca_file, struct upstream_tls **ret, struct bridge_error *err);
void upstream_tls_free(struct upstream_tls *t); /* accepts NULL */

struct upstream_limits {
	size_t max_connections;      /* per pool, default 64; further requests wait in FIFO */
	size_t max_response_body;    /* default 1 MiB; bigger -> UPSTREAM_TOO_LARGE */
	size_t max_response_headers; /* default 64 KiB */
	int idle_timeout_ms;         /* keep-alive idle connections closed after; default 30000 */
};
void upstream_limits_default(struct upstream_limits *l);
/* The config's `upstream` group: max_connections, max_response_body,
 * idle_timeout_ms (their defaults are upstream_limits_default's). */
extern const struct cfg_setting upstream_limits_settings[];

struct upstream_pool;
/* tls must be non-NULL for https URLs; it must outlive the pool. */
struct upstream_pool *upstream_pool_new(struct event_base *base, struct evdns_base *dns,
					const struct upstream_url *url, struct upstream_tls *tls,
					const struct upstream_limits *lim);
/* Cancels pending requests (their callbacks run with UPSTREAM_CANCELLED,
 * synchronously) and frees every connection. Accepts NULL. */
void upstream_pool_free(struct upstream_pool *p);

/* Connections currently open (idle + busy) in the pool, for /metrics. */
size_t upstream_pool_connections(const struct upstream_pool *p);

enum upstream_outcome {
	UPSTREAM_RESPONSE,       /* an HTTP response arrived: see status */
	UPSTREAM_TIMEOUT,        /* no complete response within timeout_ms */
	UPSTREAM_CONNECT_FAILED, /* DNS failure, refused, unreachable */
	UPSTREAM_TLS_FAILED,     /* handshake or certificate verification failed */
	UPSTREAM_PROTOCOL_ERROR, /* reset mid-response, garbage status line ... */
	UPSTREAM_TOO_LARGE,      /* response headers/body over the limits */
	UPSTREAM_CANCELLED,      /* pool freed while pending */
};
const char *upstream_outcome_name(enum upstream_outcome o); /* "response", "timeout", ... */

struct upstream_header {
	const char *name;
	const char *value;
};

struct upstream_response {
	enum upstream_outcome outcome;
	int status; /* HTTP status when outcome == UPSTREAM_RESPONSE, else 0 */
	const char *
		reason; /* human text: "connection refused", "certificate verify failed: ...", ... */
	const char *body; /* response body (may be NULL), valid during the callback only */
	size_t body_len;
	long elapsed_ms;
	long long elapsed_us;     /* the same, in microseconds */
	const char *retry_after;  /* the response's Retry-After header (at most 64 bytes), or NULL;
				  * valid during the callback only */
	const char *content_type; /* the response's Content-Type (at most 128 bytes), or NULL;
				   * valid during the callback only */
	const char *retried;      /* when the first attempt met a keep-alive connection the
			      * endpoint had closed and was retried on a new one: why it
			      * failed; else NULL.  Valid during the callback only */
};

typedef void (*upstream_done_cb)(const struct upstream_response *r, void *arg);

struct upstream_request;
/* Content-Length and Host are added here; pass the other headers. */
int upstream_post(struct upstream_pool *p, const struct upstream_header *headers, size_t n_headers,
		  const void *body, size_t len, int timeout_ms, upstream_done_cb cb, void *arg,
		  struct upstream_request **ret, struct bridge_error *err);
/* The callback will not run; resources are released (now or later). */
void upstream_request_cancel(struct upstream_request *r);

#endif
