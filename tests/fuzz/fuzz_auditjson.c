// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * libFuzzer target for the audit log's JSON writer (user/audit.c), which
 * writes agent-supplied bytes (comm, SNI, Host, ALPN, the request path)
 * into every record. The input is cut at NUL bytes into those fields and
 * the record's other strings. Checks beyond sanitizers: the line is one
 * JSON object with no newline in it (no forged second record); a field
 * jansson accepts as a string comes back byte for byte; one it refuses
 * comes back as printable ASCII (the \xNN escapes); the credentials array
 * has one entry per non-empty name.
 */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond))                                                   \
			__builtin_trap();                                      \
	} while (0)

static void check_str(json_t *obj, const char *key, const char *want)
{
	json_t *ref = json_string(want);
	const char *got = json_string_value(json_object_get(obj, key));
	const unsigned char *p;

	CHECK(got);
	if (ref) {
		CHECK(!strcmp(got, want));
	} else {
		for (p = (const unsigned char *)got; *p; p++)
			CHECK(*p > 0x20 && *p < 0x7f);
	}
	json_decref(ref);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = malloc(size + 1), *f[7] = { 0 }, *p, *js;
	struct audit_record r;
	json_t *j, *h, *creds;
	size_t i, n = 0, names = 0;

	if (!buf)
		abort();
	memcpy(buf, data, size);
	buf[size] = '\0';
	for (p = buf; n < 7; n++) {
		f[n] = p;
		p += strlen(p);
		if (p == buf + size)
			break;
		p++;
	}
	for (i = 0; i < 7; i++)
		if (!f[i])
			f[i] = "";
	memset(&r, 0, sizeof(r));
	r.start.tv_sec = 1795795200;
	r.end.tv_sec = 1795795201;
	r.pid = 7;
	r.proto = 6;
	snprintf(r.comm, sizeof(r.comm), "%s", f[0]);
	r.sni = f[1];
	r.host = f[2];
	r.alpn = f[3];
	r.detail = f[4];
	r.http.method = "GET";
	r.http.path = f[5];
	r.http.creds = f[6];
	r.verdict = EGR_VERDICT_ALLOW;
	r.reason = EGR_REASON_RULE_ALLOW;

	js = audit_record_json(&r);
	CHECK(js);
	CHECK(!strchr(js, '\n'));
	j = json_loads(js, 0, NULL);
	CHECK(json_is_object(j));
	if (r.comm[0])
		check_str(j, "comm", r.comm);
	check_str(j, "sni", r.sni);
	check_str(j, "host", r.host);
	check_str(j, "alpn", r.alpn);
	check_str(j, "detail", r.detail);
	h = json_object_get(j, "http");
	CHECK(json_is_object(h));
	if (*r.http.path)
		check_str(h, "path", r.http.path);
	creds = json_object_get(h, "credentials");
	CHECK(json_is_array(creds));
	for (p = f[6]; *p;) {
		size_t k = strcspn(p, ",");

		names += k > 0;
		p += k;
		if (*p)
			p++;
	}
	CHECK(json_array_size(creds) == names);
	json_decref(j);
	free(js);
	free(buf);
	return 0;
}
