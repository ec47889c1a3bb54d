"""The live queue on a large pool: how soon `labelloop serve` gives a first batch, how soon a new
ranking is served after the Query Sampler commits, and batch/label latency during that switch.

    .venv/bin/python bench/bench_live_queue.py [--rows 1000000] [--baseline DIR]

`--baseline DIR`: a git worktree of the previous revision with its own `.venv` (e.g.
`git worktree add /tmp/base b5e06b1 && make -C /tmp/base install`); the same scenario runs
against it in the same run and its figures are printed beside these. Prints figures; asserts
nothing. Targets (issue 10): first batch <= 1 s after /health answers; ranked batches in the
new order <= 3 s after the commit; batch p99 <= 20 ms and label p99 <= 10 ms in-process while
the new order is switched in.

Scenario: a pool of `--rows` rows (10 columns and an `id` column the webapp uses as item id),
and a queries dataset ranking all of it (session 1). (1) `serve` on a fresh project (no
engine tables yet): time from /health to the first batch. (2) Over HTTP: commit a new ranking
(queries dataset + session variable in one transaction, as the Query Sampler does) and poll
`batch?size=1` every 50 ms until it answers the new ranking's top item. (3) In-process: one
annotator thread fetches batches of 20 and labels each item while a new ranking is committed;
latencies from the commit until the new order is served (and at least 5 s).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
WEBAPP = "label-rows"
CATS = {f"c{i}": None for i in range(5)}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q)) if values else float("nan")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ranking(pool: pd.DataFrame, seed: int) -> pd.DataFrame:
    """A queries dataset as the Query Sampler writes it: the pool, scored, most uncertain first."""
    rng = np.random.default_rng(seed)
    q = pool.copy()
    q["uncertainty"] = rng.random(len(q))
    q["prediction"] = rng.choice(list(CATS), size=len(q))
    q["confidence"] = 1 - q["uncertainty"] / 2
    q["model_version"] = f"v{seed}"
    return q.sort_values("uncertainty", ascending=False, kind="stable").reset_index(drop=True)


LOCK_HELD: list[float] = []  # seconds each ranking commit held the write lock


def commit_ranking(project, frame: pd.DataFrame) -> int:
    """Commit a new ranking as the Query Sampler does. With a host that has
    `Dataset.prepare` (issue 10), the chunk files are written and synced before the write
    lock; the previous revision writes them inside its transaction."""
    try:
        from labeling.publish import session_variable
    except ImportError:  # a revision before the one ranking publisher
        from labeling.sampling import session_variable

    queries = project.dataset("queries", create=True)
    if hasattr(queries, "prepare"):
        with queries.prepare(frame) as prepared:
            with project.write_transaction() as conn:
                t = time.perf_counter()
                prepared.commit(conn)
                session = project.variables.incr(session_variable("queries"), conn=conn)
            LOCK_HELD.append(time.perf_counter() - t)
            return session
    from labeling.sampling import write_in_pieces  # a revision before Dataset.prepare

    with project.write_transaction() as conn:
        t = time.perf_counter()
        write_in_pieces(queries, frame, conn)
        session = project.variables.incr(session_variable("queries"), conn=conn)
    LOCK_HELD.append(time.perf_counter() - t)
    return session


def make_project(directory: Path, rows: int):
    from labelloop.project import Project

    rng = np.random.default_rng(0)
    params = {"unlabeled": "pool", "categories": CATS, "labels_ds": "labels",
              "metadata_ds": "metadata", "queries_ds": "queries", "id_column": "id"}
    project = Project.init(directory, config={
        "webapps": {WEBAPP: {"type": "ml-assisted-labeling/tabular-labeling",
                             "params": params}}})
    pool = pd.DataFrame({f"f{i}": rng.normal(size=rows) for i in range(8)})
    pool["group"] = rng.choice(["a", "b", "c", "d"], size=rows)
    pool.insert(0, "id", [f"r{i}" for i in range(rows)])
    project.dataset("pool", create=True).write(pool)
    commit_ranking(project, ranking(pool, 1))
    return project, pool


class Server:
    """A `labelloop serve` subprocess on 127.0.0.1 (access log to a file)."""

    def __init__(self, project_dir: Path):
        self.port = free_port()
        env = dict(os.environ)
        self.log_path = project_dir.parent / f"serve-{self.port}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "labelloop.cli", "--project", str(project_dir), "serve",
                 "--port", str(self.port), "--no-scheduler"], env=env,
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if self.get("/api/v1/health")[0] == 200:
                    self.healthy_at = time.perf_counter()
                    return
            except OSError:
                time.sleep(0.02)
        self.stop()
        raise RuntimeError("labelloop serve did not start: " + self.log_path.read_text())

    def get(self, path: str, user: str = "bench", method: str = "GET", body=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=300)
        headers = {"X-Labelloop-User": user}
        data = None
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body), "application/json"
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        payload = resp.read()
        conn.close()
        return resp.status, json.loads(payload) if payload else None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def first_batch(server: Server) -> dict:
    base = f"/api/v1/webapps/{WEBAPP}"
    preparing = None
    status, body = server.get(f"{base}/batch?size=20", user="first")
    t = time.perf_counter() - server.healthy_at
    if status != 200 or not body["items"]:
        raise RuntimeError(f"first batch: {status} {body}")
    status, cfg = server.get(f"{base}/config")
    preparing = cfg.get("preparing") if status == 200 else None
    return {"first_batch_s": t, "preparing_after": preparing}


def wait_ready(server: Server, timeout: float = 600) -> float:
    """Until nothing is being prepared any more (the new engine says so in config)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        status, cfg = server.get(f"/api/v1/webapps/{WEBAPP}/config")
        if status == 200 and not cfg.get("preparing"):
            return time.perf_counter() - t0
        time.sleep(0.5)
    return float("nan")


def switch_over_http(server: Server, project, pool: pd.DataFrame, seed: int) -> dict:
    base = f"/api/v1/webapps/{WEBAPP}"
    frame = ranking(pool, seed)
    top = str(frame["id"].iloc[0])
    t_write = time.perf_counter()
    commit_ranking(project, frame)
    committed = time.perf_counter()
    k = 0
    while time.perf_counter() - committed < 300:
        k += 1
        status, body = server.get(f"{base}/batch?size=1", user=f"poll{seed}-{k}")
        if status == 200 and body["items"] and body["items"][0]["id"] == top:
            return {"commit_s": committed - t_write,
                    "new_order_s": time.perf_counter() - committed}
        time.sleep(0.05)
    return {"commit_s": committed - t_write, "new_order_s": float("nan")}


def switch_in_process(project, pool: pd.DataFrame, seed: int) -> dict:
    from labeling.engine import LabelingEngine
    from labeling.settings import parse_settings

    params = project.config["webapps"][WEBAPP]["params"]
    engine = LabelingEngine(project, parse_settings(params, "tabular", WEBAPP, project),
                            background=True)
    engine.refresh(wait=True)
    deadline = time.time() + 600
    while time.time() < deadline:  # the pool's index, when the engine builds one aside
        info = engine.queue_info()
        if not info.get("preparing"):
            break
        engine.batch("warm", 1)
        time.sleep(0.5)
    frame = ranking(pool, seed)
    top = str(frame["id"].iloc[0])
    cats = list(CATS)
    label_t: list[tuple[float, float]] = []
    batch_t: list[tuple[float, float]] = []
    stop = threading.Event()

    def annotate() -> None:
        k = 0
        while not stop.is_set():
            t = time.perf_counter()
            b = engine.batch("ann", 20)
            batch_t.append((t, time.perf_counter() - t))
            for item in b["items"]:
                if stop.is_set():
                    break
                t = time.perf_counter()
                engine.label("ann", item["id"], cats[k % len(cats)])
                label_t.append((t, time.perf_counter() - t))
                k += 1
                time.sleep(0.005)  # a page posts answers one by one, not in a tight loop

    worker = threading.Thread(target=annotate, daemon=True)
    worker.start()
    time.sleep(2.0)
    commit_ranking(project, frame)
    committed = time.perf_counter()
    switched = float("nan")
    k = 0
    while time.perf_counter() - committed < 300:
        k += 1
        b = engine.batch(f"poll-{k}", 1)
        if b["items"] and b["items"][0]["id"] == top:
            switched = time.perf_counter() - committed
            break
        time.sleep(0.05)
    time.sleep(max(0.0, 5.0 - (time.perf_counter() - committed)))
    end = time.perf_counter()
    stop.set()
    worker.join(30)
    engine.wait_idle(60)
    # From the commit on: while the sampler's own transaction holds the write lock, every
    # writer waits whatever the engine does (that wait is the sampler's, see commit_s).
    during_b = [d for t, d in batch_t if committed <= t <= end]
    during_l = [d for t, d in label_t if committed <= t <= end]
    return {"switch_s": switched, "batch_p50": pct(during_b, 50), "batch_p99": pct(during_b, 99),
            "label_p50": pct(during_l, 50), "label_p99": pct(during_l, 99),
            "batches": len(during_b), "labels": len(during_l)}


def scenario(rows: int, workdir: Path) -> dict:
    """The whole scenario against the code on sys.path; figures as a dict."""
    out: dict = {"rows": rows}
    t = time.perf_counter()
    project, pool = make_project(workdir / "project", rows)
    out["setup_s"] = time.perf_counter() - t
    server = Server(workdir / "project")
    try:
        out.update(first_batch(server))
        out["ready_s"] = wait_ready(server)
        out.update(switch_over_http(server, project, pool, 2))
    finally:
        server.stop()
    out.update(switch_in_process(project, pool, 3))
    out["lock_s"] = max(LOCK_HELD[1:]) if len(LOCK_HELD) > 1 else float("nan")
    out["load_avg"] = os.getloadavg()[0]
    return out


ROWS = [
    ("first batch after /health answers (s)", "first_batch_s", "{:.2f}"),
    ("everything prepared after that (s)", "ready_s", "{:.1f}"),
    ("Query Sampler commit -> new order served, HTTP (s)", "new_order_s", "{:.2f}"),
    ("commit -> new order served, in-process (s)", "switch_s", "{:.2f}"),
    ("batch of 20 p50 during the switch (ms)", "batch_p50", "{:.1f}"),
    ("batch of 20 p99 during the switch (ms)", "batch_p99", "{:.1f}"),
    ("label p50 during the switch (ms)", "label_p50", "{:.2f}"),
    ("label p99 during the switch (ms)", "label_p99", "{:.2f}"),
    ("ranking commit: write lock held, longest (s)", "lock_s", "{:.2f}"),
    ("load average (1 min) at the end", "load_avg", "{:.1f}"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--baseline", default=None,
                        help="worktree of the previous revision, with its own .venv")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    lib = os.environ.get("BENCH_LIB") or str(ROOT / "python-lib")
    sys.path.insert(0, lib)
    os.environ["PYTHONPATH"] = lib
    tmp = Path(tempfile.mkdtemp(prefix="bench-live-queue-"))
    try:
        if args.child:
            Path(args.child).write_text(json.dumps(scenario(args.rows, tmp)))
            return
        results = {}
        if args.baseline:
            base = Path(args.baseline).resolve()
            target = tmp / "baseline.json"
            print(f"baseline: {base} ...", flush=True)
            subprocess.run([str(base / ".venv/bin/python"), __file__, "--rows", str(args.rows),
                            "--child", str(target)], check=True,
                           env=dict(os.environ, BENCH_LIB=str(base / "python-lib")))
            results["baseline"] = json.loads(target.read_text())
        print("this revision ...", flush=True)
        results["this"] = scenario(args.rows, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\npool of {args.rows:,} rows; PRAGMA synchronous="
          f"{os.environ.get('LABELLOOP_SQLITE_SYNCHRONOUS', 'FULL')}")
    cols = [k for k in ("baseline", "this") if k in results]
    print(f"{'':52}" + "".join(f"{c:>14}" for c in cols))
    for label, key, fmt in ROWS:
        print(f"{label:52}" + "".join(f"{fmt.format(results[c].get(key, float('nan'))):>14}"
                                      for c in cols))
    print("\n" + json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
