"""A similarity webapp's params (webapp.json) turned into a checked configuration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from labelloop.errors import ConfigError

from ..features import folder_extension_kind
from ..settings import EngineConfig

DATA_TYPES = ("tabular", "text", "image", "sound")
MAX_TOP_K = 10  # number keys 1-9 and 0
MAX_PER_VIEW = 10


@dataclass
class SimilarityConfig:
    """Everything the similarity service needs to know about one webapp instance."""

    webapp: str
    data_type: str
    unlabeled: str
    embedding_model: str | None = None
    pairs_ds: str = "pairs"
    model_name: str = "embedding"
    positive_value: int = 1
    negative_value: int = -1
    examples_per_view: int = 2
    top_k: int = 8
    epochs: int = 10
    match_pool: int = 100
    field: str | None = None
    id_column: str | None = None
    text_column: str | None = None
    seed: int = 0

    def engine_config(self) -> EngineConfig:
        """The labeling engine's config, for reusing its data types (ids, rendering)."""
        columns = [self.field] if self.field and self.data_type == "tabular" else None
        text = (self.field or self.text_column) if self.data_type == "text" else None
        return EngineConfig(webapp=self.webapp, data_type=self.data_type,
                            unlabeled=self.unlabeled, categories={}, labels_ds="",
                            metadata_ds="", id_column=self.id_column, columns=columns,
                            text_column=text, seed=self.seed)

    @property
    def content_type(self) -> str:
        return {"tabular": "table row", "text": "text", "image": "image",
                "sound": "sound"}[self.data_type]


def _int(config: dict, key: str, default: int, lo: int, hi: int | None = None) -> int:
    value = config.get(key)
    value = default if value is None or value == "" else value
    try:
        value = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key} must be an integer, got {value!r}") from None
    if value < lo or (hi is not None and value > hi):
        raise ConfigError(f"{key} must be between {lo} and {hi if hi is not None else 'any'}, "
                          f"got {value}")
    return value


def parse_settings(config: dict, webapp: str, project: Any) -> SimilarityConfig:
    """Check a similarity webapp's params against the project; a clear error when wrong."""
    pool = config.get("unlabeled")
    if not pool:
        raise ConfigError("no pool: set 'unlabeled' to a dataset (rows, texts) or a managed "
                          "folder (images, sounds)")
    folders = project.config.get("folders", {})
    kind = (config.get("data_type") or "").strip() or None
    if kind is not None and kind not in DATA_TYPES:
        raise ConfigError(f"data_type must be one of {', '.join(DATA_TYPES)} (or empty to "
                          f"detect it), got {kind!r}")
    if pool in folders:
        if kind in ("tabular", "text"):
            raise ConfigError(f"{pool!r} is a managed folder: data_type {kind!r} needs a dataset")
        if kind is None:
            kind = folder_extension_kind(project.folder(pool).list()) or "image"
    else:
        project.dataset(pool)  # unknown names are refused with the list of datasets
        if kind in ("image", "sound"):
            raise ConfigError(f"{pool!r} is a dataset: data_type {kind!r} needs a managed folder")
        if kind is None:
            kind = "text" if config.get("text_column") else "tabular"
    pos = _int(config, "positive_value", 1, -1_000_000)
    neg = _int(config, "negative_value", -1, -1_000_000)
    if pos == neg:
        raise ConfigError(f"positive_value and negative_value must differ (both are {pos})")
    for key in ("pairs_ds",):
        if not config.get(key, "pairs"):
            raise ConfigError(f"{key} must name a dataset")
    return SimilarityConfig(
        webapp=webapp, data_type=kind, unlabeled=pool,
        embedding_model=config.get("embedding_model") or None,
        pairs_ds=config.get("pairs_ds") or "pairs",
        model_name=config.get("model_name") or "embedding",
        positive_value=pos, negative_value=neg,
        examples_per_view=_int(config, "examples_per_view", 2, 1, MAX_PER_VIEW),
        top_k=_int(config, "top_k", 8, 1, MAX_TOP_K),
        epochs=_int(config, "epochs", 10, 1, 1000),
        match_pool=_int(config, "match_pool", 100, 2),
        field=config.get("field") or None,
        id_column=config.get("id_column") or None,
        text_column=config.get("text_column") or None,
        seed=_int(config, "seed", 0, 0),
    )
