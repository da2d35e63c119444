/*
 * fuzz_v1_form: v1_parse_form with the default limits.  Invariants (abort on
 * violation): consistent success/failure reporting; every value is a string
 * or an array of strings; keys hold no NUL.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/v1.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct v1_limits lim;
	struct v1_doc *doc = (struct v1_doc *)1;
	struct bridge_error err;

	v1_limits_default(&lim);
	bridge_error_clear(&err);
	if (v1_parse_form((const char *)data, size, &lim, &doc, &err) < 0) {
		if (doc || !err.message[0] || err.offset < -1 || err.offset > (long)size)
			abort();
		return 0;
	}
	if (!doc)
		abort();
	for (size_t i = 0; i < doc->n_fields; i++) {
		const struct v1_value *v = &doc->fields[i].value;

		if (strlen(doc->fields[i].key) != doc->fields[i].key_len)
			abort();
		if (v->type == V1_ARRAY) {
			for (size_t j = 0; j < v->n_items; j++)
				if (v->items[j].type != V1_STRING)
					abort();
		} else if (v->type != V1_STRING) {
			abort();
		}
	}
	v1_doc_free(doc);
	return 0;
}
