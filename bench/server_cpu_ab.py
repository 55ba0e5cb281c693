#!/usr/bin/env python3
"""Two wasmbox builds' CPU per call, from the server's own Server-Timing.

One connection sends each function's request back to back (c=1, keep-alive)
to one build's server, then the other's, alternating for --rounds; each
cell's figure is the median of `cpu` (the call's CPU time on its worker,
store setup included) and of `execute` over --calls calls after a warm-up.
HTTP throughput at this scale moves with the machine's noise; the call's
own CPU does not, so this shows a change inside the call.

usage: bench/server_cpu_ab.py --a OLD_BINARY --b NEW_BINARY [--rounds 3]
       [--calls 3000] [--out bench/results/server_cpu_ab.md]
(a goes first in odd rounds, b in even ones)
"""

import argparse
import http.client
import os
import platform
import signal
import socket
import statistics
import subprocess
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (label, method, path, body, expected stdout)
ROWS = [
    ("hello (WAT, one fd_write)", "GET", "/hello", b"", b"Hello from wasmbox!\n"),
    ("echo (Rust, args and stdin to stdout)", "POST", "/echo", b"hi", b"\nhi"),
    ("wc (Rust, counts stdin)", "POST", "/wc", b"one two three\n", None),
]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timing(header):
    out = {}
    for part in header.split(","):
        name, _, dur = part.strip().partition(";dur=")
        out[name] = float(dur) * 1000.0  # ms -> us
    return out


def call(conn, method, path, body):
    conn.request(method, path, body=body or None)
    r = conn.getresponse()
    data = r.read()
    return r.status, data, r.getheader("server-timing") or ""


def measure(binary, calls, warmup):
    port = free_port()
    server = subprocess.Popen(
        [binary, "serve", "--port", str(port), "--functions", "functions",
         "--prewarm-poll", "0"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            try:
                if call(conn, "GET", "/hello", b"")[0] == 200:
                    break
            except (OSError, http.client.HTTPException):
                pass
            conn.close()
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit(f"{binary}: the server did not answer within 30 s")
            time.sleep(0.05)
        cells = []
        for label, method, path, body, expect in ROWS:
            cpu, execute = [], []
            for i in range(warmup + calls):
                status, data, st = call(conn, method, path, body)
                if status != 200 or (expect is not None and data != expect):
                    raise SystemExit(f"{binary} {path}: {status} {data[:200]!r}")
                if i >= warmup:
                    t = timing(st)
                    cpu.append(t["cpu"])
                    execute.append(t["execute"])
            cells.append((statistics.median(cpu), statistics.median(execute)))
        return cells
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--a", required=True)
    ap.add_argument("--b", required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--calls", type=int, default=3000)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench/results/server_cpu_ab.md"))
    args = ap.parse_args()
    builds = [("a", os.path.abspath(args.a)), ("b", os.path.abspath(args.b))]
    runs = {name: [] for name, _ in builds}
    started = time.monotonic()
    for r in range(args.rounds):
        for name, binary in builds if r % 2 == 0 else builds[::-1]:
            cells = measure(binary, args.calls, args.warmup)
            runs[name].append(cells)
            print(f"round {r + 1} {name}: " + ", ".join(
                f"{row[2]} cpu {c:.1f} us" for row, (c, _) in zip(ROWS, cells)), flush=True)

    lines = [
        "# CPU per call, two builds, from Server-Timing",
        "",
        f"Machine: {os.cpu_count()} cores, Linux {platform.release()}. Shared and noisy: "
        "compare within one run.",
        "",
        f"Command: `python3 bench/server_cpu_ab.py --a {args.a} --b {args.b} "
        f"--rounds {args.rounds} --calls {args.calls} --out {os.path.relpath(args.out, ROOT)}` "
        f"({time.monotonic() - started:.0f} s).",
        "",
        "One keep-alive connection, calls back to back; each round's figure is the "
        f"median over {args.calls} calls after {args.warmup} warm-up calls. `cpu` is the "
        "call's CPU time on its worker thread (store setup included), `execute` the "
        "guest's run. Builds alternate (a first in odd rounds, b in even ones); the "
        "table gives the median of "
        "the rounds and each round's value.",
        "",
        "| function | a: cpu p50 | b: cpu p50 | b / a | a: execute p50 | b: execute p50 | b / a |",
        "|---|---|---|---|---|---|---|",
    ]
    for i, row in enumerate(ROWS):
        def col(name, k):
            vals = [cells[i][k] for cells in runs[name]]
            return statistics.median(vals), vals
        (ac, acs), (bc, bcs) = col("a", 0), col("b", 0)
        (ae, aes), (be, bes) = col("a", 1), col("b", 1)
        fmt = lambda m, vs: f"{m:.1f} µs ({', '.join(f'{v:.1f}' for v in vs)})"
        lines.append(f"| {row[0]} | {fmt(ac, acs)} | {fmt(bc, bcs)} | {bc / ac:.2f}x "
                     f"| {fmt(ae, aes)} | {fmt(be, bes)} | {be / ae:.2f}x |")
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
