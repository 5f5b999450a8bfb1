// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * GeoIP country / ASN lookups over libmaxminddb.
 *
 * Databases are opened with MMDB_MODE_MMAP and never written afterwards, so
 * one handle serves every thread without locks (libmaxminddb's lookup and
 * get_value only read the mapping and the const MMDB_s).
 *
 * libmaxminddb validates only the metadata at open; a damaged search tree or
 * data section shows up on some later lookup. A daemon should refuse a bad
 * database when it starts, not log errors for days, so geo_open walks the
 * whole tree (cheap: one bounds check per node) and decodes a sample of
 * records, which also tells a country database from an ASN one by content.
 */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <maxminddb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "geo.h"
#include "log.h"

/* Data records decoded at open to learn whether the file has our fields. */
#define GEO_PROBE_MAX 64

enum geo_kind {
	GEO_COUNTRY = 0,
	GEO_ASN = 1,
};

struct geo_db {
	bool open;
	MMDB_s mmdb;
};

struct geo {
	struct geo_db db[2]; /* indexed by enum geo_kind */
};

static const char *const kind_name[] = {
	[GEO_COUNTRY] = "country",
	[GEO_ASN] = "ASN",
};

/* Where the two-letter code lives: GeoLite2/GeoIP2/DB-IP put it in
 * country.iso_code; entries for satellite or anycast networks carry only
 * registered_country; @ip-location-db files use a top-level country_code. */
static const char *const country_path_main[] = { "country", "iso_code", NULL };
static const char *const country_path_reg[] = { "registered_country", "iso_code", NULL };
static const char *const country_path_flat[] = { "country_code", NULL };
static const char *const *const country_paths[] = {
	country_path_main, country_path_reg, country_path_flat,
};
static const char *const asn_path_num[] = { "autonomous_system_number", NULL };
static const char *const asn_path_org[] = { "autonomous_system_organization", NULL };

/* A path that runs into a non-map (or absent key) just means "not here";
 * anything else from libmaxminddb is damaged data. */
static int get_value(MMDB_entry_s *entry, const char *const *path, MMDB_entry_data_s *d)
{
	MMDB_entry_s e = *entry;
	int rc = MMDB_aget_value(&e, d, path);

	if (rc == MMDB_LOOKUP_PATH_DOES_NOT_MATCH_DATA_ERROR ||
	    rc == MMDB_INVALID_LOOKUP_PATH_ERROR) {
		d->has_data = false;
		return 0;
	}
	if (rc != MMDB_SUCCESS) {
		d->has_data = false;
		return -EIO;
	}
	return 0;
}

/* Codes come from files we did not write: accept exactly two ASCII letters. */
static int read_country(MMDB_entry_s *entry, char out[3], bool *present)
{
	MMDB_entry_data_s d;
	size_t i;
	int err;

	out[0] = '\0';
	*present = false;
	for (i = 0; i < sizeof(country_paths) / sizeof(country_paths[0]); i++) {
		err = get_value(entry, country_paths[i], &d);
		if (err)
			return err;
		if (!d.has_data || d.type != MMDB_DATA_TYPE_UTF8_STRING)
			continue;
		*present = true;
		if (d.data_size != 2 || !isascii((unsigned char)d.utf8_string[0]) ||
		    !isalpha((unsigned char)d.utf8_string[0]) ||
		    !isascii((unsigned char)d.utf8_string[1]) ||
		    !isalpha((unsigned char)d.utf8_string[1]))
			continue;
		out[0] = (char)toupper((unsigned char)d.utf8_string[0]);
		out[1] = (char)toupper((unsigned char)d.utf8_string[1]);
		out[2] = '\0';
		return 0;
	}
	return 0;
}

static int read_asn(MMDB_entry_s *entry, uint32_t *asn, bool *present)
{
	MMDB_entry_data_s d;
	int err;

	*asn = 0;
	*present = false;
	err = get_value(entry, asn_path_num, &d);
	if (err || !d.has_data)
		return err;
	switch (d.type) {
	case MMDB_DATA_TYPE_UINT16:
		*asn = d.uint16;
		break;
	case MMDB_DATA_TYPE_UINT32:
		*asn = d.uint32;
		break;
	case MMDB_DATA_TYPE_UINT64:
		*asn = d.uint64 <= UINT32_MAX ? (uint32_t)d.uint64 : 0;
		break;
	case MMDB_DATA_TYPE_INT32:
		*asn = d.int32 > 0 ? (uint32_t)d.int32 : 0;
		break;
	default:
		return 0;
	}
	*present = true;
	return 0;
}

/* Length of the valid UTF-8 sequence at s (n bytes left), 0 if invalid. */
static size_t utf8_seq_len(const unsigned char *s, size_t n)
{
	unsigned char c = s[0];
	unsigned char lo = 0x80, hi = 0xBF;
	size_t len, i;

	if (c < 0x80)
		return 1;
	if (c >= 0xC2 && c <= 0xDF)
		len = 2;
	else if (c >= 0xE0 && c <= 0xEF)
		len = 3;
	else if (c >= 0xF0 && c <= 0xF4)
		len = 4;
	else
		return 0;
	/* Overlong forms, UTF-16 surrogates and > U+10FFFF. */
	if (c == 0xE0)
		lo = 0xA0;
	else if (c == 0xED)
		hi = 0x9F;
	else if (c == 0xF0)
		lo = 0x90;
	else if (c == 0xF4)
		hi = 0x8F;
	if (n < len || s[1] < lo || s[1] > hi)
		return 0;
	for (i = 2; i < len; i++)
		if (s[i] < 0x80 || s[i] > 0xBF)
			return 0;
	return len;
}

/* The org name goes into text and JSON audit lines: keep it valid UTF-8
 * (jansson refuses anything else) and free of control characters (a forged
 * newline would fake a log line). Truncate on a character boundary. */
static void copy_org(char *dst, size_t dstlen, const char *src, size_t n)
{
	const unsigned char *s = (const unsigned char *)src;
	size_t i = 0, o = 0, len;

	while (i < n) {
		len = utf8_seq_len(s + i, n - i);
		if (len == 0 || (len == 1 && (s[i] < 0x20 || s[i] == 0x7f))) {
			if (o + 1 >= dstlen)
				break;
			dst[o++] = '?';
			i += len ? len : 1;
			continue;
		}
		if (o + len >= dstlen)
			break;
		memcpy(dst + o, s + i, len);
		o += len;
		i += len;
	}
	dst[o] = '\0';
}

static int read_org(MMDB_entry_s *entry, char *out, size_t outlen)
{
	MMDB_entry_data_s d;
	int err;

	out[0] = '\0';
	err = get_value(entry, asn_path_org, &d);
	if (err || !d.has_data || d.type != MMDB_DATA_TYPE_UTF8_STRING)
		return err;
	copy_org(out, outlen, d.utf8_string, d.data_size);
	return 0;
}

/* Rejects a database whose type names only the other kind. A type that
 * names neither (custom builds, @ip-location-db) is judged by content. */
static bool type_names_other_kind(const char *type, enum geo_kind kind)
{
	bool country = strcasestr(type, "country") || strcasestr(type, "city") ||
		       strcasestr(type, "enterprise");
	bool asn = strcasestr(type, "asn") || strcasestr(type, "isp");

	if (kind == GEO_COUNTRY)
		return asn && !country;
	return country && !asn;
}

static int probe_entry(MMDB_entry_s *entry, enum geo_kind kind, bool *present)
{
	char cc[3];
	uint32_t asn;

	if (kind == GEO_COUNTRY)
		return read_country(entry, cc, present);
	return read_asn(entry, &asn, present);
}

/*
 * Every record of every node must point at a node, the empty marker or into
 * the data section; decode up to GEO_PROBE_MAX data records on the way.
 * Bounded by node_count, which libmaxminddb checked against the file size.
 */
static int check_tree(const MMDB_s *mmdb, enum geo_kind kind, const char *path,
		      char *err, size_t errlen)
{
	uint32_t node_count = mmdb->metadata.node_count, i;
	unsigned probed = 0;
	bool found = false;
	MMDB_search_node_s node;
	int rc, side;

	for (i = 0; i < node_count; i++) {
		rc = MMDB_read_node(mmdb, i, &node);
		if (rc != MMDB_SUCCESS) {
			egr_seterr(err, errlen, "%s database %s: corrupt search tree at node %u: %s",
				kind_name[kind], path, i, MMDB_strerror(rc));
			return -EBADMSG;
		}
		for (side = 0; side < 2; side++) {
			uint8_t type = side ? node.right_record_type : node.left_record_type;
			MMDB_entry_s entry = side ? node.right_record_entry : node.left_record_entry;
			bool present;

			if (type == MMDB_RECORD_TYPE_INVALID) {
				egr_seterr(err, errlen,
					"%s database %s: corrupt search tree: node %u points outside the file",
					kind_name[kind], path, i);
				return -EBADMSG;
			}
			if (type != MMDB_RECORD_TYPE_DATA || found || probed >= GEO_PROBE_MAX)
				continue;
			probed++;
			if (probe_entry(&entry, kind, &present)) {
				egr_seterr(err, errlen,
					"%s database %s: corrupt data section (record at node %u does not decode)",
					kind_name[kind], path, i);
				return -EBADMSG;
			}
			found = present;
		}
	}
	if (!probed) {
		egr_seterr(err, errlen, "%s database %s: holds no records", kind_name[kind], path);
		return -EINVAL;
	}
	if (!found) {
		egr_seterr(err, errlen,
			"%s database %s: wrong database type \"%s\": its records have no %s",
			kind_name[kind], path, mmdb->metadata.database_type,
			kind == GEO_COUNTRY ? "country.iso_code or country_code" :
					      "autonomous_system_number");
		return -EINVAL;
	}
	return 0;
}

static int open_db(struct geo_db *db, const char *path, enum geo_kind kind,
		   char *err, size_t errlen)
{
	struct stat st;
	int fd, rc, ret;

	/* libmaxminddb reports open/mmap failures without a usable errno
	 * (and maps a directory or an empty file to odd messages): learn the
	 * real reason first. */
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		ret = -errno;
		egr_seterr(err, errlen, "%s database %s: %s", kind_name[kind], path, strerror(-ret));
		return ret;
	}
	if (fstat(fd, &st) < 0) {
		ret = -errno;
		close(fd);
		egr_seterr(err, errlen, "%s database %s: %s", kind_name[kind], path, strerror(-ret));
		return ret;
	}
	close(fd);
	if (S_ISDIR(st.st_mode)) {
		egr_seterr(err, errlen, "%s database %s: is a directory", kind_name[kind], path);
		return -EISDIR;
	}
	if (!S_ISREG(st.st_mode)) {
		egr_seterr(err, errlen, "%s database %s: not a regular file", kind_name[kind], path);
		return -EINVAL;
	}
	if (st.st_size == 0) {
		egr_seterr(err, errlen, "%s database %s: empty file", kind_name[kind], path);
		return -EBADMSG;
	}

	rc = MMDB_open(path, MMDB_MODE_MMAP, &db->mmdb);
	if (rc != MMDB_SUCCESS) {
		switch (rc) {
		case MMDB_OUT_OF_MEMORY_ERROR:
			ret = -ENOMEM;
			break;
		case MMDB_FILE_OPEN_ERROR:
		case MMDB_IO_ERROR:
			ret = -EIO;
			break;
		default:
			ret = -EBADMSG;
			break;
		}
		egr_seterr(err, errlen, "%s database %s: not a usable MaxMind DB file: %s",
			kind_name[kind], path, MMDB_strerror(rc));
		return ret;
	}
	db->open = true;

	if (db->mmdb.metadata.ip_version != 4 && db->mmdb.metadata.ip_version != 6) {
		egr_seterr(err, errlen, "%s database %s: unsupported ip_version %u",
			kind_name[kind], path, db->mmdb.metadata.ip_version);
		return -EBADMSG;
	}
	if (!db->mmdb.metadata.database_type) {
		egr_seterr(err, errlen, "%s database %s: metadata has no database_type",
			kind_name[kind], path);
		return -EBADMSG;
	}
	if (type_names_other_kind(db->mmdb.metadata.database_type, kind)) {
		egr_seterr(err, errlen, "%s database %s: wrong database type \"%s\" (want %s database)",
			kind_name[kind], path, db->mmdb.metadata.database_type,
			kind == GEO_COUNTRY ? "a Country or City" : "an ASN");
		return -EINVAL;
	}
	return check_tree(&db->mmdb, kind, path, err, errlen);
}

static void close_db(struct geo_db *db)
{
	if (db->open)
		MMDB_close(&db->mmdb);
	db->open = false;
}

void geo_close(struct geo *geo)
{
	if (!geo)
		return;
	close_db(&geo->db[GEO_COUNTRY]);
	close_db(&geo->db[GEO_ASN]);
	free(geo);
}

int geo_open(const char *country_db_path, const char *asn_db_path,
	     struct geo **out, char *err, size_t errlen)
{
	struct geo *geo;
	int ret;

	egr_seterr(err, errlen, "%s", "");
	if (!out)
		return -EINVAL;
	*out = NULL;
	geo = calloc(1, sizeof(*geo));
	if (!geo) {
		egr_seterr(err, errlen, "geo: out of memory");
		return -ENOMEM;
	}
	if (country_db_path) {
		ret = open_db(&geo->db[GEO_COUNTRY], country_db_path, GEO_COUNTRY, err, errlen);
		if (ret)
			goto cleanup;
	}
	if (asn_db_path) {
		ret = open_db(&geo->db[GEO_ASN], asn_db_path, GEO_ASN, err, errlen);
		if (ret)
			goto cleanup;
	}
	*out = geo;
	return 0;

cleanup:
	geo_close(geo);
	return ret;
}

/* 0 found, -ENOENT not in this database, -EIO lookup error. */
static int lookup_entry(const struct geo_db *db, const struct sockaddr *sa,
			MMDB_entry_s *entry)
{
	MMDB_lookup_result_s r;
	int merr = MMDB_SUCCESS;

	if (!db->open)
		return -ENOENT;
	/* AF_INET on an IPv6 tree starts at the ::/96 subtree, where IPv4
	 * data lives (and ::ffff:0:0/96 is aliased to), so v4-mapped input
	 * must be handed over as AF_INET, not as a v6 address. */
	r = MMDB_lookup_sockaddr(&db->mmdb, sa, &merr);
	if (merr == MMDB_IPV6_LOOKUP_IN_IPV4_DATABASE_ERROR)
		return -ENOENT;
	if (merr != MMDB_SUCCESS)
		return -EIO;
	if (!r.found_entry)
		return -ENOENT;
	*entry = r.entry;
	return 0;
}

int geo_lookup(const struct geo *geo, const struct egr_addr *a, struct geo_result *res)
{
	struct sockaddr_storage ss;
	MMDB_entry_s entry;
	bool found = false, failed = false, present;
	int rc;

	if (!res)
		return -EINVAL;
	memset(res, 0, sizeof(*res));
	if (!a)
		return -EINVAL;
	if (!geo)
		return -ENOENT;
	addr_to_sockaddr(a, 0, &ss);

	rc = lookup_entry(&geo->db[GEO_COUNTRY], (const struct sockaddr *)&ss, &entry);
	if (rc == 0) {
		if (read_country(&entry, res->country, &present))
			failed = true;
		else
			found |= res->country[0] != '\0';
	} else if (rc != -ENOENT) {
		failed = true;
	}

	rc = lookup_entry(&geo->db[GEO_ASN], (const struct sockaddr *)&ss, &entry);
	if (rc == 0) {
		if (read_asn(&entry, &res->asn, &present) ||
		    read_org(&entry, res->as_org, sizeof(res->as_org))) {
			failed = true;
		} else {
			found |= res->asn != 0 || res->as_org[0] != '\0';
		}
	} else if (rc != -ENOENT) {
		failed = true;
	}

	if (failed)
		return -EIO;
	return found ? 0 : -ENOENT;
}

static int describe_db(const struct geo_db *db, char *buf, size_t len)
{
	char date[16] = "?";
	time_t t;
	struct tm tm;

	if (!db->open)
		return snprintf(buf, len, "none");
	t = (time_t)db->mmdb.metadata.build_epoch;
	if (gmtime_r(&t, &tm))
		strftime(date, sizeof(date), "%Y-%m-%d", &tm);
	return snprintf(buf, len, "%s(%s)", db->mmdb.metadata.database_type, date);
}

void geo_describe(const struct geo *geo, char *buf, size_t len)
{
	static const struct geo_db none;
	const struct geo_db *c = geo ? &geo->db[GEO_COUNTRY] : &none;
	const struct geo_db *s = geo ? &geo->db[GEO_ASN] : &none;
	int n;

	if (!buf || !len)
		return;
	n = snprintf(buf, len, "country=");
	if (n < 0 || (size_t)n >= len)
		return;
	n += describe_db(c, buf + n, len - n);
	if (n < 0 || (size_t)n >= len)
		return;
	n += snprintf(buf + n, len - n, " asn=");
	if (n < 0 || (size_t)n >= len)
		return;
	describe_db(s, buf + n, len - n);
}

static bool is_country_code(const char *s)
{
	return s && isascii((unsigned char)s[0]) && isalpha((unsigned char)s[0]) &&
	       isascii((unsigned char)s[1]) && isalpha((unsigned char)s[1]) && s[2] == '\0';
}

bool geo_country_denied(const char *country, const char *const *deny_list)
{
	size_t i;

	if (!is_country_code(country) || !deny_list)
		return false;
	for (i = 0; deny_list[i]; i++)
		if (is_country_code(deny_list[i]) && strcasecmp(country, deny_list[i]) == 0)
			return true;
	return false;
}

bool geo_asn_allowed(uint32_t asn, const uint32_t *allow, size_t n)
{
	size_t i;

	if (n == 0)
		return true;
	if (asn == 0 || !allow)
		return false;
	for (i = 0; i < n; i++)
		if (allow[i] == asn)
			return true;
	return false;
}
