/*
 * convert: table-driven cases for integers, case and datetimes, then a
 * cross-check of the TZif reader against the C library's localtime_r() over
 * three centuries for zones with unusual rules, and a concurrency check.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "bridge/convert.h"
#include "tap.h"

/* Test names stay on one TAP line: escape what is not printable ASCII. */
static const char *show(const char *s, size_t n, char *buf, size_t cap)
{
	size_t i, o = 0;

	for (i = 0; i < n && o + 5 < cap; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch < 0x20 || ch >= 0x7F)
			o += (size_t)snprintf(buf + o, cap - o, "\\x%02x", ch);
		else
			buf[o++] = (char)ch;
	}
	buf[o] = '\0';
	return buf;
}

/* ------------------------------------------------------------------------ */

struct int_case {
	const char *in;
	size_t len;       /* 0: strlen(in) */
	const char *want; /* NULL: rejected */
	const char *msg;  /* expected message substring when rejected */
};

static const struct int_case int_cases[] = {
	{ "0", 0, "0", NULL },
	{ "42", 0, "42", NULL },
	{ " 42 ", 0, "42", NULL },
	{ "\t\r\n42 \t", 0, "42", NULL },
	/* only the JSON whitespace set is trimmed: form feed and vertical tab are content */
	{ "42\f", 0, NULL, "unexpected character at byte 2" },
	{ "\v42", 0, NULL, "unexpected character at byte 0" },
	{ "+5", 0, "5", NULL },
	{ "-5", 0, "-5", NULL },
	{ "007", 0, "7", NULL },
	{ "-007", 0, "-7", NULL },
	{ "-0", 0, "0", NULL },
	{ "+0", 0, "0", NULL },
	{ "-000", 0, "0", NULL },
	{ "000", 0, "0", NULL },
	{ "9007199254740993", 0, "9007199254740993", NULL }, /* 2^53 + 1: no double */
	{ "9223372036854775807", 0, "9223372036854775807", NULL },
	{ "9223372036854775808", 0, "9223372036854775808", NULL },
	{ "-9223372036854775808", 0, "-9223372036854775808", NULL },
	{ "18446744073709551615", 0, "18446744073709551615", NULL },
	{ "0000018446744073709551615", 0, "18446744073709551615", NULL },
	{ "-00009223372036854775808", 0, "-9223372036854775808", NULL },
	{ "18446744073709551616", 0, NULL, "integer out of range" },
	{ "99999999999999999999", 0, NULL, "integer out of range" },
	{ "100000000000000000000", 0, NULL, "integer out of range" },
	{ "-9223372036854775809", 0, NULL, "integer out of range" },
	{ "-18446744073709551615", 0, NULL, "integer out of range" },
	{ "", 0, NULL, "empty value" },
	{ "   ", 0, NULL, "empty value" },
	{ "1e3", 0, NULL, "fractions and exponents are not allowed" },
	{ "1E3", 0, NULL, "fractions and exponents are not allowed" },
	{ "1.0", 0, NULL, "fractions and exponents are not allowed" },
	{ ".5", 0, NULL, "fractions and exponents are not allowed" },
	{ "--1", 0, NULL, "unexpected character at byte 1" },
	{ "+-1", 0, NULL, "unexpected character at byte 1" },
	{ "-", 0, NULL, "has no digits" },
	{ "+", 0, NULL, "has no digits" },
	{ "- 1", 0, NULL, "unexpected character" },
	{ "1 2", 0, NULL, "unexpected character at byte 1" },
	{ "0x10", 0, NULL, "unexpected character" },
	{ "12a", 0, NULL, "unexpected character at byte 2" },
	{ "1_000", 0, NULL, "unexpected character" },
	{ "\xd9\xa1", 0, NULL, "unexpected character" }, /* ARABIC-INDIC DIGIT ONE */
	{ "1\0", 2, NULL, "unexpected character at byte 1" },
	{ "true", 0, NULL, "unexpected character" },
};

static void test_integers(void)
{
	size_t i;

	for (i = 0; i < sizeof(int_cases) / sizeof(int_cases[0]); i++) {
		const struct int_case *c = &int_cases[i];
		struct bridge_error err;
		char out[22], name[160], shown[64];
		size_t len = c->len ? c->len : strlen(c->in);
		int rc;

		bridge_error_clear(&err);
		memset(out, 'x', sizeof(out));
		rc = convert_integer(c->in, len, out, sizeof(out), &err);
		show(c->in, len, shown, sizeof(shown));
		if (c->want) {
			snprintf(name, sizeof(name), "integer \"%s\" -> %s", shown, c->want);
			if (!ok(rc == 0, name))
				printf("#   error: %s\n", err.message);
			else
				is_str(out, c->want, name);
		} else {
			snprintf(name, sizeof(name), "integer \"%s\" rejected", shown);
			ok(rc == -1 && out[0] == '\0', name);
			snprintf(name, sizeof(name), "integer \"%s\" message", shown);
			if (!ok(strstr(err.message, c->msg) != NULL, name))
				printf("#   got: %s\n", err.message);
		}
	}
	{
		struct bridge_error err;
		char small[5];

		ok(convert_integer("123456", 6, small, sizeof(small), &err) == -1,
		   "integer: too small output buffer is an error, not a truncation");
		ok(convert_integer("1.5", 3, small, sizeof(small), NULL) == -1,
		   "integer: NULL err accepted");
	}
}

static void test_case(void)
{
	static const char in[] = "abcXYZ-09 \xc3\xa9\xc3\x89 q";
	char out[sizeof(in)];

	memset(out, '#', sizeof(out));
	convert_upper(in, sizeof(in) - 1, out);
	ok(memcmp(out, "ABCXYZ-09 \xc3\xa9\xc3\x89 Q", sizeof(in)) == 0,
	   "upper: ASCII only, UTF-8 copied, NUL-terminated");
	memset(out, '#', sizeof(out));
	convert_lower(in, sizeof(in) - 1, out);
	ok(memcmp(out, "abcxyz-09 \xc3\xa9\xc3\x89 q", sizeof(in)) == 0,
	   "lower: ASCII only, UTF-8 copied, NUL-terminated");
	convert_upper("a\0b", 3, out);
	ok(memcmp(out, "A\0B", 4) == 0, "upper: length-driven, embedded NUL kept");
}

/* ------------------------------------------------------------------------ */

static struct tz_zone *zone(const char *name)
{
	struct bridge_error err;
	struct tz_zone *z = NULL;

	if (tz_zone_load(name, &z, &err) < 0) {
		printf("# cannot load %s: %s\n", name, err.message);
		return NULL;
	}
	return z;
}

#define AMB_E DT_AMBIGUOUS_EARLIER
#define AMB_L DT_AMBIGUOUS_LATER
#define AMB_R DT_AMBIGUOUS_REJECT
#define GAP_R DT_GAP_REJECT
#define GAP_S DT_GAP_SHIFT

struct dt_case {
	const char *zone; /* NULL: no zone */
	const char *in;
	enum dt_ambiguous amb;
	enum dt_gap gap;
	const char *want; /* NULL: rejected */
	const char *msg;  /* expected message substring when rejected */
};

static const struct dt_case dt_cases[] = {
	/* Europe/Brussels: CET +01:00, CEST +02:00 */
	{ "Europe/Brussels", "2024-01-15 10:00:00", AMB_E, GAP_R, "2024-01-15T09:00:00.000Z",
	  NULL },
	{ "Europe/Brussels", "2024-07-15 10:00:00", AMB_E, GAP_R, "2024-07-15T08:00:00.000Z",
	  NULL },
	{ "Europe/Brussels", "2024-07-15T10:00:00", AMB_E, GAP_R, "2024-07-15T08:00:00.000Z",
	  NULL },
	{ "Europe/Brussels", "2024-01-01 00:30:00", AMB_E, GAP_R, "2023-12-31T23:30:00.000Z",
	  NULL },
	/* spring forward 2024-03-31 02:00 -> 03:00 */
	{ "Europe/Brussels", "2024-03-31 01:59:59", AMB_E, GAP_R, "2024-03-31T00:59:59.000Z",
	  NULL },
	{ "Europe/Brussels", "2024-03-31 02:00:00", AMB_E, GAP_R, NULL,
	  "does not exist in Europe/Brussels" },
	{ "Europe/Brussels", "2024-03-31 02:30:00", AMB_E, GAP_R, NULL,
	  "local time \"2024-03-31 02:30:00\" does not exist in Europe/Brussels" },
	{ "Europe/Brussels", "2024-03-31 02:59:59", AMB_L, GAP_R, NULL, "does not exist" },
	{ "Europe/Brussels", "2024-03-31 02:30:00", AMB_E, GAP_S, "2024-03-31T01:30:00.000Z",
	  NULL },
	{ "Europe/Brussels", "2024-03-31 02:00:00", AMB_E, GAP_S, "2024-03-31T01:00:00.000Z",
	  NULL },
	{ "Europe/Brussels", "2024-03-31 03:00:00", AMB_E, GAP_R, "2024-03-31T01:00:00.000Z",
	  NULL },
	/* fall back 2024-10-27 03:00 -> 02:00 */
	{ "Europe/Brussels", "2024-10-27 01:59:59", AMB_R, GAP_R, "2024-10-26T23:59:59.000Z",
	  NULL },
	{ "Europe/Brussels", "2024-10-27 02:30:00", AMB_E, GAP_R, "2024-10-27T00:30:00.000Z",
	  NULL },
	{ "Europe/Brussels", "2024-10-27 02:30:00", AMB_L, GAP_R, "2024-10-27T01:30:00.000Z",
	  NULL },
	{ "Europe/Brussels", "2024-10-27 02:30:00", AMB_R, GAP_R, NULL,
	  "is ambiguous in Europe/Brussels" },
	{ "Europe/Brussels", "2024-10-27 02:00:00", AMB_L, GAP_R, "2024-10-27T01:00:00.000Z",
	  NULL },
	{ "Europe/Brussels", "2024-10-27 02:59:59", AMB_E, GAP_R, "2024-10-27T00:59:59.000Z",
	  NULL },
	{ "Europe/Brussels", "2024-10-27 03:00:00", AMB_R, GAP_R, "2024-10-27T02:00:00.000Z",
	  NULL },
	/* beyond the file's transitions (TZ footer rule) and before them (LMT) */
	{ "Europe/Brussels", "2100-07-01 12:00:00", AMB_E, GAP_R, "2100-07-01T10:00:00.000Z",
	  NULL },
	{ "Europe/Brussels", "2099-10-25 02:30:00", AMB_L, GAP_R, "2099-10-25T01:30:00.000Z",
	  NULL },
	{ "Europe/Brussels", "2099-03-29 02:30:00", AMB_E, GAP_R, NULL, "does not exist" },
	{ "Europe/Brussels", "1850-01-01 00:00:00", AMB_E, GAP_R, "1849-12-31T23:42:30.000Z",
	  NULL },
	/* leap days */
	{ "Europe/Brussels", "2024-02-29 12:00:00", AMB_E, GAP_R, "2024-02-29T11:00:00.000Z",
	  NULL },
	{ "Europe/Brussels", "2000-02-29 12:00:00", AMB_E, GAP_R, "2000-02-29T11:00:00.000Z",
	  NULL },
	{ "Europe/Brussels", "2023-02-29 12:00:00", AMB_E, GAP_R, NULL,
	  "day 29 does not exist in 2023-02" },
	{ "Europe/Brussels", "1900-02-29 12:00:00", AMB_E, GAP_R, NULL, "day 29 does not exist" },
	{ "Europe/Brussels", "2024-04-31 12:00:00", AMB_E, GAP_R, NULL, "day 31 does not exist" },
	/* fractions, truncated to milliseconds */
	{ "Europe/Brussels", "2024-07-15 10:00:00.1239", AMB_E, GAP_R, "2024-07-15T08:00:00.123Z",
	  NULL },
	{ "Europe/Brussels", "2024-07-15 10:00:00.5", AMB_E, GAP_R, "2024-07-15T08:00:00.500Z",
	  NULL },
	{ "Europe/Brussels", "2024-07-15 10:00:00.999999999", AMB_E, GAP_R,
	  "2024-07-15T08:00:00.999Z", NULL },
	{ "Europe/Brussels", "2024-07-15 10:00:00.1234567890", AMB_E, GAP_R, NULL,
	  "fraction must have 1 to 9 digits" },
	{ "Europe/Brussels", "2024-07-15 10:00:00.", AMB_E, GAP_R, NULL,
	  "fraction must have 1 to 9 digits" },
	/* field ranges */
	{ "Europe/Brussels", "2024-00-10 10:00:00", AMB_E, GAP_R, NULL, "month 00 out of range" },
	{ "Europe/Brussels", "2024-13-10 10:00:00", AMB_E, GAP_R, NULL, "month 13 out of range" },
	{ "Europe/Brussels", "2024-01-00 10:00:00", AMB_E, GAP_R, NULL, "day 00 does not exist" },
	{ "Europe/Brussels", "2024-01-32 10:00:00", AMB_E, GAP_R, NULL, "day 32 does not exist" },
	{ "Europe/Brussels", "2024-01-10 24:00:00", AMB_E, GAP_R, NULL, "hour 24 out of range" },
	{ "Europe/Brussels", "2024-01-10 10:60:00", AMB_E, GAP_R, NULL, "minute 60 out of range" },
	{ "Europe/Brussels", "2024-01-10 10:00:60", AMB_E, GAP_R, NULL,
	  "leap second 60 is not supported" },
	{ "Europe/Brussels", "2024-01-10 10:00:61", AMB_E, GAP_R, NULL, "second 61 out of range" },
	/* strict shape */
	{ "Europe/Brussels", "2024-7-15 10:00:00", AMB_E, GAP_R, NULL,
	  "at byte 6: expected YYYY-MM-DD HH:MM:SS" },
	{ "Europe/Brussels", "2024-07-15  10:00:00", AMB_E, GAP_R, NULL,
	  "expected YYYY-MM-DD HH:MM:SS" },
	{ "Europe/Brussels", " 2024-07-15 10:00:00", AMB_E, GAP_R, NULL, "at byte 0" },
	{ "Europe/Brussels", "2024-07-15 10:00:00 ", AMB_E, GAP_R, NULL,
	  "at byte 19: unexpected trailing characters" },
	{ "Europe/Brussels", "2024-07-15 10:00", AMB_E, GAP_R, NULL, "at byte 16" },
	{ "Europe/Brussels", "2024-07-15", AMB_E, GAP_R, NULL, "at byte 10" },
	{ "Europe/Brussels", "", AMB_E, GAP_R, NULL, "at byte 0" },
	{ "Europe/Brussels", "2024/07/15 10:00:00", AMB_E, GAP_R, NULL, "at byte 4" },
	{ "Europe/Brussels", "2024-07-15t10:00:00", AMB_E, GAP_R, NULL, "at byte 10" },
	{ "Europe/Brussels", "+024-07-15 10:00:00", AMB_E, GAP_R, NULL, "at byte 0" },
	{ "Europe/Brussels", "2024-07-15 1:00:00", AMB_E, GAP_R, NULL, "at byte 12" },
	{ "Europe/Brussels", "2024-07-15 10:00:00z", AMB_E, GAP_R, NULL,
	  "unexpected trailing characters" },
	/* ISO 8601 with an offset: the zone is ignored */
	{ "Europe/Brussels", "2024-07-15T10:00:00Z", AMB_E, GAP_R, "2024-07-15T10:00:00.000Z",
	  NULL },
	{ "Europe/Brussels", "2024-07-15T10:00:00+02:00", AMB_E, GAP_R, "2024-07-15T08:00:00.000Z",
	  NULL },
	{ "Europe/Brussels", "2024-07-15T10:00:00-0530", AMB_E, GAP_R, "2024-07-15T15:30:00.000Z",
	  NULL },
	{ "Europe/Brussels", "2024-07-15T10:00:00+05", AMB_E, GAP_R, "2024-07-15T05:00:00.000Z",
	  NULL },
	{ "Europe/Brussels", "2024-07-15 10:00:00+00:00", AMB_E, GAP_R, "2024-07-15T10:00:00.000Z",
	  NULL },
	{ "Europe/Brussels", "2024-07-15T10:00:00.987654+02:00", AMB_E, GAP_R,
	  "2024-07-15T08:00:00.987Z", NULL },
	{ "Europe/Brussels", "2024-07-15T10:00:00.1Z", AMB_E, GAP_R, "2024-07-15T10:00:00.100Z",
	  NULL },
	{ "Europe/Brussels", "2024-12-31T23:30:00-01:00", AMB_E, GAP_R, "2025-01-01T00:30:00.000Z",
	  NULL },
	{ "Europe/Brussels", "2024-03-01T00:30:00+01:00", AMB_E, GAP_R, "2024-02-29T23:30:00.000Z",
	  NULL },
	{ "Europe/Brussels", "2024-03-31T02:30:00+01:00", AMB_E, GAP_R, "2024-03-31T01:30:00.000Z",
	  NULL },
	{ NULL, "2024-07-15T10:00:00+02:00", AMB_E, GAP_R, "2024-07-15T08:00:00.000Z", NULL },
	{ NULL, "2024-07-15 10:00:00", AMB_E, GAP_R, NULL,
	  "has no UTC offset and no time zone is set" },
	{ NULL, "2024-07-15T10:00:00+2", AMB_E, GAP_R, NULL,
	  "offset must be +HH, +HHMM or +HH:MM" },
	{ NULL, "2024-07-15T10:00:00+02:", AMB_E, GAP_R, NULL, "offset minutes missing" },
	{ NULL, "2024-07-15T10:00:00+02:0", AMB_E, GAP_R, NULL, "offset must be" },
	{ NULL, "2024-07-15T10:00:00+0200x", AMB_E, GAP_R, NULL, "unexpected trailing characters" },
	{ NULL, "2024-07-15T10:00:00+24:00", AMB_E, GAP_R, NULL, "offset out of range" },
	{ NULL, "2024-07-15T10:00:00+02:60", AMB_E, GAP_R, NULL, "offset out of range" },
	{ NULL, "2024-07-15T10:00:00ZZ", AMB_E, GAP_R, NULL, "unexpected trailing characters" },
	{ NULL, "9999-12-31T23:59:59-01:00", AMB_E, GAP_R, NULL,
	  "out of range once converted to UTC" },
	{ NULL, "0000-01-01T00:30:00+01:00", AMB_E, GAP_R, NULL,
	  "out of range once converted to UTC" },
	{ NULL, "9999-12-31T23:59:59.999Z", AMB_E, GAP_R, "9999-12-31T23:59:59.999Z", NULL },
	/* other zones and rules */
	{ "UTC", "2024-07-15 10:00:00", AMB_R, GAP_R, "2024-07-15T10:00:00.000Z", NULL },
	{ "America/New_York", "2024-03-10 02:30:00", AMB_E, GAP_R, NULL, "does not exist" },
	{ "America/New_York", "2024-03-10 02:30:00", AMB_E, GAP_S, "2024-03-10T07:30:00.000Z",
	  NULL },
	{ "America/New_York", "2024-11-03 01:30:00", AMB_E, GAP_R, "2024-11-03T05:30:00.000Z",
	  NULL },
	{ "America/New_York", "2024-11-03 01:30:00", AMB_L, GAP_R, "2024-11-03T06:30:00.000Z",
	  NULL },
	{ "Australia/Sydney", "2024-04-07 02:30:00", AMB_E, GAP_R, "2024-04-06T15:30:00.000Z",
	  NULL },
	{ "Australia/Sydney", "2024-04-07 02:30:00", AMB_L, GAP_R, "2024-04-06T16:30:00.000Z",
	  NULL },
	{ "Australia/Sydney", "2024-10-06 02:30:00", AMB_E, GAP_R, NULL,
	  "does not exist in Australia/Sydney" },
	{ "Australia/Sydney", "2024-07-01 12:00:00", AMB_R, GAP_R, "2024-07-01T02:00:00.000Z",
	  NULL },
	{ "Asia/Kolkata", "2024-07-01 12:00:00", AMB_R, GAP_R, "2024-07-01T06:30:00.000Z", NULL },
	{ "Australia/Lord_Howe", "2024-04-07 01:45:00", AMB_L, GAP_R, "2024-04-06T15:15:00.000Z",
	  NULL },
	/* Samoa skipped 2011-12-30 entirely */
	{ "Pacific/Apia", "2011-12-30 12:00:00", AMB_E, GAP_R, NULL,
	  "does not exist in Pacific/Apia" },
	{ "Pacific/Apia", "2011-12-30 12:00:00", AMB_E, GAP_S, "2011-12-30T22:00:00.000Z", NULL },
	{ "Pacific/Apia", "2011-12-31 12:00:00", AMB_E, GAP_R, "2011-12-30T22:00:00.000Z", NULL },
	/* Dublin: tzdata models winter as negative DST */
	{ "Europe/Dublin", "2024-01-15 10:00:00", AMB_R, GAP_R, "2024-01-15T10:00:00.000Z", NULL },
	{ "Europe/Dublin", "2024-07-15 10:00:00", AMB_R, GAP_R, "2024-07-15T09:00:00.000Z", NULL },
	{ "Europe/Dublin", "2024-10-27 01:30:00", AMB_R, GAP_R, NULL,
	  "is ambiguous in Europe/Dublin" },
};

static void test_datetimes(void)
{
	struct tz_zone *cache[16] = { 0 };
	size_t i, j;

	for (i = 0; i < sizeof(dt_cases) / sizeof(dt_cases[0]); i++) {
		const struct dt_case *c = &dt_cases[i];
		const struct tz_zone *z = NULL;
		struct bridge_error err;
		char out[25], name[200];
		int rc;

		if (c->zone) {
			for (j = 0; cache[j] && strcmp(tz_zone_name(cache[j]), c->zone) != 0; j++)
				;
			if (!cache[j])
				cache[j] = zone(c->zone);
			z = cache[j];
			if (!ok(z != NULL, c->zone))
				continue;
		}
		bridge_error_clear(&err);
		rc = convert_datetime(c->in, strlen(c->in), z, c->amb, c->gap, out, sizeof(out),
				      &err);
		if (c->want) {
			snprintf(name, sizeof(name), "%s \"%s\"%s%s -> %s", c->zone ? c->zone : "-",
				 c->in, c->amb == AMB_L ? " later" : "",
				 c->gap == GAP_S ? " shift" : "", c->want);
			if (!ok(rc == 0, name))
				printf("#   error: %s\n", err.message);
			else
				is_str(out, c->want, name);
		} else {
			snprintf(name, sizeof(name), "%s \"%s\"%s rejected",
				 c->zone ? c->zone : "-", c->in, c->gap == GAP_S ? " shift" : "");
			ok(rc == -1 && out[0] == '\0', name);
			if (!ok(strstr(err.message, c->msg) != NULL, name))
				printf("#   got: %s\n", err.message);
		}
	}
	for (j = 0; cache[j]; j++)
		tz_zone_free(cache[j]);

	{
		struct bridge_error err;
		char small[24];

		ok(convert_datetime("2024-07-15T10:00:00Z", 20, NULL, AMB_E, GAP_R, small,
				    sizeof(small), &err) == -1,
		   "datetime: output buffer under 25 bytes is an error");
		ok(convert_datetime("2024-07-15T10:00:00Z", 19, NULL, AMB_E, GAP_R, small,
				    sizeof(small), NULL) == -1,
		   "datetime: length is honoured (no Z within len) and NULL err accepted");
	}
}

/* ------------------------------------------------------------------------ */

static int write_file(const char *path, const void *data, size_t n)
{
	FILE *f = fopen(path, "wb");
	int rc;

	if (!f)
		return -1;
	rc = fwrite(data, 1, n, f) == n ? 0 : -1;
	return fclose(f) == 0 ? rc : -1;
}

/* Minimal TZif version 1 images: one type (+03:00 "ABC") and no transitions;
 * the second also carries one leap-second record. */
static const unsigned char tzif_v1[] = {
	'T', 'Z', 'i', 'f', 0, 0, 0, 0, 0, 0, 0,    0,    0, 0, 0,   0,   0,   0,
	0,   0,   0,   0,   0, 0, 0, 0, 0, 0, 0,    0,    0, 0, 0,   0,   0,   0,
	0,   0,   0,   1,   0, 0, 0, 4, 0, 0, 0x2a, 0x30, 0, 0, 'A', 'B', 'C', 0,
};
static const unsigned char tzif_leap[] = {
	'T', 'Z', 'i', 'f', 0,   0, 0,    0,    0,    0,    0, 0, 0, 0, 0,    0,
	0,   0,   0,   0,   0,   0, 0,    0,    0,    0,    0, 0, 0, 0, 0,    1,
	0,   0,   0,   0,   0,   0, 0,    1,    0,    0,    0, 4, 0, 0, 0x2a, 0x30,
	0,   0,   'A', 'B', 'C', 0, 0x04, 0xb2, 0x58, 0x00, 0, 0, 0, 1,
};

static void test_zone_load(void)
{
	static const struct {
		const char *name;
		const char *msg;
	} bad[] = {
		{ "Mars/Olympus_Mons", "unknown time zone \"Mars/Olympus_Mons\": no such zone" },
		{ "../etc/passwd", "invalid time zone name \"../etc/passwd\"" },
		{ "Europe/../../etc/passwd", "invalid time zone name" },
		{ "/etc/passwd", "invalid time zone name" },
		{ "/usr/share/zoneinfo/Europe/Brussels", "invalid time zone name" },
		{ "", "invalid time zone name" },
		{ "Europe/", "invalid time zone name" },
		{ "Europe//Brussels", "invalid time zone name" },
		{ "./Europe/Brussels", "invalid time zone name" },
		{ "Europe/Brussels\n", "invalid time zone name \"Europe/Brussels\\n\"" },
		{ "CET-1CEST,M3.5.0,M10.5.0/3", "invalid time zone name" },
		{ ":Europe/Brussels", "invalid time zone name" },
		{ "Europe", "not a zone file" },
		{ "zone.tab", "not a TZif file" },
	};
	struct bridge_error err;
	struct tz_zone *z = (struct tz_zone *)1;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char name[160], shown[96];

		z = (struct tz_zone *)1;
		snprintf(name, sizeof(name), "zone \"%s\" rejected",
			 show(bad[i].name, strlen(bad[i].name), shown, sizeof(shown)));
		ok(tz_zone_load(bad[i].name, &z, &err) == -1 && z == NULL, name);
		if (!ok(strstr(err.message, bad[i].msg) != NULL, name))
			printf("#   got: %s\n", err.message);
	}
	ok(tz_zone_load("Nowhere/Zone", &z, NULL) == -1, "zone: NULL err accepted");

	z = zone("Europe/Brussels");
	ok(z && strcmp(tz_zone_name(z), "Europe/Brussels") == 0, "zone name kept");
	tz_zone_free(z);
	tz_zone_free(NULL);

	/* TZDIR points the loader elsewhere, with the same checks */
	{
		char dir[] = "/tmp/convert-tzdir-XXXXXX";
		char path[256], out[25];
		FILE *f;
		unsigned char buf[8192];
		size_t n;

		if (!ok(mkdtemp(dir) != NULL, "TZDIR: temp dir"))
			return;
		f = fopen("/usr/share/zoneinfo/Europe/Brussels", "rb");
		n = f ? fread(buf, 1, sizeof(buf), f) : 0;
		if (f)
			fclose(f);
		ok(n > 100, "TZDIR: read a real zone");
		snprintf(path, sizeof(path), "%s/Test", dir);
		mkdir(path, 0700);
		snprintf(path, sizeof(path), "%s/Test/Copy", dir);
		write_file(path, buf, n);
		snprintf(path, sizeof(path), "%s/Test/Truncated", dir);
		write_file(path, buf, 60);
		snprintf(path, sizeof(path), "%s/Test/V1", dir);
		write_file(path, tzif_v1, sizeof(tzif_v1));
		snprintf(path, sizeof(path), "%s/Test/Leap", dir);
		write_file(path, tzif_leap, sizeof(tzif_leap));
		snprintf(path, sizeof(path), "%s/Test/NoMagic", dir);
		write_file(path, "TZix0000000000000000000000000000000000000000000000", 50);
		setenv("TZDIR", dir, 1);

		z = zone("Test/Copy");
		ok(z != NULL, "TZDIR: zone found in TZDIR");
		ok(z &&
			   convert_datetime("2024-10-27 02:30:00", 19, z, AMB_L, GAP_R, out,
					    sizeof(out), &err) == 0 &&
			   strcmp(out, "2024-10-27T01:30:00.000Z") == 0,
		   "TZDIR: copied zone converts like the original");
		tz_zone_free(z);
		z = (struct tz_zone *)1;
		ok(tz_zone_load("Europe/Brussels", &z, &err) == -1 && z == NULL,
		   "TZDIR: system zones not visible when TZDIR is set");
		ok(tz_zone_load("Test/Truncated", &z, &err) == -1 &&
			   strstr(err.message, "not a valid TZif file"),
		   "TZDIR: truncated TZif rejected");
		ok(tz_zone_load("Test/NoMagic", &z, &err) == -1 &&
			   strstr(err.message, "not a TZif file"),
		   "TZDIR: file without TZif magic rejected");
		ok(tz_zone_load("Test/Leap", &z, &err) == -1 &&
			   strstr(err.message, "leap seconds are not supported"),
		   "TZDIR: zone with leap seconds rejected");
		z = zone("Test/V1");
		ok(z &&
			   convert_datetime("2024-07-15 10:00:00", 19, z, AMB_R, GAP_R, out,
					    sizeof(out), &err) == 0 &&
			   strcmp(out, "2024-07-15T07:00:00.000Z") == 0,
		   "TZDIR: version 1 TZif file (fixed +03:00) converts");
		tz_zone_free(z);
		unsetenv("TZDIR");
		z = zone("Europe/Brussels");
		ok(z != NULL, "TZDIR unset: system database again");
		tz_zone_free(z);

		unlink(path);
		snprintf(path, sizeof(path), "%s/Test/V1", dir);
		unlink(path);
		snprintf(path, sizeof(path), "%s/Test/Leap", dir);
		unlink(path);
		snprintf(path, sizeof(path), "%s/Test/Truncated", dir);
		unlink(path);
		snprintf(path, sizeof(path), "%s/Test/Copy", dir);
		unlink(path);
		snprintf(path, sizeof(path), "%s/Test", dir);
		rmdir(path);
		rmdir(dir);
	}
}

/* ------------------------------------------------------------------------ */

/*
 * For UTC instants u over 1850-2150, localtime_r() gives the wall time L;
 * converting L back must give u as either the earlier or the later reading.
 * Samples every ~2 days (drifting through the day), plus, wherever the
 * offset changes between two samples, instants around the exact transition
 * found by bisection.
 */
static const char *const cross_zones[] = {
	"Europe/Brussels",     "America/New_York", "Australia/Sydney",
	"Australia/Lord_Howe", "Europe/Dublin",    "Africa/Casablanca",
	"America/Nuuk",        "Pacific/Apia",     "America/Sao_Paulo",
	"Asia/Tehran",         "Pacific/Chatham",  "Antarctica/Troll",
	"America/St_Johns",    "Asia/Kolkata",     "UTC",
};

static long gmtoff(time_t u)
{
	struct tm tm;

	return localtime_r(&u, &tm) ? tm.tm_gmtoff : 0;
}

static int cross_one(const struct tz_zone *z, time_t u, char *why, size_t cap)
{
	struct tm tm;
	char local[32], want[32], e[25], l[25];
	struct bridge_error err;
	int ne, nl;

	if (!localtime_r(&u, &tm))
		return 0;
	strftime(local, sizeof(local), "%Y-%m-%d %H:%M:%S", &tm);
	gmtime_r(&u, &tm);
	strftime(want, sizeof(want), "%Y-%m-%dT%H:%M:%S.000Z", &tm);
	bridge_error_clear(&err);
	ne = convert_datetime(local, strlen(local), z, AMB_E, GAP_R, e, sizeof(e), &err);
	nl = convert_datetime(local, strlen(local), z, AMB_L, GAP_R, l, sizeof(l), &err);
	if (ne < 0 || nl < 0 || (strcmp(e, want) != 0 && strcmp(l, want) != 0) ||
	    strcmp(e, l) > 0) {
		snprintf(why, cap, "u=%lld local=%s want=%s earlier=%s later=%s (%.200s)",
			 (long long)u, local, want, ne ? "-" : e, nl ? "-" : l, err.message);
		return -1;
	}
	return 0;
}

/* First instant in (lo, hi] whose offset differs from lo's. */
static time_t transition_find(time_t lo, time_t hi)
{
	long off = gmtoff(lo);

	while (hi - lo > 1) {
		time_t mid = lo + (hi - lo) / 2;

		if (gmtoff(mid) == off)
			lo = mid;
		else
			hi = mid;
	}
	return hi;
}

static void test_cross_check(void)
{
	static const long around[] = { -7201, -3601, -1801, -1, 0, 1, 1799, 3599, 7199 };
	/* under valgrind (meson test --setup valgrind) sample every ~3 weeks:
	 * the same code paths, 10x fewer instants */
	const long long step = getenv("BRIDGE_UNDER_VALGRIND") ? 21 * 86400 + 1037
							       : 2 * 86400 + 1037;
	const long long from = -3786825600LL /* 1850 */, to = 5680281600LL /* 2150 */;
	size_t i, k;

	for (i = 0; i < sizeof(cross_zones) / sizeof(cross_zones[0]); i++) {
		struct tz_zone *z = zone(cross_zones[i]);
		char tzvar[80], why[400] = "", name[120];
		long long u;
		long prev;
		int bad = 0, transitions = 0;

		if (!ok(z != NULL, cross_zones[i]))
			continue;
		snprintf(tzvar, sizeof(tzvar), ":%s", cross_zones[i]);
		setenv("TZ", tzvar, 1);
		tzset();
		prev = gmtoff((time_t)from);
		for (u = from; u < to && !bad; u += step) {
			long off = gmtoff((time_t)u);

			bad = cross_one(z, (time_t)u, why, sizeof(why));
			if (off == prev || bad)
				continue;
			{
				time_t t = transition_find((time_t)(u - step), (time_t)u);

				transitions++;
				for (k = 0; k < sizeof(around) / sizeof(around[0]) && !bad; k++)
					bad = cross_one(z, t + around[k], why, sizeof(why));
			}
			prev = off;
		}
		snprintf(name, sizeof(name),
			 "%s agrees with localtime_r over 1850-2150 (%d transitions)",
			 cross_zones[i], transitions);
		if (!ok(!bad, name))
			printf("#   %s\n", why);
		tz_zone_free(z);
	}
	unsetenv("TZ");
	tzset();
}

/* Wall times within a few days of a transition, where the probes' window
 * starts or stops straddling it (tz_resolve answers with one search when it
 * does not): every ten minutes (an hour under valgrind) from 3 days before
 * to 3 days after each transition of 2019-2026, against localtime_r. */
static void test_near_transitions(void)
{
	static const char *const zones[] = { "Europe/Brussels", "Australia/Sydney",
					     "Australia/Lord_Howe", "America/St_Johns" };
	const long long from = 1546300800LL /* 2019 */, to = 1798761600LL /* 2027 */;
	const long step = getenv("BRIDGE_UNDER_VALGRIND") ? 3593 : 599; /* as test_cross_check */

	for (size_t i = 0; i < sizeof(zones) / sizeof(zones[0]); i++) {
		struct tz_zone *z = zone(zones[i]);
		char tzvar[80], why[400] = "", name[160];
		int bad = 0, transitions = 0;
		long prev;

		if (!ok(z != NULL, zones[i]))
			continue;
		snprintf(tzvar, sizeof(tzvar), ":%s", zones[i]);
		setenv("TZ", tzvar, 1);
		tzset();
		prev = gmtoff((time_t)from);
		for (long long u = from; u < to && !bad; u += 3600) {
			long off = gmtoff((time_t)u);
			time_t t;

			if (off == prev)
				continue;
			prev = off;
			transitions++;
			t = transition_find((time_t)(u - 3600), (time_t)u);
			for (long d = -3 * 86400; d <= 3 * 86400 && !bad; d += step)
				bad = cross_one(z, t + d, why, sizeof(why));
		}
		snprintf(name, sizeof(name),
			 "%s: wall times around its %d transitions of 2019-2026 agree with "
			 "localtime_r",
			 zones[i], transitions);
		if (!ok(!bad && transitions >= 14, name))
			printf("#   %s\n", why);
		tz_zone_free(z);
	}
	unsetenv("TZ");
	tzset();
}

/* ------------------------------------------------------------------------ */

struct worker {
	const struct tz_zone *z;
	const char *in;
	enum dt_ambiguous amb;
	const char *want;
	int failures;
};

static void *worker_run(void *arg)
{
	struct worker *w = arg;
	int i;

	for (i = 0; i < 20000; i++) {
		char out[25];

		if (convert_datetime(w->in, strlen(w->in), w->z, w->amb, GAP_R, out, sizeof(out),
				     NULL) < 0 ||
		    strcmp(out, w->want) != 0)
			w->failures++;
	}
	return NULL;
}

static void test_threads(void)
{
	struct tz_zone *bru = zone("Europe/Brussels"), *ny = zone("America/New_York");
	struct worker w[8];
	pthread_t t[8];
	int i, failures = 0, started = 0;

	if (!ok(bru && ny, "threads: zones loaded"))
		goto out;
	for (i = 0; i < 8; i++) {
		w[i].z = i % 2 ? ny : bru;
		w[i].in = i % 2 ? "2024-11-03 01:30:00" : "2024-10-27 02:30:00";
		w[i].amb = i % 4 < 2 ? AMB_E : AMB_L;
		w[i].want = i % 2 ? (w[i].amb == AMB_E ? "2024-11-03T05:30:00.000Z"
						       : "2024-11-03T06:30:00.000Z")
				  : (w[i].amb == AMB_E ? "2024-10-27T00:30:00.000Z"
						       : "2024-10-27T01:30:00.000Z");
		w[i].failures = 0;
		if (pthread_create(&t[i], NULL, worker_run, &w[i]) != 0)
			break;
		started++;
	}
	for (i = 0; i < started; i++) {
		pthread_join(t[i], NULL);
		failures += w[i].failures;
	}
	ok(started == 8, "threads: eight workers");
	is_int(failures, 0, "threads: concurrent conversions with shared zones all exact");
out:
	tz_zone_free(bru);
	tz_zone_free(ny);
}

int main(void)
{
	unsetenv("TZDIR"); /* the system database unless a test sets its own */
	test_integers();
	test_case();
	test_zone_load();
	test_datetimes();
	test_cross_check();
	test_near_transitions();
	test_threads();
	return tap_done();
}
