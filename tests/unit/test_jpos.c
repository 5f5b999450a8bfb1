// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/* user/jpos.c: JSON position tree, typo suggestions, message helpers. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "jpos.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static struct jpos *build(const char *text)
{
	struct jpos *j = NULL;

	assert_int_equal(jpos_build(text, strlen(text), false, &j), 0);
	assert_non_null(j);
	return j;
}

/* --- the tree ----------------------------------------------------------- */

/* (moved from test_dconfig.c with the walker) */
static void test_jpos(void **state)
{
	static const char text[] = "{\n \"a\": [1,\n  {\"b\\u0021\": \"x\"}],\n \"a\": 2}";
	struct jpos *j = build(text), *bad = (struct jpos *)1;
	const struct jpos *a;

	(void)state;
	a = jpos_key(j, "a");     /* the last of a repeated key */
	assert_int_equal(a->line, 4);
	assert_int_equal(j->n_kids, 2);
	a = &j->kids[0];
	assert_true(a->array);
	assert_int_equal(jpos_idx(a, 1)->line, 3);
	assert_int_equal(jpos_key(jpos_idx(a, 1), "b!")->line, 3);
	assert_null(jpos_idx(a, 2));
	assert_null(jpos_key(a, "x"));
	assert_int_equal(jpos_line(NULL, 7), 7);
	jpos_free(j);
	/* a NUL byte that jansson tolerates after a number is refused here */
	assert_int_equal(jpos_build("[1\0]", 4, false, &bad), -EINVAL);
	assert_null(bad);
	assert_int_equal(jpos_build("{\"a\" 1}", 7, false, &bad), -EINVAL);
	assert_null(bad);
}

/* Keys, their lines and their values' lines; paths through objects and
 * arrays; a key name reused in a nested object is not the outer one. */
static void test_keys_and_paths(void **state)
{
	static const char text[] =
		"\n"
		"{\"name\": \"x\",\n"                       /* 2 */
		" \"inner\": {\"allow\": [\"in\"]},\n"       /* 3 */
		" \"allow\":\n"                              /* 4 */
		"   [\"a\",\n"                               /* 5 */
		"    [1, [2,\n"                              /* 6 */
		"      3]],\n"                               /* 7 */
		"    {\"rule\":\n"                           /* 8 */
		"       \"r\"}\n"                            /* 9 */
		"   ]}\n";
	struct jpos *j = build(text);
	const struct jpos *allow, *in, *e;

	(void)state;
	assert_true(j->object);
	assert_int_equal(j->line, 2);
	assert_int_equal(j->key_line, 2);
	assert_null(j->key);
	assert_int_equal(j->n_kids, 3);
	assert_string_equal(j->kids[0].key, "name");

	allow = jpos_key(j, "allow");
	assert_ptr_equal(allow, &j->kids[2]);
	assert_int_equal(allow->key_line, 4);
	assert_int_equal(allow->line, 5);
	assert_true(allow->array);
	assert_int_equal(allow->n_kids, 3);
	in = jpos_key(jpos_key(j, "inner"), "allow");
	assert_int_equal(in->line, 3);
	assert_int_equal(jpos_idx(in, 0)->line, 3);

	/* elements: their own line, key_line == line, no key */
	e = jpos_idx(allow, 0);
	assert_int_equal(e->line, 5);
	assert_int_equal(e->key_line, 5);
	assert_null(e->key);
	e = jpos_idx(allow, 1);
	assert_int_equal(e->line, 6);
	assert_int_equal(jpos_idx(jpos_idx(e, 1), 1)->line, 7);
	e = jpos_key(jpos_idx(allow, 2), "rule");
	assert_int_equal(e->key_line, 8);
	assert_int_equal(e->line, 9);
	/* the byte range is the value's text */
	assert_int_equal(e->end - e->start, 3);
	assert_memory_equal(text + e->start, "\"r\"", 3);

	/* wrong kinds and missing steps are NULL, not a crash */
	assert_null(jpos_idx(j, 0));
	assert_null(jpos_key(allow, "rule"));
	assert_null(jpos_key(NULL, "x"));
	assert_null(jpos_idx(NULL, 0));
	assert_null(jpos_key(jpos_idx(allow, 0), "x"));
	assert_int_equal(jpos_line(jpos_key(j, "nope"), 42), 42);
	jpos_free(j);
	jpos_free(NULL);
}

/* Escapes, quotes, braces and brackets inside strings neither end a value
 * nor shift the lines after them; escaped keys are found decoded. */
static void test_strings(void **state)
{
	static const char text[] =
		"{\"a\\\"{[\": \"}]\\\\\",\n"                  /* 1: key a"{[, value }]\ */
		" \"b\": [\"x\\\"]\", \"{\", \"\\n\\\\\"],\n" /* 2 */
		" \"\\u00e9t\\u00E9\": {\"k\": \"\\ud83d\\ude00\"},\n" /* 3 */
		" \"c\": 1}";                                   /* 4 */
	json_t *v = json_loads(text, 0, NULL);
	struct jpos *j = build(text);

	(void)state;
	assert_non_null(v); /* the text is JSON */
	json_decref(v);
	assert_int_equal(j->n_kids, 4);
	assert_int_equal(jpos_key(j, "a\"{[")->line, 1);
	assert_int_equal(jpos_key(j, "b")->n_kids, 3);
	assert_int_equal(jpos_idx(jpos_key(j, "b"), 2)->line, 2);
	assert_int_equal(jpos_key(jpos_key(j, "\xc3\xa9t\xc3\xa9"), "k")->line, 3);
	assert_int_equal(jpos_key(j, "c")->line, 4);
	jpos_free(j);
}

/* Repeated keys: every one is in the tree, in file order; lookups give the
 * last (the value jansson keeps). */
static void test_duplicate_keys(void **state)
{
	static const char text[] = "{\"k\": 1,\n\"o\": {\"k\": 2},\n\"k\":\n 3}";
	struct jpos *j = build(text);

	(void)state;
	assert_int_equal(j->n_kids, 3);
	assert_int_equal(j->kids[0].key_line, 1);
	assert_int_equal(jpos_key(j, "k")->key_line, 3);
	assert_int_equal(jpos_key(j, "k")->line, 4);
	assert_int_equal(jpos_key(jpos_key(j, "o"), "k")->line, 2);
	jpos_free(j);
}

/* Nesting past the tree's depth is stepped over, not recursed into; the
 * walk still ends in the right place. A long array is placed whole. */
static void test_depth_and_size(void **state)
{
	char deep[512], *big;
	struct jpos *j;
	const struct jpos *n;
	size_t i, o = 0, depth = 0;

	(void)state;
	for (i = 0; i < 100; i++)
		deep[o++] = '[';
	for (i = 0; i < 100; i++)
		deep[o++] = ']';
	memcpy(deep + o, ",\n7]", 5);
	memmove(deep + 1, deep, o + 5);
	deep[0] = '[';
	j = build(deep);
	for (n = j; n && n->n_kids; n = &n->kids[0])
		depth++;
	assert_true(depth < 100);
	assert_int_equal(jpos_idx(j, 1)->line, 2);
	jpos_free(j);

	big = malloc(5 * 10000 + 8);
	assert_non_null(big);
	o = 0;
	big[o++] = '[';
	for (i = 0; i < 10000; i++)
		o += (size_t)sprintf(big + o, "%s\n%zu", i ? "," : "", i % 10);
	big[o++] = ']';
	big[o] = '\0';
	j = build(big);
	assert_int_equal(j->n_kids, 10000);
	assert_int_equal(jpos_idx(j, 9999)->line, 10001);
	jpos_free(j);
	free(big);
}

/* lenient (policy files, where jansson's verdict stands): a NUL after a
 * number or literal is skipped as jansson skips it; text the walker
 * still refuses gives the tree as far as it got. */
static void test_lenient(void **state)
{
	static const char text[] = "{\"allow\":\n [1\0, true\0],\n \"mode\": 3}";
	static const char bad[] = "{\"a\": 1,\n \"b\": [1,\n 2 3],\n \"c\": 4}";
	struct jpos *j = NULL;
	const struct jpos *a;

	(void)state;
	assert_int_equal(jpos_build(text, sizeof(text) - 1, false, &j), -EINVAL);
	assert_null(j);
	assert_int_equal(jpos_build(text, sizeof(text) - 1, true, &j), 0);
	a = jpos_key(j, "allow");
	assert_int_equal(a->line, 2);
	assert_int_equal(a->n_kids, 2);
	assert_int_equal(jpos_idx(a, 1)->line, 2);
	assert_int_equal(jpos_key(j, "mode")->line, 3);
	jpos_free(j);
	/* only one NUL, and only after a scalar that is not a string */
	assert_int_equal(jpos_build("[1\0\0]", 5, true, &j), 0);
	assert_int_equal(j->n_kids, 1);
	jpos_free(j);
	assert_int_equal(jpos_build("[\"x\"\0]", 5, true, &j), 0);
	assert_int_equal(j->n_kids, 1);
	jpos_free(j);

	assert_int_equal(jpos_build(bad, sizeof(bad) - 1, true, &j), 0);
	assert_int_equal(jpos_idx(jpos_key(j, "b"), 1)->line, 3);
	assert_null(jpos_key(j, "c"));
	jpos_free(j);
	/* nothing walkable at all: a root without kids */
	assert_int_equal(jpos_build("", 0, true, &j), 0);
	assert_int_equal(j->line, 1);
	assert_int_equal(j->n_kids, 0);
	jpos_free(j);
}

/* --- messages ----------------------------------------------------------- */

/* (moved from test_dconfig.c) */
static void test_suggest_and_quote(void **state)
{
	static const char *const names[] = { "ci-agents", "learning", "mode", "allow" };
	char q[160];

	(void)state;
	assert_string_equal(jpos_suggest("ci-agent", names, 4), "ci-agents");
	assert_string_equal(jpos_suggest("lerning", names, 4), "learning");
	assert_string_equal(jpos_suggest("mdoe", names, 4), "mode");
	assert_string_equal(jpos_suggest("ALLOW", names, 4), "allow");
	assert_null(jpos_suggest("x", names, 4));
	assert_null(jpos_suggest("deny", names, 4));
	assert_string_equal(jpos_quote("a\"b\n\xc3\xa9", q, sizeof(q)), "\"a\\\"b\\n\\u00E9\"");
	assert_string_equal(jpos_quote("0123456789012345678901234567890123456789"
				       "012345678901234567890123456789", q, sizeof(q)),
			    "\"0123456789012345678901234567890123456789012345678901234567890123...\"");
}

static const char *const policy_keys[] = { "name", "mode", "allow", "deny", "intercept",
					   "upstream_ca", "gateways", "deny_countries" };

static const struct {
	const char *word;
	const char *want; /* NULL: no suggestion */
} suggest_cases[] = {
	/* close matches: deletion, insertion, substitution, transposition */
	{ "alow", "allow" },
	{ "nmae", "name" },
	{ "denny", "deny" },
	{ "upstream-ca", "upstream_ca" },
	{ "gatways", "gateways" },
	/* case folded, transpositions too */
	{ "MODE", "mode" },
	{ "MDOE", "mode" },
	{ "Deny_Countries", "deny_countries" },
	/* the allowance grows with the word: 1 edit up to 5 bytes, 2 up to
	 * 8, 3 beyond */
	{ "deny_country", "deny_countries" },   /* 3 edits, 12 bytes */
	{ "interxxpt", "intercept" },           /* 2 edits, 9 bytes */
	{ "dns", NULL },                        /* 2 from "deny": too far for 3 bytes */
	{ "mdeo", NULL },                       /* 2 from "mode" */
	{ "mo", NULL },
	{ "", NULL },
	{ "policies", NULL },
	{ "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", NULL },
};

static void test_suggest_cases(void **state)
{
	static const char *const tie[] = { "cat", "car", "bat" };
	static const char *const none[] = { "x" };
	size_t i;

	(void)state;
	for (i = 0; i < ARRAY_SIZE(suggest_cases); i++) {
		const char *got = jpos_suggest(suggest_cases[i].word, policy_keys,
					       ARRAY_SIZE(policy_keys));

		if (suggest_cases[i].want == NULL ? got != NULL :
		    got == NULL || strcmp(got, suggest_cases[i].want))
			fail_msg("%s: got %s, want %s", suggest_cases[i].word,
				 got ? got : "(none)",
				 suggest_cases[i].want ? suggest_cases[i].want : "(none)");
	}
	/* ties go to the first candidate; an exact match beats them */
	assert_string_equal(jpos_suggest("cax", tie, 3), "cat");
	assert_string_equal(jpos_suggest("bar", tie, 3), "car");
	assert_string_equal(jpos_suggest("bat", tie, 3), "bat");
	assert_null(jpos_suggest("abc", none, 0));
	assert_null(jpos_suggest("abc", NULL, 0));
}

static void test_json_type(void **state)
{
	json_t *v;

	(void)state;
	v = json_object();
	assert_string_equal(jpos_json_type(v), "an object");
	json_decref(v);
	v = json_array();
	assert_string_equal(jpos_json_type(v), "an array");
	json_decref(v);
	v = json_string("s");
	assert_string_equal(jpos_json_type(v), "a string");
	json_decref(v);
	v = json_integer(1);
	assert_string_equal(jpos_json_type(v), "an integer");
	json_decref(v);
	v = json_real(1.5);
	assert_string_equal(jpos_json_type(v), "a number");
	json_decref(v);
	assert_string_equal(jpos_json_type(json_true()), "a boolean");
	assert_string_equal(jpos_json_type(json_false()), "a boolean");
	assert_string_equal(jpos_json_type(json_null()), "null");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_jpos),
		cmocka_unit_test(test_keys_and_paths),
		cmocka_unit_test(test_strings),
		cmocka_unit_test(test_duplicate_keys),
		cmocka_unit_test(test_depth_and_size),
		cmocka_unit_test(test_lenient),
		cmocka_unit_test(test_suggest_and_quote),
		cmocka_unit_test(test_suggest_cases),
		cmocka_unit_test(test_json_type),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
