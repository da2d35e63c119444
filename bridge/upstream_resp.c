/*
 * upstream_resp: the upstream pool's strict, incremental response reader
 * (what it accepts: include/bridge/upstream_resp.h).
 *
 * Lines are read in place from the input's first contiguous chunk (pulled
 * up only when a line spans chunks); body bytes are moved once, from the
 * input into the body.  Nothing is copied per header but the two values
 * kept, Retry-After and Content-Type.
 */
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "bridge/hex.h"
#include "bridge/upstream_resp.h"

#define CHUNK_LINE_MAX 4096 /* a chunk size line with its extensions */
#define CONTINUE       2    /* internal: the state changed, go on */

enum {
	ST_STATUS,
	ST_HEADERS,
	ST_LENGTH,     /* body of Content-Length bytes */
	ST_CLOSE,      /* body until the peer closes */
	ST_CHUNK_SIZE, /* a chunk size line */
	ST_CHUNK_DATA,
	ST_CHUNK_END, /* the CRLF after a chunk's data */
	ST_TRAILERS,
	ST_DONE,
	ST_FAILED,
};

/* RFC 9110 tchar, a byte a value: one load per character scanned */
const unsigned char upstream_tchar[256] = {
	['0' ... '9'] = 1, ['A' ... 'Z'] = 1, ['a' ... 'z'] = 1, ['!'] = 1, ['#'] = 1, ['$'] = 1,
	['%'] = 1,         ['&'] = 1,         ['\''] = 1,        ['*'] = 1, ['+'] = 1, ['-'] = 1,
	['.'] = 1,         ['^'] = 1,         ['_'] = 1,         ['`'] = 1, ['|'] = 1, ['~'] = 1,
};

size_t upstream_token_len(const char *s, size_t n)
{
	size_t i = 0;

	while (i < n && upstream_tchar[(unsigned char)s[i]])
		i++;
	return i;
}

/* A field value's byte: not a control character other than HTAB. */
static int value_byte_ok(unsigned char c)
{
	return (c >= 0x20 && c != 0x7f) || c == '\t';
}

static int is_ows(char c)
{
	return c == ' ' || c == '\t';
}

/* s (n bytes) equals lower, a lower-case name of letters and '-' */
static int name_is(const char *s, size_t n, const char *lower, size_t len)
{
	size_t i;

	if (n != len)
		return 0;
	for (i = 0; i < n; i++)
		if (((unsigned char)s[i] | 0x20) != (unsigned char)lower[i])
			return 0;
	return 1;
}

void upstream_resp_free(struct upstream_resp *r)
{
	free(r->body);
	r->body = NULL;
	r->body_len = r->body_cap = 0;
}

void upstream_resp_init(struct upstream_resp *r, size_t max_head, size_t max_body)
{
	free(r->body);
	memset(r, 0, sizeof(*r));
	r->max_head = max_head;
	r->max_body = max_body;
}

const char *upstream_resp_error_text(enum upstream_resp_error e)
{
	switch (e) {
	case UPSTREAM_RESP_OK: return "no error";
	case UPSTREAM_RESP_E_STATUS: return "malformed response status line";
	case UPSTREAM_RESP_E_HEADER: return "malformed response header line";
	case UPSTREAM_RESP_E_LENGTH: return "malformed response Content-Length";
	case UPSTREAM_RESP_E_LENGTHS: return "two different Content-Length headers in the answer";
	case UPSTREAM_RESP_E_CODING:
		return "malformed response framing (a Transfer-Encoding other than chunked, "
		       "or with a Content-Length)";
	case UPSTREAM_RESP_E_CHUNK: return "malformed response chunk";
	case UPSTREAM_RESP_E_CLOSED: return "connection closed before the answer's end";
	case UPSTREAM_RESP_E_MEMORY: return "out of memory reading the response";
	case UPSTREAM_RESP_E_HEAD_LIMIT: return "response headers too large";
	case UPSTREAM_RESP_E_BODY_LIMIT: return "response body too large";
	}
	return "unknown error";
}

static enum upstream_resp_rc fail(struct upstream_resp *r, enum upstream_resp_error e)
{
	r->error = e;
	r->state = ST_FAILED;
	return e == UPSTREAM_RESP_E_HEAD_LIMIT || e == UPSTREAM_RESP_E_BODY_LIMIT
		       ? UPSTREAM_RESP_TOO_LARGE
		       : UPSTREAM_RESP_BAD;
}

static enum upstream_resp_rc finish(struct upstream_resp *r)
{
	if (r->body)
		r->body[r->body_len] = '\0';
	r->state = ST_DONE;
	return UPSTREAM_RESP_DONE;
}

/* Room for `more` body bytes and the NUL after them. */
static int body_reserve(struct upstream_resp *r, uint64_t more)
{
	size_t need = r->body_len + (size_t)more + 1, cap;
	char *nb;

	if (need <= r->body_cap)
		return 0;
	cap = r->body_cap * 2; /* exact for a Content-Length, doubling for the others */
	if (cap < need)
		cap = need;
	if (cap > r->max_body + 1 && need <= r->max_body + 1)
		cap = r->max_body + 1;
	nb = realloc(r->body, cap);
	if (!nb)
		return -1;
	r->body = nb;
	r->body_cap = cap;
	return 0;
}

static enum upstream_resp_rc status_line(struct upstream_resp *r, const char *p, size_t n)
{
	size_t i, k = 0;

	if (n < 12 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') || p[8] != ' ' ||
	    p[9] < '1' || p[9] > '5' || p[10] < '0' || p[10] > '9' || p[11] < '0' || p[11] > '9' ||
	    (n > 12 && p[12] != ' '))
		return fail(r, UPSTREAM_RESP_E_STATUS);
	r->minor = p[7] - '0';
	r->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
	for (i = 13; i < n; i++) {
		unsigned char c = (unsigned char)p[i];

		if (!value_byte_ok(c))
			return fail(r, UPSTREAM_RESP_E_STATUS);
		if (c >= 0x20 && c < 0x7f && k < sizeof(r->phrase) - 1)
			r->phrase[k++] = (char)c;
	}
	r->phrase[k] = '\0';
	r->state = ST_HEADERS;
	return CONTINUE;
}

static int length_value(struct upstream_resp *r, const char *v, size_t n)
{
	uint64_t x = 0;
	size_t i;

	if (n == 0 || n > 19)
		return fail(r, UPSTREAM_RESP_E_LENGTH);
	for (i = 0; i < n; i++) {
		if (v[i] < '0' || v[i] > '9')
			return fail(r, UPSTREAM_RESP_E_LENGTH);
		x = x * 10 + (uint64_t)(v[i] - '0');
	}
	if (r->has_length && r->length != x)
		return fail(r, UPSTREAM_RESP_E_LENGTHS);
	r->has_length = 1;
	r->length = x;
	return CONTINUE;
}

/* Each element of a comma-separated list, trimmed, to `each`. */
static int list_each(struct upstream_resp *r, const char *v, size_t n,
		     int (*each)(struct upstream_resp *, const char *, size_t))
{
	size_t i = 0;

	while (i < n) {
		size_t s = i, e;
		int rc;

		while (i < n && v[i] != ',')
			i++;
		e = i++;
		while (s < e && is_ows(v[s]))
			s++;
		while (e > s && is_ows(v[e - 1]))
			e--;
		if (e > s && (rc = each(r, v + s, e - s)) != CONTINUE)
			return rc;
	}
	return CONTINUE;
}

static int coding(struct upstream_resp *r, const char *t, size_t n)
{
	if (r->chunked) /* chunked is the last coding, and only once */
		return fail(r, UPSTREAM_RESP_E_CODING);
	if (name_is(t, n, "chunked", 7))
		r->chunked = 1;
	else
		r->coded = 1;
	return CONTINUE;
}

static int connection_option(struct upstream_resp *r, const char *t, size_t n)
{
	if (name_is(t, n, "close", 5))
		r->conn_close = 1;
	else if (name_is(t, n, "keep-alive", 10))
		r->conn_keep = 1;
	return CONTINUE;
}

static void keep_value(char *dst, size_t cap, const char *v, size_t n)
{
	if (n > cap - 1)
		n = cap - 1;
	memcpy(dst, v, n);
	dst[n] = '\0';
}

/* One header field: only the five this reader needs are looked at. */
static int header_field(struct upstream_resp *r, const char *name, size_t nl, const char *v,
			size_t n)
{
	switch (nl) {
	case 10:
		if (name_is(name, nl, "connection", 10))
			return list_each(r, v, n, connection_option);
		break;
	case 11:
		if (!r->has_retry_after && name_is(name, nl, "retry-after", 11)) {
			keep_value(r->retry_after, sizeof(r->retry_after), v, n);
			r->has_retry_after = 1;
		}
		break;
	case 12:
		if (!r->has_content_type && name_is(name, nl, "content-type", 12)) {
			keep_value(r->content_type, sizeof(r->content_type), v, n);
			r->has_content_type = 1;
		}
		break;
	case 14:
		if (name_is(name, nl, "content-length", 14))
			return length_value(r, v, n);
		break;
	case 17:
		if (name_is(name, nl, "transfer-encoding", 17))
			return list_each(r, v, n, coding);
		break;
	}
	return CONTINUE;
}

static int header_line(struct upstream_resp *r, const char *p, size_t n)
{
	size_t nl = upstream_token_len(p, n), s, e, i;

	/* no name, a name that is not a token, a continuation line (obs-fold) */
	if (nl == 0 || nl == n || p[nl] != ':')
		return fail(r, UPSTREAM_RESP_E_HEADER);
	for (s = nl + 1; s < n && is_ows(p[s]);)
		s++;
	for (e = n; e > s && is_ows(p[e - 1]);)
		e--;
	for (i = s; i < e; i++)
		if (!value_byte_ok((unsigned char)p[i]))
			return fail(r, UPSTREAM_RESP_E_HEADER);
	return header_field(r, p, nl, p + s, e - s);
}

/* The blank line after the headers: how the body is framed. */
static int head_end(struct upstream_resp *r)
{
	if (r->status < 200) { /* an interim answer: the final one follows */
		size_t max_head = r->max_head, max_body = r->max_body, head = r->head_bytes;

		upstream_resp_init(r, max_head, max_body);
		r->head_bytes = head; /* interim answers count towards the limit */
		return CONTINUE;
	}
	r->keep_alive = r->minor ? !r->conn_close : r->conn_keep && !r->conn_close;
	if (r->coded || (r->chunked && r->has_length))
		return fail(r, UPSTREAM_RESP_E_CODING);
	if (r->status == 204 || r->status == 304)
		return finish(r);
	if (r->chunked) {
		r->state = ST_CHUNK_SIZE;
		return CONTINUE;
	}
	if (!r->has_length) {
		r->keep_alive = 0;
		r->state = ST_CLOSE;
		return CONTINUE;
	}
	if (r->length > r->max_body)
		return fail(r, UPSTREAM_RESP_E_BODY_LIMIT);
	if (r->length == 0)
		return finish(r);
	if (body_reserve(r, r->length))
		return fail(r, UPSTREAM_RESP_E_MEMORY);
	r->left = r->length;
	r->state = ST_LENGTH;
	return CONTINUE;
}

/* chunk-size [ BWS ";" extensions ]: the extensions are ignored */
static int chunk_size(struct upstream_resp *r, const char *p, size_t n)
{
	uint64_t v = 0;
	size_t i = 0, j;
	int d;

	while (i < n && (d = hex_digit(p[i])) >= 0) {
		if (i++ >= 15)
			return fail(r, UPSTREAM_RESP_E_CHUNK);
		v = v * 16 + (uint64_t)d;
	}
	for (j = i; j < n && is_ows(p[j]);)
		j++;
	if (i == 0 || (j < n && p[j] != ';'))
		return fail(r, UPSTREAM_RESP_E_CHUNK);
	for (; j < n; j++)
		if (!value_byte_ok((unsigned char)p[j]))
			return fail(r, UPSTREAM_RESP_E_CHUNK);
	if (v == 0) {
		r->state = ST_TRAILERS;
		return CONTINUE;
	}
	if (v > r->max_body - r->body_len)
		return fail(r, UPSTREAM_RESP_E_BODY_LIMIT);
	if (body_reserve(r, v))
		return fail(r, UPSTREAM_RESP_E_MEMORY);
	r->left = v;
	r->state = ST_CHUNK_DATA;
	return CONTINUE;
}

/* One whole line, n bytes with its line end. */
static int line(struct upstream_resp *r, const char *p, size_t n)
{
	int chunk = r->state == ST_CHUNK_SIZE || r->state == ST_CHUNK_END;

	if (n < 2 || p[n - 2] != '\r') /* a bare LF */
		return fail(r, chunk                   ? UPSTREAM_RESP_E_CHUNK
			       : r->state == ST_STATUS ? UPSTREAM_RESP_E_STATUS
						       : UPSTREAM_RESP_E_HEADER);
	if (!chunk)
		r->head_bytes += n;
	n -= 2;
	switch (r->state) {
	case ST_STATUS: return status_line(r, p, n);
	case ST_HEADERS: return n ? header_line(r, p, n) : head_end(r);
	case ST_CHUNK_SIZE: return chunk_size(r, p, n);
	case ST_CHUNK_END:
		if (n)
			return fail(r, UPSTREAM_RESP_E_CHUNK);
		r->state = ST_CHUNK_SIZE;
		return CONTINUE;
	default: /* ST_TRAILERS: skipped */ return n ? CONTINUE : finish(r);
	}
}

static int line_state(int s)
{
	return s == ST_STATUS || s == ST_HEADERS || s == ST_CHUNK_SIZE || s == ST_CHUNK_END ||
	       s == ST_TRAILERS;
}

/* The most the next line may take, and what it is when it takes more. */
static size_t line_budget(const struct upstream_resp *r, enum upstream_resp_error *over)
{
	if (r->state == ST_CHUNK_SIZE || r->state == ST_CHUNK_END) {
		*over = UPSTREAM_RESP_E_CHUNK;
		return r->state == ST_CHUNK_END ? 2 : CHUNK_LINE_MAX;
	}
	*over = UPSTREAM_RESP_E_HEAD_LIMIT;
	return r->max_head > r->head_bytes ? r->max_head - r->head_bytes : 0;
}

/* The whole lines at p[*off, n), *off moved past them: CONTINUE when the
 * state left the lines, UPSTREAM_RESP_MORE when the next line does not end
 * in these bytes, or what a line or its limit came to. */
static int lines_in(struct upstream_resp *r, const char *p, size_t n, size_t *off)
{
	int rc = CONTINUE;

	while (rc == CONTINUE && line_state(r->state)) {
		enum upstream_resp_error over;
		size_t budget = line_budget(r, &over), lim = n - *off < budget ? n - *off : budget;
		const char *lf = memchr(p + *off, '\n', lim);

		if (!lf)
			return n - *off >= budget ? fail(r, over) : UPSTREAM_RESP_MORE;
		rc = line(r, p + *off, (size_t)(lf - (p + *off)) + 1);
		*off = (size_t)(lf - p) + 1;
	}
	return rc;
}

/* The whole lines at the front of `in`: its first chunk, or the bytes of a
 * line that spans chunks pulled up into one. */
static int lines_take(struct upstream_resp *r, struct evbuffer *in)
{
	size_t avail = evbuffer_get_length(in), off = 0, n;
	struct evbuffer_iovec v;
	const char *p;
	int rc;

	if (avail == 0 || evbuffer_peek(in, -1, NULL, &v, 1) < 1)
		return UPSTREAM_RESP_MORE;
	p = v.iov_base;
	n = v.iov_len;
	rc = lines_in(r, p, n, &off);
	if (rc == UPSTREAM_RESP_MORE && n < avail) {
		if (off == 0) { /* the line spans chunks */
			enum upstream_resp_error over;
			size_t budget = line_budget(r, &over);

			n = avail < budget ? avail : budget;
			p = (const char *)evbuffer_pullup(in, (ev_ssize_t)n);
			if (!p)
				return fail(r, UPSTREAM_RESP_E_MEMORY);
			rc = lines_in(r, p, n, &off);
		}
		if (rc == UPSTREAM_RESP_MORE && off > 0 && n < avail)
			rc = CONTINUE; /* after the drain the rest is a chunk's front */
	}
	evbuffer_drain(in, off);
	return rc;
}

/* Of avail body bytes there, how many the body takes now (*take):
 * CONTINUE, or why none. */
static int body_room(struct upstream_resp *r, size_t avail, size_t *take)
{
	if (avail == 0)
		return UPSTREAM_RESP_MORE;
	if (r->state == ST_CLOSE) {
		if (avail > r->max_body - r->body_len)
			return fail(r, UPSTREAM_RESP_E_BODY_LIMIT);
		if (body_reserve(r, avail))
			return fail(r, UPSTREAM_RESP_E_MEMORY);
		*take = avail;
	} else {
		*take = avail < r->left ? avail : (size_t)r->left;
	}
	return CONTINUE;
}

/* n body bytes copied in: where that leaves the answer. */
static int body_got(struct upstream_resp *r, size_t n)
{
	r->body_len += n;
	if (r->state == ST_CLOSE)
		return UPSTREAM_RESP_MORE;
	r->left -= n;
	if (r->left)
		return UPSTREAM_RESP_MORE;
	if (r->state == ST_LENGTH)
		return finish(r);
	r->state = ST_CHUNK_END;
	return CONTINUE;
}

static int body_take(struct upstream_resp *r, struct evbuffer *in)
{
	size_t n = 0;
	int rc = body_room(r, evbuffer_get_length(in), &n);

	if (rc != CONTINUE)
		return rc;
	if (evbuffer_remove(in, r->body + r->body_len, n) != (int)n)
		return fail(r, UPSTREAM_RESP_E_MEMORY);
	return body_got(r, n);
}

enum upstream_resp_rc upstream_resp_parse(struct upstream_resp *r, struct evbuffer *in)
{
	int rc = CONTINUE;

	while (rc == CONTINUE) {
		switch (r->state) {
		case ST_DONE: return UPSTREAM_RESP_DONE;
		case ST_FAILED: return fail(r, r->error);
		case ST_LENGTH:
		case ST_CLOSE:
		case ST_CHUNK_DATA: rc = body_take(r, in); break;
		default: rc = lines_take(r, in); break;
		}
	}
	return (enum upstream_resp_rc)rc;
}

enum upstream_resp_rc upstream_resp_parse_bytes(struct upstream_resp *r, const char *p, size_t n,
						size_t *used)
{
	int rc = CONTINUE;
	size_t off = 0, k = 0;

	while (rc == CONTINUE) {
		switch (r->state) {
		case ST_DONE: rc = UPSTREAM_RESP_DONE; break;
		case ST_FAILED: rc = fail(r, r->error); break;
		case ST_LENGTH:
		case ST_CLOSE:
		case ST_CHUNK_DATA:
			rc = body_room(r, n - off, &k);
			if (rc == CONTINUE) {
				memcpy(r->body + r->body_len, p + off, k);
				off += k;
				rc = body_got(r, k);
			}
			break;
		default: rc = lines_in(r, p, n, &off); break;
		}
	}
	*used = off;
	return (enum upstream_resp_rc)rc;
}

enum upstream_resp_rc upstream_resp_eof(struct upstream_resp *r)
{
	switch (r->state) {
	case ST_CLOSE: return finish(r);
	case ST_DONE: return UPSTREAM_RESP_DONE;
	case ST_FAILED: return fail(r, r->error);
	default: return fail(r, UPSTREAM_RESP_E_CLOSED);
	}
}
