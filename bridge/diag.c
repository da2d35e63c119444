#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/buf.h"
#include "bridge/diag.h"
#include "bridge/utf8.h"

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

size_t diag_quote(char *dst, size_t cap, const char *s, size_t n, size_t max, char quote)
{
	static const char ellipsis[] = "\xE2\x80\xA6"; /* U+2026 */
	const unsigned char *u = (const unsigned char *)s;
	size_t i = 0, o = 0;

	if (!cap)
		return 0;
	if (max > cap - 1)
		max = cap - 1;
	while (i < n) {
		char tmp[8];
		size_t k = utf8_decode(u + i, n - i, NULL), tl;

		if (k == 1 && (u[i] == '\\' || (quote && u[i] == (unsigned char)quote)))
			tl = (size_t)snprintf(tmp, sizeof(tmp), "\\%c", u[i]);
		else if (k == 1 && (u[i] == '\n' || u[i] == '\r' || u[i] == '\t'))
			tl = (size_t)snprintf(tmp, sizeof(tmp), "\\%c",
					      u[i] == '\n'   ? 'n'
					      : u[i] == '\r' ? 'r'
							     : 't');
		else if (k == 1 && (u[i] < 0x20 || u[i] == 0x7F))
			tl = (size_t)snprintf(tmp, sizeof(tmp), "\\u%04x", u[i]);
		else if (k == 0) {
			tl = (size_t)snprintf(tmp, sizeof(tmp), "\\x%02x", u[i]);
			k = 1;
		} else {
			memcpy(tmp, s + i, k);
			tl = k;
		}
		/* Keep room for the ellipsis unless this is the last character. */
		if (o + tl + (i + k < n ? sizeof(ellipsis) - 1 : 0) > max) {
			if (o + sizeof(ellipsis) - 1 <= max) {
				memcpy(dst + o, ellipsis, sizeof(ellipsis) - 1);
				o += sizeof(ellipsis) - 1;
			}
			break;
		}
		memcpy(dst + o, tmp, tl);
		o += tl;
		i += k;
	}
	dst[o] = '\0';
	return o;
}

static int diag_reserve(struct diag *d, size_t need)
{
	char *t = grow_array(d->text, &d->cap, need, 1, 256);

	if (!t)
		return -1;
	d->text = t;
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

int diag_edit_distance(const char *a, size_t na, const char *b, size_t nb)
{
	int rows[3][64]; /* row i of the table is rows[(i + 1) % 3] */

	if (na >= 63 || nb >= 63)
		return 9;
	for (size_t j = 0; j <= nb; j++)
		rows[1][j] = (int)j;
	for (size_t i = 1; i <= na; i++) {
		int *two = rows[(i + 2) % 3], *prev = rows[i % 3], *row = rows[(i + 1) % 3];

		row[0] = (int)i;
		for (size_t j = 1; j <= nb; j++) {
			int best = prev[j - 1] + (a[i - 1] != b[j - 1]);

			if (prev[j] + 1 < best)
				best = prev[j] + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
			    two[j - 2] + 1 < best)
				best = two[j - 2] + 1;
			row[j] = best;
		}
	}
	return rows[(na + 1) % 3][nb];
}
