"""Box formats of `dataset import|export`: COCO (read by pycocotools), YOLO and Pascal VOC (a
directory or a .zip) and Label Studio `rectanglelabels`; every round trip keeps every box to
within one pixel, a Label Studio export is read back, and bad files are refused by name with
nothing imported."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from labelloop.errors import LabelloopError
from labelloop.formats import export_file, import_file

CLASSES = {"cat": None, "dog": None, "bird": None}
SIZES = {"a.png": (320, 200), "sub/b.png": (97, 61), "big.png": (4000, 3000),
         "empty.png": (50, 40)}
BOXES = {
    "a.png": [{"x": 0, "y": 0, "w": 320, "h": 200, "label": "bird"},
              {"x": 12.35, "y": 20.5, "w": 10.01, "h": 7, "label": "cat"},
              {"x": 200, "y": 150, "w": 119.99, "h": 50, "label": "dog"}],
    "sub/b.png": [{"x": 1, "y": 2, "w": 3, "h": 4, "label": "dog"},
                  {"x": 33.33, "y": 20.2, "w": 63.67, "h": 40.8, "label": "cat"}],
    "big.png": [{"x": 1234.56, "y": 7.89, "w": 2000, "h": 2500.5, "label": "bird"},
                {"x": 3999, "y": 2999, "w": 1, "h": 1, "label": "cat"}],
    "empty.png": [],
}


@pytest.fixture
def project(make_project):
    project = make_project(plugins=False, config={
        "folders": {"images": {"path": "images"}},
        "webapps": {"boxes": {"type": "ml-assisted-labeling/image-boxes-labeling",
                              "params": {"unlabeled": "images", "object_classes": CLASSES}}}})
    for rel, size in SIZES.items():
        path = project.dir / "images" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", size, 200).save(path)
    import pandas as pd

    from labeling.kinds.boxes import dumps

    project.dataset("labels", create=True).write(pd.DataFrame({
        "path": list(BOXES), "label": [dumps(b) for b in BOXES.values()],
        "label_id": range(1, len(BOXES) + 1)}))
    return project


def read_back(project, name) -> dict[str, list[dict]]:
    df = project.dataset(name).read()
    return {p: json.loads(v) for p, v in zip(df["path"], df["label"], strict=True)}


def assert_within_a_pixel(got: dict, expected: dict = BOXES) -> None:
    assert set(got) == set(expected)
    for path, boxes in expected.items():
        assert len(got[path]) == len(boxes), path
        for g, e in zip(got[path], boxes, strict=True):
            assert g["label"] == e["label"], (path, g, e)
            for k in ("x", "y", "w", "h"):
                assert abs(g[k] - e[k]) <= 1, (path, k, g, e)
            assert 0 <= g["x"] and g["x"] + g["w"] <= SIZES[path][0]
            assert 0 <= g["y"] and g["y"] + g["h"] <= SIZES[path][1]


def test_coco_round_trip_read_by_pycocotools(project, tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    out = tmp_path / "boxes.json"
    assert export_file(project, "labels", out, "coco") == 7
    coco = COCO(str(out))
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES)
    images = {im["file_name"]: im for im in coco.loadImgs(coco.getImgIds())}
    assert {p: (im["width"], im["height"]) for p, im in images.items()} == SIZES
    b = images["sub/b.png"]
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[b["id"]]))
    assert sorted(a["bbox"] for a in anns) == [[1, 2, 3, 4], [33.33, 20.2, 63.67, 40.8]]
    assert coco.getAnnIds(imgIds=[images["empty.png"]["id"]]) == []
    # The file is good ground truth: boxes detected as drawn score an AP@0.5 of 1.
    found = coco.loadRes([{**a, "score": 0.9} for a in coco.loadAnns(coco.getAnnIds())])
    ev = COCOeval(coco, found, "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[1] == pytest.approx(1.0)

    counts = import_file(project, "back", out, "coco")
    assert counts == {"back": 4}
    assert read_back(project, "back") == BOXES  # COCO keeps the numbers as written


@pytest.mark.parametrize("fmt,target", [("yolo", "yolo"), ("yolo", "yolo.zip"),
                                        ("voc", "voc"), ("voc", "voc.zip")])
def test_yolo_and_voc_round_trips(project, tmp_path, fmt, target):
    out = tmp_path / target
    assert export_file(project, "labels", out, fmt) == 4
    if fmt == "yolo" and target == "yolo":
        assert (out / "classes.txt").read_text() == "cat\ndog\nbird\n"
        assert (out / "empty.txt").read_text() == ""
        first = (out / "sub" / "b.txt").read_text().splitlines()[0].split()
        assert first[0] == "1" and float(first[1]) == pytest.approx(2.5 / 97)
    if fmt == "voc" and target == "voc":
        xml = (out / "sub" / "b.xml").read_text()
        assert "<filename>b.png</filename>" in xml and "<width>97</width>" in xml
        assert "<xmin>33.33</xmin>" in xml and "<xmax>97</xmax>" in xml
    options = {"images": str(project.dir / "images")} if fmt == "yolo" else {}
    import_file(project, "back", out, fmt, options=options)
    got = read_back(project, "back")
    assert_within_a_pixel(got)
    if fmt == "voc":
        assert got == BOXES
    # Exported again into the same directory: the files are replaced.
    if not target.endswith(".zip"):
        assert export_file(project, "labels", out, fmt) == 4


def test_label_studio_rectanglelabels_round_trip(project, tmp_path):
    out = tmp_path / "ls.json"
    assert export_file(project, "labels", out, "label-studio") == 4
    tasks = json.loads(out.read_text())
    b = next(t for t in tasks if t["data"]["path"] == "sub/b.png")
    result = b["annotations"][0]["result"]
    assert [r["type"] for r in result] == ["rectanglelabels"] * 2
    first = result[0]
    assert (first["original_width"], first["original_height"]) == (97, 61)
    assert first["value"]["x"] == pytest.approx(100 / 97)
    assert first["value"]["height"] == pytest.approx(400 / 61)
    assert first["value"]["rectanglelabels"] == ["dog"]
    assert b["data"]["image"].endswith("/api/v1/webapps/boxes/media?id=sub%2Fb.png")
    import_file(project, "ls", out, "label-studio")
    got = read_back(project, "ls_labels")
    assert got == BOXES  # percentages converted back exactly (2 decimals)


def test_label_studio_predictions_become_queries(project, tmp_path):
    """A Label Studio file with box predictions (a detector's) is a queries dataset whose
    `prediction` holds the boxes in pixels with their scores."""
    task = {"id": 5, "data": {"image": "/data/upload/a.png", "path": "a.png"}, "predictions": [{
        "model_version": "yolo-1", "score": 0.25, "result": [
            {"type": "rectanglelabels", "from_name": "label", "to_name": "image",
             "original_width": 320, "original_height": 200, "score": 0.8,
             "value": {"x": 25, "y": 50, "width": 12.5, "height": 10,
                       "rectanglelabels": ["dog"]}}]}]}
    path = tmp_path / "pred.json"
    path.write_text(json.dumps([task]))
    import_file(project, "tasks", path, "label-studio", options={"predictions": "queries"})
    q = project.dataset("queries").read()
    assert json.loads(q["prediction"].iloc[0]) == [
        {"x": 80, "y": 100, "w": 40, "h": 20, "label": "dog", "score": 0.8}]
    assert q["uncertainty"].iloc[0] == pytest.approx(0.75)
    assert q["model_version"].iloc[0] == "yolo-1"


def test_bad_box_files_are_refused_by_name(project, tmp_path):
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": 320, "height": 200}],
            "categories": [{"id": 1, "name": "cat"}],
            "annotations": [{"id": 9, "image_id": 1, "category_id": 1, "bbox": [300, 0, 30, 5]}]}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(coco))
    with pytest.raises(LabelloopError, match=r"image 1 \(a.png\).*x\+w = 330 is outside the "
                                             r"image \(320 px wide\).*nothing was imported"):
        import_file(project, "bad", path, "coco")
    out = tmp_path / "yolo"
    export_file(project, "labels", out, "yolo")
    with pytest.raises(LabelloopError, match="-o images=DIR"):
        import_file(project, "bad", out, "yolo")
    (out / "a.txt").write_text("7 0.5 0.5 0.1 0.1\n")
    with pytest.raises(LabelloopError, match=r"a.txt: line 1: class 7 is not in classes.txt"):
        import_file(project, "bad", out, "yolo", options={"images": str(project.dir / "images")})
    with pytest.raises(LabelloopError, match="unknown option 'images' for voc import"):
        import_file(project, "bad", out, "voc", options={"images": "x"})
    assert not project.dataset("bad", create=True).exists()


def test_the_command_line_exports_and_imports_a_yolo_directory(project, tmp_path, run_cli):
    out = tmp_path / "yolo-cli"
    done = run_cli(project.dir, "dataset", "export", "labels", str(out), "--format", "yolo")
    assert "exported 4 rows" in done.stdout and (out / "classes.txt").is_file()
    done = run_cli(project.dir, "dataset", "import", "back", str(out), "--format", "yolo",
                   "-o", f"images={project.dir / 'images'}")
    assert "imported 4 rows into back" in done.stdout
    assert_within_a_pixel(read_back(project, "back"))
    # A directory is no CSV: one clear line, nothing imported.
    bad = run_cli(project.dir, "dataset", "import", "csvdir", str(out), "--format", "csv",
                  check=False)
    assert bad.returncode == 1 and "is a directory: a csv import reads a file" in bad.stderr
