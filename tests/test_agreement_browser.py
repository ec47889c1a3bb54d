"""The labeling page's Agreement panel in headless Chromium against a real `labelloop serve`:
two annotators answer (through the API) on a `labels_per_annotator` tabular webapp, the admin
opens the page and the panel, and what it shows is checked against `GET agreement`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS, NEEDS_CHROMIUM

from labelloop.project import Project
from labelloop.web.auth import add_token

CATEGORIES = {"cat": None, "dog": None, "bird": None}
ALICE = ["cat", "cat", "dog", "dog", "cat", "bird", "dog", "cat"]
BOB = ["cat", "dog", "dog", "dog", "cat", "cat", "bird", "cat"]

pytestmark = [
    pytest.mark.browser,
    NEEDS_CHROMIUM,
]


def test_the_admin_sees_the_agreement_panel_as_the_api_computes_it(tmp_path, serve):
    sync_api = pytest.importorskip("playwright.sync_api")
    directory = tmp_path / "project"
    project = Project.init(directory, key="AGREE")
    project.dataset("pool", create=True).write(pd.DataFrame({
        "name": [f"row {i}" for i in range(10)], "size": np.arange(10) * 1.5}))
    project.config.setdefault("webapps", {})["app"] = {
        "type": "ml-assisted-labeling/tabular-labeling",
        "params": {"unlabeled": "pool", "categories": CATEGORIES, "labels_ds": "labels",
                   "metadata_ds": "metadata", "labels_per_annotator": True}}
    project.save_config()
    tokens = {"alice": add_token(project, "alice"), "bob": add_token(project, "bob"),
              "boss": add_token(project, "boss", role="admin")}
    server = serve(directory, "--no-scheduler")

    def api(method, path, user, body=None):
        r = server.request(method, f"/api/v1/webapps/app/{path}", json_body=body,
                           headers={"Authorization": f"Bearer {tokens[user]}"})
        assert r.status == 200, r.text
        return r.json()

    items = [i["id"] for i in api("GET", "batch?size=8", "alice")["items"]]
    for item, a, b in zip(items, ALICE, BOB, strict=True):
        api("POST", "labels", "alice", {"id": item, "label": a})
        api("POST", "labels", "bob", {"id": item, "label": b})
    expected = api("GET", "agreement", "boss")
    assert expected["scope"] == "all" and expected["items"] == 8
    assert api("GET", "agreement", "alice")["scope"] == "own"

    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            errors = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{server.url}/webapps/app?token={tokens['boss']}")
            page.wait_for_function("(document.getElementById('ll-item') || {dataset: {}})"
                                   ".dataset.itemId")
            assert not page.is_visible("#ll-agreement-chart")
            page.click("#ll-agreement summary")  # as a person opens the panel
            page.wait_for_function("!['idle', 'loading'].includes(document.getElementById("
                                   "'ll-agreement-body').dataset.state)", timeout=30_000)
            assert page.get_attribute("#ll-agreement-body", "data-state") == "ready", \
                page.inner_text("#ll-agreement-body")
            page.locator("#ll-agreement").scroll_into_view_if_needed()
            # The plot is laid out once the panel is open (it was hidden when the page loaded).
            page.wait_for_function("(r => r.width > 200 && r.height > 150)(document."
                                   "getElementById('ll-agreement-chart').getBoundingClientRect())")
            page.screenshot(path=str(tmp_path / "agreement.png"), full_page=True)
            page.locator("#ll-agreement").screenshot(path=str(tmp_path / "panel.png"))
            print("screenshots:", tmp_path / "agreement.png", tmp_path / "panel.png")

            # The figures shown are the route's.
            assert page.inner_text("#ll-agreement-items") == "8"
            assert page.inner_text("#ll-agreement-alpha") == f"{expected['krippendorff_alpha']:.3f}"
            assert page.inner_text("#ll-agreement-fleiss") == f"{expected['fleiss_kappa']:.3f}"
            rows = page.eval_on_selector_all(
                "#ll-agreement-annotators tr", "trs => trs.slice(1).map(tr =>"
                " [...tr.children].map(td => td.textContent))")
            assert rows == [[r["annotator"], str(r["n"]), f"{r['agreement']:.3f}",
                             f"{r['quality']:.3f}"] for r in expected["per_annotator"]]
            assert [r[0] for r in rows] == ["alice", "bob"]  # the admin sees both
            pairs = page.eval_on_selector_all(
                "#ll-agreement-pairs tr", "trs => trs.slice(1).map(tr =>"
                " [...tr.children].map(td => td.textContent))")
            [pair] = expected["pairwise"]
            assert pairs == [["alice", "bob", "8", f"{pair['cohen_kappa']:.3f}"]]

            # The heat map's cells, read from the Bokeh document in the page.
            cells = page.evaluate(
                "() => { const d = Bokeh.documents[0].get_model_by_name('ll-agreement').data;"
                " return Array.from(d.x, (x, k) => [d.y[k], x, d.count[k], d.text[k]]); }")
            cats = expected["confusion"]["categories"]
            assert cats == ["cat", "dog", "bird"]
            want = [[cats[i], cats[j], n, str(n) if n else ""]
                    for i, row in enumerate(expected["confusion"]["counts"])
                    for j, n in enumerate(row)]
            assert cells == want
            # Hand-checked: pairs (cat,cat) x3, (cat,dog), (dog,dog) x2, (bird,cat), (dog,bird).
            got = {(y, x): n for y, x, n, _t in cells}
            assert got[("cat", "cat")] == 6 and got[("dog", "dog")] == 4
            assert got[("cat", "dog")] == got[("dog", "cat")] == 1
            assert got[("bird", "cat")] == got[("dog", "bird")] == 1 and got[("bird", "bird")] == 0
            assert page.evaluate("Bokeh.documents[0].get_model_by_name('ll-agreement-x')"
                                 ".factors") == cats
            confused = page.inner_text("#ll-agreement-confused")
            assert all(p in confused for p in ("cat ↔ dog (1)", "cat ↔ bird (1)",
                                               "dog ↔ bird (1)"))
            assert "As an admin you see every annotator" in page.inner_text("#ll-agreement-note")
            assert errors == []
        finally:
            browser.close()
    json.dumps(expected, allow_nan=False)
