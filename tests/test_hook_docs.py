"""Every hook the README and docs/plugins.md name exists, with the signature they show.

The other direction (every hookspec has a section in the guide) is in test_plugin_guide.py.
A hook's own arguments are read from the plugin manager; the arguments of the `register`
callback a hook receives are read from the callable the host really passes, captured by a
plugin registered for the test and the host's own collecting functions.
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
from pathlib import Path

import pytest

from labeling.kinds import collect_kinds
from labeling.strategies import collect_strategies
from labelloop import hookspecs
from labelloop.formats import formats
from labelloop.hookspecs import hookimpl
from labelloop.migrations import plugin_histories
from labelloop.plugins import PluginRegistry
from labelloop.scenarios.launcher import run_imports
from labelloop.web.routes import collect_routes

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
GUIDE = REPO / "docs" / "plugins.md"
PACKAGE = REPO / "docs" / "examples" / "word-tools-package" / "labelloop_shout.py"

# `register_<what>` in backquotes, optionally with its arguments: a hook named by the docs.
HOOK = re.compile(r"`(register_\w+)(?:\(([^)`]*)\))?`")
# `register(...)`: the callback a hook receives, as the docs show it.
CALLBACK = re.compile(r"`register\(([^`]*)\)`")
NOT_HOOKS = {name for name in dir(PluginRegistry) if name.startswith("register_")}


def named_hooks(text: str) -> list[tuple[str, str | None]]:
    return [(m.group(1), m.group(2)) for m in HOOK.finditer(text) if m.group(1) not in NOT_HOOKS]


def shown_callbacks(text: str) -> list[tuple[str, str]]:
    """`(hook, arguments)` of each `register(...)` shown, under the hook named last before it."""
    out, hook = [], None
    for m in re.finditer(rf"{HOOK.pattern}|{CALLBACK.pattern}", text):
        if m.group(1) and m.group(1) not in NOT_HOOKS:
            hook = m.group(1)
        elif m.group(3) is not None and hook is not None:
            out.append((hook, m.group(3)))
    return out


class Recorder:
    """Implements the hooks that take a `register` callback and keeps each callback."""

    def __init__(self) -> None:
        self.callbacks: dict[str, object] = {}

    @hookimpl
    def register_components(self, register):
        self.callbacks["register_components"] = register

    @hookimpl
    def register_api_routes(self, register):
        self.callbacks["register_api_routes"] = register

    @hookimpl
    def register_dataset_formats(self, register):
        self.callbacks["register_dataset_formats"] = register

    @hookimpl
    def register_migrations(self, register):
        self.callbacks["register_migrations"] = register

    @hookimpl
    def register_query_strategies(self, register):
        self.callbacks["register_query_strategies"] = register

    @hookimpl
    def register_annotation_kinds(self, register):
        self.callbacks["register_annotation_kinds"] = register

    @hookimpl
    def register_run_imports(self, register):
        self.callbacks["register_run_imports"] = register


@pytest.fixture(scope="module")
def registry():
    """The built-in plugin, the guide's package example (it adds a hookspec) and the recorder,
    with every hook that passes a `register` called by the host's own code."""
    registry = PluginRegistry(load_entry_points=False)
    spec = importlib.util.spec_from_file_location("labelloop_shout", PACKAGE)
    shout = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shout)
    registry.register_plugin("shout", shout)
    recorder = Recorder()
    registry.register_plugin("recorder", recorder)  # calls register_components
    collect_routes(registry)
    formats(registry)
    plugin_histories(registry)
    collect_strategies(registry.pm)
    collect_kinds(registry.pm)
    run_imports(registry)
    registry.recorded = recorder.callbacks
    return registry


def arguments(text: str) -> tuple[list[str], dict[str, ast.expr]]:
    """The positional names and the keywords of `f(<text>)`."""
    call = ast.parse(f"f({text})", mode="eval").body
    assert all(isinstance(a, ast.Name) for a in call.args), text
    return [a.id for a in call.args], {k.arg: k.value for k in call.keywords}


@pytest.mark.parametrize("doc", [README, GUIDE], ids=["README", "plugins.md"])
def test_every_hook_named_exists_with_the_arguments_shown(doc, registry):
    named = named_hooks(doc.read_text())
    assert named, f"no hook named in {doc.name}?"
    for name, args in named:
        caller = getattr(registry.pm.hook, name, None)
        assert caller is not None and caller.spec is not None, \
            f"{doc.name} names a hook {name!r} that no hookspec declares"
        if args is not None:
            assert tuple(a.strip() for a in args.split(",") if a.strip()) == \
                tuple(caller.spec.argnames), \
                f"{doc.name} shows {name}({args}); the hookspec takes {caller.spec.argnames}"


def test_the_readme_code_map_names_host_hooks():
    row = next(line for line in README.read_text().splitlines()
               if line.startswith("| `hookspecs.py`"))
    names = [n for n, _ in named_hooks(row)]
    assert names and all(hasattr(hookspecs, n) for n in names), names


@pytest.mark.parametrize("doc", [README, GUIDE], ids=["README", "plugins.md"])
def test_every_register_callback_shown_takes_those_arguments(doc, registry):
    shown = shown_callbacks(doc.read_text())
    assert shown or doc == README
    for hook, text in shown:
        register = registry.recorded.get(hook)
        assert register is not None, f"{doc.name}: register(...) under {hook}: not recorded"
        params = inspect.signature(register).parameters
        positional, keywords = arguments(text)
        required = [n for n, p in params.items() if p.default is inspect.Parameter.empty]
        assert positional == list(params)[:len(positional)], \
            f"{doc.name}: {hook}'s register({text}); the host's is register{inspect.signature(register)}"
        assert set(required) <= set(positional), (hook, text, required)
        for key, value in keywords.items():
            assert key in params, f"{doc.name}: {hook}'s register takes no {key!r}"
            if doc == GUIDE:  # the guide shows signatures: its defaults are the real ones
                assert ast.literal_eval(value) == params[key].default, (hook, key)
        if doc == GUIDE:  # ... and all of them
            assert set(positional) | set(keywords) == set(params), \
                f"{doc.name}: {hook}'s register({text}) leaves out " \
                f"{sorted(set(params) - set(positional) - set(keywords))}"


def test_the_check_catches_drift():
    text = "### `register_formats(register)`\ncall `register(name, read=None)`."
    assert named_hooks(text) == [("register_formats", "register")]
    assert shown_callbacks(text) == [("register_formats", "name, read=None")]
    assert named_hooks("`registry.register_plugin(x)` and `register_plugin`") == []
