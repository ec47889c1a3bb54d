"""Calling any Label Studio ML backend: health, setup, predict in batches, webhook.

Used by the `ml-backend-predict` recipe (an external backend scores Labelloop's pool) and the
`ml-backend-notify` step (START_TRAINING with Labelloop's labels). Requests go through one
`httpx.Client` per MlClient (its connections reused), with time-outs, and retries with
exponential backoff (tenacity) on transport errors and 5xx answers; a backend that is down or
answers something that is not the protocol gives one clear LabelloopError naming the URL and
what was wrong.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import httpx
import tenacity

from labelloop.errors import LabelloopError

from .labelstudio import annotation_labels


class MlBackendError(LabelloopError):
    """The ML backend is unreachable or broke the protocol."""


class _Unanswered(Exception):
    """An attempt that may succeed when tried again: a transport error or a 5xx answer."""


@dataclass
class MlClient:
    """A Label Studio ML backend at `url` (the address Label Studio would be given)."""

    url: str
    timeout: float = 30.0
    retries: int = 2
    basic_auth: tuple[str, str] | None = None
    token: str | None = None
    backoff: float = 0.5

    _http: httpx.Client | None = field(default=None, init=False, repr=False)

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.token and not (self.basic_auth and self.basic_auth[0]):
            headers["Authorization"] = f"Token {self.token}"
        return headers

    def _client(self) -> httpx.Client:
        if self._http is None:
            auth = httpx.BasicAuth(*self.basic_auth) \
                if self.basic_auth and self.basic_auth[0] else None
            self._http = httpx.Client(timeout=self.timeout, headers=self._headers(), auth=auth,
                                      follow_redirects=True)
        return self._http

    def close(self) -> None:
        """Close the connections (a client used again opens new ones)."""
        if self._http is not None:
            self._http.close()
            self._http = None

    def __enter__(self) -> MlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, route: str, body: Any = None) -> Any:
        """One protocol call with retries; the parsed JSON answer."""
        url = self.url.rstrip("/") + "/" + route
        data = None if body is None else json.dumps(body, default=str).encode()

        def attempt() -> bytes:
            try:
                resp = self._client().request(method, url, content=data)
            except httpx.TransportError as exc:  # refused, reset, timed out, not HTTP
                raise _Unanswered(f"{type(exc).__name__}: {exc}") from exc
            if resp.is_success:
                return resp.content
            detail = resp.text[:500].strip()
            status = f"HTTP {resp.status_code} {resp.reason_phrase}" + \
                (f": {detail}" if detail else "")
            if resp.status_code >= 500:
                raise _Unanswered(status)
            raise MlBackendError(f"ML backend {url} refused the request: {status}"
                                 + (" (check the credentials)"
                                    if resp.status_code in (401, 403) else ""))

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.retries + 1),
            wait=tenacity.wait_exponential(multiplier=self.backoff),
            retry=tenacity.retry_if_exception_type(_Unanswered), reraise=True)
        try:
            raw = retrying(attempt)
        except _Unanswered as exc:
            raise MlBackendError(f"ML backend {url} is not answering after {self.retries + 1} "
                                 f"attempt(s) ({exc}): check that it runs and the URL") from None
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
