/*
 * store_items.h: the queue item the store tests insert (test_store.c,
 * test_store_pg.c): three headers, one of them a credential.
 */
#ifndef BRIDGE_TESTS_STORE_ITEMS_H
#define BRIDGE_TESTS_STORE_ITEMS_H

#include <stdio.h>
#include <string.h>

#include "bridge/store.h"

static inline void item_init(struct store_item *it, const char *route, const char *pid,
			     const char *state, const char *did, const char *body)
{
	static const struct upstream_header h[] = {
		{ "Content-Type", "application/json" },
		{ "Authorization", "Bearer tok" },
		{ "X-Qualifio-Signature", "sha256=00ff" },
	};

	memset(it, 0, sizeof(*it));
	it->route = route;
	it->endpoint = "http://127.0.0.1:9/hook";
	it->timeout_ms = 1000;
	it->delivery_id = did;
	it->participation_id = pid;
	it->state = state;
	it->body = body;
	it->len = strlen(body);
	it->headers = h;
	it->n_headers = 3;
}

/* One item in its own transaction: its store_insert_result, -1 on error. */
static inline int store_insert1(struct store *s, const struct store_item *it, int64_t now,
				struct store_receipt *r)
{
	const struct store_item *items[1] = { it };
	struct bridge_error err;
	int res = -7;

	bridge_error_clear(&err);
	if (store_insert(s, items, 1, now, &res, r, &err) < 0) {
		printf("# insert failed: %s\n", err.message);
		return -1;
	}
	return res;
}

#endif
