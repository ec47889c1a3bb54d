"""ML backend notify: START_TRAINING to a Label Studio ML backend, with Labelloop's labels.

The body is Label Studio's START_TRAINING webhook (`{"action", "project": {"id", "title",
"label_config"}}`) plus `tasks`: the labels dataset as Label Studio tasks with their
annotations (the shape of a Label Studio JSON export), so a backend can train on them without
calling back. Then the step asks the backend's `/setup` until its model_version changes (at
most `wait_seconds`), so the next step predicts with the retrained model.

Boxes (an image-boxes webapp's labels): the annotations are `rectanglelabels` results in
percentages of each image, its size read from the images (`folder`, else the managed folder
of the labeling webapp that writes the labels), and the built label config is a
`<RectangleLabels>` over the object classes given as `categories`.
"""

from __future__ import annotations

import os
import time

from labeling.boxes.formats import images_root, is_box_column
from labeling.interop.formats import labels_to_tasks
from labeling.interop.labelstudio import config_for
from labeling.interop.ml_client import MlBackendError, MlClient


def run(ctx):
    cfg = ctx.config
    project = ctx.project
    labels = project.dataset(cfg["ds_labels"])
    if not labels.exists():
        raise MlBackendError(f"the labels dataset {cfg['ds_labels']!r} has no data yet: label "
                             "some items before training the ML backend")
    frame = labels.read()
    data_type = "image" if "path" in frame.columns and "text" not in frame.columns else "text"
    data_key = cfg.get("data_key") or ("image" if data_type == "image" else "text")
    boxes = cfg["label_col"] in frame.columns and is_box_column(frame[cfg["label_col"]])
    label_config = config_for({**cfg, "data_key": data_key}, data_type,
                              "boxes" if boxes else "choice")
    sizes = None
    if boxes:  # Label Studio's rectangles are percentages of the image
        from labeling.kinds.boxes import image_size

        root = images_root(project, cfg["ds_labels"], {"folder": cfg.get("folder")})
        sizes = {p: image_size(root / p) for p in frame["path"].astype(str).unique()}
    meta = None
    if cfg.get("ds_metadata"):
        ds = project.dataset(cfg["ds_metadata"], create=True)
        meta = ds.read() if ds.exists() else None
    tasks = labels_to_tasks(frame, cfg["label_col"], meta, data_key=data_key,
                            text_column=cfg.get("text_column") or None,
                            label_config=label_config, sizes=sizes)
    password = cfg.get("auth_password") or os.environ.get("LABELLOOP_ML_BACKEND_PASSWORD") or ""
    client = MlClient(cfg["url"], timeout=float(cfg["timeout"]), retries=int(cfg["retries"]),
                      basic_auth=(cfg["auth_user"], password) if cfg.get("auth_user") else None)
    lsproject = f"{project.key}.0"
    before = client.setup(label_config, project=lsproject)
    answer = client.webhook(cfg["event"], {
        "project": {"id": 0, "title": project.key, "label_config": label_config},
        "tasks": tasks})
    ctx.details.update(url=cfg["url"], tasks=len(tasks), model_version_before=before,
                       answer=answer)
    # The label-studio-ml SDK answers with the training job's id, which becomes the model
    # version once the job has saved its result: wait for that one (a version that merely
    # differs from `before` can be an older job's, read while the new one is still writing).
    job = answer.get("job_id") if isinstance(answer, dict) else None
    target = None if job is None else str(job)
    deadline = time.monotonic() + float(cfg["wait_seconds"])
    version = before
    while time.monotonic() < deadline:
        version = client.setup(label_config, project=lsproject)
        if (version == target) if target is not None else (version != before):
            break
        time.sleep(0.5)
    else:
        if float(cfg["wait_seconds"]) > 0:
            waited = f"training job {target!r}" if target is not None else "a new version"
            raise MlBackendError(f"ML backend {cfg['url']} still reports model version "
                                 f"{version!r} {cfg['wait_seconds']} s after START_TRAINING "
                                 f"(waiting for {waited}): "
                                 "did its training fail? (see its log)")
    ctx.details.update(model_version=version)
    ctx.log.info("ML backend %s: trained on %d tasks, model version %s -> %s", cfg["url"],
                 len(tasks), before, version)
