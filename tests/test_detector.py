"""Boxes learning: the generated scenes and their COCO truth, region proposals, non-maximum
suppression, the detector and its saved form, the Train detector recipe, the Query Sampler
on a detector, and the loop's metrics step with mAP."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from pycocotools.coco import COCO
from skops.io import get_untrusted_types

from labeling import demo, stopping
from labeling.boxes.demo import FOLDER, boxes_config
from labeling.boxes.detector import (
    MAX_SIDE,
    Analysis,
    BoxDetector,
    box_array,
    nms,
    read_image,
    shrink,
)
from labeling.boxes.evaluate import mean_average_precision
from labeling.boxes.proposals import iou_matrix, propose
from labeling.boxes.regions import view
from labeling.boxes.sampling import Scored, box_strategies, score_analyses, suggested_boxes
from labeling.boxes.scenes import OBJECT_CLASSES, make_scenes, write_truth
from labeling.boxes.training import train_detector
from labeling.training import TRUSTED_TYPES
from labelloop import flow, scenarios
from labelloop.errors import LabelloopError, UntrustedModelError
from labelloop.project import Project
from labelloop.project.models import load_skops


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


# --------------------------------------------------------------------------- the recipes


def boxes_project(make_project, n_scenes: int = 26, every: int = 10):
    """The boxes demo's project (without its webapp) over a few generated scenes."""
    config = boxes_config(every, demo.SCENARIO)
    config.pop("webapps")  # the image-boxes webapp is not part of these tests
    config["scenarios"][demo.SCENARIO]["steps"][2]["params"]["min_new_labels"] = every
    project = make_project(config=config)
    scenes = make_scenes(project.dir / FOLDER, n_scenes, seed=5)
    return project, scenes


def record_boxes(project: Project, scenes: list[dict], session: int = 0,
                 boxes_of=lambda s: s["boxes"]) -> None:
    """Labels and metadata rows as the image-boxes webapp writes them."""
    labels = project.dataset("labels")
    start = labels.count() if labels.exists() else 0
    paths = [s["path"] for s in scenes]
    cells = [json.dumps(boxes_of(s)) for s in scenes]
    ids = np.arange(start, start + len(scenes), dtype=np.int64)
    rows = pd.DataFrame({"path": paths, "label": cells, "label_id": ids})
    now = pd.Timestamp(dt.datetime.now(dt.UTC))
    meta = pd.DataFrame({"date": [now] * len(paths), "data_id": paths,
                         "comment": [None] * len(paths), "session": [session] * len(paths),
                         "status": ["LABELED"] * len(paths), "annotator": ["ann"] * len(paths),
                         "label": cells, "label_id": ids})
    if labels.exists():
        labels.append(rows)
        project.dataset("metadata").append(meta)
    else:
        labels.write(rows)
        project.dataset("metadata").write(meta)


def test_train_detector_saves_a_model_that_loads_without_pickle_and_detects(make_project):
    project, scenes = boxes_project(make_project)
    record_boxes(project, scenes[:14])
    flow.run_recipe(project, "train", show_progress=False)
    saved = project.model("detector")
    (meta,) = saved.versions()
    assert meta["kind"] == "boxes" and meta["classes"] == sorted(OBJECT_CLASSES)
    metrics = meta["metrics"]
    assert metrics["cv"] == "5-fold" and metrics["train_rows"] == 14
    assert 0.3 < metrics["map50"] <= 1.0  # learned something from 14 images
    assert set(metrics["per_class_ap"]) == set(OBJECT_CLASSES)
    assert metrics["map50"] == pytest.approx(np.mean(list(metrics["per_class_ap"].values())))
    assert metrics["boxes"] == sum(len(s["boxes"]) for s in scenes[:14])
    # skops, no pickle: the detector is the one type skops must be told to trust
    path = project.dir / meta["file"]
    with pytest.raises(UntrustedModelError, match="labeling.boxes.detector.BoxDetector"):
        load_skops(path)
    assert get_untrusted_types(file=path) == ["labeling.boxes.detector.BoxDetector"]
    detector = saved.load(meta["version"], trusted=TRUSTED_TYPES)
    assert isinstance(detector, BoxDetector)
    scene = scenes[20]
    found = detector.detect(read_image(project.dir / FOLDER / scene["path"]))
    assert found and all(set(b) == {"x", "y", "w", "h", "label", "score"} for b in found)
    assert [b["score"] for b in found] == sorted((b["score"] for b in found), reverse=True)
    sure = [b for b in found if b["score"] >= 0.5]
    iou = iou_matrix(box_array(scene["boxes"]), box_array(sure))
    assert (iou.max(axis=1) >= 0.5).mean() >= 0.5  # finds most objects of an unseen scene


def test_train_detector_refuses_what_it_cannot_learn_from(make_project, tmp_path):
    project, scenes = boxes_project(make_project, n_scenes=6)
    root = project.dir / FOLDER

    def frame(rows):
        return pd.DataFrame(rows, columns=["path", "label"])

    truth = [(s["path"], json.dumps(s["boxes"])) for s in scenes]
    with pytest.raises(LabelloopError, match="2 labeled image.*at least 3 to train"):
        train_detector(frame(truth[:2] + [(scenes[2]["path"], None)]), folder_root=root)
    with pytest.raises(LabelloopError, match="have no box at all: draw boxes"):
        train_detector(frame([(p, "[]") for p, _ in truth]), folder_root=root)
    outside = [{"x": scenes[0]["width"] - 5, "y": 0, "w": 10, "h": 10, "label": "zero"}]
    with pytest.raises(LabelloopError, match=r"labels row 1 \(scene-0000.png\): box 0 .*outside"):
        train_detector(frame([(scenes[0]["path"], json.dumps(outside))] + truth[1:]),
                       folder_root=root)
    with pytest.raises(LabelloopError, match="not in folder"):
        train_detector(frame(truth), folder_root=tmp_path)
    with pytest.raises(LabelloopError, match="set the recipe's 'folder' input role"):
        train_detector(frame(truth))
    with pytest.raises(LabelloopError, match="no column 'path'"):
        train_detector(frame(truth).rename(columns={"path": "file"}), folder_root=root)
    # few images: trained, cross-validation skipped with the reason; an empty image is fine
    result = train_detector(frame(truth[:4] + [(scenes[4]["path"], "[]")]), folder_root=root)
    assert result.n_images == 5 and result.metrics["cv"].startswith("skipped: 5 labeled")
    assert result.metrics["map50"] is None and "1 of the 5 labeled images have no box" \
        in result.notes[0]
    # through the recipe: the one-line error, nothing saved
    record_boxes(project, scenes[:2])
    with pytest.raises(LabelloopError, match="at least 3 to train"):
        flow.run_recipe(project, "train", show_progress=False)
    assert project.model("detector", create=True).versions() == []


# --------------------------------------------------------------------------- Query Sampler


def analysis(*proba) -> Analysis:
    """Proposals side by side (30 px apart) with the given [background, a, b] probabilities."""
    boxes = np.array([[30.0 * i, 0, 20, 20] for i in range(len(proba))]).reshape(-1, 4)
    return Analysis(boxes, np.asarray(proba, dtype=float).reshape(-1, 3))


def test_strategies_put_the_image_with_a_half_seen_object_first():
    detector = BoxDetector()
    detector.classes = ["a", "b"]
    sure, bg = [0.02, 0.95, 0.03], [0.97, 0.02, 0.01]
    seen = analysis(sure, [0.03, 0.02, 0.95], bg, bg)
    half_seen = analysis(sure, bg, [0.52, 0.3, 0.18], bg)  # an object the model half-sees
    unsure_class = analysis(sure, [0.1, 0.5, 0.4], bg)  # an object, but which class?
    empty = analysis(bg, bg)
    images = [seen, empty, unsure_class, half_seen]
    registry = box_strategies()
    for name in ("box_max", "box_mean", "margin", "near_threshold"):
        scores = registry.get(name).func(Scored(images, [suggested_boxes(detector, a)
                                                          for a in images]))
        assert int(np.argmax(scores)) == 3, name  # the half-seen object first
        assert scores[0] < scores[3] and scores[1] < scores[3], name
    # the formulas: the box terms, and the near-threshold term (w = 1 - |0.48 - 0.5| / 0.25)
    scored = score_analyses(detector, images, "box_max")
    near = 1 - abs(0.48 - 0.5) / 0.25
    # (the half-seen proposal is a weak box of "a": background is its top class, 0.52)
    assert scored["uncertainty"] == pytest.approx([0.05, 0.0, 0.5, 0.48 + near])
    assert score_analyses(detector, images, "box_mean")["uncertainty"] == pytest.approx(
        [0.05, 0.0, (0.05 + 0.5) / 2, (0.05 + 0.48) / 2 + near])
    assert score_analyses(detector, images, "margin")["uncertainty"] == pytest.approx(
        [0.08, 0.0, 0.9, 0.78 + near])
    # the suggestions: boxes scored >= 0.3 with their scores; the confidence
    first = json.loads(scored["prediction"][0])
    assert first == [{"x": 0.0, "y": 0.0, "w": 20.0, "h": 20.0, "label": "a", "score": 0.95},
                     {"x": 30.0, "y": 0.0, "w": 20.0, "h": 20.0, "label": "b", "score": 0.95}]
    assert json.loads(scored["prediction"][1]) == []
    assert scored["confidence"] == pytest.approx([0.95, 1.0, 0.5, 1 - near])
    assert len(json.loads(scored["prediction"][3])) == 2  # 0.3 of "a": suggested, weak


def test_query_sampler_ranks_images_with_suggested_boxes(make_project):
    project, scenes = boxes_project(make_project, n_scenes=24)
    record_boxes(project, scenes[:12])
    flow.run_recipe(project, "train", show_progress=False)
    project.config["recipes"]["sample"]["params"]["strategy"] = "box_max"
    project.save_config()
    flow.run_recipe(project, "sample", show_progress=False)
    queries = project.dataset("queries").read()
    assert list(queries.columns) == ["path", "uncertainty", "prediction", "confidence",
                                     "model_version", "query_rank"]
    assert set(queries["path"]) == {s["path"] for s in scenes[12:]}
    assert queries["uncertainty"].is_monotonic_decreasing
    assert queries["query_rank"].tolist() == list(range(12))
    assert set(queries["model_version"]) == {"1"} and queries["confidence"].between(0, 1).all()
    assert project.variables.get("queries_session") == 1
    truth = {s["path"]: s for s in scenes}
    for path, pred in zip(queries["path"], queries["prediction"], strict=True):
        for b in json.loads(pred):
            assert set(b) == {"x", "y", "w", "h", "label", "score"} and 0.3 <= b["score"] <= 1
            assert b["label"] in OBJECT_CLASSES
            assert 0 <= b["x"] and b["x"] + b["w"] <= truth[path]["width"]
    # the default strategy (margin) has its box meaning; a classifier's batch one does not
    params = project.config["recipes"]["sample"]["params"]
    params.update(strategy="margin", max_queries=5)
    project.save_config()
    flow.run_recipe(project, "sample", show_progress=False)
    assert len(project.dataset("queries").read()) == 5
    project.config["recipes"]["sample"]["params"]["strategy"] = "diverse_margin"
    project.save_config()
    with pytest.raises(LabelloopError, match="unknown query strategy 'diverse_margin'; known "
                                             "strategies: box_max, box_mean, margin"):
        flow.run_recipe(project, "sample", show_progress=False)


def test_every_n_loop_trains_ranks_and_records_map50(make_project):
    project, scenes = boxes_project(make_project, n_scenes=26, every=10)
    record_boxes(project, scenes[:10])
    name = demo.SCENARIO
    assert scenarios.check_triggers(project, name) is not None
    run = scenarios.run_scenario(project, name)
    assert run["status"] == "SUCCESS", run["error"]
    assert scenarios.check_triggers(project, name) is None  # it counts labels again
    record_boxes(project, scenes[10:19], session=1)
    assert scenarios.check_triggers(project, name) is None  # 9 labels: not yet
    record_boxes(project, scenes[19:20], session=1)
    assert scenarios.check_triggers(project, name) is not None
    run = scenarios.run_scenario(project, name)
    assert run["status"] == "SUCCESS", run["error"]
    metrics = project.dataset("metrics").read()
    assert metrics["labels"].tolist() == [10, 20]
    assert metrics["model_version"].tolist() == [1, 2]
    assert metrics["auc"].isna().all()
    versions = project.model("detector").versions()
    assert metrics["map50"].tolist() == pytest.approx([v["metrics"]["map50"] for v in versions])
    assert metrics["map50"].between(0, 1).all()
    assert pd.isna(metrics["contradictions"].iloc[0])
    assert 0.0 <= metrics["contradictions"].iloc[1] <= 1.0
    assert len(project.dataset("queries").read()) == 6


def test_stall_watches_map50_where_there_is_no_auc():
    flat = {"auc": [None] * 3, "f1": [None] * 3, "map50": [0.951, 0.955, 0.953],
            "contradictions": [0.03, 0.031, 0.03]}
    assert stopping.stall(flat) == pytest.approx({"auc": 0.004, "contradictions": 0.001})
    assert "mAP@0.5 for a detector" in stopping.warnings_from_history(flat)[0]
    assert stopping.stall({**flat, "map50": [0.5, 0.7, 0.9]}) is None


def test_a_large_image_is_analysed_shrunk_and_answered_in_its_own_pixels(scenes_dir):
    folder, scenes = scenes_dir
    detector = BoxDetector().fit([read_image(folder / s["path"]) for s in scenes[:8]],
                                 [s["boxes"] for s in scenes[:8]], sorted(OBJECT_CLASSES))
    small = read_image(folder / scenes[9]["path"])
    h, w = small.shape[:2]
    big = np.asarray(Image.fromarray(small).resize((w * 6, h * 6), Image.Resampling.NEAREST))
    assert max(big.shape) > MAX_SIDE
    shrunk, scale = shrink(big)
    assert max(shrunk.shape[:2]) == MAX_SIDE and scale == pytest.approx(MAX_SIDE / max(big.shape))
    detector.window_sizes = np.empty((0, 2))  # (the fallback windows scale with the image)
    found = detector.analyse(big)
    expected = detector.analyse(shrunk)
    np.testing.assert_allclose(found.boxes, expected.boxes / scale)  # in the big image's pixels
    np.testing.assert_allclose(found.proba, expected.proba)
    assert (found.boxes[:, 0] + found.boxes[:, 2] <= big.shape[1] + 1e-6).all()


def test_the_page_charts_a_detectors_map50_in_place_of_auc():
    from labeling import ui

    fig = ui._metrics_chart(ui.KIND_SCORES["boxes"])
    legend = [item.label["value"] for item in fig.legend[0].items]
    assert legend == ["mAP@0.5", "contradictions"]
    assert {r.glyph.y for r in fig.renderers} == {"map50", "contradictions"}
    assert "map50" in fig.renderers[0].data_source.data
    assert ui.KIND_SCORES.get("choice", "auc") == "auc"
