"""The Bokeh page shared by every labeling webapp.

The document holds the page layout (a Jinja template in resource/templates), the Bokeh charts
(per-label counts, the metrics history) and a bootstrap JSON block. The item, the category
buttons, the keyboard and the prefetching are a small JS app (resource/labeling.js) that talks
to the webapp's JSON API directly: answering an item never waits for a Bokeh round trip.
"""

from __future__ import annotations

import json
import string
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Imported with the backend (at server start), so the first page doesn't pay for it.
from bokeh.models import ColumnDataSource, FactorRange, Range1d
from bokeh.plotting import figure
from jinja2 import Environment, FileSystemLoader, select_autoescape

import labelloop
from labelloop.project import Dataset
from labelloop.web import tokens_configured

from .api import LabelingBackend, build_routes
from .stopping import DEFAULT_METRICS_DATASET, history, warnings_from_history

PLUGIN_ID = "ml-assisted-labeling"
# resource/ beside python-lib/ in a checkout; in a wheel, inside the host's copy of the plugin tree.
RESOURCE_DIR = next((d for d in (Path(__file__).resolve().parents[2] / "resource",
                                 Path(labelloop.__file__).resolve().parent / "builtin_plugin"
                                 / "resource") if d.is_dir()),
                    Path(__file__).resolve().parents[2] / "resource")
TEMPLATE_DIR = RESOURCE_DIR / "templates"
# Keys with a fixed meaning on the page; a category never gets them as its letter.
RESERVED_KEYS = frozenset("s")
DATA_TYPES = ("tabular", "text", "image", "sound")
PER_LABEL_SOURCE = "ll-per-label"
METRICS_SOURCE = "ll-metrics"
AGREEMENT_SOURCE = "ll-agreement"  # the Agreement panel's heat map (resource/agreement.js)
METRIC_LABELS = {"auc": "AUC", "f1": "entity F1", "map50": "mAP@0.5"}  # the metrics chart's score
# The score a kind's model is charted by (labeling-metrics' column); others have an AUC.
KIND_SCORES = {"spans": "f1", "boxes": "map50"}
TITLES = {
    "tabular": "Tabular labeling",
    "text": "Text labeling",
    "image": "Image labeling",
    "sound": "Sound labeling",
}

_env = Environment(loader=FileSystemLoader(str(TEMPLATE_DIR)), autoescape=select_autoescape())


@dataclass
class PageSettings:
    """What the page needs to know before its first API call."""

    webapp: str
    data_type: str
    categories: Mapping[str, str | None]
    multi_label: bool = False
    title: str | None = None
    api_base: str | None = None
    batch_size: int = 20
    user: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def assign_shortcuts(categories: list[str]) -> list[dict[str, Any]]:
    """Give each category a number key (the first nine) and a free letter from its name."""
    taken: set[str] = set(RESERVED_KEYS)
    # Categories that are themselves digits ("0".."9", as for handwritten digits) keep their
    # own key: pressing 7 labels "7", not the eighth button.
    own_digit = len(set(categories)) == len(categories) and all(
        len(n) == 1 and n.isdigit() for n in categories)
    out = []
    for i, name in enumerate(categories):
        letter = None
        # Prefer a letter of the name (initial first), else any free letter.
        candidates = [c.lower() for c in name if c.isascii() and c.isalpha()]
        for c in [*candidates, *string.ascii_lowercase]:
            if c not in taken:
                letter = c
                break
        if letter:
            taken.add(letter)
        number = name if own_digit else (str(i + 1) if i < 9 else None)
        out.append({"name": name, "number": number, "letter": letter})
    return out


def bootstrap(page: PageSettings) -> dict[str, Any]:
    """The JSON the JS app starts from (everything else comes from the API)."""
    shortcuts = assign_shortcuts(list(page.categories))
    for entry in shortcuts:
        entry["description"] = page.categories.get(entry["name"]) or ""
    return {
        "webapp": page.webapp,
        "data_type": page.data_type,
        "title": page.title or TITLES.get(page.data_type, "Labeling"),
        "api_base": page.api_base or f"/api/v1/webapps/{page.webapp}",
        "categories": shortcuts,
        "multi_label": bool(page.multi_label),
        "batch_size": page.batch_size,
        "user": page.user,
        "per_label_source": PER_LABEL_SOURCE,
        "metrics_source": METRICS_SOURCE,
        "agreement_source": AGREEMENT_SOURCE,
        **page.extra,
    }


def script_json(data: Any) -> str:
    """JSON safe to put inside a <script> element (no '</script>' or '<!--' can appear)."""
    text = json.dumps(data, ensure_ascii=False)
    return (text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def resource_url(rel: str, base: str | None = None) -> str:
    """URL of a file of resource/, with its modification time so a new version is fetched."""
    path = RESOURCE_DIR / rel
    version = int(path.stat().st_mtime) if path.exists() else 0
    return f"{base or '/resource/' + PLUGIN_ID}/{rel}?v={version}"


def _per_label_chart(categories: list[str]) -> figure:
    # Bars grow downwards in category order, like the buttons.
    factors = list(reversed(categories))
    source = ColumnDataSource(
        {"category": factors, "count": [0] * len(factors), "text": ["0"] * len(factors)},
        name=PER_LABEL_SOURCE,
    )
    fig = figure(
        y_range=FactorRange(*factors), height=max(110, 26 * len(factors) + 40),
        sizing_mode="stretch_width", toolbar_location=None, tools="", name="ll_per_label_chart",
        x_range=(0, 1), min_border_left=8, min_border_right=24,
    )
    fig.x_range.name = "ll-per-label-xrange"
    fig.hbar(y="category", right="count", height=0.7, source=source, color="#4c78a8")
    fig.text(x="count", y="category", text="text", source=source, x_offset=4,
             text_baseline="middle", text_font_size="11px", text_color="#333")
    fig.xaxis.visible = False
    fig.xgrid.grid_line_color = None
    fig.ygrid.grid_line_color = None
    fig.outline_line_color = None
    fig.yaxis.major_label_text_font_size = "12px"
    fig.yaxis.axis_line_color = None
    fig.yaxis.major_tick_line_color = None
    return fig


def _metrics_chart(score: str = "auc") -> figure:
    """Labels on x; the model's score (``auc``, or ``f1`` for a span model and ``map50`` for
    a detector, which have no AUC) and the contradictions on y."""
    source = ColumnDataSource({"labels": [], "auc": [], "f1": [], "map50": [],
                               "contradictions": []}, name=METRICS_SOURCE)
    fig = figure(
        height=170, sizing_mode="stretch_width", toolbar_location=None, tools="",
        y_range=Range1d(0, 1), name="ll_metrics_chart", x_axis_label="labels",
        # Set by the page from the labels counts: a data range has no bounds while every
        # value is missing (a first retrain without AUC) and the plot would stay blank.
        x_range=Range1d(0, 1, name="ll-metrics-xrange"),
    )
    fig.line("labels", score, source=source, color="#4c78a8", line_width=2,
             legend_label=METRIC_LABELS[score])
    fig.scatter("labels", score, source=source, color="#4c78a8", size=5)
    fig.line("labels", "contradictions", source=source, color="#e45756", line_width=2,
             legend_label="contradictions")
    fig.scatter("labels", "contradictions", source=source, color="#e45756", size=5)
    # The legend sits above the plot area, in one row: it never covers a point.
    legend = fig.legend[0]
    fig.legend.orientation = "horizontal"
    fig.legend.location = "top_left"
    fig.legend.label_text_font_size = "10px"
    fig.legend.padding = 2
    fig.legend.margin = 0
    fig.legend.border_line_alpha = 0
    fig.center = [r for r in fig.center if r is not legend]
    fig.add_layout(legend, "above")
    fig.xaxis.axis_label_text_font_size = "11px"
    return fig


def _agreement_chart(categories: list[str]) -> figure:
    """The Agreement panel's heat map: categories x categories, the count of pairs of two
    annotators' answers to one item (`GET agreement`'s `confusion`, filled by the page)."""
    from bokeh.models import LinearColorMapper

    source = ColumnDataSource({"x": [], "y": [], "count": [], "text": [], "ink": []},
                              name=AGREEMENT_SOURCE)
    mapper = LinearColorMapper(palette=["#f7fbff", "#deebf7", "#c6dbef", "#9ecae1", "#6baed6",
                                        "#4292c6", "#2171b5", "#08519c", "#08306b"],
                               low=0, high=1, name="ll-agreement-colors")
    fig = figure(
        x_range=FactorRange(*categories, name="ll-agreement-x"),
        y_range=FactorRange(*reversed(categories), name="ll-agreement-y"),
        height=max(180, 30 * len(categories) + 80), sizing_mode="stretch_width",
        toolbar_location=None, tools="", name="ll_agreement_chart",
        x_axis_label="the other annotator said", y_axis_label="one annotator said",
        x_axis_location="above", min_border_left=8, min_border_right=8,
    )
    fig.rect("x", "y", width=0.96, height=0.96, source=source, line_color=None,
             fill_color={"field": "count", "transform": mapper})
    fig.text("x", "y", text="text", source=source, text_align="center",
             text_baseline="middle", text_font_size="11px", text_color="ink")
    fig.grid.grid_line_color = None
    fig.outline_line_color = None
    fig.axis.axis_line_color = None
    fig.axis.major_tick_line_color = None
    fig.axis.major_label_text_font_size = "11px"
    fig.axis.axis_label_text_font_size = "11px"
    fig.xaxis.major_label_orientation = 0.6
    return fig


def make_document(doc: Any, page: PageSettings, resource_base: str | None = None) -> None:
    """Fill a Bokeh document with the labeling page for one webapp instance."""
    categories = list(page.categories)
    per_label = _per_label_chart(categories)
    # A span model is scored by its entity F1, a detector by its mAP@0.5 (labeling-metrics'
    # `f1` and `map50` columns), not by AUC.
    metrics = _metrics_chart(KIND_SCORES.get(page.extra.get("kind"), "auc"))
    doc.add_root(per_label)
    doc.add_root(metrics)
    doc.add_root(_agreement_chart(categories))
    boot = bootstrap(page)
    doc.title = f"{boot['title']} · {page.webapp}"
    doc.template = _env.get_template("labeling.html")
    doc.template_variables.update(_page_variables(boot, resource_base))


def page_mode(doc: Any) -> str:
    """`review` for a page opened with `?mode=review` (Review mode), else `label`."""
    try:
        args = doc.session_context.request.arguments
    except AttributeError:  # a document built outside a server session
        return "label"
    raw = (args.get("mode") or [b""])[0]
    return "review" if raw in (b"review", "review") else "label"


def make_review_document(doc: Any, page: PageSettings, resource_base: str | None = None
                         ) -> None:
    """Fill a Bokeh document with the Review mode of one webapp (resource/review.js)."""
    boot = {**bootstrap(page), "mode": "review"}
    doc.title = f"Review · {page.webapp}"
    doc.template = _env.get_template("review.html")
    doc.template_variables.update(
        _page_variables(boot, resource_base),
        ll_multi=bool(page.multi_label),
        ll_review_js=resource_url("review.js", resource_base),
        ll_review_css=resource_url("review.css", resource_base))


def _page_variables(boot: dict[str, Any], resource_base: str | None = None) -> dict[str, Any]:
    return {
        "ll_title": boot.get("title", "Labeling"),
        "ll_webapp": boot.get("webapp", ""),
        "ll_sound": boot.get("data_type") == "sound",
        "ll_bootstrap": script_json(boot),
        "ll_css": resource_url("labeling.css", resource_base),
        "ll_js": resource_url("labeling.js", resource_base),
        "ll_spans": boot.get("kind") == "spans",
        "ll_spans_js": resource_url("spans.js", resource_base)
        if boot.get("kind") == "spans" else None,
        "ll_boxes": boot.get("kind") == "boxes",
        "ll_boxes_js": resource_url("boxes.js", resource_base)
        if boot.get("kind") == "boxes" else None,
        "ll_curve_js": resource_url("learning-curve.js", resource_base),
        "ll_agreement_js": resource_url("agreement.js", resource_base),
        "ll_review": bool(boot.get("review")),  # the Review tab (a consensus is kept)
    }



# ---------------------------------------------------------------------------------------------
# The backend of the labeling webapps: the engine's routes plus this page.


class LabelingPageBackend(LabelingBackend):
    """A labeling webapp: the engine's JSON routes, a metrics route and the labeling page."""

    def __init__(self, ctx: Any, data_type: str, background: bool = True, kind: str = "choice"):
        super().__init__(ctx, data_type, background=background, kind=kind)
        self.metrics_ds = ctx.config.get("metrics_ds") or DEFAULT_METRICS_DATASET
        self.batch_size = min(ctx.config.get("batch_size") or 20, self.engine.max_reserved)
        self.autoplay = bool(ctx.config.get("autoplay"))
        # The page polls config every few seconds: the metrics history is read again only
        # when its dataset changed (its generation), not at every poll.
        self._metrics_cache: tuple[Any, dict, list[str]] | None = None
        self._metrics_lock = threading.Lock()
        self.routes = build_routes(self.engine, self._extra_config)
        self.routes[("GET", "metrics")] = {
            "handler": self._metrics, "schema": {"type": "object"},
            "summary": "The model's metrics after each retrain (labels, AUC or entity F1, "
                       "contradictions)",
        }

    def _metrics_state(self) -> tuple[Any, dict, list[str]]:
        ds = Dataset(self.ctx.project, self.metrics_ds)
        # An appended row (one per retrain) keeps the generation: the row count tells it.
        version = f"{ds.generation()}:{ds.count()}" if ds.exists() else None
        with self._metrics_lock:
            cached = self._metrics_cache
            if cached is not None and cached[0] == version:
                return cached
        hist = history(self.ctx.project, self.metrics_ds)
        state = (version, hist, warnings_from_history(hist))
        with self._metrics_lock:
            self._metrics_cache = state
        return state

    def _extra_config(self) -> dict:
        version, _hist, warnings = self._metrics_state()
        return {"stopping_warnings": warnings, "metrics_version": version}

    def _metrics(self, payload: Any, user: str) -> dict:
        version, hist, _warnings = self._metrics_state()
        return {"history": hist, "version": version}

    def make_document(self, doc: Any, user: str = "anonymous") -> None:
        """The labeling page of one browser session."""
        # With tokens the page's user is certain; otherwise it is only a default name.
        fixed = tokens_configured(self.ctx.project.engine)
        named = user if user and user != "anonymous" else None
        component = getattr(self.ctx, "component", None)
        page = PageSettings(
            webapp=self.cfg.webapp, data_type=self.cfg.data_type,
            categories=self.cfg.categories, multi_label=self.cfg.multi_label,
            title=component.label if component is not None else None,
            api_base=self.ctx.api_prefix, batch_size=self.batch_size,
            user=named if fixed else None,
            extra={"session_user": None if fixed else named, "autoplay": self.autoplay,
                   "kind": self.cfg.kind, "review": bool(self.cfg.consensus_ds),
                   **self.engine.kind.config()},
        )
        make = make_review_document if page_mode(doc) == "review" else make_document
        make(doc, page, resource_base=getattr(self.ctx, "resource_url", None))


def webapp_backend(data_type: str, kind: str = "choice") -> Callable[[Any], Any]:
    """A `create_backend(ctx)` for a labeling webapp component of `data_type` whose answers
    are of annotation kind `kind` (`labeling.kinds`; a plugin may register its own)."""

    def create_backend(ctx: Any) -> Any:
        return LabelingPageBackend(ctx, data_type, kind=kind)

    create_backend.__doc__ = f"The backend of a {data_type} labeling webapp ({kind} answers)."
    return create_backend
