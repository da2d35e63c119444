/*
 * learn, inference: the field rules (key, conversion, value maps, time
 * zones, defaults) and the variable rules (opt-ins, answers, categories)
 * the pairs support.
 */
#include "learn_types.h"

/* ---- field rules ---------------------------------------------------------- */

static int looks_utc(const char *s)
{
	return s && strlen(s) == 24 && s[10] == 'T' && s[23] == 'Z' && s[4] == '-';
}

static int looks_datetime(const char *s)
{
	return s && strlen(s) >= 16 && s[4] == '-' && s[7] == '-' &&
	       (s[10] == ' ' || s[10] == 'T') && s[13] == ':';
}

static int conv_agrees(enum conv c, const char *x, const char *v)
{
	char buf[64];
	size_t n;

	switch (c) {
	case CONV_COPY: return strcmp(x, v) == 0;
	case CONV_INTEGER:
		return convert_integer(x, strlen(x), buf, sizeof(buf), NULL) == 0 &&
		       strcmp(buf, v) == 0;
	case CONV_UPPER:
	case CONV_LOWER:
		n = strlen(x);
		if (n != strlen(v) || strcasecmp(x, v) != 0)
			return 0;
		for (size_t i = 0; i < n; i++) {
			char e = x[i];

			if (c == CONV_UPPER && e >= 'a' && e <= 'z')
				e = (char)(e - 'a' + 'A');
			if (c == CONV_LOWER && e >= 'A' && e <= 'Z')
				e = (char)(e - 'A' + 'a');
			if (e != v[i])
				return 0;
		}
		return 1;
	default: return 0;
	}
}

static void zones_load(struct zones *Z)
{
	FILE *f;
	char line[512];
	size_t np = sizeof(zone_preferred) / sizeof(zone_preferred[0]);

	Z->loaded = 1;
	for (size_t i = 0; i < np; i++) {
		struct tz_zone *z;

		if (tz_zone_load(zone_preferred[i], &z, NULL) == 0) {
			Z->z = learn_xgrow(Z->z, &Z->cap, Z->n + 1, sizeof(*Z->z), 16);
			Z->z[Z->n++] = z;
		}
	}
	f = fopen("/usr/share/zoneinfo/zone1970.tab", "r");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char *save = NULL, *tok, *name;
		int dup = 0;
		struct tz_zone *z;

		if (line[0] == '#')
			continue;
		tok = strtok_r(line, "\t\n", &save);
		tok = tok ? strtok_r(NULL, "\t\n", &save) : NULL;
		name = tok ? strtok_r(NULL, "\t\n", &save) : NULL;
		if (!name)
			continue;
		for (size_t i = 0; i < np; i++)
			dup |= strcmp(zone_preferred[i], name) == 0;
		if (dup || tz_zone_load(name, &z, NULL) < 0)
			continue;
		Z->z = learn_xgrow(Z->z, &Z->cap, Z->n + 1, sizeof(*Z->z), 16);
		Z->z[Z->n++] = z;
	}
	fclose(f);
}

void learn_zones_free(struct zones *Z)
{
	for (size_t i = 0; i < Z->n; i++)
		tz_zone_free(Z->z[i]);
	free(Z->z);
}

static int dt_agrees(const char *x, const char *v, const struct tz_zone *z, enum dt_ambiguous amb,
		     enum dt_gap gap)
{
	char out[32];

	return convert_datetime(x, strlen(x), z, amb, gap, out, sizeof(out), NULL) == 0 &&
	       strcmp(out, v) == 0;
}

/* "YYYY-MM-DD HH:MM:SS" and the like: the shape of one v1 date. */
static const char *dt_shape(struct arena *a, const char *x)
{
	char out[64];
	size_t i;

	for (i = 0; x[i] && i < sizeof(out) - 1; i++) {
		char c = x[i];

		if (c >= '0' && c <= '9') {
			static const char tpl[] = "YYYY-MM-DD?HH:MM:SS";

			c = i < sizeof(tpl) - 1 ? tpl[i] : 'f';
		}
		out[i] = c;
	}
	out[i] = '\0';
	return learn_arena_strndup(a, out, i);
}

/* Identify the zone of a datetime rule: the zones whose conversion
 * reproduces a sample of the pairs, then the best of them on all pairs. */
static void rule_datetime(struct learn *L, struct zones *Z, int t, struct field_rule *r)
{
	long *obs = learn_xcalloc(L->n_pairs, sizeof(long));
	size_t n_obs = 0, step, n_sample;
	long best = -1, best_agree = -1;
	struct buf also = { 0 };
	size_t n_also = 0, n_match = 0;

	if (!Z->loaded)
		zones_load(Z);
	for (size_t i = 0; i < L->n_pairs; i++) {
		const char *x = learn_scalar_text(L->pairs[i].kval[r->key]);

		if (x && looks_datetime(x) && looks_utc(L->pairs[i].tv[t]))
			obs[n_obs++] = (long)i;
	}
	step = n_obs > LEARN_DT_SAMPLE ? n_obs / LEARN_DT_SAMPLE : 1;
	n_sample = (n_obs + step - 1) / step;
	for (size_t zi = 0; zi < Z->n; zi++) {
		long miss = 0, agree = 0;

		for (size_t s = 0; s < n_obs; s += step) {
			const struct pair *p = &L->pairs[obs[s]];

			if (dt_agrees(learn_scalar_text(p->kval[r->key]), p->tv[t], Z->z[zi],
				      DT_AMBIGUOUS_EARLIER, DT_GAP_SHIFT))
				agree++;
			else if (++miss > (long)(n_sample * LEARN_TOLERANCE) + 1)
				break;
		}
		if (miss > (long)(n_sample * LEARN_TOLERANCE) + 1)
			continue;
		n_match++;
		if (agree > best_agree) {
			best = (long)zi;
			best_agree = agree;
			also.len = 0;
			n_also = 0;
		} else if (agree == best_agree && n_also < 6) {
			sb_printf(&also, "%s%s", n_also ? ", " : "", tz_zone_name(Z->z[zi]));
			n_also++;
		}
	}
	if (best < 0) {
		r->kind = 0;
		free(obs);
		free(also.s);
		return;
	}
	if (n_match == Z->n) {
		/* Every zone agrees: the dates carry their own offsets. */
		best = 0;
		n_also = 0;
	}
	{
		const struct tz_zone *z = Z->z[best];
		long ag[2][2] = { { 0, 0 }, { 0, 0 } };

		for (size_t s = 0; s < n_obs; s++) {
			const struct pair *p = &L->pairs[obs[s]];
			const char *x = learn_scalar_text(p->kval[r->key]);

			for (int a = 0; a < 2; a++)
				for (int g = 0; g < 2; g++)
					ag[a][g] += dt_agrees(x, p->tv[t], z,
							      a ? DT_AMBIGUOUS_LATER
								: DT_AMBIGUOUS_EARLIER,
							      g ? DT_GAP_SHIFT : DT_GAP_REJECT);
		}
		r->ambiguous_later = ag[1][0] > ag[0][0];
		r->gap_shift = ag[r->ambiguous_later][1] > ag[r->ambiguous_later][0];
		r->zone = tz_zone_name(z);
		r->tz = z;
		r->zone_also = n_also ? learn_arena_strndup(&L->a, also.s, also.len) : NULL;
		r->dt_format = n_obs ? dt_shape(&L->a,
						learn_scalar_text(L->pairs[obs[0]].kval[r->key]))
				     : NULL;
	}
	free(obs);
	free(also.s);
}

static void rule_example(const char **ex, size_t *n, const char *id)
{
	if (*n < LEARN_EXAMPLES)
		ex[(*n)++] = id;
}

/* Distinct `from` values of a tally. */
static long n_from(const struct tally *t)
{
	long n = 0;

	for (size_t c = 0; c < t->n; c++) {
		int seen = 0;

		for (size_t e = 0; e < c && !seen; e++)
			seen = strcmp(t->cells[e].from, t->cells[c].from) == 0;
		n += !seen;
	}
	return n;
}

/* Does rule r produce value v (NULL: nothing) for v1 value x (NULL: absent)? */
static int rule_produces(const struct learn *L, const struct field_rule *r, int t, const char *x,
			 const char *v, const struct zones *Z)
{
	const struct tally_cell *c;

	(void)L;
	if (!x)
		return r->def ? (v && strcmp(v, r->def) == 0) : v == NULL;
	if (!v)
		return 0;
	switch (r->kind) {
	case 1:
		if (r->conv == CONV_DATETIME)
			return r->tz && dt_agrees(x, v, r->tz,
						  r->ambiguous_later ? DT_AMBIGUOUS_LATER
								     : DT_AMBIGUOUS_EARLIER,
						  r->gap_shift ? DT_GAP_SHIFT : DT_GAP_REJECT);
		return conv_agrees(r->conv, x, v) ||
		       (learn_target_is_integer(t) && conv_agrees(CONV_INTEGER, x, v));
	case 2:
		c = learn_tally_top(&r->map, x, NULL);
		return c ? strcmp(c->to, v) == 0 : strcmp(x, v) == 0;
	default: return 0;
	}
}

/* The default of a rule: the v2 value of the pairs without its key. */
static void rule_default(struct learn *L, int t, struct field_rule *r)
{
	struct tally tl = { 0 };
	long without = 0;
	const struct tally_cell *top;

	for (size_t i = 0; i < L->n_pairs; i++) {
		const struct pair *p = &L->pairs[i];

		if (learn_scalar_text(p->kval[r->key]))
			continue;
		without++;
		if (p->tv[t])
			learn_tally_bump(&tl, NULL, p->tv[t], p->id, 0);
	}
	top = learn_tally_top(&tl, NULL, NULL);
	if (top && top->count >= L->min_support && top->count >= without * (1 - LEARN_TOLERANCE)) {
		r->def = top->to;
		r->def_count = top->count;
	}
	learn_tally_free(&tl);
}

void learn_fields(struct learn *L, struct zones *Z)
{
	size_t nk = L->keys.n;
	long *agree = learn_xcalloc(nk * N_CONV, sizeof(long));
	long *with_key = learn_xcalloc(nk, sizeof(long));

	for (int t = 0; t < N_TARGETS; t++) {
		struct field_rule *r = &L->rule[t];
		long present = 0;
		long best = -1, best_c = 0, best_agree = 0;

		memset(agree, 0, nk * N_CONV * sizeof(long));
		memset(with_key, 0, nk * sizeof(long));
		for (size_t i = 0; i < L->n_pairs; i++) {
			const struct pair *p = &L->pairs[i];
			const char *v = p->tv[t];

			present += v != NULL;
			for (size_t k = 0; k < nk; k++) {
				const char *x = learn_scalar_text(p->kval[k]);

				if (!x)
					continue;
				with_key[k]++;
				if (!v || (p->tv_number[t] && !learn_target_is_integer(t)))
					continue;
				if (learn_target_is_integer(t)) {
					agree[k * N_CONV + CONV_INTEGER] += conv_agrees(
						CONV_INTEGER, x, v);
					continue;
				}
				if (x[0] != v[0] && ((x[0] | 0x20) != (v[0] | 0x20))) {
					agree[k * N_CONV + CONV_DATETIME] += looks_utc(v) &&
									     looks_datetime(x);
					continue;
				}
				if (strcmp(x, v) == 0)
					agree[k * N_CONV + CONV_COPY]++;
				else if (conv_agrees(CONV_UPPER, x, v))
					agree[k * N_CONV + CONV_UPPER]++;
				if (conv_agrees(CONV_LOWER, x, v) && strcmp(x, v) != 0)
					agree[k * N_CONV + CONV_LOWER]++;
				if (looks_utc(v) && looks_datetime(x))
					agree[k * N_CONV + CONV_DATETIME]++;
			}
		}
		if (!present)
			continue;
		/* A value already in the target's case agrees with copy; upper
		 * and lower count the pairs they change plus those. */
		for (size_t k = 0; k < nk; k++) {
			agree[k * N_CONV + CONV_UPPER] += agree[k * N_CONV + CONV_UPPER]
								  ? agree[k * N_CONV + CONV_COPY]
								  : 0;
			agree[k * N_CONV + CONV_LOWER] += agree[k * N_CONV + CONV_LOWER]
								  ? agree[k * N_CONV + CONV_COPY]
								  : 0;
			for (int c = 0; c < N_CONV; c++) {
				long a = agree[k * N_CONV + c];

				if (a < L->min_support || a < with_key[k] * (1 - LEARN_TOLERANCE))
					continue;
				if (c == CONV_DATETIME) {
					/* Shape agreement only: count what the zone reproduces. */
					struct field_rule d = { .kind = 1,
								.key = (long)k,
								.conv = c };

					rule_datetime(L, Z, t, &d);
					a = 0;
					for (size_t i = 0; d.kind && i < L->n_pairs; i++)
						a += learn_scalar_text(L->pairs[i].kval[k]) &&
						     rule_produces(
							     L, &d, t,
							     learn_scalar_text(L->pairs[i].kval[k]),
							     L->pairs[i].tv[t], Z);
					if (a < L->min_support ||
					    a < with_key[k] * (1 - LEARN_TOLERANCE))
						continue;
				}
				if (a > best_agree) {
					best = (long)k;
					best_c = c;
					best_agree = a;
				}
			}
		}
		if (best >= 0) {
			r->kind = 1;
			r->key = best;
			r->conv = (enum conv)best_c;
			if (r->conv == CONV_DATETIME)
				rule_datetime(L, Z, t, r);
		}
		if (!r->kind) {
			/* A value map: the key whose values decide the target.  It must
			 * explain more pairs than one constant does by more than the
			 * entries it takes, or a few edited pairs would turn a constant
			 * into a map over some unrelated key. */
			long bk = -1, bsup = 0, const_sup = 0;
			struct tally ct = { 0 };

			for (size_t i = 0; i < L->n_pairs; i++)
				if (L->pairs[i].tv[t])
					learn_tally_bump(&ct, NULL, L->pairs[i].tv[t], NULL, 0);
			if (learn_tally_top(&ct, NULL, NULL))
				const_sup = learn_tally_top(&ct, NULL, NULL)->count;
			learn_tally_free(&ct);

			for (size_t k = 0; k < nk; k++) {
				struct tally tl = { 0 };
				long sup = 0, tot = 0, distinct_to = 0;

				if (with_key[k] < L->min_support)
					continue;
				for (size_t i = 0; i < L->n_pairs && !tl.overflow; i++) {
					const struct pair *p = &L->pairs[i];
					const char *x = learn_scalar_text(p->kval[k]);

					if (x && p->tv[t])
						learn_tally_bump(&tl, x, p->tv[t], p->id,
								 LEARN_MAX_ENUM);
				}
				if (!tl.overflow) {
					for (size_t c = 0; c < tl.n; c++) {
						long total;
						const struct tally_cell *top = learn_tally_top(
							&tl, tl.cells[c].from, &total);

						tot += tl.cells[c].count;
						if (top == &tl.cells[c]) {
							int dup = 0;

							sup += top->count;
							for (size_t e = 0; e < c; e++)
								dup |= learn_tally_top(
									       &tl,
									       tl.cells[e].from,
									       NULL) ==
									       &tl.cells[e] &&
								       strcmp(tl.cells[e].to,
									      top->to) == 0;
							distinct_to += !dup;
						}
					}
				}
				if (!tl.overflow && distinct_to >= 2 && sup >= L->min_support &&
				    sup - const_sup > n_from(&tl) &&
				    sup >= with_key[k] * (1 - LEARN_TOLERANCE) && sup > bsup) {
					bk = (long)k;
					bsup = sup;
					learn_tally_free(&r->map);
					r->map = tl;
				} else {
					learn_tally_free(&tl);
				}
				(void)tot;
			}
			if (bk >= 0) {
				r->kind = 2;
				r->key = bk;
			}
		}
		if (!r->kind) {
			struct tally tl = { 0 };
			const struct tally_cell *top;

			for (size_t i = 0; i < L->n_pairs; i++)
				if (L->pairs[i].tv[t])
					learn_tally_bump(&tl, NULL, L->pairs[i].tv[t],
							 L->pairs[i].id, 0);
			top = learn_tally_top(&tl, NULL, NULL);
			if (top && top->count >= L->min_support &&
			    top->count >= (long)(L->n_pairs * (1 - LEARN_TOLERANCE))) {
				r->kind = 3;
				r->value = top->to;
				r->agree = top->count;
				r->seen = (long)L->n_pairs;
				for (size_t i = 0; i < L->n_pairs; i++)
					if (!L->pairs[i].tv[t] ||
					    strcmp(L->pairs[i].tv[t], top->to)) {
						r->against++;
						rule_example(r->examples, &r->n_examples,
							     L->pairs[i].id);
					}
			}
			learn_tally_free(&tl);
			continue;
		}
		if (r->kind == 2) {
			/* Keep the majority per v1 value; identity entries go when the
			 * map keeps unknown values. */
			int identity = 0;

			for (size_t c = 0; c < r->map.n; c++)
				if (learn_tally_top(&r->map, r->map.cells[c].from, NULL) ==
					    &r->map.cells[c] &&
				    strcmp(r->map.cells[c].from, r->map.cells[c].to) == 0)
					identity = 1;
			r->unknown_reject = !identity;
		}
		L->key_used[r->key]++;
		rule_default(L, t, r);
		for (size_t i = 0; i < L->n_pairs; i++) {
			const struct pair *p = &L->pairs[i];
			const char *x = learn_scalar_text(p->kval[r->key]);

			if (!x && !r->def)
				continue;
			r->seen++;
			if (rule_produces(L, r, t, x, p->tv[t], Z)) {
				r->agree++;
			} else {
				r->against++;
				rule_example(r->examples, &r->n_examples, p->id);
			}
		}
	}
	free(agree);
	free(with_key);
}

/* ---- variables ------------------------------------------------------------- */

/* The v1 value as a list of response values under a case conversion and a
 * separator; returns the count written into out (at most cap). */
static size_t v1_values(yajl_val x, int vconv, char (*out)[256], size_t cap)
{
	int c = vconv / (int)N_SEP;
	const char *sep = separators[vconv % (int)N_SEP];
	size_t n = 0;
	const char *items[64];
	size_t ni = 0;

	if (x->type == yajl_t_array) {
		for (size_t i = 0; i < x->u.array.len && ni < 64; i++)
			if (learn_scalar_text(x->u.array.values[i]))
				items[ni++] = learn_scalar_text(x->u.array.values[i]);
	} else if (learn_scalar_text(x)) {
		items[ni++] = learn_scalar_text(x);
	}
	for (size_t i = 0; i < ni && n < cap; i++) {
		const char *s = items[i];

		if (!sep) {
			if (strlen(s) >= 256)
				return SIZE_MAX;
			snprintf(out[n++], 256, "%s", s);
		} else {
			const char *p = s;

			for (;;) {
				const char *e = strstr(p, sep);
				const char *end = e ? e : p + strlen(p);
				const char *b = p;

				while (b < end &&
				       (*b == ' ' || *b == '\t' || *b == '\r' || *b == '\n'))
					b++;
				while (end > b && (end[-1] == ' ' || end[-1] == '\t' ||
						   end[-1] == '\r' || end[-1] == '\n'))
					end--;
				if (end > b && n < cap) {
					if ((size_t)(end - b) >= 256)
						return SIZE_MAX;
					memcpy(out[n], b, (size_t)(end - b));
					out[n][end - b] = '\0';
					n++;
				}
				if (!e)
					break;
				p = e + strlen(sep);
			}
		}
	}
	for (size_t i = 0; i < n; i++)
		for (char *q = out[i]; *q; q++) {
			if (c == 1 && *q >= 'a' && *q <= 'z')
				*q = (char)(*q - 'a' + 'A');
			if (c == 2 && *q >= 'A' && *q <= 'Z')
				*q = (char)(*q - 'A' + 'a');
		}
	return n;
}

static int list_agrees(yajl_val x, int vconv, const struct entry *e)
{
	char vals[64][256];
	size_t n = v1_values(x, vconv, vals, 64);

	if (n != e->n_resp)
		return 0;
	for (size_t i = 0; i < n; i++)
		if (strcmp(vals[i], e->resp[i].value) != 0)
			return 0;
	return 1;
}

/* An opt-in value the engine normalises itself: "1", "0" or "". */
const char *learn_optin_norm(yajl_val x)
{
	const char *s;

	if (!x || x->type == yajl_t_null)
		return "";
	s = learn_scalar_text(x);
	if (!s)
		return NULL;
	if (strcmp(s, "1") == 0 || strcmp(s, "true") == 0)
		return "1";
	if (strcmp(s, "0") == 0 || strcmp(s, "false") == 0)
		return "0";
	if (strcmp(s, "") == 0)
		return "";
	return NULL;
}

static const char *bool_norm(yajl_val x)
{
	const char *s = learn_optin_norm(x);

	return s && *s ? (*s == '1' ? "true" : "false") : NULL;
}

static int int_equal(yajl_val x, const char *v)
{
	const char *s = learn_scalar_text(x);

	return s && v && conv_agrees(CONV_INTEGER, s, v);
}

/* A v2 entry the `unmapped = "form"` policy wrote: label and variable are
 * the v1 key, nothing else but the responses. */
static int entry_generic(const struct learn *L, const struct pair *p, const struct entry *e)
{
	const char *label = learn_scalar_text(learn_obj_get(e->obj, "label"));
	const struct var *v = &L->var[e->var];
	long k;

	if (v->sec != SEC_FORM || !label || strcmp(label, v->name) != 0 ||
	    e->obj->u.object.len != 3 || (k = learn_intern_find(&L->keys, v->name)) < 0)
		return 0;
	return !p->kval[k] || list_agrees(p->kval[k], 0, e) || e->n_resp == 0;
}

/* Render an opt-in categories array as rule text. */
static void categories_text(struct buf *b, yajl_val cats);

static void category_text(struct buf *b, yajl_val c)
{
	static const char *const names[][2] = { { "id", "id" },
						{ "label", "label" },
						{ "technicalName", "technical_name" } };

	learn_sb_puts(b, "{ ");
	for (size_t i = 0; i < 3; i++) {
		yajl_val v = learn_obj_get(c, names[i][0]);

		if (!v)
			continue;
		sb_printf(b, "%s = ", names[i][1]);
		if (v->type == yajl_t_number)
			sb_printf(b, "%s", v->u.number.r);
		else
			learn_sb_quoted(b, learn_scalar_text(v) ? learn_scalar_text(v) : "");
		learn_sb_puts(b, "; ");
	}
	if (learn_obj_get(c, "parent")) {
		learn_sb_puts(b, "parent = ");
		category_text(b, learn_obj_get(c, "parent"));
		learn_sb_puts(b, "; ");
	}
	learn_sb_puts(b, "}");
}

static void categories_text(struct buf *b, yajl_val cats)
{
	learn_sb_puts(b, "( ");
	for (size_t i = 0; cats && cats->type == yajl_t_array && i < cats->u.array.len; i++) {
		if (i)
			learn_sb_puts(b, ", ");
		category_text(b, cats->u.array.values[i]);
	}
	learn_sb_puts(b, " )");
}

static void var_attr(struct learn *L, struct tally *t, yajl_val v, const char *id)
{
	const char *s = learn_scalar_text(v);

	learn_tally_bump(t, NULL, s ? learn_arena_strndup(&L->a, s, strlen(s)) : "", id, 0);
}

static long best_key(const long *agree, size_t nk, long min, long seen)
{
	long best = -1, ba = 0;

	for (size_t k = 0; k < nk; k++)
		if (agree[k] >= min && agree[k] >= seen * (1 - LEARN_TOLERANCE) && agree[k] > ba) {
			best = (long)k;
			ba = agree[k];
		}
	return best;
}

void learn_variables(struct learn *L)
{
	size_t nk = L->keys.n;
	long *orderc;
	size_t nv = L->vars.n;

	for (size_t v = 0; v < nv; v++) {
		struct var *V = &L->var[v];

		V->agree = learn_xcalloc(nk * N_VCONV, sizeof(long));
		V->score_agree = learn_xcalloc(nk, sizeof(long));
		V->max_agree = learn_xcalloc(nk, sizeof(long));
		V->rscore_agree = learn_xcalloc(nk, sizeof(long));
		V->correct_agree = learn_xcalloc(nk, sizeof(long));
		V->key = V->score_key = V->max_key = V->rscore_key = V->correct_key = -1;
	}
	for (size_t i = 0; i < L->n_pairs; i++) {
		const struct pair *p = &L->pairs[i];

		for (size_t j = 0; j < p->n_entries; j++) {
			const struct entry *e = &p->entries[j];
			struct var *V = &L->var[e->var];
			const char *first = e->n_resp ? e->resp[0].value : NULL;

			V->seen++;
			if (entry_generic(L, p, e)) {
				V->generic++;
				continue;
			}
			var_attr(L, &V->id, learn_obj_get(e->obj, "id"), p->id);
			var_attr(L, &V->label, learn_obj_get(e->obj, "label"), p->id);
			var_attr(L, &V->type, learn_obj_get(e->obj, "type"), p->id);
			var_attr(L, &V->description, learn_obj_get(e->obj, "description"), p->id);
			if (V->sec == SEC_OPTINS) {
				struct buf b = { 0 };

				if (learn_obj_get(e->obj, "categories") &&
				    learn_obj_get(e->obj, "categories")->u.array.len) {
					categories_text(&b, learn_obj_get(e->obj, "categories"));
					learn_tally_bump(&V->categories, NULL,
							 learn_arena_strndup(&L->a, b.s, b.len),
							 p->id, 0);
				} else {
					learn_tally_bump(&V->categories, NULL, "", p->id, 0);
				}
				free(b.s);
			}
			if (V->sec == SEC_QUESTIONNAIRE) {
				var_attr(L, &V->max_score, learn_obj_get(e->obj, "maxScore"),
					 p->id);
				V->n_score += learn_obj_get(e->obj, "score") != NULL;
				V->n_max += learn_obj_get(e->obj, "maxScore") != NULL;
			}
			V->n_file += e->is_file;
			for (size_t r = 0; r < e->n_resp; r++) {
				if (e->resp[r].label) {
					V->n_labeled++;
					learn_tally_bump(&V->choices, e->resp[r].value,
							 e->resp[r].label, p->id, 0);
				} else if (V->sec == SEC_FORM) {
					V->n_unlabeled++;
				}
			}
			if (e->n_resp) {
				V->n_rscore += e->resp[0].score != NULL;
				V->n_correct += e->resp[0].correct != NULL;
			}
			for (size_t k = 0; k < nk; k++) {
				yajl_val x = p->kval[k];

				if (!x)
					continue;
				if (V->sec == SEC_OPTINS) {
					const char *nv1 = learn_optin_norm(x);

					if (first && nv1 && strcmp(nv1, first) == 0)
						V->agree[k * N_VCONV]++;
					continue;
				}
				if (V->sec == SEC_QUESTIONNAIRE) {
					V->score_agree[k] += int_equal(
						x,
						learn_scalar_text(learn_obj_get(e->obj, "score")));
					V->max_agree[k] += int_equal(
						x, learn_scalar_text(
							   learn_obj_get(e->obj, "maxScore")));
					if (e->n_resp) {
						V->rscore_agree[k] += int_equal(x,
										e->resp[0].score);
						V->correct_agree[k] += e->resp[0].correct &&
								       bool_norm(x) &&
								       strcmp(bool_norm(x),
									      e->resp[0].correct) ==
									       0;
					}
				}
				if (first) {
					const char *s =
						x->type == yajl_t_array
							? learn_scalar_text(
								  x->u.array.len
									  ? x->u.array.values[0]
									  : NULL)
							: learn_scalar_text(x);

					if (!s || strncasecmp(s, first, 1) != 0)
						continue;
				} else if (e->n_resp) {
					continue;
				}
				for (int c = 0; c < (int)N_VCONV; c++)
					V->agree[k * N_VCONV + c] += list_agrees(x, c, e);
			}
		}
	}
	/* Keys: the best agreement; separators and case changes only when they
	 * explain more pairs than a plain copy. */
	for (size_t v = 0; v < nv; v++) {
		struct var *V = &L->var[v];
		long ba = 0;
		long nonempty = V->seen - V->generic;

		if (V->generic * 2 > V->seen || nonempty <= 0)
			continue;
		for (size_t k = 0; k < nk; k++) {
			int named = strstr(L->keys.names[k], V->name) != NULL;

			for (int c = 0; c < (int)N_VCONV; c++) {
				long a = V->agree[k * N_VCONV + c];
				int cur_named = V->key >= 0 &&
						strstr(L->keys.names[V->key], V->name);

				/* Ties: the simplest conversion, then the key carrying the
				 * variable's name. */
				if (a > ba || (a == ba && a > 0 && named && !cur_named)) {
					ba = a;
					V->key = (long)k;
					V->vconv = c;
				}
			}
		}
		if (V->sec == SEC_OPTINS) {
			/* Opt-ins in another vocabulary ("yes"/"no"): a value map on the
			 * key that decides the response. */
			long bk = -1, bsup = ba;

			for (size_t k = 0; k < nk; k++) {
				struct tally tl = { 0 };
				long sup = 0, mapped = 0;

				for (size_t i = 0; i < L->n_pairs && !tl.overflow; i++) {
					const struct pair *p = &L->pairs[i];

					for (size_t j = 0; j < p->n_entries; j++)
						if (p->entries[j].var == (long)v && p->kval[k] &&
						    learn_scalar_text(p->kval[k]) &&
						    p->entries[j].n_resp)
							learn_tally_bump(
								&tl, learn_scalar_text(p->kval[k]),
								p->entries[j].resp[0].value, p->id,
								LEARN_MAX_OPTION * 3);
				}
				for (size_t c = 0; c < tl.n && !tl.overflow; c++)
					if (learn_tally_top(&tl, tl.cells[c].from, NULL) ==
					    &tl.cells[c]) {
						sup += tl.cells[c].count;
						mapped += learn_optin_norm(&(struct yajl_val_s){
								  .type = yajl_t_string,
								  .u.string = (char *)tl.cells[c]
										      .from }) ==
							  NULL;
					}
				if (!tl.overflow && mapped && sup > bsup) {
					bk = (long)k;
					bsup = sup;
					learn_tally_free(&V->optmap);
					V->optmap = tl;
				} else {
					learn_tally_free(&tl);
				}
			}
			if (bk >= 0) {
				V->key = bk;
				V->vconv = 0;
				ba = bsup;
			}
		}
		V->key_agree = ba;
		if (V->key >= 0) {
			/* A default: the response of the entries whose key is absent. */
			struct tally tl = { 0 };
			long without = 0;
			const struct tally_cell *top;

			for (size_t i = 0; i < L->n_pairs; i++) {
				const struct pair *p = &L->pairs[i];
				yajl_val x = p->kval[V->key];

				if (x && (V->sec == SEC_OPTINS || x->type != yajl_t_null))
					continue;
				without++;
				for (size_t j = 0; j < p->n_entries; j++)
					if (p->entries[j].var == (long)v &&
					    p->entries[j].n_resp == 1)
						learn_tally_bump(&tl, NULL,
								 p->entries[j].resp[0].value, p->id,
								 0);
			}
			top = learn_tally_top(&tl, NULL, NULL);
			if (top && top->count >= L->min_support &&
			    top->count >= without * (1 - LEARN_TOLERANCE)) {
				V->def = top->to;
				V->def_count = top->count;
			}
			learn_tally_free(&tl);
		}
		if (V->key >= 0) {
			/* The evidence of a key: the entries of pairs that carry it
			 * (the others are its default's). */
			nonempty = 0;
			for (size_t i = 0; i < L->n_pairs; i++) {
				yajl_val x = L->pairs[i].kval[V->key];

				if (!x || (V->sec != SEC_OPTINS && x->type == yajl_t_null))
					continue;
				for (size_t j = 0; j < L->pairs[i].n_entries; j++)
					nonempty += L->pairs[i].entries[j].var == (long)v;
			}
		}
		V->key_seen = nonempty;
		if (V->key >= 0 && ba >= L->min_support && ba >= nonempty * (1 - LEARN_TOLERANCE))
			L->key_used[V->key]++;
		else if (V->key >= 0 && ba < nonempty * (1 - LEARN_TOLERANCE))
			V->key = -2; /* no key explains it: attributes only */
		if (V->sec == SEC_QUESTIONNAIRE) {
			V->score_key = V->n_score ? best_key(V->score_agree, nk, L->min_support,
							     V->n_score)
						  : -1;
			V->max_key = V->n_max ? best_key(V->max_agree, nk, L->min_support, V->n_max)
					      : -1;
			V->rscore_key = V->n_rscore ? best_key(V->rscore_agree, nk, L->min_support,
							       V->n_rscore)
						    : -1;
			V->correct_key = V->n_correct ? best_key(V->correct_agree, nk,
								 L->min_support, V->n_correct)
						      : -1;
			/* A constant maxScore is not a key that happens to agree. */
			if (V->max_key >= 0) {
				long total;
				const struct tally_cell *top = learn_tally_top(&V->max_score, NULL,
									       &total);

				if (top && top->count == total && L->key_seen[V->max_key] &&
				    V->max_key != V->score_key) {
					struct tally vals = { 0 };

					for (size_t i = 0; i < L->n_pairs; i++)
						if (learn_scalar_text(L->pairs[i].kval[V->max_key]))
							learn_tally_bump(
								&vals, NULL,
								learn_scalar_text(
									L->pairs[i]
										.kval[V->max_key]),
								NULL, 2);
					if (vals.n < 2)
						V->max_key = -1;
					learn_tally_free(&vals);
				}
			}
			if (V->score_key >= 0)
				L->key_used[V->score_key]++;
			if (V->max_key >= 0)
				L->key_used[V->max_key]++;
			if (V->rscore_key >= 0)
				L->key_used[V->rscore_key]++;
			if (V->correct_key >= 0)
				L->key_used[V->correct_key]++;
		}
	}
	/* Order: an entry comes after those it follows in most documents. */
	orderc = learn_xcalloc(nv * nv + 1, sizeof(long));
	for (size_t i = 0; i < L->n_pairs; i++) {
		const struct pair *p = &L->pairs[i];

		for (size_t a = 0; a < p->n_entries; a++)
			for (size_t b = a + 1; b < p->n_entries; b++)
				orderc[p->entries[a].var * nv + p->entries[b].var]++;
	}
	{
		long *ord = learn_xcalloc(nv + 1, sizeof(long));
		size_t n = 0;

		for (size_t v = 0; v < nv; v++) {
			size_t pos = n;

			while (pos > 0 &&
			       orderc[v * nv + ord[pos - 1]] > orderc[ord[pos - 1] * nv + v])
				pos--;
			memmove(ord + pos + 1, ord + pos, (n - pos) * sizeof(long));
			ord[pos] = (long)v;
			n++;
		}
		for (size_t i = 0; i < n; i++)
			L->var[ord[i]].order = (int)i;
		free(ord);
	}
	free(orderc);
	/* Conflicts of the key: pairs where it is present and disagrees. */
	for (size_t i = 0; i < L->n_pairs; i++) {
		const struct pair *p = &L->pairs[i];

		for (size_t j = 0; j < p->n_entries; j++) {
			const struct entry *e = &p->entries[j];
			struct var *V = &L->var[e->var];
			yajl_val x;
			int ok;

			if (V->key < 0 || entry_generic(L, p, e))
				continue;
			x = p->kval[V->key];
			if (!x)
				continue;
			if (V->sec == SEC_OPTINS) {
				const char *n = learn_optin_norm(x);
				const struct tally_cell *c = V->optmap.n && learn_scalar_text(x)
								     ? learn_tally_top(
									       &V->optmap,
									       learn_scalar_text(x),
									       NULL)
								     : NULL;

				ok = e->n_resp && ((c && strcmp(c->to, e->resp[0].value) == 0) ||
						   (!c && n && strcmp(n, e->resp[0].value) == 0));
			} else {
				ok = list_agrees(x, V->vconv, e);
			}
			if (!ok)
				rule_example(V->examples, &V->n_examples, p->id);
		}
	}
}
