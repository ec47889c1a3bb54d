"""The scheduler: checks the triggers of active scenarios and starts runs in subprocesses."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from ..errors import ConflictError, LabelloopError
from ..project import Project, end_run, start_run
from ..project.leases import SYSTEM_CLOCK, owner_for_pid
from .config import scenario_config, scenario_names
from .launcher import RunLauncher, run_imports
from .lock import ScenarioLock
from .runs import close_interrupted_runs
from .triggers import check_triggers, trigger_config_problems

log = logging.getLogger("labelloop.scenarios")


def _signal_group(proc: Any, sig: int) -> None:
    """Send `sig` to the process group a run process leads (to the process if it has none)."""
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)



@dataclass
class _Child:
    scenario: str
    run_id: int
    owner: str
    proc: Any  # subprocess.Popen, or a launcher.WarmProcess (the same methods)


class Scheduler:
    """Checks triggers of active scenarios and starts runs in subprocesses.

    Why subprocesses: a run trains models for minutes; in its own process it never holds the
    web server's GIL or event loop, and a crash in a step can't take the server down.
    `tick()` and `launch()` are synchronous (database work): call them from a thread when
    an event loop must stay responsive. Its bookkeeping (locks, run records, trigger states)
    is written through the project's writer thread (`project.db`).
    """

    def __init__(self, project: Project, period: float = 5.0,
                 plugin_dirs: list[str] | tuple[str, ...] = (), python: str | None = None,
                 clock: Any = None):
        self.project = project
        self.period = period
        self.plugin_dirs = [str(p) for p in plugin_dirs]
        self.python = python or sys.executable
        # Runs are forked from a warm parent that has imported their libraries (launcher.py).
        self.launcher = RunLauncher(self.python, lambda: run_imports(project.registry))
        # Trigger check times, lock expiry and the period of `watch` (tests pass a ManualClock);
        # run processes are waited for in real time.
        self.clock = clock or SYSTEM_CLOCK
        self.children: dict[str, _Child] = {}
        self.finished: list[dict] = []  # the last reaped runs: scenario, run_id, returncode
        self.finished_count = 0
        self._lock = threading.Lock()
        self._mtime = self._config_mtime()
        self._check_configs()

    def _check_configs(self) -> None:
        """Say at start (and at each reload) which scenarios have invalid trigger settings."""
        for name in scenario_names(self.project):
            problems = trigger_config_problems(self.project, name)
            if problems:
                log.error("scenario %s: invalid trigger settings (fix project.json; the check "
                          "is recorded as failed until then): %s", name, "; ".join(problems))

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
                self._check_configs()
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
        run_id = start_run(self.project.db, "scenario", name,
                           {"trigger": trigger, "steps": [], "owner": lock.owner,
                            "step_count": len(scenario_config(self.project, name).get("steps", []))})
        lock.attach_run(run_id)
        env = {**os.environ, "LABELLOOP_DATABASE_URL": self.project.database_url}
        try:
            # Its own session and process group: a Ctrl-C meant for the server (the terminal
            # signals the whole foreground group) does not cut a run short; stop() ends runs
            # on purpose.
            proc = self.launcher.popen(self.command(name, run_id, lock.owner, trigger), env)
        except OSError as exc:
            end_run(self.project.db, run_id, "FAILED", f"cannot start the run process: {exc}")
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
        lock = ScenarioLock(self.project, name, clock=self.clock)
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
                if code != 0:
                    close_interrupted_runs(self.project, child.run_id,
                                           f"the scenario process exited with code {code} "
                                           "before recording an end")
                for owner in (child.owner, owner_for_pid(child.owner, child.proc.pid)):
                    ScenarioLock(self.project, name, owner=owner, clock=self.clock).release()
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
            lock = ScenarioLock(self.project, name, clock=self.clock)
            try:
                if not lock.acquire("checking"):
                    continue  # running elsewhere, or another process is checking it
                fired = check_triggers(self.project, name, clock=self.clock)
                if fired is None:
                    lock.release()
                    continue
                started.append(self._spawn(name, lock, fired))
            except Exception:  # one scenario's trouble never stops the others or the loop
                log.exception("scenario %s: scheduling failed", name)
                with contextlib.suppress(Exception):
                    lock.release()
        return started

    def stop(self, timeout: float = 10.0) -> list[int]:
        """Interrupt the runs this scheduler started and wait for them; their run ids.

        Each run's process group gets SIGTERM (the run records its end as FAILED,
        "interrupted", with the recipe run it was in); one still there after `timeout`
        seconds is killed, and its records are closed here.
        """
        with self._lock:
            children = list(self.children.values())
        for child in children:
            if child.proc.poll() is None:
                log.info("scenario %s: interrupting run %s (pid %s)", child.scenario,
                         child.run_id, child.proc.pid)
                _signal_group(child.proc, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in children:
            try:
                child.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("scenario %s: run %s did not stop within %ss: killed", child.scenario,
                            child.run_id, timeout)
                _signal_group(child.proc, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.proc.wait(timeout=5)
        for child in children:
            close_interrupted_runs(self.project, child.run_id,
                                   "interrupted: the server stopped during the run")
        self.reap()
        self.launcher.close()  # a later run starts another warm parent
        return [c.run_id for c in children]

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
        clock = self.clock
        t_end = None if duration is None else clock.time() + duration
        log.info("watching scenarios of %s every %ss", self.project.key, self.period)
        started = 0
        while True:
            t0 = clock.time()
            started += len(self.tick())
            if max_runs is not None and started >= max_runs:
                break  # start no more; wait below for the last ones to finish
            if t_end is not None and clock.time() >= t_end:
                break
            clock.sleep(self.period - (clock.time() - t0))
        self.wait()
        return self.finished_count
