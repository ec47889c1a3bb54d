"""Boxes learning: the generated scenes and their COCO truth, region proposals, non-maximum
suppression, the detector and its saved form, the Train detector recipe, the Query Sampler
on a detector, and the loop's metrics step with mAP."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from labeling.boxes.detector import box_array, nms, read_image
from labeling.boxes.evaluate import mean_average_precision
from labeling.boxes.proposals import iou_matrix, propose
from labeling.boxes.regions import view
from labeling.boxes.scenes import OBJECT_CLASSES, make_scenes, write_truth


@pytest.fixture(scope="module")
def scenes_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scenes")
    return folder, make_scenes(folder, 24, seed=3)


def test_scenes_are_written_with_their_boxes_inside_and_apart(scenes_dir):
    folder, scenes = scenes_dir
    assert len(scenes) == 24
    for scene in scenes:
        with Image.open(folder / scene["path"]) as img:
            assert img.format == "PNG"
            assert img.size == (scene["width"], scene["height"])
            assert 160 <= img.width <= 320 and 160 <= img.height <= 320
            pixels = np.asarray(img.convert("L"), dtype=float)
        assert 1 <= len(scene["boxes"]) <= 5
        for box in scene["boxes"]:
            assert box["label"] in OBJECT_CLASSES
            assert box["w"] > 0 and box["h"] > 0
            assert 0 <= box["x"] and box["x"] + box["w"] <= scene["width"]
            assert 0 <= box["y"] and box["y"] + box["h"] <= scene["height"]
            # the ink is inside the box: darker than the scene's median
            inside = pixels[box["y"]:box["y"] + box["h"], box["x"]:box["x"] + box["w"]]
            assert inside.min() < np.median(pixels) - 40
        for i, a in enumerate(scene["boxes"]):
            for b in scene["boxes"][i + 1:]:
                assert (a["x"] + a["w"] <= b["x"] or b["x"] + b["w"] <= a["x"]
                        or a["y"] + a["h"] <= b["y"] or b["y"] + b["h"] <= a["y"])
    assert {s["background"] for s in scenes} == {"plain", "noise", "gradient", "texture"}
    assert {b["label"] for s in scenes for b in s["boxes"]} == set(OBJECT_CLASSES)


def test_scenes_are_the_same_for_the_same_seed(tmp_path, scenes_dir):
    _, scenes = scenes_dir
    again = make_scenes(tmp_path, 3, seed=3)
    assert again == scenes[:3]
    assert make_scenes(tmp_path / "other", 3, seed=4) != again


def test_truth_is_read_by_pycocotools(tmp_path, scenes_dir):
    _, scenes = scenes_dir
    write_truth(tmp_path / "truth.json", scenes)
    coco = COCO(str(tmp_path / "truth.json"))
    assert len(coco.getImgIds()) == len(scenes)
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(OBJECT_CLASSES)
    first = coco.loadAnns(coco.getAnnIds(imgIds=[1]))
    box = scenes[0]["boxes"][0]
    assert first[0]["bbox"] == [box["x"], box["y"], box["w"], box["h"]]
    assert json.loads((tmp_path / "truth.json").read_text())["images"][0]["width"] == scenes[0]["width"]


# --------------------------------------------------------------------------- proposals, NMS


def test_proposals_find_almost_every_object(scenes_dir):
    folder, scenes = scenes_dir
    best = []
    for scene in scenes:
        v = view(read_image(folder / scene["path"]))
        found = propose(v.contrast)
        assert len(found) < 100  # candidates, not a sliding window over the whole image
        assert (found[:, 2] > 0).all() and (found[:, 3] > 0).all()
        best += list(iou_matrix(box_array(scene["boxes"]), found).max(axis=1))
    assert np.mean(np.asarray(best) >= 0.5) >= 0.95
    # the fallback windows of the typical sizes stand around a piece of an object
    sizes = np.array([[20.0, 30.0]])
    blank = np.zeros((100, 100))
    blank[40:48, 50:54] = 100.0  # one small stroke
    boxes = propose(blank, sizes)
    assert any(np.allclose(b[2:], [20, 30]) for b in boxes)


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [30, 30, 10, 10], [2, 0, 10, 10],
                      [0, 0, 10, 20]], dtype=float)
    scores = np.array([0.6, 0.9, 0.5, 0.7, 0.8])
    # box 1 wins its cluster; 0 and 3 overlap it (IoU 0.68, 0.68); 4 overlaps 1 by 0.43
    assert nms(boxes, scores).tolist() == [1, 2]
    assert nms(boxes, scores, threshold=0.45).tolist() == [1, 4, 2]
    assert nms(np.empty((0, 4)), np.empty(0)).tolist() == []
    assert iou_matrix(boxes[:1], boxes[4:])[0, 0] == pytest.approx(0.5)


def test_mean_average_precision_is_cocoeval_at_iou_half():
    images = [{"width": 100, "height": 100, "boxes": [
        {"x": 10, "y": 10, "w": 20, "h": 20, "label": "a"},
        {"x": 50, "y": 50, "w": 20, "h": 20, "label": "b"}]}]
    exact = [[{**b, "score": 0.9} for b in images[0]["boxes"]]]
    assert mean_average_precision(images, exact, ["a", "b", "c"]) == {
        "map50": pytest.approx(1.0), "per_class": {"a": pytest.approx(1.0),
                                                   "b": pytest.approx(1.0), "c": None}}
    # shifted by a third of its size: IoU 0.5 -> still found; by half: IoU 1/3 -> missed
    moved = [[{"x": 10, "y": 15, "w": 20, "h": 20, "label": "a", "score": 0.9},
              {"x": 60, "y": 50, "w": 20, "h": 20, "label": "b", "score": 0.9}]]
    scores = mean_average_precision(images, moved, ["a", "b"])
    assert scores["per_class"]["a"] > 0.99 and scores["per_class"]["b"] == 0.0
    assert mean_average_precision(images, [[]], ["a", "b"])["map50"] == 0.0
