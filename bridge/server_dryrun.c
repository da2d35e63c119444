/*
 * server_dryrun: what a dry run reports (the v2 it would send on stdout,
 * the report file, unmapped keys) and the real v2 path, where Qualifio's
 * own v2 posts are verified and compared with the translated ones.
 */
#include "server_types.h"

/* The payload it would send, on stdout, one JSON line per participation
 * (dry_run.stdout); through the log's bounded buffer, so a stdout nobody
 * reads costs lines, never the event loop. */
void server_dry_run_print(const struct exchange *x, const struct mapping_result *m)
{
	struct evbuffer *line;
	char ts[32];

	if (!x->gen->cfg->dry_run_stdout)
		return;
	line = evbuffer_new();
	log_time_now(ts, sizeof(ts));
	evbuffer_add_printf(line, "{\"event\":\"dry-run\",\"time\":\"%s\"", ts);
	server_json_field(line, "route", x->route->name);
	server_json_field(line, "delivery_id", x->delivery_id);
	server_json_field(line, "participation_id", m->participation_id);
	evbuffer_add_printf(line, ",\"unmapped\":");
	server_unmapped_json(line, m);
	evbuffer_add_printf(line, ",\"v2\":");
	evbuffer_add(line, m->body, m->len);
	evbuffer_add(line, "}\n", 2);
	log_stream_write(LOG_STREAM_STDOUT, (const char *)evbuffer_pullup(line, -1),
			 evbuffer_get_length(line));
	evbuffer_free(line);
}

void server_report_unmapped(struct exchange *x, const struct mapping_result *m)
{
	static const char *const policy[] = { "form", "drop", "reject" };
	struct evbuffer *keys = evbuffer_new();
	struct log_line l;

	for (size_t i = 0; i < m->n_unmapped; i++)
		metrics_unmapped(x->gen->metrics, x->route_index, m->unmapped[i]);
	server_unmapped_json(keys, m);
	log_begin(&l, LOG_WARN, "unmapped");
	log_str(&l, "route", x->route->name);
	log_str(&l, "participation_id", m->participation_id);
	log_str(&l, "delivery_id", x->delivery_id[0] ? x->delivery_id : NULL);
	log_str(&l, "policy", policy[m->unmapped_policy]);
	log_raw(&l, "keys", (const char *)evbuffer_pullup(keys, -1), evbuffer_get_length(keys));
	log_end(&l);
	evbuffer_free(keys);
}

/* ---- dry-run report ------------------------------------------------------ */

static void report_head(struct evbuffer *line, const struct exchange *x)
{
	char ts[32];

	log_time_now(ts, sizeof(ts));
	evbuffer_add_printf(line, "{\"time\":\"%s\"", ts);
	/* several bridges: which one wrote the line */
	server_json_field(line, "instance", x->gen->cfg->queue.shared.instance);
	server_json_field(line, "route", x->route->name);
	server_json_field(line, "mode", route_mode_name(x->route->mode));
}

static void report_emit(const struct exchange *x, struct evbuffer *line)
{
	evbuffer_add(line, "}\n", 2);
	if (x->srv->opt.report)
		jsonl_write(x->srv->opt.report, (const char *)evbuffer_pullup(line, -1),
			    evbuffer_get_length(line));
	evbuffer_free(line);
}

/* The provenance of every v2 value: [{"path","rule","from","what"}], rule
 * files named relative to the config's folder (config_path), as the sender
 * and the metrics see them: the report feeds /dry-run/summary. */
static void provenance_json(struct evbuffer *out, const struct mapping_result *m,
			    const char *config_path)
{
	char rule[600];

	evbuffer_add(out, "[", 1);
	for (size_t i = 0; i < m->n_trace; i++) {
		const struct mapping_trace *t = &m->trace[i];

		evbuffer_add_printf(out, "%s{\"path\":", i ? "," : "");
		server_json_str(out, t->path, strlen(t->path));
		snprintf(rule, sizeof(rule), "%s:%d",
			 t->file ? cfg_relative_path(config_path, t->file) : "", t->line);
		server_json_field(out, "rule", rule);
		server_json_field(out, "from", t->from_key);
		server_json_field(out, "what", t->what);
		evbuffer_add(out, "}", 1);
	}
	evbuffer_add(out, "]", 1);
}

/* A dry-run (or dual) translation: in dry-run offered to the shadow store (when a real v2 of
 * the same participation already waits there, the comparison is made now)
 * and written to the report with its provenance. */
static void count_comparison(struct metrics *m, const char *route, const struct shadow_result *r)
{
	metrics_shadow_compared(m, route,
				r->status == SHADOW_IDENTICAL   ? SHADOW_RESULT_IDENTICAL
				: r->status == SHADOW_DIFFERENT ? SHADOW_RESULT_DIFFERENT
								: SHADOW_RESULT_NOT_COMPARED);
}

void server_dry_run_record(struct exchange *x, const struct mapping_result *m)
{
	struct server *s = x->srv;
	struct evbuffer *prov = evbuffer_new();
	struct shadow_result res;
	char *comparison = NULL;
	int matched = 0;

	provenance_json(prov, m, x->gen->cfg->path);
	evbuffer_add(prov, "", 1); /* NUL for the shadow store */
	memset(&res, 0, sizeof(res));
	if (s->opt.shadow && m->participation_id && x->route->mode == ROUTE_DRY_RUN) {
		struct bridge_error err;

		bridge_error_clear(&err);
		matched = shadow_offer(s->opt.shadow, SHADOW_TRANSLATED, x->route->name,
				       m->participation_id, m->state ? m->state : "", m->body,
				       m->len, (const char *)evbuffer_pullup(prov, -1),
				       clock_mono_ms(), &res, &err);
		if (matched < 0) {
			struct log_line l;

			log_begin(&l, LOG_WARN, "shadow_refused");
			log_str(&l, "route", x->route->name);
			log_str(&l, "message", err.message);
			log_end(&l);
		} else if (matched == 1) {
			count_comparison(x->gen->metrics, x->route->name, &res);
			comparison = shadow_result_json(&res);
		}
		shadow_result_clear(&res);
	}
	if (s->opt.report) {
		struct evbuffer *line = evbuffer_new();

		report_head(line, x);
		server_json_field(line, "delivery_id", x->delivery_id);
		server_json_field(line, "participation_id", m->participation_id);
		server_json_field(line, "state", m->state);
		evbuffer_add_printf(line, ",\"v2\":");
		evbuffer_add(line, m->body, m->len);
		evbuffer_add_printf(line, ",\"provenance\":");
		evbuffer_add(line, evbuffer_pullup(prov, -1), evbuffer_get_length(prov) - 1);
		evbuffer_add_printf(line, ",\"unmapped\":");
		server_unmapped_json(line, m);
		if (comparison)
			evbuffer_add_printf(line, ",\"comparison\":%s", comparison);
		report_emit(x, line);
	}
	free(comparison);
	evbuffer_free(prov);
}

void server_report_failure(const struct exchange *x, const struct bridge_error *err,
			   const char *rule)
{
	struct evbuffer *line = evbuffer_new();

	report_head(line, x);
	evbuffer_add_printf(line, ",\"error\":{\"message\":");
	server_json_str(line, err->message, strlen(err->message));
	if (rule[0])
		server_json_field(line, "rule", rule);
	if (err->key[0])
		server_json_field(line, "key", err->key);
	evbuffer_add(line, "}", 1);
	report_emit(x, line);
}

/* ---- real v2 posts (dry_run.v2_path) ------------------------------------- */


/* The fields the correlation needs from a real v2 document. */
struct real_v2 {
	char id[160], state[80], website[32], campaign[32];
	int has_website, has_campaign;
};

static void tree_text(yajl_val root, const char **path, char *out, size_t cap, int *found)
{
	yajl_val v = yajl_tree_get(root, path, yajl_t_any);
	const char *t = NULL;
	char canon[32];
	struct bridge_error err;

	out[0] = '\0';
	if (!v)
		return;
	if (YAJL_IS_STRING(v))
		t = YAJL_GET_STRING(v);
	else if (YAJL_IS_NUMBER(v))
		t = YAJL_GET_NUMBER(v);
	if (!t)
		return;
	if (found) { /* an id to route on: canonical integer text */
		if (convert_integer(t, strlen(t), canon, sizeof(canon), &err) < 0)
			return;
		t = canon;
		*found = 1;
	}
	snprintf(out, cap, "%s", t);
}

/* The body of a real v2 post as text (*ret, NUL-terminated, owned) and the
 * fields the correlation needs in *r; -1 when req was answered. */
static int real_v2_read(struct server *s, struct httpd_request *req, struct real_v2 *r, char **ret)
{
	static const char *id_path[] = { "id", NULL }, *state_path[] = { "state", NULL };
	static const char *cid_path[] = { "campaign", "id", NULL };
	static const char *wid_path[] = { "campaign", "channel", "website", "id", NULL };
	struct evbuffer *buf = req->body;
	size_t len = evbuffer_get_length(buf);
	char *text, ebuf[256];
	yajl_val root = NULL;

	if (v1_encoding_of(httpd_find(req, "Content-Type")) != V1_ENC_JSON) {
		server_refuse(req, 415, OUTCOME_INVALID_INPUT, "unsupported_media_type",
			      "a v2 post is application/json");
		return -1;
	}
	if (len > s->cfg->max_body) {
		server_refuse(req, 413, OUTCOME_INVALID_INPUT, "body_too_large",
			      "the v2 post is over limits.max_body");
		return -1;
	}
	text = malloc(len + 1);
	if (!text) {
		server_refuse(req, 503, OUTCOME_INTERNAL, "out_of_memory",
			      "the bridge is out of memory; retry later");
		return -1;
	}
	evbuffer_copyout(buf, text, len);
	text[len] = '\0';
	if (memchr(text, '\0', len) || v1_json_depth(text, len) > 32 ||
	    !(root = yajl_tree_parse(text, ebuf, sizeof(ebuf))) || !YAJL_IS_OBJECT(root)) {
		if (root && !YAJL_IS_OBJECT(root))
			yajl_tree_free(root);
		free(text);
		server_refuse(req, 400, OUTCOME_INVALID_INPUT, "invalid_json",
			      "the v2 post is not one JSON object");
		return -1;
	}
	memset(r, 0, sizeof(*r));
	tree_text(root, id_path, r->id, sizeof(r->id), NULL);
	tree_text(root, state_path, r->state, sizeof(r->state), NULL);
	tree_text(root, cid_path, r->campaign, sizeof(r->campaign), &r->has_campaign);
	tree_text(root, wid_path, r->website, sizeof(r->website), &r->has_website);
	yajl_tree_free(root);
	if (!r->id[0]) {
		free(text);
		server_refuse(req, 422, OUTCOME_INVALID_INPUT, "missing_id",
			      "the v2 post has no participation id");
		return -1;
	}
	*ret = text;
	return 0;
}

/* The dry-run route that takes r, its signature verified; NULL when req
 * was answered. */
static const struct bridge_route *real_v2_route(struct server *s, struct httpd_request *req,
						const struct real_v2 *r, const char *text,
						size_t len)
{
	const struct bridge_route *route;
	const char *sig;
	char msg[600];

	route = translate_route_for(s->cfg, r->has_website ? r->website : NULL,
				    r->has_campaign ? r->campaign : NULL);
	if (!route || route->mode != ROUTE_DRY_RUN) {
		snprintf(msg, sizeof(msg),
			 "no dry-run route takes website_id %s and campaign_id %s",
			 r->has_website ? r->website : "(absent)",
			 r->has_campaign ? r->campaign : "(absent)");
		server_refuse(req, 422, OUTCOME_NO_ROUTE, "no_route", msg);
		return NULL;
	}
	/* Qualifio signs real v2 posts: verify with the route's secrets (a
	 * rotation may have either one in force) */
	sig = httpd_find(req, route->signature_header);
	if (!route->n_secrets || !sig ||
	    sign_verify((const char *const *)route->secrets, route->secret_lens, route->n_secrets,
			text, len, route->signature_encoding, sig, strlen(sig)) < 0) {
		server_refuse(req, 401, OUTCOME_UNAUTHORIZED, "bad_signature",
			      "the v2 post's signature does not verify");
		return NULL;
	}
	return route;
}

/* A comparison as a line of the dry-run report. */
static void report_compared(struct server *s, const struct bridge_route *route,
			    const struct real_v2 *r, const char *cmp)
{
	struct evbuffer *line = evbuffer_new();
	char ts[32];

	log_time_now(ts, sizeof(ts));
	evbuffer_add_printf(line, "{\"event\":\"compared\",\"time\":\"%s\"", ts);
	server_json_field(line, "instance", s->cfg->queue.shared.instance);
	server_json_field(line, "route", route->name);
	server_json_field(line, "participation_id", r->id);
	server_json_field(line, "state", r->state);
	evbuffer_add_printf(line, ",\"comparison\":%s}\n", cmp);
	jsonl_write(s->opt.report, (const char *)evbuffer_pullup(line, -1),
		    evbuffer_get_length(line));
	evbuffer_free(line);
}

void server_real_v2(struct server *s, struct httpd_request *req)
{
	size_t len = evbuffer_get_length(req->body);
	const struct bridge_route *route;
	struct real_v2 r;
	struct shadow_result res;
	struct bridge_error err;
	struct evbuffer *b;
	char *text;
	int matched;

	if (!server_auth_ok(&s->cfg->auth, req)) {
		server_auth_challenge(req, &s->cfg->auth);
		server_refuse(req, 401, OUTCOME_UNAUTHORIZED, "unauthorized",
			      "authentication required");
		return;
	}
	if (real_v2_read(s, req, &r, &text) < 0)
		return;
	if (!(route = real_v2_route(s, req, &r, text, len))) {
		free(text);
		return;
	}
	if (s->opt.v2_record) {
		/* Captured once verified, for `learn`; a failed write never fails
		 * the post. */
		bridge_error_clear(&err);
		if (v2record_write(s->opt.v2_record, text, len, &err) < 0)
			server_log_capture_failure(s, &err);
	}
	memset(&res, 0, sizeof(res));
	bridge_error_clear(&err);
	matched = shadow_offer(s->opt.shadow, SHADOW_REAL, route->name, r.id, r.state, text, len,
			       NULL, clock_mono_ms(), &res, &err);
	free(text);
	if (matched < 0) {
		server_refuse(req, 422, OUTCOME_INVALID_INPUT, "shadow_refused", err.message);
		return;
	}
	if (matched)
		count_comparison(s->gen->metrics, route->name, &res);
	b = evbuffer_new();
	evbuffer_add_printf(b, "{\"status\":\"%s\"", matched ? "compared" : "waiting");
	server_json_field(b, "route", route->name);
	server_json_field(b, "participation_id", r.id);
	if (matched) {
		char *cmp = shadow_result_json(&res);

		if (cmp) {
			evbuffer_add_printf(b, ",\"comparison\":%s", cmp);
			if (s->opt.report)
				report_compared(s, route, &r, cmp);
			free(cmp);
		}
		shadow_result_clear(&res);
	}
	server_answer_json(req, NULL, 200, b, &(struct answer_note){ .outcome = ANSWER_UNCOUNTED });
}
