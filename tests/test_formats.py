"""dataset import|export: JSON Lines, Label Studio JSON and COCO round trips; bad files."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from labelloop.errors import LabelloopError
from labelloop.formats import export_file, import_file

CHOICES = ["cat", "dog", "bird"]


def _result(label: str) -> list[dict]:
    return [{"from_name": "animal", "to_name": "text", "type": "choices",
             "value": {"choices": [label]}}]


LS_TASKS = [
    {"id": 11, "data": {"text": "a small cat", "source": "web"},
     "annotations": [{"id": 101, "completed_by": 3, "result": _result("cat"),
                      "created_at": "2026-01-02T03:04:05Z", "was_cancelled": False}],
     "predictions": [{"model_version": "v7", "score": 0.9, "result": _result("cat")}]},
    {"id": 12, "data": {"text": "a barking dog", "source": "book"},
     "annotations": [{"id": 102, "completed_by": 5, "result": _result("dog")}],
     "predictions": [{"model_version": "v7", "score": 0.4, "result": _result("bird")}]},
    {"id": 13, "data": {"text": "something unlabeled", "source": "web"},
     "predictions": [{"model_version": "v7", "score": 0.6, "result": _result("dog")}]},
]


@pytest.fixture
def project(make_project):
    return make_project(plugins=False)


def test_jsonl_round_trip_and_bad_line(project, tmp_path, run_cli):
    frame = pd.DataFrame({"id": ["a", "b", "c"], "n": [1, 2, 3], "x": [0.5, None, 1.5],
                          "text": ["é", "two\nlines", ""]})
    project.dataset("things", create=True).write(frame)
    out = tmp_path / "things.jsonl"
    assert export_file(project, "things", out) == 3
    lines = out.read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[1]) == {"id": "b", "n": 2, "x": None, "text": "two\nlines"}
    counts = import_file(project, "copy", out)
    assert counts == {"copy": 3}
    pd.testing.assert_frame_equal(project.dataset("copy").read(), project.dataset("things").read())

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a"}\n\n{"id": "b",}\n')
    with pytest.raises(LabelloopError, match=r"bad.jsonl: line 3 is not valid JSON"):
        import_file(project, "broken", bad)
    assert not project.dataset("broken", create=True).exists()
    bad.write_text('{"id": "a"}\n[1, 2]\n')
    result = run_cli(project.dir, "dataset", "import", "broken", str(bad), check=False)
    assert result.returncode != 0 and "line 2 is a JSON list, not an object" in result.stderr
    assert not project.dataset("broken", create=True).exists()


def test_label_studio_import_then_export_keeps_ids_labels_annotators(project, tmp_path):
    src = tmp_path / "ls-export.json"
    src.write_text(json.dumps(LS_TASKS))
    counts = import_file(project, "items", src, options={"predictions": "queries",
                                                          "labels": "labels",
                                                          "metadata": "metadata"})
    assert counts == {"items": 3, "queries": 3, "labels": 2, "metadata": 2}
    items = project.dataset("items").read()
    assert items["task_id"].tolist() == ["11", "12", "13"]
    assert items["text"].tolist() == ["a small cat", "a barking dog", "something unlabeled"]

    # Predictions become a queries dataset: most uncertain first, with the model version.
    queries = project.dataset("queries").read()
    assert queries["task_id"].tolist() == ["12", "13", "11"]
    assert queries["uncertainty"].round(6).tolist() == [0.6, 0.4, 0.1]
    assert queries["prediction"].tolist() == ["bird", "dog", "cat"]
    assert queries["model_version"].tolist() == ["v7", "v7", "v7"]

    meta = project.dataset("metadata").read()
    assert meta["annotator"].tolist() == ["label-studio:3", "label-studio:5"]
    assert meta["label_id"].tolist() == [101, 102]

    out = tmp_path / "back.json"
    assert export_file(project, "labels", out, "label-studio",
                       {"metadata": "metadata", "from_name": "animal"}) == 2
    back = json.loads(out.read_text())
    assert [t["id"] for t in back] == [11, 12]
    assert [t["data"]["text"] for t in back] == ["a small cat", "a barking dog"]
    assert [t["data"]["source"] for t in back] == ["web", "book"]
    anns = [t["annotations"][0] for t in back]
    assert [a["id"] for a in anns] == [101, 102]
    assert [a["completed_by"] for a in anns] == [3, 5]
    assert [a["result"][0]["value"]["choices"] for a in anns] == [["cat"], ["dog"]]
    assert anns[0]["result"][0]["from_name"] == "animal"
    assert anns[0]["created_at"].startswith("2026-01-02T03:04:05")


def test_labelloop_labels_export_as_label_studio_tasks(project, tmp_path):
    labels = pd.DataFrame({"data_id": ["t1", "t2"], "text": ["x", "y"],
                           "label": ["cat", "dog"], "label_id": [1, 2]})
    meta = pd.DataFrame({"date": pd.to_datetime(["2026-01-01", "2026-01-02"], utc=True),
                         "data_id": ["t1", "t2"], "comment": [None, None], "session": [0, 1],
                         "status": ["LABELED", "LABELED"], "annotator": ["alice", "bob"],
                         "label": ["cat", "dog"], "label_id": [1, 2]})
    project.dataset("labels", create=True).write(labels)
    project.dataset("metadata", create=True).write(meta)
    out = tmp_path / "tasks.json"
    export_file(project, "labels", out, options={"metadata": "metadata"})
    tasks = json.loads(out.read_text())
    assert [t["annotations"][0]["completed_by"] for t in tasks] == ["alice", "bob"]
    # ... and back: annotators and label ids survive.
    import_file(project, "again", out, options={"labels": "labels2", "metadata": "meta2"})
    assert project.dataset("meta2").read()["annotator"].tolist() == ["alice", "bob"]
    assert project.dataset("labels2").read()["label_id"].tolist() == [1, 2]


@pytest.mark.parametrize("content, message", [
    ("{not json", r"not valid JSON at line 1, column 2"),
    (json.dumps({"tasks": 5}), r"expected a list of Label Studio tasks"),
    (json.dumps([{"data": {"text": "a"}}, {"id": 7, "text": "no data"}]),
     r"task 2 \(id 7\): a task must be an object with a 'data' object"),
    (json.dumps([{"id": 1, "data": {}}, {"id": 1, "data": {}}]),
     r"task 2 \(id 1\): task id 1 appears twice"),
    (json.dumps([{"id": 4, "data": {"t": 1}, "annotations": [{"id": 9, "result": []}]}]),
     r"task 1 \(id 4\): annotation 9 has no choices result"),
    (json.dumps([{"id": 4, "data": {"t": 1},
                  "predictions": [{"score": "high", "result": []}]}]),
     r"task 1 \(id 4\): prediction score 'high' is not a number"),
])
def test_bad_label_studio_files_name_the_task_and_write_nothing(project, tmp_path, content,
                                                                message):
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(LabelloopError, match=message):
        import_file(project, "items", bad)
    assert not any(project.dataset(n, create=True).exists()
                   for n in ("items", "items_labels", "items_metadata", "items_predictions"))


def test_coco_round_trip_and_bad_file(project, tmp_path):
    from PIL import Image

    images = tmp_path / "project-images"
    images.mkdir()
    Image.new("L", (8, 6)).save(images / "a.png")
    Image.new("L", (4, 4)).save(images / "b.png")
    project.declare("folders", "imgs", {"path": str(images)})
    labels = pd.DataFrame({"path": ["a.png", "b.png"], "label": ["cat", "dog"],
                           "label_id": [5, 9]})
    project.dataset("img_labels", create=True).write(labels)
    out = tmp_path / "coco.json"
    assert export_file(project, "img_labels", out, "coco", {"folder": "imgs"}) == 2
    doc = json.loads(out.read_text())
    assert [(i["file_name"], i["width"], i["height"]) for i in doc["images"]] == \
        [("a.png", 8, 6), ("b.png", 4, 4)]
    assert [c["name"] for c in doc["categories"]] == ["cat", "dog"]
    assert [(a["id"], a["image_id"], a["category_id"]) for a in doc["annotations"]] == \
        [(5, 1, 1), (9, 2, 2)]
    import_file(project, "img_labels2", out, "coco")
    pd.testing.assert_frame_equal(project.dataset("img_labels2").read(),
                                  project.dataset("img_labels").read())

    doc["annotations"][1]["category_id"] = 42
    out.write_text(json.dumps(doc))
    with pytest.raises(LabelloopError, match=r"annotation 2 \(id 9\): its category_id 42"):
        import_file(project, "img_labels3", out, "coco")
    assert not project.dataset("img_labels3", create=True).exists()


def test_cli_import_export_label_studio(project, tmp_path, run_cli):
    src = tmp_path / "tasks.json"
    src.write_text(json.dumps(LS_TASKS))
    out = run_cli(project.dir, "dataset", "import", "items", str(src), "-o", "predictions=queries")
    assert "imported 3 rows into items" in out.stdout
    assert "imported 3 rows into queries" in out.stdout
    assert "imported 2 rows into items_labels" in out.stdout
    again = run_cli(project.dir, "dataset", "import", "items", str(src), check=False)
    assert again.returncode != 0 and "already has data" in again.stderr
    dest = tmp_path / "out.jsonl"
    out = run_cli(project.dir, "dataset", "export", "items_labels", str(dest))
    assert "exported 2 rows" in out.stdout
    assert [json.loads(line)["label"] for line in dest.read_text().splitlines()] == ["cat", "dog"]
    bad = run_cli(project.dir, "dataset", "export", "items", str(tmp_path / "x.xyz"),
                  check=False)
    assert bad.returncode != 0 and "cannot tell the format of 'x.xyz'" in bad.stderr


# ------------------------------------------------------------------ -o options, CSV encodings

def test_unknown_options_are_refused_with_the_known_ones_and_nothing_is_written(
        project, tmp_path, run_cli):
    src = tmp_path / "people.csv"
    src.write_text("name,n\nana,1\n", encoding="utf-8")
    result = run_cli(project.dir, "dataset", "import", "people", str(src), "-o",
                     "encodng=latin-1", check=False)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: unknown option 'encodng' for csv import: it takes encoding, sep")
    assert not project.dataset("people", create=True).exists()
    pd.DataFrame({"name": ["ana"]}).to_parquet(tmp_path / "x.parquet")
    with pytest.raises(LabelloopError, match=r"parquet import takes no -o options \(got 'sep'"):
        import_file(project, "people", tmp_path / "x.parquet", options={"sep": ";"})

    import_file(project, "people", src)
    out = tmp_path / "people.json"
    with pytest.raises(LabelloopError, match=r"unknown option 'x', 'y' for label-studio export: "
                                             r"it takes metadata, label_col, data_key"):
        export_file(project, "people", out, "label-studio", {"y": "1", "x": "2"})
    with pytest.raises(LabelloopError, match=r"unknown option 'folder' for coco import: it "
                                             r"takes label_col$"):
        import_file(project, "c", src, "coco", options={"folder": "f"})
    with pytest.raises(LabelloopError, match=r"jsonl export takes no -o options"):
        export_file(project, "people", tmp_path / "p.jsonl", options={"encoding": "latin-1"})
    assert not out.exists() and not (tmp_path / "p.jsonl").exists()


def test_csv_encoding_and_separator_both_ways(project, tmp_path, run_cli):
    src = tmp_path / "latin.csv"
    src.write_bytes("name;city\nJosé;Montréal\nAna;Lyon\n".encode("latin-1"))
    result = run_cli(project.dir, "dataset", "import", "people", str(src), "-o", "sep=;",
                     check=False)
    assert result.returncode != 0
    # The UTF-8 error says what to pass; nothing is written.
    assert "is not utf-8 text (byte 0xe9)" in result.stderr
    assert "-o encoding=latin-1" in result.stderr
    assert not project.dataset("people", create=True).exists()

    out = run_cli(project.dir, "dataset", "import", "people", str(src), "-o", "sep=semicolon",
                  "-o", "encoding=latin-1")
    assert "imported 2 rows into people" in out.stdout
    people = project.dataset("people").read()
    assert people.to_dict("records") == [{"name": "José", "city": "Montréal"},
                                         {"name": "Ana", "city": "Lyon"}]

    # Export: with and without progress (CLI / API), both honour the options.
    dest = tmp_path / "out.csv"
    run_cli(project.dir, "dataset", "export", "people", str(dest), "-o", "encoding=cp1252",
            "-o", "sep=tab")
    assert dest.read_bytes() == "name\tcity\nJosé\tMontréal\nAna\tLyon\n".encode("cp1252")
    export_file(project, "people", dest, options={"sep": "|"})
    assert dest.read_text(encoding="utf-8") == "name|city\nJosé|Montréal\nAna|Lyon\n"
    with pytest.raises(LabelloopError, match=r"in ascii: it has no character for 'é': choose "
                                             r"an encoding that has it"):
        export_file(project, "people", dest, options={"encoding": "ascii"})
    assert dest.read_text(encoding="utf-8").startswith("name|city")  # the last good file
    assert not any(p.name.endswith(".part") for p in tmp_path.iterdir())
    with pytest.raises(LabelloopError, match=r"unknown encoding 'klingon'"):
        import_file(project, "again", src, options={"encoding": "klingon"})
    with pytest.raises(LabelloopError, match=r"separator '::' must be one character"):
        import_file(project, "again", src, options={"sep": "::"})

    jsonl = tmp_path / "latin.jsonl"
    jsonl.write_bytes('{"name": "José"}\n'.encode("latin-1"))
    with pytest.raises(LabelloopError, match=r"not utf-8 text \(byte 0xe9 near line 1\).*"
                                             r"-o encoding=latin-1"):
        import_file(project, "j", jsonl)
    import_file(project, "j", jsonl, options={"encoding": "latin-1"})
    assert project.dataset("j").read()["name"].tolist() == ["José"]


# ------------------------------------------------------------------ files of a labeling webapp

def test_label_studio_and_coco_exports_of_image_labels_use_the_webapps_folder(tmp_path, serve):
    from test_webapps_browser import make_labeling_project

    directory = tmp_path / "images"
    project = make_labeling_project(directory, "image", n=3)
    server = serve(directory, "--no-scheduler")
    user = {"X-Labelloop-User": "alice"}
    items = server.get("/api/v1/webapps/app/batch?size=2", headers=user).json()["items"]
    for item in items:
        resp = server.post("/api/v1/webapps/app/labels", {"id": item["id"], "label": "cat"},
                           headers=user)
        assert resp.status == 200, resp.text
    paths = [item["id"] for item in items]
    folder = project.folder("files")

    # Label Studio: data.image is the media route's URL, which serves the file.
    out = tmp_path / "tasks.json"
    assert export_file(project, "labels", out, "label-studio", {"base_url": server.url}) == 2
    tasks = json.loads(out.read_text())
    assert [t["data"]["path"] for t in tasks] == paths
    for task in tasks:
        url = task["data"]["image"]
        assert url == (f"{server.url}/api/v1/webapps/app/media?id="
                       + task["data"]["path"].replace("/", "%2F"))
        resp = server.get(url[len(server.url):], headers=user)
        assert resp.status == 200 and resp.headers["Content-Type"] == "image/png"
        assert resp.body == folder.read_bytes(task["data"]["path"])
    # The default server address is `labelloop serve`'s; a prefix instead of the route.
    export_file(project, "labels", out, "label-studio")
    assert json.loads(out.read_text())[0]["data"]["image"].startswith(
        "http://127.0.0.1:5006/api/v1/webapps/app/media?id=img%2F")
    export_file(project, "labels", out, "label-studio",
                {"media_prefix": "/data/local-files/?d=files/"})
    assert [t["data"]["image"] for t in json.loads(out.read_text())] == \
        [f"/data/local-files/?d=files/{p}" for p in paths]
    with pytest.raises(LabelloopError, match=r"no labeling webapp 'nope' in project.json"):
        export_file(project, "labels", out, "label-studio", {"webapp": "nope"})
    with pytest.raises(LabelloopError, match=r"base_url 'example.org' must start with http"):
        export_file(project, "labels", out, "label-studio", {"base_url": "example.org"})

    # COCO: the images' sizes come from the webapp's folder without -o folder.
    coco = tmp_path / "coco.json"
    assert export_file(project, "labels", coco, "coco") == 2
    doc = json.loads(coco.read_text())
    assert [(i["file_name"], i["width"], i["height"]) for i in doc["images"]] == \
        [(p, 48, 32) for p in paths]
    project.dataset("copy", create=True).write(project.dataset("labels").read())
    with pytest.raises(LabelloopError, match=r"cannot tell which labeling webapp dataset 'copy' "
                                             r"belongs to \(none writes it\): pass -o folder="):
        export_file(project, "copy", coco, "coco")
    assert export_file(project, "copy", coco, "coco", {"folder": "files"}) == 2
