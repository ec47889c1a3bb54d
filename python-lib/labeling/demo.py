"""`labelloop demo`: a ready-to-label project with the active-learning loop, then serve it.

The demo project holds a pool of items (by default the 1,797 hand-written digits of
``sklearn.datasets.load_digits`` as PNG files in a managed folder), a labeling webapp, the
Train classifier and Query Sampler recipes, and the ``active-learning`` scenario: every n
labels it retrains the classifier, re-ranks the pool, finds likely mislabeled items (the
``label_issues`` dataset; choice demos only) and records the labeling metrics.

The true labels are kept out of the pool, in ``ground_truth.csv`` at the project's root, for
simulated annotators (tests, benchmarks); the webapp never reads it. The pools themselves
are made in `labeling.demo_data`. The boxes demo (generated scenes, a detector in the loop,
its truth as COCO JSON in ``ground_truth.json``) is set up by `labeling.boxes.demo`.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import webbrowser
from pathlib import Path
from typing import Any

import click

from labelloop.errors import ConfigError, LabelloopError

from .boxes.demo import BOXES, N_SCENES
from .demo_data import DATA_TYPES, GENERATORS, SIMILARITY, SPANS, DemoData

DEFAULT_N = 20
SCENARIO = "active-learning"
GROUND_TRUTH = "ground_truth.csv"
PLUGIN = "ml-assisted-labeling"
SCHEDULER_PERIOD = 2.0  # seconds between trigger checks: the loop reacts within a label or two


# --------------------------------------------------------------------------- the project


def project_config(data: DemoData, n: int = DEFAULT_N) -> dict:
    """project.json of a demo project for ``data``."""
    folder_pool = data.files is not None
    pool = {"image": "images", "sound": "sounds"}.get(data.data_type, "unlabeled")
    train_inputs: dict[str, Any] = {"labels": "labels"}
    if folder_pool:
        train_inputs["folder"] = pool
    # The diversity-aware batch: one pick per cluster of uncertain items, a batch per retrain
    # (bench/bench_label_efficiency.py: above margin on digits and on a text task).
    sample_params: dict[str, Any] = {"strategy": "diverse_margin", "batch_size": n,
                                     "label_col": "label"}
    if data.id_column:
        sample_params["id_column"] = data.id_column
    webapp_params: dict[str, Any] = {
        "unlabeled": pool, "categories": data.categories, "labels_ds": "labels",
        "metadata_ds": "metadata", "label_col_name": "label", "queries_ds": "queries",
        "metrics_ds": "metrics",
    }
    if data.id_column:
        webapp_params["id_column"] = data.id_column
    if data.text_column:
        webapp_params["text_column"] = data.text_column
    datasets = {name: {} for name in ("labels", "metadata", "queries", "metrics",
                                      "label_issues")}
    if not folder_pool:
        datasets = {"unlabeled": {"description": "the pool of items to label"}, **datasets}
    return {
        "description": f"Labelloop demo: label {data.data_type} items; every {n} labels the "
                       "classifier retrains and the queue is re-ranked by uncertainty.",
        "datasets": datasets,
        "folders": {pool: {"path": pool, "description": "the pool of items to label"}}
        if folder_pool else {},
        "models": {"classifier": {}},
        "recipes": {
            "train": {"type": f"{PLUGIN}/train-classifier", "inputs": train_inputs,
                      "outputs": {"model": "classifier"},
                      "params": {"label_col": "label", "data_type": data.data_type}},
            "sample": {"type": f"{PLUGIN}/query-sampler",
                       "inputs": {"saved_model": "classifier", "unlabeled_samples": pool,
                                  "labels": "labels"},
                       "outputs": {"queries": "queries"}, "params": sample_params},
        },
        "webapps": {data.webapp: {"type": f"{PLUGIN}/{data.data_type}-labeling",
                                  "params": webapp_params}},
        "scenarios": {SCENARIO: {
            "description": f"Every {n} labels: retrain, re-rank the pool, find likely "
                           "mislabeled items, record metrics.",
            "triggers": [{"type": f"{PLUGIN}/every-n-labelings", "name": "every-n-labelings",
                          "params": {"i_labeling_count": n, "ds_metadata": "metadata",
                                     "ds_queries": "queries"}}],
            # Label issues after the re-rank: annotators get the new queue first.
            "steps": [{"recipe": "train"}, {"recipe": "sample"},
                      {"step": f"{PLUGIN}/label-issues", "name": "label-issues",
                       "params": {"ds_label_issues": "label_issues"}},
                      {"step": f"{PLUGIN}/labeling-metrics", "name": "labeling-metrics",
                       "params": {"ds_metrics": "metrics"}}],
        }},
    }


def spans_config(data: DemoData, n: int = DEFAULT_N) -> dict:
    """project.json of the spans demo: mark entities; every n labels a span tagger retrains
    and the pool is re-ranked by the smallest token margin (bench/bench_span_learning.py)."""
    config = project_config(data, n)
    config["description"] = (f"Labelloop spans demo: mark people, organisations, places and "
                             f"dates; every {n} labels the span tagger retrains and the "
                             "queue is re-ranked by its smallest token margin.")
    config["models"] = {"tagger": {}}
    # Label issues judge category labels (choice): not part of the spans loop.
    del config["datasets"]["label_issues"]
    scenario = config["scenarios"][SCENARIO]
    scenario["steps"] = [s for s in scenario["steps"] if s.get("name") != "label-issues"]
    scenario["description"] = f"Every {n} labels: retrain, re-rank the pool, record metrics."
    config["recipes"] = {
        "train": {"type": f"{PLUGIN}/train-span-tagger", "inputs": {"labels": "labels"},
                  "outputs": {"model": "tagger"},
                  "params": {"label_col": "label", "text_column": data.text_column,
                             "algorithm": "crf"}},
        "sample": {"type": f"{PLUGIN}/query-sampler",
                   "inputs": {"saved_model": "tagger", "unlabeled_samples": "unlabeled",
                              "labels": "labels"},
                   "outputs": {"queries": "queries"},
                   "params": {"strategy": "margin", "label_col": "label",
                              "id_column": data.id_column}},
    }
    params = config["webapps"][data.webapp]["params"]
    params["entity_types"] = params.pop("categories")
    params["overlapping_spans"] = False
    config["webapps"] = {data.webapp: {"type": f"{PLUGIN}/text-spans-labeling",
                                       "params": params}}
    return config


def similarity_config(data: DemoData) -> dict:
    """project.json of the similarity demo: digits to compare, pairs and an embedding."""
    return {
        "description": "Labelloop similarity demo: answer which digits are related to each "
                       "one; the embedding is tuned on your answers while you label.",
        "datasets": {"pairs": {}, "embeddings": {}, "neighbors": {}},
        "folders": {"images": {"path": "images", "description": "the digits to compare"}},
        "models": {"embedding": {}},
        "recipes": {
            "embed": {"type": f"{PLUGIN}/embed",
                      "inputs": {"saved_model": "embedding", "pool": "images"},
                      "outputs": {"embeddings": "embeddings"}, "params": {}},
            "find-similar": {"type": f"{PLUGIN}/find-similar",
                             "inputs": {"saved_model": "embedding", "pool": "images"},
                             "outputs": {"neighbors": "neighbors"}, "params": {"k": 10}},
        },
        "webapps": {"similar-digits": {"type": f"{PLUGIN}/similarity-labeling", "params": {
            "unlabeled": "images", "pairs_ds": "pairs", "model_name": "embedding",
            "examples_per_view": 2, "top_k": 8}}},
        "scenarios": {},
    }


def check_project(project: Any) -> None:
    """Validate every recipe, webapp, trigger and step of a project against its component."""
    from labelloop import flow
    from labelloop.descriptors import validate_config

    registry = project.registry
    for name in project.config.get("recipes", {}):
        flow.prepare(project, name)
    for name, app in project.config.get("webapps", {}).items():
        comp = registry.component(app["type"], "webapp")
        validate_config(f"{comp.type} (webapp {name!r})",
                        flow.effective_params(comp, registry), app.get("params"))
    for name, scenario in project.config.get("scenarios", {}).items():
        for trig in scenario.get("triggers", []):
            comp = registry.component(trig["type"], "trigger")
            validate_config(f"{comp.type} (scenario {name!r})", comp.params, trig.get("params"))
        for step in scenario.get("steps", []):
            if "step" in step:
                comp = registry.component(step["step"], "step")
                validate_config(f"{comp.type} (scenario {name!r})",
                                flow.effective_params(comp, registry), step.get("params"))


def create_demo(directory: str | Path, data_type: str = "image", n: int = DEFAULT_N,
                check: bool = True, scenes: int = N_SCENES, **project_options: Any) -> Any:
    """Create the demo project in ``directory`` (a new one; see ``open_or_create_demo``);
    ``scenes``: how many scenes the boxes demo generates."""
    from labelloop.project import Project

    if data_type == BOXES:
        return _create_boxes_demo(Path(directory), n, check, scenes, project_options)
    if data_type not in GENERATORS:
        raise ConfigError(f"unknown demo data {data_type!r}: use one of "
                          f"{', '.join((*GENERATORS, BOXES))}")
    if n < 1:
        raise ConfigError(f"--n must be at least 1 (labels between two retrains), got {n}")
    directory = Path(directory)
    data = GENERATORS[data_type]()
    config = similarity_config(data) if data_type == SIMILARITY else \
        spans_config(data, n) if data_type == SPANS else project_config(data, n)
    key = {"image": "DIGITS", "tabular": "IRIS", "text": "TEXTS", "sound": "TONES",
           "similarity": "SIMILAR", SPANS: "ENTITIES"}[data_type]
    # Files first: a project.json only appears once its data is complete, so an interrupted
    # run leaves a directory that the next run simply fills again.
    directory.mkdir(parents=True, exist_ok=True)
    if data.files is not None:
        pool = directory / next(iter(config["folders"].values()))["path"]
        pool.mkdir(parents=True, exist_ok=True)
        for rel, content in data.files.items():
            (pool / rel).write_bytes(content)
    data.truth.to_csv(directory / GROUND_TRUTH, index=False)
    project = Project.init(directory, key=key, config=config, **project_options)
    if data.rows is not None:
        project.dataset("unlabeled").write(data.rows)
    if check:
        _checked(project)
    return project


def _checked(project: Any) -> None:
    """Validate a new demo project; a broken one leaves no project.json behind, so the next
    run starts over rather than reusing it."""
    try:
        check_project(project)
    except LabelloopError:
        project.engine.dispose()
        for leftover in project.dir.glob("labelloop.db*"):
            leftover.unlink()
        (project.dir / "project.json").unlink()
        raise


def _create_boxes_demo(directory: Path, n: int, check: bool, scenes: int,
                       project_options: dict) -> Any:
    from labelloop.project import Project

    from .boxes.demo import boxes_config, write_scenes

    if n < 1:
        raise ConfigError(f"--n must be at least 1 (labels between two retrains), got {n}")
    directory.mkdir(parents=True, exist_ok=True)
    write_scenes(directory, scenes)  # files first, as for the other demos
    project = Project.init(directory, key="OBJECTS", config=boxes_config(n, SCENARIO),
                           **project_options)
    if check:
        _checked(project)
    return project


def demo_data_type(project: Any) -> str | None:
    """The data type of a demo project's webapp (None if it has none)."""
    for app in project.config.get("webapps", {}).values():
        kind = app["type"].rsplit("/", 1)[-1]
        if kind == "text-spans-labeling":
            return SPANS
        if kind == "image-boxes-labeling":
            return BOXES
        if kind.endswith("-labeling"):
            return kind[: -len("-labeling")]
    return None


def set_labeling_count(project: Any, n: int) -> bool:
    """Set n of the project's every-n-labelings triggers; True if project.json changed."""
    changed = False
    for scenario in project.config.get("scenarios", {}).values():
        for trig in scenario.get("triggers", []):
            if trig["type"] == f"{PLUGIN}/every-n-labelings":
                params = trig.setdefault("params", {})
                if params.get("i_labeling_count") != n:
                    params["i_labeling_count"] = n
                    changed = True
    if changed:
        project.save_config()
    return changed


def open_or_create_demo(directory: str | Path, data_type: str | None = None,
                        n: int | None = None, echo=click.echo, **project_options: Any) -> Any:
    """The demo project in ``directory``: reused when it exists, else created.

    ``project_options``: ``database_url``, ``plugin_dirs`` as for ``Project.open``.
    """
    from labelloop.project import Project

    directory = Path(directory)
    if (directory / "project.json").is_file():
        project = Project.open(directory, **project_options)
        existing = demo_data_type(project)
        echo(f"reusing the demo project {project.key} in {project.dir}")
        if data_type and existing and data_type != existing:
            echo(f"note: it holds {existing} data, not {data_type}; remove {directory} or pass "
                 "another --dir for a fresh demo")
        if n is not None and set_labeling_count(project, n):
            echo(f"retraining every {n} labels from now on")
        return project
    data_type = data_type or "image"
    echo(f"creating the {data_type} demo project in {directory.resolve()} ...")
    project = create_demo(directory, data_type, n or DEFAULT_N, **project_options)
    if data_type == SIMILARITY:
        echo(f"created project {project.key}: webapp {next(iter(project.config['webapps']))}")
        return project
    echo(f"created project {project.key}: webapp {next(iter(project.config['webapps']))}, "
         f"scenario {SCENARIO} (every {n or DEFAULT_N} labels)")
    return project


def webapp_url(project: Any, host: str, port: int) -> str:
    """The address of the demo's labeling page."""
    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/webapps/{next(iter(project.config['webapps']))}"


def open_when_ready(url: str, health: str, timeout: float = 60.0) -> threading.Thread:
    """Open ``url`` in a browser as soon as ``health`` answers (from a background thread)."""

    def wait_and_open() -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(health, timeout=2) as resp:
                    if json.loads(resp.read()).get("status") == "ok":
                        webbrowser.open(url)
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.2)

    thread = threading.Thread(target=wait_and_open, name="open-browser", daemon=True)
    thread.start()
    return thread


# --------------------------------------------------------------------------- the command


@click.command("demo")
@click.option("--dir", "directory", default="demo-project", show_default=True,
              type=click.Path(file_okay=False), help="Where the demo project lives (reused "
              "when it exists).")
@click.option("--data", "data_type",
              type=click.Choice((*DATA_TYPES, SIMILARITY, SPANS, BOXES)),
              default=None,
              help="What to label: image (digits, the default), tabular (iris), text "
                   "(generated sentences), sound (generated tones), similarity (which "
                   "digits are related: tunes an embedding), spans (entities in generated "
                   "sentences, with a span tagger in the loop) or boxes (objects to box in "
                   "generated scenes, with a detector in the loop).")
@click.option("--n", "n", type=click.IntRange(min=1), default=None,
              help=f"Retrain every n labels  [default: {DEFAULT_N}]")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--port", default=5006, show_default=True, type=click.IntRange(0, 65535),
              help="Port of the server.")
@click.option("--no-browser", is_flag=True, help="Don't open a browser (headless use).")
@click.option("--no-serve", is_flag=True, help="Only create the project; don't start the "
              "server.")
@click.pass_context
def demo_command(ctx: click.Context, directory: str, data_type: str | None, n: int | None,
                 host: str, port: int, no_browser: bool, no_serve: bool) -> None:
    """Create a demo project with the active-learning loop and serve its labeling page."""
    state = ctx.obj  # the CLI group's options: --database-url, --plugin-dir
    plugin_dirs = [str(d) for d in getattr(state, "plugin_dirs", None) or []]
    options: dict[str, Any] = {"plugin_dirs": plugin_dirs}
    if getattr(state, "database_url", None):
        options["database_url"] = state.database_url
    from labelloop.web import ServeOptions, check_port, free_port, serve

    if not no_serve and port:
        check_port(host, port)  # a busy port: one error line, and no project made for nothing
    project = open_or_create_demo(directory, data_type, n, **options)
    if no_serve:
        click.echo(f"serve it with: labelloop --project {project.dir} serve")
        return
    # The URL is printed (and opened) before the server binds: the port is checked again
    # now, so that the URL printed never points at another server.
    port = port or free_port(host)
    check_port(host, port)
    url = webapp_url(project, host, port)
    click.echo(f"labeling page: {url}")
    click.echo("every labeled item counts; the model retrains in the background. Ctrl-C stops.")
    if not no_browser:
        base = url.split("/webapps/")[0]
        open_when_ready(url, f"{base}/api/v1/health")
    serve(project, ServeOptions(host=host, port=port, period=SCHEDULER_PERIOD,
                                plugin_dirs=plugin_dirs))
