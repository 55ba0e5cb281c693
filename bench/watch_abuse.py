#!/usr/bin/env python3
"""What tenants who run one long unchecked operation per call cost a
neighbour, in a cgroup mode (the watch moves each such call into its slot).

Usage: bench/watch_abuse.py OUT.md WASMBOX [ABUSERS]

Starts `WASMBOX serve` (auto isolation: cgroup v1 here) over a directory
with functions/spin.wasm and ABUSERS copies of a module that grows its
memory to 256 MiB and fills it with one `memory.fill` (no epoch check
inside: the watch has each such call move into its slot). The victim
calls `spin?arg=6` at `cpu_quota: 500` back to back on one connection: a
6 ms call that reaches its first tick and moves itself into its slot, so
it waits whenever a move by TID holds the cgroup mutex (the watch's moves
were by TID before it nudged threads to move themselves). It is measured
alone, then while ABUSERS clients call their own fill module (one
function each, so no function's CPU debt holds the others back) at
`cpu_quota: 100` back to back. Reported: the victim's calls/s and
Server-Timing `total` p50/p99, the abusers' calls and share of a core
(Server-Timing `cpu` / `execute`), and the watch's moves per second
(`wasmbox_worker_slot_rescues_total`).
"""
import http.client
import os
import platform
import shutil
import statistics
import sys
import threading
import time

from served import functions_dir, serve, timed_get as call

SECONDS = 10.0
ABUSERS = 6  # unless given
PORT = 18320
FILL = """(module
  (memory 1)
  (func (export "_start")
    (drop (memory.grow (i32.const 4095)))
    (memory.fill (i32.const 0) (i32.const 7) (i32.const 0x10000000))))"""


def rescues():
    conn = http.client.HTTPConnection("127.0.0.1", PORT + 1)
    conn.request("GET", "/-/metrics")
    body = conn.getresponse().read().decode()
    for line in body.splitlines():
        if line.startswith("wasmbox_worker_slot_rescues_total"):
            return float(line.split()[-1])
    return None  # a build without the watch


def victim(conn):
    totals, start = [], time.monotonic()
    while time.monotonic() - start < SECONDS:
        totals.append(call(conn, "/spin?arg=6", {"cpu_quota": "500"})["total"])
    wall = time.monotonic() - start
    totals.sort()
    return len(totals) / wall, statistics.median(totals), totals[int(len(totals) * 0.99)]


def abuse(i, stop, out):
    conn = http.client.HTTPConnection("127.0.0.1", PORT)
    headers = {"cpu_quota": "100", "Memory-Request": "300"}
    while not stop.is_set():
        p = call(conn, f"/fill{i}", headers)
        out.append(p["cpu"] / p["execute"])


def main():
    global ABUSERS
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    out, exe = sys.argv[1], sys.argv[2]
    if len(sys.argv) == 4:
        ABUSERS = int(sys.argv[3])
    functions = functions_dir(["spin.wasm"])
    for i in range(ABUSERS):
        with open(os.path.join(functions, f"fill{i}.wat"), "w") as f:
            f.write(FILL)

    def ready(conn):
        call(conn, "/spin?arg=1", {})
        for i in range(ABUSERS):
            call(conn, f"/fill{i}", {"Memory-Request": "300"})

    with serve(exe, functions, PORT, ready) as (_, conn):
        for _ in range(50):
            call(conn, "/spin?arg=6", {"cpu_quota": "500"})
        alone = victim(conn)
        print(f"alone: {alone[0]:.0f} calls/s, total p50 {alone[1]:.2f} ms p99 {alone[2]:.2f} ms")
        stop, shares = threading.Event(), []
        threads = [threading.Thread(target=abuse, args=(i, stop, shares)) for i in range(ABUSERS)]
        before = rescues()
        for t in threads:
            t.start()
        t0 = time.monotonic()
        beside = victim(conn)
        after = rescues()
        moved = None if before is None else (after - before) / (time.monotonic() - t0)
        stop.set()
        for t in threads:
            t.join()
        print(f"beside {ABUSERS} abusers: {beside[0]:.0f} calls/s, total p50 {beside[1]:.2f} ms "
              f"p99 {beside[2]:.2f} ms; {len(shares)} abusive calls, watch moves per s: {moved}")
    shutil.rmtree(functions)
    shares.sort()
    lines = [
        "# Tenants running one long unchecked operation per call, beside a neighbour\n",
        f"Machine: {os.cpu_count()} cores, Linux {platform.release()}. Shared and noisy.\n",
        f"Command: `python3 bench/watch_abuse.py {' '.join(sys.argv[1:])}` (auto isolation: cgroup v1 here). "
        "The victim calls `spin?arg=6` at `cpu_quota: 500` back to back on one keep-alive "
        f"connection for {SECONDS:.0f} s (a 6 ms call that moves itself into its slot at its "
        f"first tick); the abusers are {ABUSERS} clients, each calling its own module that "
        "fills 256 MiB with one `memory.fill` at `cpu_quota: 100`, back to back. "
        "Latency: Server-Timing `total`. Watch moves: `wasmbox_worker_slot_rescues_total` "
        "over the victim's window.\n",
        "| victim | calls/s | total p50 ms | total p99 ms |",
        "|---|---|---|---|",
        f"| alone | {alone[0]:.0f} | {alone[1]:.2f} | {alone[2]:.2f} |",
        f"| beside {ABUSERS} abusers | {beside[0]:.0f} | {beside[1]:.2f} | {beside[2]:.2f} |",
        "",
        "| abusive calls | their share of a core, median (max) | watch moves per s |",
        "|---|---|---|",
        f"| {len(shares)} | {statistics.median(shares):.2f} ({shares[-1]:.2f}) | "
        f"{'none: a build without the watch' if moved is None else f'{moved:.1f}'} |"
        if shares else "| 0 | - | - |",
    ]
    with open(out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
