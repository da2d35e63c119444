/* The base layer: buf (ceiling, growth), the JSON escaper in each of its
 * forms, the UTF-8 decoder, SipHash-2-4 against the reference vectors, the
 * two clocks, the log line's keys. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bridge/arena.h"
#include "bridge/buf.h"
#include "bridge/clock.h"
#include "bridge/json.h"
#include "bridge/log.h"
#include "bridge/siphash.h"
#include "bridge/utf8.h"
#include "tap.h"

static char *esc(const char *s, size_t n, unsigned flags)
{
	static char out[256];

	json_escape_to(out, sizeof(out), s, n, flags, NULL);
	return out;
}

static void test_buf(void)
{
	struct buf b = BUF_INIT(10);
	char *s;
	size_t len;

	ok(buf_str(&b, "hello") && b.len == 5 && strcmp(b.s, "hello") == 0, "buf appends");
	ok(buf_printf(&b, "%d", 1234) && strcmp(b.s, "hello1234") == 0, "buf_printf appends");
	ok(buf_char(&b, '!') && b.len == 10, "an append up to the ceiling is taken");
	ok(!buf_char(&b, '?') && b.failed, "one byte over the ceiling fails");
	ok(!buf_str(&b, "") && strcmp(b.s, "hello1234!") == 0, "a failed buffer stays failed");
	ok(buf_take(&b, &len) == NULL && len == 0 && b.s == NULL, "a failed buffer gives nothing");

	buf_init(&b, 8);
	ok(!buf_printf(&b, "%s", "123456789") && b.failed, "buf_printf respects the ceiling");
	buf_free(&b);
	buf_init(&b, SIZE_MAX);
	for (int i = 0; i < 1000; i++)
		buf_printf(&b, "%03d,", i);
	ok(!b.failed && b.len == 4000 && strncmp(b.s + 3996, "999,", 4) == 0,
	   "buf grows past its first capacity");
	s = buf_take(&b, &len);
	ok(s && len == 4000 && b.s == NULL && b.len == 0, "buf_take hands the text over");
	free(s);
	s = buf_take(&b, &len);
	is_str(s, "", "an empty buffer gives \"\"");
	free(s);
}

static void test_read_file(void)
{
	FILE *f = tmpfile();
	struct buf b = BUF_INIT(100000);

	for (int i = 0; i < 100000; i++)
		fputc('a' + i % 26, f);
	rewind(f);
	is_int(buf_read_file(&b, f), 0, "a file as large as the ceiling is read");
	ok(b.len == 100000 && b.s[99999] == 'a' + 99999 % 26 && b.s[100000] == '\0',
	   "every byte, NUL-terminated");
	buf_free(&b);
	buf_init(&b, 99999);
	rewind(f);
	is_int(buf_read_file(&b, f), -EFBIG, "one byte more than the ceiling is -EFBIG");
	buf_free(&b);
	fclose(f);
}

static void test_grow(void)
{
	size_t cap = 0;
	int *a = grow_array(NULL, &cap, 1, sizeof(int), 16), *t;

	ok(a && cap == 16, "first growth takes the first size");
	t = grow_array(a, &cap, 16, sizeof(int), 16);
	ok(t == a && cap == 16, "no growth while it fits");
	a = grow_array(a, &cap, 100, sizeof(int), 16);
	ok(a && cap == 128, "doubles until it fits");
	a[99] = 7;
	t = grow_array(a, &cap, SIZE_MAX / 2, sizeof(int), 16);
	ok(!t && cap == 128 && a[99] == 7, "an overflowing size fails and keeps the array");
	free(a);
}

static void test_escape(void)
{
	const char ctl[] = "a\"b\\c\nd\re\tf\bg\fh\x01i\x7fj";
	size_t n = sizeof(ctl) - 1, bad;
	char small[8];
	struct buf b = BUF_INIT(SIZE_MAX);

	is_str(esc(ctl, n, JSON_ESC_YAJL), "a\\\"b\\\\c\\nd\\re\\tf\\bg\\fh\\u0001i\x7fj",
	       "yajl form: \\b \\f \\n \\r \\t named, DEL as it is");
	is_str(esc(ctl, n, JSON_ESC_YAJL | JSON_ESC_UPPER),
	       "a\\\"b\\\\c\\nd\\re\\tf\\bg\\fh\\u0001i\x7fj",
	       "upper-case hex changes no named escape");
	is_str(esc("\x1f", 1, JSON_ESC_UPPER), "\\u001F", "upper-case hex");
	is_str(esc(ctl, n, JSON_ESC_LOG), "a\\\"b\\\\c\\nd\\re\\tf\\u0008g\\u000ch\\u0001i\\u007fj",
	       "log form: \\n \\r \\t named, \\b \\f and DEL as \\u00xx");
	is_str(esc(ctl, n, 0), "a\\\"b\\\\c\\u000ad\\u000de\\u0009f\\u0008g\\u000ch\\u0001i\x7fj",
	       "plain form: only quote and backslash named");
	is_str(esc("\0x", 2, 0), "\\u0000x", "NUL is escaped");
	is_str(esc("caf\xc3\xa9 \xe2\x82\xac", 9, JSON_ESC_STRICT), "caf\xc3\xa9 \xe2\x82\xac",
	       "UTF-8 copied under STRICT");
	is_str(esc("a\xff"
		   "b\xc3",
		   4, JSON_ESC_REPLACE),
	       "a\xef\xbf\xbd"
	       "b\xef\xbf\xbd",
	       "REPLACE: each ill-formed byte is U+FFFD");
	is_str(esc("a\xff"
		   "b",
		   3, 0),
	       "a\xff"
	       "b",
	       "unchecked: high bytes copied");
	json_escape_to(small, sizeof(small), "ab\"cdef", 7, 0, &bad);
	is_int(bad, 7, "ret_bad = n when all is well");
	json_escape_to(small, sizeof(small), "abc\xc0\x80", 5, JSON_ESC_STRICT, &bad);
	is_int(bad, 3, "STRICT names the first ill-formed byte");

	is_int(json_escape_to(small, sizeof(small), "abcd\"ef", 7, 0, NULL), 8,
	       "returns the whole length when cut");
	is_str(small, "abcd\\\"e", "cut on the last piece that fits (snprintf)");
	is_int(json_escape_to(small, sizeof(small), "abcde\nf", 7, 0, NULL), 12, "cut length");
	is_str(small, "abcde", "an escape is never cut in half");
	is_int(json_escape_to(NULL, 0, "\n", 1, JSON_ESC_LOG, NULL), 2, "cap 0: only the length");
	is_int(json_escape(small, sizeof(small), "x\ty", 3), 4, "json_escape is the log form");
	is_str(small, "x\\ty", "json_escape text");
	json_escape_quoted(small, sizeof(small), NULL);
	is_str(small, "null", "json_escape_quoted(NULL)");

	ok(buf_json_quoted(&b, "k\"", 2, JSON_ESC_YAJL) && strcmp(b.s, "\"k\\\"\"") == 0,
	   "buf_json_quoted");
	ok(!buf_json_quoted(&b, "\xed\xa0\x80", 3, JSON_ESC_STRICT) && !b.failed &&
		   strcmp(b.s, "\"k\\\"\"") == 0,
	   "a surrogate under STRICT fails and leaves the buffer as it was");
	buf_free(&b);
	buf_init(&b, SIZE_MAX);
	for (int i = 0; i < 3000; i++)
		buf_json_escaped(&b, "\x01", 1, 0);
	ok(!b.failed && b.len == 18000, "escapes longer than the room there was grow the buffer");
	buf_free(&b);
	buf_init(&b, 11);
	ok(!buf_json_escaped(&b, "\n\n", 2, 0) && b.failed, "an escape over the ceiling fails");
	buf_free(&b);
}

/* json_put_quoted writes what buf_json_quoted writes with the same flags,
 * within JSON_QUOTED_MAX: random strings of every length around the block
 * sizes, in buffers of their exact size (sanitizers see any overrun). */
static void test_put_quoted(void)
{
	/* whole pieces: escapes, UTF-8 sequences, then ill-formed ones (rarer) */
	static const char *const piece[] = {
		"\"",   "\\",       "\n",           "\r",           "\t",
		"\b",   "\f",       "\x01",         "\x1f",         "\x7f",
		"/",    " ",        "\xc3\xa9",     "\xe2\x82\xac", "\xf0\x9f\x98\x80",
		"\xff", "\xc0\x80", "\xed\xa0\x80",
	};
	static const unsigned flags[] = { JSON_ESC_YAJL | JSON_ESC_UPPER | JSON_ESC_STRICT,
					  JSON_ESC_STRICT, JSON_ESC_NRT | JSON_ESC_STRICT };
	unsigned long long rng = 0x9E3779B97F4A7C15ULL;
	int same = 0, refused = 0, cases = 0;

	for (int i = 0; i < 20000; i++) {
		size_t want_n = (size_t)(i % 70), n = 0;
		unsigned f = flags[i % 3];
		char *s = malloc(want_n + 4), *out, *end;
		struct buf b = BUF_INIT(SIZE_MAX);
		bool want;

		while (n < want_n) {
			unsigned r;

			rng ^= rng << 13;
			rng ^= rng >> 7;
			rng ^= rng << 17;
			r = (unsigned)(rng >> 32) % 400;
			if (r >= 60) { /* mostly plain bytes, so runs cross whole blocks */
				s[n++] = (char)('c' + r % 20);
			} else {
				const char *p = piece[r < 3 ? 15 + r : r % 15];

				memcpy(s + n, p, strlen(p));
				n += strlen(p);
			}
		}
		s = realloc(s, n ? n : 1); /* exactly n bytes: over-reads show */
		out = malloc(JSON_QUOTED_MAX(n));
		want = buf_json_quoted(&b, s, n, f);
		end = json_put_quoted(out, s, n, f);
		cases++;
		refused += !want;
		if (!want && !end)
			same++;
		else if (want && end && (size_t)(end - out) == b.len &&
			 memcmp(out, b.s, b.len) == 0)
			same++;
		buf_free(&b);
		free(out);
		free(s);
	}
	printf("# json_put_quoted: %d strings, %d not UTF-8\n", cases, refused);
	is_int(same, cases, "json_put_quoted: the bytes of buf_json_quoted, 20000 strings");
	ok(refused > 100 && refused < cases - 100, "json_put_quoted: both outcomes reached");
}

static void test_utf8(void)
{
	static const struct {
		const char *s;
		size_t len;
		uint32_t cp;
	} good[] = {
		{ "A", 1, 0x41 },
		{ "\xc2\x80", 2, 0x80 },
		{ "\xdf\xbf", 2, 0x7ff },
		{ "\xe0\xa0\x80", 3, 0x800 },
		{ "\xed\x9f\xbf", 3, 0xd7ff },
		{ "\xee\x80\x80", 3, 0xe000 },
		{ "\xf0\x90\x80\x80", 4, 0x10000 },
		{ "\xf4\x8f\xbf\xbf", 4, 0x10ffff },
	};
	static const char *const bad[] = {
		"\x80",
		"\xc0\x80",
		"\xc1\xbf",
		"\xe0\x9f\xbf",
		"\xed\xa0\x80",
		"\xed\xbf\xbf",
		"\xf0\x8f\xbf\xbf",
		"\xf4\x90\x80\x80",
		"\xf5\x80\x80\x80",
		"\xff",
		"\xc3",
		"\xe2\x82",
	};
	char name[64];

	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		uint32_t cp = 0;

		snprintf(name, sizeof(name), "U+%04X decodes", (unsigned)good[i].cp);
		ok(utf8_decode((const unsigned char *)good[i].s, good[i].len, &cp) == good[i].len &&
			   cp == good[i].cp,
		   name);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(name, sizeof(name), "ill-formed sequence %zu refused", i);
		ok(utf8_decode((const unsigned char *)bad[i], strlen(bad[i]), NULL) == 0, name);
	}
	is_int(utf8_invalid_at("ab\xc3\xa9z\xc0", 6), 5, "utf8_invalid_at names the offset");
	ok(utf8_valid("caf\xc3\xa9", 5) && !utf8_valid("\xe2\x82", 2), "utf8_valid");
}

static void test_siphash(void)
{
	/* SipHash-2-4 reference: key 00..0f, message 00..(len-1) */
	static const uint64_t want[] = { 0x726fdb47dd0e0e31ULL, 0x74f839c593dc67fdULL,
					 0x0d6c8009d9a94f5aULL, 0x85676696d7fb7e2dULL };
	struct siphash_key k = { 0x0706050403020100ULL, 0x0f0e0d0c0b0a0908ULL };
	unsigned char msg[64];
	struct siphash_key r1, r2;
	char name[64];

	for (size_t i = 0; i < sizeof(msg); i++)
		msg[i] = (unsigned char)i;
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		snprintf(name, sizeof(name), "SipHash-2-4 vector of %zu bytes", i);
		ok(siphash24(&k, msg, i) == want[i], name);
	}
	ok(siphash24(&k, msg, 15) == 0xa129ca6149be45e5ULL, "SipHash-2-4 vector of 15 bytes");
	/* SipHash-1-3, same key and messages: one partial block, one full, two */
	ok(siphash13(&k, msg, 0) == 0xabac0158050fc4dcULL, "SipHash-1-3 vector of 0 bytes");
	ok(siphash13(&k, msg, 7) == 0xd3927d989bb11140ULL, "SipHash-1-3 vector of 7 bytes");
	ok(siphash13(&k, msg, 8) == 0x369095118d299a8eULL, "SipHash-1-3 vector of 8 bytes");
	ok(siphash13(&k, msg, 15) == 0xd320d86d2a519956ULL, "SipHash-1-3 vector of 15 bytes");
	ok(siphash13(&k, msg, 63) == 0x9d199062b7bbb3a8ULL, "SipHash-1-3 vector of 63 bytes");
	siphash_key_random(&r1);
	siphash_key_random(&r2);
	ok(r1.k0 != r2.k0 || r1.k1 != r2.k1, "random keys differ");
	ok(siphash_process_key() == siphash_process_key(), "one process key");
}

/* A thread's arenas, to see its blocks freed when it exits (a leak fails
 * the sanitizer and valgrind runs). */
static void *arena_thread(void *arg)
{
	struct arena a;

	(void)arg;
	arena_init(&a, 4096, 0);
	for (int i = 0; i < 8; i++)
		memset(arena_alloc(&a, 4000), i, 4000);
	arena_free(&a);
	return (void *)arena_recycled_bytes();
}

static void test_arena_recycle(void)
{
	struct arena a, b;
	size_t kept, big = 128 * 1024;
	void *first, *again, *ret = NULL;
	pthread_t t;

	arena_init(&a, 8192, 0);
	first = arena_alloc(&a, 100);
	kept = arena_recycled_bytes();
	arena_free(&a);
	ok(arena_recycled_bytes() == kept + 8192, "a released block is kept by its thread");
	arena_init(&b, 8192, 0);
	again = arena_alloc(&b, 100);
	ok(again == first && arena_recycled_bytes() == kept,
	   "the next arena with blocks of that size gets it back");
	arena_init(&a, 4096, 0);
	arena_alloc(&a, 100);
	ok(arena_recycled_bytes() == kept, "a block of another size is not taken");
	arena_free(&a);
	arena_free(&b);
	arena_init(&a, big, 0);
	arena_alloc(&a, 1);
	kept = arena_recycled_bytes();
	arena_free(&a);
	ok(arena_recycled_bytes() == kept, "a block over 64 KB goes back to malloc");
	arena_init(&a, 16384, 0);
	for (int i = 0; i < 40; i++)
		arena_alloc(&a, 16000);
	arena_free(&a);
	ok(arena_recycled_bytes() <= 256 * 1024 && arena_recycled_bytes() > 200 * 1024,
	   "a thread keeps at most 256 KB of blocks");
	ok(pthread_create(&t, NULL, arena_thread, NULL) == 0 && pthread_join(t, &ret) == 0 &&
		   (size_t)ret == 8 * 4096,
	   "another thread keeps its own blocks (freed when it exits)");
}

static void test_arena(void)
{
	struct arena a = { 0 };
	char *s, *t;
	void *big, *p;

	s = arena_strndup(&a, "ab\0cd", 5);
	ok(s && memcmp(s, "ab\0cd", 6) == 0, "arena_strndup copies NULs and terminates");
	p = arena_alloc(&a, 3);
	ok(p && (uintptr_t)p % sizeof(max_align_t) == 0, "arena_alloc is aligned for any type");
	ok(arena_alloc(&a, 0) != arena_alloc(&a, 0), "empty allocations are distinct");
	big = arena_alloc(&a, 3 * ARENA_BLOCK);
	ok(big && a.total == 4 * ARENA_BLOCK, "an allocation over a block gets its own");
	memset(big, 1, 3 * ARENA_BLOCK);
	arena_free(&a);
	ok(a.head == NULL && a.total == 0, "arena_free releases every block");

	arena_init(&a, 64, 128);
	ok(arena_alloc(&a, 60) && arena_alloc(&a, 60), "two blocks under the ceiling");
	ok(arena_alloc(&a, 60) == NULL && arena_strndup(&a, "x", 1) != NULL,
	   "a third block crosses the ceiling; room left in a block is still used");
	t = arena_strndup(&a, "0123456789", 10);
	ok(t == NULL && a.total == 128, "the ceiling holds for copies too");
	arena_free(&a);
	arena_free(NULL);
	ok(a.max == 128 && a.block == 64, "arena_free keeps the settings");

	/* Sizes 1 to 99 in blocks of 256: the ones that fit come from the head
	 * block (inline), the others from a new one; every one aligned, inside
	 * its block and after the one before it there. */
	{
		int bad = 0, blocks = 0;
		char *prev_end = NULL;

		arena_init(&a, 256, 0);
		for (size_t n = 1; n < 100; n++) {
			size_t before = a.total;
			char *q = arena_alloc(&a, n);

			if (!q || (uintptr_t)q % _Alignof(max_align_t) || q + n > a.end ||
			    q + n != a.p)
				bad++;
			if (a.total != before)
				blocks++;
			else if (prev_end && q < prev_end)
				bad++;
			if (q)
				memset(q, 7, n);
			prev_end = q + n;
		}
		ok(bad == 0 && blocks > 10,
		   "arena_alloc: aligned, in bounds, in order, block after block");
		arena_free(&a);
	}
	test_arena_recycle();
}

static void test_clock(void)
{
	int64_t w = clock_wall_ms(), m = clock_mono_ms();

	ok(w > 1600000000000LL, "clock_wall_ms is milliseconds since the epoch");
	ok(m >= 0 && m < w, "clock_mono_ms is another clock");
	ok(clock_mono_ms() >= m, "clock_mono_ms does not go back");
}

/* The text of l after its first n bytes. */
static const char *log_tail(const struct log_line *l, size_t n)
{
	static char out[256];
	size_t k = l->len > n ? l->len - n : 0;

	snprintf(out, sizeof(out), "%.*s", (int)(k < sizeof(out) ? k : sizeof(out) - 1),
		 l->buf + n);
	return out;
}

/* ,"key":1 after a value that fills the line up to fill bytes; whether it
 * was written whole. */
static int log_key_fits(const char *key, size_t key_len, size_t fill)
{
	static char filler[sizeof(((struct log_line *)0)->buf)];
	static struct log_line l;
	size_t base;

	memset(filler, 'x', sizeof(filler));
	log_begin(&l, LOG_ERROR, "e");
	base = l.len + strlen(",\"v\":\"\"");
	log_strn(&l, "v", filler, fill > base ? fill - base : 0);
	log_int_key(&l, key, key_len, 1);
	return !l.truncated && l.len > 3 && memcmp(l.buf + l.len - 3, "\":1", 3) == 0;
}

static void test_log_keys(void)
{
	static struct log_line l;
	size_t n, first_plain = 0, first_escaped = 0;
	int same = 1;

	log_begin(&l, LOG_ERROR, "e");
	n = l.len;
	log_int(&l, "status", 200);
	log_str(&l, "a\"b\\c", "v");
	log_int(&l, "new\nline\x01\x7f", 1);
	log_str(&l, "caf\xc3\xa9", "x");
	log_int(&l, "a-long-key-with\"quote", 2);
	log_int(&l, "a-long-key-with-DEL\x7f", 3);
	log_int(&l, "sixteen-byte-key", 4);
	log_int(&l, "nine-byte\x7fkey", 5);
	log_int(&l, "twelve-bytes\x1f", 6);
	log_int(&l, "seventeen-bytes-k", 7);
	log_int(&l, "q\"uote", 8);
	log_int(&l, "back\\slash", 9);
	is_str(log_tail(&l, n),
	       ",\"status\":200,\"a\\\"b\\\\c\":\"v\",\"new\\nline\\u0001\\u007f\":1,"
	       "\"caf\xc3\xa9\":\"x\",\"a-long-key-with\\\"quote\":2,"
	       "\"a-long-key-with-DEL\\u007f\":3,\"sixteen-byte-key\":4,"
	       "\"nine-byte\\u007fkey\":5,\"twelve-bytes\\u001f\":6,\"seventeen-bytes-k\":7,"
	       "\"q\\\"uote\":8,\"back\\\\slash\":9",
	       "log keys: plain ones as they are, the others escaped as values are");

	/* A plain key of 4 bytes and one that escapes to 4 (k\"y) are cut at
	 * the same place near the end of the line. */
	for (size_t fill = sizeof(l.buf) - 80; fill < sizeof(l.buf); fill++) {
		int p = log_key_fits(LOG_KEY("kyyy"), fill),
		    e = log_key_fits(LOG_KEY("k\"y"), fill);

		if (p != e)
			same = 0;
		if (!p && !first_plain)
			first_plain = fill;
		if (!e && !first_escaped)
			first_escaped = fill;
	}
	ok(same && first_plain && first_plain == first_escaped,
	   "log keys: a plain key is cut where an escaped one of its length is");
}

/* Keys of up to 16 bytes are checked two words at a time: every length,
 * with a byte that needs escaping at every place, gives the line the
 * byte-by-byte path (a key measured at run time) gives. */
static void test_log_key_words(void)
{
	static struct log_line a, b;
	static const char odd[] = {
		'"', '\\', 0x01, 0x1f, 0x7f, ' ', '!', '#', '[', ']', '~', 'A'
	};
	int same = 1, escaped = 0;

	for (size_t n = 0; n <= 16; n++) {
		for (size_t at = 0; at < (n ? n : 1); at++) {
			for (size_t c = 0; c < sizeof(odd); c++) {
				char key[17 + 16] = { 0 }; /* as LOG_KEY passes one */

				memset(key, 'k', n);
				if (n)
					key[at] = odd[c];
				size_t from_a, from_b; /* the times may differ */

				log_begin(&a, LOG_ERROR, "e");
				from_a = a.len;
				log_begin(&b, LOG_ERROR, "e");
				from_b = b.len;
				log_int_key(&a, key, n, 7);
				log_int_key(&b, key, LOG_KEY_MEASURE, 7);
				if (a.len - from_a != b.len - from_b ||
				    memcmp(a.buf + from_a, b.buf + from_b, a.len - from_a) != 0)
					same = 0;
				escaped += memchr(a.buf + from_a, '\\', a.len - from_a) != NULL;
			}
		}
	}
	ok(same, "log keys of 0-16 bytes: the word check writes what the byte check writes");
	is_int(escaped, 136 * 5, "log keys: every quote, backslash and control escaped");
}

/* A field's value is copied as it is when no byte needs escaping: every
 * length up to 40, with a byte that does (or a plain one, or one of a UTF-8
 * sequence) at every place, gives json_escape's text. */
static void test_log_value_blocks(void)
{
	static struct log_line l;
	static const char odd[] = { '"', '\\', 0x01,       0x1f,       0x7f,
				    ' ', '~',  (char)0xc3, (char)0xff, 'A' };
	int same = 1, plain = 0;

	for (size_t n = 0; n <= 40; n++) {
		for (size_t at = 0; at < (n ? n : 1); at++) {
			for (size_t c = 0; c < sizeof(odd); c++) {
				char v[41], want[300];
				size_t from, k;

				memset(v, 'v', n);
				if (n)
					v[at] = odd[c];
				log_begin(&l, LOG_ERROR, "e");
				from = l.len;
				log_strn(&l, "k", v, n);
				memcpy(want, ",\"k\":\"", 6);
				k = 6 + json_escape(want + 6, sizeof(want) - 6, v, n);
				want[k++] = '"';
				if (l.len - from != k || memcmp(l.buf + from, want, k) != 0)
					same = 0;
				plain += k == n + 7;
			}
		}
	}
	ok(same, "log values of 0-40 bytes: copied in blocks as json_escape writes them");
	/* the empty value (once per byte) and, of the 10 bytes put at each of
	 * the 820 places, the 5 that need no escape (space, ~, the two high
	 * bytes, A) leave the value as it is */
	is_int(plain, 10 + 820 * 5, "log values: the plain ones copied as they are");
}

int main(void)
{
	test_buf();
	test_read_file();
	test_grow();
	test_escape();
	test_put_quoted();
	test_utf8();
	test_siphash();
	test_arena();
	test_clock();
	test_log_keys();
	test_log_key_words();
	test_log_value_blocks();
	return tap_done();
}
