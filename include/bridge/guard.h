/*
 * guard: per-connection protection around evhttp's inbound connections, for
 * what libevent 2.1 does not do itself (no default limits, no
 * inbound timeout, no connection cap, an accept loop that spins on EMFILE):
 *
 *  - a wall-clock deadline per request: from the first byte of a request to
 *    the moment the whole request reached the handler.  A slow-drip client
 *    (one byte a second resets evhttp's idle timeout) is answered 408 and
 *    closed when it passes the deadline;
 *  - accept errors (EMFILE/ENFILE) pause the listener for a moment instead
 *    of spinning;
 *  - every request head is read strictly before evhttp parses it
 *    (reqhead_check): a refused head is answered 400 or 413 at once, without
 *    "100 Continue", and the connection closed;
 *  - libevent's own error pages (413 past the hard body ceiling, 400 for
 *    framing it refuses, 431-ish header overflows) are rewritten into the
 *    bridge's JSON error shape before they leave.
 *
 * libevent 2.1 gives no hook with the connection's socket at accept time, so
 * the guard learns the socket at its first byte (an input-buffer callback on
 * the bufferevent it creates for evhttp) and keeps per-socket state in a
 * table indexed by fd, checked once a second.  One guard per worker; not
 * thread-safe.
 */
#ifndef BRIDGE_GUARD_H
#define BRIDGE_GUARD_H

#include <stddef.h>

struct event_base;
struct evhttp;
struct evhttp_request;
struct evconnlistener;
struct guard;
typedef struct ssl_ctx_st SSL_CTX;

/* tls: the listener's server context (HTTPS listener), or NULL; it must
 * outlive the guard.  http NULL: a listener served by httpd, whose
 * connections are its own; the guard only pauses accepting on errors. */
struct guard *guard_new(struct event_base *base, struct evhttp *http,
			struct evconnlistener *listener, int request_deadline_ms, SSL_CTX *tls);
void guard_free(struct guard *g); /* accepts NULL */

/* Limits for the strict head check: a declared body over ceiling (or over
 * max_body with "Expect: 100-continue") is refused; heads longer than
 * max_head are left to evhttp.  Until called (max_body 0), no check. */
void guard_set_head_limits(struct guard *g, unsigned long long max_body, unsigned long long ceiling,
			   size_t max_head);

/* The listener was freed (a drain): the guard no longer resumes it. */
void guard_listener_gone(struct guard *g);

/* Call on the worker thread that runs the guard's event_base, before it
 * dispatches: the buffer callbacks find their guard through it. */
void guard_bind_thread(struct guard *g);

/* The handler got a whole request / answered it. */
void guard_request_begin(struct guard *g, struct evhttp_request *req);
void guard_request_end(struct guard *g, struct evhttp_request *req);

/* Sockets currently tracked (open connections that sent at least a byte). */
unsigned long guard_connections(const struct guard *g);
/* Requests closed for passing the deadline; accept pauses. */
unsigned long guard_deadline_kills(const struct guard *g);
unsigned long guard_accept_pauses(const struct guard *g);

/* The answers written from here, shared with httpd (each the whole
 * response; its length, 0 when cap is too small): a refused head (400 or
 * 413 with reqhead's message), the JSON page in place of libevent's error
 * page for `status`, and the 408 of a request past its deadline. */
struct reqhead_verdict;
size_t guard_head_refusal_text(const struct reqhead_verdict *v, char *out, size_t cap);
size_t guard_error_page_text(int status, char *out, size_t cap);
size_t guard_timeout_text(char *out, size_t cap);
/* The log line of a request closed at its deadline. */
void guard_log_deadline(int deadline_ms);

/* Raise RLIMIT_NOFILE's soft limit to the hard one; returns the new limit. */
long guard_raise_fd_limit(void);

#endif
