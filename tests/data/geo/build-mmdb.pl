#!/usr/bin/perl
# SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
#
# Builds the small MaxMind DB files the GeoIP unit test (tests/unit/test_geo.c)
# reads. All data is invented and uses only documentation ranges
# (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32) and
# documentation ASNs (64496-64511, RFC 5398).
#
# Needs Debian's libmaxmind-db-writer-perl (which pulls in the reader).
# Usage: tests/data/geo/build-mmdb.pl [OUTDIR]   (default: this directory)
#
# The output is byte-for-byte reproducible: fixed build_epoch, and the script
# re-executes itself with a fixed Perl hash seed so map keys serialise in the
# same order every run.
use strict;
use warnings;

BEGIN {
	if (($ENV{PERL_HASH_SEED} // '') ne '0') {
		$ENV{PERL_HASH_SEED} = '0';
		$ENV{PERL_PERTURB_KEYS} = '0';
		exec($^X, $0, @ARGV) or die "re-exec $0: $!\n";
	}
}

use File::Basename qw(dirname);
use MaxMind::DB::Writer::Tree;
use MaxMind::DB::Reader;

my $out = shift // dirname($0);
my $EPOCH = 1700000000;	# 2023-11-14, fixed for reproducible files

my %types = (
	country                        => 'map',
	registered_country             => 'map',
	continent                      => 'map',
	names                          => 'map',
	en                             => 'utf8_string',
	iso_code                       => 'utf8_string',
	code                           => 'utf8_string',
	geoname_id                     => 'uint32',
	country_code                   => 'utf8_string',
	autonomous_system_number       => 'uint32',
	autonomous_system_organization => 'utf8_string',
	is_anonymous                   => 'boolean',
	is_public_proxy                => 'boolean',
);

sub tree {
	my (%a) = @_;
	my $t = MaxMind::DB::Writer::Tree->new(
		ip_version               => $a{ip_version} // 6,
		record_size              => 24,
		database_type            => $a{type},
		languages                => ['en'],
		description              => { en => "egressd unit-test data ($a{type}); not real" },
		map_key_type_callback    => sub { $types{ $_[0] } // die "no type for key $_[0]\n" },
		alias_ipv6_to_ipv4       => ($a{ip_version} // 6) == 6 ? 1 : 0,
		# The documentation ranges are "reserved"; by default the writer
		# silently drops them, which would leave our test files empty.
		remove_reserved_networks => 0,
	);
	$t->_set_build_epoch($EPOCH);
	return $t;
}

sub write_tree {
	my ($t, $name) = @_;
	my $path = "$out/$name";
	open(my $fh, '>:raw', $path) or die "$path: $!\n";
	$t->write_tree($fh);
	close($fh) or die "$path: $!\n";
	print "wrote $path\n";
	return $path;
}

sub country {
	my ($iso, $name, $continent) = @_;
	return {
		continent => { code => $continent },
		country   => { iso_code => $iso, names => { en => $name } },
		registered_country => { iso_code => $iso, names => { en => $name } },
	};
}

# --- country.mmdb: GeoLite2-Country layout, IPv6 tree with IPv4 aliased ---
my $t = tree(type => 'GeoLite2-Country');
$t->insert_network('192.0.2.0/24',    country('DE', 'Germany', 'EU'));
$t->insert_network('198.51.100.0/24', country('US', 'United States', 'NA'));
$t->insert_network('203.0.113.0/24',  country('KP', 'North Korea', 'AS'));
$t->insert_network('2001:db8::/32',   country('FR', 'France', 'EU'));
# Like GeoLite2's satellite/anycast entries: no "country", only the
# country the network is registered in. Inserted after the /32, so it
# replaces that part of it.
$t->insert_network('2001:db8:ffff::/48',
	{ registered_country => { iso_code => 'BE', names => { en => 'Belgium' } } });
my $country = write_tree($t, 'country.mmdb');

# --- asn.mmdb: GeoLite2-ASN layout ---
$t = tree(type => 'GeoLite2-ASN');
my %asn = (
	'192.0.2.0/24'       => [64500, 'Example Transit DE'],
	'198.51.100.0/24'    => [64501, 'Example Cloud US'],
	'203.0.113.0/24'     => [64502, 'Example Telecom KP'],
	'2001:db8::/32'      => [64510, 'Example IPv6 Carrier FR'],
	'2001:db8:ffff::/48' => [64511, undef],	# number without an org name
	# An org name that tries to forge an audit line and overflows the
	# 128-byte field with two-byte characters.
	'203.0.113.128/25'   => [64505, "Evil\nOrg" . ("\x{e9}" x 100)],
);
for my $net (sort keys %asn) {
	my ($num, $org) = @{ $asn{$net} };
	my %d = (autonomous_system_number => $num);
	$d{autonomous_system_organization} = $org if defined $org;
	$t->insert_network($net, \%d);
}
write_tree($t, 'asn.mmdb');

# --- country-v4.mmdb: an IPv4-only tree (DB-IP lite style type) ---
$t = tree(type => 'DBIP-Country-Lite', ip_version => 4);
$t->insert_network('192.0.2.0/24',    country('DE', 'Germany', 'EU'));
$t->insert_network('198.51.100.0/24', country('US', 'United States', 'NA'));
write_tree($t, 'country-v4.mmdb');

# --- country-ipld.mmdb: the npm @ip-location-db/*-country-mmdb layout,
# a top-level "country_code", and a type that names no kind ---
$t = tree(type => 'egressd-test-ip-location-db');
$t->insert_network('192.0.2.0/24',   { country_code => 'de' });
$t->insert_network('2001:db8::/32',  { country_code => 'FR' });
write_tree($t, 'country-ipld.mmdb');

# --- wrong-type.mmdb: a valid database of another kind (Anonymous-IP) ---
$t = tree(type => 'GeoIP2-Anonymous-IP');
$t->insert_network('192.0.2.0/24', { is_anonymous => 1, is_public_proxy => 1 });
write_tree($t, 'wrong-type.mmdb');

# --- mislabeled.mmdb: says Country, holds ASN records ---
$t = tree(type => 'GeoLite2-Country');
$t->insert_network('192.0.2.0/24',
	{ autonomous_system_number => 64500, autonomous_system_organization => 'x' });
write_tree($t, 'mislabeled.mmdb');

# --- e2e-country.mmdb / e2e-asn.mmdb: the e2e test bed's hosts
# (tests/e2e/lib.sh), one entry per address, so that policies can tell
# them apart: tests/e2e/run.sh case geoip_* ---
my %bed = (
	# address          country  ASN    org
	'192.0.2.10/32'   => ['DE', 64496, 'Bed Allowed DE'],   # allowed.test
	'2001:db8::10/128' => ['DE', 64496, 'Bed Allowed DE'],  # allowed.test
	'192.0.2.11/32'   => ['DE', 64497, 'Bed API DE'],       # api.allowed.test
	'192.0.2.20/32'   => ['US', 64498, 'Bed Other US'],     # other.test
	'192.0.2.66/32'   => ['KP', 64499, 'Bed Evil KP'],      # evil.test
	'2001:db8::66/128' => ['KP', 64499, 'Bed Evil KP'],     # evil.test
);
my %cname = (DE => 'Germany', US => 'United States', KP => 'North Korea');
my %cont = (DE => 'EU', US => 'NA', KP => 'AS');
$t = tree(type => 'GeoLite2-Country');
for my $net (sort keys %bed) {
	my $cc = $bed{$net}[0];
	$t->insert_network($net, country($cc, $cname{$cc}, $cont{$cc}));
}
write_tree($t, 'e2e-country.mmdb');
$t = tree(type => 'GeoLite2-ASN');
for my $net (sort keys %bed) {
	$t->insert_network($net, { autonomous_system_number => $bed{$net}[1],
				   autonomous_system_organization => $bed{$net}[2] });
}
write_tree($t, 'e2e-asn.mmdb');

# --- corrupt files, derived from country.mmdb ---
open(my $in, '<:raw', $country) or die "$country: $!\n";
my $bytes = do { local $/; <$in> };
close($in);

sub put {
	my ($name, $data) = @_;
	my $path = "$out/$name";
	open(my $fh, '>:raw', $path) or die "$path: $!\n";
	print $fh $data;
	close($fh) or die "$path: $!\n";
	print "wrote $path\n";
}

# Cut before the metadata marker: not recognisable as a MaxMind DB at all.
put('corrupt-truncated.mmdb', substr($bytes, 0, int(length($bytes) / 2)));
# Not a database at all.
put('corrupt-garbage.mmdb', "this is not a MaxMind DB file\n" x 8);

my $md = MaxMind::DB::Reader->new(file => $country)->metadata;
my $tree_size = $md->node_count * $md->record_size * 2 / 8;
my $marker = rindex($bytes, "\xAB\xCD\xEFMaxMind.com");
die "no metadata marker in $country\n" if $marker < 0;

# Valid metadata, search tree records pointing far past the end of the file
# (0xFFFFFF): opens with libmaxminddb, must be caught by our tree check.
my $b = $bytes;
substr($b, 0, 60) = "\xFF" x 60;
put('corrupt-tree.mmdb', $b);

# Valid metadata and tree, data section overwritten with 0x3F: every record
# decodes as a 32-bit pointer far out of the section.
$b = $bytes;
my $data_start = $tree_size + 16;
substr($b, $data_start, $marker - $data_start) = "\x3F" x ($marker - $data_start);
put('corrupt-data.mmdb', $b);

# Sanity: read back what the C test relies on, so a broken writer fails here.
my $r = MaxMind::DB::Reader->new(file => $country);
my $rec = $r->record_for_address('192.0.2.1');
die "country.mmdb: 192.0.2.1 is not DE\n" unless $rec && $rec->{country}{iso_code} eq 'DE';
$rec = $r->record_for_address('::ffff:203.0.113.9');
die "country.mmdb: ::ffff:203.0.113.9 is not KP\n" unless $rec && $rec->{country}{iso_code} eq 'KP';
$rec = MaxMind::DB::Reader->new(file => "$out/asn.mmdb")->record_for_address('2001:db8::1');
die "asn.mmdb: 2001:db8::1 is not AS64510\n" unless $rec && $rec->{autonomous_system_number} == 64510;
