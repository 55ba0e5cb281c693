#!/usr/bin/env python3
"""The server's CPU per request when calls come one at a time, paced.

Usage: bench/idle_cpu.py OUT.md WASMBOX [WASMBOX ...]

For each build and each gap between calls (none, 0.5 ms, 5 ms), starts
`WASMBOX serve` over a directory holding only functions/hello.wat, calls
/hello 500 times to warm it, then sends N calls on one keep-alive
connection from this (slow, Python) client, sleeping the gap after each.
The server's CPU is the sum over its threads of /proc/PID/task/*/schedstat
(time on CPU, ns) before and after; the server p50 is the median of the
answers' Server-Timing `total`. Two rounds, builds alternating. This is
what an idle server's polling (a lone request waiting for its end, a worker
keeping watch for the next call) costs where it does not pay.
"""
import glob
import os
import platform
import shutil
import statistics
import sys
import time

from served import functions_dir, serve, timed_get

GAPS = [0.0, 0.0005, 0.005]
HEADERS = {"cpu_quota": "1000"}


def cpu_ns(pid):
    total = 0
    for f in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            total += int(open(f).read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # a thread that ended meanwhile
    return total


def call(conn):
    phases = timed_get(conn, "/hello", HEADERS)
    if "total" not in phases:
        raise RuntimeError("no Server-Timing total")
    return phases["total"] * 1000.0


def measure(exe, functions, port, gap, n):
    with serve(exe, functions, port, call) as (server, conn):
        for _ in range(500):
            call(conn)
        before, start = cpu_ns(server.pid), time.monotonic()
        totals = []
        for _ in range(n):
            totals.append(call(conn))
            if gap:
                time.sleep(gap)
        elapsed, used = time.monotonic() - start, cpu_ns(server.pid) - before
        return used / n / 1000.0, statistics.median(totals), n / elapsed


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out, exes = sys.argv[1], sys.argv[2:]
    functions = functions_dir(["hello.wat"])
    rows = []
    for rnd in range(2):
        for gap in GAPS:
            for i, exe in enumerate(exes if rnd % 2 == 0 else exes[::-1]):
                n = 600 if gap >= 0.005 else 2000
                cpu, p50, rate = measure(exe, functions, 19100 + 10 * i, gap, n)
                rows.append((rnd + 1, gap, exe, cpu, p50, rate))
                print(f"round {rnd + 1} gap {gap * 1e3:.1f} ms {exe}: "
                      f"{cpu:.1f} µs CPU/request, server p50 {p50:.1f} µs, {rate:.0f}/s",
                      flush=True)
    shutil.rmtree(functions)
    with open(out, "w") as f:
        f.write("# Server CPU per request, one paced connection\n\n")
        f.write(f"Machine: {os.cpu_count()} CPUs, Linux {platform.release()}. "
                "Shared and noisy: compare within one run.\n\n")
        f.write(f"Command: `bench/idle_cpu.py {out} {' '.join(exes)}`. "
                "One keep-alive connection from a Python client, hello with "
                "`cpu_quota: 1000`, the gap slept after each answer; CPU from "
                "the server's threads' schedstat.\n\n")
        f.write("| round | gap | build | server CPU µs / request | server p50 µs | req/s |\n")
        f.write("|---|---|---|---|---|---|\n")
        for rnd, gap, exe, cpu, p50, rate in rows:
            f.write(f"| {rnd} | {gap * 1e3:.1f} ms | `{exe}` | {cpu:.1f} | {p50:.1f} | {rate:.0f} |\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
