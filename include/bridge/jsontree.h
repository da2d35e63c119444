/*
 * jsontree: a yajl tree written back as JSON through a yajl_gen, the one
 * writer of parsed documents (replay's bodies, the v2 capture).  Numbers
 * keep their text (yajl's long long would lose 64-bit ids); members keep
 * their order.
 */
#ifndef BRIDGE_JSONTREE_H
#define BRIDGE_JSONTREE_H

#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

/* A filter (NULL: none) carries a state down the tree, starting at 0:
 * member() gives the state of the value at `key` of object `obj` (at
 * `depth`, 0 for the root) from the object's; array elements take their
 * array's.  scalar() returns the string that replaces a scalar (of any
 * type) in that state, or NULL to write the scalar as it is. */
struct jsontree_filter {
	int (*member)(void *arg, yajl_val obj, const char *key, int depth, int state);
	const char *(*scalar)(void *arg, int state);
	void *arg;
};

/* 0, or -1 when g refused something (invalid UTF-8, out of memory). */
int jsontree_gen(yajl_gen g, yajl_val v, const struct jsontree_filter *f);

#endif
