"""The `labelloop` command line: every command of the host, project selection, error output."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from sklearn.dummy import DummyClassifier

from labelloop.cli import cli
from labelloop.project import Project

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "tests" / "plugins" / "sample-plugin"
LABELLOOP = REPO / ".venv" / "bin" / "labelloop"


pytestmark = pytest.mark.usefixtures("clean_env")


class Labelloop:
    """Runs CLI commands against one project, chosen by --project or by LABELLOOP_PROJECT."""

    def __init__(self, project_dir: Path, how: str):
        self.dir = project_dir
        self.how = how
        self.runner = CliRunner()

    def __call__(self, *args: str, ok: bool = True):
        if self.how == "option":
            res = self.runner.invoke(cli, ["--project", str(self.dir), *args])
        else:
            res = self.runner.invoke(cli, list(args), env={"LABELLOOP_PROJECT": str(self.dir)})
        if ok:
            assert res.exit_code == 0, (args, res.output, res.exception)
        return res


def labelloop_process(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(LABELLOOP), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})


@pytest.mark.parametrize("how", ["option", "env"])
def test_every_host_command(tmp_path, how):
    runner = CliRunner()
    res = runner.invoke(cli, ["init", str(tmp_path / "proj"), "--key", "CLI"])
    assert res.exit_code == 0 and "created project CLI" in res.stdout
    proj = tmp_path / "proj"
    cfg = json.loads((proj / "project.json").read_text())
    cfg["plugin_dirs"] = [str(SAMPLE)]
    cfg["recipes"] = {"scale": {"type": "sample/scale-column", "inputs": {"input": "numbers"},
                                "outputs": {"output": "scaled"}, "params": {"column": "v"}}}
    (proj / "project.json").write_text(json.dumps(cfg))
    ll = Labelloop(proj, how)

    assert "sample/scale-column" in ll("plugin", "list").stdout
    assert "plugin is valid" in ll("plugin", "validate", str(SAMPLE)).stdout

    src = tmp_path / "numbers.csv"
    pd.DataFrame({"v": [1, 2, 3], "name": ["a", "b", "c"]}).to_csv(src, index=False)
    assert "imported 3 rows into numbers" in ll("dataset", "import", "numbers", str(src)).stdout
    listed = ll("dataset", "list").stdout.splitlines()
    assert listed[0].split() == ["DATASET", "ROWS", "COLUMNS"] and listed[1].split() == ["numbers", "3", "2"]
    head = ll("dataset", "head", "numbers", "-n", "2").stdout.splitlines()
    assert head[0].split() == ["v", "name"] and len(head) == 3

    assert "recipe scale: SUCCESS" in ll("recipe", "run", "scale").stdout
    assert "built scaled with recipe scale: SUCCESS" in ll("flow", "build", "scaled").stdout
    out = tmp_path / "scaled.parquet"
    assert "exported 3 rows of scaled" in ll("dataset", "export", "scaled", str(out)).stdout
    assert pd.read_parquet(out)["v"].tolist() == [2.0, 4.0, 6.0]
    out_csv = tmp_path / "scaled.csv"
    ll("dataset", "export", "scaled", str(out_csv))
    assert pd.read_csv(out_csv)["v"].tolist() == [2.0, 4.0, 6.0]

    files = tmp_path / "files"
    (files / "sub").mkdir(parents=True)
    (files / "a.txt").write_text("a")
    (files / "sub" / "b.txt").write_text("b")
    assert "imported 2 files into folder docs" in ll("folder", "import", "docs", str(files)).stdout
    assert ll("folder", "list", "docs").stdout.split() == ["a.txt", "sub/b.txt"]
    assert (proj / "docs" / "sub" / "b.txt").read_text() == "b"

    assert ll("model", "list").stdout.strip() == "(none)"
    Project.open(proj).model("clf", create=True).save(
        DummyClassifier().fit([[0], [1]], [0, 1]),
        {"rows": 2, "classes": ["0", "1"], "metrics": {"accuracy": 0.5}})
    models = ll("model", "list").stdout.splitlines()
    assert models[0].split()[:2] == ["MODEL", "VERSION"]
    assert models[1].split()[:2] == ["clf", "1"] and "0.500" in models[1]

    assert ll("variables", "set", "config", '{"n": [1, 2]}').stdout.strip() == 'config = {"n": [1, 2]}'
    assert ll("variables", "set", "word", "hello").stdout.strip() == 'word = "hello"'
    assert json.loads(ll("variables", "get", "config").stdout) == {"n": [1, 2]}
    assert ll("variables", "get", "word").stdout == "\"hello\"\n"  # ends its line
    assert json.loads(ll("variables", "get", "missing").stdout) is None
    assert json.loads(ll("variables", "get").stdout) == {"config": {"n": [1, 2]}, "word": "hello"}


def test_the_current_directory_is_the_default_project(tmp_path, monkeypatch):
    Project.init(tmp_path / "here")
    monkeypatch.chdir(tmp_path / "here")
    res = CliRunner().invoke(cli, ["variables", "set", "x", "1"])
    assert res.exit_code == 0
    assert Project.open(tmp_path / "here").variables.get("x") == 1


def test_project_option_wins_over_the_env(tmp_path):
    a, b = Project.init(tmp_path / "a"), Project.init(tmp_path / "b")
    res = CliRunner().invoke(cli, ["--project", str(a.dir), "variables", "set", "x", "1"],
                             env={"LABELLOOP_PROJECT": str(b.dir)})
    assert res.exit_code == 0
    assert a.variables.get("x") == 1 and b.variables.get("x") is None


def test_a_user_error_is_one_line_and_debug_shows_the_traceback(tmp_path):
    res = labelloop_process("--project", str(tmp_path), "dataset", "list", cwd=tmp_path)
    assert res.returncode == 1
    assert res.stderr.strip().splitlines() == [
        f"Error: {tmp_path} is not a Labelloop project (no project.json): create one with "
        f"`labelloop init {tmp_path}` or pass --project DIR"]
    res = labelloop_process("--debug", "--project", str(tmp_path), "dataset", "list", cwd=tmp_path)
    assert res.returncode == 1
    assert "Traceback (most recent call last)" in res.stderr and "NotFoundError" in res.stderr


BAD_COMMANDS = {
    "unknown dataset": (["dataset", "head", "ghost"], "unknown dataset 'ghost'"),
    "export of an unknown dataset": (["dataset", "export", "ghost", "x.csv"], "unknown dataset 'ghost'"),
    "import of a missing file": (["dataset", "import", "d", "missing.csv"], "no such file"),
    "import over existing data": (["dataset", "import", "numbers", "{csv}"], "--replace"),
    "invalid dataset name": (["dataset", "import", "../x", "{csv}"], "invalid dataset name"),
    "unknown recipe": (["recipe", "run", "nope"], "unknown recipe 'nope'"),
    "nothing builds it": (["flow", "build", "numbers"], "no recipe of the flow outputs 'numbers'"),
    "unknown folder": (["folder", "list", "nope"], "unknown folder 'nope'"),
    "export to a missing directory": (["dataset", "export", "numbers", "{tmp}/no/dir/x.csv"],
                                      "no/dir"),
    "init over a project": (["init", "{proj}"], "already a Labelloop project"),
}


@pytest.mark.parametrize("case", list(BAD_COMMANDS))
def test_bad_commands_fail_with_one_line_and_change_nothing(tmp_path, case):
    args, words = BAD_COMMANDS[case]
    project = Project.init(tmp_path / "proj")
    csv = tmp_path / "numbers.csv"
    pd.DataFrame({"v": [1, 2]}).to_csv(csv, index=False)
    project.dataset("numbers", create=True).import_file(csv)
    project.declare("datasets", "numbers")
    args = [a.format(csv=csv, tmp=tmp_path, proj=project.dir) for a in args]
    config_before = project.config_path.read_text()
    data_before = project.dataset("numbers").read()
    res = CliRunner().invoke(cli, ["--project", str(project.dir), *args])
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output and isinstance(res.exception, SystemExit)
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and words in lines[0], lines
    assert project.config_path.read_text() == config_before
    pd.testing.assert_frame_equal(project.dataset("numbers").read(), data_before)


def test_folder_import_from_a_missing_directory_declares_nothing(tmp_path):
    project = Project.init(tmp_path / "proj")
    before = project.config_path.read_text()
    res = CliRunner().invoke(cli, ["--project", str(project.dir), "folder", "import", "imgs",
                                   str(tmp_path / "nowhere")])
    assert res.exit_code != 0 and "does not exist" in res.stderr
    assert project.config_path.read_text() == before
    assert not (project.dir / "imgs").exists()


def test_import_replace_overwrites(tmp_path):
    project = Project.init(tmp_path / "proj")
    a, b = tmp_path / "a.csv", tmp_path / "b.parquet"
    pd.DataFrame({"v": [1, 2]}).to_csv(a, index=False)
    pd.DataFrame({"w": ["x"]}).to_parquet(b)
    ll = Labelloop(project.dir, "option")
    ll("dataset", "import", "d", str(a))
    ll("dataset", "import", "d", str(b), "--replace")
    assert project.dataset("d").read()["w"].tolist() == ["x"]
