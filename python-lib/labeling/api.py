"""The JSON API of a labeling webapp: routes over the engine, and a reusable backend.

Routes (mounted by the host under `/api/v1/webapps/<instance>/`):

| route | payload | answer |
|---|---|---|
| `GET config` | | categories, multi_label, al_enabled, session, model_version, max_reserved, halting thresholds, warnings, preparing (`{"what", "done", "total"}` or null), and what the kind adds (`boxes`: `object_classes`, `[{"name", "description", "colour", "key"}]`); cheap enough to poll every second |
| `GET batch` | `size` (1 to the webapp's `max_reserved`, default 20) | `{"items": [{"id", "data", "suggestion", "halting", "uncertainty"}], "stats", "session", "preparing", "is_last_batch", "done"}`; the items are reserved for the caller (`boxes`: `data` has the image's `width` and `height`, `suggestion` is `{"boxes": [{"x", "y", "w", "h", "label", "score"}], "model_version"}`) |
| `POST labels` | `{"id", "label", "comment"?}` (the answer's field is the kind's: `label` for `choice`, `spans` for `spans`, `boxes` for `boxes`: `[{"x", "y", "w", "h", "label"}]` in pixels of the original image) | `{"label_id", "stats"}`; labeling an item again changes the label; a bad part is a 400 naming it (e.g. `boxes/2 (...): x+w = 341 is outside the image (320 px wide)`); with overlap, 409 when k others labeled the item already |
| `POST skips` | `{"id", "comment"?}` | `{"label_id", "stats"}` |
| `GET annotations` | `before` (label id), `limit` (1-500, default 50) | `{"annotations": [...], "next_before"}`, the caller's, newest first |
| `GET stats` | | `{"labeled", "skipped", "total", "remaining", "per_label", "session"}`; with `annotators_per_item` k > 1 also `"overlap": {"k", "complete", "partial", "open"}` (labeled/skipped/per_label the caller's) |
| `GET media` | `id` (image / sound webapps) | the item's file, with its content type, `ETag`, `Cache-Control` |
| `POST release` | `{"ids": [...]}` | `{"released"}`; the caller's reservations of those items end now |
| `GET agreement` | | `{"kind", "items", "annotators", "krippendorff_alpha", "fleiss_kappa", "reasons", "pairwise": [{"a", "b", "n", "cohen_kappa", "agreement" or "f1"}], "per_annotator": [{"annotator", "n", "compared", "agreement", "quality"}], "per_category": [{"category", "answers", "pairs", "confused", "confusion_rate", "confused_with"}], "confusion": {"categories", "counts"}, "scope", "note", "role"}` over the items two annotators or more answered (labeling.quality.agreement); non-admins see only their own row and pairs |
| `GET learning-curve` | | `{"enough", "points", "given", "random", "accuracy", "given_reached", "random_reached", "computed_at", "summary"}` or `{"enough": false, "message"}` (labeling.report) |
| `GET review` (role reviewer; both review routes exist when the webapp has a `consensus_ds`) | `size` (1-500, default 20) | `{"items": [{"id", "data", "answers": [{"annotator", "label"}], "consensus", "agreement", "source", "suggestion", "reason", "score"}], "size"}`: the answered items most likely wrong, most suspicious first (`size`: how many are in the queue); scores in labeling.quality.review |
| `POST review` (role reviewer) | `{"id", "label", "comment"?}` (`label` in the shape of the kind's answer) | the item's consensus row, now `source: reviewed` with the caller as reviewer; the item leaves the review queue |

A webapp component's backend.py is one line: `create_backend = webapp_backend("tabular")`
(`labeling.ui.webapp_backend`: these routes and the labeling page), or with another annotation
kind `webapp_backend("text", kind="spans")` or `webapp_backend("image", kind="boxes")`.

The route schemas check the shape of every body and query (the host answers 400 before a
handler runs); the webapp's annotation kind checks what a schema cannot.
"""

from __future__ import annotations

import html
import logging
import threading
from collections.abc import Callable
from typing import Any

from .engine import MAX_BATCH, MAX_COMMENT, LabelingEngine
from .settings import EngineConfig, parse_settings

log = logging.getLogger(__name__)

_ID = {"type": "string", "minLength": 1, "maxLength": 4096, "description": "the item id"}
_COMMENT = {"type": ["string", "null"], "maxLength": MAX_COMMENT}
BATCH_SCHEMA = {"type": "object", "properties": {
    "size": {"type": "integer", "minimum": 1, "maximum": MAX_BATCH, "default": 20}}}
SKIP_SCHEMA = {"type": "object", "required": ["id"], "additionalProperties": False,
               "properties": {"id": _ID, "comment": _COMMENT}}
ANNOTATIONS_SCHEMA = {"type": "object", "properties": {
    "before": {"type": "integer", "minimum": 1, "maximum": 2 ** 63 - 1,
               "description": "a label id: older ones only"},
    "limit": {"type": "integer", "minimum": 1, "maximum": MAX_BATCH, "default": 50}}}
EMPTY_SCHEMA = {"type": "object"}
MEDIA_SCHEMA = {"type": "object", "required": ["id"], "properties": {
    "id": _ID, "v": {"type": "string", "description": "the file's version (cache key)"}}}
# OpenAPI links from `batch` to the routes that take one of its items: clients, and the
# fuzzing test, follow them with a real item id.
_FIRST_ID = "$response.body#/items/0/id"
ITEM_LINKS = {
    "label": {"route": ("POST", "labels"), "requestBody": {"id": _FIRST_ID}},
    "skip": {"route": ("POST", "skips"), "requestBody": {"id": _FIRST_ID}},
    "media": {"route": ("GET", "media"), "parameters": {"id": _FIRST_ID}},
    "release": {"route": ("POST", "release"), "requestBody": {"ids": [_FIRST_ID]}},
}
REVIEW_QUEUE_SCHEMA = {"type": "object", "properties": {
    "size": {"type": "integer", "minimum": 1, "maximum": MAX_BATCH, "default": 20}}}
# ... and from `review` to the review of its first item (keeping its consensus).
REVIEW_LINKS = {"review": {"route": ("POST", "review"), "requestBody": {
    "id": "$response.body#/items/0/id", "label": "$response.body#/items/0/consensus"}}}
RELEASE_SCHEMA = {"type": "object", "required": ["ids"], "additionalProperties": False,
                  "properties": {"ids": {"type": "array", "items": _ID, "maxItems": MAX_BATCH,
                                         "description": "items the caller still holds"}}}


# A folder item id is a path inside the folder: not absolute, no `..` part, no NUL.
_OUTSIDE_FOLDER = r"^[\\/]|(^|[\\/])\.\.([\\/]|$)|\x00"


def _id_schema(cfg: EngineConfig) -> dict:
    if not cfg.from_folder:
        return _ID
    return {**_ID, "not": {"pattern": _OUTSIDE_FOLDER},
            "description": "the item id: its path inside the folder"}


def batch_schema(engine: LabelingEngine) -> dict:
    """BATCH_SCHEMA with this webapp's cap on `size` (its `max_reserved`, checked by the
    webapp's params), worded with the reason for it."""
    cap = min(engine.max_reserved, MAX_BATCH)
    size = {**BATCH_SCHEMA["properties"]["size"], "maximum": cap,
            "default": min(BATCH_SCHEMA["properties"]["size"]["default"], cap),
            "x-range": f"between 1 and {cap} (this webapp's cap: an annotator holds at most "
                       f"{cap} items at once; ask for {cap} or fewer)"}
    return {**BATCH_SCHEMA, "properties": {**BATCH_SCHEMA["properties"], "size": size}}


def label_schema(engine: LabelingEngine) -> dict:
    """The `POST labels` body: the item id, the answer in the field and shape of the webapp's
    annotation kind (for `choice`, its categories: the OpenAPI document lists them)."""
    kind = engine.kind
    return {"type": "object", "required": ["id", kind.field], "additionalProperties": False,
            "properties": {"id": _id_schema(engine.cfg), kind.field: kind.answer_schema(),
                           "comment": _COMMENT}}


def media_schema(dtype: Any) -> dict:
    """MEDIA_SCHEMA with the folder rule and the file extensions of a folder data type."""
    exts = getattr(dtype, "extensions", ())
    ends = "|".join("".join(f"[{c.upper()}{c}]" if c.isalpha() else c for c in e[1:])
                    for e in exts)
    item = dict(_id_schema(dtype.cfg))
    if ends:
        item["pattern"] = rf"\.({ends})$"
    return {**MEDIA_SCHEMA, "properties": {**MEDIA_SCHEMA["properties"], "id": item}}


def media_route(dtype: Any) -> dict:
    """`GET media` of a webapp whose items are files of a folder (labeling or similarity):
    the pool's file of `id` with its content type, ETag and Cache-Control."""

    def media(payload: dict, user: str) -> Any:
        return dtype.media(payload["id"])

    return {"handler": media, "schema": media_schema(dtype), "produces": dtype.media_types,
            "summary": "The item's image or sound file (ETag, Cache-Control; 304 when unchanged)"}


def release_schema(cfg: EngineConfig) -> dict:
    """RELEASE_SCHEMA with this webapp's kind of item id."""
    ids = {**RELEASE_SCHEMA["properties"]["ids"], "items": _id_schema(cfg)}
    return {**RELEASE_SCHEMA, "properties": {"ids": ids}}


def skip_schema(cfg: EngineConfig) -> dict:
    """SKIP_SCHEMA with this webapp's kind of item id."""
    return {**SKIP_SCHEMA, "properties": {**SKIP_SCHEMA["properties"], "id": _id_schema(cfg)}}


def review_schema(engine: LabelingEngine) -> dict:
    """The `POST review` body: the item id, the final label in the shape of the kind's answer
    (for `choice`: a category, or a list when multi-label), an optional comment."""
    return {"type": "object", "required": ["id", "label"], "additionalProperties": False,
            "properties": {"id": _id_schema(engine.cfg), "label": engine.kind.answer_schema(),
                           "comment": _COMMENT}}


def build_routes(engine: LabelingEngine,
                 extra_config: Callable[[], dict] | None = None) -> dict:
    """The DESIGN routes of one labeling webapp over `engine`."""

    def config(payload: dict, user: str) -> dict:
        out = engine.config()
        if extra_config is not None:
            out.update(extra_config())
        return out

    # Bodies and query arguments are checked (and query integers converted) by the route
    # schemas before a handler runs.
    size_default = batch_schema(engine)["properties"]["size"]["default"]

    def batch(payload: dict, user: str) -> dict:
        return engine.batch(user, payload.get("size", size_default))

    field = engine.kind.field

    def labels(payload: dict, user: str) -> dict:
        return engine.label(user, payload["id"], payload[field], payload.get("comment"))

    def skips(payload: dict, user: str) -> dict:
        return engine.skip(user, payload["id"], payload.get("comment"))

    def annotations(payload: dict, user: str) -> dict:
        return engine.annotations(user, payload.get("before"), payload.get("limit", 50))

    def stats(payload: dict, user: str) -> dict:
        return engine.stats(user)

    def release(payload: Any, user: str) -> dict:
        return engine.release(user, payload["ids"])

    def learning_curve(payload: dict, user: str) -> dict:
        from .report import for_page

        return for_page(engine.project, engine.cfg)

    def agreement(payload: dict, user: str) -> dict:
        from .quality.agreement import agreement as figures

        return figures(engine, user)

    routes = {
        ("GET", "agreement"): {
            "handler": agreement, "schema": EMPTY_SCHEMA,
            "summary": "Agreement between annotators: Krippendorff's alpha, Fleiss' and Cohen's "
                       "kappa (span F1 for spans), per annotator and per category; admins see "
                       "every annotator, others their own figures"},
        ("GET", "learning-curve"): {
            "handler": learning_curve, "schema": EMPTY_SCHEMA,
            "summary": "The labels replayed in their order vs random orders (cross-validated)"},
        ("GET", "config"): {"handler": config, "schema": EMPTY_SCHEMA,
                            "summary": "The webapp's categories, mode, session and thresholds"},
        ("GET", "batch"): {"handler": batch, "schema": batch_schema(engine), "links": ITEM_LINKS,
                           "summary": "The next items for the caller, reserved for them"},
        ("POST", "labels"): {"handler": labels, "schema": label_schema(engine),
                             "summary": "Label an item (again to change its label)"},
        ("POST", "skips"): {"handler": skips, "schema": skip_schema(engine.cfg),
                            "summary": "Skip an item"},
        ("GET", "annotations"): {"handler": annotations, "schema": ANNOTATIONS_SCHEMA,
                                 "summary": "The caller's annotations, newest first"},
        ("GET", "stats"): {"handler": stats, "schema": EMPTY_SCHEMA,
                           "summary": "Labeled, skipped, remaining and per-label counts"},
        ("POST", "release"): {"handler": release, "schema": release_schema(engine.cfg),
                              "summary": "End the caller's reservations of these items now"},
    }
    if engine.cfg.consensus_ds:  # the review queue works on the consensus kept
        routes.update(review_routes(engine))
    if engine.dtype.from_folder:
        routes[("GET", "media")] = media_route(engine.dtype)
    return routes


def review_routes(engine: LabelingEngine) -> dict:
    """`GET review` and `POST review` (labeling.quality.review), for reviewers."""
    from .quality.review import ReviewQueue

    queue = ReviewQueue(engine)

    def review_queue(payload: dict, user: str) -> dict:
        return queue.items(payload.get("size", 20))

    def review(payload: dict, user: str) -> dict:
        return queue.review(user, payload["id"], payload["label"], payload.get("comment"))

    return {
        ("GET", "review"): {
            "handler": review_queue, "schema": REVIEW_QUEUE_SCHEMA, "role": "reviewer",
            "links": REVIEW_LINKS,
            "summary": "The answered items most likely wrong, most suspicious first"},
        ("POST", "review"): {
            "handler": review, "schema": review_schema(engine), "role": "reviewer",
            "summary": "A reviewer's final label: the item's consensus (source reviewed)"},
    }


class LabelingBackend:
    """A labeling webapp's backend: settings -> engine -> routes (+ a page to override)."""

    def __init__(self, ctx: Any, data_type: str, background: bool = True, kind: str = "choice"):
        self.ctx = ctx
        self.cfg: EngineConfig = parse_settings(ctx.config, data_type, ctx.webapp, ctx.project,
                                                kind=kind)
        self.engine = LabelingEngine(ctx.project, self.cfg, background=background)
        self.routes = build_routes(self.engine)
        if background:  # index the pool now so the first page doesn't wait for it
            threading.Thread(target=self._warm, name=f"labeling-warm-{ctx.webapp}",
                             daemon=True).start()

    def _warm(self) -> None:
        try:
            self.engine.refresh(wait=True)
        except Exception:
            log.exception("indexing the pool of %s failed", self.cfg.webapp)

    def describe(self) -> dict:
        """Merged into the webapps list of the JSON API."""
        return {"data_type": self.cfg.data_type, "categories": list(self.cfg.categories),
                "kind": self.cfg.kind}

    def make_document(self, doc: Any) -> None:
        """A placeholder page (the labeling UI replaces it)."""
        from bokeh.models import Div

        doc.title = self.cfg.webapp
        doc.add_root(Div(text=f"<h2>{html.escape(self.cfg.webapp)}</h2><p>Labeling API at "
                              f"<code>{html.escape(str(self.ctx.api_prefix))}</code></p>"))
