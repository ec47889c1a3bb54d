"""Label-efficiency benchmark: active-learning strategies on sklearn's digits.

70/30 split, 10 random start labels, batches of 10 up to 300 labels, 5 seeds, logistic
regression, all through the project's own code (``labeling.training.train`` on a
DataFrame of the 64 pixel columns, ``score_rows`` + ``top_k`` for selection).
Prints test accuracy at 50/100/200/300 labels and the area under the learning curve
(mean test accuracy over the curve, in [0, 1]) per strategy; asserts nothing.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python-lib"))

from labeling.strategies import default_registry, top_k  # noqa: E402
from labeling.training import score_rows, train  # noqa: E402

STRATEGIES = ("confidence", "margin", "entropy", "random")
SEEDS = (0, 1, 2, 3, 4)
START, BATCH, BUDGET = 10, 10, 300
REPORT_AT = (50, 100, 200, 300)


def learning_curve(
    strategy: str, seed: int, pool: pd.DataFrame, y_pool: np.ndarray, test: pd.DataFrame, y_test
) -> dict[int, float]:
    """Test accuracy after each batch, keyed by the number of labels."""
    registry = default_registry()
    rng = np.random.default_rng(seed)
    labeled = list(rng.choice(len(pool), size=START, replace=False))
    curve: dict[int, float] = {}
    while True:
        frame = pool.iloc[labeled].assign(label=y_pool[labeled])
        model = train(frame, "label", data_type="tabular", cv=False).pipeline
        curve[len(labeled)] = float(np.mean(model.predict(test) == y_test))
        if len(labeled) >= BUDGET:
            return curve
        unlabeled = np.setdiff1d(np.arange(len(pool)), labeled)
        scores = score_rows(model, pool.iloc[unlabeled], strategy, registry, rng=rng)
        picked = unlabeled[top_k(scores["uncertainty"], BATCH, ids=unlabeled)]
        labeled.extend(picked.tolist())


def main() -> None:
    digits = load_digits()
    X = pd.DataFrame(digits.data, columns=[f"px{i}" for i in range(64)])
    pool, test, y_pool, y_test = train_test_split(
        X, digits.target, test_size=0.3, random_state=0, stratify=digits.target
    )
    pool, test = pool.reset_index(drop=True), test.reset_index(drop=True)
    print(
        f"label efficiency: digits, pool {len(pool)}, test {len(test)}, "
        f"{START} random start labels, batches of {BATCH} up to {BUDGET}, {len(SEEDS)} seeds"
    )
    header = "".join(f"{'@' + str(n):>8}" for n in REPORT_AT)
    print(f"{'strategy':<11}{header}{'area':>8}{'±sd':>7}{'time s':>8}")
    areas = {}
    for strategy in STRATEGIES:
        start = time.perf_counter()
        curves = [learning_curve(strategy, s, pool, y_pool, test, y_test) for s in SEEDS]
        elapsed = time.perf_counter() - start
        # Area under the learning curve normalised to [0, 1]: the mean accuracy over
        # every point of the curve (10, 20, ..., 300 labels).
        per_seed = [float(np.mean(list(c.values()))) for c in curves]
        areas[strategy] = float(np.mean(per_seed))
        at = "".join(f"{np.mean([c[n] for c in curves]):>8.3f}" for n in REPORT_AT)
        print(f"{strategy:<11}{at}{areas[strategy]:>8.3f}{np.std(per_seed):>7.3f}{elapsed:>8.1f}")
    print(
        f"target: margin area >= 0.90 ({areas['margin']:.3f}) and above random "
        f"({areas['random']:.3f}): {areas['margin'] >= 0.90 and areas['margin'] > areas['random']}"
    )


if __name__ == "__main__":
    main()
