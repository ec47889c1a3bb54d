"""Every n labelings: fire the active-learning scenario when n new labels have arrived.

It counts the labels recorded since the Query Sampler last wrote the queries dataset (its
commit), whatever order served the items: an item shown from the previous order but
labeled after the commit counts. Before any queries exist it counts every label. It fires
when the count reaches n (the n-th label fires it, for the first retrain as for the others)
and at most once per commit: the run it starts ends with a new commit, from which the count
starts again. The one exception is a run that failed (nothing re-ranked, so no new commit):
the trigger tries again after another n labels rather than leave the loop stuck.

A label is a LABELED row of the metadata dataset dated after the commit: a new answer, or a
changed one (its row is re-dated); skips are not labels. The commit's time is the queries
dataset's `updated()`, set inside the Query Sampler's write transaction; a label's date is
taken when the request arrives, so an answer written while the commit held the write lock
counts with the earlier order. Each check is two ``COUNT`` queries; no dataset is read.

With ``count`` = ``questions`` it counts the questions answered in a similarity webapp's
pairs dataset (distinct ``question_id``; an ignored question writes no pair) and fires each
time n more have been answered since it last fired.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from labelloop.project import Dataset, Project

LABELED = "LABELED"


def count_labels(dataset: Dataset, since: dt.datetime | None = None) -> int:
    """LABELED rows of a metadata dataset (dated after `since` when given)."""
    if not dataset.exists():
        return 0
    schema = {c["name"]: c["type"] for c in dataset.schema}
    table = dataset.to_rows()
    query = sa.select(sa.func.count()).select_from(table)
    if "status" in schema:
        query = query.where(table.c.status == LABELED)
    if since is not None:
        if schema.get("date") != "date":
            raise ValueError(f"metadata dataset {dataset.name!r} has no date column of type "
                             "date: it is not a labeling webapp's metadata")
        query = query.where(table.c.date > since)
    with dataset.engine.connect() as conn:
        return int(conn.execute(query).scalar_one())


def last_commit(queries: Dataset) -> dt.datetime | None:
    """When the queries dataset was last written (the last Query Sampler commit), or None."""
    return queries.updated()


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
    since = last_commit(Dataset(project, ctx.config["ds_queries"]))
    new = count_labels(metadata, since)
    if new < n:
        return False
    key = "no-queries" if since is None else f"queries:{since.isoformat()}"

    state = ctx.state
    if state.get("fired_for") == key:
        # Fired already since this commit: only a failed run (that made no new commit) earns
        # a retry, and only after another n labels, so a broken flow isn't hammered.
        if not (_last_run_failed(project, _scenario_name(ctx))
                and new >= int(state.get("fired_at_labels", 0)) + n):
            return False
    state["fired_for"] = key
    state["fired_at_labels"] = new
    log = getattr(ctx, "log", None)
    if log is not None:
        log.info("every %d labelings: firing (%d labels since %s)", n, new,
                 "the start" if since is None else f"the queries of {since.isoformat()}")
    return True
