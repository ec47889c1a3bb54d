"""Span learning: the span tagger's learning curves under query strategies, its training
time, and the Query Sampler on 100,000 sentences. Prints figures; asserts nothing.

1. Learning curves. A simulated annotator labels the spans demo's 400 sentences (their
   ground truth, as `labelloop demo --data spans` writes it) in batches of 20, from 20 to
   300 labels. The first batch is random (seeded); after each batch the tagger is retrained
   on the labels so far, scored on 300 held-out sentences (generated with another seed)
   with seqeval's entity-level micro F1, and the next 20 are the unlabeled sentences the
   strategy ranks first (`labeling.spans.sampling.score_texts`, as the Query Sampler does),
   or 20 at random. AULC: the area under F1 over labels 20..300, divided by that range
   (the mean F1 of the curve). Over 5 seeds, for each strategy and model family.
2. Time to train on 300 sentences: the fit alone, and with the 5-fold cross-validation the
   Train span tagger recipe records.
3. The Query Sampler recipe end to end on 100,000 generated sentences (a project, a dataset,
   the CRF trained on 300 labels): wall time and the child process's peak RSS, for the full
   ranking and for the top 1,000 (and, with --full, the top 1,000 of 20,000 sentences: with
   a cap memory stays flat as the pool grows).

4. `batch` over HTTP with span suggestions: the spans demo project with a pool of 20,000
   generated sentences, 300 of them labeled (their truth, through the engine), the demo's
   every-n scenario run once (Train span tagger, Query Sampler: every item has predicted
   spans), then a `labelloop serve` and 8 annotators in turn, each fetching a batch of 20
   (timed: request to parsed answer) and accepting its suggestions (`POST labels` with the
   suggested spans, as Enter does on the page). p50 / p99 / max of `batch`.

    python bench/bench_span_learning.py              # margin vs random, both families
                                                     # (~3 min of CPU; ~10 min wall on a
                                                     # machine shared by 8)
    python bench/bench_span_learning.py --full       # every strategy, both families, 5 seeds
    python bench/bench_span_learning.py --skip-sampler --seeds 2
    python bench/bench_span_learning.py --only-batch  # section 4 alone (~1 min)
"""

from __future__ import annotations

import os

# One BLAS thread per process: small fits on a shared machine are far slower with a pool.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python-lib"))

BATCH, FIRST, LAST = 20, 20, 300
HELD_OUT, HELD_OUT_SEED = 300, 12345
STRATEGIES = ("confidence", "margin", "entropy", "sequence_confidence", "random")
DEFAULT_STRATEGIES = ("margin", "random")
GIB = 1024**3


# --------------------------------------------------------------------------- learning curves


def pool_and_held_out():
    from labeling.demo_data import spans_data
    from labeling.spans.demo_data import ENTITY_TYPES, generate
    from labeling.spans.training import bio_tags

    data = spans_data()  # the demo's pool and ground truth
    texts = data.rows["text"].tolist()
    spans = [json.loads(v) for v in data.truth["label"]]
    tags, _ = bio_tags(texts, spans)
    held_texts, held_spans = generate(HELD_OUT, HELD_OUT_SEED)
    held_tags, _ = bio_tags(held_texts, held_spans)
    return texts, tags, held_texts, held_tags, sorted(ENTITY_TYPES)


def curve(family: str, strategy: str, seed: int, texts, tags, held_texts, held_tags, types
          ) -> list[float]:
    """Entity F1 on the held-out sentences after each batch of 20 labels."""
    from seqeval.metrics import f1_score

    from labeling.spans.sampling import score_texts, span_strategies
    from labeling.spans.tagger import SpanTagger

    rng = np.random.default_rng(seed)
    registry = span_strategies()
    order = rng.permutation(len(texts))
    labeled = list(order[:FIRST])
    f1s = []
    while True:
        model = SpanTagger(family, random_state=seed).fit(
            [texts[i] for i in labeled], [tags[i] for i in labeled], types)
        f1s.append(float(f1_score(held_tags, model.predict_tags(held_texts))))
        if len(labeled) >= LAST:
            return f1s
        rest = np.setdiff1d(np.arange(len(texts)), labeled)
        if strategy == "random":
            picks = rest[np.isin(rest, order[len(labeled):len(labeled) + BATCH])]
            picks = [i for i in order if i in set(picks)]
        else:
            scores = score_texts(model, [texts[i] for i in rest], strategy, registry,
                                 np.random.default_rng([seed, len(labeled)]))["uncertainty"]
            best = np.lexsort((rest, -scores))[:BATCH]  # ties by position, as the sampler
            picks = list(rest[best])
        labeled += picks


def aulc(f1s: list[float]) -> float:
    labels = np.arange(FIRST, FIRST + BATCH * len(f1s), BATCH)
    return float(np.trapezoid(f1s, labels) / (labels[-1] - labels[0]))


def learning_curves(families, strategies, seeds) -> None:
    texts, tags, held_texts, held_tags, types = pool_and_held_out()
    steps = list(range(FIRST, LAST + 1, BATCH))
    print(f"learning curves: the spans demo's {len(texts)} sentences, batches of {BATCH} from "
          f"{FIRST} to {LAST} labels, entity F1 (seqeval, micro) on {HELD_OUT} held-out "
          f"sentences, seeds {list(seeds)}")
    results: dict[tuple[str, str], list[list[float]]] = {}
    for family in families:
        for strategy in strategies:
            t0 = time.perf_counter()
            runs = [curve(family, strategy, s, texts, tags, held_texts, held_tags, types)
                    for s in seeds]
            results[family, strategy] = runs
            mean = np.mean(runs, axis=0)
            areas = [aulc(r) for r in runs]
            print(f"  {family:<7} {strategy:<20} AULC {np.mean(areas):.4f} ± "
                  f"{np.std(areas):.4f}   F1@{steps[0]} {mean[0]:.3f}  F1@100 "
                  f"{mean[steps.index(100)]:.3f}  F1@{steps[-1]} {mean[-1]:.3f}   "
                  f"({time.perf_counter() - t0:.0f}s)", flush=True)
    print()
    print("mean F1 per step (labels: " + " ".join(f"{s:>5}" for s in steps) + ")")
    for (family, strategy), runs in results.items():
        print(f"  {family:<7} {strategy:<20} " + " ".join(f"{v:.3f}" for v in
                                                         np.mean(runs, axis=0)))
    print()
    for family in families:
        if (family, "random") not in results:
            continue
        base = [aulc(r) for r in results[family, "random"]]
        for strategy in strategies:
            if strategy == "random":
                continue
            areas = [aulc(r) for r in results[family, strategy]]
            wins = sum(a > b for a, b in zip(areas, base, strict=True))
            print(f"  {family} {strategy} vs random: AULC {np.mean(areas) - np.mean(base):+.4f}"
                  f" (higher on {wins} of {len(base)} seeds)")
    print()


def train_times(families) -> None:
    from labeling.demo_data import spans_data
    from labeling.spans.training import train_span_tagger

    data = spans_data()
    labels = data.rows.iloc[:300].assign(label=data.truth["label"].iloc[:300].tolist())
    for family in families:
        t0 = time.perf_counter()
        train_span_tagger(labels, algorithm=family, cv=False)
        fit = time.perf_counter() - t0
        t0 = time.perf_counter()
        result = train_span_tagger(labels, algorithm=family, cv=True)
        both = time.perf_counter() - t0
        print(f"train on 300 sentences, {family}: fit {fit:.2f}s; with 5-fold CV (the "
              f"recipe) {both:.2f}s, CV entity F1 {result.metrics['f1']:.3f}")
    print()


# --------------------------------------------------------------------------- Query Sampler


def sampler_setup(directory: Path, rows: int) -> dict:
    import pandas as pd

    from labeling.spans.demo_data import generate
    from labeling.spans.tokens import dumps_spans
    from labelloop.flow import run_recipe
    from labelloop.project import Project

    plugin = "ml-assisted-labeling"
    config = {
        "datasets": {"pool": {}, "labels": {}, "queries": {}},
        "models": {"tagger": {}},
        "recipes": {
            "train": {"type": f"{plugin}/train-span-tagger", "inputs": {"labels": ["labels"]},
                      "outputs": {"model": ["tagger"]},
                      "params": {"algorithm": "crf", "cross_validate": False}},
            "sample": {"type": f"{plugin}/query-sampler",
                       "inputs": {"saved_model": ["tagger"], "unlabeled_samples": ["pool"]},
                       "outputs": {"queries": ["queries"]},
                       "params": {"strategy": "confidence"}},
            "sample_top": {"type": f"{plugin}/query-sampler",
                           "inputs": {"saved_model": ["tagger"], "unlabeled_samples": ["pool"]},
                           "outputs": {"queries": ["queries"]},
                           "params": {"strategy": "confidence", "max_queries": 1000}},
        },
    }
    project = Project.init(directory / "project", key="SPANBENCH", config=config)
    texts, spans = generate(rows, seed=7)
    project.dataset("pool").write(pd.DataFrame({"data_id": [f"s{i}" for i in range(rows)],
                                                "text": texts}))
    train_texts, train_spans = generate(300, seed=8)
    project.dataset("labels").write(pd.DataFrame({
        "text": train_texts, "label": [dumps_spans(s) for s in train_spans]}))
    run_recipe(project, "train", show_progress=False)
    return {"rows": rows}


def sampler_child(directory: Path, recipe: str) -> dict:
    import labeling.spans.sampling  # noqa: F401 - imports warm
    from labelloop.flow import run_recipe
    from labelloop.project import Project

    project = Project.open(directory / "project")
    t0 = time.perf_counter()
    record = run_recipe(project, recipe, show_progress=False)
    return {"seconds": time.perf_counter() - t0, "queries": record["details"]["queries"]}


def run_child(directory: Path, which: str, rows: int = 0) -> dict:
    """One step in a fresh interpreter; its peak RSS comes from os.wait4."""
    proc = subprocess.Popen([sys.executable, __file__, "--child", which, "--keep",
                             str(directory), "--rows", str(rows)], stdout=subprocess.PIPE,
                            text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"child {which!r} failed")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss"] = usage.ru_maxrss * 1024  # KiB on Linux
    return result


def sampler(rows: int, full: bool) -> None:
    sizes = [rows] + ([20_000] if full and rows > 20_000 else [])
    for n in sizes:
        directory = Path(tempfile.mkdtemp(prefix="bench-spans-"))
        try:
            t0 = time.perf_counter()
            run_child(directory, "setup", n)
            print(f"Query Sampler on {n:,} generated sentences (CRF trained on 300, strategy "
                  f"confidence; setup {time.perf_counter() - t0:.0f}s)")
            variants = [("full ranking", "sample"), ("top 1,000", "sample_top")]
            if n != rows:
                variants = variants[1:]
            for label, recipe in variants:
                r = run_child(directory, recipe)
                print(f"  {label:<13} {r['seconds']:7.1f}s  {n / r['seconds']:8,.0f} "
                      f"sentences/s   peak RSS {r['peak_rss'] / GIB:.2f} GB   "
                      f"{r['queries']:,} queries written")
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    print()


# --------------------------------------------------------------------------- batch over HTTP


def batch_over_http(pool_rows: int = 20_000, batches: int = 100, labeled: int = 300) -> None:
    import pandas as pd
    from bench_engine import Server, pct

    from labeling import demo
    from labeling.engine import LabelingEngine
    from labeling.settings import parse_settings
    from labeling.spans.demo_data import generate
    from labelloop import scenarios

    directory = Path(tempfile.mkdtemp(prefix="bench-spans-batch-"))
    server = None
    try:
        t0 = time.perf_counter()
        project = demo.create_demo(directory / "project", demo.SPANS, n=20)
        texts, spans = generate(pool_rows, seed=21)
        ids = [f"sentence-{i:06d}" for i in range(pool_rows)]
        project.dataset("unlabeled").write(pd.DataFrame({"data_id": ids, "text": texts}))
        truth = dict(zip(ids, spans, strict=True))
        (webapp, app), = project.config["webapps"].items()
        cfg = parse_settings(app["params"], "text", webapp, project, kind="spans")
        engine = LabelingEngine(project, cfg, check_interval=0.0, background=False)
        done = 0
        while done < labeled:
            for item in engine.batch("teacher", 20)["items"]:
                engine.label("teacher", item["id"], truth[item["id"]])
                done += 1
        run = scenarios.run_scenario(project, demo.SCENARIO)
        if run["status"] != "SUCCESS":
            raise SystemExit(f"the scenario failed: {run['error']}")
        project.engine.dispose()
        setup = time.perf_counter() - t0
        server = Server(project.dir)
        base = f"/api/v1/webapps/{webapp}"
        conns = [http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
                 for _ in range(8)]
        # Until the model's queue is ready the server serves the previous order: wait for it.
        deadline = time.monotonic() + 300
        while True:
            _, config = server.request("GET", f"{base}/config", conn=conns[0])
            if config.get("queue_session") == 1 and not config.get("preparing"):
                break
            if time.monotonic() > deadline:
                raise SystemExit(f"the model's queue was never ready: {config}")
            time.sleep(0.2)
        times, spans_served = [], 0
        for b in range(batches):
            user, conn = f"annotator{b % 8}", conns[b % 8]
            t = time.perf_counter()
            status, answer = server.request("GET", f"{base}/batch?size=20", conn=conn,
                                            user=user)
            times.append(time.perf_counter() - t)
            if status != 200:
                raise SystemExit(f"batch: {status} {answer}")
            for item in answer["items"]:
                suggestion = item["suggestion"] or {}
                if suggestion.get("model_version") != 1:
                    raise SystemExit(f"item {item['id']} came without the model's spans")
                accepted = [{k: x[k] for k in ("start", "end", "label")}
                            for x in suggestion["spans"]]
                spans_served += len(accepted)
                status, _ = server.request("POST", f"{base}/labels", {
                    "id": item["id"], "spans": accepted}, conn=conn, user=user)
                if status != 200:
                    raise SystemExit(f"labels: {status}")
        for conn in conns:
            conn.close()
        print(f"batch over HTTP with span suggestions: {pool_rows:,} sentences, {labeled} "
              f"labeled, CRF v1 (setup {setup:.0f}s); {batches} batches of 20 by 8 "
              f"annotators, each accepted ({spans_served:,} suggested spans served)")
        print(f"  batch p50 {pct(times, 50):.1f} ms   p99 {pct(times, 99):.1f} ms   "
              f"max {max(times) * 1000:.1f} ms")
        print(f"  labels dataset: {project.dataset('labels').count():,} rows")
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", action="store_true",
                        help="every strategy, both model families, and the flat-memory check")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--families", default=None,
                        help="comma-separated: crf, logreg (default: crf; --full: both)")
    parser.add_argument("--strategies", default=None, help=f"comma-separated of {STRATEGIES}")
    parser.add_argument("--rows", type=int, default=100_000, help="sentences the sampler scores")
    parser.add_argument("--skip-curves", action="store_true")
    parser.add_argument("--skip-sampler", action="store_true")
    parser.add_argument("--skip-batch", action="store_true")
    parser.add_argument("--only-batch", action="store_true",
                        help="only `batch` over HTTP with span suggestions (section 4)")
    parser.add_argument("--keep", help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        directory = Path(args.keep)
        result = sampler_setup(directory, args.rows) if args.child == "setup" \
            else sampler_child(directory, args.child)
        print(json.dumps(result))
        return
    if args.only_batch:
        batch_over_http()
        return
    families = args.families.split(",") if args.families else \
        (["crf", "logreg"] if args.full else ["crf"])
    strategies = args.strategies.split(",") if args.strategies else \
        (list(STRATEGIES) if args.full else list(DEFAULT_STRATEGIES))
    if not args.skip_curves:
        learning_curves(families, strategies, range(args.seeds))
        if not args.full and "logreg" not in families:
            # The other family, on the two ends of the comparison only (--full: all).
            learning_curves(["logreg"], list(DEFAULT_STRATEGIES), range(args.seeds))
    train_times(["crf", "logreg"])
    if not args.skip_sampler:
        sampler(args.rows, args.full)
    if not args.skip_batch:
        batch_over_http()


if __name__ == "__main__":
    main()
