"""The flow: recipe instances of project.json run from each plugin source, recorded, checked."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from labelloop.cli import cli
from labelloop.errors import ConfigError, LabelloopError, NotFoundError
from labelloop.flow import build, prepare, recipe_for_output, run_recipe
from labelloop.progress import tracker
from labelloop.project import Project

REPO = Path(__file__).resolve().parents[1]
PLUGINS = REPO / "tests" / "plugins"
SAMPLE = PLUGINS / "sample-plugin"
LABELLOOP = REPO / ".venv" / "bin" / "labelloop"

SCALE = {"type": "sample/scale-column", "inputs": {"input": ["numbers"]},
         "outputs": {"output": ["scaled"]}, "params": {"column": "v", "factor": 3}}


pytestmark = pytest.mark.usefixtures("clean_env")


def make_project(tmp_path: Path, recipes: dict, **config) -> Project:
    """A project using the sample plugin, with dataset `numbers` (v = 1..5) and `recipes`."""
    project = Project.init(tmp_path / "proj", key="FLOW",
                           config={"plugin_dirs": [str(SAMPLE)], "recipes": recipes, **config})
    project.dataset("numbers", create=True).write(pd.DataFrame({"v": [1, 2, 3, 4, 5],
                                                                "name": list("abcde")}))
    project.declare("datasets", "numbers")
    return project


def snapshot(project: Project) -> tuple:
    """project.json and every table of the database, to show that nothing was written."""
    con = sqlite3.connect(project.dir / "labelloop.db")
    try:
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows = {t: con.execute(f'SELECT * FROM "{t}"').fetchall() for t in sorted(tables)}
    finally:
        con.close()
    return project.config_path.read_text(), rows


def with_recipe(project: Project, name: str, recipe: dict) -> None:
    project.config["recipes"][name] = recipe
    project.save_config()


@pytest.fixture
def ep_module(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS))
    import entrypoint_plugin

    return entrypoint_plugin


# ---------------------------------------------------------------- running recipes
def test_sample_recipe_runs_through_recipe_run(tmp_path):
    project = make_project(tmp_path, {"scale": SCALE})
    res = CliRunner().invoke(cli, ["--project", str(project.dir), "recipe", "run", "scale"])
    assert res.exit_code == 0, res.output
    assert "recipe scale: SUCCESS" in res.stdout
    project = Project.open(project.dir)
    out = project.dataset("scaled").read()
    assert out["v"].tolist() == [3.0, 6.0, 9.0, 12.0, 15.0] and out["name"].tolist() == list("abcde")
    assert "scaled" in project.config["datasets"]  # the new output is declared
    run = project.runs("recipe", "scale")[0]
    assert run["status"] == "SUCCESS" and run["error"] is None
    assert run["started"] <= run["ended"]
    assert run["details"]["type"] == "sample/scale-column" and run["details"]["rows"] == 5


def test_flow_build_runs_the_recipe_that_outputs_a_dataset(tmp_path):
    project = make_project(tmp_path, {"scale": {**SCALE, "params": {"column": "v", "mode": "add"}}})
    assert recipe_for_output(project, "scaled") == "scale"
    res = CliRunner().invoke(cli, ["--project", str(project.dir), "flow", "build", "scaled"])
    assert res.exit_code == 0, res.output
    assert "built scaled with recipe scale: SUCCESS" in res.stdout
    out = project.dataset("scaled").read()
    assert out["v_scaled"].tolist() == [2.0, 4.0, 6.0, 8.0, 10.0]  # default factor 2
    assert build(project, "scaled")["status"] == "SUCCESS"
    assert len(project.runs("recipe", "scale")) == 2


def test_a_python_registered_recipe_runs_in_a_flow(tmp_path, ep_module):
    project = make_project(tmp_path, {
        "scale": SCALE,
        "tag": {"type": "ep/add-constant", "inputs": {"input": ["scaled"]},
                "outputs": {"output": ["tagged"]}, "params": {"value": "7"}},
    })
    project.registry.register_plugin("ep", ep_module)
    build(project, "scaled")
    record = build(project, "tagged")
    assert record["status"] == "SUCCESS" and record["details"]["type"] == "ep/add-constant"
    out = project.dataset("tagged").read()
    assert out["constant"].tolist() == [7] * 5 and out["v"].tolist()[0] == 3.0


def test_an_entry_point_recipe_runs_through_the_cli(tmp_path):
    project = make_project(tmp_path, {
        "tag": {"type": "ep/add-constant", "inputs": {"input": "numbers"},
                "outputs": {"output": "tagged"}, "params": {"value": 1, "column": "one"}},
    })
    site = tmp_path / "site"
    info = site / "labelloop_test_plugin-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: labelloop-test-plugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[labelloop]\nep = entrypoint_plugin\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(PLUGINS)]),
           "LABELLOOP_PROJECT": str(project.dir)}
    res = subprocess.run([str(LABELLOOP), "recipe", "run", "tag"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert project.dataset("tagged").read()["one"].tolist() == [1] * 5


def test_a_failing_recipe_is_recorded_as_failed(tmp_path):
    project = make_project(tmp_path, {"scale": {**SCALE, "params": {"column": "nope"}}})
    with pytest.raises(LabelloopError, match="recipe 'scale' failed: ValueError: no column 'nope'"):
        run_recipe(project, "scale")
    run = project.runs("recipe", "scale")[0]
    assert run["status"] == "FAILED" and "no column 'nope'" in run["error"]
    assert run["ended"] is not None and "Traceback" in run["details"]["traceback"]
    res = CliRunner().invoke(cli, ["--project", str(project.dir), "recipe", "run", "scale"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert res.stderr.strip().splitlines() == ["Error: recipe 'scale' failed: ValueError: no column "
                                               "'nope' in numbers"]
    assert [r["status"] for r in project.runs("recipe", "scale")] == ["FAILED", "FAILED"]


def test_progress_is_logged_off_a_terminal(caplog):
    progress = tracker(logging.getLogger("test.progress"), bar=False)
    with caplog.at_level(logging.INFO, logger="test.progress"):
        assert list(progress(range(20), "counting")) == list(range(20))
    lines = [r.getMessage() for r in caplog.records if r.name == "test.progress"]
    assert len(lines) == 11  # a line at each tenth, then the summary
    assert lines[-2].startswith("counting: 20 items of 20 items (100%)")


def test_prepare_resolves_roles_and_config(tmp_path):
    project = make_project(tmp_path, {"scale": SCALE})
    ctx = prepare(project, "scale")
    assert ctx.config == {"column": "v", "factor": 3.0, "mode": "replace"}
    assert ctx.input("input").name == "numbers" and ctx.output("output").name == "scaled"
    assert not project.dataset("scaled", create=True).exists()  # nothing written by prepare


# ---------------------------------------------------------------- bad input: nothing written
BAD_RECIPES = {
    "unknown component type": (
        {**SCALE, "type": "sample/no-such-recipe"},
        NotFoundError, ["unknown recipe component type 'sample/no-such-recipe'",
                        "sample/scale-column"]),
    "missing required role": (
        {**SCALE, "inputs": {}},
        ConfigError, ["recipe 'bad', input role 'input' is required", "a dataset"]),
    "unknown dataset": (
        {**SCALE, "inputs": {"input": ["ghost"]}},
        NotFoundError, ["'ghost' is not a dataset, folder or saved model", "numbers"]),
    "two objects for a unary role": (
        {**SCALE, "inputs": {"input": ["numbers", "numbers"]}},
        ConfigError, ["takes one object, got 2"]),
    "unknown role": (
        {**SCALE, "inputs": {"input": ["numbers"], "extra": ["numbers"]}},
        ConfigError, ["has no input role 'extra'"]),
    "unknown SELECT value": (
        {**SCALE, "params": {"column": "v", "mode": "multiply"}},
        ConfigError, ["sample/scale-column", "mode", "multiply", "replace", "add"]),
    "number out of range": (
        {**SCALE, "params": {"column": "v", "factor": 5000}},
        ConfigError, ["sample/scale-column", "factor", "5000", "1000"]),
    "missing mandatory param": (
        {**SCALE, "params": {"factor": 2}},
        ConfigError, ["sample/scale-column", "column"]),
}


@pytest.mark.parametrize("case", list(BAD_RECIPES))
def test_bad_recipe_instances_are_refused_and_write_nothing(tmp_path, case):
    recipe, error, words = BAD_RECIPES[case]
    project = make_project(tmp_path, {})
    with_recipe(project, "bad", recipe)
    before = snapshot(project)
    with pytest.raises(error) as err:
        run_recipe(project, "bad")
    for word in words:
        assert word in str(err.value), (case, str(err.value))
    res = CliRunner().invoke(cli, ["--project", str(project.dir), "recipe", "run", "bad"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert len(res.stderr.strip().splitlines()) == 1 and words[0] in res.stderr
    assert snapshot(project) == before
    assert project.runs() == []


def test_a_dataset_where_only_a_saved_model_is_accepted(tmp_path, ep_module):
    project = make_project(tmp_path, {"describe": {
        "type": "ep/describe-model", "inputs": {"model": ["numbers"]},
        "outputs": {"output": ["description"]}}})
    project.registry.register_plugin("ep", ep_module)
    before = snapshot(project)
    with pytest.raises(ConfigError, match="'numbers' is a dataset, but this role accepts only "
                                          "a saved model"):
        run_recipe(project, "describe")
    assert snapshot(project) == before
    # Given a saved model, the same recipe runs.
    from sklearn.dummy import DummyClassifier

    project.model("clf", create=True).save(DummyClassifier().fit([[0], [1]], [0, 1]))
    with_recipe(project, "describe", {**project.config["recipes"]["describe"],
                                      "inputs": {"model": ["clf"]}})
    run_recipe(project, "describe")
    assert project.dataset("description").read()["version"].tolist() == [1]


def test_unknown_recipe_and_nothing_to_build(tmp_path):
    project = make_project(tmp_path, {"scale": SCALE})
    with pytest.raises(NotFoundError, match="unknown recipe 'nope' \\(recipes: scale\\)"):
        run_recipe(project, "nope")
    with pytest.raises(NotFoundError, match="no recipe of the flow outputs 'numbers'"):
        build(project, "numbers")


def test_malformed_project_json_names_file_and_line(tmp_path):
    project = make_project(tmp_path, {"scale": SCALE})
    text = project.config_path.read_text().replace('"recipes": {', '"recipes": {,', 1)
    project.config_path.write_text(text)
    line = next(i for i, t in enumerate(text.splitlines(), 1) if '"recipes": {,' in t)
    res = CliRunner().invoke(cli, ["--project", str(project.dir), "recipe", "run", "scale"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert f"{project.config_path}, line {line}: invalid JSON" in res.stderr
    assert project.config_path.read_text() == text


def test_schema_violation_in_project_json_names_file_and_pointer(tmp_path):
    project = make_project(tmp_path, {"scale": SCALE})
    cfg = json.loads(project.config_path.read_text())
    cfg["recipes"]["scale"]["typo"] = 1
    cfg["recipes"]["scale"]["type"] = "no-slash"
    project.config_path.write_text(json.dumps(cfg, indent=2))
    res = CliRunner().invoke(cli, ["--project", str(project.dir), "recipe", "run", "scale"])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert f"{project.config_path}, at /recipes/scale" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
