/*
 * httpd: the webhook listener's own HTTP/1.1 server over the bufferevents
 * of its connections (plain or TLS), in place of evhttp's server side.
 *
 * The reader (httpd_read) is strict and incremental, the sibling of
 * upstream_resp: the request head is checked as reqhead_check says (bare
 * LF, obs-fold, NUL, versions, Host, a declared body that can never be
 * taken), copied whole into the request's arena and read in place (no copy
 * per header); the body is taken by Content-Length only.  A request whose
 * framing it cannot trust (a Transfer-Encoding, Content-Length twice or not
 * in digits, a header name that is not a token) reaches the handler with
 * no body, to be refused, and its connection is closed after the answer.
 *
 * The writer (httpd_send) puts the status line and headers into one buffer
 * (Date, Content-Length, Content-Type and Connection as evhttp added them),
 * the body after it, and writes at once.  A kept-alive connection keeps its
 * read interest across requests; a closing one is shut for writing and
 * drained before it is freed (lingering close).
 *
 * Each connection has a wall-clock deadline per request (first byte to the
 * handler; 408 past it) and an idle timeout.  One httpd per event_base;
 * not thread-safe.
 */
#ifndef BRIDGE_HTTPD_H
#define BRIDGE_HTTPD_H

#include <stddef.h>
#include <stdint.h>

#include "bridge/arena.h"
#include "bridge/reqhead.h"

struct event_base;
struct evbuffer;
struct evconnlistener;
struct httpd;
struct httpd_conn;
typedef struct ssl_ctx_st SSL_CTX;

/* methods, the same bits as libevent's EVHTTP_REQ_* */
enum httpd_method {
	HTTPD_GET = 1 << 0,
	HTTPD_POST = 1 << 1,
	HTTPD_HEAD = 1 << 2,
	HTTPD_PUT = 1 << 3,
	HTTPD_DELETE = 1 << 4,
	HTTPD_OPTIONS = 1 << 5,
	HTTPD_TRACE = 1 << 6,
	HTTPD_CONNECT = 1 << 7,
	HTTPD_PATCH = 1 << 8,
};

struct httpd_header {
	const char *name, *value; /* NUL-terminated, in the request's arena */
	size_t name_len;
};

/* One request as the handler sees it.  Valid until it is answered. */
struct httpd_request {
	int method;
	int major, minor;   /* the answer's status line says this version */
	const char *target; /* the request target as sent */
	const char *path,
		*query;   /* path without query and fragment ("/" when empty); query or NULL */
	const char *peer; /* numeric address */
	unsigned peer_port;
	const struct httpd_header *headers;
	size_t n_headers;
	struct evbuffer *body;
	/* the reader's findings */
	int framing_bad;                 /* no body was read: answer and close */
	int bad_name;                    /* a header name that is not a token */
	int n_length, bad_length;        /* Content-Length headers; one not only digits */
	int n_coding;                    /* Transfer-Encoding headers */
	int conn_close, conn_keep_alive; /* the first Connection says close / keep-alive */
	int seen_conn;
	const char *expect;  /* the first Expect, or NULL */
	int expect_continue; /* Expect: 100-continue with a body to come */
	/* the answer's headers */
	struct httpd_header *out;
	size_t n_out, cap_out;
	struct arena *arena;
	struct httpd_conn *conn;
};

/* ---- the reader ---------------------------------------------------------- */

enum httpd_read_rc {
	HTTPD_READ_MORE = 0,     /* incomplete: call again when more arrives */
	HTTPD_READ_HEAD = 1,     /* the head is read; the body is to come (see expect_continue) */
	HTTPD_READ_DONE = 2,     /* one whole request read */
	HTTPD_READ_REFUSED = -1, /* answer with httpd_refusal_text and close */
};

struct httpd_reader {
	size_t max_head;              /* request line and headers, line ends not counted */
	struct reqhead_limits limits; /* what reqhead_check refuses */
	/* a refusal */
	int status;  /* 400, 413, 417, 501 */
	int verdict; /* 1: the text of v, 0: the generic page of status */
	struct reqhead_verdict v;
	/* where it is */
	int state;
	size_t scanned; /* head bytes looked at */
	size_t content; /* head bytes without the line ends */
	int lines;      /* complete head lines seen */
	uint64_t left;  /* body bytes still to come */
};

void httpd_reader_init(struct httpd_reader *rd, size_t max_head,
		       const struct reqhead_limits *limits);
/* Reads what `in` holds into req (fields, headers in req->arena, body into
 * req->body), draining what it consumed; a new request starts after DONE. */
enum httpd_read_rc httpd_read(struct httpd_reader *rd, struct evbuffer *in,
			      struct httpd_request *req);
/* The whole answer to a refusal, at most cap bytes; its length. */
size_t httpd_refusal_text(const struct httpd_reader *rd, char *out, size_t cap);

/* The first input header of that name (any case), or NULL. */
const char *httpd_find(const struct httpd_request *r, const char *name);
/* The first answer header of that name (any case), or NULL. */
const char *httpd_out_find(const struct httpd_request *r, const char *name);
/* Add an answer header (both copied); 0, or -1 without memory. */
int httpd_add_header(struct httpd_request *r, const char *name, const char *value);

/* ---- the server ---------------------------------------------------------- */

typedef void (*httpd_handler)(struct httpd_request *req, void *arg);

struct httpd_limits {
	size_t max_head;
	struct reqhead_limits body; /* max_body, and the ceiling no declared body may cross */
	int idle_timeout_ms;        /* no byte in or out for that long: closed */
	int deadline_ms;            /* a request still arriving after that long: 408 */
};

/* Serve the connections `listener` accepts (the httpd takes it and frees it
 * with itself); tls: the listener's server context or NULL, which must
 * outlive the httpd.  Each whole request goes to handler, which must answer
 * it exactly once, now or later. */
struct httpd *httpd_new(struct event_base *base, struct evconnlistener *listener, SSL_CTX *tls,
			httpd_handler handler, void *arg);
/* Limits for new requests. */
void httpd_set_limits(struct httpd *h, const struct httpd_limits *lim);

/* Threads accepting on one listening socket.  The first thread the kernel
 * wakes would take every connection waiting (libevent accepts until the
 * queue is empty), so a client that opens its pool at once lands on one
 * thread.  With a share, a thread holding more than one connection more
 * than another stops accepting for a millisecond and leaves the rest to
 * the others.  Each of the `threads` httpds gets its own index. */
struct httpd_share;
struct httpd_share *httpd_share_new(int threads); /* NULL: out of memory */
void httpd_share_free(struct httpd_share *sh);    /* accepts NULL; after every httpd */
/* Before the httpd accepts its first connection. */
void httpd_set_share(struct httpd *h, struct httpd_share *sh, int index);
/* Stop accepting (the listener is freed); open connections stay. */
void httpd_unlisten(struct httpd *h);
/* Every connection closed; an unanswered request must not be answered after. */
void httpd_free(struct httpd *h); /* accepts NULL */

/* The answer: status line in the request's version, the headers added, then
 * those evhttp would add (Date on HTTP/1.1, Content-Length when the answer
 * has a body and the connection can stay, Content-Type application/json,
 * Connection as the request asked), and body (moved out; NULL: none; never
 * sent to HEAD).  The request is gone after this call. */
void httpd_send(struct httpd_request *r, int status, const char *phrase, struct evbuffer *body);

/* Client connections open now. */
size_t httpd_connections(const struct httpd *h); /* accepts NULL */
/* Requests closed for passing the deadline. */
unsigned long httpd_deadline_kills(const struct httpd *h);

#endif
