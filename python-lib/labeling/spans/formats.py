"""Span file formats of `dataset import|export`: CoNLL 2003 and spaCy-style JSON Lines,
and the span results of Label Studio JSON (used by ``labeling.interop.formats``).

A span dataset is a labels dataset: the text column (``text``), the label column holding
each text's spans as JSON (``[{"start", "end", "label"}]``, character offsets, end
exclusive) and its label id. Options: ``label_col`` (default ``label``), ``text_column``
(default ``text``).

**conll** (`.conll`): one token per line, its BIO tag in the last column (written as
``TOKEN -X- _ TAG``, CoNLL 2003's four columns with the part-of-speech and chunk columns
unknown), a blank line between sentences; ``-DOCSTART-`` lines are skipped. CoNLL keeps no
spacing, so an import joins a sentence's tokens with one space. An export tokenizes each
text as the span tagger does; a span that does not start and end on token boundaries, or
that overlaps another, cannot be written as BIO tags and is refused by name.

**spacy-jsonl**: one ``{"text", "spans": [{"start", "end", "label"}]}`` object per line
(other keys become columns, and columns become keys on export); offsets are kept as they are.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from labelloop.errors import LabelloopError
from labelloop.formats import atomic_file, json_value

from .tokens import (
    Tokens,
    dumps_spans,
    parse_spans,
    sort_spans,
    spans_to_tags,
    tags_to_spans,
    tokenize,
)

DOCSTART = "-DOCSTART-"


def _columns(options: dict) -> tuple[str, str]:
    return options.get("label_col") or "label", options.get("text_column") or "text"


def _frame(texts: list[str], spans: list[list[dict]], label_col: str, text_column: str,
           extra: list[dict] | None = None) -> pd.DataFrame:
    if not texts:
        raise LabelloopError("the file holds no text: nothing was imported")
    frame = pd.DataFrame.from_records(extra) if extra and any(extra) else pd.DataFrame()
    frame[text_column] = texts
    frame[label_col] = [dumps_spans(s) for s in spans]
    frame[f"{label_col}_id"] = np.arange(1, len(texts) + 1, dtype=np.int64)
    return frame


def _labeled_rows(project: Any, name: str, options: dict) -> tuple[str, str, pd.DataFrame]:
    label_col, text_column = _columns(options)
    df = project.dataset(name).read()
    for col in (text_column, label_col):
        if col not in df.columns:
            raise LabelloopError(f"dataset {name!r} has no column {col!r} (columns: "
                                 f"{', '.join(map(str, df.columns))}): pass -o "
                                 f"{'text_column' if col == text_column else 'label_col'}=...")
    df = df[df[label_col].notna()]
    return label_col, text_column, df


# ------------------------------------------------------------------ CoNLL 2003
def read_conll(path: Path, options: dict) -> dict[str, pd.DataFrame]:
    """CoNLL 2003: a sentence per block, a token and its BIO tag per line."""
    label_col, text_column = _columns(options)
    texts, spans = [], []
    words: list[str] = []
    tags: list[str] = []

    def close() -> None:
        if words:
            text = " ".join(words)
            starts = [0]
            for w in words[:-1]:
                starts.append(starts[-1] + len(w) + 1)
            tokens = Tokens(list(words), starts, [b + len(w) for b, w in
                                                   zip(starts, words, strict=True)])
            texts.append(text)
            spans.append(tags_to_spans(tokens, tags))
        words.clear()
        tags.clear()

    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            fields = line.split()
            if not fields:
                close()
                continue
            if fields[0] == DOCSTART:
                close()
                continue
            if len(fields) < 2:
                raise LabelloopError(f"{path.name}: line {n}: expected a token and its tag, "
                                     f"got {line.strip()!r}; nothing was imported")
            tag = fields[-1]
            if tag != "O" and (tag[:2] not in ("B-", "I-") or len(tag) < 3):
                raise LabelloopError(f"{path.name}: line {n}: {tag!r} is not a BIO tag (O, "
                                     "B-TYPE or I-TYPE); nothing was imported")
            words.append(fields[0])
            tags.append(tag)
    close()
    return {"": _frame(texts, spans, label_col, text_column)}


def text_tags(text: str, spans: list[dict], where: str) -> tuple[list[str], list[str]]:
    """A text's tokens and BIO tags; a span off token boundaries or overlapping is refused."""
    tokens = tokenize(text)
    tags, dropped = spans_to_tags(tokens, spans)
    back = tags_to_spans(tokens, tags)
    if dropped or back != [{k: s[k] for k in ("start", "end", "label")} for s in spans]:
        kept = {(s["start"], s["end"], s["label"]) for s in back}
        bad = next(s for s in spans if (s["start"], s["end"], s["label"]) not in kept)
        raise LabelloopError(
            f"{where}: span {bad['start']}-{bad['end']} {bad['label']} "
            f"({text[bad['start']:bad['end']]!r}) "
            + ("overlaps another span" if dropped else "does not start and end on token "
               "boundaries")
            + ": BIO tags cannot hold it; export as spacy-jsonl or label-studio instead")
    return tokens.words, tags


def write_conll(project: Any, name: str, path: Path, options: dict) -> int:
    label_col, text_column, df = _labeled_rows(project, name, options)
    count = 0
    with atomic_file(path) as fh:
        fh.write(f"{DOCSTART} -X- -X- O\n\n")
        for k, (text, value) in enumerate(zip(df[text_column], df[label_col], strict=True)):
            text = "" if text is None else str(text)
            where = f"row {k + 1} of {name!r}"
            words, tags = text_tags(text, parse_spans(value, text, where), where)
            if not words:
                continue
            fh.write("".join(f"{w} -X- _ {t}\n" for w, t in zip(words, tags, strict=True)))
            fh.write("\n")
            count += 1
    return count


# ------------------------------------------------------------------ spaCy JSON Lines
def read_spacy_jsonl(path: Path, options: dict) -> dict[str, pd.DataFrame]:
    """One {"text", "spans"} object per line; other keys become columns."""
    label_col, text_column = _columns(options)
    texts, spans, extra = [], [], []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            where = f"{path.name}: line {n}"
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise LabelloopError(f"{where}: not valid JSON ({exc}); nothing was "
                                     "imported") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise LabelloopError(f'{where}: expected an object with a "text" string; '
                                     "nothing was imported")
            text = record.pop("text")
            texts.append(text)
            spans.append(parse_spans(record.pop("spans", []), text, where))
            for key in (label_col, f"{label_col}_id", text_column):
                record.pop(key, None)
            extra.append({str(k): json.dumps(v) if isinstance(v, dict | list) else v
                          for k, v in record.items()})
    return {"": _frame(texts, spans, label_col, text_column, extra)}


def write_spacy_jsonl(project: Any, name: str, path: Path, options: dict) -> int:
    label_col, text_column, df = _labeled_rows(project, name, options)
    others = [c for c in df.columns if c not in (text_column, label_col, f"{label_col}_id")]
    count = 0
    with atomic_file(path) as fh:
        for k, row in enumerate(df.to_dict("records")):
            text = "" if row[text_column] is None else str(row[text_column])
            spans = parse_spans(row[label_col], text, f"row {k + 1} of {name!r}")
            record = {"text": text, "spans": spans,
                      **{c: json_value(row[c]) for c in others}}
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            count += 1
    return count


# ------------------------------------------------------------------ Label Studio `labels`
def has_span_results(annotation: Any) -> bool:
    """Whether an annotation or prediction holds Label Studio `labels` (span) results."""
    return isinstance(annotation, dict) and any(
        isinstance(r, dict) and r.get("type") == "labels" for r in annotation.get("result") or [])


def spans_of_results(annotation: dict, text: str | None, where: str) -> list[dict]:
    """The spans of an annotation's (or prediction's) `labels` results, scores kept."""
    spans = []
    for r in annotation.get("result") or []:
        if not isinstance(r, dict) or r.get("type") != "labels":
            continue
        value = r.get("value") or {}
        labels = value.get("labels") or []
        if not isinstance(labels, list) or not labels:
            raise LabelloopError(f"{where}: a labels result needs value.labels, got {value!r}")
        for label in labels:
            span = {"start": value.get("start"), "end": value.get("end"), "label": str(label)}
            parse_spans([span], text, where)
            if r.get("score") is not None:
                span["score"] = r["score"]
            spans.append(span)
    return sort_spans(spans)


def span_results(spans: list[dict], text: str, from_name: str, to_name: str) -> list[dict]:
    """Label Studio `labels` results for spans (with `score` when they have one)."""
    out = []
    for k, s in enumerate(sort_spans(spans)):
        item: dict[str, Any] = {
            "id": f"s{k + 1}", "from_name": from_name, "to_name": to_name, "type": "labels",
            "value": {"start": s["start"], "end": s["end"], "text": text[s["start"]:s["end"]],
                      "labels": [s["label"]]}}
        if "score" in s:
            item["score"] = s["score"]
        out.append(item)
    return out


def is_span_column(values: pd.Series) -> bool:
    """Whether a label column holds span lists (JSON lists of objects) rather than categories."""
    seen = False
    for v in values.dropna().head(1000):
        if not isinstance(v, str) or not v.lstrip().startswith("["):
            return False
        try:
            parsed = json.loads(v)
        except ValueError:
            return False
        if not isinstance(parsed, list) or any(not isinstance(s, dict) for s in parsed):
            return False
        seen = seen or bool(parsed)
    return seen


def register_span_formats(register: Any) -> None:
    """CoNLL 2003 and spaCy-style JSON Lines (see the module docstring)."""
    columns = {"label_col": "the column of the spans, as JSON (default label)",
               "text_column": "the column of the texts (default text)"}
    register("conll", read_conll, write_conll, (".conll", ".conll03"),
             "CoNLL 2003 NER: a token and its BIO tag per line, spans of a text column",
             read_options=columns, write_options=columns)
    register("spacy-jsonl", read_spacy_jsonl, write_spacy_jsonl, (),
             'spaCy-style JSON Lines: {"text", "spans": [{"start", "end", "label"}]}',
             read_options=columns, write_options=columns)
