"""Running a scenario once (under its lock), and the scenario list with each one's state."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from ..errors import ConflictError
from ..project import Project, end_run, start_run
from .config import scenario_config, scenario_names, step_label, trigger_key
from .lock import ScenarioLock
from .runs import get_run, scenario_runs, update_run_details
from .steps import _execute
from .triggers import trigger_states

log = logging.getLogger("labelloop.scenarios")


def run_scenario(project: Project, name: str, trigger: dict | None = None,
                 run_id: int | None = None, lock_owner: str | None = None,
                 wait: float = 2.0, clock: Any = None) -> dict:
    """Run scenario `name` once: steps in order, stop at the first failure; returns the record.

    Raises ConflictError when another process runs it. `run_id` / `lock_owner` continue a run
    record and a lock that a scheduler created for this process; `clock` is the lock's.
    """
    cfg = scenario_config(project, name)
    lock = ScenarioLock(project, name, owner=lock_owner, clock=clock)
    if not lock.acquire("running", wait=wait):
        message = lock.refused_message()
        if run_id is not None:
            end_run(project.engine, run_id, "SKIPPED", message)
        raise ConflictError(message)
    lock.adopt()
    try:
        base = {"trigger": trigger or {"kind": "manual"}, "steps": [], "pid": os.getpid(),
                "owner": lock.owner, "step_count": len(cfg.get("steps", []))}
        if run_id is None:
            run_id = start_run(project.engine, "scenario", name, base)
        else:
            update_run_details(project, run_id, {"pid": os.getpid()})
        lock.attach_run(run_id)
        t0 = time.monotonic()
        with lock.keep_alive():
            status, error, details = _execute(project, name, run_id)
        details["seconds"] = round(time.monotonic() - t0, 3)
        end_run(project.engine, run_id, status, error, details)
        project.webhooks.emit_now("SCENARIO_RUN_FINISHED", {"scenario": name, "run": {
            "id": run_id, "status": status, "error": error}})
        log.info("scenario %s: run %s %s%s", name, run_id, status, f": {error}" if error else "")
    finally:
        lock.release()
    return get_run(project, run_id)


def list_scenarios(project: Project) -> list[dict]:
    """Every scenario with its triggers (and their state), steps, current and last run."""
    out = []
    for name in scenario_names(project):
        cfg = scenario_config(project, name)
        states = trigger_states(project, name)
        triggers = []
        for i, trig in enumerate(cfg.get("triggers", [])):
            key = trigger_key(i, trig)
            st = states.get(key, {})
            triggers.append({"key": key, "type": trig["type"], "params": trig.get("params", {}),
                             "fire_count": st.get("fire_count", 0), "last_fired": st.get("fired"),
                             "last_checked": st.get("checked"), "last_error": st.get("error"),
                             "error_count": st.get("error_count", 0)})
        holder = ScenarioLock(project, name).holder()
        last = scenario_runs(project, name, limit=1)
        out.append({"id": name, "description": cfg.get("description"),
                    "active": cfg.get("active", True), "triggers": triggers,
                    "steps": [step_label(i, s) for i, s in enumerate(cfg.get("steps", []))],
                    "running": None if holder is None or holder["purpose"] != "running" else
                    {"run_id": holder["run_id"], "owner": holder["owner"]},
                    "last_run": last[0] if last else None})
    return out

