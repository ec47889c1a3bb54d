"""Scenarios: triggers that fire, steps that run in order, one lock per scenario, run history.

A scenario of project.json has `triggers` (trigger components with params) and `steps`
(`{"recipe": NAME}`, `{"build": DATASET}` or `{"step": "plugin/step-id", "params": {...}}`).
`run_scenario` runs the steps once, in order, stopping at the first failure. The `Scheduler`
checks the triggers of every active scenario and starts a run, in a subprocess, when one fires.

Why a lock row in the database: a `watch` process and a `serve` process (or two of either)
may look at the same project; the lock makes sure a scenario never runs twice at once. The
lock is also held while triggers are checked, so trigger state is read and written by one
process at a time. Its owner refreshes it (heartbeat); a crashed owner's lock expires.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from .descriptors import validate_config
from .errors import ConflictError, LabelloopError, NotFoundError
from .plugins import Component, PluginRegistry
from .project import Project, end_run, start_run
from .project.db import (
    runs_table,
    scenario_locks_table,
    trigger_states_table,
    utc_iso,
    write_transaction,
)

log = logging.getLogger("labelloop.scenarios")

DEFAULT_LOCK_TTL = 60.0  # seconds without a heartbeat before a lock counts as abandoned


def lock_ttl() -> float:
    """Lock time-to-live in seconds (LABELLOOP_LOCK_TTL overrides the default)."""
    try:
        return max(0.5, float(os.environ.get("LABELLOOP_LOCK_TTL", DEFAULT_LOCK_TTL)))
    except ValueError:
        return DEFAULT_LOCK_TTL


# ------------------------------------------------------------------ project.json access
def scenario_names(project: Project) -> list[str]:
    """Names of the scenarios of project.json."""
    return sorted(project.config.get("scenarios", {}))


def scenario_config(project: Project, name: str) -> dict:
    """The scenario `name` of project.json."""
    scenarios = project.config.get("scenarios", {})
    if name not in scenarios:
        known = ", ".join(sorted(scenarios)) or "none"
        raise NotFoundError(f"unknown scenario {name!r} (scenarios: {known}): declare it under "
                            "\"scenarios\" in project.json")
    return scenarios[name]


def trigger_key(index: int, trigger: dict) -> str:
    """The key trigger state is kept under: its name, else its position and type."""
    return trigger.get("name") or f"{index}:{trigger['type']}"


def step_label(index: int, step: dict) -> str:
    """A readable name for a step: its name, else what it runs."""
    if step.get("name"):
        return step["name"]
    if "recipe" in step:
        return f"recipe {step['recipe']}"
    if "build" in step:
        return f"build {step['build']}"
    return f"step {step.get('step')}"


# ------------------------------------------------------------------ component contexts
@dataclass
class TriggerContext:
    """What a trigger's `check(ctx)` receives; `state` is saved when check returns."""

    project: Project
    scenario: str
    trigger: str
    component: Component
    config: dict
    state: dict
    log: logging.Logger

    @property
    def registry(self) -> PluginRegistry:
        return self.project.registry


@dataclass
class StepContext:
    """What a step's `run(ctx)` receives; `details` is recorded with the scenario run."""

    project: Project
    scenario: str
    step: str
    component: Component
    config: dict
    log: logging.Logger
    progress: Any
    run_id: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def registry(self) -> PluginRegistry:
        return self.project.registry


# ------------------------------------------------------------------ the lock
def new_owner() -> str:
    """A lock owner id unique to this process and call."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class ScenarioLock:
    """The database lock of one scenario: acquire, refresh (heartbeat), release."""

    def __init__(self, project: Project, scenario: str, owner: str | None = None,
                 ttl: float | None = None):
        self.project = project
        self.scenario = scenario
        self.owner = owner or new_owner()
        self.ttl = lock_ttl() if ttl is None else ttl
        self.last_holder: dict | None = None

    def holder(self) -> dict | None:
        """The live lock row of the scenario (None when free or expired)."""
        t = scenario_locks_table
        with self.project.engine.connect() as conn:
            row = conn.execute(sa.select(t).where(t.c.scenario == self.scenario)).mappings().first()
        if row is None or row["expires"] <= time.time():
            return None
        return dict(row)

    def acquire(self, purpose: str = "running", wait: float = 0.0) -> bool:
        """Take the lock (or keep it, if this owner holds it); False if another owner holds it.

        `wait` seconds are spent retrying while the other owner is only checking triggers,
        which takes milliseconds, so a manual run isn't refused because of a routine check.
        """
        deadline = time.monotonic() + wait
        while True:
            if self._try_acquire(purpose):
                return True
            holder = self.last_holder or {}
            if holder.get("purpose") != "checking" or time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def _try_acquire(self, purpose: str) -> bool:
        t = scenario_locks_table
        now = time.time()
        stale_run: int | None = None
        try:
            with write_transaction(self.project.engine) as conn:
                row = conn.execute(sa.select(t).where(t.c.scenario == self.scenario)
                                   ).mappings().first()
                values = {"owner": self.owner, "purpose": purpose, "expires": now + self.ttl}
                if row is None:
                    conn.execute(sa.insert(t).values(scenario=self.scenario, acquired=now,
                                                     run_id=None, **values))
                elif row["owner"] == self.owner:
                    conn.execute(sa.update(t).where(t.c.scenario == self.scenario).values(**values))
                elif row["expires"] > now:
                    self.last_holder = dict(row)
                    return False
                else:
                    # The guard on owner/expires makes the take-over safe on databases where
                    # the transaction doesn't lock the table (two stealers: one wins).
                    res = conn.execute(sa.update(t).where(
                        (t.c.scenario == self.scenario) & (t.c.owner == row["owner"])
                        & (t.c.expires == row["expires"])).values(acquired=now, run_id=None,
                                                                   **values))
                    if res.rowcount != 1:
                        return False
                    stale_run = row["run_id"]
                    log.warning("scenario %s: took over the lock of %s, which stopped refreshing "
                                "it", self.scenario, row["owner"])
        except sa.exc.IntegrityError:  # another process inserted the row first
            return False
        if stale_run is not None:
            _close_abandoned_run(self.project, stale_run)
        self.last_holder = None
        return True

    def attach_run(self, run_id: int) -> None:
        """Record which run holds the lock (closed as FAILED if its process dies)."""
        t = scenario_locks_table
        with write_transaction(self.project.engine) as conn:
            conn.execute(sa.update(t).where((t.c.scenario == self.scenario)
                                            & (t.c.owner == self.owner))
                         .values(run_id=run_id, purpose="running"))

    def refresh(self) -> bool:
        """Push the expiry forward; False if the lock was lost."""
        t = scenario_locks_table
        with write_transaction(self.project.engine) as conn:
            res = conn.execute(sa.update(t).where((t.c.scenario == self.scenario)
                                                  & (t.c.owner == self.owner))
                               .values(expires=time.time() + self.ttl))
            return res.rowcount == 1

    def release(self) -> None:
        """Free the lock if this owner holds it."""
        t = scenario_locks_table
        with write_transaction(self.project.engine) as conn:
            conn.execute(sa.delete(t).where((t.c.scenario == self.scenario)
                                            & (t.c.owner == self.owner)))

    @contextlib.contextmanager
    def keep_alive(self) -> Iterator[None]:
        """Refresh the lock from a background thread while the body runs."""
        stop = threading.Event()

        def beat() -> None:
            while not stop.wait(self.ttl / 3):
                try:
                    if not self.refresh():
                        log.error("scenario %s: lost its lock", self.scenario)
                        return
                except Exception:  # a busy database must not kill the heartbeat for good
                    log.exception("scenario %s: lock heartbeat failed", self.scenario)

        thread = threading.Thread(target=beat, name=f"lock-{self.scenario}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(timeout=5)

    def refused_message(self) -> str:
        """Why the lock was refused, for a ConflictError."""
        h = self.last_holder or self.holder() or {}
        what = f"run {h['run_id']}" if h.get("run_id") else h.get("purpose", "a run")
        since = dt.datetime.fromtimestamp(h["acquired"], dt.UTC).isoformat(timespec="seconds") \
            if h.get("acquired") else "?"
        return (f"scenario {self.scenario!r} is already running ({what}, owner {h.get('owner', '?')}, "
                f"since {since}); wait for it to finish (see `labelloop scenario runs "
                f"{self.scenario}`)")


def _close_abandoned_run(project: Project, run_id: int) -> None:
    """Mark a run whose process died (its lock expired) as FAILED."""
    with project.engine.connect() as conn:
        status = conn.execute(sa.select(runs_table.c.status).where(runs_table.c.id == run_id)).scalar()
    if status == "RUNNING":
        end_run(project.engine, run_id, "FAILED",
                "the process running this scenario stopped without finishing (its lock expired)")


# ------------------------------------------------------------------ run records
def update_run_details(project: Project, run_id: int, details: dict) -> None:
    """Merge `details` into a run record while it runs (so others see its progress)."""
    with write_transaction(project.engine) as conn:
        old = conn.execute(sa.select(runs_table.c.details).where(runs_table.c.id == run_id)
                           ).scalar() or {}
        conn.execute(sa.update(runs_table).where(runs_table.c.id == run_id)
                     .values(details={**old, **details}))


def get_run(project: Project, run_id: int) -> dict:
    """One run record by id."""
    with project.engine.connect() as conn:
        row = conn.execute(sa.select(runs_table).where(runs_table.c.id == run_id)).mappings().first()
    if row is None:
        raise NotFoundError(f"no run with id {run_id}")
    out = dict(row)
    for key in ("started", "ended"):
        if out[key] is not None:
            out[key] = utc_iso(out[key])
    return out


def scenario_runs(project: Project, name: str, limit: int = 50) -> list[dict]:
    """Runs of scenario `name`, newest first."""
    scenario_config(project, name)
    return project.runs("scenario", name, limit=limit)


# ------------------------------------------------------------------ triggers
def _load_trigger_state(project: Project, scenario: str, key: str) -> dict:
    t = trigger_states_table
    with project.engine.connect() as conn:
        row = conn.execute(sa.select(t.c.state).where((t.c.scenario == scenario)
                                                      & (t.c.trigger == key))).first()
    return dict(row[0] or {}) if row else {}


def _save_trigger_state(project: Project, scenario: str, key: str, values: dict,
                        fired: bool = False, failed: bool = False) -> None:
    t = trigger_states_table
    where = (t.c.scenario == scenario) & (t.c.trigger == key)
    with write_transaction(project.engine) as conn:
        row = conn.execute(sa.select(t.c.fire_count, t.c.error_count).where(where)).first()
        counts = {"fire_count": (row[0] if row else 0) + fired,
                  "error_count": (row[1] if row else 0) + failed}
        if row is None:
            conn.execute(sa.insert(t).values(scenario=scenario, trigger=key,
                                             **{"state": {}, **values, **counts}))
        else:
            conn.execute(sa.update(t).where(where).values(**values, **counts))


def trigger_states(project: Project, scenario: str) -> dict[str, dict]:
    """Stored state and check history of the triggers of a scenario, by trigger key."""
    t = trigger_states_table
    with project.engine.connect() as conn:
        rows = conn.execute(sa.select(t).where(t.c.scenario == scenario)).mappings().all()
    return {r["trigger"]: {k: r[k] for k in ("state", "checked", "fired", "fire_count", "error",
                                              "error_count")} for r in rows}


def check_trigger(project: Project, scenario: str, index: int, trigger: dict) -> bool:
    """Run one trigger's check; its state is saved when check returns (not when it raises).

    Call it while holding the scenario's lock, so two processes never update one state.
    """
    key = trigger_key(index, trigger)
    now = time.time()
    try:
        comp = project.registry.component(trigger["type"], "trigger")
        config = validate_config(f"{comp.type} (scenario {scenario!r}, trigger {key!r})",
                                 comp.params, trigger.get("params"))
        state = _load_trigger_state(project, scenario, key)
        ctx = TriggerContext(project, scenario, key, comp, config, state,
                             logging.getLogger(f"labelloop.trigger.{scenario}"))
        fired = bool(comp.entry()(ctx))
        json.dumps(ctx.state)  # refuse state that can't be stored, as a trigger error
    except Exception as exc:
        message = str(exc) if isinstance(exc, LabelloopError) else f"{type(exc).__name__}: {exc}"
        log.error("scenario %s: trigger %s failed: %s", scenario, key, message,
                  exc_info=not isinstance(exc, LabelloopError))
        _save_trigger_state(project, scenario, key, {"checked": now, "error": message},
                            failed=True)
        return False
    values: dict[str, Any] = {"state": ctx.state, "checked": now, "error": None}
    if fired:
        values["fired"] = now
    _save_trigger_state(project, scenario, key, values, fired=fired)
    return fired


def check_triggers(project: Project, scenario: str) -> dict | None:
    """Check the triggers of a scenario in order; the first that fires, as run details, or None."""
    cfg = scenario_config(project, scenario)
    for index, trigger in enumerate(cfg.get("triggers", [])):
        if check_trigger(project, scenario, index, trigger):
            return {"kind": "trigger", "key": trigger_key(index, trigger), "type": trigger["type"],
                    "index": index}
    return None


# ------------------------------------------------------------------ steps
def _run_step(project: Project, scenario: str, step: dict, label: str, run_id: int) -> dict:
    """Run one step; returns what to record about it (raises on failure)."""
    from . import flow

    origin = f"scenario {scenario} (run {run_id})"
    if "recipe" in step:
        record = flow.run_recipe(project, step["recipe"], trigger=origin)
        return {"recipe_run": record["id"]}
    if "build" in step:
        record = flow.build(project, step["build"], trigger=origin)
        return {"recipe": record["name"], "recipe_run": record["id"]}
    comp = project.registry.component(step["step"], "step")
    config = validate_config(f"{comp.type} (scenario {scenario!r}, {label})",
                             flow.effective_params(comp, project.registry), step.get("params"))
    slog = logging.getLogger(f"labelloop.step.{scenario}")
    ctx = StepContext(project, scenario, label, comp, config, slog, flow.Progress(slog),
                      run_id=run_id)
    comp.entry()(ctx)
    return {"details": ctx.details} if ctx.details else {}


def _execute(project: Project, name: str, run_id: int) -> tuple[str, str | None, dict]:
    """Run the steps in order, recording each; stops at the first failure."""
    steps = scenario_config(project, name).get("steps", [])
    done: list[dict] = []
    for index, step in enumerate(steps):
        label = step_label(index, step)
        entry: dict[str, Any] = {"index": index, "step": label, "status": "RUNNING"}
        update_run_details(project, run_id, {"steps": [*done, entry]})
        t0 = time.monotonic()
        try:
            entry.update(_run_step(project, name, step, label, run_id))
        except BaseException as exc:
            if isinstance(exc, KeyboardInterrupt):
                message = "interrupted"
            elif isinstance(exc, LabelloopError):
                message = str(exc)
            else:
                message = f"{type(exc).__name__}: {exc}"
            entry.update(status="FAILED", error=message, seconds=round(time.monotonic() - t0, 3))
            if not isinstance(exc, LabelloopError | KeyboardInterrupt):
                entry["traceback"] = traceback.format_exc(limit=20)
            done.append(entry)
            error = f"step {index + 1} ({label}) failed: {message}"
            details = {"steps": done, "failed_step": {"index": index, "step": label,
                                                      "error": message}}
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                end_run(project.engine, run_id, "FAILED", error, details)
                raise
            return "FAILED", error, details
        entry.update(status="SUCCESS", seconds=round(time.monotonic() - t0, 3))
        done.append(entry)
    return "SUCCESS", None, {"steps": done, "failed_step": None}


def run_scenario(project: Project, name: str, trigger: dict | None = None,
                 run_id: int | None = None, lock_owner: str | None = None,
                 wait: float = 2.0) -> dict:
    """Run scenario `name` once: steps in order, stop at the first failure; returns the record.

    Raises ConflictError when another process runs it. `run_id` / `lock_owner` continue a run
    record and a lock that a scheduler created for this process.
    """
    cfg = scenario_config(project, name)
    lock = ScenarioLock(project, name, owner=lock_owner)
    if not lock.acquire("running", wait=wait):
        message = lock.refused_message()
        if run_id is not None:
            end_run(project.engine, run_id, "SKIPPED", message)
        raise ConflictError(message)
    try:
        base = {"trigger": trigger or {"kind": "manual"}, "steps": [], "pid": os.getpid(),
                "owner": lock.owner, "step_count": len(cfg.get("steps", []))}
        if run_id is None:
            run_id = start_run(project.engine, "scenario", name, base)
        else:
            update_run_details(project, run_id, {"pid": os.getpid()})
        lock.attach_run(run_id)
        t0 = time.monotonic()
        with lock.keep_alive():
            status, error, details = _execute(project, name, run_id)
        details["seconds"] = round(time.monotonic() - t0, 3)
        end_run(project.engine, run_id, status, error, details)
        project.webhooks.emit_now("SCENARIO_RUN_FINISHED", {"scenario": name, "run": {
            "id": run_id, "status": status, "error": error}})
        log.info("scenario %s: run %s %s%s", name, run_id, status, f": {error}" if error else "")
    finally:
        lock.release()
    return get_run(project, run_id)


def list_scenarios(project: Project) -> list[dict]:
    """Every scenario with its triggers (and their state), steps, current and last run."""
    out = []
    for name in scenario_names(project):
        cfg = scenario_config(project, name)
        states = trigger_states(project, name)
        triggers = []
        for i, trig in enumerate(cfg.get("triggers", [])):
            key = trigger_key(i, trig)
            st = states.get(key, {})
            triggers.append({"key": key, "type": trig["type"], "params": trig.get("params", {}),
                             "fire_count": st.get("fire_count", 0), "last_fired": st.get("fired"),
                             "last_checked": st.get("checked"), "last_error": st.get("error"),
                             "error_count": st.get("error_count", 0)})
        holder = ScenarioLock(project, name).holder()
        last = project.runs("scenario", name, limit=1)
        out.append({"id": name, "description": cfg.get("description"),
                    "active": cfg.get("active", True), "triggers": triggers,
                    "steps": [step_label(i, s) for i, s in enumerate(cfg.get("steps", []))],
                    "running": None if holder is None or holder["purpose"] != "running" else
                    {"run_id": holder["run_id"], "owner": holder["owner"]},
                    "last_run": last[0] if last else None})
    return out


# ------------------------------------------------------------------ the scheduler
@dataclass
class _Child:
    scenario: str
    run_id: int
    owner: str
    proc: subprocess.Popen


class Scheduler:
    """Checks triggers of active scenarios and starts runs in subprocesses.

    Why subprocesses: a run trains models for minutes; in its own process it never holds the
    web server's GIL or event loop, and a crash in a step can't take the server down.
    `tick()` and `launch()` are synchronous (database work): call them from a thread when
    an event loop must stay responsive.
    """

    def __init__(self, project: Project, period: float = 5.0,
                 plugin_dirs: list[str] | tuple[str, ...] = (), python: str | None = None):
        self.project = project
        self.period = period
        self.plugin_dirs = [str(p) for p in plugin_dirs]
        self.python = python or sys.executable
        self.children: dict[str, _Child] = {}
        self.finished: list[dict] = []  # the last reaped runs: scenario, run_id, returncode
        self.finished_count = 0
        self._lock = threading.Lock()
        self._mtime = self._config_mtime()

    def _config_mtime(self) -> float:
        try:
            return self.project.config_path.stat().st_mtime
        except OSError:
            return 0.0

    def _reload_if_changed(self) -> None:
        mtime = self._config_mtime()
        if mtime != self._mtime:
            self._mtime = mtime
            try:
                self.project.reload()
                log.info("project.json changed: reloaded")
            except LabelloopError as exc:  # keep the last good config rather than stopping
                log.error("project.json changed but is invalid, keeping the previous one: %s", exc)

    def command(self, name: str, run_id: int, owner: str, trigger: dict) -> list[str]:
        """The command line of the process that runs one scenario run."""
        cmd = [self.python, "-m", "labelloop.cli", "--project", str(self.project.dir)]
        for d in self.plugin_dirs:
            cmd += ["--plugin-dir", d]
        return cmd + ["scenario", "run", name, "--run-id", str(run_id), "--lock-owner", owner,
                      "--trigger-json", json.dumps(trigger)]

    def _spawn(self, name: str, lock: ScenarioLock, trigger: dict) -> int:
        """Create the run record and start its process; the process takes over the lock."""
        run_id = start_run(self.project.engine, "scenario", name,
                           {"trigger": trigger, "steps": [], "owner": lock.owner,
                            "step_count": len(scenario_config(self.project, name).get("steps", []))})
        lock.attach_run(run_id)
        env = {**os.environ, "LABELLOOP_DATABASE_URL": self.project.database_url}
        try:
            proc = subprocess.Popen(self.command(name, run_id, lock.owner, trigger), env=env,
                                    stdin=subprocess.DEVNULL)
        except OSError as exc:
            end_run(self.project.engine, run_id, "FAILED", f"cannot start the run process: {exc}")
            lock.release()
            raise LabelloopError(f"scenario {name!r}: cannot start the run process: {exc}") from exc
        with self._lock:
            self.children[name] = _Child(name, run_id, lock.owner, proc)
        log.info("scenario %s: run %s started (pid %s), trigger %s", name, run_id, proc.pid,
                 trigger.get("key") or trigger.get("kind"))
        return run_id

    def launch(self, name: str, trigger: dict | None = None) -> int:
        """Start a run of `name` now, in the background; its run id. ConflictError if running."""
        scenario_config(self.project, name)
        self.reap()
        lock = ScenarioLock(self.project, name)
        if not lock.acquire("running", wait=2.0):
            raise ConflictError(lock.refused_message())
        return self._spawn(name, lock, trigger or {"kind": "manual"})

    def reap(self) -> list[dict]:
        """Collect finished run processes; close records a dead process left RUNNING."""
        done = []
        with self._lock:
            for name, child in list(self.children.items()):
                code = child.proc.poll()
                if code is None:
                    continue
                del self.children[name]
                done.append({"scenario": name, "run_id": child.run_id, "returncode": code})
                if code != 0 and get_run(self.project, child.run_id)["status"] == "RUNNING":
                    end_run(self.project.engine, child.run_id, "FAILED",
                            f"the scenario process exited with code {code} before recording "
                            "an end")
                ScenarioLock(self.project, name, owner=child.owner).release()
        self.finished = (self.finished + done)[-100:]
        self.finished_count += len(done)
        return done

    def tick(self) -> list[int]:
        """One pass: reap, then check the triggers of each idle active scenario; run ids started."""
        self.reap()
        self._reload_if_changed()
        started = []
        for name, cfg in sorted(self.project.config.get("scenarios", {}).items()):
            if not cfg.get("active", True) or not cfg.get("triggers") or name in self.children:
                continue
            lock = ScenarioLock(self.project, name)
            try:
                if not lock.acquire("checking"):
                    continue  # running elsewhere, or another process is checking it
                fired = check_triggers(self.project, name)
                if fired is None:
                    lock.release()
                    continue
                started.append(self._spawn(name, lock, fired))
            except Exception:  # one scenario's trouble never stops the others or the loop
                log.exception("scenario %s: scheduling failed", name)
                with contextlib.suppress(Exception):
                    lock.release()
        return started

    def running(self) -> dict[str, int]:
        """Scenario -> run id of the runs this scheduler started that are still going."""
        with self._lock:
            return {name: c.run_id for name, c in self.children.items()}

    def wait(self, timeout: float | None = None) -> None:
        """Wait for this scheduler's runs to end."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.running():
            if deadline is not None and time.monotonic() > deadline:
                return
            time.sleep(0.1)
            self.reap()

    def watch(self, max_runs: int | None = None, duration: float | None = None) -> int:
        """Tick every `period` seconds; stop after `max_runs` runs (once finished) or `duration` s."""
        t_end = None if duration is None else time.monotonic() + duration
        log.info("watching scenarios of %s every %ss", self.project.key, self.period)
        started = 0
        while True:
            t0 = time.monotonic()
            started += len(self.tick())
            if max_runs is not None and started >= max_runs:
                break  # start no more; wait below for the last ones to finish
            if t_end is not None and time.monotonic() >= t_end:
                break
            time.sleep(max(0.0, self.period - (time.monotonic() - t0)))
        self.wait()
        return self.finished_count
