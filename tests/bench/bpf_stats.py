#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
"""Kernel BPF run-time statistics without touching kernel.bpf_stats_enabled.

BPF_ENABLE_STATS (Linux 5.8) returns a file descriptor that keeps run-time
statistics on while it is open: the kernel counts its holders, so two
benches on one machine cannot switch them off under each other (the
sysctl is one global value that the first to finish would put back), and
nothing needs restoring when a run dies: closing the fd is the restore.

As a module: enable() -> fd. As a program: hold the statistics on until
killed, stdin closes or SECONDS (default 3600) pass; prints "on" once they
are, or an error and exits 1.
"""
import ctypes
import os
import platform
import select
import sys

SYS_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "ppc64le": 361,
           "s390x": 351}
BPF_ENABLE_STATS = 32
BPF_STATS_RUN_TIME = 0


def enable():
    nr = SYS_BPF.get(platform.machine())
    if nr is None:
        raise OSError("bpf syscall number unknown on " + platform.machine())
    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.create_string_buffer(16)      # enable_stats.type = 0
    ctypes.c_uint32.from_buffer(attr).value = BPF_STATS_RUN_TIME
    fd = libc.syscall(ctypes.c_long(nr), ctypes.c_int(BPF_ENABLE_STATS),
                      attr, ctypes.c_uint(4))
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, "BPF_ENABLE_STATS: " + os.strerror(e))
    return fd


def main():
    secs = float(sys.argv[1]) if len(sys.argv) > 1 else 3600
    try:
        enable()
    except OSError as e:
        print("bpf_stats: %s" % e, file=sys.stderr)
        return 1
    print("on", flush=True)
    # until stdin reaches EOF (the caller went away) or the time is up
    select.select([sys.stdin], [], [], secs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
