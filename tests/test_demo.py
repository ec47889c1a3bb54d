"""`labelloop demo`: the generated demo projects, and the loop on each, in-process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import warm_launch
from PIL import Image

from labeling import demo
from labeling.engine import LabelingEngine
from labeling.features import read_audio
from labeling.settings import parse_settings
from labelloop import scenarios
from labelloop.project import Project

POOL_SIZES = {"image": 1797, "tabular": 150, "text": 400, "sound": 150}


@pytest.fixture(scope="module")
def demos(tmp_path_factory):
    """One demo project per data type (created once: the digits take a second)."""
    root = tmp_path_factory.mktemp("demos")
    return {t: demo.create_demo(root / t, t, n=5) for t in demo.DATA_TYPES}


def truth_of(project: Project) -> dict[str, str]:
    df = pd.read_csv(project.dir / demo.GROUND_TRUTH, dtype=str)
    return dict(zip(df["id"], df["label"], strict=True))


def engine_of(project: Project) -> LabelingEngine:
    (name, app), = project.config["webapps"].items()
    data_type = app["type"].rsplit("/", 1)[-1].removesuffix("-labeling")
    cfg = parse_settings(app["params"], data_type, name, project)
    return LabelingEngine(project, cfg, check_interval=0.0, background=False)


@pytest.mark.parametrize("data_type", demo.DATA_TYPES)
def test_demo_project_holds_a_pool_truth_and_the_loop(demos, data_type):
    project = Project.open(demos[data_type].dir)
    demo.check_project(project)  # every component and param is valid for the host
    truth = truth_of(project)
    assert len(truth) == POOL_SIZES[data_type]
    (app,) = project.config["webapps"].values()
    assert app["type"] == f"ml-assisted-labeling/{data_type}-labeling"
    assert set(truth.values()) == set(app["params"]["categories"])
    scenario = project.config["scenarios"]["active-learning"]
    assert scenario["triggers"][0]["params"]["i_labeling_count"] == 5
    assert [s.get("recipe") or s.get("step") for s in scenario["steps"]] == [
        "train", "sample", "ml-assisted-labeling/label-issues",
        "ml-assisted-labeling/labeling-metrics"]
    if data_type in ("image", "sound"):
        folder = project.folder(app["params"]["unlabeled"])
        assert sorted(folder.list()) == sorted(truth)
        first = folder.root / sorted(truth)[0]
        if data_type == "image":
            with Image.open(first) as img:
                assert img.size == (64, 64) and img.mode == "L"
                assert not any(ch.isdigit() for ch in img.filename.split("-")[0])
        else:
            samples, rate = read_audio(first)
            assert rate == 8000 and 0.5 * rate < len(samples) < 1.3 * rate
    else:
        pool = project.dataset("unlabeled").read()
        assert sorted(pool["data_id"]) == sorted(truth)
        assert "label" not in pool.columns


def label_items(engine: LabelingEngine, truth: dict[str, str], count: int) -> list[dict]:
    """Label the next ``count`` items of the queue with their true label; the items served."""
    served = []
    while len(served) < count:
        batch = engine.batch("sim", size=min(10, count - len(served)))
        assert batch["items"], "the queue ran dry"
        for item in batch["items"]:
            engine.label("sim", item["id"], truth[item["id"]])
            served.append(item)
    return served


@pytest.mark.parametrize("data_type", demo.DATA_TYPES)
def test_demo_loop_retrains_and_reranks_in_process(demos, data_type):
    project = Project.open(demos[data_type].dir)
    truth = truth_of(project)
    engine = engine_of(project)
    name = demo.SCENARIO
    # Three categories at least among 12 random first items; then two loop iterations.
    label_items(engine, truth, 12)
    for session in (1, 2):
        assert scenarios.check_triggers(project, name) is not None
        run = scenarios.run_scenario(project, name)
        assert run["status"] == "SUCCESS", run["error"]
        assert project.variables.get("queries_session") == session
        assert scenarios.check_triggers(project, name) is None  # fired once per session
        served = label_items(engine, truth, 6)
        # The queue follows the new session: the most uncertain unlabeled items come first.
        top = project.dataset("queries").read(limit=6)
        ids = [i["id"] for i in served]
        key = "path" if data_type in ("image", "sound") else "data_id"
        assert ids == top[key].tolist()
        assert all(i["suggestion"] is not None for i in served)
        assert all(0.0 <= i["halting"] <= 1.0 for i in served)
    # Metrics after the first retrain; the second came only 6 labels later: skipped.
    metrics = project.dataset("metrics").read()
    assert metrics["labels"].tolist() == [12]
    assert pd.isna(metrics["contradictions"].iloc[0])
    assert "fewer than 20" in run["details"]["steps"][-1]["details"]["skipped"]
    assert project.model("classifier").latest()["data_type"] == data_type
    # With 18 labels a category may have fewer than the 5 folds need: then label issues wait
    # and the loop goes on; else they are judged.
    issues_step = run["details"]["steps"][2]
    assert issues_step["step"] == "label-issues" and issues_step["status"] == "SUCCESS"
    details = issues_step["details"]
    if "skipped" in details:
        assert "folds need at least 5 labels per category" in details["skipped"]
    else:
        assert details["labels"] == 18 and details["model_version"] == 2


def test_demo_loop_finds_the_labels_given_wrong(tmp_path):
    project = demo.create_demo(tmp_path / "iris", "tabular", n=5)
    truth = truth_of(project)
    engine = engine_of(project)
    cats = sorted(set(truth.values()))
    wrong: set[str] = set()
    for k in range(90):
        batch = engine.batch("sim", size=1)["items"]
        item_id = batch[0]["id"]
        label = truth[item_id]
        if k % 15 == 7:  # 6 of 90 labels given wrong
            label = cats[(cats.index(label) + 1) % len(cats)]
            wrong.add(item_id)
        engine.label("sim", item_id, label)
    run = scenarios.run_scenario(project, demo.SCENARIO)
    assert run["status"] == "SUCCESS", run["error"]
    step = run["details"]["steps"][2]
    assert step["details"]["labels"] == 90 and step["details"]["model_version"] == 1
    issues = project.dataset("label_issues").read()
    found = set(issues["data_id"].astype(str))
    assert found and len(found & wrong) / len(found) >= 0.6


# The command on its embedded SQLite default, as `make demo` runs it: once, on the SQLite run
# (these tests' projects are made by the command, so a PostgreSQL run would test SQLite again).
# test_spans_demo runs the command on PostgreSQL (--database-url).
command_on_sqlite = pytest.mark.sqlite_only


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("LABELLOOP_PROJECT", None)
    return warm_launch.run(list(args), cwd=str(cwd), env=env, timeout=120)


@command_on_sqlite
def test_demo_command_creates_then_reuses_without_serving(tmp_path):
    first = run_cli("demo", "--dir", "d", "--data", "tabular", "--no-serve", "--no-browser",
                    cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "created project IRIS" in first.stdout
    assert "labelloop --project" in first.stdout
    config = json.loads((tmp_path / "d" / "project.json").read_text())
    trigger = config["scenarios"]["active-learning"]["triggers"][0]
    assert trigger["params"]["i_labeling_count"] == demo.DEFAULT_N

    again = run_cli("demo", "--dir", "d", "--data", "text", "--n", "7", "--no-serve",
                    cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "reusing the demo project IRIS" in again.stdout
    assert "holds tabular data, not text" in again.stdout
    assert "every 7 labels" in again.stdout
    config = json.loads((tmp_path / "d" / "project.json").read_text())
    assert config["scenarios"]["active-learning"]["triggers"][0]["params"][
        "i_labeling_count"] == 7


@command_on_sqlite
def test_demo_command_refuses_bad_options(tmp_path):
    bad_n = run_cli("demo", "--dir", "d", "--n", "0", "--no-serve", cwd=tmp_path)
    assert bad_n.returncode != 0 and "--n" in bad_n.stderr
    bad_data = run_cli("demo", "--dir", "d", "--data", "video", "--no-serve", cwd=tmp_path)
    assert bad_data.returncode != 0 and "video" in bad_data.stderr
    assert not (tmp_path / "d").exists()


@command_on_sqlite
def test_demo_command_on_a_busy_port_fails_in_one_line_before_any_url(tmp_path):
    """The URL printed would point at whatever owns the port: the port is checked first."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        proc = run_cli("demo", "--dir", "d", "--data", "tabular", "--no-browser", "--port",
                       str(port), cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "http://" not in proc.stdout and "labeling page" not in proc.stdout
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and f"127.0.0.1:{port}" in errors[0] and "--port" in errors[0]
    assert not (tmp_path / "d").exists()  # nothing made for a server that can't start


def test_webapp_url_and_labeling_count(tmp_path):
    project = demo.create_demo(tmp_path / "p", "tabular", n=3)
    assert demo.webapp_url(project, "0.0.0.0", 5006) == "http://127.0.0.1:5006/webapps/label-iris"
    assert demo.webapp_url(project, "::1", 80) == "http://[::1]:80/webapps/label-iris"
    assert demo.set_labeling_count(project, 3) is False
    assert demo.set_labeling_count(project, 4) is True
    assert Project.open(project.dir).config["scenarios"]["active-learning"]["triggers"][0][
        "params"]["i_labeling_count"] == 4


@command_on_sqlite
def test_demo_command_serves_the_labeling_page(tmp_path):
    """`labelloop demo --no-browser` creates the project, prints the URL and serves it."""
    import time
    import urllib.request

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("LABELLOOP_PROJECT", None)
    log_path = tmp_path / "demo.log"
    with open(log_path, "wb") as log:
        proc = warm_launch.popen(
            ["demo", "--dir", str(tmp_path / "d"), "--data", "tabular", "--no-browser",
             "--port", "0"], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 60
        url = None
        while url is None:
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            for line in log_path.read_text().splitlines():
                if line.startswith("labeling page: "):
                    url = line.removeprefix("labeling page: ").strip()
            time.sleep(0.1)
        assert url.endswith("/webapps/label-iris")
        base = url.split("/webapps/")[0]
        while True:
            try:
                with urllib.request.urlopen(f"{base}/api/v1/webapps/label-iris/config") as resp:
                    config = json.loads(resp.read())
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, \
                    log_path.read_text()
                time.sleep(0.2)
        assert [c["name"] for c in config["categories"]] == ["setosa", "versicolor",
                                                               "virginica"]
        with urllib.request.urlopen(url) as resp:
            assert resp.status == 200
        with urllib.request.urlopen(f"{base}/api/v1/scenarios") as resp:
            listed = json.loads(resp.read())
        listed = listed["scenarios"] if isinstance(listed, dict) else listed
        assert [s["id"] for s in listed] == ["active-learning"]
    finally:
        proc.terminate()
        proc.wait(timeout=20)
