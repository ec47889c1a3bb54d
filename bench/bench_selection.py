"""Selection benchmark: top 1,000 of a 1,000,000 x 10 probability matrix by margin and entropy.

Compares the project's strategies (score + top_k) with a plain numpy baseline
(np.partition for the top two / np.log for entropy, then np.argpartition) in one run.
Prints best-of-N wall times and their ratio; asserts nothing.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python-lib"))

from labeling.strategies import default_registry, top_k  # noqa: E402

N_ROWS, N_CLASSES, K, REPEATS = 1_000_000, 10, 1_000, 7


def baseline_margin(proba: np.ndarray, k: int) -> np.ndarray:
    top2 = np.partition(proba, -2, axis=1)[:, -2:]
    scores = 1.0 - (top2[:, 1] - top2[:, 0])
    return np.argpartition(scores, -k)[-k:]


def baseline_entropy(proba: np.ndarray, k: int) -> np.ndarray:
    scores = -(proba * np.log(proba)).sum(axis=1)
    return np.argpartition(scores, -k)[-k:]


def project(name: str):
    registry = default_registry()

    def select(proba: np.ndarray, k: int) -> np.ndarray:
        return top_k(registry.score(name, proba), k)

    return select


def best_time(func, proba: np.ndarray) -> tuple[float, np.ndarray]:
    best, result = float("inf"), None
    for _ in range(REPEATS):
        start = time.perf_counter()
        result = func(proba, K)
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    rng = np.random.default_rng(42)
    proba = rng.dirichlet(np.ones(N_CLASSES), size=N_ROWS)
    print(f"selection: top {K:,} of {N_ROWS:,} x {N_CLASSES} float64, best of {REPEATS}")
    print(f"{'strategy':<10} {'baseline ms':>12} {'project ms':>12} {'ratio':>7}  same set")
    for name, baseline in (("margin", baseline_margin), ("entropy", baseline_entropy)):
        # Interleave so both see the same machine state.
        t_base, base_idx = best_time(baseline, proba)
        t_proj, proj_idx = best_time(project(name), proba)
        t_base = min(t_base, best_time(baseline, proba)[0])
        t_proj = min(t_proj, best_time(project(name), proba)[0])
        same = set(base_idx.tolist()) == set(proj_idx.tolist())
        print(
            f"{name:<10} {t_base * 1e3:>12.1f} {t_proj * 1e3:>12.1f} "
            f"{t_proj / t_base:>6.2f}x  {same}"
        )
    print("target: ratio <= 1.20 for both")


if __name__ == "__main__":
    main()
