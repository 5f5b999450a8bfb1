/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * HTTP/1.1 request stream processor for ONE client->server direction of an
 * intercepted (decrypted) connection. Framing by Debian's http-parser; the
 * head is also checked byte by byte, strictly, because that build is
 * lenient. Untrusted input; fuzzed (tests/fuzz/fuzz_httpreq.c).
 *
 * What goes upstream is re-framed canonically, so the server parses
 * exactly what we checked (no smuggling through parser differences):
 *   - the head is re-serialized: "METHOD SP target SP HTTP/1.x CRLF",
 *     one "Name: value CRLF" per field (OWS trimmed), then CRLF; an
 *     absolute-form target ("https://host/x?q") goes in origin-form
 *     ("/x?q"): a server takes the authority of an absolute-form target
 *     over Host, and the engine sets the Host;
 *   - Content-Length bodies pass unchanged;
 *   - chunked bodies are re-chunked per received chunk: lowercase hex size
 *     without extensions, the data, CRLF; the last chunk "0 CRLF", the
 *     checked trailer fields, CRLF. Canonical input comes out byte-exact.
 *
 * Use (the interception engine):
 *   r = httpreq_new();
 *   loop: ev = httpreq_feed(r, buf, len, &used); buf += used; len -= used;
 *     HTTPREQ_EV_HEAD: h = httpreq_head(r); decide (reqrule_check or
 *       httpreq_check); then httpreq_accept(r, sets, n, max_body) or
 *       httpreq_refuse(r, status, reason) and answer the client yourself.
 *     HTTPREQ_EV_END: one request fully emitted; keep feeding.
 *     HTTPREQ_EV_UPGRADE: parsing stopped after an accepted Upgrade/CONNECT
 *       head; the bytes not consumed (buf + used ...) belong to the tunnel:
 *       hold them until the server answered 101 (200 for CONNECT), then
 *       relay raw; on any other answer close the connection.
 *     HTTPREQ_EV_REFUSED: answer httpreq_status() (if nothing of this
 *       request went upstream, see httpreq_partial()) and close.
 *     HTTPREQ_EV_NEED_MORE: everything given was consumed.
 *   after each feed/accept, send httpreq_out() upstream and
 *   httpreq_out_consume() what was written.
 *
 * Connection: only the options close, keep-alive, upgrade and te (any
 * case); any other names a field that a hop honouring Connection drops
 * (Content-Type, Content-Length, a credential), refused with 400.
 *
 * Upgrade: only to WebSocket. A request with an Upgrade field listing
 * any other protocol (h2c, connect-tcp, ...) is refused with 400, since
 * after the switch the bytes are relayed unchecked.
 *
 * Fields that make a framework act on another method or path than the
 * request line's: X-Original-URL and X-Rewrite-URL are refused (400;
 * clients never send them, IIS and Symfony-style front ends take the
 * path from them); X-HTTP-Method-Override, X-HTTP-Method and
 * X-Method-Override must name a method http-parser knows (any case),
 * not HEAD or CONNECT (the answer would be framed for another method
 * than the request line's), and agree with each other (else 400), and
 * the head reports it, so the rules can check the request under both
 * methods.
 *
 * Header values are never logged or copied anywhere but the output.
 */
#ifndef EGR_HTTPREQ_H
#define EGR_HTTPREQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct reqrule_host;
struct reqrule_result;

/* Longest request head (request line + fields + CRLF): beyond, 431. */
#define HTTPREQ_HEAD_MAX (32 * 1024)
/* Most fields in one head: beyond, 431. */
#define HTTPREQ_MAX_HEADERS 128
/* Trailer section of a chunked body, after re-serialization: beyond, 431. */
#define HTTPREQ_TRAILER_MAX (8 * 1024)
/* Most (name, value) sets one httpreq_accept() takes: every credential
 * of a request (REQRULE_MAX_CREDS) and a gateway's Host. */
#define HTTPREQ_MAX_SETS 16
/* No limit for httpreq_accept()'s max_body. */
#define HTTPREQ_NO_LIMIT UINT64_MAX

enum httpreq_event {
	HTTPREQ_EV_NEED_MORE = 0,
	HTTPREQ_EV_HEAD = 1,
	HTTPREQ_EV_END = 2,
	HTTPREQ_EV_UPGRADE = 3,
	HTTPREQ_EV_REFUSED = 4,
};

struct httpreq_field {
	const char *name;  /* NUL-terminated, as sent (case kept) */
	const char *value; /* NUL-terminated, OWS trimmed */
};

/* One parsed, framing-checked request head; valid until the next feed. */
struct httpreq_head {
	const char *method;   /* "GET", ... (uppercase, as http-parser knows) */
	const char *target;   /* request-target as sent */
	unsigned int version_minor; /* HTTP/1.<minor>, 0 or 1 */
	const struct httpreq_field *fields;
	size_t n_fields;
	const char *host;     /* the one Host field's value, NULL if none */
	bool chunked;         /* Transfer-Encoding: chunked */
	bool has_length;      /* Content-Length given */
	uint64_t content_length;
	bool expect_continue; /* Expect: 100-continue: the client may wait
	                       * for the 100 before sending the body */
	bool upgrade;         /* Upgrade: websocket (with Connection:
	                       * upgrade) or CONNECT: after acceptance,
	                       * parsing stops */
	const char *upgrade_proto; /* Upgrade field value, NULL if none */
	const char *method_override; /* the method named by
	                       * X-HTTP-Method-Override, X-HTTP-Method or
	                       * X-Method-Override (http-parser's spelling),
	                       * NULL if none */
	bool keep_alive;      /* another request may follow */
	size_t head_len;      /* bytes of the head as received */
};

/* (name, value) the engine sets on an accepted request. */
struct httpreq_set {
	const char *name;
	const char *value;
};

struct httpreq;

struct httpreq *httpreq_new(void);
void httpreq_free(struct httpreq *r);

/*
 * Consume bytes from buf (any split of the stream), stopping at the first
 * event. *used is how many bytes of buf were consumed. Returns an
 * enum httpreq_event, or -EBUSY when a head awaits accept/refuse, -EINVAL
 * on bad arguments. Never consumes bytes beyond a head that may upgrade.
 */
int httpreq_feed(struct httpreq *r, const void *buf, size_t len, size_t *used);

/* The head of the pending request (after HTTPREQ_EV_HEAD), else NULL. */
const struct httpreq_head *httpreq_head(const struct httpreq *r);

/*
 * Let the pending request go upstream: appends its rewritten head to the
 * output. Every field named in sets (in any spelling
 * reqrule_field_name_eq() takes for it: any case, any separator) and
 * every Proxy-Authorization field is removed, then sets are appended. A chunked body larger than max_body refuses the connection
 * with 413 mid-body (HTTPREQ_NO_LIMIT: none). -EINVAL if a set name is no
 * token or a value holds control characters (still pending); -EPROTO if
 * no head pending. Refuses (state REFUSED, nothing emitted) with -EFBIG
 * if Content-Length > max_body (413) and -EPERM if the agent's Connection
 * field names a set header (400).
 */
int httpreq_accept(struct httpreq *r, const struct httpreq_set *sets,
		   size_t n_sets, uint64_t max_body);

/*
 * After a successful httpreq_accept(): read a POST body for a _method
 * (formscan.h) that frameworks take the method from. override_ok: bit i
 * set if the request is allowed as http-parser's method i too
 * (reqrule_result.override_ok; UINT64_MAX: every method). The body is
 * read whatever the mask: a _method naming HEAD or CONNECT is refused
 * with 400 (the server would answer without a body, or open a tunnel,
 * where the engine reads a POST's answer). The body's last byte is held
 * back until its end, where a _method the mask does not hold refuses
 * the request with 403 (HEAD, CONNECT, an unknown or conflicting one
 * with 400) before the server has all of it. Refuses at once (-EPERM,
 * then answer httpreq_status()) a POST with several Content-Type fields,
 * a multipart one whose boundary PHP, Rack or Go read differently, JSON in
 * a charset other than UTF-8, a form in one other than UTF-8, US-ASCII,
 * ISO-8859-1 (400), a Content-Encoding other than gzip
 * or deflate on a body that is read (415). 0: accepted (scanned or not).
 * audit: hold nothing back, and refuse only a _method naming HEAD or
 * CONNECT (400); a 403 is told by httpreq_scan_audit() once the request
 * ended (HTTPREQ_EV_END). In audit mode, or where every method is
 * allowed, a body that cannot be read (400, 415 above) is not refused
 * but forwarded: httpreq_scan_unread().
 */
int httpreq_scan_body(struct httpreq *r, uint64_t override_ok, bool audit);
/* A POST body forwarded although it could not be read for _method (in
 * audit mode, or where every method is allowed: an encoding, a charset,
 * a boundary or a multipart layout it cannot read): why (static text),
 * else NULL; valid from httpreq_scan_body() to the next request's. Its
 * server may have read a HEAD or a CONNECT there, so the caller must end
 * the connection after this request's answer: no later request, no
 * Upgrade, nothing a desynced framing could act on. A readable body
 * naming HEAD or CONNECT is refused (400) all the same. */
const char *httpreq_scan_unread(const struct httpreq *r);
/* After an audit-mode scan: the status enforce mode would have answered
 * the last request with (0: none), *reason its static text. */
int httpreq_scan_audit(const struct httpreq *r, const char **reason);

/* Refuse the pending request (or the connection) with status; reason is
 * a static string (kept by pointer). Nothing more is emitted. */
void httpreq_refuse(struct httpreq *r, int status, const char *reason);

/*
 * Convenience for the engine: run reqrule_check() for the pending head
 * against host rules h and the TLS SNI. Fills res; returns its status
 * (0 allow, else the HTTP status to answer). Does not accept or refuse.
 */
/* The same for a connection to port (a Host port must equal it). */
int httpreq_check_port(const struct httpreq *r, const struct reqrule_host *h,
		       const char *sni, uint16_t port, struct reqrule_result *res);
int httpreq_check(const struct httpreq *r, const struct reqrule_host *h,
		  const char *sni, struct reqrule_result *res);

/* The request-target as it goes upstream: origin-form for an
 * absolute-form one, *slash then telling to put "/" before it (the
 * authority was followed by a query or nothing). Else target itself. */
const char *httpreq_origin_form(const char *method, const char *target, bool *slash);

/* Bytes to send upstream; consume what was written. */
const uint8_t *httpreq_out(const struct httpreq *r, size_t *len);
void httpreq_out_consume(struct httpreq *r, size_t n);

/* After REFUSED: the HTTP status to answer and a short reason (static,
 * or text in r naming what the agent sent: valid until httpreq_free). */
int httpreq_status(const struct httpreq *r);
const char *httpreq_reason(const struct httpreq *r);
/*
 * After REFUSED: true if bytes of the refused request already left through
 * httpreq_out() (a chunked body failed mid-way). The engine must then
 * abort the upstream connection without completing the request; the
 * client can only be answered if no response has started.
 */
bool httpreq_partial(const struct httpreq *r);

/* Requests fully emitted so far (for audit and tests). */
uint64_t httpreq_count(const struct httpreq *r);
/* Body bytes (de-framed) of the current/last request. */
uint64_t httpreq_body_bytes(const struct httpreq *r);

#endif
