/*
 * The `map` command: v1 payloads to v2 documents on stdout.  With --ndjson
 * the input is streamed in batches of lines, mapped by --jobs threads (the
 * mapping is immutable and thread-safe) and written in input order.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bridge/buf.h"
#include "cli.h"
#include "bridge/mapping.h"
#include "bridge/translate.h"
#include "bridge/v1.h"

#define MAP_INPUT_MAX   (256u * 1024 * 1024) /* ceiling for one non-NDJSON input */
#define MAP_BATCH_LINES 2048                 /* lines per thread per round */
#define MAP_JOBS_MAX    16

static const char usage_map[] =
	"usage: webhook-bridge map --mapping FILE [--ndjson [--jobs N]] [--form] [INPUT]\n"
	"\n"
	"Maps one v1 payload (JSON, or form-urlencoded with --form) read from INPUT\n"
	"or stdin to one v2 JSON document on stdout.\n"
	"  --ndjson   one payload per input line, one v2 document per output line,\n"
	"             in input order; a line that cannot be mapped is reported on\n"
	"             stderr (with its line number) and skipped\n"
	"  --jobs N   threads mapping NDJSON lines (default: the cores, at most 16)\n"
	"exit: 0 mapped, 1 input cannot be mapped (nothing on stdout for it),\n"
	"      2 usage or configuration error\n";

static int read_all(FILE *f, char **ret, size_t *ret_len)
{
	struct buf b = BUF_INIT(MAP_INPUT_MAX);
	int rc = buf_read_file(&b, f);

	if (rc < 0) {
		buf_free(&b);
		return rc;
	}
	*ret = buf_take(&b, ret_len);
	return *ret ? 0 : -ENOMEM;
}

/* A line of spaces and tabs carries no payload: skipped like an empty one. */
static int blank(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (s[i] != ' ' && s[i] != '\t')
			return 0;
	return 1;
}

static void error_line(FILE *out, const char *input, long line_no, const struct bridge_error *err)
{
	fprintf(out, "error: %s", input);
	if (line_no > 0)
		fprintf(out, ":%ld", line_no);
	fprintf(out, ": %s", err->message);
	if (err->file)
		fprintf(out, " (rule %s:%d)", err->file, err->line);
	fputc('\n', out);
}

/* Map one payload; on success append the v2 line to out (out->failed when
 * it could not take it). */
static int map_one(const struct mapping *m, const char *text, size_t len, int form, struct buf *out,
		   struct bridge_error *err)
{
	struct v1_limits lim;
	struct v1_doc *doc = NULL;
	struct mapping_result r;
	int rc;

	translate_limits(NULL, &lim);
	if (translate_parse(form ? V1_ENC_FORM : V1_ENC_JSON, text, len, &lim, &doc, err) < 0)
		return -1;
	rc = translate_map(m, NULL, doc, 0, &r, NULL, NULL, err);
	v1_doc_free(doc);
	if (rc < 0)
		return -1;
	buf_add(out, r.body, r.len);
	buf_char(out, '\n');
	mapping_result_clear(&r);
	return 0;
}

/* One thread's share of a round: lines in, v2 lines and error lines out
 * (the v2 lines into a buffer kept from round to round, the error lines into
 * a memory stream; the main thread writes both in order). */
struct chunk {
	const struct mapping *m;
	const char *input;
	int form;
	char **lines;
	size_t *lens;
	long *line_nos;
	size_t n;
	struct buf *out;
	char *errs;
	size_t errs_len;
	int failed;
};

static void *chunk_run(void *arg)
{
	struct chunk *c = arg;
	FILE *errs = open_memstream(&c->errs, &c->errs_len);
	struct bridge_error err;

	buf_reset(c->out);
	if (!errs) {
		c->failed = -1;
		return NULL;
	}
	for (size_t i = 0; i < c->n; i++) {
		if (map_one(c->m, c->lines[i], c->lens[i], c->form, c->out, &err) < 0) {
			error_line(errs, c->input, c->line_nos[i], &err);
			c->failed++;
		}
	}
	fclose(errs);
	if (c->out->failed)
		c->failed = -1;
	return NULL;
}

static int map_ndjson(const struct mapping *m, FILE *f, const char *name, int form, int jobs)
{
	size_t per_round = (size_t)jobs * MAP_BATCH_LINES;
	char **lines = calloc(per_round, sizeof(*lines));
	size_t *lens = calloc(per_round, sizeof(*lens)), *caps = calloc(per_round, sizeof(*caps));
	long *nos = calloc(per_round, sizeof(*nos));
	struct chunk chunks[MAP_JOBS_MAX];
	struct buf outs[MAP_JOBS_MAX];
	pthread_t threads[MAP_JOBS_MAX];
	long line_no = 0;
	int failed = 0, eof = 0;

	for (int j = 0; j < MAP_JOBS_MAX; j++)
		buf_init(&outs[j], SIZE_MAX);
	if (!lines || !lens || !caps || !nos) {
		fputs("webhook-bridge map: out of memory\n", stderr);
		failed = 1;
		eof = 1;
	}
	while (!eof) {
		size_t n = 0;
		ssize_t got;

		/* read a round of non-empty lines; the buffers are reused */
		while (n < per_round && (got = getline(&lines[n], &caps[n], f)) >= 0) {
			size_t len = (size_t)got;

			line_no++;
			while (len && (lines[n][len - 1] == '\n' || lines[n][len - 1] == '\r'))
				len--;
			if (blank(lines[n], len))
				continue;
			lens[n] = len;
			nos[n] = line_no;
			n++;
		}
		if (n < per_round)
			eof = 1;
		if (n == 0)
			break;
		{
			size_t per = (n + (size_t)jobs - 1) / (size_t)jobs;
			int used = 0;

			for (int j = 0; j < jobs && (size_t)j * per < n; j++, used++) {
				size_t from = (size_t)j * per,
				       cnt = n - from < per ? n - from : per;

				chunks[j] = (struct chunk){ .m = m,
							    .input = name,
							    .form = form,
							    .lines = lines + from,
							    .lens = lens + from,
							    .line_nos = nos + from,
							    .n = cnt,
							    .out = &outs[j] };
				if (used == 0 ||
				    pthread_create(&threads[j], NULL, chunk_run, &chunks[j]) != 0)
					threads[j] = 0; /* the first chunk runs on this thread */
			}
			if (used)
				chunk_run(&chunks[0]);
			for (int j = 0; j < used; j++) {
				if (j && threads[j])
					pthread_join(threads[j], NULL);
				else if (j)
					chunk_run(&chunks[j]);
				if (chunks[j].failed < 0) {
					fputs("webhook-bridge map: out of memory\n", stderr);
					failed++;
				} else {
					if (chunks[j].out->len) /* s is NULL until a line is kept */
						fwrite(chunks[j].out->s, 1, chunks[j].out->len,
						       stdout);
					if (chunks[j].errs_len) {
						fflush(stdout);
						fwrite(chunks[j].errs, 1, chunks[j].errs_len,
						       stderr);
					}
					failed += chunks[j].failed;
				}
				free(chunks[j].errs);
			}
		}
	}
	if (ferror(f)) {
		fprintf(stderr, "webhook-bridge map: %s: read error\n", name);
		failed++;
	}
	for (size_t i = 0; lines && i < per_round; i++)
		free(lines[i]);
	for (int j = 0; j < MAP_JOBS_MAX; j++)
		buf_free(&outs[j]);
	free(lines);
	free(lens);
	free(caps);
	free(nos);
	return failed;
}

int cmd_map(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "mapping", required_argument, NULL, 'm' }, { "ndjson", no_argument, NULL, 'n' },
		{ "jobs", required_argument, NULL, 'j' },    { "form", no_argument, NULL, 'f' },
		{ "help", no_argument, NULL, 'h' },          { NULL, 0, NULL, 0 },
	};
	const char *mapping_path = NULL, *input = "-", *name;
	int ndjson = 0, form = 0, c, failed = 0, jobs = 0;
	long long num;
	struct mapping *m = NULL;
	struct diag d = { 0 };
	struct bridge_error err;
	FILE *f;
	static char outbuf[1 << 16];

	while ((c = cli_getopt("map", argc, argv, "m:j:h", opts)) != -1) {
		switch (c) {
		case 'm': mapping_path = optarg; break;
		case 'n': ndjson = 1; break;
		case 'f': form = 1; break;
		case 'j':
			if (cli_int_parse(optarg, 1, MAP_JOBS_MAX, &num) < 0)
				return cli_usage("map", "--jobs must be 1..16, not '%s'", optarg);
			jobs = (int)num;
			break;
		case 'h': fputs(usage_map, stdout); return 0;
		default: return 2;
		}
	}
	if (!mapping_path)
		return cli_usage("map", "%s", "--mapping FILE is required");
	if (optind < argc)
		input = argv[optind++];
	if (optind < argc)
		return cli_usage("map", "unexpected argument '%s'", argv[optind]);
	if (jobs == 0) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);

		jobs = n < 1 ? 1 : n > MAP_JOBS_MAX ? MAP_JOBS_MAX : (int)n;
	}
	if (mapping_load(mapping_path, &m, &d) < 0) {
		fputs(d.text ? d.text : "", stderr);
		diag_reset(&d);
		return 2;
	}
	f = strcmp(input, "-") == 0 ? stdin : fopen(input, "rb");
	if (!f) {
		fprintf(stderr, "webhook-bridge map: %s: %s\n", input, strerror(errno));
		mapping_free(m);
		return 2;
	}
	name = strcmp(input, "-") == 0 ? "<stdin>" : input;
	setvbuf(stdout, outbuf, _IOFBF, sizeof(outbuf));
	if (ndjson) {
		failed = map_ndjson(m, f, name, form, jobs);
	} else {
		char *text;
		size_t len;

		c = read_all(f, &text, &len);
		if (c < 0) {
			fprintf(stderr, "webhook-bridge map: %s: %s\n", input,
				c == -EFBIG ? "input larger than 256 MiB" : strerror(-c));
			if (f != stdin)
				fclose(f);
			mapping_free(m);
			return 2;
		}
		struct buf out = BUF_INIT(SIZE_MAX);

		if (map_one(m, text, len, form, &out, &err) < 0) {
			fflush(stdout);
			error_line(stderr, name, 0, &err);
			failed = 1;
		} else if (out.failed) {
			fputs("webhook-bridge map: out of memory\n", stderr);
			failed = 1;
		} else
			fwrite(out.s, 1, out.len, stdout);
		buf_free(&out);
		free(text);
	}
	if (f != stdin)
		fclose(f);
	fflush(stdout);
	mapping_free(m);
	return failed ? 1 : 0;
}
