"""Outgoing webhooks: outbox in the label's transaction, retries, signature, restarts, CLI."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import free_port, wait_for

from labeling.demo import create_demo
from labelloop import webhooks
from labelloop.project import Project

WEBAPP = "label-texts"


class Receiver:
    """A webhook receiver on 127.0.0.1: records bodies; can fail or sleep first."""

    def __init__(self, fail: int = 0, sleep: float = 0.0, port: int | None = None):
        self.fail = fail
        self.sleep = sleep
        self.received: list[dict] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if outer.sleep:
                    time.sleep(outer.sleep)
                with outer.lock:
                    failing = outer.fail > 0
                    if failing:
                        outer.fail -= 1
                    else:
                        outer.received.append({"headers": dict(self.headers), "raw": body,
                                               "json": json.loads(body)})
                self.send_response(500 if failing else 200)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port or 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self) -> list[str]:
        with self.lock:
            return [r["json"]["action"] for r in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(**kwargs) -> Receiver:
        r = Receiver(**kwargs)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


@pytest.fixture
def text_project(tmp_path) -> Project:
    return create_demo(tmp_path / "texts", "text", n=1000)


def _engine(project: Project):
    from labeling.api import LabelingBackend

    class Ctx:
        pass

    ctx = Ctx()
    ctx.project, ctx.webapp = project, WEBAPP
    ctx.config = project.config["webapps"][WEBAPP]["params"]
    return LabelingBackend(ctx, "text", background=False).engine


def test_label_queues_event_in_its_transaction_and_sender_delivers_signed(text_project,
                                                                           receiver):
    hook = receiver()
    webhooks.add_hook(text_project, hook.url, ["ANNOTATION_CREATED", "ANNOTATION_UPDATED"],
                      secret="s3cret")
    engine = _engine(text_project)
    engine.label("alice", "text-0001", "sports")
    engine.label("alice", "text-0001", "weather")
    rows = webhooks.outbox(text_project)
    assert [r["event"] for r in rows] == ["ANNOTATION_UPDATED", "ANNOTATION_CREATED"]
    assert all(r["status"] == webhooks.PENDING for r in rows)

    sender = webhooks.Sender(text_project)
    assert sender.drain() == 2
    assert hook.events() == ["ANNOTATION_CREATED", "ANNOTATION_UPDATED"]
    first = hook.received[0]
    expected = "sha256=" + hmac.new(b"s3cret", first["raw"], hashlib.sha256).hexdigest()
    assert first["headers"]["X-Labelloop-Signature"] == expected
    annotation = first["json"]["annotation"]
    assert annotation["result"][0]["value"]["choices"] == ["sports"]
    assert annotation["completed_by"] == "alice"
    assert first["json"]["task"]["id"] == "text-0001"
    assert hook.received[1]["json"]["annotation"]["result"][0]["value"]["choices"] == ["weather"]
    assert {r["status"] for r in webhooks.outbox(text_project)} == {webhooks.DELIVERED}


def test_no_receiver_no_outbox_row_and_a_failed_label_sends_nothing(text_project, receiver):
    engine = _engine(text_project)
    engine.label("bob", "text-0002", "sports")
    assert webhooks.outbox(text_project) == []
    webhooks.add_hook(text_project, receiver().url, ["MODEL_TRAINED"])
    engine.label("bob", "text-0003", "sports")  # not an event the receiver wants
    assert webhooks.outbox(text_project) == []
    webhooks.add_hook(text_project, receiver().url)
    with pytest.raises(Exception, match="not a category"):
        engine.label("bob", "text-0004", "nonsense")
    assert webhooks.outbox(text_project) == []


def test_retries_with_backoff_after_receiver_failures(text_project, receiver):
    hook = receiver(fail=2)
    webhooks.add_hook(text_project, hook.url)
    webhooks.emit_now(text_project, "QUERIES_UPDATED", {"queries": {"session": 3}})
    sender = webhooks.Sender(text_project, poll=0.1).start()
    try:
        # The receiver answers before the sender records the attempt: wait for the record.
        wait_for(lambda: webhooks.outbox(text_project, webhooks.DELIVERED), timeout=20,
                 what="the third attempt recorded as delivered")
    finally:
        sender.stop()
    log = webhooks.delivery_log(text_project)
    assert [(r["attempt"], r["ok"], r["status_code"]) for r in reversed(log)] == \
        [(1, False, 500), (2, False, 500), (3, True, 200)]
    assert log[0]["at"] >= log[2]["at"]
    assert hook.received[0]["json"]["queries"] == {"session": 3}
    assert hook.received[0]["headers"].get("X-Labelloop-Signature") is None
    (row,) = webhooks.outbox(text_project)
    assert row["status"] == webhooks.DELIVERED and row["attempts"] == 3


def test_gives_up_after_max_attempts(text_project, monkeypatch):
    monkeypatch.setattr(webhooks, "backoff", lambda attempts: 0.0)
    url = f"http://127.0.0.1:{free_port()}/nobody-listens"
    webhooks.add_hook(text_project, url)
    webhooks.emit_now(text_project, "MODEL_TRAINED", {"model": {"version": 1}})
    webhooks.Sender(text_project).drain()
    (row,) = webhooks.outbox(text_project)
    assert row["status"] == webhooks.FAILED and row["attempts"] == webhooks.MAX_ATTEMPTS
    assert "Connection refused" in row["last_error"] or "URLError" in row["last_error"]


def test_two_senders_never_deliver_the_same_row(text_project, receiver):
    hook = receiver()
    webhooks.add_hook(text_project, hook.url)
    for i in range(40):
        webhooks.emit_now(text_project, "QUERIES_UPDATED", {"n": i})
    a = webhooks.Sender(text_project, poll=0.05, batch=3).start()
    b = webhooks.Sender(text_project, poll=0.05, batch=3).start()
    try:
        wait_for(lambda: len(hook.received) >= 40, timeout=30, what="40 deliveries")
        time.sleep(0.3)
    finally:
        a.stop()
        b.stop()
    ids = [r["headers"]["X-Labelloop-Delivery"] for r in hook.received]
    assert len(ids) == len(set(ids)) == 40


def test_labels_never_wait_for_a_slow_receiver_and_pending_survive_a_restart(
        text_project, receiver, serve):
    slow = receiver(sleep=5.0)
    webhooks.add_hook(text_project, slow.url, ["ANNOTATION_CREATED"])
    server = serve(text_project.dir, "--no-scheduler")
    base = f"/api/v1/webapps/{WEBAPP}"
    assert server.get(f"{base}/batch?size=1").status == 200
    latencies = []
    for i in range(30):
        t0 = time.perf_counter()
        r = server.post(f"{base}/labels", {"id": f"text-{i:04d}", "label": "sports"},
                        headers={"X-Labelloop-User": "carol"})
        latencies.append(time.perf_counter() - t0)
        assert r.status == 200, r.text
    latencies.sort()
    p99 = latencies[int(0.99 * (len(latencies) - 1))]
    print(f"\nlabel latency with a receiver sleeping 5 s: p50 {latencies[15] * 1000:.1f} ms, "
          f"p99 {p99 * 1000:.1f} ms")
    # The receiver takes 5 s per delivery: a label that waited for one would show it.
    assert p99 < 2.5
    assert len(slow.received) < 30
    server.stop()
    pending = [r for r in webhooks.outbox(text_project) if r["status"] == webhooks.PENDING]
    assert pending, "the stopped server left deliveries pending"

    slow.sleep = 0.0  # the receiver recovers; a new server process delivers what is left
    serve(text_project.dir, "--no-scheduler")
    wait_for(lambda: len({r["json"]["task"]["id"] for r in slow.received}) == 30,
             timeout=60, what="every pending delivery after the restart")
    ids = sorted(r["json"]["task"]["id"] for r in slow.received)
    assert ids == sorted({f"text-{i:04d}" for i in range(30)})


@pytest.mark.sqlite_only  # the CLI over project.json; the outbox is covered on PostgreSQL above
def test_webhook_cli(text_project, receiver, run_cli):
    hook = receiver()
    d = text_project.dir
    out = run_cli(d, "webhook", "add", hook.url, "--event", "MODEL_TRAINED", "--secret", "x")
    assert "MODEL_TRAINED" in out.stdout and "signed" in out.stdout
    assert json.loads((d / "project.json").read_text())["webhooks"] == [
        {"url": hook.url, "events": ["MODEL_TRAINED"], "secret": "x"}]
    assert hook.url in run_cli(d, "webhook", "list").stdout
    out = run_cli(d, "webhook", "test", hook.url)
    assert "HTTP 200" in out.stdout
    assert hook.events() == ["PING"]
    log = run_cli(d, "webhook", "log").stdout
    assert "PING" in log and hook.url in log
    bad = run_cli(d, "webhook", "add", "ftp://nope", check=False)
    assert bad.returncode != 0 and "http://" in bad.stderr
    bad = run_cli(d, "webhook", "add", hook.url, "--event", "NOPE", check=False)
    assert bad.returncode != 0 and "unknown webhook event 'NOPE'" in bad.stderr
    run_cli(d, "webhook", "remove", hook.url)
    assert "(none)" in run_cli(d, "webhook", "list").stdout
    bad = run_cli(d, "webhook", "remove", hook.url, check=False)
    assert bad.returncode != 0 and "no webhook" in bad.stderr


def test_model_trained_and_scenario_finished_events(text_project, receiver):
    from labelloop.scenarios import run_scenario

    hook = receiver()
    webhooks.add_hook(text_project, hook.url, ["MODEL_TRAINED", "SCENARIO_RUN_FINISHED",
                                               "QUERIES_UPDATED"])
    engine = _engine(text_project)
    import pandas as pd

    gt = pd.read_csv(text_project.dir / "ground_truth.csv").head(24)
    truth = dict(zip(gt["id"], gt["label"], strict=True))
    for item, label in truth.items():
        engine.label("dave", item, label)
    run = run_scenario(text_project, "active-learning")
    assert run["status"] == "SUCCESS", run
    webhooks.Sender(text_project).drain()
    events = hook.events()
    assert events == ["MODEL_TRAINED", "QUERIES_UPDATED", "SCENARIO_RUN_FINISHED"]
    model = hook.received[0]["json"]["model"]
    assert model["name"] == "classifier" and model["version"] == 1
    assert hook.received[1]["json"]["queries"]["model_version"] == 1
    assert hook.received[2]["json"]["run"]["status"] == "SUCCESS"
