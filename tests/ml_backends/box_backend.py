"""A Label Studio ML backend on the `label-studio-ml` SDK that answers `RectangleLabels`.

Run with the SDK's venv: `python box_backend.py PORT MODEL_DIR TRUTH.json`. It "detects" the
objects of each task's image from a COCO file of the true boxes (keyed by file name): a
stand-in for a YOLO backend, enough to check the protocol end to end. The first box of an
image gets score 0.9, the others 0.6 (an image with more objects is less sure); every other
image's results leave out `original_width` / `original_height`, as some backends do.
`fit` (START_TRAINING from Labelloop's ml-backend-notify step) counts the annotated boxes
that, back in pixels, are true boxes of their image; the model version then says how many.
"""

import json
import sys
from pathlib import PurePosixPath

from label_studio_ml.api import init_app
from label_studio_ml.model import LabelStudioMLBase

TRUTH = {}


def load_truth(path):
    doc = json.load(open(path))
    names = {c["id"]: c["name"] for c in doc["categories"]}
    for im in doc["images"]:
        TRUTH[PurePosixPath(im["file_name"]).name] = (im["width"], im["height"], [])
    by_id = {im["id"]: PurePosixPath(im["file_name"]).name for im in doc["images"]}
    for a in doc["annotations"]:
        TRUTH[by_id[a["image_id"]]][2].append((a["bbox"], names[a["category_id"]]))


class BoxModel(LabelStudioMLBase):
    # The SDK 1.0.9 trains on annotation events only; Labelloop asks with START_TRAINING.
    TRAIN_EVENTS = (*LabelStudioMLBase.TRAIN_EVENTS, "START_TRAINING")

    def fit(self, tasks, workdir=None, **kwargs):
        matched = 0
        for task in (kwargs.get("data") or {}).get("tasks") or []:
            name = PurePosixPath(str(task["data"].get("path", ""))).name
            true = TRUTH.get(name, (1, 1, []))[2]
            for ann in task.get("annotations") or []:
                for r in ann.get("result") or []:
                    v, w, h = r["value"], r["original_width"], r["original_height"]
                    box = [v["x"] * w / 100, v["y"] * h / 100, v["width"] * w / 100,
                           v["height"] * h / 100]
                    matched += any(label == v["rectanglelabels"][0] and all(
                        abs(a - b) < 0.01 for a, b in zip(box, bbox, strict=True))
                        for bbox, label in true)
        return {"matched": matched}

    def predict(self, tasks, **kwargs):
        from_name, info = next(iter(self.parsed_label_config.items()))
        to_name, value = info["to_name"][0], info["inputs"][0]["value"]
        out = []
        for k, task in enumerate(tasks):
            name = PurePosixPath(str(task["data"].get(value, ""))).name
            width, height, boxes = TRUTH.get(name, (1, 1, []))
            result = []
            for i, ((x, y, w, h), label) in enumerate(boxes):
                item = {"from_name": from_name, "to_name": to_name, "type": "rectanglelabels",
                        "score": 0.9 if i == 0 else 0.6,
                        "value": {"x": x * 100 / width, "y": y * 100 / height,
                                  "width": w * 100 / width, "height": h * 100 / height,
                                  "rotation": 0, "rectanglelabels": [label]}}
                if k % 2 == 0:
                    item.update(original_width=width, original_height=height)
                result.append(item)
            matched = (self.train_output or {}).get("matched")
            out.append({"result": result, "model_version":
                        "boxes-1" if matched is None else f"boxes-matched-{matched}"})
        return out


if __name__ == "__main__":
    port, model_dir = int(sys.argv[1]), sys.argv[2]
    load_truth(sys.argv[3])
    app = init_app(BoxModel, model_dir=model_dir)
    app.run(host="127.0.0.1", port=port, debug=False, threaded=True)
