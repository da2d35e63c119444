/*
 * learn, input: v1 and v2 bodies read (NDJSON, captures, JSON files, folders),
 * the v2 side flattened into targets and entries, and v1 / v2 bodies paired
 * by participation id and state.
 */
#include "learn_types.h"

/* ---- input ------------------------------------------------------------ */

static void docset_problem(struct docset *ds, const char *where, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void docset_problem(struct docset *ds, const char *where, const char *fmt, ...)
{
	va_list ap;
	char msg[512];

	ds->invalid++;
	if (ds->invalid > 20)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	sb_printf(&ds->problems, "%s: %s\n", where, msg);
}

yajl_val learn_obj_get(yajl_val o, const char *key)
{
	if (!o || o->type != yajl_t_object)
		return NULL;
	for (size_t i = 0; i < o->u.object.len; i++)
		if (strcmp(o->u.object.keys[i], key) == 0)
			return o->u.object.values[i];
	return NULL;
}

/* The text of a scalar (numbers exactly as written), NULL for null,
 * objects and arrays. */
const char *learn_scalar_text(yajl_val v)
{
	if (!v)
		return NULL;
	switch (v->type) {
	case yajl_t_string: return v->u.string;
	case yajl_t_number: return v->u.number.r;
	case yajl_t_true: return "true";
	case yajl_t_false: return "false";
	default: return NULL;
	}
}

/* One JSON text (a line or a whole file) into the set.  A capture line
 * ({"time":..., "body":{...}}) gives its body. */
static void docset_add_text(struct docset *ds, struct arena *a, char *text, size_t len,
			    const char *where)
{
	char err[256];
	yajl_val tree, body;

	while (len && (text[len - 1] == '\n' || text[len - 1] == '\r' || text[len - 1] == ' '))
		text[--len] = '\0';
	if (len == 0)
		return;
	if (strlen(text) != len) {
		docset_problem(ds, where, "embedded NUL byte");
		return;
	}
	if (v1_json_depth(text, len) > LEARN_MAX_DEPTH) {
		docset_problem(ds, where, "nested deeper than %d", LEARN_MAX_DEPTH);
		return;
	}
	err[0] = '\0';
	tree = yajl_tree_parse(text, err, sizeof(err));
	if (!tree || tree->type != yajl_t_object) {
		char *nl = strchr(err, '\n');

		if (nl)
			*nl = '\0';
		docset_problem(ds, where, "%s", tree ? "not a JSON object" : err);
		yajl_tree_free(tree);
		return;
	}
	body = learn_obj_get(tree, "body");
	if (learn_obj_get(tree, "time") && (body || learn_obj_get(tree, "invalid"))) {
		if (!body || body->type != yajl_t_object) {
			docset_problem(ds, where, "capture line without a body (invalid post)");
			yajl_tree_free(tree);
			return;
		}
	} else {
		body = tree;
	}
	ds->docs = learn_xgrow(ds->docs, &ds->cap, ds->n + 1, sizeof(*ds->docs), 1024);
	ds->docs[ds->n].tree = tree;
	/* Only the v2 side needs the text, and only of bodies read whole:
	 * capture bodies are compared through their tree. */
	ds->docs[ds->n].raw = body == tree ? learn_arena_strndup(a, text, len) : NULL;
	ds->docs[ds->n].raw_len = len;
	ds->docs[ds->n].where = learn_arena_strndup(a, where, strlen(where));
	ds->n++;
}

static int has_suffix(const char *s, const char *suf)
{
	size_t n = strlen(s), m = strlen(suf);

	return n >= m && strcmp(s + n - m, suf) == 0;
}

/* A whole file, NUL-terminated: 0, or a negative errno (-EFBIG over the
 * ceiling, which used to cut the file silently). */
static int file_slurp(const char *path, char **ret, size_t *ret_len)
{
	FILE *f = fopen(path, "rb");
	struct buf b = BUF_INIT(LEARN_MAX_LINE * 4u);
	int rc;

	if (!f)
		return -errno;
	rc = buf_read_file(&b, f);
	fclose(f);
	if (rc == 0 && !(*ret = buf_take(&b, ret_len)))
		rc = -ENOMEM;
	buf_free(&b);
	return rc;
}

static int name_cmp(const void *x, const void *y)
{
	return strcmp(*(char *const *)x, *(char *const *)y);
}

int learn_docset_add_path(struct docset *ds, struct arena *a, const char *path, int depth)
{
	struct stat st;
	char *buf = NULL;
	size_t len;
	char where[4096];
	int got;

	if (stat(path, &st) < 0) {
		fprintf(stderr, "webhook-bridge learn: %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (S_ISDIR(st.st_mode)) {
		DIR *d = opendir(path);
		struct dirent *e;
		char **names = NULL;
		size_t n = 0, cap = 0;
		int rc = 0;

		if (!d || depth > 8) {
			fprintf(stderr, "webhook-bridge learn: %s: cannot read the folder\n", path);
			if (d)
				closedir(d);
			return -1;
		}
		while ((e = readdir(d)) != NULL) {
			if (!has_suffix(e->d_name, ".json") && !has_suffix(e->d_name, ".ndjson") &&
			    !has_suffix(e->d_name, ".jsonl"))
				continue;
			names = learn_xgrow(names, &cap, n + 1, sizeof(char *), 16);
			names[n++] = learn_arena_printf(a, "%s/%s", path, e->d_name);
		}
		closedir(d);
		qsort(names, n, sizeof(char *), name_cmp);
		for (size_t i = 0; i < n && rc == 0; i++)
			rc = learn_docset_add_path(ds, a, names[i], depth + 1);
		free(names);
		return rc;
	}
	if ((got = file_slurp(path, &buf, &len)) < 0) {
		if (got == -EFBIG)
			fprintf(stderr, "webhook-bridge learn: %s: larger than %u MiB\n", path,
				(LEARN_MAX_LINE * 4u) >> 20);
		else
			fprintf(stderr, "webhook-bridge learn: %s: %s\n", path, strerror(-got));
		return -1;
	}
	if (has_suffix(path, ".json")) {
		/* One document per file (fixtures may be pretty-printed). */
		snprintf(where, sizeof(where), "%s", path);
		docset_add_text(ds, a, buf, len, where);
	} else {
		size_t line = 0;
		char *p = buf, *end = buf + len;

		while (p < end) {
			char *nl = memchr(p, '\n', (size_t)(end - p));
			size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);

			line++;
			p[n] = '\0';
			snprintf(where, sizeof(where), "%s:%zu", path, line);
			docset_add_text(ds, a, p, n, where);
			p += n + 1;
		}
	}
	free(buf);
	return 0;
}

void learn_docset_free(struct docset *ds)
{
	for (size_t i = 0; i < ds->n; i++)
		yajl_tree_free(ds->docs[i].tree);
	free(ds->docs);
	free(ds->problems.s);
	memset(ds, 0, sizeof(*ds));
}

yajl_val learn_doc_body(const struct doc *d)
{
	yajl_val b = learn_obj_get(d->tree, "body");

	return b && b->type == yajl_t_object && learn_obj_get(d->tree, "time") ? b : d->tree;
}

/* ---- the v2 side: targets and entries -------------------------------- */

/* ---- inference state --------------------------------------------------- */

static int target_index(const struct learn *L, const char *path)
{
	for (int i = 0; i < N_TARGETS; i++)
		if (strcmp(L->target_names[i], path) == 0)
			return i;
	return -1;
}

int learn_target_is_integer(int t)
{
	return t == 8 || t == 15;
}

static struct var *var_get(struct learn *L, enum section sec, const char *name)
{
	long id = learn_intern_add(&L->vars, &L->a, name);

	if ((size_t)id >= L->var_cap) {
		size_t old = L->var_cap;

		L->var = learn_xgrow(L->var, &L->var_cap, (size_t)id + 1, sizeof(*L->var), 64);
		memset(L->var + old, 0, (L->var_cap - old) * sizeof(*L->var));
	}
	if (!L->var[id].name) {
		L->var[id].name = L->vars.names[id];
		L->var[id].sec = sec;
		L->var[id].first_order = id;
	}
	return &L->var[id];
}

/* Flatten one v2 body into the pair: target scalars, entries, and leaves
 * the rule language cannot write. */
static void v2_walk(struct learn *L, struct pair *p, yajl_val v, char *path, size_t plen)
{
	if (!v)
		return;
	if (v->type == yajl_t_object) {
		for (size_t i = 0; i < v->u.object.len; i++) {
			const char *k = v->u.object.keys[i];
			size_t kl = strlen(k);

			if (plen + kl + 2 >= 512)
				continue;
			if (plen)
				path[plen] = '.';
			memcpy(path + plen + (plen ? 1 : 0), k, kl + 1);
			v2_walk(L, p, v->u.object.values[i], path, plen + kl + (plen ? 1 : 0));
			path[plen] = '\0';
		}
		return;
	}
	if (v->type == yajl_t_array) {
		for (size_t i = 0; i < v->u.array.len; i++) {
			int n = snprintf(path + plen, 512 - plen, "[%zu]", i);

			if (n > 0 && plen + (size_t)n < 512)
				v2_walk(L, p, v->u.array.values[i], path, plen + (size_t)n);
			path[plen] = '\0';
		}
		return;
	}
	int t = target_index(L, path);

	if (t >= 0 && learn_scalar_text(v)) {
		p->tv[t] = learn_scalar_text(v);
		p->tv_number[t] = v->type == yajl_t_number;
	} else {
		learn_tally_bump(&L->extra_paths, NULL, learn_arena_strndup(&L->a, path, plen),
				 p->id, 0);
	}
}

static void v2_entries(struct learn *L, struct pair *p)
{
	size_t n = 0;

	for (int s = 0; s < N_SECTIONS; s++) {
		yajl_val arr = learn_obj_get(p->v2, section_names[s]);

		if (arr && arr->type == yajl_t_array)
			n += arr->u.array.len;
	}
	p->entries = learn_arena_alloc(&L->a, (n ? n : 1) * sizeof(struct entry));
	for (int s = 0; s < N_SECTIONS; s++) {
		yajl_val arr = learn_obj_get(p->v2, section_names[s]);

		if (!arr || arr->type != yajl_t_array)
			continue;
		for (size_t i = 0; i < arr->u.array.len; i++) {
			yajl_val e = arr->u.array.values[i];
			yajl_val var = learn_obj_get(e, "variable");
			struct entry *en;
			yajl_val rs;

			if (!var || var->type != yajl_t_string)
				continue;
			en = &p->entries[p->n_entries++];
			memset(en, 0, sizeof(*en));
			en->var = learn_intern_find(&L->vars, var->u.string);
			if (en->var < 0 || L->var[en->var].sec != (enum section)s)
				en->var = var_get(L, s, var->u.string) - L->var;
			en->obj = e;
			if (s == SEC_OPTINS) {
				en->resp = learn_arena_alloc(&L->a, sizeof(struct response));
				memset(en->resp, 0, sizeof(struct response));
				en->resp->value = learn_scalar_text(learn_obj_get(e, "response"));
				en->n_resp = en->resp->value != NULL;
				continue;
			}
			rs = learn_obj_get(e, "responses");
			if (!rs || rs->type != yajl_t_array)
				continue;
			en->resp = learn_arena_alloc(&L->a, (rs->u.array.len + 1) *
								    sizeof(struct response));
			for (size_t r = 0; r < rs->u.array.len; r++) {
				yajl_val rv = rs->u.array.values[r];
				yajl_val file = learn_obj_get(rv, "file");
				struct response *o = &en->resp[en->n_resp++];

				memset(o, 0, sizeof(*o));
				if (file) {
					en->is_file = 1;
					o->value = learn_scalar_text(learn_obj_get(file, "path"));
					o->file_type = learn_scalar_text(
						learn_obj_get(file, "type"));
				} else {
					o->value = learn_scalar_text(learn_obj_get(rv, "value"));
				}
				o->label = learn_scalar_text(learn_obj_get(rv, "label"));
				o->score = learn_scalar_text(learn_obj_get(rv, "score"));
				o->correct = learn_scalar_text(learn_obj_get(rv, "isCorrect"));
				if (!o->value)
					o->value = "";
			}
		}
	}
}

/* ---- pairing ------------------------------------------------------------ */

void learn_ascii_upper(char *s)
{
	for (; *s; s++)
		if (*s >= 'a' && *s <= 'z')
			*s = (char)(*s - 'a' + 'A');
}

void learn_pairs_build(struct learn *L, struct docset *v1, struct docset *v2, struct v2_index *ix,
		       long **ret_v1_match)
{
	long *match = learn_xcalloc(v1->n + 1, sizeof(long));
	char up[512];

	for (size_t i = 0; i < v2->n; i++) {
		const char *id = learn_scalar_text(
			learn_obj_get(learn_doc_body(&v2->docs[i]), "id"));
		long k;

		if (!id || strlen(id) >= sizeof(up))
			continue;
		snprintf(up, sizeof(up), "%s", id);
		learn_ascii_upper(up);
		k = learn_intern_find(&ix->ids, up);
		if (k < 0) {
			k = learn_intern_add(&ix->ids, &L->a, up);
			ix->first = learn_xrealloc(ix->first, ix->ids.cap * sizeof(long));
			ix->count = learn_xrealloc(ix->count, ix->ids.cap * sizeof(long));
			ix->first[k] = (long)i;
			ix->count[k] = 0;
		}
		ix->count[k]++;
		if (ix->count[k] > 1)
			ix->first[k] = -2;
	}
	ix->taken = learn_xcalloc(v2->n + 1, sizeof(int));
	for (size_t i = 0; i < v1->n; i++) {
		yajl_val b = learn_doc_body(&v1->docs[i]);

		match[i] = -1;
		for (size_t f = 0; f < b->u.object.len; f++) {
			const char *s = learn_scalar_text(b->u.object.values[f]);
			long k;

			if (!s || b->u.object.values[f]->type != yajl_t_string ||
			    strlen(s) >= sizeof(up) || strlen(s) < 4)
				continue;
			snprintf(up, sizeof(up), "%s", s);
			learn_ascii_upper(up);
			k = learn_intern_find(&ix->ids, up);
			if (k < 0)
				continue;
			match[i] = ix->first[k] >= 0 ? ix->first[k] : -2 - k; /* -2-k: several */
			break;
		}
	}
	*ret_v1_match = match;
}

void learn_pair_add(struct learn *L, const struct doc *v1, const struct doc *v2)
{
	struct pair *p = &L->pairs[L->n_pairs++];
	char path[512];

	memset(p, 0, sizeof(*p));
	p->v1 = learn_doc_body(v1);
	p->v2doc = v2;
	p->v2 = learn_doc_body(v2);
	p->id = learn_scalar_text(learn_obj_get(p->v2, "id"));
	if (!p->id)
		p->id = "?";
	for (size_t f = 0; f < p->v1->u.object.len; f++)
		learn_intern_add(&L->keys, &L->a, p->v1->u.object.keys[f]);
	path[0] = '\0';
	{
		/* Entries are read apart; the walk sees the rest. */
		yajl_val v = p->v2;

		for (size_t i = 0; i < v->u.object.len; i++) {
			const char *k = v->u.object.keys[i];

			if (strcmp(k, "form") == 0 || strcmp(k, "optins") == 0 ||
			    strcmp(k, "questionnaire") == 0)
				continue;
			if (strcmp(k, "campaign") == 0 &&
			    v->u.object.values[i]->type == yajl_t_object) {
				yajl_val c = v->u.object.values[i];

				for (size_t j = 0; j < c->u.object.len; j++) {
					yajl_val th = c->u.object.values[j];

					if (strcmp(c->u.object.keys[j], "themes") == 0 &&
					    th->type == yajl_t_array && th->u.array.len == 0)
						continue;
					snprintf(path, sizeof(path), "campaign.%s",
						 c->u.object.keys[j]);
					v2_walk(L, p, th, path, strlen(path));
				}
				continue;
			}
			snprintf(path, sizeof(path), "%s", k);
			v2_walk(L, p, v->u.object.values[i], path, strlen(path));
		}
	}
	v2_entries(L, p);
}

/* Which keys the pairs of this run have (the run may be a subset). */
void learn_keys_count(struct learn *L)
{
	free(L->key_used);
	free(L->key_seen);
	L->key_used = learn_xcalloc(L->keys.n, sizeof(long));
	L->key_seen = learn_xcalloc(L->keys.n, sizeof(long));
	for (size_t i = 0; i < L->n_pairs; i++)
		for (size_t k = 0; k < L->keys.n; k++)
			L->key_seen[k] += L->pairs[i].kval[k] &&
					  L->pairs[i].kval[k]->type != yajl_t_null;
}

void learn_pairs_index_keys(struct learn *L)
{
	for (size_t i = 0; i < L->n_pairs; i++) {
		struct pair *p = &L->pairs[i];

		p->kval = learn_arena_alloc(&L->a, (L->keys.n ? L->keys.n : 1) * sizeof(yajl_val));
		memset(p->kval, 0, (L->keys.n ? L->keys.n : 1) * sizeof(yajl_val));
		for (size_t f = 0; f < p->v1->u.object.len; f++) {
			long k = learn_intern_find(&L->keys, p->v1->u.object.keys[f]);
			yajl_val v = p->v1->u.object.values[f];

			/* null is kept: absent for field rules, "unanswered" for opt-ins. */
			if (k >= 0 && v)
				p->kval[k] = v;
		}
	}
}
