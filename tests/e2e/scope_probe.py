#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
"""What a process may do to processes outside its Landlock domain and to
its own (tests/e2e/run.sh: run_local_scope, scope_separates_agents).

  scope_probe.py probe PID NAME   ptrace-class access, a signal and a
                                  connection to abstract socket NAME of
                                  PID's owner, then the same on its own
                                  child and socket; one line each:
                                  "LABEL ok" or "LABEL refused ERRNO"
  scope_probe.py serve NAME READY  an abstract listener NAME answering
                                  "listener"; writes its pid to READY once
                                  listening; gives up after 25 s
"""
import os
import socket
import subprocess
import sys


def attempt(label, fn):
    try:
        fn()
        print(label, "ok", flush=True)
    except OSError as e:
        print(label, "refused", e.errno, flush=True)


def environ(pid):
    with open("/proc/%d/environ" % pid, "rb") as f:
        f.read()


def mem(pid):
    os.close(os.open("/proc/%d/mem" % pid, os.O_RDONLY))


def connect(name):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect("\0" + name)
    if not s.recv(64):
        raise OSError(0, "no answer")
    s.close()


def serve(name, ready):
    s = socket.socket(socket.AF_UNIX)
    s.bind("\0" + name)
    s.listen(8)
    s.settimeout(25)
    with open(ready, "w") as f:
        f.write("%d\n" % os.getpid())
    try:
        while True:
            c, _ = s.accept()
            c.sendall(b"listener")
            c.close()
    except OSError:
        pass


def probe(pid, name):
    attempt("outside-environ", lambda: environ(pid))
    attempt("outside-mem", lambda: mem(pid))
    attempt("outside-signal", lambda: os.kill(pid, 0))
    attempt("outside-abstract", lambda: connect(name))
    own = subprocess.Popen(["sleep", "5"])
    attempt("own-environ", lambda: environ(own.pid))
    attempt("own-mem", lambda: mem(own.pid))
    attempt("own-signal", lambda: os.kill(own.pid, 0))
    ls = socket.socket(socket.AF_UNIX)
    ls.bind("\0" + name + "-own")
    ls.listen(1)
    c = socket.socket(socket.AF_UNIX)
    c.connect("\0" + name + "-own")
    a, _ = ls.accept()
    a.sendall(b"x")
    attempt("own-abstract", lambda: c.recv(1) or (_ for _ in ()).throw(OSError(0, "no data")))
    own.kill()


if __name__ == "__main__":
    if sys.argv[1] == "probe":
        probe(int(sys.argv[2]), sys.argv[3])
    elif sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3])
    else:
        sys.exit("usage: scope_probe.py probe PID NAME | serve NAME READY")
