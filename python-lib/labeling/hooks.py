"""The labeling plugin's hooks: its own hookspec for query strategies, and its CLI commands."""

from __future__ import annotations

from labelloop.hookspecs import hookimpl

from .strategies import QueryStrategySpecs, register_batch_strategies

# Added to the host's plugin manager when this module is registered (plugin.json "hooks").
hookspecs = QueryStrategySpecs


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
def register_api_routes(register):
    """Label Studio's ML-backend protocol over every labeling webapp (labeling.interop)."""
    from .interop.ml_backend import register_routes

    register_routes(register)


@hookimpl
def register_dataset_formats(register):
    """Label Studio JSON and COCO (labeling.interop.formats), CoNLL 2003 and spaCy-style
    JSON Lines (labeling.spans.formats) for `dataset import|export`."""
    from .interop.formats import register_formats
    from .spans.formats import register_span_formats

    register_formats(register)
    register_span_formats(register)


@hookimpl
def register_migrations(register):
    """The migration history of the plugin's own tables (labeling/migrations/versions)."""
    from .migrations import VERSIONS

    register("ml-assisted-labeling", VERSIONS)
