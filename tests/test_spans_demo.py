"""`labelloop demo --data spans`: created, served and ready to label; then the whole loop on
it in headless Chromium.

The browser test marks entities with the mouse and with the keyboard, lets a colleague label
over the API until the every-n scenario fires, waits for the real retrain (Train span tagger,
Query Sampler, labeling metrics), accepts the model's suggested spans with Enter, removes a
suggested span, goes back and changes an answer, then reads the labels dataset and the page's
metrics chart (entity F1: a span model has no AUC). Screenshots go to the test's tmp directory
(and to $LABELLOOP_SCREENSHOTS when set).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pandas as pd
import pytest
import warm_launch
from conftest import TEST_POSTGRES, http, new_database_url, wait_for
from test_spans_browser import drawn, shot
from test_webapps_browser import ANNOTATOR, NEEDS_CHROMIUM, browser, page_for, wait_idle  # noqa: F401

from labeling import demo
from labeling.spans.demo_data import ENTITY_TYPES
from labelloop.project import Project

WEBAPP = "label-entities"
KEYS = {name: str(i + 1) for i, name in enumerate(ENTITY_TYPES)}  # PERSON 1, ORG 2, LOC 3, DATE 4
COLLEAGUE = {"X-Labelloop-User": "colleague"}


def truth_of(directory: Path) -> dict[str, list[dict]]:
    df = pd.read_csv(directory / demo.GROUND_TRUTH, dtype=str)
    return {i: json.loads(v) for i, v in zip(df["id"], df["label"], strict=True)}


def text_of(project: Project) -> dict[str, str]:
    pool = project.dataset("unlabeled").read()
    return dict(zip(pool["data_id"], pool["text"], strict=True))


# --------------------------------------------------------------------------- the command


def test_demo_command_serves_spans_ready_to_label(tmp_path):
    """`labelloop demo --data spans --no-browser` creates the project and serves it: the page,
    the spans kind's config and batch, an answer, the every-n scenario."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("LABELLOOP_PROJECT", None)
    database = ["--database-url", new_database_url()] if TEST_POSTGRES else []
    log_path = tmp_path / "demo.log"
    with open(log_path, "wb") as log:
        proc = warm_launch.popen(
            [*database, "demo", "--dir", str(tmp_path / "d"), "--data", "spans",
             "--no-browser", "--port", "0"], stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        def printed_url():
            assert proc.poll() is None, log_path.read_text()
            for line in log_path.read_text().splitlines():
                if line.startswith("labeling page: "):
                    return line.removeprefix("labeling page: ").strip()
            return None

        url = wait_for(printed_url, timeout=90, what="the demo's URL")
        assert url.endswith(f"/webapps/{WEBAPP}")
        assert "created project ENTITIES" in log_path.read_text()
        api = url.split("/webapps/")[0] + f"/api/v1/webapps/{WEBAPP}"

        def config():
            assert proc.poll() is None, log_path.read_text()
            try:
                r = http("GET", api + "/config", timeout=5)
            except OSError:
                return None
            return r.json() if r.status == 200 else None

        cfg = wait_for(config, timeout=90, what="the webapp's config")
        assert cfg["kind"] == "spans" and cfg["overlapping_spans"] is False
        assert [c["name"] for c in cfg["categories"]] == list(ENTITY_TYPES)
        project = Project.open(tmp_path / "d", database_url=database[1] if database else None)
        truth, texts = truth_of(project.dir), text_of(project)
        assert len(truth) == len(texts) == 400
        batch = http("GET", api + "/batch?size=3", headers=COLLEAGUE).json()
        assert batch["stats"]["total"] == 400 and len(batch["items"]) == 3
        first = batch["items"][0]
        assert first["data"]["text"] == texts[first["id"]] and first["suggestion"] is None
        answer = http("POST", api + "/labels", headers=COLLEAGUE,
                      json_body={"id": first["id"], "spans": truth[first["id"]]})
        assert answer.status == 200, answer.text
        assert answer.json()["stats"]["labeled"] == 1
        history = http("GET", api + "/annotations", headers=COLLEAGUE).json()["annotations"]
        assert history[0]["id"] == first["id"] and history[0]["spans"] == truth[first["id"]]
        page = http("GET", url)
        assert page.status == 200 and "spans.js" in page.text
        scenarios = http("GET", url.split("/webapps/")[0] + "/api/v1/scenarios").json()
        scenarios = scenarios["scenarios"] if isinstance(scenarios, dict) else scenarios
        (loop,) = scenarios
        assert loop["id"] == demo.SCENARIO and loop["steps"] == [
            "recipe train", "recipe sample", "labeling-metrics"]
        assert loop["triggers"][0]["params"]["i_labeling_count"] == demo.DEFAULT_N
        labels = project.dataset("labels").read()
        assert json.loads(labels.set_index("data_id").loc[first["id"], "label"]) == \
            truth[first["id"]]
        project.engine.dispose()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


# --------------------------------------------------------------------------- the page

N = 12  # labels between two retrains in the browser test's demo
PAGE_FIRST = 3  # of which the page labels the first ones, a colleague the rest


def on_screen(page) -> str:
    """The item on screen once its text is drawn."""
    page.wait_for_function("document.getElementById('ll-item').dataset.itemId "
                           "&& document.getElementById('ll-spans')")
    return page.eval_on_selector("#ll-item", "el => el.dataset.itemId")


def wait_next(page, old: str) -> str:
    page.wait_for_function("old => { const id = document.getElementById('ll-item').dataset"
                           ".itemId; return id && id !== old && document.getElementById("
                           "'ll-spans'); }", arg=old)
    return on_screen(page)


def tokens(page, text: str) -> list[tuple[int, int]]:
    """The page's tokens of `text`: character offsets, as the editor counts them."""
    return [tuple(t) for t in page.evaluate(
        "t => window.LabelloopSpans.tokenize(t).map(x => [x.start, x.end])", text)]


def token_range(toks: list[tuple[int, int]], span: dict) -> tuple[int, int]:
    first = next(i for i, t in enumerate(toks) if t[0] == span["start"])
    last = next(i for i, t in enumerate(toks) if t[1] == span["end"])
    return first, last


def mark_by_keyboard(page, toks, span: dict, key: str | None = None) -> None:
    """Home, arrows to the span's first token, Shift+arrows to its last, then the type key."""
    first, last = token_range(toks, span)
    page.keyboard.press("Home")
    for _ in range(first):
        page.keyboard.press("ArrowRight")
    for _ in range(last - first):
        page.keyboard.press("Shift+ArrowRight")
    page.keyboard.press(key or KEYS[span["label"]])


def token_box(page, i: int) -> dict:
    return page.locator(f'#ll-spans .ll-tok[data-i="{i}"]').bounding_box()


def mark_by_mouse(page, toks, span: dict) -> None:
    """A drag from inside the span's first word to inside its last, then the type key."""
    first, last = token_range(toks, span)
    a, b = token_box(page, first), token_box(page, last)
    page.mouse.move(a["x"] + 2, a["y"] + a["height"] / 2)
    page.mouse.down()
    page.mouse.move(b["x"] + b["width"] - 2, b["y"] + b["height"] / 2, steps=4)
    page.mouse.up()
    page.keyboard.press(KEYS[span["label"]])


def shown(spans: list[dict], suggested: bool) -> list[tuple[str, bool]]:
    return [(f"{s['start']}:{s['end']}:{s['label']}", suggested)
            for s in sorted(spans, key=lambda s: (s["start"], s["end"]))]


def bare(spans: list[dict]) -> list[dict]:
    return sorted(({k: s[k] for k in ("start", "end", "label")} for s in spans),
                  key=lambda s: (s["start"], s["end"], s["label"]))


@pytest.mark.browser
@NEEDS_CHROMIUM
def test_spans_demo_loop_in_the_browser(tmp_path, serve, page_for):  # noqa: F811
    project = demo.create_demo(tmp_path / "demo", demo.SPANS, n=N)
    truth, texts = truth_of(project.dir), text_of(project)
    server = serve(project.dir, "--period", "0.5")
    api = f"/api/v1/webapps/{WEBAPP}"
    page = page_for()
    page.goto(server.url + f"/webapps/{WEBAPP}")
    expected: dict[str, list[dict]] = {}

    # 1. Before any model: the page marks the true entities, by keyboard, by mouse, and both.
    item = on_screen(page)
    for k in range(PAGE_FIRST):
        toks = tokens(page, texts[item])
        for j, span in enumerate(truth[item]):
            by_mouse = k == 1 or (k == 2 and j % 2 == 1)
            (mark_by_mouse if by_mouse else mark_by_keyboard)(page, toks, span)
        assert drawn(page) == shown(truth[item], False), texts[item]
        if k < 2:
            shot(page, tmp_path, f"demo-1-{'keyboard' if k == 0 else 'mouse'}")
        expected[item] = truth[item]
        page.keyboard.press("Enter")
        item = wait_next(page, item)

    # 2. A colleague labels over the API until the every-n scenario fires (before the first
    # ranking: once more than n labels are in); the real retrain.
    colleague = N + 1 - PAGE_FIRST
    batch = server.get(f"{api}/batch?size={colleague}", headers=COLLEAGUE).json()
    assert len(batch["items"]) == colleague
    for it in batch["items"]:
        assert it["id"] not in expected and it["id"] != item  # the page's items are its own
        r = server.post(f"{api}/labels", {"id": it["id"], "spans": truth[it["id"]]},
                        headers=COLLEAGUE)
        assert r.status == 200, r.text

    def retrained():
        runs = server.get(f"/api/v1/scenarios/{demo.SCENARIO}/runs").json()
        runs = runs["runs"] if isinstance(runs, dict) else runs
        assert not any(r["status"] == "FAILED" for r in runs), runs
        return any(r["status"] == "SUCCESS" for r in runs)

    wait_for(retrained, timeout=120, what="the every-n scenario's run")
    page.wait_for_function("window.labelloop.state.orderSession >= 1", timeout=60_000)
    # The item on screen came before the retrain: the page marks it by mouse.
    toks = tokens(page, texts[item])
    for span in truth[item]:
        mark_by_mouse(page, toks, span)
    expected[item] = truth[item]
    page.keyboard.press("Enter")
    item = wait_next(page, item)

    # 3. The model's order and its suggested spans: dashed, with their score.
    queries = Project.open(project.dir).dataset("queries").read().set_index("data_id")
    accepted = removed = None
    for _ in range(12):
        assert item in queries.index and item not in expected
        predicted = json.loads(queries.loc[item, "prediction"])
        assert str(queries.loc[item, "model_version"]) == "1"
        assert drawn(page) == shown(predicted, True)
        if accepted is None and predicted:
            span = predicted[0]
            last = token_range(tokens(page, texts[item]), span)[1]
            tag = page.eval_on_selector(f'#ll-spans .ll-tok[data-i="{last}"]',
                                        "e => [e.dataset.tag, getComputedStyle(e)"
                                        ".borderRightStyle]")
            assert tag == [f"{span['label']} {round(span['score'] * 100)}%", "dashed"]
            assert f"{len(predicted)} span" in page.inner_text("#ll-suggestion")
            shot(page, tmp_path, "demo-2-suggested")
            accepted = item
            expected[item] = bare(predicted)  # Enter accepts the spans as they stand
        elif accepted is not None and removed is None and len(predicted) >= 2:
            # A click on the second suggested span and Backspace remove it.
            gone = sorted(predicted, key=lambda s: (s["start"], s["end"]))[1]
            first = token_range(tokens(page, texts[item]), gone)[0]
            page.locator(f'#ll-spans .ll-tok[data-i="{first}"]').click()
            page.keyboard.press("Backspace")
            kept = [s for s in predicted if s is not gone]
            assert drawn(page) == shown(kept, True)
            shot(page, tmp_path, "demo-3-removed")
            removed = (item, gone)
            expected[item] = bare(kept)
        else:
            expected[item] = bare(predicted)
        page.keyboard.press("Enter")
        item = wait_next(page, item)
        if removed is not None:
            break
    assert accepted is not None and removed is not None, "no suggestion to accept or remove"

    # 4. Back to the last answer and change it: the removed extent, with another type.
    live = item
    page.keyboard.press("PageUp")
    back, gone = removed
    assert wait_next(page, live) == back
    assert f"Earlier answer ({len(expected[back])} span" in page.inner_text("#ll-item-mode")
    assert drawn(page) == shown(expected[back], False)
    other = next(t for t in ENTITY_TYPES if t != gone["label"])
    mark_by_keyboard(page, tokens(page, texts[back]), gone, KEYS[other])
    expected[back] = bare([*expected[back], {**gone, "label": other}])
    assert drawn(page) == shown(expected[back], False)
    shot(page, tmp_path, "demo-4-changed")
    page.keyboard.press("Enter")
    assert wait_next(page, back) == live
    wait_idle(page)

    # 5. The labels dataset holds exactly those spans, at the texts' character offsets.
    reopened = Project.open(project.dir)
    labels = reopened.dataset("labels").read().set_index("data_id")["label"]
    meta = reopened.dataset("metadata").read()
    mine = set(meta.loc[meta["annotator"] == ANNOTATOR, "data_id"])
    assert mine == set(expected)
    assert {i: json.loads(labels[i]) for i in expected} == expected
    for i in set(labels.index) - mine:  # the colleague's, as sent
        assert json.loads(labels[i]) == truth[i]
    for i in expected:
        if i not in (accepted, back) and i in truth and expected[i] == truth[i]:
            for s in expected[i]:
                assert texts[i][s["start"]:s["end"]].strip() == texts[i][s["start"]:s["end"]]
    assert [texts[back][s["start"]:s["end"]] for s in expected[back]
            if s["label"] == other and (s["start"], s["end"]) == (gone["start"], gone["end"])] \
        == [texts[back][gone["start"]:gone["end"]]]

    # 6. The metrics chart plots the span model's entity F1 (it has no AUC).
    metrics = reopened.dataset("metrics").read()
    assert metrics["auc"].isna().all() and metrics["f1"].notna().all()
    page.wait_for_function(
        "() => { const d = window.Bokeh.documents[0].get_model_by_name('ll-metrics');"
        " return d && d.data.f1 && d.data.f1.length > 0 && isFinite(d.data.f1[0]); }")
    chart = page.evaluate(
        "() => { const doc = window.Bokeh.documents[0];"
        " const d = doc.get_model_by_name('ll-metrics').data;"
        " const legend = [...doc.all_models].filter(m => m.type === 'LegendItem' ||"
        " (m.constructor && m.constructor.__name__ === 'LegendItem'))"
        " .map(m => m.label && (m.label.value !== undefined ? m.label.value : m.label));"
        " return {labels: Array.from(d.labels), f1: Array.from(d.f1), legend: legend,"
        " note: document.getElementById('ll-metrics-empty').hidden}; }")
    assert chart["labels"] == [float(v) for v in metrics["labels"]]
    assert chart["f1"] == pytest.approx([float(v) for v in metrics["f1"]])
    assert "entity F1" in chart["legend"] and "AUC" not in chart["legend"], chart
    assert chart["note"] is True
    page.locator("#ll-metrics").scroll_into_view_if_needed()
    shot(page, tmp_path, "demo-5-metrics")
    assert page.errors == []
    print(f"\nspans demo: retrained on {int(metrics['labels'].iloc[0])} labels, entity F1 "
          f"{float(metrics['f1'].iloc[0]):.3f}; accepted {len(expected[accepted])} suggested "
          f"spans; screenshots in {tmp_path}")
