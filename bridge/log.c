#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "bridge/clock.h"
#include "bridge/json.h"
#include "bridge/log.h"
#include "wordload.h"

/* room kept at the end of every line for ,"truncated":true}\n */
#define LOG_RESERVE 24

static enum log_level log_min = LOG_INFO;
static const char *const level_names[] = { "debug", "info", "warn", "error" };
/* syslog priorities (debug 7, info 6, warning 4, err 3) */
static const char level_priority[] = { '7', '6', '4', '3' };
/* stderr is a journald stream: -1 not yet known; every thread that logs
 * first may find it out, each storing the same answer */
static atomic_int journal = -1;

/* Under journald (systemd sets JOURNAL_STREAM for a unit's stderr) each line
 * starts with its "<N>" priority, which journald strips and records, so that
 * `journalctl -p err` finds the errors.  Only stderr lines: stdout keeps
 * plain JSON for the tools that read it. */
static int log_journal(void)
{
	int j = atomic_load_explicit(&journal, memory_order_relaxed);

	if (j < 0) {
		j = getenv("JOURNAL_STREAM") != NULL;
		atomic_store_explicit(&journal, j, memory_order_relaxed);
	}
	return j;
}

void log_set_level(enum log_level l)
{
	log_min = l;
}

const char *log_level_name(enum log_level l)
{
	return level_names[l <= LOG_ERROR ? l : LOG_ERROR];
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

static void log_append(struct log_line *l, const char *s, size_t n)
{
	if (l->truncated || l->len + n + LOG_RESERVE > sizeof(l->buf)) {
		l->truncated = 1;
		return;
	}
	memcpy(l->buf + l->len, s, n);
	l->len += n;
}

/* The bytes of the word x (little-endian loaded) that a key cannot carry as
 * it is (below 0x20, '"', '\\', DEL), as 0x80 in each such byte.  Exact:
 * no byte's carry reaches the next. */
static inline uint64_t key_specials(uint64_t x)
{
	const uint64_t ones = 0x0101010101010101ULL, low7 = ones * 0x7f, high = ones * 0x80;
	uint64_t q = x ^ (ones * '"'), b = x ^ (ones * '\\'), d = x ^ low7;

	return ~((((x & low7) + ones * (0x80 - 0x20)) | x) & (((q & low7) + low7) | q) &
		 (((b & low7) + low7) | b) & (((d & low7) + low7) | d)) &
	       high;
}

/* Whether none of the n bytes at s is one a log string escapes (below 0x20,
 * '"', '\\', DEL); they are copied to d when so.  16 bytes at a time (the
 * last block overlapping the one before), then words: a field's value is
 * nearly always plain, and a call of the escaper cost more than the copy. */
static int log_copy_plain(char *d, const char *s, size_t n)
{
	size_t i = 0;
	uint64_t tail;

#ifdef __SSE2__
	if (n >= 16) {
		const __m128i below = _mm_set1_epi8(0x1f), quote = _mm_set1_epi8('"'),
			      bs = _mm_set1_epi8('\\'), del = _mm_set1_epi8(0x7f);

		for (;; i += 16) {
			__m128i x, m;

			if (i + 16 > n)
				i = n - 16;
			x = _mm_loadu_si128((const __m128i *)(const void *)(s + i));
			m = _mm_or_si128(
				_mm_or_si128(_mm_cmpeq_epi8(_mm_max_epu8(x, below), below),
					     _mm_cmpeq_epi8(x, quote)),
				_mm_or_si128(_mm_cmpeq_epi8(x, bs), _mm_cmpeq_epi8(x, del)));
			if (_mm_movemask_epi8(m))
				return 0;
			_mm_storeu_si128((__m128i *)(void *)(d + i), x);
			if (i + 16 == n)
				return 1;
		}
	}
#endif
	for (; i + 8 <= n; i += 8) {
		if (key_specials(load_le64((const unsigned char *)s + i)))
			return 0;
		memcpy(d + i, s + i, 8);
	}
	if (i == n)
		return 1;
	/* the bytes past the tail load as NUL: not counted */
	tail = load_tail64((const unsigned char *)s + i, n - i);
	if (key_specials(tail) & (~0ULL >> (64 - 8 * (n - i))))
		return 0;
	memcpy(d + i, s + i, n - i);
	return 1;
}

static void log_append_escaped(struct log_line *l, const char *s, size_t n)
{
	size_t room, need;

	if (l->truncated)
		return;
	room = sizeof(l->buf) - l->len - LOG_RESERVE;
	if (n < room && log_copy_plain(l->buf + l->len, s, n)) {
		l->len += n; /* what json_escape would have written */
		return;
	}
	need = json_escape(l->buf + l->len, room, s, n);
	if (need >= room) {
		l->truncated = 1;
		return;
	}
	l->len += need;
}

/* Whether key (n <= 16 bytes, then NUL bytes up to 16 and one more, as
 * LOG_KEY passes a literal) has none of those bytes: the first of them in
 * its 16 bytes is the NUL after it, or there is none when n is 16. */
static inline int key_plain16(const char *key, size_t n)
{
	const unsigned char *u = (const unsigned char *)key;
	uint64_t m0 = key_specials(load_le64(u)), m1;

	if (m0)
		return (size_t)__builtin_ctzll(m0) / 8 == n;
	m1 = key_specials(load_le64(u + 8));
	return m1 ? 8 + (size_t)__builtin_ctzll(m1) / 8 == n : n == 16;
}

/* ,"key": -- a literal key with nothing to escape (nearly every one: the
 * compiler marks it LOG_KEY_PLAIN, or two word checks find it so at run
 * time) is copied as its 16 bytes, then the quote and colon written over what
 * follows it; the room asked for is what the three appends below would ask
 * for, so a line is cut at the same place either way. */
static void log_key(struct log_line *l, const char *key, size_t n)
{
	int plain = n != LOG_KEY_MEASURE && (n & LOG_KEY_PLAIN);

	if (plain)
		n &= ~LOG_KEY_PLAIN;
	if (n <= 16 && !l->truncated && l->len + n + 4 + LOG_RESERVE <= sizeof(l->buf) &&
	    (plain || key_plain16(key, n))) {
		char *p = l->buf + l->len;

		p[0] = ',';
		p[1] = '"';
		memcpy(p + 2, key, 16); /* within the reserve at the end */
		p[n + 2] = '"';
		p[n + 3] = ':';
		l->len += n + 4;
		return;
	}
	if (n == LOG_KEY_MEASURE)
		n = strlen(key);
	log_append(l, ",\"", 2);
	log_append_escaped(l, key, n);
	log_append(l, "\":", 2);
}

/* v (0 <= v < 10^n) as exactly n decimal digits. */
static void put_digits(char *p, unsigned v, int n)
{
	while (n-- > 0) {
		p[n] = (char)('0' + v % 10);
		v /= 10;
	}
}

void log_time_now(char *out, size_t cap)
{
	/* the date and time to the second, made again only when the second
	 * changes (per thread: the workers log at once) */
	static __thread time_t cached_sec = -1;
	static __thread char cached[20];
	struct timeval tv;
	char ts[25];

	gettimeofday(&tv, NULL);
	if (tv.tv_sec != cached_sec) {
		struct tm tm;

		gmtime_r(&tv.tv_sec, &tm);
		put_digits(cached, (unsigned)(tm.tm_year + 1900) % 10000, 4);
		cached[4] = '-';
		put_digits(cached + 5, (unsigned)tm.tm_mon + 1, 2);
		cached[7] = '-';
		put_digits(cached + 8, (unsigned)tm.tm_mday, 2);
		cached[10] = 'T';
		put_digits(cached + 11, (unsigned)tm.tm_hour, 2);
		cached[13] = ':';
		put_digits(cached + 14, (unsigned)tm.tm_min, 2);
		cached[16] = ':';
		put_digits(cached + 17, (unsigned)tm.tm_sec, 2);
		cached_sec = tv.tv_sec;
	}
	memcpy(ts, cached, 19);
	ts[19] = '.';
	put_digits(ts + 20, (unsigned)(tv.tv_usec / 1000), 3);
	ts[23] = 'Z';
	ts[24] = '\0';
	if (cap) {
		size_t n = cap - 1 < 24 ? cap - 1 : 24;

		memcpy(out, ts, n);
		out[n] = '\0';
	}
}

void log_begin(struct log_line *l, enum log_level level, const char *event)
{
	char ts[32];

	l->len = 0;
	l->truncated = 0;
	l->enabled = level >= log_min;
	l->level = (int)level;
	if (!l->enabled)
		return;
	log_time_now(ts, sizeof(ts));
	if (log_journal()) /* skipped again for lines that do not go to stderr */
		log_append(l, (const char[]){ '<', level_priority[level], '>' }, 3);
	log_append(l, "{\"time\":\"", 9);
	log_append(l, ts, strlen(ts));
	log_append(l, "\",\"level\":\"", 11);
	log_append(l, level_names[level], strlen(level_names[level]));
	log_append(l, "\"", 1);
	log_str(l, "event", event);
}

void log_strn_key(struct log_line *l, const char *key, size_t key_len, const char *value, size_t n)
{
	if (!l->enabled || !value)
		return;
	log_key(l, key, key_len);
	log_append(l, "\"", 1);
	log_append_escaped(l, value, n);
	log_append(l, "\"", 1);
}

void log_str_key(struct log_line *l, const char *key, size_t key_len, const char *value)
{
	if (value)
		log_strn_key(l, key, key_len, value, strlen(value));
}

void log_int_key(struct log_line *l, const char *key, size_t key_len, long long value)
{
	char num[24];
	size_t i = sizeof(num);
	unsigned long long u = value < 0 ? 0ULL - (unsigned long long)value
					 : (unsigned long long)value;

	if (!l->enabled)
		return;
	do /* printf-free: a line's numbers are its hot path */
		num[--i] = (char)('0' + u % 10);
	while (u /= 10);
	if (value < 0)
		num[--i] = '-';
	log_key(l, key, key_len);
	log_append(l, num + i, sizeof(num) - i);
}

void log_raw_key(struct log_line *l, const char *key, size_t key_len, const char *json, size_t n)
{
	if (!l->enabled || !json)
		return;
	log_key(l, key, key_len);
	log_append(l, json, n);
}

/* The writer writes at most once per LOG_BATCH_MS: a line that comes after
 * a quiet spell goes out at once, lines that follow a write closely gather
 * until LOG_BATCH_MS after it (or until a batch's worth is there) and go out
 * in one write.  Under load a producer wakes the writer about once per
 * batch, where a wake per line cost a context switch per request. */
#define LOG_BATCH_MS 10

/* One output stream: a byte ring [head, head+len) that producers append
 * whole lines to under `lock`; the writer thread writes straight out of the
 * ring without the lock (producers never touch the used region). */
struct stream {
	int fd;
	char *ring;
	size_t cap, head, len, batch;
	unsigned long long dropped, lost_pending;
	int started, stopping, dead;
	int idle;              /* the writer waits for a first line */
	int gathering;         /* the writer waits for a batch or its deadline */
	struct timespec wrote; /* the writer's last write (CLOCK_MONOTONIC) */
	pthread_t writer;
	pthread_mutex_t lock;
	pthread_cond_t more, drained;
};

static struct stream streams[LOG_STREAM_COUNT] = {
	{ .fd = STDOUT_FILENO,
	  .lock = PTHREAD_MUTEX_INITIALIZER,
	  .more = PTHREAD_COND_INITIALIZER,
	  .drained = PTHREAD_COND_INITIALIZER },
	{ .fd = STDERR_FILENO,
	  .lock = PTHREAD_MUTEX_INITIALIZER,
	  .more = PTHREAD_COND_INITIALIZER,
	  .drained = PTHREAD_COND_INITIALIZER },
};

const char *log_stream_name(enum log_stream s)
{
	return s == LOG_STREAM_STDOUT ? "stdout" : "stderr";
}

static void write_all(int fd, const char *buf, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, buf, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		buf += w;
		n -= (size_t)w;
	}
}

static void ring_put(struct stream *st, const char *p, size_t n)
{
	size_t tail = (st->head + st->len) % st->cap;
	size_t first = n < st->cap - tail ? n : st->cap - tail;

	memcpy(st->ring + tail, p, first);
	memcpy(st->ring, p + first, n - first);
	st->len += n;
}

static void unlock_cb(void *arg)
{
	pthread_mutex_unlock(arg);
}

/* ts + ms */
static void timespec_add_ms(struct timespec *ts, long ms)
{
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

/* Deadline now + ms on CLOCK_MONOTONIC, the clock log_stream_start gives
 * the condition variables: a step of the wall clock neither holds gathered
 * lines back nor cuts the stop's wait short. */
static void deadline_in(struct timespec *ts, long ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	timespec_add_ms(ts, ms);
}

/* Lines written by a write(2) that failed: counted as dropped. */
static size_t lines_in(const struct stream *st, size_t n)
{
	size_t lines = 0;

	for (size_t i = 0; i < n; i++)
		lines += st->ring[(st->head + i) % st->cap] == '\n';
	return lines ? lines : 1;
}

/* Called with the lock held: wait for a line, then, when the last write was
 * under LOG_BATCH_MS ago, for the rest of that time or a batch (or the stop). */
static void writer_gather(struct stream *st)
{
	struct timespec deadline = st->wrote, now;

	while (st->len == 0 && !st->stopping) {
		st->idle = 1;
		pthread_cond_wait(&st->more, &st->lock);
		st->idle = 0;
	}
	if (st->len == 0 || st->stopping || st->len >= st->batch)
		return;
	timespec_add_ms(&deadline, LOG_BATCH_MS);
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (now.tv_sec > deadline.tv_sec ||
	    (now.tv_sec == deadline.tv_sec && now.tv_nsec >= deadline.tv_nsec))
		return;
	st->gathering = 1;
	while (!st->stopping && st->len < st->batch)
		if (pthread_cond_timedwait(&st->more, &st->lock, &deadline) == ETIMEDOUT)
			break;
	st->gathering = 0;
}

static void *stream_writer(void *arg)
{
	struct stream *st = arg;

	pthread_mutex_lock(&st->lock);
	pthread_cleanup_push(unlock_cb, &st->lock);
	for (;;) {
		struct iovec iov[2];
		size_t n, first;
		ssize_t w;

		writer_gather(st);
		if (st->len == 0)
			break;
		/* everything gathered, in one writev even when it wraps */
		n = st->len;
		first = n < st->cap - st->head ? n : st->cap - st->head;
		iov[0] = (struct iovec){ st->ring + st->head, first };
		iov[1] = (struct iovec){ st->ring, n - first };
		pthread_mutex_unlock(&st->lock);
		w = writev(st->fd, iov, n > first ? 2 : 1); /* may block: nobody waits on us */
		pthread_mutex_lock(&st->lock);
		clock_gettime(CLOCK_MONOTONIC, &st->wrote);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) { /* reader gone or device full: the chunk's lines are lost */
			st->dropped += lines_in(st, n);
			w = (ssize_t)n;
		}
		st->head = (st->head + (size_t)w) % st->cap;
		st->len -= (size_t)w;
		if (st->len == 0)
			pthread_cond_broadcast(&st->drained);
	}
	pthread_cleanup_pop(1);
	return NULL;
}

/* The stream's condition variables on CLOCK_MONOTONIC, before its writer
 * starts (nothing waits on them or signals them while it is not started). */
static void stream_conds_monotonic(struct stream *st)
{
	pthread_condattr_t a;

	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_cond_destroy(&st->more);
	pthread_cond_destroy(&st->drained);
	pthread_cond_init(&st->more, &a);
	pthread_cond_init(&st->drained, &a);
	pthread_condattr_destroy(&a);
}

int log_stream_start(size_t cap_bytes)
{
	for (int i = 0; i < LOG_STREAM_COUNT; i++) {
		struct stream *st = &streams[i];
		int rc;

		stream_conds_monotonic(st);
		st->ring = malloc(cap_bytes);
		if (!st->ring)
			return -ENOMEM;
		st->cap = cap_bytes;
		st->batch = cap_bytes / 4;
		rc = pthread_create(&st->writer, NULL, stream_writer, st);
		if (rc != 0) {
			free(st->ring);
			st->ring = NULL;
			return -rc;
		}
		pthread_setname_np(st->writer, "log-writer");
		pthread_mutex_lock(&st->lock);
		st->started = 1;
		pthread_mutex_unlock(&st->lock);
	}
	return 0;
}

void log_stream_stop(long timeout_ms)
{
	struct timespec deadline;

	deadline_in(&deadline, timeout_ms);
	for (int i = 0; i < LOG_STREAM_COUNT; i++) {
		struct stream *st = &streams[i];
		int stuck;

		pthread_mutex_lock(&st->lock);
		if (!st->started) {
			pthread_mutex_unlock(&st->lock);
			continue;
		}
		st->stopping = 1;
		pthread_cond_broadcast(&st->more);
		while (st->len > 0)
			if (pthread_cond_timedwait(&st->drained, &st->lock, &deadline) == ETIMEDOUT)
				break;
		stuck = st->len > 0;
		pthread_mutex_unlock(&st->lock);
		if (stuck) /* blocked in write(2) on a reader that never reads */
			pthread_cancel(st->writer);
		pthread_join(st->writer, NULL);
		pthread_mutex_lock(&st->lock);
		st->started = 0;
		st->dead = stuck;
		free(st->ring);
		st->ring = NULL;
		st->len = st->head = 0;
		pthread_mutex_unlock(&st->lock);
	}
}

unsigned long long log_stream_dropped(enum log_stream s)
{
	unsigned long long n;

	pthread_mutex_lock(&streams[s].lock);
	n = streams[s].dropped;
	pthread_mutex_unlock(&streams[s].lock);
	return n;
}

void log_stream_write(enum log_stream s, const char *line, size_t n)
{
	struct stream *st = &streams[s];
	char lost[48];
	size_t nl = 0;

	pthread_mutex_lock(&st->lock);
	if (!st->started) {
		int dead = st->dead;

		pthread_mutex_unlock(&st->lock);
		if (!dead)
			write_all(st->fd, line, n);
		return;
	}
	/* "{...}\n" becomes "{...,"lines_lost":N}\n" after a drop */
	if (st->lost_pending && n >= 3 && line[n - 2] == '}')
		nl = (size_t)snprintf(lost, sizeof(lost), ",\"lines_lost\":%llu}\n",
				      st->lost_pending);
	if ((nl ? n - 2 + nl : n) > st->cap - st->len) {
		st->dropped++;
		st->lost_pending++;
	} else {
		size_t before = st->len;

		if (nl) {
			ring_put(st, line, n - 2);
			ring_put(st, lost, nl);
			st->lost_pending = 0;
		} else {
			ring_put(st, line, n);
		}
		/* wake the writer for a first line, or once when a batch is there */
		if (st->idle || (st->gathering && before < st->batch && st->len >= st->batch)) {
			st->idle = 0;
			pthread_cond_signal(&st->more);
		}
	}
	pthread_mutex_unlock(&st->lock);
}

static pthread_mutex_t recent_lock = PTHREAD_MUTEX_INITIALIZER;
static char recent[LOG_RECENT][LOG_RECENT_LINE];
static size_t recent_len[LOG_RECENT], recent_next, recent_n;

/* Keep a warn or error line (without its journald priority and newline). */
static void recent_keep(const char *line, size_t n)
{
	if (n && line[0] == '<')
		line += 3, n -= 3;
	if (n && line[n - 1] == '\n')
		n--;
	if (!n || n >= LOG_RECENT_LINE)
		return;
	pthread_mutex_lock(&recent_lock);
	memcpy(recent[recent_next], line, n);
	recent_len[recent_next] = n;
	recent_next = (recent_next + 1) % LOG_RECENT;
	if (recent_n < LOG_RECENT)
		recent_n++;
	pthread_mutex_unlock(&recent_lock);
}

void json_escape_add(struct evbuffer *out, const char *s)
{
	char small[600], *big;
	size_t n = json_escape_quoted(small, sizeof(small), s);

	if (n < sizeof(small)) {
		evbuffer_add(out, small, n);
	} else if ((big = malloc(n + 1)) != NULL) {
		json_escape_quoted(big, n + 1, s);
		evbuffer_add(out, big, n);
		free(big);
	} else {
		evbuffer_add(out, "\"\"", 2);
	}
}

void log_recent_json(struct evbuffer *out)
{
	evbuffer_add(out, "[", 1);
	pthread_mutex_lock(&recent_lock);
	for (size_t i = 0; i < recent_n; i++) {
		size_t k = (recent_next + LOG_RECENT - recent_n + i) % LOG_RECENT;

		if (i)
			evbuffer_add(out, ",", 1);
		evbuffer_add(out, recent[k], recent_len[k]);
	}
	pthread_mutex_unlock(&recent_lock);
	evbuffer_add(out, "]", 1);
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
	if (fd == STDERR_FILENO && l->level >= LOG_WARN)
		recent_keep(l->buf, l->len);
	if (fd == STDOUT_FILENO || fd == STDERR_FILENO)
		log_stream_write(fd == STDOUT_FILENO ? LOG_STREAM_STDOUT : LOG_STREAM_STDERR,
				 l->buf + off, l->len - off);
	else
		write_all(fd, l->buf + off, l->len - off);
	l->enabled = 0;
}

void log_end(struct log_line *l)
{
	log_end_to(l, STDERR_FILENO);
}

void log_ratelimit_init(struct log_ratelimit *r, long interval_ms, unsigned burst)
{
	memset(r, 0, sizeof(*r));
	r->interval_ms = interval_ms;
	r->burst = burst;
}

int log_ratelimit_allow(struct log_ratelimit *r, unsigned long *ret_suppressed)
{
	long long now = clock_mono_ms();

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
