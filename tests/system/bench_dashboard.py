#!/usr/bin/env python3
"""Cold start, warm requests/second and peak RSS of the socket-activated
dashboard in the booted system-test container, against a do-nothing floor
started by the same units (README "Benchmarks").

    bench_dashboard.py CT_PID URL [--floor PATH] [--rounds 20] [--wait 2.5]
                       [--warm 3]

Run on the host by tests/system/run.sh (scenario 9), with CT_PID the
container's systemd: the container shares the host's network, so curl on the
host reaches the socket that systemd holds in the container.

One cold start: `systemctl stop pimainteno-dashboard.service` (the socket
stays), wait 2.5 s (so no start limit could come into play), then curl's
time_starttransfer for URL: the connection, systemd starting the service
(sandbox, exec, READY=1), the first byte of the answer.

With --floor (a program inside the container: examples/floor-responder.rs),
each round measures the floor too, right before the dashboard: a drop-in
`zz-bench-floor.conf` replaces ExecStart= and nothing else, so the floor
runs under the same unit, account and sandbox. Alternating keeps the two
comparable on a machine whose load drifts.

Then, for each: warm requests/second on one keep-alive connection (wrk when
installed, else a Python loop, said so) and the peak RSS of the service's
main process (VmHWM; MemoryPeak= is newer than systemd 252). The figures go
to stderr, one JSON object to stdout.
"""

import argparse
import base64
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import urllib.parse

SERVICE = "pimainteno-dashboard.service"
DROP_IN = f"/etc/systemd/system/{SERVICE}.d/zz-bench-floor.conf"


class Container:
    def __init__(self, pid):
        self.pid = pid

    def run(self, *args):
        return subprocess.run(
            ["nsenter", "-t", self.pid, "-a", *args], capture_output=True, text=True
        ).stdout

    def show(self, prop):
        return self.run("systemctl", "show", "-p", prop, "--value", SERVICE).strip()

    def use(self, floor):
        """Start the floor (a path) or, with None, pm-dashboard from now on."""
        path = f"/proc/{self.pid}/root{DROP_IN}"
        if floor:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "w") as f:
                f.write(f"[Service]\nExecStart=\nExecStart={floor}\n")
        elif os.path.exists(path):
            os.remove(path)
        self.run("systemctl", "daemon-reload")


def cold_start(ct, args):
    """Milliseconds to the first byte, or None when the answer was not 200."""
    ct.run("systemctl", "stop", SERVICE)
    time.sleep(args.wait)
    out = subprocess.run(
        ["curl", "-s", "-o", "/dev/null", "--max-time", "10",
         "-w", "%{http_code} %{time_starttransfer}", args.url],
        capture_output=True, text=True,
    ).stdout.split()
    if len(out) == 2 and out[0] == "200":
        return float(out[1]) * 1000
    return None


def warm(args):
    """Requests/second on one keep-alive connection to a running service."""
    if shutil.which("wrk"):
        out = subprocess.run(
            ["wrk", "-t1", "-c1", f"-d{args.warm}s", args.url],
            capture_output=True, text=True,
        ).stdout
        for line in out.splitlines():
            if line.startswith("Requests/sec:"):
                return float(line.split()[1]), "wrk -t1 -c1"
        return 0.0, "wrk gave no figure"
    u = urllib.parse.urlsplit(args.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
    n, end = 0, time.monotonic() + args.warm
    while time.monotonic() < end:
        conn.request("GET", u.path or "/")
        conn.getresponse().read()
        n += 1
    return n / args.warm, "a Python loop, one connection (wrk is not installed)"


def peak_rss_kib(ct):
    pid = ct.show("MainPID")
    for line in ct.run("cat", f"/proc/{pid}/status").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def summary(times, rounds):
    ok = [t for t in times if t is not None]
    return {
        "answered": len(ok),
        "rounds": rounds,
        "median_ms": round(statistics.median(ok), 1) if ok else None,
        "min_ms": round(min(ok), 1) if ok else None,
        "max_ms": round(max(ok), 1) if ok else None,
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("ct")
    p.add_argument("url")
    p.add_argument("--floor", help="the floor program inside the container")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--wait", type=float, default=2.5)
    p.add_argument("--warm", type=int, default=3)
    args = p.parse_args()
    ct = Container(args.ct)

    variants = ([("floor", args.floor)] if args.floor else []) + [("pm-dashboard", None)]
    times = {name: [] for name, _ in variants}
    try:
        for _ in range(args.rounds):
            for name, floor in variants:
                if args.floor:
                    ct.use(floor)
                times[name].append(cold_start(ct, args))
        result = {}
        for name, floor in variants:
            if args.floor:
                ct.use(floor)
            ct.run("systemctl", "stop", SERVICE)
            rps, how = warm(args)
            r = summary(times[name], args.rounds)
            r.update(warm_rps=round(rps), warm_how=how, peak_rss_kib=peak_rss_kib(ct))
            result[name] = r
            print(
                f"{name}: cold start median {r['median_ms']} ms (min {r['min_ms']}, "
                f"max {r['max_ms']}; {r['answered']} of {args.rounds} answered 200); "
                f"warm {r['warm_rps']} requests/s ({how}); peak RSS {r['peak_rss_kib'] / 1024:.1f} MiB",
                file=sys.stderr,
            )
    finally:
        if args.floor:
            ct.use(None)
    if args.floor and result["floor"]["median_ms"] and result["pm-dashboard"]["median_ms"]:
        result["ratio"] = round(result["pm-dashboard"]["median_ms"] / result["floor"]["median_ms"], 2)
        print(f"pm-dashboard / floor: {result['ratio']}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
