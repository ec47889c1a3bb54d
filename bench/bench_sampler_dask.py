"""Query Sampler at 10M rows: the local engine against the Dask engine on a LocalCluster of 2.

Setup (in a child): a project whose dataset `pool` holds 10,000,000 rows x 10 float64
features (column-wise chunk files, written 1M rows at a time), `pool_1m` its first
1,000,000 rows, 3,000 labeled rows of 3 classes and a logistic-regression model trained by
the Train classifier recipe.

Measured, each run in its own child process (imports warm before the clock starts):
- local 1M / local 10M: the recipe (engine local, top 1,000) on `pool_1m` / `pool`: wall
  time and peak RSS of the child (os.wait4): the bounded-memory check (flat from 1M to 10M);
- dask 10M: the recipe (engine dask, top 1,000) on `pool` with a LocalCluster of 2 worker
  processes (1 thread each, 127.0.0.1): wall time (cluster start excluded and shown apart),
  the client's peak RSS and each worker's peak RSS (read on the workers at the end);
  partitions per second, and from it the projected time of 100M rows on 2, 8 and 32 such
  workers (linear in workers: each partition is independent, the tree reduction is O(k)).
Both engines' queries are compared (same rows, same order). Prints; asserts nothing.

    python bench/bench_sampler_dask.py [--rows 10000000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python-lib"))

N_FEATURES, N_CLASSES, N_LABELED, TOP, PIECE = 10, 3, 3_000, 1_000, 1_000_000
CHUNK = 100_000
GIB = 1024**3


def _columns() -> list[str]:
    return [f"f{i:02d}" for i in range(N_FEATURES)]


def setup(directory: Path, rows: int) -> dict:
    import pandas as pd

    from labelloop.flow import run_recipe
    from labelloop.project import Project

    def sampler(pool: str, out: str, engine: str) -> dict:
        return {"type": "ml-assisted-labeling/query-sampler",
                "inputs": {"saved_model": ["clf"], "unlabeled_samples": [pool]},
                "outputs": {"queries": [out]},
                "params": {"strategy": "margin", "max_queries": TOP, "chunk_size": CHUNK,
                           "engine": engine, "dask_workers": 2}}

    config = {
        "datasets": {n: {} for n in ("pool", "pool_1m", "labels", "q_local_1m", "q_local",
                                     "q_dask")},
        "models": {"clf": {}},
        "recipes": {
            "train": {"type": "ml-assisted-labeling/train-classifier",
                      "inputs": {"labels": ["labels"]}, "outputs": {"model": ["clf"]},
                      "params": {"label_col": "label"}},
            "local_1m": sampler("pool_1m", "q_local_1m", "local"),
            "local": sampler("pool", "q_local", "local"),
            "dask": sampler("pool", "q_dask", "dask"),
        },
    }
    project = Project.init(directory / "project", config=config)
    rng = np.random.default_rng(7)
    weights = rng.standard_normal((N_FEATURES, N_CLASSES))
    t0 = time.perf_counter()
    labels = []
    for start in range(0, rows, PIECE):
        X = rng.standard_normal((min(PIECE, rows - start), N_FEATURES))
        frame = pd.DataFrame(X, columns=_columns(), copy=False)
        if start == 0:
            project.dataset("pool").write(frame)
            project.dataset("pool_1m").write(frame)
            picked = rng.choice(len(frame), size=N_LABELED, replace=False)
            logits = X[picked] @ weights + rng.normal(scale=2.0, size=(N_LABELED, N_CLASSES))
            labels = frame.iloc[picked].reset_index(drop=True)
            labels["label"] = np.array(["a", "b", "c"])[logits.argmax(axis=1)]
            labels["label_id"] = np.arange(N_LABELED)
        else:
            project.dataset("pool").append(frame)
    t_write = time.perf_counter() - t0
    project.dataset("labels").write(labels)
    run_recipe(project, "train", show_progress=False)
    return {"write_s": t_write, "storage": project.dataset("pool").storage,
            "chunk_files": len(project.dataset("pool").chunk_files())}


def child_run(directory: Path, recipe: str) -> dict:
    import labeling.distributed  # noqa: F401 - imports warm
    import labeling.sampling  # noqa: F401
    from labeling import distributed
    from labelloop.flow import run_recipe
    from labelloop.project import Project

    project = Project.open(directory / "project")
    out: dict = {}
    if recipe == "dask":
        from contextlib import nullcontext

        # Time the cluster start apart; keep the client to read the workers' peaks after.
        t0 = time.perf_counter()
        cm = distributed.dask_client(None, 2)
        client = cm.__enter__()
        # Workers import the scoring code once (a long-lived cluster has it loaded).
        client.run(lambda: __import__("labeling.distributed") and None)
        out["cluster_start_s"] = time.perf_counter() - t0
        distributed.dask_client = lambda scheduler, workers: nullcontext(client)
    t0 = time.perf_counter()
    record = run_recipe(project, recipe, show_progress=False)
    out["seconds"] = time.perf_counter() - t0
    out["rows_out"] = record["details"]["queries"]
    if recipe == "dask":
        import resource

        peaks = client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
        out["worker_peaks"] = sorted(peaks.values())
        cm.__exit__(None, None, None)
    queries = project.dataset({"local_1m": "q_local_1m", "local": "q_local",
                               "dask": "q_dask"}[recipe]).read()
    out["checksum"] = [float(queries["uncertainty"].sum()),
                       queries.iloc[:5, :3].to_numpy().tolist()]
    return out


def run_child(directory: Path, which: str, rows: int = 0) -> dict:
    proc = subprocess.Popen([sys.executable, __file__, "--child", which, "--keep",
                             str(directory), "--rows", str(rows)], stdout=subprocess.PIPE,
                            text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"child {which!r} failed")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss"] = usage.ru_maxrss * 1024
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--keep", help="work directory to use and keep")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        directory = Path(args.keep)
        result = setup(directory, args.rows) if args.child == "setup" \
            else child_run(directory, args.child)
        print(json.dumps(result))
        return
    directory = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-dask-"))
    directory.mkdir(parents=True, exist_ok=True)
    try:
        if not (directory / "project").exists():
            info = run_child(directory, "setup", args.rows)
            print(f"setup: {args.rows:,} rows x {N_FEATURES} float64 written in "
                  f"{info['write_s']:.0f}s ({info['storage']} storage, {info['chunk_files']} "
                  f"chunk files); chunk_size {CHUNK:,}; strategy margin, top {TOP:,}")
        runs = {name: run_child(directory, name) for name in ("local_1m", "local", "dask")}
        n_parts = -(-args.rows // CHUNK)
        print(f"\n{'run':<22}{'time s':>8}{'peak RSS':>10}{'per worker':>16}{'rows out':>9}")
        for name, label in (("local_1m", "local, 1M rows"), ("local", f"local, {args.rows:,}"),
                            ("dask", f"dask 2 workers, {args.rows:,}")):
            r = runs[name]
            workers = " / ".join(f"{p / GIB:.2f}" for p in r.get("worker_peaks", [])) or "-"
            print(f"{label:<22}{r['seconds']:>8.1f}{r['peak_rss'] / GIB:>8.2f}GB"
                  f"{workers:>14}GB{r['rows_out']:>9,}")
        same = runs["local"]["checksum"] == runs["dask"]["checksum"]
        print(f"\nsame queries local vs dask (sum of uncertainty, first rows): {same}")
        print(f"local peak RSS 1M -> {args.rows / 1e6:.0f}M: "
              f"{runs['local_1m']['peak_rss'] / GIB:.2f} -> {runs['local']['peak_rss'] / GIB:.2f} GB")
        d = runs["dask"]
        rate = n_parts / d["seconds"]
        print(f"dask: cluster start + imports on the workers {d['cluster_start_s']:.1f}s (not in the time); {n_parts} "
              f"partitions in {d['seconds']:.1f}s = {rate:.2f} partitions/s on 2 workers "
              f"({rate / 2:.2f} per worker)")
        for w in (2, 8, 32):
            print(f"  projected 100M rows ({-(-100_000_000 // CHUNK)} partitions) on {w} "
                  f"workers: {(100_000_000 / CHUNK) / (rate / 2 * w):.0f}s")
        print("note: this machine has 2 cores shared with other work; a worker per core.")
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
