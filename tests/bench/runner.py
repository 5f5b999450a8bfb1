#!/usr/bin/python3
# SPDX-License-Identifier: GPL-2.0 OR BSD-3-Clause
"""make bench: the command runner that lives inside an enforced cgroup.

`egressd run ... -- runner.py DIR LIFETIME` keeps one egressd (one proxy,
one cgroup) for a whole benchmark run, so every round measures the same
long-lived proxy process, as an agent would use it. The driver (root,
outside) drops DIR/req.NNNNNN.json = {"argv", "env", "timeout"}; the
runner runs it (as the agent user, inside the cgroup: children inherit
both) and answers DIR/res.NNNNNN.json = {"rc", "out", "err"}. It stops on
DIR/quit or after LIFETIME seconds, whichever comes first.
"""
import json
import os
import subprocess
import sys
import time


def put(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.rename(tmp, path)


def main():
    d = sys.argv[1]
    deadline = time.monotonic() + float(sys.argv[2])
    keep = ("SSL_CERT_FILE", "CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS",
            "REQUESTS_CA_BUNDLE")
    put(os.path.join(d, "hello.json"),
        {"pid": os.getpid(), "uid": os.getuid(),
         "env": {k: os.environ[k] for k in keep if k in os.environ}})
    while time.monotonic() < deadline:
        if os.path.exists(os.path.join(d, "quit")):
            return 0
        reqs = sorted(f for f in os.listdir(d)
                      if f.startswith("req.") and f.endswith(".json"))
        if not reqs:
            time.sleep(0.01)
            continue
        for name in reqs:
            path = os.path.join(d, name)
            with open(path) as f:
                req = json.load(f)
            os.unlink(path)
            env = dict(os.environ)
            env.update(req.get("env", {}))
            try:
                p = subprocess.run(req["argv"], env=env, cwd=d,
                                   stdin=subprocess.DEVNULL,
                                   capture_output=True,
                                   timeout=req.get("timeout", 600))
                res = {"rc": p.returncode,
                       "out": p.stdout.decode(errors="replace"),
                       "err": p.stderr.decode(errors="replace")[-4000:]}
            except subprocess.TimeoutExpired as e:
                res = {"rc": -1, "out": (e.stdout or b"").decode(
                    errors="replace"), "err": "timeout"}
            except OSError as e:
                res = {"rc": -2, "out": "", "err": str(e)}
            put(os.path.join(d, "res." + name[4:]), res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
