"""`labelloop report learning-curve` and the page's learning-curve panel, on the digits demo
after 100 labels posted over the API as the keyboard sends them, against a direct computation:
the report and the panel show the same figures for the same labels (one computation)."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import CHROMIUM, CHROMIUM_ARGS
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import KFold

from labeling import demo
from labeling.report import DEFAULTS, for_page, reached, webapp_settings
from labeling.training import build_pipeline
from labelloop.project import Project

WEBAPP = "label-digits"
LABELS = 100
USER = {"X-Labelloop-User": "keyboard"}


def post_labels(server, truth: dict[str, str], count: int) -> None:
    """Label `count` items as the page does: GET batch, then POST labels one by one."""
    done = 0
    while done < count:
        batch = server.get(f"/api/v1/webapps/{WEBAPP}/batch?size=10", headers=USER).json()
        assert batch["items"], "the queue ran dry"
        for item in batch["items"][: count - done]:
            resp = server.post(f"/api/v1/webapps/{WEBAPP}/labels",
                               {"id": item["id"], "label": truth[item["id"]]}, headers=USER)
            assert resp.status == 200, resp.text
            done += 1


@pytest.fixture(scope="module")
def labeled_demo(tmp_path_factory, serve_module):
    """The digits demo served (no scheduler: no retrain during the test), 100 labels given."""
    directory = tmp_path_factory.mktemp("report") / "digits"
    project = demo.create_demo(directory, "image", n=20)
    truth = dict(pd.read_csv(project.dir / demo.GROUND_TRUTH, dtype=str).values)
    server = serve_module(project.dir, "--no-scheduler")
    post_labels(server, truth, LABELS)
    return project.dir, server


def direct_given_curve(project: Project, points: list[int], folds: int, seed: int = 0
                       ) -> list[float]:
    """The in-order curve computed here, with scikit-learn only, from the labels dataset."""
    cfg = webapp_settings(project, WEBAPP)
    labels = project.dataset(cfg.labels_ds).read().sort_values("label_id")
    y = labels["label"].astype(str).to_numpy()
    pipeline = build_pipeline("image", "logistic_regression", "path",
                              str(project.folder(cfg.unlabeled).root))
    X = pipeline[:1].fit_transform(labels[["path"]])
    n = len(y)
    out = []
    for m in points:
        accs = []
        for train, test in KFold(n_splits=folds, shuffle=True, random_state=seed).split(X):
            first = train[train < m]  # in order: row i is the i-th label given
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                if len(np.unique(y[first])) == 1:
                    accs.append(float(np.mean(y[test] == y[first][0])))
                    continue
                model = pipeline[1:].fit(X[first], y[first])
            accs.append(float(np.mean(model.predict(X[test]) == y[test])))
        out.append(float(np.mean(accs)))
    assert n == LABELS
    return out


def test_cli_prints_the_figures_and_writes_the_plot(labeled_demo, run_cli, tmp_path):
    directory, _ = labeled_demo
    plot = tmp_path / "curve.html"
    args = ("report", "learning-curve", "--webapp", WEBAPP, "--orders", "1", "--folds", "3",
            "--step", "25", "--out", str(plot))
    as_json = json.loads(run_cli(directory, *args, "--json", timeout=600).stdout)
    assert as_json["plot"] == str(plot)
    html = plot.read_text()
    assert "Bokeh" in html and "your order" in html and "random order" in html
    assert as_json["points"] == [25, 50, 75, 100] and as_json["labels"] == LABELS
    assert as_json["folds"] == 3
    project = Project.open(directory)
    direct = direct_given_curve(project, as_json["points"], as_json["folds"])
    np.testing.assert_allclose(as_json["given"], direct, atol=1e-6)
    assert as_json["accuracy"] == pytest.approx(direct[-1], abs=1e-6)
    # all labels in any order are the same labels: the curves meet at the end
    assert as_json["random"][-1] == pytest.approx(direct[-1], abs=1e-6)
    assert as_json["target"] == pytest.approx(direct[-1] - 0.01, abs=1e-6)
    assert as_json["given_reached"] == pytest.approx(
        reached(as_json["points"], direct, direct[-1] - 0.01))


def test_the_report_says_what_it_computed_and_draws_a_png(labeled_demo, run_cli, report_figures,
                                                         tmp_path):
    directory, _ = labeled_demo
    png = tmp_path / "curve.png"
    out = run_cli(directory, "report", "learning-curve", "--webapp", WEBAPP, "--out", str(png),
                  timeout=600).stdout
    print(out)  # the figures, for the closing note (pytest -rP shows them)
    lines = out.splitlines()
    assert lines[0] == (f"{LABELS} labels of 10 categories in webapp '{WEBAPP}'; "
                        f"logistic_regression, {DEFAULTS['folds']}-fold cross-validation, "
                        f"{DEFAULTS['orders']} random orders")
    assert lines[1] == f"today's accuracy (all 100 labels): {report_figures['accuracy']:.3f}"
    assert "random order would have needed about" in out or "random order only" in out
    assert lines[-1] == f"plot: {png}"
    from PIL import Image

    with Image.open(png) as img:  # matplotlib's figure: 8 x 4.8 inches at 100 dpi
        assert img.format == "PNG" and img.size == (800, 480)
        # Not a blank canvas: the two curves' colours are drawn.
        colours = {c for _n, c in img.convert("RGB").getcolors(1 << 20)}
    assert (31, 119, 180) in colours and (128, 128, 128) in colours
    print(f"PNG to look at: {png}")


def test_too_few_labels_is_a_clear_message(tmp_path, run_cli):
    project = demo.create_demo(tmp_path / "fresh", "tabular", n=5)
    proc = run_cli(project.dir, "report", "learning-curve", "--webapp", "label-iris",
                   check=False)
    assert proc.returncode != 0
    assert "has no labels yet" in proc.stderr + proc.stdout
    assert not (project.dir / "reports").exists()  # nothing written
    unknown = run_cli(project.dir, "report", "learning-curve", "--webapp", "nope", check=False)
    assert unknown.returncode != 0 and "no webapp 'nope'" in unknown.stderr + unknown.stdout
    answer = for_page(project, webapp_settings(project, "label-iris"))
    assert answer["enough"] is False and "label at least 20" in answer["message"]


@pytest.fixture(scope="module")
def report_figures(labeled_demo, run_cli) -> dict:
    """What `labelloop report learning-curve --json` says with its defaults."""
    directory, _ = labeled_demo
    return json.loads(run_cli(directory, "report", "learning-curve", "--webapp", WEBAPP,
                              "--json", "--out", str(directory / "curve.html"),
                              timeout=600).stdout)


def test_the_page_route_and_the_report_give_the_same_figures(labeled_demo, report_figures):
    _, server = labeled_demo
    resp = server.get(f"/api/v1/webapps/{WEBAPP}/learning-curve", headers=USER, timeout=600)
    assert resp.status == 200, resp.text
    body = resp.json()
    assert body["enough"] is True
    assert (body["folds"], body["orders"]) == (DEFAULTS["folds"], DEFAULTS["orders"])
    for key in ("labels", "folds", "orders", "algorithm", "points", "given", "random",
                "random_sd", "accuracy", "target", "given_reached", "random_reached", "saved",
                "computed_at"):  # the CLI's computation, kept: the same labels, one computation
        assert body[key] == report_figures[key], key


@pytest.mark.browser
def test_panel_shows_the_learning_curve(labeled_demo, page_for_curve, report_figures, tmp_path):
    _, server = labeled_demo
    page = page_for_curve()
    page.goto(f"{server.url}/webapps/{WEBAPP}")
    page.wait_for_selector("#ll-curve summary")
    page.click("#ll-curve summary")  # a person opens the panel
    page.wait_for_function(
        "document.getElementById('ll-curve-body').dataset.state === 'ready'", timeout=600_000)
    shown = {k: page.text_content(f"#ll-curve-{k}") for k in ("labels", "accuracy", "given",
                                                              "random")}
    expected = report_figures  # the panel shows what the report says
    assert shown["labels"] == str(LABELS)
    assert shown["accuracy"] == f"{expected['accuracy']:.3f}"
    assert shown["given"] == (f"{round(expected['given_reached'])} labels"
                              if expected["given_reached"] is not None else "not yet")
    assert shown["random"] == (f"about {round(expected['random_reached'])} labels"
                               if expected["random_reached"] is not None
                               else f"all {LABELS} labels")
    polylines = page.eval_on_selector_all("#ll-curve-chart polyline",
                                          "els => els.map(e => e.getAttribute('points'))")
    assert len(polylines) == 2
    assert all(len(p.split()) == len(expected["points"]) for p in polylines)
    # Both axes have ticks, and the curves' points sit where the ticks say.
    xticks = [int(t) for t in page.eval_on_selector_all(
        "#ll-curve-chart .ll-curve-xtick", "els => els.map(e => e.textContent)")]
    yticks = [float(t) for t in page.eval_on_selector_all(
        "#ll-curve-chart .ll-curve-ytick", "els => els.map(e => e.textContent)")]
    assert len(xticks) >= 3 and xticks[0] == 0 and xticks[-1] <= LABELS
    assert len(yticks) >= 3 and yticks[-1] == 1.0
    assert min(yticks) <= min(expected["given"] + expected["random"])
    # Nothing is cut off: the caption and the legend wrap inside the panel, in full.
    caption = page.text_content("#ll-curve-caption")
    assert f"{expected['folds']}-fold cross-validation" in caption
    assert f"{expected['orders']} random orders" in caption
    inside = page.evaluate("""() => {
        const body = document.getElementById('ll-curve-body').getBoundingClientRect();
        return ['ll-curve-caption', 'll-curve-legend', 'll-curve-chart'].map((id) => {
          const e = document.getElementById(id), r = e.getBoundingClientRect();
          return [id, r.width > 0 && r.left >= body.left - 1 && r.right <= body.right + 1
                  && e.scrollWidth <= e.clientWidth + 1];
        });
    }""")
    assert all(ok for _id, ok in inside), inside
    legend = page.text_content("#ll-curve-legend")
    assert "your order" in legend and "random order (mean)" in legend
    page.locator("#ll-curve").screenshot(path=str(tmp_path / "learning-curve-panel.png"))
    print(f"screenshot to look at: {tmp_path / 'learning-curve-panel.png'}")
    assert page.errors == []


@pytest.fixture
def page_for_curve():
    """A headless Chromium page (skipped when Playwright or chromium is missing)."""
    if not CHROMIUM.exists():
        pytest.skip(f"needs Chromium at {CHROMIUM}")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.add_init_script("localStorage.setItem('labelloop.user', 'keyboard')")

        def make():
            page = context.new_page()
            page.errors = []
            page.on("pageerror", lambda exc: page.errors.append(str(exc)))
            return page

        yield make
        browser.close()


def test_a_new_label_computes_the_curve_again(labeled_demo, report_figures, run_cli):
    """Runs last (it adds a label): the kept computation serves the same labels only."""
    directory, server = labeled_demo
    project = Project.open(directory)
    truth = dict(pd.read_csv(project.dir / demo.GROUND_TRUTH, dtype=str).values)
    post_labels(server, truth, 1)
    body = server.get(f"/api/v1/webapps/{WEBAPP}/learning-curve", headers=USER,
                      timeout=600).json()
    assert body["enough"] is True and body["labels"] == LABELS + 1
    assert body["computed_at"] > report_figures["computed_at"]
    # The CLI asked with the page's settings for the same 101 labels: the server's computation.
    again = json.loads(run_cli(directory, "report", "learning-curve", "--webapp", WEBAPP,
                               "--json", "--out", str(directory / "curve.html")).stdout)
    assert again["computed_at"] == body["computed_at"] and again["given"] == body["given"]
    kept = project.variables.get(f"learning-curve/{WEBAPP}")
    assert kept["curve"]["labels"] == LABELS + 1
