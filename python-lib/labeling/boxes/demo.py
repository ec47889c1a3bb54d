"""`labelloop demo --data boxes`: generated scenes to box, a detector in the loop.

The pool is a managed folder of generated scenes (`labeling.boxes.scenes`: 1-5 digits of
three classes on varied backgrounds); their true boxes are kept beside the project, out of
the webapp's reach, as COCO JSON (``ground_truth.json``) for simulated annotators and
benchmarks. The project has the image-boxes labeling webapp, the Train detector and Query
Sampler recipes, and the every-n scenario: every n labels the detector retrains, the pool is
re-ranked by detection uncertainty (`box_max`: the least sure box plus the proposals near
the object threshold, `labeling.boxes.sampling`) with the detector's boxes as suggestions,
and the labeling metrics (mAP@0.5) are recorded.
"""

from __future__ import annotations

from pathlib import Path

BOXES = "boxes"
N_SCENES = 300
TRUTH_FILE = "ground_truth.json"
WEBAPP = "label-objects"
FOLDER = "images"
PLUGIN = "ml-assisted-labeling"
SEED = 0


def boxes_config(n: int, scenario: str) -> dict:
    """project.json of the boxes demo (``n``: labels between two retrains)."""
    from .scenes import OBJECT_CLASSES

    return {
        "description": f"Labelloop boxes demo: draw boxes around the digits 0, 4 and 7; every "
                       f"{n} labels the detector retrains and the queue is re-ranked by "
                       "detection uncertainty, with its boxes as suggestions.",
        "datasets": {name: {} for name in ("labels", "metadata", "queries", "metrics")},
        "folders": {FOLDER: {"path": FOLDER, "description": "the scenes to box"}},
        "models": {"detector": {}},
        "recipes": {
            "train": {"type": f"{PLUGIN}/train-detector",
                      "inputs": {"labels": "labels", "folder": FOLDER},
                      "outputs": {"model": "detector"}, "params": {"label_col": "label"}},
            "sample": {"type": f"{PLUGIN}/query-sampler",
                       "inputs": {"saved_model": "detector", "unlabeled_samples": FOLDER,
                                  "labels": "labels"},
                       "outputs": {"queries": "queries"},
                       "params": {"strategy": "box_max", "label_col": "label"}},
        },
        "webapps": {WEBAPP: {"type": f"{PLUGIN}/image-boxes-labeling", "params": {
            "unlabeled": FOLDER, "object_classes": dict(OBJECT_CLASSES), "labels_ds": "labels",
            "metadata_ds": "metadata", "label_col_name": "label", "queries_ds": "queries",
            "metrics_ds": "metrics"}}},
        "scenarios": {scenario: {
            "description": f"Every {n} labels: retrain the detector, re-rank the pool, record "
                           "metrics.",
            "triggers": [{"type": f"{PLUGIN}/every-n-labelings", "name": "every-n-labelings",
                          "params": {"i_labeling_count": n, "ds_metadata": "metadata",
                                     "ds_queries": "queries"}}],
            "steps": [{"recipe": "train"}, {"recipe": "sample"},
                      {"step": f"{PLUGIN}/labeling-metrics", "name": "labeling-metrics",
                       "params": {"ds_metrics": "metrics"}}],
        }},
    }


def write_scenes(directory: Path, scenes: int = N_SCENES) -> list[dict]:
    """The demo's scenes in its folder, their truth in ``TRUTH_FILE`` beside the project."""
    from .scenes import make_scenes, write_truth

    made = make_scenes(Path(directory) / FOLDER, scenes, SEED)
    write_truth(Path(directory) / TRUTH_FILE, made)
    return made

