#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/diag.h"

void bridge_error_clear(struct bridge_error *e)
{
	if (!e)
		return;
	e->message[0] = '\0';
	e->offset = -1;
	e->file = NULL;
	e->line = 0;
	e->key[0] = '\0';
}

int bridge_error_set(struct bridge_error *e, const char *fmt, ...)
{
	va_list ap;

	if (!e)
		return -1;
	va_start(ap, fmt);
	vsnprintf(e->message, sizeof(e->message), fmt, ap);
	va_end(ap);
	return -1;
}

/* One diagnostic is one line, whatever the quoted input held: control
 * characters become \n, \t or \xNN (in place, cut to fit). */
static void escape_controls(char *msg, size_t cap)
{
	char out[1024];
	size_t o = 0;

	for (const unsigned char *p = (const unsigned char *)msg; *p && o + 5 < sizeof(out); p++) {
		if (*p == '\n') {
			out[o++] = '\\';
			out[o++] = 'n';
		} else if (*p == '\t') {
			out[o++] = '\\';
			out[o++] = 't';
		} else if (*p < 0x20 || *p == 0x7f) {
			o += (size_t)snprintf(out + o, sizeof(out) - o, "\\x%02x", *p);
		} else {
			out[o++] = (char)*p;
		}
	}
	out[o] = '\0';
	snprintf(msg, cap, "%s", out);
}

static int diag_reserve(struct diag *d, size_t need)
{
	size_t cap = d->cap ? d->cap : 256;
	char *t;

	if (need <= d->cap)
		return 0;
	while (cap < need)
		cap *= 2;
	t = realloc(d->text, cap);
	if (!t)
		return -1;
	d->text = t;
	d->cap = cap;
	return 0;
}

void diag_merge(struct diag *d, const struct diag *from)
{
	d->count += from->count;
	if (!from->len || diag_reserve(d, d->len + from->len + 1) < 0)
		return;
	memcpy(d->text + d->len, from->text, from->len + 1);
	d->len += from->len;
}

int diag_add(struct diag *d, const char *file, int line, const char *fmt, ...)
{
	char msg[1024];
	char head[512];
	va_list ap;
	size_t need;
	int hn;

	d->count++;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	escape_controls(msg, sizeof(msg));
	if (line > 0)
		hn = snprintf(head, sizeof(head), "%s:%d: ", file ? file : "<input>", line);
	else
		hn = snprintf(head, sizeof(head), "%s: ", file ? file : "<input>");
	if (hn < 0)
		return -1;
	if ((size_t)hn >= sizeof(head))
		hn = sizeof(head) - 1;
	need = d->len + (size_t)hn + strlen(msg) + 2;
	if (diag_reserve(d, need) < 0)
		return -1;
	d->len += (size_t)sprintf(d->text + d->len, "%s%s\n", head, msg);
	return -1;
}

void diag_reset(struct diag *d)
{
	free(d->text);
	memset(d, 0, sizeof(*d));
}
