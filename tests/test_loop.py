"""The active-learning loop in-process: every-n-labelings trigger, scenario, labeling metrics.

Labels are recorded the way the labeling engine records them (one row appended to the labels
and metadata datasets, `session` = the queries session at labeling time); the trigger is
checked and the scenario run through the host's own scenario code.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_wine

from labelloop import scenarios
from labelloop.errors import ConfigError
from labelloop.project import Project

SCENARIO = "active-learning"
N = 20


def loop_config(n: int = N, metrics_params: dict | None = None) -> dict:
    return {
        "datasets": {"unlabeled": {}, "labels": {}, "metadata": {}, "queries": {},
                     "metrics": {}},
        "recipes": {
            "train": {"type": "ml-assisted-labeling/train-classifier",
                      "inputs": {"labels": "labels"}, "outputs": {"model": "classifier"},
                      "params": {"label_col": "label", "data_type": "tabular"}},
            "sample": {"type": "ml-assisted-labeling/query-sampler",
                       "inputs": {"saved_model": "classifier", "unlabeled_samples": "unlabeled",
                                  "labels": "labels"},
                       "outputs": {"queries": "queries"}, "params": {"strategy": "margin"}},
        },
        "scenarios": {SCENARIO: {
            "triggers": [{"type": "ml-assisted-labeling/every-n-labelings",
                          "params": {"i_labeling_count": n, "ds_metadata": "metadata",
                                     "ds_queries": "queries"}}],
            "steps": [{"recipe": "train"}, {"recipe": "sample"},
                      {"step": "ml-assisted-labeling/labeling-metrics",
                       "params": metrics_params or {"sample_size": 100}}],
        }},
    }


class Annotator:
    """Labels pool rows like the engine does: queue from queries when present, else seeded."""

    def __init__(self, project: Project, pool: pd.DataFrame, truth: np.ndarray,
                 session_type: str = "bigint"):
        self.project = project
        self.pool = pool
        self.truth = truth
        self.labeled: set[int] = set()
        self.order = np.random.default_rng(0).permutation(len(pool))
        self.session_type = session_type
        self.next_id = 1

    def session(self) -> int:
        return int(self.project.variables.get("queries_session") or 0)

    def queue(self) -> list[int]:
        queries = self.project.dataset("queries")
        if queries.exists() and queries.count():
            # The wine features identify a row: map the ranked rows back to pool positions.
            ranked = queries.read(columns=["proline", "magnesium", "alcohol"])
            key = {tuple(r): i for i, r in enumerate(
                self.pool[["proline", "magnesium", "alcohol"]].itertuples(index=False))}
            order = [key[tuple(r)] for r in ranked.itertuples(index=False)]
        else:
            order = self.order.tolist()
        return [i for i in order if i not in self.labeled]

    def label(self, count: int, status: str = "LABELED", label: str | None = None) -> None:
        session = self.session()
        items = self.queue()[:count]
        rows, meta = [], []
        for i in items:
            value = label if label is not None else str(self.truth[i])
            rows.append({**self.pool.iloc[i].to_dict(),
                         "label": value if status == "LABELED" else None,
                         "label_id": self.next_id})
            meta.append({"date": pd.Timestamp(dt.datetime.now(dt.UTC)), "data_id": str(i),
                         "comment": "", "session": session if self.session_type == "bigint"
                         else str(session), "status": status, "annotator": "sim",
                         "label": value if status == "LABELED" else None,
                         "label_id": self.next_id})
            self.next_id += 1
            self.labeled.add(i)
        with self.project.write_transaction() as conn:
            self.project.dataset("labels").append(pd.DataFrame(rows), conn=conn)
            self.project.dataset("metadata").append(pd.DataFrame(meta), conn=conn)


@pytest.fixture
def wine():
    data = load_wine(as_frame=True)
    return data.data, data.target.to_numpy()


@pytest.fixture
def make_project(tmp_path, wine):
    def make(n: int = N, metrics_params: dict | None = None, name: str = "p") -> Project:
        project = Project.init(tmp_path / name, key="LOOP", config=loop_config(n, metrics_params))
        project.dataset("unlabeled").write(wine[0])
        return project
    return make


def fires(project: Project) -> bool:
    trigger = project.config["scenarios"][SCENARIO]["triggers"][0]
    return scenarios.check_trigger(project, SCENARIO, 0, trigger)


# --------------------------------------------------------------------------- the trigger


def test_trigger_before_any_queries_fires_at_the_nth_label(make_project, wine):
    project = make_project()
    assert not fires(project)  # no metadata dataset yet
    annotator = Annotator(project, *wine)
    annotator.label(N - 1)
    assert not fires(project)
    annotator.label(3, status="SKIPPED")
    assert not fires(project)  # skips are not labels
    annotator.label(1)
    assert fires(project)  # the n-th label
    assert not fires(project)  # never twice before a Query Sampler commit
    annotator.label(N)
    assert not fires(project)
    states = scenarios.trigger_states(project, SCENARIO)
    assert next(iter(states.values()))["fire_count"] == 1


def test_trigger_counts_the_labels_since_the_query_samplers_commit(make_project, wine):
    project = make_project()
    annotator = Annotator(project, *wine)
    annotator.label(N)
    assert fires(project)
    run = scenarios.run_scenario(project, SCENARIO)
    assert run["status"] == "SUCCESS", run["error"]
    assert project.variables.get("queries_session") == 1
    assert project.dataset("queries").count() == len(wine[0]) - N

    assert not fires(project)  # a new commit without labels
    annotator.label(N - 1)
    annotator.label(5, status="SKIPPED")
    assert not fires(project)
    annotator.label(1)
    assert fires(project)
    assert not fires(project)
    # Labels recorded before the new commit don't count towards the next retrain.
    scenarios.run_scenario(project, SCENARIO)
    assert project.variables.get("queries_session") == 2
    assert not fires(project)
    annotator.label(N - 1)
    assert not fires(project)


def test_trigger_fires_at_n_labels_given_through_the_engine_half_from_the_previous_order(
        make_project, wine):
    """The labels an annotator gives to items the webapp still serves from the previous
    order (its queue switches only once the new one is built) count like the others."""
    from labeling.engine import LabelingEngine
    from labeling.settings import parse_settings

    project = make_project()
    cfg = parse_settings({"unlabeled": "unlabeled", "categories": {c: None for c in "012"},
                          "labels_ds": "labels", "metadata_ds": "metadata",
                          "queries_ds": "queries", "max_reserved": 100},
                         "tabular", "w", project)
    # The webapp looks for a new session only when told to (refresh): as a server does
    # between two of its checks, or while the new queue is being built.
    engine = LabelingEngine(project, cfg, check_interval=3600, background=False)
    given = []

    def label(count: int) -> list[int]:
        """Label the next `count` items served; the sessions they were recorded with."""
        items = engine.batch("u", count)["items"]
        assert len(items) == count
        for item in items:
            engine.label("u", item["id"], str(len(given) % 3))  # any labels, three classes
            given.append(item["id"])
        meta = project.dataset("metadata").read()
        return meta["session"].tail(count).tolist()

    assert label(N - 1) == [0] * (N - 1)
    assert not fires(project)
    label(1)
    assert fires(project)  # the first retrain at exactly n labels
    run = scenarios.run_scenario(project, SCENARIO)
    assert run["status"] == "SUCCESS", run["error"]
    assert project.variables.get("queries_session") == 1

    # The webapp has not switched yet: these items come from the previous order.
    assert label(N // 2) == [0] * (N // 2)
    assert not fires(project)
    engine.refresh(wait=True)
    assert engine.stats("u")["session"] == 1
    assert label(N // 2 - 1) == [1] * (N // 2 - 1)
    assert not fires(project)  # n - 1 since the commit
    label(1)
    assert fires(project)  # the n-th, half of them given to items of the previous order


def test_trigger_retries_after_a_failed_run_only_once_n_more_labels_arrive(make_project, wine):
    project = make_project()
    annotator = Annotator(project, *wine)
    annotator.label(N, label="0")  # one class only: training fails
    assert fires(project)
    run = scenarios.run_scenario(project, SCENARIO)
    assert run["status"] == "FAILED"
    assert "same label" in run["error"]
    assert not fires(project)  # same session, and no new labels
    annotator.label(N - 1)
    assert not fires(project)
    annotator.label(1)
    assert fires(project)  # n more labels after a failed run: try again
    assert scenarios.run_scenario(project, SCENARIO)["status"] == "SUCCESS"
    assert not fires(project)


def test_trigger_params_are_validated(make_project):
    project = make_project(n=0)
    assert not fires(project)
    state = next(iter(scenarios.trigger_states(project, SCENARIO).values()))
    assert "i_labeling_count" in state["error"]


# --------------------------------------------------------------------------- the loop


def test_loop_retrains_reranks_and_records_metrics(make_project, wine):
    project = make_project()
    annotator = Annotator(project, *wine)
    sessions_seen = []
    for _ in range(4):
        annotator.label(N + 1)
        assert fires(project)
        run = scenarios.run_scenario(project, SCENARIO, trigger={"kind": "trigger"})
        assert run["status"] == "SUCCESS", run["error"]
        sessions_seen.append(project.variables.get("queries_session"))
        # The next labels come from the top of the new queries, most uncertain first.
        queries = project.dataset("queries").read(columns=["uncertainty"])["uncertainty"]
        assert queries.is_monotonic_decreasing
    assert sessions_seen == [1, 2, 3, 4]
    assert project.model("classifier").latest()["version"] == 4

    metrics = project.dataset("metrics").read()
    assert metrics["model_version"].tolist() == [1, 2, 3, 4]
    assert metrics["labels"].tolist() == [21, 42, 63, 84]
    assert metrics["contradictions"].isna().tolist() == [True, False, False, False]
    assert metrics["contradictions"].iloc[1:].between(0, 1).all()
    assert metrics["auc"].between(0.5, 1).all()
    assert metrics["accuracy"].between(0, 1).all()
    run = project.runs("scenario", SCENARIO, limit=1)[0]
    step = run["details"]["steps"][-1]
    assert step["status"] == "SUCCESS"
    assert step["details"]["previous_version"] == 3
    assert step["details"]["sampled"] == 100


def test_metrics_step_skips_without_enough_new_labels(make_project, wine):
    project = make_project()
    annotator = Annotator(project, *wine)
    annotator.label(30)
    assert scenarios.run_scenario(project, SCENARIO)["status"] == "SUCCESS"
    assert project.dataset("metrics").count() == 1

    # Metrics again for the same version: skipped.
    run = scenarios.run_scenario(project, SCENARIO)  # retrains on the same 30 labels
    assert run["status"] == "SUCCESS"
    assert "fewer than 20" in run["details"]["steps"][-1]["details"]["skipped"]
    assert project.dataset("metrics").count() == 1

    annotator.label(19)  # 49 labels: 19 since the last computation
    run = scenarios.run_scenario(project, SCENARIO)
    assert "19 labels added" in run["details"]["steps"][-1]["details"]["skipped"]
    annotator.label(1)
    run = scenarios.run_scenario(project, SCENARIO)
    details = run["details"]["steps"][-1]["details"]
    assert "skipped" not in details
    # Compared with the version of the last computation (1), not the skipped ones.
    assert details["previous_version"] == 1 and details["model_version"] == 4
    assert project.dataset("metrics").read()["labels"].tolist() == [30, 50]


def test_metrics_step_explicit_params_and_errors(make_project, wine):
    project = make_project(metrics_params={"saved_model": "classifier",
                                           "unlabeled_samples": "unlabeled",
                                           "ds_metrics": "history", "sample_size": 10,
                                           "min_new_labels": 0})
    annotator = Annotator(project, *wine)
    annotator.label(25)
    scenarios.run_scenario(project, SCENARIO)
    annotator.label(1)
    run = scenarios.run_scenario(project, SCENARIO)
    assert run["status"] == "SUCCESS", run["error"]
    assert project.dataset("history").read()["labels"].tolist() == [25, 26]
    assert run["details"]["steps"][-1]["details"]["sampled"] == 10

    from labelloop.plugins import PluginRegistry

    step = PluginRegistry().component("ml-assisted-labeling/labeling-metrics", "step")
    resolve = step.entry("resolve_settings")
    project.config["recipes"] = {}
    with pytest.raises(ConfigError, match="saved_model|unlabeled_samples"):
        resolve(project, {"saved_model": "classifier"})
    assert resolve(project, {"unlabeled_samples": "unlabeled"})["model"] == "classifier"


def test_metrics_step_without_a_model_version_skips(make_project):
    project = make_project()
    project.config["scenarios"][SCENARIO]["steps"] = \
        project.config["scenarios"][SCENARIO]["steps"][2:]
    run = scenarios.run_scenario(project, SCENARIO)
    assert run["status"] == "SUCCESS"
    assert "no version yet" in run["details"]["steps"][0]["details"]["skipped"]


def test_model_list_shows_the_first_versions_accuracy_and_auc(make_project, wine):
    """The first retrain's labels hold a class seen once: `model list` still shows its
    accuracy and AUC (pooled out-of-fold), not blanks."""
    from click.testing import CliRunner

    from labelloop.cli import cli

    project = make_project()
    annotator = Annotator(project, *wine)
    truth = wine[1]
    annotator.order = np.concatenate([np.flatnonzero(truth == 0)[:10],
                                      np.flatnonzero(truth == 1)[:9],
                                      np.flatnonzero(truth == 2)[:1]])
    annotator.label(N)
    run = scenarios.run_scenario(project, SCENARIO)
    assert run["status"] == "SUCCESS", run["error"]
    metrics = project.model("classifier").latest()["metrics"]
    assert "single example" in metrics["cv"]
    listed = CliRunner().invoke(cli, ["--project", str(project.dir), "model", "list"])
    assert listed.exit_code == 0, listed.output
    header, row = listed.output.splitlines()[:2]
    assert header.split() == ["MODEL", "VERSION", "CREATED", "ROWS", "CLASSES", "ACCURACY", "AUC"]
    cells = row.split()
    assert cells[:2] == ["classifier", "1"]
    assert cells[-2:] == [f"{metrics['accuracy']:.3f}", f"{metrics['auc']:.3f}"]
