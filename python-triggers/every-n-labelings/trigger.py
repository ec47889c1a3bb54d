"""Every n labelings: fire the active-learning scenario when enough new labels have arrived.

Before the Query Sampler has written any queries, the trigger fires once the metadata holds
more than n labels. Afterwards it fires when the current queries session (the project
variable ``<queries>_session``, incremented by each Query Sampler run) has at least n
labels. It fires once per session: the run it starts ends with a new session. The one
exception is a run that failed (nothing re-ranked, so no new session): the trigger tries
again after another n labels rather than leave the loop stuck.

Each check is two or three ``COUNT`` queries; no dataset is read.

With ``count`` = ``questions`` it counts the questions answered in a similarity webapp's
pairs dataset (distinct ``question_id``; an ignored question writes no pair) and fires each
time n more have been answered since it last fired.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from labeling.publish import session_variable
from labelloop.project import Dataset, Project

LABELED = "LABELED"


def count_labels(dataset: Dataset, session: Any = None) -> int:
    """LABELED rows of a metadata dataset (of one session when ``session`` is given)."""
    if not dataset.exists():
        return 0
    schema = {c["name"]: c["type"] for c in dataset.schema}
    table = dataset.to_rows()
    query = sa.select(sa.func.count()).select_from(table)
    if "status" in schema:
        query = query.where(table.c.status == LABELED)
    if session is not None:
        if "session" not in schema:
            return 0
        value = str(session) if schema["session"] == "string" else int(session)
        query = query.where(table.c.session == value)
    with dataset.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def _scenario_name(ctx: Any) -> str | None:
    scenario = getattr(ctx, "scenario", None)
    if scenario is None or isinstance(scenario, str):
        return scenario
    return getattr(scenario, "name", None) or getattr(scenario, "id", None)


def _last_run_failed(project: Project, scenario: str | None) -> bool:
    if not scenario:
        return False
    runs = project.runs("scenario", scenario, limit=1)
    return bool(runs) and runs[0]["status"] == "FAILED"


def count_questions(dataset: Dataset) -> int:
    """Answered questions recorded in a pairs dataset (distinct question ids)."""
    if not dataset.exists() or "question_id" not in dataset.columns:
        return 0
    table = dataset.to_rows()
    query = sa.select(sa.func.count(sa.distinct(table.c.question_id)))
    with dataset.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def _check_questions(ctx: Any, n: int) -> bool:
    total = count_questions(Dataset(ctx.project, ctx.config.get("ds_pairs") or "pairs"))
    if total < int(ctx.state.get("fired_at_questions", 0)) + n:
        return False
    ctx.state["fired_at_questions"] = total
    log = getattr(ctx, "log", None)
    if log is not None:
        log.info("every %d answered questions: firing (%d answered)", n, total)
    return True


def check(ctx: Any) -> bool:
    """True when the scenario should run (see the module docstring)."""
    project: Project = ctx.project
    n = int(ctx.config["i_labeling_count"])
    if ctx.config.get("count") == "questions":
        return _check_questions(ctx, n)
    metadata = Dataset(project, ctx.config["ds_metadata"])
    if not metadata.exists():
        return False
    queries_name = ctx.config["ds_queries"]
    queries = Dataset(project, queries_name)
    session = project.variables.get(session_variable(queries_name))
    has_queries = queries.exists() and queries.count() > 0

    total = count_labels(metadata)
    if has_queries:
        key = f"session:{session}"
        due = count_labels(metadata, session if session is not None else 0) >= n
    else:
        key = f"no-queries:{session}"
        due = total > n
    if not due:
        return False

    state = ctx.state
    if state.get("fired_for") == key:
        # Same session as the last firing: only a failed run (that made no new session)
        # earns a retry, and only after another n labels, so a broken flow isn't hammered.
        if not (_last_run_failed(project, _scenario_name(ctx))
                and total >= int(state.get("fired_at_labels", 0)) + n):
            return False
    state["fired_for"] = key
    state["fired_at_labels"] = total
    log = getattr(ctx, "log", None)
    if log is not None:
        log.info("every %d labelings: firing (%s, %d labels in all)", n, key, total)
    return True
