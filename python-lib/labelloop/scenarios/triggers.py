"""Triggers: checking them (with the state they keep between checks) and their check history."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..errors import LabelloopError
from ..params import validate_config
from ..plugins import Component, PluginRegistry
from ..project import Project
from ..project.db import trigger_states_table
from ..project.leases import SYSTEM_CLOCK
from .config import scenario_config, trigger_key

log = logging.getLogger("labelloop.scenarios")


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

    def save(conn: sa.Connection) -> None:
        row = conn.execute(sa.select(t.c.fire_count, t.c.error_count).where(where)).first()
        counts = {"fire_count": (row[0] if row else 0) + fired,
                  "error_count": (row[1] if row else 0) + failed}
        if row is None:
            conn.execute(sa.insert(t).values(scenario=scenario, trigger=key,
                                             **{"state": {}, **values, **counts}))
        else:
            conn.execute(sa.update(t).where(where).values(**values, **counts))

    project.db.execute_write_fn(save)


def trigger_states(project: Project, scenario: str) -> dict[str, dict]:
    """Stored state and check history of the triggers of a scenario, by trigger key."""
    t = trigger_states_table
    with project.engine.connect() as conn:
        rows = conn.execute(sa.select(t).where(t.c.scenario == scenario)).mappings().all()
    return {r["trigger"]: {k: r[k] for k in ("state", "checked", "fired", "fire_count", "error",
                                              "error_count")} for r in rows}


def check_trigger(project: Project, scenario: str, index: int, trigger: dict,
                  clock: Any = None) -> bool:
    """Run one trigger's check; its state is saved when check returns (not when it raises).

    Call it while holding the scenario's lock, so two processes never update one state.
    """
    key = trigger_key(index, trigger)
    now = (clock or SYSTEM_CLOCK).time()
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
        # The same error again (bad settings fail every tick) is logged once, not every tick.
        previous = trigger_states(project, scenario).get(key, {}).get("error")
        log.log(logging.DEBUG if previous == message else logging.ERROR,
                "scenario %s: trigger %s failed: %s", scenario, key, message,
                exc_info=not isinstance(exc, LabelloopError) and previous != message)
        _save_trigger_state(project, scenario, key, {"checked": now, "error": message},
                            failed=True)
        return False
    values: dict[str, Any] = {"state": ctx.state, "checked": now, "error": None}
    if fired:
        values["fired"] = now
    _save_trigger_state(project, scenario, key, values, fired=fired)
    return fired


def trigger_config_problems(project: Project, scenario: str) -> list[str]:
    """What is wrong with the trigger settings of a scenario (bad type, params out of range)."""
    problems = []
    for index, trigger in enumerate(scenario_config(project, scenario).get("triggers", [])):
        key = trigger_key(index, trigger) if isinstance(trigger, dict) and "type" in trigger \
            else str(index)
        try:
            comp = project.registry.component(trigger["type"], "trigger")
            validate_config(f"{comp.type} (scenario {scenario!r}, trigger {key!r})",
                            comp.params, trigger.get("params"))
        except (LabelloopError, KeyError, TypeError) as exc:
            problems.append(str(exc))
    return problems


def check_triggers(project: Project, scenario: str, clock: Any = None) -> dict | None:
    """Check the triggers of a scenario in order; the first that fires, as run details, or None."""
    cfg = scenario_config(project, scenario)
    for index, trigger in enumerate(cfg.get("triggers", [])):
        if check_trigger(project, scenario, index, trigger, clock):
            return {"kind": "trigger", "key": trigger_key(index, trigger), "type": trigger["type"],
                    "index": index}
    return None

