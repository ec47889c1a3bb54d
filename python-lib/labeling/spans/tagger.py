"""The span tagger: BIO tags of regex tokens from sparse token-window features.

Two model families share one saved form and one inference code, so a saved model holds
only plain arrays and strings (skops stores them without pickle; the only type it must be
told to trust is ``SpanTagger`` itself, listed in ``labeling.training.TRUSTED_TYPES``):

- ``crf``: a linear-chain CRF trained by CRFsuite (python-crfsuite). Its state-feature
  weights and transition weights are read out of the trained CRFsuite model and kept as
  arrays; marginals (forward-backward) and the best path (Viterbi) are computed here with
  numpy, batched over sentences of similar length.
- ``logreg``: a scikit-learn logistic regression per token over the same features; the
  same arrays with zero transitions (its marginals are then the per-token softmax).

Features of a token: its lowercased word, 2/3-character prefix and suffixes, shape and
capitalisation, and the word, shape and capitalisation of the two tokens on each side.
They are computed once per distinct word of a chunk, so scoring a big pool stays fast.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from labelloop.errors import LabelloopError

from .tokens import OUTSIDE, TOKENIZER, Tokens, tag_names, tokenize

FAMILIES = ("crf", "logreg")
OFFSETS = (-2, -1, 1, 2)
_UNSEEN = -30.0  # bias of a tag never seen in training: never predicted
_GROUP = 512  # sentences decoded together (similar lengths, padded)
_BLOCK_TOKENS = 20_000  # tokens whose emission scores are summed at once


def _shape(word: str) -> str:
    s = re.sub(r"[A-Z]", "X", word)
    s = re.sub(r"[a-z]", "x", s)
    s = re.sub(r"[0-9]", "d", s)
    return re.sub(r"(.)\1{2,}", r"\1\1", s)


def own_features(word: str) -> list[str]:
    """Features of a token from its own word."""
    lw = word.lower()
    feats = ["bias", f"w={lw}", f"p2={lw[:2]}", f"p3={lw[:3]}", f"s2={lw[-2:]}",
             f"s3={lw[-3:]}", f"sh={_shape(word)}"]
    if word[:1].isupper():
        feats.append("cap")
    if word.isupper():
        feats.append("upper")
    if word.isdigit():
        feats.append("digit")
    return feats


def neighbour_features(word: str | None, offset: int) -> list[str]:
    """Features a token takes from the word ``offset`` tokens away (None: past the text)."""
    if word is None:
        return [f"{offset}:pad"]
    feats = [f"{offset}:w={word.lower()}", f"{offset}:sh={_shape(word)}"]
    if word[:1].isupper():
        feats.append(f"{offset}:cap")
    return feats


class Vocabulary:
    """Feature names <-> column numbers (grows while fitting, frozen for scoring)."""

    def __init__(self, names: list[str] | None = None) -> None:
        self.names = list(names or [])
        self.index = {n: i for i, n in enumerate(self.names)}

    def ids(self, feats: list[str], grow: bool) -> list[int]:
        out = []
        for f in feats:
            i = self.index.get(f)
            if i is None and grow:
                i = self.index[f] = len(self.names)
                self.names.append(f)
            if i is not None:
                out.append(i)
        return out


def _table(rows: list[list[int]]) -> np.ndarray:
    width = max((len(r) for r in rows), default=0)
    table = np.full((len(rows), max(width, 1)), -1, dtype=np.int64)
    for i, r in enumerate(rows):
        table[i, :len(r)] = r
    return table


def feature_ids(sentences: list[Tokens], vocab: Vocabulary, grow: bool = False) -> np.ndarray:
    """One row per token of ``sentences`` (in order): its feature numbers, -1 padded."""
    lengths = np.asarray([len(s) for s in sentences], dtype=np.int64)
    n = int(lengths.sum())
    if n == 0:
        return np.empty((0, 1), dtype=np.int64)
    flat = [w for s in sentences for w in s.words]
    codes, uniques = pd.factorize(pd.Series(flat, dtype=object))
    uniques = list(uniques)
    pad = len(uniques)
    parts = [_table([vocab.ids(own_features(w), grow) for w in uniques])[codes]]
    first = np.repeat(np.cumsum(lengths) - lengths, lengths)
    pos = np.arange(n, dtype=np.int64) - first
    length = np.repeat(lengths, lengths)
    for offset in OFFSETS:
        table = _table([vocab.ids(neighbour_features(w, offset), grow) for w in uniques]
                       + [vocab.ids(neighbour_features(None, offset), grow)])
        inside = (pos + offset >= 0) & (pos + offset < length)
        other = np.where(inside, codes[np.clip(np.arange(n) + offset, 0, n - 1)], pad)
        parts.append(table[other])
    return np.hstack(parts)


def id_matrix(ids: np.ndarray, width: int) -> Any:
    """Feature numbers as a binary sparse matrix (tokens x features)."""
    from scipy import sparse

    rows = np.repeat(np.arange(ids.shape[0]), ids.shape[1])
    cols = ids.ravel()
    keep = cols >= 0
    data = np.ones(int(keep.sum()), dtype=np.float64)
    return sparse.csr_matrix((data, (rows[keep], cols[keep])), shape=(ids.shape[0], width))


@dataclass
class Analysis:
    """A chunk of texts as the tagger sees them: tokens, marginals and the best tags."""

    tokens: list[Tokens]
    lengths: np.ndarray  # tokens per text
    marginals: np.ndarray  # (tokens, tags) float: P(tag | text) per token
    best: np.ndarray  # (tokens,) int: the best path's tag numbers

    def per_text(self) -> Iterator[tuple[Tokens, np.ndarray, np.ndarray]]:
        start = 0
        for tokens, n in zip(self.tokens, self.lengths, strict=True):
            yield tokens, self.marginals[start:start + n], self.best[start:start + n]
            start += int(n)


class SpanTagger:
    """A fitted span tagger (see the module docstring); ``fit`` then ``analyse``/``predict``."""

    def __init__(self, family: str = "crf", c1: float = 0.05, c2: float = 0.05,
                 max_iterations: int = 100, C: float = 5.0, random_state: int = 0) -> None:  # noqa: N803
        if family not in FAMILIES:
            raise LabelloopError(f"unknown span model {family!r}; choose one of "
                                 f"{', '.join(FAMILIES)}")
        self.family = family
        self.c1, self.c2, self.max_iterations = c1, c2, max_iterations
        self.C = C
        self.random_state = random_state
        self.tokenizer = TOKENIZER
        self.types: list[str] = []
        self.tags: list[str] = []
        self.features = np.empty(0, dtype=str)
        self.weights = np.zeros((1, 1), dtype=np.float64)
        self.transitions = np.zeros((1, 1), dtype=np.float64)
        self._vocab: Vocabulary | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state.pop("_vocab", None)  # rebuilt from `features` when needed
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._vocab = None

    @property
    def vocab(self) -> Vocabulary:
        if self._vocab is None:
            self._vocab = Vocabulary([str(f) for f in self.features])
        return self._vocab

    # ------------------------------------------------------------------ fitting
    def fit(self, texts: list[str], tag_lists: list[list[str]], types: list[str]) -> SpanTagger:
        """Fit on texts and their tokens' BIO tags (``spans_to_tags``) for entity ``types``."""
        self.types = sorted({str(t) for t in types})
        self.tags = tag_names(self.types)
        sentences = [tokenize(t) for t in texts]
        vocab = Vocabulary()
        ids = feature_ids(sentences, vocab, grow=True)
        self._vocab = vocab
        self.features = np.asarray(vocab.names, dtype=str)
        index = {t: i for i, t in enumerate(self.tags)}
        flat_tags = [t for tags in tag_lists for t in tags]
        unknown = sorted({t for t in flat_tags if t not in index})
        if unknown:
            raise LabelloopError(f"tags {unknown} are not BIO tags of the types {self.types}")
        y = np.asarray([index[t] for t in flat_tags], dtype=np.int64)
        n_feat, n_tags = len(vocab.names), len(self.tags)
        weights = np.zeros((n_feat + 1, n_tags), dtype=np.float64)  # last row: no feature
        transitions = np.zeros((n_tags, n_tags), dtype=np.float64)
        seen = np.bincount(y, minlength=n_tags) > 0
        if self.family == "crf":
            self._fit_crf(sentences, ids, tag_lists, vocab, weights, transitions)
        elif seen.sum() > 1:
            self._fit_logreg(ids, y, n_feat, weights)
        bias = vocab.index["bias"]
        weights[bias, ~seen] = _UNSEEN
        if seen.sum() == 1:  # one tag only (no entity anywhere yet): it is the answer
            weights[bias, seen] = 0.0
        self.weights, self.transitions = weights, transitions
        return self

    def _fit_crf(self, sentences: list[Tokens], ids: np.ndarray, tag_lists: list[list[str]],
                 vocab: Vocabulary, weights: np.ndarray, transitions: np.ndarray) -> None:
        import pycrfsuite

        names = np.asarray(vocab.names, dtype=object)
        trainer = pycrfsuite.Trainer(verbose=False)
        start = 0
        for tokens, tags in zip(sentences, tag_lists, strict=True):
            rows = ids[start:start + len(tokens)]
            start += len(tokens)
            if len(tokens):
                trainer.append([list(names[r[r >= 0]]) for r in rows], tags)
        trainer.set_params({"c1": self.c1, "c2": self.c2,
                            "max_iterations": self.max_iterations,
                            "feature.possible_transitions": True})
        index = {t: i for i, t in enumerate(self.tags)}
        with tempfile.TemporaryDirectory() as tmp:
            path = str(Path(tmp) / "crf.crfsuite")
            trainer.train(path)
            tagger = pycrfsuite.Tagger()
            tagger.open(path)
            info = tagger.info()
            tagger.close()
        for (attr, label), w in info.state_features.items():
            weights[vocab.index[attr], index[label]] = w
        for (a, b), w in info.transitions.items():
            transitions[index[a], index[b]] = w

    def _fit_logreg(self, ids: np.ndarray, y: np.ndarray, n_feat: int,
                    weights: np.ndarray) -> None:
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression
        from threadpoolctl import threadpool_limits

        model = LogisticRegression(C=self.C, max_iter=500, random_state=self.random_state)
        # One BLAS thread: on a busy machine a thread pool made this small fit 30x slower.
        with warnings.catch_warnings(), threadpool_limits(1):
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(id_matrix(ids, n_feat), y)
        coef = model.coef_
        classes = model.classes_
        if coef.shape[0] == 1:  # two tags: scikit-learn keeps one row, for the second
            coef = np.vstack([-coef[0] / 2, coef[0] / 2])
            intercept = np.asarray([-model.intercept_[0] / 2, model.intercept_[0] / 2])
        else:
            intercept = model.intercept_
        weights[:n_feat, classes] = coef.T
        weights[self.vocab.index["bias"], classes] += intercept

    # ------------------------------------------------------------------ scoring
    def analyse(self, texts: list[str]) -> Analysis:
        """Tokens, per-token tag marginals and the best tag path of each text."""
        if not self.tags:
            raise LabelloopError("the span tagger is not fitted: train it first")
        sentences = [tokenize(t if isinstance(t, str) else "") for t in texts]
        lengths = np.asarray([len(s) for s in sentences], dtype=np.int64)
        ids = feature_ids(sentences, self.vocab)
        n_tags = len(self.tags)
        emissions = np.empty((ids.shape[0], n_tags), dtype=np.float64)
        for s in range(0, ids.shape[0], _BLOCK_TOKENS):
            emissions[s:s + _BLOCK_TOKENS] = self.weights[ids[s:s + _BLOCK_TOKENS]].sum(axis=1)
        if not self.transitions.any():
            marg = np.exp(emissions - emissions.max(axis=1, keepdims=True))
            marg /= marg.sum(axis=1, keepdims=True)
            return Analysis(sentences, lengths, marg, marg.argmax(axis=1))
        marg = np.empty_like(emissions)
        best = np.empty(ids.shape[0], dtype=np.int64)
        starts = np.cumsum(lengths) - lengths
        order = np.argsort(lengths, kind="stable")
        order = order[lengths[order] > 0]
        for g in range(0, order.size, _GROUP):
            group = order[g:g + _GROUP]
            self._decode(emissions, starts[group], lengths[group], marg, best)
        return Analysis(sentences, lengths, marg, best)

    def _decode(self, emissions: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
                marg: np.ndarray, best: np.ndarray) -> None:
        """Forward-backward (scaled, in probabilities) and Viterbi (in logs) for a group of
        texts padded to the longest; a padded step leaves a text's values as they were."""
        b, width, n_tags = lengths.size, int(lengths.max()), emissions.shape[1]
        pos = np.arange(width)
        valid = pos[None, :] < lengths[:, None]
        where = np.where(valid, starts[:, None] + pos[None, :], 0)
        e = emissions[where]  # (b, width, tags)
        # Per-token and per-step scale factors cancel out of the marginals.
        psi = np.exp(e - e.max(axis=2, keepdims=True))
        trans = self.transitions
        m = np.exp(trans - trans.max())
        alpha = np.empty((b, width, n_tags))
        beta = np.ones((b, width, n_tags))
        a = psi[:, 0]
        alpha[:, 0] = a / a.sum(axis=1, keepdims=True)
        for t in range(1, width):
            a = (alpha[:, t - 1] @ m) * psi[:, t]
            a /= a.sum(axis=1, keepdims=True)
            alpha[:, t] = np.where(valid[:, t][:, None], a, alpha[:, t - 1])
        for t in range(width - 2, -1, -1):
            v = (psi[:, t + 1] * beta[:, t + 1]) @ m.T
            v /= v.sum(axis=1, keepdims=True)
            beta[:, t] = np.where(valid[:, t + 1][:, None], v, 1.0)
        p = alpha * beta
        p /= p.sum(axis=2, keepdims=True)
        marg[where[valid]] = p[valid]
        delta = e[:, 0].copy()
        back = np.zeros((b, width, n_tags), dtype=np.int64)
        for t in range(1, width):
            step = delta[:, :, None] + trans[None]
            back[:, t] = step.argmax(axis=1)
            top = np.take_along_axis(step, back[:, t][:, None, :], axis=1)[:, 0]
            delta = np.where(valid[:, t][:, None], top + e[:, t], delta)
        cur = delta.argmax(axis=1)
        path = np.zeros((b, width), dtype=np.int64)
        rows = np.arange(b)
        for t in range(width - 1, -1, -1):
            active = valid[:, t]
            path[active, t] = cur[active]
            if t:
                cur = np.where(active, back[rows, t, cur], cur)
        best[where[valid]] = path[valid]

    def predict(self, texts: list[str]) -> list[list[dict]]:
        """Each text's predicted spans, each with its score (mean marginal of its tags)."""
        from .tokens import tags_to_spans

        out = []
        analysis = self.analyse(texts)
        for tokens, marg, path in analysis.per_text():
            scores = marg[np.arange(len(path)), path] if len(path) else marg[:0, 0]
            out.append(tags_to_spans(tokens, [self.tags[i] for i in path], scores))
        return out

    def predict_tags(self, texts: list[str]) -> list[list[str]]:
        """Each text's best BIO tag path (for seqeval)."""
        analysis = self.analyse(texts)
        return [[self.tags[i] for i in path] for _, _, path in analysis.per_text()]


__all__ = ["FAMILIES", "OUTSIDE", "Analysis", "SpanTagger", "feature_ids", "id_matrix"]
