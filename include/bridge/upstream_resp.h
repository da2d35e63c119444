/*
 * upstream_resp: a strict, incremental HTTP/1.1 response reader for the
 * upstream pool.  It reads from an evbuffer what arrived so far, takes what
 * it understood out of it and keeps its place for the next read.
 *
 * What it accepts (RFC 9112, the strict side):
 *  - status line "HTTP/1.0 DDD[ phrase]" or "HTTP/1.1 DDD[ phrase]", the code
 *    100 to 599; lines end in CRLF (a bare LF is refused);
 *  - header lines "token:value"; a continuation line (obs-fold), a name that
 *    is not a token or a control character in a value is refused;
 *  - status line and header section within max_head bytes together;
 *  - Content-Length (digits only; two different values are refused),
 *    Transfer-Encoding ending in chunked (sizes in hex, extensions ignored,
 *    trailers skipped), or neither: the body runs until the peer closes;
 *  - 1xx interim answers are skipped; 204 and 304 have no body;
 *  - a body over max_body is refused as too large.
 * Only Content-Length, Transfer-Encoding, Connection, Retry-After and
 * Content-Type are looked at; no header list is built.
 */
#ifndef BRIDGE_UPSTREAM_RESP_H
#define BRIDGE_UPSTREAM_RESP_H

#include <stddef.h>
#include <stdint.h>

struct evbuffer;

enum upstream_resp_rc {
	UPSTREAM_RESP_MORE = 0,       /* incomplete: call again when more arrives */
	UPSTREAM_RESP_DONE = 1,       /* one whole final answer read */
	UPSTREAM_RESP_BAD = -1,       /* not HTTP as accepted here: see error */
	UPSTREAM_RESP_TOO_LARGE = -2, /* over a limit: see error */
};

enum upstream_resp_error {
	UPSTREAM_RESP_OK,
	UPSTREAM_RESP_E_STATUS,     /* the status line */
	UPSTREAM_RESP_E_HEADER,     /* a header line */
	UPSTREAM_RESP_E_LENGTH,     /* a Content-Length that is not digits */
	UPSTREAM_RESP_E_LENGTHS,    /* two different Content-Length values */
	UPSTREAM_RESP_E_CODING,     /* a Transfer-Encoding other than chunked, or with a length */
	UPSTREAM_RESP_E_CHUNK,      /* a chunk size line or a chunk's end */
	UPSTREAM_RESP_E_CLOSED,     /* the peer closed before the answer's end */
	UPSTREAM_RESP_E_MEMORY,     /* no memory for the body */
	UPSTREAM_RESP_E_HEAD_LIMIT, /* status line and headers over max_head */
	UPSTREAM_RESP_E_BODY_LIMIT, /* body over max_body */
};

struct upstream_resp {
	size_t max_head, max_body;
	/* the answer */
	int status;
	int keep_alive; /* the connection may carry another request afterwards */
	enum upstream_resp_error error;
	char phrase[65];        /* the reason phrase's printable bytes, at most 64 */
	char retry_after[65];   /* the first Retry-After's first 64 bytes */
	char content_type[129]; /* the first Content-Type's first 128 bytes */
	int has_retry_after, has_content_type;
	char *body; /* malloc'd, NUL-terminated; NULL when empty */
	size_t body_len;
	/* where it is */
	int state;
	int minor;          /* HTTP/1.minor */
	int chunked, coded; /* Transfer-Encoding: ends in chunked, names another coding */
	int has_length;
	int conn_close, conn_keep;
	uint64_t length;   /* Content-Length */
	uint64_t left;     /* body or chunk bytes still to come */
	size_t head_bytes; /* status lines, headers and trailers read */
	size_t body_cap;
};

/* Ready for a new answer; frees a body a previous one left. */
void upstream_resp_init(struct upstream_resp *r, size_t max_head, size_t max_body);
void upstream_resp_free(struct upstream_resp *r); /* the body */

/* Reads what `in` holds, draining what it consumed. */
enum upstream_resp_rc upstream_resp_parse(struct upstream_resp *r, struct evbuffer *in);
/* The same over n bytes in memory, which follow what it was given before:
 * *used of them taken.  The rest (a line not ended in them, or bytes past
 * the answer) is the caller's to give again, with what comes next. */
enum upstream_resp_rc upstream_resp_parse_bytes(struct upstream_resp *r, const char *p, size_t n,
						size_t *used);
/* The peer closed: DONE when the body was delimited by the close, else BAD
 * with UPSTREAM_RESP_E_CLOSED. */
enum upstream_resp_rc upstream_resp_eof(struct upstream_resp *r);

/* 1 for the RFC 9110 token characters (tchar), else 0 (NUL included). */
extern const unsigned char upstream_tchar[256];
/* How many of s's first n bytes are token characters. */
size_t upstream_token_len(const char *s, size_t n);

/* "malformed response status line", ... for an error (not the limits'). */
const char *upstream_resp_error_text(enum upstream_resp_error e);

#endif
