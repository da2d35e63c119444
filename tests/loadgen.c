/*
 * loadgen: an open-loop HTTP poster for the crash test's burst, so that the
 * offered rate is the one asked for and not what a Python client manages.
 *
 *   loadgen --rate R --seconds S --ports P1,P2,... --body FILE --out FILE
 *           [--max-inflight N]
 *
 * Every 1/R s (on a fixed schedule, whatever the answers) it opens a new
 * connection to 127.0.0.1 on the next port in turn and posts the body of
 * FILE with "@PID@" replaced by a fresh participation id (a UUID).  Each
 * post's answer goes to --out as "STATUS PID DELIVERY_ID" (DELIVERY_ID "-"
 * when the answer has none; STATUS 0: no answer: refused, reset, timed out
 * after 10 s).  At the end it prints one line on stdout:
 *   offered N rate X/s acknowledged N refused N failed N late N
 * (refused: any status but 202; late: posts that started over 50 ms behind
 * their slot, because --max-inflight were already under way).  Exit 0, or
 * 2 for a usage or set-up error.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MAX_PORTS    16
#define ANSWER_MAX   4096
#define TIMEOUT_NS   (10LL * 1000000000LL)
#define LATE_NS      (50LL * 1000000LL)
#define PID_TEXT_LEN 36

struct post {
	int fd;
	char pid[PID_TEXT_LEN + 1];
	char *req;
	size_t req_len, sent;
	char answer[ANSWER_MAX];
	size_t got;
	int64_t started_ns;
};

struct totals {
	long offered, acked, refused, failed, late;
};

static int64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int usage(void)
{
	fprintf(stderr, "usage: loadgen --rate R --seconds S --ports P1,P2,... --body FILE "
			"--out FILE [--max-inflight N]\n");
	return 2;
}

static char *read_file(const char *path, size_t *ret_len)
{
	FILE *f = fopen(path, "rb");
	char *b = NULL;
	long n;

	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
	    (b = malloc((size_t)n + 1)) != NULL) {
		*ret_len = fread(b, 1, (size_t)n, f);
		b[*ret_len] = '\0';
	}
	fclose(f);
	return b;
}

/* A version 4 UUID, upper-case (as the bridge keys participations). */
static void uuid_text(char out[PID_TEXT_LEN + 1])
{
	unsigned char b[16];

	if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b)) {
		int64_t t = now_ns();

		for (size_t i = 0; i < sizeof(b); i++)
			b[i] = (unsigned char)(t >> (i % 8 * 8)) ^ (unsigned char)(i * 37);
	}
	b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
	b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
	snprintf(out, PID_TEXT_LEN + 1,
		 "%02X%02X%02X%02X-%02X%02X-%02X%02X-%02X%02X-%02X%02X%02X%02X%02X%02X", b[0], b[1],
		 b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
		 b[15]);
}

/* The request: the body with its placeholder replaced. */
static char *request_make(const char *body, size_t body_len, const char *pid, int port,
			  size_t *ret_len)
{
	const char *at = strstr(body, "@PID@");
	size_t pre = at ? (size_t)(at - body) : body_len;
	size_t post = at ? body_len - pre - 5 : 0;
	size_t n = pre + (at ? strlen(pid) : 0) + post;
	size_t cap = n + 256;
	char *r = malloc(cap);
	int h;

	if (!r)
		return NULL;
	h = snprintf(r, cap,
		     "POST / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n"
		     "Content-Length: %zu\r\nConnection: close\r\n\r\n",
		     port, n);
	memcpy(r + h, body, pre);
	if (at) {
		memcpy(r + h + pre, pid, strlen(pid));
		memcpy(r + h + pre + strlen(pid), at + 5, post);
	}
	*ret_len = (size_t)h + n;
	return r;
}

static int post_start(struct post *p, int epfd, int port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	struct epoll_event ev = { .events = EPOLLOUT | EPOLLIN, .data.ptr = p };
	int one = 1;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	p->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (p->fd < 0)
		return -1;
	setsockopt(p->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if ((connect(p->fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EINPROGRESS) ||
	    epoll_ctl(epfd, EPOLL_CTL_ADD, p->fd, &ev) < 0) {
		close(p->fd);
		p->fd = -1;
		return -1;
	}
	return 0;
}

/* Whether the answer is complete: its head, and as much body as it says. */
static int answer_complete(const struct post *p)
{
	const char *end = memmem(p->answer, p->got, "\r\n\r\n", 4);
	const char *cl;

	if (!end)
		return 0;
	cl = memmem(p->answer, (size_t)(end - p->answer), "Content-Length:", 15);
	if (!cl)
		cl = memmem(p->answer, (size_t)(end - p->answer), "content-length:", 15);
	if (!cl)
		return 0; /* read to the close */
	return p->got >= (size_t)(end + 4 - p->answer) + strtoul(cl + 15, NULL, 10);
}

static void post_finish(struct post *p, FILE *out, struct totals *t)
{
	int status = 0;
	char did[128] = "-";
	const char *d;

	if (p->got > 12 && memcmp(p->answer, "HTTP/1.", 7) == 0)
		status = atoi(p->answer + 9);
	if (p->got < sizeof(p->answer))
		p->answer[p->got] = '\0';
	else
		p->answer[sizeof(p->answer) - 1] = '\0';
	d = strstr(p->answer, "\"delivery_id\":\"");
	if (d) {
		size_t n = strcspn(d + 15, "\"");

		if (n && n < sizeof(did))
			snprintf(did, sizeof(did), "%.*s", (int)n, d + 15);
	}
	fprintf(out, "%d %s %s\n", status, p->pid, did);
	if (status == 202)
		t->acked++;
	else if (status)
		t->refused++;
	else
		t->failed++;
	if (p->fd >= 0)
		close(p->fd);
	free(p->req);
	free(p);
}

/* Progress on one connection: 1 when the post is over. */
static int post_step(struct post *p, int epfd, uint32_t events)
{
	if (p->sent < p->req_len) {
		ssize_t n = send(p->fd, p->req + p->sent, p->req_len - p->sent, MSG_NOSIGNAL);

		if (n < 0 && errno != EAGAIN && errno != EINPROGRESS && errno != ENOTCONN)
			return 1;
		if (n > 0)
			p->sent += (size_t)n;
		if (p->sent == p->req_len) {
			struct epoll_event ev = { .events = EPOLLIN, .data.ptr = p };

			epoll_ctl(epfd, EPOLL_CTL_MOD, p->fd, &ev);
		}
		if (events & (EPOLLERR | EPOLLHUP) && p->sent < p->req_len)
			return 1;
	}
	for (;;) {
		ssize_t n = recv(p->fd, p->answer + p->got, sizeof(p->answer) - 1 - p->got, 0);

		if (n > 0) {
			p->got += (size_t)n;
			if (p->got >= sizeof(p->answer) - 1 || answer_complete(p))
				return 1;
			continue;
		}
		if (n == 0)
			return 1;
		return errno != EAGAIN;
	}
}

int main(int argc, char **argv)
{
	double rate = 0, seconds = 0;
	int ports[MAX_PORTS], n_ports = 0, max_inflight = 4096, inflight = 0, epfd;
	const char *body_path = NULL, *out_path = NULL;
	char *body;
	size_t body_len = 0;
	FILE *out;
	struct totals t = { 0 };
	struct post **live;
	int64_t t0, end, next, interval;
	struct epoll_event evs[256];

	for (int i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--rate") == 0) {
			rate = atof(argv[i + 1]);
		} else if (strcmp(argv[i], "--seconds") == 0) {
			seconds = atof(argv[i + 1]);
		} else if (strcmp(argv[i], "--body") == 0) {
			body_path = argv[i + 1];
		} else if (strcmp(argv[i], "--out") == 0) {
			out_path = argv[i + 1];
		} else if (strcmp(argv[i], "--max-inflight") == 0) {
			max_inflight = atoi(argv[i + 1]);
		} else if (strcmp(argv[i], "--ports") == 0) {
			for (char *s = argv[i + 1]; *s && n_ports < MAX_PORTS;) {
				char *e;

				ports[n_ports++] = (int)strtol(s, &e, 10);
				s = *e == ',' ? e + 1 : e;
				if (e == s && *e)
					return usage();
			}
		} else {
			return usage();
		}
	}
	if (argc % 2 == 0 || rate <= 0 || seconds <= 0 || !n_ports || !body_path || !out_path ||
	    max_inflight < 1)
		return usage();
	body = read_file(body_path, &body_len);
	out = fopen(out_path, "w");
	live = calloc((size_t)max_inflight, sizeof(*live));
	epfd = epoll_create1(EPOLL_CLOEXEC);
	if (!body || !out || !live || epfd < 0) {
		fprintf(stderr, "loadgen: %s: %s\n", !body ? body_path : out_path, strerror(errno));
		return 2;
	}
	interval = (int64_t)(1e9 / rate);
	t0 = now_ns();
	next = t0;
	end = t0 + (int64_t)(seconds * 1e9);
	while (next < end || inflight > 0) {
		int64_t now = now_ns(), wait_ms;
		int n;

		/* start every post whose slot has come, while there is room */
		while (next < end && next <= now && inflight < max_inflight) {
			struct post *p = calloc(1, sizeof(*p));
			int port = ports[t.offered % n_ports];

			if (!p)
				break;
			uuid_text(p->pid);
			p->req = request_make(body, body_len, p->pid, port, &p->req_len);
			p->started_ns = now;
			t.offered++;
			if (now - next > LATE_NS)
				t.late++;
			next += interval;
			if (!p->req || post_start(p, epfd, port) < 0) {
				p->fd = -1;
				post_finish(p, out, &t);
				continue;
			}
			for (int k = 0; k < max_inflight; k++)
				if (!live[k]) {
					live[k] = p;
					break;
				}
			inflight++;
		}
		wait_ms = next < end && inflight < max_inflight ? (next - now_ns()) / 1000000 : 10;
		if (wait_ms < 0)
			wait_ms = 0;
		if (wait_ms > 10)
			wait_ms = 10;
		n = epoll_wait(epfd, evs, 256, (int)wait_ms);
		for (int i = 0; i < n; i++) {
			struct post *p = evs[i].data.ptr;

			if (post_step(p, epfd, evs[i].events)) {
				for (int k = 0; k < max_inflight; k++)
					if (live[k] == p)
						live[k] = NULL;
				inflight--;
				post_finish(p, out, &t);
			}
		}
		now = now_ns();
		for (int k = 0; k < max_inflight; k++)
			if (live[k] && now - live[k]->started_ns > TIMEOUT_NS) {
				live[k]->got = 0; /* no answer */
				post_finish(live[k], out, &t);
				live[k] = NULL;
				inflight--;
			}
	}
	fclose(out);
	printf("offered %ld rate %.1f/s acknowledged %ld refused %ld failed %ld late %ld\n",
	       t.offered, (double)t.offered / seconds, t.acked, t.refused, t.failed, t.late);
	free(live);
	free(body);
	close(epfd);
	return 0;
}
