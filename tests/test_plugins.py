"""Plugins: the built-in directory plugin, extra directories, entry points, failure isolation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from labelloop.cli import cli
from labelloop.errors import DescriptorError, NotFoundError
from labelloop.hookspecs import hookimpl
from labelloop.plugins import PluginRegistry, validate_plugin_dir

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "tests" / "plugins"
SAMPLE = PLUGINS / "sample-plugin"
BROKEN = PLUGINS / "broken-plugin"
LABELLOOP = REPO / ".venv" / "bin" / "labelloop"


pytestmark = pytest.mark.usefixtures("clean_env")


def make_dist(site: Path, entry_points: dict[str, str], name: str = "labelloop-test-plugin") -> Path:
    """An installed distribution (a dist-info with entry_points.txt) in directory `site`."""
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    lines = ["[labelloop]"] + [f"{k} = {v}" for k, v in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return site


@pytest.fixture
def installed(tmp_path, monkeypatch) -> Path:
    """The entrypoint_plugin package installed for entry point `ep`, plus one that can't import."""
    site = make_dist(tmp_path / "site", {"ep": "entrypoint_plugin",
                                         "missing": "no_such_module_for_labelloop"})
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.syspath_prepend(str(site))
    return site


def kinds(registry: PluginRegistry, plugin: str) -> dict[str, str]:
    return {c.type: c.kind for c in registry.components.values() if c.plugin == plugin}


def test_the_repository_root_loads_as_the_builtin_plugin():
    registry = PluginRegistry(load_entry_points=False)
    info = registry.plugins["ml-assisted-labeling"]
    assert info.status == "loaded" and info.source == "directory" and info.path == REPO
    assert info.descriptor["id"] == "ml-assisted-labeling"
    # The host's own components are an ordinary plugin too.
    assert registry.component("labelloop/periodic", "trigger").kind == "trigger"
    assert registry.failures == []


def test_builtin_plugin_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("LABELLOOP_BUILTIN_PLUGIN", "")
    registry = PluginRegistry(load_entry_points=False)
    assert "ml-assisted-labeling" not in registry.plugins and "labelloop" in registry.plugins


def test_plugin_dir_source():
    registry = PluginRegistry(plugin_dirs=[SAMPLE], load_entry_points=False)
    assert registry.plugins["sample"].source == "directory"
    assert kinds(registry, "sample").items() >= {"sample/scale-column": "recipe",
                                                 "sample/flag-file": "trigger",
                                                 "sample/write-variable": "step"}.items()
    comp = registry.component("sample/scale-column", "recipe")
    assert comp.label == "Scale a column" and comp.path == SAMPLE / "custom-recipes" / "scale-column"
    assert callable(comp.entry())
    triggers = {t for t, c in registry.components.items() if c.kind == "trigger"}
    assert {"labelloop/periodic", "sample/flag-file"} <= triggers


def test_plugin_path_env_source(monkeypatch, tmp_path):
    other = tmp_path / "other-plugin"
    (other / "python-steps" / "hello").mkdir(parents=True)
    (other / "plugin.json").write_text(json.dumps({"id": "other", "meta": {"label": "Other"}}))
    (other / "python-steps" / "hello" / "step.json").write_text('{"meta": {"label": "Hello"}}')
    (other / "python-steps" / "hello" / "step.py").write_text("def run(ctx):\n    return 'hi'\n")
    monkeypatch.setenv("LABELLOOP_PLUGIN_PATH", os.pathsep.join([str(SAMPLE), str(other)]))
    registry = PluginRegistry(load_entry_points=False)
    assert registry.plugins["other"].status == "loaded" and "sample/scale-column" in registry.components
    assert registry.component("other/hello", "step").entry()(None) == "hi"


def test_entry_point_group_labelloop(installed):
    registry = PluginRegistry()
    assert registry.plugins["ep"].source == "entrypoint" and registry.plugins["ep"].status == "loaded"
    assert kinds(registry, "ep") == {"ep/add-constant": "recipe", "ep/describe-model": "recipe"}
    comp = registry.component("ep/add-constant")
    assert comp.path is None and comp.label == "Add a constant column"
    assert comp.entry().__name__ == "add_constant"
    # Descriptor defaults are applied to Python components as to directory ones.
    role = comp.descriptor["inputRoles"][0]
    assert role["acceptsDataset"] is True and role["acceptsSavedModel"] is False
    # The entry point that can't be imported fails alone, with its reason.
    failed = {p.id: p.error for p in registry.failures}
    assert list(failed) == ["missing"] and "no_such_module_for_labelloop" in failed["missing"]
    assert registry.plugins["ml-assisted-labeling"].status == "loaded"


def test_an_entry_point_named_like_a_loaded_plugin_is_reported(tmp_path, monkeypatch):
    site = make_dist(tmp_path / "site2", {"sample": "entrypoint_plugin"}, name="clash-plugin")
    monkeypatch.syspath_prepend(str(PLUGINS))
    monkeypatch.syspath_prepend(str(site))
    registry = PluginRegistry(plugin_dirs=[PLUGINS / "sample-plugin"])
    assert registry.plugins["sample"].status == "loaded"  # the directory plugin keeps its id
    failed = {p.id: p.error for p in registry.failures}
    assert "sample (entry point entrypoint_plugin)" in failed
    assert "already loaded" in failed["sample (entry point entrypoint_plugin)"]


def test_entry_points_can_be_skipped(installed):
    registry = PluginRegistry(load_entry_points=False)
    assert "ep" not in registry.plugins


def test_register_plugin_with_a_module(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))
    import entrypoint_plugin

    registry = PluginRegistry(load_entry_points=False, builtin_dir=False)
    registry.register_plugin("mine", entrypoint_plugin)
    assert registry.plugins["mine"].source == "python"
    assert set(kinds(registry, "mine")) == {"mine/add-constant", "mine/describe-model"}


def test_register_plugin_with_an_object():
    class Plugin:
        @hookimpl
        def register_components(self, register):
            register({"kind": "step", "id": "noop", "meta": {"label": "No-op"},
                      "run": lambda ctx: None})

    registry = PluginRegistry(load_entry_points=False, builtin_dir=False)
    registry.register_plugin("obj", Plugin())
    assert registry.component("obj/noop", "step").label == "No-op"


def test_a_python_component_with_a_bad_descriptor_fails_its_plugin_only():
    class Bad:
        @hookimpl
        def register_components(self, register):
            register({"kind": "recipe", "id": "ok", "run": lambda ctx: None})
            register({"kind": "recipe", "id": "no-run"})  # no callable

    class Good:
        @hookimpl
        def register_components(self, register):
            register({"kind": "step", "id": "fine", "run": lambda ctx: None})

    registry = PluginRegistry(load_entry_points=False, builtin_dir=False)
    registry.register_plugin("bad", Bad())
    registry.register_plugin("good", Good())
    assert registry.plugins["bad"].status == "failed"
    assert "needs a callable 'run'" in registry.plugins["bad"].error
    assert "bad/ok" not in registry.components  # none of a failed plugin's components
    assert "good/fine" in registry.components


def test_a_broken_plugin_is_reported_while_the_others_load():
    registry = PluginRegistry(plugin_dirs=[BROKEN, SAMPLE], load_entry_points=False)
    info = registry.plugins["broken"]
    assert info.status == "failed" and info.path == BROKEN
    assert "recipe.json" in info.error and "/inputRoles/0/arity" in info.error
    assert registry.plugins["sample"].status == "loaded"
    assert registry.plugins["ml-assisted-labeling"].status == "loaded"
    assert not any(c.plugin == "broken" for c in registry.components.values())
    with pytest.raises(NotFoundError, match="its plugin failed to load"):
        registry.component("broken/bad-roles")


def test_a_missing_plugin_directory_and_a_duplicate_id_are_failures(tmp_path):
    copy = tmp_path / "sample-copy"
    copy.mkdir()
    (copy / "plugin.json").write_text((SAMPLE / "plugin.json").read_text())
    registry = PluginRegistry(plugin_dirs=[SAMPLE, copy, tmp_path / "nowhere"],
                              load_entry_points=False)
    assert registry.plugins["sample"].status == "failed"
    assert "already loaded" in registry.plugins["sample"].error
    assert "no plugin.json" in registry.plugins["nowhere"].error
    # The first copy's components stay.
    assert "sample/scale-column" in registry.components


def test_a_failing_hooks_module_fails_its_plugin(tmp_path):
    plugin = tmp_path / "hooky"
    plugin.mkdir()
    (plugin / "plugin.json").write_text(json.dumps({"id": "hooky", "hooks": ["hooky_hooks"]}))
    (plugin / "python-lib").mkdir()
    (plugin / "python-lib" / "hooky_hooks.py").write_text("raise RuntimeError('boom at import')\n")
    registry = PluginRegistry(plugin_dirs=[plugin], load_entry_points=False)
    assert str(plugin / "python-lib") not in sys.path  # a package per plugin, not sys.path
    assert registry.plugins["hooky"].status == "failed"
    assert "boom at import" in registry.plugins["hooky"].error


def test_load_plugins_env_limits_what_loads(monkeypatch, installed):
    monkeypatch.setenv("LABELLOOP_LOAD_PLUGINS", "sample")
    registry = PluginRegistry(plugin_dirs=[SAMPLE, BROKEN])
    assert set(registry.plugins) == {"labelloop", "sample"}


def test_plugin_list_command(installed):
    res = CliRunner().invoke(cli, ["--plugin-dir", str(SAMPLE), "--plugin-dir", str(BROKEN),
                                   "plugin", "list"])
    assert res.exit_code == 0, res.output
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["PLUGIN", "KIND", "COMPONENT", "LABEL"]
    rows = {tuple(line.split()[:3]) for line in lines[1:]}
    assert ("sample", "recipe", "sample/scale-column") in rows
    assert ("sample", "trigger", "sample/flag-file") in rows
    assert ("ep", "recipe", "ep/add-constant") in rows
    assert ("labelloop", "trigger", "labelloop/periodic") in rows
    broken = [line for line in lines if line.startswith("broken ")]
    assert len(broken) == 1 and "FAILED" in broken[0] and "/inputRoles/0/arity" in broken[0]
    assert any(line.startswith("missing ") and "FAILED" in line for line in lines)


def test_plugin_validate_passes_on_the_repository():
    res = subprocess.run([str(LABELLOOP), "plugin", "validate", "."], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert "plugin is valid" in res.stdout
    assert validate_plugin_dir(SAMPLE) == []


def test_plugin_validate_lists_every_error_with_file_and_pointer():
    res = CliRunner().invoke(cli, ["plugin", "validate", str(BROKEN)])
    assert res.exit_code == 1
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    recipe = str(BROKEN / "custom-recipes" / "bad-roles" / "recipe.json")
    step = str(BROKEN / "python-steps" / "bad-json" / "step.json")
    trigger = str(BROKEN / "python-triggers" / "no-code" / "trigger.py")
    assert len(errors) == 4, errors
    assert f"error: {recipe}, at /inputRoles/0/arity: " in errors[0] and "UNARY, NARY" in errors[0]
    assert f"error: {recipe}, at /params/0/type: " in errors[1] and "FLOAT" in errors[1]
    assert any(e.startswith(f"error: {trigger}: missing") for e in errors)
    assert any(e.startswith(f"error: {step}, line 4: invalid JSON") for e in errors)
    assert "4 error(s)" in res.stderr


def test_malformed_json_in_a_descriptor_names_file_and_line():
    errors = validate_plugin_dir(BROKEN)
    bad_json = [e for e in errors if e.path.endswith("step.json")]
    assert len(bad_json) == 1 and bad_json[0].line == 4
    assert "line 4" in str(bad_json[0]) and "invalid JSON" in str(bad_json[0])
    assert all(isinstance(e, DescriptorError) for e in errors)


def test_plugin_validate_of_a_directory_without_plugin_json(tmp_path):
    res = CliRunner().invoke(cli, ["plugin", "validate", str(tmp_path)])
    assert res.exit_code == 1 and "plugin.json: missing" in res.stderr


def test_plugin_list_with_a_real_entry_point_in_a_subprocess(tmp_path):
    site = make_dist(tmp_path / "site", {"ep": "entrypoint_plugin"})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(PLUGINS)])}
    env.pop("LABELLOOP_PLUGIN_PATH", None)
    res = subprocess.run([str(LABELLOOP), "plugin", "list"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert any(line.split()[:3] == ["ep", "recipe", "ep/add-constant"]
               for line in res.stdout.splitlines())


@pytest.mark.parametrize("code, ok", [
    ("def create_backend(ctx):\n    return None\n", True),
    ("from mylib import create_backend\n", True),
    ("from mylib import make as create_backend\n", True),
    ("create_backend = make_backend('image')\n", True),
    ("class create_backend:\n    pass\n", True),
    ("def helper():\n    def create_backend(ctx):\n        pass\n", False),
    ("backend = 1\n", False),
])
def test_validate_accepts_any_top_level_binding_of_the_entry_point(tmp_path, code, ok):
    webapp = tmp_path / "webapps" / "page"
    webapp.mkdir(parents=True)
    (tmp_path / "plugin.json").write_text('{"id": "p"}')
    (webapp / "webapp.json").write_text('{"meta": {"label": "Page"}}')
    (webapp / "backend.py").write_text(code)
    errors = validate_plugin_dir(tmp_path)
    assert (errors == []) is ok, errors
    if not ok:
        assert "defines no top-level create_backend()" in str(errors[0])
