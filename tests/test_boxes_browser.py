"""The image-boxes labeling page in headless Chromium against a real `labelloop serve`.

On 4000x3000 photos (shown scaled down): draws two boxes with the mouse, changes one's class
with a key, resizes it, undoes and redoes, submits, and reads the labels dataset: exactly
those boxes, in pixels of the original image computed from the screen coordinates and the
scale the page shows. Goes back to the answer and sees its boxes. Times a drag and a nudge on
a 4000x3000 image (printed, never asserted). On the demo's scenes: zooms with the wheel and
draws a box (its pixels exact), then after a retrain (the train-detector and Query Sampler
recipes) sees the model's boxes dashed with their score and stores them with Enter.
Screenshots go to the test's tmp directory (and to $LABELLOOP_SCREENSHOTS when set).
"""

from __future__ import annotations

import json
import math
import os
import statistics
from pathlib import Path

import pytest
from conftest import wait_for
from PIL import Image
from test_webapps_browser import NEEDS_CHROMIUM, browser, page_for, wait_idle  # noqa: F401

from labeling.boxes.demo import FOLDER, TRUTH_FILE, WEBAPP
from labeling.boxes.scenes import OBJECT_CLASSES
from labeling.demo import BOXES, SCENARIO, create_demo
from labelloop.project import Project

pytestmark = [
    pytest.mark.browser,
    NEEDS_CHROMIUM,
]

BIG = (4000, 3000)
SCENES = 40
CLASSES = list(OBJECT_CLASSES)  # zero, four, seven
KEY = {name: str(i + 1) for i, name in enumerate(CLASSES)}  # their keys: 1, 2, 3


@pytest.fixture(scope="module")
def demo(tmp_path_factory, serve_module):
    """The boxes demo (`labelloop demo --data boxes`, fewer scenes) plus a `photos` webapp
    on two 4000x3000 images made from scenes; served for the module. Returns (directory,
    server, the scenes' truth, the photos' objects by file name)."""
    directory = tmp_path_factory.mktemp("boxes-demo") / "project"
    project = create_demo(directory, BOXES, scenes=SCENES)
    truth = json.loads((directory / TRUTH_FILE).read_text())
    scenes = [{"path": img["file_name"], "width": img["width"], "height": img["height"],
               "boxes": [{"x": a["bbox"][0], "y": a["bbox"][1], "w": a["bbox"][2],
                          "h": a["bbox"][3],
                          "label": next(c["name"] for c in truth["categories"]
                                        if c["id"] == a["category_id"])}
                         for a in truth["annotations"] if a["image_id"] == img["id"]]}
              for img in truth["images"]]
    (directory / "photos").mkdir()
    photos = {}  # the photos' objects, scaled with them
    two = [s for s in scenes if len({b["label"] for b in s["boxes"][:2]}) == 2]  # two classes
    for i, scene in enumerate(two[:2]):
        fx, fy = BIG[0] / scene["width"], BIG[1] / scene["height"]
        photos[f"big{i}.jpg"] = [{"x": b["x"] * fx, "y": b["y"] * fy, "w": b["w"] * fx,
                                  "h": b["h"] * fy, "label": b["label"]} for b in scene["boxes"]]
        with Image.open(directory / FOLDER / scene["path"]) as img:
            img.convert("RGB").resize(BIG, Image.BICUBIC).save(
                directory / "photos" / f"big{i}.jpg", quality=85)
    project.config["folders"]["photos"] = {"path": "photos"}
    project.config["webapps"]["photos"] = {
        "type": "ml-assisted-labeling/image-boxes-labeling",
        "params": {"unlabeled": "photos", "object_classes": OBJECT_CLASSES,
                   "labels_ds": "photo_labels", "metadata_ds": "photo_metadata"}}
    project.save_config()
    return directory, serve_module(directory, "--no-scheduler"), scenes, photos


def shot(page, tmp_path: Path, name: str) -> None:
    for d in filter(None, (tmp_path, os.environ.get("LABELLOOP_SCREENSHOTS"))):
        Path(d).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(d) / f"boxes-{name}.png"))


def on_screen(page) -> str:
    return page.eval_on_selector("#ll-item", "el => el.dataset.itemId || ''")


def wait_image(page, old: str = "") -> str:
    """The next item on screen with its image decoded and fitted; its id."""
    page.wait_for_function(
        "old => { const el = document.getElementById('ll-item');"
        " const img = el.querySelector('.ll-boxes-img'), v = document.getElementById('ll-boxes');"
        " return el.dataset.itemId && el.dataset.itemId !== old && img && img.complete"
        " && img.naturalWidth > 0 && v && v.dataset.scale; }", arg=old)
    return on_screen(page)


class Screen:
    """Where the image is on screen: image pixel <-> screen point, from what the page shows
    (the image element's box and its natural size)."""

    def __init__(self, page):
        r = page.evaluate("""() => { const i = document.querySelector('.ll-boxes-img');
            const b = i.getBoundingClientRect();
            return [b.left, b.top, b.width, i.naturalWidth, b.height, i.naturalHeight]; }""")
        self.left, self.top = r[0], r[1]
        self.scale = r[2] / r[3]
        assert abs(r[4] / r[5] - self.scale) < 1e-6

    def point(self, x: float, y: float) -> tuple[int, int]:
        """A whole screen point near image pixel (x, y), away from half pixels (so the
        expected rounding is certain)."""
        return self._axis(x, self.left), self._axis(y, self.top)

    def _axis(self, v: float, origin: float) -> int:
        s = round(origin + v * self.scale)
        for cand in (s, s + 1, s - 1, s + 2):
            frac = ((cand - origin) / self.scale) % 1
            if 0.1 < frac < 0.4 or 0.6 < frac < 0.9 or frac < 0.05 or frac > 0.95:
                return cand
        return s

    def pixel(self, sx: float, sy: float) -> tuple[float, float]:
        return (sx - self.left) / self.scale, (sy - self.top) / self.scale


def expected_box(scr: Screen, a: tuple[int, int], b: tuple[int, int], label: str) -> dict:
    (x0, y0), (x1, y1) = scr.pixel(*a), scr.pixel(*b)
    x0, x1 = sorted((round(x0), round(x1)))
    y0, y1 = sorted((round(y0), round(y1)))
    return {"x": x0, "y": y0, "w": x1 - x0, "h": y1 - y0, "label": label}


def drag(page, a: tuple[float, float], b: tuple[float, float], steps: int = 6) -> None:
    page.mouse.move(*a)
    page.mouse.down()
    page.mouse.move(*b, steps=steps)
    page.mouse.up()


def shown_boxes(page) -> list[tuple[str, bool]]:
    """The boxes drawn on the page: (x,y,w,h,label in image pixels, suggested), visible ones."""
    return page.eval_on_selector_all(
        "#ll-boxes g.ll-box", "els => els.filter(e => e.getAttribute('visibility') !== 'hidden')"
        ".map(e => [e.dataset.box, e.classList.contains('ll-box-sug')])")


def answer_now(page) -> list[dict]:
    return page.evaluate("window.labelloop.boxes.answer()")


def labels_of(directory: Path, name: str = "labels") -> dict[str, list[dict]]:
    labels = Project.open(directory).dataset(name).read()
    return {p: json.loads(v) for p, v in zip(labels["path"], labels["label"], strict=True)}


def sort_boxes(boxes: list[dict]) -> list[dict]:
    return sorted(boxes, key=lambda b: (b["y"], b["x"], b["h"], b["w"], b["label"]))


def timed(page, script: str) -> tuple[float, float]:
    """Milliseconds of `script` (run in the page: the event handler and its repaint of the
    overlay), and from before it to the next frame."""
    return tuple(page.evaluate("""script => new Promise(done => {
        const t0 = performance.now();
        (new Function(script))();
        const t1 = performance.now();
        requestAnimationFrame(() => done([t1 - t0, performance.now() - t0])); })""", script))


def figures(name: str, times: list[tuple[float, float]]) -> str:
    handler, frame = zip(*times, strict=True)
    return (f"{name}: handler median {statistics.median(handler):.2f} ms, max {max(handler):.2f} "
            f"ms; to the next frame median {statistics.median(frame):.1f} ms, max {max(frame):.1f} ms")


def test_boxes_page_draw_edit_undo_submit_on_a_big_image(tmp_path, demo, page_for):  # noqa: F811
    directory, server, _, photos = demo
    page = page_for()
    page.goto(server.url + "/webapps/photos")
    first = wait_image(page)
    scr = Screen(page)
    assert scr.scale < 0.5  # a 4000x3000 image shown scaled down
    # The legend: each class with its key and colour; the first class is the next box's.
    legend = page.eval_on_selector_all(
        "#ll-categories .ll-cat", "els => els.map(e => [e.dataset.category, e.innerText, "
        "getComputedStyle(e.querySelector('.ll-swatch')).backgroundColor])")
    assert [x[0] for x in legend] == CLASSES
    assert [x[1].split()[0] for x in legend] == ["1", "2", "3"] and len({x[2] for x in legend}) == 3
    assert "zero" in page.inner_text("#ll-boxes-next")
    # Two boxes drawn with the mouse around the first two objects (no popup: the second drag
    # right after the first), both of the first object's class; the second short of its
    # bottom-right corner by the drag the resize below makes.
    o1, o2 = photos[first][:2]
    page.keyboard.press(KEY[o1["label"]])
    a1, b1 = scr.point(o1["x"], o1["y"]), scr.point(o1["x"] + o1["w"], o1["y"] + o1["h"])
    drag(page, a1, b1)
    a2 = scr.point(o2["x"], o2["y"])
    b2 = scr.point(o2["x"] + o2["w"] - 40 / scr.scale, o2["y"] + o2["h"] - 25 / scr.scale)
    drag(page, b2, a2)  # drawn from its bottom-right corner
    box1 = expected_box(scr, a1, b1, o1["label"])
    box2 = expected_box(scr, a2, b2, o2["label"])
    assert answer_now(page) == sort_boxes([box1, {**box2, "label": o1["label"]}])
    # The second box is selected: its object's key gives it that class (and the next box's).
    page.keyboard.press(KEY[o2["label"]])
    assert answer_now(page) == sort_boxes([box1, box2])
    # Resize it by its bottom-right corner handle.
    corner = page.eval_on_selector(
        "#ll-boxes .ll-handle[data-handle=se]",
        "e => { const r = e.getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; }")
    start = (round(corner[0]), round(corner[1]))
    drag(page, start, (start[0] + 40, start[1] + 25))
    exact = page.evaluate("window.labelloop.boxes.boxes[1]")
    # The corner moves by the drag in image pixels, from where the box's corner was.
    sx1, sy1 = scr.pixel(*b2)
    assert exact["x"] + exact["w"] == pytest.approx(sx1 + 40 / scr.scale, abs=1e-6)
    assert exact["y"] + exact["h"] == pytest.approx(sy1 + 25 / scr.scale, abs=1e-6)
    resized = expected_box(scr, a2, (b2[0] + 40, b2[1] + 25), o2["label"])
    assert abs(resized["w"] - o2["w"]) < 2 / scr.scale and abs(resized["h"] - o2["h"]) < 2 / scr.scale
    assert answer_now(page) == sort_boxes([box1, resized])
    shot(page, tmp_path, "1-drawn")
    # Undo the resize, then the class change; redo both.
    page.keyboard.press("Control+z")
    assert answer_now(page) == sort_boxes([box1, box2])
    page.keyboard.press("Control+z")
    assert answer_now(page) == sort_boxes([box1, {**box2, "label": o1["label"]}])
    page.keyboard.press("Control+Shift+z")
    page.keyboard.press("Control+y")
    assert answer_now(page) == sort_boxes([box1, resized])
    page.keyboard.press("Enter")
    second = wait_image(page, first)
    wait_idle(page)
    assert labels_of(directory, "photo_labels") == {first: sort_boxes([box1, resized])}

    # A 4000x3000 image stays responsive: a drag (draw, then move) and nudges, timed from the
    # event to the next frame; the image element is the same one throughout (never re-decoded).
    scr = Screen(page)
    drag(page, scr.point(1000, 1000), scr.point(2000, 1800))
    img_before = page.evaluate("window.__img = document.querySelector('.ll-boxes-img'); 1")
    moves = []
    mid = scr.point(1500, 1400)
    page.mouse.move(*mid)
    page.mouse.down()
    for k in range(1, 21):
        moves.append(timed(page, f"window.dispatchEvent(new MouseEvent('mousemove', "
                                 f"{{clientX: {mid[0] + 3 * k}, clientY: {mid[1] + 2 * k}}}))"))
    page.mouse.up()
    nudges = [timed(page, "window.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowRight'}))")
              for _ in range(20)]
    wheel = [timed(page, "document.getElementById('ll-boxes').dispatchEvent(new WheelEvent('wheel', "
                         "{deltaY: -60, clientX: 500, clientY: 400, cancelable: true}))")
             for _ in range(10)]
    assert img_before == 1 and page.evaluate("window.__img === document.querySelector('.ll-boxes-img')")
    moved = page.evaluate("window.labelloop.boxes.boxes[0]")
    assert moved["x"] == pytest.approx(scr.pixel(*scr.point(1000, 1000))[0] + 60 / scr.scale + 20, abs=1e-6)
    # Every edit is undone one at a time: a nudge, then a removal.
    page.keyboard.press("Control+z")
    assert page.evaluate("window.labelloop.boxes.boxes[0].x") == pytest.approx(moved["x"] - 1)
    page.keyboard.press("Backspace")
    assert answer_now(page) == []
    page.keyboard.press("Control+z")
    assert page.evaluate("window.labelloop.boxes.boxes[0].x") == pytest.approx(moved["x"] - 1)
    print("\n4000x3000 image: " + "; ".join(
        (figures("drag (move a box)", moves), figures("nudge (arrow key)", nudges),
         figures("wheel zoom", wheel))))
    shot(page, tmp_path, "2-big-zoomed")
    # Back to the first answer: its stored boxes, editable; Delete removes one and Enter
    # changes the answer.
    page.keyboard.press("PageUp")
    page.wait_for_function("id => document.getElementById('ll-item').dataset.itemId === id", arg=first)
    assert "Earlier answer (2 boxes)" in page.inner_text("#ll-item-mode")
    stored = sort_boxes([box1, resized])
    assert [b for b, sug in shown_boxes(page)] == [
        f"{b['x']},{b['y']},{b['w']},{b['h']},{b['label']}" for b in stored]
    page.keyboard.press("Tab")
    page.keyboard.press("Delete")
    page.keyboard.press("Enter")
    page.wait_for_function("id => document.getElementById('ll-item').dataset.itemId === id", arg=second)
    wait_idle(page)
    assert labels_of(directory, "photo_labels")[first] == stored[1:]
    assert page.errors == []


def test_boxes_page_zoomed_drawing_and_suggestions_after_a_retrain(tmp_path, demo, page_for,  # noqa: F811
                                                                    run_cli):
    directory, server, scenes, _ = demo
    truth = {s["path"]: s for s in scenes}
    page = page_for()
    page.goto(server.url + f"/webapps/{WEBAPP}")
    item = first = wait_image(page)
    # Zoom with the wheel around an object, then box it while zoomed: its pixels are exact.
    target = truth[item]["boxes"][0]
    fitted = Screen(page)
    centre = fitted.point(target["x"] + target["w"] / 2, target["y"] + target["h"] / 2)
    page.mouse.move(*centre)
    for _ in range(4):
        page.mouse.wheel(0, -200)
    page.wait_for_function("s => Number(document.getElementById('ll-boxes').dataset.scale) > 2.5 * s",
                           arg=fitted.scale)
    scr = Screen(page)
    # The point under the cursor stayed where it was.
    assert scr.pixel(*centre) == pytest.approx(fitted.pixel(*centre), abs=0.5 / fitted.scale)
    a = scr.point(target["x"] - 1.3, target["y"] - 0.6)
    b = scr.point(target["x"] + target["w"] + 0.7, target["y"] + target["h"] + 1.2)
    page.keyboard.press(KEY[target["label"]])
    drag(page, a, b)
    drawn = expected_box(scr, a, b, target["label"])
    assert answer_now(page) == [drawn]
    assert abs(drawn["x"] - target["x"]) <= 2 and abs(drawn["w"] - target["w"]) <= 4
    shot(page, tmp_path, "3-zoomed")
    page.keyboard.press("Enter")
    wait_image(page, item)
    wait_idle(page)
    assert labels_of(directory)[item] == [drawn]

    # A simulated annotator boxes more scenes by the truth; then the detector retrains and
    # the Query Sampler re-ranks the pool with its boxes (the demo's scenario, by the CLI).
    for path in [p for p in truth if p != item][:29]:
        r = server.post(f"/api/v1/webapps/{WEBAPP}/labels",
                        json_body={"id": path, "boxes": truth[path]["boxes"]},
                        headers={"X-Labelloop-User": "sim"})
        assert r.status == 200, r.text
    run_cli(directory, "scenario", "run", SCENARIO, timeout=600)
    queries = Project.open(directory).dataset("queries").read()
    assert len(queries) and queries["prediction"].notna().all()
    # Once the server serves the new order, a page opened comes with the model's boxes,
    # dashed with their score; the slider hides the weak ones, and Enter stores the shown ones.
    wait_for(lambda: server.get(f"/api/v1/webapps/{WEBAPP}/config").json()["queue_session"] >= 1,
             what="the new order served")
    page.reload()
    item = wait_image(page)
    page.wait_for_function("document.querySelectorAll('#ll-boxes g.ll-box-sug').length > 0")
    suggested = json.loads(queries.set_index("path").loc[item, "prediction"])
    assert suggested and all(isinstance(x["score"], float) for x in suggested)
    drawn_sug = page.eval_on_selector_all(
        "#ll-boxes g.ll-box-sug", "els => els.map(e => [e.dataset.box, Number(e.dataset.score),"
        " e.querySelector('text').textContent, getComputedStyle(e.querySelector('rect')).strokeDasharray,"
        " e.getAttribute('visibility')])")
    assert sorted(x[0] for x in drawn_sug) == sorted(
        f"{round(x['x'], 2):g},{round(x['y'], 2):g},{round(x['w'], 2):g},{round(x['h'], 2):g},{x['label']}"
        for x in suggested)
    for box, score, tag, dashes, _vis in drawn_sug:
        assert tag == f"{box.rsplit(',', 1)[1]} {round(score * 100)}%" and dashes not in ("", "none")
    # A threshold (a slider step) between the scores: about half of the boxes are hidden.
    scores = [x["score"] for x in suggested]
    wanted = min((k / 100 for k in range(101)),
                 key=lambda t: abs(sum(x >= t for x in scores) - len(scores) / 2))
    threshold = page.eval_on_selector("#ll-boxes-threshold", "(e, t) => { e.value = t; "
                                      "e.dispatchEvent(new Event('input')); return Number(e.value); }",
                                      wanted)
    kept = [x for x in suggested if x["score"] >= threshold - 1e-9]
    print(f"\nsuggested scores {sorted(scores)}, threshold {threshold}: {len(kept)} shown")
    assert len(shown_boxes(page)) == len(kept)
    shot(page, tmp_path, "4-suggested")
    whole = lambda v: math.floor(v + 0.5)  # noqa: E731  (JavaScript's Math.round)
    expected = sort_boxes([{"x": whole(x["x"]), "y": whole(x["y"]),
                            "w": whole(x["x"] + x["w"]) - whole(x["x"]),
                            "h": whole(x["y"] + x["h"]) - whole(x["y"]), "label": x["label"]}
                           for x in kept])
    page.keyboard.press("Enter")
    wait_image(page, item)
    wait_idle(page)
    assert labels_of(directory)[item] == expected
    # Back: that answer, then (loaded from the server: the page was reloaded) the box drawn
    # while zoomed, each shown with its stored boxes to edit.
    as_shown = lambda boxes: [f"{b['x']},{b['y']},{b['w']},{b['h']},{b['label']}"  # noqa: E731
                              for b in boxes]
    for earlier, boxes in ((item, expected), (first, [drawn])):
        page.keyboard.press("PageUp")
        page.wait_for_function("id => document.getElementById('ll-item').dataset.itemId === id",
                               arg=earlier)
        assert shown_boxes(page) == [[b, False] for b in as_shown(boxes)]  # no longer dashed
    assert "Earlier answer (1 box)" in page.inner_text("#ll-item-mode")
    assert page.errors == []
