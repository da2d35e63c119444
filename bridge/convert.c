/*
 * convert: value conversions used by mapping rules.
 *
 * Time zones are read from the TZif files of the system's tz database
 * (RFC 8536) into an immutable struct, and local times are resolved against
 * that struct only.  This keeps conversions free of process state: the
 * alternative (setenv("TZ") + tzset() + localtime_r under a mutex) still
 * races with getenv() and localtime() calls made by any other thread, and
 * glibc silently falls back to UTC for a zone it cannot read.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bridge/convert.h"

#define SECS_PER_DAY 86400

/* Printable ASCII, bounded rendering of peer text for messages (whatever
 * the input, the message stays valid UTF-8 for the JSON log). */
static void text_render(char *dst, size_t cap, const char *s, size_t n)
{
	diag_quote(dst, cap, s, n, 64, '"');
}

/* The input (text, len) rendered into the caller's shown[], only once a
 * message needs it: a successful conversion never pays for it. */
#define SHOWN (text_render(shown, sizeof(shown), text, len), shown)

static int fail(struct bridge_error *err, long offset, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int fail(struct bridge_error *err, long offset, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return -1;
	va_start(ap, fmt);
	vsnprintf(err->message, sizeof(err->message), fmt, ap);
	va_end(ap);
	err->offset = offset;
	return -1;
}

/* The JSON whitespace set: a form feed or vertical tab around a number is
 * content, not padding, so "\f42" is not an integer. */
static int is_space(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

static int is_digit(char ch)
{
	return ch >= '0' && ch <= '9';
}

/* ------------------------------------------------------------------------ */
/* Integers */

int convert_integer(const char *text, size_t len, char *ret, size_t cap, struct bridge_error *err)
{
	static const char max_neg[] = "9223372036854775808";  /* 2^63 */
	static const char max_pos[] = "18446744073709551615"; /* 2^64 - 1 */
	char shown[96];
	size_t b = 0, e = len, i, first, n;
	int neg = 0;
	const char *limit;

	if (cap)
		ret[0] = '\0';
	while (b < e && is_space(text[b]))
		b++;
	while (e > b && is_space(text[e - 1]))
		e--;
	if (b == e)
		return fail(err, (long)b, "not an integer: empty value \"%s\"", SHOWN);
	if (text[b] == '-' || text[b] == '+') {
		neg = text[b] == '-';
		b++;
	}
	if (b == e)
		return fail(err, (long)b, "not an integer: \"%s\" has no digits", SHOWN);
	for (i = b; i < e; i++) {
		if (is_digit(text[i]))
			continue;
		if (text[i] == '.' || text[i] == 'e' || text[i] == 'E')
			return fail(err, (long)i,
				    "not an integer: \"%s\" (fractions and exponents are not "
				    "allowed, byte %zu)",
				    SHOWN, i);
		return fail(err, (long)i,
			    "not an integer: \"%s\" (unexpected character at byte %zu)", SHOWN, i);
	}
	first = b;
	while (first + 1 < e && text[first] == '0')
		first++;
	n = e - first;
	if (n == 1 && text[first] == '0')
		neg = 0;
	limit = neg ? max_neg : max_pos;
	if (n > strlen(limit) || (n == strlen(limit) && memcmp(text + first, limit, n) > 0))
		return fail(
			err, (long)b,
			"integer out of range [-9223372036854775808, 18446744073709551615]: \"%s\"",
			SHOWN);
	if (cap < n + (size_t)neg + 1)
		return fail(err, -1, "integer output buffer too small");
	i = 0;
	if (neg)
		ret[i++] = '-';
	memcpy(ret + i, text + first, n);
	ret[i + n] = '\0';
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Case */

void convert_upper(const char *text, size_t len, char *ret)
{
	size_t i;

	for (i = 0; i < len; i++)
		ret[i] = text[i] >= 'a' && text[i] <= 'z' ? (char)(text[i] - 'a' + 'A') : text[i];
	ret[len] = '\0';
}

void convert_lower(const char *text, size_t len, char *ret)
{
	size_t i;

	for (i = 0; i < len; i++)
		ret[i] = text[i] >= 'A' && text[i] <= 'Z' ? (char)(text[i] - 'A' + 'a') : text[i];
	ret[len] = '\0';
}

/* ------------------------------------------------------------------------ */
/* Calendar arithmetic (proleptic Gregorian, days relative to 1970-01-01). */

static int is_leap(int64_t y)
{
	return y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
}

static int days_in_month(int64_t y, int m)
{
	static const int dim[12] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };

	return m == 2 && is_leap(y) ? 29 : dim[m - 1];
}

/* H. Hinnant's days_from_civil / civil_from_days. */
static int64_t days_from_civil(int64_t y, int m, int d)
{
	int64_t era, yoe, doy, doe;

	y -= m <= 2;
	era = (y >= 0 ? y : y - 399) / 400;
	yoe = y - era * 400;
	doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, int *m, int *d)
{
	int64_t era, doe, yoe, doy, mp;

	z += 719468;
	era = (z >= 0 ? z : z - 146096) / 146097;
	doe = z - era * 146097;
	yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	mp = (5 * doy + 2) / 153;
	*d = (int)(doy - (153 * mp + 2) / 5 + 1);
	*m = (int)(mp < 10 ? mp + 3 : mp - 9);
	*y = yoe + era * 400 + (*m <= 2);
}

static int64_t floor_div(int64_t a, int64_t b)
{
	return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

/* ------------------------------------------------------------------------ */
/* Time zones */

/* One date of a POSIX TZ rule ("M3.5.0/3", "J60", "59/-1"). */
struct tz_date {
	char kind;    /* 'J' (1-365, no Feb 29), 'D' (0-365), 'M' (month.week.weekday) */
	int n;        /* day for J/D; month for M */
	int week;     /* M: 1-5, 5 = last */
	int wday;     /* M: 0 = Sunday */
	int32_t secs; /* local time of day of the change, may be < 0 or > 24 h */
};

/* The TZ string footer of a TZif v2+ file: local time after the last transition. */
struct tz_rule {
	int present;
	int has_dst;
	int32_t std_off; /* seconds east of UTC */
	int32_t dst_off;
	struct tz_date start, end;
};

struct tz_zone {
	char *name;
	size_t n_trans;
	int64_t *trans;     /* UTC seconds, strictly increasing */
	unsigned char *idx; /* type of each transition */
	size_t n_types;
	int32_t *utoff; /* per type, seconds east of UTC */
	struct tz_rule rule;
};

void tz_zone_free(struct tz_zone *z)
{
	if (!z)
		return;
	free(z->name);
	free(z->trans);
	free(z->idx);
	free(z->utoff);
	free(z);
}

const char *tz_zone_name(const struct tz_zone *z)
{
	return z ? z->name : NULL;
}

/* [+-]hh[:mm[:ss]]; hours up to 167 (RFC 8536 extension for rule times). */
static const char *tz_parse_hms(const char *p, int32_t *ret)
{
	int sign = 1, h = 0, mi = 0, s = 0, nd = 0;

	if (*p == '+' || *p == '-')
		sign = *p++ == '-' ? -1 : 1;
	while (is_digit(*p) && nd < 3) {
		h = h * 10 + (*p++ - '0');
		nd++;
	}
	if (!nd || h > 167)
		return NULL;
	if (*p == ':') {
		p++;
		if (!is_digit(p[0]) || !is_digit(p[1]))
			return NULL;
		mi = (p[0] - '0') * 10 + (p[1] - '0');
		p += 2;
		if (*p == ':') {
			p++;
			if (!is_digit(p[0]) || !is_digit(p[1]))
				return NULL;
			s = (p[0] - '0') * 10 + (p[1] - '0');
			p += 2;
		}
	}
	if (mi > 59 || s > 59)
		return NULL;
	*ret = sign * (h * 3600 + mi * 60 + s);
	return p;
}

static const char *tz_parse_name(const char *p)
{
	const char *b = p;

	if (*p == '<') {
		while (*++p && *p != '>')
			if (!(is_digit(*p) || (*p >= 'A' && *p <= 'Z') ||
			      (*p >= 'a' && *p <= 'z') || *p == '+' || *p == '-'))
				return NULL;
		return *p == '>' && p - b >= 4 ? p + 1 : NULL;
	}
	while ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z'))
		p++;
	return p - b >= 3 ? p : NULL;
}

static const char *tz_parse_int(const char *p, int lo, int hi, int *ret)
{
	int v = 0, nd = 0;

	while (is_digit(*p) && nd < 4) {
		v = v * 10 + (*p++ - '0');
		nd++;
	}
	if (!nd || v < lo || v > hi)
		return NULL;
	*ret = v;
	return p;
}

static const char *tz_parse_date(const char *p, struct tz_date *d)
{
	memset(d, 0, sizeof(*d));
	if (*p == 'J') {
		d->kind = 'J';
		p = tz_parse_int(p + 1, 1, 365, &d->n);
	} else if (*p == 'M') {
		d->kind = 'M';
		p = tz_parse_int(p + 1, 1, 12, &d->n);
		if (!p || *p++ != '.' || !(p = tz_parse_int(p, 1, 5, &d->week)) || *p++ != '.')
			return NULL;
		p = tz_parse_int(p, 0, 6, &d->wday);
	} else {
		d->kind = 'D';
		p = tz_parse_int(p, 0, 365, &d->n);
	}
	if (!p)
		return NULL;
	d->secs = 2 * 3600;
	if (*p == '/')
		p = tz_parse_hms(p + 1, &d->secs);
	return p;
}

/* POSIX TZ string, e.g. "CET-1CEST,M3.5.0,M10.5.0/3" (offsets are west-positive). */
static int tz_parse_rule(const char *s, struct tz_rule *r)
{
	const char *p = s;
	int32_t off;

	memset(r, 0, sizeof(*r));
	if (!*p)
		return 0; /* empty footer: the last transition's type stays in force */
	if (!(p = tz_parse_name(p)) || !(p = tz_parse_hms(p, &off)))
		return -1;
	r->present = 1;
	r->std_off = -off;
	r->dst_off = r->std_off;
	if (!*p)
		return 0;
	if (!(p = tz_parse_name(p)))
		return -1;
	r->has_dst = 1;
	r->dst_off = r->std_off + 3600;
	if (*p && *p != ',') {
		if (!(p = tz_parse_hms(p, &off)))
			return -1;
		r->dst_off = -off;
	}
	if (!*p) {
		/* POSIX leaves this to the implementation; glibc uses US rules */
		p = ",M3.2.0,M11.1.0";
	}
	if (*p++ != ',' || !(p = tz_parse_date(p, &r->start)) || *p++ != ',' ||
	    !(p = tz_parse_date(p, &r->end)) || *p)
		return -1;
	return 0;
}

/* UTC time of a rule date in year y; off = offset in force before the change. */
static int64_t tz_date_utc(const struct tz_date *d, int64_t y, int32_t off)
{
	int64_t day;

	if (d->kind == 'J')
		day = days_from_civil(y, 1, 1) + d->n - 1 + (is_leap(y) && d->n >= 60);
	else if (d->kind == 'D')
		day = days_from_civil(y, 1, 1) + d->n;
	else {
		int64_t first = days_from_civil(y, d->n, 1);
		int wd_first = (int)((first % 7 + 7 + 4) % 7); /* 1970-01-01 was a Thursday */
		int dom = (d->wday - wd_first + 7) % 7, w;

		for (w = 1; w < d->week && dom + 7 < days_in_month(y, d->n); w++)
			dom += 7;
		day = first + dom;
	}
	return day * SECS_PER_DAY + d->secs - off;
}

/* Same year choice and comparison as glibc's __tz_compute, so results agree
 * with localtime() for every instant. */
static int32_t tz_rule_offset(const struct tz_rule *r, int64_t t)
{
	int64_t y, start, end;
	int m, d, dst;

	if (!r->has_dst)
		return r->std_off;
	civil_from_days(floor_div(t, SECS_PER_DAY), &y, &m, &d);
	start = tz_date_utc(&r->start, y, r->std_off);
	end = tz_date_utc(&r->end, y, r->dst_off);
	if (start > end)
		dst = t < end || t >= start;
	else
		dst = t >= start && t < end;
	return dst ? r->dst_off : r->std_off;
}

/* The last transition at or before t (trans[0] <= t). */
static size_t tz_index(const struct tz_zone *z, int64_t t)
{
	size_t lo = 0, hi = z->n_trans;

	while (hi - lo > 1) { /* invariant: trans[lo] <= t < trans[hi] */
		size_t mid = lo + (hi - lo) / 2;

		if (z->trans[mid] <= t)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

/* Offset (seconds east of UTC) in force at UTC instant t. */
static int32_t tz_offset_at(const struct tz_zone *z, int64_t t)
{
	if (z->n_trans == 0)
		return z->rule.present ? tz_rule_offset(&z->rule, t) : z->utoff[0];
	if (t < z->trans[0])
		return z->utoff[0];
	if (t >= z->trans[z->n_trans - 1] && z->rule.present)
		return tz_rule_offset(&z->rule, t);
	return z->utoff[z->idx[tz_index(z, t)]];
}

/* The offset of local time t0 when every instant tz_resolve looks at (a day
 * either side, and t0 less the offset) lies between the same two
 * transitions of the table: the one answer there is, found with one search.
 * false near a transition or outside the table. */
static bool tz_quiet(const struct tz_zone *z, int64_t t0, int32_t *ret)
{
	size_t i;
	int32_t off;

	if (z->n_trans < 2 || t0 < z->trans[0] || t0 >= z->trans[z->n_trans - 1])
		return false;
	i = tz_index(z, t0);
	off = z->utoff[z->idx[i]];
	if (t0 - SECS_PER_DAY < z->trans[i] || t0 - off < z->trans[i] ||
	    t0 + SECS_PER_DAY >= z->trans[i + 1] || t0 - off >= z->trans[i + 1])
		return false;
	*ret = off;
	return true;
}

static uint32_t be32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static int64_t be64(const unsigned char *p)
{
	return (int64_t)((uint64_t)be32(p) << 32 | be32(p + 4));
}

#define TZIF_MAX_SIZE (256 * 1024)
#define TZIF_HEADER   44

struct tzif_counts {
	uint32_t isut, isstd, leap, time, type, chars;
};

static int tzif_counts(const unsigned char *p, size_t n, int time_size, struct tzif_counts *c,
		       size_t *block)
{
	if (n < TZIF_HEADER || memcmp(p, "TZif", 4) != 0)
		return -1;
	c->isut = be32(p + 20);
	c->isstd = be32(p + 24);
	c->leap = be32(p + 28);
	c->time = be32(p + 32);
	c->type = be32(p + 36);
	c->chars = be32(p + 40);
	if (c->type == 0 || c->type > 256 || c->time > 100000 || c->chars > 100000 ||
	    c->leap > 100000 || (c->isut && c->isut != c->type) ||
	    (c->isstd && c->isstd != c->type))
		return -1;
	*block = (size_t)c->time * (size_t)time_size + c->time + (size_t)c->type * 6 + c->chars +
		 (size_t)c->leap * (size_t)(time_size + 4) + c->isstd + c->isut;
	return n - TZIF_HEADER < *block ? -1 : 0;
}

/* Parses the TZif image buf[0..n) into z; returns a reason on failure. */
static const char *tzif_parse(const unsigned char *buf, size_t n, struct tz_zone *z)
{
	struct tzif_counts c;
	const unsigned char *p = buf, *end = buf + n;
	int time_size = 4;
	size_t block, i;
	char footer[128];

	if (tzif_counts(p, n, 4, &c, &block) < 0)
		return "not a valid TZif file";
	if (buf[4] >= '2') {
		/* skip the 32-bit block, use the 64-bit one and its footer */
		p += TZIF_HEADER + block;
		n -= TZIF_HEADER + block;
		time_size = 8;
		if (tzif_counts(p, n, 8, &c, &block) < 0)
			return "not a valid TZif file (version 2 data)";
	}
	if (c.leap)
		return "zones with leap seconds are not supported";
	z->n_trans = c.time;
	z->n_types = c.type;
	z->trans = calloc(c.time ? c.time : 1, sizeof(*z->trans));
	z->idx = calloc(c.time ? c.time : 1, 1);
	z->utoff = calloc(c.type, sizeof(*z->utoff));
	if (!z->trans || !z->idx || !z->utoff)
		return "out of memory";
	p += TZIF_HEADER;
	for (i = 0; i < c.time; i++) {
		z->trans[i] = time_size == 8 ? be64(p + i * 8) : (int32_t)be32(p + i * 4);
		if (i && z->trans[i] <= z->trans[i - 1])
			return "transition times not increasing";
	}
	p += (size_t)c.time * (size_t)time_size;
	for (i = 0; i < c.time; i++) {
		z->idx[i] = p[i];
		if (p[i] >= c.type)
			return "transition type out of range";
	}
	p += c.time;
	for (i = 0; i < c.type; i++) {
		int32_t off = (int32_t)be32(p + i * 6);

		if (off < -89999 || off > 93599)
			return "UT offset out of range";
		z->utoff[i] = off;
	}
	p += (size_t)c.type * 6 + c.chars + (size_t)c.leap * (size_t)(time_size + 4) + c.isstd +
	     c.isut;
	if (time_size == 8) {
		const unsigned char *nl;
		size_t fl;

		if (p >= end || *p != '\n')
			return "missing TZ string footer";
		nl = memchr(p + 1, '\n', (size_t)(end - p - 1));
		if (!nl)
			return "unterminated TZ string footer";
		fl = (size_t)(nl - p - 1);
		if (fl >= sizeof(footer))
			return "TZ string footer too long";
		memcpy(footer, p + 1, fl);
		footer[fl] = '\0';
		if (tz_parse_rule(footer, &z->rule) < 0)
			return "unsupported TZ string footer";
	}
	return NULL;
}

static int tz_name_valid(const char *name)
{
	const char *p, *comp = name;

	if (!*name || strlen(name) > 255 || name[0] == '/' || strstr(name, ".."))
		return 0;
	for (p = name;; p++) {
		if (*p == '/' || !*p) {
			if (p == comp || *comp == '.')
				return 0; /* empty, "." or hidden component */
			if (!*p)
				return 1;
			comp = p + 1;
			continue;
		}
		if (!(is_digit(*p) || (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
		      *p == '_' || *p == '-' || *p == '+' || *p == '.'))
			return 0;
	}
}

static int tz_read_file(const char *path, unsigned char **ret, size_t *ret_len, const char **why)
{
	struct stat st;
	unsigned char *buf = NULL;
	size_t n = 0;
	int fd;

	*ret = NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		*why = errno == ENOENT || errno == ENOTDIR ? "no such zone"
		       : errno == EACCES                   ? "permission denied"
							   : "cannot open the zone file";
		return -1;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		*why = "not a zone file";
		goto fail;
	}
	if (st.st_size > TZIF_MAX_SIZE) {
		*why = "zone file too large";
		goto fail;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		*why = "out of memory";
		goto fail;
	}
	while (n < (size_t)st.st_size) {
		ssize_t r = read(fd, buf + n, (size_t)st.st_size - n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			*why = "cannot read zone file";
			goto fail;
		}
		n += (size_t)r;
	}
	close(fd);
	*ret = buf;
	*ret_len = n;
	return 0;
fail:
	free(buf);
	close(fd);
	return -1;
}

int tz_zone_load(const char *name, struct tz_zone **ret, struct bridge_error *err)
{
	const char *dir = getenv("TZDIR");
	char shown[96], path[4096];
	unsigned char *buf = NULL;
	struct tz_zone *z;
	const char *why;
	size_t n;

	*ret = NULL;
	if (!name)
		name = "";
	text_render(shown, sizeof(shown), name, strlen(name));
	if (!tz_name_valid(name))
		return fail(err, -1,
			    "invalid time zone name \"%s\" (expected an IANA name such as "
			    "Europe/Brussels)",
			    shown);
	if (!dir || !*dir)
		dir = "/usr/share/zoneinfo";
	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path))
		return fail(err, -1, "time zone \"%s\": path too long", shown);
	if (tz_read_file(path, &buf, &n, &why) < 0)
		return fail(err, -1, "unknown time zone \"%s\": %s in the tz database", shown, why);
	if (n < 4 || memcmp(buf, "TZif", 4) != 0) {
		free(buf);
		return fail(err, -1, "unknown time zone \"%s\": not a TZif file", shown);
	}
	z = calloc(1, sizeof(*z));
	if (!z || !(z->name = strdup(name))) {
		free(z);
		free(buf);
		return fail(err, -1, "out of memory loading time zone \"%s\"", shown);
	}
	why = tzif_parse(buf, n, z);
	free(buf);
	if (why) {
		tz_zone_free(z);
		return fail(err, -1, "time zone \"%s\": %s", shown, why);
	}
	*ret = z;
	return 0;
}

/* ------------------------------------------------------------------------ */
/* Datetimes */

static int digits(const char *s, size_t n, int *ret)
{
	int v = 0;
	size_t i;

	for (i = 0; i < n; i++) {
		if (!is_digit(s[i]))
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	*ret = v;
	return 0;
}

static void offset_format(char *dst, size_t cap, int32_t off)
{
	int32_t a = off < 0 ? -off : off;

	if (a % 60)
		snprintf(dst, cap, "%c%02d:%02d:%02d", off < 0 ? '-' : '+', (int)(a / 3600),
			 (int)(a / 60 % 60), (int)(a % 60));
	else
		snprintf(dst, cap, "%c%02d:%02d", off < 0 ? '-' : '+', (int)(a / 3600),
			 (int)(a / 60 % 60));
}

/*
 * Local wall time t0 (seconds as if UTC) in zone z -> UTC.  Every offset in
 * force within a day of t0 is a candidate; off is a solution when the zone
 * really has offset off at t0 - off.  No solution = gap, two = ambiguous.
 */
static int tz_resolve(const struct tz_zone *z, int64_t t0, enum dt_ambiguous amb, enum dt_gap gap,
		      const char *text, size_t len, int64_t *ret, struct bridge_error *err)
{
	char shown[96];
	int32_t cand[3] = { 0 }, sol[3] = { 0 };
	size_t nc = 0, ns = 0, i, j;
	int64_t probe[3] = { t0 - SECS_PER_DAY, t0, t0 + SECS_PER_DAY };
	char a[16], b[16];

	if (tz_quiet(z, t0, &sol[0])) {
		*ret = t0 - sol[0];
		return 0;
	}
	for (i = 0; i < 3; i++) {
		int32_t off = tz_offset_at(z, probe[i]);

		for (j = 0; j < nc && cand[j] != off; j++)
			;
		if (j == nc)
			cand[nc++] = off;
	}
	for (i = 0; i < nc; i++)
		if (tz_offset_at(z, t0 - cand[i]) == cand[i])
			sol[ns++] = cand[i];
	if (ns == 0) {
		if (gap == DT_GAP_SHIFT) {
			*ret = t0 - tz_offset_at(z, t0 - SECS_PER_DAY);
			return 0;
		}
		return fail(err, -1,
			    "local time \"%s\" does not exist in %s (skipped by a clock change)",
			    SHOWN, z->name);
	}
	if (ns == 1) {
		*ret = t0 - sol[0];
		return 0;
	}
	/* earlier instant = larger offset */
	for (i = 1, j = 0; i < ns; i++)
		if (sol[i] > sol[j])
			j = i;
	if (amb == DT_AMBIGUOUS_EARLIER) {
		*ret = t0 - sol[j];
		return 0;
	}
	for (i = 1, j = 0; i < ns; i++)
		if (sol[i] < sol[j])
			j = i;
	if (amb == DT_AMBIGUOUS_LATER) {
		*ret = t0 - sol[j];
		return 0;
	}
	offset_format(a, sizeof(a), sol[0]);
	offset_format(b, sizeof(b), sol[1]);
	return fail(err, -1, "local time \"%s\" is ambiguous in %s (it occurs at %s and at %s)",
		    SHOWN, z->name, a, b);
}

/* v (0 <= v < 10^n) as exactly n decimal digits, zero-padded: the
 * printf-free "%0*d" of the datetime output, two digits a step. */
static void put_digits(char *p, int v, int n)
{
	for (; n >= 2; n -= 2, v /= 100) {
		p[n - 2] = (char)('0' + v % 100 / 10);
		p[n - 1] = (char)('0' + v % 10);
	}
	if (n)
		p[0] = (char)('0' + v % 10);
}

/* The two digits at s (checked) as a number. */
static int two_digits(const char *s)
{
	return (s[0] - '0') * 10 + (s[1] - '0');
}

/* YYYY-MM-DD HH:MM:SS (or with a T) at the start of text: the common case
 * at once, else byte by byte to name the first byte out of shape. */
static int datetime_shape(const char *text, size_t len, struct bridge_error *err)
{
	static const char shape[] = "dddd-dd-ddTdd:dd:dd";
	static const unsigned char at[] = { 0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18 };
	char shown[96];
	unsigned bad = 0;
	size_t i;

	if (len >= sizeof(shape) - 1) {
		for (i = 0; i < sizeof(at); i++)
			bad |= (unsigned)(unsigned char)(text[at[i]] - '0') > 9;
		if (!bad && text[4] == '-' && text[7] == '-' &&
		    (text[10] == 'T' || text[10] == ' ') && text[13] == ':' && text[16] == ':')
			return 0;
	}
	for (i = 0; i < sizeof(shape) - 1; i++) {
		char want = shape[i];
		int good = i >= len      ? 0
			   : want == 'd' ? is_digit(text[i])
			   : want == 'T' ? text[i] == 'T' || text[i] == ' '
					 : text[i] == want;

		if (!good)
			return fail(
				err, (long)i,
				"invalid datetime \"%s\" at byte %zu: expected YYYY-MM-DD HH:MM:SS",
				SHOWN, i);
	}
	return 0;
}

int convert_datetime(const char *text, size_t len, const struct tz_zone *z, enum dt_ambiguous amb,
		     enum dt_gap gap, char *ret, size_t cap, struct bridge_error *err)
{
	char shown[96];
	int y, mo, d, h, mi, s, ms = 0, has_off = 0;
	int32_t off = 0;
	size_t i, p;
	int64_t t0, u = 0, oy;
	int om, od;

	if (cap)
		ret[0] = '\0';
	if (datetime_shape(text, len, err) < 0)
		return -1;
	y = two_digits(text) * 100 + two_digits(text + 2);
	mo = two_digits(text + 5);
	d = two_digits(text + 8);
	h = two_digits(text + 11);
	mi = two_digits(text + 14);
	s = two_digits(text + 17);
	if (mo < 1 || mo > 12)
		return fail(err, 5, "invalid datetime \"%s\": month %02d out of range", SHOWN, mo);
	if (d < 1 || d > days_in_month(y, mo))
		return fail(err, 8, "invalid datetime \"%s\": day %02d does not exist in %04d-%02d",
			    SHOWN, d, y, mo);
	if (h > 23)
		return fail(err, 11, "invalid datetime \"%s\": hour %02d out of range", SHOWN, h);
	if (mi > 59)
		return fail(err, 14, "invalid datetime \"%s\": minute %02d out of range", SHOWN,
			    mi);
	if (s == 60)
		return fail(err, 17, "invalid datetime \"%s\": leap second 60 is not supported",
			    SHOWN);
	if (s > 59)
		return fail(err, 17, "invalid datetime \"%s\": second %02d out of range", SHOWN, s);

	p = 19;
	if (p < len && text[p] == '.') {
		size_t nd = 0;

		p++;
		while (p + nd < len && is_digit(text[p + nd]))
			nd++;
		if (nd == 0 || nd > 9)
			return fail(err, (long)p,
				    "invalid datetime \"%s\" at byte %zu: fraction must have 1 to "
				    "9 digits",
				    SHOWN, p);
		for (i = 0; i < 3; i++)
			ms = ms * 10 + (i < nd ? text[p + i] - '0' : 0);
		p += nd;
	}
	if (p < len && text[p] == 'Z') {
		has_off = 1;
		p++;
	} else if (p < len && (text[p] == '+' || text[p] == '-')) {
		int oh, omi = 0;
		size_t q = p + 1;

		if (q + 2 > len || digits(text + q, 2, &oh) < 0)
			return fail(err, (long)q,
				    "invalid datetime \"%s\" at byte %zu: offset must be +HH, "
				    "+HHMM or +HH:MM",
				    SHOWN, q);
		q += 2;
		if (q < len && text[q] == ':')
			q++;
		if (q < len) {
			if (q + 2 > len || digits(text + q, 2, &omi) < 0)
				return fail(err, (long)q,
					    "invalid datetime \"%s\" at byte %zu: offset must be "
					    "+HH, +HHMM or +HH:MM",
					    SHOWN, q);
			q += 2;
		} else if (text[q - 1] == ':')
			return fail(err, (long)q,
				    "invalid datetime \"%s\" at byte %zu: offset minutes missing",
				    SHOWN, q);
		if (oh > 23 || omi > 59)
			return fail(err, (long)p, "invalid datetime \"%s\": offset out of range",
				    SHOWN);
		off = (oh * 3600 + omi * 60) * (text[p] == '-' ? -1 : 1);
		has_off = 1;
		p = q;
	}
	if (p != len)
		return fail(err, (long)p,
			    "invalid datetime \"%s\" at byte %zu: unexpected trailing characters",
			    SHOWN, p);

	t0 = days_from_civil(y, mo, d) * SECS_PER_DAY + h * 3600 + mi * 60 + s;
	if (has_off)
		u = t0 - off;
	else if (!z)
		return fail(err, -1, "datetime \"%s\" has no UTC offset and no time zone is set",
			    SHOWN);
	else if (tz_resolve(z, t0, amb, gap, text, len, &u, err) < 0)
		return -1;

	civil_from_days(floor_div(u, SECS_PER_DAY), &oy, &om, &od);
	if (oy < 1 || oy > 9999)
		return fail(err, -1, "datetime \"%s\" is out of range once converted to UTC",
			    SHOWN);
	if (cap < 25)
		return fail(err, -1, "datetime output buffer too small");
	u -= floor_div(u, SECS_PER_DAY) * SECS_PER_DAY;
	/* YYYY-MM-DDTHH:MM:SS.mmmZ: every field has its fixed width here */
	put_digits(ret, (int)oy, 4);
	ret[4] = '-';
	put_digits(ret + 5, om, 2);
	ret[7] = '-';
	put_digits(ret + 8, od, 2);
	ret[10] = 'T';
	put_digits(ret + 11, (int)(u / 3600), 2);
	ret[13] = ':';
	put_digits(ret + 14, (int)(u / 60 % 60), 2);
	ret[16] = ':';
	put_digits(ret + 17, (int)(u % 60), 2);
	ret[19] = '.';
	put_digits(ret + 20, ms, 3);
	ret[23] = 'Z';
	ret[24] = '\0';
	return 0;
}
