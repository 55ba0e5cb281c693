"""A wasmbox server for the Python benchmarks (idle_cpu.py, quota_share.py).

`functions_dir` copies named guests from functions/ into a fresh directory;
`serve` runs `EXE serve` over it on 127.0.0.1 and yields a keep-alive
connection once `ready(conn)` has succeeded on it; `timed_get` makes one
call and returns its Server-Timing phases.
"""
import contextlib
import http.client
import os
import shutil
import subprocess
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def functions_dir(names):
    """A new directory holding copies of functions/NAME for each name."""
    path = tempfile.mkdtemp()
    for name in names:
        shutil.copy(os.path.join(REPO, "functions", name), path)
    return path


def timed_get(conn, path, headers):
    """GET `path` on `conn`; the answer's Server-Timing phases as
    {name: milliseconds}. RuntimeError unless it answered 200."""
    conn.request("GET", path, headers=headers)
    r = conn.getresponse()
    r.read()
    if r.status != 200:
        raise RuntimeError(f"{path} answered {r.status}")
    phases = {}
    for phase in r.getheader("server-timing", "").split(","):
        name, _, dur = phase.strip().partition(";dur=")
        if dur:
            phases[name] = float(dur)
    return phases


@contextlib.contextmanager
def serve(exe, functions, port, ready):
    """`exe serve` on `port` (admin on port + 1) over `functions`. Yields
    (process, connection) once `ready(connection)` returned; retried for up
    to 60 s while it raises. Stopped with SIGTERM (SIGKILL after 30 s), so
    the server removes its cgroups."""
    server = subprocess.Popen(
        [exe, "serve", "--host", "127.0.0.1", "--port", str(port),
         "--admin-listen", f"127.0.0.1:{port + 1}", "--log-level", "error",
         "--functions", functions])
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port)
                ready(conn)
                break
            except (OSError, RuntimeError, KeyError, http.client.HTTPException):
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"{exe} did not become ready")
                time.sleep(0.1)
        yield server, conn
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
