/*
 * accesslog: the one access-log line of an answered request (event
 * "request"), for the webhook listener and the admin listener alike.
 *
 * The line names the client (and, when listen.trusted_proxies names the
 * peer, the address the proxy forwarded in X-Forwarded-For), the method,
 * the path without its query string (a query may carry a token), the HTTP
 * version, the user agent, the status, bytes in and out, the duration, what
 * the caller knows of the exchange (route, participation and delivery ids,
 * the rule and key of a mapping failure) and a `message` a human can read.
 * Every peer-supplied text is escaped by the log module.  Thread-safe.
 */
#ifndef BRIDGE_ACCESSLOG_H
#define BRIDGE_ACCESSLOG_H

#include <stddef.h>

#include "bridge/log.h"

struct access_list;
struct evhttp_request;

struct accesslog_entry {
	int status;
	size_t bytes_in;           /* request body */
	size_t bytes_out;          /* answer body to the sender */
	size_t upstream_bytes_out; /* body sent to an endpoint; 0: none */
	long long duration_us;     /* arrival to answer */
	int upstream_status;       /* 0: none */
	const char *route, *participation_id, *delivery_id;
	const char *traceparent, *request_id; /* the sender's trace context, passed on */
	const char *rule, *key;               /* a mapping failure's rule (file:line) and v1 key */
	const char *error; /* what went wrong, in full (the log may say more than the answer) */
	const char *answered_by;  /* "legacy_endpoint" when the v1 importer answered */
	unsigned long suppressed; /* lines the rate limit dropped before this one */
};

/* What the line says of the request, copied out of it: libevent may free
 * the request inside evhttp_send_reply (a client already gone), and httpd's
 * is gone once answered, so capture before answering and write after.  Long paths and user agents are cut. */
struct accesslog_request {
	char client[64];
	unsigned client_port;
	char forwarded_for[64]; /* "" when none */
	const char *method;     /* static text */
	char path[512];
	char http_version[8];
	char user_agent[256];
	int has_user_agent;
};

/* What the line needs of a request, whichever server read it. */
struct accesslog_view {
	const char *peer; /* numeric address, or NULL */
	unsigned peer_port;
	const char *forwarded_for; /* the X-Forwarded-For header, or NULL */
	const char *path;          /* without the query */
	const char *user_agent;    /* or NULL */
	int method;                /* EVHTTP_REQ_* (httpd's bits are the same) */
	int major, minor;
};

/* trusted: listen.trusted_proxies, or NULL. */
void accesslog_capture_view(struct accesslog_request *ret, const struct accesslog_view *v,
			    const struct access_list *trusted);
/* The same for a request of evhttp's (the admin listener). */
void accesslog_capture(struct accesslog_request *ret, struct evhttp_request *req,
		       const struct access_list *trusted);

/* Write the line at `level`. */
void accesslog_write(const struct accesslog_request *r, const struct accesslog_entry *e,
		     enum log_level level);

/* The client a trusted proxy forwarded: when the peer is in `trusted`, the
 * rightmost X-Forwarded-For entry that is not itself a trusted proxy.
 * 0 and the address in out, or -1 (no trusted peer, no usable header). */
int accesslog_forwarded_for(const char *peer, const char *xff, const struct access_list *trusted,
			    char *out, size_t cap);

#endif
