"""Media by URL and live configuration, against a real `labelloop serve` (no browser here;
the page's side of both is in tests/test_live_page_browser.py)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from test_webapps_browser import _png, _wav, make_labeling_project

from labelloop.project import Project

USER = {"X-Labelloop-User": "alice"}


def test_media_route_etag_304_content_type_and_escapes(tmp_path, serve):
    directory = tmp_path / "project"
    project = make_labeling_project(directory, "image", n=3)
    folder = project.folder("files")
    secret = tmp_path / "secret.png"
    secret.write_bytes(_png(9))
    os.symlink(secret, folder.path / "img" / "link.png")  # a link out of the folder
    (folder.path / "notes.txt").write_text("not an item")
    server = serve(directory, "--no-scheduler")
    batch = server.get("/api/v1/webapps/app/batch?size=10", headers=USER).json()
    items = {it["id"]: it for it in batch["items"]}
    assert "img/000.png" in items
    data = items["img/000.png"]["data"]
    # The batch carries a URL, not the bytes.
    assert "base64" not in json.dumps(batch) and "src" not in data
    assert data["media"].startswith("media?id=img%2F000.png&v=")
    url = "/api/v1/webapps/app/" + data["media"]
    resp = server.get(url, headers=USER)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "image/png"
    assert resp.body == folder.read_bytes("img/000.png")
    etag = resp.headers["ETag"]
    assert etag.startswith('"') and "max-age" in resp.headers["Cache-Control"]
    again = server.get(url, headers={**USER, "If-None-Match": etag})
    assert again.status == 304 and again.body == b""
    assert again.headers["ETag"] == etag
    # Another version of the file: a new ETag, the new bytes.
    folder.write_bytes("img/000.png", _png(5))
    changed = server.get("/api/v1/webapps/app/media?id=img/000.png",
                         headers={**USER, "If-None-Match": etag})
    assert changed.status == 200 and changed.headers["ETag"] != etag
    assert changed.body == _png(5)
    # Escapes are refused: a link out of the folder, '..', absolute paths, non-items.
    for bad in ("img/link.png", "../secret.png", "img/../../secret.png", str(secret),
                "notes.txt"):
        resp = server.get("/api/v1/webapps/app/media?id=" + bad, headers=USER)
        assert resp.status == 400, (bad, resp.status, resp.text)
        assert "error" in resp.json()
        assert resp.body.find(secret.read_bytes()[:8]) < 0
    assert server.get("/api/v1/webapps/app/media?id=img/999.png", headers=USER).status == 404
    assert server.get("/api/v1/webapps/app/media", headers=USER).status == 400


def test_similarity_media_serves_the_pool_only(tmp_path, serve, poll):
    directory = tmp_path / "project"
    project = make_labeling_project(directory, "image", n=4)
    folder = project.folder("files")
    folder.write_bytes("img/.hidden.png", _png(7))  # not in the pool: never served
    project.config["webapps"]["similar"] = {
        "type": "ml-assisted-labeling/similarity-labeling",
        "params": {"unlabeled": "files", "examples_per_view": 1, "top_k": 2}}
    project.save_config()
    server = serve(directory, "--no-scheduler")
    question = poll(lambda: (server.get("/api/v1/webapps/similar/questions", headers=USER)
                             .json()["questions"] or [None])[0], timeout=30,
                    what="a question once the pool is indexed")
    shown = [question["query"]] + question["candidates"]
    assert len(shown) == 3
    for item in shown:
        resp = server.get("/api/v1/webapps/similar/" + item["data"]["media"], headers=USER)
        assert resp.status == 200, resp.text
        assert resp.body == folder.read_bytes(item["id"])
        assert resp.headers["Content-Type"] == "image/png"
        assert "max-age" in resp.headers["Cache-Control"]
        again = server.get("/api/v1/webapps/similar/" + item["data"]["media"],
                           headers={**USER, "If-None-Match": resp.headers["ETag"]})
        assert again.status == 304
    for app in ("similar", "app"):  # the same route in both webapps
        hidden = server.get(f"/api/v1/webapps/{app}/media?id=img/.hidden.png", headers=USER)
        assert hidden.status == 404 and "not in the pool" in hidden.json()["error"]
        assert server.get(f"/api/v1/webapps/{app}/media?id=../x.png", headers=USER).status == 400
    assert "img/.hidden.png" not in {i["id"] for i in server.get(
        "/api/v1/webapps/app/batch?size=10", headers=USER).json()["items"]}


def test_sound_media_content_type(tmp_path, serve):
    directory = tmp_path / "project"
    make_labeling_project(directory, "sound", n=2)
    server = serve(directory, "--no-scheduler")
    resp = server.get("/api/v1/webapps/app/media?id=clip_001.wav", headers=USER)
    assert resp.status == 200 and resp.headers["Content-Type"] == "audio/wav"
    assert resp.body == _wav(1)


def _edit(directory: Path, change) -> None:
    path = directory / "project.json"
    cfg = json.loads(path.read_text())
    change(cfg)
    path.write_text(json.dumps(cfg, indent=2))


def test_live_configuration_break_fix_and_new_webapp(tmp_path, serve, poll):
    directory = tmp_path / "project"
    make_labeling_project(directory, "tabular", n=6, id_column="name")
    server = serve(directory, "--no-scheduler")
    assert server.get("/api/v1/webapps/app/config", headers=USER).status == 200
    good = (directory / "project.json").read_text()
    # A broken file: the last good configuration keeps serving, the error is shown.
    (directory / "project.json").write_text(good[:-20])
    entry = poll(lambda: next((w for w in server.get("/api/v1/webapps").json()
                               if w.get("config_error")), None), timeout=10,
                 what="the configuration error in /api/v1/webapps")
    assert "project.json" in entry["config_error"]
    assert server.get("/api/v1/webapps/app/batch", headers=USER).status == 200
    # A param of the wrong type is as bad: nothing of the file is applied (not even the new
    # category next to it), and answers go on with the last good configuration.
    cfg = json.loads(good)
    cfg["webapps"]["app"]["params"]["label_col_name"] = 42
    cfg["webapps"]["app"]["params"]["categories"]["fish"] = None
    (directory / "project.json").write_text(json.dumps(cfg))
    entry = poll(lambda: next((w for w in server.get("/api/v1/webapps").json()
                               if "label_col_name" in (w.get("config_error") or "")), None),
                 timeout=10, what="the param type error in /api/v1/webapps")
    assert "must be a string, got 42" in entry["config_error"]
    item = server.get("/api/v1/webapps/app/batch?size=1", headers=USER).json()["items"][0]
    resp = server.post("/api/v1/webapps/app/labels", {"id": item["id"], "label": "cat"},
                       headers=USER)
    assert resp.status == 200, resp.text
    assert "fish" not in [c["name"] for c in server.get(
        "/api/v1/webapps/app/config", headers=USER).json()["categories"]]
    assert Project.open(directory).dataset("labels").read()["label"].tolist() == ["cat"]
    # Fixed, with a new category: the webapp follows without a restart.
    (directory / "project.json").write_text(good)
    _edit(directory, lambda c: c["webapps"]["app"]["params"]["categories"].update(
        {"fish": None}))
    poll(lambda: "fish" in [c["name"] for c in server.get(
        "/api/v1/webapps/app/config", headers=USER).json()["categories"]], timeout=10,
         what="the new category")
    assert not any(w.get("config_error") for w in server.get("/api/v1/webapps").json())
    # A webapp added while serving: its API and its page work.
    project = Project.open(directory)
    project.dataset("more", create=True).write(
        project.dataset("pool").read().head(3))
    _edit(directory, lambda c: c["webapps"].update({"second": {
        "type": "ml-assisted-labeling/tabular-labeling",
        "params": {"unlabeled": "more", "categories": {"x": None, "y": None},
                   "labels_ds": "labels2", "metadata_ds": "metadata2"}}}))
    poll(lambda: server.get("/api/v1/webapps/second/batch", headers=USER).status == 200,
         timeout=10, what="the new webapp's API")
    page = server.get("/webapps/second")
    assert page.status == 200 and "ll-bootstrap" in page.text


def test_data_and_plugins_added_while_serving(tmp_path, serve, run_cli, poll, sample_plugin_dir):
    directory = tmp_path / "project"
    make_labeling_project(directory, "tabular", n=4, id_column="name")
    # A second webapp over a dataset that is imported only once the server runs.
    _edit(directory, lambda c: c["webapps"].update({"later": {
        "type": "ml-assisted-labeling/tabular-labeling",
        "params": {"unlabeled": "later_pool", "id_column": "name",
                   "categories": {"x": None, "y": None},
                   "labels_ds": "labels2", "metadata_ds": "metadata2"}}}))
    server = serve(directory, "--no-scheduler")
    assert server.get("/api/v1/webapps/later/batch", headers=USER).status >= 400
    csv = tmp_path / "later.csv"
    csv.write_text("name,size\na,1\nb,2\nc,3\n")
    run_cli(directory, "dataset", "import", "later_pool", str(csv))
    t0 = time.perf_counter()
    batch = poll(lambda: (lambda r: r.status == 200 and r.json())(
        server.get("/api/v1/webapps/later/batch", headers=USER)), timeout=15,
        what="the webapp over the imported dataset")
    print(f"\n[live] imported dataset served {time.perf_counter() - t0:.1f} s after import")
    assert sorted(it["id"] for it in batch["items"]) == ["a", "b", "c"]
    # A plugin directory and a webapp of its plugin, added to project.json while serving.
    _edit(directory, lambda c: (c.setdefault("plugin_dirs", []).append(str(sample_plugin_dir)),
                                c["webapps"].update({"notes": {"type": "sample/notes"}})))
    entry = poll(lambda: next((w for w in server.get("/api/v1/webapps").json()
                               if w["id"] == "notes" and "error" not in w), None),
                 timeout=15, what="the sample plugin's webapp")
    assert entry["type"] == "sample/notes"
    assert server.get("/webapps/notes").status == 200
