/*
 * The diff command.
 *
 *   diff --mapping RULES V1.json         provenance: every v2 value, the rule
 *                                        (file:line) behind it, and the v1 keys
 *                                        no rule wrote
 *   diff A.json B.json                   structural diff of two v2 documents
 *   diff --mapping OLD --against NEW FIXTURES...
 *                                        what a rule change changes across a
 *                                        fixture set, grouped by path
 *
 * Text output is for people (colour only on a terminal, never with
 * NO_COLOR); --json output is for tools.  Everything that came from an input
 * is printed with control bytes escaped, so a payload cannot drive the
 * terminal.  Every table grows to a fixed ceiling; past it the rest is
 * counted, not stored.
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <yajl/yajl_parse.h>
#include <yajl/yajl_tree.h>

#include "bridge/buf.h"
#include "bridge/json.h"
#include "cli.h"
#include "bridge/jsondiff.h"
#include "bridge/mapping.h"
#include "bridge/translate.h"
#include "bridge/v1.h"
#include "cmd_out.h"


#define INPUT_MAX      (256u * 1024 * 1024) /* one input file */
#define DOC_MAX        (64u * 1024 * 1024)  /* one v2 document for A/B */
#define MAX_INPUTS     100000               /* fixture files */
#define MAX_GROUPS     10000                /* distinct paths kept */
#define MAX_LISTED     1000                 /* failures / keys listed one by one */
#define MAX_EXAMPLES   3
#define SAMPLE_MAX     4096 /* a sample value kept for a path */
#define TEXT_VALUE_MAX 160  /* value width in text output */

static const char usage_diff[] =
	"usage: webhook-bridge diff --mapping RULES [--form] V1.json [--json]\n"
	"       webhook-bridge diff A.json B.json [--ignore PATH]... [--json]\n"
	"       webhook-bridge diff --mapping OLD --against NEW FIXTURES... [--ignore PATH]... "
	"[--json]\n"
	"\n"
	"--mapping RULES V1.json: the provenance view. Maps the v1 payload and prints\n"
	"  every v2 value with the rule (file:line) that produced it, then the v1 keys\n"
	"  no rule wrote (unmapped, or named but dropped). --form: the payload is\n"
	"  form-urlencoded.\n"
	"A.json B.json: structural diff of two v2 documents. Paths look like\n"
	"  campaign.channel.website.id, campaign.themes[0].code; form, optins and\n"
	"  questionnaire entries are matched by variable (form[email].responses[0].value),\n"
	"  so reordering them is no difference. Numbers compare by their text.\n"
	"--against NEW FIXTURES...: maps every v1 payload under OLD and NEW and groups\n"
	"  the differences by path, with counts, the rule behind each and up to 3\n"
	"  participation ids; lists payloads that map under one and fail under the\n"
	"  other. FIXTURES: files, folders (*.json, *.ndjson, *.jsonl) or NDJSON files\n"
	"  (one v1 payload per line).\n"
	"\n"
	"  --ignore PATH   leave PATH (and what is beneath it) out; '*' matches one\n"
	"                  member, '[*]' one element, '**' any number of segments:\n"
	"                  --ignore 'form[*].id' --ignore 'campaign.channel.**'\n"
	"  --json          one JSON object on stdout instead of text\n"
	"  --color WHEN    auto (default: on a terminal, unless NO_COLOR is set or\n"
	"                  TERM=dumb), always, never; --no-color = --color never\n"
	"exit: provenance 0 mapped, 1 cannot be mapped; A/B and --against 0 no\n"
	"      difference, 1 differences; 2 usage, configuration or input errors\n";


/* ------------------------------------------------------------------------ */
/* Input */


/* Read a whole file ("-": stdin) of at most max bytes, NUL-terminated. */
static int read_input(const char *path, size_t max, char **ret, size_t *ret_len)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
	struct buf b = BUF_INIT(max);
	int rc;

	*ret = NULL;
	*ret_len = 0;
	if (!f) {
		fprintf(stderr, "webhook-bridge: %s: %s\n", out_display_name(path),
			strerror(errno));
		return -1;
	}
	rc = buf_read_file(&b, f);
	if (f != stdin)
		fclose(f);
	if (rc == 0 && !(*ret = buf_take(&b, ret_len)))
		rc = -ENOMEM;
	if (rc == -EIO)
		fprintf(stderr, "webhook-bridge: %s: read error\n", out_display_name(path));
	else if (rc == -EFBIG)
		fprintf(stderr, "webhook-bridge: %s: larger than %zu MiB\n", out_display_name(path),
			max >> 20);
	else if (rc < 0)
		fprintf(stderr, "webhook-bridge: %s: out of memory\n", out_display_name(path));
	buf_free(&b);
	return rc < 0 ? -1 : 0;
}

static struct mapping *load_mapping(const char *path)
{
	struct mapping *m = NULL;
	struct diag d = { 0 };

	if (mapping_load(path, &m, &d) < 0) {
		fputs(d.text ? d.text : "", stderr);
		fprintf(stderr, "webhook-bridge diff: %s: %d error(s)\n", path, d.count);
		diag_reset(&d);
		return NULL;
	}
	return m;
}

static int parse_v1(const char *text, size_t len, int form, struct v1_doc **ret,
		    struct bridge_error *err)
{
	struct v1_limits lim;

	translate_limits(NULL, &lim);
	return translate_parse(form ? V1_ENC_FORM : V1_ENC_JSON, text, len, &lim, ret, err);
}

/* "message (rule file:line)" into buf. */
static void error_text(const struct bridge_error *err, char *buf, size_t cap)
{
	if (err->file)
		snprintf(buf, cap, "%s (rule %s:%d)", err->message, err->file, err->line);
	else
		snprintf(buf, cap, "%s", err->message);
}

/* ------------------------------------------------------------------------ */
/* diff --mapping RULES V1.json: provenance */

static const char *match_name(enum jsondiff_trace_match m)
{
	switch (m) {
	case JSONDIFF_TRACE_EXACT: return "exact";
	case JSONDIFF_TRACE_INSIDE: return "inside";
	case JSONDIFF_TRACE_ENTRY: return "entry";
	case JSONDIFF_TRACE_NONE: break;
	}
	return "none";
}

/* What the provenance view says about a value. */
static const char *field_what(const struct mapping_trace *t, enum jsondiff_trace_match m)
{
	if (!t)
		return "v2 structure";
	if (m != JSONDIFF_TRACE_ENTRY)
		return t->what;
	return t->what && strncmp(t->what, "unmapped:", 9) == 0
		       ? "attribute of the entry for an unmapped key"
		       : "attribute of the variable rule";
}

struct prov_field {
	const struct jsondiff_entry *e;
	const struct mapping_trace *t;
	enum jsondiff_trace_match m;
	char rule[300];
};

enum key_fate { KEY_WRITTEN, KEY_UNMAPPED, KEY_DROPPED };

struct prov_key {
	const struct v1_field *f;
	enum key_fate fate;
	const struct mapping_trace *t; /* unmapped:form: the policy's record */
	const char *reason;
};

static const char *dropped_reason(const struct v1_value *v)
{
	if (v->type == V1_NULL)
		return "null: named by the rules, nothing written";
	if (v->type == V1_STRING && v->len == 0)
		return "empty: named by the rules, nothing written";
	return "named by the rules (ignore list, or a value the rule leaves out), nothing written";
}

static void classify_keys(const struct v1_doc *doc, const struct mapping_result *r,
			  struct prov_key *keys)
{
	for (size_t i = 0; i < doc->n_fields; i++) {
		const struct v1_field *f = &doc->fields[i];
		struct prov_key *k = &keys[i];
		bool unmapped = false;

		k->f = f;
		k->fate = KEY_WRITTEN;
		k->t = NULL;
		k->reason = NULL;
		for (size_t j = 0; j < r->n_unmapped && !unmapped; j++)
			unmapped = strcmp(r->unmapped[j], f->key) == 0;
		for (size_t j = 0; j < r->n_trace && !k->t; j++)
			if (r->trace[j].from_key && strcmp(r->trace[j].from_key, f->key) == 0)
				k->t = &r->trace[j];
		if (unmapped) {
			k->fate = KEY_UNMAPPED;
		} else if (!k->t) {
			k->fate = KEY_DROPPED;
			k->reason = dropped_reason(&f->value);
		}
	}
}

static void prov_text(const struct out_style *st, const char *input, const char *mapping_path,
		      const struct mapping_result *r, const struct prov_field *fields,
		      size_t n_fields, const struct prov_key *keys, size_t n_keys)
{
	FILE *f = st->out;
	size_t wp = 4, wv = 5, wr = 4, wk = 0, rules = 0, structure = 0, n_unmapped = 0,
	       n_dropped = 0;

	for (size_t i = 0; i < n_fields; i++) {
		size_t p = out_text_width(fields[i].e->path, 0),
		       v = out_text_width(fields[i].e->b, 40);

		wp = p > wp ? p : wp;
		wv = v > wv ? v : wv;
		if (fields[i].t) {
			size_t w = out_text_width(fields[i].rule, 0);

			wr = w > wr ? w : wr;
			rules++;
		} else {
			structure++;
		}
	}
	/* a narrow terminal: rules (cut at the front: the line number stays),
	 * then paths to 32, values to 10 and paths to 20 give way so that
	 * FROM: WHAT keeps 16 columns (out_style_finish cuts what still overflows) */
	if (st->columns) {
		size_t *w[] = { &wr, &wp, &wv, &wp };
		const size_t least[] = { 16, 32, 10, 20 };

		for (size_t i = 0; i < 4 && wp + wv + wr + 6 + 16 > st->columns; i++) {
			size_t over = wp + wv + wr + 6 + 16 - st->columns;

			*w[i] = *w[i] > least[i] + over ? *w[i] - over
				: *w[i] > least[i]      ? least[i]
							: *w[i];
		}
	}
	out_color(st, C_BOLD);
	out_print_str(f, input, 0);
	fputs(" -> v2 with ", f);
	out_print_str(f, mapping_path, 0);
	fprintf(f, " (unmapped = \"%s\")\n\n", out_policy_name(r->unmapped_policy));
	fputs("PATH", f);
	out_pad(f, 4, wp + 2);
	fputs("VALUE", f);
	out_pad(f, 5, wv + 2);
	fputs("RULE", f);
	out_pad(f, 4, wr + 2);
	fputs("FROM: WHAT\n", f);
	out_color(st, C_RESET);
	for (size_t i = 0; i < n_fields; i++) {
		const struct prov_field *p = &fields[i];
		const struct mapping_trace *t = p->t;

		out_cell(f, p->e->path, wp);
		out_color(st, C_GREEN);
		out_cell(f, p->e->b, wv);
		out_color(st, C_RESET);
		out_color(st, t ? C_CYAN : C_DIM);
		out_cell_tail(f, t ? p->rule : "-", wr);
		out_color(st, C_RESET);
		if (!t || p->m == JSONDIFF_TRACE_ENTRY) {
			out_color(st, C_DIM);
			fprintf(f, "(%s)", field_what(t, p->m));
			out_color(st, C_RESET);
		} else {
			if (t->from_key) {
				out_print_str(f, t->from_key, 0);
				fputs(": ", f);
			}
			out_print_str(f, t->what, 0);
		}
		fputc('\n', f);
	}
	for (size_t i = 0; i < n_keys; i++) {
		n_unmapped += keys[i].fate == KEY_UNMAPPED;
		n_dropped += keys[i].fate == KEY_DROPPED;
	}
	for (size_t i = 0; i < n_keys; i++) {
		size_t w = out_text_width(keys[i].f->key, 0);

		if (keys[i].fate != KEY_WRITTEN && w > wk)
			wk = w;
	}
	if (n_unmapped + n_dropped) {
		fputc('\n', f);
		out_color(st, C_BOLD);
		fputs("v1 keys not written by a rule:\n", f);
		out_color(st, C_RESET);
	}
	for (size_t i = 0; i < n_keys; i++) {
		const struct prov_key *k = &keys[i];

		if (k->fate == KEY_WRITTEN)
			continue;
		fputs("  ", f);
		out_color(st, C_YELLOW);
		out_pad(f, out_print_str(f, k->f->key, 0), wk);
		out_color(st, C_RESET);
		if (k->fate == KEY_DROPPED) {
			fputs("  dropped: ", f);
			fputs(k->reason, f);
		} else if (r->unmapped_policy == MAPPING_UNMAPPED_FORM) {
			fputs("  unmapped -> form[", f);
			out_print_str(f, k->f->key, 0);
			fputs("]", f);
			if (k->t) {
				fputs(" (unmapped = \"form\", ", f);
				out_print_str(f, k->t->file, 0);
				fprintf(f, ":%d)", k->t->line);
			}
		} else {
			fprintf(f, "  unmapped: dropped (unmapped = \"%s\")",
				out_policy_name(r->unmapped_policy));
		}
		fputc('\n', f);
	}
	fprintf(f,
		"\n%zu v2 values: %zu from rules, %zu v2 structure; %zu v1 keys unmapped, %zu "
		"dropped\n",
		n_fields, rules, structure, n_unmapped, n_dropped);
}

static void prov_json(FILE *f, const char *input, const char *mapping_path,
		      const struct mapping_result *r, const struct prov_field *fields,
		      size_t n_fields, const struct prov_key *keys, size_t n_keys)
{
	bool first = true;

	fputs("{\"input\":", f);
	out_json_cstr(f, input);
	out_json_member(f, "mapping", mapping_path);
	out_json_member(f, "participation_id", r->participation_id);
	out_json_member(f, "unmapped_policy", out_policy_name(r->unmapped_policy));
	fputs(",\"fields\":[", f);
	for (size_t i = 0; i < n_fields; i++) {
		const struct prov_field *p = &fields[i];
		const struct mapping_trace *t = p->t;

		fputs(i ? ",{\"path\":" : "{\"path\":", f);
		out_json_cstr(f, p->e->path);
		fputs(",\"value\":", f);
		fwrite(p->e->b, 1, p->e->b_len, f);
		out_json_member(f, "rule", t ? p->rule : NULL);
		out_json_member(f, "from", t && p->m != JSONDIFF_TRACE_ENTRY ? t->from_key : NULL);
		out_json_member(f, "what", field_what(t, p->m));
		out_json_member(f, "match", match_name(p->m));
		fputc('}', f);
	}
	fputs("],\"unmapped\":[", f);
	for (size_t i = 0; i < n_keys; i++) {
		char rule[300];

		if (keys[i].fate != KEY_UNMAPPED)
			continue;
		fputs(first ? "{\"key\":" : ",{\"key\":", f);
		first = false;
		out_json_cstr(f, keys[i].f->key);
		out_json_member(f, "policy", out_policy_name(r->unmapped_policy));
		if (keys[i].t)
			snprintf(rule, sizeof(rule), "%s:%d", keys[i].t->file, keys[i].t->line);
		out_json_member(f, "rule", keys[i].t ? rule : NULL);
		fputc('}', f);
	}
	fputs("],\"dropped\":[", f);
	first = true;
	for (size_t i = 0; i < n_keys; i++) {
		if (keys[i].fate != KEY_DROPPED)
			continue;
		fputs(first ? "{\"key\":" : ",{\"key\":", f);
		first = false;
		out_json_cstr(f, keys[i].f->key);
		out_json_member(f, "reason", keys[i].reason);
		fputc('}', f);
	}
	fputs("],\"v2\":", f);
	fwrite(r->body, 1, r->len, f);
	fputs("}\n", f);
}

static int diff_provenance(const char *mapping_path, const char *input, int form, int json,
			   const char *const *ignore, size_t n_ignore, const struct out_style *st)
{
	struct mapping *m = NULL;
	struct v1_doc *doc = NULL;
	struct mapping_result r = { 0 };
	struct jsondiff d = { 0 };
	struct jsondiff_options opt = { .leaves = 1,
					.ignore = ignore,
					.n_ignore = n_ignore,
					.name_b = "v2",
					.max_entries = 1000000 };
	struct bridge_error err;
	struct prov_field *fields = NULL;
	struct prov_key *keys = NULL;
	char *text = NULL, msg[1024];
	size_t len;
	int rc = 2;

	if (!(m = load_mapping(mapping_path)))
		return 2;
	if (read_input(input, INPUT_MAX, &text, &len) < 0)
		goto out;
	if (parse_v1(text, len, form, &doc, &err) < 0 ||
	    translate_map(m, NULL, doc, MAPPING_TRACE, &r, NULL, NULL, &err) < 0) {
		error_text(&err, msg, sizeof(msg));
		fprintf(stderr, "error: %s: ", out_display_name(input));
		out_print_str(stderr, msg, 0);
		fputc('\n', stderr);
		if (json) {
			fputs("{\"input\":", st->out);
			out_json_cstr(st->out, out_display_name(input));
			out_json_member(st->out, "mapping", mapping_path);
			fputs(",\"error\":{\"message\":", st->out);
			out_json_cstr(st->out, err.message);
			if (err.file) {
				snprintf(msg, sizeof(msg), "%s:%d", err.file, err.line);
				out_json_member(st->out, "rule", msg);
			}
			if (err.key[0])
				out_json_member(st->out, "key", err.key);
			if (err.offset >= 0)
				fprintf(st->out, ",\"offset\":%ld", err.offset);
			fputs("}}\n", st->out);
		}
		rc = 1;
		goto out;
	}
	/* Every leaf of the v2 document, in document order. */
	if (jsondiff_compare("{}", 2, r.body, r.len, &opt, &d, &err) < 0) {
		fprintf(stderr, "webhook-bridge diff: %s\n", err.message);
		goto out;
	}
	fields = calloc(d.n_entries ? d.n_entries : 1, sizeof(*fields));
	keys = calloc(doc->n_fields ? doc->n_fields : 1, sizeof(*keys));
	if (!fields || !keys) {
		fprintf(stderr, "webhook-bridge diff: out of memory\n");
		goto out;
	}
	for (size_t i = 0; i < d.n_entries; i++) {
		fields[i].e = &d.entries[i];
		fields[i].t = jsondiff_trace_find(r.trace, r.n_trace, d.entries[i].path,
						  &fields[i].m);
		if (fields[i].t)
			snprintf(fields[i].rule, sizeof(fields[i].rule), "%s:%d", fields[i].t->file,
				 fields[i].t->line);
	}
	classify_keys(doc, &r, keys);
	if (json)
		prov_json(st->out, out_display_name(input), mapping_path, &r, fields, d.n_entries,
			  keys, doc->n_fields);
	else
		prov_text(st, out_display_name(input), mapping_path, &r, fields, d.n_entries, keys,
			  doc->n_fields);
	rc = 0;
out:
	free(fields);
	free(keys);
	jsondiff_clear(&d);
	mapping_result_clear(&r);
	v1_doc_free(doc);
	free(text);
	mapping_free(m);
	return rc;
}

/* ------------------------------------------------------------------------ */
/* diff A.json B.json */

static void entry_text(const struct out_style *st, const struct jsondiff_entry *e)
{
	FILE *f = st->out;

	out_color(st, e->kind == JSONDIFF_ADDED     ? C_GREEN
		      : e->kind == JSONDIFF_REMOVED ? C_RED
						    : C_YELLOW);
	fputs(e->kind == JSONDIFF_ADDED ? "+ " : e->kind == JSONDIFF_REMOVED ? "- " : "~ ", f);
	out_print_str(f, *e->path ? e->path : "(root)", 0);
	out_color(st, C_RESET);
	fputs(": ", f);
	if (e->a)
		out_print_safe(f, e->a, e->a_len, TEXT_VALUE_MAX);
	if (e->a && e->b)
		fputs(" -> ", f);
	if (e->b)
		out_print_safe(f, e->b, e->b_len, TEXT_VALUE_MAX);
	if (e->rule) {
		out_color(st, C_CYAN);
		fputs("  [", f);
		out_print_str(f, e->rule, 0);
		fputc(']', f);
		out_color(st, C_RESET);
	}
	fputc('\n', f);
}

static int diff_documents(const char *pa, const char *pb, const char *const *ignore,
			  size_t n_ignore, int json, const struct out_style *st)
{
	struct jsondiff_options opt = { .ignore = ignore,
					.n_ignore = n_ignore,
					.name_a = out_display_name(pa),
					.name_b = out_display_name(pb),
					.max_input = DOC_MAX };
	struct jsondiff d;
	struct bridge_error err;
	struct evbuffer *buf = NULL;
	char *a = NULL, *b = NULL;
	size_t alen, blen, n;
	int rc = 2;

	if (strcmp(pa, "-") == 0 && strcmp(pb, "-") == 0)
		return cli_usage("diff", "%s", "only one of A and B can be stdin");
	if (read_input(pa, DOC_MAX, &a, &alen) < 0 || read_input(pb, DOC_MAX, &b, &blen) < 0)
		goto out;
	if (jsondiff_compare(a, alen, b, blen, &opt, &d, &err) < 0) {
		fputs("webhook-bridge diff: ", stderr);
		out_print_str(stderr, err.message, 0);
		fputc('\n', stderr);
		goto out;
	}
	n = d.n_added + d.n_removed + d.n_changed;
	if (json) {
		FILE *f = st->out;

		buf = evbuffer_new();
		if (!buf || jsondiff_render_json(&d, buf, &err) < 0) {
			fprintf(stderr, "webhook-bridge diff: out of memory\n");
			jsondiff_clear(&d);
			goto out;
		}
		fputs("{\"a\":", f);
		out_json_cstr(f, out_display_name(pa));
		out_json_member(f, "b", out_display_name(pb));
		fprintf(f,
			",\"equal\":%s,\"added\":%zu,\"removed\":%zu,\"changed\":%zu,\"truncated\":"
			"%s,"
			"\"differences\":",
			n ? "false" : "true", d.n_added, d.n_removed, d.n_changed,
			d.truncated ? "true" : "false");
		fwrite(evbuffer_pullup(buf, -1), 1, evbuffer_get_length(buf), f);
		fputs("}\n", f);
	} else {
		for (size_t i = 0; i < d.n_entries; i++)
			entry_text(st, &d.entries[i]);
		if (d.truncated)
			fprintf(st->out, "... %zu more not shown\n", n - d.n_entries);
		out_color(st, C_BOLD);
		out_print_str(st->out, out_display_name(pa), 0);
		fputs(" -> ", st->out);
		out_print_str(st->out, out_display_name(pb), 0);
		if (n)
			fprintf(st->out,
				": %zu difference%s (%zu added, %zu removed, %zu changed)\n", n,
				n == 1 ? "" : "s", d.n_added, d.n_removed, d.n_changed);
		else
			fputs(": no differences\n", st->out);
		out_color(st, C_RESET);
	}
	rc = n ? 1 : 0;
	jsondiff_clear(&d);
out:
	if (buf)
		evbuffer_free(buf);
	free(a);
	free(b);
	return rc;
}

/* ------------------------------------------------------------------------ */
/* diff --mapping OLD --against NEW FIXTURES... */

struct group {
	char *path;
	size_t payloads;
	size_t added, removed, changed;
	char *rule, *from, *what;
	char *sample_a,
		*sample_b; /* the first difference's values (JSON), NULL when absent/too big */
	char *examples[MAX_EXAMPLES];
	size_t n_examples;
};

struct group_table {
	struct group *v;
	size_t n, cap;
	size_t *slots; /* open addressing: index + 1, 0 = empty */
	size_t n_slots;
	struct group other; /* paths past MAX_GROUPS */
};


static const char *group_key_at(const void *v, size_t i)
{
	return ((const struct group_table *)v)->v[i].path;
}

/* The group of path (created when new); NULL on out of memory. */
static struct group *table_get(struct group_table *t, const char *path)
{
	long at = out_index_find(t->slots, t->n_slots, path, group_key_at, t);
	struct group *v;

	if (at >= 0)
		return &t->v[at];
	if (t->n >= MAX_GROUPS) {
		if (!t->other.path && !(t->other.path = strdup("(other paths)")))
			return NULL;
		return &t->other;
	}
	if (!(v = grow_array(t->v, &t->cap, t->n + 1, sizeof(*v), 32)))
		return NULL;
	t->v = v;
	memset(&t->v[t->n], 0, sizeof(t->v[t->n]));
	if (!(t->v[t->n].path = strdup(path)))
		return NULL;
	if (out_index_add(&t->slots, &t->n_slots, t->n, group_key_at, t) < 0) {
		free(t->v[t->n].path);
		t->v[t->n].path = NULL;
		return NULL;
	}
	return &t->v[t->n++];
}

static void group_free(struct group *g)
{
	free(g->path);
	free(g->rule);
	free(g->from);
	free(g->what);
	free(g->sample_a);
	free(g->sample_b);
	for (size_t i = 0; i < g->n_examples; i++)
		free(g->examples[i]);
}

static void table_free(struct group_table *t)
{
	for (size_t i = 0; i < t->n; i++)
		group_free(&t->v[i]);
	group_free(&t->other);
	free(t->v);
	free(t->slots);
	memset(t, 0, sizeof(*t));
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

static int group_add(struct group_table *t, const struct jsondiff_entry *e, const char *example)
{
	struct group *g = table_get(t, e->path);

	if (!g)
		return -1;
	g->payloads++;
	*(e->kind == JSONDIFF_ADDED     ? &g->added
	  : e->kind == JSONDIFF_REMOVED ? &g->removed
					: &g->changed) += 1;
	if (!g->rule && e->rule) {
		g->rule = strdup(e->rule);
		g->from = dup_or_null(e->from);
		g->what = dup_or_null(e->what);
	}
	if (g->payloads == 1) {
		g->sample_a = e->a && e->a_len <= SAMPLE_MAX ? strdup(e->a) : NULL;
		g->sample_b = e->b && e->b_len <= SAMPLE_MAX ? strdup(e->b) : NULL;
	}
	if (g->n_examples < MAX_EXAMPLES && (g->examples[g->n_examples] = strdup(example)))
		g->n_examples++;
	return 0;
}

enum fail_kind { FAIL_ONLY_OLD, FAIL_ONLY_NEW, FAIL_CHANGED };

struct failure {
	enum fail_kind kind; /* FAIL_ONLY_OLD: maps under OLD only (NEW fails) */
	char *input;
	char *participation_id;
	char *error;     /* the failing side's error (NEW's for FAIL_CHANGED) */
	char *error_old; /* FAIL_CHANGED: OLD's error */
};

struct against {
	struct mapping *old, *new;
	const char *old_path, *new_path;
	struct jsondiff_options opt;
	size_t inputs, payloads, both, identical, changed, only_old, only_new, fail_both,
		error_changed, invalid;
	struct group_table groups;
	struct failure *failures;
	size_t n_failures;
	bool oom;
};

static void failure_add(struct against *ag, enum fail_kind kind, const char *input, const char *pid,
			const char *error, const char *error_old)
{
	struct failure *f;

	if (ag->n_failures == MAX_LISTED)
		return;
	if (!ag->failures && !(ag->failures = calloc(MAX_LISTED, sizeof(*ag->failures)))) {
		ag->oom = true;
		return;
	}
	f = &ag->failures[ag->n_failures++];
	f->kind = kind;
	f->input = strdup(input);
	f->participation_id = dup_or_null(pid);
	f->error = strdup(error);
	f->error_old = dup_or_null(error_old);
	if (!f->input || !f->error || (pid && !f->participation_id) || (error_old && !f->error_old))
		ag->oom = true;
}

/* Map one payload under both rule sets and account for the outcome. */
static void against_one(struct against *ag, const char *text, size_t len, const char *label)
{
	struct v1_doc *doc = NULL;
	struct mapping_result ro = { 0 }, rn = { 0 };
	struct bridge_error eo, en;
	char mo[1024], mn[1024];
	int ok_old, ok_new;

	ag->payloads++;
	if (parse_v1(text, len, 0, &doc, &eo) < 0) {
		ag->invalid++;
		ag->fail_both++;
		return;
	}
	ok_old = translate_map(ag->old, NULL, doc, MAPPING_TRACE, &ro, NULL, NULL, &eo) == 0;
	ok_new = translate_map(ag->new, NULL, doc, MAPPING_TRACE, &rn, NULL, NULL, &en) == 0;
	if (!ok_old)
		error_text(&eo, mo, sizeof(mo));
	if (!ok_new)
		error_text(&en, mn, sizeof(mn));
	if (!ok_old && !ok_new) {
		/* The same refusal under both is no change; another one is. */
		if (strcmp(eo.message, en.message) == 0 && !!eo.file == !!en.file &&
		    eo.line == en.line) {
			ag->fail_both++;
		} else {
			ag->error_changed++;
			failure_add(ag, FAIL_CHANGED, label, NULL, mn, mo);
		}
	} else if (!ok_new) {
		ag->only_old++;
		failure_add(ag, FAIL_ONLY_OLD, label, ro.participation_id, mn, NULL);
	} else if (!ok_old) {
		ag->only_new++;
		failure_add(ag, FAIL_ONLY_NEW, label, rn.participation_id, mo, NULL);
	} else {
		struct jsondiff d;
		struct bridge_error err;
		const char *example = rn.participation_id   ? rn.participation_id
				      : ro.participation_id ? ro.participation_id
							    : label;

		ag->both++;
		if (jsondiff_compare(ro.body, ro.len, rn.body, rn.len, &ag->opt, &d, &err) < 0 ||
		    jsondiff_attribute(&d, ro.trace, ro.n_trace, rn.trace, rn.n_trace, &err) < 0) {
			fprintf(stderr, "webhook-bridge diff: %s: %s\n", label, err.message);
			ag->oom = true;
		} else if (d.n_added + d.n_removed + d.n_changed == 0) {
			ag->identical++;
		} else {
			ag->changed++;
			for (size_t i = 0; i < d.n_entries; i++)
				if (group_add(&ag->groups, &d.entries[i], example) < 0)
					ag->oom = true;
		}
		jsondiff_clear(&d);
	}
	mapping_result_clear(&ro);
	mapping_result_clear(&rn);
	v1_doc_free(doc);
}

static bool has_suffix(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);

	return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* One JSON value, complete, in exactly these bytes? */
static bool is_complete_json(const char *s, size_t len)
{
	yajl_handle h = yajl_alloc(NULL, NULL, NULL);
	bool ok;

	if (!h)
		return false;
	ok = yajl_parse(h, (const unsigned char *)s, len) == yajl_status_ok &&
	     yajl_complete_parse(h) == yajl_status_ok;
	yajl_free(h);
	return ok;
}

/* NDJSON: by extension, or when the first non-blank line is a complete JSON
 * value and more follows (a pretty-printed object's first line is "{"). */
static bool looks_ndjson(const char *path, const char *text, size_t len)
{
	const char *p = text, *end = text + len, *nl;

	if (has_suffix(path, ".ndjson") || has_suffix(path, ".jsonl"))
		return true;
	while (p < end && strchr(" \t\r\n", *p))
		p++;
	nl = memchr(p, '\n', (size_t)(end - p));
	if (!nl || !is_complete_json(p, (size_t)(nl - p)))
		return false;
	for (p = nl; p < end; p++)
		if (!strchr(" \t\r\n", *p))
			return true;
	return false;
}

static int against_file(struct against *ag, const char *path)
{
	char *text, *label;
	size_t len;

	if (read_input(path, INPUT_MAX, &text, &len) < 0)
		return -1;
	ag->inputs++;
	if (!looks_ndjson(path, text, len)) {
		against_one(ag, text, len, out_display_name(path));
	} else {
		const char *p = text, *end = text + len;
		long line_no = 0;
		size_t llen = strlen(out_display_name(path)) + 24;

		label = malloc(llen);
		if (!label) {
			free(text);
			fprintf(stderr, "webhook-bridge diff: out of memory\n");
			return -1;
		}
		while (p < end) {
			const char *nl = memchr(p, '\n', (size_t)(end - p));
			size_t n = nl ? (size_t)(nl - p) : (size_t)(end - p);
			size_t k = 0;

			line_no++;
			if (n && p[n - 1] == '\r')
				n--;
			while (k < n && strchr(" \t", p[k]))
				k++;
			if (k < n) {
				snprintf(label, llen, "%s:%ld", out_display_name(path), line_no);
				against_one(ag, p, n, label);
			}
			p = nl ? nl + 1 : end;
		}
		free(label);
	}
	free(text);
	return 0;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Expand FIXTURES into a sorted list of files per folder; -1 on error. */
static int collect_inputs(char **args, int n_args, char ***ret, size_t *ret_n)
{
	char **list = NULL, **t;
	size_t n = 0, cap = 0;

	for (int i = 0; i < n_args; i++) {
		struct stat sb;
		size_t first = n;
		DIR *dir;
		struct dirent *de;

		if (strcmp(args[i], "-") != 0 && stat(args[i], &sb) < 0) {
			fprintf(stderr, "webhook-bridge diff: %s: %s\n", args[i], strerror(errno));
			goto fail;
		}
		if (strcmp(args[i], "-") == 0 || !S_ISDIR(sb.st_mode)) {
			if (!(t = grow_array(list, &cap, n + 1, sizeof(*t), 64)))
				goto oom;
			list = t;
			if (!(list[n++] = strdup(args[i])))
				goto oom;
			continue;
		}
		if (!(dir = opendir(args[i]))) {
			fprintf(stderr, "webhook-bridge diff: %s: %s\n", args[i], strerror(errno));
			goto fail;
		}
		while ((de = readdir(dir))) {
			if (de->d_name[0] == '.' || !(has_suffix(de->d_name, ".json") ||
						      has_suffix(de->d_name, ".ndjson") ||
						      has_suffix(de->d_name, ".jsonl")))
				continue;
			if (n >= MAX_INPUTS) {
				closedir(dir);
				fprintf(stderr, "webhook-bridge diff: more than %d fixture files\n",
					MAX_INPUTS);
				goto fail;
			}
			if (!(t = grow_array(list, &cap, n + 1, sizeof(*t), 64))) {
				closedir(dir);
				goto oom;
			}
			list = t;
			if (asprintf(&list[n], "%s%s%s", args[i],
				     has_suffix(args[i], "/") ? "" : "/", de->d_name) < 0) {
				closedir(dir);
				goto oom;
			}
			n++;
		}
		closedir(dir);
		if (n > first)
			qsort(list + first, n - first, sizeof(*list), cmp_str);
	}
	*ret = list;
	*ret_n = n;
	return 0;
oom:
	fprintf(stderr, "webhook-bridge diff: out of memory\n");
fail:
	for (size_t i = 0; i < n; i++)
		free(list[i]);
	free(list);
	return -1;
}

static int group_cmp(const void *x, const void *y)
{
	const struct group *a = *(struct group *const *)x, *b = *(struct group *const *)y;

	if (a->payloads != b->payloads)
		return a->payloads > b->payloads ? -1 : 1;
	return strcmp(a->path, b->path);
}

static void group_kinds_text(FILE *f, const struct group *g)
{
	const char *sep = "";

	if (g->changed) {
		fprintf(f, "%s%zu changed", sep, g->changed);
		sep = ", ";
	}
	if (g->added) {
		fprintf(f, "%s%zu added", sep, g->added);
		sep = ", ";
	}
	if (g->removed)
		fprintf(f, "%s%zu removed", sep, g->removed);
}

static void against_text(const struct out_style *st, const struct against *ag,
			 struct group **sorted, size_t n)
{
	FILE *f = st->out;
	static const char *const titles[] = {
		"map under OLD only (NEW fails):",
		"map under NEW only (OLD fails):",
		"fail under both, with another error:",
	};

	out_color(st, C_BOLD);
	fputs("OLD ", f);
	out_print_str(f, ag->old_path, 0);
	fputs("\nNEW ", f);
	out_print_str(f, ag->new_path, 0);
	out_color(st, C_RESET);
	fprintf(f, "\n%zu payload%s from %zu input%s\n", ag->payloads, ag->payloads == 1 ? "" : "s",
		ag->inputs, ag->inputs == 1 ? "" : "s");
	fprintf(f, "  map under both     %6zu  (%zu identical, %zu changed)\n", ag->both,
		ag->identical, ag->changed);
	fprintf(f, "  map under OLD only %6zu  (NEW fails)\n", ag->only_old);
	fprintf(f, "  map under NEW only %6zu  (OLD fails)\n", ag->only_new);
	fprintf(f,
		"  fail under both    %6zu  (%zu invalid v1, %zu with another error under NEW)\n",
		ag->fail_both + ag->error_changed, ag->invalid, ag->error_changed);
	if (n) {
		fputc('\n', f);
		out_color(st, C_BOLD);
		fputs("changed paths (payloads affected):\n", f);
		out_color(st, C_RESET);
	}
	for (size_t i = 0; i < n; i++) {
		const struct group *g = sorted[i];

		fprintf(f, "  %5zu  ", g->payloads);
		out_color(st, C_YELLOW);
		out_print_str(f, g->path, 0);
		out_color(st, C_RESET);
		fputs("  (", f);
		group_kinds_text(f, g);
		fputc(')', f);
		if (g->rule) {
			out_color(st, C_CYAN);
			fputs("  ", f);
			out_print_str(f, g->rule, 0);
			out_color(st, C_RESET);
			fputc(' ', f);
			if (g->from) {
				out_print_str(f, g->from, 0);
				fputs(": ", f);
			}
			out_print_str(f, g->what, 0);
		}
		fputs("\n         ", f);
		if (g->sample_a)
			out_print_str(f, g->sample_a, TEXT_VALUE_MAX / 2);
		else
			fputs("(absent)", f);
		fputs(" -> ", f);
		if (g->sample_b)
			out_print_str(f, g->sample_b, TEXT_VALUE_MAX / 2);
		else
			fputs("(absent)", f);
		out_color(st, C_DIM);
		fputs("   e.g. ", f);
		for (size_t k = 0; k < g->n_examples; k++) {
			if (k)
				fputs(", ", f);
			out_print_str(f, g->examples[k], 0);
		}
		out_color(st, C_RESET);
		fputc('\n', f);
	}
	for (int kind = FAIL_ONLY_OLD; kind <= FAIL_CHANGED; kind++) {
		bool title = false;

		for (size_t i = 0; i < ag->n_failures; i++) {
			const struct failure *fl = &ag->failures[i];

			if ((int)fl->kind != kind)
				continue;
			if (!title) {
				fputc('\n', f);
				out_color(st, C_BOLD);
				fputs(titles[kind], f);
				out_color(st, C_RESET);
				fputc('\n', f);
				title = true;
			}
			fputs("  ", f);
			out_print_str(f, fl->input, 0);
			if (fl->participation_id) {
				fputs(" (", f);
				out_print_str(f, fl->participation_id, 0);
				fputc(')', f);
			}
			fputs(": ", f);
			out_color(st, C_RED);
			if (fl->error_old) {
				fputs("OLD: ", f);
				out_print_str(f, fl->error_old, 0);
				fputs("; NEW: ", f);
			}
			out_print_str(f, fl->error, 0);
			out_color(st, C_RESET);
			fputc('\n', f);
		}
	}
	if (ag->only_old + ag->only_new + ag->error_changed > ag->n_failures)
		fprintf(f, "  ... %zu more not listed\n",
			ag->only_old + ag->only_new + ag->error_changed - ag->n_failures);
	if (!n && !ag->only_old && !ag->only_new && !ag->error_changed)
		fputs("\nno change\n", f);
}

static void against_json(FILE *f, const struct against *ag, struct group **sorted, size_t n)
{
	static const char *const kinds[] = { "only_old", "only_new", "error_changed" };

	fputs("{\"old\":", f);
	out_json_cstr(f, ag->old_path);
	out_json_member(f, "new", ag->new_path);
	fprintf(f,
		",\"inputs\":%zu,\"payloads\":%zu,\"both\":%zu,\"identical\":%zu,\"changed\":%zu,"
		"\"only_old\":%zu,\"only_new\":%zu,\"fail_both\":%zu,\"error_changed\":%zu,"
		"\"invalid\":%zu,"
		"\"paths\":[",
		ag->inputs, ag->payloads, ag->both, ag->identical, ag->changed, ag->only_old,
		ag->only_new, ag->fail_both, ag->error_changed, ag->invalid);
	for (size_t i = 0; i < n; i++) {
		const struct group *g = sorted[i];

		fputs(i ? ",{\"path\":" : "{\"path\":", f);
		out_json_cstr(f, g->path);
		fprintf(f, ",\"payloads\":%zu,\"added\":%zu,\"removed\":%zu,\"changed\":%zu",
			g->payloads, g->added, g->removed, g->changed);
		out_json_member(f, "rule", g->rule);
		out_json_member(f, "from", g->from);
		out_json_member(f, "what", g->what);
		if (g->sample_a)
			fprintf(f, ",\"a\":%s", g->sample_a);
		if (g->sample_b)
			fprintf(f, ",\"b\":%s", g->sample_b);
		fputs(",\"examples\":[", f);
		for (size_t k = 0; k < g->n_examples; k++) {
			if (k)
				fputc(',', f);
			out_json_cstr(f, g->examples[k]);
		}
		fputs("]}", f);
	}
	fputs("],\"failures\":[", f);
	for (size_t i = 0; i < ag->n_failures; i++) {
		const struct failure *fl = &ag->failures[i];

		fputs(i ? ",{\"kind\":" : "{\"kind\":", f);
		out_json_cstr(f, kinds[fl->kind]);
		out_json_member(f, "input", fl->input);
		out_json_member(f, "participation_id", fl->participation_id);
		out_json_member(f, "error", fl->error);
		if (fl->error_old)
			out_json_member(f, "error_old", fl->error_old);
		fputc('}', f);
	}
	fprintf(f, "],\"failures_truncated\":%s}\n",
		ag->only_old + ag->only_new + ag->error_changed > ag->n_failures ? "true"
										 : "false");
}

static int diff_against(const char *old_path, const char *new_path, char **fixtures, int n_fixtures,
			const char *const *ignore, size_t n_ignore, int json,
			const struct out_style *st)
{
	struct against ag;
	char **inputs = NULL;
	size_t n_inputs = 0, n_sorted;
	struct group **sorted = NULL;
	int rc = 2;

	memset(&ag, 0, sizeof(ag));
	ag.old_path = old_path;
	ag.new_path = new_path;
	ag.opt.leaves = 1;
	ag.opt.ignore = ignore;
	ag.opt.n_ignore = n_ignore;
	ag.opt.name_a = "OLD output";
	ag.opt.name_b = "NEW output";
	ag.opt.max_input = INPUT_MAX;
	ag.opt.max_entries = 100000;
	ag.old = load_mapping(old_path);
	ag.new = ag.old ? load_mapping(new_path) : NULL;
	if (!ag.new)
		goto out;
	if (collect_inputs(fixtures, n_fixtures, &inputs, &n_inputs) < 0)
		goto out;
	for (size_t i = 0; i < n_inputs; i++)
		if (against_file(&ag, inputs[i]) < 0)
			goto out;
	if (ag.oom) {
		fprintf(stderr, "webhook-bridge diff: out of memory\n");
		goto out;
	}
	if (!ag.payloads) {
		/* An empty or mistyped fixture set must not pass as "no change". */
		fprintf(stderr, "webhook-bridge diff: no v1 payload in the FIXTURES given\n");
		goto out;
	}
	n_sorted = ag.groups.n + (ag.groups.other.path ? 1 : 0);
	sorted = calloc(n_sorted ? n_sorted : 1, sizeof(*sorted));
	if (!sorted) {
		fprintf(stderr, "webhook-bridge diff: out of memory\n");
		goto out;
	}
	for (size_t i = 0; i < ag.groups.n; i++)
		sorted[i] = &ag.groups.v[i];
	qsort(sorted, ag.groups.n, sizeof(*sorted), group_cmp);
	if (ag.groups.other.path)
		sorted[ag.groups.n] = &ag.groups.other;
	if (json)
		against_json(st->out, &ag, sorted, n_sorted);
	else
		against_text(st, &ag, sorted, n_sorted);
	rc = ag.changed || ag.only_old || ag.only_new || ag.error_changed ? 1 : 0;
out:
	free(sorted);
	for (size_t i = 0; i < n_inputs; i++)
		free(inputs[i]);
	free(inputs);
	for (size_t i = 0; i < ag.n_failures; i++) {
		free(ag.failures[i].input);
		free(ag.failures[i].participation_id);
		free(ag.failures[i].error);
		free(ag.failures[i].error_old);
	}
	free(ag.failures);
	table_free(&ag.groups);
	mapping_free(ag.old);
	mapping_free(ag.new);
	return rc;
}

/* ------------------------------------------------------------------------ */

int cmd_diff(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "mapping", required_argument, NULL, 'm' },
		{ "against", required_argument, NULL, 'a' },
		{ "ignore", required_argument, NULL, 'i' },
		OUT_OPTION_JSON,
		{ "form", no_argument, NULL, 'f' },
		OUT_OPTIONS_STYLE,
	};
	const char *mapping = NULL, *against = NULL, *when = NULL;
	const char **ignore = NULL;
	size_t n_ignore = 0;
	int json = 0, form = 0, c, rc;
	struct out_style st;
	static char outbuf[1 << 16];

	optind = 1;
	while ((c = cli_getopt("diff", argc, argv, "m:h", opts)) != -1) {
		switch (c) {
		case 'm': mapping = optarg; break;
		case 'a': against = optarg; break;
		case 'i':
			if (n_ignore == JSONDIFF_MAX_PATTERNS) {
				free(ignore);
				return cli_usage("diff", "more than %d --ignore patterns",
						 JSONDIFF_MAX_PATTERNS);
			}
			if (!ignore && !(ignore = calloc(JSONDIFF_MAX_PATTERNS, sizeof(*ignore)))) {
				fprintf(stderr, "webhook-bridge diff: out of memory\n");
				return 2;
			}
			ignore[n_ignore++] = optarg;
			break;
		case 'j': json = 1; break;
		case 'f': form = 1; break;
		case 'c': when = optarg; break;
		case 'C': when = "never"; break;
		case 'h':
			free(ignore);
			fputs(usage_diff, stdout);
			return 0;
		default: free(ignore); return 2;
		}
	}
	if ((rc = out_style_stdout(&st, "diff", when)) != 0) {
		free(ignore);
		return rc;
	}
	out_style_begin(&st, json, outbuf, sizeof(outbuf));
	if (against && !mapping)
		rc = cli_usage("diff", "%s", "--against NEW needs --mapping OLD");
	else if (form && (against || !mapping))
		rc = cli_usage("diff", "%s",
			       "--form applies to the provenance view (--mapping RULES V1)");
	else if (against)
		rc = optind < argc ? diff_against(mapping, against, argv + optind, argc - optind,
						  ignore, n_ignore, json, &st)
				   : cli_usage("diff", "%s",
					       "--against NEW needs FIXTURES (files or folders)");
	else if (mapping)
		rc = argc - optind == 1 ? diff_provenance(mapping, argv[optind], form, json, ignore,
							  n_ignore, &st)
					: cli_usage("diff", "%s",
						    "--mapping RULES takes exactly one V1 input");
	else
		rc = argc - optind == 2
			     ? diff_documents(argv[optind], argv[optind + 1], ignore, n_ignore,
					      json, &st)
			     : cli_usage("diff", "%s",
					 "give two v2 documents A B, or --mapping RULES V1, or "
					 "--mapping OLD --against NEW FIXTURES");
	out_style_finish(&st);
	fflush(stdout);
	free(ignore);
	return rc;
}
