/*
 * replay, input: every PATH expanded into its payloads (v1 JSON files,
 * folders, NDJSON files of bodies or capture lines) read one at a time under
 * the server's body limit, and each v2 compared with its expected file.
 */
#include "replay_types.h"

static int has_suffix(const char *s, const char *suffix)
{
	size_t n = strlen(s), k = strlen(suffix);

	return n >= k && strcasecmp(s + n - k, suffix) == 0;
}

static int is_ndjson_name(const char *p)
{
	return has_suffix(p, ".ndjson") || has_suffix(p, ".jsonl");
}

/* "dir/NAME.ext" -> "NAME" (malloc'd). */
static char *base_name(const char *path)
{
	const char *b = strrchr(path, '/');
	const char *dot;
	char *r;

	b = b ? b + 1 : path;
	dot = strrchr(b, '.');
	r = dot && dot != b ? strndup(b, (size_t)(dot - b)) : strdup(b);
	return r;
}

/* Read a whole file of at most max bytes into a NUL-terminated buffer.
 * -EFBIG when larger. */
static int file_read(const char *path, size_t max, char **ret, size_t *ret_len)
{
	FILE *f = fopen(path, "rb");
	struct buf b = BUF_INIT(max);
	int rc;

	if (!f)
		return -errno;
	rc = buf_read_file(&b, f);
	fclose(f);
	if (rc < 0) {
		buf_free(&b);
		return rc;
	}
	*ret = buf_take(&b, ret_len);
	return *ret ? 0 : -ENOMEM;
}

/* ---- the input stream ------------------------------------------------------ */


static enum line_status line_next(struct line_reader *lr, size_t max, char **ret, size_t *ret_len)
{
	int skipping = 0;

	for (;;) {
		char *nl = lr->end > lr->start
				   ? memchr(lr->buf + lr->start, '\n', lr->end - lr->start)
				   : NULL;

		if (nl || (lr->eof && lr->end > lr->start)) {
			size_t n = nl ? (size_t)(nl - (lr->buf + lr->start)) : lr->end - lr->start;

			*ret = lr->buf + lr->start;
			*ret_len = n;
			lr->start += n + (nl ? 1 : 0);
			if (skipping)
				return LINE_TOO_LONG;
			return n > max ? LINE_TOO_LONG : LINE_OK;
		}
		if (lr->eof) {
			*ret = lr->buf;
			*ret_len = 0;
			return skipping ? LINE_TOO_LONG : LINE_EOF;
		}
		if (lr->end - lr->start > max) { /* drop what we have, keep looking for its end */
			skipping = 1;
			lr->start = lr->end = 0;
		}
		if (lr->start > 0) {
			memmove(lr->buf, lr->buf + lr->start, lr->end - lr->start);
			lr->end -= lr->start;
			lr->start = 0;
		}
		if (lr->end == lr->cap) {
			size_t ncap = lr->cap ? lr->cap * 2 : 65536;
			char *t = realloc(lr->buf, ncap + 1);

			if (!t)
				return LINE_ERROR;
			lr->buf = t;
			lr->cap = ncap;
		}
		size_t n = fread(lr->buf + lr->end, 1, lr->cap - lr->end, lr->f);

		lr->end += n;
		if (n == 0) {
			if (ferror(lr->f))
				return LINE_ERROR;
			lr->eof = 1;
		}
	}
}


void replay_item_clear(struct item *it)
{
	free(it->label);
	free(it->name);
	free(it->body);
	free(it->problem);
	memset(it, 0, sizeof(*it));
}


static int feed_add(struct feed *fd, const char *path)
{
	char **t = grow_array(fd->files, &fd->cap_files, fd->n_files + 1, sizeof(*t), 16);

	if (!t || !(t[fd->n_files] = strdup(path)))
		return -1;
	fd->files = t;
	fd->n_files++;
	return 0;
}


static int name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}


/* Expand PATH arguments; a folder contributes its *.json / *.ndjson / *.jsonl
 * files in name order.  Errors are usage errors (exit 2). */
int replay_feed_expand(struct feed *fd, char **paths, int n)
{
	for (int i = 0; i < n; i++) {
		struct stat st;

		if (stat(paths[i], &st) < 0) {
			fprintf(stderr, "webhook-bridge replay: %s: %s\n", paths[i],
				strerror(errno));
			return -1;
		}
		if (S_ISDIR(st.st_mode)) {
			DIR *d = opendir(paths[i]);
			struct dirent *e;
			size_t first = fd->n_files;

			if (!d) {
				fprintf(stderr, "webhook-bridge replay: %s: %s\n", paths[i],
					strerror(errno));
				return -1;
			}
			while ((e = readdir(d)) != NULL) {
				char p[4096];

				if (e->d_name[0] == '.' ||
				    !(has_suffix(e->d_name, ".json") || is_ndjson_name(e->d_name)))
					continue;
				snprintf(p, sizeof(p), "%s%s%s", paths[i],
					 has_suffix(paths[i], "/") ? "" : "/", e->d_name);
				if (feed_add(fd, p) < 0) {
					closedir(d);
					return -1;
				}
			}
			closedir(d);
			qsort(fd->files + first, fd->n_files - first, sizeof(char *), name_cmp);
		} else if (feed_add(fd, paths[i]) < 0) {
			return -1;
		}
	}
	return 0;
}


static void feed_close_file(struct feed *fd)
{
	if (fd->lr.f)
		fclose(fd->lr.f);
	fd->lr.f = NULL;
	fd->lr.start = fd->lr.end = 0;
	fd->lr.eof = 0;
	free(fd->cur_base);
	fd->cur_base = NULL;
}


void replay_feed_free(struct feed *fd)
{
	feed_close_file(fd);
	free(fd->lr.buf);
	for (size_t i = 0; i < fd->n_files; i++)
		free(fd->files[i]);
	free(fd->files);
}


/* Payloads the inputs hold, for the progress bar (NDJSON: non-blank lines). */
size_t replay_feed_count(const struct feed *fd)
{
	size_t total = 0;

	for (size_t i = 0; i < fd->n_files; i++) {
		FILE *f;
		char buf[65536];
		size_t n;
		int blank = 1;

		if (!is_ndjson_name(fd->files[i])) {
			total++;
			continue;
		}
		f = fopen(fd->files[i], "rb");
		while (f && (n = fread(buf, 1, sizeof(buf), f)) > 0) {
			for (size_t k = 0; k < n; k++) {
				if (buf[k] == '\n') {
					total += !blank;
					blank = 1;
				} else if (buf[k] != ' ' && buf[k] != '\t' && buf[k] != '\r') {
					blank = 0;
				}
			}
		}
		total += !blank;
		if (f)
			fclose(f);
	}
	return total;
}


static void item_problem(struct item *it, const char *key, int skip, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));


static void item_problem(struct item *it, const char *key, int skip, const char *fmt, ...)
{
	va_list ap;
	char msg[1024];

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	free(it->body);
	it->body = NULL;
	it->problem = strdup(msg);
	it->problem_key = key;
	it->skip = skip;
}


/* Compact JSON text of v (malloc'd), or NULL. */
static char *json_text(yajl_val v, size_t *ret_len)
{
	yajl_gen g = yajl_gen_alloc(NULL);
	const unsigned char *buf;
	size_t len;
	char *out = NULL;

	if (!g)
		return NULL;
	if (jsontree_gen(g, v, NULL) == 0 &&
	    yajl_gen_get_buf(g, &buf, &len) == yajl_gen_status_ok &&
	    (out = malloc(len + 1)) != NULL) {
		memcpy(out, buf, len);
		out[len] = '\0';
		if (ret_len)
			*ret_len = len;
	}
	yajl_gen_free(g);
	return out;
}


/* An NDJSON line: a v1 body as is, or a capture record (an object whose
 * "body" is an object, or that is marked "invalid"). */
static void item_from_line(struct item *it, const char *line, size_t n, size_t max_body)
{
	const char *body_path[] = { "body", NULL };
	const char *invalid_path[] = { "invalid", NULL };
	const char *reason_path[] = { "reason", NULL };
	char ebuf[256];
	char *text;
	yajl_val root, body, invalid;

	if (memchr(line, '\0', n)) {
		item_problem(it, "invalid_line", 0, "the line contains a NUL byte");
		return;
	}
	if (v1_json_depth(line, n) > CAPTURE_DEPTH_MAX) {
		item_problem(it, "invalid_line", 0, "the line nests deeper than %d",
			     CAPTURE_DEPTH_MAX);
		return;
	}
	text = strndup(line, n);
	if (!text) {
		item_problem(it, "invalid_line", 0, "out of memory");
		return;
	}
	root = yajl_tree_parse(text, ebuf, sizeof(ebuf));
	if (!root || !YAJL_IS_OBJECT(root)) {
		/* leave it to the v1 parser: it says where and why */
		yajl_tree_free(root);
		it->body = text;
		it->len = n;
		return;
	}
	body = yajl_tree_get(root, body_path, yajl_t_any);
	invalid = yajl_tree_get(root, invalid_path, yajl_t_any);
	if (invalid && YAJL_IS_TRUE(invalid) && !body) {
		yajl_val reason = yajl_tree_get(root, reason_path, yajl_t_string);

		item_problem(it, "recorded_invalid", 1, "recorded as invalid: %s",
			     reason ? YAJL_GET_STRING(reason) : "no reason given");
		free(text);
	} else if (body && YAJL_IS_OBJECT(body)) {
		size_t len = 0;
		char *v1 = json_text(body, &len);

		free(text);
		if (!v1)
			item_problem(it, "invalid_line", 0, "cannot re-emit the captured body");
		else if (len > max_body) {
			free(v1);
			item_problem(it, "too_large", 0,
				     "captured body of %zu bytes is over limits.max_body (%zu)",
				     len, max_body);
		} else {
			it->body = v1;
			it->len = len;
		}
	} else {
		it->body = text;
		it->len = n;
	}
	yajl_tree_free(root);
}


/* Next payload, or 0 at the end of the inputs. */
int replay_feed_next(struct feed *fd, struct item *it)
{
	memset(it, 0, sizeof(*it));
	for (;;) {
		if (fd->lr.f) {
			char *line;
			size_t n;
			enum line_status st = line_next(&fd->lr, fd->max_line, &line, &n);
			char lbl[4200];

			if (st == LINE_EOF || st == LINE_ERROR) {
				int err = st == LINE_ERROR;

				if (err) {
					snprintf(lbl, sizeof(lbl), "%s:%ld", fd->cur,
						 fd->line_no + 1);
					it->label = strdup(lbl);
					it->name = strdup(lbl);
					item_problem(it, "read_error", 0, "cannot read: %s",
						     strerror(errno ? errno : EIO));
				}
				feed_close_file(fd);
				if (err)
					return 1;
				continue;
			}
			fd->line_no++;
			while (n &&
			       (line[n - 1] == '\r' || line[n - 1] == ' ' || line[n - 1] == '\t'))
				n--;
			if (st == LINE_OK && n == 0)
				continue; /* blank line */
			snprintf(lbl, sizeof(lbl), "%s:%ld", fd->cur, fd->line_no);
			it->label = strdup(lbl);
			snprintf(lbl, sizeof(lbl), "%s.%ld", fd->cur_base, fd->line_no);
			it->name = strdup(lbl);
			if (st == LINE_TOO_LONG)
				item_problem(it, "too_large", 0, "line longer than %zu bytes",
					     fd->max_line);
			else
				item_from_line(it, line, n, fd->max_body);
			return 1;
		}
		if (fd->next >= fd->n_files)
			return 0;
		fd->cur = fd->files[fd->next++];
		if (is_ndjson_name(fd->cur)) {
			fd->lr.f = fopen(fd->cur, "rb");
			fd->line_no = 0;
			fd->cur_base = base_name(fd->cur);
			if (!fd->lr.f) {
				it->label = strdup(fd->cur);
				it->name = base_name(fd->cur);
				item_problem(it, "read_error", 0, "cannot open: %s",
					     strerror(errno));
				free(fd->cur_base);
				fd->cur_base = NULL;
				return 1;
			}
			continue;
		}
		it->label = strdup(fd->cur);
		it->name = base_name(fd->cur);
		{
			int rc = file_read(fd->cur, fd->max_body, &it->body, &it->len);

			if (rc == -EFBIG)
				item_problem(it, "too_large", 0, "over limits.max_body (%zu bytes)",
					     fd->max_body);
			else if (rc < 0)
				item_problem(it, "read_error", 0, "cannot read: %s", strerror(-rc));
		}
		return 1;
	}
}


/* ---- expected output ------------------------------------------------------- */


/* "form[email].responses[0].value: expected \"a\", got \"b\"" for up to
 * three differences. */
static void diff_message(const struct jsondiff *df, char *msg, size_t cap)
{
	size_t total = df->n_added + df->n_removed + df->n_changed, o;

	o = (size_t)snprintf(msg, cap, "%zu difference(s)", total);
	for (size_t i = 0; i < df->n_entries && i < 3 && o < cap; i++) {
		const struct jsondiff_entry *e = &df->entries[i];
		const char *path = e->path[0] ? e->path : "(root)";
		int n;

		if (e->kind == JSONDIFF_ADDED)
			n = snprintf(msg + o, cap - o, "%s %s: unexpected, got %.*s", i ? ";" : ":",
				     path, (int)(e->b_len > 120 ? 120 : e->b_len), e->b);
		else if (e->kind == JSONDIFF_REMOVED)
			n = snprintf(msg + o, cap - o, "%s %s: missing, expected %.*s",
				     i ? ";" : ":", path, (int)(e->a_len > 120 ? 120 : e->a_len),
				     e->a);
		else
			n = snprintf(msg + o, cap - o, "%s %s: expected %.*s, got %.*s",
				     i ? ";" : ":", path, (int)(e->a_len > 120 ? 120 : e->a_len),
				     e->a, (int)(e->b_len > 120 ? 120 : e->b_len), e->b);
		if (n < 0)
			break;
		o += (size_t)n;
	}
	if (total > 3 && o < cap)
		snprintf(msg + o, cap - o, "; ...");
}


/* Compare with DIR/NAME.json (or DIR/NAME.error).  `v2` is the output, or
 * NULL when the payload was refused with `refusal`. */
enum expect_result replay_expect_check(const char *dir, const char *name, const char *v2,
				       size_t v2_len, const char *refusal, char *msg, size_t cap)
{
	char path[4200];
	char *text = NULL;
	size_t len;
	int rc;

	snprintf(path, sizeof(path), "%s/%s.error", dir, name);
	if (access(path, F_OK) == 0) {
		char *line2, *end;

		if (file_read(path, 65536, &text, &len) < 0) {
			snprintf(msg, cap, "cannot read %s", path);
			return EXPECT_MISMATCH;
		}
		line2 = strchr(text, '\n');
		line2 = line2 ? line2 + 1 : text + len;
		end = line2 + strcspn(line2, "\r\n");
		*end = '\0';
		if (v2) {
			snprintf(msg, cap, "%s says the payload is refused (%s), but it mapped",
				 path, line2);
			rc = EXPECT_MISMATCH;
		} else if (!strstr(refusal, line2)) {
			snprintf(msg, cap, "refused as %s expects, but the message lacks \"%s\"",
				 path, line2);
			rc = EXPECT_MISMATCH;
		} else {
			rc = EXPECT_MATCH;
		}
		free(text);
		return (enum expect_result)rc;
	}
	snprintf(path, sizeof(path), "%s/%s.json", dir, name);
	rc = file_read(path, EXPECT_MAX, &text, &len);
	if (rc == -ENOENT) {
		snprintf(msg, cap, "no expected file %s", path);
		return EXPECT_MISSING;
	}
	if (rc < 0) {
		snprintf(msg, cap, "cannot read %s: %s", path,
			 rc == -EFBIG ? "larger than 16 MiB" : strerror(-rc));
		return EXPECT_MISMATCH;
	}
	if (!v2) {
		free(text);
		snprintf(msg, cap, "%s expects a v2 document, but the payload was refused", path);
		return EXPECT_MISMATCH;
	}
	{
		struct jsondiff_options o = { .name_a = path,
					      .name_b = "the v2 output",
					      .max_input = EXPECT_MAX };
		struct jsondiff df;
		struct bridge_error err;

		bridge_error_clear(&err);
		if (jsondiff_compare(text, len, v2, v2_len, &o, &df, &err) < 0) {
			snprintf(msg, cap, "cannot compare: %s", err.message);
			rc = EXPECT_MISMATCH;
		} else if (df.n_added + df.n_removed + df.n_changed) {
			diff_message(&df, msg, cap);
			rc = EXPECT_MISMATCH;
		} else {
			rc = EXPECT_MATCH;
		}
		jsondiff_clear(&df);
	}
	free(text);
	return (enum expect_result)rc;
}
