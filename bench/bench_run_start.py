"""Scenario runs forked from the warm parent against fresh interpreters, on the digits demo.

The digits demo (`labelloop demo`) gets 60 labels through a real `labelloop serve` (no
scheduler); then one `Scheduler` runs its `active-learning` scenario (train, sample, label
issues, metrics) RUNS times with each launcher, one after the other in the same process:

- `fresh`: every run a fresh `python -m labelloop.cli` interpreter (how every run started
  before labelloop.scenarios.launcher; `RunLauncher(warm_from=None)`);
- `warm`: the product's launcher: the first run fresh, the second starts the warm parent,
  the later ones fork from it.

Printed per run: wall seconds from `launch` to its end, and the busy CPU-seconds of the
whole machine meanwhile (from /proc/stat: the run's processes and the warm parent's imports).

    .venv/bin/python bench/bench_run_start.py [--runs 5] [--keep DIR]
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
import urllib.request
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python-lib"))

from labeling import demo  # noqa: E402
from labelloop.project import Project  # noqa: E402
from labelloop.scenarios import Scheduler, get_run  # noqa: E402
from labelloop.scenarios.launcher import RunLauncher, run_imports  # noqa: E402
from labelloop.web import free_port  # noqa: E402

WEBAPP = "label-digits"
SCENARIO = "active-learning"
LABELS = 60
USER = {"X-Labelloop-User": "bench", "Content-Type": "application/json"}


def busy_cpu() -> float:
    """Busy CPU-seconds of the machine so far (user, nice, system, irq, softirq)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (fields[0] + fields[1] + fields[2] + fields[5] + fields[6]) / os.sysconf("SC_CLK_TCK")


def label(directory: Path) -> None:
    """LABELS true labels through a real server, as the page sends them."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "labelloop.cli", "--project",
                               str(directory), "serve", "--port", str(port), "--no-scheduler"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    api = f"http://127.0.0.1:{port}/api/v1/webapps/{WEBAPP}"

    def call(path: str, body: dict | None = None) -> dict:
        data = None if body is None else json.dumps(body).encode()
        for _ in range(600):
            try:
                with urllib.request.urlopen(urllib.request.Request(
                        api + path, data=data, headers=USER), timeout=30) as resp:
                    return json.load(resp)
            except OSError:  # not up yet, or the webapp still starting (503)
                time.sleep(0.1)
        raise RuntimeError(f"the server did not answer {path}")

    try:
        truth = dict(pd.read_csv(directory / demo.GROUND_TRUTH, dtype=str).values)
        done = 0
        while done < LABELS:
            for item in call("/batch?size=10")["items"][: LABELS - done]:
                call("/labels", {"id": item["id"], "label": truth[item["id"]]})
                done += 1
    finally:
        server.terminate()
        server.wait(timeout=30)


def measure(project: Project, launcher: RunLauncher, runs: int) -> list[tuple[float, float]]:
    scheduler = Scheduler(project)
    scheduler.launcher = launcher
    out = []
    try:
        for _ in range(runs):
            t0, c0 = time.perf_counter(), busy_cpu()
            run_id = scheduler.launch(SCENARIO)
            scheduler.wait()
            out.append((time.perf_counter() - t0, busy_cpu() - c0))
            record = get_run(project, run_id)
            assert record["status"] == "SUCCESS", record
    finally:
        scheduler.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", type=Path, help="make the demo project here and keep it")
    args = parser.parse_args()
    root = args.keep or Path(tempfile.mkdtemp(prefix="bench-run-start-"))
    try:
        directory = root / "digits"
        demo.create_demo(directory, "image", n=20)
        label(directory)
        project = Project.open(directory)
        python = sys.executable
        results = {
            "fresh": measure(project, RunLauncher(python, warm_from=None), args.runs),
            "warm": measure(project, RunLauncher(python, lambda: run_imports(project.registry)),
                            args.runs),
        }
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    print(f"digits demo, {LABELS} labels, scenario {SCENARIO!r}: each run's wall s / busy CPU-s")
    print(f"{'run':>4} {'fresh interpreters':>20} {'warm parent':>20}")
    for i, (fresh, warm) in enumerate(zip(results["fresh"], results["warm"], strict=True), 1):
        print(f"{i:>4} {fresh[0]:>9.2f} / {fresh[1]:<8.2f} {warm[0]:>9.2f} / {warm[1]:<8.2f}")
    for name, rows in results.items():
        later = rows[2:]
        if later:
            print(f"{name}: runs 3-{len(rows)} mean {sum(r[0] for r in later) / len(later):.2f} s"
                  f" wall, {sum(r[1] for r in later) / len(later):.2f} busy CPU-s")


if __name__ == "__main__":
    main()
