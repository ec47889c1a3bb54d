"""The host's public row-level dataset API (insert / update / delete by a host-owned row key,
in the caller's transaction), `table()` without side effects, variables read in a given
connection, and the boundary: the labeling plugin writes no SQL against the host's tables."""

from __future__ import annotations

import re
import threading
from pathlib import Path

import pandas as pd
import pytest

from labelloop.errors import ConflictError, LabelloopError, NotFoundError
from labelloop.project import Project

pytestmark = pytest.mark.usefixtures("clean_env")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def project(tmp_path) -> Project:
    return Project.init(tmp_path / "proj", key="TEST")


def updated(project: Project, name: str):
    from labelloop.project.db import datasets_table as t  # the host's own test may look

    with project.engine.connect() as conn:
        return conn.execute(t.select().where(t.c.name == name)).mappings().first()["updated"]


def test_insert_update_delete_by_key_in_the_callers_transaction(project):
    ds = project.dataset("labels", create=True)
    ds.write(pd.DataFrame({"id": [1], "label": ["a"], "label_id": [10]}), storage="rows")
    before = updated(project, "labels")
    with project.write_transaction() as conn:
        k2 = ds.insert(conn, {"id": 2, "label": "b", "label_id": 20})
        k3 = ds.insert(conn, {"id": 3, "label_id": 30})  # a missing column is NULL
        assert ds.update(conn, k2, {"label": "B"}) == 1
        assert ds.update(conn, k3, {"label": "c"}, match={"label_id": 999}) == 0  # guarded
        assert ds.update(conn, None, {"label": "C"}, match={"label_id": 30}) == 1
        assert ds.delete(conn, 1, match={"label_id": 10}) == 1
    assert k2 != k3
    out = ds.read()
    assert out["id"].tolist() == [2, 3] and out["label"].tolist() == ["B", "C"]
    assert updated(project, "labels") > before  # the dataset says it changed


def test_row_writes_roll_back_with_the_callers_transaction(project):
    ds = project.dataset("labels", create=True)
    ds.write(pd.DataFrame({"id": [1], "label": ["a"]}), storage="rows")
    with pytest.raises(RuntimeError), project.write_transaction() as conn:
        ds.insert(conn, {"id": 2, "label": "b"})
        ds.update(conn, 1, {"label": "changed"})
        raise RuntimeError("caller fails")
    assert ds.read()["label"].tolist() == ["a"]


def test_row_writes_refuse_bad_input_clearly_and_write_nothing(project):
    ds = project.dataset("labels", create=True)
    with project.write_transaction() as conn, pytest.raises(NotFoundError, match="no data yet"):
        ds.insert(conn, {"id": 1})
    ds.write(pd.DataFrame({"id": [1], "label": ["a"]}), storage="rows")
    with project.write_transaction() as conn:
        with pytest.raises(LabelloopError, match="no column 'nope'; its columns are id, label"):
            ds.insert(conn, {"id": 2, "nope": 1})
        with pytest.raises(LabelloopError, match="no column 'nope'"):
            ds.update(conn, 1, {"label": "x"}, match={"nope": 1})
        with pytest.raises(LabelloopError, match="needs a key or a match"):
            ds.delete(conn, None)
        # ignore_extra: unknown values are left out, a match on a missing column matches none
        k = ds.insert(conn, {"id": 2, "nope": 1}, ignore_extra=True)
        assert ds.update(conn, k, {"label": "y"}, match={"nope": 1}, ignore_extra=True) == 0
    assert ds.read()["id"].tolist() == [1, 2]
    big = project.dataset("big", create=True)
    big.write(pd.DataFrame({"id": range(3)}), storage="columns")
    with project.write_transaction() as conn, \
            pytest.raises(ConflictError, match="column-wise.*to_rows"):
        big.insert(conn, {"id": 9})
    assert big.storage == "columns" and big.count() == 3  # nothing converted or written


def test_a_replaced_dataset_gets_fresh_keys_and_statements(project):
    ds = project.dataset("labels", create=True)
    ds.write(pd.DataFrame({"id": [1, 2], "label": ["a", "b"]}), storage="rows")
    with project.write_transaction() as conn:
        ds.insert(conn, {"id": 3, "label": "c"})
    ds.write(pd.DataFrame({"id": [7], "extra": [1.5]}), storage="rows")  # another schema
    with project.write_transaction() as conn:
        k = ds.insert(conn, {"id": 8, "extra": 2.5})
        assert ds.update(conn, k, {"extra": 3.5}) == 1
    assert ds.read().to_dict("list") == {"id": [7, 8], "extra": [1.5, 3.5]}


def test_variables_read_in_the_given_connection(tmp_path):
    project = Project.init(tmp_path / "proj", key="TEST")
    project.variables.initial["start"] = 5
    with project.write_transaction() as conn:
        project.variables.set("n", 3, conn=conn)
        assert project.variables.get("n", conn=conn) == 3  # sees its own uncommitted write
        assert project.variables.get("start", conn=conn) == 5
        assert project.variables.get("none", 0, conn=conn) == 0
    assert project.variables.get("n") == 3


def test_labels_written_by_the_engine_mark_their_dataset_updated(project):
    from labeling.engine import LabelingEngine
    from labeling.settings import parse_settings

    project.dataset("pool", create=True).write(pd.DataFrame({"num": range(10)}))
    cfg = parse_settings({"unlabeled": "pool", "categories": {"cat": None, "dog": None},
                          "labels_ds": "labels", "metadata_ds": "metadata"},
                         "tabular", "w", project)
    engine = LabelingEngine(project, cfg, check_interval=0, background=False)
    ids = [i["id"] for i in engine.batch("ann", 3)["items"]]
    engine.label("ann", ids[0], "cat")
    first = updated(project, "labels")
    engine.label("ann", ids[1], "dog")
    engine.label("ann", ids[0], "dog")  # a change updates the same row
    assert updated(project, "labels") > first
    assert project.dataset("labels").read()["label"].tolist() == ["dog", "dog"]
    engine.skip("ann", ids[1])  # a skip removes its label row
    assert project.dataset("labels").count() == 1 and project.dataset("metadata").count() == 2


# SQL naming one of the host's tables (ll_*), or the host's private row column.
HOST_SQL = re.compile(r"(FROM|INTO|UPDATE|JOIN|TABLE|EXISTS)\s+[\"`]?ll_\w+|RETURNING\s+_row|"
                      r"\b(datasets_table|variables_table|dataset_chunks_table)\b", re.I)


def test_the_labeling_plugin_writes_no_sql_against_the_hosts_tables():
    sources = [p for d in ("python-lib/labeling", "webapps", "custom-recipes", "python-steps",
                           "python-triggers") for p in sorted((ROOT / d).rglob("*.py"))]
    assert len(sources) > 20
    hits = [f"{p.relative_to(ROOT)}:{n}: {line.strip()}" for p in sources
            for n, line in enumerate(p.read_text().splitlines(), 1) if HOST_SQL.search(line)]
    assert not hits, ("the plugin must use the host's public dataset/variables API, not SQL "
                      "on its tables:\n" + "\n".join(hits))


def test_prepare_writes_chunk_files_without_the_lock_and_commit_swaps_them_in(project):
    ds = project.dataset("queries", create=True)
    ds.write(pd.DataFrame({"id": range(5)}), storage="columns")
    big = pd.DataFrame({"id": range(250_000), "u": [0.5] * 250_000})
    with ds.prepare(big, storage="columns") as prepared:
        staged = sorted((project.dir / "data" / prepared.staging).glob("*.arrow"))
        assert len(staged) == 3  # written and synced already, before any lock
        # Meanwhile another writer is not held up: the files were written without the lock.
        with project.write_transaction() as conn:
            project.variables.set("other", 1, conn=conn)
        assert ds.read()["id"].tolist() == list(range(5))  # nothing visible yet
        with project.write_transaction() as conn:
            prepared.commit(conn)
    assert ds.count() == 250_000 and ds.read(limit=2, offset=199_999)["id"].tolist() == [
        199_999, 200_000]
    with pytest.raises(LabelloopError, match="already committed"), \
            project.write_transaction() as conn:
        prepared.commit(conn)
    ds._sweep()
    dirs = [d.name for d in (project.dir / "data").iterdir()]
    assert dirs == [Path(ds.chunk_files()[0]["path"]).parent.name]  # old generation swept


def test_a_failed_prepared_write_leaves_the_old_data_and_no_files(project):
    ds = project.dataset("queries", create=True)
    ds.write(pd.DataFrame({"id": range(3)}), storage="columns")
    before = {p.name for p in (project.dir / "data").iterdir()}
    with pytest.raises(RuntimeError), ds.prepare(pd.DataFrame({"id": range(9)}),
                                                 storage="columns") as prepared:
        assert (project.dir / "data" / prepared.staging).is_dir()
        raise RuntimeError("the scoring failed before the commit")
    assert {p.name for p in (project.dir / "data").iterdir()} == before
    assert ds.read()["id"].tolist() == [0, 1, 2]
    with pytest.raises(LabelloopError, match="unknown storage 'cols'"):
        ds.prepare(pd.DataFrame({"id": [1]}), storage="cols")


def test_write_takes_the_write_lock_only_after_its_chunk_files_are_written(project,
                                                                          monkeypatch):
    from labelloop.project.datasets import chunks as datasets_mod

    ds = project.dataset("queries", create=True)
    other_done = []
    real_encode = datasets_mod._encode

    def encode_while_another_writer_commits(frame):
        # Another writer commits while the chunk files are being written: with the lock
        # already taken it would wait (busy timeout 60 s) instead of finishing at once.
        t = threading.Thread(target=project.variables.set, args=("x", 1))
        t.start()
        t.join(10)
        other_done.append(not t.is_alive())
        return real_encode(frame)

    monkeypatch.setattr(datasets_mod, "_encode", encode_while_another_writer_commits)
    ds.write(pd.DataFrame({"id": range(20_000)}), storage="columns")
    assert other_done == [True] and ds.count() == 20_000 and project.variables.get("x") == 1


def test_a_labels_dataset_reimported_column_wise_is_converted_once_by_the_next_answer(project):
    from labeling.engine import LabelingEngine
    from labeling.settings import parse_settings

    project.dataset("pool", create=True).write(pd.DataFrame({"num": range(10)}))
    cfg = parse_settings({"unlabeled": "pool", "categories": {"cat": None, "dog": None},
                          "labels_ds": "labels", "metadata_ds": "metadata"},
                         "tabular", "w", project)
    engine = LabelingEngine(project, cfg, check_interval=0, background=False)
    ids = [i["id"] for i in engine.batch("ann", 2)["items"]]
    engine.label("ann", ids[0], "cat")
    labels = project.dataset("labels")
    labels.write(labels.read(), storage="columns")  # e.g. `dataset import --replace`
    engine.label("ann", ids[1], "dog")
    assert labels.storage == "rows" and labels.read()["label"].tolist() == ["cat", "dog"]
