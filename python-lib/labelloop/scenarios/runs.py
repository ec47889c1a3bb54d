"""Scenario run records (stored by labelloop.project.runs): reading, progress, closing.

Written through the project's writer (`project.db`): the scheduler does this bookkeeping
inside the server process."""

from __future__ import annotations

from ..project import Project
from ..project import runs as _runs
from .config import scenario_config


def close_interrupted_runs(project: Project, run_id: int, message: str = "interrupted") -> int:
    """End a scenario run left RUNNING, and the recipe runs it started, as FAILED; how many."""
    return _runs.close_interrupted_runs(project.db, run_id, message)


def update_run_details(project: Project, run_id: int, details: dict) -> None:
    """Merge `details` into a run record while it runs (so others see its progress)."""
    _runs.update_run_details(project.db, run_id, details)


def get_run(project: Project, run_id: int) -> dict:
    """One run record by id."""
    return _runs.get_run(project.engine, run_id)


def scenario_runs(project: Project, name: str, limit: int = 50) -> list[dict]:
    """Runs of scenario `name`, newest first, each with its `number` among the scenario's
    runs (1, 2, 3, ...); `id` is the run record's, a numbering shared with recipe runs."""
    scenario_config(project, name)
    runs = project.runs("scenario", name, limit=limit)
    if not runs:
        return []
    # Newest first, and runs are never deleted: the i-th listed is run number total - i
    # (counted up to the newest listed, so a run starting meanwhile shifts nothing).
    total = _runs.count_runs(project.engine, "scenario", name, up_to=runs[0]["id"])
    return [{**r, "number": total - i} for i, r in enumerate(runs)]
