/*
 * fuzz_v1_json: v1_parse_json with the default limits and with smaller ones.
 * Invariants (abort on violation): success and failure are reported
 * consistently; an error names a byte inside the input; a document the smaller
 * limits accept is accepted by the defaults too, with the same fields.  And
 * the one-pass path against the yajl path, the reference: whatever it
 * accepts, yajl accepts into the same document, byte for byte, and
 * v1_parse_json gives that document.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/v1.h"
#include "v1_same.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The two paths on one body: fast accepted => yajl accepted, same document. */
static void paths_agree(const char *body, size_t len, const struct v1_limits *lim)
{
	struct v1_doc *fast = (struct v1_doc *)1, *ref = (struct v1_doc *)1, *doc = NULL;
	struct bridge_error err;
	int got = v1_parse_json_fast(body, len, lim, &fast);
	int rc = v1_parse_json_yajl(body, len, lim, &ref, &err);

	if (got != 0 && got != 1)
		abort();
	if (got == 0 ? fast != NULL : !fast || rc != 0 || !v1_doc_same(fast, ref))
		abort();
	if (got == 1 && (v1_parse_json(body, len, lim, &doc, &err) != 0 || !v1_doc_same(doc, ref)))
		abort();
	v1_doc_free(doc);
	v1_doc_free(fast);
	v1_doc_free(ref);
}

static size_t parse(const char *body, size_t len, const struct v1_limits *lim)
{
	struct v1_doc *doc = (struct v1_doc *)1;
	struct bridge_error err;
	size_t n;

	paths_agree(body, len, lim);
	bridge_error_clear(&err);
	if (v1_parse_json(body, len, lim, &doc, &err) < 0) {
		if (doc || !err.message[0] || err.offset < -1 || err.offset > (long)len)
			abort();
		return SIZE_MAX;
	}
	if (!doc)
		abort();
	for (size_t i = 0; i < doc->n_fields; i++)
		if (strlen(doc->fields[i].key) != doc->fields[i].key_len)
			abort();
	n = doc->n_fields;
	v1_doc_free(doc);
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct v1_limits def,
		tiny = { .max_depth = 2, .max_keys = 3, .max_string = 8, .max_items = 2 },
		flat = { .max_depth = 1, .max_keys = 1000, .max_string = 4, .max_items = 1000 };
	size_t n_def, n_tiny, n_flat;

	v1_limits_default(&def);
	n_def = parse((const char *)data, size, &def);
	n_tiny = parse((const char *)data, size, &tiny);
	n_flat = parse((const char *)data, size, &flat);
	if ((n_tiny != SIZE_MAX && n_tiny != n_def) || (n_flat != SIZE_MAX && n_flat != n_def))
		abort();
	return 0;
}
