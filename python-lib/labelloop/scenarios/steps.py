"""Steps: running a scenario's steps in order and recording each one."""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

from ..errors import LabelloopError
from ..params import validate_config
from ..plugins import Component, PluginRegistry
from ..progress import tracker
from ..project import Project, end_run
from .config import scenario_config, step_label
from .runs import update_run_details


@dataclass
class StepContext:
    """What a step's `run(ctx)` receives; `details` is recorded with the scenario run."""

    project: Project
    scenario: str
    step: str
    component: Component
    config: dict
    log: logging.Logger
    progress: Any
    run_id: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def registry(self) -> PluginRegistry:
        return self.project.registry


def _run_step(project: Project, scenario: str, step: dict, label: str, run_id: int) -> dict:
    """Run one step; returns what to record about it (raises on failure)."""
    from .. import flow

    origin = f"scenario {scenario} (run {run_id})"
    if "recipe" in step:
        record = flow.run_recipe(project, step["recipe"], trigger=origin)
        return {"recipe_run": record["id"]}
    if "build" in step:
        record = flow.build(project, step["build"], trigger=origin)
        return {"recipe": record["name"], "recipe_run": record["id"]}
    comp = project.registry.component(step["step"], "step")
    config = validate_config(f"{comp.type} (scenario {scenario!r}, {label})",
                             flow.effective_params(comp, project.registry), step.get("params"))
    slog = logging.getLogger(f"labelloop.step.{scenario}")
    ctx = StepContext(project, scenario, label, comp, config, slog, tracker(slog),
                      run_id=run_id)
    comp.entry()(ctx)
    return {"details": ctx.details} if ctx.details else {}


def _execute(project: Project, name: str, run_id: int) -> tuple[str, str | None, dict]:
    """Run the steps in order, recording each; stops at the first failure."""
    steps = scenario_config(project, name).get("steps", [])
    done: list[dict] = []
    for index, step in enumerate(steps):
        label = step_label(index, step)
        entry: dict[str, Any] = {"index": index, "step": label, "status": "RUNNING"}
        update_run_details(project, run_id, {"steps": [*done, entry]})
        t0 = time.monotonic()
        try:
            entry.update(_run_step(project, name, step, label, run_id))
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                message = "interrupted"
            elif isinstance(exc, LabelloopError):
                message = str(exc)
            else:
                message = f"{type(exc).__name__}: {exc}"
            entry.update(status="FAILED", error=message, seconds=round(time.monotonic() - t0, 3))
            if not isinstance(exc, LabelloopError | KeyboardInterrupt):
                entry["traceback"] = traceback.format_exc(limit=20)
            done.append(entry)
            error = f"step {index + 1} ({label}) failed: {message}"
            details = {"steps": done, "failed_step": {"index": index, "step": label,
                                                      "error": message}}
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                end_run(project.engine, run_id, "FAILED", error, details)
                raise
            return "FAILED", error, details
        entry.update(status="SUCCESS", seconds=round(time.monotonic() - t0, 3))
        done.append(entry)
    return "SUCCESS", None, {"steps": done, "failed_step": None}

