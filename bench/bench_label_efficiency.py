"""Label-efficiency benchmark: active-learning strategies on two data sets shipped with sklearn.

- digits: sklearn's 8x8 handwritten digits, 64 pixel columns (tabular, 10 classes);
- sklearn-docs: a 10-class text task built from scikit-learn's own shipped docstrings: each
  paragraph of a public class's or function's docstring, labeled by the subpackage it
  documents (linear_model, cluster, ensemble, ...), at most 300 paragraphs per class.

70/30 split, 10 random start labels, batches of 20 (the loop's real setting) up to 300
labels, 5 seeds, logistic regression, all through the project's own code
(``labeling.training.train``, ``score_rows``, ``top_k`` and a strategy's batch step as the
Query Sampler runs it). Prints test accuracy at 50/100/200/300 labels and the area under
the learning curve (mean test accuracy over the curve's points, in [0, 1]), mean ± sd over
the seeds, per strategy and data set; asserts nothing.

    .venv/bin/python bench/bench_label_efficiency.py [--seeds 5] [--batch 20]
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python-lib"))

from labeling.sampling import batch_order, candidates  # noqa: E402
from labeling.strategies import default_registry, register_batch_strategies, top_k  # noqa: E402
from labeling.training import score_rows, train  # noqa: E402

STRATEGIES = ("confidence", "margin", "entropy", "diverse_margin", "random")
START, BUDGET = 10, 300
REPORT_AT = (50, 110, 210, 300)
DOC_PACKAGES = ("linear_model", "cluster", "ensemble", "decomposition",
                "metrics", "model_selection", "preprocessing", "neighbors", "svm", "datasets")
PER_CLASS = 300


def digits() -> tuple[pd.DataFrame, np.ndarray, str]:
    data = load_digits()
    return pd.DataFrame(data.data, columns=[f"px{i}" for i in range(64)]), data.target, "tabular"


def sklearn_docs() -> tuple[pd.DataFrame, np.ndarray, str]:
    """Paragraphs of scikit-learn's docstrings labeled by their subpackage (10 classes)."""
    texts, labels = [], []
    for package in DOC_PACKAGES:
        module = importlib.import_module(f"sklearn.{package}")
        seen: set[str] = set()
        for name in sorted(getattr(module, "__all__", dir(module))):
            try:
                obj = getattr(module, name, None)
            except ImportError:  # experimental estimators
                continue
            doc = inspect.getdoc(obj) if obj is not None and not name.startswith("_") else None
            if not doc:
                continue
            for para in re.split(r"\n\s*\n", doc):
                para = " ".join(para.split())
                # prose only: no parameter tables' dashes, no doctest lines
                if len(para) < 80 or para.startswith(">>>") or set(para) <= set("-= "):
                    continue
                if para not in seen:
                    seen.add(para)
                    texts.append(para)
                    labels.append(package)
    frame = pd.DataFrame({"text": texts, "label": labels})
    frame = pd.concat([g.sample(min(len(g), PER_CLASS), random_state=0)
                       for _, g in frame.groupby("label")], ignore_index=True)
    return frame[["text"]], frame["label"].to_numpy(), "text"


def learning_curve(strategy: str, seed: int, pool: pd.DataFrame, y_pool: np.ndarray,
                   test: pd.DataFrame, y_test: np.ndarray, data_type: str,
                   batch: int) -> dict[int, float]:
    """Test accuracy after each batch, keyed by the number of labels."""
    registry = default_registry()
    register_batch_strategies(registry.register)
    strat = registry.get(strategy)
    rng = np.random.default_rng(seed)
    labeled = list(rng.choice(len(pool), size=START, replace=False))
    curve: dict[int, float] = {}
    while True:
        frame = pool.iloc[labeled].assign(label=y_pool[labeled])
        model = train(frame, "label", data_type=data_type, cv=False).pipeline
        curve[len(labeled)] = float(np.mean(model.predict(test) == y_test))
        if len(labeled) >= BUDGET:
            return curve
        k = min(batch, BUDGET - len(labeled))
        unlabeled = np.setdiff1d(np.arange(len(pool)), labeled)
        scores = score_rows(model, pool.iloc[unlabeled], strategy, registry, rng=rng)
        if strat.batch is None:
            picked = unlabeled[top_k(scores["uncertainty"], k, ids=unlabeled)]
        else:
            head = top_k(scores["uncertainty"], candidates(strat, k, len(labeled)),
                         ids=unlabeled)
            first = batch_order(model, strat, pool.iloc[unlabeled[head]],
                                scores["uncertainty"][head], k, rng)
            picked = unlabeled[head[first]]
        labeled.extend(picked.tolist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--datasets", default="digits,sklearn-docs")
    args = parser.parse_args()
    seeds = range(args.seeds)
    loaders = {"digits": digits, "sklearn-docs": sklearn_docs}
    summary: dict[str, dict[str, float]] = {}
    for name in args.datasets.split(","):
        X, y, data_type = loaders[name]()
        pool, test, y_pool, y_test = train_test_split(
            X, y, test_size=0.3, random_state=0, stratify=y)
        pool, test = pool.reset_index(drop=True), test.reset_index(drop=True)
        print(f"\n{name} ({data_type}, {len(np.unique(y))} classes): pool {len(pool)}, test "
              f"{len(test)}, {START} random start labels, batches of {args.batch} up to "
              f"{BUDGET}, {args.seeds} seeds")
        header = "".join(f"{'@' + str(n):>8}" for n in REPORT_AT)
        print(f"{'strategy':<16}{header}{'area':>8}{'±sd':>7}{'time s':>8}")
        summary[name] = {}
        for strategy in args.strategies.split(","):
            start = time.perf_counter()
            curves = [learning_curve(strategy, s, pool, y_pool, test, y_test, data_type,
                                     args.batch) for s in seeds]
            elapsed = time.perf_counter() - start
            per_seed = [float(np.mean(list(c.values()))) for c in curves]
            summary[name][strategy] = float(np.mean(per_seed))
            at = "".join(f"{np.mean([c[n] for c in curves if n in c]):>8.3f}"
                         if any(n in c for c in curves) else f"{'':>8}" for n in REPORT_AT)
            print(f"{strategy:<16}{at}{np.mean(per_seed):>8.3f}{np.std(per_seed):>7.3f}"
                  f"{elapsed:>8.1f}", flush=True)
    if all("diverse_margin" in s and "margin" in s for s in summary.values()):
        wins = {n: s["diverse_margin"] > s["margin"] for n, s in summary.items()}
        print(f"\ntarget: diverse_margin above margin at batch {args.batch} on every data "
              f"set: {all(wins.values())} ({wins})")


if __name__ == "__main__":
    main()
