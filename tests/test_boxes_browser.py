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
import os
import statistics
from pathlib import Path

import pytest
from PIL import Image
from test_webapps_browser import CHROMIUM, browser, page_for, wait_idle  # noqa: F401

from labeling.boxes.scenes import OBJECT_CLASSES, make_scenes
from labelloop.project import Project

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
]

BIG = (4000, 3000)
CLASSES = list(OBJECT_CLASSES)  # zero, four, seven: keys 1, 2, 3


def boxes_project(directory: Path, scenes: int = 40) -> tuple[Project, list[dict]]:
    """Two webapps as the boxes demo builds them: `scenes` (generated scenes, a queries
    dataset for the Query Sampler) and `photos` (two 4000x3000 images made from scenes)."""
    project = Project.init(directory, config={
        "folders": {"scenes": {"path": "scenes"}, "photos": {"path": "photos"}},
        "webapps": {
            "scenes": {"type": "ml-assisted-labeling/image-boxes-labeling",
                       "params": {"unlabeled": "scenes", "object_classes": OBJECT_CLASSES,
                                  "queries_ds": "queries"}},
            "photos": {"type": "ml-assisted-labeling/image-boxes-labeling",
                       "params": {"unlabeled": "photos", "object_classes": OBJECT_CLASSES}}}})
    truth = make_scenes(directory / "scenes", scenes, seed=3)
    (directory / "photos").mkdir()
    for i, scene in enumerate(truth[:2]):
        with Image.open(directory / "scenes" / scene["path"]) as img:
            img.convert("RGB").resize(BIG, Image.BICUBIC).save(directory / "photos" / f"big{i}.jpg",
                                                                quality=85)
    return project, truth


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


def labels_of(directory: Path) -> dict[str, list[dict]]:
    labels = Project.open(directory).dataset("labels").read()
    return {p: json.loads(v) for p, v in zip(labels["path"], labels["label"], strict=True)}


def sort_boxes(boxes: list[dict]) -> list[dict]:
    return sorted(boxes, key=lambda b: (b["y"], b["x"], b["h"], b["w"], b["label"]))


def timed(page, script: str) -> float:
    """Milliseconds from before `script` (run in the page) to the next frame painted."""
    return page.evaluate("""script => new Promise(done => {
        const t0 = performance.now();
        (new Function(script))();
        requestAnimationFrame(() => done(performance.now() - t0)); })""", script)


def test_boxes_page_draw_edit_undo_submit_on_a_big_image(tmp_path, serve, page_for):  # noqa: F811
    directory = tmp_path / "proj"
    boxes_project(directory, scenes=6)
    server = serve(directory, "--no-scheduler")
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
    # Two boxes drawn with the mouse (no popup: the second drag right after the first).
    a1, b1 = scr.point(400, 300), scr.point(1300, 1100)
    drag(page, a1, b1)
    a2, b2 = scr.point(2100, 1500), scr.point(3000, 2600)
    drag(page, b2, a2)  # drawn from its bottom-right corner
    # The second box is selected: 3 makes it a "seven" (and the class of the next box).
    page.keyboard.press("3")
    box1 = expected_box(scr, a1, b1, "zero")
    box2 = expected_box(scr, a2, b2, "seven")
    assert answer_now(page) == [box1, box2]
    # Resize it by its bottom-right corner handle.
    corner = page.eval_on_selector(
        "#ll-boxes .ll-handle[data-handle=se]",
        "e => { const r = e.getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; }")
    start = (round(corner[0]), round(corner[1]))
    drag(page, start, (start[0] + 40, start[1] + 25))
    exact = page.evaluate("window.labelloop.boxes.boxes[1]")
    # The corner moves by the drag in image pixels, from where the box's corner was.
    sx0, sy0 = scr.pixel(*a2)
    sx1, sy1 = scr.pixel(*b2)
    assert exact["x"] + exact["w"] == pytest.approx(sx1 + 40 / scr.scale, abs=1e-6)
    assert exact["y"] + exact["h"] == pytest.approx(sy1 + 25 / scr.scale, abs=1e-6)
    resized = expected_box(scr, a2, (b2[0] + 40, b2[1] + 25), "seven")
    assert answer_now(page) == [box1, resized]
    shot(page, tmp_path, "1-drawn")
    # Undo the resize, then the class change; redo both.
    page.keyboard.press("Control+z")
    assert answer_now(page) == [box1, box2]
    page.keyboard.press("Control+z")
    assert answer_now(page) == [box1, {**box2, "label": "zero"}]
    page.keyboard.press("Control+Shift+z")
    page.keyboard.press("Control+y")
    assert answer_now(page) == [box1, resized]
    page.keyboard.press("Enter")
    second = wait_image(page, first)
    wait_idle(page)
    assert labels_of(directory) == {first: sort_boxes([box1, resized])}

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
    print(f"\n4000x3000 image: drag move to paint median {statistics.median(moves):.1f} ms, "
          f"max {max(moves):.1f} ms; nudge median {statistics.median(nudges):.1f} ms, max "
          f"{max(nudges):.1f} ms; wheel zoom median {statistics.median(wheel):.1f} ms, max "
          f"{max(wheel):.1f} ms")
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
    assert labels_of(directory)[first] == stored[1:]
    assert page.errors == []
