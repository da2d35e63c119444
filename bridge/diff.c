/*
 * diff and report commands.
 *
 *   diff --mapping RULES V1.json         provenance: every v2 value, the rule
 *                                        (file:line) behind it, and the v1 keys
 *                                        no rule wrote
 *   diff A.json B.json                   structural diff of two v2 documents
 *   diff --mapping OLD --against NEW FIXTURES...
 *                                        what a rule change changes across a
 *                                        fixture set, grouped by path
 *   report FILE                          summary of a dry-run report
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
#include "bridge/cli.h"
#include "bridge/jsondiff.h"
#include "bridge/mapping.h"
#include "bridge/v1.h"

#define INPUT_MAX        (256u * 1024 * 1024) /* one input file */
#define DOC_MAX          (64u * 1024 * 1024)  /* one v2 document for A/B */
#define MAX_INPUTS       100000               /* fixture files */
#define MAX_GROUPS       10000                /* distinct paths kept */
#define MAX_LISTED       1000                 /* failures / keys listed one by one */
#define MAX_EXAMPLES     3
#define SAMPLE_MAX       4096 /* a sample value kept for a path */
#define REPORT_LINE_MAX  (16u * 1024 * 1024)
#define REPORT_DEPTH_MAX 64
#define REPORT_RULES     4   /* distinct rules remembered per path */
#define TEXT_VALUE_MAX   160 /* value width in text output */

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

static const char usage_report[] =
	"usage: webhook-bridge report FILE [--json] [--top N] [--color WHEN]\n"
	"\n"
	"Summarises a dry-run report (JSON lines written by serve in dry-run mode):\n"
	"participations seen, matched with a real v2 (identical / different),\n"
	"unmatched (expired on either side), the top N (default 10) differing paths\n"
	"with counts and the rule behind each, and the unmapped v1 keys.\n"
	"exit: 0 no participation differs, 1 some differ, 2 usage error, unreadable\n"
	"      file or malformed lines (reported on stderr; the summary still prints)\n";

/* ------------------------------------------------------------------------ */
/* Output helpers */

struct style {
	bool color;
	FILE *out;
	/* text on a terminal: its width (TIOCGWINSZ), and the text gathered in
	 * out (a memory stream) to be cut to it line by line; 0: as written */
	size_t columns;
	FILE *term;
	char *buf;
	size_t len;
};

enum color { C_RESET, C_BOLD, C_DIM, C_RED, C_GREEN, C_YELLOW, C_CYAN };

static const char *const color_codes[] = {
	"\033[0m", "\033[1m", "\033[2m", "\033[31m", "\033[32m", "\033[33m", "\033[36m",
};

static void color(const struct style *st, enum color c)
{
	if (st->color)
		fputs(color_codes[c], st->out);
}

static int style_init(struct style *st, const char *when, FILE *out)
{
	const char *no_color = getenv("NO_COLOR"), *term = getenv("TERM");

	memset(st, 0, sizeof(*st));
	st->out = out;
	if (!when || strcmp(when, "auto") == 0) /* a dumb terminal shows escapes as text */
		st->color = isatty(fileno(out)) && !(no_color && *no_color) &&
			    !(term && strcmp(term, "dumb") == 0);
	else if (strcmp(when, "always") == 0)
		st->color = true;
	else if (strcmp(when, "never") == 0)
		st->color = false;
	else
		return -1;
	return 0;
}

/* Text for a terminal is gathered, then each line cut to its width. */
static void style_fit_terminal(struct style *st)
{
	struct winsize ws;
	FILE *mem;

	if (!isatty(fileno(st->out)) || ioctl(fileno(st->out), TIOCGWINSZ, &ws) < 0 ||
	    ws.ws_col < 20)
		return;
	mem = open_memstream(&st->buf, &st->len);
	if (!mem)
		return; /* as written, then */
	st->columns = ws.ws_col;
	st->term = st->out;
	st->out = mem;
}

/* Columns a line takes: colour escapes take none, a UTF-8 sequence one. */
static size_t line_columns(const char *s, size_t n)
{
	size_t cols = 0;

	for (size_t i = 0; i < n; i++) {
		if (s[i] == '\033') {
			while (i + 1 < n && s[i + 1] != 'm')
				i++;
			i++;
		} else if (((unsigned char)s[i] & 0xc0) != 0x80) {
			cols++;
		}
	}
	return cols;
}

/* Write what style_fit_terminal gathered, every line at most the terminal's
 * width: a longer one ends in "..." (and a colour reset, its escapes kept
 * up to the cut). */
static void style_finish(struct style *st)
{
	const char *p, *end, *nl;

	if (!st->term)
		return;
	fclose(st->out);
	st->out = st->term;
	st->term = NULL;
	for (p = st->buf, end = st->buf + st->len; p < end; p = nl + 1) {
		size_t n, cols = 0, i;

		nl = memchr(p, '\n', (size_t)(end - p));
		if (!nl)
			nl = end;
		n = (size_t)(nl - p);
		if (line_columns(p, n) <= st->columns) {
			fwrite(p, 1, n, st->out);
		} else {
			for (i = 0; i < n; i++) {
				if (p[i] == '\033') {
					size_t k = i;

					while (k + 1 < n && p[k] != 'm')
						k++;
					fwrite(p + i, 1, k + 1 - i, st->out);
					i = k;
					continue;
				}
				if (((unsigned char)p[i] & 0xc0) != 0x80 &&
				    cols++ == st->columns - 3)
					break;
				fputc(p[i], st->out);
			}
			fputs(st->color ? "...\033[0m" : "...", st->out);
		}
		if (nl < end)
			fputc('\n', st->out);
	}
	free(st->buf);
	st->buf = NULL;
}

/* Print n bytes for a terminal: control bytes as \xNN, at most max bytes
 * (0: no limit) then "...", never cutting a UTF-8 sequence.  Returns the
 * number of columns printed (one per character, an approximation). */
static size_t print_safe(FILE *f, const char *s, size_t n, size_t max)
{
	size_t cols = 0, i = 0;

	while (i < n) {
		unsigned char ch = (unsigned char)s[i];
		size_t clen = 1;

		if (ch >= 0xc0)
			while (i + clen < n && ((unsigned char)s[i + clen] & 0xc0) == 0x80 &&
			       clen < 4)
				clen++;
		if (max && cols >= max) {
			fputs("...", f);
			return cols + 3;
		}
		if (ch < 0x20 || ch == 0x7f) {
			fprintf(f, "\\x%02x", ch);
			cols += 4;
		} else {
			fwrite(s + i, 1, clen, f);
			cols++;
		}
		i += clen;
	}
	return cols;
}

static size_t print_str(FILE *f, const char *s, size_t max)
{
	return s ? print_safe(f, s, strlen(s), max) : 0;
}

static void pad(FILE *f, size_t used, size_t width)
{
	for (size_t i = used; i < width; i++)
		fputc(' ', f);
}

/* Width a string takes in print_safe (characters, control bytes as 4). */
static size_t text_width(const char *s, size_t max)
{
	size_t cols = 0;

	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if ((*p & 0xc0) == 0x80)
			continue;
		cols += *p < 0x20 || *p == 0x7f ? 4 : 1;
	}
	return max && cols > max ? max + 3 : cols;
}

/* A table cell: s in width columns ("..." at the end when cut), then the
 * two spaces before the next one. */
static void cell(FILE *f, const char *s, size_t width)
{
	size_t w = text_width(s, 0);

	pad(f, print_str(f, s, w > width ? width - 3 : 0), width + 2);
}

/* The same, cut at the front: "...o-v2.conf:55". */
static void cell_tail(FILE *f, const char *s, size_t width)
{
	if (text_width(s, 0) <= width) {
		cell(f, s, width);
		return;
	}
	fputs("...", f);
	while (*s && text_width(s, 0) > width - 3)
		for (s++; ((unsigned char)*s & 0xc0) == 0x80; s++)
			;
	pad(f, print_str(f, s, 0) + 3, width + 2);
}

/* A JSON string on f: quote, backslash and control bytes escaped. */
static void json_string(FILE *f, const char *s, size_t n)
{
	json_fput_quoted(f, s, n, JSON_ESC_LOG);
}

static void json_cstr(FILE *f, const char *s)
{
	if (s)
		json_string(f, s, strlen(s));
	else
		fputs("null", f);
}

/* ,"name":"value" (null when value is NULL). */
static void json_member(FILE *f, const char *name, const char *value)
{
	fprintf(f, ",\"%s\":", name);
	json_cstr(f, value);
}

static const char *policy_name(enum mapping_unmapped p)
{
	return p == MAPPING_UNMAPPED_DROP     ? "drop"
	       : p == MAPPING_UNMAPPED_REJECT ? "reject"
					      : "form";
}

/* ------------------------------------------------------------------------ */
/* Input */

static const char *display_name(const char *path)
{
	return strcmp(path, "-") == 0 ? "<stdin>" : path;
}

/* Read a whole file ("-": stdin) of at most max bytes, NUL-terminated. */
static int read_input(const char *path, size_t max, char **ret, size_t *ret_len)
{
	FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
	struct buf b = BUF_INIT(max);
	int rc;

	*ret = NULL;
	*ret_len = 0;
	if (!f) {
		fprintf(stderr, "webhook-bridge: %s: %s\n", display_name(path), strerror(errno));
		return -1;
	}
	rc = buf_read_file(&b, f);
	if (f != stdin)
		fclose(f);
	if (rc == 0 && !(*ret = buf_take(&b, ret_len)))
		rc = -ENOMEM;
	if (rc == -EIO)
		fprintf(stderr, "webhook-bridge: %s: read error\n", display_name(path));
	else if (rc == -EFBIG)
		fprintf(stderr, "webhook-bridge: %s: larger than %zu MiB\n", display_name(path),
			max >> 20);
	else if (rc < 0)
		fprintf(stderr, "webhook-bridge: %s: out of memory\n", display_name(path));
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

	v1_limits_default(&lim);
	return form ? v1_parse_form(text, len, &lim, ret, err)
		    : v1_parse_json(text, len, &lim, ret, err);
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

static void prov_text(const struct style *st, const char *input, const char *mapping_path,
		      const struct mapping_result *r, const struct prov_field *fields,
		      size_t n_fields, const struct prov_key *keys, size_t n_keys)
{
	FILE *f = st->out;
	size_t wp = 4, wv = 5, wr = 4, wk = 0, rules = 0, structure = 0, n_unmapped = 0,
	       n_dropped = 0;

	for (size_t i = 0; i < n_fields; i++) {
		size_t p = text_width(fields[i].e->path, 0), v = text_width(fields[i].e->b, 40);

		wp = p > wp ? p : wp;
		wv = v > wv ? v : wv;
		if (fields[i].t) {
			size_t w = text_width(fields[i].rule, 0);

			wr = w > wr ? w : wr;
			rules++;
		} else {
			structure++;
		}
	}
	/* a narrow terminal: rules (cut at the front: the line number stays),
	 * then paths to 32, values to 10 and paths to 20 give way so that
	 * FROM: WHAT keeps 16 columns (style_finish cuts what still overflows) */
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
	color(st, C_BOLD);
	print_str(f, input, 0);
	fputs(" -> v2 with ", f);
	print_str(f, mapping_path, 0);
	fprintf(f, " (unmapped = \"%s\")\n\n", policy_name(r->unmapped_policy));
	fputs("PATH", f);
	pad(f, 4, wp + 2);
	fputs("VALUE", f);
	pad(f, 5, wv + 2);
	fputs("RULE", f);
	pad(f, 4, wr + 2);
	fputs("FROM: WHAT\n", f);
	color(st, C_RESET);
	for (size_t i = 0; i < n_fields; i++) {
		const struct prov_field *p = &fields[i];
		const struct mapping_trace *t = p->t;

		cell(f, p->e->path, wp);
		color(st, C_GREEN);
		cell(f, p->e->b, wv);
		color(st, C_RESET);
		color(st, t ? C_CYAN : C_DIM);
		cell_tail(f, t ? p->rule : "-", wr);
		color(st, C_RESET);
		if (!t || p->m == JSONDIFF_TRACE_ENTRY) {
			color(st, C_DIM);
			fprintf(f, "(%s)", field_what(t, p->m));
			color(st, C_RESET);
		} else {
			if (t->from_key) {
				print_str(f, t->from_key, 0);
				fputs(": ", f);
			}
			print_str(f, t->what, 0);
		}
		fputc('\n', f);
	}
	for (size_t i = 0; i < n_keys; i++) {
		n_unmapped += keys[i].fate == KEY_UNMAPPED;
		n_dropped += keys[i].fate == KEY_DROPPED;
	}
	for (size_t i = 0; i < n_keys; i++) {
		size_t w = text_width(keys[i].f->key, 0);

		if (keys[i].fate != KEY_WRITTEN && w > wk)
			wk = w;
	}
	if (n_unmapped + n_dropped) {
		fputc('\n', f);
		color(st, C_BOLD);
		fputs("v1 keys not written by a rule:\n", f);
		color(st, C_RESET);
	}
	for (size_t i = 0; i < n_keys; i++) {
		const struct prov_key *k = &keys[i];

		if (k->fate == KEY_WRITTEN)
			continue;
		fputs("  ", f);
		color(st, C_YELLOW);
		pad(f, print_str(f, k->f->key, 0), wk);
		color(st, C_RESET);
		if (k->fate == KEY_DROPPED) {
			fputs("  dropped: ", f);
			fputs(k->reason, f);
		} else if (r->unmapped_policy == MAPPING_UNMAPPED_FORM) {
			fputs("  unmapped -> form[", f);
			print_str(f, k->f->key, 0);
			fputs("]", f);
			if (k->t) {
				fputs(" (unmapped = \"form\", ", f);
				print_str(f, k->t->file, 0);
				fprintf(f, ":%d)", k->t->line);
			}
		} else {
			fprintf(f, "  unmapped: dropped (unmapped = \"%s\")",
				policy_name(r->unmapped_policy));
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
	json_cstr(f, input);
	json_member(f, "mapping", mapping_path);
	json_member(f, "participation_id", r->participation_id);
	json_member(f, "unmapped_policy", policy_name(r->unmapped_policy));
	fputs(",\"fields\":[", f);
	for (size_t i = 0; i < n_fields; i++) {
		const struct prov_field *p = &fields[i];
		const struct mapping_trace *t = p->t;

		fputs(i ? ",{\"path\":" : "{\"path\":", f);
		json_cstr(f, p->e->path);
		fputs(",\"value\":", f);
		fwrite(p->e->b, 1, p->e->b_len, f);
		json_member(f, "rule", t ? p->rule : NULL);
		json_member(f, "from", t && p->m != JSONDIFF_TRACE_ENTRY ? t->from_key : NULL);
		json_member(f, "what", field_what(t, p->m));
		json_member(f, "match", match_name(p->m));
		fputc('}', f);
	}
	fputs("],\"unmapped\":[", f);
	for (size_t i = 0; i < n_keys; i++) {
		char rule[300];

		if (keys[i].fate != KEY_UNMAPPED)
			continue;
		fputs(first ? "{\"key\":" : ",{\"key\":", f);
		first = false;
		json_cstr(f, keys[i].f->key);
		json_member(f, "policy", policy_name(r->unmapped_policy));
		if (keys[i].t)
			snprintf(rule, sizeof(rule), "%s:%d", keys[i].t->file, keys[i].t->line);
		json_member(f, "rule", keys[i].t ? rule : NULL);
		fputc('}', f);
	}
	fputs("],\"dropped\":[", f);
	first = true;
	for (size_t i = 0; i < n_keys; i++) {
		if (keys[i].fate != KEY_DROPPED)
			continue;
		fputs(first ? "{\"key\":" : ",{\"key\":", f);
		first = false;
		json_cstr(f, keys[i].f->key);
		json_member(f, "reason", keys[i].reason);
		fputc('}', f);
	}
	fputs("],\"v2\":", f);
	fwrite(r->body, 1, r->len, f);
	fputs("}\n", f);
}

static int diff_provenance(const char *mapping_path, const char *input, int form, int json,
			   const char *const *ignore, size_t n_ignore, const struct style *st)
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
	    mapping_apply(m, doc, MAPPING_TRACE, &r, &err) < 0) {
		error_text(&err, msg, sizeof(msg));
		fprintf(stderr, "error: %s: ", display_name(input));
		print_str(stderr, msg, 0);
		fputc('\n', stderr);
		if (json) {
			fputs("{\"input\":", st->out);
			json_cstr(st->out, display_name(input));
			json_member(st->out, "mapping", mapping_path);
			fputs(",\"error\":{\"message\":", st->out);
			json_cstr(st->out, err.message);
			if (err.file) {
				snprintf(msg, sizeof(msg), "%s:%d", err.file, err.line);
				json_member(st->out, "rule", msg);
			}
			if (err.key[0])
				json_member(st->out, "key", err.key);
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
		prov_json(st->out, display_name(input), mapping_path, &r, fields, d.n_entries, keys,
			  doc->n_fields);
	else
		prov_text(st, display_name(input), mapping_path, &r, fields, d.n_entries, keys,
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

static void entry_text(const struct style *st, const struct jsondiff_entry *e)
{
	FILE *f = st->out;

	color(st, e->kind == JSONDIFF_ADDED     ? C_GREEN
		  : e->kind == JSONDIFF_REMOVED ? C_RED
						: C_YELLOW);
	fputs(e->kind == JSONDIFF_ADDED ? "+ " : e->kind == JSONDIFF_REMOVED ? "- " : "~ ", f);
	print_str(f, *e->path ? e->path : "(root)", 0);
	color(st, C_RESET);
	fputs(": ", f);
	if (e->a)
		print_safe(f, e->a, e->a_len, TEXT_VALUE_MAX);
	if (e->a && e->b)
		fputs(" -> ", f);
	if (e->b)
		print_safe(f, e->b, e->b_len, TEXT_VALUE_MAX);
	if (e->rule) {
		color(st, C_CYAN);
		fputs("  [", f);
		print_str(f, e->rule, 0);
		fputc(']', f);
		color(st, C_RESET);
	}
	fputc('\n', f);
}

static int diff_documents(const char *pa, const char *pb, const char *const *ignore,
			  size_t n_ignore, int json, const struct style *st)
{
	struct jsondiff_options opt = { .ignore = ignore,
					.n_ignore = n_ignore,
					.name_a = display_name(pa),
					.name_b = display_name(pb),
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
		print_str(stderr, err.message, 0);
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
		json_cstr(f, display_name(pa));
		json_member(f, "b", display_name(pb));
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
		color(st, C_BOLD);
		print_str(st->out, display_name(pa), 0);
		fputs(" -> ", st->out);
		print_str(st->out, display_name(pb), 0);
		if (n)
			fprintf(st->out,
				": %zu difference%s (%zu added, %zu removed, %zu changed)\n", n,
				n == 1 ? "" : "s", d.n_added, d.n_removed, d.n_changed);
		else
			fputs(": no differences\n", st->out);
		color(st, C_RESET);
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

static uint64_t hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

/* Rebuild an open-addressing index of n string keys (slot = index + 1) at
 * twice its size; the tables below differ only in their element type. */
static int index_grow(size_t **slots_io, size_t *n_slots_io, size_t n,
		      const char *(*key_at)(const void *v, size_t i), const void *v)
{
	size_t n_slots = *n_slots_io ? *n_slots_io * 2 : 64;
	size_t *slots = calloc(n_slots, sizeof(*slots));

	if (!slots)
		return -1;
	for (size_t i = 0; i < n; i++) {
		size_t h = (size_t)hash_str(key_at(v, i)) & (n_slots - 1);

		while (slots[h])
			h = (h + 1) & (n_slots - 1);
		slots[h] = i + 1;
	}
	free(*slots_io);
	*slots_io = slots;
	*n_slots_io = n_slots;
	return 0;
}

static const char *group_key_at(const void *v, size_t i)
{
	return ((const struct group_table *)v)->v[i].path;
}

static int table_grow(struct group_table *t)
{
	return index_grow(&t->slots, &t->n_slots, t->n, group_key_at, t);
}

/* The group of path (created when new); NULL on out of memory. */
static struct group *table_get(struct group_table *t, const char *path)
{
	struct group *v;
	size_t h;

	if (t->n_slots) {
		for (h = (size_t)hash_str(path) & (t->n_slots - 1); t->slots[h];
		     h = (h + 1) & (t->n_slots - 1))
			if (strcmp(t->v[t->slots[h] - 1].path, path) == 0)
				return &t->v[t->slots[h] - 1];
	}
	if (t->n >= MAX_GROUPS) {
		if (!t->other.path && !(t->other.path = strdup("(other paths)")))
			return NULL;
		return &t->other;
	}
	if ((t->n + 1) * 2 > t->n_slots && table_grow(t) < 0)
		return NULL;
	if (!(v = grow_array(t->v, &t->cap, t->n + 1, sizeof(*v), 32)))
		return NULL;
	t->v = v;
	memset(&t->v[t->n], 0, sizeof(t->v[t->n]));
	if (!(t->v[t->n].path = strdup(path)))
		return NULL;
	for (h = (size_t)hash_str(path) & (t->n_slots - 1); t->slots[h];
	     h = (h + 1) & (t->n_slots - 1))
		;
	t->slots[h] = t->n + 1;
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
	ok_old = mapping_apply(ag->old, doc, MAPPING_TRACE, &ro, &eo) == 0;
	ok_new = mapping_apply(ag->new, doc, MAPPING_TRACE, &rn, &en) == 0;
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
		against_one(ag, text, len, display_name(path));
	} else {
		const char *p = text, *end = text + len;
		long line_no = 0;
		size_t llen = strlen(display_name(path)) + 24;

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
				snprintf(label, llen, "%s:%ld", display_name(path), line_no);
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

static void against_text(const struct style *st, const struct against *ag, struct group **sorted,
			 size_t n)
{
	FILE *f = st->out;
	static const char *const titles[] = {
		"map under OLD only (NEW fails):",
		"map under NEW only (OLD fails):",
		"fail under both, with another error:",
	};

	color(st, C_BOLD);
	fputs("OLD ", f);
	print_str(f, ag->old_path, 0);
	fputs("\nNEW ", f);
	print_str(f, ag->new_path, 0);
	color(st, C_RESET);
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
		color(st, C_BOLD);
		fputs("changed paths (payloads affected):\n", f);
		color(st, C_RESET);
	}
	for (size_t i = 0; i < n; i++) {
		const struct group *g = sorted[i];

		fprintf(f, "  %5zu  ", g->payloads);
		color(st, C_YELLOW);
		print_str(f, g->path, 0);
		color(st, C_RESET);
		fputs("  (", f);
		group_kinds_text(f, g);
		fputc(')', f);
		if (g->rule) {
			color(st, C_CYAN);
			fputs("  ", f);
			print_str(f, g->rule, 0);
			color(st, C_RESET);
			fputc(' ', f);
			if (g->from) {
				print_str(f, g->from, 0);
				fputs(": ", f);
			}
			print_str(f, g->what, 0);
		}
		fputs("\n         ", f);
		if (g->sample_a)
			print_str(f, g->sample_a, TEXT_VALUE_MAX / 2);
		else
			fputs("(absent)", f);
		fputs(" -> ", f);
		if (g->sample_b)
			print_str(f, g->sample_b, TEXT_VALUE_MAX / 2);
		else
			fputs("(absent)", f);
		color(st, C_DIM);
		fputs("   e.g. ", f);
		for (size_t k = 0; k < g->n_examples; k++) {
			if (k)
				fputs(", ", f);
			print_str(f, g->examples[k], 0);
		}
		color(st, C_RESET);
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
				color(st, C_BOLD);
				fputs(titles[kind], f);
				color(st, C_RESET);
				fputc('\n', f);
				title = true;
			}
			fputs("  ", f);
			print_str(f, fl->input, 0);
			if (fl->participation_id) {
				fputs(" (", f);
				print_str(f, fl->participation_id, 0);
				fputc(')', f);
			}
			fputs(": ", f);
			color(st, C_RED);
			if (fl->error_old) {
				fputs("OLD: ", f);
				print_str(f, fl->error_old, 0);
				fputs("; NEW: ", f);
			}
			print_str(f, fl->error, 0);
			color(st, C_RESET);
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
	json_cstr(f, ag->old_path);
	json_member(f, "new", ag->new_path);
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
		json_cstr(f, g->path);
		fprintf(f, ",\"payloads\":%zu,\"added\":%zu,\"removed\":%zu,\"changed\":%zu",
			g->payloads, g->added, g->removed, g->changed);
		json_member(f, "rule", g->rule);
		json_member(f, "from", g->from);
		json_member(f, "what", g->what);
		if (g->sample_a)
			fprintf(f, ",\"a\":%s", g->sample_a);
		if (g->sample_b)
			fprintf(f, ",\"b\":%s", g->sample_b);
		fputs(",\"examples\":[", f);
		for (size_t k = 0; k < g->n_examples; k++) {
			if (k)
				fputc(',', f);
			json_cstr(f, g->examples[k]);
		}
		fputs("]}", f);
	}
	fputs("],\"failures\":[", f);
	for (size_t i = 0; i < ag->n_failures; i++) {
		const struct failure *fl = &ag->failures[i];

		fputs(i ? ",{\"kind\":" : "{\"kind\":", f);
		json_cstr(f, kinds[fl->kind]);
		json_member(f, "input", fl->input);
		json_member(f, "participation_id", fl->participation_id);
		json_member(f, "error", fl->error);
		if (fl->error_old)
			json_member(f, "error_old", fl->error_old);
		fputc('}', f);
	}
	fprintf(f, "],\"failures_truncated\":%s}\n",
		ag->only_old + ag->only_new + ag->error_changed > ag->n_failures ? "true"
										 : "false");
}

static int diff_against(const char *old_path, const char *new_path, char **fixtures, int n_fixtures,
			const char *const *ignore, size_t n_ignore, int json,
			const struct style *st)
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
		{ "json", no_argument, NULL, 'j' },
		{ "form", no_argument, NULL, 'f' },
		{ "color", required_argument, NULL, 'c' },
		{ "colour", required_argument, NULL, 'c' },
		{ "no-color", no_argument, NULL, 'C' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *mapping = NULL, *against = NULL, *when = NULL;
	const char **ignore = NULL;
	size_t n_ignore = 0;
	int json = 0, form = 0, c, rc;
	struct style st;
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
	if (style_init(&st, when, stdout) < 0) {
		free(ignore);
		return cli_usage("diff", "--color must be auto, always or never, not '%s'", when);
	}
	setvbuf(stdout, outbuf, _IOFBF, sizeof(outbuf));
	if (!json)
		style_fit_terminal(&st);
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
	style_finish(&st);
	fflush(stdout);
	free(ignore);
	return rc;
}

/* ------------------------------------------------------------------------ */
/* report FILE */

struct count_entry {
	char *key;
	size_t count;
	size_t kinds[3];                  /* paths: by jsondiff kind */
	char *rules[REPORT_RULES];        /* paths: distinct rules seen ... */
	size_t rule_counts[REPORT_RULES]; /* ... and how often */
};

struct count_table {
	struct count_entry *v;
	size_t n, cap;
	size_t *slots;
	size_t n_slots;
	size_t dropped; /* occurrences of keys past MAX_GROUPS */
};

static const char *count_key_at(const void *v, size_t i)
{
	return ((const struct count_table *)v)->v[i].key;
}

static int ctable_grow(struct count_table *t)
{
	return index_grow(&t->slots, &t->n_slots, t->n, count_key_at, t);
}

/* NULL past the ceiling (counted in t->dropped) or on out of memory (*oom). */
static struct count_entry *ctable_get(struct count_table *t, const char *key, bool *oom)
{
	struct count_entry *v;
	size_t h;

	if (t->n_slots)
		for (h = (size_t)hash_str(key) & (t->n_slots - 1); t->slots[h];
		     h = (h + 1) & (t->n_slots - 1))
			if (strcmp(t->v[t->slots[h] - 1].key, key) == 0)
				return &t->v[t->slots[h] - 1];
	if (t->n >= MAX_GROUPS) {
		t->dropped++;
		return NULL;
	}
	if ((t->n + 1) * 2 > t->n_slots && ctable_grow(t) < 0)
		goto oom;
	if (!(v = grow_array(t->v, &t->cap, t->n + 1, sizeof(*v), 32)))
		goto oom;
	t->v = v;
	memset(&t->v[t->n], 0, sizeof(t->v[t->n]));
	if (!(t->v[t->n].key = strdup(key)))
		goto oom;
	for (h = (size_t)hash_str(key) & (t->n_slots - 1); t->slots[h];
	     h = (h + 1) & (t->n_slots - 1))
		;
	t->slots[h] = t->n + 1;
	return &t->v[t->n++];
oom:
	*oom = true;
	return NULL;
}

static void ctable_free(struct count_table *t)
{
	for (size_t i = 0; i < t->n; i++) {
		free(t->v[i].key);
		for (size_t k = 0; k < REPORT_RULES; k++)
			free(t->v[i].rules[k]);
	}
	free(t->v);
	free(t->slots);
	memset(t, 0, sizeof(*t));
}

struct report {
	size_t lines, participations, matched, identical, different, uncomparable,
		expired_translated, expired_real, expired_other, other_lines, invalid_lines;
	struct count_table paths;
	struct count_table unmapped;
	struct count_table routes;
	bool oom;
};

/* yajl_tree is acceptable for report lines (trusted-ish local files) once
 * the two traps are closed: no embedded NUL (it would cut the line short:
 * yajl_tree_parse uses strlen) and bounded nesting (yajl_tree_free recurses). */
static const char *line_precheck(const char *s, size_t n)
{
	size_t depth = 0;
	bool in_str = false, esc = false;

	if (memchr(s, '\0', n))
		return "embedded NUL byte";
	for (size_t i = 0; i < n; i++) {
		char ch = s[i];

		if (in_str) {
			if (esc)
				esc = false;
			else if (ch == '\\')
				esc = true;
			else if (ch == '"')
				in_str = false;
		} else if (ch == '"') {
			in_str = true;
		} else if (ch == '{' || ch == '[') {
			if (++depth > REPORT_DEPTH_MAX)
				return "nested deeper than 64";
		} else if ((ch == '}' || ch == ']') && depth) {
			depth--;
		}
	}
	return NULL;
}

static const char *tree_str(yajl_val obj, const char *key)
{
	const char *path[] = { key, NULL };
	yajl_val v = yajl_tree_get(obj, path, yajl_t_string);

	return v ? YAJL_GET_STRING(v) : NULL;
}

static void count_rule(struct count_entry *e, const char *rule)
{
	for (size_t k = 0; k < REPORT_RULES; k++) {
		if (e->rules[k] && strcmp(e->rules[k], rule) == 0) {
			e->rule_counts[k]++;
			return;
		}
		if (!e->rules[k]) {
			if ((e->rules[k] = strdup(rule)))
				e->rule_counts[k] = 1;
			return;
		}
	}
}

static int kind_index(const char *kind)
{
	if (kind && strcmp(kind, "added") == 0)
		return JSONDIFF_ADDED;
	if (kind && strcmp(kind, "removed") == 0)
		return JSONDIFF_REMOVED;
	return JSONDIFF_CHANGED;
}

/* A translated post met its real v2: {"status", "differences":[...]}.  It
 * comes inside the participation's line when the real v2 arrived first, or
 * as its own {"event":"compared"} line when it arrived later. */
static void report_comparison(struct report *rp, yajl_val cmp)
{
	const char *diff_path[] = { "differences", NULL };
	const char *status = tree_str(cmp, "status");
	yajl_val diffs = yajl_tree_get(cmp, diff_path, yajl_t_array);
	struct count_entry *e;

	rp->matched++;
	if (status && strcmp(status, "identical") == 0) {
		rp->identical++;
		return;
	}
	if (status && strcmp(status, "not_compared") == 0) {
		rp->uncomparable++;
		return;
	}
	rp->different++;
	for (size_t i = 0; diffs && i < diffs->u.array.len; i++) {
		yajl_val dv = diffs->u.array.values[i];
		const char *path = YAJL_IS_OBJECT(dv) ? tree_str(dv, "path") : NULL;
		const char *rule;

		if (!path || !(e = ctable_get(&rp->paths, path, &rp->oom)))
			continue;
		e->count++;
		e->kinds[kind_index(tree_str(dv, "kind"))]++;
		if ((rule = tree_str(dv, "rule")))
			count_rule(e, rule);
	}
}

static void report_participation(struct report *rp, yajl_val obj)
{
	const char *cmp_path[] = { "comparison", NULL };
	const char *unm_path[] = { "unmapped", NULL };
	yajl_val cmp = yajl_tree_get(obj, cmp_path, yajl_t_object);
	yajl_val unm = yajl_tree_get(obj, unm_path, yajl_t_array);
	const char *route = tree_str(obj, "route");
	struct count_entry *e;

	rp->participations++;
	if (route && (e = ctable_get(&rp->routes, route, &rp->oom)))
		e->count++;
	for (size_t i = 0; unm && i < unm->u.array.len; i++) {
		yajl_val k = unm->u.array.values[i];

		if (YAJL_IS_STRING(k) &&
		    (e = ctable_get(&rp->unmapped, YAJL_GET_STRING(k), &rp->oom)))
			e->count++;
	}
	if (cmp)
		report_comparison(rp, cmp);
}

/* Returns NULL or the reason the line is malformed. */
static const char *report_line(struct report *rp, const char *line, size_t n, char *errbuf,
			       size_t errcap)
{
	const char *why = line_precheck(line, n);
	yajl_val obj;
	const char *event;

	if (why)
		return why;
	obj = yajl_tree_parse(line, errbuf, errcap);
	if (!obj) {
		size_t k = strlen(errbuf);

		while (k && (errbuf[k - 1] == '\n' || errbuf[k - 1] == ' '))
			errbuf[--k] = '\0';
		return errbuf[0] ? errbuf : "invalid JSON";
	}
	if (!YAJL_IS_OBJECT(obj)) {
		yajl_tree_free(obj);
		return "not a JSON object";
	}
	event = tree_str(obj, "event");
	if (event && strcmp(event, "compared") == 0) {
		const char *cmp_path[] = { "comparison", NULL };
		yajl_val cmp = yajl_tree_get(obj, cmp_path, yajl_t_object);

		if (cmp)
			report_comparison(rp, cmp);
		else
			rp->other_lines++;
	} else if (event && strcmp(event, "expired") == 0) {
		const char *side = tree_str(obj, "side");

		if (side && strcmp(side, "translated") == 0)
			rp->expired_translated++;
		else if (side && strcmp(side, "real") == 0)
			rp->expired_real++;
		else
			rp->expired_other++;
	} else if (tree_str(obj, "participation_id") || tree_str(obj, "delivery_id")) {
		report_participation(rp, obj);
	} else {
		rp->other_lines++;
	}
	yajl_tree_free(obj);
	return NULL;
}

static int ctable_by_count(const void *x, const void *y)
{
	const struct count_entry *a = *(struct count_entry *const *)x,
				 *b = *(struct count_entry *const *)y;

	if (a->count != b->count)
		return a->count > b->count ? -1 : 1;
	return strcmp(a->key, b->key);
}

static struct count_entry **ctable_sorted(const struct count_table *t)
{
	struct count_entry **v = calloc(t->n ? t->n : 1, sizeof(*v));

	if (!v)
		return NULL;
	for (size_t i = 0; i < t->n; i++)
		v[i] = &t->v[i];
	qsort(v, t->n, sizeof(*v), ctable_by_count);
	return v;
}

/* The most frequent rule recorded for a path, or NULL. */
static const char *top_rule(const struct count_entry *e)
{
	size_t best = 0;

	for (size_t k = 1; k < REPORT_RULES && e->rules[k]; k++)
		if (e->rule_counts[k] > e->rule_counts[best])
			best = k;
	return e->rules[best];
}

/* "2 changed, 1 added" into buf; returns its length. */
static size_t kinds_text(const struct count_entry *e, char *buf, size_t cap)
{
	size_t len = 0;

	buf[0] = '\0';
	for (int k = 0; k < 3; k++) {
		int n;

		if (!e->kinds[k] || len >= cap)
			continue;
		n = snprintf(buf + len, cap - len, "%s%zu %s", len ? ", " : "", e->kinds[k],
			     jsondiff_kind_name((enum jsondiff_kind)k));
		if (n > 0)
			len += (size_t)n;
	}
	return len < cap ? len : cap - 1;
}

static void report_text(const struct style *st, const char *path, const struct report *rp,
			struct count_entry **paths, struct count_entry **unmapped, size_t top)
{
	FILE *f = st->out;
	size_t unmatched = rp->expired_translated + rp->expired_real + rp->expired_other;
	size_t n_paths = rp->paths.n < top ? rp->paths.n : top,
	       n_unm = rp->unmapped.n < top ? rp->unmapped.n : top;
	size_t w = 4, wk = 0;

	color(st, C_BOLD);
	print_str(f, path, 0);
	color(st, C_RESET);
	fprintf(f, "\n  participations  %zu\n", rp->participations);
	fprintf(f, "  matched         %zu\n", rp->matched);
	fprintf(f, "    identical     %zu\n", rp->identical);
	fputs("    different     ", f);
	color(st, rp->different ? C_RED : C_GREEN);
	fprintf(f, "%zu", rp->different);
	color(st, C_RESET);
	fprintf(f,
		"\n  unmatched       %zu (translated never matched: %zu, real never matched: "
		"%zu)\n",
		unmatched, rp->expired_translated, rp->expired_real);
	if (rp->participations > rp->matched)
		fprintf(f, "  not compared    %zu\n", rp->participations - rp->matched);
	if (rp->uncomparable)
		fprintf(f,
			"  uncomparable    %zu (matched, but a side was too large or not JSON)\n",
			rp->uncomparable);
	if (rp->invalid_lines)
		fprintf(f, "  invalid lines   %zu\n", rp->invalid_lines);
	for (size_t i = 0; i < rp->routes.n; i++) {
		if (i == 0)
			fputs("  routes         ", f);
		fputs(" ", f);
		print_str(f, rp->routes.v[i].key, 0);
		fprintf(f, " (%zu)", rp->routes.v[i].count);
		if (i + 1 == rp->routes.n)
			fputc('\n', f);
	}
	for (size_t i = 0; i < n_paths; i++) {
		size_t pw = text_width(paths[i]->key, 0);

		w = pw > w ? pw : w;
	}
	if (n_paths) {
		fputc('\n', f);
		color(st, C_BOLD);
		fprintf(f, "top differing paths (participations):\n");
		color(st, C_RESET);
	}
	for (size_t i = 0; i < n_paths; i++) {
		char kinds[96];
		size_t kw = kinds_text(paths[i], kinds, sizeof(kinds));

		wk = kw > wk ? kw : wk;
	}
	for (size_t i = 0; i < n_paths; i++) {
		const struct count_entry *e = paths[i];
		const char *rule = top_rule(e);
		char kinds[96];
		size_t kw;

		fprintf(f, "  %5zu  ", e->count);
		color(st, C_YELLOW);
		pad(f, print_str(f, e->key, 0), w + 2);
		color(st, C_RESET);
		kw = kinds_text(e, kinds, sizeof(kinds));
		fputs(kinds, f);
		pad(f, kw, wk + 2);
		color(st, rule ? C_CYAN : C_DIM);
		print_str(f, rule ? rule : "(no rule)", 0);
		color(st, C_RESET);
		fputc('\n', f);
	}
	if (rp->paths.n > n_paths)
		fprintf(f, "  ... %zu more paths\n", rp->paths.n - n_paths);
	if (n_unm) {
		fputc('\n', f);
		color(st, C_BOLD);
		fputs("unmapped v1 keys (participations):\n", f);
		color(st, C_RESET);
	}
	for (size_t i = 0; i < n_unm; i++) {
		fprintf(f, "  %5zu  ", unmapped[i]->count);
		print_str(f, unmapped[i]->key, 0);
		fputc('\n', f);
	}
	if (rp->unmapped.n > n_unm)
		fprintf(f, "  ... %zu more keys\n", rp->unmapped.n - n_unm);
}

static void report_json(FILE *f, const char *path, const struct report *rp,
			struct count_entry **paths, struct count_entry **unmapped, size_t top)
{
	size_t n_paths = rp->paths.n < top ? rp->paths.n : top,
	       n_unm = rp->unmapped.n < top ? rp->unmapped.n : top;

	fputs("{\"file\":", f);
	json_cstr(f, path);
	fprintf(f,
		",\"lines\":%zu,\"participations\":%zu,\"matched\":%zu,\"identical\":%zu,"
		"\"different\":%zu,"
		"\"unmatched\":%zu,\"unmatched_translated\":%zu,\"unmatched_real\":%zu,\"not_"
		"compared\":%zu,"
		"\"uncomparable\":%zu,\"invalid_lines\":%zu,\"distinct_paths\":%zu,\"paths\":[",
		rp->lines, rp->participations, rp->matched, rp->identical, rp->different,
		rp->expired_translated + rp->expired_real + rp->expired_other,
		rp->expired_translated, rp->expired_real, rp->participations - rp->matched,
		rp->uncomparable, rp->invalid_lines, rp->paths.n);
	for (size_t i = 0; i < n_paths; i++) {
		const struct count_entry *e = paths[i];

		fputs(i ? ",{\"path\":" : "{\"path\":", f);
		json_cstr(f, e->key);
		fprintf(f, ",\"count\":%zu,\"added\":%zu,\"removed\":%zu,\"changed\":%zu", e->count,
			e->kinds[JSONDIFF_ADDED], e->kinds[JSONDIFF_REMOVED],
			e->kinds[JSONDIFF_CHANGED]);
		json_member(f, "rule", top_rule(e));
		fputs(",\"rules\":{", f);
		for (size_t k = 0; k < REPORT_RULES && e->rules[k]; k++) {
			if (k)
				fputc(',', f);
			json_cstr(f, e->rules[k]);
			fprintf(f, ":%zu", e->rule_counts[k]);
		}
		fputs("}}", f);
	}
	fputs("],\"unmapped\":[", f);
	for (size_t i = 0; i < n_unm; i++) {
		fputs(i ? ",{\"key\":" : "{\"key\":", f);
		json_cstr(f, unmapped[i]->key);
		fprintf(f, ",\"count\":%zu}", unmapped[i]->count);
	}
	fputs("],\"routes\":{", f);
	for (size_t i = 0; i < rp->routes.n; i++) {
		if (i)
			fputc(',', f);
		json_cstr(f, rp->routes.v[i].key);
		fprintf(f, ":%zu", rp->routes.v[i].count);
	}
	fputs("}}\n", f);
}

/* Read one line of at most max bytes into *buf (grown as needed, up to
 * max + 1).  Returns 1 with the line (no '\n'), 0 at EOF, -1 on read
 * error; *too_long when the line was longer (the rest is skipped). */
static int read_line(FILE *f, char **buf, size_t *cap, size_t max, size_t *ret_len, bool *too_long)
{
	size_t len = 0;
	int ch;

	*too_long = false;
	while ((ch = getc_unlocked(f)) != EOF && ch != '\n') {
		if (len >= max) {
			*too_long = true;
			continue;
		}
		if (len + 1 >= *cap) {
			size_t ncap = *cap ? *cap * 2 : 4096;
			char *t;

			if (ncap > max + 1)
				ncap = max + 1;
			if (!(t = realloc(*buf, ncap)))
				return -1;
			*buf = t;
			*cap = ncap;
		}
		(*buf)[len++] = (char)ch;
	}
	if (ferror(f))
		return -1;
	if (ch == EOF && len == 0 && !*too_long)
		return 0;
	if (!*buf && !(*buf = malloc(*cap = 1)))
		return -1;
	(*buf)[len] = '\0';
	*ret_len = len;
	return 1;
}

int cmd_report(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "top", required_argument, NULL, 't' },
		{ "color", required_argument, NULL, 'c' },
		{ "colour", required_argument, NULL, 'c' },
		{ "no-color", no_argument, NULL, 'C' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *when = NULL, *path;
	int json = 0, c, rc = 2, rd;
	long top = 10;
	long long num;
	struct style st;
	struct report rp;
	struct count_entry **paths = NULL, **unmapped = NULL;
	FILE *f;
	char *line = NULL, errbuf[256];
	size_t cap = 0, len, shown = 0;
	bool too_long;
	static char outbuf[1 << 16];

	optind = 1;
	while ((c = cli_getopt("report", argc, argv, "h", opts)) != -1) {
		switch (c) {
		case 'j': json = 1; break;
		case 't':
			if (cli_int_parse(optarg, 1, 100000, &num) < 0)
				return cli_usage("report", "--top must be 1..100000, not '%s'",
						 optarg);
			top = (long)num;
			break;
		case 'c': when = optarg; break;
		case 'C': when = "never"; break;
		case 'h': fputs(usage_report, stdout); return 0;
		default: return 2;
		}
	}
	if (style_init(&st, when, stdout) < 0)
		return cli_usage("report", "--color must be auto, always or never, not '%s'", when);
	if (argc - optind != 1)
		return cli_usage("report", "%s", "give exactly one report FILE");
	path = argv[optind];
	f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "webhook-bridge report: %s: %s\n", path, strerror(errno));
		return 2;
	}
	setvbuf(stdout, outbuf, _IOFBF, sizeof(outbuf));
	if (!json)
		style_fit_terminal(&st);
	memset(&rp, 0, sizeof(rp));
	while ((rd = read_line(f, &line, &cap, REPORT_LINE_MAX, &len, &too_long)) == 1) {
		const char *why = NULL;
		size_t k = 0;

		rp.lines++;
		while (len && line[len - 1] == '\r')
			line[--len] = '\0';
		while (k < len && strchr(" \t", line[k]))
			k++;
		if (k == len && !too_long)
			continue;
		why = too_long ? "line longer than 16 MiB"
			       : report_line(&rp, line, len, errbuf, sizeof(errbuf));
		if (why) {
			rp.invalid_lines++;
			if (shown++ < 10)
				fprintf(stderr, "webhook-bridge report: %s:%zu: %s\n",
					display_name(path), rp.lines, why);
		}
	}
	if (f != stdin)
		fclose(f);
	if (rd < 0) {
		fprintf(stderr, "webhook-bridge report: %s: read error\n", display_name(path));
		goto out;
	}
	if (rp.oom || !(paths = ctable_sorted(&rp.paths)) ||
	    !(unmapped = ctable_sorted(&rp.unmapped))) {
		fprintf(stderr, "webhook-bridge report: out of memory\n");
		goto out;
	}
	if (json)
		report_json(st.out, display_name(path), &rp, paths, unmapped, (size_t)top);
	else
		report_text(&st, display_name(path), &rp, paths, unmapped, (size_t)top);
	if (rp.invalid_lines > 10)
		fprintf(stderr, "webhook-bridge report: %zu malformed lines in all\n",
			rp.invalid_lines);
	rc = rp.invalid_lines ? 2 : rp.different ? 1 : 0;
out:
	style_finish(&st);
	fflush(stdout);
	free(paths);
	free(unmapped);
	free(line);
	ctable_free(&rp.paths);
	ctable_free(&rp.unmapped);
	ctable_free(&rp.routes);
	return rc;
}
