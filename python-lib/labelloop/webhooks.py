"""Outgoing webhooks: an outbox table in the project's database and a background sender.

project.json declares the receivers::

    "webhooks": [{"url": "https://example.org/hook", "events": ["ANNOTATION_CREATED"],
                  "secret": "..."}]

`events` may be omitted or `["*"]` for every event. Events: `ANNOTATION_CREATED`,
`ANNOTATION_UPDATED`, `ANNOTATION_DELETED` (Label Studio's names and payload shape),
`SCENARIO_RUN_FINISHED`, `MODEL_TRAINED`, `QUERIES_UPDATED`, and `PING` (`webhook test`).

Public API (used by the host and by plugins):

- `emit(project, conn, event, payload)`: record the event for every receiver that wants it,
  as rows of the outbox table, *inside the caller's transaction* (so a rolled-back label
  sends nothing, and a committed one is never lost). No receiver, no row, no cost.
- `emit_now(project, event, payload)`: the same in a transaction of its own.
- `Sender(project).start()`: the server's background thread delivering due rows.

Delivery: a POST of `{"action": EVENT, ...payload}` as JSON, with `X-Labelloop-Event`,
`X-Labelloop-Delivery` (the outbox row id: receivers can drop duplicates with it) and, when
the receiver has a secret, `X-Labelloop-Signature: sha256=<hex HMAC-SHA256 of the body>`.
A 2xx answer delivers; anything else is retried with exponential back-off (1 s, 2 s, 4 s...
capped at 5 minutes) up to `MAX_ATTEMPTS`, then the row is marked FAILED. Every attempt is
logged (`webhook log`). Rows are claimed with a lease in the database, so two server
processes never deliver the same row at once, and a process that dies mid-delivery leaves
its rows to another one after the lease.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import sqlalchemy as sa

from .errors import LabelloopError, NotFoundError

if TYPE_CHECKING:
    import httpx  # imported where a request is sent: most commands send none

    from .project import Project

log = logging.getLogger("labelloop.webhooks")

EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATION_DELETED",
          "SCENARIO_RUN_FINISHED", "MODEL_TRAINED", "QUERIES_UPDATED", "PING")
PENDING, DELIVERED, FAILED, DROPPED = "PENDING", "DELIVERED", "FAILED", "DROPPED"
MAX_ATTEMPTS = 8
MAX_BACKOFF = 300.0
TIMEOUT = 10.0
SIGNATURE_HEADER = "X-Labelloop-Signature"

metadata = sa.MetaData()

outbox_table = sa.Table(
    "ll_webhook_outbox", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("event", sa.String(50), nullable=False),
    sa.Column("payload", sa.Text, nullable=False),  # the JSON body, exactly as sent
    sa.Column("created", sa.Float, nullable=False),
    sa.Column("status", sa.String(10), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_at", sa.Float, nullable=False),
    sa.Column("claimed_by", sa.String(64)),
    sa.Column("claimed_until", sa.Float),
    sa.Column("last_error", sa.Text),
    sa.Column("delivered", sa.Float),
    sa.Index("ix_ll_webhook_outbox_due", "status", "next_at"),
    sqlite_autoincrement=True,
)

deliveries_table = sa.Table(
    "ll_webhook_deliveries", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("outbox_id", sa.Integer, nullable=False, index=True),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("event", sa.String(50), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("status_code", sa.Integer),
    sa.Column("ok", sa.Boolean, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("seconds", sa.Float),
)

_created: set[str] = set()
_created_lock = threading.Lock()


def ensure_tables(conn: sa.Connection) -> None:
    """Create the outbox tables if missing (once per database and process)."""
    key = str(conn.engine.url)
    if key in _created:
        return
    with _created_lock:
        metadata.create_all(conn)
        _created.add(key)


# ------------------------------------------------------------------ configuration
def check_url(url: Any) -> str:
    """An http(s) URL, or a clear error."""
    parts = urlsplit(url) if isinstance(url, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise LabelloopError(f"webhook URL {url!r} is not valid: give an http:// or https:// "
                             "address, e.g. https://example.org/labelloop-hook")
    return url


def check_events(events: Any) -> list[str]:
    """Known event names (or `*`)."""
    if events in (None, [], "*"):
        return ["*"]
    if isinstance(events, str):
        events = [e.strip() for e in events.split(",") if e.strip()]
    unknown = [e for e in events if e != "*" and e not in EVENTS]
    if unknown:
        raise LabelloopError(f"unknown webhook event {', '.join(map(repr, unknown))}: use "
                             f"{', '.join(EVENTS)} or '*'")
    return list(events)


def hooks(project: Project) -> list[dict]:
    """The receivers of project.json, re-read when another process changed the file."""
    try:
        mtime = project.config_path.stat().st_mtime_ns
    except OSError:
        mtime = None
    seen = getattr(project, "_webhooks_mtime", None)
    if mtime is not None and seen is not None and mtime != seen:
        try:
            project.reload()
        except LabelloopError as exc:  # a half-edited file: keep the config we have
            log.warning("project.json not reloaded: %s", exc)
    project._webhooks_mtime = mtime
    return list(project.config.get("webhooks") or [])


def wants(hook: dict, event: str) -> bool:
    events = hook.get("events") or ["*"]
    return event == "PING" or "*" in events or event in events


def add_hook(project: Project, url: str, events: Any = None, secret: str | None = None) -> dict:
    """Add (or replace, same URL) a receiver in project.json."""
    hook: dict[str, Any] = {"url": check_url(url), "events": check_events(events)}
    if secret:
        hook["secret"] = secret
    project.reload()
    current = [h for h in project.config.get("webhooks") or [] if h.get("url") != url]
    project.config["webhooks"] = current + [hook]
    project.save_config()
    return hook


def remove_hook(project: Project, url: str) -> None:
    """Remove the receiver with this URL from project.json (its pending rows are dropped)."""
    project.reload()
    current = project.config.get("webhooks") or []
    kept = [h for h in current if h.get("url") != url]
    if len(kept) == len(current):
        known = ", ".join(h.get("url", "?") for h in current) or "none"
        raise NotFoundError(f"no webhook {url!r} (webhooks: {known})")
    project.config["webhooks"] = kept
    project.save_config()


# ------------------------------------------------------------------ emitting
def body_of(project: Project, event: str, payload: dict) -> str:
    """The JSON body sent for an event: Label Studio's shape, `action` first."""
    data = {"action": event, **payload}
    data.setdefault("labelloop", {"project": project.key,
                                  "time": dt.datetime.now(dt.UTC).isoformat()})
    return json.dumps(data, default=str, allow_nan=False)


def emit(project: Project, conn: sa.Connection, event: str, payload: dict) -> int:
    """Queue `event` for every receiver that wants it, in the caller's transaction."""
    if event not in EVENTS:
        raise LabelloopError(f"unknown webhook event {event!r}")
    targets = [h for h in hooks(project) if wants(h, event)]
    if not targets:
        return 0
    ensure_tables(conn)
    body = body_of(project, event, payload)
    now = time.time()
    conn.execute(sa.insert(outbox_table), [
        {"url": h["url"], "event": event, "payload": body, "created": now, "status": PENDING,
         "attempts": 0, "next_at": now} for h in targets])
    return len(targets)


def emit_now(project: Project, event: str, payload: dict) -> int:
    """`emit` in a transaction of its own; never raises (an event must not fail its cause)."""
    try:
        if not any(wants(h, event) for h in hooks(project)):
            return 0
        with project.write_transaction() as conn:
            return emit(project, conn, event, payload)
    except Exception:
        log.exception("webhook event %s not recorded", event)
        return 0


# ------------------------------------------------------------------ delivering
def signature(secret: str, body: bytes) -> str:
    """The `X-Labelloop-Signature` value of a body."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def post(url: str, body: bytes, headers: dict[str, str], timeout: float = TIMEOUT,
         client: httpx.Client | None = None) -> tuple[int | None, str | None]:
    """POST a body; `(status code, error)`; error is None on a 2xx answer (redirects are not
    followed). `client`: one the caller keeps for its deliveries, else one for this request
    (loading the CA bundle costs ~30 ms of CPU: only for an https URL)."""
    import httpx

    headers = {"Content-Type": "application/json", "User-Agent": "labelloop-webhooks", **headers}
    http = client or httpx.Client(verify=url.lower().startswith("https:"))
    try:
        request = http.build_request("POST", url, content=body, headers=headers, timeout=timeout)
        resp = http.send(request, stream=True)
        resp.close()  # the answer's body is never read
    except (httpx.HTTPError, httpx.InvalidURL, OSError, ValueError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    finally:
        if client is None:
            http.close()
    if resp.is_success:
        return resp.status_code, None
    where = f" to {resp.headers['Location']}" if resp.is_redirect else ""
    return resp.status_code, f"HTTP {resp.status_code} {resp.reason_phrase}{where}"


def backoff(attempts: int) -> float:
    """Seconds before retry number `attempts` (1, 2, 4, ... capped)."""
    return min(MAX_BACKOFF, 2.0 ** max(0, attempts - 1))


class Sender:
    """Delivers due outbox rows from a background thread (one per server process)."""

    def __init__(self, project: Project, poll: float = 0.5, workers: int = 4,
                 timeout: float = TIMEOUT, batch: int = 20):
        self.project = project
        self.poll = poll
        self.timeout = timeout
        self.batch = batch
        self.owner = f"{uuid.uuid4().hex[:12]}"
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="labelloop-hook")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Rows are claimed only for free workers, so no claimed row waits out its lease.
        self.slots = workers
        self._busy = 0
        self._busy_lock = threading.Lock()

    def start(self) -> Sender:
        self._thread = threading.Thread(target=self._loop, name="labelloop-webhooks",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop claiming; rows claimed but not yet attempted go back to the outbox now."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.pool.shutdown(wait=False, cancel_futures=True)
        t = outbox_table
        try:
            with self.project.write_transaction() as conn:
                conn.execute(sa.update(t).where(t.c.claimed_by.like(f"{self.owner}:%"),
                                                t.c.status == PENDING)
                             .values(claimed_by=None, claimed_until=None))
        except Exception:  # the lease expires by itself anyway
            log.warning("webhook sender: claims not released", exc_info=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                n = self.run_once()
            except Exception:
                log.exception("webhook sender: claiming deliveries failed")
                n = 0
            if not n:
                self._stop.wait(self.poll)

    def claim(self, limit: int | None = None) -> list[sa.Row]:
        """Lease due rows to this process (conditions re-checked in the UPDATE itself)."""
        limit = self.batch if limit is None else limit
        if limit <= 0:
            return []
        t = outbox_table
        now = time.time()
        free = sa.or_(t.c.claimed_until.is_(None), t.c.claimed_until < now)
        due = sa.and_(t.c.status == PENDING, t.c.next_at <= now, free)
        token = f"{self.owner}:{uuid.uuid4().hex[:8]}"
        with self.project.engine.connect() as conn:  # cheap read first: no write lock when idle
            ensure_tables(conn)
            conn.commit()
            if conn.execute(sa.select(t.c.id).where(due).limit(1)).first() is None:
                return []
        with self.project.write_transaction() as conn:
            ids = conn.execute(sa.select(t.c.id).where(due).order_by(t.c.id)
                               .limit(limit)).scalars().all()
            if not ids:
                return []
            conn.execute(sa.update(t).where(t.c.id.in_(ids), due).values(
                claimed_by=token, claimed_until=now + self.timeout + 5))
            return conn.execute(sa.select(t).where(t.c.claimed_by == token)).all()

    def run_once(self) -> int:
        """Claim due rows and deliver them in the worker pool; how many were claimed."""
        with self._busy_lock:
            free = min(self.batch, self.slots - self._busy)
        rows = self.claim(free)
        with self._busy_lock:
            self._busy += len(rows)
        for row in rows:
            self.pool.submit(self._deliver_logged, row)
        return len(rows)

    def _deliver_logged(self, row: sa.Row) -> None:
        try:
            self.deliver(row)
        except Exception:
            log.exception("webhook delivery %s failed unexpectedly", row.id)
        finally:
            with self._busy_lock:
                self._busy -= 1

    def deliver(self, row: sa.Row) -> bool:
        """One attempt at one row; records the outcome. True when delivered."""
        hook = next((h for h in hooks(self.project) if h.get("url") == row.url), None)
        t = outbox_table
        if hook is None:  # the receiver was removed meanwhile
            with self.project.write_transaction() as conn:
                conn.execute(sa.update(t).where(t.c.id == row.id).values(
                    status=DROPPED, claimed_by=None, claimed_until=None,
                    last_error="receiver removed from project.json"))
            return False
        body = row.payload.encode("utf-8")
        headers = {"X-Labelloop-Event": row.event, "X-Labelloop-Delivery": str(row.id)}
        if hook.get("secret"):
            headers[SIGNATURE_HEADER] = signature(hook["secret"], body)
        t0 = time.monotonic()
        code, error = post(row.url, body, headers, self.timeout)
        seconds = time.monotonic() - t0
        attempts = row.attempts + 1
        now = time.time()
        if error is None:
            values = {"status": DELIVERED, "delivered": now, "last_error": None}
        elif attempts >= MAX_ATTEMPTS:
            values = {"status": FAILED, "last_error": error}
        else:
            values = {"next_at": now + backoff(attempts), "last_error": error}
        with self.project.write_transaction() as conn:
            conn.execute(sa.update(t).where(t.c.id == row.id).values(
                attempts=attempts, claimed_by=None, claimed_until=None, **values))
            conn.execute(sa.insert(deliveries_table).values(
                outbox_id=row.id, url=row.url, event=row.event, attempt=attempts, at=now,
                status_code=code, ok=error is None, error=error, seconds=round(seconds, 4)))
        if error is not None:
            log.info("webhook %s to %s: attempt %d failed: %s", row.event, row.url, attempts,
                     error)
        return error is None

    def drain(self, timeout: float = 30.0) -> int:
        """Deliver everything due now, synchronously (CLI and tests); how many rows tried."""
        end = time.monotonic() + timeout
        n = 0
        while time.monotonic() < end:
            rows = self.claim()
            if not rows:
                break
            for row in rows:
                self.deliver(row)
            n += len(rows)
        return n


# ------------------------------------------------------------------ reading
def delivery_log(project: Project, limit: int = 50) -> list[dict]:
    """The latest delivery attempts, newest first."""
    t = deliveries_table
    with project.engine.connect() as conn:
        ensure_tables(conn)
        conn.commit()
        rows = conn.execute(sa.select(t).order_by(t.c.id.desc()).limit(limit)).mappings().all()
    return [{**r, "at": dt.datetime.fromtimestamp(r["at"], dt.UTC).isoformat(timespec="seconds")}
            for r in rows]


def outbox(project: Project, status: str | None = None, limit: int = 100) -> list[dict]:
    """Rows of the outbox, newest first (optionally of one status)."""
    t = outbox_table
    q = sa.select(t).order_by(t.c.id.desc()).limit(limit)
    if status:
        q = q.where(t.c.status == status)
    with project.engine.connect() as conn:
        ensure_tables(conn)
        conn.commit()
        return [dict(r) for r in conn.execute(q).mappings().all()]


def send_test(project: Project, url: str) -> dict:
    """Send a PING to one receiver now, through the outbox (so it is logged); the outcome."""
    if not any(h.get("url") == url for h in hooks(project)):
        raise NotFoundError(f"no webhook {url!r}: add it first (`labelloop webhook add URL`)")
    with project.write_transaction() as conn:
        ensure_tables(conn)
        now = time.time()
        body = body_of(project, "PING", {"message": "test from labelloop webhook test"})
        row_id = conn.execute(sa.insert(outbox_table).values(
            url=url, event="PING", payload=body, created=now, status=PENDING, attempts=0,
            next_at=now + 3600, claimed_by="test", claimed_until=now + 3600)
        ).inserted_primary_key[0]
    sender = Sender(project)
    with project.engine.connect() as conn:
        row = conn.execute(sa.select(outbox_table).where(outbox_table.c.id == row_id)).first()
    ok = sender.deliver(row)
    if not ok:  # a test is not retried
        with project.write_transaction() as conn:
            conn.execute(sa.update(outbox_table).where(outbox_table.c.id == row_id)
                         .values(status=FAILED))
    sender.pool.shutdown(wait=False)
    return delivery_log(project, 1)[0] | {"delivered": ok}


class ProjectWebhooks:
    """`project.webhooks`: the public API bound to one project."""

    def __init__(self, project: Project):
        self.project = project

    def wanted(self, event: str) -> bool:
        """Whether any receiver wants `event` (skip building a payload when not)."""
        return any(wants(h, event) for h in hooks(self.project))

    def emit(self, conn: sa.Connection, event: str, payload: dict) -> int:
        """Queue `event` in the caller's transaction (see `emit`)."""
        return emit(self.project, conn, event, payload)

    def emit_now(self, event: str, payload: dict) -> int:
        """Queue `event` in a transaction of its own; never raises."""
        return emit_now(self.project, event, payload)
