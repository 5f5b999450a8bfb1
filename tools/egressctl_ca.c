// SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
/*
 * egressctl ca init [--dir DIR] [--force] [--permit DOMAIN]... [--days N]
 * egressctl ca export [--dir DIR]
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "ca.h"
#include "egressctl_ca.h"

#define PROG "egressctl"

static void ca_usage(FILE *out)
{
	fprintf(out,
"Usage: " PROG " ca init [--dir DIR] [--force] [--permit DOMAIN]... [--days N]\n"
"       " PROG " ca export [--dir DIR]\n"
"\n"
"  init     create the interception CA: DIR/" CA_KEY_NAME " (ECDSA P-256, mode 0600)\n"
"           and DIR/" CA_CERT_NAME "; DIR defaults to " CA_DEFAULT_DIR " (created 0700)\n"
"    --force          replace an existing CA (agents must then get the new one)\n"
"    --permit DOMAIN  limit the CA to DOMAIN and its subdomains (*.DOMAIN:\n"
"                     subdomains only) with critical name constraints; repeatable\n"
"    --days N         certificate validity, default %d\n"
"  export   print the CA certificate (PEM) to stdout\n",
		CA_DAYS_DEFAULT);
}

/* getopt with argv[0] = the subcommand: its own messages would name
 * "init", so they are off and ours name the command. */
static int bad_option(const char *sub, char **argv, int opt)
{
	if (opt == ':')
		fprintf(stderr, PROG ": ca %s: option '%s' needs a value\n", sub, argv[optind - 1]);
	else
		fprintf(stderr, PROG ": ca %s: unknown option '%s' (see '" PROG " ca help')\n",
			sub, argv[optind - 1]);
	return 2;
}

static void print_fingerprint(X509 *x)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int n = 0, i;

	if (!X509_digest(x, EVP_sha256(), md, &n))
		return;
	printf("  SHA-256      ");
	for (i = 0; i < n; i++)
		printf("%02X%s", md[i], i + 1 < n ? ":" : "\n");
}

static int ca_cmd_init(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, 'd' },
		{ "force", no_argument, NULL, 'f' },
		{ "permit", required_argument, NULL, 'p' },
		{ "days", required_argument, NULL, 'n' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct ca_init_opts o = { 0 };
	const char *dir = CA_DEFAULT_DIR;
	const char **permit;
	char err[1024], when[32], *end;
	struct ca *ca = NULL;
	unsigned long days;
	struct tm tm;
	time_t na;
	size_t i;
	int c, rc;

	permit = calloc(argc > 0 ? (size_t)argc : 1, sizeof(*permit));
	if (!permit) {
		fprintf(stderr, PROG ": out of memory\n");
		return 2;
	}
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			dir = optarg;
			break;
		case 'f':
			o.force = true;
			break;
		case 'p':
			permit[o.n_permit++] = optarg;
			break;
		case 'n':
			errno = 0;
			days = strtoul(optarg, &end, 10);
			if (errno || end == optarg || *end || days < 1 || days > 36500) {
				fprintf(stderr, PROG ": ca init: --days wants 1..36500, not '%s'\n",
					optarg);
				free(permit);
				return 2;
			}
			o.days = (unsigned)days;
			break;
		case 'h':
			ca_usage(stdout);
			free(permit);
			return 0;
		default:
			free(permit);
			return bad_option("init", argv, c);
		}
	}
	if (optind < argc) {
		fprintf(stderr, PROG ": ca init: unexpected argument '%s'\n", argv[optind]);
		free(permit);
		return 2;
	}
	o.permit = permit;
	rc = ca_init(dir, &o, &ca, err, sizeof(err));
	if (rc) {
		fprintf(stderr, PROG ": %s\n", err);
		free(permit);
		return 2;
	}

	na = time(NULL);
	if (ASN1_TIME_to_tm(X509_get0_notAfter(ca_cert(ca)), &tm))
		na = timegm(&tm);
	gmtime_r(&na, &tm);
	strftime(when, sizeof(when), "%Y-%m-%d", &tm);
	printf("Created a CA in %s\n", dir);
	printf("  certificate  %s/%s   (public: the agents trust it)\n", dir, CA_CERT_NAME);
	printf("  private key  %s/%s   (mode 0600: never let an agent read it)\n", dir,
	       CA_KEY_NAME);
	printf("  subject      ");
	X509_NAME_print_ex_fp(stdout, X509_get_subject_name(ca_cert(ca)), 0, XN_FLAG_ONELINE);
	printf("\n  expires      %s\n", when);
	print_fingerprint(ca_cert(ca));
	if (o.n_permit) {
		printf("  names        only");
		for (i = 0; i < o.n_permit; i++)
			printf(" %s", o.permit[i]);
		printf(" (critical name constraints)\n");
	} else {
		printf("  names        any (no name constraints; see --permit)\n");
	}
	printf("To trust it:\n"
	       "  egressd run --intercept gives the command a bundle of the system CAs and this\n"
	       "  CA in SSL_CERT_FILE, NODE_EXTRA_CA_CERTS, REQUESTS_CA_BUNDLE, CURL_CA_BUNDLE\n"
	       "  and GIT_SSL_CAINFO. Elsewhere, '" PROG " ca export > egressd-ca.crt' and\n"
	       "  point the client at that file, or trust it host-wide (every process on the\n"
	       "  host then trusts it):\n"
	       "    cp %s/%s /usr/local/share/ca-certificates/egressd-ca.crt\n"
	       "    update-ca-certificates\n",
	       dir, CA_CERT_NAME);
	free(permit);
	ca_free(ca);
	return 0;
}

static int ca_cmd_export(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *dir = CA_DEFAULT_DIR;
	struct ca *ca = NULL;
	char err[1024];
	int c, rc;

	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":", opts, NULL)) != -1) {
		switch (c) {
		case 'd':
			dir = optarg;
			break;
		case 'h':
			ca_usage(stdout);
			return 0;
		default:
			return bad_option("export", argv, c);
		}
	}
	if (optind < argc) {
		fprintf(stderr, PROG ": ca export: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	/* The certificate only: exporting needs no access to the key. */
	rc = ca_load_dir(dir, false, &ca, err, sizeof(err));
	if (rc) {
		if (rc == -ENOENT)
			fprintf(stderr, PROG ": %s (create one with '" PROG " ca init')\n", err);
		else
			fprintf(stderr, PROG ": %s\n", err);
		return 2;
	}
	rc = ca_export_pem(ca, stdout);
	ca_free(ca);
	if (rc) {
		fprintf(stderr, PROG ": ca export: cannot write to stdout\n");
		return 2;
	}
	return 0;
}

int egressctl_ca_main(int argc, char **argv)
{
	if (argc < 1) {
		ca_usage(stderr);
		return 2;
	}
	if (!strcmp(argv[0], "init"))
		return ca_cmd_init(argc, argv);
	if (!strcmp(argv[0], "export"))
		return ca_cmd_export(argc, argv);
	if (!strcmp(argv[0], "help") || !strcmp(argv[0], "--help") || !strcmp(argv[0], "-h")) {
		ca_usage(stdout);
		return 0;
	}
	fprintf(stderr, PROG ": ca: unknown command '%s' (expected 'init' or 'export')\n",
		argv[0]);
	return 2;
}
