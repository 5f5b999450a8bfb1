// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * Follow a client's HTTP/1 request stream (httpstream.h). Each request is
 * a head, collected until http_head_parse says it is complete and fed to
 * a fresh http-parser for its framing fields, then its body, framed by
 * body_take (strictly, as servers that read leniently agree on it); the
 * bytes after the message start the next head.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <http_parser.h>
#include <limits.h>

#include "httphead.h"
#include "httpstream.h"

/* Where a body's framing is (body_take). */
enum body_state {
	B_NONE,      /* between messages: the next bytes are a head */
	B_LENGTH,    /* Content-Length: `left` bytes to go */
	B_SIZE,      /* a chunk's size: hex digits */
	B_EXT,       /* a chunk extension, after ';' */
	B_SIZE_LF,   /* the LF ending the size line */
	B_DATA,      /* chunk data: `left` bytes to go */
	B_DATA_CR,   /* the CRLF after chunk data */
	B_DATA_LF,
	B_TRAILER,   /* the start of a trailer line, or the final CRLF */
	B_TR_NAME,
	B_TR_VALUE,
	B_TR_LF,
	B_END_LF,    /* the LF of the final CRLF */
};

struct httpstream {
	http_parser p;
	bool complete;  /* http-parser reached the end of the message */
	int result;     /* sticky once not HTTPSTREAM_OK */
	enum body_state body;
	uint64_t left;
	unsigned int digits; /* of the chunk size so far */
	size_t line;    /* bytes of the current extension or trailer section */
	size_t tunnel_at; /* where the raw bytes begin in the buffer of the
			   * call that returned HTTPSTREAM_TUNNEL */
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

/* http-parser over a head: returns how many bytes it took, or -1. */
static long head_feed(struct httpstream *s, const uint8_t *buf, size_t len)
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

static int hexval(uint8_t ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	ch |= 0x20;
	return ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
}

#define BODY_LINE_MAX 4096 /* a chunk extension; all trailer lines together */
#define CHUNK_MAX 0x7fffffffULL /* clients send chunks of kilobytes */

/*
 * Frame body bytes ourselves, strictly: the bytes go to the server as
 * they are, and it must find the message's end where we do. http-parser
 * reads a chunk line on to the next CR past a bare LF ("0;x\n\nGET ...")
 * and takes any two bytes after chunk data for its CRLF; nginx and HAProxy
 * end the line at the LF, and what we took for an extension is a request
 * to them. So: size digits, an optional extension of visible characters
 * and blanks, CRLF; exactly CRLF after the data; trailer lines
 * "name:value" ending in CRLF, then CRLF. Anything else is refused.
 * Returns how many bytes belong to this message, or -1.
 */
static long body_take(struct httpstream *s, const uint8_t *buf, size_t len)
{
	size_t i = 0;

	while (i < len && s->body != B_NONE) {
		uint8_t ch = buf[i];
		int h;

		switch (s->body) {
		case B_LENGTH:
		case B_DATA: {
			size_t k = len - i < s->left ? len - i : (size_t)s->left;

			i += k;
			s->left -= k;
			if (!s->left)
				s->body = s->body == B_LENGTH ? B_NONE : B_DATA_CR;
			continue;
		}
		case B_SIZE:
			h = hexval(ch);
			if (h >= 0) {
				/* 16 digits at most, and a size a server that
				 * keeps it in an int reads as we do */
				if (++s->digits > 16)
					return -1;
				s->left = s->left << 4 | (uint64_t)h;
				if (s->left > CHUNK_MAX)
					return -1;
			} else if (s->digits && ch == ';') {
				s->body = B_EXT;
				s->line = 0;
			} else if (s->digits && ch == '\r') {
				s->body = B_SIZE_LF;
			} else {
				return -1;
			}
			break;
		case B_EXT:
			if (ch == '\r')
				s->body = B_SIZE_LF;
			else if (!((ch >= 0x20 && ch < 0x7f) || ch == '\t') ||
				 ++s->line > BODY_LINE_MAX)
				return -1;
			break;
		case B_SIZE_LF:
			if (ch != '\n')
				return -1;
			s->body = s->left ? B_DATA : B_TRAILER;
			s->line = 0;
			break;
		case B_DATA_CR:
			if (ch != '\r')
				return -1;
			s->body = B_DATA_LF;
			break;
		case B_DATA_LF:
			if (ch != '\n')
				return -1;
			s->body = B_SIZE;
			s->digits = 0;
			s->left = 0;
			break;
		case B_TRAILER:
			if (ch == '\r')
				s->body = B_END_LF;
			else if (http_is_tchar(ch))
				s->body = B_TR_NAME;
			else
				return -1;
			break;
		case B_TR_NAME:
			if (ch == ':')
				s->body = B_TR_VALUE;
			else if (!http_is_tchar(ch))
				return -1;
			break;
		case B_TR_VALUE:
			if (ch == '\r')
				s->body = B_TR_LF;
			else if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
				return -1;
			break;
		case B_TR_LF:
			if (ch != '\n')
				return -1;
			s->body = B_TRAILER;
			break;
		case B_END_LF:
			if (ch != '\n')
				return -1;
			s->body = B_NONE;
			break;
		case B_NONE:
			break;
		}
		if (s->body >= B_TRAILER && ++s->line > BODY_LINE_MAX)
			return -1;
		i++;
	}
	return (long)i;
}

/* A complete head (head_len bytes at head, hh its reading): start the
 * body's framing. An upgrade to h2c (HTTP/2 over cleartext) would carry
 * streams for any :authority on the connection; WebSocket stays with
 * this host. */
static int head_done(struct httpstream *s, const uint8_t *head, size_t head_len,
		     const struct http_head_info *hh)
{
	long n;

	http_parser_init(&s->p, HTTP_REQUEST);
	s->p.data = s;
	s->complete = false;
	n = head_feed(s, head, head_len);
	if (n < 0 || (size_t)n != head_len)
		return HTTPSTREAM_MALFORMED; /* http-parser saw it otherwise */
	if (!hh->te_plain)
		return HTTPSTREAM_MALFORMED;
	if (s->p.upgrade) { /* Upgrade or CONNECT: ends with its head */
		if (s->p.method != HTTP_CONNECT && hh->upgrade_h2c)
			return HTTPSTREAM_MALFORMED;
		return HTTPSTREAM_TUNNEL;
	}
	/* http-parser read the framing fields (and refused CL with TE);
	 * the body's bytes are framed by body_take */
	s->left = 0;
	s->digits = 0;
	/* RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding is faulty
	 * framing, which servers treat in different ways */
	if ((s->p.flags & F_CHUNKED) && s->p.http_minor == 0)
		return HTTPSTREAM_MALFORMED;
	if (s->p.flags & F_CHUNKED)
		s->body = B_SIZE;
	else if (!s->complete && s->p.content_length != ULLONG_MAX && s->p.content_length)
		s->body = B_LENGTH, s->left = s->p.content_length;
	else if (!s->complete)
		return HTTPSTREAM_MALFORMED; /* a body without a length */
	else
		s->body = B_NONE;
	return HTTPSTREAM_OK;
}

int httpstream_feed(struct httpstream *s, const uint8_t *buf, size_t len)
{
	const uint8_t *start = buf;

	while (len && s->result == HTTPSTREAM_OK) {
		struct http_head_info hh;
		const uint8_t *src = buf;
		size_t avail = len, before = s->head_len, take;
		int r;

		if (s->body != B_NONE) {
			long n = body_take(s, buf, len);

			if (n <= 0) { /* takes at least a byte while in a body */
				s->result = HTTPSTREAM_MALFORMED;
				break;
			}
			buf += n;
			len -= (size_t)n;
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
		r = head_done(s, src, hh.head_len, &hh);
		/* the head ends inside what this call added */
		buf += hh.head_len - before;
		len -= hh.head_len - before;
		free(s->head);
		s->head = NULL;
		s->head_len = s->head_cap = 0;
		if (r != HTTPSTREAM_OK) {
			s->tunnel_at = (size_t)(buf - start);
			s->result = r;
			break;
		}
	}
	return s->result;
}

size_t httpstream_tunnel_at(const struct httpstream *s)
{
	return s->tunnel_at;
}
