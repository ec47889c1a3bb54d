"""Outgoing webhooks: label latency over HTTP with no receiver (baseline), with a fast
receiver, and with a receiver that sleeps 5 s per delivery; how long the backlog takes.

    .venv/bin/python bench/bench_webhooks.py [--labels 130]

Prints figures; asserts nothing. Target (issue 13): label p99 unchanged with a receiver that
sleeps 5 s (delivery happens in the server's background sender, from the outbox table).
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python-lib"))

from labeling.demo import create_demo  # noqa: E402
from labelloop import webhooks  # noqa: E402

WEBAPP = "label-texts"


def receiver(sleep: float) -> tuple[ThreadingHTTPServer, str, list]:
    got: list = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            time.sleep(sleep)
            got.append(time.time())
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_port}/hook", got


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def label_latencies(port: int, ids: list[str]) -> np.ndarray:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    out = []
    for item in ids:
        body = json.dumps({"id": item, "label": "sports"})
        t0 = time.perf_counter()
        conn.request("POST", f"/api/v1/webapps/{WEBAPP}/labels", body,
                     {"Content-Type": "application/json", "X-Labelloop-User": "bench"})
        resp = conn.getresponse()
        resp.read()
        out.append(time.perf_counter() - t0)
        assert resp.status == 200
    return np.array(out) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--labels", type=int, default=130, help="per case (the pool has 400)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    project = create_demo(tmp / "texts", "text", n=100000)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "labelloop.cli", "--project",
                             str(project.dir), "serve", "--port", str(port), "--no-scheduler"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET",
                                                                                "/api/v1/health")
                break
            except OSError:
                time.sleep(0.1)
        n = min(args.labels, 133)
        ids = [f"text-{i:04d}" for i in range(3 * n)]
        label_latencies(port, ids[:10])  # warm up (first batch builds the queue)
        rows = []
        base = label_latencies(port, ids[10:n])
        rows.append(("no receiver (baseline)", base, None))
        fast, fast_url, fast_got = receiver(0.0)
        webhooks.add_hook(project, fast_url, ["ANNOTATION_CREATED"])
        lat = label_latencies(port, ids[n:2 * n])
        rows.append(("fast receiver", lat, None))
        webhooks.remove_hook(project, fast_url)
        slow, slow_url, slow_got = receiver(5.0)
        webhooks.add_hook(project, slow_url, ["ANNOTATION_CREATED"])
        t0 = time.time()
        lat = label_latencies(port, ids[2 * n:3 * n])
        took = time.time() - t0
        rows.append(("receiver sleeping 5 s", lat, f"{len(slow_got)} of {n} delivered while "
                                                  f"labeling ({took:.1f} s)"))
        print(f"{'case':<26}{'labels':>7}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}  note")
        for name, lat, note in rows:
            print(f"{name:<26}{len(lat):>7}{np.percentile(lat, 50):>9.1f}"
                  f"{np.percentile(lat, 99):>9.1f}{lat.max():>9.1f}  {note or ''}")
        fast.shutdown()
        slow.shutdown()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


if __name__ == "__main__":
    main()
