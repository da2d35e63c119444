/*
 * fuzz_upstream_resp: the upstream pool's response reader, fed the input
 * whole and again in pieces (sizes taken from the input's first byte), then
 * an EOF.  Invariants (abort on violation): both ways end the same (result,
 * error, status, body, keep-alive); a finished answer has a final status
 * (200 to 599), a body within max_body and NUL-terminated, and nothing the
 * reader consumed past its end; no read past the input (ASan).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "bridge/upstream_resp.h"

#define MAX_HEAD 2048
#define MAX_BODY 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct outcome {
	enum upstream_resp_rc rc;
	enum upstream_resp_error error;
	int status, keep_alive;
	size_t body_len, left; /* left: input bytes not consumed */
};

/* Feed data in pieces of `piece` bytes (0: all at once), then an EOF when
 * the answer is not complete. */
static void run(const uint8_t *data, size_t size, size_t piece, struct upstream_resp *r,
		struct outcome *o)
{
	struct evbuffer *in = evbuffer_new();
	size_t at = 0;

	if (!in)
		abort();
	upstream_resp_init(r, MAX_HEAD, MAX_BODY);
	o->rc = UPSTREAM_RESP_MORE;
	while (o->rc == UPSTREAM_RESP_MORE && at < size) {
		size_t n = piece && size - at > piece ? piece : size - at;

		evbuffer_add(in, data + at, n);
		at += n;
		o->rc = upstream_resp_parse(r, in);
	}
	if (o->rc == UPSTREAM_RESP_MORE)
		o->rc = upstream_resp_eof(r);
	o->left = evbuffer_get_length(in) + (size - at);
	o->error = r->error;
	o->status = r->status;
	o->keep_alive = r->keep_alive;
	o->body_len = r->body_len;
	evbuffer_free(in);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct upstream_resp a, b;
	struct outcome oa, ob;
	size_t piece = size ? (size_t)(data[0] % 13) + 1 : 1;

	memset(&a, 0, sizeof(a));
	memset(&b, 0, sizeof(b));
	run(data, size, 0, &a, &oa);
	run(data, size, piece, &b, &ob);
	if (oa.rc != ob.rc || oa.error != ob.error)
		abort();
	if (oa.rc == UPSTREAM_RESP_DONE) {
		if (oa.status < 200 || oa.status > 599 || oa.status != ob.status ||
		    oa.keep_alive != ob.keep_alive || oa.body_len != ob.body_len ||
		    oa.body_len > MAX_BODY || oa.left != ob.left)
			abort();
		if (a.body &&
		    (a.body[a.body_len] != '\0' || memcmp(a.body, b.body, a.body_len) != 0))
			abort();
		if (!a.body != !b.body || (!a.body && a.body_len))
			abort();
	}
	upstream_resp_free(&a);
	upstream_resp_free(&b);
	return 0;
}
