"""Which questions the similarity labeler asks, and the checks of an answer's body.

`choose_questions` is the active choice: among a sample of not-yet-asked items, those whose
neighbourhood the model is least sure about (candidate distances closest to the threshold
between answered positive and negative distances), then greedily for diversity (no query
among another's candidates). `check_answer` checks an answer's shape before it is matched
against its stored question (`labeling.similarity.service`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.neighbors import NearestNeighbors

from labelloop.errors import LabelloopError

QUERY_SAMPLE = 256  # not-yet-asked items scored for uncertainty per request


@dataclass
class Choice:
    """One question to ask, in rows of the tuned vectors."""

    query: int
    candidates: list[tuple[int, float]]  # (row, similarity score), nearest first
    uncertainty: float


def choose_questions(Z: np.ndarray, free: np.ndarray, k: int, size: int, match_pool: int,
                     threshold: float | None, rng: np.random.Generator) -> list[Choice]:
    """Up to `size` queries among the `free` rows of `Z`, each with its `k` candidates from
    a random match pool of `match_pool` rows."""
    n = Z.shape[0]
    sample = free if free.size <= QUERY_SAMPLE else rng.choice(free, QUERY_SAMPLE,
                                                                replace=False)
    m = min(n, max(match_pool, k + 1))
    match = np.arange(n) if m >= n else rng.choice(n, m, replace=False)
    nn = NearestNeighbors(n_neighbors=min(k + 1, match.size), algorithm="brute")
    nn.fit(Z[match])
    dist, idx = nn.kneighbors(Z[sample])
    dist = dist ** 2  # squared distances, as the tuning uses
    cand = match[idx]
    keep_d = np.empty((sample.size, k))
    keep_c = np.empty((sample.size, k), dtype=np.int64)
    for r in range(sample.size):  # drop the query itself from its candidates
        mask = cand[r] != sample[r]
        c, d = cand[r][mask][:k], dist[r][mask][:k]
        if c.size < k:  # a tiny pool: pad by repeating (never shown, see below)
            c = np.resize(c, k)
            d = np.resize(d, k)
        keep_c[r], keep_d[r] = c, d
    tau = float(np.median(keep_d)) if threshold is None else float(threshold)
    spread = float(keep_d.std()) + 1e-9
    uncertainty = np.exp(-((keep_d - tau) / spread) ** 2).mean(axis=1)
    order = np.argsort(-uncertainty, kind="stable")
    chosen: list[int] = []
    blocked: set[int] = set()
    for r in order:
        q = int(sample[r])
        if q in blocked:
            continue
        chosen.append(int(r))
        blocked.update(int(c) for c in keep_c[r])
        blocked.add(q)
        if len(chosen) == size:
            break
    out = []
    for r in chosen:
        cands, seen = [], set()
        for c, d in zip(keep_c[r], keep_d[r], strict=True):
            if int(c) in seen:
                continue
            seen.add(int(c))
            cands.append((int(c), float(1.0 - d / 2.0)))
        out.append(Choice(int(sample[r]), cands, float(uncertainty[r])))
    return out


def check_answer(body: Any) -> tuple[str, bool, list[str], list[str]]:
    """(question id, ignored, positives, negatives) of an answer's body, or a clear error."""
    if not isinstance(body, dict):
        raise LabelloopError("the body must be a JSON object {question_id, positives, "
                             "negatives} or {question_id, ignored: true}")
    qid = body.get("question_id")
    if not isinstance(qid, str) or not qid:
        raise LabelloopError("question_id must be the id of a question from GET questions")
    ignored = body.get("ignored", False)
    if not isinstance(ignored, bool):
        raise LabelloopError(f"ignored must be true or false, got {ignored!r}")
    pos = _id_list(body, "positives")
    neg = _id_list(body, "negatives")
    if ignored and (pos or neg):
        raise LabelloopError("an ignored question takes no positives or negatives: send "
                             "either {ignored: true} or the positives and negatives")
    if not ignored and not pos and not neg:
        raise LabelloopError("no answer: give positives and/or negatives (candidate ids), "
                             "or ignored: true")
    both = sorted(set(pos) & set(neg))
    if both:
        raise LabelloopError(f"candidate(s) {', '.join(map(repr, both))} are both positive "
                             "and negative: give each candidate once")
    return qid, ignored, pos, neg


def _id_list(body: dict, key: str) -> list[str]:
    value = body.get(key, [])
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise LabelloopError(f"{key} must be a list of candidate ids (strings), got "
                             f"{value!r}")
    if len(set(value)) != len(value):
        raise LabelloopError(f"{key} lists a candidate twice: give each id once")
    return value
