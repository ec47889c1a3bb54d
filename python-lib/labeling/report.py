"""Is active learning helping on my data? The project's own labels replayed in order vs random.

The labels of a labeling webapp are replayed in the order they were given (by label id)
and in `orders` random orders. Every point of a curve is cross-validated: the labeled items
are split into `folds` folds; for each fold, the classifier (the one the Train classifier
recipe builds for the project: same data type, same algorithm) is trained on the first `m`
labels of the order that are not in the fold, and scored on the fold. A curve is the mean
accuracy over the folds at m = `step`, 2 `step`, ... labels, up to all of them (where both
orders meet: the same labels).

The figures: today's accuracy (all labels, cross-validated); the labels the given order
needed to come within `tolerance` of it, and how many random order needs for the same
accuracy (interpolated on the mean random curve): the labels active learning saved.

One computation serves the CLI (`labelloop report learning-curve`) and the page's "Is active
learning helping?" panel (`GET learning-curve`): `learning_curve` with `DEFAULTS`, so both
give the same figures for the same labels; the CLI's options may ask for more orders or folds,
and every answer says what it computed (`folds`, `orders`, `points`).

The computation with `DEFAULTS` (the page's) is kept in the project variable
`learning-curve/<webapp>` with the fingerprint of what it read (the labels in order, the
settings, `CURVE_VERSION`): asked again for the same labels (the panel opened again, in another
tab, after the CLI), the answer is the kept one, with its `computed_at`; one label more or
changed, and it is computed again. Other settings are computed each time and not kept.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from labelloop.errors import ConfigError, LabelloopError

from .settings import EngineConfig, parse_settings

# labeling.training (scikit-learn) is imported where a curve is computed: `labelloop report`
# is registered on every command line, which should not pay for scikit-learn's import.

MIN_LABELS = 20  # fewer labels say nothing about a learning curve
TOLERANCE = 0.01
# The one default computation, for the CLI and the page alike: small enough that the page's
# panel answers in seconds on a few hundred labels (every point is folds x (orders + 1) fits).
DEFAULTS = {"orders": 3, "folds": 3, "points": 8, "seed": 0}
# Part of every kept computation's fingerprint: change it when a curve's figures change.
CURVE_VERSION = 1


def default_step(n: int) -> int:
    """Labels between two points of a curve of `n` labels (about DEFAULTS["points"] points)."""
    return max(5, int(math.ceil(n / DEFAULTS["points"] / 5)) * 5)


@dataclass
class LearningCurve:
    """Both curves and the figures drawn from them."""

    webapp: str
    labels: int
    classes: int
    algorithm: str
    folds: int
    orders: int
    points: list[int]
    given: list[float]
    random: list[float]
    random_sd: list[float]
    accuracy: float
    target: float
    given_reached: float | None
    random_reached: float | None
    notes: list[str] = field(default_factory=list)
    computed_at: float = 0.0  # epoch seconds of the computation (a kept one keeps its own)

    @property
    def saved(self) -> float | None:
        """Labels active learning saved to reach `target` (None when unknown)."""
        if self.given_reached is None or self.random_reached is None:
            return None
        return self.random_reached - self.given_reached

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["saved"] = self.saved
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LearningCurve:
        return cls(**{k: v for k, v in data.items() if k != "saved"})

    def summary(self) -> list[str]:
        """The figures, one line each, as the CLI prints them."""
        lines = [
            f"{self.labels} labels of {self.classes} categories in webapp {self.webapp!r}; "
            f"{self.algorithm}, {self.folds}-fold cross-validation, {self.orders} random orders",
            f"today's accuracy (all {self.labels} labels): {self.accuracy:.3f}",
            f"{'labels':>8} {'your order':>11} {'random order':>13} {'±sd':>6}",
        ]
        for m, g, r, sd in zip(self.points, self.given, self.random, self.random_sd,
                               strict=True):
            lines.append(f"{m:>8} {g:>11.3f} {r:>13.3f} {sd:>6.3f}")
        if self.given_reached is None:
            lines.append(f"your order did not reach {self.target:.3f} before the last label")
        elif self.random_reached is None:
            lines.append(f"your order reached {self.target:.3f} (within {TOLERANCE:g} of "
                         f"today's) with {self.given_reached:.0f} labels; random order only "
                         f"with all {self.labels}")
        else:
            lines.append(
                f"your order reached {self.target:.3f} (within {TOLERANCE:g} of today's "
                f"accuracy) with {self.given_reached:.0f} labels; random order would have "
                f"needed about {self.random_reached:.0f} "
                f"({self.random_reached / max(self.given_reached, 1):.1f}x)")
        lines += self.notes
        return lines


# --------------------------------------------------------------------------- inputs


def webapp_settings(project: Any, webapp: str) -> EngineConfig:
    """The settings of labeling webapp `webapp` of the project (clear error if unknown)."""
    apps = project.config.get("webapps", {})
    if webapp not in apps:
        known = ", ".join(apps) or "(none)"
        raise ConfigError(f"no webapp {webapp!r} in the project; its webapps: {known}")
    spec = apps[webapp]
    kind = str(spec.get("type", "")).rsplit("/", 1)[-1]
    if not kind.endswith("-labeling"):
        raise ConfigError(f"webapp {webapp!r} ({spec.get('type')}) is not a labeling webapp")
    from labelloop.web import webapp_config

    _comp, params = webapp_config(webapp, spec, project.registry)  # the one params check
    return parse_settings(params, kind[: -len("-labeling")], webapp, project)


def _train_settings(project: Any, cfg: EngineConfig) -> tuple[str, str | None]:
    """Algorithm and data type of the Train classifier recipe that reads these labels."""
    for spec in project.config.get("recipes", {}).values():
        if not str(spec.get("type", "")).endswith("/train-classifier"):
            continue
        inputs = spec.get("inputs", {}).get("labels", [])
        inputs = [inputs] if isinstance(inputs, str) else list(inputs)
        if cfg.labels_ds in inputs:
            params = spec.get("params", {})
            return params.get("algorithm") or "logistic_regression", params.get("data_type")
    return "logistic_regression", None


def labels_in_order(project: Any, cfg: EngineConfig) -> pd.DataFrame:
    """The labeled rows (not skipped, single label) in the order they were given."""
    ds = project.dataset(cfg.labels_ds)
    if not ds.exists():
        raise LabelloopError(f"webapp {cfg.webapp!r} has no labels yet (dataset "
                             f"{cfg.labels_ds!r} is empty): label at least {MIN_LABELS} items")
    from .training import select_training_rows

    frame = ds.read()
    rows, _ = select_training_rows(frame, cfg.label_col)
    if cfg.label_id_col in rows.columns:
        rows = rows.sort_values(cfg.label_id_col, kind="mergesort")
    return rows.reset_index(drop=True)


# --------------------------------------------------------------------------- curves


def _accuracy(pipeline: Any, X_train: Any, y_train: np.ndarray, X_test: Any,
              y_test: np.ndarray) -> float:
    classes = np.unique(y_train)
    if classes.size == 1:  # one category so far: the model can only say that one
        return float(np.mean(y_test == classes[0]))
    from sklearn.base import clone
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model = clone(pipeline).fit(X_train, y_train)
    return float(np.mean(model.predict(X_test) == y_test))


def _take(X: Any, idx: np.ndarray) -> Any:
    return X.iloc[idx] if isinstance(X, pd.DataFrame) else X[idx]


def replay(X: Any, y: np.ndarray, pipeline: Any, points: list[int], order: np.ndarray,
           folds: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
    """Cross-validated accuracy after the first m labels of `order`, for each m of `points`."""
    rank = np.empty(len(order), dtype=np.int64)
    rank[order] = np.arange(len(order))
    curve = []
    for m in points:
        scores = []
        for train_idx, test_idx in folds:
            first = train_idx[rank[train_idx] < m]
            if first.size == 0:
                continue
            scores.append(_accuracy(pipeline, _take(X, first), y[first], _take(X, test_idx),
                                    y[test_idx]))
        curve.append(float(np.mean(scores)) if scores else float("nan"))
    return curve


def reached(points: list[int], curve: list[float], target: float) -> float | None:
    """Labels at which `curve` first reaches `target` (linear between points), or None."""
    for i, (m, acc) in enumerate(zip(points, curve, strict=True)):
        if acc >= target:
            if i == 0:
                return float(m)
            m0, a0 = points[i - 1], curve[i - 1]
            return float(m0 + (target - a0) / (acc - a0) * (m - m0))
    return None


def _fingerprint(rows: pd.DataFrame, settings: dict[str, Any]) -> str:
    """What a computation read: the labels in their order and the settings."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    digest.update(rows.to_csv(index=False).encode())
    return digest.hexdigest()


def learning_curve(project: Any, webapp: str, orders: int = DEFAULTS["orders"],
                   folds: int = DEFAULTS["folds"], step: int | None = None,
                   seed: int = DEFAULTS["seed"], cfg: EngineConfig | None = None,
                   keep: Any = None) -> LearningCurve:
    """Replay the webapp's labels in their order and in random orders (see the module doc).

    With `keep`, what runs `fn(conn)` in a write transaction (`project.db.execute_write_fn` in
    a server process; `project.write_transaction()` in the CLI), the computation kept for the
    same labels and settings is the answer, and a new computation is kept."""
    from sklearn.model_selection import KFold

    from .columns import METADATA_COLUMNS, PATH_COLUMN, SCORE_COLUMNS, plan_columns
    from .training import build_pipeline

    cfg = cfg or webapp_settings(project, webapp)
    rows = labels_in_order(project, cfg)
    n = len(rows)
    y = rows[cfg.label_col].astype(str).to_numpy()
    classes = np.unique(y)
    if n < MIN_LABELS or classes.size < 2:
        raise LabelloopError(
            f"too few labels to say anything: webapp {webapp!r} has {n} label(s) of "
            f"{classes.size} category(ies); a learning curve needs at least {MIN_LABELS} "
            "labels of 2 or more categories: keep labeling and run it again")
    algorithm, data_type = _train_settings(project, cfg)
    data_type = data_type or cfg.data_type
    step = step or default_step(n)
    variable = f"learning-curve/{webapp}"
    key = _fingerprint(rows, {"version": CURVE_VERSION, "orders": orders, "folds": folds,
                              "step": step, "seed": seed, "algorithm": algorithm,
                              "data_type": data_type, "label": cfg.label_col})
    if keep is not None:
        kept = project.variables.get(variable)
        if isinstance(kept, dict) and kept.get("key") == key:
            return LearningCurve.from_json(kept["curve"])
    notes: list[str] = []
    if cfg.from_folder:
        folder = project.folder(cfg.unlabeled)
        pipeline = build_pipeline(data_type, algorithm, PATH_COLUMN, str(folder.root))
        # Files are read once: the feature step is stateless (as Train classifier does).
        X: Any = pipeline[:1].fit_transform(rows[[PATH_COLUMN]])
        pipeline = pipeline[1:]
    else:
        ignore = {cfg.label_col, cfg.label_id_col, *METADATA_COLUMNS, *SCORE_COLUMNS}
        features = rows[[c for c in rows.columns if c not in ignore]]
        spec: Any = plan_columns(features) if data_type == "tabular" else (
            cfg.text_column or "text")
        pipeline = build_pipeline(data_type, algorithm, spec)
        X = features
    k = max(2, min(folds, n // 5))
    splits = [(np.sort(tr), te) for tr, te in
              KFold(n_splits=k, shuffle=True, random_state=seed).split(np.arange(n))]
    points = sorted({*range(step, n, step), n})
    given = replay(X, y, pipeline, points, np.arange(n), splits)
    rng = np.random.default_rng(seed)
    randoms = np.array([replay(X, y, pipeline, points, rng.permutation(n), splits)
                        for _ in range(orders)])
    random_mean = randoms.mean(axis=0)
    accuracy = given[-1]
    target = accuracy - TOLERANCE
    if n < 50:
        notes.append(f"note: with {n} labels the curves are rough; they settle past ~50")
    curve = LearningCurve(
        webapp=webapp, labels=n, classes=int(classes.size), algorithm=algorithm, folds=k,
        orders=orders, points=points, given=[round(v, 6) for v in given],
        random=[round(float(v), 6) for v in random_mean],
        random_sd=[round(float(v), 6) for v in randoms.std(axis=0)],
        accuracy=round(accuracy, 6), target=round(target, 6),
        given_reached=reached(points, given, target),
        random_reached=reached(points, list(random_mean), target), notes=notes,
        computed_at=round(time.time(), 3))
    # Only the page's computation is kept: a CLI run with other settings doesn't evict it.
    if keep is not None and (orders, folds, seed) == (DEFAULTS["orders"], DEFAULTS["folds"],
                                                      DEFAULTS["seed"]) and step == default_step(n):
        kept = {"key": key, "curve": curve.to_json()}
        keep(lambda conn: project.variables.set(variable, kept, conn=conn))
    return curve


def for_page(project: Any, cfg: EngineConfig) -> dict[str, Any]:
    """The `GET learning-curve` answer: the curves and figures (as the CLI computes them by
    default), or why there are none."""
    try:
        curve = learning_curve(project, cfg.webapp, cfg=cfg, keep=project.db.execute_write_fn)
    except LabelloopError as exc:
        return {"enough": False, "message": str(exc)}
    return {"enough": True, **curve.to_json(), "summary": curve.summary()}


# --------------------------------------------------------------------------- plot


def write_plot(curve: LearningCurve, path: str | Path) -> Path:
    """Both curves as a standalone Bokeh HTML file (`.html`) or a PNG (`.png`)."""
    path = Path(path)
    if path.suffix.lower() == ".png":
        return _write_png(curve, path)
    if path.suffix.lower() not in (".html", ".htm"):
        raise ConfigError(f"plot file {path}: use a .html (Bokeh) or .png name")
    from bokeh.embed import file_html
    from bokeh.models import Band, ColumnDataSource, Span
    from bokeh.plotting import figure
    from bokeh.resources import INLINE

    src = ColumnDataSource({
        "m": curve.points, "given": curve.given, "random": curve.random,
        "lo": [r - s for r, s in zip(curve.random, curve.random_sd, strict=True)],
        "hi": [r + s for r, s in zip(curve.random, curve.random_sd, strict=True)]})
    fig = figure(title=f"Learning curve of {curve.webapp}: your order vs random order",
                 x_axis_label="labels", y_axis_label="accuracy (cross-validated)",
                 width=720, height=420, tools="hover,save,reset",
                 tooltips=[("labels", "@m"), ("your order", "@given{0.000}"),
                           ("random", "@random{0.000}")])
    fig.add_layout(Band(base="m", lower="lo", upper="hi", source=src, fill_alpha=0.15,
                        fill_color="gray"))
    fig.line("m", "random", source=src, color="gray", line_width=2, legend_label="random order")
    fig.line("m", "given", source=src, color="#1f77b4", line_width=3, legend_label="your order")
    fig.scatter("m", "given", source=src, color="#1f77b4", size=5)
    fig.add_layout(Span(location=curve.target, dimension="width", line_dash="dashed",
                        line_color="#999"))
    fig.legend.location = "bottom_right"
    # INLINE: the file works offline, Bokeh's JS is in it
    html = file_html(fig, INLINE, title=f"Learning curve · {curve.webapp}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path


def _write_png(curve: LearningCurve, path: Path) -> Path:
    """Both curves as a PNG drawn with matplotlib (no browser, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never a window
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.8), dpi=100, layout="constrained")
    ax = fig.add_subplot()
    lo = [r - s for r, s in zip(curve.random, curve.random_sd, strict=True)]
    hi = [r + s for r, s in zip(curve.random, curve.random_sd, strict=True)]
    ax.fill_between(curve.points, lo, hi, color="gray", alpha=0.2,
                    label=f"random order ± 1 sd ({curve.orders} orders)")
    ax.plot(curve.points, curve.random, color="gray", linewidth=2, label="random order (mean)")
    ax.plot(curve.points, curve.given, color="#1f77b4", linewidth=2.5, marker="o",
            markersize=4, label="your order")
    ax.axhline(curve.target, color="#999", linestyle="--", linewidth=1,
               label=f"target {curve.target:.3f} (today's accuracy − {TOLERANCE:g})")
    ax.set_title(f"Learning curve of {curve.webapp}: your order vs random order")
    ax.set_xlabel("labels")
    ax.set_ylabel(f"accuracy ({curve.folds}-fold cross-validated)")
    ax.set_xlim(0, max(curve.points))
    ax.set_ylim(max(0.0, min(min(curve.given), min(lo)) - 0.05), 1.0)
    ax.grid(True, color="#eee")
    ax.legend(loc="lower right", fontsize="small")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path


# --------------------------------------------------------------------------- CLI


def report_group() -> Any:
    """`labelloop report ...` (added by the labeling plugin through `register_commands`)."""
    import click

    @click.group("report")
    def report() -> None:
        """Reports on the project's labeling."""

    @report.command("learning-curve")
    @click.option("--webapp", "webapp", required=True, help="The labeling webapp's id.")
    @click.option("--out", "out", type=click.Path(dir_okay=False), default=None,
                  help="Plot file, .html (Bokeh) or .png  [default: "
                       "<project>/reports/learning-curve-<webapp>.html]")
    @click.option("--orders", default=DEFAULTS["orders"], show_default=True,
                  type=click.IntRange(1, 50), help="Random orders to average (the page's "
                  "panel uses the default).")
    @click.option("--folds", default=DEFAULTS["folds"], show_default=True,
                  type=click.IntRange(2, 20), help="Cross-validation folds (the page's panel "
                  "uses the default).")
    @click.option("--step", default=None, type=click.IntRange(1),
                  help=f"Labels between points  [default: about {DEFAULTS['points']} points]")
    @click.option("--seed", default=DEFAULTS["seed"], show_default=True, type=int)
    @click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
    @click.pass_obj
    def learning_curve_cmd(state: Any, webapp: str, out: str | None, orders: int, folds: int,
                           step: int | None, seed: int, as_json: bool) -> None:
        """Is active learning helping? Your labels replayed in order vs random orders."""
        project = state.project

        def in_transaction(fn: Any) -> Any:  # another process than a server: its own
            with project.write_transaction() as conn:
                return fn(conn)

        curve = learning_curve(project, webapp, orders=orders, folds=folds, step=step,
                               seed=seed, keep=in_transaction)
        path = write_plot(curve, out or project.dir / "reports" /
                          f"learning-curve-{webapp}.html")
        if as_json:
            click.echo(json.dumps({**curve.to_json(), "plot": str(path)}))
            return
        for line in curve.summary():
            click.echo(line)
        click.echo(f"plot: {path}")

    return report
