#!/usr/bin/env python3
"""Cold start, warm requests/second and peak RSS of the socket-activated
dashboard in the booted system-test container (README "Benchmarks").

    bench_dashboard.py CT_PID URL [--rounds 20] [--wait 2.5] [--label NAME]
                       [--auth USER:PASSWORD] [--warm SECONDS]

Run on the host by tests/system/run.sh (scenario 9), with CT_PID the
container's systemd: the container shares the host's network, so curl on the
host reaches the socket that systemd holds in the container.

A cold start: `systemctl stop pimainteno-dashboard.service` (the socket
stays), wait (2.5 s: the start limits never come into play), then curl's
time_starttransfer for URL: connect, systemd starts the service (sandbox,
exec, READY=1), the first byte of the answer. Then warm requests/second on
one keep-alive connection (wrk when installed, else a Python loop, labelled
so) and the service's peak RSS (VmHWM of its main process; MemoryPeak= is
newer than systemd 252). One JSON line on stdout, the figures on stderr.
"""

import argparse
import http.client
import json
import shutil
import statistics
import subprocess
import sys
import time
import urllib.parse

SERVICE = "pimainteno-dashboard.service"


def ct(pid, *args):
    return subprocess.run(
        ["nsenter", "-t", pid, "-a", *args], capture_output=True, text=True
    )


def main_pid(pid):
    out = ct(pid, "systemctl", "show", "-p", "MainPID", "--value", SERVICE).stdout
    return out.strip()


def cold_start(args):
    times, codes = [], []
    for _ in range(args.rounds):
        ct(args.ct, "systemctl", "stop", SERVICE)
        time.sleep(args.wait)
        cmd = ["curl", "-s", "-o", "/dev/null", "--max-time", "10",
               "-w", "%{http_code} %{time_starttransfer}"]
        if args.auth:
            cmd += ["-u", args.auth]
        out = subprocess.run(cmd + [args.url], capture_output=True, text=True).stdout
        code, t = out.split() if len(out.split()) == 2 else ("000", "0")
        codes.append(code)
        if code == "200":
            times.append(float(t) * 1000)
    return times, codes


def warm(args):
    """Requests/second on one keep-alive connection."""
    if shutil.which("wrk"):
        cmd = ["wrk", "-t1", "-c1", f"-d{int(args.warm)}s", args.url]
        if args.auth:
            import base64
            token = base64.b64encode(args.auth.encode()).decode()
            cmd[1:1] = ["-H", f"Authorization: Basic {token}"]
        out = subprocess.run(cmd, capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Requests/sec:"):
                return float(line.split()[1]), "wrk -t1 -c1"
        return 0.0, "wrk (no result)"
    u = urllib.parse.urlsplit(args.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=5)
    headers = {}
    if args.auth:
        import base64
        headers["Authorization"] = "Basic " + base64.b64encode(args.auth.encode()).decode()
    n, end = 0, time.monotonic() + args.warm
    while time.monotonic() < end:
        conn.request("GET", u.path or "/", headers=headers)
        conn.getresponse().read()
        n += 1
    return n / args.warm, "python http.client, one connection"


def peak_rss_kib(args):
    pid = main_pid(args.ct)
    if pid in ("", "0"):
        return 0
    status = ct(args.ct, "cat", f"/proc/{pid}/status").stdout
    for line in status.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("ct")
    p.add_argument("url")
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--wait", type=float, default=2.5)
    p.add_argument("--warm", type=int, default=3)
    p.add_argument("--label", default="")
    p.add_argument("--auth", default="")
    args = p.parse_args()

    times, codes = cold_start(args)
    rps, how = warm(args)
    rss = peak_rss_kib(args)
    result = {
        "label": args.label,
        "rounds": args.rounds,
        "ok": len(times),
        "codes": sorted(set(codes)),
        "median_ms": round(statistics.median(times), 1) if times else None,
        "min_ms": round(min(times), 1) if times else None,
        "max_ms": round(max(times), 1) if times else None,
        "warm_rps": round(rps),
        "warm_how": how,
        "peak_rss_kib": rss,
    }
    print(
        f"{args.label}: cold start median {result['median_ms']} ms "
        f"(min {result['min_ms']}, max {result['max_ms']}, {len(times)} of {args.rounds} answered 200); "
        f"warm {result['warm_rps']} requests/s ({how}); peak RSS {rss / 1024:.1f} MiB",
        file=sys.stderr,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
