/*
 * The report command: a summary of a dry-run report (the JSON lines serve
 * writes in dry-run mode): participations seen, matched with a real v2,
 * unmatched, the differing paths with counts and the rule behind each, the
 * unmapped v1 keys.  Text for people (colour only on a terminal), --json for
 * tools; every table grows to a fixed ceiling, past it the rest is counted.
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
#include "bridge/v1.h"
#include "cmd_out.h"

#define MAX_GROUPS       10000 /* distinct paths kept */
#define REPORT_LINE_MAX  (16u * 1024 * 1024)
#define REPORT_DEPTH_MAX 64
#define REPORT_RULES     4 /* distinct rules remembered per path */


static const char usage_report[] =
	"usage: webhook-bridge report FILE... [--json] [--top N] [--color WHEN]\n"
	"\n"
	"Summarises a dry-run report (JSON lines written by serve in dry-run mode;\n"
	"several files, e.g. one per bridge, are read as one report):\n"
	"participations seen, matched with a real v2 (identical / different),\n"
	"unmatched (expired on either side), the top N (default 10) differing paths\n"
	"with counts and the rule behind each, and the unmapped v1 keys.\n"
	"exit: 0 no participation differs, 1 some differ, 2 usage error, unreadable\n"
	"      file or malformed lines (reported on stderr; the summary still prints)\n";

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

/* NULL past the ceiling (counted in t->dropped) or on out of memory (*oom). */
static struct count_entry *ctable_get(struct count_table *t, const char *key, bool *oom)
{
	long at = out_index_find(t->slots, t->n_slots, key, count_key_at, t);
	struct count_entry *v;

	if (at >= 0)
		return &t->v[at];
	if (t->n >= MAX_GROUPS) {
		t->dropped++;
		return NULL;
	}
	if (!(v = grow_array(t->v, &t->cap, t->n + 1, sizeof(*v), 32)))
		goto oom;
	t->v = v;
	memset(&t->v[t->n], 0, sizeof(t->v[t->n]));
	if (!(t->v[t->n].key = strdup(key)))
		goto oom;
	if (out_index_add(&t->slots, &t->n_slots, t->n, count_key_at, t) < 0) {
		free(t->v[t->n].key);
		t->v[t->n].key = NULL;
		goto oom;
	}
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

static void report_text(const struct out_style *st, const char *path, const struct report *rp,
			struct count_entry **paths, struct count_entry **unmapped, size_t top)
{
	FILE *f = st->out;
	size_t unmatched = rp->expired_translated + rp->expired_real + rp->expired_other;
	size_t n_paths = rp->paths.n < top ? rp->paths.n : top,
	       n_unm = rp->unmapped.n < top ? rp->unmapped.n : top;
	size_t w = 4, wk = 0;

	out_color(st, C_BOLD);
	out_print_str(f, path, 0);
	out_color(st, C_RESET);
	fprintf(f, "\n  participations  %zu\n", rp->participations);
	fprintf(f, "  matched         %zu\n", rp->matched);
	fprintf(f, "    identical     %zu\n", rp->identical);
	fputs("    different     ", f);
	out_color(st, rp->different ? C_RED : C_GREEN);
	fprintf(f, "%zu", rp->different);
	out_color(st, C_RESET);
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
		out_print_str(f, rp->routes.v[i].key, 0);
		fprintf(f, " (%zu)", rp->routes.v[i].count);
		if (i + 1 == rp->routes.n)
			fputc('\n', f);
	}
	for (size_t i = 0; i < n_paths; i++) {
		size_t pw = out_text_width(paths[i]->key, 0);

		w = pw > w ? pw : w;
	}
	if (n_paths) {
		fputc('\n', f);
		out_color(st, C_BOLD);
		fprintf(f, "top differing paths (participations):\n");
		out_color(st, C_RESET);
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
		out_color(st, C_YELLOW);
		out_pad(f, out_print_str(f, e->key, 0), w + 2);
		out_color(st, C_RESET);
		kw = kinds_text(e, kinds, sizeof(kinds));
		fputs(kinds, f);
		out_pad(f, kw, wk + 2);
		out_color(st, rule ? C_CYAN : C_DIM);
		out_print_str(f, rule ? rule : "(no rule)", 0);
		out_color(st, C_RESET);
		fputc('\n', f);
	}
	if (rp->paths.n > n_paths)
		fprintf(f, "  ... %zu more paths\n", rp->paths.n - n_paths);
	if (n_unm) {
		fputc('\n', f);
		out_color(st, C_BOLD);
		fputs("unmapped v1 keys (participations):\n", f);
		out_color(st, C_RESET);
	}
	for (size_t i = 0; i < n_unm; i++) {
		fprintf(f, "  %5zu  ", unmapped[i]->count);
		out_print_str(f, unmapped[i]->key, 0);
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
	out_json_cstr(f, path);
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
		out_json_cstr(f, e->key);
		fprintf(f, ",\"count\":%zu,\"added\":%zu,\"removed\":%zu,\"changed\":%zu", e->count,
			e->kinds[JSONDIFF_ADDED], e->kinds[JSONDIFF_REMOVED],
			e->kinds[JSONDIFF_CHANGED]);
		out_json_member(f, "rule", top_rule(e));
		fputs(",\"rules\":{", f);
		for (size_t k = 0; k < REPORT_RULES && e->rules[k]; k++) {
			if (k)
				fputc(',', f);
			out_json_cstr(f, e->rules[k]);
			fprintf(f, ":%zu", e->rule_counts[k]);
		}
		fputs("}}", f);
	}
	fputs("],\"unmapped\":[", f);
	for (size_t i = 0; i < n_unm; i++) {
		fputs(i ? ",{\"key\":" : "{\"key\":", f);
		out_json_cstr(f, unmapped[i]->key);
		fprintf(f, ",\"count\":%zu}", unmapped[i]->count);
	}
	fputs("],\"routes\":{", f);
	for (size_t i = 0; i < rp->routes.n; i++) {
		if (i)
			fputc(',', f);
		out_json_cstr(f, rp->routes.v[i].key);
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

/* How several report files are named in the summary. */
static const char *reports_name(int n)
{
	static char name[32];

	snprintf(name, sizeof(name), "%d files", n);
	return name;
}

int cmd_report(int argc, char **argv)
{
	static const struct option opts[] = {
		OUT_OPTION_JSON,
		{ "top", required_argument, NULL, 't' },
		OUT_OPTIONS_STYLE,
	};
	const char *when = NULL, *path = "-";
	int json = 0, c, rc = 2, rd = 0;
	long top = 10;
	long long num;
	struct out_style st;
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
	if ((c = out_style_stdout(&st, "report", when)) != 0)
		return c;
	if (argc - optind < 1)
		return cli_usage("report", "%s", "give at least one report FILE");
	/* every file opens before anything is read: a typo fails at once */
	for (int i = optind; i < argc; i++) {
		if (strcmp(argv[i], "-") == 0)
			continue;
		f = fopen(argv[i], "rb");
		if (!f) {
			fprintf(stderr, "webhook-bridge report: %s: %s\n", argv[i],
				strerror(errno));
			return 2;
		}
		fclose(f);
	}
	out_style_begin(&st, json, outbuf, sizeof(outbuf));
	memset(&rp, 0, sizeof(rp));
	/* several files (one per bridge) are one report */
	for (int i = optind; i < argc; i++) {
		size_t file_line = 0;

		path = argv[i];
		f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
		if (!f) {
			fprintf(stderr, "webhook-bridge report: %s: %s\n", path, strerror(errno));
			goto out;
		}
		while ((rd = read_line(f, &line, &cap, REPORT_LINE_MAX, &len, &too_long)) == 1) {
			const char *why = NULL;
			size_t k = 0;

			rp.lines++;
			file_line++;
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
						out_display_name(path), file_line, why);
			}
		}
		if (f != stdin)
			fclose(f);
		if (rd < 0) {
			fprintf(stderr, "webhook-bridge report: %s: read error\n",
				out_display_name(path));
			goto out;
		}
	}
	if (argc - optind > 1)
		path = reports_name(argc - optind);
	if (rp.oom || !(paths = ctable_sorted(&rp.paths)) ||
	    !(unmapped = ctable_sorted(&rp.unmapped))) {
		fprintf(stderr, "webhook-bridge report: out of memory\n");
		goto out;
	}
	if (json)
		report_json(st.out, out_display_name(path), &rp, paths, unmapped, (size_t)top);
	else
		report_text(&st, out_display_name(path), &rp, paths, unmapped, (size_t)top);
	if (rp.invalid_lines > 10)
		fprintf(stderr, "webhook-bridge report: %zu malformed lines in all\n",
			rp.invalid_lines);
	rc = rp.invalid_lines ? 2 : rp.different ? 1 : 0;
out:
	out_style_finish(&st);
	fflush(stdout);
	free(paths);
	free(unmapped);
	free(line);
	ctable_free(&rp.paths);
	ctable_free(&rp.unmapped);
	ctable_free(&rp.routes);
	return rc;
}
