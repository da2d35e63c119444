/*
 * httpd: the request reader over scripted inputs (whole and a byte at a
 * time, pipelined, every malformed shape and its answer), then the server
 * on a real loopback socket on the same event_base: answers byte for byte,
 * keep-alive and HTTP/1.0, HEAD, 100-continue, pipelining, an answer given
 * later, refusals that close, the request deadline and the idle timeout.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "bridge/httpd.h"
#include "bridge/log.h"
#include "tap.h"

#define MAX_HEAD 1024
static const struct reqhead_limits limits = { 4096, 16384 };

/* ---- the reader --------------------------------------------------------- */

struct parsed {
	enum httpd_read_rc rc;
	int status, verdict;
	char text[1024]; /* the refusal's answer */
	struct httpd_request req;
	struct arena arena;
	size_t left; /* input bytes not consumed */
};

static void parsed_free(struct parsed *p)
{
	if (p->req.body)
		evbuffer_free(p->req.body);
	arena_free(&p->arena);
}

/* data fed in pieces of `piece` bytes (0: whole) until the reader is done
 * with one request or refuses it. */
static void parse(const char *data, size_t len, size_t piece, struct parsed *p)
{
	struct httpd_reader rd;
	struct evbuffer *in = evbuffer_new();
	size_t at = 0;

	memset(p, 0, sizeof(*p));
	p->req.arena = &p->arena;
	p->req.body = evbuffer_new();
	httpd_reader_init(&rd, MAX_HEAD, &limits);
	p->rc = HTTPD_READ_MORE;
	while (at < len && (p->rc == HTTPD_READ_MORE || p->rc == HTTPD_READ_HEAD)) {
		size_t n = piece && len - at > piece ? piece : len - at;

		evbuffer_add(in, data + at, n);
		at += n;
		do
			p->rc = httpd_read(&rd, in, &p->req);
		while (p->rc == HTTPD_READ_HEAD);
	}
	p->status = rd.status;
	p->verdict = rd.verdict;
	if (p->rc == HTTPD_READ_REFUSED)
		p->text[httpd_refusal_text(&rd, p->text, sizeof(p->text) - 1)] = '\0';
	p->left = evbuffer_get_length(in) + (len - at);
	evbuffer_free(in);
}

static void t_reader_good(size_t piece)
{
	static const char post[] = "\r\nPOST /hook?a=1&b=2#frag HTTP/1.1\r\nHost: h\r\n"
				   "X-A:  spaced value \t\r\nContent-Type: application/json\r\n"
				   "Content-Length: 7\r\n\r\n{\"a\":1}GET /next HTTP/1.1\r\n";
	struct parsed p;
	char name[128];

	parse(post, sizeof(post) - 1, piece, &p);
	snprintf(name, sizeof(name), "a POST %s: read whole",
		 piece ? "a byte at a time" : "in one piece");
	is_int(p.rc, HTTPD_READ_DONE, name);
	is_int(p.req.method, HTTPD_POST, "method POST");
	is_str(p.req.path, "/hook", "path without query and fragment");
	is_str(p.req.query, "a=1&b=2", "the query");
	is_int(p.req.minor, 1, "HTTP/1.1");
	is_int(p.req.n_headers, 4, "four headers");
	is_str(httpd_find(&p.req, "x-a"), "spaced value", "value found in any case, trimmed");
	is_str(httpd_find(&p.req, "content-type"), "application/json", "Content-Type");
	ok(httpd_find(&p.req, "X-B") == NULL, "an absent header is NULL");
	is_int(evbuffer_get_length(p.req.body), 7, "the body by Content-Length");
	ok(memcmp(evbuffer_pullup(p.req.body, -1), "{\"a\":1}", 7) == 0, "the body's bytes");
	ok(!p.req.framing_bad, "framing trusted");
	is_int(p.left, 20, "the pipelined request after it is left in the input");
	parsed_free(&p);
}

static void t_reader_forms(void)
{
	static const struct {
		const char *name, *req, *path, *query;
		int method, minor;
	} cases[] = {
		{ "absolute-form with a port and a query",
		  "GET http://example.com:8080/healthz?x=1 HTTP/1.1\r\nHost: a\r\n\r\n", "/healthz",
		  "x=1", HTTPD_GET, 1 },
		{ "absolute-form without a path",
		  "HEAD https://example.com HTTP/1.1\r\nHost: a\r\n\r\n", "/", NULL, HTTPD_HEAD,
		  1 },
		{ "asterisk-form", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", "*", NULL,
		  HTTPD_OPTIONS, 1 },
		{ "HTTP/1.0 without Host", "DELETE /x HTTP/1.0\r\n\r\n", "/x", NULL, HTTPD_DELETE,
		  0 },
		{ "an empty query", "PATCH /p? HTTP/1.1\r\nHost: a\r\n\r\n", "/p", "", HTTPD_PATCH,
		  1 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct parsed p;

		parse(cases[i].req, strlen(cases[i].req), 0, &p);
		is_int(p.rc, HTTPD_READ_DONE, cases[i].name);
		is_str(p.req.path, cases[i].path, "its path");
		is_str(p.req.query, cases[i].query, "its query");
		is_int(p.req.method, cases[i].method, "its method");
		is_int(p.req.minor, cases[i].minor, "its version");
		parsed_free(&p);
	}
}

static void t_reader_refused(size_t piece)
{
	static const struct {
		const char *name, *req;
		int status, verdict;
		const char *says;
	} cases[] = {
		{ "bare LF", "GET / HTTP/1.1\nHost: a\n\n", 400, 1, "bare LF" },
		{ "bare LF in a header", "GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n", 400, 1,
		  "bare LF" },
		{ "obs-fold", "GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n z\r\n\r\n", 400, 1,
		  "obs-fold" },
		{ "NUL", "GET / HTTP/1.1\r\nHost: a\r\nX: a\0b\r\n\r\n", 400, 1, "NUL" },
		{ "no Host", "GET / HTTP/1.1\r\n\r\n", 400, 1, "without a Host" },
		{ "two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400, 1,
		  "more than one Host" },
		{ "HTTP/01.1", "GET / HTTP/01.1\r\nHost: a\r\n\r\n", 400, 1, "valid HTTP version" },
		{ "HTTP/0.9", "GET /\r\n", 400, 1, "valid HTTP version" },
		{ "HTTP/2.0", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, 0, "(HTTP 400)" },
		{ "unknown method", "BREW / HTTP/1.1\r\nHost: a\r\n\r\n", 501, 0, "(HTTP 501)" },
		{ "lower-case method", "get / HTTP/1.1\r\nHost: a\r\n\r\n", 501, 0, "(HTTP 501)" },
		{ "CONNECT", "CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 501, 0,
		  "not_implemented" },
		{ "no target", "GET  HTTP/1.1\r\nHost: a\r\n\r\n", 400, 0, "bad_request" },
		{ "space in the target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400, 0,
		  "bad_request" },
		{ "control byte in the target", "GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400, 0,
		  "bad_request" },
		{ "header without a colon", "GET / HTTP/1.1\r\nHost: a\r\nBroken\r\n\r\n", 400, 0,
		  "bad_request" },
		{ "CR inside a value", "GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", 400, 0,
		  "bad_request" },
		{ "Content-Length over the ceiling",
		  "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 16385\r\n\r\n", 413, 1,
		  "a declared Content-Length of 16385 bytes, over the limit of 4096 bytes" },
		{ "Expect over max_body",
		  "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: "
		  "4097\r\n\r\n",
		  413, 1, "body_too_large" },
		{ "an expectation other than 100-continue",
		  "POST / HTTP/1.1\r\nHost: a\r\nExpect: coffee\r\nContent-Length: 2\r\n\r\n", 417,
		  0, "(HTTP 417)" },
	};
	char name[200];

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct parsed p;
		size_t len = strlen(cases[i].req);

		if (strcmp(cases[i].name, "NUL") == 0) /* the NUL and what follows it */
			len = strlen(cases[i].req) + 1 +
			      strlen(cases[i].req + strlen(cases[i].req) + 1);
		parse(cases[i].req, len, piece, &p);
		snprintf(name, sizeof(name), "%s%s: refused %d", cases[i].name,
			 piece ? " (a byte at a time)" : "", cases[i].status);
		ok(p.rc == HTTPD_READ_REFUSED && p.status == cases[i].status, name);
		snprintf(name, sizeof(name), "%s: %s", cases[i].name,
			 cases[i].verdict ? "reqhead's message" : "the JSON error page");
		ok(p.verdict == cases[i].verdict && strstr(p.text, cases[i].says), name);
		ok(strstr(p.text, "Connection: close\r\n") != NULL, "the refusal closes");
		parsed_free(&p);
	}
}

static void t_reader_limits(void)
{
	char big[MAX_HEAD + 200];
	struct parsed p;
	int n;

	n = snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nHost: a\r\nX: %0*d\r\n\r\n",
		     MAX_HEAD - 30, 0);
	parse(big, (size_t)n, 0, &p);
	is_int(p.rc, HTTPD_READ_DONE, "a head just within max_head is read");
	parsed_free(&p);
	n = snprintf(big, sizeof(big), "GET / HTTP/1.1\r\nHost: a\r\nX: %0*d\r\n\r\n",
		     MAX_HEAD + 10, 0);
	parse(big, (size_t)n, 0, &p);
	ok(p.rc == HTTPD_READ_REFUSED && p.status == 400, "a head over max_head: 400");
	parsed_free(&p);
	parse(big, (size_t)n - 4, 7, &p);
	ok(p.rc == HTTPD_READ_REFUSED && p.status == 400,
	   "a head over max_head, still incomplete: 400 without waiting for its end");
	parsed_free(&p);
}

static void t_reader_framing(void)
{
	static const char *cases[] = {
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
		"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "
		"chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +2\r\n\r\n{}",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length : 2\r\n\r\n{}",
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x2\r\n\r\n{}",
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct parsed p;

		parse(cases[i], strlen(cases[i]), 0, &p);
		ok(p.rc == HTTPD_READ_DONE && p.req.framing_bad &&
			   evbuffer_get_length(p.req.body) == 0 && p.left > 0,
		   "untrusted framing: to the handler without a body, the rest unread");
		parsed_free(&p);
	}
}

/* ---- the server --------------------------------------------------------- */

static struct event_base *base;
static struct httpd *server;
static int port, handled;
static struct httpd_request *held;

static void answer(struct httpd_request *req)
{
	struct evbuffer *b = evbuffer_new();
	const char *a = httpd_find(req, "X-A");

	evbuffer_add_printf(b, "%s %s %s ", req->method == HTTPD_POST ? "POST" : "other", req->path,
			    a ? a : "-");
	evbuffer_add_buffer(b, req->body);
	httpd_add_header(req, "Content-Type", "text/plain");
	if (strcmp(req->path, "/close") == 0)
		httpd_add_header(req, "Connection", "close");
	httpd_send(req, 200, "OK", b);
	evbuffer_free(b);
}

static void later_cb(evutil_socket_t fd, short what, void *arg)
{
	struct httpd_request *req = held;

	held = NULL;
	answer(req);
}

#define BIG_BODY (2 * 1024 * 1024)

/* byte i of a big answer's body */
static char big_byte(size_t i)
{
	return (char)('a' + i % 23);
}

/* /big/N: a body of BIG_BODY bytes in N chunks. */
static void answer_big(struct httpd_request *req, size_t chunks)
{
	struct evbuffer *b = evbuffer_new();
	size_t piece = BIG_BODY / chunks;
	char *buf = malloc(piece);

	for (size_t c = 0; c < chunks; c++) {
		for (size_t i = 0; i < piece; i++)
			buf[i] = big_byte(c * piece + i);
		evbuffer_add(b, buf, piece);
	}
	free(buf);
	httpd_send(req, 200, "OK", b);
	evbuffer_free(b);
}

static void handler(struct httpd_request *req, void *arg)
{
	handled++;
	if (strncmp(req->path, "/big/", 5) == 0) {
		answer_big(req, (size_t)atoi(req->path + 5));
		return;
	}
	if (strcmp(req->path, "/later") == 0) {
		struct timeval tv = { 0, 50 * 1000 };

		held = req;
		event_base_once(base, -1, EV_TIMEOUT, later_cb, NULL, &tv);
		return;
	}
	answer(req);
}

static int server_start(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	socklen_t sl = sizeof(sin);
	struct evconnlistener *l;
	struct httpd_limits lim = {
		.max_head = MAX_HEAD, .body = limits, .idle_timeout_ms = 1500, .deadline_ms = 400
	};

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	l = evconnlistener_new_bind(base, NULL, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 16,
				    (struct sockaddr *)&sin, sizeof(sin));
	if (!l)
		return -1;
	getsockname(evconnlistener_get_fd(l), (struct sockaddr *)&sin, &sl);
	port = ntohs(sin.sin_port);
	server = httpd_new(base, l, NULL, handler, NULL);
	if (!server)
		return -1;
	httpd_set_limits(server, &lim);
	return 0;
}

static int client(void)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0)
		return -1;
	return fd;
}

/* Send data (a byte per loop round when slow), then collect what comes back
 * within ms; *closed when the server closed. Date values become "X". */
static void exchange(int fd, const char *data, int slow, int ms, char *out, size_t cap, int *closed)
{
	size_t len = strlen(data), got = 0;
	long long end;
	struct timespec ts;
	regex_t re;
	regmatch_t m;

	for (size_t i = 0; slow && i < len; i++) {
		if (send(fd, data + i, 1, MSG_NOSIGNAL) != 1)
			break;
		event_base_loop(base, EVLOOP_NONBLOCK);
	}
	if (!slow && send(fd, data, len, MSG_NOSIGNAL) < 0)
		perror("send");
	*closed = 0;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	end = ts.tv_sec * 1000LL + ts.tv_nsec / 1000000 + ms;
	for (;;) {
		ssize_t n;

		event_base_loop(base, EVLOOP_NONBLOCK);
		n = recv(fd, out + got, cap - 1 - got, MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)) {
			*closed = 1;
			break;
		}
		if (n > 0)
			got += (size_t)n;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		if (ts.tv_sec * 1000LL + ts.tv_nsec / 1000000 > end || got == cap - 1)
			break;
		if (n < 0)
			usleep(1000);
	}
	out[got] = '\0';
	regcomp(&re, "Date: [^\r]*", REG_EXTENDED);
	for (char *at = out; regexec(&re, at, 1, &m, 0) == 0; at += m.rm_so + 7) {
		memmove(at + m.rm_so + 7, at + m.rm_eo, strlen(at + m.rm_eo) + 1);
		at[m.rm_so + 6] = 'X';
	}
	regfree(&re);
}

#define OK200(body)                                                                                \
	"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: X\r\nContent-Length: " body "\r\n\r" \
	"\n"

static void t_server_keep_alive(void)
{
	char out[8192];
	int fd = client(), closed;

	exchange(fd,
		 "POST /a HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nContent-Length: 3\r\n\r\nabc"
		 "GET /b HTTP/1.1\r\nHost: h\r\n\r\n"
		 "HEAD /c HTTP/1.1\r\nHost: h\r\n\r\n"
		 "GET /later HTTP/1.1\r\nHost: h\r\n\r\n"
		 "GET /d HTTP/1.1\r\nHost: h\r\n\r\n",
		 0, 300, out, sizeof(out), &closed);
	is_str(out,
	       OK200("13") "POST /a 1 abc" OK200(
		       "11") "other /b - "
			     "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: X\r\n\r\n" OK200(
				     "15") "other /later - " OK200("11") "other /d - ",
	       "five pipelined requests, one answered later: five answers in order, HEAD's "
	       "without a body");
	ok(!closed, "the kept-alive connection stays open");
	exchange(fd, "POST /slow HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello", 1, 200,
		 out, sizeof(out), &closed);
	is_str(out, OK200("18") "POST /slow - hello", "a request a byte at a time");
	exchange(fd, "GET /close HTTP/1.1\r\nHost: h\r\n\r\nGET /never HTTP/1.1\r\nHost: h\r\n\r\n",
		 0, 300, out, sizeof(out), &closed);
	is_str(out,
	       "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\nDate: "
	       "X\r\nContent-Length: 15\r\n\r\nother /close - ",
	       "an answer with Connection: close is the last one");
	ok(closed, "and the connection is closed after it");
	close(fd);
}

/* An answer far larger than the socket takes at once, to a client that
 * reads it only later: every byte arrives in order, and the connection goes
 * on with the next request. */
static void t_server_big(const char *path, const char *name)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0), small = 4096, bad = 0;
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	size_t cap = BIG_BODY + 4096, got = 0, head = 0;
	char *out = malloc(cap), req[128], tail[8192], what[160];
	struct timespec ts;
	long long end;
	int closed;

	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) < 0)
		perror("connect");
	snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: h\r\n\r\n", path);
	send(fd, req, strlen(req), MSG_NOSIGNAL);
	for (int i = 0; i < 50; i++) { /* the server writes what it can, nothing read */
		event_base_loop(base, EVLOOP_NONBLOCK);
		usleep(1000);
	}
	clock_gettime(CLOCK_MONOTONIC, &ts);
	end = ts.tv_sec * 1000LL + ts.tv_nsec / 1000000 + 10000;
	while (got < cap) {
		ssize_t n;
		char *eoh;

		event_base_loop(base, EVLOOP_NONBLOCK);
		n = recv(fd, out + got, cap - got, MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
			break;
		if (n > 0)
			got += (size_t)n;
		if (!head && (eoh = memmem(out, got, "\r\n\r\n", 4)))
			head = (size_t)(eoh - out) + 4;
		if (head && got >= head + BIG_BODY)
			break;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		if (ts.tv_sec * 1000LL + ts.tv_nsec / 1000000 > end)
			break;
	}
	snprintf(what, sizeof(what), "%s: its head", name);
	ok(head && memmem(out, head, "Content-Length: 2097152\r\n", 25) != NULL, what);
	snprintf(what, sizeof(what), "%s: every byte of the body came", name);
	is_int((int)(got - head), BIG_BODY, what);
	for (size_t i = 0; head && i < BIG_BODY && i < got - head; i++)
		bad += out[head + i] != big_byte(i);
	snprintf(what, sizeof(what), "%s: in order", name);
	is_int(bad, 0, what);
	exchange(fd, "GET /d HTTP/1.1\r\nHost: h\r\n\r\n", 0, 300, tail, sizeof(tail), &closed);
	snprintf(what, sizeof(what), "%s: the next request on the connection is answered", name);
	is_str(tail, OK200("11") "other /d - ", what);
	close(fd);
	free(out);
}

static void t_server_versions(void)
{
	char out[8192];
	int fd = client(), closed;

	exchange(fd, "GET /old HTTP/1.0\r\n\r\n", 0, 300, out, sizeof(out), &closed);
	is_str(out, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nother /old - ",
	       "HTTP/1.0: no Date, no length, closed");
	ok(closed, "HTTP/1.0 closes");
	close(fd);
	fd = client();
	exchange(fd, "GET /ka HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 0, 300, out, sizeof(out),
		 &closed);
	is_str(out,
	       "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\n"
	       "Content-Length: 12\r\n\r\nother /ka - ",
	       "HTTP/1.0 keep-alive: said so, with a length");
	ok(!closed, "and kept open");
	close(fd);
	fd = client();
	exchange(fd, "GET /bye HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", 0, 300, out,
		 sizeof(out), &closed);
	is_str(out,
	       "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nDate: X\r\nContent-Length: "
	       "13\r\nConnection: close\r\n\r\nother /bye - ",
	       "Connection: close asked: said last, after the length");
	ok(closed, "and closed");
	close(fd);
}

static void t_server_continue(void)
{
	char out[8192];
	int fd = client(), closed;

	exchange(fd,
		 "POST /e HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
		 0, 200, out, sizeof(out), &closed);
	is_str(out, "HTTP/1.1 100 Continue\r\n\r\n", "Expect: 100-continue: 100 before the body");
	exchange(fd, "ok", 0, 200, out, sizeof(out), &closed);
	is_str(out, OK200("12") "POST /e - ok", "then the answer");
	close(fd);
}

static void t_server_refusals(void)
{
	char out[8192];
	int fd = client(), closed;

	exchange(fd,
		 "GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\nHost: h\n\nGET /z HTTP/1.1\r\n",
		 0, 300, out, sizeof(out), &closed);
	ok(strncmp(out, OK200("11") "other /a - HTTP/1.1 400 Bad Request\r\n",
		   strlen(OK200("11") "other /a - HTTP/1.1 400 Bad Request\r\n")) == 0 &&
		   strstr(out, "bare LF") && !strstr(out, "/z"),
	   "a good request, then a bare LF one: its 400, nothing after");
	ok(closed, "the refusal closes the connection");
	close(fd);
	fd = client();
	exchange(fd, "POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999\r\n\r\n", 0, 300, out,
		 sizeof(out), &closed);
	ok(strncmp(out, "HTTP/1.1 413 Payload Too Large\r\n", 32) == 0 && closed,
	   "a body over the ceiling: 413 at once, closed");
	close(fd);
}

static void t_server_deadline(void)
{
	char out[8192];
	int fd = client(), closed;
	unsigned long kills = httpd_deadline_kills(server);

	log_set_level(LOG_ERROR); /* the deadline's warning line */
	exchange(fd, "POST /drip HTTP/1.1\r\nHost: h\r\nContent-Length: 10\r\n\r\nab", 0, 1800, out,
		 sizeof(out), &closed);
	ok(strncmp(out, "HTTP/1.1 408 Request Timeout\r\n", 30) == 0 &&
		   strstr(out, "\"request_timeout\""),
	   "a body that stops coming: 408 after the deadline and a sweep");
	ok(closed, "and closed");
	is_int(httpd_deadline_kills(server), kills + 1, "counted");
	close(fd);
	fd = client();
	exchange(fd, "", 0, 2600, out, sizeof(out), &closed);
	ok(closed && !out[0], "an idle connection: closed at the idle timeout, nothing said");
	close(fd);
}

int main(void)
{
	int before;

	t_reader_good(0);
	t_reader_good(1);
	t_reader_forms();
	t_reader_refused(0);
	t_reader_refused(1);
	t_reader_limits();
	t_reader_framing();

	base = event_base_new();
	if (!ok(base && server_start() == 0, "a server on a loopback port"))
		return tap_done();
	before = handled;
	t_server_keep_alive();
	ok(handled > before, "the handler saw the requests");
	t_server_big("/big/2", "2 MB answer in 2 pieces");
	t_server_big("/big/64", "2 MB answer in 64 pieces");
	t_server_versions();
	t_server_continue();
	t_server_refusals();
	t_server_deadline();
	httpd_free(server);
	event_base_free(base);
	return tap_done();
}
