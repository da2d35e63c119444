#include <stdio.h>
#include <string.h>

#include <event2/http.h>
#include <event2/http_struct.h> /* the request's HTTP version */

#include "bridge/access.h"
#include "bridge/accesslog.h"

static const char *method_name(enum evhttp_cmd_type cmd)
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

int accesslog_forwarded_for(struct evhttp_request *req, const struct access_list *trusted,
			    char *out, size_t cap)
{
	const char *xff = evhttp_find_header(evhttp_request_get_input_headers(req),
					     "X-Forwarded-For");
	unsigned port;
	const char *peer = peer_of(req, &port);
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

void accesslog_capture(struct accesslog_request *r, struct evhttp_request *req,
		       const struct access_list *trusted)
{
	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	const char *ua = evhttp_find_header(evhttp_request_get_input_headers(req), "User-Agent");
	const char *peer = peer_of(req, &r->client_port);

	snprintf(r->client, sizeof(r->client), "%s", peer ? peer : "");
	if (accesslog_forwarded_for(req, trusted, r->forwarded_for, sizeof(r->forwarded_for)) < 0)
		r->forwarded_for[0] = '\0';
	r->method = method_name(evhttp_request_get_command(req));
	snprintf(r->path, sizeof(r->path), "%s", path && *path ? path : "/");
	snprintf(r->http_version, sizeof(r->http_version), "%d.%d", req->major % 10,
		 req->minor % 10); /* libevent may hold an overflowed version */
	r->has_user_agent = ua != NULL;
	snprintf(r->user_agent, sizeof(r->user_agent), "%s", ua ? ua : "");
}

void accesslog_write(const struct accesslog_request *r, const struct accesslog_entry *e,
		     enum log_level level)
{
	char msg[600];
	struct log_line l;
	int n;

	n = snprintf(msg, sizeof(msg), "%s %.200s answered %d", r->method, r->path, e->status);
	if (e->route && n > 0 && (size_t)n < sizeof(msg))
		n += snprintf(msg + n, sizeof(msg) - (size_t)n, " for route %.100s", e->route);
	if (e->answered_by && n > 0 && (size_t)n < sizeof(msg))
		n += snprintf(msg + n, sizeof(msg) - (size_t)n, " (the legacy endpoint's answer)");
	if (n > 0 && (size_t)n < sizeof(msg))
		n += snprintf(msg + n, sizeof(msg) - (size_t)n, " in %.3f ms",
			      e->duration_us / 1000.0);
	if (e->error && n > 0 && (size_t)n < sizeof(msg))
		snprintf(msg + n, sizeof(msg) - (size_t)n, ": %s", e->error);

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
	log_str(&l, "message", msg);
	if (e->suppressed)
		log_int(&l, "suppressed_before", (long long)e->suppressed);
	log_end(&l);
}
