"""Helpers shared by the word-tools components (imported as `import wordlib`)."""

from __future__ import annotations

import numpy as np

CASES = {"lower": str.lower, "upper": str.upper, "keep": str}


def count_words(text: object) -> int:
    """Words in `text` (a missing value has none)."""
    return len(str(text).split()) if isinstance(text, str) else 0


def least_confident_squared(proba: np.ndarray) -> np.ndarray:
    """1 - p_max^2: the less sure the model, the higher the score."""
    proba = np.asarray(proba, dtype=np.float64)
    return 1.0 - proba.max(axis=1) ** 2
