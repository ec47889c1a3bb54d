"""One writer per server process: every write a `labelloop serve` process makes is sent from
its writer thread (`Database.execute_write_fn`), none from a request, trainer, webhook or
scheduler thread.

The server loads tests/plugins/write-probe, whose SQLAlchemy listener records the thread of
each write statement (and of each write lock taken) in that process while a similarity
session runs: questions, answers, a tuned version trained in the background, a saved model
whose MODEL_TRAINED event the webhook sender delivers, and a scenario the scheduler starts
when enough questions are answered.
"""

from __future__ import annotations

import json
from pathlib import Path

from conftest import wait_for
from test_webhooks import Receiver

from labeling import demo
from labelloop import webhooks
from labelloop.project import Project

PROBE = Path(__file__).parent / "plugins" / "write-probe"
APP = "similar-digits"
API = f"/api/v1/webapps/{APP}"
USER = {"X-Labelloop-User": "bob"}
WRITER = "labelloop-writer"


def _similarity_project(directory: Path, hook_url: str) -> Project:
    project = demo.create_demo(directory, demo.SIMILARITY)
    cfg = json.loads(project.config_path.read_text())
    # A scenario the scheduler (in the server) starts once two questions are answered; its
    # run itself is another process.
    cfg["scenarios"] = {"after-questions": {
        "triggers": [{"type": "ml-assisted-labeling/every-n-labelings", "name": "questions",
                      "params": {"i_labeling_count": 2, "count": "questions",
                                 "ds_pairs": "pairs", "ds_metadata": "metadata",
                                 "ds_queries": "queries"}}],
        "steps": [{"recipe": "embed"}]}}  # the demo's recipe (fails without a saved model)
    project.config_path.write_text(json.dumps(cfg, indent=2))
    project.reload()
    webhooks.add_hook(project, hook_url, ["MODEL_TRAINED"])
    return project


def _answer(server, positives: int) -> None:
    q = server.get(f"{API}/questions?size=1", headers=USER).json()["questions"][0]
    cands = [c["id"] for c in q["candidates"]]
    resp = server.post(f"{API}/answers", {"question_id": q["question_id"],
                                          "positives": cands[:positives],
                                          "negatives": cands[positives:]}, headers=USER)
    assert resp.status == 200, resp.text


def test_a_server_process_writes_only_from_its_writer_thread(tmp_path, serve):
    receiver = Receiver()
    try:
        project = _similarity_project(tmp_path / "project", receiver.url)
        server = serve(project.dir, "--period", "0.2",
                       env={"LABELLOOP_PLUGIN_PATH": str(PROBE)})
        wait_for(lambda: server.get(f"{API}/questions?size=1", headers=USER).json()
                 ["questions"], timeout=120, what="the pool indexed")
        assert server.post("/api/v1/write-probe/start", {}).status == 200

        _answer(server, 2)
        _answer(server, 3)
        wait_for(lambda: server.get(f"{API}/stats").json()["model_version"] >= 1, timeout=60,
                 what="a tuned version")
        saved = server.post(f"{API}/model", {}, headers=USER)
        assert saved.status == 200, saved.text
        wait_for(lambda: receiver.events() == ["MODEL_TRAINED"], timeout=30,
                 what="the MODEL_TRAINED delivery")
        wait_for(lambda: [r["status"] for r in webhooks.outbox(project)] == ["DELIVERED"],
                 timeout=30, what="the delivery recorded")

        def scenario_done() -> bool:
            runs = project.runs("scenario", "after-questions")
            return bool(runs) and runs[0]["status"] != "RUNNING"

        wait_for(scenario_done, timeout=120, what="the scenario run")
        # Reaped by the scheduler: its lock released (a write of the server process).
        from labelloop.scenarios.lock import ScenarioLock

        wait_for(lambda: ScenarioLock(project, "after-questions").holder() is None,
                 timeout=30, what="the scenario lock released")

        writes = server.get("/api/v1/write-probe/writes").json()["writes"]
    finally:
        receiver.close()
    elsewhere = [w for w in writes if w["thread"] != WRITER]
    assert elsewhere == [], elsewhere
    tables = {w["table"] for w in writes}
    # The session's writes were all seen (on the writer): questions and answers, the tuned
    # version, the saved model and its save, the outbox claim and the delivery record, the
    # scheduler's lock, trigger state and run record.
    for table in ("sim_questions", "sim_versions", "sim_saves", "ll_model_versions",
                  "ll_webhook_outbox", "ll_webhook_deliveries", "ll_scenario_locks",
                  "ll_trigger_states", "ll_runs"):
        assert table in tables, (table, sorted(t for t in tables if t))
