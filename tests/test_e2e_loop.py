"""The active-learning loop end to end, over HTTP, on the digits demo project.

`labelloop demo --no-serve` creates the project; a real `labelloop serve` runs the labeling
webapp and the scenario scheduler; a simulated annotator who knows the true digits labels
through the JSON API. Every 20 labels the `active-learning` scenario retrains, re-ranks the
pool and records metrics in a subprocess, while the annotator keeps labeling. Checked: every
run succeeded, the loop retrained at least 5 times in 120 labels, and after each session
change the queue served the top of the new queries dataset (minus the items already labeled).
"""

from __future__ import annotations

import os
import time

import pandas as pd
import pytest
import warm_launch
from conftest import new_database_url

from labeling.training import TRUSTED_TYPES, set_folder_root
from labelloop.project import Dataset, Project

pytestmark = pytest.mark.slow

WEBAPP = "label-digits"
SCENARIO = "active-learning"
N = 20
DURING_TRAINING = 2  # labels an annotator adds while a retrain runs (they are never blocked)
RETRAINS = 5  # each retrain is a scenario run of a few seconds: the suite's largest cost
TOTAL_LABELS = RETRAINS * (N + DURING_TRAINING) + 10
USER = {"X-Labelloop-User": "simulated"}


class Annotator:
    """Labels the digits demo through the HTTP API with the true labels."""

    def __init__(self, server, project: Project):
        self.server = server
        self.project = project
        self.api = f"/api/v1/webapps/{WEBAPP}"
        truth = pd.read_csv(project.dir / "ground_truth.csv", dtype=str)
        self.truth = dict(zip(truth["id"], truth["label"], strict=True))
        self.labeled: list[tuple[str, int]] = []  # (item id, session shown in stats)
        self.pending: list[dict] = []
        self.session = 0
        self.checked_sessions: list[int] = []
        self.busy_answers = 0  # API answers received while a scenario run was going on

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Wait for the webapp to answer (it starts on the first request)."""
        deadline = time.monotonic() + timeout
        while True:
            resp = self.server.get(self.api + "/config", headers=USER)
            if resp.status == 200:
                return
            assert resp.status == 503 and time.monotonic() < deadline, resp.text
            time.sleep(0.5)

    def get(self, path: str) -> dict:
        resp = self.server.get(self.api + path, headers=USER)
        assert resp.status == 200, resp.text
        return resp.json()

    def label_next(self) -> dict:
        if not self.pending:
            batch = self.get("/batch?size=5")
            assert batch["items"], "the queue ran dry"
            self.pending = batch["items"]
        item = self.pending.pop(0)
        resp = self.server.post(self.api + "/labels", {"id": item["id"],
                                                       "label": self.truth[item["id"]]},
                                headers=USER)
        assert resp.status == 200, resp.text
        stats = resp.json()["stats"]
        self.labeled.append((item["id"], stats["session"]))
        return stats

    def scenario_running(self) -> bool:
        runs = self.server.get(f"/api/v1/scenarios/{SCENARIO}/runs").json()
        runs = runs["runs"] if isinstance(runs, dict) else runs
        return any(r["status"] == "RUNNING" for r in runs)

    def follow_new_session(self, session: int) -> None:
        """Once the queue is rebuilt for ``session``, check it serves the new top queries."""
        deadline = time.monotonic() + 60
        while self.get("/config").get("queue_session") != session:
            assert time.monotonic() < deadline, "the queue never followed the new session"
            time.sleep(0.1)
        self.session = session
        self.pending = []  # the old batch belongs to the old order
        batch = self.get("/batch?size=5")
        queries = Dataset(self.project, "queries").read(columns=["path"])["path"].tolist()
        done = {item for item, _ in self.labeled}
        expected = [p for p in queries if p not in done][:5]
        assert [i["id"] for i in batch["items"]] == expected, f"session {session}"
        # Most uncertain first, each with the new model's suggestion.
        uncertainties = [i["uncertainty"] for i in batch["items"]]
        assert uncertainties == sorted(uncertainties, reverse=True)
        assert all(i["suggestion"] is not None for i in batch["items"])
        self.pending = batch["items"]
        self.checked_sessions.append(session)

    def run(self, total: int) -> None:
        in_session = 0
        while len(self.labeled) < total:
            stats = self.label_next()
            if stats["session"] != self.session:
                self.follow_new_session(stats["session"])
                in_session = 0
                continue
            in_session += 1
            if in_session < N + DURING_TRAINING or len(self.labeled) >= total:
                continue
            # Enough for a retrain: wait for the new session, asking for work meanwhile
            # (the API answers while the scenario trains in its own process).
            deadline = time.monotonic() + 120
            while True:
                stats = self.get("/stats")
                if stats["session"] != self.session:
                    break
                if self.scenario_running():
                    self.get("/batch?size=5")
                    self.busy_answers += 1
                assert time.monotonic() < deadline, (
                    f"no new session after {in_session} labels in session {self.session}:\n"
                    f"{self.server.log()[-3000:]}")
                time.sleep(0.2)
            self.follow_new_session(stats["session"])
            in_session = 0


def test_active_learning_loop_over_http(tmp_path, serve):
    directory = tmp_path / "demo"
    # On the PostgreSQL run, the command makes the project on a database of the test server
    # (the server and its scenario runs then use it too).
    database_url = new_database_url()
    env = {**os.environ, **({"LABELLOOP_DATABASE_URL": database_url} if database_url else {})}
    created = warm_launch.run(["demo", "--dir", str(directory), "--no-serve", "--no-browser",
                               "--n", str(N)], env=env, timeout=120)
    assert created.returncode == 0, created.stderr
    server = serve(directory, "--period", "0.3", env=env)
    project = Project.open(directory, database_url=database_url)
    assert project.engine.dialect.name == ("postgresql" if database_url else "sqlite")
    annotator = Annotator(server, project)
    annotator.wait_ready()

    annotator.run(TOTAL_LABELS)

    # Let the last run finish, then look at the whole history.
    deadline = time.monotonic() + 120
    while annotator.scenario_running():
        assert time.monotonic() < deadline
        time.sleep(0.2)
    runs = server.get(f"/api/v1/scenarios/{SCENARIO}/runs").json()
    runs = runs["runs"] if isinstance(runs, dict) else runs
    failed = [r for r in runs if r["status"] != "SUCCESS"]
    assert not failed, failed
    assert len(runs) >= RETRAINS
    versions = project.model("classifier").versions()
    assert len(versions) == len(runs)
    assert annotator.checked_sessions == list(range(1, len(annotator.checked_sessions) + 1))
    assert len(annotator.checked_sessions) >= RETRAINS
    assert annotator.busy_answers > 0

    # Labels were recorded with the session they were made in; the server's counts agree.
    stats = annotator.get("/stats")
    assert stats["labeled"] == TOTAL_LABELS
    metadata = project.dataset("metadata").read()
    assert len(metadata) == TOTAL_LABELS
    assert metadata["session"].tolist() == [s for _, s in annotator.labeled]
    assert (metadata["label"] == metadata["data_id"].map(annotator.truth)).all()

    # The metrics history grew with the loop, and the page can plot it.
    history = annotator.get("/metrics")["history"]
    assert len(history["labels"]) >= RETRAINS
    assert history["labels"] == sorted(history["labels"])
    # Cross-validation needs two labels of each digit: the first versions may lack an AUC.
    assert all(a is None or 0.5 < a <= 1 for a in history["auc"])
    assert all(a is not None and a > 0.8 for a in history["auc"][-4:])
    assert all(c is not None and 0 <= c <= 1 for c in history["contradictions"][1:])
    config = annotator.get("/config")
    assert config["al_enabled"] is True
    assert isinstance(config["stopping_warnings"], list)

    # The last model reads the digits nobody labeled well.
    labeled = {item for item, _ in annotator.labeled}
    rest = pd.DataFrame({"path": [p for p in annotator.truth if p not in labeled]})
    model = project.model("classifier").load(trusted=TRUSTED_TYPES)
    set_folder_root(model, str(project.folder("images").root))
    predicted = model.predict(rest).astype(str)
    accuracy = float((predicted == rest["path"].map(annotator.truth).to_numpy()).mean())
    assert accuracy > 0.85
    print(f"\n{len(runs)} retrains in {TOTAL_LABELS} labels; held-out accuracy {accuracy:.3f}; "
          "(labels, auc, contradictions): "
          f"{list(zip(history['labels'], history['auc'], history['contradictions'], strict=True))}")
