# SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
# egressd build, in the libbpf-bootstrap pattern:
#   bpf/%.bpf.c -> $(BUILD)/bpf/%.bpf.o -> $(BUILD)/%.skel.h -> user objects
# Binaries land in the top directory (./egressd, ./egressctl) so the README's
# `sudo ./egressd run ...` works straight after `make`.

.DELETE_ON_ERROR:
.SUFFIXES:
.SECONDARY:

BUILD ?= build
PREFIX ?= /usr/local
DESTDIR ?=
CC ?= cc
CLANG ?= clang
# Debian installs it in /usr/sbin, which a user's PATH may lack.
BPFTOOL ?= $(shell command -v bpftool 2>/dev/null || echo /usr/sbin/bpftool)
LLVM_STRIP ?= llvm-strip
ARCH := $(shell uname -m | sed 's/x86_64/x86/;s/aarch64/arm64/')
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo 0.1)

ifeq ($(V),1)
Q =
msg =
else
Q = @
msg = @printf '  %-8s %s\n' "$(1)" "$(2)";
endif

WARN := -Wall -Wextra -Werror -Wno-unused-parameter
CFLAGS ?= -O2 -g
EXTRA_CFLAGS ?=
USER_CFLAGS := $(CFLAGS) $(EXTRA_CFLAGS) $(WARN) -std=gnu11 -D_GNU_SOURCE \
	-Iinclude -Iuser -I$(BUILD) -DEGRESSD_VERSION='"$(VERSION)"'
LDLIBS := -lbpf -lelf -lz -lcares -ljansson -lhttp_parser -lmaxminddb -lpsl -lssl -lcrypto -lpthread
BPF_CFLAGS := -g -O2 -target bpf -D__TARGET_ARCH_$(ARCH) -Wall -Werror \
	-Iinclude -I. -I$(BUILD)

BPF_SRCS := $(wildcard bpf/*.bpf.c)
BPF_OBJS := $(patsubst bpf/%.bpf.c,$(BUILD)/bpf/%.bpf.o,$(BPF_SRCS))
SKELS := $(patsubst bpf/%.bpf.c,$(BUILD)/%.skel.h,$(BPF_SRCS))

# Every user/*.c except the program entry points goes into libegressd.a;
# unit tests and fuzz targets link the modules they test from it.
USER_SRCS := $(filter-out user/main.c,$(wildcard user/*.c))
USER_OBJS := $(patsubst user/%.c,$(BUILD)/obj/%.o,$(USER_SRCS))
LIB := $(BUILD)/libegressd.a

UNIT_SRCS := $(wildcard tests/unit/test_*.c)
UNIT_BINS := $(patsubst tests/unit/%.c,$(BUILD)/unit/%,$(UNIT_SRCS))

FUZZ_SRCS := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRCS))
FUZZ_SECONDS ?= 60

.PHONY: all clean deps test unit e2e check fuzz bench bench-deps install vmlinux static

all: egressd egressctl

$(BUILD)/bpf $(BUILD)/obj $(BUILD)/unit $(BUILD)/fuzz:
	$(Q)mkdir -p $@

$(BUILD)/bpf/%.bpf.o: bpf/%.bpf.c include/egressd_shared.h $(wildcard bpf/*.bpf.h) vmlinux.h | $(BUILD)/bpf
	$(call msg,BPF,$@)
	$(Q)$(CLANG) $(BPF_CFLAGS) -c $< -o $@
	$(Q)$(LLVM_STRIP) -g $@

$(BUILD)/%.skel.h: $(BUILD)/bpf/%.bpf.o
	$(call msg,GEN-SKEL,$@)
	$(Q)$(BPFTOOL) gen skeleton $< name $(subst -,_,$*)_bpf > $@

# User objects depend on every skeleton (only bpfload.c includes one, but
# this keeps the dependency honest without generated .d files for skels).
$(BUILD)/obj/%.o: user/%.c $(wildcard user/*.h) include/egressd_shared.h $(SKELS) | $(BUILD)/obj
	$(call msg,CC,$@)
	$(Q)$(CC) $(USER_CFLAGS) -c $< -o $@

$(LIB): $(USER_OBJS)
	$(call msg,AR,$@)
	$(Q)rm -f $@ && ar rcs $@ $^

egressd: $(BUILD)/obj/main.o $(LIB)
	$(call msg,LINK,$@)
	$(Q)$(CC) $(CFLAGS) $(EXTRA_CFLAGS) $^ $(LDLIBS) -o $@

$(BUILD)/obj/main.o: user/main.c $(wildcard user/*.h) $(SKELS) | $(BUILD)/obj
	$(call msg,CC,$@)
	$(Q)$(CC) $(USER_CFLAGS) -c $< -o $@

egressctl: tools/egressctl.c tools/egressctl_ca.c tools/egressctl_ca.h $(LIB)
	$(call msg,LINK,$@)
	$(Q)$(CC) $(USER_CFLAGS) -Itools tools/egressctl.c tools/egressctl_ca.c $(LIB) $(LDLIBS) -o $@

$(BUILD)/unit/%: tests/unit/%.c $(LIB) | $(BUILD)/unit
	$(call msg,CC,$@)
	$(Q)$(CC) $(USER_CFLAGS) $< $(LIB) $(LDLIBS) -lcmocka -o $@

# Fuzz targets: clang + libFuzzer + ASan/UBSan, compiled from the module
# sources directly so they are instrumented.
FUZZ_CFLAGS := -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	-std=gnu11 -D_GNU_SOURCE -Iinclude -Iuser -I$(BUILD)
$(BUILD)/fuzz/fuzz_hello: tests/fuzz/fuzz_hello.c user/hello.c | $(BUILD)/fuzz
	$(call msg,FUZZ-CC,$@)
	$(Q)$(CLANG) $(FUZZ_CFLAGS) $^ -o $@
$(BUILD)/fuzz/fuzz_httphead: tests/fuzz/fuzz_httphead.c user/httphead.c user/hello.c | $(BUILD)/fuzz
	$(call msg,FUZZ-CC,$@)
	$(Q)$(CLANG) $(FUZZ_CFLAGS) $^ -lhttp_parser -o $@
$(BUILD)/fuzz/fuzz_policy: tests/fuzz/fuzz_policy.c user/policy.c user/jpos.c user/reqrule.c user/formscan.c user/safepath.c user/addr.c user/hello.c user/log.c | $(BUILD)/fuzz
	$(call msg,FUZZ-CC,$@)
	$(Q)$(CLANG) $(FUZZ_CFLAGS) $^ -ljansson -lhttp_parser -lpthread -lz -o $@

$(BUILD)/fuzz/fuzz_dnsmsg: tests/fuzz/fuzz_dnsmsg.c user/dnsmsg.c user/addr.c | $(BUILD)/fuzz
	$(call msg,FUZZ-CC,$@)
	$(Q)$(CLANG) $(FUZZ_CFLAGS) $^ -o $@

$(BUILD)/fuzz/fuzz_httpreq: tests/fuzz/fuzz_httpreq.c user/httpreq.c user/formscan.c user/reqrule.c user/safepath.c user/log.c | $(BUILD)/fuzz
	$(call msg,FUZZ-CC,$@)
	$(Q)$(CLANG) $(FUZZ_CFLAGS) $^ -lhttp_parser -lz -lpthread -o $@

$(BUILD)/fuzz/fuzz_formscan: tests/fuzz/fuzz_formscan.c user/formscan.c user/reqrule.c user/safepath.c user/log.c | $(BUILD)/fuzz
	$(call msg,FUZZ-CC,$@)
	$(Q)$(CLANG) $(FUZZ_CFLAGS) $^ -lhttp_parser -lz -lpthread -o $@

$(BUILD)/fuzz/fuzz_dconfig: tests/fuzz/fuzz_dconfig.c user/dconfig.c user/srt.c user/policy.c user/jpos.c user/reqrule.c user/formscan.c user/safepath.c user/addr.c user/hello.c user/log.c user/geo.c | $(BUILD)/fuzz
	$(call msg,FUZZ-CC,$@)
	$(Q)$(CLANG) $(FUZZ_CFLAGS) $^ -ljansson -lhttp_parser -lmaxminddb -lpthread -lz -o $@

$(BUILD)/fuzz/fuzz_httpstream: tests/fuzz/fuzz_httpstream.c user/httpstream.c user/httphead.c user/hello.c | $(BUILD)/fuzz
	$(call msg,FUZZ-CC,$@)
	$(Q)$(CLANG) $(FUZZ_CFLAGS) $^ -lhttp_parser -o $@

$(BUILD)/fuzz/fuzz_auditjson: tests/fuzz/fuzz_auditjson.c user/audit.c user/safepath.c user/policy.c user/jpos.c user/reqrule.c user/formscan.c user/addr.c user/hello.c user/log.c | $(BUILD)/fuzz
	$(call msg,FUZZ-CC,$@)
	$(Q)$(CLANG) $(FUZZ_CFLAGS) $^ -ljansson -lhttp_parser -lpthread -lz -o $@

unit: $(UNIT_BINS)
	$(Q)tests/run-unit.sh $(UNIT_BINS)

# Privileged end-to-end tests on the namespace test bed (tests/e2e/README.md).
e2e: all
	$(Q)tests/e2e/run.sh

# The README's test command: unit tests, then the end-to-end tests.
test: all $(UNIT_BINS)
	$(Q)tests/run-all.sh $(UNIT_BINS)

fuzz: $(FUZZ_BINS)

# Sanitizer build of the unit tests, a fuzz smoke run, static analysis.
check:
	$(Q)$(MAKE) --no-print-directory BUILD=build-san \
		EXTRA_CFLAGS='-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer' \
		CC=clang build-san-unit
	$(Q)$(MAKE) --no-print-directory fuzz
	$(Q)tests/fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_BINS)
	$(Q)$(MAKE) --no-print-directory static

build-san-unit: $(UNIT_BINS)
	$(Q)tests/run-unit.sh $(UNIT_BINS)

static:
	$(call msg,CPPCHECK,user tools)
	$(Q)cppcheck --quiet --error-exitcode=1 --enable=warning,portability \
		--inline-suppr --suppress=missingIncludeSystem \
		-Iinclude -Iuser user tools

bench: all
	$(Q)tests/bench/run.sh

# Benchmark clients and peers (docs/BENCHMARKS.md). policy-rc.d keeps
# the packages (nginx, haproxy, squid) from starting their own services on
# the machine during the install: the bench starts its own copies inside
# the test bed's namespaces only.
BENCH_DEPS := nginx-light libnginx-mod-stream haproxy squid-openssl mitmproxy \
	wrk curl nftables bpftool python3
bench-deps:
	apt-get update
	printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(BENCH_DEPS); \
		rc=$$?; rm -f /usr/sbin/policy-rc.d; exit $$rc

vmlinux:
	$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > vmlinux.h

# Build and test dependencies, from Debian.
DEPS := clang llvm bpftool libbpf-dev libelf-dev zlib1g-dev libc-ares-dev \
	libjansson-dev libhttp-parser-dev libcmocka-dev libmaxminddb-dev libpsl-dev publicsuffix libssl-dev \
	libmaxmind-db-writer-perl \
	libclang-rt-14-dev cppcheck pkg-config make gcc \
	iproute2 dnsmasq-base dnsutils curl openssl python3 git wrk systemd nodejs
deps:
	apt-get update
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(DEPS)

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/share/man/man1 \
		$(DESTDIR)$(PREFIX)/lib/systemd/system
	install -m 0755 egressd egressctl $(DESTDIR)$(PREFIX)/bin/
	install -m 0644 docs/egressd.1 docs/egressctl.1 $(DESTDIR)$(PREFIX)/share/man/man1/
	install -m 0644 deploy/systemd/egressd.service deploy/systemd/agents.slice \
		deploy/systemd/agent@.service $(DESTDIR)$(PREFIX)/lib/systemd/system/

clean:
	rm -rf $(BUILD) build-san egressd egressctl
