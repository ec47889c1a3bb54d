"""Overlap in headless Chromium: three annotators, each with a token of their own in a browser
context of their own, label a tabular webapp with `annotators_per_item: 2` by keyboard (one
goes back and forward again on the way). Nobody is shown an item twice, every item ends with
exactly two answers, and the stats line says so."""

from __future__ import annotations

from collections import Counter

import pandas as pd
import pytest
from test_webapps_browser import (  # noqa: F401 (fixtures: browser, page_for)
    NEEDS_CHROMIUM,
    browser,
    make_labeling_project,
    open_page,
    page_for,
    read,
    wait_idle,
)

pytestmark = [
    pytest.mark.browser,
    NEEDS_CHROMIUM,
]

ITEMS = 12
TEAM = ("ann", "bob", "cyd")


def _state(page) -> str:
    """What the page shows: an item id, "done", or "" (waiting for items others hold)."""
    return page.evaluate("""() => {
        const id = document.getElementById('ll-item').dataset.itemId;
        if (id) return id;
        return document.getElementById('ll-done').hidden ? '' : 'done'; }""")


def test_three_annotators_label_each_item_twice(tmp_path, serve, page_for, run_cli, poll):  # noqa: F811
    directory = tmp_path / "project"
    rows = pd.DataFrame({"name": [f"row {i}" for i in range(ITEMS)],
                         "size": [1.5 * i for i in range(ITEMS)]})
    # Small batches and holds, so that the three share the items as a team would.
    make_labeling_project(directory, "tabular", rows=rows, id_column="name",
                          annotators_per_item=2, batch_size=2, max_reserved=3)
    tokens = {u: run_cli(directory, "token", "add", u).stdout.splitlines()[0] for u in TEAM}
    server = serve(directory, "--no-scheduler")
    pages = {}
    for user in TEAM:
        pages[user] = page_for(user=None)
        open_page(pages[user], f"{server.url}/webapps/app?token={tokens[user]}")
        assert pages[user].inner_text("#ll-user-name") == user

    shown: dict[str, list[str]] = {u: [] for u in TEAM}
    keys = {"ann": "1", "bob": "2", "cyd": "3"}  # cat, dog, bird
    def labelable_or_all_done() -> bool:
        states = [_state(p) for p in pages.values()]
        return all(s == "done" for s in states) or any(s not in ("", "done") for s in states)

    for step in range(4 * ITEMS):  # each step but the waits answers at least one item
        # Waiting pages look again every 3 s for items the others no longer hold.
        poll(labelable_or_all_done, timeout=30, what="a page to get an item, or all done")
        states = {u: _state(p) for u, p in pages.items()}
        if all(s == "done" for s in states.values()):
            break
        if step == 3:  # mid-way: some items partly answered
            pages["ann"].screenshot(path=str(tmp_path / "overlap-midway.png"), full_page=True)
        for user, page in pages.items():
            current = states[user]
            if current in ("", "done"):
                continue
            if user == "ann" and step in (2, 5) and shown[user]:
                # Back to the last answer and forward again: the same live item, not a
                # second look at an answered one.
                page.keyboard.press("ArrowLeft")
                page.wait_for_function(
                    "id => document.getElementById('ll-item').dataset.itemId === id",
                    arg=shown[user][-1])
                page.keyboard.press("ArrowRight")
                page.wait_for_function(
                    "id => document.getElementById('ll-item').dataset.itemId === id",
                    arg=current)
            shown[user].append(current)
            page.keyboard.press(keys[user])
            page.wait_for_function(
                "old => document.getElementById('ll-item').dataset.itemId !== old", arg=current)
    else:
        pytest.fail(f"not done: {[_state(p) for p in pages.values()]}")
    for page in pages.values():
        wait_idle(page)

    # Nobody was shown an item twice; every item was shown to exactly two annotators.
    for user in TEAM:
        assert len(shown[user]) == len(set(shown[user])), (user, shown[user])
    assert Counter(i for u in TEAM for i in shown[u]) == Counter(
        {r: 2 for r in rows["name"]})
    assert all(shown[u] for u in TEAM)  # the three worked in parallel
    # The datasets: one labels row per answer, two per item, from two different annotators.
    labels, meta = read(directory, "labels"), read(directory, "metadata")
    assert set(Counter(labels["name"]).values()) == {2} and len(labels) == 2 * ITEMS
    assert meta.groupby("data_id")["annotator"].nunique().to_dict() == {
        r: 2 for r in rows["name"]}
    for user in TEAM:
        mine = meta[meta["annotator"] == user]
        assert sorted(mine["data_id"]) == sorted(shown[user])
        assert set(mine["label"]) == {{"ann": "cat", "bob": "dog", "cyd": "bird"}[user]}

    # The stats line: the annotator's own answers and the team's progress.
    page = pages["bob"]
    poll(lambda: "12 complete" in page.inner_text("#ll-progress-text"), timeout=30,
         what="the stats line to show every item complete")
    assert page.inner_text("#ll-progress-text") == (
        f"You: {len(shown['bob'])} labeled · 0 skipped · Items: 12 complete · "
        "0 partly answered · 0 open (2 annotators each)")
    assert page.evaluate("document.getElementById('ll-progress-labeled').style.width") == \
        "100%"
    # "All done" stays alone on screen after the next config poll (applied: a new object).
    page.evaluate("window.labelloop.state.config._old = true")
    page.wait_for_function("!window.labelloop.state.config._old")
    assert page.is_visible("#ll-done") and not page.is_visible("#ll-item")
    page.screenshot(path=str(tmp_path / "overlap-done.png"), full_page=True)
    for p in pages.values():
        assert p.errors == []
