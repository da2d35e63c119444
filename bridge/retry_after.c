/*
 * retry_after: an endpoint's Retry-After header read as a wait: delta-seconds
 * or an HTTP date in RFC 9110's three formats, parsed without the locale.
 */
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "bridge/retry_after.h"

#define RETRY_AFTER_MAX_S (366LL * 86400) /* longer would be dead-lettered anyway */

static int month_index(const char *s)
{
	static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";

	for (int i = 0; i < 12; i++)
		if (strncmp(s, months + 3 * i, 3) == 0)
			return i;
	return -1;
}

/* Fixed-width decimal field; -1 when not all digits. */
static int digits(const char *s, int n)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

static int hms(const char *s, struct tm *tm)
{
	if (s[2] != ':' || s[5] != ':')
		return -1;
	tm->tm_hour = digits(s, 2);
	tm->tm_min = digits(s + 3, 2);
	tm->tm_sec = digits(s + 6, 2);
	return tm->tm_hour < 0 || tm->tm_min < 0 || tm->tm_sec < 0 || tm->tm_hour > 23 ||
			       tm->tm_min > 59 || tm->tm_sec > 60
		       ? -1
		       : 0;
}

/* The three HTTP date formats of RFC 9110 5.6.7, parsed without the locale. */
static int http_date(const char *s, time_t *ret)
{
	struct tm tm;
	const char *comma = strchr(s, ',');
	size_t n;

	memset(&tm, 0, sizeof(tm));
	if (comma) {
		const char *p = comma + 1;

		if (*p++ != ' ')
			return -1;
		n = strlen(p);
		if (n == 24 && p[2] == ' ' && p[6] == ' ' && p[11] == ' ' &&
		    strcmp(p + 20, " GMT") == 0) {
			/* IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT */
			tm.tm_mday = digits(p, 2);
			tm.tm_mon = month_index(p + 3);
			tm.tm_year = digits(p + 7, 4) - 1900;
			if (hms(p + 12, &tm) < 0)
				return -1;
		} else if (n == 22 && p[2] == '-' && p[6] == '-' && p[9] == ' ' &&
			   strcmp(p + 18, " GMT") == 0) {
			/* RFC 850: Sunday, 06-Nov-94 08:49:37 GMT */
			int yy = digits(p + 7, 2);

			tm.tm_mday = digits(p, 2);
			tm.tm_mon = month_index(p + 3);
			tm.tm_year = yy < 0 ? -1 : yy < 70 ? yy + 100 : yy;
			if (hms(p + 10, &tm) < 0)
				return -1;
		} else {
			return -1;
		}
	} else {
		/* asctime: Sun Nov  6 08:49:37 1994 */
		if (strlen(s) != 24 || s[3] != ' ' || s[7] != ' ' || s[10] != ' ' || s[19] != ' ')
			return -1;
		tm.tm_mon = month_index(s + 4);
		tm.tm_mday = s[8] == ' ' ? digits(s + 9, 1) : digits(s + 8, 2);
		tm.tm_year = digits(s + 20, 4) - 1900;
		if (hms(s + 11, &tm) < 0)
			return -1;
	}
	if (tm.tm_mon < 0 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_year < 0)
		return -1;
	*ret = timegm(&tm);
	return *ret == (time_t)-1 ? -1 : 0;
}

int64_t retry_after_ms(const char *value, int64_t now_ms)
{
	char buf[72];
	size_t n;
	const char *p;
	time_t t;

	if (!value)
		return -1;
	while (*value == ' ' || *value == '\t')
		value++;
	n = strlen(value);
	while (n && (value[n - 1] == ' ' || value[n - 1] == '\t'))
		n--;
	if (n == 0 || n >= sizeof(buf))
		return -1;
	memcpy(buf, value, n);
	buf[n] = '\0';
	for (p = buf; *p >= '0' && *p <= '9'; p++)
		;
	if (*p == '\0') {
		long long s = 0;

		for (p = buf; *p; p++) {
			s = s * 10 + (*p - '0');
			if (s > RETRY_AFTER_MAX_S)
				return RETRY_AFTER_MAX_S * 1000;
		}
		return s * 1000;
	}
	if (http_date(buf, &t) < 0)
		return -1;
	if ((int64_t)t * 1000 <= now_ms)
		return 0;
	if ((int64_t)t - now_ms / 1000 > RETRY_AFTER_MAX_S)
		return RETRY_AFTER_MAX_S * 1000;
	return (int64_t)t * 1000 - now_ms;
}
