/*
 * fuzz_v1_json: v1_parse_json with the default limits and with tiny ones.
 * Invariants (abort on violation): success and failure are reported
 * consistently; an error names a byte inside the input; a document the tiny
 * limits accept is accepted by the defaults too, with the same fields.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/v1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static size_t parse(const char *body, size_t len, const struct v1_limits *lim)
{
	struct v1_doc *doc = (struct v1_doc *)1;
	struct bridge_error err;
	size_t n;

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
		tiny = { .max_depth = 2, .max_keys = 3, .max_string = 8, .max_items = 2 };
	size_t n_def, n_tiny;

	v1_limits_default(&def);
	n_def = parse((const char *)data, size, &def);
	n_tiny = parse((const char *)data, size, &tiny);
	if (n_tiny != SIZE_MAX && n_tiny != n_def)
		abort();
	return 0;
}
