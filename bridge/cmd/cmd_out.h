/*
 * What the diff and report commands print with: colour and a terminal's
 * width (struct out_style), cells and padding, JSON members on a FILE, and
 * the string-keyed index of their counting tables.  Private to diff.c and
 * report.c.
 */
#ifndef BRIDGE_CMD_OUT_H
#define BRIDGE_CMD_OUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "bridge/mapping.h"

struct out_style {
	bool color;
	FILE *out;
	/* text on a terminal: its width (TIOCGWINSZ), and the text gathered in
	 * out (a memory stream) to be cut to it line by line; 0: as written */
	size_t columns;
	FILE *term;
	char *buf;
	size_t len;
};

enum out_color { C_RESET, C_BOLD, C_DIM, C_RED, C_GREEN, C_YELLOW, C_CYAN };

/* The options diff and report share, for their struct option tables (in
 * the order the "did you mean" hint walks): --json ('j'); and closing the
 * table, --color / --colour WHEN ('c'), --no-color ('C') and --help ('h'). */
/* clang-format off */
#define OUT_OPTION_JSON { "json", no_argument, NULL, 'j' }
#define OUT_OPTIONS_STYLE                            \
	{ "color", required_argument, NULL, 'c' },   \
	{ "colour", required_argument, NULL, 'c' },  \
	{ "no-color", no_argument, NULL, 'C' },      \
	{ "help", no_argument, NULL, 'h' },          \
	{ NULL, 0, NULL, 0 }
/* clang-format on */

void out_color(const struct out_style *st, enum out_color c);
int out_style_init(struct out_style *st, const char *when, FILE *out);
/* out_style_init on stdout for the command cmd: 0, or, for a WHEN other
 * than auto, always or never, the usage error's exit status (2). */
int out_style_stdout(struct out_style *st, const char *cmd, const char *when);
/* stdout fully buffered in buf[size], and text (not json) for a terminal
 * gathered to be cut to its width by out_style_finish. */
void out_style_begin(struct out_style *st, bool json, char *buf, size_t size);
void out_style_fit_terminal(struct out_style *st);
void out_style_finish(struct out_style *st);
size_t out_print_safe(FILE *f, const char *s, size_t n, size_t max);
size_t out_print_str(FILE *f, const char *s, size_t max);
void out_pad(FILE *f, size_t used, size_t width);
size_t out_text_width(const char *s, size_t max);
void out_cell(FILE *f, const char *s, size_t width);
void out_cell_tail(FILE *f, const char *s, size_t width);
void out_json_cstr(FILE *f, const char *s);
void out_json_member(FILE *f, const char *name, const char *value);
const char *out_policy_name(enum mapping_unmapped p);
const char *out_display_name(const char *path);
uint64_t out_hash_str(const char *s);
/* The string index of the diff and report tables: open addressing over the
 * keys of elements 0..n-1 of a table (key_at gives the key of element i),
 * slot = index + 1.  out_index_find: the element whose key is key, or -1;
 * out_index_add: index element i, whose key is set (growing the slots). */
long out_index_find(const size_t *slots, size_t n_slots, const char *key,
		    const char *(*key_at)(const void *v, size_t i), const void *v);
int out_index_add(size_t **slots_io, size_t *n_slots_io, size_t i,
		  const char *(*key_at)(const void *v, size_t i), const void *v);
/* Rebuild an open-addressing index of n string keys (slot = index + 1) at
 * twice its size. */
int out_index_grow(size_t **slots_io, size_t *n_slots_io, size_t n,
		   const char *(*key_at)(const void *v, size_t i), const void *v);

#endif
