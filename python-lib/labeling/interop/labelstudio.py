"""Label Studio's shapes: label_config, tasks, annotations and predictions (as plain dicts)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

from labelloop.errors import LabelloopError
from labelloop.formats import json_value as json_safe

# The object tags a Choices control can point to, by Labelloop data type.
OBJECT_TAGS = {"text": "Text", "image": "Image", "sound": "Audio", "tabular": "Text"}
LS_USER_PREFIX = "label-studio:"


@dataclass
class ChoicesControl:
    """The `<Choices>` of a label_config: its names and choice values."""

    from_name: str
    to_name: str
    choices: list[str]
    multi_label: bool
    data_key: str | None  # `$text` of the object tag the choices point to

    def result(self, labels: list[str], score: float | None = None) -> list[dict]:
        """Label Studio `result` items choosing `labels`."""
        item: dict[str, Any] = {"from_name": self.from_name, "to_name": self.to_name,
                                "type": "choices", "value": {"choices": list(labels)}}
        if score is not None:
            item["score"] = score
        return [item]

    @property
    def values(self) -> list[str]:
        return self.choices


@dataclass
class LabelsControl:
    """The `<Labels>` of a label_config (typed spans of a text): its names and label values."""

    from_name: str
    to_name: str
    labels: list[str]
    data_key: str | None  # `$text` of the object tag the labels point to

    @property
    def values(self) -> list[str]:
        return self.labels

    def result(self, spans: list[dict], text: str) -> list[dict]:
        """Label Studio `labels` results marking `spans` of `text` (scores kept)."""
        from ..spans.formats import span_results

        return span_results(spans, text, self.from_name, self.to_name)


@dataclass
class RectangleLabelsControl:
    """The `<RectangleLabels>` of a label_config (typed boxes on an image)."""

    from_name: str
    to_name: str
    labels: list[str]
    data_key: str | None  # `$image` of the object tag the rectangles point to

    @property
    def values(self) -> list[str]:
        return self.labels

    def result(self, boxes: list[dict], width: int, height: int) -> list[dict]:
        """Label Studio `rectanglelabels` results for `boxes` (pixels of a `width` x
        `height` image; scores kept)."""
        from ..boxes.formats import box_results

        return box_results(boxes, width, height, self.from_name, self.to_name)


# The control tag of each annotation kind Label Studio has one for.
CONTROL_TAGS = {"choice": "Choices", "spans": "Labels", "boxes": "RectangleLabels"}
_EXAMPLES = {
    "Choices": ("Labelloop's classification webapps need a config like <View><Text "
                "name=\"text\" value=\"$text\"/><Choices name=\"label\" toName=\"text\">"
                "<Choice value=\"A\"/>...</Choices></View>"),
    "Labels": ("Labelloop's text-spans webapps need a config like <View><Labels name=\"label\" "
               "toName=\"text\"><Label value=\"PER\"/>...</Labels><Text name=\"text\" "
               "value=\"$text\"/></View>"),
    "RectangleLabels": ("Labelloop's image-boxes webapps need a config like <View><Image "
                        "name=\"image\" value=\"$image\"/><RectangleLabels name=\"label\" "
                        "toName=\"image\"><Label value=\"cat\"/>...</RectangleLabels></View>"),
}


def parse_label_config(xml: str | None, kind: str | None = None
                       ) -> ChoicesControl | LabelsControl | RectangleLabelsControl | None:
    """The control of a label_config that answers for annotation kind ``kind`` (`choice`: the
    first `<Choices>`, `spans`: the first `<Labels>`, `boxes`: the first `<RectangleLabels>`;
    None: a `<Choices>`, else a `<Labels>`, else a `<RectangleLabels>`); None when there is
    no config."""
    if not xml or not str(xml).strip():
        return None
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise LabelloopError(f"label_config is not valid XML: {exc}") from exc
    if kind is not None and kind not in CONTROL_TAGS:
        raise LabelloopError(f"Label Studio has no control for annotation kind {kind!r} "
                             f"(Labelloop maps {', '.join(CONTROL_TAGS)})")
    tags = (CONTROL_TAGS[kind],) if kind else ("Choices", "Labels", "RectangleLabels")
    control = None
    for tag in tags:
        control = next((el for el in root.iter() if el.tag == tag), None)
        if control is not None:
            break
    if control is None:
        raise LabelloopError(f"label_config has no <{tags[0]}> tag: {_EXAMPLES[tags[0]]}")
    from_name = control.get("name") or "label"
    to_name = control.get("toName") or ""
    data_key = None
    for el in root.iter():
        if el.get("name") == to_name.split(",")[0] and (el.get("value") or "").startswith("$"):
            data_key = el.get("value")[1:]
            break
    if control.tag in ("Labels", "RectangleLabels"):
        values = [c.get("value") or c.get("alias") or "" for c in control.iter("Label")]
        cls = LabelsControl if control.tag == "Labels" else RectangleLabelsControl
        return cls(from_name, to_name, [v for v in values if v], data_key)
    values = [c.get("value") or c.get("alias") or "" for c in control.iter("Choice")]
    return ChoicesControl(from_name, to_name, [v for v in values if v],
                          (control.get("choice") or "single").lower() == "multiple", data_key)


def make_label_config(categories: list[str], data_type: str, data_key: str,
                      multi_label: bool = False, kind: str = "choice") -> str:
    """A label_config Labelloop understands, for the README and for `ml-backend-predict`
    (``kind="spans"``: `<Labels>` over a text; ``kind="boxes"``: `<RectangleLabels>` over
    an image)."""
    tag = OBJECT_TAGS.get(data_type, "Text")
    if kind == "boxes":
        items = "".join(f'<Label value="{_xml_attr(c)}"/>' for c in categories)
        return (f'<View><Image name="{data_key}" value="${data_key}"/><RectangleLabels '
                f'name="label" toName="{data_key}">{items}</RectangleLabels></View>')
    if kind == "spans":
        items = "".join(f'<Label value="{_xml_attr(c)}"/>' for c in categories)
        return (f'<View><Labels name="label" toName="{data_key}">{items}</Labels>'
                f'<Text name="{data_key}" value="${data_key}"/></View>')
    choice = ' choice="multiple"' if multi_label else ""
    items = "".join(f'<Choice value="{_xml_attr(c)}"/>' for c in categories)
    return (f'<View><{tag} name="{data_key}" value="${data_key}"/>'
            f'<Choices name="label" toName="{data_key}"{choice}>{items}</Choices></View>')


def _xml_attr(value: str) -> str:
    return (value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")
            .replace(">", "&gt;"))


def annotation_labels(annotation: dict) -> list[str]:
    """The chosen values of an annotation's (or prediction's) choices results."""
    out: list[str] = []
    for item in annotation.get("result") or []:
        if not isinstance(item, dict):
            continue
        value = item.get("value") or {}
        if item.get("type", "choices") == "choices" and isinstance(value.get("choices"), list):
            out += [str(v) for v in value["choices"]]
    return out


def annotator_name(completed_by: Any) -> str:
    """Labelloop's annotator for Label Studio's `completed_by` (a user id or a user dict)."""
    if isinstance(completed_by, dict):
        email = completed_by.get("email") or completed_by.get("username")
        if email:
            return str(email)
        completed_by = completed_by.get("id")
    if completed_by is None or completed_by == "":
        return f"{LS_USER_PREFIX}unknown"
    return f"{LS_USER_PREFIX}{completed_by}" if re.fullmatch(r"\d+", str(completed_by)) \
        else str(completed_by)


def completed_by_of(annotator: str) -> Any:
    """Label Studio's `completed_by` for a Labelloop annotator (inverse of annotator_name)."""
    if annotator.startswith(LS_USER_PREFIX) and annotator[len(LS_USER_PREFIX):].isdigit():
        return int(annotator[len(LS_USER_PREFIX):])
    return annotator


def task_data(row: dict, data_key: str, text_column: str | None = None) -> dict:
    """A Label Studio task's `data` for a pool row: every column, and the item under data_key."""
    data = {str(k): json_safe(v) for k, v in row.items()}
    source = text_column or (data_key if data_key in data else None)
    if source is not None and source in data:
        data[data_key] = data[source]
    elif "path" in data:
        data[data_key] = data["path"]
    return data


def config_for(params: dict, data_type: str, kind: str = "choice") -> str:
    """The label_config of a recipe / step: given verbatim, or built from its categories
    (a `kind` config: `choice` a `<Choices>`, `boxes` a `<RectangleLabels>`)."""
    config = (params.get("label_config") or "").strip()
    if config:
        parse_label_config(config)  # a clear error now rather than a backend's 500 later
        return config
    categories = [c for c in params.get("categories") or [] if c]
    if len(categories) < (1 if kind == "boxes" else 2):
        raise LabelloopError("give the ML backend a label config, or at least "
                             f"{'one category' if kind == 'boxes' else 'two categories'} "
                             "to build one from")
    return make_label_config(categories, data_type, params.get("data_key") or
                             ("image" if data_type == "image" else "text"), kind=kind)
