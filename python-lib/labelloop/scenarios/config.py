"""Scenarios as project.json declares them: names, settings, trigger keys and step labels."""

from __future__ import annotations

from ..errors import NotFoundError
from ..project import Project


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

