"""Query Sampler end to end on 1,000,000 rows x 50 numeric features, against the bare pipeline.

Setup (in this process): a project whose dataset `pool` holds 1,000,000 rows of 50 float64
features (stored column-wise by Dataset.write), 3,000 labeled rows of 3 classes, and a
logistic-regression model trained on them by the Train classifier recipe.

Measured, each in its own child process: wall time and CPU time (user + sys) of the work
itself, imports done beforehand in both; peak RSS of the whole child read with os.wait4,
absolute, interpreter and imports included. The setup runs in a child too, since a forked
child inherits its parent's RSS high-water mark.

- `qs`: the Query Sampler recipe run through labelloop.flow.run_recipe (reads the pool
  from the store, scores it, ranks it, writes the queries dataset, bumps the session);
- `bare`: the same model's predict_proba + margin + ranking on the same rows already
  held in memory (loaded from a .npy file before the clock starts).

Both in two variants: the full ranking (the recipe's default, every row written) and the
top 1,000 (max_queries=1000; np.argpartition in the bare pipeline). Targets: the recipe
within 2x of the bare pipeline's time, peak RSS under 1.5 GB. Prints; asserts nothing.

    python bench/bench_query_sampler.py [--rows N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python-lib"))

N_FEATURES, N_CLASSES, N_LABELED, TOP = 50, 3, 3_000, 1_000
GIB = 1024**3


def _columns() -> list[str]:
    return [f"f{i:02d}" for i in range(N_FEATURES)]


def setup(directory: Path, rows: int) -> dict:
    """Create the project, its pool, labels and trained model; returns setup timings."""
    import pandas as pd

    from labelloop.flow import run_recipe
    from labelloop.project import Project

    sampler = {"type": "ml-assisted-labeling/query-sampler",
               "inputs": {"saved_model": ["clf"], "unlabeled_samples": ["pool"]},
               "outputs": {"queries": ["queries"]}, "params": {"strategy": "margin"}}
    config = {
        "datasets": {"pool": {}, "labels": {}, "queries": {}, "queries_top": {}},
        "models": {"clf": {}},
        "recipes": {
            "train": {"type": "ml-assisted-labeling/train-classifier",
                      "inputs": {"labels": ["labels"]}, "outputs": {"model": ["clf"]},
                      "params": {"label_col": "label"}},
            "sample": sampler,
            "sample_top": {**sampler, "outputs": {"queries": ["queries_top"]},
                           "params": {"strategy": "margin", "max_queries": TOP}},
        },
    }
    project = Project.init(directory / "project", config=config)
    rng = np.random.default_rng(7)
    X = rng.standard_normal((rows, N_FEATURES))
    np.save(directory / "pool.npy", X)
    pool = pd.DataFrame(X, columns=_columns(), copy=False)
    t0 = time.perf_counter()
    project.dataset("pool").write(pool)
    t_write = time.perf_counter() - t0
    weights = rng.standard_normal((N_FEATURES, N_CLASSES))
    picked = rng.choice(rows, size=N_LABELED, replace=False)
    logits = X[picked] @ weights + rng.normal(scale=2.0, size=(N_LABELED, N_CLASSES))
    labels = pool.iloc[picked].reset_index(drop=True)
    labels["label"] = np.array(["a", "b", "c"])[logits.argmax(axis=1)]
    labels["label_id"] = np.arange(N_LABELED)
    project.dataset("labels").write(labels)
    del pool, X
    t0 = time.perf_counter()
    record = run_recipe(project, "train", show_progress=False)
    t_train = time.perf_counter() - t0
    return {"write_s": t_write, "train_s": t_train, "storage": project.dataset("pool").storage,
            "model": record["details"]}


# ----------------------------------------------------------------------------- children


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child_qs(directory: Path, recipe: str) -> dict:
    """Run the Query Sampler recipe end to end."""
    import labeling.sampling  # noqa: F401 - imports warm, as in the bare child (and a server)
    from labelloop.flow import run_recipe
    from labelloop.project import Project

    project = Project.open(directory / "project")
    t0, c0 = time.perf_counter(), _cpu()
    record = run_recipe(project, recipe, show_progress=False)
    seconds, cpu = time.perf_counter() - t0, _cpu() - c0
    return {"seconds": seconds, "cpu": cpu, "rows_out": record["details"]["queries"]}


def child_bare(directory: Path, top: bool) -> dict:
    """predict_proba + margin + ranking on rows already in memory."""
    import pandas as pd

    from labeling.training import TRUSTED_TYPES
    from labelloop.project import Project

    project = Project.open(directory / "project")
    pipeline = project.model("clf").load(trusted=TRUSTED_TYPES)
    X = np.load(directory / "pool.npy")
    df = pd.DataFrame(X, columns=_columns(), copy=False)
    t0, c0 = time.perf_counter(), _cpu()
    proba = pipeline.predict_proba(df)
    top2 = np.partition(proba, -2, axis=1)[:, -2:]
    scores = 1.0 - (top2[:, 1] - top2[:, 0])
    if top:
        part = np.argpartition(scores, -TOP)[-TOP:]
        order = part[np.argsort(-scores[part], kind="stable")]
    else:
        order = np.argsort(-scores, kind="stable")
    seconds, cpu = time.perf_counter() - t0, _cpu() - c0
    return {"seconds": seconds, "cpu": cpu, "rows_out": int(order.shape[0])}


def _vm_hwm() -> int | None:
    """This process's peak RSS in bytes (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def run_child(directory: Path, which: str, rows: int = 0) -> dict:
    """Run one step in a fresh interpreter; its peak RSS comes from os.wait4."""
    proc = subprocess.Popen([sys.executable, __file__, "--child", which, "--keep", str(directory),
                             "--rows", str(rows)], stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"child {which!r} failed with exit code {proc.returncode}")
    result = json.loads(out.strip().splitlines()[-1])
    # ru_maxrss is in KiB on Linux.
    result["peak_rss"] = usage.ru_maxrss * 1024
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keep", help="work directory to use and keep")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        directory = Path(args.keep)
        if args.child == "setup":
            result = setup(directory, args.rows)
        elif args.child.startswith("qs"):
            result = child_qs(directory, "sample_top" if args.child == "qs-top" else "sample")
        else:
            result = child_bare(directory, top=args.child == "bare-top")
        result["vm_hwm"] = _vm_hwm()
        print(json.dumps(result))
        return

    directory = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-qs-"))
    directory.mkdir(parents=True, exist_ok=True)
    try:
        # In a child too: a forked child inherits the parent's RSS high-water mark, so the
        # parent stays small (no pool in memory) for the measurements to be the children's.
        info = run_child(directory, "setup", args.rows)
        print(f"Query Sampler end to end: {args.rows:,} rows x {N_FEATURES} float64 features, "
              f"{N_CLASSES}-class logistic regression on {N_LABELED:,} labels, strategy margin")
        print(f"setup: pool written in {info['write_s']:.1f}s ({info['storage']} storage), "
              f"model trained in {info['train_s']:.1f}s (cv accuracy "
              f"{info['model'].get('accuracy') or float('nan'):.3f})")
        print()
        header = (f"{'variant':<14} {'bare s':>7} {'recipe s':>9} {'ratio':>6}   "
                  f"{'bare cpu':>8} {'recipe cpu':>10} {'ratio':>6}   "
                  f"{'bare RSS':>8} {'recipe RSS':>10}   {'rows out':>9}")
        print(header)
        print("-" * len(header))
        for label, qs, bare in (("full ranking", "qs", "bare"),
                                (f"top {TOP:,}", "qs-top", "bare-top")):
            b = run_child(directory, bare)
            q = run_child(directory, qs)
            print(f"{label:<14} {b['seconds']:>7.2f} {q['seconds']:>9.2f} "
                  f"{q['seconds'] / b['seconds']:>5.2f}x   {b['cpu']:>8.2f} {q['cpu']:>10.2f} "
                  f"{q['cpu'] / b['cpu']:>5.2f}x   {b['peak_rss'] / GIB:>6.2f}GB "
                  f"{q['peak_rss'] / GIB:>8.2f}GB   {q['rows_out']:>9,}")
        print()
        print("targets: recipe time <= 2x bare; recipe peak RSS < 1.5 GB. Times: the work "
              "only (imports warm); cpu: user+sys of it (steadier on a busy machine); RSS: "
              "peak of the whole child process, absolute.")
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
