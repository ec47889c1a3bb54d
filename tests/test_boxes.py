"""The image-boxes labeling webapp over HTTP (one real `labelloop serve` for the module): the
`boxes` kind's answers and storage, its refusals (a 400 naming the box, nothing written), its
suggestions from a detector's queries, the page's config (classes with colour and key) and
the images served by `media`."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import sqlalchemy as sa
from conftest import wait_for
from PIL import Image

from labeling.engine import annotations_table, session_variable
from labeling.kinds.boxes import dumps, image_size
from labelloop.project import Project

CLASSES = {"cat": "a cat", "dog": None, "bird": "a bird"}
WEBAPP = "boxes"
SIZES = {"a.png": (320, 200), "b.png": (100, 80), "sub/c.jpg": (64, 48), "d.png": (50, 50)}


def box(x, y, w, h, label="cat"):
    return {"x": x, "y": y, "w": w, "h": h, "label": label}


@pytest.fixture(scope="module")
def server(project_factory, serve_module, tmp_path_factory):
    directory = tmp_path_factory.mktemp("boxes") / "project"
    project = project_factory(directory, plugins=False, config={
        "folders": {"images": {"path": "images"}},
        "webapps": {WEBAPP: {"type": "ml-assisted-labeling/image-boxes-labeling",
                             "params": {"unlabeled": "images", "object_classes": CLASSES,
                                        "queries_ds": "queries"}}}})
    for rel, size in SIZES.items():
        path = directory / "images" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (200, 180, 20)).save(path)
    predicted = {"a.png": [box(10.5, 20, 30, 40, "dog") | {"score": 0.4},
                           box(1, 2, 3, 4) | {"score": 0.9},
                           box(0, 0, 5, 5, "zebra") | {"score": 0.99}],  # not a class: left out
                 "b.png": [], "sub/c.jpg": [box(1, 1, 10, 10, "bird") | {"score": 0.5}]}
    queries = pd.DataFrame({"path": list(predicted), "uncertainty": [0.9, 0.5, 0.3],
                            "prediction": [json.dumps(p) for p in predicted.values()],
                            "confidence": [0.4, 1.0, 0.5], "model_version": 7,
                            "query_rank": [0, 1, 2]})
    project.dataset("queries", create=True).write(queries)
    project.variables.incr(session_variable("queries"))
    return project, serve_module(directory, "--no-scheduler")


def api(srv, method, path, user="ann", **kwargs):
    return srv.request(method, f"/api/v1/webapps/{WEBAPP}/{path}",
                       headers={"X-Labelloop-User": user}, **kwargs)


def written(project: Project) -> tuple:
    with project.engine.connect() as conn:
        n = conn.execute(sa.select(sa.func.count()).select_from(annotations_table)).scalar_one()
    return (n, *(project.dataset(name, create=True).count() for name in ("labels", "metadata")))


def test_config_batch_suggestions_and_media(server):
    project, srv = server
    cfg = api(srv, "GET", "config").json()
    assert cfg["kind"] == "boxes" and cfg["data_type"] == "image"
    assert cfg["object_classes"] == [
        {"name": "cat", "description": "a cat", "colour": "#e6194b", "key": "1"},
        {"name": "dog", "description": None, "colour": "#3cb44b", "key": "2"},
        {"name": "bird", "description": "a bird", "colour": "#4363d8", "key": "3"}]
    assert [c["name"] for c in cfg["categories"]] == list(CLASSES)
    # The queries' images are served at once; the folder's others once it is indexed.
    def all_four():
        items = api(srv, "GET", "batch?size=4", user="viewer").json()["items"]
        if len(items) == len(SIZES):
            return items
        api(srv, "POST", "release", user="viewer", json_body={"ids": [i["id"] for i in items]})
        return None

    items = wait_for(all_four, what="the folder indexed")
    assert [i["id"] for i in items][:3] == ["a.png", "b.png", "sub/c.jpg"]  # the sampler's rank
    by_id = {i["id"]: i for i in items}
    for item_id, (w, h) in SIZES.items():
        assert (by_id[item_id]["data"]["width"], by_id[item_id]["data"]["height"]) == (w, h)
    assert by_id["a.png"]["suggestion"] == {"model_version": 7, "boxes": [
        {**box(1, 2, 3, 4), "score": 0.9}, {**box(10.5, 20, 30, 40, "dog"), "score": 0.4}]}
    assert by_id["b.png"]["suggestion"] == {"boxes": [], "model_version": 7}
    assert by_id["d.png"]["suggestion"] is None  # not in the queries: no suggestion
    # The page loads each image from the media route the item names.
    media = api(srv, "GET", by_id["sub/c.jpg"]["data"]["media"])
    assert media.status == 200 and media.headers["Content-Type"] == "image/jpeg"
    assert media.body[:2] == b"\xff\xd8"
    api(srv, "POST", "release", user="viewer", json_body={"ids": list(by_id)})


def test_boxes_are_stored_sorted_with_numbers_as_given(server):
    project, srv = server
    answer = [box(200, 150, 120, 50, "dog"), box(0, 0, 320, 200, "bird"),
              box(12.345, 20.5, 10.004, 7, "cat"), box(12.345, 20.5, 5, 7, "cat")]
    r = api(srv, "POST", "labels", json_body={"id": "a.png", "boxes": answer, "comment": "4"})
    assert r.status == 200, r.text
    assert r.json()["stats"]["per_label"] == {"cat": 2, "dog": 1, "bird": 1}
    # "nothing to box" is an answer, not a skip
    empty = api(srv, "POST", "labels", json_body={"id": "b.png", "boxes": []})
    assert empty.status == 200 and empty.json()["stats"]["skipped"] == 0
    labels = project.dataset("labels").read().sort_values("label_id")
    assert labels["path"].tolist() == ["a.png", "b.png"]
    expected = [box(0, 0, 320, 200, "bird"), box(12.35, 20.5, 5, 7), box(12.35, 20.5, 10.0, 7),
                box(200, 150, 120, 50, "dog")]
    assert json.loads(labels["label"].iloc[0]) == expected
    assert labels["label"].iloc[0] == dumps(answer)
    assert [type(b["x"]) for b in json.loads(labels["label"].iloc[0])] == [int, float, float, int]
    assert labels["label"].iloc[1] == "[]"
    meta = project.dataset("metadata").read().sort_values("label_id")
    assert json.loads(meta["label"].iloc[0]) == expected
    hist = api(srv, "GET", "annotations").json()["annotations"]
    assert [(a["id"], a["boxes"]) for a in hist] == [("b.png", []), ("a.png", expected)]


BAD = [  # (what, image, boxes, words the error must hold)
    ("right edge", "a.png", [box(1, 1, 5, 5), box(300, 10, 41, 20)],
     ["boxes/1", "x 300, y 10, w 41, h 20, label 'cat'", "x+w = 341 is outside the image",
      "320 px wide"]),
    ("bottom edge", "sub/c.jpg", [box(0, 40, 10, 8.01)], ["boxes/0", "y+h = 48.01", "48 px high"]),
    ("negative x", "a.png", [box(-1, 0, 5, 5)], ["boxes/0", "x = -1 is outside the image"]),
    ("negative y", "a.png", [box(0, -0.5, 5, 5)], ["boxes/0", "y = -0.5"]),
    ("no width", "a.png", [box(5, 5, 0, 5)], ["boxes/0", "no area", "w = 0"]),
    ("negative height", "a.png", [box(5, 5, 3, -2)], ["boxes/0", "no area", "h = -2"]),
    ("rounds to no area", "a.png", [box(5, 5, 0.001, 3)], ["boxes/0", "no area"]),
    ("unknown class", "a.png", [box(1, 1, 2, 2), box(1, 1, 3, 3, "zebra")],
     ["boxes/1", "unknown class 'zebra'", "'cat', 'dog', 'bird'"]),
    ("not a list", "a.png", {"x": 1}, ["boxes"]),
    ("no label", "a.png", [{"x": 1, "y": 1, "w": 2, "h": 2}], ["label"]),
    ("a string coordinate", "a.png", [box("1", 1, 2, 2)], ["x"]),
    ("an extra field", "a.png", [{**box(1, 1, 2, 2), "score": 0.5}], ["score"]),
]


def test_bad_boxes_are_a_400_naming_the_box_and_write_nothing(server):
    project, srv = server
    before = written(project)
    for what, image, boxes, words in BAD:
        r = api(srv, "POST", "labels", json_body={"id": image, "boxes": boxes})
        assert r.status == 400, f"{what}: {r.status} {r.text}"
        for word in words:
            assert word in r.json()["error"], f"{what}: {word!r} not in {r.json()['error']!r}"
        assert written(project) == before, what
    # A category instead of boxes: the route schema names the field to send.
    r = api(srv, "POST", "labels", json_body={"id": "d.png", "label": "cat"})
    assert r.status == 400 and "boxes" in r.json()["error"] and written(project) == before


def test_an_images_queue_score_is_its_least_sure_box():
    from labeling.kinds.boxes import BoxesKind

    kind = BoxesKind(None)
    assert kind.item_score([0.1, 0.4, float("nan")]) == 0.4 and kind.item_score([]) == 0.0
    scores = kind.item_scores([0.1, 0.4, 0.2, float("nan")], [2, 0, 1, 1])
    assert scores.tolist() == [0.4, 0.0, 0.2, 0.0]


def test_image_size_reads_the_header_and_follows_changes(tmp_path):
    path = tmp_path / "x.png"
    Image.new("L", (33, 21)).save(path)
    assert image_size(path) == (33, 21)
    Image.new("L", (40, 10)).save(path)
    assert image_size(path) == (40, 10)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(Exception, match="cannot read the size of image 'bad.png'"):
        image_size(tmp_path / "bad.png")


def test_the_webapp_as_a_label_studio_ml_backend(server):
    """`/api/v1/ml-backends/<webapp>/`: a `<RectangleLabels>` config gets the queries' boxes
    in percentages of the image with their scores; the webhook records rectangles as boxes."""
    from labeling.interop.labelstudio import make_label_config

    project, srv = server
    base = f"/api/v1/ml-backends/{WEBAPP}"
    config = make_label_config(list(CLASSES), "image", "image", kind="boxes")
    assert srv.post(f"{base}/setup", {"project": "1", "schema": config}).status == 200
    tasks = [{"id": 1, "data": {"image": "/data/upload/3/0a1b2c3d-a.png"}},
             {"id": 2, "data": {"image": "/data/local-files/?d=images/sub/c.jpg"}},
             {"id": 3, "data": {"image": "d.png"}}]
    r = srv.post(f"{base}/predict", {"tasks": tasks, "label_config": config})
    assert r.status == 200, r.text
    first, second, third = r.json()["results"]
    assert first["model_version"] == "7" and first["score"] == 0.9
    assert [(x["type"], x["value"]["rectanglelabels"], x["score"]) for x in first["result"]] == [
        ("rectanglelabels", ["cat"], 0.9), ("rectanglelabels", ["dog"], 0.4)]
    dog = first["result"][1]
    assert (dog["original_width"], dog["original_height"]) == (320, 200)
    assert dog["value"]["x"] == pytest.approx(10.5 / 320 * 100)
    assert dog["value"]["height"] == pytest.approx(40 / 200 * 100)
    assert [x["value"]["rectanglelabels"] for x in second["result"]] == [["bird"]]
    assert third["result"] == []  # not in the queries
    # A Label Studio annotation of d.png (50 x 50) becomes its boxes answer.
    result = [{"type": "rectanglelabels", "from_name": "label", "to_name": "image",
               "original_width": 50, "original_height": 50,
               "value": {"x": 10, "y": 20, "width": 50, "height": 30,
                         "rectanglelabels": ["bird"]}}]
    r = srv.post(f"{base}/webhook", {"action": "ANNOTATION_CREATED", "task": tasks[2],
                                     "annotation": {"id": 11, "completed_by": 4,
                                                    "result": result}})
    assert r.status == 201, r.text
    labels = project.dataset("labels").read().set_index("path")
    assert json.loads(labels.loc["d.png", "label"]) == [box(5, 10, 25, 15, "bird")]
    before = written(project)
    bad = [{**result[0], "value": {**result[0]["value"], "x": 90}}]  # beyond the right edge
    r = srv.post(f"{base}/webhook", {"action": "ANNOTATION_UPDATED", "task": tasks[2],
                                     "annotation": {"id": 11, "completed_by": 4, "result": bad}})
    assert r.status == 400 and "outside the image" in r.json()["error"]
    assert written(project) == before
