#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
"""A user's interactive shell on a terminal of its own, for the cases that
need one (tests/e2e/run.sh: run_terminal).

  tty_session.py shell [--interrupt-after TEXT | --suspend-after TEXT] COMMAND-LINE
      Starts `sh -i` on a new pseudo-terminal (its controlling terminal),
      types COMMAND-LINE followed by a sentinel, waits (30 s at most) for
      the sentinel's output, gives the shell a second to read whatever
      else is queued on its terminal, types `exit` and prints everything
      the terminal showed. With --interrupt-after, types ^C once TEXT has
      appeared; with --suspend-after, ^Z, then a second later `fg` (and
      the sentinel again: the stopped job's command line is dropped). Exit
      status 0, or 1 if the sentinel never came.

  tty_session.py inject COMMAND
      What a hostile agent does: pushes COMMAND and a newline into the
      input of its controlling terminal (/dev/tty) and of every standard
      descriptor that is a terminal, with TIOCSTI; one line per attempt,
      "FD ok" or "FD refused ERRNO"; then "ISATTY n" and "SIZE rows cols"
      for its stdin.
"""
import fcntl
import os
import pty
import select
import struct
import sys
import termios
import time

SENTINEL_CMD = "echo SESSION-$((6*7))-DONE"
SENTINEL = b"SESSION-42-DONE"


def inject(command):
    data = (command + "\n").encode()
    targets = [("tty", None)] + [(str(fd), fd) for fd in (0, 1, 2) if os.isatty(fd)]
    for label, fd in targets:
        try:
            if fd is None:
                fd = os.open("/dev/tty", os.O_RDWR)
            for b in data:
                fcntl.ioctl(fd, termios.TIOCSTI, bytes([b]))
            print(label, "ok", flush=True)
        except OSError as e:
            print(label, "refused", e.errno, flush=True)
    print("ISATTY", int(os.isatty(0)), flush=True)
    try:
        rows, cols = struct.unpack("hh", fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 4))
        print("SIZE", rows, cols, flush=True)
    except OSError:
        print("SIZE none", flush=True)


def shell(command, interrupt_after=None, key=b"\x03"):
    pid, fd = pty.fork()
    if pid == 0:
        os.environ["PS1"] = "$ "
        os.environ["ENV"] = ""
        os.execvp("sh", ["sh", "-i"])
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("hhhh", 33, 101, 0, 0))
    out = b""
    os.write(fd, (command + "; " + SENTINEL_CMD + "\n").encode())
    deadline = time.monotonic() + 30
    interrupted = interrupt_after is None
    done_at = None
    while True:
        now = time.monotonic()
        if done_at is not None and now > done_at:
            break
        if now > deadline:
            break
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        if not interrupted and interrupt_after.encode() in out:
            os.write(fd, key)
            interrupted = True
            if key == b"\x1a":
                time.sleep(1)
                os.write(fd, ("fg; echo fg=$?; " + SENTINEL_CMD + "\n").encode())
        if done_at is None and SENTINEL in out:
            done_at = time.monotonic() + 1.0
    try:
        os.write(fd, b"exit\n")
        end = time.monotonic() + 3
        while time.monotonic() < end:
            r, _, _ = select.select([fd], [], [], 0.1)
            if r:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                out += chunk
    except OSError:
        pass
    try:
        os.kill(pid, 9)
    except ProcessLookupError:
        pass
    os.waitpid(pid, 0)
    sys.stdout.write(out.decode("utf-8", "replace"))
    return 0 if SENTINEL in out else 1


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "inject":
        inject(sys.argv[2])
    elif len(sys.argv) >= 3 and sys.argv[1] == "shell":
        args = sys.argv[2:]
        after, key = None, b"\x03"
        if args[0] in ("--interrupt-after", "--suspend-after"):
            if args[0] == "--suspend-after":
                key = b"\x1a"
            after, args = args[1], args[2:]
        sys.exit(shell(args[0], after, key))
    else:
        sys.exit(__doc__)
