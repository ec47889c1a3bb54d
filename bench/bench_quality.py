"""Team quality with simulated annotators of known error rates: the review queue, annotator
ranking, agreement, and what training on the consensus buys.

    .venv/bin/python bench/bench_quality.py [--only digits|text] [--seed 0]

Three annotators answer at random 5 %, 10 % and 30 % of the time (a random category,
possibly the right one), two of them per item (overlap 2), through the real labeling engine
in-process (`LabelingEngine`), on two pools: the digits as a table (`sklearn.datasets.
load_digits`: 64 pixel columns) and the text demo's sentences (`labeling.demo_data`). A fifth
of each pool is held out, with its true labels, to measure the models.

- Overlap 2: with `annotators_per_item: 2` when the engine has it (each annotator takes
  batches until the queue has nothing left for them); otherwise `labels_per_annotator: true`
  and exactly 2 of the 3 answer each item (round-robin pairs: a+b, b+c, c+a), said in the
  output.
- Consensus: the engine's consensus dataset when it keeps one (`consensus_ds`), else the
  majority of the exported answers with the shared contract's tie rule (first answer).
- Review queue: `GET review`'s queue (`labeling.quality.review`) when there is one, else
  this bench's stand-in (`standin_review_order`): the score of an item is the highest of
  `1 - agreement` of its answers and `1 - quality` of its consensus label in the
  find-label-issues output (the recipe run on the consensus, with every label scored), ties
  by quality. Precision and recall of its first N items against the truth, N = the number
  of truly wrong consensus labels (both are hits / N when the queue has N items or more).
  Target: precision >= 0.6 (PASS/FAIL printed; nothing asserted).
- Annotator ranking: per-annotator agreement with the majority of the others (the agreement
  module's when it is there, else computed here from the exported answers) and CROWDLAB's
  annotator quality (Train classifier, `train_on: weighted`): is the 30 % annotator last?
- Agreement: the agreement module's figures (`labeling.quality.agreement`) beside the same
  statistics computed here from the exported labels (the metadata dataset) with
  `krippendorff`, statsmodels' `fleiss_kappa` and scikit-learn's `cohen_kappa_score`.
- Accuracy on the held-out items of the Train classifier trained on the raw labels (every
  answer), on the consensus, on the CROWDLAB-weighted consensus, and on the consensus after
  reviewing (setting to the truth) the first N items of the review queue.

`--scale 100000`: also times `find_issues` (out-of-fold probabilities + cleanlab) on that many
synthetic table labels with 5 % flipped, with the default bound on the rows per fit and
without it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, os.environ.get("BENCH_LIB") or str(ROOT / "python-lib"))

from labeling.engine import LabelingEngine  # noqa: E402
from labeling.settings import EngineConfig, parse_settings  # noqa: E402
from labeling.training import TRUSTED_TYPES, check_scoring_input  # noqa: E402
from labelloop.flow import run_recipe  # noqa: E402
from labelloop.project import Project  # noqa: E402

PLUGIN = "ml-assisted-labeling"
WEBAPP = "label"
ANNOTATORS = {"a05": 0.05, "a10": 0.10, "a30": 0.30}
FIELDS = {f.name for f in dataclasses.fields(EngineConfig)}
HAS_OVERLAP = "annotators_per_item" in FIELDS
HAS_CONSENSUS = "consensus_ds" in FIELDS


def module(name: str):
    """The module `name` if this checkout has it (helpers' work merges independently)."""
    try:
        return __import__(name, fromlist=["_"])
    except ImportError:
        return None


# --------------------------------------------------------------------------- pools


def digits_pool() -> tuple[pd.DataFrame, np.ndarray, str | None]:
    from sklearn.datasets import load_digits

    d = load_digits()
    rows = pd.DataFrame(d.data, columns=[f"px{i}" for i in range(64)])
    rows.insert(0, "data_id", [f"d{i:04d}" for i in range(len(rows))])
    return rows, d.target.astype(str), None


def text_pool() -> tuple[pd.DataFrame, np.ndarray, str | None]:
    from labeling.demo_data import texts_data

    data = texts_data()
    truth = data.truth.set_index("id")["label"].loc[data.rows["data_id"]].to_numpy()
    return data.rows, truth.astype(str), data.text_column


# --------------------------------------------------------------------------- the project


def make_project(directory: Path, pool: pd.DataFrame, categories: list[str],
                 text_column: str | None) -> tuple[Project, LabelingEngine]:
    params = {"unlabeled": "unlabeled", "categories": {c: None for c in categories},
              "labels_ds": "labels", "metadata_ds": "metadata", "id_column": "data_id",
              "max_reserved": 500}
    if text_column:
        params["text_column"] = text_column
    if HAS_OVERLAP:
        params["annotators_per_item"] = 2
    else:
        params["labels_per_annotator"] = True
    if HAS_CONSENSUS:
        params.update(consensus_ds="consensus", label_issues_ds="label_issues")
    data_type = "text" if text_column else "tabular"
    consensus_in = {"consensus": ["consensus"]}
    config = {
        "datasets": {n: {} for n in ("unlabeled", "labels", "metadata", "consensus",
                                     "label_issues", "heldout")},
        "models": {"clf": {}},
        "recipes": {
            "train": {"type": f"{PLUGIN}/train-classifier",
                      "inputs": {"labels": ["labels"], **consensus_in},
                      "outputs": {"model": ["clf"]},
                      "params": {"data_type": data_type, "cross_validate": False,
                                 "id_column": "data_id"}},
            "issues": {"type": f"{PLUGIN}/find-label-issues",
                       "inputs": {"labels": ["labels"], "saved_model": ["clf"], **consensus_in},
                       "outputs": {"label_issues": ["label_issues"]},
                       "params": {"labels_from": "consensus", "only_issues": False,
                                  "id_column": "data_id"}},
        },
        "webapps": {WEBAPP: {"type": f"{PLUGIN}/{data_type}-labeling", "params": params}},
    }
    project = Project.init(directory, key="QUALITY", config=config)
    project.dataset("unlabeled").write(pool)
    cfg = parse_settings(params, data_type, WEBAPP, project)
    return project, LabelingEngine(project, cfg, check_interval=0.0, background=False)


def noisy(truth: str, error: float, categories: list[str], rng: np.random.Generator) -> str:
    return str(rng.choice(categories)) if rng.random() < error else truth


def simulate(engine: LabelingEngine, truth: dict[str, str], categories: list[str],
             rng: np.random.Generator) -> int:
    """Every item answered by two annotators; the number of answers recorded."""
    names = list(ANNOTATORS)
    answers = 0
    if HAS_OVERLAP:
        served = True
        while served:  # rounds until nobody is served anything (an empty batch may only mean
            served = False  # the rest is reserved by the others for now)
            for who in names:
                items = engine.batch(who, size=50)["items"]
                served = served or bool(items)
                for item in items:
                    engine.label(who, item["id"], noisy(truth[item["id"]], ANNOTATORS[who],
                                                        categories, rng))
                    answers += 1
        return answers
    for i, item_id in enumerate(truth):  # round-robin pairs: a05+a10, a10+a30, a30+a05
        for who in (names[i % 3], names[(i + 1) % 3]):
            engine.label(who, item_id, noisy(truth[item_id], ANNOTATORS[who], categories, rng))
            answers += 1
    return answers


# --------------------------------------------------------------------------- consensus


def exported_answers(project: Project) -> pd.DataFrame:
    """`data_id, annotator, label` of every answer, in the order given (metadata dataset)."""
    meta = project.dataset("metadata").read()
    meta = meta[meta["status"] == "LABELED"].sort_values("label_id", kind="stable")
    return meta[["data_id", "annotator", "label"]].astype(str).reset_index(drop=True)


def majority(answers: pd.DataFrame) -> pd.DataFrame:
    """The consensus dataset of the shared contract: majority, a tie -> the first answer."""
    rows = []
    for item_id, group in answers.groupby("data_id", sort=False):
        votes = group["label"].tolist()
        counts = Counter(votes)
        top, n = counts.most_common(1)[0]
        if list(counts.values()).count(n) > 1:
            top = votes[0]
        rows.append({"data_id": item_id, "label": top,
                     "answers": json.dumps([{"annotator": a, "label": lb} for a, lb in
                                            zip(group["annotator"], votes, strict=True)]),
                     "n_answers": len(votes), "agreement": votes.count(top) / len(votes),
                     "source": "majority", "reviewer": None, "comment": None,
                     "updated": time.time()})
    return pd.DataFrame(rows)


def consensus_of(project: Project, answers: pd.DataFrame) -> tuple[pd.DataFrame, str | None]:
    """The consensus and, when the engine kept it, where from (None: computed here)."""
    ds = project.dataset("consensus")
    if HAS_CONSENSUS and ds.exists() and ds.count() > 0:
        return ds.read(), "the engine's consensus dataset"
    frame = majority(answers)
    ds.write(frame)
    return frame, None


# --------------------------------------------------------------------------- review queue


def standin_review_order(consensus: pd.DataFrame, issues: pd.DataFrame) -> list[str]:
    """Item ids, most suspicious first: max(1 - agreement, 1 - label quality), ties by
    quality. The one function to swap for `GET review`'s queue."""
    quality = issues.assign(data_id=issues["data_id"].astype(str)).set_index("data_id")[
        "quality"]
    frame = consensus.assign(data_id=consensus["data_id"].astype(str))
    frame = frame[frame["source"].astype(str) != "reviewed"]
    q = quality.reindex(frame["data_id"]).fillna(1.0).to_numpy()
    score = np.maximum(1 - frame["agreement"].astype(float).to_numpy(), 1 - q)
    order = np.lexsort((q, -score))
    return frame["data_id"].to_numpy()[order].tolist()


def review_order(engine: LabelingEngine, consensus: pd.DataFrame, issues: pd.DataFrame,
                 n: int, engine_consensus: bool) -> tuple[list[str], str]:
    review = module("labeling.quality.review")
    if review is not None and engine_consensus and hasattr(review, "ReviewQueue"):
        items = review.ReviewQueue(engine).items(size=max(n, 1))["items"]
        return [str(i["id"]) for i in items], "GET review (labeling.quality.review)"
    return standin_review_order(consensus, issues)[:n], (
        "stand-in (no review queue in this checkout): max(1 - agreement, 1 - label quality)")


# --------------------------------------------------------------------------- agreement


def direct_agreement(answers: pd.DataFrame, categories: list[str]) -> dict:
    """The agreement statistics straight from the exported answers, with the libraries."""
    import krippendorff
    from sklearn.metrics import cohen_kappa_score
    from statsmodels.stats.inter_rater import aggregate_raters, fleiss_kappa

    wide = answers.pivot_table(index="data_id", columns="annotator", values="label",
                               aggfunc="first")
    wide = wide[wide.notna().sum(axis=1) >= 2]
    code = {c: i for i, c in enumerate(categories)}
    matrix = wide.apply(lambda col: col.map(code)).to_numpy(dtype=float).T
    alpha = krippendorff.alpha(reliability_data=matrix, level_of_measurement="nominal")
    per_item = wide.notna().sum(axis=1)
    fleiss = None
    if per_item.nunique() == 1:
        table = [[code[v] for v in row.dropna()] for _, row in wide.iterrows()]
        fleiss = float(fleiss_kappa(aggregate_raters(np.asarray(table), len(categories))[0]))
    pairs = []
    names = sorted(wide.columns)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            both = wide[[a, b]].dropna()
            if len(both):
                pairs.append({"a": a, "b": b, "n": len(both), "cohen_kappa": float(
                    cohen_kappa_score(both[a], both[b], labels=categories))})
    per = {}
    for a in names:
        hits = total = 0
        for _, row in wide[wide[a].notna()].iterrows():
            others = Counter(row.drop(a).dropna())
            if not others:
                continue
            top = others.most_common(2)
            if len(top) > 1 and top[0][1] == top[1][1]:
                continue  # the others tie: no majority to agree with
            total += 1
            hits += top[0][0] == row[a]
        per[a] = hits / total if total else None
    return {"items": len(wide), "krippendorff_alpha": float(alpha), "fleiss_kappa": fleiss,
            "pairwise": pairs, "per_annotator": per}


def engine_agreement(engine: LabelingEngine) -> dict | None:
    agreement = module("labeling.quality.agreement")
    if agreement is None or not hasattr(agreement, "compute"):
        return None
    out = agreement.compute(engine)
    return {**out, "per_annotator": {r["annotator"]: r.get("agreement")
                                     for r in out.get("per_annotator", [])}}


# --------------------------------------------------------------------------- models


def accuracy(project: Project, heldout: pd.DataFrame, truth: np.ndarray) -> float:
    saved = project.model("clf")
    model = saved.load(trusted=TRUSTED_TYPES)
    predicted = model.predict(check_scoring_input(model, heldout))
    return float(np.mean(np.asarray(predicted).astype(str) == truth))


def train_as(project: Project, train_on: str) -> None:
    project.config["recipes"]["train"]["params"]["train_on"] = train_on
    run_recipe(project, "train", show_progress=False)


# --------------------------------------------------------------------------- one pool


def run_pool(name: str, make, seed: int, workdir: Path) -> dict:
    t0 = time.monotonic()
    rows, truth_all, text_column = make()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(rows))
    cut = int(len(rows) * 0.8)
    pool, heldout = rows.iloc[order[:cut]], rows.iloc[order[cut:]]
    truth = dict(zip(pool["data_id"], truth_all[order[:cut]], strict=True))
    held_truth = truth_all[order[cut:]]
    categories = sorted(set(truth_all))
    project, engine = make_project(workdir / name, pool.reset_index(drop=True), categories,
                                   text_column)
    t_sim = time.monotonic()
    answers_n = simulate(engine, truth, categories, rng)
    t_sim = time.monotonic() - t_sim
    answers = exported_answers(project)
    consensus, consensus_source = consensus_of(project, answers)
    cons = consensus.assign(data_id=consensus["data_id"].astype(str)).set_index("data_id")
    wrong = {i for i, lb in cons["label"].astype(str).items() if lb != truth[i]}
    n = len(wrong)
    figures: dict = {"pool": name, "items": len(pool), "answers": answers_n,
                     "heldout": len(heldout), "wrong_consensus": n,
                     "overlap": "annotators_per_item: 2" if HAS_OVERLAP else
                     "labels_per_annotator: true, round-robin pairs (no annotators_per_item "
                     "in this checkout)", "consensus": consensus_source or
                     "majority of the exported answers (no engine consensus in this checkout)",
                     "simulate_s": t_sim}

    # Raw labels, consensus, weighted: the Train classifier recipe, measured on held-out items.
    train_as(project, "labels")
    figures["acc_raw"] = accuracy(project, heldout, held_truth)
    train_as(project, "weighted")
    figures["acc_weighted"] = accuracy(project, heldout, held_truth)
    figures["crowdlab_quality"] = project.model("clf").latest().get("annotator_quality", {})
    train_as(project, "consensus")
    figures["acc_consensus"] = accuracy(project, heldout, held_truth)

    # Label issues on the consensus (with the consensus model), then the review queue.
    t_issues = time.monotonic()
    run_recipe(project, "issues", show_progress=False)
    figures["issues_s"] = time.monotonic() - t_issues
    issues = project.dataset("label_issues").read()
    first, how = review_order(engine, consensus, issues, n, consensus_source is not None)
    hits = len(set(first) & wrong)
    figures.update(review=how, precision=hits / len(first) if first else 0.0,
                   recall=hits / n if n else 1.0, hits=hits)

    # Review the first N: their consensus becomes the truth (source reviewed); retrain.
    reviewed = consensus.copy()
    ids = reviewed["data_id"].astype(str)
    fix = ids.isin(first)
    reviewed.loc[fix, "label"] = [truth[i] for i in ids[fix]]
    reviewed.loc[fix, "source"] = "reviewed"
    project.dataset("consensus").write(reviewed)
    train_as(project, "consensus")
    figures["acc_reviewed"] = accuracy(project, heldout, held_truth)
    figures["wrong_after_review"] = int(sum(
        str(lb) != truth[i] for i, lb in zip(ids, reviewed["label"], strict=True)))

    figures["direct"] = direct_agreement(answers, categories)
    figures["engine"] = engine_agreement(engine)
    figures["seconds"] = time.monotonic() - t0
    return figures


# --------------------------------------------------------------------------- scale


def scale_figures(n: int, seed: int) -> None:
    """Seconds of find_issues on ``n`` labels, bounded (default) and unbounded."""
    from labeling.quality.issues import find_issues
    from labeling.quality.oof import DEFAULT_MAX_TRAIN_ROWS
    from labeling.training import train

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 10))
    truth = np.argmax(x[:, :4], axis=1).astype(str)
    given = truth.copy()
    flip = rng.choice(n, n // 20, replace=False)
    given[flip] = ((truth[flip].astype(int) + 1) % 4).astype(str)
    df = pd.DataFrame(x, columns=[f"x{i}" for i in range(10)])
    df["shade"] = rng.choice(["red", "green", "blue"], size=n)
    df["data_id"] = np.arange(n)
    df["label"] = given
    model = train(df, "label", data_type="tabular", cv=False)
    meta = {"version": 1, **model.info()}
    print(f"\nfind_issues on {n} table labels (5 % flipped), 5 folds:")
    for cap in (DEFAULT_MAX_TRAIN_ROWS, n):
        t0 = time.monotonic()
        issues, details = find_issues(df, model.pipeline, meta, "label", max_train_rows=cap)
        seconds = time.monotonic() - t0
        hits = len(set(issues["data_id"]) & set(flip.tolist()))
        print(f"  rows per fit <= {cap:>7}: {seconds:6.1f} s, {len(issues)} flagged, "
              f"precision {hits / max(len(issues), 1):.3f}, recall {hits / len(flip):.3f}")


# --------------------------------------------------------------------------- report


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def report(results: list[dict]) -> None:
    cols = [r["pool"] for r in results]
    width = 30

    def line(label: str, values: list) -> None:
        print(f"{label:<44}" + "".join(f"{fmt(v):>{width}}" for v in values))

    print()
    line("", cols)
    for r in results[:1]:
        print(f"overlap: {r['overlap']}")
        print(f"consensus: {r['consensus']}")
        print(f"review queue: {r['review']}")
    line("items labeled / answers", [f"{r['items']} / {r['answers']}" for r in results])
    line("wrong consensus labels (N)", [r["wrong_consensus"] for r in results])
    line("review queue: hits in first N", [r["hits"] for r in results])
    line("review queue: precision in first N", [r["precision"] for r in results])
    line("review queue: recall in first N", [r["recall"] for r in results])
    line("wrong consensus labels after review", [r["wrong_after_review"] for r in results])
    print("\nagreement (engine's GET agreement | computed from the exported labels)")
    for key in ("items", "krippendorff_alpha", "fleiss_kappa"):
        line(f"  {key}", [f"{fmt((r['engine'] or {}).get(key))} | {fmt(r['direct'][key])}"
                          for r in results])
    for a, b in (("a05", "a10"), ("a05", "a30"), ("a10", "a30")):
        def kappa(r, source, a=a, b=b):
            for p in (r[source] or {}).get("pairwise", []):
                if {p["a"], p["b"]} == {a, b}:
                    return f"{fmt(p['cohen_kappa'])} (n={p['n']})"
            return "-"
        line(f"  cohen kappa {a}-{b}", [f"{kappa(r, 'engine')} | {kappa(r, 'direct')}"
                                         for r in results])
    print("\nannotator ranking (agreement with the others' majority: engine | exported; "
          "CROWDLAB quality)")
    for a in ANNOTATORS:
        line(f"  {a} ({ANNOTATORS[a]:.0%} random answers)", [
            f"{fmt(((r['engine'] or {}).get('per_annotator') or {}).get(a))} | "
            f"{fmt(r['direct']['per_annotator'].get(a))}; {fmt(r['crowdlab_quality'].get(a))}"
            for r in results])
    for r in results:
        per = (r["engine"] or {}).get("per_annotator") or r["direct"]["per_annotator"]
        worst = min(per, key=lambda a: per[a] if per[a] is not None else 2.0)
        cl = r["crowdlab_quality"]
        cl_worst = min(cl, key=cl.get) if cl else None
        source = "agreement module" if r["engine"] else "computed here from the exports"
        print(f"  {r['pool']}: last by agreement ({source}): {worst} "
              f"{'(the 30 % annotator: yes)' if worst == 'a30' else '(NOT the 30 % annotator)'}"
              f"; last by CROWDLAB: {cl_worst}")
    print("\nheld-out accuracy of the Train classifier trained on")
    line("  raw labels (every answer)", [r["acc_raw"] for r in results])
    line("  consensus (majority)", [r["acc_consensus"] for r in results])
    line("  CROWDLAB-weighted consensus", [r["acc_weighted"] for r in results])
    line("  consensus after reviewing the first N", [r["acc_reviewed"] for r in results])
    print()
    line("seconds (simulating the answers)", [r["simulate_s"] for r in results])
    line("seconds (find-label-issues recipe)", [r["issues_s"] for r in results])
    line("seconds (whole pool)", [r["seconds"] for r in results])
    ok = all(r["precision"] >= 0.6 for r in results)
    print(f"\nreview queue precision in its first N >= 0.6 on every pool: "
          f"{'PASS' if ok else 'FAIL'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", choices=("digits", "text"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", help="where the projects go (default: a temporary directory)")
    parser.add_argument("--scale", type=int, default=0,
                        help="also time find_issues on this many synthetic labels")
    args = parser.parse_args()
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)  # a shared machine: BLAS threads only fight each other here
    pools = {"digits": digits_pool, "text": text_pool}
    if args.only:
        pools = {args.only: pools[args.only]}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(args.dir) if args.dir else Path(tmp)
        results = [run_pool(name, make, args.seed, workdir) for name, make in pools.items()]
    report(results)
    if args.scale:
        scale_figures(args.scale, args.seed)


if __name__ == "__main__":
    main()
