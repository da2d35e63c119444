/* A yajl tree written back through a yajl_gen (see jsontree.h). */
#include "bridge/jsontree.h"

#include <string.h>

static int gen_ok(yajl_gen_status st)
{
	return st == yajl_gen_status_ok ? 0 : -1;
}

static int gen_string(yajl_gen g, const char *s)
{
	return gen_ok(yajl_gen_string(g, (const unsigned char *)s, strlen(s)));
}

static int gen_at(yajl_gen g, yajl_val v, const struct jsontree_filter *f, int depth, int state)
{
	const char *instead;

	switch (v ? v->type : yajl_t_null) {
	case yajl_t_object:
		if (yajl_gen_map_open(g) != yajl_gen_status_ok)
			return -1;
		for (size_t i = 0; i < v->u.object.len; i++) {
			const char *k = v->u.object.keys[i];
			int s = f && f->member ? f->member(f->arg, v, k, depth, state) : state;

			if (gen_string(g, k) < 0 ||
			    gen_at(g, v->u.object.values[i], f, depth + 1, s) < 0)
				return -1;
		}
		return gen_ok(yajl_gen_map_close(g));
	case yajl_t_array:
		if (yajl_gen_array_open(g) != yajl_gen_status_ok)
			return -1;
		for (size_t i = 0; i < v->u.array.len; i++)
			if (gen_at(g, v->u.array.values[i], f, depth + 1, state) < 0)
				return -1;
		return gen_ok(yajl_gen_array_close(g));
	default: break;
	}
	instead = f && f->scalar ? f->scalar(f->arg, state) : NULL;
	if (instead)
		return gen_string(g, instead);
	switch (v ? v->type : yajl_t_null) {
	case yajl_t_string: return gen_string(g, v->u.string);
	case yajl_t_number: return gen_ok(yajl_gen_number(g, v->u.number.r, strlen(v->u.number.r)));
	case yajl_t_true:
	case yajl_t_false: return gen_ok(yajl_gen_bool(g, v->type == yajl_t_true));
	default: return gen_ok(yajl_gen_null(g));
	}
}

int jsontree_gen(yajl_gen g, yajl_val v, const struct jsontree_filter *f)
{
	return gen_at(g, v, f, 0, 0);
}
