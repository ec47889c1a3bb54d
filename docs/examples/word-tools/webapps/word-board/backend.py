"""Webapp backend: JSON routes with a schema, state in project variables, a Bokeh page."""

import threading

from bokeh.layouts import column
from bokeh.models import Button, Div

from labelloop.web import session_user

WORD = {"type": "object", "required": ["word"], "additionalProperties": False,
        "properties": {"word": {"type": "string", "minLength": 1, "maxLength": 50}}}


class WordBoard:
    def __init__(self, ctx):
        self.ctx = ctx
        self.key = f"word-board.{ctx.webapp}"
        # Route handlers run on worker threads: a read-modify-write needs a lock. A second
        # server process has its own lock, so what must be shared lives in the database.
        self.lock = threading.Lock()
        self.routes = {
            ("POST", "words"): {"handler": self.add, "schema": WORD, "summary": "Post a word"},
            ("GET", "words"): {"handler": self.words, "summary": "Words per annotator"},
        }

    def _all(self):
        return self.ctx.project.variables.get(self.key) or {}

    def add(self, payload, user):
        with self.lock:
            words = self._all()
            words.setdefault(user, []).append(payload["word"])
            self.ctx.project.variables.set(self.key, words)
        return {"user": user, "count": len(words[user])}

    def words(self, payload, user):
        return {"words": self._all()}

    def make_document(self, doc):
        user = session_user(doc)
        title = Div(text=f"<h1>{self.ctx.config['title']}</h1>")
        count = Div(text="", name="count")
        refresh = Button(label="Refresh", name="refresh")

        def show():
            count.text = f"{user} posted {len(self._all().get(user, []))} words"

        refresh.on_click(show)
        show()
        doc.title = self.ctx.config["title"]
        doc.add_root(column(title, refresh, count))


def create_backend(ctx):
    return WordBoard(ctx)
