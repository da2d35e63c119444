/*
 * reqhead: a strict reading of a request's raw head (request line and
 * header lines, before any parser accepted it), for what evhttp 2.1 lets
 * through or handles late: versions like "HTTP/01.1", bare LF line ends,
 * obs-fold continuation lines, NUL bytes, HTTP/1.1 without exactly one Host
 * (RFC 9112 section 3.2: 400), and a declared body that can never be taken
 * (a Content-Length over the hard ceiling, or over max_body when the client
 * waits for "100 Continue"), which must be refused before any body is sent.
 * Pure functions over bytes: no I/O, no allocation.
 */
#ifndef BRIDGE_REQHEAD_H
#define BRIDGE_REQHEAD_H

#include <stddef.h>

struct reqhead_limits {
	unsigned long long max_body; /* limits.max_body */
	unsigned long long ceiling;  /* the hard ceiling no body may cross */
};

struct reqhead_verdict {
	int status;       /* 400 or 413 */
	const char *code; /* "bad_request", "body_too_large" */
	char message[160];
};

/* buf holds the first len bytes a connection sent for a request.
 * Returns 0 when the head is not complete yet, 1 when it is complete and
 * acceptable, -1 when it is refused (ret filled in). */
int reqhead_check(const char *buf, size_t len, const struct reqhead_limits *lim,
		  struct reqhead_verdict *ret);

#endif
