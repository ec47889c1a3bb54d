"""The labeling plugin's hooks: its own hookspecs (query strategies, annotation kinds), its
CLI commands, API routes, formats and migrations."""

from __future__ import annotations

from labelloop.hookspecs import hookimpl

from .kinds import AnnotationKindSpecs, register_builtin_kinds
from .strategies import QueryStrategySpecs, register_batch_strategies


class hookspecs(QueryStrategySpecs, AnnotationKindSpecs):  # noqa: N801 - the host's name
    """Added to the host's plugin manager when this module is registered (plugin.json
    "hooks"): `register_query_strategies`, `register_annotation_kinds`."""


@hookimpl
def register_commands(cli):
    """Add `labelloop demo` (the active-learning demo project) and `labelloop report`."""
    from .demo import demo_command

    cli.add_command(demo_command)
    from .report import report_group

    cli.add_command(report_group())


@hookimpl
def register_query_strategies(register):
    """The built-in diversity-aware batch strategy, `diverse_margin`."""
    register_batch_strategies(register)


@hookimpl
def register_annotation_kinds(register):
    """The built-in annotation kinds, `choice`, `spans` and `boxes` (labeling.kinds)."""
    register_builtin_kinds(register)


@hookimpl
def register_api_routes(register):
    """Label Studio's ML-backend protocol over every labeling webapp (labeling.interop)."""
    from .interop.ml_backend_routes import register_routes

    register_routes(register)


@hookimpl
def register_dataset_formats(register):
    """Label Studio JSON and COCO (labeling.interop.formats), CoNLL 2003 and spaCy-style
    JSON Lines (labeling.spans.formats), YOLO and Pascal VOC (labeling.boxes.archives) for
    `dataset import|export`."""
    from .boxes.archives import register_box_formats
    from .interop.formats import register_formats
    from .spans.formats import register_span_formats

    register_formats(register)
    register_span_formats(register)
    register_box_formats(register)


@hookimpl
def register_migrations(register):
    """The migration history of the plugin's own tables (labeling/migrations/versions)."""
    from .migrations import HEAD, VERSIONS

    register("ml-assisted-labeling", VERSIONS, head=HEAD)


@hookimpl
def register_run_imports(register):
    """The libraries the recipes and steps import: scenario runs fork from a process that has
    imported them (labelloop.scenarios.launcher)."""
    for module in ("sklearn.linear_model", "sklearn.pipeline", "sklearn.model_selection",
                   "sklearn.preprocessing", "sklearn.impute", "sklearn.compose",
                   "sklearn.feature_extraction.text", "sklearn.neighbors", "sklearn.ensemble",
                   "sklearn.metrics", "skops.io", "pyarrow", "PIL.Image"):
        register(module)
