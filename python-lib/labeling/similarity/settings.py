"""A similarity webapp's params (webapp.json) turned into a checked configuration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from labelloop.errors import ConfigError

from ..features import folder_extension_kind
from ..settings import EngineConfig


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


def _given(config: dict, key: str, default: Any) -> Any:
    """A param's value, or its default when unset (the params declared its type and range)."""
    value = config.get(key)
    return default if value is None or value == "" else value


def parse_settings(config: dict, webapp: str, project: Any) -> SimilarityConfig:
    """A similarity webapp's params, validated by its descriptor (`validate_config`: types,
    ranges, choices), checked against the project and across params; a clear error when wrong."""
    pool = config.get("unlabeled")
    if not pool:
        raise ConfigError("no pool: set 'unlabeled' to a dataset (rows, texts) or a managed "
                          "folder (images, sounds)")
    folders = project.config.get("folders", {})
    kind = config.get("data_type") or None
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
    pos, neg = _given(config, "positive_value", 1), _given(config, "negative_value", -1)
    if pos == neg:
        raise ConfigError(f"positive_value and negative_value must differ (both are {pos})")
    return SimilarityConfig(
        webapp=webapp, data_type=kind, unlabeled=pool,
        embedding_model=config.get("embedding_model") or None,
        pairs_ds=config.get("pairs_ds") or "pairs",
        model_name=config.get("model_name") or "embedding",
        positive_value=pos, negative_value=neg,
        examples_per_view=_given(config, "examples_per_view", 2),
        top_k=_given(config, "top_k", 8), epochs=_given(config, "epochs", 10),
        match_pool=_given(config, "match_pool", 100),
        field=config.get("field") or None,
        id_column=config.get("id_column") or None,
        text_column=config.get("text_column") or None,
        seed=_given(config, "seed", 0),
    )
