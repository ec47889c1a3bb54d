"""Sample plugin hooks: a query strategy added through the labeling plugin's hookspec.

Written against the host's public API only (labelloop.hookspecs); the hookspec
`register_query_strategies(register)` itself belongs to the labeling plugin.
"""

from __future__ import annotations

import numpy as np

from labelloop.hookspecs import hookimpl


def margin_squared(proba: np.ndarray) -> np.ndarray:
    """1 - (p1 - p2)^2 for the two most likely classes: margin's order, a softer scale."""
    proba = np.asarray(proba, dtype=np.float64)
    top = np.partition(proba, proba.shape[1] - 2, axis=1)[:, -2:]
    return 1.0 - (top[:, 1] - top[:, 0]) ** 2


@hookimpl
def register_query_strategies(register):
    """Add the "margin-squared" strategy."""
    register("margin-squared", margin_squared, label="Squared margin",
             description="1 - (p1 - p2)^2 of the two most likely classes")
