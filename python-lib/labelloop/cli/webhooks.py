"""`labelloop webhook`: outgoing webhook receivers and their deliveries."""

from __future__ import annotations

import json

import click

from ..errors import LabelloopError
from .root import State, _print_table, cli


@cli.group()
def webhook():
    """Outgoing webhooks: receivers in project.json, deliveries from the outbox."""


@webhook.command("add")
@click.argument("url")
@click.option("--event", "events", multiple=True,
              help="Event to send (repeatable; default: all). ANNOTATION_CREATED, "
                   "ANNOTATION_UPDATED, ANNOTATION_DELETED, SCENARIO_RUN_FINISHED, "
                   "MODEL_TRAINED, QUERIES_UPDATED.")
@click.option("--secret", help="Sign bodies with HMAC-SHA256 (X-Labelloop-Signature).")
@click.pass_obj
def webhook_add(state: State, url: str, events: tuple[str, ...], secret: str | None):
    """Send events to URL (replaces a receiver with the same URL)."""
    from ..webhooks import add_hook

    hook = add_hook(state.project, url, list(events) or None, secret)
    click.echo(f"webhook {hook['url']}: events {', '.join(hook['events'])}"
               f"{' (signed)' if secret else ''}")


@webhook.command("list")
@click.pass_obj
def webhook_list(state: State):
    """Receivers of project.json and their pending deliveries."""
    from ..webhooks import PENDING, hooks, outbox

    pending = [r["url"] for r in outbox(state.project, PENDING, limit=100000)]
    rows = [{"url": h["url"], "events": ",".join(h.get("events") or ["*"]),
             "signed": "yes" if h.get("secret") else "no", "pending": pending.count(h["url"])}
            for h in hooks(state.project)]
    _print_table(rows, ["url", "events", "signed", "pending"])


@webhook.command("remove")
@click.argument("url")
@click.pass_obj
def webhook_remove(state: State, url: str):
    """Stop sending to URL (its pending deliveries are dropped)."""
    from ..webhooks import remove_hook

    remove_hook(state.project, url)
    click.echo(f"removed webhook {url}")


@webhook.command("test")
@click.argument("url")
@click.pass_obj
def webhook_test(state: State, url: str):
    """Send a PING to URL now and show the answer."""
    from ..webhooks import send_test

    result = send_test(state.project, url)
    if not result["delivered"]:
        raise LabelloopError(f"webhook {url} failed: {result['error']}")
    click.echo(f"webhook {url}: HTTP {result['status_code']} in {result['seconds']:.3f}s")


@webhook.command("log")
@click.option("-n", "--limit", default=20, show_default=True, help="Attempts to show.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def webhook_log(state: State, limit: int, as_json: bool):
    """The latest delivery attempts, newest first."""
    from ..webhooks import delivery_log

    rows = delivery_log(state.project, limit)
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        r["result"] = r["status_code"] if r["ok"] else (r["error"] or r["status_code"])
    _print_table(rows, ["at", "event", "url", "attempt", "result", "outbox_id"])


@webhook.command("send")
@click.option("--timeout", default=30.0, show_default=True, help="Give up after SECONDS.")
@click.pass_obj
def webhook_send(state: State, timeout: float):
    """Deliver the pending events that are due now (the server does this on its own)."""
    from ..webhooks import Sender

    sender = Sender(state.project)
    n = sender.drain(timeout)
    sender.pool.shutdown(wait=False)
    click.echo(f"tried {n} deliveries")
