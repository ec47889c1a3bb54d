"""The similarity labeling page: a Jinja template of the plugin's resource/ and a small JS app.

The question panel and the control panel are plain HTML driven by resource/similarity.js,
which talks to the webapp's JSON API directly (an answer never waits for a Bokeh round trip).
The page reuses the labeling page's helpers (`labeling.ui`): JSON safe inside a <script>,
resource URLs with their version.
"""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape

from ..ui import TEMPLATE_DIR, resource_url, script_json

TEMPLATE = "similarity.html"

_env = Environment(loader=FileSystemLoader(str(TEMPLATE_DIR)), autoescape=select_autoescape())


def make_document(doc: Any, boot: dict, resource_base: str | None = None) -> None:
    """Fill a Bokeh document with the similarity page for one browser session."""
    doc.title = f"{boot.get('title', 'Similarity labeling')} · {boot.get('webapp', '')}"
    doc.template = _env.get_template(TEMPLATE)
    doc.template_variables.update({
        "ll_title": boot.get("title", "Similarity labeling"),
        "ll_webapp": boot.get("webapp", ""),
        "ll_bootstrap": script_json(boot),
        "ll_css": resource_url("similarity.css", resource_base),
        "ll_js": resource_url("similarity.js", resource_base),
    })
