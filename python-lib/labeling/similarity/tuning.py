"""Tuning the embedding on answered pairs: a linear projection learned with a triplet objective.

The base embedding (unit vectors, see `labeling.similarity.embedding`) stays fixed; what is
learned is a matrix `B` (`extra` x d) and the tuned embedding of an item is `A @ x` with
`A = [I; B]`: the base vector with `extra` learned coordinates appended. The tuned squared
distance is the base one plus `|B (x - y)|^2`, so the answers add distance between items they
say are unrelated and keep it small between related ones, without losing the base's close
pairs (a square `A` learned from the identity lost precision on "same digit" in the bench):

- for every question with positives P and negatives N, each (p, n) triplet wants
  `d(q, p) + margin <= d(q, n)` (squared hinge, so L-BFGS sees a smooth loss);
- every positive pair is pulled together, every negative pair pushed past `margin`;
- `reg * ||B||^2` keeps the learned part small where the answers say nothing.

Plain numpy + scipy's L-BFGS: with a few hundred pairs and a 32-dimensional base, a fit takes
milliseconds to a few tenths of a second, so it runs after every submission without anyone
waiting.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

MARGIN = 1.0
PULL = 1.0  # weight of the positive-pair pull next to the triplets (bench: 0.2 lost on same digit)
PUSH = 1.0  # weight of the negative-pair push
REG = 0.002  # weight of ||B||^2
EXTRA = 8  # dimensions the answers add to the base embedding


@dataclass
class Answer:
    """One answered question in base-embedding row numbers."""

    query: int
    positives: Sequence[int]
    negatives: Sequence[int]


@dataclass
class FitResult:
    matrix: np.ndarray
    loss: float
    pairs: int
    triplets: int
    threshold: float  # distance between the mean positive and mean negative distances


def _pairs(answers: Sequence[Answer]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    pos_q, pos_c, neg_q, neg_c = [], [], [], []
    for a in answers:
        pos_q += [a.query] * len(a.positives)
        pos_c += list(a.positives)
        neg_q += [a.query] * len(a.negatives)
        neg_c += list(a.negatives)
    as_int = lambda v: np.asarray(v, dtype=np.int64)  # noqa: E731
    return as_int(pos_q), as_int(pos_c), as_int(neg_q), as_int(neg_c)


def _triplets(answers: Sequence[Answer]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    q, p, n = [], [], []
    for a in answers:
        for pi in a.positives:
            for ni in a.negatives:
                q.append(a.query)
                p.append(pi)
                n.append(ni)
    return (np.asarray(q, dtype=np.int64), np.asarray(p, dtype=np.int64),
            np.asarray(n, dtype=np.int64))


def fit_projection(X: np.ndarray, answers: Sequence[Answer], epochs: int = 10,
                   extra: int = EXTRA, margin: float | None = None,
                   reg: float | None = None, seed: int = 0) -> FitResult:
    """Learn `A = [I; B]` ((d + extra) x d) from the answers on base embeddings `X` (rows).

    The tuned squared distance is the base one plus `|B (x - y)|^2`: the answers can add
    distance between items they say are unrelated (and keep it small between related ones)
    but never lose what the base embedding knew about its close pairs.
    `epochs` bounds the optimiser: 10 L-BFGS iterations per epoch over all answered pairs.
    """
    margin = MARGIN if margin is None else margin
    reg = REG if reg is None else reg
    pull, push = PULL, PUSH
    X = np.asarray(X, dtype=np.float64)
    d = X.shape[1]
    k = max(1, int(extra))
    # B = 0 is a stationary point of the loss (its gradient is B-linear): start near it.
    B0 = 0.01 * np.random.default_rng(seed).standard_normal((k, d))
    pq, pc, nq, nc = _pairs(answers)
    tq, tp, tn = _triplets(answers)
    dp = X[pq] - X[pc]  # positive differences
    dn = X[nq] - X[nc]  # negative differences
    tdp = X[tq] - X[tp]
    tdn = X[tq] - X[tn]
    n_pos, n_neg, n_tri = len(dp), len(dn), len(tdp)
    base_tp, base_tn = (tdp * tdp).sum(1), (tdn * tdn).sum(1)
    base_n = (dn * dn).sum(1)

    def matrix(B: np.ndarray) -> np.ndarray:
        return np.vstack([np.eye(d), B])

    if n_pos + n_neg == 0:
        return FitResult(matrix(np.zeros((k, d))), 0.0, 0, 0, margin)

    def loss_grad(flat: np.ndarray) -> tuple[float, np.ndarray]:
        B = flat.reshape(k, d)
        loss = 0.0
        # M collects sum_i w_i * delta_i delta_i^T; grad of sum w_i |B delta_i|^2 is 2 B M.
        M = np.zeros((d, d))
        if n_tri:
            zp = tdp @ B.T
            zn = tdn @ B.T
            viol = margin + base_tp + (zp * zp).sum(1) - base_tn - (zn * zn).sum(1)
            h = np.where(viol > 0, viol, 0.0)
            loss += float((h * h).sum()) / n_tri
            w = 2 * h / n_tri
            M += (tdp.T * w) @ tdp - (tdn.T * w) @ tdn
        if n_pos:
            zp = dp @ B.T
            loss += pull * float((zp * zp).sum()) / n_pos
            M += pull / n_pos * (dp.T @ dp)
        if n_neg:
            zn = dn @ B.T
            gap = margin - base_n - (zn * zn).sum(1)
            h = np.where(gap > 0, gap, 0.0)
            loss += push * float((h * h).sum()) / n_neg
            w = -2 * push * h / n_neg
            M += (dn.T * w) @ dn
        loss += reg * float((B * B).sum())
        grad = 2 * B @ M + 2 * reg * B
        return loss, grad.reshape(-1)

    res = minimize(loss_grad, B0.reshape(-1), jac=True, method="L-BFGS-B",
                   options={"maxiter": max(1, int(epochs)) * 10})
    A = matrix(res.x.reshape(k, d))
    dpos = ((dp @ A.T) ** 2).sum(1) if n_pos else np.array([0.0])
    dneg = ((dn @ A.T) ** 2).sum(1) if n_neg else np.array([2 * margin])
    threshold = float((dpos.mean() + dneg.mean()) / 2)
    return FitResult(A, float(res.fun), n_pos + n_neg, n_tri, threshold)
