"""The boxes demo (`labelloop demo --data boxes`): generated scenes in a managed folder, their
truth beside the project as COCO JSON (read by pycocotools), the image-boxes webapp served
ready to draw: its page, config, batch (with each image's size), media, and an answer."""

from __future__ import annotations

import json

from conftest import wait_for

from labeling import demo
from labeling.boxes.demo import FOLDER, TRUTH_FILE, WEBAPP
from labeling.boxes.scenes import OBJECT_CLASSES

SCENES = 24  # the command makes 300; a few are enough to serve
ANN = {"X-Labelloop-User": "ann"}


def test_boxes_demo_serves_the_webapp_ready_to_draw(tmp_path, serve):
    from pycocotools.coco import COCO

    project = demo.create_demo(tmp_path / "d", "boxes", n=5, scenes=SCENES)
    assert project.key == "OBJECTS" and demo.demo_data_type(project) == "boxes"
    assert "boxes" in demo.demo_command.params[1].type.choices  # `--data boxes`
    truth = COCO(str(project.dir / TRUTH_FILE))
    images = {im["file_name"]: im for im in truth.loadImgs(truth.getImgIds())}
    assert len(images) == SCENES == len(project.folder(FOLDER).list())
    assert [c["name"] for c in truth.loadCats(truth.getCatIds())] == list(OBJECT_CLASSES)
    app = project.config["webapps"][WEBAPP]
    assert app["type"] == "ml-assisted-labeling/image-boxes-labeling"
    assert app["params"]["object_classes"] == OBJECT_CLASSES
    # The loop: every n labels the detector retrains and the Query Sampler re-ranks.
    recipes = project.config["recipes"]
    assert recipes["train"]["type"] == "ml-assisted-labeling/train-detector"
    assert recipes["sample"]["params"]["strategy"] == "box_max"
    assert recipes["sample"]["inputs"]["saved_model"] == recipes["train"]["outputs"]["model"]
    scenario = project.config["scenarios"][demo.SCENARIO]
    assert scenario["triggers"][0]["params"]["i_labeling_count"] == 5
    assert [s.get("recipe") or s["step"] for s in scenario["steps"]] == [
        "train", "sample", "ml-assisted-labeling/labeling-metrics"]

    srv = serve(project.dir, "--no-scheduler")
    page = srv.get(f"/webapps/{WEBAPP}")
    assert page.status == 200 and "text/html" in page.headers["Content-Type"]
    api = f"/api/v1/webapps/{WEBAPP}/"
    cfg = srv.get(api + "config").json()
    assert cfg["kind"] == "boxes"
    assert [(c["name"], c["key"]) for c in cfg["object_classes"]] == [
        (name, str(i + 1)) for i, name in enumerate(OBJECT_CLASSES)]
    def five():  # served once the folder is indexed
        items = srv.get(api + "batch?size=5", headers=ANN).json()["items"]
        if len(items) == 5:
            return items
        srv.post(api + "release", {"ids": [i["id"] for i in items]}, headers=ANN)
        return None

    items = wait_for(five, what="a batch of five scenes")
    for item in items:
        im = images[item["id"]]
        assert (item["data"]["width"], item["data"]["height"]) == (im["width"], im["height"])
    media = srv.get(api + items[0]["data"]["media"])
    assert media.status == 200 and media.body[:4] == b"\x89PNG"
    # The true boxes of the first image are a valid answer, stored as drawn.
    first = images[items[0]["id"]]
    boxes = [{"x": a["bbox"][0], "y": a["bbox"][1], "w": a["bbox"][2], "h": a["bbox"][3],
              "label": truth.loadCats(a["category_id"])[0]["name"]}
             for a in truth.loadAnns(truth.getAnnIds(imgIds=[first["id"]]))]
    r = srv.post(api + "labels", {"id": items[0]["id"], "boxes": boxes},
                 headers=ANN)
    assert r.status == 200, r.text
    stored = json.loads(project.dataset("labels").read()["label"].iloc[0])
    key = ("y", "x", "h", "w", "label")
    assert stored == sorted(boxes, key=lambda b: tuple(b[k] for k in key))
