"""The four labeling webapps in headless Chromium against a real `labelloop serve`.

Each test generates data, serves it, labels by keyboard and by click, skips, goes back and
changes an answer, then reads the labels and metadata datasets. Timings are printed (run with
`-s` to see them), never asserted.
"""

from __future__ import annotations

import io
import json
import statistics
import time
import wave
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS, NEEDS_CHROMIUM  # noqa: F401 (re-exported)

from labelloop.project import Project

CATEGORIES = {"cat": "a small feline", "dog": "barks", "bird": None}
ANNOTATOR = "alice"
ITEM = "#ll-item"

pytestmark = [
    pytest.mark.browser,
    NEEDS_CHROMIUM,
]


# ---------------------------------------------------------------------------------- data

def _png(i: int) -> bytes:
    from PIL import Image

    img = Image.new("RGB", (48, 32), (i * 37 % 256, 90, 200 - i * 11 % 180))
    for x in range(i % 48):  # a bar whose length tells the items apart
        img.putpixel((x, 16), (255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _wav(i: int, rate: int = 8000) -> bytes:
    t = np.arange(rate // 2) / rate
    signal = 0.6 * np.sin(2 * np.pi * (220 + 30 * i) * t) * np.exp(-4 * t)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((signal * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def make_labeling_project(directory: Path, kind: str, n: int = 40, rows: pd.DataFrame | None = None,
                          **params) -> Project:
    """A project with one webapp `app` of `kind` over `n` generated items."""
    project = Project.init(directory, key=kind.upper())
    settings = {"categories": CATEGORIES, "labels_ds": "labels", "metadata_ds": "metadata",
                **params}
    if kind in ("tabular", "text"):
        if rows is None and kind == "tabular":
            rows = pd.DataFrame({"name": [f"row {i}" for i in range(n)],
                                 "size": np.arange(n) * 1.5,
                                 "notes": [("a long note " * 30) if i % 7 == 0 else f"note {i}"
                                           for i in range(n)]})
        elif rows is None:
            rows = pd.DataFrame({"text": [f"Message {i}\nsecond line\n\n    indented line {i}"
                                          for i in range(n)],
                                 "source": ["mail" if i % 2 else "chat" for i in range(n)]})
        project.dataset("pool", create=True).write(rows)
        settings["unlabeled"] = "pool"
    else:
        project.declare("folders", "files")
        folder = project.folder("files")
        for i in range(n):
            if kind == "image":
                folder.write_bytes(f"img/{i:03d}.png", _png(i))
            else:
                folder.write_bytes(f"clip_{i:03d}.wav", _wav(i))
        settings["unlabeled"] = "files"
    project.config.setdefault("webapps", {})["app"] = {
        "type": f"ml-assisted-labeling/{kind}-labeling", "params": settings}
    project.save_config()
    return project


# ---------------------------------------------------------------------------------- browser

@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page_for(browser):
    """`page_for(user=ANNOTATOR)`: a fresh page (own storage) that knows its annotator."""
    contexts = []

    def make(user: str | None = ANNOTATOR):
        ctx = browser.new_context(viewport={"width": 1280, "height": 860})
        contexts.append(ctx)
        if user:
            ctx.add_init_script(f"localStorage.setItem('labelloop.user', {json.dumps(user)})")
        page = ctx.new_page()
        page.errors = []
        page.on("pageerror", lambda exc: page.errors.append(str(exc)))
        return page

    yield make
    for ctx in contexts:
        ctx.close()


def item_id(page) -> str:
    return page.eval_on_selector(ITEM, "el => el.dataset.itemId || ''")


def wait_item_change(page, old: str, polling: float | str | None = None) -> str:
    """Wait for another item on screen; `polling="raf"` checks on every frame (for timings:
    the suite's waits otherwise check every 50 ms, tests/conftest.py)."""
    page.wait_for_function(
        "old => { const el = document.getElementById('ll-item');"
        " return el.dataset.itemId && el.dataset.itemId !== old; }", arg=old, polling=polling)
    return item_id(page)


def wait_idle(page) -> None:
    """Every answer sent and acknowledged by the server."""
    page.wait_for_function("window.labelloop && window.labelloop.idle()")
    assert page.evaluate("window.labelloop.state.errors") == []


def open_page(page, url: str) -> float:
    """Open the page; seconds from navigation to the first item on screen."""
    t0 = time.perf_counter()
    page.goto(url)
    page.wait_for_function("(document.getElementById('ll-item') || {dataset: {}}).dataset.itemId")
    return time.perf_counter() - t0


# Every image decoded (naturalWidth > 0) and every player with a source whose metadata loaded.
_MEDIA_STATE = """scope => {
    const root = document.querySelector(scope);
    if (!root) return null;
    const images = [...root.querySelectorAll('img')];
    const players = [...root.querySelectorAll('audio, video')];
    const broken = images.filter(i => !(i.complete && i.naturalWidth > 0))
        .map(i => 'image ' + (i.getAttribute('src') || '(no src)'))
        .concat(players.filter(a => !(a.getAttribute('src') && a.currentSrc && !a.error
                                      && a.readyState >= 1))
                .map(a => 'player ' + (a.getAttribute('src') || '(no src)')));
    return {images: images.length, players: players.length, broken: broken};
}"""


def media_loaded(page, scope: str = "body", minimum: int = 1, timeout: float = 30_000) -> dict:
    """Wait until every image under `scope` has loaded and every player has a source it can
    play; fails naming what did not load. Returns {"images", "players"} (at least `minimum`
    in all): the check of every page that shows media."""
    try:
        page.wait_for_function(
            f"([scope, minimum]) => {{ const s = ({_MEDIA_STATE})(scope);"
            " return s && s.images + s.players >= minimum && s.broken.length === 0; }",
            arg=[scope, minimum], timeout=timeout)
    except Exception:
        state = page.evaluate(f"({_MEDIA_STATE})", scope)
        raise AssertionError(f"media under {scope!r} did not all load: {state}") from None
    state = page.evaluate(f"({_MEDIA_STATE})", scope)
    return {"images": state["images"], "players": state["players"]}


def off_screen_keys(page) -> list[str]:
    """The category buttons not wholly inside the window (the page itself never scrolls)."""
    return page.evaluate("""() => [...document.querySelectorAll('#ll-categories button')]
        .filter(b => { const r = b.getBoundingClientRect();
                       return r.height === 0 || r.top < 0 || r.left < 0
                           || r.bottom > innerHeight || r.right > innerWidth; })
        .map(b => b.dataset.category)""")


def read(project_dir: Path, name: str) -> pd.DataFrame:
    return Project.open(project_dir).dataset(name).read()


def label_walk(page) -> dict:
    """Three labels by keyboard, one by click, a skip, then back twice and a change.

    Returns the item ids and the answers they should end with.
    """
    ids, expected = [], {}
    current = item_id(page)
    for key, label in (("1", "cat"), ("d", "dog"), ("3", "bird")):  # number and letter keys
        ids.append(current)
        expected[current] = ("LABELED", label)
        page.keyboard.press(key)
        current = wait_item_change(page, current)
    ids.append(current)
    expected[current] = ("LABELED", "dog")
    page.click("#ll-categories button[data-category='dog']")
    current = wait_item_change(page, current)
    ids.append(current)
    expected[current] = ("SKIPPED", None)
    page.keyboard.press("s")
    live = wait_item_change(page, current)
    # Back twice: the skipped item, then the clicked one; change the latter to cat.
    page.keyboard.press("ArrowLeft")
    page.wait_for_function("id => document.getElementById('ll-item').dataset.itemId === id",
                           arg=ids[4])
    assert "skipped" in page.inner_text("#ll-item-mode")
    page.keyboard.press("ArrowLeft")
    page.wait_for_function("id => document.getElementById('ll-item').dataset.itemId === id",
                           arg=ids[3])
    assert page.get_attribute("#ll-categories button[data-category='dog']",
                              "aria-pressed") == "true"
    page.keyboard.press("c")
    expected[ids[3]] = ("LABELED", "cat")
    # A changed answer goes back to the item that was waiting.
    page.wait_for_function("id => document.getElementById('ll-item').dataset.itemId === id",
                           arg=live)
    wait_idle(page)
    return {"ids": ids, "expected": expected, "live": live}


def check_datasets(project_dir: Path, expected: dict, id_of_label_row) -> None:
    labels = read(project_dir, "labels")
    meta = read(project_dir, "metadata")
    want_labels = {i: lab for i, (status, lab) in expected.items() if status == "LABELED"}
    got_labels = {id_of_label_row(row): row["label"] for _, row in labels.iterrows()}
    assert got_labels == want_labels
    assert labels["label_id"].is_unique
    got_meta = {row["data_id"]: (row["status"], row["label"] if row["status"] == "LABELED"
                                 else None) for _, row in meta.iterrows()}
    assert got_meta == expected
    assert set(meta["annotator"]) == {ANNOTATOR}
    assert len(meta) == len(expected)


def keyboard_latency(page, n: int = 20) -> tuple[float, float]:
    """Median ms from a key press to the next item shown: measured here, and in the page."""
    page.evaluate("window.labelloop.state.timings = []")
    current = item_id(page)
    spans = []
    for i in range(n):
        t0 = time.perf_counter()
        page.keyboard.press(str(1 + i % 3))
        current = wait_item_change(page, current, polling="raf")
        spans.append((time.perf_counter() - t0) * 1000)
    in_page = page.evaluate("window.labelloop.state.timings")
    wait_idle(page)
    return statistics.median(spans), statistics.median(in_page) if in_page else float("nan")


def reopen(page) -> float:
    """Seconds from a reload (server warm) to the first item on screen."""
    t0 = time.perf_counter()
    page.reload()
    page.wait_for_function("document.getElementById('ll-item').dataset.itemId")
    return time.perf_counter() - t0


def report(kind: str, first: float, latency: tuple[float, float], warm: float) -> None:
    print(f"\n[{kind}] page open -> first item: {first * 1000:.0f} ms (server's first page), "
          f"{warm * 1000:.0f} ms (reload); key -> next item (median of 20): "
          f"{latency[0]:.1f} ms from the test, {latency[1]:.1f} ms in the page")


def row_id_by(column: str, ids_by_value: dict):
    return lambda row: ids_by_value[row[column]]


# ---------------------------------------------------------------------------------- tests

def test_tabular_labeling(tmp_path, serve, page_for):
    directory = tmp_path / "project"
    make_labeling_project(directory, "tabular", id_column="name")
    server = serve(directory, "--no-scheduler")
    page = page_for(user=None)
    t0 = time.perf_counter()
    page.goto(server.url + "/webapps/app")
    # The annotator's name is asked once, then kept in the browser.
    page.fill("#ll-name-input", ANNOTATOR)
    page.click("#ll-name-ok")
    page.wait_for_function("document.getElementById('ll-item').dataset.itemId")
    first = time.perf_counter() - t0
    assert page.inner_text("#ll-user-name") == ANNOTATOR
    # The row shows as a key/value table, with every column.
    assert page.locator("#ll-item table.ll-kv th").all_inner_texts() == ["name", "size", "notes"]
    # Typing in the comment box does not trigger shortcuts; the comment goes with the answer.
    first_id = item_id(page)
    page.fill("#ll-comment", "")
    page.type("#ll-comment", "s1d ")
    page.keyboard.press("Escape")
    assert item_id(page) == first_id
    walk = label_walk(page)
    check_datasets(directory, walk["expected"], lambda row: row["name"])
    meta = read(directory, "metadata").set_index("data_id")
    assert meta.loc[first_id, "comment"] == "s1d"
    # Reload: the name is not asked again.
    page.reload()
    page.wait_for_function("document.getElementById('ll-item').dataset.itemId")
    assert not page.is_visible("#ll-name-dialog")
    assert page.inner_text("#ll-user-name") == ANNOTATOR
    assert "4 labeled · 1 skipped" in page.inner_text("#ll-progress-text")
    # Back after a reload pages through the server's history: the newest answer is the skip.
    live = item_id(page)
    page.keyboard.press("ArrowLeft")
    page.wait_for_function("id => document.getElementById('ll-item').dataset.itemId === id",
                           arg=walk["ids"][4])
    assert "skipped" in page.inner_text("#ll-item-mode")
    page.keyboard.press("ArrowRight")
    page.wait_for_function("id => document.getElementById('ll-item').dataset.itemId === id",
                           arg=live)
    latency = keyboard_latency(page)
    page.screenshot(path=str(tmp_path / "tabular.png"), full_page=True)
    report("tabular", first, latency, reopen(page))
    assert page.errors == []


def walk_check_and_time(page, tmp_path: Path, kind: str, first: float, directory: Path,
                        id_of_label_row) -> None:
    """The common end of a webapp test: the label walk, the datasets it must leave, the
    keyboard timings, a screenshot, and no error in the page."""
    walk = label_walk(page)
    check_datasets(directory, walk["expected"], id_of_label_row)
    if kind in ("image", "sound"):  # the item on screen after the walk, too
        media_loaded(page)
    latency = keyboard_latency(page)
    page.screenshot(path=str(tmp_path / f"{kind}.png"), full_page=True)
    report(kind, first, latency, reopen(page))
    assert page.errors == []


def test_image_labeling(tmp_path, serve, page_for):
    directory = tmp_path / "project"
    make_labeling_project(directory, "image")
    server = serve(directory, "--no-scheduler")
    page = page_for()
    page.set_viewport_size({"width": 1280, "height": 720})  # a common laptop window
    first = open_page(page, server.url + "/webapps/app")
    assert media_loaded(page) == {"images": 1, "players": 0}
    box = page.eval_on_selector("#ll-item img.ll-image", "el => el.getBoundingClientRect().width")
    assert box > 48 * 4  # a small image is scaled up to fit the pane
    # The keys are beside the item without scrolling; the side panel scrolls on its own.
    assert off_screen_keys(page) == []
    assert page.evaluate("document.scrollingElement.scrollHeight <= innerHeight")
    # Once its charts are drawn the panel is taller than the window: it scrolls on its own.
    page.wait_for_function("() => { const el = document.querySelector('.ll-panel');"
                           " return el.scrollHeight > el.clientHeight"
                           " && getComputedStyle(el).overflowY === 'auto'; }")
    page.screenshot(path=str(tmp_path / "image-1280x720.png"))
    page.set_viewport_size({"width": 800, "height": 600})
    assert off_screen_keys(page) == []
    assert page.eval_on_selector("#ll-item img.ll-image",
                                 "el => el.getBoundingClientRect().bottom <= innerHeight")
    page.screenshot(path=str(tmp_path / "image-800x600.png"))
    page.set_viewport_size({"width": 1280, "height": 720})
    walk_check_and_time(page, tmp_path, "image", first, directory,
                        lambda row: row["path"])


def test_sound_labeling(tmp_path, serve, page_for):
    directory = tmp_path / "project"
    make_labeling_project(directory, "sound")
    server = serve(directory, "--no-scheduler")
    page = page_for()
    first = open_page(page, server.url + "/webapps/app")
    assert page.is_visible("#ll-item audio[controls]")
    assert media_loaded(page) == {"images": 0, "players": 1}
    # The waveform is drawn from the decoded clip: its middle column has dark samples.
    page.wait_for_function("""() => {
        const c = document.getElementById('ll-wave');
        if (!c) return false;
        const d = c.getContext('2d').getImageData(20, 0, 1, c.height).data;
        for (let i = 0; i < d.length; i += 4) if (d[i + 2] > 120 && d[i] < 120) return true;
        return false; }""")
    page.wait_for_function("document.getElementById('ll-audio').duration > 0.4")
    walk_check_and_time(page, tmp_path, "sound", first, directory,
                        lambda row: row["path"])


def test_text_labeling(tmp_path, serve, page_for):
    directory = tmp_path / "project"
    texts = [f"Message {i}\nsecond line\n\n    indented line {i}" for i in range(40)]
    rows = pd.DataFrame({"text": texts, "source": ["mail" if i % 2 else "chat" for i in range(40)]})
    make_labeling_project(directory, "text", rows=rows, columns=["source"], text_column="text")
    server = serve(directory, "--no-scheduler")
    page = page_for()
    first = open_page(page, server.url + "/webapps/app")
    shown = page.inner_text("#ll-item .ll-text")
    assert shown in texts  # line breaks and indentation kept
    assert page.locator("#ll-item table.ll-kv th").all_inner_texts() == ["source"]
    walk_check_and_time(page, tmp_path, "text", first, directory,
                        lambda row: _text_id(page, row["text"]))


def _text_id(page, text: str) -> str:
    """The item id the page showed for a text (content hash ids come from the server)."""
    ids = page.evaluate("window.labelloop.state.history.map(h => [h.id, h.data && h.data.text])")
    return next(i for i, t in ids if t == text)


def test_data_is_shown_as_text(tmp_path, serve, page_for):
    directory = tmp_path / "project"
    payload = "<script>window.__pwned = 1</script><img src=x onerror='window.__pwned = 2'>"
    rows = pd.DataFrame({"name": [f"r{i}" for i in range(3)], "html": [payload] * 3})
    make_labeling_project(directory, "tabular", rows=rows,
                          categories={"<b>bold</b>": "<i>desc</i>", "plain": None})
    server = serve(directory, "--no-scheduler")
    page = page_for()
    open_page(page, server.url + "/webapps/app")
    cell = page.locator("#ll-item td").nth(1)
    assert cell.inner_text() == payload
    assert page.locator("#ll-item script, #ll-item img").count() == 0
    assert page.inner_text("#ll-categories button >> nth=0").splitlines()[-2:] == [
        "<b>bold</b>", "<i>desc</i>"]
    page.keyboard.press("1")
    wait_idle(page)
    assert page.evaluate("window.__pwned") is None
    assert read(directory, "labels")["label"].tolist() == ["<b>bold</b>"]
    page.screenshot(path=str(tmp_path / "escaped.png"), full_page=True)


def test_suggestion_enter_accepts_and_done_state(tmp_path, serve, page_for):
    directory = tmp_path / "project"
    rows = pd.DataFrame({"name": ["a", "b", "c"], "size": [1.0, 2.0, 3.0]})
    project = make_labeling_project(directory, "tabular", rows=rows, id_column="name",
                                    queries_ds="queries")
    project.dataset("queries", create=True).write(rows.assign(
        uncertainty=[0.9, 0.5, 0.1], prediction=["dog", "bird", "cat"],
        confidence=[0.55, 0.7, 0.95]))
    # A metrics history that has stopped moving: plotted, with a stopping warning.
    project.dataset("metrics", create=True).write(pd.DataFrame({
        "labels": [20, 40, 60, 80], "model_version": [1, 2, 3, 4],
        "auc": [0.7, 0.801, 0.802, 0.803], "contradictions": [None, 0.05, 0.045, 0.044]}))
    server = serve(directory, "--no-scheduler")
    page = page_for()
    open_page(page, server.url + "/webapps/app")
    assert item_id(page) == "a"  # most uncertain first
    assert page.inner_text("#ll-session").startswith("Most informative first")
    assert "dog" in page.inner_text("#ll-suggestion")
    assert "55%" in page.inner_text("#ll-suggestion")
    assert page.is_visible("#ll-halting")
    page.wait_for_selector("#ll-warnings", state="visible")
    assert page.locator("#ll-warnings p").count() == 1
    assert "unlikely to help" in page.inner_text("#ll-warnings")
    page.wait_for_selector("#ll-metrics", state="visible")
    page.wait_for_function("window.Bokeh && Bokeh.documents.length && Bokeh.documents[0]"
                           ".get_model_by_name('ll-metrics').data.labels.length === 4")
    page.wait_for_timeout(300)  # let the plot draw before the picture
    page.screenshot(path=str(tmp_path / "suggestion.png"), full_page=True)
    page.keyboard.press("Enter")
    wait_item_change(page, "a")
    page.keyboard.press("Enter")
    wait_item_change(page, "b")
    page.keyboard.press("2")  # override the suggestion
    page.wait_for_selector("#ll-done", state="visible")
    wait_idle(page)
    assert "3 labeled" in page.inner_text("#ll-done")
    labels = read(directory, "labels").set_index("name")["label"].to_dict()
    assert labels == {"a": "dog", "b": "bird", "c": "dog"}
    page.screenshot(path=str(tmp_path / "done.png"), full_page=True)


def test_multi_label_toggles(tmp_path, serve, page_for):
    directory = tmp_path / "project"
    make_labeling_project(directory, "text", n=5, multi_label=True)
    server = serve(directory, "--no-scheduler")
    page = page_for()
    open_page(page, server.url + "/webapps/app")
    first = item_id(page)
    page.keyboard.press("1")
    page.keyboard.press("3")
    page.keyboard.press("1")  # toggled off again
    page.keyboard.press("2")
    assert item_id(page) == first  # nothing sent before Enter
    page.keyboard.press("Enter")
    wait_item_change(page, first)
    wait_idle(page)
    meta = read(directory, "metadata")
    assert meta["data_id"].tolist() == [first]
    assert sorted(json.loads(meta["label"].iloc[0])) == ["bird", "dog"]


def test_wrong_settings_show_a_message(tmp_path, serve, page_for):
    directory = tmp_path / "project"
    make_labeling_project(directory, "tabular", n=3, categories={"only": None})
    server = serve(directory, "--no-scheduler")
    page = page_for()
    page.goto(server.url + "/webapps/app")
    # The server shows why the webapp could not start, in the page (no traceback).
    message = page.get_by_text("only one category")
    message.wait_for()
    assert "add at least two" in message.inner_text()
    assert "Traceback" not in page.locator(".labelloop-error").inner_text()
    page.screenshot(path=str(tmp_path / "settings.png"), full_page=True)


def test_token_user_is_the_annotator(tmp_path, serve, page_for):
    from labelloop.web.auth import add_token

    directory = tmp_path / "project"
    project = make_labeling_project(directory, "image", n=4)
    token = add_token(project, "carol")
    server = serve(directory, "--no-scheduler")
    page = page_for(user=None)
    open_page(page, f"{server.url}/webapps/app?token={token}")
    assert "token" not in page.url  # the server swapped it for a cookie
    assert not page.is_visible("#ll-name-dialog")  # the name comes from the token
    assert page.inner_text("#ll-user-name") == "carol"
    assert not page.is_visible("#ll-user-change")
    first = item_id(page)
    page.keyboard.press("2")
    wait_item_change(page, first)
    wait_idle(page)
    meta = read(directory, "metadata")
    assert meta[["data_id", "annotator", "label"]].values.tolist() == [[first, "carol", "dog"]]


def test_new_queries_session_reorders_the_queue(tmp_path, serve, page_for, poll):
    from labeling.publish import session_variable

    directory = tmp_path / "project"
    names = [f"r{i:02d}" for i in range(12)]
    rows = pd.DataFrame({"name": names, "size": np.arange(12.0)})
    project = make_labeling_project(directory, "tabular", rows=rows, id_column="name",
                                    queries_ds="queries")
    server = serve(directory, "--no-scheduler")
    page = page_for()
    open_page(page, server.url + "/webapps/app")
    answered = [item_id(page)]
    page.keyboard.press("1")
    current = wait_item_change(page, answered[0])
    wait_idle(page)
    where = "() => ['#ll-item', '#ll-categories', '#ll-skip'].map(s => {" \
            " const r = document.querySelector(s).getBoundingClientRect(); return [r.x, r.y]; })"
    before = page.evaluate(where)
    # The Query Sampler's part: new queries (r11 most uncertain ... r00 least), then the session.
    project.dataset("queries", create=True).write(rows.assign(
        uncertainty=np.linspace(0.0, 1.0, 12), prediction="dog", confidence=0.5))
    project.variables.incr(session_variable("queries"))
    headers = {"X-Labelloop-User": ANNOTATOR}
    poll(lambda: server.get("/api/v1/webapps/app/config", headers=headers).json()
         .get("queue_session") == 1, what="the queue of session 1")
    answered.append(current)
    page.keyboard.press("1")
    current = wait_item_change(page, current)  # already on screen before the answer's reply
    page.wait_for_function("document.getElementById('ll-banner').textContent.includes('retrained')")
    # The banner comes and goes over the item pane: nothing under it moves.
    assert page.is_visible("#ll-banner")
    shown = page.evaluate(where)
    page.screenshot(path=str(tmp_path / "retrained-banner.png"))
    page.wait_for_selector("#ll-banner", state="hidden")
    after = page.evaluate(where)
    # The item shown may be of the new order, with its suggestion line above it (then the item
    # sits lower than the one before): compared with itself once the banner has gone, and the
    # buttons with where they always were.
    assert shown == after and shown[1:] == before[1:], (before, shown, after)
    wait_idle(page)
    answered.append(current)
    page.keyboard.press("1")
    current = wait_item_change(page, current)
    expected = next(n for n in reversed(names) if n not in answered)
    assert current == expected
    assert "session 1" in page.inner_text("#ll-session")
    assert page.is_visible("#ll-suggestion") and page.is_visible("#ll-halting")
