#!/usr/bin/env python3
"""How much of its quota a tenant gets when it calls faster than the quota.

Usage: bench/quota_share.py OUT.md WASMBOX [WASMBOX ...]

For each build, starts `WASMBOX serve` over a directory holding only
functions/spin.wasm and functions/hello.wat and, for each row, calls one
function back to back on one keep-alive connection from this (Python)
client for SECONDS after a warm-up of 300 calls. The share of a core the
tenant received is the sum of the answers' Server-Timing `cpu` (the
guest thread's CPU time per call, what the CPU ledger charges) over the
wall time; latency is the answers' Server-Timing `total`. A spin of
0.05 ms at `cpu_quota: 100` asks for several times its quota, so the
ledger must hold it to 0.100 of a core: less is a tenant short-changed,
more is a quota beaten. Two rounds, builds alternating.
"""
import os
import platform
import shutil
import statistics
import sys
import time

from served import functions_dir, serve, timed_get

SECONDS = 4.0
ROWS = [("/spin?arg=0.05", 100), ("/spin?arg=0.05", 1000), ("/hello", 100)]


def call(conn, path, quota):
    phases = timed_get(conn, path, {"cpu_quota": str(quota)})
    return phases["cpu"], phases["total"]


def ready(conn):
    call(conn, "/hello", 1000)
    call(conn, "/spin?arg=0.05", 1000)


def measure(exe, functions, port):
    with serve(exe, functions, port, ready) as (_, conn):
        rows = []
        for path, quota in ROWS:
            for _ in range(300):
                call(conn, path, quota)
            cpu_ms, totals, start = 0.0, [], time.monotonic()
            while time.monotonic() - start < SECONDS:
                cpu, total = call(conn, path, quota)
                cpu_ms += cpu
                totals.append(total * 1000.0)
            wall = time.monotonic() - start
            totals.sort()
            rows.append((len(totals) / wall, cpu_ms / 1000.0 / wall,
                         statistics.median(totals),
                         totals[int(len(totals) * 0.99)]))
        return rows


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    out, exes = sys.argv[1], sys.argv[2:]
    functions = functions_dir(["spin.wasm", "hello.wat"])
    results = {exe: [] for exe in exes}
    for rnd in range(2):
        order = exes if rnd % 2 == 0 else list(reversed(exes))
        for exe in order:
            rows = measure(exe, functions, 18300)
            results[exe].append(rows)
            for (path, quota), (rate, share, p50, p99) in zip(ROWS, rows):
                print(f"round {rnd + 1} {exe} {path} q{quota}: {rate:.0f}/s, "
                      f"{share:.3f} of a core, total p50 {p50:.0f} µs p99 {p99:.0f} µs")
    shutil.rmtree(functions)
    lines = [
        "# A tenant calling faster than its quota: the share it gets\n",
        f"Machine: {os.cpu_count()} cores, Linux {platform.release()}. Shared and noisy.\n",
        f"Command: `python3 bench/quota_share.py {out} {' '.join(exes)}`. "
        "One keep-alive connection from a Python client, back to back, "
        f"{SECONDS:.0f} s per row after 300 calls of warm-up; share = the sum of "
        "Server-Timing `cpu` over wall time; p50/p99 of Server-Timing `total`. "
        "Two rounds, builds alternating; each cell lists both rounds.\n",
        "| build | row | cpu_quota | calls/s | share of a core | total p50 µs | total p99 µs |",
        "|---|---|---|---|---|---|---|",
    ]
    for exe in exes:
        for i, (path, quota) in enumerate(ROWS):
            cells = [r[i] for r in results[exe]]
            col = lambda k, fmt: " / ".join(fmt.format(c[k]) for c in cells)
            lines.append(f"| `{exe}` | `{path}` | {quota} | {col(0, '{:.0f}')} | "
                         f"{col(1, '{:.3f}')} | {col(2, '{:.0f}')} | {col(3, '{:.0f}')} |")
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
