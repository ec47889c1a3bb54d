"""The text-spans labeling page in headless Chromium against a real `labelloop serve`.

Marks spans with the mouse and with the keyboard, accepts the model's suggested spans with
Enter, removes a span, goes back and changes an answer, skips a 20,000-character text, then
reads the labels and metadata datasets. Screenshots go to the test's tmp directory (and to
$LABELLOOP_SCREENSHOTS when set). Timings are printed, never asserted.
"""

from __future__ import annotations

import json
import os
import re
import statistics
from pathlib import Path

import pandas as pd
import pytest
from test_webapps_browser import NEEDS_CHROMIUM, browser, page_for, wait_idle  # noqa: F401

from labeling.engine import session_variable
from labelloop.project import Project

pytestmark = [
    pytest.mark.browser,
    NEEDS_CHROMIUM,
]

TYPES = {"PER": "a person", "ORG": "an organisation", "LOC": "a place"}
LONG = ("The committee met in Geneva on Monday to discuss the report. " * 400)[:20_000]
TEXTS = {
    "t0": "Ada Lovelace met Charles Babbage in London.",
    "t1": "Acme Corp hired Grace Hopper.",
    "t2": "Paris is in France.",
    "t3": LONG,
}
SUGGESTED = {
    "t0": [{"start": 0, "end": 12, "label": "PER", "score": 0.91},
           {"start": 17, "end": 32, "label": "PER", "score": 0.62},
           {"start": 36, "end": 42, "label": "LOC", "score": 0.84}],
    "t1": [],
    "t2": [{"start": 0, "end": 5, "label": "LOC", "score": 0.7},
           {"start": 6, "end": 8, "label": "PER", "score": 0.2}],  # wrong: "is"
    "t3": [{"start": 21, "end": 27, "label": "LOC", "score": 0.5}],
}


def spans_project(directory: Path) -> Project:
    project = Project.init(directory, config={"webapps": {"ner": {
        "type": "ml-assisted-labeling/text-spans-labeling",
        "params": {"unlabeled": "pool", "entity_types": TYPES, "id_column": "key",
                   "queries_ds": "queries"}}}})
    pool = pd.DataFrame({"key": list(TEXTS), "text": list(TEXTS.values())})
    project.dataset("pool", create=True).write(pool)
    project.dataset("queries", create=True).write(pool.assign(
        uncertainty=[0.9, 0.8, 0.7, 0.6], query_rank=range(4), model_version=2,
        prediction=[json.dumps(SUGGESTED[k]) for k in TEXTS]))
    project.variables.incr(session_variable("queries"))
    return project


def shot(page, tmp_path: Path, name: str) -> None:
    for d in filter(None, (tmp_path, os.environ.get("LABELLOOP_SCREENSHOTS"))):
        Path(d).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(d) / f"spans-{name}.png"))


def on_screen(page) -> str:
    return page.eval_on_selector("#ll-item", "el => el.dataset.itemId || ''")


def wait_for_item(page, item: str) -> None:
    page.wait_for_function("id => document.getElementById('ll-item').dataset.itemId === id "
                           "&& document.getElementById('ll-spans')", arg=item)


def drawn(page) -> list[tuple[str, bool]]:
    """The spans on screen: (start:end:label, suggested) from the tokens that end them."""
    return [tuple(x) for x in page.eval_on_selector_all(
        "#ll-spans .ll-tok.ll-last",
        "els => els.map(e => [e.dataset.span, e.classList.contains('ll-sug')])")]


def token(page, text: str):
    return page.locator("#ll-spans .ll-tok").filter(has_text=re.compile(f"^{text}$")).first


def test_spans_page_by_keyboard_and_mouse(tmp_path, serve, page_for):  # noqa: F811
    project = spans_project(tmp_path / "proj")
    server = serve(project.dir, "--no-scheduler")
    page = page_for()
    page.goto(server.url + "/webapps/ner")
    wait_for_item(page, "t0")
    # The legend: each type with its key and colour.
    legend = page.eval_on_selector_all(
        "#ll-categories .ll-cat", "els => els.map(e => [e.dataset.category, e.innerText, "
        "getComputedStyle(e.querySelector('.ll-swatch')).backgroundColor])")
    assert [x[0] for x in legend] == list(TYPES)
    assert "1" in legend[0][1] and "p" in legend[0][1] and len({x[2] for x in legend}) == 3
    # t0: the model's spans drawn as suggestions with their score; Enter accepts them.
    assert drawn(page) == [("0:12:PER", True), ("17:32:PER", True), ("36:42:LOC", True)]
    assert page.eval_on_selector("#ll-spans .ll-last", "e => e.dataset.tag") == "PER 91%"
    assert "3 spans" in page.inner_text("#ll-suggestion")
    shot(page, tmp_path, "1-suggested")
    page.keyboard.press("Enter")
    wait_for_item(page, "t1")
    # t1 by keyboard: Shift+Right extends over "Acme Corp", 2 makes it an ORG; then over to
    # "Grace", Shift+Right to "Hopper", p makes it a PER.
    page.keyboard.press("Shift+ArrowRight")
    page.keyboard.press("2")
    for _ in range(2):
        page.keyboard.press("ArrowRight")
    page.keyboard.press("Shift+ArrowRight")
    page.keyboard.press("p")
    assert drawn(page) == [("0:9:ORG", False), ("16:28:PER", False)]
    shot(page, tmp_path, "2-keyboard")
    page.keyboard.press("Enter")
    wait_for_item(page, "t2")
    # t2 by mouse: a drag over "France" (snapped to the word), then 3 for LOC; a click on the
    # wrongly suggested "is" and Backspace removes it.
    france = token(page, "France").bounding_box()
    page.mouse.move(france["x"] + 3, france["y"] + france["height"] / 2)
    page.mouse.down()
    page.mouse.move(france["x"] + france["width"] - 2, france["y"] + france["height"] / 2,
                    steps=4)
    page.mouse.up()
    page.keyboard.press("3")
    token(page, "is").click()
    page.keyboard.press("Backspace")
    assert drawn(page) == [("0:5:LOC", True), ("12:18:LOC", False)]
    shot(page, tmp_path, "3-mouse")
    page.keyboard.press("Enter")
    wait_for_item(page, "t3")
    # Back to t1 and change its answer: "Acme" alone is the ORG.
    page.keyboard.press("PageUp")
    wait_for_item(page, "t2")
    assert drawn(page) == [("0:5:LOC", False), ("12:18:LOC", False)]
    page.keyboard.press("PageUp")
    wait_for_item(page, "t1")
    assert "Earlier answer (2 spans)" in page.inner_text("#ll-item-mode")
    shot(page, tmp_path, "4-back")
    page.keyboard.press("Backspace")
    page.keyboard.press("o")
    assert drawn(page) == [("0:4:ORG", False), ("16:28:PER", False)]
    page.keyboard.press("Enter")
    wait_for_item(page, "t3")
    # The long text: keys stay quick (printed), a span is drawn, then a skip.
    timings = []
    for _ in range(20):
        timings.append(page.evaluate("""() => new Promise(done => {
            const t0 = performance.now();
            window.dispatchEvent(new KeyboardEvent('keydown', {key: 'ArrowRight'}));
            requestAnimationFrame(() => done(performance.now() - t0)); })"""))
    page.keyboard.press("Shift+ArrowRight")
    page.keyboard.press("l")
    assert ("21:27:LOC", True) in drawn(page)[:1] and len(drawn(page)) == 2
    shot(page, tmp_path, "5-long")
    print(f"\n20,000-character text: key to paint median {statistics.median(timings):.1f} ms, "
          f"max {max(timings):.1f} ms")
    page.keyboard.press("s")
    page.wait_for_function("document.getElementById('ll-done') && "
                           "!document.getElementById('ll-done').hidden")
    wait_idle(page)
    assert page.errors == []
    labels = Project.open(project.dir).dataset("labels").read().set_index("key")["label"]
    assert {k: json.loads(v) for k, v in labels.items()} == {
        "t0": [{k: s[k] for k in ("start", "end", "label")} for s in SUGGESTED["t0"]],
        "t1": [{"start": 0, "end": 4, "label": "ORG"}, {"start": 16, "end": 28, "label": "PER"}],
        "t2": [{"start": 0, "end": 5, "label": "LOC"}, {"start": 12, "end": 18, "label": "LOC"}],
    }
    assert TEXTS["t1"][0:4] == "Acme" and TEXTS["t2"][12:18] == "France"
    meta = Project.open(project.dir).dataset("metadata").read().set_index("data_id")
    assert meta["status"].to_dict() == {"t0": "LABELED", "t1": "LABELED", "t2": "LABELED",
                                        "t3": "SKIPPED"}
