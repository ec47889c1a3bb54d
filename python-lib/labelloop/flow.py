"""Running a recipe instance of the flow: resolve roles, validate config, call it, record it."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError, LabelloopError, NotFoundError
from .params import validate_config
from .plugins import Component, PluginRegistry
from .progress import tracker
from .project import Dataset, Folder, Project, SavedModel, end_run, start_run

Handle = Dataset | Folder | SavedModel
KIND_FLAGS = {"dataset": "acceptsDataset", "folder": "acceptsManagedFolder",
              "model": "acceptsSavedModel"}
KIND_WORDS = {"dataset": "a dataset", "folder": "a managed folder", "model": "a saved model"}


def effective_params(component: Component, registry: PluginRegistry) -> list[dict]:
    """The component's params, with choices computed by its code where it asks for that.

    A param with `"getChoicesFromPython": true` gets its selectChoices from the component
    module's `param_choices(param_name, registry)` (e.g. strategies registered by plugins).
    """
    params = component.params
    if not any(p.get("getChoicesFromPython") for p in params):
        return params
    chooser = None
    try:
        chooser = component.entry("param_choices")
    except LabelloopError:
        return params
    out = []
    for p in params:
        if p.get("getChoicesFromPython"):
            choices = chooser(p["name"], registry)
            if choices is not None:
                p = {**p, "selectChoices": list(choices)}
        out.append(p)
    return out


@dataclass
class RecipeContext:
    """What a recipe's `run(ctx)` receives."""

    project: Project
    recipe: str
    component: Component
    config: dict
    inputs: dict[str, list[Handle]]
    outputs: dict[str, list[Handle]]
    log: logging.Logger
    progress: Callable[..., Iterator]  # progress.track logging to `log`
    run_id: int | None = None
    details: dict[str, Any] = field(default_factory=dict)  # recorded with the run

    @property
    def registry(self) -> PluginRegistry:
        return self.project.registry

    def input(self, role: str) -> Handle | None:
        """The first object of an input role, or None."""
        items = self.inputs.get(role) or []
        return items[0] if items else None

    def output(self, role: str) -> Handle | None:
        items = self.outputs.get(role) or []
        return items[0] if items else None


def _recipe_config(project: Project, name: str) -> dict:
    recipes = project.config.get("recipes", {})
    if name not in recipes:
        raise NotFoundError(f"unknown recipe {name!r} (recipes: {', '.join(sorted(recipes)) or 'none'})")
    return recipes[name]


def _resolve_role(project: Project, recipe: str, role: dict, names: list[str], output: bool
                  ) -> list[Handle]:
    where = f"recipe {recipe!r}, {'output' if output else 'input'} role {role['name']!r}"
    if role.get("required") and not names:
        raise ConfigError(f"{where} is required: give it {_accepted(role)} in project.json")
    if role.get("arity", "UNARY") == "UNARY" and len(names) > 1:
        raise ConfigError(f"{where} takes one object, got {len(names)}: {', '.join(names)}")
    handles: list[Handle] = []
    for obj in names:
        kind = _kind_of(project, obj, role, output)
        if not role.get(KIND_FLAGS[kind], kind == "dataset"):
            raise ConfigError(f"{where}: {obj!r} is {KIND_WORDS[kind]}, but this role accepts "
                              f"only {_accepted(role)}")
        if kind == "folder":
            handles.append(project.folder(obj))
        elif kind == "model":
            handles.append(project.model(obj, create=output))
        else:
            handles.append(project.dataset(obj, create=output))
    return handles


def _kind_of(project: Project, obj: str, role: dict, output: bool) -> str:
    if obj in project.config.get("folders", {}):
        return "folder"
    if obj in project.model_names():
        return "model"
    if obj in project.dataset_names():
        return "dataset"
    if output:  # a new output takes the kind the role accepts
        if role.get("acceptsSavedModel") and not role.get("acceptsDataset", True):
            return "model"
        if role.get("acceptsManagedFolder") and not role.get("acceptsDataset", True):
            return "folder"
        return "dataset"
    raise NotFoundError(f"recipe input {obj!r} is not a dataset, folder or saved model of the "
                        f"project (datasets: {', '.join(project.dataset_names()) or 'none'}; "
                        f"folders: {', '.join(project.config.get('folders', {})) or 'none'}; "
                        f"models: {', '.join(project.model_names()) or 'none'})")


def _accepted(role: dict) -> str:
    kinds = [KIND_WORDS[k] for k, flag in KIND_FLAGS.items() if role.get(flag, k == "dataset")]
    return " or ".join(kinds) or "nothing (the role accepts no object type)"


def prepare(project: Project, name: str) -> RecipeContext:
    """Check a recipe instance (component, roles, params) without running it or writing anything."""
    cfg = _recipe_config(project, name)
    comp = project.registry.component(cfg["type"], "recipe")
    desc = comp.descriptor
    inputs, outputs = cfg.get("inputs", {}), cfg.get("outputs", {})
    ctx_roles: dict[str, dict[str, list[Handle]]] = {"in": {}, "out": {}}
    for key, given, roles, output in (("in", inputs, desc.get("inputRoles", []), False),
                                      ("out", outputs, desc.get("outputRoles", []), True)):
        known = {r["name"] for r in roles}
        unknown = sorted(set(given) - known)
        if unknown:
            raise ConfigError(f"recipe {name!r}: {comp.type} has no {'output' if output else 'input'}"
                              f" role {', '.join(map(repr, unknown))} (roles: {', '.join(sorted(known))})")
        for role in roles:
            names = given.get(role["name"], [])
            names = [names] if isinstance(names, str) else list(names)
            ctx_roles[key][role["name"]] = _resolve_role(project, name, role, names, output)
    config = validate_config(f"{comp.type} (recipe {name!r})",
                             effective_params(comp, project.registry), cfg.get("params"))
    log = logging.getLogger(f"labelloop.recipe.{name}")
    return RecipeContext(project, name, comp, config, ctx_roles["in"], ctx_roles["out"], log,
                         tracker(log))


def run_recipe(project: Project, name: str, show_progress: bool | None = None,
               trigger: str | None = None) -> dict:
    """Run the recipe instance `name`; returns its run record. Raises on failure (recorded)."""
    ctx = prepare(project, name)
    if show_progress is not None:
        ctx.progress = tracker(ctx.log, bar=show_progress)
    for handles in ctx.outputs.values():  # declare new outputs so they show in the project
        for h in handles:
            section = {"Dataset": "datasets", "SavedModel": "models"}.get(type(h).__name__)
            if section and h.name not in project.config.get(section, {}):
                project.declare(section, h.name)
    details = {"type": ctx.component.type, "trigger": trigger}
    run_id = start_run(project.engine, "recipe", name, details)
    ctx.run_id = run_id
    t0 = time.monotonic()
    try:
        ctx.component.entry()(ctx)
    except (KeyboardInterrupt, SystemExit):  # Ctrl-C, SIGTERM: the run ends, recorded
        end_run(project.engine, run_id, "FAILED", "interrupted",
                {**ctx.details, "seconds": round(time.monotonic() - t0, 3)})
        raise
    except Exception as exc:
        message = str(exc) if isinstance(exc, LabelloopError) else \
            f"{type(exc).__name__}: {exc}"
        end_run(project.engine, run_id, "FAILED", message,
                {**ctx.details, "traceback": traceback.format_exc(limit=20),
                 "seconds": round(time.monotonic() - t0, 3)})
        if isinstance(exc, LabelloopError):
            raise
        raise LabelloopError(f"recipe {name!r} failed: {message}") from exc
    end_run(project.engine, run_id, "SUCCESS", None,
            {**ctx.details, "seconds": round(time.monotonic() - t0, 3)})
    return project.runs("recipe", name, limit=1)[0]


def recipe_for_output(project: Project, obj: str) -> str:
    """The recipe instance whose outputs include `obj`."""
    producers = [name for name, cfg in project.config.get("recipes", {}).items()
                 if any(obj == o or (isinstance(o, list) and obj in o)
                        for o in cfg.get("outputs", {}).values())]
    if not producers:
        raise NotFoundError(f"no recipe of the flow outputs {obj!r}: add one to project.json, or "
                            "import the data with `labelloop dataset import`")
    return producers[0]


def build(project: Project, obj: str, show_progress: bool | None = None,
          trigger: str | None = None) -> dict:
    """Run the recipe that outputs `obj` (a dataset, folder or saved model)."""
    return run_recipe(project, recipe_for_output(project, obj), show_progress, trigger)
