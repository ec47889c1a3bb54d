"""The labeling page without a browser: shortcuts, bootstrap JSON, the rendered document."""

from __future__ import annotations

import json
import re

import pytest
from bokeh.document import Document
from bokeh.embed import file_html
from bokeh.resources import CDN

from labeling import ui
from labeling.ui import PageSettings, assign_shortcuts, bootstrap, make_document, script_json
from labelloop.descriptors import load_descriptor

WEBAPPS = ("tabular", "image", "sound", "text")


def render(doc: Document) -> str:
    return file_html(doc, CDN, template=doc.template, template_variables=doc.template_variables)


def test_shortcuts_numbers_then_free_letters():
    cats = ["cat", "car", "Sun", "sand", "!!", *[f"c{i}" for i in range(6)]]
    keys = assign_shortcuts(cats)
    assert [k["number"] for k in keys] == [*"123456789", None, None]
    letters = [k["letter"] for k in keys]
    assert letters[:4] == ["c", "a", "u", "n"]  # "s" is skip; "sand" gets its next free letter
    assert "s" not in letters
    assert len(set(letters)) == len(letters)
    assert letters[4] is not None  # a name without letters still gets one


def test_digit_categories_keep_their_own_number_key():
    keys = assign_shortcuts([str(d) for d in range(10)])
    assert [k["number"] for k in keys] == list("0123456789")
    # Mixed names fall back to positions.
    assert [k["number"] for k in assign_shortcuts(["0", "ten"])] == ["1", "2"]


def test_shortcuts_run_out_of_letters():
    keys = assign_shortcuts([f"x{i}" for i in range(30)])
    letters = [k["letter"] for k in keys if k["letter"]]
    assert len(letters) == 25 and len(set(letters)) == 25  # a-z without s


def test_script_json_cannot_close_the_script_element():
    data = {"name": "</script><script>alert(1)</script>", "x": "<!-- & \u2028"}
    text = script_json(data)
    assert "<" not in text and ">" not in text and "&" not in text
    assert json.loads(text) == data


def test_bootstrap_has_categories_with_descriptions_and_keys():
    page = PageSettings(webapp="w", data_type="image", categories={"a": "first", "b": None},
                        multi_label=True)
    boot = bootstrap(page)
    assert boot["api_base"] == "/api/v1/webapps/w"
    assert boot["categories"] == [
        {"name": "a", "number": "1", "letter": "a", "description": "first"},
        {"name": "b", "number": "2", "letter": "b", "description": ""},
    ]
    assert boot["multi_label"] is True
    assert boot["title"] == "Image labeling"


def test_document_has_charts_and_escaped_bootstrap():
    doc = Document()
    page = PageSettings(webapp="w", data_type="tabular",
                        categories={"</script><b>x</b>": "<i>d</i>", "y": None})
    make_document(doc, page, resource_base="/resource/ml-assisted-labeling")
    names = {root.name for root in doc.roots}
    assert names == {"ll_per_label_chart", "ll_metrics_chart", "ll_agreement_chart"}
    assert doc.get_model_by_name(ui.PER_LABEL_SOURCE).data["category"] == ["y", "</script><b>x</b>"]
    html = render(doc)
    assert "<b>x</b>" not in html
    boot = re.search(r'<script type="application/json" id="ll-bootstrap">(.*?)</script>', html,
                     re.S).group(1)
    assert json.loads(boot)["categories"][0]["name"] == "</script><b>x</b>"
    assert re.search(r'src="/resource/ml-assisted-labeling/labeling\.js\?v=\d+"', html)
    assert 'id="ll-item"' in html and 'id="ll-categories"' in html
    # The labeling app runs before Bokeh's scripts, and only Bokeh's core bundle is loaded.
    assert html.index("labeling.js") < html.index("bokeh-")
    assert "bokeh-widgets" not in html and "bokeh-mathjax" not in html


def test_title_is_escaped():
    doc = Document()
    make_document(doc, PageSettings(webapp="<w>", data_type="text", categories={"a": None},
                                    title="<T>"))
    html = render(doc)
    assert "<T>" not in html and "&lt;T&gt;" in html
    assert "<w>" not in html


@pytest.mark.parametrize("kind", WEBAPPS)
def test_webapp_descriptors_share_the_engine_settings(kind):
    desc = load_descriptor("webapp", f"{ui.RESOURCE_DIR.parent}/webapps/{kind}-labeling/webapp.json")
    params = {p["name"]: p for p in desc["params"] if "name" in p}
    assert desc["dataType"] == kind
    for name in ("unlabeled", "categories", "labels_ds", "metadata_ds", "label_col_name",
                 "queries_ds", "multi_label", "labels_per_annotator", "reservation_seconds",
                 "metrics_ds"):
        assert name in params, name
    assert params["unlabeled"]["type"] == ("FOLDER" if kind in ("image", "sound") else "DATASET")
    assert params["categories"]["type"] == "KEY_VALUE_LIST"
    assert params["label_col_name"]["defaultValue"] == "label"
    if kind in ("tabular", "text"):
        assert params["columns"]["type"] == "COLUMNS"
        assert params["id_column"]["type"] == "COLUMN"
