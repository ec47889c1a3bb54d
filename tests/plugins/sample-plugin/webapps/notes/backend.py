"""Sample webapp backend: a Bokeh page and JSON routes, using only the host's public API."""

import time

from bokeh.layouts import column
from bokeh.models import Button, Div

from labelloop.errors import NotFoundError
from labelloop.web import role_of, session_user

NOTE_SCHEMA = {
    "type": "object",
    "required": ["text"],
    "additionalProperties": False,
    "properties": {
        "text": {"type": "string", "minLength": 1, "maxLength": 500},
        "category": {"type": "string"},
    },
}


class NotesBackend:
    def __init__(self, ctx):
        self.ctx = ctx
        self.project = ctx.project
        self.prefix = f"notes.{ctx.webapp}"
        self.routes = {
            ("GET", "hello"): self.hello,
            ("POST", "notes"): {"handler": self.add_note, "schema": NOTE_SCHEMA,
                                "summary": "Add a note for the caller"},
            ("GET", "notes"): {"handler": self.list_notes, "summary": "The caller's notes",
                               "schema": {"type": "object", "properties": {
                                   "limit": {"type": "integer", "minimum": 1, "maximum": 100}}}},
            ("GET", "notes/count"): self.count,
            ("GET", "sleep"): {"handler": self.sleep, "schema": {"type": "object", "properties": {
                "seconds": {"type": "number", "minimum": 0, "maximum": 5}}}},
            ("GET", "missing"): self.missing,
            ("GET", "boom"): self.boom,
            ("GET", "visitors"): self.visitors,
            # Only reviewers (and admins) may pin; the host refuses others with 403 first.
            ("POST", "notes/pin"): {"handler": self.pin, "schema": NOTE_SCHEMA,
                                    "role": "reviewer", "summary": "Pin a note for everyone"},
            ("GET", "whoami"): self.whoami,
        }

    def describe(self):
        return {"categories": self.ctx.config["categories"], "greeting": self.ctx.config["greeting"]}

    # ---- routes ----
    def hello(self, payload, user):
        return {"greeting": f"{self.ctx.config['greeting']}, {user}!", "query": payload,
                "webapp": self.ctx.webapp, "api_prefix": self.ctx.api_prefix,
                "resource_url": self.ctx.resource_url}

    def add_note(self, payload, user):
        key = f"{self.prefix}.{user}"
        notes = self.project.variables.get(key) or []
        notes.append({"text": payload["text"], "category": payload.get("category")})
        self.project.variables.set(key, notes)
        return {"count": len(notes), "user": user}

    def list_notes(self, payload, user):
        notes = self.project.variables.get(f"{self.prefix}.{user}") or []
        return {"notes": notes[-payload.get("limit", 100):], "user": user}

    def count(self, payload, user):
        return {"count": len(self.project.variables.get(f"{self.prefix}.{user}") or [])}

    def sleep(self, payload, user):
        time.sleep(payload.get("seconds", 1))
        return {"slept": payload.get("seconds", 1)}

    def pin(self, payload, user):
        pinned = self.project.variables.get(f"{self.prefix}.pinned") or []
        self.project.variables.set(f"{self.prefix}.pinned", [*pinned, payload["text"]])
        return {"pinned": len(pinned) + 1, "by": user}

    def whoami(self, payload, user):
        return {"user": user, "role": role_of(self.project.engine, user)}

    def missing(self, payload, user):
        raise NotFoundError("no such note")

    def boom(self, payload, user):
        raise RuntimeError("sample backend exploded")

    def visitors(self, payload, user):
        return {"visitors": self.project.variables.get(f"{self.prefix}.visitors") or []}

    # ---- the Bokeh page ----
    def make_document(self, doc):
        user = session_user(doc)
        visitors = self.project.variables.get(f"{self.prefix}.visitors") or []
        self.project.variables.set(f"{self.prefix}.visitors", [*visitors, user])
        header = Div(text=f"<h1>{self.ctx.config['greeting']}, {user}</h1>")
        count = Div(text="0 notes")
        button = Button(label="Count my notes")

        def refresh():
            n = len(self.project.variables.get(f"{self.prefix}.{user}") or [])
            count.text = f"{n} notes"

        button.on_click(refresh)
        doc.title = f"Notes: {self.ctx.webapp}"
        doc.add_root(column(header, button, count, name="notes"))


def create_backend(ctx):
    if ctx.config["fail_on_start"]:
        raise RuntimeError("this notes webapp was configured to fail")
    return NotesBackend(ctx)
