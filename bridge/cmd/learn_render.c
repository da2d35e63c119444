/*
 * learn, output: the learned rules written as a rule file, each with its
 * evidence, and the report that closes it.
 */
#include "learn_types.h"

/* ---- output ------------------------------------------------------------------ */

static const char *tally_major(const struct tally *t, long *ret_count, long *ret_total)
{
	const struct tally_cell *c = learn_tally_top(t, NULL, ret_total);

	if (ret_count)
		*ret_count = c ? c->count : 0;
	return c ? c->to : NULL;
}

static void examples_text(struct buf *b, const char *const *ex, size_t n)
{
	for (size_t i = 0; i < n; i++)
		sb_printf(b, "%s%s", i ? ", " : " (e.g. ", ex[i]);
	if (n)
		learn_sb_puts(b, ")");
}

static void emit_value(struct buf *b, const char *name, const char *value, int integer)
{
	sb_printf(b, " %s = ", name);
	if (integer && value[0] && strspn(value, "0123456789") == strlen(value) &&
	    strlen(value) < 10)
		learn_sb_add(b, value, strlen(value));
	else
		learn_sb_quoted(b, value);
	learn_sb_puts(b, ";");
}

static int cell_from_cmp(const void *x, const void *y)
{
	const struct tally_cell *a = x, *b = y;

	return strcmp(a->from, b->from);
}

/* Value tables are written sorted by their v1 value: the same evidence
 * always gives the same text. */
static void tally_sort_from(struct tally *t)
{
	qsort(t->cells, t->n, sizeof(*t->cells), cell_from_cmp);
}

static void emit_pairs(struct buf *b, const char *name, struct tally *t, int majority_only)
{
	int first = 1;

	tally_sort_from(t);
	sb_printf(b, " %s = ( ", name);
	for (size_t c = 0; c < t->n; c++) {
		if (majority_only && learn_tally_top(t, t->cells[c].from, NULL) != &t->cells[c])
			continue;
		if (!first)
			learn_sb_puts(b, ", ");
		first = 0;
		learn_sb_puts(b, "[");
		learn_sb_quoted(b, t->cells[c].from);
		learn_sb_puts(b, ", ");
		learn_sb_quoted(b, t->cells[c].to);
		learn_sb_puts(b, "]");
	}
	learn_sb_puts(b, " );");
}

const char *learn_top_zone(const struct learn *L)
{
	const char *zone = NULL;
	long best = 0;

	for (int t = 0; t < N_TARGETS; t++) {
		long n = 0;

		if (L->rule[t].kind != 1 || L->rule[t].conv != CONV_DATETIME)
			continue;
		for (int u = 0; u < N_TARGETS; u++)
			n += L->rule[u].kind == 1 && L->rule[u].conv == CONV_DATETIME &&
			     strcmp(L->rule[u].zone, L->rule[t].zone) == 0;
		if (n > best) {
			best = n;
			zone = L->rule[t].zone;
		}
	}
	return zone;
}

static void emit_fields(struct learn *L, struct buf *b, struct report *rp, const char *zone,
			int amb_later, int gap_shift)
{
	int any = 0;

	learn_sb_puts(b, "fields = (\n");
	for (int t = 0; t < N_TARGETS; t++) {
		const struct field_rule *r = &L->rule[t];
		const char *tn = L->target_names[t];

		if (!r->kind)
			continue;
		if (any)
			learn_sb_puts(b, ",\n");
		any = 1;
		if (r->kind == 3) {
			sb_printf(b,
				  "\t# %ld/%ld pairs: the same value, no v1 key has it\n\t{ to = ",
				  r->agree, r->seen);
			learn_sb_quoted(b, tn);
			learn_sb_puts(b, ";");
			emit_value(b, "value", r->value, learn_target_is_integer(t));
			learn_sb_puts(b, " }");
		} else {
			sb_printf(b, "\t# %ld/%ld pairs", r->agree, r->seen);
			if (r->def)
				sb_printf(b, "; default in %ld pairs without the key",
					  r->def_count);
			if (r->conv == CONV_DATETIME && r->kind == 1)
				sb_printf(b, "; v1 format \"%s\", zone %s%s%s",
					  r->dt_format ? r->dt_format : "", r->zone,
					  r->zone_also ? " (the dates seen also fit " : "",
					  r->zone_also ? r->zone_also : "");
			if (r->zone_also && r->conv == CONV_DATETIME)
				learn_sb_puts(b, ")");
			sb_printf(b, "\n\t{ to = ");
			learn_sb_quoted(b, tn);
			learn_sb_puts(b, "; from = ");
			learn_sb_quoted(b, L->keys.names[r->key]);
			learn_sb_puts(b, ";");
			if (r->kind == 1 && (r->conv != CONV_COPY || learn_target_is_integer(t)))
				sb_printf(b, " convert = \"%s\";",
					  conv_names[learn_target_is_integer(t) ? CONV_INTEGER
										: r->conv]);
			if (r->kind == 1 && r->conv == CONV_DATETIME) {
				if (!zone || strcmp(zone, r->zone) != 0)
					sb_printf(b, " timezone = \"%s\";", r->zone);
				if (r->ambiguous_later != amb_later)
					sb_printf(b, " ambiguous = \"%s\";",
						  r->ambiguous_later ? "later" : "earlier");
				if (r->gap_shift != gap_shift)
					sb_printf(b, " gap = \"%s\";",
						  r->gap_shift ? "shift" : "reject");
			}
			if (r->kind == 2) {
				int first = 1;

				if (r->unknown_reject)
					learn_sb_puts(b, " unknown = \"reject\";");
				learn_sb_puts(b, "\n\t  map = ( ");
				tally_sort_from(&L->rule[t].map);
				for (size_t c = 0; c < r->map.n; c++) {
					const struct tally_cell *cell = &r->map.cells[c];

					if (learn_tally_top(&r->map, cell->from, NULL) != cell ||
					    (!r->unknown_reject &&
					     strcmp(cell->from, cell->to) == 0))
						continue;
					if (!first)
						learn_sb_puts(b, ", ");
					first = 0;
					learn_sb_puts(b, "[");
					learn_sb_quoted(b, cell->from);
					learn_sb_puts(b, ", ");
					learn_sb_quoted(b, cell->to);
					learn_sb_puts(b, "]");
					if (cell->count == 1)
						sb_printf(&rp->once,
							  "#   %s: v1 %s = \"%s\" (%s)\n", tn,
							  L->keys.names[r->key], cell->from,
							  cell->example);
				}
				learn_sb_puts(b, " );");
			}
			if (r->def)
				emit_value(b, "default", r->def, learn_target_is_integer(t));
			learn_sb_puts(b, " }");
		}
		if (r->against) {
			sb_printf(&rp->conflicts, "#   %s <- %s: agrees in %ld pairs, not in %ld",
				  tn, r->kind == 3 ? "(constant)" : L->keys.names[r->key], r->agree,
				  r->against);
			examples_text(&rp->conflicts, r->examples, r->n_examples);
			learn_sb_puts(&rp->conflicts, "\n");
			rp->n_conflicts++;
		}
	}
	learn_sb_puts(b, "\n);\n");
	for (int t = 0; t < N_TARGETS; t++) {
		long present = 0;

		if (L->rule[t].kind)
			continue;
		for (size_t i = 0; i < L->n_pairs; i++)
			present += L->pairs[i].tv[t] != NULL;
		if (present)
			sb_printf(&rp->unexplained, "#   %s (in %ld pairs)\n", L->target_names[t],
				  present);
	}
}

static int var_cmp_order(const void *x, const void *y)
{
	const struct var *a = *(const struct var *const *)x, *b = *(const struct var *const *)y;

	return (a->order > b->order) - (a->order < b->order);
}

static const char *var_prefix(const struct learn *L, const struct var *V)
{
	const char *k = L->keys.names[V->key];
	size_t kl = strlen(k), vl = strlen(V->name);

	if (kl >= vl && strcmp(k + kl - vl, V->name) == 0)
		return learn_arena_strndup((struct arena *)&L->a, k, kl - vl);
	return NULL;
}

static void emit_variables(struct learn *L, struct buf *b, struct report *rp,
			   const char *prefix[N_SECTIONS])
{
	size_t nv = L->vars.n, n = 0;
	struct var **vs = learn_xcalloc(nv + 1, sizeof(*vs));

	for (size_t v = 0; v < nv; v++)
		if (!(L->var[v].generic * 2 > L->var[v].seen) && L->var[v].seen > L->var[v].generic)
			vs[n++] = &L->var[v];
	qsort(vs, n, sizeof(*vs), var_cmp_order);
	learn_sb_puts(b, "\nvariables = (\n");
	for (size_t i = 0; i < n; i++) {
		struct var *V = vs[i];
		long cnt, total;
		const char *s;

		sb_printf(b, "\t# %ld entries", V->seen - V->generic);
		if (V->key >= 0)
			sb_printf(b, "; v1 key '%s' agrees in %ld", L->keys.names[V->key],
				  V->key_agree);
		else
			learn_sb_puts(b, "; no v1 key explains the responses");
		sb_printf(b, "\n\t{ section = \"%s\"; variable = ", section_names[V->sec]);
		learn_sb_quoted(b, V->name);
		learn_sb_puts(b, ";");
		if (V->key >= 0) {
			const char *pf = var_prefix(L, V);

			if (!pf || strcmp(pf, prefix[V->sec]) != 0) {
				learn_sb_puts(b, " from = ");
				learn_sb_quoted(b, L->keys.names[V->key]);
				learn_sb_puts(b, ";");
			}
		}
		if ((s = tally_major(&V->id, &cnt, &total)) && *s)
			emit_value(b, "id", s, 1);
		if ((s = tally_major(&V->label, &cnt, &total)) && *s)
			emit_value(b, "label", s, 0);
		if (V->sec != SEC_OPTINS && (s = tally_major(&V->type, &cnt, &total)) && *s)
			emit_value(b, "type", s, 0);
		if (V->sec == SEC_OPTINS && (s = tally_major(&V->description, &cnt, &total)) && *s)
			emit_value(b, "description", s, 0);
		if (V->sec == SEC_FORM && V->n_file * 2 > V->seen - V->generic)
			learn_sb_puts(b, " file = true;");
		if (V->key >= 0 && V->vconv / (int)N_SEP)
			sb_printf(b, " convert = \"%s\";",
				  V->vconv / (int)N_SEP == 1 ? "upper" : "lower");
		if (V->key >= 0 && separators[V->vconv % (int)N_SEP]) {
			learn_sb_puts(b, " separator = ");
			learn_sb_quoted(b, separators[V->vconv % (int)N_SEP]);
			learn_sb_puts(b, ";");
		}
		if (V->sec == SEC_QUESTIONNAIRE) {
			if (V->score_key >= 0)
				sb_printf(b, " score_from = \"%s\";", L->keys.names[V->score_key]);
			if (V->max_key >= 0)
				sb_printf(b, " max_score_from = \"%s\";",
					  L->keys.names[V->max_key]);
			else if ((s = tally_major(&V->max_score, &cnt, &total)) && *s)
				emit_value(b, "max_score", s, 1);
			if (V->rscore_key >= 0)
				sb_printf(b, " response_score_from = \"%s\";",
					  L->keys.names[V->rscore_key]);
			if (V->correct_key >= 0)
				sb_printf(b, " correct_from = \"%s\";",
					  L->keys.names[V->correct_key]);
		}
		if (V->sec == SEC_FORM && V->n_labeled) {
			learn_sb_puts(b, "\n\t ");
			if (!V->n_unlabeled)
				learn_sb_puts(b, " unknown = \"reject\";");
			emit_pairs(b, "choices", &V->choices, 1);
			for (size_t c = 0; c < V->choices.n; c++)
				if (V->choices.cells[c].count == 1)
					sb_printf(&rp->once, "#   %s: choice \"%s\" (%s)\n",
						  V->name, V->choices.cells[c].from,
						  V->choices.cells[c].example);
		}
		if (V->sec == SEC_OPTINS && V->optmap.n) {
			struct tally m = { 0 };

			for (size_t c = 0; c < V->optmap.n; c++) {
				const struct tally_cell *cell = &V->optmap.cells[c];
				const char *nv1 = learn_optin_norm(&(struct yajl_val_s){
					.type = yajl_t_string, .u.string = (char *)cell->from });

				if (learn_tally_top(&V->optmap, cell->from, NULL) == cell &&
				    !(nv1 && strcmp(nv1, cell->to) == 0))
					learn_tally_bump(&m, cell->from, cell->to, cell->example,
							 0);
			}
			learn_sb_puts(b, "\n\t ");
			emit_pairs(b, "map", &m, 0);
			learn_tally_free(&m);
		}
		if (V->def && V->key >= 0)
			emit_value(b, "default", V->def, 0);
		if (V->sec == SEC_OPTINS && (s = tally_major(&V->categories, &cnt, &total)) && *s)
			sb_printf(b, "\n\t  categories = %s;", s);
		sb_printf(b, " }%s\n", i + 1 < n ? "," : "");
		if (V->n_examples) {
			sb_printf(&rp->conflicts,
				  "#   %s[%s] <- %s: agrees in %ld entries, not in %zu+",
				  section_names[V->sec], V->name,
				  V->key >= 0 ? L->keys.names[V->key] : "?", V->key_agree,
				  V->n_examples);
			examples_text(&rp->conflicts, V->examples, V->n_examples);
			learn_sb_puts(&rp->conflicts, "\n");
			rp->n_conflicts++;
		}
		if (V->key < 0)
			sb_printf(&rp->unexplained, "#   %s[%s].responses (in %ld entries)\n",
				  section_names[V->sec], V->name, V->seen);
	}
	learn_sb_puts(b, ");\n");
	free(vs);
}

/* The prefix of a section: the one most of its variables' keys use. */
static void learn_prefixes(struct learn *L, const char *prefix[N_SECTIONS])
{
	for (int s = 0; s < N_SECTIONS; s++) {
		struct tally t = { 0 };
		long cnt = 0, total = 0;
		const char *top;

		prefix[s] = default_prefix[s];
		for (size_t v = 0; v < L->vars.n; v++) {
			const struct var *V = &L->var[v];
			const char *pf;

			if (V->sec != (enum section)s || V->key < 0 || V->generic * 2 > V->seen)
				continue;
			pf = var_prefix(L, V);
			learn_tally_bump(&t, NULL, pf ? pf : "\x01", NULL, 0);
		}
		top = tally_major(&t, &cnt, &total);
		if (top && *top != '\x01' && (cnt >= 2 || cnt == total)) {
			long def = 0;

			for (size_t c = 0; c < t.n; c++)
				if (strcmp(t.cells[c].to, default_prefix[s]) == 0)
					def = t.cells[c].count;
			if (cnt > def)
				prefix[s] = top;
		}
		learn_tally_free(&t);
	}
}

void learn_render(struct learn *L, struct buf *b, struct report *rp)
{
	const char *zone = learn_top_zone(L);
	const char *prefix[N_SECTIONS];
	int amb_later = 0, gap_shift = 0;
	long generic_keys = 0;
	int first;

	learn_prefixes(L, prefix);
	for (int t = 0; t < N_TARGETS; t++)
		if (L->rule[t].kind == 1 && L->rule[t].conv == CONV_DATETIME && zone &&
		    strcmp(L->rule[t].zone, zone) == 0) {
			amb_later = L->rule[t].ambiguous_later;
			gap_shift = L->rule[t].gap_shift;
		}
	sb_printf(b,
		  "# Learned by `webhook-bridge learn` from %zu pairs of v1 and real v2\n"
		  "# posts.  Each rule's comment gives its evidence; the report at the end\n"
		  "# lists what the evidence did not explain.  Review, then `webhook-bridge\n"
		  "# check --mapping FILE`.\n\nversion = 1;\n",
		  L->n_pairs);
	if (zone)
		sb_printf(b, "timezone = \"%s\";\nambiguous = \"%s\";\ngap = \"%s\";\n", zone,
			  amb_later ? "later" : "earlier", gap_shift ? "shift" : "reject");
	for (size_t v = 0; v < L->vars.n; v++)
		if (L->var[v].generic * 2 > L->var[v].seen)
			generic_keys++;
	/* Keys no rule reads: written as generic entries by the "form" policy
	 * (seen), or named in `ignore` (absent from every v2). */
	sb_printf(b, "# %s\nunmapped = \"form\";\n",
		  generic_keys ? "v1 keys no rule names arrive as generic form entries"
			       : "no generic entries were seen; \"form\" keeps new keys");
	first = 1;
	for (size_t k = 0; k < L->keys.n; k++) {
		long var = learn_intern_find(&L->vars, L->keys.names[k]);

		if (L->key_used[k] ||
		    (var >= 0 && L->var[var].generic && L->var[var].generic * 2 > L->var[var].seen))
			continue;
		if (first)
			learn_sb_add(
				b,
				"# named so that they are not written: in no v2 value\nignore = [ ",
				63);
		else
			learn_sb_puts(b, ", ");
		first = 0;
		learn_sb_quoted(b, L->keys.names[k]);
	}
	if (!first)
		learn_sb_puts(b, " ];\n");
	if (strcmp(prefix[0], default_prefix[0]) || strcmp(prefix[1], default_prefix[1]) ||
	    strcmp(prefix[2], default_prefix[2])) {
		learn_sb_puts(b, "prefixes = {");
		for (int s = 0; s < N_SECTIONS; s++) {
			sb_printf(b, " %s = ", section_names[s]);
			learn_sb_quoted(b, prefix[s]);
			learn_sb_puts(b, ";");
		}
		learn_sb_puts(b, " };\n");
	}
	learn_sb_puts(b, "\n");
	emit_fields(L, b, rp, zone, amb_later, gap_shift);
	emit_variables(L, b, rp, prefix);
}
