/*
 * learn: infer a rule file from paired v1 / v2 traffic (see
 * bridge/cmd/learn.h for the contract).
 *
 * Every document of a run lives until the end of it; strings the learner
 * makes are kept in one arena, freed in one place.  Evidence is counted per
 * (v2 target, v1 key, conversion) across the pairs, so the cost is linear
 * in the pairs times the keys of a document.
 */

#include <limits.h>

#include "learn_types.h"

static const char usage_learn[] =
	"usage: webhook-bridge learn --v1 FILE... --v2 FILE... [--base RULES] [--min-support N]\n"
	"                            [-o RULES]\n"
	"\n"
	"Infers a mapping rule file from paired traffic: v1 bodies and the real v2\n"
	"bodies of the same participations, matched by participation id and state.\n"
	"\n"
	"  --v1 FILE...       v1 bodies: NDJSON (one body per line), `record` captures,\n"
	"                     JSON files or folders of them\n"
	"  --v2 FILE...       real v2 bodies: NDJSON, `dry_run.v2_record` captures,\n"
	"                     JSON files or folders of them\n"
	"  --base RULES       compare with an existing rule file: what the evidence\n"
	"                     confirms, contradicts or adds, as a diff on stderr\n"
	"  --min-support N    pairs a rule needs (default 3)\n"
	"  -o RULES           write the rule file there (default: stdout)\n"
	"\n"
	"The rule file carries its evidence in comments and ends with a report;\n"
	"a summary goes to stderr.\n"
	"exit: 0 every pair is reproduced exactly by the learned rules, 1 some are\n"
	"      not, 2 usage or input error\n";

/* ---- self-check: the learned file under the real engine ---------------------- */

/* The text of a scalar as a v1 document holds it, from d's arena. */
static char *doc_text(struct v1_doc *d, yajl_val v, size_t *ret_len)
{
	const char *t = learn_scalar_text(v) ? learn_scalar_text(v) : "";

	*ret_len = strlen(t);
	return learn_arena_strndup(&d->arena, t, *ret_len);
}

static enum v1_type doc_type(yajl_val v)
{
	return v->type == yajl_t_string   ? V1_STRING
	       : v->type == yajl_t_number ? V1_NUMBER
	       : learn_scalar_text(v)     ? V1_BOOL
					  : V1_NULL;
}

static struct v1_doc *v1_from_tree(yajl_val o)
{
	struct v1_doc *d = v1_doc_new();
	size_t len;

	if (!d) {
		fputs("webhook-bridge learn: out of memory\n", stderr);
		exit(2);
	}
	d->fields = learn_arena_alloc(&d->arena, (o->u.object.len + 1) * sizeof(*d->fields));
	for (size_t i = 0; i < o->u.object.len; i++) {
		struct v1_field *f = &d->fields[d->n_fields];
		yajl_val v = o->u.object.values[i];

		memset(f, 0, sizeof(*f));
		f->key_len = strlen(o->u.object.keys[i]);
		f->key = learn_arena_strndup(&d->arena, o->u.object.keys[i], f->key_len);
		if (v->type == yajl_t_array) {
			f->value.type = V1_ARRAY;
			f->value.text = learn_arena_strndup(&d->arena, "", 0);
			f->value.items = learn_arena_alloc(
				&d->arena, (v->u.array.len + 1) * sizeof(struct v1_value));
			for (size_t j = 0; j < v->u.array.len; j++) {
				yajl_val it = v->u.array.values[j];
				struct v1_value *iv = &f->value.items[f->value.n_items++];

				memset(iv, 0, sizeof(*iv));
				iv->type = doc_type(it);
				iv->text = doc_text(d, it, &len);
				iv->len = len;
			}
		} else {
			f->value.type = doc_type(v);
			f->value.text = doc_text(d, v, &len);
			f->value.len = len;
		}
		d->n_fields++;
	}
	return d;
}

/* Re-emit a yajl tree as compact JSON (capture bodies have no text of their own). */
static void tree_text(struct buf *b, yajl_val v)
{
	switch (v ? v->type : yajl_t_null) {
	case yajl_t_string:
		learn_sb_check(buf_json_quoted(learn_sb(b), v->u.string, strlen(v->u.string), 0));
		break;
	case yajl_t_number: sb_printf(b, "%s", v->u.number.r); break;
	case yajl_t_true: learn_sb_puts(b, "true"); break;
	case yajl_t_false: learn_sb_puts(b, "false"); break;
	case yajl_t_object:
		learn_sb_puts(b, "{");
		for (size_t i = 0; i < v->u.object.len; i++) {
			struct yajl_val_s key = { .type = yajl_t_string,
						  .u.string = (char *)v->u.object.keys[i] };

			if (i)
				learn_sb_puts(b, ",");
			tree_text(b, &key);
			learn_sb_puts(b, ":");
			tree_text(b, v->u.object.values[i]);
		}
		learn_sb_puts(b, "}");
		break;
	case yajl_t_array:
		learn_sb_puts(b, "[");
		for (size_t i = 0; i < v->u.array.len; i++) {
			if (i)
				learn_sb_puts(b, ",");
			tree_text(b, v->u.array.values[i]);
		}
		learn_sb_puts(b, "]");
		break;
	default: learn_sb_puts(b, "null");
	}
}

static int self_check(struct learn *L, const char *rules, struct check *ck, struct buf *errs,
		      unsigned char *ok)
{
	struct mapping *m = NULL;
	struct diag d = { 0 };

	if (mapping_load(rules, &m, &d) < 0) {
		sb_printf(errs, "%s", d.text ? d.text : "");
		diag_reset(&d);
		return -1;
	}
	diag_reset(&d);
	for (size_t i = 0; i < L->n_pairs; i++) {
		const struct pair *p = &L->pairs[i];
		struct v1_doc *doc = v1_from_tree(p->v1);
		struct mapping_result res = { 0 };
		struct bridge_error err;
		struct jsondiff df;
		struct buf real = { 0 };
		const char *rt = p->v2doc->raw;
		size_t rl = p->v2doc->raw_len;

		bridge_error_clear(&err);
		if (!rt) {
			tree_text(&real, p->v2);
			rt = real.s;
			rl = real.len;
		}
		if (mapping_apply(m, doc, 0, &res, &err) < 0) {
			ck->failed++;
			if (!ck->fail_example) {
				ck->fail_example = p->id;
				snprintf(ck->fail_msg, sizeof(ck->fail_msg), "%s", err.message);
			}
		} else if (jsondiff_compare(res.body, res.len, rt, rl, NULL, &df, &err) == 0) {
			if (df.n_added + df.n_removed + df.n_changed == 0) {
				ck->exact++;
				if (ok)
					ok[i] = 1;
			}
			for (size_t e = 0; e < df.n_entries; e++)
				learn_tally_bump(&ck->paths, NULL,
						 learn_arena_strndup(&L->a, df.entries[e].path,
								     strlen(df.entries[e].path)),
						 p->id, 0);
			jsondiff_clear(&df);
		}
		mapping_result_clear(&res);
		v1_doc_free(doc);
		free(real.s);
	}
	mapping_free(m);
	return 0;
}

static int tally_count_cmp(const void *x, const void *y)
{
	const struct tally_cell *a = x, *b = y;

	return (b->count > a->count) - (b->count < a->count);
}

/* ---- --base: what the evidence says about an existing file -------------------- */

/* One line per rule of a file, as `map` reads it: rules by target/variable
 * with their settings in a fixed order, so two files compare line by line. */
static void rule_lines(FILE *f, struct tally *out, struct arena *a)
{
	char line[4096];
	struct buf cur = { 0 };
	int depth = 0;

	while (fgets(line, sizeof(line), f)) {
		char *hash = NULL;
		int in_str = 0;

		for (char *p = line; *p; p++) {
			if (*p == '"' && (p == line || p[-1] != '\\'))
				in_str = !in_str;
			if (!in_str && *p == '#') {
				hash = p;
				break;
			}
		}
		if (hash)
			*hash = '\0';
		for (char *p = line; *p; p++) {
			if (*p == '\n' || *p == '\t')
				*p = ' ';
		}
		for (char *p = line; *p; p++) {
			if (*p == '"')
				in_str = !in_str;
			if (in_str)
				continue;
			if (*p == '{')
				depth++;
			if (*p == '}')
				depth--;
		}
		if (depth > 0 || cur.len) {
			char *s = line;

			while (*s == ' ')
				s++;
			learn_sb_add(&cur, s, strlen(s));
		}
		if (depth == 0 && cur.len) {
			char *e = cur.s + cur.len;

			while (e > cur.s &&
			       (e[-1] == ' ' || e[-1] == ',' || e[-1] == ';' || e[-1] == ')'))
				*--e = '\0';
			if (strstr(cur.s, "to =") || strstr(cur.s, "variable ="))
				learn_tally_bump(out, NULL,
						 learn_arena_strndup(a, cur.s, strlen(cur.s)), NULL,
						 0);
			cur.len = 0;
			cur.s[0] = '\0';
		} else if (depth == 0 && strchr(line, '=')) {
			char *s = line, *e;

			while (*s == ' ')
				s++;
			e = s + strlen(s);
			while (e > s && (e[-1] == ' ' || e[-1] == ',' || e[-1] == ';'))
				*--e = '\0';
			if (*s && e[-1] != '(')
				learn_tally_bump(out, NULL, learn_arena_strndup(a, s, strlen(s)),
						 NULL, 0);
		}
	}
	free(cur.s);
}

static void base_lines(const char *path, struct tally *out, struct arena *a)
{
	FILE *f = fopen(path, "r");

	if (!f)
		return;
	rule_lines(f, out, a);
	fclose(f);
}

static void base_diff(const char *base, const char *learned, struct arena *a, long base_exact,
		      long learned_exact, size_t n_pairs)
{
	struct tally bl = { 0 }, ll = { 0 };
	long kept = 0;

	base_lines(base, &bl, a);
	base_lines(learned, &ll, a);
	fprintf(stderr,
		"--- %s (reproduces %ld/%zu pairs)\n+++ learned (reproduces %ld/%zu pairs)\n", base,
		base_exact, n_pairs, learned_exact, n_pairs);
	for (size_t i = 0; i < bl.n; i++) {
		int found = 0;

		for (size_t j = 0; j < ll.n && !found; j++)
			found = strcmp(bl.cells[i].to, ll.cells[j].to) == 0;
		if (found)
			kept++;
		else
			fprintf(stderr, "-%s\n", bl.cells[i].to);
	}
	for (size_t j = 0; j < ll.n; j++) {
		int found = 0;

		for (size_t i = 0; i < bl.n && !found; i++)
			found = strcmp(bl.cells[i].to, ll.cells[j].to) == 0;
		if (!found)
			fprintf(stderr, "+%s\n", ll.cells[j].to);
	}
	fprintf(stderr, "# %ld rule(s) of %s confirmed by the evidence\n", kept, base);
	learn_tally_free(&bl);
	learn_tally_free(&ll);
}

/* ---- stages: websites or campaigns whose pairs follow other rules ------------ */

static void learn_all(struct learn *L, struct zones *Z);

static void report_clear(struct report *rp)
{
	free(rp->conflicts.s);
	free(rp->once.s);
	free(rp->unexplained.s);
	memset(rp, 0, sizeof(*rp));
}

/* The rule lines (one per field rule or variable, comments dropped) of a
 * rendering of the current state. */
static void state_rules(struct learn *L, struct tally *out)
{
	struct buf b = { 0 };
	struct report rp = { 0 };
	FILE *f;

	learn_render(L, &b, &rp);
	f = fmemopen(b.s, b.len, "r");
	if (f) {
		rule_lines(f, out, &L->a);
		fclose(f);
	}
	free(b.s);
	report_clear(&rp);
}

static int rule_is_group(const char *line)
{
	return strncmp(line, "{ to =", 6) == 0 || strncmp(line, "{ section =", 11) == 0;
}

static int self_check(struct learn *L, const char *rules, struct check *ck, struct buf *errs,
		      unsigned char *ok);

static int write_text(const char *path, const struct buf *text);
static int temp_file(char *path, size_t size, const char *name);

/* Pairs of L whose selector (website or campaign id) is gid, into sub. */
static size_t subset_of(struct learn *L, const struct pair *all, size_t n_all, const int *group,
			int g, struct pair *sub)
{
	size_t n = 0;

	(void)L;
	for (size_t i = 0; i < n_all; i++)
		if (group[i] == g)
			sub[n++] = all[i];
	return n;
}

/* Stages: websites (else campaigns) whose own rules differ from those the
 * other groups share and whose pairs the shared rules do not reproduce.
 * Each group with enough pairs is learned on its own; a group holding a rule
 * (or a zone) that groups with most of the pairs do not hold is a
 * candidate; the base is learned from the other pairs and a candidate
 * whose pairs it mostly fails becomes a stage with its differing rules.
 * Leaves L holding the base rules over all pairs.  Returns the number of
 * stages written into out. */
static int stages_find(struct learn *L, struct zones *Z, const unsigned char *ok_all,
		       struct buf *out)
{
	const char *sel_key[2], *sel_name[2] = { "websites", "campaigns" };
	struct pair *all = L->pairs, *sub;
	size_t n_all = L->n_pairs;
	int *group = learn_xcalloc(n_all + 1, sizeof(int));
	unsigned char *ok = learn_xcalloc(n_all + 1, 1);
	char canon[32];
	int n_stages = 0;

	(void)ok_all;
	sub = learn_xcalloc(n_all + 1, sizeof(*sub));
	sel_key[0] = L->rule[15].kind == 1 ? L->keys.names[L->rule[15].key] : "website_id";
	sel_key[1] = L->rule[8].kind == 1 ? L->keys.names[L->rule[8].key] : "campaign_id";
	for (int s = 0; s < 2 && !n_stages; s++) {
		struct tally ids = { 0 }, lines[LEARN_MAX_STAGES], base = { 0 };
		const char *gid[LEARN_MAX_STAGES], *gzone[LEARN_MAX_STAGES], *zone_major = NULL;
		long gsize[LEARN_MAX_STAGES], total = 0, best_zone = 0;
		int n_groups = 0, cand[LEARN_MAX_STAGES], stage[LEARN_MAX_STAGES], n_cand = 0;
		char tmp[PATH_MAX];

		for (size_t i = 0; i < n_all; i++) {
			const char *x = learn_scalar_text(learn_obj_get(all[i].v1, sel_key[s]));

			if (x && convert_integer(x, strlen(x), canon, sizeof(canon), NULL) == 0)
				learn_tally_bump(&ids, NULL,
						 learn_arena_strndup(&L->a, canon, strlen(canon)),
						 NULL, 0);
		}
		for (size_t c = 0; c < ids.n && n_groups < LEARN_MAX_STAGES; c++)
			if (ids.cells[c].count >= L->min_support && ids.cells[c].count >= 5) {
				gid[n_groups] = ids.cells[c].to;
				gsize[n_groups] = ids.cells[c].count;
				total += gsize[n_groups];
				n_groups++;
			}
		learn_tally_free(&ids);
		if (n_groups < 2)
			continue;
		for (size_t i = 0; i < n_all; i++) {
			const char *x = learn_scalar_text(learn_obj_get(all[i].v1, sel_key[s]));

			group[i] = -1;
			if (!x || convert_integer(x, strlen(x), canon, sizeof(canon), NULL) < 0)
				continue;
			for (int g = 0; g < n_groups; g++)
				if (strcmp(canon, gid[g]) == 0)
					group[i] = g;
		}
		for (int g = 0; g < n_groups; g++) {
			memset(&lines[g], 0, sizeof(lines[g]));
			L->pairs = sub;
			L->n_pairs = subset_of(L, all, n_all, group, g, sub);
			learn_all(L, Z);
			gzone[g] = learn_top_zone(L);
			state_rules(L, &lines[g]);
		}
		for (int g = 0; g < n_groups; g++) {
			long w = 0;

			for (int h = 0; h < n_groups; h++)
				if (gzone[h] && gzone[g] && strcmp(gzone[h], gzone[g]) == 0)
					w += gsize[h];
			if (w > best_zone) {
				best_zone = w;
				zone_major = gzone[g];
			}
		}
		for (int g = 0; g < n_groups; g++) {
			int odd = gzone[g] && zone_major && strcmp(gzone[g], zone_major) != 0;

			for (size_t c = 0; c < lines[g].n && !odd; c++) {
				long w = 0;

				if (!rule_is_group(lines[g].cells[c].to))
					continue;
				for (int h = 0; h < n_groups; h++)
					for (size_t e = 0; e < lines[h].n; e++)
						if (strcmp(lines[h].cells[e].to,
							   lines[g].cells[c].to) == 0) {
							w += gsize[h];
							break;
						}
				odd = w * 2 <= total;
			}
			stage[g] = 0;
			if (odd && gsize[g] * 2 < (long)n_all)
				cand[n_cand++] = g;
		}
		{
			long covered = 0;

			for (int c = 0; c < n_cand; c++)
				covered += gsize[cand[c]];
			/* Stages are the exception: when most pairs would be in one,
			 * the groups are too small to tell rules from chance. */
			if (covered * 2 >= (long)n_all)
				n_cand = 0;
		}
		if (!n_cand) {
			for (int g = 0; g < n_groups; g++)
				learn_tally_free(&lines[g]);
			continue;
		}
		/* The base without the candidates, tried on every pair. */
		L->n_pairs = 0;
		for (size_t i = 0; i < n_all; i++) {
			int skip = 0;

			for (int c = 0; c < n_cand; c++)
				skip |= group[i] == cand[c];
			if (!skip)
				sub[L->n_pairs++] = all[i];
		}
		learn_all(L, Z);
		if (temp_file(tmp, sizeof(tmp), "stage-") == 0) {
			struct buf bt = { 0 }, errs = { 0 };
			struct report rp = { 0 };
			struct check ck = { 0 };
			size_t n_base = L->n_pairs;

			learn_render(L, &bt, &rp);
			L->pairs = all;
			L->n_pairs = n_all;
			memset(ok, 0, n_all);
			if (write_text(tmp, &bt) == 0 && self_check(L, tmp, &ck, &errs, ok) == 0)
				for (int c = 0; c < n_cand; c++) {
					long good = 0;

					for (size_t i = 0; i < n_all; i++)
						good += group[i] == cand[c] && ok[i];
					stage[cand[c]] = good * 2 < gsize[cand[c]];
				}
			unlink(tmp);
			L->pairs = sub;
			L->n_pairs = n_base;
			free(bt.s);
			free(errs.s);
			report_clear(&rp);
			learn_tally_free(&ck.paths);
		}
		/* The final base: every pair outside the stages. */
		L->n_pairs = 0;
		for (size_t i = 0; i < n_all; i++)
			if (group[i] < 0 || !stage[group[i]])
				sub[L->n_pairs++] = all[i];
		learn_all(L, Z);
		state_rules(L, &base);
		for (int g = 0; g < n_groups; g++)
			n_stages += stage[g];
		if (n_stages && strcmp(sel_key[s], s ? "campaign_id" : "website_id") != 0) {
			sb_printf(out, "\n# the v1 key of the %s ids the stages select on\n%s = ",
				  s ? "campaign" : "website", s ? "campaign_key" : "website_key");
			learn_sb_quoted(out, sel_key[s]);
			learn_sb_puts(out, ";\n");
		}
		if (n_stages)
			learn_sb_puts(out, "\nstages = (\n");
		for (int g = 0, done = 0; g < n_groups; g++) {
			const char *bz = learn_top_zone(L);

			if (!stage[g])
				continue;
			sb_printf(out,
				  "\t# %s %s: %ld pairs, their own rules below; the others' rules "
				  "reproduce fewer than half of them\n\t{ name = \"%s %s\"; %s = [ "
				  "%s ];",
				  s ? "campaign" : "website", gid[g], gsize[g],
				  s ? "campaign" : "website", gid[g], sel_name[s], gid[g]);
			if (gzone[g] && (!bz || strcmp(gzone[g], bz) != 0))
				sb_printf(out, " timezone = \"%s\";", gzone[g]);
			for (int part = 0; part < 2; part++) {
				int first = 1;

				for (size_t c = 0; c < lines[g].n; c++) {
					const char *line = lines[g].cells[c].to;
					int found = 0;

					if (!rule_is_group(line) || (line[2] == 't') != (part == 0))
						continue;
					for (size_t e = 0; e < base.n && !found; e++)
						found = strcmp(base.cells[e].to, line) == 0;
					if (found)
						continue;
					sb_printf(out, "%s%s",
						  first ? (part ? "\n\t  variables = (\n\t\t"
								: "\n\t  fields = (\n\t\t")
							: ",\n\t\t",
						  line);
					first = 0;
				}
				if (!first)
					learn_sb_puts(out, "\n\t  );");
			}
			done++;
			sb_printf(out, " }%s\n", done < n_stages ? "," : "");
		}
		if (n_stages)
			learn_sb_puts(out, ");\n");
		learn_tally_free(&base);
		for (int g = 0; g < n_groups; g++)
			learn_tally_free(&lines[g]);
		if (!n_stages) {
			/* Nothing to split: the rules of every pair. */
			L->pairs = all;
			L->n_pairs = n_all;
			learn_all(L, Z);
		}
	}
	L->pairs = all;
	L->n_pairs = n_all;
	if (!n_stages)
		learn_all(L, Z);
	free(sub);
	free(group);
	free(ok);
	return n_stages;
}

static int write_text(const char *path, const struct buf *text)
{
	FILE *f = fopen(path, "w");

	if (!f || fwrite(text->s, 1, text->len, f) != text->len || fclose(f) != 0) {
		fprintf(stderr, "webhook-bridge learn: %s: %s\n", path, strerror(errno));
		return -1;
	}
	return 0;
}

/* A new empty file $TMPDIR/webhook-bridge-learn-<name>XXXXXX (under /tmp when
 * TMPDIR is unset or empty), its path written into path: 0, or -1 with errno
 * set and path "". */
static int temp_file(char *path, size_t size, const char *name)
{
	const char *dir = getenv("TMPDIR");
	int fd, n;

	if (!dir || !*dir)
		dir = "/tmp";
	n = snprintf(path, size, "%s/webhook-bridge-learn-%sXXXXXX", dir, name);
	if (n < 0 || (size_t)n >= size) {
		path[0] = '\0';
		errno = ENAMETOOLONG;
		return -1;
	}
	fd = mkstemp(path);
	if (fd < 0) {
		path[0] = '\0';
		return -1;
	}
	close(fd);
	return 0;
}

/* ---- the command ------------------------------------------------------------- */

/* State of a v1 body under the learned state rule, to pair ids seen more
 * than once; NULL when it cannot tell. */
static const char *predict_state(const struct learn *L, yajl_val v1, const struct zones *Z)
{
	int t = 5; /* state */
	const struct field_rule *r = &L->rule[t];
	const char *x;
	static char buf[256];

	if (!r->kind)
		return NULL;
	if (r->kind == 3)
		return r->value;
	x = learn_scalar_text(learn_obj_get(v1, L->keys.names[r->key]));
	if (!x)
		return r->def;
	if (r->kind == 2) {
		const struct tally_cell *c = learn_tally_top(&r->map, x, NULL);

		return c ? c->to : x;
	}
	if (strlen(x) >= sizeof(buf))
		return NULL;
	snprintf(buf, sizeof(buf), "%s", x);
	if (r->conv == CONV_UPPER)
		learn_ascii_upper(buf);
	if (r->conv == CONV_LOWER)
		for (char *q = buf; *q; q++)
			if (*q >= 'A' && *q <= 'Z')
				*q = (char)(*q - 'A' + 'a');
	(void)Z;
	return buf;
}

static void learn_reset(struct learn *L)
{
	for (int t = 0; t < N_TARGETS; t++) {
		learn_tally_free(&L->rule[t].map);
		memset(&L->rule[t], 0, sizeof(L->rule[t]));
	}
	for (size_t v = 0; v < L->vars.n; v++) {
		struct var *V = &L->var[v];

		learn_tally_free(&V->id);
		learn_tally_free(&V->label);
		learn_tally_free(&V->type);
		learn_tally_free(&V->description);
		learn_tally_free(&V->categories);
		learn_tally_free(&V->max_score);
		learn_tally_free(&V->choices);
		learn_tally_free(&V->optmap);
		free(V->agree);
		free(V->score_agree);
		free(V->max_agree);
		free(V->rscore_agree);
		free(V->correct_agree);
		memset(&V->seen, 0, sizeof(*V) - offsetof(struct var, seen));
		V->first_order = (long)v;
	}
	free(L->key_used);
	free(L->key_seen);
	L->key_used = L->key_seen = NULL;
}

/* Learn every rule from the pairs of L (all of them, or one stage's). */
static void learn_all(struct learn *L, struct zones *Z)
{
	learn_reset(L);
	learn_keys_count(L);
	learn_fields(L, Z);
	learn_variables(L);
}

int cmd_learn(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "v1", required_argument, NULL, '1' },
		{ "v2", required_argument, NULL, '2' },
		{ "base", required_argument, NULL, 'b' },
		{ "min-support", required_argument, NULL, 'm' },
		{ "output", required_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct learn *L = learn_xcalloc(1, sizeof(*L));
	struct docset v1 = { 0 }, v2 = { 0 };
	struct v2_index ix = { 0 };
	struct zones Z = { 0 };
	const char *base = NULL, *out = NULL;
	char **v1p = learn_xcalloc((size_t)argc + 1, sizeof(char *));
	char **v2p = learn_xcalloc((size_t)argc + 1, sizeof(char *));
	size_t n1 = 0, n2 = 0;
	int side = 0, c, rc = 2;
	long long num;
	long *match = NULL;
	struct buf text = { 0 }, errs = { 0 };
	struct report rp = { { 0 }, { 0 }, { 0 }, 0 };
	struct check ck = { 0 };
	char tmp[PATH_MAX] = "";
	const char *rules_path;
	unsigned char *ok = NULL;

	L->min_support = 3;
	for (int t = 0; t < N_FIXED; t++)
		L->target_names[t] = (char *)fixed_targets[t];
	for (int n = 0; n < N_THEMES; n++) {
		L->target_names[N_FIXED + 2 * n] = learn_arena_printf(
			&L->a, "campaign.themes[%d].code", n);
		L->target_names[N_FIXED + 2 * n + 1] = learn_arena_printf(
			&L->a, "campaign.themes[%d].description", n);
	}
	optind = 1;
	while ((c = cli_getopt("learn", argc, argv, "-o:h", opts)) != -1) {
		switch (c) {
		case '1':
			side = 1;
			v1p[n1++] = optarg;
			break;
		case '2':
			side = 2;
			v2p[n2++] = optarg;
			break;
		case 1:
			if (side == 1)
				v1p[n1++] = optarg;
			else if (side == 2)
				v2p[n2++] = optarg;
			else {
				rc = cli_usage("learn", "'%s': say --v1 or --v2 first", optarg);
				goto out;
			}
			break;
		case 'b': base = optarg; break;
		case 'm':
			if (cli_int_parse(optarg, 1, 1000000, &num) < 0) {
				rc = cli_usage("learn",
					       "--min-support must be 1..1000000, not '%s'",
					       optarg);
				goto out;
			}
			L->min_support = (long)num;
			break;
		case 'o': out = optarg; break;
		case 'h':
			fputs(usage_learn, stdout);
			rc = 0;
			goto out;
		default: rc = 2; goto out;
		}
	}
	if (!n1 || !n2) {
		rc = cli_usage("learn", "needs --v1 FILE... and --v2 FILE...");
		goto out;
	}
	for (size_t i = 0; i < n1; i++)
		if (learn_docset_add_path(&v1, &L->a, v1p[i], 0) < 0)
			goto out;
	for (size_t i = 0; i < n2; i++)
		if (learn_docset_add_path(&v2, &L->a, v2p[i], 0) < 0)
			goto out;
	if (v1.problems.len)
		fprintf(stderr, "%s", v1.problems.s);
	if (v2.problems.len)
		fprintf(stderr, "%s", v2.problems.s);

	learn_pairs_build(L, &v1, &v2, &ix, &match);
	L->pairs = learn_xcalloc(v1.n + 1, sizeof(*L->pairs));
	for (size_t i = 0; i < v1.n; i++)
		if (match[i] >= 0 && !ix.taken[match[i]]) {
			ix.taken[match[i]] = 1;
			learn_pair_add(L, &v1.docs[i], &v2.docs[match[i]]);
		}
	learn_pairs_index_keys(L);
	learn_keys_count(L);
	learn_fields(L, &Z);
	{
		/* Ids seen more than once: pair by the state the rule predicts,
		 * then learn again from every pair. */
		size_t added = 0;

		long *head = learn_xcalloc(ix.ids.n + 1, sizeof(long)),
		     *next = learn_xcalloc(v2.n + 1, sizeof(long));

		/* v2 bodies by id: head[id] -> next[j] -> ... (-1 ends). */
		for (size_t k = 0; k < ix.ids.n; k++)
			head[k] = -1;
		for (size_t j = v2.n; j-- > 0;) {
			const char *id2 = learn_scalar_text(
				learn_obj_get(learn_doc_body(&v2.docs[j]), "id"));
			char up[512];
			long k;

			next[j] = -1;
			if (!id2 || strlen(id2) >= sizeof(up))
				continue;
			snprintf(up, sizeof(up), "%s", id2);
			learn_ascii_upper(up);
			k = learn_intern_find(&ix.ids, up);
			if (k >= 0) {
				next[j] = head[k];
				head[k] = (long)j;
			}
		}
		for (size_t i = 0; i < v1.n; i++) {
			const char *st;
			int paired = 0;

			if (match[i] > -2)
				continue;
			st = predict_state(L, learn_doc_body(&v1.docs[i]), &Z);
			for (long j = head[-2 - match[i]]; st && j >= 0 && !paired; j = next[j]) {
				const char *s2 = learn_scalar_text(
					learn_obj_get(learn_doc_body(&v2.docs[j]), "state"));

				if (ix.taken[j] || !s2 || strcmp(s2, st) != 0)
					continue;
				ix.taken[j] = 1;
				learn_pair_add(L, &v1.docs[i], &v2.docs[j]);
				added++;
				paired = 1;
			}
			L->ambiguous += !paired;
		}
		free(head);
		free(next);
		if (added) {
			learn_reset(L);
			learn_pairs_index_keys(L);
			learn_keys_count(L);
			learn_fields(L, &Z);
		}
	}
	L->unpaired_v1 = v1.n - L->n_pairs;
	for (size_t j = 0; j < v2.n; j++)
		L->unpaired_v2 += !ix.taken[j];
	if (L->n_pairs == 0) {
		fprintf(stderr,
			"webhook-bridge learn: no pairs: no v1 body carries the id of a v2 body "
			"(%zu v1, %zu v2 read)\n",
			v1.n, v2.n);
		goto out;
	}
	learn_variables(L);
	learn_render(L, &text, &rp);

	if (out) {
		rules_path = out;
	} else {
		if (temp_file(tmp, sizeof(tmp), "") < 0) {
			fprintf(stderr, "webhook-bridge learn: temporary file: %s\n",
				strerror(errno));
			goto out;
		}
		rules_path = tmp;
	}
	ok = learn_xcalloc(L->n_pairs + 1, 1);
	if (write_text(rules_path, &text) < 0)
		goto out;
	if (self_check(L, rules_path, &ck, &errs, ok) < 0) {
		fprintf(stderr, "webhook-bridge learn: the learned file does not load (a bug):\n%s",
			errs.s ? errs.s : "");
		goto out;
	}
	if (ck.exact < (long)L->n_pairs) {
		struct buf stages = { 0 };

		if (stages_find(L, &Z, ok, &stages) > 0) {
			/* The base rules from the other pairs, then the stages. */
			text.len = 0;
			report_clear(&rp);
			learn_tally_free(&ck.paths);
			memset(&ck, 0, sizeof(ck));
			learn_render(L, &text, &rp);
			learn_sb_add(&text, stages.s, stages.len);
			if (write_text(rules_path, &text) < 0 ||
			    self_check(L, rules_path, &ck, &errs, NULL) < 0) {
				fprintf(stderr,
					"webhook-bridge learn: the learned stages do not load "
					"(a bug):\n%s",
					errs.s ? errs.s : "");
				free(stages.s);
				goto out;
			}
		}
		free(stages.s);
	}
	{
		struct buf r = { 0 };

		sb_printf(&r,
			  "\n# ---- report ----\n# pairs: %zu (v1 without a v2: %zu, v2 without a "
			  "v1: "
			  "%zu, ids seen more than once and not told apart: %zu, unreadable lines: "
			  "%zu)\n",
			  L->n_pairs, L->unpaired_v1, L->unpaired_v2, L->ambiguous,
			  v1.invalid + v2.invalid);
		sb_printf(&r, "# reproduced exactly by these rules: %ld/%zu pairs (%.2f %%)",
			  ck.exact, L->n_pairs, 100.0 * (double)ck.exact / (double)L->n_pairs);
		if (ck.failed)
			sb_printf(&r, "; %ld not mapped, e.g. %s: %s", ck.failed, ck.fail_example,
				  ck.fail_msg);
		learn_sb_puts(&r, "\n");
		if (ck.paths.n) {
			qsort(ck.paths.cells, ck.paths.n, sizeof(*ck.paths.cells), tally_count_cmp);
			learn_sb_puts(&r, "# residual differences (path: pairs):\n");
			for (size_t i = 0; i < ck.paths.n && i < 20; i++)
				sb_printf(&r, "#   %s: %ld (e.g. %s)\n", ck.paths.cells[i].to,
					  ck.paths.cells[i].count, ck.paths.cells[i].example);
		}
		sb_printf(&r, "# v2 paths no v1 key explains:%s\n%s",
			  rp.unexplained.len || L->extra_paths.n ? "" : " none",
			  rp.unexplained.s ? rp.unexplained.s : "");
		for (size_t i = 0; i < L->extra_paths.n && i < 20; i++)
			sb_printf(&r, "#   %s (in %ld pairs; outside the rule language)\n",
				  L->extra_paths.cells[i].to, L->extra_paths.cells[i].count);
		{
			int any = 0;

			for (size_t k = 0; k < L->keys.n; k++) {
				long var = learn_intern_find(&L->vars, L->keys.names[k]);

				if (L->key_used[k] || (var >= 0 && L->var[var].generic))
					continue;
				sb_printf(&r, "%s'%s'",
					  any ? ", " : "# v1 keys no v2 value uses (ignored): ",
					  L->keys.names[k]);
				any = 1;
			}
			sb_printf(&r, "%s\n", any ? "" : "# v1 keys no v2 value uses: none");
		}
		sb_printf(&r, "# conflicting evidence:%s\n%s", rp.n_conflicts ? "" : " none",
			  rp.conflicts.s ? rp.conflicts.s : "");
		sb_printf(&r, "# values seen only once:%s\n%s", rp.once.len ? "" : " none",
			  rp.once.s ? rp.once.s : "");
		learn_sb_add(&text, r.s, r.len);
		{
			FILE *f = fopen(rules_path, "a");

			if (f) {
				fwrite(r.s, 1, r.len, f);
				fclose(f);
			}
		}
		if (!out)
			fwrite(text.s, 1, text.len, stdout);
		fprintf(stderr,
			"learn: %zu pairs, %ld reproduced exactly (%.2f %%), %ld conflict(s)%s%s\n",
			L->n_pairs, ck.exact, 100.0 * (double)ck.exact / (double)L->n_pairs,
			rp.n_conflicts, out ? "; rules in " : "", out ? out : "");
		free(r.s);
	}
	if (base) {
		struct check bk = { 0 };
		struct buf be = { 0 };

		if (self_check(L, base, &bk, &be, NULL) < 0) {
			fprintf(stderr, "%s", be.s ? be.s : "");
			free(be.s);
			learn_tally_free(&bk.paths);
			goto out;
		}
		base_diff(base, rules_path, &L->a, bk.exact, ck.exact, L->n_pairs);
		learn_tally_free(&bk.paths);
		free(be.s);
	}
	rc = ck.exact == (long)L->n_pairs ? 0 : 1;
out:
	if (tmp[0])
		unlink(tmp);
	learn_reset(L);
	free(L->var);
	free(L->pairs);
	learn_intern_free(&L->keys);
	learn_intern_free(&L->vars);
	learn_intern_free(&ix.ids);
	free(ix.first);
	free(ix.count);
	free(ix.taken);
	free(match);
	learn_docset_free(&v1);
	learn_docset_free(&v2);
	learn_zones_free(&Z);
	learn_tally_free(&ck.paths);
	free(text.s);
	free(errs.s);
	report_clear(&rp);
	learn_tally_free(&L->extra_paths);
	free(ok);
	free(v1p);
	free(v2p);
	learn_arena_free(&L->a);
	free(L);
	return rc;
}
