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

size_t diag_utf8_len(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	unsigned char lo = 0x80, hi = 0xBF;
	size_t need, i;

	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		need = 1;
	else if (c >= 0xE0 && c <= 0xEF) {
		need = 2;
		if (c == 0xE0)
			lo = 0xA0;
		else if (c == 0xED)
			hi = 0x9F;
	} else if (c >= 0xF0 && c <= 0xF4) {
		need = 3;
		if (c == 0xF0)
			lo = 0x90;
		else if (c == 0xF4)
			hi = 0x8F;
	} else
		return 0;
	if (n < need + 1)
		return 0;
	if (s[1] < lo || s[1] > hi)
		return 0;
	for (i = 2; i <= need; i++)
		if (s[i] < 0x80 || s[i] > 0xBF)
			return 0;
	return need + 1;
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
		size_t k = diag_utf8_len(u + i, n - i), tl;

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
