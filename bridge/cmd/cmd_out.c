/* The output helpers of the diff and report commands (see cmd_out.h). */
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

/* ------------------------------------------------------------------------ */
/* Output helpers */


static const char *const color_codes[] = {
	"\033[0m", "\033[1m", "\033[2m", "\033[31m", "\033[32m", "\033[33m", "\033[36m",
};

void out_color(const struct out_style *st, enum out_color c)
{
	if (st->color)
		fputs(color_codes[c], st->out);
}

int out_style_init(struct out_style *st, const char *when, FILE *out)
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

int out_style_stdout(struct out_style *st, const char *cmd, const char *when)
{
	if (out_style_init(st, when, stdout) < 0)
		return cli_usage(cmd, "--color must be auto, always or never, not '%s'", when);
	return 0;
}

void out_style_begin(struct out_style *st, bool json, char *buf, size_t size)
{
	setvbuf(stdout, buf, _IOFBF, size);
	if (!json)
		out_style_fit_terminal(st);
}

/* Text for a terminal is gathered, then each line cut to its width. */
void out_style_fit_terminal(struct out_style *st)
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

/* Write what out_style_fit_terminal gathered, every line at most the terminal's
 * width: a longer one ends in "..." (and a colour reset, its escapes kept
 * up to the cut). */
void out_style_finish(struct out_style *st)
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
size_t out_print_safe(FILE *f, const char *s, size_t n, size_t max)
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

size_t out_print_str(FILE *f, const char *s, size_t max)
{
	return s ? out_print_safe(f, s, strlen(s), max) : 0;
}

void out_pad(FILE *f, size_t used, size_t width)
{
	for (size_t i = used; i < width; i++)
		fputc(' ', f);
}

/* Width a string takes in out_print_safe (characters, control bytes as 4). */
size_t out_text_width(const char *s, size_t max)
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
void out_cell(FILE *f, const char *s, size_t width)
{
	size_t w = out_text_width(s, 0);

	out_pad(f, out_print_str(f, s, w > width ? width - 3 : 0), width + 2);
}

/* The same, cut at the front: "...o-v2.conf:55". */
void out_cell_tail(FILE *f, const char *s, size_t width)
{
	if (out_text_width(s, 0) <= width) {
		out_cell(f, s, width);
		return;
	}
	fputs("...", f);
	while (*s && out_text_width(s, 0) > width - 3)
		for (s++; ((unsigned char)*s & 0xc0) == 0x80; s++)
			;
	out_pad(f, out_print_str(f, s, 0) + 3, width + 2);
}

/* A JSON string on f: quote, backslash and control bytes escaped. */
static void json_string(FILE *f, const char *s, size_t n)
{
	json_fput_quoted(f, s, n, JSON_ESC_LOG);
}

void out_json_cstr(FILE *f, const char *s)
{
	if (s)
		json_string(f, s, strlen(s));
	else
		fputs("null", f);
}

/* ,"name":"value" (null when value is NULL). */
void out_json_member(FILE *f, const char *name, const char *value)
{
	fprintf(f, ",\"%s\":", name);
	out_json_cstr(f, value);
}

const char *out_policy_name(enum mapping_unmapped p)
{
	return p == MAPPING_UNMAPPED_DROP     ? "drop"
	       : p == MAPPING_UNMAPPED_REJECT ? "reject"
					      : "form";
}

const char *out_display_name(const char *path)
{
	return strcmp(path, "-") == 0 ? "<stdin>" : path;
}

uint64_t out_hash_str(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 1099511628211ull;
	return h;
}

/* Rebuild an open-addressing index of n string keys (slot = index + 1) at
 * twice its size; the tables below differ only in their element type. */
int out_index_grow(size_t **slots_io, size_t *n_slots_io, size_t n,
		   const char *(*key_at)(const void *v, size_t i), const void *v)
{
	size_t n_slots = *n_slots_io ? *n_slots_io * 2 : 64;
	size_t *slots = calloc(n_slots, sizeof(*slots));

	if (!slots)
		return -1;
	for (size_t i = 0; i < n; i++) {
		size_t h = (size_t)out_hash_str(key_at(v, i)) & (n_slots - 1);

		while (slots[h])
			h = (h + 1) & (n_slots - 1);
		slots[h] = i + 1;
	}
	free(*slots_io);
	*slots_io = slots;
	*n_slots_io = n_slots;
	return 0;
}

long out_index_find(const size_t *slots, size_t n_slots, const char *key,
		    const char *(*key_at)(const void *v, size_t i), const void *v)
{
	if (!n_slots)
		return -1;
	for (size_t h = (size_t)out_hash_str(key) & (n_slots - 1); slots[h];
	     h = (h + 1) & (n_slots - 1))
		if (strcmp(key_at(v, slots[h] - 1), key) == 0)
			return (long)(slots[h] - 1);
	return -1;
}

int out_index_add(size_t **slots_io, size_t *n_slots_io, size_t i,
		  const char *(*key_at)(const void *v, size_t i), const void *v)
{
	size_t h, n_slots;

	if ((i + 1) * 2 > *n_slots_io) /* keep the load at most 1/2 */
		return out_index_grow(slots_io, n_slots_io, i + 1, key_at, v);
	n_slots = *n_slots_io;
	for (h = (size_t)out_hash_str(key_at(v, i)) & (n_slots - 1); (*slots_io)[h];
	     h = (h + 1) & (n_slots - 1))
		;
	(*slots_io)[h] = i + 1;
	return 0;
}
