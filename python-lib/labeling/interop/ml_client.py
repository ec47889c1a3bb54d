"""Calling any Label Studio ML backend: health, setup, predict in batches, webhook.

Used by the `ml-backend-predict` recipe (an external backend scores Labelloop's pool) and the
`ml-backend-notify` step (START_TRAINING with Labelloop's labels). Time-outs and retries on
connection errors and 5xx answers; a backend that is down or answers something that is not
the protocol gives one clear LabelloopError naming the URL and what was wrong.
"""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any

from labelloop.errors import LabelloopError

from .labelstudio import annotation_labels


class MlBackendError(LabelloopError):
    """The ML backend is unreachable or broke the protocol."""


@dataclass
class MlClient:
    """A Label Studio ML backend at `url` (the address Label Studio would be given)."""

    url: str
    timeout: float = 30.0
    retries: int = 2
    basic_auth: tuple[str, str] | None = None
    token: str | None = None
    backoff: float = 0.5

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.basic_auth and self.basic_auth[0]:
            raw = f"{self.basic_auth[0]}:{self.basic_auth[1]}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        elif self.token:
            headers["Authorization"] = f"Token {self.token}"
        return headers

    def request(self, method: str, route: str, body: Any = None) -> Any:
        """One protocol call with retries; the parsed JSON answer."""
        url = self.url.rstrip("/") + "/" + route
        data = None if body is None else json.dumps(body, default=str).encode()
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            req = urllib.request.Request(url, data=data, method=method, headers=self._headers())
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:  # noqa: S310
                    raw = resp.read()
                    break
            except urllib.error.HTTPError as exc:
                detail = exc.read(500).decode("utf-8", "replace").strip()
                last = f"HTTP {exc.code} {exc.reason}{': ' + detail if detail else ''}"
                if exc.code < 500:
                    raise MlBackendError(f"ML backend {url} refused the request: {last}"
                                         + (" (check the credentials)" if exc.code in (401, 403)
                                            else "")) from None
            except (urllib.error.URLError, OSError) as exc:
                last = f"{type(exc).__name__}: {getattr(exc, 'reason', exc)}"
        else:
            raise MlBackendError(f"ML backend {url} is not answering after {self.retries + 1} "
                                 f"attempt(s) ({last}): check that it runs and the URL")
        try:
            return json.loads(raw)
        except ValueError:
            raise MlBackendError(f"ML backend {url} answered something that is not JSON: "
                                 f"{raw[:200]!r}") from None

    def health(self) -> dict:
        answer = self.request("GET", "health")
        if not isinstance(answer, dict) or str(answer.get("status", "")).upper() != "UP":
            raise MlBackendError(f"ML backend {self.url} is not healthy: {answer!r}")
        return answer

    def setup(self, label_config: str, project: str = "1.0") -> str | None:
        """Tell the backend the label_config; its model version."""
        answer = self.request("POST", "setup", {"project": project, "schema": label_config,
                                                "hostname": "", "access_token": "",
                                                "extra_params": None})
        if not isinstance(answer, dict):
            raise MlBackendError(f"ML backend {self.url}/setup answered {answer!r}, not an "
                                 "object with model_version")
        version = answer.get("model_version")
        return None if version is None else str(version)

    def predict(self, tasks: list[dict], label_config: str, project: str = "1.0") -> list[dict]:
        """One prediction per task (the first when a backend gives several)."""
        answer = self.request("POST", "predict", {
            "tasks": tasks, "label_config": label_config, "project": project,
            "params": {"login": None, "password": None, "context": None}})
        results = answer.get("results") if isinstance(answer, dict) else answer
        if not isinstance(results, list):
            raise MlBackendError(f"ML backend {self.url}/predict answered without a 'results' "
                                 f"list: {str(answer)[:200]}")
        if len(results) != len(tasks):
            raise MlBackendError(f"ML backend {self.url}/predict gave {len(results)} results "
                                 f"for {len(tasks)} tasks: it must answer one per task")
        out = []
        for k, r in enumerate(results):
            if isinstance(r, list):
                r = r[0] if r else {}
            if not isinstance(r, dict) or not isinstance(r.get("result", []), list):
                raise MlBackendError(f"ML backend {self.url}/predict: result {k} is not a "
                                     f"prediction ({str(r)[:200]})")
            out.append(r)
        return out

    def webhook(self, event: str, payload: dict) -> Any:
        return self.request("POST", "webhook", {"action": event, **payload})


def prediction_fields(prediction: dict) -> tuple[str | None, float | None, float | None]:
    """`(label, score of the prediction, score of the choice)` of one Label Studio prediction."""
    labels = annotation_labels(prediction)
    item_score = None
    for item in prediction.get("result") or []:
        if isinstance(item, dict) and isinstance(item.get("score"), int | float):
            item_score = float(item["score"])
            break
    score = prediction.get("score")
    score = float(score) if isinstance(score, int | float) else None
    return (labels[0] if labels else None), score, item_score
