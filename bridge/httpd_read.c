/* The webhook listener's request reader and header lists (see httpd.h). */
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "bridge/guard.h"
#include "bridge/httpd.h"
#include "bridge/upstream.h"

enum { RS_HEAD, RS_BODY };

/* head bytes pulled up at first; doubled while the head goes on */
#define FIRST_LOOK 4096

void httpd_reader_init(struct httpd_reader *rd, size_t max_head,
		       const struct reqhead_limits *limits)
{
	memset(rd, 0, sizeof(*rd));
	rd->max_head = max_head;
	rd->limits = *limits;
}

static enum httpd_read_rc refuse(struct httpd_reader *rd, int status)
{
	rd->status = status;
	rd->verdict = 0;
	return HTTPD_READ_REFUSED;
}

/* reqhead_check over the head's first len bytes: -1 when it refuses them. */
static int head_check(struct httpd_reader *rd, const char *buf, size_t len)
{
	int rc = reqhead_check(buf, len, &rd->limits, &rd->v);

	if (rc < 0) {
		rd->status = rd->v.status;
		rd->verdict = 1;
	}
	return rc;
}

static const struct {
	const char *name;
	int method;
} methods[] = {
	{ "GET", HTTPD_GET },     { "POST", HTTPD_POST },       { "HEAD", HTTPD_HEAD },
	{ "PUT", HTTPD_PUT },     { "DELETE", HTTPD_DELETE },   { "OPTIONS", HTTPD_OPTIONS },
	{ "TRACE", HTTPD_TRACE }, { "CONNECT", HTTPD_CONNECT }, { "PATCH", HTTPD_PATCH },
};

static int method_of(const char *m, size_t n)
{
	for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++)
		if (strlen(methods[i].name) == n && memcmp(methods[i].name, m, n) == 0)
			return methods[i].method;
	return 0;
}

static int scheme_char(char c, int first)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (!first && ((c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.'));
}

/* Where the path of an absolute-form target ("http://host/p?q") starts. */
static const char *path_start(const char *t)
{
	const char *p = t;

	if (*t == '/' || !scheme_char(*t, 1))
		return t;
	while (scheme_char(*p, 0))
		p++;
	if (strncmp(p, "://", 3) != 0)
		return t;
	return p + 3 + strcspn(p + 3, "/?#");
}

/* The request target into path and query; -1 without memory. */
static int target_split(struct httpd_request *req, const char *t)
{
	const char *p = path_start(t);
	size_t n = strcspn(p, "?#");

	req->path = n ? arena_strndup(req->arena, p, n) : "/";
	req->query = NULL;
	if (p[n] == '?')
		req->query = arena_strndup(req->arena, p + n + 1, strcspn(p + n + 1, "#"));
	return req->path && (p[n] != '?' || req->query) ? 0 : -1;
}

/* "METHOD SP target SP HTTP/d.d", NUL-terminated; reqhead_check passed the
 * version.  0, or the status of a refusal. */
static int request_line(struct httpd_request *req, char *line, size_t n)
{
	char *sp1 = memchr(line, ' ', n), *sp2 = memrchr(line, ' ', n);

	if (!sp1 || sp1 == line || sp2 <= sp1 + 1)
		return 400; /* no method, or no target */
	*sp1 = *sp2 = '\0';
	req->target = sp1 + 1;
	for (const char *p = req->target; *p; p++)
		if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e)
			return 400;
	req->major = sp2[6] - '0';
	req->minor = sp2[8] - '0';
	if (req->major > 1)
		return 400;
	req->method = method_of(line, (size_t)(sp1 - line));
	if (!req->method || req->method == HTTPD_CONNECT)
		return 501; /* never framed as a request we can answer */
	return target_split(req, req->target) < 0 ? 503 : 0;
}

/* Digits only; saturates far past any ceiling. */
static uint64_t digits_value(const char *v, int *bad)
{
	uint64_t x = 0;

	*bad = !*v || v[strspn(v, "0123456789")] != '\0';
	for (; !*bad && *v; v++)
		x = x > UINT64_MAX / 20 ? UINT64_MAX / 2 : x * 10 + (uint64_t)(*v - '0');
	return x;
}

/* What the reader itself needs of one header. */
static void header_note(struct httpd_request *req, const struct httpd_header *h, uint64_t *length)
{
	int bad;

	if (!upstream_header_name_valid(h->name))
		req->bad_name = 1;
	if (h->name_len == 14 && strcasecmp(h->name, "Content-Length") == 0) {
		*length = digits_value(h->value, &bad);
		req->bad_length |= bad;
		req->n_length++;
	} else if (h->name_len == 17 && strcasecmp(h->name, "Transfer-Encoding") == 0) {
		req->n_coding++;
	} else if (h->name_len == 10 && strcasecmp(h->name, "Connection") == 0 && !req->seen_conn) {
		req->seen_conn = 1; /* the first one counts, as evhttp read it */
		req->conn_close = strcasecmp(h->value, "close") == 0;
		req->conn_keep_alive = strcasecmp(h->value, "keep-alive") == 0;
	} else if (h->name_len == 6 && strcasecmp(h->name, "Expect") == 0 && !req->expect) {
		req->expect = h->value;
	}
}

/* One "name: value" line, NUL-terminated, into h.  0, or 400. */
static int header_line(char *line, size_t n, struct httpd_header *h)
{
	char *colon = memchr(line, ':', n), *v, *end = line + n;

	if (!colon || memchr(line, '\r', n))
		return 400;
	*colon = '\0';
	h->name = line;
	h->name_len = (size_t)(colon - line);
	for (v = colon + 1; v < end && (*v == ' ' || *v == '\t'); v++)
		;
	while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	*end = '\0';
	h->value = v;
	return 0;
}

/* The whole head (CRLF lines, checked by reqhead_check) read in place from
 * the request's arena.  0, or the status of a refusal. */
static int head_parse(struct httpd_reader *rd, struct httpd_request *req, const char *buf,
		      size_t len)
{
	char *h = arena_strndup(req->arena, buf, len), *p, *lf;
	struct httpd_header *hs;
	uint64_t length = 0;
	int rc;

	hs = h ? arena_alloc(req->arena, (size_t)rd->lines * sizeof(*hs)) : NULL;
	if (!hs)
		return 503;
	lf = strchr(h, '\n');
	rc = request_line(req, h, (size_t)(lf - 1 - h));
	for (p = lf + 1; rc == 0 && (lf = strchr(p, '\n')) != NULL && lf - 1 > p; p = lf + 1) {
		rc = header_line(p, (size_t)(lf - 1 - p), &hs[req->n_headers]);
		if (rc == 0)
			header_note(req, &hs[req->n_headers++], &length);
	}
	req->headers = hs;
	req->framing_bad = req->bad_name || req->n_coding || req->n_length > 1 || req->bad_length;
	rd->left = req->framing_bad ? 0 : length;
	if (rc == 0 && req->expect && rd->left && req->minor >= 1) {
		if (strcasecmp(req->expect, "100-continue") != 0)
			return 417;
		req->expect_continue = 1;
	}
	return rc;
}

/* Leading empty lines are skipped (RFC 9112 section 2.2). */
static void skip_empty_lines(struct httpd_reader *rd, struct evbuffer *in)
{
	char two[2];

	while (rd->scanned == 0 && evbuffer_copyout(in, two, 2) == 2 && two[0] == '\r' &&
	       two[1] == '\n')
		evbuffer_drain(in, 2);
}

/* Line by line from where the last look stopped: the head's length once its
 * empty line is there, 0 while it goes on, -1 on a refusal. */
static ev_ssize_t head_scan(struct httpd_reader *rd, const char *buf, size_t n)
{
	const char *p = buf + rd->scanned, *end = buf + n, *lf;
	size_t part;

	while ((lf = memchr(p, '\n', (size_t)(end - p))) != NULL) {
		int bare = lf == p || lf[-1] != '\r';
		size_t content = (size_t)(lf - p) - (bare ? 0 : 1);

		rd->scanned = (size_t)(lf + 1 - buf);
		if ((bare || rd->lines == 0 || content == 0) &&
		    head_check(rd, buf, rd->scanned) < 0)
			return -1;
		if (content == 0)
			return (ev_ssize_t)rd->scanned;
		rd->content += content;
		if (rd->content > rd->max_head)
			return refuse(rd, 400);
		rd->lines++;
		p = lf + 1;
	}
	part = (size_t)(end - p);
	if (part && end[-1] == '\r')
		part--; /* counted as a line end once the LF comes */
	if (rd->content + part > rd->max_head)
		return refuse(rd, 400);
	return 0;
}

static enum httpd_read_rc read_head(struct httpd_reader *rd, struct evbuffer *in,
				    struct httpd_request *req)
{
	size_t len, look = rd->scanned + FIRST_LOOK;
	const char *buf;
	ev_ssize_t head;
	int status;

	skip_empty_lines(rd, in);
	len = evbuffer_get_length(in);
	for (;;) {
		if (look > len)
			look = len;
		buf = (const char *)evbuffer_pullup(in, (ev_ssize_t)look);
		if (!buf)
			return len ? refuse(rd, 503) : HTTPD_READ_MORE;
		head = head_scan(rd, buf, look);
		if (head != 0)
			break;
		if (look == len)
			return HTTPD_READ_MORE;
		look *= 2;
	}
	if (head < 0)
		return HTTPD_READ_REFUSED;
	status = head_parse(rd, req, buf, (size_t)head);
	evbuffer_drain(in, (size_t)head);
	rd->scanned = 0;
	rd->lines = 0;
	rd->content = 0;
	if (status)
		return refuse(rd, status);
	rd->state = RS_BODY;
	return rd->left ? HTTPD_READ_HEAD : HTTPD_READ_MORE;
}

enum httpd_read_rc httpd_read(struct httpd_reader *rd, struct evbuffer *in,
			      struct httpd_request *req)
{
	size_t n;

	if (rd->state == RS_HEAD) {
		enum httpd_read_rc rc = read_head(rd, in, req);

		if (rc != HTTPD_READ_MORE || rd->state == RS_HEAD)
			return rc;
	}
	n = evbuffer_get_length(in);
	if (n > rd->left)
		n = (size_t)rd->left;
	if (n && evbuffer_remove_buffer(in, req->body, n) != (int)n)
		return refuse(rd, 503);
	rd->left -= n;
	if (rd->left)
		return HTTPD_READ_MORE;
	rd->state = RS_HEAD;
	return HTTPD_READ_DONE;
}

size_t httpd_refusal_text(const struct httpd_reader *rd, char *out, size_t cap)
{
	return rd->verdict ? guard_head_refusal_text(&rd->v, out, cap)
			   : guard_error_page_text(rd->status, out, cap);
}

static const char *find_in(const struct httpd_header *h, size_t n, const char *name)
{
	size_t len = strlen(name);

	for (size_t i = 0; i < n; i++)
		if (h[i].name_len == len && strcasecmp(h[i].name, name) == 0)
			return h[i].value;
	return NULL;
}

const char *httpd_find(const struct httpd_request *r, const char *name)
{
	return find_in(r->headers, r->n_headers, name);
}

const char *httpd_out_find(const struct httpd_request *r, const char *name)
{
	return find_in(r->out, r->n_out, name);
}

int httpd_add_header(struct httpd_request *r, const char *name, const char *value)
{
	struct httpd_header *h;
	size_t nl = strlen(name);

	if (r->n_out == r->cap_out) {
		size_t cap = r->cap_out ? r->cap_out * 2 : 8;
		struct httpd_header *t = arena_alloc(r->arena, cap * sizeof(*t));

		if (!t)
			return -1;
		if (r->n_out)
			memcpy(t, r->out, r->n_out * sizeof(*t));
		r->out = t;
		r->cap_out = cap;
	}
	h = &r->out[r->n_out];
	h->name = arena_strndup(r->arena, name, nl);
	h->value = arena_strndup(r->arena, value, strlen(value));
	h->name_len = nl;
	if (!h->name || !h->value)
		return -1;
	r->n_out++;
	return 0;
}
