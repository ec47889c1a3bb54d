"""`labelloop scenario`: running, watching and listing the scenarios of project.json."""

from __future__ import annotations

import json

import click

from ..errors import LabelloopError
from .root import State, _interrupt_on_sigterm, _print_table, cli


@cli.group()
def scenario():
    """Run and watch the scenarios of project.json."""


@scenario.command("list")
@click.pass_obj
def scenario_list(state: State):
    """Scenarios with their triggers, steps and last run."""
    from ..scenarios import list_scenarios

    rows = []
    for s in list_scenarios(state.project):
        last = s["last_run"] or {}
        errors = [f"{t['key']}: {t['last_error']}" for t in s["triggers"] if t["last_error"]]
        rows.append({"scenario": s["id"], "active": "yes" if s["active"] else "no",
                     "triggers": len(s["triggers"]), "steps": len(s["steps"]),
                     "running": f"record {s['running']['run_id']}" if s["running"] else "",
                     "last run": f"{last.get('number', '')} {last.get('status', '')}".strip(),
                     "trigger errors": "; ".join(errors)})
    _print_table(rows, ["scenario", "active", "triggers", "steps", "running", "last run",
                        "trigger errors"])


@scenario.command("run")
@click.argument("name")
@click.option("--run-id", type=int, hidden=True, help="Continue this run record (scheduler).")
@click.option("--lock-owner", hidden=True, help="Take over this lock owner's lock (scheduler).")
@click.option("--trigger-json", hidden=True, help="What started the run, as JSON (scheduler).")
@click.pass_obj
def scenario_run(state: State, name: str, run_id: int | None, lock_owner: str | None,
                 trigger_json: str | None):
    """Run scenario NAME once: its steps in order, stopping at the first failure."""
    import getpass

    _interrupt_on_sigterm()

    from ..scenarios import run_scenario

    try:
        trigger = json.loads(trigger_json) if trigger_json else \
            {"kind": "manual", "by": f"cli ({getpass.getuser()})"}
    except (json.JSONDecodeError, KeyError, OSError):
        trigger = {"kind": "manual", "by": "cli"}
    record = run_scenario(state.project, name, trigger=trigger, run_id=run_id,
                          lock_owner=lock_owner)
    for step in record["details"].get("steps", []):
        extra = f": {step['error']}" if step.get("error") else ""
        click.echo(f"  {step['status']:<8} {step['step']} ({step.get('seconds', '?')}s){extra}")
    if record["status"] != "SUCCESS":
        raise LabelloopError(f"scenario {name} (run {record['id']}) {record['status']}: "
                             f"{record['error']}")
    click.echo(f"scenario {name} (run {record['id']}): SUCCESS in "
               f"{record['details'].get('seconds', '?')}s")


@scenario.command("watch")
@click.option("--period", default=5.0, show_default=True, type=click.FloatRange(min=0.05),
              help="Seconds between two checks of the triggers.")
@click.option("--max-runs", type=click.IntRange(min=1),
              help="Stop after this many runs have finished.")
@click.option("--duration", type=click.FloatRange(min=0), help="Stop after this many seconds.")
@click.pass_obj
def scenario_watch(state: State, period: float, max_runs: int | None, duration: float | None):
    """Check every trigger of every active scenario each PERIOD; run a scenario when one fires."""
    import signal

    from ..scenarios import Scheduler

    def _term(*_):  # SIGTERM ends like Ctrl-C: runs record their end, locks are released
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    scheduler = Scheduler(state.project, period=period, plugin_dirs=state.plugin_dirs)
    try:
        n = scheduler.watch(max_runs=max_runs, duration=duration)
    except KeyboardInterrupt:
        click.echo("stopping: interrupting the running scenarios (they record their end)",
                   err=True)
        scheduler.stop(timeout=30)
        return
    click.echo(f"watched {state.project.key}: {n} run(s) finished")


@scenario.command("launcher")
@click.option("--socket", "path", required=True, type=click.Path(dir_okay=False),
              help="The Unix socket to listen on.")
@click.pass_obj
def scenario_launcher(state: State, path: str):
    """Keep a warm parent for scenario runs on the Unix socket PATH.

    Servers and watchers started with LABELLOOP_RUN_LAUNCHER=PATH fork their runs from it,
    from their first run on, instead of each keeping one. Ctrl-C ends it."""
    import signal

    from ..scenarios.launcher import keep_launcher, run_imports

    def _term(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    click.echo(f"run launcher on {path}: start servers with LABELLOOP_RUN_LAUNCHER={path}")
    try:
        keep_launcher(path, run_imports(state.project.registry))
    except KeyboardInterrupt:
        click.echo("run launcher stopped", err=True)


@scenario.command("runs")
@click.argument("name")
@click.option("-n", "--limit", default=20, show_default=True, help="Runs to show.")
@click.option("--json", "as_json", is_flag=True, help="Print the run records as JSON.")
@click.pass_obj
def scenario_runs_cmd(state: State, name: str, limit: int, as_json: bool):
    """Runs of scenario NAME, newest first.

    RUN counts this scenario's runs (1, 2, 3, ...); RECORD is the run record's id, one
    numbering shared with recipe runs (what the logs and `--json` call `id`)."""
    from ..scenarios import scenario_runs

    runs = scenario_runs(state.project, name, limit=limit)
    if as_json:
        click.echo(json.dumps(runs, indent=2, default=str))
        return
    rows = []
    for r in runs:
        d = r.get("details") or {}
        trig = d.get("trigger") or {}
        rows.append({"run": r["number"], "record": r["id"], "status": r["status"],
                     "started": (r["started"] or "")[:19],
                     "seconds": d.get("seconds", ""),
                     "trigger": trig.get("key") or trig.get("by") or trig.get("kind", ""),
                     "error": r.get("error") or ""})
    _print_table(rows, ["run", "record", "status", "started", "seconds", "trigger", "error"])
