"""The two HTTP clients (webhook delivery, the Label Studio ML-backend client) against a real
server on 127.0.0.1: what counts as delivered, what is retried, what is refused at once."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from conftest import free_port

from labeling.interop.ml_client import MlBackendError, MlClient
from labelloop import webhooks

pytestmark = pytest.mark.sqlite_only  # no database involved


class Receiver(BaseHTTPRequestHandler):
    """`/ok` 200, `/down` 503 for the first `fail` requests then 200, `/moved` 302,
    `/deny` 401, `/health` a JSON status; every request is recorded."""

    fail = 0
    seen: list[tuple[str, str, dict]] = []

    def _answer(self, status: int, body: bytes = b"", **headers: str) -> None:
        self.send_response(status)
        for k, v in {"Content-Length": str(len(body)), **headers}.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Receiver.seen.append((self.command, self.path, dict(self.headers)))
        if self.path == "/moved":
            return self._answer(302, Location="/ok")
        if self.path == "/deny":
            return self._answer(401, b"who are you")
        if self.path.startswith("/down") and Receiver.fail > 0:
            Receiver.fail -= 1
            return self._answer(503, b"busy")
        return self._answer(200, json.dumps({"status": "UP", "echo": body.decode()}).encode())

    do_GET = do_POST = _handle  # noqa: N815

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    Receiver.fail, Receiver.seen = 0, []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    httpd.server_close()


def test_webhook_post_counts_only_a_2xx_as_delivered(server):
    headers = {"X-Labelloop-Event": "PING"}
    for client in (None, httpx.Client()):
        assert webhooks.post(server + "/ok", b'{"a": 1}', headers, client=client) == (200, None)
        assert webhooks.post(server + "/deny", b"{}", {}, client=client) == \
            (401, "HTTP 401 Unauthorized")
        # A redirect is not followed: the receiver's address must be the real one.
        assert webhooks.post(server + "/moved", b"{}", {}, client=client) == \
            (302, "HTTP 302 Found to /ok")
    assert [p for _m, p, _h in Receiver.seen].count("/ok") == 2
    _m, _p, sent = Receiver.seen[0]
    assert sent["X-Labelloop-Event"] == "PING" and sent["Content-Type"] == "application/json"
    code, error = webhooks.post(f"http://127.0.0.1:{free_port()}/", b"{}", {})
    assert code is None and "Connection refused" in error


def test_ml_client_retries_5xx_then_succeeds(server):
    Receiver.fail = 2
    client = MlClient(server + "/down", retries=2, backoff=0.01)
    assert client.request("POST", "predict", {"x": 1})["echo"] == '{"x": 1}'
    assert len(Receiver.seen) == 3  # two 503s, then the answer


def test_ml_client_gives_up_after_its_retries_with_the_last_reason(server):
    Receiver.fail = 5
    with pytest.raises(MlBackendError, match=r"down/setup is not answering after 2 attempt\(s\) "
                                             r"\(HTTP 503 Service Unavailable: busy\)"):
        MlClient(server + "/down", retries=1, backoff=0.01).request("POST", "setup", {})
    assert len(Receiver.seen) == 2


def test_ml_client_is_refused_at_once_and_sends_its_credentials(server):
    with pytest.raises(MlBackendError, match="refused the request: HTTP 401 Unauthorized: who "
                                             "are you .check the credentials."):
        MlClient(server, retries=3, basic_auth=("ann", "s3cret")).request("GET", "deny")
    assert len(Receiver.seen) == 1  # a 4xx is not retried
    auth = Receiver.seen[0][2]["Authorization"]
    assert auth == "Basic " + base64.b64encode(b"ann:s3cret").decode()
    with MlClient(server, token="t0ken") as client:
        assert client.health()["status"] == "UP"
    assert Receiver.seen[-1][2]["Authorization"] == "Token t0ken"
