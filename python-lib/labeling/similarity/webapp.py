"""The backend of the similarity-labeling webapp: settings -> service -> routes + page.

Built on the host's webapp contract like any third-party webapp: `create_backend(ctx)`
returns an object with `routes`, `make_document(doc, user)` and `describe()`.
"""

from __future__ import annotations

from typing import Any

from labelloop.web import tokens_configured

from .api import build_routes
from .page import make_document
from .service import SimilarityService
from .settings import parse_settings


class SimilarityBackend:
    """One similarity webapp instance."""

    def __init__(self, ctx: Any, background: bool = True):
        self.ctx = ctx
        self.cfg = parse_settings(ctx.config, ctx.webapp, ctx.project)
        self.service = SimilarityService(ctx.project, self.cfg, background=background)
        self.routes = build_routes(self.service)

    def describe(self) -> dict:
        """Merged into the webapps list of the JSON API."""
        return {"data_type": self.cfg.data_type, "categories": None, "kind": "similarity"}

    def make_document(self, doc: Any, user: str = "anonymous") -> None:
        """The similarity page of one browser session."""
        fixed = tokens_configured(self.ctx.project.engine)
        named = user if user and user != "anonymous" else None
        component = getattr(self.ctx, "component", None)
        boot = {"webapp": self.cfg.webapp,
                "title": component.label if component is not None else "Similarity labeling",
                "api_base": self.ctx.api_prefix, "user": named if fixed else None,
                "session_user": None if fixed else named, **self.service.config()}
        make_document(doc, boot, resource_base=getattr(self.ctx, "resource_url", None))


def create_backend(ctx: Any) -> SimilarityBackend:
    """`create_backend(ctx)` of the similarity-labeling webapp component."""
    return SimilarityBackend(ctx)
