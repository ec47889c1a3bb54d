"""The routes of Label Studio's ML-backend protocol, `/api/v1/ml-backends/<webapp>/...`.

Each route finds the webapp's `MlBackend` (`labeling.interop.ml_backend`: the protocol's
answers) and hands it the request; `health` answers from the configuration alone.
"""

from __future__ import annotations

from typing import Any

from labelloop.errors import NotFoundError

from .ml_backend import MODEL_CLASS, MlBackend

_ATTRIBUTE = "_labeling_ml_backend"  # where a webapp backend object keeps its MlBackend


def ml_backend_of(host: Any, webapp: str) -> MlBackend:
    """The MlBackend of a webapp served by `host`: one per webapp backend object, kept on it
    (it goes when the host replaces the backend, e.g. on a configuration change)."""
    backend = host.webapp_backend(webapp)
    if not hasattr(backend, "engine") or not hasattr(backend, "cfg"):
        raise NotFoundError(f"webapp {webapp!r} is not a labeling webapp: it has no ML backend")
    kept = vars(backend)
    mb = kept.get(_ATTRIBUTE)
    if mb is None:  # setdefault is atomic: threads racing here all get the first one stored
        mb = kept.setdefault(_ATTRIBUTE, MlBackend(host.project, backend))
    return mb


def register_routes(register: Any) -> None:
    """The five routes of Label Studio's ML-backend protocol, for every labeling webapp."""
    base = "/ml-backends/{webapp}"

    def health(req: Any) -> dict:
        # Label Studio gives health one second: answer from the config alone.
        webapp = req.params["webapp"]
        if webapp not in req.host.webapp_ids():
            raise NotFoundError(f"unknown webapp {webapp!r} (webapps: "
                                f"{', '.join(req.host.webapp_ids()) or 'none'})")
        return {"status": "UP", "model_class": MODEL_CLASS, "webapp": webapp}

    def setup(req: Any) -> dict:
        return ml_backend_of(req.host, req.params["webapp"]).setup(req.body or {})

    def predict(req: Any) -> dict:
        return ml_backend_of(req.host, req.params["webapp"]).predict(req.body)

    def webhook(req: Any) -> tuple[int, dict]:
        return ml_backend_of(req.host, req.params["webapp"]).webhook(req.body,
                                                                     req.host.launch_scenario)

    def metrics(req: Any) -> dict:
        return ml_backend_of(req.host, req.params["webapp"]).metrics()

    register(f"{base}/health", health, methods=("GET",))
    register(f"{base}", health, methods=("GET",))
    register(f"{base}/setup", setup, methods=("POST",))
    register(f"{base}/predict", predict, methods=("POST",))
    register(f"{base}/webhook", webhook, methods=("POST",))
    register(f"{base}/metrics", metrics, methods=("GET",))
