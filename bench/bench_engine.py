"""Labeling engine: label one item / get a batch of 20 on a 1,000,000-row pool, in-process and
over HTTP, with 1,000 and 100,000 labels recorded; baseline: rewriting the whole labels and
metadata datasets on every label (what the Dataiku plugin did).

    .venv/bin/python bench/bench_engine.py [--rows 1000000] [--dir DIR]
    .venv/bin/python bench/bench_engine.py --concurrency [--rows 100000] [--baseline DIR]

`--concurrency`: 1, 8 and 32 annotators at once over HTTP, each fetching batches of 20 and
labeling every item; the server's own time per label (Tornado's access log: from the request
read to the answer sent, waiting for a thread included), its p50/p99/max, and labels per
second. Two regimes, each for 1, 8 and 32 annotators:

- paced: each annotator opens the page at a random moment of the first 4 paces, then
  presses a key on average every `--pace` seconds (default 0.5 s, exponential gaps; faster
  than anyone labels for long), which is what a server of people sees. The latency target is
  read here.
- flat out: each annotator sends the next request as soon as the answer arrives (no person
  does that). This measures capacity (labels/s); its latencies follow Little's law: with N
  clients and no pause, time per request = N / throughput, whatever the server does.

`--overlap K` runs this revision's webapp with `annotators_per_item: K` (the baseline with 1).
`--database-url URL` puts the project on another database, e.g. PostgreSQL:
`LABELLOOP_PG_FSYNC=on .ci/with-postgres sh -c '.venv/bin/python bench/bench_engine.py
--concurrency --database-url "$LABELLOOP_TEST_POSTGRES"'`. `--baseline DIR` runs the same
against a worktree of the previous revision with its own .venv, in the same run (on PostgreSQL
each run gets a new database of its own), and prints its figures beside. Targets (issue 10):
label p99 <= 20 ms server-side with 8 and with 32 annotators; throughput with 8 at least that of
one.

Prints figures; asserts nothing. Targets (issue 5): at 100k labels, recording >= 1000x faster
than the baseline; label p99 < 5 ms in-process and < 25 ms over HTTP; batch p99 < 20 ms over
HTTP; neither grows > 2x from 1k to 100k labels. PRAGMA synchronous follows
LABELLOOP_SQLITE_SYNCHRONOUS (default FULL).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
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
import sqlalchemy as sa

ROOT = Path(__file__).resolve().parents[1]
LIB = os.environ.get("BENCH_LIB") or str(ROOT / "python-lib")
sys.path.insert(0, LIB)

from labeling.engine import (  # noqa: E402
    _COUNT_SQL,
    _DTYPES,
    LabelingEngine,
    annotations_table,
    session_variable,
)
from labeling.settings import parse_settings  # noqa: E402
from labelloop.project import Project  # noqa: E402

CATS = {f"c{i}": None for i in range(5)}
WEBAPP = "label-rows"


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000.0, q))


def make_project(directory: Path, rows: int) -> Project:
    rng = np.random.default_rng(0)
    params = {"unlabeled": "pool", "categories": CATS, "labels_ds": "labels",
              "metadata_ds": "metadata", "queries_ds": "queries"}
    project = Project.init(directory, config={
        "webapps": {WEBAPP: {"type": "ml-assisted-labeling/tabular-labeling",
                             "params": params}}})
    pool = pd.DataFrame({f"f{i}": rng.normal(size=rows) for i in range(8)})
    pool["group"] = rng.choice(["a", "b", "c", "d"], size=rows)
    pool["n"] = rng.integers(0, 1000, size=rows)
    t = time.perf_counter()
    project.dataset("pool", create=True).write(pool)
    queries = pool.copy()
    queries["uncertainty"] = rng.random(rows)
    queries["prediction"] = rng.choice(list(CATS), size=rows)
    queries["confidence"] = 1 - queries["uncertainty"] / 2
    queries = queries.sort_values("uncertainty", ascending=False, kind="stable")
    project.dataset("queries", create=True).write(queries)
    project.variables.incr(session_variable("queries"))
    print(f"pool + queries written ({rows:,} rows): {time.perf_counter() - t:.1f} s")
    return project


def engine_for(project: Project) -> LabelingEngine:
    params = project.config["webapps"][WEBAPP]["params"]
    cfg = parse_settings(params, "tabular", WEBAPP, project)
    return LabelingEngine(project, cfg, background=False)


def bulk_label(engine: LabelingEngine, n: int) -> None:
    """Record n labels of the next pending items in a few big transactions (setup only)."""
    project = engine.project
    cats = list(CATS)
    while n > 0:
        k = min(n, 20_000)
        with project.write_transaction() as conn:
            app = engine.ctx.app(conn)
            rows = conn.execute(sa.text(
                "SELECT q.pos, q.item_id, i.row FROM lb_queue q JOIN lb_items i ON "
                "i.iset = :iset AND i.item_id = q.item_id WHERE q.qid = :qid AND q.state = 0 "
                "ORDER BY q.pos LIMIT :k"), {"iset": app.iset, "qid": app.queue_id, "k": k}).all()
            now = time.time()
            labels = [cats[i % len(cats)] for i in range(len(rows))]
            start = conn.execute(sa.select(sa.func.coalesce(sa.func.max(
                annotations_table.c.label_id), 0))).scalar_one()
            conn.execute(sa.insert(annotations_table), [
                {"app": engine.app_id, "item_id": r.item_id, "owner": "", "annotator": "bulk",
                 "status": "LABELED", "label": lab, "comment": None, "session": 1,
                 "created": now, "updated": now} for r, lab in zip(rows, labels, strict=True)])
            ids = conn.execute(sa.select(annotations_table.c.label_id).where(
                annotations_table.c.label_id > start).order_by(annotations_table.c.label_id)
            ).scalars().all()
            items = pd.DataFrame([json.loads(r.row) for r in rows])
            items["label"] = labels
            items["label_id"] = ids
            for name, schema in (("labels", engine.answers.labels_schema()),
                                 ("metadata", engine.answers.metadata_schema())):
                ds = project.dataset(name, create=True)
                if not ds.exists():  # as the engine's first answer creates it
                    ds.write(pd.DataFrame({c["name"]: pd.Series([], dtype=_DTYPES[c["type"]])
                                           for c in schema}), conn=conn, storage="rows")
            project.dataset("labels", create=True).append(items, conn=conn)
            project.dataset("metadata", create=True).append(pd.DataFrame({
                "date": pd.Timestamp.now(tz="UTC"), "data_id": [r.item_id for r in rows],
                "comment": None, "session": 1, "status": "LABELED", "annotator": "bulk",
                "label": labels, "label_id": ids}), conn=conn)
            conn.exec_driver_sql("UPDATE lb_queue SET state = 1 WHERE qid = ? AND pos = ?",
                                 [(app.queue_id, r.pos) for r in rows])
            counts = pd.Series(labels).value_counts()
            conn.execute(_COUNT_SQL, [{"app": engine.app_id, "owner": "", "key": f"label:{c}",
                                       "n": int(v)} for c, v in counts.items()]
                         + [{"app": engine.app_id, "owner": "", "key": "labeled",
                             "n": len(rows)}])
        n -= len(rows)


def measure_inprocess(engine: LabelingEngine, labels: int, batches: int) -> dict:
    label_t, batch_t = [], []
    cats = list(CATS)
    done = 0
    while done < labels or len(batch_t) < batches:
        t = time.perf_counter()
        b = engine.batch(f"ann{len(batch_t) % 8}", 20)
        batch_t.append(time.perf_counter() - t)
        for k, item in enumerate(b["items"]):
            if done >= labels:
                break
            t = time.perf_counter()
            engine.label(f"ann{len(batch_t) % 8}", item["id"], cats[k % len(cats)], None)
            label_t.append(time.perf_counter() - t)
            done += 1
    return {"label": label_t, "batch": batch_t}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `labelloop serve` subprocess on 127.0.0.1."""

    def __init__(self, project_dir: Path):
        self.port = free_port()
        env = dict(os.environ, PYTHONPATH=LIB)
        # The access log goes to a file: an unread pipe would fill up and stall the server.
        self.log_path = project_dir.parent / f"serve-{self.port}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "labelloop.cli", "--project", str(project_dir), "serve",
                 "--port", str(self.port), "--no-scheduler"], env=env,
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if self.request("GET", "/api/v1/health")[0] == 200:
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError("labelloop serve did not start: " + self.log_path.read_text())

    def request(self, method: str, path: str, body: dict | None = None,
                conn: http.client.HTTPConnection | None = None, user: str = "bench"):
        own = conn is None
        conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        headers = {"X-Labelloop-User": user}
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        payload = resp.read()
        if own:
            conn.close()
        return resp.status, json.loads(payload) if payload else None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def measure_http(server: Server, labels: int, batches: int) -> dict:
    base = f"/api/v1/webapps/{WEBAPP}"
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    status, _ = server.request("GET", f"{base}/config", conn=conn)  # backend creation, warm-up
    assert status == 200, status
    label_t, batch_t = [], []
    cats = list(CATS)
    done = 0
    while done < labels or len(batch_t) < batches:
        user = f"http{len(batch_t) % 8}"
        t = time.perf_counter()
        status, b = server.request("GET", f"{base}/batch?size=20", conn=conn, user=user)
        batch_t.append(time.perf_counter() - t)
        if status != 200:
            raise RuntimeError(f"batch: {status} {b}")
        for k, item in enumerate(b["items"]):
            if done >= labels:
                break
            t = time.perf_counter()
            status, r = server.request("POST", f"{base}/labels", {
                "id": item["id"], "label": cats[k % len(cats)]}, conn=conn, user=user)
            label_t.append(time.perf_counter() - t)
            if status != 200:
                raise RuntimeError(f"label: {status} {r}")
            done += 1
    conn.close()
    return {"label": label_t, "batch": batch_t}


def baseline(project: Project, repeats: int, storage: str | None = None) -> list[float]:
    """Record one label the old way: rewrite the whole labels and metadata datasets.

    `storage=None` is `Dataset.write`'s default (column-wise Arrow chunks from 10k rows);
    "rows" is the row storage the labels and metadata datasets live in.
    """
    labels = project.dataset("labels").read()
    meta = project.dataset("metadata").read()
    out = []
    for k in range(repeats):
        new_label = labels.iloc[[0]].assign(label_id=10**9 + k)
        new_meta = meta.iloc[[0]].assign(label_id=10**9 + k)
        t = time.perf_counter()
        labels = pd.concat([labels, new_label], ignore_index=True)
        meta = pd.concat([meta, new_meta], ignore_index=True)
        project.dataset("labels_baseline", create=True).write(labels, storage=storage)
        project.dataset("metadata_baseline", create=True).write(meta, storage=storage)
        out.append(time.perf_counter() - t)
    return out


ACCESS_RE = re.compile(r"tornado.access: (\d+) (GET|POST) (\S+) \([^)]*\) ([0-9.]+)ms")


def server_times(log_text: str, route: str) -> list[float]:
    """Seconds the server took per request of `route` (Tornado's access log lines)."""
    return [float(m.group(4)) / 1000.0 for m in ACCESS_RE.finditer(log_text)
            if m.group(1) == "200" and m.group(3).split("?")[0].endswith(route)]


def concurrent_phase(server: Server, annotators: int, seconds: float,
                     pace: float | None = None) -> dict:
    """`annotators` threads label for `seconds`: a key press every `pace` seconds on average
    (exponential gaps), or as fast as they can (`pace=None`)."""
    base = f"/api/v1/webapps/{WEBAPP}"
    cats = list(CATS)
    start_at = server.log_path.stat().st_size
    stop = threading.Event()
    counts = [0] * annotators
    errors: list[str] = []

    def work(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
        user = f"c{annotators}-{k}"
        rng = np.random.default_rng(k)
        if pace:  # people open the page within a few seconds of each other, not at one instant
            if stop.wait(rng.uniform(0, 4 * pace)):
                return
        due = time.monotonic() + (rng.exponential(pace) if pace else 0.0)
        try:
            while not stop.is_set():
                status, b = server.request("GET", f"{base}/batch?size=20", conn=conn, user=user)
                if status != 200:
                    errors.append(f"batch {status} {b}")
                    return
                for i, item in enumerate(b["items"]):
                    if pace:  # the person looks at the item, then presses a key
                        if stop.wait(max(0.0, due - time.monotonic())):
                            break
                        due += rng.exponential(pace)
                    if stop.is_set():
                        break
                    status, r = server.request("POST", f"{base}/labels", {
                        "id": item["id"], "label": cats[i % len(cats)]}, conn=conn, user=user)
                    if status != 200:
                        errors.append(f"label {status} {r}")
                        return
                    counts[k] += 1
        finally:
            conn.close()

    threads = [threading.Thread(target=work, args=(k,), daemon=True) for k in range(annotators)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(60)
    elapsed = time.perf_counter() - t0
    time.sleep(0.5)  # the last access lines
    with open(server.log_path, "rb") as f:
        f.seek(start_at)
        text = f.read().decode("utf-8", "replace")
    labels = server_times(text, "/labels")
    batches = server_times(text, "/batch")
    return {"annotators": annotators, "pace": pace, "labels": sum(counts),
            "labels_per_s": sum(counts) / elapsed,
            "label_p50": pct(labels, 50), "label_p99": pct(labels, 99),
            "label_max": max(labels) * 1000 if labels else float("nan"),
            "batch_p50": pct(batches, 50), "batch_p99": pct(batches, 99),
            "errors": errors[:3]}


def concurrency_scenario(rows: int, seconds: float, tmp: Path, pace: float,
                         database_url: str | None = None, overlap: int = 1) -> list[dict]:
    """1, 8 and 32 annotators over HTTP on a fresh project of `rows` rows, paced then flat
    out; `overlap`: the webapp's `annotators_per_item`."""
    rng = np.random.default_rng(0)
    params = {"unlabeled": "pool", "categories": CATS, "labels_ds": "labels",
              "metadata_ds": "metadata"}
    if overlap > 1:
        params["annotators_per_item"] = overlap
    project = Project.init(tmp / "project", database_url=database_url, config={
        "webapps": {WEBAPP: {"type": "ml-assisted-labeling/tabular-labeling",
                             "params": params}}})
    pool = pd.DataFrame({f"f{i}": rng.normal(size=rows) for i in range(8)})
    pool["group"] = rng.choice(["a", "b", "c", "d"], size=rows)
    project.dataset("pool", create=True).write(pool)
    server = Server(tmp / "project")
    try:
        status, _ = server.request("GET", f"/api/v1/webapps/{WEBAPP}/batch?size=1")
        assert status == 200, status
        time.sleep(2.0)
        out = []
        for phase_pace in (pace, None):
            for n in (1, 8, 32):
                # Settle: a background index or queue write of the previous phase is done.
                deadline = time.time() + 300
                while time.time() < deadline:
                    status, cfg = server.request("GET", f"/api/v1/webapps/{WEBAPP}/config")
                    if status == 200 and not cfg.get("preparing"):
                        break
                    time.sleep(0.5)
                out.append(concurrent_phase(server, n, seconds, phase_pace))
                print(f"  {regime(phase_pace)}, {n} annotator(s): "
                      f"{out[-1]['labels_per_s']:.0f} labels/s, label p99 "
                      f"{out[-1]['label_p99']:.1f} ms", flush=True)
        return out
    finally:
        server.stop()


def fresh_database(url: str, tag: str) -> str:
    """A new, empty database on the server of `url` (PostgreSQL), for one revision's run: the
    baseline and this revision never share tables or statistics. SQLite URLs are kept."""
    if not url.startswith("postgresql"):
        return url
    name = f"bench_{tag}_{os.getpid()}"
    with sa.create_engine(url, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    return sa.engine.make_url(url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin: str | None, url: str | None) -> None:
    """Drop the database of `url` that `fresh_database(admin, ...)` made (nothing for SQLite
    or None)."""
    if not url or not url.startswith("postgresql"):
        return
    name = sa.engine.make_url(url).database
    with sa.create_engine(admin, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def regime(pace: float | None) -> str:
    return f"paced {pace:g} s" if pace else "flat out"


def concurrency_main(args: argparse.Namespace) -> None:
    rows = args.rows if args.rows != 1_000_000 else 100_000
    tmp = Path(tempfile.mkdtemp(prefix="bench-concurrency-"))
    results: dict[str, list[dict]] = {}
    try:
        if args.child:
            Path(args.child).write_text(json.dumps(concurrency_scenario(
                rows, args.seconds, tmp, args.pace, args.database_url, args.overlap)))
            return
        if args.baseline:
            base = Path(args.baseline).resolve()
            target = tmp / "baseline.json"
            print(f"baseline: {base} ...", flush=True)
            url = fresh_database(args.database_url, "base") if args.database_url else None
            subprocess.run([str(base / ".venv/bin/python"), __file__, "--concurrency",
                            "--rows", str(rows), "--seconds", str(args.seconds),
                            "--pace", str(args.pace), "--child", str(target)]
                           + (["--database-url", url] if url else []), check=True,
                           env=dict(os.environ, BENCH_LIB=str(base / "python-lib")))
            drop_database(args.database_url, url)  # no autovacuum of it in the next run
            results["baseline"] = json.loads(target.read_text())
        print("this revision ...", flush=True)
        url = fresh_database(args.database_url, "this") if args.database_url else None
        results["this"] = concurrency_scenario(rows, args.seconds, tmp / "this", args.pace, url,
                                               args.overlap)
        drop_database(args.database_url, url)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\n{rows:,}-row pool, annotators labeling over HTTP for {args.seconds:.0f} s each; "
          "server-side times (ms); " + (
              f"database {args.database_url.split('://')[0]}" if args.database_url else
              f"SQLite, PRAGMA synchronous="
              f"{os.environ.get('LABELLOOP_SQLITE_SYNCHRONOUS', 'FULL')}"))
    head = f"{'':12}{'regime':>14}{'annotators':>11}{'labels/s':>10}{'label p50':>11}" \
           f"{'label p99':>11}{'label max':>11}{'batch p50':>11}{'batch p99':>11}"
    print(head)
    for name, rows_ in results.items():
        for r in rows_:
            print(f"{name:12}{regime(r.get('pace')):>14}{r['annotators']:>11}"
                  f"{r['labels_per_s']:>10.0f}"
                  f"{r['label_p50']:>11.1f}{r['label_p99']:>11.1f}{r['label_max']:>11.1f}"
                  f"{r['batch_p50']:>11.1f}{r['batch_p99']:>11.1f}"
                  + (f"  errors: {r['errors']}" if r["errors"] else ""))
    print("\n" + json.dumps(results, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--dir", default=None, help="project directory (default: a temp dir)")
    parser.add_argument("--labels", type=int, default=1000, help="labels timed per phase")
    parser.add_argument("--concurrency", action="store_true",
                        help="1, 8 and 32 annotators at once over HTTP (default 100k rows)")
    parser.add_argument("--seconds", type=float, default=15.0,
                        help="--concurrency: seconds of labeling per phase")
    parser.add_argument("--pace", type=float, default=0.5,
                        help="--concurrency: seconds between one annotator's key presses in "
                             "the paced regime (mean of exponential gaps)")
    parser.add_argument("--overlap", type=int, default=1,
                        help="--concurrency: annotators_per_item of this revision's webapp "
                             "(the baseline runs with 1)")
    parser.add_argument("--database-url", default=None,
                        help="--concurrency: the project's database (e.g. the PostgreSQL URL "
                             "that .ci/with-postgres gives in $LABELLOOP_TEST_POSTGRES); "
                             "default: the project's SQLite file")
    parser.add_argument("--baseline", default=None,
                        help="--concurrency: worktree of the previous revision with its .venv")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.concurrency:
        concurrency_main(args)
        return
    sync = os.environ.get("LABELLOOP_SQLITE_SYNCHRONOUS", "FULL")
    print(f"PRAGMA synchronous={sync}; pool of {args.rows:,} rows")
    tmp = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bench-engine-"))
    directory = tmp / "project"
    if directory.exists():
        shutil.rmtree(directory)
    project = make_project(directory, args.rows)
    engine = engine_for(project)
    t = time.perf_counter()
    engine.refresh(wait=True)
    print(f"engine index + queue built: {time.perf_counter() - t:.1f} s")
    results = {}
    for target in (1_000, 100_000):
        target = min(target, args.rows // 2)  # small trial runs
        have = engine.stats("x")["labeled"]
        if target > have:
            t = time.perf_counter()
            bulk_label(engine, target - have)
            print(f"bulk-recorded {target - have:,} labels: {time.perf_counter() - t:.1f} s")
        inproc = measure_inprocess(engine, args.labels, 100)
        server = Server(directory)
        try:
            over_http = measure_http(server, args.labels, 100)
        finally:
            server.stop()
        base = baseline(project, 3)
        base_rows = baseline(project, 3, storage="rows")
        results[len(results)] = (inproc, over_http, base)
        print(f"\n-- {target:,} labels recorded (now {engine.stats('x')['labeled']:,}) --")
        print(f"{'':28}{'p50 ms':>10}{'p99 ms':>10}")
        for name, series in (("label, in-process", inproc["label"]),
                             ("batch of 20, in-process", inproc["batch"]),
                             ("label, HTTP", over_http["label"]),
                             ("batch of 20, HTTP", over_http["batch"]),
                             ("baseline: rewrite (write())", base),
                             ("baseline: rewrite, rows", base_rows)):
            print(f"{name:28}{pct(series, 50):10.2f}{pct(series, 99):10.2f}")
        for name, series in (("write() default", base), ("row storage", base_rows)):
            speedup = np.median(series) / np.median(inproc["label"])
            print(f"recording a label: {speedup:,.0f}x faster than the baseline, {name} "
                  "(medians)")
    if len(results) == 2:
        print("\n-- growth from 1k to 100k labels (p99 ratio) --")
        for i, name in ((0, "in-process"), (1, "HTTP")):
            for kind in ("label", "batch"):
                lo, hi = results[0][i][kind], results[1][i][kind]
                print(f"{kind:6} {name:11} {pct(hi, 99) / pct(lo, 99):.2f}x")
    if not args.dir:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
