// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * Follow a client's HTTP/1 request stream (httpstream.h). Each request is
 * a head, collected until http_head_parse says it is complete, then its
 * body, framed by a fresh http-parser fed the head and what follows; the
 * parser pauses at the end of the message and the bytes after it start
 * the next head.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <http_parser.h>

#include "httphead.h"
#include "httpstream.h"

struct httpstream {
	http_parser p;
	bool in_body;   /* the head was checked; the parser frames the body */
	bool complete;  /* the parser reached the end of the message */
	int result;     /* sticky once not HTTPSTREAM_OK */
	/* the head being gathered: allocated while one is (an idle
	 * keep-alive connection holds none), at most HTTP_HEAD_MAX_BYTES */
	uint8_t *head;
	size_t head_len, head_cap;
	char host[256];
	char other[256];
};

static int on_message_complete(http_parser *p)
{
	struct httpstream *s = p->data;

	s->complete = true;
	http_parser_pause(p, 1); /* one message at a time */
	return 0;
}

static const http_parser_settings settings = {
	.on_message_complete = on_message_complete,
};

struct httpstream *httpstream_new(const char *host)
{
	struct httpstream *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	snprintf(s->host, sizeof(s->host), "%s", host);
	return s;
}

void httpstream_free(struct httpstream *s)
{
	if (s)
		free(s->head);
	free(s);
}

/* Room for n more head bytes (n > 0, head_len + n <= the maximum). */
static bool head_room(struct httpstream *s, size_t n)
{
	size_t cap = s->head_cap ? s->head_cap : 512;
	uint8_t *p;

	if (s->head_len + n <= s->head_cap)
		return true;
	while (cap < s->head_len + n)
		cap *= 2;
	if (cap > HTTP_HEAD_MAX_BYTES)
		cap = HTTP_HEAD_MAX_BYTES;
	p = realloc(s->head, cap);
	if (!p)
		return false;
	s->head = p;
	s->head_cap = cap;
	return true;
}

const char *httpstream_other_host(const struct httpstream *s)
{
	return s->other;
}

/* Frame body bytes; returns how many belong to this message, or -1. */
static long body_feed(struct httpstream *s, const uint8_t *buf, size_t len)
{
	size_t n = http_parser_execute(&s->p, &settings, (const char *)buf, len);
	enum http_errno e = HTTP_PARSER_ERRNO(&s->p);

	if (e == HPE_PAUSED) {
		http_parser_pause(&s->p, 0);
		return (long)n;
	}
	if (e != HPE_OK)
		return -1;
	return (long)n;
}

/*
 * An upgrade to h2c (HTTP/2 over cleartext) would carry streams for any
 * :authority on the connection; WebSocket stays with this host. The head
 * is valid HTTP here (http-parser took it), so its Upgrade header is a
 * line of its own.
 */
static bool upgrades_to_h2c(const uint8_t *head, size_t len)
{
	static const char name[] = "\r\nupgrade:";
	size_t i, j;

	for (i = 0; i + sizeof(name) - 1 <= len; i++) {
		if (strncasecmp((const char *)head + i, name, sizeof(name) - 1))
			continue;
		for (j = i + sizeof(name) - 1; j + 3 <= len && head[j] != '\r'; j++)
			if (!strncasecmp((const char *)head + j, "h2c", 3))
				return true;
	}
	return false;
}

/* A complete head (head_len bytes at head): start the body's framing. */
static int head_done(struct httpstream *s, const uint8_t *head, size_t head_len)
{
	long n;

	http_parser_init(&s->p, HTTP_REQUEST);
	s->p.data = s;
	s->complete = false;
	n = body_feed(s, head, head_len);
	if (n < 0 || (size_t)n != head_len)
		return HTTPSTREAM_MALFORMED; /* http-parser saw it otherwise */
	if (s->p.upgrade) { /* Upgrade or CONNECT: ends with its head */
		if (s->p.method != HTTP_CONNECT && upgrades_to_h2c(head, head_len))
			return HTTPSTREAM_MALFORMED;
		return HTTPSTREAM_TUNNEL;
	}
	s->in_body = !s->complete;
	return HTTPSTREAM_OK;
}

int httpstream_feed(struct httpstream *s, const uint8_t *buf, size_t len)
{
	while (len && s->result == HTTPSTREAM_OK) {
		struct http_head_info hh;
		const uint8_t *src = buf;
		size_t avail = len, before = s->head_len, take;
		int r;

		if (s->in_body) {
			long n = body_feed(s, buf, len);

			if (n < 0) {
				s->result = HTTPSTREAM_MALFORMED;
				break;
			}
			buf += n;
			len -= (size_t)n;
			if (s->complete)
				s->in_body = false;
			else if (n == 0)
				break; /* nothing taken and not complete: cannot happen */
			continue;
		}
		/* A head: parsed where it lies, unless part of it came before
		 * (then gathered behind that part). */
		take = len < HTTP_HEAD_MAX_BYTES - before ? len : HTTP_HEAD_MAX_BYTES - before;
		if (before) {
			if (!head_room(s, take)) {
				s->result = HTTPSTREAM_MALFORMED; /* out of memory: refused */
				break;
			}
			memcpy(s->head + before, buf, take);
			src = s->head;
			avail = before + take;
		}
		r = http_head_parse(src, avail, &hh);
		if (r == HTTP_HEAD_NEED_MORE) {
			if (before + take == HTTP_HEAD_MAX_BYTES) {
				s->result = HTTPSTREAM_MALFORMED; /* too large */
				break;
			}
			if (!before) {
				if (!head_room(s, take)) {
					s->result = HTTPSTREAM_MALFORMED;
					break;
				}
				memcpy(s->head, buf, take);
			}
			s->head_len = before + take;
			buf += take;
			len -= take;
			continue;
		}
		if (r != HTTP_HEAD_OK) {
			s->result = HTTPSTREAM_MALFORMED;
			break;
		}
		if (!hh.has_host || strcasecmp(hh.host, s->host)) {
			snprintf(s->other, sizeof(s->other), "%s", hh.has_host ? hh.host : "");
			s->result = HTTPSTREAM_OTHER_HOST;
			break;
		}
		r = head_done(s, src, hh.head_len);
		/* the head ends inside what this call added */
		buf += hh.head_len - before;
		len -= hh.head_len - before;
		free(s->head);
		s->head = NULL;
		s->head_len = s->head_cap = 0;
		if (r != HTTPSTREAM_OK) {
			s->result = r;
			break;
		}
	}
	return s->result;
}
