"""Annotation kinds: what an answer is, the engine's seam.

A labeling webapp has one annotation kind. The engine knows nothing of categories, spans or
boxes: it asks its kind to

- describe the answer's shape (`answer_schema`, part of the `POST labels` route schema, so the
  host checks the shape once, at the boundary),
- check what a schema cannot (`check`: a span inside the item's text, a known type, no
  overlap) and give the value stored in the labels dataset's `<label_col>`,
- read a stored value back (`value`: `annotations`, back / next),
- name the counters an answer adds to (`count_keys`: the `per_label` stats),
- turn a queries row (the model's output) into the `suggestion` of a `batch` item,
- turn per-part uncertainties (tokens, boxes) into one item score (`item_score`),
- add what the page needs to a `batch` item's data (`render`: an image's size for boxes).

Kinds are registered by name through the labeling plugin's hook
`register_annotation_kinds(register)`: `register(name, kind_class, label=None,
description=None)`. The built-in `choice`, `spans` and `boxes` are registered by the labeling plugin
through that same hook. A webapp names its kind: `labeling.ui.webapp_backend(data_type,
kind="spans")`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from labelloop.errors import LabelloopError
from labelloop.hookspecs import hookspec


class KindError(LabelloopError):
    """An answer the kind refuses (a 400 naming the bad part); nothing is written."""


@dataclass(frozen=True)
class Item:
    """What a kind may check an answer against: the item's id, its pool row (a dict), the
    item as the page gets it (`data`), and its file for folder items (`path`, else None)."""

    id: str
    row: Mapping[str, Any]
    data: Mapping[str, Any]
    path: Path | None = None


class AnnotationKind:
    """Base of annotation kinds; a kind object serves one webapp (`cfg`: its EngineConfig).

    Subclasses set the class attributes and override the methods they need.
    """

    name: ClassVar[str] = ""
    #: the field of the `POST labels` body that holds the answer (`label`, `spans`, `boxes`)
    field: ClassVar[str] = "label"
    #: the webapp setting (KEY_VALUE_LIST) that lists the types an answer may use (None: the
    #: kind has no types)
    types_param: ClassVar[str | None] = "categories"
    #: the fewest types a webapp of this kind may declare
    min_types: ClassVar[int] = 2
    #: the data types a webapp of this kind may have (empty: any)
    data_types: ClassVar[tuple[str, ...]] = ()
    #: whether `check` needs the item (then it runs in the answer's transaction)
    needs_item: ClassVar[bool] = False

    def __init__(self, cfg: Any):
        self.cfg = cfg

    @classmethod
    def settings(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        """The kind's own webapp settings, checked (kept in `EngineConfig.extra`)."""
        return {}

    @property
    def types(self) -> Mapping[str, str | None]:
        """The types an answer may use: name -> description (the webapp's `types_param`)."""
        return self.cfg.categories

    def answer_schema(self) -> dict:
        """The JSON Schema of the answer field (the host checks it before the route runs)."""
        raise NotImplementedError

    def check(self, answer: Any, item: Item | None) -> str:
        """The answer as stored in `<label_col>` (text); `KindError` naming the bad part."""
        raise NotImplementedError

    def value(self, stored: str | None) -> Any:
        """A stored answer as the API shows it (`annotations`)."""
        return stored

    def count_keys(self, stored: str | None) -> list[str]:
        """The per-type counters a stored answer adds one to (`per_label` in stats)."""
        return [] if stored is None else [stored]

    def suggestion(self, prediction: str | None, confidence: float | None,
                   model_version: Any) -> dict | None:
        """A `batch` item's suggestion from its queries row (None: no suggestion)."""
        return None

    @staticmethod
    def version(model_version: Any) -> Any:
        """A queries row's model version as served: an integer when it is one (the queue keeps
        it as text), else as it is."""
        if isinstance(model_version, str) and model_version.isdigit():
            return int(model_version)
        return model_version

    def item_score(self, uncertainties: Sequence[float]) -> float:
        """One item score (higher = ask first) from the uncertainties of its parts."""
        values = [float(u) for u in uncertainties if u == u]
        return max(values, default=0.0)

    def item_scores(self, uncertainties: Any, lengths: Any) -> Any:
        """`item_score` of many items at once: ``uncertainties`` holds their parts one item
        after another, ``lengths`` how many parts each has (numpy arrays; an array out).

        The Query Sampler scores a chunk of thousands of items this way. The default
        `item_score` (the highest, NaN left out) is computed vectorised; a kind that
        overrides `item_score` gets it called once per item."""
        import numpy as np

        values = np.asarray(uncertainties, dtype=np.float64)
        lengths = np.asarray(lengths, dtype=np.int64)
        if type(self).item_score is not AnnotationKind.item_score:
            parts = np.split(values, np.cumsum(lengths)[:-1]) if len(lengths) else []
            return np.fromiter((self.item_score(p.tolist()) for p in parts), np.float64,
                               len(lengths))
        out = np.zeros(len(lengths), dtype=np.float64)
        has = lengths > 0
        if has.any():
            starts = (np.cumsum(lengths) - lengths)[has]
            top = np.fmax.reduceat(np.where(np.isnan(values), -np.inf, values), starts)
            out[has] = np.where(np.isneginf(top), 0.0, top)
        return out

    def render(self, data: dict, file: Callable[[], Path] | None) -> dict:
        """A `batch` item's `data` as the page gets it (`file()`: the item's file, for
        folder items; None for dataset items)."""
        return data

    def config(self) -> dict:
        """What the kind adds to the webapp's `config` answer."""
        return {}


class AnnotationKindSpecs:
    """Hook specification the labeling plugin adds to the host's plugin manager."""

    @hookspec
    def register_annotation_kinds(self, register):
        """Register annotation kinds: ``register(name, kind_class, label=None, description=None)``."""


@dataclass(frozen=True)
class KindInfo:
    name: str
    cls: type[AnnotationKind]
    label: str
    description: str


class KindRegistry:
    """Annotation kinds by name; plugins add theirs through ``register_annotation_kinds``."""

    def __init__(self) -> None:
        self._kinds: dict[str, KindInfo] = {}

    def register(self, name: str, kind_class: type[AnnotationKind], label: str | None = None,
                 description: str | None = None) -> None:
        """Add (or replace) kind ``name``: an `AnnotationKind` subclass."""
        if not isinstance(name, str) or not name.strip():
            raise LabelloopError(f"an annotation kind needs a non-empty string name, got {name!r}")
        if not (inspect.isclass(kind_class) and issubclass(kind_class, AnnotationKind)):
            raise LabelloopError(f"annotation kind {name!r}: {kind_class!r} is not a subclass of "
                                 "labeling.kinds.AnnotationKind")
        self._kinds[name] = KindInfo(
            name, kind_class, label or name.capitalize(),
            description or (inspect.getdoc(kind_class) or "").split("\n")[0])

    def names(self) -> list[str]:
        """Registered kind names, in registration order."""
        return list(self._kinds)

    def get(self, name: str) -> type[AnnotationKind]:
        """The kind class called ``name``; an unknown name raises LabelloopError."""
        try:
            return self._kinds[name].cls
        except KeyError:
            raise LabelloopError(f"unknown annotation kind {name!r}; known kinds: "
                                 f"{', '.join(self._kinds) or '(none)'}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._kinds


def register_builtin_kinds(register: Callable[..., None]) -> None:
    """`choice` (one category, or several when multi-label), `spans` (entities in a text)
    and `boxes` (objects in an image)."""
    from .boxes import BoxesKind
    from .choice import ChoiceKind
    from .spans import SpansKind

    register("choice", ChoiceKind, label="Choice",
             description="one category per item (a list when multi-label)")
    register("spans", SpansKind, label="Spans",
             description="typed character spans of a text (named entities)")
    register("boxes", BoxesKind, label="Boxes",
             description="typed bounding boxes on an image (object detection)")


def collect_kinds(pm: Any = None) -> KindRegistry:
    """The kinds every plugin of ``pm`` registers (the labeling plugin's built-ins among
    them); without a plugin manager, the built-ins alone."""
    registry = KindRegistry()
    hook = getattr(getattr(pm, "hook", None), "register_annotation_kinds", None)
    if hook is None:
        register_builtin_kinds(registry.register)
    else:
        hook(register=registry.register)
        if "choice" not in registry:  # the labeling plugin was not loaded (LOAD_PLUGINS)
            register_builtin_kinds(registry.register)
    return registry


def kind_class(name: str, project: Any = None) -> type[AnnotationKind]:
    """The class of kind ``name`` among those the project's plugins register."""
    registry = getattr(project, "registry", None) if project is not None else None
    return collect_kinds(getattr(registry, "pm", None)).get(name)


__all__: Sequence[str] = ("AnnotationKind", "AnnotationKindSpecs", "Item", "KindError",
                          "KindRegistry", "collect_kinds", "kind_class",
                          "register_builtin_kinds")
