// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* user/audit.c: record formats, stderr denials, summary, names. */
#include <errno.h>
#include <dirent.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "audit.h"

static char *slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf;
	long n;

	assert_non_null(f);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	buf = calloc(1, (size_t)n + 1);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	return buf;
}

static void tmp_path(char *path, size_t len, const char *tag)
{
	snprintf(path, len, "/tmp/test_audit_%s_%d.log", tag, (int)getpid());
	unlink(path);
}

/* A denied HTTPS connection as the proxy reports it. */
static void deny_record(struct audit_record *r)
{
	memset(r, 0, sizeof(*r));
	r->start.tv_sec = 1795795200; /* 2026-11-27T16:00:00Z */
	r->start.tv_nsec = 100000000;
	r->end.tv_sec = 1795795200;
	r->end.tv_nsec = 123000000;
	r->cgroup = "/sys/fs/cgroup/egressd/run-1";
	r->cgroup_id = 4242;
	r->pid = 123;
	r->uid = 1000;
	strcpy(r->comm, "curl");
	r->proto = IPPROTO_TCP;
	r->has_dst = true;
	assert_int_equal(addr_parse("192.0.2.66", &r->dst), 0);
	r->dst_port = 443;
	r->sni = "evil.test";
	r->alpn = "h2,http/1.1";
	r->verdict = EGR_VERDICT_DENY;
	r->reason = EGR_REASON_NO_MATCH;
	r->policy = "default";
	r->origin = "proxy";
}

static void test_json_line(void **state)
{
	struct audit_options o = { .format = AUDIT_JSON };
	struct audit_record r;
	struct audit *a;
	char path[128], *text, *nl;
	json_error_t jerr;
	json_t *j;

	tmp_path(path, sizeof(path), "json");
	o.path = path;
	assert_int_equal(audit_open(&a, &o), 0);
	deny_record(&r);
	audit_write(a, &r);
	r.verdict = EGR_VERDICT_ALLOW;
	r.reason = EGR_REASON_RULE_ALLOW;
	r.rule = "*.allowed.test";
	r.sni = NULL;
	r.alpn = NULL;
	r.host = "x.allowed.test";
	r.ech = true;
	r.has_resolved = true;
	assert_int_equal(addr_parse("2001:db8::7", &r.resolved), 0);
	r.bytes_up = 517;
	r.bytes_down = 1ULL << 33;
	r.end.tv_sec += 2;
	r.detail = "ok";
	audit_write(a, &r);
	audit_close(a);

	text = slurp(path);
	nl = strchr(text, '\n');
	assert_non_null(nl);
	*nl = '\0';
	j = json_loads(text, 0, &jerr);
	if (!j)
		fail_msg("line 1 is not JSON: %s: %s", jerr.text, text);
	assert_string_equal(json_string_value(json_object_get(j, "time")), "2026-11-27T16:00:00.123Z");
	assert_string_equal(json_string_value(json_object_get(j, "start")), "2026-11-27T16:00:00.100Z");
	assert_string_equal(json_string_value(json_object_get(j, "cgroup")),
			    "/sys/fs/cgroup/egressd/run-1");
	assert_int_equal(json_integer_value(json_object_get(j, "cgroup_id")), 4242);
	assert_int_equal(json_integer_value(json_object_get(j, "pid")), 123);
	assert_int_equal(json_integer_value(json_object_get(j, "uid")), 1000);
	assert_string_equal(json_string_value(json_object_get(j, "comm")), "curl");
	assert_string_equal(json_string_value(json_object_get(j, "proto")), "tcp");
	assert_string_equal(json_string_value(json_object_get(j, "dst")), "192.0.2.66");
	assert_int_equal(json_integer_value(json_object_get(j, "dst_port")), 443);
	assert_string_equal(json_string_value(json_object_get(j, "sni")), "evil.test");
	assert_string_equal(json_string_value(json_object_get(j, "alpn")), "h2,http/1.1");
	assert_string_equal(json_string_value(json_object_get(j, "verdict")), "deny");
	assert_string_equal(json_string_value(json_object_get(j, "reason")), "no_match");
	assert_string_equal(json_string_value(json_object_get(j, "policy")), "default");
	assert_string_equal(json_string_value(json_object_get(j, "origin")), "proxy");
	assert_int_equal(json_integer_value(json_object_get(j, "bytes_up")), 0);
	assert_int_equal(json_integer_value(json_object_get(j, "duration_ms")), 23);
	/* absent values are omitted */
	assert_null(json_object_get(j, "host"));
	assert_null(json_object_get(j, "rule"));
	assert_null(json_object_get(j, "resolved"));
	assert_null(json_object_get(j, "detail"));
	assert_null(json_object_get(j, "ech"));
	json_decref(j);

	j = json_loads(nl + 1, 0, &jerr);
	if (!j)
		fail_msg("line 2 is not JSON: %s: %s", jerr.text, nl + 1);
	assert_string_equal(json_string_value(json_object_get(j, "verdict")), "allow");
	assert_string_equal(json_string_value(json_object_get(j, "reason")), "rule_allow");
	assert_string_equal(json_string_value(json_object_get(j, "rule")), "*.allowed.test");
	assert_string_equal(json_string_value(json_object_get(j, "host")), "x.allowed.test");
	assert_string_equal(json_string_value(json_object_get(j, "resolved")), "2001:db8::7");
	assert_true(json_is_true(json_object_get(j, "ech")));
	assert_int_equal(json_integer_value(json_object_get(j, "bytes_up")), 517);
	assert_int_equal(json_integer_value(json_object_get(j, "bytes_down")), 1LL << 33);
	assert_int_equal(json_integer_value(json_object_get(j, "duration_ms")), 2023);
	assert_string_equal(json_string_value(json_object_get(j, "detail")), "ok");
	assert_null(json_object_get(j, "sni"));
	json_decref(j);
	/* exactly two lines */
	assert_null(strchr(strchr(nl + 1, '\n') + 1, '\n'));
	free(text);
	unlink(path);
}

static void test_json_hostile_bytes(void **state)
{
	struct audit_options o = { .format = AUDIT_JSON };
	struct audit_record r;
	struct audit *a;
	char path[128], *text;
	json_t *j;

	tmp_path(path, sizeof(path), "hostile");
	o.path = path;
	assert_int_equal(audit_open(&a, &o), 0);
	deny_record(&r);
	strcpy(r.comm, "a\n\"b\xff");
	r.sni = "x\xc3(.test";
	audit_write(a, &r);
	audit_close(a);
	text = slurp(path);
	assert_non_null(strchr(text, '\n'));
	assert_int_equal(strchr(text, '\n')[1], '\0');
	j = json_loads(text, 0, NULL);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(j, "comm")), "a\\x0a\"b\\xff");
	assert_string_equal(json_string_value(json_object_get(j, "sni")), "x\\xc3(.test");
	json_decref(j);
	free(text);
	unlink(path);
}

struct tap_seen {
	int n;
	char json[2][4096];
	bool had_json[2];
};

static void tap_cb(void *ctx, const struct audit_record *r, const char *json)
{
	struct tap_seen *t = ctx;

	(void)r;
	if (t->n < 2) {
		t->had_json[t->n] = json != NULL;
		snprintf(t->json[t->n], sizeof(t->json[0]), "%s", json ? json : "");
	}
	t->n++;
}

/* The tap gets the line the JSON file gets, rendered once for both (the
 * daemon's `log -f` followers); with a text file, or none, it gets NULL
 * and renders the record itself. */
static void test_tap_gets_the_json_line(void **state)
{
	struct audit_options o = { .format = AUDIT_JSON };
	struct tap_seen t = { 0 };
	struct audit_record r;
	struct audit *a;
	char path[128], *text;

	tmp_path(path, sizeof(path), "tap");
	o.path = path;
	assert_int_equal(audit_open(&a, &o), 0);
	audit_set_tap(a, tap_cb, &t);
	deny_record(&r);
	audit_write(a, &r);
	audit_close(a);
	text = slurp(path);
	assert_int_equal(t.n, 1);
	assert_true(t.had_json[0]);
	assert_int_equal(strlen(text), strlen(t.json[0]) + 1);
	assert_memory_equal(text, t.json[0], strlen(t.json[0]));
	free(text);
	unlink(path);

	memset(&t, 0, sizeof(t));
	o.format = AUDIT_TEXT;
	assert_int_equal(audit_open(&a, &o), 0);
	audit_set_tap(a, tap_cb, &t);
	audit_write(a, &r);
	audit_close(a);
	assert_int_equal(t.n, 1);
	assert_false(t.had_json[0]);
	unlink(path);
}

/* The JSON writer is audit.c's own; jansson is the oracle. A string
 * json_string() accepts comes back as it went in, whatever it holds; one
 * it refuses (not UTF-8 as jansson reads it) comes back with the text
 * format's \xNN escapes. Every line is one JSON object. */
static void test_json_escapes_match_jansson(void **state)
{
	static const char *const in[] = {
		"plain", "q\"uote", "back\\slash", "tab\tnl\nret\rbs\bff\f",
		"\x01\x1f", "del\x7f", "caf\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80",
		"\xef\xbf\xbf", "\xf4\x8f\xbf\xbf",
		/* a terminal would obey these: C1 CSI, RLO, LRI, PDI */
		"\xc2\x9b" "2J", "a\xe2\x80\xae" "b", "\xe2\x81\xa6\xe2\x81\xa9", "\xc2\x9f\xc2\xa0",
		/* refused: overlong, surrogate, beyond U+10FFFF, cut, stray */
		"\xc0\xaf", "\xc1\xbf", "\xe0\x80\xaf", "\xf0\x8f\xbf\xbf", "\xed\xa0\x80",
		"\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\xe2\x82", "x\x80y", "\xff",
		"a b\\\xff",
	};
	struct audit_options o = { .format = AUDIT_JSON };
	struct audit_record r;
	struct audit *a;
	char path[128], *text, *line;
	size_t i;

	tmp_path(path, sizeof(path), "esc");
	o.path = path;
	assert_int_equal(audit_open(&a, &o), 0);
	deny_record(&r);
	for (i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
		r.detail = in[i];
		audit_write(a, &r);
	}
	audit_close(a);
	text = slurp(path);
	/* jansson's spelling: short escapes where JSON has them, \u00XX in
	 * capitals otherwise, DEL and UTF-8 as they are */
	assert_non_null(strstr(text, "\"detail\":\"tab\\tnl\\nret\\rbs\\bff\\f\""));
	assert_non_null(strstr(text, "\"detail\":\"\\u0001\\u001F\""));
	assert_non_null(strstr(text, "\"detail\":\"del\x7f\""));
	assert_non_null(strstr(text, "\"detail\":\"caf\xc3\xa9\""));
	/* C1 controls and bidirectional overrides escaped, U+00A0 not */
	assert_non_null(strstr(text, "\"detail\":\"\\u009B2J\""));
	assert_non_null(strstr(text, "\"detail\":\"a\\u202Eb\""));
	assert_non_null(strstr(text, "\"detail\":\"\\u2066\\u2069\""));
	assert_non_null(strstr(text, "\"detail\":\"\\u009F\xc2\xa0\""));
	assert_non_null(strstr(text, "\"detail\":\"\\\\xc0\\\\xaf\""));
	assert_non_null(strstr(text, "\"detail\":\"a\\\\x20b\\\\x5c\\\\xff\""));
	line = text;
	for (i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
		char *nl = strchr(line, '\n');
		json_t *j, *ref = json_string(in[i]);
		const char *got;

		assert_non_null(nl);
		*nl = '\0';
		j = json_loads(line, 0, NULL);
		if (!j)
			fail_msg("record %zu is not JSON: %s", i, line);
		got = json_string_value(json_object_get(j, "detail"));
		assert_non_null(got);
		if (ref)
			assert_string_equal(got, in[i]);
		else
			assert_non_null(strstr(got, "\\x"));
		json_decref(ref);
		json_decref(j);
		line = nl + 1;
	}
	assert_int_equal(*line, '\0');
	free(text);
	unlink(path);
}

/* A path longer than the writer's first buffer: the line grows, stays
 * whole and parses. */
static void test_json_long_field(void **state)
{
	struct audit_options o = { .format = AUDIT_JSON };
	struct audit_record r;
	struct audit *a;
	char path[128], *text, *big, *js;
	json_t *j;

	tmp_path(path, sizeof(path), "long");
	o.path = path;
	big = malloc(20001);
	assert_non_null(big);
	memset(big, 'p', 20000);
	big[0] = '/';
	big[19999] = '"';
	big[20000] = '\0';
	assert_int_equal(audit_open(&a, &o), 0);
	deny_record(&r);
	r.http.method = "GET";
	r.http.path = big;
	audit_write(a, &r);
	audit_close(a);
	text = slurp(path);
	assert_int_equal(strchr(text, '\n') - text + 1, (long)strlen(text));
	j = json_loads(text, 0, NULL);
	assert_non_null(j);
	assert_string_equal(json_string_value(json_object_get(json_object_get(j, "http"), "path")),
			    big);
	json_decref(j);
	js = audit_record_json(&r);
	assert_non_null(js);
	assert_int_equal(strlen(js) + 1, strlen(text));
	assert_memory_equal(js, text, strlen(js));
	free(js);
	free(text);
	free(big);
	unlink(path);
}

static size_t file_size(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return (size_t)st.st_size;
}

static int count_lines(const char *text)
{
	int n = 0;

	for (; *text; text++)
		n += *text == '\n';
	return n;
}

/* A batching thread's records reach the file at the flush, in order, one
 * write() for all of them; denials reach the summary and the tap at
 * once; a record bigger than the batch goes after what was batched
 * before it; a reopen before the flush sends the batch to the new file;
 * audit_thread_end() writes what is left. */
static void test_batched_records(void **state)
{
	struct audit_options o = { .format = AUDIT_JSON };
	struct tap_seen *t = calloc(1, sizeof(*t));
	struct audit_record r;
	struct audit *a;
	char path[128], rotated[160], *text, *big, *p1, *p2, *p3;
	size_t before;

	assert_non_null(t);
	tmp_path(path, sizeof(path), "batch");
	snprintf(rotated, sizeof(rotated), "%s.1", path);
	o.path = path;
	assert_int_equal(audit_open(&a, &o), 0);
	audit_set_tap(a, tap_cb, t);
	audit_thread_batch(a);
	deny_record(&r);
	r.pid = 1;
	audit_write(a, &r);
	r.pid = 2;
	audit_write(a, &r);
	assert_int_equal(file_size(path), 0);
	assert_int_equal(t->n, 2); /* the tap does not wait */
	audit_thread_flush();
	text = slurp(path);
	assert_int_equal(count_lines(text), 2);
	p1 = strstr(text, "\"pid\":1,");
	p2 = strstr(text, "\"pid\":2,");
	assert_true(p1 && p2 && p1 < p2);
	free(text);

	/* bigger than the batch: after the batched record before it */
	r.pid = 3;
	audit_write(a, &r);
	big = malloc(70001);
	assert_non_null(big);
	memset(big, 'd', 70000);
	big[70000] = '\0';
	r.pid = 4;
	r.detail = big;
	audit_write(a, &r);
	r.detail = NULL;
	text = slurp(path);
	assert_int_equal(count_lines(text), 4);
	p2 = strstr(text, "\"pid\":3,");
	p3 = strstr(text, "\"pid\":4,");
	assert_true(p2 && p3 && p2 < p3);
	free(text);
	free(big);

	/* a reopen before the flush: the batch goes to the new file */
	r.pid = 5;
	audit_write(a, &r);
	before = file_size(path);
	assert_int_equal(rename(path, rotated), 0);
	assert_int_equal(audit_reopen(a), 0);
	audit_thread_flush();
	assert_int_equal(file_size(rotated), before);
	text = slurp(path);
	assert_int_equal(count_lines(text), 1);
	assert_non_null(strstr(text, "\"pid\":5,"));
	free(text);

	/* the thread's end writes the rest */
	r.pid = 6;
	audit_write(a, &r);
	assert_int_equal(count_lines(text = slurp(path)), 1);
	free(text);
	audit_thread_end();
	text = slurp(path);
	assert_int_equal(count_lines(text), 2);
	assert_non_null(strstr(text, "\"pid\":6,"));
	free(text);
	assert_int_equal(t->n, 6);
	audit_close(a);
	free(t);
	unlink(path);
	unlink(rotated);
}

static void test_text_line(void **state)
{
	struct audit_options o = { .format = AUDIT_TEXT };
	struct audit_record r;
	struct audit *a;
	char path[128], *text;

	tmp_path(path, sizeof(path), "text");
	o.path = path;
	assert_int_equal(audit_open(&a, &o), 0);
	deny_record(&r);
	r.alpn = NULL;
	audit_write(a, &r);
	/* an agent naming itself to forge a second record */
	deny_record(&r);
	strcpy(r.comm, "x\nallow pid=1");
	r.sni = NULL;
	r.alpn = NULL;
	r.has_dst = true;
	assert_int_equal(addr_parse("2001:db8::1", &r.dst), 0);
	r.dst_port = 8443;
	r.cgroup = NULL;
	r.cgroup_id = 0;
	r.verdict = EGR_VERDICT_AUDIT;
	r.reason = EGR_REASON_RULE_DENY;
	r.rule = "2001:db8::/32";
	audit_write(a, &r);
	audit_close(a);

	text = slurp(path);
	assert_string_equal(text,
		"2026-11-27T16:00:00.123Z deny pid=123 comm=curl dst=192.0.2.66:443 sni=evil.test "
		"reason=no_match rule=- policy=default up=0 down=0 dur=23ms uid=1000 proto=tcp "
		"origin=proxy cgroup=/sys/fs/cgroup/egressd/run-1 cgroup_id=4242\n"
		"2026-11-27T16:00:00.123Z audit pid=123 comm=x\\x0aallow\\x20pid=1 "
		"dst=[2001:db8::1]:8443 reason=rule_deny rule=2001:db8::/32 policy=default "
		"up=0 down=0 dur=23ms uid=1000 proto=tcp origin=proxy\n");
	free(text);
	unlink(path);
}

/* A request under interception: the http part, as JSON and as text;
 * credentials by name only; agent bytes in method/path escaped. */
static void test_http_fields(void **state)
{
	struct audit_options o = { .format = AUDIT_JSON };
	struct audit_record r;
	struct audit *a;
	char path[128], *text, *nl;
	json_t *j, *h, *cr;

	tmp_path(path, sizeof(path), "http");
	o.path = path;
	assert_int_equal(audit_open(&a, &o), 0);
	deny_record(&r);
	r.verdict = EGR_VERDICT_ALLOW;
	r.reason = EGR_REASON_RULE_ALLOW;
	r.origin = "intercept";
	r.rule = "read-acme";
	r.host = "api.example.com";
	r.sni = "api.example.com";
	r.http.method = "POST";
	r.http.path = "/repos/acme/x";
	r.http.status = 201;
	r.http.creds = "github,extra";
	r.http.req_body = 12;
	r.http.resp_body = 1ULL << 32;
	audit_write(a, &r);
	/* refused before any credential: no status from upstream, a reason */
	r.verdict = EGR_VERDICT_DENY;
	r.reason = EGR_REASON_RULE_DENY;
	r.http.method = "DELETE";
	r.http.path = NULL;
	r.http.status = 0;
	r.http.creds = NULL;
	r.http.req_body = 0;
	r.http.resp_body = 0;
	r.detail = "denied (rule no-delete)";
	audit_write(a, &r);
	/* not a request: no http part */
	deny_record(&r);
	audit_write(a, &r);
	audit_close(a);

	text = slurp(path);
	nl = strchr(text, '\n');
	assert_non_null(nl);
	*nl = '\0';
	j = json_loads(text, 0, NULL);
	assert_non_null(j);
	h = json_object_get(j, "http");
	assert_true(json_is_object(h));
	assert_string_equal(json_string_value(json_object_get(h, "method")), "POST");
	assert_string_equal(json_string_value(json_object_get(h, "path")), "/repos/acme/x");
	assert_int_equal(json_integer_value(json_object_get(h, "status")), 201);
	cr = json_object_get(h, "credentials");
	assert_int_equal(json_array_size(cr), 2);
	assert_string_equal(json_string_value(json_array_get(cr, 0)), "github");
	assert_string_equal(json_string_value(json_array_get(cr, 1)), "extra");
	assert_int_equal(json_integer_value(json_object_get(h, "req_body_bytes")), 12);
	assert_int_equal(json_integer_value(json_object_get(h, "resp_body_bytes")), 1LL << 32);
	assert_string_equal(json_string_value(json_object_get(j, "rule")), "read-acme");
	assert_null(json_object_get(j, "detail"));
	json_decref(j);

	text[strlen(text)] = '\n';
	nl = strchr(nl + 1, '\n');
	assert_non_null(nl);
	*nl = '\0';
	j = json_loads(strrchr(text, '\n') + 1, 0, NULL);
	assert_non_null(j);
	h = json_object_get(j, "http");
	assert_string_equal(json_string_value(json_object_get(h, "method")), "DELETE");
	assert_null(json_object_get(h, "path"));
	assert_null(json_object_get(h, "status"));
	assert_int_equal(json_array_size(json_object_get(h, "credentials")), 0);
	assert_string_equal(json_string_value(json_object_get(j, "detail")),
			    "denied (rule no-delete)");
	json_decref(j);

	j = json_loads(nl + 1, 0, NULL);
	assert_non_null(j);
	assert_null(json_object_get(j, "http"));
	json_decref(j);
	free(text);
	unlink(path);

	/* text: one token per field, agent bytes escaped */
	o.format = AUDIT_TEXT;
	assert_int_equal(audit_open(&a, &o), 0);
	deny_record(&r);
	r.http.method = "GET";
	r.http.path = "/a b\nallow";
	r.http.status = 403;
	r.http.creds = "k";
	r.http.resp_body = 40;
	r.detail = "no rule";
	audit_write(a, &r);
	audit_close(a);
	text = slurp(path);
	assert_non_null(strstr(text, " method=GET path=/a\\x20b\\x0aallow status=403 creds=k "
				    "req_body=0 resp_body=40 detail=no\\x20rule\n"));
	assert_int_equal(strchr(text, '\n') - text + 1, (long)strlen(text));
	free(text);
	unlink(path);
}

/* To a pipe (journald's stream, `| tee`) a batch of many records would
 * not stay whole beside other writers: each record is written at once,
 * even by a batching thread. */
static void test_no_batch_on_pipe(void **state)
{
	struct audit_options o = { .format = AUDIT_JSON };
	struct audit_record r;
	struct audit *a;
	char path[128], buf[4096];
	int rfd;
	ssize_t n;

	tmp_path(path, sizeof(path), "fifo");
	assert_int_equal(mkfifo(path, 0600), 0);
	rfd = open(path, O_RDONLY | O_NONBLOCK);
	assert_true(rfd >= 0);
	o.path = path;
	assert_int_equal(audit_open(&a, &o), 0);
	audit_thread_batch(a);
	deny_record(&r);
	audit_write(a, &r);
	n = read(rfd, buf, sizeof(buf) - 1);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_non_null(strstr(buf, "\"sni\":\"evil.test\""));
	assert_int_equal(buf[n - 1], '\n');
	audit_thread_end();
	audit_close(a);
	close(rfd);
	unlink(path);
}

/* No path, to_stdout: the daemon's default sink (journald, kubectl logs).
 * The records go to standard output; closing the audit leaves it open. */
static void test_stdout_sink(void **state)
{
	struct audit_options o = { .format = AUDIT_JSON, .to_stdout = true };
	struct audit_record r;
	struct audit *a;
	char path[128], *text;
	int fd, saved;

	tmp_path(path, sizeof(path), "stdout");
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	fflush(stdout);
	saved = dup(STDOUT_FILENO);
	assert_true(saved >= 0);
	assert_int_equal(dup2(fd, STDOUT_FILENO), STDOUT_FILENO);
	close(fd);
	assert_int_equal(audit_open(&a, &o), 0);
	deny_record(&r);
	audit_write(a, &r);
	audit_close(a);
	assert_int_equal(write(STDOUT_FILENO, "still open\n", 11), 11);
	assert_int_equal(dup2(saved, STDOUT_FILENO), STDOUT_FILENO);
	close(saved);
	text = slurp(path);
	assert_non_null(strstr(text, "\"sni\":\"evil.test\""));
	assert_non_null(strstr(text, "}\nstill open\n"));
	free(text);
	unlink(path);

	/* without to_stdout, no path: nothing is written anywhere */
	o.to_stdout = false;
	assert_int_equal(audit_open(&a, &o), 0);
	audit_write(a, &r);
	audit_close(a);
}

static void test_reopen(void **state)
{
	struct audit_options o = { .format = AUDIT_TEXT };
	struct audit_record r;
	struct audit *a;
	char path[128], rotated[160], *text;

	tmp_path(path, sizeof(path), "rot");
	snprintf(rotated, sizeof(rotated), "%s.1", path);
	o.path = path;
	assert_int_equal(audit_open(&a, &o), 0);
	deny_record(&r);
	audit_write(a, &r);
	assert_int_equal(rename(path, rotated), 0);
	assert_int_equal(audit_reopen(a), 0);
	r.pid = 77;
	audit_write(a, &r);
	audit_close(a);
	text = slurp(rotated);
	assert_non_null(strstr(text, "pid=123 "));
	assert_null(strstr(text, "pid=77 "));
	free(text);
	text = slurp(path);
	assert_non_null(strstr(text, "pid=77 "));
	free(text);
	unlink(path);
	unlink(rotated);

	o.path = "/nonexistent-dir/x.log";
	assert_int_equal(audit_open(&a, &o), -ENOENT);
	assert_null(a);
	audit_close(NULL);
}

/* The log path often lies in the agent's own directory (sudo egressd run
 * --log egressd.log): a symlink or a second name the agent left there must
 * not make root append to another file (safepath.h). Symlinks owned by
 * "the agent" (uid 65534 here) are refused, root's are followed; a file
 * owned by another uid or with two names is refused, also at a reopen. */
static void test_log_path_safety(void **state)
{
	struct audit_options o = { .format = AUDIT_TEXT };
	struct audit_record r;
	struct audit *a;
	char dir[] = "/tmp/test_audit_safe_XXXXXX", target[128], p[160], q[160], *text;
	int fd;

	if (geteuid() != 0)
		skip(); /* lchown to another uid */
	assert_non_null(mkdtemp(dir));
	snprintf(target, sizeof(target), "%s/bashrc", dir);
	fd = open(target, O_WRONLY | O_CREAT | O_EXCL, 0644);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "keep\n", 5), 5);
	close(fd);
	deny_record(&r);

	/* the file is an agent's symlink */
	snprintf(p, sizeof(p), "%s/agent.log", dir);
	assert_int_equal(symlink(target, p), 0);
	assert_int_equal(lchown(p, 65534, 65534), 0);
	o.path = p;
	assert_int_equal(audit_open(&a, &o), -ELOOP);
	/* a directory on the way is an agent's symlink */
	snprintf(q, sizeof(q), "%s/logs", dir);
	assert_int_equal(symlink(dir, q), 0);
	assert_int_equal(lchown(q, 65534, 65534), 0);
	snprintf(p, sizeof(p), "%s/logs/bashrc", dir);
	o.path = p;
	assert_int_equal(audit_open(&a, &o), -EPERM);
	/* a second name of the file */
	snprintf(p, sizeof(p), "%s/hard.log", dir);
	assert_int_equal(link(target, p), 0);
	o.path = p;
	assert_int_equal(audit_open(&a, &o), -EMLINK);
	unlink(p);
	/* a file another uid owns */
	snprintf(p, sizeof(p), "%s/theirs.log", dir);
	fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0644);
	assert_true(fd >= 0);
	close(fd);
	assert_int_equal(chown(p, 65534, 65534), 0);
	o.path = p;
	assert_int_equal(audit_open(&a, &o), -EPERM);
	unlink(p);
	text = slurp(target);
	assert_string_equal(text, "keep\n");
	free(text);

	/* root's symlink to the agent's: the chain is walked link by link */
	snprintf(p, sizeof(p), "%s/agent2.log", dir);
	assert_int_equal(symlink(target, p), 0);
	assert_int_equal(lchown(p, 65534, 65534), 0);
	snprintf(q, sizeof(q), "%s/root.log", dir);
	assert_int_equal(symlink("agent2.log", q), 0);
	o.path = q;
	assert_int_equal(audit_open(&a, &o), -ELOOP);
	unlink(p);
	unlink(q);
	snprintf(q, sizeof(q), "%s/logs", dir);

	/* root's symlinks are followed, on the way and as the file */
	assert_int_equal(lchown(q, 0, 0), 0);
	snprintf(p, sizeof(p), "%s/logs/ok.log", dir);
	o.path = p;
	assert_int_equal(audit_open(&a, &o), 0);
	audit_write(a, &r);
	/* rotation: the agent swaps a symlink in for the file; the reopen
	 * refuses it and keeps writing the old file */
	snprintf(q, sizeof(q), "%s/ok.log.1", dir);
	assert_int_equal(rename(p, q), 0);
	assert_int_equal(symlink(target, p), 0);
	assert_int_equal(lchown(p, 65534, 65534), 0);
	assert_int_equal(audit_reopen(a), -ELOOP);
	r.pid = 77;
	audit_write(a, &r);
	audit_close(a);
	text = slurp(q);
	assert_non_null(strstr(text, "pid=123 "));
	assert_non_null(strstr(text, "pid=77 "));
	free(text);
	text = slurp(target);
	assert_string_equal(text, "keep\n");
	free(text);
	unlink(p);
	unlink(q);
	snprintf(q, sizeof(q), "%s/logs", dir);
	unlink(q);
	snprintf(p, sizeof(p), "%s/agent.log", dir);
	unlink(p);
	unlink(target);
	assert_int_equal(rmdir(dir), 0);
}

/* --log /dev/stdout with standard output the write end pfd[1]: one record
 * arrives at pfd[0]. Both ends are closed. */
static void record_through_stdout(int pfd[2])
{
	struct audit_options o = { .format = AUDIT_JSON, .path = "/dev/stdout" };
	struct audit_record r;
	struct audit *a;
	char buf[4096];
	ssize_t n;
	int saved;

	fflush(stdout);
	saved = dup(STDOUT_FILENO);
	assert_int_equal(dup2(pfd[1], STDOUT_FILENO), STDOUT_FILENO);
	assert_int_equal(audit_open(&a, &o), 0);
	deny_record(&r);
	audit_write(a, &r);
	audit_close(a);
	assert_int_equal(dup2(saved, STDOUT_FILENO), STDOUT_FILENO);
	close(saved);
	close(pfd[1]);
	n = read(pfd[0], buf, sizeof(buf) - 1);
	assert_true(n > 0);
	buf[n] = '\0';
	assert_non_null(strstr(buf, "\"sni\":\"evil.test\""));
	close(pfd[0]);
}

/* A FIFO or terminal keeps nothing: anyone's will do; /dev/stdout is the
 * descriptor egressd was given (`egressd run --log /dev/stdout | jq`). */
static void test_log_to_pipe_and_stdout(void **state)
{
	struct audit_options o = { .format = AUDIT_JSON };
	struct audit *a;
	char path[128];
	int pfd[2], rfd;

	(void)state;
	if (geteuid() != 0)
		skip(); /* chown */
	tmp_path(path, sizeof(path), "theirfifo");
	assert_int_equal(mkfifo(path, 0666), 0);
	assert_int_equal(chown(path, 65534, 65534), 0);
	rfd = open(path, O_RDONLY | O_NONBLOCK);
	assert_true(rfd >= 0);
	o.path = path;
	assert_int_equal(audit_open(&a, &o), 0);
	audit_close(a);
	close(rfd);
	unlink(path);

	assert_int_equal(pipe(pfd), 0);
	record_through_stdout(pfd);
	/* a Unix socket (journald's StandardOutput=journal): cannot be
	 * reopened through /proc, so the descriptor itself is used */
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, pfd), 0);
	record_through_stdout(pfd);
}

/* A write that fails (a full disk) loses its record: counted, and said. */
static void test_write_errors_counted(void **state)
{
	struct audit_options o = { .format = AUDIT_JSON, .path = "/dev/full" };
	struct audit_record r;
	struct audit *a;

	(void)state;
	if (geteuid() != 0)
		skip(); /* /dev/full is root's: the log must be */
	assert_int_equal(audit_open(&a, &o), 0);
	assert_int_equal(audit_write_errors(a), 0);
	deny_record(&r);
	audit_write(a, &r);
	audit_write(a, &r);
	assert_int_equal(audit_write_errors(a), 2);
	audit_close(a);
	assert_int_equal(audit_write_errors(NULL), 0);
}

/* A thread with a descriptor table of its own (as proxy workers have)
 * writes through its own handle: its records land in the file the main
 * thread's reopen made, and once told (audit_thread_refresh) it holds
 * nothing of the rotated file. */
struct priv {
	struct audit *a;
	pthread_barrier_t bar;
	const char *rotated;
	int held_after; /* descriptors of the thread still on the rotated file */
	int bad;
};

static int held_by_thread(const char *target)
{
	char dir[64], link[PATH_MAX + 64], to[PATH_MAX];
	struct dirent *e;
	DIR *d;
	int n = 0;

	snprintf(dir, sizeof(dir), "/proc/thread-self/fd");
	d = opendir(dir);
	if (!d)
		return -1;
	while ((e = readdir(d))) {
		ssize_t k;

		snprintf(link, sizeof(link), "%s/%s", dir, e->d_name);
		k = readlink(link, to, sizeof(to) - 1);
		if (k < 0)
			continue;
		to[k] = '\0';
		n += strcmp(to, target) == 0;
	}
	closedir(d);
	return n;
}

static void *priv_writer(void *arg)
{
	struct priv *p = arg;
	struct audit_record r;
	char real[PATH_MAX];

	if (unshare(CLONE_FILES))
		p->bad++;
	audit_thread_private(p->a);
	deny_record(&r);
	r.pid = 101;
	audit_write(p->a, &r);
	pthread_barrier_wait(&p->bar); /* main: rename, reopen */
	pthread_barrier_wait(&p->bar);
	audit_thread_refresh(p->a);
	p->held_after = realpath(p->rotated, real) ? held_by_thread(real) : -1;
	r.pid = 102;
	audit_write(p->a, &r);
	audit_thread_end();
	return NULL;
}

static void test_private_table_thread(void **state)
{
	struct audit_options o = { .format = AUDIT_TEXT };
	struct audit_record r;
	struct priv p = { 0 };
	char path[128], rotated[160], *text;
	pthread_t t;

	(void)state;
	tmp_path(path, sizeof(path), "priv");
	snprintf(rotated, sizeof(rotated), "%s.1", path);
	o.path = path;
	assert_int_equal(audit_open(&p.a, &o), 0);
	p.rotated = rotated;
	pthread_barrier_init(&p.bar, NULL, 2);
	assert_int_equal(pthread_create(&t, NULL, priv_writer, &p), 0);
	pthread_barrier_wait(&p.bar);
	assert_int_equal(rename(path, rotated), 0);
	assert_int_equal(audit_reopen(p.a), 0);
	/* the main thread's own handle moved too */
	deny_record(&r);
	r.pid = 103;
	audit_write(p.a, &r);
	pthread_barrier_wait(&p.bar);
	pthread_join(t, NULL);
	pthread_barrier_destroy(&p.bar);
	audit_close(p.a);
	assert_int_equal(p.bad, 0);
	assert_int_equal(p.held_after, 0);
	text = slurp(rotated);
	assert_non_null(strstr(text, "pid=101 "));
	assert_null(strstr(text, "pid=102 "));
	assert_null(strstr(text, "pid=103 "));
	free(text);
	text = slurp(path);
	assert_non_null(strstr(text, "pid=102 "));
	assert_non_null(strstr(text, "pid=103 "));
	free(text);
	unlink(path);
	unlink(rotated);
}

/* Capture what a function prints to stderr. */
static char *capture_stderr(void (*fn)(void *), void *arg)
{
	char path[128];
	int saved, fd;

	tmp_path(path, sizeof(path), "stderr");
	fflush(stderr);
	saved = dup(2);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(saved >= 0 && fd >= 0);
	dup2(fd, 2);
	close(fd);
	fn(arg);
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
	char *text = slurp(path);
	unlink(path);
	return text;
}

static void write_denials(void *arg)
{
	struct audit *a = arg;
	struct audit_record r;

	deny_record(&r);
	audit_write(a, &r);
	r.verdict = EGR_VERDICT_ALLOW; /* allowed: not on stderr */
	r.reason = EGR_REASON_RULE_ALLOW;
	audit_write(a, &r);
	deny_record(&r);
	r.sni = NULL;
	r.reason = EGR_REASON_PORT;
	r.dst_port = 25;
	audit_write(a, &r);
	deny_record(&r);
	r.verdict = EGR_VERDICT_AUDIT;
	r.reason = EGR_REASON_RULE_DENY;
	r.rule = "evil.test";
	strcpy(r.comm, "node");
	r.pid = 9;
	audit_write(a, &r);
}

static void test_stderr_denials(void **state)
{
	struct audit_options o = { .path = NULL, .denials_to_stderr = true };
	struct audit *a;
	char *text;

	assert_int_equal(audit_open(&a, &o), 0);
	text = capture_stderr(write_denials, a);
	assert_string_equal(text,
		"egressd: denied curl[123] -> evil.test:443 (192.0.2.66): no allow rule matches\n"
		"egressd: denied curl[123] -> 192.0.2.66:25: no rule allows port 25\n"
		"egressd: audit: would deny node[9] -> evil.test:443 (192.0.2.66): "
		"denied by rule evil.test\n");
	free(text);
	audit_close(a);

	/* off: nothing on stderr */
	o.denials_to_stderr = false;
	assert_int_equal(audit_open(&a, &o), 0);
	text = capture_stderr(write_denials, a);
	assert_string_equal(text, "");
	free(text);
	audit_close(a);
}

static void test_summary(void **state)
{
	struct audit_options o = { .path = NULL };
	struct audit_record r;
	struct audit *a;
	char *buf = NULL;
	size_t len = 0;
	FILE *f;
	int i;

	assert_int_equal(audit_open(&a, &o), 0);
	/* nothing denied: nothing printed */
	f = open_memstream(&buf, &len);
	deny_record(&r);
	r.verdict = EGR_VERDICT_ALLOW;
	audit_write(a, &r);
	audit_print_summary(a, f);
	fclose(f);
	assert_int_equal(len, 0);
	free(buf);

	for (i = 0; i < 3; i++) {
		deny_record(&r);
		if (i == 2)
			r.sni = "EVIL.test."; /* same destination */
		audit_write(a, &r);
	}
	deny_record(&r);
	r.sni = NULL;
	r.reason = EGR_REASON_NO_NAME;
	r.dst_port = 22;
	strcpy(r.comm, "ssh");
	audit_write(a, &r);
	deny_record(&r);
	r.sni = "api.test";
	r.dst_port = 8443;
	audit_write(a, &r);
	deny_record(&r);
	r.sni = NULL;
	r.reason = EGR_REASON_LOOPBACK;
	assert_int_equal(addr_parse("127.0.0.1", &r.dst), 0);
	r.dst_port = 6379;
	strcpy(r.comm, "redis-cli");
	audit_write(a, &r);

	buf = NULL;
	f = open_memstream(&buf, &len);
	audit_print_summary(a, f);
	fclose(f);
	assert_string_equal(buf,
		"egressd: 4 destinations were denied:\n"
		"  DESTINATION     ATTEMPTS  WHO        TO ALLOW\n"
		"  evil.test:443          3  curl       --allow evil.test\n"
		"  127.0.0.1:6379         1  redis-cli  (loopback destination)\n"
		"  192.0.2.66:22          1  ssh        --allow 192.0.2.66:22\n"
		"  api.test:8443          1  curl       --allow api.test:8443\n");
	free(buf);
	audit_close(a);
}

/* A lookup the DNS proxy refused is advised as the name, not name:53. */
static void test_summary_dns(void **state)
{
	struct audit_options o = { .path = NULL };
	struct audit_record r;
	struct audit *a;
	char *buf = NULL;
	size_t len = 0;
	FILE *f;

	(void)state;
	assert_int_equal(audit_open(&a, &o), 0);
	deny_record(&r);
	r.sni = NULL;
	r.host = "evil.test";
	r.proto = IPPROTO_UDP;
	r.dst_port = 53;
	r.origin = "dns";
	strcpy(r.comm, "dig");
	audit_write(a, &r);
	f = open_memstream(&buf, &len);
	audit_print_summary(a, f);
	fclose(f);
	assert_non_null(strstr(buf, "evil.test (DNS)"));
	assert_non_null(strstr(buf, "--allow evil.test\n"));
	assert_null(strstr(buf, ":53"));
	free(buf);
	audit_close(a);
}

static void test_summary_bounded(void **state)
{
	struct audit_options o = { .path = NULL };
	struct audit_record r;
	struct audit *a;
	char *buf = NULL, name[64];
	size_t len = 0, lines = 0;
	FILE *f;
	int i;

	assert_int_equal(audit_open(&a, &o), 0);
	for (i = 0; i < 1100; i++) {
		deny_record(&r);
		snprintf(name, sizeof(name), "h%d.test", i);
		r.sni = name;
		audit_write(a, &r);
	}
	f = open_memstream(&buf, &len);
	audit_print_summary(a, f);
	fclose(f);
	for (char *p = buf; (p = strchr(p, '\n')); p++)
		lines++;
	assert_int_equal(lines, 2 + 1000 + 1);
	assert_non_null(strstr(buf, "  ... and 100 more denied attempts to destinations not listed\n"));
	free(buf);
	audit_close(a);
}

static void test_names(void **state)
{
	int i, j;

	for (i = 0; i < EGR_REASON_MAX; i++) {
		const char *n = egr_reason_name((enum egr_reason)i);

		assert_non_null(n);
		assert_string_not_equal(n, "unknown");
		for (j = 0; n[j]; j++)
			assert_true((n[j] >= 'a' && n[j] <= 'z') || n[j] == '_');
		for (j = 0; j < i; j++)
			assert_string_not_equal(n, egr_reason_name((enum egr_reason)j));
	}
	assert_string_equal(egr_reason_name(EGR_REASON_RULE_ALLOW), "rule_allow");
	assert_string_equal(egr_reason_name(EGR_REASON_NO_MATCH), "no_match");
	assert_string_equal(egr_reason_name(EGR_REASON_LOOPBACK), "loopback");
	assert_string_equal(egr_reason_name(EGR_REASON_PORT), "port");
	assert_string_equal(egr_reason_name(EGR_REASON_NO_ORIGIN), "no_origin");
	assert_string_equal(egr_reason_name(EGR_REASON_MAX), "unknown");
	assert_string_equal(egr_verdict_name(EGR_VERDICT_NONE), "none");
	assert_string_equal(egr_verdict_name(EGR_VERDICT_ALLOW), "allow");
	assert_string_equal(egr_verdict_name(EGR_VERDICT_DENY), "deny");
	assert_string_equal(egr_verdict_name(EGR_VERDICT_AUDIT), "audit");
}

/* GeoIP block (docs/geoip.md): present when known, left out when not. */
static void test_geo_fields(void **state)
{
	struct audit_options o = { .format = AUDIT_JSON };
	struct audit_record r;
	struct audit *a;
	char path[128], *text;

	tmp_path(path, sizeof(path), "geo");
	o.path = path;
	assert_int_equal(audit_open(&a, &o), 0);
	deny_record(&r);
	r.has_resolved = true;
	assert_int_equal(addr_parse("192.0.2.66", &r.resolved), 0);
	r.reason = EGR_REASON_GEO;
	r.country = "KP";
	r.asn = 64499;
	r.as_org = "Bed Evil KP";
	audit_write(a, &r);
	r.country = "";
	r.asn = 0;
	r.as_org = NULL;
	r.geo_error = true;
	audit_write(a, &r);
	audit_close(a);
	text = slurp(path);
	assert_non_null(strstr(text, "\"reason\":\"geo\""));
	assert_non_null(strstr(text, "\"country\":\"KP\",\"asn\":64499,\"as_org\":\"Bed Evil KP\"}\n"));
	/* second line: nothing known, only the error flag */
	assert_non_null(strstr(strchr(text, '\n') + 1, "\"geo_error\":true}\n"));
	assert_null(strstr(strchr(text, '\n') + 1, "country"));
	free(text);

	o.format = AUDIT_TEXT;
	assert_int_equal(audit_open(&a, &o), 0);
	deny_record(&r);
	r.country = "DE";
	r.asn = 64496;
	r.as_org = "Bed Allowed\nDE";
	audit_write(a, &r);
	audit_close(a);
	text = slurp(path);
	assert_non_null(strstr(text, " country=DE asn=64496 as_org=Bed\\x20Allowed\\x0aDE\n"));
	free(text);
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_json_line),
		cmocka_unit_test(test_json_hostile_bytes),
		cmocka_unit_test(test_json_escapes_match_jansson),
		cmocka_unit_test(test_json_long_field),
		cmocka_unit_test(test_batched_records),
		cmocka_unit_test(test_tap_gets_the_json_line),
		cmocka_unit_test(test_text_line),
		cmocka_unit_test(test_http_fields),
		cmocka_unit_test(test_reopen),
		cmocka_unit_test(test_log_path_safety),
		cmocka_unit_test(test_write_errors_counted),
		cmocka_unit_test(test_log_to_pipe_and_stdout),
		cmocka_unit_test(test_stdout_sink),
		cmocka_unit_test(test_no_batch_on_pipe),
		cmocka_unit_test(test_stderr_denials),
		cmocka_unit_test(test_summary),
		cmocka_unit_test(test_summary_dns),
		cmocka_unit_test(test_summary_bounded),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_geo_fields),
		cmocka_unit_test(test_private_table_thread),
	};

	return cmocka_run_group_tests_name("audit", tests, NULL, NULL);
}
