"""The similarity demo in headless Chromium against a real `labelloop serve`.

Five questions answered by keyboard (toggle, untoggle, invert, submit, ignore), then the model
saved with its key; the pairs dataset must hold exactly what the page showed and the keys
chose, and the saved model a new version.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import test_webapps_browser as wb
from test_webapps_browser import NEEDS_CHROMIUM, _wav, media_loaded

from labeling import demo
from labelloop.project import Project

pytestmark = [
    pytest.mark.browser,
    NEEDS_CHROMIUM,
]

# The webapp tests' module fixture: one Chromium launch, written once.
browser = wb.browser


def active_card(page) -> dict:
    """The question id and candidate ids of the highlighted card."""
    page.wait_for_selector(".sl-card.sl-active")
    return page.eval_on_selector(".sl-card.sl-active", """el => ({
        question_id: el.dataset.questionId, query: el.dataset.queryId,
        candidates: [...el.querySelectorAll('.sl-cand')].map(c => c.dataset.id)})""")


def selected(page) -> list[str]:
    return page.eval_on_selector_all(".sl-card.sl-active .sl-cand.sl-selected",
                                     "els => els.map(e => e.dataset.id)")


def wait_question_changed(page, old: str) -> None:
    page.wait_for_function(
        "old => { const el = document.querySelector('.sl-card.sl-active');"
        " return el && el.dataset.questionId !== old; }", arg=old)


def test_answer_five_questions_by_keyboard_then_save(tmp_path, serve, browser):
    project_dir = tmp_path / "similar"
    project = demo.create_demo(project_dir, demo.SIMILARITY)
    # A second similarity webapp over sounds: its page has a player per item.
    project.declare("folders", "sounds")
    for i in range(12):
        project.folder("sounds").write_bytes(f"tone_{i:02d}.wav", _wav(i % 4))
    project.config["webapps"]["similar-sounds"] = {
        "type": "ml-assisted-labeling/similarity-labeling",
        "params": {"unlabeled": "sounds", "pairs_ds": "sound_pairs",
                   "model_name": "sound_embedding", "examples_per_view": 1, "top_k": 3}}
    project.save_config()
    server = serve(project_dir)
    ctx = browser.new_context(viewport={"width": 1280, "height": 900})
    ctx.add_init_script("localStorage.setItem('labelloop.user', 'alice')")
    page = ctx.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{server.url}/webapps/similar-digits")
    page.wait_for_function("document.querySelectorAll('.sl-card').length === 2", timeout=60_000)
    assert page.inner_text("#sl-per-view") == "2" and page.inner_text("#sl-topk") == "8"
    assert page.inner_text("#sl-content-type") == "image"
    # Every candidate is an image with its number key, and every image has loaded.
    assert page.eval_on_selector_all(".sl-card .sl-cand img", "els => els.length") == 16
    assert media_loaded(page, "#sl-questions") == {"images": 18, "players": 0}
    # The images come from the webapp's media route, with the labeling webapps' headers.
    src = page.get_attribute(".sl-card .sl-cand img", "src")
    media = server.get(src)
    assert media.status == 200 and media.headers["Content-Type"] == "image/png"
    assert media.headers["ETag"] and "max-age" in media.headers["Cache-Control"]

    expected: dict[str, tuple[list[str], list[str]] | None] = {}

    def answer(keys: list[str], positives_of) -> None:
        card = active_card(page)
        for key in keys:
            page.keyboard.press(key)
        want = positives_of(card["candidates"])
        assert sorted(selected(page)) == sorted(want)
        expected[card["question_id"]] = (want, [c for c in card["candidates"] if c not in want])
        page.keyboard.press(" ")
        wait_question_changed(page, card["question_id"])

    # 1: toggle candidates 1 and 3, untoggle 3 -> only the first is related.
    answer(["1", "3", "3"], lambda c: [c[0]])
    # 2: invert (all related), then untoggle the second.
    answer(["i", "2"], lambda c: [x for i, x in enumerate(c) if i != 1])
    # 3: the whole question ignored.
    card = active_card(page)
    page.keyboard.press("x")
    expected[card["question_id"]] = None
    wait_question_changed(page, card["question_id"])
    # 4: toggle 1 and 2, then invert -> all but the first two.
    answer(["1", "2", "i"], lambda c: c[2:])
    # 5: the fourth candidate only.
    answer(["4"], lambda c: [c[3]])
    page.wait_for_function("document.getElementById('sl-done').textContent === '5'")
    assert page.inner_text("#sl-ignored") == "1"
    # The model tunes in the background; the page shows the new version when it exists.
    page.wait_for_function("Number(document.getElementById('sl-app').dataset.modelVersion) > 0",
                           timeout=30_000)
    tuned = page.inner_text("#sl-model-version")
    assert tuned.startswith("tuned v"), tuned
    page.keyboard.press("m")
    page.wait_for_function(
        "document.getElementById('sl-saved-note').textContent.startsWith('saved as embedding v1')")
    # What each version is: the saved model's version, and the tuned embedding it holds.
    assert "(the embedding tuned v" in page.inner_text("#sl-saved-note")
    page.wait_for_function("document.getElementById('sl-saved').textContent === '1'")
    shot = Path(os.environ.get("SIMILARITY_SCREENSHOT") or tmp_path / "similarity.png")
    page.screenshot(path=str(shot), full_page=True)
    assert errors == []
    # The sound pool's page: every candidate has a player with a source it can play.
    page.goto(f"{server.url}/webapps/similar-sounds")
    page.wait_for_function("document.querySelectorAll('.sl-card').length === 1", timeout=60_000)
    assert media_loaded(page, "#sl-questions") == {"images": 0, "players": 4}
    # A wrong-typed setting while serving: not applied, the page says why, questions go on.
    cfg = json.loads((project_dir / "project.json").read_text())
    cfg["webapps"]["similar-sounds"]["params"]["top_k"] = "many"
    (project_dir / "project.json").write_text(json.dumps(cfg))
    page.wait_for_selector("#sl-config-error", state="visible", timeout=60_000)
    assert "top_k" in page.inner_text("#sl-config-error")
    card = active_card(page)
    page.keyboard.press("x")
    page.wait_for_function("document.getElementById('sl-ignored').textContent === '1'")
    wait_question_changed(page, card["question_id"])  # the next question, its players
    assert media_loaded(page, "#sl-questions") == {"images": 0, "players": 4}
    page.screenshot(path=str(shot.with_name("similarity-sounds.png")), full_page=True)
    assert errors == []
    ctx.close()

    project = Project.open(project_dir)
    pairs = project.dataset("pairs").read()
    assert len(expected) == 5
    want_rows = set()
    for qid, answer_ in expected.items():
        if answer_ is None:
            assert qid not in set(pairs["question_id"])
            continue
        pos, neg = answer_
        want_rows |= {(qid, c, 1) for c in pos} | {(qid, c, -1) for c in neg}
    got_rows = {(r.question_id, r.candidate_id, int(r.relation)) for r in pairs.itertuples()}
    assert got_rows == want_rows
    assert set(pairs["annotator"]) == {"alice"}
    versions = project.model("embedding").versions()
    assert [v["version"] for v in versions] == [1]
    assert versions[0]["kind"] == "embedding" and versions[0]["rows"] == len(want_rows)
    # The saved model loads with the plugin's trusted types and embeds an image of the pool.
    listed = server.get("/api/v1/webapps/similar-digits/stats").json()
    assert listed["saved"] == 1 and listed["questions"] == 5
    print(json.dumps({"pairs": len(pairs), "screenshot": str(shot)}))
