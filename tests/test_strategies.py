"""Query strategies: hand-computed scores, ranking, tie-breaking, the registry and its hook."""

from __future__ import annotations

import math

import numpy as np
import pluggy
import pytest

from labeling import strategies
from labeling.strategies import (
    QueryStrategySpecs,
    StrategyRegistry,
    StreamingRanker,
    collect_strategies,
    default_registry,
    top_k,
)
from labelloop.errors import LabelloopError

BINARY = np.array([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8], [1.0, 0.0]])
MULTI = np.array(
    [
        [0.5, 0.3, 0.2],
        [0.9, 0.05, 0.05],
        [1 / 3, 1 / 3, 1 / 3],
        [0.0, 1.0, 0.0],
        [0.1, 0.45, 0.45],
    ]
)


def test_confidence_is_one_minus_max():
    assert strategies.confidence(BINARY) == pytest.approx([0.5, 0.1, 0.2, 0.0])
    assert strategies.confidence(MULTI) == pytest.approx([0.5, 0.1, 2 / 3, 0.0, 0.55])


def test_margin_is_one_minus_gap_of_top_two():
    assert strategies.margin(BINARY) == pytest.approx([1.0, 0.2, 0.4, 0.0])
    assert strategies.margin(MULTI) == pytest.approx([0.8, 0.15, 1.0, 0.0, 1.0])


def test_entropy_natural_log_with_zero_log_zero():
    h = strategies.entropy(MULTI)
    expected0 = -(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 0.2 * math.log(0.2))
    expected1 = -(0.9 * math.log(0.9) + 2 * 0.05 * math.log(0.05))
    assert h == pytest.approx(
        [expected0, expected1, math.log(3), 0.0, -(0.1 * math.log(0.1) + 2 * 0.45 * math.log(0.45))]
    )
    assert not np.signbit(h[3])  # exactly +0.0 for a certain row
    assert strategies.entropy(BINARY) == pytest.approx(
        [
            math.log(2),
            -(0.9 * math.log(0.9) + 0.1 * math.log(0.1)),
            -(0.2 * math.log(0.2) + 0.8 * math.log(0.8)),
            0.0,
        ]
    )


def test_scores_across_block_boundaries_match_row_by_row():
    proba = np.random.default_rng(3).dirichlet(np.ones(7), size=10_000)
    row = [1 - (np.sort(p)[-1] - np.sort(p)[-2]) for p in proba[:50]]
    assert strategies.margin(proba)[:50] == pytest.approx(row)
    ent = strategies.entropy(proba)
    assert ent[-5:] == pytest.approx(-(proba[-5:] * np.log(proba[-5:])).sum(axis=1))
    # float32 input gives float64 scores without converting the matrix first
    assert strategies.entropy(proba.astype(np.float32)).dtype == np.float64


def test_random_is_seeded_and_chunk_invariant():
    registry = default_registry()
    proba = np.full((10, 2), 0.5)
    a = registry.score("random", proba, seed=7)
    b = registry.score("random", proba, seed=7)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, registry.score("random", proba, seed=8))
    rng = np.random.default_rng(7)
    chunked = np.concatenate(
        [registry.score("random", proba[:4], rng=rng), registry.score("random", proba[4:], rng=rng)]
    )
    assert np.array_equal(a, chunked)


def test_one_class_model_refused_with_its_name():
    with pytest.raises(LabelloopError, match="only one class 'cat'.*at least two"):
        default_registry().score("margin", np.ones((3, 1)), classes=["cat"])
    with pytest.raises(LabelloopError, match="only one class"):
        strategies.entropy(np.ones((3, 1)))
    with pytest.raises(LabelloopError, match="2-D"):
        strategies.margin(np.ones(3))


def reference_order(scores, ids=None) -> list[int]:
    """Most uncertain first (NaN last), ties by id (or index): Python's sort as the oracle."""
    scores = [-math.inf if math.isnan(x) else x for x in np.asarray(scores, dtype=float)]
    keys = range(len(scores)) if ids is None else ids
    return sorted(range(len(scores)), key=lambda i: (-scores[i], keys[i], i))


def test_whole_order_most_uncertain_first_ties_by_index():
    scores = [0.1, 0.7, 0.7, 0.3, 0.7]
    assert top_k(scores, len(scores)).tolist() == [1, 2, 4, 3, 0]


def test_whole_order_ties_by_item_id():
    scores = [0.1, 0.7, 0.7, 0.3, 0.7]
    ids = ["e", "c", "b", "d", "a"]
    assert top_k(scores, len(scores), ids=ids).tolist() == [4, 2, 1, 3, 0]


def test_nan_scores_go_last():
    assert top_k([np.nan, 0.2, 0.5], 3).tolist() == [2, 1, 0]
    assert top_k([np.nan, 0.2, 0.5], 1).tolist() == [2]


def test_top_k_is_the_order_cut_at_k_including_boundary_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, size=2000).astype(float)  # many ties
    ids = rng.permutation(2000)
    whole, by_id = reference_order(scores), reference_order(scores, ids.tolist())
    for k in (0, 1, 17, 400, 1999, 2000, 5000):
        assert top_k(scores, k).tolist() == whole[:k]
        assert top_k(scores, k, ids=ids).tolist() == by_id[:k]
    with pytest.raises(LabelloopError, match="k must be"):
        top_k(scores, -1)


def test_streaming_ranker_equals_full_ranking():
    rng = np.random.default_rng(1)
    scores = np.round(rng.random(50_000), 3)
    pred = rng.integers(0, 4, size=50_000).astype(np.int32)
    full = StreamingRanker()
    best = StreamingRanker(k=100)
    for start in range(0, 50_000, 7_000):
        s = slice(start, start + 7_000)
        positions = np.arange(start, min(start + 7_000, 50_000))
        full.add(scores[s], positions, prediction=pred[s])
        best.add(scores[s], positions, prediction=pred[s])
    ranked = full.result()
    assert full.seen == 50_000
    assert ranked.positions.tolist() == reference_order(scores)
    assert np.array_equal(ranked.scores, scores[ranked.positions])
    assert np.array_equal(ranked.columns["prediction"], pred[ranked.positions])
    top = best.result()
    assert top.positions.tolist() == top_k(scores, 100).tolist()
    assert np.array_equal(top.columns["prediction"], pred[top.positions])


def test_streaming_ranker_rejects_inconsistent_chunks():
    ranker = StreamingRanker()
    ranker.add([0.1, 0.2], prediction=[0, 1])
    with pytest.raises(LabelloopError, match="same columns"):
        ranker.add([0.3])
    with pytest.raises(LabelloopError, match="positions"):
        ranker.add([0.3], positions=[1, 2], prediction=[0])
    assert len(StreamingRanker().result()) == 0


def test_registry_builtins_and_choices():
    registry = default_registry()
    assert registry.names() == ["confidence", "margin", "entropy", "random"]
    assert {"value": "margin", "label": "Smallest margin"} in registry.choices()
    assert registry.get("entropy").description
    with pytest.raises(LabelloopError, match="unknown query strategy 'nope'.*margin"):
        registry.get("nope")


def test_registry_extension_with_and_without_rng():
    registry = StrategyRegistry()
    registry.register("second", lambda proba: np.sort(proba, axis=1)[:, -2], label="Second best")
    registry.register("noisy", lambda proba, rng: rng.random(len(proba)))
    assert registry.choices() == [
        {"value": "second", "label": "Second best"},
        {"value": "noisy", "label": "Noisy"},
    ]
    assert registry.score("second", MULTI) == pytest.approx([0.3, 0.05, 1 / 3, 0.0, 0.45])
    assert registry.score("noisy", MULTI, seed=1).shape == (5,)
    registry.register("bad", lambda proba: np.zeros(2))
    with pytest.raises(LabelloopError, match="one score per row"):
        registry.score("bad", MULTI)
    with pytest.raises(LabelloopError, match="not callable"):
        registry.register("x", 42)


class _SamplePlugin:
    @pluggy.HookimplMarker("labelloop")
    def register_query_strategies(self, register):
        register(
            "least_second", lambda proba: 1 - np.sort(proba, axis=1)[:, -2], label="Least second"
        )


def test_collect_strategies_through_the_hook():
    pm = pluggy.PluginManager("labelloop")
    pm.add_hookspecs(QueryStrategySpecs)
    pm.register(_SamplePlugin(), name="sample")
    registry = collect_strategies(pm)
    assert registry.names()[:4] == ["confidence", "margin", "entropy", "random"]
    assert "least_second" in registry
    order = top_k(registry.score("least_second", MULTI), 2)
    assert order.tolist() == [3, 1]
    # A manager without the hookspec (or none at all) gives the built-ins.
    assert (
        collect_strategies(pluggy.PluginManager("labelloop")).names() == default_registry().names()
    )
    assert len(collect_strategies(None)) == 4


def test_ranker_keeps_rows_and_a_tree_of_merges_equals_one_pass():
    import pandas as pd

    from labeling.strategies import merge_rankings

    rng = np.random.default_rng(3)
    scores = np.round(rng.random(5000), 2)  # many ties: the cut must follow positions
    rows = pd.DataFrame({"v": np.arange(5000), "s": [f"r{i}" for i in range(5000)]})
    one = StreamingRanker(k=300)
    parts = []
    for lo in range(0, 5000, 700):
        one.add(scores[lo:lo + 700], np.arange(lo, min(lo + 700, 5000)),
                rows=rows.iloc[lo:lo + 700], tag=scores[lo:lo + 700] * 2)
        part = StreamingRanker(k=300)
        part.add(scores[lo:lo + 700], np.arange(lo, min(lo + 700, 5000)),
                 rows=rows.iloc[lo:lo + 700], tag=scores[lo:lo + 700] * 2)
        parts.append(part.result())
    whole = one.result()
    tree = merge_rankings([merge_rankings(parts[:3], 300), merge_rankings(parts[3:], 300)], 300)
    expected = top_k(scores, 300)
    for got in (whole, tree):
        np.testing.assert_array_equal(got.positions, expected)
        np.testing.assert_array_equal(got.rows["v"].to_numpy(), expected)
        np.testing.assert_array_equal(got.columns["tag"], scores[expected] * 2)


def test_diverse_batch_is_deterministic_and_spreads_over_clusters():
    from labeling.strategies import diverse_batch

    rng = np.random.default_rng(0)
    # 3 tight groups of candidates: the most uncertain all sit in group 0
    centers = np.array([[0.5, 0.5, 0.0], [0.0, 0.5, 0.5], [0.5, 0.0, 0.5]])
    points = np.repeat(centers, 20, axis=0) + rng.normal(scale=0.01, size=(60, 3))
    scores = np.concatenate([np.linspace(0.99, 0.9, 20), np.linspace(0.8, 0.7, 20),
                             np.linspace(0.6, 0.5, 20)])
    picks = diverse_batch(points, scores, 3, np.random.default_rng(7))
    assert sorted(p // 20 for p in picks) == [0, 1, 2]  # one per group
    assert [p // 20 for p in picks] == [0, 1, 2]  # ordered by score
    for p in picks:  # each the member nearest its group's score-weighted centre
        group = np.arange(p // 20 * 20, p // 20 * 20 + 20)
        centre = np.average(points[group], axis=0, weights=scores[group] + 1e-6)
        assert p == group[np.argmin(((points[group] - centre) ** 2).sum(axis=1))]
    again = diverse_batch(points, scores, 3, np.random.default_rng(7))
    np.testing.assert_array_equal(picks, again)
    assert list(diverse_batch(points[:2], scores[:2], 3)) == [0, 1]  # fewer than k: all
    # sparse points (TF-IDF) and negative scores work too, with the same picks
    from scipy import sparse

    picks_sparse = diverse_batch(sparse.csr_matrix(points), scores - 2.0, 3,
                                 np.random.default_rng(7))
    assert sorted(p // 20 for p in picks_sparse) == [0, 1, 2]


def test_diverse_margin_looks_wider_while_labels_are_few():
    from labeling.sampling import candidates
    from labeling.strategies import (
        DIVERSITY_BETA,
        DIVERSITY_BETA_FEW,
        FEW_LABELS,
        register_batch_strategies,
    )

    registry = default_registry()
    register_batch_strategies(registry.register)
    strat = registry.get("diverse_margin")
    assert candidates(strat, 20, FEW_LABELS - 1) == int(DIVERSITY_BETA_FEW * 20)
    assert candidates(strat, 20, FEW_LABELS) == int(DIVERSITY_BETA * 20)
    assert candidates(strat, 20) == int(DIVERSITY_BETA * 20)  # labels unknown
    assert candidates(registry.get("margin"), 20, 5) == 0  # no batch step
