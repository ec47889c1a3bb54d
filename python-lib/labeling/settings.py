"""A labeling webapp's settings (its validated webapp.json params) turned into an engine config.

Settings keys (webapp.json param names, as the Dataiku plugin had them, plus Labelloop's):

| key | type | meaning |
|---|---|---|
| `unlabeled` | DATASET (tabular, text) / FOLDER (image, sound) | the pool of items to label |
| `categories` | KEY_VALUE_LIST | category name -> optional description (kind `choice`) |
| `entity_types` | KEY_VALUE_LIST | entity type -> optional description (kind `spans`) |
| `overlapping_spans` | BOOLEAN, default false | kind `spans`: spans may overlap |
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
MAX_RESERVED = 500
_LABEL_COL_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_ -]*$")
MAX_RESERVATION_SECONDS = 86400
MAX_BATCH_SIZE = 500


def check_batch_size(value: Any) -> None:
    """The page's `batch_size` setting, when given: an integer from 1 to MAX_BATCH_SIZE."""
    if value is None or value == "":
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value) \
            or not 1 <= value <= MAX_BATCH_SIZE:
        raise ConfigError(f"batch_size must be an integer from 1 to {MAX_BATCH_SIZE}, got "
                          f"{value!r}")


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
    if not isinstance(value, str):
        raise ConfigError(f"setting {key!r} must be a name, got {value!r}")
    return value


def parse_settings(config: Mapping[str, Any], data_type: str, webapp: str,
                   project: Any = None, kind: str = "choice") -> EngineConfig:
    """Validate a labeling webapp's settings; with a project, check them against its data.

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
    try:
        seconds = float(config.get("reservation_seconds", DEFAULT_RESERVATION_SECONDS))
    except (TypeError, ValueError):
        raise ConfigError("reservation_seconds must be a number of seconds") from None
    if not 0 < seconds <= MAX_RESERVATION_SECONDS:
        raise ConfigError(f"reservation_seconds must be positive and at most "
                          f"{MAX_RESERVATION_SECONDS} (a day), got {seconds}")
    check_batch_size(config.get("batch_size"))
    columns = config.get("columns") or None
    if columns is not None and (not isinstance(columns, list)
                                or not all(isinstance(c, str) for c in columns)):
        raise ConfigError(f"columns must be a list of column names, got {columns!r}")
    try:
        seed = int(config.get("seed") or 0)
    except (TypeError, ValueError):
        raise ConfigError(f"seed must be an integer, got {config.get('seed')!r}") from None
    cap = config.get("max_reserved", DEFAULT_MAX_RESERVED)
    if isinstance(cap, float) and cap.is_integer():
        cap = int(cap)
    if not isinstance(cap, int) or isinstance(cap, bool) or not 1 <= cap <= MAX_RESERVED:
        raise ConfigError(f"max_reserved must be a whole number of items from 1 to "
                          f"{MAX_RESERVED}, got {cap!r}")
    cfg = EngineConfig(
        webapp=webapp, data_type=data_type, unlabeled=unlabeled or "",
        categories={} if kind_cls.types_param is None else _categories(
            config.get(kind_cls.types_param), kind_cls.types_param, kind_cls.min_types),
        labels_ds=labels_ds or "", metadata_ds=metadata_ds or "", label_col=label_col,
        queries_ds=queries_ds, multi_label=bool(config.get("multi_label", False)),
        per_annotator=bool(config.get("labels_per_annotator", False)),
        reservation_seconds=seconds, id_column=config.get("id_column") or None,
        columns=columns, text_column=config.get("text_column") or None, seed=seed,
        max_reserved=cap,
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
