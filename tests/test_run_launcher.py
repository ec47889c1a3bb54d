"""Scenario runs fork from the scheduler's warm parent (labelloop.scenarios.launcher).

Checked with real run processes: a scheduler's first run is a fresh process, the next ones
are children of its warm parent, each in its own session; with LABELLOOP_RUN_LAUNCHER, every
run forks from the shared warm parent of `labelloop scenario launcher`; the
modules plugins name through `register_run_imports` are imported before the fork, while the
plugin's own code is imported by each run (an edited step takes effect at the next run);
stopping the scheduler interrupts a forked run; a warm parent that died is replaced; a
command for another interpreter or other PYTHON* variables gets a fresh process.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import warm_launch

from labelloop.hookspecs import hookimpl
from labelloop.scenarios import Scheduler, get_run
from labelloop.scenarios.launcher import SHARED_ENV, RunLauncher, WarmProcess

# Named by the test plugin below; imported by nothing else of a run.
MARKER_MODULE = "xml.dom.minidom"

STEP = '''
"""Record what this run process sees, then wait `sleep` seconds."""
import os
import sys
import time

VERSION = "{version}"


def run(ctx):
    ctx.project.variables.set(ctx.config["name"], json.dumps({{
        "version": VERSION, "pid": os.getpid(), "ppid": os.getppid(), "sid": os.getsid(0),
        "marker_imported": "{marker}" in sys.modules}}))
    time.sleep(ctx.config["sleep"])


import json  # noqa: E402
'''


def write_step(plugin_dir, version: str) -> None:
    step = plugin_dir / "python-steps" / "record"
    step.mkdir(parents=True, exist_ok=True)
    (step / "step.json").write_text(json.dumps({
        "meta": {"label": "Record the process"},
        "params": [{"name": "name", "type": "STRING", "mandatory": True},
                   {"name": "sleep", "type": "DOUBLE", "defaultValue": 0}]}))
    (step / "step.py").write_text(textwrap.dedent(STEP.format(version=version,
                                                              marker=MARKER_MODULE)))


class RunImports:
    """The in-process side of the test plugin: the modules its runs import."""

    @hookimpl
    def register_run_imports(self, register):
        register(MARKER_MODULE)
        register("no_such_module_for_labelloop")  # left to the runs, with a warning


@pytest.fixture
def project(make_project, tmp_path):
    plugin_dir = tmp_path / "recorder"
    plugin_dir.mkdir()
    (plugin_dir / "plugin.json").write_text(json.dumps({"id": "recorder", "version": "1.0.0"}))
    write_step(plugin_dir, "v1")
    project = make_project(config={"plugin_dirs": [str(plugin_dir)], "scenarios": {
        "quick": {"steps": [{"step": "recorder/record", "params": {"name": "quick"}}]},
        "slow": {"steps": [{"step": "recorder/record",
                            "params": {"name": "slow", "sleep": 120}}]}}})
    project.registry.register_plugin("recorder-imports", RunImports())
    project.plugin_dir = plugin_dir
    return project


@pytest.fixture
def scheduler(project, monkeypatch):
    """A scheduler with a warm parent of its own (not the tests' shared one)."""
    monkeypatch.delenv(SHARED_ENV, raising=False)
    scheduler = Scheduler(project)
    yield scheduler
    scheduler.stop(timeout=10)


def run_once(project, scheduler: Scheduler, name: str = "quick") -> dict:
    run_id = scheduler.launch(name)
    scheduler.wait(timeout=120)
    record = get_run(project, run_id)
    assert record["status"] == "SUCCESS", record
    return json.loads(project.variables.get(name))


def test_runs_fork_from_one_warm_parent_and_import_the_plugin_code_themselves(
        project, scheduler, caplog):
    fresh = run_once(project, scheduler)  # the first run: a fresh interpreter
    assert fresh["ppid"] == os.getpid() and fresh["sid"] == fresh["pid"]
    assert not fresh["marker_imported"] and scheduler.launcher.pid is None

    first = run_once(project, scheduler)
    parent = scheduler.launcher.pid
    assert parent is not None and parent != os.getpid()
    assert first["version"] == "v1"
    assert first["ppid"] == parent  # forked by the warm parent
    assert first["sid"] == first["pid"]  # in a session of its own
    assert first["marker_imported"]  # imported before the fork, as the plugin asked
    assert "no_such_module_for_labelloop" in caplog.text  # named, and said it could not

    write_step(project.plugin_dir, "v2")  # the plugin's code changes between two runs
    second = run_once(project, scheduler)
    assert second["version"] == "v2"
    assert second["ppid"] == parent and second["pid"] != first["pid"]


def test_stopping_the_scheduler_interrupts_a_forked_run(project, scheduler, poll):
    run_once(project, scheduler)  # the next run forks
    run_id = scheduler.launch("slow")
    poll(lambda: project.variables.get("slow") is not None, timeout=60,
         what="the slow step to start")
    seen = json.loads(project.variables.get("slow"))
    pid = seen["pid"]
    assert seen["ppid"] == scheduler.launcher.pid
    assert scheduler.stop(timeout=20) == [run_id]
    record = get_run(project, run_id)
    assert record["status"] == "FAILED" and "interrupted" in record["error"]
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert scheduler.launcher.pid is None  # stop() ended the warm parent too


def test_a_warm_parent_that_died_is_replaced_at_the_next_run(project, scheduler):
    run_once(project, scheduler)
    first = run_once(project, scheduler)
    assert first["ppid"] == scheduler.launcher.pid
    os.kill(first["ppid"], signal.SIGKILL)
    second = run_once(project, scheduler)
    assert second["ppid"] not in (first["ppid"], os.getpid())
    assert second["ppid"] == scheduler.launcher.pid


def parent_of(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[1])


def test_with_a_shared_launcher_every_run_forks_from_it(project, tmp_path, monkeypatch, poll):
    path = str(tmp_path / "runs.sock")
    keeper = warm_launch.popen(["--project", str(project.dir), "scenario", "launcher",
                                "--socket", path])
    try:
        poll(lambda: os.path.exists(path), timeout=60, what="the launcher's socket")
        monkeypatch.setenv(SHARED_ENV, path)
        scheduler = Scheduler(project)
        try:
            first = run_once(project, scheduler)  # the first run forks already
            second = run_once(project, scheduler)
        finally:
            scheduler.stop(timeout=10)
        assert first["ppid"] == second["ppid"] != os.getpid()
        assert parent_of(first["ppid"]) == keeper.pid  # the command's warm parent
        assert first["sid"] == first["pid"]
        assert scheduler.launcher.pid is None  # none of its own
    finally:
        keeper.terminate()
        assert keeper.wait(timeout=30) == 0
    assert not os.path.exists(path)  # it removed its socket


def test_another_interpreter_or_other_python_variables_get_a_fresh_process(tmp_path):
    launcher = RunLauncher(sys.executable, warm_from=1, shared="")  # a warm parent of its own
    try:
        code = "import os, sys; print(os.getppid(), sys.executable)"
        warm = launcher.popen([sys.executable, "-c", code], dict(os.environ))
        assert isinstance(warm, WarmProcess) and warm.wait(timeout=60) == 0
        other = tmp_path / "python"  # the same binary under another name
        other.symlink_to(sys.executable)
        fresh = launcher.popen([str(other), "-c", code], dict(os.environ))
        assert isinstance(fresh, subprocess.Popen) and fresh.wait(timeout=60) == 0
        env = {**os.environ, "PYTHONPATH": str(tmp_path)}
        fresh = launcher.popen([sys.executable, "-c", code], env)
        assert isinstance(fresh, subprocess.Popen) and fresh.wait(timeout=60) == 0
    finally:
        launcher.close()
