"""Dataset file formats of `dataset import|export`: built-ins and the ones plugins register.

Built in: CSV and Parquet (labelloop.project.datasets) and JSON Lines (one JSON object per
line; nested values are kept as JSON text). Plugins add formats with the hook
`register_dataset_formats(register)`: `register(name, read=None, write=None, extensions=(),
description="", read_options=None, write_options=None)` where

- `read(path, options) -> {dataset suffix or "": DataFrame}` (`path`: a file, or a directory
  for a format that reads one, e.g. YOLO): "" is the dataset named on the
  command line; other keys name extra datasets (an option may rename them, see the format's
  description). Raise LabelloopError naming the line / record on a bad file.
- `write(project, name, path, options) -> int`: write dataset `name` (and what it needs of
  other datasets) to `path` (a file, or a directory the format makes); returns the number
  of records written.
- `read_options` / `write_options`: the `-o KEY=VALUE` keys the import / export takes,
  `{key: one line of help}`. Any other key is refused before anything is read or written,
  with the list of the known ones; a format that declares none takes no options.

An import writes every dataset it produced in one transaction, after the whole file was read:
a bad file writes nothing. `options` are the `-o KEY=VALUE` of the command line.

The built-in formats' options: CSV `encoding` (default utf-8) and `sep` (a character, or
`tab`, `semicolon`, ...; default a comma, a tab for .tsv) both ways; JSON Lines `encoding`
on import; Parquet none.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from .errors import ConflictError, LabelloopError, NotFoundError

if TYPE_CHECKING:
    from .project import Project


@dataclass
class Format:
    name: str
    read: Callable[[Path, dict], dict[str, pd.DataFrame]] | None = None
    write: Callable[[Any, str, Path, dict], int] | None = None
    extensions: tuple[str, ...] = ()
    description: str = ""
    plugin: str = "labelloop"
    builtin: bool = False
    read_options: dict[str, str] = field(default_factory=dict)
    write_options: dict[str, str] = field(default_factory=dict)

    def check_options(self, options: dict, need: str) -> None:
        """Refuse `-o` keys the import (`need` = read) or export (write) doesn't take."""
        known = self.read_options if need == "read" else self.write_options
        unknown = sorted(set(options) - set(known))
        if not unknown:
            return
        what = f"{self.name} {'import' if need == 'read' else 'export'}"
        names = ", ".join(repr(k) for k in unknown)
        if not known:
            raise LabelloopError(f"{what} takes no -o options (got {names}): remove them")
        raise LabelloopError(f"unknown option {names} for {what}: it takes "
                             f"{', '.join(known)}")


# ------------------------------------------------------------------ JSON Lines
def read_jsonl(path: Path, options: dict) -> dict[str, pd.DataFrame]:
    """One JSON object per line; blank lines are skipped; a bad line is named."""
    from .project.datasets.files import check_encoding, not_decoded

    records = []
    encoding = check_encoding(options.get("encoding"))
    with open(path, encoding=encoding) as fh:
        number = 0
        try:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    value = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise LabelloopError(f"{path.name}: line {number} is not valid JSON "
                                         f"({exc.msg} at column {exc.colno}); nothing was "
                                         "imported") from None
                if not isinstance(value, dict):
                    raise LabelloopError(f"{path.name}: line {number} is a JSON "
                                         f"{type(value).__name__}, not an object; JSON Lines "
                                         "datasets hold one object per line; nothing was "
                                         "imported")
                records.append({k: json.dumps(v) if isinstance(v, dict | list) else v
                                for k, v in value.items()})
        except UnicodeDecodeError as exc:
            raise not_decoded(path, encoding, exc, f"near line {number + 1}") from None
    if not records:
        raise LabelloopError(f"{path.name} holds no JSON object: nothing to import")
    return {"": pd.DataFrame.from_records(records)}


def json_value(value: Any) -> Any:
    """A dataset value as plain JSON (numpy scalars, timestamps; NaN becomes None)."""
    if value is None:
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def write_jsonl(project: Project, name: str, path: Path, options: dict) -> int:
    frame = project.dataset(name).read()
    with atomic_file(path) as fh:
        for row in frame.to_dict("records"):
            fh.write(json.dumps({k: json_value(v) for k, v in row.items()}, ensure_ascii=False))
            fh.write("\n")
    return len(frame)


class atomic_file:  # noqa: N801 - used like open()
    """A text file written beside its target and renamed into place when complete."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.tmp = self.path.with_name(f".{self.path.name}.part")

    def __enter__(self):
        try:
            self.fh = open(self.tmp, "w", encoding="utf-8")
        except OSError as exc:
            raise LabelloopError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        return self.fh

    def __exit__(self, typ, exc, tb) -> None:
        self.fh.close()
        if typ is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


# ------------------------------------------------------------------ the registry
CSV_OPTIONS = {"encoding": "the file's text encoding, default utf-8 (e.g. latin-1, cp1252)",
               "sep": "the separator: a character, or tab, comma, semicolon, pipe, space; "
                      "default a comma (a tab for .tsv)"}


def _csv_parquet(name: str) -> Format:
    if name == "csv":
        return Format(name, extensions=(".csv", ".tsv", ".txt"), builtin=True,
                      read_options=CSV_OPTIONS, write_options=CSV_OPTIONS)
    return Format(name, extensions=(".parquet", ".pq"), builtin=True)


def formats(registry: Any | None = None) -> dict[str, Format]:
    """Every format: the built-ins, then the ones plugins register."""
    out = {"csv": _csv_parquet("csv"), "parquet": _csv_parquet("parquet"),
           "jsonl": Format("jsonl", read_jsonl, write_jsonl, (".jsonl", ".ndjson"),
                           "JSON Lines: one object per line", builtin=True,
                           read_options={"encoding": CSV_OPTIONS["encoding"]})}
    pm = getattr(registry, "pm", None)
    if pm is None:
        return out
    from .plugins import call_hook_per_plugin

    def kwargs_for(plugin_name: str) -> dict:
        def register(name: str, read: Callable | None = None, write: Callable | None = None,
                     extensions: Any = (), description: str = "",
                     read_options: dict[str, str] | None = None,
                     write_options: dict[str, str] | None = None) -> None:
            if name in out and out[name].builtin:
                raise LabelloopError(f"plugin {plugin_name}: format {name!r} is built in")
            out[name] = Format(name, read, write, tuple(extensions), description, plugin_name,
                               read_options=dict(read_options or {}),
                               write_options=dict(write_options or {}))

        return {"register": register}

    for _plugin, exc in call_hook_per_plugin(pm, "register_dataset_formats", kwargs_for):
        if exc is not None:
            raise exc
    return out


def format_for(path: Path, fmt: str | None, registry: Any, need: str) -> Format:
    """The format named, or the one of the file's extension, that can `need` (read/write)."""
    known = formats(registry)
    usable = sorted(n for n, f in known.items() if f.builtin or getattr(f, need) is not None)
    if fmt:
        found = known.get(fmt.lower())
        if found is None or not (found.builtin or getattr(found, need) is not None):
            raise LabelloopError(f"unknown {'import' if need == 'read' else 'export'} format "
                                 f"{fmt!r}: use one of {', '.join(usable)}")
        return found
    ext = path.suffix.lower()
    for f in known.values():
        if ext in f.extensions and (f.builtin or getattr(f, need) is not None):
            return f
    raise LabelloopError(f"cannot tell the format of {path.name!r} from its extension: pass "
                         f"--format ({', '.join(usable)})")


# Rows written per step when a large import shows its progress (a multiple of the host's
# chunk size, so the chunk files come out as one write would make them).
WRITE_STEP = 100_000


def _read_csv_progress(path: Path, options: dict) -> pd.DataFrame:
    """Read a CSV file like `read_table_file`, with progress in bytes read."""
    from .progress import CountingReader, progress
    from .project.datasets.files import read_csv

    try:
        with open(path, "rb") as raw, \
                progress(f"reading {path.name}", path.stat().st_size, "bytes") as update:
            return read_csv(path, CountingReader(raw, update), options.get("encoding"),
                            options.get("sep"))
    except OSError as exc:
        raise LabelloopError(f"cannot read {path} as csv: {exc}") from exc


def _read_parquet_progress(path: Path) -> pd.DataFrame:
    """Read a Parquet file like `read_table_file`, batch by batch, with progress in rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from .progress import progress

    try:
        source = pq.ParquetFile(path)
        batches = []
        with progress(f"reading {path.name}", source.metadata.num_rows) as update:
            for batch in source.iter_batches(batch_size=WRITE_STEP // 2):
                batches.append(batch)
                update(batch.num_rows)
        # The file's own schema keeps pandas' metadata: the frame comes out as
        # pd.read_parquet gives it.
        return pa.Table.from_batches(batches, schema=source.schema_arrow).to_pandas()
    except (pa.ArrowException, ValueError, OSError) as exc:
        raise LabelloopError(f"cannot read {path} as parquet: {exc}") from exc


def _write_progress(dataset: Any, frame: pd.DataFrame, conn: Any, label: str) -> None:
    """`dataset.write(frame)` in steps of WRITE_STEP rows (one transaction), showing progress."""
    from .progress import progress

    with progress(label, len(frame)) as update:
        dataset.write(frame.iloc[:WRITE_STEP], conn=conn)
        update(min(WRITE_STEP, len(frame)))
        for start in range(WRITE_STEP, len(frame), WRITE_STEP):
            part = frame.iloc[start:start + WRITE_STEP]
            dataset.append(part, conn=conn)
            update(len(part))


def import_file(project: Project, name: str, path: str | Path, fmt: str | None = None,
                replace: bool = False, options: dict | None = None,
                show_progress: bool = False) -> dict[str, int]:
    """Import a file as dataset `name` (+ the extra datasets its format makes): rows each.

    `show_progress`: a bar on a terminal, periodic log lines otherwise (the CLI)."""
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"no such file: {path}")
    f = format_for(path, fmt, project.registry, "read")
    if not path.is_file() and (f.builtin or f.read is None):
        raise LabelloopError(f"{path} is a directory: a {f.name} import reads a file")
    options = dict(options or {})
    f.check_options(options, "read")
    if f.builtin and f.read is None and f.name == "csv" and show_progress:
        frames = {"": _read_csv_progress(path, options)}
    elif f.builtin and f.read is None and f.name == "parquet" and show_progress:
        frames = {"": _read_parquet_progress(path)}
    elif f.builtin and f.read is None:  # CSV / Parquet
        from .project.datasets import read_table_file

        frames = {"": read_table_file(path, f.name, options.get("encoding"), options.get("sep"))}
    else:
        frames = f.read(path, options)
    targets = {(name if key == "" else options.get(key) or f"{name}_{key}"): frame
               for key, frame in frames.items() if frame is not None}
    datasets = {t: project.dataset(t, create=True) for t in targets}
    if not replace:
        full = [f"{t!r} ({ds.count()} rows)" for t, ds in datasets.items() if ds.exists()]
        if full:
            raise ConflictError(f"dataset {', '.join(full)} already has data: pass --replace "
                                "to overwrite it, or import into another dataset name")
    with project.write_transaction() as conn:
        for t, frame in targets.items():
            if show_progress and len(frame) > WRITE_STEP:
                _write_progress(datasets[t], frame, conn, f"writing {t}")
            else:
                datasets[t].write(frame, conn=conn)
    for t in targets:
        project.declare("datasets", t)
    return {t: len(frame) for t, frame in targets.items()}


def _beside(path: Path, write: Callable[[Path], int]) -> int:
    """`write(tmp)` into a file beside `path`, renamed into place once complete; on failure
    nothing is left behind (a clear error for what the system refused)."""
    tmp = path.with_name(f".{path.name}.part")
    try:
        n = write(tmp)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise LabelloopError(f"cannot write {path}: {exc.strerror or exc}") from exc
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return n


def _export_csv_progress(dataset: Any, path: Path, options: dict) -> int:
    """Write a dataset to CSV chunk by chunk with progress; beside the target, then renamed."""
    from .progress import progress
    from .project.datasets.files import write_csv

    encoding, sep = options.get("encoding"), options.get("sep")

    def write(tmp: Path) -> int:
        done = 0
        with progress(f"exporting {dataset.name}", dataset.count()) as update:
            for chunk in dataset.iter_chunks(WRITE_STEP // 2):
                write_csv(chunk, tmp, path, encoding, sep, append=bool(done))
                done += len(chunk)
                update(len(chunk))
        if not done:  # no rows: the header alone, as a whole-frame export writes it
            write_csv(dataset.read(), tmp, path, encoding, sep)
        return done

    return _beside(path, write)


def _export_parquet_progress(dataset: Any, path: Path) -> int:
    """Write a dataset to Parquet, showing progress while its rows are read chunk by chunk.

    The file is written whole at the end (beside the target, then renamed), with the same call
    as an export without progress, so both give the same file."""
    from .progress import progress

    parts = []
    with progress(f"exporting {dataset.name}", dataset.count()) as update:
        for chunk in dataset.iter_chunks(WRITE_STEP // 2):
            parts.append(chunk)
            update(len(chunk))
    frame = pd.concat(parts, ignore_index=True) if parts else dataset.read()

    def write(tmp: Path) -> int:
        frame.to_parquet(tmp, index=False)
        return len(frame)

    return _beside(path, write)


def export_file(project: Project, name: str, path: str | Path, fmt: str | None = None,
                options: dict | None = None, show_progress: bool = False) -> int:
    """Export dataset `name` to a file; the number of records written.

    `show_progress`: CSV and Parquet exports show a bar on a terminal, periodic log lines
    otherwise."""
    path = Path(path)
    f = format_for(path, fmt, project.registry, "write")
    options = dict(options or {})
    f.check_options(options, "write")
    if f.builtin and f.write is None and show_progress and project.dataset(name).exists():
        if f.name == "csv":
            return _export_csv_progress(project.dataset(name), path, options)
        return _export_parquet_progress(project.dataset(name), path)
    if f.builtin and f.write is None:
        return project.dataset(name).export_file(path, f.name, options.get("encoding"),
                                                 options.get("sep"))
    project.dataset(name)  # unknown names: the usual clear error
    return f.write(project, name, path, options)


def parse_options(pairs: tuple[str, ...] | list[str]) -> dict[str, str]:
    """`KEY=VALUE` strings as a dict."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise LabelloopError(f"option {pair!r} must look like KEY=VALUE")
        out[key.strip()] = value
    return out


__all__ = ["Format", "formats", "import_file", "export_file", "parse_options", "atomic_file",
           "read_jsonl", "write_jsonl"]
