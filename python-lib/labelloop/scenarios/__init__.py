"""Scenarios: triggers that fire, steps that run in order, one lock per scenario, run history.

A scenario of project.json has `triggers` (trigger components with params) and `steps`
(`{"recipe": NAME}`, `{"build": DATASET}` or `{"step": "plugin/step-id", "params": {...}}`).
`run_scenario` runs the steps once, in order, stopping at the first failure. The `Scheduler`
checks the triggers of every active scenario and starts a run, in a subprocess, when one fires.

Why a lock row in the database: a `watch` process and a `serve` process (or two of either)
may look at the same project; the lock makes sure a scenario never runs twice at once. The
lock is also held while triggers are checked, so trigger state is read and written by one
process at a time. Its owner refreshes it (heartbeat); a crashed owner's lock expires.

| module | what it owns |
|---|---|
| `config.py` | scenarios as project.json declares them; trigger keys, step labels |
| `lock.py` | `ScenarioLock`: a `labelloop.project.leases.Lease` per scenario |
| `triggers.py` | checking triggers, their kept state and check history |
| `steps.py` | running the steps in order, recording each |
| `runs.py` | scenario run records (over `labelloop.project.runs`) |
| `runner.py` | `run_scenario` (one run, under the lock) and `list_scenarios` |
| `scheduler.py` | `Scheduler`: ticks, run subprocesses, reaping, stopping |
| `launcher.py` | `RunLauncher`: run processes forked from a warm parent that imported their libraries |
"""

from .config import scenario_config, scenario_names, step_label, trigger_key
from .lock import DEFAULT_LOCK_TTL, ScenarioLock, lock_ttl, new_owner, owner_for_pid, owner_is_gone
from .runner import list_scenarios, run_scenario
from .runs import close_interrupted_runs, get_run, scenario_runs, update_run_details
from .scheduler import Scheduler
from .steps import StepContext
from .triggers import (
    TriggerContext,
    check_trigger,
    check_triggers,
    trigger_config_problems,
    trigger_states,
)

__all__ = [
    "DEFAULT_LOCK_TTL", "ScenarioLock", "Scheduler", "StepContext", "TriggerContext",
    "check_trigger", "check_triggers", "close_interrupted_runs", "get_run", "list_scenarios",
    "lock_ttl", "new_owner", "owner_for_pid", "owner_is_gone", "run_scenario", "scenario_config",
    "scenario_names", "scenario_runs", "step_label", "trigger_config_problems", "trigger_key",
    "trigger_states", "update_run_details",
]
