/*
 * fuzz_upstream_resp: the upstream pool's response reader, fed the input
 * whole and again in pieces (sizes taken from the input's first byte), then
 * an EOF; and in pieces as a plain connection feeds it: each piece parsed
 * where it was read while nothing is held over, what that leaves kept in
 * the input for the next.  Invariants (abort on violation): all three ways
 * end the same (result,
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
 * the answer is not complete.  bytes: a piece that comes while `in` is
 * empty goes to upstream_resp_parse_bytes, and what it leaves into `in`. */
static void run(const uint8_t *data, size_t size, size_t piece, int bytes, struct upstream_resp *r,
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

		if (bytes && evbuffer_get_length(in) == 0) {
			size_t used = n + 1;

			o->rc = upstream_resp_parse_bytes(r, (const char *)data + at, n, &used);
			if (used > n)
				abort();
			evbuffer_add(in, data + at + used, n - used);
			at += n;
			continue;
		}
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
	struct upstream_resp a, b[3];
	struct outcome oa, ob[3];
	size_t piece = size ? (size_t)(data[0] % 13) + 1 : 1;

	memset(&a, 0, sizeof(a));
	memset(b, 0, sizeof(b));
	run(data, size, 0, 0, &a, &oa);
	run(data, size, piece, 0, &b[0], &ob[0]);
	run(data, size, 0, 1, &b[1], &ob[1]);
	run(data, size, piece, 1, &b[2], &ob[2]);
	for (int i = 0; i < 3; i++) {
		if (oa.rc != ob[i].rc || oa.error != ob[i].error)
			abort();
		if (oa.rc != UPSTREAM_RESP_DONE)
			continue;
		if (oa.status < 200 || oa.status > 599 || oa.status != ob[i].status ||
		    oa.keep_alive != ob[i].keep_alive || oa.body_len != ob[i].body_len ||
		    oa.body_len > MAX_BODY || oa.left != ob[i].left)
			abort();
		if (a.body &&
		    (a.body[a.body_len] != '\0' || memcmp(a.body, b[i].body, a.body_len) != 0))
			abort();
		if (!a.body != !b[i].body || (!a.body && a.body_len))
			abort();
	}
	upstream_resp_free(&a);
	for (int i = 0; i < 3; i++)
		upstream_resp_free(&b[i]);
	return 0;
}
