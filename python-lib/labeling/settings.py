"""A labeling webapp's settings (its validated webapp.json params) turned into an engine config.

The host checks a webapp's params once against its descriptor (`labelloop.params.
validate_config`: types, ranges, mandatory values, defaults); `parse_settings` takes that
validated config and checks only what a schema cannot say: names read as lists of categories
(empty, twice, too few), the label column name, settings that must differ or do not apply
together, and the named datasets and columns against the project's data.

Settings keys (webapp.json param names, as the Dataiku plugin had them, plus Labelloop's):

| key | type | meaning |
|---|---|---|
| `unlabeled` | DATASET (tabular, text) / FOLDER (image, sound) | the pool of items to label |
| `categories` | KEY_VALUE_LIST | category name -> optional description (kind `choice`) |
| `entity_types` | KEY_VALUE_LIST | entity type -> optional description (kind `spans`) |
| `overlapping_spans` | BOOLEAN, default false | kind `spans`: spans may overlap |
| `object_classes` | KEY_VALUE_LIST | object class -> optional description (kind `boxes`) |
| `labels_ds` | DATASET | written: unlabeled columns (or `path`) + label + label id |
| `metadata_ds` | DATASET | written: date, data_id, comment, session, status, annotator, label, label id |
| `label_col_name` | STRING, default `label` | name of the label column |
| `queries_ds` | DATASET, optional | the Query Sampler's output: most uncertain items first |
| `multi_label` | BOOLEAN, default false | a label is a list of categories |
| `labels_per_annotator` | BOOLEAN, default false | every annotator sees every item (agreement) |
| `reservation_seconds` | INT, default 120 | how long served items stay reserved for an annotator who does not answer (an answer renews them once half of that is gone) |
| `max_reserved` | INT, default 50 | the most items one annotator may hold at once (and the largest batch) |
| `id_column` | COLUMN, optional | the pool column holding item ids (else a hash of the row) |
| `columns` | COLUMNS, optional | the columns to show (default: all) |
| `text_column` | COLUMN, optional | text: the column holding the text |
| `seed` | INT, default 0 | the random order used when there are no queries |
| `batch_size` | INT, default 20 (1-500) | the items the page asks for at once |
| `allow_relabel` | BOOLEAN, default false | shared labels: an annotator may answer an item someone else answered (a new annotation; the earlier one stays in the history); otherwise 409 |
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from labelloop.errors import ConfigError, LabelloopError

from .kinds import kind_class

DATA_TYPES = ("tabular", "text", "image", "sound")
FOLDER_TYPES = ("image", "sound")
DEFAULT_RESERVATION_SECONDS = 120
DEFAULT_MAX_RESERVED = 50
_LABEL_COL_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_ -]*$")
@dataclass
class EngineConfig:
    """Everything the labeling engine needs to know about one webapp instance."""

    webapp: str
    data_type: str
    unlabeled: str
    categories: dict[str, str | None]
    labels_ds: str
    metadata_ds: str
    label_col: str = "label"
    queries_ds: str | None = None
    multi_label: bool = False
    per_annotator: bool = False
    reservation_seconds: float = DEFAULT_RESERVATION_SECONDS
    id_column: str | None = None
    columns: list[str] | None = None
    text_column: str | None = None
    seed: int = 0
    max_reserved: int = DEFAULT_MAX_RESERVED
    extra: dict[str, Any] = field(default_factory=dict)
    allow_relabel: bool = False
    kind: str = "choice"  # the annotation kind (labeling.kinds); its settings are in `extra`

    @property
    def from_folder(self) -> bool:
        """Whether items are files of a managed folder (image, sound)."""
        return self.data_type in FOLDER_TYPES

    @property
    def label_id_col(self) -> str:
        return f"{self.label_col}_id"


def _categories(raw: Any, param: str = "categories", minimum: int = 2
                ) -> dict[str, str | None]:
    what = "categories" if param == "categories" else param.replace("_", " ")
    if raw is None or raw == "" or raw == [] or raw == {}:
        if param == "categories":
            raise ConfigError("no categories: add at least two categories (name -> optional "
                              "description) in the webapp settings")
        raise ConfigError(f"no {what}: add at least {'one' if minimum == 1 else minimum} "
                          f"(name -> optional description) in the webapp setting {param!r}")
    pairs: list[tuple[Any, Any]]
    if isinstance(raw, Mapping):
        pairs = list(raw.items())
    elif isinstance(raw, list):
        pairs = []
        for x in raw:
            if isinstance(x, Mapping) and "from" in x:
                pairs.append((x["from"], x.get("to")))
            elif isinstance(x, str):
                pairs.append((x, None))
            else:
                raise ConfigError(f"{param}: cannot read {x!r}; give a list of "
                                  "{\"from\": name, \"to\": description} or an object")
    else:
        raise ConfigError(f"{param} must be an object {{name: description}}, got {raw!r}")
    out: dict[str, str | None] = {}
    for name, desc in pairs:
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{param}: a name is empty ({name!r}); give each one a name"
                              if param != "categories" else
                              f"categories: a category name is empty ({name!r}); give each "
                              "category a name")
        name = name.strip()
        if name in out:
            raise ConfigError(f"{param}: {name!r} is listed twice; keep one")
        out[name] = None if desc in (None, "") else str(desc)
    if len(out) < minimum:
        raise ConfigError(f"only one category ({next(iter(out))!r}): add at least two")
    return out


def _name(config: Mapping, key: str, what: str, required: bool = True) -> str | None:
    value = config.get(key)
    if value in (None, ""):
        if required:
            raise ConfigError(f"setting {key!r} is missing: choose the {what}")
        return None
    return value


def parse_settings(config: Mapping[str, Any], data_type: str, webapp: str,
                   project: Any = None, kind: str = "choice") -> EngineConfig:
    """A labeling webapp's settings, validated by its params (`validate_config`), as an
    engine config; with a project, checked against its data.

    `kind` names the webapp's annotation kind (`labeling.kinds`), among those the project's
    plugins register: its types come from its setting, its own settings go to `extra`."""
    if data_type not in DATA_TYPES:
        raise ConfigError(f"unknown data type {data_type!r}: use one of {', '.join(DATA_TYPES)}")
    kind_cls = kind_class(kind, project)
    if kind_cls.data_types and data_type not in kind_cls.data_types:
        raise ConfigError(f"annotation kind {kind!r} is for {', '.join(kind_cls.data_types)} "
                          f"items, not {data_type}")
    pool = "managed folder" if data_type in FOLDER_TYPES else "dataset"
    unlabeled = _name(config, "unlabeled", f"{pool} of items to label")
    labels_ds = _name(config, "labels_ds", "dataset the labels are written to")
    metadata_ds = _name(config, "metadata_ds", "dataset the labeling metadata is written to")
    queries_ds = _name(config, "queries_ds", "queries dataset", required=False)
    label_col = config.get("label_col_name") or "label"
    if not isinstance(label_col, str) or not _LABEL_COL_RE.match(label_col):
        raise ConfigError(f"label column name {label_col!r} is not valid: use letters, digits "
                          "and '_', starting with a letter")
    names = {"labels_ds": labels_ds, "metadata_ds": metadata_ds, "queries_ds": queries_ds,
             "unlabeled": unlabeled}
    seen: dict[str, str] = {}
    for key, value in names.items():
        if value is None or (key == "unlabeled" and data_type in FOLDER_TYPES):
            continue
        if value in seen:
            raise ConfigError(f"settings {seen[value]!r} and {key!r} both name {value!r}: "
                              "each must be a different dataset")
        seen[value] = key
    # Types and ranges (reservation_seconds, max_reserved, batch_size, seed, columns) are the
    # descriptor's: validate_config checked them.
    cfg = EngineConfig(
        webapp=webapp, data_type=data_type, unlabeled=unlabeled or "",
        categories={} if kind_cls.types_param is None else _categories(
            config.get(kind_cls.types_param), kind_cls.types_param, kind_cls.min_types),
        labels_ds=labels_ds or "", metadata_ds=metadata_ds or "", label_col=label_col,
        queries_ds=queries_ds, multi_label=bool(config.get("multi_label", False)),
        per_annotator=bool(config.get("labels_per_annotator", False)),
        reservation_seconds=config.get("reservation_seconds") or DEFAULT_RESERVATION_SECONDS,
        id_column=config.get("id_column") or None, columns=config.get("columns") or None,
        text_column=config.get("text_column") or None, seed=config.get("seed") or 0,
        max_reserved=config.get("max_reserved") or DEFAULT_MAX_RESERVED,
        allow_relabel=bool(config.get("allow_relabel", False)),
        kind=kind, extra=kind_cls.settings(config),
    )
    if data_type in FOLDER_TYPES and (cfg.id_column or cfg.columns or cfg.text_column):
        raise ConfigError(f"{data_type} items are files: id_column, columns and text_column "
                          "do not apply; clear them")
    if project is not None:
        check_against_project(cfg, project)
    return cfg


def check_against_project(cfg: EngineConfig, project: Any) -> None:
    """Check the named datasets, folder and columns exist, with a fix for each problem."""
    try:
        if cfg.from_folder:
            project.folder(cfg.unlabeled)
            pool_columns = ["path"]
        else:
            ds = project.dataset(cfg.unlabeled)
            if not ds.exists():
                raise ConfigError(f"the unlabeled dataset {cfg.unlabeled!r} has no data yet: "
                                  f"import it (`labelloop dataset import {cfg.unlabeled} FILE`)")
            pool_columns = ds.columns
    except ConfigError:
        raise
    except LabelloopError as exc:
        raise ConfigError(f"setting 'unlabeled': {exc}") from exc
    for key in ("id_column", "text_column"):
        col = getattr(cfg, key)
        if col is not None and col not in pool_columns:
            raise ConfigError(f"{key} {col!r} is not a column of {cfg.unlabeled!r} "
                              f"(columns: {', '.join(pool_columns)})")
    if cfg.columns:
        missing = [c for c in cfg.columns if c not in pool_columns]
        if missing:
            raise ConfigError(f"columns to show {', '.join(map(repr, missing))} are not in "
                              f"{cfg.unlabeled!r} (columns: {', '.join(pool_columns)})")
    for reserved in (cfg.label_col, cfg.label_id_col):
        if reserved in pool_columns:
            raise ConfigError(f"the unlabeled data already has a column {reserved!r}: choose "
                              "another label column name")
    if cfg.data_type == "text" and cfg.text_column is None:
        cfg.text_column = _guess_text_column(project.dataset(cfg.unlabeled), cfg)


def _guess_text_column(ds: Any, cfg: EngineConfig) -> str:
    strings = [c["name"] for c in ds.schema if c["type"] == "string"
               and c["name"] != cfg.id_column]
    if "text" in strings:  # a column named text wins, even when not among those shown
        return "text"
    if cfg.columns:
        strings = [c for c in cfg.columns if c in strings] or strings
    if not strings:
        raise ConfigError(f"text labeling needs a column of strings in {cfg.unlabeled!r}; it "
                          f"has {', '.join(ds.columns)}")
    return "text" if "text" in strings else strings[0]
