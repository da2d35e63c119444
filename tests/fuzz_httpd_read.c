/*
 * fuzz_httpd_read: the listener's request reader, fed the input whole and
 * again in pieces (sizes taken from the input's first byte), requests read
 * one after the other until it refuses one or wants more.  Invariants (abort
 * on violation): both ways read the same requests (method, version, path,
 * header count, body length) and end the same (refused with the same
 * status, or waiting); a refusal has a whole answer that closes; a request
 * read has a path and a body within the ceiling, and an untrusted framing
 * never has a body; no read past the input (ASan).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "bridge/httpd.h"

#define MAX_HEAD     2048
#define MAX_REQUESTS 16

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct reqhead_limits limits = { 1024, 4096 };

struct outcome {
	int n, refused_status;
	size_t sig[MAX_REQUESTS][5];
};

static void one_read(const struct httpd_request *req, struct outcome *o)
{
	size_t body = evbuffer_get_length(req->body);

	if (!req->path || body > limits.ceiling || (req->framing_bad && body))
		abort();
	if (o->n < MAX_REQUESTS) {
		o->sig[o->n][0] = (size_t)req->method;
		o->sig[o->n][1] = (size_t)(req->major * 10 + req->minor);
		o->sig[o->n][2] = strlen(req->path);
		o->sig[o->n][3] = req->n_headers;
		o->sig[o->n][4] = body;
	}
	o->n++;
}

static void run(const uint8_t *data, size_t size, size_t piece, struct outcome *o)
{
	struct evbuffer *in = evbuffer_new();
	struct httpd_reader rd;
	struct httpd_request req;
	struct arena arena;
	size_t at = 0;
	enum httpd_read_rc rc = HTTPD_READ_MORE;

	memset(o, 0, sizeof(*o));
	memset(&req, 0, sizeof(req));
	memset(&arena, 0, sizeof(arena));
	req.arena = &arena;
	req.body = evbuffer_new();
	if (!in || !req.body)
		abort();
	httpd_reader_init(&rd, MAX_HEAD, &limits);
	while (rc != HTTPD_READ_REFUSED && at < size) {
		size_t n = piece && size - at > piece ? piece : size - at;

		evbuffer_add(in, data + at, n);
		at += n;
		while ((rc = httpd_read(&rd, in, &req)) == HTTPD_READ_DONE ||
		       rc == HTTPD_READ_HEAD) {
			struct evbuffer *body = req.body;

			if (rc == HTTPD_READ_HEAD)
				continue;
			one_read(&req, o);
			evbuffer_drain(body, evbuffer_get_length(body));
			arena_free(&arena);
			memset(&req, 0, sizeof(req));
			req.arena = &arena;
			req.body = body;
		}
	}
	if (rc == HTTPD_READ_REFUSED) {
		char text[1024];
		size_t n = httpd_refusal_text(&rd, text, sizeof(text) - 1);

		text[n] = '\0';
		if (!n || !strstr(text, "Connection: close\r\n") || !strstr(text, "\r\n\r\n{"))
			abort();
		o->refused_status = rd.status;
	}
	evbuffer_free(req.body);
	arena_free(&arena);
	evbuffer_free(in);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct outcome a, b;
	size_t piece = size ? (size_t)(data[0] % 13) + 1 : 1;

	run(data, size, 0, &a);
	run(data, size, piece, &b);
	if (a.n != b.n || a.refused_status != b.refused_status ||
	    memcmp(a.sig, b.sig, sizeof(a.sig)) != 0)
		abort();
	return 0;
}
