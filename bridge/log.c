#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "bridge/log.h"

/* room kept at the end of every line for ,"truncated":true}\n */
#define LOG_RESERVE 24

static enum log_level log_min = LOG_INFO;
static const char *const level_names[] = { "debug", "info", "warn", "error" };
/* syslog priorities (debug 7, info 6, warning 4, err 3) */
static const char level_priority[] = { '7', '6', '4', '3' };
static int journal = -1; /* stderr is a journald stream: -1 not yet known */

/* Under journald (systemd sets JOURNAL_STREAM for a unit's stderr) each line
 * starts with its "<N>" priority, which journald strips and records, so that
 * `journalctl -p err` finds the errors.  Only stderr lines: stdout keeps
 * plain JSON for the tools that read it. */
static int log_journal(void)
{
	if (journal < 0)
		journal = getenv("JOURNAL_STREAM") != NULL;
	return journal;
}

void log_set_level(enum log_level l)
{
	log_min = l;
}

int log_level_parse(const char *s, enum log_level *ret)
{
	for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
		if (strcmp(s, level_names[i]) == 0) {
			*ret = (enum log_level)i;
			return 0;
		}
	}
	return -1;
}

size_t json_escape(char *dst, size_t cap, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[7];
		size_t el;

		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			el = 2;
		} else if (c == '\n') {
			memcpy(esc, "\\n", 2);
			el = 2;
		} else if (c == '\r') {
			memcpy(esc, "\\r", 2);
			el = 2;
		} else if (c == '\t') {
			memcpy(esc, "\\t", 2);
			el = 2;
		} else if (c < 0x20 || c == 0x7f) {
			memcpy(esc, "\\u00", 4);
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 15];
			el = 6;
		} else {
			esc[0] = (char)c;
			el = 1;
		}
		if (o + el < cap)
			memcpy(dst + o, esc, el);
		o += el;
	}
	if (o < cap)
		dst[o] = '\0';
	else if (cap)
		dst[cap - 1] = '\0';
	return o;
}

size_t json_escape_quoted(char *dst, size_t cap, const char *s)
{
	size_t n;

	if (!s) {
		snprintf(dst, cap, "null");
		return 4;
	}
	if (cap < 3) {
		if (cap)
			dst[0] = '\0';
		return json_escape(NULL, 0, s, strlen(s)) + 2;
	}
	dst[0] = '"';
	n = json_escape(dst + 1, cap - 2, s, strlen(s));
	if (n + 2 < cap) {
		dst[n + 1] = '"';
		dst[n + 2] = '\0';
	}
	return n + 2;
}

static void log_append(struct log_line *l, const char *s, size_t n)
{
	if (l->truncated || l->len + n + LOG_RESERVE > sizeof(l->buf)) {
		l->truncated = 1;
		return;
	}
	memcpy(l->buf + l->len, s, n);
	l->len += n;
}

static void log_append_escaped(struct log_line *l, const char *s, size_t n)
{
	size_t room, need;

	if (l->truncated)
		return;
	room = sizeof(l->buf) - l->len - LOG_RESERVE;
	need = json_escape(l->buf + l->len, room, s, n);
	if (need >= room) {
		l->truncated = 1;
		return;
	}
	l->len += need;
}

static void log_key(struct log_line *l, const char *key)
{
	log_append(l, ",\"", 2);
	log_append_escaped(l, key, strlen(key));
	log_append(l, "\":", 2);
}

void log_time_now(char *out, size_t cap)
{
	struct timeval tv;
	struct tm tm;

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
		 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000));
}

void log_begin(struct log_line *l, enum log_level level, const char *event)
{
	char ts[32], head[96];
	int n;

	l->len = 0;
	l->truncated = 0;
	l->enabled = level >= log_min;
	if (!l->enabled)
		return;
	log_time_now(ts, sizeof(ts));
	if (log_journal()) /* skipped again for lines that do not go to stderr */
		log_append(l, (const char[]){ '<', level_priority[level], '>' }, 3);
	n = snprintf(head, sizeof(head), "{\"time\":\"%s\",\"level\":\"%s\"", ts,
		     level_names[level]);
	log_append(l, head, (size_t)n);
	log_str(l, "event", event);
}

void log_strn(struct log_line *l, const char *key, const char *value, size_t n)
{
	if (!l->enabled || !value)
		return;
	log_key(l, key);
	log_append(l, "\"", 1);
	log_append_escaped(l, value, n);
	log_append(l, "\"", 1);
}

void log_str(struct log_line *l, const char *key, const char *value)
{
	if (value)
		log_strn(l, key, value, strlen(value));
}

void log_int(struct log_line *l, const char *key, long long value)
{
	char num[32];
	int n;

	if (!l->enabled)
		return;
	n = snprintf(num, sizeof(num), "%lld", value);
	log_key(l, key);
	log_append(l, num, (size_t)n);
}

void log_raw(struct log_line *l, const char *key, const char *json, size_t n)
{
	if (!l->enabled || !json)
		return;
	log_key(l, key);
	log_append(l, json, n);
}

void log_end_to(struct log_line *l, int fd)
{
	size_t off = 0;

	if (!l->enabled)
		return;
	if (l->truncated) {
		/* keep the line valid JSON: the cut field is dropped whole */
		static const char tail[] = ",\"truncated\":true";
		char *comma = l->len ? memrchr(l->buf, ',', l->len) : NULL;

		if (comma)
			l->len = (size_t)(comma - l->buf);
		memcpy(l->buf + l->len, tail, sizeof(tail) - 1);
		l->len += sizeof(tail) - 1;
	}
	l->buf[l->len++] = '}';
	l->buf[l->len++] = '\n';
	if (l->buf[0] == '<' && fd != STDERR_FILENO)
		off = 3; /* the journald priority is for stderr only */
	while (off < l->len) {
		ssize_t w = write(fd, l->buf + off, l->len - off);

		if (w <= 0)
			break;
		off += (size_t)w;
	}
	l->enabled = 0;
}

void log_end(struct log_line *l)
{
	log_end_to(l, STDERR_FILENO);
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void log_ratelimit_init(struct log_ratelimit *r, long interval_ms, unsigned burst)
{
	memset(r, 0, sizeof(*r));
	r->interval_ms = interval_ms;
	r->burst = burst;
}

int log_ratelimit_allow(struct log_ratelimit *r, unsigned long *ret_suppressed)
{
	long long now = now_ms();

	if (now - r->window_start_ms >= r->interval_ms) {
		r->window_start_ms = now;
		r->in_window = 0;
	}
	if (r->in_window >= r->burst) {
		r->suppressed++;
		return 0;
	}
	r->in_window++;
	*ret_suppressed = r->suppressed;
	r->suppressed = 0;
	return 1;
}
