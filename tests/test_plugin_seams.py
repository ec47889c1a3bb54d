"""Plugin seams: hooks called through pluggy, plugin commands honouring every plugin source,
plugins loaded once per CLI call, plugin-added hookspecs, one package namespace per plugin."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from labelloop.cli import cli
from labelloop.formats import formats
from labelloop.hookspecs import hookimpl
from labelloop.plugins import PluginRegistry
from labelloop.web.routes import collect_routes

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "tests" / "plugins"
SAMPLE = PLUGINS / "sample-plugin"
LABELLOOP = REPO / ".venv" / "bin" / "labelloop"

pytestmark = pytest.mark.usefixtures("clean_env")


# ---------------------------------------------------------------- through pluggy
class Wrapper:
    """A third-party plugin wrapping every other plugin's registrations."""

    def __init__(self):
        self.calls: list[str] = []

    @hookimpl(hookwrapper=True)
    def register_dataset_formats(self, register):
        self.calls.append("before")
        yield
        self.calls.append("after")

    @hookimpl(hookwrapper=True)
    def register_components(self, register):
        self.calls.append("components")
        yield


class Early:
    def __init__(self, order: list[str]):
        self.order = order

    @hookimpl(tryfirst=True)
    def register_dataset_formats(self, register):
        self.order.append("early")
        register("early-fmt", read=lambda path, options: {}, extensions=(".early",))

    @hookimpl(tryfirst=True)
    def register_api_routes(self, register):
        self.order.append("early")
        register("/early", lambda req: {"ok": True})


class Late:
    def __init__(self, order: list[str]):
        self.order = order

    @hookimpl(trylast=True)
    def register_dataset_formats(self, register):
        self.order.append("late")
        register("late-fmt", write=lambda frame, path, options: None)

    @hookimpl(trylast=True)
    def register_api_routes(self, register):
        self.order.append("late")
        register("/late", lambda req: {"ok": True})


def test_hooks_go_through_pluggy_with_wrappers_tryfirst_and_tracing():
    registry = PluginRegistry(builtin_dir=False, load_entry_points=False)
    order: list[str] = []
    wrapper = Wrapper()
    # Registered late first and early last: pluggy, not registration order, decides.
    registry.register_plugin("late", Late(order))
    registry.register_plugin("wrapper", wrapper)
    registry.register_plugin("early", Early(order))
    traced: list[str] = []
    registry.pm.trace.root.setwriter(traced.append)
    undo = registry.pm.enable_tracing()
    try:
        known = formats(registry)
        routes = collect_routes(registry)
    finally:
        undo()
    # Each format and route is attributed to the plugin that registered it.
    assert known["early-fmt"].plugin.startswith("early:")
    assert known["late-fmt"].plugin.startswith("late:")
    assert {r.path: r.plugin.split(":")[0] for r in routes} == {"/early": "early", "/late": "late"}
    assert order == ["early", "late", "early", "late"]
    # The wrapper wrapped the registration of each plugin (two plain implementations).
    assert wrapper.calls.count("before") == 2 and wrapper.calls.count("after") == 2
    assert any("register_dataset_formats" in line for line in traced)


def test_a_failing_registration_is_attributed_to_its_plugin_and_the_others_load():
    class Bad:
        @hookimpl
        def register_api_routes(self, register):
            raise RuntimeError("boom")

    registry = PluginRegistry(builtin_dir=False, load_entry_points=False)
    registry.register_plugin("bad", Bad())
    registry.register_plugin("late", Late([]))
    assert [r.path for r in collect_routes(registry)] == ["/late"]


def test_register_components_runs_hookwrappers():
    registry = PluginRegistry(builtin_dir=False, load_entry_points=False)
    wrapper = Wrapper()
    registry.register_plugin("wrapper", wrapper)

    class Comp:
        @hookimpl
        def register_components(self, register):
            register({"kind": "step", "id": "noop", "run": lambda ctx: None})

    registry.register_plugin("comp", Comp())
    assert "comp/noop" in registry.components
    assert wrapper.calls == ["components"]


# ---------------------------------------------------------------- CLI commands
def hello_plugin(root: Path, plugin_id: str = "hello") -> Path:
    """A directory plugin adding `labelloop hello`; its hooks module counts its imports."""
    plugin = root / plugin_id
    (plugin / "python-lib").mkdir(parents=True)
    (plugin / "plugin.json").write_text(json.dumps({"id": plugin_id, "hooks": ["hello_hooks"]}))
    (plugin / "python-lib" / "hello_hooks.py").write_text(
        "import os\n"
        "import click\n"
        "from labelloop.hookspecs import hookimpl\n"
        "with open(os.environ['HELLO_LOADS'], 'a') as f:\n"
        "    f.write('loaded\\n')\n"
        "@hookimpl\n"
        "def register_commands(cli):\n"
        "    @cli.command()\n"
        "    def hello():\n"
        "        '''Say hello.'''\n"
        "        click.echo('hello from a plugin')\n")
    return plugin


def run_cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if not k.startswith("LABELLOOP_")}
    full.update(env)
    return subprocess.run([str(LABELLOOP), *args], cwd=cwd, env=full, capture_output=True,
                          text=True, timeout=120)


def test_plugin_dir_option_adds_commands_and_plugins_load_once(tmp_path):
    plugin = hello_plugin(tmp_path / "plugins")
    loads = tmp_path / "loads.txt"
    res = run_cli(["--plugin-dir", str(plugin), "hello"], tmp_path, HELLO_LOADS=str(loads))
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "hello from a plugin"
    assert loads.read_text().splitlines() == ["loaded"]
    # `plugin list` needs the registry too: still one load for the whole command.
    loads.unlink()
    res = run_cli([f"--plugin-dir={plugin}", "plugin", "list"], tmp_path, HELLO_LOADS=str(loads))
    assert res.returncode == 0, res.stderr
    assert loads.read_text().splitlines() == ["loaded"]
    assert any(line.split()[:3] == ["hello", "hooks", "register_commands"]
               for line in res.stdout.splitlines())


def test_plugin_path_env_adds_commands(tmp_path):
    plugin = hello_plugin(tmp_path / "plugins")
    loads = tmp_path / "loads.txt"
    res = run_cli(["hello"], tmp_path, HELLO_LOADS=str(loads), LABELLOOP_PLUGIN_PATH=str(plugin))
    assert res.returncode == 0, res.stderr
    assert "hello from a plugin" in res.stdout
    assert loads.read_text().splitlines() == ["loaded"]


def test_the_projects_plugin_dirs_add_commands_and_load_once(tmp_path):
    project = tmp_path / "proj"
    res = run_cli(["init", str(project)], tmp_path)
    assert res.returncode == 0, res.stderr
    hello_plugin(project / "plugins")
    config = json.loads((project / "project.json").read_text())
    config["plugin_dirs"] = ["plugins/hello"]
    (project / "project.json").write_text(json.dumps(config))
    loads = tmp_path / "loads.txt"
    res = run_cli(["--project", str(project), "hello"], tmp_path, HELLO_LOADS=str(loads))
    assert res.returncode == 0, res.stderr
    assert "hello from a plugin" in res.stdout
    # A command that opens the project (and its registry) still loads plugins once.
    loads.unlink()
    res = run_cli(["dataset", "list"], project, HELLO_LOADS=str(loads))
    assert res.returncode == 0, res.stderr
    assert loads.read_text().splitlines() == ["loaded"]


def test_plugin_list_shows_strategies_and_hooks():
    res = CliRunner().invoke(cli, ["--plugin-dir", str(SAMPLE), "plugin", "list"])
    assert res.exit_code == 0, res.output
    rows = [line.split(None, 3) for line in res.stdout.splitlines()[1:]]
    assert ["sample", "strategy", "margin-squared", "Squared margin"] in rows
    assert ["ml-assisted-labeling", "strategy", "diverse_margin", "Margin, diverse batch"] in rows
    hooks = {r[0]: " ".join(r[2:]) for r in rows if r[1] == "hooks"}
    assert "register_query_strategies" in hooks["sample"]
    assert "register_commands" in hooks["ml-assisted-labeling"]


# ---------------------------------------------------------------- hookspecs from entry points
def test_an_entry_point_plugin_adds_hookspecs(tmp_path, monkeypatch):
    site = tmp_path / "site"
    info = site / "widgets_plugin-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: widgets-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[labelloop]\nwidgets = widgets_plugin\n")
    (site / "widgets_plugin.py").write_text(
        "from labelloop.hookspecs import hookimpl, hookspec\n"
        "class hookspecs:\n"
        "    @hookspec\n"
        "    def register_widgets(self, register):\n"
        "        '''Register widgets.'''\n")
    monkeypatch.syspath_prepend(str(site))
    other = tmp_path / "plugins" / "gadgets"
    (other / "python-lib").mkdir(parents=True)
    (other / "plugin.json").write_text(json.dumps({"id": "gadgets", "hooks": ["gadget_hooks"]}))
    (other / "python-lib" / "gadget_hooks.py").write_text(
        "from labelloop.hookspecs import hookimpl\n"
        "@hookimpl\n"
        "def register_widgets(register):\n"
        "    register('knob', label='A knob')\n")
    registry = PluginRegistry(plugin_dirs=[other], builtin_dir=False)
    assert registry.plugins["widgets"].status == "loaded"
    got = []
    registry.pm.hook.register_widgets(register=lambda *a, **kw: got.append((a, kw)))
    assert got == [(("knob",), {"label": "A knob"})]


# ---------------------------------------------------------------- one namespace per plugin
def util_plugin(root: Path, plugin_id: str, value: str) -> Path:
    plugin = root / plugin_id
    (plugin / "python-lib" / "helpers").mkdir(parents=True)
    (plugin / "plugin.json").write_text(json.dumps({"id": plugin_id, "hooks": ["hooks_mod"]}))
    (plugin / "python-lib" / "util.py").write_text(f"VALUE = {value!r}\n")
    (plugin / "python-lib" / "helpers" / "__init__.py").write_text(
        "import util\n\ndef value():\n    return 'helpers:' + util.VALUE\n")
    (plugin / "python-lib" / "hooks_mod.py").write_text(
        "from labelloop.hookspecs import hookimpl\n"
        "from util import VALUE\n"
        "import helpers\n"
        "@hookimpl\n"
        "def register_commands(cli):\n"
        "    pass\n"
        "def value():\n"
        "    return VALUE, helpers.value()\n")
    step = plugin / "python-steps" / "which"
    step.mkdir(parents=True)
    (step / "step.json").write_text(json.dumps({"meta": {"label": "Which util"}}))
    (step / "step.py").write_text(
        "import util\n\ndef run(ctx):\n"
        "    import helpers\n"
        "    return util.VALUE, helpers.value()\n")
    return plugin


def test_two_plugins_with_a_same_named_module_do_not_collide(tmp_path):
    one = util_plugin(tmp_path / "a", "one", "from plugin one")
    two = util_plugin(tmp_path / "b", "two", "from plugin two")
    registry = PluginRegistry(plugin_dirs=[one, two], builtin_dir=False, load_entry_points=False)
    assert {p: i.status for p, i in registry.plugins.items()} == {
        "labelloop": "loaded", "one": "loaded", "two": "loaded"}
    assert registry.component("one/which").entry()(None) == ("from plugin one",
                                                             "helpers:from plugin one")
    assert registry.component("two/which").entry()(None) == ("from plugin two",
                                                             "helpers:from plugin two")
    hooks = {registry.plugin_of(name): plugin for name, plugin in registry.pm.list_name_plugin()}
    assert hooks["one"].value() == ("from plugin one", "helpers:from plugin one")
    assert hooks["two"].value() == ("from plugin two", "helpers:from plugin two")
    # Nothing of either plugin went onto sys.path or under a bare `util` name.
    assert "util" not in sys.modules or "plugin" not in repr(getattr(sys.modules["util"], "VALUE",
                                                                      ""))
    assert not any(str(p).startswith(str(tmp_path)) for p in sys.path)
    assert sys.modules["labelloop_plugins.one.util"].VALUE == "from plugin one"


def test_the_builtin_plugins_labeling_package_stays_importable():
    registry = PluginRegistry(load_entry_points=False)
    assert registry.plugins["ml-assisted-labeling"].status == "loaded"
    import labeling.hooks

    assert registry.pm.is_registered(labeling.hooks)
