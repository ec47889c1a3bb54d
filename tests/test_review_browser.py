"""Review mode in headless Chromium against a real `labelloop serve`: two annotators (overlap
k = 2) disagree or are flagged by a label issues dataset; a reviewer opens `?mode=review` with a reviewer
token and fixes two flagged items by keyboard; the consensus dataset shows the reviewed
labels."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS, NEEDS_CHROMIUM, create_project

from labelloop.project import Project

CATS = {"cat": "a small feline", "dog": "barks", "bird": None}  # keys 1, 2, 3

pytestmark = [
    pytest.mark.browser,
    NEEDS_CHROMIUM,
]


def api(server, token, method, path, body=None):
    res = server.request(method, f"/api/v1/webapps/app/{path}", json_body=body,
                         headers={"Authorization": f"Bearer {token}"})
    assert res.status == 200, res.text
    return res.json()


def test_a_reviewer_fixes_flagged_items_by_keyboard(tmp_path, serve, run_cli):
    sync_api = pytest.importorskip("playwright.sync_api")
    project = create_project(tmp_path / "p", {"webapps": {"app": {
        "type": "ml-assisted-labeling/tabular-labeling",
        "params": {"unlabeled": "pool", "categories": CATS, "labels_ds": "labels",
                   "metadata_ds": "metadata", "id_column": "name",
                   "annotators_per_item": 2, "consensus_ds": "consensus",
                   "label_issues_ds": "issues"}}}}, plugins=False)
    names = ["Tom", "Rex", "Tweety", "Felix", "Odie"]
    project.dataset("pool", create=True).write(pd.DataFrame(
        {"name": names, "sound": ["meow", "woof", "tweet", "meow", "woof"],
         "legs": [4, 4, 2, 4, 4]}))
    project.dataset("issues", create=True).write(pd.DataFrame(
        {"name": ["Rex", "Tweety"], "given_label": ["cat", "cat"],
         "suggested_label": ["dog", "bird"], "quality": [0.1, 0.3],
         "reason": ["the model gives 'cat' a probability of 0.10",
                    "the model gives 'cat' a probability of 0.30"],
         "model_version": [1, 1]}))
    tokens = {name: run_cli(project.dir, "token", "add", name, *role).stdout.strip()
              for name, role in (("ann", ()), ("bob", ()), ("rita", ("--role", "reviewer")))}
    server = serve(project.dir, "--no-scheduler")
    for item, answers in {"Tom": [("ann", "cat"), ("bob", "dog")],    # disagree: 0.5
                          "Rex": [("ann", "cat"), ("bob", "cat")],    # flagged: 0.9
                          "Tweety": [("ann", "cat")],                 # flagged: 0.7
                          "Felix": [("ann", "cat"), ("bob", "cat")],  # fine
                          }.items():
        for user, label in answers:
            api(server, tokens[user], "POST", "labels", {"id": item, "label": label})

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 860}).new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{server.url}/webapps/app?mode=review&token={tokens['rita']}")
            assert "token" not in page.url and "mode=review" in page.url
            shown = "id => document.getElementById('ll-item').dataset.itemId === id"
            page.wait_for_function(shown, arg="Rex")
            assert page.inner_text("#ll-user-name") == "rita"
            # What the page shows, against the data: the item, each answer, the consensus,
            # the suggestion (the label issue's) and why the item is here.
            assert "woof" in page.inner_text("#ll-item")
            answers = page.locator("#ll-rv-answers li").all_inner_texts()
            assert [a.split() for a in answers] == [["ann", "cat"], ["bob", "cat"]]
            assert page.inner_text("#ll-rv-consensus") == "cat"
            assert page.inner_text("#ll-rv-suggestion") == "dog"
            assert "the model gives 'cat' a probability of 0.10" in \
                page.inner_text("#ll-rv-reason")
            assert page.inner_text(".ll-rv-score") == "0.90"
            page.keyboard.press(" ")  # take the suggestion: dog
            page.wait_for_function(shown, arg="Tweety")
            assert page.inner_text("#ll-rv-suggestion") == "bird"
            page.fill("#ll-comment", "wings")
            page.locator("#ll-comment").press("Escape")
            page.keyboard.press("3")  # the third category: bird
            page.wait_for_function(shown, arg="Tom")  # moved on: the disagreement is next
            assert [a.split() for a in page.locator("#ll-rv-answers li").all_inner_texts()] \
                == [["ann", "cat"], ["bob", "dog"]]
            assert "2 answers disagree" in page.inner_text("#ll-rv-reason")
            page.wait_for_function("window.labelloopReview.idle()")
            page.evaluate("window.labelloopReview.flush()")
            page.wait_for_function(
                "document.getElementById('ll-rv-progress').textContent.startsWith("
                "'Reviewed here: 2')")
            page.screenshot(path=str(tmp_path / "review.png"), full_page=True)
            assert errors == []
            # The labeling page links to Review mode.
            page.goto(f"{server.url}/webapps/app")
            page.wait_for_selector("#ll-review-link")
        finally:
            browser.close()

    consensus = Project.open(project.dir, database_url=project.database_url) \
        .dataset("consensus").read().set_index("name")
    got = consensus.loc[["Rex", "Tweety", "Tom", "Felix"],
                        ["label", "source", "reviewer", "comment"]]
    assert got.where(got.notna(), None).values.tolist() == [
        ["dog", "reviewed", "rita", None], ["bird", "reviewed", "rita", "wings"],
        ["cat", "majority", None, None], ["cat", "majority", None, None]]
    assert json.loads(consensus.loc["Rex", "answers"]) == [
        {"annotator": "ann", "label": "cat"}, {"annotator": "bob", "label": "cat"}]
    left = api(server, tokens["rita"], "GET", "review")["items"]
    assert [i["id"] for i in left] == ["Tom"]
