#include <stdio.h>
#include <string.h>

#include <event2/http.h>
#include <event2/http_struct.h> /* the request's HTTP version */

#include "bridge/access.h"
#include "bridge/accesslog.h"

/* cmd: libevent's EVHTTP_REQ_* bits, which httpd's are too */
static const char *method_name(int cmd)
{
	switch (cmd) {
	case EVHTTP_REQ_GET: return "GET";
	case EVHTTP_REQ_POST: return "POST";
	case EVHTTP_REQ_HEAD: return "HEAD";
	case EVHTTP_REQ_PUT: return "PUT";
	case EVHTTP_REQ_DELETE: return "DELETE";
	case EVHTTP_REQ_OPTIONS: return "OPTIONS";
	case EVHTTP_REQ_TRACE: return "TRACE";
	case EVHTTP_REQ_CONNECT: return "CONNECT";
	case EVHTTP_REQ_PATCH: return "PATCH";
	default: return "OTHER";
	}
}

/* The peer's numeric address, or NULL. */
static const char *peer_of(struct evhttp_request *req, unsigned *ret_port)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	char *peer = NULL;
	ev_uint16_t port = 0;

	if (evcon)
		evhttp_connection_get_peer(evcon, &peer, &port);
	*ret_port = port;
	return peer;
}

int accesslog_forwarded_for(const char *peer, const char *xff, const struct access_list *trusted,
			    char *out, size_t cap)
{
	size_t end;

	if (!trusted || !trusted->n || !peer || !xff || !access_list_allows(trusted, peer))
		return -1;
	/* right to left: each hop appends the address it saw */
	end = strlen(xff);
	while (end > 0) {
		size_t start = end, a, b;
		char addr[64];

		while (start > 0 && xff[start - 1] != ',')
			start--;
		for (a = start; a < end && (xff[a] == ' ' || xff[a] == '\t'); a++)
			;
		for (b = end; b > a && (xff[b - 1] == ' ' || xff[b - 1] == '\t'); b--)
			;
		end = start ? start - 1 : 0;
		if (b == a || b - a >= sizeof(addr))
			return -1; /* empty or not an address: trust nothing further */
		memcpy(addr, xff + a, b - a);
		addr[b - a] = '\0';
		{
			struct access_cidr c;

			if (access_cidr_parse(addr, &c) < 0)
				return -1;
		}
		if (!access_list_allows(trusted, addr) || start == 0) {
			snprintf(out, cap, "%s", addr);
			return 0;
		}
	}
	return -1;
}

/* s cut to what dst[cap] holds, as snprintf("%s") would, without printf. */
static void copy_cut(char *dst, size_t cap, const char *s)
{
	size_t n = strnlen(s, cap - 1);

	memcpy(dst, s, n);
	dst[n] = '\0';
}

void accesslog_capture_view(struct accesslog_request *r, const struct accesslog_view *v,
			    const struct access_list *trusted)
{
	copy_cut(r->client, sizeof(r->client), v->peer ? v->peer : "");
	r->client_port = v->peer_port;
	if (accesslog_forwarded_for(v->peer, v->forwarded_for, trusted, r->forwarded_for,
				    sizeof(r->forwarded_for)) < 0)
		r->forwarded_for[0] = '\0';
	r->method = method_name(v->method);
	copy_cut(r->path, sizeof(r->path), v->path && *v->path ? v->path : "/");
	if (v->major >= 0 && v->minor >= 0) { /* libevent may hold an overflowed version */
		r->http_version[0] = (char)('0' + v->major % 10);
		r->http_version[1] = '.';
		r->http_version[2] = (char)('0' + v->minor % 10);
		r->http_version[3] = '\0';
	} else {
		snprintf(r->http_version, sizeof(r->http_version), "%d.%d", v->major % 10,
			 v->minor % 10);
	}
	r->has_user_agent = v->user_agent != NULL;
	copy_cut(r->user_agent, sizeof(r->user_agent), v->user_agent ? v->user_agent : "");
}

void accesslog_capture(struct accesslog_request *r, struct evhttp_request *req,
		       const struct access_list *trusted)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	struct evkeyvalq *in = evhttp_request_get_input_headers(req);
	struct accesslog_view v = { .path = uri ? evhttp_uri_get_path(uri) : NULL,
				    .forwarded_for = evhttp_find_header(in, "X-Forwarded-For"),
				    .user_agent = evhttp_find_header(in, "User-Agent"),
				    .method = (int)evhttp_request_get_command(req),
				    .major = req->major,
				    .minor = req->minor };

	v.peer = peer_of(req, &v.peer_port);
	accesslog_capture_view(r, &v, trusted);
}

/* The message is built from pieces, printf-free (one per request): each
 * piece at most max bytes of s, the whole cut to what msg holds. */
struct msg {
	char s[600];
	size_t n;
};

static void msg_add(struct msg *m, const char *s, size_t max)
{
	size_t k = strnlen(s, max);

	if (k > sizeof(m->s) - 1 - m->n)
		k = sizeof(m->s) - 1 - m->n;
	memcpy(m->s + m->n, s, k);
	m->n += k;
	m->s[m->n] = '\0';
}

static void msg_int(struct msg *m, long long v)
{
	char num[24];
	size_t i = sizeof(num) - 1;
	unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;

	num[i] = '\0';
	do
		num[--i] = (char)('0' + u % 10);
	while (u /= 10);
	if (v < 0)
		num[--i] = '-';
	msg_add(m, num + i, sizeof(num));
}

void accesslog_write(const struct accesslog_request *r, const struct accesslog_entry *e,
		     enum log_level level)
{
	struct msg m = { .n = 0 };
	struct log_line l;
	char frac[4];

	m.s[0] = '\0';
	msg_add(&m, r->method, sizeof(m.s));
	msg_add(&m, " ", 1);
	msg_add(&m, r->path, 200);
	msg_add(&m, " answered ", sizeof(m.s));
	msg_int(&m, e->status);
	if (e->route) {
		msg_add(&m, " for route ", sizeof(m.s));
		msg_add(&m, e->route, 100);
	}
	if (e->answered_by)
		msg_add(&m, " (the legacy endpoint's answer)", sizeof(m.s));
	msg_add(&m, " in ", sizeof(m.s));
	if (e->duration_us >= 0) { /* microseconds as milliseconds with 3 decimals */
		msg_int(&m, e->duration_us / 1000);
		frac[0] = '.';
		frac[1] = (char)('0' + e->duration_us / 100 % 10);
		frac[2] = (char)('0' + e->duration_us / 10 % 10);
		frac[3] = (char)('0' + e->duration_us % 10);
		msg_add(&m, frac, sizeof(frac));
	} else {
		char ms[32];

		snprintf(ms, sizeof(ms), "%.3f", e->duration_us / 1000.0);
		msg_add(&m, ms, sizeof(ms));
	}
	msg_add(&m, " ms", sizeof(m.s));
	if (e->error) {
		msg_add(&m, ": ", sizeof(m.s));
		msg_add(&m, e->error, sizeof(m.s));
	}

	log_begin(&l, level, "request");
	log_str(&l, "client", r->client[0] ? r->client : NULL);
	if (r->client_port)
		log_int(&l, "client_port", r->client_port);
	log_str(&l, "forwarded_for", r->forwarded_for[0] ? r->forwarded_for : NULL);
	log_str(&l, "method", r->method);
	log_str(&l, "path", r->path);
	log_str(&l, "http_version", r->http_version);
	log_str(&l, "user_agent", r->has_user_agent ? r->user_agent : NULL);
	log_int(&l, "status", e->status);
	if (e->upstream_status)
		log_int(&l, "upstream_status", e->upstream_status);
	log_str(&l, "route", e->route);
	log_str(&l, "participation_id", e->participation_id);
	log_str(&l, "delivery_id", e->delivery_id);
	log_str(&l, "traceparent", e->traceparent);
	log_str(&l, "request_id", e->request_id);
	log_str(&l, "rule", e->rule);
	log_str(&l, "key", e->key);
	log_str(&l, "answered_by", e->answered_by);
	log_int(&l, "bytes_in", (long long)e->bytes_in);
	log_int(&l, "bytes_out", (long long)e->bytes_out);
	if (e->upstream_bytes_out)
		log_int(&l, "upstream_bytes_out", (long long)e->upstream_bytes_out);
	log_int(&l, "duration_us", e->duration_us);
	log_int(&l, "latency_ms", e->duration_us / 1000);
	log_str(&l, "error", e->error);
	log_str(&l, "message", m.s);
	if (e->suppressed)
		log_int(&l, "suppressed_before", (long long)e->suppressed);
	log_end(&l);
}
