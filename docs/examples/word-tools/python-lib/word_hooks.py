"""Hooks of the word-tools plugin (listed in plugin.json "hooks")."""

from __future__ import annotations

import wordlib

from labelloop.hookspecs import hookimpl


@hookimpl
def register_query_strategies(register):
    """A query strategy for the labeling plugin's Query Sampler and labeling webapps."""
    register("least-confident-squared", wordlib.least_confident_squared,
             label="Least confident, squared", description="1 - p_max^2")


@hookimpl
def register_annotation_kinds(register):
    """An annotation kind for the labeling plugin's engine (webapps/keyword-labeling)."""
    from wordkinds import KeywordsKind

    register("keywords", KeywordsKind, label="Keywords",
             description="words of the text that sum it up")


@hookimpl
def register_commands(cli):
    """`labelloop word-count TEXT`."""
    import click

    @cli.command("word-count")
    @click.argument("text")
    def word_count(text):
        """Count the words of TEXT."""
        click.echo(wordlib.count_words(text))
