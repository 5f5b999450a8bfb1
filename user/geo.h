/* SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause */
/*
 * GeoIP country and ASN of upstream addresses, from MaxMind DB files
 * (GeoLite2/GeoIP2, DB-IP lite, @ip-location-db) via libmaxminddb.
 * Consumers: the proxy (lookup once per upstream connection), the audit
 * record (country/asn/as_org) and the policy engine (deny_countries, per-rule
 * asn allow-lists). docs/geoip.md describes the databases and policy fields.
 */
#ifndef EGR_GEO_H
#define EGR_GEO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "addr.h"

#define GEO_AS_ORG_LEN 128

struct geo_result {
	char country[3];               /* ISO 3166-1 alpha-2, upper case; "" unknown */
	uint32_t asn;                  /* 0 unknown */
	char as_org[GEO_AS_ORG_LEN];   /* "" unknown; valid UTF-8, no control chars */
};

struct geo;

/*
 * Open the country and/or ASN database; either path may be NULL (both NULL
 * gives a handle whose lookups find nothing). Each file is memory-mapped,
 * its search tree is checked in full and a sample of its records is decoded,
 * so a corrupt file or one of the wrong kind fails here, at startup, not on
 * the first lookup. On error, err holds one line naming the file and reason.
 * Returns 0, or:
 *   -ENOENT, -EACCES, ... the file cannot be opened (errno of open/stat)
 *   -EBADMSG  not a MaxMind DB file, or its tree/data is corrupt
 *   -EINVAL   a valid database of the wrong kind (e.g. ASN given as country)
 *   -ENOMEM
 */
int geo_open(const char *country_db_path, const char *asn_db_path,
	     struct geo **out, char *err, size_t errlen);
void geo_close(struct geo *geo); /* accepts NULL */

/*
 * Country and ASN of one address (v4-mapped IPv4 or IPv6). Safe to call from
 * any number of threads at once on one handle. geo may be NULL (finds
 * nothing). res is always filled; fields stay empty/0 where nothing is known.
 * Returns 0 when anything was found, -ENOENT when no database has the
 * address (also: IPv6 address, IPv4-only database), -EIO when a database
 * reported an error for this address (res then holds what the other gave).
 */
int geo_lookup(const struct geo *geo, const struct egr_addr *a, struct geo_result *res);

/* One line for the startup log: "country=GeoLite2-Country(2024-05-01) asn=none". */
void geo_describe(const struct geo *geo, char *buf, size_t len);

/*
 * Policy hooks, pure functions.
 * geo_country_denied: true iff country is a known two-letter code equal
 * (case-insensitively) to an entry of the NULL-terminated deny_list. An
 * unknown country ("" or NULL) is NOT denied by a deny-list, and entries that
 * are not two letters never match.
 */
bool geo_country_denied(const char *country, const char *const *deny_list);
/*
 * geo_asn_allowed: a rule with an ASN allow-list admits only listed ASNs.
 * n == 0 means the rule has no ASN restriction: everything is allowed.
 * With n > 0 an unknown ASN (0) is denied, even if 0 is listed.
 */
bool geo_asn_allowed(uint32_t asn, const uint32_t *allow, size_t n);

#endif
