"""dataset import|export of spans: CoNLL 2003, spaCy-style JSON Lines and Label Studio
`labels` results; round trips keep every span; bad files name the line and write nothing."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from labeling.spans.demo_data import generate
from labeling.spans.tokens import dumps_spans, tokenize
from labelloop.errors import LabelloopError
from labelloop.formats import export_file, import_file


@pytest.fixture
def project(make_project):
    return make_project(plugins=False)


def span_labels(n: int = 40) -> pd.DataFrame:
    texts, spans = generate(n, seed=5)
    return pd.DataFrame({"data_id": [f"s{i}" for i in range(n)], "text": texts,
                         "label": [dumps_spans(s) for s in spans],
                         "label_id": range(1, n + 1)})


def covered(df: pd.DataFrame) -> list[list[tuple[str, str]]]:
    """Each row's spans as (covered words, type): what survives any spacing."""
    return [[(" ".join(tokenize(t[s["start"]:s["end"]]).words), s["label"])
             for s in json.loads(v)] for t, v in zip(df["text"], df["label"], strict=True)]


def test_conll_round_trip_keeps_every_span(project, tmp_path):
    labels = span_labels()
    assert (labels["label"] == "[]").any() and (labels["label"] != "[]").any()
    project.dataset("labels", create=True).write(labels)
    out = tmp_path / "labels.conll"
    assert export_file(project, "labels", out) == len(labels)
    lines = out.read_text().splitlines()
    assert lines[0] == "-DOCSTART- -X- -X- O" and lines[2].split()[1:3] == ["-X-", "_"]
    assert import_file(project, "back", out) == {"back": len(labels)}
    back = project.dataset("back").read()
    assert covered(back) == covered(labels)
    for text, original in zip(back["text"], labels["text"], strict=True):
        assert tokenize(text).words == tokenize(original).words
    # the tokens are joined by a space: a second round trip is the same file
    again = tmp_path / "again.conll"
    export_file(project, "back", again, "conll")
    assert again.read_text() == out.read_text()


def test_conll_2003_file_with_pos_and_chunk_columns(project, tmp_path):
    src = tmp_path / "train.txt"
    src.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n"
                   "German JJ B-NP B-MISC\ncall NN I-NP O\n. . O O\n\n"
                   "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n\n")
    import_file(project, "conll", src, "conll", options={"label_col": "ner"})
    df = project.dataset("conll").read()
    assert df["text"].tolist() == ["EU rejects German call .", "Peter Blackburn"]
    assert [json.loads(v) for v in df["ner"]] == [
        [{"start": 0, "end": 2, "label": "ORG"}, {"start": 11, "end": 17, "label": "MISC"}],
        [{"start": 0, "end": 15, "label": "PER"}]]
    assert df["ner_id"].tolist() == [1, 2]


@pytest.mark.parametrize("content, words", [
    ("EU B-ORG\nrejects\n", "line 2: expected a token and its tag"),
    ("EU B-ORG\nrejects X-PER\n", "line 2: 'X-PER' is not a BIO tag"),
    ("\n\n", "holds no text"),
])
def test_bad_conll_names_the_line_and_writes_nothing(project, tmp_path, content, words):
    src = tmp_path / "bad.conll"
    src.write_text(content)
    with pytest.raises(LabelloopError, match=words):
        import_file(project, "bad", src)
    assert not project.dataset("bad", create=True).exists()


@pytest.mark.parametrize("spans, words", [
    ([{"start": 0, "end": 5, "label": "PER"}, {"start": 2, "end": 9, "label": "ORG"}],
     "span 2-9 ORG .* overlaps another span"),
    ([{"start": 1, "end": 5, "label": "PER"}], "span 1-5 PER .'lice'. does not start and end "
                                               "on token boundaries"),
])
def test_conll_export_refuses_spans_bio_cannot_hold(project, tmp_path, spans, words):
    project.dataset("labels", create=True).write(pd.DataFrame({"text": ["Alice Smith left."],
                                                  "label": [json.dumps(spans)]}))
    out = tmp_path / "x.conll"
    with pytest.raises(LabelloopError, match=f"row 1 of 'labels': {words}"):
        export_file(project, "labels", out)
    assert not out.exists()


def test_spacy_jsonl_round_trip_is_exact(project, tmp_path, run_cli):
    labels = span_labels()
    labels.loc[0, "text"] = "  Odd   spacing: Alice  Smith!"
    labels.loc[0, "label"] = dumps_spans([{"start": 17, "end": 29, "label": "PERSON"},
                                          {"start": 2, "end": 5, "label": "X"},
                                          {"start": 2, "end": 11, "label": "Y"}])
    project.dataset("labels", create=True).write(labels)
    out = tmp_path / "labels.jsonl"
    run_cli(project.dir, "dataset", "export", "labels", str(out), "--format", "spacy-jsonl")
    first = json.loads(out.read_text().splitlines()[0])
    assert first == {"text": "  Odd   spacing: Alice  Smith!", "data_id": "s0", "spans": [
        {"start": 2, "end": 5, "label": "X"}, {"start": 2, "end": 11, "label": "Y"},
        {"start": 17, "end": 29, "label": "PERSON"}]}
    run_cli(project.dir, "dataset", "import", "back", str(out), "--format", "spacy-jsonl")
    back = project.dataset("back").read()
    for col in ("data_id", "text", "label"):
        assert back[col].tolist() == labels[col].tolist(), col
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "abc", "spans": []}\n{"text": "abc", "spans": '
                   '[{"start": 1, "end": 7, "label": "A"}]}\n')
    with pytest.raises(LabelloopError, match="line 2: span 1 has bad offsets"):
        import_file(project, "bad", bad, "spacy-jsonl")
    assert not project.dataset("bad", create=True).exists()


def test_label_studio_labels_results_both_ways(project, tmp_path):
    labels = span_labels(12)
    project.dataset("labels", create=True).write(labels)
    out = tmp_path / "tasks.json"
    export_file(project, "labels", out, "label-studio", {"from_name": "ner"})
    tasks = json.loads(out.read_text())
    assert len(tasks) == 12
    for task, text, value in zip(tasks, labels["text"], labels["label"], strict=True):
        (annotation,) = task["annotations"]
        results = annotation["result"]
        assert [r["type"] for r in results] == ["labels"] * len(json.loads(value))
        for r, s in zip(results, json.loads(value), strict=True):
            assert r["from_name"] == "ner" and r["to_name"] == "text"
            assert r["value"] == {"start": s["start"], "end": s["end"],
                                  "text": text[s["start"]:s["end"]], "labels": [s["label"]]}
    # an NER project's export: predictions with span scores, an empty annotation = no entity
    tasks[0]["predictions"] = [{"model_version": "7", "score": 0.75, "result": [
        {**r, "score": 0.5} for r in tasks[0]["annotations"][0]["result"]]}]
    tasks[1]["annotations"][0]["result"] = []
    src = tmp_path / "ls.json"
    src.write_text(json.dumps(tasks))
    import_file(project, "items", src, options={"predictions": "queries"})
    back = project.dataset("items_labels").read()
    expected = labels["label"].tolist()
    expected[1] = "[]"
    assert back["label"].tolist() == expected
    assert back["label_id"].tolist() == labels["label_id"].tolist()
    queries = project.dataset("queries").read()
    assert queries["uncertainty"].tolist() == [0.25]
    assert queries["model_version"].tolist() == ["7"]
    predicted = json.loads(queries["prediction"].iloc[0])
    assert [{k: s[k] for k in ("start", "end", "label")} for s in predicted] == \
        json.loads(labels["label"].iloc[0])
    assert {s["score"] for s in predicted} == {0.5}
    # offsets outside the task's text: named, nothing written
    tasks[2]["annotations"][0]["result"][0]["value"]["end"] = 999
    src.write_text(json.dumps(tasks))
    with pytest.raises(LabelloopError, match="task 3 .id 3.: span 1 has bad offsets"):
        import_file(project, "items2", src, "label-studio")
    assert not project.dataset("items2", create=True).exists()
