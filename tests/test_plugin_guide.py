"""The plugin author's guide (docs/plugins.md): every example runs, every hookspec is documented."""

from __future__ import annotations

import inspect
import re
import sys
import tomllib
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from conftest import CHROMIUM, CHROMIUM_ARGS, NEEDS_CHROMIUM

from labelloop import flow, hookspecs
from labelloop.cli import cli
from labelloop.plugins import PluginRegistry, validate_plugin_dir
from labelloop.project import Project
from labelloop.scenarios import check_triggers, run_scenario

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / "docs" / "plugins.md"
EXAMPLES = REPO / "docs" / "examples"
WORD_TOOLS = EXAMPLES / "word-tools"
PACKAGE = EXAMPLES / "word-tools-package"

pytestmark = pytest.mark.usefixtures("clean_env")


def host_hookspecs() -> list[str]:
    return [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
            if hasattr(fn, "labelloop_spec")]


def test_every_hookspec_is_documented():
    guide = GUIDE.read_text()
    names = host_hookspecs()
    assert {"register_components", "register_commands", "register_api_routes",
            "register_dataset_formats"} <= set(names)
    for name in names:
        assert re.search(rf"^### `{name}\(", guide, re.M), f"{name} has no section in {GUIDE}"


def test_the_readme_links_the_guide():
    assert "docs/plugins.md" in (REPO / "README.md").read_text()


def test_the_examples_are_valid_plugins_and_not_packaged():
    assert validate_plugin_dir(WORD_TOOLS) == []
    # `pip install .` packages python-lib and the built-in plugin's parts: never docs/.
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert pyproject["tool"]["setuptools"]["packages"]["find"]["where"] == ["python-lib"]
    parts = re.search(r"PLUGIN_PARTS = \(([^)]*)\)", (REPO / "setup.py").read_text()).group(1)
    assert "docs" not in parts and "docs" not in (REPO / "MANIFEST.in").read_text()


@pytest.fixture
def project(tmp_path) -> Project:
    config = {
        "plugin_dirs": [str(WORD_TOOLS)],
        "datasets": {"texts": {}},
        "recipes": {"count": {"type": "word-tools/count-words", "inputs": {"input": "texts"},
                              "outputs": {"output": "counted"},
                              "params": {"column": "text", "case": "upper"}}},
        "scenarios": {"grow": {
            "triggers": [{"type": "word-tools/every-n-rows",
                          "params": {"dataset": "texts", "n": 3}}],
            "steps": [{"step": "word-tools/record-count",
                       "params": {"dataset": "texts", "variable": "seen"}}]}},
        "webapps": {"board": {"type": "word-tools/word-board", "params": {"title": "Words!"}}},
    }
    project = Project.init(tmp_path / "proj", key="WORDS", config=config)
    project.dataset("texts").write(pd.DataFrame({"text": ["one two", "three", None]}))
    return project


def test_recipe_with_choices_from_python(project):
    comp = project.registry.component("word-tools/count-words", "recipe")
    case = [p for p in flow.effective_params(comp, project.registry) if p["name"] == "case"][0]
    assert [c["value"] for c in case["selectChoices"]] == ["lower", "upper", "keep"]
    run = flow.run_recipe(project, "count")
    assert run["status"] == "SUCCESS" and run["details"]["rows"] == 3
    out = project.dataset("counted").read()
    assert out["text_words"].tolist() == [2, 1, 0]
    assert out["text"].tolist()[:2] == ["ONE TWO", "THREE"]


def test_trigger_state_and_step(project):
    assert check_triggers(project, "grow") is not None  # 3 rows since 0: fires
    assert check_triggers(project, "grow") is None  # its state remembers 3
    project.dataset("texts").append(pd.DataFrame({"text": ["a", "b"]}))
    assert check_triggers(project, "grow") is None  # 2 new rows < 3
    project.dataset("texts").append(pd.DataFrame({"text": ["c"]}))
    fired = check_triggers(project, "grow")
    assert fired is not None and fired["type"] == "word-tools/every-n-rows"
    record = run_scenario(project, "grow", trigger=fired)
    assert record["status"] == "SUCCESS"
    assert project.variables.get("seen") == 6


def test_query_strategy_and_command(project):
    import numpy as np

    got = {}
    project.registry.pm.hook.register_query_strategies(
        register=lambda name, func, **kw: got.setdefault(name, func))
    scores = got["least-confident-squared"](np.array([[0.9, 0.1], [0.5, 0.5]]))
    assert scores.tolist() == pytest.approx([0.19, 0.75])
    res = CliRunner().invoke(cli, ["--plugin-dir", str(WORD_TOOLS), "plugin", "list"])
    assert "least-confident-squared" in res.stdout


def test_webapp_backend_routes_schema_and_page(project, serve):
    server = serve(project.dir, "--no-scheduler")
    base = "/api/v1/webapps/board"
    for user, word in (("ann", "cat"), ("ann", "dog"), ("bob", "emu")):
        res = server.post(f"{base}/words", {"word": word}, headers={"X-Labelloop-User": user})
        assert res.status == 200, res.body
    assert server.get(f"{base}/words").json() == {"words": {"ann": ["cat", "dog"], "bob": ["emu"]}}
    bad = server.post(f"{base}/words", {"word": ""}, headers={"X-Labelloop-User": "ann"})
    assert bad.status == 400 and "word" in bad.json()["error"]
    page = server.get("/webapps/board")
    assert page.status == 200


def test_entry_point_package(tmp_path, monkeypatch, project):
    # Installed as pip would: a dist-info whose entry points are the ones pyproject.toml declares.
    meta = tomllib.loads((PACKAGE / "pyproject.toml").read_text())["project"]
    info = tmp_path / "site" / "labelloop_shout-1.0.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {meta['name']}\n"
                                   f"Version: {meta['version']}\n")
    eps = meta["entry-points"]["labelloop"]
    (info / "entry_points.txt").write_text(
        "[labelloop]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.syspath_prepend(str(PACKAGE))
    sys.modules.pop("labelloop_shout", None)
    registry = PluginRegistry(builtin_dir=False)
    assert registry.plugins["shout"].status == "loaded"
    assert hasattr(registry.pm.hook, "register_shout_styles")  # its own hookspec
    step = registry.component("shout/shout", "step")
    ctx = type("Ctx", (), {"project": project, "config": {"text": "hi"}})()
    step.entry()(ctx)
    assert project.variables.get("shouted") == "HI!"


@pytest.mark.browser
@NEEDS_CHROMIUM
def test_webapp_page_in_a_browser(project, serve):
    sync_api = pytest.importorskip("playwright.sync_api")
    server = serve(project.dir, "--no-scheduler")
    for word in ("cat", "dog"):
        assert server.post("/api/v1/webapps/board/words", {"word": word}).status == 200
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(server.url + "/webapps/board")
            page.get_by_text("Words!").wait_for()
            page.get_by_text("anonymous posted 2 words").wait_for()
            assert server.post("/api/v1/webapps/board/words", {"word": "emu"}).status == 200
            page.get_by_role("button", name="Refresh").click()
            page.get_by_text("anonymous posted 3 words").wait_for()
        finally:
            browser.close()


def test_annotation_kind_served_end_to_end(tmp_path, serve):
    """The example's `keywords` kind: registered by the hook, served by the labeling engine
    over HTTP (the kind's field, its check against the item's text, its stored value, its
    suggestion), and listed by `labelloop plugin list`."""
    texts = ["red apples and green pears", "a quiet blue sea"]
    config = {"plugin_dirs": [str(WORD_TOOLS)], "webapps": {"keys": {
        "type": "word-tools/keyword-labeling",
        "params": {"unlabeled": "texts", "queries_ds": "queries"}}}}
    project = Project.init(tmp_path / "kw", key="KW", config=config)
    project.dataset("texts", create=True).write(pd.DataFrame({"text": texts}))
    project.dataset("queries", create=True).write(pd.DataFrame(
        {"text": texts, "uncertainty": [0.9, 0.1], "prediction": ["apples,pears", "sea"],
         "model_version": [4, 4]}))
    project.variables.incr("queries_session")
    server = serve(project.dir, "--no-scheduler")
    base = "/api/v1/webapps/keys"
    cfg = server.get(f"{base}/config").json()
    assert cfg["kind"] == "keywords"
    items = server.get(f"{base}/batch?size=2").json()["items"]
    assert [i["data"]["text"] for i in items] == texts
    assert items[0]["suggestion"] == {"keywords": ["apples", "pears"], "model_version": 4}
    bad = server.post(f"{base}/labels", {"id": items[0]["id"], "keywords": ["apples", "sea"]})
    assert bad.status == 400 and "keyword 1 ('sea') is not a word of the text" in \
        bad.json()["error"]
    shape = server.post(f"{base}/labels", {"id": items[0]["id"], "label": "apples"})
    assert shape.status == 400  # the route schema: the answer's field is `keywords`
    assert not project.dataset("keyword_labels", create=True).exists()
    ok = server.post(f"{base}/labels", {"id": items[0]["id"], "keywords": ["Pears", "apples"]})
    assert ok.status == 200, ok.body
    labels = project.dataset("keyword_labels").read()
    assert labels["label"].tolist() == ['["apples", "pears"]']
    back = server.get(f"{base}/annotations").json()["annotations"]
    assert back[0]["keywords"] == ["apples", "pears"]
    res = CliRunner().invoke(cli, ["--plugin-dir", str(WORD_TOOLS), "plugin", "list"])
    assert "keywords" in res.stdout and "annotation-kind" in res.stdout
