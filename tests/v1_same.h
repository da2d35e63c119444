/*
 * v1_same.h: whether two parsed v1 documents are the same, byte for byte
 * (test_v1.c, fuzz_v1_json.c: the one-pass JSON path against yajl's).
 */
#ifndef BRIDGE_TESTS_V1_SAME_H
#define BRIDGE_TESTS_V1_SAME_H

#include <stdbool.h>
#include <string.h>

#include "bridge/v1.h"

/* Same type, length and bytes, the terminating NUL included. */
static inline bool v1_scalar_same(const struct v1_value *a, const struct v1_value *b)
{
	return a->type == b->type && a->len == b->len && a->text && b->text &&
	       memcmp(a->text, b->text, a->len + 1) == 0;
}

static inline bool v1_value_same(const struct v1_value *a, const struct v1_value *b)
{
	if (!v1_scalar_same(a, b) || a->n_items != b->n_items)
		return false;
	if (a->type != V1_ARRAY)
		return !a->items && !b->items && !a->n_items;
	for (size_t i = 0; i < a->n_items; i++)
		if (a->items[i].type == V1_ARRAY || a->items[i].items || a->items[i].n_items ||
		    !v1_scalar_same(&a->items[i], &b->items[i]) || b->items[i].items ||
		    b->items[i].n_items)
			return false;
	return true;
}

/* Same fields in the same order: keys, values, arrays and their items. */
static inline bool v1_doc_same(const struct v1_doc *a, const struct v1_doc *b)
{
	if (!a || !b || a->n_fields != b->n_fields)
		return false;
	for (size_t i = 0; i < a->n_fields; i++) {
		const struct v1_field *x = &a->fields[i], *y = &b->fields[i];

		if (x->key_len != y->key_len || memcmp(x->key, y->key, x->key_len + 1) != 0 ||
		    !v1_value_same(&x->value, &y->value))
			return false;
	}
	return true;
}

#endif
