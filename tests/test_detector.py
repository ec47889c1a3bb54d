"""Boxes learning: the generated scenes and their COCO truth, region proposals, non-maximum
suppression, the detector and its saved form, the Train detector recipe, the Query Sampler
on a detector, and the loop's metrics step with mAP."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

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
