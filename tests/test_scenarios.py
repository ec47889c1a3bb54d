"""Scenarios: steps in order, failures recorded, trigger state, the lock, the scheduler, the CLI."""

from __future__ import annotations

import json
import sys
import time

import pandas as pd
import pytest
from click.testing import CliRunner

from labelloop.cli import cli
from labelloop.errors import ConflictError, NotFoundError
from labelloop.hookspecs import hookimpl
from labelloop.project import Project, start_run
from labelloop.project.leases import ManualClock
from labelloop.scenarios import (
    ScenarioLock,
    Scheduler,
    check_triggers,
    get_run,
    list_scenarios,
    run_scenario,
    scenario_runs,
    trigger_states,
)


def write_var(name: str, value: str = "done", fail: bool = False) -> dict:
    return {"step": "sample/write-variable", "params": {"name": name, "value": value, "fail": fail}}


SCENARIOS = {
    "ok": {"steps": [write_var("a", "1"), write_var("b", "2")]},
    "bad": {"steps": [write_var("a", "1"), write_var("x", fail=True), write_var("c", "3")]},
    "flagged": {"triggers": [{"type": "sample/flag-file", "params": {"filename": "GO"}}],
                "steps": [write_var("flag_run")]},
}


@pytest.fixture
def project(make_project) -> Project:
    return make_project(config={"scenarios": SCENARIOS})


def test_steps_run_in_order_and_are_recorded(project):
    record = run_scenario(project, "ok", trigger={"kind": "manual", "by": "test"})
    assert record["status"] == "SUCCESS" and record["error"] is None
    assert project.variables.get("a") == "1" and project.variables.get("b") == "2"
    details = record["details"]
    assert details["trigger"] == {"kind": "manual", "by": "test"}
    assert [s["status"] for s in details["steps"]] == ["SUCCESS", "SUCCESS"]
    assert all(isinstance(s["seconds"], float) for s in details["steps"])
    assert details["failed_step"] is None
    assert scenario_runs(project, "ok")[0]["id"] == record["id"]


def test_failing_step_stops_the_run_and_is_recorded(project):
    record = run_scenario(project, "bad")
    assert record["status"] == "FAILED"
    assert "step 2" in record["error"] and "failing on purpose" in record["error"]
    steps = record["details"]["steps"]
    assert [s["status"] for s in steps] == ["SUCCESS", "FAILED"]  # step 3 never ran
    assert steps[1]["error"] == "RuntimeError: failing on purpose"
    assert "Traceback" in steps[1]["traceback"]
    assert record["details"]["failed_step"]["index"] == 1
    assert project.variables.get("a") == "1" and project.variables.get("c") is None
    # the lock is released after a failure: the next run starts
    assert run_scenario(project, "ok")["status"] == "SUCCESS"


def test_recipe_and_build_steps(make_project):
    project = make_project(config={
        "datasets": {"numbers": {}},
        "recipes": {"scale": {"type": "sample/scale-column", "inputs": {"input": "numbers"},
                              "outputs": {"output": "scaled"},
                              "params": {"column": "x", "factor": 3}},
                    "scale_y": {"type": "sample/scale-column", "inputs": {"input": "numbers"},
                                "outputs": {"output": "scaled_y"}, "params": {"column": "y"}}},
        "scenarios": {"flow": {"steps": [{"recipe": "scale"}, {"build": "scaled"}]},
                      "broken": {"steps": [{"build": "scaled_y"}, {"recipe": "scale"}]}}})
    project.dataset("numbers").write(pd.DataFrame({"x": [1, 2, 3]}))
    record = run_scenario(project, "flow")
    assert record["status"] == "SUCCESS", record["error"]
    assert project.dataset("scaled").read()["x"].tolist() == [3, 6, 9]
    recipe_runs = project.runs("recipe", "scale")
    assert len(recipe_runs) == 2
    assert {s["recipe_run"] for s in record["details"]["steps"]} == {r["id"] for r in recipe_runs}
    assert "scenario flow" in recipe_runs[0]["details"]["trigger"]
    failed = run_scenario(project, "broken")
    assert failed["status"] == "FAILED"
    assert "step 1 (build scaled_y)" in failed["error"] and "no column 'y'" in failed["error"]
    assert len(failed["details"]["steps"]) == 1
    assert project.runs("recipe", "scale_y")[0]["status"] == "FAILED"


def test_unknown_scenario_is_a_clear_error(project):
    with pytest.raises(NotFoundError, match="unknown scenario 'nope'.*bad, flagged, ok"):
        run_scenario(project, "nope")


def test_lock_refuses_a_concurrent_run(project):
    other = ScenarioLock(project, "ok", owner="another-process")
    assert other.acquire("running")
    with pytest.raises(ConflictError, match="scenario 'ok' is already running.*another-process"):
        run_scenario(project, "ok", wait=0)
    assert project.runs("scenario", "ok") == []  # a refused run writes nothing
    other.release()
    assert run_scenario(project, "ok")["status"] == "SUCCESS"


def test_lock_held_by_a_separate_process_is_refused(project, run_cli):
    ScenarioLock(project, "ok", owner="watcher-elsewhere").acquire("running")
    proc = run_cli(project.dir, "scenario", "run", "ok", check=False)
    assert proc.returncode == 1
    assert "already running" in proc.stderr and "watcher-elsewhere" in proc.stderr


def test_expired_lock_is_taken_over_and_its_run_closed(project):
    clock = ManualClock(int(time.time()))
    dead = ScenarioLock(project, "ok", owner="crashed", ttl=60, clock=clock)
    assert dead.acquire("running")
    run_id = start_run(project.engine, "scenario", "ok", {})
    dead.attach_run(run_id)
    assert not ScenarioLock(project, "ok", clock=clock).acquire("running")
    clock.advance(59)
    assert ScenarioLock(project, "ok", clock=clock).holder() is not None
    clock.advance(1)  # no heartbeat for the whole ttl: the lock expires
    assert ScenarioLock(project, "ok", clock=clock).holder() is None
    record = run_scenario(project, "ok", clock=clock)
    assert record["status"] == "SUCCESS"
    abandoned = get_run(project, run_id)
    assert abandoned["status"] == "FAILED" and "lock expired" in abandoned["error"]


def test_heartbeat_keeps_a_long_run_locked(project, poll):
    clock = ManualClock(int(time.time()))
    lock = ScenarioLock(project, "ok", ttl=60, clock=clock)
    other = ScenarioLock(project, "ok", clock=clock)
    assert lock.acquire("running")
    first = lock.holder()["expires"]
    with lock.keep_alive():
        for _ in range(5):  # 100 s in all, longer than the ttl: only the heartbeat keeps it
            clock.advance(20)  # each 20 s (ttl / 3) is one heartbeat
            poll(lambda: lock.holder() and lock.holder()["expires"] == clock.time() + 60,
                 what="the heartbeat after the clock moved")
            assert not other.acquire("running")
    assert lock.holder()["expires"] == first + 100
    clock.advance(60)  # no heartbeat any more: it expires like any lock
    assert other.acquire("running")


def test_trigger_state_persists_between_checks_and_processes(project):
    assert check_triggers(project, "flagged") is None
    (project.dir / "GO").touch()
    fired = check_triggers(project, "flagged")
    assert fired == {"kind": "trigger", "key": "0:sample/flag-file", "type": "sample/flag-file",
                     "index": 0}
    reopened = Project.open(project.dir)  # a new process would see the same
    state = trigger_states(reopened, "flagged")["0:sample/flag-file"]
    assert state["state"] == {"fired": 1} and state["fire_count"] == 1
    (project.dir / "GO").touch()
    assert check_triggers(reopened, "flagged") is not None
    state = trigger_states(project, "flagged")["0:sample/flag-file"]
    assert state["state"] == {"fired": 2} and state["fire_count"] == 2 and state["error"] is None


class Exploding:
    """A Python plugin with a trigger that raises."""

    @hookimpl
    def register_components(self, register):
        def check(ctx):
            ctx.state["calls"] = ctx.state.get("calls", 0) + 1
            raise ValueError("sensor offline")

        register({"kind": "trigger", "id": "explodes", "check": check})


def test_a_raising_trigger_is_recorded_and_never_stops_the_scheduler(make_project):
    project = make_project(config={"scenarios": {
        "a-broken": {"triggers": [{"type": "boom/explodes"}], "steps": [write_var("never")]},
        "b-unknown": {"triggers": [{"type": "sample/nope"}], "steps": [write_var("never")]},
        "c-bad-params": {"triggers": [{"type": "labelloop/periodic",
                                       "params": {"seconds": "soon"}}], "steps": []},
        "d-good": {"triggers": [{"type": "sample/flag-file"}], "steps": [write_var("good")]}}})
    project.registry.register_plugin("boom", Exploding())
    (project.dir / "RUN_NOW").touch()
    scheduler = Scheduler(project, period=0.1)
    # only the good scenario starts; the others' errors are recorded
    started = scheduler.tick()
    assert len(started) == 1
    scheduler.wait(timeout=60)
    assert get_run(project, started[0])["status"] == "SUCCESS"
    listed = {s["id"]: s for s in list_scenarios(project)}
    assert "ValueError: sensor offline" in listed["a-broken"]["triggers"][0]["last_error"]
    assert "unknown trigger component type 'sample/nope'" in \
        listed["b-unknown"]["triggers"][0]["last_error"]
    assert "seconds" in listed["c-bad-params"]["triggers"][0]["last_error"]
    # state changes of a check that raised are not kept
    assert trigger_states(project, "a-broken")["0:boom/explodes"]["state"] == {}
    scheduler.tick()
    assert trigger_states(project, "a-broken")["0:boom/explodes"]["error_count"] == 2


def test_inactive_scenarios_are_not_checked(make_project):
    project = make_project(config={"scenarios": {"off": {
        "active": False, "triggers": [{"type": "sample/flag-file"}], "steps": []}}})
    (project.dir / "RUN_NOW").touch()
    assert Scheduler(project).tick() == []
    assert (project.dir / "RUN_NOW").exists()


class DyingScheduler(Scheduler):
    """Its run processes die before recording anything."""

    def command(self, name, run_id, owner, trigger):
        return [sys.executable, "-c", "import sys; sys.exit(3)"]


def test_a_run_process_that_dies_is_recorded_as_failed(project):
    scheduler = DyingScheduler(project)
    run_id = scheduler.launch("ok", {"kind": "api", "by": "test"})
    scheduler.wait(timeout=30)
    record = get_run(project, run_id)
    assert record["status"] == "FAILED" and "exited with code 3" in record["error"]
    assert ScenarioLock(project, "ok").holder() is None  # its lock was released


def invoke(project: Project, *args: str):
    """The CLI in this process (the subprocess tests cover the real entry point)."""
    return CliRunner().invoke(cli, ["--project", str(project.dir), *args])


def test_cli_run_and_runs(project):
    result = invoke(project, "scenario", "run", "ok")
    assert result.exit_code == 0, result.output
    assert "SUCCESS" in result.stdout
    result = invoke(project, "scenario", "run", "bad")
    assert result.exit_code == 1
    assert "FAILED" in result.stderr and "failing on purpose" in result.stderr
    runs = invoke(project, "scenario", "runs", "bad").stdout
    assert "FAILED" in runs and "step 2" in runs
    as_json = json.loads(invoke(project, "scenario", "runs", "bad", "--json").stdout)
    assert as_json[0]["details"]["failed_step"]["index"] == 1
    listing = invoke(project, "scenario", "list").stdout
    assert "ok" in listing and "bad" in listing
    assert "unknown scenario" in invoke(project, "scenario", "run", "nope").stderr


def test_scenario_runs_are_numbered_per_scenario_beside_their_record_ids(project):
    """Recipe runs and other scenarios share the run records' ids: `scenario runs` numbers
    each scenario's own runs 1, 2, 3 and shows the record id beside."""
    for name in ("ok", "bad", "ok"):
        invoke(project, "scenario", "run", name)
    runs = scenario_runs(project, "ok")
    assert [r["number"] for r in runs] == [2, 1]
    ids = [r["id"] for r in runs]
    assert ids[0] - ids[1] > 1  # the ids skip: the other runs took some
    lines = invoke(project, "scenario", "runs", "ok").stdout.splitlines()
    assert lines[0].split()[:3] == ["RUN", "RECORD", "STATUS"]
    assert [line.split()[:3] for line in lines[1:]] == \
        [["2", str(ids[0]), "SUCCESS"], ["1", str(ids[1]), "SUCCESS"]]
    assert json.loads(invoke(project, "scenario", "runs", "ok", "--json").stdout)[0][
        "number"] == 2
    listing = {line.split()[0]: line for line in
               invoke(project, "scenario", "list").stdout.splitlines()[1:]}
    assert "2 SUCCESS" in listing["ok"] and "1 FAILED" in listing["bad"]


def test_watch_runs_a_scenario_when_its_periodic_trigger_fires(make_project, run_cli):
    project = make_project(config={"scenarios": {
        "tick": {"triggers": [{"type": "labelloop/periodic", "params": {"seconds": 0.3}}],
                 "steps": [write_var("ticked", "yes")]},
        "broken": {"triggers": [{"type": "sample/nope"}], "steps": []}}})
    # --max-runs stops the watcher by itself; --duration bounds it if the trigger never fired
    proc = run_cli(project.dir, "scenario", "watch", "--period", "0.1", "--max-runs", "1",
                   "--duration", "60")
    assert "1 run(s) finished" in proc.stdout
    runs = project.runs("scenario", "tick")
    assert runs and runs[-1]["status"] == "SUCCESS"
    assert runs[-1]["details"]["trigger"]["key"] == "0:labelloop/periodic"
    assert project.variables.get("ticked") == "yes"
    state = trigger_states(project, "tick")["0:labelloop/periodic"]
    assert state["fire_count"] >= 1 and "last_fired" in state["state"]
    assert trigger_states(project, "broken")["0:sample/nope"]["error_count"] >= 1


def test_tokens_cli(make_project):
    project = make_project()
    result = invoke(project, "token", "add", "alice")
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert len(token) >= 40 and "can't be shown again" in result.stderr
    listing = invoke(project, "token", "list").stdout
    assert "alice" in listing and token not in listing
    from labelloop.web.auth import user_for_token

    assert user_for_token(project.engine, token) == "alice"
    assert user_for_token(project.engine, token + "x") is None
    assert invoke(project, "token", "remove", "alice").exit_code == 0
    assert user_for_token(project.engine, token) is None
    result = invoke(project, "token", "remove", "alice")
    assert result.exit_code == 1 and "no tokens of 'alice'" in result.stderr
    assert "invalid user name" in invoke(project, "token", "add", "  ").stderr
